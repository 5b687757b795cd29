# syntax=docker/dockerfile:1
#
# pulmoseg inference service image (serving only: no torch, no training code).
#
# Base: the onnxruntime-gpu 1.31 wheel on PyPI is built against CUDA 13.0 (its CUDA provider
# links libcudart.so.13 / libcublas.so.13) and loads cuDNN 9 at run time, and holoscan-cu13
# needs CUDA runtime 13 and glibc >= 2.35. The CUDA 13.0 + cuDNN 9 *runtime* image on Ubuntu
# 24.04 (glibc 2.39, Python 3.12) provides exactly those libraries and no compiler toolchain.
# CUDA 13 needs an NVIDIA driver >= 580 on the GPU nodes.
#
# Pin the base by digest for a reproducible build (the digest must be read from the registry,
# which the development machines cannot reach, so the default below is the tag):
#   docker buildx imagetools inspect nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04
#   docker build --build-arg BASE_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04@sha256:<digest> .
#
# Build:  docker build -t pulmoseg:0.1.0 .
# Run:    docker run --gpus all -v /path/to/models:/models:ro -p 50051:50051 -p 9090:9090 \
#           pulmoseg:0.1.0
#
# The defaults below are the production image. scripts/build_image.sh builds a GPU-less variant
# without a Docker engine or registry: a Debian bookworm base from mmdebstrap (BASE_IMAGE),
# its python3.11 (PYTHON, PYTHON_APT_VERSION) and the lock resolved for it (SERVE_LOCK); the
# packages are the same, and ONNX Runtime then runs on its CPU provider (docs/deploy.md §2).

ARG BASE_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04
# Versions are pinned to one upstream release with an apt glob (Ubuntu 24.04: 3.12.3): the
# distributions replace package revisions in their update pockets, so an exact revision would
# stop resolving.
ARG PYTHON=python3.12
ARG PYTHON_APT_VERSION=3.12.3-*
ARG SERVE_LOCK=requirements/serve.lock

# --- python-base: the interpreter, shared by both stages so the venv's symlinks stay valid ---
FROM ${BASE_IMAGE} AS python-base
ARG PYTHON
ARG PYTHON_APT_VERSION

ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        "${PYTHON}=${PYTHON_APT_VERSION}" \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

# --- builder: install the locked serving dependencies and the service into /opt/venv ---
FROM python-base AS builder
ARG PYTHON
ARG PYTHON_APT_VERSION
ARG SERVE_LOCK
# Only for builds behind an intercepting HTTPS proxy: a CA bundle mounted into the RUN steps
# (scripts/build_image.sh), so it never lands in a layer. Empty: pip's own certificates.
ARG PIP_CERT=

RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        "${PYTHON}-venv=${PYTHON_APT_VERSION}" \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN "${PYTHON}" -m venv "${VIRTUAL_ENV}"

WORKDIR /src
# requirements/serve.lock (scripts/lock_serve.sh) pins every package of the image with hashes,
# for CPython 3.12 on x86_64 (serve-py311.lock: the same for the Debian variant); --no-deps
# installs exactly that list and nothing it would pull in (torch, CuPy and the CUDA Python
# bindings are left out on purpose, see the script).
COPY ${SERVE_LOCK} ./requirements/serve.lock
RUN pip install --no-cache-dir --no-deps --require-hashes -r requirements/serve.lock

# The service itself: the training/ folder is not in the build context, so the wheel holds
# the service alone and the `pulmoseg` command offers only serve/segment. A regular
# (non-editable) install without build isolation: the build tools come from the lock.
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install --no-cache-dir --no-deps --no-build-isolation ./

# --- runtime: interpreter + venv, no build tools, non-root ---
FROM python-base AS runtime
ARG BASE_IMAGE
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="pulmoseg" \
      org.opencontainers.image.description="Lung CT segmentation over gRPC: CT DICOM in, DICOM-SEG out (ONNX Runtime, MONAI Deploy), Prometheus metrics" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      com.nvidia.cuda.driver.min="580"

# A fixed numeric UID/GID (not 1000, which Ubuntu 24.04 images give to user "ubuntu") lets
# Kubernetes verify runAsNonRoot and lets volume permissions be planned ahead.
RUN groupadd --system --gid 10001 pulmoseg \
    && useradd --system --no-log-init --uid 10001 --gid 10001 \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin pulmoseg \
    && mkdir -p /models \
    && chown root:root /models \
    && chmod 0755 /models

COPY --from=builder /opt/venv /opt/venv
# The CUDA runtime from a pip wheel, where the lock has one (the Debian variant: Holoscan's core
# links libcudart.so.13 even on the CPU), registered with the dynamic loader. The production
# lock has none (its base image provides CUDA), and the file stays empty.
RUN find /opt/venv/lib -path '*/site-packages/nvidia/*/libcudart.so.*' -printf '%h\n' \
        > /etc/ld.so.conf.d/pulmoseg-wheels.conf \
    && ldconfig
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/pulmoseg-entrypoint
COPY --chmod=0755 docker/healthcheck.py /usr/local/bin/pulmoseg-healthcheck

# In a container the server must listen on all interfaces (the default is loopback only).
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    XDG_CACHE_HOME=/tmp/.cache \
    PULMOSEG_HOST=0.0.0.0 \
    PULMOSEG_METRICS_HOST=0.0.0.0 \
    PULMOSEG_STACK_KIB=32768 \
    HOLOSCAN_LOG_LEVEL=WARN

# Models are not baked in: mount the exported ONNX file (with its manifest metadata) here.
VOLUME ["/models"]

USER 10001:10001
WORKDIR /tmp

# 50051: gRPC (pulmoseg.v1 + grpc.health.v1 + reflection); 9090: Prometheus /metrics over HTTP;
# 11112: DICOM C-STORE listener (when the PACS bridge is enabled).
EXPOSE 50051 9090 11112

# Loading the model can take minutes on a cold node: a long start period before failures count.
HEALTHCHECK --interval=30s --timeout=10s --start-period=300s --retries=3 \
    CMD ["pulmoseg-healthcheck", "--timeout", "5"]

ENTRYPOINT ["pulmoseg-entrypoint"]
CMD ["serve", "--model", "/models/model.onnx", "--port", "50051", "--metrics-port", "9090"]
