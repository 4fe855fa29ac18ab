#!/bin/sh
# SPDX-License-Identifier: MIT
#
# qemu-tls-example.sh x509|psk HOST IMAGE CREDS [USER] - boots a VM whose
# disk is the vbk image IMAGE, served by vbk-blockd on HOST:10809 over TLS.
#
#   x509: CREDS is a client folder of deploy/make-tls-certs.sh
#         (ca-cert.pem, client-cert.pem, client-key.pem); the server's
#         certificate must name HOST.  blockd side:
#           vbk-blockd --listen 0.0.0.0:10809 --tls-certificates DIR/server
#   psk:  CREDS is a folder with keys.psk holding USER's line; blockd side:
#           vbk-blockd --listen 0.0.0.0:10809 --tls-psk DIR/keys.psk
#
# Which images USER (the PSK identity, or the certificate's CN) may open
# is set in blockd's config file:  [export IMAGE]  allow = USER
# The same objects work for qemu-img and qemu-io, e.g.
#   qemu-img info --object tls-creds-x509,id=tls0,dir=CREDS,endpoint=client \
#     --image-opts driver=nbd,host=HOST,port=10809,export=IMAGE,tls-creds=tls0
set -eu
kind=${1:?usage: qemu-tls-example.sh x509|psk HOST IMAGE CREDS [USER]}
host=${2:?host}
image=${3:?image}
creds=${4:?creds folder}
user=${5:-$(id -un)}

case $kind in
  x509) object="tls-creds-x509,id=tls0,dir=$creds,endpoint=client" ;;
  psk) object="tls-creds-psk,id=tls0,dir=$creds,username=$user,endpoint=client" ;;
  *) echo "qemu-tls-example: x509 or psk" >&2; exit 2 ;;
esac

exec qemu-system-x86_64 \
  -machine q35 -m 1024 -smp 2 -nographic \
  -object "$object" \
  -blockdev driver=nbd,node-name=nbd0,server.type=inet,server.host="$host",server.port=10809,export="$image",tls-creds=tls0,reconnect-delay=10,discard=unmap \
  -blockdev driver=raw,node-name=disk0,file=nbd0,discard=unmap \
  -device virtio-blk-pci,drive=disk0
