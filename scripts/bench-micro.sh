#!/usr/bin/env bash
# Sluice's micro-benchmarks (the nested package in Benchmarks/, ordo-one/benchmark): builds them in
# release mode, runs them (time, throughput and mallocs per operation), then checks the mallocs
# against the thresholds checked in under Benchmarks/Thresholds/. Exits non-zero when a benchmark
# allocates more than its threshold allows, or when anything fails to build or run.
#
# Usage: scripts/bench-micro.sh                      build, run, check
#        scripts/bench-micro.sh --update-thresholds  build, run, re-record Benchmarks/Thresholds/
#        scripts/bench-micro.sh --check-only         build, check (skips the table run)
#   Extra arguments go to both `swift package benchmark` calls, e.g. --filter 'HeaderRules.*'.
#
# Needs Swift 6.3 or later and nothing else: with the benchmark package's `MallocInterposer`
# trait the malloc counts come from its own LD_PRELOAD interposer, not from jemalloc, so no
# libjemalloc-dev (or any other Debian package) is required. From a fresh clone on 2 cores the whole
# script takes about 7.5 minutes (5.5 of them the release build of benchmark, swift-nio and
# SluiceProxy); afterwards 1.5 to 2 minutes (the run and the check each take 25-45 s).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/Benchmarks"

mode=check
if [[ "${1:-}" == "--update-thresholds" || "${1:-}" == "--check-only" ]]; then
  mode="${1#--}"
  shift
fi

started=$SECONDS
phase_started=$SECONDS
timings=()
phase_done() { # phase_done NAME: records how long the phase since the last call took
  timings+=("$1 $((SECONDS - phase_started))s")
  phase_started=$SECONDS
}
report_time() {
  local status=$?
  echo "bench-micro: ${timings[*]:-}; total $((SECONDS - started))s (exit $status)"
}
trap report_time EXIT

if ! command -v swift >/dev/null 2>&1; then
  echo "bench-micro: swift is not on PATH; the benchmarks need Swift 6.3 or later" >&2
  exit 1
fi
version="$(swift --version 2>&1 | sed -n 's/.*Swift version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | head -1)"
read -r major minor <<<"${version:-0 0}"
if ((major < 6 || (major == 6 && minor < 3))); then
  # Before 6.3 the benchmark package counts mallocs with jemalloc (trait `Jemalloc`, package
  # ordo-one/package-jemalloc), which this package does not enable.
  echo "bench-micro: Swift ${major}.${minor} found; the benchmarks need 6.3 or later (MallocInterposer)" >&2
  exit 1
fi

# The build first, on its own, so CI logs show its progress (the plugin prints nothing while it
# builds). The plugin then finds everything up to date in the same .build/.
echo "== bench-micro: swift build -c release (Benchmarks/)"
swift build -c release
phase_done build

run_benchmarks() { # run_benchmarks ARGS...: `swift package benchmark` with the output kept in $log
  log="$(mktemp)"
  set +e
  swift package "$@" 2>&1 | tee "$log"
  local status=${PIPESTATUS[0]}
  set -e
  return "$status"
}

case "$mode" in
  update-thresholds)
    echo "== bench-micro: recording mallocCountTotal thresholds in Benchmarks/Thresholds/"
    # Only mallocs are recorded (`--metric`): a thresholds file lists the metrics to check, and
    # timings on a shared 2-core machine are too noisy to fail a build on.
    (($#)) || rm -f Thresholds/*.p90.json # a full update drops the files of renamed benchmarks
    run_benchmarks --allow-writing-to-package-directory benchmark thresholds update \
      --metric mallocCountTotal --no-progress "$@"
    phase_done update
    exit 0
    ;;
  check)
    echo "== bench-micro: swift package benchmark (per operation: * rows)"
    run_benchmarks benchmark --no-progress --grouping metric "$@"
    phase_done run
    ;;
  check-only) ;;
esac

# The check skips a benchmark that has no thresholds file, so a new benchmark must come with one.
# Its name must not contain spaces or '/': 1.38 writes the file with those made '_' but looks it
# up by the name as written, and would never find it.
missing=0
target=""
while IFS= read -r line; do
  if [[ "$line" =~ ^Target\ \'([^\']+)\'\ available\ benchmarks: ]]; then
    target="${BASH_REMATCH[1]}"
  elif [[ -n "$target" && -n "$line" ]]; then
    if [[ "$line" == *" "* || "$line" == */* ]]; then
      echo "bench-micro: benchmark name '$line' has a space or '/': its thresholds would never be read" >&2
      missing=1
    elif [[ ! -f "Thresholds/$target.$line.p90.json" ]]; then
      echo "bench-micro: no Thresholds/$target.$line.p90.json: record it with scripts/bench-micro.sh --update-thresholds" >&2
      missing=1
    fi
  else
    target=""
  fi
done < <(swift package benchmark list 2>/dev/null | sed -n '/available benchmarks:$/,$p')
if ((missing)); then
  exit 1
fi

echo "== bench-micro: swift package benchmark thresholds check (mallocCountTotal, p90)"
for attempt in 1 2; do
  if run_benchmarks benchmark thresholds check --no-progress "$@"; then
    status=0
  else
    status=$?
  fi
  # A signal (exit 128+N) with no verdict printed is SwiftPM itself crashing (seen once: a SIGSEGV in
  # libdispatch inside `swift-package`), not a measurement: run the check once more.
  if ((status < 128)) || grep -q "than the defined thresholds" "$log" || ((attempt == 2)); then
    break
  fi
  echo "bench-micro: swift package crashed (exit $status) before a verdict; running the check again" >&2
done
phase_done check
# The plugin turns the tool's exit codes (2 regression, 4 improvement) into one error, so read
# its verdict from the output.
if grep -q "is WORSE than the defined thresholds" "$log"; then
  echo "bench-micro: FAIL: a benchmark allocates more than Benchmarks/Thresholds/ allows (see the table above)" >&2
  exit 2
elif grep -q "is BETTER than the defined thresholds" "$log"; then
  echo "bench-micro: PASS, and allocations went down: re-record with scripts/bench-micro.sh --update-thresholds and commit Benchmarks/Thresholds/"
  exit 0
elif ((status == 0)) && grep -q "is EQUAL to the defined thresholds" "$log"; then
  echo "bench-micro: PASS: mallocs within the thresholds"
  exit 0
fi
echo "bench-micro: FAIL: the thresholds check did not complete (exit $status)" >&2
exit 1
