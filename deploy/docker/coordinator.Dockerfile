# syntax=docker/dockerfile:1
#
# pastiche-coordinator: it never links libtorch, so a plain Rust build on a small,
# shell-less runtime (distroless cc: glibc, libgcc, CA certificates, user `nonroot`).
#
#   docker build -f deploy/docker/coordinator.Dockerfile -t pastiche-coordinator:0.1.0 .
#   docker run --rm -p 50051:50051 -p 9090:9090 -v pastiche-state:/var/lib/pastiche \
#     -e PASTICHE_TOKEN=... pastiche-coordinator:0.1.0
#
# Probes: the image has no shell or curl, so no HEALTHCHECK; probe it from outside:
#   - gRPC health (grpc.health.v1, unauthenticated) on 50051: Kubernetes `grpc: {port: 50051}`,
#     or `grpcurl -plaintext HOST:50051 grpc.health.v1.Health/Check`;
#   - HTTP GET /healthz on the metrics port 9090 (use this one when gRPC is served with TLS,
#     which Kubernetes' gRPC probe cannot speak).
ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
COPY . .
# No libtorch is needed, but .cargo/config.toml names one; nothing in this package
# reads it. Only the coordinator is built.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p pastiche-coordinator \
 && mkdir -p /out /out/state \
 && cp target/release/pastiche-coordinator /out/

# gcr.io/distroless/cc-debian12 matches the bookworm builder's glibc. `:nonroot` runs
# as uid/gid 65532. Distroless publishes no versioned tags: to freeze it, append the
# digest your registry resolves (`...:nonroot@sha256:<digest>`).
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="pastiche-coordinator" \
      org.opencontainers.image.description="Pastiche render-farm coordinator" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
COPY --from=builder /out/pastiche-coordinator /usr/local/bin/pastiche-coordinator
# The state directory, owned by the runtime user; mount a volume here to keep jobs
# across restarts (the SQLite database and its -wal/-shm files live side by side).
COPY --from=builder --chown=65532:65532 /out/state /var/lib/pastiche
ENV PASTICHE_LISTEN=0.0.0.0:50051 \
    PASTICHE_METRICS_LISTEN=0.0.0.0:9090 \
    PASTICHE_DB=/var/lib/pastiche/state.db \
    PASTICHE_LOG_FORMAT=json
VOLUME ["/var/lib/pastiche"]
# 50051: gRPC (workers, CLI, grpc.health.v1); 9090: /metrics and /healthz over HTTP.
EXPOSE 50051 9090
USER 65532:65532
WORKDIR /var/lib/pastiche
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/pastiche-coordinator"]
