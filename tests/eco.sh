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
	grep -qE -- '-fstack-protector-strong .*-fno-stack-protector' <<<"$out" ||
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
