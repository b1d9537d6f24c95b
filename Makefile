# bore: a wire-compatible TCP tunnel in one C file.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
INSTALL ?= install
INSTALL_PROGRAM ?= $(INSTALL) -m 755
INSTALL_DATA ?= $(INSTALL) -m 644

CFLAGS ?= -O2 -g
WARNINGS = -Wall -Wextra
SODIUM_CFLAGS := $(shell pkg-config --cflags libsodium 2>/dev/null)
SODIUM_LIBS := $(shell pkg-config --libs libsodium 2>/dev/null)
BORE_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARNINGS) $(SODIUM_CFLAGS) -pthread
BORE_LIBS = $(SODIUM_LIBS) -pthread
# Hardening by default, in variables of its own so that flags from the environment
# (dpkg-buildflags, say) come after and win; `make HARDEN_CFLAGS= ...` drops a part.
HARDEN_CPPFLAGS = $(if $(findstring _FORTIFY_SOURCE,$(CPPFLAGS) $(CFLAGS)),,-D_FORTIFY_SOURCE=2)
# -fstack-protector, not -strong: -strong made each of bore local's visitor threads touch
# one more stack page (client VmRSS at 1,000 visitors 11.8 -> 15.8 MB).
HARDEN_CFLAGS = -fstack-protector -fPIE
HARDEN_LDFLAGS = -pie -Wl,-z,relro,-z,now
BUILD = $(CC) $(BORE_CFLAGS) $(HARDEN_CPPFLAGS) $(CPPFLAGS) $(HARDEN_CFLAGS) $(CFLAGS) \
	$(HARDEN_LDFLAGS) $(LDFLAGS)

TEST_TOOLS = tests/unit tests/tcpkit

# Sanitizer builds run the same suite: BORE=./bore-asan ./test.sh. Their frames are bigger,
# and a worker's stack holds its static TLS, where TSan keeps ~900 KiB of its own.
SAN_CFLAGS = -O1 -g -fno-omit-frame-pointer -DTHREAD_STACK='(2048 * 1024)'
# The fuzz target wants clang's libFuzzer; FUZZ_SECONDS bounds `make fuzz`.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60

.PHONY: all check test install install-strip install-systemd uninstall clean bench demo asan tsan \
	fuzz sodium static windows portable-check interop

all: bore

bore: bore.c bore.h | sodium
	$(BUILD) -o $@ bore.c $(BORE_LIBS)

# Every build needs libsodium; name the package rather than fail on a missing header.
sodium:
	@pkg-config --exists libsodium || { \
	    echo "libsodium not found by pkg-config: tests/deps.sh installs it (Debian: libsodium-dev)" >&2; \
	    exit 1; }

# The unit tests include bore.c whole, so they can reach its static helpers.
tests/unit: tests/unit.c bore.c bore.h | sodium
	$(BUILD) -o $@ tests/unit.c $(BORE_LIBS)

tests/tcpkit: tests/tcpkit.c | sodium
	$(BUILD) -o $@ tests/tcpkit.c $(BORE_LIBS)

asan: bore-asan
tsan: bore-tsan

bore-asan: bore.c bore.h | sodium
	$(CC) $(BORE_CFLAGS) $(CPPFLAGS) $(SAN_CFLAGS) -fsanitize=address,undefined \
	    -fno-sanitize-recover=undefined $(LDFLAGS) -o $@ bore.c $(BORE_LIBS)

bore-tsan: bore.c bore.h | sodium
	$(CC) $(BORE_CFLAGS) $(CPPFLAGS) $(SAN_CFLAGS) -fsanitize=thread $(LDFLAGS) -o $@ bore.c $(BORE_LIBS)

tests/fuzz: tests/fuzz.c bore.c bore.h | sodium
	$(FUZZ_CC) $(BORE_CFLAGS) $(CPPFLAGS) -g -O1 -fsanitize=fuzzer,address,undefined \
	    $(LDFLAGS) -o $@ tests/fuzz.c $(BORE_LIBS)

# Fuzz from the seed corpus for FUZZ_SECONDS; new finds go to a scratch corpus.
fuzz: tests/fuzz
	mkdir -p tests/corpus-work
	./tests/fuzz -max_total_time=$(FUZZ_SECONDS) -max_len=1024 -print_final_stats=1 \
	    tests/corpus-work tests/corpus

# A self-contained bore for any x86_64 Linux: musl, libsodium linked in (built from Debian's
# source package, cached under ~/.cache/bore-cross). tests/cross.sh deps installs musl-tools.
static:
	./tests/cross.sh static

# bore.exe: `bore local` for x86_64 Windows 10+, mingw-w64 with winpthreads and libsodium
# (built from Debian's source package, cached as for static) linked in; installs mingw-w64.
windows:
	./tests/cross.sh windows

# Warning-free builds for Linux (glibc, musl; x86_64, aarch64, armv7) and macOS, and the
# end-to-end cases against the static and ARM binaries (under qemu) and bore.exe (under
# wine); installs its tools.
portable-check: all tests/unit tests/tcpkit
	./tests/cross.sh deps
	./tests/cross.sh check
	./tests/release.sh check

# Release binaries in dist/ for every platform, with SHA256SUMS, reproducible (README.md,
# "Release binaries"); RELEASE_TARGETS="x86_64-linux-musl ..." makes some. Installs its tools.
.PHONY: release release-check
release:
	./tests/cross.sh deps
	./tests/release.sh build

# Two clones of HEAD built at different paths must give the same dist/, byte for byte.
release-check:
	./tests/cross.sh deps
	./tests/release.sh check

# demo and check first install what is missing (tests/deps.sh); the scripts they run
# build with a fresh make, which finds libsodium once it is there.
check:
	@./tests/deps.sh check
	./test.sh

# The name dh_auto_test and others look for; without it make's built-in rule
# would copy test.sh to a file named test and run nothing.
test: check

demo:
	@./tests/deps.sh build
	./tests/demo.sh

bench: all tests/tcpkit
	./tests/bench.sh

# The four pairings with the Rust bore: make interop BORE_RS=/path/to/its/binary
interop: all tests/tcpkit
	./tests/interop.sh

install: bore
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(BASHCOMPDIR)
	$(INSTALL_PROGRAM) bore $(DESTDIR)$(BINDIR)/bore
	$(INSTALL_DATA) man/bore.1 $(DESTDIR)$(MANDIR)/man1/bore.1
	$(INSTALL_DATA) contrib/bore.bash-completion $(DESTDIR)$(BASHCOMPDIR)/bore

# GNU convention: install with the binary stripped of its symbols and debug info.
install-strip:
	$(MAKE) INSTALL_PROGRAM='$(INSTALL_PROGRAM) -s' install

# The systemd units, naming the binary where install puts it rather than /usr/local/bin.
install-systemd:
	$(INSTALL) -d $(DESTDIR)$(SYSTEMDUNITDIR)
	for unit in bore-server.service bore-local@.service; do \
	    sed 's|/usr/local/bin/bore|$(BINDIR)/bore|g' contrib/$$unit \
	        >$(DESTDIR)$(SYSTEMDUNITDIR)/$$unit && \
	    chmod 644 $(DESTDIR)$(SYSTEMDUNITDIR)/$$unit || exit 1; \
	done

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/bore $(DESTDIR)$(MANDIR)/man1/bore.1 $(DESTDIR)$(BASHCOMPDIR)/bore \
	    $(DESTDIR)$(SYSTEMDUNITDIR)/bore-server.service $(DESTDIR)$(SYSTEMDUNITDIR)/bore-local@.service

clean:
	rm -rf bore bore-asan bore-tsan $(TEST_TOOLS) tests/fuzz tests/corpus-work bore-static \
	    bore-*-linux-* bore-*-macos bore.exe tests/wrap-* dist
