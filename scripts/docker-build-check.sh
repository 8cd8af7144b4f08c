#!/usr/bin/env bash
# Runs the Dockerfile's build command here, so CI catches a build the image would fail on:
#   1. checks docker/Dockerfile still builds with exactly the command below;
#   2. builds the release binary with the static Swift runtime (own scratch path);
#   3. strips it, runs `--help`, and checks it needs only libraries the runtime image installs
#      (libc, libm, libstdc++, libgcc_s from bookworm-slim, libnghttp2-14).
set -euo pipefail
cd "$(dirname "$0")/.."

build_cmd='swift build -c release --product sluice --static-swift-stdlib -Xswiftc -enforce-exclusivity=unchecked'
if ! grep -qF "RUN ${build_cmd}" docker/Dockerfile; then
  echo "docker-build-check: docker/Dockerfile no longer builds with '${build_cmd}'; update this script with it" >&2
  exit 1
fi

started=$SECONDS
${build_cmd} --scratch-path .build-static
bin="$(${build_cmd} --scratch-path .build-static --show-bin-path)/sluice"
out=.build-static/sluice-stripped
strip -o "$out" "$bin"
"$out" --help > /dev/null

unexpected=$(ldd "$out" | awk '{print $1}' | grep -vE '^(linux-vdso\.so|/lib64/ld-linux-x86-64\.so|libc\.so|libm\.so|libstdc\+\+\.so|libgcc_s\.so|libnghttp2\.so|libz\.so)' || true)
if [[ -n "$unexpected" ]]; then
  echo "docker-build-check: the binary needs libraries the runtime image does not install:" >&2
  echo "$unexpected" >&2
  exit 1
fi
echo "docker-build-check: ok ($(du -h "$out" | cut -f1) stripped, $((SECONDS - started)) s)"
