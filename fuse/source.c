/* SPDX-License-Identifier: MIT
 *
 * source.c - a snapshot of an image as a vbkfs source.
 *
 * DESIGN: image_open_snap gives reads and the allocation map as they
 * were at the snapshot.  A snapshot removal forgets the snapshot's
 * record in the image header first and only then lets the store drop
 * its copies (image_snap_remove), after which reads at the snapshot's
 * id may return newer data.  So check() rereads the record: data read
 * before a check that finds the record, with the same id, is the
 * snapshot's.  The disk layer calls check() after every fetch and only
 * then hands the data out; once the record is gone every read is -EIO.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/log.h"
#include "internal.h"

struct snap_src {
  struct store *st;             /* borrowed */
  struct image *img;
  char image[IMAGE_NAME_MAX + 1];
  char snap[IMAGE_NAME_MAX + 1];
  uint64_t id;
  int gone;                     /* the record disappeared */
};

static uint64_t
snap_size (void *h)
{
  return image_size (((struct snap_src *) h)->img);
}

static ssize_t
snap_pread (void *h, void *buf, size_t len, uint64_t off)
{
  struct snap_src *s = h;

  if (__atomic_load_n (&s->gone, __ATOMIC_ACQUIRE))
    return vbk_errno (-EIO, "vbkfs: %s@%s: snapshot removed", s->image,
                      s->snap);
  return image_read (s->img, buf, len, off);
}

static int
snap_extents (void *h, uint64_t off, uint64_t len, image_extent_cb cb,
              void *arg)
{
  return image_extents (((struct snap_src *) h)->img, off, len, cb, arg);
}

static int
snap_check (void *h)
{
  struct snap_src *s = h;
  struct image_snap *list = NULL;
  size_t n = 0, i;
  int r, found = 0;

  if (__atomic_load_n (&s->gone, __ATOMIC_ACQUIRE))
    return vbk_errno (-EIO, "vbkfs: %s@%s: snapshot removed", s->image,
                      s->snap);
  r = image_snap_list (s->st, s->image, &list, &n);
  if (r == -ENOENT)
    n = 0;
  else if (r < 0)
    return -EIO;
  for (i = 0; i < n; i++)
    if (strcmp (list[i].name, s->snap) == 0 && list[i].id == s->id)
      found = 1;
  free (list);
  if (found)
    return 0;
  __atomic_store_n (&s->gone, 1, __ATOMIC_RELEASE);
  return vbk_errno (-EIO, "vbkfs: %s@%s: snapshot removed", s->image,
                    s->snap);
}

static void
snap_close (void *h)
{
  struct snap_src *s = h;

  image_close (s->img);
  free (s);
}

static const struct vbkfs_source_ops snap_ops = {
  .kind = "snapshot",
  .size = snap_size,
  .pread = snap_pread,
  .extents = snap_extents,
  .check = snap_check,
  .close = snap_close,
};

int
vbkfs_source_snap_open (struct store *st, const char *image,
                        const char *snap, struct vbkfs_source *out)
{
  struct image_snap *list = NULL;
  struct snap_src *s;
  size_t n = 0, i;
  int r;

  s = calloc (1, sizeof *s);
  if (s == NULL)
    return -ENOMEM;
  s->st = st;
  snprintf (s->image, sizeof s->image, "%s", image);
  snprintf (s->snap, sizeof s->snap, "%s", snap);
  r = image_snap_list (st, image, &list, &n);
  if (r < 0)
    goto fail;
  for (i = 0; i < n && strcmp (list[i].name, snap) != 0; i++)
    ;
  if (i == n) {
    r = vbk_errno (-ENOENT, "vbkfs: %s@%s", image, snap);
    goto fail;
  }
  s->id = list[i].id;
  r = image_open_snap (st, image, snap, &s->img);
  if (r < 0)
    goto fail;
  free (list);
  out->ops = &snap_ops;
  out->h = s;
  snprintf (out->name, sizeof out->name, "%s@%s", image, snap);
  return 0;

 fail:
  free (list);
  free (s);
  return r;
}
