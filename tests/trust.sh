# shellcheck shell=bash
# Server trust: what anonymous peers can make the server hold, drop or log.

# Lines of log $1 that contain $2, each counted with the "(and N more in T s)" it carries.
lines_counted() {
	awk -v s="$2" 'index($0, s) { n++; if (match($0, /\(and [0-9]+ more in/)) n += substr($0, RSTART + 5, RLENGTH - 13) }
		END { print n + 0 }' "$WORK/$1.log"
}

# True once log $1 counts exactly $3 of the lines containing $2.
lines_counted_are() { [ "$(lines_counted "$1" "$2")" = "$3" ]; }

# True once log $1 counts at least $3 of the lines containing $2.
lines_counted_at_least() { [ "$(lines_counted "$1" "$2")" -ge "$3" ]; }

# What a flood held back is counted on the next line of its kind, once a new 5 s window
# has begun. Make one more such line with "${@:5}", over and over, until that count
# comes: true once $1 (lines_counted_are or lines_counted_at_least) holds for log $2,
# text $3 and $4 plus the lines made here.
counted_after_more() {
	local test=$1 log=$2 text=$3 want=$4 i
	shift 4
	for ((i = 0; i < 12; i++)); do
		"$@" >/dev/null 2>&1
		want=$((want + 1))
		wait_until 1 "$test" "$log" "$text" "$want" && return 0
	done
	return 1
}

# Floods of refused control connections (--allow-control) and of failed
# handshakes log a few lines, and the counts they carry add up to every refusal.
t_log_flood_counted() {
	local storm lines
	start_server server --allow-control 127.0.0.2 -s logsecret || return 1
	TCPKIT_FROM=127.0.0.2 start storm "$TCPKIT" storm 127.0.0.1 "$CTL" 1000 4
	storm=$LAST
	out=$("$TCPKIT" storm 127.0.0.1 "$CTL" 2000 4) || { why "storm: $out"; return 1; }
	wait "$storm" || { why "handshake storm: $(cat "$WORK/storm.log")"; return 1; }
	lines=$(count_in_log server "not in --allow-control")
	[ "$lines" -le 40 ] || { why "$lines lines for 2000 refusals"; return 1; }
	counted_after_more lines_counted_are server "not in --allow-control" 2000 \
		"$TCPKIT" storm 127.0.0.1 "$CTL" 1 1 ||
		{ why "refusals counted: $(lines_counted server "not in --allow-control") of 2000 and more"; return 1; }
	lines=$(count_in_log server "server handshake failed")
	[ "$lines" -ge 1 ] && [ "$lines" -le 40 ] || { why "$lines lines for 1000 failed handshakes"; return 1; }
	alive "$SRV" || { why "the server died"; return 1; }
}

# Connections from 40 addresses, each under the 250 ms grace and one per
# address, past --max-startups 16: with a secret and without, every visitor
# of a client whose address holds a tunnel is served promptly.
t_many_address_flood() {
	local secret flood origin i
	for secret in "" "-s floodsecret"; do
		start_origin origin echo || return 1
		origin=$LAST
		# shellcheck disable=SC2086
		start_server server --max-startups 16 $secret && start_client client "$ORIGIN" $secret ||
			{ why "could not set up a tunnel ($secret)"; return 1; }
		start flood "$TCPKIT" manyaddr 127.0.0.1 "$CTL" 40 150 30
		flood=$LAST
		wait_until 5 grep -q "too many connections before authentication" "$WORK/server.log" ||
			{ why "the flood did not reach the limit ($secret)"; return 1; }
		for i in 1 2 3 4 5 6 7 8; do
			out=$(TCPKIT_TIMEOUT=4 "$TCPKIT" roundtrip 127.0.0.1 "$PUB" 10000) ||
				{ why "visitor $i during the flood ($secret): $out"; return 1; }
		done
		alive "$flood" || { why "the flood ended early: $(cat "$WORK/flood.log")"; return 1; }
		kill -TERM "$flood" "$CLI" "$SRV" "$origin" 2>/dev/null
		wait "$flood" "$CLI" "$SRV" "$origin" 2>/dev/null || true
	done
}

# A SIGHUP that takes a secret out of the file closes the tunnels that proved
# it (their data connections could no longer authenticate), within a
# heartbeat or so; the client's reconnect is refused and it exits 78.  A
# tunnel with a secret kept serves on.
t_secret_revoked_closes() {
	local f=$WORK/server.secret old_pub
	printf 'revoke-old\nrevoke-kept\n' >"$f"
	start_origin origin echo && start_server server --secret-file "$f" || return 1
	start_client old "$ORIGIN" -s revoke-old || { why "no tunnel with the old secret"; return 1; }
	local old=$CLI old_pub=$PUB
	start_client kept "$ORIGIN" -s revoke-kept || { why "no tunnel with the kept secret"; return 1; }
	printf 'revoke-kept\n' >"$f"
	kill -HUP "$SRV"
	wait_exit "$old" 5 || { why "the tunnel of the removed secret stayed up"; return 1; }
	[ "$RC" = 78 ] || { why "its client exited $RC, not 78"; return 1; }
	log_has server "tunnel on port $old_pub closed (secret revoked)" && log_has old "invalid secret" || return 1
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 100000) || { why "kept tunnel: $out"; return 1; }
}

# Without a secret, one address churning 40 connections (each closed after
# 200 ms) past --max-startups 16 replaces its own, never the data connections
# of the client, whose address has a tunnel open: every visitor is served.
t_visitors_kept_in_churn() {
	local flood i
	start_origin origin echo && start_server server --max-startups 16 &&
		start_client client "$ORIGIN" || return 1
	TCPKIT_FROM=127.0.0.2 start flood "$TCPKIT" manyaddr 127.0.0.1 "$CTL" 40 200 30
	flood=$LAST
	wait_until 5 grep -q "too many connections before authentication" "$WORK/server.log" ||
		{ why "the flood did not reach the limit"; return 1; }
	for i in 1 2 3 4 5 6 7 8 9 10; do
		out=$(TCPKIT_TIMEOUT=4 "$TCPKIT" roundtrip 127.0.0.1 "$PUB" 10000) ||
			{ why "visitor $i during the churn: $out"; return 1; }
		sleep 0.2
	done
	alive "$flood" || { why "the churn ended early: $(cat "$WORK/flood.log")"; return 1; }
}

# With a secret, flooders from a dozen addresses, an idle connection each, fill
# --max-startups 8, yet visitors' data connections (from the client's address,
# which has a tunnel) are never the ones dropped: every visitor is served.
t_visitors_kept_in_flood() {
	local i
	start_origin origin echo && start_server server -s hunter2 --max-startups 8 &&
		start_client client "$ORIGIN" -s hunter2 || return 1
	for i in $(seq 2 13); do
		TCPKIT_FROM=127.0.0.$i start "held$i" "$TCPKIT" slow 127.0.0.1 "$CTL" 1 0 6
	done
	wait_until 5 bash -c "grep -l '^connected 1' $WORK/held*.log | wc -l | grep -qx 12" ||
		{ why "flooders not connected"; return 1; }
	for i in 1 2 3 4 5 6; do
		out=$("$TCPKIT" many 127.0.0.1 "$PUB" 2 20000) || { why "visitor $i: $out"; return 1; }
		[ "$out" = "ok 2" ] || { why "visitor $i: $out"; return 1; }
		sleep 0.2
	done
	alive "$CLI"
}

# Whom the per-source rules drop past --max-startups, scene by scene, and the
# counts they keep (tests/unit startups; its speed: tests/unit startupbench).
t_startup_counts() { unit_group startups; }

# A burst from one address: 150 control connections, made 0.1 s before, say
# Hello for fixed ports at once, in three rounds 1.5 s apart, past the default
# --max-startups 128; the places kept for a burst take it: each round opens all 150.
t_startup_burst() {
	local gap=1500
	# Under TSan a round's tunnels take seconds to free their ports: the next waits longer.
	[ "$TSAN_THREAD" = 1 ] && gap=4000
	start_server server || return 1
	out=$("$TCPKIT" hellorace 127.0.0.1 "$CTL" 150 "$TUN_MIN" 3 $gap 100) || { why "$out"; return 1; }
	[ "$out" = "ok 450" ] || { why "$out"; return 1; }
}

# The "Trust boundary" block at the top of the Server section names every
# function an anonymous peer reaches: each is defined in bore.c, every function
# of bore.c that one of them calls is listed too (but for the paths named in
# NOT_REACHED), and their bodies (after the opening { to the } at column 0) sum
# to at most 1,549 lines: 1,397 before visitor pools, whose places, tokens and handoff
# (reached by every visitor, and by a Join) take 113; --visitor-rate's bucket (every
# visitor) and ports= lookups (a Hello without a secret) the rest.
t_trust_boundary_size() {
	local names sum
	# Signal paths of run_server, the client's --dump, and a key check run only with a secret.
	local NOT_REACHED="take_signals next_signal reload_secrets log_server_status log_tunnel_status drain_and_exit dump_bytes key_revoked"
	names=$(awk '/^ \* Trust boundary/ { on = 1; next } on && /^ \*\// { exit }
		on && /^ \*   [a-z_]/ { sub(/^ \*   /, ""); sub(/:.*/, ""); gsub(/,/, " "); print }' bore.c)
	[ "$(wc -w <<<"$names")" -ge 20 ] || { why "no Trust boundary block in bore.c"; return 1; }
	sum=$(awk -v names="$names $NOT_REACHED" -v skip="$NOT_REACHED" '
		BEGIN { n = split(names, w, /[ \n]+/); for (i = 1; i <= n; i++) if (w[i] != "") want[w[i]] = 1
			n = split(skip, w, / /); for (i = 1; i <= n; i++) out[w[i]] = 1 }
		/^[a-z_][a-z0-9_]*\(/ { f = $0; sub(/\(.*/, "", f); pend = f; defined[f] = 1; next }
		pend != "" && /^\{/ { cur = pend; start = NR; pend = ""; next }
		cur != "" && /^\}/ { if (cur in want && !(cur in out)) { sum += NR - start - 1; seen[cur] = 1 }
			cur = ""; next }
		cur in want && !(cur in out) { line = $0; while (match(line, /[a-z_][a-z0-9_]*\(/)) {
			calls[cur " " substr(line, RSTART, RLENGTH - 1)] = 1; line = substr(line, RSTART + RLENGTH) } }
		END { for (f in want) if (!(f in defined)) { print "undefined " f; exit 1 }
			for (c in calls) { split(c, p, " "); if ((p[2] in defined) && !(p[2] in want)) {
				print p[1] " calls " p[2] ", not listed"; exit 1 } }
			print sum }' bore.c) || { why "$sum"; return 1; }
	why "trust boundary: $(wc -w <<<"$names") functions, $sum lines of function bodies"
	[ "$sum" -le 1665 ] || { why "more than 1,665 lines"; return 1; }
}
