# syntax=docker/dockerfile:1
# The Storefront node (`storefront serve`) and notifier (`storefront notify`) image.
#
#   docker build -t storefront:dev .
#   docker run -p 8080:8080 -e STOREFRONT_ADMIN_EMAIL=admin@example.com \
#       -e STOREFRONT_ADMIN_PASSWORD=change-this-password storefront:dev
#
# Stages: `planner` reduces the workspace to its dependency recipe (cargo-chef), `builder` builds
# the dependencies from that recipe alone (a layer that stays cached until Cargo.toml or
# Cargo.lock change), then the workspace; the runtime stage holds the binary and nothing else of
# the toolchain, and runs as a user without privileges.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS chef
# mimalloc builds C: gcc comes with the Rust image.
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
# Stripped: the release profile keeps line tables for profiling (291 MB; 44 MB without them).
RUN cargo build --release --locked --bin storefront \
    && install -s -D -m 0755 target/release/storefront /out/storefront

FROM ${RUNTIME_IMAGE} AS runtime
# ca-certificates: TLS to PostgreSQL, RabbitMQ, SMTP and webhooks; curl: the HEALTHCHECK.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 storefront \
    && useradd --system --uid 10001 --gid storefront --home-dir /var/lib/storefront \
        --shell /usr/sbin/nologin storefront \
    && install -d -o storefront -g storefront -m 0750 /var/lib/storefront
COPY --from=builder /out/storefront /usr/local/bin/storefront
ENV STOREFRONT_HTTP_ADDR=0.0.0.0:8080 \
    STOREFRONT_DATA_DIR=/var/lib/storefront \
    STOREFRONT_LOG__JSON=true
USER 10001:10001
WORKDIR /var/lib/storefront
VOLUME ["/var/lib/storefront"]
# 8080: HTTP API, /metrics and /admin. 7000: the cluster port (set STOREFRONT_CLUSTER__ADDR).
EXPOSE 8080 7000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/healthz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/storefront"]
CMD ["serve"]
