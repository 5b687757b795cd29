# syntax=docker/dockerfile:1
#
# pulmoseg training image (`training.image` of the Helm chart: the training API pod, the
# PyTorchJob / Indexed Job workers): the serving image plus torch, MONAI and the training
# package, so `pulmoseg serve` with the TrainingService on and `pulmoseg train` both run.
#
# The root .dockerignore keeps training/ out of the serving image's context; this file has its
# own allow-list, docker/train.Dockerfile.dockerignore (BuildKit reads <Dockerfile>.dockerignore;
# scripts/build_image.sh --train passes it to buildah as --ignorefile).
#
#   docker build -t pulmoseg:0.1.0 .
#   docker build -f docker/train.Dockerfile --build-arg SERVE_IMAGE=pulmoseg:0.1.0 \
#       -t pulmoseg-train:0.1.0 .
#
# requirements/train.lock (scripts/lock_serve.sh) pins the serving packages at the versions of
# serve.lock plus the [train] extra, torch 2.14 with its CUDA 13 wheels, with hashes, for the
# production base (CPython 3.12, glibc 2.39). The Debian variant of scripts/build_image.sh
# (CPython 3.11) has no training lock: build this image on the production base.

ARG SERVE_IMAGE=pulmoseg:0.1.0
ARG TRAIN_LOCK=requirements/train.lock

FROM ${SERVE_IMAGE}
ARG TRAIN_LOCK
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="pulmoseg-train" \
      org.opencontainers.image.description="pulmoseg training: torch, MONAI, the training package and the TrainingService" \
      org.opencontainers.image.version="${VERSION}"

USER 0:0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# Packages already installed from serve.lock at the same version are skipped; --no-deps installs
# exactly the lock.
COPY ${TRAIN_LOCK} ./requirements/train.lock
RUN pip install --no-cache-dir --no-deps --require-hashes -r requirements/train.lock
# The package again, now with training/ (its entry points register the training subcommands).
COPY pyproject.toml README.md ./
COPY service ./service
COPY training ./training
RUN pip install --no-cache-dir --no-deps --no-build-isolation ./ \
    && rm -rf /src

USER 10001:10001
WORKDIR /tmp
