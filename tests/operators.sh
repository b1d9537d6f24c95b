# Cases for those who run bore: set-up on a fresh machine, output for scripts and
# journald, exit statuses, the command line, installation.
# Sourced by test.sh, which provides start, start_server, start_client, wait_until, why...

# ---- a fresh machine --------------------------------------------------------

# A stub command $1 in $DEPS/bin that records its arguments in $DEPS/calls, then runs $2.
deps_stub() {
	printf '#!/bin/bash\necho "%s $*" >>"$DEPS/calls"\n%s\n' "$1" "${2:-exit 0}" >"$DEPS/bin/$1"
	chmod +x "$DEPS/bin/$1"
}

# Run tests/deps.sh $1 with only the stubs on PATH: exit status in RC, output in $DEPS/out.
deps_run() {
	: >"$DEPS/calls"
	DEPS=$DEPS PATH=$DEPS/bin "$BASH" tests/deps.sh "$1" >"$DEPS/out" 2>&1
	RC=$?
}

# Expect the stubs to have been called exactly as the lines of $1 say.
deps_calls_are() {
	[ "$(cat "$DEPS/calls")" = "$1" ] ||
		{ why "calls: $(tr '\n' '|' <"$DEPS/calls"), wanted: $(tr '\n' '|' <<<"$1")"; return 1; }
}

# The install script's decisions, with a stubbed package manager (no real package moves):
# root on Debian installs what is missing, non-root goes through sudo, nothing missing
# calls nothing, and without apt-get the packages are named and the script fails.
t_deps_install_decisions() {
	DEPS=$WORK/deps
	mkdir -p "$DEPS/bin"
	local c
	for c in cc make timeout awk valgrind clang; do deps_stub "$c"; done
	# libsodium is there once the stub apt-get has "installed" it.
	deps_stub pkg-config '[ -e "$DEPS/sodium" ]'
	deps_stub apt-get 'case " $* " in *" libsodium-dev "*) : >"$DEPS/sodium" ;; esac'
	deps_stub sudo '"$@"'
	deps_stub id 'read -r uid <"$DEPS/uid"; echo "$uid"'

	echo 0 >"$DEPS/uid"
	deps_run build
	[ "$RC" = 0 ] || { why "root, Debian: exit $RC"; return 1; }
	deps_calls_are "pkg-config --exists libsodium
id -u
apt-get update -qq
apt-get install -y -qq libsodium-dev" || return 1
	grep -qxF "bore: installing libsodium-dev with apt-get" "$DEPS/out" ||
		{ why "root, Debian said: $(cat "$DEPS/out")"; return 1; }

	# Now present: nothing to install, nothing said.
	deps_run check
	[ "$RC" = 0 ] && [ ! -s "$DEPS/out" ] || { why "nothing missing: exit $RC, $(cat "$DEPS/out")"; return 1; }
	deps_calls_are "pkg-config --exists libsodium
clang -x c -fsanitize=fuzzer -o /dev/null -" || return 1

	rm "$DEPS/sodium" "$DEPS/bin/clang"
	echo 1000 >"$DEPS/uid"
	deps_run check
	[ "$RC" = 0 ] || { why "non-root: exit $RC"; return 1; }
	deps_calls_are "pkg-config --exists libsodium
id -u
sudo apt-get update -qq
apt-get update -qq
sudo apt-get install -y -qq libsodium-dev clang libclang-rt-dev
apt-get install -y -qq libsodium-dev clang libclang-rt-dev" || return 1
	grep -qxF "bore: installing libsodium-dev clang libclang-rt-dev with sudo apt-get" "$DEPS/out" ||
		{ why "non-root said: $(cat "$DEPS/out")"; return 1; }

	# Not root and no sudo: the command to run as root.
	rm "$DEPS/sodium" "$DEPS/bin/sudo"
	deps_run build
	[ "$RC" = 1 ] || { why "no sudo: exit $RC"; return 1; }
	deps_calls_are "pkg-config --exists libsodium
id -u" || return 1
	grep -qxF "bore: missing libsodium-dev: as root, run apt-get install libsodium-dev" "$DEPS/out" ||
		{ why "no sudo said: $(cat "$DEPS/out")"; return 1; }

	# No apt-get: not Debian or Ubuntu; the packages are named and nothing is run.
	rm "$DEPS/bin/apt-get"
	echo 0 >"$DEPS/uid"
	deps_run build
	[ "$RC" = 1 ] || { why "no apt-get: exit $RC"; return 1; }
	deps_calls_are "pkg-config --exists libsodium" || return 1
	grep -qxF "bore: missing libsodium-dev (as Debian names them): install them and run make again" \
		"$DEPS/out" || { why "no apt-get said: $(cat "$DEPS/out")"; return 1; }
}

# make demo: the visitor's words come back, and nothing is said on stderr.
t_demo_clean() {
	local out
	out=$(make -s demo 2>"$WORK/demo.log") || { why "make demo failed: $out"; return 1; }
	grep -qxF "  [visitor got] hello through bore" <<<"$out" || { why "demo printed: $out"; return 1; }
	[ ! -s "$WORK/demo.log" ] || { why "stderr: $(head -n 3 "$WORK/demo.log")"; return 1; }
}
