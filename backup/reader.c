/* SPDX-License-Identifier: MIT
 *
 * reader.c - random access to one backup: what vbk mount, restore and
 * verify read through.
 *
 * DESIGN: opening loads the manifest and the index (checked against the
 * manifest's SHA-256).  A read maps each byte range to its chunk; holes
 * (the all-zero digest) read as zeros without I/O; a chunk is fetched and
 * checked whole (backup_chunk_read) into a small LRU cache of decoded
 * chunks, so a file system's many small reads of one chunk cost one
 * fetch; a read of a whole chunk (restore, verify) decodes straight into
 * the caller's buffer and leaves the cache alone.  The cache lock guards memory only: fetches run unlocked, and
 * two threads missing the same chunk both fetch it (rare and harmless).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/util.h"
#include "internal.h"

#define CACHE_SLOTS 8

struct slot {
  uint64_t idx;
  uint64_t used;                /* LRU clock; 0 = empty */
  char *buf;
};

struct backup_reader {
  struct backup_repo *r;
  struct backup_manifest m;
  struct backup_index ix;
  pthread_mutex_t lock;
  uint64_t clock;
  struct slot cache[CACHE_SLOTS];
};

int
backup_reader_open (struct backup_repo *r, const char *id,
                    struct backup_reader **out)
{
  struct backup_reader *rd = calloc (1, sizeof *rd);
  int e;

  if (rd == NULL)
    return vbk_errno (-ENOMEM, "backup: reader");
  rd->r = r;
  if ((e = backup_manifest_load (r, id, &rd->m, NULL)) < 0
      || (e = backup_index_load (r, &rd->m, &rd->ix)) < 0) {
    free (rd);
    return e;
  }
  pthread_mutex_init (&rd->lock, NULL);
  *out = rd;
  return 0;
}

uint64_t
backup_reader_size (struct backup_reader *rd)
{
  return rd->m.size;
}

const char *
backup_reader_image (struct backup_reader *rd)
{
  return rd->m.image;
}

uint32_t
backup_reader_chunk_size (struct backup_reader *rd)
{
  return rd->m.chunk_size;
}

void
backup_reader_close (struct backup_reader *rd)
{
  int i;

  if (rd == NULL)
    return;
  for (i = 0; i < CACHE_SLOTS; i++)
    free (rd->cache[i].buf);
  backup_index_free (&rd->ix);
  pthread_mutex_destroy (&rd->lock);
  free (rd);
}

int
backup_reader_extents (struct backup_reader *rd, uint64_t off, uint64_t len,
                       image_extent_cb cb, void *arg)
{
  uint64_t cs = rd->m.chunk_size, end, start, i;
  int alloc, a, e;

  if (off >= rd->m.size)
    return 0;
  end = len > rd->m.size - off ? rd->m.size : off + len;
  start = off;
  i = off / cs;
  alloc = !backup_digest_is_hole (rd->ix.digest[i]);
  for (i++; i * cs < end; i++) {
    a = !backup_digest_is_hole (rd->ix.digest[i]);
    if (a != alloc) {
      if ((e = cb (arg, start, i * cs - start, alloc)))
        return e;
      start = i * cs;
      alloc = a;
    }
  }
  return cb (arg, start, end - start, alloc);
}

static int
chunk_error (struct backup_reader *rd, uint64_t idx, int e)
{
  char msg[1024];

  snprintf (msg, sizeof msg, "%s", vbk_error ());
  vbk_set_error ("backup %s: offset %" PRIu64 ": %s", rd->m.id,
                 idx * rd->m.chunk_size,
                 msg + (strncmp (msg, "backup: ", 8) == 0 ? 8 : 0));
  return e;
}

/* Reads all of chunk IDX (LEN bytes) into BUF. */
static int
read_whole (struct backup_reader *rd, uint64_t idx, char *buf, size_t len)
{
  int e;

  if ((e = backup_chunk_read (rd->r, rd->ix.digest[idx], buf, len)) < 0)
    return chunk_error (rd, idx, e);
  return 0;
}

/* Copies LEN bytes at offset CO of chunk IDX into BUF. */
static int
read_chunk (struct backup_reader *rd, uint64_t idx, char *buf, size_t co,
            size_t len)
{
  uint64_t cs = rd->m.chunk_size;
  size_t clen = MIN (cs, rd->m.size - idx * cs);
  struct slot *victim = NULL;
  char *data;
  int i, e;

  pthread_mutex_lock (&rd->lock);
  for (i = 0; i < CACHE_SLOTS; i++)
    if (rd->cache[i].used && rd->cache[i].idx == idx) {
      rd->cache[i].used = ++rd->clock;
      memcpy (buf, rd->cache[i].buf + co, len);
      pthread_mutex_unlock (&rd->lock);
      return 0;
    }
  pthread_mutex_unlock (&rd->lock);

  if ((data = malloc (clen)) == NULL)
    return vbk_errno (-ENOMEM, "backup: read");
  if ((e = backup_chunk_read (rd->r, rd->ix.digest[idx], data, clen)) < 0) {
    free (data);
    return chunk_error (rd, idx, e);
  }
  memcpy (buf, data + co, len);

  pthread_mutex_lock (&rd->lock);
  for (i = 0; i < CACHE_SLOTS; i++)
    if (victim == NULL || rd->cache[i].used < victim->used)
      victim = &rd->cache[i];
  free (victim->buf);
  victim->buf = data;
  victim->idx = idx;
  victim->used = ++rd->clock;
  pthread_mutex_unlock (&rd->lock);
  return 0;
}

ssize_t
backup_reader_pread (struct backup_reader *rd, void *buf, size_t len,
                     uint64_t off)
{
  uint64_t cs = rd->m.chunk_size, idx;
  size_t done = 0, co, n;
  int e;

  if (off > rd->m.size || len > rd->m.size - off)
    return vbk_errno (-EINVAL, "backup %s: read past the end", rd->m.id);
  while (done < len) {
    idx = (off + done) / cs;
    co = (off + done) % cs;
    n = MIN (len - done, cs - co);
    if (backup_digest_is_hole (rd->ix.digest[idx]))
      memset ((char *) buf + done, 0, n);
    else if (co == 0 && n == MIN (cs, rd->m.size - idx * cs)) {
      /* A whole chunk (restore, verify): decoded straight into BUF, not
       * through the cache, which only small reads reuse. */
      if ((e = read_whole (rd, idx, (char *) buf + done, n)) < 0)
        return e;
    }
    else if ((e = read_chunk (rd, idx, (char *) buf + done, co, n)) < 0)
      return e;
    done += n;
  }
  return len;
}

/* ---- As a copy endpoint ------------------------------------------------------ */

static ssize_t
ep_pread (void *h, void *buf, size_t len, uint64_t off)
{
  return backup_reader_pread (h, buf, len, off);
}

static int
ep_extents (void *h, uint64_t off, uint64_t len, image_extent_cb cb,
            void *arg)
{
  return backup_reader_extents (h, off, len, cb, arg);
}

static uint64_t
ep_size (void *h)
{
  return backup_reader_size (h);
}

static const struct copy_ops reader_ops = {
  .kind = "backup",
  .pread = ep_pread,
  .extents = ep_extents,
  .size = ep_size,
};

int
backup_reader_endpoint (struct backup_reader *rd, struct copy_endpoint **out)
{
  struct copy_endpoint *ep = calloc (1, sizeof *ep);

  if (ep == NULL)
    return vbk_errno (-ENOMEM, "backup: endpoint");
  ep->ops = &reader_ops;
  ep->h = rd;
  snprintf (ep->name, sizeof ep->name, "backup %s", rd->m.id);
  *out = ep;
  return 0;
}

struct backup_index *
backup_reader_index (struct backup_reader *rd)
{
  return &rd->ix;
}

uint32_t
backup_reader_object_size (struct backup_reader *rd)
{
  return rd->m.object_size;
}
