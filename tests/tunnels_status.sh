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

# Log $1 without timestamps, for exact matches.
untimed() { sed 's/^[0-9][0-9TZ:.-]* *//' "$WORK/$1.log"; }

# True once log $1 has $3 lines that match the extended regex $2 whole, timestamp aside.
log_matches() { [ "$(untimed "$1" | grep -cxE -- "$2")" = "$3" ]; }

# Wait for $3 lines of log $1 to match $2 whole; say what the log has if they do not.
expect_status() {
	wait_until 5 log_matches "$@" && return 0
	why "$1.log: not $3 lines like /$2/; its status lines:"
	untimed "$1" | grep 'status:' | while IFS= read -r line; do why "  $line"; done
	return 1
}

# Send SIGUSR1 to pid $1 until log $2 has a line matching $3 whole (for counts that settle).
status_settles() {
	usr1_and_look() { kill -USR1 "$1" && untimed "$2" | grep -qxE -- "$3"; }
	wait_until 5 usr1_and_look "$@" && return 0
	why "$2.log: no line like /$3/; its last status lines:"
	untimed "$2" | grep 'status:' | tail -n 3 | while IFS= read -r line; do why "  $line"; done
	return 1
}

# Dumps of log $1 so far: its totals lines.
dumps_in() { untimed "$1" | grep -cE '^INFO status: [0-9]+ tunnels?,'; }

# True once log $1 has more than $2 dumps.
dumps_more() { [ "$(dumps_in "$1")" -gt "$2" ]; }

# Send SIGUSR1 to pid $1 and wait for that dump in log $2; its last $3 lines go to $WORK/$2.status.
fresh_status() {
	local n
	n=$(dumps_in "$2")
	kill -USR1 "$1"
	wait_until 5 dumps_more "$2" "$n" || { why "$2: no status after SIGUSR1"; return 1; }
	untimed "$2" | grep '^INFO status: ' | tail -n "$3" >"$WORK/$2.status"
}

# True if the last dump of $1 has a line matching $2 whole; else say what it has.
status_has() {
	grep -qxE -- "$2" "$WORK/$1.status" && return 0
	why "$1: no status line like /$2/ in:"
	while IFS= read -r line; do why "  $line"; done <"$WORK/$1.status"
	return 1
}

# True when something listens on loopback port $1.
port_open() { (exec 9<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A server as start_server makes it, at BORE_LOG level $2 (its "server listening" line may not show).
start_server_logging() {
	local name=$1 level=$2
	shift 2
	CTL=$(free_port) || return 1
	TUN_MIN=$((20000 + (RANDOM % 60) * 200))
	TUN_MAX=$((TUN_MIN + 199))
	start "$name" env BORE_LOG="$level" "$BORE" server --bind-addr 127.0.0.1 --control-port "$CTL" \
		--min-port "$TUN_MIN" --max-port "$TUN_MAX" "$@"
	SRV=$LAST
	wait_until 5 port_open "$CTL" || { why "$name not listening"; return 1; }
}

# SIGUSR1: a line per tunnel and a totals line on both ends, under BORE_LOG=error too.
t_status_lines() {
	local dead p1 hold since='up since [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z \([0-9]+ s\)'
	dead=$(free_port) || return 1
	start_origin origin echo && start_server_logging server error || return 1
	start_split client env BORE_LOG=error "$BORE" local "$ORIGIN" "$dead" --local-host 127.0.0.1 \
		--to 127.0.0.1 --control-port "$CTL"
	CLI=$LAST
	wait_until 5 lines_are "$WORK/client.out" 2 || { why "no two stdout lines"; return 1; }
	p1=$(public_for client "$ORIGIN")
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$p1" 100000) || { why "$out"; return 1; }
	rm -f "$WORK/status.fifo"
	mkfifo "$WORK/status.fifo" || return 1
	start hold bash -c 'exec "$0" hold 127.0.0.1 "$1" 1 <"$2"' "$TCPKIT" "$p1" "$WORK/status.fifo"
	hold=$LAST
	exec 7<>"$WORK/status.fifo"
	wait_until 5 grep -q "^ready 1" "$WORK/hold.log" || { why "visitor not relayed"; exec 7>&-; return 1; }
	# The roundtrip's relays end a little after its last byte: wait until both ends counted it;
	# the held visitor's bytes ("ping" each way) count while it is relayed.
	status_settles "$SRV" server "INFO status: 2 tunnels, visitors 1 now 2 total, bytes 100004 in 100004 out" &&
		status_settles "$CLI" client "INFO status: 2 tunnels, 2 up, visitors 1 now 2 total, bytes 100004 in 100004 out" ||
		{ exec 7>&-; return 1; }
	fresh_status "$SRV" server 3 && fresh_status "$CLI" client 3 || { exec 7>&-; return 1; }
	status_has server "INFO status: tunnel port $p1, client 127\.0\.0\.1:[0-9]+, $since, visitors 1 now 2 total, bytes 100004 in 100004 out" &&
		status_has server "INFO status: tunnel port [0-9]+, client 127\.0\.0\.1:[0-9]+, $since, visitors 0 now 0 total, bytes 0 in 0 out" &&
		status_has server "INFO status: 2 tunnels, visitors 1 now 2 total, bytes 100004 in 100004 out" &&
		status_has client "INFO status: tunnel 127\.0\.0\.1:$p1 for 127\.0\.0\.1:$ORIGIN, $since, visitors 1 now 2 total, bytes 100004 in 100004 out" &&
		status_has client "INFO status: tunnel 127\.0\.0\.1:[0-9]+ for 127\.0\.0\.1:$dead, $since, visitors 0 now 0 total, bytes 0 in 0 out" &&
		status_has client "INFO status: 2 tunnels, 2 up, visitors 1 now 2 total, bytes 100004 in 100004 out" ||
		{ exec 7>&-; return 1; }
	# The held visitor leaves; its bytes stay counted.
	exec 7>&-
	wait_exit "$hold" 5 || { why "hold still running"; return 1; }
	status_settles "$SRV" server "INFO status: 2 tunnels, visitors 0 now 2 total, bytes 100004 in 100004 out" &&
		status_settles "$CLI" client "INFO status: 2 tunnels, 2 up, visitors 0 now 2 total, bytes 100004 in 100004 out" ||
		return 1
	# Both go on after the signals.
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$p1" 1000) || { why "$out"; return 1; }
	alive "$SRV" || { why "server gone"; return 1; }
	# Tunnels waiting to re-dial are down.
	{ kill -9 "$SRV"; wait "$SRV"; } 2>/dev/null
	status_settles "$CLI" client "INFO status: 2 tunnels, 0 up, visitors 0 now 3 total, bytes 101004 in 101004 out" &&
		fresh_status "$CLI" client 3 &&
		status_has client "INFO status: tunnel for 127\.0\.0\.1:$ORIGIN down, visitors 0 now 3 total, bytes 101004 in 101004 out" &&
		status_has client "INFO status: tunnel for 127\.0\.0\.1:$dead down, visitors 0 now 0 total, bytes 0 in 0 out" &&
		alive "$CLI"
}

# BORE_LOG=off silences the status lines too; a server with no tunnel says so.
t_status_log_off() {
	start_server_logging server error || return 1
	kill -USR1 "$SRV"
	expect_status server "INFO status: 0 tunnels, visitors 0 now 0 total, bytes 0 in 0 out" 1 || return 1
	stop_all
	start_server_logging quiet off || return 1
	# The signal bytes are read in order: the status comes before the exit.
	kill -USR1 "$SRV"
	kill -TERM "$SRV"
	wait_exit "$SRV" 10 || { why "quiet server still running"; return 1; }
	[ "$RC" = 0 ] || { why "exit status $RC"; return 1; }
	[ ! -s "$WORK/quiet.log" ] || { why "quiet.log: $(head -n 3 "$WORK/quiet.log")"; return 1; }
}
