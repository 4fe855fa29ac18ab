/* SPDX-License-Identifier: MIT
 *
 * test-image-commit.c - first writes to new objects on the local store
 * cost no sync: their change-log records and map bytes are buffered
 * writes made before the data write starts (image/objmap.c), made
 * durable by the next FLUSH together with the data; a sync that fails
 * there fails that FLUSH and every later one.
 *
 * DESIGN
 * Linked with the sync interposer (tests/shim/syncshim.c), which counts,
 * logs (VBK_SYNCSHIM_LOG: one line per sync with the file's path) or
 * fails the syncs of chosen files.  The counts are exact: the store's
 * background syncer only syncs files evicted from its cache, and these
 * images have far fewer objects than the cache holds.  Waits are bounded
 * (30 s) only so that a broken image fails instead of hanging; no
 * assertion depends on timing.
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
#include <unistd.h>

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

/* Lines of the shim's log (VBK_SYNCSHIM_LOG) naming a path that contains
 * WHAT, from byte FROM on. */
static int
synced (const char *log, long from, const char *what)
{
  char line[4300];
  FILE *f = fopen (log, "re");
  int n = 0;

  if (f == NULL)
    return 0;
  fseek (f, from, SEEK_SET);
  while (fgets (line, sizeof line, f))
    if (strstr (line, " start ") && strstr (line, what))
      n++;
  fclose (f);
  return n;
}

static long
log_size (const char *log)
{
  FILE *f = fopen (log, "re");
  long n;

  if (f == NULL)
    return 0;
  fseek (f, 0, SEEK_END);
  n = ftell (f);
  fclose (f);
  return n;
}

/* Runs a batch of NW first writes (asynchronous) and one synchronous
 * first write to object 62; all must succeed. */
static struct batch *
batch_run (struct image *img, const char *one)
{
  struct batch *b = batch_start (img);
  int k;

  pthread_join (b->t, NULL);
  if (!wait_for (b, all_done, 30000))
    fail_msg ("only %d of %d writes completed", count_done (b), NW);
  for (k = 0; k < NW; k++) {
    assert_int_equal (b->submit_ret[k], 0);
    assert_int_equal (b->ret[k], 0);
  }
  assert_int_equal (image_write (img, one, BS, 62 * (uint64_t) OBJSZ + BS,
                                 0), 0);
  return b;
}

/* First writes to NW new objects (asynchronous, and one synchronous) of
 * an image without snapshots issue no fdatasync or fsync at all: their
 * change-log records and map bytes are buffered writes.  The FLUSH after
 * them syncs the change log, the map, its summary level, the new data
 * files and obj/. */
static void
test_first_writes_no_sync (void **state)
{
  struct test_fixture *fx = *state;
  char log[4096], back[BS], one[BS];
  struct image *img;
  struct batch *b;
  unsigned long before;
  long at;
  int k;

  snprintf (log, sizeof log, "/tmp/vbk-syncs.%ld.log", (long) getpid ());
  unlink (log);
  setenv ("VBK_SYNCSHIM_LOG", log, 1);
  memset (one, 'z', BS);
  assert_int_equal (image_open (fx->st, "c", 0, &img), 0);
  syncshim_set ("*", 0, 0);
  before = syncshim_started ();
  at = log_size (log);
  b = batch_run (img, one);
  if (syncshim_started () != before)
    fail_msg ("%lu syncs during %d first writes (none expected)",
              syncshim_started () - before, NW + 1);

  assert_int_equal (image_flush (img), 0);
  assert_true (synced (log, at, "vbk_changes") >= 1);
  assert_true (synced (log, at, "vbk_object_map") >= 1);
  assert_true (synced (log, at, ".l1") >= 1);
  assert_true (synced (log, at, "vbk_data") >= NW + 1);
  assert_true (synced (log, at, "/obj\n") >= 1);
  syncshim_set (NULL, 0, 0);
  for (k = 0; k < NW; k++) {
    assert_int_equal (image_read (img, back, BS,
                                  (uint64_t) k * 3 * OBJSZ + 8192), BS);
    assert_memory_equal (back, b->buf[k], BS);
  }
  image_close (img);
  unsetenv ("VBK_SYNCSHIM_LOG");
  unlink (log);
  free (b);
}

/* With a snapshot, the first writes of the new interval still sync
 * neither the change log, nor the map, nor obj/ (the store syncs its
 * copy-on-write records of new objects, which is its business), and a
 * diff from the snapshot lists exactly the objects written. */
static void
test_first_writes_after_snapshot (void **state)
{
  struct test_fixture *fx = *state;
  char log[4096], one[BS];
  struct image *img;
  struct batch *b;
  struct seen seen;
  long at;
  int k;

  snprintf (log, sizeof log, "/tmp/vbk-syncs.%ld.log", (long) getpid ());
  unlink (log);
  setenv ("VBK_SYNCSHIM_LOG", log, 1);
  memset (one, 'z', BS);
  assert_int_equal (image_open (fx->st, "c", 0, &img), 0);
  assert_int_equal (image_snap_create (img, "s0", NULL), 0);
  /* The first change of the log and the map after a snapshot copies
   * them for it (once per interval): one first write takes that. */
  assert_int_equal (image_write (img, one, BS, 63 * (uint64_t) OBJSZ, 0), 0);
  assert_int_equal (image_flush (img), 0);
  syncshim_set ("*", 0, 0);
  at = log_size (log);
  b = batch_run (img, one);
  assert_int_equal (synced (log, at, "obj/vbk_changes"), 0);
  assert_int_equal (synced (log, at, "obj/vbk_object_map"), 0);
  assert_int_equal (synced (log, at, "/obj\n"), 0);
  assert_int_equal (synced (log, at, "obj/vbk_data"), 0);
  syncshim_set (NULL, 0, 0);
  assert_int_equal (image_snap_create (img, "s", NULL), 0);
  image_close (img);
  memset (&seen, 0, sizeof seen);
  assert_int_equal (image_diff (fx->st, "c", "s0", "s", diff_cb, &seen), 0);
  for (k = 0; k < 64; k++)
    assert_int_equal (seen.objs[k], (k % 3 == 0 && k / 3 < NW) || k >= 62);
  unsetenv ("VBK_SYNCSHIM_LOG");
  unlink (log);
  free (b);
}

/* A FLUSH after first writes fails when the sync of the change log, of
 * the map, or of obj/ (the new files' names) fails, and so does every
 * later FLUSH (sticky).  The image opened again after that knows its
 * last flush failed: its change tracking is reset. */
static void
test_flush_fails_sticky (void **state)
{
  static const char *const what[] = { "vbk_changes", "vbk_object_map",
                                      "/obj$" };
  struct test_fixture *fx = *state;
  char back[BS], name[16];
  struct store *st;
  struct image *img;
  unsigned flags;
  size_t w;
  int k;

  for (w = 0; w < sizeof what / sizeof what[0]; w++) {
    snprintf (name, sizeof name, "f%zu", w);
    assert_int_equal (image_create (fx->st, name, 64 * (uint64_t) OBJSZ,
                                    OBJSZ), 0);
    /* A store handle of its own: the sticky error stays with it. */
    assert_int_equal (store_open (fx->uri, &st), 0);
    assert_int_equal (image_open (st, name, 0, &img), 0);
    assert_int_equal (image_snap_create (img, "s0", NULL), 0);
    assert_int_equal (image_flush (img), 0);
    memset (back, 'q', BS);
    for (k = 0; k < 4; k++)
      assert_int_equal (image_write (img, back, BS,
                                     (uint64_t) (k * 5 + 1) * OBJSZ, 0), 0);
    syncshim_set (what[w], 0, EIO);
    expect_err (-EIO, image_flush (img));
    syncshim_set (NULL, 0, 0);
    expect_err (-EIO, image_flush (img));
    image_close (img);
    store_close (st);

    assert_int_equal (store_open (fx->uri, &st), 0);
    assert_int_equal (image_open (st, name, 0, &img), 0);
    for (k = 0; k < 4; k++)
      assert_int_not_equal (image_object_state (img, (uint64_t) k * 5 + 1),
                            IMAGE_OBJ_ABSENT);
    assert_int_equal (image_flush (img), 0);
    image_close (img);
    assert_int_equal (image_diff_flags (st, name, "s0", NULL, diff_cb,
                                        &(struct seen) { { 0 } }, &flags), 0);
    assert_int_equal (flags, IMAGE_DIFF_CBT_RESET);
    store_close (st);
  }
}

#define T(name) cmocka_unit_test_setup_teardown (name, setup, teardown)

int
main (void)
{
  const struct CMUnitTest tests[] = {
    T (test_first_writes_no_sync),
    T (test_first_writes_after_snapshot),
    T (test_flush_fails_sticky),
  };

  setenv ("VBK_TEST_STORE_KIND", "local", 1);
  return cmocka_run_group_tests_name ("image-commit", tests, NULL, NULL);
}
