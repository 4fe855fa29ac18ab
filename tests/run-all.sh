#!/bin/bash
# SPDX-License-Identifier: MIT
#
# run-all.sh - installs what is needed, builds, and runs every test:
#  1. cmocka unit suites and end-to-end scripts, each on the local store
#     and on a throwaway 3-OSD Ceph cluster that the tests start and stop;
#  2. the local-store half again, built with ASan+UBSan.
# Usage: tests/run-all.sh [BUILD_DIR]   (default: build; the sanitizer
# build goes to BUILD_DIR-asan).  VBK_SKIP_ASAN=1 skips step 2.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$src/build}

"$src/deploy/install-deps.sh"
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVBK_WERROR=ON >/dev/null
cmake --build "$build" -j"$(nproc)"
rc=0
"$src/tests/build-matrix.sh" "$build-matrix" || rc=$?
ctest --test-dir "$build" --output-on-failure --timeout 900 -j2 || rc=$?

if [ "${VBK_SKIP_ASAN:-0}" != 1 ]; then
  echo "== the local-store tests again, under ASan+UBSan"
  cmake -S "$src" -B "$build-asan" -DCMAKE_BUILD_TYPE=Debug -DVBK_SANITIZE=ON -DVBK_WERROR=ON \
    -DVBK_TEST_RADOS=OFF >/dev/null
  cmake --build "$build-asan" -j"$(nproc)"
  # The fuzzer has its own ASan build; leaks of librados' own threads are
  # not ours.
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$build-asan" --output-on-failure --timeout 900 -j2 \
      -E 'fuzz' || rc=$?
fi
exit $rc
