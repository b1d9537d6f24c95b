# shellcheck shell=bash
# A server for many users: ports= lines in the secret file, --visitor-rate per source.

# A client of the server at $CTL for local port $2 with the options after it, its
# tunnel up (CLI, PUB set); or false.
many_client() {
	local name=$1 port=$2
	shift 2
	start "$name" "$BORE" local "$port" --local-host 127.0.0.1 --to 127.0.0.1 --control-port "$CTL" "$@"
	CLI=$LAST
	wait_until 5 grep -q "listening at" "$WORK/$name.log" || { why "$name: $(tail -n 2 "$WORK/$name.log")"; return 1; }
	PUB=$(public_port "$name")
}

# A client with these options that the server refuses: it exits $1 within 5 s, its log has $2.
many_refused() {
	local rc=$1 text=$2
	shift 2
	start refused "$BORE" local "$ORIGIN" --local-host 127.0.0.1 --to 127.0.0.1 --control-port "$CTL" \
		--no-reconnect "$@"
	wait_exit "$LAST" 5 || { why "client $* did not exit"; return 1; }
	[ "$RC" = "$rc" ] || { why "client $*: exit $RC, wanted $rc"; return 1; }
	log_has refused "$text"
}

# ports= lines: a secret with a list opens only its ports (and --port 0 picks one of them,
# until none is free); a plain line opens any; a list port outside the server's range is
# refused like any port outside it; bytes are checked through each tunnel.
t_ports_per_secret() {
	local f=$WORK/ports.secret a b p
	start_origin origin echo || return 1
	# Two ports of the range, one more, one past its end; and a plain line.
	CTL=$(free_port) || return 1
	TUN_MIN=$((20000 + (RANDOM % 60) * 200))
	TUN_MAX=$((TUN_MIN + 199))
	printf 'ports=%d-%d,%d two-ports\nports=%d beyond\nplain-secret\nports=%d other\n' \
		"$TUN_MIN" $((TUN_MIN + 1)) "$TUN_MAX" $((TUN_MAX + 1)) $((TUN_MIN + 7)) >"$f"
	KEEP_PORTS=1 start_server server --secret-file "$f" || return 1
	many_client a "$ORIGIN" -s two-ports || return 1
	a=$PUB
	many_client b "$ORIGIN" -s two-ports || return 1
	b=$PUB
	many_client c "$ORIGIN" -s two-ports || return 1
	[ "$(printf '%s\n' "$a" "$b" "$PUB" | sort -n | tr '\n' ' ')" = "$TUN_MIN $((TUN_MIN + 1)) $TUN_MAX " ] ||
		{ why "two-ports got $a, $b and $PUB"; return 1; }
	for p in "$a" "$b" "$PUB"; do
		out=$("$TCPKIT" roundtrip 127.0.0.1 "$p" 300000) || { why "port $p: $out"; return 1; }
	done
	# Its list is full: what a full range says; a port off its list: bore's words, exit 78.
	many_refused 1 "failed to find an available port" -s two-ports || return 1
	many_refused 78 "client port number not in allowed range" -s two-ports --port $((TUN_MIN + 2)) ||
		return 1
	many_refused 78 "client port number not in allowed range" -s other --port "$TUN_MIN" || return 1
	# Its one port is past the server's range.
	many_refused 1 "failed to find an available port" -s beyond || return 1
	many_refused 78 "client port number not in allowed range" -s beyond --port $((TUN_MAX + 1)) || return 1
	many_client d "$ORIGIN" -s other || return 1
	[ "$PUB" = $((TUN_MIN + 7)) ] || { why "other got $PUB"; return 1; }
	many_client e "$ORIGIN" -s plain-secret --port $((TUN_MIN + 2)) || return 1
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 300000) || { why "plain secret: $out"; return 1; }
	alive "$SRV" || { why "the server died"; return 1; }
}

# SIGHUP: a tunnel whose port left its secret's list is closed and logged (its client,
# which asked for that port, is refused at its reconnect: exit 78; one that took any
# port gets another of the list); the same secret's tunnel on a port still listed serves
# on.  A bad list at SIGHUP keeps the set before.
t_ports_reload() {
	local f=$WORK/ports.secret gone
	start_origin origin echo || return 1
	CTL=$(free_port) || return 1
	TUN_MIN=$((20000 + (RANDOM % 60) * 200))
	TUN_MAX=$((TUN_MIN + 199))
	printf 'ports=%d-%d team-a\n' "$TUN_MIN" $((TUN_MIN + 2)) >"$f"
	KEEP_PORTS=1 start_server server --secret-file "$f" || return 1
	many_client gone "$ORIGIN" -s team-a --port "$TUN_MIN" || return 1
	gone=$CLI
	many_client kept "$ORIGIN" -s team-a --port $((TUN_MIN + 1)) || return 1
	many_client roam "$ORIGIN" -s team-a || return 1
	[ "$PUB" = $((TUN_MIN + 2)) ] || { why "roam got $PUB"; return 1; }
	# A bad list: the old set stays, the reason is logged with the line.
	printf 'plain\nports=%d, team-a\n' $((TUN_MIN + 1)) >"$f"
	kill -HUP "$SRV"
	wait_until 5 grep -qF "line 2: bad ports= list" "$WORK/server.log" ||
		{ why "no line for the bad list at SIGHUP"; return 1; }
	log_has server "keeping the secrets loaded before" || return 1
	alive "$gone" || { why "a bad reload closed a tunnel"; return 1; }
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$TUN_MIN" 100000) || { why "after a bad reload: $out"; return 1; }
	printf 'ports=%d,%d team-a\n' $((TUN_MIN + 1)) $((TUN_MIN + 3)) >"$f"
	kill -HUP "$SRV"
	wait_exit "$gone" 10 || { why "the tunnel of the port taken off the list stayed up"; return 1; }
	[ "$RC" = 78 ] || { why "its client exited $RC, not 78"; return 1; }
	log_has server "tunnel on port $TUN_MIN closed (port no longer allowed for its secret)" &&
		log_has gone "client port number not in allowed range" || return 1
	out=$("$TCPKIT" roundtrip 127.0.0.1 $((TUN_MIN + 1)) 100000) || { why "kept tunnel: $out"; return 1; }
	wait_until 10 grep -q "listening at 127.0.0.1:$((TUN_MIN + 3))" "$WORK/roam.log" ||
		{ why "roam did not move to the list's other port: $(tail -n 3 "$WORK/roam.log")"; return 1; }
	log_has server "tunnel on port $((TUN_MIN + 2)) closed (port no longer allowed for its secret)" || return 1
	out=$("$TCPKIT" roundtrip 127.0.0.1 $((TUN_MIN + 3)) 100000) || { why "roam's new port: $out"; return 1; }
}

# Malformed ports= lists are refused at start with their line, exit 1 and one line; a
# ports= line in a client's secret file is refused too.
t_ports_bad_lists() {
	local f=$WORK/bad.secret line out rc
	for line in 'ports= s' 'ports=abc s' 'ports=0 s' 'ports=65536 s' 'ports=5-3 s' 'ports=22, s' \
		'ports=22,,23 s' 'ports=,22 s' 'ports=22' 'ports=22 ' 'ports=222222222222222222222 s' \
		'ports=+22 s' 'ports=-22 s' 'ports=2-+3 s' 'ports=2- s' 'ports=1=2 s' 'ports= 22 s' \
		'ports=22-23-24 s' 'ports=22s'; do
		printf 'first-secret\n\n%s\n' "$line" >"$f"
		out=$(timeout 5 "$BORE" server --bind-addr 127.0.0.1 --control-port "$(free_port)" \
			--secret-file "$f" 2>&1)
		rc=$?
		[ "$rc" = 1 ] || { why "'$line': exit $rc"; return 1; }
		[ "$(wc -l <<<"$out")" = 1 ] && grep -qF "bad.secret, line 3: bad ports= list" <<<"$out" ||
			{ why "'$line': $out"; return 1; }
	done
	# 700 ports on a line loads, and so do the other good forms.
	{ printf 'ports='; seq -s, 1 2 1400 | tr -d '\n'; printf ' long\nports=7,1-65535,9-9 s\n'; } >"$f"
	out=$(timeout 1 "$BORE" server --bind-addr 127.0.0.1 --control-port "$(free_port)" \
		--secret-file "$f" 2>&1)
	grep -q "server listening" <<<"$out" || { why "a long list: $out"; return 1; }
	printf 'ports=2222 client-secret\n' >"$f"
	expect_cli 1 "secret file .*bad.secret: ports= lines are a server's" local 9 --to 127.0.0.1 \
		--secret-file "$f" || return 1
	printf 'ports=0 client-secret\n' >"$f"
	expect_cli 1 "line 1: bad ports= list" local 9 --to 127.0.0.1 --secret-file "$f"
}

# --visitor-rate N: N visitors from one source (127.0.0.5) are served, bytes checked, the
# rest closed at once, logged and counted by --metrics; another source (127.0.0.6) is
# still served; IPv6 (::1) likewise; --allow is checked first.
t_visitor_rate_per_source() {
	local i t
	start_origin origin echo && start_metrics_server server --visitor-rate 3 &&
		start_client client "$ORIGIN" || return 1
	for i in 1 2 3; do
		out=$(TCPKIT_FROM=127.0.0.5 "$TCPKIT" roundtrip 127.0.0.1 "$PUB" 200000) ||
			{ why "visitor $i: $out"; return 1; }
	done
	for i in 4 5; do
		t=$(TCPKIT_FROM=127.0.0.5 "$TCPKIT" waitclose 127.0.0.1 "$PUB") || return 1
		between "$t" 0 0.5 || { why "visitor $i closed after $t s"; return 1; }
	done
	log_has server "refused 127.0.0.5:" &&
		log_has server "too many connections from its source (limit 3 a minute)" || return 1
	[ "$(count_in_log server "new connection from 127.0.0.5:")" = 3 ] ||
		{ why "$(count_in_log server "new connection from 127.0.0.5:") visitors of 127.0.0.5 served"; return 1; }
	samples_settle 'bore_refused_total{reason="visitor-rate"} 2' 'bore_visitors_total 3' || return 1
	out=$(TCPKIT_FROM=127.0.0.6 "$TCPKIT" roundtrip 127.0.0.1 "$PUB" 200000) ||
		{ why "another source: $out"; return 1; }
	stop_all
	# IPv6: ::1's /64.
	start_origin origin echo && start_server server --visitor-rate 2 --bind-tunnels ::1 &&
		start_client client "$ORIGIN" || return 1
	for i in 1 2; do
		out=$("$TCPKIT" roundtrip ::1 "$PUB" 100000) || { why "IPv6 visitor $i: $out"; return 1; }
	done
	t=$("$TCPKIT" waitclose ::1 "$PUB") || return 1
	between "$t" 0 0.5 || { why "IPv6 visitor 3 closed after $t s"; return 1; }
	log_has server "refused [::1]:" || return 1
	stop_all
	# Outside --allow: refused as such, never counted as over the rate.
	start_origin origin echo && start_server server --visitor-rate 1 --allow 10.0.0.0/8 &&
		start_client client "$ORIGIN" || return 1
	for i in 1 2 3; do
		TCPKIT_FROM=127.0.0.5 "$TCPKIT" waitclose 127.0.0.1 "$PUB" >/dev/null || return 1
	done
	wait_until 5 log_count_is server "not in --allow" 3 || { why "not refused by --allow"; return 1; }
	! grep -qF "from its source" "$WORK/server.log" || { why "--allow was not checked first"; return 1; }
}

# One source's visitors to two tunnels at once, each on its own thread: N served across
# both public ports, every other one refused; the bytes of those served are checked.
t_visitor_rate_tunnels() {
	local p1 p2 r1 r2 n failed=0 out
	start_origin origin echo && start_server server --visitor-rate 10 &&
		start_client c1 "$ORIGIN" && p1=$PUB && start_client c2 "$ORIGIN" && p2=$PUB || return 1
	TCPKIT_FROM=127.0.0.9 start m1 "$TCPKIT" many 127.0.0.1 "$p1" 8 20000
	r1=$LAST
	TCPKIT_FROM=127.0.0.9 start m2 "$TCPKIT" many 127.0.0.1 "$p2" 8 20000
	r2=$LAST
	wait "$r1" "$r2" 2>/dev/null
	for out in m1 m2; do
		if grep -q "^ok 8" "$WORK/$out.log"; then
			continue
		fi
		n=$(sed -n 's/.* \([0-9]*\) of 8 connections failed.*/\1/p' "$WORK/$out.log")
		[ -n "$n" ] || { why "$out: $(cat "$WORK/$out.log")"; return 1; }
		failed=$((failed + n))
	done
	[ "$failed" = 6 ] || { why "$failed of 16 refused, wanted 6: $(cat "$WORK/m1.log" "$WORK/m2.log")"; return 1; }
	out=$(TCPKIT_FROM=127.0.0.10 "$TCPKIT" many 127.0.0.1 "$p2" 10 20000) || { why "another source: $out"; return 1; }
}

# Visitors from 10,000 addresses at once from the $1'th (127.1.X.Y) on, each connecting
# twice, to the public port $PUB.
many_flood() {
	TCPKIT_ADDR_FIRST=$1 TCPKIT_TIMEOUT=30 "$TCPKIT" manyaddr 127.0.0.1 "$PUB" 10000 500 1 >/dev/null ||
		{ why "flood from the ${1}th address"; return 1; }
}

# RSS of process $1 in KiB.
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

# The table of sources is fixed: floods from 20,000 then 40,000 more addresses (past its
# 16,384 slots) leave the server's memory and fds where the first left them, its refusal
# lines rate-limited; a visitor from a fresh address is served during the flood and after.
t_visitor_rate_bounded() {
	local base rss1 rss2 lines first seen
	start_origin origin echo && start_server server --visitor-rate 1 --max-conns 64 &&
		start_client client "$ORIGIN" || return 1
	base=$(fds_threads "$SRV")
	many_flood 0 && many_flood 10000 || return 1
	wait_until 20 fds_threads_are "$SRV" "$base" ||
		{ why "fds after the first flood: $(fds_threads "$SRV"), were $base"; return 1; }
	rss1=$(rss_kib "$SRV")
	for first in 20000 30000 40000 50000; do
		many_flood "$first" || return 1
		out=$(TCPKIT_FROM=127.0.0.$((first / 10000)) "$TCPKIT" roundtrip 127.0.0.1 "$PUB" 100000) ||
			{ why "between floods: $out"; return 1; }
	done
	wait_until 20 fds_threads_are "$SRV" "$base" ||
		{ why "fds after the second flood: $(fds_threads "$SRV"), were $base"; return 1; }
	rss2=$(rss_kib "$SRV")
	why "RSS $rss1 KiB after 20,000 sources, $rss2 KiB after 60,000"
	[ $((rss2 - rss1)) -le 1024 ] || { why "RSS grew from $rss1 to $rss2 KiB"; return 1; }
	# Each address came at most twice: past 2 x 16,384 taken in, past 16,384 sources.
	seen=$(($(count_in_log server "new connection from 127.1.") + $(lines_counted server "refused 127.1.")))
	[ "$seen" -gt 32768 ] || { why "only $seen flood visitors reached the table"; return 1; }
	lines=$(count_in_log server "from its source")
	[ "$lines" -ge 1 ] && [ "$lines" -le 200 ] || { why "$lines refusal lines"; return 1; }
	alive "$SRV" || { why "the server died"; return 1; }
}

# The bucket arithmetic with an injected clock, the table's eviction, and the ports=
# parser and lookups (tests/unit visitorrate ports).
t_visitor_rate_unit() { unit_group visitorrate ports; }

# --visitor-rate is range-checked at start: 0, past 1,000,000, or not a number.
t_visitor_rate_usage() {
	expect_cli 2 "invalid value '0' for '--visitor-rate': must be a number from 1 to 1000000" \
		server --visitor-rate 0 &&
		expect_cli 2 "invalid value '1000001' for '--visitor-rate'" server --visitor-rate 1000001 &&
		expect_cli 2 "invalid value '99999999999999999999' for '--visitor-rate'" \
			server --visitor-rate 99999999999999999999 &&
		expect_cli 2 "invalid value 'ten' for '--visitor-rate'" BORE_VISITOR_RATE=ten server &&
		expect_cli 0 "--visitor-rate <N>" server --help
}

# RUST_LOG=error (or BORE_LOG=error): the client writes no INFO line, not even "listening
# at"; the address line stays on stdout.
t_client_quiet_at_error() {
	local v
	start_origin origin echo && start_server server || return 1
	for v in RUST_LOG=error BORE_LOG=error; do
		start_split quiet env "$v" "$BORE" local "$ORIGIN" --local-host 127.0.0.1 --to 127.0.0.1 \
			--control-port "$CTL"
		wait_until 5 lines_are "$WORK/quiet.out" 1 || { why "$v: no stdout line"; return 1; }
		PUB=$(sed -n 's/^127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$WORK/quiet.out")
		out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 100000) || { why "$v: $out"; return 1; }
		[ ! -s "$WORK/quiet.log" ] || { why "$v: stderr has $(head -n 2 "$WORK/quiet.log")"; return 1; }
		kill -TERM "$LAST"
		wait "$LAST" 2>/dev/null
	done
}
