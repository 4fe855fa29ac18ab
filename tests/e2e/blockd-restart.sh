#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# blockd-restart.sh - vbk-blockd restarted and upgraded under a connected
# client (VBK_TEST_BACKENDS).  One qemu-io stays connected throughout,
# through QEMU's NBD client with reconnect-delay, as a VM's disk is.  It
# writes pattern A, then streams writes of other patterns to other
# offsets (two asynchronous writes, a read of A and a short pause per
# step, a flush every eighth step).  Under that stream vbk-blockd is
# 1. stopped with SIGTERM and started again from another copy of the
#    binary (an upgrade), and
# 2. killed with SIGKILL and started again: the new daemon, with the same
#    host id and socket, takes its earlier run's lease back at once, so
#    the client waits for no lease to run out,
# each time on the same socket with the same --host-id, and each time
# after 300 ms of SIGSTOP, so that requests of the client are pending in
# the daemon when the signal comes.  The client must see no error, and
# the new daemon must take the lease without waiting for any lease to run
# out (its log shows how it took it); how long the client's writes
# stalled is measured and printed, not asserted: it is mostly QEMU's
# reconnect back-off (attempts 1, 2, 4, 8 s apart), which a slow start
# of the new daemon on a loaded machine pushes to the next step.  At
# the end every write reads back through that client (read -P), and the
# image equals a model file that got the same writes (qemu-img compare).

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires qemu-io
requires qemu-img
requires stdbuf

store=$(new_store)
sock=$TEST_DIR/blockd.sock
log=$TEST_DIR/blockd.log
out=$TEST_DIR/client.out
duration=15          # lease duration, s: a restart must not wait it out
steps=120            # client steps; the restarts come at steps 30 and 75
KiB=1024
MiB=$((1024 * KiB))

now_us () { echo "${EPOCHREALTIME/./}"; }
# stamp: prefixes every line with the time it arrived (microseconds).
stamp () { local l; while IFS= read -r l; do printf '%s %s\n' "${EPOCHREALTIME/./}" "$l"; done; }

# start_daemon BINARY: starts vbk-blockd and waits until it listens.  A
# socket file left by a killed daemon stays: blockd replaces it.
start_daemon ()
{
  local i
  "$1" --store "$store" --socket "$sock" --host-id host-r \
    --lease-duration "$duration" 2>>"$log" &
  pid=$!
  cleanup_fn "kill -9 $pid 2>/dev/null"
  for ((i = 0; i < 3000; i++)); do
    grep -q "vbk-blockd\[$pid\]: info: listening on" "$log" && return 0
    kill -0 "$pid" 2>/dev/null || fail "vbk-blockd did not start"
    sleep 0.02
  done
  fail "vbk-blockd did not listen within 60 s"
}

# wait_written N: waits until the client has completed N writes.
wait_written ()
{
  local i
  for ((i = 0; i < 1500; i++)); do
    [ "$(grep -c ' wrote ' "$out")" -ge "$1" ] && return 0
    grep -q ' client exit ' "$out" && fail "the client ended early: $(tail -n 5 "$out")"
    sleep 0.02
  done
  fail "the client did not complete $1 writes in 30 s: $(tail -n 5 "$out")"
}

# max_gap_ms FROM_US TO_US: the longest time between two consecutive
# completed writes of the client in that window.
max_gap_ms ()
{
  awk -v a="$1" -v b="$2" '$2 == "wrote" && $1 >= a && $1 <= b {
      if (p && $1 - p > m) m = $1 - p; p = $1 }
    END { print int(m / 1000) }' "$out"
}

# The client's commands, and the writes alone for the model.  Pattern A
# (0xa5) fills the first 4 MiB; step i writes pattern B_i (never 0xa5)
# at 8 MiB + i * 64 KiB (64 KiB) and at 40 MiB + i * 96 KiB + 512
# (12 KiB, not block aligned), and reads some of A back.
client=(-c "write -P 0xa5 0 4M" -c "read -P 0xa5 0 4M")
model=(-c "write -P 0xa5 0 4M")
checks=()
for ((i = 1; i <= steps; i++)); do
  p=$((0x10 + i % 0x90))
  off1=$((8 * MiB + i * 64 * KiB))
  off2=$((40 * MiB + i * 96 * KiB + 512))
  client+=(-c "aio_write -P $p $off1 64k" -c "aio_write -P $((p + 1)) $off2 12k"
           -c "read -P 0xa5 $(((i % 64) * 64 * KiB)) 64k" -c "sleep 40")
  ((i % 8)) || client+=(-c "aio_flush" -c "flush")
  model+=(-c "write -P $p $off1 64k" -c "write -P $((p + 1)) $off2 12k")
  checks+=(-c "read -P $p $off1 64k" -c "read -P $((p + 1)) $off2 12k")
done
client+=(-c "aio_flush" -c "flush" "${checks[@]}" -c "read -P 0xa5 0 4M")
writes=$((1 + 2 * steps))
reads=$((1 + steps + 2 * steps + 1))

qemu-img create -f raw "$TEST_DIR/model.raw" 64M >/dev/null
qemu-io -f raw "${model[@]}" "$TEST_DIR/model.raw" >"$TEST_DIR/model.out" 2>&1 ||
  fail "building the model: $(tail -n 3 "$TEST_DIR/model.out")"

vbk --store "$store" image create disk --size 64M >/dev/null
# The upgrade: another copy of the binary, installed while the old runs.
mkdir "$TEST_DIR/upgrade"
cp "$VBK_BIN/vbk-blockd" "$TEST_DIR/upgrade/vbk-blockd"
start_daemon "$VBK_BIN/vbk-blockd"

# The client: its own output line-buffered, each line time-stamped.
(
  stdbuf -oL qemu-io -T nbd_reconnect_attempt --image-opts \
    "driver=nbd,server.type=unix,server.path=$sock,export=disk,reconnect-delay=20" \
    "${client[@]}" 2>&1 &
  echo $! >"$TEST_DIR/client.pid"
  wait $!
  echo " client exit $?"
) | stamp >"$out" &
client_pid=$!
cleanup_fn "kill -9 \$(cat $TEST_DIR/client.pid) 2>/dev/null"

# restart SIGNAL BINARY AT_WRITES: once the client has completed
# AT_WRITES writes, stops vbk-blockd with SIGNAL and starts BINARY.
restart ()
{
  local sig=$1 bin=$2 rc=0 t_stop t_kill t_up stall old=$pid
  wait_written "$3"
  # Stopped first: the client's next requests wait in the daemon.
  t_stop=$(now_us)
  kill -STOP "$pid"
  sleep 0.3
  t_kill=$(now_us)
  kill -"$sig" "$pid"
  [ "$sig" = KILL ] || kill -CONT "$pid"
  wait "$pid" 2>/dev/null || rc=$?
  if [ "$sig" = TERM ]; then
    [ "$rc" -eq 0 ] || fail "vbk-blockd exited $rc on SIGTERM"
  fi
  start_daemon "$bin"
  t_up=$(now_us)
  # Twenty more steps after the restart.
  wait_written $(($3 + 40))
  grep -q "vbk-blockd\[$pid\]: info: export disk: lease acquired" "$log" ||
    fail "the client's writes did not reach the new vbk-blockd"
  stall=$(max_gap_ms $((t_stop - 1000000)) "$(now_us)")
  echo "SIG$sig: vbk-blockd down for $(((t_up - t_kill) / 1000)) ms after 300 ms stopped;" \
    "the client's writes stalled $stall ms in all (lease $duration s)"
  # No lease was waited out: the new daemon neither waited for a silent
  # holder's lease nor took one over after it ran out.  After SIGTERM the
  # old daemon released the lease cleanly, so the new one fences nobody;
  # after SIGKILL it takes its earlier run's lease back (checked below).
  if grep -E "vbk-blockd\[$pid\]: .*(waiting for its lease to run out|taking over from)" "$log"; then
    fail "after SIG$sig the new vbk-blockd waited for a lease to run out"
  fi
  if [ "$sig" = TERM ]; then
    grep -q "vbk-blockd\[$old\]: info: export disk: lease released" "$log" ||
      fail "vbk-blockd did not release its lease on SIGTERM"
    if grep "vbk-blockd\[$pid\]: .*did not release; fencing it" "$log"; then
      fail "the lease released on SIGTERM was taken by fencing"
    fi
  fi
}

restart TERM "$TEST_DIR/upgrade/vbk-blockd" $((1 + 2 * 30))
restart KILL "$VBK_BIN/vbk-blockd" $((1 + 2 * 75))
grep -q "vbk-blockd\[$pid\]: warning: export disk: the lease is held by an earlier run" "$log" ||
  fail "the daemon started after SIGKILL did not take its lease back"

wait "$client_pid" || true
# Anything but the answers of successful commands (a failed one prints
# "write failed: ...", "Pattern verification failed ...") and QEMU's
# trace of its reconnections is an error.
if grep -Ev '^[0-9]+ ([0-9.]+ [KMG]?i?B, [0-9]+ ops;|(wrote|read) [0-9]+/[0-9]+ bytes at offset [0-9]+$|nbd_reconnect_attempt in_flight [0-9]+$| client exit 0$)' "$out" >"$TEST_DIR/unexpected"; then
  fail "the client reported: $(head -n 5 "$TEST_DIR/unexpected")"
fi
grep -q ' client exit 0$' "$out" || fail "qemu-io failed: $(tail -n 5 "$out")"
echo "the client reconnected $(grep -c ' nbd_reconnect_attempt ' "$out" || true) times" \
  "(QEMU in_flight count at each: $(awk '$2 == "nbd_reconnect_attempt" { printf "%s%s", s, $4; s = " " }' "$out"))"
[ "$(grep -c ' wrote ' "$out")" -eq "$writes" ] ||
  fail "$(grep -c ' wrote ' "$out") of $writes writes completed"
[ "$(grep -c ' read ' "$out")" -eq "$reads" ] ||
  fail "$(grep -c ' read ' "$out") of $reads reads completed"

qemu-img compare -f raw -F raw "$TEST_DIR/model.raw" \
  "nbd+unix:///disk?socket=$sock" >"$TEST_DIR/compare.out" 2>&1 ||
  fail "the image differs from the model: $(cat "$TEST_DIR/compare.out")"
kill -TERM "$pid"
wait "$pid" || fail "vbk-blockd did not exit 0 on SIGTERM"
echo "blockd-restart: OK ($writes writes, $reads reads, no error)"
