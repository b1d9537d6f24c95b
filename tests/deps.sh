#!/usr/bin/env bash
# Install what is missing for `make demo` (build) or `make check` (check: the build,
# plus what the suite uses): with apt-get on Debian and Ubuntu, through sudo when not
# root, saying what it installs; elsewhere name the packages and stop.
# Usage: tests/deps.sh [build|check]    Exit status: 0 when everything is there.
set -u

need=()
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v make >/dev/null 2>&1 || need+=(make)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
pkg-config --exists libsodium 2>/dev/null || need+=(libsodium-dev)
if [ "${1:-build}" = check ]; then
	command -v timeout >/dev/null 2>&1 || need+=(coreutils)
	command -v awk >/dev/null 2>&1 || need+=(gawk)
	command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
	# The fuzz pass builds with clang's libFuzzer, a package of its own.
	command -v clang >/dev/null 2>&1 || need+=(clang)
	echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { return d && n < 0; }' |
		clang -x c -fsanitize=fuzzer -o /dev/null - >/dev/null 2>&1 || need+=(libclang-rt-dev)
fi
[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
	echo "bore: missing ${need[*]} (as Debian names them): install them and run make again" >&2
	exit 1
fi
sudo=()
if [ "$(id -u)" != 0 ]; then
	if ! command -v sudo >/dev/null 2>&1; then
		echo "bore: missing ${need[*]}: as root, run apt-get install ${need[*]}" >&2
		exit 1
	fi
	sudo=(sudo)
fi
echo "bore: installing ${need[*]} with ${sudo[*]:+sudo }apt-get"
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get update -qq || ! "${sudo[@]}" apt-get install -y -qq "${need[@]}"; then
	echo "bore: could not install ${need[*]}" >&2
	exit 1
fi
