/* SPDX-License-Identifier: MIT
 *
 * test-image-openmark.c - the open marker of images on the local store
 * (image/openmark.c): after an unclean shutdown of the machine the map is
 * rebuilt from the data objects and the change tracking of the live
 * interval is reset; after a process crash nothing is rebuilt.
 *
 * DESIGN
 * A power loss is played in one process: an image opened with one boot
 * id (VBK_TEST_BOOT_ID) writes and is never closed, its marker stays;
 * then the test takes away what a power loss may take from unsynced
 * metadata while data survives (it empties the change log, clears a map
 * byte of a written object, removes a data object whose map byte is
 * set), by editing the store's files, and opens the image again under
 * another boot id.  A process crash is a marker of this boot left by a
 * process that is gone.
 */
/* VBK_TEST_LINKS: vbkimage vbktestutil */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "image/image.h"
#include "testutil.h"

#define MiB (1024 * 1024)
#define OBJSZ (4 * MiB)
#define NOBJ 64
#define BS 4096

static int
setup (void **state)
{
  unsetenv ("VBK_TEST_BOOT_ID");
  return test_fixture_setup (state);
}

static int
teardown (void **state)
{
  unsetenv ("VBK_TEST_BOOT_ID");
  return test_fixture_teardown (state);
}

/* The path of object OID's file in the store of FX. */
static void
obj_path (struct test_fixture *fx, const char *oid, char *buf, size_t len)
{
  snprintf (buf, len, "%s/obj/%s", fx->uri + strlen ("local:"), oid);
}

static void
write_obj (struct image *img, uint64_t objno, char c)
{
  char buf[BS];

  memset (buf, c, BS);
  assert_int_equal (image_write (img, buf, BS, objno * OBJSZ + BS, 0), 0);
}

static int
count_key (void *arg, const char *key, const void *val, size_t len)
{
  (void) key, (void) val, (void) len;
  ++*(int *) arg;
  return 0;
}

/* Keys in the image's open marker. */
static int
markers (struct store *st, const char *id)
{
  char oid[64];
  int n = 0, r;

  snprintf (oid, sizeof oid, "vbk_open.%s", id);
  r = store_omap_list (st, oid, "", 1000, count_key, &n);
  if (r == -ENOENT)
    return 0;
  assert_int_equal (r, 0);
  return n;
}

struct seen {
  uint8_t objs[NOBJ];
};

static int
diff_cb (void *arg, uint64_t off, uint64_t len, int allocated)
{
  struct seen *s = arg;
  uint64_t o;

  if (allocated)
    for (o = off / OBJSZ; o < (off + len + OBJSZ - 1) / OBJSZ && o < NOBJ;
         o++)
      s->objs[o] = 1;
  return 0;
}

/* Diffs FROM..TO of IMAGE into S; returns the flags. */
static unsigned
diff (struct store *st, const char *image, const char *from, const char *to,
      struct seen *s)
{
  unsigned flags = 99;

  memset (s, 0, sizeof *s);
  expect_ok (image_diff_flags (st, image, from, to, diff_cb, s, &flags));
  return flags;
}

/* Power loss: the map matches the objects after the open, and every diff
 * across the interval of the crash reports all and says so, before and
 * after the next snapshot; a diff of a later interval is exact again. */
static void
test_power_loss (void **state)
{
  struct test_fixture *fx = *state;
  struct image *img1, *img2, *ro;
  struct image_info info;
  struct store *st2;
  struct seen s;
  char path[4200], oid[96], buf[BS], want[BS];
  uint8_t zero = 0;
  int fd, k;

  setenv ("VBK_TEST_BOOT_ID", "boot-A", 1);
  assert_int_equal (image_create (fx->st, "p", NOBJ * (uint64_t) OBJSZ,
                                  OBJSZ), 0);
  assert_int_equal (image_open (fx->st, "p", 0, &img1), 0);
  image_get_info (img1, &info);
  assert_int_equal (markers (fx->st, info.id), 1);
  write_obj (img1, 1, 'a');
  write_obj (img1, 2, 'b');
  assert_int_equal (image_flush (img1), 0);
  assert_int_equal (image_snap_create (img1, "s1", NULL), 0);
  write_obj (img1, 3, 'c');
  write_obj (img1, 5, 'd');
  write_obj (img1, 7, 'e');
  /* The machine goes down: img1 is never closed.  Lost: the log records
   * of 3, 5 and 7, the map byte of 7, the data of 5. */
  snprintf (oid, sizeof oid, "vbk_changes.%s", info.id);
  obj_path (fx, oid, path, sizeof path);
  assert_int_equal (truncate (path, 0), 0);
  snprintf (oid, sizeof oid, "vbk_object_map.%s", info.id);
  obj_path (fx, oid, path, sizeof path);
  fd = open (path, O_WRONLY);
  assert_true (fd >= 0);
  assert_int_equal (pwrite (fd, &zero, 1, 7), 1);
  close (fd);
  image_data_oid (info.id, 5, oid, sizeof oid);
  obj_path (fx, oid, path, sizeof path);
  assert_int_equal (unlink (path), 0);

  setenv ("VBK_TEST_BOOT_ID", "boot-B", 1);
  assert_int_equal (store_open (fx->uri, &st2), 0);
  assert_int_equal (image_open (st2, "p", 0, &img2), 0);
  assert_int_equal (markers (st2, info.id), 1);        /* ours only */
  for (k = 0; k < NOBJ; k++)
    assert_int_equal (image_object_state (img2, k) != IMAGE_OBJ_ABSENT,
                      k == 1 || k == 2 || k == 3 || k == 7);
  /* The stored map too (a read-only open reads it as it is). */
  assert_int_equal (image_open (st2, "p", IMAGE_OPEN_RDONLY, &ro), 0);
  for (k = 0; k < NOBJ; k++)
    assert_int_equal (image_object_state (ro, k) != IMAGE_OBJ_ABSENT,
                      k == 1 || k == 2 || k == 3 || k == 7);
  image_close (ro);
  memset (want, 'e', BS);
  assert_int_equal (image_read (img2, buf, BS, 7 * (uint64_t) OBJSZ + BS),
                    BS);
  assert_memory_equal (buf, want, BS);
  memset (want, 0, BS);
  assert_int_equal (image_read (img2, buf, BS, 5 * (uint64_t) OBJSZ + BS),
                    BS);
  assert_memory_equal (buf, want, BS);

  /* Before the next snapshot: from s1 to the live image. */
  assert_int_equal (diff (st2, "p", "s1", NULL, &s), IMAGE_DIFF_CBT_RESET);
  for (k = 0; k < NOBJ; k++)
    assert_int_equal (s.objs[k], 1);
  /* After it: s1..s2 still spans the crash; s2..live does not. */
  assert_int_equal (image_snap_create (img2, "s2", NULL), 0);
  write_obj (img2, 9, 'f');
  assert_int_equal (diff (st2, "p", "s1", "s2", &s), IMAGE_DIFF_CBT_RESET);
  for (k = 0; k < NOBJ; k++)
    assert_int_equal (s.objs[k], 1);
  assert_int_equal (diff (st2, "p", "s2", NULL, &s), 0);
  for (k = 0; k < NOBJ; k++)
    assert_int_equal (s.objs[k], k == 9);
  /* A snapshot removed merges the reset into the next interval. */
  assert_int_equal (image_snap_create (img2, "s3", NULL), 0);
  assert_int_equal (image_snap_remove (st2, "p", "s2"), 0);
  assert_int_equal (diff (st2, "p", "s1", "s3", &s), IMAGE_DIFF_CBT_RESET);

  image_close (img2);
  assert_int_equal (markers (st2, info.id), 0);
  image_close (img1);
  store_close (st2);
}

/* Process crash: a marker of this boot left by a process that is gone is
 * removed, and nothing is rebuilt or reset (the page cache outlived the
 * process; the map byte the test cleared stays clear). */
static void
test_process_crash (void **state)
{
  struct test_fixture *fx = *state;
  struct image *img;
  struct image_info info;
  struct seen s;
  char path[4200], oid[96];
  uint8_t zero = 0;
  int fd, k;

  setenv ("VBK_TEST_BOOT_ID", "boot-A", 1);
  assert_int_equal (image_create (fx->st, "q", NOBJ * (uint64_t) OBJSZ,
                                  OBJSZ), 0);
  assert_int_equal (image_open (fx->st, "q", 0, &img), 0);
  image_get_info (img, &info);
  assert_int_equal (image_snap_create (img, "s1", NULL), 0);
  write_obj (img, 3, 'c');
  image_close (img);
  assert_int_equal (markers (fx->st, info.id), 0);
  /* A writer of this boot that died (no such process). */
  snprintf (oid, sizeof oid, "vbk_open.%s", info.id);
  assert_int_equal (store_omap_set (fx->st, oid, "2147483646.1.1", "boot-A",
                                    6), 0);
  /* A probe: a rebuild would set this byte again. */
  snprintf (oid, sizeof oid, "vbk_object_map.%s", info.id);
  obj_path (fx, oid, path, sizeof path);
  fd = open (path, O_WRONLY);
  assert_true (fd >= 0);
  assert_int_equal (pwrite (fd, &zero, 1, 3), 1);
  close (fd);

  assert_int_equal (image_open (fx->st, "q", 0, &img), 0);
  assert_int_equal (markers (fx->st, info.id), 1);
  assert_int_equal (image_object_state (img, 3), IMAGE_OBJ_ABSENT);
  assert_int_equal (diff (fx->st, "q", "s1", NULL, &s), 0);
  for (k = 0; k < NOBJ; k++)
    assert_int_equal (s.objs[k], k == 3);
  image_close (img);
  assert_int_equal (markers (fx->st, info.id), 0);
}

#define T(name) cmocka_unit_test_setup_teardown (name, setup, teardown)

int
main (void)
{
  const struct CMUnitTest tests[] = {
    T (test_power_loss),
    T (test_process_crash),
  };

  setenv ("VBK_TEST_STORE_KIND", "local", 1);
  return cmocka_run_group_tests_name ("image-openmark", tests, NULL, NULL);
}
