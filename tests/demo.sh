#!/usr/bin/env bash
# A loopback demo: a bore server, an echo service exposed through bore local,
# and one visitor whose words come back through the tunnel.
set -u
cd "$(dirname "$0")/.." || exit 1
make -s bore tests/tcpkit || exit 1

pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
tmp=$(mktemp -d)
# Made now: the waits below read them before the background redirections may have.
: >"$tmp/server"
: >"$tmp/client"
: >"$tmp/address"

. tests/lib.sh

./tests/tcpkit serve echo >"$tmp/echo" & pids+=($!)
wait_until 5 test -s "$tmp/echo" || exit 1
echo_port=$(head -n 1 "$tmp/echo")
ctl=$(./tests/tcpkit freeport 10000 19999) || exit 1

echo "\$ bore server --bind-addr 127.0.0.1 --control-port $ctl --min-port 20000 --max-port 30000"
./bore server --bind-addr 127.0.0.1 --control-port "$ctl" --min-port 20000 --max-port 30000 \
	2>"$tmp/server" & pids+=($!)
wait_until 5 grep -q "server listening" "$tmp/server" || { cat "$tmp/server"; exit 1; }
echo "\$ bore local $echo_port --to 127.0.0.1 --control-port $ctl   # an echo service on port $echo_port"
./bore local "$echo_port" --to 127.0.0.1 --control-port "$ctl" >"$tmp/address" 2>"$tmp/client" &
pids+=($!)
wait_until 5 test -s "$tmp/address" || { cat "$tmp/client"; exit 1; }
sed 's/^/  [local]  /' "$tmp/client"
# Its one line on stdout, for scripts: the public address and the local one.
sed 's/^/  [local stdout] /' "$tmp/address"
read -r public _ <"$tmp/address"
port=${public##*:}

echo "\$ echo 'hello through bore' | (a visitor connects to 127.0.0.1:$port)"
printf 'hello through bore\n' | ./tests/tcpkit raw 127.0.0.1 "$port" 500 | sed 's/^/  [visitor got] /'
echo "server log:"
sed 's/^/  [server] /' "$tmp/server"
