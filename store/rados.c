/* SPDX-License-Identifier: MIT
 *
 * rados.c - the "rados:" store backend: objects in a Ceph pool.
 *
 * DESIGN: one connection (struct rconn: a rados_t, the pool, the
 * namespace, this client's address) is shared by a handle and its clones
 * and counted; each handle (struct rstore) has its own I/O context, so
 * each has its own self-managed snapshot write context.  librados is
 * used only here.
 *
 * Reads at a snapshot go through a separate I/O context per snapshot id
 * (rados_ioctx_snap_set_read changes a context for every operation on
 * it, so it is set once, when the context is made, and never changed).
 * Those contexts live in a small cache on the connection, counted while
 * in use and the least recently used idle ones closed past a limit.
 *
 * Asynchronous I/O uses rados completions with a callback; each handle
 * counts its requests in flight so store_close() can wait for reads as
 * well as writes (rados_aio_flush waits for writes only).
 *
 * Mapping to store.h:
 *  - The client id is the instance address rados_getaddrs() reports; it
 *    is what rados_blocklist_add() takes and what the lock class reports
 *    as a locker's address, so lock_get, lock_break and fence agree.
 *  - Locks are the "lock" object class (rados_lock_exclusive).  Its
 *    get_info method (called directly with rados_exec, its reply decoded
 *    here) gives each locker's description and expiry, which
 *    rados_list_lockers does not; rados_list_lockers gives the address
 *    string.  STORE_LOCK_RENEW is LIBRADOS_LOCK_FLAG_MUST_RENEW.
 *  - A watcher prefixes its ack payload with its client id (one length
 *    byte, then the id) so the notifier can tell who answered.  An OSD
 *    keeps a watch on an object, so watching a missing object creates
 *    it, empty.  Notify timeouts go to the OSD in whole seconds: they
 *    are rounded up.
 *  - The OSD compares a missing xattr or omap key as an empty value, so
 *    guards that must tell "missing" from "empty" make a second check in
 *    the (rare) empty case; only that case is not atomic against a
 *    concurrent remove.
 *  - The OSD turns a zero reaching the end of an object into a truncate;
 *    store_zero keeps the size by writing the last byte instead.
 *  - RADOS accepts removing a self-managed snapshot twice and rolling
 *    back to any id, so the store keeps its live snapshot ids as omap
 *    keys of one object, SNAP_REGISTRY, to answer -ENOENT.
 *  - Every I/O context sets the pool "full try" flag, so writes to a full
 *    cluster or pool fail with -ENOSPC / -EDQUOT instead of waiting.
 *  - -EBLOCKLISTED is -ESHUTDOWN on Linux: a fenced client's errors pass
 *    through unchanged.
 *
 * A handle's snapshot write context is plain librados state: set it
 * while no write of that handle is in flight (snapshots pause writes).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <rados/librados.h>

#include "common/error.h"
#include "common/timeouts.h"
#include "common/util.h"
#include "internal.h"

#define DEFAULT_TIMEOUT_S (VBK_STORE_OP_TIMEOUT_MS / 1000)
#define DEFAULT_FENCE_S 3600
#define SNAP_CACHE_MAX 32
#define OMAP_PAGE 256
#define XATTR_MAX (64 * 1024)
#define REPLY_MAX 4096
#define LOCK_INFO_MAX (1024 * 1024)

/* Linux: EBLOCKLISTED (librados) == ESHUTDOWN. */
#ifndef EBLOCKLISTED
#define EBLOCKLISTED ESHUTDOWN
#endif

struct snap_io {
  struct snap_io *next;
  uint64_t snap;
  rados_ioctx_t io;
  unsigned refs;
  uint64_t last_use;
};

struct rconn {
  rados_t cluster;
  int64_t pool_id;
  char *pool;
  char *nspace;                 /* NULL: the default namespace */
  char client_id[STORE_CLIENT_MAX];
  unsigned refs;                /* handles on this connection */
  rados_ioctx_t meta_io;        /* no snapshot context: the registry */

  pthread_mutex_t snap_lock;    /* protects the fields below */
  struct snap_io *snaps;
  size_t nsnaps;
  uint64_t use_clock;
};

struct rstore {
  struct rconn *conn;
  rados_ioctx_t io;

  pthread_mutex_t aio_lock;
  pthread_cond_t aio_cond;
  unsigned long aio_inflight;
};

struct rwatch {
  struct rstore *st;
  char *oid;
  uint64_t cookie;
  store_watch_cb cb;
  void *arg;
};

/* librados returns -errno already; only one code has another name. */
static int
map_err (int r)
{
  if (r == -EBLOCKLISTED)
    return -ESHUTDOWN;
  return r;
}

/* The lock class prints a locker's address with its type ("v1:");
 * rados_getaddrs does not for a client, and the blocklist ignores the
 * type.  Client ids are the address without it. */
static const char *
addr_plain (const char *a)
{
  static const char *const types[] = { "v1:", "v2:", "any:" };
  size_t i;

  for (i = 0; i < sizeof types / sizeof types[0]; i++)
    if (strncmp (a, types[i], strlen (types[i])) == 0)
      return a + strlen (types[i]);
  return a;
}

static int
fail (int r, const char *op, const char *oid)
{
  r = map_err (r);
  if (oid)
    return vbk_errno (r, "store: rados: %s: %s", op, oid);
  return vbk_errno (r, "store: rados: %s", op);
}

/* ---- Connection and handles -------------------------------------------- */

struct open_args {
  char *pool;
  char *nspace;
  char *conf;
  char *id;
  unsigned timeout;
};

static void
open_args_free (struct open_args *a)
{
  free (a->pool);
  free (a->nspace);
  free (a->conf);
  free (a->id);
}

/* POOL[/NAMESPACE][?conf=PATH&id=NAME&timeout=SECONDS] */
static int
parse_arg (const char *arg, struct open_args *a)
{
  CLEANUP_FREE char *s = NULL;
  char *q, *slash, *kv, *save = NULL;

  memset (a, 0, sizeof *a);
  a->timeout = DEFAULT_TIMEOUT_S;
  if (arg == NULL || *arg == '\0' || *arg == '?' || *arg == '/')
    goto bad;
  s = strdup (arg);
  if (s == NULL)
    return vbk_errno (-ENOMEM, "store: rados: open");
  q = strchr (s, '?');
  if (q)
    *q++ = '\0';
  slash = strchr (s, '/');
  if (slash) {
    *slash++ = '\0';
    if (*slash == '\0')
      goto bad;
    a->nspace = strdup (slash);
  }
  a->pool = strdup (s);
  for (kv = q ? strtok_r (q, "&", &save) : NULL; kv;
       kv = strtok_r (NULL, "&", &save)) {
    char *val = strchr (kv, '=');
    char **dst = NULL;

    if (val == NULL || val[1] == '\0') {
      vbk_set_error ("store: rados: invalid option '%s' in '%s': "
                     "expected KEY=VALUE", kv, arg);
      open_args_free (a);
      return -EINVAL;
    }
    *val++ = '\0';
    if (strcmp (kv, "conf") == 0)
      dst = &a->conf;
    else if (strcmp (kv, "id") == 0)
      dst = &a->id;
    else if (strcmp (kv, "timeout") == 0) {
      char *end;
      unsigned long t;

      errno = 0;
      t = strtoul (val, &end, 10);
      if (errno || *end || t == 0 || t > 86400 || *val == '-') {
        vbk_set_error ("store: rados: invalid timeout '%s' in '%s': "
                       "expected 1 to 86400 seconds", val, arg);
        open_args_free (a);
        return -EINVAL;
      }
      a->timeout = t;
      continue;
    }
    else {
      vbk_set_error ("store: rados: unknown option '%s' in '%s' "
                     "(known: conf, id, timeout)", kv, arg);
      open_args_free (a);
      return -EINVAL;
    }
    free (*dst);
    *dst = strdup (val);
    if (*dst == NULL)
      goto nomem;
  }
  if (a->pool == NULL || (slash && a->nspace == NULL))
    goto nomem;
  return 0;

 nomem:
  open_args_free (a);
  return vbk_errno (-ENOMEM, "store: rados: open");
 bad:
  vbk_set_error ("store: rados: invalid URI argument '%s': expected "
                 "POOL[/NAMESPACE][?conf=PATH&id=NAME&timeout=SECONDS]",
                 arg ? arg : "");
  return -EINVAL;
}

static int
make_ioctx (struct rconn *c, rados_ioctx_t *io)
{
  int r;

  r = rados_ioctx_create2 (c->cluster, c->pool_id, io);
  if (r < 0)
    return r;
  if (c->nspace)
    rados_ioctx_set_namespace (*io, c->nspace);
  /* Without it a write to a full pool waits (until the op timeout);
   * with it the OSD answers -ENOSPC or -EDQUOT, as store.h promises. */
  rados_set_pool_full_try (*io);
  return 0;
}

static void
conn_put (struct rconn *c)
{
  struct snap_io *s, *next;

  if (__atomic_sub_fetch (&c->refs, 1, __ATOMIC_ACQ_REL) != 0)
    return;
  for (s = c->snaps; s; s = next) {
    next = s->next;
    rados_ioctx_destroy (s->io);
    free (s);
  }
  rados_ioctx_destroy (c->meta_io);
  rados_shutdown (c->cluster);
  pthread_mutex_destroy (&c->snap_lock);
  free (c->pool);
  free (c->nspace);
  free (c);
}

static int
set_conf (rados_t cluster, const char *opt, unsigned val)
{
  char buf[32];
  int r;

  snprintf (buf, sizeof buf, "%u", val);
  r = rados_conf_set (cluster, opt, buf);
  if (r < 0)
    return vbk_errno (r, "store: rados: setting %s", opt);
  return 0;
}

static struct rstore *
handle_new (struct rconn *c)
{
  struct rstore *st = calloc (1, sizeof *st);

  if (st == NULL)
    return NULL;
  st->conn = c;
  pthread_mutex_init (&st->aio_lock, NULL);
  pthread_cond_init (&st->aio_cond, NULL);
  return st;
}

static void
handle_free (struct rstore *st)
{
  pthread_mutex_destroy (&st->aio_lock);
  pthread_cond_destroy (&st->aio_cond);
  free (st);
}

static int
rs_open (const char *arg, void **hp)
{
  struct open_args a;
  struct rconn *c = NULL;
  struct rstore *st = NULL;
  char *addrs = NULL;
  int r;

  r = parse_arg (arg, &a);
  if (r < 0)
    return r;

  c = calloc (1, sizeof *c);
  if (c == NULL) {
    r = vbk_errno (-ENOMEM, "store: rados: open");
    goto out_args;
  }
  pthread_mutex_init (&c->snap_lock, NULL);
  c->refs = 1;

  r = rados_create (&c->cluster, a.id ? a.id : "admin");
  if (r < 0) {
    r = vbk_errno (r, "store: rados: creating client '%s'",
                   a.id ? a.id : "admin");
    goto out_conn;
  }
  /* NULL: $CEPH_CONF, then the usual /etc/ceph/ceph.conf search. */
  r = rados_conf_read_file (c->cluster, a.conf);
  if (r < 0) {
    if (a.conf)
      r = vbk_errno (r, "store: rados: reading config '%s'", a.conf);
    else
      r = vbk_errno (r, "store: rados: reading config (CEPH_CONF=%s)",
                     getenv ("CEPH_CONF") ? getenv ("CEPH_CONF")
                     : "unset");
    goto out_cluster;
  }
  r = rados_conf_parse_env (c->cluster, NULL);
  if (r < 0) {
    r = vbk_errno (r, "store: rados: parsing CEPH_ARGS");
    goto out_cluster;
  }
  /* Never hang on an unreachable cluster or an inactive PG. */
  if ((r = set_conf (c->cluster, "client_mount_timeout", a.timeout)) < 0
      || (r = set_conf (c->cluster, "rados_mon_op_timeout", a.timeout)) < 0
      || (r = set_conf (c->cluster, "rados_osd_op_timeout", a.timeout)) < 0)
    goto out_cluster;

  r = rados_connect (c->cluster);
  if (r < 0) {
    r = vbk_errno (r, "store: rados: connecting to the cluster as "
                   "client.%s", a.id ? a.id : "admin");
    goto out_cluster;
  }
  c->pool_id = rados_pool_lookup (c->cluster, a.pool);
  if (c->pool_id < 0) {
    r = (int) c->pool_id;
    if (r == -ENOENT)
      vbk_set_error ("store: rados: pool '%s' does not exist", a.pool);
    else
      vbk_errno (r, "store: rados: looking up pool '%s'", a.pool);
    goto out_cluster;
  }
  r = rados_getaddrs (c->cluster, &addrs);
  if (r < 0) {
    r = vbk_errno (r, "store: rados: getting the client address");
    goto out_cluster;
  }
  if (addrs == NULL || strlen (addrs) >= STORE_CLIENT_MAX) {
    free (addrs);
    r = vbk_errno (-ENAMETOOLONG, "store: rados: client address");
    goto out_cluster;
  }
  strcpy (c->client_id, addr_plain (addrs));
  free (addrs);                 /* strdup()ed by librados */

  c->pool = a.pool;
  c->nspace = a.nspace;
  a.pool = a.nspace = NULL;

  r = make_ioctx (c, &c->meta_io);
  if (r < 0) {
    r = vbk_errno (r, "store: rados: opening pool '%s'", c->pool);
    goto out_cluster;
  }
  st = handle_new (c);
  if (st == NULL) {
    rados_ioctx_destroy (c->meta_io);
    r = vbk_errno (-ENOMEM, "store: rados: open");
    goto out_cluster;
  }
  r = make_ioctx (c, &st->io);
  if (r < 0) {
    r = vbk_errno (r, "store: rados: opening pool '%s'", c->pool);
    rados_ioctx_destroy (c->meta_io);
    handle_free (st);
    goto out_cluster;
  }
  open_args_free (&a);
  *hp = st;
  return 0;

 out_cluster:
  rados_shutdown (c->cluster);
 out_conn:
  pthread_mutex_destroy (&c->snap_lock);
  free (c->pool);
  free (c->nspace);
  free (c);
 out_args:
  open_args_free (&a);
  return r;
}

static int
rs_clone (void *parent, void **hp)
{
  struct rstore *p = parent, *st;
  int r;

  st = handle_new (p->conn);
  if (st == NULL)
    return vbk_errno (-ENOMEM, "store: rados: clone");
  r = make_ioctx (p->conn, &st->io);
  if (r < 0) {
    handle_free (st);
    return fail (r, "clone", NULL);
  }
  __atomic_add_fetch (&p->conn->refs, 1, __ATOMIC_ACQ_REL);
  *hp = st;
  return 0;
}

static void
aio_get (struct rstore *st)
{
  pthread_mutex_lock (&st->aio_lock);
  st->aio_inflight++;
  pthread_mutex_unlock (&st->aio_lock);
}

static void
aio_put (struct rstore *st)
{
  pthread_mutex_lock (&st->aio_lock);
  if (--st->aio_inflight == 0)
    pthread_cond_broadcast (&st->aio_cond);
  pthread_mutex_unlock (&st->aio_lock);
}

static void
rs_close (void *h)
{
  struct rstore *st = h;

  if (st == NULL)
    return;
  pthread_mutex_lock (&st->aio_lock);
  while (st->aio_inflight > 0)
    pthread_cond_wait (&st->aio_cond, &st->aio_lock);
  pthread_mutex_unlock (&st->aio_lock);
  rados_aio_flush (st->io);
  rados_ioctx_destroy (st->io);
  conn_put (st->conn);
  handle_free (st);
}

static const char *
rs_client_id (void *h)
{
  struct rstore *st = h;

  return st->conn->client_id;
}

/* ---- Reads at snapshots ------------------------------------------------- */

/* An I/O context that reads at SNAP, with a reference the caller drops
 * with snap_io_put.  For the head, the handle's own context. */
static int
snap_io_get (struct rstore *st, uint64_t snap, rados_ioctx_t *io,
             struct snap_io **ref)
{
  struct rconn *c = st->conn;
  struct snap_io *s, **pp, **victim;
  int r;

  *ref = NULL;
  if (snap == STORE_SNAP_HEAD) {
    *io = st->io;
    return 0;
  }
  pthread_mutex_lock (&c->snap_lock);
  for (s = c->snaps; s; s = s->next)
    if (s->snap == snap)
      goto found;

  s = calloc (1, sizeof *s);
  if (s == NULL) {
    pthread_mutex_unlock (&c->snap_lock);
    return -ENOMEM;
  }
  r = make_ioctx (c, &s->io);
  if (r < 0) {
    pthread_mutex_unlock (&c->snap_lock);
    free (s);
    return r;
  }
  rados_ioctx_snap_set_read (s->io, snap);
  s->snap = snap;
  s->next = c->snaps;
  c->snaps = s;
  c->nsnaps++;

  /* Close the least recently used idle context past the limit. */
  while (c->nsnaps > SNAP_CACHE_MAX) {
    victim = NULL;
    for (pp = &c->snaps; *pp; pp = &(*pp)->next)
      if ((*pp)->refs == 0 && *pp != s
          && (victim == NULL || (*pp)->last_use < (*victim)->last_use))
        victim = pp;
    if (victim == NULL)
      break;
    struct snap_io *v = *victim;
    *victim = v->next;
    c->nsnaps--;
    rados_ioctx_destroy (v->io);
    free (v);
  }

 found:
  s->refs++;
  s->last_use = ++c->use_clock;
  pthread_mutex_unlock (&c->snap_lock);
  *io = s->io;
  *ref = s;
  return 0;
}

static void
snap_io_put (struct rstore *st, struct snap_io *ref)
{
  if (ref == NULL)
    return;
  pthread_mutex_lock (&st->conn->snap_lock);
  ref->refs--;
  pthread_mutex_unlock (&st->conn->snap_lock);
}

/* ---- Object data -------------------------------------------------------- */

static ssize_t
rs_read (void *h, const char *oid, void *buf, size_t len, uint64_t off,
         uint64_t snap)
{
  struct rstore *st = h;
  struct snap_io *ref;
  rados_ioctx_t io;
  uint64_t size;
  int r;

  if (len > INT_MAX) {
    vbk_set_error ("store: rados: read: %s: length %zu too large", oid, len);
    return -EINVAL;
  }
  r = snap_io_get (st, snap, &io, &ref);
  if (r < 0)
    return fail (r, "read", oid);
  /* rados reads the whole object for a length of 0: only check that
   * the object exists. */
  if (len == 0)
    r = rados_stat (io, oid, &size, NULL);
  else
    r = rados_read (io, oid, buf, len, off);
  snap_io_put (st, ref);
  if (r < 0)
    return fail (r, "read", oid);
  if (len)
    memset ((char *) buf + r, 0, len - r);
  return len;
}

static int
write_op_run (struct rstore *st, rados_write_op_t op, const char *oid,
              const char *what)
{
  int r;

  r = rados_write_op_operate (op, st->io, oid, NULL, 0);
  rados_release_write_op (op);
  if (r < 0)
    return fail (r, what, oid);
  return 0;
}

static int
rs_write (void *h, const char *oid, const void *buf, size_t len,
          uint64_t off, unsigned flags)
{
  struct rstore *st = h;
  rados_write_op_t op;
  int r;

  /* RADOS acknowledges a write once every replica has it: durable at
   * completion, so STORE_WRITE_SYNC needs nothing more. */
  if (len > INT_MAX) {
    vbk_set_error ("store: rados: write: %s: length %zu too large", oid, len);
    return -EINVAL;
  }
  if (len == 0) {
    /* A zero-length write at OFF would set the size to OFF; store.h
     * only promises that the object exists afterwards. */
    op = rados_create_write_op ();
    if (op == NULL)
      return vbk_errno (-ENOMEM, "store: rados: write: %s", oid);
    rados_write_op_create (op, LIBRADOS_CREATE_IDEMPOTENT, NULL);
    return write_op_run (st, op, oid, "write");
  }
  r = rados_write (st->io, oid, buf, len, off);
  if (r < 0)
    return fail (r, "write", oid);
  return 0;
}

static int
rs_write_full (void *h, const char *oid, const void *buf, size_t len,
               unsigned flags)
{
  struct rstore *st = h;
  rados_write_op_t op;

  if (len > INT_MAX) {
    vbk_set_error ("store: rados: write_full: %s: length %zu too large",
                   oid, len);
    return -EINVAL;
  }
  op = rados_create_write_op ();
  if (op == NULL)
    return vbk_errno (-ENOMEM, "store: rados: write_full: %s", oid);
  rados_write_op_create (op, LIBRADOS_CREATE_IDEMPOTENT, NULL);
  rados_write_op_write_full (op, buf, len);
  return write_op_run (st, op, oid, "write_full");
}

static int
rs_create_excl (void *h, const char *oid, const void *buf, size_t len,
                unsigned flags)
{
  struct rstore *st = h;
  rados_write_op_t op;

  if (len > INT_MAX) {
    vbk_set_error ("store: rados: create: %s: length %zu too large",
                   oid, len);
    return -EINVAL;
  }
  op = rados_create_write_op ();
  if (op == NULL)
    return vbk_errno (-ENOMEM, "store: rados: create: %s", oid);
  rados_write_op_create (op, LIBRADOS_CREATE_EXCLUSIVE, NULL);
  if (len)
    rados_write_op_write_full (op, buf, len);
  return write_op_run (st, op, oid, "create");
}

static int
rs_stat (void *h, const char *oid, uint64_t snap, uint64_t *size)
{
  struct rstore *st = h;
  struct snap_io *ref;
  rados_ioctx_t io;
  uint64_t sz;
  int r;

  r = snap_io_get (st, snap, &io, &ref);
  if (r < 0)
    return fail (r, "stat", oid);
  r = rados_stat (io, oid, &sz, NULL);
  snap_io_put (st, ref);
  if (r < 0)
    return fail (r, "stat", oid);
  *size = sz;
  return 0;
}

static int
rs_zero (void *h, const char *oid, uint64_t off, uint64_t len)
{
  struct rstore *st = h;
  rados_write_op_t op;
  uint64_t size;
  int r;

  uint64_t end;

  /* The OSD turns a zero that reaches the end of the object into a
   * truncate at OFF, which would change the size.  So zero up to one
   * byte short of the end and write that byte.  A zero past the end is
   * a no-op. */
  r = rados_stat (st->io, oid, &size, NULL);
  if (r < 0)
    return fail (r, "zero", oid);
  if (len == 0 || off >= size)
    return 0;
  end = len > size - off ? size : off + len;
  op = rados_create_write_op ();
  if (op == NULL)
    return vbk_errno (-ENOMEM, "store: rados: zero: %s", oid);
  rados_write_op_assert_exists (op);
  if (end < size)
    rados_write_op_zero (op, off, end - off);
  else {
    if (end - 1 > off)
      rados_write_op_zero (op, off, end - 1 - off);
    rados_write_op_write (op, "", 1, end - 1);
  }
  return write_op_run (st, op, oid, "zero");
}

static int
rs_truncate (void *h, const char *oid, uint64_t size)
{
  struct rstore *st = h;
  rados_write_op_t op;

  op = rados_create_write_op ();
  if (op == NULL)
    return vbk_errno (-ENOMEM, "store: rados: truncate: %s", oid);
  rados_write_op_assert_exists (op);
  rados_write_op_truncate (op, size);
  return write_op_run (st, op, oid, "truncate");
}

static int
rs_remove (void *h, const char *oid)
{
  struct rstore *st = h;
  int r;

  r = rados_remove (st->io, oid);
  if (r < 0)
    return fail (r, "remove", oid);
  return 0;
}

static int
rs_flush (void *h)
{
  struct rstore *st = h;
  int r;

  /* Completed writes are already durable; wait for this handle's
   * writes still in flight. */
  r = rados_aio_flush (st->io);
  if (r < 0)
    return fail (r, "flush", NULL);
  return 0;
}

/* ---- Asynchronous data I/O ---------------------------------------------- */

struct aio_req {
  struct rstore *st;
  struct snap_io *ref;
  store_aio_cb cb;
  void *arg;
  char *buf;
  size_t len;
  bool is_read;
  uint64_t size;                /* for a stat standing in for a 0 read */
};

static void
aio_done (rados_completion_t c, void *arg)
{
  struct aio_req *req = arg;
  struct rstore *st = req->st;
  int r = rados_aio_get_return_value (c);
  ssize_t ret;

  rados_aio_release (c);
  snap_io_put (st, req->ref);
  if (r < 0)
    ret = map_err (r);
  else if (req->is_read) {
    if (req->len && (size_t) r < req->len)
      memset (req->buf + r, 0, req->len - r);
    ret = req->len;
  }
  else
    ret = 0;
  req->cb (req->arg, ret);
  free (req);
  aio_put (st);
}

static int
aio_start (struct rstore *st, struct aio_req **reqp, rados_completion_t *c,
           store_aio_cb cb, void *arg, const char *what, const char *oid)
{
  struct aio_req *req = calloc (1, sizeof *req);
  int r;

  /* Defined on every path: on failure the caller sees NULL, never an
   * indeterminate pointer (gcc -O2 cannot tell that the error paths
   * always return a negative value and warned about aio_abort). */
  *reqp = NULL;
  if (req == NULL)
    return vbk_errno (-ENOMEM, "store: rados: %s: %s", what, oid);
  req->st = st;
  req->cb = cb;
  req->arg = arg;
  r = rados_aio_create_completion2 (req, aio_done, c);
  if (r < 0) {
    free (req);
    return fail (r, what, oid);
  }
  aio_get (st);
  *reqp = req;
  return 0;
}

static int
aio_abort (struct rstore *st, struct aio_req *req, rados_completion_t c,
           int r, const char *what, const char *oid)
{
  rados_aio_release (c);
  snap_io_put (st, req->ref);
  free (req);
  aio_put (st);
  return fail (r, what, oid);
}

static int
rs_aio_read (void *h, const char *oid, void *buf, size_t len, uint64_t off,
             uint64_t snap, store_aio_cb cb, void *arg)
{
  struct rstore *st = h;
  struct aio_req *req;
  rados_completion_t c;
  rados_ioctx_t io;
  int r;

  if (len > INT_MAX) {
    vbk_set_error ("store: rados: aio_read: %s: length %zu too large",
                   oid, len);
    return -EINVAL;
  }
  r = aio_start (st, &req, &c, cb, arg, "aio_read", oid);
  if (r < 0)
    return r;
  req->buf = buf;
  req->len = len;
  req->is_read = true;
  r = snap_io_get (st, snap, &io, &req->ref);
  if (r < 0)
    return aio_abort (st, req, c, r, "aio_read", oid);
  if (len == 0)
    r = rados_aio_stat (io, oid, c, &req->size, NULL);
  else
    r = rados_aio_read (io, oid, c, buf, len, off);
  if (r < 0)
    return aio_abort (st, req, c, r, "aio_read", oid);
  return 0;
}

static int
rs_aio_write (void *h, const char *oid, const void *buf, size_t len,
              uint64_t off, unsigned flags, store_aio_cb cb, void *arg)
{
  struct rstore *st = h;
  struct aio_req *req;
  rados_completion_t c;
  rados_write_op_t op;
  int r;

  if (len > INT_MAX) {
    vbk_set_error ("store: rados: aio_write: %s: length %zu too large",
                   oid, len);
    return -EINVAL;
  }
  r = aio_start (st, &req, &c, cb, arg, "aio_write", oid);
  if (r < 0)
    return r;
  if (len == 0) {
    op = rados_create_write_op ();
    if (op == NULL)
      return aio_abort (st, req, c, -ENOMEM, "aio_write", oid);
    rados_write_op_create (op, LIBRADOS_CREATE_IDEMPOTENT, NULL);
    r = rados_aio_write_op_operate (op, st->io, c, oid, NULL, 0);
    rados_release_write_op (op);
  }
  else
    r = rados_aio_write (st->io, oid, c, buf, len, off);
  if (r < 0)
    return aio_abort (st, req, c, r, "aio_write", oid);
  return 0;
}

/* ---- Xattrs ------------------------------------------------------------- */

static ssize_t
rs_xattr_get (void *h, const char *oid, const char *name, void *buf,
              size_t len)
{
  struct rstore *st = h;
  CLEANUP_FREE char *tmp = NULL;
  size_t cap;
  int r;

  r = rados_getxattr (st->io, oid, name, buf,
                      MIN (len, (size_t) INT_MAX));
  if (r >= 0)
    return r;
  /* librados says -ERANGE for a short buffer; store.h truncates. */
  for (cap = XATTR_MAX + 1; r == -ERANGE && cap <= 64 * XATTR_MAX;
       cap *= 4) {
    free (tmp);
    tmp = malloc (cap);
    if (tmp == NULL)
      return vbk_errno (-ENOMEM, "store: rados: xattr_get: %s", oid);
    r = rados_getxattr (st->io, oid, name, tmp, cap);
  }
  if (r < 0)
    return vbk_errno (map_err (r), "store: rados: xattr_get: %s: %s",
                      oid, name);
  if (len)
    memcpy (buf, tmp, MIN (len, (size_t) r));
  return r;
}

static int
rs_xattr_set (void *h, const char *oid, const char *name, const void *val,
              size_t len)
{
  struct rstore *st = h;
  int r;

  r = rados_setxattr (st->io, oid, name, val, len);
  if (r < 0)
    return vbk_errno (map_err (r), "store: rados: xattr_set: %s: %s",
                      oid, name);
  return 0;
}

/* 0 if xattr NAME exists (empty or not), -ENODATA, -ENOENT, ... */
static int
xattr_exists (struct rstore *st, const char *oid, const char *name)
{
  char c;
  int r;

  r = rados_getxattr (st->io, oid, name, &c, 0);
  if (r >= 0 || r == -ERANGE)
    return 0;
  return map_err (r);
}

static int
rs_xattr_rm (void *h, const char *oid, const char *name)
{
  struct rstore *st = h;
  rados_write_op_t op;
  int r;

  /* rados removes a missing xattr without complaint; guard with "value
   * differs from empty", which a missing xattr fails. */
  op = rados_create_write_op ();
  if (op == NULL)
    return vbk_errno (-ENOMEM, "store: rados: xattr_rm: %s", oid);
  rados_write_op_cmpxattr (op, name, LIBRADOS_CMPXATTR_OP_NE, "", 0);
  rados_write_op_rmxattr (op, name);
  r = rados_write_op_operate (op, st->io, oid, NULL, 0);
  rados_release_write_op (op);
  if (r == -ECANCELED) {
    /* Missing, or present with an empty value. */
    r = xattr_exists (st, oid, name);
    if (r == 0)
      r = rados_rmxattr (st->io, oid, name);
  }
  if (r < 0)
    return vbk_errno (map_err (r), "store: rados: xattr_rm: %s: %s",
                      oid, name);
  return 0;
}

static int
rs_xattr_cas (void *h, const char *oid, const char *name, const void *old,
              size_t oldlen, const void *new, size_t newlen)
{
  struct rstore *st = h;
  rados_write_op_t op;
  int r;

  /* cmpxattr compares a missing xattr as an empty value: an empty OLD
   * needs a separate check that the xattr exists. */
  if (oldlen == 0) {
    r = xattr_exists (st, oid, name);
    if (r == -ENODATA)
      r = -ECANCELED;
    if (r < 0)
      return vbk_errno (r, "store: rados: xattr_cas: %s: %s", oid, name);
  }
  op = rados_create_write_op ();
  if (op == NULL)
    return vbk_errno (-ENOMEM, "store: rados: xattr_cas: %s", oid);
  rados_write_op_cmpxattr (op, name, LIBRADOS_CMPXATTR_OP_EQ,
                           oldlen ? old : "", oldlen);
  rados_write_op_setxattr (op, name, new ? new : "", newlen);
  r = rados_write_op_operate (op, st->io, oid, NULL, 0);
  rados_release_write_op (op);
  if (r == -ENODATA)
    r = -ECANCELED;
  if (r < 0)
    return vbk_errno (map_err (r), "store: rados: xattr_cas: %s: %s",
                      oid, name);
  return 0;
}

/* ---- Omap --------------------------------------------------------------- */

static int
rs_omap_set (void *h, const char *oid, const char *key, const void *val,
             size_t len)
{
  struct rstore *st = h;
  rados_write_op_t op;
  const char *keys[1] = { key };
  const char *vals[1] = { val ? val : "" };
  size_t lens[1] = { len };
  int r;

  op = rados_create_write_op ();
  if (op == NULL)
    return vbk_errno (-ENOMEM, "store: rados: omap_set: %s", oid);
  rados_write_op_omap_set (op, keys, vals, lens, 1);
  r = rados_write_op_operate (op, st->io, oid, NULL, 0);
  rados_release_write_op (op);
  if (r < 0)
    return vbk_errno (map_err (r), "store: rados: omap_set: %s: %s",
                      oid, key);
  return 0;
}

static int
rs_omap_set_many (void *h, const char *oid, const char *const *keys,
                  const void *const *vals, const size_t *lens, size_t n)
{
  struct rstore *st = h;
  rados_write_op_t op;
  const char **v;
  size_t i;
  int r;

  for (i = 0; i < n; i++)
    if (lens[i] > 65536)
      return vbk_errno (-E2BIG, "store: rados: omap_set_many: %s: value "
                        "too large", oid);
  if ((v = calloc (n, sizeof *v)) == NULL
      || (op = rados_create_write_op ()) == NULL) {
    free (v);
    return vbk_errno (-ENOMEM, "store: rados: omap_set_many: %s", oid);
  }
  for (i = 0; i < n; i++)
    v[i] = vals[i] ? vals[i] : "";
  /* One write op: the OSD applies every key or none. */
  rados_write_op_omap_set (op, (const char *const *) keys,
                           (const char *const *) v, lens, n);
  r = rados_write_op_operate (op, st->io, oid, NULL, 0);
  rados_release_write_op (op);
  free (v);
  if (r < 0)
    return vbk_errno (map_err (r), "store: rados: omap_set_many: %s: %zu "
                      "keys", oid, n);
  return 0;
}

/* Value length of KEY (copying at most LEN bytes to BUF, if BUF), or
 * -ENOENT (no object or no key), ... */
static ssize_t
omap_lookup (struct rstore *st, const char *oid, const char *key,
             void *buf, size_t len)
{
  rados_read_op_t op;
  rados_omap_iter_t iter = NULL;
  const char *keys[1] = { key };
  char *k, *v;
  size_t klen, vlen;
  int r, prval = 0;

  op = rados_create_read_op ();
  if (op == NULL)
    return -ENOMEM;
  rados_read_op_omap_get_vals_by_keys (op, keys, 1, &iter, &prval);
  r = rados_read_op_operate (op, st->io, oid, 0);
  rados_release_read_op (op);
  if (r == 0 && prval < 0)
    r = prval;
  if (r < 0) {
    if (iter)
      rados_omap_get_end (iter);
    return map_err (r);
  }
  r = rados_omap_get_next2 (iter, &k, &v, &klen, &vlen);
  if (r == 0 && k == NULL)
    r = -ENOENT;
  if (r == 0) {
    if (buf && len && vlen)
      memcpy (buf, v, MIN (len, vlen));
    r = vlen > SSIZE_MAX ? -EOVERFLOW : 0;
  }
  rados_omap_get_end (iter);
  return r < 0 ? r : (ssize_t) vlen;
}

static ssize_t
rs_omap_get (void *h, const char *oid, const char *key, void *buf,
             size_t len)
{
  ssize_t r;

  r = omap_lookup (h, oid, key, buf, len);
  if (r < 0)
    return vbk_errno ((int) r, "store: rados: omap_get: %s: %s", oid, key);
  return r;
}

static int
rs_omap_rm (void *h, const char *oid, const char *key)
{
  struct rstore *st = h;
  rados_write_op_t op;
  const char *keys[1] = { key };
  int r, prval = 0;

  /* Removing a missing key is no error in rados.  An omap comparison
   * treats a missing key as an empty value, so "greater than empty"
   * guards every key with a non-empty value atomically. */
  op = rados_create_write_op ();
  if (op == NULL)
    return vbk_errno (-ENOMEM, "store: rados: omap_rm: %s", oid);
  rados_write_op_omap_cmp (op, key, LIBRADOS_CMPXATTR_OP_GT, "", 0, &prval);
  rados_write_op_omap_rm_keys (op, keys, 1);
  r = rados_write_op_operate (op, st->io, oid, NULL, 0);
  rados_release_write_op (op);
  if (r == -ECANCELED) {
    /* Missing, or present with an empty value. */
    r = (int) omap_lookup (st, oid, key, NULL, 0);
    if (r >= 0) {
      op = rados_create_write_op ();
      if (op == NULL)
        return vbk_errno (-ENOMEM, "store: rados: omap_rm: %s", oid);
      rados_write_op_assert_exists (op);
      rados_write_op_omap_rm_keys (op, keys, 1);
      r = rados_write_op_operate (op, st->io, oid, NULL, 0);
      rados_release_write_op (op);
    }
  }
  if (r < 0)
    return vbk_errno (map_err (r), "store: rados: omap_rm: %s: %s",
                      oid, key);
  return 0;
}

static int
rs_omap_list (void *h, const char *oid, const char *after, size_t max,
              store_omap_cb cb, void *arg)
{
  struct rstore *st = h;
  CLEANUP_FREE char *cursor = strdup (after ? after : "");
  size_t done = 0;
  int r;

  if (cursor == NULL)
    return vbk_errno (-ENOMEM, "store: rados: omap_list: %s", oid);
  if (max == 0) {
    uint64_t size;

    r = rados_stat (st->io, oid, &size, NULL);
    return r < 0 ? fail (r, "omap_list", oid) : 0;
  }
  for (;;) {
    rados_read_op_t op;
    rados_omap_iter_t iter = NULL;
    unsigned char more = 0;
    size_t n = 0, klen, vlen;
    char *k, *v;
    int prval = 0;

    op = rados_create_read_op ();
    if (op == NULL)
      return vbk_errno (-ENOMEM, "store: rados: omap_list: %s", oid);
    rados_read_op_omap_get_vals2 (op, cursor, "",
                                  MIN (max - done, (size_t) OMAP_PAGE),
                                  &iter, &more, &prval);
    r = rados_read_op_operate (op, st->io, oid, 0);
    rados_release_read_op (op);
    if (r == 0 && prval < 0)
      r = prval;
    if (r < 0) {
      if (iter)
        rados_omap_get_end (iter);
      return fail (r, "omap_list", oid);
    }
    while (rados_omap_get_next2 (iter, &k, &v, &klen, &vlen) == 0
           && k != NULL) {
      n++;
      done++;
      r = cb (arg, k, v ? v : "", vlen);
      if (r != 0 || done == max) {
        rados_omap_get_end (iter);
        return r;
      }
      free (cursor);
      cursor = strndup (k, klen);
      if (cursor == NULL) {
        rados_omap_get_end (iter);
        return vbk_errno (-ENOMEM, "store: rados: omap_list: %s", oid);
      }
    }
    rados_omap_get_end (iter);
    if (!more || n == 0)
      return 0;
  }
}

/* ---- Locks -------------------------------------------------------------- */

static int
rs_lock (void *h, const char *oid, const char *name, const char *cookie,
         const char *desc, uint32_t duration_ms, unsigned flags)
{
  struct rstore *st = h;
  struct timeval tv;
  uint8_t lflags = 0;
  int r;

  tv.tv_sec = duration_ms / 1000;
  tv.tv_usec = (duration_ms % 1000) * 1000;
  /* MUST_RENEW: renewing a lock we no longer hold is -ENOENT (the lock
   * class checks our own entry before it looks at other holders). */
  if (flags & STORE_LOCK_RENEW)
    lflags = LIBRADOS_LOCK_FLAG_MUST_RENEW;
  r = rados_lock_exclusive (st->io, oid, name, cookie, desc ? desc : "",
                            duration_ms ? &tv : NULL, lflags);
  if (r == -EBUSY && (flags & STORE_LOCK_RENEW))
    r = -ENOENT;
  if (r < 0)
    return vbk_errno (map_err (r), "store: rados: lock: %s: %s",
                      oid, name);
  return 0;
}

static int
rs_unlock (void *h, const char *oid, const char *name, const char *cookie)
{
  struct rstore *st = h;
  int r;

  r = rados_unlock (st->io, oid, name, cookie);
  if (r < 0)
    return vbk_errno (map_err (r), "store: rados: unlock: %s: %s",
                      oid, name);
  return 0;
}

/* One locker as rados_list_lockers reports it. */
struct locker {
  const char *client;           /* "client.4123" */
  const char *cookie;
  const char *addr;             /* "127.0.0.1:0/123456": a client id */
};

struct lockers {
  char *clients, *cookies, *addrs, *tag;
  struct locker *v;
  size_t n;
};

static void
lockers_free (struct lockers *l)
{
  free (l->clients);
  free (l->cookies);
  free (l->addrs);
  free (l->tag);
  free (l->v);
  memset (l, 0, sizeof *l);
}

static int
list_lockers (struct rstore *st, const char *oid, const char *name,
              struct lockers *l)
{
  size_t clen = 256, klen = 256, alen = 256, tlen = 64, i;
  const char *c, *k, *a;
  int excl, tries;
  ssize_t n = -ERANGE;

  memset (l, 0, sizeof *l);
  for (tries = 0; n == -ERANGE && tries < 8; tries++) {
    lockers_free (l);
    l->clients = malloc (clen);
    l->cookies = malloc (klen);
    l->addrs = malloc (alen);
    l->tag = malloc (tlen);
    if (!l->clients || !l->cookies || !l->addrs || !l->tag) {
      lockers_free (l);
      return -ENOMEM;
    }
    n = rados_list_lockers (st->io, oid, name, &excl, l->tag, &tlen,
                            l->clients, &clen, l->cookies, &klen,
                            l->addrs, &alen);
  }
  if (n < 0) {
    lockers_free (l);
    return (int) n;
  }
  l->v = calloc (n ? n : 1, sizeof *l->v);
  if (l->v == NULL) {
    lockers_free (l);
    return -ENOMEM;
  }
  c = l->clients;
  k = l->cookies;
  a = l->addrs;
  for (i = 0; i < (size_t) n; i++) {
    l->v[i].client = c;
    l->v[i].cookie = k;
    l->v[i].addr = addr_plain (a);
    c += strlen (c) + 1;
    k += strlen (k) + 1;
    a += strlen (a) + 1;
  }
  l->n = n;
  return 0;
}

/* A little-endian reader over the lock class's reply. */
struct dec {
  const unsigned char *p, *end;
  bool bad;
};

static const unsigned char *
dec_take (struct dec *d, size_t n)
{
  const unsigned char *p = d->p;

  if (d->bad || (size_t) (d->end - d->p) < n) {
    d->bad = true;
    return NULL;
  }
  d->p += n;
  return p;
}

static uint64_t
dec_le (struct dec *d, size_t n)
{
  const unsigned char *p = dec_take (d, n);
  uint64_t v = 0;

  while (p && n--)
    v = (v << 8) | p[n];
  return v;
}

/* ENCODE_START header: u8 version, u8 compat, le32 length.  Returns the
 * end of the struct. */
static const unsigned char *
dec_struct (struct dec *d)
{
  uint32_t len;

  dec_take (d, 2);
  len = dec_le (d, 4);
  if (d->bad || (size_t) (d->end - d->p) < len) {
    d->bad = true;
    return d->p;
  }
  return d->p + len;
}

static const char *
dec_string (struct dec *d, size_t *len)
{
  *len = dec_le (d, 4);
  return (const char *) dec_take (d, *len);
}

/* What the lock class stores per locker and rados_list_lockers leaves
 * out: the description and the expiry. */
struct locker_extra {
  uint64_t gid;
  const char *cookie;
  size_t cookie_len;
  const char *desc;
  size_t desc_len;
  uint64_t expires_ms;
};

/* Calls the lock class's get_info and decodes its reply
 * (cls_lock_get_info_reply: map<locker_id_t, locker_info_t>, type,
 * tag).  *OUT points into *RAW, which the caller frees. */
static int
lock_info_get (struct rstore *st, const char *oid, const char *name,
               char **raw, struct locker_extra **out, size_t *nout)
{
  size_t nlen = strlen (name), cap, n, i, len;
  unsigned char *in;
  struct dec d;
  int r;

  *raw = NULL;
  *out = NULL;
  *nout = 0;
  /* cls_lock_get_info_op: ENCODE_START(1, 1) { string name } */
  in = malloc (10 + nlen);
  if (in == NULL)
    return -ENOMEM;
  in[0] = 1;
  in[1] = 1;
  for (i = 0; i < 4; i++)
    in[2 + i] = ((4 + nlen) >> (8 * i)) & 0xff;
  for (i = 0; i < 4; i++)
    in[6 + i] = (nlen >> (8 * i)) & 0xff;
  memcpy (in + 10, name, nlen);
  for (cap = 4096;; cap *= 4) {
    free (*raw);
    *raw = malloc (cap);
    if (*raw == NULL) {
      free (in);
      return -ENOMEM;
    }
    r = rados_exec (st->io, oid, "lock", "get_info", (const char *) in,
                    10 + nlen, *raw, cap);
    if (r != -ERANGE || cap >= LOCK_INFO_MAX)
      break;
  }
  free (in);
  if (r < 0)
    goto err;

  d.p = (unsigned char *) *raw;
  d.end = d.p + r;
  d.bad = false;
  dec_struct (&d);
  n = dec_le (&d, 4);
  if (d.bad || n > 4096)
    goto bad;
  *out = calloc (n ? n : 1, sizeof **out);
  if (*out == NULL) {
    r = -ENOMEM;
    goto err;
  }
  for (i = 0; i < n; i++) {
    struct locker_extra *e = &(*out)[i];
    const unsigned char *end;
    uint64_t sec, nsec;
    uint8_t marker;

    /* locker_id_t: entity_name_t { u8 type, le64 num }, string cookie */
    end = dec_struct (&d);
    dec_take (&d, 1);
    e->gid = dec_le (&d, 8);
    e->cookie = dec_string (&d, &e->cookie_len);
    if (d.bad)
      goto bad;
    d.p = end;
    /* locker_info_t: utime_t expiration, entity_addr_t, string desc */
    end = dec_struct (&d);
    sec = dec_le (&d, 4);
    nsec = dec_le (&d, 4);
    e->expires_ms = sec || nsec ? sec * 1000 + nsec / 1000000 : 0;
    marker = dec_le (&d, 1);
    if (marker == 1) {
      /* entity_addr_t with MSG_ADDR2: u8 1, then a versioned struct. */
      d.p = dec_struct (&d);
    }
    else {
      /* Legacy: le32 0 (first byte read), le32 nonce, 128 bytes of
       * sockaddr_storage. */
      dec_take (&d, 3 + 4 + 128);
    }
    e->desc = dec_string (&d, &len);
    e->desc_len = len;
    if (d.bad || d.p > end)
      goto bad;
    d.p = end;
  }
  *nout = n;
  return 0;

 bad:
  r = -EIO;
 err:
  free (*raw);
  free (*out);
  *raw = NULL;
  *out = NULL;
  return r;
}

static int
rs_lock_get (void *h, const char *oid, const char *name,
             struct store_lock_info *info)
{
  struct rstore *st = h;
  struct lockers l;
  struct locker_extra *ex;
  char *raw;
  size_t nex, i, j;
  int r, tries;

  /* Two calls, so a lock that changes between them is read again. */
  for (tries = 0; tries < 5; tries++) {
    r = list_lockers (st, oid, name, &l);
    if (r == -ENOENT || (r == 0 && l.n == 0)) {
      if (r == 0)
        lockers_free (&l);
      vbk_set_error ("store: rados: lock_get: %s: %s: not locked",
                     oid, name);
      return -ENOENT;
    }
    if (r < 0)
      return vbk_errno (map_err (r), "store: rados: lock_get: %s: %s",
                        oid, name);
    r = lock_info_get (st, oid, name, &raw, &ex, &nex);
    if (r < 0) {
      lockers_free (&l);
      if (r == -EIO)
        vbk_set_error ("store: rados: lock_get: %s: %s: cannot decode "
                       "the lock class's reply", oid, name);
      else
        vbk_errno (map_err (r), "store: rados: lock_get: %s: %s",
                   oid, name);
      return map_err (r);
    }
    for (i = 0; i < nex; i++) {
      char cname[32];

      snprintf (cname, sizeof cname, "client.%" PRIu64, ex[i].gid);
      for (j = 0; j < l.n; j++)
        if (strcmp (l.v[j].client, cname) == 0
            && strlen (l.v[j].cookie) == ex[i].cookie_len
            && memcmp (l.v[j].cookie, ex[i].cookie, ex[i].cookie_len) == 0)
          goto found;
    }
    free (raw);
    free (ex);
    lockers_free (&l);
    continue;

  found:
    memset (info, 0, sizeof *info);
    snprintf (info->client, sizeof info->client, "%s", l.v[j].addr);
    snprintf (info->cookie, sizeof info->cookie, "%s", l.v[j].cookie);
    snprintf (info->desc, sizeof info->desc, "%.*s",
              (int) MIN (ex[i].desc_len, sizeof info->desc - 1),
              ex[i].desc);
    info->expires_ms = ex[i].expires_ms;
    free (raw);
    free (ex);
    lockers_free (&l);
    /* The lock class drops expired lockers when it reads; this only
     * closes the gap of the call itself. */
    if (info->expires_ms && info->expires_ms <= now_wall_ms ()) {
      vbk_set_error ("store: rados: lock_get: %s: %s: not locked "
                     "(expired)", oid, name);
      return -ENOENT;
    }
    return 0;
  }
  vbk_set_error ("store: rados: lock_get: %s: %s: the lock kept changing",
                 oid, name);
  return -EAGAIN;
}

static int
rs_lock_break (void *h, const char *oid, const char *name,
               const char *client, const char *cookie)
{
  struct rstore *st = h;
  struct lockers l;
  size_t i;
  int r;

  /* rados_break_lock wants the entity name ("client.4123"); find the
   * locker with this address and cookie. */
  r = list_lockers (st, oid, name, &l);
  if (r < 0 && r != -ENOENT)
    return vbk_errno (map_err (r), "store: rados: lock_break: %s: %s",
                      oid, name);
  for (i = 0; r == 0 && i < l.n; i++)
    if (strcmp (l.v[i].addr, addr_plain (client)) == 0
        && strcmp (l.v[i].cookie, cookie) == 0)
      break;
  if (r == -ENOENT || i == l.n) {
    if (r == 0)
      lockers_free (&l);
    vbk_set_error ("store: rados: lock_break: %s: %s: not held by %s "
                   "with cookie '%s'", oid, name, client, cookie);
    return -ENOENT;
  }
  r = rados_break_lock (st->io, oid, name, l.v[i].client, cookie);
  lockers_free (&l);
  if (r < 0)
    return vbk_errno (map_err (r), "store: rados: lock_break: %s: %s",
                      oid, name);
  return 0;
}

/* ---- Watch / notify ----------------------------------------------------- */

static void
watch_notify_cb (void *arg, uint64_t notify_id, uint64_t handle,
                 uint64_t notifier_id, void *data, size_t len)
{
  struct rwatch *w = arg;
  const char *id = w->st->conn->client_id;
  size_t idlen = strlen (id), rlen = 0;
  char ack[1 + STORE_CLIENT_MAX + REPLY_MAX];

  /* Ack payload: u8 id length, the id, then the callback's reply. */
  ack[0] = (char) idlen;
  memcpy (ack + 1, id, idlen);
  w->cb (w->arg, 0, data, len, ack + 1 + idlen, REPLY_MAX, &rlen);
  if (rlen > REPLY_MAX)
    rlen = REPLY_MAX;
  rados_notify_ack (w->st->io, w->oid, notify_id, handle, ack,
                    (int) (1 + idlen + rlen));
}

static void
watch_err_cb (void *arg, uint64_t cookie, int err)
{
  struct rwatch *w = arg;
  size_t dummy = 0;

  /* Blocklisted (-ENOTCONN from librados) or disconnected long enough
   * for the OSD to drop the watch: either way the watch is gone. */
  w->cb (w->arg, -ENOTCONN, NULL, 0, NULL, 0, &dummy);
}

static int
rs_watch (void *h, const char *oid, store_watch_cb cb, void *arg, void **wp)
{
  struct rstore *st = h;
  struct rwatch *w;
  int r;

  w = calloc (1, sizeof *w);
  if (w == NULL || (w->oid = strdup (oid)) == NULL) {
    free (w);
    return vbk_errno (-ENOMEM, "store: rados: watch: %s", oid);
  }
  w->st = st;
  w->cb = cb;
  w->arg = arg;
  r = rados_watch2 (st->io, oid, &w->cookie, watch_notify_cb, watch_err_cb,
                    w);
  if (r == -ENOENT) {
    /* An OSD keeps watches on an object, so one must exist; store.h
     * lets anyone watch any name.  Create it empty (under this handle's
     * snapshot context, so it stays absent at older snapshots). */
    rados_write_op_t op = rados_create_write_op ();

    r = -ENOMEM;
    if (op) {
      rados_write_op_create (op, LIBRADOS_CREATE_IDEMPOTENT, NULL);
      r = rados_write_op_operate (op, st->io, oid, NULL, 0);
      rados_release_write_op (op);
    }
    if (r == 0)
      r = rados_watch2 (st->io, oid, &w->cookie, watch_notify_cb,
                        watch_err_cb, w);
  }
  if (r < 0) {
    free (w->oid);
    free (w);
    return fail (r, "watch", oid);
  }
  *wp = w;
  return 0;
}

static void
rs_unwatch (void *h, void *wp)
{
  struct rwatch *w = wp;

  if (w == NULL)
    return;
  /* Errors (a broken watch, a fenced client) leave nothing to undo. */
  rados_unwatch2 (w->st->io, w->cookie);
  /* No callback of this watch runs after this returns. */
  rados_watch_flush (w->st->conn->cluster);
  free (w->oid);
  free (w);
}

static int
parse_notify_reply (const char *buf, size_t len,
                    struct store_notify_reply **replies, size_t *nreplies,
                    size_t *timed_out)
{
  struct dec d = { (const unsigned char *) buf,
                   (const unsigned char *) buf + len, false };
  struct store_notify_reply *r;
  size_t n, i;

  *replies = NULL;
  *nreplies = 0;
  *timed_out = 0;
  if (buf == NULL || len == 0)
    return 0;
  n = dec_le (&d, 4);
  if (d.bad || n > len / 20)
    return -EIO;
  r = calloc (n ? n : 1, sizeof *r);
  if (r == NULL)
    return -ENOMEM;
  for (i = 0; i < n; i++) {
    uint64_t gid = dec_le (&d, 8);
    size_t plen, idlen;
    const unsigned char *p;

    dec_le (&d, 8);             /* watch cookie */
    plen = dec_le (&d, 4);
    p = dec_take (&d, plen);
    if (d.bad)
      goto bad;
    idlen = plen ? p[0] : 0;
    if (plen > 0 && idlen > 0 && idlen < STORE_CLIENT_MAX
        && 1 + idlen <= plen) {
      memcpy (r[i].client, p + 1, idlen);
      p += 1 + idlen;
      plen -= 1 + idlen;
    }
    else                        /* not one of ours: no id prefix */
      snprintf (r[i].client, sizeof r[i].client, "client.%" PRIu64, gid);
    r[i].len = plen;
    r[i].data = malloc (plen ? plen : 1);
    if (r[i].data == NULL) {
      *nreplies = i;
      store_notify_replies_free (r, i);
      return -ENOMEM;
    }
    memcpy (r[i].data, p, plen);
  }
  *timed_out = dec_le (&d, 4);
  if (d.bad)
    *timed_out = 0;
  *replies = r;
  *nreplies = n;
  return 0;

 bad:
  store_notify_replies_free (r, i);
  return -EIO;
}

static int
rs_notify (void *h, const char *oid, const void *payload, size_t len,
           uint32_t timeout_ms, struct store_notify_reply **replies,
           size_t *nreplies, size_t *timed_out)
{
  struct rstore *st = h;
  char *reply = NULL;
  size_t reply_len = 0;
  uint64_t timeout;
  int r, r2;

  *replies = NULL;
  *nreplies = 0;
  *timed_out = 0;
  if (len > INT_MAX) {
    vbk_set_error ("store: rados: notify: %s: payload too large", oid);
    return -EINVAL;
  }
  /* librados passes the timeout to the OSD in whole seconds, rounded
   * down, and 0 means its default (30 s): round up instead. */
  timeout = ((uint64_t) timeout_ms + 999) / 1000 * 1000;
  if (timeout == 0)
    timeout = 1000;
  r = rados_notify2 (st->io, oid, payload ? payload : "", (int) len,
                     timeout, &reply, &reply_len);
  /* -ETIMEDOUT with a reply: some watchers did not answer in time; the
   * reply lists them.  Without a reply the notify itself timed out. */
  if (r < 0 && !(r == -ETIMEDOUT && reply)) {
    if (reply)
      rados_buffer_free (reply);
    return fail (r, "notify", oid);
  }
  r2 = parse_notify_reply (reply, reply_len, replies, nreplies, timed_out);
  if (reply)
    rados_buffer_free (reply);
  if (r2 < 0) {
    if (r2 == -EIO)
      vbk_set_error ("store: rados: notify: %s: malformed reply", oid);
    else
      vbk_errno (r2, "store: rados: notify: %s", oid);
    return r2;
  }
  return 0;
}

/* ---- Fencing ------------------------------------------------------------ */

static int
rs_fence (void *h, const char *client, uint32_t expire_s)
{
  struct rstore *st = h;
  char addr[STORE_CLIENT_MAX];
  int r;

  if (strlen (client) >= sizeof addr) {
    vbk_set_error ("store: rados: fence: '%s': not a client address",
                   client);
    return -EINVAL;
  }
  strcpy (addr, client);
  r = rados_blocklist_add (st->conn->cluster, addr,
                           expire_s ? expire_s : DEFAULT_FENCE_S);
  if (r < 0)
    return vbk_errno (map_err (r), "store: rados: fence: %s", client);
  /* Our next operations must carry the osdmap that has the blocklist
   * entry: an OSD then takes that map before serving them, and from
   * then on refuses the fenced client.  Without it a write of the fenced
   * client could still land after ours (seen here). */
  r = rados_wait_for_latest_osdmap (st->conn->cluster);
  if (r < 0)
    return vbk_errno (map_err (r), "store: rados: fence: %s: osdmap",
                      client);
  return 0;
}

/* ---- Snapshots ---------------------------------------------------------- */

/* RADOS forgets nothing about self-managed snapshot ids that store.h
 * needs (removing one twice succeeds; a rollback to an id that never
 * was one succeeds), so the store keeps its live snapshot ids as omap
 * keys of one object, written without a snapshot context. */
#define SNAP_REGISTRY "vbk_store_snapshots"

static void
snap_key (uint64_t snap, char *key, size_t len)
{
  snprintf (key, len, "%020" PRIu64, snap);
}

static int
rs_snap_create (void *h, uint64_t *snap)
{
  struct rstore *st = h;
  rados_write_op_t op;
  rados_snap_t id;
  char key[32];
  const char *keys[1] = { key };
  const char *vals[1] = { "1" };
  size_t lens[1] = { 1 };
  int r;

  r = rados_ioctx_selfmanaged_snap_create (st->io, &id);
  if (r < 0)
    return fail (r, "snap_create", NULL);
  snap_key (id, key, sizeof key);
  op = rados_create_write_op ();
  if (op == NULL)
    r = -ENOMEM;
  else {
    rados_write_op_omap_set (op, keys, vals, lens, 1);
    r = rados_write_op_operate (op, st->conn->meta_io, SNAP_REGISTRY,
                                NULL, 0);
    rados_release_write_op (op);
  }
  if (r < 0) {
    rados_ioctx_selfmanaged_snap_remove (st->io, id);
    return vbk_errno (map_err (r), "store: rados: snap_create: "
                      "recording snapshot %" PRIu64, (uint64_t) id);
  }
  *snap = id;
  return 0;
}

static int
rs_snap_remove (void *h, uint64_t snap)
{
  struct rstore *st = h;
  rados_write_op_t op;
  char key[32];
  const char *keys[1] = { key };
  int r, prval = 0;

  /* Claim the id in the registry first: of two removers, one wins. */
  snap_key (snap, key, sizeof key);
  op = rados_create_write_op ();
  if (op == NULL)
    return vbk_errno (-ENOMEM, "store: rados: snap_remove");
  rados_write_op_omap_cmp (op, key, LIBRADOS_CMPXATTR_OP_EQ, "1", 1, &prval);
  rados_write_op_omap_rm_keys (op, keys, 1);
  r = rados_write_op_operate (op, st->conn->meta_io, SNAP_REGISTRY, NULL, 0);
  rados_release_write_op (op);
  if (r == -ECANCELED || r == -ENOENT) {
    vbk_set_error ("store: rados: snap_remove: %" PRIu64 ": no such "
                   "snapshot", snap);
    return -ENOENT;
  }
  if (r < 0)
    return vbk_errno (map_err (r), "store: rados: snap_remove: %" PRIu64,
                      snap);
  r = rados_ioctx_selfmanaged_snap_remove (st->io, snap);
  if (r < 0) {
    /* Put it back, so that the removal can be retried. */
    const char *vals[1] = { "1" };
    size_t lens[1] = { 1 };

    op = rados_create_write_op ();
    if (op) {
      rados_write_op_omap_set (op, keys, vals, lens, 1);
      rados_write_op_operate (op, st->conn->meta_io, SNAP_REGISTRY, NULL, 0);
      rados_release_write_op (op);
    }
    return vbk_errno (map_err (r), "store: rados: snap_remove: %" PRIu64,
                      snap);
  }
  return 0;
}

static int
snap_exists (struct rstore *st, uint64_t snap)
{
  rados_read_op_t op;
  rados_omap_iter_t iter = NULL;
  char key[32], *k, *v;
  const char *keys[1] = { key };
  size_t klen, vlen;
  int r, prval = 0;

  snap_key (snap, key, sizeof key);
  op = rados_create_read_op ();
  if (op == NULL)
    return -ENOMEM;
  rados_read_op_omap_get_vals_by_keys (op, keys, 1, &iter, &prval);
  r = rados_read_op_operate (op, st->conn->meta_io, SNAP_REGISTRY, 0);
  rados_release_read_op (op);
  if (r == 0 && prval < 0)
    r = prval;
  if (r == 0) {
    r = rados_omap_get_next2 (iter, &k, &v, &klen, &vlen);
    if (r == 0 && k == NULL)
      r = -ENOENT;
  }
  if (iter)
    rados_omap_get_end (iter);
  return map_err (r);
}

static int
rs_set_snap_context (void *h, uint64_t seq, const uint64_t *snaps, size_t n)
{
  struct rstore *st = h;
  rados_snap_t *v = NULL;
  size_t i;
  int r;

  if (n > INT_MAX) {
    vbk_set_error ("store: rados: set_snap_context: too many snapshots");
    return -EINVAL;
  }
  for (i = 0; i < n; i++)
    if (snaps[i] > seq || (i && snaps[i] >= snaps[i - 1])) {
      vbk_set_error ("store: rados: set_snap_context: snapshot ids must "
                     "be newest first and not above seq %" PRIu64, seq);
      return -EINVAL;
    }
  if (n) {
    v = malloc (n * sizeof *v);
    if (v == NULL)
      return vbk_errno (-ENOMEM, "store: rados: set_snap_context");
    for (i = 0; i < n; i++)
      v[i] = snaps[i];
  }
  r = rados_ioctx_selfmanaged_snap_set_write_ctx (st->io, seq, v, (int) n);
  free (v);
  if (r < 0)
    return fail (r, "set_snap_context", NULL);
  return 0;
}

static int
rs_snap_rollback (void *h, const char *oid, uint64_t snap)
{
  struct rstore *st = h;
  int r;

  /* The OSD rolls back to any id, existing or not. */
  r = snap_exists (st, snap);
  if (r == -ENOENT) {
    vbk_set_error ("store: rados: snap_rollback: %s: %" PRIu64 ": no such "
                   "snapshot", oid, snap);
    return -ENOENT;
  }
  /* An object absent at SNAP is removed (the OSD deletes the head). */
  if (r == 0)
    r = rados_ioctx_selfmanaged_snap_rollback (st->io, oid, snap);
  if (r < 0)
    return vbk_errno (map_err (r), "store: rados: snap_rollback: %s: "
                      "%" PRIu64, oid, snap);
  return 0;
}

const struct store_ops store_rados_ops = {
  .name = "rados",
  .open = rs_open,
  .clone = rs_clone,
  .close = rs_close,
  .client_id = rs_client_id,
  .read = rs_read,
  .write = rs_write,
  .write_full = rs_write_full,
  .create_excl = rs_create_excl,
  .zero = rs_zero,
  .truncate = rs_truncate,
  .remove = rs_remove,
  .stat = rs_stat,
  .flush = rs_flush,
  .aio_read = rs_aio_read,
  .aio_write = rs_aio_write,
  .xattr_get = rs_xattr_get,
  .xattr_set = rs_xattr_set,
  .xattr_rm = rs_xattr_rm,
  .xattr_cas = rs_xattr_cas,
  .omap_set = rs_omap_set,
  .omap_get = rs_omap_get,
  .omap_rm = rs_omap_rm,
  .omap_list = rs_omap_list,
  .lock = rs_lock,
  .unlock = rs_unlock,
  .lock_break = rs_lock_break,
  .lock_get = rs_lock_get,
  .watch = rs_watch,
  .unwatch = rs_unwatch,
  .notify = rs_notify,
  .fence = rs_fence,
  .snap_create = rs_snap_create,
  .snap_remove = rs_snap_remove,
  .set_snap_context = rs_set_snap_context,
  .snap_rollback = rs_snap_rollback,
  .omap_set_many = rs_omap_set_many,
};
