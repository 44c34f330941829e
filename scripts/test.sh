#!/usr/bin/env bash
# Sets everything up and runs every test: dependencies, certificates, the
# normal build and the AddressSanitizer + UndefinedBehaviorSanitizer build,
# each with the whole ctest suite (unit, fuzz-corpus replay, end to end),
# then a clang libFuzzer build in which every fuzz target runs for a bounded
# time (scripts/fuzz.sh; H3GATE_FUZZ_SECONDS a target, 30 by default).
#   scripts/test.sh            all three
#   H3GATE_TEST_BUILDS=normal scripts/test.sh   only the normal build
#   (the builds are normal, asan and fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
builds=${H3GATE_TEST_BUILDS:-"normal asan fuzz"}
status=0
for b in $builds; do
  case "$b" in
    normal) dir=build; args=() ;;
    asan) dir=build-asan; args=(-DH3GATE_SANITIZE=ON) ;;
    fuzz)
      # Its own build and run: the corpora were replayed above already.
      bash scripts/fuzz.sh build-fuzz || status=1
      continue ;;
    *) echo "unknown build $b" >&2; exit 2 ;;
  esac
  echo "=== $b build ($dir)"
  bash scripts/build.sh "$dir" "${args[@]}"
  echo "=== $b tests"
  if ! ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
       UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
       ctest --test-dir "$dir" --output-on-failure; then
    status=1
  fi
done
exit $status
