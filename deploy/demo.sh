#!/bin/bash
# SPDX-License-Identifier: MIT
#
# demo.sh - vbk's main job on the embedded local store, start to end:
# create an image, import a file, serve it over NBD with vbk-blockd,
# write and read it with qemu-io / qemu-img / nbdcopy / nbdinfo, take a
# snapshot while it is served, list what changed since, read the snapshot
# over NBD, export and compare.  Backup and `vbk mount` are not built yet.
#
# Usage: deploy/demo.sh [BUILD_DIR]   (default: build)
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "${1:-$src/build}/bin" && pwd)
work=$(mktemp -d /tmp/vbk-demo.XXXXXX)
store="local:$work/store"
sock="$work/blockd.sock"
pid=
cleanup () { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
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
vbk snap create vm1-disk0@demo
qemu-io -f raw -c 'write -P 0xef 100M 64k' -c flush "nbd+unix:///vm1-disk0?socket=$sock"
vbk lease status vm1-disk0
vbk diff vm1-disk0 --from demo
nbdinfo --map=qemu:dirty-bitmap:demo "nbd+unix:///vm1-disk0?socket=$sock"
qemu-io -f raw -r -c 'read -P 0 100M 64k' -c 'read -P 0xab 0 4M' \
  "nbd+unix:///vm1-disk0@demo?socket=$sock" >/dev/null && echo "snapshot vm1-disk0@demo: old bytes intact"

step "copy the imported disk out through NBD and compare"
nbdcopy --connections=4 --threads=4 "nbd+unix:///vm1-seed?socket=$sock" "$work/copy.raw"
cmp "$work/seed.raw" "$work/copy.raw" && echo "nbdcopy: identical"

step "stop the server (SIGTERM flushes), export with vbk and compare"
kill -TERM "$pid"; wait "$pid"; pid=
vbk image export vm1-seed "$work/export.raw"
cmp "$work/seed.raw" "$work/export.raw" && echo "export: identical"
vbk image info vm1-disk0
vbk image info --json vm1-disk0
echo
echo "demo: done"
