#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) and fuzzes each one for
# a bounded time with a fixed seed, then prints each target's executions
# per second and coverage. A crash, a leak, a timeout or running out of
# memory fails the run; the input that did it is left where the log says
# (docs/fuzzing.md: how to replay it and make it a regression input).
#   scripts/fuzz.sh [BUILD_DIR]          default build-fuzz/
# Environment:
#   H3GATE_FUZZ_SECONDS  seconds per target (default 30)
#   H3GATE_FUZZ_TARGETS  targets to run (default: all in tests/fuzz/)
#   H3GATE_FUZZ_JOBS     targets fuzzed at once (default: the CPU count)
#   H3GATE_FUZZ_OUT      logs, new inputs and crashes (default BUILD_DIR/fuzz-out)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-fuzz}
seconds=${H3GATE_FUZZ_SECONDS:-30}
jobs=${H3GATE_FUZZ_JOBS:-$(nproc)}
out=${H3GATE_FUZZ_OUT:-$dir/fuzz-out}
targets=${H3GATE_FUZZ_TARGETS:-$(cd tests/fuzz && ls fuzz_*.c | sed 's/\.c$//')}

case "$seconds" in
  ''|*[!0-9]*|0) echo "fuzz.sh: H3GATE_FUZZ_SECONDS must be a positive number of seconds" >&2; exit 2 ;;
esac
command -v clang >/dev/null 2>&1 ||
  { echo "fuzz.sh: clang not found (scripts/deps.sh installs it)" >&2; exit 2; }

echo "=== fuzz build ($dir)"
CC=clang cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DH3GATE_FUZZ=ON -DH3GATE_E2E=OFF >/dev/null
cmake --build "$dir" -j"$(nproc)" --target fuzzers

rm -rf "$out"
mkdir -p "$out"
# libFuzzer adds what it finds to the first corpus directory only: a
# scratch copy, so that the committed corpus stays as it is.
run_target() {
  local t=$1 bin="$dir/tests/$1" o="$out/$1"
  mkdir -p "$o/corpus" "$o/crashes"
  local dict=() seeds=("tests/fuzz/corpus/$t")
  [ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
  [ -d "tests/fuzz/regression/$t" ] && seeds+=("tests/fuzz/regression/$t")
  local rc=0
  env -u H3G_FUZZ_TRACE ASAN_OPTIONS=detect_leaks=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$bin" -seed=1 -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$o/crashes/" "${dict[@]}" \
      "$o/corpus" "${seeds[@]}" \
      >"$o/log" 2>&1 || rc=$?
  echo "$rc" >"$o/rc"
}

echo "=== fuzzing: ${seconds}s a target, seed 1, $jobs at once"
running=0
for t in $targets; do
  [ -x "$dir/tests/$t" ] || { echo "fuzz.sh: $dir/tests/$t was not built" >&2; exit 2; }
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  run_target "$t" &
  running=$((running + 1))
done
wait

status=0
passed=0
failed=0
printf '%-22s %10s %10s %8s %8s %8s  %s\n' target runs exec/s cov ft corpus result
for t in $targets; do
  rc=$(cat "$out/$t/rc" 2>/dev/null || echo 'no exit status')
  log="$out/$t/log"
  stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
  # The last status line: "#N DONE cov: C ft: F corp: K/..." (or the last
  # one printed before a crash).
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  result=ok
  if [ "$rc" != 0 ]; then
    status=1
    failed=$((failed + 1))
    art=$(sed -n 's/.*Test unit written to \(.*\)/\1/p' "$log" | tail -1)
    why=$(grep -m1 -oE 'ERROR: [A-Za-z]+: [a-z-]+|invariant broken: .*|deadly signal|out-of-memory|timeout' "$log" || echo "exit $rc")
    result="FAILED ($why): input ${art:-not written}, log $log"
  else
    passed=$((passed + 1))
  fi
  printf '%-22s %10s %10s %8s %8s %8s  %s\n' "$t" "$(stat number_of_executed_units)" \
    "$(stat average_exec_per_sec)" "${cov:--}" "${ft:--}" "${corp:--}" "$result"
done
[ "$status" = 0 ] ||
  echo "fuzzing failed: docs/fuzzing.md says how to replay an input and keep it"
echo "fuzzing: $passed passed, $failed failed"
exit $status
