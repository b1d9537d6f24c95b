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
