#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# fuse-layouts.sh - the disk layouts vbk mount understands, on the local
# store:
#   an MBR (dos) disk: p1 primary ext4, an extended partition holding
#   logical p5 (ext2) and p6 (swap): parts/ lists p1 p5 p6 with the right
#   bytes, files/p1 and files/p5 hold their trees, files/p6/README says
#   swap is not read;
#   a disk that is an ext3 file system with no partition table: files/
#   is its root directly, parts/ is empty;
#   a disk of zeros: files/README says no file system was found.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"
. "$VBK_SRC/tests/fuse-functions.sh"

requires python3
requires mke2fs
requires mkswap
requires sfdisk
requires_fuse

store=$(new_store)
v () { vbk --store "$store" "$@"; }
D=$TEST_DIR
M=$D/mnt

$TREE make "$D/src1" 1
$TREE make "$D/src2" 2
mke2fs -q -t ext4 -b 4096 -d "$D/src1" "$D/p1.img" 40M || fail "mke2fs p1"
mke2fs -q -t ext2 -b 1024 -d "$D/src2" "$D/p5.img" 40M || fail "mke2fs p5"
truncate -s 8M "$D/p6.img" && mkswap -q "$D/p6.img" >/dev/null || fail "mkswap"

# MBR: p1 at 1 MiB (40 MiB), extended from 42 MiB to the end, logical p5
# (40 MiB) and p6 (8 MiB), each after its EBR.
truncate -s 100M "$D/mbr.raw"
sfdisk -q "$D/mbr.raw" >/dev/null <<'EOF' || fail "sfdisk"
label: dos
start=2048, size=81920, type=83
start=86016, type=5
start=88064, size=81920, type=83
start=172032, size=16384, type=82
EOF
sfdisk -d "$D/mbr.raw" >"$D/table"
part_start () { awk -v p="$D/mbr.raw$1" '$1 == p { sub(/,/, "", $4); print $4 * 512 }' "$D/table"; }
for n in 1 5 6; do
  off=$(part_start $n)
  [ -n "$off" ] || fail "no partition $n: $(cat "$D/table")"
  dd if="$D/p$n.img" of="$D/mbr.raw" bs=512 seek=$((off / 512)) conv=notrunc,sparse \
    status=none || fail "dd p$n"
done
v image import "$D/mbr.raw" mbr >/dev/null && v snap create mbr@s >/dev/null ||
  fail "import mbr"

# A whole-disk ext3, and a disk of zeros.
mke2fs -q -t ext3 -d "$D/src2" "$D/whole.raw" 48M || fail "mke2fs whole"
v image import "$D/whole.raw" whole >/dev/null && v snap create whole@s >/dev/null ||
  fail "import whole"
v image create empty --size 16M >/dev/null && v snap create empty@s >/dev/null ||
  fail "create empty"

mount_vbk "$M"
S=$M/images/mbr/snapshots/s
[ "$(ls "$S/parts")" = "$(printf 'p1\np5\np6')" ] || fail "mbr parts: $(ls "$S/parts")"
[ "$(ls "$S/files")" = "$(printf 'p1\np5\np6')" ] || fail "mbr files: $(ls "$S/files")"
for n in 1 5 6; do
  cmp "$S/parts/p$n" "$D/p$n.img" || fail "mbr parts/p$n"
done
same_tree "$D/src1" "$S/files/p1" "mbr p1 (ext4)"
same_tree "$D/src2" "$S/files/p5" "mbr p5 (ext2, logical)"
[ "$(ls "$S/files/p6")" = README ] || fail "p6: $(ls "$S/files/p6")"
grep -q "holds a swap file system, which vbk mount does not read" "$S/files/p6/README" ||
  fail "p6 README: $(cat "$S/files/p6/README")"

W=$M/images/whole/snapshots/s
[ -z "$(ls "$W/parts")" ] || fail "whole disk has parts: $(ls "$W/parts")"
same_tree "$D/src2" "$W/files" "whole-disk ext3"
v files get "snap:whole@s:/sizes/f1048576" - | cmp - "$D/src2/sizes/f1048576" ||
  fail "files get on a whole-disk file system"

E=$M/images/empty/snapshots/s
[ "$(ls "$E/files")" = README ] || fail "empty: $(ls "$E/files")"
grep -q "No file system was found" "$E/files/README" || fail "empty README"
[ "$(stat -c %b "$E/disk")" = 0 ] || fail "empty disk has blocks"
python3 - "$E/disk" <<'EOF' || fail "SEEK_DATA on an empty disk"
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    os.lseek(fd, 0, os.SEEK_DATA)
    sys.exit(1)
except OSError as e:
    sys.exit(0 if e.errno == errno.ENXIO else 1)
EOF
umount_vbk "$M"
