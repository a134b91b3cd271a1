# Shared by the scripts in tests/scripts: messages, Debian packages (root
# needed, said plainly when missing), and the project's Python environment.
#
# Every Python tool the project uses (moto's server, the aws CLI,
# cargo-lambda and zig) lives in one virtual environment, tests/.venv, pinned:
# a stock Debian 12 python3 refuses a global `pip install` (PEP 668), and
# nothing outside the checkout is changed for them.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=$ROOT/tests/.venv
SCRIPT=${SCRIPT:-$(basename "$0" .sh)}

say() { printf '%s: %s\n' "$SCRIPT" "$*"; }
die() { printf '%s: FAILED: %s\n' "$SCRIPT" "$*" >&2; exit 1; }

# apt-get install, as root (directly, or through sudo where there is one);
# otherwise stop and say what a root user must install. Services the packages
# would start (Debian's PostgreSQL starts a cluster on 5432) are not started:
# the host keeps running what it ran before.
apt_install() {
  local root=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null ||
      die "installing $* needs root: run this as root, or first, as root: apt-get install --no-install-recommends $*"
    root=(sudo)
  fi
  say "apt-get install $* (as root${root:+, through sudo})"
  local policy=/usr/sbin/policy-rc.d placed=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# placed by %s while it installs packages: start no services\nexit 101\n' "$SCRIPT" |
      "${root[@]}" tee "$policy" >/dev/null
    "${root[@]}" chmod 755 "$policy"
    placed=1
  fi
  local status=0
  { "${root[@]}" apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive "${root[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null; } ||
    status=$?
  [ -z "$placed" ] || "${root[@]}" rm -f "$policy"
  [ "$status" -eq 0 ] || die "apt-get install $* failed (exit $status)"
}

# The project's venv, created when missing (Debian's python3 needs
# python3-venv for that).
ensure_venv() {
  [ -x "$VENV/bin/python" ] && return 0
  command -v python3 >/dev/null || apt_install python3 python3-venv
  python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
  say "python3 -m venv tests/.venv"
  python3 -m venv "$VENV"
}

# pip_install PACKAGE==VERSION...: into the venv, unless already at those versions.
pip_install() {
  ensure_venv
  local missing=() spec name version
  for spec in "$@"; do
    name=${spec%%==*} version=${spec##*==}
    name=${name%%\[*}
    [ "$("$VENV/bin/python" -m pip show "$name" 2>/dev/null | awk '/^Version:/ {print $2}')" = "$version" ] ||
      missing+=("$spec")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "pip install ${missing[*]} into tests/.venv"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${missing[@]}"
}
