#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
#
# snap-race.py - the two halves of snap-race.sh.
#
# "drive": one NBD client writes W_0, W_1, ... in order, one at a time (W_i:
# 4 KiB at i * STRIDE, its index in the first 8 bytes), and between two
# writes now and then changes the image: a shrink (vbk image resize), a
# grow back, or one 2 MiB write P_k over the tail that the shrink cuts.
# At most one change happens between two writes, and each is logged with
# the index of the write that follows it.  A snapshot holds a prefix
# W_0..W_{n-1} of the writes (crash consistency: each write is issued
# only after the one before was answered), so the state of the image it
# may show is the state after W_{n-1}, or that with the one change that
# came between W_{n-1} and W_n.
#
# "check": every snapshot left (and the live image) must hold exactly a
# prefix of the writes, nothing else, a size and tail allowed at that
# prefix; and vbk diff between every pair of them (oldest first) must
# cover every 4 KiB block whose bytes differ between the two.

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

M = 1 << 20
BLOCK = 4096
STRIDE = 12 * 1024
SIZE = 32 * M            # the image when grown
SHRUNK = 30 * M          # ... when shrunk: the tail [SHRUNK, SIZE) goes
EVERY = 40               # writes between two changes


def w_data(i):
    head = i.to_bytes(8, "little") + b"vbk-race"
    return head + bytes([(i % 251) + 1]) * (BLOCK - len(head))


def p_data(k):
    return bytes([0x80 | (k % 127)]) * (SIZE - SHRUNK)


def vbk(args, a, check=True):
    p = subprocess.run([a.vbk, "--store", a.store] + args,
                       capture_output=True, text=True)
    if check and p.returncode != 0:
        sys.exit("vbk %s failed (%d): %s" % (" ".join(args), p.returncode,
                                             p.stderr.strip()))
    return p.stdout


def drive(a):
    import nbd
    h = nbd.NBD()
    h.connect_uri(a.uri)
    assert h.get_size() == SIZE, h.get_size()
    events = []           # [index of the next write, kind, k]
    h.pwrite(p_data(0), SHRUNK)
    k, step = 0, 0
    i = 0
    while i < a.blocks and (i < a.min_blocks or not os.path.exists(a.stop)):
        if i and i % EVERY == 0:
            kind = ("shrink", "grow", "tail")[step % 3]
            if kind == "shrink":
                vbk(["image", "resize", a.image, "--size", str(SHRUNK)], a)
            elif kind == "grow":
                vbk(["image", "resize", a.image, "--size", str(SIZE)], a)
            else:
                k += 1
                h.pwrite(p_data(k), SHRUNK)
            events.append([i, kind, k])
            step += 1
        h.pwrite(w_data(i), i * STRIDE)
        i += 1
        if i == 10 and a.ready:
            open(a.ready, "w").close()
    h.flush()
    # Out of room: stay connected (the daemon keeps the lease) until the
    # snapshots are done.
    while a.stop and not os.path.exists(a.stop):
        time.sleep(0.05)
    h.shutdown()
    json.dump({"writes": i, "events": events}, open(a.log, "w"))
    print("drive: %d writes, %d changes of size or tail" % (i, len(events)))


def states(events, n):
    """The (size, tail) a snapshot holding W_0..W_{n-1} may show."""
    size, tail = SIZE, 0          # tail: k of P_k, or None (zeros)
    out = []
    for idx, kind, k in events:
        if idx > n:
            break
        if idx == n:
            out.append((size, tail))
        if kind == "shrink":
            size, tail = SHRUNK, None
        elif kind == "grow":
            size, tail = SIZE, None
        else:
            tail = k
    out.append((size, tail))
    return out


def check(a):
    log = json.load(open(a.log))
    total, events = log["writes"], log["events"]
    snaps = json.loads(vbk(["snap", "ls", a.image, "--json"], a))
    snaps.sort(key=lambda s: s["id"])
    views = []                    # (name, size, block hashes)
    zero = hashlib.sha1(bytes(BLOCK)).digest()
    errors = []
    for s in snaps + [None]:
        name = s["name"] if s else None
        ref = "%s@%s" % (a.image, name) if s else a.image
        path = os.path.join(a.dir, "view.raw")
        vbk(["image", "export", ref, path], a)
        data = open(path, "rb").read()
        os.unlink(path)
        size = len(data)
        # The prefix of writes it holds.
        n = 0
        while n < total and data[n * STRIDE:n * STRIDE + BLOCK] == w_data(n):
            n += 1
        label = name or "(live)"
        for j in range(n, total):
            if data[j * STRIDE:j * STRIDE + BLOCK] != bytes(BLOCK):
                errors.append("%s holds W_0..W_%d but also W_%d (or junk there)"
                              % (label, n - 1, j))
                break
        if s is None and n != total:
            errors.append("the live image lacks W_%d" % n)
        # Its size and tail.
        if size > SHRUNK:
            t = data[SHRUNK:SIZE]
            if t == bytes(len(t)):
                tail = None
            else:
                tk = [k for k in range(0, len(events) + 1) if t == p_data(k)]
                tail = tk[0] if tk else "junk"
        else:
            tail = None
        allowed = states(events, n)
        if (size, tail) not in allowed:
            errors.append("%s (writes W_0..W_%d) has size %d and tail %s; "
                          "allowed at that point: %s"
                          % (label, n - 1, size, tail, allowed))
        # Nothing anywhere else.
        hashes = [hashlib.sha1(data[o:o + BLOCK]).digest()
                  for o in range(0, size, BLOCK)]
        written = set()
        for j in range(n):
            written.add(j * STRIDE // BLOCK)
            written.add((j * STRIDE + BLOCK - 1) // BLOCK)
        for b in range(min(size, SHRUNK) // BLOCK):
            if b not in written and hashes[b] != zero:
                errors.append("%s: block %d holds data nobody wrote"
                              % (label, b))
                break
        views.append((label, name, size, hashes))
        print("%-8s %2d writes, size %d MiB, tail %s" % (label, n, size >> 20,
                                                         tail))
    # vbk diff covers every block that differs, for every pair.
    pairs = 0
    for x in range(len(views)):
        for y in range(x + 1, len(views)):
            la, na, sa, ha = views[x]
            lb, nb, sb, hb = views[y]
            args = ["diff", a.image, "--from", na, "--json"]
            if nb is not None:
                args += ["--to", nb]
            d = json.loads(vbk(args, a))
            cover = set()
            for e in d["extents"]:
                for b in range(e["offset"] // BLOCK,
                               (e["offset"] + e["length"] + BLOCK - 1) // BLOCK):
                    cover.add(b)
            missed = [b for b in range(sb // BLOCK)
                      if (ha[b] if b < len(ha) else zero) != hb[b]
                      and b not in cover]
            if missed:
                errors.append("diff %s..%s misses %d changed blocks (first at "
                              "%d KiB)" % (la, lb, len(missed),
                                           missed[0] * BLOCK >> 10))
            pairs += 1
    print("check: %d snapshots and the live image, %d diffs" %
          (len(snaps), pairs))
    for e in errors:
        print("ERROR: " + e)
    sys.exit(1 if errors else 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["drive", "check"])
    ap.add_argument("--uri")
    ap.add_argument("--vbk", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--image", default="disk")
    ap.add_argument("--log", required=True)
    ap.add_argument("--stop")
    ap.add_argument("--ready")
    ap.add_argument("--dir")
    ap.add_argument("--blocks", type=int, default=SHRUNK // STRIDE - 1)
    ap.add_argument("--min-blocks", type=int, default=200)
    a = ap.parse_args()
    drive(a) if a.mode == "drive" else check(a)


if __name__ == "__main__":
    main()
