#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# blockd-tls-priority.sh - the TLS priority string of vbk-blockd
# (tls_priority in [blockd], --tls-priority), with real clients:
#   the default: qemu's client (qemu-img) and libnbd's (nbdinfo, nbdcopy)
#   both get TLS 1.3 with AES-128-GCM (the server's preference);
#   tls_priority in the config file: the suite it puts first is the one
#   X.509 sessions use (PSK ones need a SHA-256 suite); --tls-priority overrides the file; TLS 1.2 and
#   ChaCha20-Poly1305 when the string asks for them; with each, several
#   MiB written and read back over X.509 and PSK compare byte for byte
#   (requests of 1 MiB and of 4 KiB, the record sizes of both);
#   a string GnuTLS does not understand is refused at start with a
#   message that says where; a string without a PSK key exchange while
#   PSK keys are given is refused too.
# The store backend plays no part here (local only).

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires qemu-img
requires qemu-io
requires nbdinfo
requires nbdcopy
requires certtool

store=$(new_store)
certs=$TEST_DIR/certs
"$VBK_SRC/deploy/make-tls-certs.sh" "$certs" alice 2>/dev/null
vbk --store "$store" image create disk --size 64M >/dev/null
head -c 9M /dev/urandom >"$TEST_DIR/in"
printf '[blockd]\ndefault_allow = *\n' >"$TEST_DIR/base.conf"

x509 () { echo "nbds://127.0.0.1:$port/disk?tls-certificates=$certs/client-alice"; }
psk () { echo "nbds://alice@127.0.0.1:$port/disk?tls-psk-file=$certs/client-alice/keys.psk"; }
qx509="tls-creds-x509,id=tls0,dir=$certs/client-alice,endpoint=client"
qpsk="tls-creds-psk,id=tls0,dir=$certs/client-alice,username=alice,endpoint=client"
qimg () { echo "driver=nbd,host=127.0.0.1,port=$port,export=disk,tls-creds=tls0"; }

# serve NAME [ARGS...]: vbk-blockd with X.509 and PSK on a new port
serve ()
{
  local name=$1
  shift
  port=$(free_tcp_port)
  log=$TEST_DIR/$name.log
  start_blockd pid "$TEST_DIR/$name.sock" --listen "127.0.0.1:$port" \
    --tls-certificates "$certs/server" --tls-psk "$certs/keys.psk" "$@"
  for ((i = 0; i < 100; i++)); do
    grep -q "listening on 127.0.0.1:$port" "$log" && break
    sleep 0.1
  done
}

# suites: the distinct "TLS (...)" descriptions in the log
suites () { sed -n 's/.*: TLS (\([^)]*\)).*/\1/p' "$log" | sort -u | tr '\n' ';'; }

# expect_suites DESC...: the sessions so far used exactly these
# descriptions ("TLS1.3 AES-128-GCM x509"), each at least once
expect_suites ()
{
  local want got
  got=$(suites)
  want=$(printf '%s\n' "$@" | sort -u | tr '\n' ';')
  [ "$got" = "$want" ] || fail "sessions used: $got; wanted: $want"
}

# traffic: writes and reads back over X.509 and PSK, 1 MiB and 4 KiB
traffic ()
{
  nbdcopy --request-size=1048576 "$TEST_DIR/in" "$(x509)" ||
    fail "nbdcopy in (x509, $1)"
  nbdcopy --request-size=1048576 "$(psk)" "$TEST_DIR/out" ||
    fail "nbdcopy out (psk, $1)"
  cmp -n $((9 << 20)) "$TEST_DIR/in" "$TEST_DIR/out" ||
    fail "1 MiB requests over TLS ($1): bytes differ"
  qemu-io --object "$qx509" --image-opts "$(qimg)" \
    -c 'aio_write -P 0x3c 40960 4k' -c 'aio_write -P 0xc3 45056 4k' \
    -c 'aio_flush' -c 'read -P 0x3c 40960 4k' -c 'read -P 0xc3 45056 4k' \
    >"$TEST_DIR/qio" 2>&1 || fail "qemu-io ($1): $(cat "$TEST_DIR/qio")"
  grep -q 'Pattern verification failed' "$TEST_DIR/qio" &&
    fail "qemu-io pattern ($1): $(cat "$TEST_DIR/qio")"
  dd if="$TEST_DIR/in" of="$TEST_DIR/expect" bs=4k count=2304 status=none
  printf '\x3c%.0s' $(seq 4096) | dd of="$TEST_DIR/expect" bs=4k seek=10 \
    conv=notrunc status=none
  printf '\xc3%.0s' $(seq 4096) | dd of="$TEST_DIR/expect" bs=4k seek=11 \
    conv=notrunc status=none
  qemu-img compare --object "$qpsk" --image-opts \
    "driver=file,filename=$TEST_DIR/expect" "$(qimg)" >"$TEST_DIR/cmp" 2>&1 ||
    fail "qemu-img compare over TLS ($1): $(cat "$TEST_DIR/cmp")"
}

# ---- the default: AES-128-GCM for qemu's client and libnbd's -------------------
serve default --config "$TEST_DIR/base.conf"
grep -q 'priority (default)' "$log" || fail "start-up log: $(cat "$log")"
qemu-img info --object "$qx509" --image-opts "$(qimg)" >/dev/null ||
  fail "qemu-img info over TLS"
nbdinfo "$(psk)" >/dev/null || fail "nbdinfo over TLS (PSK)"
traffic default
expect_suites "TLS1.3 AES-128-GCM x509" "TLS1.3 AES-128-GCM psk"
stop_blockd pid

# ---- tls_priority in the config file ----------------------------------------------
cat >"$TEST_DIR/p256.conf" <<CONF
[blockd]
default_allow = *
tls_priority = NORMAL:%SERVER_PRECEDENCE:-CIPHER-ALL:+AES-256-GCM:+AES-128-GCM:+ECDHE-PSK:+DHE-PSK:+PSK
CONF
serve p256 --config "$TEST_DIR/p256.conf"
traffic aes256
# (GnuTLS binds a TLS 1.3 external PSK to SHA-256: PSK sessions take
# the first suite with SHA-256, AES-128-GCM)
expect_suites "TLS1.3 AES-256-GCM x509" "TLS1.3 AES-128-GCM psk"
stop_blockd pid

# ---- --tls-priority overrides the file: TLS 1.2, ChaCha20-Poly1305 ----------------
serve chacha12 --config "$TEST_DIR/p256.conf" --tls-priority \
  "NORMAL:-VERS-ALL:+VERS-TLS1.2:-CIPHER-ALL:+CHACHA20-POLY1305:+ECDHE-PSK:+DHE-PSK:+PSK"
traffic chacha-tls12
expect_suites "TLS1.2 CHACHA20-POLY1305 x509" "TLS1.2 CHACHA20-POLY1305 psk"
stop_blockd pid

# ---- TLS 1.2 with AES-128-GCM ------------------------------------------------------
serve aes12 --config "$TEST_DIR/base.conf" --tls-priority \
  "NORMAL:-VERS-ALL:+VERS-TLS1.2:%SERVER_PRECEDENCE:-CIPHER-ALL:+AES-128-GCM:+ECDHE-PSK:+DHE-PSK:+PSK"
traffic aes128-tls12
expect_suites "TLS1.2 AES-128-GCM x509" "TLS1.2 AES-128-GCM psk"
stop_blockd pid

# ---- refused strings ---------------------------------------------------------------
rc=0
"$VBK_BIN/vbk-blockd" --store "$store" --socket "$TEST_DIR/x.sock" \
  --listen "127.0.0.1:$(free_tcp_port)" --tls-certificates "$certs/server" \
  --tls-priority "NORMAL:+NO-SUCH-CIPHER" 2>"$TEST_DIR/err" || rc=$?
[ "$rc" -ne 0 ] || fail "a bad priority string was accepted"
grep -q 'priority "NORMAL:+NO-SUCH-CIPHER": not understood at "+NO-SUCH-CIPHER"' \
  "$TEST_DIR/err" || fail "bad priority: unclear error: $(cat "$TEST_DIR/err")"
[ ! -S "$TEST_DIR/x.sock" ] || fail "a socket after a refused start"
rc=0
"$VBK_BIN/vbk-blockd" --store "$store" --socket "$TEST_DIR/x.sock" \
  --listen "127.0.0.1:$(free_tcp_port)" --tls-psk "$certs/keys.psk" \
  --tls-priority "NORMAL" 2>"$TEST_DIR/err" || rc=$?
[ "$rc" -ne 0 ] || fail "PSK keys with a priority without PSK were accepted"
grep -q 'no PSK key exchange' "$TEST_DIR/err" ||
  fail "PSK without a PSK key exchange: unclear error: $(cat "$TEST_DIR/err")"
rc=0
printf '[blockd]\ntls_priority =\n' >"$TEST_DIR/empty.conf"
"$VBK_BIN/vbk-blockd" --store "$store" --socket "$TEST_DIR/x.sock" \
  --listen "127.0.0.1:$(free_tcp_port)" --tls-certificates "$certs/server" \
  --config "$TEST_DIR/empty.conf" 2>"$TEST_DIR/err" || rc=$?
[ "$rc" -ne 0 ] || fail "an empty priority string was accepted"
grep -q 'tls_priority' "$TEST_DIR/err" ||
  fail "empty priority: unclear error: $(cat "$TEST_DIR/err")"
echo "ok"
