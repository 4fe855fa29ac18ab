/* SPDX-License-Identifier: MIT
 *
 * test-image.c - the image layer on each store backend (VBK_TEST_BACKENDS):
 * create/open/list/stat/resize/remove, I/O across object boundaries,
 * thin allocation, discard and write-zeroes, extents, errors, and the
 * object-map crash property: with the fault store failing every call
 * from the N-th on (a crash between two steps), for every N, the map on
 * the store never under-reports the data objects that exist.
 */
/* VBK_TEST_LINKS: vbkimage vbktestutil */
#include <endian.h>
#include <errno.h>
#include <malloc.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/error.h"
#include "image/image.h"
#include "testutil.h"

#define MiB (1024 * 1024)
#define OBJ (64 * 1024)

static void
fill (void *buf, size_t len, unsigned seed)
{
  unsigned char *p = buf;
  size_t i;

  for (i = 0; i < len; i++)
    p[i] = (unsigned char) ((i * 131 + seed * 7919) >> 3) ^ seed;
}

static int
all_zero (const void *buf, size_t len)
{
  const unsigned char *p = buf;
  size_t i;

  for (i = 0; i < len; i++)
    if (p[i])
      return 0;
  return 1;
}

static void
test_create_list_stat_remove (void **state)
{
  struct test_fixture *f = *state;
  struct image_info info, *list;
  uint64_t count;
  size_t n;

  assert_int_equal (image_create (f->st, "b-disk", 10 * MiB, 0), 0);
  assert_int_equal (image_create (f->st, "a-disk", 3 * MiB + 5, OBJ), 0);
  assert_int_equal (image_create (f->st, "a-disk", MiB, 0), -EEXIST);
  assert_non_null (strstr (vbk_error (), "already exists"));

  assert_int_equal (image_stat (f->st, "a-disk", &info), 0);
  assert_string_equal (info.name, "a-disk");
  assert_int_equal (info.size, 3 * MiB + 5);
  assert_int_equal (info.object_size, OBJ);
  assert_int_equal (info.state, IMAGE_STATE_OK);
  assert_int_equal (image_count_objects (f->st, "a-disk", &count), 0);
  assert_int_equal (count, 0);

  assert_int_equal (image_list (f->st, &list, &n), 0);
  assert_int_equal (n, 2);
  assert_string_equal (list[0].name, "a-disk");
  assert_string_equal (list[1].name, "b-disk");
  assert_int_equal (list[1].object_size, IMAGE_OBJECT_SIZE_DEFAULT);
  free (list);

  assert_int_equal (image_remove (f->st, "a-disk"), 0);
  assert_int_equal (image_stat (f->st, "a-disk", &info), -ENOENT);
  assert_non_null (strstr (vbk_error (), "does not exist"));
  assert_int_equal (image_remove (f->st, "a-disk"), -ENOENT);
  assert_int_equal (image_list (f->st, &list, &n), 0);
  assert_int_equal (n, 1);
  free (list);
  /* The name is free again. */
  assert_int_equal (image_create (f->st, "a-disk", MiB, 0), 0);
}

/* A create that died between writing the header and setting its size
 * leaves a header without "size": rm must still free the name. */
static void
test_remove_half_created (void **state)
{
  struct test_fixture *f = *state;
  struct image_info info;
  char hdr[64];

  assert_int_equal (image_create (f->st, "half", 10 * MiB, 0), 0);
  assert_int_equal (image_stat (f->st, "half", &info), 0);
  image_header_oid (info.id, hdr, sizeof hdr);
  assert_int_equal (store_xattr_rm (f->st, hdr, "size"), 0);
  assert_true (image_stat (f->st, "half", &info) < 0);
  assert_int_equal (image_create (f->st, "half", MiB, 0), -EEXIST);

  assert_int_equal (image_remove (f->st, "half"), 0);
  assert_int_equal (image_stat (f->st, "half", &info), -ENOENT);
  assert_int_equal (image_create (f->st, "half", MiB, 0), 0);
  assert_int_equal (image_stat (f->st, "half", &info), 0);
  assert_int_equal (info.size, MiB);
}

static void
test_bad_arguments (void **state)
{
  struct test_fixture *f = *state;
  struct image *img;

  assert_int_equal (image_create (f->st, "", MiB, 0), -EINVAL);
  assert_int_equal (image_create (f->st, "a/b", MiB, 0), -EINVAL);
  assert_int_equal (image_create (f->st, ".hidden", MiB, 0), -EINVAL);
  assert_int_equal (image_create (f->st, "x", 0, 0), -EINVAL);
  assert_int_equal (image_create (f->st, "x", MiB, 3 * OBJ), -EINVAL);
  assert_int_equal (image_create (f->st, "x", MiB, 32 * 1024), -EINVAL);
  assert_int_equal (image_create (f->st, "x", MiB, 64 * MiB), -EINVAL);
  assert_non_null (strstr (vbk_error (), "object size"));
  assert_int_equal (image_open (f->st, "nosuch", 0, &img), -ENOENT);

  assert_int_equal (image_create (f->st, "x", MiB, OBJ), 0);
  assert_int_equal (image_open (f->st, "x", IMAGE_OPEN_RDONLY, &img), 0);
  char buf[512] = { 1 };
  assert_int_equal (image_write (img, buf, 512, 0, 0), -EROFS);
  assert_int_equal (image_discard (img, 0, 512, 0), -EROFS);
  assert_int_equal (image_read (img, buf, 512, MiB - 256), -EINVAL);
  assert_int_equal (image_read (img, buf, 512, 0), 512);
  assert_true (all_zero (buf, 512));
  image_close (img);
}

static void
test_io_across_objects (void **state)
{
  struct test_fixture *f = *state;
  size_t size = 4 * MiB, len = 3 * OBJ + 1000;
  uint64_t off = OBJ - 300;
  char *w = malloc (len), *r = malloc (size), *expect = calloc (1, size);
  struct image_info info;
  struct image *img;

  assert_int_equal (image_create (f->st, "io", size, OBJ), 0);
  assert_int_equal (image_open (f->st, "io", 0, &img), 0);
  fill (w, len, 1);
  assert_int_equal (image_write (img, w, len, off, 0), 0);
  memcpy (expect + off, w, len);
  /* An unaligned small write inside an object, with FUA. */
  fill (w, 777, 2);
  assert_int_equal (image_write (img, w, 777, 2 * MiB + 5, IMAGE_FUA), 0);
  memcpy (expect + 2 * MiB + 5, w, 777);
  assert_int_equal (image_flush (img), 0);

  assert_int_equal (image_read (img, r, size, 0), (ssize_t) size);
  assert_memory_equal (r, expect, size);
  /* Thin: objects 0..4 and the one at 2 MiB, nothing else. */
  image_get_info (img, &info);
  assert_int_equal (info.objects, 5 + 1);
  assert_int_equal (image_object_state (img, 0), IMAGE_OBJ_DIRTY);
  assert_int_equal (image_object_state (img, 10), IMAGE_OBJ_ABSENT);
  image_close (img);

  /* Reopened (map from the store) and read by a second store client. */
  struct store *st2;
  assert_int_equal (store_open (f->uri, &st2), 0);
  assert_int_equal (image_open (st2, "io", IMAGE_OPEN_RDONLY, &img), 0);
  memset (r, 0xee, size);
  assert_int_equal (image_read (img, r, size, 0), (ssize_t) size);
  assert_memory_equal (r, expect, size);
  image_get_info (img, &info);
  assert_int_equal (info.objects, 6);
  image_close (img);
  store_close (st2);
  free (w);
  free (r);
  free (expect);
}

struct aio_ctx {
  int done;
  ssize_t last;
};

static void
aio_done (void *arg, ssize_t ret)
{
  struct aio_ctx *c = arg;

  __atomic_store_n (&c->last, ret, __ATOMIC_SEQ_CST);
  __atomic_add_fetch (&c->done, 1, __ATOMIC_SEQ_CST);
}

static void
test_aio_many (void **state)
{
  struct test_fixture *f = *state;
  enum { N = 64, LEN = 4096 };
  struct aio_ctx ctx[N] = { { 0 } };
  char *bufs = malloc (N * LEN), *r = malloc (N * LEN);
  struct image *img;
  int i;

  assert_int_equal (image_create (f->st, "aio", 2 * MiB, OBJ), 0);
  assert_int_equal (image_open (f->st, "aio", 0, &img), 0);
  for (i = 0; i < N; i++) {
    fill (bufs + i * LEN, LEN, 100 + i);
    assert_int_equal (image_aio_write (img, bufs + i * LEN, LEN,
                                       (uint64_t) i * 7 * LEN, 0,
                                       aio_done, &ctx[i]), 0);
  }
  for (i = 0; i < N; i++) {
    while (__atomic_load_n (&ctx[i].done, __ATOMIC_SEQ_CST) == 0)
      ;
    assert_int_equal (ctx[i].done, 1);
    assert_int_equal (ctx[i].last, 0);
  }
  memset (ctx, 0, sizeof ctx);
  for (i = 0; i < N; i++)
    assert_int_equal (image_aio_read (img, r + i * LEN, LEN,
                                      (uint64_t) i * 7 * LEN, aio_done,
                                      &ctx[i]), 0);
  for (i = 0; i < N; i++) {
    while (__atomic_load_n (&ctx[i].done, __ATOMIC_SEQ_CST) == 0)
      ;
    assert_int_equal (ctx[i].last, LEN);
  }
  assert_memory_equal (r, bufs, N * LEN);
  image_close (img);
  free (bufs);
  free (r);
}

struct extent_log {
  uint64_t off[64], len[64];
  int alloc[64];
  int n;
};

static int
log_extent (void *arg, uint64_t off, uint64_t len, int allocated)
{
  struct extent_log *l = arg;

  assert_true (l->n < 64);
  l->off[l->n] = off;
  l->len[l->n] = len;
  l->alloc[l->n] = allocated;
  l->n++;
  return 0;
}

static void
test_discard_zeroes_extents (void **state)
{
  struct test_fixture *f = *state;
  uint64_t size = 20 * OBJ + 100;
  char *buf = malloc (size), *r = malloc (size);
  struct extent_log log = { .n = 0 };
  struct image_info info;
  struct image *img;

  assert_int_equal (image_create (f->st, "z", size, OBJ), 0);
  assert_int_equal (image_open (f->st, "z", 0, &img), 0);
  fill (buf, size, 9);
  assert_int_equal (image_write (img, buf, size, 0, 0), 0);
  image_get_info (img, &info);
  assert_int_equal (info.objects, 21);

  /* Whole objects 2..4 become holes; a partial range reads zeros. */
  assert_int_equal (image_discard (img, 2 * OBJ, 3 * OBJ, 0), 0);
  assert_int_equal (image_discard (img, 10 * OBJ + 10, 100, 0), 0);
  /* write-zeroes with NO_HOLE keeps object 7 allocated. */
  assert_int_equal (image_write_zeroes (img, 7 * OBJ, OBJ, IMAGE_NO_HOLE), 0);
  /* The partial last object, discarded to the end, goes away. */
  assert_int_equal (image_discard (img, 20 * OBJ, 100, 0), 0);
  memset (buf + 2 * OBJ, 0, 3 * OBJ);
  memset (buf + 10 * OBJ + 10, 0, 100);
  memset (buf + 7 * OBJ, 0, OBJ);
  memset (buf + 20 * OBJ, 0, 100);
  assert_int_equal (image_read (img, r, size, 0), (ssize_t) size);
  assert_memory_equal (r, buf, size);
  assert_int_equal (image_object_state (img, 3), IMAGE_OBJ_ABSENT);
  assert_int_equal (image_object_state (img, 7), IMAGE_OBJ_DIRTY);
  assert_int_equal (image_object_state (img, 20), IMAGE_OBJ_ABSENT);

  assert_int_equal (image_extents (img, 0, size, log_extent, &log), 0);
  assert_int_equal (log.n, 4);
  assert_int_equal (log.off[0], 0);
  assert_int_equal (log.len[0], 2 * OBJ);
  assert_true (log.alloc[0]);
  assert_int_equal (log.off[1], 2 * OBJ);
  assert_int_equal (log.len[1], 3 * OBJ);
  assert_false (log.alloc[1]);
  assert_int_equal (log.off[2], 5 * OBJ);
  assert_int_equal (log.len[2], 15 * OBJ);
  assert_true (log.alloc[2]);
  assert_int_equal (log.off[3], 20 * OBJ);
  assert_int_equal (log.len[3], 100);
  assert_false (log.alloc[3]);

  /* A window inside the image is clipped to it. */
  log.n = 0;
  assert_int_equal (image_extents (img, 3 * OBJ, 10 * OBJ * 1000,
                                   log_extent, &log), 0);
  assert_int_equal (log.off[0], 3 * OBJ);
  assert_int_equal (log.len[0], 2 * OBJ);
  assert_int_equal (log.off[log.n - 1] + log.len[log.n - 1], size);
  image_close (img);
  free (buf);
  free (r);
}

static void
test_resize (void **state)
{
  struct test_fixture *f = *state;
  char *buf = malloc (8 * OBJ), *r = malloc (8 * OBJ);
  struct image_info info;
  uint64_t count;
  struct image *img;

  assert_int_equal (image_create (f->st, "rs", 8 * OBJ, OBJ), 0);
  assert_int_equal (image_open (f->st, "rs", 0, &img), 0);
  fill (buf, 8 * OBJ, 4);
  assert_int_equal (image_write (img, buf, 8 * OBJ, 0, 0), 0);
  image_close (img);

  /* Shrink into the middle of object 2, then grow back: the tail reads
   * zeros, never the old data. */
  assert_int_equal (image_resize (f->st, "rs", 2 * OBJ + 1000), 0);
  assert_int_equal (image_stat (f->st, "rs", &info), 0);
  assert_int_equal (info.size, 2 * OBJ + 1000);
  assert_int_equal (image_count_objects (f->st, "rs", &count), 0);
  assert_int_equal (count, 3);
  assert_int_equal (image_resize (f->st, "rs", 8 * OBJ), 0);
  assert_int_equal (image_open (f->st, "rs", 0, &img), 0);
  assert_int_equal (image_read (img, r, 8 * OBJ, 0), 8 * OBJ);
  assert_memory_equal (r, buf, 2 * OBJ + 1000);
  assert_true (all_zero (r + 2 * OBJ + 1000, 6 * OBJ - 1000));
  assert_int_equal (image_resize (f->st, "rs", 0), -EINVAL);
  assert_int_equal (image_resize (f->st, "nosuch", OBJ), -ENOENT);

  /* An open image sees a resize after image_refresh. */
  assert_int_equal (image_resize (f->st, "rs", 16 * OBJ), 0);
  assert_int_equal (image_refresh (img), 0);
  assert_int_equal (image_size (img), 16 * OBJ);
  assert_int_equal (image_write (img, buf, OBJ, 15 * OBJ, 0), 0);
  image_close (img);
  free (buf);
  free (r);
}

/* Every data object that exists must have a non-ABSENT map entry. */
static void
check_map_covers_objects (const char *uri, const char *name, uint64_t nobj)
{
  struct image_info info;
  struct store *st;
  struct image *img;
  char oid[96];
  uint64_t i, size;

  assert_int_equal (store_open (uri, &st), 0);
  assert_int_equal (image_stat (st, name, &info), 0);
  assert_int_equal (image_open (st, name, IMAGE_OPEN_RDONLY, &img), 0);
  for (i = 0; i < nobj; i++) {
    image_data_oid (info.id, i, oid, sizeof oid);
    if (store_stat (st, oid, STORE_SNAP_HEAD, &size) == 0)
      assert_int_not_equal (image_object_state (img, i), IMAGE_OBJ_ABSENT);
  }
  image_close (img);
  store_close (st);
}

static void
test_map_never_under_reports (void **state)
{
  struct test_fixture *f = *state;
  char furi[4200], *buf = malloc (4 * OBJ);
  unsigned long nth, total = 0;
  struct store *fst;
  struct image *img;
  int r;

  fill (buf, 4 * OBJ, 5);
  snprintf (furi, sizeof furi, "fault:@%s", f->uri);
  /* Count the write-class calls of the workload once, then crash at
   * each of them in turn. */
  for (nth = 0; nth == 0 || nth <= total; nth++) {
    char name[32];

    snprintf (name, sizeof name, "crash%lu", nth);
    assert_int_equal (store_open (furi, &fst), 0);
    assert_int_equal (image_create (fst, name, 16 * OBJ, OBJ), 0);
    assert_int_equal (image_open (fst, name, 0, &img), 0);
    if (nth > 0)
      assert_int_equal (store_fault_set (fst, STORE_OP_WRITE | STORE_OP_META,
                                         -EIO, nth, 1, NULL), 0);
    unsigned long before = store_fault_count (fst, STORE_OP_WRITE
                                              | STORE_OP_META);
    r = image_write (img, buf, 3 * OBJ, OBJ / 2, 0);
    if (r == 0)
      r = image_write (img, buf, 100, 9 * OBJ, IMAGE_FUA);
    if (r == 0)
      r = image_discard (img, 0, 2 * OBJ, 0);
    if (r == 0)
      r = image_write (img, buf, 2 * OBJ, 12 * OBJ, 0);
    if (r == 0)
      r = image_flush (img);
    if (nth == 0) {
      assert_int_equal (r, 0);
      total = store_fault_count (fst, STORE_OP_WRITE | STORE_OP_META)
        - before;
      assert_true (total >= 8);
    }
    else {
      assert_int_equal (r, -EIO);
      assert_non_null (strstr (vbk_error (), "injected"));
    }
    image_close (img);
    store_close (fst);
    check_map_covers_objects (f->uri, name, 16);
  }
  free (buf);
}

static void
test_store_full_is_reported (void **state)
{
  struct test_fixture *f = *state;
  char furi[4200], buf[4096], r[4096];
  struct store *fst;
  struct image *img;

  snprintf (furi, sizeof furi, "fault:@%s", f->uri);
  assert_int_equal (store_open (furi, &fst), 0);
  assert_int_equal (image_create (fst, "full", MiB, OBJ), 0);
  assert_int_equal (image_open (fst, "full", 0, &img), 0);
  fill (buf, sizeof buf, 3);
  assert_int_equal (image_write (img, buf, sizeof buf, 0, 0), 0);
  assert_int_equal (store_fault_set (fst, STORE_OP_WRITE, -ENOSPC, 1, 1,
                                     NULL), 0);
  memset (buf, 0x55, sizeof buf);
  assert_int_equal (image_write (img, buf, sizeof buf, 0, 0), -ENOSPC);
  assert_int_equal (image_write (img, buf, sizeof buf, 5 * OBJ, 0), -ENOSPC);
  assert_non_null (strstr (vbk_error (), "No space"));
  /* What was there before is intact. */
  assert_int_equal (store_fault_set (fst, 0, 0, 0, 0, NULL), 0);
  fill (buf, sizeof buf, 3);
  assert_int_equal (image_read (img, r, sizeof r, 0), (ssize_t) sizeof r);
  assert_memory_equal (r, buf, sizeof r);
  image_close (img);
  store_close (fst);
}

/* A change-log append that fails may still land (the reply was lost);
 * if cutting it back fails too, the log may end in a record of which
 * parts of an object changed that hides the object's whole record.  A
 * later write to another part of that object must not be missed by a
 * diff: the write waits for the cut, and fails while the cut fails. */
static void
test_failed_log_cut_no_under_report (void **state)
{
  struct test_fixture *f = *state;
  char furi[4200], buf[4096], loid[96];
  struct image_info info;
  struct test_extents d = { .n = 0 };
  struct store *fst;
  struct image *img;
  uint64_t words[2], size;

  snprintf (furi, sizeof furi, "fault:@%s", f->uri);
  assert_int_equal (store_open (furi, &fst), 0);
  assert_int_equal (image_create (fst, "cut", MiB, OBJ), 0);
  assert_int_equal (image_open (fst, "cut", 0, &img), 0);
  assert_int_equal (image_snap_create (img, "s1", NULL), 0);
  fill (buf, sizeof buf, 4);
  /* Parts 0-1 of object 0 (parts of 2 KiB): logged whole. */
  assert_int_equal (image_write (img, buf, sizeof buf, 0, 0), 0);
  image_get_info (img, &info);
  snprintf (loid, sizeof loid, "vbk_changes.%s", info.id);
  assert_int_equal (store_stat (f->st, loid, STORE_SNAP_HEAD, &size), 0);
  assert_int_equal (size, 8);

  /* Saving the parts appends "object 0: parts 0-1": the append fails,
   * and so does the cut after it (every write fails). */
  assert_int_equal (store_fault_set (fst, STORE_OP_WRITE, -EIO, 1, 1, NULL),
                    0);
  assert_int_equal (image_save_parts (img), -EIO);
  assert_int_equal (store_fault_set (fst, 0, 0, 0, 0, NULL), 0);
  /* ... but the append had landed. */
  words[0] = htole64 ((UINT64_C (1) << 62) | 0);
  words[1] = htole64 (3);
  assert_int_equal (store_write (f->st, loid, words, sizeof words, 8,
                                 STORE_WRITE_SYNC), 0);

  /* While the cut still fails, writes are refused. */
  assert_int_equal (store_fault_set (fst, STORE_OP_WRITE, -EIO, 1, 1, NULL),
                    0);
  assert_int_equal (image_write (img, buf, sizeof buf, OBJ / 2, 0), -EIO);
  assert_non_null (strstr (vbk_error (), "change log"));
  assert_int_equal (store_fault_set (fst, 0, 0, 0, 0, NULL), 0);

  /* Another part of object 0 changes: the diff must cover it. */
  assert_int_equal (image_write (img, buf, sizeof buf, OBJ / 2, 0), 0);
  assert_int_equal (image_diff (fst, "cut", "s1", NULL, test_extents_collect, &d), 0);
  assert_true (test_extents_cover (&d, 0, sizeof buf));
  assert_true (test_extents_cover (&d, OBJ / 2, sizeof buf));
  image_close (img);
  store_close (fst);
}

static int
count_cb (void *arg, uint64_t off, uint64_t len, int alloc)
{
  (void) off;
  (void) len;
  (void) alloc;
  ++*(uint64_t *) arg;
  return 0;
}

/* Listing and stat read headers only, never object maps; opening a huge
 * image allocates for the objects written, not for its size; an extents
 * walk of an untrusted handle reads only the map of the range asked; and
 * no image has more than IMAGE_OBJECTS_MAX objects. */
static void
test_huge_map_costs (void **state)
{
  struct test_fixture *f = *state;
  uint64_t size = IMAGE_OBJECTS_MAX * (UINT64_C (4) << 20);   /* 512 TiB */
  char furi[4200], buf[4096];
  struct image_info info, *list;
  struct mallinfo2 m0, m1;
  struct store *fst;
  struct image *img;
  uint64_t before, count, extents = 0;
  size_t n;

  snprintf (furi, sizeof furi, "fault:@%s", f->uri);
  assert_int_equal (store_open (furi, &fst), 0);
  assert_int_equal (image_create (fst, "huge", size + 1, 4u << 20), -EINVAL);
  assert_non_null (strstr (vbk_error (), "objects"));
  assert_int_equal (image_create (fst, "huge", UINT64_C (1) << 50, 0),
                    -EINVAL);
  assert_int_equal (image_create (fst, "huge", UINT64_C (1) << 50, 8u << 20),
                    0);
  assert_int_equal (image_remove (fst, "huge"), 0);
  assert_int_equal (image_create (fst, "huge", size, 4u << 20), 0);
  assert_int_equal (image_resize (fst, "huge", size + 1), -EINVAL);

  /* Data in the first and the last object: a stored map of 128 MiB. */
  assert_int_equal (image_open (fst, "huge", 0, &img), 0);
  memset (buf, 'h', sizeof buf);
  assert_int_equal (image_write (img, buf, sizeof buf, 0, 0), 0);
  assert_int_equal (image_write (img, buf, sizeof buf, size - sizeof buf, 0),
                    0);
  image_close (img);

  before = store_fault_bytes_read (fst);
  assert_int_equal (image_stat (fst, "huge", &info), 0);
  assert_int_equal (image_list (fst, &list, &n), 0);
  free (list);
  assert_true (store_fault_bytes_read (fst) - before < 64 * 1024);

  /* Counting and opening read the map in proportion to what is
   * allocated (two objects), not to the image's 128 MiB of map. */
  before = store_fault_bytes_read (fst);
  assert_int_equal (image_count_objects (fst, "huge", &count), 0);
  assert_int_equal (count, 2);
  assert_true (store_fault_bytes_read (fst) - before < 64 * 1024);

  before = store_fault_bytes_read (fst);
  m0 = mallinfo2 ();
  assert_int_equal (image_open (fst, "huge", 0, &img), 0);
  m1 = mallinfo2 ();
  assert_true (store_fault_bytes_read (fst) - before < 64 * 1024);
  assert_true (m1.uordblks + m1.hblkhd - m0.uordblks - m0.hblkhd
               < (size_t) 16 << 20);
  image_get_info (img, &info);
  assert_int_equal (info.objects, 2);
  /* Written since the last snapshot (none): DIRTY. */
  assert_int_equal (image_object_state (img, 0), IMAGE_OBJ_DIRTY);
  assert_int_equal (image_object_state (img, 1), IMAGE_OBJ_ABSENT);
  assert_int_equal (image_object_state (img, IMAGE_OBJECTS_MAX - 1),
                    IMAGE_OBJ_DIRTY);

  /* A BLOCK_STATUS of the first GiB of an untrusted handle. */
  assert_int_equal (image_set_trusted (img, 0), 0);
  before = store_fault_bytes_read (fst);
  assert_int_equal (image_extents (img, 0, UINT64_C (1) << 30, count_cb,
                                   &extents), 0);
  assert_int_equal (extents, 2);
  assert_true (store_fault_bytes_read (fst) - before < 64 * 1024);
  extents = 0;
  assert_int_equal (image_extents (img, 0, size, count_cb, &extents), 0);
  assert_int_equal (extents, 3);
  image_close (img);
  before = store_fault_bytes_read (fst);
  assert_int_equal (image_remove (fst, "huge"), 0);
  assert_true (store_fault_bytes_read (fst) - before < 64 * 1024);
  store_close (fst);
}

/* An image of format 2 (an object map of level 0 only, written by an
 * older vbk: made here directly through the store) opens, counts,
 * serves and removes its objects; new writes to it keep its format. */
static void
test_format2_image (void **state)
{
  struct test_fixture *f = *state;
  const uint64_t objs[] = { 5, 9000, 16383 }, more = 12000;
  char hdr[64], moid[64], oid[96], text[4096], *p, buf[4096], got[4096];
  struct image_info info;
  struct image *img;
  uint64_t count, extents = 0, sz;
  uint8_t one = 1;
  ssize_t n;
  size_t k;

  assert_int_equal (image_create (f->st, "old", UINT64_C (1) << 30, OBJ), 0);
  assert_int_equal (image_stat (f->st, "old", &info), 0);
  assert_int_equal (info.format, IMAGE_FORMAT);
  image_header_oid (info.id, hdr, sizeof hdr);
  snprintf (moid, sizeof moid, "vbk_object_map.%s", info.id);
  n = store_read (f->st, hdr, text, sizeof text - 1, 0, STORE_SNAP_HEAD);
  assert_true (n > 0);
  text[n] = '\0';
  p = strstr (text, "format=3\n");
  assert_non_null (p);
  p[7] = '2';
  assert_int_equal (store_write_full (f->st, hdr, text, strlen (text),
                                      STORE_WRITE_SYNC), 0);
  for (k = 0; k < 3; k++) {
    fill (buf, sizeof buf, (unsigned) k + 1);
    image_data_oid (info.id, objs[k], oid, sizeof oid);
    assert_int_equal (store_write (f->st, oid, buf, sizeof buf, 0,
                                   STORE_WRITE_SYNC), 0);
    assert_int_equal (store_write (f->st, moid, &one, 1, objs[k],
                                   STORE_WRITE_SYNC), 0);
  }

  assert_int_equal (image_stat (f->st, "old", &info), 0);
  assert_int_equal (info.format, 2);
  assert_int_equal (image_count_objects (f->st, "old", &count), 0);
  assert_int_equal (count, 3);
  assert_int_equal (image_open (f->st, "old", 0, &img), 0);
  for (k = 0; k < 3; k++) {
    assert_int_not_equal (image_object_state (img, objs[k]),
                          IMAGE_OBJ_ABSENT);
    fill (buf, sizeof buf, (unsigned) k + 1);
    assert_int_equal (image_read (img, got, sizeof got, objs[k] * OBJ),
                      (ssize_t) sizeof got);
    assert_memory_equal (got, buf, sizeof buf);
  }
  assert_int_equal (image_object_state (img, 6), IMAGE_OBJ_ABSENT);
  assert_int_equal (image_extents (img, 0, UINT64_C (1) << 30, count_cb,
                                   &extents), 0);
  assert_int_equal (extents, 6);  /* hole, data, hole, data, hole, data */
  assert_int_equal (image_set_trusted (img, 0), 0);
  extents = 0;
  assert_int_equal (image_extents (img, 0, UINT64_C (1) << 30, count_cb,
                                   &extents), 0);
  assert_int_equal (extents, 6);
  assert_int_equal (image_set_trusted (img, 1), 0);
  memset (buf, 'n', sizeof buf);
  assert_int_equal (image_write (img, buf, sizeof buf, more * OBJ, 0), 0);
  image_close (img);

  /* Still format 2, read the old way, and the new object is in it. */
  n = store_read (f->st, hdr, got, sizeof got - 1, 0, STORE_SNAP_HEAD);
  assert_true (n > 0);
  got[n] = '\0';
  assert_non_null (strstr (got, "format=2\n"));
  assert_int_equal (image_open (f->st, "old", IMAGE_OPEN_RDONLY, &img), 0);
  image_get_info (img, &info);
  assert_int_equal (info.format, 2);
  assert_int_equal (info.objects, 4);
  assert_int_not_equal (image_object_state (img, more), IMAGE_OBJ_ABSENT);
  image_close (img);

  assert_int_equal (image_remove (f->st, "old"), 0);
  for (k = 0; k < 3; k++) {
    image_data_oid (info.id, objs[k], oid, sizeof oid);
    assert_int_equal (store_stat (f->st, oid, STORE_SNAP_HEAD, &sz), -ENOENT);
  }
  image_data_oid (info.id, more, oid, sizeof oid);
  assert_int_equal (store_stat (f->st, oid, STORE_SNAP_HEAD, &sz), -ENOENT);
  assert_int_equal (store_stat (f->st, moid, STORE_SNAP_HEAD, &sz), -ENOENT);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_create_list_stat_remove, test_fixture_setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_remove_half_created, test_fixture_setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_bad_arguments, test_fixture_setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_io_across_objects, test_fixture_setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_aio_many, test_fixture_setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_discard_zeroes_extents, test_fixture_setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_resize, test_fixture_setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_map_never_under_reports, test_fixture_setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_huge_map_costs, test_fixture_setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_format2_image, test_fixture_setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_failed_log_cut_no_under_report, test_fixture_setup,
                                     test_fixture_teardown),
    cmocka_unit_test_setup_teardown (test_store_full_is_reported, test_fixture_setup,
                                     test_fixture_teardown),
  };

  return cmocka_run_group_tests_name (test_store_kind (), tests, NULL, NULL);
}
