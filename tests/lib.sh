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
