#!/bin/bash
# SPDX-License-Identifier: MIT
#
# demo.sh - vbk's main job on the embedded local store, start to end:
# create an image, import a file, serve it over NBD with vbk-blockd,
# write and read it with qemu-io / qemu-img / nbdcopy / nbdinfo, take a
# snapshot while it is served, list what changed since, read the snapshot
# over NBD, back a disk with a file system up twice (incremental), verify
# and restore it, mount the snapshots and backups with FUSE and copy a
# file out, export and compare.
#
# Every check is a command of its own, so that under set -e a mismatch
# (cmp, a qemu-io pattern read, a missing file) ends the demo with an
# error instead of printing a success line (tests/e2e/demo.sh runs it).
#
# Usage: deploy/demo.sh [BUILD_DIR]   (default: build)
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "${1:-$src/build}/bin" && pwd)
work=$(mktemp -d /tmp/vbk-demo.XXXXXX)
store="local:$work/store"
sock="$work/blockd.sock"
pid=
mnt="$work/mnt"
cleanup ()
{
  mountpoint -q "$mnt" 2>/dev/null && fusermount3 -u "$mnt"
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
step () { printf '\n== %s\n' "$*"; }
vbk () { "$bin/vbk" --store "$store" "$@"; }

step "create a 1 GiB thin image and import a small disk into another"
vbk image create vm1-disk0 --size 1G
head -c 3M /dev/urandom >"$work/seed.raw"
truncate -s 64M "$work/seed.raw"
vbk image import "$work/seed.raw" vm1-seed
vbk image ls

step "serve every image over NBD (unix socket $sock)"
"$bin/vbk-blockd" --store "$store" --socket "$sock" --host-id demo-host &
pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
nbdinfo --list "nbd+unix:///?socket=$sock" | grep -E 'export=|export-size' || true

step "write through NBD with qemu-io, read back with qemu-img"
qemu-io -f raw -c 'write -P 0xab 0 4M' -c 'write -P 0xcd 512M 1M' -c flush \
  "nbd+unix:///vm1-disk0?socket=$sock"
qemu-io -f raw -c 'read -P 0xab 0 4M' -c 'read -P 0xcd 512M 1M' -c 'read -P 0 600M 1M' \
  "nbd+unix:///vm1-disk0?socket=$sock"
qemu-img map -f raw --output=json "nbd+unix:///vm1-disk0?socket=$sock"

step "snapshot while served, write more, list what changed since the snapshot"
vbk snapshot create vm1-disk0@demo
qemu-io -f raw -c 'write -P 0xef 100M 64k' -c flush "nbd+unix:///vm1-disk0?socket=$sock"
vbk lease status vm1-disk0
vbk diff vm1-disk0 --from demo
nbdinfo --map=qemu:dirty-bitmap:demo "nbd+unix:///vm1-disk0?socket=$sock"
qemu-io -f raw -r -c 'read -P 0 100M 64k' -c 'read -P 0xab 0 4M' \
  "nbd+unix:///vm1-disk0@demo?socket=$sock" >/dev/null
echo "snapshot vm1-disk0@demo: old bytes intact"

step "a disk with an ext4 file system, served and written through NBD"
mkdir -p "$work/files/etc" "$work/files/home/alice"
echo "hello from vm1" >"$work/files/etc/motd"
head -c 2M /dev/urandom >"$work/files/home/alice/data.bin"
truncate -s 256M "$work/fs.raw"
mke2fs -q -t ext4 -d "$work/files" "$work/fs.raw"
vbk image create vm1-data --size 256M
nbdcopy "$work/fs.raw" "nbd+unix:///vm1-data?socket=$sock"

step "back it up (a crash-consistent snapshot through the lease holder), change it, back up again"
export VBK_REPO="local:$work/backups"
vbk backup init
vbk backup run vm1-data --tag first
qemu-io -f raw -c 'write -P 0x5a 200M 1M' -c flush "nbd+unix:///vm1-data?socket=$sock"
vbk backup run vm1-data --tag second      # reads only the changed chunks
vbk backup ls vm1-data
vbk backup verify
first=$(vbk backup ls vm1-data --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
vbk backup restore "$first" --to-file "$work/restored.raw"
cmp "$work/fs.raw" "$work/restored.raw"
echo "restore of the first backup: identical to the disk it saved"

step "mount snapshots and backups read-only (FUSE) and copy a file out"
mkdir -p "$mnt"
vbk mount "$mnt" --repo "$VBK_REPO"
ls "$mnt" "$mnt/images/vm1-disk0/snapshots" "$mnt/backups/vm1-data"
ls -l "$mnt/backups/vm1-data/latest/"
motd=$(cat "$mnt/backups/vm1-data/latest/files/etc/motd")
echo "$motd"
[ "$motd" = "hello from vm1" ]
cmp "$work/files/home/alice/data.bin" "$mnt/backups/vm1-data/latest/files/home/alice/data.bin"
echo "a file read out of the backup through the mount: identical"
ls -l "$mnt/backups/vm1-data/$first/files/home/alice"
vbk umount "$mnt"
vbk files ls "backup:vm1-data/$first:/home/alice"

step "copy the imported disk out through NBD and compare"
nbdcopy --connections=4 --threads=4 "nbd+unix:///vm1-seed?socket=$sock" "$work/copy.raw"
cmp "$work/seed.raw" "$work/copy.raw"
echo "nbdcopy: identical"

step "stop the server (SIGTERM flushes), export with vbk and compare"
kill -TERM "$pid"; wait "$pid"; pid=
vbk image export vm1-seed "$work/export.raw"
cmp "$work/seed.raw" "$work/export.raw"
echo "export: identical"
vbk image info vm1-disk0
vbk image info --json vm1-disk0
echo
echo "demo: done"
