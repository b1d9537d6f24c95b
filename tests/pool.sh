# shellcheck shell=bash
# Visitor pools between a C client and a C server: Pool before Hello, Spare tokens on
# the control connection, Join on a new connection, Connection on a joined one.

# Frames of kind $2 ("Spare", "Join", "Accept", ...) that log $1 shows a server sent
# or received (BORE_LOG=trace).
frames_in_log() { grep -c "\"$2\"" "$WORK/$1.log"; }

# True once log $1 shows at least $3 frames of kind $2.
frames_at_least() { [ "$(frames_in_log "$1" "$2")" -ge "$3" ]; }

# True when every Spare the server of log $1 sent has been joined.
all_joined() { [ "$(frames_in_log "$1" Join)" = "$(grep -c 'sending {"Spare"' "$WORK/$1.log")" ]; }

# The frames that fake client output $1 holds, one a line.
frames_heard() { tr '\0' '\n' <"$WORK/$1.out"; }

# True once fake client output $1 holds at least $2 Spares.
spares_heard() { [ "$(frames_heard "$1" | grep -c '^{"Spare"')" -ge "$2" ]; }

# The tokens of the Spares that fake client output $1 holds, one a line.
spare_tokens() { frames_heard "$1" | sed -n 's/^{"Spare":"\([0-9a-f-]*\)"}$/\1/p'; }

# A fake client on the control port: Pool($2) then Hello(0), holding the tunnel for $3 ms,
# what it hears in $WORK/$1.out; its pid in LAST.
start_fake_pool_client() {
	local name=$1 n=$2 ms=$3
	: >"$WORK/$name.out"
	printf '{"Pool":%s}\0{"Hello":0}\0' "$n" | "$TCPKIT" raw 127.0.0.1 "$CTL" "$ms" \
		>"$WORK/$name.out" 2>"$WORK/$name.log" &
	LAST=$!
	PIDS+=("$LAST")
}

# Join with token $2 on a new connection that stays up to $3 ms, what it hears in
# $WORK/$1.out; in the background (its pid in LAST) unless $3 is 0.
join_with() {
	local name=$1 token=$2 ms=$3
	if [ "$ms" = 0 ]; then
		printf '{"Join":"%s"}\0' "$token" | "$TCPKIT" raw 127.0.0.1 "$CTL" 2000 >"$WORK/$name.out"
		return
	fi
	printf '{"Join":"%s"}\0' "$token" | "$TCPKIT" raw 127.0.0.1 "$CTL" "$ms" >"$WORK/$name.out" \
		2>/dev/null &
	LAST=$!
	PIDS+=("$LAST")
}

# With and without a secret, visitors go through the pool: the client opens its places
# ahead (one Join each), no visitor needs an Accept, every byte arrives (hashed), places
# used are offered again, a burst bigger than the pool takes the Connection and Accept
# path, and an idle tunnel opens no new connection.
t_pool_serves_visitors() {
	local secret joins out
	for secret in "" "-s poolsecret"; do
		# shellcheck disable=SC2086
		start_origin origin echo && BORE_LOG=trace start_server server $secret &&
			start_client client "$ORIGIN" --pool 3 $secret || return 1
		wait_until 5 frames_at_least server Join 3 ||
			{ why "${secret:-no secret}: $(frames_in_log server Join) joins"; return 1; }
		# One after another, each finds a place: a used one is offered again at once.
		for i in 1 2 3 4 5 6 7 8; do
			out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 200000) || { why "visitor $i: $out"; return 1; }
			wait_until 5 frames_at_least server Join $((3 + i)) || { why "place $i not joined again"; return 1; }
		done
		[ "$(frames_in_log server Accept)" = 0 ] ||
			{ why "${secret:-no secret}: visitors were claimed with Accept"; return 1; }
		# A burst of 40 outruns the refills of 3 places, however busy the machine is.
		out=$("$TCPKIT" many 127.0.0.1 "$PUB" 40 50000) || { why "burst: $out"; return 1; }
		[ "$(frames_in_log server Accept)" -gt 0 ] ||
			{ why "${secret:-no secret}: a burst of 40 all went through 3 places"; return 1; }
		# Used places come back; then the tunnel idles without opening anything (looked
		# at once: the secret changes nothing there).
		wait_until 5 all_joined server || { why "places not offered and joined again"; return 1; }
		if [ -z "$secret" ]; then
			sleep 1
			joins=$(frames_in_log server Join)
			sleep 3
			[ "$(frames_in_log server Join)" = "$joins" ] ||
				{ why "an idle tunnel opened connections: $joins then $(frames_in_log server Join) joins"; return 1; }
		fi
		out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 100000) || { why "after idle: $out"; return 1; }
		alive "$CLI" || return 1
		stop_all
	done
}

# Tokens no one was given get nothing: a guessed one, one replayed after its join, one
# of a tunnel closed since, a Join without the secret, and 300 Joins with made-up tokens
# at once. Each is refused in a rate-limited line; no visitor's byte reaches a stranger,
# the tunnel's own joined connection gets its visitor, and fds and threads come back.
t_pool_tokens_refused() {
	local token dead base out i owner member visitor
	start_origin origin echo && BORE_LOG=trace start_server server || return 1
	base=$(fds_threads "$SRV")
	# A tunnel whose tokens are known here, and one closed since.
	start_fake_pool_client gone 2 400
	wait "$LAST"
	dead=$(spare_tokens gone | head -n 1)
	[ -n "$dead" ] || { why "no Spare for a Pool: $(frames_heard gone)"; return 1; }
	start_fake_pool_client owner 2 15000
	owner=$LAST
	wait_until 5 spares_heard owner 2 || { why "no Spares: $(frames_heard owner)"; return 1; }
	token=$(spare_tokens owner | head -n 1)
	PUB=$(frames_heard owner | sed -n 's/^{"Hello":\([0-9]*\)}$/\1/p')
	join_with member "$token" 10000
	member=$LAST
	wait_until 5 grep -q "received {\"Join\":\"$token\"}" "$WORK/server.log" || return 1
	join_with replay "$token" 0
	join_with guessed "$(cat /proc/sys/kernel/random/uuid)" 0
	join_with late "$dead" 0
	for i in replay guessed late; do
		[ ! -s "$WORK/$i.out" ] || { why "$i join heard: $(tr '\0' ' ' <"$WORK/$i.out")"; return 1; }
	done
	[ "$(count_in_log server "invalid pool token")" = 3 ] ||
		{ why "$(count_in_log server "invalid pool token") refusals logged, not 3"; return 1; }
	# The visitor goes to the connection that joined, and to no one else.
	printf for-the-owner | "$TCPKIT" raw 127.0.0.1 "$PUB" 3000 >/dev/null 2>&1 &
	visitor=$!
	PIDS+=("$visitor")
	wait_until 5 grep -qa "for-the-owner" "$WORK/member.out" ||
		{ why "the joined connection did not carry the visitor: $(tr '\0' ' ' <"$WORK/member.out")"; return 1; }
	grep -qa '{"Connection":"' "$WORK/member.out" || { why "no Connection before the bytes"; return 1; }
	seq 300 | xargs -P 60 -I{} sh -c "printf '{\"Join\":\"%s\"}\\0' \$(cat /proc/sys/kernel/random/uuid) |
		'$TCPKIT' raw 127.0.0.1 $CTL 3000 | head -c 1 | grep -q . && echo heard" >"$WORK/flood.out"
	[ ! -s "$WORK/flood.out" ] || { why "a made-up token heard something"; return 1; }
	# 32 lines per 5 s, the next one counting the rest: a flood of some seconds logs a few dozen.
	[ "$(count_in_log server "invalid pool token")" -le 100 ] ||
		{ why "$(count_in_log server "invalid pool token") lines for 303 bad tokens"; return 1; }
	kill "$owner" "$member" "$visitor" 2>/dev/null
	wait_until 5 fds_threads_are "$SRV" "$base" || { why "server fds/threads $base -> $(fds_threads "$SRV")"; return 1; }
	stop_all
	# With a secret, a Join is refused before its token is even read.
	start_server server -s poolsecret || return 1
	join_with stranger "$token" 0
	grep -qa "server requires secret" "$WORK/stranger.out" ||
		{ why "a Join without the secret: $(tr '\0' ' ' <"$WORK/stranger.out")"; return 1; }
}

# A server that closes at the Pool it does not know (as the Rust bore does) is asked again
# at once with a plain Hello, once, and never sent a Pool again: here that closes too, and
# the client gives up with one error, as for any server that closes at once.
t_pool_fallback() {
	local origin
	start_origin origin echo && origin=$ORIGIN && start_origin closer close || return 1
	start client "$BORE" local "$origin" --local-host 127.0.0.1 --to 127.0.0.1 \
		--control-port "$ORIGIN" --no-reconnect
	RC=
	wait_exit "$LAST" 5 && [ "$RC" = 1 ] || { why "exit ${RC:-none}: $(cat "$WORK/client.log")"; return 1; }
	[ "$(count_in_log client "server has no visitor pools")" = 1 ] &&
		[ "$(grep -c " ERROR " "$WORK/client.log")" = 1 ] || { why "$(cat "$WORK/client.log")"; return 1; }
}
