/* SPDX-License-Identifier: MIT
 *
 * snapshot.c - crash-consistent snapshots and consistency groups (see
 * snapshot.h for the protocol).
 *
 * DESIGN
 * The consistency argument: lease_quiesce returns once no write is in
 * flight and none may start, so every write acknowledged before the
 * request has completed; image_flush makes them durable; the snapshot is
 * recorded before lease_resume lets a new write start.  What is read
 * before the pause (image_snap_prepare) is still true inside it as long
 * as the lease did not change hands in between (commands run one at a
 * time, on the holder): snap_take checks the lease's epoch and prepares
 * again, writes held, if it moved.  A group freezes
 * every image first and snapshots them only when all are frozen, so all
 * snapshots hold the same instant.  A holder that stays frozen because
 * its requester died thaws itself after the freeze's timeout.  That
 * timeout is watched by a thread of the snap server's own (thaw_timer),
 * not an item of common/workq.c: it is a clock that must fire while
 * everything else may be waiting on the frozen image, and a timed wait
 * on its own condition needs no queue (a workq runs work, not timers).
 *
 * Serialization: every command that changes an image's snapshots or
 * size (create, remove, resize) runs in one place, serialized(): sent to
 * the holder, whose lease runs commands one at a time, or run here
 * under a temporary lease taken only if nobody holds it (no_handoff),
 * which answers other requesters "busy" until it lets go.  A removal
 * rewrites the next interval's merged changes and a creation moves the
 * live interval's; a resize cuts objects under the snapshot context it
 * loaded: none of them may interleave.  A diff cannot be serialized
 * that way (it reads on the requester's side), so it checks instead:
 * the snapshots must be the same before and after it read the logs.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "common/log.h"
#include "common/timeouts.h"
#include "common/util.h"
#include "snapshot.h"

#define DEFAULT_TIMEOUT_MS VBK_SNAP_CMD_TIMEOUT_MS
#define FREEZE_TIMEOUT_MS VBK_SNAP_FREEZE_TIMEOUT_MS

/* ---- Holder side ------------------------------------------------------ */

struct snap_server {
  struct image *img;
  struct lease *lease;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool frozen;
  char token[64];
  uint64_t thaw_at_ms;             /* monotonic */
  bool stop;
  pthread_t timer;
};

int
snap_take (struct image *img, struct lease *lease, const char *name,
           uint64_t *id, uint64_t *pause_us)
{
  struct image_snap_prep *prep;
  uint64_t t0, t1, t2, t3, sid, epoch;
  int r;

  /* Outside the pause: the snapshot id (a monitor round trip on RADOS),
   * the checks and reads of image_snap_prepare, and a first flush, so
   * the one inside has little left to do.  Inside: the drain of the
   * writes in flight, the flush, the record (image.h). */
  epoch = lease ? lease_epoch (lease) : 0;
  r = image_snap_alloc (img, &sid);
  if (r < 0)
    return r;
  r = image_snap_prepare (img, name, sid, &prep);
  if (r < 0)
    return r;
  image_flush (img);
  t0 = now_mono_ns ();
  if (lease) {
    r = lease_quiesce (lease);
    if (r < 0) {
      VBK_KEEP_ERROR_FOR_SCOPE;
      image_snap_finish (img, prep);
      return r;
    }
    if (lease_epoch (lease) != epoch) {
      /* The lease changed hands since we prepared (a hand-off, or we
       * took it only now): another holder may have changed the
       * snapshots meanwhile, and taken ids after ours.  Prepare again,
       * writes held. */
      image_snap_finish (img, prep);
      r = image_snap_alloc (img, &sid);
      if (r == 0)
        r = image_snap_prepare (img, name, sid, &prep);
      if (r < 0) {
        lease_resume (lease);
        return r;
      }
    }
  }
  t1 = now_mono_ns ();
  r = image_flush (img);
  t2 = now_mono_ns ();
  if (r == 0)
    r = image_snap_record (img, prep);
  if (lease)
    lease_resume (lease);
  t3 = now_mono_ns ();
  /* What the pause is made of: the drain of the writes in flight, the
   * flush, the snapshot's records (bench/snapshot-pause-bench.sh). */
  log_info ("snapshot %s: writes held %.3f ms: drain %.3f, flush %.3f, "
            "record %.3f", name, (t3 - t0) / 1e6, (t1 - t0) / 1e6,
            (t2 - t1) / 1e6, (t3 - t2) / 1e6);
  if (pause_us)
    *pause_us = (t3 - t0) / 1000;
  if (r < 0) {
    VBK_KEEP_ERROR_FOR_SCOPE;
    image_snap_finish (img, prep);
    return r;
  }
  r = image_snap_finish (img, prep);
  if (r == 0 && id)
    *id = sid;
  return r;
}

/* Thaws a freeze whose requester never came back. */
static void *
thaw_timer (void *arg)
{
  struct snap_server *s = arg;

  pthread_mutex_lock (&s->lock);
  while (!s->stop) {
    struct timespec ts;
    if (s->frozen && now_mono_ns () / 1000000 >= s->thaw_at_ms) {
      log_warn ("snapshot: freeze %s timed out; thawing", s->token);
      s->frozen = false;
      lease_resume (s->lease);
      continue;
    }
    clock_gettime (CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += 100000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait (&s->cond, &s->lock, &ts);
  }
  pthread_mutex_unlock (&s->lock);
  return NULL;
}

struct snap_server *
snap_server_new (struct image *img, struct lease *lease)
{
  struct snap_server *s = calloc (1, sizeof *s);

  if (s == NULL)
    return NULL;
  s->img = img;
  s->lease = lease;
  pthread_mutex_init (&s->lock, NULL);
  {
    pthread_condattr_t ca;
    pthread_condattr_init (&ca);
    pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
    pthread_cond_init (&s->cond, &ca);
    pthread_condattr_destroy (&ca);
  }
  if (pthread_create (&s->timer, NULL, thaw_timer, s) != 0) {
    pthread_mutex_destroy (&s->lock);
    pthread_cond_destroy (&s->cond);
    free (s);
    return NULL;
  }
  return s;
}

void
snap_server_free (struct snap_server *s)
{
  if (s == NULL)
    return;
  pthread_mutex_lock (&s->lock);
  s->stop = true;
  if (s->frozen) {
    s->frozen = false;
    lease_resume (s->lease);
  }
  pthread_cond_broadcast (&s->cond);
  pthread_mutex_unlock (&s->lock);
  pthread_join (s->timer, NULL);
  pthread_mutex_destroy (&s->lock);
  pthread_cond_destroy (&s->cond);
  free (s);
}

/* An error answer: "error: errno=N WHY", so the requester gets the same
 * errno back. */
static size_t
error_reply (char *reply, size_t reply_max, int r)
{
  return (size_t) snprintf (reply, reply_max, "error: errno=%d %s", -r,
                            vbk_error ()[0] ? vbk_error () : strerror (-r));
}

static size_t
ok_reply (char *reply, size_t reply_max)
{
  return (size_t) snprintf (reply, reply_max, "ok");
}

/* With writes held: logs the parts this holder saw change (so that what
 * follows, a refresh or a diff, keeps them) and, if REFRESH, rereads
 * the header, snapshot context and map after another command changed
 * them. */
static int
hold_and (struct snap_server *s, int (*op) (struct snap_server *, void *),
          void *arg, bool refresh)
{
  int r, r2;

  r = lease_quiesce (s->lease);
  if (r < 0)
    return r;
  r = image_flush (s->img);
  if (r == 0)
    r = image_save_parts (s->img);
  if (r == 0 && op)
    r = op (s, arg);
  if (refresh && (r2 = image_refresh (s->img)) < 0 && r == 0)
    r = r2;
  lease_resume (s->lease);
  return r;
}

static int
do_resize (struct snap_server *s, void *arg)
{
  struct image_info info;

  image_get_info (s->img, &info);
  return image_resize (lease_store (s->lease), info.name, *(uint64_t *) arg);
}

size_t
snap_server_command (struct snap_server *s, const char *payload, size_t len,
                     char *reply, size_t reply_max)
{
  char cmd[512], a[256] = "", b[256] = "";
  uint64_t id = 0, pause = 0;
  unsigned long timeout = FREEZE_TIMEOUT_MS;
  unsigned long long size;
  struct image_info info;
  int r, n;

  snprintf (cmd, sizeof cmd, "%.*s", (int) MIN (len, sizeof cmd - 1),
            payload);
  if (lease_state (s->lease) != LEASE_HELD)
    return snprintf (reply, reply_max, "error: not the lease holder");
  vbk_clear_error ();

  if (sscanf (cmd, "snap-create %255s", a) == 1) {
    r = snap_take (s->img, s->lease, a, &id, &pause);
    if (r == 0) {
      log_info ("snapshot %s: taken (id %" PRIu64 "), writes held %"
                PRIu64 " us", a, id, pause);
      n = snprintf (reply, reply_max, "ok %" PRIu64 " %" PRIu64, id, pause);
    }
    else
      n = error_reply (reply, reply_max, r);
    return n;
  }
  if (sscanf (cmd, "snap-remove %255s", a) == 1) {
    image_get_info (s->img, &info);
    r = image_snap_remove (lease_store (s->lease), info.name, a);
    /* Our snapshot context still names it: write under the new one. */
    if (r == 0)
      r = hold_and (s, NULL, NULL, true);
    if (r == 0)
      log_info ("snapshot %s: removed", a);
    return r == 0 ? ok_reply (reply, reply_max)
      : error_reply (reply, reply_max, r);
  }
  if (sscanf (cmd, "resize %llu", &size) == 1) {
    uint64_t sz = size;
    r = hold_and (s, do_resize, &sz, true);
    if (r == 0)
      log_info ("image resized to %" PRIu64 " bytes", sz);
    return r == 0 ? ok_reply (reply, reply_max)
      : error_reply (reply, reply_max, r);
  }
  if (strcmp (cmd, "save-parts") == 0) {
    r = hold_and (s, NULL, NULL, false);
    return r == 0 ? ok_reply (reply, reply_max)
      : error_reply (reply, reply_max, r);
  }

  pthread_mutex_lock (&s->lock);
  if (sscanf (cmd, "freeze %63s %lu", a, &timeout) >= 1) {
    if (s->frozen)
      n = snprintf (reply, reply_max, "error: already frozen by %s",
                    s->token);
    else {
      pthread_mutex_unlock (&s->lock);
      r = lease_quiesce (s->lease);
      if (r == 0 && (r = image_flush (s->img)) < 0)
        lease_resume (s->lease);
      pthread_mutex_lock (&s->lock);
      if (r == 0) {
        s->frozen = true;
        snprintf (s->token, sizeof s->token, "%s", a);
        s->thaw_at_ms = now_mono_ns () / 1000000 + timeout;
        n = snprintf (reply, reply_max, "frozen");
      }
      else
        n = snprintf (reply, reply_max, "error: %s", vbk_error ());
    }
  }
  else if (sscanf (cmd, "snap-frozen %63s %255s", a, b) == 2) {
    if (!s->frozen || strcmp (s->token, a) != 0)
      n = snprintf (reply, reply_max, "error: not frozen for %s", a);
    else {
      r = image_snap_create (s->img, b, &id);
      n = r == 0 ? snprintf (reply, reply_max, "ok %" PRIu64, id)
        : snprintf (reply, reply_max, "error: %s", vbk_error ());
    }
  }
  else if (sscanf (cmd, "thaw %63s", a) == 1) {
    if (!s->frozen || strcmp (s->token, a) != 0)
      n = snprintf (reply, reply_max, "error: not frozen for %s", a);
    else {
      s->frozen = false;
      lease_resume (s->lease);
      n = snprintf (reply, reply_max, "thawed");
    }
  }
  else
    n = snprintf (reply, reply_max, "error: unknown command");
  pthread_mutex_unlock (&s->lock);
  return n;
}

/* ---- Requester side --------------------------------------------------- */

/* A temporary holder: vbk itself, when nobody holds the lease. */
struct temp_holder {
  struct image *img;
  struct lease *lease;
};

static int
temp_acquired (void *arg, uint64_t epoch)
{
  return image_set_trusted (arg, 1);
}

static int
temp_flush (void *arg)
{
  return image_flush (arg);
}

/* Another vbk asking us: it waits until we are done. */
static size_t
temp_command (void *arg, const char *payload, size_t len, char *reply,
              size_t reply_max)
{
  return snprintf (reply, reply_max, "error: busy: a vbk command holds "
                   "the lease for a moment");
}

static const struct lease_hooks temp_hooks = {
  .acquired = temp_acquired,
  .flush = temp_flush,
  .command = temp_command,
};

static int
temp_open (struct store *st, const char *image, const struct snap_opts *o,
           uint32_t takeover_ms, struct temp_holder *t)
{
  /* no_handoff: a holder that appeared since we looked is asked, not
   * robbed of the lease.  TAKEOVER_MS: the holder did not answer; take
   * the lease the way a writer does (ask it to let go, wait its lease
   * out, fence it), giving up after TAKEOVER_MS. */
  struct lease_opts lo = { .host_id = o && o->host_id ? o->host_id : "vbk",
                           .addr = "vbk-cli", .no_handoff = takeover_ms == 0,
                           .acquire_timeout_ms = takeover_ms };
  struct image_info info;
  char hdr[64];
  int r;

  memset (t, 0, sizeof *t);
  r = image_open (st, image, 0, &t->img);
  if (r < 0)
    return r;
  image_get_info (t->img, &info);
  image_header_oid (info.id, hdr, sizeof hdr);
  image_set_trusted (t->img, 0);
  r = lease_open (st, hdr, &lo, &temp_hooks, t->img, &t->lease);
  if (r < 0) {
    image_close (t->img);
    t->img = NULL;
  }
  return r;
}

static void
temp_close (struct temp_holder *t)
{
  lease_close (t->lease);
  image_close (t->img);
  t->lease = NULL;
  t->img = NULL;
}

/* Sends PAYLOAD to the watchers of HDR and copies the answer of CLIENT
 * into ANS.  -ETIMEDOUT if it did not answer. */
static int
ask (struct store *st, const char *hdr, const char *client,
     const char *payload, uint32_t timeout_ms, char *ans, size_t anslen)
{
  struct store_notify_reply *rep = NULL;
  size_t n = 0, timed_out = 0, i;
  int r;

  r = store_notify (st, hdr, payload, strlen (payload), timeout_ms, &rep, &n,
                    &timed_out);
  if (r < 0)
    return r;
  r = -ETIMEDOUT;
  for (i = 0; i < n; i++) {
    if (strcmp (rep[i].client, client) == 0) {
      snprintf (ans, anslen, "%.*s", (int) MIN (rep[i].len, anslen - 1),
                (const char *) rep[i].data);
      r = 0;
    }
  }
  store_notify_replies_free (rep, n);
  if (r < 0)
    vbk_set_error ("snapshot: the lease holder (%s) did not answer '%s'",
                   client, payload);
  return r;
}

static int
header_of (struct store *st, const char *image, char *hdr, size_t len)
{
  struct image_info info;
  int r = image_stat (st, image, &info);

  if (r == 0)
    image_header_oid (info.id, hdr, len);
  return r;
}

static void
pause_a_moment (void)
{
  struct timespec ts = { 0, 50000000 };

  nanosleep (&ts, NULL);
}

/* Whether the lease recorded in LS ran out longer ago than a takeover
 * waits (wall clock, as a requester judges it: lease-sm.c). */
static bool
lease_ran_out (const struct lease_status *ls)
{
  return ls->expires_ms
    && now_wall_ms () >= ls->expires_ms + VBK_LEASE_TAKEOVER_MARGIN_MS;
}

/* Sends PAYLOAD to the lease holder of IMAGE (header HDR) and waits for
 * its answer.  Returns 0 with the answer after "ok" in ANS, 1 if nobody
 * holds the lease (the caller does the work under a temporary lease),
 * 2 if the lease is recorded but its holder does not answer (dead, or
 * stopped): the caller takes the lease over, the holder's lease ending
 * at *HOLDER_EXPIRES (wall-clock ms), or -errno with a message (the
 * holder's errno where it gave one).  Retries while the holder is busy
 * or the lease is moving, until DEADLINE (monotonic ns). */
static int
via_holder (struct store *st, const char *image, const char *hdr,
            const char *payload, uint32_t timeout, uint64_t deadline,
            char *ans, size_t anslen, uint64_t *holder_expires)
{
  struct lease_status ls, again;
  char buf[1024];
  int r, e;

  for (;;) {
    r = lease_status_get (st, hdr, &ls);
    if (r < 0)
      return r;
    if (!ls.held)
      return 1;
    if (lease_ran_out (&ls)) {
      /* Its holder counts it lost already (lease-sm.c): nobody is
       * there to ask. */
      *holder_expires = ls.expires_ms;
      return 2;
    }
    r = ask (st, hdr, ls.client, payload, timeout, buf, sizeof buf);
    if (r == -ETIMEDOUT) {
      /* No answer: the holder let go meanwhile (its last client left
       * and it closed the export), another took the lease, or the
       * holder died with its lease recorded.  Look again. */
      r = lease_status_get (st, hdr, &again);
      if (r < 0)
        return r;
      if (!again.held)
        return 1;
      if (strcmp (again.client, ls.client) != 0
          || strcmp (again.cookie, ls.cookie) != 0) {
        if (now_mono_ns () < deadline)
          continue;
        vbk_set_error ("%s: the lease keeps moving (now %s)", image,
                       again.host);
        return -ETIMEDOUT;
      }
      log_warn ("snapshot: the lease holder %s (%s) of %s does not answer; "
                "taking the lease over once its lease has run out",
                again.host, again.client, image);
      *holder_expires = again.expires_ms;
      return 2;
    }
    if (r < 0)
      return r;
    if (strncmp (buf, "ok", 2) == 0 && (buf[2] == '\0' || buf[2] == ' ')) {
      snprintf (ans, anslen, "%s", buf[2] ? buf + 3 : "");
      return 0;
    }
    /* The holder is letting go right now (its last client left, or the
     * lease moves), or another vbk holds it for a moment: ask whoever
     * holds it next, or take it ourselves. */
    if ((strstr (buf, "not the lease holder") || strstr (buf, "closing")
         || strncmp (buf, "error: busy", 11) == 0)
        && now_mono_ns () < deadline) {
      pause_a_moment ();
      continue;
    }
    if (sscanf (buf, "error: errno=%d", &e) == 1 && e > 0) {
      const char *why = strchr (buf + 13, ' ');
      vbk_set_error ("%s", why ? why + 1 : buf);
      return -e;
    }
    vbk_set_error ("%s: %s (holder %s)", image, buf, ls.host);
    return strstr (buf, "already") ? -EEXIST : -EIO;
  }
}

/* Runs OP under a temporary lease of IMAGE, with writes held.  Returns
 * -EAGAIN if a holder appeared meanwhile (ask it instead). */
static int
under_temp_lease (struct store *st, const char *image,
                  const struct snap_opts *o, uint32_t takeover_ms,
                  int (*op) (struct temp_holder *, void *), void *arg)
{
  struct temp_holder t;
  int r;

  r = temp_open (st, image, o, takeover_ms, &t);
  if (r < 0)
    return r;
  vbk_clear_error ();
  r = lease_quiesce (t.lease);
  if (r == 0) {
    r = op (&t, arg);
    lease_resume (t.lease);
  }
  /* Closing the lease may log and clear this thread's message. */
  vbk_error_keep ();
  temp_close (&t);
  vbk_error_unkeep ();
  return r;
}

/* The one way every image-changing command runs: through the holder
 * (PAYLOAD), or, when nobody holds the lease, under a lease of our own
 * (OP).  Either way one command at a time per image. */
static int
serialized (struct store *st, const char *image, const char *payload,
            const struct snap_opts *o,
            int (*op) (struct temp_holder *, void *), void *arg,
            char *ans, size_t anslen)
{
  uint32_t timeout = o && o->timeout_ms ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
  uint64_t deadline = now_mono_ns () + (uint64_t) timeout * 1000000;
  char hdr[64];
  int r;

  r = header_of (st, image, hdr, sizeof hdr);
  if (r < 0)
    return r;
  for (;;) {
    uint64_t holder_expires = 0, now;
    uint32_t takeover_ms = 0;

    r = via_holder (st, image, hdr, payload, timeout, deadline, ans,
                    anslen, &holder_expires);
    if (r <= 0)
      return r;
    if (r == 2) {
      /* A silent holder: wait out what is left of its lease, the
       * takeover margin, and the slack of a writer's acquisition
       * (common/timeouts.h); then fence it and take the lease. */
      now = now_wall_ms ();
      takeover_ms = (uint32_t) MIN (holder_expires > now
                                    ? holder_expires - now : 0,
                                    (uint64_t) UINT32_MAX / 2)
        + VBK_LEASE_TAKEOVER_MARGIN_MS + VBK_LEASE_ACQUIRE_SLACK_MS;
    }
    r = under_temp_lease (st, image, o, takeover_ms, op, arg);
    if (r != -EAGAIN || now_mono_ns () >= deadline)
      return r;
    pause_a_moment ();
  }
}

struct create_args {
  const char *snap;
  uint64_t pause_us;
};

static int
op_create (struct temp_holder *t, void *arg)
{
  struct create_args *c = arg;

  return snap_take (t->img, t->lease, c->snap, NULL, &c->pause_us);
}

int
snap_create (struct store *st, const char *image, const char *snap,
             const struct snap_opts *o, uint64_t *pause_us)
{
  struct create_args c = { snap, 0 };
  char payload[300], ans[256] = "";
  unsigned long long id, pause;
  int r;

  r = image_name_check (snap);
  if (r < 0)
    return r;
  snprintf (payload, sizeof payload, "snap-create %s", snap);
  r = serialized (st, image, payload, o, op_create, &c, ans, sizeof ans);
  if (r == 0 && sscanf (ans, "%llu %llu", &id, &pause) == 2)
    c.pause_us = pause;
  if (r == 0 && pause_us)
    *pause_us = c.pause_us;
  return r;
}

static int
op_remove (struct temp_holder *t, void *arg)
{
  struct image_info info;

  image_get_info (t->img, &info);
  return image_snap_remove (lease_store (t->lease), info.name, arg);
}

int
snap_remove (struct store *st, const char *image, const char *snap,
             const struct snap_opts *o)
{
  char payload[300], ans[256];
  int r;

  r = image_name_check (snap);
  if (r < 0)
    return r;
  snprintf (payload, sizeof payload, "snap-remove %s", snap);
  return serialized (st, image, payload, o, op_remove, (void *) snap, ans,
                     sizeof ans);
}

static int
op_resize (struct temp_holder *t, void *arg)
{
  struct image_info info;

  image_get_info (t->img, &info);
  return image_resize (lease_store (t->lease), info.name, *(uint64_t *) arg);
}

int
snap_resize (struct store *st, const char *image, uint64_t size,
             const struct snap_opts *o)
{
  char payload[64], ans[256];

  snprintf (payload, sizeof payload, "resize %" PRIu64, size);
  return serialized (st, image, payload, o, op_resize, &size, ans,
                     sizeof ans);
}

/* ---- diff ------------------------------------------------------------- */

static bool
same_snaps (const struct image_snap *a, size_t na, const struct image_snap *b,
            size_t nb)
{
  size_t i;

  if (na != nb)
    return false;
  for (i = 0; i < na; i++)
    if (a[i].id != b[i].id || strcmp (a[i].name, b[i].name) != 0)
      return false;
  return true;
}

#define DIFF_ATTEMPTS 20

int
snap_diff (struct store *st, const char *image, const char *from,
           const char *to, image_extent_cb cb, void *arg,
           const struct snap_opts *o)
{
  struct image_snap *before = NULL, *after = NULL;
  struct image_extent_list e = { 0 };
  size_t nb = 0, na = 0, i;
  char hdr[64], ans[256], msg[1024];
  int r, attempt;

  if (to == NULL) {
    /* The holder logs the parts it saw change, so the live diff is as
     * fine as one between snapshots.  Without it the diff is still
     * complete (every changed object is logged before its change), only
     * coarser: go on. */
    r = header_of (st, image, hdr, sizeof hdr);
    if (r < 0)
      return r;
    uint32_t timeout = o && o->timeout_ms ? o->timeout_ms
      : DEFAULT_TIMEOUT_MS;
    uint64_t holder_expires;
    r = via_holder (st, image, hdr, "save-parts", timeout,
                    now_mono_ns () + (uint64_t) timeout * 1000000, ans,
                    sizeof ans, &holder_expires);
    if (r < 0)
      log_warn ("diff %s: the lease holder did not log its changed parts "
                "(%s): whole objects are reported", image, vbk_error ());
  }
  /* A snapshot created or removed while the logs are read moves changes
   * from one list to another under our feet: read again until the
   * snapshots are the same before and after. */
  for (attempt = 0; attempt < DIFF_ATTEMPTS; attempt++) {
    free (before);
    free (after);
    before = after = NULL;
    e.n = 0;
    vbk_clear_error ();
    r = image_snap_list (st, image, &before, &nb);
    if (r < 0)
      break;
    r = image_diff (st, image, from, to, image_extent_list_add, &e);
    snprintf (msg, sizeof msg, "%s", vbk_error ());
    int r2 = image_snap_list (st, image, &after, &na);
    if (r2 < 0) {
      r = r2;
      break;
    }
    if (same_snaps (before, nb, after, na)) {
      if (r < 0)
        vbk_set_error ("%s", msg);
      break;
    }
    log_debug ("diff %s: the snapshots changed meanwhile; again", image);
    r = -EAGAIN;
  }
  if (r == -EAGAIN)
    vbk_set_error ("diff %s: the snapshots kept changing while reading "
                   "(%d attempts)", image, DIFF_ATTEMPTS);
  for (i = 0; r == 0 && i < e.n; i++)
    r = cb (arg, e.v[i].off, e.v[i].len, 1);
  free (before);
  free (after);
  free (e.v);
  return r;
}

struct member {
  const char *image, *snap;
  char hdr[64];
  char client[STORE_CLIENT_MAX];   /* remote holder, or "" */
  struct temp_holder t;            /* or our own temporary hold */
  bool frozen, snapped;
};

static void
thaw_all (struct store *st, struct member *m, size_t n, const char *token,
          uint32_t timeout)
{
  char payload[128], ans[256];
  size_t i;

  for (i = 0; i < n; i++) {
    if (!m[i].frozen)
      continue;
    if (m[i].client[0]) {
      snprintf (payload, sizeof payload, "thaw %s", token);
      if (ask (st, m[i].hdr, m[i].client, payload, timeout, ans,
               sizeof ans) < 0 || strcmp (ans, "thawed") != 0)
        log_warn ("snapshot group: %s did not thaw (%s); it will by itself",
                  m[i].image, ans);
    }
    else {
      lease_resume (m[i].t.lease);
      temp_close (&m[i].t);
    }
    m[i].frozen = false;
  }
}

int
snap_group_create (struct store *st, const char *group,
                   const char *const *images, const char *const *snaps,
                   size_t n, const struct snap_opts *o)
{
  uint32_t timeout = o && o->timeout_ms ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
  char token[64], payload[400], ans[1024];
  struct lease_status ls;
  struct member *m;
  uint8_t rnd[6];
  size_t i;
  int r = 0;

  if (n == 0) {
    vbk_set_error ("snapshot group %s: no images", group);
    return -EINVAL;
  }
  m = calloc (n, sizeof *m);
  if (m == NULL)
    return -ENOMEM;
  if (getrandom (rnd, sizeof rnd, 0) != sizeof rnd)
    memset (rnd, 0, sizeof rnd);
  snprintf (token, sizeof token, "%s.%02x%02x%02x%02x%02x%02x", group,
            rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5]);

  for (i = 0; i < n && r == 0; i++) {
    m[i].image = images[i];
    m[i].snap = snaps[i];
    r = image_name_check (snaps[i]);
    if (r == 0)
      r = header_of (st, images[i], m[i].hdr, sizeof m[i].hdr);
  }
  if (r < 0)
    goto out;

  /* 1. Freeze every image: no write in flight, none starting. */
  for (i = 0; i < n && r == 0; i++) {
    r = lease_status_get (st, m[i].hdr, &ls);
    if (r < 0)
      break;
    if (ls.held) {
      snprintf (m[i].client, sizeof m[i].client, "%s", ls.client);
      snprintf (payload, sizeof payload, "freeze %s %u", token,
                FREEZE_TIMEOUT_MS);
      r = ask (st, m[i].hdr, ls.client, payload, timeout, ans, sizeof ans);
      if (r == 0 && strcmp (ans, "frozen") != 0) {
        vbk_set_error ("snapshot group %s: %s: %s", group, m[i].image, ans);
        r = -EIO;
      }
    }
    else {
      r = temp_open (st, m[i].image, o, 0, &m[i].t);
      if (r == 0) {
        r = lease_quiesce (m[i].t.lease);
        if (r == 0 && (r = image_flush (m[i].t.img)) < 0)
          lease_resume (m[i].t.lease);
        if (r < 0)
          temp_close (&m[i].t);
      }
    }
    if (r == 0)
      m[i].frozen = true;
  }

  /* 2. Snapshot every image while all are frozen. */
  for (i = 0; i < n && r == 0; i++) {
    if (m[i].client[0]) {
      snprintf (payload, sizeof payload, "snap-frozen %s %s", token,
                m[i].snap);
      r = ask (st, m[i].hdr, m[i].client, payload, timeout, ans, sizeof ans);
      if (r == 0 && strncmp (ans, "ok ", 3) != 0) {
        vbk_set_error ("snapshot group %s: %s@%s: %s", group, m[i].image,
                       m[i].snap, ans);
        r = strstr (ans, "already") ? -EEXIST : -EIO;
      }
    }
    else
      r = image_snap_create (m[i].t.img, m[i].snap, NULL);
    if (r == 0)
      m[i].snapped = true;
  }

out:
  /* 3. Thaw; on failure, no snapshot of the group remains (and the
   * first failure is what the caller hears). */
  if (r < 0)
    vbk_error_keep ();
  thaw_all (st, m, n, token, timeout);
  if (r < 0) {
    for (i = 0; i < n; i++)
      if (m[i].snapped)
        snap_remove (st, m[i].image, m[i].snap, o);
    vbk_error_unkeep ();
  }
  free (m);
  return r;
}

int
snap_rollback (struct store *st, const char *image, const char *snap,
               bool force, const struct snap_opts *o)
{
  struct lease_status ls;
  struct temp_holder t;
  struct image_snap *v;
  char hdr[64];
  size_t n, i;
  int r;

  r = header_of (st, image, hdr, sizeof hdr);
  if (r == 0)
    r = image_snap_list (st, image, &v, &n);
  if (r < 0)
    return r;
  for (i = 0; i < n && strcmp (v[i].name, snap) != 0; i++)
    ;
  free (v);
  if (i == n) {
    vbk_set_error ("image '%s' has no snapshot '%s'", image, snap);
    return -ENOENT;
  }
  r = lease_status_get (st, hdr, &ls);
  if (r < 0)
    return r;
  if (ls.held) {
    if (!force) {
      vbk_set_error ("image '%s' is open for writing on %s (lease epoch %"
                     PRIu64 "): stop the VM first, or use --force",
                     image, ls.host, ls.epoch);
      return -EBUSY;
    }
    log_warn ("rollback of %s: breaking the lease of %s", image, ls.host);
    r = lease_break (st, hdr);
    if (r < 0 && r != -ENOENT)
      return r;
  }
  r = temp_open (st, image, o, 0, &t);
  if (r < 0)
    return r;
  r = lease_write_begin (t.lease);
  if (r == 0) {
    r = image_snap_rollback (t.img, snap);
    lease_write_end (t.lease);
  }
  temp_close (&t);
  return r;
}
