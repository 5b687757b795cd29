#!/usr/bin/env bash
# The built OHIF viewer (the dist/ folder that the @ohif/app npm package ships) into
# viewer/ohif/, pinned by version and by the registry's sha512 integrity.
#
# Why not an npm dependency in package.json: @ohif/app 3.13.2 declares dependencies that the
# registry does not hold at those versions (e.g. @ohif/i18n@3.13.2), so `npm ci` of it cannot
# resolve. Its prebuilt dist/ needs none of them, so only the tarball is fetched (npm pack), its
# digest checked against the pin below, and dist/ unpacked. Idempotent: a matching
# viewer/ohif/VERSION skips everything.
set -euo pipefail
cd "$(dirname "$0")"

OHIF_VERSION="3.13.2"
OHIF_INTEGRITY="sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="

if [ -f ohif/VERSION ] && [ "$(cat ohif/VERSION)" = "$OHIF_VERSION" ] && [ -f ohif/index.html ]; then
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@ohif/app@${OHIF_VERSION}" >/dev/null)
tarball="$work/ohif-app-${OHIF_VERSION}.tgz"
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$actual" != "$OHIF_INTEGRITY" ]; then
  echo "[fetch_ohif] @ohif/app@${OHIF_VERSION}: integrity $actual does not match the pin $OHIF_INTEGRITY" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$work" package/dist
rm -rf ohif
mv "$work/package/dist" ohif
echo "$OHIF_VERSION" > ohif/VERSION
echo "[fetch_ohif] OHIF viewer ${OHIF_VERSION} in viewer/ohif"
