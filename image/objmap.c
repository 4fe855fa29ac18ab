/* SPDX-License-Identifier: MIT
 *
 * objmap.c - the object map of an image, in memory and stored, and its
 * group commit on the write path.
 *
 * DESIGN
 * - The object map has one byte per data object: ABSENT or CLEAN
 *   (allocated).  On the store that is level 0, with two summary levels
 *   over it (mapstore.c); a commit sets the summary bytes over the
 *   entries it allocates, in the same batch.  An open image keeps the
 *   map in memory; a reader looks at a byte without a lock.  In memory
 *   an allocated entry is DIRTY once its object is in the change log of
 *   the live interval.
 * - Before the first change to an object in an interval, the writer
 *   appends it to the change log (and, if the object was ABSENT, marks it
 *   allocated in the map); only once those store writes completed does
 *   the data write start.  On RADOS a completed write is durable.  On
 *   the local store they are plain buffered writes (image->lazy), made
 *   durable by the next FLUSH together with the data (store_flush syncs
 *   every file the store dirtied, and obj/ for the files it created):
 *   the page cache keeps them in syscall order across a process crash,
 *   and an unclean shutdown of the machine is caught at the next open
 *   (openmark.c: map rebuilt, change tracking reset).  So after any
 *   crash neither the map nor a diff under-reports, and a first write
 *   costs a few buffered writes on the caller's thread, no sync.
 *   Concurrent first writes are committed together; on RADOS
 *   asynchronous ones wait on the commit queue (commit.c), so one
 *   connection's queue of first writes shares a commit too.
 * - A discard may mark an object ABSENT only when no write to it is in
 *   flight (counted in wr_inflight buckets), or the ABSENT could land
 *   after a concurrent write's entry and under-report.
 */
#include "internal.h"

struct objmap *
image_map_new (uint64_t n)
{
  uint64_t ndirs = (n + (UINT64_C (1) << MAP_DIR_SPAN_SHIFT) - 1)
    >> MAP_DIR_SPAN_SHIFT;
  struct objmap *m = calloc (1, sizeof *m + ndirs * sizeof m->dirs[0]);

  if (m) {
    m->n = n;
    m->ndirs = ndirs;
  }
  return m;
}

void
image_map_free (struct objmap *m)
{
  uint64_t d;
  size_t k;

  if (m == NULL)
    return;
  for (d = 0; d < m->ndirs; d++) {
    if (m->dirs[d] == NULL)
      continue;
    for (k = 0; k < MAP_DIR; k++)
      free (m->dirs[d]->pages[k]);
    free (m->dirs[d]);
  }
  free (m);
}

/* The page holding entry I (< M->n), or NULL: all zeros. */
static struct map_page *
page_of (struct objmap *m, uint64_t i)
{
  struct map_dir *d = __atomic_load_n (&m->dirs[i >> MAP_DIR_SPAN_SHIFT],
                                       __ATOMIC_ACQUIRE);

  if (d == NULL)
    return NULL;
  return __atomic_load_n (&d->pages[(i >> MAP_PAGE_SHIFT) & (MAP_DIR - 1)],
                          __ATOMIC_ACQUIRE);
}

/* The directory holding entry I (< M->n), allocated if needed; NULL:
 * out of memory. */
static struct map_dir *
dir_make (struct objmap *m, uint64_t i)
{
  struct map_dir **dp = &m->dirs[i >> MAP_DIR_SPAN_SHIFT], *d, *nd;

  d = __atomic_load_n (dp, __ATOMIC_ACQUIRE);
  if (d == NULL) {
    nd = calloc (1, sizeof *nd);
    if (nd == NULL)
      return NULL;
    if (__atomic_compare_exchange_n (dp, &d, nd, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
      d = nd;
    else
      free (nd);                /* another thread's is in D */
  }
  return d;
}

/* The page holding entry I (< M->n), allocated if needed; NULL: out of
 * memory. */
static struct map_page *
page_make (struct objmap *m, uint64_t i)
{
  struct map_dir *d = dir_make (m, i);
  struct map_page **pp, *p, *np;

  if (d == NULL)
    return NULL;
  pp = &d->pages[(i >> MAP_PAGE_SHIFT) & (MAP_DIR - 1)];
  p = __atomic_load_n (pp, __ATOMIC_ACQUIRE);
  if (p == NULL) {
    np = calloc (1, sizeof *np);
    if (np == NULL)
      return NULL;
    if (__atomic_compare_exchange_n (pp, &p, np, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
      p = np;
    else
      free (np);
  }
  return p;
}

/* The known-set bit of summary byte IDX of LEVEL (1 or 2) in directory
 * D: a level-1 byte covers one page, a level-2 byte 64 pages. */
_Static_assert (MAP_SUM_SHIFT == MAP_PAGE_SHIFT
                && MAP_DIR_SHIFT == 2 * MAP_SUM_SHIFT,
                "a summary byte covers whole pages of one directory");

static uint64_t *
sum_word (struct map_dir *d, unsigned level, uint64_t idx, uint64_t *bit)
{
  if (level == 1) {
    uint64_t page = idx & (MAP_DIR - 1);
    *bit = UINT64_C (1) << (page % 64);
    return &d->sum1[page / 64];
  }
  *bit = UINT64_C (1) << (idx & 63);
  return &d->sum2;
}

/* Whether summary byte IDX of LEVEL is known to be set on the store. */
bool
image_map_sum_known (struct objmap *m, unsigned level, uint64_t idx)
{
  uint64_t e = idx << (MAP_SUM_SHIFT * level), bit;
  struct map_dir *d;

  if (e >= m->n)
    return false;
  d = __atomic_load_n (&m->dirs[e >> MAP_DIR_SPAN_SHIFT], __ATOMIC_ACQUIRE);
  return d && (__atomic_load_n (sum_word (d, level, idx, &bit),
                                __ATOMIC_ACQUIRE) & bit);
}

/* Notes that summary byte IDX of LEVEL is set on the store.  Returns 0
 * or -ENOMEM. */
int
image_map_sum_note (struct objmap *m, unsigned level, uint64_t idx)
{
  uint64_t e = idx << (MAP_SUM_SHIFT * level), bit, *w;
  struct map_dir *d;

  if (e >= m->n)
    return 0;
  d = dir_make (m, e);
  if (d == NULL)
    return -ENOMEM;
  w = sum_word (d, level, idx, &bit);
  __atomic_fetch_or (w, bit, __ATOMIC_RELEASE);
  return 0;
}

/* Readers of one field of entry I (< M->n). */
uint8_t
image_map_get (struct objmap *m, uint64_t i)
{
  struct map_page *p = page_of (m, i);

  return p ? __atomic_load_n (&p->bytes[SLOT (i)], __ATOMIC_SEQ_CST) : 0;
}

uint8_t
image_map_logged (struct objmap *m, uint64_t i)
{
  struct map_page *p = page_of (m, i);

  return p ? __atomic_load_n (&p->logged[SLOT (i)], __ATOMIC_SEQ_CST) : 0;
}

static uint8_t
map_pending (struct objmap *m, uint64_t i)
{
  struct map_page *p = page_of (m, i);

  return p ? p->pending[SLOT (i)] : 0;      /* under map_lock */
}

uint32_t
image_map_parts (struct objmap *m, uint64_t i)
{
  struct map_page *p = page_of (m, i);

  return p ? __atomic_load_n (&p->parts[SLOT (i)], __ATOMIC_RELAXED) : 0;
}

/* Writers: a zero needs no page.  Return 0 or -ENOMEM. */

int
image_map_put (struct objmap *m, uint64_t i, enum map_field f, uint32_t v)
{
  struct map_page *p = page_of (m, i);

  if (p == NULL && v == 0)
    return 0;
  if (p == NULL && (p = page_make (m, i)) == NULL)
    return -ENOMEM;
  switch (f) {
  case F_BYTE:
    __atomic_store_n (&p->bytes[SLOT (i)], (uint8_t) v, __ATOMIC_SEQ_CST);
    break;
  case F_LOGGED:
    __atomic_store_n (&p->logged[SLOT (i)], (uint8_t) v, __ATOMIC_SEQ_CST);
    break;
  case F_PENDING:
    p->pending[SLOT (i)] = (uint8_t) v;
    break;
  case F_PARTS:
    __atomic_store_n (&p->parts[SLOT (i)], v, __ATOMIC_RELAXED);
    break;
  case F_PARTS_OR:
    __atomic_fetch_or (&p->parts[SLOT (i)], v, __ATOMIC_RELAXED);
    break;
  }
  return 0;
}

/* Entries of M that are not ABSENT. */
uint64_t
image_map_count (struct objmap *m)
{
  uint64_t d, c = 0;
  size_t k, j;

  for (d = 0; d < m->ndirs; d++) {
    struct map_dir *dir = __atomic_load_n (&m->dirs[d], __ATOMIC_ACQUIRE);
    for (k = 0; dir && k < MAP_DIR; k++) {
      struct map_page *p = __atomic_load_n (&dir->pages[k], __ATOMIC_ACQUIRE);
      for (j = 0; p && j < MAP_PAGE; j++)
        c += __atomic_load_n (&p->bytes[j], __ATOMIC_RELAXED)
          != IMAGE_OBJ_ABSENT;
    }
  }
  return c;
}

static int
put_clean (void *arg, uint64_t objno)
{
  return image_map_put (arg, objno, F_BYTE, IMAGE_OBJ_CLEAN);
}

/* Adds the stored map OID at SNAP, entries [FIRST, LAST), to M (an
 * image of header format FORMAT): allocated entries CLEAN, and the
 * summary bytes found set noted.  Reads in proportion to what is
 * allocated (mapstore.c). */
int
image_map_read_stored (struct store *st, const char *oid, unsigned format,
                       uint64_t snap, struct objmap *m, uint64_t first,
                       uint64_t last)
{
  return image_map_scan (st, oid, format, snap, first, MIN (last, m->n), m,
                         put_clean, m);
}

/* ---- The object map on the write path --------------------------------- */

struct wait_all {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int left, err;
};

static void
wait_all_done (void *arg, ssize_t ret)
{
  struct wait_all *w = arg;

  pthread_mutex_lock (&w->lock);
  if (ret < 0 && w->err == 0)
    w->err = (int) ret;
  if (--w->left == 0)
    pthread_cond_signal (&w->cond);
  pthread_mutex_unlock (&w->lock);
}

/* Counts N more writes in flight on W, or takes back one that did not
 * start (ERR < 0).  W's callbacks run on store threads meanwhile, so the
 * count changes only under W's lock.  Returns W's first error. */
static int
wait_all_add (struct wait_all *w, int n, int err)
{
  int r;

  pthread_mutex_lock (&w->lock);
  w->left += n;
  if (err < 0 && w->err == 0)
    w->err = err;
  r = w->err;
  pthread_mutex_unlock (&w->lock);
  return r;
}

/* A stretch [lo, hi] of the stored map that a commit writes. */
struct map_run {
  uint64_t lo, hi;
  uint8_t *buf;
};
#define MAP_RUN_GAP 64          /* entries apart still written as one run */

static int
cmp_u64 (const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

  return x < y ? -1 : x > y;
}

/* Writes the pending entries of map M: the new change-log entries at the
 * log's end and the map bytes that become allocated (without a sync:
 * see the DESIGN note), in parallel on RADOS, in turn on this thread on
 * the local store.  Called with map_lock held and map_writing claimed;
 * drops the lock during the I/O. */
int
image_map_commit (struct image *img, struct objmap *m)
{
  struct changes p = img->pend;
  struct wait_all w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                        1, 0 };
  uint64_t *logbuf = NULL, *mi = NULL, i, logoff;
  struct map_run *runs = NULL;
  struct map_sum_runs sums = { NULL, 0, 0 };
  uint8_t *taken = NULL;
  size_t k, nlog = 0, nm = 0, nruns = 0;
  int r = 0;

  memset (&img->pend, 0, sizeof img->pend);
  logbuf = malloc ((p.n + 1) * sizeof *logbuf);
  mi = malloc ((p.n + 1) * sizeof *mi);
  runs = calloc (p.n + 1, sizeof *runs);
  taken = calloc (p.n + 1, 1);
  if (logbuf == NULL || mi == NULL || runs == NULL || taken == NULL) {
    r = -ENOMEM;
    goto out;
  }
  /* Room to remember. */
  if ((r = image_changes_reserve (&img->log, p.n)) < 0)
    goto out;
  /* What this commit writes: entries pending now (more may be added
   * while the lock is dropped; they stay pending for the next one). */
  for (k = 0; k < p.n; k++) {
    i = p.v[k];
    if (i >= m->n)
      continue;
    taken[k] = map_pending (m, i);
    if (taken[k] & NEED_LOG)
      logbuf[nlog++] = htole64 (i);
    if (taken[k] & NEED_MAP)
      mi[nm++] = i;
  }
  /* The map bytes to write, in runs of nearby entries: never a stretch
   * of the map between two far apart objects. */
  if (nm)
    qsort (mi, nm, sizeof *mi, cmp_u64);
  for (k = 0; k < nm; k++) {
    if (nruns && mi[k] - runs[nruns - 1].hi <= MAP_RUN_GAP)
      runs[nruns - 1].hi = mi[k];
    else {
      runs[nruns].lo = runs[nruns].hi = mi[k];
      nruns++;
    }
  }
  for (k = 0; k < nruns; k++) {
    struct map_run *run = &runs[k];
    run->buf = malloc (run->hi - run->lo + 1);
    if (run->buf == NULL) {
      r = -ENOMEM;
      goto out;
    }
    for (i = run->lo; i <= run->hi; i++)
      run->buf[i - run->lo] = (map_pending (m, i) & NEED_MAP)
        || image_map_get (m, i) != IMAGE_OBJ_ABSENT ? IMAGE_OBJ_CLEAN
        : IMAGE_OBJ_ABSENT;
    /* The summary bytes over the run, in the same synchronous batch. */
    if ((r = image_map_sum_plan (m, run->lo, run->hi, &sums)) < 0)
      goto out;
  }

  logoff = img->log.n * sizeof (uint64_t);
  pthread_mutex_unlock (&img->map_lock);
  if (nlog && (r = image_log_fix_tail (img, logoff)) < 0)
    w.err = r;
  if (img->lazy) {
    /* Buffered writes, on this thread: done before any data write of
     * these objects starts, durable with the next flush (openmark.c). */
    if (nlog && w.err == 0)
      w.err = store_write (img->st, img->log_oid, logbuf, nlog * 8, logoff,
                           0);
    for (k = 0; k < nruns && w.err == 0; k++)
      w.err = store_write (img->st, img->map_oid, runs[k].buf,
                           runs[k].hi - runs[k].lo + 1, runs[k].lo, 0);
    if (sums.n && w.err == 0)
      w.err = image_map_sum_write (img->st, img->map_oid, &sums);
  }
  else {
    /* RADOS: durable at completion; the writes go in parallel. */
    if (nlog && w.err == 0) {
      wait_all_add (&w, 1, 0);
      r = store_aio_write (img->st, img->log_oid, logbuf, nlog * 8, logoff,
                           0, wait_all_done, &w);
      if (r < 0)
        wait_all_add (&w, -1, r);
    }
    for (k = 0; k < nruns && wait_all_add (&w, 0, 0) == 0; k++) {
      wait_all_add (&w, 1, 0);
      r = store_aio_write (img->st, img->map_oid, runs[k].buf,
                           runs[k].hi - runs[k].lo + 1, runs[k].lo, 0,
                           wait_all_done, &w);
      if (r < 0)
        wait_all_add (&w, -1, r);
    }
    if (sums.n && wait_all_add (&w, 0, 0) == 0) {
      wait_all_add (&w, (int) sums.n, 0);
      image_map_sum_start (img->st, img->map_oid, &sums, wait_all_done, &w);
    }
  }
  wait_all_done (&w, 0);
  pthread_mutex_lock (&w.lock);
  while (w.left > 0)
    pthread_cond_wait (&w.cond, &w.lock);
  pthread_mutex_unlock (&w.lock);
  r = w.err;
  if (r < 0 && nlog)
    image_log_append_failed (img, logoff);
  pthread_mutex_lock (&img->map_lock);

  if (r == 0)
    image_map_sum_done (m, &sums);
  for (k = 0; r == 0 && k < nlog; k++)
    img->log.v[img->log.n++] = le64toh (logbuf[k]);
  for (k = 0; r == 0 && k < p.n; k++) {
    i = p.v[k];
    if (i >= m->n || taken[k] == 0)
      continue;
    /* The entry's page exists: it has a pending value. */
    if (taken[k] & NEED_LOG)
      image_map_put (m, i, F_LOGGED, 1);
    if ((taken[k] & NEED_MAP) || image_map_get (m, i) != IMAGE_OBJ_ABSENT)
      image_map_put (m, i, F_BYTE, image_map_logged (m, i) ? IMAGE_OBJ_DIRTY
                     : IMAGE_OBJ_CLEAN);
  }
out:
  /* Done with what it took (written or failed); what came meanwhile
   * stays pending, listed again for the next commit. */
  for (k = 0; k < p.n; k++) {
    i = p.v[k];
    if (i >= m->n)
      continue;
    image_map_put (m, i, F_PENDING,
                   taken ? map_pending (m, i) & (uint8_t) ~taken[k] : 0);
    if (map_pending (m, i) && image_changes_push (&img->pend, i) < 0)
      image_map_put (m, i, F_PENDING, 0);     /* its writer retries */
  }
  image_changes_free (&p);
  for (k = 0; runs && k < nruns; k++)
    free (runs[k].buf);
  free (runs);
  free (sums.v);
  free (mi);
  free (logbuf);
  free (taken);
  return r;
}

/* Marks pending what objects [FIRST, LAST] of M still need before they
 * may change (see image_map_mark_dirty); *DONE says they need nothing.
 * Called with map_lock held. */
int
image_map_need_locked (struct image *img, struct objmap *m, uint64_t first,
                       uint64_t last, bool alloc, bool *done)
{
  uint64_t i;
  int r = 0;

  *done = true;
  for (i = first; i <= last && i < m->n; i++) {
    unsigned need = (image_map_logged (m, i) ? 0 : NEED_LOG)
      | (alloc && image_map_get (m, i) == IMAGE_OBJ_ABSENT ? NEED_MAP : 0);
    uint8_t pend = map_pending (m, i);
    if (need == 0)
      continue;
    *done = false;
    if ((r = image_map_put (m, i, F_PENDING, pend | need)) < 0)
      break;
    if (pend == 0 && (r = image_changes_push (&img->pend, i)) < 0) {
      image_map_put (m, i, F_PENDING, 0);
      break;
    }
  }
  return r;
}

/* Objects [FIRST, LAST] of M need nothing before they change: logged in
 * the live interval and, with ALLOC, allocated. */
bool
image_map_ready (struct objmap *m, uint64_t first, uint64_t last, bool alloc)
{
  uint64_t i;

  for (i = first; i <= last && i < m->n; i++)
    if (alloc ? image_map_get (m, i) != IMAGE_OBJ_DIRTY
        : !image_map_logged (m, i))
      return false;
  return true;
}

/* Before objects [FIRST, LAST] change: puts them in the change log and,
 * when ALLOC (they will hold data), marks them allocated in the map
 * (written when this returns; durable at once on RADOS, with the next
 * flush on the local store).  Group commit: writers that need entries while a commit is in
 * flight mark them pending and wait; the next writer commits all pending
 * entries at once.  So the first writes to many objects after a
 * snapshot cost a few store writes, not one each in a row. */
int
image_map_mark_dirty (struct image *img, uint64_t first, uint64_t last,
                      bool alloc)
{
  struct objmap *m;
  int r = 0;

  m = __atomic_load_n (&img->map, __ATOMIC_ACQUIRE);
  if (image_map_ready (m, first, last, alloc)
      && !__atomic_load_n (&img->log_tail_unknown, __ATOMIC_ACQUIRE))
    return 0;                   /* the common case: nothing to do */

  pthread_mutex_lock (&img->map_lock);
  for (;;) {
    bool done = true;
    m = img->map;
    if (__atomic_load_n (&img->log_tail_unknown, __ATOMIC_ACQUIRE)) {
      /* A failed append was not cut yet (image_log_append_failed). */
      uint64_t off;
      if (img->map_writing) {
        pthread_cond_wait (&img->map_cond, &img->map_lock);
        continue;
      }
      img->map_writing = true;
      off = img->log.n * sizeof (uint64_t);
      pthread_mutex_unlock (&img->map_lock);
      r = image_log_fix_tail (img, off);
      pthread_mutex_lock (&img->map_lock);
      img->map_writing = false;
      pthread_cond_broadcast (&img->map_cond);
      if (r < 0)
        break;
      continue;
    }
    r = image_map_need_locked (img, m, first, last, alloc, &done);
    if (done || r < 0)
      break;
    if (img->map_writing) {
      pthread_cond_wait (&img->map_cond, &img->map_lock);
      continue;
    }
    /* Our turn: commit every pending entry, ours and the others'. */
    img->map_writing = true;
    r = image_map_commit (img, m);
    img->map_writing = false;
    pthread_cond_broadcast (&img->map_cond);
    if (r < 0)
      break;
  }
  pthread_mutex_unlock (&img->map_lock);
  return r;
}

/* Notes the parts of the objects that [OFF, OFF+LEN) touches: for the
 * next snapshot's detailed log (after image_map_mark_dirty, so never more than
 * the log already says). */
void
image_mark_parts (struct image *img, uint64_t off, uint64_t len)
{
  struct objmap *m = __atomic_load_n (&img->map, __ATOMIC_ACQUIRE);
  uint64_t osize = img->info.object_size, pos, end = off + len;

  for (pos = off; pos < end;) {
    uint64_t o = pos >> img->order, ooff = pos & (osize - 1);
    uint64_t n = MIN (osize - ooff, end - pos);
    /* Out of memory: the parts stay unknown, and the object counts
     * whole (its log record is). */
    if (o < m->n)
      image_map_put (m, o, F_PARTS_OR, image_parts_of (img->order, ooff, n));
    pos += n;
  }
}

/* After a whole-object discard: ABSENT, unless a write is in flight. */
void
image_map_mark_absent (struct image *img, uint64_t objno)
{
  struct objmap *m;
  uint8_t v = IMAGE_OBJ_ABSENT;

  pthread_mutex_lock (&img->map_lock);
  m = img->map;
  if (objno < m->n
      && __atomic_load_n (&img->wr_inflight[objno % INFLIGHT_BUCKETS],
                          __ATOMIC_SEQ_CST) == 0
      && image_map_get (m, objno) != IMAGE_OBJ_ABSENT) {
    image_map_put (m, objno, F_BYTE, IMAGE_OBJ_ABSENT);
    /* Not synchronous: losing it over-reports, which is allowed. */
    store_write (img->st, img->map_oid, &v, 1, objno, 0);
  }
  pthread_mutex_unlock (&img->map_lock);
}

/* ---- Allocation map --------------------------------------------------- */

static int extents_in (struct image *img, struct objmap *m, uint64_t off,
                       uint64_t len, image_extent_cb cb, void *arg);

int
image_set_trusted (struct image *img, int trusted)
{
  int r = 0;

  if (trusted && __atomic_load_n (&img->untrusted, __ATOMIC_ACQUIRE))
    r = image_refresh (img);
  if (r == 0)
    __atomic_store_n (&img->untrusted, !trusted, __ATOMIC_RELEASE);
  return r;
}

int
image_extents (struct image *img, uint64_t off, uint64_t len,
               image_extent_cb cb, void *arg)
{
  struct objmap *m = __atomic_load_n (&img->map, __ATOMIC_ACQUIRE);
  struct objmap *tmp = NULL;
  uint64_t size = image_size (img), first, last;
  int r;

  /* Not trusted: take the map as it is on the store now, only the part
   * that covers the range, read in windows. */
  if (__atomic_load_n (&img->untrusted, __ATOMIC_ACQUIRE) && off < size) {
    tmp = image_map_new (m->n);
    if (tmp == NULL)
      return -ENOMEM;
    first = off >> img->order;
    last = ((len > size - off ? size : off + len) + img->info.object_size - 1)
      >> img->order;
    r = image_map_read_stored (img->st, img->map_oid, img->info.format,
                               img->read_snap, tmp, first, MIN (last, m->n));
    if (r < 0) {
      image_map_free (tmp);
      return r;
    }
    m = tmp;
  }
  r = extents_in (img, m, off, len, cb, arg);
  image_map_free (tmp);
  return r;
}

static int
extents_in (struct image *img, struct objmap *m, uint64_t off, uint64_t len,
            image_extent_cb cb, void *arg)
{
  uint64_t size = image_size (img), end, pos, osize = img->info.object_size;
  int r;

  if (off >= size)
    return 0;
  end = len > size - off ? size : off + len;
  pos = off;
  while (pos < end) {
    uint64_t objno = pos >> img->order;
    int alloc = objno < m->n && image_map_get (m, objno) != IMAGE_OBJ_ABSENT;
    uint64_t next = (objno + 1) * osize;

    /* Extend over following objects of the same kind; a run of holes
     * skips absent pages and directories whole. */
    while (next < end) {
      uint64_t o = next >> img->order;
      if (o >= m->n) {
        if (alloc)
          break;
        next = end;
        break;
      }
      if (!alloc && __atomic_load_n (&m->dirs[o >> MAP_DIR_SPAN_SHIFT],
                                      __ATOMIC_ACQUIRE) == NULL) {
        next = ((o >> MAP_DIR_SPAN_SHIFT) + 1) << MAP_DIR_SPAN_SHIFT
          << img->order;
        continue;
      }
      if (!alloc && page_of (m, o) == NULL) {
        next = ((o >> MAP_PAGE_SHIFT) + 1) << MAP_PAGE_SHIFT << img->order;
        continue;
      }
      if ((image_map_get (m, o) != IMAGE_OBJ_ABSENT) != alloc)
        break;
      next += osize;
    }
    next = MIN (next, end);
    r = cb (arg, pos, next - pos, alloc);
    if (r != 0)
      return r;
    pos = next;
  }
  return 0;
}

