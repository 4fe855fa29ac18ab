/* SPDX-License-Identifier: MIT
 *
 * test-vbkfs.c - the disk layer of vbk mount (fuse/disk.c) over an
 * in-memory source: holes read as zeros without I/O, SEEK_DATA/SEEK_HOLE
 * and allocated bytes follow the map, the chunk cache serves repeated
 * reads, readahead fetches ahead of a sequential reader, a failing
 * source gives EIO and nothing is cached, a failed check (a snapshot
 * removed) gives EIO and never the data read, and the cache stays within
 * its limit.  A source that checks in two steps (a backup: CRC-32 at
 * once, SHA-256 later) has each chunk checked in full once, off the
 * reader's path; a chunk that fails it reads as EIO from then on; with
 * the queue of checks full the check runs before the data is handed out.
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
  /* Two-step checks. */
  int unhashed;                 /* pread_unhashed calls */
  int verifies;                 /* verify calls */
  uint64_t bad_off;             /* verify fails for the chunk here */
  int block;                    /* verify of chunk 0 waits while set */
  /* Part reads. */
  int part_reads;               /* pread_part calls served */
  int unit_checks;              /* check_unit calls */
  uint64_t whole_off;           /* pread_part says -EAGAIN for this chunk
                                   (+1: 0 is none) */
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

/* The same with its checks in two steps, as a backup's. */
static ssize_t
m_pread_unhashed (void *h, void *buf, size_t len, uint64_t off)
{
  struct mem *m = h;

  __atomic_add_fetch (&m->unhashed, 1, __ATOMIC_SEQ_CST);
  return m_pread (h, buf, len, off);
}

static int
m_verify (void *h, const void *buf, size_t len, uint64_t off)
{
  struct mem *m = h;

  assert_int_equal (len, 4 * MiB);
  assert_memory_equal (buf, m->data + off, len);
  while (off == 0 && __atomic_load_n (&m->block, __ATOMIC_SEQ_CST))
    usleep (1000);
  __atomic_add_fetch (&m->verifies, 1, __ATOMIC_SEQ_CST);
  if (m->bad_off && off == m->bad_off)
    return vbk_errno (-EIO, "mem: chunk at %llu does not match its name",
                      (unsigned long long) off);
  return 0;
}

/* Both steps at once. */
static ssize_t
m_pread_full (void *h, void *buf, size_t len, uint64_t off)
{
  struct mem *m = h;

  if (m->bad_off && off == m->bad_off)
    return vbk_errno (-EIO, "mem: chunk at %llu does not match its name",
                      (unsigned long long) off);
  return m_pread (h, buf, len, off);
}

static const struct vbkfs_source_ops mem4v_ops = {
  .kind = "memory", .size = m_size, .pread = m_pread_full,
  .extents = m_extents,
  .check = m_check, .close = m_close, .chunk_size = m_chunk_size,
  .pread_unhashed = m_pread_unhashed, .verify = m_verify,
};

/* The same with part reads, as a backup of a 2.0 repository's. */
static ssize_t
m_pread_part (void *h, void *buf, size_t len, uint64_t off)
{
  struct mem *m = h;

  /* Inside one unit, never the whole of it. */
  assert_true (off / (4 * MiB) == (off + len - 1) / (4 * MiB));
  assert_true (len < 4 * MiB);
  if (m->whole_off && off / (4 * MiB) == (m->whole_off - 1) / (4 * MiB))
    return -EAGAIN;
  __atomic_add_fetch (&m->part_reads, 1, __ATOMIC_SEQ_CST);
  return m_pread (h, buf, len, off);
}

static int
m_check_unit (void *h, uint64_t off)
{
  struct mem *m = h;

  assert_int_equal (off % (4 * MiB), 0);
  __atomic_add_fetch (&m->unit_checks, 1, __ATOMIC_SEQ_CST);
  if (m->bad_off && off == m->bad_off)
    return vbk_errno (-EIO, "mem: chunk at %llu does not match its name",
                      (unsigned long long) off);
  return 0;
}

static const struct vbkfs_source_ops mem4p_ops = {
  .kind = "memory", .size = m_size, .pread = m_pread_full,
  .extents = m_extents,
  .check = m_check, .close = m_close, .chunk_size = m_chunk_size,
  .pread_unhashed = m_pread_unhashed, .verify = m_verify,
  .pread_part = m_pread_part, .check_unit = m_check_unit,
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

/* Waits (no timing asserted) until the disk finished N later checks. */
static struct vbkfs_disk_stats
wait_checks (struct vbkfs_disk *d, uint64_t n)
{
  struct vbkfs_disk_stats s;
  int i;

  for (i = 0; i < 20000; i++) {
    vbkfs_disk_get_stats (d, &s);
    if (s.verified + s.verify_failed >= n)
      break;
    usleep (1000);
  }
  assert_int_equal (s.verified + s.verify_failed, n);
  return s;
}

static void
test_checked_later (void **state)
{
  struct mem *m = mem_new ();
  struct vbkfs_source src = { .ops = &mem4v_ops, .h = m, .name = "mem4v" };
  struct vbkfs_disk *d = NULL;
  struct vbkfs_disk_stats s;
  char buf[4096];
  uint64_t i, off;

  /* All 16 chunks allocated (zeros but for the pattern). */
  m->ext[0][0] = 0;
  m->ext[0][1] = m->size;
  m->next = 1;
  m->bad_off = 8 * MiB;
  assert_int_equal (vbkfs_disk_open (&src, 1, &d), 0);  /* a few chunks */
  vbkfs_disk_check_later (d);

  /* A reader's fetch takes the cheap check; the full one follows. */
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 5 * MiB + 100), 4096);
  assert_memory_equal (buf, m->data + 5 * MiB + 100, 4096);
  assert_int_equal (m->unhashed, 1);
  s = wait_checks (d, 1);
  assert_int_equal (s.verified, 1);
  assert_int_equal (m->verifies, 1);

  /* Every chunk once, in an order without runs (no readahead), with a
   * cache smaller than that: chunk 1 is evicted, fetched again, and not
   * checked in full again. */
  for (i = 0; i < 16; i++) {
    off = ((i * 5) % 16) * 4 * MiB + 4096;
    if (off / (4 * MiB) == 2 || off / (4 * MiB) == 1)
      continue;
    assert_int_equal (vbkfs_disk_pread (d, buf, 4096, off), 4096);
    assert_memory_equal (buf, m->data + off, 4096);
  }
  s = wait_checks (d, 15);
  assert_int_equal (m->verifies, 15);
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 5 * MiB), 4096);
  assert_memory_equal (buf, m->data + 5 * MiB, 4096);
  assert_int_equal (m->unhashed, 16);
  vbkfs_disk_get_stats (d, &s);
  assert_int_equal (s.verified, 15);
  assert_int_equal (m->verifies, 15);

  /* A chunk that passes the cheap check but not the full one: handed
   * out once, then EIO for good (its data cannot change).  (Not right
   * after chunk 1: a reader going on to the next chunk checks in full.) */
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 48 * MiB), 4096);
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 8 * MiB + 4096), 4096);
  s = wait_checks (d, 16);
  assert_int_equal (s.verify_failed, 1);
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 8 * MiB + 4096), -EIO);
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 9 * MiB), -EIO);
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 12 * MiB), 4096);
  vbkfs_disk_close (d);
  mem_free (m);
}

/* Waits (no timing asserted) until the disk finished N checks of
 * chunks read in parts. */
static struct vbkfs_disk_stats
wait_part_checks (struct vbkfs_disk *d, uint64_t n)
{
  struct vbkfs_disk_stats s;
  int i;

  for (i = 0; i < 20000; i++) {
    vbkfs_disk_get_stats (d, &s);
    if (s.part_checked + s.part_failed >= n)
      break;
    usleep (1000);
  }
  assert_int_equal (s.part_checked + s.part_failed, n);
  return s;
}

/* Part reads (vbk mount of a parted backup): a small read that is not
 * part of a run is served by pread_part, not cached as a chunk, and its
 * chunk is checked in full once (check_unit) off the reader's path; a
 * chunk that fails that check reads as EIO from then on; a second read
 * of the same chunk, or of the next one, fetches the chunk whole into
 * the cache; a chunk the source cannot read in parts (-EAGAIN) is
 * fetched whole.  Without vbkfs_disk_check_later no part reads. */
static void
test_part_reads (void **state)
{
  struct mem *m = mem_new ();
  struct vbkfs_source src = { .ops = &mem4p_ops, .h = m, .name = "mem4p" };
  struct vbkfs_disk *d = NULL;
  struct vbkfs_disk_stats s;
  char buf[8192];
  uint64_t i, off;

  m->ext[0][0] = 0;
  m->ext[0][1] = m->size;
  m->next = 1;
  for (i = 0; i < m->size; i++)
    m->data[i] = (unsigned char) (i * 11 + i / 4093);
  m->bad_off = 44 * MiB;
  m->whole_off = 52 * MiB + 1;
  assert_int_equal (vbkfs_disk_open (&src, 0, &d), 0);
  vbkfs_disk_check_later (d);

  /* Chunks 5, 2, 9, 12 (no run): each served in parts, checked once. */
  for (i = 0; i < 4; i++) {
    off = ((uint64_t) (i == 0 ? 5 : i == 1 ? 2 : i == 2 ? 9 : 12)) * 4 * MiB
      + 4096 * 7 + i;
    assert_int_equal (vbkfs_disk_pread (d, buf, sizeof buf, off), sizeof buf);
    assert_memory_equal (buf, m->data + off, sizeof buf);
  }
  assert_int_equal (m->part_reads, 4);
  assert_int_equal (m->preads, 4);              /* nothing whole */
  s = wait_part_checks (d, 4);
  assert_int_equal (s.part_checked, 4);
  assert_int_equal (s.part_reads, 4);
  assert_int_equal (m->unit_checks, 4);
  /* Chunk 2 again, not right after it: parts again, no second check. */
  assert_int_equal (vbkfs_disk_pread (d, buf, 100, 2 * 4 * MiB + 5), 100);
  assert_memory_equal (buf, m->data + 2 * 4 * MiB + 5, 100);
  assert_int_equal (m->part_reads, 5);
  /* Then again in chunk 2: a second read of one chunk fetches it whole
   * (cached: the next reads of it cost nothing). */
  assert_int_equal (vbkfs_disk_pread (d, buf, 100, 2 * 4 * MiB + MiB), 100);
  assert_memory_equal (buf, m->data + 2 * 4 * MiB + MiB, 100);
  assert_int_equal (m->part_reads, 5);
  assert_int_equal (m->preads, 6);
  assert_int_equal (vbkfs_disk_pread (d, buf, 100, 2 * 4 * MiB + 3 * MiB), 100);
  assert_int_equal (m->preads, 6);
  /* A chunk whose full check fails: served once in parts, then EIO. */
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 44 * MiB + 8192), 4096);
  assert_memory_equal (buf, m->data + 44 * MiB + 8192, 4096);
  s = wait_part_checks (d, 5);
  assert_int_equal (s.part_failed, 1);
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 44 * MiB + 8192), -EIO);
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 47 * MiB), -EIO);
  /* A chunk not in parts: fetched whole, checked the usual way. */
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 52 * MiB + 4096), 4096);
  assert_memory_equal (buf, m->data + 52 * MiB + 4096, 4096);
  assert_int_equal (m->part_reads, 6);
  /* A whole chunk read at once goes the cached way. */
  {
    char *big = malloc (4 * MiB);

    assert_int_equal (vbkfs_disk_pread (d, big, 4 * MiB, 60 * MiB),
                      (ssize_t) (4 * MiB));
    assert_memory_equal (big, m->data + 60 * MiB, 4 * MiB);
    free (big);
  }
  assert_int_equal (m->part_reads, 6);
  vbkfs_disk_close (d);

  /* vbk files: every check before the data, so no part reads. */
  m->part_reads = 0;
  assert_int_equal (vbkfs_disk_open (&src, 0, &d), 0);
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 5 * 4 * MiB), 4096);
  assert_int_equal (m->part_reads, 0);
  vbkfs_disk_close (d);
  mem_free (m);
}

/* A reader going on to the next chunk not yet checked: the full check
 * at once (a sequential stream), not the cheap one and a later one. */
static void
test_checked_sequential (void **state)
{
  struct mem *m = mem_new ();
  struct vbkfs_source src = { .ops = &mem4v_ops, .h = m, .name = "mem4v" };
  struct vbkfs_disk *d = NULL;
  char buf[4096];

  assert_int_equal (vbkfs_disk_open (&src, 0, &d), 0);
  vbkfs_disk_check_later (d);
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 4 * MiB), 4096);
  assert_int_equal (m->unhashed, 1);
  wait_checks (d, 1);
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 8 * MiB), 4096);
  assert_memory_equal (buf, m->data + 8 * MiB, 4096);
  assert_int_equal (m->unhashed, 1);
  assert_int_equal (m->verifies, 1);
  vbkfs_disk_close (d);
  mem_free (m);
}

/* Without vbkfs_disk_check_later (vbk files): the full check before
 * the data is handed out. */
static void
test_checked_at_once (void **state)
{
  struct mem *m = mem_new ();
  struct vbkfs_source src = { .ops = &mem4v_ops, .h = m, .name = "mem4v" };
  struct vbkfs_disk *d = NULL;
  char buf[4096];

  m->bad_off = 8 * MiB;
  assert_int_equal (vbkfs_disk_open (&src, 0, &d), 0);
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 5 * MiB), 4096);
  assert_memory_equal (buf, m->data + 5 * MiB, 4096);
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 8 * MiB), -EIO);
  assert_int_equal (m->unhashed, 0);
  assert_int_equal (m->verifies, 0);    /* pread checked in full */
  vbkfs_disk_close (d);
  mem_free (m);
}

static void
test_check_queue_full (void **state)
{
  struct mem *m = mem_new ();
  struct vbkfs_source src = { .ops = &mem4v_ops, .h = m, .name = "mem4v" };
  struct vbkfs_disk *d = NULL;
  struct vbkfs_disk_stats s;
  char buf[4096];
  int i;

  m->ext[0][0] = 0;
  m->ext[0][1] = m->size;
  m->next = 1;
  m->bad_off = 20 * MiB;
  assert_int_equal (vbkfs_disk_open (&src, 0, &d), 0);
  vbkfs_disk_check_later (d);
  /* The check of chunk 0 waits: it and the next three fill the queue
   * (VERIFY_MAX, 4); the fifth reader checks in full itself, and gets
   * EIO at once for a chunk that fails it. */
  m->block = 1;
  for (i = 0; i < 4; i++)
    assert_int_equal (vbkfs_disk_pread (d, buf, 4096, (uint64_t) i * 8 * MiB),
                      4096);
  assert_int_equal (m->verifies, 0);
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 20 * MiB), -EIO);
  assert_int_equal (m->verifies, 1);
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 20 * MiB + 4096), -EIO);
  assert_int_equal (m->verifies, 1);    /* found bad: not read again */
  assert_int_equal (vbkfs_disk_pread (d, buf, 4096, 44 * MiB), 4096);
  assert_memory_equal (buf, m->data + 44 * MiB, 4096);
  assert_int_equal (m->verifies, 2);    /* the queue is still full */
  m->block = 0;
  s = wait_checks (d, 6);
  assert_int_equal (s.verified, 5);
  assert_int_equal (s.verify_failed, 1);
  assert_int_equal (m->verifies, 6);
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
    cmocka_unit_test (test_checked_later),
    cmocka_unit_test (test_checked_at_once),
    cmocka_unit_test (test_checked_sequential),
    cmocka_unit_test (test_part_reads),
    cmocka_unit_test (test_check_queue_full),
  };

  log_level = LOG_LVL_ERROR - 1;        /* the failures are expected */
  return cmocka_run_group_tests (tests, NULL, NULL);
}
