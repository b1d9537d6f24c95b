#!/usr/bin/env bash
# Loopback benchmark of bore: throughput, 64-byte round trips, connection churn,
# memory with 1,000 live connections and around bursts, idle memory, binary size, and the
# first byte a visitor sees when bore local reaches its server across a long link. Every traffic
# figure is measured straight to the origin service ("direct"), through
# `bore server` + `bore local` ("bore") and, when socat is installed, through a
# plain socat relay ("socat"), and reported as the median of several runs.
#
# Usage: tests/bench.sh            (or: make bench)
# Knobs: BENCH_RUNS     runs per figure (default 3)
#        BENCH_SECONDS  seconds per throughput and churn run (default 3)
#        BENCH_PINGS    round trips per run of the 64-byte test (default 50000)
#        BENCH_LINK_MS  round trip of the long link, an even number of ms (default 40)
#        BENCH_ONLY=link  only the long-link figures (=proxy: only the behind-a-proxy ones)
#        BORE           the binary to measure (default ./bore)
#        BENCH_NO_IPERF=1, BENCH_NO_SOCAT=1  act as if iperf3 / socat were missing
#        BENCH_VERBOSE=1  print every run's figure on stderr
# Only loopback addresses are used. Nothing is asserted: the script exits 0 once it
# could run at all, and says what it could not measure and why.
# Measurement functions are called through variables, and table formats live in variables:
# shellcheck disable=SC2317,SC2059
set -u
cd "$(dirname "$0")/.." || exit 1

BORE=${BORE:-./bore}
TCPKIT=./tests/tcpkit
RUNS=${BENCH_RUNS:-3}
SECS=${BENCH_SECONDS:-3}
PINGS=${BENCH_PINGS:-50000}
LINK_MS=${BENCH_LINK_MS:-40}
ONLY=${BENCH_ONLY:-}
HOLD_CONNS=1000

cannot_run() {
	echo "bench: cannot run: $*" >&2
	exit 1
}

for knob in BENCH_RUNS=$RUNS BENCH_SECONDS=$SECS BENCH_PINGS=$PINGS BENCH_LINK_MS=$LINK_MS; do
	[[ ${knob#*=} =~ ^[1-9][0-9]*$ ]] || cannot_run "${knob%%=*} must be a positive integer"
done
[ "$SECS" -le 60 ] || cannot_run "BENCH_SECONDS above 60 would not finish in reasonable time"
# The relay delays each way by half the round trip, in whole ms.
if [ $((LINK_MS % 2)) != 0 ] || [ "$LINK_MS" -gt 2000 ]; then
	cannot_run "BENCH_LINK_MS must be even and at most 2000"
fi
[ -z "$ONLY" ] || [ "$ONLY" = link ] || [ "$ONLY" = proxy ] ||
	cannot_run "BENCH_ONLY must be empty, 'link' or 'proxy'"

# Build what is missing (make bench has already built both).
if [ ! -x "$TCPKIT" ] || { [ "$BORE" = ./bore ] && [ ! -x ./bore ]; }; then
	make -s bore tests/tcpkit >&2 || cannot_run "build failed"
fi
[ -x "$BORE" ] || cannot_run "no executable bore at '$BORE'"
[ -x "$TCPKIT" ] || cannot_run "no executable $TCPKIT"
[ -r /proc/self/status ] || cannot_run "/proc is not mounted (memory figures need it)"

# 1,000 tunneled connections take about 4,000 descriptors across the processes.
ulimit -n "$(ulimit -Hn)" 2>/dev/null

# Logs stay small, and nothing from the caller's environment changes what is measured.
export BORE_LOG=warn
unset BORE_SECRET BORE_MAX_SESSIONS BORE_MAX_CONNS BORE_MIN_PORT BORE_MAX_PORT
export TCPKIT_TIMEOUT=60

HAVE_IPERF=0
HAVE_SOCAT=0
[ "${BENCH_NO_IPERF:-0}" != 1 ] && command -v iperf3 >/dev/null 2>&1 && HAVE_IPERF=1
[ "${BENCH_NO_SOCAT:-0}" != 1 ] && command -v socat >/dev/null 2>&1 && HAVE_SOCAT=1

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bore-bench.XXXXXX") || cannot_run "mktemp failed"
PIDS=()
NOTES=()
LOG_NOTES=()
HOLD_FD_OPEN=0
WATCH=""
WHY=""
BORE_PROCS=() # name=pid of every bore process that came up

. tests/lib.sh

gone() { ! alive "$1"; }

# Send signal $1 to process $2 if it is ours, and first to its own children (socat
# forks one per connection; they would outlive a parent killed before them).
signal_tree() {
	alive "$2" || return 0
	pkill "-$1" -P "$2" 2>/dev/null
	kill "-$1" "$2" 2>/dev/null
}

# Stop exactly the processes this script started: SIGTERM, then SIGKILL.
stop_all() {
	local p
	if [ "$HOLD_FD_OPEN" = 1 ]; then
		exec 7>&-
		HOLD_FD_OPEN=0
	fi
	for p in "${PIDS[@]}"; do
		signal_tree TERM "$p"
	done
	wait_until 3 none_alive
	for p in "${PIDS[@]}"; do
		signal_tree KILL "$p"
		wait "$p" 2>/dev/null
	done
	PIDS=()
}

# Stop one process this script started and forget it.
stop_one() {
	local pid=$1 p keep=()
	signal_tree TERM "$pid"
	wait_until 3 gone "$pid"
	signal_tree KILL "$pid"
	wait "$pid" 2>/dev/null
	for p in "${PIDS[@]}"; do
		[ "$p" = "$pid" ] || keep+=("$p")
	done
	PIDS=("${keep[@]}")
}

trap 'stop_all; rm -rf "$WORK"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Start "$@" in the background with output in $WORK/$1.log; its pid in LAST.
start() {
	local name=$1
	shift
	"$@" >"$WORK/$name.log" 2>&1 </dev/null &
	LAST=$!
	PIDS+=("$LAST")
}

# True when something listens on TCP port $1 (read from /proc, no connection made).
listening() {
	local hex
	hex=$(printf ':%04X' "$1")
	awk -v p="$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }' \
		/proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# True when pid $1 is alive and port $2 is listening.
up() { alive "$1" && listening "$2"; }

# Record a line for the "not measured" list.
note() { NOTES+=("$*"); }

# First line of a log, for saying why something failed.
first_line() { head -n 1 "$WORK/$1.log" 2>/dev/null | cut -c 1-160; }

# Wait up to $1 seconds until "${@:2}" holds, giving up as soon as process $WATCH exits.
holds_or_gone() { "$@" || ! alive "$WATCH"; }
await() {
	local secs=$1
	shift
	wait_until "$secs" holds_or_gone "$@"
	"$@"
}

# Set WHY to why process $2 (logging to $WORK/$1.log) is not ready.
explain() {
	local line rc
	line=$(first_line "$1")
	if alive "$2"; then
		WHY="not ready after 5 s${line:+: $line}"
	else
		wait "$2" 2>/dev/null
		rc=$?
		WHY="exited with status $rc${line:+: $line}"
	fi
}

# A tcpkit listener, tcpkit "${@:2}", on the kernel-chosen port it prints: sets ORIGIN.
start_tcpkit() {
	local name=$1
	shift
	start "$name" "$TCPKIT" "$@"
	WATCH=$LAST
	if await 5 test -s "$WORK/$name.log"; then
		ORIGIN=$(head -n 1 "$WORK/$name.log")
		[[ $ORIGIN =~ ^[0-9]+$ ]] && await 5 up "$WATCH" "$ORIGIN" && return 0
	fi
	explain "$name" "$WATCH"
	return 1
}

# A tcpkit service on a kernel-chosen port: sets ORIGIN.
start_origin() { start_tcpkit "$1" serve "${@:2}"; }

# A bore server on loopback with its own control port and tunnel range, named $1
# (default server) and given the options after it: sets CTL, SRV.
# A control port taken between the pick and the bind gets another try.
start_server() {
	local name=${1:-server} _ lo
	[ $# -gt 0 ] && shift
	for _ in 1 2 3; do
		CTL=$("$TCPKIT" freeport 10000 19999) || { WHY="no free control port"; return 1; }
		lo=$((20000 + (RANDOM % 55) * 200))
		start "$name" "$BORE" server --bind-addr 127.0.0.1 --control-port "$CTL" \
			--min-port "$lo" --max-port $((lo + 199)) "$@"
		SRV=$LAST
		WATCH=$SRV
		if await 5 up "$SRV" "$CTL"; then
			BORE_PROCS+=("$name=$SRV")
			return 0
		fi
		explain "$name" "$SRV"
		stop_one "$SRV"
	done
	return 1
}

# A bore client exposing local port $2 through the server on control port $CTL, or
# with the options after it instead: sets CLI, PUB.
start_client() {
	local name=$1 port=$2
	shift 2
	[ $# -gt 0 ] || set -- --control-port "$CTL"
	start "$name" "$BORE" local "$port" --local-host 127.0.0.1 --to 127.0.0.1 "$@"
	CLI=$LAST
	WATCH=$CLI
	# BORE_LOG=warn hides the "listening at" line: the address line on stdout says it.
	if await 5 grep -q "^127\.0\.0\.1:[0-9]* " "$WORK/$name.log"; then
		PUB=$(sed -n 's/^127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$WORK/$name.log" | head -n 1)
		if [ -n "$PUB" ] && alive "$CLI"; then
			BORE_PROCS+=("$name=$CLI")
			return 0
		fi
	fi
	explain "$name" "$CLI"
	return 1
}

# A socat relay in front of port $2: sets RELAY.
start_socat() {
	local name=$1 port=$2 _
	for _ in 1 2 3; do
		RELAY=$("$TCPKIT" freeport 10000 19999) || { WHY="no free port"; return 1; }
		start "$name" socat "TCP-LISTEN:$RELAY,bind=127.0.0.1,reuseaddr,fork" "TCP:127.0.0.1:$port"
		WATCH=$LAST
		await 5 up "$WATCH" "$RELAY" && return 0
		explain "$name" "$WATCH"
		stop_one "$WATCH"
	done
	return 1
}

# Note it when bore process $2, named $1 (its log $WORK/$1.log), has exited or complained.
check_bore() {
	local name=$1 what n
	what="bore ${name/client-/local (}"
	[[ $name = server* ]] || what+=" tunnel)"
	gone "$2" && LOG_NOTES+=("$what exited before the end of the run")
	n=$(grep -cE ' (WARN|ERROR) ' "$WORK/$name.log")
	[ "$n" -gt 0 ] && LOG_NOTES+=("$what logged $n warnings/errors, first: $(grep -m 1 -E \
		' (WARN|ERROR) ' "$WORK/$name.log" | cut -c 1-140)")
}

# VmRSS of pid $1 in kB.
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }

# RssAnon of pid $1 in kB: private memory, without the shared library pages in VmRSS.
anon_kb() { awk '/^RssAnon:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }

# kB as MB with one decimal.
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# Median of the numbers given as arguments.
median() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
		END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ---- one measurement each: print the figure, or fail with the reason in $WORK/err ----

IPERF_PORT=
IPERF_PID=

# A one-off iperf3 server on IPERF_PORT, restarted for every run.
iperf_server_up() {
	if [ -n "$IPERF_PID" ] && alive "$IPERF_PID" && listening "$IPERF_PORT"; then
		return 0
	fi
	[ -n "$IPERF_PID" ] && stop_one "$IPERF_PID"
	start iperf3-server iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT" -1
	IPERF_PID=$LAST
	WATCH=$IPERF_PID
	await 5 up "$IPERF_PID" "$IPERF_PORT" && return 0
	explain iperf3-server "$IPERF_PID"
	return 1
}

measure_tput_iperf() {
	if ! iperf_server_up; then
		echo "iperf3 server did not start: $WHY" >"$WORK/err"
		return 1
	fi
	timeout $((SECS + 20)) iperf3 -c 127.0.0.1 -p "$1" -t "$SECS" -J >"$WORK/iperf.json" 2>&1
	local rc=$? v
	v=$(awk '/"sum_received"/ { f = 1 }
		f && /"bits_per_second"/ { gsub(/[^0-9.e+-]/, "", $2); printf "%.1f", $2 / 8e6; exit }' \
		"$WORK/iperf.json")
	# The one-off server exits after its test; make sure it is gone before the next.
	wait_until 5 gone "$IPERF_PID" || true
	if [ "$rc" = 124 ]; then
		echo "iperf3 client did not finish within $((SECS + 20)) s" >"$WORK/err"
		return 3
	elif [ "$rc" != 0 ] || [ -z "$v" ]; then
		{ sed -n 's/.*"error":[[:space:]]*"\(.*\)".*/\1/p' "$WORK/iperf.json" | head -n 1
			echo "iperf3 exit status $rc"; } | head -n 1 >"$WORK/err"
		return 1
	fi
	echo "$v"
}

# Run a tcpkit client with a time bound; print field 3 on of its "ok ..." line.
# Returns 3 when the bound ran out, 1 on any other failure.
tcpkit_figure() {
	local bound=$1 out
	shift
	out=$(TCPKIT_TIMEOUT=$bound "$TCPKIT" "$@" 2>"$WORK/err")
	if [ $? = 3 ]; then
		echo "tcpkit $1 did not finish within $bound s" >"$WORK/err"
		return 3
	fi
	if [[ $out != ok* ]]; then
		[ -s "$WORK/err" ] || echo "tcpkit $1 printed '$out'" >"$WORK/err"
		return 1
	fi
	cut -d ' ' -f 3- <<<"$out"
}

measure_tput_stream() { tcpkit_figure $((SECS + 20)) stream 127.0.0.1 "$1" "$SECS"; }
measure_pingpong() { tcpkit_figure 30 pingpong 127.0.0.1 "$1" "$PINGS"; }
measure_churn() { tcpkit_figure $((SECS + 20)) churn 127.0.0.1 "$1" "$SECS" 8 1024; }

# ---- figures over direct / bore / socat ----

declare -A FIGNAME=([tput]=throughput [pingpong]="64-byte round trips" [churn]=churn)

declare -A RES    # RES[figure,config] = median, or empty when not measured
declare -A TARGET # TARGET[figure,config] = port to connect to
CONFIGS=(direct bore)
[ "$HAVE_SOCAT" = 1 ] && CONFIGS+=(socat)

# Run figure $1 with function $2, RUNS times per config, configs interleaved. A config
# whose run hit its time bound gets no more runs, so a stuck path cannot eat the budget.
run_figure() {
	local fig=$1 fn=$2 r cfg v rc name=${FIGNAME[$1]}
	declare -A vals=() fails=() why=() stuck=()
	for ((r = 1; r <= RUNS; r++)); do
		for cfg in "${CONFIGS[@]}"; do
			if [ -z "${TARGET[$fig,$cfg]:-}" ] || [ -n "${stuck[$cfg]:-}" ]; then
				continue
			fi
			: >"$WORK/err"
			# In this shell, not a subshell: a server it starts must be known to stop_all.
			"$fn" "${TARGET[$fig,$cfg]}" >"$WORK/value"
			rc=$?
			v=$(head -n 1 "$WORK/value")
			if [ "$rc" = 0 ] && [ -n "$v" ]; then
				vals[$cfg]+=" $v"
				[ "${BENCH_VERBOSE:-0}" = 1 ] && echo "  $fig $cfg run $r: $v" >&2
			else
				[ "${BENCH_VERBOSE:-0}" = 1 ] && echo "  $fig $cfg run $r failed: $(head -n 1 "$WORK/err")" >&2
				fails[$cfg]=$((${fails[$cfg]:-0} + 1))
				[ -n "${why[$cfg]:-}" ] || why[$cfg]=$(head -n 1 "$WORK/err" | cut -c 1-160)
				[ "$rc" = 3 ] && stuck[$cfg]=1
			fi
		done
	done
	for cfg in "${CONFIGS[@]}"; do
		[ -n "${TARGET[$fig,$cfg]:-}" ] || continue
		# shellcheck disable=SC2086
		[ -n "${vals[$cfg]:-}" ] && RES[$fig,$cfg]=$(median ${vals[$cfg]})
		if [ -n "${fails[$cfg]:-}" ]; then
			local extra=""
			[ -n "${stuck[$cfg]:-}" ] && extra=", the rest skipped"
			if [ -n "${vals[$cfg]:-}" ]; then
				note "$name ($cfg): ${fails[$cfg]} of $RUNS runs failed$extra, median of the rest" \
					"(${why[$cfg]:-no reason given})"
			else
				note "$name ($cfg): no run succeeded$extra (${why[$cfg]:-no reason given})"
			fi
		fi
	done
}

# ---- long link: bore local reaches a server with --secret through a delay relay ----

LINK_OW=$((LINK_MS / 2))
LINK_IDLE=4
declare -A LINK=() # LINK[figure,config] = median ms, or empty when not measured
declare -A LINK_NAME=([lone]="lone visitor after ${LINK_IDLE} s idle" [burstmax]="burst of 4: slowest"
	[burstmed]="burst of 4: median")

# True once $2 s have passed since $1 (microseconds, as from EPOCHREALTIME).
idle_since() { ((${EPOCHREALTIME//[!0-9]/} - $1 >= $2 * 1000000)); }

# Median and slowest first-byte ms of $2 visitors at once to public port $1.
measure_first() { tcpkit_figure 20 firstbyte 127.0.0.1 "$1" "$2" 1024; }

# Each figure of one config, RUNS times, each after the tunnel idled LINK_IDLE s; the
# medians go to LINK, failures to the notes.
link_runs() {
	local cfg=$1 pub=$2 r fig v last fails=0 reason=""
	local -A vals=()
	last=${EPOCHREALTIME//[!0-9]/}
	for ((r = 1; r <= RUNS; r++)); do
		for fig in lone burst; do
			wait_until $((LINK_IDLE + 5)) idle_since "$last" "$LINK_IDLE"
			: >"$WORK/err"
			if v=$(measure_first "$pub" "$([ "$fig" = lone ] && echo 1 || echo 4)") &&
				[ -n "$v" ]; then
				[ "${BENCH_VERBOSE:-0}" = 1 ] && echo "  link $fig $cfg run $r: $v" >&2
				if [ "$fig" = lone ]; then
					vals[lone]+=" ${v%% *}"
				else
					vals[burstmed]+=" ${v%% *}"
					vals[burstmax]+=" ${v##* }"
				fi
			else
				fails=$((fails + 1))
				[ -n "$reason" ] || reason=$(head -n 1 "$WORK/err" | cut -c 1-160)
			fi
			last=${EPOCHREALTIME//[!0-9]/}
		done
	done
	for fig in lone burstmax burstmed; do
		# shellcheck disable=SC2086
		[ -n "${vals[$fig]:-}" ] && LINK[$fig,$cfg]=$(median ${vals[$fig]})
	done
	[ "$fails" = 0 ] || note "long link ($cfg): $fails of $((2 * RUNS)) runs failed" \
		"(${reason:-no reason given})"
}

# Connections to the control port (server log $1) while the tunnel idles LINK_QUIET s.
LINK_QUIET=20
link_idle_opens() {
	local before
	before=$(grep -c "incoming connection" "$WORK/$1.log")
	sleep "$LINK_QUIET"
	LINK_OPENS=$(($(grep -c "incoming connection" "$WORK/$1.log") - before))
}

# The long-link figures: a tcpkit churn 1024 service exposed by bore local, whose control
# and data connections cross tcpkit delay.
link_section() {
	# Local, so the tunnels of the other figures keep their server and control port.
	local CTL SRV CLI PUB ORIGIN secret service relay p first=${#BORE_PROCS[@]} pids=()
	# The relay stays up for the section (two configs of 2 x RUNS idle waits, and the quiet
	# spell), no longer.
	local -x TCPKIT_TIMEOUT=$((60 + 20 * RUNS + LINK_QUIET))
	secret="bench-$RANDOM$RANDOM$RANDOM"
	if ! start_origin link-service churn 1024; then
		note "long link (tcpkit churn service did not start: $WHY)"
		return
	fi
	service=$ORIGIN
	pids+=("$LAST")
	if ! BORE_LOG=debug start_server server-link --secret "$secret"; then
		note "long link (bore server --secret did not start: $WHY)"
		return
	fi
	pids+=("$SRV")
	if ! start_tcpkit link-relay delay 127.0.0.1 "$CTL" "$LINK_OW"; then
		note "long link (tcpkit delay did not start: $WHY)"
		return
	fi
	relay=$ORIGIN
	pids+=("$LAST")
	# pool: the default, a pool of 6 between C peers; plain: --pool 0, as with a Rust peer.
	for cfg in pool plain; do
		# shellcheck disable=SC2046
		if start_client "client-link-$cfg" "$service" --control-port "$relay" --secret "$secret" \
			$([ "$cfg" = plain ] && echo --pool 0); then
			link_runs "$cfg" "$PUB"
			[ "$cfg" = pool ] && link_idle_opens server-link
			check_bore "client-link-$cfg" "$CLI"
			stop_one "$CLI"
		else
			note "long link: bore local --$cfg did not open a tunnel ($WHY)"
		fi
	done
	check_bore server-link "$SRV"
	for p in "${pids[@]}"; do
		stop_one "$p"
	done
	# Checked above, so the end-of-run check does not take them for exited.
	BORE_PROCS=("${BORE_PROCS[@]:0:first}")
}

# ---- the client behind an HTTP proxy: tinyproxy on loopback, CONNECT for every connection ----

declare -A VIA=() # VIA[figure,config] = median, or empty when not measured

# Churn and a lone visitor's first byte through a tcpkit churn 1024 service exposed by
# bore local straight to its server ("plain") and through tinyproxy ("proxy").
proxy_section() {
	local CTL SRV CLI PUB ORIGIN service proxy cfg r v first=${#BORE_PROCS[@]} pids=() flags
	local -A vals=()
	if ! command -v tinyproxy >/dev/null 2>&1; then
		note "behind an HTTP proxy (tinyproxy not installed)"
		return
	fi
	if ! start_origin proxy-service churn 1024; then
		note "behind an HTTP proxy (tcpkit churn service did not start: $WHY)"
		return
	fi
	service=$ORIGIN
	pids+=("$LAST")
	if ! start_server server-proxy; then
		note "behind an HTTP proxy (bore server did not start: $WHY)"
		return
	fi
	pids+=("$SRV")
	proxy=$("$TCPKIT" freeport 10000 19999)
	printf '%s\n' "Port $proxy" "Listen 127.0.0.1" "Timeout 30" "MaxClients 1000" \
		"LogLevel Warning" "Allow 127.0.0.1" "ConnectPort $CTL" >"$WORK/tinyproxy.conf"
	start tinyproxy tinyproxy -d -c "$WORK/tinyproxy.conf"
	pids+=("$LAST")
	WATCH=$LAST
	if ! await 5 up "$LAST" "$proxy"; then
		explain tinyproxy "$LAST"
		note "behind an HTTP proxy (tinyproxy did not start: $WHY)"
	else
		for cfg in plain proxy; do
			flags=(--control-port "$CTL")
			[ $cfg = proxy ] && flags+=(--proxy "http://127.0.0.1:$proxy")
			if ! start_client "client-$cfg" "$service" "${flags[@]}"; then
				note "behind an HTTP proxy ($cfg): bore local did not open a tunnel ($WHY)"
				continue
			fi
			for ((r = 1; r <= RUNS; r++)); do
				v=$(measure_churn "$PUB") && [ -n "$v" ] && vals[churn,$cfg]+=" ${v%% *}"
				v=$(measure_first "$PUB" 1) && [ -n "$v" ] && vals[first,$cfg]+=" ${v%% *}"
			done
			for v in churn first; do
				if [ -n "${vals[$v,$cfg]:-}" ]; then
					# shellcheck disable=SC2086
					VIA[$v,$cfg]=$(median ${vals[$v,$cfg]})
				else
					note "behind an HTTP proxy, $v ($cfg): no run succeeded ($(head -n 1 "$WORK/err"))"
				fi
			done
			check_bore "client-$cfg" "$CLI"
			stop_one "$CLI"
		done
	fi
	check_bore server-proxy "$SRV"
	for r in "${pids[@]}"; do
		stop_one "$r"
	done
	BORE_PROCS=("${BORE_PROCS[@]:0:first}")
}

# A behind-a-proxy cell: figure $1 of config $2 in format $3, or "-".
via_cell() { [ -n "${VIA[$1,$2]:-}" ] && printf "$3" "${VIA[$1,$2]}" || echo -; }

# The behind-a-proxy table and what it measured.
proxy_report() {
	local fmt="%-34s %16s %16s\n"
	printf "$fmt" "client behind an HTTP proxy" "bore local" "--proxy http://"
	printf "$fmt" "churn (conn/s, 8 parallel)" "$(via_cell churn plain %.0f)" "$(via_cell churn proxy %.0f)"
	printf "$fmt" "first byte, lone visitor (ms)" "$(via_cell first plain %.1f)" "$(via_cell first proxy %.1f)"
	echo
	echo "behind a proxy: one bore server on loopback, reached straight and through tinyproxy" \
		"(an HTTP CONNECT for every control and data connection); churn as above against a" \
		"tcpkit churn 1024 service; first byte: one visitor's 3-byte request to its 1 KiB reply"
}

# A long-link cell: "ms  round trips", or "-".
link_cell() {
	[ -n "${LINK[$1,$2]:-}" ] && awk -v m="${LINK[$1,$2]}" -v r="$LINK_MS" \
		'BEGIN { printf "%.1f  %.2f", m, m / r }' || echo -
}

# The long-link table and what it measured.
link_report() {
	local fig fmt="%-34s %16s %16s\n"
	printf "$fmt" "long link, first byte (ms  RTTs)" "bore local" "--pool 0"
	for fig in lone burstmax burstmed; do
		printf "$fmt" "${LINK_NAME[$fig]}" "$(link_cell "$fig" pool)" "$(link_cell "$fig" plain)"
	done
	printf "$fmt" "connections opened, ${LINK_QUIET} s idle" "${LINK_OPENS:--}" -
	echo
	echo "long link: bore local reaches bore server --secret through tcpkit delay, $LINK_OW ms" \
		"each way and $LINK_MS ms for each TCP handshake ($LINK_MS ms round trips, RTTs);"
	echo "  visitors on loopback send 3 bytes to the public port and time the first byte of a" \
		"1 KiB reply; model: 1 RTT through the pool, 3.5 with a data connection opened for each"
}

# The notes, and how long the run took.
print_notes() {
	local n
	for n in "${LOG_NOTES[@]}"; do
		echo "$n"
	done
	for n in "${NOTES[@]}"; do
		echo "not measured: $n"
	done
	echo "finished in $((SECONDS - START_TIME)) s"
}

START_TIME=$SECONDS
echo "bore benchmark: $(date '+%Y-%m-%d %H:%M:%S %Z'), $(nproc) CPUs" \
	"($(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo unknown)),"
echo "  Linux $(uname -r), $("$BORE" --version 2>/dev/null | head -n 1 | grep . || echo "bore (version unknown)") at $BORE," \
	"loopback only, median of $RUNS runs"
echo

if [ "$ONLY" = link ]; then
	link_section
	stop_all
	link_report
	print_notes
	exit 0
fi
if [ "$ONLY" = proxy ]; then
	proxy_section
	stop_all
	proxy_report
	print_notes
	exit 0
fi

# ---- memory: one tunnel idle, two bursts, then 1,000 live tunneled connections ----

IDLE_SRV="" IDLE_CLI="" IDLE_SRV_ANON="" IDLE_CLI_ANON="" HOLD_SRV="" HOLD_CLI="" IDLE_FLOOR=""
BURST_CONNS=2000 FLOOD_CONNS=12000 FLOOD_PARALLEL=64 BURST_TUN="" BURST_CTL=""

# True once the RSS of pids $1 and $2 is the same in two reads 0.2 s apart.
rss_settled() {
	local a b
	a="$(rss_kb "$1") $(rss_kb "$2")"
	sleep 0.2
	b="$(rss_kb "$1") $(rss_kb "$2")"
	[ "$a" = "$b" ]
}

ECHO_TUNNEL=0
if ! start_origin echo echo; then
	cannot_run "tcpkit echo service did not start: $WHY"
fi
ECHO_PORT=$ORIGIN
if ! start_server; then
	note "every bore figure (bore server did not start: $WHY)"
elif ! start_client client-echo "$ECHO_PORT"; then
	note "every bore figure (bore local did not open a tunnel: $WHY)"
else
	ECHO_TUNNEL=1
	ECHO_PUB=$PUB
	ECHO_CLI=$CLI
fi

if [ "$ECHO_TUNNEL" = 1 ]; then
	wait_until 2 rss_settled "$SRV" "$ECHO_CLI"
	IDLE_SRV=$(rss_kb "$SRV")
	IDLE_CLI=$(rss_kb "$ECHO_CLI")
	IDLE_SRV_ANON=$(anon_kb "$SRV")
	IDLE_CLI_ANON=$(anon_kb "$ECHO_CLI")

	# The floor for comparison: an idle `sleep`, linked against the same C library.
	if SLEEP_BIN=$(command -v sleep) && [ "$SLEEP_BIN" != sleep ]; then
		start sleep "$SLEEP_BIN" 60
		SLEEP_PID=$LAST
		execed() { [ "$(readlink "/proc/$SLEEP_PID/exe" 2>/dev/null)" = "$(readlink -f "$SLEEP_BIN")" ]; }
		wait_until 2 execed && wait_until 2 rss_settled "$SLEEP_PID" "$SLEEP_PID" &&
			IDLE_FLOOR=$(rss_kb "$SLEEP_PID")
		stop_one "$SLEEP_PID"
	fi
	[ -n "$IDLE_FLOOR" ] || note "the idle floor (no sleep binary to start)"

	# Server VmRSS before, at the peak of and 5 s idle after a burst that tcpkit "${@:2}"
	# makes, as "before/peak/after" in MB in BURST. The peak is VmHWM, reset before it.
	burst_rss() {
		local what=$1 before peak out
		shift
		BURST=""
		before=$(rss_kb "$SRV")
		if ! echo 5 2>/dev/null >"/proc/$SRV/clear_refs"; then
			note "server RSS around $what (could not reset its peak in /proc/$SRV/clear_refs)"
			return 1
		fi
		out=$("$TCPKIT" "$@" 2>&1)
		if [[ $out != ok* ]] || ! alive "$SRV"; then
			alive "$SRV" || out="bore server died"
			note "server RSS around $what ($(head -n 1 <<<"$out" | cut -c 1-120))"
			return 1
		fi
		peak=$(awk '/^VmHWM:/ { print $2 }' "/proc/$SRV/status")
		sleep 5
		BURST="$(mb "$before")/$(mb "$peak")/$(mb "$(rss_kb "$SRV")")"
	}
	burst_rss "$BURST_CONNS short tunneled connections" many 127.0.0.1 "$ECHO_PUB" \
		"$BURST_CONNS" 1024 && BURST_TUN=$BURST
	burst_rss "a flood of $FLOOD_CONNS control connections" storm 127.0.0.1 "$CTL" \
		"$FLOOD_CONNS" "$FLOOD_PARALLEL" && BURST_CTL=$BURST

	mkfifo "$WORK/hold.in"
	"$TCPKIT" hold 127.0.0.1 "$ECHO_PUB" "$HOLD_CONNS" <"$WORK/hold.in" >"$WORK/hold.log" 2>&1 &
	HOLD_PID=$!
	PIDS+=("$HOLD_PID")
	# Keep the write end open ourselves; hold lets go when it closes.
	exec 7>"$WORK/hold.in"
	HOLD_FD_OPEN=1
	ready() { grep -q "^ready $HOLD_CONNS" "$WORK/hold.log" || ! alive "$HOLD_PID"; }
	wait_until 70 ready
	if grep -q "^ready $HOLD_CONNS" "$WORK/hold.log" && alive "$SRV" && alive "$ECHO_CLI"; then
		HOLD_SRV=$(rss_kb "$SRV")
		HOLD_CLI=$(rss_kb "$ECHO_CLI")
	else
		reason=$(first_line hold)
		alive "$SRV" || reason="bore server died"
		alive "$ECHO_CLI" || reason="bore local died"
		note "RSS with $HOLD_CONNS connections (${reason:-no ready line within 70 s})"
	fi
	exec 7>&-
	HOLD_FD_OPEN=0
	wait_until 30 gone "$HOLD_PID" || true
	stop_one "$HOLD_PID"
	# Wait for both ends to drop the closed connections before the traffic figures.
	wait_until 10 rss_settled "$SRV" "$ECHO_CLI"
else
	note "RSS figures (no tunnel, see above)"
fi

# ---- long link: the first byte through a tunnel whose server is a round trip away ----

link_section

proxy_section

# ---- traffic: targets for each figure ----

TARGET[pingpong,direct]=$ECHO_PORT
[ "$ECHO_TUNNEL" = 1 ] && TARGET[pingpong,bore]=$ECHO_PUB

if start_origin churn churn 1024; then
	CHURN_PORT=$ORIGIN
	TARGET[churn,direct]=$CHURN_PORT
	if [ "$ECHO_TUNNEL" = 1 ]; then
		if start_client client-churn "$CHURN_PORT"; then
			TARGET[churn,bore]=$PUB
		else
			note "churn (bore): bore local did not open a tunnel ($WHY)"
		fi
	fi
else
	CHURN_PORT=
	note "churn: tcpkit churn service did not start ($WHY)"
fi

TPUT_FN=measure_tput_stream
TPUT_LABEL="tcpkit stream"
TPUT_PORT=$ECHO_PORT
if [ "$HAVE_IPERF" = 1 ]; then
	IPERF_PORT=$("$TCPKIT" freeport 10000 19999)
	if [ -n "$IPERF_PORT" ] && iperf_server_up; then
		TPUT_FN=measure_tput_iperf
		TPUT_LABEL=iperf3
		TPUT_PORT=$IPERF_PORT
	else
		note "throughput with iperf3 (its server did not start: $WHY);" \
			"tcpkit stream used instead"
		[ -n "$IPERF_PID" ] && stop_one "$IPERF_PID"
	fi
elif [ "${BENCH_NO_IPERF:-0}" = 1 ]; then
	note "throughput with iperf3 (BENCH_NO_IPERF=1); tcpkit stream used instead"
else
	note "throughput with iperf3 (iperf3 not installed); tcpkit stream used instead"
fi
TARGET[tput,direct]=$TPUT_PORT
if [ "$ECHO_TUNNEL" = 1 ]; then
	if [ "$TPUT_PORT" = "$ECHO_PORT" ]; then
		TARGET[tput,bore]=$ECHO_PUB
	elif start_client client-iperf "$TPUT_PORT"; then
		TARGET[tput,bore]=$PUB
	else
		note "throughput (bore): bore local did not open a tunnel ($WHY)"
	fi
fi

if [ "$HAVE_SOCAT" = 1 ]; then
	declare -A RELAY_OF=()
	for port in "$TPUT_PORT" "$ECHO_PORT" $CHURN_PORT; do
		[ -n "${RELAY_OF[$port]:-}" ] && continue
		if start_socat "socat-$port" "$port"; then
			RELAY_OF[$port]=$RELAY
		else
			note "socat relay to port $port did not start ($WHY)"
		fi
	done
	TARGET[tput,socat]=${RELAY_OF[$TPUT_PORT]:-}
	TARGET[pingpong,socat]=${RELAY_OF[$ECHO_PORT]:-}
	[ -n "$CHURN_PORT" ] && TARGET[churn,socat]=${RELAY_OF[$CHURN_PORT]:-}
elif [ "${BENCH_NO_SOCAT:-0}" = 1 ]; then
	note "socat column (BENCH_NO_SOCAT=1)"
else
	note "socat column (socat not installed)"
fi

run_figure tput "$TPUT_FN"
run_figure pingpong measure_pingpong
run_figure churn measure_churn

# Roughly what a round trip through bore can reach: it crosses three TCP connections
# where a direct one crosses one, and each extra hop costs a send and a recv even when
# no thread sleeps (an estimate: on two cores parts of the hops overlap).
HOP_US="" RTT_CEILING=""
hops=()
for ((r = 1; r <= RUNS; r++)); do
	v=$("$TCPKIT" hop 100000 2>/dev/null) && hops+=("$v")
done
if [ ${#hops[@]} -gt 0 ]; then
	HOP_US=$(median "${hops[@]}")
	[ -n "${RES[pingpong,direct]:-}" ] && RTT_CEILING=$(awk -v d="${RES[pingpong,direct]}" -v h="$HOP_US" \
		'BEGIN { t = 1e6 / d; printf "%.2fx", t / (t + 4 * h) }')
else
	note "the cost of one loopback hop (tcpkit hop failed)"
fi

# ---- binary size ----

SIZE_SUM="" STRIPPED=""
if command -v size >/dev/null 2>&1; then
	SIZE_SUM=$(size "$BORE" 2>/dev/null | awk 'NR == 2 { print $1 " + " $2 " + " $3 " = " $4 }')
	[ -n "$SIZE_SUM" ] || note "text+data+bss (size could not read $BORE)"
else
	note "text+data+bss (size, from binutils, not installed)"
fi
if command -v strip >/dev/null 2>&1; then
	if strip -o "$WORK/bore.stripped" "$BORE" 2>"$WORK/strip.err"; then
		STRIPPED=$(wc -c <"$WORK/bore.stripped" | tr -d ' ')
	else
		note "stripped size (strip failed: $(head -n 1 "$WORK/strip.err"))"
	fi
else
	note "stripped size (strip, from binutils, not installed)"
fi

# ---- did bore stay up, and what did it complain about? ----

for entry in "${BORE_PROCS[@]}"; do
	check_bore "${entry%=*}" "${entry##*=}"
done

# ---- the table ----

stop_all

# A figure or "-".
cell() { [ -n "${RES[$1,$2]:-}" ] && printf "$3" "${RES[$1,$2]}" || echo -; }

# bore/direct of a figure, or "-".
ratio() {
	local d=${RES[$1,direct]:-} b=${RES[$1,bore]:-}
	[ -n "$d" ] && [ -n "$b" ] && awk -v d="$d" -v b="$b" 'BEGIN { if (d > 0) printf "%.2fx", b / d; else print "-" }' ||
		echo -
}

FMT="%-34s %10s %13s %10s %12s\n"
row() {
	local s=$4
	[ "$HAVE_SOCAT" = 1 ] || s=
	printf "$FMT" "$1" "$2" "$3" "$s" "$5"
}
traffic_row() { row "$1" "$(cell "$2" direct "$3")" "$(cell "$2" bore "$3")" "$(cell "$2" socat "$3")" "$(ratio "$2")"; }
mem() { [ -n "$1" ] && mb "$1" || echo -; }

printf "$FMT" figure direct bore "$([ "$HAVE_SOCAT" = 1 ] && echo socat)" bore/direct
traffic_row "throughput (MB/s, $TPUT_LABEL)" tput "%.1f"
traffic_row "64-byte round trips (/s)" pingpong "%.0f"
traffic_row "churn (conn/s, 8 parallel)" churn "%.0f"
row "server RSS, $HOLD_CONNS conns (MB)" - "$(mem "$HOLD_SRV")" - ""
row "client RSS, $HOLD_CONNS conns (MB)" - "$(mem "$HOLD_CLI")" - ""
row "server RSS, $BURST_CONNS short conns (MB)" - "${BURST_TUN:--}" - ""
row "server RSS, $FLOOD_CONNS ctl conns (MB)" - "${BURST_CTL:--}" - ""
row "idle RSS server/client (MB)" "$(mem "$IDLE_FLOOR")" "$(mem "$IDLE_SRV") / $(mem "$IDLE_CLI")" - ""
row "  of it private, RssAnon (MB)" - "$(mem "$IDLE_SRV_ANON") / $(mem "$IDLE_CLI_ANON")" - ""
row "stripped binary (bytes)" - "${STRIPPED:--}" - ""
row "text+data+bss (bytes)" - "$([ -n "$SIZE_SUM" ] && echo "${SIZE_SUM##* }" || echo -)" - ""
echo
[ -n "$SIZE_SUM" ] && echo "size: text + data + bss = $SIZE_SUM bytes"
if [ "$TPUT_LABEL" = iperf3 ]; then
	echo "throughput: iperf3, one stream, $SECS s per run, rate the receiver saw (1 MB = 10^6 bytes)"
else
	echo "throughput: tcpkit stream, $SECS s per run of echoed data, bytes that came back" \
		"(1 MB = 10^6 bytes)"
fi
echo "round trips: $PINGS x 64 bytes on one connection per run; churn: $SECS s per run," \
	"connect + 3-byte request + 1 KiB reply + close"
[ -n "$HOP_US" ] && echo "one loopback hop (64-byte send + recv, one thread): $HOP_US us;" \
	"four such hops added in series to a direct round trip leave ${RTT_CEILING:-?} of its rate"
echo "RSS: VmRSS of bore server and bore local (1 MB = 1024 kB); idle RSS, direct: an idle" \
	"$(command -v sleep || echo sleep), which maps the same C library"
echo "bursts: server VmRSS before/peak (VmHWM)/after 5 s idle, around $BURST_CONNS tunneled" \
	"connections at once (1 KiB echoed each) right after the idle figures, then" \
	"$FLOOD_CONNS connect-and-close control connections, $FLOOD_PARALLEL at a time"
[ "$HAVE_SOCAT" = 1 ] && note "socat RSS (socat forks a process per connection: no single process to read)"
# Choosing whom to drop past --max-startups: the main thread's cost of each accept then.
[ -x tests/unit ] && tests/unit startupbench | grep "^startups:" |
	sed 's/$/ (2,500 sources, one idle connection each, tests\/unit startupbench)/'

echo
link_report
echo
proxy_report
print_notes
exit 0
