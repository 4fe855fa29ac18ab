#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# blockd-error-context.sh - a store error says which backend, operation
# and object failed, not only strerror (VBK_TEST_BACKENDS).  vbk-blockd
# runs on fault:op=write,err=EIO,trigger=FILE@STORE; a write to an object
# the image already has (so the object map and change log are not
# written again) fails in the store's asynchronous completion, and the
# daemon's log line for it must name the fault backend, aio_write and
# the image's data object.  The copy engine (vbk image import) on the
# same kind of store must name the object it failed to write.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires nbdsh
inner=$(new_store)
trig=$TEST_DIR/trigger
vbk --store "$inner" image create disk --size 1M --object-size 64K >/dev/null
id=$(vbk --store "$inner" image info disk --json |
     python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
# Object 3 of the image (docs/FORMAT.md: vbk_data.ID.OBJNO, 16 hex digits).
oid=vbk_data.$id.0000000000000003

store="fault:op=write,err=EIO,sticky=1,trigger=$trig@$inner"
start_blockd pid "$TEST_DIR/blockd.sock" --host-id hostA
log=$TEST_DIR/blockd.log

nbdsh -u "nbd+unix:///disk?socket=$TEST_DIR/blockd.sock" -c "
import errno, os
h.pwrite(b'a' * 4096, 3 * 65536)      # allocates object 3: map, log, data
h.flush()
open('$trig', 'w').close()            # from now on every data write fails
try:
    h.pwrite(b'b' * 4096, 3 * 65536 + 8192)
except nbd.Error as e:
    assert e.errnum == errno.EIO, e
else:
    raise AssertionError('the write succeeded on a failing store')
os.unlink('$trig')
" || fail "nbdsh: the faulty write did not fail as EIO"
stop_blockd pid

line=$(grep 'write 4096 at 204800' "$log") ||
  fail "no log line for the failed write: $(tail -5 "$log")"
echo "blockd: $line"
case $line in
  *"store fault: aio_write: $oid: "*"Input/output error"*) ;;
  *) fail "the log line does not name backend, operation and object $oid: $line" ;;
esac

# The copy engine: the N-th write-class call of an import fails, for N
# from 1 up until the failure hits a data object (the calls before it
# create the name, header and map); the message names that object.
head -c 262144 /dev/urandom >"$TEST_DIR/src.raw"
n=0 msg=
while [ $n -lt 30 ]; do
  n=$((n + 1))
  expect_fail . vbk --store "fault:op=write,err=EIO,nth=$n@$inner" \
    image import "$TEST_DIR/src.raw" "imp$n"
  msg=$(cat "$TEST_DIR/err")
  case $msg in *vbk_data.*) break ;; esac
done
echo "import (write call $n fails): $msg"
case $msg in
  *"store fault: write: vbk_data."[0-9a-f]*".0000000000000000: "*"Input/output error"*) ;;
  *) fail "the import's error does not name backend, operation and data object: $msg" ;;
esac
echo "ok"
