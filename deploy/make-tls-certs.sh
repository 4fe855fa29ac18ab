#!/bin/bash
# SPDX-License-Identifier: MIT
#
# make-tls-certs.sh DIR [CLIENT...] - a test CA, a server certificate,
# client certificates and PSK keys for NBD over TLS with vbk-blockd.
#
# The layout is QEMU's (tls-creds-x509 and tls-creds-psk read a folder):
#   DIR/ca-cert.pem, DIR/ca-key.pem          the CA (keep ca-key.pem safe)
#   DIR/server/ca-cert.pem, server-cert.pem, server-key.pem
#                                            vbk-blockd --tls-certificates
#                                            (also qemu-nbd endpoint=server)
#   DIR/client-NAME/ca-cert.pem, client-cert.pem, client-key.pem
#                                            a client whose certificate
#                                            subject is CN=NAME,O=vbk
#   DIR/keys.psk                             every NAME:HEXKEY (blockd
#                                            --tls-psk; nbdkit, qemu-nbd)
#   DIR/client-NAME/keys.psk                 that client's line alone
#                                            (qemu tls-creds-psk dir=,
#                                            nbdinfo tls-psk-file=)
# Clients default to alice, bob and carol.  The server certificate names
# localhost, 127.0.0.1 and ::1, plus $VBK_TLS_SERVER_NAMES (space
# separated DNS names or IP addresses) for a real host.
#
# Needs certtool (gnutls-bin).  Keys are ECDSA (fast to make).  This is
# for tests and demos: a production CA belongs to the operator.
set -euo pipefail

dir=${1:?usage: make-tls-certs.sh DIR [CLIENT...]}
shift
clients=("$@")
[ ${#clients[@]} -gt 0 ] || clients=(alice bob carol)
command -v certtool >/dev/null ||
  { echo "make-tls-certs: certtool is missing (apt-get install gnutls-bin)" >&2; exit 1; }

umask 077
mkdir -p "$dir/server"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

gen_key () { certtool --generate-privkey --key-type=ecdsa --outfile "$1" 2>/dev/null; }

if [ ! -f "$dir/ca-cert.pem" ]; then
  cat >"$tmp/ca.info" <<EOF
cn = "vbk test CA"
organization = "vbk"
ca
cert_signing_key
crl_signing_key
expiration_days = 3650
EOF
  gen_key "$dir/ca-key.pem"
  certtool --generate-self-signed --load-privkey "$dir/ca-key.pem" \
    --template "$tmp/ca.info" --outfile "$dir/ca-cert.pem" 2>/dev/null
fi

{
  echo 'cn = "localhost"'
  echo 'organization = "vbk"'
  echo 'dns_name = "localhost"'
  echo 'ip_address = "127.0.0.1"'
  echo 'ip_address = "::1"'
  for n in ${VBK_TLS_SERVER_NAMES:-}; do
    if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then
      echo "ip_address = \"$n\""
    else
      echo "dns_name = \"$n\""
    fi
  done
  echo 'tls_www_server'
  echo 'signing_key'
  echo 'encryption_key'
  echo 'expiration_days = 3650'
} >"$tmp/server.info"
gen_key "$dir/server/server-key.pem"
certtool --generate-certificate --load-privkey "$dir/server/server-key.pem" \
  --load-ca-certificate "$dir/ca-cert.pem" --load-ca-privkey "$dir/ca-key.pem" \
  --template "$tmp/server.info" --outfile "$dir/server/server-cert.pem" 2>/dev/null
cp "$dir/ca-cert.pem" "$dir/server/ca-cert.pem"

: >"$dir/keys.psk.new"
for name in "${clients[@]}"; do
  case $name in
    *[!A-Za-z0-9._-]*|'') echo "make-tls-certs: bad client name '$name'" >&2; exit 1 ;;
  esac
  cdir=$dir/client-$name
  mkdir -p "$cdir"
  cat >"$tmp/client.info" <<EOF
cn = "$name"
organization = "vbk"
tls_www_client
signing_key
encryption_key
expiration_days = 3650
EOF
  gen_key "$cdir/client-key.pem"
  certtool --generate-certificate --load-privkey "$cdir/client-key.pem" \
    --load-ca-certificate "$dir/ca-cert.pem" --load-ca-privkey "$dir/ca-key.pem" \
    --template "$tmp/client.info" --outfile "$cdir/client-cert.pem" 2>/dev/null
  cp "$dir/ca-cert.pem" "$cdir/ca-cert.pem"
  # 256-bit keys, hex, as psktool writes them.
  key=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  echo "$name:$key" >>"$dir/keys.psk.new"
  echo "$name:$key" >"$cdir/keys.psk"
done
mv "$dir/keys.psk.new" "$dir/keys.psk"
echo "make-tls-certs: CA, server and clients (${clients[*]}) in $dir" >&2
