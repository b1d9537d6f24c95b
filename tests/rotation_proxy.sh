# Cases for the PROXY protocol header and secret rotation; sourced by test.sh.

# ---- PROXY protocol ------------------------------------------------------

# Lowercase hex of the bytes printf makes of its arguments.
hex_of() { printf "$@" | od -An -v -tx1 | tr -d ' \n'; }

# Hex of an IP address's bytes: 4 for IPv4, 16 for IPv6 (only the forms used here).
ip_hex() {
	case $1 in
	::1) echo 00000000000000000000000000000001 ;;
	*) printf '%02x' ${1//./ } ;;
	esac
}

# One visitor from $3 through a tunnel whose server sends PROXY protocol $1
# and listens on $2; the service must see exactly the spec's header.
proxy_visit() {
	local version=$1 ip=$2 from=$3 family sport line want out
	start_origin origin proxyhdr || return 1
	BIND=$ip start_server server --proxy-protocol "$version" || return 1
	start client "$BORE" local "$ORIGIN" --local-host 127.0.0.1 --to "$ip" --control-port "$CTL"
	wait_until 5 grep -q "listening at" "$WORK/client.log" || return 1
	PUB=$(sed -n 's/.*listening at .*:\([0-9]*\)$/\1/p' "$WORK/client.log" | head -n 1)
	out=$(TCPKIT_FROM=$from "$TCPKIT" roundtrip "$ip" "$PUB" 100000) || { why "$out"; return 1; }
	wait_until 5 grep -q "^header " "$WORK/origin.log" || { why "service saw no header"; return 1; }
	# The visitor's port, from the server's log.
	sport=$(sed -n "s/.*new connection from \[*[0-9a-f.:]*\]*:\([0-9]*\) on port $PUB.*/\1/p" \
		"$WORK/server.log")
	[ -n "$sport" ] || { why "no visitor port in the server's log"; return 1; }
	family=TCP4
	[[ $ip == *:* ]] && family=TCP6
	if [ "$version" = v1 ]; then
		want=$(hex_of 'PROXY %s %s %s %s %s\r\n' "$family" "$from" "$ip" "$sport" "$PUB")
	else
		want=0d0a0d0a000d0a515549540a21
		if [ $family = TCP4 ]; then want+=11000c; else want+=210024; fi
		want+=$(ip_hex "$from")$(ip_hex "$ip")$(printf '%04x%04x' "$sport" "$PUB")
	fi
	line=$(grep '^header ' "$WORK/origin.log")
	[ "$line" = "header $want" ] || { why "$version $family: got '$line', wanted 'header $want'"; return 1; }
	# The header is not the visitor's: the byte counts are the visitor's alone.
	log_has server "bytes visitor->service" &&
		log_has server "closed: 100000 bytes visitor->service, 100000 bytes service->visitor"
}

# --proxy-protocol v1 and v2 over IPv4 (a visitor from 127.0.0.2) and IPv6.
t_proxy_protocol() {
	local v
	for v in v1 v2; do
		proxy_visit $v 127.0.0.1 127.0.0.2 || return 1
		stop_all
		proxy_visit $v ::1 ::1 || return 1
		stop_all
	done
	expect_cli 2 "^bore: invalid value 'v3' for '--proxy-protocol': use v1 or v2" \
		server --proxy-protocol v3 || return 1
	[ "$(complete_line bore server --proxy-protocol "")" = $'v1\nv2' ] ||
		{ why "completion of --proxy-protocol: $(complete_line bore server --proxy-protocol "")"; return 1; }
}

# The header builder against the spec's layout, without the network.
t_proxy_header_bytes() { unit_group proxy; }

# ---- Secret rotation -----------------------------------------------------

# A client with secret $2 (more options after it) that the server must refuse: exit 78.
refused_client() {
	local name=$1
	shift
	start "$name" "$BORE" local 9 --to 127.0.0.1 --control-port "$CTL" "$@"
	wait_exit "$LAST" 5 || { why "$name was not refused"; return 1; }
	[ "$RC" = 78 ] || { why "$name: exit status $RC"; return 1; }
	log_has "$name" "server error: invalid secret"
}

# A file of several secrets (CRLF, empty lines): a client with any of them is
# served, one with another is refused; a client's file gives its first line only.
t_secret_rotation() {
	printf 'rotation-alpha\r\n\n\nrotation-bravo\n' >"$WORK/server.secret"
	printf 'rotation-charlie\nrotation-alpha\n' >"$WORK/client.secret"
	start_origin origin echo && start_server server --secret-file "$WORK/server.secret" || return 1
	start_client alpha "$ORIGIN" -s rotation-alpha || { why "no tunnel with the first secret"; return 1; }
	out=$("$TCPKIT" many 127.0.0.1 "$PUB" 10 100000) || { why "alpha: $out"; return 1; }
	start_client bravo "$ORIGIN" -s rotation-bravo || { why "no tunnel with the second secret"; return 1; }
	out=$("$TCPKIT" many 127.0.0.1 "$PUB" 10 100000) || { why "bravo: $out"; return 1; }
	refused_client charlie -s rotation-charlie || return 1
	# A bare "rotation-alpha\r" is not the secret either: CR is stripped, not kept.
	refused_client cr -s $'rotation-alpha\r' || return 1
	refused_client first_line --secret-file "$WORK/client.secret" || return 1
	log_count_is server "server handshake failed: invalid secret" 3 ||
		{ why "server refused $(count_in_log server "invalid secret") times, not 3"; return 1; }
}

# SIGHUP re-reads the file: a tunnel already up (with a secret kept) stays up and
# serving, even a visitor in mid-stream, the removed secret is refused and the
# added one served; a missing or empty file keeps the keys before; a server
# without a secret file has nothing to reload.
t_secret_reload() {
	local f=$WORK/server.secret
	printf 'reload-old\nreload-kept\n' >"$f"
	start_origin origin echo && WRAP="env BORE_LOG=debug" start_server server --secret-file "$f" ||
		return 1
	start_client old "$ORIGIN" -s reload-kept || { why "no tunnel with the kept secret"; return 1; }
	local old_pub=$PUB old_pid=$CLI
	# A visitor in the middle of a long exchange when the keys change.
	start stream "$TCPKIT" roundtrip 127.0.0.1 "$old_pub" $((256 << 20))
	local stream=$LAST
	# The stream's data connection is authenticated before the keys change.
	wait_until 5 grep -q "DEBUG forwarding connection" "$WORK/server.log" ||
		{ why "the long exchange was not forwarded"; return 1; }
	printf 'reload-kept\n\nreload-new\n' >"$f"
	kill -HUP "$SRV"
	wait_until 5 grep -qF "secret file reloaded: 2 secrets" "$WORK/server.log" ||
		{ why "no reload logged"; return 1; }
	refused_client removed -s reload-old || return 1
	start_client new "$ORIGIN" -s reload-new || { why "no tunnel with the added secret"; return 1; }
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 1000000) || { why "new: $out"; return 1; }
	# The old tunnel: the same client, never re-dialled, still relaying.
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$old_pub" 1000000) || { why "old tunnel: $out"; return 1; }
	kill -0 "$old_pid" 2>/dev/null && log_count_is old "listening at" 1 ||
		{ why "the old tunnel's client re-dialled or exited"; return 1; }
	wait_exit "$stream" 60 || { why "the long exchange did not end"; return 1; }
	[ "$RC" = 0 ] && grep -q "^ok $((256 << 20)) " "$WORK/stream.log" ||
		{ why "long exchange across the reload: $(cat "$WORK/stream.log")"; return 1; }
	# An empty file, then a missing one: warned about, and the keys stay.
	printf '\n\r\n' >"$f"
	kill -HUP "$SRV"
	wait_until 5 grep -qF "WARN secret file $f is empty; keeping the secrets loaded before" \
		"$WORK/server.log" || { why "no warning of the empty file"; return 1; }
	rm -f "$f"
	kill -HUP "$SRV"
	wait_until 5 grep -qF "WARN could not read secret file $f: No such file or directory;"\
" keeping the secrets loaded before" "$WORK/server.log" || { why "no warning of the missing file"; return 1; }
	start_client new2 "$ORIGIN" -s reload-new || { why "the kept keys refused reload-new"; return 1; }
	refused_client removed2 -s reload-old || return 1
	log_count_is server "secret file reloaded" 1 || { why "a failed reload was logged as done"; return 1; }
	stop_all
	# With --secret, or none: nothing to reload, and the server goes on.
	for args in "-s reload-arg" ""; do
		# shellcheck disable=SC2086
		start_server server $args || return 1
		kill -HUP "$SRV"
		wait_until 5 grep -qF "INFO SIGHUP: no secret file, nothing to reload" "$WORK/server.log" ||
			{ why "server $args: no line for SIGHUP"; return 1; }
		start_client c "$ORIGIN" $args || { why "server $args: no tunnel after SIGHUP"; return 1; }
		stop_all
	done
}

# Handshakes while the key set is replaced again and again (run under TSan too):
# every visitor's data connection authenticates, and none is refused.
t_reload_during_handshakes() {
	local f=$WORK/server.secret many reloads=0
	printf 'hup-alpha\nhup-bravo\n' >"$f"
	start_origin origin echo && start_server server --secret-file "$f" &&
		start_client client "$ORIGIN" -s hup-bravo || return 1
	start many "$TCPKIT" many 127.0.0.1 "$PUB" 100 20000
	many=$LAST
	while kill -0 "$many" 2>/dev/null; do
		# Swap the order of the lines, atomically: either set accepts the client.
		if [ $((reloads % 2)) = 0 ]; then
			printf 'hup-bravo\nhup-alpha\n' >"$f.new"
		else
			printf 'hup-alpha\r\nhup-bravo\n' >"$f.new"
		fi
		mv "$f.new" "$f"
		kill -HUP "$SRV" 2>/dev/null
		reloads=$((reloads + 1))
	done
	wait "$many"
	grep -qx "ok 100" "$WORK/many.log" || { why "visitors: $(cat "$WORK/many.log")"; return 1; }
	wait_until 5 grep -qF "secret file reloaded: 2 secrets" "$WORK/server.log" ||
		{ why "no reload logged"; return 1; }
	[ "$(count_in_log server "secret file reloaded")" -gt 1 ] ||
		{ why "only $(count_in_log server "secret file reloaded") reloads"; return 1; }
	! grep -qF "invalid secret" "$WORK/server.log" || { why "a handshake was refused"; return 1; }
	# And the server still takes new clients and visitors.
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 100000) || { why "$out"; return 1; }
}
