/* SPDX-License-Identifier: MIT
 * format: docs/FORMAT.md
 *
 * lease.h - one writer per image: the lease, its hand-off during live
 * migration, and takeover with fencing when a holder dies.
 *
 * The lease is the exclusive store lock "vbk_lease" on the image header,
 * with a duration, renewed by its holder every quarter of it; the holder
 * counts the duration from when it sent each renewal and admits writes
 * only until a margin before that end (the timeline of every timeout is
 * in common/timeouts.h).  Its record
 * names the holder (host id, address, store client) and the epoch, a
 * counter on the header (xattr lease_epoch) that grows on every
 * acquisition.
 *
 * A writer that does not hold the lease asks the holder to let go
 * (notify on the header: "release", naming the holder's lock cookie
 * and the epoch the requester saw, so that a request delivered late or
 * twice cannot release a lease taken after it); the holder stops
 * starting writes, lets those in flight finish, flushes, unlocks and the
 * requester takes the lease.  Writes that arrive meanwhile wait.  A holder that does not
 * answer is waited out until its lease expires, then fenced (store_fence:
 * RADOS blocklist, or the local store's fence), then replaced.  Hand-offs
 * are logged on the header; more than BOUNCE_LIMIT in BOUNCE_WINDOW means
 * two writers: further hand-offs are refused and the header says why.
 *
 * Thread safety: all functions may be called from any thread.
 */
#ifndef VBK_LEASE_H
#define VBK_LEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/timeouts.h"
#include "store/store.h"

#define LEASE_LOCK_NAME "vbk_lease"
#define LEASE_DURATION_DEFAULT_MS VBK_LEASE_DURATION_MS
#define LEASE_BOUNCE_LIMIT_DEFAULT 5u
#define LEASE_BOUNCE_WINDOW_DEFAULT_MS 10000u

/* ---- The state machine (lease-sm.c): pure logic, clock injected ------- *
 * Times of the holder's own lease are CLOCK_MONOTONIC ms (now_mono_ns()
 * / 1000000 in lease.c); those read from the store (holder_expires of
 * lease_sm_busy, the hand-off log) are wall-clock ms. */

enum lease_state {
  LEASE_NONE,          /* not held */
  LEASE_ACQUIRING,     /* asking the holder / waiting it out */
  LEASE_HELD,
  LEASE_RELEASING,     /* draining writes before giving it away */
  LEASE_LOST,          /* expired unrenewed, fenced or taken: terminal */
  LEASE_LAPSED,        /* our lock ran out on the store while we could
                          not renew (an outage longer than the lease):
                          no writes; we try to take it again, and hold
                          it again only if nobody else held it since */
};

enum lease_action {
  LEASE_ACT_NONE,
  LEASE_ACT_RENEW,     /* time to renew */
  LEASE_ACT_EXPIRED,   /* we could not renew in time: stop writing */
  LEASE_ACT_RETAKE,    /* LAPSED: try to take the lock again */
};

enum lease_answer {
  LEASE_ANS_RELEASING, /* we will let go */
  LEASE_ANS_NOT_HOLDER,
  LEASE_ANS_EXCLUSIVE, /* refused: exclusive mode */
  LEASE_ANS_CONFLICT,  /* refused: two writers detected */
  LEASE_ANS_STALE,     /* ignored: the request names another epoch */
};

enum lease_busy {
  LEASE_BUSY_ASK,      /* ask the holder to release */
  LEASE_BUSY_POLL,     /* the holder agreed: try again shortly */
  LEASE_BUSY_WAIT,     /* the holder is silent: wait for its expiry */
  LEASE_BUSY_TAKEOVER, /* expired: fence it and take the lease */
};

struct lease_sm {
  enum lease_state state;
  uint32_t duration_ms;
  bool exclusive;
  unsigned bounce_limit;
  uint32_t bounce_window_ms;
  uint32_t renew_ms;           /* R: renew this long after a send */
  uint32_t margin_ms;          /* M: stop admitting writes this long
                                  before expires_ms */
  uint64_t expires_ms;         /* while HELD: our lease's end, counted
                                  from the last renewal's send */
  uint64_t renew_at_ms;
  uint64_t epoch;
  bool conflict;               /* two writers: refuse hand-offs */
  unsigned handoffs;           /* hand-offs this holder took */
};

void lease_sm_init (struct lease_sm *sm, uint32_t duration_ms,
                    bool exclusive, unsigned bounce_limit,
                    uint32_t bounce_window_ms);

/* We took the lease with EPOCH by a lock request sent at SENT. */
void lease_sm_acquired (struct lease_sm *sm, uint64_t sent, uint64_t epoch);

/* A renewal sent at SENT succeeded, answered at NOW: the lease now ends
 * at SENT + the duration, however late the answer came (never earlier
 * than before); if that end is not after NOW the state becomes LAPSED
 * (see below), as the lock may have run out on the store meanwhile.
 * Or a renewal failed at NOW with ERR (-ENOENT: someone else took it;
 * -ESHUTDOWN: fenced; others: retry soon until expiry). */
void lease_sm_renewed (struct lease_sm *sm, uint64_t sent, uint64_t now);
void lease_sm_renew_failed (struct lease_sm *sm, uint64_t now, int err);

/* A renewal that failed with -ENOENT at NOW, past our own expiry, means
 * the lock ran out on the store (it expires no earlier than ours): the
 * state becomes LAPSED (before our expiry, -ENOENT means someone broke
 * the lock: LOST).  While LAPSED the caller tries to take the lock again
 * (LEASE_ACT_RETAKE).  Having taken it by a request sent at SENT, it
 * reads the header's epoch HEADER_EPOCH: if that is still ours nobody
 * else took the lease in between (every acquisition grows the epoch
 * before its first write), and the lease is HELD again with NEW_EPOCH
 * (the caller wrote it on the header); otherwise it is LOST.  If that
 * lease, counted from SENT, has already ended at NOW, the state stays
 * LAPSED with NEW_EPOCH as ours, to take the lock once more.  Returns
 * whether it is held again.  A failed attempt at NOW with ERR: -EBUSY
 * (someone else holds it) or -ESHUTDOWN (fenced) lose the lease, others
 * are retried soon. */
bool lease_sm_retaken (struct lease_sm *sm, uint64_t sent, uint64_t now,
                       uint64_t header_epoch, uint64_t new_epoch);
void lease_sm_retake_failed (struct lease_sm *sm, uint64_t now, int err);

/* Whether a write may be admitted at NOW: the lease is HELD and NOW is
 * before lease_sm_write_stop (expiry minus the margin).  Past that,
 * writes wait for a renewal (or fail once the lease is lost). */
bool lease_sm_may_write (const struct lease_sm *sm, uint64_t now);
uint64_t lease_sm_write_stop (const struct lease_sm *sm);

/* What to do at NOW. */
enum lease_action lease_sm_tick (struct lease_sm *sm, uint64_t now);

/* Another host asks us to release (EXPLICIT: an operator's
 * `vbk lease release`, which exclusive mode and conflicts do not stop).
 * NAMED: the request names the EPOCH of the lease its sender saw; one
 * for another epoch than ours is STALE (a request delivered late or
 * twice, after the lease moved on: it must not release a newer lease)
 * and changes nothing.  A request that names no epoch (from a binary
 * that predates the epoch in the request) is taken as before: for
 * whatever lease we hold.  RELEASING moves the state to
 * LEASE_RELEASING. */
enum lease_answer lease_sm_release_request (struct lease_sm *sm,
                                            bool explicit, bool named,
                                            uint64_t epoch);
/* The release finished: the lock is gone. */
void lease_sm_released (struct lease_sm *sm);

/* While acquiring, the lock is held by another client whose lease ends at
 * HOLDER_EXPIRES; ASKED: we already asked it and it agreed; ANSWERED:
 * it answered at all. */
enum lease_busy lease_sm_busy (const struct lease_sm *sm, uint64_t now,
                               uint64_t holder_expires, bool asked,
                               bool answered);

/* Records a hand-off at NOW in LOG (timestamps in ms, oldest first, at
 * most CAP, N in use), dropping those older than the window.  Returns
 * true if the hand-offs in the window now pass the bounce limit. */
bool lease_sm_note_handoff (const struct lease_sm *sm, uint64_t now,
                            uint64_t *log, size_t cap, size_t *n);

const char *lease_state_name (enum lease_state s);

/* ---- The lease on an image (lease.c) ---------------------------------- */

struct lease;

struct lease_opts {
  const char *host_id;         /* this host (required) */
  const char *addr;            /* where its blockd listens (informational) */
  uint32_t duration_ms;        /* 0: LEASE_DURATION_DEFAULT_MS */
  bool no_handoff;             /* take the lease only if nobody holds
                                  it: a busy lock fails the attempt
                                  with -EAGAIN instead of asking the
                                  holder (for vbk's brief holds) */
  bool exclusive;              /* refuse automatic hand-off */
  unsigned bounce_limit;       /* 0: default */
  uint32_t bounce_window_ms;   /* 0: default */
  uint32_t acquire_timeout_ms; /* 0: 3 x duration
                                  + VBK_LEASE_ACQUIRE_SLACK_MS */
};

struct lease_hooks {
  /* After we acquired the lease (EPOCH): drop what was cached. */
  int (*acquired) (void *arg, uint64_t epoch);
  /* Before we let go, with no write in flight: make writes durable.
   * Called exactly once before each release (hand-off, operator
   * release, close); the lease is gone when the release completes, so a
   * holder may also drop its trust in cached state here. */
  int (*flush) (void *arg);
  /* The lease is lost for good (ERR): writes must fail from now on. */
  void (*lost) (void *arg, int err);
  /* A notify on the header that is not a release request (snapshot
   * commands, see snapshot/snapshot.h).  Runs on a thread of the lease,
   * never the store's; may block.  Fills REPLY (at most REPLY_MAX
   * bytes) and returns its length; NULL: such notifies are ignored. */
  size_t (*command) (void *arg, const char *payload, size_t len,
                     char *reply, size_t reply_max);
};

/* Starts managing the lease of the image whose header is HDR_OID, with
 * store handle ST (which the writes use: fencing this lease's holder
 * fences ST).  Watches the header.  Takes nothing yet. */
int lease_open (struct store *st, const char *hdr_oid,
                const struct lease_opts *opts,
                const struct lease_hooks *hooks, void *arg,
                struct lease **out);

/* Releases the lease if held (waiting for writes, flushing), stops.
 * lease_close(NULL) is a no-op. */
void lease_close (struct lease *l);

/* Before a write: waits until we hold the lease (acquiring it if
 * needed), then counts the write in flight.  Past the write-stop (the
 * holder's expiry minus its margin, common/timeouts.h) it waits for a
 * renewal.  Errors: -EIO (the lease is lost: fenced, taken or expired),
 * -EBUSY (refused: exclusive holder or two writers), -EAGAIN (opened
 * with no_handoff and someone else holds it), -ETIMEDOUT.  The message
 * says which. */
int lease_write_begin (struct lease *l);
/* After the write completed (successfully or not). */
void lease_write_end (struct lease *l);

/* Holds new writes and waits for those in flight (for a snapshot); the
 * lease must be held (acquired if needed).  Pair with lease_resume.
 * Errors: those of lease_write_begin. */
int lease_quiesce (struct lease *l);
void lease_resume (struct lease *l);

enum lease_state lease_state (struct lease *l);
uint64_t lease_epoch (struct lease *l);
/* The store handle given to lease_open (owned by the caller). */
struct store *lease_store (struct lease *l);

/* ---- Operator side (vbk lease) ---------------------------------------- */

struct lease_status {
  bool held;
  char host[STORE_NAME_MAX + 1];
  char addr[STORE_NAME_MAX + 1];
  char client[STORE_CLIENT_MAX];
  char cookie[STORE_NAME_MAX + 1];
  uint64_t epoch;
  uint64_t expires_ms;         /* wall clock */
  uint64_t handoffs;           /* hand-offs ever */
  char conflict[512];          /* non-empty: hand-offs refused, why */
};

/* Errors: -ENOENT (no such header). */
int lease_status_get (struct store *st, const char *hdr_oid,
                      struct lease_status *s);

/* Asks the holder to release (even in exclusive mode, and clears a
 * conflict), waiting up to TIMEOUT_MS for the lock to be free.  The
 * request names the holder's lock cookie and the epoch read just
 * before, so that a copy of it delivered late never releases a later
 * lease; a holder that answers that it holds another epoch (or is not
 * the holder yet) is asked again, with what is read then.
 * Returns 0 if nobody holds it afterwards.  Errors: -ETIMEDOUT (the
 * holder did not let go: use lease_break). */
int lease_request_release (struct store *st, const char *hdr_oid,
                           uint32_t timeout_ms);

/* Fences the holder and removes its lock (for a host known to be dead);
 * clears a conflict.  Errors: -ENOENT (nobody holds it). */
int lease_break (struct store *st, const char *hdr_oid);

#endif /* VBK_LEASE_H */
