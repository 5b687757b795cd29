#!/usr/bin/env bash
# Debian packages that build and run the service image without a Docker engine
# (scripts/build_image.sh, tests/deploy/test_image_build.py). Idempotent; called by setup.sh.
#
#   buildah     builds the Dockerfile (chroot isolation, no daemon)
#   podman      runs the image in the tests
#   runc        the OCI runtime podman uses here (crun cannot set rlimits in this sandbox)
#   mmdebstrap  makes the Debian bookworm base from Debian packages (no registry needed)
#
# Not needed as root with kernel overlay or vfs storage: uidmap/fuse-overlayfs (rootless
# storage), slirp4netns/containernetworking-plugins (the tests use the host network).
set -euo pipefail
PACKAGES=(buildah podman runc mmdebstrap)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing image tools: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi
