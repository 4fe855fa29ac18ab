#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# blockd-memory.sh - what clients can make vbk-blockd hold stays bounded:
# requests in flight count against the connection's and the daemon's
# budgets (a big request waits for room, it never fails), an idle
# connection keeps no large buffers, and READ/WRITE up to 64 MiB work
# also for a client of the old NBD_OPT_EXPORT_NAME handshake, which
# never saw the advertised maximum.  Memory is read from
# /proc/PID/status (VmHWM: the peak, VmRSS: now).

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

store=$(new_store)
export PYTHONPATH=$VBK_SRC/tests
vbk --store "$store" image create disk --size 256M >/dev/null
mem () { awk -v k="$2:" '$1 == k { print int($2 / 1024) }' "/proc/$1/status"; }

# ---- Old handshake, big requests, budgets smaller than one request -----------
sock=$TEST_DIR/a.sock
start_blockd pid_a "$sock" --conn-memory 16M --max-memory 32M
python3 - "$sock" <<'PYEOF' || fail "64 MiB requests from an NBD_OPT_EXPORT_NAME client"
import sys, nbdraw
MB = 1 << 20
s = nbdraw.connect(sys.argv[1])
assert nbdraw.export_name(s, "disk") == 256 * MB
data = bytes(range(256)) * (48 * MB // 256)
nbdraw.request(s, nbdraw.CMD_WRITE, 8 * MB, 48 * MB, 1, data)
err, h, _ = nbdraw.simple(s)
assert err == 0 and h == 1, "48 MiB write: error %d" % err
nbdraw.request(s, nbdraw.CMD_READ, 8 * MB, 42 * MB, 2)
err, h, got = nbdraw.simple(s, 42 * MB)
assert err == 0 and got == data[:42 * MB], "42 MiB read: error %d" % err
nbdraw.request(s, nbdraw.CMD_READ, 0, 64 * MB, 3)
err, h, got = nbdraw.simple(s, 64 * MB)
assert err == 0 and got[8 * MB:56 * MB] == data, "64 MiB read: error %d" % err
nbdraw.request(s, nbdraw.CMD_READ, 0, 64 * MB + 1, 4)
err, h, _ = nbdraw.simple(s)
assert err == 22, "a read over 64 MiB must be EINVAL, got %d" % err
nbdraw.request(s, nbdraw.CMD_FLUSH, 0, 0, 5)
assert nbdraw.simple(s)[0] == 0
PYEOF
stop_blockd pid_a

# ---- Peak memory under many big reads; idle connections give it back ---------
sock=$TEST_DIR/b.sock
# Under AddressSanitizer freed memory sits in its quarantine: none, so
# that what the daemon frees leaves the process as it does normally.
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0
start_blockd pid_b "$sock" --max-memory 64M --idle-timeout 1
base=$(mem "$pid_b" VmRSS)
python3 - "$sock" "$pid_b" "$base" "$TEST_DIR/idle.ready" <<'PYEOF' || fail "memory bounds"
import os, sys, time, nbdraw
path, pid, base, ready = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
MB = 1 << 20
def mem(key):
    for line in open("/proc/%s/status" % pid):
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024
conns = [nbdraw.connect(path) for _ in range(3)]
for s in conns:
    nbdraw.go(s, "disk")
# Each client asks for 128 MiB at once (32 reads of 4 MiB) before it
# reads a single reply.
for s in conns:
    for i in range(32):
        nbdraw.request(s, nbdraw.CMD_READ, (i % 60) * 4 * MB, 4 * MB, i)
# Replies are read on all connections at once, as any client with
# several connections does.
import threading
errors = []
def drain(s):
    try:
        for i in range(32):
            err, h, _ = nbdraw.simple(s, 4 * MB)
            assert err == 0
    except Exception as e:
        errors.append(e)
threads = [threading.Thread(target=drain, args=(s,)) for s in conns]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not errors, errors
peak = mem("VmHWM") - base
print("peak over the start: %d MiB (384 MiB asked for, budget 64 MiB)" % peak)
assert peak < 160, "%d MiB held for requests in flight" % peak
# Idle now, connections open: their buffers go.
time.sleep(4)
held = mem("VmRSS") - base
print("held by 3 idle connections: %d MiB" % held)
assert held < 40, "idle connections hold %d MiB" % held
PYEOF
stop_blockd pid_b
echo "blockd-memory: ok"
