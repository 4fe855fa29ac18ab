#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# blockd-pipeline.sh - many requests in one go, on the Unix socket and
# over TLS (python raw sockets, the client reads no reply until it has
# sent everything):
#   - hundreds of 4 KiB READs pipelined in one write, simple and
#     structured replies: every reply arrives (a reader that holds
#     replies back while more requests are buffered must send them before
#     it waits for the client) and every byte compares;
#   - over TLS: 48 MiB of 1 MiB WRITEs pipelined (large records read
#     ahead), then a FLUSH, then 48 MiB of 1 MiB READs and 4 KiB READs
#     pipelined while the client reads nothing for a second, so the
#     server's socket fills and TLS sends stop half way and resume; every
#     byte compares, and the connection ends cleanly;
#   - after all that, qemu-img reads back the same bytes.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires qemu-img
requires certtool

store=$(new_store)
sock=$TEST_DIR/blockd.sock
certs=$TEST_DIR/certs
"$VBK_SRC/deploy/make-tls-certs.sh" "$certs" alice 2>/dev/null
vbk --store "$store" image create disk --size 64M >/dev/null
printf '[blockd]\ndefault_allow = alice\n' >"$TEST_DIR/blockd.conf"
port=$(free_tcp_port)
start_blockd pid "$sock" --config "$TEST_DIR/blockd.conf" \
  --listen "127.0.0.1:$port" --tls-certificates "$certs/server"

timeout 300 python3 - "$sock" "$port" "$certs" "$TEST_DIR/expect.raw" <<'PY' ||
import os, random, socket, ssl, struct, sys, time
sys.path.insert(0, os.path.join(os.environ["VBK_SRC"], "tests"))
import nbdraw as n

path, port, certs, expect_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
OPT_STARTTLS = 5
MiB = 1 << 20
SIZE = 64 * MiB
rng = random.Random(7)
image = bytearray(SIZE)          # what the disk holds, as we wrote it

def req(cmd, off, count, handle, data=b"", flags=0):
    return struct.pack(">IHHQQI", n.REQ_MAGIC, flags, cmd, handle, off,
                       count) + data

def read_simple_replies(s, want):
    """WANT: handle -> expected data (b"" for no data).  Reads every reply."""
    while want:
        err, h, _ = n.simple(s)
        assert h in want, "reply to unknown handle %d" % h
        data = want.pop(h)
        assert err == 0, "request %d failed: %d" % (h, err)
        if data:
            got = n.recvall(s, len(data))
            assert got == data, "request %d: wrong data" % h

def read_structured_replies(s, want):
    while want:
        flags, rtype, h, payload = n.structured(s)
        assert h in want, "chunk for unknown handle %d" % h
        off, data = want[h]
        if rtype == 1:                              # OFFSET_DATA
            o = struct.unpack(">Q", payload[:8])[0]
            assert payload[8:] == data[o - off:o - off + len(payload) - 8], \
                "request %d: wrong data" % h
        elif rtype == 2:                            # OFFSET_HOLE
            o, l = struct.unpack(">QI", payload)
            assert data[o - off:o - off + l] == bytes(l), \
                "request %d: hole over data" % h
        else:
            assert rtype == 0, "request %d: chunk type %d" % (h, rtype)
        if flags & 1:
            del want[h]

def fill(s, off, length, handle0):
    """Pipelined WRITEs of 1 MiB covering [off, off + length)."""
    batch, want = [], {}
    for i, o in enumerate(range(off, off + length, MiB)):
        data = rng.randbytes(MiB)
        image[o:o + MiB] = data
        batch.append(req(n.CMD_WRITE, o, MiB, handle0 + i, data))
        want[handle0 + i] = b""
    s.sendall(b"".join(batch))
    read_simple_replies(s, want)

# ---- Unix socket: pipelined small reads, simple then structured ------------
s = n.connect(path)
n.go(s, "disk")
fill(s, 0, 8 * MiB, 1)
want, batch = {}, []
for h in range(1000, 1400):
    off = rng.randrange(0, 8 * MiB - 4096) & ~511
    batch.append(req(n.CMD_READ, off, 4096, h))
    want[h] = bytes(image[off:off + 4096])
batch.append(req(n.CMD_FLUSH, 0, 0, 1400))
want[1400] = b""
s.sendall(b"".join(batch))
read_simple_replies(s, want)
s.sendall(req(n.CMD_DISC, 0, 0, 0))
s.close()

s = n.connect(path)
n.go(s, "disk", structured=True)
want, batch = {}, []
for h in range(2000, 2300):
    off = rng.randrange(0, 16 * MiB - 8192) & ~511     # some in holes
    batch.append(req(n.CMD_READ, off, 8192, h))
    want[h] = (off, bytes(image[off:off + 8192]))
s.sendall(b"".join(batch))
read_structured_replies(s, want)
s.sendall(req(n.CMD_DISC, 0, 0, 0))
s.close()

# ---- TLS: big pipelined writes and reads, replies read late ----------------
t = socket.create_connection(("127.0.0.1", port), timeout=60)
magic, opt, gflags = struct.unpack(">QQH", n.recvall(t, 18))
t.sendall(struct.pack(">I", 3))
n.option(t, OPT_STARTTLS)
assert n.reply(t)[:2] == (OPT_STARTTLS, n.REP_ACK)
c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
c.load_verify_locations(certs + "/ca-cert.pem")
c.load_cert_chain(certs + "/client-alice/client-cert.pem",
                  certs + "/client-alice/client-key.pem")
t = c.wrap_socket(t, server_hostname="localhost")
n.go(t, "disk")
fill(t, 8 * MiB, 48 * MiB, 3000)
t.sendall(req(n.CMD_FLUSH, 0, 0, 3999))
read_simple_replies(t, {3999: b""})
want, batch = {}, []
for i, o in enumerate(range(8 * MiB, 56 * MiB, MiB)):
    batch.append(req(n.CMD_READ, o, MiB, 4000 + i))
    want[4000 + i] = bytes(image[o:o + MiB])
for h in range(5000, 5300):
    off = rng.randrange(0, SIZE - 4096) & ~511
    batch.append(req(n.CMD_READ, off, 4096, h))
    want[h] = bytes(image[off:off + 4096])
t.sendall(b"".join(batch))
time.sleep(1)                    # the server's socket fills meanwhile
read_simple_replies(t, want)
t.sendall(req(n.CMD_DISC, 0, 0, 0))
# A clean end: close_notify, then EOF.
t.settimeout(20)
try:
    assert t.recv(1) == b"", "data after NBD_CMD_DISC"
except ssl.SSLEOFError:
    raise AssertionError("no close_notify")
t.close()
open(expect_file, "wb").write(image)
PY
  fail "pipelined requests"
kill -0 "$pid" 2>/dev/null || fail "the daemon died"

qemu-img convert -f raw -O raw "nbd+unix:///disk?socket=$sock" \
  "$TEST_DIR/got.raw"
cmp "$TEST_DIR/expect.raw" "$TEST_DIR/got.raw" ||
  fail "the image does not hold what was written"
echo "PASS"
