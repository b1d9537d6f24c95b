# Cases for what a careless operator or a hostile server can do to bore: closed
# standard fds, odd secret files, hostile text, stops that wait, few fds.
# Sourced by test.sh.

# True once a TCP connection to 127.0.0.1:$1 succeeds.
tc_port_open() { (exec 9<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Closed standard fds: the server with 1 and 2 closed, the client with {1,2},
# {0,1} or {0,1,2}, keep serving; a pipe or socket that landed on fd 1 or 2
# once read log lines back as signals, or took them.
t_closed_stdio() {
	local redir port
	start_origin origin echo || return 1
	CTL=$(free_port) || return 1
	TUN_MIN=$((20000 + (RANDOM % 60) * 200))
	TUN_MAX=$((TUN_MIN + 199))
	"$BORE" server --bind-addr 127.0.0.1 --control-port "$CTL" --min-port "$TUN_MIN" \
		--max-port "$TUN_MAX" >&- 2>&- &
	SRV=$!
	PIDS+=("$SRV")
	wait_until 5 tc_port_open "$CTL" && alive "$SRV" || { why "server with fds 1 and 2 closed is gone"; return 1; }
	port=$TUN_MIN
	for redir in '>&- 2>&-' '<&- >&-' '<&- >&- 2>&-'; do
		# Where fd 2 stays open, its lines go to a log.
		{ eval '"$BORE" local "$ORIGIN" --local-host 127.0.0.1 --to 127.0.0.1 --control-port "$CTL" \
			--port "$port"' "$redir" '&'; } 2>>"$WORK/stdio.log"
		CLI=$!
		PIDS+=("$CLI")
		wait_until 5 tc_port_open "$port" || { why "client with $redir: no tunnel"; return 1; }
		out=$("$TCPKIT" roundtrip 127.0.0.1 "$port" 100000) || { why "client with $redir: $out"; return 1; }
		alive "$CLI" || { why "client with $redir is gone"; return 1; }
		port=$((port + 1))
	done
	alive "$SRV" || { why "server with fds 1 and 2 closed is gone"; return 1; }
	kill -TERM "$SRV"
	wait_exit "$SRV" 5 && [ "$RC" = 0 ] || { why "server: ${RC:-still running} after SIGTERM"; return 1; }
}
