/* tcpkit: loopback-only TCP test helper for the bore test suite; run "tcpkit help" for usage. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define STACK_SIZE (256 * 1024)
#define IO_CHUNK (64 * 1024)
#define STREAM_CHUNK (128 * 1024)
#define CONNECT_MS 3000
#define LINGER_SECS 5

/* Client target address, resolved once and shared by all client threads. */
static struct sockaddr_storage g_addr;
static socklen_t g_addrlen;

/* Source address from TCPKIT_FROM (a loopback IP), resolved once; length 0 when unset. */
static struct sockaddr_storage g_from;
static socklen_t g_fromlen;

/* Deterministic pattern (all-zero seed) used by reply, churn and halfclose. */
static unsigned char *g_pattern;
static size_t g_pattern_len;

/* Serve-mode state: banner line and per-connection handler. */
static char *g_banner;
static void (*g_handler)(int fd);

/* Print "tcpkit: <message>" to stderr and exit 1. */
static _Noreturn void die(const char *fmt, ...)
{
    va_list ap;
    fputs("tcpkit: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* SIGALRM handler: the global safety deadline expired. */
static void on_alarm(int sig)
{
    static const char msg[] = "tcpkit: timed out\n";
    ssize_t r = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)r;
    (void)sig;
    _exit(3);
}

/* Monotonic time in seconds. */
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sleep for ms milliseconds. */
static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Parse a decimal number in [lo, hi] or die naming what it is. */
static unsigned long long parse_num(const char *s, unsigned long long lo,
                                    unsigned long long hi, const char *what)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-' || v < lo || v > hi)
        die("invalid %s '%s'", what, s);
    return v;
}

/* Parse a byte count. */
static size_t parse_size(const char *s)
{
    return (size_t)parse_num(s, 0, SIZE_MAX / 2, "byte count");
}

/* True for 127.0.0.0/8 and ::1. */
static int is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24 == 127;
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return 0;
}

/* Resolve a numeric loopback host and port into ss; dies on anything else. */
static socklen_t resolve(const char *host, const char *port, struct sockaddr_storage *ss)
{
    struct addrinfo hints, *res;
    memset(&hints, 0, sizeof hints);
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0)
        die("bad address '%s' port '%s': %s", host, port, gai_strerror(rc));
    if (!is_loopback(res->ai_addr)) {
        freeaddrinfo(res);
        die("refusing non-loopback address '%s'", host);
    }
    socklen_t len = res->ai_addrlen;
    memcpy(ss, res->ai_addr, len);
    freeaddrinfo(res);
    return len;
}

/* Set the client target from HOST and PORT arguments, and the source from TCPKIT_FROM. */
static void set_target(const char *host, const char *port)
{
    const char *from = getenv("TCPKIT_FROM");
    parse_num(port, 1, 65535, "port");
    g_addrlen = resolve(host, port, &g_addr);
    if (from && *from)
        g_fromlen = resolve(from, "0", &g_from);
}

/* Switch O_NONBLOCK on or off. */
static void set_nonblock(int fd, int on)
{
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

/* Disable Nagle's algorithm. */
static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Wait until fd is ready for events or timeout_ms passes; returns poll's result. */
static int wait_fd(int fd, short events, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = events };
    int rc;
    while ((rc = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR)
        ;
    return rc;
}

/* Wait for a non-blocking connect to finish; returns 0 or an errno value. */
static int connect_wait(int fd)
{
    int rc = wait_fd(fd, POLLOUT, CONNECT_MS);
    if (rc == 0)
        return ETIMEDOUT;
    if (rc < 0)
        return errno;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return errno;
    return err;
}

/* Connect to the target with a 3 s timeout; returns a blocking fd, or -1 with errno set. */
static int connect_target(void)
{
    int fd = socket(g_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    int err = 0;
    if (g_fromlen > 0 && bind(fd, (struct sockaddr *)&g_from, g_fromlen) < 0) {
        err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&g_addr, g_addrlen) < 0)
        err = errno == EINPROGRESS ? connect_wait(fd) : errno;
    if (err != 0) {
        close(fd);
        errno = err;
        return -1;
    }
    set_nonblock(fd, 0);
    return fd;
}

/* Connect or die with the reason. */
static int connect_or_die(void)
{
    int fd = connect_target();
    if (fd < 0)
        die("connect: %s", strerror(errno));
    return fd;
}

/* read() that retries on EINTR. */
static ssize_t read_retry(int fd, void *buf, size_t len)
{
    ssize_t n;
    while ((n = read(fd, buf, len)) < 0 && errno == EINTR)
        ;
    return n;
}

/* Write all len bytes, waiting on EAGAIN; returns 0, or -1 with errno set. */
static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            wait_fd(fd, POLLOUT, -1);
        else if (n < 0 && errno != EINTR)
            return -1;
        else if (n > 0) {
            p += n;
            len -= (size_t)n;
        }
    }
    return 0;
}

/* Read exactly len bytes; returns 0, or -1 on EOF or error. */
static int read_exact(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = read_retry(fd, p, len);
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Build the n-byte deterministic pattern in g_pattern. */
static void make_pattern(size_t n)
{
    static const unsigned char seed[randombytes_SEEDBYTES];
    g_pattern = malloc(n ? n : 1);
    if (!g_pattern)
        die("out of memory");
    randombytes_buf_deterministic(g_pattern, n, seed);
    g_pattern_len = n;
}

/* Start a thread with a small stack; returns 0 or an errno value. */
static int spawn(pthread_t *t, void *(*fn)(void *), void *arg, int detached)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, STACK_SIZE);
    if (detached)
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    return rc;
}

/* Raise the soft open-file limit to the hard limit. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* ---- serve ---- */

/* Echo until EOF, then send our own FIN. */
static void echo_loop(int fd)
{
    char buf[32 * 1024];
    for (;;) {
        ssize_t n = read_retry(fd, buf, sizeof buf);
        if (n == 0)
            shutdown(fd, SHUT_WR);
        if (n <= 0 || write_all(fd, buf, (size_t)n) < 0)
            return;
    }
}

/* Read to EOF (min 0) or >= min bytes, hashing into h; byte count, or -1 on error/early EOF. */
static long long read_until(int fd, size_t min, crypto_hash_sha256_state *h)
{
    unsigned char buf[32 * 1024];
    long long got = 0;
    for (;;) {
        ssize_t n = read_retry(fd, buf, sizeof buf);
        if (n < 0 || (n == 0 && min > 0))
            return -1;
        if (n == 0)
            return got;
        if (h)
            crypto_hash_sha256_update(h, buf, (size_t)n);
        got += n;
        if (min > 0 && got >= (long long)min)
            return got;
    }
}

/* Send FIN, drain whatever the peer still sends (bounded), so close() never resets. */
static void linger_close(int fd)
{
    struct timeval tv = { LINGER_SECS, 0 };
    shutdown(fd, SHUT_WR);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    read_until(fd, 0, NULL);
}

/* banner: send TEXT CRLF, then echo. */
static void handle_banner(int fd)
{
    if (write_all(fd, g_banner, strlen(g_banner)) == 0)
        echo_loop(fd);
}

/* answer: send the bytes given in hex at once, whatever the peer says, then read until it
   closes (a fake proxy's reply, garbage or not). */
static void handle_answer(int fd)
{
    if (write_all(fd, g_pattern, g_pattern_len) == 0)
        read_until(fd, 0, NULL);
}

/* reply: discard input until EOF, then send the pattern. */
static void handle_reply(int fd)
{
    if (read_until(fd, 0, NULL) >= 0 && write_all(fd, g_pattern, g_pattern_len) == 0)
        linger_close(fd);
}

/* churn: wait for 3 bytes, then send the pattern. */
static void handle_churn(int fd)
{
    if (read_until(fd, 3, NULL) >= 0 && write_all(fd, g_pattern, g_pattern_len) == 0)
        linger_close(fd);
}

/* sink: hash input until EOF, then send the hex digest. */
static void handle_sink(int fd)
{
    crypto_hash_sha256_state h;
    unsigned char hash[crypto_hash_sha256_BYTES];
    char line[crypto_hash_sha256_BYTES * 2 + 2];
    crypto_hash_sha256_init(&h);
    if (read_until(fd, 0, &h) < 0)
        return;
    crypto_hash_sha256_final(&h, hash);
    sodium_bin2hex(line, sizeof line - 1, hash, sizeof hash);
    strcat(line, "\n");
    if (write_all(fd, line, strlen(line)) == 0)
        linger_close(fd);
}

/* proxyhdr: read a PROXY protocol header (v1: up to CRLF; v2: 16 bytes and the
   length they give), print it as "header HEX" on one line, then echo the rest. */
static void handle_proxyhdr(int fd)
{
    unsigned char buf[600];
    char line[sizeof buf * 2 + 16];
    size_t len = 0;
    if (read_exact(fd, buf, 16) < 0)
        return;
    len = 16;
    if (buf[0] == 0x0d) {
        size_t more = (size_t)buf[14] << 8 | buf[15];
        if (more > sizeof buf - 16 || read_exact(fd, buf + 16, more) < 0)
            return;
        len += more;
    } else {
        while (!(buf[len - 2] == '\r' && buf[len - 1] == '\n')) {
            if (len == 107 || read_exact(fd, buf + len, 1) < 0)
                return;
            len++;
        }
    }
    strcpy(line, "header ");
    sodium_bin2hex(line + 7, sizeof line - 8, buf, len);
    strcat(line, "\n");
    /* One write per line: connections' lines never interleave. */
    if (write(1, line, strlen(line)) < 0)
        return;
    echo_loop(fd);
}

/* Per-connection thread: run the handler, then close. */
static void *serve_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    g_handler(fd);
    close(fd);
    return NULL;
}

/* Pick the serve handler for MODE [ARG]; dies on bad usage. */
/* Mute: read to EOF, then say nothing and keep the connection until the peer resets it (60 s at most). */
static void handle_mute(int fd)
{
    struct pollfd p = { .fd = fd, .events = 0 };
    if (read_until(fd, 0, NULL) < 0)
        return;
    while (poll(&p, 1, 60000) < 0 && errno == EINTR)
        ;
}

/* Close: close at once, saying nothing (a server that refuses). */
static void handle_close(int fd)
{
    (void)fd;
}

/* Say's text for connections after the first, from TCPKIT_SAY_LATER (unset: the same). */
static unsigned char *g_later;
static size_t g_later_len;
static int g_said;

/* TEXT with each \0 in it a NUL byte, into *out; its length. */
static size_t unescape_nul(const char *arg, unsigned char **out)
{
    size_t n = 0;
    if ((*out = (unsigned char *)strdup(arg)) == NULL)
        die("out of memory");
    for (size_t i = 0; arg[i] != '\0'; i++)
        if (arg[i] == '\\' && arg[i + 1] == '0')
            (*out)[n++] = '\0', i++;
        else
            (*out)[n++] = (unsigned char)arg[i];
    return n;
}

/* Say: send TEXT, each \0 in it as a NUL byte ending a write, 100 ms apart, then be mute
   (a fake bore server); prints "conn N" as connection N comes. */
static void handle_say(int fd)
{
    int k = __atomic_add_fetch(&g_said, 1, __ATOMIC_RELAXED);
    const unsigned char *p = k > 1 && g_later ? g_later : g_pattern;
    size_t at = 0, n, len = k > 1 && g_later ? g_later_len : g_pattern_len;
    char line[32];
    snprintf(line, sizeof line, "conn %d\n", k);
    if (write(1, line, strlen(line)) < 0)
        return;
    while (at < len) {
        const unsigned char *nul = memchr(p + at, '\0', len - at);
        n = nul ? (size_t)(nul - (p + at)) + 1 : len - at;
        if (at > 0)
            sleep_ms(100);
        if (write_all(fd, p + at, n) != 0)
            return;
        at += n;
    }
    handle_mute(fd);
}

static void setup_handler(const char *mode, const char *arg)
{
    int needs_arg = !strcmp(mode, "banner") || !strcmp(mode, "reply") || !strcmp(mode, "churn") ||
                    !strcmp(mode, "say") || !strcmp(mode, "answer");
    if (needs_arg != (arg != NULL))
        die("usage: tcpkit serve echo|sink|mute|close|proxyhdr|banner TEXT|say TEXT|answer HEX|reply N|churn N [--host IP]");
    if (!strcmp(mode, "echo"))
        g_handler = echo_loop;
    else if (!strcmp(mode, "sink"))
        g_handler = handle_sink;
    else if (!strcmp(mode, "mute"))
        g_handler = handle_mute;
    else if (!strcmp(mode, "close"))
        g_handler = handle_close;
    else if (!strcmp(mode, "say")) {
        g_handler = handle_say;
        g_pattern_len = unescape_nul(arg, &g_pattern);
        if (getenv("TCPKIT_SAY_LATER"))
            g_later_len = unescape_nul(getenv("TCPKIT_SAY_LATER"), &g_later);
    }
    else if (!strcmp(mode, "proxyhdr"))
        g_handler = handle_proxyhdr;
    else if (!strcmp(mode, "banner")) {
        g_handler = handle_banner;
        if (asprintf(&g_banner, "%s\r\n", arg) < 0)
            die("out of memory");
    } else if (!strcmp(mode, "answer")) {
        size_t i, n = strlen(arg) / 2;
        g_handler = handle_answer;
        if ((g_pattern = malloc(n + 1)) == NULL)
            die("out of memory");
        for (i = 0; i < n; i++)
            if (sscanf(arg + 2 * i, "%2hhx", &g_pattern[i]) != 1)
                die("answer: bad hex at %zu", 2 * i);
        g_pattern_len = n;
    } else if (!strcmp(mode, "reply") || !strcmp(mode, "churn")) {
        g_handler = !strcmp(mode, "reply") ? handle_reply : handle_churn;
        make_pattern(parse_size(arg));
    } else
        die("unknown serve mode '%s'", mode);
}

/* Listen on host:port (port "0": kernel-chosen) and print the port; reuse sets
   SO_REUSEADDR and retries a busy port for up to 3 s. */
static int listen_port_announce(const char *host, const char *portstr, int reuse)
{
    struct sockaddr_storage ss;
    socklen_t len = resolve(host, portstr, &ss);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd >= 0 && reuse)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc = fd < 0 ? -1 : bind(fd, (struct sockaddr *)&ss, len);
    for (double give_up = now() + 3; rc < 0 && reuse && errno == EADDRINUSE && now() < give_up;) {
        sleep_ms(50);
        rc = bind(fd, (struct sockaddr *)&ss, len);
    }
    if (rc < 0 || listen(fd, 1024) < 0)
        die("listen on %s: %s", host, strerror(errno));
    len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        die("getsockname: %s", strerror(errno));
    in_port_t port = ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                             : ((struct sockaddr_in6 *)&ss)->sin6_port;
    printf("%u\n", (unsigned)ntohs(port));
    fflush(stdout);
    return fd;
}

/* Listen on host with a kernel-chosen port and print the port. */
static int listen_and_announce(const char *host)
{
    return listen_port_announce(host, "0", 0);
}

/* Accept forever, one detached thread per connection running g_handler. */
static _Noreturn void serve_forever(int lfd)
{
    for (;;) {
        pthread_t t;
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EINTR)
                sleep_ms(10);
            continue;
        }
        if (spawn(&t, serve_conn, (void *)(intptr_t)fd, 1) != 0) {
            close(fd);
            sleep_ms(10);
        }
    }
}

/* serve MODE [ARG] [--host IP]: accept forever, one detached thread per connection. */
static int mode_serve(char **argv)
{
    const char *host = "127.0.0.1", *pos[2] = { NULL, NULL };
    int npos = 0;
    for (int i = 0; argv[i]; i++) {
        if (!strcmp(argv[i], "--host") && argv[i + 1])
            host = argv[++i];
        else if (npos < 2)
            pos[npos++] = argv[i];
        else
            die("too many arguments for serve");
    }
    if (!pos[0])
        die("usage: tcpkit serve MODE [ARG] [--host IP]");
    setup_handler(pos[0], pos[1]);
    serve_forever(listen_and_announce(host));
}

/* serveat PORT MODE [ARG] [--host IP]: serve on PORT (0: kernel-chosen) with SO_REUSEADDR,
   so a service killed with its connections open can come back on the same port. */
static int mode_serveat(char **argv)
{
    const char *host = "127.0.0.1", *pos[3] = { NULL, NULL, NULL };
    int npos = 0;
    for (int i = 0; argv[i]; i++) {
        if (!strcmp(argv[i], "--host") && argv[i + 1])
            host = argv[++i];
        else if (npos < 3)
            pos[npos++] = argv[i];
        else
            die("too many arguments for serveat");
    }
    if (!pos[1])
        die("usage: tcpkit serveat PORT MODE [ARG] [--host IP]");
    parse_num(pos[0], 0, 65535, "port");
    setup_handler(pos[1], pos[2]);
    serve_forever(listen_port_announce(host, pos[0], 1));
}

/* ---- delay: a relay that makes a loopback hop look like a long link ---- */

/* Bytes one direction may hold before it stops reading: back-pressure, bounded memory. */
#define DELAY_HOLD (1024 * 1024)

/* One-way delay, and the wait before connecting upstream that stands for the handshake. */
static double g_one_way, g_handshake;

/* What a queued item carries on. */
enum carry_kind { CARRY_DATA, CARRY_FIN, CARRY_RST };

/* One item on its way through a lane, delivered at due. */
struct carry {
    struct carry *next;
    double due;
    enum carry_kind kind;
    size_t len, off;
    unsigned char data[];
};

/* One direction of a delayed connection: lane i reads side i and delivers to the other. */
struct lane {
    struct carry *head, *tail;
    size_t held;  /* data bytes queued */
    int reading;  /* its source may still send */
    int rst;      /* a reset is queued */
    int finished; /* its FIN was delivered */
};

/* Queue an item read at time t; it is due one one-way delay later. */
static void lane_push(struct lane *l, enum carry_kind kind, const void *data, size_t len, double t)
{
    struct carry *c = malloc(sizeof *c + len);
    if (!c)
        die("out of memory");
    *c = (struct carry){ .due = t + g_one_way, .kind = kind, .len = len };
    memcpy(c->data, data, len);
    if (l->tail)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
    l->held += len;
}

/* Free the head item of a lane. */
static void lane_pop(struct lane *l)
{
    struct carry *c = l->head;
    l->head = c->next;
    if (!l->head)
        l->tail = NULL;
    l->held -= c->len;
    free(c);
}

/* Side s was reset: pass the reset on in order, and drop what can no longer reach it. */
static void side_reset(struct lane *lanes, int *dead, int s, double t)
{
    dead[s] = 1;
    lanes[s].reading = 0;
    if (!lanes[s].rst)
        lane_push(&lanes[s], CARRY_RST, NULL, 0, t);
    lanes[s].rst = 1;
    lanes[1 - s].reading = 0;
    while (lanes[1 - s].head)
        lane_pop(&lanes[1 - s]);
}

/* Deliver lane i's due items to fd; 1 once a reset went out (the connection is over),
   else 0 with *blocked set when fd's send buffer is full. */
static int lane_deliver(struct lane *lanes, int *dead, int i, int fd, double t, int *blocked)
{
    struct lane *l = &lanes[i];
    struct linger lg = { 1, 0 };
    *blocked = 0;
    while (fd >= 0 && l->head && l->head->due <= t) {
        struct carry *c = l->head;
        if (c->kind == CARRY_RST) {
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            return 1;
        }
        if (c->kind == CARRY_FIN) {
            shutdown(fd, SHUT_WR);
            l->finished = 1;
        } else {
            ssize_t n = send(fd, c->data + c->off, c->len - c->off, MSG_NOSIGNAL);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
                *blocked = errno != EINTR;
                return 0;
            }
            if (n < 0) {
                side_reset(lanes, dead, 1 - i, t);
                return 0;
            }
            c->off += (size_t)n;
            if (c->off < c->len)
                continue;
        }
        lane_pop(l);
    }
    return 0;
}

/* Read what side s has sent into its lane: data, a FIN, or a reset. */
static void side_read(struct lane *lanes, int *dead, int s, int fd, unsigned char *buf)
{
    ssize_t n = read(fd, buf, IO_CHUNK);
    double t = now();
    if (n > 0)
        lane_push(&lanes[s], CARRY_DATA, buf, (size_t)n, t);
    else if (n == 0) {
        lane_push(&lanes[s], CARRY_FIN, NULL, 0, t);
        lanes[s].reading = 0;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        side_reset(lanes, dead, s, t);
}

/* delay handler: hold the connection for the handshake, connect upstream, then relay
   both ways with every byte, FIN and reset delivered one one-way delay after it came. */
static void handle_delay(int cfd)
{
    struct lane lanes[2] = { { .reading = 1 }, { .reading = 1 } };
    int fd[2] = { cfd, -1 }, dead[2] = { 0, 0 }, over = 0;
    double up_at = now() + g_handshake;
    unsigned char buf[IO_CHUNK];
    set_nonblock(cfd, 1);
    set_nodelay(cfd);
    while (!over && !(lanes[0].finished && lanes[1].finished && !lanes[0].head && !lanes[1].head)) {
        int blocked[2] = { 0, 0 };
        double t = now(), wake = -1;
        if (fd[1] < 0 && t >= up_at) {
            if ((fd[1] = connect_target()) < 0) {
                struct linger lg = { 1, 0 };
                setsockopt(cfd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
                break;
            }
            set_nonblock(fd[1], 1);
            set_nodelay(fd[1]);
        }
        for (int i = 0; i < 2 && !over; i++)
            over = lane_deliver(lanes, dead, i, fd[1 - i], t, &blocked[i]);
        if (over)
            break;
        struct pollfd p[2];
        for (int s = 0; s < 2; s++) {
            short ev = (lanes[s].reading && lanes[s].held < DELAY_HOLD ? POLLIN : 0) |
                       (blocked[1 - s] ? POLLOUT : 0);
            /* A side done sending, still to be written to, is watched for a reset alone. */
            int watch = !lanes[s].reading && !lanes[1 - s].finished;
            p[s] = (struct pollfd){ .fd = !dead[s] && (ev || watch) ? fd[s] : -1, .events = ev };
            if (fd[1 - s] >= 0 && lanes[s].head && !blocked[s] &&
                (wake < 0 || lanes[s].head->due < wake))
                wake = lanes[s].head->due;
        }
        if (fd[1] < 0 && (wake < 0 || up_at < wake))
            wake = up_at;
        double left = wake < 0 ? 0 : wake - now();
        if (left < 0)
            left = 0;
        struct timespec ts = { (time_t)left, (long)((left - (double)(time_t)left) * 1e9) };
        if (ppoll(p, 2, wake < 0 ? NULL : &ts, NULL) < 0 && errno != EINTR)
            die("poll: %s", strerror(errno));
        for (int s = 0; s < 2; s++) {
            if (p[s].fd < 0 || !p[s].revents)
                continue;
            if (p[s].events & POLLIN)
                side_read(lanes, dead, s, fd[s], buf);
            else if (!(p[s].events & POLLOUT))
                side_reset(lanes, dead, s, now());
        }
    }
    for (int i = 0; i < 2; i++)
        while (lanes[i].head)
            lane_pop(&lanes[i]);
    if (fd[1] >= 0)
        close(fd[1]);
}

/* delay HOST PORT ONE_WAY_MS [--handshake MS] [--port P] [--host IP]: listen on IP
   (127.0.0.1; port P, else kernel-chosen, printed) and relay every connection to
   HOST PORT as across a link with ONE_WAY_MS each way; the connect upstream waits
   --handshake MS (default two one-way delays); ends after TCPKIT_TIMEOUT. */
static int mode_delay(char **argv)
{
    const char *host = "127.0.0.1", *port = "0", *pos[3] = { NULL, NULL, NULL };
    long handshake = -1;
    int npos = 0;
    for (int i = 0; argv[i]; i++) {
        if (!strcmp(argv[i], "--host") && argv[i + 1])
            host = argv[++i];
        else if (!strcmp(argv[i], "--port") && argv[i + 1])
            port = argv[++i];
        else if (!strcmp(argv[i], "--handshake") && argv[i + 1])
            handshake = (long)parse_num(argv[++i], 0, 600000, "handshake ms");
        else if (npos < 3)
            pos[npos++] = argv[i];
        else
            die("too many arguments for delay");
    }
    if (!pos[2])
        die("usage: tcpkit delay HOST PORT ONE_WAY_MS [--handshake MS] [--port P] [--host IP]");
    set_target(pos[0], pos[1]);
    g_one_way = (double)parse_num(pos[2], 0, 300000, "one-way ms") / 1000.0;
    g_handshake = handshake < 0 ? 2 * g_one_way : (double)handshake / 1000.0;
    parse_num(port, 0, 65535, "port");
    g_handler = handle_delay;
    serve_forever(listen_port_announce(host, port, strcmp(port, "0") != 0));
}

/* badproxy: how connections fail (502, 407, close or reset), until SIGUSR1 heals the proxy. */
static const char *g_fail;
static volatile sig_atomic_t g_healed;
static int g_proxied;

static void on_heal(int sig)
{
    (void)sig;
    g_healed = 1;
}

/* badproxy handler: read an HTTP request header; relay the first connection (all, once
   healed) to the target, whatever it asked for; fail the others as g_fail says. */
static void handle_badproxy(int fd)
{
    static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
    static const char bad[] = "HTTP/1.1 502 Bad Gateway\r\n\r\n";
    static const char auth[] = "HTTP/1.1 407 Proxy Authentication Required\r\n\r\n";
    int n = __atomic_add_fetch(&g_proxied, 1, __ATOMIC_RELAXED), state = 0;
    char c, line[32];
    /* The header ends at the first empty line. */
    while (state < 4 && read_exact(fd, &c, 1) == 0)
        state = c == "\r\n\r\n"[state] ? state + 1 : c == '\r';
    snprintf(line, sizeof line, "conn %d\n", n);
    if (write(1, line, strlen(line)) < 0 || state < 4)
        return;
    if (n == 1 || g_healed) {
        if (write_all(fd, ok, sizeof ok - 1) == 0)
            handle_delay(fd);
    } else if (!strcmp(g_fail, "502")) {
        (void)write_all(fd, bad, sizeof bad - 1);
    } else if (!strcmp(g_fail, "407")) {
        (void)write_all(fd, auth, sizeof auth - 1);
    } else if (!strcmp(g_fail, "reset")) {
        struct linger lg = { 1, 0 };
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
}

/* badproxy HOST PORT 502|407|close|reset: an HTTP CONNECT proxy on 127.0.0.1 (its port
   printed) that relays its first connection to HOST PORT and fails every later one
   until SIGUSR1; prints "conn N" as connection N's header is read. */
static int mode_badproxy(char **argv)
{
    struct sigaction sa = { .sa_handler = on_heal };
    if (strcmp(argv[2], "502") && strcmp(argv[2], "407") && strcmp(argv[2], "close") &&
        strcmp(argv[2], "reset"))
        die("badproxy: 502, 407, close or reset, not '%s'", argv[2]);
    g_fail = argv[2];
    set_target(argv[0], argv[1]);
    sigaction(SIGUSR1, &sa, NULL);
    g_handler = handle_badproxy;
    serve_forever(listen_and_announce("127.0.0.1"));
}

/* ---- bidirectional pump shared by roundtrip, many and stream ---- */

/* One transfer: send random data (by size or until a time), read everything back until EOF. */
struct pump {
    size_t limit;  /* bytes to send when until == 0 */
    double until;  /* stop sending at this time when > 0 */
    size_t chunk;  /* bytes per generated chunk */
    int hash;      /* fresh random chunks, hashed both ways (else one chunk reused) */
    size_t sent, got;
    unsigned char tx_hash[crypto_hash_sha256_BYTES], rx_hash[crypto_hash_sha256_BYTES];
};

/* Prepare the next chunk to send; returns its length, 0 once sending is complete. */
static size_t next_chunk(struct pump *pm, crypto_hash_sha256_state *tx, unsigned char *buf)
{
    size_t n = pm->chunk;
    if (pm->until > 0 && now() >= pm->until)
        return 0;
    if (pm->until <= 0 && pm->limit - pm->sent < n)
        n = pm->limit - pm->sent;
    if (n > 0 && pm->hash) {
        randombytes_buf(buf, n);
        crypto_hash_sha256_update(tx, buf, n);
    }
    return n;
}

/* Event loop of the pump; returns 0 at EOF, -1 on I/O error (err filled). */
static int pump_loop(int fd, struct pump *pm, crypto_hash_sha256_state *tx,
                     crypto_hash_sha256_state *rx, unsigned char *txbuf,
                     unsigned char *rxbuf, char *err, size_t errlen)
{
    size_t txlen = 0, txoff = 0;
    int writing = 1;
    for (;;) {
        if (writing && txoff == txlen) {
            txoff = 0;
            /* TCPKIT_ECHO_FIRST: half-close only once all came back, for proxies that end
             * both ways at the first FIN (tinyproxy, microsocks). */
            if ((txlen = next_chunk(pm, tx, txbuf)) == 0 &&
                (getenv("TCPKIT_ECHO_FIRST") == NULL || pm->got >= pm->sent)) {
                shutdown(fd, SHUT_WR);
                writing = 0;
            }
        }
        struct pollfd p = { .fd = fd, .events = POLLIN | (writing && txlen > txoff ? POLLOUT : 0) };
        if (poll(&p, 1, 100) < 0 && errno != EINTR) {
            snprintf(err, errlen, "poll: %s", strerror(errno));
            return -1;
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(fd, rxbuf, IO_CHUNK);
            if (n == 0)
                return 0;
            if (n < 0 && errno != EAGAIN && errno != EINTR) {
                snprintf(err, errlen, "read: %s", strerror(errno));
                return -1;
            }
            if (n > 0 && pm->hash)
                crypto_hash_sha256_update(rx, rxbuf, (size_t)n);
            pm->got += n > 0 ? (size_t)n : 0;
        }
        if (writing && (p.revents & POLLOUT)) {
            ssize_t n = write(fd, txbuf + txoff, txlen - txoff);
            if (n < 0 && errno != EAGAIN && errno != EINTR) {
                snprintf(err, errlen, "write: %s", strerror(errno));
                return -1;
            }
            txoff += n > 0 ? (size_t)n : 0;
            pm->sent += n > 0 ? (size_t)n : 0;
        }
    }
}

/* Run a pump on a connected socket; returns 0 at EOF, -1 on error (err filled). */
static int run_pump(int fd, struct pump *pm, char *err, size_t errlen)
{
    crypto_hash_sha256_state tx, rx;
    unsigned char *txbuf = malloc(pm->chunk), *rxbuf = malloc(IO_CHUNK);
    int rc = -1;
    if (!txbuf || !rxbuf)
        snprintf(err, errlen, "out of memory");
    else {
        crypto_hash_sha256_init(&tx);
        crypto_hash_sha256_init(&rx);
        if (!pm->hash)
            randombytes_buf(txbuf, pm->chunk);
        set_nonblock(fd, 1);
        rc = pump_loop(fd, pm, &tx, &rx, txbuf, rxbuf, err, errlen);
        crypto_hash_sha256_final(&tx, pm->tx_hash);
        crypto_hash_sha256_final(&rx, pm->rx_hash);
    }
    free(txbuf);
    free(rxbuf);
    return rc;
}

/* Echo `bytes` random bytes through the target and verify them; 0 or -1 (err filled). */
static int roundtrip_once(size_t bytes, unsigned char *hash, char *err, size_t errlen)
{
    struct pump pm = { .limit = bytes, .chunk = IO_CHUNK, .hash = 1 };
    int fd = connect_target();
    if (fd < 0) {
        snprintf(err, errlen, "connect: %s", strerror(errno));
        return -1;
    }
    int rc = run_pump(fd, &pm, err, errlen);
    close(fd);
    if (rc == 0 && (pm.sent != bytes || pm.got != bytes ||
                    memcmp(pm.tx_hash, pm.rx_hash, sizeof pm.tx_hash) != 0)) {
        snprintf(err, errlen, "mismatch: sent %zu received %zu%s", pm.sent, pm.got,
                 pm.sent == pm.got ? " (hash differs)" : "");
        rc = -1;
    }
    if (rc == 0 && hash)
        memcpy(hash, pm.tx_hash, sizeof pm.tx_hash);
    return rc;
}

/* ---- client modes ---- */

/* freeport LO HI: print a port in range that binds on 127.0.0.1. */
static int mode_freeport(char **argv)
{
    unsigned lo = (unsigned)parse_num(argv[0], 1, 65535, "LO");
    unsigned hi = (unsigned)parse_num(argv[1], lo, 65535, "HI");
    for (int i = 0; i < 200; i++) {
        struct sockaddr_in sin = { .sin_family = AF_INET };
        unsigned port = lo + randombytes_uniform(hi - lo + 1);
        sin.sin_port = htons((uint16_t)port);
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            die("socket: %s", strerror(errno));
        int ok = bind(fd, (struct sockaddr *)&sin, sizeof sin) == 0;
        close(fd);
        if (ok) {
            printf("%u\n", port);
            return 0;
        }
    }
    die("no free port in [%u,%u]", lo, hi);
}

/*
 * hop COUNT: microseconds one 64-byte send plus its recv cost on a loopback
 * TCP connection, on one thread: what each relay hop adds to a round trip
 * even when no thread has to wake.
 */
static int mode_hop(char **argv)
{
    unsigned long count = (unsigned long)parse_num(argv[0], 1, 100000000, "COUNT");
    struct sockaddr_in sin = { .sin_family = AF_INET };
    socklen_t len = sizeof sin;
    unsigned char buf[64] = { 0 };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(l, 1) < 0 ||
        getsockname(l, (struct sockaddr *)&sin, &len) < 0)
        die("listen: %s", strerror(errno));
    int a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (a < 0 || connect(a, (struct sockaddr *)&sin, sizeof sin) < 0)
        die("connect: %s", strerror(errno));
    int b = accept(l, NULL, NULL);
    if (b < 0)
        die("accept: %s", strerror(errno));
    set_nodelay(a);
    double t0 = now();
    for (unsigned long i = 0; i < count; i++)
        if (write_all(a, buf, sizeof buf) < 0 || read_exact(b, buf, sizeof buf) < 0)
            die("hop %lu: %s", i, strerror(errno));
    double secs = now() - t0;
    close(a);
    close(b);
    close(l);
    printf("%.2f\n", secs * 1e6 / (double)count);
    return 0;
}

/* roundtrip HOST PORT BYTES: echo random bytes and verify by SHA-256. */
static int mode_roundtrip(char **argv)
{
    size_t bytes = parse_size(argv[2]);
    unsigned char hash[crypto_hash_sha256_BYTES];
    char err[160], hex[crypto_hash_sha256_BYTES * 2 + 1];
    if (roundtrip_once(bytes, hash, err, sizeof err) < 0)
        die("%s", err);
    sodium_bin2hex(hex, sizeof hex, hash, sizeof hash);
    printf("ok %zu %s\n", bytes, hex);
    return 0;
}

/* Shared state of the many-connection test. */
struct many {
    size_t bytes;
    pthread_mutex_t lock;
    unsigned failed;
    char first_err[160];
};

/* Thread body of many: one verified round trip, failures counted. */
static void *many_thread(void *arg)
{
    struct many *m = arg;
    char err[160];
    if (roundtrip_once(m->bytes, NULL, err, sizeof err) < 0) {
        pthread_mutex_lock(&m->lock);
        if (m->failed++ == 0)
            snprintf(m->first_err, sizeof m->first_err, "%s", err);
        pthread_mutex_unlock(&m->lock);
    }
    return NULL;
}

/* many HOST PORT CONNS BYTES: concurrent round trips, one thread each. */
static int mode_many(char **argv)
{
    unsigned conns = (unsigned)parse_num(argv[2], 1, 100000, "connection count");
    struct many m = { .bytes = parse_size(argv[3]) };
    pthread_t *threads = calloc(conns, sizeof *threads);
    if (!threads)
        die("out of memory");
    pthread_mutex_init(&m.lock, NULL);
    for (unsigned i = 0; i < conns; i++)
        if ((errno = spawn(&threads[i], many_thread, &m, 0)) != 0)
            die("pthread_create: %s", strerror(errno));
    for (unsigned i = 0; i < conns; i++)
        pthread_join(threads[i], NULL);
    pthread_mutex_destroy(&m.lock);
    free(threads);
    if (m.failed)
        die("%u of %u connections failed (first: %s)", m.failed, conns, m.first_err);
    printf("ok %u\n", conns);
    return 0;
}

/* halfclose HOST PORT N: send GET, half-close, expect the N-byte pattern. */
static int mode_halfclose(char **argv)
{
    make_pattern(parse_size(argv[2]));
    unsigned char want[crypto_hash_sha256_BYTES], got[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_state h;
    crypto_hash_sha256(want, g_pattern, g_pattern_len);
    crypto_hash_sha256_init(&h);
    int fd = connect_or_die();
    if (write_all(fd, "GET\n", 4) < 0 || shutdown(fd, SHUT_WR) < 0)
        die("send: %s", strerror(errno));
    long long n = read_until(fd, 0, &h);
    if (n < 0)
        die("read: %s", strerror(errno));
    size_t total = (size_t)n;
    close(fd);
    crypto_hash_sha256_final(&h, got);
    if (total != g_pattern_len || memcmp(want, got, sizeof want) != 0)
        die("mismatch: expected %zu received %zu%s", g_pattern_len, total,
            total == g_pattern_len ? " (hash differs)" : "");
    printf("ok %zu\n", g_pattern_len);
    free(g_pattern);
    return 0;
}

/* banner HOST PORT TEXT: the first CRLF-terminated line must equal TEXT. */
static int mode_banner(char **argv)
{
    const char *text = argv[2];
    size_t cap = strlen(text) + 4096, len = 0;
    char *buf = malloc(cap + 1), *eol = NULL;
    if (!buf)
        die("out of memory");
    int fd = connect_or_die();
    while (!eol && len < cap) {
        ssize_t n = read_retry(fd, buf + len, cap - len);
        if (n <= 0)
            die("connection closed before banner line (got %zu bytes)", len);
        len += (size_t)n;
        buf[len] = '\0';
        eol = strstr(buf, "\r\n");
    }
    close(fd);
    if (!eol)
        die("no CRLF within %zu bytes", cap);
    *eol = '\0';
    if (strcmp(buf, text) != 0)
        die("banner mismatch: got '%s'", buf);
    free(buf);
    printf("ok\n");
    return 0;
}

/* waitclose HOST PORT: print seconds until the peer closes. */
static int mode_waitclose(char **argv)
{
    (void)argv;
    double t0 = now();
    int fd = connect_target();
    /* A reset while connecting: the peer accepted, then closed at once. */
    if (fd < 0 && errno == ECONNRESET) {
        printf("%.3f\n", now() - t0);
        return 0;
    }
    if (fd < 0)
        die("connect: %s", strerror(errno));
    read_until(fd, 0, NULL);
    printf("%.3f\n", now() - t0);
    close(fd);
    return 0;
}

/* Read all of stdin into a malloc'd buffer. */
static char *slurp_stdin(size_t *len)
{
    size_t cap = 4096;
    char *buf = malloc(cap);
    ssize_t n;
    *len = 0;
    while (buf && (n = read_retry(STDIN_FILENO, buf + *len, cap - *len)) > 0) {
        *len += (size_t)n;
        if (*len == cap) {
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger)
                free(buf);
            buf = bigger;
        }
    }
    if (!buf)
        die("out of memory");
    return buf;
}

/* raw HOST PORT WAITMS: send stdin, copy the reply to stdout; exit 2 if still open. */
static int mode_raw(char **argv)
{
    long waitms = (long)parse_num(argv[2], 0, 86400000, "WAITMS");
    size_t inlen;
    char *in = slurp_stdin(&inlen), buf[IO_CHUNK];
    int fd = connect_or_die();
    if (write_all(fd, in, inlen) < 0 && errno != EPIPE && errno != ECONNRESET)
        die("send: %s", strerror(errno));
    free(in);
    double deadline = now() + (double)waitms / 1000.0;
    int status = 2;
    for (;;) {
        int left = (int)((deadline - now()) * 1000.0 + 0.999);
        if (left <= 0 || wait_fd(fd, POLLIN, left) == 0)
            break;
        ssize_t n = read_retry(fd, buf, sizeof buf);
        if (n < 0 && errno != ECONNRESET && errno != EPIPE)
            die("read: %s", strerror(errno));
        if (n <= 0) {
            status = 0;
            break;
        }
        if (write_all(STDOUT_FILENO, buf, (size_t)n) < 0)
            die("stdout: %s", strerror(errno));
    }
    close(fd);
    return status;
}

/* COUNT 64-byte round trips on fd, each echo checked; numbered from *seq on. */
static void ping_rounds(int fd, unsigned long count, unsigned long *seq)
{
    unsigned char out[64], in[64];
    randombytes_buf(out, sizeof out);
    for (unsigned long i = 0; i < count; i++, (*seq)++) {
        memcpy(out, seq, sizeof *seq);
        errno = 0;
        if (write_all(fd, out, sizeof out) < 0 || read_exact(fd, in, sizeof in) < 0)
            die("round trip %lu: %s", *seq, errno ? strerror(errno) : "connection closed");
        if (memcmp(in, out, sizeof in) != 0)
            die("round trip %lu: echoed data differs", *seq);
    }
}

/* pingpong HOST PORT COUNT: 64-byte echo round trips, report rate. */
static int mode_pingpong(char **argv)
{
    unsigned long count = (unsigned long)parse_num(argv[2], 1, 1000000000, "COUNT"), seq = 0;
    int fd = connect_or_die();
    set_nodelay(fd);
    double t0 = now();
    ping_rounds(fd, count, &seq);
    double secs = now() - t0;
    close(fd);
    printf("ok %lu %.0f\n", count, secs > 0 ? (double)count / secs : 0.0);
    return 0;
}

/*
 * chat HOST PORT COUNT IDLE: COUNT echo round trips, print "idle", stay idle
 * IDLE seconds, COUNT more, then half-close and expect the echo's EOF.
 */
static int mode_chat(char **argv)
{
    unsigned long count = (unsigned long)parse_num(argv[2], 1, 1000000000, "COUNT"), seq = 0;
    unsigned idle = (unsigned)parse_num(argv[3], 0, 3600, "IDLE");
    char c;
    int fd = connect_or_die();
    set_nodelay(fd);
    ping_rounds(fd, count, &seq);
    printf("idle\n");
    fflush(stdout);
    sleep(idle);
    ping_rounds(fd, count, &seq);
    if (shutdown(fd, SHUT_WR) < 0)
        die("shutdown: %s", strerror(errno));
    ssize_t n = read_retry(fd, &c, 1);
    if (n != 0)
        die("after half-close: %s", n < 0 ? strerror(errno) : "more bytes instead of EOF");
    close(fd);
    printf("ok %lu\n", seq);
    return 0;
}

/* Per-thread counters of the churn benchmark. */
struct churner {
    pthread_t thread;
    double until;
    unsigned long ok, failed;
};

/* One churn connection: send "hi\n", expect exactly the pattern then EOF; 0 or -1.
   With first_ms set, it gets the ms from the start of the connect to the reply's first byte. */
static int churn_once(double *first_ms)
{
    unsigned char buf[16 * 1024];
    size_t got = 0;
    double t0 = now();
    int fd = connect_target();
    if (fd < 0)
        return -1;
    set_nodelay(fd);
    int ok = write_all(fd, "hi\n", 3) == 0;
    while (ok) {
        ssize_t n = read_retry(fd, buf, sizeof buf);
        if (n <= 0) {
            ok = n == 0 && got == g_pattern_len;
            break;
        }
        if (got == 0 && first_ms)
            *first_ms = (now() - t0) * 1000.0;
        ok = got + (size_t)n <= g_pattern_len && !memcmp(g_pattern + got, buf, (size_t)n);
        got += (size_t)n;
    }
    close(fd);
    return ok ? 0 : -1;
}

/* Thread body of churn: open/verify/close connections until the deadline. */
static void *churn_thread(void *arg)
{
    struct churner *c = arg;
    while (now() < c->until) {
        if (churn_once(NULL) == 0)
            c->ok++;
        else
            c->failed++;
    }
    return NULL;
}

/* churn HOST PORT SECONDS PARALLEL N: connection churn benchmark. */
static int mode_churn(char **argv)
{
    double secs = (double)parse_num(argv[2], 1, 86400, "SECONDS");
    unsigned par = (unsigned)parse_num(argv[3], 1, 10000, "PARALLEL");
    make_pattern(parse_size(argv[4]));
    struct churner *cs = calloc(par, sizeof *cs);
    unsigned long ok = 0, failed = 0;
    if (!cs)
        die("out of memory");
    double t0 = now();
    for (unsigned i = 0; i < par; i++) {
        cs[i].until = t0 + secs;
        if ((errno = spawn(&cs[i].thread, churn_thread, &cs[i], 0)) != 0)
            die("pthread_create: %s", strerror(errno));
    }
    for (unsigned i = 0; i < par; i++) {
        pthread_join(cs[i].thread, NULL);
        ok += cs[i].ok;
        failed += cs[i].failed;
    }
    double elapsed = now() - t0;
    free(cs);
    free(g_pattern);
    if (failed)
        die("failed %lu", failed);
    printf("ok %lu %.0f\n", ok, (double)ok / elapsed);
    return 0;
}

/* stream HOST PORT SECONDS: echo throughput benchmark. */
static int mode_stream(char **argv)
{
    double secs = (double)parse_num(argv[2], 1, 86400, "SECONDS");
    struct pump pm = { .chunk = STREAM_CHUNK, .hash = 0 };
    char err[160];
    int fd = connect_or_die();
    double t0 = now();
    pm.until = t0 + secs;
    int rc = run_pump(fd, &pm, err, sizeof err);
    double elapsed = now() - t0;
    close(fd);
    if (rc < 0)
        die("%s", err);
    if (pm.got != pm.sent)
        die("mismatch: sent %zu received %zu", pm.sent, pm.got);
    printf("ok %zu %.1f\n", pm.got, (double)pm.got / 1e6 / elapsed);
    return 0;
}

/* hold HOST PORT CONNS: keep CONNS echo connections open until stdin EOF. */
static int mode_hold(char **argv)
{
    unsigned conns = (unsigned)parse_num(argv[2], 1, 1000000, "connection count");
    int *fds = calloc(conns, sizeof *fds);
    char buf[4096];
    if (!fds)
        die("out of memory");
    for (unsigned i = 0; i < conns; i++) {
        fds[i] = connect_target();
        if (fds[i] < 0)
            die("connect %u: %s", i, strerror(errno));
        if (write_all(fds[i], "ping", 4) < 0 || read_exact(fds[i], buf, 4) < 0 ||
            memcmp(buf, "ping", 4) != 0)
            die("echo on connection %u failed", i);
    }
    printf("ready %u\n", conns);
    fflush(stdout);
    alarm(0);
    while (read_retry(STDIN_FILENO, buf, sizeof buf) > 0)
        ;
    for (unsigned i = 0; i < conns; i++)
        close(fds[i]);
    free(fds);
    return 0;
}

/* ---- hardening modes: slow peers, connection storms, counted churn ---- */

/* Sort helper for doubles. */
static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* slow HOST PORT CONNS RATE WAITSECS: open CONNS connections that send nothing (RATE 0)
   or drip RATE bytes a second of a frame that never ends; print "connected N" once all
   are open, then, when all are closed by the peer or WAITSECS have passed,
   "closed C of N min A median B max D" (seconds from connect to the peer's close). */
static int mode_slow(char **argv)
{
    static const char prefix[] = "{\"Hello\":";
    unsigned conns = (unsigned)parse_num(argv[2], 1, 100000, "connection count");
    unsigned rate = (unsigned)parse_num(argv[3], 0, 1000, "RATE");
    double wait = (double)parse_num(argv[4], 1, 86400, "WAITSECS");
    struct pollfd *p = calloc(conns, sizeof *p);
    double *opened = calloc(conns, sizeof *opened), *closed_at = calloc(conns, sizeof *closed_at);
    size_t sent = 0, drip_max = 200;
    unsigned open_now = conns, nclosed = 0;
    char buf[4096];
    if (!p || !opened || !closed_at)
        die("out of memory");
    for (unsigned i = 0; i < conns; i++) {
        if ((p[i].fd = connect_target()) < 0)
            die("connect %u: %s", i, strerror(errno));
        set_nonblock(p[i].fd, 1);
        p[i].events = POLLIN;
        opened[i] = now();
    }
    printf("connected %u\n", conns);
    fflush(stdout);
    double t0 = now(), next_drip = rate ? t0 + 1.0 / rate : 0, deadline = t0 + wait;
    while (open_now > 0 && now() < deadline) {
        double until = rate && sent < drip_max && next_drip < deadline ? next_drip : deadline;
        int ms = (int)((until - now()) * 1000.0 + 0.999);
        if (poll(p, conns, ms > 0 ? ms : 0) < 0 && errno != EINTR)
            die("poll: %s", strerror(errno));
        int drip = rate && sent < drip_max && now() >= next_drip;
        char byte = sent < sizeof prefix - 1 ? prefix[sent] : '1';
        for (unsigned i = 0; i < conns; i++) {
            int gone = 0;
            if (p[i].fd < 0)
                continue;
            if (p[i].revents) {
                ssize_t n = read(p[i].fd, buf, sizeof buf);
                gone = n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
            }
            if (!gone && drip && send(p[i].fd, &byte, 1, MSG_NOSIGNAL) < 0 && errno != EAGAIN)
                gone = 1;
            if (gone) {
                closed_at[nclosed++] = now() - opened[i];
                close(p[i].fd);
                p[i].fd = -1;
                open_now--;
            }
        }
        if (drip) {
            sent++;
            next_drip += 1.0 / rate;
        }
    }
    for (unsigned i = 0; i < conns; i++)
        if (p[i].fd >= 0)
            close(p[i].fd);
    qsort(closed_at, nclosed, sizeof *closed_at, cmp_double);
    printf("closed %u of %u min %.3f median %.3f max %.3f\n", nclosed, conns,
           nclosed ? closed_at[0] : 0.0, nclosed ? closed_at[nclosed / 2] : 0.0,
           nclosed ? closed_at[nclosed - 1] : 0.0);
    free(p);
    free(opened);
    free(closed_at);
    return 0;
}

/* Work shared by the threads of storm and churncount. */
struct counted {
    unsigned long total, next;
    pthread_mutex_t lock;
    unsigned long failed;
    char first_err[160];
    int churn; /* churn_once per connection, else connect and close */
};

/* Take the next unit of work; 0 when all are taken. */
static int counted_take(struct counted *c)
{
    pthread_mutex_lock(&c->lock);
    int more = c->next < c->total;
    if (more)
        c->next++;
    pthread_mutex_unlock(&c->lock);
    return more;
}

/* Thread body of storm and churncount. */
static void *counted_thread(void *arg)
{
    struct counted *c = arg;
    while (counted_take(c)) {
        int ok;
        char err[160] = "verify failed";
        if (c->churn) {
            errno = 0;
            ok = churn_once(NULL) == 0;
            if (!ok && errno)
                snprintf(err, sizeof err, "%s", strerror(errno));
        } else {
            int fd = connect_target();
            ok = fd >= 0;
            if (ok)
                close(fd);
            else
                snprintf(err, sizeof err, "connect: %s", strerror(errno));
        }
        if (!ok) {
            pthread_mutex_lock(&c->lock);
            if (c->failed++ == 0)
                snprintf(c->first_err, sizeof c->first_err, "%s", err);
            pthread_mutex_unlock(&c->lock);
        }
    }
    return NULL;
}

/* Run COUNT units on PARALLEL threads; prints "ok COUNT RATE" or dies naming failures. */
static int run_counted(struct counted *c, unsigned par)
{
    pthread_t *ts = calloc(par, sizeof *ts);
    if (!ts)
        die("out of memory");
    pthread_mutex_init(&c->lock, NULL);
    double t0 = now();
    for (unsigned i = 0; i < par; i++)
        if ((errno = spawn(&ts[i], counted_thread, c, 0)) != 0)
            die("pthread_create: %s", strerror(errno));
    for (unsigned i = 0; i < par; i++)
        pthread_join(ts[i], NULL);
    double elapsed = now() - t0;
    pthread_mutex_destroy(&c->lock);
    free(ts);
    if (c->failed)
        die("%lu of %lu failed (first: %s)", c->failed, c->total, c->first_err);
    printf("ok %lu %.0f\n", c->total, elapsed > 0 ? (double)c->total / elapsed : 0.0);
    return 0;
}

/* storm HOST PORT COUNT PARALLEL: COUNT connect-and-close cycles, PARALLEL at a time. */
static int mode_storm(char **argv)
{
    struct counted c = { .total = parse_num(argv[2], 1, 100000000, "COUNT") };
    return run_counted(&c, (unsigned)parse_num(argv[3], 1, 10000, "PARALLEL"));
}

/* churncount HOST PORT COUNT PARALLEL N: COUNT churn connections (send "hi\n", expect the
   N-byte pattern then EOF), PARALLEL at a time. */
static int mode_churncount(char **argv)
{
    struct counted c = { .total = parse_num(argv[2], 1, 100000000, "COUNT"), .churn = 1 };
    unsigned par = (unsigned)parse_num(argv[3], 1, 10000, "PARALLEL");
    make_pattern(parse_size(argv[4]));
    int rc = run_counted(&c, par);
    free(g_pattern);
    return rc;
}

/* One connection of a firstbyte burst and what it measured. */
struct firstbyter {
    pthread_barrier_t *start;
    pthread_t thread;
    double ms;
    int rc, err;
};

/* Thread body of firstbyte: wait for the others, then one timed churn connection. */
static void *firstbyte_thread(void *arg)
{
    struct firstbyter *f = arg;
    pthread_barrier_wait(f->start);
    errno = 0;
    f->rc = churn_once(&f->ms);
    f->err = errno;
    return NULL;
}

/* firstbyte HOST PORT COUNT N: COUNT churn connections (send "hi\n", expect the N-byte
   pattern then EOF) started at once; prints "ok COUNT MEDIAN MAX", the ms from each
   connect to the first byte of its reply. */
static int mode_firstbyte(char **argv)
{
    unsigned count = (unsigned)parse_num(argv[2], 1, 1000, "COUNT");
    struct firstbyter *fs = calloc(count, sizeof *fs);
    double *ms = calloc(count, sizeof *ms);
    pthread_barrier_t start;
    if (!fs || !ms)
        die("out of memory");
    make_pattern(parse_size(argv[3]));
    pthread_barrier_init(&start, NULL, count);
    for (unsigned i = 0; i < count; i++) {
        fs[i].start = &start;
        if ((errno = spawn(&fs[i].thread, firstbyte_thread, &fs[i], 0)) != 0)
            die("pthread_create: %s", strerror(errno));
    }
    for (unsigned i = 0; i < count; i++) {
        pthread_join(fs[i].thread, NULL);
        if (fs[i].rc < 0)
            die("connection %u: %s", i, fs[i].err ? strerror(fs[i].err) : "reply differs");
        ms[i] = fs[i].ms;
    }
    pthread_barrier_destroy(&start);
    qsort(ms, count, sizeof *ms, cmp_double);
    printf("ok %u %.1f %.1f\n", count,
           count % 2 ? ms[count / 2] : (ms[count / 2 - 1] + ms[count / 2]) / 2, ms[count - 1]);
    free(fs);
    free(ms);
    free(g_pattern);
    return 0;
}

/* manyaddr HOST PORT ADDRS HOLDMS SECONDS: from ADDRS source addresses (127.1.X.Y, from the
   TCPKIT_ADDR_FIRST'th on; all from TCPKIT_FROM if set), one connection each, closed after
   HOLDMS and opened again, for SECONDS; prints "ok COUNT". */
static int mode_manyaddr(char **argv)
{
    unsigned n = (unsigned)parse_num(argv[2], 1, 60000, "ADDRS");
    long hold = parse_num(argv[3], 1, 60000, "HOLDMS");
    double end = now() + (double)parse_num(argv[4], 1, 3600, "SECONDS");
    const char *first_env = getenv("TCPKIT_ADDR_FIRST");
    unsigned first = first_env ? (unsigned)parse_num(first_env, 0, 60000, "TCPKIT_ADDR_FIRST") : 0;
    int *fd = calloc(n, sizeof(*fd));
    double *since = calloc(n, sizeof(*since));
    unsigned long count = 0;
    if (fd == NULL || since == NULL || g_addr.ss_family != AF_INET || first + n > 62500)
        die("manyaddr: IPv4 only, 62500 addresses at most, and memory");
    for (unsigned i = 0; i < n; i++)
        fd[i] = -1;
    while (now() < end) {
        for (unsigned i = 0; i < n; i++) {
            if (fd[i] != -1 && now() - since[i] < hold / 1000.0)
                continue;
            if (fd[i] != -1)
                close(fd[i]);
            struct sockaddr_in from = { .sin_family = AF_INET };
            from.sin_addr.s_addr = htonl(0x7f010000u | (((first + i) / 250) << 8) | ((first + i) % 250 + 1));
            fd[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (fd[i] < 0)
                die("socket: %s", strerror(errno));
            if (g_fromlen > 0)
                memcpy(&from, &g_from, sizeof from);
            if (bind(fd[i], (struct sockaddr *)&from, sizeof from) < 0)
                die("bind: %s", strerror(errno));
            if (connect(fd[i], (struct sockaddr *)&g_addr, g_addrlen) < 0 && errno != EINPROGRESS)
                die("connect: %s", strerror(errno));
            since[i] = now();
            count++;
        }
        sleep_ms(1);
    }
    printf("ok %lu\n", count);
    return 0;
}

/* ---- dispatch ---- */

struct mode {
    const char *name;
    int nargs;  /* exact argument count, -1 when the mode parses its own */
    int timed;  /* arm the global alarm */
    int client; /* first two arguments are HOST PORT */
    int (*run)(char **argv);
    const char *usage;
};

/* finrst HOST PORT: send a line, half-close, then reset after 300 ms; print "ok". */
static int mode_finrst(char **argv)
{
    (void)argv;
    struct linger lg = { 1, 0 };
    int fd = connect_or_die();
    if (write_all(fd, "half-closed, then reset\n", 24) < 0)
        die("send: %s", strerror(errno));
    if (shutdown(fd, SHUT_WR) < 0)
        die("shutdown: %s", strerror(errno));
    sleep_ms(300);
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
    puts("ok");
    return 0;
}

/* The shared state of one hellorace round. */
struct race {
    pthread_barrier_t start;
    pthread_mutex_t lock;
    unsigned granted, wrong, refused;
    char first_err[400];
};

/* Read one NUL-terminated frame of at most cap-1 bytes from fd into buf; 0, or -1. */
static int read_frame0(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t k = read_retry(fd, buf + n, 1);
        if (k <= 0)
            return -1;
        if (buf[n] == '\0')
            return 0;
        n++;
    }
    return -1;
}

/* How long hellorace's racers wait, all connected, before saying Hello. */
static long g_hold_ms;

/* An argument of a hellorace thread: the round and the racer's port. */
struct racer {
    struct race *race;
    unsigned port;
};

/* One racer: connect, wait for the others, say Hello for its own port, check the reply. */
static void *racer_thread(void *arg)
{
    struct racer *me = arg;
    struct race *r = me->race;
    char frame[300], want[64], err[400] = "";
    int fd = connect_target();
    pthread_barrier_wait(&r->start);
    sleep_ms(g_hold_ms);
    if (fd < 0) {
        snprintf(err, sizeof err, "connect: %s", strerror(errno));
    } else {
        int n = snprintf(frame, sizeof frame, "{\"Hello\":%u}", me->port);
        snprintf(want, sizeof want, "{\"Hello\":%u}", me->port);
        if (write_all(fd, frame, (size_t)n + 1) < 0 || read_frame0(fd, frame, sizeof frame) < 0)
            snprintf(err, sizeof err, "port %u: no reply", me->port);
        else if (strcmp(frame, want) != 0)
            snprintf(err, sizeof err, "port %u: got %s", me->port, frame);
    }
    pthread_mutex_lock(&r->lock);
    if (err[0] == '\0')
        r->granted++;
    else if (strstr(err, "got {\"Hello\""))
        r->wrong++;
    else
        r->refused++;
    if (err[0] != '\0' && r->first_err[0] == '\0')
        snprintf(r->first_err, sizeof r->first_err, "%s", err);
    pthread_mutex_unlock(&r->lock);
    /* Held until every racer has its answer, so no port is freed mid-round. */
    pthread_barrier_wait(&r->start);
    if (fd >= 0)
        close(fd);
    return NULL;
}

/* hellorace HOST PORT COUNT FIRST ROUNDS GAPMS HOLDMS: COUNT control connections, all made
   HOLDMS before, say Hello for ports FIRST..FIRST+COUNT-1 at the same moment, ROUNDS times
   GAPMS apart; each must get its own port.
   Prints "ok COUNT*ROUNDS", else "granted G wrong W refused R: first error". */
static int mode_hellorace(char **argv)
{
    unsigned count = (unsigned)parse_num(argv[2], 1, 1000, "COUNT");
    unsigned first = (unsigned)parse_num(argv[3], 1, 65535, "FIRST");
    unsigned rounds = (unsigned)parse_num(argv[4], 1, 1000, "ROUNDS");
    long gap = (long)parse_num(argv[5], 0, 60000, "GAPMS");
    g_hold_ms = (long)parse_num(argv[6], 0, 60000, "HOLDMS");
    struct race r;
    struct racer *racers = calloc(count, sizeof *racers);
    pthread_t *t = calloc(count, sizeof *t);
    unsigned granted = 0, wrong = 0, refused = 0;
    char first_err[400] = "";
    if (!racers || !t || first + count - 1 > 65535)
        die("bad hellorace arguments");
    for (unsigned round = 0; round < rounds; round++) {
        memset(&r, 0, sizeof r);
        pthread_barrier_init(&r.start, NULL, count);
        pthread_mutex_init(&r.lock, NULL);
        for (unsigned i = 0; i < count; i++) {
            racers[i] = (struct racer){ &r, first + i };
            if (spawn(&t[i], racer_thread, &racers[i], 0) != 0)
                die("thread: %s", strerror(errno));
        }
        for (unsigned i = 0; i < count; i++)
            pthread_join(t[i], NULL);
        granted += r.granted;
        wrong += r.wrong;
        refused += r.refused;
        if (first_err[0] == '\0')
            snprintf(first_err, sizeof first_err, "%s", r.first_err);
        pthread_barrier_destroy(&r.start);
        pthread_mutex_destroy(&r.lock);
        /* The server closes each port once it sees its client gone; wait for that. */
        sleep_ms(gap);
    }
    free(racers);
    free(t);
    if (granted == count * rounds) {
        printf("ok %u\n", granted);
        return 0;
    }
    printf("granted %u wrong %u refused %u: %s\n", granted, wrong, refused, first_err);
    return 1;
}

static const struct mode modes[] = {
    { "freeport", 2, 1, 0, mode_freeport, "LO HI" },
    { "hop", 1, 1, 0, mode_hop, "COUNT" },
    { "serve", -1, 0, 0, mode_serve, "echo|sink|mute|close|proxyhdr|banner TEXT|say TEXT|answer HEX|reply N|churn N [--host IP]" },
    { "roundtrip", 3, 1, 1, mode_roundtrip, "HOST PORT BYTES" },
    { "many", 4, 1, 1, mode_many, "HOST PORT CONNS BYTES" },
    { "halfclose", 3, 1, 1, mode_halfclose, "HOST PORT N" },
    { "banner", 3, 1, 1, mode_banner, "HOST PORT TEXT" },
    { "waitclose", 2, 1, 1, mode_waitclose, "HOST PORT" },
    { "raw", 3, 1, 1, mode_raw, "HOST PORT WAITMS" },
    { "pingpong", 3, 1, 1, mode_pingpong, "HOST PORT COUNT" },
    { "chat", 4, 1, 1, mode_chat, "HOST PORT COUNT IDLE" },
    { "churn", 5, 1, 1, mode_churn, "HOST PORT SECONDS PARALLEL N" },
    { "stream", 3, 1, 1, mode_stream, "HOST PORT SECONDS" },
    { "hold", 3, 1, 1, mode_hold, "HOST PORT CONNS" },
    { "serveat", -1, 0, 0, mode_serveat, "PORT echo|sink|mute|close|proxyhdr|banner TEXT|say TEXT|answer HEX|reply N|churn N [--host IP]" },
    { "delay", -1, 1, 0, mode_delay, "HOST PORT ONE_WAY_MS [--handshake MS] [--port P] [--host IP]" },
    { "slow", 5, 1, 1, mode_slow, "HOST PORT CONNS RATE WAITSECS" },
    { "storm", 4, 1, 1, mode_storm, "HOST PORT COUNT PARALLEL" },
    { "manyaddr", 5, 1, 1, mode_manyaddr, "HOST PORT ADDRS HOLDMS SECONDS" },
    { "churncount", 5, 1, 1, mode_churncount, "HOST PORT COUNT PARALLEL N" },
    { "finrst", 2, 1, 1, mode_finrst, "HOST PORT" },
    { "badproxy", 3, 0, 0, mode_badproxy, "HOST PORT 502|407|close|reset" },
    { "hellorace", 7, 1, 1, mode_hellorace, "HOST PORT COUNT FIRST ROUNDS GAPMS HOLDMS" },
    { "firstbyte", 4, 1, 1, mode_firstbyte, "HOST PORT COUNT N" },
};

/* Seconds for the global deadline from TCPKIT_TIMEOUT (default 60). */
static unsigned timeout_secs(void)
{
    const char *s = getenv("TCPKIT_TIMEOUT");
    return s && *s ? (unsigned)parse_num(s, 1, 1000000, "TCPKIT_TIMEOUT") : 60;
}

int main(int argc, char **argv)
{
    struct sigaction sa;
    if (sodium_init() < 0)
        die("sodium_init failed");
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    if (argc >= 2 && !strcmp(argv[1], "help")) {
        for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
            printf("tcpkit %s %s\n", modes[i].name, modes[i].usage);
        return 0;
    }
    if (argc < 2)
        die("usage: tcpkit MODE ARGS... (see 'tcpkit help')");
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        const struct mode *m = &modes[i];
        if (strcmp(argv[1], m->name) != 0)
            continue;
        if (m->nargs >= 0 && argc - 2 != m->nargs)
            die("usage: tcpkit %s %s", m->name, m->usage);
        if (m->timed)
            alarm(timeout_secs());
        if (m->client)
            set_target(argv[2], argv[3]);
        return m->run(argv + 2);
    }
    die("unknown mode '%s' (see 'tcpkit help')", argv[1]);
}
