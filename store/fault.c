/* SPDX-License-Identifier: MIT
 *
 * fault.c - the fault: backend wraps any other store and makes chosen
 * calls fail, so every error path above the store can be tested (as
 * SQLite's test VFS and nbdkit's error filter do).
 *
 * URI:  fault:SPEC@INNER-URI   with SPEC a comma list of
 *   op=CLASS[+CLASS...]   read, write, meta, lock, snap, all (store.h)
 *   err=NAME|NUMBER       EIO (default), ENOSPC, ETIMEDOUT, EDQUOT, ...
 *   call=NAME             only calls of that name match (meta_set,
 *                         omap_get, write, ...: the names in the
 *                         messages of injected faults)
 *   nth=N                 the N-th matching call fails (default 1)
 *   sticky=1              and every matching call after it
 *   trigger=FILE          only while FILE exists
 *   hold=FILE             store_lock calls only: the chosen one does not fail;
 *                         it is made, and then its answer is held back
 *                         while FILE exists (FILE.held exists meanwhile)
 *   watchdrop=FILE        while FILE exists, the watches of the store are
 *                         dropped (each callback gets -ENOTCONN once, as
 *                         from a watch RADOS dropped in an outage, and no
 *                         notify after) and store_watch waits for FILE to
 *                         go before it is made (FILE.held exists
 *                         meanwhile); other calls go on.  Independent of
 *                         op= and the other items.
 * An empty SPEC injects nothing until store_fault_set() is called.
 *
 * A held answer is what a client sees when the store did the request
 * but the reply was lost in an outage and the request sent again after
 * it: the first result, late.
 *
 * Failing asynchronous calls complete through their callback, as a real
 * I/O error would.  Counting and the decision are under one mutex shared
 * with every clone of the handle.  A watch with watchdrop= has a thread
 * of its own that polls the file and drops the watch: a test-only
 * watcher for the watch's whole life, not work for common/workq.c (an
 * item would hold a queue thread for as long).
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "internal.h"

struct fault_ctl {
  pthread_mutex_t lock;
  unsigned ops;
  int err;
  unsigned long nth;
  int sticky;
  char *trigger;
  char *hold;                          /* hold=FILE */
  char *watchdrop;                     /* watchdrop=FILE */
  char *call;                          /* call=NAME */
  unsigned long seen;                  /* matching calls since set */
  unsigned long calls[5];              /* per class, ever */
  uint64_t read_bytes;                 /* returned by reads, sync or aio */
};

struct fault {
  struct store *inner;
  struct fault_ctl *ctl;
  int owner;                           /* frees ctl */
};

static const struct { const char *name; int err; } err_names[] = {
  { "EIO", EIO }, { "ENOSPC", ENOSPC }, { "ETIMEDOUT", ETIMEDOUT },
  { "EDQUOT", EDQUOT }, { "EACCES", EACCES }, { "EPERM", EPERM },
  { "ESHUTDOWN", ESHUTDOWN }, { "ENOENT", ENOENT }, { "EROFS", EROFS },
  { "ECANCELED", ECANCELED }, { "EBUSY", EBUSY },
};

static const char *const class_names[] = { "read", "write", "meta", "lock",
                                           "snap" };

static int
parse_ops (const char *v, unsigned *ops)
{
  char buf[128], *tok, *save;
  unsigned i;

  snprintf (buf, sizeof buf, "%s", v);
  *ops = 0;
  for (tok = strtok_r (buf, "+", &save); tok;
       tok = strtok_r (NULL, "+", &save)) {
    if (strcmp (tok, "all") == 0) {
      *ops |= STORE_OP_ALL;
      continue;
    }
    for (i = 0; i < 5; i++)
      if (strcmp (tok, class_names[i]) == 0)
        break;
    if (i == 5)
      return -EINVAL;
    *ops |= 1u << i;
  }
  return *ops ? 0 : -EINVAL;
}

static int
parse_err (const char *v, int *err)
{
  size_t i;
  char *end;
  long n;

  for (i = 0; i < sizeof err_names / sizeof err_names[0]; i++) {
    if (strcmp (v, err_names[i].name) == 0) {
      *err = -err_names[i].err;
      return 0;
    }
  }
  n = strtol (v, &end, 10);
  if (*end || n == 0 || n > 4095 || n < -4095)
    return -EINVAL;
  *err = n < 0 ? (int) n : (int) -n;
  return 0;
}

static int
parse_spec (struct fault_ctl *c, const char *spec, size_t len)
{
  char buf[1024], *tok, *save, *eq;

  if (len >= sizeof buf)
    return -EINVAL;
  memcpy (buf, spec, len);
  buf[len] = '\0';
  c->err = -EIO;
  c->nth = 1;
  for (tok = strtok_r (buf, ",", &save); tok;
       tok = strtok_r (NULL, ",", &save)) {
    eq = strchr (tok, '=');
    if (eq == NULL)
      goto bad;
    *eq++ = '\0';
    if (strcmp (tok, "op") == 0) {
      if (parse_ops (eq, &c->ops) < 0)
        goto bad;
    }
    else if (strcmp (tok, "err") == 0) {
      if (parse_err (eq, &c->err) < 0)
        goto bad;
    }
    else if (strcmp (tok, "nth") == 0) {
      c->nth = strtoul (eq, NULL, 10);
      if (c->nth == 0)
        goto bad;
    }
    else if (strcmp (tok, "sticky") == 0)
      c->sticky = atoi (eq) != 0;
    else if (strcmp (tok, "trigger") == 0)
      c->trigger = strdup (eq);
    else if (strcmp (tok, "hold") == 0)
      c->hold = strdup (eq);
    else if (strcmp (tok, "watchdrop") == 0)
      c->watchdrop = strdup (eq);
    else if (strcmp (tok, "call") == 0) {
      if (*eq == '\0')
        goto bad;
      free (c->call);
      c->call = strdup (eq);
    }
    else
      goto bad;
    continue;
  bad:
    vbk_set_error ("store: fault: bad spec item '%s' (expected op=, err=, "
                   "call=, nth=, sticky=, trigger=, hold=, watchdrop=)", tok);
    return -EINVAL;
  }
  return 0;
}

static int
fault_open (const char *arg, void **hp)
{
  const char *at = strchr (arg, '@');
  struct fault *f;
  int r;

  if (at == NULL) {
    vbk_set_error ("store: fault: expected fault:SPEC@INNER-URI");
    return -EINVAL;
  }
  f = calloc (1, sizeof *f);
  if (f == NULL)
    return -ENOMEM;
  f->ctl = calloc (1, sizeof *f->ctl);
  if (f->ctl == NULL) {
    free (f);
    return -ENOMEM;
  }
  f->owner = 1;
  pthread_mutex_init (&f->ctl->lock, NULL);
  r = parse_spec (f->ctl, arg, at - arg);
  if (r == 0)
    r = store_open (at + 1, &f->inner);
  if (r < 0) {
    free (f->ctl->trigger);
    free (f->ctl->hold);
    free (f->ctl->watchdrop);
    free (f->ctl->call);
    free (f->ctl);
    free (f);
    return r;
  }
  *hp = f;
  return 0;
}

static int
fault_clone (void *parent, void **hp)
{
  struct fault *p = parent, *f;
  int r;

  f = calloc (1, sizeof *f);
  if (f == NULL)
    return -ENOMEM;
  r = store_clone (p->inner, &f->inner);
  if (r < 0) {
    free (f);
    return r;
  }
  f->ctl = p->ctl;
  *hp = f;
  return 0;
}

static void
fault_close (void *h)
{
  struct fault *f = h;

  store_close (f->inner);
  if (f->owner) {
    pthread_mutex_destroy (&f->ctl->lock);
    free (f->ctl->trigger);
    free (f->ctl->hold);
    free (f->ctl->watchdrop);
    free (f->ctl->call);
    free (f->ctl);
  }
  free (f);
}

static int
fault_control (void *h, unsigned ops, int err, unsigned long nth,
               int sticky, const char *trigger_file)
{
  struct fault_ctl *c = ((struct fault *) h)->ctl;

  pthread_mutex_lock (&c->lock);
  c->ops = ops;
  c->err = err < 0 ? err : -err;
  c->nth = nth ? nth : 1;
  c->sticky = sticky;
  free (c->trigger);
  c->trigger = trigger_file ? strdup (trigger_file) : NULL;
  free (c->hold);
  c->hold = NULL;
  c->seen = 0;
  pthread_mutex_unlock (&c->lock);
  return 0;
}

static unsigned long
fault_calls (void *h, unsigned ops)
{
  struct fault_ctl *c = ((struct fault *) h)->ctl;
  unsigned long n = 0;
  unsigned i;

  pthread_mutex_lock (&c->lock);
  for (i = 0; i < 5; i++)
    if (ops & (1u << i))
      n += c->calls[i];
  pthread_mutex_unlock (&c->lock);
  return n;
}

static uint64_t
fault_read_bytes (void *h)
{
  struct fault_ctl *c = ((struct fault *) h)->ctl;
  uint64_t n;

  pthread_mutex_lock (&c->lock);
  n = c->read_bytes;
  pthread_mutex_unlock (&c->lock);
  return n;
}

/* Counts a call of CLASS; returns the injected -errno (with a message)
 * if this call is to fail, else 0.  With hold= a chosen lock call does
 * not fail: *HOLD gets a copy of the file to wait for (the caller frees
 * it).  Only store_lock passes HOLD; with hold= no other call counts. */
static int
inject_hold (struct fault *f, unsigned class, const char *op,
             const char *oid, char **hold)
{
  struct fault_ctl *c = f->ctl;
  int fail = 0, err;
  unsigned i;

  pthread_mutex_lock (&c->lock);
  for (i = 0; i < 5; i++)
    if (class == (1u << i))
      c->calls[i]++;
  if ((c->ops & class) && (c->hold == NULL || hold != NULL)
      && (c->call == NULL || strcmp (c->call, op) == 0)
      && (c->trigger == NULL || access (c->trigger, F_OK) == 0)) {
    c->seen++;
    fail = c->seen == c->nth || (c->sticky && c->seen > c->nth);
    if (fail && c->hold) {
      *hold = strdup (c->hold);
      fail = 0;
    }
  }
  err = c->err;
  pthread_mutex_unlock (&c->lock);
  if (!fail)
    return 0;
  return vbk_errno (err, "store fault: %s: %s: injected fault", op,
                    oid ? oid : "-");
}

static int
inject (struct fault *f, unsigned class, const char *op, const char *oid)
{
  return inject_hold (f, class, op, oid, NULL);
}

/* Holds an answer while FILE exists; FILE.held shows that one waits. */
static void
hold_answer (char *file)
{
  char held[4096];
  FILE *fp;

  if (file == NULL)
    return;
  snprintf (held, sizeof held, "%s.held", file);
  fp = fopen (held, "w");
  if (fp)
    fclose (fp);
  while (access (file, F_OK) == 0)
    usleep (10000);
  unlink (held);
  free (file);
}

#define INJECT(class, op, oid)                  \
  do {                                          \
    int e_ = inject (f, (class), (op), (oid));  \
    if (e_ < 0)                                 \
      return e_;                                \
  } while (0)

static const char *
fault_client_id (void *h)
{
  return store_client_id (((struct fault *) h)->inner);
}

static ssize_t
fault_read (void *h, const char *oid, void *buf, size_t len, uint64_t off,
            uint64_t snap)
{
  struct fault *f = h;
  ssize_t r;

  INJECT (STORE_OP_READ, "read", oid);
  r = store_read (f->inner, oid, buf, len, off, snap);
  if (r > 0) {
    pthread_mutex_lock (&f->ctl->lock);
    f->ctl->read_bytes += (uint64_t) r;
    pthread_mutex_unlock (&f->ctl->lock);
  }
  return r;
}

static int
fault_read_ranges (void *h, const char *oid, uint64_t snap,
                   const struct store_range *rg, size_t n)
{
  struct fault *f = h;
  size_t i;
  int r;

  INJECT (STORE_OP_READ, "read_ranges", oid);
  r = store_read_ranges (f->inner, oid, snap, rg, n);
  if (r == 0) {
    pthread_mutex_lock (&f->ctl->lock);
    for (i = 0; i < n; i++)
      f->ctl->read_bytes += rg[i].len;
    pthread_mutex_unlock (&f->ctl->lock);
  }
  return r;
}

static int
fault_write (void *h, const char *oid, const void *buf, size_t len,
             uint64_t off, unsigned flags)
{
  struct fault *f = h;
  INJECT (STORE_OP_WRITE, "write", oid);
  return store_write (f->inner, oid, buf, len, off, flags);
}

static int
fault_write_full (void *h, const char *oid, const void *buf, size_t len,
                  unsigned flags)
{
  struct fault *f = h;
  INJECT (STORE_OP_WRITE, "write_full", oid);
  return store_write_full (f->inner, oid, buf, len, flags);
}

static int
fault_create_excl (void *h, const char *oid, const void *buf, size_t len,
                   unsigned flags)
{
  struct fault *f = h;
  INJECT (STORE_OP_WRITE, "create", oid);
  return store_create_excl (f->inner, oid, buf, len, flags);
}

static int
fault_zero (void *h, const char *oid, uint64_t off, uint64_t len)
{
  struct fault *f = h;
  INJECT (STORE_OP_WRITE, "zero", oid);
  return store_zero (f->inner, oid, off, len);
}

static int
fault_truncate (void *h, const char *oid, uint64_t size)
{
  struct fault *f = h;
  INJECT (STORE_OP_WRITE, "truncate", oid);
  return store_truncate (f->inner, oid, size);
}

static int
fault_remove (void *h, const char *oid)
{
  struct fault *f = h;
  INJECT (STORE_OP_WRITE, "remove", oid);
  return store_remove (f->inner, oid);
}

static int
fault_stat (void *h, const char *oid, uint64_t snap, uint64_t *size)
{
  struct fault *f = h;
  INJECT (STORE_OP_READ, "stat", oid);
  return store_stat (f->inner, oid, snap, size);
}

static int
fault_flush (void *h)
{
  struct fault *f = h;
  INJECT (STORE_OP_WRITE, "flush", NULL);
  return store_flush (f->inner);
}

/* An asynchronous read in flight: its bytes count when it completes. */
struct fault_aio {
  struct fault_ctl *ctl;
  store_aio_cb cb;
  void *arg;
};

static void
fault_aio_read_done (void *arg, ssize_t ret)
{
  struct fault_aio *a = arg;
  store_aio_cb cb = a->cb;
  void *cbarg = a->arg;

  if (ret > 0) {
    pthread_mutex_lock (&a->ctl->lock);
    a->ctl->read_bytes += (uint64_t) ret;
    pthread_mutex_unlock (&a->ctl->lock);
  }
  free (a);
  cb (cbarg, ret);
}

static int
fault_aio_read (void *h, const char *oid, void *buf, size_t len,
                uint64_t off, uint64_t snap, store_aio_cb cb, void *arg)
{
  struct fault *f = h;
  struct fault_aio *a;
  int e = inject (f, STORE_OP_READ, "aio_read", oid), r;

  if (e < 0) {
    cb (arg, e);
    return 0;
  }
  a = malloc (sizeof *a);
  if (a == NULL)
    return -ENOMEM;
  a->ctl = f->ctl;
  a->cb = cb;
  a->arg = arg;
  r = store_aio_read (f->inner, oid, buf, len, off, snap, fault_aio_read_done,
                      a);
  if (r < 0)
    free (a);
  return r;
}

static int
fault_aio_write (void *h, const char *oid, const void *buf, size_t len,
                 uint64_t off, unsigned flags, store_aio_cb cb, void *arg)
{
  struct fault *f = h;
  int e = inject (f, STORE_OP_WRITE, "aio_write", oid);

  if (e < 0) {
    cb (arg, e);
    return 0;
  }
  return store_aio_write (f->inner, oid, buf, len, off, flags, cb, arg);
}

static ssize_t
fault_xattr_get (void *h, const char *oid, const char *name, void *buf,
                 size_t len)
{
  struct fault *f = h;
  INJECT (STORE_OP_META, "xattr_get", oid);
  return store_xattr_get (f->inner, oid, name, buf, len);
}

static int
fault_xattr_set (void *h, const char *oid, const char *name,
                 const void *val, size_t len)
{
  struct fault *f = h;
  INJECT (STORE_OP_META, "xattr_set", oid);
  return store_xattr_set (f->inner, oid, name, val, len);
}

static int
fault_xattr_rm (void *h, const char *oid, const char *name)
{
  struct fault *f = h;
  INJECT (STORE_OP_META, "xattr_rm", oid);
  return store_xattr_rm (f->inner, oid, name);
}

static int
fault_xattr_cas (void *h, const char *oid, const char *name,
                 const void *old, size_t oldlen, const void *new,
                 size_t newlen)
{
  struct fault *f = h;
  INJECT (STORE_OP_META, "xattr_cas", oid);
  return store_xattr_cas (f->inner, oid, name, old, oldlen, new, newlen);
}

static int
fault_omap_set (void *h, const char *oid, const char *key, const void *val,
                size_t len)
{
  struct fault *f = h;
  INJECT (STORE_OP_META, "omap_set", oid);
  return store_omap_set (f->inner, oid, key, val, len);
}

static int
fault_meta_set (void *h, const char *oid, const struct store_meta_set *sets,
                size_t n)
{
  struct fault *f = h;
  INJECT (STORE_OP_META, "meta_set", oid);
  return store_meta_set (f->inner, oid, sets, n);
}

static ssize_t
fault_omap_get (void *h, const char *oid, const char *key, void *buf,
                size_t len)
{
  struct fault *f = h;
  INJECT (STORE_OP_META, "omap_get", oid);
  return store_omap_get (f->inner, oid, key, buf, len);
}

static int
fault_omap_rm (void *h, const char *oid, const char *key)
{
  struct fault *f = h;
  INJECT (STORE_OP_META, "omap_rm", oid);
  return store_omap_rm (f->inner, oid, key);
}

static int
fault_omap_list (void *h, const char *oid, const char *after, size_t max,
                 store_omap_cb cb, void *arg)
{
  struct fault *f = h;
  INJECT (STORE_OP_META, "omap_list", oid);
  return store_omap_list (f->inner, oid, after, max, cb, arg);
}

static int
fault_lock (void *h, const char *oid, const char *name, const char *cookie,
            const char *desc, uint32_t duration_ms, unsigned flags)
{
  struct fault *f = h;
  char *hold = NULL;
  int r;

  r = inject_hold (f, STORE_OP_LOCK, "lock", oid, &hold);
  if (r < 0)
    return r;
  r = store_lock (f->inner, oid, name, cookie, desc, duration_ms, flags);
  hold_answer (hold);
  return r;
}

static int
fault_unlock (void *h, const char *oid, const char *name, const char *cookie)
{
  struct fault *f = h;
  INJECT (STORE_OP_LOCK, "unlock", oid);
  return store_unlock (f->inner, oid, name, cookie);
}

static int
fault_lock_break (void *h, const char *oid, const char *name,
                  const char *client, const char *cookie)
{
  struct fault *f = h;
  INJECT (STORE_OP_LOCK, "lock_break", oid);
  return store_lock_break (f->inner, oid, name, client, cookie);
}

static int
fault_lock_get (void *h, const char *oid, const char *name,
                struct store_lock_info *info)
{
  struct fault *f = h;
  INJECT (STORE_OP_LOCK, "lock_get", oid);
  return store_lock_get (f->inner, oid, name, info);
}

/* A watch through the fault store: the inner watch, and with
 * watchdrop= a thread that drops it when the file appears. */
struct fault_watch {
  struct store_watch *inner;
  store_watch_cb cb;
  void *arg;
  char *drop;                          /* watchdrop file, or NULL */
  bool dropped, stop;                  /* atomics */
  pthread_t thread;
};

static void
fault_watch_cb (void *arg, int err, const void *payload, size_t len,
                void *reply, size_t reply_max, size_t *reply_len)
{
  struct fault_watch *w = arg;

  if (__atomic_load_n (&w->dropped, __ATOMIC_ACQUIRE))
    return;                     /* a dropped watch hears nothing */
  w->cb (w->arg, err, payload, len, reply, reply_max, reply_len);
}

static void *
fault_watch_thread (void *arg)
{
  struct fault_watch *w = arg;
  size_t dummy = 0;

  while (!__atomic_load_n (&w->stop, __ATOMIC_ACQUIRE)) {
    if (access (w->drop, F_OK) == 0) {
      __atomic_store_n (&w->dropped, true, __ATOMIC_RELEASE);
      w->cb (w->arg, -ENOTCONN, NULL, 0, NULL, 0, &dummy);
      break;
    }
    usleep (10000);
  }
  return NULL;
}

static int
fault_watch (void *h, const char *oid, store_watch_cb cb, void *arg,
             void **wp)
{
  struct fault *f = h;
  struct fault_watch *w;
  char *drop = NULL;
  int r;

  pthread_mutex_lock (&f->ctl->lock);
  if (f->ctl->watchdrop && (drop = strdup (f->ctl->watchdrop)) == NULL) {
    pthread_mutex_unlock (&f->ctl->lock);
    return -ENOMEM;
  }
  pthread_mutex_unlock (&f->ctl->lock);
  if (drop && access (drop, F_OK) == 0)
    hold_answer (strdup (drop));        /* the watch waits out the drop */
  r = inject (f, STORE_OP_LOCK, "watch", oid);
  if (r < 0) {
    free (drop);
    return r;
  }
  w = calloc (1, sizeof *w);
  if (w == NULL) {
    free (drop);
    return -ENOMEM;
  }
  w->cb = cb;
  w->arg = arg;
  w->drop = drop;
  r = store_watch (f->inner, oid, fault_watch_cb, w, &w->inner);
  if (r == 0 && drop
      && pthread_create (&w->thread, NULL, fault_watch_thread, w) != 0) {
    store_unwatch (w->inner);
    r = -EAGAIN;
  }
  if (r < 0) {
    free (drop);
    free (w);
    return r;
  }
  *wp = w;
  return 0;
}

static void
fault_unwatch (void *h, void *wp)
{
  struct fault_watch *w = wp;

  (void) h;
  if (w == NULL)
    return;
  if (w->drop) {
    __atomic_store_n (&w->stop, true, __ATOMIC_RELEASE);
    pthread_join (w->thread, NULL);
  }
  store_unwatch (w->inner);
  free (w->drop);
  free (w);
}

static int
fault_notify (void *h, const char *oid, const void *payload, size_t len,
              uint32_t timeout_ms, struct store_notify_reply **replies,
              size_t *nreplies, size_t *timed_out)
{
  struct fault *f = h;
  INJECT (STORE_OP_LOCK, "notify", oid);
  return store_notify (f->inner, oid, payload, len, timeout_ms, replies,
                       nreplies, timed_out);
}

static int
fault_fence (void *h, const char *client, uint32_t expire_s)
{
  struct fault *f = h;
  INJECT (STORE_OP_LOCK, "fence", client);
  return store_fence (f->inner, client, expire_s);
}

static int
fault_snap_create (void *h, uint64_t *snap)
{
  struct fault *f = h;
  INJECT (STORE_OP_SNAP, "snap_create", NULL);
  return store_snap_create (f->inner, snap);
}

static int
fault_snap_remove (void *h, uint64_t snap)
{
  struct fault *f = h;
  INJECT (STORE_OP_SNAP, "snap_remove", NULL);
  return store_snap_remove (f->inner, snap);
}

static int
fault_set_snap_context (void *h, uint64_t seq, const uint64_t *snaps,
                        size_t n)
{
  struct fault *f = h;
  INJECT (STORE_OP_SNAP, "set_snap_context", NULL);
  return store_set_snap_context (f->inner, seq, snaps, n);
}

static int
fault_snap_rollback (void *h, const char *oid, uint64_t snap)
{
  struct fault *f = h;
  INJECT (STORE_OP_SNAP, "snap_rollback", oid);
  return store_snap_rollback (f->inner, oid, snap);
}

const struct store_ops store_fault_ops = {
  .name = "fault",
  .open = fault_open,
  .clone = fault_clone,
  .close = fault_close,
  .client_id = fault_client_id,
  .read = fault_read,
  .write = fault_write,
  .write_full = fault_write_full,
  .create_excl = fault_create_excl,
  .zero = fault_zero,
  .truncate = fault_truncate,
  .remove = fault_remove,
  .stat = fault_stat,
  .flush = fault_flush,
  .aio_read = fault_aio_read,
  .aio_write = fault_aio_write,
  .xattr_get = fault_xattr_get,
  .xattr_set = fault_xattr_set,
  .xattr_rm = fault_xattr_rm,
  .xattr_cas = fault_xattr_cas,
  .omap_set = fault_omap_set,
  .omap_get = fault_omap_get,
  .omap_rm = fault_omap_rm,
  .omap_list = fault_omap_list,
  .lock = fault_lock,
  .unlock = fault_unlock,
  .lock_break = fault_lock_break,
  .lock_get = fault_lock_get,
  .watch = fault_watch,
  .unwatch = fault_unwatch,
  .notify = fault_notify,
  .fence = fault_fence,
  .snap_create = fault_snap_create,
  .snap_remove = fault_snap_remove,
  .set_snap_context = fault_set_snap_context,
  .snap_rollback = fault_snap_rollback,
  .fault_set = fault_control,
  .fault_count = fault_calls,
  .fault_bytes_read = fault_read_bytes,
  .read_ranges = fault_read_ranges,
  .meta_set = fault_meta_set,
};
