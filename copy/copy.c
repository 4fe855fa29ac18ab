/* SPDX-License-Identifier: MIT
 *
 * copy.c - the copy loop: plan the pieces, let the workers copy them,
 * report progress, carry the first error back.
 *
 * DESIGN: the calling thread first plans: it walks the source's extents
 * (or the given ranges) and turns them into a sorted list of pieces, each
 * inside one aligned slot [k*piece, (k+1)*piece), marked data or hole.
 * With whole_pieces a slot with any allocated byte becomes one whole data
 * piece (a backup hashes whole chunks).  Holes need no piece when the
 * destination already reads as zeros (dst_zeroed): they only count as
 * covered, so a 1 TiB image with one object plans one piece.  It then
 * submits the pieces to a bounded workq (twice as many waiting as there
 * are threads: enough to keep them busy, little memory); each worker
 * reads a data piece into a page-aligned buffer from a small pool (a
 * file destination may write it around the page cache), and writes it, or
 * with skip_zero leaves out what is all zeros: the whole piece, or with
 * zero_block each aligned run of all-zero blocks inside it (zeroing it
 * instead when the destination is not already zero).  Holes are zeroed
 * unless dst_zeroed.  The caller's thread checks for an interruption and
 * prints progress after each submission and while it waits (progress is
 * rate-limited in progress.c).  The first error stops the remaining
 * pieces; its vbk_error() message is copied from the worker's thread to
 * the caller's.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "common/workq.h"
#include "copy.h"

#define PIECE_DEFAULT (4u << 20)
#define THREADS_DEFAULT 4
/* How often the caller's thread wakes up while it waits for workers. */
#define TICK_NS 200000000ull

struct piece {
  uint64_t off, len;
  int data;
};

struct job {
  struct copy_endpoint *src, *dst;
  const struct copy_opts *o;
  uint64_t piece, size;
  struct piece *p;
  size_t n, cap;
  uint64_t last_data_slot;      /* whole_pieces: last slot planned + 1 */
  uint64_t skipped;             /* hole bytes left out of the plan */

  pthread_mutex_t lock;
  int err;
  char msg[1024];
  void **bufs;                  /* free buffers */
  size_t nbufs;

  _Atomic uint64_t done, read, written, zeroed;
  struct copy_progress prog;
};

int
copy_is_zero (const void *buf, size_t len)
{
  const unsigned char *p = buf;
  size_t i;

  /* Check 16 bytes by hand, then compare the buffer with itself shifted:
   * memcmp is vectorised. */
  for (i = 0; i < len && i < 16; i++)
    if (p[i])
      return 0;
  return len <= 16 || memcmp (p, p + 16, len - 16) == 0;
}

static int
add_piece (struct job *j, uint64_t off, uint64_t len, int data)
{
  struct piece *np;

  if (j->n == j->cap) {
    j->cap = j->cap ? 2 * j->cap : 256;
    if ((np = realloc (j->p, j->cap * sizeof *np)) == NULL)
      return vbk_errno (-ENOMEM, "copy: planning");
    j->p = np;
  }
  j->p[j->n++] = (struct piece) { off, len, data };
  return 0;
}

/* Adds [OFF, OFF+LEN) cut at slot boundaries. */
static int
add_range (struct job *j, uint64_t off, uint64_t len, int data)
{
  uint64_t end = off + len, n;
  int r;

  if (end > j->size)
    end = j->size;
  if (j->o->whole_pieces) {
    uint64_t s = off / j->piece, e;

    if (!data)
      return 0;                 /* holes come from the gaps, see plan() */
    if (end <= off)
      return 0;
    e = (end + j->piece - 1) / j->piece;
    if (s < j->last_data_slot)
      s = j->last_data_slot;
    for (; s < e; s++) {
      uint64_t po = s * j->piece, pl = MIN (j->piece, j->size - po);

      if ((r = add_piece (j, po, pl, 1)) < 0)
        return r;
    }
    if (e > j->last_data_slot)
      j->last_data_slot = e;
    return 0;
  }
  if (!data && j->o->dst_zeroed) {
    j->skipped += end > off ? end - off : 0;
    return 0;                   /* nothing to do, see DESIGN */
  }
  while (off < end) {
    n = MIN (end - off, j->piece - off % j->piece);
    if ((r = add_piece (j, off, n, data)) < 0)
      return r;
    off += n;
  }
  return 0;
}

static int
extent_cb (void *arg, uint64_t off, uint64_t len, int allocated)
{
  return add_range (arg, off, len, allocated);
}

static int
cmp_piece (const void *a, const void *b)
{
  const struct piece *x = a, *y = b;

  return x->off < y->off ? -1 : x->off > y->off;
}

static int
plan (struct job *j)
{
  const struct copy_opts *o = j->o;
  struct piece *data;
  size_t i, nd;
  uint64_t pos;
  int r;

  if (o->ranges) {
    for (i = 0; i < o->nranges; i++)
      if ((r = add_range (j, o->ranges[i].off, o->ranges[i].len, 1)) < 0)
        return r;
  }
  else if (j->src->ops->extents) {
    if ((r = j->src->ops->extents (j->src->h, 0, j->size, extent_cb, j)) < 0)
      return r;
  }
  else if ((r = add_range (j, 0, j->size, 1)) < 0)
    return r;

  if (!o->whole_pieces || o->dst_zeroed)
    return 0;
  /* Whole pieces: the gaps between data pieces are holes. */
  qsort (j->p, j->n, sizeof *j->p, cmp_piece);
  data = j->p;
  nd = j->n;
  j->p = NULL;
  j->n = j->cap = 0;
  pos = 0;
  for (i = 0; i <= nd; i++) {
    uint64_t next = i < nd ? data[i].off : j->size;

    if (next > pos) {
      uint64_t off = pos;

      while (off < next) {
        uint64_t n = MIN (next - off, j->piece - off % j->piece);

        if ((r = add_piece (j, off, n, 0)) < 0)
          goto out;
        off += n;
      }
    }
    if (i < nd) {
      if ((r = add_piece (j, data[i].off, data[i].len, 1)) < 0)
        goto out;
      pos = data[i].off + data[i].len;
    }
  }
  r = 0;
 out:
  free (data);
  return r;
}

static void
set_failed (struct job *j, int err)
{
  pthread_mutex_lock (&j->lock);
  if (j->err == 0) {
    j->err = err;
    snprintf (j->msg, sizeof j->msg, "%s", vbk_error ());
  }
  pthread_mutex_unlock (&j->lock);
}

static int
failed (struct job *j)
{
  int e;

  pthread_mutex_lock (&j->lock);
  e = j->err;
  pthread_mutex_unlock (&j->lock);
  return e;
}

static void *
get_buf (struct job *j)
{
  void *b = NULL;

  pthread_mutex_lock (&j->lock);
  if (j->nbufs)
    b = j->bufs[--j->nbufs];
  pthread_mutex_unlock (&j->lock);
  /* Page-aligned, so a file destination may write it directly. */
  if (b == NULL && posix_memalign (&b, COPY_DIRECT_ALIGN, j->piece) != 0)
    b = NULL;
  return b;
}

static void
put_buf (struct job *j, void *b)
{
  pthread_mutex_lock (&j->lock);
  j->bufs[j->nbufs++] = b;
  pthread_mutex_unlock (&j->lock);
}

static int
do_zero (struct job *j, uint64_t off, uint64_t len, void *buf)
{
  const struct copy_ops *d = j->dst->ops;

  if (j->o->dst_zeroed)
    return 0;
  j->zeroed += len;
  if (d->zero)
    return d->zero (j->dst->h, off, len);
  memset (buf, 0, len);
  j->written += len;
  return d->pwrite (j->dst->h, buf, len, off);
}

/* Writes [OFF, OFF+LEN) of BUF to OFF of the destination. */
static int
do_write (struct job *j, const unsigned char *buf, uint64_t off, size_t len)
{
  j->written += len;
  return j->dst->ops->pwrite (j->dst->h, buf, len, off);
}

/* Writes the data piece P read into BUF.  With skip_zero, what is all
 * zeros is zeroed instead (nothing if dst_zeroed): the whole piece, or
 * with zero_block each run of aligned all-zero blocks, so a write never
 * carries a zero block and each run is one call. */
static int
write_piece (struct job *j, const struct piece *p, unsigned char *buf)
{
  uint64_t zb = j->o->zero_block;
  size_t i = 0, start, bl;
  int zero, z, r;

  if (!j->o->skip_zero)
    return do_write (j, buf, p->off, p->len);
  if (copy_is_zero (buf, p->len))
    return do_zero (j, p->off, p->len, buf);
  if (zb == 0 || zb >= p->len)
    return do_write (j, buf, p->off, p->len);
  while (i < p->len) {
    start = i;
    zero = -1;
    /* A run of blocks of one kind; blocks are aligned to ZB in the whole
     * source, so the first and last of a piece may be shorter. */
    while (i < p->len) {
      bl = MIN (zb - (p->off + i) % zb, p->len - i);
      z = copy_is_zero (buf + i, bl);
      if (zero >= 0 && z != zero)
        break;
      zero = z;
      i += bl;
    }
    if (zero)
      r = do_zero (j, p->off + start, i - start, buf + start);
    else
      r = do_write (j, buf + start, p->off + start, i - start);
    if (r < 0)
      return r;
  }
  return 0;
}

struct work {
  struct workq_item wq;
  struct job *j;
  size_t i;
};

static void
copy_piece (struct workq_item *it)
{
  struct work *w = workq_entry (it, struct work, wq);
  struct job *j = w->j;
  struct piece *p = &j->p[w->i];
  void *buf;
  ssize_t n;
  int r = 0;

  if (failed (j))
    return;
  if ((buf = get_buf (j)) == NULL) {
    set_failed (j, vbk_errno (-ENOMEM, "copy: buffer"));
    return;
  }
  if (!p->data)
    r = do_zero (j, p->off, p->len, buf);
  else if ((n = j->src->ops->pread (j->src->h, buf, p->len, p->off)) < 0)
    r = (int) n;
  else {
    j->read += p->len;
    r = write_piece (j, p, buf);
  }
  if (r < 0)
    set_failed (j, r);
  else
    j->done += p->len;
  put_buf (j, buf);
}

static void
tick (void *arg)
{
  struct job *j = arg;

  copy_progress_update (&j->prog, j->done, 0);
  if (j->o->interrupted && j->o->interrupted () && !failed (j)) {
    vbk_set_error ("interrupted");
    set_failed (j, -EINTR);
  }
}

int
copy_run (struct copy_endpoint *src, struct copy_endpoint *dst,
          const struct copy_opts *o, struct copy_result *res)
{
  struct job j = { .src = src, .dst = dst, .o = o };
  struct workq *q = NULL;
  struct work *works = NULL;
  uint64_t start = now_mono_ns (), total = 0, data = 0;
  unsigned threads = o->threads ? o->threads : THREADS_DEFAULT;
  size_t i;
  int r;

  j.piece = o->piece ? o->piece : PIECE_DEFAULT;
  j.size = src->ops->size (src->h);
  if (dst->ops->pwrite == NULL)
    return vbk_errno (-EROFS, "copy: %s", dst->name);
  pthread_mutex_init (&j.lock, NULL);
  if ((r = plan (&j)) < 0)
    goto out;
  for (i = 0; i < j.n; i++) {
    total += j.p[i].len;
    if (j.p[i].data)
      data += j.p[i].len;
  }
  total += j.skipped;
  log_debug ("copy %s -> %s: %zu pieces, %llu bytes, %u threads", src->name,
             dst->name, j.n, (unsigned long long) total, threads);
  j.bufs = calloc (threads + 2 * threads + 1, sizeof *j.bufs);
  works = calloc (j.n ? j.n : 1, sizeof *works);
  if (j.bufs == NULL || works == NULL) {
    r = vbk_errno (-ENOMEM, "copy");
    goto out;
  }
  j.done = j.skipped;
  copy_progress_start (&j.prog, o->progress, o->label, total);
  {
    struct workq_opts wo = { .name = "copy", .threads = threads,
                             .max_queued = 2 * threads };

    if ((r = workq_new (&wo, &q)) < 0)
      goto out;
  }
  for (i = 0; i < j.n && !failed (&j); i++) {
    works[i] = (struct work) { .j = &j, .i = i };
    while (workq_submit_timed (q, &works[i].wq, copy_piece, TICK_NS)
           == -EAGAIN)
      tick (&j);
    tick (&j);
  }
  while (workq_drain (q, TICK_NS) == -ETIMEDOUT)
    tick (&j);
  workq_free (q);
  q = NULL;
  /* A signal during the last pieces still stops the copy. */
  tick (&j);
  if ((r = failed (&j)) == 0 && dst->ops->flush)
    r = dst->ops->flush (dst->h);
  else if (r < 0)
    vbk_set_error ("%s", j.msg);
  copy_progress_update (&j.prog, j.done, 1);
 out:
  if (res) {
    res->total = total;
    res->read = j.read;
    res->written = j.written;
    res->zeroed = j.zeroed;
    res->holes = total - data;
    res->elapsed_ns = now_mono_ns () - start;
  }
  for (i = 0; i < j.nbufs; i++)
    free (j.bufs[i]);
  free (j.bufs);
  free (works);
  free (j.p);
  pthread_mutex_destroy (&j.lock);
  return r;
}
