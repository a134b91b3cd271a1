#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what it needs, then runs
# formatting and lint gates, every Rust unit and end-to-end test (real
# PostgreSQL, moto, the real binaries), the CDK tests (assertions, cdk-nag,
# cfn-lint, checkov) and the container image tests (real Docker engine).
set -euo pipefail
cd "$(dirname "$0")/.."

section() { printf '\n==> %s\n' "$*"; SECONDS=0; }
done_in() { printf '    (%ss)\n' "$SECONDS"; }

section "system packages (PostgreSQL 15, moto, cargo-nextest)"
bash tests/scripts/install-deps.sh; done_in

section "cargo fmt --check"
cargo fmt --all --check; done_in

section "build the binaries the end-to-end tests run (bootstrap, web-app)"
cargo build --workspace --bins --locked; done_in

section "clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings; done_in

section "Rust unit and end-to-end tests"
cargo nextest run --workspace --locked --no-fail-fast; done_in

section "CDK: assertions, cdk-nag, cfn-lint, checkov"
bash cdk/scripts/test.sh; done_in

section "container image: hadolint, build, hardening, no secrets in layers"
bash tests/docker/test-image.sh; done_in

printf '\nall test suites passed\n'
