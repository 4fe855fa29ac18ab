# SPDX-License-Identifier: MIT
#
# fuse-functions.sh - shared by the "vbk mount" tests; source it after
# functions.sh.

PATH=$PATH:/usr/sbin:/sbin
TREE="python3 $VBK_SRC/tests/fuse-tree.py"

# fuse_test_setup: a store and a repository of the test's backend
# ($store, $repo), v () for vbk on that store, $D (the test's directory)
# and $M (where the test mounts).
fuse_test_setup ()
{
  if [ "$VBK_TEST_STORE_KIND" = rados ]; then
    requires rados
  fi
  store=$(new_store)
  repo=$(new_store)
  v () { vbk --store "$store" "$@"; }
  D=$TEST_DIR
  M=$D/mnt
}

# requires_fuse: the tests mount for real; without a usable /dev/fuse
# they cannot run (exit 77: skipped).
requires_fuse ()
{
  requires fusermount3
  if ! [ -c /dev/fuse ] || ! { exec 9<>/dev/fuse; } 2>/dev/null; then
    echo "SKIP: /dev/fuse is not usable here" >&2
    exit 77
  fi
  exec 9>&-
}

# make_disk DIR VERSION: DIR/srcVERSION (the tree), DIR/fsVERSION.img (an
# ext4 file system of 48 MiB made from it with mke2fs -d) and
# DIR/diskVERSION.raw: 64 MiB, GPT, p1 = the file system at 1 MiB, p2 =
# 8 MiB without a file system.
make_disk ()
{
  local d=$1 v=$2
  $TREE make "$d/src$v" "$v"
  mke2fs -q -t ext4 -b 4096 -E root_owner=0:0 -d "$d/src$v" "$d/fs$v.img" 48M ||
    fail "mke2fs"
  truncate -s 64M "$d/disk$v.raw"
  printf 'label: gpt\nstart=2048, size=98304, type=linux\nstart=100352, size=16384, type=linux\n' |
    sfdisk -q "$d/disk$v.raw" >/dev/null || fail "sfdisk"
  dd if="$d/fs$v.img" of="$d/disk$v.raw" bs=1M seek=1 conv=notrunc,sparse \
    status=none || fail "dd"
}

# mount_vbk DIR [ARGS...]: vbk mount on DIR (created) with the test's
# store, logging to $TEST_DIR/mount-NAME.log; unmounted at exit.
mount_vbk ()
{
  local dir=$1
  shift
  mkdir -p "$dir"
  vbk --store "$store" mount "$dir" --log "$TEST_DIR/mount-$(basename "$dir").log" "$@" ||
    fail "vbk mount $dir failed"
  cleanup_fn "fusermount3 -u '$dir' 2>/dev/null"
  mountpoint -q "$dir" || fail "$dir is not a mount point after vbk mount"
}

# umount_vbk DIR: vbk umount, then DIR is no mount point.
umount_vbk ()
{
  local i
  vbk umount "$1" || fail "vbk umount $1"
  for ((i = 0; i < 100; i++)); do
    mountpoint -q "$1" || return 0
    sleep 0.05
  done
  fail "$1 still mounted after vbk umount"
}

# same_tree SRC DIR WHAT: the manifests (paths, types, modes, sizes,
# mtimes, contents) of SRC and DIR (without lost+found) are equal.
same_tree ()
{
  $TREE manifest "$1" >"$TEST_DIR/m-src"
  $TREE manifest "$2" | grep -v '^lost+found' >"$TEST_DIR/m-got" ||
    fail "$3: cannot walk $2"
  diff "$TEST_DIR/m-src" "$TEST_DIR/m-got" >"$TEST_DIR/m-diff" ||
    fail "$3: trees differ: $(head -20 "$TEST_DIR/m-diff")"
}
