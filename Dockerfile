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
#
# The binary is the stripped release build. For a crash report, build the same commit with
# line tables: `docker build --build-arg CARGO_PROFILE=release-debug -t vigil:debug .` (README,
# "Release build and symbols").
#
# The test suite reaches no image registry: tests/it/container_image.rs builds the runtime stage
# below as it is (with the global ARGs) on a Debian base made from Debian's packages
# (scripts/test-image-base.sh, passed as RUNTIME_BASE) and with the release binary that
# scripts/test builds in place of the build stage, then runs it (README, "Container image").

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
# The runtime stage's base.
ARG RUNTIME_BASE=debian:${DEBIAN_RELEASE}-slim
# The Cargo profile of the binary: release (stripped) or release-debug (with line tables).
ARG CARGO_PROFILE=release

# --- build -----------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
ARG CARGO_PROFILE
WORKDIR /src
# The whole context (see .dockerignore): examples/vigil.yml is compiled in as the default
# config, and Cargo reads every target the manifest declares.
COPY . .
# Cache mounts keep the registry and target/ between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile "${CARGO_PROFILE}" --locked --bin vigil \
    && install -m 0755 "target/${CARGO_PROFILE}/vigil" /usr/local/bin/vigil

# --- runtime ---------------------------------------------------------------------------------
FROM ${RUNTIME_BASE}
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
