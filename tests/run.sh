#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what it needs, then runs
# formatting and lint gates, every Rust unit and end-to-end test (real
# PostgreSQL, moto behind the local Secrets Manager endpoint, the real
# binaries), the fault campaign's CI sample, the rotation's tests again on
# PostgreSQL 17 (tests/scripts/postgres-17.sh), the shipped Lambda artifact's
# check, the CDK tests (assertions, cdk-nag, cfn-lint, checkov) and the
# container image tests (a real Docker engine).
#
#   bash tests/run.sh          # the suite (CI runs this)
#   bash tests/run.sh --full   # the same with the whole fault campaign
#
# Needs root for what it installs from Debian (PostgreSQL 15, Docker) and for
# the image test's Docker engine; says so when it lacks it. Leaves the host as
# it found it: Python tools go into tests/.venv and cdk/.venv, caches into
# target/, no service keeps running, no network setting changes.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  "") ;;
  --full) export FAULT_CAMPAIGN=full ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "tests/run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
esac

TOTAL=$SECONDS
section() { printf '\n==> %s\n' "$*"; SECONDS_AT=$SECONDS; }
done_in() { printf '    (%ss)\n' "$((SECONDS - SECONDS_AT))"; }

section "system packages and tools (PostgreSQL 15, moto, the aws CLI, cargo-nextest)"
bash tests/scripts/install-deps.sh; done_in
export PATH="$PWD/tests/.venv/bin:$PATH"

section "cargo fmt --check"
cargo fmt --all --check; done_in

section "build the binaries and examples the end-to-end tests run"
cargo build --workspace --bins --examples --locked; done_in

section "clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings; done_in

section "Rust unit and end-to-end tests (fault campaign: ${FAULT_CAMPAIGN:-CI sample})"
cargo nextest run --workspace --locked --no-fail-fast; done_in

section "the rotation's end-to-end tests again on PostgreSQL 17, the version the CDK app deploys"
pg17=$(bash tests/scripts/postgres-17.sh)
# The servers run as the system user postgres, which must reach the binaries:
# a checkout under a private directory (/root, say) gets a copy in /tmp.
if ! setpriv --reuid=postgres --regid=postgres --init-groups -- test -x "$pg17/postgres"; then
  pg17_copy=$(mktemp -d)
  trap 'rm -rf "$pg17_copy"' EXIT
  chmod 755 "$pg17_copy"
  cp -a "$(dirname "$pg17")" "$pg17_copy/"
  pg17=$pg17_copy/native/bin
fi
# --workspace, as above, so that nothing is built again (`-p e2e` alone
# unifies features differently and rebuilds half the tree).
pg17_tests=(rotation_single_user rotation_alternating rotation_safety rotation_errors rotation_tls rotation_preflight
  rotation_emergency rotation_runtime rotation_own_role rotation_hostile_server provision hostile_secrets
  web_app_least_privilege)
pg17_filter=$(printf 'binary(=%s) | ' "${pg17_tests[@]}")
E2E_PG_BIN=$pg17 cargo nextest run --workspace --locked --no-fail-fast -E "${pg17_filter% | }"; done_in

section "ship what was tested: the Lambda artifact built as deployers build it, checked, rotating"
bash tests/scripts/ship-check.sh; done_in

section "CDK: assertions, cdk-nag, cfn-lint, checkov"
bash cdk/scripts/test.sh; done_in

section "container image: hadolint, build, hardening, no secrets in layers"
bash tests/docker/test-image.sh; done_in

printf '\nall test suites passed in %s min %s s\n' "$(((SECONDS - TOTAL) / 60))" "$(((SECONDS - TOTAL) % 60))"
