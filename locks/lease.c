/* SPDX-License-Identifier: MIT
 *
 * lease.c - the lease on an image: store I/O and threads around the
 * decisions of lease-sm.c.
 *
 * DESIGN
 * One thread per lease does everything slow: acquiring (asking the
 * holder, waiting it out, fencing), renewing, and releasing on request.
 * Writers only wait on a condition variable; the watch callback only
 * records a request and answers.  A second thread re-creates the watch
 * when it breaks, so that a watch request stuck in an outage (up to the
 * store's op timeout, again and again) never delays a renewal or a
 * retake: the lease does not depend on the watch, only hand-offs and
 * commands do.  A broken watch is not taken for a fence (RADOS reports
 * a watch dropped in an outage as it reports a fenced client's); the
 * new watch of a fenced client fails with -ESHUTDOWN, and that loses
 * the lease.  State lives in struct lease under one mutex.  These are
 * threads of the lease's own, not items of common/workq.c: each is a
 * loop for the lease's whole life with its own deadlines, and a shared
 * pool would let one lease's request stuck in an outage hold back
 * another lease's renewal.  A third thread, cmd_thread, runs the
 * holder's commands one at a time (so a slow snapshot never holds up
 * the watch callback that received it); not a one-thread workq either:
 * its queue is one slot with a synchronous answer, and stopping the
 * lease drops a command still waiting instead of running it (a lease
 * that is let go must not take a snapshot), where workq_shutdown runs
 * everything queued.
 *
 * Header xattrs kept by the holder: lease_epoch (20 digits, so byte
 * comparison is numeric), lease_handoffs (count), lease_handoff_log
 * (recent hand-off times, for bounce detection), lease_conflict (why
 * hand-offs are refused; empty or absent when they are not).
 *
 * Notify protocol on the header: the payload "release HOST EXPLICIT
 * EPOCH HOLDER" (docs/FORMAT.md); each watcher answers "releasing",
 * "not-holder", "stale: epoch N" or "refused: WHY".  EPOCH and HOLDER
 * (the lock cookie) name the lease the requester saw: a request is an
 * event of one lease, never a standing order.  A notify can reach the
 * holder late (queued behind a command that holds the watch callback,
 * or behind a stopped process) and, on RADOS, twice (an OSD sends every
 * notify not yet acknowledged again when a watch reconnects); by then
 * the holder may have released and taken the lease again, and a bare
 * "release" would take that newer lease away from it.  So the holder
 * ignores a request for another epoch or cookie, and a requester that
 * is still waiting reads the lease again and asks anew.  A request
 * without EPOCH (older binaries) is honoured as it always was.
 *
 * Clocks: the holder's own lease runs on CLOCK_MONOTONIC (mono_ms), from
 * the send of the lock request that took or renewed it; the condition
 * variable waits on the same clock.  Only what other hosts read (the
 * lock's expiry, the hand-off log) is wall clock.
 *
 * A lapse (an outage longer than the lease, say two of three OSDs down):
 * the renewal cannot reach the header, our lock runs out on the store,
 * and when the store answers again the renewal gets -ENOENT.  Rather
 * than give the lease up, the holder takes the lock again (retake) and
 * continues if the header's epoch is still its own.  Why that is safe:
 *  - we wrote nothing new meanwhile: writes are admitted only before our
 *    write-stop (E - M), and E is counted from a send, so it is never
 *    later than the store's expiry; past E-M writers wait and stay
 *    waiting while the state is LAPSED.  Writes admitted before E-M and
 *    still in flight are the ones any takeover has to cut off anyway,
 *    and does: it fences us before it writes.
 *  - nobody else wrote meanwhile: every acquisition, by a host or by vbk
 *    itself, takes the lock, fences the client recorded in lease_holder
 *    (us, as we never released), and grows lease_epoch, all before its
 *    first write.  We read the epoch only once the lock is ours again,
 *    so nobody can change it behind our read.  An epoch still ours and
 *    lease_holder still us mean no acquisition happened in between; a
 *    taker that died half way has fenced us, and then our lock request
 *    fails with -ESHUTDOWN.  Our cached map and state are therefore still
 *    those of the image: we keep them (no acquired hook).
 *  - like any acquisition the retake grows the epoch, and lease_holder
 *    stays our client, so the next taker fences exactly the client that
 *    may still have writes in flight.
 * The same holds when a renewal (or the retake itself) succeeds but its
 * answer comes only after the lease it gives has ended: the OSD did the
 * request before the outage and answers the resent one with that first
 * result, though the lock may have run out since.  That is a lapse too
 * (lease_sm_renewed, lease_sm_retaken), not a lease that ends in the
 * past and expires at the next tick.
 * Anything else (the lock busy, fenced, the epoch or the holder record
 * moved) loses the lease as before.  A lapse seen by our own clock first
 * (renewals failing with passing errors until E) still loses the lease:
 * then the store's op timeout is shorter than the outage and writes
 * waiting in the store fail anyway.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "lease.h"

#define NOTIFY_TIMEOUT_MS VBK_NOTIFY_TIMEOUT_MS
#define HANDOFF_LOG_CAP 32

struct lease {
  struct store *st;
  char hdr[STORE_NAME_MAX + 1];
  char host[STORE_NAME_MAX + 1];
  char addr[STORE_NAME_MAX + 1];
  char cookie[STORE_NAME_MAX + 1];
  struct lease_hooks hooks;
  void *arg;
  uint32_t acquire_timeout_ms;
  bool no_handoff;

  pthread_mutex_t lock;
  pthread_cond_t cond;           /* any change of the fields below */
  struct lease_sm sm;
  unsigned inflight;             /* writes between begin and end */
  unsigned want;                 /* writers waiting for the lease */
  unsigned quiesced;             /* lease_quiesce depth */
  bool release_pending;          /* a holder was asked to let go */
  bool lost_told;                /* the lost hook has run (LOST is final) */
  bool watch_broken;
  bool stop;
  int acquire_err;               /* result of the last failed attempt */
  uint64_t acquire_gen;          /* counts finished attempts */
  uint64_t requested_gen;        /* a writer wants attempt number this */
  uint64_t yield_until_ms;       /* we released on request: let the
                                    requester take it before we retake
                                    (monotonic) */
  char errmsg[512];

  /* The watch is re-created on its own thread (watch_thread), never on
   * the lease thread: in an outage store_watch blocks up to the store's
   * op timeout, and renewals must not wait for it. */
  struct store_watch *watch;     /* owned by watch_thread once started */
  bool watch_stop;
  pthread_t thread, wthread;

  /* Commands (lease_hooks.command) run one at a time on cmd_thread. */
  pthread_mutex_t cmd_lock;
  pthread_cond_t cmd_cond;
  const char *cmd;               /* non-NULL: a command waits to run */
  size_t cmd_len;
  char *cmd_reply;
  size_t cmd_reply_max, cmd_reply_len;
  bool cmd_done, cmd_stop;
  pthread_t cmd_thread;
};

/* The holder's clock: monotonic, in ms. */
static uint64_t
mono_ms (void)
{
  return now_mono_ns () / 1000000;
}

static void
sleep_ms (unsigned ms)
{
  struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000 };

  nanosleep (&ts, NULL);
}

/* ---- Header xattrs ---------------------------------------------------- */

static uint64_t
xattr_u64 (struct store *st, const char *oid, const char *name)
{
  char buf[32];
  ssize_t n = store_xattr_get (st, oid, name, buf, sizeof buf - 1);

  if (n <= 0)
    return 0;
  buf[MIN ((size_t) n, sizeof buf - 1)] = '\0';
  return strtoull (buf, NULL, 10);
}

static int
set_u64 (struct store *st, const char *oid, const char *name, uint64_t v)
{
  char buf[32];

  snprintf (buf, sizeof buf, "%020" PRIu64, v);
  return store_xattr_set (st, oid, name, buf, strlen (buf));
}

static void
clear_conflict (struct store *st, const char *oid)
{
  store_xattr_rm (st, oid, "lease_conflict");
  store_xattr_rm (st, oid, "lease_handoff_log");
}

/* Records a hand-off in the header's log; true if the lease bounces. */
static bool
note_handoff (struct lease *l, const char *from_host)
{
  uint64_t log[HANDOFF_LOG_CAP];
  char buf[HANDOFF_LOG_CAP * 21 + 1], *p, *end;
  size_t n = 0, i, len = 0;
  ssize_t got;
  bool bounce;

  got = store_xattr_get (l->st, l->hdr, "lease_handoff_log", buf,
                         sizeof buf - 1);
  if (got > 0) {
    buf[MIN ((size_t) got, sizeof buf - 1)] = '\0';
    for (p = buf; n < HANDOFF_LOG_CAP; p = end) {
      uint64_t v = strtoull (p, &end, 10);
      if (end == p)
        break;
      log[n++] = v;
    }
  }
  bounce = lease_sm_note_handoff (&l->sm, now_wall_ms (), log,
                                  HANDOFF_LOG_CAP, &n);
  for (i = 0; i < n; i++)
    len += snprintf (buf + len, sizeof buf - len, "%s%" PRIu64,
                     i ? " " : "", log[i]);
  store_xattr_set (l->st, l->hdr, "lease_handoff_log", buf, len);
  set_u64 (l->st, l->hdr, "lease_handoffs",
           xattr_u64 (l->st, l->hdr, "lease_handoffs") + 1);
  if (bounce) {
    char msg[512];
    int m = snprintf (msg, sizeof msg,
                      "lease bounced %zu times in %u s (last between %s and "
                      "%s): two writers on one image? hand-offs refused "
                      "until 'vbk lease release' or 'vbk lease break'",
                      n, l->sm.bounce_window_ms / 1000, from_host, l->host);
    store_xattr_set (l->st, l->hdr, "lease_conflict", msg, m);
    log_error ("lease %s: %s", l->hdr, msg);
  }
  return bounce;
}

/* ---- Release requests ------------------------------------------------- */

/* The longest request: "release HOST 1 EPOCH COOKIE". */
#define REQUEST_MAX (2 * STORE_NAME_MAX + 48)

/* A release request as received (see the DESIGN paragraph). */
struct release_request {
  char from[STORE_NAME_MAX + 1];
  int explicit;
  bool named;                   /* EPOCH given (HOLDER may still be
                                   missing: then it is not checked) */
  uint64_t epoch;
  char holder[STORE_NAME_MAX + 1];
};

/* Parses PAYLOAD as a release request; false if it is not one (a
 * command for the holder's command hook). */
static bool
parse_request (const void *payload, size_t len, struct release_request *q)
{
  char msg[REQUEST_MAX + 1];
  int n;

  memset (q, 0, sizeof *q);
  snprintf (q->from, sizeof q->from, "?");
  snprintf (msg, sizeof msg, "%.*s", (int) MIN (len, sizeof msg - 1),
            (const char *) payload);
  n = sscanf (msg, "release %250s %d %" SCNu64 " %250s", q->from,
              &q->explicit, &q->epoch, q->holder);
  if (n < 1)
    return false;
  q->named = n >= 3;
  return true;
}

/* What the holder of a lease answered a release request. */
enum holder_answer {
  ANSWER_NONE,                  /* no answer (silent, or no such watcher) */
  ANSWER_RELEASING,
  ANSWER_AGAIN,                 /* another epoch, or not the holder (yet):
                                   read the lease again and ask anew */
  ANSWER_REFUSED,               /* why in WHY */
};

/* Sends FROM's release request to the holder described by INFO, naming
 * its lock cookie and EPOCH, and waits up to TIMEOUT_MS for its answer.
 * Returns an enum holder_answer, or -errno if the notify failed. */
static int
send_request (struct store *st, const char *hdr, const char *from,
              bool explicit, const struct store_lock_info *info,
              uint64_t epoch, uint32_t timeout_ms, char *why, size_t why_len)
{
  struct store_notify_reply *rep = NULL;
  size_t n = 0, timed_out = 0, i;
  char payload[REQUEST_MAX + 1];
  int r, result = ANSWER_NONE;

  snprintf (payload, sizeof payload, "release %s %d %" PRIu64 " %s", from,
            explicit ? 1 : 0, epoch, info->cookie);
  r = store_notify (st, hdr, payload, strlen (payload), timeout_ms, &rep, &n,
                    &timed_out);
  if (r < 0)
    return r;
  for (i = 0; i < n; i++) {
    const char *ans = rep[i].data;
    size_t len = rep[i].len;
    if (strcmp (rep[i].client, info->client) != 0)
      continue;
    if (len >= 9 && strncmp (ans, "releasing", 9) == 0)
      result = ANSWER_RELEASING;
    else if (len >= 8 && strncmp (ans, "refused:", 8) == 0) {
      if (why)
        snprintf (why, why_len, "%.*s", (int) MIN (len - 8, 400), ans + 8);
      result = ANSWER_REFUSED;
    }
    else
      result = ANSWER_AGAIN;    /* "stale: ...", "not-holder" */
  }
  store_notify_replies_free (rep, n);
  return result;
}

/* ---- Acquiring -------------------------------------------------------- */

static void
desc_host (const char *desc, char *host, size_t len)
{
  const char *p = strstr (desc, "host=");

  snprintf (host, len, "%s", p ? p + 5 : "?");
  host[strcspn (host, " ")] = '\0';
}

/* Asks the holder described by INFO to release.  Returns 1 if it agreed
 * (or must be asked again: poll, and ask again if it keeps the lock), 0
 * if it did not answer, -EBUSY if it refused (message set). */
static int
ask_holder (struct lease *l, const struct store_lock_info *info,
            bool explicit)
{
  char why[512] = "";
  int r;

  r = send_request (l->st, l->hdr, l->host, explicit, info,
                    xattr_u64 (l->st, l->hdr, "lease_epoch"),
                    NOTIFY_TIMEOUT_MS, why, sizeof why);
  switch (r) {
  case ANSWER_RELEASING:
  case ANSWER_AGAIN:
    return 1;
  case ANSWER_REFUSED:
    vbk_set_error ("lease %s: the holder refused the hand-off:%s", l->hdr,
                   why);
    return -EBUSY;
  default:
    return 0;
  }
}

/* Takes the lease, asking, waiting out or fencing the holder.  Returns
 * 0 with the new epoch and when the lock request that got it was sent
 * (monotonic ms), or -errno with a message. */
static int
acquire (struct lease *l, uint64_t *epoch_out, uint64_t *sent_out)
{
  uint64_t deadline = now_mono_ns () + (uint64_t) l->acquire_timeout_ms
    * 1000000;
  char desc[2 * STORE_NAME_MAX + 16], asked_key[2 * STORE_NAME_MAX + 2] = "";
  char prev_host[STORE_NAME_MAX + 1] = "";
  struct store_lock_info info;
  bool asked = false, answered = true;
  unsigned poll_ms = 1;
  uint64_t epoch, poll_start = 0, sent = 0;
  int r;

  snprintf (desc, sizeof desc, "host=%s addr=%s", l->host, l->addr);
  for (;;) {
    bool stop;
    pthread_mutex_lock (&l->lock);
    stop = l->stop;
    pthread_mutex_unlock (&l->lock);
    if (stop)
      return -ECANCELED;
    if (now_mono_ns () > deadline)
      return vbk_errno (-ETIMEDOUT, "lease %s: could not take the lease "
                        "from %s", l->hdr, prev_host[0] ? prev_host : "?");

    /* Having just let the lease go on request, give the requester the
     * first chance to take it; if we wanted it back at once, a fast
     * local writer would starve the remote one. */
    pthread_mutex_lock (&l->lock);
    uint64_t yield = l->yield_until_ms;
    pthread_mutex_unlock (&l->lock);
    if (mono_ms () < yield
        && store_lock_get (l->st, l->hdr, LEASE_LOCK_NAME, &info) == -ENOENT) {
      sleep_ms (2);
      continue;
    }
    sent = mono_ms ();
    r = store_lock (l->st, l->hdr, LEASE_LOCK_NAME, l->cookie, desc,
                    l->sm.duration_ms, 0);
    if (r == -EEXIST) {
      /* Ours already (a retried attempt): renew it, so that the lease
       * is counted from a send we know of. */
      sent = mono_ms ();
      r = store_lock (l->st, l->hdr, LEASE_LOCK_NAME, l->cookie, desc,
                      l->sm.duration_ms, STORE_LOCK_RENEW);
    }
    if (r == 0)
      break;
    if (r != -EBUSY)
      return r;
    if (l->no_handoff) {
      r = store_lock_get (l->st, l->hdr, LEASE_LOCK_NAME, &info);
      if (r == -ENOENT)
        continue;
      desc_host (r == 0 ? info.desc : "", prev_host, sizeof prev_host);
      return vbk_errno (-EAGAIN, "lease %s: held by %s", l->hdr,
                        prev_host);
    }
    /* Someone took it after we let go: our courtesy is over. */
    pthread_mutex_lock (&l->lock);
    l->yield_until_ms = 0;
    pthread_mutex_unlock (&l->lock);
    r = store_lock_get (l->st, l->hdr, LEASE_LOCK_NAME, &info);
    if (r == -ENOENT)
      continue;
    if (r < 0)
      return r;
    desc_host (info.desc, prev_host, sizeof prev_host);

    char key[sizeof asked_key];
    snprintf (key, sizeof key, "%s/%s", info.client, info.cookie);
    if (strcmp (key, asked_key) != 0) {
      /* A holder we have not dealt with yet. */
      snprintf (asked_key, sizeof asked_key, "%s", key);
      asked = false;
      answered = true;
    }
    switch (lease_sm_busy (&l->sm, now_wall_ms (), info.expires_ms, asked,
                           answered)) {
    case LEASE_BUSY_ASK:
      r = ask_holder (l, &info, false);
      if (r < 0)
        return r;
      if (r == 1) {
        asked = true;
        poll_ms = 1;
        poll_start = now_mono_ns ();
      }
      else {
        answered = false;
        log_warn ("lease %s: holder %s does not answer; waiting for its "
                  "lease to run out", l->hdr, prev_host);
        /* Its lease may be longer than ours (vbk's own short-lived
         * leases have the default duration): wait for the one it has,
         * once per holder, so a holder that keeps renewing without
         * answering still ends the wait. */
        {
          uint64_t now_w = now_wall_ms ();
          uint64_t remain = info.expires_ms > now_w
            ? info.expires_ms - now_w : 0;
          uint64_t need = now_mono_ns ()
            + (remain + VBK_LEASE_TAKEOVER_MARGIN_MS
               + VBK_LEASE_ACQUIRE_SLACK_MS) * 1000000;
          if (need > deadline)
            deadline = need;
        }
      }
      break;
    case LEASE_BUSY_POLL:
      sleep_ms (poll_ms);
      poll_ms = MIN (poll_ms * 2, 20u);
      /* It agreed but still holds it after a while: it may have taken
       * it back; ask again. */
      if (now_mono_ns () - poll_start
          > (uint64_t) VBK_HANDOFF_REASK_MS * 1000000 && answered) {
        asked = false;
        snprintf (asked_key, sizeof asked_key, "%s", "");
      }
      /* A holder that agreed but does not let go within a lease
       * duration is treated as silent. */
      if (now_mono_ns () - poll_start
          > (uint64_t) l->sm.duration_ms * 1000000) {
        asked = false;
        answered = false;
      }
      break;
    case LEASE_BUSY_WAIT:
      sleep_ms (100);
      break;
    case LEASE_BUSY_TAKEOVER:
      log_warn ("lease %s: taking over from %s (%s): its lease ran out; "
                "fencing it", l->hdr, prev_host, info.client);
      r = store_fence (l->st, info.client, VBK_LEASE_FENCE_EXPIRE_S);
      if (r < 0)
        return r;
      r = store_lock_break (l->st, l->hdr, LEASE_LOCK_NAME, info.client,
                            info.cookie);
      if (r < 0 && r != -ENOENT)
        return r;
      break;
    }
  }

  /* We hold the lock.  A holder that never released cleanly (it died,
   * or stopped until its lease ran out) may still have writes on their
   * way: fence it before anything of ours is written. */
  {
    char prev[STORE_CLIENT_MAX];
    ssize_t n = store_xattr_get (l->st, l->hdr, "lease_holder", prev,
                                 sizeof prev - 1);
    log_debug ("lease %s: previous holder record: %zd (%.*s), we are %s",
               l->hdr, n, n > 0 ? (int) n : 0, prev, store_client_id (l->st));
    if (n > 0) {
      prev[MIN ((size_t) n, sizeof prev - 1)] = '\0';
      if (strcmp (prev, store_client_id (l->st)) != 0) {
        log_warn ("lease %s: the previous holder %s did not release; "
                  "fencing it", l->hdr, prev);
        r = store_fence (l->st, prev, VBK_LEASE_FENCE_EXPIRE_S);
        if (r < 0) {
          store_unlock (l->st, l->hdr, LEASE_LOCK_NAME, l->cookie);
          return r;
        }
      }
    }
    r = store_xattr_set (l->st, l->hdr, "lease_holder",
                         store_client_id (l->st),
                         strlen (store_client_id (l->st)));
    if (r < 0) {
      store_unlock (l->st, l->hdr, LEASE_LOCK_NAME, l->cookie);
      return r;
    }
  }

  /* The epoch and the hand-off log are ours to write. */
  epoch = xattr_u64 (l->st, l->hdr, "lease_epoch") + 1;
  r = set_u64 (l->st, l->hdr, "lease_epoch", epoch);
  if (r < 0) {
    store_unlock (l->st, l->hdr, LEASE_LOCK_NAME, l->cookie);
    return r;
  }
  if (prev_host[0] && strcmp (prev_host, l->host) != 0) {
    bool bounce = note_handoff (l, prev_host);
    pthread_mutex_lock (&l->lock);
    if (bounce)
      l->sm.conflict = true;
    l->sm.handoffs++;
    pthread_mutex_unlock (&l->lock);
  }
  *epoch_out = epoch;
  *sent_out = sent;
  return 0;
}

/* ---- Taking the lease again after a lapse ----------------------------- */

/* Our lock ran out on the store (see DESIGN): takes it again.  Returns 0
 * with the header's epoch in *HEADER_EPOCH and the send of the request
 * that took it in *SENT (monotonic ms); if the epoch is still MINE it
 * has already written MINE + 1 (*NEW_EPOCH).  -ESTALE if the holder
 * record is no longer ours; other errors are those of the store. */
static int
retake (struct lease *l, uint64_t mine, uint64_t *header_epoch,
        uint64_t *new_epoch, uint64_t *sent)
{
  char desc[2 * STORE_NAME_MAX + 16], buf[STORE_CLIENT_MAX];
  const char *me = store_client_id (l->st);
  ssize_t n;
  int r;

  snprintf (desc, sizeof desc, "host=%s addr=%s", l->host, l->addr);
  *sent = mono_ms ();
  r = store_lock (l->st, l->hdr, LEASE_LOCK_NAME, l->cookie, desc,
                  l->sm.duration_ms, 0);
  if (r == -EEXIST) {
    /* Ours already (an attempt that failed after taking it). */
    *sent = mono_ms ();
    r = store_lock (l->st, l->hdr, LEASE_LOCK_NAME, l->cookie, desc,
                    l->sm.duration_ms, STORE_LOCK_RENEW);
  }
  if (r < 0)
    return r;
  n = store_xattr_get (l->st, l->hdr, "lease_holder", buf, sizeof buf - 1);
  if (n < 0 && n != -ENODATA)
    return (int) n;
  buf[n > 0 ? MIN ((size_t) n, sizeof buf - 1) : 0] = '\0';
  if (strcmp (buf, me) != 0) {
    log_error ("lease %s: after the lapse the holder record is '%s', not "
               "us (%s)", l->hdr, buf, me);
    return -ESTALE;
  }
  n = store_xattr_get (l->st, l->hdr, "lease_epoch", buf, sizeof buf - 1);
  if (n < 0 && n != -ENODATA)
    return (int) n;
  buf[n > 0 ? MIN ((size_t) n, sizeof buf - 1) : 0] = '\0';
  *header_epoch = strtoull (buf, NULL, 10);
  *new_epoch = *header_epoch;
  if (*header_epoch != mine)
    return 0;
  r = set_u64 (l->st, l->hdr, "lease_epoch", mine + 1);
  if (r < 0)
    return r;
  *new_epoch = mine + 1;
  return 0;
}

/* ---- The lease thread ------------------------------------------------- */

static void mark_lost (struct lease *l, int err);

/* Called with l->lock held, state RELEASING or HELD: waits for writes,
 * flushes, unlocks. */
static void
release_locked (struct lease *l)
{
  bool fenced = false;
  int r;

  l->sm.state = LEASE_RELEASING;
  pthread_cond_broadcast (&l->cond);
  while (l->inflight > 0)
    pthread_cond_wait (&l->cond, &l->lock);
  pthread_mutex_unlock (&l->lock);
  r = l->hooks.flush ? l->hooks.flush (l->arg) : 0;
  fenced |= r == -ESHUTDOWN;
  if (r < 0)
    log_error ("lease %s: flush before release failed: %s", l->hdr,
               vbk_error ());
  else {
    /* A clean release: the next holder need not fence us. */
    r = store_xattr_rm (l->st, l->hdr, "lease_holder");
    fenced |= r == -ESHUTDOWN;
    if (r < 0 && r != -ENODATA)
      log_warn ("lease %s: %s", l->hdr, vbk_error ());
  }
  r = store_unlock (l->st, l->hdr, LEASE_LOCK_NAME, l->cookie);
  fenced |= r == -ESHUTDOWN;
  if (r < 0 && r != -ENOENT)
    log_warn ("lease %s: unlock: %s", l->hdr, vbk_error ());
  pthread_mutex_lock (&l->lock);
  l->release_pending = false;
  if (fenced || l->sm.state == LEASE_LOST) {
    /* The request to release reached us after the requester had
     * already fenced us (we were stopped or cut off): this is a lost
     * lease, not a release, and the export must say so. */
    mark_lost (l, -ESHUTDOWN);
    return;
  }
  lease_sm_released (&l->sm);
  log_info ("lease %s: released", l->hdr);
  pthread_cond_broadcast (&l->cond);
}

static void
mark_lost (struct lease *l, int err)
{
  l->sm.state = LEASE_LOST;
  pthread_cond_broadcast (&l->cond);
  if (l->lost_told)
    return;             /* once: the watch and a release may both find
                           that we were fenced */
  l->lost_told = true;
  snprintf (l->errmsg, sizeof l->errmsg, "lease %s: lost (%s): writes "
            "refused", l->hdr, strerror (-err));
  log_error ("%s", l->errmsg);
  pthread_cond_broadcast (&l->cond);
  if (l->hooks.lost) {
    pthread_mutex_unlock (&l->lock);
    l->hooks.lost (l->arg, err);
    pthread_mutex_lock (&l->lock);
  }
}

static void *
lease_thread (void *arg)
{
  struct lease *l = arg;
  uint64_t epoch = 0, sent = 0;
  int r;

  pthread_mutex_lock (&l->lock);
  for (;;) {
    uint64_t now = mono_ms (), wake;
    struct timespec ts;

    if (l->stop) {
      if (l->sm.state == LEASE_HELD || l->sm.state == LEASE_RELEASING)
        release_locked (l);
      break;
    }
    if (l->release_pending && l->sm.state == LEASE_RELEASING
        && l->quiesced == 0) {
      release_locked (l);
      continue;
    }
    if (l->want > 0 && l->requested_gen == l->acquire_gen
        && l->sm.state == LEASE_NONE) {
      l->sm.state = LEASE_ACQUIRING;
      pthread_mutex_unlock (&l->lock);
      vbk_clear_error ();
      r = acquire (l, &epoch, &sent);
      if (r == 0 && l->hooks.acquired)
        r = l->hooks.acquired (l->arg, epoch);
      pthread_mutex_lock (&l->lock);
      if (r == 0) {
        l->acquire_err = 0;
        /* From the send of the lock request, not from now: the hook
         * may have taken a while, and the store counts from then. */
        lease_sm_acquired (&l->sm, sent, epoch);
        log_info ("lease %s: acquired, epoch %" PRIu64, l->hdr, epoch);
      }
      else {
        /* The lock may be ours already (the hook failed): give it back
         * rather than leave it to expire. */
        snprintf (l->errmsg, sizeof l->errmsg, "%s", vbk_error ());
        if (r != -ECANCELED && r != -EAGAIN && r != -ESHUTDOWN)
          store_unlock (l->st, l->hdr, LEASE_LOCK_NAME, l->cookie);
        l->acquire_err = r;
        log_error ("%s", l->errmsg);
        if (r == -ESHUTDOWN)
          mark_lost (l, r);     /* fenced: the export must learn of it */
        else
          l->sm.state = LEASE_NONE;
      }
      l->acquire_gen++;
      pthread_cond_broadcast (&l->cond);
      continue;
    }
    switch (lease_sm_tick (&l->sm, now)) {
    case LEASE_ACT_RENEW: {
      char desc[2 * STORE_NAME_MAX + 16];
      snprintf (desc, sizeof desc, "host=%s addr=%s", l->host, l->addr);
      pthread_mutex_unlock (&l->lock);
      sent = mono_ms ();
      r = store_lock (l->st, l->hdr, LEASE_LOCK_NAME, l->cookie, desc,
                      l->sm.duration_ms, STORE_LOCK_RENEW);
      pthread_mutex_lock (&l->lock);
      if (r == 0) {
        lease_sm_renewed (&l->sm, sent, mono_ms ());
        if (l->sm.state == LEASE_LAPSED)
          log_warn ("lease %s: the renewal was answered only after the "
                    "lease it gives had ended; writes wait while we take "
                    "it again", l->hdr);
        /* Writers held at the write-stop may go on. */
        pthread_cond_broadcast (&l->cond);
      }
      else {
        log_warn ("lease %s: renewal failed: %s", l->hdr, strerror (-r));
        lease_sm_renew_failed (&l->sm, mono_ms (), r);
        if (l->sm.state == LEASE_LOST)
          mark_lost (l, r);
        else if (l->sm.state == LEASE_LAPSED)
          log_warn ("lease %s: our lock ran out while it could not be "
                    "renewed; writes wait while we take it again",
                    l->hdr);
      }
      continue;
    }
    case LEASE_ACT_RETAKE: {
      uint64_t mine = l->sm.epoch, header_epoch = 0, new_epoch = 0;
      pthread_mutex_unlock (&l->lock);
      r = retake (l, mine, &header_epoch, &new_epoch, &sent);
      pthread_mutex_lock (&l->lock);
      if (r == 0 && lease_sm_retaken (&l->sm, sent, mono_ms (),
                                      header_epoch, new_epoch)) {
        log_info ("lease %s: taken again after the lapse, nobody held it "
                  "meanwhile; epoch %" PRIu64, l->hdr, new_epoch);
        pthread_cond_broadcast (&l->cond);
      }
      else if (r == 0 && l->sm.state == LEASE_LAPSED)
        log_warn ("lease %s: taken again with epoch %" PRIu64 ", but the "
                  "lease that gives had ended before the answer came; "
                  "taking it once more", l->hdr, new_epoch);
      else if (r == 0 || r == -ESTALE) {
        if (r == 0)
          log_error ("lease %s: after the lapse the epoch is %" PRIu64
                     ", not ours (%" PRIu64 "): another host held the "
                     "lease", l->hdr, header_epoch, mine);
        l->sm.state = LEASE_LOST;
        pthread_mutex_unlock (&l->lock);
        store_unlock (l->st, l->hdr, LEASE_LOCK_NAME, l->cookie);
        pthread_mutex_lock (&l->lock);
        mark_lost (l, -ENOENT);
      }
      else {
        log_warn ("lease %s: taking the lease again failed: %s", l->hdr,
                  strerror (-r));
        lease_sm_retake_failed (&l->sm, mono_ms (), r);
        if (l->sm.state == LEASE_LOST)
          mark_lost (l, r);
      }
      continue;
    }
    case LEASE_ACT_EXPIRED:
      mark_lost (l, -ETIMEDOUT);
      continue;
    case LEASE_ACT_NONE:
      break;
    }
    wake = now + 100;
    if (l->sm.state == LEASE_HELD)
      wake = MIN (wake, l->sm.renew_at_ms);
    clock_gettime (CLOCK_MONOTONIC, &ts);
    {
      uint64_t ms = wake > now ? wake - now : 1;
      ts.tv_sec += ms / 1000;
      ts.tv_nsec += (long) (ms % 1000) * 1000000;
      if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
      }
    }
    pthread_cond_timedwait (&l->cond, &l->lock, &ts);
  }
  pthread_mutex_unlock (&l->lock);
  return NULL;
}

/* ---- Watch: answering release requests -------------------------------- */

static void *
cmd_thread (void *arg)
{
  struct lease *l = arg;

  pthread_mutex_lock (&l->cmd_lock);
  for (;;) {
    while (l->cmd == NULL && !l->cmd_stop)
      pthread_cond_wait (&l->cmd_cond, &l->cmd_lock);
    if (l->cmd_stop)
      break;
    pthread_mutex_unlock (&l->cmd_lock);
    size_t n = l->hooks.command (l->arg, l->cmd, l->cmd_len, l->cmd_reply,
                                 l->cmd_reply_max);
    pthread_mutex_lock (&l->cmd_lock);
    l->cmd_reply_len = MIN (n, l->cmd_reply_max);
    l->cmd = NULL;
    l->cmd_done = true;
    pthread_cond_broadcast (&l->cmd_cond);
  }
  pthread_mutex_unlock (&l->cmd_lock);
  return NULL;
}

/* Runs a command on the command thread and waits for its answer. */
static void
run_command (struct lease *l, const void *payload, size_t len, void *reply,
             size_t reply_max, size_t *reply_len)
{
  pthread_mutex_lock (&l->cmd_lock);
  while (l->cmd != NULL && !l->cmd_stop)
    pthread_cond_wait (&l->cmd_cond, &l->cmd_lock);
  if (l->cmd_stop) {
    pthread_mutex_unlock (&l->cmd_lock);
    return;
  }
  l->cmd = payload;
  l->cmd_len = len;
  l->cmd_reply = reply;
  l->cmd_reply_max = reply_max;
  l->cmd_done = false;
  pthread_cond_broadcast (&l->cmd_cond);
  while (!l->cmd_done && !l->cmd_stop)
    pthread_cond_wait (&l->cmd_cond, &l->cmd_lock);
  if (l->cmd_done) {
    *reply_len = l->cmd_reply_len;
    l->cmd_done = false;
  }
  pthread_cond_broadcast (&l->cmd_cond);
  pthread_mutex_unlock (&l->cmd_lock);
}

static void
on_notify (void *arg, int err, const void *payload, size_t len,
           void *reply, size_t reply_max, size_t *reply_len)
{
  struct lease *l = arg;
  struct release_request q;
  enum lease_answer ans;
  int n;

  pthread_mutex_lock (&l->lock);
  if (err) {
    /* Fenced, or only disconnected (an outage long enough for the store
     * to drop the watch: RADOS reports both as -ENOTCONN).  The watch
     * thread makes a new watch; a fenced client's attempt fails with
     * -ESHUTDOWN, and only that loses the lease (as does a renewal that
     * fails so, whichever comes first). */
    if (!l->watch_broken)
      log_warn ("lease %s: the watch on the header broke (%s); making a "
                "new one", l->hdr, strerror (-err));
    l->watch_broken = true;
    pthread_cond_broadcast (&l->cond);
    pthread_mutex_unlock (&l->lock);
    return;
  }
  if (!parse_request (payload, len, &q)) {
    pthread_mutex_unlock (&l->lock);
    if (l->hooks.command)
      run_command (l, payload, len, reply, reply_max, reply_len);
    return;
  }
  /* A request for another holder's lease is stale like one for another
   * epoch (lease_sm_release_request); one that names no holder is
   * judged by its epoch alone. */
  if (q.named && q.holder[0] && strcmp (q.holder, l->cookie) != 0
      && (l->sm.state == LEASE_HELD || l->sm.state == LEASE_RELEASING))
    ans = LEASE_ANS_STALE;
  else
    ans = lease_sm_release_request (&l->sm, q.explicit != 0, q.named,
                                    q.epoch);
  switch (ans) {
  case LEASE_ANS_RELEASING:
    l->release_pending = true;
    l->yield_until_ms = mono_ms () + VBK_HANDOFF_YIELD_MS;
    if (q.named)
      log_info ("lease %s: %s asks for the lease%s (epoch %" PRIu64 "); "
                "releasing", l->hdr, q.from,
                q.explicit ? " (operator)" : "", q.epoch);
    else
      log_info ("lease %s: %s asks for the lease%s, naming no epoch (an "
                "older vbk); releasing epoch %" PRIu64, l->hdr, q.from,
                q.explicit ? " (operator)" : "", l->sm.epoch);
    n = snprintf (reply, reply_max, "releasing");
    break;
  case LEASE_ANS_STALE:
    /* Delivered late or twice: the lease it was about has ended. */
    log_info ("lease %s: ignored a release request of %s%s for epoch %"
              PRIu64 " of %s: we hold epoch %" PRIu64 " as %s", l->hdr,
              q.from, q.explicit ? " (operator)" : "", q.epoch,
              q.holder[0] ? q.holder : "?", l->sm.epoch, l->cookie);
    n = snprintf (reply, reply_max, "stale: epoch %" PRIu64, l->sm.epoch);
    break;
  case LEASE_ANS_NOT_HOLDER:
    n = snprintf (reply, reply_max, "not-holder");
    break;
  case LEASE_ANS_EXCLUSIVE:
    log_warn ("lease %s: refused hand-off to %s: exclusive", l->hdr,
              q.from);
    n = snprintf (reply, reply_max, "refused: %s holds it exclusively "
                  "(use 'vbk lease release')", l->host);
    break;
  case LEASE_ANS_CONFLICT:
  default:
    log_warn ("lease %s: refused hand-off to %s: two writers", l->hdr,
              q.from);
    n = snprintf (reply, reply_max, "refused: the lease bounced between "
                  "hosts too often (two writers?); see 'vbk lease status'");
    break;
  }
  *reply_len = MIN ((size_t) n, reply_max);
  pthread_cond_broadcast (&l->cond);
  pthread_mutex_unlock (&l->lock);
}

static int
watch_start (struct lease *l)
{
  struct store_watch *w;
  int r = store_watch (l->st, l->hdr, on_notify, l, &w);

  if (r == 0)
    l->watch = w;
  return r;
}

/* Re-creates the watch whenever it breaks, apart from the lease thread:
 * renewals go on while a new watch waits for the store.  Until the new
 * watch stands, requests to this holder (hand-offs, snapshot commands)
 * go unanswered, as they would in the outage itself; requesters wait or
 * retry.  Attempts are spaced from WATCH_RETRY_MIN_MS up to
 * WATCH_RETRY_MAX_MS apart. */
#define WATCH_RETRY_MIN_MS 100u
#define WATCH_RETRY_MAX_MS 2000u

static void *
watch_thread (void *arg)
{
  struct lease *l = arg;
  unsigned retry_ms = WATCH_RETRY_MIN_MS;
  struct store_watch *old;
  struct timespec ts;
  int r;

  pthread_mutex_lock (&l->lock);
  while (!l->watch_stop) {
    if (!l->watch_broken || l->sm.state == LEASE_LOST) {
      pthread_cond_wait (&l->cond, &l->lock);
      continue;
    }
    l->watch_broken = false;
    old = l->watch;
    l->watch = NULL;
    pthread_mutex_unlock (&l->lock);
    store_unwatch (old);
    r = watch_start (l);
    pthread_mutex_lock (&l->lock);
    if (r == 0) {
      log_info ("lease %s: watch re-created", l->hdr);
      retry_ms = WATCH_RETRY_MIN_MS;
      continue;
    }
    if (r == -ESHUTDOWN
        && (l->sm.state == LEASE_HELD || l->sm.state == LEASE_RELEASING
            || l->sm.state == LEASE_LAPSED)) {
      /* Fenced: the lease is gone (an acquisition under way finds out
       * by itself). */
      mark_lost (l, -ESHUTDOWN);
      continue;
    }
    log_warn ("lease %s: re-creating the watch failed: %s; retrying",
              l->hdr, strerror (-r));
    l->watch_broken = true;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    ts.tv_sec += retry_ms / 1000;
    ts.tv_nsec += (long) (retry_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    retry_ms = MIN (2 * retry_ms, WATCH_RETRY_MAX_MS);
    /* Woken early by anything that changes the lease; only stop or the
     * end of the wait matter here. */
    while (!l->watch_stop
           && pthread_cond_timedwait (&l->cond, &l->lock, &ts) == 0)
      ;
  }
  pthread_mutex_unlock (&l->lock);
  return NULL;
}

/* ---- Public: the lease on an image ------------------------------------ */

static void
stop_cmd_thread (struct lease *l)
{
  if (!l->hooks.command || !l->cmd_thread)
    return;
  pthread_mutex_lock (&l->cmd_lock);
  l->cmd_stop = true;
  pthread_cond_broadcast (&l->cmd_cond);
  pthread_mutex_unlock (&l->cmd_lock);
  pthread_join (l->cmd_thread, NULL);
  l->cmd_thread = 0;
}

/* Stops the watch thread; l->watch is then the caller's (it may be NULL
 * if the store did not answer the last attempt). */
static void
stop_watch_thread (struct lease *l)
{
  pthread_mutex_lock (&l->lock);
  l->watch_stop = true;
  pthread_cond_broadcast (&l->cond);
  pthread_mutex_unlock (&l->lock);
  pthread_join (l->wthread, NULL);
}

int
lease_open (struct store *st, const char *hdr_oid,
            const struct lease_opts *opts, const struct lease_hooks *hooks,
            void *arg, struct lease **out)
{
  struct lease *l;
  unsigned rnd;
  int r;

  if (opts == NULL || opts->host_id == NULL || opts->host_id[0] == '\0') {
    vbk_set_error ("lease: a host id is needed");
    return -EINVAL;
  }
  l = calloc (1, sizeof *l);
  if (l == NULL)
    return -ENOMEM;
  l->st = st;
  snprintf (l->hdr, sizeof l->hdr, "%s", hdr_oid);
  snprintf (l->host, sizeof l->host, "%s", opts->host_id);
  snprintf (l->addr, sizeof l->addr, "%s", opts->addr ? opts->addr : "-");
  rnd = (unsigned) (now_mono_ns () ^ (uint64_t) getpid () << 16);
  snprintf (l->cookie, sizeof l->cookie, "%s.%d.%08x", l->host,
            (int) getpid (), rnd);
  if (hooks)
    l->hooks = *hooks;
  l->arg = arg;
  lease_sm_init (&l->sm, opts->duration_ms, opts->exclusive,
                 opts->bounce_limit, opts->bounce_window_ms);
  l->acquire_timeout_ms = opts->acquire_timeout_ms
    ? opts->acquire_timeout_ms
    : 3 * l->sm.duration_ms + VBK_LEASE_ACQUIRE_SLACK_MS;
  l->no_handoff = opts->no_handoff;
  pthread_mutex_init (&l->lock, NULL);
  {
    pthread_condattr_t ca;
    pthread_condattr_init (&ca);
    pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
    pthread_cond_init (&l->cond, &ca);
    pthread_condattr_destroy (&ca);
  }
  pthread_mutex_init (&l->cmd_lock, NULL);
  pthread_cond_init (&l->cmd_cond, NULL);
  if (l->hooks.command
      && pthread_create (&l->cmd_thread, NULL, cmd_thread, l) != 0) {
    r = -EAGAIN;
    goto fail;
  }
  r = watch_start (l);
  if (r < 0)
    goto fail;
  if (pthread_create (&l->wthread, NULL, watch_thread, l) != 0) {
    store_unwatch (l->watch);
    r = -EAGAIN;
    goto fail;
  }
  if (pthread_create (&l->thread, NULL, lease_thread, l) != 0) {
    stop_watch_thread (l);
    store_unwatch (l->watch);
    r = -EAGAIN;
    goto fail;
  }
  *out = l;
  return 0;
fail:
  stop_cmd_thread (l);
  pthread_mutex_destroy (&l->lock);
  pthread_cond_destroy (&l->cond);
  free (l);
  return r;
}

void
lease_close (struct lease *l)
{
  if (l == NULL)
    return;
  pthread_mutex_lock (&l->lock);
  l->stop = true;
  pthread_cond_broadcast (&l->cond);
  pthread_mutex_unlock (&l->lock);
  pthread_join (l->thread, NULL);
  stop_watch_thread (l);
  store_unwatch (l->watch);
  stop_cmd_thread (l);
  pthread_mutex_destroy (&l->lock);
  pthread_cond_destroy (&l->cond);
  free (l);
}

/* Waits until the lease is HELD and writes may start (no quiesce, no
 * release under way); called with l->lock held. */
static int
wait_held_locked (struct lease *l)
{
  for (;;) {
    if (l->sm.state == LEASE_LOST) {
      vbk_set_error ("%s", l->errmsg[0] ? l->errmsg : "lease lost");
      return -EIO;
    }
    if (l->stop) {
      vbk_set_error ("lease %s: shutting down", l->hdr);
      return -ESHUTDOWN;
    }
    if (l->sm.state == LEASE_HELD && !l->release_pending) {
      if (lease_sm_may_write (&l->sm, mono_ms ()))
        return 0;
      /* Past the write-stop: wait for a renewal (the lease thread
       * broadcasts) or the loss; look again now and then, as the
       * renewal may have landed before we slept. */
      {
        struct timespec ts;
        clock_gettime (CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 50000000;
        if (ts.tv_nsec >= 1000000000) {
          ts.tv_sec++;
          ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait (&l->cond, &l->lock, &ts);
      }
      continue;
    }
    if (l->sm.state == LEASE_NONE || l->sm.state == LEASE_ACQUIRING) {
      uint64_t gen = l->acquire_gen;
      l->want++;
      l->requested_gen = gen;
      pthread_cond_broadcast (&l->cond);
      while (l->acquire_gen == gen && l->sm.state != LEASE_HELD
             && l->sm.state != LEASE_LOST && !l->stop)
        pthread_cond_wait (&l->cond, &l->lock);
      l->want--;
      /* Only a failed attempt fails the write; after a successful one
       * the lease may already have moved on: just look again. */
      if (l->acquire_gen != gen && l->acquire_err < 0
          && l->sm.state != LEASE_HELD && l->sm.state != LEASE_LOST) {
        vbk_set_error ("%s", l->errmsg);
        return l->acquire_err == -EBUSY || l->acquire_err == -EAGAIN
          || l->acquire_err == -ETIMEDOUT ? l->acquire_err : -EIO;
      }
      continue;
    }
    /* RELEASING, or a release is pending: wait for it to finish, then
     * ask for the lease back. */
    pthread_cond_wait (&l->cond, &l->lock);
  }
}

int
lease_write_begin (struct lease *l)
{
  int r;

  pthread_mutex_lock (&l->lock);
  for (;;) {
    r = wait_held_locked (l);
    if (r < 0 || l->quiesced == 0)
      break;
    pthread_cond_wait (&l->cond, &l->lock);
  }
  if (r == 0)
    l->inflight++;
  pthread_mutex_unlock (&l->lock);
  return r;
}

void
lease_write_end (struct lease *l)
{
  pthread_mutex_lock (&l->lock);
  /* Wake only someone waiting for the writes to drain: waking the lease
   * thread after every write would cost a context switch each. */
  if (--l->inflight == 0
      && (l->sm.state == LEASE_RELEASING || l->quiesced > 0 || l->stop))
    pthread_cond_broadcast (&l->cond);
  pthread_mutex_unlock (&l->lock);
}

int
lease_quiesce (struct lease *l)
{
  int r;

  pthread_mutex_lock (&l->lock);
  r = wait_held_locked (l);
  if (r == 0) {
    l->quiesced++;
    while (l->inflight > 0)
      pthread_cond_wait (&l->cond, &l->lock);
  }
  pthread_mutex_unlock (&l->lock);
  return r;
}

void
lease_resume (struct lease *l)
{
  pthread_mutex_lock (&l->lock);
  if (l->quiesced > 0)
    l->quiesced--;
  pthread_cond_broadcast (&l->cond);
  pthread_mutex_unlock (&l->lock);
}

enum lease_state
lease_state (struct lease *l)
{
  enum lease_state s;

  pthread_mutex_lock (&l->lock);
  s = l->sm.state;
  pthread_mutex_unlock (&l->lock);
  return s;
}

uint64_t
lease_epoch (struct lease *l)
{
  uint64_t e;

  pthread_mutex_lock (&l->lock);
  e = l->sm.epoch;
  pthread_mutex_unlock (&l->lock);
  return e;
}

struct store *
lease_store (struct lease *l)
{
  return l->st;
}

/* ---- Operator side ---------------------------------------------------- */

int
lease_status_get (struct store *st, const char *hdr_oid,
                  struct lease_status *s)
{
  struct store_lock_info info;
  uint64_t size;
  ssize_t n;
  int r;

  memset (s, 0, sizeof *s);
  r = store_stat (st, hdr_oid, STORE_SNAP_HEAD, &size);
  if (r < 0)
    return r;
  r = store_lock_get (st, hdr_oid, LEASE_LOCK_NAME, &info);
  if (r == 0) {
    const char *a = strstr (info.desc, "addr=");
    s->held = true;
    desc_host (info.desc, s->host, sizeof s->host);
    snprintf (s->addr, sizeof s->addr, "%s", a ? a + 5 : "-");
    s->addr[strcspn (s->addr, " ")] = '\0';
    snprintf (s->client, sizeof s->client, "%s", info.client);
    snprintf (s->cookie, sizeof s->cookie, "%s", info.cookie);
    s->expires_ms = info.expires_ms;
  }
  else if (r != -ENOENT)
    return r;
  vbk_clear_error ();
  s->epoch = xattr_u64 (st, hdr_oid, "lease_epoch");
  s->handoffs = xattr_u64 (st, hdr_oid, "lease_handoffs");
  n = store_xattr_get (st, hdr_oid, "lease_conflict", s->conflict,
                       sizeof s->conflict - 1);
  s->conflict[n > 0 ? MIN ((size_t) n, sizeof s->conflict - 1) : 0] = '\0';
  return 0;
}

int
lease_request_release (struct store *st, const char *hdr_oid,
                       uint32_t timeout_ms)
{
  uint64_t deadline = now_mono_ns () + (uint64_t) timeout_ms * 1000000;
  uint64_t reask_at = 0;        /* monotonic ns; 0: none due */
  struct store_lock_info info;
  bool asked = false;
  int r;

  for (;;) {
    uint64_t now;

    r = store_lock_get (st, hdr_oid, LEASE_LOCK_NAME, &info);
    if (r == -ENOENT) {
      clear_conflict (st, hdr_oid);
      vbk_clear_error ();
      return 0;
    }
    if (r < 0)
      return r;
    now = now_mono_ns ();
    if (now >= deadline)
      break;
    /* Ask the holder seen just now about the epoch on the header now.
     * Asked again only if it answered that it holds another epoch or
     * none yet (it was taking the lock when we read): a holder that
     * agreed, or that is silent, is only polled. */
    if (!asked || (reask_at && now >= reask_at)) {
      uint32_t left = (uint32_t) ((deadline - now) / 1000000) + 1;
      r = send_request (st, hdr_oid, "operator", true, &info,
                        xattr_u64 (st, hdr_oid, "lease_epoch"),
                        MIN (left, (uint32_t) NOTIFY_TIMEOUT_MS), NULL, 0);
      if (r < 0)
        return r;
      asked = true;
      reask_at = r == ANSWER_AGAIN
        ? now_mono_ns () + (uint64_t) VBK_HANDOFF_REASK_MS * 1000000 : 0;
      continue;
    }
    sleep_ms (20);
  }
  vbk_set_error ("lease %s: the holder did not release within %u ms "
                 "(if its host is dead: vbk lease break)", hdr_oid,
                 timeout_ms);
  return -ETIMEDOUT;
}

int
lease_break (struct store *st, const char *hdr_oid)
{
  struct store_lock_info info;
  int r;

  r = store_lock_get (st, hdr_oid, LEASE_LOCK_NAME, &info);
  if (r == -ENOENT) {
    clear_conflict (st, hdr_oid);
    vbk_set_error ("lease %s: nobody holds it", hdr_oid);
    return -ENOENT;
  }
  if (r < 0)
    return r;
  r = store_fence (st, info.client, VBK_LEASE_FENCE_EXPIRE_S);
  if (r < 0)
    return r;
  r = store_lock_break (st, hdr_oid, LEASE_LOCK_NAME, info.client,
                        info.cookie);
  if (r < 0 && r != -ENOENT)
    return r;
  clear_conflict (st, hdr_oid);
  vbk_clear_error ();
  return 0;
}
