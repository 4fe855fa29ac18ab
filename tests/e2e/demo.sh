#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# demo.sh - the README's first command ends in deploy/demo.sh, vbk's main
# job on the local store (serve over NBD, write, snapshot, back up twice,
# verify, restore, mount, copy a file out, export).  Run it here so that
# it keeps working: every step there is a check that ends the demo with an
# error on a mismatch, and the last line it prints is "demo: done".

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires qemu-io
requires qemu-img
requires nbdcopy
requires nbdinfo
requires mke2fs
requires fusermount3
[ -e /dev/fuse ] || fail "no /dev/fuse: the demo mounts backups"

out=$TEST_DIR/demo.out
rc=0
PATH=/usr/bin:$PATH bash "$VBK_SRC/deploy/demo.sh" "$VBK_BIN/.." >"$out" 2>&1 || rc=$?
[ "$rc" = 0 ] || { tail -n 40 "$out"; fail "deploy/demo.sh exited with $rc"; }
[ "$(tail -n 1 "$out")" = "demo: done" ] || { tail -n 20 "$out"; fail "demo did not reach its end"; }
for line in "snapshot vm1-disk0@demo: old bytes intact" \
            "restore of the first backup: identical to the disk it saved" \
            "a file read out of the backup through the mount: identical" \
            "nbdcopy: identical" "export: identical" "hello from vm1"; do
  grep -qxF "$line" "$out" || { cat "$out"; fail "demo output lacks: $line"; }
done
echo "demo: OK (deploy/demo.sh ran to the end, every comparison equal)"
