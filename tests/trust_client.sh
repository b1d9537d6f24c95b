# Cases for what a careless operator or a hostile server can do to bore: closed
# standard fds, odd secret files, hostile text, stops that wait, few fds.
# Sourced by test.sh.

# True once a TCP connection to 127.0.0.1:$1 succeeds.
tc_port_open() { (exec 9<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Closed standard fds: the server with 1 and 2 closed, the client with {1,2},
# {0,1} or {0,1,2}, keep serving; a pipe or socket that landed on fd 1 or 2
# once read log lines back as signals, or took them.
t_closed_stdio() {
	local redir port out
	start_origin origin echo || return 1
	CTL=$(free_port) || return 1
	TUN_MIN=$((20000 + (RANDOM % 60) * 200))
	TUN_MAX=$((TUN_MIN + 199))
	"$BORE" server --bind-addr 127.0.0.1 --control-port "$CTL" --min-port "$TUN_MIN" \
		--max-port "$TUN_MAX" >&- 2>&- &
	SRV=$!
	PIDS+=("$SRV")
	wait_until 5 tc_port_open "$CTL" && alive "$SRV" || { why "server with fds 1 and 2 closed is gone"; return 1; }
	port=$TUN_MIN
	for redir in '>&- 2>&-' '<&- >&-' '<&- >&- 2>&-'; do
		# Where fd 2 stays open, its lines go to a log.
		{ eval '"$BORE" local "$ORIGIN" --local-host 127.0.0.1 --to 127.0.0.1 --control-port "$CTL" \
			--port "$port"' "$redir" '&'; } 2>>"$WORK/stdio.log"
		CLI=$!
		PIDS+=("$CLI")
		wait_until 5 tc_port_open "$port" || { why "client with $redir: no tunnel"; return 1; }
		out=$("$TCPKIT" roundtrip 127.0.0.1 "$port" 100000) || { why "client with $redir: $out"; return 1; }
		alive "$CLI" || { why "client with $redir is gone"; return 1; }
		port=$((port + 1))
	done
	alive "$SRV" || { why "server with fds 1 and 2 closed is gone"; return 1; }
	kill -TERM "$SRV"
	wait_exit "$SRV" 5 && [ "$RC" = 0 ] || { why "server: ${RC:-still running} after SIGTERM"; return 1; }
}

# A secret file: lines of spaces and tabs are blank, not secrets; a secret is
# taken as written (spaces around it kept, as --secret takes it); binary data
# (a NUL or control byte) or anything but a regular file (a FIFO would hang
# the reload) is refused at start and on SIGHUP, which keeps the keys before;
# a symlink to a file is fine.
t_secret_file_strict() {
	local f=$WORK/strict.secret real=$WORK/strict-real.secret sub kind
	printf 'alpha\n \n\t\nbeta\0x\n' >"$WORK/nul.secret"
	printf 'alpha\nbe\033ta\n' >"$WORK/esc.secret"
	for sub in "server --bind-addr 127.0.0.1" "local 9 --to 127.0.0.1"; do
		for kind in nul esc; do
			# shellcheck disable=SC2086
			expect_cli 1 "ERROR secret file .*$kind.secret holds binary data: a NUL or control byte$" \
				$sub --control-port "$(free_port)" --secret-file "$WORK/$kind.secret" || return 1
		done
	done
	printf 'alpha\n \n\t\r\n  gamma \nbeta\n' >"$real"
	ln -sf "$real" "$f"
	printf '\t\nbeta\n' >"$WORK/strict-client.secret"
	start_origin origin echo && start_server server --secret-file "$f" || return 1
	refused_client space -s ' ' && refused_client tab -s $'\t' && refused_client trimmed -s gamma || return 1
	start_client spaced "$ORIGIN" -s '  gamma ' || { why "'  gamma ' refused"; return 1; }
	start_client beta "$ORIGIN" --secret-file "$WORK/strict-client.secret" || { why "client file's beta refused"; return 1; }
	kill -HUP "$SRV"
	wait_until 5 grep -qF "secret file reloaded: 3 secrets" "$WORK/server.log" ||
		{ why "the reload through a symlink did not give 3 secrets"; return 1; }
	cp "$WORK/nul.secret" "$real"
	kill -HUP "$SRV"
	wait_until 5 grep -qF "WARN secret file $f holds binary data: a NUL or control byte; keeping the"\
" secrets loaded before" "$WORK/server.log" || { why "no warning of the NUL byte"; return 1; }
	rm -f "$f"
	mkfifo "$f"
	kill -HUP "$SRV"
	wait_until 5 grep -qF "WARN secret file $f is not a regular file; keeping the secrets loaded before" \
		"$WORK/server.log" || { why "no warning of the FIFO"; return 1; }
	start_client beta2 "$ORIGIN" -s beta || { why "the kept keys refused beta"; return 1; }
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 100000) || { why "roundtrip: $out"; return 1; }
	kill -TERM "$SRV"
	wait_exit "$SRV" 5 || { why "server did not stop after SIGTERM"; return 1; }
}

# A hostile server's Error text reaches the log with C1 controls (escaped or
# raw), line separators and bidi overrides replaced, other UTF-8 kept.
t_hostile_server_text() {
	local text
	text='{"Error":"\u009b31mred \u0085nel \u202eevil \u2066iso \u2028ls '$'\xc2\x9b''raw caf\u00e9 '$'\xc3\xa9''"}\0'
	start fake "$TCPKIT" serve say "$text"
	wait_until 5 test -s "$WORK/fake.log" || return 1
	CTL=$(head -n 1 "$WORK/fake.log")
	start client "$BORE" local 9 --to 127.0.0.1 --control-port "$CTL"
	wait_exit "$LAST" 5 || { why "client did not exit"; return 1; }
	log_has client "server error: ?31mred ?nel ?evil ?iso ?ls ?raw café é"
}

# A client with a secret says what happened when no Challenge comes: a server
# that closes at once refused it (or is at its --max-startups); one that says
# something else requires no secret.
t_no_challenge_words() {
	start fake "$TCPKIT" serve close
	wait_until 5 test -s "$WORK/fake.log" || return 1
	start client "$BORE" local 9 --to 127.0.0.1 --control-port "$(head -n 1 "$WORK/fake.log")" -s x
	wait_exit "$LAST" 5 || { why "client did not exit after a close"; return 1; }
	[ "$RC" = 1 ] || { why "after a close: exit status $RC"; return 1; }
	log_has client "server closed the connection before the authentication challenge: refused, or at its limit of connections not yet authenticated (--max-startups)" ||
		return 1
	start hello "$TCPKIT" serve say '{"Hello":2000}\0'
	wait_until 5 test -s "$WORK/hello.log" || return 1
	start client2 "$BORE" local 9 --to 127.0.0.1 --control-port "$(head -n 1 "$WORK/hello.log")" -s x
	wait_exit "$LAST" 5 || { why "client did not exit after a Hello"; return 1; }
	[ "$RC" = 78 ] || { why "after a Hello: exit status $RC"; return 1; }
	log_has client2 "expected authentication challenge, but no secret was required"
}

# Stops that wait for nothing: SIGTERM while a frame from the server is half
# read, or while the client waits for a Challenge, ends it at once (exit 0),
# and no retry is announced after "shutting down"; --heartbeat-timeout is at
# most an hour.
t_stop_mid_frame() {
	local t0
	expect_cli 2 "invalid value '3601' for '--heartbeat-timeout': must be a number from 1 to 3600" \
		local 9 --to 127.0.0.1 --heartbeat-timeout 3601 || return 1
	start fake "$TCPKIT" serve say '{"Hello":2000}\0{"Conn'
	wait_until 5 test -s "$WORK/fake.log" || return 1
	start client "$BORE" local 9 --to 127.0.0.1 --control-port "$(head -n 1 "$WORK/fake.log")"
	CLI=$LAST
	wait_until 5 grep -q "listening at" "$WORK/client.log" || { why "no tunnel"; return 1; }
	# The half frame follows the Hello 100 ms later; nothing in the log says it was read.
	sleep 0.5
	t0=$(date +%s%N)
	kill -TERM "$CLI"
	wait_exit "$CLI" 5 || { why "client still running 5 s after SIGTERM"; return 1; }
	[ "$RC" = 0 ] || { why "exit status $RC"; return 1; }
	[ $(($(date +%s%N) - t0)) -lt 1000000000 ] || { why "exit took $((($(date +%s%N) - t0) / 1000000)) ms"; return 1; }
	log_has client "shutting down" || return 1
	! grep -q "reconnecting" "$WORK/client.log" || { why "a retry announced after the stop"; return 1; }
	start mute "$TCPKIT" serve mute
	wait_until 5 test -s "$WORK/mute.log" || return 1
	start client2 "$BORE" local 9 --to 127.0.0.1 --control-port "$(head -n 1 "$WORK/mute.log")" -s x
	CLI=$LAST
	# Connected and waiting for a Challenge within a few ms; nothing logs it.
	sleep 0.3
	t0=$(date +%s%N)
	kill -TERM "$CLI"
	wait_exit "$CLI" 5 || { why "client2 still running 5 s after SIGTERM"; return 1; }
	[ $(($(date +%s%N) - t0)) -lt 1000000000 ] ||
		{ why "client2 exit took $((($(date +%s%N) - t0) / 1000000)) ms"; return 1; }
	[ "$RC" = 0 ] || { why "client2: exit status $RC"; return 1; }
	[ "$(grep -c . "$WORK/client2.log")" = 1 ] || { why "client2 said more than 'shutting down'"; return 1; }
}

# Many tunnels, few fds: --max-conns lowered to what fits is said; a tunnel whose
# first connection finds no fd (fds held by a parent, say) tries again rather
# than giving up.
t_tunnels_few_fds() {
	local ports=() i out held
	for ((i = 0; i < 64; i++)); do ports+=(9); done
	out=$(prlimit --nofile=1024 -- timeout 5 "$BORE" local 9 9 9 9 --max-conns 1000 \
		--to 127.0.0.1 --control-port "$(free_port)" 2>&1)
	grep -qE "WARN at most [0-9]+ connections relayed at once \(--max-conns\): [0-9]+ fds free under ulimit -n" <<<"$out" ||
		{ why "--max-conns 1000 at 1024 fds: $(head -n 2 <<<"$out")"; return 1; }
	# 20 tunnels, and a parent holding fds 10-93 of 96: about 5 first connections fit,
	# and the others try again (no fd frees here, so they keep trying).
	start_server server || return 1
	held='for fd in {10..93}; do eval "exec $fd</dev/null"; done; exec prlimit --nofile=96 -- "$0" "$@"'
	start client bash -c "$held" "$BORE" local "${ports[@]:0:20}" --to 127.0.0.1 --control-port "$CTL"
	CLI=$LAST
	wait_until 5 grep -qF "WARN could not connect to 127.0.0.1:$CTL: Too many open files" "$WORK/client.log" ||
		{ why "no first connection ran short"; return 1; }
	wait_until 5 grep -q "INFO reconnecting in" "$WORK/client.log" ||
		{ why "a first connection short of fds was not tried again"; return 1; }
	alive "$CLI" || { why "client gone"; return 1; }
}


# A server (or a man in the middle) that grants a port, drops the tunnel, then answers
# every Hello with "port already in use" does not drive the client: the port kept is
# given up once, any port is never "kept", and every retry backs off (4 connections
# take over 1.5 s).
t_redial_backs_off() {
	local t0 ms
	TCPKIT_SAY_LATER='{"Error":"port already in use"}\0' \
		start fake "$TCPKIT" serve say '{"Hello":2000}\0{"Error":"gone"}\0'
	wait_until 5 test -s "$WORK/fake.log" || return 1
	t0=$(date +%s%N)
	start client "$BORE" local 9 --to 127.0.0.1 --control-port "$(head -n 1 "$WORK/fake.log")"
	CLI=$LAST
	wait_until 10 log_count_is fake "conn 4" 1 || { why "$(count_in_log fake conn) connections"; return 1; }
	ms=$((($(date +%s%N) - t0) / 1000000))
	[ "$ms" -ge 1500 ] || { why "4 connections in $ms ms"; return 1; }
	log_count_is client "port 2000 is not to be had" 1 || { why "$(cat "$WORK/client.log")"; return 1; }
	! grep -q "port 0 is not" "$WORK/client.log" || { why "port 0 was kept"; return 1; }
	alive "$CLI"
}
