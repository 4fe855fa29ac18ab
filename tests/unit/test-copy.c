/* SPDX-License-Identifier: MIT
 *
 * test-copy.c - the copy engine's loop against endpoints that record
 * every call: zero pieces and aligned zero blocks are left out (or
 * zeroed when the destination is not already zero), holes are not read
 * and need no piece when the destination reads as zeros, a worker's
 * error reaches the caller with its message, an interruption stops the
 * copy, a read-only destination is refused, and the file descriptor
 * endpoint (import, export) refuses what is not a file and a file that
 * shrank; a file endpoint with COPY_FILE_DIRECT writes aligned pieces
 * around the page cache and the rest (an unaligned buffer, offset or
 * tail) through it, and the file holds exactly what was copied.
 */
/* VBK_TEST_LINKS: vbkcopy */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "copy/copy.h"

#define K 1024u
#define M (1024u * 1024u)

/* ---- A recording endpoint over memory ------------------------------------ */

struct call {
  char op;                      /* 'r'ead, 'w'rite, 'z'ero */
  uint64_t off, len;
};

struct rec {
  unsigned char *buf;
  uint64_t size;
  /* Extents: [ext[i].off, +len) allocated, the rest holes; n < 0: no
   * extents operation. */
  struct copy_range ext[8];
  int next;
  uint64_t fail_at;             /* a read covering this offset fails */
  int fail;
  pthread_mutex_t lock;
  struct call calls[4096];
  unsigned ncalls;
};

static void
record (struct rec *r, char op, uint64_t off, uint64_t len)
{
  pthread_mutex_lock (&r->lock);
  if (r->ncalls < 4096)
    r->calls[r->ncalls++] = (struct call) { op, off, len };
  pthread_mutex_unlock (&r->lock);
}

static ssize_t
rec_pread (void *h, void *buf, size_t len, uint64_t off)
{
  struct rec *r = h;

  record (r, 'r', off, len);
  if (r->fail && r->fail_at >= off && r->fail_at < off + len)
    return vbk_errno (-EIO, "test: read at %llu", (unsigned long long) off);
  memcpy (buf, r->buf + off, len);
  return len;
}

static int
rec_pwrite (void *h, const void *buf, size_t len, uint64_t off)
{
  struct rec *r = h;

  record (r, 'w', off, len);
  memcpy (r->buf + off, buf, len);
  return 0;
}

static int
rec_zero (void *h, uint64_t off, uint64_t len)
{
  struct rec *r = h;

  record (r, 'z', off, len);
  memset (r->buf + off, 0, len);
  return 0;
}

static int
rec_extents (void *h, uint64_t off, uint64_t len, image_extent_cb cb,
             void *arg)
{
  struct rec *r = h;
  uint64_t pos = off, end = off + len;
  int i, e;

  for (i = 0; i < r->next && pos < end; i++) {
    if (r->ext[i].off > pos && (e = cb (arg, pos, r->ext[i].off - pos, 0)))
      return e;
    if ((e = cb (arg, r->ext[i].off, r->ext[i].len, 1)))
      return e;
    pos = r->ext[i].off + r->ext[i].len;
  }
  if (pos < end)
    return cb (arg, pos, end - pos, 0);
  return 0;
}

static uint64_t
rec_size (void *h)
{
  return ((struct rec *) h)->size;
}

static const struct copy_ops rec_ops = {
  .kind = "test", .pread = rec_pread, .pwrite = rec_pwrite,
  .zero = rec_zero, .size = rec_size,
};
static const struct copy_ops rec_ext_ops = {
  .kind = "test", .pread = rec_pread, .pwrite = rec_pwrite,
  .zero = rec_zero, .size = rec_size, .extents = rec_extents,
};
static const struct copy_ops rec_ro_ops = {
  .kind = "test", .pread = rec_pread, .size = rec_size,
};

static struct rec *
rec_new (uint64_t size)
{
  struct rec *r = calloc (1, sizeof *r);

  assert_non_null (r);
  r->buf = calloc (1, size);
  assert_non_null (r->buf);
  r->size = size;
  pthread_mutex_init (&r->lock, NULL);
  return r;
}

static void
rec_free (struct rec *r)
{
  pthread_mutex_destroy (&r->lock);
  free (r->buf);
  free (r);
}

static int
cmp_call (const void *a, const void *b)
{
  const struct call *x = a, *y = b;

  if (x->op != y->op)
    return x->op - y->op;
  return x->off < y->off ? -1 : x->off > y->off;
}

/* The calls of kind OP, sorted by offset, as "off+len" in units of K. */
static void
calls_of (struct rec *r, char op, char *out, size_t len)
{
  unsigned i;
  size_t n = 0;

  qsort (r->calls, r->ncalls, sizeof r->calls[0], cmp_call);
  out[0] = '\0';
  for (i = 0; i < r->ncalls; i++)
    if (r->calls[i].op == op)
      n += snprintf (out + n, len - n, "%s%llu+%llu", n ? " " : "",
                     (unsigned long long) (r->calls[i].off / K),
                     (unsigned long long) (r->calls[i].len / K));
}

/* ---- Tests ------------------------------------------------------------------ */

/* 3 MiB in pieces of 1 MiB, zero blocks of 64 KiB: only the runs of
 * blocks with data are written; a piece of zeros is not written at all. */
static void
test_zero_blocks (void **state)
{
  struct rec *s = rec_new (3 * M), *d = rec_new (3 * M);
  struct copy_endpoint src = { &rec_ops, s, "src" };
  struct copy_endpoint dst = { &rec_ops, d, "dst" };
  struct copy_opts o = { .piece = M, .threads = 3, .skip_zero = 1,
                         .zero_block = 64 * K, .dst_zeroed = 1 };
  struct copy_result res;
  char got[512];

  s->buf[0] = 1;                        /* block 0 */
  s->buf[64 * K] = 2;                   /* block 1: one run with 0 */
  s->buf[512 * K - 1] = 3;              /* block 7 */
  s->buf[M + 100 * K] = 4;              /* block 17 */
  memset (s->buf + M + 960 * K, 5, 64 * K);     /* block 31, the last */
  /* The third piece: zeros. */
  assert_int_equal (copy_run (&src, &dst, &o, &res), 0);
  assert_memory_equal (s->buf, d->buf, 3 * M);
  calls_of (d, 'w', got, sizeof got);
  assert_string_equal (got, "0+128 448+64 1088+64 1984+64");
  calls_of (d, 'z', got, sizeof got);
  assert_string_equal (got, "");
  assert_int_equal (res.total, 3 * M);
  assert_int_equal (res.read, 3 * M);
  assert_int_equal (res.written, 320 * K);
  assert_int_equal (res.zeroed, 0);
  assert_int_equal (res.holes, 0);

  /* Without zero_block: whole pieces only (the zero piece still not). */
  d->ncalls = 0;
  memset (d->buf, 0, 3 * M);
  o.zero_block = 0;
  assert_int_equal (copy_run (&src, &dst, &o, &res), 0);
  assert_memory_equal (s->buf, d->buf, 3 * M);
  calls_of (d, 'w', got, sizeof got);
  assert_string_equal (got, "0+1024 1024+1024");
  rec_free (s);
  rec_free (d);
}

/* A destination that does not read as zeros: the zero runs are zeroed
 * (over garbage), and the blocks are aligned to the whole source, not to
 * the piece (an odd piece size). */
static void
test_zero_blocks_dirty_dst (void **state)
{
  struct rec *s = rec_new (M), *d = rec_new (M);
  struct copy_endpoint src = { &rec_ops, s, "src" };
  struct copy_endpoint dst = { &rec_ops, d, "dst" };
  struct copy_opts o = { .piece = 96 * K, .threads = 2, .skip_zero = 1,
                         .zero_block = 64 * K };
  struct copy_result res;
  char got[1024];

  memset (d->buf, 0xee, M);
  s->buf[100 * K] = 1;                  /* piece 1 [96,192), block 1 */
  assert_int_equal (copy_run (&src, &dst, &o, &res), 0);
  assert_memory_equal (s->buf, d->buf, M);
  calls_of (d, 'w', got, sizeof got);
  /* Piece 1 = [96,192): block 1 is [64,128), so [96,128) is written. */
  assert_string_equal (got, "96+32");
  calls_of (d, 'z', got, sizeof got);
  assert_string_equal (got, "0+96 128+64 192+96 288+96 384+96 480+96 "
                       "576+96 672+96 768+96 864+96 960+64");
  assert_int_equal (res.written, 32 * K);
  assert_int_equal (res.zeroed, M - 32 * K);
  rec_free (s);
  rec_free (d);
}

/* Holes are never read; with dst_zeroed they need no piece at all, and
 * without they are zeroed. */
static void
test_holes (void **state)
{
  struct rec *s = rec_new (64 * M), *d = rec_new (64 * M);
  struct copy_endpoint src = { &rec_ext_ops, s, "src" };
  struct copy_endpoint dst = { &rec_ops, d, "dst" };
  struct copy_opts o = { .piece = 4 * M, .dst_zeroed = 1 };
  struct copy_result res;
  char got[512];

  s->ext[0] = (struct copy_range) { 5 * M, 2 * M };     /* two pieces */
  s->ext[1] = (struct copy_range) { 60 * M, 4 * M };
  s->next = 2;
  memset (s->buf + 5 * M, 7, 2 * M);
  memset (s->buf + 60 * M, 8, 4 * M);
  assert_int_equal (copy_run (&src, &dst, &o, &res), 0);
  assert_memory_equal (s->buf, d->buf, 64 * M);
  calls_of (s, 'r', got, sizeof got);
  assert_string_equal (got, "5120+2048 61440+4096");
  calls_of (d, 'z', got, sizeof got);
  assert_string_equal (got, "");
  assert_int_equal (res.total, 64 * M);
  assert_int_equal (res.read, 6 * M);
  assert_int_equal (res.holes, 58 * M);

  /* The destination has garbage: every hole is zeroed, piece by piece. */
  s->ncalls = d->ncalls = 0;
  memset (d->buf, 0xee, 64 * M);
  o.dst_zeroed = 0;
  o.piece = 16 * M;
  assert_int_equal (copy_run (&src, &dst, &o, &res), 0);
  assert_memory_equal (s->buf, d->buf, 64 * M);
  calls_of (s, 'r', got, sizeof got);
  assert_string_equal (got, "5120+2048 61440+4096");
  calls_of (d, 'z', got, sizeof got);
  assert_string_equal (got, "0+5120 7168+9216 16384+16384 32768+16384 "
                       "49152+12288");
  assert_int_equal (res.zeroed, 58 * M);
  rec_free (s);
  rec_free (d);
}

/* A worker's error reaches the caller's thread with its message; the
 * destination is not flushed. */
static void
test_worker_error (void **state)
{
  struct rec *s = rec_new (32 * M), *d = rec_new (32 * M);
  struct copy_endpoint src = { &rec_ops, s, "src" };
  struct copy_endpoint dst = { &rec_ops, d, "dst" };
  struct copy_opts o = { .piece = M, .threads = 4 };
  struct copy_result res;

  s->fail = 1;
  s->fail_at = 7 * M + 5;
  vbk_clear_error ();
  assert_int_equal (copy_run (&src, &dst, &o, &res), -EIO);
  assert_string_equal (vbk_error (), "test: read at 7340032: "
                       "Input/output error");
  assert_true (res.read < 32 * M);
  rec_free (s);
  rec_free (d);
}

static int
always (void)
{
  return 1;
}

static void
test_interrupted (void **state)
{
  struct rec *s = rec_new (8 * M), *d = rec_new (8 * M);
  struct copy_endpoint src = { &rec_ops, s, "src" };
  struct copy_endpoint dst = { &rec_ops, d, "dst" };
  struct copy_endpoint ro = { &rec_ro_ops, d, "ro" };
  struct copy_opts o = { .piece = M, .interrupted = always };

  assert_int_equal (copy_run (&src, &dst, &o, NULL), -EINTR);
  assert_string_equal (vbk_error (), "interrupted");
  o.interrupted = NULL;
  assert_int_equal (copy_run (&src, &ro, &o, NULL), -EROFS);
  assert_string_equal (vbk_error (), "copy: ro: Read-only file system");
  rec_free (s);
  rec_free (d);
}

/* The descriptor endpoint: a file's size, its holes, and a file that
 * shrinks during the copy; a pipe is refused. */
static void
test_fd_endpoint (void **state)
{
  char path[] = "/tmp/test-copy.XXXXXX";
  struct rec *d = rec_new (4 * M);
  struct copy_endpoint *ep, dst = { &rec_ops, d, "dst" };
  struct copy_opts o = { .piece = M, .dst_zeroed = 1 };
  struct copy_result res;
  char buf[4096];
  int fd, p[2];

  fd = mkstemp (path);
  assert_true (fd >= 0);
  unlink (path);
  memset (buf, 9, sizeof buf);
  assert_int_equal (ftruncate (fd, 4 * M), 0);
  assert_int_equal (pwrite (fd, buf, sizeof buf, 3 * M), sizeof buf);
  assert_int_equal (copy_endpoint_fd (fd, "f.raw", &ep), 0);
  assert_int_equal (ep->ops->size (ep->h), 4 * M);
  assert_int_equal (copy_run (ep, &dst, &o, &res), 0);
  assert_int_equal (d->buf[3 * M], 9);
  /* The file system knows its holes here (tmpfs, ext4, xfs): one
   * block is read. */
  assert_true (res.read < M);
  copy_endpoint_close (ep);
  /* Borrowed: still open. */
  assert_int_equal (pwrite (fd, buf, sizeof buf, 0), sizeof buf);

  /* Shrunk before the copy plans, or while it reads. */
  assert_int_equal (copy_endpoint_fd (fd, "f.raw", &ep), 0);
  assert_int_equal (ftruncate (fd, 3 * M + 100), 0);
  vbk_clear_error ();
  assert_int_equal (copy_run (ep, &dst, &o, &res), -EIO);
  assert_string_equal (vbk_error (), "f.raw: the file shrank to 3145828 "
                       "bytes (it had 4194304): Input/output error");
  assert_int_equal (ep->ops->pread (ep->h, buf, sizeof buf, 3 * M), -EIO);
  assert_string_equal (vbk_error (), "f.raw: unexpected end of file at "
                       "3145828 (did it shrink during the copy?)");
  copy_endpoint_close (ep);
  close (fd);

  assert_int_equal (pipe (p), 0);
  assert_int_equal (copy_endpoint_fd (p[0], "a pipe", &ep), -EINVAL);
  assert_string_equal (vbk_error (),
                       "a pipe: not a regular file or block device");
  close (p[0]);
  close (p[1]);
  rec_free (d);
}

/* Pages of [OFF, OFF+LEN) of FD in the page cache. */
static size_t
resident (int fd, uint64_t off, size_t len)
{
  long pg = sysconf (_SC_PAGESIZE);
  unsigned char vec[1024];
  size_t n = len / pg, i, r = 0;
  void *p;

  assert_true (n <= sizeof vec);
  p = mmap (NULL, len, PROT_READ, MAP_SHARED, fd, off);
  assert_true (p != MAP_FAILED);
  assert_int_equal (mincore (p, len, vec), 0);
  for (i = 0; i < n; i++)
    r += vec[i] & 1;
  munmap (p, len);
  return r;
}

/* COPY_FILE_DIRECT: a copy into a file of an unaligned size, with zero
 * pieces; then single writes with an unaligned buffer, offset, length. */
static void
test_file_direct (void **state)
{
  char path[] = "/tmp/test-copy-direct.XXXXXX";
  uint64_t size = 3 * M + 1000;
  unsigned char *src = malloc (size), *back = malloc (size);
  struct copy_endpoint *s, *d;
  struct copy_opts o = { .piece = M, .skip_zero = 1, .dst_zeroed = 1 };
  struct copy_result res;
  uint64_t i;
  int fd, direct;

  for (i = 0; i < size; i++)
    src[i] = (unsigned char) (i * 7 + i / 4099);
  memset (src + M, 0, M);                       /* a zero piece */
  fd = mkstemp (path);
  assert_true (fd >= 0);
  close (fd);
  /* Can this file system write this file directly at all? */
  fd = open (path, O_WRONLY | O_DIRECT);
  direct = fd >= 0;
  if (fd >= 0)
    close (fd);
  assert_int_equal (copy_endpoint_memory (src, size, &s), 0);
  assert_int_equal (copy_endpoint_file (path, COPY_FILE_WRITE
                                        | COPY_FILE_CREATE | COPY_FILE_DIRECT,
                                        size, &d), 0);
  assert_int_equal (copy_run (s, d, &o, &res), 0);
  assert_int_equal (res.written, 2 * M + 1000);
  fd = open (path, O_RDONLY);
  assert_true (fd >= 0);
  /* The whole pieces went around the page cache (checked before anything
   * reads them back). */
  if (direct) {
    assert_int_equal (resident (fd, 0, M), 0);
    assert_int_equal (resident (fd, 2 * M, M), 0);
  }
  assert_int_equal (pread (fd, back, size, 0), (ssize_t) size);
  assert_memory_equal (back, src, size);

  /* Single writes: an unaligned buffer; an unaligned length (an aligned
   * head and a short tail); an unaligned offset. */
  memset (src, 0xa5, 3 * 8192);
  assert_int_equal (d->ops->pwrite (d->h, src + 1, 8192, 0), 0);
  assert_int_equal (d->ops->pwrite (d->h, src, 8192 + 100, M), 0);
  assert_int_equal (d->ops->pwrite (d->h, src, 5000, 2 * M + 3), 0);
  assert_int_equal (d->ops->flush (d->h), 0);
  assert_int_equal (pread (fd, back, size, 0), (ssize_t) size);
  assert_memory_equal (back, src + 1, 8192);
  assert_memory_equal (back + M, src, 8192 + 100);
  assert_int_equal (back[M + 8192 + 100], 0);
  assert_memory_equal (back + 2 * M + 3, src, 5000);
  close (fd);
  copy_endpoint_close (s);
  copy_endpoint_close (d);
  unlink (path);
  free (src);
  free (back);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_zero_blocks),
    cmocka_unit_test (test_zero_blocks_dirty_dst),
    cmocka_unit_test (test_holes),
    cmocka_unit_test (test_worker_error),
    cmocka_unit_test (test_interrupted),
    cmocka_unit_test (test_fd_endpoint),
    cmocka_unit_test (test_file_direct),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
