#!/bin/bash
# SPDX-License-Identifier: MIT
#
# build-matrix.sh - the builds users make must work: Release and
# RelWithDebInfo with gcc and with clang, warnings as errors (CI keeps
# them errors; a user's build does not, see VBK_WERROR).  Builds only;
# the tests run on the RelWithDebInfo gcc build of run-all.sh.
# Usage: tests/build-matrix.sh BUILD_PREFIX
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
prefix=${1:?usage: build-matrix.sh BUILD_PREFIX}
rc=0
for cc in gcc clang; do
  for type in Release RelWithDebInfo; do
    [ "$cc/$type" = gcc/RelWithDebInfo ] && continue   # run-all.sh's own
    dir=$prefix-$cc-$type
    echo "== build: $cc $type"
    if ! { CC=$cc cmake -S "$src" -B "$dir" -DCMAKE_BUILD_TYPE=$type \
             -DVBK_WERROR=ON >/dev/null \
           && cmake --build "$dir" -j"$(nproc)" >"$dir.log" 2>&1; }; then
      echo "build-matrix: $cc $type failed:" >&2
      grep -E 'error|warning' "$dir.log" | head -20 >&2 || tail -20 "$dir.log" >&2
      rc=1
    fi
  done
done
exit $rc
