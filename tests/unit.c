/*
 * Unit tests for bore's protocol code: HMAC vectors, UUIDs, the message
 * codec, and the frame reader.  bore.c is included whole (its main renamed)
 * so that static helpers such as read_frame can be driven directly.
 *
 * Usage: tests/unit [hmac|uuid|parse|format|frames|cli|liveness|proxy|startups|visitorrate|ports|
 *        startupbench] ...
 *        (default: all but startupbench)
 * Prints one line per check and ends with "N passed, N failed".
 */
#define main bore_cli_main
#include "../bore.c"
#undef main

#include <ctype.h>

static int passed, failed;

/* Record one check. */
static void
check(int ok, const char *what, const char *detail)
{
	if (ok) {
		passed++;
	} else {
		failed++;
		printf("FAIL %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
	}
}

/* ---- HMAC vectors ------------------------------------------------------ */

/* Split a tab-separated line in place into at most n fields. */
static int
split_tabs(char *line, char **f, int n)
{
	int k = 0;

	line[strcspn(line, "\r\n")] = '\0';
	f[k++] = line;
	while (k < n && (line = strchr(line, '\t')) != NULL) {
		*line++ = '\0';
		f[k++] = line;
	}
	return (k);
}

static void
test_hmac(const char *path)
{
	char line[1024], *f[4], keyhex[2 * BORE_KEY_LEN + 1], tag[BORE_TAG_HEXLEN + 1], bad[65];
	uint8_t key[BORE_KEY_LEN], challenge[BORE_UUID_LEN];
	FILE *fp;
	int rows = 0;

	if ((fp = fopen(path, "r")) == NULL) {
		check(0, "hmac: open vectors", path);
		return;
	}
	if (fgets(line, sizeof(line), fp) == NULL)  /* header */
		check(0, "hmac: vectors header", path);
	while (fgets(line, sizeof(line), fp) != NULL) {
		if (split_tabs(line, f, 4) != 4)
			continue;
		rows++;
		bore_auth_key(f[0], key);
		sodium_bin2hex(keyhex, sizeof(keyhex), key, sizeof(key));
		check(strcmp(keyhex, f[2]) == 0, "hmac: key = sha256(secret)", f[0]);
		check(bore_uuid_parse(f[1], strlen(f[1]), challenge) == 0, "hmac: challenge parses", f[1]);
		bore_auth_tag(key, challenge, tag);
		check(strcmp(tag, f[3]) == 0, "hmac: tag matches vector", f[1]);
		check(bore_auth_verify(key, challenge, f[3], strlen(f[3])) == 1, "hmac: verify accepts", f[1]);
		memcpy(bad, f[3], 65);
		bad[10] = bad[10] == '0' ? '1' : '0';
		check(bore_auth_verify(key, challenge, bad, 64) == 0, "hmac: verify rejects a changed digit", f[1]);
		check(bore_auth_verify(key, challenge, f[3], 63) == 0, "hmac: verify rejects a short tag", f[1]);
		memcpy(bad, f[3], 65);
		bad[0] = 'g';
		check(bore_auth_verify(key, challenge, bad, 64) == 0, "hmac: verify rejects non-hex", f[1]);
		for (size_t i = 0; i < 64; i++)
			bad[i] = (char)toupper((unsigned char)f[3][i]);
		check(bore_auth_verify(key, challenge, bad, 64) == 1,
		    "hmac: verify accepts uppercase hex (as the reference's hex::decode)", f[1]);
		challenge[0] ^= 1;
		check(bore_auth_verify(key, challenge, f[3], 64) == 0, "hmac: verify rejects another challenge", f[1]);
	}
	fclose(fp);
	check(rows >= 4, "hmac: at least four vectors read", path);
}

/* ---- UUIDs ------------------------------------------------------------- */

static void
test_uuid(void)
{
	static const char *const bad[] = {
		"", "2d22dad6-dbff-4ee8-a34f-44bc515b414", "2d22dad6-dbff-4ee8-a34f-44bc515b41422",
		"2d22dad6dbff-4ee8-a34f-44bc515b4142a", "2d22dad6-dbff-4ee8-a34f_44bc515b4142",
		"2d22dad6-dbff-4ee8-a34f-44bc515b414g", "{2d22dad6-dbff-4ee8-a34f-44bc515b4142}",
		"2d22dad6dbff4ee8a34f44bc515b4142", " 2d22dad6-dbff-4ee8-a34f-44bc515b414",
	};
	uint8_t u[BORE_UUID_LEN], v[BORE_UUID_LEN];
	char s[BORE_UUID_STRLEN + 1];
	size_t i;

	check(bore_uuid_parse("2d22dad6-dbff-4ee8-a34f-44bc515b4142", 36, u) == 0, "uuid: parse", NULL);
	check(u[0] == 0x2d && u[15] == 0x42, "uuid: parsed bytes", NULL);
	bore_uuid_format(u, s);
	check(strcmp(s, "2d22dad6-dbff-4ee8-a34f-44bc515b4142") == 0, "uuid: format round trip", s);
	check(bore_uuid_parse("2D22DAD6-DBFF-4EE8-A34F-44BC515B4142", 36, v) == 0 &&
	    memcmp(u, v, 16) == 0, "uuid: uppercase parses to the same bytes", NULL);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		check(bore_uuid_parse(bad[i], strlen(bad[i]), u) == -1, "uuid: rejects", bad[i]);
	for (i = 0; i < 100; i++) {
		bore_uuid_random(u);
		bore_uuid_format(u, s);
		if (s[14] != '4' || strchr("89ab", s[19]) == NULL)
			break;
	}
	check(i == 100, "uuid: random ones are version 4, RFC 4122 variant", s);
	bore_uuid_random(v);
	check(memcmp(u, v, 16) != 0, "uuid: random ones differ", NULL);
}

/* ---- Message parser ---------------------------------------------------- */

/* Parse s; check it gives type t (BORE_MSG_NONE: must be rejected). */
static struct bore_msg
expect(const char *s, size_t len, enum bore_msg_type t)
{
	struct bore_msg m;
	char what[400];
	int r = bore_parse_msg(s, len, &m);

	snprintf(what, sizeof(what), "parse: %s %.*s", t == BORE_MSG_NONE ? "rejects" : "accepts",
	    (int)(len > 300 ? 300 : len), s);
	for (char *p = what; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = '?';
	check(t == BORE_MSG_NONE ? (r == -1 && m.type == BORE_MSG_NONE) : (r == 0 && m.type == t),
	    what, NULL);
	return (m);
}
#define ACCEPTS(s, t) expect(s, sizeof(s) - 1, t)
#define REJECTS(s) expect(s, sizeof(s) - 1, BORE_MSG_NONE)

static void
test_parse(void)
{
	char big[600];
	struct bore_msg m;
	size_t n;

	/* Every message form the reference sends or receives. */
	m = ACCEPTS("{\"Hello\":0}", BORE_MSG_HELLO);
	check(m.port == 0, "parse: Hello 0", NULL);
	m = ACCEPTS("{\"Hello\":8080}", BORE_MSG_HELLO);
	check(m.port == 8080, "parse: Hello 8080", NULL);
	m = ACCEPTS("{\"Hello\":65535}", BORE_MSG_HELLO);
	check(m.port == 65535, "parse: Hello 65535", NULL);
	m = ACCEPTS("{\"Authenticate\":\"ad7ae043abae7a6e9a41b8a04188b95aae742d95109ad2056e658a4f34cf3688\"}",
	    BORE_MSG_AUTHENTICATE);
	check(m.text_len == 64 && strncmp(m.text, "ad7ae043", 8) == 0, "parse: Authenticate text", NULL);
	m = ACCEPTS("{\"Accept\":\"2d22dad6-dbff-4ee8-a34f-44bc515b4142\"}", BORE_MSG_ACCEPT);
	check(m.uuid[0] == 0x2d && m.uuid[15] == 0x42, "parse: Accept uuid", NULL);
	m = ACCEPTS("{\"Challenge\":\"2d22dad6-dbff-4ee8-a34f-44bc515b4142\"}", BORE_MSG_CHALLENGE);
	check(m.uuid[1] == 0x22, "parse: Challenge uuid", NULL);
	m = ACCEPTS("{\"Connection\":\"2d22dad6-dbff-4ee8-a34f-44bc515b4142\"}", BORE_MSG_CONNECTION);
	check(m.uuid[2] == 0xda, "parse: Connection uuid", NULL);
	ACCEPTS("\"Heartbeat\"", BORE_MSG_HEARTBEAT);
	ACCEPTS("{\"Heartbeat\":null}", BORE_MSG_HEARTBEAT);
	m = ACCEPTS("{\"Error\":\"port already in use\"}", BORE_MSG_ERROR);
	check(strcmp(m.text, "port already in use") == 0, "parse: Error text", m.text);
	/* The pool extension, between C peers only. */
	m = ACCEPTS("{\"Pool\":6}", BORE_MSG_POOL);
	check(m.port == 6, "parse: Pool 6", NULL);
	m = ACCEPTS("{\"Spare\":\"2d22dad6-dbff-4ee8-a34f-44bc515b4142\"}", BORE_MSG_SPARE);
	check(m.uuid[3] == 0xd6, "parse: Spare token", NULL);
	m = ACCEPTS("{\"Join\":\"2d22dad6-dbff-4ee8-a34f-44bc515b4142\"}", BORE_MSG_JOIN);
	check(m.uuid[15] == 0x42, "parse: Join token", NULL);

	/* Whitespace and escapes. */
	m = ACCEPTS("{ \"Hello\" : 1 }", BORE_MSG_HELLO);
	check(m.port == 1, "parse: spaced Hello", NULL);
	ACCEPTS(" \t\r\n{\n\"Hello\"\t:\r\n22\n}\n ", BORE_MSG_HELLO);
	ACCEPTS("  \"Heartbeat\"  ", BORE_MSG_HEARTBEAT);
	m = ACCEPTS("{\"Error\":\"a\\\"b\\\\c\\/d\\n\\t\\u00e9\\ud83d\\ude00\"}", BORE_MSG_ERROR);
	check(strcmp(m.text, "a\"b\\c/d\n\t\xc3\xa9\xf0\x9f\x98\x80") == 0, "parse: Error escapes decoded", NULL);
	m = ACCEPTS("{\"\\u0048ello\":7}", BORE_MSG_HELLO);
	check(m.port == 7, "parse: escaped variant name", NULL);
	m = ACCEPTS("{\"Error\":\"s\xc3\xa9\x63ret \xe2\x82\xac\"}", BORE_MSG_ERROR);
	check(strcmp(m.text, "s\xc3\xa9\x63ret \xe2\x82\xac") == 0, "parse: raw UTF-8 kept", NULL);

	/* Ports out of range or not plain integers. */
	REJECTS("{\"Hello\":65536}");
	REJECTS("{\"Hello\":99999999999999999999}");
	REJECTS("{\"Hello\":-1}");
	REJECTS("{\"Hello\":-0}");
	REJECTS("{\"Hello\":1e3}");
	REJECTS("{\"Hello\":80.0}");
	REJECTS("{\"Hello\":080}");
	REJECTS("{\"Hello\":\"80\"}");
	REJECTS("{\"Hello\":null}");
	REJECTS("{\"Hello\":}");
	REJECTS("{\"Hello\":[80]}");
	REJECTS("{\"Hello\":+80}");

	/* Wrong shapes, unknown variants, duplicates, nesting, trailing bytes. */
	REJECTS("");
	REJECTS("   ");
	REJECTS("{}");
	REJECTS("[]");
	REJECTS("null");
	REJECTS("42");
	REJECTS("\"Hello\"");
	REJECTS("\"Error\"");
	REJECTS("\"heartbeat\"");
	REJECTS("{\"hello\":1}");
	REJECTS("{\"Goodbye\":1}");
	REJECTS("{\"Hello\":1,\"Hello\":2}");
	REJECTS("{\"Hello\":1,}");
	REJECTS("{\"Hello\":1");
	REJECTS("{\"Hello\":1}}");
	REJECTS("{\"Hello\":1} x");
	REJECTS("{\"Hello\":1}\"Heartbeat\"");
	REJECTS("{{\"Hello\":1}}");
	REJECTS("{\"Hello\":{\"Hello\":{\"Hello\":1}}}");
	REJECTS("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
	REJECTS("{\"Heartbeat\":1}");
	REJECTS("{\"Heartbeat\":\"\"}");
	REJECTS("{'Hello':1}");
	REJECTS("{Hello:1}");
	REJECTS("{\"Hello\\u0000\":1}");
	REJECTS("{\"Error\":42}");
	REJECTS("{\"Error\":\"unterminated}");
	REJECTS("{\"Error\":\"tab\tinside\"}");
	REJECTS("{\"Error\":\"bad escape \\x41\"}");
	REJECTS("{\"Error\":\"short \\u12\"}");
	REJECTS("{\"Error\":\"lone \\ud83d surrogate\"}");
	REJECTS("{\"Error\":\"lone \\ude00 low\"}");
	REJECTS("{\"Authenticate\":null}");
	REJECTS("\"Pool\"");
	REJECTS("{\"Pool\":\"6\"}");
	REJECTS("{\"Pool\":65536}");
	REJECTS("{\"Spare\":6}");
	REJECTS("{\"Join\":\"not-a-token\"}");
	REJECTS("{\"Join\":null}");

	/* Invalid UTF-8 anywhere. */
	REJECTS("{\"Error\":\"\xff\"}");
	REJECTS("{\"Error\":\"\xc0\xaf\"}");
	REJECTS("{\"Error\":\"\xed\xa0\x80\"}");
	REJECTS("{\"Error\":\"\xf4\x90\x80\x80\"}");
	REJECTS("{\"Error\":\"\xe2\x82\"}");
	REJECTS("\xef\xbb\xbf{\"Hello\":1}");

	/* Bad UUIDs in every UUID-carrying message. */
	REJECTS("{\"Accept\":\"\"}");
	REJECTS("{\"Accept\":\"not-a-uuid\"}");
	REJECTS("{\"Accept\":\"2d22dad6-dbff-4ee8-a34f-44bc515b414\"}");
	REJECTS("{\"Accept\":\"2d22dad6dbff4ee8a34f44bc515b4142\"}");
	REJECTS("{\"Accept\":42}");
	REJECTS("{\"Challenge\":\"2d22dad6-dbff-4ee8-a34f-44bc515b414z\"}");
	REJECTS("{\"Connection\":\"{2d22dad6-dbff-4ee8-a34f-44bc515b4142}\"}");

	/* Binary garbage, and a NUL inside the text handed to the parser. */
	expect("\x00\x01\x02\x03", 4, BORE_MSG_NONE);
	expect("{\"Hello\":1}\0", 12, BORE_MSG_NONE);

	/* The 256-byte limit: exactly 256 parses, 257 is refused. */
	n = (size_t)snprintf(big, sizeof(big), "{\"Error\":\"%0*d\"}", 256 - 12, 0);
	check(n == 256, "parse: built a 256-byte frame", NULL);
	expect(big, n, BORE_MSG_ERROR);
	n = (size_t)snprintf(big, sizeof(big), "{\"Error\":\"%0*d\"}", 257 - 12, 0);
	expect(big, n, BORE_MSG_NONE);
}

/* ---- Message formatter ------------------------------------------------- */

/* Format m and compare with the exact bytes want; the result must parse back. */
static void
expect_format(struct bore_msg m, const char *want)
{
	char out[1100];
	struct bore_msg back;
	int n = bore_format_msg(&m, out, sizeof(out));

	check(n >= 0 && (size_t)n == strlen(want) && memcmp(out, want, (size_t)n) == 0,
	    "format: exact bytes", want);
	check(n >= 0 && bore_parse_msg(out, (size_t)n, &back) == 0 && back.type == m.type,
	    "format: parses back", want);
}

static void
test_format(void)
{
	struct bore_msg m = { .type = BORE_MSG_HELLO, .port = 20027 };
	volatile size_t small = 5;  /* not a constant, so the compiler does not warn about it */
	char out[16];

	expect_format(m, "{\"Hello\":20027}");
	m.port = 0;
	expect_format(m, "{\"Hello\":0}");
	m = (struct bore_msg){ .type = BORE_MSG_HEARTBEAT };
	expect_format(m, "\"Heartbeat\"");
	m = (struct bore_msg){ .type = BORE_MSG_CONNECTION };
	bore_uuid_parse("2d22dad6-dbff-4ee8-a34f-44bc515b4142", 36, m.uuid);
	expect_format(m, "{\"Connection\":\"2d22dad6-dbff-4ee8-a34f-44bc515b4142\"}");
	m.type = BORE_MSG_ACCEPT;
	expect_format(m, "{\"Accept\":\"2d22dad6-dbff-4ee8-a34f-44bc515b4142\"}");
	m.type = BORE_MSG_CHALLENGE;
	expect_format(m, "{\"Challenge\":\"2d22dad6-dbff-4ee8-a34f-44bc515b4142\"}");
	m.type = BORE_MSG_SPARE;
	expect_format(m, "{\"Spare\":\"2d22dad6-dbff-4ee8-a34f-44bc515b4142\"}");
	m.type = BORE_MSG_JOIN;
	expect_format(m, "{\"Join\":\"2d22dad6-dbff-4ee8-a34f-44bc515b4142\"}");
	m = (struct bore_msg){ .type = BORE_MSG_POOL, .port = 6 };
	expect_format(m, "{\"Pool\":6}");
	m = (struct bore_msg){ .type = BORE_MSG_ERROR };
	strcpy(m.text, "invalid secret");
	expect_format(m, "{\"Error\":\"invalid secret\"}");
	strcpy(m.text, "q\"b\\s\nt\tc\x01 \xc3\xa9");
	expect_format(m, "{\"Error\":\"q\\\"b\\\\s\\nt\\tc\\u0001 \xc3\xa9\"}");
	m = (struct bore_msg){ .type = BORE_MSG_AUTHENTICATE };
	strcpy(m.text, "ad7ae043abae7a6e9a41b8a04188b95aae742d95109ad2056e658a4f34cf3688");
	expect_format(m, "{\"Authenticate\":\"ad7ae043abae7a6e9a41b8a04188b95aae742d95109ad2056e658a4f34cf3688\"}");
	m = (struct bore_msg){ .type = BORE_MSG_HELLO, .port = 1 };
	check(bore_format_msg(&m, out, small) == -1, "format: refuses a buffer too small", NULL);
	m = (struct bore_msg){ .type = BORE_MSG_NONE };
	check(bore_format_msg(&m, out, sizeof(out)) == -1, "format: refuses no message", NULL);
}

/* ---- Frame reader over a socket pair ------------------------------------ */

/* Write s to fd (all of it: socket pairs buffer far more than these tests send). */
static void
put(int fd, const void *s, size_t len)
{
	check(write(fd, s, len) == (ssize_t)len, "frames: write to socket pair", NULL);
}

static void
test_frames(void)
{
	struct conn c = { .fd = -1 };
	struct bore_msg m;
	char big[400];
	int sv[2], r;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == -1) {
		check(0, "frames: socketpair", strerror(errno));
		return;
	}
	c.fd = sv[0];

	/* A frame split across reads: the first read times out, the rest completes it. */
	put(sv[1], "{\"Hel", 5);
	r = read_frame(&c, &m, now_ms() + 50);
	check(r == -1 && errno == ETIMEDOUT, "frames: partial frame waits (times out)", NULL);
	put(sv[1], "lo\":", 4);
	put(sv[1], "80}", 3);
	put(sv[1], "\0", 1);
	r = read_frame(&c, &m, now_ms() + 1000);
	check(r == 1 && m.type == BORE_MSG_HELLO && m.port == 80, "frames: split frame assembles", NULL);

	/* Several frames in one write come out one by one. */
	put(sv[1], "\"Heartbeat\"\0{\"Hello\":5}\0\"Heartbeat\"\0", 36);
	r = read_frame(&c, &m, now_ms() + 1000);
	check(r == 1 && m.type == BORE_MSG_HEARTBEAT, "frames: first of three", NULL);
	check(memchr(c.buf, '\0', c.len) != NULL, "frames: rest stays buffered", NULL);
	r = read_frame(&c, &m, now_ms() + 1000);
	check(r == 1 && m.type == BORE_MSG_HELLO && m.port == 5, "frames: second of three", NULL);
	r = read_frame(&c, &m, now_ms() + 1000);
	check(r == 1 && m.type == BORE_MSG_HEARTBEAT, "frames: third of three", NULL);
	check(c.len == 0, "frames: buffer empty after", NULL);

	/* Bytes after Accept's NUL stay in the buffer for the relay. */
	put(sv[1], "{\"Accept\":\"2d22dad6-dbff-4ee8-a34f-44bc515b4142\"}\0SSH-2.0-x\r\n", 61);
	r = read_frame(&c, &m, now_ms() + 1000);
	check(r == 1 && m.type == BORE_MSG_ACCEPT, "frames: Accept with stream bytes after it", NULL);
	check(c.len == 11 && memcmp(c.buf, "SSH-2.0-x\r\n", 11) == 0,
	    "frames: bytes after Accept kept, in order", NULL);
	c.len = 0;

	/* Garbage in a frame is an error for that frame. */
	put(sv[1], "garbage\0", 8);
	r = read_frame(&c, &m, now_ms() + 1000);
	check(r == -1 && errno == EBADMSG, "frames: garbage frame is EBADMSG", NULL);

	/* 256 bytes then NUL is fine; 257 bytes without a NUL is too long. */
	snprintf(big, sizeof(big), "{\"Error\":\"%0*d\"}", 256 - 12, 0);
	put(sv[1], big, 257);
	r = read_frame(&c, &m, now_ms() + 1000);
	check(r == 1 && m.type == BORE_MSG_ERROR && m.text_len == 244, "frames: 256-byte frame", NULL);
	memset(big, 'x', 257);
	put(sv[1], big, 257);
	r = read_frame(&c, &m, now_ms() + 1000);
	check(r == -1 && errno == EMSGSIZE, "frames: 257 bytes without NUL is EMSGSIZE", NULL);
	c.len = 0;
	memset(big, 'x', 300);
	big[257] = '\0';
	put(sv[1], big, 300);
	r = read_frame(&c, &m, now_ms() + 1000);
	check(r == -1 && errno == EMSGSIZE, "frames: 257 bytes then NUL is EMSGSIZE", NULL);
	c.len = 0;
	put(sv[1], "\0", 1);
	r = read_frame(&c, &m, now_ms() + 1000);
	check(r == -1 && errno == EBADMSG, "frames: empty frame is EBADMSG", NULL);

	/* EOF in the middle of a frame, then a clean EOF. */
	put(sv[1], "{\"Hel", 5);
	shutdown(sv[1], SHUT_WR);
	r = read_frame(&c, &m, now_ms() + 1000);
	check(r == -1 && errno == EPROTO, "frames: EOF inside a frame is EPROTO", NULL);
	c.len = 0;
	r = read_frame(&c, &m, now_ms() + 1000);
	check(r == 0, "frames: clean EOF is 0", NULL);
	close(sv[0]);
	close(sv[1]);
}

/* ---- Liveness options on tunnel control connections --------------------- */

/* Read back one int socket option. */
static int
sockopt(int fd, int level, int name)
{
	socklen_t len = sizeof(int);
	int v = -1;

	if (getsockopt(fd, level, name, &v, &len) == -1)
		return (-1);
	return (v);
}

static void
test_liveness(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	check(fd != -1, "liveness: socket", strerror(errno));
	if (fd == -1)
		return;
	check(sockopt(fd, SOL_SOCKET, SO_KEEPALIVE) == 0, "liveness: keepalive off by default", NULL);
	set_liveness(fd);
	check(sockopt(fd, SOL_SOCKET, SO_KEEPALIVE) == 1, "liveness: SO_KEEPALIVE", NULL);
	check(sockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE) == KEEPALIVE_IDLE_S, "liveness: TCP_KEEPIDLE", NULL);
	check(sockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL) == KEEPALIVE_INTERVAL_S, "liveness: TCP_KEEPINTVL",
	    NULL);
	check(sockopt(fd, IPPROTO_TCP, TCP_KEEPCNT) == KEEPALIVE_COUNT, "liveness: TCP_KEEPCNT", NULL);
	check(sockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT) == USER_TIMEOUT_MS, "liveness: TCP_USER_TIMEOUT",
	    NULL);
	/* Keepalive probes give up after idle + count * interval: within the user timeout's 30 s. */
	check(KEEPALIVE_IDLE_S + KEEPALIVE_COUNT * KEEPALIVE_INTERVAL_S <= 30 && USER_TIMEOUT_MS <= 30000,
	    "liveness: a dead client is given up within 30 s", NULL);
	close(fd);
}

/* ---- PROXY protocol headers -------------------------------------------- */

/* An address from an IP literal and port, as the kernel would give it. */
static struct sockaddr_storage
sockaddr_of(const char *ip, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len;

	if (parse_ip(ip, port, &ss, &len) == -1)
		memset(&ss, 0, sizeof(ss));
	return (ss);
}

/* Check the header for src -> dst in one version against want (wlen bytes). */
static void
check_proxy(const char *what, const char *src, uint16_t sport, const char *dst, uint16_t dport,
    int version, const char *want, size_t wlen)
{
	struct sockaddr_storage s = sockaddr_of(src, sport), d = sockaddr_of(dst, dport);
	char out[PROXY_HEADER_MAX];
	int n = proxy_header((struct sockaddr *)&s, (struct sockaddr *)&d, version, out, sizeof(out));

	check(n == (int)wlen && memcmp(out, want, wlen) == 0, what, NULL);
}

static void
test_proxy(void)
{
	static const char v1_4[] = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
	static const char v1_6[] = "PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\r\n";
	static const char v2_4[] = "\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"
	    "\x21\x11\x00\x0c" "\xc0\xa8\x00\x01" "\xc0\xa8\x00\x0b" "\xdc\x04" "\x01\xbb";
	static const char v2_6[] = "\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"
	    "\x21\x21\x00\x24"
	    "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
	    "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02" "\xdc\x04" "\x01\xbb";
	struct sockaddr_storage s = sockaddr_of("192.168.0.1", 1), d = sockaddr_of("192.168.0.11", 2);
	struct sockaddr_storage m = sockaddr_of("2001:db8::2", 3);
	char small[PROXY_HEADER_MAX];
	int version;

	check_proxy("proxy: v1 TCP4", "192.168.0.1", 56324, "192.168.0.11", 443, 1, v1_4,
	    sizeof(v1_4) - 1);
	check_proxy("proxy: v1 TCP6", "2001:db8::1", 56324, "2001:db8::2", 443, 1, v1_6,
	    sizeof(v1_6) - 1);
	check_proxy("proxy: v1 v4-mapped is TCP4", "::ffff:192.168.0.1", 56324, "::ffff:192.168.0.11",
	    443, 1, v1_4, sizeof(v1_4) - 1);
	check_proxy("proxy: v1 longest", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535, 1,
	    "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	    "65535 65535\r\n", 104);
	check_proxy("proxy: v2 TCP4", "192.168.0.1", 56324, "192.168.0.11", 443, 2, v2_4,
	    sizeof(v2_4) - 1);
	check_proxy("proxy: v2 TCP6", "2001:db8::1", 56324, "2001:db8::2", 443, 2, v2_6,
	    sizeof(v2_6) - 1);
	check_proxy("proxy: v2 v4-mapped is TCP4", "::ffff:192.168.0.1", 56324, "::ffff:192.168.0.11",
	    443, 2, v2_4, sizeof(v2_4) - 1);
	for (version = 1; version <= 2; version++)
		check(proxy_header((struct sockaddr *)&s, (struct sockaddr *)&m, version, small,
		    sizeof(small)) == -1, "proxy: no header for mixed families", NULL);
	check(proxy_header((struct sockaddr *)&s, (struct sockaddr *)&d, 1, small, 20) == -1,
	    "proxy: v1 too small a buffer", NULL);
	check(proxy_header((struct sockaddr *)&s, (struct sockaddr *)&d, 2, small, 20) == -1,
	    "proxy: v2 too small a buffer", NULL);
}

/* True if --allow block `block` admits the peer at ip. */
static int
cidr_admits(const char *block, const char *ip)
{
	struct sockaddr_storage ss = sockaddr_of(ip, 1);
	struct cidr c;

	return (parse_cidr(block, &c) == 0 && cidr_allows(&c, 1, (struct sockaddr *)&ss));
}

static void
test_cidr(void)
{
	struct cidr c;

	check(cidr_admits("10.0.0.0/8", "10.1.2.3") && !cidr_admits("10.0.0.0/8", "11.0.0.1"),
	    "cidr: IPv4 /8", NULL);
	check(cidr_admits("10.0.0.0/8", "::ffff:10.1.2.3"), "cidr: v4-mapped peer is IPv4", NULL);
	check(cidr_admits("::ffff:10.0.0.0/104", "10.1.2.3") &&
	    !cidr_admits("::ffff:10.0.0.0/104", "11.1.2.3"), "cidr: v4-mapped block is IPv4", NULL);
	check(cidr_admits("2001:db8::/33", "2001:db8:7fff::1") &&
	    !cidr_admits("2001:db8::/33", "2001:db8:8000::1"), "cidr: IPv6 /33", NULL);
	check(!cidr_admits("0.0.0.0/0", "::1") && cidr_admits("::/0", "::1"),
	    "cidr: families apart", NULL);
	check(parse_cidr("10.0.0.1/33", &c) == -1 && parse_cidr("::/129", &c) == -1 &&
	    parse_cidr("::ffff:10.0.0.0/95", &c) == -1 && parse_cidr("/8", &c) == -1,
	    "cidr: bad blocks", NULL);
}

/* ---- Number parsing ----------------------------------------------------- */

static void
test_cli(void)
{
	static const char *const bad[] = { "", "x", "-1", "+1", "65536", "99999", "123456", "1 ", " 1",
		"0x10", "1.0", "1e3" };
	uint16_t p = 0;
	size_t i;

	check(bore_parse_port("0", 0, &p) == 0 && p == 0, "port: 0 allowed when min is 0", NULL);
	check(bore_parse_port("0", 1, &p) == -1, "port: 0 refused when min is 1", NULL);
	check(bore_parse_port("65535", 1, &p) == 0 && p == 65535, "port: 65535", NULL);
	check(bore_parse_port("00080", 1, &p) == 0 && p == 80, "port: leading zeros", NULL);
	check(bore_parse_port(NULL, 0, &p) == -1, "port: NULL", NULL);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		check(bore_parse_port(bad[i], 0, &p) == -1, "port: rejects", bad[i]);
}

/* ---- startups: per-source counts and whom to drop ------------------------ */

#define TEST_CONNS 16

static struct conn tconns[TEST_CONNS];
static int tpeer[TEST_CONNS];        /* the other end of its socketpair */

/* True if every listed place's count is a recount of the places its source holds. */
static int
startup_counts_right(void)
{
	int i, k, n, used = 0;

	for (i = 0; i < 2 * srv.max_startups; i++) {
		if (startups.place[i].c == NULL)
			continue;
		used++;
		for (n = 0, k = 0; k < 2 * srv.max_startups; k++)
			n += startups.place[k].c != NULL &&
			    memcmp(startups.place[k].src, startups.place[i].src, 16) == 0;
		if (n != startups.place[i].n || startups.place[i].c->place != i)
			return (0);
	}
	return (used == startups.used);
}

/* Take every test conn off the startups and close its socketpair. */
static void
startups_clear(void)
{
	int j;

	for (j = 0; j < TEST_CONNS; j++) {
		startup_done(&tconns[j]);
		(void)close(tconns[j].fd);
		(void)close(tpeer[j]);
		tconns[j].fd = tpeer[j] = -1;
	}
}

/* List conn j from source s (known or not) at time `at`, its first frame waiting if frame. */
static int
tlist(int j, int s, int known, int64_t at, int frame)
{
	int sv[2];

	tconns[j].place = -1;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1)
		return (-1);
	tconns[j].fd = sv[0];
	tpeer[j] = sv[1];
	if (frame && write(tpeer[j], "{}", 3) != 3)
		return (-1);
	memset(tconns[j].src, 0, 16);
	tconns[j].src[15] = (uint8_t)s;
	return (startup_add(&tconns[j], known, at));
}

/* List the conns of spec ("source[k]time[w]" each, k known, w its frame waiting), from conn 0. */
static void
tfill(const char *const *spec, int n)
{
	int j;

	for (j = 0; j < n; j++)
		(void)tlist(j, spec[j][0] - '0', strchr(spec[j], 'k') != NULL, atoi(spec[j] + 1),
		    strchr(spec[j], 'w') != NULL);
}

/*
 * One scene of whom to drop (--max-startups 4, so 8 places): conns listed as
 * spec says, then a newcomer (conn 15) from source s at 1000; the conn that
 * must lose its place (-1: none), and whether the newcomer must get one.
 */
static void
tscene(const char *what, const char *const *spec, int n, int s, int known, int gone, int in)
{
	int j, r, ok;

	tfill(spec, n);
	r = tlist(TEST_CONNS - 1, s, known, 1000, 0);
	ok = (r == 0) == in && startup_counts_right();
	for (j = 0; j < n; j++)
		ok &= (tconns[j].place == -1) == (j == gone);
	check(ok, "startups", what);
	startups_clear();
}

/* Whom the per-source rules drop past --max-startups, and the counts they keep. */
static void
test_startups(void)
{
	static const char *const busiest[] = { "10", "210", "220", "230" };
	static const char *const known[] = { "20k", "20k", "20k", "1500" };
	static const char *const all_known[] = { "20k", "20k", "30k", "10k" };
	static const char *const waits[] = { "110", "20w", "220", "230" };
	static const char *const young[] = { "1900", "1910", "1920", "1930", "1940", "1950",
		"1960" };
	static const char *const full[] = { "1900", "1910", "1920", "1930", "1940", "1950", "1960",
		"1970" };
	static const char *const old[] = { "10", "120", "130", "140" };
	static const char *const mixed[] = { "1900", "1910", "2900", "2910" };
	int j;

	srv.max_startups = 4;
	startups.place = calloc(2 * (size_t)srv.max_startups, sizeof(*startups.place));
	if (startups.place == NULL) {
		check(0, "startups: init", NULL);
		return;
	}
	for (j = 0; j < TEST_CONNS; j++) {
		tconns[j].fd = tpeer[j] = -1;
		tconns[j].place = -1;
	}
	tscene("the busiest source's oldest goes", busiest, 4, 3, 0, 1, 1);
	tscene("known ones are never chosen", known, 4, 3, 0, 3, 1);
	tscene("with all known, a burst place", all_known, 4, 3, 0, -1, 1);
	tscene("one whose frame waits is never dropped", waits, 4, 3, 0, 2, 1);
	tscene("a source's young ones stay for its own newcomer", young, 7, 1, 0, -1, 1);
	tscene("past twice the limit a newcomer is closed", full, 8, 1, 0, -1, 0);
	tscene("a lighter source's newcomer drops young ones", full, 8, 2, 0, 0, 1);
	tscene("a source's old ones go for its own newcomer", old, 4, 1, 0, 0, 1);
	tscene("a known newcomer drops young strangers elsewhere", mixed, 4, 1, 1, 2, 1);
	check(startups.used == 0 && startup_counts_right(), "startups: all taken off", NULL);
}

/* Free the startups' places. */
static void
startups_free(void)
{
	free(startups.place);
	startups.used = 0;
}

/* List n startups past max, each from its own source; seconds per startup_add. */
static double
startups_fill(struct conn *conns, int n)
{
	int64_t t0 = now_us();
	int i;

	for (i = 0; i < n; i++) {
		conns[i].fd = conns[i].place = -1;
		memset(conns[i].src, 0, 16);
		memcpy(conns[i].src, &i, sizeof(i));
		(void)startup_add(&conns[i], 0, now_ms() - STARTUP_GRACE_MS);
	}
	return ((now_us() - t0) / 1e6 / n);
}

/* The cost of one accept past the limit at 2,500 startups, one per source (for make bench). */
/* ---- --visitor-rate: the bucket arithmetic and the table, on an injected clock --------- */

/* An IPv4 source a.b.c.d, or (v6) an IPv6 one with its /64 from hi and the rest from lo. */
static struct sockaddr_storage
rate_src(int v6, uint32_t hi, uint32_t lo)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

	if (!v6) {
		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = htonl(hi);
	} else {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr.s6_addr[0] = 0x20;
		memcpy(sin6->sin6_addr.s6_addr + 4, &hi, 4);
		memcpy(sin6->sin6_addr.s6_addr + 12, &lo, 4);
	}
	return (ss);
}

/* How many of n visitors from ss at now (us) are let in. */
static int
rate_admits(struct sockaddr_storage ss, int64_t now, int n)
{
	int k = 0;

	while (n-- > 0)
		k += visitor_rate_allows((struct sockaddr *)&ss, now);
	return (k);
}

static void
test_visitor_rate(void)
{
	int64_t t0 = 1000000000, min = 60000000;
	struct sockaddr_storage a = rate_src(0, 0x7f000005, 0), b = rate_src(0, 0x7f000006, 0);
	char what[64];
	uint32_t i;
	int k;

	visitor_rate.per_minute = 3;
	randombytes_buf(visitor_rate.key, sizeof(visitor_rate.key));
	visitor_rate.slot = calloc(VISITOR_SOURCES, sizeof(*visitor_rate.slot));
	check(rate_admits(a, t0, 5) == 3, "rate: a burst of N, then refused", NULL);
	check(rate_admits(b, t0, 4) == 3, "rate: another source has its own", NULL);
	check(rate_admits(a, t0 + min / 3 - 1, 1) == 0, "rate: nothing back before a minute / N", NULL);
	check(rate_admits(a, t0 + min / 3, 2) == 1, "rate: one back after a minute / N", NULL);
	check(rate_admits(a, t0 + min / 3 + 2 * min, 5) == 3, "rate: idle long, a burst again", NULL);
	/* Refusals take nothing: the next step gives one, whatever was tried between. */
	(void)rate_admits(a, t0 + 3 * min, 1000);
	check(rate_admits(a, t0 + 3 * min + min / 3, 2) == 1, "rate: refusals do not count", NULL);
	/* IPv6: one /64 shares a bucket; the next /64 has its own. */
	check(rate_admits(rate_src(1, 7, 1), t0, 2) == 2 && rate_admits(rate_src(1, 7, 2), t0, 2) == 1,
	    "rate: an IPv6 /64 is one source", NULL);
	check(rate_admits(rate_src(1, 8, 1), t0, 3) == 3, "rate: another /64, another source", NULL);
	/* A flood of 200,000 new sources, each let in once, keeps the busy source's bucket:
	 * in its set the newcomers, nearer full, are evicted first. */
	(void)rate_admits(a, t0 + 10 * min, 3);
	for (i = 0, k = 0; i < 200000; i++)
		k += rate_admits(rate_src(0, 0x0a000000 + i, 0), t0 + 10 * min, 1);
	snprintf(what, sizeof(what), "%d of 200000", k);
	check(k == 200000, "rate: every new source gets its burst", what);
	check(rate_admits(a, t0 + 10 * min, 1) == 0, "rate: a flood does not reset a busy source", NULL);
	/* Sources idle a minute are full: evicting them loses nothing. */
	check(rate_admits(rate_src(0, 0x0a000000, 0), t0 + 12 * min, 3) == 3,
	    "rate: an evicted or idle source starts full", NULL);
	/* The most: 1,000,000 a minute, a step of 60 us, exactly N in a burst. */
	visitor_rate.per_minute = 1000000;
	check(rate_admits(rate_src(0, 0x7f000007, 0), t0, 1000001) == 1000000,
	    "rate: 1000000, a burst of exactly N", NULL);
	check(rate_admits(rate_src(0, 0x7f000007, 0), t0 + 60, 2) == 1, "rate: 1000000, one per 60 us",
	    NULL);
	free(visitor_rate.slot);
	visitor_rate.slot = NULL;
	visitor_rate.per_minute = 0;
}

/* ---- ports= lines: parsed ranges and the ports a key may open ------------------------------ */

/* The key set of a secret file holding text, loaded as the server loads it; NULL if refused. */
static struct keyset *
ports_file(const char *text)
{
	char path[] = "/tmp/bore-unit-ports.XXXXXX";
	struct keyset *ks;
	int fd = mkstemp(path);

	if (fd == -1 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		return (NULL);
	close(fd);
	ks = read_secret_file(path, LOG_DEBUG, "");
	unlink(path);
	return (ks);
}

static void
test_ports(void)
{
	static const char *const bad[] = {
		"ports= s\n", "ports=0 s\n", "ports=65536 s\n", "ports=9-8 s\n", "ports=1, s\n",
		"ports=1 \n", "ports=1\n", "ports=1;2 s\n", "ports=0x10 s\n", "ports=1-2-3 s\n",
	};
	uint8_t want[BORE_KEY_LEN];
	struct keyset *ks;
	size_t i;

	srv.min_port = 1000;
	srv.max_port = 2000;
	ks = ports_file("any\n\nports=1500,900-1001,1999-3000 team\r\nports=3000 none\n");
	check(ks != NULL && ks->n == 3 && ks->nranges == 5, "ports: loaded, a range each", NULL);
	if (ks == NULL)
		return;
	check(key_ports(ks, 0, -1, 0) == 1001 && key_ports(ks, 0, 0, 0) == 1000 &&
	    key_ports(ks, 0, 1000, 0) == 2000, "ports: a plain line has the server's range", NULL);
	check(key_ports(ks, 1, -1, 0) == 5, "ports: a list within the server's range", NULL);
	check(key_ports(ks, 1, 0, 0) == 1500 && key_ports(ks, 1, 1, 0) == 1000 &&
	    key_ports(ks, 1, 2, 0) == 1001 && key_ports(ks, 1, 3, 0) == 1999 &&
	    key_ports(ks, 1, 4, 0) == 2000, "ports: the nth, in the file's order", NULL);
	check(key_ports(ks, 1, -1, 1500) && key_ports(ks, 1, -1, 1001) && !key_ports(ks, 1, -1, 1002) &&
	    !key_ports(ks, 1, -1, 900) && !key_ports(ks, 1, -1, 2001), "ports: which a list may open",
	    NULL);
	check(key_ports(ks, 2, -1, 0) == 0 && !key_ports(ks, 2, -1, 3000),
	    "ports: a list past the server's range opens none", NULL);
	check(key_ports(&any_port, -1, -1, 0) == 1001 && key_ports(&any_port, -1, -1, 1234),
	    "ports: with no secret, any", NULL);
	bore_auth_key("team", want);
	check(memcmp(ks->key[1], want, BORE_KEY_LEN) == 0, "ports: a CR at the end is dropped", NULL);
	keyset_free(ks);
	/* The secret is the rest after the one space, as written. */
	ks = ports_file("ports=1500  two words \n");
	bore_auth_key(" two words ", want);
	check(ks != NULL && memcmp(ks->key[0], want, BORE_KEY_LEN) == 0, "ports: the secret as written",
	    NULL);
	keyset_free(ks);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ks = ports_file(bad[i]);
		check(ks == NULL, "ports: a bad list refused", bad[i]);
		keyset_free(ks);
	}
}

static void
bench_startups(void)
{
	struct conn *conns = calloc(10000, sizeof(*conns));

	srv.max_startups = 2500;
	startups.place = calloc(2 * (size_t)srv.max_startups, sizeof(*startups.place));
	if (conns == NULL || startups.place == NULL)
		return;
	(void)startups_fill(conns, 5000);
	printf("startups: %.1f us per accept past --max-startups 2500\n",
	    startups_fill(conns + 5000, 5000) * 1e6);
	startups_free();
	free(conns);
}

int
main(int argc, char **argv)
{
	const char *vectors = getenv("BORE_VECTORS");
	int i, all = argc < 2;

	if (sodium_init() < 0)
		return (1);
	if (vectors == NULL)
		vectors = "tests/vectors/hmac.tsv";
	for (i = 1; i <= argc; i++) {
		const char *g = i < argc ? argv[i] : NULL;

		if (!all && g == NULL)
			break;
#define GROUP(name) ((all && i == 1) || (g != NULL && strcmp(g, name) == 0))
		if (GROUP("hmac"))
			test_hmac(vectors);
		if (GROUP("uuid"))
			test_uuid();
		if (GROUP("parse"))
			test_parse();
		if (GROUP("format"))
			test_format();
		if (GROUP("frames"))
			test_frames();
		if (GROUP("cli"))
			test_cli();
		if (GROUP("liveness"))
			test_liveness();
		if (GROUP("proxy")) {
			test_proxy();
			test_cidr();
		}
		if (GROUP("startups"))
			test_startups();
		if (GROUP("visitorrate"))
			test_visitor_rate();
		if (GROUP("ports"))
			test_ports();
		if (g != NULL && strcmp(g, "startupbench") == 0)
			bench_startups();
		if (all)
			break;
	}
	printf("%d passed, %d failed\n", passed, failed);
	return (failed != 0 || (passed == 0 && !(argc == 2 && strcmp(argv[1], "startupbench") == 0)));
}
