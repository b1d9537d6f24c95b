#!/usr/bin/env bash
# Release binaries: dist/bore-VERSION-TARGET, static and stripped, and dist/SHA256SUMS;
# reproducible from a commit: the same bytes from any clone, at any path or time.
# Usage: tests/release.sh build | check
#   build  (make release) dist/ for the targets in RELEASE_TARGETS, all of them by default
#   check  (make release-check) two clones of HEAD at different paths, each built with
#          `build`, compared byte for byte; x86_64-linux-musl also with libsodium built
#          from scratch in a cache of its own per clone
# The builds are tests/cross.sh's (static, build TARGET, windows), with its caches.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS="x86_64-linux-musl aarch64-linux-musl armv7-linux-musleabihf x86_64-macos aarch64-macos x86_64-windows"
RELEASE_TARGETS=${RELEASE_TARGETS:-$ALL_TARGETS}
# tests/cross.sh keeps its sources and builds here, zig its own cache.
CACHES=${XDG_CACHE_HOME:-$HOME/.cache}

say() { printf 'release: %s\n' "$*" >&2; }

# The version --version prints, from bore.h.
version() { sed -n 's/^#define BORE_VERSION "\(.*\)"$/\1/p' bore.h; }

# Build target $1 with tests/cross.sh and copy it to dist/ under its release name.
build_target() {
	local t=$1 out ext=
	case $t in
	x86_64-linux-musl) ./tests/cross.sh static; out=bore-static ;;
	aarch64-linux-musl | x86_64-macos | aarch64-macos) ./tests/cross.sh build "$t"; out=bore-$t ;;
	armv7-linux-musleabihf) ./tests/cross.sh build arm-linux-musleabihf; out=bore-arm-linux-musleabihf ;;
	x86_64-windows) ./tests/cross.sh windows; out=bore.exe; ext=.exe ;;
	esac
	install -m 755 "$out" "dist/bore-$(version)-$t$ext"
}

# dist/ for RELEASE_TARGETS; refuses a binary that holds a build path.
build() {
	local t f v
	v=$(version)
	[ -n "$v" ] || { say "no BORE_VERSION in bore.h"; exit 1; }
	# Any time a tool writes (gcc's __DATE__, ld's PE header) is the last commit's.
	if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
		SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null) ||
			{ say "not a git checkout: set SOURCE_DATE_EPOCH"; exit 1; }
	fi
	export SOURCE_DATE_EPOCH TZ=UTC LC_ALL=C
	for t in $RELEASE_TARGETS; do
		case " $ALL_TARGETS " in *" $t "*) ;;
		*) say "unknown target $t (targets: $ALL_TARGETS)"; exit 2 ;; esac
	done
	[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] ||
		say "warning: uncommitted changes; these binaries are not the commit's"
	rm -rf dist
	mkdir dist
	for t in $RELEASE_TARGETS; do
		say "bore $v for $t"
		build_target "$t"
	done
	for f in dist/bore-*; do
		# Not grep -q: its early exit would fail strings with SIGPIPE, and so the pipeline.
		if strings -a "$f" | grep -F -e "$PWD" -e "$CACHES" >/dev/null; then
			say "$f holds a build path: not reproducible"
			exit 1
		fi
	done
	(cd dist && sha256sum bore-* >SHA256SUMS && sha256sum --quiet -c SHA256SUMS)
	for f in dist/bore-*; do
		say "$(printf '%-40s %8s bytes  %s' "${f#dist/}" "$(stat -c %s "$f")" \
			"$(file -b "$f" | cut -d, -f1-2)")"
	done
}

# Two clones of HEAD at paths of different lengths, built one after the other, give the same bytes.
check() {
	local tmp head c musl
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/bore-release.XXXXXX")
	# shellcheck disable=SC2064
	trap "rm -rf '$tmp'" EXIT
	head=$(git rev-parse HEAD)
	[ -z "$(git status --porcelain --untracked-files=no)" ] ||
		say "warning: uncommitted changes are not in the clones; checking $head"
	musl=bore-$(version)-x86_64-linux-musl
	for c in "$tmp/a/bore" "$tmp/b/a/longer/path/bore"; do
		git clone -q --no-checkout "$PWD" "$c"
		git -C "$c" checkout -q --detach "$head"
		say "$c: $musl, its libsodium built from scratch in a cache of its own"
		(cd "$c" && XDG_CACHE_HOME=$c.cache RELEASE_TARGETS=x86_64-linux-musl ./tests/release.sh build)
		mv "$c/dist/$musl" "$c.$musl"
		say "$c: $RELEASE_TARGETS, with the shared cache"
		(cd "$c" && ./tests/release.sh build)
		(cd "$c/dist" && sha256sum --quiet -c SHA256SUMS) ||
			{ say "SHA256SUMS fails sha256sum -c in $c/dist"; exit 1; }
	done
	diff -r "$tmp/a/bore/dist" "$c/dist" || { say "the two clones' dist/ differ"; exit 1; }
	cmp "$tmp/a/bore.$musl" "$c.$musl" ||
		{ say "$musl differs between the two libsodium builds from scratch"; exit 1; }
	[ ! -f "$c/dist/$musl" ] || cmp "$c.$musl" "$c/dist/$musl" ||
		{ say "$musl differs between the libsodium of its own cache and the shared one"; exit 1; }
	say "reproducible: dist/ ($(wc -l <"$c/dist/SHA256SUMS") binaries, SHA256SUMS) the same in both clones"
}

case ${1:-} in
build) build ;;
check) check ;;
*) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
