# syntax=docker/dockerfile:1
#
# vigil's container image: a Rust build stage and a small Debian runtime, running as a
# non-root user.
#
#   docker build -t vigil:local .
#   docker run --rm -p 9430:9430 vigil:local
#
# The same image runs the exporter (the default command) and the receiver
# (`vigil receiver --config /etc/vigil/vigil.yml --web.listen-address :9431`).
# Not built in vigil's own test environment, which reaches no image registry: the Dockerfile
# is written to work, but only `docker-compose config` has checked the stack that uses it.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# --- build -----------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
WORKDIR /src
# The whole context (see .dockerignore): examples/vigil.yml is compiled in as the default
# config, and Cargo reads every target the manifest declares.
COPY . .
# Cache mounts keep the registry and target/ between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin vigil \
    && install -m 0755 target/release/vigil /usr/local/bin/vigil

# --- runtime ---------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim
# ca-certificates: TLS probes verify against the system roots by default.
# curl: the compose health checks, and "does the target answer from here?" in the runbook.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 vigil \
    && useradd --system --uid 10001 --gid vigil --home-dir /var/lib/vigil \
       --shell /usr/sbin/nologin vigil \
    && mkdir -p /etc/vigil /var/lib/vigil \
    && chown vigil:vigil /var/lib/vigil
COPY --from=builder /usr/local/bin/vigil /usr/local/bin/vigil
COPY examples/vigil.yml /etc/vigil/vigil.yml
# State that must survive a restart lives here (levels and since when, heartbeats, restart
# totals, the history store; the receiver's cooldowns, budgets and audit log): mount a volume,
# or a restart of the container ends every incident and starts it again.
VOLUME ["/var/lib/vigil"]
WORKDIR /var/lib/vigil
USER 10001:10001
EXPOSE 9430
CMD ["vigil", "run", "--config", "/etc/vigil/vigil.yml", "--storage.path", "/var/lib/vigil"]
