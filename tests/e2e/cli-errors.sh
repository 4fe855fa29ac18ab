#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# cli-errors.sh - the vbk command's help, usage errors and failures that
# do not depend on the store backend under test: --help on every verb,
# unknown commands and options, malformed sizes and names (exit 2), and
# the store-level failures that need a particular store: an unreachable
# cluster, a store directory we may not write, a malformed URI.  Each
# error must be one line "vbk: ..." on stderr with the documented exit
# status (0 success, 1 failure, 2 usage).

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires python3
requires setpriv
requires ceph-authtool

store="local:$TEST_DIR/store"
export VBK_STORE=$store

# ---- Help: exit 0, usage on stdout, one line per option ------------------

for args in "" "image" "image create" "image ls" "image info" \
            "image resize" "image rm" "image import" "image export"; do
  for h in --help -h; do
    # shellcheck disable=SC2086
    vbk $args $h >"$TEST_DIR/help" 2>"$TEST_DIR/err" ||
      fail "vbk $args $h exited non-zero"
    [ ! -s "$TEST_DIR/err" ] || fail "vbk $args $h wrote to stderr"
    grep -q "^Usage: vbk" "$TEST_DIR/help" || fail "vbk $args $h: no usage line"
    grep -q -- "--store URI" "$TEST_DIR/help" || fail "vbk $args $h: no --store"
    grep -q "Exit status" "$TEST_DIR/help" || fail "vbk $args $h: no exit status"
  done
done
vbk --help | grep -q "^  image " || fail "vbk --help does not list 'image'"
vbk image --help | grep -q "^  import " || fail "vbk image --help lacks import"
vbk image create --help | grep -q -- "--object-size SIZE" ||
  fail "image create --help lacks --object-size"
vbk image ls --help | grep -q -- "--json" || fail "image ls --help lacks --json"
# Help wins over missing arguments, wherever it is.
vbk image create --size 1G -h >/dev/null || fail "-h after options"
vbk --help image >/dev/null || fail "--help before the command"

# ---- Usage errors: exit 2 -------------------------------------------------

expect_status 2 "missing command \(one of: image" vbk
expect_status 2 "unknown command 'frobnicate' \(one of: image" vbk frobnicate
expect_status 2 "image: unknown command 'destroy' \(one of: create, ls, info, resize, rm, import, export\)" \
  vbk image destroy
expect_status 2 "missing command" vbk image
expect_status 2 "unknown option '--bogus'" vbk image ls --bogus
expect_status 2 "unknown option '-q'" vbk image ls -q
expect_status 2 "unknown option '--bogus'" vbk --bogus image ls
expect_status 2 "option '--size' needs an argument" vbk image create a --size
expect_status 2 "option '--store' needs an argument" vbk --store
expect_status 2 "missing --size SIZE" vbk image create a
expect_status 2 "missing argument" vbk image create --size 1G
expect_status 2 "missing argument" vbk image import only-one
expect_status 2 "unexpected argument 'b'" vbk image info a b
expect_status 2 "unexpected argument 'x'" vbk image ls x
expect_status 2 "missing --size" vbk image resize a
expect_status 2 "--timeout: invalid number of seconds 'soon'" \
  vbk --timeout soon image ls
expect_status 2 "--timeout: invalid" vbk --timeout 0 image ls

# Sizes.
expect_status 2 "image create: --size: invalid size '12Q': unknown unit" \
  vbk image create a --size 12Q
expect_status 2 "--size: invalid size 'big'" vbk image create a --size big
expect_status 2 "--size: invalid size '-1'" vbk image create a --size -1
expect_status 2 "--size: invalid size '0': must be greater than 0" \
  vbk image create a --size 0
expect_status 2 "--size: invalid size '99999999999999999999': too large" \
  vbk image create a --size 99999999999999999999
expect_status 2 "--size: invalid size '16384P': too large" \
  vbk image create a --size 16384P
expect_status 2 "--size: invalid size '8192P': too large" \
  vbk image create a --size 8192P
expect_status 2 "--size: invalid size '1025P': too large \(at most 1 PiB\)" \
  vbk image create a --size 1025P
expect_status 2 "image resize: --size: invalid size '2P': too large" \
  vbk image resize a --size 2P
expect_status 2 "image resize: --size: invalid size '0'" \
  vbk image resize a --size 0
expect_status 2 "image resize: --size: invalid size '1X'" \
  vbk image resize a --size 1X

# Object sizes: a power of two from 64K to 32M.
for os in 3M 100000 32K 64M 0 1G; do
  expect_status 2 "--object-size: invalid object size '$os': must be a power of two from 64K to 32M" \
    vbk image create a --size 1G --object-size "$os"
done
expect_status 2 "--object-size: invalid size '4Z'" \
  vbk image create a --size 1G --object-size 4Z
expect_status 2 "image import: --object-size: invalid object size '5M'" \
  vbk image import /dev/null a --object-size 5M

# Names.
for name in "a/b" ".hidden" "sp ace" "$(printf 'x%.0s' {1..129})"; do
  expect_status 2 "image create: " vbk image create "$name" --size 1M
done

# None of the above touched the store.
[ ! -e "$TEST_DIR/store" ] || fail "a usage error created the store"

# ---- Failures that need a particular store: exit 1 ------------------------

expect_status 1 "image ls: .*expected a URI" vbk --store nonsense image ls
expect_status 1 "image ls: .*unknown store type 'ftp'" vbk --store ftp:x image ls

# The default store comes from $VBK_STORE, --store overrides it.
vbk image create envimg --size 1M
[ -d "$TEST_DIR/store" ] || fail "\$VBK_STORE was not used"
vbk --store "local:$TEST_DIR/other" image ls --json |
  python3 -c 'import json,sys; assert json.load(sys.stdin) == []'
vbk image ls --json |
  python3 -c 'import json,sys; assert [i["name"] for i in json.load(sys.stdin)] == ["envimg"]'
# Global options also work after the verb.
vbk image ls --store "local:$TEST_DIR/other" --json |
  python3 -c 'import json,sys; assert json.load(sys.stdin) == []'

# Permission denied: a store directory this user may not write.  Root
# may write anywhere, so as root the command runs as nobody, which is
# what the check is about: a user without write access to the store.
chmod 755 "$TEST_DIR"
if [ "$(id -u)" -eq 0 ]; then
  as_user () { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
else
  chmod -R a-w "$TEST_DIR/store"
  cleanup_fn chmod -R u+w "$TEST_DIR/store"
  as_user () { "$@"; }
fi
expect_status 1 "image create: .*Permission denied" \
  as_user "$VBK_BIN/vbk" --store "$store" image create denied --size 1M
expect_status 1 "image rm: .*Permission denied" \
  as_user "$VBK_BIN/vbk" --store "$store" image rm envimg
vbk image info envimg >/dev/null || fail "a refused rm removed the image"

# The file to import may not be readable either.
echo data >"$TEST_DIR/secret"
chmod 600 "$TEST_DIR/secret"
expect_status 1 "image import: .*secret: Permission denied" \
  as_user "$VBK_BIN/vbk" --store "local:$TEST_DIR" image import "$TEST_DIR/secret" s

# An unreachable cluster: a monitor address where nothing listens.  The
# store gives up after --timeout seconds with ETIMEDOUT.
cat >"$TEST_DIR/dead.conf" <<EOF
[global]
fsid = 2e0b6a4c-4f7c-4a43-9a64-c9b4d2f3e0aa
mon_host = v1:127.0.0.1:9
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
keyring = $TEST_DIR/dead.keyring
EOF
cat >"$TEST_DIR/dead.keyring" <<EOF
[client.admin]
	key = $(ceph-authtool --gen-print-key)
EOF
start=$(date +%s)
expect_status 1 "image ls: .*(timed out|Timer expired)" \
  vbk --timeout 3 --store "rados:vbk?conf=$TEST_DIR/dead.conf" image ls
elapsed=$(($(date +%s) - start))
[ "$elapsed" -le 15 ] || fail "--timeout 3 took $elapsed s"
# The timeout also reaches a rados store inside a fault: one.
expect_status 1 "image ls: .*(timed out|Timer expired)" \
  vbk --timeout 2 --store "fault:@rados:vbk?conf=$TEST_DIR/dead.conf" image ls

echo "cli-errors: OK"
