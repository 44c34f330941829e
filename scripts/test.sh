#!/usr/bin/env bash
# Sets everything up and runs every test: dependencies, certificates, the
# normal build and the AddressSanitizer + UndefinedBehaviorSanitizer build,
# each with the whole ctest suite (unit, fuzz-corpus replay, end to end).
#   scripts/test.sh            both builds
#   H3GATE_TEST_BUILDS=normal scripts/test.sh   only the normal build
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
builds=${H3GATE_TEST_BUILDS:-"normal asan"}
status=0
for b in $builds; do
  case "$b" in
    normal) dir=build; args=() ;;
    asan) dir=build-asan; args=(-DH3GATE_SANITIZE=ON) ;;
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
