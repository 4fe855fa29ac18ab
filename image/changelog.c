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
  else
    vbk_error_prepend (r, "image '%s': change log: cutting a failed append "
                       "(writes wait for it): ", img->info.name);
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

/* Adds list object OID at SNAP to S (the union). */
int
image_set_read (struct store *st, const char *oid, uint64_t snap,
                struct change_set *s)
{
  struct changes words = { NULL, 0, 0 };
  int r;

  r = image_changes_read (st, oid, snap, &words);
  if (r == 0)
    r = image_set_decode (words.v, words.n, s);
  image_changes_free (&words);
  return r;
}

/* Stores the sorted S as list object OID (synchronously). */
int
image_set_write (struct store *st, const char *oid,
                 const struct change_set *s)
{
  uint64_t *buf = malloc ((2 * s->n + 2) * sizeof *buf);
  size_t k;
  int r;

  if (buf == NULL)
    return -ENOMEM;
  k = image_set_encode (s, buf);
  r = store_write_full (st, oid, buf, k * sizeof *buf, STORE_WRITE_SYNC);
  free (buf);
  return r;
}
