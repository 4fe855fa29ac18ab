#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
#
# fuse-tree.py - source trees for the vbk mount tests, and a manifest of
# a tree to compare two of them.
#
#   fuse-tree.py make DIR VERSION   a tree: files of many sizes, a sparse
#                                   file, symlinks, deep directories,
#                                   non-ASCII names; VERSION 2 changes,
#                                   adds and removes some files of 1
#   fuse-tree.py manifest DIR       one line per entry, sorted: path, type,
#                                   mode, size, mtime (s), sha256 of the
#                                   content or the link's target
#   fuse-tree.py seekmap FILE       SEEK_DATA/SEEK_HOLE walk of FILE:
#                                   "data OFF LEN" lines
import hashlib
import os
import random
import stat
import sys


def write(path, data, mtime=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def make(root, version):
    rnd = random.Random(1234)
    os.makedirs(root, exist_ok=True)
    base = 1700000000
    sizes = [0, 1, 511, 4095, 4096, 4097, 65536, 100003, 1 << 20,
             (3 << 20) + 17]
    for i, n in enumerate(sizes):
        write(os.path.join(root, "sizes", "f%07d" % n),
              rnd.randbytes(n), base + i)
    # Compressible text, several blocks.
    text = "".join("line %d of the text file\n" % i for i in range(20000))
    write(os.path.join(root, "text.txt"), text.encode(), base + 100)
    # A sparse file: 16 MiB with data at 1 MiB and 9 MiB.
    p = os.path.join(root, "sparse.img")
    with open(p, "wb") as f:
        f.truncate(16 << 20)
        f.seek(1 << 20)
        f.write(b"A" * 8192)
        f.seek(9 << 20)
        f.write(rnd.randbytes(70000))
    os.utime(p, (base + 200, base + 200))
    # Deep directories.
    deep = os.path.join(root, *["d%d" % i for i in range(12)])
    write(os.path.join(deep, "bottom.txt"), b"deep down\n", base + 300)
    # Non-ASCII names.
    write(os.path.join(root, "caf\u00e9", "\u65e5\u672c\u8a9e.txt"),
          "\u3053\u3093\u306b\u3061\u306f\n".encode(), base + 400)
    write(os.path.join(root, "\u00fcml\u00e4ut \u00df p\u00e4th.bin"),
          rnd.randbytes(5000), base + 401)
    # Symlinks: short (inline) and long targets, relative and absolute.
    os.symlink("text.txt", os.path.join(root, "link-short"))
    os.makedirs(os.path.join(root, "links"))
    os.symlink("../sizes/f0065536", os.path.join(root, "links", "rel"))
    os.symlink("/" + "x" * 200 + "/target", os.path.join(root, "link-long"))
    os.makedirs(os.path.join(root, "empty-dir"))
    # Modes.
    write(os.path.join(root, "modes", "private"), b"secret\n", base + 500)
    os.chmod(os.path.join(root, "modes", "private"), 0o600)
    write(os.path.join(root, "modes", "script.sh"), b"#!/bin/sh\n",
          base + 501)
    os.chmod(os.path.join(root, "modes", "script.sh"), 0o755)
    # Many small files in one directory (a hashed directory).
    for i in range(600):
        write(os.path.join(root, "many", "file-%04d" % i),
              ("%d\n" % i).encode(), base + 600)
    if version >= 2:
        write(os.path.join(root, "text.txt"), b"changed in version 2\n",
              base + 1000)
        write(os.path.join(root, "new", "added.bin"), rnd.randbytes(300000),
              base + 1001)
        os.remove(os.path.join(root, "sizes", "f0004097"))
        os.remove(os.path.join(root, "link-short"))
        os.symlink("new/added.bin", os.path.join(root, "link-short"))
    # Directory times last: writing inside a directory changes its mtime.
    for dirpath, dirnames, _ in os.walk(root, topdown=False):
        for d in dirnames:
            os.utime(os.path.join(dirpath, d), (base + 7, base + 7))


def manifest(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                kind, h = "l", os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                kind, h = "d", "-"
            else:
                kind = "f"
                with open(p, "rb") as f:
                    h = hashlib.sha256(f.read()).hexdigest()
            size = st.st_size if kind == "f" else 0
            mtime = int(st.st_mtime) if kind != "l" else 0
            out.append("%s %s %o %d %d %s" % (rel, kind,
                                              stat.S_IMODE(st.st_mode),
                                              size, mtime, h))
    return "\n".join(sorted(out)) + "\n"


def seekmap(path):
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    off, out = 0, []
    while off < size:
        try:
            d = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:
            break
        h = os.lseek(fd, d, os.SEEK_HOLE)
        out.append("data %d %d" % (d, h - d))
        off = h
    os.close(fd)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        make(sys.argv[2], int(sys.argv[3]))
    elif cmd == "manifest":
        sys.stdout.write(manifest(sys.argv[2]))
    elif cmd == "seekmap":
        sys.stdout.write(seekmap(sys.argv[2]))
    else:
        sys.exit("unknown command " + cmd)
