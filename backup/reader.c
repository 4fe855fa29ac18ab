/* SPDX-License-Identifier: MIT
 *
 * reader.c - random access to one backup: what vbk mount, restore and
 * verify read through.
 *
 * DESIGN: opening loads the manifest and the index (checked against the
 * manifest's SHA-256).  A read maps each byte range to its chunk; holes
 * (the all-zero digest) read as zeros without I/O; a chunk is fetched and
 * checked whole (backup_chunk_read_data: its SHA-256, once per fetch)
 * into a small LRU cache of decoded chunks, so a file system's many
 * small reads of one chunk cost one fetch; a read of a whole chunk
 * (restore, vbk mount) decodes straight into the caller's buffer and
 * leaves the cache alone.  A caller that reads whole chunks may ask for
 * them unhashed (BACKUP_READ_UNHASHED: the CRC-32 or the GCM tag checked
 * on the way, the SHA-256 left to it, backup_reader_verify: vbk mount
 * checks it off the reader's path, once per chunk).  A caller that
 * reads small ranges may ask for parts (BACKUP_READ_PARTS): of a parted
 * chunk (FORMAT.md) only the header and part table (cached per chunk)
 * and the parts the range touches are read, each checked against its
 * CRC-32 before its bytes are used, decoded parts kept in a cache of
 * their own; the digest is left to the caller (backup_reader_check_chunk,
 * which reads the chunk whole: vbk mount runs it off the reader's path,
 * once per chunk).  The cache lock guards memory only: fetches run
 * unlocked, and two threads missing the same chunk or part both fetch
 * it (rare and harmless).
 *
 * An open reader pins its backup's chunks against gc, as a running
 * writer does:
 *
 *   <open> -> LOCK      lock "reader" on vbk_backup_reader.RID (a
 *                       duration, renewed by a thread every quarter)
 *          -> REGISTER  vbk_backup_readers key RID = "ID START_MS HOST"
 *          -> LOAD      manifest, index
 *   <close> -> key removed -> lock released -> object removed
 *
 * gc reads the readers after its catalog walk and marks the index of
 * each backup with a live reader (see gc.c for why registering before
 * LOAD is enough); a key whose lock is not held is a reader that died
 * and gc removes it, so a crashed reader blocks nothing for longer than
 * one lock duration.  A reader whose lock ran out (the process stalled
 * longer than that) registers again at once; what gc swept meanwhile
 * reads as -EIO naming the chunk, as any missing chunk does.
 *
 * A reader kept open while nobody reads through it (vbk mount keeps each
 * backup it opened) may drop its record (backup_reader_unpin) and take a
 * new one later (backup_reader_pin: the LOCK and REGISTER steps again with
 * a new RID, then the manifest is read again, as at open, so a backup
 * pruned in between is refused rather than read half-collected).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "internal.h"

#define CACHE_SLOTS 8
#define PART_SLOTS 128          /* 8 MiB of 64 KiB parts */
#define TABLE_SLOTS 64

struct slot {
  uint64_t idx;
  uint64_t used;                /* LRU clock; 0 = empty */
  char *buf;
};

/* A decoded part (BACKUP_READ_PARTS). */
struct pslot {
  uint64_t idx;
  uint32_t part;
  uint64_t used;                /* LRU clock; 0 = empty */
  char *buf;
};

/* The part table of a chunk, or that it has none (whole). */
struct tslot {
  uint64_t idx;
  uint64_t used;                /* LRU clock; 0 = empty */
  bool whole;
  struct backup_part_table t;
};

struct backup_reader {
  struct backup_repo *r;
  struct backup_manifest m;
  struct backup_index ix;
  pthread_mutex_t lock;
  uint64_t clock;
  struct slot cache[CACHE_SLOTS];
  struct pslot parts[PART_SLOTS];
  struct tslot tables[TABLE_SLOTS];

  /* The reader record. */
  char rid[BACKUP_READER_ID_LEN];
  char bid[64];                 /* the backup, for messages */
  char pin_oid[STORE_NAME_MAX + 1];
  char pin_val[256];
  size_t pin_len;
  struct backup_renewer renew;  /* of the reader lock */
  pthread_mutex_t pin_lock;     /* pinned, pin and unpin */
  bool pinned;
};

/* ---- The reader record ------------------------------------------------------ */

/* Takes the reader lock and writes the registry key. */
static int
pin_take (struct backup_reader *rd)
{
  int e;

  if ((e = store_lock (rd->r->st, rd->pin_oid, BACKUP_READER_LOCK, rd->rid,
                       "vbk backup reader", backup_lock_ms (), 0)) < 0)
    return vbk_errno (e, "backup: reader %s: lock", rd->rid);
  if ((e = store_omap_set (rd->r->st, BACKUP_READERS_OID, rd->rid,
                           rd->pin_val, rd->pin_len)) < 0) {
    store_unlock (rd->r->st, rd->pin_oid, BACKUP_READER_LOCK, rd->rid);
    return vbk_errno (e, "backup: reader %s: registering", rd->rid);
  }
  return 0;
}

/* Renews the reader lock; never stops before the reader closes. */
static int
pin_renew (void *arg)
{
  struct backup_reader *rd = arg;
  int e;

  e = store_lock (rd->r->st, rd->pin_oid, BACKUP_READER_LOCK, rd->rid,
                  "vbk backup reader", backup_lock_ms (), STORE_LOCK_RENEW);
  if (e == -ENOENT) {
    /* It ran out: gc may have dropped our key and swept what only we
     * used.  Register again so that it keeps the rest. */
    log_warn ("backup %s: reader %s: the reader lock ran out; "
              "registering again (chunks collected meanwhile read as "
              "errors)", rd->bid, rd->rid);
    e = pin_take (rd);
  }
  if (e < 0)
    log_error ("backup %s: reader %s: renewing the reader lock: %s",
               rd->bid, rd->rid, vbk_error ()[0] ? vbk_error ()
               : strerror (-e));
  return 0;
}

static void
new_reader_id (char *buf, size_t len)
{
  unsigned char rnd[8] = { 0 };
  uint64_t x;

  if (getrandom (rnd, sizeof rnd, 0) != sizeof rnd) {
    x = now_mono_ns () ^ (uint64_t) getpid () << 32;
    memcpy (rnd, &x, sizeof rnd);
  }
  snprintf (buf, len, "%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1],
            rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
}

static int
pin_register (struct backup_reader *rd, const char *id)
{
  char host[64] = "";
  int e, n;

  new_reader_id (rd->rid, sizeof rd->rid);
  snprintf (rd->bid, sizeof rd->bid, "%s", id);
  backup_reader_oid (rd->rid, rd->pin_oid, sizeof rd->pin_oid);
  gethostname (host, sizeof host - 1);
  host[strcspn (host, " ")] = '\0';
  n = snprintf (rd->pin_val, sizeof rd->pin_val, "%s %" PRIu64 " %s/%d", id,
                now_wall_ms (), host[0] ? host : "-", (int) getpid ());
  rd->pin_len = (size_t) MIN (n, (int) sizeof rd->pin_val - 1);
  if ((e = pin_take (rd)) < 0)
    return e;
  if ((e = backup_renewer_start (&rd->renew, pin_renew, rd)) < 0) {
    store_omap_rm (rd->r->st, BACKUP_READERS_OID, rd->rid);
    store_unlock (rd->r->st, rd->pin_oid, BACKUP_READER_LOCK, rd->rid);
    return e;
  }
  return 0;
}

static void
pin_release (struct backup_reader *rd)
{
  /* Closing after a failed read must not replace its message. */
  VBK_KEEP_ERROR_FOR_SCOPE;

  backup_renewer_stop (&rd->renew);
  /* The key first: a key without its lock is a dead reader to gc, a
   * lock without its key nothing. */
  store_omap_rm (rd->r->st, BACKUP_READERS_OID, rd->rid);
  store_unlock (rd->r->st, rd->pin_oid, BACKUP_READER_LOCK, rd->rid);
  store_remove (rd->r->st, rd->pin_oid);
}

/* ---- Opening ---------------------------------------------------------------- */

int
backup_reader_open (struct backup_repo *r, const char *id,
                    struct backup_reader **out)
{
  struct backup_reader *rd;
  int e;

  if (backup_id_check (id) < 0)
    return vbk_errno (-ENOENT, "backup: no backup '%s'", id);
  if ((rd = calloc (1, sizeof *rd)) == NULL)
    return vbk_errno (-ENOMEM, "backup: reader");
  rd->r = r;
  /* Registered before the manifest is read: gc.c, gc_readers. */
  if ((e = pin_register (rd, id)) < 0) {
    free (rd);
    return vbk_error_prepend (e, "backup %s: ", id);
  }
  if ((e = backup_manifest_load (r, id, &rd->m, NULL)) < 0
      || (e = backup_index_load (r, &rd->m, &rd->ix)) < 0) {
    pin_release (rd);
    free (rd);
    return e;
  }
  pthread_mutex_init (&rd->lock, NULL);
  pthread_mutex_init (&rd->pin_lock, NULL);
  rd->pinned = true;
  *out = rd;
  return 0;
}

void
backup_reader_unpin (struct backup_reader *rd)
{
  pthread_mutex_lock (&rd->pin_lock);
  if (rd->pinned) {
    pin_release (rd);
    rd->pinned = false;
  }
  pthread_mutex_unlock (&rd->pin_lock);
}

int
backup_reader_pin (struct backup_reader *rd)
{
  struct backup_manifest m;
  int e = 0;

  pthread_mutex_lock (&rd->pin_lock);
  if (rd->pinned)
    goto out;
  /* Registered first, then the manifest, as at open (gc.c, gc_readers):
   * a gc that did not see the record saw the manifest, or we do not. */
  if ((e = pin_register (rd, rd->m.id)) < 0) {
    vbk_error_prepend (e, "backup %s: ", rd->m.id);
    goto out;
  }
  if ((e = backup_manifest_load (rd->r, rd->m.id, &m, NULL)) < 0) {
    pin_release (rd);
    goto out;
  }
  rd->pinned = true;
 out:
  pthread_mutex_unlock (&rd->pin_lock);
  return e;
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
  if (rd->pinned)
    pin_release (rd);
  for (i = 0; i < CACHE_SLOTS; i++)
    free (rd->cache[i].buf);
  for (i = 0; i < PART_SLOTS; i++)
    free (rd->parts[i].buf);
  for (i = 0; i < TABLE_SLOTS; i++)
    backup_part_table_free (&rd->tables[i].t);
  backup_index_free (&rd->ix);
  pthread_mutex_destroy (&rd->lock);
  pthread_mutex_destroy (&rd->pin_lock);
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

/* Adds the backup and offset to the message of a failed chunk read. */
static int
read_error (struct backup_reader *rd, uint64_t idx, int e)
{
  char msg[1024];

  snprintf (msg, sizeof msg, "%s", vbk_error ());
  vbk_set_error ("backup %s: offset %" PRIu64 ": %s", rd->m.id,
                 idx * rd->m.chunk_size,
                 msg + (strncmp (msg, "backup: ", 8) == 0 ? 8 : 0));
  return e;
}

/* Copies LEN bytes at offset CO of chunk IDX into BUF. */
static int
read_chunk (struct backup_reader *rd, uint64_t idx, char *buf, size_t co,
            size_t len, int flags)
{
  uint64_t cs = rd->m.chunk_size;
  size_t clen = MIN (cs, rd->m.size - idx * cs);
  struct slot *victim = NULL;
  char *data;
  int i, e;

  /* A whole chunk (vbk mount caches whole chunks): decoded straight into
   * BUF, not cached here too. */
  if (co == 0 && len == clen) {
    if (flags & BACKUP_READ_UNHASHED)
      e = backup_chunk_read_unhashed (rd->r, rd->ix.digest[idx], buf, clen);
    else
      e = backup_chunk_read_data (rd->r, rd->ix.digest[idx], buf, clen);
    if (e < 0)
      return read_error (rd, idx, e);
    return 0;
  }

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
  if ((e = backup_chunk_read_data (rd->r, rd->ix.digest[idx], data, clen)) < 0) {
    free (data);
    return read_error (rd, idx, e);
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

/* The part table of chunk IDX (CLEN bytes), copied into *T (free with
 * backup_part_table_free): 0; 1 if the chunk is not parted; -errno. */
static int
table_get (struct backup_reader *rd, uint64_t idx, size_t clen,
           struct backup_part_table *t)
{
  struct backup_part_table nt;
  struct tslot *victim = NULL;
  size_t bytes;
  int i, e;

  memset (t, 0, sizeof *t);
  pthread_mutex_lock (&rd->lock);
  for (i = 0; i < TABLE_SLOTS; i++) {
    struct tslot *ts = &rd->tables[i];

    if (ts->used && ts->idx == idx) {
      ts->used = ++rd->clock;
      e = ts->whole ? 1 : 0;
      if (e == 0) {
        *t = ts->t;
        bytes = (ts->t.count ? ts->t.count : 1) * sizeof *t->part;
        if ((t->part = malloc (bytes)) == NULL)
          e = vbk_errno (-ENOMEM, "backup: read");
        else
          memcpy (t->part, ts->t.part, bytes);
      }
      pthread_mutex_unlock (&rd->lock);
      return e;
    }
  }
  pthread_mutex_unlock (&rd->lock);

  if ((e = backup_chunk_table_load (rd->r, rd->ix.digest[idx], clen, &nt)) < 0)
    return read_error (rd, idx, e);
  if (e == 0) {
    *t = nt;
    bytes = (nt.count ? nt.count : 1) * sizeof *t->part;
    if ((t->part = malloc (bytes)) == NULL) {
      backup_part_table_free (&nt);
      return vbk_errno (-ENOMEM, "backup: read");
    }
    memcpy (t->part, nt.part, bytes);
  }
  pthread_mutex_lock (&rd->lock);
  for (i = 0; i < TABLE_SLOTS; i++)
    if (victim == NULL || rd->tables[i].used < victim->used)
      victim = &rd->tables[i];
  backup_part_table_free (&victim->t);
  victim->t = nt;
  victim->whole = e == 1;
  victim->idx = idx;
  victim->used = ++rd->clock;
  pthread_mutex_unlock (&rd->lock);
  return e;
}

/* Copies what [CO, CO+LEN) of chunk IDX holds of part P (of T) from
 * PBUF, the part's plain bytes, into BUF (the range's first byte). */
static void
part_copy (const struct backup_part_table *t, uint32_t p, const char *pbuf,
           char *buf, size_t co, size_t len)
{
  size_t ps = (size_t) p << t->shift, pe = ps + backup_part_plain (t, p);
  size_t s = MAX (ps, co), e = MIN (pe, co + len);

  memcpy (buf + (s - co), pbuf + (s - ps), e - s);
}

/* Bytes [CO, CO+LEN) of chunk IDX read part by part (BACKUP_READ_PARTS):
 * only the parts the range touches are fetched, each checked against its
 * CRC-32 before it is used, and kept in a small cache of decoded parts;
 * a chunk that is not parted is read whole and checked in full. */
static int
read_parts (struct backup_reader *rd, uint64_t idx, char *buf, size_t co,
            size_t len, int flags)
{
  uint64_t cs = rd->m.chunk_size;
  size_t clen = MIN (cs, rd->m.size - idx * cs);
  struct backup_part_table t;
  uint32_t p, q, last;
  int i, e;

  if ((e = table_get (rd, idx, clen, &t)) == 1)
    return flags & BACKUP_READ_PARTS_ONLY ? -EAGAIN
      : read_chunk (rd, idx, buf, co, len, 0);
  if (e < 0)
    return e;
  last = (uint32_t) ((co + len - 1) >> t.shift);
  for (p = (uint32_t) (co >> t.shift); p <= last; p = q) {
    bool hit = false;
    char *tmp;

    pthread_mutex_lock (&rd->lock);
    for (i = 0; i < PART_SLOTS && !hit; i++)
      if (rd->parts[i].used && rd->parts[i].idx == idx
          && rd->parts[i].part == p) {
        rd->parts[i].used = ++rd->clock;
        part_copy (&t, p, rd->parts[i].buf, buf, co, len);
        hit = true;
      }
    pthread_mutex_unlock (&rd->lock);
    if (hit) {
      q = p + 1;
      continue;
    }
    /* The run of parts from P not cached (checked unlocked: a part
     * another thread caches meanwhile is only fetched twice). */
    for (q = p + 1; q <= last; q++) {
      bool cached = false;

      pthread_mutex_lock (&rd->lock);
      for (i = 0; i < PART_SLOTS && !cached; i++)
        cached = rd->parts[i].used && rd->parts[i].idx == idx
          && rd->parts[i].part == q;
      pthread_mutex_unlock (&rd->lock);
      if (cached)
        break;
    }
    if ((tmp = malloc ((size_t) (q - p) << t.shift)) == NULL) {
      backup_part_table_free (&t);
      return vbk_errno (-ENOMEM, "backup: read");
    }
    if ((e = backup_chunk_read_parts (rd->r, rd->ix.digest[idx], &t, p,
                                      q - p, tmp)) < 0) {
      free (tmp);
      backup_part_table_free (&t);
      return read_error (rd, idx, e);
    }
    for (uint32_t k = p; k < q; k++) {
      char *pb = tmp + ((size_t) (k - p) << t.shift), *own = NULL;
      struct pslot *victim = NULL;

      part_copy (&t, k, pb, buf, co, len);
      if (q - p == 1)
        own = tmp;              /* handed to the cache as it is */
      else if ((own = malloc (backup_part_plain (&t, k))) != NULL)
        memcpy (own, pb, backup_part_plain (&t, k));
      if (own == NULL)
        continue;
      pthread_mutex_lock (&rd->lock);
      for (i = 0; i < PART_SLOTS; i++)
        if (victim == NULL || rd->parts[i].used < victim->used)
          victim = &rd->parts[i];
      free (victim->buf);
      victim->buf = own;
      victim->idx = idx;
      victim->part = k;
      victim->used = ++rd->clock;
      pthread_mutex_unlock (&rd->lock);
    }
    if (q - p > 1)
      free (tmp);
  }
  backup_part_table_free (&t);
  return 0;
}

ssize_t
backup_reader_pread (struct backup_reader *rd, void *buf, size_t len,
                     uint64_t off)
{
  return backup_reader_pread_flags (rd, buf, len, off, 0);
}

ssize_t
backup_reader_pread_flags (struct backup_reader *rd, void *buf, size_t len,
                           uint64_t off, int flags)
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
    else if ((flags & BACKUP_READ_PARTS)
             && !(co == 0 && n == MIN (cs, rd->m.size - idx * cs))) {
      if ((e = read_parts (rd, idx, (char *) buf + done, co, n, flags)) < 0)
        return e;
    }
    else if ((e = read_chunk (rd, idx, (char *) buf + done, co, n,
                              flags)) < 0)
      return e;
    done += n;
  }
  return len;
}

int
backup_reader_verify (struct backup_reader *rd, const void *buf, size_t len,
                      uint64_t off)
{
  uint64_t cs = rd->m.chunk_size, idx;
  size_t done = 0, n;
  int e;

  if (off > rd->m.size || len > rd->m.size - off)
    return vbk_errno (-EINVAL, "backup %s: check past the end", rd->m.id);
  while (done < len) {
    idx = (off + done) / cs;
    n = MIN (len - done, cs - (off + done) % cs);
    /* Only whole chunks were read unhashed; holes were not read. */
    if ((off + done) % cs == 0 && n == MIN (cs, rd->m.size - idx * cs)
        && !backup_digest_is_hole (rd->ix.digest[idx])
        && (e = backup_chunk_verify (rd->r, rd->ix.digest[idx],
                                     (const char *) buf + done, n)) < 0)
      return read_error (rd, idx, e);
    done += n;
  }
  return 0;
}

int
backup_reader_check_chunk (struct backup_reader *rd, uint64_t off)
{
  uint64_t cs = rd->m.chunk_size, idx = off / cs;
  size_t clen;
  char *data;
  int e;

  if (off >= rd->m.size)
    return vbk_errno (-EINVAL, "backup %s: check past the end", rd->m.id);
  if (backup_digest_is_hole (rd->ix.digest[idx]))
    return 0;
  clen = MIN (cs, rd->m.size - idx * cs);
  if ((data = malloc (clen)) == NULL)
    return vbk_errno (-ENOMEM, "backup: check");
  e = backup_chunk_read_data (rd->r, rd->ix.digest[idx], data, clen);
  free (data);
  return e < 0 ? read_error (rd, idx, e) : 0;
}

/* ---- Watching the catalog ------------------------------------------------------ */

struct cat_lister {
  const char *image;
  struct backup_entry *list;
  size_t n, cap;
};

/* VAL: "IMAGE START_MS [PARENT]" (FORMAT.md, vbk_backup_catalog). */
static int
cat_one (void *arg, const char *id, const char *val)
{
  struct cat_lister *l = arg;
  struct backup_entry *e;
  size_t ilen = strcspn (val, " ");
  const char *t = val + ilen;

  if (ilen == 0 || ilen > IMAGE_NAME_MAX || *t != ' ')
    return 0;                   /* not ours to judge: backup_list says */
  if (l->image && (strlen (l->image) != ilen
                   || memcmp (l->image, val, ilen) != 0))
    return 0;
  if (l->n == l->cap) {
    l->cap = l->cap ? 2 * l->cap : 32;
    if ((e = realloc (l->list, l->cap * sizeof *e)) == NULL)
      return vbk_errno (-ENOMEM, "backup: catalog");
    l->list = e;
  }
  e = &l->list[l->n++];
  memset (e, 0, sizeof *e);
  snprintf (e->id, sizeof e->id, "%s", id);
  memcpy (e->image, val, ilen);
  e->time_ms = strtoull (t + 1, NULL, 10);
  return 0;
}

static int
cmp_newest (const void *a, const void *b)
{
  const struct backup_entry *x = a, *y = b;

  if (x->time_ms != y->time_ms)
    return x->time_ms > y->time_ms ? -1 : 1;
  return -strcmp (x->id, y->id);
}

int
backup_catalog_list (struct backup_repo *r, const char *image,
                     struct backup_entry **list, size_t *n)
{
  struct cat_lister l = { .image = image };
  int e;

  if ((e = backup_catalog_walk (r, cat_one, &l)) < 0) {
    free (l.list);
    return e;
  }
  if (l.n)
    qsort (l.list, l.n, sizeof *l.list, cmp_newest);
  *list = l.list;
  *n = l.n;
  return 0;
}

int
backup_complete (struct backup_repo *r, const char *id)
{
  char oid[STORE_NAME_MAX + 1];
  uint64_t size;
  int e;

  if (backup_id_check (id) < 0)
    return -ENOENT;
  backup_manifest_oid (id, oid, sizeof oid);
  e = store_stat (r->st, oid, STORE_SNAP_HEAD, &size);
  if (e < 0 && e != -ENOENT)
    return vbk_errno (e, "backup %s: manifest", id);
  return e;
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
