# Several tunnels from one `bore local`, and the status lines of SIGUSR1.
# Sourced by test.sh, which lists the cases.

# Two echo services on kernel-chosen ports: sets ORIGIN1 and ORIGIN2.
start_two_origins() {
	start_origin origin1 echo && ORIGIN1=$ORIGIN && start_origin origin2 echo && ORIGIN2=$ORIGIN
}

# One `bore local` for the ports in $2..., its stdout in $WORK/$1.out: sets CLI.
start_tunnels() {
	local name=$1
	shift
	start_split "$name" "$BORE" local "$@" --local-host 127.0.0.1 --to 127.0.0.1 --control-port "$CTL"
	CLI=$LAST
}

# The public port that stdout line of $1 gives for local port $2.
public_for() { sed -n "s/^127\.0\.0\.1:\([0-9]*\) 127\.0\.0\.1:$2\$/\1/p" "$WORK/$1.out" | tail -n 1; }

# Two local ports through one client: a tunnel, a stdout line and a log line each.
t_tunnels_two_ports() {
	local p1 p2
	start_two_origins && start_server server || return 1
	start_tunnels client "$ORIGIN1" "$ORIGIN2"
	wait_until 5 lines_are "$WORK/client.out" 2 || { why "stdout: $(tr '\n' ' ' <"$WORK/client.out")"; return 1; }
	p1=$(public_for client "$ORIGIN1") && p2=$(public_for client "$ORIGIN2")
	[ -n "$p1" ] && [ -n "$p2" ] && [ "$p1" != "$p2" ] ||
		{ why "stdout: $(tr '\n' ' ' <"$WORK/client.out")"; return 1; }
	log_count_is client "listening at 127.0.0.1:" 2 || { why "not two 'listening at' lines"; return 1; }
	log_has client "listening at 127.0.0.1:$p1" && log_has client "listening at 127.0.0.1:$p2" || return 1
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$p1" 1000000) || { why "first: $out"; return 1; }
	out=$("$TCPKIT" many 127.0.0.1 "$p2" 20 100000) || { why "second: $out"; return 1; }
	[ "$out" = "ok 20" ] || { why "second: $out"; return 1; }
	alive "$CLI"
}

# LOCAL_PORT:REMOTE_PORT asks for a public port per tunnel; --port takes one local port only.
t_tunnels_remote_ports() {
	start_two_origins && start_server server || return 1
	start_tunnels client "$ORIGIN1:$TUN_MAX" "$ORIGIN2:$TUN_MIN"
	wait_until 5 lines_are "$WORK/client.out" 2 || { why "stdout: $(tr '\n' ' ' <"$WORK/client.out")"; return 1; }
	grep -qxF "127.0.0.1:$TUN_MAX 127.0.0.1:$ORIGIN1" "$WORK/client.out" &&
		grep -qxF "127.0.0.1:$TUN_MIN 127.0.0.1:$ORIGIN2" "$WORK/client.out" ||
		{ why "stdout: $(tr '\n' ' ' <"$WORK/client.out")"; return 1; }
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$TUN_MAX" 100000) || { why "$out"; return 1; }
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$TUN_MIN" 100000) || { why "$out"; return 1; }
	expect_cli 2 "^bore: the argument '--port' cannot be used with several local ports" \
		local 80 81 --to 127.0.0.1 --port 3000 &&
		expect_cli 2 "^bore: the argument '--port' cannot be used with <LOCAL_PORT:REMOTE_PORT>" \
			local 80:3000 --to 127.0.0.1 -p 3000 &&
		expect_cli 2 "^bore: invalid value 'x' for '<REMOTE_PORT>'" local 80 81:x --to 127.0.0.1 &&
		expect_cli 2 "^bore: invalid value '0' for '<LOCAL_PORT>'" local 80 0:81 --to 127.0.0.1 &&
		expect_cli 0 "^Usage: bore local \[OPTIONS\] --to <TO> <LOCAL_PORT\[:REMOTE_PORT\]>\.\.\.$" local --help
}

# One tunnel refused for good: the other keeps serving; the client ends 78 once none is left.
t_tunnels_one_refused() {
	local p1
	start_two_origins && start_server server || return 1
	start_tunnels client "$ORIGIN1" "$ORIGIN2:$((TUN_MAX + 1))" --no-reconnect
	wait_until 5 lines_are "$WORK/client.out" 1 || { why "no stdout line"; return 1; }
	wait_until 5 grep -q "client port number not in allowed range" "$WORK/client.log" ||
		{ why "second tunnel not refused"; return 1; }
	p1=$(public_for client "$ORIGIN1")
	[ -n "$p1" ] || { why "stdout: $(tr '\n' ' ' <"$WORK/client.out")"; return 1; }
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$p1" 100000) || { why "$out"; return 1; }
	alive "$CLI" || { why "client exited with one tunnel left"; return 1; }
	# The other tunnel is lost (1) too: the worst of 78 and 1 is 78.
	{ kill -9 "$SRV"; wait "$SRV"; } 2>/dev/null
	wait_exit "$CLI" 5 || { why "client still running with no tunnel left"; return 1; }
	[ "$RC" = 78 ] || { why "exit status $RC"; return 1; }
	# Every tunnel refused at once.
	start_server server2 || return 1
	start client2 "$BORE" local 9:$((TUN_MAX + 1)) 9:$((TUN_MAX + 2)) --to 127.0.0.1 --control-port "$CTL"
	wait_exit "$LAST" 5 || { why "client2 still running"; return 1; }
	[ "$RC" = 78 ] || { why "client2: exit status $RC"; return 1; }
	[ "$(count_in_log client2 "client port number not in allowed range")" = 2 ] ||
		{ why "client2: not two refusals"; return 1; }
}

# The server restarts: both tunnels come back on their ports, with a stdout line each.
t_tunnels_server_restart() {
	local first
	start_two_origins && start_server server || return 1
	start_tunnels client "$ORIGIN1" "$ORIGIN2"
	wait_until 5 lines_are "$WORK/client.out" 2 || { why "no two stdout lines"; return 1; }
	first=$(sort "$WORK/client.out")
	{ kill -9 "$SRV"; wait "$SRV"; } 2>/dev/null
	wait_until 5 log_count_is client "reconnecting in" 2 || { why "not both tunnels re-dial"; return 1; }
	KEEP_PORTS=1 start_server server2 || return 1
	wait_until 15 lines_are "$WORK/client.out" 4 || { why "stdout: $(tr '\n' ' ' <"$WORK/client.out")"; return 1; }
	[ "$(tail -n 2 "$WORK/client.out" | sort)" = "$first" ] ||
		{ why "after the restart: $(tr '\n' ' ' <"$WORK/client.out")"; return 1; }
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$(public_for client "$ORIGIN1")" 100000) || { why "$out"; return 1; }
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$(public_for client "$ORIGIN2")" 100000) || { why "$out"; return 1; }
}

# SIGTERM stops every tunnel at once: exit 0, one "shutting down" line.
t_tunnels_sigterm() {
	start_two_origins && start_server server || return 1
	start_tunnels client "$ORIGIN1" "$ORIGIN2"
	wait_until 5 lines_are "$WORK/client.out" 2 || { why "no two stdout lines"; return 1; }
	kill -TERM "$CLI"
	wait_exit "$CLI" 2 || { why "client still running"; return 1; }
	[ "$RC" = 0 ] || { why "exit status $RC"; return 1; }
	[ "$(count_in_log client "shutting down")" = 1 ] || { why "not one 'shutting down' line"; return 1; }
	# Also while both wait to re-dial.
	start_tunnels client2 "$ORIGIN1" "$ORIGIN2"
	wait_until 5 lines_are "$WORK/client2.out" 2 || { why "client2: no two stdout lines"; return 1; }
	{ kill -9 "$SRV"; wait "$SRV"; } 2>/dev/null
	wait_until 5 log_count_is client2 "reconnecting in" 2 || { why "not both tunnels re-dial"; return 1; }
	kill -TERM "$CLI"
	wait_exit "$CLI" 2 || { why "client2 still running"; return 1; }
	[ "$RC" = 0 ] || { why "client2: exit status $RC"; return 1; }
}
