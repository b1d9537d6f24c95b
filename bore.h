/*
 * bore: expose a local TCP port through a remote server.
 *
 * Wire-compatible with the Rust bore 0.5.x/0.6.0: NUL-terminated JSON control
 * frames on the control port, HMAC-SHA256 challenge authentication, and a new
 * TCP connection to the control port for every proxied socket.
 *
 * This header holds the protocol constants, the control message type and the
 * functions that the unit tests call (message codec, UUIDs, authentication,
 * number parsing).  Everything else in bore.c is static.
 */
#ifndef BORE_H
#define BORE_H

#include <stddef.h>
#include <stdint.h>

/* Version printed by `bore --version`. */
#define BORE_VERSION "0.1.0"

/* TCP port for control connections with the server. */
#define BORE_CONTROL_PORT 7835

/* Longest JSON frame accepted on the wire, not counting its NUL. */
#define BORE_MAX_FRAME 256

/* Timeout for connecting and for the first message of every connection. */
#define BORE_NETWORK_TIMEOUT_MS 3000

/* Interval between the server's heartbeats on a tunnel's control connection. */
#define BORE_HEARTBEAT_MS 500

/* A client that hears no frame for this long treats the server as gone. */
#define BORE_HEARTBEAT_TIMEOUT_MS 15000

/* A visitor not claimed by the client within this time is closed. */
#define BORE_PENDING_TIMEOUT_MS 10000

/* Random picks the server tries when the client asks for any port. */
#define BORE_PORT_TRIES 150

/* Raw bytes of a UUID, and its hyphenated text form without the NUL. */
#define BORE_UUID_LEN 16
#define BORE_UUID_STRLEN 36

/* Bytes of the authentication key (SHA-256 of the secret). */
#define BORE_KEY_LEN 32

/* Hex digits of an authentication tag (HMAC-SHA256). */
#define BORE_TAG_HEXLEN 64

/* Every control message, from either side; Hello travels both ways. */
enum bore_msg_type {
	BORE_MSG_NONE = 0,
	BORE_MSG_HELLO,        /* client: port wanted (0 = any); server: port bound */
	BORE_MSG_AUTHENTICATE, /* client: hex HMAC tag answering a challenge */
	BORE_MSG_ACCEPT,       /* client: claims a pending visitor by id */
	BORE_MSG_CHALLENGE,    /* server: random UUID to authenticate against */
	BORE_MSG_HEARTBEAT,    /* server: keep-alive, no reply */
	BORE_MSG_CONNECTION,   /* server: a visitor arrived, open a data connection */
	BORE_MSG_ERROR,        /* server: fatal error text, then close */
	/* Visitor pools, between C peers only: see README, "Visitor pools". */
	BORE_MSG_POOL,         /* client, before its Hello: pooled connections wanted */
	BORE_MSG_SPARE,        /* server: a token for one pooled connection to join with */
	BORE_MSG_JOIN          /* client, on a new connection: joins the pool with a token */
};

/* One decoded control message. */
struct bore_msg {
	enum bore_msg_type type;
	uint16_t port;                  /* Hello; Pool: how many */
	uint8_t uuid[BORE_UUID_LEN];    /* Accept, Challenge, Connection; Spare, Join: token */
	size_t text_len;                /* Authenticate, Error: decoded length */
	char text[BORE_MAX_FRAME + 1];  /* Authenticate, Error: UTF-8, NUL-terminated */
};

/*
 * Decode one frame (without its NUL) into m.  Accepts exactly what the
 * reference's serde_json accepts for these messages: insignificant
 * whitespace, string escapes, ports 0-65535 as plain integers, UUIDs in
 * hyphenated form (either case).  Returns 0, or -1 on anything else.
 */
int bore_parse_msg(const char *frame, size_t len, struct bore_msg *m);

/* Encode m as compact JSON into out (no NUL added); length, or -1 if it does not fit. */
int bore_format_msg(const struct bore_msg *m, char *out, size_t cap);

/* Fill u with a random version 4 UUID. */
void bore_uuid_random(uint8_t u[BORE_UUID_LEN]);

/* Write u as lowercase hyphenated text plus NUL into out. */
void bore_uuid_format(const uint8_t u[BORE_UUID_LEN], char out[BORE_UUID_STRLEN + 1]);

/* Parse hyphenated UUID text of exactly len bytes into u; 0, or -1. */
int bore_uuid_parse(const char *s, size_t len, uint8_t u[BORE_UUID_LEN]);

/* key = SHA-256(secret). */
void bore_auth_key(const char *secret, uint8_t key[BORE_KEY_LEN]);

/* hex = lowercase hex of HMAC-SHA256(key, challenge), plus NUL. */
void bore_auth_tag(const uint8_t key[BORE_KEY_LEN], const uint8_t challenge[BORE_UUID_LEN],
    char hex[BORE_TAG_HEXLEN + 1]);

/* 1 if tag (len bytes of hex) is the right answer to challenge, else 0; constant time. */
int bore_auth_verify(const uint8_t key[BORE_KEY_LEN], const uint8_t challenge[BORE_UUID_LEN],
    const char *tag, size_t len);

/* Parse a decimal port in [min, 65535]; 0, or -1 if s is anything else. */
int bore_parse_port(const char *s, unsigned min, uint16_t *out);

#endif
