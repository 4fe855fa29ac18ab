#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# fault-kill9.sh - nothing acknowledged is lost across kill -9 of
# vbk-blockd (VBK_TEST_BACKENDS).  Each round: a snapshot through the
# lease holder; a writer (tests/tools/pattern-io.py) keeps 8 writes of
# self-describing 4 KiB blocks in flight, with FLUSHes and some FUA
# writes, and records what was acknowledged and what was made durable;
# vbk-blockd gets SIGKILL at a random moment of the stream and is
# restarted; then every sector of the test area must hold the last
# durable write to it or a later write to the same block (never older
# data, never anything else), and `vbk diff --from` the round's snapshot
# must cover every acknowledged write and every block that changed.
# Rounds: $VBK_FAULT_ROUNDS (default 20).

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires nbdsh
PY=$(python_with_nbd)
PIO=$VBK_SRC/tests/tools/pattern-io.py
rounds=${VBK_FAULT_ROUNDS:-20}
blocks=2048
store=$(new_store)
sock=$TEST_DIR/A.sock
uri="nbd+unix:///disk?socket=$sock"
state=$TEST_DIR/state.json

vbk --store "$store" image create disk --size 64M --object-size 1M >/dev/null
start_blockd pid "$sock" --host-id hostA --lease-duration 6
# An idle client keeps the export open between the other clients, as a
# VM's QEMU does: the lease stays with this daemon, and snapshots go
# through it.
keep_open A

total_w=0 total_d=0
for ((round = 1; round <= rounds; round++)); do
  # A write outside the test area takes the lease, so the snapshot goes
  # through this holder.
  nbdsh -u "$uri" -c 'h.pwrite(b"w" * 4096, 48 << 20)' ||
    fail "round $round: warm-up write failed"
  vbk --store "$store" snap create "disk@r$round" >/dev/null ||
    fail "round $round: snapshot failed"

  rec=$TEST_DIR/record-$round.json ready=$TEST_DIR/ready-$round
  "$PY" "$PIO" write "$uri" "$round" "$rec" --blocks $blocks \
    --ready "$ready" --seed $((RANDOM * 32768 + RANDOM)) \
    >"$TEST_DIR/writer.out" 2>&1 &
  writer=$!
  for ((t = 0; t < 400; t++)); do
    [ -e "$ready" ] && break
    kill -0 "$writer" 2>/dev/null || break
    sleep 0.025
  done
  [ -e "$ready" ] || fail "round $round: no flush acknowledged ($(cat "$TEST_DIR/writer.out"))"
  # A random moment in the next 0.6 s of the stream.
  sleep "0.$(printf %03d $((RANDOM % 600)))"
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
  kill "$keeper_A" 2>/dev/null || true
  wait "$writer" || fail "round $round: the writer failed: $(cat "$TEST_DIR/writer.out")"
  cat "$TEST_DIR/writer.out"

  start_blockd pid "$sock" --host-id hostA --lease-duration 6
  keep_open A
  vbk --store "$store" diff disk --from "r$round" --json >"$TEST_DIR/diff.json" ||
    fail "round $round: vbk diff failed"
  "$PY" "$PIO" verify "$uri" "$rec" "$state" --blocks $blocks \
    --diff "$TEST_DIR/diff.json" || fail "round $round: verification failed"
  if [ "$round" -eq 1 ]; then
    # The checks can fail: a durable write that is not there, and a diff
    # that misses a change, must be caught.
    "$PY" - "$rec" "$TEST_DIR/diff.json" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
r["writes"]["999999999"] = [0, 0, 1]
r["durable"].append(999999999)
json.dump(r, open(sys.argv[1] + ".lost", "w"))
json.dump({"extents": []}, open(sys.argv[2] + ".empty", "w"))
PYEOF
    cp "$state" "$state.copy"
    "$PY" "$PIO" verify "$uri" "$rec.lost" "$state.copy" --blocks $blocks \
      >"$TEST_DIR/self.out" && fail "the verifier missed a lost write"
    grep -q '^LOST: 1 durable writes' "$TEST_DIR/self.out" ||
      fail "the verifier did not report the lost write: $(cat "$TEST_DIR/self.out")"
    cp "$state" "$state.copy"
    "$PY" "$PIO" verify "$uri" "$rec" "$state.copy" --blocks $blocks \
      --diff "$TEST_DIR/diff.json.empty" >"$TEST_DIR/self.out" &&
      fail "the verifier missed a diff that lists nothing"
    grep -q '^CBT: ' "$TEST_DIR/self.out" ||
      fail "the verifier did not report the short diff: $(cat "$TEST_DIR/self.out")"
  fi
  read -r w d < <("$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(len(r["writes"]), len(r["durable"]))' "$rec")
  total_w=$((total_w + w)) total_d=$((total_d + d))
  # Keep two snapshots: removing one moves its changes to the next.
  if [ "$round" -gt 2 ]; then
    vbk --store "$store" snap rm "disk@r$((round - 2))" >/dev/null ||
      fail "round $round: snapshot removal failed"
  fi
done
kill "$keeper_A"
stop_blockd pid
echo "fault-kill9: $rounds rounds, $total_w writes, $total_d durable: 0 lost"
