#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# fuse-backups.sh - "vbk mount --repo" and "vbk files" on backups, with a
# real FUSE mount, once per store backend (VBK_TEST_BACKENDS; the
# repository lives on a store of the same backend):
#   the GPT disk with an ext4 partition of fuse-snapshots.sh, imported,
#   backed up; rewritten through vbk-blockd (nbdcopy) with a changed tree
#   and backed up again (incremental, through the lease holder).  For each
#   backup: backups/vm/TIME/files/p1 equals the tree of its time
#   (manifest), disk equals the raw disk (cmp), parts/p1 the file system,
#   SEEK_DATA/SEEK_HOLE give the backup's map (no data in a hole, every
#   data extent a whole chunk), debugfs rdump of parts/p1 and "vbk files
#   get backup:vm/ID" give the tree; latest points at the second;
#   info.json is the manifest.  Then one chunk of the repository is
#   corrupted (a byte flipped in the stored object): the file that uses
#   it reads as EIO, a file elsewhere reads right, listings still work,
#   the mount stays responsive, and the log names the chunk.  Then a
#   chunk is replaced by other data under a right CRC-32: after the
#   mount's check (right after the first read) it reads as EIO and the
#   log names it; vbk files refuses it at once.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"
. "$VBK_SRC/tests/fuse-functions.sh"

requires python3
requires mke2fs
requires debugfs
requires dumpe2fs
requires sfdisk
requires nbdcopy
requires_fuse
fuse_test_setup

make_disk "$D" 1
make_disk "$D" 2

v image import "$D/disk1.raw" vm >/dev/null || fail "import"
v backup init "$repo" >/dev/null || fail "backup init"
v backup run vm --repo "$repo" >/dev/null || fail "backup 1"
start_blockd pid_a "$D/a.sock"
# Every byte as a write: vbk-blockd refuses a WRITE_ZEROES longer than
# its advertised maximum block size (32 MiB), which nbdcopy sends for a
# long hole.
nbdcopy --no-extents --sparse=0 "$D/disk2.raw" "nbd+unix:///vm?socket=$D/a.sock" || fail "nbdcopy"
v backup run vm --repo "$repo" >/dev/null || fail "backup 2"
stop_blockd pid_a
v backup ls vm --repo "$repo" --json >"$D/ls.json"
mapfile -t ids < <(python3 -c 'import json,sys; [print(e["id"]) for e in json.load(open(sys.argv[1]))]' "$D/ls.json")
[ ${#ids[@]} = 2 ] || fail "expected 2 backups: $(cat "$D/ls.json")"

mount_vbk "$M" --repo "$repo"
B=$M/backups/vm
[ "$(ls "$M/backups")" = vm ] || fail "backups: $(ls "$M/backups")"
mapfile -t names < <(ls "$B" | grep -v '^latest$')
[ ${#names[@]} = 2 ] || fail "backups of vm: $(ls "$B")"
# times[i]: the directory of backup ids[i] (oldest first).  Two backups
# in one second are both named TIME-ID, which ls sorts by id, not time.
times=()
for id in "${ids[@]}"; do
  for t in "${names[@]}"; do
    tid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$B/$t/info.json")
    [ "$tid" = "$id" ] && times+=("$t")
  done
done
[ ${#times[@]} = 2 ] || fail "backup directories ${names[*]} do not match ids ${ids[*]}"
[ "$(readlink "$B/latest")" = "${times[1]}" ] ||
  fail "latest -> $(readlink "$B/latest"), not ${times[1]}"
[[ ${times[0]} =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z ]] ||
  fail "backup name ${times[0]}"

for i in 0 1; do
  s=$((i + 1))
  V=$B/${times[$i]}
  python3 - "$V/info.json" "${ids[$i]}" <<'EOF' || fail "info.json of backup $s"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["id"] == sys.argv[2] and d["image"] == "vm" and d["size"] == 64 << 20, d
EOF
  same_tree "$D/src$s" "$V/files/p1" "backup $s files/p1"
  cmp "$V/disk" "$D/disk$s.raw" || fail "backup $s disk"
  cmp "$V/parts/p1" "$D/fs$s.img" || fail "backup $s parts/p1"
  # The map: data extents are whole 4 MiB chunks, and every chunk of the
  # raw disk that holds a non-zero byte is data.
  $TREE seekmap "$V/disk" >"$D/seek$s"
  python3 - "$D/seek$s" "$D/disk$s.raw" <<'EOF' || fail "backup $s map"
import sys
C = 4 << 20
raw = open(sys.argv[2], "rb").read()
data = set()
for line in open(sys.argv[1]):
    _, off, length = line.split()
    off, length = int(off), int(length)
    assert off % C == 0 and (length % C == 0 or off + length == len(raw)), line
    data.update(range(off // C, (off + length + C - 1) // C))
for i in range(len(raw) // C):
    nonzero = raw[i * C:(i + 1) * C].count(0) != C
    assert nonzero == (i in data), "chunk %d: nonzero %s, data %s" % (i, nonzero, i in data)
EOF
  mkdir -p "$D/rdump$s"
  debugfs -R "rdump / $D/rdump$s" "$V/parts/p1" >/dev/null 2>"$D/debugfs.err" ||
    fail "debugfs rdump: $(cat "$D/debugfs.err")"
  same_tree "$D/src$s" "$D/rdump$s" "backup $s debugfs rdump of parts/p1"
  v files get "backup:vm/${ids[$i]}:/p1" "$D/get$s" --repo "$repo" ||
    fail "files get backup $s"
  same_tree "$D/src$s" "$D/get$s" "backup $s vbk files get"
done
# By id (not listed), and latest/ as a path.
cmp "$B/${ids[0]}/disk" "$D/disk1.raw" || fail "backup by id"
[ "$(cat "$B/latest/files/p1/text.txt")" = "changed in version 2" ] || fail "latest/"
v files ls "backup:vm/${ids[1]}:/p1/new" --repo "$repo" | grep -q ' added.bin$' ||
  fail "files ls backup: $(v files ls "backup:vm/${ids[1]}:/p1/new" --repo "$repo")"
expect_status 2 "expected backup:IMAGE/ID:PATH" v files ls "backup:vm:/" --repo "$repo"
expect_status 1 "No such file" v files ls "backup:vm/nope:/" --repo "$repo"
umount_vbk "$M"

# ---- A corrupt chunk ----------------------------------------------------------------
# Where the files lie in backup 2: the chunk (4 MiB of the disk) of the
# first block of each, from debugfs bmap on the file system image.
bsize=$(dumpe2fs -h "$D/fs2.img" 2>/dev/null | awk '/^Block size:/ { print $3 }')
[ -n "$bsize" ] || fail "no block size from dumpe2fs"
chunk_of ()
{
  local blk
  blk=$(debugfs -R "bmap $1 ${2:-0}" "$D/fs2.img" 2>/dev/null) || fail "bmap $1"
  [[ $blk =~ ^[0-9]+$ ]] || fail "bmap $1: '$blk'"
  echo $((((1 << 20) + blk * bsize) >> 22))
}
# The chunk of the target's last block is corrupted; the control is a
# small file (one block) in another chunk.
target=/sizes/f3145745
ct=$(chunk_of $target $((3145745 / bsize)))
control=
for f in /modes/script.sh /modes/private /many/file-0001 /sizes/f0000511 \
         /d0/d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/d11/bottom.txt /text.txt; do
  if [ "$(chunk_of $f)" != "$ct" ] && [ "$(stat -c %s "$D/src2$f")" -le "$bsize" ]; then
    control=$f
    break
  fi
done
[ -n "$control" ] || fail "layout: every small file shares chunk $ct with $target"
hex=$(python3 -c '
import hashlib, sys
raw = open(sys.argv[1], "rb").read()
i = int(sys.argv[2])
print(hashlib.sha256(raw[i << 22:(i + 1) << 22]).hexdigest())' "$D/disk2.raw" "$ct")
oid=vbk_chunk.$hex
flip='
import sys
b = bytearray(open(sys.argv[1], "rb").read())
b[len(b) // 2] ^= 0xff
open(sys.argv[1], "wb").write(bytes(b))'
case "$VBK_TEST_STORE_KIND" in
  local)
    f=${repo#local:}/obj/$oid
    [ -f "$f" ] || fail "no chunk object $f"
    python3 -c "$flip" "$f" ;;
  rados)
    ns=${repo#rados:"$VBK_TEST_POOL"/}
    ns=${ns%%\?*}
    r=(rados -c "$CEPH_CONF" -p "$VBK_TEST_POOL" -N "$ns")
    "${r[@]}" get "$oid" "$D/chunk" || fail "rados get $oid"
    python3 -c "$flip" "$D/chunk"
    "${r[@]}" put "$oid" "$D/chunk" || fail "rados put $oid" ;;
esac

mount_vbk "$M" --repo "$repo"
P=$M/backups/vm/${times[1]}/files/p1
ls "$P" >/dev/null || fail "listing after the corruption"
out=$(cat "$P$target" 2>&1 >/dev/null) && fail "a file on a corrupt chunk read without error"
[[ $out == *"Input/output error"* ]] || fail "corrupt chunk: expected EIO, got: $out"
cmp "$P$control" "$D/src2$control" || fail "a file elsewhere does not read right"
timeout 10 ls -R "$P" >/dev/null || fail "the mount is not responsive after an error"
grep -q "$hex" "$TEST_DIR/mount-mnt.log" ||
  fail "no log line names chunk $hex: $(tail -5 "$TEST_DIR/mount-mnt.log")"
# The error is not cached as data: it fails again, the same way.
! cat "$P$target" >/dev/null 2>&1 || fail "second read of the corrupt file succeeded"
expect_fail "Input/output error" v files get "backup:vm/${ids[1]}:/p1$target" - --repo "$repo"
umount_vbk "$M"

# ---- A chunk whose CRC-32 is right but whose data does not match its name -----
# (what only the SHA-256 catches: a writer's bug, or bytes replaced along
# with their checksum).  The mount checks the CRC-32 before it hands data
# out and the SHA-256 right after, once per chunk: the first read may
# return the data, then the log names the chunk and every read of it is
# EIO; vbk files (no FUSE) checks before.  The control file's chunk is
# rewritten as a raw chunk with one byte of the control file changed.
cc=$(chunk_of "$control")
blk=$(debugfs -R "bmap $control 0" "$D/fs2.img" 2>/dev/null)
hex2=$(python3 - "$D/disk2.raw" "$cc" "$D/chunk2" $(((1 << 20) + blk * bsize)) <<'PY'
import hashlib, struct, sys, zlib
raw = open(sys.argv[1], "rb").read()
i, at = int(sys.argv[2]), int(sys.argv[4])
plain = bytearray(raw[i << 22:(i + 1) << 22])
print(hashlib.sha256(plain).hexdigest())
plain[at - (i << 22)] ^= 0x55
hdr = b"VBKC" + struct.pack("<HBBIII", 1, 0, 0, len(plain), len(plain),
                            zlib.crc32(plain)) + bytes(12)
open(sys.argv[3], "wb").write(hdr + plain)
PY
) || fail "making the rewritten chunk"
[ "$hex2" != "$hex" ] || fail "layout: the control shares the corrupt chunk"
case "$VBK_TEST_STORE_KIND" in
  local) cp "$D/chunk2" "${repo#local:}/obj/vbk_chunk.$hex2" ;;
  rados) "${r[@]}" put "vbk_chunk.$hex2" "$D/chunk2" || fail "rados put" ;;
esac
expect_fail "$hex2 is corrupt: its data does not match its name" v files get "backup:vm/${ids[1]}:/p1$control" - --repo "$repo"
mount_vbk "$M" --repo "$repo"
P=$M/backups/vm/${times[1]}/files/p1
cat "$P$control" >/dev/null 2>&1 || true
for _ in $(seq 200); do
  grep -q "$hex2.*does not match its name" "$TEST_DIR/mount-mnt.log" && break
  sleep 0.1
done
grep -q "$hex2.*does not match its name" "$TEST_DIR/mount-mnt.log" ||
  fail "no log line names chunk $hex2: $(tail -5 "$TEST_DIR/mount-mnt.log")"
# What the kernel kept from the first read is dropped (FUSE honours it).
dd if="$P$control" iflag=nocache count=0 status=none
out=$(cat "$P$control" 2>&1 >/dev/null) && fail "a chunk that does not match its name read without error"
[[ $out == *"Input/output error"* ]] || fail "wrong chunk: expected EIO, got: $out"
! cat "$P$control" >/dev/null 2>&1 || fail "second read of the wrong chunk succeeded"
umount_vbk "$M"
