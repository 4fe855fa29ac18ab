/* SPDX-License-Identifier: MIT
 *
 * test-vbkfs.c - the disk layer of vbk mount (fuse/disk.c) over an
 * in-memory source: holes read as zeros without I/O, SEEK_DATA/SEEK_HOLE
 * and allocated bytes follow the map, the chunk cache serves repeated
 * reads, readahead fetches ahead of a sequential reader, a failing
 * source gives EIO and nothing is cached, a failed check (a snapshot
 * removed) gives EIO and never the data read, and the cache stays within
 * its limit.
 */
/* VBK_TEST_LINKS: vbkfs-internals */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "common/log.h"
#include "fuse/internal.h"

#define MiB (UINT64_C (1) << 20)

struct mem {
  uint64_t size;
  unsigned char *data;
  uint64_t ext[8][2];           /* allocated extents */
  int next;
  int preads;                   /* calls */
  uint64_t bytes;               /* bytes read */
  int fail;                     /* pread fails with -EIO */
  int check_fail;               /* check fails with -EIO */
  int closed;
};

static uint64_t
m_size (void *h)
{
  return ((struct mem *) h)->size;
}

static ssize_t
m_pread (void *h, void *buf, size_t len, uint64_t off)
{
  struct mem *m = h;

  __atomic_add_fetch (&m->preads, 1, __ATOMIC_SEQ_CST);
  __atomic_add_fetch (&m->bytes, len, __ATOMIC_SEQ_CST);
  if (m->fail)
    return vbk_errno (-EIO, "mem: chunk at %llu: injected",
                      (unsigned long long) off);
  assert_true (off + len <= m->size);
  memcpy (buf, m->data + off, len);
  return (ssize_t) len;
}

static int
m_extents (void *h, uint64_t off, uint64_t len, image_extent_cb cb, void *arg)
{
  struct mem *m = h;
  uint64_t pos = 0;
  int i, r;

  for (i = 0; i < m->next; i++) {
    if (m->ext[i][0] > pos && (r = cb (arg, pos, m->ext[i][0] - pos, 0)))
      return r;
    if ((r = cb (arg, m->ext[i][0], m->ext[i][1], 1)))
      return r;
    pos = m->ext[i][0] + m->ext[i][1];
  }
  return pos < m->size ? cb (arg, pos, m->size - pos, 0) : 0;
}

static int
m_check (void *h)
{
  return ((struct mem *) h)->check_fail ? vbk_errno (-EIO, "mem: gone") : 0;
}

static void
m_close (void *h)
{
  ((struct mem *) h)->closed = 1;
}

static const struct vbkfs_source_ops mem_ops = {
  .kind = "memory", .size = m_size, .pread = m_pread, .extents = m_extents,
  .check = m_check, .close = m_close,
};

/* The same source with a unit of 4 MiB, as a backup with its chunks. */
static uint32_t
m_chunk_size (void *h)
{
  return 4 * MiB;
}

static const struct vbkfs_source_ops mem4_ops = {
  .kind = "memory", .size = m_size, .pread = m_pread, .extents = m_extents,
  .check = m_check, .close = m_close, .chunk_size = m_chunk_size,
};

/* 64 MiB with data (a pattern) at [4, 12) MiB and [40, 41) MiB. */
static struct mem *
mem_new (void)
{
  struct mem *m = calloc (1, sizeof *m);
  uint64_t i;

  m->size = 64 * MiB;
  m->data = calloc (1, m->size);
  m->ext[0][0] = 4 * MiB;
  m->ext[0][1] = 8 * MiB;
  m->ext[1][0] = 40 * MiB;
  m->ext[1][1] = 1 * MiB;
  m->next = 2;
  for (i = 4 * MiB; i < 12 * MiB; i++)
    m->data[i] = (unsigned char) (i * 7 + 1);
  for (i = 40 * MiB; i < 41 * MiB; i++)
    m->data[i] = (unsigned char) (i * 13 + 5);
  return m;
}

static struct vbkfs_disk *
disk_new (struct mem *m, uint64_t cache)
{
  struct vbkfs_source src = { .ops = &mem_ops, .h = m, .name = "mem" };
  struct vbkfs_disk *d = NULL;

  assert_int_equal (vbkfs_disk_open (&src, cache, &d), 0);
  return d;
}

static void
mem_free (struct mem *m)
{
  free (m->data);
  free (m);
}

static void
test_holes_and_data (void **state)
{
  struct mem *m = mem_new ();
  struct vbkfs_disk *d = disk_new (m, 0);
  char *buf = malloc (16 * MiB);

  /* A read entirely in a hole does no I/O. */
  memset (buf, 0xaa, MiB);
  assert_int_equal (vbkfs_disk_pread (d, buf, MiB, 20 * MiB), (ssize_t) MiB);
  assert_int_equal (m->preads, 0);
  for (size_t i = 0; i < MiB; i++)
    assert_int_equal (buf[i], 0);
  /* Across hole, data, hole. */
  assert_int_equal (vbkfs_disk_pread (d, buf, 16 * MiB, 0), (ssize_t) (16 * MiB));
  assert_memory_equal (buf, m->data, 16 * MiB);
  assert_true (m->bytes <= 8 * MiB + 8 * MiB);     /* data (+readahead) */
  /* Clipped at the end; nothing past it. */
  assert_int_equal (vbkfs_disk_pread (d, buf, MiB, 64 * MiB - 100), 100);
  assert_int_equal (vbkfs_disk_pread (d, buf, MiB, 64 * MiB), 0);
  assert_int_equal (vbkfs_disk_size (d), 64 * MiB);
  vbkfs_disk_close (d);
  assert_int_equal (m->closed, 1);
  free (buf);
  mem_free (m);
}

static void
test_seek_and_allocated (void **state)
{
  struct mem *m = mem_new ();
  struct vbkfs_disk *d = disk_new (m, 0);

  assert_int_equal (vbkfs_disk_allocated (d, 0, 64 * MiB), 9 * MiB);
  assert_int_equal (vbkfs_disk_allocated (d, 10 * MiB, 31 * MiB), 3 * MiB);
  assert_int_equal (vbkfs_disk_seek (d, 0, 64 * MiB, 0, SEEK_DATA), 4 * MiB);
  assert_int_equal (vbkfs_disk_seek (d, 0, 64 * MiB, 5 * MiB, SEEK_DATA),
                    5 * MiB);
  assert_int_equal (vbkfs_disk_seek (d, 0, 64 * MiB, 5 * MiB, SEEK_HOLE),
                    12 * MiB);
  assert_int_equal (vbkfs_disk_seek (d, 0, 64 * MiB, 12 * MiB, SEEK_DATA),
                    40 * MiB);
  assert_int_equal (vbkfs_disk_seek (d, 0, 64 * MiB, 0, SEEK_HOLE), 0);
  assert_int_equal (vbkfs_disk_seek (d, 0, 64 * MiB, 41 * MiB, SEEK_DATA),
                    -ENXIO);
  assert_int_equal (vbkfs_disk_seek (d, 0, 64 * MiB, 64 * MiB, SEEK_HOLE),
                    -ENXIO);
  /* Within a part of the disk: offsets relative to its start, the hole
   * at its end. */
  assert_int_equal (vbkfs_disk_seek (d, 8 * MiB, 2 * MiB, 0, SEEK_DATA), 0);
  assert_int_equal (vbkfs_disk_seek (d, 8 * MiB, 2 * MiB, 0, SEEK_HOLE),
                    2 * MiB);
  assert_int_equal (vbkfs_disk_seek (d, 20 * MiB, 10 * MiB, 0, SEEK_DATA),
                    -ENXIO);
  vbkfs_disk_close (d);
  mem_free (m);
}

/* A source with a chunk size: whole aligned chunks are fetched, each
 * once, and every byte (data, holes, the last chunk) reads right. */
static void
test_source_chunks (void **state)
{
  struct mem *m = mem_new ();
  struct vbkfs_source src = { .ops = &mem4_ops, .h = m, .name = "mem4" };
  struct vbkfs_disk *d = NULL;
  char *buf = malloc (9 * MiB);
  uint64_t off;
  int i;

  assert_int_equal (vbkfs_disk_open (&src, 16 * MiB, &d), 0);
  /* One 4 KiB read: one fetch of the whole chunk [4, 8) MiB. */
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 5 * MiB + 100), 4096);
  assert_memory_equal (buf, m->data + 5 * MiB + 100, 4096);
  assert_int_equal (m->preads, 1);
  assert_int_equal (m->bytes, 4 * MiB);
  for (i = 0; i < 50; i++) {
    off = 4 * MiB + (uint64_t) i * 81920;
    assert_int_equal (vbkfs_disk_pread (d, buf, 4096, off), 4096);
    assert_memory_equal (buf, m->data + off, 4096);
  }
  assert_int_equal (m->preads, 1);
  /* Across data, a chunk boundary and a hole. */
  assert_int_equal (vbkfs_disk_pread (d, buf, 9 * MiB, 3 * MiB + 7),
                    (ssize_t) (9 * MiB));
  assert_memory_equal (buf, m->data + 3 * MiB + 7, 9 * MiB);
  /* The last bytes of the disk. */
  assert_int_equal (vbkfs_disk_pread (d, buf, MiB, 64 * MiB - 100), 100);
  assert_memory_equal (buf, m->data + 64 * MiB - 100, 100);
  vbkfs_disk_close (d);
  mem_free (m);
  free (buf);
}

static void
test_cache_serves_again (void **state)
{
  struct mem *m = mem_new ();
  struct vbkfs_disk *d = disk_new (m, 0);
  struct vbkfs_disk_stats s;
  char buf[4096];
  int i, before;

  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 40 * MiB + 8192), 4096);
  before = m->preads;
  assert_true (before >= 1);
  for (i = 0; i < 100; i++) {
    assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 40 * MiB + 4096 * (i % 60)),
                      4096);
    assert_memory_equal (buf, m->data + 40 * MiB + 4096 * (i % 60), 4096);
  }
  assert_int_equal (m->preads, before);
  vbkfs_disk_get_stats (d, &s);
  assert_true (s.hits >= 100);
  vbkfs_disk_close (d);
  mem_free (m);
}

static void
test_readahead (void **state)
{
  struct mem *m = mem_new ();
  struct vbkfs_disk *d = disk_new (m, 0);
  struct vbkfs_disk_stats s;
  char buf[65536];
  uint64_t off;
  int i;

  /* 2 MiB read in a row: the window then reaches over the data at
   * [6, 12) MiB that no reader asks for, so readahead must fetch some of
   * it however late its passes run. */
  for (off = 4 * MiB; off < 6 * MiB; off += sizeof buf) {
    assert_int_equal (vbkfs_disk_pread (d, buf, sizeof buf, off), sizeof buf);
    assert_memory_equal (buf, m->data + off, sizeof buf);
  }
  /* The readahead passes run by themselves: wait for their count (no
   * timing is asserted, only that it happened). */
  for (i = 0; i < 20000; i++) {
    vbkfs_disk_get_stats (d, &s);
    if (s.readahead > 0)
      break;
    usleep (1000);
  }
  assert_true (s.readahead > 0);
  /* What it fetched reads right. */
  for (off = 6 * MiB; off < 12 * MiB; off += sizeof buf) {
    assert_int_equal (vbkfs_disk_pread (d, buf, sizeof buf, off), sizeof buf);
    assert_memory_equal (buf, m->data + off, sizeof buf);
  }
  vbkfs_disk_close (d);
  mem_free (m);
}

static void
test_failing_source (void **state)
{
  struct mem *m = mem_new ();
  struct vbkfs_disk *d = disk_new (m, 0);
  char buf[4096];

  m->fail = 1;
  vbk_clear_error ();
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 5 * MiB), -EIO);
  /* Holes still read. */
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 30 * MiB), 4096);
  /* Nothing was cached: once the source works, the data is right. */
  m->fail = 0;
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 5 * MiB), 4096);
  assert_memory_equal (buf, m->data + 5 * MiB, 4096);
  vbkfs_disk_close (d);
  mem_free (m);
}

static void
test_check_fails (void **state)
{
  struct mem *m = mem_new ();
  struct vbkfs_disk *d = disk_new (m, 0);
  char buf[4096];

  /* Read, then the source says its data may be wrong: EIO, not data. */
  m->check_fail = 1;
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 6 * MiB), -EIO);
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 6 * MiB), -EIO);
  vbkfs_disk_close (d);
  mem_free (m);
}

static void
test_cache_limit (void **state)
{
  struct mem *m = mem_new ();
  struct vbkfs_disk *d = disk_new (m, 1);     /* the smallest cache */
  char buf[4096];
  uint64_t off;
  int before;

  /* Random-ish reads over 9 MiB of data with a cache of a few MiB: right
   * data, and old chunks are fetched again (they were evicted). */
  for (off = 4 * MiB; off < 12 * MiB; off += 256 * 1024)
    assert_int_equal (vbkfs_disk_pread (d, buf, 4096, off), 4096);
  before = m->preads;
  for (off = 4 * MiB; off < 12 * MiB; off += 512 * 1024) {
    assert_int_equal (vbkfs_disk_pread (d, buf, 4096, off), 4096);
    assert_memory_equal (buf, m->data + off, 4096);
  }
  assert_true (m->preads > before);
  vbkfs_disk_close (d);
  mem_free (m);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_holes_and_data),
    cmocka_unit_test (test_seek_and_allocated),
    cmocka_unit_test (test_source_chunks),
    cmocka_unit_test (test_cache_serves_again),
    cmocka_unit_test (test_readahead),
    cmocka_unit_test (test_failing_source),
    cmocka_unit_test (test_check_fails),
    cmocka_unit_test (test_cache_limit),
  };

  log_level = LOG_LVL_ERROR - 1;        /* the failures are expected */
  return cmocka_run_group_tests (tests, NULL, NULL);
}
