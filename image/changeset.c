/* SPDX-License-Identifier: MIT
 *
 * changeset.c - the words of change lists and sets of changed objects
 * (see changeset.h for the format).
 *
 * DESIGN
 * - Pure functions on memory only, so that a unit test can check them
 *   against a plain bitmap of parts: the store side (reading and writing
 *   list objects, the one change-log writer) is in changelog.c.
 * - A set is built from records in list order (seq), then sorted by
 *   object: within one list the last record of an object wins, across
 *   lists their parts are united.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>

#include "common/util.h"
#include "changeset.h"

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

/* Adds the list V[0..N) to S (see changeset.h). */
int
image_set_decode (const uint64_t *v, size_t n, struct change_set *s)
{
  struct change_set one = { .from = UINT64_MAX };
  size_t i;
  int r;

  for (i = 0; i < n; i++) {
    if (v[i] == CHANGES_RESET) {
      s->reset = true;
      s->from = 0;
    }
    else if (v[i] & CHANGES_FROM)
      s->from = MIN (s->from, v[i] & ~CHANGES_FROM);
  }
  image_changes_each (v, n, image_set_add, &one);
  r = one.err;
  if (r == 0) {
    image_set_sort (&one, true);
    for (i = 0; i < one.n && s->err == 0; i++)
      image_set_add (s, one.v[i].objno, one.v[i].parts);
    r = s->err;
  }
  free (one.v);
  return r;
}

/* The words of the sorted S (see changeset.h). */
size_t
image_set_encode (const struct change_set *s, uint64_t *buf)
{
  size_t i, k = 0;

  for (i = 0; i < s->n; i++) {
    if (s->v[i].parts == ALL_PARTS)
      buf[k++] = htole64 (s->v[i].objno);
    else {
      buf[k++] = htole64 (CHANGES_DETAIL | s->v[i].objno);
      buf[k++] = htole64 (s->v[i].parts);
    }
  }
  if (s->reset)
    buf[k++] = htole64 (CHANGES_FROM);
  else if (s->from != UINT64_MAX)
    buf[k++] = htole64 (CHANGES_FROM | s->from);
  if (s->reset)
    buf[k++] = htole64 (CHANGES_RESET);
  return k;
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
