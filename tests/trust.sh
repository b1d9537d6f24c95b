# shellcheck shell=bash
# Server trust: what anonymous peers can make the server hold, drop or log.

# Lines of log $1 that contain $2, each counted with the "(and N more in T s)" it carries.
lines_counted() {
	awk -v s="$2" 'index($0, s) { n++; if (match($0, /\(and [0-9]+ more in/)) n += substr($0, RSTART + 5, RLENGTH - 13) }
		END { print n + 0 }' "$WORK/$1.log"
}

# True once log $1 counts exactly $3 of the lines containing $2.
lines_counted_are() { [ "$(lines_counted "$1" "$2")" = "$3" ]; }

# Floods of refused control connections (--allow-control) and of failed
# handshakes log a few lines, and the counts they carry add up to every refusal.
t_log_flood_counted() {
	local storm lines
	start_server server --allow-control 127.0.0.2 -s logsecret || return 1
	TCPKIT_FROM=127.0.0.2 start storm "$TCPKIT" storm 127.0.0.1 "$CTL" 1000 4
	storm=$LAST
	out=$("$TCPKIT" storm 127.0.0.1 "$CTL" 2000 4) || { why "storm: $out"; return 1; }
	wait "$storm" || { why "handshake storm: $(cat "$WORK/storm.log")"; return 1; }
	# The last count is logged once its 5 s are up, flood or no flood.
	wait_until 10 lines_counted_are server "not in --allow-control" 2000 ||
		{ why "refusals counted: $(lines_counted server "not in --allow-control") of 2000"; return 1; }
	lines=$(count_in_log server "not in --allow-control")
	[ "$lines" -le 40 ] || { why "$lines lines for 2000 refusals"; return 1; }
	lines=$(count_in_log server "server handshake failed")
	[ "$lines" -ge 1 ] && [ "$lines" -le 40 ] || { why "$lines lines for 1000 failed handshakes"; return 1; }
	alive "$SRV" || { why "the server died"; return 1; }
}
