#!/usr/bin/env bash
# Build the pulmoseg service image on a machine without a Docker engine (daemonless, as root).
#
#   scripts/build_image.sh [--tag NAME] [--refresh-base] [--no-cache]
#
# The production base (nvidia/cuda ... ubuntu24.04, Python 3.12) needs a registry this machine
# cannot reach, so the locally buildable variant starts from a Debian bookworm base made from
# Debian packages, and the Dockerfile's build arguments switch the interpreter (python3.11) and
# the lock (requirements/serve-py311.lock). GPU-less: ONNX Runtime runs on its CPU provider.
#
# Steps, each timed:
#   1. base rootfs: mmdebstrap --variant=minbase bookworm -> $PULMOSEG_IMAGE_CACHE/<suite>.tar
#      (cached; --refresh-base rebuilds it)
#   2. import it as the local image localhost/pulmoseg-base:<suite> (skipped when present)
#   3. buildah bud with chroot isolation (no daemon, no user namespaces) in a storage of its
#      own ($PULMOSEG_IMAGE_STORAGE): overlay where the kernel allows it, else vfs (every layer
#      a full copy: about 10x the disk); --layers keeps intermediate layers so a rebuild is fast
#   4. print the image size and how to run it
#
# HTTPS here may leave through an intercepting proxy whose CA the base lacks: the host's CA
# bundle is mounted read-only into every RUN step and handed to pip as PIP_CERT, so it never
# lands in a layer. --format docker keeps the HEALTHCHECK (the OCI format has none).
#
# Exit codes: 64 bad argument, 69 a tool is missing, 75 the Debian base could not be made,
# 77 not root; anything else is a failed build.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=bookworm
MIRROR=${PULMOSEG_DEBIAN_MIRROR:-http://deb.debian.org}
CACHE=${PULMOSEG_IMAGE_CACHE:-.cache/image}
TAG=localhost/pulmoseg:debian-${SUITE}
BASE_TAG=localhost/pulmoseg-base:${SUITE}
HOST_CA=${PULMOSEG_HOST_CA:-/etc/ssl/certs/ca-certificates.crt}
# A storage of its own: the machine's default one may hold another driver's data, and podman
# refuses a storage whose driver changed. tests/deploy/test_image_build.py reads the same root.
STORAGE=${PULMOSEG_IMAGE_STORAGE:-/var/lib/containers/pulmoseg}
refresh_base=0
cache_flags=(--layers)
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG=$2; shift 2 ;;
    --refresh-base) refresh_base=1; shift ;;
    --no-cache) cache_flags=(--layers --no-cache); shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "build_image.sh: unknown argument '$1' (see --help)" >&2; exit 64 ;;
  esac
done

for tool in mmdebstrap buildah; do
  command -v "$tool" >/dev/null || {
    echo "build_image.sh: '$tool' is not installed (scripts/setup_image_tools.sh installs it)" >&2
    exit 69
  }
done
if [ "$(id -u)" -ne 0 ]; then
  echo "build_image.sh: run as root (chroot isolation and mmdebstrap's root mode need it)" >&2
  exit 77
fi

# The storage driver: the one the storage already uses (recorded in $STORAGE/driver), else
# overlay if a test mount works, else vfs. PULMOSEG_STORAGE_DRIVER overrides on a new storage.
mkdir -p "$STORAGE"
driver=${PULMOSEG_STORAGE_DRIVER:-}
[ -z "$driver" ] && [ -s "$STORAGE/driver" ] && driver=$(cat "$STORAGE/driver")
if [ -z "$driver" ]; then
  driver=vfs
  probe=(buildah --root "$STORAGE/probe" --runroot "$STORAGE/probe-run" --storage-driver=overlay)
  if ctr=$("${probe[@]}" from scratch 2>/dev/null) && "${probe[@]}" mount "$ctr" >/dev/null 2>&1; then
    driver=overlay
  fi
  "${probe[@]}" rm --all >/dev/null 2>&1 || true
  rm -rf "$STORAGE/probe" "$STORAGE/probe-run"
fi
echo "$driver" > "$STORAGE/driver"
BUILDAH=(buildah --root "$STORAGE/root" --runroot "$STORAGE/run" --storage-driver="$driver")
echo "[build_image] storage $STORAGE ($driver)"
step_start=0
begin() { step_start=$(date +%s%N); echo "[build_image] $1"; }
done_step() {
  local ds=$((($(date +%s%N) - step_start) / 100000000))
  echo "[build_image] $1: $((ds / 10)).$((ds % 10)) s"
}

# 1. The Debian base rootfs (no Python: the Dockerfile installs it with apt, as in production).
mkdir -p "$CACHE"
base_tar="$CACHE/debian-${SUITE}-minbase.tar"
if [ "$refresh_base" = 1 ] || [ ! -s "$base_tar" ]; then
  begin "mmdebstrap $SUITE -> $base_tar"
  # Exit 75 (temporary failure) when the base cannot be made, e.g. no mirror: the tests skip
  # on it, while a failure of the Dockerfile's own steps fails them.
  if ! mmdebstrap --quiet --variant=minbase --mode=root --format=tar "$SUITE" "$base_tar.tmp" \
    "deb $MIRROR/debian $SUITE main" \
    "deb $MIRROR/debian ${SUITE}-updates main" \
    "deb $MIRROR/debian-security ${SUITE}-security main"; then
    rm -f "$base_tar.tmp"
    echo "build_image.sh: mmdebstrap could not make the $SUITE base from $MIRROR" >&2
    exit 75
  fi
  mv "$base_tar.tmp" "$base_tar"
  "${BUILDAH[@]}" rmi "$BASE_TAG" >/dev/null 2>&1 || true
  done_step "base rootfs ($(du -m "$base_tar" | cut -f1) MB)"
fi

# 2. The rootfs as a local image.
if ! "${BUILDAH[@]}" inspect --type image "$BASE_TAG" >/dev/null 2>&1; then
  begin "import $base_tar as $BASE_TAG"
  ctr=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" add "$ctr" "$base_tar" / >/dev/null
  "${BUILDAH[@]}" commit --quiet --rm "$ctr" "$BASE_TAG" >/dev/null
  done_step "base import"
fi

# 3. The image from the project's Dockerfile.
ca_flags=()
if [ -r "$HOST_CA" ]; then
  ca_flags=(--volume "$HOST_CA:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
fi
begin "buildah bud -> $TAG"
"${BUILDAH[@]}" bud --isolation=chroot --format=docker "${cache_flags[@]}" \
  --build-arg "BASE_IMAGE=$BASE_TAG" \
  --build-arg PYTHON=python3.11 \
  --build-arg 'PYTHON_APT_VERSION=3.11.2-*' \
  --build-arg SERVE_LOCK=requirements/serve-py311.lock \
  "${ca_flags[@]}" \
  --tag "$TAG" --file Dockerfile .
done_step "image build"

# 4. Size.
size=$("${BUILDAH[@]}" images --format '{{.Size}}' "$TAG" | head -n1)
echo "[build_image] image $TAG size $size"
echo "[build_image] run: podman --root $STORAGE/root --runroot $STORAGE/run" \
  "--storage-driver=$driver --runtime runc run --rm --network host" \
  "--ulimit nofile=1024:1024 --ulimit nproc=4096:4096 -v \$PWD/models/pulmoseg-real-ct.onnx:/models/model.onnx:ro $TAG"
