#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""snap-consistency.py - snapshots taken during a continuous write stream
are crash-consistent; driven by snap-consistency.sh.

W writer threads, each with its own NBD connection to the live export,
write 4 KiB blocks to their own region, cycling through it: write number
SEQ (1, 2, ...) of writer ID goes to block (SEQ - 1) % BLOCKS of the
region and holds (magic, ID, SEQ) repeated over the whole block.  Each
writer has one write in flight at a time and logs when each write was
issued and acknowledged.  Meanwhile the main thread runs
`vbk snap create IMAGE@cN -v` several times, logging when it started
the command (the request) and when the command returned (the reply).

Then each snapshot is read (through vbk-blockd's IMAGE@SNAP export, or
else with `vbk image export IMAGE@SNAP FILE`) and checked, per writer:
  - every block is wholly one write (same record all over) or zeros;
  - the writer's blocks are exactly the result of its writes 1..C for
    one cut C (a prefix of its stream: a crash-consistent image);
  - C >= every write acknowledged before the request;
  - C <= every write issued before the reply (none issued after it).
The I/O pause: for each snapshot, the longest gap between two
consecutive acknowledgements of one writer that overlaps the snapshot's
[request, reply] window (the largest over writers); and the pause the
holder reports (vbk snap create -v).  Prints p50/p99 of both and, for
comparison, the median gap outside the snapshots.  Exit 0 if every check
passed, 1 otherwise.
"""

import argparse
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time

import nbd

MAGIC = 0x5642_4B31          # "VBK1"
REC = struct.Struct("<IIQ")  # magic, writer id, seq: 16 bytes
BLOCK = 4096


def now_ns():
    return time.monotonic_ns()


class Writer(threading.Thread):
    def __init__(self, wid, uri, base, blocks, stop):
        super().__init__(name="writer-%d" % wid, daemon=True)
        self.wid, self.base, self.blocks, self.stop = wid, base, blocks, stop
        self.h = nbd.NBD()
        self.h.connect_uri(uri)
        self.log = []            # (issued_ns, acked_ns), index = seq - 1
        self.error = None

    def run(self):
        seq = 0
        try:
            while not self.stop.is_set():
                seq += 1
                blk = (seq - 1) % self.blocks
                buf = REC.pack(MAGIC, self.wid, seq) * (BLOCK // REC.size)
                t0 = now_ns()
                self.h.pwrite(buf, self.base + blk * BLOCK)
                self.log.append((t0, now_ns()))
        except Exception as e:     # reported by the main thread
            self.error = "writer %d, write %d: %s" % (self.wid, seq, e)
        finally:
            try:
                self.h.shutdown()
            except Exception:
                pass


def take_snapshot(args, name):
    cmd = [args.vbk, "--store", args.store, "snap", "create",
           "%s@%s" % (args.image, name), "-v"]
    t_req = now_ns()
    p = subprocess.run(cmd, capture_output=True, text=True)
    t_rep = now_ns()
    if p.returncode != 0:
        sys.exit("snap create %s failed (%d): %s" % (name, p.returncode,
                                                      p.stderr.strip()))
    m = re.search(r"writes paused ([0-9.]+) ms by the holder", p.stderr)
    return {"name": name, "req": t_req, "rep": t_rep,
            "holder_pause_ms": float(m.group(1)) if m else None}


def read_snapshot(args, name, length):
    """The first LENGTH bytes of snapshot NAME, and how they were read."""
    if args.socket:
        uri = "nbd+unix:///%s@%s?socket=%s" % (args.image, name, args.socket)
        h = nbd.NBD()
        try:
            h.connect_uri(uri)
        except nbd.Error:
            h = None
        if h is not None:
            data = bytearray()
            while len(data) < length:
                n = min(32 << 20, length - len(data))
                data += h.pread(n, len(data))
            h.shutdown()
            return bytes(data), "blockd IMAGE@SNAP export"
    with tempfile.TemporaryDirectory() as d:
        f = os.path.join(d, "snap.raw")
        p = subprocess.run([args.vbk, "--store", args.store, "image",
                            "export", "%s@%s" % (args.image, name), f],
                           capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit("vbk image export %s@%s: %s" % (args.image, name,
                                                     p.stderr.strip()))
        with open(f, "rb") as fh:
            return fh.read(length), "vbk image export IMAGE@SNAP"


def last_index_before(times, t):
    """Number of entries of the ascending list TIMES that are < T."""
    lo, hi = 0, len(times)
    while lo < hi:
        mid = (lo + hi) // 2
        if times[mid] < t:
            lo = mid + 1
        else:
            hi = mid
    return lo


def check_writer(w, snap, data, errors):
    """Checks writer W's region in snapshot SNAP; returns its cut."""
    region = data[w.base:w.base + w.blocks * BLOCK]
    vals = []
    for blk in range(w.blocks):
        b = region[blk * BLOCK:(blk + 1) * BLOCK]
        if b.count(0) == BLOCK:
            vals.append(0)
            continue
        rec = b[:REC.size]
        if rec * (BLOCK // REC.size) != b:
            errors.append("%s: writer %d block %d is torn (not one write)"
                          % (snap["name"], w.wid, blk))
            vals.append(-1)
            continue
        magic, wid, seq = REC.unpack(rec)
        if magic != MAGIC or wid != w.wid or seq < 1 \
                or (seq - 1) % w.blocks != blk or seq > len(w.log):
            errors.append("%s: writer %d block %d holds a foreign record "
                          "(magic %#x writer %d seq %d)"
                          % (snap["name"], w.wid, blk, magic, wid, seq))
            vals.append(-1)
            continue
        vals.append(seq)
    cut = max(vals)
    # A prefix: block b holds the last write <= cut that went to it.
    for blk, v in enumerate(vals):
        want = 0
        if cut >= blk + 1:
            want = blk + 1 + (cut - (blk + 1)) // w.blocks * w.blocks
        if v != want and v != -1:
            errors.append("%s: writer %d block %d holds write %d, but the "
                          "cut is %d (expected %d): not a prefix"
                          % (snap["name"], w.wid, blk, v, cut, want))
    acks = [a for _, a in w.log]
    issues = [i for i, _ in w.log]
    acked_before = last_index_before(acks, snap["req"])
    issued_before = last_index_before(issues, snap["rep"] + 1)
    if cut < acked_before:
        errors.append("%s: writer %d: write %d was acknowledged before the "
                      "request but the snapshot ends at %d"
                      % (snap["name"], w.wid, acked_before, cut))
    if cut > issued_before:
        errors.append("%s: writer %d: the snapshot holds write %d, issued "
                      "after the reply (last issued before: %d)"
                      % (snap["name"], w.wid, cut, issued_before))
    return cut, acked_before, issued_before


def writer_pause_ms(writers, snap):
    """Longest gap between consecutive acks of one writer that overlaps
    the snapshot's window."""
    worst = 0
    for w in writers:
        acks = [a for _, a in w.log]
        i = last_index_before(acks, snap["req"])
        # From the last ack before the request to the first after the reply.
        j = min(last_index_before(acks, snap["rep"]) + 1, len(acks) - 1)
        for k in range(max(i, 1), j + 1):
            worst = max(worst, acks[k] - acks[k - 1])
    return worst / 1e6


def pct(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    k = max(0, min(len(v) - 1, int(round(p / 100 * len(v) + 0.5)) - 1))
    return v[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--uri", required=True, help="NBD URI of the live image")
    ap.add_argument("--socket", help="blockd's socket (for IMAGE@SNAP)")
    ap.add_argument("--vbk", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--blocks", type=int, default=1024,
                    help="4 KiB blocks per writer's region")
    ap.add_argument("--snapshots", type=int, default=20)
    ap.add_argument("--interval", type=float, default=0.25)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    stop = threading.Event()
    writers = [Writer(i, args.uri, i * args.blocks * BLOCK, args.blocks,
                      stop) for i in range(args.writers)]
    for w in writers:
        w.start()
    snaps = []
    try:
        time.sleep(args.warmup)
        for k in range(args.snapshots):
            snaps.append(take_snapshot(args, "c%d" % k))
            time.sleep(args.interval)
    finally:
        stop.set()
        for w in writers:
            w.join()
    errors = [w.error for w in writers if w.error]
    if errors:
        sys.exit("\n".join(errors))

    length = args.writers * args.blocks * BLOCK
    how = None
    results = []
    for s in snaps:
        data, how = read_snapshot(args, s["name"], length)
        cuts = [check_writer(w, s, data, errors) for w in writers]
        s["writer_pause_ms"] = writer_pause_ms(writers, s)
        s["cuts"] = cuts
        results.append(s)

    # Gaps between acknowledgements away from any snapshot.
    normal = []
    for w in writers:
        acks = [a for _, a in w.log]
        for k in range(1, len(acks)):
            if not any(acks[k - 1] <= s["rep"] and acks[k] >= s["req"]
                       for s in snaps):
                normal.append((acks[k] - acks[k - 1]) / 1e6)

    wp = [s["writer_pause_ms"] for s in results]
    hp = [s["holder_pause_ms"] for s in results
          if s["holder_pause_ms"] is not None]
    total = sum(len(w.log) for w in writers)
    summary = {
        "writers": args.writers, "writes": total,
        "snapshots": len(results), "read_through": how,
        "errors": errors,
        "writer_pause_ms": {"p50": pct(wp, 50), "p99": pct(wp, 99),
                            "max": max(wp)},
        "holder_pause_ms": {"p50": pct(hp, 50), "p99": pct(hp, 99),
                            "max": max(hp) if hp else None,
                            "reported": len(hp)},
        "normal_ack_gap_ms": {"p50": pct(normal, 50), "p99": pct(normal, 99)},
        "snapshot_cmd_ms": {"p50": pct([(s["rep"] - s["req"]) / 1e6
                                        for s in results], 50)},
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "snapshots": [
                {k: s[k] for k in ("name", "holder_pause_ms",
                                   "writer_pause_ms", "cuts")}
                for s in results]}, f, indent=1)

    print("snap-consistency: %d writers, %d writes, %d snapshots read "
          "through %s" % (args.writers, total, len(results), how))
    print("I/O pause seen by the writers: p50 %.2f ms, p99 %.2f ms, "
          "max %.2f ms (ack gap without snapshot: p50 %.3f ms, p99 %.3f ms)"
          % (summary["writer_pause_ms"]["p50"],
             summary["writer_pause_ms"]["p99"], max(wp),
             summary["normal_ack_gap_ms"]["p50"],
             summary["normal_ack_gap_ms"]["p99"]))
    if hp:
        print("pause reported by the holder: p50 %.2f ms, p99 %.2f ms "
              "(%d of %d snapshots)" % (pct(hp, 50), pct(hp, 99), len(hp),
                                        len(results)))
    print("vbk snap create: p50 %.1f ms from request to reply"
          % summary["snapshot_cmd_ms"]["p50"])
    if errors:
        for e in errors[:50]:
            print("FAIL: " + e, file=sys.stderr)
        print("%d consistency errors" % len(errors), file=sys.stderr)
        return 1
    print("every snapshot: blocks whole, a prefix of each writer, all "
          "writes acknowledged before the request, none issued after the "
          "reply")
    return 0


if __name__ == "__main__":
    sys.exit(main())
