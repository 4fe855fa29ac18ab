/* SPDX-License-Identifier: MIT
 *
 * test-snapshot.c - snapshots on each store backend (VBK_TEST_BACKENDS):
 * copy-on-write reads at a snapshot, changed-block diff exactly of the
 * objects written, diff after a crash (the map never under-reports),
 * rollback, removal, a crash at each store call of snapshot create,
 * remove and rollback (the diff never under-reports), and the snapshot
 * library: through a holder that serves commands, through a temporary
 * lease, consistency groups (and a failing group leaving nothing),
 * rollback refused while held.
 */
/* VBK_TEST_LINKS: vbksnapshot vbktestutil */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/error.h"
#include "image/image.h"
#include "locks/lease.h"
#include "snapshot/snapshot.h"
#include "testutil.h"

#define OBJ (64 * 1024)
#define NOBJ 32

/* The shared fixture's store, with an image "disk". */
static int
setup (void **state)
{
  struct test_fixture *f;

  if (test_fixture_setup (state) < 0)
    return -1;
  f = *state;
  assert_int_equal (image_create (f->st, "disk", NOBJ * OBJ, OBJ), 0);
  return 0;
}

static void
write_pattern (struct image *img, uint64_t objno, int c)
{
  char *buf = malloc (OBJ);

  memset (buf, c, OBJ);
  assert_int_equal (image_write (img, buf, OBJ, objno * OBJ, 0), 0);
  free (buf);
}

static void
expect_pattern (struct image *img, uint64_t objno, int c)
{
  char *buf = malloc (OBJ), *want = malloc (OBJ);

  memset (want, c, OBJ);
  assert_int_equal (image_read (img, buf, OBJ, objno * OBJ), OBJ);
  assert_memory_equal (buf, want, OBJ);
  free (buf);
  free (want);
}

struct ext_list {
  uint64_t off[64], len[64];
  int n;
};

static int
collect (void *arg, uint64_t off, uint64_t len, int alloc)
{
  struct ext_list *e = arg;

  assert_true (e->n < 64);
  e->off[e->n] = off;
  e->len[e->n] = len;
  e->n++;
  return 0;
}

static void
test_cow_and_diff (void **state)
{
  struct test_fixture *f = *state;
  struct image *img, *snap;
  struct image_snap *v;
  struct ext_list e = { .n = 0 };
  size_t n;

  assert_int_equal (image_open (f->st, "disk", 0, &img), 0);
  write_pattern (img, 0, 'a');
  write_pattern (img, 5, 'b');
  write_pattern (img, 6, 'c');
  assert_int_equal (image_flush (img), 0);
  assert_int_equal (image_snap_create (img, "s1", NULL), 0);
  assert_int_equal (image_snap_create (img, "s1", NULL), -EEXIST);

  /* After s1: objects 5 (rewritten), 9 and 10 (new), 6 discarded. */
  write_pattern (img, 5, 'B');
  write_pattern (img, 9, 'x');
  write_pattern (img, 10, 'y');
  assert_int_equal (image_discard (img, 6 * OBJ, OBJ, 0), 0);

  assert_int_equal (image_open_snap (f->st, "disk", "s1", &snap), 0);
  expect_pattern (snap, 0, 'a');
  expect_pattern (snap, 5, 'b');
  expect_pattern (snap, 6, 'c');
  expect_pattern (snap, 9, 0);
  char buf[16];
  assert_int_equal (image_write (snap, buf, 16, 0, 0), -EROFS);
  image_close (snap);
  expect_pattern (img, 5, 'B');
  expect_pattern (img, 6, 0);

  assert_int_equal (image_diff (f->st, "disk", "s1", NULL, collect, &e), 0);
  assert_int_equal (e.n, 2);
  assert_int_equal (e.off[0], 5 * OBJ);       /* 5 and 6 */
  assert_int_equal (e.len[0], 2 * OBJ);
  assert_int_equal (e.off[1], 9 * OBJ);       /* 9 and 10 */
  assert_int_equal (e.len[1], 2 * OBJ);

  /* s2, then one more write: diff s1..s2 and s2..head. */
  assert_int_equal (image_snap_create (img, "s2", NULL), 0);
  write_pattern (img, 20, 'z');
  e.n = 0;
  assert_int_equal (image_diff (f->st, "disk", "s1", "s2", collect, &e), 0);
  assert_int_equal (e.n, 2);
  e.n = 0;
  assert_int_equal (image_diff (f->st, "disk", "s2", NULL, collect, &e), 0);
  assert_int_equal (e.n, 1);
  assert_int_equal (e.off[0], 20 * OBJ);
  e.n = 0;
  assert_int_equal (image_diff (f->st, "disk", "s2", "s1", collect, &e),
                    -EINVAL);
  assert_int_equal (image_diff (f->st, "disk", "nosuch", NULL, collect, &e),
                    -ENOENT);

  assert_int_equal (image_snap_list (f->st, "disk", &v, &n), 0);
  assert_int_equal (n, 2);
  assert_string_equal (v[0].name, "s1");
  assert_string_equal (v[1].name, "s2");
  assert_true (v[0].id < v[1].id);
  assert_int_equal (v[0].size, NOBJ * OBJ);
  free (v);

  /* Removing s1 keeps s2 whole (it shares the unchanged objects). */
  assert_int_equal (image_snap_remove (f->st, "disk", "s1"), 0);
  assert_int_equal (image_snap_remove (f->st, "disk", "s1"), -ENOENT);
  assert_int_equal (image_open_snap (f->st, "disk", "s2", &snap), 0);
  expect_pattern (snap, 0, 'a');
  expect_pattern (snap, 5, 'B');
  expect_pattern (snap, 6, 0);
  expect_pattern (snap, 20, 0);
  image_close (snap);
  image_close (img);
}

static void
test_diff_after_crash_never_under_reports (void **state)
{
  struct test_fixture *f = *state;
  struct ext_list e = { .n = 0 };
  char furi[4200], *buf = calloc (1, OBJ);
  struct store *fst;
  struct image *img;
  int i;

  assert_int_equal (image_open (f->st, "disk", 0, &img), 0);
  write_pattern (img, 1, 'a');
  assert_int_equal (image_snap_create (img, "base", NULL), 0);
  image_close (img);

  /* A writer that "crashes" (every call fails) right after its data
   * writes started: whatever landed, the diff must list it. */
  snprintf (furi, sizeof furi, "fault:@%s", f->uri);
  assert_int_equal (store_open (furi, &fst), 0);
  assert_int_equal (image_open (fst, "disk", 0, &img), 0);
  for (i = 0; i < 8; i++) {
    memset (buf, 'k' + i, OBJ);
    assert_int_equal (image_write (img, buf, OBJ, (uint64_t) (12 + i) * OBJ,
                                   0), 0);
  }
  assert_int_equal (store_fault_set (fst, STORE_OP_ALL, -EIO, 1, 1, NULL), 0);
  image_close (img);
  store_close (fst);

  assert_int_equal (image_diff (f->st, "disk", "base", NULL, collect, &e), 0);
  assert_int_equal (e.n, 1);
  assert_int_equal (e.off[0], 12 * OBJ);
  assert_int_equal (e.len[0], 8 * OBJ);
  free (buf);
}

/* Removing a snapshot in the middle must not lose its interval's
 * changes: they move to the next interval. */
static void
test_diff_survives_snapshot_removal (void **state)
{
  struct test_fixture *f = *state;
  struct ext_list e = { .n = 0 };
  struct image *img;

  assert_int_equal (image_open (f->st, "disk", 0, &img), 0);
  /* Objects that exist at s1 already, so only the maps can tell they
   * changed (a new object shows up as such anyway). */
  write_pattern (img, 0, 'a');
  write_pattern (img, 4, 'a');
  write_pattern (img, 8, 'a');
  write_pattern (img, 12, 'a');
  assert_int_equal (image_snap_create (img, "s1", NULL), 0);
  write_pattern (img, 4, 'b');             /* in s2's interval */
  assert_int_equal (image_snap_create (img, "s2", NULL), 0);
  write_pattern (img, 8, 'c');             /* in the live interval */
  assert_int_equal (image_snap_remove (f->st, "disk", "s2"), 0);

  assert_int_equal (image_diff (f->st, "disk", "s1", NULL, collect, &e), 0);
  assert_int_equal (e.n, 2);
  assert_int_equal (e.off[0], 4 * OBJ);
  assert_int_equal (e.off[1], 8 * OBJ);

  /* The merged changes follow the live interval into the next snapshot,
   * and survive the removal of the newest one too. */
  assert_int_equal (image_snap_create (img, "s3", NULL), 0);
  write_pattern (img, 12, 'd');
  e.n = 0;
  assert_int_equal (image_diff (f->st, "disk", "s1", "s3", collect, &e), 0);
  assert_int_equal (e.n, 2);
  assert_int_equal (image_snap_remove (f->st, "disk", "s3"), 0);
  e.n = 0;
  assert_int_equal (image_diff (f->st, "disk", "s1", NULL, collect, &e), 0);
  assert_int_equal (e.n, 3);
  assert_int_equal (e.off[2], 12 * OBJ);
  image_close (img);
}

/* Changes that leave no data behind: a discard, and a shrink whose
 * space grows back as zeros.  Both count, before and after the next
 * snapshot and after that snapshot is removed. */
static void
test_diff_discard_and_shrink (void **state)
{
  struct test_fixture *f = *state;
  struct ext_list e = { .n = 0 };
  struct image *img;

  assert_int_equal (image_open (f->st, "disk", 0, &img), 0);
  write_pattern (img, 3, 'a');
  write_pattern (img, 20, 'a');
  write_pattern (img, 30, 'a');
  assert_int_equal (image_snap_create (img, "s1", NULL), 0);
  assert_int_equal (image_discard (img, 3 * OBJ, OBJ, 0), 0);
  image_close (img);
  assert_int_equal (image_resize (f->st, "disk", 16 * OBJ + 100), 0);
  assert_int_equal (image_resize (f->st, "disk", NOBJ * OBJ), 0);

  /* Object 3, and from object 16 (cut to 100 bytes) up. */
  assert_int_equal (image_diff (f->st, "disk", "s1", NULL, collect, &e), 0);
  assert_int_equal (e.n, 2);
  assert_int_equal (e.off[0], 3 * OBJ);
  assert_int_equal (e.len[0], OBJ);
  assert_int_equal (e.off[1], 16 * OBJ);
  assert_int_equal (e.len[1], (NOBJ - 16) * OBJ);

  assert_int_equal (image_open (f->st, "disk", 0, &img), 0);
  expect_pattern (img, 20, 0);
  assert_int_equal (image_snap_create (img, "s2", NULL), 0);
  e.n = 0;
  assert_int_equal (image_diff (f->st, "disk", "s2", NULL, collect, &e), 0);
  assert_int_equal (e.n, 0);                   /* nothing since s2 */
  e.n = 0;
  assert_int_equal (image_diff (f->st, "disk", "s1", "s2", collect, &e), 0);
  assert_int_equal (e.n, 2);
  assert_int_equal (e.off[1], 16 * OBJ);
  write_pattern (img, 1, 'b');
  assert_int_equal (image_snap_remove (f->st, "disk", "s2"), 0);
  e.n = 0;
  assert_int_equal (image_diff (f->st, "disk", "s1", NULL, collect, &e), 0);
  assert_int_equal (e.n, 3);
  assert_int_equal (e.off[0], 1 * OBJ);
  assert_int_equal (e.off[1], 3 * OBJ);
  assert_int_equal (e.off[2], 16 * OBJ);
  image_close (img);
}

/* A diff, and a snapshot, cost what changed, not the disk's size: on a
 * 64 TiB image (a 16 MiB map at 4 MiB objects), a diff of two changed
 * objects reads a few hundred bytes through the store. */
static void
test_diff_cost_follows_changes (void **state)
{
  struct test_fixture *f = *state;
  struct ext_list e = { .n = 0 };
  char furi[4200], buf[4096];
  struct store *fst;
  struct image *img;
  unsigned long reads;

  snprintf (furi, sizeof furi, "fault:@%s", f->uri);
  assert_int_equal (store_open (furi, &fst), 0);
  assert_int_equal (image_create (fst, "huge", UINT64_C (64) << 40,
                                  4u << 20), 0);
  assert_int_equal (image_open (fst, "huge", 0, &img), 0);
  memset (buf, 'h', sizeof buf);
  assert_int_equal (image_write (img, buf, sizeof buf, 0, 0), 0);
  assert_int_equal (image_snap_create (img, "s1", NULL), 0);
  assert_int_equal (image_write (img, buf, sizeof buf,
                                 (UINT64_C (40) << 40) + 8192, 0), 0);
  assert_int_equal (image_write (img, buf, sizeof buf, 4096, 0), 0);
  assert_int_equal (image_snap_create (img, "s2", NULL), 0);

  reads = store_fault_bytes_read (fst);
  assert_int_equal (image_diff (fst, "huge", "s1", NULL, collect, &e), 0);
  reads = store_fault_bytes_read (fst) - reads;
  /* The parts (1/32 of an object) that the writes touched. */
  assert_int_equal (e.n, 2);
  assert_int_equal (e.off[0], 0);
  assert_int_equal (e.len[0], 128 * 1024);
  assert_int_equal (e.off[1], UINT64_C (40) << 40);
  assert_int_equal (e.len[1], 128 * 1024);
  assert_true (reads < 64 * 1024);
  image_close (img);
  assert_int_equal (image_remove (fst, "huge"), 0);
  store_close (fst);
}

/* Between two snapshots the diff names the parts (1/32 of an object,
 * here 2 KiB) that changed; the live interval, and what another process
 * changed before a crash or hand-off, count whole objects. */
static void
test_diff_finer_than_objects (void **state)
{
  struct test_fixture *f = *state;
  struct ext_list e = { .n = 0 };
  char buf[4096];
  struct image *img;

  memset (buf, 'f', sizeof buf);
  assert_int_equal (image_open (f->st, "disk", 0, &img), 0);
  assert_int_equal (image_snap_create (img, "s1", NULL), 0);
  assert_int_equal (image_write (img, buf, 4096, 3 * OBJ + 10240, 0), 0);
  assert_int_equal (image_write (img, buf, 100, 7 * OBJ, 0), 0);
  assert_int_equal (image_diff (f->st, "disk", "s1", NULL, collect, &e), 0);
  assert_int_equal (e.n, 2);
  assert_int_equal (e.off[0], 3 * OBJ);
  assert_int_equal (e.len[0], OBJ);
  assert_int_equal (e.off[1], 7 * OBJ);
  assert_int_equal (e.len[1], OBJ);

  assert_int_equal (image_snap_create (img, "s2", NULL), 0);
  e.n = 0;
  assert_int_equal (image_diff (f->st, "disk", "s1", "s2", collect, &e), 0);
  assert_int_equal (e.n, 2);
  assert_int_equal (e.off[0], 3 * OBJ + 10240);
  assert_int_equal (e.len[0], 4096);
  assert_int_equal (e.off[1], 7 * OBJ);
  assert_int_equal (e.len[1], 2048);

  /* Other processes take over mid-interval: one after a writer that
   * crashed (object 9 counts whole), one after a writer that saved its
   * parts before letting go (object 12 stays fine). */
  assert_int_equal (image_write (img, buf, 4096, 9 * OBJ, 0), 0);
  image_close (img);
  assert_int_equal (image_open (f->st, "disk", 0, &img), 0);
  assert_int_equal (image_write (img, buf, 4096, 12 * OBJ, 0), 0);
  assert_int_equal (image_save_parts (img), 0);
  image_close (img);
  assert_int_equal (image_open (f->st, "disk", 0, &img), 0);
  assert_int_equal (image_write (img, buf, 4096, 9 * OBJ + 32768, 0), 0);
  assert_int_equal (image_write (img, buf, 4096, 10 * OBJ, 0), 0);
  assert_int_equal (image_write (img, buf, 4096, 12 * OBJ + 32768, 0), 0);
  assert_int_equal (image_snap_create (img, "s3", NULL), 0);
  e.n = 0;
  assert_int_equal (image_diff (f->st, "disk", "s2", "s3", collect, &e), 0);
  assert_int_equal (e.n, 3);
  assert_int_equal (e.off[0], 9 * OBJ);
  assert_int_equal (e.len[0], OBJ + 4096);
  assert_int_equal (e.off[1], 12 * OBJ);
  assert_int_equal (e.len[1], 4096);
  assert_int_equal (e.off[2], 12 * OBJ + 32768);
  assert_int_equal (e.len[2], 4096);

  /* Removing s2 merges its parts into s3's interval. */
  assert_int_equal (image_snap_remove (f->st, "disk", "s2"), 0);
  e.n = 0;
  assert_int_equal (image_diff (f->st, "disk", "s1", "s3", collect, &e), 0);
  assert_int_equal (e.n, 5);
  assert_int_equal (e.off[0], 3 * OBJ + 10240);
  assert_int_equal (e.len[0], 4096);
  assert_int_equal (e.off[1], 7 * OBJ);
  assert_int_equal (e.len[1], 2048);
  assert_int_equal (e.off[2], 9 * OBJ);
  assert_int_equal (e.off[4], 12 * OBJ + 32768);
  image_close (img);
}

/* A crash in the middle of a detail record (its object number written,
 * its mask not): the object counts whole, and the next record, written
 * by the next holder, is not taken for the missing mask. */
static void
test_diff_after_torn_detail (void **state)
{
  struct test_fixture *f = *state;
  struct ext_list e = { .n = 0 };
  struct image_info info;
  char buf[4096], oid[96];
  uint64_t torn = htole64 ((UINT64_C (1) << 62) | 5);
  struct image *img;

  memset (buf, 't', sizeof buf);
  assert_int_equal (image_open (f->st, "disk", 0, &img), 0);
  assert_int_equal (image_snap_create (img, "a", NULL), 0);
  assert_int_equal (image_write (img, buf, 4096, 5 * OBJ, 0), 0);
  image_close (img);
  assert_int_equal (image_stat (f->st, "disk", &info), 0);
  snprintf (oid, sizeof oid, "vbk_changes.%s", info.id);
  assert_int_equal (store_write (f->st, oid, &torn, sizeof torn, 8,
                                 STORE_WRITE_SYNC), 0);

  assert_int_equal (image_open (f->st, "disk", 0, &img), 0);
  assert_int_equal (image_write (img, buf, 4096, 9 * OBJ, 0), 0);
  assert_int_equal (image_snap_create (img, "b", NULL), 0);
  image_close (img);
  assert_int_equal (image_diff (f->st, "disk", "a", "b", collect, &e), 0);
  assert_int_equal (e.n, 2);
  assert_int_equal (e.off[0], 5 * OBJ);
  assert_int_equal (e.len[0], OBJ);
  assert_int_equal (e.off[1], 9 * OBJ);
  assert_int_equal (e.len[1], 4096);
}

struct remover {
  const char *uri, *image, *snap;
  int ret;
};

static void *
remover_run (void *arg)
{
  struct remover *rm = arg;
  struct store *st;

  rm->ret = store_open (rm->uri, &st);
  if (rm->ret == 0) {
    rm->ret = image_snap_remove (st, rm->image, rm->snap);
    store_close (st);
  }
  return NULL;
}

/* Removals of neighbouring snapshots at the same time (each moves its
 * changes into the next one's merged list): none may lose another's. */
static void
test_concurrent_removals (void **state)
{
  struct test_fixture *f = *state;
  int round;

  for (round = 0; round < 4; round++) {
    struct remover rm[3];
    pthread_t th[3];
    struct ext_list e = { .n = 0 };
    struct image *img;
    char name[32], sn[8];
    int i;

    snprintf (name, sizeof name, "r%d", round);
    assert_int_equal (image_create (f->st, name, NOBJ * OBJ, OBJ), 0);
    assert_int_equal (image_open (f->st, name, 0, &img), 0);
    for (i = 1; i <= 5; i++) {
      write_pattern (img, 2 * i, 'a' + i);
      snprintf (sn, sizeof sn, "s%d", i);
      assert_int_equal (image_snap_create (img, sn, NULL), 0);
    }
    image_close (img);
    for (i = 0; i < 3; i++) {
      static const char *const names[] = { "s2", "s3", "s4" };
      rm[i] = (struct remover) { f->uri, name, names[i], -1 };
      assert_int_equal (pthread_create (&th[i], NULL, remover_run, &rm[i]),
                        0);
    }
    for (i = 0; i < 3; i++) {
      pthread_join (th[i], NULL);
      assert_int_equal (rm[i].ret, 0);
    }
    /* s1..s5 covers the writes to objects 4, 6, 8 and 10. */
    assert_int_equal (image_diff (f->st, name, "s1", "s5", collect, &e), 0);
    assert_int_equal (e.n, 4);
    for (i = 0; i < 4; i++) {
      assert_int_equal (e.off[i], (uint64_t) (4 + 2 * i) * OBJ);
      assert_int_equal (e.len[i], OBJ);
    }
  }
}

static void
test_rollback (void **state)
{
  struct test_fixture *f = *state;
  struct image_info info;
  struct image *img;

  assert_int_equal (image_open (f->st, "disk", 0, &img), 0);
  write_pattern (img, 2, 'p');
  assert_int_equal (image_snap_create (img, "good", NULL), 0);
  write_pattern (img, 2, 'q');
  write_pattern (img, 3, 'r');
  image_close (img);
  assert_int_equal (image_resize (f->st, "disk", 2 * NOBJ * OBJ), 0);

  assert_int_equal (image_open (f->st, "disk", 0, &img), 0);
  assert_int_equal (image_snap_rollback (img, "good"), 0);
  expect_pattern (img, 2, 'p');
  expect_pattern (img, 3, 0);
  assert_int_equal (image_size (img), NOBJ * OBJ);
  assert_int_equal (image_snap_rollback (img, "bad"), -ENOENT);
  image_close (img);
  /* Back at the newest snapshot, the image is that snapshot again: no
   * change since it. */
  {
    struct ext_list e = { .n = 0 };
    assert_int_equal (image_diff (f->st, "disk", "good", NULL, collect, &e),
                      0);
    assert_int_equal (e.n, 0);
  }
  assert_int_equal (image_stat (f->st, "disk", &info), 0);
  assert_int_equal (info.size, NOBJ * OBJ);

  /* Back past a newer snapshot: what differs from that one since, the
   * changes between the two (objects 2 and 5), is changed. */
  assert_int_equal (image_open (f->st, "disk", 0, &img), 0);
  write_pattern (img, 2, 's');
  write_pattern (img, 5, 'm');
  assert_int_equal (image_snap_create (img, "mid", NULL), 0);
  write_pattern (img, 6, 'n');
  assert_int_equal (image_snap_rollback (img, "good"), 0);
  expect_pattern (img, 2, 'p');
  expect_pattern (img, 5, 0);
  expect_pattern (img, 6, 0);
  image_close (img);
  {
    struct ext_list e = { .n = 0 };
    assert_int_equal (image_diff (f->st, "disk", "mid", NULL, collect, &e),
                      0);
    assert_int_equal (e.n, 2);
    assert_int_equal (e.off[0], 2 * OBJ);
    assert_int_equal (e.len[0], OBJ);
    assert_int_equal (e.off[1], 5 * OBJ);
    assert_int_equal (e.len[1], OBJ);
  }
}

/* ---- The snapshot library with a holder serving commands --------------- */

struct holder {
  struct store *st;
  struct image *img;
  struct lease *lease;
  struct snap_server *srv;
};

static int
h_acquired (void *arg, uint64_t epoch)
{
  return image_set_trusted (((struct holder *) arg)->img, 1);
}

static int
h_flush (void *arg)
{
  return image_flush (((struct holder *) arg)->img);
}

static size_t
h_command (void *arg, const char *p, size_t len, char *reply, size_t max)
{
  struct holder *h = arg;

  if (h->srv == NULL)
    return snprintf (reply, max, "error: starting");
  return snap_server_command (h->srv, p, len, reply, max);
}

static const struct lease_hooks holder_hooks = {
  .acquired = h_acquired, .flush = h_flush, .command = h_command,
};

/* A "blockd" on host ID that holds IMAGE's lease after one write. */
static void
holder_start (struct test_fixture *f, struct holder *h, const char *image,
              const char *id)
{
  struct lease_opts o = { .host_id = id, .addr = "test", .duration_ms = 5000 };
  struct image_info info;
  char hdr[64];

  memset (h, 0, sizeof *h);
  assert_int_equal (store_open (f->uri, &h->st), 0);
  assert_int_equal (image_open (h->st, image, 0, &h->img), 0);
  image_get_info (h->img, &info);
  image_header_oid (info.id, hdr, sizeof hdr);
  assert_int_equal (lease_open (h->st, hdr, &o, &holder_hooks, h,
                                &h->lease), 0);
  h->srv = snap_server_new (h->img, h->lease);
  assert_non_null (h->srv);
  assert_int_equal (lease_write_begin (h->lease), 0);
  write_pattern (h->img, 0, 'h');
  lease_write_end (h->lease);
}

static void
holder_stop (struct holder *h)
{
  snap_server_free (h->srv);
  lease_close (h->lease);
  image_close (h->img);
  store_close (h->st);
}

static void
test_snap_through_holder_and_temporary (void **state)
{
  struct test_fixture *f = *state;
  struct snap_opts o = { .host_id = "cli-test" };
  struct lease_status ls;
  struct image *snap;
  struct holder h;
  uint64_t pause = 0;
  char hdr[64];
  struct image_info info;

  holder_start (f, &h, "disk", "host-a");
  assert_int_equal (snap_create (f->st, "disk", "via-holder", &o, &pause), 0);
  fprintf (stderr, "holder paused writes for %llu us\n",
           (unsigned long long) pause);
  /* The holder kept its lease. */
  image_stat (f->st, "disk", &info);
  image_header_oid (info.id, hdr, sizeof hdr);
  assert_int_equal (lease_status_get (f->st, hdr, &ls), 0);
  assert_true (ls.held);
  assert_string_equal (ls.host, "host-a");
  assert_int_equal (snap_create (f->st, "disk", "via-holder", &o, NULL),
                    -EEXIST);
  /* Rollback refused while held. */
  assert_int_equal (snap_rollback (f->st, "disk", "via-holder", false, &o),
                    -EBUSY);
  assert_non_null (strstr (vbk_error (), "host-a"));
  holder_stop (&h);

  assert_int_equal (lease_status_get (f->st, hdr, &ls), 0);
  assert_false (ls.held);
  assert_int_equal (snap_create (f->st, "disk", "temporary", &o, NULL), 0);
  assert_int_equal (lease_status_get (f->st, hdr, &ls), 0);
  assert_false (ls.held);             /* let go again */
  assert_int_equal (image_open_snap (f->st, "disk", "temporary", &snap), 0);
  expect_pattern (snap, 0, 'h');
  image_close (snap);
  assert_int_equal (snap_rollback (f->st, "disk", "via-holder", false, &o),
                    0);
}

/* snapshot rm, resize and a live diff through the holder: it keeps the
 * lease, learns the new size, and the live diff is as fine as parts. */
static void
test_commands_through_holder (void **state)
{
  struct test_fixture *f = *state;
  struct snap_opts o = { .host_id = "cli-test", .timeout_ms = 5000 };
  struct ext_list e = { .n = 0 };
  struct lease_status ls;
  struct image_info info;
  struct image_snap *v;
  struct holder h;
  char hdr[64], buf[4096];
  size_t n;

  holder_start (f, &h, "disk", "host-a");
  image_stat (f->st, "disk", &info);
  image_header_oid (info.id, hdr, sizeof hdr);
  assert_int_equal (snap_create (f->st, "disk", "s1", &o, NULL), 0);
  assert_int_equal (snap_create (f->st, "disk", "s2", &o, NULL), 0);

  /* The holder's errno comes back, with its message. */
  vbk_clear_error ();
  assert_int_equal (snap_remove (f->st, "disk", "nosuch", &o), -ENOENT);
  assert_non_null (strstr (vbk_error (), "nosuch"));
  assert_int_equal (snap_remove (f->st, "disk", "s1", &o), 0);
  assert_int_equal (image_snap_list (f->st, "disk", &v, &n), 0);
  assert_int_equal (n, 1);
  assert_string_equal (v[0].name, "s2");
  free (v);

  /* A 4 KiB write in object 3: the live diff asks the holder to log
   * its parts first, so it lists those parts, not the object. */
  memset (buf, 'p', sizeof buf);
  assert_int_equal (lease_write_begin (h.lease), 0);
  assert_int_equal (image_write (h.img, buf, sizeof buf, 3 * OBJ + 4096, 0),
                    0);
  lease_write_end (h.lease);
  assert_int_equal (snap_diff (f->st, "disk", "s2", NULL, collect, &e, &o),
                    0);
  /* (Parts are OBJ / 32 = 2 KiB here: the write covers two.) */
  assert_int_equal (e.n, 1);
  assert_int_equal (e.off[0], 3 * OBJ + 4096);
  assert_int_equal (e.len[0], 4096);
  /* The same between snapshots, and errors pass through. */
  assert_int_equal (snap_create (f->st, "disk", "s3", &o, NULL), 0);
  e.n = 0;
  assert_int_equal (snap_diff (f->st, "disk", "s2", "s3", collect, &e, &o),
                    0);
  assert_int_equal (e.n, 1);
  assert_int_equal (e.len[0], 4096);
  assert_int_equal (snap_diff (f->st, "disk", "nosuch", NULL, collect, &e,
                               &o), -ENOENT);

  /* Resize: the holder learns the size at once (writes past the new end
   * fail there), and the snapshot keeps the cut object. */
  write_pattern (h.img, 7, 'q');      /* (the lease is held) */
  assert_int_equal (snap_create (f->st, "disk", "s4", &o, NULL), 0);
  assert_int_equal (snap_resize (f->st, "disk", 4 * OBJ, &o), 0);
  assert_int_equal (image_size (h.img), 4 * OBJ);
  assert_int_equal (lease_write_begin (h.lease), 0);
  assert_int_equal (image_write (h.img, buf, sizeof buf, 6 * OBJ, 0),
                    -EINVAL);
  lease_write_end (h.lease);
  assert_int_equal (snap_resize (f->st, "disk", NOBJ * OBJ, &o), 0);
  assert_int_equal (image_size (h.img), NOBJ * OBJ);
  {
    struct image *s4;
    assert_int_equal (image_open_snap (f->st, "disk", "s4", &s4), 0);
    expect_pattern (s4, 7, 'q');
    image_close (s4);
  }
  assert_int_equal (snap_resize (f->st, "disk", 0, &o), -EINVAL);

  /* None of it moved the lease. */
  assert_int_equal (lease_status_get (f->st, hdr, &ls), 0);
  assert_true (ls.held);
  assert_string_equal (ls.host, "host-a");
  assert_int_equal (ls.epoch, 1);
  holder_stop (&h);

  /* Without a holder: a temporary lease, let go again. */
  assert_int_equal (snap_remove (f->st, "disk", "s2", &o), 0);
  assert_int_equal (snap_resize (f->st, "disk", 8 * OBJ, &o), 0);
  assert_int_equal (image_stat (f->st, "disk", &info), 0);
  assert_int_equal (info.size, 8 * OBJ);
  assert_int_equal (lease_status_get (f->st, hdr, &ls), 0);
  assert_false (ls.held);
}

/* A vbk that needs the lease for a moment never takes it from a holder
 * (no_handoff): it gets -EAGAIN and asks the holder instead. */
static void
test_no_handoff (void **state)
{
  struct test_fixture *f = *state;
  struct lease_opts lo = { .host_id = "cli", .addr = "vbk-cli",
                           .no_handoff = true, .duration_ms = 5000 };
  struct image_info info;
  struct lease_status ls;
  struct lease *l;
  struct holder h;
  char hdr[64];

  holder_start (f, &h, "disk", "host-a");
  image_stat (f->st, "disk", &info);
  image_header_oid (info.id, hdr, sizeof hdr);
  assert_int_equal (lease_open (f->st, hdr, &lo, NULL, NULL, &l), 0);
  vbk_clear_error ();
  assert_int_equal (lease_write_begin (l), -EAGAIN);
  assert_non_null (strstr (vbk_error (), "host-a"));
  assert_int_equal (lease_quiesce (l), -EAGAIN);
  lease_close (l);
  assert_int_equal (lease_status_get (f->st, hdr, &ls), 0);
  assert_string_equal (ls.host, "host-a");
  assert_int_equal (lease_state (h.lease), LEASE_HELD);
  holder_stop (&h);
}

static void
test_group (void **state)
{
  struct test_fixture *f = *state;
  struct snap_opts o = { .host_id = "cli-test" };
  const char *imgs[2] = { "disk", "disk2" }, *snaps[2] = { "g1", "g1" };
  const char *bad[2] = { "disk", "nosuch" };
  struct image_snap *v;
  struct holder a, b;
  struct image *s;
  size_t n;

  assert_int_equal (image_create (f->st, "disk2", 8 * OBJ, OBJ), 0);
  holder_start (f, &a, "disk", "host-a");
  holder_start (f, &b, "disk2", "host-b");
  assert_int_equal (snap_group_create (f->st, "vm1", imgs, snaps, 2, &o), 0);
  /* Writes after the group go on and are not in it. */
  assert_int_equal (lease_write_begin (a.lease), 0);
  write_pattern (a.img, 0, 'n');
  lease_write_end (a.lease);
  assert_int_equal (image_open_snap (f->st, "disk", "g1", &s), 0);
  expect_pattern (s, 0, 'h');
  image_close (s);
  assert_int_equal (image_open_snap (f->st, "disk2", "g1", &s), 0);
  expect_pattern (s, 0, 'h');
  image_close (s);

  /* A group with a missing image leaves no snapshot behind. */
  snaps[0] = snaps[1] = "g2";
  assert_int_not_equal (snap_group_create (f->st, "vm1", bad, snaps, 2, &o),
                        0);
  assert_int_equal (image_snap_list (f->st, "disk", &v, &n), 0);
  assert_int_equal (n, 1);
  free (v);
  /* Nor when one member already has the name. */
  assert_int_equal (snap_create (f->st, "disk2", "g3", &o, NULL), 0);
  snaps[0] = snaps[1] = "g3";
  assert_int_not_equal (snap_group_create (f->st, "vm1", imgs, snaps, 2, &o),
                        0);
  assert_int_equal (image_snap_list (f->st, "disk", &v, &n), 0);
  assert_int_equal (n, 1);
  free (v);
  /* And the holders still write afterwards (they were thawed). */
  assert_int_equal (lease_write_begin (b.lease), 0);
  write_pattern (b.img, 1, 'w');
  lease_write_end (b.lease);
  holder_stop (&b);
  holder_stop (&a);
}

/* ---- A crash at each store call of snapshot create, remove, rollback --
 * Whatever the crash left, a diff from the last good snapshot covers
 * every part whose bytes differ from that snapshot. */

enum snap_op { OP_CREATE, OP_REMOVE, OP_ROLLBACK };

/* Image NAME: "base", then changes, "mid", then more changes (all on
 * the plain store). */
static void
sweep_prepare (struct store *st, const char *name)
{
  char *buf = malloc (OBJ);
  struct image *img;

  assert_int_equal (image_create (st, name, NOBJ * OBJ, OBJ), 0);
  assert_int_equal (image_open (st, name, 0, &img), 0);
  write_pattern (img, 1, 'a');
  write_pattern (img, 2, 'a');
  assert_int_equal (image_snap_create (img, "base", NULL), 0);
  memset (buf, 'b', OBJ);
  assert_int_equal (image_write (img, buf, 100, 3 * OBJ + OBJ / 2, 0), 0);
  write_pattern (img, 5, 'c');
  assert_int_equal (image_discard (img, 2 * OBJ, OBJ, 0), 0);
  assert_int_equal (image_snap_create (img, "mid", NULL), 0);
  assert_int_equal (image_write (img, buf, 5000, 7 * OBJ + 3000, 0), 0);
  write_pattern (img, 1, 'd');
  image_close (img);
  free (buf);
}

static int
sweep_op (struct store *fst, const char *name, enum snap_op op)
{
  struct image *img;
  int r;

  if (op == OP_REMOVE)
    return image_snap_remove (fst, name, "mid");
  r = image_open (fst, name, 0, &img);
  if (r < 0)
    return r;
  if (op == OP_CREATE)
    r = image_snap_create (img, "new", NULL);
  else
    r = image_snap_rollback (img, "mid");
  image_close (img);
  return r;
}

/* Every part of NAME that differs from snapshot "base" is in the diff
 * from it. */
static void
sweep_check (struct store *st, const char *name, const char *what,
             unsigned long nth)
{
  struct test_extents c = { .n = 0 };
  struct image *head, *base;
  uint64_t sb = OBJ / 32, off;
  char *x = malloc (sb), *y = malloc (sb);

  assert_int_equal (image_diff (st, name, "base", NULL, test_extents_collect, &c),
                    0);
  assert_int_equal (image_open (st, name, IMAGE_OPEN_RDONLY, &head), 0);
  assert_int_equal (image_open_snap (st, name, "base", &base), 0);
  for (off = 0; off < NOBJ * OBJ; off += sb) {
    bool in_head = off < image_size (head);
    if (in_head)
      assert_int_equal (image_read (head, x, sb, off), (int) sb);
    assert_int_equal (image_read (base, y, sb, off), (int) sb);
    if (in_head && memcmp (x, y, sb) == 0)
      continue;
    if (!test_extents_cover (&c, off, sb))
      fail_msg ("%s, crash at call %lu: [%" PRIu64 ", +%" PRIu64 ") changed "
                "since base, not in the diff", what, nth, off, sb);
  }
  image_close (base);
  image_close (head);
  free (x);
  free (y);
}

static void
sweep (struct test_fixture *f, enum snap_op op, const char *what)
{
  unsigned long nth, total = 0, before;
  char furi[4200], name[64];
  struct store *fst;
  int r;

  snprintf (furi, sizeof furi, "fault:@%s", f->uri);
  for (nth = 0; nth == 0 || nth <= total; nth++) {
    snprintf (name, sizeof name, "sweep-%s-%lu", what, nth);
    sweep_prepare (f->st, name);
    assert_int_equal (store_open (furi, &fst), 0);
    if (nth > 0)
      assert_int_equal (store_fault_set (fst, STORE_OP_ALL, -EIO, nth, 1,
                                         NULL), 0);
    before = store_fault_count (fst, STORE_OP_ALL);
    r = sweep_op (fst, name, op);
    if (nth == 0) {
      assert_int_equal (r, 0);
      total = store_fault_count (fst, STORE_OP_ALL) - before;
      assert_true (total >= 3);
    }
    store_close (fst);
    sweep_check (f->st, name, what, nth);
  }
  print_message ("snapshot %s: a crash at each of %lu store calls\n", what,
                 total);
}

static void
test_snap_create_crash_sweep (void **state)
{
  sweep (*state, OP_CREATE, "create");
}

static void
test_snap_remove_crash_sweep (void **state)
{
  sweep (*state, OP_REMOVE, "remove");
}

static void
test_snap_rollback_crash_sweep (void **state)
{
  sweep (*state, OP_ROLLBACK, "rollback");
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_cow_and_diff, setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_diff_after_crash_never_under_reports, setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_diff_survives_snapshot_removal, setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_diff_discard_and_shrink, setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_diff_cost_follows_changes, setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_diff_finer_than_objects, setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_diff_after_torn_detail, setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_concurrent_removals, setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_rollback, setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_snap_create_crash_sweep, setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_snap_remove_crash_sweep, setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_snap_rollback_crash_sweep, setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_snap_through_holder_and_temporary, setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_group, setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_commands_through_holder, setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_no_handoff, setup,
                                     test_fixture_teardown),
  };

  return cmocka_run_group_tests_name (test_store_kind (), tests, NULL, NULL);
}
