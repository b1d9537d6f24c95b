#!/usr/bin/env bash
# Install what is missing for `make demo` (build) or `make check` (check: the build,
# plus what the suite uses): with apt-get on Debian and Ubuntu, through sudo when not
# root, saying what it installs; elsewhere name the packages and stop, or, when only
# the suite's optional tools are missing, say which of its passes will be skipped.
# Usage: tests/deps.sh [build|check]    Exit status: 0 when the build can go on.
set -u

need=()
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v make >/dev/null 2>&1 || need+=(make)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
pkg-config --exists libsodium 2>/dev/null || need+=(libsodium-dev)
optional=()
if [ "${1:-build}" = check ]; then
	command -v timeout >/dev/null 2>&1 || need+=(coreutils)
	command -v awk >/dev/null 2>&1 || need+=(gawk)
	# Without these the suite skips its valgrind case and its fuzz pass ...
	command -v valgrind >/dev/null 2>&1 || optional+=(valgrind)
	# ... and its cases in network namespaces of their own.
	command -v ip >/dev/null 2>&1 || optional+=(iproute2)
	command -v clang >/dev/null 2>&1 || optional+=(clang)
	# ... and its cases of the client behind an HTTP or SOCKS5 proxy.
	command -v tinyproxy >/dev/null 2>&1 || optional+=(tinyproxy)
	command -v microsocks >/dev/null 2>&1 || optional+=(microsocks)
	# ... and its cases of --metrics (promtool, and a Prometheus server to scrape).
	command -v prometheus >/dev/null 2>&1 || optional+=(prometheus)
	echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { return d && n < 0; }' |
		clang -x c -fsanitize=fuzzer -o /dev/null - >/dev/null 2>&1 || optional+=(libclang-rt-dev)
fi
all=("${need[@]}" "${optional[@]}")
[ ${#all[@]} -eq 0 ] && exit 0

# Say what cannot be installed here: fail if the build needs it, else go on without it.
cannot_install() {
	if [ ${#need[@]} -gt 0 ]; then
		echo "bore: missing ${need[*]}$1" >&2
		exit 1
	fi
	echo "bore: without ${optional[*]} (as Debian names them), the suite skips what needs them" >&2
	exit 0
}

command -v apt-get >/dev/null 2>&1 ||
	cannot_install " (as Debian names them): install them and run make again"
sudo=()
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null 2>&1 || cannot_install ": as root, run apt-get install ${all[*]}"
	sudo=(sudo)
fi
echo "bore: installing ${all[*]} with ${sudo[*]:+sudo }apt-get"
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get update -qq || ! "${sudo[@]}" apt-get install -y -qq "${all[@]}"; then
	echo "bore: could not install ${all[*]}" >&2
	# Only the suite's extras missing: go on without them.
	exit $((${#need[@]} > 0))
fi
