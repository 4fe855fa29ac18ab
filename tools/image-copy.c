/* SPDX-License-Identifier: MIT
 *
 * image-copy.c - "vbk image import" and "vbk image export" on the copy
 * engine (copy/copy.h): which endpoints and which options.
 *
 * DESIGN: import copies a raw file or block device (a borrowed
 * descriptor) into a new image, which reads as zeros: the file's holes
 * are not read (SEEK_DATA/SEEK_HOLE, everything is data where the file
 * system cannot tell), and aligned ZERO_BLOCK blocks of zeros inside its
 * data are not written, so the image stays thin.  Export copies an image
 * or snapshot into a file: only the allocated extents of the object map
 * are read; a regular file (fresh: one hole of the image's size) keeps
 * holes and zero blocks as holes, a block device gets every byte (holes
 * and zero blocks zeroed).  Pieces are at most the object size (and at
 * most 4 MiB), so each image write lands in one object; THREADS_DEFAULT
 * threads are the queue depth the store sees.  The caller (image-cmd.c)
 * opens, checks and replaces the files; a signal stops the copy, which
 * then says "interrupted".
 */
#include <errno.h>
#include <stdio.h>

#include "common/error.h"
#include "common/util.h"
#include "internal.h"

#define THREADS_DEFAULT 8
#define PIECE_MAX (4u << 20)
#define ZERO_BLOCK (64u << 10)

static uint64_t
piece_for (struct image *img)
{
  struct image_info info;

  image_get_info (img, &info);
  return MIN (info.object_size ? info.object_size : PIECE_MAX, PIECE_MAX);
}

/* Runs the copy; an interruption wins over whatever failed with it,
 * and over a success too: a signal that came during the copy's last
 * step (its flush, after the last check) still stops the command. */
static int
run (struct copy_endpoint *src, struct copy_endpoint *dst,
     const struct copy_opts *o, struct copy_result *res)
{
  int r = copy_run (src, dst, o, res);

  if (vbk_interrupted ()) {
    vbk_set_error ("interrupted");
    return -EINTR;
  }
  return r;
}

int
vbk_import_copy (const struct vbk_copy_args *ca, int fd, struct image *img,
                 struct copy_result *res)
{
  struct copy_endpoint *src = NULL, *dst = NULL;
  char label[IMAGE_NAME_MAX + 16];
  struct copy_opts o = {
    .piece = piece_for (img),
    .threads = ca->threads ? ca->threads : THREADS_DEFAULT,
    .skip_zero = 1,
    .zero_block = ZERO_BLOCK,
    .dst_zeroed = 1,
    .progress = ca->progress,
    .label = label,
    .interrupted = vbk_interrupted,
  };
  int r;

  *res = (struct copy_result) { 0 };
  snprintf (label, sizeof label, "import %s", ca->image);
  if ((r = copy_endpoint_fd (fd, ca->file, &src)) == 0
      && (r = copy_endpoint_image (img, ca->image, 0, &dst)) == 0) {
    /* The image was made with the size the file had then. */
    if (src->ops->size (src->h) != image_size (img)) {
      vbk_set_error ("%s: its size changed during the import", ca->file);
      r = -EIO;
    }
    else
      r = run (src, dst, &o, res);
  }
  copy_endpoint_close (src);
  copy_endpoint_close (dst);
  return r;
}

int
vbk_export_copy (const struct vbk_copy_args *ca, struct image *img, int fd,
                 int sparse, struct copy_result *res)
{
  struct copy_endpoint *src = NULL, *dst = NULL;
  char label[2 * IMAGE_NAME_MAX + 16];
  struct copy_opts o = {
    .piece = piece_for (img),
    .threads = ca->threads ? ca->threads : THREADS_DEFAULT,
    .skip_zero = sparse,
    .zero_block = ZERO_BLOCK,
    .dst_zeroed = sparse,
    .progress = ca->progress,
    .label = label,
    .interrupted = vbk_interrupted,
  };
  int r;

  *res = (struct copy_result) { 0 };
  snprintf (label, sizeof label, "export %s", ca->image);
  if ((r = copy_endpoint_image (img, ca->image, 0, &src)) == 0
      && (r = copy_endpoint_fd (fd, ca->file, &dst)) == 0)
    r = run (src, dst, &o, res);
  copy_endpoint_close (src);
  copy_endpoint_close (dst);
  return r;
}
