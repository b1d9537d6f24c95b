# Shell helpers shared by test.sh, tests/bench.sh and tests/demo.sh.

# Poll a command until it succeeds, for at most $1 seconds.
wait_until() {
	local limit=$(($1 * 20)) i
	shift
	for ((i = 0; i < limit; i++)); do
		"$@" && return 0
		sleep 0.05
	done
	return 1
}

# True while $1 is a live child of this shell. Checking the parent as well as the pid
# means a pid the kernel has handed to someone else after our child exited is never
# taken for ours (and never signalled).
alive() {
	local stat state ppid
	[ -n "$1" ] && { stat=$(<"/proc/$1/stat"); } 2>/dev/null || return 1
	read -r state ppid _ <<<"${stat##*) }"
	[ "$state" != Z ] && [ "$ppid" = "$$" ]
}

# True when no process in PIDS (the caller's own) is alive.
none_alive() {
	local p
	for p in "${PIDS[@]}"; do
		alive "$p" && return 1
	done
	return 0
}

# User plus system CPU time of process $1, in clock ticks.
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

# Start "$@" in the background with output in $WORK/$1.log; its pid in LAST, added to PIDS.
start() {
	local name=$1
	shift
	# Empty it now: the background redirection truncates it only later.
	: >"$WORK/$name.log"
	"$@" >"$WORK/$name.log" 2>&1 &
	LAST=$!
	PIDS+=("$LAST")
}
