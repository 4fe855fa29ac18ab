#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs every build, test and benchmark dependency of vbk on Debian 12.
# Idempotent: when everything is present it prints nothing and does not touch apt.
set -eu

PKGS="
  build-essential cmake pkg-config git clang libclang-rt-14-dev
  librados-dev ceph-mon ceph-osd ceph-mgr ceph-common
  libfuse3-dev fuse3 liburcu-dev liblz4-dev libdeflate-dev libcmocka-dev
  libssl-dev libgnutls28-dev libinih-dev libjson-c-dev
  qemu-utils qemu-block-extra libnbd-bin python3-libnbd nbdkit
  fio restic borgbackup util-linux e2fsprogs procps psmisc
  libext2fs-dev libfdisk-dev libblkid-dev gnutls-bin python3 fdisk
  python3-llfuse
"

missing=""
for p in $PKGS; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages:$missing (run as root to install them)" >&2
  exit 1
fi

echo "install-deps: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
