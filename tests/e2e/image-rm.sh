#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# image-rm.sh - "vbk image rm" cannot lose a running VM's data and leaves
# nothing behind, once per store backend (VBK_TEST_BACKENDS):
# - while a vbk-blockd holds the image's lease (a client wrote), rm is
#   refused with -EBUSY and a message naming the holder; the data stays;
# - rm --force fences the holder first (its later writes fail), then
#   removes every object of the image: data objects and their snapshot
#   copies, header, object map, change logs (live and merged), name and
#   directory entry: the store's objects are the same as before the image
#   was created (and another image is untouched);
# - an rm that fails part way (a fault: store failing the N-th write)
#   leaves the image "removing": listed so, not served, and a second rm
#   finishes it, again down to the objects there were before.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires qemu-io
requires nbdsh
requires python3
[ "$VBK_TEST_STORE_KIND" = rados ] && requires rados

M=$((1 << 20))
store=$(new_store)
v () { vbk --store "$store" "$@"; }

# objects: every object of the store, one per line, sorted (local: the
# object files and their snapshot copies, copy-on-write state and
# metadata; rados: the head objects and, per object, its clones).
objects ()
{
  case "$VBK_TEST_STORE_KIND" in
    local)
      (cd "${store#local:}" && find obj clone snapset meta -type f 2>/dev/null | sort) ;;
    rados)
      local o
      for o in $(rados_of "$store" ls | sort); do
        echo "$o"
        # (An object being trimmed may be gone by now: still listed.)
        { rados_of "$store" listsnaps "$o" 2>/dev/null || true; } |
          awk -v o="$o" '$1 ~ /^[0-9]+$/ { print o " clone " $1 }'
      done ;;
  esac
}
# same_objects WHAT: the store holds the objects of $TEST_DIR/before
# (RADOS trims the copies of removed snapshots in the background: wait
# for that, up to a minute).
same_objects ()
{
  local end=$((SECONDS + 60))
  while :; do
    objects >"$TEST_DIR/after"
    cmp -s "$TEST_DIR/before" "$TEST_DIR/after" && return 0
    [ "$VBK_TEST_STORE_KIND" = rados ] && [ "$SECONDS" -lt "$end" ] || break
    sleep 1
  done
  fail "$1: objects left: $(diff "$TEST_DIR/before" "$TEST_DIR/after" | head -20)"
}
qio ()
{
  qemu-io -f raw -c "$2" "$(host_uri "$1" "${3:-disk}")" >"$TEST_DIR/qio.out" 2>&1 &&
    ! grep -Eq 'error|failed|verification' "$TEST_DIR/qio.out"
}
state () { v image ls --json | python3 -c 'import json,sys; print([i["state"] for i in json.load(sys.stdin) if i["name"] == sys.argv[1]][0])' "$1"; }

# An image that must survive every rm below, and the store's own
# objects (rados: the snapshot id registry, made by a first snapshot).
v image create other --size 8M
v snap create other@first
v snap rm other@first
objects >"$TEST_DIR/before"

# populate: image "disk" with data, three snapshots (copies of objects),
# one removed (a merged change list), and changes after the last one.
populate ()
{
  head -c $((12 * M)) /dev/urandom >"$TEST_DIR/disk.raw"
  truncate -s 64M "$TEST_DIR/disk.raw"
  v image import "$TEST_DIR/disk.raw" disk
  v snap create disk@s1
  start_host A
  qio A "write -P 0x11 0 5M" || fail "write through A: $(cat "$TEST_DIR/qio.out")"
  v snap create disk@s2
  qio A "write -P 0x22 4M 6M" || fail "write through A: $(cat "$TEST_DIR/qio.out")"
  v snap create disk@s3
  v snap rm disk@s2
  qio A "write -P 0x33 40M 1M" || fail "write through A: $(cat "$TEST_DIR/qio.out")"
}

# ---- refused while held, --force fences -----------------------------------------
populate
keep_open A
qio A "write -P 0x44 20M 64k" || fail "write through A: $(cat "$TEST_DIR/qio.out")"
[ "$(holder)" = hostA ] || fail "holder after A's write: $(holder)"
expect_status 1 "image rm: image 'disk' is open for writing on hostA .*--force" \
  v image rm disk
v image info disk >/dev/null
qio A "read -P 0x44 20M 64k" || fail "data gone after a refused rm: $(cat "$TEST_DIR/qio.out")"
[ "$(state disk)" = ok ] || fail "a refused rm changed the state: $(state disk)"

v image rm disk --force 2>"$TEST_DIR/rm.err"
grep -q "breaking the lease of hostA" "$TEST_DIR/rm.err" ||
  fail "rm --force did not say it fenced hostA: $(cat "$TEST_DIR/rm.err")"
expect_status 1 "image info: .*disk" v image info disk
# The fenced holder cannot write any more (nor bring objects back).
qio A "write -P 0x55 0 64k" && fail "the fenced holder still writes"
kill -9 "$pid_A" 2>/dev/null || true
wait "$pid_A" 2>/dev/null || true
kill "$keeper_A" 2>/dev/null || true
same_objects "rm --force"

# ---- an rm that dies part way is finished by another ------------------------------
populate
stop_blockd pid_A
for nth in 1 4 9; do
  expect_status 1 "image rm: .*Input/output error" \
    vbk --store "fault:op=write,err=EIO,nth=$nth@$store" image rm disk
  [ "$(state disk)" = removing ] || fail "after a failed rm (nth=$nth): state $(state disk)"
  v image ls | grep -Eq "^disk +64 MiB +4 MiB +removing$" ||
    fail "ls does not show disk as removing: $(v image ls)"
  # Not served meanwhile.
  start_host A
  qio A "read 0 4k" && fail "an image being removed was served"
  grep -Eq "being removed|no such image" "$TEST_DIR/qio.out" ||
    fail "no reason given: $(cat "$TEST_DIR/qio.out")"
  stop_blockd pid_A
  expect_status 1 "image import: .*(exist|taken)" v image import "$TEST_DIR/disk.raw" disk
  v image rm disk
  same_objects "rm after a failed rm (nth=$nth)"
  [ $nth = 9 ] || populate
  [ $nth = 9 ] || stop_blockd pid_A
done

v image info other >/dev/null
echo "image-rm ($VBK_TEST_STORE_KIND): OK"
