#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# fuse-snapshots.sh - "vbk mount" and "vbk files" on snapshots, with a
# real FUSE mount, once per store backend (VBK_TEST_BACKENDS):
#   an ext4 file system made by mke2fs -d from a tree (files of many
#   sizes, a sparse file, symlinks, deep directories, non-ASCII names) in
#   partition 1 of a GPT disk, imported as an image, snapshotted (s1),
#   rewritten through vbk-blockd by nbdcopy with a changed tree, and
#   snapshotted again (s2).  For each snapshot:
#   - files/p1 equals the tree of its time (manifest: paths, types, modes,
#     sizes, mtimes, sha256 of contents, link targets);
#   - disk equals the raw disk and parts/p1 the file system image (cmp);
#   - SEEK_DATA/SEEK_HOLE on disk equal the allocation map that vbk-blockd
#     reports for IMAGE@SNAP (nbdinfo --map), and st_blocks its sum;
#   - debugfs -R 'rdump' of parts/p1 (an independent ext4 reader) gives
#     the same tree; "vbk files get" (no FUSE) too, and "vbk files ls";
#   - files/p2/README says that no file system was found; info.json.
#   The tree lists images and snapshots; a snapshot taken while mounted
#   appears.  Removing s1 while a reader reads its disk: every byte read
#   is right or the read fails with EIO, and afterwards reads fail with
#   EIO while s2 still reads right.  vbk mount refuses a missing or
#   non-empty DIR, and a missing /dev/fuse, saying what to do; vbk umount.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"
. "$VBK_SRC/tests/fuse-functions.sh"

requires python3
requires mke2fs
requires debugfs
requires sfdisk
requires nbdcopy
requires nbdinfo
requires_fuse

store=$(new_store)
v () { vbk --store "$store" "$@"; }
D=$TEST_DIR
M=$D/mnt

make_disk "$D" 1
make_disk "$D" 2

# ---- The image and its two snapshots ------------------------------------------

v image import "$D/disk1.raw" vm >/dev/null || fail "import"
v snap create vm@s1 >/dev/null || fail "snap create s1"
start_blockd pid_a "$D/a.sock"
uri () { echo "nbd+unix:///$1?socket=$D/a.sock"; }
# Every byte as a write: vbk-blockd refuses a WRITE_ZEROES longer than
# its advertised maximum block size (32 MiB), which nbdcopy sends for a
# long hole.
nbdcopy --no-extents --sparse=0 "$D/disk2.raw" "$(uri vm)" || fail "nbdcopy disk2 into vm"
v snap create vm@s2 >/dev/null || fail "snap create s2"
# The allocation maps as an NBD client sees them: merged data extents.
nbd_map ()
{
  nbdinfo --map "$(uri "$1")" | python3 -c '
import sys
out = []
for line in sys.stdin:
    off, length, typ = (int(x) for x in line.split()[:3])
    if typ & 1:
        continue
    if out and out[-1][0] + out[-1][1] == off:
        out[-1][1] += length
    else:
        out.append([off, length])
for off, length in out:
    print("data %d %d" % (off, length))'
}
nbd_map vm@s1 >"$D/map-s1"
nbd_map vm@s2 >"$D/map-s2"
[ -s "$D/map-s1" ] || fail "empty map of s1"
stop_blockd pid_a

# ---- Mount errors -----------------------------------------------------------------

expect_status 1 "does not exist: create the mount point first" v mount "$D/nowhere"
mkdir -p "$D/full" && touch "$D/full/x"
expect_status 1 "is not empty: mount on an empty directory" v mount "$D/full"
expect_status 1 "is not a directory" v mount "$D/full/x"
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
  # A private /dev without fuse in its own mount namespace.
  mkdir -p "$D/nofuse"
  expect_status 1 "/dev/fuse is missing: load the fuse kernel module" \
    unshare -m sh -c 'mount -t tmpfs none /dev && exec "$0" "$@"' \
      "$VBK_BIN/vbk" --store "$store" mount "$D/nofuse"
fi
v mount --help | grep -q -- "--allow-other" || fail "mount --help"
expect_status 2 "missing argument" v mount

# ---- The tree -----------------------------------------------------------------------

mount_vbk "$M"
[ "$(ls "$M")" = "$(printf 'backups\nimages')" ] || fail "root: $(ls "$M")"
[ "$(ls "$M/images")" = vm ] || fail "images: $(ls "$M/images")"
[ "$(ls "$M/images/vm/snapshots")" = "$(printf 's1\ns2')" ] ||
  fail "snapshots: $(ls "$M/images/vm/snapshots")"
[ "$(ls "$M/images/vm/snapshots/s1")" = "$(printf 'disk\nfiles\ninfo.json\nparts')" ] ||
  fail "volume: $(ls "$M/images/vm/snapshots/s1")"
[ ! -e "$M/images/vm/snapshots/nope" ] || fail "a missing snapshot exists"
[ ! -e "$M/images/nope" ] || fail "a missing image exists"
python3 - "$M/images/vm/snapshots/s2/info.json" <<'EOF' || fail "info.json"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["image"] == "vm" and d["snapshot"] == "s2" and d["kind"] == "snapshot", d
assert d["size"] == 64 << 20, d
EOF
[ "$(ls "$M/images/vm/snapshots/s1/parts")" = "$(printf 'p1\np2')" ] ||
  fail "parts: $(ls "$M/images/vm/snapshots/s1/parts")"
grep -q "No file system was found" "$M/images/vm/snapshots/s1/files/p2/README" ||
  fail "p2 README: $(cat "$M/images/vm/snapshots/s1/files/p2/README")"
# Read-only.
! touch "$M/images/vm/snapshots/s1/files/p1/newfile" 2>/dev/null ||
  fail "created a file in a read-only mount"
! sh -c "echo x >> '$M/images/vm/snapshots/s1/disk'" 2>/dev/null ||
  fail "wrote to a snapshot's disk"

for s in 1 2; do
  S=$M/images/vm/snapshots/s$s
  same_tree "$D/src$s" "$S/files/p1" "s$s files/p1"
  cmp "$S/disk" "$D/disk$s.raw" || fail "s$s disk differs from disk$s.raw"
  cmp "$S/parts/p1" "$D/fs$s.img" || fail "s$s parts/p1 differs from fs$s.img"
  [ "$(stat -c %s "$S/parts/p2")" = $((8 << 20)) ] || fail "s$s p2 size"
  $TREE seekmap "$S/disk" >"$D/seek-s$s"
  diff "$D/map-s$s" "$D/seek-s$s" >/dev/null ||
    fail "s$s: SEEK_DATA/SEEK_HOLE differ from the map: $(diff "$D/map-s$s" "$D/seek-s$s" | head)"
  alloc=$(awk '{ n += $3 } END { print n }' "$D/map-s$s")
  [ $(($(stat -c %b "$S/disk") * 512)) = "$alloc" ] ||
    fail "s$s st_blocks $(stat -c %b "$S/disk") != $alloc bytes allocated"
  # An independent ext4 reader on the partition file.
  mkdir -p "$D/rdump$s"
  debugfs -R "rdump / $D/rdump$s" "$S/parts/p1" >/dev/null 2>"$D/debugfs.err" ||
    fail "debugfs rdump: $(cat "$D/debugfs.err")"
  same_tree "$D/src$s" "$D/rdump$s" "s$s debugfs rdump of parts/p1"
  # The same reader without FUSE.
  v files get "snap:vm@s$s:/p1" "$D/get$s" || fail "files get s$s"
  same_tree "$D/src$s" "$D/get$s" "s$s vbk files get"
done

# The change between the snapshots shows.
[ "$(cat "$M/images/vm/snapshots/s2/files/p1/text.txt")" = "changed in version 2" ] ||
  fail "s2 text.txt"
[ ! -e "$M/images/vm/snapshots/s2/files/p1/sizes/f0004097" ] || fail "s2: removed file"
[ -e "$M/images/vm/snapshots/s1/files/p1/sizes/f0004097" ] || fail "s1: file"
[ "$(readlink "$M/images/vm/snapshots/s2/files/p1/link-short")" = new/added.bin ] ||
  fail "s2 link"
# Sparse files keep their holes' size (st_blocks much below the size).
[ "$(stat -c %b "$M/images/vm/snapshots/s1/files/p1/sparse.img")" -lt 1000 ] ||
  fail "sparse.img is not sparse: $(stat -c %b "$M/images/vm/snapshots/s1/files/p1/sparse.img") blocks"

# vbk files ls (text and JSON) and get to stdout.
v files ls "snap:vm@s1:/p1/sizes" --json | json_check \
  'len(d) == 10 and [e["size"] for e in d if e["name"] == "f0100003"] == [100003] and all(e["type"] == "file" for e in d)'
v files ls "snap:vm@s2:/p1" | grep -q '^l0777 .* link-short -> new/added.bin$' ||
  fail "files ls: $(v files ls "snap:vm@s2:/p1")"
v files ls "snap:vm@s1:/p1/caf$(printf '\303\251')" | grep -q "$(printf '\346\227\245')" ||
  fail "files ls non-ASCII"
v files get "snap:vm@s1:/p1/sizes/f3145745" - | cmp - "$D/src1/sizes/f3145745" ||
  fail "files get to stdout"
expect_status 1 "No such file" v files ls "snap:vm@s1:/p1/nope"
expect_status 1 "No such file" v files ls "snap:vm@nope:/"
expect_status 2 "expected snap:IMAGE@SNAP:PATH" v files ls "vm@s1:/"
expect_status 2 "expected IMAGE@SNAP" v files ls "snap:vm:/"

# A snapshot taken while mounted appears; the mount did not load it.
v snap create vm@s3 >/dev/null
[ "$(ls "$M/images/vm/snapshots")" = "$(printf 's1\ns2\ns3')" ] ||
  fail "s3 does not appear: $(ls "$M/images/vm/snapshots")"
cmp "$M/images/vm/snapshots/s3/disk" "$D/disk2.raw" || fail "s3 disk"
umount_vbk "$M"

# ---- Removing a snapshot under a reader ------------------------------------------
# A small cache, so that the reader keeps fetching from the store.

mount_vbk "$M" --cache 1M
S1=$M/images/vm/snapshots/s1
# The reader keeps its file open across the removal: a new open of the
# removed snapshot's path fails with ENOENT, which proves nothing.
cat >"$D/reader.py" <<'EOF'
import errno, os, sys
path, ref, ready, stop = sys.argv[1:5]
want = open(ref, "rb").read()
fd = os.open(path, os.O_RDONLY)

def one_pass():
    ok = eio = 0
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    for off in range(0, len(want), 1 << 20):
        try:
            got = os.pread(fd, 1 << 20, off)
        except OSError as e:
            if e.errno != errno.EIO:
                raise
            eio += 1
            continue
        if got != want[off:off + len(got)]:
            sys.exit("WRONG DATA at %d" % off)
        ok += 1
    return ok, eio

passes = 0
while not os.path.exists(stop):
    one_pass()
    passes += 1
    open(ready, "w").close()
# After the removal, reads that miss the caches fail.
ok, eio = one_pass()
print("passes %d, last pass: %d MiB right, %d EIO" % (passes, ok, eio))
if eio == 0:
    sys.exit("the removed snapshot still reads")
EOF
python3 "$D/reader.py" "$S1/disk" "$D/disk1.raw" "$D/ready" "$D/stop" \
  >"$D/reader.out" 2>&1 &
reader=$!
cleanup_fn "kill $reader 2>/dev/null"
wait_file ()
{
  local i
  for ((i = 0; i < 600; i++)); do
    [ -e "$1" ] && return 0
    kill -0 $reader 2>/dev/null || break
    sleep 0.05
  done
  fail "reader: no $(basename "$1"): $(cat "$D/reader.out")"
}
wait_file "$D/ready"
rm "$D/ready"
v snap rm vm@s1 || fail "snap rm s1"
# At least one whole pass after the removal began.
wait_file "$D/ready"
touch "$D/stop"
wait $reader || fail "reader: $(cat "$D/reader.out")"
grep -q "snapshot removed" "$TEST_DIR/mount-mnt.log" ||
  fail "no log line for the removed snapshot: $(tail -5 "$TEST_DIR/mount-mnt.log")"
[ "$(ls "$M/images/vm/snapshots")" = "$(printf 's2\ns3')" ] ||
  fail "s1 still listed: $(ls "$M/images/vm/snapshots")"
cmp "$M/images/vm/snapshots/s2/disk" "$D/disk2.raw" || fail "s2 after removing s1"
umount_vbk "$M"
echo "reader: $(cat "$D/reader.out")"
