# bore: a wire-compatible TCP tunnel in one C file.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man

CFLAGS ?= -O2 -g
WARNINGS = -Wall -Wextra
SODIUM_CFLAGS := $(shell pkg-config --cflags libsodium 2>/dev/null)
SODIUM_LIBS := $(shell pkg-config --libs libsodium 2>/dev/null)
BORE_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARNINGS) $(SODIUM_CFLAGS) -pthread
BORE_LIBS = $(SODIUM_LIBS) -pthread

TEST_TOOLS = tests/unit tests/tcpkit

.PHONY: all check install uninstall clean bench demo sodium

all: bore

bore: bore.c bore.h | sodium
	$(CC) $(BORE_CFLAGS) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ bore.c $(BORE_LIBS)

# Every build needs libsodium; name the package rather than fail on a missing header.
sodium:
	@pkg-config --exists libsodium || { \
	    echo "libsodium not found by pkg-config: install it (Debian: apt-get install libsodium-dev pkg-config)" >&2; \
	    exit 1; }

# The unit tests include bore.c whole, so they can reach its static helpers.
tests/unit: tests/unit.c bore.c bore.h | sodium
	$(CC) $(BORE_CFLAGS) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ tests/unit.c $(BORE_LIBS)

tests/tcpkit: tests/tcpkit.c | sodium
	$(CC) $(BORE_CFLAGS) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ tests/tcpkit.c $(BORE_LIBS)

check: all $(TEST_TOOLS)
	./test.sh

demo: all tests/tcpkit
	./tests/demo.sh

bench: all tests/tcpkit
	./tests/bench.sh

install: bore
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1
	install -m 755 bore $(DESTDIR)$(BINDIR)/bore
	install -m 644 man/bore.1 $(DESTDIR)$(MANDIR)/man1/bore.1

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/bore $(DESTDIR)$(MANDIR)/man1/bore.1

clean:
	rm -f bore $(TEST_TOOLS)
