#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# cli-lease.sh - "vbk lease" end to end, once per store backend
# (VBK_TEST_BACKENDS):
#   without a holder: status (held false, epoch 0; text and --json with
#   every key), release is a no-op, break fails (exit 1), usage errors
#   (exit 2) and --help of every verb;
#   with vbk-blockd holding the lease after a qemu-io write (a client
#   stays connected, as a VM would, so that blockd keeps the export and
#   its lease): status names its host id, address and store client with
#   an expiry in the future; release makes the lease free and the next
#   write takes it again with the epoch one higher; a holder that does
#   not answer (SIGSTOP) makes release time out (exit 1) with a message
#   naming "vbk lease break", and lets go once it runs again (the
#   request names the epoch it still holds), after which the next write
#   takes the lease with the next epoch; two daemons writing one image
#   in turn end in a conflict that status reports and release clears;
#   break fences the holder: the lease is free, the connected client's
#   writes fail, and a new client gets a fresh export that takes the
#   lease again.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires python3
requires qemu-io


store=$(new_store)
v () { vbk --store "$store" "$@"; }

# field KEY: KEY of the lease status JSON of disk1.
field () { v lease status disk1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

KEYS='{"image", "held", "host", "addr", "client", "epoch", "expires_ms",
       "expires_in_ms", "handoffs", "conflict"}'

# ---- Nobody holds it ---------------------------------------------------------

v image create disk1 --size 64M
v image create disk2 --size 64M

v lease status disk1 --json | json_check "set(d) == $KEYS"'
and d["image"] == "disk1" and d["held"] is False and d["epoch"] == 0
and d["host"] is None and d["addr"] is None and d["client"] is None
and d["expires_ms"] is None and d["expires_in_ms"] is None
and d["handoffs"] == 0 and d["conflict"] is None'
v lease status disk1 >"$TEST_DIR/st"
grep -q '^image: *disk1$' "$TEST_DIR/st" || fail "status: image: $(cat "$TEST_DIR/st")"
grep -q '^held: *no$' "$TEST_DIR/st" || fail "status: held: $(cat "$TEST_DIR/st")"
grep -q '^epoch: *0$' "$TEST_DIR/st" || fail "status: epoch: $(cat "$TEST_DIR/st")"
grep -q '^host:' "$TEST_DIR/st" && fail "status names a host while free"

v lease release disk1 || fail "release of a free lease failed"
expect_status 1 "disk1.*nobody holds" v lease break disk1
expect_status 1 "nosuch.*(does not exist|no such)" v lease status nosuch
expect_status 1 "nosuch.*(does not exist|no such)" v lease release nosuch
expect_status 1 "nosuch.*(does not exist|no such)" v lease break nosuch

# ---- Usage errors and help ---------------------------------------------------

expect_status 2 "missing command" v lease
expect_status 2 "unknown command 'steal'" v lease steal disk1
for verb in status release break; do
  expect_status 2 "missing argument" v lease $verb
  expect_status 2 "unexpected argument 'extra'" v lease $verb disk1 extra
  expect_status 2 "invalid image name" v lease $verb 'bad name'
  expect_status 2 "invalid image name" v lease $verb disk1@snap
  expect_status 2 "unknown option '--bogus'" v lease $verb disk1 --bogus
  v lease $verb --help >"$TEST_DIR/help" || fail "lease $verb --help"
  grep -q "^Usage: vbk \[GLOBAL OPTIONS\] lease $verb IMAGE" "$TEST_DIR/help" ||
    fail "lease $verb --help: $(cat "$TEST_DIR/help")"
  grep -q "Exit status" "$TEST_DIR/help" || fail "lease $verb --help: exit status"
done
for t in 0 -1 x 1.5 86401 ""; do
  expect_status 2 "(--timeout: invalid|needs an argument)" v lease release disk1 --timeout "$t"
done
expect_status 2 "needs an argument" v lease release disk1 --timeout
expect_status 2 "unknown option '--json'" v lease break disk1 --json
v lease --help | grep -q "^  status " || fail "lease --help lacks status"
v --help | grep -q "^  lease " || fail "vbk --help lacks lease"
v lease status --help | grep -q -- "--json" || fail "status --help lacks --json"
v lease release --help | grep -q -- "--timeout SECONDS" ||
  fail "release --help lacks --timeout"

# ---- A vbk-blockd holds it ---------------------------------------------------

uri () { echo "nbd+unix:///$1?socket=$2"; }
sock_a=$TEST_DIR/a.sock
sock_b=$TEST_DIR/b.sock
# write SOCKET PATTERN [IMAGE]: one qemu-io write of 64k, flushed.
write ()
{
  qemu-io -f raw -c "write -P $2 0 64k" -c flush "$(uri "${3:-disk1}" "$1")" \
    >"$TEST_DIR/qio" 2>&1
}

. "$VBK_SRC/tests/vm-client.sh"

start_blockd pid_a "$sock_a" --host-id host-a
vm_start a "$(uri disk1 "$sock_a")"
write "$sock_a" 0x11 || fail "write through blockd: $(cat "$TEST_DIR/qio")"

v lease status disk1 --json | json_check "set(d) == $KEYS"'
and d["held"] is True and d["host"] == "host-a" and d["epoch"] == 1
and isinstance(d["addr"], str) and d["addr"] != ""
and isinstance(d["client"], str) and d["client"] != ""
and 0 < d["expires_in_ms"] <= 60000
and abs(d["expires_ms"] - now - d["expires_in_ms"]) < 5000
and d["conflict"] is None'
v lease status disk1 >"$TEST_DIR/st"
grep -q '^held: *yes$' "$TEST_DIR/st" || fail "status: held: $(cat "$TEST_DIR/st")"
grep -q '^host: *host-a$' "$TEST_DIR/st" || fail "status: host: $(cat "$TEST_DIR/st")"
grep -Eq '^expires: *in [0-9.]+ s \([0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8}\)$' \
  "$TEST_DIR/st" || fail "status: expires: $(cat "$TEST_DIR/st")"
# disk2 was never written: free, whatever disk1 does.
[ "$(v lease status disk2 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["held"])')" = False ] ||
  fail "disk2 held without a write"

# Release: the holder lets go; the next write takes it again.
v lease release disk1 --timeout 20 || fail "release failed"
v lease status disk1 --json | json_check '
d["held"] is False and d["epoch"] == 1 and d["host"] is None'
vm a "write 0x22 0 65536" || fail "write after release: $vm_reply"
v lease status disk1 --json | json_check '
d["held"] is True and d["host"] == "host-a" and d["epoch"] == 2'

# A holder that does not answer: release times out.  Only once every
# thread of it has stopped: one still running could answer.
released=$(grep -c ': released$' "$TEST_DIR/a.log" || true)
stop_process "$pid_a"
t0=$(date +%s)
expect_status 1 "disk1.*did not let go within 2 s.*vbk lease break disk1" \
  v lease release disk1 --timeout 2
t1=$(date +%s)
kill -CONT "$pid_a"
# Bounded well below the default timeout (30 s), which a command that
# ignored --timeout would take.
[ $((t1 - t0)) -le 20 ] || fail "release --timeout 2 took $((t1 - t0)) s"
# The request waited in the stopped holder, which reads it once it runs
# again: it is for the epoch the holder still has (2), so the holder lets
# go then.  Wait for that release (the daemon's log says it), then a write
# takes the lease again, with the next epoch.  (Looking at the lease
# between writes instead raced that late release.)
for ((i = 0; i < 600; i++)); do
  [ "$(grep -c ': released$' "$TEST_DIR/a.log" || true)" -gt "$released" ] && break
  sleep 0.1
done
[ "$i" -lt 600 ] || fail "the holder did not act on the request it got while stopped"
grep -q 'operator asks for the lease (operator) (epoch 2); releasing' "$TEST_DIR/a.log" ||
  fail "the late request did not name epoch 2"
vm a "write 0x33 0 65536" || fail "write after SIGCONT: $vm_reply"
v lease status disk1 --json | json_check '
d["held"] is True and d["host"] == "host-a" and d["epoch"] == 3'

# Two daemons writing one image in turn: the lease bounces, and after
# too many hand-offs (more than 5 in 10 s) it is refused with a conflict
# that status reports.  The writes go in bursts of 8 hand-offs with no
# status call in between: on a loaded machine a status call takes longer
# than a hand-off, and a status call after every write could space the
# hand-offs out past the window.
start_blockd pid_b "$sock_b" --host-id host-b
vm_start b "$(uri disk1 "$sock_b")"
for ((i = 0; i < 10; i++)); do
  for ((j = 0; j < 8; j++)); do
    if ((j % 2)); then vm a "write 0x44 0 4096" || true
    else vm b "write 0x55 0 4096" || true; fi
  done
  [ "$(field conflict)" != None ] && break
done
v lease status disk1 --json | json_check '
d["held"] is True and d["handoffs"] >= 5
and isinstance(d["conflict"], str) and "two writers" in d["conflict"]'
v lease status disk1 | grep -q '^conflict: .*two writers' ||
  fail "status text lacks the conflict: $(v lease status disk1)"
v lease release disk1 --timeout 20 || fail "release of a conflicted lease"
v lease status disk1 --json | json_check '
d["held"] is False and d["conflict"] is None'
vm_stop b
kill -TERM "$pid_b"
wait "$pid_b" || fail "blockd host-b did not stop cleanly"

# Break: the holder is fenced; the connected client's writes fail.
vm a "write 0x66 0 65536" || fail "write before break: $vm_reply"
vm a flush || fail "flush before break: $vm_reply"
epoch=$(field epoch)
[ "$(field host)" = host-a ] || fail "host-a does not hold it before break"
v lease break disk1 || fail "break failed"
v lease status disk1 --json | json_check "
d['held'] is False and d['epoch'] == $epoch and d['conflict'] is None"
if vm a "write 0x77 0 65536"; then
  fail "the fenced export still writes after break"
fi
expect_status 1 "nobody holds" v lease break disk1

# The image is intact, and a new client gets a fresh export that takes
# the lease again.  blockd drops the fenced export once its lease thread
# sees the fence (at the next renewal, a third of the lease duration):
# until then new clients still get the fenced export and fail.
t0=$(date +%s)
for ((i = 0; ; i++)); do
  qemu-io -f raw -c "read -P 0x66 0 64k" "$(uri disk1 "$sock_a")" \
    >"$TEST_DIR/qio" 2>&1 && break
  [ "$i" -lt 100 ] || fail "read after break: $(cat "$TEST_DIR/qio")"
  sleep 0.2
done
grep -q "Pattern verification failed" "$TEST_DIR/qio" &&
  fail "data after break: $(cat "$TEST_DIR/qio")"
echo "cli-lease: a new client could use the image $(( $(date +%s) - t0 )) s after break"
vm_start c "$(uri disk1 "$sock_a")"
vm c "write 0x88 0 65536" || fail "write on a fresh export: $vm_reply"
v lease status disk1 --json | json_check "
d['held'] is True and d['host'] == 'host-a' and d['epoch'] == $epoch + 1"
vm_stop c
vm_stop a
kill -TERM "$pid_a"
wait "$pid_a" || fail "blockd host-a did not stop cleanly"
echo "cli-lease: OK"
