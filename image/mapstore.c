/* SPDX-License-Identifier: MIT
 *
 * mapstore.c - the object map as stored: reading it in proportion to
 * what is allocated, and the summary bytes a commit writes.
 *
 * DESIGN
 * - Level 0 (vbk_object_map.ID) has one byte per data object, as in
 *   every format.  From format 3 two summary levels sit beside it:
 *   vbk_object_map.ID.l1 has one byte per MAP_SUM (64) entries of level
 *   0, vbk_object_map.ID.l2 one byte per 64 bytes of level 1.  A summary
 *   byte is non-zero when the bytes it covers may be non-zero.  With the
 *   largest image (2^27 objects) level 2 is 32 KiB; with 64 TiB of 4 MiB
 *   objects, 4 KiB.
 * - Invariant (format 3): every non-zero byte of a level has a non-zero
 *   byte over it in the next level, at every moment, so a reader that
 *   follows only non-zero summary bytes never misses an allocated
 *   object.  A summary byte is written before (in the same synchronous
 *   batch as) the level-0 bytes under it, and never cleared (a discard
 *   or a shrink leaves it: over-reporting only costs a read).
 * - A reader reads level 2 whole (the range asked), then only the
 *   ranges of level 1 and level 0 under non-zero bytes: ranges closer
 *   than READ_GAP are joined, and each level's ranges are read in
 *   batches of one store call (store_read_ranges: on RADOS one read op
 *   with many extents, one round trip and one OSD op; hundreds of
 *   separate reads of one object queue up on its placement group), so
 *   opening a huge image costs a few round trips and bytes in
 *   proportion to the objects allocated, not to its size.
 * - Images of format 2 and older have level 0 only: they are read whole
 *   (up to its stored end), as before.  Writers add summary bytes to
 *   them too, which older readers ignore.
 */
#include "internal.h"

/* Ranges this close are read as one: a round trip to the store (a
 * RADOS op, a hand-off to the local store's threads) costs more than
 * reading that many bytes more. */
#define READ_GAP (32u << 10)
#define BATCH_READS 256             /* ranges per store call */
#define BATCH_BYTES (4u << 20)      /* and their bytes at most */
#define SUM_RUN_MAX 4096            /* summary bytes per write */

void
image_map_level_oid (const char *map_oid, unsigned level, char *buf,
                     size_t len)
{
  if (level == 0)
    snprintf (buf, len, "%s", map_oid);
  else
    snprintf (buf, len, "%s.l%u", map_oid, level);
}

/* ---- Reading ---------------------------------------------------------- */

/* Ranges [lo, hi) of entries of one level, ascending. */
struct map_range {
  uint64_t lo, hi;
};

struct ranges {
  struct map_range *v;
  size_t n, cap;
};

static int
ranges_add (struct ranges *rs, uint64_t lo, uint64_t hi)
{
  struct map_range *last = rs->n ? &rs->v[rs->n - 1] : NULL;

  if (lo >= hi)
    return 0;
  if (last && lo <= last->hi + READ_GAP && hi - last->lo <= MAP_WINDOW) {
    last->hi = MAX (last->hi, hi);
    return 0;
  }
  if (rs->n == rs->cap) {
    size_t cap = rs->cap ? 2 * rs->cap : 64;
    struct map_range *nv = realloc (rs->v, cap * sizeof *nv);
    if (nv == NULL)
      return -ENOMEM;
    rs->v = nv;
    rs->cap = cap;
  }
  rs->v[rs->n].lo = lo;
  rs->v[rs->n].hi = hi;
  rs->n++;
  return 0;
}

struct scan {
  struct store *st;
  uint64_t snap;
  char oid[MAP_LEVELS][80];
  uint64_t first[MAP_LEVELS], last[MAP_LEVELS];  /* per level, [first, last) */
  struct objmap *note;
  image_map_scan_cb cb;
  void *arg;
};

/* A non-zero byte at index IDX of LEVEL: an allocated object, or ranges
 * of the level below to read. */
static int
scan_found (struct scan *s, unsigned level, uint64_t idx, struct ranges *out)
{
  uint64_t lo, hi;
  int r;

  if (idx < s->first[level] || idx >= s->last[level])
    return 0;
  if (level == 0)
    return s->cb (s->arg, idx);
  if (s->note && (r = image_map_sum_note (s->note, level, idx)) < 0)
    return r;
  lo = MAX (idx << MAP_SUM_SHIFT, s->first[level - 1]);
  hi = MIN ((idx + 1) << MAP_SUM_SHIFT, s->last[level - 1]);
  return ranges_add (out, lo, hi);
}

/* Reads ranges IN of LEVEL, in batches of one store call each (on RADOS
 * one read op: the ranges of a level are all in one object); calls
 * scan_found for each non-zero byte, in ascending order. */
static int
scan_level (struct scan *s, unsigned level, const struct ranges *in,
            struct ranges *out)
{
  struct store_range rg[BATCH_READS];
  uint8_t *buf[BATCH_READS] = { NULL };
  size_t k = 0, nb, j, bytes;
  bool absent = false;
  int r = 0;

  while (r == 0 && k < in->n) {
    /* A batch: up to BATCH_READS ranges, BATCH_BYTES bytes (at least
     * one range, each at most MAP_WINDOW). */
    bytes = 0;
    for (nb = 0; k + nb < in->n && nb < BATCH_READS; nb++) {
      const struct map_range *mr = &in->v[k + nb];
      if (nb > 0 && bytes + (mr->hi - mr->lo) > BATCH_BYTES)
        break;
      bytes += mr->hi - mr->lo;
      buf[nb] = malloc (mr->hi - mr->lo);
      if (buf[nb] == NULL) {
        r = -ENOMEM;
        break;
      }
      rg[nb].off = mr->lo;
      rg[nb].len = mr->hi - mr->lo;
      rg[nb].buf = buf[nb];
    }
    if (r == 0) {
      r = store_read_ranges (s->st, s->oid[level], s->snap, rg, nb);
      if (r == -ENOENT) {
        absent = true;          /* no such level: all zeros */
        r = 0;
      }
    }
    for (j = 0; r == 0 && !absent && j < nb; j++) {
      const struct map_range *mr = &in->v[k + j];
      uint64_t len = mr->hi - mr->lo, x;
      for (x = 0; r == 0 && x < len; x++) {
        uint64_t w;
        if (x % 8 == 0 && x + 8 <= len) {
          memcpy (&w, buf[j] + x, 8);
          if (w == 0) {
            x += 7;
            continue;
          }
        }
        if (buf[j][x] != 0)
          r = scan_found (s, level, mr->lo + x, out);
      }
    }
    for (j = 0; j < nb; j++) {
      free (buf[j]);
      buf[j] = NULL;
    }
    if (absent)
      break;
    k += nb;
  }
  return r;
}

/* Format 2 and older: level 0 whole, up to its stored end, a window at
 * a time. */
static int
scan_flat (struct scan *s)
{
  uint64_t stored, i, first = s->first[0], last = s->last[0];
  struct ranges rs = { NULL, 0, 0 }, none = { NULL, 0, 0 };
  int r;

  r = store_stat (s->st, s->oid[0], s->snap, &stored);
  if (r == -ENOENT)
    return 0;
  if (r < 0)
    return r;
  last = MIN (last, stored);
  for (i = first; r == 0 && i < last; i += MAP_WINDOW) {
    rs.n = 0;
    r = ranges_add (&rs, i, MIN (last, i + MAP_WINDOW));
    if (r == 0)
      r = scan_level (s, 0, &rs, &none);
  }
  free (rs.v);
  return r;
}

/* Calls CB for every allocated entry in [FIRST, LAST) of the stored map
 * MAP_OID at SNAP, in ascending order; FORMAT is the image's header
 * format.  With NOTE, the summary bytes found set are noted in it
 * (image_map_sum_note).  Stops at CB's first non-zero return. */
int
image_map_scan (struct store *st, const char *map_oid, unsigned format,
                uint64_t snap, uint64_t first, uint64_t last,
                struct objmap *note, image_map_scan_cb cb, void *arg)
{
  struct scan s = { .st = st, .snap = snap, .note = note, .cb = cb,
                    .arg = arg };
  struct ranges in = { NULL, 0, 0 }, out = { NULL, 0, 0 }, t;
  unsigned level;
  uint64_t i;
  int r = 0;

  if (first >= last)
    return 0;
  for (level = 0; level < MAP_LEVELS; level++) {
    image_map_level_oid (map_oid, level, s.oid[level], sizeof s.oid[level]);
    s.first[level] = first >> (MAP_SUM_SHIFT * level);
    s.last[level] = ((last - 1) >> (MAP_SUM_SHIFT * level)) + 1;
  }
  if (format < IMAGE_FORMAT_MAP_SUMMARY)
    return scan_flat (&s);

  level = MAP_LEVELS - 1;
  for (i = s.first[level]; r == 0 && i < s.last[level]; i += MAP_WINDOW)
    r = ranges_add (&in, i, MIN (s.last[level], i + MAP_WINDOW));
  for (;;) {
    if (r == 0)
      r = scan_level (&s, level, &in, &out);
    if (r < 0 || level == 0 || out.n == 0)
      break;
    t = in;
    in = out;
    out = t;
    out.n = 0;
    level--;
  }
  free (in.v);
  free (out.v);
  return r;
}

/* ---- Writing the summary ---------------------------------------------- */

static int
sum_runs_add (struct map_sum_runs *rs, unsigned level, uint64_t idx)
{
  size_t k;

  /* Runs of one level are added in ascending order: extend the last. */
  for (k = rs->n; k > 0; k--) {
    struct map_sum_run *run = &rs->v[k - 1];
    if (run->level != level)
      continue;
    if (idx <= run->hi)
      return 0;
    if (idx == run->hi + 1 && run->hi - run->lo + 1 < SUM_RUN_MAX) {
      run->hi = idx;
      return 0;
    }
    break;
  }
  if (rs->n == rs->cap) {
    size_t cap = rs->cap ? 2 * rs->cap : 8;
    struct map_sum_run *nv = realloc (rs->v, cap * sizeof *nv);
    if (nv == NULL)
      return -ENOMEM;
    rs->v = nv;
    rs->cap = cap;
  }
  rs->v[rs->n].level = level;
  rs->v[rs->n].lo = rs->v[rs->n].hi = idx;
  rs->n++;
  return 0;
}

/* Adds to RUNS the summary bytes over level-0 entries [LO, HI] that map
 * M does not know to be set on the store.  Called in ascending order of
 * LO, under map_lock. */
int
image_map_sum_plan (struct objmap *m, uint64_t lo, uint64_t hi,
                    struct map_sum_runs *runs)
{
  unsigned level;
  uint64_t idx;
  int r;

  for (level = 1; level < MAP_LEVELS; level++) {
    unsigned sh = MAP_SUM_SHIFT * level;
    for (idx = lo >> sh; idx <= hi >> sh; idx++)
      if (!image_map_sum_known (m, level, idx)
          && (r = sum_runs_add (runs, level, idx)) < 0)
        return r;
  }
  return 0;
}

static uint8_t ones_buf[SUM_RUN_MAX];
static pthread_once_t ones_once = PTHREAD_ONCE_INIT;

static void
ones_fill (void)
{
  memset (ones_buf, 1, sizeof ones_buf);
}

/* Starts the writes of RUNS (bytes set to 1; durable with the next
 * store_flush, like the level-0 bytes they cover: objmap.c), each
 * completing with CB (ARG, ret); a write that cannot start calls CB
 * with its error, so CB runs exactly RUNS->n times.  Returns 0 or the
 * first error of a start. */
int
image_map_sum_start (struct store *st, const char *map_oid,
                     const struct map_sum_runs *runs, store_aio_cb cb,
                     void *arg)
{
  char oid[80];
  size_t k;
  int r, err = 0;

  pthread_once (&ones_once, ones_fill);
  for (k = 0; k < runs->n; k++) {
    const struct map_sum_run *run = &runs->v[k];
    image_map_level_oid (map_oid, run->level, oid, sizeof oid);
    r = store_aio_write (st, oid, ones_buf, run->hi - run->lo + 1, run->lo,
                         0, cb, arg);
    if (r < 0) {
      cb (arg, r);
      err = err ? err : r;
    }
  }
  return err;
}

/* Writes RUNS one after the other on this thread, without a sync (a
 * store whose writes are cheap: image->lazy).  Returns 0 or the first
 * error. */
int
image_map_sum_write (struct store *st, const char *map_oid,
                     const struct map_sum_runs *runs)
{
  char oid[80];
  size_t k;
  int r = 0;

  pthread_once (&ones_once, ones_fill);
  for (k = 0; r == 0 && k < runs->n; k++) {
    const struct map_sum_run *run = &runs->v[k];
    image_map_level_oid (map_oid, run->level, oid, sizeof oid);
    r = store_write (st, oid, ones_buf, run->hi - run->lo + 1, run->lo, 0);
  }
  return r;
}

/* After RUNS were written: M knows their bytes are set.  Under
 * map_lock.  Out of memory only forgets (they are written again). */
void
image_map_sum_done (struct objmap *m, const struct map_sum_runs *runs)
{
  uint64_t idx;
  size_t k;

  for (k = 0; k < runs->n; k++)
    for (idx = runs->v[k].lo; idx <= runs->v[k].hi; idx++)
      image_map_sum_note (m, runs->v[k].level, idx);
}

/* Sets, synchronously, the summary bytes over every non-zero byte of
 * MAP (N level-0 entries), before MAP replaces the stored level 0 (a
 * rollback).  Bytes already set stay set: nothing under-reports at any
 * point. */
int
image_map_sum_write_all (struct store *st, const char *map_oid,
                         const uint8_t *map, uint64_t n)
{
  struct map_sum_runs runs = { NULL, 0, 0 };
  char oid[80];
  unsigned level;
  uint64_t i;
  size_t k;
  int r = 0;

  pthread_once (&ones_once, ones_fill);
  for (level = 1; r == 0 && level < MAP_LEVELS; level++)
    for (i = 0; r == 0 && i < n; i++)
      if (map[i] != IMAGE_OBJ_ABSENT)
        r = sum_runs_add (&runs, level, i >> (MAP_SUM_SHIFT * level));
  for (k = 0; r == 0 && k < runs.n; k++) {
    image_map_level_oid (map_oid, runs.v[k].level, oid, sizeof oid);
    r = store_write (st, oid, ones_buf, runs.v[k].hi - runs.v[k].lo + 1,
                     runs.v[k].lo, STORE_WRITE_SYNC);
  }
  free (runs.v);
  return r;
}
