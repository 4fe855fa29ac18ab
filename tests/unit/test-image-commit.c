/* SPDX-License-Identifier: MIT
 *
 * test-image-commit.c - first writes of asynchronous I/O wait for their
 * change-log entries on the commit queue (image/commit.c), not on the
 * caller's thread, are committed in groups, never start before the log
 * is durable, and fail together when the commit fails.
 *
 * DESIGN
 * Linked with the sync interposer (tests/shim/syncshim.c), which holds or
 * fails the syncs of the change log (files named vbk_changes.*) of an
 * image on a local store.  While the log's sync is held, a correct image
 * returns from image_aio_write at once and completes none of the writes;
 * waits for progress are bounded (30 s) only so that a broken image fails
 * instead of hanging.  No assertion depends on timing in the passing
 * direction.
 */
/* VBK_TEST_LINKS: vbksyncshim vbkimage vbktestutil */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "common/error.h"
#include "image/image.h"
#include "shim/syncshim.h"
#include "testutil.h"

#define MiB (1024 * 1024)
#define OBJSZ (4 * MiB)
#define NW 16
#define BS 4096

/* The store fixture of testutil, the shim reset, and an image "c". */
static int
setup (void **state)
{
  struct test_fixture *fx;

  syncshim_set (NULL, 0, 0);
  syncshim_gate (0);
  if (test_fixture_setup (state) < 0)
    return -1;
  fx = *state;
  if (image_create (fx->st, "c", 64 * (uint64_t) OBJSZ, OBJSZ) < 0) {
    test_fixture_teardown (state);
    return -1;
  }
  return 0;
}

static int
teardown (void **state)
{
  syncshim_set (NULL, 0, 0);
  syncshim_gate (0);
  return test_fixture_teardown (state);
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;

struct batch {
  struct image *img;
  char buf[NW][BS];
  ssize_t ret[NW];
  int submit_ret[NW];
  int completed, submitted;
  pthread_t t;
};

static void
write_done (void *arg, ssize_t ret)
{
  ssize_t *slot = arg;

  pthread_mutex_lock (&lock);
  *slot = ret;
  pthread_cond_broadcast (&cond);
  pthread_mutex_unlock (&lock);
}

static int
count_done (struct batch *b)
{
  int k, n = 0;

  for (k = 0; k < NW; k++)
    n += b->ret[k] != 1;
  return n;
}

/* Writes NW blocks, one in each of NW objects never written before. */
static void *
submitter (void *arg)
{
  struct batch *b = arg;
  int k, r;

  for (k = 0; k < NW; k++) {
    r = image_aio_write (b->img, b->buf[k], BS,
                         (uint64_t) k * 3 * OBJSZ + 8192, 0, write_done,
                         &b->ret[k]);
    pthread_mutex_lock (&lock);
    b->submit_ret[k] = r;
    if (r < 0)
      b->ret[k] = r;
    pthread_mutex_unlock (&lock);
  }
  pthread_mutex_lock (&lock);
  b->submitted = 1;
  pthread_cond_broadcast (&cond);
  pthread_mutex_unlock (&lock);
  return NULL;
}

/* Waits until PRED (B) holds, at most MS; returns whether it does. */
static int
wait_for (struct batch *b, int (*pred) (struct batch *), unsigned ms)
{
  struct timespec ts;
  int ok;

  clock_gettime (CLOCK_REALTIME, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (long) (ms % 1000) * 1000000;
  if (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  pthread_mutex_lock (&lock);
  while (!(ok = pred (b)))
    if (pthread_cond_timedwait (&cond, &lock, &ts) != 0) {
      ok = pred (b);
      break;
    }
  pthread_mutex_unlock (&lock);
  return ok;
}

static int
is_submitted (struct batch *b)
{
  return b->submitted;
}

static int
all_done (struct batch *b)
{
  return count_done (b) == NW;
}

static struct batch *
batch_start (struct image *img)
{
  struct batch *b = calloc (1, sizeof *b);
  int k;

  assert_non_null (b);
  b->img = img;
  for (k = 0; k < NW; k++) {
    memset (b->buf[k], 'A' + k, BS);
    b->ret[k] = 1;              /* not completed */
  }
  assert_int_equal (pthread_create (&b->t, NULL, submitter, b), 0);
  return b;
}

struct seen {
  uint64_t objs[64];
};

static int
diff_cb (void *arg, uint64_t off, uint64_t len, int allocated)
{
  struct seen *s = arg;
  uint64_t o;

  if (allocated)
    for (o = off / OBJSZ; o < (off + len + OBJSZ - 1) / OBJSZ && o < 64; o++)
      s->objs[o] = 1;
  return 0;
}

/* The first writes to NW new objects while the log's sync is held: every
 * image_aio_write returns, none completes until the sync is let go, and
 * then they all complete after at most two log syncs (the one held and
 * one for all the others).  The data and the change log are right. */
static void
test_first_writes_grouped (void **state)
{
  struct test_fixture *fx = *state;
  struct image *img;
  struct batch *b;
  struct seen seen;
  unsigned long before;
  char back[BS];
  int k, submitted;

  assert_int_equal (image_open (fx->st, "c", 0, &img), 0);
  assert_int_equal (image_snap_create (img, "s0", NULL), 0);
  /* Nothing of the log left dirty by the snapshot, for the store's
   * background syncer to sync while we count. */
  assert_int_equal (image_flush (img), 0);
  syncshim_set ("vbk_changes", 0, 0);
  syncshim_gate (1);
  before = syncshim_started ();
  b = batch_start (img);
  submitted = wait_for (b, is_submitted, 30000);
  pthread_mutex_lock (&lock);
  k = count_done (b);
  pthread_mutex_unlock (&lock);
  syncshim_gate (0);
  pthread_join (b->t, NULL);
  if (!submitted)
    fail_msg ("image_aio_write waited for the change log's sync");
  if (k != 0)
    fail_msg ("%d writes completed before their log entries were durable",
              k);
  for (k = 0; k < NW; k++)
    assert_int_equal (b->submit_ret[k], 0);
  if (!wait_for (b, all_done, 30000))
    fail_msg ("only %d of %d writes completed", count_done (b), NW);
  for (k = 0; k < NW; k++)
    assert_int_equal (b->ret[k], 0);
  if (syncshim_started () - before > 2)
    fail_msg ("%lu syncs of the change log for %d first writes",
              syncshim_started () - before, NW);

  for (k = 0; k < NW; k++) {
    assert_int_equal (image_read (img, back, BS,
                                  (uint64_t) k * 3 * OBJSZ + 8192), BS);
    assert_memory_equal (back, b->buf[k], BS);
  }
  assert_int_equal (image_snap_create (img, "s", NULL), 0);
  image_close (img);
  memset (&seen, 0, sizeof seen);
  assert_int_equal (image_diff (fx->st, "c", "s0", "s", diff_cb, &seen), 0);
  for (k = 0; k < 64; k++)
    assert_int_equal (seen.objs[k], k % 3 == 0 && k / 3 < NW);
  free (b);
}

/* A commit that fails fails the writes that waited for it: each one's
 * callback gets the error, and none of their data is written. */
static void
test_failed_commit_fails_queued (void **state)
{
  struct test_fixture *fx = *state;
  struct image *img;
  struct batch *b;
  char back[BS], zero[BS];
  int k, submitted;

  assert_int_equal (image_open (fx->st, "c", 0, &img), 0);
  syncshim_set ("vbk_changes", 0, EIO);
  syncshim_gate (1);
  b = batch_start (img);
  submitted = wait_for (b, is_submitted, 30000);
  syncshim_gate (0);
  pthread_join (b->t, NULL);
  if (!submitted)
    fail_msg ("image_aio_write waited for the change log's sync");
  for (k = 0; k < NW; k++)
    assert_int_equal (b->submit_ret[k], 0);
  if (!wait_for (b, all_done, 30000))
    fail_msg ("only %d of %d writes completed", count_done (b), NW);
  syncshim_set (NULL, 0, 0);
  memset (zero, 0, sizeof zero);
  for (k = 0; k < NW; k++) {
    assert_true (b->ret[k] < 0);
    assert_int_equal (image_read (img, back, BS,
                                  (uint64_t) k * 3 * OBJSZ + 8192), BS);
    assert_memory_equal (back, zero, BS);
  }
  image_close (img);
  free (b);
}

#define T(name) cmocka_unit_test_setup_teardown (name, setup, teardown)

int
main (void)
{
  const struct CMUnitTest tests[] = {
    T (test_first_writes_grouped),
    T (test_failed_commit_fails_queued),
  };

  setenv ("VBK_TEST_STORE_KIND", "local", 1);
  return cmocka_run_group_tests_name ("image-commit", tests, NULL, NULL);
}
