/* SPDX-License-Identifier: MIT
 *
 * store.c - the public store API: opens a backend by URI scheme and
 * dispatches to its table of functions (internal.h).
 *
 * Every call clears this thread's error message first; when a backend
 * fails without recording one, a generic "store BACKEND: OP: OID:
 * strerror" is recorded here, so a failing call always leaves a message.
 * Asynchronous calls go through a small context that gives a failed
 * completion the same message on the thread that runs the callback.  A backend
 * that lacks an operation (a NULL member) fails it with -ENOSYS.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "internal.h"

struct store {
  const struct store_ops *ops;
  void *h;
};

struct store_watch {
  struct store *st;
  void *w;
};

static const struct store_ops *const backends[] = {
  &store_local_ops,
  &store_rados_ops,
  &store_fault_ops,
};

/* Records a generic message for a failure that carries none. */
static ssize_t
failed_in (const char *backend, ssize_t r, const char *op, const char *oid)
{
  if (r < 0 && vbk_error ()[0] == '\0')
    vbk_errno ((int) r, "store %s: %s%s%s", backend, op, oid ? ": " : "",
               oid ? oid : "");
  return r;
}

static const char *
backend_of (const struct store *st)
{
  return st->ops->name;
}

static int
missing (const char *op)
{
  vbk_set_error ("store: %s: not supported by this backend", op);
  return -ENOSYS;
}

/* Calls ops->NAME(h, ARGS...) with the error conventions above. */
#define CALL(st, name, oid, ...)                                        \
  ((st)->ops->name == NULL ? missing (#name)                            \
   : (vbk_clear_error (),                                               \
      failed_in (backend_of (st),                                       \
                 (st)->ops->name ((st)->h, ##__VA_ARGS__),              \
                 #name, (oid))))

static int
check_oid (const char *op, const char *oid)
{
  size_t n = oid ? strlen (oid) : 0;

  if (n == 0 || n > STORE_NAME_MAX) {
    vbk_set_error ("store: %s: invalid object name '%s'", op,
                   oid ? oid : "(null)");
    return -EINVAL;
  }
  return 0;
}

/* STORE_WRITE_DEFER is for store_create_excl alone, without
 * STORE_WRITE_SYNC. */
static int
bad_flags (const char *op, const char *oid)
{
  vbk_set_error ("store: %s: %s: STORE_WRITE_DEFER is only for an "
                 "exclusive create without STORE_WRITE_SYNC", op, oid);
  return -EINVAL;
}

#define CHECK_OID(op, oid)                      \
  do {                                          \
    int r_ = check_oid ((op), (oid));           \
    if (r_ < 0)                                 \
      return r_;                                \
  } while (0)

int
store_open (const char *uri, struct store **out)
{
  const char *colon;
  struct store *st;
  size_t i, n;
  int r;

  vbk_clear_error ();
  colon = uri ? strchr (uri, ':') : NULL;
  if (colon == NULL) {
    vbk_set_error ("store: '%s': expected a URI like local:/path or "
                   "rados:POOL", uri ? uri : "");
    return -EINVAL;
  }
  n = colon - uri;
  for (i = 0; i < sizeof backends / sizeof backends[0]; i++) {
    if (strlen (backends[i]->name) == n
        && strncmp (backends[i]->name, uri, n) == 0)
      break;
  }
  if (i == sizeof backends / sizeof backends[0]) {
    vbk_set_error ("store: '%s': unknown store type '%.*s' "
                   "(use local:, rados: or fault:)", uri, (int) n, uri);
    return -EINVAL;
  }
  st = calloc (1, sizeof *st);
  if (st == NULL)
    return vbk_errno (-ENOMEM, "store: open");
  st->ops = backends[i];
  r = st->ops->open (colon + 1, &st->h);
  if (r < 0) {
    failed_in (st->ops->name, r, "open", uri);
    free (st);
    return r;
  }
  *out = st;
  return 0;
}

int
store_clone (struct store *parent, struct store **out)
{
  struct store *st;
  int r;

  st = calloc (1, sizeof *st);
  if (st == NULL)
    return vbk_errno (-ENOMEM, "store: clone");
  st->ops = parent->ops;
  r = CALL (parent, clone, NULL, &st->h);
  if (r < 0) {
    free (st);
    return r;
  }
  *out = st;
  return 0;
}

void
store_close (struct store *st)
{
  if (st == NULL)
    return;
  st->ops->close (st->h);
  free (st);
}

const char *
store_backend (const struct store *st)
{
  return st->ops->name;
}

const char *
store_client_id (const struct store *st)
{
  return st->ops->client_id (st->h);
}

ssize_t
store_read (struct store *st, const char *oid, void *buf, size_t len,
            uint64_t off, uint64_t snap)
{
  CHECK_OID ("read", oid);
  return CALL (st, read, oid, oid, buf, len, off, snap);
}

int
store_read_ranges (struct store *st, const char *oid, uint64_t snap,
                   const struct store_range *rg, size_t n)
{
  ssize_t r = 0;
  size_t i;

  CHECK_OID ("read_ranges", oid);
  if (st->ops->read_ranges)
    return CALL (st, read_ranges, oid, oid, snap, rg, n);
  for (i = 0; r >= 0 && i < n; i++)
    r = store_read (st, oid, rg[i].buf, rg[i].len, rg[i].off, snap);
  return r < 0 ? (int) r : 0;
}

int
store_write (struct store *st, const char *oid, const void *buf, size_t len,
             uint64_t off, unsigned flags)
{
  CHECK_OID ("write", oid);
  if (flags & STORE_WRITE_DEFER)
    return bad_flags ("write", oid);
  return CALL (st, write, oid, oid, buf, len, off, flags);
}

int
store_write_full (struct store *st, const char *oid, const void *buf,
                  size_t len, unsigned flags)
{
  CHECK_OID ("write_full", oid);
  if (flags & STORE_WRITE_DEFER)
    return bad_flags ("write_full", oid);
  return CALL (st, write_full, oid, oid, buf, len, flags);
}

int
store_create_excl (struct store *st, const char *oid, const void *buf,
                   size_t len, unsigned flags)
{
  CHECK_OID ("create", oid);
  if ((flags & STORE_WRITE_SYNC) && (flags & STORE_WRITE_DEFER))
    return bad_flags ("create", oid);
  return CALL (st, create_excl, oid, oid, buf, len, flags);
}

int
store_zero (struct store *st, const char *oid, uint64_t off, uint64_t len)
{
  CHECK_OID ("zero", oid);
  return CALL (st, zero, oid, oid, off, len);
}

int
store_truncate (struct store *st, const char *oid, uint64_t size)
{
  CHECK_OID ("truncate", oid);
  return CALL (st, truncate, oid, oid, size);
}

int
store_remove (struct store *st, const char *oid)
{
  CHECK_OID ("remove", oid);
  return CALL (st, remove, oid, oid);
}

int
store_stat (struct store *st, const char *oid, uint64_t snap, uint64_t *size)
{
  CHECK_OID ("stat", oid);
  return CALL (st, stat, oid, oid, snap, size);
}

int
store_flush (struct store *st)
{
  return CALL (st, flush, NULL);
}

/* An asynchronous call in flight: what its completion's error message
 * names.  The caller's OID buffer may be gone by then, so it is copied. */
struct aio_ctx {
  store_aio_cb cb;
  void *arg;
  const char *backend;
  const char *op;
  char oid[];
};

static struct aio_ctx *
aio_ctx_new (struct store *st, const char *op, const char *oid,
             store_aio_cb cb, void *arg)
{
  size_t n = strlen (oid) + 1;
  struct aio_ctx *a = malloc (sizeof *a + n);

  if (a == NULL) {
    vbk_errno (-ENOMEM, "store %s: %s: %s", st->ops->name, op, oid);
    return NULL;
  }
  a->cb = cb;
  a->arg = arg;
  a->backend = st->ops->name;
  a->op = op;
  memcpy (a->oid, oid, n);
  return a;
}

/* Gives a failed completion its message on the thread that runs the
 * caller's callback (store.h: "store BACKEND: OP: OID: reason"). */
static void
aio_done (void *arg, ssize_t ret)
{
  struct aio_ctx *a = arg;
  store_aio_cb cb = a->cb;
  void *cb_arg = a->arg;

  if (ret < 0)
    vbk_errno ((int) ret, "store %s: %s: %s", a->backend, a->op, a->oid);
  free (a);
  cb (cb_arg, ret);
}

int
store_aio_read (struct store *st, const char *oid, void *buf, size_t len,
                uint64_t off, uint64_t snap, store_aio_cb cb, void *arg)
{
  struct aio_ctx *a;
  int r;

  CHECK_OID ("aio_read", oid);
  if ((a = aio_ctx_new (st, "aio_read", oid, cb, arg)) == NULL)
    return -ENOMEM;
  r = CALL (st, aio_read, oid, oid, buf, len, off, snap, aio_done, a);
  if (r < 0)
    free (a);
  return r;
}

int
store_aio_write (struct store *st, const char *oid, const void *buf,
                 size_t len, uint64_t off, unsigned flags, store_aio_cb cb,
                 void *arg)
{
  struct aio_ctx *a;
  int r;

  CHECK_OID ("aio_write", oid);
  if (flags & STORE_WRITE_DEFER)
    return bad_flags ("aio_write", oid);
  if ((a = aio_ctx_new (st, "aio_write", oid, cb, arg)) == NULL)
    return -ENOMEM;
  r = CALL (st, aio_write, oid, oid, buf, len, off, flags, aio_done, a);
  if (r < 0)
    free (a);
  return r;
}

ssize_t
store_xattr_get (struct store *st, const char *oid, const char *name,
                 void *buf, size_t len)
{
  CHECK_OID ("xattr_get", oid);
  return CALL (st, xattr_get, oid, oid, name, buf, len);
}

int
store_xattr_set (struct store *st, const char *oid, const char *name,
                 const void *val, size_t len)
{
  CHECK_OID ("xattr_set", oid);
  return CALL (st, xattr_set, oid, oid, name, val, len);
}

int
store_xattr_rm (struct store *st, const char *oid, const char *name)
{
  CHECK_OID ("xattr_rm", oid);
  return CALL (st, xattr_rm, oid, oid, name);
}

int
store_xattr_cas (struct store *st, const char *oid, const char *name,
                 const void *old, size_t oldlen, const void *new,
                 size_t newlen)
{
  CHECK_OID ("xattr_cas", oid);
  return CALL (st, xattr_cas, oid, oid, name, old, oldlen, new, newlen);
}

int
store_omap_set (struct store *st, const char *oid, const char *key,
                const void *val, size_t len)
{
  CHECK_OID ("omap_set", oid);
  return CALL (st, omap_set, oid, oid, key, val, len);
}

int
store_meta_set (struct store *st, const char *oid,
                const struct store_meta_set *sets, size_t n)
{
  size_t i;
  int r = 0;

  CHECK_OID ("meta_set", oid);
  for (i = 0; i < n; i++)
    if (sets[i].len > 65536)   /* refused whole, as one op must be */
      return vbk_errno (-E2BIG, "store: meta_set: %s: %s: value too large",
                        oid, sets[i].name);
  if (st->ops->meta_set)
    return CALL (st, meta_set, oid, oid, sets, n);
  for (i = 0; r == 0 && i < n; i++)
    r = sets[i].omap
      ? store_omap_set (st, oid, sets[i].name, sets[i].val, sets[i].len)
      : store_xattr_set (st, oid, sets[i].name, sets[i].val, sets[i].len);
  return r;
}

ssize_t
store_omap_get (struct store *st, const char *oid, const char *key,
                void *buf, size_t len)
{
  CHECK_OID ("omap_get", oid);
  return CALL (st, omap_get, oid, oid, key, buf, len);
}

int
store_omap_rm (struct store *st, const char *oid, const char *key)
{
  CHECK_OID ("omap_rm", oid);
  return CALL (st, omap_rm, oid, oid, key);
}

int
store_omap_list (struct store *st, const char *oid, const char *after,
                 size_t max, store_omap_cb cb, void *arg)
{
  CHECK_OID ("omap_list", oid);
  return CALL (st, omap_list, oid, oid, after ? after : "", max, cb, arg);
}

int
store_lock (struct store *st, const char *oid, const char *name,
            const char *cookie, const char *desc, uint32_t duration_ms,
            unsigned flags)
{
  CHECK_OID ("lock", oid);
  return CALL (st, lock, oid, oid, name, cookie, desc ? desc : "",
               duration_ms, flags);
}

int
store_unlock (struct store *st, const char *oid, const char *name,
              const char *cookie)
{
  CHECK_OID ("unlock", oid);
  return CALL (st, unlock, oid, oid, name, cookie);
}

int
store_lock_break (struct store *st, const char *oid, const char *name,
                  const char *client, const char *cookie)
{
  CHECK_OID ("lock_break", oid);
  return CALL (st, lock_break, oid, oid, name, client, cookie);
}

int
store_lock_get (struct store *st, const char *oid, const char *name,
                struct store_lock_info *info)
{
  CHECK_OID ("lock_get", oid);
  memset (info, 0, sizeof *info);
  return CALL (st, lock_get, oid, oid, name, info);
}

int
store_watch (struct store *st, const char *oid, store_watch_cb cb, void *arg,
             struct store_watch **out)
{
  struct store_watch *w;
  int r;

  CHECK_OID ("watch", oid);
  w = calloc (1, sizeof *w);
  if (w == NULL)
    return vbk_errno (-ENOMEM, "store: watch");
  w->st = st;
  r = CALL (st, watch, oid, oid, cb, arg, &w->w);
  if (r < 0) {
    free (w);
    return r;
  }
  *out = w;
  return 0;
}

void
store_unwatch (struct store_watch *w)
{
  if (w == NULL)
    return;
  w->st->ops->unwatch (w->st->h, w->w);
  free (w);
}

int
store_notify (struct store *st, const char *oid, const void *payload,
              size_t len, uint32_t timeout_ms,
              struct store_notify_reply **replies, size_t *nreplies,
              size_t *timed_out)
{
  CHECK_OID ("notify", oid);
  *replies = NULL;
  *nreplies = 0;
  *timed_out = 0;
  return CALL (st, notify, oid, oid, payload, len, timeout_ms, replies,
               nreplies, timed_out);
}

void
store_notify_replies_free (struct store_notify_reply *r, size_t n)
{
  size_t i;

  for (i = 0; r && i < n; i++)
    free (r[i].data);
  free (r);
}

int
store_fence (struct store *st, const char *client, uint32_t expire_s)
{
  return CALL (st, fence, client, client, expire_s ? expire_s : 3600);
}

int
store_snap_create (struct store *st, uint64_t *snap)
{
  return CALL (st, snap_create, NULL, snap);
}

int
store_snap_remove (struct store *st, uint64_t snap)
{
  return CALL (st, snap_remove, NULL, snap);
}

int
store_set_snap_context (struct store *st, uint64_t seq,
                        const uint64_t *snaps, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++) {
    if (snaps[i] > seq || (i > 0 && snaps[i] >= snaps[i - 1])) {
      vbk_set_error ("store: snap context: snapshots must be newest first "
                     "and not above seq %llu", (unsigned long long) seq);
      return -EINVAL;
    }
  }
  return CALL (st, set_snap_context, NULL, seq, snaps, n);
}

int
store_snap_rollback (struct store *st, const char *oid, uint64_t snap)
{
  CHECK_OID ("snap_rollback", oid);
  return CALL (st, snap_rollback, oid, oid, snap);
}

int
store_fault_set (struct store *st, unsigned ops, int err, unsigned long nth,
                 int sticky, const char *trigger_file)
{
  if (st->ops->fault_set == NULL) {
    vbk_set_error ("store: fault injection needs a fault: store");
    return -EINVAL;
  }
  return st->ops->fault_set (st->h, ops, err, nth, sticky, trigger_file);
}

unsigned long
store_fault_count (struct store *st, unsigned ops)
{
  if (st->ops->fault_count == NULL)
    return 0;
  return st->ops->fault_count (st->h, ops);
}

uint64_t
store_fault_bytes_read (struct store *st)
{
  if (st->ops->fault_bytes_read == NULL)
    return 0;
  return st->ops->fault_bytes_read (st->h);
}
