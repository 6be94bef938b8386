#!/bin/sh
# Installs the ncps binary for this machine from a release:
#
#   curl -fsSL <base>/install.sh | sh                      # /usr/local/bin as root, else ~/.local/bin
#   curl -fsSL <base>/install.sh | sh -s -- --prefix DIR   # DIR/bin
#
# It downloads ncps-<os>-<arch> and SHA256SUMS from NCPS_INSTALL_BASE_URL, refuses a binary
# whose digest does not match, and installs it atomically (a running ncps keeps its file).
# POSIX sh: runs under dash, busybox sh and bash alike.
set -eu

# Placeholder until the project's releases are published: point it at the real release
# download URL (the directory holding ncps-linux-x64, ncps-linux-arm64 and SHA256SUMS).
DEFAULT_BASE_URL="https://github.com/ncps-ts/ncps/releases/latest/download"
BASE_URL="${NCPS_INSTALL_BASE_URL:-$DEFAULT_BASE_URL}"
BASE_URL="${BASE_URL%/}"

say() { printf 'ncps-install: %s\n' "$*" >&2; }
die() {
  say "error: $*"
  exit 1
}

usage() {
  cat <<EOF
usage: install.sh [--prefix DIR]

Installs ncps into DIR/bin (default: /usr/local/bin as root, \$HOME/.local/bin otherwise).
Downloads from \$NCPS_INSTALL_BASE_URL (default: $DEFAULT_BASE_URL)
and checks the binary against SHA256SUMS there.
EOF
}

prefix=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix)
      [ $# -ge 2 ] && [ -n "$2" ] || die "--prefix needs a directory"
      prefix=$2
      shift 2
      ;;
    --prefix=*)
      prefix=${1#--prefix=}
      [ -n "$prefix" ] || die "--prefix needs a directory"
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

# --- which binary ---------------------------------------------------------------------------
case "$(uname -s)" in
  Linux) os=linux ;;
  *) die "no ncps binary for $(uname -s): releases are for Linux (x64, arm64); elsewhere run it from source with Bun" ;;
esac
case "$(uname -m)" in
  x86_64 | amd64) arch=x64 loader=/lib64/ld-linux-x86-64.so.2 ;;
  aarch64 | arm64) arch=arm64 loader=/lib/ld-linux-aarch64.so.1 ;;
  *) die "no ncps binary for $(uname -m): releases are for x86_64 and aarch64" ;;
esac
# The binary embeds the Bun runtime, which is linked against glibc (not musl: Alpine needs gcompat).
[ -e "$loader" ] || die "ncps needs glibc ($loader not found)"
name="ncps-$os-$arch"

if [ -n "$prefix" ]; then
  bindir="$prefix/bin"
elif [ "$(id -u)" = 0 ]; then
  bindir=/usr/local/bin
else
  [ -n "${HOME:-}" ] || die "HOME is not set: use --prefix DIR"
  bindir="$HOME/.local/bin"
fi

# --- tools ----------------------------------------------------------------------------------
if command -v curl >/dev/null 2>&1; then
  download() { curl -fsSL --retry 3 -o "$2" "$1"; }
elif command -v wget >/dev/null 2>&1; then
  download() { wget -q -O "$2" "$1"; }
else
  die "needs curl or wget"
fi
if command -v sha256sum >/dev/null 2>&1; then
  sha256() { sha256sum "$1" | cut -d ' ' -f 1; }
elif command -v shasum >/dev/null 2>&1; then
  sha256() { shasum -a 256 "$1" | cut -d ' ' -f 1; }
else
  die "needs sha256sum or shasum to check the download"
fi

# --- download and check ---------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/ncps-install.XXXXXX")
staged=""
cleanup() {
  rm -rf "$work"
  [ -z "$staged" ] || rm -f "$staged"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "downloading $BASE_URL/$name"
download "$BASE_URL/SHA256SUMS" "$work/SHA256SUMS" || die "cannot download $BASE_URL/SHA256SUMS"
download "$BASE_URL/$name" "$work/$name" || die "cannot download $BASE_URL/$name"

# SHA256SUMS lines: "<hex>  <name>" (or "<hex> *<name>" from binary-mode sha256sum).
expected=$(awk -v n="$name" '$2 == n || $2 == "*" n { print $1; exit }' "$work/SHA256SUMS")
[ -n "$expected" ] || die "SHA256SUMS has no entry for $name"
actual=$(sha256 "$work/$name")
if [ "$actual" != "$expected" ]; then
  die "checksum mismatch for $name (expected $expected, got $actual): not installing it"
fi

# --- install --------------------------------------------------------------------------------
mkdir -p "$bindir" || die "cannot create $bindir (try --prefix DIR, or run as root)"
# Stage next to the target, then rename: atomic, and a running ncps keeps its old file.
staged="$bindir/.ncps.install.$$"
cp "$work/$name" "$staged" || die "cannot write to $bindir"
chmod 0755 "$staged"
mv -f "$staged" "$bindir/ncps"
staged=""

installed_version=$("$bindir/ncps" --version) || die "$bindir/ncps was installed but does not run here"
say "installed $installed_version to $bindir/ncps"

case ":${PATH:-}:" in
  *":$bindir:"*) cmd=ncps ;;
  *)
    cmd="$bindir/ncps"
    say "note: $bindir is not on your PATH"
    ;;
esac
cat <<EOF

Next, start it (listens on :8501, proxies https://cache.nixos.org; --help lists every option):

  $cmd serve --cache-hostname $(hostname 2>/dev/null || echo ncps.lan)

EOF
