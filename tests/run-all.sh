#!/bin/bash
# SPDX-License-Identifier: MIT
#
# run-all.sh - installs what is needed, builds, and runs every test:
# cmocka unit suites and end-to-end scripts, each on the local store and
# on a throwaway 3-OSD Ceph cluster that the tests start and stop.
# Usage: tests/run-all.sh [BUILD_DIR]   (default: build)
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$src/build}

"$src/deploy/install-deps.sh"
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure --timeout 900 -j2
