#!/usr/bin/env bash
# Ship what was tested: builds the rotation function's Lambda artifact the way
# a deployer does, checks that provided.al2023 can load it, rotates real
# secrets with that very file, and records which file passed.
#
#   bash tests/scripts/ship-check.sh [arm64|x86_64]
#   bash tests/scripts/ship-check.sh --check-elf FILE [arm64|x86_64]   (step 2 alone)
#
#   1. cargo lambda build --release --<arch> -p rotation-fn --locked
#        -> target/lambda/bootstrap/bootstrap, the CDK app's default asset.
#   2. The ELF check: the configured CPU, a dynamically linked Linux
#      executable with the loader and libraries provided.al2023 has, and no
#      glibc symbol version newer than Amazon Linux 2023's glibc (2.34).
#      Before it judges the artifact it proves it can fail: binaries made to
#      be wrong (too new a glibc symbol, the other CPU, static) are rejected.
#   3. tests/tests/shipped_artifact.rs: full single-user and alternating-users
#      rotations run by the artifact (under qemu-user when its CPU is not the
#      host's) through the local Lambda Runtime API, against a real
#      PostgreSQL and moto.
#   4. sha256 and size, printed and written to target/lambda/bootstrap.SHIPPED.
#      Beside the asset directory, not in it: the CDK zips that whole
#      directory into the function's code.
#
# The architecture is the argument, else $ROTATION_FN_ARCHITECTURE, else the
# `rotationFnArchitecture` context in cdk/cdk.json, else x86_64 (the CDK app's
# default), so the check builds what `cdk deploy` ships. SHIP_CHECK_EMULATE=1
# runs the rotations under qemu-user even when the artifact's CPU is the host's.
#
# Installs what it needs when missing, quietly otherwise: cargo-lambda and zig
# (pinned, into tests/.venv), and Debian's binutils, qemu-user-static and the
# target's cross libc (apt-get: needs root); PostgreSQL, moto and
# cargo-nextest through install-deps.sh. It never installs a Rust target: that
# comes from the Rust project's download server, not a package registry.
set -euo pipefail
SCRIPT=ship-check
source "$(dirname "$0")/common.sh"
cd "$ROOT"

CARGO_LAMBDA_VERSION=1.9.2
ZIGLANG_VERSION=0.17.1
# Amazon Linux 2023, the OS of the provided.al2023 runtime, ships glibc 2.34.
GLIBC_MAX=2.34
# What provided.al2023 has for a dynamically linked binary: glibc and libgcc.
ALLOWED_NEEDED="libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1 libutil.so.1 libgcc_s.so.1"
step() { printf '\n==> ship-check: %s\n' "$*"; STEP_STARTED=$SECONDS; }
took() { printf '    (%ss)\n' "$((SECONDS - STEP_STARTED))"; }

# --- arguments and the architecture -----------------------------------------

CHECK_ONLY=
ARCH_ARG=
while [ $# -gt 0 ]; do
  case "$1" in
    --check-elf) [ $# -ge 2 ] || die "--check-elf needs a FILE"; CHECK_ONLY=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$ARCH_ARG" ] || die "one architecture only (see --help)"; ARCH_ARG=$1; shift ;;
  esac
done

command -v python3 >/dev/null ||
  die "python3 is needed (cargo-lambda, zig and moto come from PyPI): as root, apt-get install python3 python3-venv"

cdk_context_architecture() {
  [ -f cdk/cdk.json ] || return 0
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("context", {}).get("rotationFnArchitecture", ""))' cdk/cdk.json
}

ARCH_SOURCE=argument
ARCH=$ARCH_ARG
if [ -z "$ARCH" ] && [ -n "${ROTATION_FN_ARCHITECTURE:-}" ]; then ARCH=$ROTATION_FN_ARCHITECTURE; ARCH_SOURCE='the environment variable ROTATION_FN_ARCHITECTURE'; fi
if [ -z "$ARCH" ]; then ARCH=$(cdk_context_architecture); ARCH_SOURCE='cdk/cdk.json context rotationFnArchitecture'; fi
if [ -z "$ARCH" ]; then ARCH=x86_64; ARCH_SOURCE="the CDK app's default (cdk/lib/settings.ts)"; fi

case "$ARCH" in
  arm64 | aarch64)
    ARCH=arm64 TRIPLE=aarch64-unknown-linux-gnu LAMBDA_FLAG=--arm64 ELF_MACHINE=AArch64
    INTERPRETER=/lib/ld-linux-aarch64.so.1 ZIG_CPU=aarch64 OTHER_ZIG_CPU=x86_64
    QEMU=qemu-aarch64-static CROSS_LIBC_PKG=libc6-arm64-cross CROSS_SYSROOT=/usr/aarch64-linux-gnu ;;
  x86_64 | x86-64 | amd64)
    ARCH=x86_64 TRIPLE=x86_64-unknown-linux-gnu LAMBDA_FLAG=--x86-64 ELF_MACHINE='Advanced Micro Devices X86-64'
    INTERPRETER=/lib64/ld-linux-x86-64.so.2 ZIG_CPU=x86_64 OTHER_ZIG_CPU=aarch64
    QEMU=qemu-x86_64-static CROSS_LIBC_PKG=libc6-amd64-cross CROSS_SYSROOT=/usr/x86_64-linux-gnu ;;
  *) die "architecture must be arm64 or x86_64 (as the CDK's rotationFnArchitecture), got '$ARCH' from $ARCH_SOURCE" ;;
esac

case "$(uname -m)" in
  x86_64) HOST_ARCH=x86_64 ;;
  aarch64 | arm64) HOST_ARCH=arm64 ;;
  *) HOST_ARCH=$(uname -m) ;;
esac
# Another CPU's binary runs under qemu-user. SHIP_CHECK_EMULATE=1 runs the
# host's own CPU under it too: a way to test the emulated path itself.
# The other CPU's glibc comes from Debian's cross package (qemu -L); for the
# host's own CPU the host's libraries are the right ones (Debian 12's
# libc6-amd64-cross under qemu-x86_64 aborts at start: "stack smashing").
EMULATE=no
if [ "$ARCH" != "$HOST_ARCH" ] || [ "${SHIP_CHECK_EMULATE:-0}" = 1 ]; then EMULATE=yes; fi
[ "$ARCH" != "$HOST_ARCH" ] || CROSS_SYSROOT=

# --- installing what is missing ----------------------------------------------

ensure_binutils() {
  command -v readelf >/dev/null || apt_install binutils
}

# cargo-lambda and zig, pinned, in the project's venv (common.sh).
ensure_cargo_lambda() {
  pip_install "cargo-lambda==$CARGO_LAMBDA_VERSION" "ziglang==$ZIGLANG_VERSION"
}

ensure_emulator() {
  [ "$EMULATE" = yes ] || return 0
  local packages=()
  command -v "$QEMU" >/dev/null || packages+=(qemu-user-static)
  if [ -n "$CROSS_SYSROOT" ] && [ ! -e "$CROSS_SYSROOT$INTERPRETER" ]; then packages+=("$CROSS_LIBC_PKG"); fi
  [ ${#packages[@]} -eq 0 ] || apt_install "${packages[@]}"
}

# --- the ELF check -------------------------------------------------------------
# readelf (binutils) reads any architecture's ELF, so the host's copy judges an
# AArch64 binary as well as an x86-64 one.

# Prints what it found; returns non-zero with the reasons when FILE would not
# run on provided.al2023 for $ARCH.
check_elf() {
  local file=$1 header dynamic versions needed interp highest lib problems=()
  [ -f "$file" ] || { echo "  $file: no such file"; return 1; }
  if ! header=$(LC_ALL=C readelf -h -W "$file" 2>&1); then
    echo "  $file: not an ELF file: $header"
    return 1
  fi
  field() { sed -n "s/^ *$1: *//p" <<<"$header"; }
  local class machine type osabi
  class=$(field Class) machine=$(field Machine) type=$(field Type) osabi=$(field 'OS\/ABI')
  echo "  ELF:            $class, $machine, $type, $osabi"
  [ "$class" = ELF64 ] || problems+=("class $class, expected ELF64")
  [ "$machine" = "$ELF_MACHINE" ] || problems+=("built for $machine, but the function is configured for $ARCH ($ELF_MACHINE)")
  case "$type" in EXEC* | DYN*) ;; *) problems+=("type $type is not an executable") ;; esac
  case "$osabi" in *'System V'* | *GNU* | *Linux*) ;; *) problems+=("OS/ABI $osabi is not Linux") ;; esac

  interp=$(LC_ALL=C readelf -l -W "$file" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')
  dynamic=$(LC_ALL=C readelf -d -W "$file" 2>/dev/null || true)
  echo "  interpreter:    ${interp:-none (statically linked)}"
  if [ -z "$interp" ]; then
    problems+=("not dynamically linked (no program interpreter): provided.al2023 expects a glibc binary from cargo lambda build")
  elif [ "$interp" != "$INTERPRETER" ]; then
    problems+=("program interpreter $interp, expected $INTERPRETER")
  fi

  needed=$(sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' <<<"$dynamic" | tr '\n' ' ')
  echo "  needs:          ${needed:-nothing}"
  for lib in $needed; do
    case " $ALLOWED_NEEDED $(basename "$INTERPRETER") " in
      *" $lib "*) ;;
      *) problems+=("needs $lib, which provided.al2023 does not have (it has glibc and libgcc only)") ;;
    esac
  done

  # Version needs (.gnu.version_r): every GLIBC_x.y the binary was linked against.
  versions=$(LC_ALL=C readelf -V -W "$file" 2>/dev/null | grep -o 'Name: GLIBC_[A-Z0-9_.]*' | sed 's/Name: //' | sort -u -V || true)
  if [ -n "$interp" ] && [ -z "$versions" ]; then
    problems+=("no GLIBC_ symbol versions found: cannot tell which glibc it needs")
  fi
  if grep -qx GLIBC_PRIVATE <<<"$versions"; then
    problems+=("uses GLIBC_PRIVATE symbols, which no other glibc build provides")
  fi
  highest=$(grep -E '^GLIBC_[0-9]+(\.[0-9]+)*$' <<<"$versions" | sort -V | tail -n 1 || true)
  if [ -n "$highest" ]; then
    echo "  highest glibc:  $highest (provided.al2023 has GLIBC_$GLIBC_MAX)"
    if [ "$(printf '%s\n' "${highest#GLIBC_}" "$GLIBC_MAX" | sort -V | tail -n 1)" != "$GLIBC_MAX" ]; then
      # Name the symbols that need a newer glibc: that is what to fix.
      local too_new symbols
      too_new=$(grep -E '^GLIBC_[0-9.]+$' <<<"$versions" | while read -r v; do
        [ "$(printf '%s\n' "${v#GLIBC_}" "$GLIBC_MAX" | sort -V | tail -n 1)" = "$GLIBC_MAX" ] || echo "$v"
      done | paste -s -d '|')
      symbols=$(LC_ALL=C readelf --dyn-syms -W "$file" 2>/dev/null | grep -oE "[^ ]+@@?($too_new)\b" | sort -u | paste -s -d ' ' || true)
      problems+=("requires $highest, newer than Amazon Linux 2023's glibc $GLIBC_MAX (${symbols:-symbols versioned ${too_new//|/ }}): the function would fail to start on Lambda")
    fi
  fi

  if [ ${#problems[@]} -gt 0 ]; then
    printf '  REJECTED: %s\n' "${problems[@]}"
    return 1
  fi
  echo "  accepted"
}

# Proves the check can fail: each binary below is made for $ARCH (or, for the
# CPU case, for the other one) and must be rejected for the stated reason;
# a plain binary linked against glibc 2.34 must be accepted.
prove_the_check_can_fail() {
  local dir=$SCRATCH/controls zig=("$VENV/bin/python" -m ziglang cc)
  mkdir -p "$dir"
  cat >"$dir/new.c" <<'EOF'
#include <stdlib.h>
int main(void) { return (int)(arc4random() & 1); } /* arc4random: glibc 2.36 */
EOF
  printf 'int main(void) { return 0; }\n' >"$dir/plain.c"
  printf 'void _start(void) { for (;;) {} }\n' >"$dir/static.c"
  "${zig[@]}" -target "$ZIG_CPU-linux-gnu.2.36" -O1 -o "$dir/glibc-2.36" "$dir/new.c"
  "${zig[@]}" -target "$ZIG_CPU-linux-gnu.2.34" -O1 -o "$dir/glibc-2.34" "$dir/plain.c"
  "${zig[@]}" -target "$OTHER_ZIG_CPU-linux-gnu.2.34" -O1 -o "$dir/other-cpu" "$dir/plain.c"
  "${zig[@]}" -target "$ZIG_CPU-linux-gnu" -O1 -static -nostdlib -o "$dir/static" "$dir/static.c"

  local name expected out
  for case in "glibc-2.36|requires GLIBC_2.36" "other-cpu|but the function is configured for $ARCH" "static|not dynamically linked"; do
    name=${case%%|*} expected=${case#*|}
    if out=$(check_elf "$dir/$name"); then
      printf '%s\n' "$out"
      die "the ELF check accepted '$name', a binary it must reject ($expected): the check is broken"
    fi
    grep -qF -- "$expected" <<<"$out" || { printf '%s\n' "$out"; die "the ELF check rejected '$name' but not for '$expected'"; }
    say "control '$name' rejected: $(grep -F -- "$expected" <<<"$out" | sed 's/^ *REJECTED: //' | head -n 1)"
  done
  out=$(check_elf "$dir/glibc-2.34") || { printf '%s\n' "$out"; die "the ELF check rejected a plain glibc 2.34 binary: it rejects everything"; }
  say "control 'glibc-2.34' accepted"
}

if [ -n "$CHECK_ONLY" ]; then
  ensure_binutils
  say "checking $CHECK_ONLY for $ARCH (from $ARCH_SOURCE) on provided.al2023"
  check_elf "$CHECK_ONLY" || die "$CHECK_ONLY would not run as the $ARCH rotation function on provided.al2023"
  exit 0
fi

# --- 0. prerequisites ------------------------------------------------------------

STARTED=$SECONDS
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
say "architecture $ARCH (from $ARCH_SOURCE); host $HOST_ARCH"

# cargo-lambda adds a missing target with `rustup target add`, a download from
# the Rust project's server. Say what is missing instead, before anything runs.
SYSROOT=$(rustc --print sysroot)
if [ ! -d "$SYSROOT/lib/rustlib/$TRIPLE/lib" ]; then
  die "the Rust standard library for $TRIPLE is not installed in this toolchain ($(rustc --version)).
  Add it once:   rustup target add $TRIPLE
  (it downloads from the Rust project's server, not a package registry, so this script does not).
  Where that server is out of reach, build and check the x86_64 function instead:
    bash tests/scripts/ship-check.sh x86_64      and deploy with   -c rotationFnArchitecture=x86_64"
fi

ensure_binutils
ensure_cargo_lambda
ensure_emulator
bash tests/scripts/install-deps.sh

TARGET_DIR=$(cargo metadata --no-deps --format-version 1 --locked |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
ASSET_DIR=$TARGET_DIR/lambda/bootstrap
ARTIFACT=$ASSET_DIR/bootstrap
RECORD=$TARGET_DIR/lambda/bootstrap.SHIPPED
# A record must never outlive the check of the file it describes.
rm -f "$RECORD"

# --- 1. build ----------------------------------------------------------------------

step "1/4 cargo lambda build --release $LAMBDA_FLAG -p rotation-fn --locked"
PATH="$VENV/bin:$PATH" cargo lambda build --release "$LAMBDA_FLAG" -p rotation-fn --locked
[ -f "$ARTIFACT" ] || die "cargo lambda build left no $ARTIFACT"
EXTRA=$(find "$ASSET_DIR" -mindepth 1 ! -name bootstrap -printf '%f ')
[ -z "$EXTRA" ] || die "$ASSET_DIR holds more than bootstrap ($EXTRA): the CDK would zip it into the function"
BUILT_SHA=$(sha256sum "$ARTIFACT" | awk '{print $1}')
took

# --- 2. ELF check --------------------------------------------------------------

step "2/4 ELF check: $ARCH, dynamically linked, glibc <= $GLIBC_MAX"
prove_the_check_can_fail
say "the artifact, $ARTIFACT:"
ELF_REPORT=$(check_elf "$ARTIFACT") || { printf '%s\n' "$ELF_REPORT"; die "$ARTIFACT would not run as the $ARCH rotation function on provided.al2023"; }
printf '%s\n' "$ELF_REPORT"
HIGHEST_GLIBC=$(sed -n 's/^ *highest glibc: *\(GLIBC_[0-9.]*\).*/\1/p' <<<"$ELF_REPORT")
took

# --- 3. rotations with the artifact ------------------------------------------------

RUNNER=$ARTIFACT
RUN_HOW="natively"
if [ "$EMULATE" = yes ]; then
  # binfmt_misc may be missing (containers, CI): call the emulator directly,
  # through a wrapper the harness starts as BOOTSTRAP_BIN. It clears the
  # environment but for PATH, so every path in it is absolute.
  RUNNER=$SCRATCH/bootstrap-under-qemu
  QEMU_ARGS=("$(command -v "$QEMU")")
  [ -z "$CROSS_SYSROOT" ] || QEMU_ARGS+=(-L "$CROSS_SYSROOT")
  printf '#!/bin/sh\nexec %s %q "$@"\n' "$(printf '%q ' "${QEMU_ARGS[@]}")" "$ARTIFACT" >"$RUNNER"
  chmod +x "$RUNNER"
  RUN_HOW="under $QEMU${CROSS_SYSROOT:+ -L $CROSS_SYSROOT}"
fi
step "3/4 rotations by the artifact ($RUN_HOW), tests/tests/shipped_artifact.rs"
SHIPPED_BOOTSTRAP=$ARTIFACT BOOTSTRAP_BIN=$RUNNER \
  cargo nextest run -p e2e --test shipped_artifact --run-ignored only --locked --no-fail-fast
took

# --- 4. record ---------------------------------------------------------------------

step "4/4 record the artifact that passed"
SHA=$(sha256sum "$ARTIFACT" | awk '{print $1}')
[ "$SHA" = "$BUILT_SHA" ] || die "$ARTIFACT changed while it was being checked ($BUILT_SHA -> $SHA): run the check again"
SIZE=$(stat -c %s "$ARTIFACT")
COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
[ -z "$(git status --porcelain 2>/dev/null)" ] || COMMIT="$COMMIT (with uncommitted changes)"
cat >"$RECORD" <<EOF
artifact:     ${ARTIFACT#"$ROOT"/}
sha256:       $SHA
size:         $SIZE bytes
architecture: $ARCH ($ELF_MACHINE)
glibc:        highest required $HIGHEST_GLIBC (provided.al2023: GLIBC_$GLIBC_MAX)
rotations:    single-user and alternating-users, tests/tests/shipped_artifact.rs, $RUN_HOW
built with:   cargo lambda build --release $LAMBDA_FLAG -p rotation-fn --locked (cargo-lambda $CARGO_LAMBDA_VERSION, zig $ZIGLANG_VERSION, $(rustc --version))
commit:       $COMMIT
checked at:   $(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF
cat "$RECORD"
say "recorded in ${RECORD#"$ROOT"/}"
printf '\nship-check: PASSED %s  %s  (%s bytes, %s, %s) in %ss\n' "$SHA" "${ARTIFACT#"$ROOT"/}" "$SIZE" "$ARCH" "$HIGHEST_GLIBC" "$((SECONDS - STARTED))"
