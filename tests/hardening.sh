# Hardening cases for test.sh (sourced by it; uses its helpers): hostile and broken
# peers, floods, resource limits, abrupt deaths, and secrets kept out of sight.
# HARDENING_VERBOSE=1 prints the figures each case measured under its name.

# Print a measured figure when HARDENING_VERBOSE=1.
h_figure() { [ "${HARDENING_VERBOSE:-0}" = 1 ] && echo "    figure: $*"; return 0; }

# Seconds since the epoch with nanoseconds, for measuring short durations.
h_now() { date +%s.%N; }

# Seconds since the epoch at which log $1 first has a line containing $2 (its timestamp).
h_log_time() { date -d "$(grep -F -- "$2" "$WORK/$1.log" | head -n 1 | cut -d' ' -f1)" +%s.%N; }

# $2 - $1 in seconds, three decimals.
h_elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# Number of lines of log $1 that contain the fixed string $2.
h_log_count() { grep -cF -- "$2" "$WORK/$1.log"; }

# True when log $1 has more than $3 lines that contain $2.
h_log_more() { [ "$(h_log_count "$1" "$2")" -gt "$3" ]; }

# True when the server's fds and threads are back to "$1" (as fds_threads prints them).
# (Conditions for wait_until are functions: a $(...) argument would be read only once.)
h_server_at() { [ "$(fds_threads "$SRV")" = "$1" ]; }

# True when process $1's fds and threads are "$2".
h_at() { [ "$(fds_threads "$1")" = "$2" ]; }

# Open fds of process $1.
h_fds() { ls "/proc/$1/fd" | wc -l; }

# True when the server has at least $1 open fds.
h_server_fds_at_least() { [ "$(h_fds "$SRV")" -ge "$1" ]; }

# VmRSS of process $1 in kB.
h_rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }


# ---- malformed control traffic ---------------------------------------------

# Send stdin as one connection to the control port. The server must close it
# within 2 s and log exactly one WARN line naming the peer whose text matches
# the extended regex $2. $1 labels the input in failure messages.
h_bad_input() {
	local label=$1 want=$2 before last
	before=$(h_log_count server " WARN ")
	"$TCPKIT" raw 127.0.0.1 "$CTL" 2000 >/dev/null ||
		{ why "$label: connection not closed by the server"; return 1; }
	wait_until 2 h_log_more server " WARN " "$before" ||
		{ why "$label: no WARN line in the server log"; return 1; }
	[ "$(h_log_count server " WARN ")" = $((before + 1)) ] ||
		{ why "$label: more than one WARN line"; return 1; }
	last=$(grep -F " WARN " "$WORK/server.log" | tail -n 1)
	grep -qE " WARN 127\.0\.0\.1:[0-9]+: ($want)" <<<"$last" ||
		{ why "$label: logged '$last', wanted /$want/"; return 1; }
}

# A fake client (bash /dev/tcp on fds 3 and 4) opens a tunnel, gets a visitor,
# and claims it for real; sets CLAIMED to the claimed id.
h_claim_visitor() {
	local visitor
	fake_hello || return 1
	start claimed "$TCPKIT" banner 127.0.0.1 "$FAKE_PUB" "claimed"
	visitor=$LAST
	fake_connection_id && fake_accept $'claimed\r\n' || return 1
	# The visitor reads our banner only once the server has handed it over.
	wait_exit "$visitor" 5 && [ "$RC" = 0 ] || { why "claimed visitor did not get its banner"; return 1; }
	CLAIMED=$FAKE_ID
}

# Every kind of bad first message closes its own connection with a WARN line
# naming the peer; a real tunnel stays up throughout.
t_malformed_control() {
	local uuid=2d22dad6-dbff-4ee8-a34f-44bc515b4142 deep rc=0
	local parse="unable to parse message" frame="frame error, invalid byte length"
	start_tunnel || { why "could not set up a tunnel"; return 1; }
	{ head -c 257 /dev/zero | tr '\0' 'a'; printf '\0'; } | h_bad_input "257-byte frame" "$frame" &&
		head -c 1048576 /dev/zero | tr '\0' '{' | h_bad_input "1 MB without NUL" "$frame" &&
		head -c 4096 /dev/urandom | h_bad_input "binary garbage" "$frame|$parse" &&
		printf '{"Error":"\xc3\x28"}\0' | h_bad_input "invalid UTF-8" "$parse" &&
		head -c 1000 /dev/zero | h_bad_input "NUL flood" "$parse" &&
		printf '{}\0' | h_bad_input "{}" "$parse" &&
		printf '[]\0' | h_bad_input "[]" "$parse" || return 1
	deep=$(printf '%1000s' '' | tr ' ' '[')
	printf '%s\0' "$deep" | h_bad_input "1000-deep [[[" "$frame" || return 1
	# As deep as fits in a legal frame, so the parser itself meets it.
	deep=$(printf '%120s' '' | tr ' ' '[')$(printf '%120s' '' | tr ' ' ']')
	printf '{"Hello":%s}\0' "$deep" | h_bad_input "120-deep array in Hello" "$parse" &&
		printf '{"Hello":65536}\0' | h_bad_input '{"Hello":65536}' "$parse" &&
		printf '{"Hello":-1}\0' | h_bad_input '{"Hello":-1}' "$parse" &&
		printf '{"Hello":1e3}\0' | h_bad_input '{"Hello":1e3}' "$parse" &&
		printf '{"Hello":"80"}\0' | h_bad_input '{"Hello":"80"}' "$parse" &&
		printf '{"Goodbye":1}\0' | h_bad_input '{"Goodbye":1}' "$parse" &&
		printf '{"Hello":1,"Hello":2}\0' | h_bad_input "duplicate keys" "$parse" &&
		printf '{"Accept":"2d22dad6-dbff-4ee8-a34f-44bc515b414"}\0' |
		h_bad_input "short UUID" "$parse" &&
		printf '{"Accept":"2d22dad6-dbff-4ee8-a34f-44bc515b414g"}\0' |
		h_bad_input "UUID with a non-hex digit" "$parse" &&
		printf '{"Accept":"2d22dad6dbff-4ee8-a34f-44bc515b41424"}\0' |
		h_bad_input "UUID with a misplaced hyphen" "$parse" &&
		printf '{"Accept":"%s"}\0' "$uuid" | h_bad_input "Accept of an unknown id" "missing connection" &&
		printf '{"Authenticate":"%064d"}\0' 0 | h_bad_input "Authenticate without a secret" \
			"unexpected authenticate" &&
		printf '"Heartbeat"\0' | h_bad_input "Heartbeat from a client" "unexpected [A-Za-z]+ message" &&
		printf '{"Error":"x"}\0' | h_bad_input "Error from a client" "unexpected [A-Za-z]+ message" &&
		printf '{"Connection":"%s"}\0' "$uuid" |
		h_bad_input "Connection from a client" "unexpected [A-Za-z]+ message" &&
		printf '{"Challenge":"%s"}\0' "$uuid" |
		h_bad_input "Challenge from a client" "unexpected [A-Za-z]+ message" || return 1
	# An id that was claimed for real cannot be claimed again.
	h_claim_visitor && printf '{"Accept":"%s"}\0' "$CLAIMED" |
		h_bad_input "Accept of a claimed id" "missing connection" || rc=1
	exec 3>&- 4>&-
	[ $rc = 0 ] || return 1
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 1000000) || { why "tunnel after the bad input: $out"; return 1; }
	alive "$SRV" || { why "server died"; return 1; }
	alive "$CLI" || { why "client died"; return 1; }
}

# ---- slow and silent peers -------------------------------------------------

# Check a "closed C of N min A median B max D" line from tcpkit slow: all N
# closed, every one between 2.5 and 5 s after it connected.
h_slow_all_dropped() {
	local line closed n min median max
	line=$(grep '^closed' "$WORK/$1.log")
	h_figure "$1: $line"
	read -r _ closed _ n _ min _ median _ max <<<"$line"
	[ -n "$line" ] && [ "$closed" = "$n" ] ||
		{ why "$1: not all dropped: '$line'"; return 1; }
	between "$min" 2.5 5 && between "$max" 2.5 5 ||
		{ why "$1: dropped outside 2.5-5 s: '$line'"; return 1; }
}

# 500 silent connections and 20 that send a byte a second are all dropped at
# about 3 s, and while they hang a real tunnel still answers at once.
t_slow_and_silent() {
	local base t0 t
	start_tunnel || { why "could not set up a tunnel"; return 1; }
	base=$(fds_threads "$SRV")
	start silent "$TCPKIT" slow 127.0.0.1 "$CTL" 500 0 10
	local silent=$LAST
	start dripping "$TCPKIT" slow 127.0.0.1 "$CTL" 20 1 10
	local dripping=$LAST
	# They hang: one server fd each.
	wait_until 5 h_server_fds_at_least $((${base% *} + 520)) ||
		{ why "server fds: ${base% *} -> $(h_fds "$SRV"), wanted +520"; return 1; }
	t0=$(h_now)
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 1048576) || { why "roundtrip: $out"; return 1; }
	t=$(h_elapsed "$t0" "$(h_now)")
	h_figure "1 MiB roundtrip while 520 peers hang: $t s"
	between "$t" 0 1.5 || { why "1 MiB roundtrip took $t s while peers hung"; return 1; }
	RC=
	wait_exit "$silent" 12 && [ "$RC" = 0 ] || { why "silent peers: tcpkit slow ${RC:-still running}"; return 1; }
	RC=
	wait_exit "$dripping" 12 && [ "$RC" = 0 ] ||
		{ why "dripping peers: tcpkit slow ${RC:-still running}"; return 1; }
	h_slow_all_dropped silent && h_slow_all_dropped dripping || return 1
	[ "$(h_log_count server "timed out waiting for initial message")" -ge 520 ] ||
		{ why "only $(h_log_count server "timed out waiting for initial message") timeout lines"; return 1; }
	wait_until 5 h_server_at "$base" || { why "server fds/threads $base -> $(fds_threads "$SRV")"; return 1; }
	alive "$CLI" || { why "client died"; return 1; }
}

# ---- storms --------------------------------------------------------------

# Thousands of connect-and-close cycles on the control port and on a public
# port, then 50,000 short tunneled connections: nothing is left behind and
# the server's memory does not grow.
t_storms() {
	local srv_base cli_base warm rss0 rss1 t0 t
	start_origin origin churn 1024 && start_server server && start_client client "$ORIGIN" ||
		{ why "could not set up a tunnel"; return 1; }
	srv_base=$(fds_threads "$SRV")
	cli_base=$(fds_threads "$CLI")
	# Warm-up before the memory baseline. Every connection runs on a thread of
	# its own, and glibc keeps the stacks of finished threads (up to 40 MB of
	# them: ~600 stacks of 64 KiB, ~7 MB resident) and the malloc arenas' free
	# space for reuse. The storms below briefly run hundreds of threads at once,
	# so to compare like with like the warm-up first holds 2,000 tunneled
	# connections open together (near the 2,048-per-tunnel ceiling), which fills
	# those caches, then runs 1,000 short ones. Without it the storms show
	# 6-8 MB of "growth" that is the caches filling up, not a leak.
	start warm "$TCPKIT" slow 127.0.0.1 "$PUB" 2000 0 60
	warm=$LAST
	# Each relayed visitor holds two server fds: its own and the data connection.
	wait_until 20 h_server_fds_at_least $((${srv_base% *} + 4000)) ||
		{ why "warm-up: server fds ${srv_base% *} -> $(h_fds "$SRV"), wanted +4000"; return 1; }
	kill -TERM "$warm"
	wait "$warm" 2>/dev/null
	out=$("$TCPKIT" churncount 127.0.0.1 "$PUB" 1000 4 1024) || { why "warm-up churn: $out"; return 1; }
	wait_until 20 h_server_at "$srv_base" ||
		{ why "after warm-up: server fds/threads $srv_base -> $(fds_threads "$SRV")"; return 1; }
	rss0=$(h_rss_kb "$SRV")
	out=$("$TCPKIT" storm 127.0.0.1 "$CTL" 5000 4) || { why "control-port storm: $out"; return 1; }
	h_figure "control-port storm: $out (count, connections/s)"
	out=$("$TCPKIT" storm 127.0.0.1 "$PUB" 5000 4) || { why "public-port storm: $out"; return 1; }
	h_figure "public-port storm: $out (count, connections/s)"
	alive "$SRV" && alive "$CLI" || { why "a bore process died in the storms"; return 1; }
	wait_until 30 h_server_at "$srv_base" ||
		{ why "after the storms: server fds/threads $srv_base -> $(fds_threads "$SRV")"; return 1; }
	t0=$(h_now)
	out=$("$TCPKIT" churncount 127.0.0.1 "$PUB" 50000 4 1024) || { why "50,000 tunneled: $out"; return 1; }
	t=$(h_elapsed "$t0" "$(h_now)")
	h_figure "50,000 tunneled connections (4 at a time): $out (count, connections/s), $t s"
	[ "${out#ok }" != "$out" ] && [ "$(cut -d' ' -f2 <<<"$out")" = 50000 ] || { why "churn said '$out'"; return 1; }
	wait_until 10 h_server_at "$srv_base" ||
		{ why "after 50,000 tunneled: server fds/threads $srv_base -> $(fds_threads "$SRV")"; return 1; }
	wait_until 10 h_at "$CLI" "$cli_base" ||
		{ why "client fds/threads $cli_base -> $(fds_threads "$CLI")"; return 1; }
	rss1=$(h_rss_kb "$SRV")
	h_figure "server fds threads: $srv_base at start and $(fds_threads "$SRV") at the end; VmRSS after warm-up ${rss0} kB, at the end ${rss1} kB"
	# A sanitizer build keeps freed memory in quarantine: its RSS says nothing here.
	if grep -q __asan_init "$BORE" 2>/dev/null; then
		h_figure "sanitizer build: VmRSS bound not checked"
		return 0
	fi
	[ $((rss1 - rss0)) -le 1024 ] || { why "server VmRSS grew from $rss0 kB to $rss1 kB"; return 1; }
}

# ---- fd exhaustion -------------------------------------------------------

# A server with 64 fds flooded on its control port says "Too many open files",
# stays alive without spinning, and serves a tunnel once the flood is gone.
t_emfile() {
	local base flood n0 n1 c0 c1 hz
	CTL=$(free_port) || { why "no free control port"; return 1; }
	TUN_MIN=$((20000 + (RANDOM % 60) * 200))
	TUN_MAX=$((TUN_MIN + 199))
	start server bash -c 'ulimit -n 64 && exec "$@"' bore "$BORE" server --bind-addr 127.0.0.1 \
		--control-port "$CTL" --min-port "$TUN_MIN" --max-port "$TUN_MAX"
	SRV=$LAST
	wait_until 5 grep -q "server listening" "$WORK/server.log" ||
		{ why "server with 64 fds did not start"; return 1; }
	base=$(fds_threads "$SRV")
	start flood "$TCPKIT" slow 127.0.0.1 "$CTL" 100 0 60
	flood=$LAST
	wait_until 5 grep -q "^connected 100" "$WORK/flood.log" || { why "flood did not connect"; return 1; }
	wait_until 5 grep -q "accept: Too many open files" "$WORK/server.log" ||
		{ why "no 'accept: Too many open files' (server fds $(fds_threads "$SRV"))"; return 1; }
	# One second while saturated: little CPU, and accept() retried about every 100 ms.
	hz=$(getconf CLK_TCK)
	n0=$(h_log_count server "accept: Too many open files")
	c0=$(cpu_ticks "$SRV")
	sleep 1
	c1=$(cpu_ticks "$SRV")
	n1=$(h_log_count server "accept: Too many open files")
	h_figure "saturated for 1 s: $((c1 - c0)) CPU ticks of $hz/s, $((n1 - n0)) accept warnings"
	alive "$SRV" || { why "server died"; return 1; }
	[ $((c1 - c0)) -lt $((hz / 5)) ] || { why "server used $((c1 - c0)) ticks (of $hz/s) in 1 s"; return 1; }
	[ $((n1 - n0)) -ge 3 ] && [ $((n1 - n0)) -le 30 ] ||
		{ why "$((n1 - n0)) accept warnings in 1 s (backoff is 100 ms)"; return 1; }
	kill -TERM "$flood"
	wait "$flood" 2>/dev/null
	wait_until 10 h_server_at "$base" || { why "after the flood: server fds/threads $base -> $(fds_threads "$SRV")"; return 1; }
	start_origin origin echo && start_client client "$ORIGIN" || { why "no tunnel after the flood"; return 1; }
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 1048576) || { why "roundtrip: $out"; return 1; }
	alive "$SRV"
}

# ---- limits ----------------------------------------------------------------

# --max-sessions 2: the third tunnel is refused; one leaves, and a new one fits.
t_max_sessions() {
	local first
	start_origin origin echo && start_server server --max-sessions 2 &&
		start_client first "$ORIGIN" || { why "could not set up the first tunnel"; return 1; }
	first=$CLI
	local first_pub=$PUB
	start_client second "$ORIGIN" || { why "second tunnel refused"; return 1; }
	start third "$BORE" local "$ORIGIN" --local-host 127.0.0.1 --to 127.0.0.1 --control-port "$CTL"
	wait_exit "$LAST" 5 || { why "third client did not exit"; return 1; }
	[ "$RC" = 1 ] || { why "third client: exit status $RC"; return 1; }
	log_has third "server error: too many tunnels" &&
		log_has server "refused: too many tunnels (limit 2)" || return 1
	kill -TERM "$first"
	wait_exit "$first" 5 || { why "first client did not stop"; return 1; }
	wait_until 5 grep -qF "tunnel on port $first_pub closed" "$WORK/server.log" ||
		{ why "server did not close port $first_pub"; return 1; }
	start_client fourth "$ORIGIN" || { why "no tunnel after one left"; return 1; }
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 100000) || { why "roundtrip: $out"; return 1; }
}

# --max-conns 3: with three visitors relayed, a fourth is closed at once.
t_max_conns() {
	local base hold t
	start_tunnel --max-conns 3 || { why "could not set up a tunnel"; return 1; }
	base=$(fds_threads "$SRV")
	rm -f "$WORK/max_conns.fifo"
	mkfifo "$WORK/max_conns.fifo" || { why "mkfifo failed"; return 1; }
	start hold bash -c 'exec "$0" hold 127.0.0.1 "$1" 3 <"$2"' "$TCPKIT" "$PUB" "$WORK/max_conns.fifo"
	hold=$LAST
	# Our end of hold's stdin: closing it releases the three visitors.
	exec 7<>"$WORK/max_conns.fifo"
	wait_until 5 grep -q "^ready 3" "$WORK/hold.log" || { why "three visitors not relayed"; exec 7>&-; return 1; }
	rm -f "$WORK/max_conns.fifo"
	t=$(TCPKIT_TIMEOUT=3 "$TCPKIT" waitclose 127.0.0.1 "$PUB" 2>&1) ||
		{ why "fourth visitor: $t"; exec 7>&-; return 1; }
	h_figure "fourth visitor closed after $t s"
	between "$t" 0 1 || { why "fourth visitor closed after $t s"; exec 7>&-; return 1; }
	log_has server "port $PUB: refused 127.0.0.1:" &&
		log_has server "too many connections (limit 3)" || { exec 7>&-; return 1; }
	exec 7>&-
	RC=
	wait_exit "$hold" 5 && [ "$RC" = 0 ] || { why "hold: ${RC:-still running}"; return 1; }
	wait_until 5 h_server_at "$base" || { why "server fds/threads $base -> $(fds_threads "$SRV")"; return 1; }
	out=$("$TCPKIT" many 127.0.0.1 "$PUB" 3 100000) || { why "after release: $out"; return 1; }
}

# ---- abrupt deaths -----------------------------------------------------------

# Wait until a visitor's transfer through the server is under way: two server
# fds more than in "$1" (fds_threads before it: the visitor and its data
# connection), then a moment of traffic.
h_transfer_started() {
	wait_until 5 h_server_fds_at_least $((${1% *} + 2)) || return 1
	sleep 0.3
}

# Start a long transfer through the tunnel at $PUB, kill -9 pid $1 (the $2) in the
# middle of it, and check the visitor ends, failing, within $3 s.  The kill's
# time goes to H_KILLED_AT.
h_kill_during_transfer() {
	local victim=$1 what=$2 limit=$3 base visitor t
	base=$(fds_threads "$SRV")
	start visitor "$TCPKIT" stream 127.0.0.1 "$PUB" 60
	visitor=$LAST
	h_transfer_started "$base" || { why "transfer did not start"; return 1; }
	alive "$visitor" || { why "visitor ended early"; return 1; }
	H_KILLED_AT=$(h_now)
	{ kill -9 "$victim"; wait "$victim"; } 2>/dev/null
	wait_exit "$visitor" 4 || { why "visitor still running 4 s after the $what was killed"; return 1; }
	t=$(h_elapsed "$H_KILLED_AT" "$(h_now)")
	h_figure "visitor ended $t s after the $what was killed (exit $RC)"
	[ "$RC" != 0 ] || { why "visitor exited 0 after a cut transfer"; return 1; }
	between "$t" 0 "$limit" || { why "visitor ended $t s after the kill"; return 1; }
}

# kill -9 of the client ends its relayed visitors at once and frees its port.
t_client_killed_mid_transfer() {
	local base t0 t old_pub
	start_tunnel || { why "could not set up a tunnel"; return 1; }
	base=$(fds_threads "$SRV")
	old_pub=$PUB
	h_kill_during_transfer "$CLI" client 1.2 || return 1
	t0=$H_KILLED_AT
	wait_until 2 grep -qF "tunnel on port $old_pub closed" "$WORK/server.log" ||
		{ why "server did not close port $old_pub"; return 1; }
	# It noticed at once, not at a failed heartbeat (every 500 ms).
	t=$(h_elapsed "$t0" "$(h_log_time server "tunnel on port $old_pub closed")")
	h_figure "server closed the tunnel $t s after the client was killed"
	between "$t" -0.01 0.3 || { why "server closed the tunnel $t s after the kill"; return 1; }
	start_client client2 "$ORIGIN" --port "$old_pub" || { why "port $old_pub not free again"; return 1; }
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 100000) || { why "new tunnel: $out"; return 1; }
	wait_until 5 h_server_at "$base" || { why "server fds/threads $base -> $(fds_threads "$SRV")"; return 1; }
	# kill -9 also closes the client's data connections, so the kernel alone
	# ends that visitor. A client whose control connection ends while its data
	# connection stays open shows that the server itself cuts the relays.
	local rc=0
	h_control_gone_cuts_relay || rc=1
	exec 3>&- 4>&-
	return $rc
}

# A fake client (bash /dev/tcp: control on fd 3, data on fd 4) gets a visitor
# relayed, then closes only its control connection: the visitor is cut at once.
h_control_gone_cuts_relay() {
	local visitor t0 t
	fake_hello || return 1
	# The visitor must not hold a copy of the control connection.
	start cut_visitor bash -c 'exec "$@" 3>&-' visitor "$TCPKIT" raw 127.0.0.1 "$FAKE_PUB" 5000
	visitor=$LAST
	fake_connection_id && fake_accept $'relayed\n' || return 1
	wait_until 5 grep -q relayed "$WORK/cut_visitor.log" || { why "fake client's visitor not relayed"; return 1; }
	t0=$(h_now)
	exec 3>&-
	wait_exit "$visitor" 3 || { why "relayed visitor still open 3 s after its control connection closed"; return 1; }
	t=$(h_elapsed "$t0" "$(h_now)")
	h_figure "relayed visitor cut $t s after its control connection closed"
	[ "$RC" = 0 ] || { why "relayed visitor: tcpkit raw exit $RC"; return 1; }
	between "$t" 0 1 || { why "relayed visitor cut $t s after its control connection closed"; return 1; }
}

# kill -9 of the local service ends the visitor; the tunnel keeps serving.
t_service_killed_mid_transfer() {
	local base
	# serveat lets the service come back on its old port (SO_REUSEADDR).
	start origin "$TCPKIT" serveat 0 echo
	local origin=$LAST
	wait_until 5 test -s "$WORK/origin.log" || { why "service did not start"; return 1; }
	ORIGIN=$(head -n 1 "$WORK/origin.log")
	start_server server && start_client client "$ORIGIN" || { why "could not set up a tunnel"; return 1; }
	base=$(fds_threads "$SRV")
	h_kill_during_transfer "$origin" service 2 || return 1
	alive "$CLI" && alive "$SRV" || { why "a bore process died with the service"; return 1; }
	wait_until 5 h_server_at "$base" || { why "server fds/threads $base -> $(fds_threads "$SRV")"; return 1; }
	start origin2 "$TCPKIT" serveat "$ORIGIN" echo
	wait_until 5 test -s "$WORK/origin2.log" || { why "service did not come back on $ORIGIN"; return 1; }
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 1048576) || { why "after the service came back: $out"; return 1; }
	alive "$CLI"
}

# ---- secrets -----------------------------------------------------------------

# --secret-file on both ends; wrong and missing files; no secret in a process's
# command line or in any log.
t_secret_files() {
	local good=hardening-file-secret-Qx7 wrong=hardening-file-secret-Qx8
	local argv_secret=hardening-argv-secret-Kp3 out rc f pid sub
	printf '%s\nsecond line, not part of the secret\n' "$good" >"$WORK/server.secret"
	printf '%s\nanother second line\n' "$good" >"$WORK/client.secret"
	printf '%s\n' "$wrong" >"$WORK/wrong.secret"
	start_origin origin echo && start_server server --secret-file "$WORK/server.secret" &&
		start_client client "$ORIGIN" --secret-file "$WORK/client.secret" ||
		{ why "no tunnel with --secret-file"; return 1; }
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 1048576) || { why "roundtrip: $out"; return 1; }
	start wrong "$BORE" local "$ORIGIN" --local-host 127.0.0.1 --to 127.0.0.1 --control-port "$CTL" \
		--secret-file "$WORK/wrong.secret"
	wait_exit "$LAST" 5 || { why "client with the wrong secret file did not exit"; return 1; }
	[ "$RC" = 78 ] || { why "wrong secret file: exit status $RC"; return 1; }
	log_has wrong "invalid secret" && log_has server "invalid secret" || return 1
	# A missing file: exit 1 and one line, for both subcommands.
	for sub in "local 9 --to 127.0.0.1" "server --bind-addr 127.0.0.1"; do
		# shellcheck disable=SC2086
		out=$(timeout 5 "$BORE" $sub --control-port "$(free_port)" --secret-file "$WORK/missing.secret" 2>&1)
		rc=$?
		[ "$rc" = 1 ] || { why "bore ${sub%% *} with a missing secret file: exit $rc"; return 1; }
		[ "$(wc -l <<<"$out")" = 1 ] && grep -qF "missing.secret" <<<"$out" ||
			{ why "bore ${sub%% *} with a missing secret file said: $out"; return 1; }
	done
	# --secret in argv is wiped from the command line, in both spellings.
	start_server server2 --secret "$argv_secret" || { why "server with --secret did not start"; return 1; }
	start_client client2 "$ORIGIN" --secret="$argv_secret" || { why "no tunnel with --secret"; return 1; }
	for pid in "$SRV" "$CLI"; do
		if tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$argv_secret"; then
			why "secret visible in /proc/$pid/cmdline: $(tr '\0' ' ' <"/proc/$pid/cmdline")"
			return 1
		fi
		tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "xxxxxxxx" ||
			{ why "no wiped secret in /proc/$pid/cmdline: $(tr '\0' ' ' <"/proc/$pid/cmdline")"; return 1; }
	done
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 100000) || { why "roundtrip with --secret: $out"; return 1; }
	for f in "$WORK"/*.log; do
		if grep -qF -e "$good" -e "$wrong" -e "$argv_secret" "$f"; then
			why "a secret appears in $(basename "$f")"
			return 1
		fi
	done
}

# ---- threads and memory checkers ----------------------------------------------

# With too little address space for more thread stacks, a connection the server
# cannot give a thread is closed at once and logged; the server keeps serving.
t_thread_failure() {
	local out
	CTL=$(free_port) || return 1
	start server bash -c 'ulimit -v 8000; exec "$@"' bore "$BORE" server --bind-addr 127.0.0.1 \
		--control-port "$CTL" --min-port 20000 --max-port 32000
	SRV=$LAST
	wait_until 5 grep -q "server listening" "$WORK/server.log" || { why "server did not start"; return 1; }
	out=$(TCPKIT_TIMEOUT=10 "$TCPKIT" slow 127.0.0.1 "$CTL" 200 0 6) || { why "$out"; return 1; }
	log_has server "could not start a thread" || return 1
	alive "$SRV" || { why "server died"; return 1; }
	# Idle workers let go of their threads (each holds a page of the scarce address space).
	threads_are_one() { [ "$(ls "/proc/$SRV/task" | wc -l)" = 1 ]; }
	wait_until 5 threads_are_one || { why "idle workers did not exit"; return 1; }
	start_origin origin echo && start_client client "$ORIGIN" || { why "no tunnel afterwards"; return 1; }
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 100000) || { why "$out"; return 1; }
}

# A short session of server and client under valgrind: no errors, no leaks.
t_valgrind_short_session() {
	local vg="valgrind -q --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite,indirect"
	if ! command -v valgrind >/dev/null 2>&1; then
		why "valgrind is not installed: skipped"
		return 2
	fi
	start_origin origin echo || return 1
	CTL=$(free_port) || return 1
	start server $vg "$BORE" server --bind-addr 127.0.0.1 --control-port "$CTL" \
		--min-port 20000 --max-port 32000 -s vg-secret
	SRV=$LAST
	wait_until 20 grep -q "server listening" "$WORK/server.log" || { why "server did not start"; return 1; }
	start client $vg "$BORE" local "$ORIGIN" --local-host 127.0.0.1 --to 127.0.0.1 \
		--control-port "$CTL" -s vg-secret
	CLI=$LAST
	wait_until 20 grep -q "listening at" "$WORK/client.log" || { why "client did not connect"; return 1; }
	PUB=$(public_port client)
	out=$("$TCPKIT" many 127.0.0.1 "$PUB" 10 100000) || { why "$out"; return 1; }
	printf 'garbage\0' | "$TCPKIT" raw 127.0.0.1 "$CTL" 2000 >/dev/null
	kill -TERM "$CLI"
	wait_exit "$CLI" 20 || { why "client did not exit"; return 1; }
	[ "$RC" = 0 ] || { why "client under valgrind: exit $RC"; return 1; }
	kill -TERM "$SRV"
	wait_exit "$SRV" 20 || { why "server did not exit"; return 1; }
	[ "$RC" = 0 ] || { why "server under valgrind: exit $RC"; return 1; }
}
