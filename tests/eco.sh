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
