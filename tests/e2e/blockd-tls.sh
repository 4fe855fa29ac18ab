#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# blockd-tls.sh - NBD over TLS with client identities and per-export
# access, on every store backend (VBK_TEST_BACKENDS), with real clients:
#   qemu-img/qemu-io with tls-creds-x509 and tls-creds-psk objects,
#   nbdinfo/nbdcopy/nbdsh with nbds:// URIs (tls-certificates=,
#   tls-psk-file=): read/write works and the bytes compare;
#   a wrong PSK key, a certificate from an unknown CA, no TLS at all and
#   NBD_OPT_EXPORT_NAME before TLS are refused;
#   an identity allowed read-only gets a read-only export, its writes fail
#   with EPERM and it never makes the daemon take the image's lease;
#   an identity not listed does not see the export in nbdinfo --list and
#   cannot open it; the Unix socket stays the local path;
#   hostile input over TLS (python raw sockets): bytes pipelined after
#   STARTTLS, garbage instead of a ClientHello, a handshake that stalls
#   (the deadline), a client that closes mid-record; the daemon serves
#   others all along;
#   /metrics shows the counters moving; --listen and --metrics on a
#   network address without TLS are refused.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires qemu-img
requires qemu-io
requires nbdinfo
requires nbdcopy
requires nbdsh
requires certtool
requires curl

store=$(new_store)
sock=$TEST_DIR/blockd.sock
certs=$TEST_DIR/certs
"$VBK_SRC/deploy/make-tls-certs.sh" "$certs" alice bob carol 2>/dev/null
"$VBK_SRC/deploy/make-tls-certs.sh" "$TEST_DIR/rogue" alice 2>/dev/null

for d in disk1 disk2 disk3; do
  vbk --store "$store" image create $d --size 64M >/dev/null
done
cat >"$TEST_DIR/blockd.conf" <<CONF
[blockd]
tls_handshake_timeout = 1

[export disk1]
allow = alice
allow_read = carol

[export disk2]
allow = bob

[export disk3]
allow_read = carol
CONF

port=$(free_tcp_port)
start_blockd pid "$sock" --config "$TEST_DIR/blockd.conf" \
  --listen "127.0.0.1:$port" --tls-certificates "$certs/server" \
  --tls-psk "$certs/keys.psk" --metrics 127.0.0.1:0
log=$TEST_DIR/blockd.log
for ((i = 0; i < 100; i++)); do
  mport=$(sed -n 's/.*metrics on .*(port \([0-9]*\)).*/\1/p' "$log")
  grep -q "listening on 127.0.0.1:$port" "$log" && [ -n "$mport" ] && break
  sleep 0.1
done
[ -n "$mport" ] || fail "no metrics port in the log"

x509 () { echo "nbds://127.0.0.1:$port/$2?tls-certificates=$certs/client-$1"; }
psk () { echo "nbds://$1@127.0.0.1:$port/$2?tls-psk-file=$certs/client-$1/keys.psk"; }
qx509 () { echo "tls-creds-x509,id=tls0,dir=$certs/client-$1,endpoint=client"; }
qpsk () { echo "tls-creds-psk,id=tls0,dir=$certs/client-$1,username=$1,endpoint=client"; }
qimg () { echo "driver=nbd,host=127.0.0.1,port=$port,export=$1,tls-creds=tls0"; }
metric () { curl -sf "http://127.0.0.1:$mport/metrics" | awk -v k="$1" '$1 == k { print $2 }'; }
alive ()
{
  # The daemon still serves a well-behaved client.
  nbdinfo "$(psk alice disk1)" >/dev/null 2>&1 ||
    fail "the daemon stopped serving after: $1"
}

# ---- read/write over TLS: qemu-img (x509) in, PSK and nbdcopy out ------------
src=$TEST_DIR/src.raw
truncate -s 64M "$src"
head -c 3M /dev/urandom | dd of="$src" bs=1M seek=5 conv=notrunc status=none
head -c 1M /dev/urandom | dd of="$src" bs=1M seek=50 conv=notrunc status=none
qemu-img convert -n -f raw --object "$(qx509 alice)" "$src" \
  --target-image-opts "$(qimg disk1)" 2>"$TEST_DIR/err" ||
  fail "qemu-img convert over TLS (x509): $(cat "$TEST_DIR/err")"
qemu-img compare --object "$(qpsk alice)" --image-opts \
  "driver=file,filename=$src" "$(qimg disk1)" >/dev/null 2>"$TEST_DIR/err" ||
  fail "qemu-img compare over TLS (PSK): $(cat "$TEST_DIR/err")"
nbdcopy "$(x509 alice disk1)" "$TEST_DIR/out.raw"
cmp "$src" "$TEST_DIR/out.raw" || fail "nbdcopy over TLS: bytes differ"
# qemu-io over PSK: aio writes, a read back with a pattern check
qemu-io --object "$(qpsk alice)" --image-opts "$(qimg disk1)" \
  -c 'aio_write -P 0x5a 0 64k' -c 'aio_flush' -c 'read -P 0x5a 0 64k' \
  >"$TEST_DIR/qio" 2>&1 || fail "qemu-io over PSK: $(cat "$TEST_DIR/qio")"
grep -q 'Pattern verification failed' "$TEST_DIR/qio" && fail "qemu-io pattern"
# nbdcopy into the export over TLS, several connections
# (dense data: nbdcopy turns the holes of a sparse file into zero requests
# larger than the export's maximum, which vbk-blockd refuses on any
# transport)
head -c 8M /dev/urandom >"$TEST_DIR/in8"
nbdcopy --connections=2 --threads=2 "$TEST_DIR/in8" "$(psk alice disk1)"
nbdcopy "$(psk alice disk1)" "$TEST_DIR/out8"
cmp -n $((8 << 20)) "$TEST_DIR/in8" "$TEST_DIR/out8" ||
  fail "nbdcopy in over TLS: bytes differ"

# ---- read-only identity -----------------------------------------------------
nbdinfo "$(x509 carol disk1)" >"$TEST_DIR/info" ||
  fail "carol cannot read disk1"
grep -q 'is_read_only: true' "$TEST_DIR/info" ||
  fail "carol's export is not read-only: $(cat "$TEST_DIR/info")"
nbdcopy "$(x509 carol disk1)" "$TEST_DIR/out-carol"
cmp "$TEST_DIR/out8" "$TEST_DIR/out-carol" || fail "carol reads other bytes"
expect_fail 'ermission|read.only|EPERM' qemu-io --object "$(qx509 carol)" \
  --image-opts "$(qimg disk1)" -c 'write 0 4k'
# Past the client's own check: the server refuses the write with EPERM,
# and disk3 (never written) gets no lease.
URI=$(x509 carol disk3) PATH=/usr/bin:$PATH nbdsh -c '
import errno, os
h.set_uri_allow_local_file(True)
h.connect_uri(os.environ["URI"])
h.set_strict_mode(0)
assert h.is_read_only()
try:
    h.pwrite(b"x" * 4096, 0)
    raise SystemExit("a read-only client wrote")
except nbd.Error as e:
    # "command failed": the server answered, with EPERM
    assert "command failed" in str(e) and "EPERM" in str(e), e
try:
    h.zero(4096, 0)
    raise SystemExit("a read-only client zeroed")
except nbd.Error as e:
    # "command failed": the server answered, with EPERM
    assert "command failed" in str(e) and "EPERM" in str(e), e
h.flush()
' 2>"$TEST_DIR/err" || fail "carol's write to disk3: $(cat "$TEST_DIR/err")"
vbk --store "$store" lease status disk3 --json | json_check 'not d.get("held")'
vbk --store "$store" image info disk3 --json >/dev/null

# ---- an identity not listed: no list entry, no export -----------------------
nbdinfo --list "$(x509 bob '')" >"$TEST_DIR/list-bob"
grep -q 'export="disk2"' "$TEST_DIR/list-bob" || fail "bob does not see disk2"
grep -Eq 'export="disk[13]"' "$TEST_DIR/list-bob" &&
  fail "bob sees exports he may not open: $(cat "$TEST_DIR/list-bob")"
nbdinfo --list "$(psk alice '')" >"$TEST_DIR/list-alice"
grep -q 'export="disk1"' "$TEST_DIR/list-alice" || fail "alice does not see disk1"
grep -Eq 'export="disk[23]"' "$TEST_DIR/list-alice" &&
  fail "alice sees exports she may not open: $(cat "$TEST_DIR/list-alice")"
# (the exact reply, NBD_REP_ERR_POLICY, is checked with a raw client below)
expect_fail 'opt_go' nbdinfo "$(x509 bob disk1)"
grep -q "export disk1 refused to client bob" "$log" ||
  fail "bob's refusal is not logged with his identity"
# Snapshots follow their image's lists (and are listed to whom may open
# them).
vbk --store "$store" snap create disk1@s1 >/dev/null
nbdinfo --list "$(x509 carol '')" >"$TEST_DIR/list-carol"
grep -q 'export="disk1@s1"' "$TEST_DIR/list-carol" ||
  fail "carol does not see disk1@s1: $(cat "$TEST_DIR/list-carol")"
nbdinfo --list "$(x509 bob '')" | grep -q 'disk1@' &&
  fail "bob sees a snapshot of disk1"
nbdinfo "$(x509 carol disk1@s1)" | grep -q 'is_read_only: true' ||
  fail "carol cannot read disk1@s1"
expect_fail 'opt_go' nbdinfo "$(x509 bob disk1@s1)"

# ---- refused clients ----------------------------------------------------------
echo "alice:$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >"$TEST_DIR/wrong.psk"
expect_fail '.' nbdinfo "nbds://alice@127.0.0.1:$port/disk1?tls-psk-file=$TEST_DIR/wrong.psk"
expect_fail '.' nbdinfo "nbds://127.0.0.1:$port/disk1?tls-certificates=$TEST_DIR/rogue/client-alice"
expect_fail '.' qemu-img info --object "tls-creds-x509,id=tls0,dir=$TEST_DIR/rogue/client-alice,endpoint=client" \
  --image-opts "$(qimg disk1)"
expect_fail 'opt_go' nbdinfo "nbd://127.0.0.1:$port/disk1"   # NBD_REP_ERR_TLS_REQD: raw check below
expect_fail '.' qemu-img info "nbd://127.0.0.1:$port/disk1"
grep -q "TLS refused: .*wrong key for PSK identity 'alice'" "$log" ||
  fail "the wrong PSK key is not logged"
grep -q "TLS refused: .*client certificate" "$log" ||
  fail "the unknown CA is not logged"
alive "refused clients"

# ---- the Unix socket is the local path ------------------------------------------
nbdinfo --list "nbd+unix:///?socket=$sock" | grep -q 'export="disk3"' ||
  fail "the Unix socket does not list every image"
qemu-io -f raw "nbd+unix:///disk2?socket=$sock" -c 'write -P 0x11 0 4k' \
  >/dev/null || fail "no write on the Unix socket"

# ---- hostile input over TLS -----------------------------------------------------
PY=$(python_with_nbd)
"$PY" - "$port" "$certs" <<'PY' || fail "hostile TLS clients"
import os, socket, ssl, struct, sys, time
sys.path.insert(0, os.path.join(os.environ["VBK_SRC"], "tests"))
import nbdraw as n

port, certs = int(sys.argv[1]), sys.argv[2]
OPT_STARTTLS, REP_ERR_TLS_REQD = 5, 2**31 + 5

def tcp():
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    magic, opt, gflags = struct.unpack(">QQH", n.recvall(s, 18))
    assert magic == n.NBDMAGIC and opt == n.IHAVEOPT
    s.sendall(struct.pack(">I", 3))
    return s

def closed(s, within=20):
    s.settimeout(within)
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False

def starttls(s):
    n.option(s, OPT_STARTTLS)
    opt, rtype, data = n.reply(s)
    assert (opt, rtype) == (OPT_STARTTLS, n.REP_ACK), (opt, rtype)

def ctx(who="alice"):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.load_verify_locations(certs + "/ca-cert.pem")
    c.load_cert_chain(certs + "/client-%s/client-cert.pem" % who,
                      certs + "/client-%s/client-key.pem" % who)
    return c

def go_reply(who, name):
    s = tcp()
    starttls(s)
    t = ctx(who).wrap_socket(s, server_hostname="localhost")
    b = name.encode()
    n.option(t, n.OPT_GO, struct.pack(">I", len(b)) + b + struct.pack(">H", 0))
    while True:
        opt, rtype, data = n.reply(t)
        if rtype != n.REP_INFO:
            t.close()
            return rtype

# Refused exports: NBD_REP_ERR_POLICY, the same for a name that does not
# exist (nothing leaks); allowed but missing: NBD_REP_ERR_UNKNOWN.
REP_ERR_UNKNOWN, REP_ERR_POLICY = 2**31 + 6, 2**31 + 2
assert go_reply("bob", "disk1") == REP_ERR_POLICY
assert go_reply("bob", "disk3") == REP_ERR_POLICY
assert go_reply("bob", "nosuch") == REP_ERR_POLICY
assert go_reply("bob", "disk2") == n.REP_ACK
assert go_reply("carol", "disk3") == n.REP_ACK

def works():
    s = tcp()
    starttls(s)
    t = ctx().wrap_socket(s, server_hostname="localhost")
    n.option(t, n.OPT_GO, struct.pack(">I", 5) + b"disk1" + struct.pack(">H", 0))
    while True:
        opt, rtype, data = n.reply(t)
        if rtype == n.REP_ACK:
            break
        assert rtype == n.REP_INFO, rtype
    t.close()

# Before TLS: options get TLS_REQD, EXPORT_NAME ends the session.
s = tcp()
n.option(s, n.OPT_LIST)
opt, rtype, data = n.reply(s)
assert rtype == REP_ERR_TLS_REQD, rtype
n.option(s, n.OPT_EXPORT_NAME, b"disk1")
assert closed(s), "EXPORT_NAME before TLS did not close"

# Bytes after STARTTLS, before the ACK: disconnect, no ACK.
s = tcp()
s.sendall(struct.pack(">QII", n.IHAVEOPT, OPT_STARTTLS, 0)
          + struct.pack(">QII", n.IHAVEOPT, n.OPT_LIST, 0))
data = b""
s.settimeout(20)
try:
    while True:
        c = s.recv(65536)
        if not c:
            break
        data += c
except ConnectionResetError:
    pass
assert data == b"", "pipelined STARTTLS was answered: %r" % data
works()

# Garbage where the ClientHello belongs.
s = tcp()
starttls(s)
s.sendall(b"GET / HTTP/1.0\r\n\r\n" + os.urandom(3000))
assert closed(s), "garbage after STARTTLS did not close"
works()

# A handshake that stalls: the deadline (1 s here) cuts it off, and a
# good client is served meanwhile.
s = tcp()
starttls(s)
t0 = time.time()
works()
assert closed(s, within=30), "a stalled TLS handshake was never cut off"
assert time.time() - t0 < 30

# Half a ClientHello, then silence.
s = tcp()
starttls(s)
s.sendall(bytes([0x16, 3, 1, 2, 0, 1, 0, 1, 0xfc, 3, 3]))
assert closed(s, within=30), "half a ClientHello was never cut off"

# A client that closes in the middle of a TLS record.
s = tcp()
starttls(s)
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
o = ctx().wrap_bio(inc, out, server_hostname="localhost")
while True:
    try:
        o.do_handshake()
        break
    except ssl.SSLWantReadError:
        if out.pending:
            s.sendall(out.read())
        d = s.recv(65536)
        assert d, "server closed during the handshake"
        inc.write(d)
if out.pending:
    s.sendall(out.read())
o.write(struct.pack(">QII", n.IHAVEOPT, n.OPT_LIST, 0) + b"x" * 3000)
rec = out.read()
s.sendall(rec[: len(rec) // 2])
s.close()
works()
PY
alive "hostile TLS clients"
grep -q "data after NBD_OPT_STARTTLS" "$log" ||
  fail "pipelined STARTTLS not logged"

# ---- metrics -------------------------------------------------------------------
[ "$(metric 'vbk_blockd_requests_total{export="disk1",op="write"}')" -gt 0 ] ||
  fail "no writes counted"
[ "$(metric 'vbk_blockd_request_bytes_total{export="disk1",op="write"}')" -ge $((8 << 20)) ] ||
  fail "write bytes not counted"
[ "$(metric 'vbk_blockd_requests_total{export="disk1",op="read"}')" -gt 0 ] ||
  fail "no reads counted"
[ "$(metric 'vbk_blockd_request_errors_total{export="disk3",op="write"}')" -ge 1 ] ||
  fail "carol's refused write not counted as an error"
[ "$(metric 'vbk_blockd_tls_handshakes_total')" -gt 5 ] || fail "handshakes"
[ "$(metric 'vbk_blockd_tls_failures_total{reason="auth"}')" -ge 2 ] ||
  fail "auth failures not counted"
[ "$(metric 'vbk_blockd_tls_failures_total{reason="timeout"}')" -ge 2 ] ||
  fail "handshake timeouts not counted"
[ "$(metric 'vbk_blockd_access_denied_total')" -ge 2 ] || fail "denials"
[ "$(metric 'vbk_blockd_tls_required_total')" -ge 2 ] || fail "TLS_REQD"
[ "$(metric 'vbk_blockd_lease_acquisitions_total{export="disk1"}')" -ge 1 ] ||
  fail "lease acquisition not counted"
[ "$(metric 'vbk_blockd_connections_total{transport="tls"}')" -gt 5 ] ||
  fail "TLS connections not counted"
before=$(metric 'vbk_blockd_requests_total{export="disk1",op="read"}')
qemu-io --object "$(qpsk alice)" --image-opts "$(qimg disk1)" \
  -c 'read 0 1M' >/dev/null
after=$(metric 'vbk_blockd_requests_total{export="disk1",op="read"}')
[ "$after" -gt "$before" ] || fail "reads did not move the counter"
stop_blockd pid

# ---- no plain TCP on a network address ----------------------------------------------
rc=0
"$VBK_BIN/vbk-blockd" --store "$store" --socket "$TEST_DIR/x.sock" \
  --listen "0.0.0.0:$port" 2>"$TEST_DIR/err" || rc=$?
[ "$rc" -eq 2 ] || fail "--listen 0.0.0.0 without TLS: exit $rc"
grep -q 'insecure-tcp' "$TEST_DIR/err" || fail "no hint: $(cat "$TEST_DIR/err")"
rc=0
"$VBK_BIN/vbk-blockd" --store "$store" --socket "$TEST_DIR/x.sock" \
  --metrics "0.0.0.0:$port" 2>"$TEST_DIR/err" || rc=$?
[ "$rc" -eq 2 ] || fail "--metrics 0.0.0.0: exit $rc"
rc=0
"$VBK_BIN/vbk-blockd" --store "$store" --socket "$TEST_DIR/x.sock" \
  --tls on 2>"$TEST_DIR/err" || rc=$?
[ "$rc" -eq 2 ] || fail "--tls on without credentials: exit $rc"

# --tls=on: TLS offered, plain allowed (loopback), no lists: both work.
port2=$(free_tcp_port)
start_blockd pid2 "$TEST_DIR/on.sock" --listen "127.0.0.1:$port2" --tls on \
  --tls-psk "$certs/keys.psk"
for ((i = 0; i < 100; i++)); do
  grep -q "listening on 127.0.0.1:$port2" "$TEST_DIR/on.log" && break
  sleep 0.1
done
nbdinfo "nbd://127.0.0.1:$port2/disk2" >/dev/null || fail "plain client with --tls=on"
nbdinfo "nbds://bob@127.0.0.1:$port2/disk2?tls-psk-file=$certs/client-bob/keys.psk" \
  >/dev/null || fail "TLS client with --tls=on"
stop_blockd pid2
echo "ok"
