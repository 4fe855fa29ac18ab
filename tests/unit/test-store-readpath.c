/* SPDX-License-Identifier: MIT
 *
 * test-store-readpath.c - the local store's asynchronous reads: small
 * reads of cached data complete on the caller's thread, reads of data
 * not in the page cache are handed to a worker (RWF_NOWAIT's EAGAIN),
 * and every path returns the right bytes.
 *
 * DESIGN
 * Local store only (the split is the local store's own).  A read is
 * "inline" when its callback ran on the calling thread before
 * store_aio_read returned.  Data is taken out of the page cache with
 * posix_fadvise(POSIX_FADV_DONTNEED) after a flush (clean pages only go),
 * and mincore() on a mapping of the object file confirms it is gone; a
 * file system that keeps the pages anyway (tmpfs) skips that part, as
 * nothing there can wait for a disk.  Whether an uncached read went to a
 * worker is only printed: RWF_NOWAIT starts readahead without waiting,
 * and a fast disk may finish it first (asserting it would be a timing
 * assertion).  A cached read must complete inline.  Correctness is
 * asserted on every path: bytes, zeros past the end of the object file,
 * -ENOENT.
 */
/* VBK_TEST_LINKS: vbkstore vbktestutil */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "store/store.h"
#include "testutil.h"

#define KiB 1024u
#define MiB (1024u * 1024u)
#define HEAD STORE_SNAP_HEAD

struct op {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int calls;
  ssize_t ret;
  pthread_t thread;             /* where the callback ran */
};

static void
op_init (struct op *o)
{
  memset (o, 0, sizeof *o);
  pthread_mutex_init (&o->lock, NULL);
  pthread_cond_init (&o->cond, NULL);
}

static void
op_cb (void *arg, ssize_t ret)
{
  struct op *o = arg;

  pthread_mutex_lock (&o->lock);
  o->calls++;
  o->ret = ret;
  o->thread = pthread_self ();
  pthread_cond_broadcast (&o->cond);
  pthread_mutex_unlock (&o->lock);
}

/* Waits (at most 30 s) for the callback; fails the test without it. */
static void
op_wait (struct op *o, const char *what)
{
  struct timespec ts;

  clock_gettime (CLOCK_REALTIME, &ts);
  ts.tv_sec += 30;
  pthread_mutex_lock (&o->lock);
  while (o->calls == 0)
    if (pthread_cond_timedwait (&o->cond, &o->lock, &ts) == ETIMEDOUT)
      break;
  pthread_mutex_unlock (&o->lock);
  if (o->calls != 1)
    fail_msg ("%s: the callback ran %d times", what, o->calls);
}

/* Bytes of pattern SEED at object offset OFF onwards. */
static void
fill (uint8_t *buf, size_t len, uint64_t off, unsigned seed)
{
  size_t i;

  for (i = 0; i < len; i++)
    buf[i] = (uint8_t) (((off + i) * 131 + seed * 7 + ((off + i) >> 12))
                        & 0xff);
}

static void
check (const uint8_t *got, uint64_t off, size_t len, unsigned seed,
       const char *what)
{
  uint8_t *exp = malloc (len);
  size_t i;

  assert_non_null (exp);
  fill (exp, len, off, seed);
  for (i = 0; i < len; i++)
    if (got[i] != exp[i])
      fail_msg ("%s: byte %zu of %zu is 0x%02x, expected 0x%02x", what, i,
                len, got[i], exp[i]);
  free (exp);
}

/* The object file of OID (a plain name) in the fixture's store. */
static void
obj_path (const struct test_fixture *fx, const char *oid, char *buf,
          size_t len)
{
  assert_int_equal (strncmp (fx->uri, "local:", 6), 0);
  snprintf (buf, len, "%s/obj/%s", fx->uri + 6, oid);
}

/* Writes LEN bytes of pattern SEED to OID and flushes. */
static void
put (struct store *st, const char *oid, size_t len, unsigned seed)
{
  uint8_t *buf = malloc (len);

  assert_non_null (buf);
  fill (buf, len, 0, seed);
  if (store_write (st, oid, buf, len, 0, 0) < 0)
    fail_msg ("write %s: %s", oid, vbk_error ());
  if (store_flush (st) < 0)
    fail_msg ("flush: %s", vbk_error ());
  free (buf);
}

/* Reads asynchronously into BUF; returns whether the callback ran on
 * this thread before store_aio_read returned.  Fails the test unless
 * the read returns LEN. */
static bool
aio_read (struct store *st, const char *oid, void *buf, size_t len,
          uint64_t off, const char *what)
{
  struct op o;
  bool inline_done;
  int r;

  op_init (&o);
  r = store_aio_read (st, oid, buf, len, off, HEAD, op_cb, &o);
  if (r < 0)
    fail_msg ("%s: store_aio_read: %s", what, vbk_error ());
  pthread_mutex_lock (&o.lock);
  inline_done = o.calls == 1 && pthread_equal (o.thread, pthread_self ());
  pthread_mutex_unlock (&o.lock);
  op_wait (&o, what);
  if (o.ret != (ssize_t) len)
    fail_msg ("%s: completed with %zd, expected %zu", what, o.ret, len);
  return inline_done;
}

/* Drops PATH's clean pages (LEN bytes) from the page cache; returns
 * whether none is left.  Readahead started by an earlier read may still
 * be adding pages: drop again (at most 50 times) until mincore() finds
 * the whole file gone. */
static bool
evict (const char *path, size_t len)
{
  long pg = sysconf (_SC_PAGESIZE);
  size_t npg = (len + (size_t) pg - 1) / (size_t) pg, i;
  unsigned char *vec = malloc (npg);
  bool gone = false;
  void *map;
  int fd = open (path, O_RDONLY | O_CLOEXEC), k;

  assert_true (fd >= 0);
  assert_non_null (vec);
  map = mmap (NULL, len, PROT_READ, MAP_SHARED, fd, 0);
  assert_true (map != MAP_FAILED);
  for (k = 0; k < 50 && !gone; k++) {
    struct timespec ts = { 0, 10 * 1000000 };

    assert_int_equal (posix_fadvise (fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    nanosleep (&ts, NULL);
    assert_int_equal (posix_fadvise (fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    assert_int_equal (mincore (map, len, vec), 0);
    gone = true;
    for (i = 0; i < npg; i++)
      if (vec[i] & 1)
        gone = false;
  }
  munmap (map, len);
  close (fd);
  free (vec);
  return gone;
}

/* Small reads of cached data complete on the caller's thread with the
 * right bytes; so do reads wholly past the end of the object file
 * (zeros), and reads of missing objects (-ENOENT). */
static void
test_cached_inline (void **state)
{
  struct test_fixture *fx = *state;
  struct store *st = fx->st;
  uint8_t *buf = malloc (64 * KiB);
  struct op o;
  int r;

  assert_non_null (buf);
  put (st, "rp.hot", 256 * KiB, 1);

  memset (buf, 0xa5, 64 * KiB);
  if (!aio_read (st, "rp.hot", buf, 4 * KiB, 8 * KiB, "cached 4 KiB read"))
    fail_msg ("a cached 4 KiB read did not complete on the caller's thread");
  check (buf, 8 * KiB, 4 * KiB, 1, "cached 4 KiB read");

  memset (buf, 0xa5, 64 * KiB);
  if (!aio_read (st, "rp.hot", buf, 64 * KiB, 3 * KiB + 5,
                 "cached unaligned 64 KiB read"))
    fail_msg ("a cached 64 KiB read did not complete on the caller's "
              "thread");
  check (buf, 3 * KiB + 5, 64 * KiB, 1, "cached unaligned 64 KiB read");

  /* Past the end of the file: zeros. */
  memset (buf, 0xa5, 64 * KiB);
  aio_read (st, "rp.hot", buf, 16 * KiB, 1 * MiB, "read past the end");
  for (size_t i = 0; i < 16 * KiB; i++)
    if (buf[i] != 0)
      fail_msg ("read past the end: byte %zu is 0x%02x", i, buf[i]);

  /* Across the end of the file: bytes, then zeros. */
  memset (buf, 0xa5, 64 * KiB);
  aio_read (st, "rp.hot", buf, 8 * KiB, 252 * KiB, "read across the end");
  check (buf, 252 * KiB, 4 * KiB, 1, "read across the end (data)");
  for (size_t i = 4 * KiB; i < 8 * KiB; i++)
    if (buf[i] != 0)
      fail_msg ("read across the end: byte %zu is 0x%02x", i, buf[i]);

  /* A missing object. */
  op_init (&o);
  r = store_aio_read (st, "rp.none", buf, 4 * KiB, 0, HEAD, op_cb, &o);
  if (r == 0) {
    op_wait (&o, "read of a missing object");
    r = (int) o.ret;
  }
  if (r != -ENOENT)
    fail_msg ("read of a missing object: %d, expected -ENOENT", r);
  free (buf);
}

/* A read of data that is not in the page cache goes to a worker (the
 * caller's thread never waits for the disk) and returns the right bytes;
 * so do large reads. */
static void
test_uncached_worker (void **state)
{
  struct test_fixture *fx = *state;
  struct store *st = fx->st;
  uint8_t *buf = malloc (1 * MiB);
  char path[4200];
  bool inline_done;
  int k, uncached_inline = 0, tried = 0;

  assert_non_null (buf);
  put (st, "rp.cold", 1 * MiB, 2);
  obj_path (fx, "rp.cold", path, sizeof path);

  /* Large reads: right bytes, whatever thread. */
  memset (buf, 0xa5, 1 * MiB);
  aio_read (st, "rp.cold", buf, 1 * MiB, 0, "1 MiB read");
  check (buf, 0, 1 * MiB, 2, "1 MiB read");

  for (k = 0; k < 4; k++) {
    uint64_t off = (uint64_t) (37 + 61 * k) * 4 * KiB;

    if (!evict (path, 1 * MiB)) {
      /* The file system keeps its pages (tmpfs): no read waits. */
      print_message ("page cache not dropped here: uncached part skipped\n");
      break;
    }
    tried++;
    memset (buf, 0xa5, 4 * KiB);
    inline_done = aio_read (st, "rp.cold", buf, 4 * KiB, off,
                            "uncached 4 KiB read");
    check (buf, off, 4 * KiB, 2, "uncached 4 KiB read");
    /* Not asserted: RWF_NOWAIT starts readahead without waiting for
     * it, and a fast disk may have finished it before the page cache
     * is looked at again, so such a read may well complete inline. */
    uncached_inline += inline_done;
    /* Now cached: inline again. */
    memset (buf, 0xa5, 4 * KiB);
    if (!aio_read (st, "rp.cold", buf, 4 * KiB, off, "re-read"))
      fail_msg ("a re-read of data just read did not complete on the "
                "caller's thread");
    check (buf, off, 4 * KiB, 2, "re-read");
  }
  print_message ("uncached reads: %d of %d completed on the caller's "
                 "thread\n", uncached_inline, tried);
  free (buf);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_cached_inline, test_fixture_setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_uncached_worker,
                                     test_fixture_setup,
                                     test_fixture_teardown),
  };

  if (strcmp (test_store_kind (), "local") != 0) {
    print_message ("local store only\n");
    return 0;
  }
  return cmocka_run_group_tests (tests, NULL, NULL);
}
