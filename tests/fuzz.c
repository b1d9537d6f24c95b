/*
 * libFuzzer target for bore's protocol code: the message codec, the frame
 * reader and both sides of the authentication handshake.  bore.c is included
 * whole (its main renamed), like tests/unit.c, to reach its static helpers.
 *
 * Build and run (from the top of the tree):
 *   clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
 *       -o /tmp/bore-fuzz tests/fuzz.c $(pkg-config --cflags --libs libsodium) -pthread
 *   mkdir -p /tmp/corpus-work
 *   /tmp/bore-fuzz -max_len=1024 /tmp/corpus-work tests/corpus
 * Replay files without libFuzzer (any C compiler):
 *   cc -std=c11 -D_GNU_SOURCE -DFUZZ_STANDALONE -o /tmp/bore-fuzz-replay tests/fuzz.c \
 *       $(pkg-config --cflags --libs libsodium) -pthread
 *   /tmp/bore-fuzz-replay tests/corpus/<file>...
 *
 * Input layout:
 *   byte 0      mode, taken modulo 3 (the seeds use the digits '0', '1', '2'):
 *                 0 ('0')  server side: server_handshake(), then read_frame() until 0 or -1
 *                 1 ('1')  client side: client_handshake(), then read_frame() until 0 or -1
 *                 2 ('2')  read_frame() until 0 or -1
 *   bytes 1..   the stream the peer sends: usually JSON frames each ended by a NUL (0x00),
 *               possibly followed by raw stream bytes.  It is written into one end of a
 *               socket pair, which is then shut down for writing, so the side under test
 *               sees EOF after it and never waits for the 3 s timeout.
 *
 * What is checked (abort() on any mismatch):
 *   - Codec, on every NUL-separated piece of the stream: anything over 256 bytes is
 *     rejected; whatever parses has a valid type and formats again, to at most 256
 *     bytes with no NUL, and the text parses back to the same type and fields; formatting
 *     that is a fixed point.  A decoded NUL inside Authenticate/Error text (text_len >
 *     strlen) cannot be formatted whole, so there only the part before the NUL is compared.
 *   - Frame reader, against a model worked out from the input bytes: every read_frame()
 *     result and errno (EOF 0, EMSGSIZE, EBADMSG, EPROTO; never a timeout), the message it
 *     returns, the frame it consumed <= 256 bytes, and afterwards c->len <= CONN_BUF with
 *     c->buf holding exactly the next unread bytes of the stream.
 *   - Handshakes: the return value, and byte for byte what the side under test wrote
 *     back (server: the Challenge, then Error "invalid secret", "server requires
 *     secret, ..." or the frame error where due; client: Authenticate with the right
 *     tag, or nothing).
 *
 * libsodium's random source is replaced by a fixed one, so the server's challenge is
 * always 00010203-0405-4607-8809-0a0b0c0d0e0f.  With the key SHA-256("fuzz-secret") its
 * answer is FUZZ_TAG below, which a seed carries, so the fuzzer gets past the handshake;
 * it also makes every input reproducible.
 */
#define main bore_cli_main
#include "../bore.c"
#undef main

#include <strings.h>

#define FUZZ_SECRET "fuzz-secret"
#define FUZZ_CHALLENGE "00010203-0405-4607-8809-0a0b0c0d0e0f"
#define FUZZ_TAG "03211dcfd380daeb10ef4d8a4da38f06754ebf8a720214834da023afb5d121aa"

/* Longest stream written to the socket pair; the rest of a larger input is ignored. */
#define FUZZ_STREAM_MAX (64 * 1024)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t fuzz_key[BORE_KEY_LEN];

/* The server's key set: a wrong key first, so the right one is found by checking every key. */
static struct keyset *fuzz_keys;

/* Report a broken property and stop, so libFuzzer saves the input. */
#define CHECK(cond, what)                                                        \
	do {                                                                     \
		if (!(cond)) {                                                   \
			fprintf(stderr, "fuzz: %s:%d: %s: %s\n", __FILE__, __LINE__, \
			    (what), #cond);                                      \
			abort();                                                 \
		}                                                                \
	} while (0)

/* ---- A fixed random source ---------------------------------------------- */

static const char *
fixed_name(void)
{
	return ("fuzz-fixed");
}

static uint32_t
fixed_random(void)
{
	return (0x9e3779b9u);
}

/* Every request gets 00 01 02 ...: bore_uuid_random() then gives FUZZ_CHALLENGE. */
static void
fixed_buf(void *const buf, const size_t size)
{
	uint8_t *p = buf;
	size_t i;

	for (i = 0; i < size; i++)
		p[i] = (uint8_t)i;
}

static randombytes_implementation fixed_rng = {
	.implementation_name = fixed_name,
	.random = fixed_random,
	.buf = fixed_buf,
};

/* ---- Codec ------------------------------------------------------------- */

static int
type_valid(enum bore_msg_type t)
{
	return (t >= BORE_MSG_HELLO && t <= BORE_MSG_JOIN);
}

/* True if a and b carry the same message (only the fields their type uses). */
static int
msg_same(const struct bore_msg *a, const struct bore_msg *b)
{
	if (a->type != b->type)
		return (0);
	switch (a->type) {
	case BORE_MSG_HELLO:
	case BORE_MSG_POOL:
		return (a->port == b->port);
	case BORE_MSG_ACCEPT:
	case BORE_MSG_CHALLENGE:
	case BORE_MSG_CONNECTION:
	case BORE_MSG_SPARE:
	case BORE_MSG_JOIN:
		return (memcmp(a->uuid, b->uuid, BORE_UUID_LEN) == 0);
	case BORE_MSG_AUTHENTICATE:
	case BORE_MSG_ERROR:
		return (a->text_len == b->text_len && memcmp(a->text, b->text, a->text_len) == 0);
	default:
		return (1);
	}
}

/* Parse one frame (copied so ASan sees any read past its end); round-trip what parses. */
static void
check_codec(const uint8_t *frame, size_t len)
{
	struct bore_msg m, back;
	char out[4 * BORE_MAX_FRAME], again[4 * BORE_MAX_FRAME];
	char *copy;
	size_t plain;
	int n, k, rc;

	if ((copy = malloc(len > 0 ? len : 1)) == NULL)
		abort();
	copy[0] = '\0';
	memcpy(copy, frame, len);
	rc = bore_parse_msg(copy, len, &m);
	free(copy);
	if (len > BORE_MAX_FRAME)
		CHECK(rc == -1, "codec: frame over 256 bytes accepted");
	if (rc == -1)
		return;
	CHECK(rc == 0, "codec: parse returns 0 or -1");
	CHECK(type_valid(m.type), "codec: parsed type out of range");
	if (m.type == BORE_MSG_AUTHENTICATE || m.type == BORE_MSG_ERROR) {
		CHECK(m.text_len <= BORE_MAX_FRAME && m.text[m.text_len] == '\0',
		    "codec: text not NUL-terminated at text_len");
	}

	n = bore_format_msg(&m, out, sizeof(out));
	CHECK(n >= 0, "codec: a parsed message does not format");
	CHECK(n <= BORE_MAX_FRAME, "codec: formatted frame over 256 bytes");
	CHECK(memchr(out, '\0', (size_t)n) == NULL, "codec: formatted frame holds a NUL");
	CHECK(bore_parse_msg(out, (size_t)n, &back) == 0, "codec: formatted frame does not parse");

	if ((m.type == BORE_MSG_AUTHENTICATE || m.type == BORE_MSG_ERROR) &&
	    (plain = strlen(m.text)) != m.text_len) {
		/* A decoded NUL: formatting stops there, so only that much survives. */
		CHECK(back.type == m.type && back.text_len == plain &&
		    memcmp(back.text, m.text, plain) == 0, "codec: round trip (text with NUL)");
	} else {
		CHECK(msg_same(&m, &back), "codec: round trip changed the message");
	}

	k = bore_format_msg(&back, again, sizeof(again));
	CHECK(k == n && memcmp(out, again, (size_t)n) == 0, "codec: formatting is not a fixed point");
}

/* ---- Frame reader model ------------------------------------------------ */

/* What read_frame must do on stream s[0..len) when off bytes are already consumed. */
struct expect {
	int r;                /* 1, 0 or -1 */
	int err;              /* errno when r == -1 */
	size_t next;          /* bytes consumed afterwards */
	struct bore_msg m;    /* the message when r == 1 */
};

static void
model_frame(const uint8_t *s, size_t len, size_t off, struct expect *e)
{
	const uint8_t *nul;
	size_t flen;

	memset(e, 0, sizeof(*e));
	e->next = off;
	if (off == len) {
		e->r = 0;
		return;
	}
	e->r = -1;
	if ((nul = memchr(s + off, '\0', len - off)) == NULL) {
		e->err = len - off > BORE_MAX_FRAME ? EMSGSIZE : EPROTO;
		return;
	}
	if ((flen = (size_t)(nul - (s + off))) > BORE_MAX_FRAME) {
		e->err = EMSGSIZE;
		return;
	}
	e->next = off + flen + 1;
	if (bore_parse_msg((const char *)s + off, flen, &e->m) == -1) {
		e->err = EBADMSG;
		return;
	}
	e->r = 1;
}

/* The conn's buffer must hold exactly the stream's next unread bytes. */
static void
check_buffer(const struct conn *c, const uint8_t *s, size_t len, size_t off)
{
	CHECK(c->len <= CONN_BUF, "frames: c->len over CONN_BUF");
	CHECK(off <= len && c->len <= len - off, "frames: more buffered than was sent");
	CHECK(memcmp(c->buf, s + off, c->len) == 0, "frames: buffer is not the next stream bytes");
}

/* Compare one read_frame result with the model; advance *off past what it consumed. */
static void
check_read(const struct conn *c, int r, int err, const struct bore_msg *m,
    const uint8_t *s, size_t len, size_t *off)
{
	struct expect e;

	model_frame(s, len, *off, &e);
	CHECK(r == e.r, "frames: read_frame result");
	if (r == -1)
		CHECK(err == e.err, "frames: read_frame errno");
	if (r == 1) {
		CHECK(type_valid(m->type), "frames: message type out of range");
		CHECK(e.next - *off - 1 <= BORE_MAX_FRAME, "frames: consumed a frame over 256 bytes");
		CHECK(msg_same(m, &e.m), "frames: message differs from its frame");
	}
	*off = e.next;
	check_buffer(c, s, len, *off);
	if (r == 0 || (r == -1 && err == EPROTO))
		CHECK(*off + c->len == len, "frames: EOF before the whole stream was read");
}

/* Read frames until EOF or an error, as a session would. */
static void
read_all(struct conn *c, const uint8_t *s, size_t len, size_t *off)
{
	struct bore_msg m;
	int r, err;

	do {
		errno = 0;
		r = read_frame(c, &m, now_ms() + BORE_NETWORK_TIMEOUT_MS);
		err = errno;
		check_read(c, r, err, &m, s, len, off);
	} while (r == 1);
}

/* ---- Handshakes -------------------------------------------------------- */

/* Everything the side under test wrote back, read from the peer's end. */
static size_t
drain(int fd, char *out, size_t cap)
{
	size_t got = 0;
	ssize_t n;

	for (;;) {
		if (got == cap) {
			char junk[256];

			/* More than any handshake writes: count it so the caller fails. */
			if (recv(fd, junk, sizeof(junk), MSG_DONTWAIT) > 0)
				return (cap + 1);
			return (got);
		}
		n = recv(fd, out + got, cap - got, MSG_DONTWAIT);
		if (n > 0)
			got += (size_t)n;
		else if (n == -1 && errno == EINTR)
			continue;
		else
			return (got);
	}
}

/* Append a frame (text plus NUL) to buf at *n. */
static void
add_frame(char *buf, size_t cap, size_t *n, const char *text)
{
	size_t k = strlen(text) + 1;

	CHECK(*n + k <= cap, "fuzz: expected output too long");
	memcpy(buf + *n, text, k);
	*n += k;
}

static void
fuzz_server(struct conn *c, int peer, const uint8_t *s, size_t len)
{
	struct expect e;
	char got[1024], want[1024], frame[128];
	size_t off = 0, got_n, want_n = 0;
	int rc, valid;

	model_frame(s, len, 0, &e);
	valid = e.r == 1 && e.m.type == BORE_MSG_AUTHENTICATE && e.m.text_len == BORE_TAG_HEXLEN &&
	    strncasecmp(e.m.text, FUZZ_TAG, BORE_TAG_HEXLEN) == 0;

	rc = server_handshake(c, fuzz_keys);
	CHECK((rc >= 0) == valid, "server: handshake result");

	add_frame(want, sizeof(want), &want_n, "{\"Challenge\":\"" FUZZ_CHALLENGE "\"}");
	if (e.r == 0 || (e.r == 1 && e.m.type != BORE_MSG_AUTHENTICATE))
		add_frame(want, sizeof(want), &want_n,
		    "{\"Error\":\"server requires secret, but no secret was provided\"}");
	else if (e.r == 1 && !valid)
		add_frame(want, sizeof(want), &want_n, "{\"Error\":\"invalid secret\"}");
	else if (e.r == -1) {
		/* A frame that cannot be read is named too, as the Rust server does. */
		snprintf(frame, sizeof(frame), "{\"Error\":\"%s\"}", frame_error(e.err));
		add_frame(want, sizeof(want), &want_n, frame);
	}
	got_n = drain(peer, got, sizeof(got));
	CHECK(got_n == want_n && memcmp(got, want, want_n) == 0, "server: bytes sent to the peer");

	off = e.next;
	check_buffer(c, s, len, off);
	read_all(c, s, len, &off);
}

static void
fuzz_client(struct conn *c, int peer, const uint8_t *s, size_t len)
{
	struct expect e;
	unsigned char mac[crypto_auth_hmacsha256_BYTES];
	char got[1024], want[1024], hex[2 * sizeof(mac) + 1], frame[128];
	size_t off, got_n, want_n = 0;
	int rc, ok;

	model_frame(s, len, 0, &e);
	ok = e.r == 1 && e.m.type == BORE_MSG_CHALLENGE;

	rc = client_handshake(c);
	CHECK(ok ? rc == STEP_OK : rc != STEP_OK, "client: handshake result");

	if (ok) {
		crypto_auth_hmacsha256(mac, e.m.uuid, BORE_UUID_LEN, fuzz_key);
		sodium_bin2hex(hex, sizeof(hex), mac, sizeof(mac));
		snprintf(frame, sizeof(frame), "{\"Authenticate\":\"%s\"}", hex);
		add_frame(want, sizeof(want), &want_n, frame);
	}
	got_n = drain(peer, got, sizeof(got));
	CHECK(got_n == want_n && memcmp(got, want, want_n) == 0, "client: bytes sent to the peer");

	off = e.next;
	check_buffer(c, s, len, off);
	read_all(c, s, len, &off);
}

/* ---- Entry points ------------------------------------------------------ */

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	logs.level = LOG_ALWAYS;
	signal(SIGPIPE, SIG_IGN);
	if (randombytes_set_implementation(&fixed_rng) != 0 || sodium_init() == -1) {
		fprintf(stderr, "fuzz: libsodium setup failed\n");
		abort();
	}
	bore_auth_key(FUZZ_SECRET, fuzz_key);
	memcpy(cli.key, fuzz_key, sizeof(cli.key));
	if ((fuzz_keys = keyset_new(2, 0)) == NULL)
		abort();
	bore_auth_key("not the fuzz secret", fuzz_keys->key[0]);
	memcpy(fuzz_keys->key[1], fuzz_key, BORE_KEY_LEN);
	return (0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *s, *nul;
	struct conn *c;
	size_t len, off, wrote = 0;
	ssize_t n;
	int sv[2], mode;

	if (size == 0)
		return (0);
	mode = data[0] % 3;
	s = data + 1;
	len = size - 1;
	if (len > FUZZ_STREAM_MAX)
		len = FUZZ_STREAM_MAX;

	/* The codec on every NUL-separated piece, including a last one without a NUL. */
	for (off = 0; off <= len; off = (size_t)(nul - s) + 1) {
		if ((nul = memchr(s + off, '\0', len - off)) == NULL) {
			if (off < len)
				check_codec(s + off, len - off);
			break;
		}
		check_codec(s + off, (size_t)(nul - (s + off)));
	}

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == -1) {
		perror("fuzz: socketpair");
		abort();
	}
	/* sv[1] plays the peer: it sends the stream (as much as the buffer holds), then EOF. */
	while (wrote < len) {
		n = send(sv[1], s + wrote, len - wrote, MSG_NOSIGNAL);
		if (n > 0)
			wrote += (size_t)n;
		else if (!(n == -1 && errno == EINTR))
			break;
	}
	if (shutdown(sv[1], SHUT_WR) == -1) {
		perror("fuzz: shutdown");
		abort();
	}
	if ((c = conn_new(sv[0], "server")) == NULL)
		abort();

	off = 0;
	switch (mode) {
	case 0:
		fuzz_server(c, sv[1], s, wrote);
		break;
	case 1:
		fuzz_client(c, sv[1], s, wrote);
		break;
	default:
		read_all(c, s, wrote, &off);
		break;
	}
	conn_free(c);  /* closes sv[0] */
	close(sv[1]);
	return (0);
}

#ifdef FUZZ_STANDALONE
/* Run each file named on the command line through the target once. */
int
main(int argc, char **argv)
{
	FILE *fp;
	uint8_t *buf;
	long size;
	int i;

	LLVMFuzzerInitialize(&argc, &argv);
	for (i = 1; i < argc; i++) {
		if ((fp = fopen(argv[i], "rb")) == NULL || fseek(fp, 0, SEEK_END) != 0 ||
		    (size = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0)
			err(1, "%s", argv[i]);
		if ((buf = malloc(size > 0 ? (size_t)size : 1)) == NULL)
			err(1, "malloc");
		if (fread(buf, 1, (size_t)size, fp) != (size_t)size)
			err(1, "%s: read", argv[i]);
		fclose(fp);
		LLVMFuzzerTestOneInput(buf, (size_t)size);
		free(buf);
		printf("ok %s\n", argv[i]);
	}
	return (0);
}
#endif
