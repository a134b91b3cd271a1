#!/usr/bin/env bash
# The local demo, no AWS account needed: a throwaway PostgreSQL, moto behind
# the project's Secrets Manager endpoint, the real rotation function and the
# real web app (release builds, so the times shown are the product's), live
# rotations, a summary and a timeline picture. Flags pass through to the demo;
# `--help` lists them (tests/examples/demo/HELP.txt).
#
# First run: installs what the demo needs (PostgreSQL 15's server, moto and the
# aws CLI into tests/.venv) and builds the release binaries, several minutes on
# 2 cores, with cargo's progress shown. Later runs start in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

for arg in "$@"; do
  case $arg in
    -h | --help) cat tests/examples/demo/HELP.txt; exit 0 ;;
  esac
done

step() { printf '==> %s\n' "$*"; }

step "checking what the demo needs (PostgreSQL 15, openssl, moto and the aws CLI in tests/.venv)"
bash tests/scripts/install-deps.sh --demo

# Two builds, not one: in one cargo invocation, the harness's `fault-points`
# feature of rotation-fn would be unified into the shipped `bootstrap`.
step "building the release binaries: bootstrap and web-app as shipped, then the demo (first run: several minutes)"
SECONDS=0
cargo build --release --locked -p rotation-fn -p web-app --bins
cargo build --release --locked -p e2e --example demo
step "built in ${SECONDS}s"

target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$PWD/$target ;; esac
export BOOTSTRAP_BIN=$target/release/bootstrap WEB_APP_BIN=$target/release/web-app
exec "$target/release/examples/demo" "$@"
