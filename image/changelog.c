/* SPDX-License-Identifier: MIT
 *
 * changelog.c - the change log of an image and the merged change lists:
 * reading and writing them, and the one change-log writer.
 *
 * DESIGN
 * - The change log (vbk_changes.ID) lists the objects changed since the
 *   last snapshot, 8 bytes each, in the order of their first change.  It
 *   is written under the snapshot context and emptied by each snapshot,
 *   so its copy at snapshot S lists exactly the interval that ended at
 *   S.  Just before it, the snapshot appends which 1/32 parts of each
 *   object the holder saw change (kept in memory, never on the write
 *   path), so diffs between snapshots are finer than objects.
 * - An append that failed may have landed anyway: its words are cut
 *   before the next append and before any write starts (log_fix_tail).
 */
#include "internal.h"

int
image_changes_push (struct changes *c, uint64_t e)
{
  int r = image_changes_reserve (c, 1);

  if (r == 0)
    c->v[c->n++] = e;
  return r;
}

void
image_changes_free (struct changes *c)
{
  free (c->v);
  c->v = NULL;
  c->n = c->cap = 0;
}

/* Room for EXTRA more words in C. */
int
image_changes_reserve (struct changes *c, size_t extra)
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
void
image_log_writer_enter (struct image *img)
{
  pthread_mutex_lock (&img->map_lock);
  while (img->map_writing)
    pthread_cond_wait (&img->map_cond, &img->map_lock);
  img->map_writing = true;
  pthread_mutex_unlock (&img->map_lock);
}

void
image_log_writer_exit (struct image *img)
{
  pthread_mutex_lock (&img->map_lock);
  img->map_writing = false;
  pthread_cond_broadcast (&img->map_cond);
  pthread_mutex_unlock (&img->map_lock);
}

/* Before an append at OFF to IMG's log (by the change-log writer): if an
 * earlier append failed, it may have landed anyway; its words past OFF
 * must go before new ones land among them. */
int
image_log_fix_tail (struct image *img, uint64_t off)
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
 * done (image_map_mark_dirty tries it again first, and fails while it
 * fails). */
void
image_log_append_failed (struct image *img, uint64_t off)
{
  __atomic_store_n (&img->log_tail_unknown, true, __ATOMIC_RELEASE);
  image_log_fix_tail (img, off);
}

/* Calls FN (ARG, OBJNO, PARTS) for each object record of the words
 * V[0..N), in order: PARTS is ALL_PARTS for a whole-object record. */
void
image_changes_each (const uint64_t *v, size_t n,
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
int
image_changes_read (struct store *st, const char *oid, uint64_t snap,
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
    r = image_changes_push (c, le64toh (buf[i]));
  free (buf);
  return r;
}

void
image_set_add (void *arg, uint64_t objno, uint32_t parts)
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
void
image_set_sort (struct change_set *s, bool last_wins)
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
int
image_set_read (struct store *st, const char *oid, uint64_t snap,
                struct change_set *s)
{
  struct changes words = { NULL, 0, 0 };
  struct change_set one = { .from = UINT64_MAX };
  size_t i;
  int r;

  r = image_changes_read (st, oid, snap, &words);
  if (r == 0) {
    for (i = 0; i < words.n; i++)
      if (words.v[i] & CHANGES_FROM)
        s->from = MIN (s->from, words.v[i] & ~CHANGES_FROM);
    image_changes_each (words.v, words.n, image_set_add, &one);
    r = one.err;
  }
  if (r == 0) {
    image_set_sort (&one, true);
    for (i = 0; i < one.n && s->err == 0; i++)
      image_set_add (s, one.v[i].objno, one.v[i].parts);
    r = s->err;
  }
  image_changes_free (&words);
  free (one.v);
  return r;
}

/* Stores the sorted S as list object OID (synchronously). */
int
image_set_write (struct store *st, const char *oid,
                 const struct change_set *s)
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
uint32_t
image_parts_of (unsigned order, uint64_t off, uint64_t len)
{
  unsigned shift = order - 5;               /* SUBBLOCKS == 32 */
  unsigned first = off >> shift, last = (off + len - 1) >> shift;

  if (last - first >= 31)
    return ALL_PARTS;
  return (uint32_t) (((UINT64_C (1) << (last - first + 1)) - 1) << first);
}

/* Records in header HDR that the image shrinks to SIZE bytes: the
 * objects from there up change (see the DESIGN note). */
