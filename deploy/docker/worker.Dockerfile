# syntax=docker/dockerfile:1
#
# pastiche-worker (and the `pastiche` CLI) with CUDA, on the official PyTorch image.
#
#   docker build -f deploy/docker/worker.Dockerfile -t pastiche-worker:0.1.0 .
#   docker run --rm --gpus all -e PASTICHE_COORDINATOR=http://coord:50051 \
#     -e PASTICHE_STORE=s3://bucket/results -e PASTICHE_TOKEN=... pastiche-worker:0.1.0 --gpus all
#
# libtorch is the base image's own torch (site-packages/torch): there is no second
# copy. Its version MUST match the pinned tch crate: tch 0.24.0 expects torch 2.11.0
# (Cargo.toml, scripts/setup.sh). Move PYTORCH_VERSION, tch and setup.sh's
# TORCH_VERSION together; torch-sys refuses to build against any other version.
#
# The tags are the official pytorch/pytorch scheme, <torch>-cuda<X.Y>-cudnn<N>-{runtime,devel}.
# CUDA 12.8 runs on drivers >= 570 and still supports Volta; pass
# --build-arg PYTORCH_CUDA=cuda13.0-cudnn9 for the CUDA 13 build (drivers >= 580).
ARG PYTORCH_VERSION=2.11.0
ARG PYTORCH_CUDA=cuda12.8-cudnn9
# The Rust toolchain the builder compiles with (>= the workspace's rust-version).
ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-slim-bookworm AS rust

# ---------------------------------------------------------------------------
# Builder: the -devel image of the same torch, with a Rust toolchain copied in.
FROM pytorch/pytorch:${PYTORCH_VERSION}-${PYTORCH_CUDA}-devel AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive
# A C++ compiler for torch-sys's libtch wrapper and the bundled SQLite. Versions are
# not pinned: Ubuntu's archive drops old ones; the base image tag is the pin.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ pkg-config ca-certificates \
 && rm -rf /var/lib/apt/lists/*

ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:$PATH
COPY --from=rust /usr/local/rustup /usr/local/rustup
COPY --from=rust /usr/local/cargo /usr/local/cargo

# As scripts/setup.sh does with .deps/libtorch: one link to the image's torch package,
# so LIBTORCH and the binaries' rpath (/opt/libtorch/lib, added by torch-sys and
# engine/build.rs) name the same path in the builder and in the runtime image.
# LIBTORCH from the environment wins over .cargo/config.toml's .deps/libtorch.
RUN torch_dir=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))') \
 && test -f "$torch_dir/lib/libtorch_cuda.so" \
 && ln -s "$torch_dir" /opt/libtorch
ENV LIBTORCH=/opt/libtorch

WORKDIR /src
COPY . .
# `cuda` links libtorch_cuda (engine/build.rs keeps it past --as-needed).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release --features cuda -p pastiche-worker -p pastiche-cli \
 && mkdir -p /out \
 && cp target/release/pastiche-worker target/release/pastiche /out/

# ---------------------------------------------------------------------------
# Runtime: the -runtime image of the same torch and CUDA; only the two binaries added.
FROM pytorch/pytorch:${PYTORCH_VERSION}-${PYTORCH_CUDA}-runtime AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG PYTORCH_VERSION
LABEL org.opencontainers.image.title="pastiche-worker" \
      org.opencontainers.image.description="Pastiche render-farm worker and CLI (CUDA, libtorch ${PYTORCH_VERSION})" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"

# The same link as in the builder: the binaries' rpath is /opt/libtorch/lib.
RUN torch_dir=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))') \
 && ln -s "$torch_dir" /opt/libtorch \
 && groupadd --system --gid 10001 pastiche \
 && useradd --system --uid 10001 --gid pastiche --home-dir /home/pastiche --create-home \
      --shell /usr/sbin/nologin pastiche

COPY --from=builder /out/pastiche-worker /out/pastiche /usr/local/bin/
# Fail the build, not the first pod, when a library does not resolve (the CUDA driver,
# libcuda.so.1, is loaded lazily and comes from the host at run time).
RUN ! ldd /usr/local/bin/pastiche-worker /usr/local/bin/pastiche | grep 'not found' \
 && pastiche-worker --version && pastiche --version

# 9091: metrics and /healthz (with --gpus all, child i serves on 9091+i). The worker
# only dials out to the coordinator's gRPC port (50051); it listens on nothing else.
ENV PASTICHE_METRICS_LISTEN=0.0.0.0:9091 \
    PASTICHE_LOG_FORMAT=json \
    HOME=/home/pastiche \
    CUDA_CACHE_PATH=/tmp/.nv/ComputeCache
EXPOSE 9091
USER 10001:10001
WORKDIR /home/pastiche
# The image has python3 (no curl): GET /healthz on the metrics port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9091/healthz', timeout=4)"]
ENTRYPOINT ["pastiche-worker"]
