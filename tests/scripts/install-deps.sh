#!/usr/bin/env bash
# Installs what the end-to-end tests and the demo run against, if missing:
# PostgreSQL 15's server binaries, moto's server (the Secrets Manager
# emulator), the openssl and curl CLIs, and cargo-nextest. Idempotent and
# quiet when everything is there already.
set -euo pipefail

PG_BIN=/usr/lib/postgresql/15/bin
MOTO_VERSION=5.2.1
AWSCLI_VERSION=1.45.11
NEXTEST_VERSION=0.9.143

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_packages=()
[ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/postgres" ] && command -v pgbench >/dev/null || apt_packages+=(postgresql-15 postgresql-client-15)
command -v openssl >/dev/null || apt_packages+=(openssl)
command -v curl >/dev/null || apt_packages+=(curl ca-certificates)
command -v setpriv >/dev/null || apt_packages+=(util-linux)
command -v aws >/dev/null || python3 -c 'import ensurepip' 2>/dev/null || apt_packages+=(python3-venv)
if [ ${#apt_packages[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${apt_packages[*]}"
  as_root apt-get update -qq
  # The package's post-install may start a cluster on 5432; the tests never use it.
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi
id postgres >/dev/null 2>&1 || as_root useradd --system --home /var/lib/postgresql --shell /bin/bash postgres

if ! command -v moto_server >/dev/null || ! python3 -c 'import moto, flask' 2>/dev/null; then
  echo "install-deps: pip install moto[server]==$MOTO_VERSION"
  python3 -m pip install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
  # pyenv only finds a new console script after a rehash.
  if command -v pyenv >/dev/null; then pyenv rehash; fi
  command -v moto_server >/dev/null || { echo "install-deps: moto_server is not on PATH after pip install" >&2; exit 1; }
fi

# The sm-local tests drive the real aws CLI (v1). A venv, because Debian's own
# python3 refuses a global pip install.
if ! command -v aws >/dev/null; then
  echo "install-deps: awscli==$AWSCLI_VERSION into /opt/awscli (a venv), linked as /usr/local/bin/aws"
  as_root python3 -m venv /opt/awscli
  as_root /opt/awscli/bin/pip install -q --disable-pip-version-check "awscli==$AWSCLI_VERSION"
  as_root ln -sf /opt/awscli/bin/aws /usr/local/bin/aws
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "install-deps: cargo install cargo-nextest@$NEXTEST_VERSION"
  cargo install --locked -q "cargo-nextest@$NEXTEST_VERSION"
fi
