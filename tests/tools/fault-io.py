#!/usr/bin/python3
# SPDX-License-Identifier: MIT
#
# fault-io.py - a small write/flush/read/zero workload over NBD
# (python3-libnbd) for a server whose store injects errors, and the
# check of its results through a server on a clean store
# (tests/e2e/fault-store.sh).
#
# DESIGN: the workload is sequential (one command at a time), so the
# effect each command may have had is known exactly.  Per 4 KiB block
# the runner keeps the set of contents the block may hold: a successful
# write or zero leaves exactly its data; a failed one adds its data to
# what was possible (a failed write may have landed in part, sector by
# sector).  A successful FLUSH (or FUA write) makes those sets durable.
# During the run, a successful READ must return, sector by sector, a
# possible content, and a failed command must fail with an NBD error
# from the expected set (the connection must stay up, and nothing may
# hang).  Afterwards, through a clean server, each sector must hold
# what was durable or something written after that, and a changed-extent
# list (vbk diff --json from a snapshot taken before the run) must cover
# every block that holds data.  A snapshot taken in the middle (through
# the faulty server, the lease holder) may fail with a message; if it
# exists it must hold, sector by sector, what was possible when it was
# asked for.  Each block's data names the command that wrote it (block
# number and command index in every 16-byte row).
#
# Usage:
#   fault-io.py run URI TRIGGER RECORD --expect ERRNO[,ERRNO...] [--pause S]
#       [--snap-cmd CMD]
#       (creates the file TRIGGER once connected: faults start there; CMD
#       takes a snapshot in the middle of the workload)
#   fault-io.py verify URI RECORD [--diff FILE] [--snap-uri URI
#       [--snap-exists]]
# Exit status: 0 good, 1 a check failed, 2 usage error.

import argparse
import errno
import json
import shlex
import struct
import subprocess
import sys
import time

import nbd

BLOCK = 4096
SECTOR = 512
SPB = BLOCK // SECTOR
NBLOCKS = 24
STRIDE = 9          # blocks are STRIDE * 4 KiB apart: several objects
TIMEOUT_S = 30
ZERO = "zero"


def data_of(block, cmd):
    return struct.pack(">IIQ", 0x56424b46, block, cmd) * (BLOCK // 16)


def sectors(buf):
    return [bytes(buf[i * SECTOR:(i + 1) * SECTOR]) for i in range(SPB)]


def name_sector(sec, block):
    """What wrote a sector: ZERO, a command index, or None (garbage)."""
    if sec == bytes(SECTOR):
        return ZERO
    tag, b, cmd = struct.unpack(">IIQ", sec[:16])
    if tag != 0x56424b46 or b != block or sec != sec[:16] * (SECTOR // 16):
        return None
    return cmd


def workload():
    """The commands: (kind, block, fua)."""
    ops = []
    for b in range(8):
        ops.append(("write", b, False))
    ops.append(("flush", None, False))
    ops += [("read", b, False) for b in range(8)]
    for b in range(8, 16):
        ops.append(("write", b, b == 11))
    ops.append(("zero", 2, False))
    ops.append(("write", 3, False))
    ops.append(("flush", None, False))
    ops.append(("snap", None, False))
    ops += [("read", b, False) for b in range(NBLOCKS)]
    for b in range(16, 20):
        ops.append(("write", b, False))
    ops.append(("zero", 9, False))
    ops.append(("flush", None, False))
    ops += [("read", b, False) for b in range(NBLOCKS)]
    ops.append(("flush", None, False))
    return ops


class Runner:
    def __init__(self, uri):
        self.h = nbd.NBD()
        self.h.connect_uri(uri)

    def do(self, kind, off, buf, flags):
        res = []

        def cb(err):
            res.append(err.value)
            return 1

        h = self.h
        if kind == "write":
            h.aio_pwrite(buf, off, completion=cb, flags=flags)
        elif kind == "read":
            h.aio_pread(buf, off, completion=cb)
        elif kind == "zero":
            h.aio_zero(BLOCK, off, completion=cb)
        else:
            h.aio_flush(completion=cb)
        deadline = time.monotonic() + TIMEOUT_S
        while not res:
            if time.monotonic() > deadline:
                return "hung"
            h.poll(1000)
        return res[0]


def cmd_run(a):
    expect = {getattr(errno, e) for e in a.expect.split(",")}
    r = Runner(a.uri)
    open(a.trigger, "w").close()
    possible = [{ZERO} for _ in range(NBLOCKS)]   # per block: contents
    durable = [{ZERO} for _ in range(NBLOCKS)]
    since = [set() for _ in range(NBLOCKS)]       # written after durable
    log, problems = [], []
    snap = None
    for i, (kind, b, fua) in enumerate(workload()):
        if kind == "snap":
            if not a.snap_cmd:
                continue
            p = subprocess.run(shlex.split(a.snap_cmd), capture_output=True,
                               text=True, timeout=120)
            snap = {"ok": p.returncode == 0, "err": p.stderr.strip(),
                    "possible": [sorted(map(str, x)) for x in possible]}
            log.append([i, kind, None, 0 if p.returncode == 0 else "failed"])
            if p.returncode != 0 and not p.stderr.strip():
                problems.append("command %d: the snapshot failed without a "
                                "message" % i)
            continue
        off = b * STRIDE * BLOCK if b is not None else 0
        if kind == "write":
            buf = data_of(b, i)
        elif kind == "read":
            buf = nbd.Buffer(BLOCK)
        else:
            buf = None
        try:
            err = r.do(kind, off, buf, nbd.CMD_FLAG_FUA if fua else 0)
        except nbd.Error as e:
            problems.append("command %d (%s): the connection failed: %s"
                            % (i, kind, e))
            break
        log.append([i, kind, b, err])
        if err == "hung":
            problems.append("command %d (%s block %s): no reply in %d s"
                            % (i, kind, b, TIMEOUT_S))
            break
        if err and err not in expect:
            problems.append("command %d (%s block %s) failed with %s, "
                            "expected %s" % (i, kind, b, errno.errorcode.get(
                                err, err), a.expect))
        if kind in ("write", "zero"):
            val = i if kind == "write" else ZERO
            since[b].add(val)
            if err == 0:
                possible[b] = {val}
                if fua:
                    durable[b] = {val}
                    since[b] = set()
            else:
                possible[b].add(val)
        if kind == "flush" and a.pause:
            time.sleep(a.pause)
        if kind == "flush" and err == 0:
            for k in range(NBLOCKS):
                durable[k] = set(possible[k])
                since[k] = set()
        elif kind == "read" and err == 0:
            for s, sec in enumerate(sectors(buf.to_bytearray())):
                who = name_sector(sec, b)
                if who not in possible[b]:
                    problems.append(
                        "command %d: a successful read of block %d sector %d "
                        "returned %s; possible: %s"
                        % (i, b, s, "garbage" if who is None else who,
                           sorted(map(str, possible[b]))))
    try:
        r.h.shutdown()
    except nbd.Error:
        pass
    fails = [x for x in log if x[3]]
    rec = {
        "log": log,
        "problems": problems,
        "durable": [sorted(map(str, d)) for d in durable],
        "since": [sorted(map(str, s)) for s in since],
        "possible": [sorted(map(str, p)) for p in possible],
        "snap": snap,
    }
    json.dump(rec, open(a.record, "w"))
    print("  %d commands, %d failed (%s)%s"
          % (len(log), len(fails),
             ", ".join("%s:%s" % (x[1], errno.errorcode.get(x[3], x[3])
                                  if isinstance(x[3], int) else x[3])
                       for x in fails[:6]) + (" ..." if len(fails) > 6 else ""),
             "".join("\n  PROBLEM: " + p for p in problems)))
    return 1 if problems else 0


def cmd_verify(a):
    rec = json.load(open(a.record))
    h = nbd.NBD()
    h.connect_uri(a.uri)
    problems, not_there = [], 0
    holds = []
    for b in range(NBLOCKS):
        buf = h.pread(BLOCK, b * STRIDE * BLOCK)
        ok = set(rec["durable"][b]) | set(rec["since"][b])
        for s, sec in enumerate(sectors(buf)):
            who = name_sector(sec, b)
            if who is None:
                problems.append("block %d sector %d: garbage" % (b, s))
                continue
            if who != ZERO:
                holds.append(b)
            if str(who) not in ok:
                problems.append("block %d sector %d holds %s; durable: %s, "
                                "written since: %s" % (b, s, who,
                                                       rec["durable"][b],
                                                       rec["since"][b]))
            elif str(who) not in rec["possible"][b]:
                not_there += 1
    h.shutdown()
    snap = rec.get("snap")
    if a.snap_uri and snap and (snap["ok"] or a.snap_exists):
        # Crash-consistent: the snapshot holds every write acknowledged
        # before it was requested, and nothing later.
        h = nbd.NBD()
        h.connect_uri(a.snap_uri)
        for b in range(NBLOCKS):
            buf = h.pread(BLOCK, b * STRIDE * BLOCK)
            for s, sec in enumerate(sectors(buf)):
                who = name_sector(sec, b)
                if who is None or str(who) not in snap["possible"][b]:
                    problems.append("snapshot%s: block %d sector %d holds %s;"
                                    " possible: %s" % (
                                        "" if snap["ok"] else
                                        " (reported failed, but exists)",
                                        b, s, who, snap["possible"][b]))
        h.shutdown()
    if a.diff:
        d = json.load(open(a.diff))
        ext = [(e["offset"], e["offset"] + e["length"]) for e in d["extents"]]
        acked = {x[2] for x in rec["log"] if x[1] == "write" and x[3] == 0}
        for b in sorted(set(holds) | acked):
            off = b * STRIDE * BLOCK
            if not any(lo <= off and off + BLOCK <= hi for lo, hi in ext):
                problems.append("block %d (offset %d) holds data or an "
                                "acknowledged write, but the diff misses it"
                                % (b, off))
    for p in problems:
        print("  LOST/WRONG: " + p)
    if not_there:
        print("  (%d sectors hold an earlier durable state, not a later "
              "unflushed write)" % not_there)
    return 1 if problems else 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("uri")
    r.add_argument("trigger")
    r.add_argument("record")
    r.add_argument("--expect", required=True)
    r.add_argument("--pause", type=float, default=0,
                   help="seconds to wait after each FLUSH")
    r.add_argument("--snap-cmd", help="a command that takes a snapshot, "
                   "run in the middle of the workload")
    v = sub.add_parser("verify")
    v.add_argument("uri")
    v.add_argument("record")
    v.add_argument("--diff")
    v.add_argument("--snap-uri", help="the snapshot's export, to check it")
    v.add_argument("--snap-exists", action="store_true",
                   help="the snapshot exists even if its command failed")
    a = p.parse_args()
    return cmd_run(a) if a.cmd == "run" else cmd_verify(a)


if __name__ == "__main__":
    sys.exit(main())
