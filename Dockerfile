# syntax=docker/dockerfile:1
#
# pulmoseg inference service image.
#
# Base: the onnxruntime-gpu 1.31 wheel on PyPI is built against CUDA 13.0 (its CUDA provider
# links libcudart.so.13 / libcublas.so.13) and loads cuDNN 9 at run time, and holoscan-cu13
# needs CUDA runtime 13 and glibc >= 2.35. The CUDA 13.0 + cuDNN 9 *runtime* image on Ubuntu
# 24.04 (glibc 2.39, Python 3.12) provides exactly those libraries and no compiler toolchain.
#
# Build:  docker build -t pulmoseg:0.1.0 .
# Run:    docker run --gpus all -v /path/to/models:/models:ro -p 50051:50051 -p 9090:9090 \
#           pulmoseg:0.1.0

ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# --- python-base: the interpreter, shared by both stages so the venv's symlinks stay valid ---
FROM ${CUDA_IMAGE} AS python-base

ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Versions are pinned to the Python 3.12.3 series of Ubuntu 24.04 with an apt glob: Ubuntu
# replaces point releases in noble-updates, so an exact revision would stop resolving.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.12=3.12.3-* \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

# --- builder: resolve and install every Python dependency into /opt/venv ---
FROM python-base AS builder

RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.12-venv=3.12.3-* \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python3.12 -m venv "${VIRTUAL_ENV}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
# The serve-only install: the [serve] extra, no torch, no MONAI core and no training code (the
# training/ folder is not in the build context, so the wheel holds the service alone and the
# `pulmoseg` command offers only serve/segment; its training subcommands say what to install).
# A regular (non-editable) install: the runtime stage copies only /opt/venv, not /src.
# onnxruntime-gpu is pinned here because its wheel's CUDA major must match the base image.
RUN pip install --no-cache-dir "./[serve]" onnxruntime-gpu==1.31.1

# --- runtime: interpreter + venv, no build tools, non-root ---
FROM python-base AS runtime

# A fixed numeric UID/GID (not 1000, which Ubuntu 24.04 images give to user "ubuntu") lets
# Kubernetes verify runAsNonRoot and lets volume permissions be planned ahead.
RUN groupadd --system --gid 10001 pulmoseg \
    && useradd --system --no-log-init --uid 10001 --gid 10001 \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin pulmoseg \
    && mkdir -p /models \
    && chown root:root /models \
    && chmod 0755 /models

COPY --from=builder /opt/venv /opt/venv

# In a container the server must listen on all interfaces (the default is loopback only).
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    XDG_CACHE_HOME=/tmp/.cache \
    PULMOSEG_HOST=0.0.0.0 \
    PULMOSEG_METRICS_HOST=0.0.0.0 \
    HOLOSCAN_LOG_LEVEL=WARN

# Models are not baked in: mount the exported ONNX file (with its manifest metadata) here.
VOLUME ["/models"]

USER 10001:10001
WORKDIR /tmp

# 50051: gRPC (pulmoseg.v1 + grpc.health.v1 + reflection); 9090: Prometheus /metrics over HTTP.
EXPOSE 50051 9090

ENTRYPOINT ["pulmoseg"]
CMD ["serve", "--model", "/models/model.onnx", "--port", "50051", "--metrics-port", "9090"]
