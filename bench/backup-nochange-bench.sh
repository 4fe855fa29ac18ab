#!/bin/bash
# SPDX-License-Identifier: MIT
#
# backup-nochange-bench.sh - what an incremental backup costs when little
# or nothing changed, on a big thin image.
#
# A thin image of SIZE (default 1T) in a local: store with DATA_GB GiB
# (default 3) of random data written in 4 MiB pieces spread over it; a
# full backup; then an incremental with nothing changed, and one after
# CHANGED (default 16) scattered 4 KiB writes through vbk-blockd.  Prints
# the seconds of each and what the run reports (chunks read, new).
# Environment: SIZE, DATA_GB, CHANGED, VBK_BIN, TMPDIR; VERBOSE=1 shows the
# runs' log lines (where the time goes).
# This is a benchmark: it prints numbers, it does not assert.

set -euo pipefail

SRC=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
VBK_BIN=${VBK_BIN:-$SRC/build/bin}
SIZE=${SIZE:-1T}
DATA_GB=${DATA_GB:-3}
CHANGED=${CHANGED:-16}
W=$(mktemp -d "${TMPDIR:-/tmp}/vbk-nochange-bench.XXXXXX")
BLOCKD=
cleanup () {
  [ -n "$BLOCKD" ] && kill "$BLOCKD" 2>/dev/null && wait "$BLOCKD" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT

export VBK_STORE=local:$W/store VBK_REPO=local:$W/repo
vbk () { "$VBK_BIN/vbk" ${VERBOSE:+-v} "$@"; }
now () { date +%s.%N; }
secs () { python3 -c "print('%.2f' % ($(now) - $1))"; }
summary () { python3 -c '
import json, sys
r = json.load(sys.stdin)[0]
print("full" if r["full"] else "incremental", "chunks", r["chunks"], "read", r["chunks_read"],
      "new", r["chunks_new"], "elapsed_ms", r["elapsed_ms"])'; }

vbk image create big --size "$SIZE" >/dev/null
"$VBK_BIN/vbk-blockd" --store "$VBK_STORE" --socket "$W/b.sock" --host-id benchhost 2>"$W/blockd.log" &
BLOCKD=$!
for ((i = 0; i < 200; i++)); do [ -S "$W/b.sock" ] && break; sleep 0.05; done
echo "backup-nochange-bench: $SIZE thin image, writing $DATA_GB GiB spread over it" >&2
/usr/bin/python3 - "nbd+unix:///big?socket=$W/b.sock" "$DATA_GB" <<'PY'
import nbd, os, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
size = h.get_size()
n = int(sys.argv[2]) * 256                  # 4 MiB pieces
step = size // n // (4 << 20) * (4 << 20)
for i in range(n):
    h.pwrite(os.urandom(4 << 20), i * step)
h.flush()
h.shutdown()
PY
kill "$BLOCKD"; wait "$BLOCKD" 2>/dev/null || true; BLOCKD=

vbk backup init --chunk-size 4M >/dev/null
t=$(now); vbk backup run big --json --progress none >"$W/r1.json"
echo "full backup:               $(secs "$t") s  ($(summary <"$W/r1.json"))"
t=$(now); vbk backup run big --json --progress none >"$W/r2.json"
echo "no-change incremental:     $(secs "$t") s  ($(summary <"$W/r2.json"))"
t=$(now); vbk backup run big --json --progress none >"$W/r3.json"
echo "no-change incremental (2): $(secs "$t") s  ($(summary <"$W/r3.json"))"

"$VBK_BIN/vbk-blockd" --store "$VBK_STORE" --socket "$W/b.sock" --host-id benchhost 2>>"$W/blockd.log" &
BLOCKD=$!
for ((i = 0; i < 200; i++)); do [ -S "$W/b.sock" ] && break; sleep 0.05; done
/usr/bin/python3 - "nbd+unix:///big?socket=$W/b.sock" "$CHANGED" <<'PY'
import nbd, os, random, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
size = h.get_size()
for i in range(int(sys.argv[2])):
    h.pwrite(os.urandom(4096), random.randrange(size // 4096) * 4096)
h.flush()
h.shutdown()
PY
kill "$BLOCKD"; wait "$BLOCKD" 2>/dev/null || true; BLOCKD=
t=$(now); vbk backup run big --json --progress none >"$W/r4.json"
echo "incremental, $CHANGED writes:    $(secs "$t") s  ($(summary <"$W/r4.json"))"
