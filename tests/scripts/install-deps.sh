#!/usr/bin/env bash
# Installs what the end-to-end tests and the demo run against, if missing:
# PostgreSQL 15's server binaries, openssl, curl and setpriv (Debian
# packages: needs root, says so otherwise), moto's server and the aws CLI
# (pinned, into the project's tests/.venv), and cargo-nextest (cargo install,
# into ~/.cargo/bin). Idempotent and quiet when everything is there already.
# Installing PostgreSQL starts no cluster: nothing listens on 5432 afterwards.
#
# --demo: only what the demo runs (tests/demo.sh): no cargo-nextest.
set -euo pipefail
source "$(dirname "$0")/common.sh"

demo_only=
case ${1:-} in
  --demo) demo_only=1 ;;
  "") ;;
  *) die "unknown argument $1 (the only flag is --demo)" ;;
esac

PG_BIN=/usr/lib/postgresql/15/bin
MOTO_VERSION=5.2.1
AWSCLI_VERSION=1.45.11
NEXTEST_VERSION=0.9.143

apt_packages=()
[ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/postgres" ] && command -v pgbench >/dev/null ||
  apt_packages+=(postgresql-15 postgresql-client-15)
command -v openssl >/dev/null || apt_packages+=(openssl)
command -v curl >/dev/null || apt_packages+=(curl ca-certificates)
command -v setpriv >/dev/null || apt_packages+=(util-linux)
[ ${#apt_packages[@]} -eq 0 ] || apt_install "${apt_packages[@]}"
# initdb refuses to run as root; the throwaway clusters run as this user.
if ! id postgres >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] || die "the tests run PostgreSQL as the system user 'postgres', which is missing: as root, useradd --system postgres"
  useradd --system --home /var/lib/postgresql --shell /bin/bash postgres
fi

pip_install "moto[server]==$MOTO_VERSION" "awscli==$AWSCLI_VERSION"
"$VENV/bin/python" -c 'import moto, flask' || die "moto's server did not install into tests/.venv"

[ -z "$demo_only" ] || exit 0
if ! cargo nextest --version >/dev/null 2>&1; then
  say "cargo install cargo-nextest@$NEXTEST_VERSION"
  cargo install --locked -q "cargo-nextest@$NEXTEST_VERSION"
fi
