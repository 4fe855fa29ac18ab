#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# fault-store.sh - store errors reach the NBD client as NBD errors, never
# as a wrong success (VBK_TEST_BACKENDS).  For each store call class
# ($VBK_FAULT_CLASSES, default "read write lock snap"; "meta" can be
# added, but no xattr or omap call happens in this workload once the
# client is connected, not even for the snapshot) x error (EIO, ENOSPC,
# ETIMEDOUT) x N ($VBK_FAULT_NTH, default "1 3"; for data writes
# also every call from the 5th on), vbk-blockd runs on
# fault:op=CLASS,err=ERR,nth=N,trigger=FILE@STORE (the N-th call of the
# class after the client connected fails) and tests/tools/fault-io.py
# runs a small write/flush/read/zero workload with a snapshot (vbk snap
# create, through this server as the lease holder) in the middle: every
# failed command must fail with the NBD error the store error maps to
# (EIO for ETIMEDOUT, which NBD lacks), the connection must stay up,
# nothing may hang, every successful read must return what the writes
# before it left, and a failed snapshot must say why.  Then the server
# gets SIGKILL, and through a server on the clean store every write
# covered by a successful FLUSH or FUA must read back, nothing else may
# appear, `vbk diff` from a snapshot taken before must cover it, and the
# snapshot, if it exists, must hold exactly the writes acknowledged
# before it was asked for.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires nbdsh
PY=$(python_with_nbd)
FIO=$VBK_SRC/tests/tools/fault-io.py
inner=$(new_store)
store=$inner
start_blockd clean "$TEST_DIR/clean.sock" --host-id hostC --lease-duration 2

n=0 failed=0 cmds_failed=0 quiet=""
# "Ns": the N-th call and every one after it (sticky=1); for data writes.
for op in ${VBK_FAULT_CLASSES:-read write lock snap}; do
  sticky= pause=
  [ "$op" = write ] && sticky=5s
  # Pauses in the workload let lease renewals (every third of 6 s) fall
  # inside it.
  [ "$op" = lock ] && pause=1
  for err in EIO ENOSPC ETIMEDOUT; do
    for nth in ${VBK_FAULT_NTH:-1 3} ${sticky:+$sticky}; do
      n=$((n + 1))
      img=c$n trig=$TEST_DIR/trigger-$n rec=$TEST_DIR/rec-$n.json
      # NBD has no ETIMEDOUT: EIO.  A failed data write must keep its
      # ENOSPC (QEMU's werror=enospc tells "disk full" by it); a failure
      # of another call class (a lease, the object map, a snapshot
      # context) may also surface as a plain EIO.
      case $err in
        ETIMEDOUT) expect=EIO ;;
        *) expect=$err ;;
      esac
      [ "$op" = write ] || [ "$expect" = EIO ] || expect=$expect,EIO
      vbk --store "$inner" image create "$img" --size 4M --object-size 64K >/dev/null
      vbk --store "$inner" snap create "$img@base" >/dev/null
      echo "== $op $err nth=$nth (image $img)"
      spec="op=$op,err=$err,nth=${nth%s},trigger=$trig"
      [ "${nth%s}" = "$nth" ] || spec=$spec,sticky=1
      store="fault:$spec@$inner"
      # Leases of 6 s: one failed renewal is retried in time, and a busy
      # machine does not let the lease run out unrenewed.
      start_blockd faulty "$TEST_DIR/faulty-$n.sock" --host-id hostF \
        --lease-duration 6
      store=$inner
      ok=1
      "$PY" "$FIO" run "nbd+unix:///$img?socket=$TEST_DIR/faulty-$n.sock" \
        "$trig" "$rec" --expect "$expect" ${pause:+--pause $pause} \
        --snap-cmd "$VBK_BIN/vbk --store $inner snap create $img@mid" || ok=0
      kill -9 "$faulty"
      wait "$faulty" 2>/dev/null || true
      vbk --store "$inner" diff "$img" --from base --json >"$TEST_DIR/diff.json" ||
        fail "$img: vbk diff failed"
      snap_exists=
      vbk --store "$inner" snap ls "$img" | grep -qw mid && snap_exists=--snap-exists
      "$PY" "$FIO" verify "nbd+unix:///$img?socket=$TEST_DIR/clean.sock" \
        "$rec" --diff "$TEST_DIR/diff.json" $snap_exists \
        --snap-uri "nbd+unix:///$img@mid?socket=$TEST_DIR/clean.sock" || ok=0
      if [ $n = 1 ]; then
        # The check can fail: a durable write that is not there.
        "$PY" - "$rec" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
r["durable"][23] = ["999"]
json.dump(r, open(sys.argv[1] + ".lost", "w"))
PYEOF
        "$PY" "$FIO" verify "nbd+unix:///$img?socket=$TEST_DIR/clean.sock" \
          "$rec.lost" >"$TEST_DIR/self.out" &&
          fail "the verifier missed a lost write"
        grep -q 'block 23 sector 0 holds zero' "$TEST_DIR/self.out" ||
          fail "the verifier did not report the lost write: $(cat "$TEST_DIR/self.out")"
      fi
      if [ $ok = 0 ]; then
        echo "FAILED: $op $err nth=$nth"
        failed=$((failed + 1))
      fi
      k=$("$PY" -c 'import json,sys; print(sum(1 for x in json.load(open(sys.argv[1]))["log"] if x[3]))' "$rec")
      cmds_failed=$((cmds_failed + k))
      [ "$k" -gt 0 ] || quiet="$quiet $op/$err/$nth"
    done
  done
done
stop_blockd clean
echo "fault-store: $n cases, $cmds_failed commands failed as errors, $failed cases wrong"
echo "cases where no command failed (the fault was absorbed or never reached):$quiet"
[ "$failed" -eq 0 ] || fail "$failed of $n fault cases lost data or misreported an error"
