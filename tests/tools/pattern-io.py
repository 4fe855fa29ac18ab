#!/usr/bin/python3
# SPDX-License-Identifier: MIT
#
# pattern-io.py - a checksummed-pattern writer and verifier over NBD
# (python3-libnbd), for the fault tests (tests/e2e/fault-*.sh).
#
# DESIGN: the disk's first BLOCKS blocks of 4 KiB form the test area.
# Every 512-byte sector a write puts down names itself: a 32-byte header
# (magic, round, block, sequence number, sector) repeated 16 times, so a
# sector read back says which write it came from, and a torn, misplaced
# or garbled sector is seen as such.  The writer keeps QD writes in
# flight (never two on one block, so the writes to a block are ordered),
# a FLUSH every FLUSH_EVERY writes and FUA on a few, and records which
# writes were acknowledged and which are durable: acknowledged before an
# acknowledged FLUSH was sent, or acknowledged with FUA.  It runs until
# the server goes away or a command fails (or --max-writes, or --until:
# then a last FLUSH makes every write durable) and writes its record.
# The verifier reads the test area through a (restarted) server and
# checks each sector against that record: after the last durable write
# to a block, only that write or a later one to the block may appear;
# a block with no durable write may also still hold what it held before
# the round (the state file, which the verifier rewrites).  It can also
# check that a changed-extent list (vbk diff --json) covers every
# acknowledged write and every block that changed.
#
# Usage:
#   pattern-io.py write URI ROUND RECORD [--blocks N] [--qd N]
#       [--flush-every N] [--max-writes N] [--ready FILE] [--seed N]
#       [--until FILE] [--progress FILE]
#   pattern-io.py verify URI RECORD STATE [--blocks N] [--diff FILE]
# Exit status: 0 good, 1 verification failed, 2 usage or I/O error.

import argparse
import json
import os
import random
import struct
import sys
import time

import nbd

MAGIC = b"VBKFAULT"
HDR = struct.Struct(">8sIIQII")
BLOCK = 4096
SECTOR = 512
SPB = BLOCK // SECTOR


def sector_bytes(rnd, block, seq, sector):
    return HDR.pack(MAGIC, rnd, block, seq, sector, 0) * (SECTOR // HDR.size)


def block_bytes(rnd, block, seq):
    return b"".join(sector_bytes(rnd, block, seq, s) for s in range(SPB))


ZERO_SECTOR = bytes(SECTOR)


def identify(data, block, sector):
    """The write a sector came from: None (zeros), (round, seq), or a
    string saying what is wrong with it."""
    if data == ZERO_SECTOR:
        return None
    if data[:HDR.size] * (SECTOR // HDR.size) != data:
        return "garbled"
    magic, rnd, b, seq, s, _ = HDR.unpack(data[:HDR.size])
    if magic != MAGIC:
        return "garbled"
    if b != block or s != sector:
        return "misplaced (block %d sector %d)" % (b, s)
    return (rnd, seq)


def cmd_write(a):
    h = nbd.NBD()
    h.connect_uri(a.uri)
    rng = random.Random(a.seed)
    writes = {}           # seq -> [block, fua, state]: 0 sent, 1 acked, -1 failed
    acked = []            # seqs in the order they were acknowledged
    durable_upto = [0]    # acked[:n] is covered by an acknowledged flush
    fua_durable = []
    busy = set()          # blocks with a write in flight
    bufs = {}
    flushes = [0, 0]      # sent, acknowledged
    failed = [None]

    def on_write(seq):
        def cb(err):
            w = writes[seq]
            busy.discard(w[0])
            del bufs[seq]
            if err.value == 0:
                w[2] = 1
                acked.append(seq)
                if w[1]:
                    fua_durable.append(seq)
            else:
                w[2] = -1
                failed[0] = failed[0] or "write error %d" % err.value
            return 1
        return cb

    def on_flush(n):
        def cb(err):
            if err.value == 0:
                durable_upto[0] = max(durable_upto[0], n)
                flushes[1] += 1
                if a.ready and flushes[1] == 1:
                    open(a.ready, "w").close()
            else:
                failed[0] = failed[0] or "flush error %d" % err.value
            return 1
        return cb

    def note_progress():
        if a.progress:
            with open(a.progress + ".tmp", "w") as f:
                f.write("%d %d %d\n" % (len(acked), sum(
                    1 for w in writes.values() if w[2] == -1),
                    h.aio_in_flight()))
            os.replace(a.progress + ".tmp", a.progress)

    seq = 0
    end = "max-writes"
    next_note = 0.0
    try:
        while a.max_writes == 0 or seq < a.max_writes:
            if failed[0]:
                end = failed[0]
                break
            if a.progress and time.monotonic() >= next_note:
                note_progress()
                next_note = time.monotonic() + 0.1
            if a.until and os.path.exists(a.until):
                end = "stopped"
                break
            if h.aio_in_flight() >= a.qd:
                h.poll(100)
                continue
            block = rng.randrange(a.blocks)
            while block in busy:
                block = rng.randrange(a.blocks)
            seq += 1
            fua = rng.randrange(29) == 0
            writes[seq] = [block, fua, 0]
            busy.add(block)
            bufs[seq] = block_bytes(a.round, block, seq)
            h.aio_pwrite(bufs[seq], block * BLOCK, completion=on_write(seq),
                         flags=nbd.CMD_FLAG_FUA if fua else 0)
            if seq % a.flush_every == 0:
                flushes[0] += 1
                h.aio_flush(completion=on_flush(len(acked)))
        if end in ("max-writes", "stopped"):
            while h.aio_in_flight() > 0:
                h.poll(-1)
            if failed[0]:
                end = failed[0]
            else:
                h.flush()
                durable_upto[0] = len(acked)
                h.shutdown()
    except nbd.Error as e:
        end = "connection: %s" % e
    note_progress()
    rec = {
        "round": a.round,
        "end": end,
        "writes": {str(s): w for s, w in writes.items()},
        "durable": sorted(set(acked[:durable_upto[0]]) | set(fua_durable)),
        "flushes_sent": flushes[0],
        "flushes_acked": flushes[1],
        "failed_writes": sum(1 for w in writes.values() if w[2] == -1),
    }
    tmp = a.record + ".tmp"
    with open(tmp, "w") as f:
        json.dump(rec, f)
    os.replace(tmp, a.record)
    print("round %d: %d writes sent, %d acknowledged, %d durable, "
          "%d/%d flushes acknowledged; ended by %s"
          % (a.round, len(writes), len(acked), len(rec["durable"]),
             flushes[1], flushes[0], end))
    return 0


def covered_blocks(diff_file, blocks):
    d = json.load(open(diff_file))
    cov = bytearray(blocks)
    for e in d["extents"]:
        lo, hi = e["offset"], e["offset"] + e["length"]
        first = (lo + BLOCK - 1) // BLOCK
        for b in range(first, min(hi // BLOCK, blocks)):
            cov[b] = 1
    return cov


def cmd_verify(a):
    rec = json.load(open(a.record))
    rnd = rec["round"]
    if os.path.exists(a.state):
        state = json.load(open(a.state))
    else:
        state = {"blocks": [[None] * SPB for _ in range(a.blocks)]}
    base = [[tuple(x) if x else None for x in blk] for blk in state["blocks"]]
    per_block = {}
    for s, (block, fua, st) in rec["writes"].items():
        per_block.setdefault(block, []).append(int(s))
    durable = set(rec["durable"])

    h = nbd.NBD()
    h.connect_uri(a.uri)
    data = bytearray()
    chunk = 1 << 22
    for off in range(0, a.blocks * BLOCK, chunk):
        data += h.pread(min(chunk, a.blocks * BLOCK - off), off)
    h.shutdown()

    lost, bad, unexpected = [], [], []
    observed = []
    changed = bytearray(a.blocks)
    for b in range(a.blocks):
        seqs = sorted(per_block.get(b, []))
        last_durable = max((s for s in seqs if s in durable), default=0)
        if last_durable:
            allowed = {(rnd, s) for s in seqs if s >= last_durable}
        else:
            allowed = {(rnd, s) for s in seqs}
        row = []
        for s in range(SPB):
            sec = bytes(data[b * BLOCK + s * SECTOR:b * BLOCK + (s + 1) * SECTOR])
            who = identify(sec, b, s)
            row.append(who)
            if who != base[b][s]:
                changed[b] = 1
            if isinstance(who, str):
                bad.append((b, s, who))
            elif who in allowed or (not last_durable and who == base[b][s]):
                continue
            elif last_durable:
                lost.append((b, s, last_durable, who))
            else:
                unexpected.append((b, s, who, base[b][s]))
        observed.append(row)

    failed = False
    if lost:
        failed = True
        lost_writes = sorted({x[2] for x in lost})
        print("LOST: %d durable writes (%d sectors) do not read back; first: %s"
              % (len(lost_writes), len(lost),
                 ["block %d sector %d: durable write %d, read %s" % x
                  for x in lost[:5]]))
    if bad:
        failed = True
        print("BAD: %d sectors hold data no write put there; first: %s"
              % (len(bad), bad[:5]))
    if unexpected:
        failed = True
        print("UNEXPECTED: %d sectors hold neither the old data nor a write "
              "of this round; first: %s" % (len(unexpected), unexpected[:5]))
    if a.diff:
        cov = covered_blocks(a.diff, a.blocks)
        ack_blocks = {w[0] for w in rec["writes"].values() if w[2] == 1}
        miss_ack = sorted(b for b in ack_blocks if not cov[b])
        miss_chg = sorted(b for b in range(a.blocks) if changed[b] and not cov[b])
        if miss_ack or miss_chg:
            failed = True
            print("CBT: the diff misses %d blocks with acknowledged writes "
                  "(first %s) and %d changed blocks (first %s)"
                  % (len(miss_ack), miss_ack[:5], len(miss_chg), miss_chg[:5]))
    n_durable = len(durable)
    print("round %d verify: %d writes (%d durable) over %d blocks: %s"
          % (rnd, len(rec["writes"]), n_durable, a.blocks,
             "FAILED" if failed else "0 lost, 0 bad"
             + (", diff covers every change" if a.diff else "")))
    state["blocks"] = [[list(x) if x else None for x in row] for row in observed]
    tmp = a.state + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, a.state)
    return 1 if failed else 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("uri")
    w.add_argument("round", type=int)
    w.add_argument("record")
    w.add_argument("--blocks", type=int, default=2048)
    w.add_argument("--qd", type=int, default=8)
    w.add_argument("--flush-every", type=int, default=32)
    w.add_argument("--max-writes", type=int, default=0)
    w.add_argument("--ready")
    w.add_argument("--seed", type=int)
    w.add_argument("--until", help="stop (after a last FLUSH) once this file exists")
    w.add_argument("--progress", help="keep 'ACKED FAILED INFLIGHT' in this file")
    v = sub.add_parser("verify")
    v.add_argument("uri")
    v.add_argument("record")
    v.add_argument("state")
    v.add_argument("--blocks", type=int, default=2048)
    v.add_argument("--diff")
    a = p.parse_args()
    try:
        return cmd_write(a) if a.cmd == "write" else cmd_verify(a)
    except (nbd.Error, OSError, ValueError) as e:
        print("pattern-io: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
