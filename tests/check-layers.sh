#!/bin/bash
# SPDX-License-Identifier: MIT
#
# check-layers.sh - the build's guard on vbk's layers.  Data flows down:
#
#   tools/  blockd/  fuse/          (programs and the FUSE view)
#      backup/                      (backup repository)
#      copy/  snapshot/             (copy engine; snapshots)
#      locks/                       (leases)
#      image/                       (disk images)
#      store/                       (object store)
#      common/                      (errors, logging, helpers)
#
# Fails when a file includes a header of a layer above its own or beside
# it that it may not use, when a folder includes another folder's
# internal.h, when librados, libfuse3 or GnuTLS appear outside the one
# place each belongs, or when a public header does not compile on its own.
#
# The build enforces the same direction on its own: each library sees only
# the public headers of the libraries it links (CMakeLists.txt,
# vbk_library_headers), so an upward include or a foreign internal.h does
# not compile.  The self-test shows both: this check and the compiler,
# with the build's own flags for the file, reject the bad include.
#
# Usage: tests/check-layers.sh [SRCDIR]      (default: this tree)
#        tests/check-layers.sh --self-test [BUILDDIR]
#                                  (shows the check, and with BUILDDIR the
#                                   build too, failing on deliberately bad
#                                   includes)
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)

# What each folder may include (besides itself and common/).
declare -A allowed=(
  [common]=""
  [store]=""
  [image]="store"
  [locks]="store"
  [snapshot]="locks image store"
  [copy]="image store"
  [backup]="copy snapshot locks image store"
  [fuse]="backup copy snapshot image store"
  [blockd]="backup snapshot locks image store"
  [tools]="backup copy fuse snapshot locks image store"
)

check_tree ()
{
  local src=$1 bad=0 f dir inc target ok a
  cd "$src" || return 1
  for dir in "${!allowed[@]}"; do
    [ -d "$dir" ] || continue
    while IFS= read -r f; do
      while IFS= read -r inc; do
        case $inc in
          */*) target=${inc%%/*} ;;
          *) continue ;;              # same folder
        esac
        [ "$target" = "$dir" ] && continue
        if [ "${inc##*/}" = internal.h ]; then
          echo "layers: $f includes $inc: another library's internals" >&2
          bad=1
          continue
        fi
        [ "$target" = common ] && continue
        [ -n "${allowed[$target]+x}" ] || continue   # not one of ours
        ok=0
        for a in ${allowed[$dir]}; do
          [ "$a" = "$target" ] && ok=1
        done
        if [ $ok = 0 ]; then
          echo "layers: $f includes $inc: $dir/ may not depend on $target/" >&2
          bad=1
        fi
      done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f")
    done < <(find "$dir" -name '*.[ch]')
  done

  # Third-party libraries, each in its one place.
  only_in ()
  {
    local pattern=$1; shift
    local hit
    while IFS= read -r hit; do
      local okf=0 p
      for p in "$@"; do
        case $hit in $p) okf=1 ;; esac
      done
      if [ $okf = 0 ]; then
        echo "layers: $hit includes $pattern outside ${*}" >&2
        bad=1
      fi
    done < <(grep -rlE "#[[:space:]]*include[[:space:]]*<$pattern" \
               --include='*.[ch]' "${!allowed[@]}" 2>/dev/null)
  }
  only_in 'rados/' 'store/rados.c'
  only_in 'fuse[^>]*\.h' 'fuse/*'
  if [ "$(grep -rlE '#[[:space:]]*include[[:space:]]*<fuse[^>]*\.h' \
          --include='*.[ch]' fuse 2>/dev/null | wc -l)" -gt 1 ]; then
    echo "layers: more than one file of fuse/ includes libfuse3" >&2
    bad=1
  fi
  only_in 'gnutls/' 'blockd/tls.c'

  # Each public header compiles alone (libnbd's compile-header-only).
  local h cc=${CC:-cc}
  for h in common/*.h store/store.h image/image.h locks/lease.h \
           snapshot/snapshot.h copy/copy.h backup/backup.h fuse/vbkfs.h; do
    [ -f "$h" ] || continue
    if ! echo "#include \"$h\"" \
        | $cc -std=gnu11 -D_GNU_SOURCE -Wall -Werror -fsyntax-only -I. \
              -x c - 2>/tmp/check-layers.$$; then
      echo "layers: $h does not compile on its own:" >&2
      head -5 /tmp/check-layers.$$ >&2
      bad=1
    fi
    rm -f /tmp/check-layers.$$
  done
  return $bad
}

# build_compile TREE FILE: compile TREE/FILE with the flags the build
# (compile_commands.json in $build) uses for this tree's FILE, syntax only.
build_compile ()
{
  python3 - "$build/compile_commands.json" "$here/$2" "$1/$2" <<'PY'
import json, shlex, subprocess, sys
db, orig, copy = sys.argv[1:]
for e in json.load(open(db)):
    if e["file"] == orig:
        args = shlex.split(e["command"])
        break
else:
    sys.exit("self-test: %s is not in %s" % (orig, db))
out = []
skip = False
for a in args:
    if skip:
        skip = False
    elif a == "-o":
        skip = True
    elif a == orig:
        out.append(copy)
    else:
        out.append(a)
sys.exit(subprocess.call(out + ["-fsyntax-only"], cwd=e["directory"]))
PY
}

if [ "${1:-}" = --self-test ]; then
  # The check must pass on this tree and fail on a copy of it with one
  # upward include (store/ reaching up into image/) and, separately, one
  # include of another library's internal.h (blockd/ into image/'s).
  build=${2:-}
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$here" && git ls-files -z 2>/dev/null || find . -type f -print0) \
    | (cd "$here" && xargs -0 cp --parents -t "$tmp")
  if ! (check_tree "$tmp"); then
    echo "self-test: the clean tree fails the check" >&2
    exit 1
  fi
  if [ -n "$build" ]; then
    for f in store/store.c blockd/config.c; do
      if ! build_compile "$tmp" "$f"; then
        echo "self-test: the clean $f does not compile with the build's flags" >&2
        exit 1
      fi
    done
  fi
  cp -a "$tmp" "$tmp.b" && trap 'rm -rf "$tmp" "$tmp.b"' EXIT
  sed -i '0,/#include "common\/error.h"/s//#include "common\/error.h"\n#include "image\/image.h"/' \
    "$tmp/store/store.c"
  sed -i '0,/#include "image\/image.h"/s//#include "image\/image.h"\n#include "image\/internal.h"/' \
    "$tmp.b/blockd/config.c"
  for t in "$tmp:store -> image" "$tmp.b:blockd -> image/internal.h"; do
    if out=$( (check_tree "${t%%:*}") 2>&1 ); then
      echo "self-test: a bad include (${t#*:}) was not caught" >&2
      exit 1
    fi
    echo "$out"
  done
  if [ -n "$build" ]; then
    for t in "$tmp:store/store.c" "$tmp.b:blockd/config.c"; do
      echo "self-test: the build compiling ${t#*:} with the bad include:"
      if build_compile "${t%%:*}" "${t#*:}" 2>&1; then
        echo "self-test: the build compiled ${t#*:} with a bad include" >&2
        exit 1
      fi
    done
  else
    echo "self-test: no BUILDDIR: the build half was not run"
  fi
  echo "self-test: ok (the bad includes above were caught)"
  exit 0
fi

check_tree "${1:-$here}" && echo "layers: ok"
