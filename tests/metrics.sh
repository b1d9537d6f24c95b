# The server's --metrics: what it serves (checked by promtool and by value), a real
# Prometheus scraping it, and scrapers that misbehave.
# Sourced by test.sh, which provides start, start_server, start_client, wait_until, why...

# A free port for a listener of our own, not $CTL (free_port picks at random).
other_port() {
	local p
	p=$(free_port) || return 1
	while [ "$p" = "$CTL" ] || [ "$p" = "${MPORT:-}" ]; do p=$(free_port) || return 1; done
	echo "$p"
}

# A server as start_server makes it, with --metrics on loopback: sets MPORT as well.
start_metrics_server() {
	local name=$1
	shift
	CTL=$(free_port) && MPORT= && MPORT=$(other_port) || return 1
	TUN_MIN=$((20000 + (RANDOM % 60) * 200))
	TUN_MAX=$((TUN_MIN + 199))
	KEEP_PORTS=1 start_server "$name" --metrics "127.0.0.1:$MPORT" "$@"
}

# Send request line $1 (default GET /metrics) to the metrics port ($2, default 127.0.0.1):
# the reply, CRs dropped, in $WORK/reply; its body alone in $WORK/body.
scrape() {
	printf '%s HTTP/1.1\r\nHost: bore\r\nUser-Agent: test\r\n\r\n' "${1:-GET /metrics}" |
		"$TCPKIT" raw "${2:-127.0.0.1}" "$MPORT" 5000 | tr -d '\r' >"$WORK/reply" || return 1
	sed '1,/^$/d' "$WORK/reply" >"$WORK/body"
}

# The value of the sample named $1 (with its labels, as written) in the last scrape's body.
sample() { awk -v n="$1" '$1 == n { print $2 }' "$WORK/body"; }

# True once a scrape shows every "NAME VALUE" pair given; else the last body is kept.
samples_are() {
	local pair
	scrape || return 1
	for pair in "$@"; do
		[ "$(sample "${pair% *}")" = "${pair##* }" ] || return 1
	done
}

# Like samples_are, waiting up to 5 s, then saying what differed.
samples_settle() {
	local pair
	wait_until 5 samples_are "$@" && return 0
	for pair in "$@"; do
		[ "$(sample "${pair% *}")" = "${pair##* }" ] ||
			why "${pair% *} is '$(sample "${pair% *}")', wanted ${pair##* }"
	done
	return 1
}

# promtool must be there (Debian's prometheus package), else the case is skipped.
need_promtool() {
	command -v "${1:-promtool}" >/dev/null 2>&1 && return 0
	why "needs ${1:-promtool} (Debian: prometheus; tests/deps.sh check installs it): skipped"
	return 2
}

# Every series, with the right values: a visitor relayed (bytes checked by the round trip's
# hash), one held open (counted while relayed), refusals of each kind provoked; counters
# keep their values once the tunnel is gone.
t_metrics_values() {
	local t0 hold
	need_promtool || return 2
	t0=$(date +%s)
	start_origin origin echo && start_metrics_server server -s hunter2 --allow 127.0.0.1/32 &&
		start_client client "$ORIGIN" -s hunter2 --pool 0 || return 1
	scrape || { why "no reply"; return 1; }
	head -n 1 "$WORK/reply" | grep -qxF "HTTP/1.1 200 OK" &&
		grep -qxF "Content-Type: text/plain; version=0.0.4; charset=utf-8" "$WORK/reply" ||
		{ why "reply: $(head -n 5 "$WORK/reply" | tr '\n' '|')"; return 1; }
	promtool check metrics <"$WORK/body" >"$WORK/promtool.log" 2>&1 ||
		{ why "promtool: $(tr '\n' ' ' <"$WORK/promtool.log")"; return 1; }
	between "$(sample process_start_time_seconds)" "$t0" "$(date +%s)" ||
		{ why "start time $(sample process_start_time_seconds), not from $t0 on"; return 1; }
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 100000) || { why "$out"; return 1; }
	# Refused: a visitor outside --allow, a wrong secret, a port outside the range.
	TCPKIT_FROM=127.0.0.2 "$TCPKIT" waitclose 127.0.0.1 "$PUB" >/dev/null || return 1
	start wrong "$BORE" local 9 --to 127.0.0.1 --control-port "$CTL" -s hunter3
	wait_exit "$LAST" 5 && [ "$RC" = 78 ] || { why "wrong secret: ${RC:-still running}"; return 1; }
	start range "$BORE" local 9 --to 127.0.0.1 --control-port "$CTL" -s hunter2 --port $((TUN_MAX + 1))
	wait_exit "$LAST" 5 && [ "$RC" = 78 ] || { why "port out of range: ${RC:-still running}"; return 1; }
	rm -f "$WORK/hold.fifo"
	mkfifo "$WORK/hold.fifo" || return 1
	start hold bash -c 'exec "$0" hold 127.0.0.1 "$1" 1 <"$2"' "$TCPKIT" "$PUB" "$WORK/hold.fifo"
	hold=$LAST
	exec 5<>"$WORK/hold.fifo"
	wait_until 5 grep -q "^ready 1" "$WORK/hold.log" || { why "visitor not relayed"; return 1; }
	samples_settle "bore_tunnels 1" "bore_visitors 1" "bore_visitors_total 2" \
		'bore_relayed_bytes_total{direction="in"} 100004' \
		'bore_relayed_bytes_total{direction="out"} 100004' "bore_control_connections 2" \
		'bore_refused_total{reason="auth"} 1' 'bore_refused_total{reason="allow"} 1' \
		'bore_refused_total{reason="port"} 1' 'bore_refused_total{reason="max-conns"} 0' \
		'bore_refused_total{reason="allow-control"} 0' 'bore_refused_total{reason="startups"} 0' \
		'bore_refused_total{reason="max-sessions"} 0' || return 1
	promtool check metrics <"$WORK/body" >"$WORK/promtool.log" 2>&1 ||
		{ why "promtool: $(tr '\n' ' ' <"$WORK/promtool.log")"; return 1; }
	# The client goes while its visitor is relayed: the counters keep every byte.
	{ kill -9 "$CLI"; wait "$CLI"; } 2>/dev/null
	exec 5>&-
	wait_exit "$hold" 5 || { why "held visitor not closed"; return 1; }
	samples_settle "bore_tunnels 0" "bore_visitors 0" "bore_visitors_total 2" \
		'bore_relayed_bytes_total{direction="in"} 100004' \
		'bore_relayed_bytes_total{direction="out"} 100004' "bore_control_connections 0"
}

# A counter read while 200 visitors are relayed never goes down, and ends at their bytes.
t_metrics_under_load() {
	local many last=0 now
	start_origin origin echo && start_metrics_server server && start_client client "$ORIGIN" ||
		return 1
	start many "$TCPKIT" many 127.0.0.1 "$PUB" 200 65536
	many=$LAST
	while alive "$many"; do
		scrape || { why "scrape failed under load"; return 1; }
		now=$(sample 'bore_relayed_bytes_total{direction="out"}')
		[ -n "$now" ] && [ "$now" -ge "$last" ] || { why "bytes out went $last -> '$now'"; return 1; }
		last=$now
	done
	wait "$many"
	log_has many "ok 200" || return 1
	samples_settle "bore_visitors 0" "bore_visitors_total 200" \
		"bore_relayed_bytes_total{direction=\"in\"} $((200 * 65536))" \
		"bore_relayed_bytes_total{direction=\"out\"} $((200 * 65536))"
}

# A real Prometheus scrapes bore on loopback: its own query API says up is 1, and has our series.
t_metrics_prometheus() {
	local web
	need_promtool prometheus || return 2
	start_origin origin echo && start_metrics_server server && start_client client "$ORIGIN" ||
		return 1
	web=$(other_port) || return 1
	mkdir -p "$WORK/prom"
	printf 'global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: bore\n    static_configs:\n      - targets: ["127.0.0.1:%s"]\n' \
		"$MPORT" >"$WORK/prom/prometheus.yml"
	promtool check config "$WORK/prom/prometheus.yml" >/dev/null 2>&1 || { why "bad config"; return 1; }
	start prometheus prometheus --config.file="$WORK/prom/prometheus.yml" \
		--storage.tsdb.path="$WORK/prom/data" --web.listen-address="127.0.0.1:$web"
	prom_query() {
		printf 'GET /api/v1/query?query=%s HTTP/1.0\r\n\r\n' "$1" |
			"$TCPKIT" raw 127.0.0.1 "$web" 5000 >"$WORK/query" 2>/dev/null &&
			grep -qF "$2" "$WORK/query"
	}
	wait_until 60 prom_query up '"job":"bore"},"value":[' ||
		{ why "Prometheus has no up for bore: $(tail -c 300 "$WORK/query" 2>/dev/null)"; return 1; }
	wait_until 10 prom_query up '"1"]}]' || { why "up is not 1: $(tail -c 300 "$WORK/query")"; return 1; }
	wait_until 10 prom_query bore_tunnels '"1"]}]' ||
		{ why "bore_tunnels: $(tail -c 300 "$WORK/query")"; return 1; }
}

# Bad scrapes get an error status or are closed, each logged; the tunnel serves meanwhile.
t_metrics_bad_requests() {
	local silent line
	start_origin origin echo && start_metrics_server server && start_client client "$ORIGIN" ||
		return 1
	scrape "POST /metrics" && head -n 1 "$WORK/reply" | grep -qxF "HTTP/1.1 405 Method Not Allowed" &&
		grep -qxF "Allow: GET, HEAD" "$WORK/reply" || { why "POST: $(head -n 1 "$WORK/reply")"; return 1; }
	scrape "GET /" && head -n 1 "$WORK/reply" | grep -qxF "HTTP/1.1 404 Not Found" ||
		{ why "GET /: $(head -n 1 "$WORK/reply")"; return 1; }
	scrape "GET /metricsx" && head -n 1 "$WORK/reply" | grep -qxF "HTTP/1.1 404 Not Found" ||
		{ why "GET /metricsx: $(head -n 1 "$WORK/reply")"; return 1; }
	scrape "GET /metrics?x=1" && [ -n "$(sample bore_tunnels)" ] || { why "a query string"; return 1; }
	scrape "HEAD /metrics" && head -n 1 "$WORK/reply" | grep -qxF "HTTP/1.1 200 OK" &&
		[ ! -s "$WORK/body" ] && grep -q "^Content-Length: [1-9]" "$WORK/reply" ||
		{ why "HEAD: $(tr '\n' '|' <"$WORK/reply")"; return 1; }
	printf 'garbage\r\n\r\n' | "$TCPKIT" raw 127.0.0.1 "$MPORT" 5000 | grep -q "^HTTP/1.1 400 " ||
		{ why "garbage not answered 400"; return 1; }
	# An endless request line: cut at 4 KiB, answered 431 (or reset before the answer is read).
	head -c 100000 /dev/zero | tr '\0' G | "$TCPKIT" raw 127.0.0.1 "$MPORT" 5000 >"$WORK/long" ||
		{ why "endless request line not closed"; return 1; }
	[ ! -s "$WORK/long" ] || grep -q "^HTTP/1.1 431 " "$WORK/long" || { why "long: $(head -c 100 "$WORK/long")"; return 1; }
	# A silent scrape is closed at 3 s, while the tunnel serves a visitor.
	start silent "$TCPKIT" waitclose 127.0.0.1 "$MPORT"
	silent=$LAST
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 1000000) || { why "tunnel meanwhile: $out"; return 1; }
	alive "$silent" || { why "the silent scrape was closed before the visitor was served"; return 1; }
	wait_exit "$silent" 6 && between "$(cat "$WORK/silent.log")" 2.8 4 ||
		{ why "a silent scrape closed after $(cat "$WORK/silent.log") s"; return 1; }
	# A slow one, a byte every 0.2 s, is answered 408 at 3 s too: "LINE MS" in slow.log.
	start slow bash -c 'exec 9<>"/dev/tcp/127.0.0.1/$0" || exit 1
		t0=$(date +%s%N)
		for i in $(seq 40); do printf G >&9; IFS= read -r -t 0.2 -u 9 line && break; done
		echo "$line $((($(date +%s%N) - t0) / 1000000))"' "$MPORT"
	wait_exit "$LAST" 10 || { why "the slow scrape was not closed"; return 1; }
	read -r line <"$WORK/slow.log"
	[[ $line == "HTTP/1.1 408 Request Timeout"* ]] && between "${line##* }" 2800 4000 ||
		{ why "slow scrape: $line"; return 1; }
	scrape && [ "$(sample bore_tunnels)" = 1 ] || { why "no scrape after the slow ones"; return 1; }
	log_has server "405 Method Not Allowed" && log_has server "404 Not Found" &&
		log_has server "400 Bad Request" && log_has server "431 Request Header Fields Too Large" &&
		log_has server "408 Request Timeout" && alive "$SRV"
}

# 1,000 scrapes in a row: every one served, and the server ends with the fds and threads it had.
t_metrics_many_scrapes() {
	local base i ok=0 reply
	start_origin origin echo && start_metrics_server server && start_client client "$ORIGIN" ||
		return 1
	scrape || return 1
	base=$(fds_threads "$SRV")
	for ((i = 0; i < 1000; i++)); do
		reply=$(printf 'GET /metrics HTTP/1.0\r\n\r\n' | "$TCPKIT" raw 127.0.0.1 "$MPORT" 5000)
		[[ $reply == "HTTP/1.1 200 OK"*"bore_tunnels 1"* ]] && ok=$((ok + 1))
	done
	[ "$ok" = 1000 ] || { why "$ok of 1000 scrapes served"; return 1; }
	wait_until 5 fds_threads_are "$SRV" "$base" ||
		{ why "server fds/threads $base -> $(fds_threads "$SRV")"; return 1; }
	out=$("$TCPKIT" roundtrip 127.0.0.1 "$PUB" 100000) || { why "$out"; return 1; }
}

# --metrics takes IP:PORT or [IPv6]:PORT and nothing else; a busy port is an error at start.
t_metrics_usage() {
	local v busy
	for v in localhost:9100 127.0.0.1 127.0.0.1: 127.0.0.1:0 127.0.0.1:65536 ::1:9100 '[::1]' \
		'[127.0.0.1]:9100' 1.2.3.4:x :9100 "$(printf '%060d' 1):1"; do
		expect_cli 2 "^bore: invalid value '.*' for '--metrics': expected IP:PORT or \[IPv6\]:PORT" \
			server --metrics "$v" || return 1
	done
	expect_cli 0 "--metrics <IP:PORT>" server --help || return 1
	# The control port is busy by the time the metrics listener binds.
	CTL=$(free_port) || return 1
	start_server first || return 1
	busy=$CTL
	CTL=$(free_port) || return 1
	expect_cli 1 "could not listen on 127\.0\.0\.1:$busy for --metrics: Address already in use" server \
		--bind-addr 127.0.0.1 --control-port "$CTL" --metrics "127.0.0.1:$busy" || return 1
	# IPv6, where this machine has it.
	MPORT=$(other_port) || return 1
	KEEP_PORTS=1 start_server v6 --metrics "[::1]:$MPORT" ||
		{ log_has v6 "Cannot assign requested address" && { why "no ::1 here: skipped"; return 2; }; return 1; }
	scrape "GET /metrics" ::1 && [ "$(sample bore_tunnels)" = 0 ] || { why "no scrape on [::1]"; return 1; }
}

# At 64 fds, with 500 visitors bursting into a tunnel (most left waiting in the listen
# queue), a scrape is still served and sees them; after the burst the fds are back.
t_metrics_few_fds() {
	local base burst
	start_origin origin echo && WRAP="prlimit --nofile=64 --" start_metrics_server server &&
		start_client client "$ORIGIN" --pool 0 || return 1
	scrape || return 1
	base=$(fds_threads "$SRV")
	start burst "$TCPKIT" slow 127.0.0.1 "$PUB" 500 0 3
	burst=$LAST
	wait_until 5 grep -q "^connected 500" "$WORK/burst.log" || { why "burst did not connect"; return 1; }
	wait_until 5 log_has server "visitors wait:" || return 1
	scrape && [ "$(sample bore_tunnels)" = 1 ] && [ "$(sample bore_visitors)" -gt 0 ] ||
		{ why "no scrape during the burst: $(head -n 1 "$WORK/reply")"; return 1; }
	wait_exit "$burst" 10 || { why "burst still open"; return 1; }
	wait_until 15 fds_threads_are "$SRV" "$base" ||
		{ why "server fds/threads $base -> $(fds_threads "$SRV")"; return 1; }
	! grep -q "Too many open files" "$WORK/server.log" || { why "the server ran out of fds"; return 1; }
}
