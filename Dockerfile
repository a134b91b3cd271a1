# The web app's container. Multi-stage: a Rust builder compiles the release binary, and a
# distroless-style runtime (glibc, libgcc, CA roots, a nonroot user; no shell, no package
# manager) runs it as UID 65532. The rotation function is not in this image: it ships as a
# Lambda zip.
#
# The build context is an allowlist (.dockerignore): the workspace manifests, the lock file,
# the sources of web-app and db-secret, and docker/stub-workspace-members.sh. Workspace
# members whose sources are not in the context (rotation-fn, sm-local, tests) get an empty
# stub crate from that script, so cargo can load the workspace and `--locked` checks the
# real Cargo.lock, while their sources never reach the image nor its hash.
#
# Base images are build arguments, pinned by version. Without registry access, build them
# locally first (docker/base-images.sh) and point the arguments at them:
#   docker build --build-arg BUILDER_IMAGE=local/rust-builder:bookworm \
#                --build-arg RUNTIME_IMAGE=local/distroless-cc:bookworm -t web-app .
# Behind a TLS-intercepting proxy, hand cargo the CA bundle as a BuildKit secret (it is
# mounted for the one RUN step and never lands in a layer):
#   DOCKER_BUILDKIT=1 docker build --secret id=cacert,src=/etc/ssl/certs/ca-certificates.crt ...
#
# Configuration is runtime-only (APP_SECRET_ID, AWS_REGION, ...; see web-app/README.md).
# No credential, secret name or secret value is ever a build argument or an ENV here.
ARG BUILDER_IMAGE=docker.io/library/rust:1.95.0-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
# Everything the allowlist admits: manifests, lock file, web-app's and db-secret's sources.
COPY . ./
RUN --mount=type=secret,id=cacert \
    --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    sh docker/stub-workspace-members.sh \
 && if [ -s /run/secrets/cacert ]; then export CARGO_HTTP_CAINFO=/run/secrets/cacert; fi \
 && cargo build --release --locked -p web-app --bin web-app \
 && cp target/release/web-app /usr/local/bin/web-app

FROM ${RUNTIME_IMAGE}
COPY --from=build /usr/local/bin/web-app /usr/local/bin/web-app
USER 65532:65532
# 8080: the public listener (load balancer). 9090: the admin listener (metrics, whoami);
# set APP_ADMIN_LISTEN_ADDR=0.0.0.0:9090 and publish it to the host's loopback only.
EXPOSE 8080 9090
# The binary probes its own /health: no shell or curl needed in the image.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/web-app", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/web-app"]
