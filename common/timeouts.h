/* SPDX-License-Identifier: MIT
 *
 * timeouts.h - every timeout of vbk in one place, and why they are safe
 * together.
 *
 * DESIGN
 * The lease (locks/) is a store lock with a duration D.  Its holder
 * counts D from the moment it SENT the request that took or renewed the
 * lock, on CLOCK_MONOTONIC; the store counts it from the moment it
 * granted it, which is later.  So the holder's idea of the end is never
 * later than the store's, and no wall-clock step on the holder moves it.
 *
 * The timeline of one holder, defaults in brackets (D = 20 s):
 *
 *   s        renewal sent (or the lock taken): expiry E = s + D     [s+20]
 *   s+R      next renewal sent                                      [s+5]
 *   s+R+OT   ...if it hangs, the store gives up on it (op timeout)  [s+15]
 *            and it is sent again at once (a passing error)
 *   E-M      writes stop being admitted; they wait (not fail)       [s+18]
 *            for a renewal sent in time to move E
 *   E        the holder gives up: writes fail from now on           [s+20]
 *   >= E     the store's lock runs out (granted after s, so later)
 *   >= E+TM  another host may take over: it fences us first (RADOS
 *            blocklist; the local store's fence waits for our changes
 *            in flight and bars the rest), only then writes         [s+21]
 *
 * Why that is safe and live:
 *  - One renewal that times out does not cost the lease: it was sent at
 *    s+R, the retry goes at s+R+OT and its answer arrives before E-M as
 *    long as R + OT + M < D (5 + 10 + 2 = 17 < 20, so the retry has 3 s
 *    before writes even pause, 5 s before the lease is lost).
 *  - A write admitted before E-M either completes or is cut off before
 *    the new holder writes: takeover happens only after E+TM and fences
 *    the old holder before its first write, so a write still in flight
 *    then fails with -ESHUTDOWN instead of landing (on RADOS the new
 *    holder's ops carry the newer osdmap epoch; the notes measured that
 *    a blocklisted client's ops fail from about 50 ms after the
 *    blocklist).  M keeps the holder from starting writes right up to
 *    the edge: it covers clock-rate drift between holder and store
 *    (parts per million of D), the time from admitting a write to the
 *    store seeing it, and the fence's propagation.
 *  - TM covers wall-clock skew between hosts: the lock's expiry that a
 *    requester reads (store_lock_info.expires_ms) is wall clock.
 *  - Fences must outlive every process they fence.  RADOS blocklists
 *    for an hour (a client address is never reused, and a fenced
 *    librados client also sees -ESHUTDOWN on its lock renewal, so the
 *    holder marks the lease lost long before).  The local store keeps
 *    fences in this boot's CLOCK_BOOTTIME ("boot BOOT_ID UNTIL_MS" in
 *    fenced/CLIENT): no wall-clock step unfences a stopped holder, and a
 *    record from an earlier boot has lapsed with every process it named.
 *  - Takeover assumes a stopped holder cannot stop others: on the local
 *    store it could.  A client stopped (SIGSTOP, a paused VM) inside a
 *    change holds the shared flock of its fenced/CLIENT.lock, so
 *    store_fence waits for it, but at most VBK_LOCAL_FENCE_WAIT_MS
 *    (5 s, store/local.c): then it kills the process named in the client
 *    id (after checking host, pid and start time), which frees the lock,
 *    and fences.  Renewing every quarter of D
 *    (not every sixth, which would leave a timed-out renewal more room)
 *    keeps the holder inside lock calls only a third more often than
 *    the every-third it replaced.
 *
 * The other waits of the system hang off these:
 *  - a hand-off: the requester asks by notify (NOTIFY), polls while the
 *    holder drains its writes and flushes, asks again if the holder
 *    agreed but still holds the lock after HANDOFF_REASK, treats it as
 *    silent after D and waits for E+TM; a writer waiting for the lease
 *    gives up after 3 D + ACQUIRE_SLACK (a silent holder's whole lease,
 *    the takeover, and a second try);
 *  - the holder's watch on the header (how hand-off requests and
 *    commands reach it) is not on this timeline: when it breaks it is
 *    made anew on its own thread, tried every 0.1 s to 2 s (lease.c),
 *    each try bounded by OT, while renewals go on.  Until it stands,
 *    requests go unanswered and requesters treat the holder as silent;
 *    as its lease keeps being renewed they give up (a writer after
 *    3 D + ACQUIRE_SLACK, a snapshot command after the rest of the
 *    lease + TM + ACQUIRE_SLACK), and never take the lease over;
 *  - a snapshot command waits up to SNAP_CMD for the holder's answer; a
 *    group's freeze thaws by itself after SNAP_FREEZE if its requester
 *    vanished, so a dead requester holds writes at most that long.
 *  - image/ serializes snapshot removals with its own store lock of 30 s
 *    (SNAPOPS_MS in image.c), renewed by nobody: a removal must finish
 *    within it;
 *  - blockd has no handshake timeout today: a client that stalls in the
 *    NBD handshake keeps its connection (and thread) open.
 *
 * Durations passed explicitly (blockd --lease-duration) keep the same
 * proportions: R = D / 4, M = D / 10.  Below about 15 s, one timed-out
 * renewal on RADOS (OT = 10 s) may pause writes or lose the lease.
 */
#ifndef VBK_TIMEOUTS_H
#define VBK_TIMEOUTS_H

/* D: the lease's duration. */
#define VBK_LEASE_DURATION_MS 20000u
/* R: a renewal is sent this long after the previous one was sent. */
#define VBK_LEASE_RENEW_DIVISOR 4u
/* M: writes stop being admitted this long before the holder's expiry. */
#define VBK_LEASE_WRITE_STOP_DIVISOR 10u
/* A renewal that failed with a passing error is sent again after this. */
#define VBK_LEASE_RENEW_RETRY_MS 200u
/* TM: a requester takes over only this long after the recorded expiry. */
#define VBK_LEASE_TAKEOVER_MARGIN_MS 1000u
/* Fences last this long (0: the store's default, one hour). */
#define VBK_LEASE_FENCE_EXPIRE_S 0u

/* OT: a store operation on RADOS fails with -ETIMEDOUT after this
 * (rados_osd_op_timeout, rados_mon_op_timeout, client_mount_timeout). */
#define VBK_STORE_OP_TIMEOUT_MS 10000u

/* NOTIFY: how long a notify (hand-off request) waits for the watchers. */
#define VBK_NOTIFY_TIMEOUT_MS 2000u
/* A release on request is done only after the holder has drained; the
 * releaser then leaves the lock to the requester this long. */
#define VBK_HANDOFF_YIELD_MS 1000u
/* A holder that agreed to let go but still holds the lock after this is
 * asked again (it may have taken the lease back meanwhile). */
#define VBK_HANDOFF_REASK_MS 300u
/* A writer waits 3 D + this for the lease before failing. */
#define VBK_LEASE_ACQUIRE_SLACK_MS 10000u

/* SNAP_CMD: a command to the lease holder (snapshot.h) waits this long
 * for its answer. */
#define VBK_SNAP_CMD_TIMEOUT_MS 30000u
/* SNAP_FREEZE: a frozen image thaws by itself after this. */
#define VBK_SNAP_FREEZE_TIMEOUT_MS 10000u

/* The default proportions must leave room for one renewal timing out. */
_Static_assert (VBK_LEASE_DURATION_MS / VBK_LEASE_RENEW_DIVISOR
                + VBK_STORE_OP_TIMEOUT_MS
                + VBK_LEASE_DURATION_MS / VBK_LEASE_WRITE_STOP_DIVISOR
                + 2000u < VBK_LEASE_DURATION_MS,
                "a renewal timing out once must not stop writes");

#endif /* VBK_TIMEOUTS_H */
