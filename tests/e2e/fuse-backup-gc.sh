#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# fuse-backup-gc.sh - reads of a backup through "vbk mount" stay right
# while backups run and prune + gc remove that very backup, once per
# store backend (VBK_TEST_BACKENDS; the repository on the same backend):
#   image d (32 MiB) holds fio's verify pattern (every 4 KiB block carries
#   its offset and a CRC-32C of itself) and is backed up (B1) into a
#   repository of 256 KiB chunks; the mount (with a small cache, so reads
#   go back to the repository) has backups/d/TIME/disk open.  fio reads
#   random 4 KiB blocks of it with --verify=crc32c while, at the same
#   time, backups of new images run in a loop, gc runs in a loop, and d is
#   replaced and backed up again so that "prune --keep-last 1" removes B1,
#   whose chunks no other backup uses ("latest", read before, moves to the
#   new backup within seconds).  fio must verify every block; gc
#   must report the mount as an open reader; the whole disk, read again
#   through the descriptor opened before the prune, equals the pattern
#   (chunks never read before the gc included).  After the unmount a gc
#   frees B1's chunks.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"
. "$VBK_SRC/tests/fuse-functions.sh"

requires python3
requires fio
requires_fuse
fuse_test_setup

# The pattern: fio writes each block with a header naming its offset.
fio --name=w --filename="$D/pattern.raw" --rw=write --bs=4k --size=32M \
  --verify=crc32c --do_verify=0 --verify_state_save=0 --output=/dev/null ||
  fail "fio pattern"
v image import "$D/pattern.raw" d >/dev/null || fail "import d"
v backup init "$repo" --chunk-size 256K >/dev/null || fail "backup init"
v backup run d --repo "$repo" >/dev/null || fail "backup B1"
b1=$(v backup ls d --repo "$repo" --json |
       python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])') ||
  fail "backup ls"

mount_vbk "$M" --repo "$repo" --cache 1M
# By id: fio takes ':' (in the TIME names) as a separator of file names.
disk=$M/backups/d/$b1/disk
[ -f "$disk" ] || fail "no disk for B1 in $(ls "$M/backups/d")"
# Opened before the prune: read again at the end through this descriptor.
exec 8<"$disk"
cleanup_fn "exec 8<&-"

fio --name=r --filename="$disk" --rw=randread --bs=4k \
  --verify=crc32c --verify_state_save=0 --readonly --time_based --runtime=12 \
  --output="$D/fio.out" &
fio_pid=$!
cleanup_fn "kill $fio_pid 2>/dev/null"

# A backup always running, and gc always running, until fio is done.
(
  i=0
  while kill -0 "$fio_pid" 2>/dev/null; do
    i=$((i + 1))
    head -c 2M /dev/urandom >"$D/e.raw"
    v image import "$D/e.raw" "e$i" >/dev/null || exit 1
    v backup run "e$i" --repo "$repo" >/dev/null || exit 1
  done
) &
churn_pid=$!
(
  while kill -0 "$fio_pid" 2>/dev/null; do
    v backup gc --clock-skew 0 --repo "$repo" --json >>"$D/gc.jsonl" || exit 1
  done
) &
gc_pid=$!

# d replaced by other data and backed up: B1 is no longer the newest.
v image rm d >/dev/null || fail "image rm d"
head -c 8M /dev/urandom >"$D/d2.raw"
v image import "$D/d2.raw" d >/dev/null || fail "import d again"
# "latest" was read before B2 (the kernel may cache the link): it moves
# to B2 within a few seconds.
first=$(readlink "$M/backups/d/latest") || fail "readlink latest"
[ "$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <"$M/backups/d/latest/info.json")" = "$b1" ] ||
  fail "latest/ is not B1 before B2"
v backup run d --repo "$repo" >/dev/null || fail "backup B2"
for ((i = 0; i < 100; i++)); do
  [ "$(readlink "$M/backups/d/latest")" != "$first" ] && break
  sleep 0.1
done
[ "$(readlink "$M/backups/d/latest")" != "$first" ] ||
  fail "latest still points at B1 ($first) 10 s after B2"
v backup prune d --keep-last 1 --repo "$repo" >/dev/null || fail "prune"
v backup ls d --repo "$repo" --json | grep -q "$b1" && fail "prune kept $b1"
v backup gc --clock-skew 0 --repo "$repo" --json >"$D/gc-pruned.json" ||
  fail "gc after the prune"
kill -0 "$fio_pid" 2>/dev/null ||
  echo "note: fio ended before the gc after the prune (a loaded machine)" >&2

wait "$fio_pid" || fail "fio reads failed: $(grep -E 'verify|err' "$D/fio.out" | head -5)
$(tail -5 "$D/fio.out")"
wait "$churn_pid" || fail "the backup loop failed"
wait "$gc_pid" || fail "the gc loop failed"
grep -q 'verify:' "$D/fio.out" && fail "fio: $(grep verify: "$D/fio.out" | head -3)"
python3 - "$D/gc-pruned.json" <<'EOF' || fail "gc after the prune: $(cat "$D/gc-pruned.json")"
import json, sys
g = json.load(open(sys.argv[1]))
assert g["open_readers"] >= 1, g
EOF
[ -s "$D/gc.jsonl" ] || fail "no gc ran during the reads"

# Every block, through the descriptor opened before the prune.
cmp - "$D/pattern.raw" <&8 || fail "the disk of the pruned backup differs"
exec 8<&-

# Unmounted, the reader is gone and gc frees B1's chunks (128 of 256 KiB).
umount_vbk "$M"
v backup gc --clock-skew 0 --repo "$repo" --json >"$D/gc-end.json" || fail "gc at the end"
python3 - "$D/gc-end.json" <<'EOF' || fail "gc at the end: $(cat "$D/gc-end.json")"
import json, sys
g = json.load(open(sys.argv[1]))
assert g["open_readers"] == 0, g
assert g["removed"] >= 128, g
EOF
exit 0
