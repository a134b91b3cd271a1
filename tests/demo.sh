#!/usr/bin/env bash
# The local demo, no AWS account needed: a throwaway PostgreSQL, moto as
# Secrets Manager, the real rotation function and the real web app, live
# rotations. Installs what it needs on first run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/scripts/install-deps.sh
cargo build --workspace --bins --locked --quiet
exec cargo run --locked --quiet -p e2e --example demo -- "$@"
