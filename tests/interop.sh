#!/usr/bin/env bash
# The four pairings of a C and a Rust bore server and client, each with and without a
# secret: the tunnel comes up, a 4 MiB echo (SHA-256 checked), 20 visitors at once and
# 2,000 round trips go through, and a wrong secret gets "invalid secret". Between C peers
# visitors go through the pool; a C client falls back from a Rust server, and a C server
# sends a Rust client no pool message.
#
# Usage: make interop BORE_RS=/path/to/rust/bore   (bore 0.5.x or 0.6.0, built from its
# source). The Rust bore has no --control-port: its server takes 7835, which must be free,
# and binds 0.0.0.0; everything here connects to 127.0.0.1 only.
set -u
cd "$(dirname "$0")/.." || exit 1
. tests/lib.sh

BORE=./bore
TCPKIT=./tests/tcpkit
RS=${BORE_RS:-}
[ -n "$RS" ] && [ -x "$RS" ] || { echo "interop: set BORE_RS to a Rust bore binary" >&2; exit 2; }
# True while something takes connections on 127.0.0.1:7835.
listening() { (exec 3<>/dev/tcp/127.0.0.1/7835) 2>/dev/null; }
! listening || { echo "interop: port 7835 is busy" >&2; exit 2; }
WORK=$(mktemp -d /tmp/bore-interop.XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$WORK"' EXIT
PASS=0
FAIL=0
export TCPKIT_ECHO_FIRST=1  # the Rust bore ends both ways at the first FIN

not_listening() { ! listening; }

# Log $1 without the Rust bore's colours.
plain_log() { sed 's/\x1b\[[0-9;]*m//g' "$WORK/$1.log"; }

# The binary and arguments of side $1 (c or rs) for subcommand $2.
side() {
	if [ "$1" = c ]; then
		echo "$BORE $2"
	else
		echo "$RS $2"
	fi
}

# One pairing: server side $1, client side $2, secret $3 (empty: none); why it failed in why.
pairing() {
	local srv=$1 cli=$2 secret=$3 sargs=() out pub origin
	[ -n "$secret" ] && sargs=(-s "$secret")
	start origin "$TCPKIT" serve echo
	wait_until 5 test -s "$WORK/origin.log" || return 1
	origin=$(head -n 1 "$WORK/origin.log")
	# shellcheck disable=SC2046
	BORE_LOG=trace start server $(side "$srv" server) --min-port 21000 --max-port 21099 "${sargs[@]}"
	wait_until 5 listening || { why="server not up"; return 1; }
	# shellcheck disable=SC2046
	start client $(side "$cli" local) "$origin" --local-host 127.0.0.1 --to 127.0.0.1 "${sargs[@]}"
	wait_until 5 bash -c "sed 's/\x1b\[[0-9;]*m//g' '$WORK/client.log' | grep -q 'listening at'" ||
		{ why="no tunnel (origin '$origin'): $(plain_log client | tail -n 2 | tr '\n' ' ')"; return 1; }
	pub=$(plain_log client | sed -n 's/.*listening at 127\.0\.0\.1:\([0-9]*\).*/\1/p' | head -n 1)
	sleep 0.5
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$pub" 4194304) || why="4 MiB echo: $out"
	[ -z "$why" ] && { out=$("$TCPKIT" many 127.0.0.1 "$pub" 20 100000) || why="20 at once: $out"; }
	[ -z "$why" ] && { out=$("$TCPKIT" pingpong 127.0.0.1 "$pub" 2000) || why="round trips: $out"; }
	if [ -z "$why" ] && [ "$srv$cli" = cc ] && ! plain_log server | grep -q 'received {"Join"'; then
		why="no visitor went through the pool"
	fi
	if [ -z "$why" ] && [ "$srv$cli" = rsc ] &&
		[ "$(plain_log client | grep -c 'server has no visitor pools')" != 1 ]; then
		why="no fallback from the Rust server"
	fi
	if [ -z "$why" ] && [ "$srv$cli" = crs ] && plain_log server | grep -q '"Spare"'; then
		why="a Spare sent to the Rust client"
	fi
	if [ -z "$why" ] && [ -n "$secret" ]; then
		# shellcheck disable=SC2046
		out=$(timeout 10 $(side "$cli" local) "$origin" --local-host 127.0.0.1 --to 127.0.0.1 \
			-s wrong-secret 2>&1 | sed 's/\x1b\[[0-9;]*m//g')
		grep -q "invalid secret" <<<"$out" || why="wrong secret: $(tail -n 1 <<<"$out")"
	fi
	[ -z "$why" ]
}

# Stop what a pairing started, and wait for port 7835 to be free again.
stop_pairing() {
	local p
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null
	done
	wait 2>/dev/null
	PIDS=()
	wait_until 5 not_listening
}

make -s bore tests/tcpkit || exit 1
for srv in c rs; do
	for cli in c rs; do
		for secret in "" "interop-secret"; do
			name="server $srv, client $cli, $([ -n "$secret" ] && echo "a secret" || echo "no secret")"
			why=""
			if pairing "$srv" "$cli" "$secret"; then
				echo "ok   $name"
				PASS=$((PASS + 1))
			else
				echo "FAIL $name"
				echo "    $why"
				FAIL=$((FAIL + 1))
			fi
			stop_pairing
		done
	done
done
echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
