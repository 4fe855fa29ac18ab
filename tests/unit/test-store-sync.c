/* SPDX-License-Identifier: MIT
 *
 * test-store-sync.c - durability of the local store's flush: concurrent
 * flushes, failed syncs, files evicted from the fd cache while dirty.
 *
 * DESIGN
 * The program is linked with the sync interposer (tests/shim/syncshim.c),
 * which holds, delays or fails fdatasync/fsync of chosen files.  Each test
 * opens a fresh local store; VBK_LOCAL_MAX_FILES shrinks the fd cache where
 * a test needs evictions (600 objects are written as well, more than the
 * old fixed cache of 512, so evictions happen whatever the budget).  No
 * assertion depends on timing in the passing direction: "has not returned
 * yet" is checked while the shim holds a sync, which a correct store must
 * wait for however long it takes; waits for progress are bounded (30 s)
 * only so that a broken store fails instead of hanging.
 */
/* VBK_TEST_LINKS: vbksyncshim vbkstore vbktestutil */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "shim/syncshim.h"
#include "store/store.h"
#include "testutil.h"

#define NOBJ 600

static void
sleep_ms (unsigned ms)
{
  struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000 };

  while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
    ;
}

static uint64_t
mono_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The store fixture of testutil, with the shim reset around it. */
static int
setup (void **state)
{
  syncshim_set (NULL, 0, 0);
  syncshim_gate (0);
  return test_fixture_setup (state);
}

static int
teardown (void **state)
{
  syncshim_set (NULL, 0, 0);
  syncshim_gate (0);
  unsetenv ("VBK_LOCAL_MAX_FILES");
  return test_fixture_teardown (state);
}

/* Reopens the store (so that environment settings apply). */
static void
reopen (struct test_fixture *fx)
{
  store_close (fx->st);
  fx->st = NULL;
  if (store_open (fx->uri, &fx->st) < 0)
    fail_msg ("reopening %s: %s", fx->uri, vbk_error ());
}

/* ---- A call running on another thread --------------------------------- */

struct bg {
  pthread_t t;
  struct store *st;
  int what;                     /* 0 flush, 1 write NOBJ objects */
  const char *prefix;
  int done;                     /* under bg_lock */
  int ret;
};

static pthread_mutex_t bg_lock = PTHREAD_MUTEX_INITIALIZER;

static void *
bg_main (void *arg)
{
  struct bg *b = arg;
  char oid[64], data[4096];
  int rc = 0, i;

  if (b->what == 0)
    rc = store_flush (b->st);
  else {
    memset (data, 'w', sizeof data);
    for (i = 0; i < NOBJ && rc == 0; i++) {
      snprintf (oid, sizeof oid, "%s.%d", b->prefix, i);
      rc = store_write (b->st, oid, data, sizeof data, 0, 0);
    }
  }
  pthread_mutex_lock (&bg_lock);
  b->ret = rc;
  b->done = 1;
  pthread_mutex_unlock (&bg_lock);
  return NULL;
}

static struct bg *
bg_start (struct store *st, int what, const char *prefix)
{
  struct bg *b = calloc (1, sizeof *b);

  assert_non_null (b);
  b->st = st;
  b->what = what;
  b->prefix = prefix;
  assert_int_equal (pthread_create (&b->t, NULL, bg_main, b), 0);
  return b;
}

static int
bg_done (struct bg *b)
{
  int d;

  pthread_mutex_lock (&bg_lock);
  d = b->done;
  pthread_mutex_unlock (&bg_lock);
  return d;
}

/* Waits up to MS for B to finish; returns whether it did. */
static int
bg_wait (struct bg *b, unsigned ms)
{
  uint64_t t0 = mono_ms ();

  while (!bg_done (b) && mono_ms () - t0 < ms)
    sleep_ms (10);
  return bg_done (b);
}

/* Joins B (opening the gate first so it can finish); returns its result. */
static int
bg_join (struct bg *b)
{
  int rc;

  syncshim_gate (0);
  pthread_join (b->t, NULL);
  rc = b->ret;
  free (b);
  return rc;
}

static void
wait_started (unsigned long n)
{
  uint64_t t0 = mono_ms ();

  while (syncshim_started () < n && mono_ms () - t0 < 30000)
    sleep_ms (5);
  if (syncshim_started () < n)
    fail_msg ("only %lu held syncs started, expected %lu",
              syncshim_started (), n);
}

/* ---- Tests ------------------------------------------------------------ */

/* A flush must not return while a sync that covers writes completed
 * before it is still running on another thread (NBD multi-conn: the
 * second connection's FLUSH was acknowledged before the data was
 * synced). */
static void
test_concurrent_flush_waits (void **state)
{
  struct test_fixture *fx = *state;
  struct store *other;
  struct bg *a, *b;

  assert_int_equal (store_clone (fx->st, &other), 0);
  assert_int_equal (store_write (fx->st, "slow.1", "data", 4, 0, 0), 0);

  syncshim_set ("slow", 0, 0);
  syncshim_gate (1);
  a = bg_start (fx->st, 0, NULL);
  wait_started (1);             /* A is syncing slow.1, held */

  /* B: no writes of its own since; slow.1 completed before B began. */
  b = bg_start (other, 0, NULL);
  if (bg_wait (b, 500)) {
    int rb = b->ret;
    bg_join (a);
    bg_join (b);
    store_close (other);
    fail_msg ("a second flush returned %d while the first one's sync of "
              "data written before it was still held", rb);
  }
  assert_false (bg_done (a));
  assert_int_equal (syncshim_done (), 0);
  assert_int_equal (bg_join (a), 0);
  assert_int_equal (bg_join (b), 0);
  assert_true (syncshim_done () >= 1);

  /* A write completed while a sync runs is not covered by that sync: the
   * flush after it syncs again. */
  syncshim_gate (1);
  assert_int_equal (store_write (fx->st, "slow.2", "more", 4, 0, 0), 0);
  a = bg_start (fx->st, 0, NULL);
  wait_started (2);
  assert_int_equal (store_write (fx->st, "slow.2", "MORE", 4, 0, 0), 0);
  b = bg_start (other, 0, NULL);
  if (bg_wait (b, 500)) {
    int rb = b->ret;
    bg_join (a);
    bg_join (b);
    store_close (other);
    fail_msg ("a flush returned %d before syncing a write completed during "
              "another flush's sync", rb);
  }
  syncshim_gate (0);
  assert_int_equal (bg_join (a), 0);
  assert_int_equal (bg_join (b), 0);
  if (syncshim_started () < 3)
    fail_msg ("the second flush did not sync again (%lu syncs)",
              syncshim_started ());
  store_close (other);
}

/* After a failed sync, every flush fails until the store is reopened. */
static void
test_sync_error_sticky (void **state)
{
  struct test_fixture *fx = *state;
  char buf[4];

  assert_int_equal (store_write (fx->st, "bad.1", "data", 4, 0, 0), 0);
  syncshim_set ("bad", 0, EIO);
  vbk_clear_error ();
  assert_int_equal (store_flush (fx->st), -EIO);
  assert_true (vbk_error ()[0] != '\0');
  vbk_clear_error ();
  assert_int_equal (store_flush (fx->st), -EIO);
  assert_true (strstr (vbk_error (), "bad.1") != NULL);

  /* The disk is healthy again: still failing, no new sync can tell
   * whether the lost writes reached it. */
  syncshim_set (NULL, 0, 0);
  assert_int_equal (store_flush (fx->st), -EIO);
  assert_int_equal (store_write (fx->st, "good", "g", 1, 0, 0), 0);
  assert_int_equal (store_flush (fx->st), -EIO);
  {
    struct store *c;
    assert_int_equal (store_clone (fx->st, &c), 0);
    assert_int_equal (store_flush (c), -EIO);
    store_close (c);
  }

  /* A failed synchronous write is sticky as well. */
  reopen (fx);
  assert_int_equal (store_flush (fx->st), 0);
  assert_int_equal (store_write (fx->st, "bad.2", "x", 1, 0, 0), 0);
  syncshim_set ("bad.2", 0, EIO);
  assert_int_equal (store_write (fx->st, "bad.2", "y", 1, 1,
                                 STORE_WRITE_SYNC), -EIO);
  syncshim_set (NULL, 0, 0);
  assert_int_equal (store_flush (fx->st), -EIO);

  reopen (fx);
  assert_int_equal (store_flush (fx->st), 0);
  assert_int_equal (store_read (fx->st, "good", buf, 1, 0, STORE_SNAP_HEAD),
                    1);
  assert_int_equal (buf[0], 'g');
}

/* A dirty file evicted from the fd cache whose sync fails makes the next
 * flush fail. */
static void
test_evicted_sync_error (void **state)
{
  struct test_fixture *fx = *state;
  struct bg *w;

  setenv ("VBK_LOCAL_MAX_FILES", "8", 1);
  reopen (fx);
  assert_int_equal (store_write (fx->st, "bad.e", "data", 4, 0, 0), 0);
  syncshim_set ("bad", 0, EIO);
  w = bg_start (fx->st, 1, "o");
  if (!bg_wait (w, 60000))
    fail_msg ("writing %d objects did not finish", NOBJ);
  assert_int_equal (bg_join (w), 0);
  vbk_clear_error ();
  assert_int_equal (store_flush (fx->st), -EIO);
  assert_true (vbk_error ()[0] != '\0');
  assert_int_equal (store_flush (fx->st), -EIO);
}

/* Writes never wait for a sync, even when they evict dirty files, and a
 * flush covers the evicted files: it returns only once their syncs are
 * done. */
static void
test_evicted_dirty_flushed (void **state)
{
  struct test_fixture *fx = *state;
  struct bg *w, *f;
  unsigned long started;

  setenv ("VBK_LOCAL_MAX_FILES", "8", 1);
  reopen (fx);
  syncshim_set ("obj/ev.", 0, 0);
  syncshim_gate (1);
  w = bg_start (fx->st, 1, "ev");
  if (!bg_wait (w, 30000)) {
    bg_join (w);
    fail_msg ("writes that evict dirty files waited for a held sync");
  }
  assert_int_equal (bg_join (w), 0);
  syncshim_gate (1);

  f = bg_start (fx->st, 0, NULL);
  if (bg_wait (f, 500)) {
    int rc = f->ret;
    bg_join (f);
    fail_msg ("flush returned %d while syncs of evicted files were held",
              rc);
  }
  assert_int_equal (bg_join (f), 0);
  started = syncshim_started ();
  if (started < NOBJ)
    fail_msg ("only %lu of %d written files were synced", started, NOBJ);
  assert_int_equal (syncshim_done (), started);
}

/* Dirty files evicted from the cache are synced several at a time: a
 * disk with more objects than the cache, being filled, evicts a dirty
 * file for every new object, and one sync after another held the writer
 * to the pace of a single sync.  With every sync of those files held,
 * more than one must have started. */
static void
test_evicted_synced_in_parallel (void **state)
{
  struct test_fixture *fx = *state;
  unsigned long base;
  struct bg *w;

  setenv ("VBK_LOCAL_MAX_FILES", "8", 1);
  reopen (fx);
  syncshim_set ("obj/par.", 0, 0);
  syncshim_gate (1);
  base = syncshim_started ();   /* the counters run on across tests */
  w = bg_start (fx->st, 1, "par");
  wait_started (base + 2);
  assert_int_equal (bg_join (w), 0);
  assert_int_equal (store_flush (fx->st), 0);
  assert_int_equal (syncshim_done (), syncshim_started ());
}

/* Syncer batches finish out of order: a flush waits for an older batch
 * that is still syncing even when every newer one has finished.  The
 * first object written is the first evicted (the oldest batch); only its
 * sync is held. */
static void
test_evicted_older_batch_waited (void **state)
{
  struct test_fixture *fx = *state;
  char data[4096];
  unsigned long base;
  struct bg *w, *f;

  setenv ("VBK_LOCAL_MAX_FILES", "8", 1);
  reopen (fx);
  memset (data, 'h', sizeof data);
  syncshim_set ("obj/held.", 0, 0);
  syncshim_gate (1);
  base = syncshim_started ();   /* the counters run on across tests */
  assert_int_equal (store_write (fx->st, "held.0", data, sizeof data, 0, 0),
                    0);
  w = bg_start (fx->st, 1, "later");
  if (!bg_wait (w, 30000)) {
    bg_join (w);
    fail_msg ("writes that evict dirty files waited for a held sync");
  }
  wait_started (base + 1);
  /* Done: joined without opening the gate (bg_join would). */
  pthread_join (w->t, NULL);
  assert_int_equal (w->ret, 0);
  free (w);

  f = bg_start (fx->st, 0, NULL);
  if (bg_wait (f, 500)) {
    int rc = f->ret;
    bg_join (f);
    fail_msg ("flush returned %d while the sync of the first evicted file "
              "was held", rc);
  }
  assert_int_equal (bg_join (f), 0);
  assert_int_equal (syncshim_done (), syncshim_started ());
}

/* Dirty files of objects that another client removed (this one then
 * drops its whole fd cache) are not synced, by the syncer or by a flush:
 * nobody can read them again.  obj/ is synced instead, so the removal
 * stays done.  The files of objects still there are synced as before. */
static void
test_removed_not_synced (void **state)
{
  struct test_fixture *fx = *state;
  struct store *other;
  char oid[32], buf[4096];
  unsigned long before;
  int i;

  memset (buf, 'r', sizeof buf);
  for (i = 0; i < 20; i++) {
    snprintf (oid, sizeof oid, "rm.%d", i);
    assert_int_equal (store_write (fx->st, oid, buf, sizeof buf, 0, 0), 0);
    snprintf (oid, sizeof oid, "keep.%d", i);
    assert_int_equal (store_write (fx->st, oid, buf, sizeof buf, 0, 0), 0);
  }
  assert_int_equal (store_open (fx->uri, &other), 0);
  for (i = 0; i < 20; i++) {
    snprintf (oid, sizeof oid, "rm.%d", i);
    assert_int_equal (store_remove (other, oid), 0);
  }
  store_close (other);

  /* The next write sees the removals and drops the cache: every dirty
   * file goes to the syncer, and the flush covers them all. */
  syncshim_set ("obj/rm.", 0, 0);
  before = syncshim_started ();
  assert_int_equal (store_write (fx->st, "x", buf, sizeof buf, 0, 0), 0);
  assert_int_equal (store_flush (fx->st), 0);
  assert_int_equal (syncshim_started (), before);

  /* Against the same scene with the objects kept: their files are. */
  for (i = 0; i < 20; i++) {
    snprintf (oid, sizeof oid, "keep.%d", i);
    assert_int_equal (store_write (fx->st, oid, buf, sizeof buf, 4096, 0),
                      0);
  }
  assert_int_equal (store_open (fx->uri, &other), 0);
  assert_int_equal (store_remove (other, "x"), 0);
  store_close (other);
  syncshim_set ("obj/keep.", 0, 0);
  before = syncshim_started ();
  assert_int_equal (store_write (fx->st, "y", buf, sizeof buf, 0, 0), 0);
  assert_int_equal (store_flush (fx->st), 0);
  assert_int_equal (syncshim_started (), before + 20);
  for (i = 0; i < 20; i++) {
    snprintf (oid, sizeof oid, "rm.%d", i);
    expect_err (-ENOENT, store_read (fx->st, oid, buf, sizeof buf, 0,
                                     STORE_SNAP_HEAD));
  }
}

/* ---- Synchronous writes and the obj/ directory ----------------------- */

/* A synchronous write to a file whose name is durable (written and
 * flushed before) syncs that file only, not obj/, even though other
 * objects were created since; files created since are covered by the
 * next flush, which does sync obj/. */
static void
test_sync_write_old_file (void **state)
{
  struct test_fixture *fx = *state;
  char buf[4096], oid[32];
  unsigned long before;
  int i;

  memset (buf, 'a', sizeof buf);
  assert_int_equal (store_write (fx->st, "old", buf, sizeof buf, 0, 0), 0);
  assert_int_equal (store_flush (fx->st), 0);
  for (i = 0; i < 20; i++) {
    snprintf (oid, sizeof oid, "new.%d", i);
    assert_int_equal (store_write (fx->st, oid, buf, sizeof buf, 0, 0), 0);
  }
  syncshim_set ("/obj$", 0, 0);
  before = syncshim_started ();
  assert_int_equal (store_write (fx->st, "old", buf, sizeof buf, 4096,
                                 STORE_WRITE_SYNC), 0);
  assert_int_equal (syncshim_started (), before);
  assert_int_equal (store_flush (fx->st), 0);
  assert_int_equal (syncshim_started (), before + 1);
}

/* A synchronous write to a file this process created makes its name
 * durable (obj/ synced) before it returns, also when the file left the fd
 * cache in between and was opened again; once obj/ is synced, the next
 * one to the same file does not sync obj/ again. */
static void
test_sync_write_new_file (void **state)
{
  struct test_fixture *fx = *state;
  char buf[4096], oid[32];
  unsigned long before;
  int i;

  setenv ("VBK_LOCAL_MAX_FILES", "8", 1);
  reopen (fx);
  memset (buf, 'b', sizeof buf);
  syncshim_set ("/obj$", 0, 0);
  before = syncshim_started ();
  assert_int_equal (store_write (fx->st, "fresh", buf, sizeof buf, 0,
                                 STORE_WRITE_SYNC), 0);
  assert_int_equal (syncshim_started (), before + 1);
  assert_int_equal (store_write (fx->st, "fresh", buf, sizeof buf, 4096,
                                 STORE_WRITE_SYNC), 0);
  assert_int_equal (syncshim_started (), before + 1);

  /* Created without a sync, pushed out of the fd cache by others. */
  assert_int_equal (store_write (fx->st, "evicted", buf, sizeof buf, 0, 0),
                    0);
  for (i = 0; i < 64; i++) {
    snprintf (oid, sizeof oid, "other.%d", i);
    assert_int_equal (store_write (fx->st, oid, buf, sizeof buf, 0, 0), 0);
  }
  before = syncshim_started ();
  assert_int_equal (store_write (fx->st, "evicted", buf, sizeof buf, 4096,
                                 STORE_WRITE_SYNC), 0);
  assert_int_equal (syncshim_started (), before + 1);
}

/* ---- Deferred creates ------------------------------------------------- */

/* Objects created with STORE_WRITE_DEFER never wait for a sync: 50 are
 * created while every sync under obj is held (the syncer, which syncs
 * them in the background, waits at the gate).  Once it opens, the flush
 * makes sure each file was synced, exactly once between the syncer and
 * itself, and obj/ once (51 syncs under obj); a second flush has nothing
 * left to sync. */
static void
test_deferred_create_syncs (void **state)
{
  struct test_fixture *fx = *state;
  char oid[32], data[8192];
  unsigned long before;
  int i;

  memset (data, 'd', sizeof data);
  assert_int_equal (store_flush (fx->st), 0);
  syncshim_set ("/obj", 0, 0);
  syncshim_gate (1);
  before = syncshim_started ();
  for (i = 0; i < 50; i++) {
    snprintf (oid, sizeof oid, "dfr.%d", i);
    assert_int_equal (store_create_excl (fx->st, oid, data, sizeof data,
                                         STORE_WRITE_DEFER), 0);
  }
  syncshim_gate (0);
  assert_int_equal (store_flush (fx->st), 0);
  if (syncshim_started () != before + 51)
    fail_msg ("50 deferred creates and a flush ran %lu syncs under obj, "
              "expected 51 (each file once, obj/ once)",
              syncshim_started () - before);
  assert_int_equal (syncshim_done (), syncshim_started ());
  before = syncshim_started ();
  assert_int_equal (store_flush (fx->st), 0);
  assert_int_equal (syncshim_started (), before);
}

/* The flush returns only once the syncs of deferred creates' files are
 * done, whoever runs them (the syncer in the background, or the flush);
 * a failed sync of one fails the flush, naming it, and every flush after
 * it. */
static void
test_deferred_create_flush (void **state)
{
  struct test_fixture *fx = *state;
  char oid[32], data[4096];
  unsigned long before;
  struct bg *f;
  int i;

  setenv ("VBK_LOCAL_MAX_FILES", "8", 1);
  reopen (fx);
  memset (data, 'e', sizeof data);
  syncshim_set ("/obj/held.", 0, 0);
  before = syncshim_started ();
  syncshim_gate (1);
  for (i = 0; i < 40; i++) {
    snprintf (oid, sizeof oid, "held.%d", i);
    assert_int_equal (store_create_excl (fx->st, oid, data, sizeof data,
                                         STORE_WRITE_DEFER), 0);
  }
  f = bg_start (fx->st, 0, NULL);
  wait_started (before + 1);
  if (bg_wait (f, 500)) {
    int rc = f->ret;
    bg_join (f);
    fail_msg ("flush returned %d while a deferred create's sync was held",
              rc);
  }
  assert_int_equal (bg_join (f), 0);
  assert_int_equal (syncshim_started () - before, 40);
  assert_int_equal (syncshim_done (), syncshim_started ());

  syncshim_set ("/obj/fail.17", 0, EIO);
  for (i = 0; i < 20; i++) {
    snprintf (oid, sizeof oid, "fail.%d", i);
    assert_int_equal (store_create_excl (fx->st, oid, data, sizeof data,
                                         STORE_WRITE_DEFER), 0);
  }
  vbk_clear_error ();
  assert_int_equal (store_flush (fx->st), -EIO);
  if (strstr (vbk_error (), "fail.17") == NULL)
    fail_msg ("the failed flush does not name fail.17: %s", vbk_error ());
  syncshim_set (NULL, 0, 0);
  assert_int_equal (store_flush (fx->st), -EIO);
}

/* ---- Fencing a stopped writer ---------------------------------------- */

static int
read_line (int fd, char *buf, size_t len)
{
  size_t n = 0;

  while (n + 1 < len && read (fd, buf + n, 1) == 1 && buf[n] != '\n')
    n++;
  buf[n] = '\0';
  return n > 0 ? 0 : -1;
}

static int
file_has (const char *path, const char *what)
{
  char buf[8192];
  FILE *f = fopen (path, "r");
  size_t n;

  if (f == NULL)
    return 0;
  n = fread (buf, 1, sizeof buf - 1, f);
  fclose (f);
  buf[n] = '\0';
  return strstr (buf, what) != NULL;
}

struct fence_call {
  pthread_t t;
  struct store *st;
  char client[STORE_CLIENT_MAX];
  int ret, done;
};

static void *
fence_main (void *arg)
{
  struct fence_call *fc = arg;
  int r = store_fence (fc->st, fc->client, 600);

  pthread_mutex_lock (&bg_lock);
  fc->ret = r;
  fc->done = 1;
  pthread_mutex_unlock (&bg_lock);
  return NULL;
}

/* A writer stopped (SIGSTOP) inside a change: store_fence does not wait
 * for it forever; it waits a bounded time, then kills it, so the change
 * can never land, and returns. */
static void
test_fence_stopped_writer (void **state)
{
  struct test_fixture *fx = *state;
  char log[] = "/tmp/vbk-syncshim-XXXXXX", id[STORE_CLIENT_MAX];
  struct fence_call *fc;
  int p[2], status, lfd, done = 0;
  uint64_t t0;
  pid_t pid;

  lfd = mkstemp (log);
  assert_true (lfd >= 0);
  close (lfd);
  setenv ("VBK_SYNCSHIM_LOG", log, 1);
  setenv ("VBK_LOCAL_FENCE_WAIT_MS", "300", 1);
  assert_int_equal (pipe (p), 0);
  syncshim_set ("obj/stall", 0, 0);
  syncshim_gate (1);            /* in the child too: its sync never ends */
  pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0) {
    struct store *c;
    if (store_open (fx->uri, &c) < 0)
      _exit (3);
    dprintf (p[1], "%s\n", store_client_id (c));
    store_write (c, "stall", "late", 4, 0, STORE_WRITE_SYNC);
    _exit (4);
  }
  syncshim_gate (0);
  close (p[1]);
  assert_int_equal (read_line (p[0], id, sizeof id), 0);
  close (p[0]);
  t0 = mono_ms ();
  while (!file_has (log, "obj/stall") && mono_ms () - t0 < 30000)
    sleep_ms (10);
  assert_true (file_has (log, "obj/stall"));    /* inside its change */
  assert_int_equal (kill (pid, SIGSTOP), 0);
  assert_int_equal (waitpid (pid, &status, WUNTRACED), pid);
  assert_true (WIFSTOPPED (status));

  fc = calloc (1, sizeof *fc);
  assert_non_null (fc);
  fc->st = fx->st;
  snprintf (fc->client, sizeof fc->client, "%s", id);
  assert_int_equal (pthread_create (&fc->t, NULL, fence_main, fc), 0);
  t0 = mono_ms ();
  while (mono_ms () - t0 < 30000) {
    pthread_mutex_lock (&bg_lock);
    done = fc->done;
    pthread_mutex_unlock (&bg_lock);
    if (done)
      break;
    sleep_ms (20);
  }
  if (!done) {
    kill (pid, SIGKILL);        /* lets the fence finish */
    pthread_join (fc->t, NULL);
    waitpid (pid, &status, 0);
    unlink (log);
    fail_msg ("store_fence of a client stopped inside a change did not "
              "return in 30 s");
  }
  pthread_join (fc->t, NULL);
  assert_int_equal (fc->ret, 0);
  free (fc);
  assert_int_equal (waitpid (pid, &status, 0), pid);
  assert_true (WIFSIGNALED (status) && WTERMSIG (status) == SIGKILL);
  unlink (log);
  unsetenv ("VBK_SYNCSHIM_LOG");
  unsetenv ("VBK_LOCAL_FENCE_WAIT_MS");
}

/* A writer stopped between changes: the fence returns at once and, when
 * the writer resumes, its next change fails and does not land. */
static void
test_fence_stopped_idle (void **state)
{
  struct test_fixture *fx = *state;
  char id[STORE_CLIENT_MAX], buf[8];
  int p[2], q[2], status;
  pid_t pid;

  assert_int_equal (pipe (p), 0);
  assert_int_equal (pipe (q), 0);
  pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0) {
    struct store *c;
    char go;
    int r;
    if (store_open (fx->uri, &c) < 0)
      _exit (3);
    if (store_write (c, "idle", "old!", 4, 0, 0) < 0)
      _exit (4);
    dprintf (p[1], "%s\n", store_client_id (c));
    if (read (q[0], &go, 1) != 1)
      _exit (5);
    r = store_write (c, "idle", "NEW!", 4, 0, 0);
    _exit (r == -ESHUTDOWN ? 0 : 6);
  }
  close (p[1]);
  close (q[0]);
  assert_int_equal (read_line (p[0], id, sizeof id), 0);
  close (p[0]);
  assert_int_equal (kill (pid, SIGSTOP), 0);
  assert_int_equal (waitpid (pid, &status, WUNTRACED), pid);
  assert_int_equal (store_fence (fx->st, id, 600), 0);
  assert_int_equal (kill (pid, SIGCONT), 0);
  assert_int_equal (write (q[1], "g", 1), 1);
  close (q[1]);
  assert_int_equal (waitpid (pid, &status, 0), pid);
  if (!WIFEXITED (status) || WEXITSTATUS (status) != 0)
    fail_msg ("the fenced child's write after it resumed: status 0x%x "
              "(exit 6: it landed)", status);
  assert_int_equal (store_read (fx->st, "idle", buf, 4, 0, STORE_SNAP_HEAD),
                    4);
  assert_memory_equal (buf, "old!", 4);
}

/* The fd cache follows RLIMIT_NOFILE: opening a store raises the soft
 * limit to the hard one. */
static void
test_rlimit_raised (void **state)
{
  struct test_fixture *fx = *state;
  struct rlimit rl, low;

  assert_int_equal (getrlimit (RLIMIT_NOFILE, &rl), 0);
  if (rl.rlim_max <= 256)
    skip ();
  low.rlim_cur = 256;
  low.rlim_max = rl.rlim_max;
  assert_int_equal (setrlimit (RLIMIT_NOFILE, &low), 0);
  reopen (fx);
  assert_int_equal (getrlimit (RLIMIT_NOFILE, &rl), 0);
  assert_true (rl.rlim_cur == rl.rlim_max);
}

#define T(name) cmocka_unit_test_setup_teardown (name, setup, teardown)

int
main (void)
{
  const struct CMUnitTest tests[] = {
    T (test_concurrent_flush_waits),
    T (test_sync_error_sticky),
    T (test_evicted_sync_error),
    T (test_evicted_dirty_flushed),
    T (test_evicted_synced_in_parallel),
    T (test_evicted_older_batch_waited),
    T (test_rlimit_raised),
    T (test_sync_write_old_file),
    T (test_sync_write_new_file),
    T (test_deferred_create_syncs),
    T (test_deferred_create_flush),
    T (test_fence_stopped_writer),
    T (test_fence_stopped_idle),
    T (test_removed_not_synced),
  };

  setenv ("VBK_TEST_STORE_KIND", "local", 1);
  return cmocka_run_group_tests_name ("store-sync", tests, NULL, NULL);
}
