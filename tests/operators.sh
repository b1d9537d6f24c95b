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
# calls nothing, and without apt-get the packages are named and the script fails, unless
# only the suite's optional tools are missing.
t_deps_install_decisions() {
	DEPS=$WORK/deps
	mkdir -p "$DEPS/bin"
	local c
	for c in cc make timeout awk valgrind ip clang tinyproxy microsocks prometheus; do deps_stub "$c"; done
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

	# Only clang and its libFuzzer missing: named, and make check goes on.
	: >"$DEPS/sodium"
	deps_run check
	[ "$RC" = 0 ] || { why "no apt-get, no clang: exit $RC"; return 1; }
	grep -qxF "bore: without clang libclang-rt-dev (as Debian names them), the suite skips what needs them" \
		"$DEPS/out" || { why "no apt-get, no clang said: $(cat "$DEPS/out")"; return 1; }
}

# make demo: the visitor's words come back, and nothing is said on stderr.
t_demo_clean() {
	local out
	out=$(make -s demo 2>"$WORK/demo.log") || { why "make demo failed: $out"; return 1; }
	grep -qxF "  [visitor got] hello through bore" <<<"$out" || { why "demo printed: $out"; return 1; }
	[ ! -s "$WORK/demo.log" ] || { why "stderr: $(head -n 3 "$WORK/demo.log")"; return 1; }
}

# ---- scripts and logs ------------------------------------------------------

# Like start, but stdout goes to $WORK/$1.out and stderr to $WORK/$1.log.
start_split() {
	local name=$1
	shift
	: >"$WORK/$name.log"
	: >"$WORK/$name.out"
	"$@" >"$WORK/$name.out" 2>"$WORK/$name.log" &
	LAST=$!
	PIDS+=("$LAST")
}

# True once file $1 has $2 lines (a function, so wait_until re-reads it).
lines_are() { [ "$(wc -l <"$1")" = "$2" ]; }

# True when log $1 has a line of level $2 saying exactly $3, timestamp aside.
log_line() {
	sed 's/^[0-9][0-9TZ:.-]* *//' "$WORK/$1.log" | grep -qxF -- "$2 $3" ||
		{ why "$1.log lacks '$2 $3'"; return 1; }
}

# Each time the tunnel is (re)established: "PUBLIC LOCAL" on stdout, the logs on stderr.
t_stdout_address() {
	local first
	start_origin origin echo && start_server server || return 1
	start_split client "$BORE" local "$ORIGIN" --local-host 127.0.0.1 --to 127.0.0.1 \
		--control-port "$CTL"
	CLI=$LAST
	wait_until 5 lines_are "$WORK/client.out" 1 || { why "no line on stdout"; return 1; }
	first=$(<"$WORK/client.out")
	[[ $first =~ ^127\.0\.0\.1:([0-9]+)\ 127\.0\.0\.1:$ORIGIN$ ]] || { why "stdout: '$first'"; return 1; }
	out=$("$TCPKIT" roundtrip 127.0.0.1 "${BASH_REMATCH[1]}" 100000) || { why "$out"; return 1; }
	grep -qvE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T' "$WORK/client.log" && { why "stderr has a line that is not a log line"; return 1; }
	{ kill -9 "$SRV"; wait "$SRV"; } 2>/dev/null
	KEEP_PORTS=1 start_server server2 || return 1
	wait_until 15 lines_are "$WORK/client.out" 2 || { why "no second line after the re-dial"; return 1; }
	[ "$(tail -n 1 "$WORK/client.out")" = "$first" ] ||
		{ why "after the re-dial: '$(tail -n 1 "$WORK/client.out")'"; return 1; }
	# IPv6 hosts in brackets, given bare or bracketed.
	stop_all
	start_origin origin echo --host ::1 || return 1
	BIND=::1 start_server server || return 1
	start_split client "$BORE" local "$ORIGIN" --local-host ::1 --to "[::1]" --control-port "$CTL"
	wait_until 5 lines_are "$WORK/client.out" 1 || { why "no line on stdout over IPv6"; return 1; }
	grep -qxE "\[::1\]:[0-9]+ \[::1\]:$ORIGIN" "$WORK/client.out" ||
		{ why "stdout over IPv6: '$(<"$WORK/client.out")'"; return 1; }
}

# With JOURNAL_STREAM naming stderr: <N> priorities and no timestamps; naming another file:
# the usual lines.
t_journal_priorities() {
	local stream
	: >"$WORK/server.log"
	stream=$(stat -c %d:%i "$WORK/server.log")
	WRAP="env JOURNAL_STREAM=$stream" start_server server -s hunter2 || return 1
	[ "$(head -n 1 "$WORK/server.log")" = "<6>INFO server listening on 127.0.0.1:$CTL; tunnels on 127.0.0.1, ports $TUN_MIN-$TUN_MAX; secret required" ] ||
		{ why "server said: $(head -n 1 "$WORK/server.log")"; return 1; }
	: >"$WORK/client.log"
	start client env JOURNAL_STREAM="$(stat -c %d:%i "$WORK/client.log")" "$BORE" local 9 \
		--to 127.0.0.1 --control-port "$CTL" -s wrong
	wait_exit "$LAST" 5 || { why "client did not exit"; return 1; }
	[ "$(<"$WORK/client.log")" = "<3>ERROR server error: invalid secret" ] ||
		{ why "client said: $(<"$WORK/client.log")"; return 1; }
	grep -qxE '<4>WARN 127\.0\.0\.1:[0-9]+: server handshake failed: invalid secret' "$WORK/server.log" ||
		{ why "server lacks the <4> warning"; return 1; }
	# The server's stream is not this client's stderr.
	start other env JOURNAL_STREAM="$stream" "$BORE" local 9 --to 127.0.0.1 --control-port "$CTL" -s wrong
	wait_exit "$LAST" 5 || { why "second client did not exit"; return 1; }
	grep -qxE '[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{12}Z ERROR server error: invalid secret' "$WORK/other.log" ||
		{ why "other said: $(<"$WORK/other.log")"; return 1; }
	# A secret file that cannot be read stops it before any tunnel: an error all the same.
	: >"$WORK/nofile.log"
	start nofile env JOURNAL_STREAM="$(stat -c %d:%i "$WORK/nofile.log")" "$BORE" server \
		--secret-file "$WORK/missing.secret"
	wait_exit "$LAST" 5 && [ "$RC" = 1 ] || { why "missing secret file: ${RC:-still running}"; return 1; }
	[ "$(<"$WORK/nofile.log")" = "<3>ERROR could not read secret file $WORK/missing.secret: No such file or directory" ] ||
		{ why "missing secret file said: $(<"$WORK/nofile.log")"; return 1; }
}

# A planned re-dial and its refused attempts are warnings; the refusal that ends the client
# is the one error, and exits 78.
t_retries_are_warnings() {
	start_origin origin echo && start_server server -s one &&
		start_client client "$ORIGIN" -s one || return 1
	kill -TERM "$SRV"
	wait_exit "$SRV" 5 || { why "server did not stop"; return 1; }
	wait_until 10 grep -q "could not connect" "$WORK/client.log" || { why "no refused retry"; return 1; }
	KEEP_PORTS=1 start_server server2 -s two || return 1
	wait_exit "$CLI" 15 || { why "client still re-dialling"; return 1; }
	[ "$RC" = 78 ] || { why "exit status $RC"; return 1; }
	log_line client WARN "server error: server shutting down" &&
		log_line client WARN "could not connect to 127.0.0.1:$CTL: Connection refused" &&
		log_line client WARN "server error: invalid secret" &&
		log_line client ERROR "giving up: retrying cannot mend that" || return 1
	[ "$(grep -c ' ERROR ' "$WORK/client.log")" = 1 ] ||
		{ why "errors: $(grep ' ERROR ' "$WORK/client.log" | tr '\n' '|')"; return 1; }
}

# BORE_LOG=off: not a line on stderr, the address still on stdout; trace: every frame.
t_log_off_and_trace() {
	CTL=$(free_port) || return 1
	start_origin origin echo || return 1
	start server env BORE_LOG=off "$BORE" server --bind-addr 127.0.0.1 --control-port "$CTL" \
		--min-port 20000 --max-port 32000
	SRV=$LAST
	# Nothing in its log to wait for: wait until the control port takes connections.
	wait_until 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$CTL" 2>/dev/null || { why "server not listening"; return 1; }
	start client env BORE_LOG=trace "$BORE" local "$ORIGIN" --local-host 127.0.0.1 \
		--to 127.0.0.1 --control-port "$CTL"
	wait_until 5 grep -q "listening at" "$WORK/client.log" || return 1
	PUB=$(public_port client)
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 1000) || { why "$out"; return 1; }
	log_line client TRACE "server: received {\"Hello\":$PUB}" &&
		log_line client TRACE 'server: received "Heartbeat"' || return 1
	grep -qE ' TRACE fd [0-9]+: sending \{"Hello":0\}$' "$WORK/client.log" || { why "no Hello sent"; return 1; }
	grep -qE ' TRACE fd [0-9]+: sending \{"Pool":6\}$' "$WORK/client.log" &&
		grep -qE ' TRACE fd [0-9]+: sending \{"Join":"[0-9a-f-]{36}"\}$' "$WORK/client.log" ||
		{ why "no Pool and Join sent"; return 1; }
	[ ! -s "$WORK/server.log" ] || { why "server under off said: $(head -n 2 "$WORK/server.log")"; return 1; }
	start_split quiet env BORE_LOG=OFF "$BORE" local "$ORIGIN" --to 127.0.0.1 --control-port "$CTL"
	wait_until 5 lines_are "$WORK/quiet.out" 1 || { why "no stdout line under off"; return 1; }
	[ ! -s "$WORK/quiet.log" ] || { why "client under off said: $(<"$WORK/quiet.log")"; return 1; }
}

# Each proxied connection ends with one info line on both sides, under the same id.
t_connection_closed_lines() {
	local id
	start_tunnel || return 1
	printf 'hello bore\n' | "$TCPKIT" raw 127.0.0.1 "$PUB" 500 >/dev/null
	wait_until 5 grep -q "closed: " "$WORK/client.log" || { why "no line on the client"; return 1; }
	id=$(sed -n 's/.* INFO connection \([0-9a-f-]*\) closed: .*/\1/p' "$WORK/client.log")
	[ ${#id} = 36 ] || { why "id '$id'"; return 1; }
	wait_until 5 grep -q "connection $id closed" "$WORK/server.log" || { why "no line on the server"; return 1; }
	for side in client server; do
		grep -qxE "[0-9TZ:.-]+  INFO connection $id closed: 11 bytes visitor->service, 11 bytes service->visitor, [0-9]+\.[0-9]{3} s" \
			"$WORK/$side.log" || { why "$side: $(grep closed: "$WORK/$side.log")"; return 1; }
	done
}

# The server's first line: where control and tunnels listen, and whether a secret is needed.
t_server_startup_line() {
	start_server server --bind-tunnels ::1 || return 1
	log_line server INFO "server listening on 127.0.0.1:$CTL; tunnels on [::1], ports $TUN_MIN-$TUN_MAX; no secret required"
}

# ---- exit statuses -----------------------------------------------------------

# SIGHUP stops bore local as SIGTERM does: logged, exit 0.
t_sighup_local() {
	start_tunnel || return 1
	kill -HUP "$CLI"
	wait_exit "$CLI" 5 || { why "client still running"; return 1; }
	[ "$RC" = 0 ] || { why "exit status $RC"; return 1; }
	log_line client INFO "shutting down"
}

# ---- the command line ---------------------------------------------------------

# -t=HOST, -p=PORT, -s=SECRET and -l=HOST, as clap takes them; the secret is still wiped.
t_cli_short_equals() {
	start_origin origin echo && start_server server -s=hunter2 || return 1
	start client "$BORE" local "$ORIGIN" -l=127.0.0.1 -t=127.0.0.1 --control-port "$CTL" \
		-p="$TUN_MAX" -s=hunter2
	CLI=$LAST
	wait_until 5 grep -q "listening at" "$WORK/client.log" || return 1
	[ "$(public_port client)" = "$TUN_MAX" ] || { why "port $(public_port client)"; return 1; }
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$TUN_MAX" 100000) || { why "$out"; return 1; }
	tr '\0' ' ' <"/proc/$CLI/cmdline" | grep -q -- "-s=xxxxxxx " || { why "secret not wiped"; return 1; }
}

t_cli_help_command() {
	[ "$("$BORE" help)" = "$("$BORE" --help)" ] || { why "bore help"; return 1; }
	[ "$("$BORE" help local)" = "$("$BORE" local --help)" ] || { why "bore help local"; return 1; }
	[ "$("$BORE" help server)" = "$("$BORE" server --help)" ] || { why "bore help server"; return 1; }
	expect_cli 0 '^  help    Print this message or the help of the given subcommand\(s\)$' help &&
		expect_cli 2 "^bore: unrecognized subcommand 'serve'$" help serve &&
		expect_cli 2 "^bore: unexpected argument 'server'$" help local server
}

t_cli_repeated_options() {
	expect_cli 2 "^bore: the argument '--to' cannot be used multiple times$" local 80 --to a -t b &&
		expect_cli 2 "^bore: the argument '--port' cannot be used multiple times$" \
			local 80 --to a -p 1 --port=2 &&
		expect_cli 2 "^bore: the argument '--secret' cannot be used multiple times$" \
			local 80 --to a -s x -s x &&
		expect_cli 2 "^bore: the argument '--dump' cannot be used multiple times$" \
			local 80 --to a --dump --dump &&
		expect_cli 2 "^bore: the argument '--min-port' cannot be used multiple times$" \
			server --min-port 2000 --min-port=3000
}

t_cli_to_with_port() {
	expect_cli 2 "^bore: invalid value 'vps.example:7835' for '--to': the control port is set with '--control-port 7835'$" \
		local 80 --to vps.example:7835 &&
		expect_cli 2 "^bore: invalid value '\[::1\]:9000' for '--to': the control port is set with '--control-port 9000'$" \
			local 80 --to '[::1]:9000' &&
		expect_cli 2 "for '--to': the control port is set with '--control-port 1'$" \
			BORE_SERVER=127.0.0.1:1 local 80
}

# ---- small texts -----------------------------------------------------------------

# In a subcommand's help, a description beside its option starts at column $2, at least
# two spaces after the option.
help_aligned() {
	"$BORE" "$1" --help | awk -v col="$2" '
		match($0, /^ +(-[a-z], )?--[a-z-]+( <[A-Z_:]+>)?/) {
			n = RLENGTH
			rest = substr($0, n + 1)
			if (rest != "" && (rest !~ /^  / || match(rest, /[^ ]/) + n - 1 != col)) { print; bad = 1 }
		}
		END { exit bad }' >"$WORK/misaligned" ||
		{ why "bore $1 --help: $(<"$WORK/misaligned")"; return 1; }
}

t_text_counts_and_ports() {
	help_aligned local 28 && help_aligned server 31 || return 1
	# Any port, when the range has none free.
	CTL=$(free_port) || return 1
	TUN_MIN=$((20000 + (RANDOM % 60) * 200))
	TUN_MAX=$TUN_MIN
	KEEP_PORTS=1 start_server server || return 1
	start_origin origin echo && start_client client "$ORIGIN" || return 1
	start second "$BORE" local 9 --to 127.0.0.1 --control-port "$CTL"
	wait_exit "$LAST" 5 || { why "second client did not exit"; return 1; }
	[ "$RC" = 1 ] || { why "second client: exit $RC"; return 1; }
	sed 's/^[0-9][0-9TZ:.-]* *//' "$WORK/server.log" |
		grep -qxE 'WARN 127\.0\.0\.1:[0-9]+: could not open a port: failed to find an available port' ||
		{ why "server: $(grep 'could not' "$WORK/server.log")"; return 1; }
	kill -TERM "$SRV"
	wait_exit "$SRV" 5 || return 1
	log_line server INFO "shutting down: 1 tunnel, 0 connections; waiting up to 5.0 s"
}

# The man page: .Os names the version, every exit status is documented, and no example
# passes a secret on the command line, which its CAVEATS advise against.
t_man_page() {
	local version
	version=$("$BORE" --version | cut -d ' ' -f 2)
	grep -qx "\.Os bore $version" man/bore.1 || { why ".Os is not 'bore $version'"; return 1; }
	sed -n '/^\.Sh EXIT STATUS/,/^\.Sh/p' man/bore.1 >"$WORK/exit"
	for status in 0 1 2 78; do
		grep -qx "\.It $status" "$WORK/exit" || { why "EXIT STATUS lacks $status"; return 1; }
	done
	# Every option of a subcommand's --help is in its SYNOPSIS lines, its OPTIONS and the README.
	tr -d '\\' <man/bore.1 >"$WORK/man"
	for sub in local server; do
		sed -n '/^\.Sh SYNOPSIS/,/^\.Sh DESC/p' "$WORK/man" |
			awk -v want=".Cm $sub" '/^\.Nm$/ { if (hit) exit; block = "" } { block = block $0 "\n" }
				$0 == want { hit = 1 } END { if (hit) printf "%s", block }' >"$WORK/syn"
		for opt in $("$BORE" "$sub" --help | grep -oE -- '--[a-z][a-z-]*' | grep -vx -- --help | sort -u); do
			grep -qE -- " ${opt:1}( |\$)" "$WORK/syn" || { why "SYNOPSIS of $sub lacks $opt"; return 1; }
			grep -qE -- "^\.It .*Fl ${opt:1}( |\$)" "$WORK/man" || { why "OPTIONS lack $opt"; return 1; }
			grep -qF -- "$opt" README.md || { why "README lacks $opt"; return 1; }
		done
	done
	sed -n '/^\.Sh EXAMPLES/,/^\.Sh/p' man/bore.1 | grep -E -- '(--secret|-s) ' &&
		{ why "an example passes a secret on the command line"; return 1; }
	return 0
}

# ---- packaging ---------------------------------------------------------------------

# install (with debug info, as built), install-strip (without), install-systemd (units
# naming the installed binary), the completion, and uninstall; all under DESTDIR.
t_install_targets() {
	local d=$WORK/dest f
	make -s install DESTDIR="$d/plain" PREFIX=/usr >/dev/null || { why "make install failed"; return 1; }
	for f in bin/bore share/man/man1/bore.1 share/bash-completion/completions/bore; do
		[ -s "$d/plain/usr/$f" ] || { why "make install: no /usr/$f"; return 1; }
	done
	readelf -S "$d/plain/usr/bin/bore" | grep -q '\.debug_info' || { why "install lost the debug info"; return 1; }
	make -s install-strip DESTDIR="$d/strip" >/dev/null || { why "make install-strip failed"; return 1; }
	readelf -S "$d/strip/usr/local/bin/bore" | grep -qE '\.debug_info|\.symtab' && { why "not stripped"; return 1; }
	"$d/strip/usr/local/bin/bore" --version >/dev/null || { why "stripped binary does not run"; return 1; }
	make -s install-systemd DESTDIR="$d/plain" PREFIX=/usr >/dev/null || { why "make install-systemd failed"; return 1; }
	for f in bore-server.service bore-local@.service; do
		grep -q '^ExecStart=/usr/bin/bore ' "$d/plain/usr/lib/systemd/system/$f" ||
			{ why "$f does not run /usr/bin/bore"; return 1; }
		grep -q /usr/local "$d/plain/usr/lib/systemd/system/$f" && { why "$f names /usr/local"; return 1; }
		for h in ProtectProc=invisible ProcSubset=pid PrivateUsers=yes UMask=0077 'SystemCallFilter=~@privileged'; do
			grep -q "^$h" "$d/plain/usr/lib/systemd/system/$f" || { why "$f lacks $h"; return 1; }
		done
	done
	grep -qx 'RestartPreventExitStatus=2 78' "$d/plain/usr/lib/systemd/system/bore-local@.service" ||
		{ why "the client unit restarts after a refusal"; return 1; }
	# Where systemd-analyze is at hand, the units' exposure stays at 1.1 or below.
	if command -v systemd-analyze >/dev/null 2>&1; then
		for f in bore-server.service bore-local@.service; do
			systemd-analyze security --offline=yes --threshold=11 \
				"$d/plain/usr/lib/systemd/system/$f" >"$WORK/security" 2>&1 ||
				{ why "$f: $(tail -n 1 "$WORK/security")"; return 1; }
		done
	fi
	make -s uninstall DESTDIR="$d/plain" PREFIX=/usr >/dev/null || { why "make uninstall failed"; return 1; }
	f=$(find "$d/plain" -type f)
	[ -z "$f" ] || { why "left after uninstall: $f"; return 1; }
}

# Complete the command line "$@" (the last word being completed) with the bash completion.
complete_line() {
	bash -c '. contrib/bore.bash-completion
		COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _bore; printf "%s\n" "${COMPREPLY[@]}"' bore "$@"
}

# Subcommands, every option of each (as their --help lists them), files for --secret-file.
t_bash_completion() {
	local sub
	[ "$(complete_line bore "" | sort | tr '\n' ' ')" = "--help --json --version help local server " ] ||
		{ why "subcommands: $(complete_line bore "" | tr '\n' ' ')"; return 1; }
	for sub in local server; do
		diff <(complete_line bore "$sub" -- | sort) \
			<("$BORE" "$sub" --help | grep -oE -- '--[a-z][a-z-]*' | sort -u) >"$WORK/diff" ||
			{ why "bore $sub: $(tr '\n' ' ' <"$WORK/diff")"; return 1; }
	done
	[ "$(complete_line bore server --max-)" = $'--max-port\n--max-sessions\n--max-conns\n--max-startups' ] ||
		{ why "--max-: $(complete_line bore server --max- | tr '\n' ' ')"; return 1; }
	: >"$WORK/secret.txt"
	[ "$(complete_line bore local --secret-file "$WORK/secret.t")" = "$WORK/secret.txt" ] ||
		{ why "--secret-file: $(complete_line bore local --secret-file "$WORK/secret.t")"; return 1; }
	[ -z "$(complete_line bore local --port "")" ] || { why "--port offered words"; return 1; }
}
