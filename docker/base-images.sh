#!/usr/bin/env bash
# Builds the Dockerfile's base images locally, for machines that reach no container
# registry (CI, this project's build hosts). On a machine with registry access, skip
# this and use the Dockerfile's default ARGs.
#
#   local/debian:bookworm          debootstrap --variant=minbase, from the Debian mirror apt uses
#   local/rust-builder:bookworm    that + gcc + libc6-dev + the host's Rust toolchain
#   local/distroless-cc:bookworm   distroless/cc-like: libc6 + libgcc-s1 + CA roots,
#                                  passwd/group with nonroot (65532); no shell, no apt
#
# Needs: a running docker daemon (DOCKER_HOST honoured), debootstrap, apt-get, rustup.
# Writes into WORK_DIR (default: target/docker-base-images in this checkout, which git
# ignores), where the debootstrap tarball is kept between runs, and into the daemon's images;
# nowhere else, but for util-linux's empty /run/mount, which the mounts debootstrap makes
# inside its chroot can create (tests/docker/test-image.sh removes it again).
# DOCKER_BUILD_NETWORK (e.g. host) is passed to `docker build --network` for the builder's
# apt-get, for a daemon without a bridge network (tests/docker/test-image.sh runs one).
set -euo pipefail

WORK_DIR=${WORK_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/docker-base-images}
# Debian's client (BuildKit built in); a client without buildx fails with DOCKER_BUILDKIT=1.
DOCKER=${DOCKER:-docker}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BUILD_NETWORK=()
[[ -z "${DOCKER_BUILD_NETWORK:-}" ]] || BUILD_NETWORK=(--network "$DOCKER_BUILD_NETWORK")
mkdir -p "$WORK_DIR"
log() { printf '[base-images] %s\n' "$*" >&2; }

have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

# --- local/debian:bookworm ---------------------------------------------------------------
if ! have_image local/debian:bookworm; then
  if [[ ! -s "$WORK_DIR/bookworm-minbase.tar" ]]; then
    log "debootstrap bookworm (minbase)"
    rm -rf "$WORK_DIR/rootfs"
    debootstrap --variant=minbase bookworm "$WORK_DIR/rootfs" "$MIRROR" >"$WORK_DIR/debootstrap.log" 2>&1 \
      || { tail -20 "$WORK_DIR/debootstrap.log" >&2; exit 1; }
    rm -rf "$WORK_DIR/rootfs/var/cache/apt/archives/"*.deb "$WORK_DIR/rootfs/var/lib/apt/lists/"*
    tar -C "$WORK_DIR/rootfs" -cf "$WORK_DIR/bookworm-minbase.tar" .
    rm -rf "$WORK_DIR/rootfs"
  fi
  log "import local/debian:bookworm"
  "$DOCKER" import "$WORK_DIR/bookworm-minbase.tar" local/debian:bookworm >/dev/null
fi

# --- local/rust-builder:bookworm -----------------------------------------------------------
if ! have_image local/rust-builder:bookworm; then
  toolchain=$(dirname "$(dirname "$(rustup which cargo)")")
  ctx="$WORK_DIR/builder-context"
  rm -rf "$ctx" && mkdir -p "$ctx/rust"
  log "copy the host toolchain ($(rustc --version))"
  cp -a "$toolchain/bin" "$toolchain/lib" "$ctx/rust/"
  cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM local/debian:bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY rust /usr/local/rust
ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CARGO_HOME=/usr/local/cargo
DOCKERFILE
  log "build local/rust-builder:bookworm"
  "$DOCKER" build -q "${BUILD_NETWORK[@]}" -t local/rust-builder:bookworm "$ctx" >/dev/null
  rm -rf "$ctx"
fi

# --- local/distroless-cc:bookworm ----------------------------------------------------------
if ! have_image local/distroless-cc:bookworm; then
  rootfs="$WORK_DIR/distroless"
  rm -rf "$rootfs" "$WORK_DIR/debs" && mkdir -p "$rootfs" "$WORK_DIR/debs"
  log "unpack libc6, libgcc-s1"
  # Into the current directory only: no binary package cache rebuilt under /var/cache/apt,
  # and root downloads itself (the _apt user may not write into WORK_DIR).
  (cd "$WORK_DIR/debs" && apt-get download -qq -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= \
     -o APT::Sandbox::User=root libc6 libgcc-s1 >/dev/null)
  for deb in "$WORK_DIR"/debs/*.deb; do dpkg-deb -x "$deb" "$rootfs"; done
  # What a static-ish Rust binary never needs: docs, locales, iconv modules, ldconfig.
  rm -rf "$rootfs/usr/share" "$rootfs/usr/lib/x86_64-linux-gnu/gconv" "$rootfs/sbin" \
         "$rootfs/usr/sbin" "$rootfs/usr/bin" "$rootfs/etc/ld.so.conf.d" "$rootfs/usr/libexec"
  mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp" "$rootfs/home/nonroot"
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
  chmod 1777 "$rootfs/tmp"
  chown 65532:65532 "$rootfs/home/nonroot"
  log "import local/distroless-cc:bookworm"
  tar -C "$rootfs" -c . | "$DOCKER" import -c 'USER 65532:65532' - local/distroless-cc:bookworm >/dev/null
  rm -rf "$rootfs" "$WORK_DIR/debs"
fi
"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^local/' >&2
