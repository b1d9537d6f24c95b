# Cases for `bore local --proxy`: the client behind an HTTP CONNECT proxy (tinyproxy) or
# a SOCKS5 one (microsocks), with and without credentials, and each way a proxy can fail.
# Sourced by test.sh, which provides start, start_server, start_client, wait_until, why...

# A tinyproxy on loopback that lets CONNECT through to port $2 only ("any": every port),
# with Basic auth when $3 is USER:PASS given: sets PROXY (its port).
start_tinyproxy() {
	local name=$1 allow=$2 auth=${3:-}
	command -v tinyproxy >/dev/null 2>&1 ||
		{ why "needs tinyproxy (tests/deps.sh check installs it): skipped"; return 2; }
	PROXY=$(free_port) || return 1
	{
		echo "Port $PROXY"
		echo "Listen 127.0.0.1"
		echo "Timeout 30"
		echo "MaxClients 200"
		echo "LogLevel Info"
		echo "Allow 127.0.0.1"
		# Without ConnectPort lines tinyproxy allows CONNECT to any port.
		[ "$allow" = any ] || echo "ConnectPort $allow"
		[ -n "$auth" ] && echo "BasicAuth ${auth%%:*} ${auth#*:}"
	} >"$WORK/$name.conf"
	start "$name" tinyproxy -d -c "$WORK/$name.conf"
	wait_until 5 port_open "$PROXY" || { why "tinyproxy not up: $(cat "$WORK/$name.log")"; return 1; }
}

# A microsocks on loopback, with username/password when $2 is USER:PASS: sets PROXY.
start_microsocks() {
	local name=$1 auth=${2:-}
	command -v microsocks >/dev/null 2>&1 ||
		{ why "needs microsocks (tests/deps.sh check installs it): skipped"; return 2; }
	PROXY=$(free_port) || return 1
	if [ -n "$auth" ]; then
		start "$name" microsocks -i 127.0.0.1 -p "$PROXY" -u "${auth%%:*}" -P "${auth#*:}"
	else
		start "$name" microsocks -i 127.0.0.1 -p "$PROXY"
	fi
	wait_until 5 port_open "$PROXY" || { why "microsocks not up"; return 1; }
}

# True when something listens on loopback port $1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A fake proxy that answers every connection with the bytes in hex $2 (hex_of): sets PROXY.
start_fake_proxy() {
	start "$1" "$TCPKIT" serve answer "$2"
	wait_until 5 test -s "$WORK/$1.log" || { why "no fake proxy"; return 1; }
	PROXY=$(head -n 1 "$WORK/$1.log")
}

# A client that must fail at once: runs bore local against $CTL with "$@", and checks
# its exit status is $1 and its log has the fixed string $2.
client_fails() {
	local want=$1 text=$2 rc
	shift 2
	timeout 20 "$BORE" local 1 --local-host 127.0.0.1 --to 127.0.0.1 --control-port "$CTL" \
		"$@" >"$WORK/failing.log" 2>&1
	rc=$?
	[ "$rc" = "$want" ] || { why "exit status $rc, not $want: $(cat "$WORK/failing.log")"; return 1; }
	grep -qF -- "$text" "$WORK/failing.log" ||
		{ why "no '$text' in: $(cat "$WORK/failing.log")"; return 1; }
	[ "$(wc -l <"$WORK/failing.log")" = 1 ] || { why "not one line: $(cat "$WORK/failing.log")"; return 1; }
}

# Every connection goes through the HTTP proxy: the control connection and each
# visitor's own, every byte intact; the proxy saw them all.
t_proxy_http_tunnel() {
	local out
	start_tinyproxy tinyproxy any || return
	start_origin origin echo && start_server server -s hunter2 &&
		start_client client "$ORIGIN" -s hunter2 --proxy "http://127.0.0.1:$PROXY" || return 1
	out=$(TCPKIT_ECHO_FIRST=1 "$TCPKIT" many 127.0.0.1 "$PUB" 30 100000) || { why "$out"; return 1; }
	[ "$out" = "ok 30" ] || { why "$out"; return 1; }
	out=$(TCPKIT_ECHO_FIRST=1 "$TCPKIT" roundtrip 127.0.0.1 "$PUB" 4000000) || { why "$out"; return 1; }
	# The control connection, the pool's 6, and one per visitor (a claim, or a place refilled).
	wait_until 5 log_count_is tinyproxy "CONNECT 127.0.0.1:$CTL " 38 ||
		{ why "$(grep -c "CONNECT 127.0.0.1:$CTL " "$WORK/tinyproxy.log") CONNECTs in the proxy's log"; return 1; }
	alive "$SRV" && alive "$CLI"
}

# Basic auth: the right credentials (percent-encoded in the URL) pass, and they show
# neither in the process list nor in any log; wrong or missing ones are exit 78.
t_proxy_http_auth() {
	local out
	start_tinyproxy tinyproxy any alice:Wonder1and || return
	start_origin origin echo && start_server server || return 1
	BORE_LOG=trace start_client client "$ORIGIN" --proxy "http://alice:Wonder%31and@127.0.0.1:$PROXY" ||
		return 1
	out=$(TCPKIT_ECHO_FIRST=1 "$TCPKIT" many 127.0.0.1 "$PUB" 10 100000) || { why "$out"; return 1; }
	tr '\0' ' ' <"/proc/$CLI/cmdline" | grep -q "http://x\{18\}@127.0.0.1:$PROXY " ||
		{ why "credentials not wiped: $(tr '\0' ' ' <"/proc/$CLI/cmdline")"; return 1; }
	kill -USR1 "$CLI"
	wait_until 5 grep -q "tunnel 127.0.0.1" "$WORK/client.log" || true
	! grep -q "Wonder\|alice" "$WORK/client.log" || { why "credentials in the log"; return 1; }
	client_fails 78 "authentication failed" --proxy "http://alice:wrong@127.0.0.1:$PROXY" &&
		client_fails 78 "authentication required" --proxy "http://127.0.0.1:$PROXY" &&
		! grep -q wrong "$WORK/failing.log"
}

# SOCKS5 both ways: socks5:// is sent the address, socks5h:// the name to resolve.
t_proxy_socks5_tunnel() {
	local out
	start_microsocks socks || return
	start_origin origin echo && start_server server -s hunter2 || return 1
	start_client client "$ORIGIN" -s hunter2 --proxy "socks5://127.0.0.1:$PROXY" || return 1
	out=$(TCPKIT_ECHO_FIRST=1 "$TCPKIT" many 127.0.0.1 "$PUB" 20 100000) || { why "$out"; return 1; }
	[ "$out" = "ok 20" ] || { why "$out"; return 1; }
	# socks5h://: the name goes to the proxy; BORE_PROXY sets it.
	start client2 env BORE_PROXY="socks5h://127.0.0.1:$PROXY" "$BORE" local "$ORIGIN" \
		--local-host 127.0.0.1 --to localhost --control-port "$CTL" -s hunter2
	wait_until 5 grep -q "listening at" "$WORK/client2.log" || { why "socks5h client not up"; return 1; }
	out=$(sed -n 's/.*listening at localhost:\([0-9]*\).*/\1/p' "$WORK/client2.log")
	out=$(TCPKIT_ECHO_FIRST=1 "$TCPKIT" many 127.0.0.1 "$out" 20 100000) || { why "$out"; return 1; }
	[ "$out" = "ok 20" ] || { why "$out"; return 1; }
	alive "$SRV" && alive "$CLI"
}

# RFC 1929 username/password: right ones pass, wrong or missing ones are exit 78.
t_proxy_socks5_auth() {
	local out
	start_microsocks socks bob:b1ldr || return
	start_origin origin echo && start_server server || return 1
	start_client client "$ORIGIN" --proxy "socks5h://bob:b1ldr@127.0.0.1:$PROXY" || return 1
	out=$(TCPKIT_ECHO_FIRST=1 "$TCPKIT" many 127.0.0.1 "$PUB" 10 100000) || { why "$out"; return 1; }
	[ "$out" = "ok 10" ] || { why "$out"; return 1; }
	! grep -q "b1ldr" "$WORK/client.log" "/proc/$CLI/cmdline" || { why "password shows"; return 1; }
	client_fails 78 "authentication failed" --proxy "socks5://bob:wrong@127.0.0.1:$PROXY" &&
		client_fails 78 "authentication required" --proxy "socks5://127.0.0.1:$PROXY"
}

# The client came back through the proxy on public port $1, and carries bytes there.
back_on_port() {
	local out
	wait_until 15 log_count_is client "listening at" 2 || { why "client did not come back"; return 1; }
	[ "$(sed -n 's/.*listening at 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/client.log" | tail -n 1)" = "$1" ] ||
		{ why "port changed from $1"; return 1; }
	out=$(TCPKIT_ECHO_FIRST=1 "$TCPKIT" roundtrip 127.0.0.1 "$1" 1000000) || { why "$out"; return 1; }
	alive "$CLI"
}

# The server restarts: the client re-dials through the proxy and gets its port back;
# heartbeats keep the tunnel up meanwhile, as without a proxy.
t_proxy_server_restart() {
	local first
	start_tinyproxy tinyproxy any || return
	start_origin origin echo && start_server server &&
		start_client client "$ORIGIN" --heartbeat-timeout 1 --proxy "http://127.0.0.1:$PROXY" ||
		return 1
	first=$PUB
	# Past the heartbeat timeout, twice over: heartbeats come through.
	sleep 2.5
	! grep -q "no heartbeat" "$WORK/client.log" || { why "heartbeats lost through the proxy"; return 1; }
	{ kill -9 "$SRV"; wait "$SRV"; } 2>/dev/null
	wait_until 5 grep -q "reconnecting in" "$WORK/client.log" ||
		{ why "client did not start re-dialling"; return 1; }
	KEEP_PORTS=1 start_server server2 || return 1
	back_on_port "$first"
}

# The proxy goes away and comes back: the client re-dials as for a lost server, each
# failed attempt a warning, and gets its port back.
t_proxy_restart() {
	local first tp
	start_tinyproxy tinyproxy any || return
	tp=$LAST
	start_origin origin echo && start_server server &&
		start_client client "$ORIGIN" --proxy "http://127.0.0.1:$PROXY" || return 1
	first=$PUB
	{ kill -9 "$tp"; wait "$tp"; } 2>/dev/null
	wait_until 10 grep -q "WARN could not connect to proxy 127.0.0.1:$PROXY" "$WORK/client.log" ||
		{ why "no retried attempt against the dead proxy"; return 1; }
	start tinyproxy2 tinyproxy -d -c "$WORK/tinyproxy.conf"
	back_on_port "$first"
}

# Proxies that fail: unreachable, silent and unable to reach the server are retryable
# (exit 1 on a first connection); refusals and bad replies are exit 78; one line each.
t_proxy_failures() {
	local hdr i
	start_server server || return 1
	client_fails 1 "could not connect to proxy" --proxy "http://127.0.0.1:$(free_port)" || return 1
	start mute "$TCPKIT" serve mute
	wait_until 5 test -s "$WORK/mute.log" || return 1
	client_fails 1 "Connection timed out" --proxy "socks5://127.0.0.1:$(head -n 1 "$WORK/mute.log")" ||
		return 1
	# HTTP: garbage, and a header that never ends.
	start_fake_proxy garbage "$(hex_of %s "SSH-2.0-OpenSSH_9.2")0d0a0d0a" || return 1
	client_fails 78 "sent a malformed reply" --proxy "http://127.0.0.1:$PROXY" || return 1
	hdr="HTTP/1.1 200 OK"$'\r\n'
	for ((i = 0; i < 300; i++)); do hdr+="X-Padding: $i"$'\r\n'; done
	start_fake_proxy endless "$(hex_of %s "$hdr")" || return 1
	client_fails 78 "reply header over 4096 bytes" --proxy "http://127.0.0.1:$PROXY" || return 1
	# SOCKS5: an HTTP answer, and "not allowed by ruleset".
	start_fake_proxy socksgarbage "$(hex_of %s "HTTP/1.1 400 Bad Request")0d0a0d0a" || return 1
	client_fails 78 "sent a malformed reply" --proxy "socks5://127.0.0.1:$PROXY" || return 1
	start_fake_proxy notallowed 0500050200017f0000010000 || return 1
	client_fails 78 "connection not allowed by ruleset" --proxy "socks5://127.0.0.1:$PROXY" || return 1
	start_fake_proxy hostdown 0500050400017f0000010000 || return 1
	client_fails 1 "host unreachable" --proxy "socks5://127.0.0.1:$PROXY" || return 1
	# A real proxy that only lets CONNECT through to port 443 refuses ours (403)...
	start_tinyproxy only443 443 || return
	client_fails 78 "refused the connection to 127.0.0.1:$CTL" --proxy "http://127.0.0.1:$PROXY" ||
		return 1
	# ... and one that cannot reach the server answers 5xx: retryable.
	start_tinyproxy anyport any || return
	CTL=$(free_port) client_fails 1 "could not make the connection to 127.0.0.1:" --proxy "http://127.0.0.1:$PROXY" ||
		return 1
	# The web's proxy variables are not read: with them naming a dead proxy, bore goes straight.
	start_origin origin echo || return 1
	start client env HTTPS_PROXY="http://127.0.0.1:$(free_port)" ALL_PROXY="socks5://127.0.0.1:1" \
		"$BORE" local "$ORIGIN" --local-host 127.0.0.1 --to 127.0.0.1 --control-port "$CTL"
	wait_until 5 grep -q "listening at" "$WORK/client.log" || { why "client did not go straight"; return 1; }
	alive "$SRV"
}

# A proxy that passes the control connection but fails every data connection (a 502,
# a close, a reset) does not drive the client: 30 visitors cost 30 proxy connections
# (and the pool its 6),
# and at most two lines that name a visitor; the next one, 5 s on, counts the rest; once
# the proxy heals, visitors pass.
t_proxy_fails_visitors() {
	local how n
	local -A bad=() pub=()
	start_origin origin echo && start_server server || return 1
	for how in 502 close reset; do
		start "bad$how" "$TCPKIT" badproxy 127.0.0.1 "$CTL" "$how"
		bad[$how]=$LAST
		wait_until 5 test -s "$WORK/bad$how.log" || return 1
		start_client "client$how" "$ORIGIN" --proxy "http://127.0.0.1:$(head -n 1 "$WORK/bad$how.log")" ||
			return 1
		pub[$how]=$PUB
		"$TCPKIT" storm 127.0.0.1 "$PUB" 30 30 >/dev/null || { why "$how: storm failed"; return 1; }
	done
	for how in 502 close reset; do
		wait_until 5 log_count_is "bad$how" "conn " 37 ||
			{ why "$how: $(count_in_log "bad$how" "conn ") proxy connections, not 37"; return 1; }
	done
	# Bounded: no count grows past 30 visitors, the control connection and the pool's 6,
	# each of which holds its place 10 s after it failed.
	! wait_until 2 bash -c "cat $WORK/bad*.log | grep -c '^conn ' | grep -vqx 111" ||
		{ why "visitors retried through the failing proxies"; return 1; }
	for how in 502 close reset; do
		n=$(grep -cE " (ERROR|WARN) " "$WORK/client$how.log")
		[ "$n" -le 2 ] || { why "$how: $n error lines: $(head -n 3 "$WORK/client$how.log")"; return 1; }
		counted_after_more lines_counted_are "client$how" "proxy 127.0.0.1:" 36 \
			"$TCPKIT" storm 127.0.0.1 "${pub[$how]}" 1 1 ||
			{ why "$how: $(lines_counted "client$how" "proxy 127.0.0.1:") failures counted"; return 1; }
		grep -qE " (ERROR|WARN) connection [0-9a-f-]{36}: proxy 127.0.0.1:" "$WORK/client$how.log" ||
			{ why "$how: no line names the visitor: $(cat "$WORK/client$how.log")"; return 1; }
		kill -USR1 "${bad[$how]}"
		out=$("$TCPKIT" roundtrip 127.0.0.1 "${pub[$how]}" 100000) || { why "$how: healed: $out"; return 1; }
	done
	alive "$CLI"
}

# Bad --proxy values are usage errors that never repeat a password.
t_proxy_usage() {
	local v out
	for v in "ftp://u:topsecret@h:1" "http://u:topsecret@h" "http://u:topsecret@h:0" \
		"http://u:topsecret@h:99999" "socks5://u:top%zzsecret@h:1" "http://u:topsecret@::1:1" \
		"http://:topsecret@h:1" "http://u:topsecret"; do
		out=$("$BORE" local 1 --to 127.0.0.1 --proxy "$v" 2>&1)
		[ $? = 2 ] || { why "'$v' not a usage error: $out"; return 1; }
		! grep -q topsecret <<<"$out" || { why "'$v' repeated: $out"; return 1; }
		grep -q "invalid value.*'--proxy'" <<<"$out" || { why "'$v': $out"; return 1; }
	done
}

# A proxy's reason text reaches the log as well-formed UTF-8: a raw C1 byte (0x9b), bytes
# that are not UTF-8 (a stray, an overlong, a surrogate, a cut sequence) and a bidi
# override are each '?'; other UTF-8 stays; a --json line is valid UTF-8 JSON.
t_proxy_raw_text() {
	local hex
	start_server server || return 1
	hex="$(hex_of %s "HTTP/1.1 403 ")9b33316d20ff20c0af20eda08020e280ae20636166c3a9e2820d0a0d0a"
	start_fake_proxy rawtext "$hex" || return 1
	client_fails 78 "refused the connection to 127.0.0.1:$CTL: 403 ?31m ? ?? ??? ? café??" \
		--proxy "http://127.0.0.1:$PROXY" || return 1
	client_fails 78 "refused the connection" --json --proxy "http://127.0.0.1:$PROXY" || return 1
	python3 -c '
import json, sys
line = open(sys.argv[1], "rb").read().decode("utf-8")
assert "403 ?31m ? ?? ??? ? caf\u00e9??" in json.dumps(json.loads(line), ensure_ascii=False)
' "$WORK/failing.log" || { why "not valid UTF-8 JSON: $(od -c "$WORK/failing.log" | head)"; return 1; }
}

# SIGTERM while a CONNECT or a SOCKS5 exchange waits on the proxy ends it at once,
# with exit 0 and no word but "shutting down".
t_proxy_stop_silent() {
	local how t0
	for how in http socks5; do
		start "half$how" "$TCPKIT" serve say "$([ $how = http ] && echo "HTTP/1.1 2" || echo $'\x05')"
		wait_until 5 test -s "$WORK/half$how.log" || return 1
		start "client$how" "$BORE" local 9 --to 127.0.0.1 --control-port 1 \
			--proxy "$how://127.0.0.1:$(head -n 1 "$WORK/half$how.log")"
		CLI=$LAST
		wait_until 5 log_count_is "half$how" "conn 1" 1 || { why "$how: no connection"; return 1; }
		t0=$(date +%s%N)
		kill -TERM "$CLI"
		wait_exit "$CLI" 5 || { why "$how: still running 5 s after SIGTERM"; return 1; }
		[ "$RC" = 0 ] || { why "$how: exit status $RC"; return 1; }
		[ $(($(date +%s%N) - t0)) -lt 1000000000 ] || { why "$how: slow to stop"; return 1; }
		[ "$(grep -c . "$WORK/client$how.log")" = 1 ] && log_has "client$how" "shutting down" ||
			{ why "$how: $(cat "$WORK/client$how.log")"; return 1; }
	done
}

# HTTP proxies' replies as RFC 9112 allows them: bare LFs, and interim 1xx replies
# before the 200, pass; a status outside 100-599 is malformed (exit 78); endless 1xx
# replies end the attempt after a few.
t_proxy_http_lenient() {
	local reply hello cont i=0
	hello=$(hex_of %s '{"Hello":2000}')00
	cont=$(hex_of %s "HTTP/1.1 100 Continue")0d0a0d0a
	for reply in "$(hex_of %s "HTTP/1.1 200 OK")0a0a" \
		"${cont}$(hex_of %s "HTTP/1.1 102 Processing")0a0d0a$(hex_of %s "HTTP/1.1 200 OK")0d0a0d0a"; do
		i=$((i + 1))
		start_fake_proxy "lenient$i" "$reply$hello" || return 1
		start "client$i" "$BORE" local 9 --to 127.0.0.1 --control-port 1 \
			--proxy "http://127.0.0.1:$PROXY"
		wait_until 5 grep -q "listening at 127.0.0.1:2000" "$WORK/client$i.log" ||
			{ why "reply $i: $(cat "$WORK/client$i.log")"; return 1; }
		kill "$LAST"
	done
	local CTL=1
	start_fake_proxy status999 "$(hex_of %s "HTTP/1.1 999 Odd")0d0a0d0a" || return 1
	client_fails 78 "sent a malformed reply" --proxy "http://127.0.0.1:$PROXY" || return 1
	start_fake_proxy endless1xx "$cont$cont$cont$cont$cont" || return 1
	client_fails 1 "could not make the connection to 127.0.0.1:1: 100 Continue" \
		--proxy "http://127.0.0.1:$PROXY"
}

# A proxy's refusal is final at the first connection (exit 78); once the tunnel has
# been up, it is retried with the reconnect back-off like a lost server, each a warning,
# and the tunnel comes back on its port when the proxy lets it through again.
t_proxy_refusal_later() {
	local first
	start_server server || return 1
	start_fake_proxy refusing "$(hex_of %s "HTTP/1.1 407 Proxy Authentication Required")0d0a0d0a" ||
		return 1
	client_fails 78 "authentication required: 407" --proxy "http://127.0.0.1:$PROXY" || return 1
	start origin_proxy "$TCPKIT" badproxy 127.0.0.1 "$CTL" 407
	local bp=$LAST
	wait_until 5 test -s "$WORK/origin_proxy.log" || return 1
	start_origin origin echo &&
		start_client client "$ORIGIN" --proxy "http://127.0.0.1:$(head -n 1 "$WORK/origin_proxy.log")" ||
		return 1
	first=$PUB
	{ kill -9 "$SRV"; wait "$SRV"; } 2>/dev/null
	KEEP_PORTS=1 start_server server2 || return 1
	wait_until 10 log_count_is client "WARN proxy 127.0.0.1:" 2 ||
		{ why "refusals not retried: $(cat "$WORK/client.log")"; return 1; }
	grep -q "reconnecting in" "$WORK/client.log" && alive "$CLI" || { why "client gave up"; return 1; }
	kill -USR1 "$bp"
	back_on_port "$first"
}
