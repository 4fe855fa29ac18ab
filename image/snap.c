/* SPDX-License-Identifier: MIT
 *
 * snap.c - the snapshot table of an image, and snapshot create, remove
 * and rollback.
 *
 * DESIGN
 * - A snapshot is a store snapshot id recorded in the header's omap.
 *   Just before it, the snapshot appends to the change log which 1/32
 *   parts of each object the holder saw change; it then empties the log,
 *   so the log's copy at snapshot S lists exactly the interval that
 *   ended at S, and a snapshot writes no map, whatever the disk's size.
 * - A shrink recorded in the header ("min_size") moves into the log as a
 *   "from object N up" entry at the next snapshot.
 * - When a snapshot goes, its interval's changes move into the merged
 *   list of the next newer interval, so changed-block tracking never
 *   loses them.  Removals of one image are serialized by a store lock.
 */
#include <unistd.h>

#include "internal.h"

/* ---- The snapshot table ----------------------------------------------- */

struct snap_ctx {
  struct image_snap *v;
  size_t n, cap;
};

static int
snap_one (void *arg, const char *key, const void *val, size_t len)
{
  struct snap_ctx *c = arg;
  unsigned long long id, size, t;
  char buf[128];

  if (strncmp (key, "snap.", 5) != 0)
    return 0;
  snprintf (buf, sizeof buf, "%.*s", (int) MIN (len, sizeof buf - 1),
            (const char *) val);
  if (sscanf (buf, "id=%llu size=%llu time=%llu", &id, &size, &t) != 3)
    return 0;
  if (c->n == c->cap) {
    struct image_snap *nv;
    c->cap = c->cap ? 2 * c->cap : 8;
    nv = realloc (c->v, c->cap * sizeof *nv);
    if (nv == NULL)
      return -ENOMEM;
    c->v = nv;
  }
  memset (&c->v[c->n], 0, sizeof c->v[c->n]);
  snprintf (c->v[c->n].name, sizeof c->v[c->n].name, "%s", key + 5);
  c->v[c->n].id = id;
  c->v[c->n].size = size;
  c->v[c->n].time_ms = t;
  c->n++;
  return 0;
}

static int
cmp_snap_id (const void *a, const void *b)
{
  const struct image_snap *x = a, *y = b;

  return x->id < y->id ? -1 : x->id > y->id;
}

/* Snapshots recorded in header HDR, oldest first. */
int
image_snaps_of_header (struct store *st, const char *hdr,
                       struct image_snap **list, size_t *n)
{
  struct snap_ctx c = { 0 };
  int r;

  r = store_omap_list (st, hdr, "snap.", SIZE_MAX, snap_one, &c);
  if (r == -ENOENT)
    r = 0;
  if (r < 0) {
    free (c.v);
    return r;
  }
  if (c.n)
    qsort (c.v, c.n, sizeof *c.v, cmp_snap_id);
  *list = c.v;
  *n = c.n;
  return 0;
}

/* Gives ST the snapshot context of snapshots V[0..N) (oldest first)
 * plus NEWEST if not 0, with sequence at least SEQ. */
static int
set_snap_context (struct store *st, const struct image_snap *v, size_t n,
                  uint64_t newest, uint64_t seq)
{
  uint64_t *ids;
  size_t i, k = 0;
  int r;

  ids = malloc ((n + 1) * sizeof *ids);
  if (ids == NULL)
    return -ENOMEM;
  if (newest)
    ids[k++] = newest;
  for (i = 0; i < n; i++)
    ids[k++] = v[n - 1 - i].id;        /* newest first */
  for (i = 0; i < k; i++)
    seq = MAX (seq, ids[i]);
  r = store_set_snap_context (st, seq, ids, k);
  free (ids);
  return r;
}

/* Gives ST the snapshot context of header HDR, so its writes preserve
 * every snapshot. */
int
image_load_snap_context (struct store *st, const char *hdr)
{
  struct image_snap *v;
  uint64_t seq;
  size_t n;
  int r;

  r = image_snaps_of_header (st, hdr, &v, &n);
  if (r < 0)
    return r;
  seq = 0;
  {
    char buf[32];
    ssize_t k = store_xattr_get (st, hdr, "snap_seq", buf, sizeof buf - 1);
    if (k > 0) {
      buf[MIN ((size_t) k, sizeof buf - 1)] = '\0';
      seq = strtoull (buf, NULL, 10);
    }
  }
  r = set_snap_context (st, v, n, 0, seq);
  free (v);
  return r;
}

int
image_find_snap (struct store *st, const char *hdr, const char *image,
                 const char *snap, struct image_snap *out)
{
  struct image_snap *v;
  size_t n, i;
  int r;

  r = image_snaps_of_header (st, hdr, &v, &n);
  if (r < 0)
    return r;
  for (i = 0; i < n; i++)
    if (strcmp (v[i].name, snap) == 0)
      break;
  if (i == n) {
    free (v);
    vbk_set_error ("image '%s' has no snapshot '%s'", image, snap);
    return -ENOENT;
  }
  *out = v[i];
  free (v);
  return 0;
}

/* ---- Snapshots -------------------------------------------------------- */

int
image_snap_list (struct store *st, const char *image,
                 struct image_snap **list, size_t *n)
{
  char id[32], hdr[64];
  int r;

  r = image_lookup_id (st, image, id, sizeof id);
  if (r < 0)
    return r;
  image_header_oid (id, hdr, sizeof hdr);
  return image_snaps_of_header (st, hdr, list, n);
}

int
image_snap_alloc (struct image *img, uint64_t *id)
{
  int r = image_check_writable (img, "snapshot");

  return r < 0 ? r : store_snap_create (img->st, id);
}

void
image_snap_free_id (struct image *img, uint64_t id)
{
  store_snap_remove (img->st, id);
}

int
image_snap_create (struct image *img, const char *snap, uint64_t *idp)
{
  uint64_t id;
  int r;

  r = image_snap_alloc (img, &id);
  if (r == 0)
    r = image_snap_create_id (img, snap, id);
  if (r == 0 && idp)
    *idp = id;
  return r;
}

static int write_details (struct image *img);

int
image_save_parts (struct image *img)
{
  int r;

  if (img->read_snap != STORE_SNAP_HEAD || (img->flags & IMAGE_OPEN_RDONLY))
    return 0;
  image_log_writer_enter (img);
  r = write_details (img);
  image_log_writer_exit (img);
  return r;
}

/* Map ARG forgets a record of the log: the object needs logging again
 * before its next change. */
static void
forget_record (void *arg, uint64_t objno, uint32_t parts)
{
  struct objmap *m = arg;

  (void) parts;
  if (objno < m->n) {
    image_map_put (m, objno, F_LOGGED, 0);
    image_map_put (m, objno, F_PARTS, 0);
    if (image_map_get (m, objno) == IMAGE_OBJ_DIRTY)
      image_map_put (m, objno, F_BYTE, IMAGE_OBJ_CLEAN);
  }
}

/* Words appended to the change log in one write. */
struct log_append {
  uint64_t *buf;                /* little-endian words */
  size_t k;                     /* words in all */
  size_t kd;                    /* of which detail records (pairs) */
  uint64_t off;                 /* where they go */
};

/* Plans the records that say which parts of each logged object changed,
 * as far as this process saw them (so that the snapshot's log is finer
 * than whole objects), and with MIN not UINT64_MAX a shrink's "from
 * object N up" record after them; reserves room for them in the log and
 * fixes its tail.  Writes held.  Objects changed before a crash or a
 * hand-off stay whole (we did not see their parts); so do objects
 * changed everywhere. */
static int
log_append_plan (struct image *img, uint64_t min, struct log_append *a)
{
  struct change_set s = { .from = UINT64_MAX };
  struct objmap *m;
  size_t i;
  int r;

  memset (a, 0, sizeof *a);
  pthread_mutex_lock (&img->map_lock);
  m = img->map;
  image_changes_each (img->log.v, img->log.n, image_set_add, &s);
  a->off = img->log.n * sizeof *a->buf;
  pthread_mutex_unlock (&img->map_lock);
  r = s.err;
  if (r == 0 && (s.n || min != UINT64_MAX)) {
    image_set_sort (&s, true);
    a->buf = malloc ((2 * s.n + 1) * sizeof *a->buf);
    if (a->buf == NULL)
      r = -ENOMEM;
  }
  for (i = 0; r == 0 && i < s.n; i++) {
    uint64_t o = s.v[i].objno;
    uint32_t p;
    if (o >= m->n || !image_map_logged (m, o))
      continue;
    p = image_map_parts (m, o);
    if (p == 0 || p == ALL_PARTS)
      continue;
    a->buf[a->k++] = htole64 (CHANGES_DETAIL | o);
    a->buf[a->k++] = htole64 (p);
  }
  a->kd = a->k;
  if (r == 0 && min != UINT64_MAX)
    a->buf[a->k++] = htole64 (CHANGES_FROM | (min >> img->order));
  if (r == 0 && a->k) {                 /* room to remember them */
    pthread_mutex_lock (&img->map_lock);
    r = image_changes_reserve (&img->log, a->k);
    pthread_mutex_unlock (&img->map_lock);
  }
  if (r == 0 && a->k)
    r = image_log_fix_tail (img, a->off);
  free (s.v);
  if (r < 0) {
    free (a->buf);
    a->buf = NULL;
    a->k = a->kd = 0;
  }
  return r;
}

/* The append A landed: the log holds its words, and the objects with
 * detail records become unlogged (a later change logs them whole). */
static void
log_append_landed (struct image *img, const struct log_append *a)
{
  struct objmap *m;
  size_t i;

  pthread_mutex_lock (&img->map_lock);
  m = img->map;
  for (i = 0; i < a->k; i++)
    img->log.v[img->log.n++] = le64toh (a->buf[i]);
  for (i = 0; i < a->kd; i += 2) {
    uint64_t o = le64toh (a->buf[i]) & ~CHANGES_DETAIL;
    image_map_put (m, o, F_LOGGED, 0);
    if (image_map_get (m, o) == IMAGE_OBJ_DIRTY)
      image_map_put (m, o, F_BYTE, IMAGE_OBJ_CLEAN);
  }
  pthread_mutex_unlock (&img->map_lock);
}

/* Before a snapshot or a hand-off (writes held): appends the detail
 * records (log_append_plan). */
static int
write_details (struct image *img)
{
  struct log_append a;
  int r;

  r = log_append_plan (img, UINT64_MAX, &a);
  if (r == 0 && a.k) {
    r = store_write (img->st, img->log_oid, a.buf, a.k * sizeof *a.buf,
                     a.off, STORE_WRITE_SYNC);
    if (r < 0)
      image_log_append_failed (img, a.off);
    else
      log_append_landed (img, &a);
  }
  free (a.buf);
  return r;
}

/* ---- Creating a snapshot, in steps ------------------------------------- *
 *
 *   image_snap_alloc     the store's snapshot id (a monitor round trip)
 *   image_snap_prepare   writes go on: the checks, what is read (the
 *                        snapshot table, a pending shrink) and the copy
 *                        of the live interval's merged changes under the
 *                        new snapshot's id
 *   image_snap_record    writes held and flushed: the log's detail
 *                        records (and the shrink) appended while the
 *                        header records the snapshot (one compound op),
 *                        then the new snapshot context, then the log
 *                        emptied under it
 *   image_snap_finish    writes go on: the live merged list and the
 *                        recorded shrink, now the snapshot's, are dropped
 *
 * What prepare read still holds at record: the holder runs one command
 * at a time (snapshot.c), and only commands change the snapshots, the
 * merged lists and the size.  The record is written first and the log
 * emptied after, under the new context: a crash between leaves a
 * snapshot whose log is the live one of that moment.  The appended
 * details need only land before the log is emptied, not before the
 * record: without them the snapshot's log lists those objects whole
 * (over-reporting, safe).  A crash at any other point over-reports too,
 * or leaves a merged copy no snapshot names. */

struct image_snap_prep {
  char name[IMAGE_NAME_MAX + 1];
  uint64_t id;
  struct image_snap *v;         /* the snapshots before, oldest first */
  size_t n;
  uint64_t min;                 /* pending shrink, or UINT64_MAX */
  bool moved;                   /* merged changes copied to the snapshot's */
  bool recorded;                /* the header names the snapshot */
  bool dropped;                 /* failed and undone */
};

/* Undoes a snapshot that is not recorded: its merged copy, its id. */
static void
snap_prep_drop (struct image *img, struct image_snap_prep *p)
{
  char to[96];

  if (p->moved) {
    image_merged_oid (img->info.id, p->id, to, sizeof to);
    store_remove (img->st, to);
    p->moved = false;
  }
  store_snap_remove (img->st, p->id);
  p->dropped = true;
}

int
image_snap_prepare (struct image *img, const char *snap, uint64_t id,
                    struct image_snap_prep **out)
{
  struct image_snap_prep *p;
  char from[96], to[96];
  uint64_t sz;
  size_t i;
  int r;

  p = calloc (1, sizeof *p);
  if (p == NULL) {
    store_snap_remove (img->st, id);
    return -ENOMEM;
  }
  p->id = id;
  p->min = UINT64_MAX;
  r = image_check_writable (img, "snapshot");
  if (r == 0)
    r = image_name_check (snap);
  if (r == 0) {
    snprintf (p->name, sizeof p->name, "%s", snap);
    r = image_snaps_of_header (img->st, img->hdr_oid, &p->v, &p->n);
  }
  for (i = 0; r == 0 && i < p->n; i++)
    if (strcmp (p->v[i].name, snap) == 0) {
      vbk_set_error ("image '%s' already has a snapshot '%s'",
                     img->info.name, snap);
      r = -EEXIST;
    }
  if (r == 0)
    r = image_shrunk_to (img->st, img->hdr_oid, &p->min);
  /* Merged changes of the live interval go to this snapshot's interval:
   * copied now, removed from the live one once the log is emptied, so
   * that a crash anywhere leaves them in both (over-reporting). */
  if (r == 0) {
    image_merged_oid (img->info.id, 0, from, sizeof from);
    image_merged_oid (img->info.id, id, to, sizeof to);
    r = store_stat (img->st, from, STORE_SNAP_HEAD, &sz);
    if (r == 0) {
      uint8_t *buf = malloc (sz ? sz : 1);
      if (buf == NULL)
        r = -ENOMEM;
      else if ((r = (int) store_read (img->st, from, buf, sz, 0,
                                      STORE_SNAP_HEAD)) >= 0)
        r = store_write_full (img->st, to, buf, sz, STORE_WRITE_SYNC);
      free (buf);
      p->moved = r == 0;
    }
    else if (r == -ENOENT)
      r = 0;
  }
  if (r < 0) {
    VBK_KEEP_ERROR_FOR_SCOPE;
    snap_prep_drop (img, p);
    free (p->v);
    free (p);
    return r;
  }
  *out = p;
  return 0;
}

/* The log's append running beside the header's record. */
struct append_wait {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool done;
  ssize_t ret;
};

static void
append_done (void *arg, ssize_t ret)
{
  struct append_wait *w = arg;

  pthread_mutex_lock (&w->lock);
  w->ret = ret;
  w->done = true;
  pthread_cond_signal (&w->cond);
  pthread_mutex_unlock (&w->lock);
}

int
image_snap_record (struct image *img, struct image_snap_prep *p)
{
  struct append_wait w = { PTHREAD_MUTEX_INITIALIZER,
                           PTHREAD_COND_INITIALIZER, false, 0 };
  char key[IMAGE_NAME_MAX + 8] = "", val[128], seqbuf[32];
  struct log_append a;
  bool started = false;
  int r, n;

  if (p->dropped || p->recorded)
    return -EINVAL;
  /* The live log and the map were written without a sync (objmap.c):
   * durable before the snapshot that keeps them exists, so that an
   * unclean shutdown of the machine can only damage the live interval
   * (openmark.c).  Writes are held here, so nothing is added after. */
  if (img->lazy && (r = store_flush (img->st)) < 0)
    return r;
  /* The store part runs as the only change-log writer. */
  image_log_writer_enter (img);
  r = log_append_plan (img, p->min, &a);
  if (r == 0 && a.k) {
    r = store_aio_write (img->st, img->log_oid, a.buf, a.k * sizeof *a.buf,
                         a.off, STORE_WRITE_SYNC, append_done, &w);
    started = r == 0;
  }
  if (r == 0) {
    struct store_meta_set rec[2];
    snprintf (seqbuf, sizeof seqbuf, "%" PRIu64, p->id);
    n = snprintf (val, sizeof val, "id=%" PRIu64 " size=%" PRIu64
                  " time=%" PRIu64, p->id, image_size (img), now_wall_ms ());
    snprintf (key, sizeof key, "snap.%s", p->name);
    rec[0] = (struct store_meta_set) { false, "snap_seq", seqbuf,
                                       strlen (seqbuf) };
    rec[1] = (struct store_meta_set) { true, key, val, (size_t) n };
    r = store_meta_set (img->st, img->hdr_oid, rec, 2);
    p->recorded = r == 0;
  }
  if (started) {
    pthread_mutex_lock (&w.lock);
    while (!w.done)
      pthread_cond_wait (&w.cond, &w.lock);
    pthread_mutex_unlock (&w.lock);
    if (w.ret < 0) {
      image_log_append_failed (img, a.off);
      if (r == 0)
        r = vbk_errno ((int) w.ret, "image '%s': change log: append "
                       "before snapshot '%s'", img->info.name, p->name);
    }
    else
      log_append_landed (img, &a);
  }
  free (a.buf);
  if (r == 0)
    r = set_snap_context (img->st, p->v, p->n, p->id, p->id);
  if (r < 0) {
    VBK_KEEP_ERROR_FOR_SCOPE;
    if (p->recorded)
      store_omap_rm (img->st, img->hdr_oid, key);
    p->recorded = false;
    snap_prep_drop (img, p);
    image_log_writer_exit (img);
    return r;
  }

  /* Empty the log: this first write under the new context keeps the log
   * as it was, which is the snapshot's (its interval's changes).  If it
   * fails the snapshot stands with the log untouched, which
   * over-reports (safe). */
  if (img->log.n || img->log_tail_unknown) {
    r = store_write_full (img->st, img->log_oid, "", 0, STORE_WRITE_SYNC);
    if (r == 0)
      __atomic_store_n (&img->log_tail_unknown, false, __ATOMIC_RELEASE);
  }
  if (r == 0) {
    /* The log is empty now: a new interval starts. */
    pthread_mutex_lock (&img->map_lock);
    image_changes_each (img->log.v, img->log.n, forget_record, img->map);
    img->log.n = 0;
    pthread_mutex_unlock (&img->map_lock);
  }
  image_log_writer_exit (img);
  return r;
}

int
image_snap_finish (struct image *img, struct image_snap_prep *p)
{
  char from[96], old[32];
  int r = 0;

  if (p == NULL)
    return 0;
  if (!p->recorded && !p->dropped)
    snap_prep_drop (img, p);            /* never recorded: cancelled */
  if (p->recorded && p->moved) {
    image_merged_oid (img->info.id, 0, from, sizeof from);
    r = store_remove (img->st, from);
    if (r == -ENOENT)
      r = 0;
  }
  if (r == 0 && p->recorded && p->min != UINT64_MAX) {
    snprintf (old, sizeof old, "%" PRIu64, p->min);
    /* Compare-and-set: a shrink meanwhile stays for the next interval. */
    r = store_xattr_cas (img->st, img->hdr_oid, "min_size", old,
                         strlen (old), "-", 1);
    if (r == -ECANCELED)
      r = 0;
  }
  free (p->v);
  free (p);
  return r;
}

int
image_snap_create_id (struct image *img, const char *snap, uint64_t id)
{
  struct image_snap_prep *p;
  int r;

  r = image_snap_prepare (img, snap, id, &p);
  if (r < 0)
    return r;
  r = image_snap_record (img, p);
  if (r < 0) {
    VBK_KEEP_ERROR_FOR_SCOPE;
    image_snap_finish (img, p);
    return r;
  }
  return image_snap_finish (img, p);
}

/* Before snapshot SN of image ID goes: its interval's changes (its log,
 * and what was merged into it) join the next newer interval. */
static int
merge_into_next (struct store *st, const char *id, const char *hdr,
                 const struct image_snap *sn)
{
  struct change_set c = { .from = UINT64_MAX };
  struct image_snap *v;
  uint64_t next = 0;
  char oid[96];
  size_t ns, k;
  int r;

  r = image_snaps_of_header (st, hdr, &v, &ns);
  if (r < 0)
    return r;
  for (k = 0; k < ns; k++)
    if (v[k].id > sn->id && (next == 0 || v[k].id < next))
      next = v[k].id;
  free (v);
  image_changes_oid (id, oid, sizeof oid);
  r = image_set_read (st, oid, sn->id, &c);
  image_merged_oid (id, sn->id, oid, sizeof oid);
  if (r == 0)
    r = image_set_read (st, oid, STORE_SNAP_HEAD, &c);
  image_merged_oid (id, next, oid, sizeof oid);
  if (r == 0)
    r = image_set_read (st, oid, STORE_SNAP_HEAD, &c);
  if (r == 0) {
    image_set_sort (&c, false);
    r = image_set_write (st, oid, &c);
  }
  free (c.v);
  return r;                 /* the caller removes SN's list once SN is gone */
}

/* Snapshot removals of one image run one at a time: each rewrites the
 * merged list of the next snapshot, and two at once could lose one's
 * changes.  A lock on the header with a duration, so that a removal that
 * died frees it.  Returns 0 with *COOKIE set, or -errno. */
#define SNAPOPS_LOCK "vbk_snapops"
#define SNAPOPS_MS 30000

static int
snapops_lock (struct store *st, const char *hdr, char *cookie, size_t len)
{
  uint64_t t0 = now_mono_ns ();
  int r;

  snprintf (cookie, len, "%s.%ld.%" PRIu64, store_client_id (st),
            (long) getpid (), t0);
  for (;;) {
    r = store_lock (st, hdr, SNAPOPS_LOCK, cookie, "snapshot removal",
                    SNAPOPS_MS, 0);
    if (r != -EBUSY || now_mono_ns () - t0 > 2ull * SNAPOPS_MS * 1000000)
      return r;
    usleep (10000);
  }
}

static int snap_remove_locked (struct store *st, const char *image,
                               const char *snap, const char *id,
                               const char *hdr);

int
image_snap_remove (struct store *st, const char *image, const char *snap)
{
  char id[32], hdr[64], cookie[160];
  int r;

  r = image_lookup_id (st, image, id, sizeof id);
  if (r < 0)
    return r;
  image_header_oid (id, hdr, sizeof hdr);
  r = snapops_lock (st, hdr, cookie, sizeof cookie);
  if (r < 0)
    return r;
  r = snap_remove_locked (st, image, snap, id, hdr);
  if (r < 0)
    vbk_error_keep ();          /* the unlock must not replace the error */
  store_unlock (st, hdr, SNAPOPS_LOCK, cookie);
  if (r < 0)
    vbk_error_unkeep ();
  return r;
}

static int
snap_remove_locked (struct store *st, const char *image, const char *snap,
                    const char *id, const char *hdr)
{
  char key[IMAGE_NAME_MAX + 8];
  struct image_snap sn;
  int r;

  r = image_find_snap (st, hdr, image, snap, &sn);
  if (r < 0)
    return r;
  r = merge_into_next (st, id, hdr, &sn);
  if (r < 0)
    return r;
  snprintf (key, sizeof key, "snap.%s", snap);
  r = store_omap_rm (st, hdr, key);
  if (r < 0)
    return r;
  r = store_snap_remove (st, sn.id);
  if (r < 0 && r != -ENOENT)
    return r;
  image_merged_oid (id, sn.id, key, sizeof key);
  r = store_remove (st, key);
  return r == -ENOENT ? 0 : r;
}

struct mark_ctx {
  uint8_t *changed;
  uint64_t n;
  unsigned order;
};

static int
mark_changed (void *arg, uint64_t off, uint64_t len, int alloc)
{
  struct mark_ctx *m = arg;
  uint64_t i;

  for (i = off >> m->order; i < m->n && (i << m->order) < off + len; i++)
    m->changed[i] = 1;
  return 0;
}

struct objects_ctx {
  struct change_set *s;
  unsigned order;
};

/* An image_extent_cb: adds the parts of the objects of the extent to a
 * change set. */
static int
add_objects (void *arg, uint64_t off, uint64_t len, int alloc)
{
  struct objects_ctx *o = arg;
  uint64_t osize = UINT64_C (1) << o->order, pos, end = off + len;

  (void) alloc;
  for (pos = off; pos < end && o->s->err == 0;) {
    uint64_t ooff = pos & (osize - 1), n = MIN (osize - ooff, end - pos);
    image_set_add (o->s, pos >> o->order, image_parts_of (o->order, ooff, n));
    pos += n;
  }
  return o->s->err;
}

/* After IMG was rolled back to SN, the live interval's log need only
 * hold what differs between the newest snapshot and SN: the changes of
 * the intervals after SN (none when SN is the newest).  Replaces the log,
 * then drops the merged changes and the shrink note of the live interval
 * (a crash in between over-reports). */
static int
narrow_log (struct image *img, const struct image_snap *sn)
{
  struct change_set c = { .from = UINT64_MAX };
  struct objects_ctx oc = { &c, img->order };
  struct image_snap *v, newest = *sn;
  char oid[96];
  size_t ns, k;
  int r;

  r = image_snaps_of_header (img->st, img->hdr_oid, &v, &ns);
  if (r < 0)
    return r;
  for (k = 0; k < ns; k++)
    if (v[k].id > newest.id)
      newest = v[k];
  free (v);
  if (newest.id != sn->id)
    r = image_diff (img->st, img->info.name, sn->name, newest.name,
                    add_objects, &oc);
  image_log_writer_enter (img);
  if (r == 0) {
    image_set_sort (&c, false);
    r = image_set_write (img->st, img->log_oid, &c);
  }
  image_merged_oid (img->info.id, 0, oid, sizeof oid);
  if (r == 0 && (r = store_remove (img->st, oid)) == -ENOENT)
    r = 0;
  if (r == 0)
    r = store_xattr_set (img->st, img->hdr_oid, "min_size", "-", 1);
  image_log_writer_exit (img);
  free (c.v);
  return r;
}

int
image_snap_rollback (struct image *img, const char *snap)
{
  struct image_snap sn;
  uint64_t nsnap, nlive, i, objects;
  char oid[96], sizebuf[32], oldraw[32];
  uint8_t *smap = NULL, *changed = NULL;
  ssize_t got;
  int r;

  r = image_check_writable (img, "rollback");
  if (r < 0)
    return r;
  r = image_find_snap (img->st, img->hdr_oid, img->info.name, snap, &sn);
  if (r < 0)
    return r;
  nsnap = image_objects_for (sn.size, img->info.object_size);
  nlive = img->map->n;
  objects = MAX (nsnap, nlive);
  smap = calloc (1, objects ? objects : 1);
  if (smap == NULL)
    return -ENOMEM;
  got = store_read (img->st, img->map_oid, smap, nsnap, 0, sn.id);
  if (got < 0 && got != -ENOENT) {
    free (smap);
    return (int) got;
  }
  /* Only the objects that changed since the snapshot go back (the
   * change logs say which); they are logged as changed again, the others
   * keep their entries, so a later diff reports only what really moved. */
  changed = calloc (1, objects ? objects : 1);
  if (changed == NULL) {
    r = -ENOMEM;
    goto out;
  }
  {
    struct mark_ctx mc = { changed, objects, img->order };
    r = image_diff (img->st, img->info.name, snap, NULL, mark_changed, &mc);
    if (r < 0)
      goto out;
  }
  /* They change again: into the log first, and a shrink is noted. */
  for (i = 0; i < nlive; i++) {
    if (!changed[i])
      continue;
    r = image_map_mark_dirty (img, i, i, false);
    if (r < 0)
      goto out;
    image_mark_parts (img, i << img->order, img->info.object_size);
  }
  if (sn.size < image_size (img)
      && (r = image_note_shrink (img->st, img->hdr_oid, sn.size)) < 0)
    goto out;
  for (i = 0; i < objects; i++) {
    if (!changed[i]) {
      if (i < nsnap)
        smap[i] = image_object_state (img, i);
    }
    else {
      image_data_oid (img->info.id, i, oid, sizeof oid);
      r = store_snap_rollback (img->st, oid, sn.id);
      if (r < 0 && r != -ENOENT)
        goto out;
    }
    if (i < nsnap)
      smap[i] = smap[i] != IMAGE_OBJ_ABSENT ? IMAGE_OBJ_CLEAN
        : IMAGE_OBJ_ABSENT;
  }
  /* The summary first: it covers the new map before the map is. */
  r = image_map_sum_write_all (img->st, img->map_oid, smap, nsnap);
  if (r == 0)
    r = store_write_full (img->st, img->map_oid, smap, nsnap,
                          STORE_WRITE_SYNC);
  if (r < 0)
    goto out;
  r = image_read_size (img->st, img->hdr_oid, &i, oldraw, sizeof oldraw);
  if (r < 0)
    goto out;
  snprintf (sizebuf, sizeof sizebuf, "%" PRIu64, sn.size);
  r = store_xattr_cas (img->st, img->hdr_oid, "size", oldraw, strlen (oldraw),
                       sizebuf, strlen (sizebuf));
  if (r == 0)
    r = narrow_log (img, &sn);
  if (r == 0)
    r = image_refresh (img);
  if (r == 0)
    r = store_flush (img->st);
out:
  free (smap);
  free (changed);
  return r;
}

