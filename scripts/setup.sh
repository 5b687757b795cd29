#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: Debian tools the tests use, a virtual
# environment at .venv, CPU torch first (a plain "torch" requirement would pull a
# multi-GB CUDA build), then the project with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

# orthanc + orthanc-dicomweb: the PACS the gateway tests talk to (tests/service/pacs).
# prometheus: promtool checks the alert rules, and the server scrapes pulmoseg in a test.
# postgresql: the records and study-storage tests start a private server (tests/postgres_server.py;
# initdb + pg_ctl in a temp folder, no system service needed).
DEBIAN_PACKAGES=(dicom3tools dcmtk orthanc orthanc-dicomweb prometheus postgresql)
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# tests/viewer: pulmoseg's SEG/SR opened in the OHIF viewer in headless Chromium (Debian
# chromium + chromium-driver) and parsed in node with OHIF's libraries (Debian nodejs/npm, only
# when no node is on PATH). A failed install is reported, not fatal: those tests then skip.
VIEWER_PACKAGES=(chromium chromium-driver)
command -v node >/dev/null 2>&1 || VIEWER_PACKAGES+=(nodejs npm)
viewer_missing=()
for pkg in "${VIEWER_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || viewer_missing+=("$pkg")
done
if [ ${#viewer_missing[@]} -gt 0 ]; then
  echo "[setup] installing Debian packages for the viewer tests: ${viewer_missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
      --no-install-recommends "${viewer_missing[@]}" >/dev/null; } \
    || echo "[setup] could not install ${viewer_missing[*]}: tests/viewer will skip"
fi
# viewer/package-lock.json pins dcmjs and @cornerstonejs/adapters at OHIF 3.13.2's versions;
# npm ci runs again only when the lock changed. viewer/fetch_ohif.sh fetches the built viewer.
if command -v npm >/dev/null 2>&1; then
  lock_sum="$(sha256sum viewer/package-lock.json | cut -d' ' -f1)"
  if [ "$(cat viewer/node_modules/.pulmoseg-lock 2>/dev/null)" != "$lock_sum" ]; then
    echo "[setup] npm ci in viewer/"
    (cd viewer && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) \
      && echo "$lock_sum" > viewer/node_modules/.pulmoseg-lock
  fi
  bash viewer/fetch_ohif.sh || echo "[setup] viewer/fetch_ohif.sh failed: the OHIF browser test will fail"
else
  echo "[setup] npm not found: viewer/ not installed, tests/viewer will skip"
fi

# buildah, podman, runc, mmdebstrap: the service image is built and run in the suite
# (tests/deploy/test_image_build.py, about 2.5 min from a clean machine); see the script.
bash scripts/setup_image_tools.sh

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PYTHON" -m venv .venv
fi
VPIP=".venv/bin/python -m pip"
$VPIP install -q --upgrade pip
if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  echo "[setup] installing torch==2.13.0 (CPU build)"
  $VPIP install -q "torch==2.13.0"
fi
echo "[setup] installing pulmoseg with serve, train and test extras"
$VPIP install -q -e ".[serve,train,test]"
# checkov pins packaging<24, which holoscan-cli and pytest cannot live with: it gets its own
# environment under .venv/tools (tests/deploy/test_helm_validation.py runs it from there).
if [ ! -x .venv/tools/checkov/bin/checkov ]; then
  echo "[setup] installing checkov into .venv/tools/checkov"
  "$PYTHON" -m venv .venv/tools/checkov
  .venv/tools/checkov/bin/python -m pip install -q "checkov==3.3.30"
fi
echo "[setup] done: $(.venv/bin/python -c 'import torch, onnxruntime; print("torch", torch.__version__, "| onnxruntime", onnxruntime.__version__)')"
