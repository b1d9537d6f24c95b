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

# True when log $1 has more than $3 lines that contain $2.
h_log_more() { [ "$(count_in_log "$1" "$2")" -gt "$3" ]; }

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
	before=$(count_in_log server " WARN ")
	"$TCPKIT" raw 127.0.0.1 "$CTL" 2000 >/dev/null ||
		{ why "$label: connection not closed by the server"; return 1; }
	wait_until 2 h_log_more server " WARN " "$before" ||
		{ why "$label: no WARN line in the server log"; return 1; }
	[ "$(count_in_log server " WARN ")" = $((before + 1)) ] ||
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
	# Room for all of them before authentication: here the timeout is what drops them.
	start_tunnel --max-startups 1000 || { why "could not set up a tunnel"; return 1; }
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
	# Rate-limited lines: they and the counts they carry add up, once a line after them counts.
	counted_after_more lines_counted_at_least server "timed out waiting for initial message" 520 \
		"$TCPKIT" slow 127.0.0.1 "$CTL" 1 0 5 ||
		{ why "only $(lines_counted server "timed out waiting for initial message") timeouts logged"; return 1; }
	wait_until 5 fds_threads_are "$SRV" "$base" || { why "server fds/threads $base -> $(fds_threads "$SRV")"; return 1; }
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
	# its own; ended threads' stacks are unmapped and the heap is trimmed once
	# the last idle worker goes, but the malloc arenas (a few) stay once made.
	# The storms below briefly run hundreds of threads at once, so to compare
	# like with like the warm-up first holds 2,000 tunneled connections open
	# together (near the 2,048-per-tunnel ceiling), then runs 1,000 short ones.
	start warm "$TCPKIT" slow 127.0.0.1 "$PUB" 2000 0 60
	warm=$LAST
	# Each relayed visitor holds two server fds: its own and the data connection. A
	# sanitizer build starts threads several times slower, so data connections of the
	# burst that have sent Accept wait for theirs, past twice --max-startups, and some
	# newcomers are closed at once as the limit says (up to 91 of 2,000 seen): 90% will do.
	local want=4000
	grep -q -e __asan_init -e __tsan_init "$BORE" 2>/dev/null && want=3600
	wait_until 40 h_server_fds_at_least $((${srv_base% *} + want)) ||
		{ why "warm-up: server fds ${srv_base% *} -> $(h_fds "$SRV"), wanted +$want"; return 1; }
	kill -TERM "$warm"
	wait "$warm" 2>/dev/null
	out=$("$TCPKIT" churncount 127.0.0.1 "$PUB" 1000 4 1024) || { why "warm-up churn: $out"; return 1; }
	wait_until 20 fds_threads_are "$SRV" "$srv_base" ||
		{ why "after warm-up: server fds/threads $srv_base -> $(fds_threads "$SRV")"; return 1; }
	rss0=$(h_rss_kb "$SRV")
	out=$("$TCPKIT" storm 127.0.0.1 "$CTL" 5000 4) || { why "control-port storm: $out"; return 1; }
	h_figure "control-port storm: $out (count, connections/s)"
	out=$("$TCPKIT" storm 127.0.0.1 "$PUB" 5000 4) || { why "public-port storm: $out"; return 1; }
	h_figure "public-port storm: $out (count, connections/s)"
	alive "$SRV" && alive "$CLI" || { why "a bore process died in the storms"; return 1; }
	wait_until 30 fds_threads_are "$SRV" "$srv_base" ||
		{ why "after the storms: server fds/threads $srv_base -> $(fds_threads "$SRV")"; return 1; }
	t0=$(h_now)
	out=$("$TCPKIT" churncount 127.0.0.1 "$PUB" 50000 4 1024) || { why "50,000 tunneled: $out"; return 1; }
	t=$(h_elapsed "$t0" "$(h_now)")
	h_figure "50,000 tunneled connections (4 at a time): $out (count, connections/s), $t s"
	[ "${out#ok }" != "$out" ] && [ "$(cut -d' ' -f2 <<<"$out")" = 50000 ] || { why "churn said '$out'"; return 1; }
	wait_until 10 fds_threads_are "$SRV" "$srv_base" ||
		{ why "after 50,000 tunneled: server fds/threads $srv_base -> $(fds_threads "$SRV")"; return 1; }
	wait_until 10 fds_threads_are "$CLI" "$cli_base" ||
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

# A burst of 300 tunneled connections at once, and the idle server lets go of
# what it took: its threads' stacks are unmapped (its mappings come back to
# within a few arenas of before) and, in a plain build, VmRSS comes back to
# within 1 MB. Sanitizer builds keep memory of their own (ASan's quarantine;
# TSan's thread records, mapped too), so they are held to what they allow.
t_burst_memory_returns() {
	local base maps0 rss0 plain=1
	grep -q -e __asan_init -e __tsan_init "$BORE" 2>/dev/null && plain=0
	start_tunnel || { why "could not set up a tunnel"; return 1; }
	base=$(fds_threads "$SRV")
	# A warm-up first, so that the arenas a few threads make are in the baseline.
	out=$("$TCPKIT" many 127.0.0.1 "$PUB" 20 1024) || { why "warm-up: $out"; return 1; }
	wait_until 10 fds_threads_are "$SRV" "$base" ||
		{ why "after warm-up: server fds/threads $base -> $(fds_threads "$SRV")"; return 1; }
	maps0=$(wc -l <"/proc/$SRV/maps")
	rss0=$(h_rss_kb "$SRV")
	out=$("$TCPKIT" many 127.0.0.1 "$PUB" 300 1024) || { why "burst: $out"; return 1; }
	# Idle workers wait 2 s for a job; the last to go trims the heap.
	wait_until 10 fds_threads_are "$SRV" "$base" ||
		{ why "after the burst: server fds/threads $base -> $(fds_threads "$SRV")"; return 1; }
	h_memory_back() {
		{ [ "$TSAN_THREAD" = 1 ] || [ "$(wc -l <"/proc/$SRV/maps")" -le $((maps0 + 16)) ]; } &&
			{ [ "$plain" = 0 ] || [ "$(h_rss_kb "$SRV")" -le $((rss0 + 1024)) ]; }
	}
	wait_until 5 h_memory_back || { why "after the burst: mappings $maps0 -> $(wc -l \
		<"/proc/$SRV/maps"), VmRSS $rss0 -> $(h_rss_kb "$SRV") kB"; return 1; }
	h_figure "mappings $maps0 -> $(wc -l <"/proc/$SRV/maps"), VmRSS $rss0 -> $(h_rss_kb "$SRV") kB"
}

# ---- fd exhaustion and floods -----------------------------------------------

# A server with 64 fds flooded with idle control connections: the flood's
# oldest make way for newcomers, so it never runs out of fds, spends little
# CPU, and a client opens a tunnel in the middle of the flood.
t_control_flood_few_fds() {
	local base flood c0 c1 hz
	WRAP="prlimit --nofile=64 --" start_server server || { why "server with 64 fds did not start"; return 1; }
	base=$(fds_threads "$SRV")
	TCPKIT_FROM=127.0.0.2 start flood "$TCPKIT" slow 127.0.0.1 "$CTL" 100 0 60
	flood=$LAST
	wait_until 5 grep -q "^connected 100" "$WORK/flood.log" || { why "flood did not connect"; return 1; }
	start_origin origin echo && start_client client "$ORIGIN" || { why "no tunnel during the flood"; return 1; }
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 1048576) || { why "roundtrip during the flood: $out"; return 1; }
	log_has server "too many connections before authentication (limit 7)" || return 1
	# One second under the flood: little CPU.
	hz=$(getconf CLK_TCK)
	c0=$(cpu_ticks "$SRV")
	sleep 1
	c1=$(cpu_ticks "$SRV")
	h_figure "flooded for 1 s: $((c1 - c0)) CPU ticks of $hz/s"
	[ $((c1 - c0)) -lt $((hz / 5)) ] || { why "server used $((c1 - c0)) ticks (of $hz/s) in 1 s"; return 1; }
	! grep -q "Too many open files" "$WORK/server.log" || { why "server ran out of fds"; return 1; }
	kill -TERM "$flood" "$CLI"
	wait "$flood" 2>/dev/null
	wait_until 10 fds_threads_are "$SRV" "$base" ||
		{ why "after the flood: server fds/threads $base -> $(fds_threads "$SRV")"; return 1; }
}

# Server at 64 fds with two tunnels; 500 visitors burst into one and leave
# after 1 s. While they are there the control port still accepts, so the
# other tunnel keeps serving; once they are gone both serve within seconds.
t_visitor_burst_few_fds() {
	local base burst a_pub t0 t
	WRAP="prlimit --nofile=64 --" start_server server && start_origin origin echo &&
		start_client a "$ORIGIN" || { why "could not set up tunnel a"; return 1; }
	a_pub=$PUB
	start_client b "$ORIGIN" || { why "could not set up tunnel b"; return 1; }
	base=$(fds_threads "$SRV")
	start burst "$TCPKIT" slow 127.0.0.1 "$a_pub" 500 0 1
	burst=$LAST
	wait_until 5 grep -q "^connected 500" "$WORK/burst.log" || { why "burst did not connect"; return 1; }
	t0=$(h_now)
	out=$(TCPKIT_TIMEOUT=5 "$TCPKIT" roundtrip 127.0.0.1 "$PUB" 100000) ||
		{ why "tunnel b during the burst: $out"; return 1; }
	t=$(h_elapsed "$t0" "$(h_now)")
	h_figure "tunnel b answered in $t s during the burst on a"
	wait_exit "$burst" 5 || { why "burst still open"; return 1; }
	log_has server "port $a_pub: visitors wait:" || return 1
	t0=$(h_now)
	ok_both() { "$TCPKIT" roundtrip 127.0.0.1 "$a_pub" 100000 >/dev/null 2>&1 &&
		"$TCPKIT" roundtrip 127.0.0.1 "$PUB" 100000 >/dev/null 2>&1; }
	wait_until 10 ok_both || { why "tunnels not serving 10 s after the burst"; return 1; }
	t=$(h_elapsed "$t0" "$(h_now)")
	h_figure "both tunnels served again $t s after the burst left"
	between "$t" 0 5 || { why "tunnels served again only $t s after the burst"; return 1; }
	wait_until 15 fds_threads_are "$SRV" "$base" ||
		{ why "server fds/threads $base -> $(fds_threads "$SRV")"; return 1; }
}

# Thousands of idle and churning control connections from 127.0.0.2, with a
# secret: a client on 127.0.0.1 keeps serving every visitor promptly, and the
# server's threads stay bounded.
t_preauth_flood() {
	local base held churn i t0 t worst=0 threads most=0
	start_origin origin echo && WRAP="prlimit --nofile=2048 --" start_server server -s floodsecret &&
		start_client client "$ORIGIN" -s floodsecret || { why "could not set up a tunnel"; return 1; }
	base=$(fds_threads "$SRV")
	TCPKIT_FROM=127.0.0.2 start held "$TCPKIT" slow 127.0.0.1 "$CTL" 3000 0 10
	held=$LAST
	TCPKIT_FROM=127.0.0.2 start churn "$TCPKIT" storm 127.0.0.1 "$CTL" 20000 4
	churn=$LAST
	wait_until 10 grep -q "too many connections before authentication (limit 128)" "$WORK/server.log" ||
		{ why "the flood did not reach the limit"; return 1; }
	for i in 1 2 3 4 5 6 7 8 9 10; do
		t0=$(h_now)
		out=$(TCPKIT_TIMEOUT=10 "$TCPKIT" roundtrip 127.0.0.1 "$PUB" 100000) ||
			{ why "visitor $i during the flood: $out"; return 1; }
		t=$(h_elapsed "$t0" "$(h_now)")
		awk -v a="$t" -v b="$worst" 'BEGIN { exit !(a > b) }' && worst=$t
		threads=$(ls "/proc/$SRV/task" | wc -l)
		[ "$threads" -gt "$most" ] && most=$threads
	done
	h_figure "10 visitors during the flood: slowest $worst s; server threads at most $most"
	alive "$churn" || why "note: the churning flood ended before the visitors"
	# Sanitizer builds run several times slower.
	between "$worst" 0 "$(grep -q -e __asan_init -e __tsan_init "$BORE" && echo 2 || echo 0.9)" ||
		{ why "slowest visitor took $worst s"; return 1; }
	# Twice --max-startups (a burst may use the second half), workers kept idle, the tunnel.
	[ "$most" -le 300 ] || { why "server ran $most threads"; return 1; }
	kill -TERM "$held" "$churn" 2>/dev/null
	wait "$held" "$churn" 2>/dev/null
	wait_until 10 fds_threads_are "$SRV" "$base" ||
		{ why "after the flood: server fds/threads $base -> $(fds_threads "$SRV")"; return 1; }
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 1048576) || { why "after the flood: $out"; return 1; }
}

# 150 clients ask for 150 fixed ports at the same moment, ten rounds: each gets its own.
t_hello_race() {
	start_server server --max-startups 1000 || return 1
	out=$("$TCPKIT" hellorace 127.0.0.1 "$CTL" 150 "$TUN_MIN" 10 300 0) || { why "$out"; return 1; }
	[ "$out" = "ok 1500" ] || { why "$out"; return 1; }
	! grep -q "port already in use" "$WORK/server.log" || { why "a port was refused as in use"; return 1; }
}

# A visitor that half-closes and then resets while the service says nothing:
# both ends let go of the relay within a second.
t_halfclose_then_reset() {
	local srv_base cli_base t0 t
	start_origin origin mute && start_server server && start_client client "$ORIGIN" || return 1
	srv_base=$(fds_threads "$SRV")
	cli_base=$(fds_threads "$CLI")
	out=$("$TCPKIT" finrst 127.0.0.1 "$PUB") || { why "$out"; return 1; }
	t0=$(h_now)
	srv_fds_back() { [ "$(h_fds "$SRV")" = "${srv_base% *}" ]; }
	cli_fds_back() { [ "$(h_fds "$CLI")" = "${cli_base% *}" ]; }
	wait_until 3 srv_fds_back && wait_until 3 cli_fds_back ||
		{ why "fds: server $srv_base -> $(fds_threads "$SRV"), client $cli_base -> $(fds_threads "$CLI")"; return 1; }
	t=$(h_elapsed "$t0" "$(h_now)")
	h_figure "relay released $t s after the reset"
	between "$t" 0 1 || { why "relay released only $t s after the reset"; return 1; }
	# Their threads are kept a moment for the next connection, then end.
	wait_until 5 fds_threads_are "$SRV" "$srv_base" && wait_until 5 fds_threads_are "$CLI" "$cli_base" ||
		{ why "threads: server $srv_base -> $(fds_threads "$SRV"), client $cli_base -> $(fds_threads "$CLI")"; return 1; }
}

# With a secret, a bad frame or silence after the Challenge gets an Error frame
# before the close, in bore's words.
t_handshake_error_frames() {
	local frame
	start_server server -s hunter2 || return 1
	exec 3<>"/dev/tcp/127.0.0.1/$CTL" || return 1
	IFS= read -r -d '' -t 5 frame <&3 || { why "no challenge"; return 1; }
	printf 'garbage\0' >&3
	IFS= read -r -d '' -t 5 frame <&3
	[ "$frame" = '{"Error":"unable to parse message"}' ] || { why "after garbage: '$frame'"; return 1; }
	exec 3>&- 3<>"/dev/tcp/127.0.0.1/$CTL" || return 1
	IFS= read -r -d '' -t 5 frame <&3 || { why "no challenge"; return 1; }
	IFS= read -r -d '' -t 6 frame <&3
	[ "$frame" = '{"Error":"timed out waiting for initial message"}' ] ||
		{ why "after silence: '$frame'"; return 1; }
	log_has server "server handshake failed: unable to parse message" &&
		log_has server "server handshake failed: timed out waiting for initial message"
}

# The client relays at most --max-conns visitors at once; it ignores the rest.
t_client_max_conns() {
	local base slow
	start_origin origin echo && start_server server && start_client client "$ORIGIN" --max-conns 5 ||
		return 1
	base=$(fds_threads "$CLI")
	start slow "$TCPKIT" slow 127.0.0.1 "$PUB" 50 0 3
	slow=$LAST
	wait_until 5 grep -q "visitor ignored: too many connections (limit 5)" "$WORK/client.log" ||
		{ why "no limit line in the client's log"; return 1; }
	# Each relayed visitor holds a data connection and a local one.
	[ "$(h_fds "$CLI")" -le $((${base% *} + 10)) ] || { why "client fds ${base% *} -> $(h_fds "$CLI")"; return 1; }
	[ "$(count_in_log client "visitor ignored")" = 1 ] || { why "the limit line was not rate-limited"; return 1; }
	wait_exit "$slow" 10 || { why "visitors still open"; return 1; }
	wait_until 5 fds_threads_are "$CLI" "$base" || { why "client fds/threads $base -> $(fds_threads "$CLI")"; return 1; }
	out=$("$TCPKIT" many 127.0.0.1 "$PUB" 5 100000) || { why "after the limit: $out"; return 1; }
}

# Start-up refuses what cannot work: tunnels bound to an address this host lacks, an empty secret.
t_startup_checks() {
	local ctl
	ctl=$(free_port) || return 1
	expect_cli 1 "^bore: could not bind tunnels to ::2: " server --bind-addr 127.0.0.1 \
		--control-port "$ctl" --bind-tunnels ::2 &&
		expect_cli 2 "^bore: invalid value '' for '--secret'" server --secret '' &&
		expect_cli 2 "^bore: invalid value '' for '--secret'" local 80 --to 127.0.0.1 -s ''
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
	wait_until 5 fds_threads_are "$SRV" "$base" || { why "server fds/threads $base -> $(fds_threads "$SRV")"; return 1; }
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
	wait_until 5 fds_threads_are "$SRV" "$base" || { why "server fds/threads $base -> $(fds_threads "$SRV")"; return 1; }
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
	wait_until 5 fds_threads_are "$SRV" "$base" || { why "server fds/threads $base -> $(fds_threads "$SRV")"; return 1; }
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
	printf '%s\nsecond line, a second secret the server accepts\n' "$good" >"$WORK/server.secret"
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
# 10 MB: about a hundred of the flood's threads start, and once they are gone,
# their stacks are unmapped, which leaves room for a relay.
t_thread_failure() {
	local out
	WRAP="prlimit --as=10240000 --" start_server server || { why "server did not start"; return 1; }
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
	WRAP=$vg WAIT=20 start_server server -s vg-secret || { why "server did not start"; return 1; }
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
