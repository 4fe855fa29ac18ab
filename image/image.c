/* SPDX-License-Identifier: MIT
 *
 * image.c - thin disk images on an object store (layout in image.h).
 *
 * DESIGN
 * - The header object's data holds what never changes after creation
 *   (name, object size, features), as "key=value" lines; the size is the
 *   xattr "size", changed only by compare-and-set so two resizes cannot
 *   interleave.  The name object vbk_name.NAME (created exclusively)
 *   claims a name and holds the id; vbk_directory's omap lists images.
 * - The object map has one byte per data object: ABSENT or CLEAN
 *   (allocated).  An open image keeps it in memory; a reader looks at a
 *   byte without a lock.  In memory an allocated entry is DIRTY once its
 *   object is in the change log of the live interval.
 * - The change log (vbk_changes.ID) lists the objects changed since the
 *   last snapshot, 8 bytes each, in the order of their first change.  It
 *   is written under the snapshot context and emptied by each snapshot,
 *   so its copy at snapshot S lists exactly the interval that ended at
 *   S: a diff reads one short list per snapshot, and a snapshot writes
 *   no map, whatever the disk's size.  Just before it, the snapshot
 *   appends which 1/32 parts of each object the holder saw change (kept
 *   in memory, never on the write path), so diffs between snapshots are
 *   finer than objects.
 * - Before the first change to an object in an interval, the writer
 *   appends it to the change log (and, if the object was ABSENT, marks it
 *   allocated in the map) with synchronous store writes; only then does
 *   the data write start.  So after any crash neither the map nor the
 *   log under-reports.  Concurrent first writes are committed together.
 * - A discard may mark an object ABSENT only when no write to it is in
 *   flight (counted in wr_inflight buckets), or the ABSENT could land
 *   after a concurrent write's entry and under-report.
 * - A shrink records the new size in the header xattr "min_size"; the
 *   next snapshot moves it into the log as a "from object N up" entry.
 * - A resize of an open image swaps the in-memory map (image_refresh);
 *   old maps are kept until image_close so lock-free readers never see
 *   freed memory.
 * - Every I/O is split at object boundaries.  Asynchronous calls issue
 *   store aio per piece and complete when the last piece does;
 *   synchronous calls do the pieces in turn on the caller's thread.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/error.h"
#include "common/util.h"
#include "image.h"

#define DIRECTORY_OID "vbk_directory"
#define INFLIGHT_BUCKETS 1024
#define HEADER_MAX 4096

/* The in-memory object map is sparse: a table of directories of pages
 * of MAP_PAGE entries, each allocated on the first non-zero value it
 * gets, so that open time and memory follow the objects allocated or
 * logged, not the image's size (a thin 64 TiB image with 4 MiB objects
 * needs a table of 64 pointers).  Pages and directories are published
 * with a compare-and-swap and freed only with their map (at
 * image_close), so lock-free readers never see freed memory; an absent
 * page reads as zeros. */
#define MAP_PAGE_SHIFT 6
#define MAP_PAGE (1u << MAP_PAGE_SHIFT)           /* entries per page */
#define MAP_DIR_SHIFT 12
#define MAP_DIR (1u << MAP_DIR_SHIFT)             /* pages per directory */
#define MAP_DIR_SPAN_SHIFT (MAP_PAGE_SHIFT + MAP_DIR_SHIFT)
#define MAP_WINDOW (1u << 20)   /* stored map bytes read at a time */

struct map_page {
  uint8_t bytes[MAP_PAGE];       /* ABSENT, CLEAN or DIRTY */
  uint8_t pending[MAP_PAGE];     /* NEED_* a group commit will write */
  uint8_t logged[MAP_PAGE];      /* last logged record: the whole object */
  uint32_t parts[MAP_PAGE];      /* parts changed in the live interval */
};

struct map_dir {
  struct map_page *pages[MAP_DIR];
};

struct objmap {
  struct objmap *retired;        /* older maps, freed at close */
  uint64_t n;                    /* entries */
  uint64_t ndirs;
  struct map_dir *dirs[];
};

/* What an entry still needs before its object may change. */
enum { NEED_LOG = 1, NEED_MAP = 2 };

static struct objmap *
map_new (uint64_t n)
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

static void
map_free (struct objmap *m)
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

/* The page holding entry I (< M->n), allocated if needed; NULL: out of
 * memory. */
static struct map_page *
page_make (struct objmap *m, uint64_t i)
{
  struct map_dir **dp = &m->dirs[i >> MAP_DIR_SPAN_SHIFT], *d, *nd;
  struct map_page **pp, *p, *np;

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

#define SLOT(i) ((i) & (MAP_PAGE - 1))

/* Readers of one field of entry I (< M->n). */
static uint8_t
map_get (struct objmap *m, uint64_t i)
{
  struct map_page *p = page_of (m, i);

  return p ? __atomic_load_n (&p->bytes[SLOT (i)], __ATOMIC_SEQ_CST) : 0;
}

static uint8_t
map_logged (struct objmap *m, uint64_t i)
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

static uint32_t
map_parts (struct objmap *m, uint64_t i)
{
  struct map_page *p = page_of (m, i);

  return p ? __atomic_load_n (&p->parts[SLOT (i)], __ATOMIC_RELAXED) : 0;
}

/* Writers: a zero needs no page.  Return 0 or -ENOMEM. */
enum map_field { F_BYTE, F_LOGGED, F_PENDING, F_PARTS, F_PARTS_OR };

static int
map_put (struct objmap *m, uint64_t i, enum map_field f, uint32_t v)
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
static uint64_t
map_count (struct objmap *m)
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

/* Adds the stored map OID at SNAP, entries [FIRST, LAST), to M: a
 * window at a time, allocated entries CLEAN. */
static int
map_read_stored (struct store *st, const char *oid, uint64_t snap,
                 struct objmap *m, uint64_t first, uint64_t last)
{
  uint64_t i, j, stored;
  ssize_t got = 0;
  uint8_t *buf;
  int r;

  /* Past its end the stored map reads as zeros: read only what it
   * holds (a thin image's map is short, whatever its size). */
  r = store_stat (st, oid, snap, &stored);
  if (r == -ENOENT)
    return 0;
  if (r < 0)
    return r;
  last = MIN (last, stored);
  buf = malloc (MAP_WINDOW);
  if (buf == NULL)
    return -ENOMEM;
  for (i = first; r == 0 && i < last; i += MAP_WINDOW) {
    size_t len = MIN (MAP_WINDOW, last - i);
    got = store_read (st, oid, buf, len, i, snap);
    if (got == -ENOENT)
      break;
    if (got < 0) {
      r = (int) got;
      break;
    }
    for (j = 0; r == 0 && j < (uint64_t) got; j++) {
      uint64_t w;
      if (j % 8 == 0 && j + 8 <= (uint64_t) got) {
        memcpy (&w, buf + j, 8);
        if (w == 0) {
          j += 7;
          continue;
        }
      }
      if (buf[j] != IMAGE_OBJ_ABSENT)
        r = map_put (m, i + j, F_BYTE, IMAGE_OBJ_CLEAN);
    }
    if ((size_t) got < len)
      break;                    /* the stored map ends here */
  }
  free (buf);
  return r;
}

/* A growable vector of 64-bit words (see "Change lists"). */
struct changes {
  uint64_t *v;
  size_t n, cap;
};

struct image {
  struct store *st;              /* our own clone of the caller's store */
  struct image_info info;
  unsigned order;                /* log2 (object_size) */
  unsigned flags;
  uint64_t read_snap;            /* STORE_SNAP_HEAD, or the snapshot read */
  int untrusted;                 /* the map may be stale: see image.h */
  char hdr_oid[64], map_oid[64], log_oid[64];
  struct objmap *map;            /* replaced only by image_refresh */
  pthread_mutex_t map_lock;      /* serializes map changes */
  pthread_cond_t map_cond;       /* a map write finished */
  bool map_writing;              /* a thread is writing the map or log */
  struct changes log;            /* the change log as stored (raw) */
  bool log_tail_unknown;         /* words may lie past log.n: cut first */
  struct changes pend;           /* entries with pending != 0 */
  int wr_inflight[INFLIGHT_BUCKETS];
};

/* ---- Names and header ------------------------------------------------- */

int
image_name_check (const char *name)
{
  size_t n = name ? strlen (name) : 0, i;

  if (n == 0 || n > IMAGE_NAME_MAX || name[0] == '.' || name[0] == '-')
    goto bad;
  for (i = 0; i < n; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
          || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'
          || c == '+'))
      goto bad;
  }
  return 0;
bad:
  vbk_set_error ("invalid image name '%s': use 1-%d of A-Z a-z 0-9 . _ + -, "
                 "not starting with '.' or '-'", name ? name : "",
                 IMAGE_NAME_MAX);
  return -EINVAL;
}

void
image_data_oid (const char *id, uint64_t objno, char *buf, size_t len)
{
  snprintf (buf, len, "vbk_data.%s.%016" PRIx64, id, objno);
}

static void
name_oid (const char *name, char *buf, size_t len)
{
  snprintf (buf, len, "vbk_name.%s", name);
}

void
image_header_oid (const char *id, char *buf, size_t len)
{
  snprintf (buf, len, "vbk_header.%s", id);
}

static void
map_oid (const char *id, char *buf, size_t len)
{
  snprintf (buf, len, "vbk_object_map.%s", id);
}

static void
changes_oid (const char *id, char *buf, size_t len)
{
  snprintf (buf, len, "vbk_changes.%s", id);
}

/* Changes recorded for the interval that ends at snapshot SNAPID (0: the
 * live interval) by snapshots removed since: when a snapshot goes, its
 * interval's changes move here, into the next newer interval, so
 * changed-block tracking never loses them.  Same format as the log. */
static void
merged_oid (const char *id, uint64_t snapid, char *buf, size_t len)
{
  if (snapid)
    snprintf (buf, len, "vbk_changes.%s.merged.%016" PRIx64, id, snapid);
  else
    snprintf (buf, len, "vbk_changes.%s.merged.head", id);
}

/* ---- Change lists -----------------------------------------------------
 * A change log or merged list is a sequence of little-endian 64-bit
 * words: OBJNO (the whole object changed), CHANGES_FROM | OBJNO (every
 * object from OBJNO up changed: a shrink), or CHANGES_DETAIL | OBJNO
 * followed by a word whose low SUBBLOCKS bits say which parts of the
 * object changed.  In one list the last record of an object wins. */

#define CHANGES_FROM (UINT64_C (1) << 63)
#define CHANGES_DETAIL (UINT64_C (1) << 62)
#define SUBBLOCKS 32
#define ALL_PARTS UINT32_MAX

static int changes_reserve (struct changes *c, size_t extra);
static int check_writable (struct image *img, const char *op);

static int
changes_push (struct changes *c, uint64_t e)
{
  int r = changes_reserve (c, 1);

  if (r == 0)
    c->v[c->n++] = e;
  return r;
}

static void
changes_free (struct changes *c)
{
  free (c->v);
  c->v = NULL;
  c->n = c->cap = 0;
}

/* Room for EXTRA more words in C. */
static int
changes_reserve (struct changes *c, size_t extra)
{
  size_t cap;
  uint64_t *v;

  if (c->cap >= c->n + extra)
    return 0;
  cap = MAX (2 * c->cap, c->n + extra + 64);
  v = realloc (c->v, cap * sizeof *v);
  if (v == NULL)
    return -ENOMEM;
  c->v = v;
  c->cap = cap;
  return 0;
}

/* One change-log writer at a time (map_writing): a group commit, a
 * snapshot, saving parts, rewriting the log after a rollback. */
static void
log_writer_enter (struct image *img)
{
  pthread_mutex_lock (&img->map_lock);
  while (img->map_writing)
    pthread_cond_wait (&img->map_cond, &img->map_lock);
  img->map_writing = true;
  pthread_mutex_unlock (&img->map_lock);
}

static void
log_writer_exit (struct image *img)
{
  pthread_mutex_lock (&img->map_lock);
  img->map_writing = false;
  pthread_cond_broadcast (&img->map_cond);
  pthread_mutex_unlock (&img->map_lock);
}

/* Before an append at OFF to IMG's log (by the change-log writer): if an
 * earlier append failed, it may have landed anyway; its words past OFF
 * must go before new ones land among them. */
static int
log_fix_tail (struct image *img, uint64_t off)
{
  int r;

  if (!__atomic_load_n (&img->log_tail_unknown, __ATOMIC_ACQUIRE))
    return 0;
  r = store_truncate (img->st, img->log_oid, off);
  if (r == 0 || r == -ENOENT) {
    __atomic_store_n (&img->log_tail_unknown, false, __ATOMIC_RELEASE);
    r = 0;
  }
  else {
    char msg[1024];
    snprintf (msg, sizeof msg, "%s", vbk_error ());
    vbk_set_error ("image '%s': change log: cutting a failed append (writes "
                   "wait for it): %s", img->info.name, msg);
  }
  return r;
}

/* After a failed append at OFF: cut what may have landed, or make the
 * next append do it.  Until the cut succeeds the log may end in records
 * this handle does not know of: a detail record that landed would make
 * a whole-object record of ours look like only some parts changed, so a
 * later write to another part of that object, which appends nothing,
 * would be missed by a diff.  So no write may start until the cut is
 * done (map_mark_dirty tries it again first, and fails while it fails). */
static void
log_append_failed (struct image *img, uint64_t off)
{
  __atomic_store_n (&img->log_tail_unknown, true, __ATOMIC_RELEASE);
  log_fix_tail (img, off);
}

/* Calls FN (ARG, OBJNO, PARTS) for each object record of the words
 * V[0..N), in order: PARTS is ALL_PARTS for a whole-object record. */
static void
changes_each (const uint64_t *v, size_t n,
              void (*fn) (void *arg, uint64_t objno, uint32_t parts),
              void *arg)
{
  size_t i;

  for (i = 0; i < n; i++) {
    if (v[i] & CHANGES_FROM)
      continue;
    if (v[i] & CHANGES_DETAIL) {
      uint32_t parts = i + 1 < n ? (uint32_t) v[i + 1] : ALL_PARTS;
      fn (arg, v[i] & ~CHANGES_DETAIL, parts);
      i++;
    }
    else
      fn (arg, v[i], ALL_PARTS);
  }
}

/* Reads the words of list object OID at SNAP and appends them to C.  An
 * absent object is an empty list. */
static int
changes_read (struct store *st, const char *oid, uint64_t snap,
              struct changes *c)
{
  uint64_t size, *buf, i;
  ssize_t got;
  int r;

  r = store_stat (st, oid, snap, &size);
  if (r == -ENOENT)
    return 0;
  if (r < 0)
    return r;
  size -= size % 8;
  buf = malloc (size ? size : 1);
  if (buf == NULL)
    return -ENOMEM;
  got = store_read (st, oid, buf, size, 0, snap);
  r = got == -ENOENT ? 0 : got < 0 ? (int) got : 0;
  for (i = 0; r == 0 && got > 0 && i < (uint64_t) got / 8; i++)
    r = changes_push (c, le64toh (buf[i]));
  free (buf);
  return r;
}

/* A set of changed objects, each with the parts that changed, and FROM:
 * every object from it up (UINT64_MAX: none). */
struct change {
  uint64_t objno;
  uint32_t parts;
  uint32_t seq;
};

struct change_set {
  struct change *v;
  size_t n, cap;
  uint64_t from;
  int err;
};

static void
set_add (void *arg, uint64_t objno, uint32_t parts)
{
  struct change_set *s = arg;

  if (s->n == s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 64;
    struct change *v = realloc (s->v, cap * sizeof *v);
    if (v == NULL) {
      s->err = -ENOMEM;
      return;
    }
    s->v = v;
    s->cap = cap;
  }
  s->v[s->n].objno = objno;
  s->v[s->n].parts = parts;
  s->v[s->n].seq = (uint32_t) s->n;
  s->n++;
}

static int
cmp_change (const void *a, const void *b)
{
  const struct change *x = a, *y = b;
  if (x->objno != y->objno)
    return x->objno < y->objno ? -1 : 1;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Sorts S by object; a repeated object keeps the last record (LAST_WINS,
 * within one list) or the union of its parts (across lists).  Drops
 * objects at or past S->from. */
static void
set_sort (struct change_set *s, bool last_wins)
{
  size_t i, k = 0;

  if (s->n)
    qsort (s->v, s->n, sizeof *s->v, cmp_change);
  for (i = 0; i < s->n; i++) {
    if (s->v[i].objno >= s->from)
      break;
    if (k > 0 && s->v[k - 1].objno == s->v[i].objno)
      s->v[k - 1].parts = last_wins ? s->v[i].parts
        : s->v[k - 1].parts | s->v[i].parts;
    else
      s->v[k++] = s->v[i];
  }
  s->n = k;
}

/* Adds list object OID at SNAP to S (the union). */
static int
set_read (struct store *st, const char *oid, uint64_t snap,
          struct change_set *s)
{
  struct changes words = { NULL, 0, 0 };
  struct change_set one = { .from = UINT64_MAX };
  size_t i;
  int r;

  r = changes_read (st, oid, snap, &words);
  if (r == 0) {
    for (i = 0; i < words.n; i++)
      if (words.v[i] & CHANGES_FROM)
        s->from = MIN (s->from, words.v[i] & ~CHANGES_FROM);
    changes_each (words.v, words.n, set_add, &one);
    r = one.err;
  }
  if (r == 0) {
    set_sort (&one, true);
    for (i = 0; i < one.n && s->err == 0; i++)
      set_add (s, one.v[i].objno, one.v[i].parts);
    r = s->err;
  }
  changes_free (&words);
  free (one.v);
  return r;
}

/* Stores the sorted S as list object OID (synchronously). */
static int
set_write (struct store *st, const char *oid, const struct change_set *s)
{
  uint64_t *buf = malloc ((2 * s->n + 1) * sizeof *buf);
  size_t i, k = 0;
  int r;

  if (buf == NULL)
    return -ENOMEM;
  for (i = 0; i < s->n; i++) {
    if (s->v[i].parts == ALL_PARTS)
      buf[k++] = htole64 (s->v[i].objno);
    else {
      buf[k++] = htole64 (CHANGES_DETAIL | s->v[i].objno);
      buf[k++] = htole64 (s->v[i].parts);
    }
  }
  if (s->from != UINT64_MAX)
    buf[k++] = htole64 (CHANGES_FROM | s->from);
  r = store_write_full (st, oid, buf, k * sizeof *buf, STORE_WRITE_SYNC);
  free (buf);
  return r;
}

/* The parts of an object of 1 << ORDER bytes that [OFF, OFF+LEN) (within
 * it, LEN > 0) touches. */
static uint32_t
parts_of (unsigned order, uint64_t off, uint64_t len)
{
  unsigned shift = order - 5;               /* SUBBLOCKS == 32 */
  unsigned first = off >> shift, last = (off + len - 1) >> shift;

  if (last - first >= 31)
    return ALL_PARTS;
  return (uint32_t) (((UINT64_C (1) << (last - first + 1)) - 1) << first);
}

/* Records in header HDR that the image shrinks to SIZE bytes: the
 * objects from there up change (see the DESIGN note). */
static int
note_shrink (struct store *st, const char *hdr, uint64_t size)
{
  char buf[32];
  ssize_t got;

  got = store_xattr_get (st, hdr, "min_size", buf, sizeof buf - 1);
  if (got > 0) {
    buf[got] = '\0';
    if (buf[0] != '-' && strtoull (buf, NULL, 10) <= size)
      return 0;
  }
  else if (got < 0 && got != -ENODATA && got != -ENOENT)
    return (int) got;
  snprintf (buf, sizeof buf, "%" PRIu64, size);
  return store_xattr_set (st, hdr, "min_size", buf, strlen (buf));
}

/* The size recorded by note_shrink since the last snapshot, or
 * UINT64_MAX. */
static int
shrunk_to (struct store *st, const char *hdr, uint64_t *size)
{
  char buf[32];
  ssize_t got;

  *size = UINT64_MAX;
  got = store_xattr_get (st, hdr, "min_size", buf, sizeof buf - 1);
  if (got == -ENODATA || got == -ENOENT)
    return 0;
  if (got < 0)
    return (int) got;
  buf[got] = '\0';
  if (buf[0] != '-')                    /* "-": taken by a snapshot */
    *size = strtoull (buf, NULL, 10);
  return 0;
}

static uint64_t
count_objects (uint64_t size, uint32_t object_size)
{
  return (size + object_size - 1) / object_size;
}

/* Finds NAME's id.  -ENOENT with a message if there is no such image. */
static int
lookup_id (struct store *st, const char *name, char *id, size_t len)
{
  char oid[IMAGE_NAME_MAX + 16];
  ssize_t n;

  if (image_name_check (name) < 0)
    return -EINVAL;
  name_oid (name, oid, sizeof oid);
  n = store_read (st, oid, id, len - 1, 0, STORE_SNAP_HEAD);
  if (n == -ENOENT) {
    vbk_set_error ("image '%s' does not exist", name);
    return -ENOENT;
  }
  if (n < 0)
    return (int) n;
  id[len - 1] = '\0';
  id[strcspn (id, "\n")] = '\0';
  if (id[0] == '\0') {
    vbk_set_error ("image '%s': name object is empty", name);
    return -EIO;
  }
  return 0;
}

static int
read_size (struct store *st, const char *hdr, uint64_t *size, char *raw,
           size_t rawlen)
{
  char buf[32];
  ssize_t n;

  n = store_xattr_get (st, hdr, "size", buf, sizeof buf - 1);
  if (n < 0)
    return (int) n;
  buf[MIN ((size_t) n, sizeof buf - 1)] = '\0';
  *size = strtoull (buf, NULL, 10);
  if (raw)
    snprintf (raw, rawlen, "%s", buf);
  return 0;
}

#define STATE_IMPORTING "importing"
#define STATE_REMOVING "removing"

/* The header's state xattr into INFO (absent: a normal image). */
static int
read_state (struct store *st, const char *hdr, struct image_info *info)
{
  char buf[160];
  ssize_t n;

  info->state = IMAGE_STATE_OK;
  info->state_detail[0] = '\0';
  n = store_xattr_get (st, hdr, "state", buf, sizeof buf - 1);
  if (n == -ENODATA)
    return 0;
  if (n < 0)
    return (int) n;
  buf[n] = '\0';
  if (strncmp (buf, STATE_IMPORTING, strlen (STATE_IMPORTING)) == 0) {
    const char *detail = buf + strlen (STATE_IMPORTING);
    info->state = IMAGE_STATE_IMPORTING;
    snprintf (info->state_detail, sizeof info->state_detail, "%s",
              detail + (*detail == ' '));
  }
  else if (strcmp (buf, STATE_REMOVING) == 0)
    info->state = IMAGE_STATE_REMOVING;
  else {
    vbk_set_error ("image %s: unknown state '%s' in the header (written by "
                   "a newer vbk?)", info->id, buf);
    return -EINVAL;
  }
  return 0;
}

/* Reads the header of image ID into INFO (name, id, size, object size,
 * features, state). */
static int
read_header (struct store *st, const char *id, struct image_info *info)
{
  char hdr[64], buf[HEADER_MAX], *line, *save;
  uint64_t objsize = 0, format = 0;
  ssize_t n;
  int r;

  image_header_oid (id, hdr, sizeof hdr);
  n = store_read (st, hdr, buf, sizeof buf - 1, 0, STORE_SNAP_HEAD);
  if (n < 0)
    return (int) n;
  buf[sizeof buf - 1] = '\0';
  memset (info, 0, sizeof *info);
  snprintf (info->id, sizeof info->id, "%s", id);
  for (line = strtok_r (buf, "\n", &save); line;
       line = strtok_r (NULL, "\n", &save)) {
    if (strncmp (line, "format=", 7) == 0)
      format = strtoull (line + 7, NULL, 10);
    else if (strncmp (line, "name=", 5) == 0)
      snprintf (info->name, sizeof info->name, "%s", line + 5);
    else if (strncmp (line, "object_size=", 12) == 0)
      objsize = strtoull (line + 12, NULL, 10);
    else if (strncmp (line, "features=", 9) == 0)
      info->features = strtoull (line + 9, NULL, 10);
  }
  if (!is_power_of_2 (objsize) || objsize < IMAGE_OBJECT_SIZE_MIN
      || objsize > IMAGE_OBJECT_SIZE_MAX) {
    vbk_set_error ("image %s: corrupt header (object size %" PRIu64 ")", id,
                   objsize);
    return -EIO;
  }
  if (format > IMAGE_FORMAT) {
    vbk_set_error ("image %s: header format %" PRIu64 " is newer than this "
                   "vbk reads (%d): upgrade vbk", id, format, IMAGE_FORMAT);
    return -EINVAL;
  }
  info->object_size = (uint32_t) objsize;
  r = read_size (st, hdr, &info->size, NULL, 0);
  if (r < 0)
    return r;
  return read_state (st, hdr, info);
}

/* Counts the allocated entries of the stored object map, a window at a
 * time. */
static int
count_allocated (struct store *st, const struct image_info *info,
                 uint64_t *count)
{
  uint64_t n = count_objects (info->size, info->object_size), i, c = 0;
  size_t win = 1 << 20, j;
  char moid[64];
  uint8_t *buf;
  ssize_t r = 0;

  *count = 0;
  map_oid (info->id, moid, sizeof moid);
  r = store_stat (st, moid, STORE_SNAP_HEAD, &i);
  if (r == -ENOENT)
    return 0;
  if (r < 0)
    return (int) r;
  n = MIN (n, i);               /* past its end, all ABSENT */
  if (n == 0)
    return 0;
  buf = malloc (win);
  if (buf == NULL)
    return -ENOMEM;
  for (i = 0; i < n; i += win) {
    size_t len = MIN (win, n - i);
    r = store_read (st, moid, buf, len, i, STORE_SNAP_HEAD);
    if (r == -ENOENT) {
      r = 0;
      break;
    }
    if (r < 0)
      break;
    for (j = 0; j < (size_t) r; j++)
      c += buf[j] != IMAGE_OBJ_ABSENT;
  }
  free (buf);
  *count = c;
  return r < 0 ? (int) r : 0;
}

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
static int
snaps_of_header (struct store *st, const char *hdr, struct image_snap **list,
                 size_t *n)
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

/* Gives ST the snapshot context of header HDR, so its writes preserve
 * every snapshot. */
static int
load_snap_context (struct store *st, const char *hdr)
{
  struct image_snap *v;
  uint64_t *ids, seq;
  size_t n, i;
  int r;

  r = snaps_of_header (st, hdr, &v, &n);
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
  ids = malloc ((n ? n : 1) * sizeof *ids);
  if (ids == NULL) {
    free (v);
    return -ENOMEM;
  }
  for (i = 0; i < n; i++) {
    ids[i] = v[n - 1 - i].id;          /* newest first */
    seq = MAX (seq, ids[i]);
  }
  r = store_set_snap_context (st, seq, ids, n);
  free (ids);
  free (v);
  return r;
}

static int
find_snap (struct store *st, const char *hdr, const char *image,
           const char *snap, struct image_snap *out)
{
  struct image_snap *v;
  size_t n, i;
  int r;

  r = snaps_of_header (st, hdr, &v, &n);
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

/* ---- Create, remove, stat, list, resize ------------------------------- */

/* Checks that SIZE bytes in objects of OBJECT_SIZE stay within
 * IMAGE_OBJECTS_MAX objects. */
static int
check_objects (uint64_t size, uint32_t object_size)
{
  if (count_objects (size, object_size) > IMAGE_OBJECTS_MAX) {
    vbk_set_error ("invalid image size %" PRIu64 ": more than %" PRIu64
                   " objects of %" PRIu32 " bytes (at most %" PRIu64
                   " bytes; use a larger --object-size)", size,
                   IMAGE_OBJECTS_MAX, object_size,
                   IMAGE_OBJECTS_MAX * object_size);
    return -EINVAL;
  }
  return 0;
}

/* Creates image NAME; with STATE (an xattr value) not NULL, marked so
 * before it is listed. */
static int
create_common (struct store *st, const char *name, uint64_t size,
               uint32_t object_size, const char *state)
{
  char id[17], oid[IMAGE_NAME_MAX + 16], hdr[64], moid[64], buf[HEADER_MAX];
  char sizebuf[32];
  uint8_t rnd[8];
  int r, n;

  if (image_name_check (name) < 0)
    return -EINVAL;
  if (object_size == 0)
    object_size = IMAGE_OBJECT_SIZE_DEFAULT;
  if (!is_power_of_2 (object_size) || object_size < IMAGE_OBJECT_SIZE_MIN
      || object_size > IMAGE_OBJECT_SIZE_MAX) {
    vbk_set_error ("invalid object size %" PRIu32 ": must be a power of two "
                   "from 64K to 32M", object_size);
    return -EINVAL;
  }
  if (size == 0 || size > IMAGE_SIZE_MAX) {
    vbk_set_error ("invalid image size %" PRIu64 ": must be from 1 byte to "
                   "1 PiB", size);
    return -EINVAL;
  }
  if (check_objects (size, object_size) < 0)
    return -EINVAL;
  if (getrandom (rnd, sizeof rnd, 0) != sizeof rnd)
    return vbk_errno (-errno, "image: create: getrandom");
  snprintf (id, sizeof id, "%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0],
            rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);

  /* Claim the name first: two creators of one name cannot both win. */
  name_oid (name, oid, sizeof oid);
  r = store_create_excl (st, oid, id, strlen (id), STORE_WRITE_SYNC);
  if (r == -EEXIST) {
    vbk_set_error ("image '%s' already exists", name);
    return r;
  }
  if (r < 0)
    return r;

  image_header_oid (id, hdr, sizeof hdr);
  map_oid (id, moid, sizeof moid);
  n = snprintf (buf, sizeof buf, "format=%d\nname=%s\nobject_size=%" PRIu32
                "\nfeatures=0\n", IMAGE_FORMAT, name, object_size);
  snprintf (sizebuf, sizeof sizebuf, "%" PRIu64, size);
  if ((r = store_create_excl (st, hdr, buf, n, STORE_WRITE_SYNC)) < 0
      || (state && (r = store_xattr_set (st, hdr, "state", state,
                                         strlen (state))) < 0)
      || (r = store_xattr_set (st, hdr, "size", sizebuf,
                               strlen (sizebuf))) < 0
      || (r = store_create_excl (st, moid, "", 0, STORE_WRITE_SYNC)) < 0
      || (r = store_omap_set (st, DIRECTORY_OID, name, id, strlen (id))) < 0) {
    char msg[1024];
    snprintf (msg, sizeof msg, "%s", vbk_error ());
    store_remove (st, moid);
    store_remove (st, hdr);
    store_remove (st, oid);
    vbk_set_error ("image: create '%s': %s", name, msg);
    return r;
  }
  return 0;
}

int
image_create (struct store *st, const char *name, uint64_t size,
              uint32_t object_size)
{
  return create_common (st, name, size, object_size, NULL);
}

int
image_create_incomplete (struct store *st, const char *name, uint64_t size,
                         uint32_t object_size)
{
  char state[160], host[64] = "";

  gethostname (host, sizeof host - 1);
  snprintf (state, sizeof state, STATE_IMPORTING " %s %ld %" PRIu64,
            host[0] ? host : "-", (long) getpid (), now_wall_ms ());
  return create_common (st, name, size, object_size, state);
}

int
image_set_complete (struct image *img)
{
  int r = check_writable (img, "complete");

  if (r < 0)
    return r;
  r = store_xattr_rm (img->st, img->hdr_oid, "state");
  if (r == -ENODATA)
    r = 0;
  if (r == 0)
    img->info.state = IMAGE_STATE_OK;
  return r;
}

int
image_stat (struct store *st, const char *name, struct image_info *info)
{
  char id[32];
  int r;

  r = lookup_id (st, name, id, sizeof id);
  if (r < 0)
    return r;
  r = read_header (st, id, info);
  if (r == -ENOENT)
    vbk_set_error ("image '%s' does not exist (only its name is left: "
                   "'vbk image rm' removes it)", name);
  return r;
}

int
image_count_objects (struct store *st, const char *name, uint64_t *count)
{
  struct image_info info;
  int r;

  r = image_stat (st, name, &info);
  if (r == 0)
    r = count_allocated (st, &info, count);
  return r;
}

struct list_ctx {
  struct store *st;
  struct image_info *v;
  size_t n, cap;
  int err;
};

static int
list_one (void *arg, const char *key, const void *val, size_t len)
{
  struct list_ctx *c = arg;
  char id[32];
  int r;

  if (c->n == c->cap) {
    struct image_info *nv;
    c->cap = c->cap ? 2 * c->cap : 16;
    nv = realloc (c->v, c->cap * sizeof *nv);
    if (nv == NULL)
      return -ENOMEM;
    c->v = nv;
  }
  snprintf (id, sizeof id, "%.*s", (int) MIN (len, sizeof id - 1),
            (const char *) val);
  r = read_header (c->st, id, &c->v[c->n]);
  if (r == -ENOENT)
    return 0;                   /* removed meanwhile */
  if (r < 0)
    return r;
  c->n++;
  return 0;
}

int
image_list (struct store *st, struct image_info **list, size_t *n)
{
  struct list_ctx c = { .st = st };
  char after[IMAGE_NAME_MAX + 1] = "";
  size_t before;
  int r;

  /* Walk in pages, so a big directory needs no big reply. */
  do {
    before = c.n;
    r = store_omap_list (st, DIRECTORY_OID, after, 256, list_one, &c);
    if (r == -ENOENT) {
      r = 0;                    /* no image was ever created */
      break;
    }
    if (r < 0) {
      free (c.v);
      return r;
    }
    if (c.n > before)
      snprintf (after, sizeof after, "%s", c.v[c.n - 1].name);
  } while (c.n - before == 256);
  *list = c.v;
  *n = c.n;
  return 0;
}

/* Removes data objects [FIRST, LAST) that the stored map says exist. */
static int
remove_objects (struct store *st, const struct image_info *info,
                uint64_t first, uint64_t last)
{
  char moid[64], oid[96];
  uint8_t *buf;
  uint64_t i, j, chunk;
  ssize_t n;
  int r = 0;

  map_oid (info->id, moid, sizeof moid);
  r = store_stat (st, moid, STORE_SNAP_HEAD, &i);
  if (r == -ENOENT)
    return 0;
  if (r < 0)
    return r;
  last = MIN (last, i);         /* past its end, all ABSENT */
  buf = malloc (1 << 20);
  if (buf == NULL)
    return -ENOMEM;
  for (i = first; r == 0 && i < last; i += chunk) {
    chunk = MIN (1 << 20, last - i);
    n = store_read (st, moid, buf, chunk, i, STORE_SNAP_HEAD);
    if (n == -ENOENT)
      break;
    if (n < 0)
      r = (int) n;
    if (n < (ssize_t) chunk)
      chunk = last - i;         /* the map ends here */
    for (j = 0; r == 0 && j < (uint64_t) n; j++) {
      if (buf[j] == IMAGE_OBJ_ABSENT)
        continue;
      image_data_oid (info->id, i + j, oid, sizeof oid);
      r = store_remove (st, oid);
      if (r == -ENOENT)
        r = 0;
    }
  }
  free (buf);
  return r;
}

/* Removal, crash-ordered:
 *   <start> -> MARK (header state "removing": not opened any more)
 *     -> DATA (every object the stored map lists: an entry is durable
 *        before its object is written; without a snapshot context, so
 *        the snapshots' copies stay for now)
 *     -> LOGS (live log, merged list of the live interval) -> MAP
 *     -> SNAPSHOTS (each: its merged list, then the store snapshot, which
 *        frees the copies of data objects, map and log it kept: with the
 *        heads gone, nothing of them is left)
 *     -> HEADER (the snapshot table, xattrs, omap) -> DIRECTORY entry
 *     -> NAME <end>
 * The name object goes last, so a removal that died anywhere is found
 * again by name and finished by another; each step tolerates objects
 * already gone. */
int
image_remove (struct store *st, const char *name)
{
  struct image_info info;
  char id[32], oid[IMAGE_NAME_MAX + 16], hdr[64], moid[64], lst[96];
  struct image_snap *v = NULL;
  size_t n = 0, i;
  bool have_header;
  int r;

  r = lookup_id (st, name, id, sizeof id);
  if (r < 0)
    return r;
  image_header_oid (id, hdr, sizeof hdr);
  map_oid (id, moid, sizeof moid);
  r = read_header (st, id, &info);
  if (r == 0 && info.state != IMAGE_STATE_REMOVING)
    r = store_xattr_set (st, hdr, "state", STATE_REMOVING,
                         strlen (STATE_REMOVING));
  if (r < 0 && r != -ENOENT)
    return r;
  have_header = r == 0;
  if (have_header) {
    r = remove_objects (st, &info, 0,
                        count_objects (info.size, info.object_size));
    if (r < 0)
      return r;
  }
  merged_oid (id, 0, lst, sizeof lst);
  if ((r = store_remove (st, lst)) < 0 && r != -ENOENT)
    return r;
  changes_oid (id, lst, sizeof lst);
  if ((r = store_remove (st, lst)) < 0 && r != -ENOENT)
    return r;
  if ((r = store_remove (st, moid)) < 0 && r != -ENOENT)
    return r;
  if (have_header) {
    r = snaps_of_header (st, hdr, &v, &n);
    if (r < 0)
      return r;
    for (i = 0; i < n; i++) {
      merged_oid (id, v[i].id, lst, sizeof lst);
      if ((r = store_remove (st, lst)) < 0 && r != -ENOENT)
        break;
      if ((r = store_snap_remove (st, v[i].id)) < 0 && r != -ENOENT)
        break;
      r = 0;
    }
    free (v);
    if (r < 0)
      return r;
  }
  if ((r = store_remove (st, hdr)) < 0 && r != -ENOENT)
    return r;
  if ((r = store_omap_rm (st, DIRECTORY_OID, name)) < 0 && r != -ENOENT)
    return r;
  name_oid (name, oid, sizeof oid);
  if ((r = store_remove (st, oid)) < 0 && r != -ENOENT)
    return r;
  return 0;
}

static int resize_with (struct store *st, const char *name,
                        struct image_info *info0, const char *hdr,
                        const char *moid, uint64_t size, char *oldraw,
                        char *newraw, char *oid);

int
image_resize (struct store *st, const char *name, uint64_t size)
{
  struct image_info info;
  char id[32], hdr[64], moid[64], oldraw[32], newraw[32], oid[96];
  int r;

  if (size == 0 || size > IMAGE_SIZE_MAX) {
    vbk_set_error ("invalid image size %" PRIu64 ": must be from 1 byte to "
                   "1 PiB", size);
    return -EINVAL;
  }
  r = lookup_id (st, name, id, sizeof id);
  if (r < 0)
    return r;
  r = read_header (st, id, &info);
  if (r < 0)
    return r;
  if (check_objects (size, info.object_size) < 0)
    return -EINVAL;
  image_header_oid (id, hdr, sizeof hdr);
  map_oid (id, moid, sizeof moid);
  /* Cut objects under the snapshot context, so snapshots keep them. */
  struct store *cst;
  r = store_clone (st, &cst);
  if (r < 0)
    return r;
  r = load_snap_context (cst, hdr);
  if (r < 0) {
    store_close (cst);
    return r;
  }
  r = resize_with (cst, name, &info, hdr, moid, size, oldraw, newraw, oid);
  store_close (cst);
  return r;
}

static int
resize_with (struct store *st, const char *name, struct image_info *info0,
             const char *hdr, const char *moid, uint64_t size, char *oldraw,
             char *newraw, char *oid)
{
  struct image_info info = *info0;
  const char *id = info.id;
  uint64_t oldn, newn;
  int r;

  r = read_size (st, hdr, &info.size, oldraw, 32);
  if (r < 0)
    return r;
  oldn = count_objects (info.size, info.object_size);
  newn = count_objects (size, info.object_size);

  if (size < info.size) {
    /* Drop whole objects past the end, cut the new last object, and
     * clear their map entries, before the size says so: a crash leaves
     * an image of the old size with its tail already gone, never an
     * image whose regrown tail shows old data. */
    uint64_t tail = size % info.object_size;
    r = note_shrink (st, hdr, size);
    if (r < 0)
      return r;
    r = remove_objects (st, &info, newn, oldn);
    if (r < 0)
      return r;
    if (tail) {
      image_data_oid (id, newn - 1, oid, 96);
      r = store_truncate (st, oid, tail);
      if (r < 0 && r != -ENOENT)
        return r;
    }
    r = store_truncate (st, moid, newn);
    if (r < 0 && r != -ENOENT)
      return r;
  }
  snprintf (newraw, 32, "%" PRIu64, size);
  r = store_xattr_cas (st, hdr, "size", oldraw, strlen (oldraw), newraw,
                       strlen (newraw));
  if (r == -ECANCELED)
    vbk_set_error ("image '%s': resized by someone else meanwhile; retry",
                   name);
  return r;
}

/* ---- Open, close, refresh --------------------------------------------- */

struct load_ctx {
  struct objmap *m;
  int err;
};

/* A record of the live log, loaded into map ARG: a whole-object record
 * counts as "logged"; a detailed one (written by a snapshot that did not
 * complete) gives the parts, and the next change logs the object again. */
static void
load_record (void *arg, uint64_t objno, uint32_t parts)
{
  struct load_ctx *c = arg;

  if (objno < c->m->n && c->err == 0
      && ((c->err = map_put (c->m, objno, F_LOGGED,
                             parts == ALL_PARTS)) < 0
          || (c->err = map_put (c->m, objno, F_PARTS, parts)) < 0))
    return;
}

/* After the log is loaded: an allocated entry in the log is DIRTY. */
static void
load_dirty (void *arg, uint64_t objno, uint32_t parts)
{
  struct load_ctx *c = arg;

  (void) parts;
  if (objno < c->m->n && map_logged (c->m, objno)
      && map_get (c->m, objno) != IMAGE_OBJ_ABSENT)
    map_put (c->m, objno, F_BYTE, IMAGE_OBJ_DIRTY);
}

/* Reads the map (N entries) and, for a writable head, the change log,
 * into a new in-memory map that replaces the current one. */
static int
load_map (struct image *img, uint64_t n)
{
  struct objmap *m = map_new (n);
  struct changes log = { NULL, 0, 0 };
  struct load_ctx lc = { m, 0 };
  uint64_t i;
  int r;

  if (m == NULL)
    return -ENOMEM;
  r = map_read_stored (img->st, img->map_oid, img->read_snap, m, 0, n);
  if (r < 0)
    goto fail;
  if (img->read_snap == STORE_SNAP_HEAD && !(img->flags & IMAGE_OPEN_RDONLY)) {
    r = changes_read (img->st, img->log_oid, STORE_SNAP_HEAD, &log);
    if (r < 0)
      goto fail;
    changes_each (log.v, log.n, load_record, &lc);
    if ((r = lc.err) < 0)
      goto fail;
    /* A detail record cut in two by a crash: its object's whole record
     * comes before it and stands; the half goes at the next append. */
    for (i = 0; i < log.n; i++) {
      if (!(log.v[i] & CHANGES_FROM) && (log.v[i] & CHANGES_DETAIL)) {
        if (i + 1 == log.n) {
          log.n--;
          __atomic_store_n (&img->log_tail_unknown, true,
                            __ATOMIC_RELEASE);
        }
        i++;
      }
    }
    changes_each (log.v, log.n, load_dirty, &lc);
    changes_free (&img->log);
    img->log = log;
  }
  m->retired = img->map;
  __atomic_store_n (&img->map, m, __ATOMIC_RELEASE);
  return 0;
fail:
  changes_free (&log);
  map_free (m);
  return r;
}

/* Opens image NAME; at snapshot SNAP (read-only) when SNAP is not NULL. */
static int
open_common (struct store *st, const char *name, const char *snap,
             unsigned flags, struct image **out)
{
  struct image_snap sn;
  struct image *img;
  char id[32];
  int r;

  r = lookup_id (st, name, id, sizeof id);
  if (r < 0)
    return r;
  img = calloc (1, sizeof *img);
  if (img == NULL)
    return -ENOMEM;
  pthread_mutex_init (&img->map_lock, NULL);
  pthread_cond_init (&img->map_cond, NULL);
  img->flags = flags;
  img->read_snap = STORE_SNAP_HEAD;
  r = store_clone (st, &img->st);
  if (r < 0) {
    free (img);
    return r;
  }
  image_header_oid (id, img->hdr_oid, sizeof img->hdr_oid);
  map_oid (id, img->map_oid, sizeof img->map_oid);
  changes_oid (id, img->log_oid, sizeof img->log_oid);
  r = read_header (img->st, id, &img->info);
  if (r == -ENOENT) {
    vbk_set_error ("image '%s' does not exist (only its name is left: "
                   "'vbk image rm' removes it)", name);
  }
  else if (r == 0 && img->info.state == IMAGE_STATE_REMOVING) {
    vbk_set_error ("image '%s' is being removed (run 'vbk image rm' again "
                   "if that stopped)", name);
    r = -ENOENT;
  }
  else if (r == 0 && img->info.state == IMAGE_STATE_IMPORTING
           && !(flags & IMAGE_OPEN_INCOMPLETE)) {
    vbk_set_error ("image '%s' is incomplete (import did not finish; "
                   "importer %s): import it again or remove it", name,
                   img->info.state_detail);
    r = -EBUSY;
  }
  if (r == 0 && snap) {
    r = find_snap (img->st, img->hdr_oid, name, snap, &sn);
    if (r == 0) {
      img->read_snap = sn.id;
      img->info.size = sn.size;
      snprintf (img->info.name, sizeof img->info.name, "%s@%s", name, snap);
    }
  }
  else if (r == 0 && !(flags & IMAGE_OPEN_RDONLY))
    r = load_snap_context (img->st, img->hdr_oid);
  if (r == 0) {
    img->order = __builtin_ctz (img->info.object_size);
    r = load_map (img, count_objects (img->info.size,
                                      img->info.object_size));
  }
  if (r < 0) {
    image_close (img);
    return r;
  }
  *out = img;
  return 0;
}

int
image_open (struct store *st, const char *name, unsigned flags,
            struct image **out)
{
  return open_common (st, name, NULL, flags, out);
}

int
image_open_snap (struct store *st, const char *image, const char *snap,
                 struct image **out)
{
  return open_common (st, image, snap, IMAGE_OPEN_RDONLY, out);
}

void
image_close (struct image *img)
{
  struct objmap *m, *next;

  if (img == NULL)
    return;
  if (!(img->flags & IMAGE_OPEN_RDONLY) && img->map)
    store_flush (img->st);
  store_close (img->st);
  for (m = img->map; m; m = next) {
    next = m->retired;
    map_free (m);
  }
  changes_free (&img->log);
  changes_free (&img->pend);
  pthread_mutex_destroy (&img->map_lock);
  pthread_cond_destroy (&img->map_cond);
  free (img);
}

int
image_refresh (struct image *img)
{
  uint64_t size = 0;
  int r;

  if (img->read_snap != STORE_SNAP_HEAD)
    return 0;                   /* a snapshot never changes */
  r = read_size (img->st, img->hdr_oid, &size, NULL, 0);
  if (r == 0 && !(img->flags & IMAGE_OPEN_RDONLY))
    r = load_snap_context (img->st, img->hdr_oid);
  if (r < 0)
    return r;
  pthread_mutex_lock (&img->map_lock);
  while (img->map_writing)            /* the log may be growing */
    pthread_cond_wait (&img->map_cond, &img->map_lock);
  r = load_map (img, count_objects (size, img->info.object_size));
  if (r == 0)
    __atomic_store_n (&img->info.size, size, __ATOMIC_RELEASE);
  pthread_mutex_unlock (&img->map_lock);
  return r;
}

void
image_get_info (struct image *img, struct image_info *info)
{
  struct objmap *m = __atomic_load_n (&img->map, __ATOMIC_ACQUIRE);

  *info = img->info;
  info->size = image_size (img);
  info->objects = map_count (m);
}

uint64_t
image_size (struct image *img)
{
  return __atomic_load_n (&img->info.size, __ATOMIC_ACQUIRE);
}

enum image_obj
image_object_state (struct image *img, uint64_t objno)
{
  struct objmap *m = __atomic_load_n (&img->map, __ATOMIC_ACQUIRE);

  if (objno >= m->n)
    return IMAGE_OBJ_ABSENT;
  return map_get (m, objno);
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
 * log's end and the map bytes that become allocated, both synchronous
 * and in parallel.  Called with map_lock held and map_writing claimed;
 * drops the lock during the I/O. */
static int
map_commit (struct image *img, struct objmap *m)
{
  struct changes p = img->pend;
  struct wait_all w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                        1, 0 };
  uint64_t *logbuf = NULL, *mi = NULL, i, logoff;
  struct map_run *runs = NULL;
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
  if ((r = changes_reserve (&img->log, p.n)) < 0)   /* room to remember */
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
        || map_get (m, i) != IMAGE_OBJ_ABSENT ? IMAGE_OBJ_CLEAN
        : IMAGE_OBJ_ABSENT;
  }

  logoff = img->log.n * sizeof (uint64_t);
  pthread_mutex_unlock (&img->map_lock);
  if (nlog && (r = log_fix_tail (img, logoff)) < 0)
    w.err = r;
  if (nlog && w.err == 0) {
    w.left++;
    r = store_aio_write (img->st, img->log_oid, logbuf, nlog * 8, logoff,
                         STORE_WRITE_SYNC, wait_all_done, &w);
    if (r < 0)
      w.left--, w.err = r;
  }
  for (k = 0; k < nruns && w.err == 0; k++) {
    w.left++;
    r = store_aio_write (img->st, img->map_oid, runs[k].buf,
                         runs[k].hi - runs[k].lo + 1, runs[k].lo,
                         STORE_WRITE_SYNC, wait_all_done, &w);
    if (r < 0)
      w.left--, w.err = w.err ? w.err : r;
  }
  wait_all_done (&w, 0);
  pthread_mutex_lock (&w.lock);
  while (w.left > 0)
    pthread_cond_wait (&w.cond, &w.lock);
  pthread_mutex_unlock (&w.lock);
  r = w.err;
  if (r < 0 && nlog)
    log_append_failed (img, logoff);
  pthread_mutex_lock (&img->map_lock);

  for (k = 0; r == 0 && k < nlog; k++)
    img->log.v[img->log.n++] = le64toh (logbuf[k]);
  for (k = 0; r == 0 && k < p.n; k++) {
    i = p.v[k];
    if (i >= m->n || taken[k] == 0)
      continue;
    /* The entry's page exists: it has a pending value. */
    if (taken[k] & NEED_LOG)
      map_put (m, i, F_LOGGED, 1);
    if ((taken[k] & NEED_MAP) || map_get (m, i) != IMAGE_OBJ_ABSENT)
      map_put (m, i, F_BYTE, map_logged (m, i) ? IMAGE_OBJ_DIRTY
               : IMAGE_OBJ_CLEAN);
  }
out:
  /* Done with what it took (written or failed); what came meanwhile
   * stays pending, listed again for the next commit. */
  for (k = 0; k < p.n; k++) {
    i = p.v[k];
    if (i >= m->n)
      continue;
    map_put (m, i, F_PENDING,
             taken ? map_pending (m, i) & (uint8_t) ~taken[k] : 0);
    if (map_pending (m, i) && changes_push (&img->pend, i) < 0)
      map_put (m, i, F_PENDING, 0);     /* its writer retries */
  }
  changes_free (&p);
  for (k = 0; runs && k < nruns; k++)
    free (runs[k].buf);
  free (runs);
  free (mi);
  free (logbuf);
  free (taken);
  return r;
}

/* Before objects [FIRST, LAST] change: puts them in the change log and,
 * when ALLOC (they will hold data), marks them allocated in the map,
 * durably.  Group commit: writers that need entries while a commit is in
 * flight mark them pending and wait; the next writer commits all pending
 * entries at once.  So the first writes to many objects after a
 * snapshot cost a few store writes, not one each in a row. */
static int
map_mark_dirty (struct image *img, uint64_t first, uint64_t last, bool alloc)
{
  struct objmap *m;
  uint64_t i;
  int r = 0;

  m = __atomic_load_n (&img->map, __ATOMIC_ACQUIRE);
  for (i = first; i <= last && i < m->n; i++)
    if (alloc ? map_get (m, i) != IMAGE_OBJ_DIRTY : !map_logged (m, i))
      break;
  if ((i > last || i >= m->n)
      && !__atomic_load_n (&img->log_tail_unknown, __ATOMIC_ACQUIRE))
    return 0;                   /* the common case: nothing to do */

  pthread_mutex_lock (&img->map_lock);
  for (;;) {
    bool done = true;
    m = img->map;
    if (__atomic_load_n (&img->log_tail_unknown, __ATOMIC_ACQUIRE)) {
      /* A failed append was not cut yet (log_append_failed). */
      uint64_t off;
      if (img->map_writing) {
        pthread_cond_wait (&img->map_cond, &img->map_lock);
        continue;
      }
      img->map_writing = true;
      off = img->log.n * sizeof (uint64_t);
      pthread_mutex_unlock (&img->map_lock);
      r = log_fix_tail (img, off);
      pthread_mutex_lock (&img->map_lock);
      img->map_writing = false;
      pthread_cond_broadcast (&img->map_cond);
      if (r < 0)
        break;
      continue;
    }
    for (i = first; i <= last && i < m->n; i++) {
      unsigned need = (map_logged (m, i) ? 0 : NEED_LOG)
        | (alloc && map_get (m, i) == IMAGE_OBJ_ABSENT ? NEED_MAP : 0);
      uint8_t pend = map_pending (m, i);
      if (need == 0)
        continue;
      done = false;
      if ((r = map_put (m, i, F_PENDING, pend | need)) < 0)
        break;
      if (pend == 0 && (r = changes_push (&img->pend, i)) < 0) {
        map_put (m, i, F_PENDING, 0);
        break;
      }
    }
    if (done || r < 0)
      break;
    if (img->map_writing) {
      pthread_cond_wait (&img->map_cond, &img->map_lock);
      continue;
    }
    /* Our turn: commit every pending entry, ours and the others'. */
    img->map_writing = true;
    r = map_commit (img, m);
    img->map_writing = false;
    pthread_cond_broadcast (&img->map_cond);
    if (r < 0)
      break;
  }
  pthread_mutex_unlock (&img->map_lock);
  return r;
}

/* Notes the parts of the objects that [OFF, OFF+LEN) touches: for the
 * next snapshot's detailed log (after map_mark_dirty, so never more than
 * the log already says). */
static void
mark_parts (struct image *img, uint64_t off, uint64_t len)
{
  struct objmap *m = __atomic_load_n (&img->map, __ATOMIC_ACQUIRE);
  uint64_t osize = img->info.object_size, pos, end = off + len;

  for (pos = off; pos < end;) {
    uint64_t o = pos >> img->order, ooff = pos & (osize - 1);
    uint64_t n = MIN (osize - ooff, end - pos);
    /* Out of memory: the parts stay unknown, and the object counts
     * whole (its log record is). */
    if (o < m->n)
      map_put (m, o, F_PARTS_OR, parts_of (img->order, ooff, n));
    pos += n;
  }
}

/* After a whole-object discard: ABSENT, unless a write is in flight. */
static void
map_mark_absent (struct image *img, uint64_t objno)
{
  struct objmap *m;
  uint8_t v = IMAGE_OBJ_ABSENT;

  pthread_mutex_lock (&img->map_lock);
  m = img->map;
  if (objno < m->n
      && __atomic_load_n (&img->wr_inflight[objno % INFLIGHT_BUCKETS],
                          __ATOMIC_SEQ_CST) == 0
      && map_get (m, objno) != IMAGE_OBJ_ABSENT) {
    map_put (m, objno, F_BYTE, IMAGE_OBJ_ABSENT);
    /* Not synchronous: losing it over-reports, which is allowed. */
    store_write (img->st, img->map_oid, &v, 1, objno, 0);
  }
  pthread_mutex_unlock (&img->map_lock);
}

/* ---- Asynchronous I/O ------------------------------------------------- */

struct aio_part {
  struct aio_req *req;
  void *buf;                     /* read: where this part's bytes go */
  size_t len;
  uint64_t objno;
};

struct aio_req {
  struct image *img;
  image_aio_cb cb;
  void *arg;
  size_t len;
  bool write;
  int pending;                   /* parts + 1 while submitting */
  int err;                       /* first error */
  struct aio_part parts[];
};

static void
req_put (struct aio_req *req)
{
  if (__atomic_sub_fetch (&req->pending, 1, __ATOMIC_ACQ_REL) != 0)
    return;
  req->cb (req->arg, req->err ? req->err : (ssize_t) (req->write
                                                      ? 0 : req->len));
  free (req);
}

static void
part_done (void *arg, ssize_t ret)
{
  struct aio_part *p = arg;
  struct aio_req *req = p->req;

  if (!req->write && ret == -ENOENT) {
    memset (p->buf, 0, p->len); /* the map over-reported: a hole */
    ret = 0;
  }
  if (req->write)
    __atomic_sub_fetch (&req->img->wr_inflight[p->objno % INFLIGHT_BUCKETS],
                        1, __ATOMIC_SEQ_CST);
  if (ret < 0) {
    int zero = 0;
    __atomic_compare_exchange_n (&req->err, &zero, (int) ret, false,
                                 __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
  }
  req_put (req);
}

static int
check_range (struct image *img, const char *op, size_t len, uint64_t off)
{
  uint64_t size = image_size (img);

  if (off > size || len > size - off) {
    vbk_set_error ("image '%s': %s: range %" PRIu64 "+%zu is past the end "
                   "(%" PRIu64 ")", img->info.name, op, off, len, size);
    return -EINVAL;
  }
  return 0;
}

static int
check_writable (struct image *img, const char *op)
{
  if (img->flags & IMAGE_OPEN_RDONLY) {
    vbk_set_error ("image '%s': %s: opened read-only", img->info.name, op);
    return -EROFS;
  }
  return 0;
}

static struct aio_req *
req_new (struct image *img, size_t len, uint64_t off, bool write,
         image_aio_cb cb, void *arg)
{
  uint64_t first = off >> img->order;
  uint64_t last = len ? (off + len - 1) >> img->order : first;
  struct aio_req *req;

  req = calloc (1, sizeof *req + (last - first + 1) * sizeof req->parts[0]);
  if (req == NULL)
    return NULL;
  req->img = img;
  req->cb = cb;
  req->arg = arg;
  req->len = len;
  req->write = write;
  req->pending = 1;
  return req;
}

int
image_aio_read (struct image *img, void *buf, size_t len, uint64_t off,
                image_aio_cb cb, void *arg)
{
  uint64_t osize = img->info.object_size, pos = off;
  struct aio_req *req;
  char oid[96];
  size_t i = 0;
  int r;

  r = check_range (img, "read", len, off);
  if (r < 0)
    return r;
  req = req_new (img, len, off, false, cb, arg);
  if (req == NULL)
    return -ENOMEM;
  while (pos < off + len) {
    uint64_t objno = pos >> img->order, ooff = pos & (osize - 1);
    size_t n = MIN (osize - ooff, off + len - pos);
    struct aio_part *p = &req->parts[i++];

    p->req = req;
    p->buf = (char *) buf + (pos - off);
    p->len = n;
    p->objno = objno;
    if (image_object_state (img, objno) == IMAGE_OBJ_ABSENT
        && !__atomic_load_n (&img->untrusted, __ATOMIC_ACQUIRE))
      memset (p->buf, 0, n);
    else {
      image_data_oid (img->info.id, objno, oid, sizeof oid);
      __atomic_add_fetch (&req->pending, 1, __ATOMIC_ACQ_REL);
      r = store_aio_read (img->st, oid, p->buf, n, ooff, img->read_snap,
                          part_done, p);
      if (r < 0) {
        __atomic_sub_fetch (&req->pending, 1, __ATOMIC_ACQ_REL);
        req->err = r;
        break;
      }
    }
    pos += n;
  }
  req_put (req);
  return 0;
}

int
image_aio_write (struct image *img, const void *buf, size_t len,
                 uint64_t off, unsigned flags, image_aio_cb cb, void *arg)
{
  uint64_t osize = img->info.object_size, pos = off;
  unsigned sflags = (flags & IMAGE_FUA) ? STORE_WRITE_SYNC : 0;
  struct aio_req *req;
  char oid[96];
  size_t i = 0;
  int r;

  r = check_writable (img, "write");
  if (r == 0)
    r = check_range (img, "write", len, off);
  if (r < 0)
    return r;
  req = req_new (img, len, off, true, cb, arg);
  if (req == NULL)
    return -ENOMEM;
  /* Count the writes in flight before looking at the map (see
   * map_mark_absent). */
  for (pos = off; pos < off + len; pos += osize - (pos & (osize - 1)))
    __atomic_add_fetch (&img->wr_inflight[(pos >> img->order)
                                          % INFLIGHT_BUCKETS],
                        1, __ATOMIC_SEQ_CST);
  if (len) {
    r = map_mark_dirty (img, off >> img->order, (off + len - 1) >> img->order,
                        true);
    if (r == 0)
      mark_parts (img, off, len);
    if (r < 0) {
      for (pos = off; pos < off + len; pos += osize - (pos & (osize - 1)))
        __atomic_sub_fetch (&img->wr_inflight[(pos >> img->order)
                                              % INFLIGHT_BUCKETS],
                            1, __ATOMIC_SEQ_CST);
      free (req);
      return r;
    }
  }
  pos = off;
  while (pos < off + len) {
    uint64_t objno = pos >> img->order, ooff = pos & (osize - 1);
    size_t n = MIN (osize - ooff, off + len - pos);
    struct aio_part *p = &req->parts[i++];

    p->req = req;
    p->len = n;
    p->objno = objno;
    image_data_oid (img->info.id, objno, oid, sizeof oid);
    __atomic_add_fetch (&req->pending, 1, __ATOMIC_ACQ_REL);
    r = store_aio_write (img->st, oid, (const char *) buf + (pos - off), n,
                         ooff, sflags, part_done, p);
    if (r < 0) {
      __atomic_sub_fetch (&req->pending, 1, __ATOMIC_ACQ_REL);
      req->err = r;
      /* Release the in-flight counts of the parts never submitted. */
      for (; pos < off + len; pos += osize - (pos & (osize - 1)))
        __atomic_sub_fetch (&img->wr_inflight[(pos >> img->order)
                                              % INFLIGHT_BUCKETS],
                            1, __ATOMIC_SEQ_CST);
      break;
    }
    pos += n;
  }
  req_put (req);
  return 0;
}

/* ---- Synchronous I/O ------------------------------------------------- */

/* The synchronous calls run on the caller's thread, straight to the
 * store: no hand-off to another thread, which on the local store costs
 * more than the I/O itself. */
ssize_t
image_read (struct image *img, void *buf, size_t len, uint64_t off)
{
  uint64_t osize = img->info.object_size, pos;
  bool untrusted = __atomic_load_n (&img->untrusted, __ATOMIC_ACQUIRE);
  char oid[96];
  int r;

  r = check_range (img, "read", len, off);
  if (r < 0)
    return r;
  for (pos = off; pos < off + len;) {
    uint64_t objno = pos >> img->order, ooff = pos & (osize - 1);
    size_t n = MIN (osize - ooff, off + len - pos);
    char *p = (char *) buf + (pos - off);
    ssize_t got;

    if (!untrusted && image_object_state (img, objno) == IMAGE_OBJ_ABSENT)
      memset (p, 0, n);
    else {
      image_data_oid (img->info.id, objno, oid, sizeof oid);
      got = store_read (img->st, oid, p, n, ooff, img->read_snap);
      if (got == -ENOENT)
        memset (p, 0, n);
      else if (got < 0)
        return got;
    }
    pos += n;
  }
  return (ssize_t) len;
}

int
image_write (struct image *img, const void *buf, size_t len, uint64_t off,
             unsigned flags)
{
  uint64_t osize = img->info.object_size, pos;
  unsigned sflags = (flags & IMAGE_FUA) ? STORE_WRITE_SYNC : 0;
  char oid[96];
  int r;

  r = check_writable (img, "write");
  if (r == 0)
    r = check_range (img, "write", len, off);
  if (r < 0 || len == 0)
    return r;
  for (pos = off; pos < off + len; pos += osize - (pos & (osize - 1)))
    __atomic_add_fetch (&img->wr_inflight[(pos >> img->order)
                                          % INFLIGHT_BUCKETS],
                        1, __ATOMIC_SEQ_CST);
  r = map_mark_dirty (img, off >> img->order, (off + len - 1) >> img->order,
                      true);
  if (r == 0)
    mark_parts (img, off, len);
  for (pos = off; pos < off + len;) {
    uint64_t objno = pos >> img->order, ooff = pos & (osize - 1);
    size_t n = MIN (osize - ooff, off + len - pos);

    if (r == 0) {
      image_data_oid (img->info.id, objno, oid, sizeof oid);
      r = store_write (img->st, oid, (const char *) buf + (pos - off), n,
                       ooff, sflags);
    }
    __atomic_sub_fetch (&img->wr_inflight[objno % INFLIGHT_BUCKETS], 1,
                        __ATOMIC_SEQ_CST);
    pos += n;
  }
  return r;
}

int
image_flush (struct image *img)
{
  if (img->flags & IMAGE_OPEN_RDONLY)
    return 0;
  return store_flush (img->st);
}

/* Zeroes [OFF, OFF+LEN) inside one object: deallocates when HOLES. */
static int
zero_in_object (struct image *img, uint64_t objno, uint64_t ooff,
                uint64_t len, bool holes, unsigned flags)
{
  char oid[96];
  int r;

  if (image_object_state (img, objno) == IMAGE_OBJ_ABSENT && holes)
    return 0;
  image_data_oid (img->info.id, objno, oid, sizeof oid);
  if (holes && ooff == 0 && len == img->info.object_size) {
    r = map_mark_dirty (img, objno, objno, false);
    if (r == 0) {
      mark_parts (img, objno << img->order, len);
      r = store_remove (img->st, oid);
    }
    if (r < 0 && r != -ENOENT)
      return r;
    map_mark_absent (img, objno);
    return 0;
  }
  r = map_mark_dirty (img, objno, objno, true);
  if (r < 0)
    return r;
  mark_parts (img, (objno << img->order) + ooff,
              MIN (len, img->info.object_size - ooff));
  if (holes) {
    r = store_zero (img->st, oid, ooff, len);
    if (r == -ENOENT)
      r = 0;
  }
  else {
    /* NO_HOLE: the range must stay allocated, so write real zeros. */
    static const char zeros[1 << 16];
    uint64_t done = 0;
    r = 0;
    while (r == 0 && done < len) {
      size_t n = MIN (sizeof zeros, len - done);
      r = store_write (img->st, oid, zeros, n, ooff + done,
                       (flags & IMAGE_FUA) ? STORE_WRITE_SYNC : 0);
      done += n;
    }
  }
  if (r == 0 && (flags & IMAGE_FUA) && holes)
    r = store_flush (img->st);
  return r;
}

static int
zero_range (struct image *img, const char *op, uint64_t off, uint64_t len,
            bool holes, unsigned flags)
{
  uint64_t osize = img->info.object_size, pos;
  int r;

  r = check_writable (img, op);
  if (r == 0)
    r = check_range (img, op, len, off);
  if (r < 0)
    return r;
  for (pos = off; pos < off + len;) {
    uint64_t objno = pos >> img->order, ooff = pos & (osize - 1);
    uint64_t n = MIN (osize - ooff, off + len - pos);
    /* The last object of an image whose size is not a multiple of the
     * object size: a range to the end covers the whole object. */
    if (pos + n == image_size (img) && ooff == 0)
      n = osize;
    r = zero_in_object (img, objno, ooff, n, holes, flags);
    if (r < 0)
      return r;
    pos += MIN (n, off + len - pos);
  }
  return 0;
}

int
image_discard (struct image *img, uint64_t off, uint64_t len, unsigned flags)
{
  return zero_range (img, "discard", off, len, true, flags);
}

int
image_write_zeroes (struct image *img, uint64_t off, uint64_t len,
                    unsigned flags)
{
  return zero_range (img, "write_zeroes", off, len,
                     !(flags & IMAGE_NO_HOLE), flags);
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
    tmp = map_new (m->n);
    if (tmp == NULL)
      return -ENOMEM;
    first = off >> img->order;
    last = ((len > size - off ? size : off + len) + img->info.object_size - 1)
      >> img->order;
    r = map_read_stored (img->st, img->map_oid, img->read_snap, tmp, first,
                         MIN (last, m->n));
    if (r < 0) {
      map_free (tmp);
      return r;
    }
    m = tmp;
  }
  r = extents_in (img, m, off, len, cb, arg);
  map_free (tmp);
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
    int alloc = objno < m->n && map_get (m, objno) != IMAGE_OBJ_ABSENT;
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
      if ((map_get (m, o) != IMAGE_OBJ_ABSENT) != alloc)
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

/* ---- Snapshots -------------------------------------------------------- */

int
image_snap_list (struct store *st, const char *image,
                 struct image_snap **list, size_t *n)
{
  char id[32], hdr[64];
  int r;

  r = lookup_id (st, image, id, sizeof id);
  if (r < 0)
    return r;
  image_header_oid (id, hdr, sizeof hdr);
  return snaps_of_header (st, hdr, list, n);
}

int
image_snap_alloc (struct image *img, uint64_t *id)
{
  int r = check_writable (img, "snapshot");

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

static int snap_record (struct image *img, const char *snap, uint64_t id);
static int write_details (struct image *img);

int
image_save_parts (struct image *img)
{
  int r;

  if (img->read_snap != STORE_SNAP_HEAD || (img->flags & IMAGE_OPEN_RDONLY))
    return 0;
  log_writer_enter (img);
  r = write_details (img);
  log_writer_exit (img);
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
    map_put (m, objno, F_LOGGED, 0);
    map_put (m, objno, F_PARTS, 0);
    if (map_get (m, objno) == IMAGE_OBJ_DIRTY)
      map_put (m, objno, F_BYTE, IMAGE_OBJ_CLEAN);
  }
}

/* Before a snapshot (writes held): appends to the log which parts of each
 * logged object changed, as far as this process saw them, so that the
 * snapshot's log is finer than whole objects.  The objects become
 * unlogged: a later change logs them whole again.  Objects changed
 * before a crash or a hand-off stay whole (we did not see their parts);
 * so do objects changed everywhere. */
static int
write_details (struct image *img)
{
  struct change_set s = { .from = UINT64_MAX };
  uint64_t *buf = NULL, off;
  struct objmap *m;
  size_t i, k = 0;
  int r;

  pthread_mutex_lock (&img->map_lock);
  m = img->map;
  changes_each (img->log.v, img->log.n, set_add, &s);
  off = img->log.n * sizeof *buf;
  pthread_mutex_unlock (&img->map_lock);
  r = s.err;
  if (r == 0 && s.n) {
    set_sort (&s, true);
    buf = malloc (2 * s.n * sizeof *buf);
    if (buf == NULL)
      r = -ENOMEM;
  }
  for (i = 0; r == 0 && i < s.n; i++) {
    uint64_t o = s.v[i].objno;
    uint32_t p;
    if (o >= m->n || !map_logged (m, o))
      continue;
    p = map_parts (m, o);
    if (p == 0 || p == ALL_PARTS)
      continue;
    buf[k++] = htole64 (CHANGES_DETAIL | o);
    buf[k++] = htole64 (p);
  }
  if (r == 0 && k) {                    /* room to remember them */
    pthread_mutex_lock (&img->map_lock);
    r = changes_reserve (&img->log, k);
    pthread_mutex_unlock (&img->map_lock);
  }
  if (r == 0 && k && (r = log_fix_tail (img, off)) == 0) {
    r = store_write (img->st, img->log_oid, buf, k * sizeof *buf, off,
                     STORE_WRITE_SYNC);
    if (r < 0)
      log_append_failed (img, off);
  }
  if (r == 0 && k) {
    pthread_mutex_lock (&img->map_lock);
    for (i = 0; i < k; i++)
      img->log.v[img->log.n++] = le64toh (buf[i]);
    for (i = 0; i < k; i += 2) {
      uint64_t o = le64toh (buf[i]) & ~CHANGES_DETAIL;
      map_put (m, o, F_LOGGED, 0);
      if (map_get (m, o) == IMAGE_OBJ_DIRTY)
        map_put (m, o, F_BYTE, IMAGE_OBJ_CLEAN);
    }
    pthread_mutex_unlock (&img->map_lock);
  }
  free (buf);
  free (s.v);
  return r;
}

int
image_snap_create_id (struct image *img, const char *snap, uint64_t id)
{
  struct image_snap old;
  int r;

  r = check_writable (img, "snapshot");
  if (r == 0)
    r = image_name_check (snap);
  if (r == 0) {
    r = find_snap (img->st, img->hdr_oid, img->info.name, snap, &old);
    if (r == 0) {
      vbk_set_error ("image '%s' already has a snapshot '%s'",
                     img->info.name, snap);
      r = -EEXIST;
    }
    else if (r == -ENOENT)
      r = 0;
  }
  if (r < 0) {
    char msg[1024];
    snprintf (msg, sizeof msg, "%s", vbk_error ());
    store_snap_remove (img->st, id);
    vbk_set_error ("%s", msg);
    return r;
  }
  /* The store part runs as the only change-log writer. */
  log_writer_enter (img);
  r = snap_record (img, snap, id);
  if (r == 0) {
    /* The log is empty now: a new interval starts. */
    pthread_mutex_lock (&img->map_lock);
    changes_each (img->log.v, img->log.n, forget_record, img->map);
    img->log.n = 0;
    pthread_mutex_unlock (&img->map_lock);
  }
  log_writer_exit (img);
  return r;
}

/* Records snapshot SNAP (id ID) of IMG and starts a new interval: moves
 * a pending shrink into the log, records the snapshot, moves the merged
 * changes of the live interval to the snapshot's, empties the log.
 * Returns 0 once the log is empty; otherwise the snapshot may exist with
 * the log untouched, which over-reports (safe). */
static int
snap_record (struct image *img, const char *snap, uint64_t id)
{
  char key[IMAGE_NAME_MAX + 8], val[128], seqbuf[32], from[96], to[96];
  uint64_t min = UINT64_MAX, sz, e;
  bool moved = false;
  int r, n;

  r = write_details (img);
  if (r == 0)
    r = shrunk_to (img->st, img->hdr_oid, &min);
  if (r == 0 && min != UINT64_MAX) {
    uint64_t off = img->log.n * sizeof e;
    pthread_mutex_lock (&img->map_lock);
    r = changes_reserve (&img->log, 1);
    pthread_mutex_unlock (&img->map_lock);
    e = htole64 (CHANGES_FROM | (min >> img->order));
    if (r == 0 && (r = log_fix_tail (img, off)) == 0) {
      r = store_write (img->st, img->log_oid, &e, sizeof e, off,
                       STORE_WRITE_SYNC);
      if (r < 0)
        log_append_failed (img, off);
      else
        img->log.v[img->log.n++] = CHANGES_FROM | (min >> img->order);
    }
  }
  /* Merged changes of the live interval go to this snapshot's interval:
   * copied now, removed from the live one once the log is emptied, so
   * that a crash anywhere leaves them in both (over-reporting). */
  merged_oid (img->info.id, 0, from, sizeof from);
  merged_oid (img->info.id, id, to, sizeof to);
  if (r == 0) {
    r = store_stat (img->st, from, STORE_SNAP_HEAD, &sz);
    if (r == 0) {
      uint8_t *buf = malloc (sz ? sz : 1);
      if (buf == NULL)
        r = -ENOMEM;
      else if ((r = (int) store_read (img->st, from, buf, sz, 0,
                                      STORE_SNAP_HEAD)) >= 0)
        r = store_write_full (img->st, to, buf, sz, STORE_WRITE_SYNC);
      free (buf);
      moved = r == 0;
    }
    else if (r == -ENOENT)
      r = 0;
  }
  if (r < 0) {
    if (moved)
      store_remove (img->st, to);
    store_snap_remove (img->st, id);
    return r;
  }

  snprintf (seqbuf, sizeof seqbuf, "%" PRIu64, id);
  n = snprintf (val, sizeof val, "id=%" PRIu64 " size=%" PRIu64
                " time=%" PRIu64, id, image_size (img), now_wall_ms ());
  snprintf (key, sizeof key, "snap.%s", snap);
  /* Record it first, then write under the new context: a crash between
   * leaves a snapshot whose log is the live one of that moment. */
  if ((r = store_xattr_set (img->st, img->hdr_oid, "snap_seq", seqbuf,
                            strlen (seqbuf))) < 0
      || (r = store_omap_set (img->st, img->hdr_oid, key, val, n)) < 0
      || (r = load_snap_context (img->st, img->hdr_oid)) < 0) {
    store_omap_rm (img->st, img->hdr_oid, key);
    if (moved)
      store_remove (img->st, to);
    store_snap_remove (img->st, id);
    return r;
  }

  /* Empty the log: this first write under the new context keeps the log
   * as it was, which is the snapshot's (its interval's changes). */
  if (img->log.n || img->log_tail_unknown) {
    r = store_write_full (img->st, img->log_oid, "", 0, STORE_WRITE_SYNC);
    if (r < 0)
      return r;
    __atomic_store_n (&img->log_tail_unknown, false, __ATOMIC_RELEASE);
  }
  if (moved && (r = store_remove (img->st, from)) < 0 && r != -ENOENT)
    return r;
  r = 0;
  if (min != UINT64_MAX) {
    char old[32];
    snprintf (old, sizeof old, "%" PRIu64, min);
    /* Compare-and-set: a shrink meanwhile stays for the next interval. */
    r = store_xattr_cas (img->st, img->hdr_oid, "min_size", old,
                         strlen (old), "-", 1);
    if (r == -ECANCELED)
      r = 0;
  }
  return r;
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

  r = snaps_of_header (st, hdr, &v, &ns);
  if (r < 0)
    return r;
  for (k = 0; k < ns; k++)
    if (v[k].id > sn->id && (next == 0 || v[k].id < next))
      next = v[k].id;
  free (v);
  changes_oid (id, oid, sizeof oid);
  r = set_read (st, oid, sn->id, &c);
  merged_oid (id, sn->id, oid, sizeof oid);
  if (r == 0)
    r = set_read (st, oid, STORE_SNAP_HEAD, &c);
  merged_oid (id, next, oid, sizeof oid);
  if (r == 0)
    r = set_read (st, oid, STORE_SNAP_HEAD, &c);
  if (r == 0) {
    set_sort (&c, false);
    r = set_write (st, oid, &c);
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

  r = lookup_id (st, image, id, sizeof id);
  if (r < 0)
    return r;
  image_header_oid (id, hdr, sizeof hdr);
  r = snapops_lock (st, hdr, cookie, sizeof cookie);
  if (r < 0)
    return r;
  r = snap_remove_locked (st, image, snap, id, hdr);
  if (r < 0) {
    char msg[1024];             /* the unlock must not replace the error */
    snprintf (msg, sizeof msg, "%s", vbk_error ());
    store_unlock (st, hdr, SNAPOPS_LOCK, cookie);
    vbk_set_error ("%s", msg);
  }
  else
    store_unlock (st, hdr, SNAPOPS_LOCK, cookie);
  return r;
}

static int
snap_remove_locked (struct store *st, const char *image, const char *snap,
                    const char *id, const char *hdr)
{
  char key[IMAGE_NAME_MAX + 8];
  struct image_snap sn;
  int r;

  r = find_snap (st, hdr, image, snap, &sn);
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
  merged_oid (id, sn.id, key, sizeof key);
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
    set_add (o->s, pos >> o->order, parts_of (o->order, ooff, n));
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

  r = snaps_of_header (img->st, img->hdr_oid, &v, &ns);
  if (r < 0)
    return r;
  for (k = 0; k < ns; k++)
    if (v[k].id > newest.id)
      newest = v[k];
  free (v);
  if (newest.id != sn->id)
    r = image_diff (img->st, img->info.name, sn->name, newest.name,
                    add_objects, &oc);
  log_writer_enter (img);
  if (r == 0) {
    set_sort (&c, false);
    r = set_write (img->st, img->log_oid, &c);
  }
  merged_oid (img->info.id, 0, oid, sizeof oid);
  if (r == 0 && (r = store_remove (img->st, oid)) == -ENOENT)
    r = 0;
  if (r == 0)
    r = store_xattr_set (img->st, img->hdr_oid, "min_size", "-", 1);
  log_writer_exit (img);
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

  r = check_writable (img, "rollback");
  if (r < 0)
    return r;
  r = find_snap (img->st, img->hdr_oid, img->info.name, snap, &sn);
  if (r < 0)
    return r;
  nsnap = count_objects (sn.size, img->info.object_size);
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
    r = map_mark_dirty (img, i, i, false);
    if (r < 0)
      goto out;
    mark_parts (img, i << img->order, img->info.object_size);
  }
  if (sn.size < image_size (img)
      && (r = note_shrink (img->st, img->hdr_oid, sn.size)) < 0)
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
  r = store_write_full (img->st, img->map_oid, smap, nsnap,
                        STORE_WRITE_SYNC);
  if (r < 0)
    goto out;
  r = read_size (img->st, img->hdr_oid, &i, oldraw, sizeof oldraw);
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

/* ---- Changed-block tracking ------------------------------------------- */

int
image_diff (struct store *st, const char *image, const char *from,
            const char *to, image_extent_cb cb, void *arg)
{
  struct image_info info;
  struct image_snap *v = NULL, sfrom, sto;
  struct change_set c = { .from = UINT64_MAX };
  uint64_t n, to_size, to_id, osize, end, tail, sb, pend_off = 0, pend_end = 0;
  bool have = false;
  char id[32], hdr[64], loid[64], moid[96];
  size_t ns = 0, k;
  int r;

  r = lookup_id (st, image, id, sizeof id);
  if (r < 0)
    return r;
  r = read_header (st, id, &info);
  if (r < 0)
    return r;
  image_header_oid (id, hdr, sizeof hdr);
  r = find_snap (st, hdr, image, from, &sfrom);
  if (r < 0)
    return r;
  if (to) {
    r = find_snap (st, hdr, image, to, &sto);
    if (r < 0)
      return r;
    if (sto.id < sfrom.id) {
      vbk_set_error ("image '%s': snapshot '%s' is older than '%s'", image,
                     to, from);
      return -EINVAL;
    }
    to_size = sto.size;
    to_id = sto.id;
  }
  else {
    to_size = info.size;
    to_id = STORE_SNAP_HEAD;
  }
  osize = info.object_size;
  n = MAX (count_objects (to_size, osize), count_objects (sfrom.size, osize));
  /* Objects past the end of one side and not the other differ. */
  c.from = count_objects (MIN (to_size, sfrom.size), osize);
  r = snaps_of_header (st, hdr, &v, &ns);
  if (r < 0)
    goto out;

  /* Changed in an interval after FROM, up to TO: in the log of each
   * later snapshot (the live log when TO is the head), and merged into
   * it. */
  changes_oid (id, loid, sizeof loid);
  for (k = 0; r == 0 && k <= ns; k++) {
    uint64_t sid = k < ns ? v[k].id : STORE_SNAP_HEAD;
    if (k < ns ? sid <= sfrom.id || sid > to_id : to_id != STORE_SNAP_HEAD)
      continue;
    merged_oid (id, k < ns ? sid : 0, moid, sizeof moid);
    r = set_read (st, loid, sid, &c);
    if (r == 0)
      r = set_read (st, moid, STORE_SNAP_HEAD, &c);
  }
  if (r == 0 && to_id == STORE_SNAP_HEAD) {
    uint64_t min;
    r = shrunk_to (st, hdr, &min);
    if (r == 0 && min != UINT64_MAX)
      c.from = MIN (c.from, min / osize);
  }
  if (r < 0)
    goto out;
  set_sort (&c, false);

  /* Report the changed parts of objects, then [tail, n): everything
   * from c.from up; adjacent ones merged, clipped to the larger size. */
  end = MAX (to_size, sfrom.size);
  tail = MIN (c.from, n);
  sb = osize / SUBBLOCKS;
#define ADD(s, e)                                                       \
  do {                                                                  \
    uint64_t s_ = (s), e_ = MIN ((e), end);                             \
    if (s_ >= e_)                                                       \
      break;                                                            \
    if (have && s_ == pend_end) {                                       \
      pend_end = e_;                                                    \
      break;                                                            \
    }                                                                   \
    if (have && (r = cb (arg, pend_off, pend_end - pend_off, 1)) != 0)  \
      goto out;                                                         \
    pend_off = s_;                                                      \
    pend_end = e_;                                                      \
    have = true;                                                        \
  } while (0)
  for (k = 0; k < c.n && c.v[k].objno < tail; k++) {
    uint64_t base = c.v[k].objno * osize;
    uint32_t p = c.v[k].parts;
    unsigned j = 0, b;
    while (j < SUBBLOCKS) {
      if (!(p >> j & 1)) {
        j++;
        continue;
      }
      for (b = j; b < SUBBLOCKS && (p >> b & 1); b++)
        ;
      ADD (base + j * sb, base + b * sb);
      j = b;
    }
  }
  if (tail < n)
    ADD (tail * osize, n * osize);
#undef ADD
  if (have && (r = cb (arg, pend_off, pend_end - pend_off, 1)) != 0)
    goto out;
  r = 0;
out:
  free (v);
  free (c.v);
  return r;
}

