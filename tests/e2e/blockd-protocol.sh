#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# blockd-protocol.sh - the NBD protocol of vbk-blockd checked message by
# message (VBK_TEST_BACKENDS): a raw Python socket client sends good and
# malformed handshakes and requests, libnbd (nbdsh) drives the
# negotiated features.  Every bad input must get the error the
# specification asks for (NBD_REP_ERR_*, EINVAL, ENOSPC, EPERM, ENOTSUP)
# or a clean disconnect where the spec allows one (bad magic, oversized
# payload, short packets, a client vanishing mid-request), and the
# daemon and its other connections must go on with nothing
# acknowledged lost.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires nbdsh
PY=/usr/bin/python3     # the one with the libnbd bindings
[ -x "$PY" ] || fail "no /usr/bin/python3"

store=$(new_store)
sock=$TEST_DIR/blockd.sock
log=$TEST_DIR/blockd.log

vbk --store "$store" image create disk --size 64M >/dev/null
start_blockd pid "$sock"

# ---- Raw protocol --------------------------------------------------------
"$PY" - "$sock" <<'PYEOF' || fail "raw protocol checks (log: $(tail -20 "$log"))"
import os, socket, struct, sys

SOCK = sys.argv[1]
NBDMAGIC = 0x4e42444d41474943
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x3e889045565a9
REQ, SIMPLE, STRUCT = 0x25609513, 0x67446698, 0x668e33ef
ACK, SERVER, INFO, META = 1, 2, 3, 4
ERR = 1 << 31
UNSUP, POLICY, INVALID, UNKNOWN = ERR + 1, ERR + 2, ERR + 3, ERR + 6
EPERM, EINVAL, ENOSPC, ENOTSUP = 1, 22, 28, 95
SIZE = 64 << 20

def recvall(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("closed after %d of %d bytes" % (len(b), n))
        b += c
    return b

def closed(s):
    """True if the server closed the connection (EOF, not a timeout)."""
    s.settimeout(5)
    try:
        while True:
            if not s.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False

def connect(cflags=1):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(SOCK)
    magic, opt, gflags = struct.unpack(">QQH", recvall(s, 18))
    assert magic == NBDMAGIC and opt == IHAVEOPT, (magic, opt)
    assert gflags & 1, gflags
    s.sendall(struct.pack(">I", cflags))
    return s

def option(s, opt, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)

def reply(s):
    magic, opt, rtype, length = struct.unpack(">QIII", recvall(s, 20))
    assert magic == REPMAGIC, hex(magic)
    return opt, rtype, recvall(s, length)

def go_data(name, infos=()):
    n = name.encode()
    return struct.pack(">I", len(n)) + n + struct.pack(">H", len(infos)) + \
        b"".join(struct.pack(">H", i) for i in infos)

def go(s, name="disk", structured=False):
    if structured:
        option(s, 8)
        assert reply(s)[1] == ACK
    option(s, 7, go_data(name))
    size = None
    while True:
        opt, rtype, data = reply(s)
        assert opt == 7
        if rtype == INFO:
            if struct.unpack(">H", data[:2])[0] == 0:
                size, flags = struct.unpack(">QH", data[2:])
        else:
            assert rtype == ACK, hex(rtype)
            return size, flags

def request(s, cmd, off=0, count=0, flags=0, handle=1, data=b""):
    s.sendall(struct.pack(">IHHQQI", REQ, flags, cmd, handle, off, count) + data)

def simple(s, handle=1, datalen=0):
    magic, err, h = struct.unpack(">IIQ", recvall(s, 16))
    assert magic == SIMPLE, hex(magic)
    assert h == handle, (h, handle)
    return err, (recvall(s, datalen) if datalen and not err else b"")

def structured(s):
    magic, flags, rtype, handle, length = struct.unpack(">IHHQI", recvall(s, 20))
    assert magic == STRUCT, hex(magic)
    return flags, rtype, handle, recvall(s, length)

def check(name, cond):
    if not cond:
        raise AssertionError(name)
    print("ok -", name)

# Handshake ---------------------------------------------------------------
s = connect(cflags=1 | 4)          # an unknown client flag
check("unknown client flags: disconnect", closed(s))

s = connect()
option(s, 99, b"xyz")
opt, rtype, _ = reply(s)
check("unknown option: NBD_REP_ERR_UNSUP", opt == 99 and rtype == UNSUP)
option(s, 5)
check("STARTTLS: NBD_REP_ERR_POLICY", reply(s)[1] == POLICY)
option(s, 5, b"x")
check("STARTTLS with data: NBD_REP_ERR_INVALID", reply(s)[1] == INVALID)
option(s, 3, b"junk")
check("LIST with data: NBD_REP_ERR_INVALID", reply(s)[1] == INVALID)
option(s, 3)
names = []
while True:
    opt, rtype, data = reply(s)
    if rtype != SERVER:
        break
    n, = struct.unpack(">I", data[:4]); names.append(data[4:4 + n].decode())
check("LIST: disk listed, then ACK", rtype == ACK and "disk" in names)
option(s, 6, struct.pack(">I", 100) + b"disk")
check("INFO name length past the option: INVALID", reply(s)[1] == INVALID)
option(s, 6, go_data("disk") + b"\0")
check("INFO trailing byte: INVALID", reply(s)[1] == INVALID)
option(s, 6, go_data("nosuch"))
check("INFO unknown export: NBD_REP_ERR_UNKNOWN", reply(s)[1] == UNKNOWN)
option(s, 6, go_data("../etc"))
check("INFO bad name: NBD_REP_ERR_UNKNOWN", reply(s)[1] == UNKNOWN)
option(s, 10, struct.pack(">I", 4) + b"disk" + struct.pack(">I", 0))
check("SET_META_CONTEXT before structured replies: INVALID", reply(s)[1] == INVALID)
option(s, 8)
check("STRUCTURED_REPLY: ACK", reply(s)[1] == ACK)
option(s, 8)
check("STRUCTURED_REPLY twice: INVALID", reply(s)[1] == INVALID)
q = b"base:allocation"
option(s, 10, struct.pack(">I", 4) + b"disk" + struct.pack(">II", 1, len(q) + 5) + q)
check("SET_META_CONTEXT query past the option: INVALID", reply(s)[1] == INVALID)
option(s, 9, struct.pack(">I", 4) + b"disk" + struct.pack(">I", 0))
opt, rtype, data = reply(s)
check("LIST_META_CONTEXT lists base:allocation", rtype == META and data[4:] == q)
check("  then ACK", reply(s)[1] == ACK)
option(s, 10, struct.pack(">I", 4) + b"disk" + struct.pack(">II", 2, 5, ) + b"x-a:b" + struct.pack(">I", len(q)) + q)
opt, rtype, data = reply(s)
ctx_id, = struct.unpack(">I", data[:4])
check("SET_META_CONTEXT selects base:allocation", rtype == META and data[4:] == q and ctx_id != 0)
check("  then ACK", reply(s)[1] == ACK)
size, flags = go(s)
check("GO after errors works", size == SIZE and flags & 1)

# Transmission on this structured connection -------------------------------
request(s, 1, 4096, 4096, handle=7, data=b"\xab" * 4096)
check("write", simple(s, 7)[0] == 0)
request(s, 0, 4096, 4096, handle=8)
f, t, h, p = structured(s)
check("structured read: one OFFSET_DATA chunk, DONE", t == 1 and f & 1 and h == 8 and p[8:] == b"\xab" * 4096)
request(s, 0, 32 << 20, 65536, handle=9)
f, t, h, p = structured(s)
check("structured read of a hole: OFFSET_HOLE", t == 2 and f & 1 and struct.unpack(">QI", p) == (32 << 20, 65536))
request(s, 7, 0, SIZE, handle=10)
f, t, h, p = structured(s)
ext = [struct.unpack(">II", p[4 + i:12 + i]) for i in range(0, len(p) - 4, 8)]
check("block status: allocated start, hole later", f & 1 and t == 5 and ext[0][1] == 0 and ext[-1][1] == 3)
request(s, 7, 0, SIZE, flags=8, handle=11)
f, t, h, p = structured(s)
check("block status REQ_ONE: one extent", len(p) == 12)
request(s, 0, SIZE - 4096, 8192, handle=12)
f, t, h, p = structured(s)
check("read past the end: EINVAL error chunk", t == (1 << 15) + 1 and struct.unpack(">I", p[:4])[0] == EINVAL)
request(s, 0, 0, 65 << 20, handle=13)
f, t, h, p = structured(s)
check("read over 64 MiB: EINVAL", t == (1 << 15) + 1 and struct.unpack(">I", p[:4])[0] == EINVAL)
request(s, 1, SIZE - 512, 1024, handle=14, data=b"x" * 1024)
f, t, h, p = structured(s)
check("write past the end: ENOSPC (payload skipped)", h == 14 and struct.unpack(">I", p[:4])[0] == ENOSPC)
request(s, 6, SIZE - 512, 1024, handle=15)
f, t, h, p = structured(s)
check("write zeroes past the end: ENOSPC", struct.unpack(">I", p[:4])[0] == ENOSPC)
request(s, 4, SIZE, 1, handle=16)
f, t, h, p = structured(s)
check("trim past the end: EINVAL", struct.unpack(">I", p[:4])[0] == EINVAL)
request(s, 42, 0, 0, handle=17)
f, t, h, p = structured(s)
check("unknown command: EINVAL", h == 17 and struct.unpack(">I", p[:4])[0] == EINVAL)
request(s, 3, 0, 0, flags=1 << 7, handle=18)
f, t, h, p = structured(s)
check("unknown command flag: EINVAL", struct.unpack(">I", p[:4])[0] == EINVAL)
request(s, 6, 0, 65536, flags=2 | 16, handle=19)
f, t, h, p = structured(s)
check("FAST_ZERO with NO_HOLE: ENOTSUP", struct.unpack(">I", p[:4])[0] == ENOTSUP)
request(s, 6, 1 << 20, 65536, flags=16, handle=20)
check("FAST_ZERO: ok", simple(s, 20)[0] == 0)
request(s, 5, 0, 1 << 20, handle=21)
check("CACHE: ok", simple(s, 21)[0] == 0)
request(s, 3, handle=22)
check("FLUSH: ok", simple(s, 22)[0] == 0)
request(s, 1, 0, 4096, flags=1, handle=23, data=b"\x01" * 4096)
check("FUA write: ok", simple(s, 23)[0] == 0)
# Many in flight, answered as they complete.
for i in range(64):
    request(s, 1, (8 << 20) + i * 65536, 65536, handle=1000 + i, data=bytes([i]) * 65536)
got = set()
for i in range(64):
    magic, err, h = struct.unpack(">IIQ", recvall(s, 16))
    assert magic == SIMPLE and err == 0
    got.add(h)
check("64 writes in flight, all answered", got == set(range(1000, 1064)))
for i in range(64):
    request(s, 0, (8 << 20) + i * 65536, 65536, handle=2000 + i)
ok = 0
for i in range(64):
    f, t, h, p = structured(s)
    j = h - 2000
    ok += (t == 1 and p[8:] == bytes([j]) * 65536)
check("64 reads in flight read back", ok == 64)
request(s, 2, handle=24)
check("DISC: server closes", closed(s))

# Simple replies, bad framing ---------------------------------------------
s = connect()
go(s)
request(s, 7, 0, 4096, handle=1)
check("block status without a context: EINVAL", simple(s, 1)[0] == EINVAL)
request(s, 0, 0, 4096, handle=2)
err, data = simple(s, 2, 4096)
check("simple read", err == 0 and data == b"\x01" * 4096)
s.sendall(struct.pack(">IHHQQI", 0xdeadbeef, 0, 0, 3, 0, 512))
check("bad request magic: disconnect", closed(s))

s = connect(); go(s)
request(s, 1, 0, 65 << 20, handle=1)
check("write over 64 MiB: disconnect", closed(s))

s = connect(); go(s)
s.sendall(b"\x25\x60\x95\x13\0\0")   # a short packet
s.close()
s = connect(); go(s)
request(s, 1, 30 << 20, 65536, handle=1, data=b"z" * 1000)   # vanishes mid-write
s.close()
s = connect()
option(s, 1, b"nosuch")
check("EXPORT_NAME of an unknown image: disconnect", closed(s))
s = connect()
s.sendall(struct.pack(">QII", IHAVEOPT, 99, 1 << 30))
check("option of 1 GiB: disconnect", closed(s))
s = connect()
s.sendall(struct.pack(">QII", 0x1234, 1, 0))
check("bad option magic: disconnect", closed(s))

# The daemon goes on; what was acknowledged is there.
s = connect(); go(s, structured=True)
request(s, 0, 0, 4096, handle=5)
f, t, h, p = structured(s)
check("after all that, data intact", p[8:] == b"\x01" * 4096)
request(s, 0, 4096, 4096, handle=6)
f, t, h, p = structured(s)
check("  and the other block too", p[8:] == b"\xab" * 4096)
request(s, 2)
closed(s)
PYEOF

# ---- libnbd: a strict client's view, and requests it would not send ------
export URI="nbd+unix:///disk?socket=$sock"
nbdsh -c - <<'PYEOF' || fail "nbdsh checks"
import errno, os
h.add_meta_context("base:allocation")
h.connect_uri(os.environ["URI"])
assert h.get_structured_replies_negotiated()
assert h.can_meta_context("base:allocation")
assert h.can_multi_conn() and h.can_fua() and h.can_flush()
buf = b"\x42" * 65536
h.pwrite(buf, 16 << 20, nbd.CMD_FLAG_FUA)
assert h.pread(65536, 16 << 20) == buf
h.zero(65536, 16 << 20, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(65536, 16 << 20) == bytes(65536)
h.trim(1 << 20, 20 << 20)
h.flush()
seen = []
h.block_status(64 << 20, 0, lambda ctx, off, ents, err: seen.append((ctx, ents)))
assert seen and seen[0][0] == "base:allocation", seen
h.set_strict_mode(0)
for fn, want in [(lambda: h.pread(4096, 64 << 20), errno.EINVAL),
                 (lambda: h.pwrite(b"x" * 4096, 64 << 20), errno.ENOSPC)]:
    try:
        fn()
        raise AssertionError("no error")
    except nbd.Error as e:
        assert e.errnum == want, (e.errnum, want, e.string)
print("ok - nbdsh")
PYEOF
stop_blockd pid

# ---- read-only exports: EPERM --------------------------------------------
start_blockd pid "$sock" --read-only
nbdsh -u "$URI" -c - <<'PYEOF' || fail "read-only checks"
import errno
assert h.is_read_only()
h.set_strict_mode(0)
for fn in [lambda: h.pwrite(b"x" * 4096, 0), lambda: h.trim(4096, 0),
           lambda: h.zero(4096, 0)]:
    try:
        fn()
        raise AssertionError("write on a read-only export succeeded")
    except nbd.Error as e:
        assert e.errnum == errno.EPERM, (e.errnum, e.string)
assert h.pread(4096, 0) == b"\x01" * 4096
print("ok - read-only: EPERM")
PYEOF
stop_blockd pid
echo "blockd-protocol: OK"
