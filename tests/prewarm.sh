# Cases for `bore local --prewarm`: spare data connections, renewed before the server's
# deadline, closed on shutdown and reconnect, passed over when the server dropped them.
# Sourced by test.sh, which provides start, start_server, start_client, wait_until, why...

# True once log $1 has at least $3 lines containing $2.
log_count_at_least() { [ "$(count_in_log "$1" "$2")" -ge "$3" ]; }

# Check that a log lacks a fixed string.
log_lacks() {
	! grep -qF -- "$2" "$WORK/$1.log" || { why "$1.log has '$2'"; return 1; }
}

# True when process $1 has at most $2 fds open.
fds_at_most() { [ "$(ls /proc/"$1"/fd | wc -l)" -le "$2" ]; }

# The server's words for a data connection closed cleanly before Accept, and at its deadline.
SPARE_CLOSED="closed before its first message"
SPARE_EXPIRED="timed out waiting for initial message"

# Spares are renewed every 1.5 s and closed cleanly, so the server never times one out;
# visitors are claimed on them, every byte intact.
t_prewarm_spares() {
	start_origin origin echo && WRAP="env BORE_LOG=debug" start_server server -s hunter2 &&
		BORE_LOG=debug start_client client "$ORIGIN" -s hunter2 --prewarm 2 || return 1
	# Two spares, each renewed at 1.5 s: four clean closes take about 3 s.
	wait_until 15 log_count_at_least server "$SPARE_CLOSED" 4 ||
		{ why "spares not renewed: $(count_in_log server "$SPARE_CLOSED") clean closes"; return 1; }
	out=$("$TCPKIT" many 127.0.0.1 "$PUB" 20 100000) || { why "$out"; return 1; }
	[ "$out" = "ok 20" ] || { why "$out"; return 1; }
	log_has client "claimed on a spare" || return 1
	log_lacks server "$SPARE_EXPIRED"
	alive "$SRV" && alive "$CLI"
}

# Over a slow link (300 ms each way, through tcpkit's delay relay) the spares still
# close before the deadline, which counts from when the server got the handshake.
t_prewarm_long_link() {
	local relay
	start_origin origin echo && WRAP="env BORE_LOG=debug" start_server server -s hunter2 || return 1
	start relay "$TCPKIT" delay 127.0.0.1 "$CTL" 300
	wait_until 5 test -s "$WORK/relay.log" || { why "no delay relay"; return 1; }
	relay=$(head -n 1 "$WORK/relay.log")
	start client "$BORE" local "$ORIGIN" --local-host 127.0.0.1 --to 127.0.0.1 \
		--control-port "$relay" -s hunter2 --prewarm 3
	CLI=$LAST
	wait_until 10 grep -q "listening at" "$WORK/client.log" || { why "client not up"; return 1; }
	PUB=$(public_port client)
	wait_until 20 log_count_at_least server "$SPARE_CLOSED" 6 ||
		{ why "spares not renewed: $(count_in_log server "$SPARE_CLOSED") clean closes"; return 1; }
	out=$("$TCPKIT" many 127.0.0.1 "$PUB" 3 100000) || { why "$out"; return 1; }
	log_lacks server "$SPARE_EXPIRED"
}

# A stopped client closes its spares: the server is back to its fds and threads, and
# saw each end cleanly.
t_prewarm_shutdown() {
	local base
	start_origin origin echo && WRAP="env BORE_LOG=debug" start_server server || return 1
	base=$(fds_threads "$SRV")
	start_client client "$ORIGIN" --prewarm 4 || return 1
	# The control connection, the public listener and four spares.
	wait_until 5 bash -c "[ \$(ls /proc/$SRV/fd | wc -l) -ge $((${base% *} + 6)) ]" ||
		{ why "server fds $(fds_threads "$SRV"), base $base"; return 1; }
	kill -TERM "$CLI"
	wait_exit "$CLI" 5 && [ "$RC" = 0 ] || { why "client: ${RC:-still running}"; return 1; }
	wait_until 5 fds_threads_are "$SRV" "$base" ||
		{ why "server fds/threads $base -> $(fds_threads "$SRV")"; return 1; }
	log_count_at_least server "$SPARE_CLOSED" 4 || { why "spares not closed cleanly"; return 1; }
	log_lacks server "$SPARE_EXPIRED"
}

# After the server restarts, the client's spares are those of the new session: visitors
# are claimed on them, and the old ones leave no fd behind.
t_prewarm_reconnect() {
	local base
	start_origin origin echo && WRAP="env BORE_LOG=debug" start_server server || return 1
	BORE_LOG=debug start_client client "$ORIGIN" --prewarm 3 || return 1
	# The control connection and three spares.
	wait_until 5 log_count_at_least server "incoming connection" 4 || { why "no spares"; return 1; }
	base=$(ls /proc/"$CLI"/fd | wc -l)
	{ kill -9 "$SRV"; wait "$SRV"; } 2>/dev/null
	wait_until 5 grep -q "reconnecting in" "$WORK/client.log" || { why "client did not re-dial"; return 1; }
	KEEP_PORTS=1 WRAP="env BORE_LOG=debug" start_server server2 || return 1
	wait_until 15 log_count_is client "listening at" 2 || { why "client did not come back"; return 1; }
	wait_until 5 log_count_at_least server2 "incoming connection" 4 || { why "no new spares"; return 1; }
	: >"$WORK/client.log"
	out=$("$TCPKIT" many 127.0.0.1 "$PUB" 2 100000) || { why "$out"; return 1; }
	[ "$out" = "ok 2" ] || { why "$out"; return 1; }
	log_has client "claimed on a spare" || return 1
	# The new session's spares, and their successors while they are renewed.
	wait_until 5 fds_at_most "$CLI" $((base + 3)) ||
		{ why "client fds $base -> $(ls /proc/"$CLI"/fd | wc -l)"; return 1; }
}

# Without a secret a server past twice --max-startups closes spares as it closes any
# newcomer; a visitor whose spare was closed is claimed on another, or on a new one.
t_prewarm_spares_dropped() {
	local i
	start_origin origin echo && start_server server --max-startups 1 &&
		start_client client "$ORIGIN" --prewarm 4 || return 1
	# One visitor at a time, so each refill's drop has reached the client before the next.
	for i in $(seq 8); do
		out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 20000) || { why "visitor $i: $out"; return 1; }
		sleep 0.3
	done
	log_has server "too many connections before authentication" && alive "$CLI"
}

# With a secret, a spare has authenticated: flooders from a dozen addresses, an idle
# connection each, fill --max-startups with older spares present, yet the busiest source
# (the client's) loses none, and visitors keep being claimed on them.
t_prewarm_spares_kept_in_flood() {
	local i
	start_origin origin echo && start_server server -s hunter2 --max-startups 8 &&
		BORE_LOG=debug start_client client "$ORIGIN" -s hunter2 --prewarm 4 || return 1
	wait_until 5 log_count_at_least client "connected to server" 1 || return 1
	for i in $(seq 2 13); do
		TCPKIT_FROM=127.0.0.$i start "held$i" "$TCPKIT" slow 127.0.0.1 "$CTL" 1 0 6
	done
	wait_until 5 bash -c "grep -l '^connected 1' $WORK/held*.log | wc -l | grep -qx 12" ||
		{ why "flooders not connected"; return 1; }
	: >"$WORK/client.log"
	for i in 1 2 3 4 5 6; do
		out=$("$TCPKIT" many 127.0.0.1 "$PUB" 2 20000) || { why "visitor $i: $out"; return 1; }
		[ "$out" = "ok 2" ] || { why "visitor $i: $out"; return 1; }
		sleep 0.2
	done
	log_has client "claimed on a spare" && log_lacks client "closed by the server"
}

# A server whose secrets were rotated away closes the tunnel, spares and all:
# the client says so, is refused on reconnecting and exits 78, with at most a
# few lines of refused spares on the way.
t_prewarm_secret_rotated() {
	local f=$WORK/server.secret n
	printf 'rotate-old\n' >"$f"
	start_origin origin echo && start_server server --secret-file "$f" &&
		start_client client "$ORIGIN" -s rotate-old --prewarm 4 || return 1
	printf 'rotate-new\n' >"$f"
	kill -HUP "$SRV"
	wait_exit "$CLI" 5 || { why "the tunnel of the rotated secret stayed up"; return 1; }
	[ "$RC" = 78 ] || { why "the client exited $RC, not 78"; return 1; }
	n=$(count_in_log client "spare data connection refused")
	[ "$n" -le 3 ] || { why "$n lines of refused spares"; return 1; }
	log_has server "closed (secret revoked)" && log_has client "server error: invalid secret"
}

# --prewarm takes 0 to 16, on the command line or from BORE_PREWARM.
t_prewarm_usage() {
	expect_cli 2 "^bore: invalid value '17' for '--prewarm': must be a number from 0 to 16" \
		local 80 --to 127.0.0.1 --prewarm 17 &&
		expect_cli 2 "^bore: invalid value 'x' for '--prewarm'" BORE_PREWARM=x local 80 --to 127.0.0.1 &&
		expect_cli 2 "^bore: invalid value '-1' for '--prewarm'" local 80 --to 127.0.0.1 --prewarm=-1 &&
		expect_cli 0 "--prewarm <N>" local --help
}
