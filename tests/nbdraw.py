# SPDX-License-Identifier: MIT
#
# nbdraw.py - a raw-socket NBD client for the end-to-end tests: it does
# exactly what a test says, including what a well-behaved client never
# does (stop reading replies, vanish mid-session, use the old
# NBD_OPT_EXPORT_NAME handshake).  Import it with
#   sys.path.insert(0, os.path.join(os.environ["VBK_SRC"], "tests"))
# Protocol constants from NBD proto.md.
import socket
import struct

NBDMAGIC = 0x4e42444d41474943
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x3e889045565a9
REQ_MAGIC, SIMPLE_MAGIC, STRUCT_MAGIC = 0x25609513, 0x67446698, 0x668e33ef
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_GO = 1, 2, 3, 7
OPT_STRUCTURED_REPLY, OPT_SET_META_CONTEXT = 8, 10
REP_ACK, REP_SERVER, REP_INFO, REP_META = 1, 2, 3, 4
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_BLOCK_STATUS = 0, 1, 2, 3, 7
REPLY_TYPE_BLOCK_STATUS = 5


def recvall(s, n):
    b = bytearray()
    while len(b) < n:
        c = s.recv(min(n - len(b), 1 << 20))
        if not c:
            raise EOFError("closed after %d of %d bytes" % (len(b), n))
        b += c
    return bytes(b)


def connect(path, greet=True, timeout=30):
    """Connects to the Unix socket PATH; reads the greeting and sends the
    client flags (fixed newstyle, no zeroes) unless GREET is false."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    if greet:
        magic, opt, gflags = struct.unpack(">QQH", recvall(s, 18))
        assert magic == NBDMAGIC and opt == IHAVEOPT, (magic, opt)
        s.sendall(struct.pack(">I", 3))
    return s


def option(s, opt, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)


def reply(s):
    magic, opt, rtype, length = struct.unpack(">QIII", recvall(s, 20))
    assert magic == REPMAGIC, hex(magic)
    return opt, rtype, recvall(s, length)


def go(s, name, structured=False, meta=None):
    """NBD_OPT_GO on NAME (after STRUCTURED_REPLY and SET_META_CONTEXT
    META if asked).  Returns the export size."""
    if structured:
        option(s, OPT_STRUCTURED_REPLY)
        assert reply(s)[1] == REP_ACK
    if meta:
        n = name.encode()
        q = meta.encode()
        option(s, OPT_SET_META_CONTEXT, struct.pack(">I", len(n)) + n
               + struct.pack(">I", 1) + struct.pack(">I", len(q)) + q)
        while True:
            _, t, _ = reply(s)
            if t == REP_ACK:
                break
            assert t == REP_META, t
    n = name.encode()
    option(s, OPT_GO, struct.pack(">I", len(n)) + n + struct.pack(">H", 0))
    size = None
    while True:
        _, t, data = reply(s)
        if t == REP_ACK:
            return size
        assert t == REP_INFO, "GO failed: 0x%x %r" % (t, data)
        if struct.unpack(">H", data[:2])[0] == 0:
            size = struct.unpack(">Q", data[2:10])[0]


def export_name(s, name):
    """The old NBD_OPT_EXPORT_NAME handshake (no block size advertised).
    Returns the export size."""
    option(s, OPT_EXPORT_NAME, name.encode())
    size, _ = struct.unpack(">QH", recvall(s, 10))
    return size


def list_exports(s):
    option(s, OPT_LIST)
    names = []
    while True:
        _, t, data = reply(s)
        if t == REP_ACK:
            return names
        assert t == REP_SERVER, t
        names.append(data[4:4 + struct.unpack(">I", data[:4])[0]].decode())


def request(s, cmd, offset, count, handle, data=b"", flags=0):
    s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, flags, cmd, handle, offset,
                          count) + data)


def simple(s, datalen=0):
    """A simple reply: (error, handle, data)."""
    magic, err, handle = struct.unpack(">IIQ", recvall(s, 16))
    assert magic == SIMPLE_MAGIC, hex(magic)
    return err, handle, recvall(s, datalen) if err == 0 and datalen else b""


def structured(s):
    """One structured reply chunk: (flags, type, handle, payload)."""
    magic, flags, rtype, handle, length = struct.unpack(">IHHQI",
                                                        recvall(s, 20))
    assert magic == STRUCT_MAGIC, hex(magic)
    return flags, rtype, handle, recvall(s, length)


def closed(s, timeout=5):
    """True if the server closed the connection within TIMEOUT seconds
    (EOF or reset), False if it is still open."""
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
