# Cases for bore.exe, `bore local` built for Windows, run under wine by BORE=tests/wrap-windows
# (tests/cross.sh check makes it) against the Linux ./bore server; skipped for other builds.
# Sourced by test.sh, which provides start, start_server, start_client, wait_until, why...

# True when BORE runs bore.exe; else the case is skipped.
windows_bore() {
	grep -qs 'bore\.exe' "$BORE" && return 0
	why "needs BORE=tests/wrap-windows (tests/cross.sh check makes it): skipped"
	return 2
}

# Help and version as on Linux, with no \r added to a line; `bore server` refused in one line.
t_windows_cli() {
	local out rc
	windows_bore || return
	expect_cli 0 '^Usage: bore <COMMAND>' --help && expect_cli 0 '^bore [0-9]' -V &&
		expect_cli 0 '^bore [0-9]+\.[0-9]+\.[0-9]+ \(wire protocol of bore 0\.5/0\.6\)$' --version &&
		expect_cli 0 'Usage: bore local' local --help || return 1
	"$BORE" --help | grep -q $'\r' && { why "--help has CRLF line ends"; return 1; }
	out=$(timeout 30 "$BORE" server --min-port 2000 2>&1)
	rc=$?
	[ "$rc" = 2 ] || { why "bore server: exit $rc"; return 1; }
	[ "$out" = "bore: 'bore server' is not available on Windows: run it on Linux, macOS or a BSD" ] ||
		{ why "bore server said: $out"; return 1; }
}

# Ctrl+C, which wine delivers for SIGINT: a transfer in flight ends whole (hashed), then exit 0.
t_windows_ctrl_c() {
	windows_bore || return
	client_drains INT 20 10
}

# --local-host localhost to a service on 127.0.0.1 only: ::1, tried first, refuses; bytes hashed.
t_windows_localhost() {
	windows_bore || return
	start_origin origin echo && start_server server || return 1
	start client "$BORE" local "$ORIGIN" --local-host localhost --to 127.0.0.1 --control-port "$CTL"
	wait_until 10 grep -q "listening at" "$WORK/client.log" || return 1
	PUB=$(public_port client)
	out=$("$TCPKIT" many 127.0.0.1 "$PUB" 20 100000) || { why "$out"; return 1; }
	[ "$out" = "ok 20" ]
}

# A secret file saved the Windows way, CRLF line ends and all, gives the same secret.
t_windows_secret_file() {
	windows_bore || return
	printf 'hunter2\r\n' >"$WORK/secret.txt"
	start_origin origin echo && start_server server -s hunter2 &&
		start_client client "$ORIGIN" --secret-file "$WORK/secret.txt" || return 1
	out=$("$TCPKIT" many 127.0.0.1 "$PUB" 10 100000) || { why "$out"; return 1; }
	[ "$out" = "ok 10" ]
}
