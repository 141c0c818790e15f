#!/usr/bin/env bash
# Builds the `dcc` release binary that runs on the stack's AMIs (Amazon Linux 2023: glibc 2.34),
# whatever glibc this machine has, and checks it.
#
#   scripts/release.sh [--out DIR]      build, copy to DIR/dcc (default target/release-artifact,
#                                       git-ignored; the path terraform/examples/basic's dcc_binary
#                                       and docs/deploy.md use), then check it
#   scripts/release.sh --check-only BIN only check an existing binary
#
# The build is `cargo zigbuild --release --locked -p dcc-server --bin dcc --target
# x86_64-unknown-linux-gnu.2.34`: zig links against glibc 2.34's symbol versions. ziglang and
# cargo-zigbuild come from PyPI into a virtualenv at ~/.cache/dcc/zig (installed when missing).
# Build outputs go to CARGO_TARGET_DIR (default ~/.cache/dcc/release-target, apart from the debug
# builds of scripts/test.sh so the two never wait on each other's lock).
#
# The check reads the binary's dynamic symbol versions (objdump -T) and fails when any GLIBC_x.y
# above 2.34 is required; the last line is
#   == release artifact: PATH, SIZE, highest GLIBC_2.xx required (<= 2.34: ok)
#
# DCC_RELEASE_ARCH picks the CPU (default x86_64, the AMIs' architecture). On a machine whose Rust
# has no x86_64-unknown-linux-gnu standard library (an aarch64 host, say) and no DCC_RELEASE_ARCH,
# it builds for the host's architecture instead and says so: that binary still proves the glibc
# bound, but it is not the one to deploy on the stack's x86_64 instances.
set -euo pipefail

MAX_GLIBC=2.34
out_dir=
check_only=
# Paths given on the command line are taken from the caller's directory.
while [ $# -gt 0 ]; do
  case $1 in
    --out) out_dir=$(realpath -m -- "${2:?--out needs a directory}"); shift 2 ;;
    --check-only) check_only=$(realpath -m -- "${2:?--check-only needs a binary}"); shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
. scripts/lib.sh
out_dir=${out_dir:-$PWD/target/release-artifact}

# Fails unless BIN needs no GLIBC symbol version above $MAX_GLIBC.
check_glibc() {
  local bin=$1 versions highest size machine
  [ -f "$bin" ] || { echo "error: $bin: no such file" >&2; return 1; }
  apt_need objdump=binutils readelf=binutils
  machine=$(readelf -h "$bin" 2>/dev/null | sed -n 's/^ *Machine: *//p' || true)
  [ -n "$machine" ] || { echo "error: $bin is not an ELF binary" >&2; return 1; }
  versions=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/^GLIBC_//' | sort -uV)
  size=$(du -h "$bin" | cut -f1)
  echo "$bin: $machine, needs $(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | paste -sd' ' -)"
  if [ -z "$versions" ]; then
    echo "== release artifact: $bin, $size, no GLIBC symbol version required (static: ok)"
    return 0
  fi
  highest=$(tail -n1 <<<"$versions")
  if [ "$(printf '%s\n%s\n' "$highest" "$MAX_GLIBC" | sort -V | tail -n1)" != "$MAX_GLIBC" ]; then
    echo "error: $bin requires GLIBC_$highest, above $MAX_GLIBC (Amazon Linux 2023): it would not start" \
      "on the AMIs. Symbols needing more than $MAX_GLIBC:" >&2
    objdump -T "$bin" | awk -v max="$MAX_GLIBC" 'match($0, /GLIBC_[0-9][0-9.]*/) {
        v = substr($0, RSTART + 6, RLENGTH - 6); split(v, a, "."); split(max, m, ".");
        if (a[1] > m[1] || (a[1] == m[1] && a[2] + 0 > m[2] + 0)) print "  " $NF " (GLIBC_" v ")" }' >&2
    echo "== release artifact: $bin, $size, highest GLIBC_$highest required (> $MAX_GLIBC: FAILED)"
    return 1
  fi
  echo "== release artifact: $bin, $size, highest GLIBC_$highest required (<= $MAX_GLIBC: ok)"
}

if [ -n "$check_only" ]; then
  check_glibc "$check_only"
  exit
fi

ensure_rust
sysroot=$(rustc --print sysroot)
arch=${DCC_RELEASE_ARCH:-x86_64}
if [ ! -d "$sysroot/lib/rustlib/$arch-unknown-linux-gnu/lib" ]; then
  if [ -z "${DCC_RELEASE_ARCH:-}" ] && [ -d "$sysroot/lib/rustlib/$(uname -m)-unknown-linux-gnu/lib" ]; then
    arch=$(uname -m)
    echo "note: this Rust has no x86_64-unknown-linux-gnu standard library; building for this host's" \
      "$arch instead. The glibc check still holds, but the stack's AMIs are x86_64: build the" \
      "artifact to deploy on an x86_64 machine (or one with that standard library installed)." >&2
  else
    echo "error: this Rust has no $arch-unknown-linux-gnu standard library" \
      "(rustup target add $arch-unknown-linux-gnu)" >&2
    exit 1
  fi
fi
target=$arch-unknown-linux-gnu

# ziglang and cargo-zigbuild (a prebuilt binary in its wheel) in their own virtualenv.
venv="$HOME/.cache/dcc/zig"
if [ ! -x "$venv/bin/cargo-zigbuild" ] || ! "$venv/bin/python" -c 'import ziglang' 2>/dev/null; then
  apt_need python3=python3
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    apt_need __venv_marker=python3-venv
  fi
  echo "installing ziglang and cargo-zigbuild into $venv (pip)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  # Both are 0.x, where a minor release may break: pinned to the lines this was checked with.
  "$venv/bin/pip" install -q 'ziglang>=0.17,<0.18' 'cargo-zigbuild>=0.24,<0.25'
fi
# cargo-zigbuild runs `python3 -m ziglang` when no `zig` is on PATH: the venv's python3 has it.
export PATH="$venv/bin:$PATH"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/dcc/release-target}
mkdir -p "$CARGO_TARGET_DIR"
echo "building dcc for $target.$MAX_GLIBC (cargo zigbuild, target dir $CARGO_TARGET_DIR)"
cargo zigbuild --release --locked -p dcc-server --bin dcc --target "$target.$MAX_GLIBC"

mkdir -p "$out_dir"
artifact=$out_dir/dcc
# Copy, then rename: an interrupted copy never leaves a half-written artifact behind.
cp "$CARGO_TARGET_DIR/$target/release/dcc" "$artifact.tmp"
mv -f "$artifact.tmp" "$artifact"
echo "sha256: $(sha256sum "$artifact" | cut -d' ' -f1)"
check_glibc "$artifact"
