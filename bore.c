/*
 * bore: expose a local TCP port through a remote server.
 *
 * One binary, two halves: `bore server` on a machine with a public address,
 * `bore local` next to the service.  Blocking I/O with poll() and one thread
 * per control session and per proxied connection.
 *
 * Sections, in order: platform, shared (time, logging, fds, sockets, lists,
 * threads, frames), relay, protocol (message codec), auth, server, client,
 * main; the longer ones are cut into parts marked "----".
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

/* ==================================================================== */
/* Platform: Linux fast paths, and what stands in for them elsewhere    */
/* ==================================================================== */

/*
 * bore builds on any POSIX system with poll() and threads, and `bore local`
 * on Windows.  The calls only some systems have are wrapped here, each with
 * a fallback that keeps what a user sees: the logic below never asks which
 * system it runs on.
 */

#ifdef _WIN32
/* Windows 10 and later; mingw's own printf, which knows %zu; gmtime_r. */
#define _WIN32_WINNT 0x0A00
#define __USE_MINGW_ANSI_STDIO 1
#define _POSIX_THREAD_SAFE_FUNCTIONS 200112L
#include <winsock2.h>
#include <ws2tcpip.h>
#else
#include <arpa/inet.h>
#include <err.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "bore.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

/* A send to a peer that left must not raise SIGPIPE; where no flag says so, it is ignored. */
#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

/* Worker stacks are plain anonymous memory where the kernel has no stack flag. */
#ifndef MAP_STACK
#define MAP_STACK 0
#endif

#ifdef _WIN32
/* Windows, for `bore local` (main refuses `bore server`): Winsock, its errors made errno;
 * select() for poll(); loopback socket pairs for pipes; console events for signals. */
static const char *const server_missing =
    "'bore server' is not available on Windows: run it on Linux, macOS or a BSD";
typedef ULONG nfds_t;
typedef USHORT in_port_t;
#define SHUT_WR SD_SEND
#define SHUT_RDWR SD_BOTH
#define MSG_DONTWAIT 0
#define O_CLOEXEC 0
#define O_NONBLOCK 0
#define O_NOCTTY 0
#define F_GETFL 3
#define F_SETFL 4
#define F_SETFD 2
#define FD_CLOEXEC 1
#define SIGHUP 1
#define SIGUSR1 10
#define SA_RESTART 0
/* Windows 10 1709's keepalive options; TCP_MAXRT, seconds of retransmission, by macOS's name. */
#define TCP_KEEPIDLE 3
#define TCP_KEEPCNT 16
#define TCP_KEEPINTVL 17
#define TCP_RXT_CONNDROPTIME 5

/* Winsock's errors as errno values, and glibc's text for them (NULL: the C runtime's) and for
 * the codes themselves, as SO_ERROR gives them. */
#define WSA_E(e, text) { WSA##e, e, text }
static const struct {
	int wsa, err;
	const char *text;
} wsa_errors[] = {
	WSA_E(ECONNREFUSED, "Connection refused"), WSA_E(ETIMEDOUT, "Connection timed out"),
	WSA_E(ECONNRESET, "Connection reset by peer"), WSA_E(ENOBUFS, "No buffer space available"),
	WSA_E(ECONNABORTED, "Software caused connection abort"),
	WSA_E(ENETUNREACH, "Network is unreachable"), WSA_E(EHOSTUNREACH, "No route to host"),
	WSA_E(EADDRINUSE, "Address already in use"),
	WSA_E(EADDRNOTAVAIL, "Cannot assign requested address"),
	WSA_E(EAFNOSUPPORT, "Address family not supported by protocol"),
	WSA_E(EWOULDBLOCK, NULL), WSA_E(EINTR, NULL), WSA_E(EMFILE, NULL), WSA_E(EACCES, NULL),
	WSA_E(EINVAL, NULL), { WSAESHUTDOWN, EPIPE, NULL },
	{ 0, ECANCELED, "Operation canceled" }, { 0, EIO, "Input/output error" },
};
#define WSA_ERRORS (sizeof(wsa_errors) / sizeof(wsa_errors[0]))

/* What a Winsock call returned; at -1 (SOCKET_ERROR, INVALID_SOCKET) errno from its error. */
static int
wsa_rc(long long rc)
{
	size_t i;

	for (i = 0; rc == -1 && i < WSA_ERRORS && wsa_errors[i].wsa != WSAGetLastError(); i++)
		;
	if (rc == -1)
		errno = i < WSA_ERRORS ? wsa_errors[i].err : EIO;
	return ((int)rc);
}

static const char *
win_strerror(int e)
{
	size_t i;

	for (i = 0; i < WSA_ERRORS && ((wsa_errors[i].err != e && wsa_errors[i].wsa != e) ||
	    wsa_errors[i].text == NULL); i++)
		;
	return (i < WSA_ERRORS ? wsa_errors[i].text : strerror(e));
}
#define strerror(e) win_strerror(e)

/* err(3), errx(3) and dprintf(3), which mingw lacks. */
#define errx(status, ...) (fprintf(stderr, "bore: " __VA_ARGS__), fputc('\n', stderr), exit(status))
#define err(status, ...) (fprintf(stderr, "bore: " __VA_ARGS__), \
	fprintf(stderr, ": %s\n", strerror(errno)), exit(status))
#define dprintf(fd, ...) (fprintf((fd) == 1 ? stdout : stderr, __VA_ARGS__), fflush(NULL))

/* Before main: start Winsock; stdout and stderr with no \n made \r\n. */
static void __attribute__((constructor))
win_start(void)
{
	WSADATA wsa;

	if (_setmode(1, _O_BINARY), _setmode(2, _O_BINARY), WSAStartup(MAKEWORD(2, 2), &wsa) != 0)
		errx(1, "could not start Winsock");
}

/* F_SETFL makes a socket non-blocking; nothing else of fcntl() is needed. */
static int
win_fcntl(int fd, int cmd, ...)
{
	u_long on = 1;

	return (cmd == F_SETFL ? wsa_rc(ioctlsocket((SOCKET)fd, FIONBIO, &on)) : 0);
}

/* connect(); to loopback with SIO_TCP_INITIAL_RTO, no SYN retransmissions, as libuv does: Windows
 * retries a refused loopback SYN for 2 s, which ::1 for localhost would cost every visitor. */
static int
win_connect(int fd, const struct sockaddr *sa, socklen_t len)
{
	struct { USHORT rtt; UCHAR max_syn; } rto = { (UCHAR)-2, (UCHAR)-2 };
	const struct sockaddr_in *sin = (const struct sockaddr_in *)(uintptr_t)sa;
	DWORD n;

	if (sa->sa_family == AF_INET6 ? IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)
	    (uintptr_t)sa)->sin6_addr) : ntohl(sin->sin_addr.s_addr) >> 24 == 127)
		(void)WSAIoctl((SOCKET)fd, _WSAIOW(IOC_VENDOR, 17), &rto, sizeof(rto), NULL, 0, &n,
		    NULL, NULL);
	if (connect((SOCKET)fd, sa, len) == 0)
		return (0);
	return (WSAGetLastError() == WSAEWOULDBLOCK ? (errno = EINPROGRESS, -1) : wsa_rc(-1));
}

/* poll() by select(): WSAPoll's POLLHUP at a FIN would spin a half-closed relay or look reset. */
static int
win_poll(struct pollfd *p, nfds_t n, int ms)
{
	struct timeval tv = { ms / 1000, ms % 1000 * 1000 };
	fd_set in = { 0 }, out = { 0 }, ex = { 0 };
	nfds_t i;
	int ready = 0;

	for (i = 0; i < n; i++) {
		if (p[i].fd != INVALID_SOCKET && (p[i].events & POLLIN))
			FD_SET(p[i].fd, &in);
		if (p[i].fd != INVALID_SOCKET && (p[i].events & POLLOUT)) {
			FD_SET(p[i].fd, &out);
			FD_SET(p[i].fd, &ex);
		}
	}
	if (in.fd_count + out.fd_count == 0)
		Sleep(ms < 0 ? INFINITE : (DWORD)ms);
	else if (select(0, &in, &out, &ex, ms < 0 ? NULL : &tv) == SOCKET_ERROR)
		return (wsa_rc(-1));
	for (i = 0; i < n; i++) {
		p[i].revents = (FD_ISSET(p[i].fd, &in) ? POLLIN : 0) |
		    (FD_ISSET(p[i].fd, &out) ? POLLOUT : 0) |
		    (FD_ISSET(p[i].fd, &ex) ? POLLERR : 0);
		ready += p[i].revents != 0;
	}
	return (ready);
}

/* read (op 0), write (1) or close (2) a socket, else a C runtime fd: sockets are kernel
 * handles, multiples of 4, and bore's C runtime fds are stdio and one file at a time, at 3. */
static int
win_io(int fd, void *buf, size_t len, int op)
{
	int n = op == 2 ? closesocket((SOCKET)fd) : op ? send((SOCKET)fd, buf, (int)len, 0) :
	    recv((SOCKET)fd, buf, (int)len, 0);

	if (n != SOCKET_ERROR || WSAGetLastError() != WSAENOTSOCK)
		return (wsa_rc(n));
	return (op == 2 ? _close(fd) : op ? _write(fd, buf, (unsigned)len) :
	    _read(fd, buf, (unsigned)len));
}

/* Ctrl+C is SIGINT, Ctrl+Break SIGUSR1 (status lines), a closed console SIGTERM; Windows
 * ends the process once this returns from a close, so it waits for main's exit after the drain. */
static void (*console_handler)(int);
static BOOL WINAPI
on_console(DWORD event)
{
	console_handler(event == CTRL_C_EVENT ? SIGINT : event == CTRL_BREAK_EVENT ? SIGUSR1 :
	    SIGTERM);
	if (event != CTRL_C_EVENT && event != CTRL_BREAK_EVENT)
		Sleep(INFINITE);
	return (TRUE);
}

/* bore gives every signal one handler; NULL, FALSE: take Ctrl+C though a parent ignored it. */
struct sigaction { void (*sa_handler)(int); int sa_flags, sa_mask; };
#define sigaction(sig, sa, old) (console_handler = (sa)->sa_handler, \
	SetConsoleCtrlHandler(NULL, FALSE), SetConsoleCtrlHandler(on_console, TRUE) ? 0 : -1)
#define sigemptyset(set) (*(set) = 0)
/* No SIGPIPE: a send to a peer that left fails with an error. */
#define signal(sig, fn) SIG_DFL

/* winpthreads takes a stack's size but not its memory: spawn()'s is reserved address only. */
#define mmap(addr, len, prot, flags, fd, off) VirtualAlloc(NULL, len, MEM_RESERVE, PAGE_NOACCESS)
#define MAP_FAILED NULL
#define mprotect(addr, len, prot) 0
#define munmap(addr, len) VirtualFree(addr, 0, MEM_RELEASE)
#define pthread_attr_setstack(attr, stack, size) pthread_attr_setstacksize(attr, size)
#define getpagesize() 4096

/* No fd limit for sockets: bore counts against a fixed one. */
struct rlimit { unsigned long long rlim_cur, rlim_max; };
#define getrlimit(res, rl) ((rl)->rlim_cur = (rl)->rlim_max = 8192, 0)
#define setrlimit(res, rl) 0

#define socket(family, type, proto) wsa_rc((long long)socket(family, type, proto))
#define accept(fd, sa, len) wsa_rc((long long)accept((SOCKET)(fd), sa, len))
#define send(fd, buf, len, flags) wsa_rc(send((SOCKET)(fd), (const char *)(buf), (int)(len), flags))
#define recv(fd, buf, len, flags) wsa_rc(recv((SOCKET)(fd), (char *)(buf), (int)(len), flags))
#define bind(fd, sa, len) wsa_rc(bind((SOCKET)(fd), sa, len))
#define listen(fd, n) wsa_rc(listen((SOCKET)(fd), n))
#define shutdown(fd, how) wsa_rc(shutdown((SOCKET)(fd), how))
#define getpeername(fd, sa, len) wsa_rc(getpeername((SOCKET)(fd), sa, len))
#define getsockname(fd, sa, len) wsa_rc(getsockname((SOCKET)(fd), sa, len))
#define setsockopt(fd, level, name, val, len) \
	wsa_rc(setsockopt((SOCKET)(fd), level, name, (const char *)(val), len))
#define getsockopt(fd, level, name, val, len) \
	wsa_rc(getsockopt((SOCKET)(fd), level, name, (char *)(val), len))
#define connect(fd, sa, len) win_connect(fd, sa, len)
#define poll(p, n, ms) win_poll(p, n, ms)
#define read(fd, buf, len) win_io(fd, buf, len, 0)
#define write(fd, buf, len) win_io(fd, (void *)(uintptr_t)(buf), len, 1)
#define close(fd) win_io(fd, NULL, 0, 2)
/* Files in binary mode; /dev/null is NUL. */
#define open(path, flags) _open(strcmp(path, "/dev/null") ? path : "NUL", (flags) | _O_BINARY)
#define fcntl win_fcntl

/* A pipe as two loopback sockets, as select() takes only sockets: p[0] reads, p[1] writes.
 * Another process may connect first: only the peer whose address is our end's is taken. */
static int
win_pipe(int p[2])
{
	struct sockaddr_in a = { .sin_family = AF_INET }, mine, peer;
	socklen_t alen = sizeof(a), mlen = sizeof(mine), plen = sizeof(peer);
	int l, one = 1;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	p[0] = p[1] = -1;
	if ((l = socket(AF_INET, SOCK_STREAM, 0)) == -1)
		return (-1);
	if (setsockopt(l, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, &one, sizeof(one)) == 0 &&
	    bind(l, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(l, 1) == 0 &&
	    getsockname(l, (struct sockaddr *)&a, &alen) == 0 &&
	    (p[1] = socket(AF_INET, SOCK_STREAM, 0)) != -1 &&
	    connect(p[1], (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(p[1], (struct sockaddr *)&mine, &mlen) == 0)
		while ((p[0] = accept(l, (struct sockaddr *)&peer, &plen)) != -1 &&
		    memcmp(&peer.sin_port, &mine.sin_port, 6) != 0)
			close(p[0]), plen = sizeof(peer);
	close(l);
	if (p[0] != -1)
		/* A wake-up is one byte: Nagle must not hold it back. */
		return (setsockopt(p[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)), 0);
	if (p[1] != -1)
		close(p[1]);
	return (-1);
}
#define pipe(p) win_pipe(p)
#else
static const char *const server_missing = NULL;
#endif

#if defined(SOCK_NONBLOCK) && defined(SOCK_CLOEXEC)
/* Sockets and pipes are made non-blocking and close-on-exec in one call (Linux, the BSDs). */

/* A non-blocking, close-on-exec TCP socket of family. */
static int
tcp_socket(int family)
{
	return (socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
}

/* Accept a connection on lfd as a non-blocking, close-on-exec socket. */
static int
accept_nb(int lfd, struct sockaddr *sa, socklen_t *len)
{
	return (accept4(lfd, sa, len, SOCK_NONBLOCK | SOCK_CLOEXEC));
}

/* A non-blocking, close-on-exec pipe. */
static int
pipe_nb(int p[2])
{
	return (pipe2(p, O_NONBLOCK | O_CLOEXEC));
}
#else
/* Elsewhere (macOS; Windows by win_fcntl) fcntl() says it after the fact: no thread here
 * ever forks or execs. */

/* fd made non-blocking and close-on-exec; -1 (fd closed) if that fails. */
static int
nonblock_cloexec(int fd)
{
	int fl, saved;

	if (fd == -1)
		return (-1);
	if ((fl = fcntl(fd, F_GETFL)) != -1 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) != -1 &&
	    fcntl(fd, F_SETFD, FD_CLOEXEC) != -1)
		return (fd);
	saved = errno;
	close(fd);
	errno = saved;
	return (-1);
}

static int
tcp_socket(int family)
{
	return (nonblock_cloexec(socket(family, SOCK_STREAM, 0)));
}

static int
accept_nb(int lfd, struct sockaddr *sa, socklen_t *len)
{
	return (nonblock_cloexec(accept(lfd, sa, len)));
}

static int
pipe_nb(int p[2])
{
	if (pipe(p) == -1)
		return (-1);
	/* nonblock_cloexec closes the end it fails on; close the other. */
	if (nonblock_cloexec(p[0]) == -1) {
		close(p[1]);
		return (-1);
	}
	if (nonblock_cloexec(p[1]) == -1) {
		close(p[0]);
		return (-1);
	}
	return (0);
}
#endif

/* Capacity asked of each relay pipe, and the least worth splicing through. */
#define PIPE_SIZE (256 * 1024)
#define PIPE_MIN_USEFUL (64 * 1024)

#ifdef __linux__
/* Relays splice() through kernel pipes: the bytes never visit user space. */
#define HAVE_SPLICE 1

/* Move up to len bytes from fd `from` to fd `to`, one of them a pipe, without blocking. */
static ssize_t
splice_nb(int from, int to, size_t len)
{
	return (splice(from, NULL, to, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK));
}

/* A relay pipe of PIPE_SIZE, or -1 when the kernel gives less than is worth splicing through. */
static int
relay_pipe(int p[2])
{
	if (pipe_nb(p) == -1)
		return (-1);
	/* Bigger pipes mean fewer wake-ups per megabyte; refusal leaves the default. */
	(void)fcntl(p[0], F_SETPIPE_SZ, PIPE_SIZE);
	/* Past the per-user pipe quota the kernel hands out 2-page pipes: copy instead. */
	if (fcntl(p[0], F_GETPIPE_SZ) >= PIPE_MIN_USEFUL)
		return (0);
	close(p[0]);
	close(p[1]);
	return (-1);
}
#else
/* No splice(): relays copy through user-space buffers. */
#define HAVE_SPLICE 0
#define splice_nb(from, to, len) (errno = ENOSYS, (ssize_t)-1)
#define relay_pipe(p) (-1)
#endif

/* Set an int socket option; -1 (errno) if refused. */
static int
set_opt(int fd, int level, int name, int value)
{
	return (setsockopt(fd, level, name, &value, sizeof(value)));
}

/* Acknowledge what comes next on fd at once (Linux): a proxy between holds a small write
 * until the one before is acknowledged (Nagle), which a delayed ACK makes 40 ms. */
static void
ack_at_once(int fd)
{
#ifdef TCP_QUICKACK
	(void)set_opt(fd, IPPROTO_TCP, TCP_QUICKACK, 1);
#endif
	(void)fd;
}

/* Notice a vanished peer within about USER_TIMEOUT_MS, not after TCP's minutes. */
#define KEEPALIVE_IDLE_S 10
#define KEEPALIVE_INTERVAL_S 5
#define KEEPALIVE_COUNT 3
#define USER_TIMEOUT_MS 25000

/*
 * Keepalive probes while idle, and a bound on unacknowledged data while
 * not.  macOS names the idle time TCP_KEEPALIVE and bounds retransmission
 * in seconds; where neither bound exists, keepalive alone notices a peer
 * that vanished while idle.
 */
static void
set_liveness(int fd)
{
	(void)set_opt(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
#if defined(TCP_KEEPIDLE)
	(void)set_opt(fd, IPPROTO_TCP, TCP_KEEPIDLE, KEEPALIVE_IDLE_S);
#elif defined(TCP_KEEPALIVE)
	(void)set_opt(fd, IPPROTO_TCP, TCP_KEEPALIVE, KEEPALIVE_IDLE_S);
#endif
#if defined(TCP_KEEPINTVL) && defined(TCP_KEEPCNT)
	(void)set_opt(fd, IPPROTO_TCP, TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S);
	(void)set_opt(fd, IPPROTO_TCP, TCP_KEEPCNT, KEEPALIVE_COUNT);
#endif
#if defined(TCP_USER_TIMEOUT)
	(void)set_opt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, USER_TIMEOUT_MS);
#elif defined(TCP_RXT_CONNDROPTIME)
	(void)set_opt(fd, IPPROTO_TCP, TCP_RXT_CONNDROPTIME, USER_TIMEOUT_MS / 1000);
#endif
}

/*
 * glibc keeps up to 8 malloc arenas per core, and malloc_trim cannot give
 * back the free top of any but the first (up to ~130 KiB each after a
 * burst); threads that mostly wait in poll() contend little for a few.
 */
#define MALLOC_ARENAS 4

/* Cap malloc's arenas, before any thread starts. */
static void
heap_setup(void)
{
#ifdef __GLIBC__
	(void)mallopt(M_ARENA_MAX, MALLOC_ARENAS);
#endif
}

/* Give the heap a burst left free back to the system (other allocators do it as they go). */
static void
heap_trim(void)
{
#ifdef __GLIBC__
	malloc_trim(0);
#endif
}

/* ==================================================================== */
/* Shared: time, logging, fds, sockets, lists, worker threads, frames   */
/* ==================================================================== */

/* ---- Shared: time ------------------------------------------------- */

/* Microseconds on the monotonic clock. */
static int64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
}

/* Milliseconds on the monotonic clock. */
static int64_t
now_ms(void)
{
	return (now_us() / 1000);
}

/* Milliseconds left until deadline, clamped for poll(). */
static int
ms_until(int64_t deadline)
{
	int64_t left = deadline - now_ms();

	if (left < 0)
		return (0);
	return (left > INT_MAX ? INT_MAX : (int)left);
}

/* When a status line says something began: UTC wall time, as 2026-01-31T12:00:00Z. */
static const char *
utc_str(time_t t, char *out, size_t cap)
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, cap, "?");
	return (out);
}

/* ---- Shared: logging ---------------------------------------------- */

/* Log levels; LOG_ALWAYS is shown whatever BORE_LOG says, unless it says off. */
enum log_level { LOG_ALWAYS, LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG, LOG_TRACE };

/* A limit that keeps biting is logged again after this long, not at every bite. */
#define LIMIT_LOG_MS 5000

/* A line a peer can cause again and again: logged `lines` times per LIMIT_LOG_MS, then counted. */
struct log_limit {
	int lines;       /* lines a window may log (0: one); set before threads start */
	int used;        /* lines logged in this window */
	int64_t next;    /* the next window starts then */
	int64_t last;    /* when the last line was logged */
	int held;        /* lines held back since then: the next line logged says how many */
	uint64_t count;  /* lines so far, logged or held: --metrics counts refusals by them */
};

/* Lines a peer can cause, each limited by logs.peer_lines[its kind]: server's, then client's. */
enum peer_line {
	PL_ALLOW_CONTROL, PL_STARTUPS, PL_HANDSHAKE, PL_FIRST, PL_UNEXPECTED, PL_MISSING,
	PL_SESSIONS, PL_NO_PORT, PL_ALLOW, PL_MAX_CONNS, PL_VISITOR_RATE, PL_ACCEPT, PL_METRICS,
	PL_VISITOR_IGNORED, PL_VISITOR, PL_KINDS
};

/* How lines are written, set before threads start; and the rate limits, under limits_lock. */
static struct {
	int level;           /* the most verbose level shown (BORE_LOG); below LOG_ALWAYS for off */
	int journal;         /* stderr is the journal's stream: <N> priorities, no timestamps */
	int json;            /* --json: each line a JSON object, as the Rust bore writes them */
	const char *target;  /* the JSON lines' target: the Rust bore's module that runs */
	pthread_mutex_t limits_lock;             /* guards every struct log_limit */
	struct log_limit peer_lines[PL_KINDS];
} logs = { .limits_lock = PTHREAD_MUTEX_INITIALIZER };  /* level and target set first in main */

/* Set in a thread whose failures will be retried: its errors are logged as warnings. */
static _Thread_local int log_retrying;

/* Set in a visitor's thread to its id: its errors and warnings name it, limited by PL_VISITOR. */
static _Thread_local const char *log_visitor;

static int json_escape(const char *text, char *out, size_t cap, size_t *n);
static void log_limited(struct log_limit *l, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* msg as one line to stderr in one write: time (journal: <priority>), level; or --json's. */
static void __attribute__((noinline))
log_line(int level, const char *msg)
{
	static const char *const names[] = { "INFO", "ERROR", "WARN", "INFO", "DEBUG", "TRACE" };
	static const int priorities[] = { 6, 3, 4, 6, 7, 7 };  /* info, err, warning, debug */
	char line[768 + 160], when[32];  /* a message and a prefix (JSON: most escapes) */
	struct timespec ts;
	struct tm tm;
	size_t k;
	int n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	/* snprintf and one write: dprintf would add an lseek and an fstat to every line. */
	if (logs.json) {
		k = (size_t)snprintf(line, sizeof(line), "{\"timestamp\":\"%s.%06ldZ\",\"level\":"
		    "\"%s\",\"fields\":{\"message\":\"", when, ts.tv_nsec / 1000, names[level]);
		/* A message too long for the line is cut at a whole escape: it still parses. */
		(void)json_escape(msg, line, sizeof(line) - 64, &k);
		n = (int)k + snprintf(line + k, sizeof(line) - k, "\"},\"target\":\"%s\"}\n",
		    logs.target);
	} else if (logs.journal) {
		n = snprintf(line, sizeof(line), "<%d>%s %s\n", priorities[level], names[level],
		    msg);
	} else {
		n = snprintf(line, sizeof(line), "%s.%03ldZ %5s %s\n", when, ts.tv_nsec / 1000000,
		    names[level], msg);
	}
	(void)!write(2, line, (size_t)n);
}

/* Log a line at level, if shown; a visitor thread's errors and warnings go through PL_VISITOR. */
static void log_msg(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void
log_msg(int level, const char *fmt, ...)
{
	char msg[768];
	const char *ids;
	va_list ap;
	int saved = errno;

	if (level == LOG_ERROR && log_retrying)
		level = LOG_WARN;
	if (level > logs.level)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (log_visitor != NULL && (level == LOG_ERROR || level == LOG_WARN)) {
		ids = log_visitor;
		log_visitor = NULL;
		log_limited(&logs.peer_lines[PL_VISITOR], level, "connection %s: %s", ids, msg);
		log_visitor = ids;
	} else {
		log_line(level, msg);
	}
	errno = saved;
}

static int utf8_valid(const unsigned char *s, size_t len);

/* Peer text in out: well-formed UTF-8, with '?' for any other byte and what a terminal acts on. */
static const char *
printable(const char *in, char *out, size_t cap)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t i = 0, n, m;
	int ok, bad;

	while (*s != '\0') {
		n = *s < 0x80 ? 1 : *s < 0xe0 ? 2 : *s < 0xf0 ? 3 : 4;
		ok = strnlen((const char *)s, n) == n && utf8_valid(s, n);
		/* C0, DEL; C1: C2 80-9F; U+2028-202E: E2 80 A8-AE; U+2066-2069: E2 81 A6-A9. */
		bad = !ok || *s < 0x20 || *s == 0x7f || (s[0] == 0xc2 && s[1] <= 0x9f) ||
		    (s[0] == 0xe2 && s[1] == 0x80 && s[2] >= 0xa8 && s[2] <= 0xae) ||
		    (s[0] == 0xe2 && s[1] == 0x81 && s[2] >= 0xa6 && s[2] <= 0xa9);
		if (i + (m = bad ? 1 : n) >= cap)
			break;
		memcpy(out + i, bad ? "?" : (const char *)s, m);
		i += m;
		s += ok ? n : 1;
	}
	out[i] = '\0';
	return (out);
}

/* Log a line rate-limited by l; a line logged says how many were held back before it. */
static void
log_limited(struct log_limit *l, int level, const char *fmt, ...)
{
	char line[512];
	int64_t now = now_ms(), since = 0;
	int held = -1;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&logs.limits_lock);
	l->count++;
	if (now >= l->next) {
		l->used = 0;
		l->next = now + LIMIT_LOG_MS;
	}
	if (l->used >= (l->lines > 0 ? l->lines : 1)) {
		l->held++;
	} else {
		held = l->held;
		since = now - l->last;
		l->held = 0;
		l->last = now;
		l->used++;
	}
	pthread_mutex_unlock(&logs.limits_lock);
	if (held == 0)
		log_msg(level, "%s", line);
	else if (held > 0)
		log_msg(level, "%s (and %d more in %.0f s)", line, held, since / 1000.0);
}

/* Lines of each kind in peer_lines logged per LIMIT_LOG_MS before they are counted instead. */
#define PEER_LINES 32

/* ---- Shared: fds and wake-up pipes -------------------------------- */

/* Pipes that wake poll(). */
static struct {
	int signal[2];  /* the signal handler writes each signal's number to it, one byte */
	int stop[2];    /* never written: at a stop the client closes its write end to wake all */
} pipes = { { -1, -1 }, { -1, -1 } };

/* The next signal number on_signal passed on (0: a tunnel thread ended), or -1 if none waits. */
static int
next_signal(void)
{
	unsigned char sig;

	return (read(pipes.signal[0], &sig, 1) == 1 ? sig : -1);
}

/* Act on the signals that came: SIGUSR1 calls status, SIGHUP reload if any; 1 at a stop. */
static int
take_signals(void (*status)(void), void (*reload)(void))
{
	int sig;

	while ((sig = next_signal()) != -1) {
		if (sig == SIGUSR1)
			status();
		else if (sig == SIGHUP && reload != NULL)
			reload();
		else if (sig != 0)
			return (1);
	}
	return (0);
}

/*
 * At a stop, wait up to grace_ms while *a or *b is above 0, polling briefly
 * (threads end unannounced); SIGUSR1 calls status, a second stop signal
 * ends the wait; then say how many of *b are closed while still open.
 */
static void
wait_drained(atomic_int *a, atomic_int *b, int grace_ms, void (*status)(void),
    void (*reload)(void))
{
	struct pollfd p = { .fd = pipes.signal[0], .events = POLLIN };
	int64_t deadline = now_ms() + grace_ms;
	int n;

	while ((atomic_load(a) > 0 || atomic_load(b) > 0) && now_ms() < deadline) {
		(void)poll(&p, 1, 50);
		if (take_signals(status, reload)) {
			log_msg(LOG_INFO, "second signal: not waiting");
			break;
		}
	}
	if ((n = atomic_load(b)) > 0)
		log_msg(LOG_WARN, "closing %d connection%s still open", n, n == 1 ? "" : "s");
}

/* Counted where made and closed, so admission is decided before an fd is taken, not at EMFILE. */
static struct {
	int limit;             /* fds this process may open after start-up ones */
	int reserve;           /* of them, kept from visitors for control-port connections */
	atomic_int open;       /* sockets and pipes open now */
	atomic_int promised;   /* fds promised to data connections of parked visitors */
	atomic_int conns;      /* of those open, struct conns': on the control port, or to it */
} fds;

/* True if n more fds fit with `keep` of the limit left over. */
static int
fds_room(int n, int keep)
{
	return (atomic_load(&fds.open) + atomic_load(&fds.promised) + n <= fds.limit - keep);
}

/* True if err says the process or system is out of fds or memory: worth trying again later. */
static int
short_of_resources(int err)
{
	return (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM);
}

/* Close a counted socket or pipe end; errno stays as it was, for the caller to report. */
static void
close_fd(int fd)
{
	int saved = errno;

	close(fd);
	atomic_fetch_sub(&fds.open, 1);
	errno = saved;
}

/* Count an fd that a call just returned, passing the result on. */
static int
counted(int fd)
{
	if (fd != -1)
		atomic_fetch_add(&fds.open, 1);
	return (fd);
}

/* ---- Shared: sockets and addresses -------------------------------- */

/* Pause after accept() fails for lack of fds or memory, so the loop does not spin. */
#define ACCEPT_BACKOFF_MS 100

/* Queue length of the control and public listeners. */
#define LISTEN_BACKLOG 1024

/* Wait until fd is ready for events; -1 with ETIMEDOUT at deadline, or ECANCELED at a stop. */
static int
wait_fd(int fd, short events, int64_t deadline)
{
	enum { POLL_FD, POLL_STOP, POLL_SLOTS };
	struct pollfd p[POLL_SLOTS] = {
		[POLL_FD] = { .fd = fd, .events = events },
		[POLL_STOP] = { .fd = pipes.stop[0], .events = POLLIN },
	};
	int n;

	while ((n = poll(p, POLL_SLOTS, ms_until(deadline))) <= 0) {
		if (n == -1 && errno != EINTR)
			return (-1);
		if (now_ms() >= deadline) {
			errno = ETIMEDOUT;
			return (-1);
		}
	}
	/* The write end closed: the client is stopping. */
	if (p[POLL_STOP].revents)
		errno = ECANCELED;
	/* POLLERR and POLLHUP count as ready: the next read or write reports them. */
	return (p[POLL_STOP].revents ? -1 : 0);
}

/* Send (out) or receive len bytes of buf on non-blocking fd by deadline: 1, 0 at EOF, or -1. */
static int
io_all(int fd, char *buf, size_t len, int64_t deadline, int out)
{
	ssize_t n;

	while (len > 0) {
		n = out ? send(fd, buf, len, MSG_NOSIGNAL) : recv(fd, buf, len, 0);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
		} else if (n == 0) {
			return (out ? -1 : 0);
		} else if (errno == EINTR) {
			continue;
		} else if ((errno != EAGAIN && errno != EWOULDBLOCK) ||
		    wait_fd(fd, out ? POLLOUT : POLLIN, deadline) == -1) {
			return (-1);
		}
	}
	return (1);
}

/* Write all of buf to the non-blocking socket fd before deadline. */
static int
write_all(int fd, const void *buf, size_t len, int64_t deadline)
{
	/* io_all only reads from buf when it sends. */
	return (io_all(fd, (char *)(uintptr_t)buf, len, deadline, 1) == 1 ? 0 : -1);
}

/* Read exactly len bytes from the non-blocking socket fd before deadline: 1, 0 at EOF, or -1. */
static int
read_full(int fd, void *buf, size_t len, int64_t deadline)
{
	return (io_all(fd, buf, len, deadline, 0));
}

/* Largest HTTP header taken: a proxy's reply, a scrape's request. */
#define HTTP_HEADER_MAX 4096

/*
 * Read an HTTP header (a proxy's reply, a scrape's request) into head (HTTP_HEADER_MAX + 1), a
 * byte at a time so the bytes after it stay in the socket; lines may end in a bare LF (RFC
 * 9112).  1, 0 at EOF, or -1 (EMSGSIZE: too long).
 */
static int
http_header(int fd, char *head, int64_t deadline)
{
	size_t n = 0;
	int r;

	while (n < HTTP_HEADER_MAX) {
		if ((r = read_full(fd, head + n++, 1, deadline)) != 1)
			return (r);
		head[n] = '\0';
		if (n > 1 && head[n - 1] == '\n' && (head[n - 2] == '\n' ||
		    (n > 2 && head[n - 2] == '\r' && head[n - 3] == '\n')))
			return (1);
	}
	errno = EMSGSIZE;
	return (-1);
}

/* Where sa keeps its address and port; the address's length: 4 (v4-mapped too), 16, or 0. */
static size_t
sockaddr_ip(const struct sockaddr *sa, const uint8_t **addr, in_port_t **port)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)(uintptr_t)sa;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)(uintptr_t)sa;

	*addr = NULL;
	*port = NULL;
	if (sa->sa_family == AF_INET) {
		*addr = (const uint8_t *)&sin->sin_addr;
		*port = &sin->sin_port;
		return (4);
	}
	if (sa->sa_family != AF_INET6)
		return (0);
	*addr = sin6->sin6_addr.s6_addr;
	*port = &sin6->sin6_port;
	if (!IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr))
		return (16);
	*addr += 12;
	return (4);
}

/* Format a socket address as "ip:port" or "[ip]:port"; IPv4-mapped IPv6 shows as IPv4. */
static const char *
addr_str(const struct sockaddr *sa, socklen_t len, char *out, size_t cap)
{
	char host[INET6_ADDRSTRLEN + 16];  /* and an IPv6 scope */
	const uint8_t *addr;
	in_port_t *port;
	size_t n = sockaddr_ip(sa, &addr, &port);

	/* getnameinfo for IPv6, which adds a link-local address's scope. */
	if (n == 0 || (n == 4 ? inet_ntop(AF_INET, addr, host, sizeof(host)) == NULL :
	    getnameinfo(sa, len, host, sizeof(host), NULL, 0, NI_NUMERICHOST) != 0))
		snprintf(out, cap, "?");
	else
		snprintf(out, cap, n == 16 ? "[%s]:%u" : "%s:%u", host, ntohs(*port));
	return (out);
}

/* Format host and port for messages, bracketing a bare IPv6 literal. */
static const char *
host_port(const char *host, unsigned port, char *out, size_t cap)
{
	snprintf(out, cap, strchr(host, ':') && host[0] != '[' ? "[%s]:%u" : "%s:%u", host, port);
	return (out);
}

/* Set the port of an address made by parse_ip. */
static void
set_port(struct sockaddr_storage *ss, uint16_t port)
{
	const uint8_t *addr;
	in_port_t *p;

	if (sockaddr_ip((struct sockaddr *)ss, &addr, &p) != 0)
		*p = htons(port);
}

/* host without the brackets of an [IPv6] literal, copied to out (cap bytes); else host itself. */
static const char *
unbracket(const char *host, char *out, size_t cap)
{
	size_t n = strlen(host);

	if (n < 2 || n >= cap || host[0] != '[' || host[n - 1] != ']')
		return (host);
	memcpy(out, host + 1, n - 2);
	out[n - 2] = '\0';
	return (out);
}

/* HOST:PORT (HOST a name, IPv4 or [IPv6]: bare IPv6 seems to end in a port) into host (cap
 * bytes) and *port, 1 to 65535: 0; -1 (bad form) or -2 (bad port). */
static int
host_port_split(const char *s, char *host, size_t cap, uint16_t *port)
{
	const char *colon = strrchr(s, ':');
	size_t n = colon != NULL ? (size_t)(colon - s) : 0;

	if (n == 0 || n >= cap || (memchr(s, ':', n) != NULL && (s[0] != '[' || colon[-1] != ']')))
		return (-1);
	memcpy(host, s, n);
	host[n] = '\0';
	return (bore_parse_port(colon + 1, 1, port) == -1 ? -2 : 0);
}

/* Parse an IP literal (IPv4, IPv6, or [IPv6]) with port into ss; 0, or -1. */
static int
parse_ip(const char *s, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	char buf[INET6_ADDRSTRLEN + 2];
	const char *v6 = unbracket(s, buf, sizeof(buf));

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, s, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		*len = sizeof(*sin);
	} else if (inet_pton(AF_INET6, v6, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		*len = sizeof(*sin6);
	} else {
		return (-1);
	}
	set_port(ss, port);
	return (0);
}

/* A non-blocking TCP listener on ss; -1 with errno from the failing call. */
static int
listen_on(const struct sockaddr_storage *ss, socklen_t len)
{
	int fd;

	if ((fd = counted(tcp_socket(ss->ss_family))) == -1)
		return (-1);
	/* "::" serves IPv4 too. */
	if (ss->ss_family == AF_INET6)
		(void)set_opt(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0);
	/* A fixed port can be taken again at once after its previous owner died. */
	if (set_opt(fd, SOL_SOCKET, SO_REUSEADDR, 1) == -1 ||
	    bind(fd, (const struct sockaddr *)ss, len) == -1 || listen(fd, LISTEN_BACKLOG) == -1) {
		close_fd(fd);
		return (-1);
	}
	return (fd);
}

/* Connect to the first address in ai that answers within the network timeout. */
static int
connect_any(const struct addrinfo *ai)
{
	int64_t deadline = now_ms() + BORE_NETWORK_TIMEOUT_MS;
	int fd, err = ECONNREFUSED;
	socklen_t len;

	for (; ai != NULL; ai = ai->ai_next) {
		fd = counted(tcp_socket(ai->ai_family));
		if (fd == -1) {
			err = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			return (fd);
		err = errno;
		if (err == EINPROGRESS) {
			if (wait_fd(fd, POLLOUT, deadline) == -1) {
				err = errno;
			} else {
				len = sizeof(err);
				if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
					err = errno;
				if (err == 0)
					return (fd);
			}
		}
		close_fd(fd);
	}
	errno = err;
	return (-1);
}

/* ---- Shared: lists and worker threads ----------------------------- */

/* Stack of every worker thread: frames and libc; relay buffers live on the heap. */
#ifndef THREAD_STACK
#define THREAD_STACK (64 * 1024)
#endif

/* A worker that finished its connection waits this long for another, as starting one costs more. */
#define IDLE_WORKER_S 2

/* Most worker threads kept waiting for a connection. */
#define IDLE_WORKERS_MAX 32

/* A doubly linked ring: a list's head, or an item's place in one. */
struct ring {
	struct ring *prev, *next;
};

/* The item of type t whose member m is the ring r. */
#define RING_ITEM(r, t, m) ((t *)(void *)((char *)(r) - offsetof(t, m)))

/* Make r an empty ring. */
static void
ring_init(struct ring *r)
{
	r->prev = r->next = r;
}

/* Put r into a ring just before at: at its tail when at is its head. */
static void
ring_put(struct ring *at, struct ring *r)
{
	r->prev = at->prev;
	r->next = at;
	at->prev->next = r;
	at->prev = r;
}

/* Take r out of its ring. */
static void
ring_take(struct ring *r)
{
	r->prev->next = r->next;
	r->next->prev = r->prev;
	ring_init(r);
}

/* A worker thread; spawn() maps its stack, as libc keeps up to 40 MiB of ended ones' stacks. */
struct worker {
	void *(*fn)(void *);  /* the job: fn(arg); NULL while waiting for one */
	void *arg;
	pthread_cond_t wake;  /* signalled when a job is handed to a waiting worker */
	struct ring link;     /* in pool.idle */
	void *stack;          /* a guard page, then THREAD_STACK bytes */
	pthread_t self;       /* set as it ends, for the join before its stack is unmapped */
};

/* The workers waiting for a job, and the one that ended last. */
static struct {
	pthread_mutex_t lock;      /* guards all here, and the jobs handed to idle workers */
	struct ring idle;          /* the most recently idle first */
	int idle_count;
	struct worker *last_ended; /* a thread cannot unmap its own stack: the next to end does */
} pool = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* Join a worker that ended, unmap its stack and free it. */
static void
reap_worker(struct worker *w)
{
	if (w == NULL)
		return;
	pthread_join(w->self, NULL);
	munmap(w->stack, (size_t)getpagesize() + THREAD_STACK);
	free(w);
}

/* At exit, join the last worker to end and keep pool.lock, so no ended thread is left unjoined. */
static void
reap_last_worker(void)
{
	pthread_mutex_lock(&pool.lock);
	reap_worker(pool.last_ended);
}

/* Run jobs until none comes within IDLE_WORKER_S, or enough others are idle. */
static void *
worker_main(void *arg)
{
	struct worker *w = arg, *prev;
	struct timespec until;
	int quiet = 0;

	for (;;) {
		w->fn(w->arg);
		pthread_mutex_lock(&pool.lock);
		if (pool.idle_count >= IDLE_WORKERS_MAX)
			break;
		w->fn = NULL;
		ring_put(pool.idle.next, &w->link);
		pool.idle_count++;
		/* The wall clock: a jump only ends one idle wait early or late. */
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += IDLE_WORKER_S;
		while (w->fn == NULL &&
		    pthread_cond_timedwait(&w->wake, &pool.lock, &until) != ETIMEDOUT)
			;
		/* Timed out with no job: spawn() can no longer find this worker. */
		if (w->fn == NULL) {
			ring_take(&w->link);
			pool.idle_count--;
			/* The last idle worker: no job came for IDLE_WORKER_S, a burst is over. */
			quiet = pool.idle_count == 0;
			break;
		}
		pthread_mutex_unlock(&pool.lock);
	}
	pthread_cond_destroy(&w->wake);
	w->self = pthread_self();
	prev = pool.last_ended;
	pool.last_ended = w;
	pthread_mutex_unlock(&pool.lock);
	reap_worker(prev);
	if (quiet)
		heap_trim();
	return (NULL);
}

/* Run fn(arg) on an idle worker, else a new one with a small stack; fn owns arg; -1 if neither. */
static int
spawn(void *(*fn)(void *), void *arg)
{
	size_t guard = (size_t)getpagesize();
	pthread_attr_t attr;
	struct worker *w;
	pthread_t t;
	int rc = ENOMEM;

	pthread_mutex_lock(&pool.lock);
	w = pool.idle_count > 0 ? RING_ITEM(pool.idle.next, struct worker, link) : NULL;
	if (w != NULL) {
		ring_take(&w->link);
		pool.idle_count--;
		w->fn = fn;
		w->arg = arg;
		pthread_cond_signal(&w->wake);
	}
	pthread_mutex_unlock(&pool.lock);
	if (w != NULL)
		return (0);
	if ((w = malloc(sizeof(*w))) == NULL)
		goto err0;
	*w = (struct worker){ .fn = fn, .arg = arg };
	if ((rc = pthread_cond_init(&w->wake, NULL)) != 0)
		goto err1;
	w->stack = mmap(NULL, guard + THREAD_STACK, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (w->stack == MAP_FAILED) {
		rc = errno;
		goto err2;
	}
	if (mprotect(w->stack, guard, PROT_NONE) == -1) {
		rc = errno;
		goto err3;
	}
	if ((rc = pthread_attr_init(&attr)) != 0)
		goto err3;
	if ((rc = pthread_attr_setstack(&attr, (char *)w->stack + guard, THREAD_STACK)) != 0 ||
	    (rc = pthread_create(&t, &attr, worker_main, w)) != 0)
		goto err4;
	pthread_attr_destroy(&attr);

	return (0);

err4:
	pthread_attr_destroy(&attr);
err3:
	munmap(w->stack, guard + THREAD_STACK);
err2:
	pthread_cond_destroy(&w->wake);
err1:
	free(w);
err0:
	log_msg(LOG_WARN, "could not start a thread: %s", strerror(rc));
	return (-1);
}

/* ---- Shared: control-port connections and frames ------------------ */

/* Read buffer of a control-port connection: a whole frame, its NUL, and a little more. */
#define CONN_BUF 320

/* A connection to the control port: its socket and the bytes read past the last frame. */
struct conn {
	int fd;
	size_t len;
	char peer[64];
	uint8_t src[16];       /* the server's: the peer's source, as startups compares them */
	int place;             /* the server's: its startup place, or -1 */
	char buf[CONN_BUF];
};

/* A conn that owns fd from peer, as logs name it; NULL (fd still the caller's) on failure. */
static struct conn *
conn_new(int fd, const char *peer)
{
	struct conn *c;

	if ((c = malloc(sizeof(*c))) == NULL) {
		log_msg(LOG_WARN, "out of memory");
		return (NULL);
	}
	atomic_fetch_add(&fds.conns, 1);
	c->fd = fd;
	c->len = 0;
	c->place = -1;
	/* Not snprintf, whose frame would take a visitor thread a stack page deeper. */
	if (memccpy(c->peer, peer, '\0', sizeof(c->peer)) == NULL)
		c->peer[sizeof(c->peer) - 1] = '\0';
	return (c);
}

/* Close a conn's socket and free it. */
static void
conn_free(struct conn *c)
{
	if (c == NULL)
		return;
	atomic_fetch_sub(&fds.conns, 1);
	close_fd(c->fd);
	free(c);
}

/* What went wrong in read_frame, for a log line. */
static const char *
frame_error(int err)
{
	return (err == ETIMEDOUT ? "timed out waiting for message" :
	    err == EMSGSIZE ? "frame error, invalid byte length" :
	    err == EBADMSG ? "unable to parse message" :
	    err == EPROTO ? "connection closed in the middle of a frame" : strerror(err));
}

/* Read c's next frame into m by deadline, the rest staying buffered: 1, 0 at EOF, or -1 (errno). */
static int
read_frame(struct conn *c, struct bore_msg *m, int64_t deadline)
{
	char text[BORE_MAX_FRAME + 1], *nul;
	size_t flen;
	ssize_t n;
	int rc;

	while ((nul = memchr(c->buf, '\0', c->len)) == NULL && c->len <= BORE_MAX_FRAME) {
		n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
		if (n > 0) {
			c->len += (size_t)n;
		} else if (n == 0) {
			errno = EPROTO;
			return (c->len == 0 ? 0 : -1);
		} else if (errno != EINTR && ((errno != EAGAIN && errno != EWOULDBLOCK) ||
		    wait_fd(c->fd, POLLIN, deadline) == -1)) {
			return (-1);
		}
	}
	/* Too long whether it ended or not. */
	if ((flen = nul != NULL ? (size_t)(nul - c->buf) : c->len) > BORE_MAX_FRAME) {
		errno = EMSGSIZE;
		return (-1);
	}
	if ((rc = bore_parse_msg(c->buf, flen, m)) == -1)
		errno = EBADMSG;
	else if (logs.level >= LOG_TRACE)
		log_msg(LOG_TRACE, "%s: received %s", c->peer,
		    printable(c->buf, text, sizeof(text)));
	c->len -= flen + 1;
	memmove(c->buf, nul + 1, c->len);
	return (rc == -1 ? -1 : 1);
}

/* Read a connection's first message within the network timeout: 1, 0 at EOF, or -1 (errno). */
static int
read_first(struct conn *c, struct bore_msg *m)
{
	return (read_frame(c, m, now_ms() + BORE_NETWORK_TIMEOUT_MS));
}

/* What went wrong in read_first, as bore words it. */
static const char *
first_error(int err)
{
	return (err == ETIMEDOUT ? "timed out waiting for initial message" : frame_error(err));
}

/*
 * Send a message of type as one NUL-terminated frame within the network
 * timeout, with port (Hello) or data: the text of an Error or Authenticate,
 * else a UUID.
 */
static int
send_msg(int fd, enum bore_msg_type type, uint16_t port, const void *data)
{
	struct bore_msg m = { .type = type, .port = port };
	char frame[BORE_MAX_FRAME + 2];
	int n;

	if (type == BORE_MSG_ERROR || type == BORE_MSG_AUTHENTICATE)
		snprintf(m.text, sizeof(m.text), "%s", (const char *)data);
	else if (data != NULL)
		memcpy(m.uuid, data, BORE_UUID_LEN);
	if ((n = bore_format_msg(&m, frame, sizeof(frame) - 1)) == -1) {
		errno = EMSGSIZE;
		return (-1);
	}
	frame[n++] = '\0';
	log_msg(LOG_TRACE, "fd %d: sending %s", fd, frame);
	return (write_all(fd, frame, (size_t)n, now_ms() + BORE_NETWORK_TIMEOUT_MS));
}

/* Tell the peer on fd in an Error frame why it is refused or closed; returns why, to log. */
static const char *
send_error(int fd, const char *why)
{
	(void)send_msg(fd, BORE_MSG_ERROR, 0, why);
	return (why);
}

/* ==================================================================== */
/* Relay: bytes both ways between two sockets, spliced or copied        */
/* ==================================================================== */

/* Bytes buffered in each direction of a relay that copies (--dump, no pipe). */
#ifndef RELAY_BUF
#define RELAY_BUF (16 * 1024)
#endif

/* Bytes moved per splice() call: a whole pipe. */
#define SPLICE_CHUNK PIPE_SIZE

/* A flow copies reads that fit in this much, and makes a pipe once one does not. */
#define SMALL_READ 4096

/* One direction of a relay; lazy at first: short exchanges cost no pipe, idle ones no buffer. */
struct flow {
	int from, to;
	int eof;          /* `from` sent FIN; passed on once nothing waits */
	int fin_sent;     /* that FIN was passed on: `to` is shut for writing */
	int pipe[2];      /* splice path: the pipe that holds the waiting bytes */
	int lazy;         /* no pipe yet: copy small reads, splice once one fills buf */
	int want_pipe;    /* a read filled buf: make the pipe once it is written */
	size_t off, len;  /* waiting bytes: buf[off .. off + len), or len in the pipe */
	size_t cap;       /* size of buf */
	struct relay_info *info;  /* its relay's dump number, and the count its reads add to */
	int side;         /* its index in info's counts and dump_dirs */
	char *buf;        /* copy path: cap bytes; while lazy, only between read and write */
};

/* What a relay moved, and whether to dump it; bytes: written by its thread alone, read live. */
struct relay_info {
	int dump_id;         /* connection number for --dump output; 0: no dump */
	_Atomic uint64_t bytes[2];  /* bytes from the first socket to the second, and back */
	struct ring link;    /* in its tunnel's list of live relays, under the tunnel's lock */
	int fd;              /* the server's: the visitor, shut down when its client is cut */
};

/* A tunnel's visitors and bytes, for SIGUSR1's status lines; both sides keep one. */
struct counts {
	int now;            /* visitors being served */
	uint64_t visitors;  /* visitors so far */
	uint64_t in, out;   /* bytes from and to visitors whose relays ended */
};

/* Add c into *sum, for a totals line. */
static void
counts_add(struct counts *sum, const struct counts *c)
{
	sum->now += c->now;
	sum->visitors += c->visitors;
	sum->in += c->in;
	sum->out += c->out;
}

/* Add what the relays in live moved so far into *c; their side `in` reads from visitors. */
static void
counts_add_live(struct counts *c, struct ring *live, int in)
{
	struct relay_info *ri;
	struct ring *r;

	for (r = live->next; r != live; r = r->next) {
		ri = RING_ITEM(r, struct relay_info, link);
		c->in += atomic_load_explicit(&ri->bytes[in], memory_order_relaxed);
		c->out += atomic_load_explicit(&ri->bytes[!in], memory_order_relaxed);
	}
}

/* c as a status line says it: "visitors N now T total, bytes I in O out". */
static const char *
counts_str(const struct counts *c, char *out, size_t cap)
{
	snprintf(out, cap, "visitors %d now %llu total, bytes %llu in %llu out", c->now,
	    (unsigned long long)c->visitors, (unsigned long long)c->in, (unsigned long long)c->out);
	return (out);
}

/* SIGUSR1's line for one tunnel, alike on server and client. */
static void
log_tunnel_status(const char *what, time_t since, int64_t since_ms, const struct counts *c)
{
	char when[32], text[128];

	log_msg(LOG_ALWAYS, "status: tunnel %s, up since %s (%lld s), %s", what,
	    utc_str(since, when, sizeof(when)), (long long)(now_ms() - since_ms) / 1000,
	    counts_str(c, text, sizeof(text)));
}

/* Direction names in --dump output: first socket (the server's side) to second, and back. */
static const char *const dump_dirs[2] = { "visitor->service", "service->visitor" };

/* How relays run, set before threads start, and the lock that keeps --dump output apart. */
static struct {
	int splice;                 /* splice() through pipes (1) or copy through buffers (0) */
	pthread_mutex_t dump_lock;
} relaying = { HAVE_SPLICE, PTHREAD_MUTEX_INITIALIZER };

/* Hex digits, lower case first: the first 16 are written, all 22 read. */
static const char hex_digits[] = "0123456789abcdefABCDEF";

/* Print bytes that crossed connection id from side as offset, hex and ASCII. */
static void
dump_bytes(int id, int side, const void *buf, size_t n)
{
	const unsigned char *p = buf;
	char out[4096];
	size_t i, k, len = 0;

	pthread_mutex_lock(&relaying.dump_lock);
	dprintf(2, "> conn %d %s %zu bytes\n", id, dump_dirs[side], n);
	for (i = 0; i < n; i += 16) {
		len += (size_t)snprintf(out + len, sizeof(out) - len, "%06zx ", i);
		for (k = 0; k < 16; k++) {
			out[len++] = ' ';
			out[len++] = i + k < n ? hex_digits[p[i + k] >> 4] : ' ';
			out[len++] = i + k < n ? hex_digits[p[i + k] & 0xf] : ' ';
		}
		out[len++] = ' ';
		out[len++] = ' ';
		for (k = 0; k < 16 && i + k < n; k++)
			out[len++] = p[i + k] >= 0x20 && p[i + k] < 0x7f ? (char)p[i + k] : '.';
		out[len++] = '\n';
		/* A line is at most 74 bytes: flush while one more still fits. */
		if (len > sizeof(out) - 80) {
			(void)!write(2, out, len);
			len = 0;
		}
	}
	if (len > 0)
		(void)!write(2, out, len);
	pthread_mutex_unlock(&relaying.dump_lock);
}

/* Make f copy through a RELAY_BUF buffer for good; -1 if out of memory. */
static int
flow_use_copy(struct flow *f)
{
	return ((f->buf = malloc(f->cap = RELAY_BUF)) == NULL ? -1 : 0);
}

/* Give f a pipe worth splicing through; else it copies through a buffer for good. */
static int
flow_make_pipe(struct flow *f)
{
	f->lazy = 0;
	/* Pipes are a speed-up: past the visitors' share of fds, copy instead. */
	if (fds_room(2, fds.reserve) && relay_pipe(f->pipe) == 0) {
		atomic_fetch_add(&fds.open, 2);
		return (0);
	}
	f->pipe[0] = f->pipe[1] = -1;
	return (flow_use_copy(f));
}

/* Write what f holds; pass the FIN on once all is written.  -1 on a dead socket. */
static int
flow_flush(struct flow *f)
{
	ssize_t n;

	while (f->len > 0) {
		n = f->pipe[0] != -1 ? splice_nb(f->pipe[0], f->to, f->len) :
		    send(f->to, f->buf + f->off, f->len, MSG_NOSIGNAL);
		if (n > 0) {
			f->off += (size_t)n;
			f->len -= (size_t)n;
		} else if (n == -1 && errno == EINTR) {
			continue;
		} else if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			return (0);
		} else {
			return (-1);
		}
	}
	/* A lazy flow holds no buffer while it waits. */
	if (f->lazy) {
		free(f->buf);
		f->buf = NULL;
		if (f->want_pipe && flow_make_pipe(f) == -1)
			return (-1);
	}
	if (f->eof && !f->fin_sent) {
		(void)shutdown(f->to, SHUT_WR);
		f->fin_sent = 1;
	}
	return (0);
}

/* Read once into f, which holds nothing, and write what came at once.  -1 on a dead socket. */
static int
flow_fill(struct flow *f)
{
	ssize_t n;

	if (f->lazy && f->buf == NULL && (f->buf = malloc(f->cap = SMALL_READ)) == NULL)
		return (-1);
	n = f->pipe[0] != -1 ? splice_nb(f->from, f->pipe[1], SPLICE_CHUNK) :
	    recv(f->from, f->buf, f->cap, 0);
	if (n > 0) {
		f->off = 0;
		f->len = (size_t)n;
		atomic_fetch_add_explicit(&f->info->bytes[f->side], f->len, memory_order_relaxed);
		f->want_pipe = f->lazy && (size_t)n == f->cap;
		if (f->info->dump_id != 0)
			dump_bytes(f->info->dump_id, f->side, f->buf, f->len);
	} else if (n == 0) {
		f->eof = 1;
	} else if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) {
		return (0);
	} else {
		return (-1);
	}
	return (flow_flush(f));
}

/* Set up side s of info's relay: splicing lazily, or copying when dumping; -1 if out of memory. */
static int
flow_open(struct flow *f, int from, int to, struct relay_info *info, int s)
{
	*f = (struct flow){ .from = from, .to = to, .pipe = { -1, -1 },
	    .lazy = relaying.splice && info->dump_id == 0, .info = info, .side = s };
	return (f->lazy ? 0 : flow_use_copy(f));
}

/* Close f's pipe or free its buffer. */
static void
flow_close(struct flow *f)
{
	if (f->pipe[0] != -1) {
		close_fd(f->pipe[0]);
		close_fd(f->pipe[1]);
	}
	free(f->buf);
}

/* A relay wait shorter than this (microseconds) is short; spinning lasts at most this long. */
#define SPIN_US 100

/* Short waits in a row after which a relay spins before it sleeps. */
#define SPIN_AFTER 4

/* poll() that spins a while after SPIN_AFTER short waits: a wake-up costs about a loopback hop. */
static int
poll_relay(struct pollfd *pfd, nfds_t n, int *short_waits)
{
	int64_t start = now_us();
	int r = 0;

	if (*short_waits >= SPIN_AFTER) {
		while ((r = poll(pfd, n, 0)) == 0 && now_us() - start < SPIN_US)
			sched_yield();
	}
	if (r == 0)
		r = poll(pfd, n, -1);
	if (now_us() - start >= SPIN_US)
		*short_waits = 0;
	else if (*short_waits < SPIN_AFTER)
		(*short_waits)++;
	return (r);
}

/* Poll slots and flows of a relay: one per socket, each flow reading from its own side. */
enum { SIDE_A, SIDE_B, SIDES };

/* Ask poll() of each side what its flows wait for. */
static void
relay_events(const struct flow *flows, struct pollfd *pfd)
{
	int s;

	for (s = 0; s < SIDES; s++) {
		pfd[s].events = 0;
		/* Read from side s only when its flow is empty: that is the back-pressure. */
		if (!flows[s].eof && flows[s].len == 0)
			pfd[s].events |= POLLIN;
		/* Bytes from the other side wait to be written to side s. */
		if (flows[!s].len > 0)
			pfd[s].events |= POLLOUT;
		/* Idle, a socket stays in for a reset (POLLERR); shut both ways, POLLHUP spins. */
		pfd[s].fd = pfd[s].events || !flows[!s].fin_sent ? flows[s].from : -1;
		pfd[s].revents = 0;
	}
}

/* Move what poll() found ready on each side; -1 once a socket failed. */
static int
relay_ready(struct flow *flows, const struct pollfd *pfd)
{
	int s;

	for (s = 0; s < SIDES; s++) {
		/* POLLNVAL: an fd closed under us, which would be a bug; give up. */
		if (pfd[s].revents & POLLNVAL)
			return (-1);
		/* POLLERR or POLLHUP on a socket we wait on for nothing: its peer reset. */
		if (pfd[s].events == 0 && pfd[s].revents != 0) {
			errno = ECONNRESET;
			return (-1);
		}
		/* POLLERR, and POLLHUP without POLLIN, go to send() or recv() to say the cause. */
		if ((pfd[s].events & POLLOUT) && (pfd[s].revents & (POLLOUT | POLLERR | POLLHUP)) &&
		    flow_flush(&flows[!s]) == -1)
			return (-1);
		if ((pfd[s].events & POLLIN) && (pfd[s].revents & (POLLIN | POLLERR | POLLHUP)) &&
		    flows[s].len == 0 && flow_fill(&flows[s]) == -1)
			return (-1);
	}
	return (0);
}

/* Relay sockets a and b both ways until both ended (0) or one failed (-1); info gets the counts. */
static int
relay(int a, int b, struct relay_info *info)
{
	struct flow flows[SIDES];
	struct pollfd pfd[SIDES];
	int s, n, rc = -1, short_waits = 0;

	flows[SIDE_B] = (struct flow){ .pipe = { -1, -1 } };
	if (flow_open(&flows[SIDE_A], a, b, info, SIDE_A) == -1 ||
	    flow_open(&flows[SIDE_B], b, a, info, SIDE_B) == -1) {
		errno = ENOMEM;
		goto done;
	}
	for (;;) {
		if (flows[SIDE_A].eof && flows[SIDE_A].len == 0 &&
		    flows[SIDE_B].eof && flows[SIDE_B].len == 0) {
			rc = 0;
			break;
		}
		relay_events(flows, pfd);
		n = poll_relay(pfd, SIDES, &short_waits);
		/* EINTR: a signal for the main thread; just poll again. */
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 || relay_ready(flows, pfd) == -1)
			break;
	}
done:
	for (s = 0; s < SIDES; s++)
		flow_close(&flows[s]);
	return (rc);
}

/* The line at the end of a relayed connection, alike on server and client; with --dump, always. */
static void
log_closed(const char *ids, int dump_id, uint64_t to_service, uint64_t to_visitor,
    int64_t start_ms)
{
	char name[64];

	if (dump_id != 0)
		snprintf(name, sizeof(name), "conn %d", dump_id);
	else
		snprintf(name, sizeof(name), "connection %s", ids);
	log_msg(dump_id != 0 ? LOG_ALWAYS : LOG_INFO, "%s closed: %llu bytes visitor->service, "
	    "%llu bytes service->visitor, %.3f s", name, (unsigned long long)to_service,
	    (unsigned long long)to_visitor, (double)(now_ms() - start_ms) / 1000);
}

/* Make close() send RST, so the far end sees an aborted stream rather than a clean end. */
static void
set_reset_on_close(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

/* Send the stream bytes already read past c's last frame to other, then relay c and other. */
static int
relay_after_frame(struct conn *c, int other, struct relay_info *info)
{
	/* Small writes go at once: interactive traffic must not wait for Nagle. */
	(void)set_opt(c->fd, IPPROTO_TCP, TCP_NODELAY, 1);
	(void)set_opt(other, IPPROTO_TCP, TCP_NODELAY, 1);
	if (c->len > 0) {
		if (info->dump_id != 0)
			dump_bytes(info->dump_id, 0, c->buf, c->len);
		info->bytes[0] += c->len;
		if (write_all(other, c->buf, c->len, now_ms() + BORE_NETWORK_TIMEOUT_MS) == -1)
			return (-1);
		c->len = 0;
	}
	return (relay(c->fd, other, info));
}

/* ==================================================================== */
/* Protocol: the JSON control messages                                  */
/* ==================================================================== */

/* Variant names as they appear on the wire, by message type. */
static const char *const msg_names[] = {
	[BORE_MSG_HELLO] = "Hello",
	[BORE_MSG_AUTHENTICATE] = "Authenticate",
	[BORE_MSG_ACCEPT] = "Accept",
	[BORE_MSG_CHALLENGE] = "Challenge",
	[BORE_MSG_HEARTBEAT] = "Heartbeat",
	[BORE_MSG_CONNECTION] = "Connection",
	[BORE_MSG_ERROR] = "Error",
	[BORE_MSG_POOL] = "Pool",
	[BORE_MSG_SPARE] = "Spare",
	[BORE_MSG_JOIN] = "Join",
};

/* JSON's two-character escapes as (letter, byte) pairs; serde_json writes all but \/. */
static const char json_esc[] = "\"\"\\\\b\bf\fn\nr\rt\t//";

/* A cursor over the bytes of one frame. */
struct json {
	const unsigned char *p, *end;
};

/* Skip JSON's insignificant whitespace. */
static void
json_ws(struct json *j)
{
	while (j->p < j->end && memchr(" \t\n\r", *j->p, 4) != NULL)
		j->p++;
}

/* Consume the literal lit after optional whitespace; 0, or -1. */
static int
json_lit(struct json *j, const char *lit)
{
	size_t k = strlen(lit);

	json_ws(j);
	if ((size_t)(j->end - j->p) < k || memcmp(j->p, lit, k) != 0)
		return (-1);
	j->p += k;
	return (0);
}

/* Value of a hex digit, or -1. */
static int
hex_digit(int c)
{
	const char *h = c != '\0' ? strchr(hex_digits, c) : NULL;

	return (h == NULL ? -1 : (int)(h - hex_digits) - (h - hex_digits > 15) * 6);
}

/* The k hex digits at s, before end, as a number in *v; -1 if there are not k. */
static int
hex_value(const unsigned char *s, const unsigned char *end, int k, uint32_t *v)
{
	int d;

	if (end - s < k)
		return (-1);
	for (*v = 0; k-- > 0; *v = *v << 4 | (uint32_t)d)
		if ((d = hex_digit(*s++)) == -1)
			return (-1);
	return (0);
}

/* Append the k bytes at s to out at *n, NUL-terminated; -1 if they do not fit. */
static int
json_put(char *out, size_t cap, size_t *n, const char *s, size_t k)
{
	if (*n + k >= cap)
		return (-1);
	memcpy(out + *n, s, k);
	*n += k;
	out[*n] = '\0';
	return (0);
}

/* Consume a \u escape (a surrogate pair counts as one) and append its UTF-8. */
static int
json_unicode(struct json *j, char *out, size_t cap, size_t *n)
{
	uint32_t cp, lo;
	char b[4];
	size_t k, i;

	if (hex_value(j->p, j->end, 4, &cp) == -1 || (cp >= 0xdc00 && cp <= 0xdfff))
		return (-1);
	j->p += 4;
	if (cp >= 0xd800 && cp <= 0xdbff) {
		if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u' ||
		    hex_value(j->p + 2, j->end, 4, &lo) == -1 || lo < 0xdc00 || lo > 0xdfff)
			return (-1);
		j->p += 6;
		cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
	}
	k = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
	for (i = k; i-- > 1; cp >>= 6)
		b[i] = (char)(0x80 | (cp & 0x3f));
	b[0] = (char)(k == 1 ? cp : (0xf00u >> k & 0xf0) | cp);
	return (json_put(out, cap, n, b, k));
}

/* Consume a JSON string, decoding escapes into out (NUL-terminated); its length in *len. */
static int
json_string(struct json *j, char *out, size_t cap, size_t *len)
{
	const char *e;
	size_t n = 0;
	char c = '\0';

	if (json_lit(j, "\"") == -1)
		return (-1);
	while (j->p < j->end && (c = (char)*j->p++) != '"') {
		if ((unsigned char)c < 0x20 || (c == '\\' && j->p == j->end))
			return (-1);
		if (c == '\\' && *j->p == 'u') {
			j->p++;
			if (json_unicode(j, out, cap, &n) == -1)
				return (-1);
			continue;
		}
		/* A match at an odd place is a raw control byte, not an escape letter. */
		if (c == '\\' && ((e = memchr(json_esc, *j->p++, sizeof(json_esc) - 1)) == NULL ||
		    (e - json_esc) % 2 != 0))
			return (-1);
		if (json_put(out, cap, &n, c == '\\' ? e + 1 : &c, 1) == -1)
			return (-1);
	}
	if (c != '"')
		return (-1);
	out[n] = '\0';
	*len = n;
	return (0);
}

/* Consume a port: a plain JSON integer 0-65535 (no sign, fraction, exponent or leading zero). */
static int
json_port(struct json *j, uint16_t *out)
{
	const unsigned char *start;
	uint32_t v = 0;

	json_ws(j);
	for (start = j->p; j->p < j->end && *j->p >= '0' && *j->p <= '9'; j->p++)
		if ((v = v * 10 + (uint32_t)(*j->p - '0')) > 65535)
			return (-1);
	if (j->p == start || (j->p - start > 1 && *start == '0'))
		return (-1);
	if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
		return (-1);
	*out = (uint16_t)v;
	return (0);
}

/* True if s[0..len) is well-formed UTF-8 (no overlongs, surrogates or values past U+10FFFF). */
static int
utf8_valid(const unsigned char *s, size_t len)
{
	size_t i, k, need;
	uint32_t cp;

	for (i = 0; i < len; i += need + 1) {
		need = s[i] < 0x80 ? 0 : s[i] < 0xc2 ? 4 : s[i] < 0xe0 ? 1 : s[i] < 0xf0 ? 2 :
		    s[i] < 0xf5 ? 3 : 4;
		if (need == 4 || len - i <= need)
			return (0);
		for (cp = s[i] & (0x7fu >> need), k = 1; k <= need; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return (0);
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if ((need > 1 && cp < 1u << (5 * need + 1)) || (cp >= 0xd800 && cp <= 0xdfff) ||
		    cp > 0x10ffff)
			return (0);
	}
	return (1);
}

/* The message type whose wire name is name[0..len), or BORE_MSG_NONE. */
static enum bore_msg_type
msg_type_named(const char *name, size_t len)
{
	size_t t;

	for (t = BORE_MSG_HELLO; t <= BORE_MSG_JOIN; t++)
		if (strlen(msg_names[t]) == len && memcmp(msg_names[t], name, len) == 0)
			return ((enum bore_msg_type)t);
	return (BORE_MSG_NONE);
}

int
bore_parse_msg(const char *frame, size_t len, struct bore_msg *m)
{
	struct json j = { (const unsigned char *)frame, (const unsigned char *)frame + len };
	char name[BORE_MAX_FRAME + 1];
	enum bore_msg_type type;
	size_t n;

	memset(m, 0, sizeof(*m));
	if (len > BORE_MAX_FRAME || !utf8_valid(j.p, len))
		return (-1);
	json_ws(&j);
	if (j.p < j.end && *j.p == '"') {
		/* A unit variant travels as a bare string. */
		if (json_string(&j, name, sizeof(name), &n) == -1 ||
		    (type = msg_type_named(name, n)) != BORE_MSG_HEARTBEAT)
			return (-1);
	} else {
		if (json_lit(&j, "{") == -1 || json_string(&j, name, sizeof(name), &n) == -1 ||
		    json_lit(&j, ":") == -1)
			return (-1);
		type = msg_type_named(name, n);
		if (type == BORE_MSG_HELLO || type == BORE_MSG_POOL ?
		    json_port(&j, &m->port) == -1 :
		    type == BORE_MSG_AUTHENTICATE || type == BORE_MSG_ERROR ?
		    json_string(&j, m->text, sizeof(m->text), &m->text_len) == -1 :
		    /* serde also takes {"Heartbeat":null} for a unit variant. */
		    type == BORE_MSG_HEARTBEAT ? json_lit(&j, "null") == -1 :
		    type == BORE_MSG_NONE || json_string(&j, name, sizeof(name), &n) == -1 ||
		    bore_uuid_parse(name, n, m->uuid) == -1)
			return (-1);
		if (json_lit(&j, "}") == -1)
			return (-1);
	}
	json_ws(&j);
	if (j.p != j.end)
		return (-1);
	m->type = type;
	return (0);
}

/* Append text as a JSON string body (serde_json's escapes) to out at *n, whole escapes only. */
static int
json_escape(const char *text, char *out, size_t cap, size_t *n)
{
	const unsigned char *s;
	const char *e;
	char u[] = "\\u00xx";
	int r;

	for (s = (const unsigned char *)text; *s != '\0'; s++) {
		u[4] = hex_digits[*s >> 4];
		u[5] = hex_digits[*s & 0xf];
		if (*s >= 0x20 && *s != '"' && *s != '\\')
			r = json_put(out, cap, n, (const char *)s, 1);
		else if ((e = memchr(json_esc, *s, sizeof(json_esc) - 1)) != NULL)
			r = json_put(out, cap, n, (char[]){ '\\', e[-((e - json_esc) % 2)] }, 2);
		else
			r = json_put(out, cap, n, u, 6);
		if (r == -1)
			return (-1);
	}
	return (0);
}

/* No snprintf for Accept: its vfprintf frame would take a visitor thread a stack page deeper. */
int
bore_format_msg(const struct bore_msg *m, char *out, size_t cap)
{
	char id[BORE_UUID_STRLEN + 1];
	const char *v = id;
	size_t n = 0, q = 1;

	if (m->type == BORE_MSG_HEARTBEAT)
		return (json_put(out, cap, &n, "\"Heartbeat\"", 11) == -1 ? -1 : 11);
	if (m->type == BORE_MSG_HELLO || m->type == BORE_MSG_POOL)
		q = 0, snprintf(id, sizeof(id), "%u", (unsigned)m->port);
	else if (m->type == BORE_MSG_AUTHENTICATE || m->type == BORE_MSG_ERROR)
		v = m->text;
	else if (m->type != BORE_MSG_NONE && m->type <= BORE_MSG_JOIN)
		bore_uuid_format(m->uuid, id);
	else
		return (-1);
	if (json_put(out, cap, &n, "{\"", 2) == -1 ||
	    json_escape(msg_names[m->type], out, cap, &n) == -1 ||
	    json_put(out, cap, &n, "\":\"", 2 + q) == -1 || json_escape(v, out, cap, &n) == -1 ||
	    json_put(out, cap, &n, &"\"}"[!q], 1 + q) == -1)
		return (-1);
	return ((int)n);
}

void
bore_uuid_random(uint8_t u[BORE_UUID_LEN])
{
	randombytes_buf(u, BORE_UUID_LEN);
	u[6] = (uint8_t)((u[6] & 0x0f) | 0x40);  /* version 4 */
	u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);  /* RFC 4122 variant */
}

/* True at the offsets where a hyphenated UUID has its hyphens. */
static int
uuid_hyphen_at(size_t i)
{
	return (i == 8 || i == 13 || i == 18 || i == 23);
}

void
bore_uuid_format(const uint8_t u[BORE_UUID_LEN], char out[BORE_UUID_STRLEN + 1])
{
	size_t i = 0, b;

	for (b = 0; b < BORE_UUID_LEN; b++) {
		if (uuid_hyphen_at(i))
			out[i++] = '-';
		out[i++] = hex_digits[u[b] >> 4];
		out[i++] = hex_digits[u[b] & 0xf];
	}
	out[i] = '\0';
}

int
bore_uuid_parse(const char *s, size_t len, uint8_t u[BORE_UUID_LEN])
{
	const unsigned char *p = (const unsigned char *)s, *end = p + len;
	uint32_t v;
	size_t b;

	if (len != BORE_UUID_STRLEN)
		return (-1);
	for (b = 0; b < BORE_UUID_LEN; b++, p += 2) {
		if (uuid_hyphen_at((size_t)(p - (const unsigned char *)s)) && *p++ != '-')
			return (-1);
		if (hex_value(p, end, 2, &v) == -1)
			return (-1);
		u[b] = (uint8_t)v;
	}
	return (0);
}

int
bore_parse_port(const char *s, unsigned min, uint16_t *out)
{
	unsigned long v;
	size_t k;

	if (s == NULL || (k = strlen(s)) == 0 || k > 5 || strspn(s, "0123456789") != k)
		return (-1);
	if ((v = strtoul(s, NULL, 10)) < min || v > 65535)
		return (-1);
	*out = (uint16_t)v;
	return (0);
}

/* ==================================================================== */
/* Auth: HMAC-SHA256 challenge on every control-port connection          */
/* ==================================================================== */

/* A warning a peer caused, rate-limited by its kind k of logs.peer_lines. */
#define PEER_WARN(k, ...) log_limited(&logs.peer_lines[k], LOG_WARN, __VA_ARGS__)

void
bore_auth_key(const char *secret, uint8_t key[BORE_KEY_LEN])
{
	crypto_hash_sha256(key, (const unsigned char *)secret, strlen(secret));
}

void
bore_auth_tag(const uint8_t key[BORE_KEY_LEN], const uint8_t challenge[BORE_UUID_LEN],
    char hex[BORE_TAG_HEXLEN + 1])
{
	unsigned char tag[crypto_auth_hmacsha256_BYTES];

	crypto_auth_hmacsha256(tag, challenge, BORE_UUID_LEN, key);
	sodium_bin2hex(hex, BORE_TAG_HEXLEN + 1, tag, sizeof(tag));
	sodium_memzero(tag, sizeof(tag));
}

int
bore_auth_verify(const uint8_t key[BORE_KEY_LEN], const uint8_t challenge[BORE_UUID_LEN],
    const char *tag, size_t len)
{
	unsigned char got[crypto_auth_hmacsha256_BYTES];
	size_t got_len;
	int ok;

	if (len != BORE_TAG_HEXLEN ||
	    sodium_hex2bin(got, sizeof(got), tag, len, NULL, &got_len, NULL) != 0 ||
	    got_len != sizeof(got))
		return (0);
	ok = crypto_auth_hmacsha256_verify(got, challenge, BORE_UUID_LEN, key) == 0;
	sodium_memzero(got, sizeof(got));
	return (ok);
}

/* A set of server keys, one per accepted secret, and the ports each may open. */
struct keyset {
	int n, nranges;
	int (*range)[3];   /* after the keys: KEY, LO, HI; LO 0 for a line without ports= */
	uint8_t key[][BORE_KEY_LEN];
};

/* Bytes of n keys and nr ranges, one block. */
#define KEYSET_SIZE(n, nr) ((size_t)(n) * BORE_KEY_LEN + (size_t)(nr) * sizeof(int[3]))

/* The keys new handshakes use, replaced whole on SIGHUP; read only under lock or copied. */
static struct {
	pthread_mutex_t lock;
	struct keyset *current;
} keys = { PTHREAD_MUTEX_INITIALIZER, NULL };

/* What a server without a secret lets a client (key -1) open: any port in its range. */
static int any_range[1][3] = { { -1, 0, 65535 } };
static const struct keyset any_port = { .nranges = 1, .range = any_range };

/* An empty key set for n keys and nranges port ranges; NULL if out of memory. */
static struct keyset *
keyset_new(int n, int nranges)
{
	struct keyset *ks = calloc(1, sizeof(*ks) + KEYSET_SIZE(n, nranges));

	if (ks != NULL) {
		*ks = (struct keyset){ .n = n, .nranges = nranges };
		ks->range = (int (*)[3])(void *)(ks->key + n);
	}
	return (ks);
}

/* Wipe and free a key set. */
static void
keyset_free(struct keyset *ks)
{
	if (ks == NULL)
		return;
	sodium_memzero(ks->key, KEYSET_SIZE(ks->n, ks->nranges));
	free(ks);
}

/* A copy of the current keys, the caller's to keyset_free; NULL if none or out of memory. */
static struct keyset *
keyset_copy(void)
{
	struct keyset *ks = NULL;

	pthread_mutex_lock(&keys.lock);
	if (keys.current != NULL &&
	    (ks = keyset_new(keys.current->n, keys.current->nranges)) != NULL)
		memcpy(ks->key, keys.current->key, KEYSET_SIZE(ks->n, ks->nranges));
	pthread_mutex_unlock(&keys.lock);
	return (ks);
}

/* Make ks (the caller's no more) the current set; no one else holds the old one: free it. */
static void
keyset_publish(struct keyset *ks)
{
	struct keyset *old;

	pthread_mutex_lock(&keys.lock);
	old = keys.current;
	keys.current = ks;
	pthread_mutex_unlock(&keys.lock);
	keyset_free(old);
}

/* Most bytes of a secret file: room for many secrets, one per line. */
#define SECRET_FILE_MAX 4096

/* True if line holds only spaces and tabs: a blank line, not a secret. */
static int
blank(const char *line)
{
	return (line[strspn(line, " \t")] == '\0');
}

/*
 * End each of buf's len bytes' lines in NUL, less its trailing CRs: the lines
 * not blank, or -1 for binary data (a NUL, a control byte but TAB, CR, LF),
 * which would be cut into guessable fragments.
 */
static int
split_secret_lines(char *buf, size_t len)
{
	char *line;
	size_t i;
	int count = 0;

	for (i = 0; i < len; i++)
		if (((unsigned char)buf[i] < 0x20 && buf[i] != '\t' && buf[i] != '\r' &&
		    buf[i] != '\n') || buf[i] == 0x7f)
			return (-1);
	for (i = 0; i < len; i++)
		if (buf[i] == '\n')
			buf[i] = '\0';
	buf[len] = '\0';
	for (i = len; i-- > 0;)
		if (buf[i] == '\r' && buf[i + 1] == '\0')
			buf[i] = '\0';
	for (line = buf; line < buf + len; line += strlen(line) + 1)
		count += !blank(line);
	return (count);
}

/*
 * Fill ks from the secret lines of buf (len bytes, split), a key and its ranges each: for
 * ports=LIST SECRET, LIST's (PORT or LO-HI, comma-separated) and the rest after the space, as
 * written; any other line has all ports (LO 0).  0, or the number of a line with a bad LIST.
 */
static int
secret_keys(char *buf, size_t len, struct keyset *ks)
{
	char *line, *e;
	long lo, hi;
	int no = 1, i = 0, nr = 0;

	for (line = buf; line < buf + len; line += strlen(line) + 1, no++) {
		if (blank(line))
			continue;
		e = strncmp(line, "ports=", 6) == 0 ? line + 5 : NULL;
		memcpy(ks->range[nr], (int[3]){ i, 0, 65535 }, sizeof(ks->range[nr]));
		nr += e == NULL;
		/* e is at the = or , before each item; strtol is given digits, no sign or space. */
		if (e != NULL)
			do {
				lo = hi = e[1] >= '0' && e[1] <= '9' ? strtol(e + 1, &e, 10) : 0;
				if (lo > 0 && *e == '-')
					hi = e[1] >= '0' && e[1] <= '9' ? strtol(e + 1, &e, 10) : 0;
				if (lo < 1 || hi > 65535 || lo > hi)
					return (no);
				memcpy(ks->range[nr++], (int[3]){ i, (int)lo, (int)hi },
				    sizeof(ks->range[0]));
			} while (*e == ',');
		if (e != NULL && (*e != ' ' || e[1] == '\0'))
			return (no);
		bore_auth_key(e != NULL ? e + 1 : line, ks->key[i++]);
	}
	/* The ranges allowed for and not taken stay zeros: none to copy or wipe. */
	ks->nranges = nr;
	return (0);
}

/*
 * The keys of the secrets in path, one per line that is not blank (its CRs
 * at the end stripped, nothing else), the first line's first, and the ports
 * of ports= lines; NULL, logged at level with a note of what follows (exit,
 * or keeping the keys before), if it cannot be read, is not a regular file,
 * holds a NUL byte, a bad ports= list or no secret.
 */
static struct keyset *
read_secret_file(const char *path, int level, const char *then)
{
	char buf[SECRET_FILE_MAX + 1], bad[96];
	struct keyset *ks = NULL;
	const char *why = NULL;
	struct stat st;
	ssize_t n = 0;
	size_t len = 0;
	int fd, saved, count, reg, no;

	/* Non-blocking: opening a FIFO for reading would wait for a writer. */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)) == -1)
		goto err;
	reg = fstat(fd, &st) == -1 || S_ISREG(st.st_mode);
	/* One byte more than the limit, to tell a full file from a longer one. */
	while (reg && len < sizeof(buf) && (n = read(fd, buf + len, sizeof(buf) - len)) != 0) {
		if (n == -1 && errno != EINTR)
			break;
		len += n > 0 ? (size_t)n : 0;
	}
	saved = errno;
	close(fd);
	errno = saved;
	if (n == -1)
		goto err;
	if (!reg)
		why = " is not a regular file";
	else if (len > SECRET_FILE_MAX)
		why = " is longer than 4096 bytes";
	else if ((count = split_secret_lines(buf, len)) == -1)
		why = " holds binary data: a NUL or control byte";
	else if (count == 0)
		why = " is empty";
	/* A range past a line's first takes two bytes, a digit and a comma. */
	else if ((ks = keyset_new(count, count + (int)len / 2)) == NULL)
		why = ": out of memory";
	else if ((no = secret_keys(buf, len, ks)) != 0)
		why = (snprintf(bad, sizeof(bad), ", line %d: bad ports= list (want ports=PORT,"
		    "LO-HI,... SECRET; ports 1-65535)", no), bad);
	if (why != NULL) {
		log_msg(level, "secret file %s%s%s", path, why, then);
		keyset_free(ks);
		ks = NULL;
	}
out:
	sodium_memzero(buf, sizeof(buf));
	return (ks);

err:
	/* A log line, not err(): under systemd it must carry its level's priority. */
	log_msg(level, "could not read secret file %s: %s%s", path, strerror(errno), then);
	goto out;
}

/*
 * Server side: challenge the peer and check its answer against every key
 * of ks (all of them, so the time taken says nothing of which matched);
 * the index of the first key it proved (a secret on two lines has the first's
 * ports), or on failure tell it why and return -1.
 */
static int
server_handshake(struct conn *c, const struct keyset *ks)
{
	uint8_t challenge[BORE_UUID_LEN];
	struct bore_msg m;
	const char *why;
	int r, i, ok = -1;

	bore_uuid_random(challenge);
	if (send_msg(c->fd, BORE_MSG_CHALLENGE, 0, challenge) == -1) {
		log_msg(LOG_DEBUG, "%s: could not send challenge: %s", c->peer, strerror(errno));
		return (-1);
	}
	/* Like bore, say why before closing: even a timeout or a bad frame gets an Error. */
	if ((r = read_first(c, &m)) == 1 && m.type == BORE_MSG_AUTHENTICATE) {
		for (i = 0; i < ks->n; i++)
			if (bore_auth_verify(ks->key[i], challenge, m.text, m.text_len) && ok == -1)
				ok = i;
		if (ok != -1)
			return (ok);
		why = "invalid secret";
	} else {
		why = r == -1 ? first_error(errno) :
		    "server requires secret, but no secret was provided";
	}
	PEER_WARN(PL_HANDSHAKE, "%s: server handshake failed: %s", c->peer, send_error(c->fd, why));
	return (-1);
}

/* ==================================================================== */
/* Server: control listener, tunnels, parked visitors                   */
/* ==================================================================== */

/*
 * Trust boundary: in call order, what an anonymous peer reaches (the control
 * port before authentication; with no secret, a Hello's tunnel and an Accept's
 * claim; --metrics' port) and the bound each keeps.
 *   run_server, unless_paused, accept_control: an accept per wake, paused
 *   accept_peer, accept_nb, nonblock_cloexec, counted, short_of_resources, addr_str,
 *   sockaddr_ip, cidr_allows, close_fd, conn_new, source_of, source_known: a counted fd
 *   log_limited, log_msg, log_line, printable, now_ms, now_us,
 *   ms_until: 32 lines of a kind per 5 s, the next one counting the rest
 *   startup_add, startup_drop, startup_victim, startup_may_go, source_count, frame_waiting,
 *   startup_free, startup_done: 2 x --max-startups places, a scan, a peek; no call locked
 *   spawn, worker_main, reap_worker, heap_trim, ring_init, ring_put, ring_take,
 *   serve_control, keyset_copy, keyset_new, keyset_free: a thread each; keys wiped
 *   server_handshake, bore_uuid_random, bore_auth_verify: one answer, constant time
 *   send_error, send_msg, write_all, bore_format_msg, json_escape, bore_uuid_format,
 *   uuid_hyphen_at, io_all, wait_fd: 3 s a frame
 *   read_first, read_frame, first_error, frame_error, bore_parse_msg, utf8_valid,
 *   msg_type_named, json_ws, json_lit, json_string, json_unicode, json_put, hex_value,
 *   hex_digit, json_port, bore_uuid_parse: BORE_MAX_FRAME, 3 s
 *   run_tunnel, bind_public, key_ports, try_bind, set_port, listen_on, set_opt, tcp_socket,
 *   bind_error, tunnel_new, tunnel_list, set_liveness, conn_free: --max-sessions ports while up
 *   visitor_rate_allows: a keyed hash, 4 slots of a fixed 16384 looked at under one lock
 *   serve_tunnel, park_visitor, fds_room, tunnel_add_conn, pending_add, pending_expire,
 *   pending_unlink, tunnel_close, tunnel_put, forward_visitor, pending_take,
 *   tunnel_track: --max-conns and a share of the fds, parked 10 s
 *   pool_tick, pool_drop, pool_join, pool_hand,
 *   serve_handoff: POOL_MAX places a tunnel, in --max-conns; a token joins once, within 10 s
 *   send_proxy_header, proxy_header, relay_after_frame, set_reset_on_close, relay, log_closed,
 *   poll_relay, relay_events, relay_ready, flow_use_copy, flow_make_pipe, relay_pipe,
 *   pipe_nb, flow_open, flow_close, flow_fill, flow_flush,
 *   splice_nb: two fds and a thread per visitor, RELAY_BUF or a pipe each way
 *   serve_metrics, serve_scrape, http_header, read_full, metrics_text, tunnels_count,
 *   counts_add_live, counts_add: a thread, a scrape at a time: 4 KiB in 3 s, a walk of tunnels
 */

/* ---- Server: settings and allow lists ----------------------------- */

/* Most entries in one --allow or --allow-control list. */
#define MAX_CIDRS 64

/* An address block from --allow or --allow-control. */
struct cidr {
	size_t len;  /* of addr: 4 (IPv4) or 16 */
	uint8_t addr[16];
	int bits;
};

/* Server settings, fixed before the first thread starts. */
static struct {
	uint16_t min_port, max_port;
	int has_secret;                       /* the keys are in keys.current */
	const char *secret_file;              /* --secret-file, re-read on SIGHUP (NULL: none) */
	struct sockaddr_storage tunnel_addr;  /* --bind-tunnels; binds set the port on a copy */
	socklen_t tunnel_addr_len;
	int max_sessions;                     /* tunnels open at once */
	int max_conns;                        /* visitors per tunnel, parked or relayed */
	int max_startups;                     /* control connections not yet authenticated */
	int grace_ms;                         /* how long relays may finish at shutdown */
	struct cidr allow[MAX_CIDRS];         /* visitors allowed (none listed: all) */
	int nallow;
	struct cidr allow_control[MAX_CIDRS]; /* control connections allowed (none: all) */
	int nallow_control;
	int proxy_protocol;                   /* PROXY header version sent to services (0: none) */
	struct sockaddr_storage metrics;      /* --metrics, where scrapes are served */
	socklen_t metrics_len;                /* 0: no --metrics */
	time_t started;                       /* when the server started, for --metrics */
} srv;

/* Parse "IP" or "IP/BITS" (IPv4 or IPv6) into c; 0, or -1. */
static int
parse_cidr(const char *s, struct cidr *c)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char ip[INET6_ADDRSTRLEN + 2];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	const uint8_t *a;
	in_port_t *port;
	uint16_t bits, mapped;

	if (n == 0 || n >= sizeof(ip))
		return (-1);
	memcpy(ip, s, n);
	ip[n] = '\0';
	if (parse_ip(ip, 0, &ss, &len) == -1)
		return (-1);
	c->len = sockaddr_ip((struct sockaddr *)&ss, &a, &port);
	memcpy(c->addr, a, c->len);
	c->bits = (int)c->len * 8;
	/* An IPv4-mapped block is the IPv4 block it stands for, as a peer's address is. */
	mapped = ss.ss_family == AF_INET6 && c->len == 4 ? 96 : 0;
	if (slash != NULL) {
		if (bore_parse_port(slash + 1, 0, &bits) == -1 || bits < mapped ||
		    bits - mapped > c->bits)
			return (-1);
		c->bits = bits - mapped;
	}
	return (0);
}

/* True if sa lies in one of the n blocks of list (or the list is empty). */
static int
cidr_allows(const struct cidr *list, int n, const struct sockaddr *sa)
{
	const uint8_t *a;
	in_port_t *port;
	size_t len = sockaddr_ip(sa, &a, &port);
	int i, full, rest;

	if (n == 0)
		return (1);
	for (i = 0; i < n; i++) {
		if (list[i].len != len)
			continue;
		full = list[i].bits / 8;
		rest = list[i].bits % 8;
		if (memcmp(a, list[i].addr, (size_t)full) == 0 && (rest == 0 ||
		    ((a[full] ^ list[i].addr[full]) & (0xff << (8 - rest)) & 0xff) == 0))
			return (1);
	}
	return (0);
}

/*
 * Accept on lfd, the control port's or the public port `where`, into *ss and addr (64 bytes);
 * -1 if none came or --allow(-control) refused it, *paused_until set if fds or memory ran short.
 */
static int
accept_peer(int lfd, int control, const char *where, struct sockaddr_storage *ss, char *addr,
    int64_t *paused_until)
{
	socklen_t len = sizeof(*ss);
	int fd = counted(accept_nb(lfd, (struct sockaddr *)ss, &len));

	if (fd == -1) {
		if (short_of_resources(errno)) {
			PEER_WARN(PL_ACCEPT, "%saccept: %s", where, strerror(errno));
			*paused_until = now_ms() + ACCEPT_BACKOFF_MS;
		}
		return (-1);
	}
	addr_str((struct sockaddr *)ss, len, addr, 64);
	if (control ? cidr_allows(srv.allow_control, srv.nallow_control, (struct sockaddr *)ss) :
	    cidr_allows(srv.allow, srv.nallow, (struct sockaddr *)ss))
		return (fd);
	PEER_WARN(control ? PL_ALLOW_CONTROL : PL_ALLOW, "%srefused %s%s: not in --allow%s", where,
	    control ? "control connection from " : "", addr, control ? "-control" : "");
	close_fd(fd);
	return (-1);
}

/* lfd, or -1 while it is left alone until paused_until; *wait (ms) cut to that. */
static int
unless_paused(int lfd, int64_t paused_until, int *wait)
{
	if (now_ms() >= paused_until)
		return (lfd);
	if (ms_until(paused_until) < *wait)
		*wait = ms_until(paused_until);
	return (-1);
}

/* ---- Server: tunnels and the visitors parked in them -------------- */

/* A visitor accepted on a public port, parked until the client claims it with Accept. */
struct pending {
	struct ring chain;                /* in its bucket of server.pending */
	struct ring queue;                /* in its tunnel's parked, oldest first */
	struct tunnel *tunnel;            /* holds a reference and a place in it */
	int64_t expires;                  /* closed at this time if still parked */
	int fd;
	uint8_t id[BORE_UUID_LEN];
};

/* Most pooled connections a tunnel keeps: a client that asks for more gets this many. */
#define POOL_MAX 16

/* A place in a tunnel's visitor pool: free, offered (its token sent in a Spare), or joined. */
struct place {
	uint8_t token[BORE_UUID_LEN];
	int offered;
	int64_t until;      /* offered: free again then; free: not offered again before then */
	struct conn *c;     /* joined: an idle pooled connection, the tunnel thread's to close */
};

/*
 * One client's public port.  Its control thread holds one reference and
 * every parked or relayed visitor another; the last to let go frees it.
 * Its counters are for SIGUSR1's status lines: taken under lock once per
 * visitor, never per byte.
 */
struct tunnel {
	pthread_mutex_t lock;
	int refs;
	atomic_int conns;   /* parked plus relayed visitors (vs srv.max_conns); set under lock */
	int closing;        /* the control connection ended: no new relays */
	struct ring live;   /* relay_info.link of the visitors being relayed */
	struct ring parked; /* pending.queue, under server.pending_lock: oldest first */
	struct log_limit waits;  /* "visitors wait" lines */
	struct counts counts; /* its now is conns, read at a status dump */
	struct ring link;     /* in server.open, under server.lock */
	int64_t since_ms;     /* set before it is listed, then fixed */
	time_t since;
	char client[64];
	uint8_t src[16];      /* the client's source, as startups compares them */
	uint16_t port;
	int pool;             /* places its client asked for (0: none), fixed once it is listed */
	int pooled;           /* places offered or joined, under lock; with conns, in max_conns */
	struct place places[POOL_MAX];  /* under lock */
};

/* Buckets of the table of parked visitors by id; ids are random: the first byte picks one. */
#define PENDING_BUCKETS 256
#define PENDING_BUCKET(id) (&server.pending[(id)[0] % PENDING_BUCKETS])

/* State threads share; lock order: lock, then a tunnel's; pending_lock nests with neither. */
static struct {
	atomic_int tunnels;         /* tunnels open now, against srv.max_sessions */
	atomic_int relays;          /* visitors being relayed now, waited for at shutdown */
	atomic_int stopping;        /* SIGTERM/SIGINT came: tunnels say goodbye, relays finish */
	pthread_mutex_t lock;       /* guards open, gone and ended */
	struct ring open;           /* tunnel.link of tunnels open now, for the status lines */
	struct ring gone;           /* tunnel.link of those closed, their visitors yet to end */
	struct counts ended;        /* the counts of tunnels freed: --metrics' never fall */
	pthread_mutex_t pending_lock;  /* guards pending and every tunnel's parked queue */
	struct ring pending[PENDING_BUCKETS];  /* pending.chain of parked visitors by id */
} server = { .lock = PTHREAD_MUTEX_INITIALIZER, .pending_lock = PTHREAD_MUTEX_INITIALIZER };

/* A new tunnel with the control thread's reference; NULL if out of memory. */
static struct tunnel *
tunnel_new(void)
{
	struct tunnel *t;

	if ((t = calloc(1, sizeof(*t))) == NULL) {
		log_msg(LOG_WARN, "out of memory");
		return (NULL);
	}
	pthread_mutex_init(&t->lock, NULL);
	t->refs = 1;
	ring_init(&t->live);
	ring_init(&t->parked);
	return (t);
}

/* Drop one reference, a visitor's with its place (conns 1); the last frees it, counts to ended. */
static void
tunnel_put(struct tunnel *t, int conns)
{
	int last;

	pthread_mutex_lock(&t->lock);
	t->conns -= conns;
	last = --t->refs == 0;
	pthread_mutex_unlock(&t->lock);
	if (last) {
		pthread_mutex_lock(&server.lock);
		ring_take(&t->link);
		counts_add(&server.ended, &t->counts);
		pthread_mutex_unlock(&server.lock);
		pthread_mutex_destroy(&t->lock);
		free(t);
	}
}

/* Count a new visitor against the tunnel's limit; -1 if it is full or closing. */
static int
tunnel_add_conn(struct tunnel *t)
{
	int ok;

	pthread_mutex_lock(&t->lock);
	if ((ok = !t->closing && t->conns < srv.max_conns)) {
		t->conns++;
		t->refs++;
		t->counts.visitors++;
	}
	pthread_mutex_unlock(&t->lock);
	return (ok ? 0 : -1);
}

/*
 * List a relayed visitor in its tunnel (on), -1 if the tunnel is closing; or take it
 * off, before its fd is closed, and count its bytes (bytes[0] went to the visitor).
 */
static int
tunnel_track(struct tunnel *t, struct relay_info *r, int on)
{
	int ok = 1;

	pthread_mutex_lock(&t->lock);
	if (on && (ok = !t->closing))
		ring_put(&t->live, &r->link);
	if (!on) {
		t->counts.in += r->bytes[1];
		t->counts.out += r->bytes[0];
		ring_take(&r->link);
	}
	pthread_mutex_unlock(&t->lock);
	return (ok ? 0 : -1);
}

/*
 * The control connection ended: no new relays.  When the client is gone
 * (cut), every visitor still being relayed is shut down so it sees the end
 * at once; at a graceful shutdown they are left to finish.
 */
static void
tunnel_close(struct tunnel *t, int cut)
{
	struct ring *r;

	pthread_mutex_lock(&t->lock);
	t->closing = 1;
	/* Listed fds stay open until untracked, so shutting them down here is safe. */
	for (r = t->live.next; cut && r != &t->live; r = r->next)
		(void)shutdown(RING_ITEM(r, struct relay_info, link)->fd, SHUT_RDWR);
	pthread_mutex_unlock(&t->lock);
}

/* List t among the open tunnels (on), for the status lines, or move it to the gone ones. */
static void
tunnel_list(struct tunnel *t, int on)
{
	pthread_mutex_lock(&server.lock);
	if (!on)
		ring_take(&t->link);
	ring_put(on ? &server.open : &server.gone, &t->link);
	pthread_mutex_unlock(&server.lock);
}

/* True if a tunnel open now came from source src: its other connections are no strangers. */
static int
source_known(const uint8_t src[16])
{
	struct ring *r;
	int known = 0;

	pthread_mutex_lock(&server.lock);
	for (r = server.open.next; r != &server.open && !known; r = r->next)
		known = memcmp(RING_ITEM(r, struct tunnel, link)->src, src, 16) == 0;
	pthread_mutex_unlock(&server.lock);
	return (known);
}

/*
 * Add the counts of the tunnels in list (server.lock held) into *all, with status a line for
 * each; how many there are.  Visitors now are those parked or relayed; bytes are those of
 * relays that ended and of live ones so far (in: from visitors, out: to them).
 */
static int
tunnels_count(struct ring *list, struct counts *all, int status)
{
	struct counts c;
	struct tunnel *t;
	struct ring *r;
	char what[128];
	int n = 0;

	for (r = list->next; r != list; r = r->next, n++) {
		t = RING_ITEM(r, struct tunnel, link);
		pthread_mutex_lock(&t->lock);
		c = t->counts;
		c.now = t->conns;
		counts_add_live(&c, &t->live, 1);
		pthread_mutex_unlock(&t->lock);
		counts_add(all, &c);
		if (status) {
			snprintf(what, sizeof(what), "port %u, client %s", t->port, t->client);
			log_tunnel_status(what, t->since, t->since_ms, &c);
		}
	}
	return (n);
}

/* SIGUSR1: log a line per open tunnel and one of totals, whatever BORE_LOG says. */
static void
log_server_status(void)
{
	struct counts all = { 0 };
	char text[128];
	int tunnels;

	pthread_mutex_lock(&server.lock);
	tunnels = tunnels_count(&server.open, &all, 1);
	pthread_mutex_unlock(&server.lock);
	log_msg(LOG_ALWAYS, "status: %d tunnel%s, %s", tunnels, tunnels == 1 ? "" : "s",
	    counts_str(&all, text, sizeof(text)));
}

/* Take p out of the table and its tunnel's queue; pending_lock is held. */
static void
pending_unlink(struct pending *p)
{
	ring_take(&p->chain);
	ring_take(&p->queue);
	atomic_fetch_sub(&fds.promised, 1);
}

/* Park visitor fd under id for t; -1 (fd untouched) if out of memory. */
static int
pending_add(struct tunnel *t, int fd, const uint8_t id[BORE_UUID_LEN])
{
	struct pending *p;

	if ((p = malloc(sizeof(*p))) == NULL) {
		log_msg(LOG_WARN, "out of memory");
		return (-1);
	}
	p->tunnel = t;
	p->expires = now_ms() + BORE_PENDING_TIMEOUT_MS;
	p->fd = fd;
	memcpy(p->id, id, BORE_UUID_LEN);
	/* Its data connection will need an fd: promise it now. */
	atomic_fetch_add(&fds.promised, 1);
	pthread_mutex_lock(&server.pending_lock);
	ring_put(PENDING_BUCKET(id), &p->chain);
	ring_put(&t->parked, &p->queue);
	pthread_mutex_unlock(&server.pending_lock);
	return (0);
}

/* Take the visitor parked under id out of the table; NULL if there is none. */
static struct pending *
pending_take(const uint8_t id[BORE_UUID_LEN])
{
	struct ring *bucket = PENDING_BUCKET(id), *r;
	struct pending *p = NULL;

	pthread_mutex_lock(&server.pending_lock);
	for (r = bucket->next; r != bucket && p == NULL; r = r->next)
		if (memcmp(RING_ITEM(r, struct pending, chain)->id, id, BORE_UUID_LEN) == 0)
			p = RING_ITEM(r, struct pending, chain);
	if (p != NULL)
		pending_unlink(p);
	pthread_mutex_unlock(&server.pending_lock);
	return (p);
}

/* Close t's parked visitors that expire by `when` (INT64_MAX: all of them), oldest first. */
static void
pending_expire(struct tunnel *t, int64_t when)
{
	struct ring dead, *r;
	struct pending *p;
	char id[BORE_UUID_STRLEN + 1];

	ring_init(&dead);
	pthread_mutex_lock(&server.pending_lock);
	while ((r = t->parked.next) != &t->parked &&
	    (p = RING_ITEM(r, struct pending, queue))->expires <= when) {
		pending_unlink(p);
		ring_put(&dead, &p->queue);
	}
	pthread_mutex_unlock(&server.pending_lock);
	while ((r = dead.next) != &dead) {
		p = RING_ITEM(r, struct pending, queue);
		ring_take(r);
		bore_uuid_format(p->id, id);
		if (when != INT64_MAX)
			log_msg(LOG_WARN, "removed stale connection %s", id);
		close_fd(p->fd);
		tunnel_put(t, 1);
		free(p);
	}
}

/* ---- Server: visitor pools ---------------------------------------- */

/* A place lost or refused is offered again (a client's failed one taken again) after this. */
#define POOL_HOLDOFF_MS BORE_PENDING_TIMEOUT_MS

/* Empty t's place i, closing its pooled connection; offered again after POOL_HOLDOFF_MS. */
static void
pool_drop(struct tunnel *t, int i)
{
	struct conn *c;

	pthread_mutex_lock(&t->lock);
	c = t->places[i].c;
	t->pooled -= c != NULL || t->places[i].offered;
	t->places[i] = (struct place){ .until = now_ms() + POOL_HOLDOFF_MS };
	pthread_mutex_unlock(&t->lock);
	conn_free(c);
}

/* Offer t's free places (and those not joined in 10 s) in Spares on c, fresh tokens, while
 * they fit in --max-conns beside the visitors; at a heartbeat (beat) beat on the pooled
 * connections, or close one when fds are short (then none is offered).  -1 if c failed. */
static int
pool_tick(struct conn *c, struct tunnel *t, int64_t now, int beat)
{
	uint8_t token[BORE_UUID_LEN];
	int i, fd, offer, room = fds_room(2, fds.reserve), shrink = beat && !room;
	struct place *p;

	for (i = 0; i < t->pool; i++) {
		p = &t->places[i];
		pthread_mutex_lock(&t->lock);
		fd = p->c != NULL ? p->c->fd : -1;
		if ((offer = fd == -1 && p->until <= now && room &&
		    (p->offered || t->conns + t->pooled < srv.max_conns))) {
			t->pooled += !p->offered;
			p->offered = 1;
			p->until = now + BORE_PENDING_TIMEOUT_MS;
			bore_uuid_random(p->token);
			memcpy(token, p->token, sizeof(token));
		}
		pthread_mutex_unlock(&t->lock);
		if (fd != -1 && beat &&
		    (shrink || send_msg(fd, BORE_MSG_HEARTBEAT, 0, NULL) == -1)) {
			pool_drop(t, i);
			shrink = 0;
		}
		if (offer && send_msg(c->fd, BORE_MSG_SPARE, 0, token) == -1)
			return (-1);
	}
	return (0);
}

/* Make c, which said Join(token), the pooled connection of the place offered with token; -1. */
static int
pool_join(struct conn *c, const uint8_t token[BORE_UUID_LEN])
{
	struct place *p = NULL;
	struct tunnel *t;
	struct ring *r;
	int i;

	set_liveness(c->fd);
	pthread_mutex_lock(&server.lock);
	for (r = server.open.next; r != &server.open && p == NULL; r = r->next) {
		t = RING_ITEM(r, struct tunnel, link);
		pthread_mutex_lock(&t->lock);
		for (i = 0; i < t->pool && p == NULL; i++)
			if (t->places[i].offered &&
			    sodium_memcmp(t->places[i].token, token, BORE_UUID_LEN) == 0)
				p = &t->places[i];
		/* A token is good for one join: a replay finds no place. */
		if (p != NULL) {
			p->offered = 0;
			p->c = c;
		}
		pthread_mutex_unlock(&t->lock);
	}
	pthread_mutex_unlock(&server.lock);
	if (p == NULL)
		PEER_WARN(PL_MISSING, "%s: invalid pool token", c->peer);
	return (p == NULL ? -1 : 0);
}

/* ---- Server: public ports and a tunnel's loop --------------------- */

/* Listen on one public port; -1 (errno). */
static int
try_bind(uint16_t port)
{
	struct sockaddr_storage ss = srv.tunnel_addr;  /* settings are shared: port set on a copy */

	set_port(&ss, port);
	return (listen_on(&ss, srv.tunnel_addr_len));
}

/* Why bind_public failed, as bore words it: ERANGE, a port out of range; EAGAIN, none free. */
static const char *
bind_error(int err)
{
	return (err == ERANGE ? "client port number not in allowed range" :
	    err == EAGAIN ? "failed to find an available port" :
	    err == EADDRINUSE ? "port already in use" :
	    err == EACCES || err == EPERM ? "permission denied" : "failed to bind to port");
}

/* A specific port found in use is tried again this often, this far apart. */
#define REBIND_TRIES 10
#define REBIND_WAIT_MS 50

/* Key k's ports in the server's range, in its ranges' order: the nth (nth >= 0), else 1 if
 * port is one of them (port > 0), else how many there are. */
static int
key_ports(const struct keyset *ks, int k, int nth, uint16_t port)
{
	int i, lo, hi, seen = 0;

	for (i = 0; i < ks->nranges; i++) {
		lo = ks->range[i][1] > srv.min_port ? ks->range[i][1] : srv.min_port;
		hi = ks->range[i][2] < srv.max_port ? ks->range[i][2] : srv.max_port;
		if (ks->range[i][0] != k || lo > hi)
			continue;
		if (port > 0 ? port >= lo && port <= hi : nth >= seen && nth <= seen + hi - lo)
			return (port > 0 ? 1 : lo + nth - seen);
		seen += hi - lo + 1;
	}
	return (port > 0 ? 0 : seen);
}

/* Why a tunnel on port that proved key must close after SIGHUP; NULL if it may stay. */
static const char *
key_revoked(const uint8_t key[BORE_KEY_LEN], uint16_t port)
{
	int i, k = -1, ok;

	pthread_mutex_lock(&keys.lock);
	for (i = 0; keys.current != NULL && i < keys.current->n && k == -1; i++)
		k = sodium_memcmp(keys.current->key[i], key, BORE_KEY_LEN) == 0 ? i : -1;
	ok = k != -1 && key_ports(keys.current, k, -1, port);
	pthread_mutex_unlock(&keys.lock);
	return (k == -1 ? "secret revoked" : ok ? NULL : "port no longer allowed for its secret");
}

/* The listener for key k of ks's client, which asked for *port (0: any it may), set to it; -1. */
static int
bind_public(uint16_t *port, const struct keyset *ks, int k)
{
	int span = key_ports(ks, k, -1, 0), r = (int)randombytes_uniform((uint32_t)span);
	int fd, i;

	if (*port != 0) {
		if (!key_ports(ks, k, -1, *port)) {
			errno = ERANGE;
			return (-1);
		}
		/* The holder may be a tunnel whose client just died and that is closing now. */
		for (i = 0; (fd = try_bind(*port)) == -1 && errno == EADDRINUSE &&
		    i < REBIND_TRIES; i++)
			(void)poll(NULL, 0, REBIND_WAIT_MS);
		return (fd);
	}
	/* A few ports are tried each, from a random one on; many at random, as bore tries them. */
	for (i = 0; i < BORE_PORT_TRIES && i < span; i++) {
		*port = (uint16_t)key_ports(ks, k, span <= BORE_PORT_TRIES ? (r + i) % span :
		    (int)randombytes_uniform((uint32_t)span), 0);
		if ((fd = try_bind(*port)) != -1)
			return (fd);
	}
	errno = EAGAIN;
	return (-1);
}

/* The source of an address, as startups and --visitor-rate compare them: IPv4 address, IPv6 /64. */
static void
source_of(const struct sockaddr *sa, uint8_t src[16])
{
	const uint8_t *a;
	in_port_t *port;
	size_t len = sockaddr_ip(sa, &a, &port);

	memset(src, 0, 16);
	if (len == 4) {
		src[10] = src[11] = 0xff;
		memcpy(src + 12, a, 4);
	} else if (len == 16) {
		memcpy(src, a, 8);
	}
}

/* Sources --visitor-rate keeps, in sets of VISITOR_WAYS that a keyed hash picks: a fixed table. */
#define VISITOR_SOURCES 16384
#define VISITOR_WAYS 4

/* --visitor-rate N: a token bucket per source as one time (GCRA), which a visitor moves a
 * minute / N on from itself or now, if later, to at most a minute past now: a burst of N. */
static struct {
	pthread_mutex_t lock;  /* guards slot; the rest is set before threads start */
	int per_minute;        /* N (0: no limit) */
	struct visitor_slot { uint8_t src[16]; int64_t due; } *slot;  /* VISITOR_SOURCES */
	unsigned char key[crypto_shorthash_KEYBYTES];
} visitor_rate = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* True if a visitor from sa at now (us) is within --visitor-rate, and counted if so. */
static int
visitor_rate_allows(const struct sockaddr *sa, int64_t now)
{
	struct visitor_slot *set, *e, *s;
	uint8_t src[16];
	uint64_t h;
	int64_t due, step = 60000000 / visitor_rate.per_minute;
	int ok;

	source_of(sa, src);
	crypto_shorthash((unsigned char *)&h, src, sizeof(src), visitor_rate.key);
	set = &visitor_rate.slot[h % (VISITOR_SOURCES / VISITOR_WAYS) * VISITOR_WAYS];
	pthread_mutex_lock(&visitor_rate.lock);
	for (e = s = set; e < set + VISITOR_WAYS && memcmp(e->src, src, sizeof(src)) != 0; e++)
		s = e->due < s->due ? e : s;
	/* A new source, its bucket full, takes its set's slot nearest full: one idle a minute
	 * is full, nothing lost; one kept busy (an attacker's) goes last. */
	due = e < set + VISITOR_WAYS && e->due > now ? e->due : now;
	e = e < set + VISITOR_WAYS ? e : s;
	if ((ok = due + step - now <= step * visitor_rate.per_minute)) {
		memcpy(e->src, src, sizeof(src));
		e->due = due + step;
	}
	pthread_mutex_unlock(&visitor_rate.lock);
	return (ok);
}

static int pool_hand(struct tunnel *t, const uint8_t id[BORE_UUID_LEN]);

/* How long a public listener is left alone when visitors cannot be taken now. */
#define VISITOR_WAIT_MS 10

/*
 * Accept one visitor on the public listener, park it, and tell the client;
 * -1 ends the tunnel.  When fds are short, or this tunnel holds its share of
 * them, visitors wait in the listen queue instead: *paused_until says until
 * when to leave the listener alone.
 */
static int
park_visitor(struct conn *c, struct tunnel *t, int lfd, int64_t *paused_until)
{
	struct sockaddr_storage ss;
	uint8_t id[BORE_UUID_LEN];
	char addr[64], where[16];
	int vfd, rated, share, room = fds_room(2, fds.reserve);

	/* A tunnel's share of the fds visitors may use (this one is counted): two a visitor. */
	share = (fds.limit - fds.reserve) / 2 / atomic_load(&server.tunnels);
	/* The visitor's fd and its data connection's, above the control port's reserve. */
	if (!room || atomic_load(&t->conns) >= (share > 1 ? share : 1)) {
		*paused_until = now_ms() + VISITOR_WAIT_MS;
		log_limited(&t->waits, LOG_WARN, "port %u: visitors wait: %s (limit %d fds)",
		    t->port, room ? "tunnel holds its share of fds" : "out of fds for visitors",
		    fds.limit);
		return (0);
	}
	snprintf(where, sizeof(where), "port %u: ", t->port);
	if ((vfd = accept_peer(lfd, 0, where, &ss, addr, paused_until)) == -1)
		return (0);
	/* Refused by --visitor-rate before it counts against --max-conns. */
	if ((rated = visitor_rate.per_minute && !visitor_rate_allows((struct sockaddr *)&ss,
	    now_us())) ||
	    tunnel_add_conn(t) == -1) {
		PEER_WARN(rated ? PL_VISITOR_RATE : PL_MAX_CONNS, "port %u: refused %s: too many "
		    "connections%s (limit %d%s)", t->port, addr, rated ? " from its source" : "",
		    rated ? visitor_rate.per_minute : srv.max_conns, rated ? " a minute" : "");
		close_fd(vfd);
		return (0);
	}
	log_msg(LOG_INFO, "new connection from %s on port %u", addr, t->port);
	bore_uuid_random(id);
	if (pending_add(t, vfd, id) == -1) {
		close_fd(vfd);
		tunnel_put(t, 1);
		return (0);
	}
	/* The table owns vfd now; it is closed by Accept, expiry, or the tunnel's end. */
	if (pool_hand(t, id) == -1 && send_msg(c->fd, BORE_MSG_CONNECTION, 0, id) == -1) {
		log_msg(LOG_INFO, "port %u: could not reach client: %s", t->port, strerror(errno));
		return (-1);
	}
	return (0);
}

/* Heartbeat and announce visitors until the client leaves; why the tunnel ended. */
static const char *
serve_tunnel(struct conn *c, struct tunnel *t, int lfd, const uint8_t *key)
{
	enum { POLL_CONTROL, POLL_PUBLIC, POLL_POOL };
	struct pollfd pfd[POLL_POOL + POOL_MAX];
	int64_t next_beat, paused_until = 0;
	const char *why;
	char scratch[256];
	ssize_t n;
	int i, wait, beat;

	for (next_beat = now_ms();;) {
		if (atomic_load(&server.stopping))
			return (send_error(c->fd, "server shutting down"));
		if ((beat = now_ms() >= next_beat)) {
			/* No zombie: its data connections could no longer authenticate. */
			if (key != NULL && (why = key_revoked(key, t->port)) != NULL)
				return (send_error(c->fd, why));
			if (send_msg(c->fd, BORE_MSG_HEARTBEAT, 0, NULL) == -1)
				return (strerror(errno));
			next_beat = now_ms() + BORE_HEARTBEAT_MS;
			pending_expire(t, now_ms());
		}
		/* Places used are offered again at once, so a pool refills between visitors. */
		if (pool_tick(c, t, now_ms(), beat) == -1)
			return (strerror(errno));
		pfd[POLL_CONTROL] = (struct pollfd){ .fd = c->fd, .events = POLLIN };
		wait = ms_until(next_beat);
		/* Out of fds, or after EMFILE and the like: leave the listener alone a moment. */
		pfd[POLL_PUBLIC] = (struct pollfd){ .fd = unless_paused(lfd, paused_until, &wait),
		    .events = POLLIN };
		/* Only this thread takes pooled connections out, so those polled stay open. */
		pthread_mutex_lock(&t->lock);
		for (i = 0; i < t->pool; i++)
			pfd[POLL_POOL + i] = (struct pollfd){ .events = POLLIN,
			    .fd = t->places[i].c != NULL ? t->places[i].c->fd : -1 };
		pthread_mutex_unlock(&t->lock);
		if (poll(pfd, (nfds_t)(POLL_POOL + t->pool), wait) == -1 && errno != EINTR)
			return (strerror(errno));
		/* The client sends nothing after Hello: readable is EOF, an error, or junk. */
		n = pfd[POLL_CONTROL].revents ? recv(c->fd, scratch, sizeof(scratch), 0) : 1;
		if (n == 0)
			return ("client disconnected");
		if (n == -1 && errno != EINTR && errno != EAGAIN)
			return (strerror(errno));
		/* Nor on a pooled connection, which goes then. */
		for (i = 0; i < t->pool; i++)
			if (pfd[POLL_POOL + i].revents)
				pool_drop(t, i);
		if ((pfd[POLL_PUBLIC].revents & POLLIN) &&
		    park_visitor(c, t, lfd, &paused_until) == -1)
			return ("client unreachable");
	}
}

/* Open a tunnel for a client of key k of ks that asked for port `want`, serve it, clean up. */
static void
run_tunnel(struct conn *c, uint16_t want, const struct keyset *ks, int k, int pool)
{
	const char *why;
	struct tunnel *t;
	uint16_t port = want;
	int i, lfd;

	if (atomic_fetch_add(&server.tunnels, 1) >= srv.max_sessions) {
		PEER_WARN(PL_SESSIONS, "%s: refused: %s (limit %d)", c->peer,
		    send_error(c->fd, "too many tunnels"), srv.max_sessions);
		goto err0;
	}
	if ((lfd = bind_public(&port, ks, k)) == -1) {
		why = send_error(c->fd, bind_error(errno));
		if (want == 0)
			PEER_WARN(PL_NO_PORT, "%s: could not open a port: %s", c->peer, why);
		else
			PEER_WARN(PL_NO_PORT, "%s: could not open port %u: %s", c->peer, want, why);
		goto err0;
	}
	if ((t = tunnel_new()) == NULL)
		goto err1;
	t->port = port;
	t->pool = pool < POOL_MAX ? pool : POOL_MAX;
	t->since_ms = now_ms();
	t->since = time(NULL);
	snprintf(t->client, sizeof(t->client), "%s", c->peer);
	memcpy(t->src, c->src, sizeof(t->src));
	tunnel_list(t, 1);
	set_liveness(c->fd);
	if (send_msg(c->fd, BORE_MSG_HELLO, t->port, NULL) == -1)
		goto err2;
	log_msg(LOG_INFO, "new client %s, tunnel open on port %u", c->peer, t->port);
	why = serve_tunnel(c, t, lfd, k != -1 ? ks->key[k] : NULL);
	log_msg(LOG_INFO, "tunnel on port %u closed (%s)", t->port, why);

err2:
	tunnel_list(t, 0);
	tunnel_close(t, !atomic_load(&server.stopping));
	for (i = 0; i < t->pool; i++)
		pool_drop(t, i);
	pending_expire(t, INT64_MAX);
	tunnel_put(t, 0);
err1:
	close_fd(lfd);
err0:
	atomic_fetch_sub(&server.tunnels, 1);
}

/* ---- Server: a claimed visitor, relayed to its data connection ---- */

/* The PROXY protocol v2 signature that opens every binary header. */
static const uint8_t proxy_v2_sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};

/* Room for any PROXY header: v1 is at most 107 bytes, v2 for TCP6 52. */
#define PROXY_HEADER_MAX 108

/*
 * The HAProxy PROXY protocol header (version 1, text, or 2, binary) that
 * tells a service the visitor src reached the public address dst; its
 * length, or -1 if cap is too small or the two are not of one IP family
 * (the two ends of a TCP socket always are).
 */
static int
proxy_header(const struct sockaddr *src, const struct sockaddr *dst, int version, char *out,
    size_t cap)
{
	char sa[INET6_ADDRSTRLEN], da[INET6_ADDRSTRLEN];
	const uint8_t *sp, *dp;
	in_port_t *sport, *dport;
	size_t alen = sockaddr_ip(src, &sp, &sport);
	int family = alen == 4 ? AF_INET : AF_INET6, n = (int)(2 * alen + 4);

	if (alen == 0 || sockaddr_ip(dst, &dp, &dport) != alen)
		return (-1);
	if (version == 1) {
		n = snprintf(out, cap, "PROXY TCP%c %s %s %u %u\r\n", alen == 4 ? '4' : '6',
		    inet_ntop(family, sp, sa, sizeof(sa)), inet_ntop(family, dp, da, sizeof(da)),
		    ntohs(*sport), ntohs(*dport));
		return (n < 0 || (size_t)n >= cap ? -1 : n);
	}
	/* v2: signature, version 2 + PROXY command, family + STREAM, length, then the addresses. */
	if (cap < 16 + (size_t)n)
		return (-1);
	memcpy(out, proxy_v2_sig, sizeof(proxy_v2_sig));
	out[12] = 0x21;
	out[13] = alen == 4 ? 0x11 : 0x21;
	out[14] = 0;
	out[15] = (char)n;
	memcpy(out + 16, sp, alen);
	memcpy(out + 16 + alen, dp, alen);
	memcpy(out + 16 + 2 * alen, sport, 2);
	memcpy(out + 18 + 2 * alen, dport, 2);
	return (16 + n);
}

/* Send the service, through the client's data connection cfd, the PROXY header for visitor vfd. */
static int
send_proxy_header(int cfd, int vfd)
{
	struct sockaddr_storage src, dst;
	socklen_t slen = sizeof(src), dlen = sizeof(dst);
	char hdr[PROXY_HEADER_MAX];
	int n;

	if (getpeername(vfd, (struct sockaddr *)&src, &slen) == -1 ||
	    getsockname(vfd, (struct sockaddr *)&dst, &dlen) == -1)
		return (-1);
	if ((n = proxy_header((struct sockaddr *)&src, (struct sockaddr *)&dst, srv.proxy_protocol,
	    hdr, sizeof(hdr))) == -1) {
		errno = EOVERFLOW;
		return (-1);
	}
	return (write_all(cfd, hdr, (size_t)n, now_ms() + BORE_NETWORK_TIMEOUT_MS));
}

/* Hand the visitor parked under id to this data connection and relay until both are done. */
static void
forward_visitor(struct conn *c, const uint8_t id[BORE_UUID_LEN])
{
	char ids[BORE_UUID_STRLEN + 1];
	struct relay_info info = { .dump_id = 0 };
	int64_t start = now_ms();
	struct pending *p;
	struct tunnel *t;

	bore_uuid_format(id, ids);
	if ((p = pending_take(id)) == NULL) {
		PEER_WARN(PL_MISSING, "%s: missing connection %s", c->peer, ids);
		return;
	}
	/* The parked visitor's fd, place and tunnel reference are ours now. */
	t = p->tunnel;
	info.fd = p->fd;
	free(p);
	log_msg(LOG_DEBUG, "forwarding connection %s", ids);
	if (tunnel_track(t, &info, 1) == 0) {
		atomic_fetch_add(&server.relays, 1);
		/* The header goes first, so the service reads it before any visitor byte. */
		if ((srv.proxy_protocol && send_proxy_header(c->fd, info.fd) == -1) ||
		    relay_after_frame(c, info.fd, &info) == -1) {
			log_msg(LOG_DEBUG, "connection %s aborted: %s", ids, strerror(errno));
			/* Pass the abort on: both peers see a reset, not a clean end. */
			set_reset_on_close(info.fd);
			set_reset_on_close(c->fd);
		}
		/* The data connection is the relay's first socket: bytes[0] went to the visitor. */
		log_closed(ids, 0, info.bytes[1], info.bytes[0], start);
		(void)tunnel_track(t, &info, 0);
		atomic_fetch_sub(&server.relays, 1);
	}
	close_fd(info.fd);
	tunnel_put(t, 1);
}

/* A visitor parked under id, for the pooled connection c that claims it. */
struct handoff {
	struct conn *c;
	uint8_t id[BORE_UUID_LEN];
};

/* Thread for a pooled connection told of a visitor: claim it, as an Accept would, and relay. */
static void *
serve_handoff(void *arg)
{
	struct handoff *h = arg;

	forward_visitor(h->c, h->id);
	conn_free(h->c);
	free(h);
	return (NULL);
}

/* Tell one of t's pooled connections that it carries the visitor parked under id; -1 if none. */
static int
pool_hand(struct tunnel *t, const uint8_t id[BORE_UUID_LEN])
{
	struct handoff *h = NULL;
	struct conn *c;
	int i;

	for (i = 0; i < t->pool; i++) {
		pthread_mutex_lock(&t->lock);
		if ((c = t->places[i].c) != NULL) {
			t->places[i].c = NULL;
			t->places[i].until = 0;
			t->pooled--;
		}
		pthread_mutex_unlock(&t->lock);
		if (c != NULL && send_msg(c->fd, BORE_MSG_CONNECTION, 0, id) == 0 &&
		    (h = malloc(sizeof(*h))) != NULL) {
			h->c = c;
			memcpy(h->id, id, BORE_UUID_LEN);
			/* c is the thread's now. */
			if (spawn(serve_handoff, h) == 0)
				return (0);
			free(h);
		}
		conn_free(c);
	}
	return (-1);
}

/* ---- Server: before authentication (--max-startups) -------------- */

/*
 * Control connections not yet known: until they authenticate or, with no
 * secret, say Hello or Accept; after OpenSSH's MaxStartups and
 * PerSourceMaxStartups.  Past srv.max_startups a newcomer takes the place of
 * the busiest source's (IPv4 address, IPv6 /64) oldest idle one, so one place
 * cannot lock out the rest; with none that may go, one of as many kept for bursts.
 */
struct startup {
	struct conn *c;   /* NULL: the place is free */
	uint8_t src[16];  /* c's source */
	int64_t since;    /* when c took the place */
	int n;            /* places its source holds, known ones too */
	int known;        /* from a source with a tunnel open */
	int waiting;      /* its first frame was seen waiting: it is not idle */
};

/*
 * The places, scanned; lock guards them and conn.place.  A listed conn's fd stays open till
 * its place is freed; the pinned one (looked at unlocked by the accepting thread, the only
 * one that drops) not till unpinned.
 */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t unpinned;
	struct startup *place;  /* 2 * srv.max_startups */
	int pinned;             /* the place looked at, or -1 */
	int used;               /* places taken */
} startups = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, -1, 0 };

/* A startup younger than this is dropped only for a newcomer from a lighter source. */
#define STARTUP_GRACE_MS 250

/* True if a whole frame waits in fd: its thread has yet to run, but it is not idle. */
static int
frame_waiting(int fd)
{
	char buf[CONN_BUF];
	ssize_t n = recv(fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);

	return (n > 0 && memchr(buf, '\0', (size_t)n) != NULL);
}

/* Add d to the count of every place src holds; how many it holds. */
static int
source_count(const uint8_t src[16], int d)
{
	int i, n = 0;

	for (i = 0; i < 2 * srv.max_startups; i++)
		if (startups.place[i].c != NULL && memcmp(startups.place[i].src, src, 16) == 0) {
			startups.place[i].n += d;
			n++;
		}
	return (n);
}

/*
 * The per-source rules: true if startup e may be dropped at now for a
 * newcomer from src whose source holds mine places with it (0: known).
 * Known ones and those whose frame waits stay; a young one goes only for a
 * newcomer of a lighter source not its own, so a client's burst keeps its own.
 */
static int
startup_may_go(const struct startup *e, const uint8_t src[16], int mine, int64_t now)
{
	return (e->c != NULL && !e->known && !e->waiting && (now - e->since >= STARTUP_GRACE_MS ||
	    (e->n > mine && memcmp(e->src, src, 16) != 0)));
}

/* The place to drop for a newcomer: the busiest source's oldest that may go; -1 if none. */
static int
startup_victim(const uint8_t src[16], int mine, int64_t now)
{
	const struct startup *e, *b;
	int i, best = -1;

	for (i = 0; i < 2 * srv.max_startups; i++) {
		e = &startups.place[i];
		b = &startups.place[best < 0 ? i : best];
		if (startup_may_go(e, src, mine, now) &&
		    (best == -1 || e->n > b->n || (e->n == b->n && e->since < b->since)))
			best = i;
	}
	return (best);
}

/* Free place i, whose conn leaves the startups. */
static void
startup_free(int i)
{
	startups.place[i].c->place = -1;
	startups.place[i].c = NULL;
	startups.used--;
	(void)source_count(startups.place[i].src, -1);
}

/*
 * Past srv.max_startups, drop startup_victim's pick for a newcomer from src; 1 if one went.
 * Its frame is peeked at with the lock let go and its place pinned: one found waiting stays.
 */
static int
startup_drop(const uint8_t src[16], int known, int64_t now)
{
	int v, waiting;

	while (startups.used >= srv.max_startups && (v = startup_victim(src,
	    known ? 0 : source_count(src, 0) + 1, now)) != -1) {
		startups.pinned = v;
		pthread_mutex_unlock(&startups.lock);
		if (!(waiting = frame_waiting(startups.place[v].c->fd)))
			(void)shutdown(startups.place[v].c->fd, SHUT_RDWR);
		pthread_mutex_lock(&startups.lock);
		startups.pinned = -1;
		pthread_cond_broadcast(&startups.unpinned);
		if (!waiting) {
			startup_free(v);
			return (1);
		}
		startups.place[v].waiting = 1;
	}
	return (0);
}

/* List c, from a source known or not, as a startup at now; -1 if c must be closed instead. */
static int
startup_add(struct conn *c, int known, int64_t now)
{
	int i, dropped;

	pthread_mutex_lock(&startups.lock);
	dropped = startup_drop(c->src, known, now);
	for (i = 0; i < 2 * srv.max_startups && startups.place[i].c != NULL; i++)
		;
	if (i < 2 * srv.max_startups) {
		startups.place[i] = (struct startup){ .c = c, .since = now, .known = known,
		    .n = source_count(c->src, 1) + 1 };
		memcpy(startups.place[i].src, c->src, 16);
		c->place = i;
		startups.used++;
	}
	pthread_mutex_unlock(&startups.lock);
	if (dropped || c->place == -1)
		PEER_WARN(PL_STARTUPS, "too many connections before authentication (limit %d): "
		    "dropped one from the busiest source", srv.max_startups);
	return (c->place == -1 ? -1 : 0);
}

/* c has said what it is for, or failed to: take it off the list, if it is still there. */
static void
startup_done(struct conn *c)
{
	pthread_mutex_lock(&startups.lock);
	while (c->place != -1 && c->place == startups.pinned)
		pthread_cond_wait(&startups.unpinned, &startups.lock);
	if (c->place != -1)
		startup_free(c->place);
	pthread_mutex_unlock(&startups.lock);
}

/* ---- Server: metrics for Prometheus (--metrics) ------------------- */

/* Room for the metrics text: under 2 KiB, with a line for each kind of refusal. */
#define METRICS_MAX 4096

/* The reason --metrics names the refusals that lines of a kind tell of; NULL: not refusals. */
static const char *const refusal_reasons[PL_KINDS] = {
	[PL_ALLOW_CONTROL] = "allow-control", [PL_STARTUPS] = "startups", [PL_HANDSHAKE] = "auth",
	[PL_SESSIONS] = "max-sessions", [PL_NO_PORT] = "port", [PL_ALLOW] = "allow",
	[PL_MAX_CONNS] = "max-conns", [PL_VISITOR_RATE] = "visitor-rate",
};

/* A metric's HELP and TYPE lines, then its name, where its first sample goes on. */
#define METRIC(name, type, help) "# HELP " name " " help "\n# TYPE " name " " type "\n" name

/* The metrics in Prometheus's text format 0.0.4 into out (METRICS_MAX bytes); their length. */
static size_t
metrics_text(char *out)
{
	struct counts all;
	size_t n;
	int i, tunnels;

	pthread_mutex_lock(&server.lock);
	all = server.ended;
	tunnels = tunnels_count(&server.open, &all, 0);
	(void)tunnels_count(&server.gone, &all, 0);
	pthread_mutex_unlock(&server.lock);
	n = (size_t)snprintf(out, METRICS_MAX,
	    METRIC("bore_tunnels", "gauge", "Tunnels open now") " %d\n"
	    METRIC("bore_visitors", "gauge", "Visitors now, parked or relayed") " %d\n"
	    METRIC("bore_visitors_total", "counter", "Visitors accepted on public ports") " %llu\n"
	    METRIC("bore_relayed_bytes_total", "counter", "Bytes from visitors (in), to them (out)")
	    "{direction=\"in\"} %llu\nbore_relayed_bytes_total{direction=\"out\"} %llu\n"
	    METRIC("bore_control_connections", "gauge", "Connections open on the control port")
	    " %d\n" METRIC("process_start_time_seconds", "gauge", "Start time of the process since "
	    "unix epoch in seconds") " %lld\n"
	    "# HELP bore_refused_total Connections refused, by reason\n"
	    "# TYPE bore_refused_total counter\n",
	    tunnels, all.now, (unsigned long long)all.visitors, (unsigned long long)all.in,
	    (unsigned long long)all.out, atomic_load(&fds.conns), (long long)srv.started);
	pthread_mutex_lock(&logs.limits_lock);
	for (i = 0; i < PL_KINDS; i++)
		if (refusal_reasons[i] != NULL)
			n += (size_t)snprintf(out + n, METRICS_MAX - n, "bore_refused_total{reason="
			    "\"%s\"} %llu\n", refusal_reasons[i],
			    (unsigned long long)logs.peer_lines[i].count);
	pthread_mutex_unlock(&logs.limits_lock);
	return (n);
}

/* Serve one scrape on fd from peer within the network timeout: GET or HEAD /metrics. */
static void
serve_scrape(int fd, const char *peer)
{
	char req[HTTP_HEADER_MAX + 1] = "", body[METRICS_MAX], out[METRICS_MAX + 256];
	int64_t deadline = now_ms() + BORE_NETWORK_TIMEOUT_MS;
	int r = http_header(fd, req, deadline), n;
	/* Of METHOD SP /metrics[?QUERY] SP HTTP/1.x and the headers, the first two are read. */
	size_t len, m = strcspn(req, " \r\n");
	const char *path = req + m, *status = r == -1 && errno == EMSGSIZE ?
	    "431 Request Header Fields Too Large" : r == -1 && errno == ETIMEDOUT ?
	    "408 Request Timeout" : r != 1 || *path != ' ' ? "400 Bad Request" :
	    (m != 3 || memcmp(req, "GET", 3) != 0) && (m != 4 || memcmp(req, "HEAD", 4) != 0) ?
	    "405 Method Not Allowed" : strncmp(path, " /metrics", 9) != 0 ||
	    memchr(" ?", path[9], 2) == NULL ? "404 Not Found" : "200 OK";

	len = status[0] == '2' ? metrics_text(body) : 0;
	/* Allow may come with any status (RFC 9110); HEAD (m 4 once allowed) gets no body. */
	n = snprintf(out, sizeof(out), "HTTP/1.1 %s\r\nContent-Type: text/plain; version=0.0.4; "
	    "charset=utf-8\r\nAllow: GET, HEAD\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n"
	    "%.*s", status, len, m == 4 ? 0 : (int)len, body);
	(void)write_all(fd, out, (size_t)n, deadline);
	if (status[0] != '2')
		PEER_WARN(PL_METRICS, "metrics: %s: %s", peer, status);
}

/* The --metrics thread on listener arg: accept a scrape while fds allow, serve it; one at once. */
static void *
serve_metrics(void *arg)
{
	struct pollfd p = { .fd = (int)(intptr_t)arg, .events = POLLIN };
	struct sockaddr_storage ss;
	socklen_t len;
	char peer[64];
	int fd = -1;

	for (;; fd = -1) {
		len = sizeof(ss);
		/* One fd at a time, of any share (FD_SPARE covers it): a flood still shows. */
		if (fds_room(1, 0) && poll(&p, 1, -1) == 1)
			fd = counted(accept_nb(p.fd, (struct sockaddr *)&ss, &len));
		if (fd != -1) {
			serve_scrape(fd, addr_str((struct sockaddr *)&ss, len, peer, sizeof(peer)));
			close_fd(fd);
		} else if (!fds_room(1, 0) || short_of_resources(errno)) {
			(void)poll(NULL, 0, ACCEPT_BACKOFF_MS);
		}
	}
	return (arg);
}

/* ---- Server: the control port and its signals --------------------- */

/* Thread for one connection to the control port: authenticate, then Hello or Accept. */
static void *
serve_control(void *arg)
{
	struct conn *c = arg;
	struct bore_msg m;
	struct keyset *ks = srv.has_secret ? keyset_copy() : NULL;
	int r = -1, k = -1, places = 0;

	/* A copy of its own, kept while its tunnel is up: a reload frees the set it came from. */
	if (!srv.has_secret || (ks != NULL && (k = server_handshake(c, ks)) != -1)) {
		/* Known now: not to be dropped for an anonymous peer (a client's spare, say). */
		if (srv.has_secret)
			startup_done(c);
		/* A C client asks for a pool just before its Hello. */
		if ((r = read_first(c, &m)) == 1 && m.type == BORE_MSG_POOL) {
			places = m.port;
			r = read_first(c, &m);
		}
		if (r == -1)
			PEER_WARN(PL_FIRST, "%s: %s", c->peer, first_error(errno));
		else if (r == 0)
			log_msg(LOG_DEBUG, "%s: closed before its first message", c->peer);
	}
	startup_done(c);
	if (r == 1 && m.type == BORE_MSG_HELLO)
		run_tunnel(c, m.port, k != -1 ? ks : &any_port, k, places);
	else if (r == 1 && m.type == BORE_MSG_ACCEPT)
		forward_visitor(c, m.uuid);
	else if (r == 1 && m.type == BORE_MSG_JOIN && pool_join(c, m.uuid) == 0)
		c = NULL;  /* the tunnel's now */
	else if (r == 1 && m.type == BORE_MSG_AUTHENTICATE)
		PEER_WARN(PL_UNEXPECTED, "%s: unexpected authenticate", c->peer);
	else if (r == 1)
		PEER_WARN(PL_UNEXPECTED, "%s: unexpected %s message", c->peer, msg_names[m.type]);
	keyset_free(ks);
	conn_free(c);
	return (NULL);
}

/* SIGHUP: re-read --secret-file; new handshakes use the new keys, tunnels up stay up. */
static void
reload_secrets(void)
{
	struct keyset *ks;

	if (srv.secret_file == NULL) {
		log_msg(LOG_INFO, "SIGHUP: no secret file, nothing to reload");
		return;
	}
	ks = read_secret_file(srv.secret_file, LOG_WARN, "; keeping the secrets loaded before");
	if (ks == NULL)
		return;
	log_msg(LOG_INFO, "secret file reloaded: %d secret%s", ks->n, ks->n == 1 ? "" : "s");
	keyset_publish(ks);
}

/*
 * After SIGTERM/SIGINT: tunnels tell their clients and close, relays get up
 * to --grace to finish; a second signal ends the wait.  Returns exit status 0.
 */
static int
drain_and_exit(void)
{
	int tunnels, relays;

	while (next_signal() != -1)
		continue;
	atomic_store(&server.stopping, 1);
	tunnels = atomic_load(&server.tunnels);
	relays = atomic_load(&server.relays);
	log_msg(LOG_INFO, "shutting down: %d tunnel%s, %d connection%s; waiting up to %.1f s",
	    tunnels, tunnels == 1 ? "" : "s", relays, relays == 1 ? "" : "s",
	    srv.grace_ms / 1000.0);
	wait_drained(&server.tunnels, &server.relays, srv.grace_ms, log_server_status,
	    reload_secrets);
	log_msg(LOG_INFO, "shut down");
	return (0);
}

/* Accept one control connection and start its thread; *paused_until as for accept_peer. */
static void
accept_control(int lfd, int64_t *paused_until)
{
	struct sockaddr_storage ss;
	struct conn *c;
	char addr[64];
	int fd;

	if ((fd = accept_peer(lfd, 1, "", &ss, addr, paused_until)) == -1)
		return;
	log_msg(LOG_DEBUG, "incoming connection from %s", addr);
	if ((c = conn_new(fd, addr)) == NULL) {
		close_fd(fd);
		return;
	}
	source_of((struct sockaddr *)&ss, c->src);
	/* Accepted all the same, so the listen queue keeps moving for others in a flood. */
	if (startup_add(c, source_known(c->src), now_ms()) == -1) {
		conn_free(c);
	} else if (spawn(serve_control, c) == -1) {
		/* c and its fd were to pass to the thread; not started, they are still ours. */
		startup_done(c);
		conn_free(c);
	}
}

/* Set up the server's tables and listen on the control port, saying where; -1 if it cannot. */
static int
start_server(const struct sockaddr_storage *ctl, socklen_t ctl_len)
{
	char addr[64], tun[64], *p;
	int i, lfd, mfd = -1;

	ring_init(&server.open);
	ring_init(&server.gone);
	for (i = 0; i < PENDING_BUCKETS; i++)
		ring_init(&server.pending[i]);
	addr_str((const struct sockaddr *)&srv.tunnel_addr, srv.tunnel_addr_len, tun, sizeof(tun));
	/* Tunnels bind their own ports: show the address alone. */
	if ((p = strrchr(tun, ':')) != NULL)
		*p = '\0';
	addr_str((const struct sockaddr *)ctl, ctl_len, addr, sizeof(addr));
	if ((lfd = listen_on(ctl, ctl_len)) == -1) {
		log_msg(LOG_ERROR, "could not listen on %s: %s", addr, strerror(errno));
		return (-1);
	}
	if (srv.metrics_len != 0 && (mfd = listen_on(&srv.metrics, srv.metrics_len)) == -1) {
		log_msg(LOG_ERROR, "could not listen on %s for --metrics: %s", addr_str((struct
		    sockaddr *)&srv.metrics, srv.metrics_len, tun, sizeof(tun)), strerror(errno));
		return (-1);
	}
	/* The listener is the thread's; settings are all fixed by now. */
	if (mfd != -1 && spawn(serve_metrics, (void *)(intptr_t)mfd) == -1)
		return (-1);
	log_msg(LOG_INFO, "server listening on %s; tunnels on %s, ports %u-%u; %s", addr, tun,
	    srv.min_port, srv.max_port, srv.has_secret ? "secret required" : "no secret required");
	return (lfd);
}

/* Accept control connections on lfd until SIGINT/SIGTERM, a thread each; exit status. */
static int
run_server(int lfd)
{
	enum { POLL_LISTEN, POLL_SIGNAL, POLL_SLOTS };
	struct pollfd pfd[POLL_SLOTS];
	int64_t paused_until = 0;
	int wait;

	pfd[POLL_SIGNAL] = (struct pollfd){ .fd = pipes.signal[0], .events = POLLIN };
	for (;;) {
		/* After EMFILE and the like, leave the listener alone for a moment. */
		wait = INT_MAX;
		pfd[POLL_LISTEN] = (struct pollfd){ .fd = unless_paused(lfd, paused_until, &wait),
		    .events = POLLIN };
		if (poll(pfd, POLL_SLOTS, wait) == -1 && errno != EINTR) {
			log_msg(LOG_ERROR, "poll: %s", strerror(errno));
			return (1);
		}
		if (take_signals(log_server_status, reload_secrets)) {
			close_fd(lfd);
			return (drain_and_exit());
		}
		if (pfd[POLL_LISTEN].revents & POLLIN)
			accept_control(lfd, &paused_until);
	}
}

/* ==================================================================== */
/* Client: control connection, data connections, visitors               */
/* ==================================================================== */

/* ---- Client: settings and tunnels --------------------------------- */

/* How the client reaches the server: straight, or through --proxy of this kind. */
enum proxy_kind { PROXY_NONE, PROXY_HTTP, PROXY_SOCKS5, PROXY_SOCKS5H };

/* Client settings shared by all its tunnels, fixed before the first thread starts. */
static struct {
	const char *to, *local_host;
	uint16_t control_port;
	int has_secret;
	uint8_t key[BORE_KEY_LEN];              /* visitor threads read it until exit: not wiped */
	int reconnect;                          /* re-dial when the tunnel is lost */
	int heartbeat_timeout_ms;               /* silence that means the server is gone */
	int dump;                               /* hex-dump every proxied connection */
	int pool;                               /* pooled connections asked for a tunnel */
	int max_conns;                          /* visitors relayed at once */
	enum proxy_kind proxy;                  /* --proxy's scheme */
	char proxy_host[256];                   /* --proxy's host, as given */
	uint16_t proxy_port;
	char proxy_user[256], proxy_pass[256];  /* decoded, for RFC 1929; user "": none */
	char proxy_basic[700];                  /* http://: base64 of user:pass; "": none */
	int grace_ms;                           /* how long relays may finish at a stop */
} cli;

/* Most tunnels one `bore local` opens, one per local port given. */
#define MAX_TUNNELS 64

/*
 * One tunnel of `bore local`.  Fields above `thread` are fixed before threads
 * start; `status` is read after the join; the rest are under lock, never per byte.
 */
struct local_tunnel {
	uint16_t local_port;
	uint16_t want;             /* the public port asked for; 0: any */
	struct addrinfo *local_ai; /* the local service, resolved once */
	pthread_t thread;
	int status;                /* run_client's exit status */
	pthread_mutex_t lock;
	uint16_t port;             /* the public port while the tunnel is up, else 0 */
	int64_t since_ms;          /* when it came up */
	time_t since;
	struct counts counts;      /* visitors proxied, and their bytes */
	struct ring live;          /* relays running now, for their bytes so far */
	atomic_int members;        /* pooled connections opening or waiting, against cli.pool */
};

/* Data connections being opened at once: a burst must not look like a flood to --max-startups. */
#define OPENING_MAX 64

/* Client state threads share: tunnels (each with its lock), atomic counts, opening places. */
static struct {
	struct local_tunnel tunnels[MAX_TUNNELS];
	int ntunnels;                  /* set before threads start */
	atomic_int threads;            /* tunnel threads still running; main waits for none */
	atomic_int visitors;           /* visitor threads running now, against cli.max_conns */
	atomic_int seen;               /* visitors proxied so far; numbers --dump's connections */
	atomic_int draining;           /* set at a stop while visitors finish: no new ones */
	atomic_int no_pools;           /* the server closed at a Pool: ask for none again */
	pthread_mutex_t opening_lock;
	pthread_cond_t opening_done;
	int opening;                   /* data connections being opened, up to OPENING_MAX */
} client = { .opening_lock = PTHREAD_MUTEX_INITIALIZER, .opening_done = PTHREAD_COND_INITIALIZER };

/* First and longest wait between reconnection attempts. */
#define RECONNECT_MIN_MS 500
#define RECONNECT_MAX_MS 30000

/* The wait before another try after `failures` in a row: first ms doubled for each, up to max. */
static int
back_off_ms(int first, int failures, int max)
{
	int64_t ms = (int64_t)first << (failures < 20 ? failures : 20);

	return (ms < max ? (int)ms : max);
}

/* What a step of the client came to, said once where it went wrong; so what comes next. */
enum step {
	STEP_OK,
	STEP_STOPPED,        /* cut short by a stop, without a word: exit 0 */
	STEP_REFUSED,        /* the server's refusal, which no retry mends: exit 78 */
	STEP_PROXY_REFUSED,  /* the proxy's: final at the first connection, later as lost */
	STEP_PORT_GONE,      /* the port asked for again is not to be had: ask for any */
	STEP_SHORT,          /* no fd or memory here: retry, even at the first connection */
	STEP_LOST,           /* lost: retry if allowed */
	STEP_NO_POOL,        /* the server closed at our Pool: ask again at once, without */
};

/* ---- Client: the server's errors and the handshake ---------------- */

/* Resolve host (a name, an IP, or [IPv6]) and port for connecting; NULL after saying why. */
static struct addrinfo *
resolve(const char *host, uint16_t port)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *ai;
	char name[256], serv[8];
	int rc;

	snprintf(serv, sizeof(serv), "%u", port);
	if ((rc = getaddrinfo(unbracket(host, name, sizeof(name)), serv, &hints, &ai)) != 0) {
		log_msg(LOG_ERROR, "could not resolve %s: %s", host, gai_strerror(rc));
		return (NULL);
	}
	return (ai);
}

/* True if text is one of the n strings in list. */
static int
in_list(const char *text, const char *const *list, size_t n)
{
	while (n-- > 0)
		if (strcmp(text, list[n]) == 0)
			return (1);
	return (0);
}

/* What a server's Error means; kept: the port asked for was kept from an earlier tunnel. */
static enum step
error_outcome(const char *text, int kept)
{
	static const char *const port_errors[] = {
		"client port number not in allowed range", "permission denied",
		"port already in use", "failed to bind to port",
	};
	static const char *const refusals[] = {
		"invalid secret", "server requires secret, but no secret was provided",
		"client port number not in allowed range", "permission denied",
	};

	/* A port the user did not choose, kept from an earlier tunnel, can be given up. */
	if (kept && in_list(text, port_errors, 4))
		return (STEP_PORT_GONE);
	return (in_list(text, refusals, 4) ? STEP_REFUSED : STEP_LOST);
}

/* Log a server's Error frame; what it means (kept as for error_outcome). */
static enum step
server_error(const struct bore_msg *m, int kept)
{
	char text[BORE_MAX_FRAME + 1];

	log_msg(LOG_ERROR, "server error: %s", printable(m->text, text, sizeof(text)));
	return (error_outcome(m->text, kept));
}

/* Answer the server's challenge. */
static enum step
client_handshake(struct conn *c)
{
	char tag[BORE_TAG_HEXLEN + 1];
	int64_t start = now_ms();
	struct bore_msg m;
	int r;

	r = read_first(c, &m);
	if (r == 1 && m.type == BORE_MSG_ERROR)
		return (server_error(&m, 0));
	if (r == 1 && m.type != BORE_MSG_CHALLENGE) {
		log_msg(LOG_ERROR, "expected authentication challenge, but no secret was required");
		return (STEP_REFUSED);
	}
	/* A close at once is a refusal; a late one, a server that waited for a Hello. */
	if (r == 0 && now_ms() - start < BORE_NETWORK_TIMEOUT_MS / 2)
		log_msg(LOG_ERROR, "server closed the connection before the authentication "
		    "challenge: refused, or at its limit of connections not yet authenticated "
		    "(--max-startups)");
	else if (r == 0 || errno == ETIMEDOUT)
		log_msg(LOG_ERROR, "timed out waiting for authentication challenge "
		    "(a server without a secret sends none)");
	else if (r == -1 && errno != ECANCELED)
		log_msg(LOG_ERROR, "connection lost before the authentication challenge: %s",
		    first_error(errno));
	if (r != 1)
		return (r == -1 && errno == ECANCELED ? STEP_STOPPED : STEP_LOST);
	bore_auth_tag(cli.key, m.uuid, tag);
	r = send_msg(c->fd, BORE_MSG_AUTHENTICATE, 0, tag);
	sodium_memzero(tag, sizeof(tag));
	if (r == -1) {
		log_msg(LOG_ERROR, "could not send authentication: %s", strerror(errno));
		return (STEP_LOST);
	}
	return (STEP_OK);
}

/* ---- Client: proxies, and the connections to the server ----------- */

/* Log that the proxy's reply broke off: at EOF (r 0), or on errno; lost, or stopped. */
static enum step
proxy_lost(int r)
{
	char where[300];

	/* A stop (ECANCELED) ends the step without a word. */
	if (r == -1 && errno == ECANCELED)
		return (STEP_STOPPED);
	host_port(cli.proxy_host, cli.proxy_port, where, sizeof(where));
	if (r == 0)
		log_msg(LOG_ERROR, "proxy %s closed the connection", where);
	else
		log_msg(LOG_ERROR, "proxy %s: %s", where, strerror(errno));
	return (STEP_LOST);
}

/* Ask the HTTP proxy on fd to CONNECT to the server, by name. */
static enum step
http_connect(int fd, int64_t deadline)
{
	char req[2048], head[HTTP_HEADER_MAX + 1], target[300], where[300], status[100];
	int len, r, code = 100, i;

	host_port(cli.to, cli.control_port, target, sizeof(target));
	host_port(cli.proxy_host, cli.proxy_port, where, sizeof(where));
	len = snprintf(req, sizeof(req), "CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s%s%s\r\n",
	    target, target, cli.proxy_basic[0] ? "Proxy-Authorization: Basic " : "",
	    cli.proxy_basic, cli.proxy_basic[0] ? "\r\n" : "");
	r = write_all(fd, req, (size_t)len, deadline);
	sodium_memzero(req, sizeof(req));
	/* Interim replies (1xx) come before the final one: a few are skipped. */
	for (i = 0; code / 100 == 1 && i < 4; i++) {
		if (r == -1 || (r = http_header(fd, head, deadline)) == 0 ||
		    (r == -1 && errno != EMSGSIZE))
			return (proxy_lost(r));
		if (r == -1) {
			log_msg(LOG_ERROR, "proxy %s sent a reply header over %d bytes", where,
			    HTTP_HEADER_MAX);
			return (STEP_PROXY_REFUSED);
		}
		/* HTTP/1.x NNN reason */
		if (strncmp(head, "HTTP/1.", 7) != 0 || head[8] != ' ' ||
		    strspn(head + 9, "0123456789") != 3 || (code = atoi(head + 9)) < 100 ||
		    code > 599 || memchr(" \r\n", head[12], 3) == NULL) {
			log_msg(LOG_ERROR, "proxy %s sent a malformed reply", where);
			return (STEP_PROXY_REFUSED);
		}
	}
	head[strcspn(head, "\r\n")] = '\0';
	printable(head + 9, status, sizeof(status));
	if (code / 100 == 2)
		return (STEP_OK);
	/* 407, or 401 as tinyproxy answers wrong credentials. */
	if (code == 407 || code == 401)
		log_msg(LOG_ERROR, "proxy %s: %s: %s", where, cli.proxy_basic[0] ?
		    "authentication failed" : "authentication required", status);
	else
		log_msg(LOG_ERROR, "proxy %s %s the connection to %s: %s", where,
		    code / 100 == 4 ? "refused" : "could not make", target, status);
	/* The proxy's own refusals stand; its failures to reach the server may pass. */
	return (code / 100 == 4 ? STEP_PROXY_REFUSED : STEP_LOST);
}

/* SOCKS5 replies by code, and whether that code is a refusal no retry mends. */
static const char *const socks5_replies[] = {
	"succeeded", "general SOCKS server failure", "connection not allowed by ruleset",
	"network unreachable", "host unreachable", "connection refused", "TTL expired",
	"command not supported", "address type not supported",
};
#define SOCKS_FINAL(code) ((code) == 2 || (code) >= 7)

/* Greet the SOCKS5 proxy on fd (proxy named `where`), and log in if it asks (RFC 1929). */
static enum step
socks5_greet(int fd, const char *where, int64_t deadline)
{
	unsigned char b[3 + 2 * 255];
	size_t ul = strlen(cli.proxy_user), pl = strlen(cli.proxy_pass);
	int r = -1;

	/* Methods offered: none, and username/password when we have them. */
	memcpy(b, "\5\2\0\2", 4);
	b[1] = ul > 0 ? 2 : 1;
	if (write_all(fd, b, 2 + b[1], deadline) == -1 || (r = read_full(fd, b, 2, deadline)) != 1)
		return (proxy_lost(r));
	if (b[0] != 5 || (b[1] != 0 && b[1] != 0xff && !(b[1] == 2 && ul > 0))) {
		log_msg(LOG_ERROR, "proxy %s sent a malformed reply", where);
		return (STEP_PROXY_REFUSED);
	}
	if (b[1] == 0xff) {
		log_msg(LOG_ERROR, "proxy %s: %s", where, ul > 0 ?
		    "no acceptable authentication method" : "authentication required");
		return (STEP_PROXY_REFUSED);
	}
	if (b[1] == 0)
		return (STEP_OK);
	b[0] = 1;
	b[1] = (unsigned char)ul;
	memcpy(b + 2, cli.proxy_user, ul);
	b[2 + ul] = (unsigned char)pl;
	memcpy(b + 3 + ul, cli.proxy_pass, pl);
	r = write_all(fd, b, 3 + ul + pl, deadline);
	sodium_memzero(b, sizeof(b));
	if (r == -1 || (r = read_full(fd, b, 2, deadline)) != 1)
		return (proxy_lost(r));
	if (b[1] != 0) {
		log_msg(LOG_ERROR, "proxy %s: authentication failed", where);
		return (STEP_PROXY_REFUSED);
	}
	return (STEP_OK);
}

/* Ask the SOCKS5 proxy on fd for the server: at dest, else by name (socks5h://). */
static enum step
socks5_connect(int fd, const struct sockaddr *dest, int64_t deadline)
{
	unsigned char b[4 + 1 + 255 + 2];
	char where[300], target[300];
	struct sockaddr_storage lit;
	socklen_t lit_len;
	const uint8_t *addr;
	in_port_t *port;
	enum step st;
	size_t n;
	int r = -1;

	host_port(cli.to, cli.control_port, target, sizeof(target));
	host_port(cli.proxy_host, cli.proxy_port, where, sizeof(where));
	if ((st = socks5_greet(fd, where, deadline)) != STEP_OK)
		return (st);
	/* CONNECT to an IPv4 or IPv6 address, or to a name the proxy resolves. */
	memcpy(b, "\5\1\0", 3);
	if (dest == NULL && parse_ip(cli.to, cli.control_port, &lit, &lit_len) == 0)
		dest = (const struct sockaddr *)&lit;
	if (dest == NULL) {
		b[3] = 3;
		b[4] = (unsigned char)strlen(cli.to);
		memcpy(b + 5, cli.to, b[4]);
		n = 5 + b[4];
	} else {
		n = sockaddr_ip(dest, &addr, &port);
		b[3] = n == 4 ? 1 : 4;
		memcpy(b + 4, addr, n);
		n += 4;
	}
	b[n++] = (unsigned char)(cli.control_port >> 8);
	b[n++] = (unsigned char)cli.control_port;
	if (write_all(fd, b, n, deadline) == -1 || (r = read_full(fd, b, 4, deadline)) != 1)
		return (proxy_lost(r));
	if (b[0] != 5 || b[1] >= sizeof(socks5_replies) / sizeof(socks5_replies[0]) ||
	    (b[1] == 0 && b[3] != 1 && b[3] != 3 && b[3] != 4)) {
		log_msg(LOG_ERROR, "proxy %s sent a malformed reply", where);
		return (STEP_PROXY_REFUSED);
	}
	if (b[1] != 0) {
		log_msg(LOG_ERROR, "proxy %s %s the connection to %s: %s", where,
		    SOCKS_FINAL(b[1]) ? "refused" : "could not make", target, socks5_replies[b[1]]);
		/* Not allowed, or not understood: the proxy's answer stands. */
		return (SOCKS_FINAL(b[1]) ? STEP_PROXY_REFUSED : STEP_LOST);
	}
	/* The bound address and port, of no use to us; a name's comes after its length. */
	n = b[3] == 1 ? 4 + 2 : b[3] == 4 ? 16 + 2 : 1;
	if ((r = read_full(fd, b, n, deadline)) != 1 ||
	    (n == 1 && (r = read_full(fd, b, (size_t)b[0] + 2, deadline)) != 1))
		return (proxy_lost(r));
	return (STEP_OK);
}

/* Connect and authenticate to the server at ai, or via the proxy at ai; *out is the caller's. */
static enum step
open_control(const struct addrinfo *ai, const struct sockaddr *dest, struct conn **out)
{
	char where[300];
	struct conn *c;
	enum step st;
	int fd, short_here;

	/* Cut short by a stop (ECANCELED), a step ends without a word. */
	if ((fd = connect_any(ai)) == -1) {
		short_here = short_of_resources(errno);
		if (errno != ECANCELED)
			log_msg(short_here ? LOG_WARN : LOG_ERROR, "could not connect to %s%s: %s",
			    cli.proxy ? "proxy " : "", host_port(cli.proxy ? cli.proxy_host :
			    cli.to, cli.proxy ? cli.proxy_port : cli.control_port, where,
			    sizeof(where)), strerror(errno));
		return (short_here ? STEP_SHORT : STEP_LOST);
	}
	st = cli.proxy == PROXY_NONE ? STEP_OK : cli.proxy == PROXY_HTTP ?
	    http_connect(fd, now_ms() + BORE_NETWORK_TIMEOUT_MS) :
	    socks5_connect(fd, dest, now_ms() + BORE_NETWORK_TIMEOUT_MS);
	if (st != STEP_OK) {
		close_fd(fd);
		return (st);
	}
	if ((c = conn_new(fd, "server")) == NULL) {
		close_fd(fd);
		return (STEP_LOST);
	}
	/* c owns fd from here. */
	if (cli.has_secret && (st = client_handshake(c)) != STEP_OK) {
		conn_free(c);
		return (st);
	}
	*out = c;
	return (STEP_OK);
}

/* ---- Client: data connections ------------------------------------- */

/* Where a session's data connections go: the hop its control connection reached, dest via proxy. */
struct route {
	struct sockaddr_storage hop;
	socklen_t hop_len;
	struct sockaddr_storage dest;
	socklen_t dest_len;  /* 0: ask by name */
};

/* A visitor to claim, one a pooled connection c carries, or (pooled) a token to join with. */
struct visitor_job {
	uint8_t id[BORE_UUID_LEN];
	struct local_tunnel *lt;
	struct route route;
	struct conn *c;
};

/* Open a data connection along r as open_control does, once one of OPENING_MAX places is free. */
static enum step
open_data(const struct route *r, struct conn **out)
{
	struct addrinfo hop = {
		.ai_family = r->hop.ss_family, .ai_socktype = SOCK_STREAM,
		.ai_addr = (struct sockaddr *)&r->hop, .ai_addrlen = r->hop_len,
	};
	enum step st;

	pthread_mutex_lock(&client.opening_lock);
	while (client.opening >= OPENING_MAX)
		pthread_cond_wait(&client.opening_done, &client.opening_lock);
	client.opening++;
	pthread_mutex_unlock(&client.opening_lock);
	st = open_control(&hop, r->dest_len ? (const struct sockaddr *)&r->dest : NULL, out);
	pthread_mutex_lock(&client.opening_lock);
	client.opening--;
	pthread_cond_signal(&client.opening_done);
	pthread_mutex_unlock(&client.opening_lock);
	return (st);
}

/* ---- Client: visitors --------------------------------------------- */

/* Sleep ms unless the client is stopped first (at once if it was); 1 if it was. */
static int
sleep_or_signal(int ms)
{
	struct pollfd p = { .fd = pipes.stop[0], .events = POLLIN };
	int64_t deadline = now_ms() + ms;

	do {
		if (poll(&p, 1, ms_until(deadline)) > 0)
			return (1);
	} while (now_ms() < deadline);
	return (0);
}

/* Claim job's visitor on a new data connection, or its pooled job->c (used up), and relay it
 * and the local service; -1 if not. */
static int
serve_visitor(const struct visitor_job *job, struct relay_info *info, const char *ids)
{
	struct conn *c = job->c;
	char where[300];
	int lfd;

	if (c == NULL && open_data(&job->route, &c) != STEP_OK)
		return (-1);
	if (job->c == NULL && send_msg(c->fd, BORE_MSG_ACCEPT, 0, job->id) == -1) {
		log_msg(LOG_WARN, "could not send accept: %s", strerror(errno));
		goto err1;
	}
	if ((lfd = connect_any(job->lt->local_ai)) == -1) {
		log_msg(LOG_WARN, "could not connect to %s: %s", host_port(cli.local_host,
		    job->lt->local_port, where, sizeof(where)), strerror(errno));
		/* The server closes the visitor at once when it sees the reset. */
		set_reset_on_close(c->fd);
		goto err1;
	}
	if (relay_after_frame(c, lfd, info) == -1) {
		log_msg(LOG_DEBUG, "connection %s aborted: %s", ids, strerror(errno));
		set_reset_on_close(c->fd);
		set_reset_on_close(lfd);
	} else {
		log_msg(LOG_DEBUG, "connection %s exited", ids);
	}
	close_fd(lfd);
	conn_free(c);
	return (0);

err1:
	conn_free(c);
	return (-1);
}

/* Thread for one visitor: claim it from the server, connect to the local service, relay. */
static void *
proxy_visitor(void *arg)
{
	struct visitor_job *job = arg;
	struct relay_info info = { .dump_id = 0 };
	char ids[BORE_UUID_STRLEN + 1];
	int64_t start = now_ms();

	bore_uuid_format(job->id, ids);
	/* Its errors and warnings name it and are rate-limited: a failing proxy cannot flood. */
	log_visitor = ids;
	pthread_mutex_lock(&job->lt->lock);
	job->lt->counts.now++;
	job->lt->counts.visitors++;
	ring_put(&job->lt->live, &info.link);
	pthread_mutex_unlock(&job->lt->lock);
	if (cli.dump)
		info.dump_id = atomic_fetch_add(&client.seen, 1) + 1;
	if (serve_visitor(job, &info, ids) == 0)
		log_closed(ids, info.dump_id, info.bytes[0], info.bytes[1], start);
	/* The worker thread lives on, ids does not. */
	log_visitor = NULL;
	pthread_mutex_lock(&job->lt->lock);
	job->lt->counts.now--;
	job->lt->counts.in += info.bytes[0];
	job->lt->counts.out += info.bytes[1];
	ring_take(&info.link);
	pthread_mutex_unlock(&job->lt->lock);
	free(job);
	atomic_fetch_sub(&client.visitors, 1);
	return (NULL);
}

/* Log the visitor the server announced, and count it unless cli.max_conns are relayed; 0 if not. */
static int
visitor_admitted(const uint8_t id[BORE_UUID_LEN])
{
	char ids[BORE_UUID_STRLEN + 1];

	bore_uuid_format(id, ids);
	log_msg(LOG_INFO, "new connection %s", ids);
	/* Draining for a stop: ignored like one over the limit below. */
	if (atomic_load(&client.draining)) {
		log_msg(LOG_DEBUG, "visitor ignored: shutting down");
		return (0);
	}
	/* Ignored, the visitor waits out the server's pending timeout and is closed. */
	if (atomic_fetch_add(&client.visitors, 1) >= cli.max_conns) {
		log_limited(&logs.peer_lines[PL_VISITOR_IGNORED], LOG_WARN,
		    "visitor ignored: too many connections (limit %d)", cli.max_conns);
		atomic_fetch_sub(&client.visitors, 1);
		return (0);
	}
	return (1);
}

/* Thread for a pooled connection: join with job's token, wait for a visitor, serve it; one
 * that fails holds its place a while, so a server cannot make the client re-dial at will. */
static void *
pool_member(void *arg)
{
	struct visitor_job *job = arg;
	int r = -1, carried;
	struct bore_msg m;

	/* Its failures are rate-limited with the visitors': a failing proxy cannot flood. */
	log_visitor = "for the pool";
	if (open_data(&job->route, &job->c) == STEP_OK &&
	    send_msg(job->c->fd, BORE_MSG_JOIN, 0, job->id) == 0) {
		set_liveness(job->c->fd);
		/* Connection(id) and the visitor's first bytes follow each other closely. */
		do
			ack_at_once(job->c->fd);
		while ((r = read_frame(job->c, &m, now_ms() + cli.heartbeat_timeout_ms)) == 1 &&
		    m.type == BORE_MSG_HEARTBEAT);
	}
	carried = r == 1 && m.type == BORE_MSG_CONNECTION;
	/* Failed, and not at a stop: it keeps its place a while. */
	if (!carried && !(r == -1 && errno == ECANCELED))
		(void)sleep_or_signal(POOL_HOLDOFF_MS);
	atomic_fetch_sub(&job->lt->members, 1);
	log_visitor = NULL;
	if (carried && visitor_admitted(memcpy(job->id, m.uuid, BORE_UUID_LEN)))
		return (proxy_visitor(job));
	conn_free(job->c);
	free(job);
	return (NULL);
}

/* Start a thread for the visitor the server announced, or (pooled) for a Spare's token. */
static void
start_visitor(struct local_tunnel *lt, const uint8_t id[BORE_UUID_LEN],
    const struct route *route, int pooled)
{
	struct visitor_job *job;

	if (!pooled && !visitor_admitted(id))
		return;
	/* Room for Spares while members of a session before, or yet to read a visitor, count. */
	if (pooled && atomic_fetch_add(&lt->members, 1) >= cli.pool + POOL_MAX)
		goto err0;
	if ((job = calloc(1, sizeof(*job))) == NULL) {
		log_msg(LOG_WARN, "out of memory");
		goto err0;
	}
	memcpy(job->id, id, BORE_UUID_LEN);
	job->lt = lt;
	job->route = *route;
	/* The thread owns job from here. */
	if (spawn(pooled ? pool_member : proxy_visitor, job) == 0)
		return;
	free(job);
err0:
	atomic_fetch_sub(pooled ? &lt->members : &client.visitors, 1);
}

/* ---- Client: a session, and reconnects ---------------------------- */

/* Ask for port want (kept: as for error_outcome); the port of the server's Hello goes to *got. */
static enum step
send_hello(struct conn *c, uint16_t want, int kept, uint16_t *got)
{
	int r, pool = cli.pool && !atomic_load(&client.no_pools);
	struct bore_msg m = { .type = BORE_MSG_POOL, .port = (uint16_t)cli.pool };
	char frames[64];
	size_t n = 0, k;

	/* Pool goes first, in one write with the Hello: a refused secret still reads as one. */
	if (pool) {
		n = (size_t)bore_format_msg(&m, frames, sizeof(frames));
		frames[n++] = '\0';
	}
	m = (struct bore_msg){ .type = BORE_MSG_HELLO, .port = want };
	k = (size_t)bore_format_msg(&m, frames + n, sizeof(frames) - n - 1);
	frames[n + k] = '\0';
	if (pool)
		log_msg(LOG_TRACE, "fd %d: sending %s", c->fd, frames);
	log_msg(LOG_TRACE, "fd %d: sending %s", c->fd, frames + n);
	if (write_all(c->fd, frames, n + k + 1, now_ms() + BORE_NETWORK_TIMEOUT_MS) == -1) {
		log_msg(LOG_ERROR, "could not send hello: %s", strerror(errno));
		return (STEP_LOST);
	}
	/* One that does not (the Rust bore, say) closes, with or without a reset. */
	if ((r = read_first(c, &m)) != 1 && pool && (r == 0 || errno == ECONNRESET)) {
		atomic_store(&client.no_pools, 1);
		log_msg(LOG_INFO, "server has no visitor pools: each visitor takes a round trip "
		    "more");
		return (STEP_NO_POOL);
	}
	if (r != 1) {
		if (r == 0 || errno != ECANCELED)
			log_msg(LOG_ERROR, "%s", r == 0 ? "unexpected EOF from server" :
			    first_error(errno));
		return (r == 0 || errno != ECANCELED ? STEP_LOST : STEP_STOPPED);
	}
	switch (m.type) {
	case BORE_MSG_HELLO:
		*got = m.port;
		return (STEP_OK);
	case BORE_MSG_ERROR:
		return (server_error(&m, kept));
	case BORE_MSG_CHALLENGE:
		log_msg(LOG_ERROR, "server requires authentication, but no client secret was "
		    "provided");
		return (STEP_REFUSED);
	default:
		log_msg(LOG_ERROR, "unexpected initial non-hello message");
		return (STEP_REFUSED);
	}
}

/* Read frames from the server and start visitors of tunnel lt until it ends. */
static enum step
serve_session(struct local_tunnel *lt, struct conn *c, struct route *route)
{
	struct bore_msg m;
	int r;

	/* Visitors are claimed at the address this connection reached, not at a new lookup. */
	route->hop_len = sizeof(route->hop);
	if (getpeername(c->fd, (struct sockaddr *)&route->hop, &route->hop_len) == -1) {
		log_msg(LOG_ERROR, "connection to server lost: %s", strerror(errno));
		return (STEP_LOST);
	}
	for (;;) {
		r = read_frame(c, &m, now_ms() + cli.heartbeat_timeout_ms);
		if (r == -1 && errno == ECANCELED)
			return (STEP_STOPPED);
		if (r == 0)
			log_msg(LOG_ERROR, "server closed the connection");
		else if (r == -1 && errno == ETIMEDOUT)
			log_msg(LOG_ERROR, "server unreachable: no heartbeat for %.1f s",
			    cli.heartbeat_timeout_ms / 1000.0);
		else if (r == -1)
			log_msg(LOG_ERROR, "connection to server lost: %s", frame_error(errno));
		if (r != 1)
			return (STEP_LOST);
		if (m.type == BORE_MSG_CONNECTION || (m.type == BORE_MSG_SPARE && cli.pool))
			start_visitor(lt, m.uuid, route, m.type == BORE_MSG_SPARE);
		else if (m.type == BORE_MSG_ERROR)
			return (server_error(&m, 0));
		else if (m.type != BORE_MSG_HEARTBEAT)
			log_msg(LOG_WARN, "unexpected %s message from server", msg_names[m.type]);
	}
}

/* A session of lt: resolve anew, connect, ask for *port (set to the port granted), serve. */
static enum step
run_session(struct local_tunnel *lt, uint16_t *port, int *opened)
{
	struct addrinfo *ai, *dests = NULL, *d;
	struct route route = { .dest_len = 0 };
	enum step o = STEP_LOST;
	char where[300], local[300];
	struct conn *c;
	uint16_t got = 0;

	*opened = 0;
	/* socks5://: we resolve the server's name, and ask the proxy for each address in turn. */
	if (cli.proxy == PROXY_SOCKS5 && (dests = resolve(cli.to, cli.control_port)) == NULL)
		return (STEP_LOST);
	ai = cli.proxy ? resolve(cli.proxy_host, cli.proxy_port) :
	    resolve(cli.to, cli.control_port);
	for (d = dests; ai != NULL; d = d->ai_next) {
		o = open_control(ai, d ? d->ai_addr : NULL, &c);
		if (o != STEP_LOST || d == NULL || d->ai_next == NULL)
			break;
	}
	if (ai != NULL && o == STEP_OK && d != NULL) {
		memcpy(&route.dest, d->ai_addr, d->ai_addrlen);
		route.dest_len = d->ai_addrlen;
	}
	if (ai != NULL)
		freeaddrinfo(ai);
	if (dests != NULL)
		freeaddrinfo(dests);
	if (o != STEP_OK)
		return (o);
	/* Kept: a port other than the one asked for, from an earlier tunnel (any port never is). */
	if ((o = send_hello(c, *port, *port != 0 && *port != lt->want, &got)) != STEP_OK)
		goto done;
	if (*port != 0 && got != *port)
		log_msg(LOG_WARN, "public port changed from %u to %u", *port, got);
	*port = got;
	*opened = 1;
	log_msg(LOG_INFO, "connected to server");
	log_msg(LOG_INFO, "listening at %s", host_port(cli.to, got, where, sizeof(where)));
	/* For scripts: the public address and the local one it serves, one line on stdout. */
	host_port(cli.local_host, lt->local_port, local, sizeof(local));
	dprintf(1, "%s %s\n", where, local);
	/* From here on a lost tunnel is re-dialled, and what goes wrong is a warning. */
	log_retrying = cli.reconnect;
	pthread_mutex_lock(&lt->lock);
	lt->port = got;
	lt->since_ms = now_ms();
	lt->since = time(NULL);
	pthread_mutex_unlock(&lt->lock);
	o = serve_session(lt, c, &route);
	pthread_mutex_lock(&lt->lock);
	lt->port = 0;
	pthread_mutex_unlock(&lt->lock);
done:
	conn_free(c);
	return (o);
}

/* Exit status for a refusal no retry can change: EX_CONFIG, so a supervisor does not restart. */
#define EXIT_REFUSED 78

/* Open lt, re-dialled when lost for the same port; 0 when stopped, EXIT_REFUSED, or 1. */
static int
run_client(struct local_tunnel *lt)
{
	uint16_t port = lt->want;
	int attempt = 0, ever_opened = 0, opened, delay;
	enum step e;

	for (;;) {
		/* Asked again at once without a Pool: no retry, no back-off. */
		while ((e = run_session(lt, &port, &opened)) == STEP_NO_POOL)
			continue;
		/* A step the stop cut short may end as lost: no retry is worth announcing. */
		if (e == STEP_STOPPED || sleep_or_signal(0))
			return (0);
		if (opened) {
			ever_opened = 1;
			attempt = 0;
		}
		if (e == STEP_PROXY_REFUSED)
			e = ever_opened ? STEP_LOST : STEP_REFUSED;
		if (e == STEP_PORT_GONE) {
			log_msg(LOG_WARN, "port %u is not to be had; asking for any port", port);
			port = 0;
		}
		if (e == STEP_REFUSED) {
			if (log_retrying) {
				log_retrying = 0;
				log_msg(LOG_ERROR, "giving up: retrying cannot mend that");
			}
			return (EXIT_REFUSED);
		}
		/* The first connection's errors are shown and final: they are usually settings. */
		if (e != STEP_SHORT && (!ever_opened || !cli.reconnect))
			return (1);
		delay = back_off_ms(RECONNECT_MIN_MS, attempt, RECONNECT_MAX_MS);
		/* Jitter: anywhere in the upper half, so many clients do not re-dial in step. */
		delay = delay / 2 + (int)randombytes_uniform((uint32_t)delay / 2 + 1);
		attempt++;
		log_msg(LOG_INFO, "reconnecting in %.1f s (attempt %d)", delay / 1000.0, attempt);
		if (sleep_or_signal(delay))
			return (0);
	}
}

/* Thread of one tunnel: run it, keep its status, and wake the main thread. */
static void *
tunnel_main(void *arg)
{
	struct local_tunnel *lt = arg;
	char none = 0;

	lt->status = run_client(lt);
	atomic_fetch_sub(&client.threads, 1);
	/* Byte 0 is no signal: it only makes the main thread count again. */
	(void)!write(pipes.signal[1], &none, 1);
	return (NULL);
}

/* ---- Client: status lines and signals ----------------------------- */

/* SIGUSR1: a line per tunnel and one of totals, live relays' bytes included, at any BORE_LOG. */
static void
log_client_status(void)
{
	char public[300], local[300], what[620], text[128];
	struct counts c, all = { 0 };
	struct local_tunnel *lt;
	int64_t since_ms;
	time_t since_wall;
	uint16_t port;
	int i, up = 0;

	for (i = 0; i < client.ntunnels; i++) {
		lt = &client.tunnels[i];
		pthread_mutex_lock(&lt->lock);
		port = lt->port;
		since_ms = lt->since_ms;
		since_wall = lt->since;
		c = lt->counts;
		counts_add_live(&c, &lt->live, 0);
		pthread_mutex_unlock(&lt->lock);
		host_port(cli.local_host, lt->local_port, local, sizeof(local));
		if (port != 0) {
			snprintf(what, sizeof(what), "%s for %s", host_port(cli.to, port, public,
			    sizeof(public)), local);
			log_tunnel_status(what, since_wall, since_ms, &c);
		} else
			log_msg(LOG_ALWAYS, "status: tunnel for %s down, %s", local,
			    counts_str(&c, text, sizeof(text)));
		up += port != 0;
		counts_add(&all, &c);
	}
	log_msg(LOG_ALWAYS, "status: %d tunnel%s, %d up, %s", client.ntunnels,
	    client.ntunnels == 1 ? "" : "s", up, counts_str(&all, text, sizeof(text)));
}

/*
 * Run each tunnel in a thread and handle signals; a stop lets the visitors
 * relayed finish within --grace (no new ones are taken) and returns 0, else
 * the tunnels' highest status once none goes on.
 */
static int
run_tunnels(void)
{
	struct pollfd p = { .fd = pipes.signal[0], .events = POLLIN };
	int i, open, status = 0, stopped = 0;

	atomic_store(&client.threads, client.ntunnels);
	for (i = 0; i < client.ntunnels; i++)
		if ((errno = pthread_create(&client.tunnels[i].thread, NULL, tunnel_main,
		    &client.tunnels[i])) != 0)
			err(1, "could not start a thread");
	while (!stopped && atomic_load(&client.threads) > 0) {
		if (poll(&p, 1, -1) == -1 && errno != EINTR)
			err(1, "poll");
		stopped = take_signals(log_client_status, NULL);
	}
	if (stopped && (open = atomic_load(&client.visitors)) > 0) {
		atomic_store(&client.draining, 1);
		log_msg(LOG_INFO, "shutting down: %d connection%s; waiting up to %.1f s", open,
		    open == 1 ? "" : "s", cli.grace_ms / 1000.0);
		wait_drained(&client.visitors, &client.visitors, cli.grace_ms, log_client_status,
		    NULL);
	} else if (stopped) {
		log_msg(LOG_INFO, "shutting down");
	}
	/* Every tunnel thread polls stop_pipe: its POLLHUP wakes them all. */
	if (stopped)
		close(pipes.stop[1]);
	for (i = 0; i < client.ntunnels; i++) {
		pthread_join(client.tunnels[i].thread, NULL);
		if (client.tunnels[i].status > status)
			status = client.tunnels[i].status;
	}
	return (stopped ? 0 : status);
}

/* ==================================================================== */
/* Main: command line, environment, signals                             */
/* ==================================================================== */

/* ---- Main: options and help --------------------------------------- */

/* One option of a subcommand: long name, short letter (0: none), environment variable. */
struct optdef {
	const char *name;
	char letter;
	const char *env;
	enum { OPT_VALUE, OPT_FLAG, OPT_LIST } kind;  /* a flag takes no value; a list repeats */
};

/* Options of `bore local`, by index into its values. */
enum {
	L_LOCAL_HOST, L_TO, L_PORT, L_SECRET, L_SECRET_FILE, L_CONTROL_PORT, L_NO_RECONNECT,
	L_HEARTBEAT_TIMEOUT, L_DUMP, L_MAX_CONNS, L_PROXY, L_GRACE, L_POOL, L_COUNT
};
static const struct optdef local_opts[L_COUNT] = {
	[L_LOCAL_HOST] = { "local-host", 'l', NULL, OPT_VALUE },
	[L_TO] = { "to", 't', "BORE_SERVER", OPT_VALUE },
	[L_PORT] = { "port", 'p', NULL, OPT_VALUE },
	[L_SECRET] = { "secret", 's', "BORE_SECRET", OPT_VALUE },
	[L_SECRET_FILE] = { "secret-file", 0, NULL, OPT_VALUE },
	[L_CONTROL_PORT] = { "control-port", 0, "BORE_CONTROL_PORT", OPT_VALUE },
	[L_NO_RECONNECT] = { "no-reconnect", 0, NULL, OPT_FLAG },
	[L_HEARTBEAT_TIMEOUT] = { "heartbeat-timeout", 0, "BORE_HEARTBEAT_TIMEOUT", OPT_VALUE },
	[L_DUMP] = { "dump", 0, NULL, OPT_FLAG },
	[L_MAX_CONNS] = { "max-conns", 0, "BORE_MAX_CONNS", OPT_VALUE },
	[L_PROXY] = { "proxy", 0, "BORE_PROXY", OPT_VALUE },
	[L_GRACE] = { "grace", 0, "BORE_GRACE", OPT_VALUE },
	[L_POOL] = { "pool", 0, "BORE_POOL", OPT_VALUE },
};

/* Options of `bore server`, by index into its values. */
enum {
	S_MIN_PORT, S_MAX_PORT, S_SECRET, S_SECRET_FILE, S_BIND_ADDR, S_BIND_TUNNELS,
	S_CONTROL_PORT, S_MAX_SESSIONS, S_MAX_CONNS, S_MAX_STARTUPS, S_ALLOW, S_ALLOW_CONTROL,
	S_GRACE, S_PROXY_PROTOCOL, S_METRICS, S_VISITOR_RATE, S_COUNT
};
static const struct optdef server_opts[S_COUNT] = {
	[S_MIN_PORT] = { "min-port", 0, "BORE_MIN_PORT", OPT_VALUE },
	[S_MAX_PORT] = { "max-port", 0, "BORE_MAX_PORT", OPT_VALUE },
	[S_SECRET] = { "secret", 's', "BORE_SECRET", OPT_VALUE },
	[S_SECRET_FILE] = { "secret-file", 0, NULL, OPT_VALUE },
	[S_BIND_ADDR] = { "bind-addr", 0, NULL, OPT_VALUE },
	[S_BIND_TUNNELS] = { "bind-tunnels", 0, NULL, OPT_VALUE },
	[S_CONTROL_PORT] = { "control-port", 0, "BORE_CONTROL_PORT", OPT_VALUE },
	[S_MAX_SESSIONS] = { "max-sessions", 0, "BORE_MAX_SESSIONS", OPT_VALUE },
	[S_MAX_CONNS] = { "max-conns", 0, "BORE_MAX_CONNS", OPT_VALUE },
	[S_MAX_STARTUPS] = { "max-startups", 0, "BORE_MAX_STARTUPS", OPT_VALUE },
	[S_ALLOW] = { "allow", 0, NULL, OPT_LIST },
	[S_ALLOW_CONTROL] = { "allow-control", 0, NULL, OPT_LIST },
	[S_GRACE] = { "grace", 0, "BORE_GRACE", OPT_VALUE },
	[S_PROXY_PROTOCOL] = { "proxy-protocol", 0, NULL, OPT_VALUE },
	[S_METRICS] = { "metrics", 0, NULL, OPT_VALUE },
	[S_VISITOR_RATE] = { "visitor-rate", 0, "BORE_VISITOR_RATE", OPT_VALUE },
};

/* The server's default limits: tunnels, visitors per tunnel, unauthenticated connections. */
#define DEFAULT_MAX_SESSIONS 256
#define DEFAULT_MAX_CONNS 2048

/* Pooled connections a client keeps: a browser opens six to a host at once. */
#define DEFAULT_POOL 6
#define DEFAULT_MAX_STARTUPS 128

/* Fds kept beyond the startups' for new tunnels' listeners and the like. */
#define FD_SPARE 8

/* Longest --heartbeat-timeout, in seconds: a server silent for an hour is gone. */
#define HEARTBEAT_TIMEOUT_MAX 3600

/* Largest value of a count option without a bound of its own. */
#define COUNT_MAX 1000000

/* What a subcommand's usage errors and --help print. */
struct command {
	const char *name, *usage, *help;
};

static const struct command main_cmd = {
	NULL,
	"Usage: bore <COMMAND>",
	"A modern, simple TCP tunnel in C, wire-compatible with bore\n\n"
	"Usage: bore <COMMAND>\n\n"
	"Commands:\n"
	"  local   Starts a local proxy to the remote server\n"
	"  server  Runs the remote proxy server\n"
	"  help    Print this message or the help of the given subcommand(s)\n\n"
	"Options:\n"
	"      --json     Output logs in machine-readable JSON format (instead of\n"
	"                 human-readable), before or after the subcommand\n"
	"  -h, --help     Print help\n"
	"  -V, --version  Print version\n\n"
	"Environment: BORE_LOG=off|error|warn|info|debug|trace sets the log level (default info;\n"
	"RUST_LOG's simple forms, e.g. debug or bore_cli=debug, when BORE_LOG is unset).\n",
};

static const struct command local_cmd = {
	"local",
	"Usage: bore local [OPTIONS] --to <TO> <LOCAL_PORT[:REMOTE_PORT]>...",
	"Starts a local proxy to the remote server\n\n"
	"Usage: bore local [OPTIONS] --to <TO> <LOCAL_PORT[:REMOTE_PORT]>...\n\n"
	"Arguments:\n"
	"  <LOCAL_PORT[:REMOTE_PORT]>...\n"
	"                The local port to expose [env: BORE_LOCAL_PORT]; several\n"
	"                open one tunnel each; REMOTE_PORT selects its public port\n\n"
	"Options:\n"
	"  -l, --local-host <HOST>   The local host to expose [default: localhost]\n"
	"  -t, --to <TO>             Address of the remote server to expose local ports to\n"
	"                            [env: BORE_SERVER]\n"
	"  -p, --port <PORT>         Optional port on the remote server to select, with one\n"
	"                            local port [default: 0]\n"
	"  -s, --secret <SECRET>     Optional secret for authentication [env: BORE_SECRET]\n"
	"      --secret-file <PATH>  Read the secret from a file's first non-blank line\n"
	"      --control-port <PORT>\n"
	"                            The server's control port [env: BORE_CONTROL_PORT]\n"
	"                            [default: 7835]\n"
	"      --no-reconnect        Exit when the tunnel is lost instead of re-dialling\n"
	"      --heartbeat-timeout <SECONDS>\n"
	"                            Silence from the server that means it is gone\n"
	"                            [env: BORE_HEARTBEAT_TIMEOUT] [default: 15]\n"
	"      --dump                Print every proxied connection's bytes (hex and ASCII)\n"
	"                            and a summary line when it closes\n"
	"      --max-conns <N>       Connections relayed at once; more are ignored\n"
	"                            [env: BORE_MAX_CONNS] [default: 2048]\n"
	"      --proxy <URL>         Reach the server through a proxy:\n"
	"                            http://[USER:PASS@]HOST:PORT (CONNECT),\n"
	"                            socks5://... (we resolve the server's name) or\n"
	"                            socks5h://... (the proxy does) [env: BORE_PROXY]\n"
	"      --grace <SECONDS>     At SIGTERM, how long open connections may finish\n"
	"                            [env: BORE_GRACE] [default: 5]\n"
	"      --pool <N>            Connections kept open for the next visitors, so each\n"
	"                            reaches the service in one round trip; a bore server\n"
	"                            in C only, 0: none [env: BORE_POOL] [default: 6]\n"
	"      --json                Output logs in machine-readable JSON format\n"
	"  -h, --help                Print help\n",
};

static const struct command server_cmd = {
	"server",
	"Usage: bore server [OPTIONS]",
	"Runs the remote proxy server\n\n"
	"Usage: bore server [OPTIONS]\n\n"
	"Options:\n"
	"      --min-port <MIN_PORT>    Minimum accepted TCP port number [env: BORE_MIN_PORT]\n"
	"                               [default: 1024]\n"
	"      --max-port <MAX_PORT>    Maximum accepted TCP port number [env: BORE_MAX_PORT]\n"
	"                               [default: 65535]\n"
	"  -s, --secret <SECRET>        Optional secret for authentication [env: BORE_SECRET]\n"
	"      --secret-file <PATH>     Read the secrets from a file, one per line; SIGHUP\n"
	"                               re-reads it; ports=LIST SECRET: those ports only\n"
	"      --bind-addr <BIND_ADDR>  IP address to bind to, clients must reach this\n"
	"                               [default: 0.0.0.0]\n"
	"      --bind-tunnels <IP>      IP address where tunnels will listen on\n"
	"                               [default: the --bind-addr value]\n"
	"      --control-port <PORT>    Port for control connections [env: BORE_CONTROL_PORT]\n"
	"                               [default: 7835]\n"
	"      --max-sessions <N>       Tunnels open at once [env: BORE_MAX_SESSIONS]\n"
	"                               [default: 256]\n"
	"      --max-conns <N>          Connections per tunnel, waiting or relayed\n"
	"                               [env: BORE_MAX_CONNS] [default: 2048]\n"
	"      --max-startups <N>       Control connections not yet authenticated; past\n"
	"                               it, the busiest source's oldest idle is dropped\n"
	"                               [env: BORE_MAX_STARTUPS] [default: 128]\n"
	"      --allow <CIDR>           Only visitors from these addresses (repeatable,\n"
	"                               or comma-separated; IPv4 or IPv6) [default: all]\n"
	"      --allow-control <CIDR>   Only clients from these addresses (likewise)\n"
	"      --grace <SECONDS>        At SIGTERM, how long open connections may finish\n"
	"                               [env: BORE_GRACE] [default: 5]\n"
	"      --proxy-protocol <VERSION>\n"
	"                               Send each visitor's address to the service in a\n"
	"                               PROXY protocol header [possible values: v1, v2]\n"
	"      --metrics <IP:PORT>      Serve Prometheus metrics at http://IP:PORT/metrics\n"
	"                               ([IPv6]:PORT); never on a public address\n"
	"      --visitor-rate <N>       New visitors a minute per source (IPv4 address, IPv6\n"
	"                               /64), up to 1000000 [env: BORE_VISITOR_RATE]\n"
	"      --json                   Output logs in machine-readable JSON format\n"
	"  -h, --help                   Print help\n",
};

/* ---- Main: parsing, with full range checks ------------------------ */

/* clap's words for a required argument that is absent. */
#define MISSING "the following required argument was not provided:"

/* Report bad usage of cmd on one line, with the usage and a hint, and exit 2. */
static void usage_error(const struct command *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
static void
usage_error(const struct command *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "bore: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n\n%s\n\nFor more information, try 'bore%s%s --help'.\n", cmd->usage,
	    cmd->name ? " " : "", cmd->name ? cmd->name : "");
	exit(2);
}

/* An environment variable's value, treating empty as unset. */
static const char *
env_value(const char *name)
{
	const char *v = name ? getenv(name) : NULL;

	return (v != NULL && v[0] != '\0' ? v : NULL);
}

/* Join a repeated option's values with commas, freeing the earlier join. */
static char *
join_list(char *have, const char *more)
{
	char *s;

	if (asprintf(&s, "%s%s%s", have ? have : "", have ? "," : "", more) == -1)
		errx(1, "out of memory");
	free(have);
	return (s);
}

/* The index in defs of the option argument a names, ndefs if none; *val its value if a holds it. */
static size_t
find_option(const struct optdef *defs, size_t ndefs, char *a, char **val)
{
	char *eq;
	size_t d, len;

	*val = NULL;
	for (d = 0; d < ndefs; d++) {
		if (a[1] == '-') {
			eq = strchr(a + 2, '=');
			len = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
			if (strlen(defs[d].name) == len && memcmp(defs[d].name, a + 2, len) == 0) {
				*val = eq ? eq + 1 : NULL;
				break;
			}
		} else if (defs[d].letter != 0 && defs[d].letter == a[1]) {
			/* -xVALUE, -x=VALUE or -x VALUE, as clap takes them. */
			*val = a[2] == '=' ? a + 3 : a[2] != '\0' ? a + 2 : NULL;
			break;
		}
	}
	return (d);
}

/*
 * Parse the arguments after a subcommand: options into vals (by index into
 * defs; they point into argv) and at most maxpos positional arguments into
 * pos.  Returns how many positionals there were.  Environment variables are
 * applied afterwards by apply_env, so callers can tell the two apart.
 */
static int
parse_options(const struct command *cmd, const struct optdef *defs, size_t ndefs,
    int argc, char **argv, char **vals, const char **pos, int maxpos)
{
	static char flag_given[] = "1";
	char *a, *val;
	int i, npos = 0, only_pos = 0;
	size_t d;

	for (i = 0; i < argc; i++) {
		a = argv[i];
		if (only_pos || a[0] != '-' || a[1] == '\0') {
			if (npos == maxpos)
				usage_error(cmd, "unexpected argument '%s'", a);
			pos[npos++] = a;
			continue;
		}
		if (strcmp(a, "--") == 0) {
			only_pos = 1;
			continue;
		}
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			fputs(cmd->help, stdout);
			exit(0);
		}
		if ((d = find_option(defs, ndefs, a, &val)) == ndefs)
			usage_error(cmd, "unexpected argument '%s'", a);
		if (vals[d] != NULL && defs[d].kind != OPT_LIST)
			usage_error(cmd, "the argument '--%s' cannot be used multiple times",
			    defs[d].name);
		if (defs[d].kind == OPT_FLAG) {
			if (val != NULL)
				usage_error(cmd, "unexpected value for '--%s'", defs[d].name);
			vals[d] = flag_given;
			continue;
		}
		if (val == NULL) {
			if (i + 1 >= argc)
				usage_error(cmd, "a value is required for '--%s'", defs[d].name);
			val = argv[++i];
		}
		/* A list's value is always a copy of ours, freed by the caller. */
		if (defs[d].kind == OPT_LIST)
			val = join_list(vals[d], val);
		vals[d] = val;
	}
	return (npos);
}

/* Fill options not given on the command line from their environment variables. */
static void
apply_env(const struct optdef *defs, size_t ndefs, char **vals)
{
	size_t d;

	for (d = 0; d < ndefs; d++)
		if (vals[d] == NULL)
			vals[d] = (char *)env_value(defs[d].env);
}

/* A count option's value (dflt when absent); bad usage if not a number in [min, max]. */
static int
count_option(const struct command *cmd, const char *val, const char *name, int min, int max,
    int dflt)
{
	char *end;
	long v;

	if (val == NULL)
		return (dflt);
	errno = 0;
	v = strtol(val, &end, 10);
	if (val[0] < '0' || val[0] > '9' || *end != '\0' || errno != 0 || v < min || v > max)
		usage_error(cmd, "invalid value '%s' for '%s': must be a number from %d to %d",
		    val, name, min, max);
	return ((int)v);
}

/* Parse a comma-separated --allow list into out; bad usage if any entry is not a block. */
static int
cidr_option(const struct command *cmd, const char *val, const char *name, struct cidr *out)
{
	char buf[4096], *item, *save = NULL;
	int n = 0;

	if (val == NULL)
		return (0);
	snprintf(buf, sizeof(buf), "%s", val);
	for (item = strtok_r(buf, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save)) {
		if (n == MAX_CIDRS)
			usage_error(cmd, "too many values for '%s' (at most %d)", name, MAX_CIDRS);
		if (parse_cidr(item, &out[n]) == -1)
			usage_error(cmd, "invalid value '%s' for '%s': not an IP address or "
			    "CIDR block", item, name);
		n++;
	}
	if (n == 0)
		usage_error(cmd, "invalid value '%s' for '%s'", val, name);
	return (n);
}

/*
 * The keys of --secret, --secret-file or BORE_SECRET, in that order of
 * precedence (NULL: no secret); an unreadable or empty file is exit 1.  A
 * secret given in argv is wiped from it, so it does not show in the process
 * list.
 */
static struct keyset *
load_secret(const struct command *cmd, char *arg, char *file)
{
	struct keyset *ks;

	if (arg != NULL && file != NULL)
		usage_error(cmd, "--secret and --secret-file cannot be used together");
	if (file != NULL) {
		if ((ks = read_secret_file(file, LOG_ERROR, "")) == NULL)
			exit(1);
		return (ks);
	}
	/* An empty secret is almost always an unset shell variable, not a choice. */
	if (arg != NULL && arg[0] == '\0')
		usage_error(cmd, "invalid value '' for '--secret': a secret cannot be empty");
	if ((ks = keyset_new(1, 1)) == NULL)
		errx(1, "out of memory");
	memcpy(ks->range[0], (int[3]){ 0, 0, 65535 }, sizeof(ks->range[0]));
	if (arg != NULL) {
		bore_auth_key(arg, ks->key[0]);
		memset(arg, 'x', strlen(arg));
	} else if (env_value("BORE_SECRET") != NULL) {
		bore_auth_key(env_value("BORE_SECRET"), ks->key[0]);
	} else {
		keyset_free(ks);
		ks = NULL;
	}
	return (ks);
}

/* A port option's value (dflt when absent); bad usage if not a number in [min, 65535]. */
static uint16_t
port_option(const struct command *cmd, const char *val, const char *name, unsigned min,
    uint16_t dflt)
{
	uint16_t port;

	if (val == NULL)
		return (dflt);
	if (bore_parse_port(val, min, &port) == -1)
		usage_error(cmd, "invalid value '%s' for '%s': must be a number from %u to 65535",
		    val, name, min);
	return (port);
}

/* Percent-decode a URL's user or password into out (cap bytes with its NUL); -1 if bad or long. */
static int
url_decode(const char *in, size_t len, char *out, size_t cap)
{
	size_t i, n = 0;

	for (i = 0; i < len; i++, n++) {
		if (n + 1 >= cap)
			return (-1);
		if (in[i] != '%') {
			out[n] = in[i];
		} else if (i + 2 < len && hex_digit(in[i + 1]) >= 0 && hex_digit(in[i + 2]) >= 0) {
			out[n] = (char)(hex_digit(in[i + 1]) * 16 + hex_digit(in[i + 2]));
			i += 2;
		} else {
			return (-1);
		}
	}
	out[n] = '\0';
	return (0);
}

/*
 * Parse --proxy's SCHEME://[USER[:PASS]@]HOST:PORT[/] into cli, and wipe its
 * USER:PASS where it was found, so they do not show in the process list.
 * Errors do not repeat the URL: it may hold a password.
 */
static void
proxy_option(char *url)
{
	static const char *const schemes[] = { "http://", "socks5://", "socks5h://" };
	char *rest, *at, *colon, *end, userpass[512];
	size_t k;
	int r;

	for (k = 0; k < 3 && strncmp(url, schemes[k], strlen(schemes[k])) != 0; k++)
		;
	if (k == 3)
		usage_error(&local_cmd, "invalid value for '--proxy': the URL must start with "
		    "http://, socks5:// or socks5h://");
	cli.proxy = (enum proxy_kind)(k + 1);
	rest = url + strlen(schemes[k]);
	end = rest + strlen(rest);
	/* A trailing slash is dropped, in place: the rest is searched as a string. */
	if (end > rest && end[-1] == '/')
		*--end = '\0';
	if ((at = strrchr(rest, '@')) != NULL) {
		colon = memchr(rest, ':', (size_t)(at - rest));
		if (url_decode(rest, (size_t)((colon ? colon : at) - rest), cli.proxy_user,
		    sizeof(cli.proxy_user)) == -1 || (colon != NULL && url_decode(colon + 1,
		    (size_t)(at - colon - 1), cli.proxy_pass, sizeof(cli.proxy_pass)) == -1) ||
		    cli.proxy_user[0] == '\0')
			usage_error(&local_cmd, "invalid value for '--proxy': bad user or "
			    "password");
		memset(rest, 'x', (size_t)(at - rest));
		rest = at + 1;
	}
	/* HOST:PORT, HOST a name, an IPv4 address or an [IPv6] one. */
	r = host_port_split(rest, cli.proxy_host, sizeof(cli.proxy_host), &cli.proxy_port);
	if (r == -1)
		usage_error(&local_cmd, "invalid value for '--proxy': expected "
		    "SCHEME://[USER:PASS@]HOST:PORT");
	if (r == -2)
		usage_error(&local_cmd, "invalid value for '--proxy': the port must be a number "
		    "from 1 to 65535");
	if (cli.proxy == PROXY_HTTP && cli.proxy_user[0] != '\0') {
		snprintf(userpass, sizeof(userpass), "%s:%s", cli.proxy_user, cli.proxy_pass);
		sodium_bin2base64(cli.proxy_basic, sizeof(cli.proxy_basic),
		    (unsigned char *)userpass, strlen(userpass), sodium_base64_VARIANT_ORIGINAL);
		sodium_memzero(userpass, sizeof(userpass));
	}
}

/* ---- Main: the two subcommands ------------------------------------ */

/* Parse LOCAL_PORT or LOCAL_PORT:REMOTE_PORT into lt; 1 if a remote port was given. */
static int
tunnel_option(const char *spec, struct local_tunnel *lt)
{
	char local[16];
	const char *colon = strchr(spec, ':');

	if (colon == NULL) {
		lt->local_port = port_option(&local_cmd, spec, "<LOCAL_PORT>", 1, 0);
		return (0);
	}
	snprintf(local, sizeof(local), "%.*s", (int)(colon - spec < 15 ? colon - spec : 15), spec);
	lt->local_port = port_option(&local_cmd, local, "<LOCAL_PORT>", 1, 0);
	lt->want = port_option(&local_cmd, colon + 1, "<REMOTE_PORT>", 0, 0);
	return (1);
}

/* --to, checked; and --proxy, whose SOCKS5 request carries a name of at most 255 bytes. */
static void
server_option(char *to, char *proxy)
{
	char *colon;

	if (to == NULL || to[0] == '\0')
		usage_error(&local_cmd, "%s --to <TO>", MISSING);
	/* HOST:PORT or [IPv6]:PORT, as other tools take it; bare IPv6 has several colons. */
	colon = strrchr(to, ':');
	if (colon != NULL && (colon == strchr(to, ':') || colon[-1] == ']'))
		usage_error(&local_cmd, "invalid value '%s' for '--to': the control port is set "
		    "with '--control-port %s'", to, colon + 1);
	cli.to = to;
	if (proxy != NULL && proxy[0] != '\0')
		proxy_option(proxy);
	if (cli.proxy == PROXY_SOCKS5H && strlen(cli.to) > 255)
		usage_error(&local_cmd, "invalid value for '--to': too long a name for socks5h://");
}

/* Keep fds for each tunnel's control connection; fit --max-conns in the rest. */
static void
client_fd_budget(int ntunnels, int max_conns_given)
{
	/* Each visitor takes two: its data connection and its local one; pools their own. */
	int fit = (fds.limit - FD_SPARE - ntunnels * (1 + cli.pool)) / 2;

	fds.reserve = FD_SPARE + ntunnels * (1 + cli.pool);
	if (cli.max_conns > fit) {
		cli.max_conns = fit > 1 ? fit : 1;
		log_msg(max_conns_given ? LOG_WARN : LOG_INFO, "at most %d connections relayed "
		    "at once (--max-conns): %d fds free under ulimit -n", cli.max_conns, fds.limit);
	}
}

/* `bore local`: check the arguments, resolve both ends, run the client's tunnels. */
static int
main_local(int argc, char **argv)
{
	char *vals[L_COUNT] = { NULL };
	const char *pos[MAX_TUNNELS] = { NULL };
	struct keyset *ks;
	int i, npos, remote = 0;
	uint16_t port;

	if ((npos = parse_options(&local_cmd, local_opts, L_COUNT, argc, argv, vals, pos,
	    MAX_TUNNELS)) == 0 && (pos[0] = env_value("BORE_LOCAL_PORT")) != NULL)
		npos = 1;
	/* A client answers with one secret: its file's first. */
	if ((ks = load_secret(&local_cmd, vals[L_SECRET], vals[L_SECRET_FILE])) != NULL) {
		if (ks->range[0][1] != 0)
			errx(1, "secret file %s: ports= lines are a server's", vals[L_SECRET_FILE]);
		cli.has_secret = 1;
		memcpy(cli.key, ks->key[0], sizeof(cli.key));
		keyset_free(ks);
	}
	vals[L_SECRET] = NULL;
	apply_env(local_opts, L_COUNT, vals);
	if (npos == 0)
		usage_error(&local_cmd, "%s <LOCAL_PORT>", MISSING);
	for (i = 0; i < npos; i++) {
		remote |= tunnel_option(pos[i], &client.tunnels[i]);
		pthread_mutex_init(&client.tunnels[i].lock, NULL);
		ring_init(&client.tunnels[i].live);
	}
	client.ntunnels = npos;
	server_option(vals[L_TO], vals[L_PROXY]);
	cli.local_host = vals[L_LOCAL_HOST] ? vals[L_LOCAL_HOST] : "localhost";
	/* --port is the one tunnel's REMOTE_PORT: with several, each says its own. */
	if (vals[L_PORT] != NULL && npos > 1)
		usage_error(&local_cmd, "the argument '--port' cannot be used with several local "
		    "ports: use <LOCAL_PORT:REMOTE_PORT>");
	if (vals[L_PORT] != NULL && remote)
		usage_error(&local_cmd, "the argument '--port' cannot be used with "
		    "<LOCAL_PORT:REMOTE_PORT>");
	if ((port = port_option(&local_cmd, vals[L_PORT], "--port", 0, 0)) != 0)
		client.tunnels[0].want = port;
	cli.control_port = port_option(&local_cmd, vals[L_CONTROL_PORT], "--control-port", 1,
	    BORE_CONTROL_PORT);
	cli.reconnect = vals[L_NO_RECONNECT] == NULL;
	cli.dump = vals[L_DUMP] != NULL;
	cli.max_conns = count_option(&local_cmd, vals[L_MAX_CONNS], "--max-conns", 1, COUNT_MAX,
	    DEFAULT_MAX_CONNS);
	cli.grace_ms = 1000 * count_option(&local_cmd, vals[L_GRACE], "--grace", 0, COUNT_MAX, 5);
	cli.pool = count_option(&local_cmd, vals[L_POOL], "--pool", 0, POOL_MAX, DEFAULT_POOL);
	client_fd_budget(npos, vals[L_MAX_CONNS] != NULL);
	cli.heartbeat_timeout_ms = 1000 * count_option(&local_cmd, vals[L_HEARTBEAT_TIMEOUT],
	    "--heartbeat-timeout", 1, HEARTBEAT_TIMEOUT_MAX, BORE_HEARTBEAT_TIMEOUT_MS / 1000);
	for (i = 0; i < npos; i++)
		if ((client.tunnels[i].local_ai = resolve(cli.local_host,
		    client.tunnels[i].local_port)) == NULL)
			return (1);
	return (run_tunnels());
}

/* The port range, the control port and the addresses to bind (--metrics too), into srv, *ctl. */
static void
bind_options(char *const vals[], struct sockaddr_storage *ctl, socklen_t *ctl_len)
{
	const char *bind_addr, *bind_tunnels, *val = vals[S_METRICS];
	char host[INET6_ADDRSTRLEN + 2] = "";
	uint16_t control_port, port;
	int fd;

	srv.min_port = port_option(&server_cmd, vals[S_MIN_PORT], "--min-port", 1, 1024);
	srv.max_port = port_option(&server_cmd, vals[S_MAX_PORT], "--max-port", 1, 65535);
	if (srv.min_port > srv.max_port)
		usage_error(&server_cmd, "port range is empty (--min-port %u > --max-port %u)",
		    srv.min_port, srv.max_port);
	control_port = port_option(&server_cmd, vals[S_CONTROL_PORT], "--control-port", 1,
	    BORE_CONTROL_PORT);
	bind_addr = vals[S_BIND_ADDR] ? vals[S_BIND_ADDR] : "0.0.0.0";
	bind_tunnels = vals[S_BIND_TUNNELS] ? vals[S_BIND_TUNNELS] : bind_addr;
	if (parse_ip(bind_addr, control_port, ctl, ctl_len) == -1)
		usage_error(&server_cmd, "invalid value '%s' for '--bind-addr': not an IP address",
		    bind_addr);
	if (parse_ip(bind_tunnels, 0, &srv.tunnel_addr, &srv.tunnel_addr_len) == -1)
		usage_error(&server_cmd, "invalid value '%s' for '--bind-tunnels': not an IP "
		    "address", bind_tunnels);
	if (val != NULL && (host_port_split(val, host, sizeof(host), &port) != 0 ||
	    parse_ip(host, port, &srv.metrics, &srv.metrics_len) == -1))
		usage_error(&server_cmd, "invalid value '%s' for '--metrics': expected IP:PORT or "
		    "[IPv6]:PORT, PORT from 1 to 65535", val);
	/* Tunnels that cannot bind would refuse every client: say so now, not per client. */
	if ((fd = try_bind(0)) == -1)
		errx(1, "could not bind tunnels to %s: %s", bind_tunnels, strerror(errno));
	close_fd(fd);
}

/* `bore server`: check the arguments, run the server. */
static int
main_server(int argc, char **argv)
{
	char *vals[S_COUNT] = { NULL };
	const char *pos[1];
	struct sockaddr_storage ctl;
	socklen_t ctl_len;
	int i, fd;

	parse_options(&server_cmd, server_opts, S_COUNT, argc, argv, vals, pos, 0);
	/* Published before any thread starts; SIGHUP replaces it when it came from a file. */
	keys.current = load_secret(&server_cmd, vals[S_SECRET], vals[S_SECRET_FILE]);
	if (keys.current != NULL) {
		srv.has_secret = 1;
		srv.secret_file = vals[S_SECRET_FILE];
	}
	vals[S_SECRET] = NULL;
	apply_env(server_opts, S_COUNT, vals);
	bind_options(vals, &ctl, &ctl_len);
	srv.max_sessions = count_option(&server_cmd, vals[S_MAX_SESSIONS], "--max-sessions", 1,
	    COUNT_MAX, DEFAULT_MAX_SESSIONS);
	srv.max_conns = count_option(&server_cmd, vals[S_MAX_CONNS], "--max-conns", 1, COUNT_MAX,
	    DEFAULT_MAX_CONNS);
	srv.max_startups = count_option(&server_cmd, vals[S_MAX_STARTUPS], "--max-startups", 1,
	    COUNT_MAX, DEFAULT_MAX_STARTUPS);
	/* Unauthenticated peers, bursts included, get at most a quarter of the fds. */
	if (srv.max_startups > fds.limit / 8)
		srv.max_startups = fds.limit / 8 > 1 ? fds.limit / 8 : 1;
	/* Visitors never take the fds kept for them. */
	fds.reserve = 2 * srv.max_startups + FD_SPARE;
	for (i = 0; i < PL_KINDS; i++)
		logs.peer_lines[i].lines = PEER_LINES;
	startups.place = calloc(2 * (size_t)srv.max_startups, sizeof(*startups.place));
	if (startups.place == NULL)
		errx(1, "out of memory");
	srv.grace_ms = 1000 * count_option(&server_cmd, vals[S_GRACE], "--grace", 0, COUNT_MAX, 5);
	visitor_rate.per_minute = count_option(&server_cmd, vals[S_VISITOR_RATE], "--visitor-rate",
	    1, COUNT_MAX, 0);
	randombytes_buf(visitor_rate.key, sizeof(visitor_rate.key));
	if (visitor_rate.per_minute > 0 &&
	    (visitor_rate.slot = calloc(VISITOR_SOURCES, sizeof(*visitor_rate.slot))) == NULL)
		errx(1, "out of memory");
	srv.nallow = cidr_option(&server_cmd, vals[S_ALLOW], "--allow", srv.allow);
	srv.nallow_control = cidr_option(&server_cmd, vals[S_ALLOW_CONTROL], "--allow-control",
	    srv.allow_control);
	for (i = S_ALLOW; i <= S_ALLOW_CONTROL; i++)
		free(vals[i]);
	if (vals[S_PROXY_PROTOCOL] != NULL) {
		if (strcmp(vals[S_PROXY_PROTOCOL], "v1") == 0)
			srv.proxy_protocol = 1;
		else if (strcmp(vals[S_PROXY_PROTOCOL], "v2") == 0)
			srv.proxy_protocol = 2;
		else
			usage_error(&server_cmd, "invalid value '%s' for '--proxy-protocol': "
			    "use v1 or v2", vals[S_PROXY_PROTOCOL]);
	}
	srv.started = time(NULL);
	return ((fd = start_server(&ctl, ctl_len)) == -1 ? 1 : run_server(fd));
}

/* ---- Main: log level, signals, fds, and start --------------------- */

/* The level named s, any case, as logs.level takes it (off: below LOG_ALWAYS); -2 if none. */
static int
level_named(const char *s)
{
	static const char *const names[] = { "off", "error", "warn", "info", "debug", "trace" };
	int l;

	for (l = LOG_ALWAYS; l <= LOG_TRACE; l++)
		if (strcasecmp(s, names[l]) == 0)
			return (l == LOG_ALWAYS ? LOG_ALWAYS - 1 : l);
	return (-2);
}

/*
 * Set logs.level from RUST_LOG, as tracing reads its simple forms: a level,
 * or bore_cli=LEVEL (which wins); directives it cannot use are ignored, as
 * tracing ignores those it cannot parse.
 */
static void
rust_log_level(void)
{
	const char *v = env_value("RUST_LOG");
	char *copy, *dir, *save, *eq;
	int l, global = -2, ours = -2;

	if (v == NULL || (copy = strdup(v)) == NULL)
		return;
	for (dir = strtok_r(copy, ",", &save); dir != NULL; dir = strtok_r(NULL, ",", &save)) {
		if ((eq = strchr(dir, '=')) != NULL)
			*eq++ = '\0';
		if (eq == NULL && (l = level_named(dir)) != -2)
			global = l;
		else if (eq != NULL && (l = level_named(eq)) != -2 &&
		    (strcmp(dir, "bore_cli") == 0 || strncmp(dir, "bore_cli::", 10) == 0))
			ours = l;
	}
	free(copy);
	if ((l = ours != -2 ? ours : global) != -2)
		logs.level = l;
}

/*
 * Set logs.level from BORE_LOG (an unknown level is bad usage), else from
 * RUST_LOG, and logs.journal when JOURNAL_STREAM names stderr's device and
 * inode, as systemd sets it for a service whose stderr goes to the journal.
 */
static void
set_log_level(void)
{
	const char *v = env_value("BORE_LOG"), *js = env_value("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	int l;

	if (js != NULL && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(2, &st) == 0 &&
	    (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino)
		logs.journal = 1;
	if (v == NULL)
		rust_log_level();
	else if ((l = level_named(v)) != -2)
		logs.level = l;
	else
		usage_error(&main_cmd, "invalid value '%s' for BORE_LOG: "
		    "use off, error, warn, info, debug or trace", v);
}

/* SIGINT, SIGTERM, SIGHUP, SIGUSR1: wake the main loop through the pipe, with the signal. */
static void
on_signal(int sig)
{
	char c = (char)sig;
	int saved = errno;

	(void)!write(pipes.signal[1], &c, 1);
	errno = saved;
}

/*
 * Route SIGINT, SIGTERM, SIGHUP and SIGUSR1 (log the status) to the main
 * loop (the client stops on SIGHUP too, as for a closed terminal; the server
 * re-reads its secret file); a peer that went away must never kill us by
 * SIGPIPE.
 */
static void
setup_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal, .sa_flags = SA_RESTART };

	if (pipe_nb(pipes.signal) == -1 || pipe_nb(pipes.stop) == -1)
		err(1, "pipe");
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGINT, &sa, NULL) == -1 || sigaction(SIGTERM, &sa, NULL) == -1 ||
	    sigaction(SIGHUP, &sa, NULL) == -1 || sigaction(SIGUSR1, &sa, NULL) == -1)
		err(1, "sigaction");
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		err(1, "signal");
}

/* Use every fd the hard limit allows (each relayed visitor costs two), and set fd_limit. */
static void
raise_fd_limit(void)
{
	struct rlimit rl;
	int first_free;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		err(1, "getrlimit");
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
			(void)getrlimit(RLIMIT_NOFILE, &rl);
	}
	/* The fds below the first free one are start-up's: stdio and the signal pipe. */
	if ((first_free = open("/dev/null", O_RDONLY | O_CLOEXEC)) == -1)
		err(1, "/dev/null");
	close(first_free);
	fds.limit = (int)(rl.rlim_cur < INT_MAX / 2 ? rl.rlim_cur : INT_MAX / 2) - first_free;
}

/* Point closed standard fds at /dev/null, so that no socket or pipe opened later lands on one. */
static void
open_stdio(void)
{
	int fd;

	do {
		/* Nowhere to say why: stderr may be one of them. */
		if ((fd = open("/dev/null", O_RDWR)) == -1)
			exit(1);
	} while (fd <= 2);
	close(fd);
}

/* The subcommand called name; bad usage if there is none. */
static const struct command *
find_command(const char *name)
{
	if (strcmp(name, "local") == 0)
		return (&local_cmd);
	if (strcmp(name, "server") == 0)
		return (&server_cmd);
	usage_error(&main_cmd, "unrecognized subcommand '%s'", name);
}

int
main(int argc, char **argv)
{
	const struct command *cmd;
	int i, j, stop = 0;

	open_stdio();
	logs.level = LOG_INFO;
	logs.target = "bore_cli";
	ring_init(&pool.idle);
	/* --json anywhere before a "--", as clap takes a global flag: drop it from argv. */
	for (i = j = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			stop = 1;
		if (!stop && strcmp(argv[i], "--json") == 0)
			logs.json = 1;
		else
			argv[j++] = argv[i];
	}
	argv[argc = j] = NULL;
	if (argc < 2)
		usage_error(&main_cmd, "a subcommand is required");
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		fputs(main_cmd.help, stdout);
		return (0);
	}
	if (strcmp(argv[1], "-V") == 0 || strcmp(argv[1], "--version") == 0) {
		printf("bore %s (wire protocol of bore 0.5/0.6)\n", BORE_VERSION);
		return (0);
	}
	/* `bore help [COMMAND]`, as clap offers it. */
	if (strcmp(argv[1], "help") == 0) {
		if (argc > 3)
			usage_error(&main_cmd, "unexpected argument '%s'", argv[3]);
		fputs(argc == 3 ? find_command(argv[2])->help : main_cmd.help, stdout);
		return (0);
	}
	cmd = find_command(argv[1]);
	if (cmd == &server_cmd && server_missing != NULL)
		errx(2, "%s", server_missing);
	logs.target = cmd == &local_cmd ? "bore_cli::client" : "bore_cli::server";
	/* Before any thread starts, as glibc requires. */
	heap_setup();
	(void)atexit(reap_last_worker);
	set_log_level();
	if (sodium_init() < 0)
		errx(1, "could not initialise libsodium");
	setup_signals();
	raise_fd_limit();
	/* BORE_RELAY=copy: relay through user-space buffers, for comparing the two paths. */
	if (env_value("BORE_RELAY") != NULL && strcmp(env_value("BORE_RELAY"), "copy") == 0)
		relaying.splice = 0;
	if (cmd == &local_cmd)
		return (main_local(argc - 2, argv + 2));
	return (main_server(argc - 2, argv + 2));
}
