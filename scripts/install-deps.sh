#!/usr/bin/env bash
# Installs what building and testing Sluice needs, when it is missing. Safe to run again.
#   Debian packages: libnghttp2-dev (HTTP/2), curl and nghttp2-client (test clients),
#                    nginx-light (the e2e test's comparison target), openssl (the TLS tests'
#                    certificates and `s_client` handshakes).
#   PyPI: pytest (the e2e runner), h2 (scripted HTTP/2 client), grpcio (gRPC client and server for
#         the h2c upstream tests), websockets >= 13 (WebSocket client and app of the tunnel tests; its
#         asyncio API; Debian 12's python3-websockets is 10.4, too old), httpx[http2] (an HTTP/2 and
#         HTTP/1.1 client over TLS with ALPN, for the TLS tests).
# Usage: scripts/install-deps.sh [--bench]   (--bench adds wrk, haproxy and matplotlib)
set -euo pipefail

apt_packages=(libnghttp2-dev nghttp2-client curl nginx-light openssl python3 pkg-config)
# PACKAGE or PACKAGE:IMPORT_NAME or PACKAGE:IMPORT_NAME:MIN_MAJOR_VERSION
pip_modules=(pytest h2 grpcio:grpc websockets:websockets:13 httpx[http2]:httpx)
if [[ "${1:-}" == "--bench" ]]; then
  apt_packages+=(wrk haproxy)
  pip_modules+=(matplotlib)
fi

missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "install-deps: apt-get install ${missing[*]}"
  sudo=""
  [[ "$(id -u)" == 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

for entry in "${pip_modules[@]}"; do
  IFS=: read -r package module min_major <<<"${entry}"
  module="${module:-$package}"
  check="import ${module}"
  spec="${package}"
  if [[ -n "${min_major}" ]]; then
    check+="; import sys; sys.exit(int(${module}.__version__.split('.')[0]) < ${min_major})"
    spec="${package}>=${min_major}"
  fi
  if ! python3 -c "${check}" 2>/dev/null; then
    echo "install-deps: pip install ${spec}"
    python3 -m pip install --quiet --disable-pip-version-check --upgrade "${spec}"
  fi
done

if ! command -v swift >/dev/null 2>&1; then
  echo "install-deps: swift is not on PATH; Sluice needs Swift 6.2 or later (https://swift.org/install)" >&2
  exit 1
fi
