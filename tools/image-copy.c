/* SPDX-License-Identifier: MIT
 *
 * image-copy.c - sparse, parallel copy between a raw file and an image,
 * for "vbk image import" and "vbk image export".
 *
 * DESIGN: COPY_WORKERS threads take pieces of the source from one cursor
 * under a mutex and copy each with synchronous calls (pread + image_write,
 * or image_read + pwrite); the number of workers is the queue depth seen
 * by the store.  A piece is at most COPY_CHUNK bytes and never crosses a
 * data-object boundary, so each write lands in one object.  Holes are
 * skipped without being read: import asks the file (SEEK_DATA/SEEK_HOLE,
 * falling back to "all data" where unsupported), export asks the image
 * (image_extents).  Inside a piece, aligned blocks of COPY_ZERO_BLOCK
 * bytes that are all zeros are not written either, so an imported image
 * stays thin and an exported file sparse.
 *
 * The main thread only waits: it prints progress when stderr is a
 * terminal and stops the workers on SIGINT/SIGTERM.  The first error
 * wins; because vbk_error() is per thread, a worker copies its message
 * into the shared state and the main thread sets it again.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "internal.h"

#define COPY_WORKERS 8
#define COPY_CHUNK (4u << 20)
#define COPY_ZERO_BLOCK (64u << 10)
#define PROGRESS_NS 200000000ull

struct extent {
  uint64_t off, len;
};

struct copy {
  struct vbk_ctx *ctx;
  struct image *img;
  int fd;
  const char *file;
  int import;               /* direction */
  int sparse;               /* skip zero blocks */
  uint64_t size;            /* bytes to cover */
  uint32_t chunk;           /* largest piece, divides the object size */

  pthread_mutex_t lock;
  pthread_cond_t done_cond; /* signalled when a worker ends */
  int running;              /* workers that have not ended */
  int err;                  /* first error, -errno */
  char msg[1024];           /* its vbk_error() */

  /* Import: [cursor, data_end) is known data; before cursor all handed
   * out.  Export: ext[next] from ext_off on is still to do. */
  uint64_t cursor, data_end;
  int no_seek_data;
  struct extent *ext;
  size_t n_ext, next;
  uint64_t ext_off;

  _Atomic uint64_t done;    /* bytes covered, for progress */
  _Atomic uint64_t data;
  _Atomic uint64_t written;
};

static void
set_failed (struct copy *c, int err)
{
  pthread_mutex_lock (&c->lock);
  if (c->err == 0) {
    c->err = err;
    snprintf (c->msg, sizeof c->msg, "%s",
              vbk_error ()[0] ? vbk_error () : strerror (-err));
  }
  pthread_mutex_unlock (&c->lock);
}

/* All bytes of P[0..LEN) are zero.  Once the first 16 bytes are known to
 * be zero, comparing the buffer with itself shifted by 16 proves the
 * rest, and memcmp is vectorised. */
static int
is_zero (const unsigned char *p, size_t len)
{
  size_t i;

  for (i = 0; i < 16 && i < len; i++)
    if (p[i])
      return 0;
  return len <= 16 || memcmp (p, p + 16, len - 16) == 0;
}

static int
pread_full (struct copy *c, void *buf, size_t len, uint64_t off)
{
  char *p = buf;
  ssize_t n;

  while (len > 0) {
    n = pread (c->fd, p, len, off);
    if (n < 0 && errno == EINTR && !vbk_interrupted ())
      continue;
    if (n < 0)
      return vbk_errno (-errno, "%s: read at %" PRIu64, c->file, off);
    if (n == 0) {
      vbk_set_error ("%s: unexpected end of file at %" PRIu64 " (did it "
                     "shrink during the import?)", c->file, off);
      return -EIO;
    }
    p += n;
    len -= n;
    off += n;
  }
  return 0;
}

static int
pwrite_full (struct copy *c, const void *buf, size_t len, uint64_t off)
{
  const char *p = buf;
  ssize_t n;

  while (len > 0) {
    n = pwrite (c->fd, p, len, off);
    if (n < 0 && errno == EINTR && !vbk_interrupted ())
      continue;
    if (n < 0)
      return vbk_errno (-errno, "%s: write at %" PRIu64, c->file, off);
    p += n;
    len -= n;
    off += n;
  }
  return 0;
}

/* Writes the non-zero runs of BUF (LEN bytes for offset OFF) to the
 * destination: zero blocks, aligned to COPY_ZERO_BLOCK in the whole
 * image, are skipped when sparse. */
static int
write_runs (struct copy *c, const unsigned char *buf, size_t len,
            uint64_t off)
{
  size_t i = 0, start, bl;
  int zero, r;

  while (i < len) {
    start = i;
    zero = -1;
    /* Extend a run of blocks of the same kind. */
    while (i < len) {
      bl = MIN (COPY_ZERO_BLOCK - (off + i) % COPY_ZERO_BLOCK, len - i);
      int z = c->sparse && is_zero (buf + i, bl);
      if (zero >= 0 && z != zero)
        break;
      zero = z;
      i += bl;
    }
    if (zero)
      continue;
    if (c->import)
      r = image_write (c->img, buf + start, i - start, off + start, 0);
    else
      r = pwrite_full (c, buf + start, i - start, off + start);
    if (r < 0)
      return r;
    c->written += i - start;
  }
  return 0;
}

/* Import: the next piece of data in the file, under the lock.  Returns
 * 1 with *OFF, *LEN set, 0 when the file is done, or -errno. */
static int
next_import_piece (struct copy *c, uint64_t *off, size_t *len)
{
  off_t d, h;

  if (c->cursor >= c->data_end) {
    if (c->cursor >= c->size)
      return 0;
    d = c->no_seek_data ? -1 : lseek (c->fd, c->cursor, SEEK_DATA);
    if (d < 0 && !c->no_seek_data && errno == ENXIO) {
      /* Only a hole is left. */
      c->done += c->size - c->cursor;
      c->cursor = c->data_end = c->size;
      return 0;
    }
    if (d < 0) {
      /* No SEEK_DATA here (EINVAL on some filesystems): all data. */
      c->no_seek_data = 1;
      d = c->cursor;
      h = c->size;
    }
    else {
      h = lseek (c->fd, d, SEEK_HOLE);
      if (h < 0 || (uint64_t) h > c->size)
        h = c->size;
    }
    if ((uint64_t) d >= c->size) {
      c->done += c->size - c->cursor;
      c->cursor = c->data_end = c->size;
      return 0;
    }
    c->done += d - c->cursor;
    c->cursor = d;
    c->data_end = h;
  }
  *off = c->cursor;
  *len = MIN (c->data_end, (c->cursor / c->chunk + 1) * c->chunk) - c->cursor;
  c->cursor += *len;
  return 1;
}

/* Export: the next piece of an allocated extent, under the lock. */
static int
next_export_piece (struct copy *c, uint64_t *off, size_t *len)
{
  struct extent *e;

  while (c->next < c->n_ext) {
    e = &c->ext[c->next];
    if (c->ext_off < e->off)
      c->ext_off = e->off;
    if (c->ext_off >= e->off + e->len) {
      c->next++;
      continue;
    }
    *off = c->ext_off;
    *len = MIN (e->off + e->len, (c->ext_off / c->chunk + 1) * c->chunk)
      - c->ext_off;
    c->ext_off += *len;
    return 1;
  }
  return 0;
}

static void *
worker (void *arg)
{
  struct copy *c = arg;
  unsigned char *buf;
  uint64_t off;
  size_t len;
  int r = 0;

  buf = malloc (c->chunk);
  if (buf == NULL) {
    vbk_set_error ("out of memory");
    set_failed (c, -ENOMEM);
    goto out;
  }
  for (;;) {
    pthread_mutex_lock (&c->lock);
    if (c->err || vbk_interrupted ())
      r = 0;
    else if (c->import)
      r = next_import_piece (c, &off, &len);
    else
      r = next_export_piece (c, &off, &len);
    pthread_mutex_unlock (&c->lock);
    if (r <= 0)
      break;

    if (c->import)
      r = pread_full (c, buf, len, off);
    else
      r = image_read (c->img, buf, len, off);
    if (r < 0) {
      set_failed (c, r);
      break;
    }
    c->data += len;
    if ((r = write_runs (c, buf, len, off)) < 0) {
      set_failed (c, r);
      break;
    }
    c->done += len;
  }
  free (buf);
 out:
  pthread_mutex_lock (&c->lock);
  c->running--;
  pthread_cond_signal (&c->done_cond);
  pthread_mutex_unlock (&c->lock);
  return NULL;
}

static void
show_progress (struct copy *c, const char *what, int last)
{
  char d[32], t[32];
  uint64_t done = c->done;

  fprintf (stderr, "\rvbk: %s: %3u%% (%s of %s)\033[K%s", what,
           c->size ? (unsigned) (done * 100 / c->size) : 100,
           format_size (done, d, sizeof d), format_size (c->size, t, sizeof t),
           last ? "\n" : "");
}

/* Starts the workers and waits for them. */
static int
run (struct copy *c, const char *what, struct copy_stats *st)
{
  pthread_t tids[COPY_WORKERS];
  uint64_t start = now_mono_ns (), last = start, now;
  struct timespec ts;
  int i, n = 0, r;

  pthread_mutex_init (&c->lock, NULL);
  pthread_cond_init (&c->done_cond, NULL);
  for (i = 0; i < COPY_WORKERS; i++) {
    pthread_mutex_lock (&c->lock);
    c->running++;
    pthread_mutex_unlock (&c->lock);
    r = pthread_create (&tids[n], NULL, worker, c);
    if (r) {
      pthread_mutex_lock (&c->lock);
      c->running--;
      pthread_mutex_unlock (&c->lock);
      if (n == 0) {
        pthread_mutex_destroy (&c->lock);
        pthread_cond_destroy (&c->done_cond);
        return vbk_errno (-r, "%s: starting threads", what);
      }
      break;
    }
    n++;
  }
  log_debug ("%s: %d workers, %u byte pieces", what, n, c->chunk);

  pthread_mutex_lock (&c->lock);
  while (c->running > 0) {
    clock_gettime (CLOCK_REALTIME, &ts);
    ts.tv_nsec += 100000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait (&c->done_cond, &c->lock, &ts);
    now = now_mono_ns ();
    if (c->ctx->progress && now - last >= PROGRESS_NS) {
      last = now;
      show_progress (c, what, 0);
    }
  }
  pthread_mutex_unlock (&c->lock);
  for (i = 0; i < n; i++)
    pthread_join (tids[i], NULL);
  if (c->ctx->progress)
    show_progress (c, what, 1);

  st->total = c->size;
  st->data = c->data;
  st->written = c->written;
  st->elapsed_ns = now_mono_ns () - start;
  pthread_mutex_destroy (&c->lock);
  pthread_cond_destroy (&c->done_cond);

  /* A signal may also have failed a call with EINTR: say why. */
  if (vbk_interrupted ()) {
    vbk_set_error ("interrupted");
    return -EINTR;
  }
  if (c->err) {
    vbk_set_error ("%s", c->msg);
    return c->err;
  }
  return 0;
}

static uint32_t
chunk_for (struct image *img)
{
  struct image_info info;

  image_get_info (img, &info);
  return MIN (info.object_size ? info.object_size : COPY_CHUNK, COPY_CHUNK);
}

int
copy_import (struct vbk_ctx *ctx, int fd, const char *file, uint64_t size,
             struct image *img, struct copy_stats *st)
{
  struct copy c = {
    .ctx = ctx, .img = img, .fd = fd, .file = file, .import = 1,
    .sparse = 1, .size = size, .chunk = chunk_for (img),
  };

  return run (&c, "import", st);
}

static int
add_extent (void *arg, uint64_t off, uint64_t len, int allocated)
{
  struct copy *c = arg;
  struct extent *e;

  if (!allocated)
    return 0;
  if (c->n_ext && c->ext[c->n_ext - 1].off + c->ext[c->n_ext - 1].len == off) {
    c->ext[c->n_ext - 1].len += len;
    return 0;
  }
  if ((c->n_ext & (c->n_ext - 1)) == 0) {
    e = realloc (c->ext, (c->n_ext ? 2 * c->n_ext : 16) * sizeof *e);
    if (e == NULL)
      return vbk_errno (-ENOMEM, "export: extent list");
    c->ext = e;
  }
  c->ext[c->n_ext++] = (struct extent) { off, len };
  return 0;
}

int
copy_export (struct vbk_ctx *ctx, struct image *img, int fd,
             const char *file, int sparse, struct copy_stats *st)
{
  uint64_t size = image_size (img), total = 0;
  struct copy c = {
    .ctx = ctx, .img = img, .fd = fd, .file = file, .import = 0,
    .sparse = sparse, .chunk = chunk_for (img),
  };
  size_t i;
  int r;

  if (sparse) {
    /* Only the allocated extents are read; the file already is one
     * hole of the right size. */
    if ((r = image_extents (img, 0, size, add_extent, &c)) < 0) {
      free (c.ext);
      return r;
    }
  }
  else {
    /* A device: every byte is written, holes as zeros. */
    c.ext = malloc (sizeof *c.ext);
    if (c.ext == NULL)
      return vbk_errno (-ENOMEM, "export");
    c.ext[0] = (struct extent) { 0, size };
    c.n_ext = 1;
  }
  for (i = 0; i < c.n_ext; i++)
    total += c.ext[i].len;
  c.size = total;
  log_debug ("export: %zu extents, %" PRIu64 " bytes allocated", c.n_ext,
             total);
  r = run (&c, "export", st);
  st->total = size;
  free (c.ext);
  return r;
}
