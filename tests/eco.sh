# Cases for how bore fits its ecosystem: a hardened build, make's targets, logs in
# the Rust bore's JSON, a client that drains, live counters, the systemd units, docs.

# The default build is hardened (PIE, canaries, FORTIFY, full RELRO), and flags from
# the environment, as dpkg-buildflags gives them, come after the hardening and win.
t_hardened_build() {
	local out
	if command -v hardening-check >/dev/null 2>&1; then
		# Stack clash protection and CFI are left to the packager's flags (x86-only, some).
		out=$(hardening-check ./bore)
		for h in 'Position Independent Executable' 'Stack protected' 'Fortify Source functions' \
			'Read-only relocations' 'Immediate binding'; do
			grep -q "$h: yes" <<<"$out" || { why "hardening-check: $out"; return 1; }
		done
	else
		for h in __stack_chk_fail _chk@; do
			nm -D ./bore | grep -q "$h" || { why "./bore lacks $h"; return 1; }
		done
		readelf -d ./bore | grep -q BIND_NOW || { why "./bore lacks BIND_NOW"; return 1; }
	fi
	out=$(make -s -n -B bore CFLAGS=-fno-stack-protector CPPFLAGS=-D_FORTIFY_SOURCE=1 LDFLAGS=-Wl,-z,lazy)
	grep -qE -- '-fstack-protector .*-fno-stack-protector' <<<"$out" ||
		{ why "CFLAGS do not follow the hardening: $out"; return 1; }
	grep -q -- '-D_FORTIFY_SOURCE=2' <<<"$out" && { why "CPPFLAGS' FORTIFY level not left alone"; return 1; }
	grep -qE -- '-z,now .*-z,lazy' <<<"$out" || { why "LDFLAGS do not follow the hardening"; return 1; }
	return 0
}

# `make test` runs the suite, as dh_auto_test expects, rather than make's built-in
# rule that copies test.sh to a file named test.
t_make_test_target() {
	local out
	out=$(make -n test 2>&1) || { why "make -n test failed: $out"; return 1; }
	grep -q '^\./test\.sh' <<<"$out" || { why "make test does not run ./test.sh: $out"; return 1; }
	[ -e test ] && { why "a file named test is there"; return 1; }
	return 0
}

# The systemd units take every setting from their environment files: the server's
# ExecStart fixes no port range, and a client's secret is a variable it may leave empty.
t_systemd_units() {
	local f exec d=$WORK/units
	exec=$(grep '^ExecStart=' contrib/bore-server.service)
	grep -qE -- '--(min|max)-port' <<<"$exec" && { why "server ExecStart fixes the range: $exec"; return 1; }
	grep -q '^EnvironmentFile=-/etc/bore/' contrib/bore-server.service ||
		{ why "the server unit reads no optional environment file"; return 1; }
	exec=$(grep '^ExecStart=' contrib/bore-local@.service)
	grep -qE -- '--secret' <<<"$exec" && { why "client ExecStart needs a secret: $exec"; return 1; }
	grep -q '^LoadCredential=' contrib/bore-local@.service && { why "the client unit needs a credential"; return 1; }
	grep -qx 'BORE_SECRET=' contrib/bore-local.env.example || { why "the example has no empty BORE_SECRET="; return 1; }
	# Run the client's ExecStart as systemd would, with the example's settings: no secret.
	start_origin origin echo && start_server server || return 1
	(set -a; . contrib/bore-local.env.example; BORE_SERVER=127.0.0.1 BORE_CONTROL_PORT=$CTL \
		BORE_ARGS="--local-host 127.0.0.1"; exec "$BORE" local "$ORIGIN" $BORE_ARGS) >"$WORK/client.log" 2>&1 &
	PIDS+=($!)
	wait_until 5 grep -q "listening at" "$WORK/client.log" || { why "client: $(cat "$WORK/client.log")"; return 1; }
	if command -v systemd-analyze >/dev/null 2>&1; then
		mkdir -p "$d"
		for f in bore-server.service bore-local@.service; do
			sed "s|/usr/local/bin/bore|$PWD/bore|" "contrib/$f" >"$d/$f"
		done
		systemd-analyze verify --man=no "$d/bore-server.service" "$d/bore-local@3000.service" >"$WORK/verify" 2>&1 ||
			{ why "systemd-analyze verify: $(cat "$WORK/verify")"; return 1; }
	fi
	return 0
}

# Every line of stdin is one JSON object with the fields tracing-subscriber's JSON
# format gives the Rust bore's --json lines; $1 is the target they must name.
json_lines() {
	python3 -c '
import json, sys
n = 0
for line in sys.stdin:
    o = json.loads(line)
    assert set(o) == {"timestamp", "level", "fields", "target"}, o
    assert o["level"] in ("ERROR", "WARN", "INFO", "DEBUG", "TRACE"), o
    assert isinstance(o["fields"]["message"], str) and o["target"] == sys.argv[1], o
    assert o["timestamp"].endswith("Z") and "T" in o["timestamp"], o
    n += 1
assert n > 0, "no lines"
' "$1"
}

# --json, before or after the subcommand as the Rust bore 0.6 takes it: each log line
# on stderr is one JSON object (escapes included), the address line alone on stdout;
# RUST_LOG sets the level when BORE_LOG does not.
t_json_logs() {
	local out
	command -v python3 >/dev/null 2>&1 || { why "no python3"; return 2; }
	start_origin origin echo && start_server server --json || return 1
	json_lines bore_cli::server <"$WORK/server.log" || { why "server: $(head -n 3 "$WORK/server.log")"; return 1; }
	RUST_LOG=bore_cli=debug,warn "$BORE" --json local "$ORIGIN" --local-host 127.0.0.1 --to 127.0.0.1 \
		--control-port "$CTL" >"$WORK/client.out" 2>"$WORK/client.err" &
	PIDS+=($!)
	wait_until 5 grep -q . "$WORK/client.out" || { why "no address line: $(cat "$WORK/client.err")"; return 1; }
	PUB=$(sed -n 's/^127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$WORK/client.out")
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 65536 2>&1) || { why "roundtrip to '$PUB': $out"; return 1; }
	wait_until 5 grep -q '"DEBUG"' "$WORK/client.err" || { why "RUST_LOG=bore_cli=debug: no debug line"; return 1; }
	json_lines bore_cli::client <"$WORK/client.err" || { why "client: $(head -n 3 "$WORK/client.err")"; return 1; }
	grep -q '"message":"listening at 127.0.0.1:' "$WORK/client.err" || { why "no listening line"; return 1; }
	# A message with a quote, a backslash and a tab must still parse.
	"$BORE" local 1 --to 127.0.0.1 --json --secret-file "$WORK/no\"such\\	file" 2>"$WORK/err.log"
	json_lines bore_cli::client <"$WORK/err.log" || { why "escapes: $(cat "$WORK/err.log")"; return 1; }
	grep -qF '"level":"ERROR"' "$WORK/err.log" || { why "no ERROR: $(cat "$WORK/err.log")"; return 1; }
	# RUST_LOG=error hides the info lines; BORE_LOG beats RUST_LOG.
	RUST_LOG=error "$BORE" local 1 --to 127.0.0.1 --control-port 1 --no-reconnect 2>"$WORK/q.log"
	grep -q INFO "$WORK/q.log" && { why "RUST_LOG=error shows INFO: $(cat "$WORK/q.log")"; return 1; }
	BORE_LOG=off RUST_LOG=trace "$BORE" local 1 --to 127.0.0.1 --control-port 1 --no-reconnect 2>"$WORK/q.log"
	[ -s "$WORK/q.log" ] && { why "BORE_LOG=off lost to RUST_LOG: $(cat "$WORK/q.log")"; return 1; }
	return 0
}

# A visitor's arrival is logged by the client at info, and SIGUSR1's status lines count
# the bytes of a connection still open: 8 MiB sent to a sink, the visitor then idle.
t_status_live_bytes() {
	local n=$((8 << 20))
	start_origin origin sink && start_server_logging server info || return 1
	start_split client "$BORE" local "$ORIGIN" --local-host 127.0.0.1 --to 127.0.0.1 --control-port "$CTL"
	CLI=$LAST
	wait_until 5 lines_are "$WORK/client.out" 1 || { why "no stdout line"; return 1; }
	PUB=$(public_for client "$ORIGIN")
	exec 8<>"/dev/tcp/127.0.0.1/$PUB" || { why "could not connect to $PUB"; return 1; }
	head -c "$n" /dev/zero >&8 || { exec 8>&-; why "could not send"; return 1; }
	wait_until 5 log_has client "INFO new connection " || { exec 8>&-; return 1; }
	status_settles "$SRV" server "INFO status: 1 tunnel, visitors 1 now 1 total, bytes $n in 0 out" &&
		status_settles "$CLI" client "INFO status: 1 tunnel, 1 up, visitors 1 now 1 total, bytes $n in 0 out" ||
		{ exec 8>&-; return 1; }
	exec 8>&-
	# The sink answers its count as the visitor leaves.
	status_settles "$SRV" server "INFO status: 1 tunnel, visitors 0 now 1 total, bytes $n in [0-9]+ out" &&
		status_settles "$CLI" client "INFO status: 1 tunnel, 1 up, visitors 0 now 1 total, bytes $n in [0-9]+ out"
}

# A visitor for drain cases: to the echo at port $1, send $2 chunks of 64 KiB a tenth
# of a second apart, printing "started" after the first comes back, then "ok" once all
# came back with the same SHA-256.
slow_echo_visitor() {
	python3 -c '
import hashlib, os, socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
sent, got, back = hashlib.sha256(), hashlib.sha256(), 0
for i in range(int(sys.argv[2])):
    chunk = os.urandom(65536)
    s.sendall(chunk)
    sent.update(chunk)
    while back < (i + 1) * 65536:
        b = s.recv(1 << 20)
        if not b:
            sys.exit("cut after %d bytes" % back)
        got.update(b)
        back += len(b)
    if i == 0:
        print("started", flush=True)
    time.sleep(0.1)
s.shutdown(socket.SHUT_WR)
if s.recv(1) or sent.digest() != got.digest():
    sys.exit("hash mismatch")
print("ok", flush=True)
' "$@"
}

# A client with --grace $2 s gets signal $1 while a visitor is mid-transfer: the visitor
# finishes, bytes checked, and the client exits 0; $3 s bounds each other wait.
client_drains() {
	local vis
	command -v python3 >/dev/null 2>&1 || { why "no python3"; return 2; }
	start_origin origin echo && start_server server && start_client client "$ORIGIN" --grace "$2" ||
		return 1
	start visitor slow_echo_visitor "$PUB" 20
	vis=$LAST
	wait_until "$3" grep -qx started "$WORK/visitor.log" || { why "visitor did not start"; return 1; }
	kill "-$1" "$CLI"
	wait_until "$3" log_has client "shutting down: 1 connection; waiting up to $2.0 s" || return 1
	wait_exit "$vis" "$2" || { why "visitor still running"; return 1; }
	grep -qx ok "$WORK/visitor.log" || { why "visitor: $(cat "$WORK/visitor.log")"; return 1; }
	wait_exit "$CLI" "$3" || { why "client did not exit after the drain"; return 1; }
	[ "$RC" = 0 ] || { why "client exit status $RC"; return 1; }
}

# bore local drains at SIGTERM as the server does with --grace: a transfer in flight
# goes on to its end, hash checked, and the client then exits 0; a second signal
# cuts the wait short.
t_local_drain() {
	client_drains TERM 10 5 || return
	# Again, with a second signal: the visitor is cut, the client exits 0 at once.
	start_client client2 "$ORIGIN" --grace 30 || return 1
	start visitor2 slow_echo_visitor "$PUB" 100
	vis=$LAST
	wait_until 5 grep -qx started "$WORK/visitor2.log" || { why "visitor2 did not start"; return 1; }
	kill -TERM "$CLI"
	wait_until 5 log_has client2 "waiting up to 30.0 s" || return 1
	alive "$CLI" || { why "client2 did not wait"; return 1; }
	kill -TERM "$CLI"
	wait_exit "$CLI" 5 || { why "client2 still running after a second signal"; return 1; }
	[ "$RC" = 0 ] || { why "client2 exit status $RC"; return 1; }
	log_has client2 "second signal: not waiting" || return 1
	wait_exit "$vis" 10 || { why "visitor2 still running"; return 1; }
	grep -qx ok "$WORK/visitor2.log" && { why "visitor2 was not cut"; return 1; }
	return 0
}

# The README puts what a newcomer needs first: an ssh example, self-hosting before the
# benchmark, the benchmark kept short; and its install-strip size is within 15% of the truth.
t_readme_newcomer() {
	local said got d=$WORK/strip
	grep -qE '^ +\$ bore local 22 .*--port 2222' README.md && grep -qF 'ssh -p 2222 ' README.md ||
		{ why "README has no ssh example"; return 1; }
	[ "$(grep -n '^## Self-hosting' README.md | cut -d: -f1)" -lt "$(grep -n '^## Performance' README.md | cut -d: -f1)" ] ||
		{ why "the benchmark comes before Self-hosting"; return 1; }
	[ "$(awk '/^## Performance/ { on = 1; next } /^## / { on = 0 } on' README.md | wc -l)" -le 60 ] ||
		{ why "the Performance section is over 60 lines"; return 1; }
	said=$(sed -n 's/.*install-strip.*(\([0-9,]*\) bytes instead of.*/\1/p; s/.*binary stripped (\([0-9,]*\) bytes instead of.*/\1/p' README.md | tr -d , | head -n 1)
	[ -n "$said" ] || { why "README gives no stripped size in bytes"; return 1; }
	make -s install-strip DESTDIR="$d" >/dev/null || { why "make install-strip failed"; return 1; }
	got=$(stat -c %s "$d/usr/local/bin/bore")
	[ $((said * 100 / got)) -ge 85 ] && [ $((said * 100 / got)) -le 115 ] ||
		{ why "README says $said bytes stripped, install-strip gives $got"; return 1; }
}

# bore.c keeps the shape its readers rely on: no function over 60 lines (name line to
# closing brace), no line over 100 columns with tabs at 8, and the line budget: 4,894 after
# the trust boundary's cut, 5,150 with visitor pools, 5,528 with bore local on Windows,
# ports per secret and --visitor-rate, 5,688 with --metrics; the round's budget is 5,700.
t_code_shape() {
	local long wide
	long=$(awk '/^[a-z_][a-z_0-9]*\(/ { name = $0; start = NR } /^\}/ && start { if (NR - start + 1 > 60) print name " " NR - start + 1; start = 0 }' bore.c)
	[ -z "$long" ] || { why "functions over 60 lines: $long"; return 1; }
	wide=$(expand -t 8 bore.c | awk 'length > 100 { printf "%d ", NR }')
	[ -z "$wide" ] || { why "lines over 100 columns: $wide"; return 1; }
	[ "$(wc -l <bore.c)" -le 5688 ] || { why "bore.c is $(wc -l <bore.c) lines, over 5,688"; return 1; }
}
