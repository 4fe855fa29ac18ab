/* SPDX-License-Identifier: MIT
 *
 * disk.c - a source seen as a disk: allocation map, chunk cache,
 * readahead.
 *
 * DESIGN: the allocation map is loaded once, at open, as a sorted array
 * of allocated extents: holes read as zeros without I/O, and SEEK_DATA /
 * SEEK_HOLE and st_blocks come from it.  Data is read in chunks of
 * 256 KiB, or of the source's chunk size if it is larger (a backup
 * decodes a whole chunk for any byte of it, so it is cached as one
 * piece: decoded once, copied once), aligned, kept in an LRU cache (a hash of chunk index
 * to entry, and a list from most to least recently used).  An entry is
 * LOADING while one thread fetches it; other readers of that chunk wait
 * for it instead of fetching it again.  A fetch reads from the source,
 * then asks the source whether that data is still right (check: a
 * snapshot under removal) before anyone sees it.  A failed fetch leaves
 * nothing in the cache (the next read tries again) and is logged once
 * with the reason naming the object or chunk.
 *
 * Readahead: once a reader has moved on from chunk to chunk over
 * RA_START_BYTES (one step for a backup's 4 MiB chunks; a file system's
 * metadata scans rarely run that far), up to RA_THREADS readahead passes
 * per disk, on the disk's own common/workq.c queue, fetch the next
 * RA_BYTES (at least two chunks), each taking the next run of up to
 * RA_BATCH_BYTES read with one source call, so that two chunks decode at
 * once (a backup's chunk costs CPU: a decompression and a SHA-256) while
 * readers copy out of a third.  A reader that moves the window queues a
 * pass when fewer than RA_THREADS are queued or running; a pass runs
 * until the window is used up.  It stops after a failed
 * fetch until a reader's own fetch succeeds, so that a failing store does
 * not make it evict the good chunks it still has.
 *
 * Checks in two steps (a backup: the CRC-32 of a chunk, then its
 * SHA-256 against its name; vbkfs_disk_check_later): a reader's own
 * fetch takes the cheap step, hands the chunk out, and queues the full
 * check on d->vq (one thread, at most VERIFY_MAX queued; beyond that the
 * reader checks at once); a reader going on from the chunk before (a
 * sequential stream that outran readahead) checks in full at once.  A bit per chunk remembers the chunks checked
 * in full, so a chunk evicted and fetched again takes the cheap step
 * only, and another the chunks that failed: those read as EIO for as
 * long as the disk is open (the source's data cannot change).
 * Readahead checks in full at once (it runs ahead of the readers).
 *
 * Part reads (a source with pread_part and check_unit: a backup whose
 * chunks are parted, vbk mount only): a reader's small read of a chunk
 * that is neither cached nor being fetched, and is neither the chunk the
 * reader used last nor the one after it (not a run), is served by
 * pread_part (only the parts it needs, each checked against its CRC-32)
 * and not cached here; the chunk is queued once (d->queued) for
 * check_unit on d->vq, which reads it whole and checks its digest; one
 * that fails it reads as EIO from then on, as with verify_run.  A second
 * read of the same chunk, or of the next, fetches it whole as above, so
 * sequential readers and file system metadata scans keep whole chunks
 * and readahead.  A source that cannot read a chunk in parts (one
 * written whole) says -EAGAIN and the chunk is fetched whole.
 *
 * Invariants: an entry is freed only when it is out of the hash and its
 * reference count is zero; eviction takes only READY entries that
 * nobody references.  All of the cache is under d->lock; copies out of
 * a chunk are made holding a reference, not the lock.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "common/workq.h"
#include "internal.h"

#define CHUNK_SHIFT_MIN 18                      /* 256 KiB */
#define CHUNK_SHIFT_MAX 26                      /* 64 MiB */
#define RA_BYTES (16u << 20)                    /* ahead */
#define RA_THREADS 2
#define RA_START_BYTES (1u << 20)               /* read in a row first */
#define RA_BATCH_BYTES (2u << 20)               /* per fetch */
#define RA_BATCH_MAX (RA_BATCH_BYTES >> CHUNK_SHIFT_MIN)
#define CACHE_DEFAULT (64u << 20)
#define LOGGED 8                                /* errors remembered */
#define VERIFY_MAX 4                            /* checks queued at most */

enum { CH_LOADING, CH_READY, CH_FAILED };

struct chunk {
  uint64_t idx;
  int state;
  int err;
  unsigned refs;
  bool hashed;
  char *data;
  struct chunk *hnext;
  struct chunk *prev, *next;            /* LRU, when READY and hashed */
};

struct extent {
  uint64_t off, len;
};

struct vbkfs_disk {
  struct vbkfs_source src;
  uint64_t size;
  unsigned shift;                       /* of the chunk size */
  uint32_t csize;                       /* 1 << shift */
  unsigned ra_chunks, ra_batch;
  struct extent *ext;                   /* allocated, sorted, merged */
  size_t next, ext_cap;

  pthread_mutex_t lock;
  pthread_cond_t cond;                  /* a LOADING entry changed */
  struct chunk **hash;
  size_t nhash;
  struct chunk lru;                     /* sentinel: next = newest */
  size_t nchunks, max_chunks;

  /* Readahead, under lock. */
  uint64_t last_idx;
  unsigned seq;
  uint64_t ra_from, ra_to;              /* chunks wanted ahead */
  struct workq *ra_q;                   /* NULL: no readahead */
  struct ra_pass {
    struct workq_item it;
    struct vbkfs_disk *d;
    bool busy;                          /* queued or running */
  } ra_pass[RA_THREADS];
  bool ra_stop;
  bool ra_off;                          /* after a failed fetch, until a
                                           reader's fetch succeeds */

  /* Checks left for later (a source with pread_unhashed and verify),
   * under lock; NULL bitmaps for other sources. */
  uint8_t *checked;                     /* a bit per chunk: checked in
                                           full once */
  uint8_t *bad;                         /* a bit per chunk: failed it */
  uint8_t *queued;                      /* a bit per chunk: its check
                                           after part reads is queued
                                           (NULL: no part reads) */
  bool later;                            /* checks may follow the data */
  struct workq *vq;                     /* NULL: every check at once */
  unsigned vpending;                    /* checks queued or running */

  struct vbkfs_disk_stats stats;
  char logged[LOGGED][160];             /* recent errors, under lock */
  unsigned nlogged;
};

/* A chunk handed out unhashed, to be checked in full on d->vq. */
struct verify_job {
  struct workq_item it;
  struct vbkfs_disk *d;
  struct chunk *c;
};

static bool
bit_get (const uint8_t *map, uint64_t i)
{
  return (map[i >> 3] >> (i & 7)) & 1;
}

static void
bit_set (uint8_t *map, uint64_t i)
{
  map[i >> 3] |= (uint8_t) (1u << (i & 7));
}

/* ---- Allocation map ------------------------------------------------------ */

static int
add_extent (void *arg, uint64_t off, uint64_t len, int allocated)
{
  struct vbkfs_disk *d = arg;
  struct extent *e;

  if (!allocated || len == 0)
    return 0;
  if (d->next && d->ext[d->next - 1].off + d->ext[d->next - 1].len == off) {
    d->ext[d->next - 1].len += len;
    return 0;
  }
  if (d->next == d->ext_cap) {
    size_t cap = d->ext_cap ? 2 * d->ext_cap : 64;

    e = realloc (d->ext, cap * sizeof *e);
    if (e == NULL)
      return -ENOMEM;
    d->ext = e;
    d->ext_cap = cap;
  }
  d->ext[d->next++] = (struct extent) { off, len };
  return 0;
}

/* Index of the first extent that ends after OFF (d->next if none). */
static size_t
extent_after (struct vbkfs_disk *d, uint64_t off)
{
  size_t lo = 0, hi = d->next;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;

    if (d->ext[mid].off + d->ext[mid].len <= off)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

uint64_t
vbkfs_disk_allocated (struct vbkfs_disk *d, uint64_t off, uint64_t len)
{
  uint64_t end = off + len, n = 0;
  size_t i;

  for (i = extent_after (d, off); i < d->next && d->ext[i].off < end; i++)
    n += MIN (end, d->ext[i].off + d->ext[i].len) - MAX (off, d->ext[i].off);
  return n;
}

int64_t
vbkfs_disk_seek (struct vbkfs_disk *d, uint64_t base, uint64_t len,
                 int64_t off, int whence)
{
  uint64_t pos;
  size_t i;

  if (off < 0)
    return -EINVAL;
  if ((uint64_t) off >= len)
    return -ENXIO;
  pos = base + (uint64_t) off;
  i = extent_after (d, pos);
  if (whence == SEEK_DATA) {
    if (i == d->next || d->ext[i].off >= base + len)
      return -ENXIO;
    return (int64_t) (MAX (pos, d->ext[i].off) - base);
  }
  if (whence == SEEK_HOLE) {
    if (i == d->next || d->ext[i].off > pos)
      return off;
    return (int64_t) (MIN (d->ext[i].off + d->ext[i].len, base + len)
                      - base);
  }
  return -EINVAL;
}

/* ---- Cache ---------------------------------------------------------------- */

static void
lru_unlink (struct chunk *c)
{
  if (c->prev) {
    c->prev->next = c->next;
    c->next->prev = c->prev;
    c->prev = c->next = NULL;
  }
}

static void
lru_push (struct vbkfs_disk *d, struct chunk *c)
{
  c->next = d->lru.next;
  c->prev = &d->lru;
  d->lru.next->prev = c;
  d->lru.next = c;
}

static struct chunk *
hash_find (struct vbkfs_disk *d, uint64_t idx)
{
  struct chunk *c;

  for (c = d->hash[idx % d->nhash]; c; c = c->hnext)
    if (c->idx == idx)
      return c;
  return NULL;
}

static void
hash_remove (struct vbkfs_disk *d, struct chunk *c)
{
  struct chunk **p;

  for (p = &d->hash[c->idx % d->nhash]; *p; p = &(*p)->hnext)
    if (*p == c) {
      *p = c->hnext;
      c->hashed = false;
      d->nchunks--;
      lru_unlink (c);
      return;
    }
}

static void
chunk_put_unlocked (struct chunk *c)
{
  if (--c->refs == 0 && !c->hashed) {
    free (c->data);
    free (c);
  }
}

/* Drops least recently used chunks that nobody uses while over the
 * limit. */
static void
evict_unlocked (struct vbkfs_disk *d, size_t limit)
{
  struct chunk *c, *prev;

  for (c = d->lru.prev; c != &d->lru && d->nchunks > limit;
       c = prev) {
    prev = c->prev;
    if (c->refs == 0) {
      hash_remove (d, c);
      free (c->data);
      free (c);
    }
  }
}

/* A new LOADING entry for IDX, referenced once (by the fetcher). */
static struct chunk *
chunk_new_unlocked (struct vbkfs_disk *d, uint64_t idx)
{
  struct chunk *c = calloc (1, sizeof *c);

  if (c == NULL)
    return NULL;
  c->data = malloc (d->csize);
  if (c->data == NULL) {
    free (c);
    return NULL;
  }
  c->idx = idx;
  c->state = CH_LOADING;
  c->refs = 1;
  c->hashed = true;
  c->hnext = d->hash[idx % d->nhash];
  d->hash[idx % d->nhash] = c;
  d->nchunks++;
  return c;
}

/* Logs a failed fetch: one line per event, naming the object or chunk
 * (the source's message).  A message among the last LOGGED ones is not
 * repeated: the kernel retries failed readahead page by page, and every
 * read of a removed snapshot fails the same way. */
static void
log_fetch_error (struct vbkfs_disk *d, uint64_t off, uint64_t len,
                 ssize_t r)
{
  const char *msg = vbk_error ()[0] ? vbk_error () : strerror ((int) -r);
  bool again = false;
  unsigned i;

  pthread_mutex_lock (&d->lock);
  for (i = 0; i < LOGGED && i < d->nlogged; i++)
    if (strncmp (d->logged[i], msg, sizeof d->logged[i] - 1) == 0)
      again = true;
  if (!again)
    snprintf (d->logged[d->nlogged++ % LOGGED], sizeof d->logged[0], "%s",
              msg);
  pthread_mutex_unlock (&d->lock);
  if (!again)
    log_error ("vbkfs: %s: read of %llu bytes at %llu failed: %s",
               d->src.name, (unsigned long long) len,
               (unsigned long long) off, msg);
}

static void verify_run (struct workq_item *it);

/* Fetches the N LOADING chunks in C (consecutive indexes) with one read
 * from the source and one check, and publishes them.  Drops the
 * fetcher's references.  Called without the lock.
 *
 * A reader's own fetch of one chunk from a source that can check in two
 * steps (pread_unhashed, verify) takes the cheap step only; the full
 * check runs on d->vq after the chunk is handed out, unless that chunk
 * passed it before (d->checked) or VERIFY_MAX checks are pending already
 * (then it runs here, before).  Readahead runs ahead of the readers, so
 * it checks in full at once (for a backup that skips the CRC-32 too). */
static int
fetch (struct vbkfs_disk *d, struct chunk **c, size_t n, bool ahead)
{
  uint64_t off = c[0]->idx << d->shift;
  uint64_t end = MIN (d->size, (c[n - 1]->idx + 1) << d->shift);
  char *buf = n == 1 ? c[0]->data : malloc (end - off);
  struct verify_job *job = NULL;
  bool unhashed = false, known = false, later = false, vfail = false;
  ssize_t r;
  size_t i;

  log_debug ("vbkfs: %s: fetch chunks %llu+%zu", d->src.name,
             (unsigned long long) c[0]->idx, n);
  if (!ahead && n == 1 && d->later) {
    pthread_mutex_lock (&d->lock);
    known = bit_get (d->checked, c[0]->idx);
    /* A reader going on from the chunk before, with readahead behind:
     * it waits either way, and on a busy CPU one SHA-256 costs less
     * than a CRC-32 and a SHA-256, so the full check at once. */
    unhashed = known || c[0]->idx != d->last_idx + 1;
    later = unhashed && !known && d->vq && d->vpending < VERIFY_MAX;
    if (later)
      d->vpending++;
    pthread_mutex_unlock (&d->lock);
    if (later && (job = malloc (sizeof *job)) == NULL) {
      pthread_mutex_lock (&d->lock);
      d->vpending--;
      pthread_mutex_unlock (&d->lock);
      later = false;
    }
  }
  if (buf == NULL)
    r = -ENOMEM;
  else {
    if (unhashed)
      r = d->src.ops->pread_unhashed (d->src.h, buf, end - off, off);
    else
      r = d->src.ops->pread (d->src.h, buf, end - off, off);
    if (r >= 0 && (uint64_t) r != end - off)
      r = vbk_errno (-EIO, "vbkfs: %s: short read at %llu", d->src.name,
                     (unsigned long long) off);
    /* No room to check it later: now. */
    if (r >= 0 && unhashed && !known && !later) {
      r = d->src.ops->verify (d->src.h, buf, end - off, off);
      vfail = r < 0;
    }
    if (r >= 0)
      r = d->src.ops->check (d->src.h);
  }
  if (r < 0)
    log_fetch_error (d, off, end - off, r);
  if (r >= 0 && n > 1)
    for (i = 0; i < n; i++) {
      uint64_t coff = (c[i]->idx << d->shift) - off;

      memcpy (c[i]->data, buf + coff, MIN (d->csize, end - off - coff));
    }
  if (n > 1)
    free (buf);

  pthread_mutex_lock (&d->lock);
  d->stats.fetches += n;
  if (unhashed && (r >= 0 || vfail))
    d->stats.unhashed++;
  if (vfail) {
    bit_set (d->bad, c[0]->idx);
    d->stats.verify_failed++;
  }
  if (later && r < 0)
    d->vpending--;
  if (later && r >= 0) {
    /* The check's own reference: the chunk stays cached until then. */
    c[0]->refs++;
    job->d = d;
    job->c = c[0];
  }
  else if (d->checked && r >= 0) {
    for (i = 0; i < n; i++)
      bit_set (d->checked, c[i]->idx);
    if (unhashed && !known)
      d->stats.verified++;      /* at once: the queue was full */
  }
  /* Failing fetches ahead would evict good chunks again and again (the
   * kernel retries a failed read page by page): no readahead until a
   * reader's own fetch works again. */
  if (r < 0)
    d->ra_off = true;
  else if (!ahead)
    d->ra_off = false;
  for (i = 0; i < n; i++) {
    if (r < 0) {
      c[i]->state = CH_FAILED;
      c[i]->err = r == -ENOMEM ? -ENOMEM : -EIO;
      hash_remove (d, c[i]);
    }
    else {
      c[i]->state = CH_READY;
      lru_push (d, c[i]);
    }
    chunk_put_unlocked (c[i]);
  }
  evict_unlocked (d, d->max_chunks);
  pthread_cond_broadcast (&d->cond);
  pthread_mutex_unlock (&d->lock);
  if (later && r >= 0 && workq_submit (d->vq, &job->it, verify_run) < 0)
    verify_run (&job->it);      /* closing: check it here */
  else if (!(later && r >= 0))
    free (job);
  return r < 0 ? (r == -ENOMEM ? -ENOMEM : -EIO) : 0;
}

/* The full check of a chunk handed out unhashed.  A chunk that fails it
 * leaves the cache and reads as EIO for as long as the disk is open (its
 * data cannot change); the failure is logged naming the chunk.  What
 * readers were given before that (and the kernel may keep in its page
 * cache) is not taken back. */
static void
verify_run (struct workq_item *it)
{
  struct verify_job *job = workq_entry (it, struct verify_job, it);
  struct vbkfs_disk *d = job->d;
  struct chunk *c = job->c;
  uint64_t off = c->idx << d->shift;
  size_t len = MIN (d->csize, d->size - off);
  int r;

  r = d->src.ops->verify (d->src.h, c->data, len, off);
  if (r < 0)
    log_fetch_error (d, off, len, r);
  pthread_mutex_lock (&d->lock);
  d->vpending--;
  if (r == 0) {
    bit_set (d->checked, c->idx);
    d->stats.verified++;
  }
  else {
    bit_set (d->bad, c->idx);
    d->stats.verify_failed++;
    if (c->hashed)
      hash_remove (d, c);
  }
  chunk_put_unlocked (c);
  pthread_mutex_unlock (&d->lock);
  free (job);
}

/* Returns chunk IDX, READY and referenced, or NULL with *ERR. */
static struct chunk *
chunk_get (struct vbkfs_disk *d, uint64_t idx, int *err)
{
  struct chunk *c;
  int r;

  pthread_mutex_lock (&d->lock);
  if (d->bad && bit_get (d->bad, idx)) {
    pthread_mutex_unlock (&d->lock);
    *err = -EIO;                /* logged when it was found */
    return NULL;
  }
  for (;;) {
    c = hash_find (d, idx);
    if (c == NULL)
      break;
    c->refs++;
    while (c->state == CH_LOADING)
      pthread_cond_wait (&d->cond, &d->lock);
    if (c->state == CH_READY) {
      d->stats.hits++;
      lru_unlink (c);
      lru_push (d, c);
      pthread_mutex_unlock (&d->lock);
      return c;
    }
    *err = c->err;
    chunk_put_unlocked (c);
    pthread_mutex_unlock (&d->lock);
    return NULL;
  }
  c = chunk_new_unlocked (d, idx);
  if (c == NULL) {
    pthread_mutex_unlock (&d->lock);
    *err = -ENOMEM;
    return NULL;
  }
  c->refs++;                    /* ours, beside the fetcher's */
  pthread_mutex_unlock (&d->lock);
  r = fetch (d, &c, 1, false);
  if (r < 0) {
    pthread_mutex_lock (&d->lock);
    chunk_put_unlocked (c);
    pthread_mutex_unlock (&d->lock);
    *err = r;
    return NULL;
  }
  return c;
}

static void
chunk_put (struct vbkfs_disk *d, struct chunk *c)
{
  pthread_mutex_lock (&d->lock);
  chunk_put_unlocked (c);
  pthread_mutex_unlock (&d->lock);
}

/* ---- Part reads ------------------------------------------------------------ */

static void ra_note (struct vbkfs_disk *d, uint64_t idx);

/* The full check of a chunk some reader was given parts of. */
struct part_job {
  struct workq_item it;
  struct vbkfs_disk *d;
  uint64_t idx;
};

/* Checks chunk job->idx in full (the source reads it again): passed, it
 * counts as checked; failed, it reads as EIO from now on (as a chunk
 * that fails verify_run).  What readers were given before is not taken
 * back. */
static void
part_check_run (struct workq_item *it)
{
  struct part_job *job = workq_entry (it, struct part_job, it);
  struct vbkfs_disk *d = job->d;
  uint64_t off = job->idx << d->shift;
  struct chunk *c;
  bool done;
  int r;

  /* Checked meanwhile, or fetched whole since (a second read of the
   * chunk, readahead): every whole fetch checks the chunk in full itself
   * (at once, or on this thread after this job), so nothing is left to
   * do here.  Should that fetch fail, the next part read queues the
   * check again. */
  pthread_mutex_lock (&d->lock);
  done = bit_get (d->checked, job->idx) || bit_get (d->bad, job->idx);
  if (!done && hash_find (d, job->idx)) {
    d->queued[job->idx >> 3] &= (uint8_t) ~(1u << (job->idx & 7));
    done = true;
  }
  pthread_mutex_unlock (&d->lock);
  if (done) {
    free (job);
    return;
  }
  r = d->src.ops->check_unit (d->src.h, off);
  if (r < 0)
    log_fetch_error (d, off, MIN (d->csize, d->size - off), r);
  pthread_mutex_lock (&d->lock);
  if (r == 0) {
    bit_set (d->checked, job->idx);
    d->stats.part_checked++;
  }
  else {
    bit_set (d->bad, job->idx);
    d->stats.part_failed++;
    if ((c = hash_find (d, job->idx)) != NULL && c->state == CH_READY)
      hash_remove (d, c);
    if (c && c->refs == 0 && !c->hashed) {
      free (c->data);
      free (c);
    }
  }
  pthread_mutex_unlock (&d->lock);
  free (job);
}

/* A reader's read of LEN bytes at OFF inside chunk IDX, served by the
 * source's pread_part when that pays: a small read that is not part of
 * a run (a run, or a second read of the chunk, fetches it whole into the
 * cache, with readahead), of a chunk neither cached nor being fetched.
 * 1 if served (BUF filled), 0 if the caller goes the cached way, or
 * -errno.  The chunk's full check is queued once (d->queued), unless it
 * passed it before; a chunk that failed it reads as EIO. */
static int
read_part (struct vbkfs_disk *d, char *buf, size_t len, uint64_t off,
           uint64_t idx)
{
  struct part_job *job = NULL;
  bool queue;
  ssize_t r;

  if (d->queued == NULL || len >= d->csize)
    return 0;
  pthread_mutex_lock (&d->lock);
  if (bit_get (d->bad, idx)) {
    pthread_mutex_unlock (&d->lock);
    return -EIO;
  }
  if (idx == d->last_idx || idx == d->last_idx + 1 || hash_find (d, idx)) {
    pthread_mutex_unlock (&d->lock);
    return 0;
  }
  queue = !bit_get (d->checked, idx) && !bit_get (d->queued, idx);
  if (queue)
    bit_set (d->queued, idx);
  pthread_mutex_unlock (&d->lock);

  r = d->src.ops->pread_part (d->src.h, buf, len, off);
  if (r == -EAGAIN) {
    /* Not in pieces: the usual whole fetch, with its own checks. */
    pthread_mutex_lock (&d->lock);
    if (queue)
      d->queued[idx >> 3] &= (uint8_t) ~(1u << (idx & 7));
    pthread_mutex_unlock (&d->lock);
    return 0;
  }
  if (r >= 0 && (size_t) r != len)
    r = vbk_errno (-EIO, "vbkfs: %s: short read at %llu", d->src.name,
                   (unsigned long long) off);
  if (r < 0)
    log_fetch_error (d, off, len, r);
  if (queue && r >= 0 && (job = malloc (sizeof *job)) != NULL) {
    job->d = d;
    job->idx = idx;
    if (workq_submit (d->vq, &job->it, part_check_run) < 0)
      part_check_run (&job->it);        /* closing: check it here */
  }
  pthread_mutex_lock (&d->lock);
  if (queue && (r < 0 || job == NULL))
    d->queued[idx >> 3] &= (uint8_t) ~(1u << (idx & 7));  /* next time */
  if (r >= 0)
    d->stats.part_reads++;
  pthread_mutex_unlock (&d->lock);
  if (r < 0)
    return r == -ENOMEM ? -ENOMEM : -EIO;
  ra_note (d, idx);
  return 1;
}

/* ---- Readahead ----------------------------------------------------------- */

/* Whether chunk IDX lies entirely in a hole. */
static bool
chunk_is_hole (struct vbkfs_disk *d, uint64_t idx)
{
  return vbkfs_disk_allocated (d, idx << d->shift, d->csize) == 0;
}

static void
ra_run (struct workq_item *it)
{
  struct ra_pass *pass = workq_entry (it, struct ra_pass, it);
  struct vbkfs_disk *d = pass->d;
  uint64_t nchunks = (d->size + d->csize - 1) >> d->shift;
  struct chunk *batch[RA_BATCH_MAX];
  size_t n;

  pthread_mutex_lock (&d->lock);
  while (!d->ra_stop) {
    if (d->ra_from >= d->ra_to || d->ra_from >= nchunks)
      break;                    /* the window is used up */
    /* A run of consecutive chunks that are neither cached nor holes. */
    n = 0;
    while (n < d->ra_batch && d->ra_from < d->ra_to && d->ra_from < nchunks) {
      uint64_t idx = d->ra_from;

      if (hash_find (d, idx) || chunk_is_hole (d, idx)
          || (d->bad && bit_get (d->bad, idx))) {
        if (n)
          break;
        d->ra_from++;
        continue;
      }
      /* Make room, keeping some for what readers use now. */
      evict_unlocked (d, d->max_chunks - 2);
      if (d->nchunks + 2 > d->max_chunks)
        break;
      batch[n] = chunk_new_unlocked (d, idx);
      if (batch[n] == NULL)
        break;
      n++;
      d->ra_from++;
    }
    if (n == 0) {
      if (d->ra_from < d->ra_to && d->ra_from < nchunks)
        d->ra_from = d->ra_to;  /* no room: give up this window */
      continue;
    }
    d->stats.readahead += n;
    pthread_mutex_unlock (&d->lock);
    fetch (d, batch, n, true);
    pthread_mutex_lock (&d->lock);
  }
  pass->busy = false;
  pthread_mutex_unlock (&d->lock);
}

/* Queues a readahead pass unless RA_THREADS are queued or running
 * (d->lock held). */
static void
ra_kick_unlocked (struct vbkfs_disk *d)
{
  for (unsigned i = 0; i < RA_THREADS; i++) {
    struct ra_pass *pass = &d->ra_pass[i];

    if (pass->busy)
      continue;
    pass->d = d;
    if (workq_submit (d->ra_q, &pass->it, ra_run) == 0)
      pass->busy = true;
    return;
  }
}

/* Notes that a reader used chunk IDX; starts readahead on a sequential
 * run. */
static void
ra_note (struct vbkfs_disk *d, uint64_t idx)
{
  pthread_mutex_lock (&d->lock);
  if (idx == d->last_idx + 1)
    d->seq++;
  else if (idx != d->last_idx)
    d->seq = 0;
  d->last_idx = idx;
  if ((uint64_t) d->seq * d->csize >= RA_START_BYTES && d->ra_q
      && !d->ra_off && !d->ra_stop) {
    if (d->ra_from <= idx || d->ra_from > idx + d->ra_chunks)
      d->ra_from = idx + 1;
    d->ra_to = idx + 1 + d->ra_chunks;
    ra_kick_unlocked (d);
  }
  pthread_mutex_unlock (&d->lock);
}

/* ---- Reads ----------------------------------------------------------------- */

/* Reads an allocated range through the cache. */
static int
read_cached (struct vbkfs_disk *d, char *buf, size_t len, uint64_t off)
{
  while (len > 0) {
    uint64_t idx = off >> d->shift, coff = off & (d->csize - 1);
    size_t n = MIN (len, d->csize - coff);
    struct chunk *c;
    int err = -EIO, r;

    if ((r = read_part (d, buf, n, off, idx)) < 0)
      return r;
    if (r == 1) {
      buf += n;
      off += n;
      len -= n;
      continue;
    }
    c = chunk_get (d, idx, &err);
    if (c == NULL)
      return err;
    memcpy (buf, c->data + coff, n);
    chunk_put (d, c);
    ra_note (d, idx);
    buf += n;
    off += n;
    len -= n;
  }
  return 0;
}

ssize_t
vbkfs_disk_pread (struct vbkfs_disk *d, void *buf, size_t len, uint64_t off)
{
  uint64_t end, pos;
  size_t i;
  int r;

  if (off >= d->size)
    return 0;
  len = MIN (len, d->size - off);
  end = off + len;
  pos = off;
  for (i = extent_after (d, off); pos < end; i++) {
    uint64_t dstart = i < d->next ? MAX (pos, d->ext[i].off) : end;
    uint64_t dend;

    dstart = MIN (dstart, end);
    if (dstart > pos) {
      memset ((char *) buf + (pos - off), 0, dstart - pos);
      pos = dstart;
    }
    if (pos >= end)
      break;
    dend = MIN (end, d->ext[i].off + d->ext[i].len);
    r = read_cached (d, (char *) buf + (pos - off), dend - pos, pos);
    if (r < 0)
      return r;
    pos = dend;
  }
  return (ssize_t) len;
}

/* ---- Open and close ------------------------------------------------------ */

int
vbkfs_disk_open (struct vbkfs_source *src, uint64_t cache_bytes,
                 struct vbkfs_disk **out)
{
  struct vbkfs_disk *d;
  int r;

  d = calloc (1, sizeof *d);
  if (d == NULL) {
    src->ops->close (src->h);
    return -ENOMEM;
  }
  d->src = *src;
  d->size = src->ops->size (src->h);
  pthread_mutex_init (&d->lock, NULL);
  pthread_cond_init (&d->cond, NULL);
  d->lru.next = d->lru.prev = &d->lru;
  /* The source's own unit of reading, if it has one (a backup decodes
   * a whole chunk for any byte of it): cached as one piece, so each is
   * decoded once and copied once. */
  d->shift = CHUNK_SHIFT_MIN;
  if (src->ops->chunk_size) {
    uint32_t cs = src->ops->chunk_size (src->h);

    while (d->shift < CHUNK_SHIFT_MAX && (1u << d->shift) < cs)
      d->shift++;
  }
  d->csize = 1u << d->shift;
  d->ra_chunks = MAX (2u, RA_BYTES >> d->shift);
  d->ra_batch = MAX (1u, RA_BATCH_BYTES >> d->shift);
  d->max_chunks = (cache_bytes ? cache_bytes : CACHE_DEFAULT) >> d->shift;
  if (d->max_chunks < 2 * d->ra_batch + 4)
    d->max_chunks = 2 * d->ra_batch + 4;
  d->nhash = 2 * d->max_chunks + 1;
  d->hash = calloc (d->nhash, sizeof *d->hash);
  d->last_idx = UINT64_MAX - 1;
  if (d->hash == NULL) {
    r = -ENOMEM;
    goto fail;
  }
  if (src->ops->pread_unhashed && src->ops->verify) {
    size_t bytes = (((d->size + d->csize - 1) >> d->shift) + 7) / 8;

    d->checked = calloc (bytes ? bytes : 1, 1);
    d->bad = calloc (bytes ? bytes : 1, 1);
    if (d->checked == NULL || d->bad == NULL) {
      r = -ENOMEM;
      goto fail;
    }
  }
  r = src->ops->extents (src->h, 0, d->size, add_extent, d);
  if (r < 0) {
    log_error ("vbkfs: %s: reading the allocation map failed: %s",
               src->name, vbk_error ()[0] ? vbk_error () : strerror (-r));
    goto fail;
  }
  {
    /* Without its threads the disk still reads, with no readahead. */
    struct workq_opts qo = { .name = "vbkfs-ra", .threads = RA_THREADS };

    if (workq_new (&qo, &d->ra_q) < 0)
      d->ra_q = NULL;
  }
  *out = d;
  return 0;

 fail:
  free (d->checked);
  free (d->bad);
  free (d->hash);
  free (d->ext);
  src->ops->close (src->h);
  free (d);
  return r;
}

void
vbkfs_disk_close (struct vbkfs_disk *d)
{
  struct chunk *c, *next;
  size_t i;

  if (d == NULL)
    return;
  if (d->ra_q) {
    /* Passes still queued see ra_stop and return at once. */
    pthread_mutex_lock (&d->lock);
    d->ra_stop = true;
    pthread_mutex_unlock (&d->lock);
    workq_free (d->ra_q);
  }
  /* The checks still queued run: each holds a chunk. */
  workq_free (d->vq);
  for (i = 0; i < d->nhash; i++)
    for (c = d->hash[i]; c; c = next) {
      next = c->hnext;
      free (c->data);
      free (c);
    }
  free (d->hash);
  free (d->ext);
  free (d->checked);
  free (d->bad);
  free (d->queued);
  d->src.ops->close (d->src.h);
  pthread_mutex_destroy (&d->lock);
  pthread_cond_destroy (&d->cond);
  free (d);
}

uint64_t
vbkfs_disk_size (struct vbkfs_disk *d)
{
  return d->size;
}

const char *
vbkfs_disk_name (struct vbkfs_disk *d)
{
  return d->src.name;
}

void
vbkfs_disk_get_stats (struct vbkfs_disk *d, struct vbkfs_disk_stats *s)
{
  pthread_mutex_lock (&d->lock);
  *s = d->stats;
  pthread_mutex_unlock (&d->lock);
}

void
vbkfs_disk_check_later (struct vbkfs_disk *d)
{
  /* Without its thread every check runs before the data is handed out,
   * as it does for a disk that never comes here. */
  struct workq_opts qo = { .name = "vbkfs-check", .threads = 1 };

  if (d->checked == NULL || d->later)
    return;
  if (workq_new (&qo, &d->vq) < 0)
    d->vq = NULL;
  d->later = true;
  /* Part reads need the thread that checks their chunks in full. */
  if (d->vq && d->src.ops->pread_part && d->src.ops->check_unit) {
    size_t bytes = (((d->size + d->csize - 1) >> d->shift) + 7) / 8;

    d->queued = calloc (bytes ? bytes : 1, 1);
  }
}

void
vbkfs_disk_unpin (struct vbkfs_disk *d)
{
  if (d->src.ops->unpin)
    d->src.ops->unpin (d->src.h);
}

int
vbkfs_disk_pin (struct vbkfs_disk *d)
{
  return d->src.ops->pin ? d->src.ops->pin (d->src.h) : 0;
}
