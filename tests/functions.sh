# SPDX-License-Identifier: MIT
#
# functions.sh - shared by the end-to-end tests (tests/e2e/*.sh).
# Source it first:  . "$VBK_SRC/tests/functions.sh"
#
# The environment (set by ctest, see tests/CMakeLists.txt):
#   VBK_BIN              build/bin, holding vbk and vbk-blockd
#   VBK_SRC              the source tree
#   VBK_TEST_STORE_KIND  local | rados | none
#   CEPH_CONF, VBK_TEST_POOL   the test cluster (rados)

set -euo pipefail

: "${VBK_SRC:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
: "${VBK_BIN:=$VBK_SRC/build/bin}"
: "${VBK_TEST_STORE_KIND:=local}"
[ "$VBK_TEST_STORE_KIND" = none ] && VBK_TEST_STORE_KIND=local
: "${VBK_TEST_POOL:=vbk}"
export VBK_BIN VBK_SRC VBK_TEST_STORE_KIND VBK_TEST_POOL

# A scratch directory for this test, removed at exit.
TEST_DIR=$(mktemp -d "${TMPDIR:-/tmp}/vbk-e2e.XXXXXX")
export TEST_DIR

_cleanup_fns=()
# cleanup_fn CMD ARGS...: run at exit, last registered first.
cleanup_fn () { _cleanup_fns+=("$*"); }
_run_cleanup ()
{
  local rc=$? i f
  for ((i = ${#_cleanup_fns[@]} - 1; i >= 0; i--)); do
    eval "${_cleanup_fns[$i]}" || true
  done
  # On failure, show the end of every daemon log the test kept.
  if [ "$rc" -ne 0 ]; then
    for f in "$TEST_DIR"/*.log; do
      [ -f "$f" ] || continue
      echo "---- last lines of $(basename "$f"):" >&2
      tail -n 80 "$f" >&2
    done
  fi
  rm -rf "$TEST_DIR"
  exit $rc
}
trap _run_cleanup EXIT

fail () { echo "FAIL: $*" >&2; exit 1; }

# requires TOOL: the test cannot run without it (install-deps installs
# every tool the tests use, so a missing one is a failure, not a skip).
requires ()
{
  command -v "$1" >/dev/null 2>&1 || fail "required tool '$1' is missing (run deploy/install-deps.sh)"
}

# new_store: prints the URI of a new, empty store of the backend under test.
new_store ()
{
  case "$VBK_TEST_STORE_KIND" in
    local) echo "local:$(mktemp -d "$TEST_DIR/store.XXXXXX")" ;;
    rados) echo "rados:$VBK_TEST_POOL/e2e-$$-$RANDOM$RANDOM?conf=$CEPH_CONF" ;;
    *) fail "unknown VBK_TEST_STORE_KIND=$VBK_TEST_STORE_KIND" ;;
  esac
}

vbk () { "$VBK_BIN/vbk" "$@"; }

# expect_fail REGEX CMD ARGS...: CMD must exit non-zero and print a line
# on stderr matching REGEX (grep -E).
expect_fail ()
{
  local re=$1 rc=0
  shift
  "$@" >"$TEST_DIR/out" 2>"$TEST_DIR/err" || rc=$?
  [ "$rc" -ne 0 ] || fail "expected failure, got success: $*"
  grep -Eq -- "$re" "$TEST_DIR/err" ||
    fail "expected an error matching '$re' from: $* (got: $(cat "$TEST_DIR/err"))"
  [ "$(wc -l <"$TEST_DIR/err")" -ge 1 ] || fail "no error message from: $*"
}

# wait_for_socket PATH [SECONDS]
wait_for_socket ()
{
  local i
  for ((i = 0; i < ${2:-10} * 20; i++)); do
    [ -S "$1" ] && return 0
    sleep 0.05
  done
  fail "socket $1 did not appear"
}
