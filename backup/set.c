/* SPDX-License-Identifier: MIT
 *
 * set.c - a set of chunk digests: open addressing, linear probing, the
 * digest's first 8 bytes as the hash (SHA-256 output is uniform).  One
 * mutex; it guards memory only, never I/O.  The all-zero digest (hole)
 * is never stored: it marks empty slots.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void
backup_set_init (struct backup_set *s)
{
  memset (s, 0, sizeof *s);
  pthread_mutex_init (&s->lock, NULL);
}

void
backup_set_free (struct backup_set *s)
{
  free (s->slot);
  s->slot = NULL;
  s->cap = s->n = 0;
  pthread_mutex_destroy (&s->lock);
}

static size_t
slot_of (const struct backup_set *s, const unsigned char *d)
{
  uint64_t h;

  memcpy (&h, d, sizeof h);
  return h & (s->cap - 1);
}

/* Returns the slot of D or of the empty slot where it would go. */
static size_t
find (const struct backup_set *s, const unsigned char *d)
{
  size_t i = slot_of (s, d);

  while (!backup_digest_is_hole (s->slot[i])
         && memcmp (s->slot[i], d, BACKUP_DIGEST_LEN) != 0)
    i = (i + 1) & (s->cap - 1);
  return i;
}

static int
grow (struct backup_set *s)
{
  struct backup_set n = { .cap = s->cap ? 2 * s->cap : 1024 };
  size_t i;

  n.slot = calloc (n.cap, BACKUP_DIGEST_LEN);
  if (n.slot == NULL)
    return -ENOMEM;
  for (i = 0; i < s->cap; i++)
    if (!backup_digest_is_hole (s->slot[i]))
      memcpy (n.slot[find (&n, s->slot[i])], s->slot[i], BACKUP_DIGEST_LEN);
  free (s->slot);
  s->slot = n.slot;
  s->cap = n.cap;
  return 0;
}

int
backup_set_add (struct backup_set *s, const unsigned char *d)
{
  size_t i;
  int r = 0;

  if (backup_digest_is_hole (d))
    return 0;
  pthread_mutex_lock (&s->lock);
  if ((s->n + 1) * 2 > s->cap && (r = grow (s)) < 0)
    goto out;
  i = find (s, d);
  if (backup_digest_is_hole (s->slot[i])) {
    memcpy (s->slot[i], d, BACKUP_DIGEST_LEN);
    s->n++;
    r = 1;
  }
 out:
  pthread_mutex_unlock (&s->lock);
  return r;
}

bool
backup_set_has (struct backup_set *s, const unsigned char *d)
{
  bool r;

  if (backup_digest_is_hole (d))
    return true;
  pthread_mutex_lock (&s->lock);
  r = s->cap && !backup_digest_is_hole (s->slot[find (s, d)]);
  pthread_mutex_unlock (&s->lock);
  return r;
}
