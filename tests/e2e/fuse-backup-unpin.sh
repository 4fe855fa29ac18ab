#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# fuse-backup-unpin.sh - a backup opened through "vbk mount" pins its
# chunks against gc only while one of its files is open, once per store
# backend (VBK_TEST_BACKENDS; the repository on the same backend):
#   backup B1 of image d (8 MiB of random bytes, 256 KiB chunks) is only
#   listed (its disk opened for its size, no file opened): gc soon finds
#   no open reader; then read whole through the mount and closed: gc then finds no open reader,
#   though the mount is still up and keeps B1's disk open for later
#   paths; opened again, B1 counts as an open reader again, and reads
#   right; closed, not.  d is replaced, backed up (B2) and
#   "prune --keep-last 1" removes B1: a gc while still mounted frees B1's
#   32 chunks; opening B1's disk again through the mount now fails (the
#   backup is gone), while B2 reads right through the same mount.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"
. "$VBK_SRC/tests/fuse-functions.sh"

requires python3
requires_fuse
fuse_test_setup

# gc_readers: runs gc, prints its count of open readers.
gc_readers ()
{
  v backup gc --clock-skew 0 --repo "$repo" --json >"$D/gc.json" ||
    fail "gc: $(cat "$D/gc.json")"
  python3 -c 'import json,sys; print(json.load(sys.stdin)["open_readers"])' \
    <"$D/gc.json"
}

# wait_readers N: gc reports N open readers within 10 s (a FUSE release
# reaches the mount a little after close(2) returned).
wait_readers ()
{
  local i n
  for ((i = 0; i < 50; i++)); do
    n=$(gc_readers)
    [ "$n" = "$1" ] && return 0
    sleep 0.2
  done
  fail "gc reports $n open readers, expected $1: $(cat "$D/gc.json")"
}

backup_id ()
{
  v backup ls d --repo "$repo" --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])'
}

head -c 8M /dev/urandom >"$D/d1.raw"
v image import "$D/d1.raw" d >/dev/null || fail "import d"
v backup init "$repo" --chunk-size 256K >/dev/null || fail "backup init"
v backup run d --repo "$repo" >/dev/null || fail "backup B1"
b1=$(backup_id) || fail "backup ls"

mount_vbk "$M" --repo "$repo"
disk1=$M/backups/d/$b1/disk
# Only listed (its disk opened for the sizes, no file of it opened): the
# pin is dropped within about a second too.
ls -l "$M/backups/d/$b1/" >/dev/null || fail "listing B1"
[ "$(stat -c %s "$disk1")" = $((8 << 20)) ] || fail "size of B1's disk"
wait_readers 0
cmp "$disk1" "$D/d1.raw" || fail "B1 read through the mount differs"
# Closed: no reader left, though the mount keeps B1's disk open.
wait_readers 0

# Open again: pinned again, and the data still right.
exec 8<"$disk1"
cleanup_fn "exec 8<&-"
wait_readers 1
cmp - "$D/d1.raw" <&8 || fail "B1 read again differs"
exec 8<&-
wait_readers 0

# B1 pruned while mounted (nothing of it open): gc frees its chunks.
v image rm d >/dev/null || fail "image rm d"
head -c 8M /dev/urandom >"$D/d2.raw"
v image import "$D/d2.raw" d >/dev/null || fail "import d again"
v backup run d --repo "$repo" >/dev/null || fail "backup B2"
b2=$(backup_id) || fail "backup ls"
[ "$b2" != "$b1" ] || fail "no second backup"
v backup prune d --keep-last 1 --repo "$repo" >/dev/null || fail "prune"
n=$(gc_readers)
[ "$n" = 0 ] || fail "gc after the prune: $n open readers"
python3 - "$D/gc.json" <<'EOF' || fail "gc after the prune: $(cat "$D/gc.json")"
import json, sys
g = json.load(open(sys.argv[1]))
assert g["removed"] >= 32, g
EOF

# B1 is gone: opening it fails rather than reading collected chunks.
if cat "$disk1" >/dev/null 2>"$D/cat.err"; then
  fail "B1's disk still opens and reads after gc collected it"
fi
cmp "$M/backups/d/$b2/disk" "$D/d2.raw" || fail "B2 read through the mount differs"
umount_vbk "$M"
exit 0
