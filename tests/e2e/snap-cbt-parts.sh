#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# snap-cbt-parts.sh - between snapshots, changed-block tracking names the
# changed parts of objects (1/32: 128 KiB of a 4 MiB object), through
# vbk-blockd, across a hand-off between two hosts; what a killed holder
# wrote counts whole objects (VBK_TEST_BACKENDS).  The live dirty bitmap
# over NBD matches `vbk diff`.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires qemu-io
requires nbdinfo
requires python3

store=$(new_store)
M=$((1024 * 1024))
K=1024

# qio NAME CMD...: qemu-io commands on disk through host NAME.
qio ()
{
  local host=$1 args=() c
  shift
  for c; do args+=(-c "$c"); done
  qemu-io -f raw "${args[@]}" "$(host_uri "$host")" >"$TEST_DIR/qio.out" 2>&1 &&
    ! grep -Eq 'error|failed' "$TEST_DIR/qio.out" ||
    fail "qemu-io through $host: $(cat "$TEST_DIR/qio.out"); $(host_logs)"
}
# diff_is FROM TO PYTHON-LIST: the extents of vbk diff, as (offset, length).
diff_is ()
{
  vbk --store "$store" diff disk --from "$1" ${2:+--to "$2"} --json |
    json_check "[(e['offset'], e['length']) for e in d['extents']] == $3"
}

vbk --store "$store" image create disk --size 64M >/dev/null
start_host A
start_host B
keep_open A
keep_open B

qio A "write -P 0x11 $((8 * M + 4 * K)) 4k"
vbk --store "$store" snap create disk@s1 >/dev/null || fail "snap s1: $(host_logs)"
# Object 5: a part through A, then (a hand-off: A saves its parts) two
# more through B, one of them in object 11.
qio A "write -P 0x21 $((20 * M + 256 * K)) 4k"
qio B "write -P 0x22 $((20 * M + M)) 4k" "write -P 0x23 $((44 * M)) 8k"
[ "$(holder)" = hostB ] || fail "B does not hold disk: $(holder)"
# Live: the holder logs its parts first (vbk diff asks it), so the live
# diff lists the same parts as the snapshot taken next.
diff_is s1 "" "[(20 * $M + 256 * $K, 128 * $K), (21 * $M, 128 * $K), (44 * $M, 128 * $K)]"
vbk --store "$store" snap create disk@s2 >/dev/null || fail "snap s2: $(host_logs)"
diff_is s1 s2 "[(20 * $M + 256 * $K, 128 * $K), (21 * $M, 128 * $K), (44 * $M, 128 * $K)]"
echo "s1..s2: 3 parts of 128 KiB listed for 3 writes in 2 objects (one via each host)"

# B is killed after a write to object 12; A takes over and writes
# another part: B's write counts the whole object.
qio B "write -P 0x31 $((48 * M + 512 * K)) 4k"
kill -9 "$pid_B"
qio A "write -P 0x32 $((48 * M)) 4k" "write -P 0x33 $((60 * M + 3 * M)) 4k"
vbk --store "$store" snap create disk@s3 >/dev/null || fail "snap s3: $(host_logs)"
diff_is s2 s3 "[(48 * $M, 4 * $M), (63 * $M, 128 * $K)]"
diff_is s1 s3 "[(20 * $M + 256 * $K, 128 * $K), (21 * $M, 128 * $K), (44 * $M, 128 * $K), (48 * $M, 4 * $M), (63 * $M, 128 * $K)]"

# The dirty bitmap of a live export says the same as vbk diff.
qio A "write -P 0x41 $((2 * M)) 4k"
vbk --store "$store" diff disk --from s1 --json >"$TEST_DIR/diff.json"
nbdinfo --json --map=qemu:dirty-bitmap:s1 "$(host_uri A)" >"$TEST_DIR/map.json" ||
  fail "nbdinfo --map: $(host_logs)"
python3 - "$TEST_DIR/diff.json" "$TEST_DIR/map.json" <<'PYEOF' || fail "the dirty bitmap differs from vbk diff"
import json, sys
d = [(e["offset"], e["length"]) for e in json.load(open(sys.argv[1]))["extents"]]
m = []
for e in json.load(open(sys.argv[2])):
    if not e["type"] & 1:
        continue
    if m and m[-1][0] + m[-1][1] == e["offset"]:
        m[-1] = (m[-1][0], m[-1][1] + e["length"])
    else:
        m.append((e["offset"], e["length"]))
print("dirty bitmap:", m)
sys.exit(d != m)
PYEOF
echo "snap-cbt-parts: OK"
