#!/bin/sh
# SPDX-License-Identifier: MIT
#
# qemu-example.sh IMAGE [SOCKET] - boots a VM whose disk is the vbk image
# IMAGE, served by vbk-blockd on SOCKET (default /run/vbk/blockd.sock).
# reconnect-delay lets the guest ride out a blockd restart; discard=unmap
# passes guest TRIM through as NBD_CMD_TRIM.  Add -enable-kvm where KVM
# works.  Over TCP use server.type=inet,server.host=HOST,server.port=10809.
set -eu
image=${1:?usage: qemu-example.sh IMAGE [SOCKET]}
sock=${2:-/run/vbk/blockd.sock}

exec qemu-system-x86_64 \
  -machine q35 -m 1024 -smp 2 -nographic \
  -blockdev driver=nbd,node-name=nbd0,server.type=unix,server.path="$sock",export="$image",reconnect-delay=10,discard=unmap \
  -blockdev driver=raw,node-name=disk0,file=nbd0,discard=unmap \
  -device virtio-blk-pci,drive=disk0
