/* SPDX-License-Identifier: MIT
 *
 * test-mapstore.c - the stored object map's levels (image/mapstore.c) on
 * each store backend (VBK_TEST_BACKENDS), against a naive model: a plain
 * byte array of the allocated objects.
 *
 * - Maps of random shapes (clustered, spread, both ends, summary bytes
 *   that over-report) are written the way the write path writes them
 *   (level 0 bytes and the summary runs image_map_sum_plan asks for);
 *   scans of the whole map and of random ranges find exactly the model's
 *   objects, in order, and read far fewer bytes than the map's size when
 *   little is allocated.
 * - The summary plan asks exactly for the summary bytes over a run that
 *   are not yet known, and nothing once they are.
 * - Through the image API: after random writes and discards the stored
 *   levels keep the invariant (every non-zero byte has a non-zero byte
 *   over it) and a reopened image sees exactly the model's objects.
 */
/* VBK_TEST_LINKS: vbkimage-internals vbktestutil */
#include <errno.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "image/internal.h"
#include "testutil.h"

/* A small deterministic generator (xorshift64*). */
static uint64_t
rnd (uint64_t *s)
{
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * UINT64_C (2685821657736338717);
}

struct found {
  uint64_t *v;
  size_t n, cap;
};

static int
collect (void *arg, uint64_t objno)
{
  struct found *fo = arg;

  if (fo->n == fo->cap) {
    fo->cap = fo->cap ? 2 * fo->cap : 256;
    fo->v = realloc (fo->v, fo->cap * sizeof *fo->v);
    assert_non_null (fo->v);
  }
  fo->v[fo->n++] = objno;
  return 0;
}

struct wait1 {
  int left, err;
};

static void
wait1_cb (void *arg, ssize_t ret)
{
  struct wait1 *w = arg;

  /* The local store may call back on a worker thread. */
  if (ret < 0)
    __atomic_store_n (&w->err, (int) ret, __ATOMIC_SEQ_CST);
  __atomic_fetch_sub (&w->left, 1, __ATOMIC_SEQ_CST);
}

/* Stores MODEL (N entries) as the write path does: each allocated entry
 * with its summary bytes; and, on top, EXTRA summary bytes that cover
 * nothing (a discard or a shrink leaves those). */
static void
store_model (struct store *st, const char *moid, const uint8_t *model,
             uint64_t n, uint64_t *seed, unsigned extra)
{
  struct objmap *m = image_map_new (n);
  struct map_sum_runs runs = { NULL, 0, 0 };
  struct wait1 w = { 0, 0 };
  char oid[80];
  uint8_t one = 1;
  uint64_t i;
  unsigned k;

  assert_non_null (m);
  /* Level 0 in one write (the write path writes runs of it). */
  assert_int_equal (store_write_full (st, moid, model, n, 0), 0);
  for (i = 0; i < n; i++)
    if (model[i])
      assert_int_equal (image_map_sum_plan (m, i, i, &runs), 0);
  w.left = (int) runs.n;
  image_map_sum_start (st, moid, &runs, wait1_cb, &w);
  while (__atomic_load_n (&w.left, __ATOMIC_SEQ_CST) > 0)
    sched_yield ();
  assert_int_equal (w.err, 0);
  free (runs.v);
  image_map_free (m);
  for (k = 0; k < extra; k++) {
    unsigned level = 1 + (unsigned) (rnd (seed) % 2);
    uint64_t idx = rnd (seed) % ((n >> (MAP_SUM_SHIFT * level)) + 1);
    image_map_level_oid (moid, level, oid, sizeof oid);
    assert_int_equal (store_write (st, oid, &one, 1, idx, 0), 0);
  }
}

static void
check_scan (struct store *st, const char *moid, unsigned format,
            const uint8_t *model, uint64_t n, uint64_t first, uint64_t last)
{
  struct found fo = { NULL, 0, 0 };
  uint64_t i;
  size_t k = 0;

  assert_int_equal (image_map_scan (st, moid, format, STORE_SNAP_HEAD, first,
                                    last, NULL, collect, &fo), 0);
  for (i = first; i < last && i < n; i++) {
    if (!model[i])
      continue;
    assert_true (k < fo.n);
    assert_int_equal (fo.v[k], i);
    k++;
  }
  assert_int_equal (k, fo.n);
  free (fo.v);
}

/* Random maps, scanned whole and in random ranges, in format 3 (the
 * summary levels) and format 2 (level 0 only) against the model. */
static void
test_scan_matches_model (void **state)
{
  struct test_fixture *f = *state;
  uint64_t seed = 0x9e3779b97f4a7c15, n = 300000, i, a, b;
  uint8_t *model = calloc (1, n);
  char moid[64];
  unsigned shape, t;

  assert_non_null (model);
  for (shape = 0; shape < 5; shape++) {
    memset (model, 0, n);
    switch (shape) {
    case 0:                     /* empty */
      break;
    case 1:                     /* spread: one object in ~1000 */
      for (i = 0; i < n / 1000; i++)
        model[rnd (&seed) % n] = 1;
      break;
    case 2:                     /* clusters */
      for (t = 0; t < 20; t++) {
        a = rnd (&seed) % n;
        for (i = a; i < n && i < a + 1 + rnd (&seed) % 5000; i++)
          model[i] = rnd (&seed) % 4 != 0;
      }
      break;
    case 3:                     /* the two ends and the summary edges */
      model[0] = model[n - 1] = model[63] = model[64] = model[4095] = 1;
      model[4096] = model[n - 4097] = 1;
      break;
    case 4:                     /* dense */
      for (i = 0; i < n; i++)
        model[i] = rnd (&seed) % 3 == 0;
      break;
    }
    snprintf (moid, sizeof moid, "vbk_object_map.test%u", shape);
    store_model (f->st, moid, model, n, &seed, shape == 0 ? 40 : 10);
    check_scan (f->st, moid, 3, model, n, 0, n);
    check_scan (f->st, moid, 2, model, n, 0, n);
    for (t = 0; t < 20; t++) {
      a = rnd (&seed) % n;
      b = a + 1 + rnd (&seed) % (n - a);
      check_scan (f->st, moid, 3, model, n, a, b);
      check_scan (f->st, moid, 2, model, n, a, b);
    }
    /* Past the stored levels' ends: nothing. */
    check_scan (f->st, moid, 3, model, n, n, n + 100000);
  }
  free (model);
}

/* A map with no summary objects at all (a format-3 image never
 * written) scans empty; a missing level 0 too. */
static void
test_scan_missing_objects (void **state)
{
  struct test_fixture *f = *state;
  struct found fo = { NULL, 0, 0 };

  assert_int_equal (image_map_scan (f->st, "vbk_object_map.none", 3,
                                    STORE_SNAP_HEAD, 0, 1u << 20, NULL,
                                    collect, &fo), 0);
  assert_int_equal (image_map_scan (f->st, "vbk_object_map.none", 2,
                                    STORE_SNAP_HEAD, 0, 1u << 20, NULL,
                                    collect, &fo), 0);
  assert_int_equal (fo.n, 0);
}

/* Reading follows what is allocated: 8 objects spread over 2^26
 * entries (a 256 TiB image of 4 MiB objects) cost level 2 (16 KiB) and
 * a few bytes per object, not the 64 MiB of level 0; and the summary
 * bytes seen are noted. */
static void
test_scan_cost_follows_allocation (void **state)
{
  struct test_fixture *f = *state;
  uint64_t n = UINT64_C (1) << 26, seed = 7, before, i, k;
  uint8_t one = 1;
  struct objmap *m = image_map_new (n);
  struct map_sum_runs runs = { NULL, 0, 0 };
  char furi[4200];
  struct store *fst;
  struct found fo = { NULL, 0, 0 };
  const char *moid = "vbk_object_map.cost";

  snprintf (furi, sizeof furi, "fault:@%s", f->uri);
  assert_int_equal (store_open (furi, &fst), 0);
  assert_non_null (m);
  for (k = 0; k < 8; k++) {
    i = k * (n / 8) + rnd (&seed) % (n / 8);
    assert_int_equal (store_write (fst, moid, &one, 1, i, 0), 0);
    runs.n = 0;
    assert_int_equal (image_map_sum_plan (m, i, i, &runs), 0);
    assert_int_equal (runs.n, 2);
    for (size_t j = 0; j < runs.n; j++) {
      char oid[80];
      image_map_level_oid (moid, runs.v[j].level, oid, sizeof oid);
      assert_int_equal (store_write (fst, oid, &one, 1, runs.v[j].lo, 0), 0);
    }
  }
  free (runs.v);
  before = store_fault_bytes_read (fst);
  assert_int_equal (image_map_scan (fst, moid, 3, STORE_SNAP_HEAD, 0, n, m,
                                    collect, &fo), 0);
  assert_int_equal (fo.n, 8);
  assert_true (store_fault_bytes_read (fst) - before < 64 << 10);
  for (k = 0; k < 8; k++) {
    assert_true (image_map_sum_known (m, 1, fo.v[k] >> 6));
    assert_true (image_map_sum_known (m, 2, fo.v[k] >> 12));
  }
  free (fo.v);
  image_map_free (m);
  store_close (fst);
}

/* The plan asks for every summary byte over a run that is not known,
 * once (runs of consecutive bytes), and for none once they are noted. */
static void
test_sum_plan (void **state)
{
  struct objmap *m = image_map_new (UINT64_C (1) << 20);
  struct map_sum_runs runs = { NULL, 0, 0 };
  size_t k;
  uint64_t l1 = 0, l2 = 0;

  (void) state;
  assert_non_null (m);
  /* Entries 100..10000: level 1 bytes 1..156, level 2 bytes 0..2. */
  assert_int_equal (image_map_sum_plan (m, 100, 10000, &runs), 0);
  assert_int_equal (image_map_sum_plan (m, 10000, 10000, &runs), 0);
  for (k = 0; k < runs.n; k++) {
    if (runs.v[k].level == 1) {
      assert_int_equal (runs.v[k].lo, 1 + l1);
      l1 += runs.v[k].hi - runs.v[k].lo + 1;
    }
    else {
      assert_int_equal (runs.v[k].level, 2);
      assert_int_equal (runs.v[k].lo, l2);
      l2 += runs.v[k].hi - runs.v[k].lo + 1;
    }
  }
  assert_int_equal (l1, 156);
  assert_int_equal (l2, 3);
  image_map_sum_done (m, &runs);
  runs.n = 0;
  assert_int_equal (image_map_sum_plan (m, 64, 10047, &runs), 0);
  assert_int_equal (runs.n, 0);
  /* One entry further: one byte of level 1 only. */
  assert_int_equal (image_map_sum_plan (m, 10048, 10048, &runs), 0);
  assert_int_equal (runs.n, 1);
  assert_int_equal (runs.v[0].level, 1);
  assert_int_equal (runs.v[0].lo, 157);
  assert_false (image_map_sum_known (m, 1, 0));
  assert_true (image_map_sum_known (m, 2, 2));
  /* Past the map's end nothing is known, and noting it is harmless. */
  assert_int_equal (image_map_sum_note (m, 2, UINT64_C (1) << 20), 0);
  assert_false (image_map_sum_known (m, 2, UINT64_C (1) << 20));
  free (runs.v);
  image_map_free (m);
}

/* Reads level LEVEL of image ID's stored map, N bytes (zeros past its
 * end or when it does not exist). */
static uint8_t *
read_level (struct store *st, const char *id, unsigned level, uint64_t n)
{
  char moid[64], oid[80];
  uint8_t *buf = calloc (1, n + 1);
  ssize_t r;

  assert_non_null (buf);
  snprintf (moid, sizeof moid, "vbk_object_map.%s", id);
  image_map_level_oid (moid, level, oid, sizeof oid);
  r = store_read (st, oid, buf, n, 0, STORE_SNAP_HEAD);
  assert_true (r == (ssize_t) n || r == -ENOENT);
  return buf;
}

/* Through the image: random writes and discards keep the stored
 * invariant, and a reopen sees exactly the model. */
static void
test_image_keeps_invariant (void **state)
{
  struct test_fixture *f = *state;
  const uint32_t osize = 64 * 1024;
  const uint64_t n = 20000, size = n * osize;
  uint8_t *model = calloc (1, n), *l0, *l1, *l2;
  struct image_info info;
  struct image *img;
  uint64_t seed = 42, i, k;
  char buf[512];

  assert_non_null (model);
  memset (buf, 'x', sizeof buf);
  assert_int_equal (image_create (f->st, "inv", size, osize), 0);
  assert_int_equal (image_open (f->st, "inv", 0, &img), 0);
  image_get_info (img, &info);
  assert_int_equal (info.format, IMAGE_FORMAT);
  for (k = 0; k < 300; k++) {
    i = rnd (&seed) % n;
    if (k % 5 == 4 && model[i]) {
      assert_int_equal (image_discard (img, i * osize, osize, 0), 0);
      model[i] = 0;
    }
    else {
      assert_int_equal (image_write (img, buf, sizeof buf, i * osize, 0), 0);
      model[i] = 1;
    }
  }
  assert_int_equal (image_flush (img), 0);
  image_close (img);

  l0 = read_level (f->st, info.id, 0, n);
  l1 = read_level (f->st, info.id, 1, n / 64 + 1);
  l2 = read_level (f->st, info.id, 2, n / 4096 + 1);
  for (i = 0; i < n; i++) {
    if (model[i])
      assert_int_not_equal (l0[i], 0);
    if (l0[i])
      assert_int_not_equal (l1[i >> 6], 0);
  }
  for (i = 0; i <= n / 64; i++)
    if (l1[i])
      assert_int_not_equal (l2[i >> 6], 0);

  assert_int_equal (image_open (f->st, "inv", IMAGE_OPEN_RDONLY, &img), 0);
  for (i = 0; i < n; i++)
    assert_int_equal (image_object_state (img, i) != IMAGE_OBJ_ABSENT,
                      model[i] != 0);
  image_close (img);
  assert_int_equal (image_count_objects (f->st, "inv", &k), 0);
  for (i = 0; i < n; i++)
    k -= model[i];
  assert_int_equal (k, 0);
  assert_int_equal (image_remove (f->st, "inv"), 0);
  free (l0);
  free (l1);
  free (l2);
  free (model);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_scan_matches_model,
                                     test_fixture_setup, test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_scan_missing_objects,
                                     test_fixture_setup, test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_scan_cost_follows_allocation,
                                     test_fixture_setup, test_fixture_teardown),
    cmocka_unit_test (test_sum_plan),
    cmocka_unit_test_setup_teardown (test_image_keeps_invariant,
                                     test_fixture_setup, test_fixture_teardown),
  };

  return cmocka_run_group_tests_name (test_store_kind (), tests, NULL, NULL);
}
