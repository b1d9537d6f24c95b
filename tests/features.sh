# Cases for reconnect, liveness, IPv6, access control, graceful shutdown and --dump.
# Sourced by test.sh, which provides start, start_server, start_client, wait_until, why...

# The server comes back on the same control port: the client re-dials and gets its port back.
t_reconnect_after_restart() {
	local first
	start_origin origin echo && start_server server && start_client client "$ORIGIN" || return 1
	first=$PUB
	{ kill -9 "$SRV"; wait "$SRV"; } 2>/dev/null
	wait_until 5 grep -q "reconnecting in" "$WORK/client.log" ||
		{ why "client did not start re-dialling"; return 1; }
	KEEP_PORTS=1 start_server server2 || return 1
	wait_until 15 log_count_is client "listening at" 2 ||
		{ why "client did not come back"; return 1; }
	[ "$(sed -n 's/.*listening at 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/client.log" | tail -n 1)" = "$first" ] ||
		{ why "port changed from $first"; return 1; }
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$first" 1000000) || { why "$out"; return 1; }
	alive "$CLI"
}

# A restarted server that now wants another secret is not retried: the client exits 78 at once.
t_reconnect_fatal_not_retried() {
	start_origin origin echo && start_server server -s one && start_client client "$ORIGIN" -s one ||
		return 1
	{ kill -9 "$SRV"; wait "$SRV"; } 2>/dev/null
	KEEP_PORTS=1 start_server server2 -s two || return 1
	wait_exit "$CLI" 15 || { why "client still re-dialling"; return 1; }
	[ "$RC" = 78 ] || { why "exit status $RC"; return 1; }
	log_has client "invalid secret" && [ "$(count_in_log client "invalid secret")" = 1 ]
}

# A frozen server sends no heartbeats: the client gives up after --heartbeat-timeout.
t_heartbeat_timeout() {
	local t0 t1
	start_origin origin echo && start_server server &&
		start_client client "$ORIGIN" --no-reconnect --heartbeat-timeout 1 || return 1
	t0=$(date +%s%N)
	kill -STOP "$SRV"
	wait_exit "$CLI" 5 || { kill -CONT "$SRV"; why "client did not notice"; return 1; }
	t1=$(date +%s%N)
	kill -CONT "$SRV"
	[ "$RC" = 1 ] || { why "exit status $RC"; return 1; }
	# The last heartbeat came up to 500 ms before the stop: 1 s after it, less that.
	between "$(((t1 - t0) / 1000000))" 400 3000 || { why "took $(((t1 - t0) / 1000000)) ms"; return 1; }
	log_has client "no heartbeat for 1.0 s"
}

# Everything on ::1: control port, public port, local service; hosts given bare and bracketed.
t_ipv6() {
	start_origin origin echo --host ::1 || return 1
	BIND=::1 start_server server || return 1
	log_has server "server listening on [::1]:$CTL" || return 1
	start client "$BORE" local "$ORIGIN" --local-host ::1 --to ::1 --control-port "$CTL"
	wait_until 5 grep -q "listening at \[::1\]:" "$WORK/client.log" || return 1
	PUB=$(sed -n 's/.*listening at \[::1\]:\([0-9]*\).*/\1/p' "$WORK/client.log")
	out=$("$TCPKIT" roundtrip ::1 "$PUB" 1000000) || { why "$out"; return 1; }
	start client2 "$BORE" local "$ORIGIN" --local-host "[::1]" --to "[::1]" --control-port "$CTL"
	wait_until 5 grep -q "listening at \[::1\]:" "$WORK/client2.log" || return 1
	PUB=$(sed -n 's/.*listening at \[::1\]:\([0-9]*\).*/\1/p' "$WORK/client2.log")
	out=$("$TCPKIT" many ::1 "$PUB" 10 100000) || { why "$out"; return 1; }
}

# Visitors outside --allow are closed at once; inside, they are served.
t_allow_visitors() {
	start_origin origin echo && start_server server --allow 10.0.0.0/8,::1 --allow 192.168.1.1 &&
		start_client client "$ORIGIN" || return 1
	t=$("$TCPKIT" waitclose 127.0.0.1 "$PUB") || return 1
	between "$t" 0 0.5 || { why "refused visitor closed after $t s"; return 1; }
	log_has server "refused 127.0.0.1:" && log_has server "not in --allow" || return 1
	stop_all
	start_origin origin echo && start_server server --allow 10.0.0.0/8 --allow 127.0.0.0/8 &&
		start_client client "$ORIGIN" || return 1
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 100000) || { why "$out"; return 1; }
}

# Clients outside --allow-control are refused before they can say anything.
t_allow_control() {
	start_server server --allow-control 10.0.0.0/8 || return 1
	start client "$BORE" local 9 --to 127.0.0.1 --control-port "$CTL"
	wait_exit "$LAST" 5 || return 1
	[ "$RC" = 1 ] && log_has server "refused control connection from 127.0.0.1:" || return 1
	stop_all
	start_origin origin echo && start_server server --allow-control 127.0.0.1/32 &&
		start_client client "$ORIGIN" || return 1
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 100000) || { why "$out"; return 1; }
}

t_allow_bad_usage() {
	expect_cli 2 "invalid value '10.0.0.0/33' for '--allow'" server --allow 10.0.0.0/33 &&
		expect_cli 2 "invalid value 'example.com' for '--allow-control'" \
			server --allow-control example.com &&
		expect_cli 2 "invalid value '::1/129' for '--allow'" server --allow 127.0.0.1,::1/129
}

# One visitor held open through the tunnel at $PUB until fd 5 is closed; its pid in HOLDER.
hold_one_visitor() {
	local fifo=$WORK/hold.in
	rm -f "$fifo"
	mkfifo "$fifo" || return 1
	# Opened read-write first, so that neither end's open() waits for the other.
	exec 5<>"$fifo"
	# Started here, not by start: an async command's stdin would be /dev/null.
	"$TCPKIT" hold 127.0.0.1 "$PUB" 1 <"$fifo" >"$WORK/holder.log" 2>&1 5>&- &
	HOLDER=$!
	PIDS+=("$HOLDER")
	wait_until 5 grep -q "ready 1" "$WORK/holder.log" || { why "visitor not relayed"; return 1; }
}

# SIGTERM: clients are told, new control connections refused, a live visitor may finish.
t_graceful_shutdown() {
	local t0 t1
	start_origin origin echo && start_server server --grace 10 && start_client client "$ORIGIN" &&
		hold_one_visitor || return 1
	kill -TERM "$SRV"
	wait_until 5 grep -q "server error: server shutting down" "$WORK/client.log" ||
		{ why "client not told"; return 1; }
	alive "$SRV" || { why "server did not wait for the live visitor"; return 1; }
	"$TCPKIT" waitclose 127.0.0.1 "$CTL" >/dev/null 2>&1 &&
		{ why "control port still accepting"; return 1; }
	t0=$(date +%s%N)
	exec 5>&-
	wait_exit "$HOLDER" 5 && [ "$RC" = 0 ] || { why "visitor: ${RC:-stuck}"; return 1; }
	wait_exit "$SRV" 5 || { why "server still running"; return 1; }
	t1=$(date +%s%N)
	[ "$RC" = 0 ] || { why "server exit $RC"; return 1; }
	[ $(((t1 - t0) / 1000000)) -lt 3000 ] || { why "server took $(((t1 - t0) / 1000000)) ms after the last visitor"; return 1; }
	log_has server "shut down"
}

# A visitor that outlives --grace is closed when it runs out.
t_graceful_shutdown_grace_ends() {
	start_origin origin echo && start_server server --grace 1 && start_client client "$ORIGIN" &&
		hold_one_visitor || return 1
	kill -TERM "$SRV"
	wait_exit "$SRV" 4 || { why "server did not stop after its grace"; return 1; }
	exec 5>&-
	[ "$RC" = 0 ] && log_has server "closing 1 connection still open"
}

# --dump shows each connection's bytes in hex and ASCII and a summary when it closes.
t_dump() {
	start_origin origin echo && start_server server && start_client client "$ORIGIN" --dump ||
		return 1
	out=$(printf 'hello dump\n' | "$TCPKIT" raw 127.0.0.1 "$PUB" 1000 | od -c | head -n 1)
	[[ $out == *"h   e   l   l   o"* ]] || { why "echo came back as: $out"; return 1; }
	wait_until 5 grep -q "conn 1 closed" "$WORK/client.log" || { why "no summary line"; return 1; }
	log_has client "> conn 1 visitor->service 11 bytes" &&
		log_has client "> conn 1 service->visitor 11 bytes" &&
		log_has client "68 65 6c 6c 6f 20 64 75 6d 70 0a" &&
		log_has client "hello dump." &&
		log_has client "conn 1 closed: 11 bytes visitor->service, 11 bytes service->visitor"
}


# A client whose port the server chose takes any port when a restarted server
# (another range) refuses the one it had; the tunnel serves again.
t_port_fallback() {
	local old
	start_origin origin echo && start_server server && start_client client "$ORIGIN" || return 1
	old=$PUB
	{ kill -9 "$SRV"; wait "$SRV"; } 2>/dev/null
	TUN_MIN=$((TUN_MAX + 1))
	TUN_MAX=$((TUN_MIN + 199))
	KEEP_PORTS=1 start_server server2 || return 1
	wait_until 15 log_count_is client "listening at" 2 || { why "client did not come back"; return 1; }
	PUB=$(sed -n 's/.*listening at 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/client.log" | tail -n 1)
	[ "$PUB" -ge "$TUN_MIN" ] && [ "$PUB" -le "$TUN_MAX" ] || { why "port $PUB, not in $TUN_MIN-$TUN_MAX"; return 1; }
	log_has client "port $old is not to be had; asking for any port" || return 1
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 100000) || { why "$out"; return 1; }
}

# The client looks --to up at every re-dial: when the name moves to another
# address (the hosts file of a network namespace of our own), it follows.
t_reresolve_on_reconnect() {
	local ns=bore-t$$-dns name=bore-test-server in rc
	add_netns "$ns"
	rc=$?
	[ $rc = 0 ] || return $rc
	in="ip netns exec $ns"
	mkdir -p "/etc/netns/$ns"
	echo "127.0.0.2 $name" >"/etc/netns/$ns/hosts"
	WRAP="$in" start_origin origin echo || return 1
	WRAP="$in" BIND=127.0.0.2 start_server server || return 1
	start client $in "$BORE" local "$ORIGIN" --local-host 127.0.0.1 --to "$name" --control-port "$CTL"
	CLI=$LAST
	wait_until 5 grep -q "listening at $name:" "$WORK/client.log" || { why "no tunnel"; return 1; }
	PUB=$(sed -n "s/.*listening at $name:\([0-9]*\).*/\1/p" "$WORK/client.log" | head -n 1)
	# Rewritten in place: ip netns exec bind-mounts this very file over /etc/hosts.
	echo "127.0.0.3 $name" >"/etc/netns/$ns/hosts"
	{ kill -9 "$SRV"; wait "$SRV"; } 2>/dev/null
	WRAP="$in" BIND=127.0.0.3 KEEP_PORTS=1 start_server server2 || return 1
	wait_until 15 log_count_is client "listening at $name:$PUB" 2 ||
		{ why "client did not come back on port $PUB"; return 1; }
	out=$($in "$TCPKIT" roundtrip 127.0.0.3 "$PUB" 100000) || { why "$out"; return 1; }
}

# A client whose link is cut without a FIN (a veth pair between two network
# namespaces of our own, set down) loses its port within about 30 s.
t_link_cut_frees_port() {
	local a=bore-t$$-srv b=bore-t$$-cli rc t0 t
	add_netns "$a" && add_netns "$b"
	rc=$?
	[ $rc = 0 ] || return $rc
	ip link add bore-t$$-a netns "$a" type veth peer name bore-t$$-b netns "$b" &&
		ip -n "$a" addr add 10.203.0.1/30 dev bore-t$$-a && ip -n "$b" addr add 10.203.0.2/30 dev bore-t$$-b &&
		ip -n "$a" link set bore-t$$-a up && ip -n "$b" link set bore-t$$-b up ||
		{ why "could not link the namespaces"; return 1; }
	WRAP="ip netns exec $b" start_origin origin echo || return 1
	# Tunnels listen on the server's loopback, where the test's visitor may go.
	WRAP="ip netns exec $a" BIND=10.203.0.1 start_server server --bind-tunnels 127.0.0.1 || return 1
	start client ip netns exec "$b" "$BORE" local "$ORIGIN" --local-host 127.0.0.1 --to 10.203.0.1 \
		--control-port "$CTL" --no-reconnect
	wait_until 10 grep -q "listening at 10.203.0.1:" "$WORK/client.log" || { why "no tunnel"; return 1; }
	PUB=$(sed -n 's/.*listening at 10\.203\.0\.1:\([0-9]*\).*/\1/p' "$WORK/client.log")
	out=$(ip netns exec "$a" "$TCPKIT" roundtrip 127.0.0.1 "$PUB" 100000) || { why "$out"; return 1; }
	ip -n "$b" link set bore-t$$-b down
	t0=$(h_now)
	wait_until 40 grep -qF "tunnel on port $PUB closed" "$WORK/server.log" ||
		{ why "port $PUB still held 40 s after the link was cut"; return 1; }
	t=$(h_elapsed "$t0" "$(h_now)")
	h_figure "port freed $t s after the link was cut"
	between "$t" 15 32 || { why "port freed $t s after the link was cut"; return 1; }
}
