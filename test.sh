#!/usr/bin/env bash
# End-to-end tests for bore: the real binary on loopback, every byte checked by hash.
# Usage: ./test.sh [NAME...]   (default: every case; BORE=path runs another build,
# SERVER_BORE=path another build as the server started by start_server)
# Ends with "N passed, N failed"; exits non-zero on any failure.
set -u
cd "$(dirname "$0")" || exit 1

BORE=${BORE:-./bore}
SERVER_BORE=${SERVER_BORE:-$BORE}
TCPKIT=./tests/tcpkit
UNIT=./tests/unit
export TCPKIT_TIMEOUT=${TCPKIT_TIMEOUT:-90}

if ! make -s all tests/unit tests/tcpkit; then
	echo "build failed"
	echo "0 passed, 1 failed"
	exit 1
fi

. tests/lib.sh

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bore-test.XXXXXX")
PIDS=()
passed=0
failed=0
skipped=0

# Stop exactly the processes this script started: SIGTERM first, so that a
# sanitizer build reports leaks at exit, then SIGKILL for whatever is left.
stop_all() {
	local p
	for p in "${PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null
	done
	wait_until 3 none_alive
	for p in "${PIDS[@]}"; do
		kill -9 "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	PIDS=()
}


NETNS=()

# Delete the network namespaces (and their /etc/netns files) this script made.
del_netns() {
	local ns
	for ns in "${NETNS[@]}"; do
		ip netns del "$ns" 2>/dev/null
		rm -rf "/etc/netns/$ns"
	done
	NETNS=()
}

trap 'stop_all; del_netns; rm -rf "$WORK"' EXIT

# Make a network namespace of this script's own, with loopback up; 2 (skip) where
# that needs what this machine lacks (root, ip).
add_netns() {
	[ "$(id -u)" = 0 ] && command -v ip >/dev/null 2>&1 ||
		{ why "needs root and ip(8) for network namespaces: skipped"; return 2; }
	ip netns add "$1" || { why "could not make network namespace $1"; return 1; }
	NETNS+=("$1")
	ip -n "$1" link set lo up
}


# A free port below the ephemeral range (32768+ here) for a control port.
free_port() { "$TCPKIT" freeport 10000 19999; }

# A server on loopback with its own control port and tunnel range: sets CTL, SRV.
# These variables, set for one call, change how: WRAP, a command prefix to run it
# under (prlimit, valgrind); BIND, its address (default 127.0.0.1); KEEP_PORTS=1,
# the CTL and TUN_MIN-TUN_MAX of the server before (a restart); WAIT, seconds
# to wait for it (default 5).
start_server() {
	local name=$1
	shift
	if [ -z "${KEEP_PORTS:-}" ]; then
		CTL=$(free_port) || return 1
		TUN_MIN=$((20000 + (RANDOM % 60) * 200))
		TUN_MAX=$((TUN_MIN + 199))
	fi
	# shellcheck disable=SC2086
	start "$name" ${WRAP:-} "$SERVER_BORE" server --bind-addr "${BIND:-127.0.0.1}" --control-port "$CTL" \
		--min-port "$TUN_MIN" --max-port "$TUN_MAX" "$@"
	SRV=$LAST
	wait_until "${WAIT:-5}" grep -q "server listening" "$WORK/$name.log"
}

# Public port from a client's "listening at" line.
public_port() { sed -n 's/.*listening at 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/$1.log" | head -n 1; }

# A client exposing local port $2 through the server at $CTL: sets CLI, PUB.
start_client() {
	local name=$1 port=$2
	shift 2
	start "$name" "$BORE" local "$port" --local-host 127.0.0.1 --to 127.0.0.1 \
		--control-port "$CTL" "$@"
	CLI=$LAST
	wait_until 5 grep -q "listening at" "$WORK/$name.log" || return 1
	PUB=$(public_port "$name")
	# Its pool's connections are opened just after: let its fds settle for a baseline.
	FDS_BEFORE=
	wait_until 2 fds_settled "$CLI"
	[ -n "$PUB" ]
}

# True when process $1 has as many fds as at the last call (FDS_BEFORE).
fds_settled() {
	local before=$FDS_BEFORE
	FDS_BEFORE=$(ls /proc/"$1"/fd 2>/dev/null | wc -l)
	[ "$before" = "$FDS_BEFORE" ]
}

# A tcpkit service on a kernel-chosen port (WRAP as for start_server): sets ORIGIN.
start_origin() {
	local name=$1
	shift
	# shellcheck disable=SC2086
	start "$name" ${WRAP:-} "$TCPKIT" serve "$@"
	wait_until 5 test -s "$WORK/$name.log" || return 1
	ORIGIN=$(head -n 1 "$WORK/$name.log")
}

# Server, echo origin and client in one go: sets CTL, SRV, ORIGIN, CLI, PUB.
start_tunnel() {
	start_origin origin echo && start_server server "$@" && start_client client "$ORIGIN"
}

# Wait for pid $1 to exit within $2 seconds; its exit status in RC.
wait_exit() {
	wait_until "$2" bash -c "! kill -0 $1 2>/dev/null" || return 1
	wait "$1"
	RC=$?
}

# Number of lines of log $1 that contain the fixed string $2.
count_in_log() { grep -cF -- "$2" "$WORK/$1.log"; }

# True once log $1 has exactly $3 lines containing $2 (a function, so wait_until re-reads it).
log_count_is() { [ "$(count_in_log "$1" "$2")" = "$3" ]; }

# A ThreadSanitizer build runs a thread of its own once the first other thread starts.
TSAN_THREAD=0
grep -q __tsan_init "$BORE" 2>/dev/null && TSAN_THREAD=1

# Open fds and threads of process $1 (less ThreadSanitizer's own), as "fds threads".
fds_threads() {
	local threads
	threads=$(ls /proc/"$1"/task | wc -l)
	[ $TSAN_THREAD = 1 ] && [ "$threads" -gt 1 ] && threads=$((threads - 1))
	echo "$(ls /proc/"$1"/fd | wc -l) $threads"
}

# True when process $1 has exactly the fds $2 has ("fds threads"), and no more threads
# (re-read on every poll): workers that handled a pool's joins may idle in a baseline, and
# end before a later look.
fds_threads_are() {
	local now
	now=$(fds_threads "$1")
	[ "${now% *}" = "${2% *}" ] && [ "${now#* }" -le "${2#* }" ]
}

# Say why a case failed (shown under its FAIL line).
why() { echo "    $*" >>"$WORK/why"; }

# Check that a log contains a fixed string.
log_has() {
	grep -qF -- "$2" "$WORK/$1.log" || { why "$1.log lacks '$2'"; return 1; }
}

# A fake client on fd 3 says Hello (port $1, default any); the port granted goes to FAKE_PUB.
fake_hello() {
	local frame
	exec 3<>"/dev/tcp/127.0.0.1/$CTL" || { why "fake client could not connect"; return 1; }
	printf '{"Hello":%d}\0' "${1:-0}" >&3
	IFS= read -r -d '' -t 5 frame <&3 || { why "fake client got no Hello"; return 1; }
	FAKE_PUB=$(sed -n 's/^{"Hello":\([0-9]*\)}$/\1/p' <<<"$frame")
	[ -n "$FAKE_PUB" ] || { why "fake client got '$frame'"; return 1; }
}

# Read the fake client's frames until a Connection; its id goes to FAKE_ID.
fake_connection_id() {
	local frame
	FAKE_ID=
	while IFS= read -r -d '' -t 5 frame <&3; do
		FAKE_ID=$(sed -n 's/^{"Connection":"\([0-9a-f-]*\)"}$/\1/p' <<<"$frame")
		[ -n "$FAKE_ID" ] && return 0
	done
	why "fake client got no Connection frame"
	return 1
}

# The fake client's data connection on fd 4: Accept of FAKE_ID and, in the same write, $1.
fake_accept() {
	exec 4<>"/dev/tcp/127.0.0.1/$CTL" || { why "fake client's data connection failed"; return 1; }
	printf '{"Accept":"%s"}\0%s' "$FAKE_ID" "$1" >&4
}

# A decimal number of seconds within [lo, hi].
between() { awk -v x="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(x >= lo && x <= hi) }'; }

# Run case $1 (function t_$1) unless names were given and it is not among them.
run() {
	local name=$1
	if [ ${#SELECTED[@]} -gt 0 ] && [[ " ${SELECTED[*]} " != *" $name "* ]]; then
		return
	fi
	: >"$WORK/why"
	"t_$name"
	local rc=$?
	stop_all
	del_netns
	# A fake client's connections (fds 3 and 4) and a holder's fifo (fd 5) end with the case.
	exec 3>&- 4>&- 5>&-
	if [ $rc = 2 ]; then
		skipped=$((skipped + 1))
		echo "skip $name"
		sed 's/^ *//; s/^/    /' "$WORK/why"
		return
	fi
	# Any sanitizer report in any log fails the case.
	if grep -lE "ERROR: (Address|Leak)Sanitizer|runtime error:|WARNING: ThreadSanitizer" \
		"$WORK"/*.log >"$WORK/sanitizer" 2>/dev/null; then
		why "sanitizer report in: $(tr '\n' ' ' <"$WORK/sanitizer")"
		rc=1
	fi
	if [ $rc = 0 ]; then
		passed=$((passed + 1))
		echo "ok   $name"
	else
		failed=$((failed + 1))
		echo "FAIL $name"
		cat "$WORK/why"
		for f in "$WORK"/*.log; do
			[ -e "$f" ] || continue
			echo "    --- $(basename "$f") (last lines)"
			tail -n 5 "$f" | sed 's/^/    /'
		done
	fi
	rm -f "$WORK"/*.log
}

# ---- 1-4: the data path ------------------------------------------------

t_roundtrip_64mib() {
	start_tunnel || return 1
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" $((64 << 20))) || { why "$out"; return 1; }
	[[ $out == "ok 67108864 "* ]]
}

t_concurrent_200() {
	start_tunnel || return 1
	out=$("$TCPKIT" many 127.0.0.1 "$PUB" 200 65536) || { why "$out"; return 1; }
	[ "$out" = "ok 200" ]
}

t_half_close() {
	start_origin origin reply 1048576 && start_server server && start_client client "$ORIGIN" || return 1
	out=$("$TCPKIT" halfclose 127.0.0.1 "$PUB" 1048576) || { why "$out"; return 1; }
	[ "$out" = "ok 1048576" ]
}

# A fast back-and-forth makes the relays spin before they sleep; once the
# connection goes quiet they must sleep again, and every echo stays intact.
t_fast_exchange_then_idle() {
	local c0 c1 hz
	start_tunnel || return 1
	start chat "$TCPKIT" chat 127.0.0.1 "$PUB" 2000 2
	wait_until 20 grep -q "^idle" "$WORK/chat.log" || { why "$(cat "$WORK/chat.log")"; return 1; }
	# One second of the idle pause: sleeping relays cost next to no CPU.
	hz=$(getconf CLK_TCK)
	c0=$(($(cpu_ticks "$SRV") + $(cpu_ticks "$CLI")))
	sleep 1
	c1=$(($(cpu_ticks "$SRV") + $(cpu_ticks "$CLI")))
	[ $((c1 - c0)) -le $((hz / 20)) ] ||
		{ why "server and client used $((c1 - c0)) ticks (of $hz/s) while idle"; return 1; }
	wait_until 30 grep -q "^ok 4000$" "$WORK/chat.log" || { why "$(cat "$WORK/chat.log")"; return 1; }
}

t_server_speaks_first() {
	start_origin origin banner "SSH-2.0-bore_test" && start_server server &&
		start_client client "$ORIGIN" || return 1
	out=$("$TCPKIT" banner 127.0.0.1 "$PUB" "SSH-2.0-bore_test") || { why "$out"; return 1; }
	[ "$out" = "ok" ]
}

# Bytes written right behind Accept's NUL, in the same write, reach the visitor first.
t_bytes_after_accept() {
	start_server server && fake_hello || return 1
	start visitor "$TCPKIT" banner 127.0.0.1 "$FAKE_PUB" "SSH-2.0-early"
	local visitor=$LAST
	fake_connection_id && fake_accept $'SSH-2.0-early\r\n' || return 1
	wait_exit "$visitor" 5 || { why "visitor still waiting"; return 1; }
	[ "$RC" = 0 ] && log_has visitor ok
}

# A local service that refuses: the visitor is closed at once, not after a timeout.
t_local_refused() {
	local dead
	dead=$(free_port) || return 1
	start_server server && start_client client "$dead" || return 1
	t=$("$TCPKIT" waitclose 127.0.0.1 "$PUB") || { why "$t"; return 1; }
	between "$t" 0 2 || { why "visitor closed after $t s"; return 1; }
	alive "$CLI" && log_has client "could not connect to 127.0.0.1:$dead"
}

# ---- 5: secrets ----------------------------------------------------------

t_secret_right() {
	start_origin origin echo && start_server server -s "hunter2" &&
		start_client client "$ORIGIN" -s "hunter2" || return 1
	out=$("$TCPKIT" many 127.0.0.1 "$PUB" 20 100000) || { why "$out"; return 1; }
	[ "$out" = "ok 20" ]
}

t_secret_wrong() {
	start_server server -s "hunter2" || return 1
	start client "$BORE" local 9 --to 127.0.0.1 --control-port "$CTL" -s "hunter3"
	wait_exit "$LAST" 5 || { why "client did not exit"; return 1; }
	[ "$RC" = 78 ] || { why "exit status $RC"; return 1; }
	log_has client "invalid secret" && log_has server "invalid secret"
}

t_secret_server_only() {
	start_server server -s "hunter2" || return 1
	start client "$BORE" local 9 --to 127.0.0.1 --control-port "$CTL"
	wait_exit "$LAST" 5 || { why "client did not exit"; return 1; }
	[ "$RC" = 78 ] || { why "exit status $RC"; return 1; }
	log_has client "server requires authentication, but no client secret was provided"
}

t_secret_client_only() {
	start_server server || return 1
	start client "$BORE" local 9 --to 127.0.0.1 --control-port "$CTL" -s "hunter2"
	wait_exit "$LAST" 8 || { why "client did not exit"; return 1; }
	[ "$RC" = 1 ] || { why "exit status $RC"; return 1; }
	log_has client "timed out waiting for authentication challenge (a server without a secret sends none)"
}

# ---- 6-7: unit tests of the auth and protocol code -----------------------

# Run one group of tests/unit; show its failures.
unit_group() {
	local out
	out=$("$UNIT" "$@")
	local rc=$?
	grep '^FAIL' <<<"$out" | sed 's/^/    /' >>"$WORK/why"
	why "$(tail -n 1 <<<"$out")"
	[ $rc = 0 ]
}
t_hmac_vectors() { unit_group hmac; }
t_frame_parser() { unit_group uuid parse format frames cli; }
t_liveness_options() { unit_group liveness; }

# ---- 8: the server refuses a port ----------------------------------------

t_port_out_of_range() {
	start_server server || return 1
	start client "$BORE" local 9 --to 127.0.0.1 --control-port "$CTL" --port $((TUN_MAX + 1))
	wait_exit "$LAST" 5 || return 1
	[ "$RC" = 78 ] && log_has client "client port number not in allowed range"
}

t_port_in_use() {
	start_server server || return 1
	start_client first 9 --port "$TUN_MIN" || return 1
	start second "$BORE" local 9 --to 127.0.0.1 --control-port "$CTL" --port "$TUN_MIN"
	wait_exit "$LAST" 5 || return 1
	[ "$RC" = 1 ] && log_has second "port already in use" && alive "$CLI"
}

# ---- 9: timeouts and bad frames -------------------------------------------

# A fake client says Hello and never claims its visitor: the server closes it after 10 s.
t_unclaimed_visitor() {
	local t
	start_server server && fake_hello || return 1
	# Keep reading heartbeats so the control connection stays healthy.
	cat <&3 >/dev/null &
	PIDS+=($!)
	t=$("$TCPKIT" waitclose 127.0.0.1 "$FAKE_PUB") || return 1
	between "$t" 9.5 11.5 || { why "visitor closed after $t s"; return 1; }
	log_has server "removed stale connection"
}

t_silent_connection_dropped() {
	start_server server || return 1
	t=$("$TCPKIT" waitclose 127.0.0.1 "$CTL") || return 1
	between "$t" 2.8 4 || { why "dropped after $t s"; return 1; }
	log_has server "timed out waiting for initial message"
}

# Oversize and garbage frames close only their own connection; the tunnel keeps working.
t_bad_frames_isolated() {
	start_tunnel || return 1
	head -c 300 /dev/zero | tr '\0' 'x' | "$TCPKIT" raw 127.0.0.1 "$CTL" 2000 >/dev/null ||
		{ why "oversize frame not closed"; return 1; }
	printf 'garbage\0' | "$TCPKIT" raw 127.0.0.1 "$CTL" 2000 >/dev/null ||
		{ why "garbage frame not closed"; return 1; }
	printf '{"Hello":65536}\0' | "$TCPKIT" raw 127.0.0.1 "$CTL" 2000 >/dev/null ||
		{ why "out-of-range Hello not closed"; return 1; }
	printf '{"Accept":"2d22dad6-dbff-4ee8-a34f-44bc515b4142"}\0' |
		"$TCPKIT" raw 127.0.0.1 "$CTL" 2000 >/dev/null || { why "unknown Accept not closed"; return 1; }
	printf '{"Authenticate":"00"}\0' | "$TCPKIT" raw 127.0.0.1 "$CTL" 2000 >/dev/null ||
		{ why "Authenticate without a secret not closed"; return 1; }
	log_has server "frame error, invalid byte length" && log_has server "unable to parse message" &&
		log_has server "missing connection" && log_has server "unexpected authenticate" || return 1
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 1000000) || { why "$out"; return 1; }
	alive "$SRV" && alive "$CLI"
}

# After traffic, refused and bad connections, both ends are back to their fds and threads.
t_no_leaks() {
	local dead srv_base cli_base
	start_tunnel || return 1
	srv_base=$(fds_threads "$SRV")
	cli_base=$(fds_threads "$CLI")
	out=$("$TCPKIT" many 127.0.0.1 "$PUB" 100 20000) || { why "$out"; return 1; }
	printf 'garbage\0' | "$TCPKIT" raw 127.0.0.1 "$CTL" 2000 >/dev/null
	head -c 1000 /dev/zero | "$TCPKIT" raw 127.0.0.1 "$CTL" 2000 >/dev/null
	"$TCPKIT" waitclose 127.0.0.1 "$CTL" >/dev/null
	wait_until 5 fds_threads_are "$SRV" "$srv_base" ||
		{ why "server fds/threads $srv_base -> $(fds_threads "$SRV")"; return 1; }
	wait_until 5 fds_threads_are "$CLI" "$cli_base" ||
		{ why "client fds/threads $cli_base -> $(fds_threads "$CLI")"; return 1; }
	# A second tunnel that comes and goes leaves nothing behind either.
	dead=$CLI
	start_client client2 "$ORIGIN" || return 1
	{ kill -9 "$CLI"; wait "$CLI"; } 2>/dev/null
	wait_until 5 fds_threads_are "$SRV" "$srv_base" ||
		{ why "server fds/threads after a client died: $srv_base -> $(fds_threads "$SRV")"; return 1; }
	alive "$dead"
}

# The server's first words on a control connection, exactly as bore 0.5 says them.
t_wire_bytes() {
	local frame
	start_server server || return 1
	exec 3<>"/dev/tcp/127.0.0.1/$CTL" || return 1
	printf '{ "Hello" : %d }\0' "$TUN_MIN" >&3
	IFS= read -r -d '' -t 5 frame <&3
	[ "$frame" = "{\"Hello\":$TUN_MIN}" ] || { why "got '$frame'"; exec 3>&-; return 1; }
	IFS= read -r -d '' -t 5 frame <&3
	exec 3>&-
	[ "$frame" = '"Heartbeat"' ] || { why "got '$frame'"; return 1; }
	stop_all
	start_server server -s hunter2 || return 1
	exec 3<>"/dev/tcp/127.0.0.1/$CTL" || return 1
	IFS= read -r -d '' -t 5 frame <&3
	[[ $frame =~ ^\{\"Challenge\":\"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\"\}$ ]] ||
		{ why "got '$frame'"; exec 3>&-; return 1; }
	printf '{"Authenticate":"%064d"}\0' 0 >&3
	IFS= read -r -d '' -t 5 frame <&3
	exec 3>&-
	[ "$frame" = '{"Error":"invalid secret"}' ] || { why "got '$frame'"; return 1; }
}

# ---- 10: the server or the client dies ------------------------------------

t_server_killed() {
	start_origin origin echo && start_server server &&
		start_client client "$ORIGIN" --no-reconnect || return 1
	{ kill -9 "$SRV"; wait "$SRV"; } 2>/dev/null
	wait_exit "$CLI" 5 || { why "client still running"; return 1; }
	[ "$RC" = 1 ] || { why "exit status $RC"; return 1; }
	log_has client "server closed the connection"
}

t_fixed_port_reuse() {
	start_tunnel || return 1
	stop_client() { kill -9 "$CLI"; wait "$CLI" 2>/dev/null; }
	stop_client
	start_client client2 "$ORIGIN" --port "$PUB" || { why "restart on port $PUB failed"; return 1; }
	local first=$PUB
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 100000) || { why "$out"; return 1; }
	# Also after a visitor was mid-stream when the client died.
	local second=$TUN_MIN
	[ "$first" = "$TUN_MIN" ] && second=$TUN_MAX
	start_client client3 "$ORIGIN" --port "$second" || return 1
	start visitor "$TCPKIT" roundtrip 127.0.0.1 "$PUB" $((256 << 20))
	sleep 0.2
	kill -9 "$CLI"
	wait "$CLI" 2>/dev/null
	start_client client4 "$ORIGIN" --port "$second" ||
		{ why "restart with a live visitor failed"; return 1; }
	[ "$PUB" = "$second" ]
}

t_sigterm_exits_0() {
	start_tunnel || return 1
	kill -TERM "$CLI"
	wait_exit "$CLI" 5 && [ "$RC" = 0 ] || { why "client: ${RC:-still running}"; return 1; }
	kill -INT "$SRV"
	wait_exit "$SRV" 5 && [ "$RC" = 0 ] || { why "server: ${RC:-still running}"; return 1; }
}

# ---- 11: the command line --------------------------------------------------

# Expect exit status $1 and output matching $2 from bore run with the remaining
# arguments; leading NAME=VALUE arguments go to its environment.
expect_cli() {
	local want=$1 pattern=$2 out rc envs=()
	shift 2
	while [ $# -gt 0 ] && [[ $1 == [A-Z]*=* ]]; do
		envs+=("$1")
		shift
	done
	out=$(env "${envs[@]}" timeout 5 "$BORE" "$@" 2>&1)
	rc=$?
	[ "$rc" = "$want" ] || { why "bore $*: exit $rc, wanted $want"; return 1; }
	grep -qE -- "$pattern" <<<"$out" || { why "bore $*: output lacks /$pattern/"; return 1; }
}

t_cli_help_version() {
	expect_cli 0 '^Usage: bore <COMMAND>' --help &&
		expect_cli 0 '^Usage: bore <COMMAND>' -h &&
		expect_cli 0 '^bore [0-9]+\.[0-9]+\.[0-9]+ \(wire protocol of bore 0\.5/0\.6\)$' --version &&
		expect_cli 0 '^bore [0-9]' -V &&
		expect_cli 0 'Usage: bore local' local --help &&
		expect_cli 0 'Usage: bore server' server -h &&
		expect_cli 0 '--control-port' server --help
}

t_cli_bad_usage() {
	expect_cli 2 "^bore: a subcommand is required" &&
		expect_cli 2 "^bore: unrecognized subcommand 'serve'" serve &&
		expect_cli 2 "^bore: unexpected argument '--frobnicate'" server --frobnicate &&
		expect_cli 2 "^bore: unexpected argument '--prewarm'" local 80 --to 127.0.0.1 --prewarm 2 &&
		expect_cli 2 "^bore: a value is required for '--to'" local 80 --to &&
		expect_cli 2 "^bore: a value is required for '--min-port'" server --min-port &&
		expect_cli 2 "^bore: the following required argument was not provided: --to" local 80 &&
		expect_cli 2 "^bore: the following required argument was not provided: <LOCAL_PORT>" \
			local --to 127.0.0.1 &&
		expect_cli 2 "^bore: invalid value '0' for '<LOCAL_PORT>'" local 0 --to 127.0.0.1 &&
		expect_cli 2 "^bore: invalid value '65536' for '--port'" local 80 --to 127.0.0.1 -p 65536 &&
		expect_cli 2 "^bore: invalid value 'http' for '<LOCAL_PORT>'" local http --to 127.0.0.1 &&
		expect_cli 2 "^bore: invalid value '-5' for '--min-port'" server --min-port=-5 &&
		expect_cli 2 "^bore: invalid value '0' for '--control-port'" server --control-port 0 &&
		expect_cli 2 "^bore: invalid value '1e3' for '--max-port'" server --max-port 1e3 &&
		expect_cli 2 "^bore: port range is empty" server --min-port 3000 --max-port 2000 &&
		expect_cli 2 "^bore: invalid value 'localhost' for '--bind-addr'" server --bind-addr localhost &&
		expect_cli 2 "^bore: invalid value 'extra' for '<LOCAL_PORT>'" local 80 extra --to 127.0.0.1 &&
		expect_cli 2 "invalid value 'loud' for BORE_LOG" BORE_LOG=loud server &&
		expect_cli 2 "^bore: invalid value 'x' for '--min-port'" BORE_MIN_PORT=x server &&
		expect_cli 2 "^bore: invalid value '70000' for '<LOCAL_PORT>'" BORE_LOCAL_PORT=70000 \
			local --to 127.0.0.1
}

# --opt=value, short options and the environment all reach the same settings.
t_cli_env_and_forms() {
	start_origin origin echo || return 1
	CTL=$(free_port) || return 1
	local port=$((20000 + (RANDOM % 60) * 200))
	start server env BORE_MIN_PORT="$port" BORE_MAX_PORT="$port" BORE_CONTROL_PORT="$CTL" \
		BORE_SECRET=envsecret "$BORE" server --bind-addr=127.0.0.1
	SRV=$LAST
	wait_until 5 grep -q "server listening" "$WORK/server.log" || return 1
	start client env BORE_SERVER=127.0.0.1 BORE_LOCAL_PORT="$ORIGIN" BORE_CONTROL_PORT="$CTL" \
		BORE_SECRET=envsecret "$BORE" local -l127.0.0.1
	wait_until 5 grep -q "listening at" "$WORK/client.log" || return 1
	[ "$(public_port client)" = "$port" ] || { why "env range not honoured"; return 1; }
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$port" 100000) || { why "$out"; return 1; }
	stop_all
	# A flag beats its variable.
	start_origin origin echo && start_server server -s flagsecret || return 1
	start client env BORE_SECRET=wrong BORE_SERVER=127.0.0.2 "$BORE" local "$ORIGIN" \
		--local-host=127.0.0.1 --to=127.0.0.1 --control-port="$CTL" --secret=flagsecret --port="$TUN_MAX"
	wait_until 5 grep -q "listening at" "$WORK/client.log" || return 1
	[ "$(public_port client)" = "$TUN_MAX" ]
}

. tests/features.sh

. tests/hardening.sh

. tests/operators.sh

. tests/tunnels_status.sh

. tests/rotation_proxy.sh

. tests/trust_client.sh
. tests/proxy.sh
. tests/trust.sh
. tests/eco.sh
. tests/pool.sh
. tests/metrics.sh
. tests/many.sh
. tests/windows.sh
SELECTED=("$@")

# Every case, in order; those that drive ./bore run again under the sanitizer pass.
CASES=(
	roundtrip_64mib concurrent_200 half_close fast_exchange_then_idle server_speaks_first \
	bytes_after_accept local_refused secret_right secret_wrong secret_server_only \
	secret_client_only hmac_vectors frame_parser port_out_of_range port_in_use \
	unclaimed_visitor silent_connection_dropped bad_frames_isolated wire_bytes no_leaks \
	server_killed fixed_port_reuse sigterm_exits_0 cli_help_version cli_bad_usage \
	cli_env_and_forms reconnect_after_restart reconnect_fatal_not_retried heartbeat_timeout \
	ipv6 allow_visitors allow_control allow_bad_usage graceful_shutdown \
	graceful_shutdown_grace_ends dump port_fallback reresolve_on_reconnect link_cut_frees_port \
	malformed_control slow_and_silent storms burst_memory_returns control_flood_few_fds visitor_burst_few_fds \
	preauth_flood hello_race halfclose_then_reset handshake_error_frames client_max_conns \
	startup_checks max_sessions max_conns client_killed_mid_transfer \
	service_killed_mid_transfer secret_files liveness_options thread_failure valgrind_short_session \
	deps_install_decisions demo_clean stdout_address journal_priorities retries_are_warnings \
	log_off_and_trace connection_closed_lines server_startup_line sighup_local cli_short_equals \
	cli_help_command cli_repeated_options cli_to_with_port text_counts_and_ports man_page \
	install_targets bash_completion
)
CASES+=(tunnels_two_ports tunnels_remote_ports tunnels_one_refused tunnels_server_restart tunnels_sigterm status_lines status_log_off)
CASES+=(proxy_protocol proxy_header_bytes secret_rotation secret_reload reload_during_handshakes)
CASES+=(closed_stdio secret_file_strict hostile_server_text no_challenge_words stop_mid_frame tunnels_few_fds redial_backs_off)
CASES+=(proxy_http_tunnel proxy_http_auth proxy_socks5_tunnel proxy_socks5_auth proxy_server_restart proxy_restart proxy_failures proxy_fails_visitors proxy_usage proxy_raw_text proxy_stop_silent proxy_http_lenient proxy_refusal_later)
CASES+=(log_flood_counted many_address_flood secret_revoked_closes visitors_kept_in_churn visitors_kept_in_flood startup_counts)
CASES+=(hardened_build make_test_target systemd_units json_logs status_live_bytes local_drain readme_newcomer code_shape)
CASES+=(startup_burst trust_boundary_size)
CASES+=(pool_serves_visitors pool_tokens_refused pool_fallback)
CASES+=(metrics_values metrics_under_load metrics_prometheus metrics_bad_requests metrics_many_scrapes metrics_usage metrics_few_fds)
CASES+=(ports_per_secret ports_reload ports_bad_lists visitor_rate_per_source visitor_rate_tunnels visitor_rate_bounded visitor_rate_unit visitor_rate_usage client_quiet_at_error)
CASES+=(windows_cli windows_ctrl_c windows_localhost windows_secret_file)
# Not run again under the sanitizer passes: unit tests, cases that need a plain
# build (an address-space limit, valgrind), and slow ones that add no new code path.
ONCE_CASES=" hmac_vectors frame_parser liveness_options thread_failure valgrind_short_session "
ONCE_CASES+="link_cut_frees_port reresolve_on_reconnect startup_checks "
ONCE_CASES+="deps_install_decisions demo_clean man_page install_targets bash_completion "
ONCE_CASES+="proxy_header_bytes unclaimed_visitor "
ONCE_CASES+="proxy_usage "
ONCE_CASES+="metrics_prometheus metrics_usage metrics_few_fds "
ONCE_CASES+="windows_cli windows_ctrl_c windows_localhost windows_secret_file "
ONCE_CASES+="startup_counts trust_boundary_size "
# Unit and usage checks; and a server's RSS, which a sanitizer's own heap would blur.
ONCE_CASES+="visitor_rate_unit visitor_rate_usage ports_bad_lists visitor_rate_bounded "
ONCE_CASES+="hardened_build make_test_target systemd_units readme_newcomer code_shape "
# Slow ones whose paths the plain pass and the TSan pass already take.
ONCE_CASES+="slow_and_silent log_flood_counted visitors_kept_in_churn proxy_server_restart "
ONCE_CASES+="proxy_restart proxy_failures "
# 2,000 visitors at once take 30 s under ASan; visitor_burst_few_fds and concurrent_200 take the path there.
ONCE_CASES+="storms "
# Run again under ThreadSanitizer: the cases where threads meet.
TSAN_CASES=(
	concurrent_200 hello_race visitor_burst_few_fds preauth_flood halfclose_then_reset \
	client_max_conns max_conns client_killed_mid_transfer graceful_shutdown port_fallback
)
TSAN_CASES+=(tunnels_two_ports tunnels_sigterm status_lines)
TSAN_CASES+=(reload_during_handshakes)
TSAN_CASES+=(stop_mid_frame tunnels_few_fds)
TSAN_CASES+=(proxy_http_tunnel proxy_fails_visitors)
TSAN_CASES+=(log_flood_counted many_address_flood secret_revoked_closes visitors_kept_in_churn)
TSAN_CASES+=(status_live_bytes local_drain startup_burst)
TSAN_CASES+=(pool_serves_visitors pool_tokens_refused)
TSAN_CASES+=(metrics_values metrics_under_load)
TSAN_CASES+=(visitor_rate_tunnels visitor_rate_per_source ports_reload)

# The whole suite (not a nested or selected run): beside the cases, the slow ones that
# mostly wait (a link's liveness, a parked visitor's 10 s, log windows) in a nested run, and the fuzzer,
# niced onto the CPU the cases leave; their results are counted at the end.
ASIDE_CASES=" link_cut_frees_port unclaimed_visitor slow_and_silent client_max_conns proxy_fails_visitors "
WHOLE=
if [ -z "${BORE_NESTED:-}" ] && [ ${#SELECTED[@]} -eq 0 ] && [ "$BORE" = ./bore ]; then
	WHOLE=1
	# shellcheck disable=SC2086
	BORE_NESTED=1 ./test.sh $ASIDE_CASES >"$WORK/aside.out" 2>&1 &
	ASIDE=$!
	if [ "${FUZZ:-1}" != 0 ] && command -v "${FUZZ_CC:-clang}" >/dev/null 2>&1; then
		# A group of its own, to stop whole; its status in a file, as bash forgets old jobs'.
		setsid sh -c 'nice -n 10 make -s fuzz FUZZ_SECONDS="$1" >"$2/fuzz.out" 2>&1
			echo $? >"$2/fuzz.rc"' sh "${FUZZ_SECONDS:-20}" "$WORK" &
		FUZZING=$!
	fi
	trap 'kill -TERM "$ASIDE" 2>/dev/null; [ -n "${FUZZING:-}" ] && kill -TERM -- "-$FUZZING" 2>/dev/null
		stop_all; wait; del_netns; rm -rf "$WORK"' EXIT
fi

for name in "${CASES[@]}"; do
	[ -n "$WHOLE" ] && [[ $ASIDE_CASES == *" $name "* ]] && continue
	run "$name"
done

# ---- The end-to-end cases again under the sanitizers, and the fuzzer --------

# Run cases $4... against build $3 (made by `make $2`), counting each as its
# own case named $1:NAME.
sanitizer_pass() {
	local label=$1 target=$2 binary=$3
	shift 3
	if ! make -s "$target"; then
		echo "FAIL $label:build"
		failed=$((failed + 1))
		return
	fi
	tally "$label:" < <(BORE=$binary BORE_NESTED=1 ./test.sh "$@" 2>&1)
}

# Count a nested run's cases, read on stdin, as this run's, each named with prefix $1.
tally() {
	local line seen=0
	while IFS= read -r line; do
		case $line in
		"ok   "*) passed=$((passed + 1)); echo "ok   $1${line#ok   }" ;;
		"FAIL "*) failed=$((failed + 1)); echo "FAIL $1${line#FAIL }" ;;
		"skip "*) skipped=$((skipped + 1)); echo "skip $1${line#skip }" ;;
		*" passed, "*" failed"*) seen=1 ;;
		*) echo "$line" ;;
		esac
	done
	if [ $seen = 0 ]; then
		echo "FAIL ${1:-aside}: the nested run ended without its summary"
		failed=$((failed + 1))
	fi
}

# The end-to-end cases again under ASan+UBSan; the threaded ones under TSan.
sanitizer_passes() {
	local name cases=()
	for name in "${CASES[@]}"; do
		[[ $ONCE_CASES == *" $name "* ]] || cases+=("$name")
	done
	echo "-- the end-to-end cases again, under AddressSanitizer and UndefinedBehaviorSanitizer"
	sanitizer_pass asan asan ./bore-asan "${cases[@]}"
	echo "-- the cases where threads meet, under ThreadSanitizer"
	sanitizer_pass tsan tsan ./bore-tsan "${TSAN_CASES[@]}"
}

# The fuzzer's run of the codec, frame reader and handshakes for FUZZ_SECONDS, started
# beside the cases (it needs clang's libFuzzer): its result.
fuzz_pass() {
	local out
	if [ -z "${FUZZING:-}" ]; then
		echo "skip fuzz (no clang)"
		skipped=$((skipped + 1))
		return
	fi
	wait "$FUZZING" 2>/dev/null
	if [ "$(cat "$WORK/fuzz.rc" 2>/dev/null)" = 0 ]; then
		passed=$((passed + 1))
		echo "ok   fuzz ($(grep -o 'stat::number_of_executed_units: *[0-9]*' "$WORK/fuzz.out" |
			grep -o '[0-9]*$') executions)"
	else
		failed=$((failed + 1))
		echo "FAIL fuzz"
		tail -n 30 "$WORK/fuzz.out" | sed 's/^/    /'
	fi
}

if [ -n "$WHOLE" ]; then
	[ "${SANITIZE:-1}" != 0 ] && sanitizer_passes
	wait "$ASIDE"
	tally "" <"$WORK/aside.out"
	[ "${FUZZ:-1}" != 0 ] && fuzz_pass
fi

# Skips on a line of their own: the last line is always "N passed, N failed".
[ "$skipped" -gt 0 ] && echo "$skipped skipped"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
