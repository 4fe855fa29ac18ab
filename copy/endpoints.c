/* SPDX-License-Identifier: MIT
 *
 * endpoints.c - copy endpoints over an image (or snapshot), a local file
 * or block device, and memory.
 *
 * DESIGN: each is a struct copy_ops table and a small handle; the image
 * endpoint passes image_extents through so a copy never reads holes, the
 * file endpoint asks SEEK_DATA/SEEK_HOLE (everything is data where the
 * file system cannot say) and punches holes for zero, memory is for unit
 * tests.  A file endpoint asked to (COPY_FILE_DIRECT) writes aligned
 * pieces with O_DIRECT: a restore of GiBs then neither copies them into
 * the page cache nor leaves them all to the final fsync.  Every operation is thread-safe: pread/pwrite on a file, the
 * image library, or disjoint ranges of memory.  A file endpoint opens
 * its file by path (and owns the descriptor) or borrows a descriptor the
 * caller opened (import and export open, check and replace their files
 * themselves).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fs.h>

#include "common/error.h"
#include "copy.h"

static int
new_endpoint (const struct copy_ops *ops, void *h, const char *name,
              struct copy_endpoint **out)
{
  struct copy_endpoint *ep = calloc (1, sizeof *ep);

  if (ep == NULL)
    return vbk_errno (-ENOMEM, "copy: %s", name);
  ep->ops = ops;
  ep->h = h;
  snprintf (ep->name, sizeof ep->name, "%s", name);
  *out = ep;
  return 0;
}

void
copy_endpoint_close (struct copy_endpoint *ep)
{
  if (ep == NULL)
    return;
  if (ep->ops->close)
    ep->ops->close (ep->h);
  free (ep);
}

/* ---- Image ---------------------------------------------------------------- */

struct img_ep {
  struct image *img;
  int owned;
};

static ssize_t
img_pread (void *h, void *buf, size_t len, uint64_t off)
{
  return image_read (((struct img_ep *) h)->img, buf, len, off);
}

static int
img_pwrite (void *h, const void *buf, size_t len, uint64_t off)
{
  return image_write (((struct img_ep *) h)->img, buf, len, off, 0);
}

static int
img_extents (void *h, uint64_t off, uint64_t len, image_extent_cb cb,
             void *arg)
{
  return image_extents (((struct img_ep *) h)->img, off, len, cb, arg);
}

static int
img_zero (void *h, uint64_t off, uint64_t len)
{
  return image_discard (((struct img_ep *) h)->img, off, len, 0);
}

static int
img_flush (void *h)
{
  return image_flush (((struct img_ep *) h)->img);
}

static uint64_t
img_size (void *h)
{
  return image_size (((struct img_ep *) h)->img);
}

static void
img_close (void *h)
{
  struct img_ep *e = h;

  if (e->owned)
    image_close (e->img);
  free (e);
}

static const struct copy_ops image_ops = {
  .kind = "image",
  .pread = img_pread,
  .pwrite = img_pwrite,
  .extents = img_extents,
  .zero = img_zero,
  .flush = img_flush,
  .size = img_size,
  .close = img_close,
};

int
copy_endpoint_image (struct image *img, const char *name, int owned,
                     struct copy_endpoint **out)
{
  struct img_ep *e = calloc (1, sizeof *e);
  int r;

  if (e == NULL)
    return vbk_errno (-ENOMEM, "copy: %s", name);
  e->img = img;
  e->owned = owned;
  if ((r = new_endpoint (&image_ops, e, name, out)) < 0)
    free (e);
  return r;
}

static const struct copy_ops snapshot_ops = {
  .kind = "snapshot",
  .pread = img_pread,
  .extents = img_extents,
  .size = img_size,
  .close = img_close,
};

int
copy_endpoint_snapshot (struct store *st, const char *image,
                        const char *snap, struct copy_endpoint **out)
{
  struct image *img;
  struct img_ep *e;
  char name[300];
  int r;

  if ((r = image_open_snap (st, image, snap, &img)) < 0)
    return r;
  snprintf (name, sizeof name, "%s@%s", image, snap);
  if ((e = calloc (1, sizeof *e)) == NULL) {
    image_close (img);
    return vbk_errno (-ENOMEM, "copy: %s", name);
  }
  e->img = img;
  e->owned = 1;
  if ((r = new_endpoint (&snapshot_ops, e, name, out)) < 0)
    img_close (e);
  return r;
}

/* ---- File or block device -------------------------------------------------- */

struct file_ep {
  int fd;
  int dfd;                      /* the file opened O_DIRECT, or -1 */
  int owned;                    /* close FD with the endpoint */
  uint64_t size;
  int is_blk;
  char path[256];
};

static ssize_t
file_pread (void *h, void *buf, size_t len, uint64_t off)
{
  struct file_ep *f = h;
  size_t done = 0;
  ssize_t n;

  while (done < len) {
    n = pread (f->fd, (char *) buf + done, len - done, off + done);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return vbk_errno (-errno, "%s: read at %" PRIu64, f->path,
                        off + done);
    }
    if (n == 0) {
      /* The size was known when the copy began: the file shrank. */
      vbk_set_error ("%s: unexpected end of file at %" PRIu64 " (did it "
                     "shrink during the copy?)", f->path, off + done);
      return -EIO;
    }
    done += n;
  }
  return len;
}

/* Writes the part of [OFF, OFF+LEN) that may go around the page cache
 * through F->dfd; returns how many bytes it wrote (0: none), or -errno.
 * A direct write the file system refuses (-EINVAL) is left to the
 * buffered path. */
static ssize_t
file_pwrite_direct (struct file_ep *f, const void *buf, size_t len,
                    uint64_t off)
{
  size_t done = 0, n = len & ~(size_t) (COPY_DIRECT_ALIGN - 1);
  ssize_t w;

  if (f->dfd < 0 || ((uintptr_t) buf | off) % COPY_DIRECT_ALIGN || n == 0)
    return 0;
  while (done < n) {
    w = pwrite (f->dfd, (const char *) buf + done, n - done, off + done);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0 && errno == EINVAL)
      break;
    if (w < 0)
      return vbk_errno (-errno, "%s: write at %" PRIu64, f->path,
                        off + done);
    /* A short write leaves the rest to the buffered path (aligned or
     * not, it is correct there). */
    done += w;
    if (w == 0 || done % COPY_DIRECT_ALIGN)
      break;
  }
  return (ssize_t) done;
}

static int
file_pwrite (void *h, const void *buf, size_t len, uint64_t off)
{
  struct file_ep *f = h;
  size_t done = 0;
  ssize_t n;

  if ((n = file_pwrite_direct (f, buf, len, off)) < 0)
    return (int) n;
  done = (size_t) n;
  while (done < len) {
    n = pwrite (f->fd, (const char *) buf + done, len - done, off + done);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return vbk_errno (-errno, "%s: write at %" PRIu64, f->path,
                        off + done);
    }
    done += n;
  }
  return 0;
}

static int
file_extents (void *h, uint64_t off, uint64_t len, image_extent_cb cb,
              void *arg)
{
  struct file_ep *f = h;
  uint64_t end = off + len, pos = off;
  struct stat sb;
  off_t d, e;
  int r;

  if (end > f->size)
    end = f->size;
  /* A file that shrank would show its lost end as a hole: zeros. */
  if (!f->is_blk && fstat (f->fd, &sb) == 0 && (uint64_t) sb.st_size < f->size)
    return vbk_errno (-EIO, "%s: the file shrank to %llu bytes (it had %llu)",
                      f->path, (unsigned long long) sb.st_size,
                      (unsigned long long) f->size);
  while (pos < end) {
    d = f->is_blk ? (off_t) pos : lseek (f->fd, pos, SEEK_DATA);
    if (d < 0 && errno == ENXIO)
      d = end;                  /* only a hole to the end */
    else if (d < 0)             /* cannot tell: all data */
      return cb (arg, pos, end - pos, 1);
    if ((uint64_t) d > end)
      d = end;
    if ((uint64_t) d > pos && (r = cb (arg, pos, d - pos, 0)))
      return r;
    if ((uint64_t) d >= end)
      break;
    e = f->is_blk ? (off_t) end : lseek (f->fd, d, SEEK_HOLE);
    if (e < 0 || (uint64_t) e > end)
      e = end;
    if ((r = cb (arg, d, e - d, 1)))
      return r;
    pos = e;
  }
  return 0;
}

static int
file_zero (void *h, uint64_t off, uint64_t len)
{
  struct file_ep *f = h;
  uint64_t range[2] = { off, len };

  if (f->is_blk) {
    if (ioctl (f->fd, BLKZEROOUT, range) == 0)
      return 0;
  }
  else if (fallocate (f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                      off, len) == 0)
    return 0;
  /* No hole punching here: write zeros. */
  {
    static const char zeros[65536];
    uint64_t done = 0;
    size_t n;
    int r;

    while (done < len) {
      n = len - done < sizeof zeros ? len - done : sizeof zeros;
      if ((r = file_pwrite (h, zeros, n, off + done)) < 0)
        return r;
      done += n;
    }
  }
  return 0;
}

static int
file_flush (void *h)
{
  struct file_ep *f = h;

  if (fsync (f->fd) < 0 && errno != EINVAL)
    return vbk_errno (-errno, "%s: fsync", f->path);
  return 0;
}

static uint64_t
file_size (void *h)
{
  return ((struct file_ep *) h)->size;
}

static void
file_close (void *h)
{
  struct file_ep *f = h;

  if (f->owned)
    close (f->fd);
  if (f->dfd >= 0)
    close (f->dfd);
  free (f);
}

static const struct copy_ops file_ops = {
  .kind = "file",
  .pread = file_pread,
  .pwrite = file_pwrite,
  .extents = file_extents,
  .zero = file_zero,
  .flush = file_flush,
  .size = file_size,
  .close = file_close,
};

int
copy_endpoint_file (const char *path, unsigned flags, uint64_t size,
                    struct copy_endpoint **out)
{
  struct file_ep *f;
  struct stat sb;
  int oflags = O_CLOEXEC, r;

  if (flags & COPY_FILE_WRITE)
    oflags |= O_RDWR;
  if (flags & COPY_FILE_CREATE)
    oflags |= O_CREAT;
  if ((f = calloc (1, sizeof *f)) == NULL)
    return vbk_errno (-ENOMEM, "%s", path);
  snprintf (f->path, sizeof f->path, "%s", path);
  f->owned = 1;
  f->dfd = -1;
  f->fd = open (path, oflags, 0644);
  if (f->fd < 0) {
    r = vbk_errno (-errno, "%s", path);
    free (f);
    return r;
  }
  if (fstat (f->fd, &sb) < 0) {
    r = vbk_errno (-errno, "%s", path);
    goto err;
  }
  f->is_blk = S_ISBLK (sb.st_mode);
  if (f->is_blk) {
    if (ioctl (f->fd, BLKGETSIZE64, &f->size) < 0) {
      r = vbk_errno (-errno, "%s: size", path);
      goto err;
    }
  }
  else if (flags & COPY_FILE_CREATE) {
    /* A fresh, sparse file of the right size: holes need no writes. */
    if (ftruncate (f->fd, 0) < 0 || ftruncate (f->fd, size) < 0) {
      r = vbk_errno (-errno, "%s: truncate", path);
      goto err;
    }
    f->size = size;
  }
  else
    f->size = sb.st_size;
  /* A second descriptor for the direct writes (after the truncation):
   * none where the file system has no O_DIRECT. */
  if ((flags & (COPY_FILE_WRITE | COPY_FILE_DIRECT))
      == (COPY_FILE_WRITE | COPY_FILE_DIRECT))
    f->dfd = open (path, O_WRONLY | O_DIRECT | O_CLOEXEC);
  if ((r = new_endpoint (&file_ops, f, path, out)) < 0)
    goto err;
  return 0;
 err:
  close (f->fd);
  if (f->dfd >= 0)
    close (f->dfd);
  free (f);
  return r;
}

int
copy_endpoint_fd (int fd, const char *name, struct copy_endpoint **out)
{
  struct file_ep *f;
  struct stat sb;
  int r;

  if (fstat (fd, &sb) < 0)
    return vbk_errno (-errno, "%s", name);
  if (!S_ISREG (sb.st_mode) && !S_ISBLK (sb.st_mode)) {
    vbk_set_error ("%s: not a regular file or block device", name);
    return -EINVAL;
  }
  if ((f = calloc (1, sizeof *f)) == NULL)
    return vbk_errno (-ENOMEM, "%s", name);
  f->fd = fd;
  f->dfd = -1;
  f->is_blk = S_ISBLK (sb.st_mode);
  f->size = sb.st_size;
  snprintf (f->path, sizeof f->path, "%s", name);
  if (f->is_blk && ioctl (fd, BLKGETSIZE64, &f->size) < 0) {
    r = vbk_errno (-errno, "%s: size", name);
    free (f);
    return r;
  }
  if ((r = new_endpoint (&file_ops, f, name, out)) < 0)
    free (f);
  return r;
}

/* ---- Memory ------------------------------------------------------------------ */

struct mem_ep {
  char *buf;
  uint64_t size;
};

static ssize_t
mem_pread (void *h, void *buf, size_t len, uint64_t off)
{
  struct mem_ep *m = h;

  if (off > m->size || len > m->size - off)
    return vbk_errno (-EINVAL, "memory: read past the end");
  memcpy (buf, m->buf + off, len);
  return len;
}

static int
mem_pwrite (void *h, const void *buf, size_t len, uint64_t off)
{
  struct mem_ep *m = h;

  if (off > m->size || len > m->size - off)
    return vbk_errno (-EINVAL, "memory: write past the end");
  memcpy (m->buf + off, buf, len);
  return 0;
}

static uint64_t
mem_size (void *h)
{
  return ((struct mem_ep *) h)->size;
}

static void
mem_close (void *h)
{
  free (h);
}

static const struct copy_ops memory_ops = {
  .kind = "memory",
  .pread = mem_pread,
  .pwrite = mem_pwrite,
  .size = mem_size,
  .close = mem_close,
};

int
copy_endpoint_memory (void *buf, uint64_t size, struct copy_endpoint **out)
{
  struct mem_ep *m = calloc (1, sizeof *m);
  int r;

  if (m == NULL)
    return vbk_errno (-ENOMEM, "memory");
  m->buf = buf;
  m->size = size;
  if ((r = new_endpoint (&memory_ops, m, "memory", out)) < 0)
    free (m);
  return r;
}
