/* SPDX-License-Identifier: MIT
 *
 * chunk.c - the chunk store: write once, touch on reuse, read with every
 * check.
 *
 * DESIGN: a chunk is named by the SHA-256 of its plain bytes (in an
 * encrypted repository: their HMAC-SHA256 under the id key), so the same
 * data is stored once for every backup of every image.  The registry
 * (omap of vbk_backup_chunks) has one key per chunk with the wall-clock
 * time of its last reference; gc (gc.c) needs it both to enumerate the
 * chunks (a store cannot list objects) and to know which chunks a running
 * backup may rely on.  A key is in one of three states: "TIME" (claimed:
 * the chunk was durable when the key was written), "bad TIME" (verify
 * found the chunk bad) and "bad TIME new" (being written: not durable
 * yet, so after a crash possibly short or garbled under its name).  Only
 * a claimed chunk that exists is relied on; the other states make the
 * next backup with that data write it again.  Every change of a chunk's
 * state happens under the chunk's own lock (a store lock with a duration,
 * so a killed process holds it only for a while):
 *
 *   ensure (backup):  lock -> registry -> stat ->
 *                     claimed and present: time < SINCE ? set time = now
 *                     else: set "bad now new" -> write the chunk:
 *                       absent: created deferred (no sync: the backup's
 *                               flush makes it durable with all others)
 *                       present: replaced durably (see below)
 *                     -> unlock
 *   claim (backup):   after the flush that made every chunk it wrote
 *                     durable: "TIME" for all of them, in batches
 *   sweep (gc):       lock -> registry time -> older than the cutoff ?
 *                     remove chunk, remove key -> unlock
 *
 * Because ensure and sweep run under the lock and times only grow, a
 * chunk a backup relies on either has a time gc will not sweep, or was
 * swept before the backup looked and is written again.  The key is set
 * (durably) before the chunk is written, so a crash leaves at worst a key
 * whose chunk is missing or torn (gc removes both) and never a chunk gc
 * cannot find.  A chunk is claimed only once durable, so nothing that
 * finds it claimed (another backup's dedup, a touch) relies on bytes a
 * crash could still take.  An existing chunk is never replaced by a
 * deferred write: another backup may have created it deferred and claim
 * it after its own flush, and on the local store that flush skips a file
 * that lost its name; the name must then hold bytes that are durable
 * already.  So only a new name is written deferred (an exclusive create)
 * and a replacement is synced before it is renamed in.
 * Reads check the header, the CRC32 of the stored bytes, the size and the
 * SHA-256 of the result against the name.  A chunk is written parted
 * (format.c, FORMAT.md) in a repository of format 2 that is not
 * encrypted, whole otherwise; reads take either.  Part reads
 * (backup_chunk_table_load, backup_chunk_read_parts) check the part
 * table's and each part's CRC-32, never the digest: their callers
 * arrange the whole-chunk check.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libdeflate.h>

#include "common/error.h"
#include "common/util.h"
#include "internal.h"

#define LOCK_NAME "chunk"
#define LOCK_MS_DEFAULT 30000

uint32_t
backup_lock_ms (void)
{
  const char *s = getenv ("VBK_BACKUP_LOCK_MS");
  long v;

  if (s && (v = atol (s)) >= 100 && v <= 3600000)
    return (uint32_t) v;
  return LOCK_MS_DEFAULT;
}

int
backup_chunk_lock (struct backup_repo *r, const char *oid, char *cookie,
                   size_t cookie_len)
{
  static _Atomic unsigned long seq;
  uint32_t ms = backup_lock_ms ();
  uint64_t deadline = now_mono_ns () + 2ull * ms * 1000000;
  struct timespec ts = { 0, 5000000 };
  int e;

  /* A cookie per call: two threads of this process may want one chunk. */
  snprintf (cookie, cookie_len, "%d.%lu", (int) getpid (), ++seq);
  for (;;) {
    e = store_lock (r->st, oid, LOCK_NAME, cookie, "vbk backup", ms, 0);
    if (e != -EBUSY)
      break;
    if (now_mono_ns () > deadline)
      return vbk_errno (-EBUSY, "backup: %s: locked by another process for "
                        "too long", oid);
    nanosleep (&ts, NULL);
  }
  if (e < 0)
    return vbk_errno (e, "backup: %s: lock", oid);
  return 0;
}

void
backup_chunk_unlock (struct backup_repo *r, const char *oid,
                     const char *cookie)
{
  /* -ENOENT: gc removed the object and its lock with it (RADOS), or the
   * lock ran out; either way nothing is left to do.  Called on the way
   * out of a failure too: the store call must not wipe its message. */
  VBK_KEEP_ERROR_FOR_SCOPE;

  store_unlock (r->st, oid, LOCK_NAME, cookie);
}

/* Registry states (FORMAT.md): claimed "TIME", "bad TIME", and "bad TIME
 * new" for a chunk written and not durable yet.  A vbk that knows only
 * the first two reads the third as bad, so it never relies on such a
 * chunk either. */
enum reg_state { REG_CLAIMED, REG_BAD, REG_NEW };

/* Registry entry of HEX: 1 with *T and *STATE, 0 if none, or -errno. */
static int
reg_get (struct backup_repo *r, const char *hex, uint64_t *t,
         enum reg_state *state)
{
  char v[64], *end;
  ssize_t n;

  n = store_omap_get (r->st, BACKUP_CHUNKS_OID, hex, v, sizeof v - 1);
  if (n == -ENOENT)
    return 0;
  if (n < 0)
    return (int) n;
  v[n < (ssize_t) sizeof v ? n : (ssize_t) sizeof v - 1] = '\0';
  if (strncmp (v, "bad ", 4) != 0) {
    *state = REG_CLAIMED;
    *t = strtoull (v, NULL, 10);
    return 1;
  }
  *t = strtoull (v + 4, &end, 10);
  *state = strcmp (end, " new") == 0 ? REG_NEW : REG_BAD;
  return 1;
}

static int
reg_value (char *buf, size_t len, enum reg_state state, uint64_t t)
{
  return snprintf (buf, len, "%s%" PRIu64 "%s",
                   state == REG_CLAIMED ? "" : "bad ", t,
                   state == REG_NEW ? " new" : "");
}

/* ---- Group commit of registry writes ---------------------------------------
 *
 * Each registry write must be durable before the chunk it registers is
 * written (or, for a touch, before the chunk lock is released), and on
 * the local store a durable omap key costs a journal commit under the
 * registry's one metadata lock: written one by one they serialize every
 * worker of a backup.  So a writer queues its key and waits; the first
 * waiter that finds no batch in flight becomes the leader, takes every
 * key queued so far and writes them with one store_meta_set (one
 * sync), then wakes the writers of that batch with its result.  Keys
 * queued meanwhile form the next batch.  Every caller still holds its
 * chunk lock while it waits, so the per-chunk protocol above is unchanged:
 * only the sync is shared. */

#define REG_BATCH_MAX 256

struct backup_reg_req {
  struct backup_reg_req *next;
  char hex[BACKUP_HEX_LEN + 1];
  char val[40];
  size_t len;
  bool done;
  int err;
  char msg[256];
};

void
backup_reg_init (struct backup_repo *r)
{
  pthread_mutex_init (&r->reg.lock, NULL);
  pthread_cond_init (&r->reg.cond, NULL);
  r->reg.head = NULL;
  r->reg.tail = &r->reg.head;
  r->reg.busy = false;
}

void
backup_reg_fini (struct backup_repo *r)
{
  pthread_mutex_destroy (&r->reg.lock);
  pthread_cond_destroy (&r->reg.cond);
}

/* Leader: writes BATCH (N requests) and records the result in each. */
static void
reg_write_batch (struct backup_repo *r, struct backup_reg_req *batch,
                 size_t n)
{
  struct store_meta_set sets[REG_BATCH_MAX] = { { 0 } };
  size_t i = 0;
  struct backup_reg_req *q;
  int e;

  for (q = batch; q; q = q->next, i++)
    sets[i] = (struct store_meta_set) { true, q->hex, q->val, q->len };
  e = store_meta_set (r->st, BACKUP_CHUNKS_OID, sets, n);
  for (q = batch; q; q = q->next) {
    q->err = e;
    if (e < 0)
      snprintf (q->msg, sizeof q->msg, "%s", vbk_error ());
  }
}

static int
reg_set (struct backup_repo *r, const char *hex, enum reg_state state)
{
  struct backup_reg_group *g = &r->reg;
  struct backup_reg_req me = { 0 }, *batch, **pp;
  size_t n;

  snprintf (me.hex, sizeof me.hex, "%s", hex);
  me.len = (size_t) reg_value (me.val, sizeof me.val, state, now_wall_ms ());
  pthread_mutex_lock (&g->lock);
  *g->tail = &me;
  g->tail = &me.next;
  while (!me.done) {
    if (g->busy) {
      pthread_cond_wait (&g->cond, &g->lock);
      continue;
    }
    /* Lead: take up to REG_BATCH_MAX queued keys (ours among them). */
    batch = g->head;
    for (n = 0, pp = &g->head; *pp && n < REG_BATCH_MAX; n++)
      pp = &(*pp)->next;
    g->head = *pp;
    *pp = NULL;
    if (g->head == NULL)
      g->tail = &g->head;
    g->busy = true;
    pthread_mutex_unlock (&g->lock);
    reg_write_batch (r, batch, n);
    pthread_mutex_lock (&g->lock);
    while (batch) {
      struct backup_reg_req *next = batch->next;

      batch->done = true;       /* BATCH may live on another stack */
      batch = next;
    }
    g->busy = false;
    pthread_cond_broadcast (&g->cond);
  }
  pthread_mutex_unlock (&g->lock);
  if (me.err < 0)
    vbk_set_error ("%s", me.msg);
  return me.err;
}

int
backup_chunk_ensure (struct backup_repo *r, const unsigned char *d,
                     uint64_t since, const void *plain, size_t len,
                     uint64_t *stored)
{
  char oid[STORE_NAME_MAX + 1], hex[BACKUP_HEX_LEN + 1], cookie[64];
  enum reg_state state = REG_CLAIMED;
  uint64_t t = 0, size = 0;
  void *enc = NULL;
  ssize_t n;
  int have, e, exists;

  if (stored)
    *stored = 0;
  backup_digest_hex (d, hex);
  backup_chunk_oid (d, oid, sizeof oid);
  if ((e = backup_chunk_lock (r, oid, cookie, sizeof cookie)) < 0)
    return e;
  if ((have = reg_get (r, hex, &t, &state)) < 0) {
    e = vbk_errno (have, "backup: registry of %s", oid);
    goto out;
  }
  e = store_stat (r->st, oid, STORE_SNAP_HEAD, &size);
  if (e < 0 && e != -ENOENT) {
    vbk_errno (e, "backup: %s: stat", oid);
    goto out;
  }
  exists = e == 0;
  if (exists && size > BACKUP_CHUNK_HDR && have && state == REG_CLAIMED) {
    e = 0;
    if (t < since && (e = reg_set (r, hex, REG_CLAIMED)) < 0)
      vbk_error_prepend (e, "backup: %s: registry (touch): ", oid);
    goto out;
  }
  if (plain == NULL) {
    e = -ENOENT;
    vbk_set_error ("backup: %s is %s", oid, !have || !exists ? "missing"
                   : state == REG_BAD ? "marked bad" : "not durable yet");
    goto out;
  }
  if ((enc = malloc (backup_chunk_bound (len))) == NULL) {
    e = vbk_errno (-ENOMEM, "backup: %s", oid);
    goto out;
  }
  if (r->crypt == NULL && r->parts)
    n = backup_chunk_encode_parts (plain, len, enc);
  else
    n = backup_chunk_encode (r->crypt, d, plain, len, enc);
  if (n < 0) {
    e = vbk_error_prepend ((int) n, "backup: %s: ", oid);
    goto out;
  }
  if ((e = reg_set (r, hex, REG_NEW)) < 0) {
    vbk_error_prepend (e, "backup: %s: registry: ", oid);
    goto out;
  }
  /* A new name: deferred, made durable by the backup's flush.  An
   * existing one (torn by a crash, bad, or another backup's not yet
   * claimed): replaced durably, see the top of the file. */
  e = -EEXIST;
  if (!exists)
    e = store_create_excl (r->st, oid, enc, (size_t) n, STORE_WRITE_DEFER);
  if (e == -EEXIST)
    e = store_write_full (r->st, oid, enc, (size_t) n, STORE_WRITE_SYNC);
  if (e < 0) {
    vbk_errno (e, "backup: writing %s", oid);
    goto out;
  }
  if (stored)
    *stored = n;
  e = 1;
 out:
  backup_chunk_unlock (r, oid, cookie);
  free (enc);
  return e;
}

/* Claims at most this many chunks with one store_meta_set. */
#define CLAIM_BATCH 1024

int
backup_chunk_claim (struct backup_repo *r,
                    const unsigned char (*d)[BACKUP_DIGEST_LEN], size_t n)
{
  struct store_meta_set *sets;
  char (*hex)[BACKUP_HEX_LEN + 1], val[32];
  size_t i, m, done;
  int len, e = 0;

  if (n == 0)
    return 0;
  m = MIN (n, (size_t) CLAIM_BATCH);
  sets = calloc (m, sizeof *sets);
  hex = calloc (m, sizeof *hex);
  if (sets == NULL || hex == NULL) {
    free (sets);
    free (hex);
    return vbk_errno (-ENOMEM, "backup: registry");
  }
  len = reg_value (val, sizeof val, REG_CLAIMED, now_wall_ms ());
  for (done = 0; done < n && e == 0; done += m) {
    m = MIN (n - done, (size_t) CLAIM_BATCH);
    for (i = 0; i < m; i++) {
      backup_digest_hex (d[done + i], hex[i]);
      sets[i] = (struct store_meta_set) { true, hex[i], val, (size_t) len };
    }
    if ((e = store_meta_set (r->st, BACKUP_CHUNKS_OID, sets, m)) < 0)
      vbk_error_prepend (e, "backup: registry: claiming %zu chunks written "
                         "(vbk_chunk.%s...): ", n, hex[0]);
  }
  free (sets);
  free (hex);
  return e;
}

int
backup_chunk_check (struct backup_repo *r, const unsigned char *d)
{
  char hex[BACKUP_HEX_LEN + 1];
  enum reg_state state = REG_CLAIMED;
  uint64_t t;
  int have;

  backup_digest_hex (d, hex);
  if ((have = reg_get (r, hex, &t, &state)) < 0)
    return vbk_errno (have, "backup: registry of vbk_chunk.%s", hex);
  if (!have || state != REG_CLAIMED) {
    vbk_set_error ("backup: vbk_chunk.%s is %s", hex, !have ? "missing"
                   : state == REG_BAD ? "marked bad" : "not durable yet");
    return -ENOENT;
  }
  return 0;
}

/* The message of a chunk found damaged (E from a parser): -EIO naming
 * the chunk. */
static int
corrupt (const char *oid, int e)
{
  char msg[1024];

  if (e != -EBADMSG && e != -EPROTONOSUPPORT)
    return e;
  snprintf (msg, sizeof msg, "%s", vbk_error ());
  vbk_set_error ("backup: chunk %s is corrupt: %s", oid, msg);
  return -EIO;
}

/* A parted chunk of SIZE bytes whose parts are all raw: the header and
 * table read apart, the parts straight into PLAIN.  1 if it was such a
 * chunk and right (each part's CRC-32, unless FLAGS has
 * BACKUP_DECODE_DATA), 0 if it is not such a chunk after all (decode it
 * the usual way), or -EIO naming it. */
static int
read_raw_parts (struct backup_repo *r, const char *oid, uint64_t size,
                void *plain, size_t len, int flags)
{
  size_t tl = size - BACKUP_CHUNK_HDR - len;
  unsigned char *h = malloc (BACKUP_CHUNK_HDR + tl);
  struct store_range rg[2] = { { 0, BACKUP_CHUNK_HDR + tl, h },
                               { BACKUP_CHUNK_HDR + tl, len, plain } };
  struct backup_part_table t = { 0 };
  uint32_t i;
  int e;

  if (h == NULL)
    return vbk_errno (-ENOMEM, "backup: %s", oid);
  if ((e = store_read_ranges (r->st, oid, STORE_SNAP_HEAD, rg, 2)) < 0) {
    free (h);
    return 0;                   /* the usual way says what is wrong */
  }
  if (memcmp (h, BACKUP_CHUNK_MAGIC, 4) != 0 || h[4] != 2 || h[5] != 0
      || h[6] != BACKUP_PART_SHIFT
      || backup_part_table_parse (h, BACKUP_CHUNK_HDR + tl, len, &t) < 0
      || t.plain != len || t.stored != size - BACKUP_CHUNK_HDR) {
    free (h);
    backup_part_table_free (&t);
    return 0;
  }
  e = 1;
  for (i = 0; i < t.count && e == 1; i++)
    if (t.part[i].codec != BACKUP_CODEC_NONE)
      e = 0;
  /* In place: a raw part is its own plain bytes; only its CRC-32 is
   * left to check. */
  for (i = 0; i < t.count && e == 1 && !(flags & BACKUP_DECODE_DATA); i++)
    if (libdeflate_crc32 (0, (char *) plain + ((size_t) i << t.shift),
                          t.part[i].len) != t.part[i].crc) {
      vbk_set_error ("backup: chunk %s is corrupt: part %u (plain bytes "
                     "%zu..%zu) checksum mismatch", oid, i,
                     (size_t) i << t.shift,
                     ((size_t) i << t.shift) + t.part[i].len);
      e = -EIO;
    }
  free (h);
  backup_part_table_free (&t);
  return e;
}

int
backup_chunk_table_load (struct backup_repo *r, const unsigned char *d,
                         size_t clen, struct backup_part_table *t)
{
  char oid[STORE_NAME_MAX + 1];
  size_t want = BACKUP_CHUNK_HDR + BACKUP_PART_ENTRY
    * ((clen + (1u << BACKUP_PART_SHIFT) - 1) >> BACKUP_PART_SHIFT), need;
  unsigned char *buf;
  ssize_t n;
  int e;

  memset (t, 0, sizeof *t);
  /* Encrypted chunks are whole, and so is every chunk of a 1.x
   * repository (FORMAT.md, "Versions"): no need to look. */
  if (r->crypt || !r->parts)
    return 1;
  backup_chunk_oid (d, oid, sizeof oid);
  if ((buf = malloc (want)) == NULL)
    return vbk_errno (-ENOMEM, "backup: %s", oid);
  n = store_read (r->st, oid, buf, want, 0, STORE_SNAP_HEAD);
  if (n >= BACKUP_CHUNK_HDR && (e = backup_chunk_head (buf, &need)) == 2
      && need != want) {
    /* Parts of another size than this vbk writes: read the table again. */
    unsigned char *b2 = need > (64u << 20) ? NULL : realloc (buf, need);

    if (b2 == NULL) {
      free (buf);
      return vbk_errno (-EIO, "backup: chunk %s is corrupt: a part table "
                        "of %zu bytes", oid, need);
    }
    buf = b2;
    want = need;
    n = store_read (r->st, oid, buf, want, 0, STORE_SNAP_HEAD);
  }
  if (n == -ENOENT)
    e = vbk_errno (-EIO, "backup: chunk %s is missing", oid);
  else if (n < 0) {
    vbk_error_prepend ((int) n, "backup: chunk %s: ", oid);
    e = -EIO;
  }
  else if (n < BACKUP_CHUNK_HDR)
    e = vbk_errno (-EIO, "backup: chunk %s is corrupt: truncated "
                   "(%zd bytes)", oid, n);
  else if ((e = backup_chunk_head (buf, &need)) < 0)
    e = corrupt (oid, e);
  else if (e == 1)
    ;                           /* the whole layout */
  else if ((e = backup_part_table_parse (buf, (size_t) n, clen, t)) < 0)
    e = corrupt (oid, e);
  else if (t->plain != clen) {
    backup_part_table_free (t);
    e = vbk_errno (-EIO, "backup: chunk %s is corrupt: %u bytes, expected "
                   "%zu", oid, t->plain, clen);
  }
  free (buf);
  return e;
}

int
backup_chunk_read_parts (struct backup_repo *r, const unsigned char *d,
                         const struct backup_part_table *t, uint32_t first,
                         uint32_t n, void *out)
{
  char oid[STORE_NAME_MAX + 1], *buf;
  uint64_t off = t->part[first].off;
  uint64_t end = t->part[first + n - 1].off + t->part[first + n - 1].len;
  ssize_t got;
  uint32_t i;
  int e = 0;

  backup_chunk_oid (d, oid, sizeof oid);
  if ((buf = malloc (end - off ? end - off : 1)) == NULL)
    return vbk_errno (-ENOMEM, "backup: %s", oid);
  got = store_read (r->st, oid, buf, end - off, off, STORE_SNAP_HEAD);
  if (got == -ENOENT)
    e = vbk_errno (-EIO, "backup: chunk %s is missing", oid);
  else if (got < 0) {
    vbk_error_prepend ((int) got, "backup: chunk %s: ", oid);
    e = -EIO;
  }
  else if ((uint64_t) got != end - off)
    e = vbk_errno (-EIO, "backup: chunk %s is corrupt: truncated in part "
                   "%u", oid, first);
  for (i = first; e == 0 && i < first + n; i++)
    if ((e = backup_part_decode (t, i, buf + (t->part[i].off - off),
                                 (char *) out + ((size_t) (i - first)
                                                 << t->shift), 0)) < 0)
      e = corrupt (oid, e);
  free (buf);
  return e;
}

/* HASH: check the digest of the result against the name; without it
 * only what decoding checks with FLAGS (the CRC-32, or the GCM tag) is
 * checked, and the caller checks the digest later (backup_chunk_verify). */
static int
chunk_read (struct backup_repo *r, const unsigned char *d, void *plain,
            size_t len, int flags, bool hash)
{
  char oid[STORE_NAME_MAX + 1], msg[1024], *buf = NULL;
  unsigned char got[BACKUP_DIGEST_LEN], h[BACKUP_CHUNK_HDR];
  size_t olen = 0, plen = len;
  uint64_t size;
  int e;

  backup_chunk_oid (d, oid, sizeof oid);
  e = store_stat (r->st, oid, STORE_SNAP_HEAD, &size);
  if (e == 0 && r->crypt == NULL && size == BACKUP_CHUNK_HDR
      + BACKUP_PART_ENTRY * ((len + (1u << BACKUP_PART_SHIFT) - 1)
                             >> BACKUP_PART_SHIFT) + len) {
    /* Its size says parted with every part raw: likewise. */
    e = read_raw_parts (r, oid, size, plain, len, flags);
    if (e == 1)
      goto hash;
    if (e < 0)
      return e;
  }
  if (e == 0 && r->crypt == NULL && size == BACKUP_CHUNK_HDR + len) {
    /* Its size says stored raw (LZ4 is kept only when it saves): the
     * payload is read straight into PLAIN, header beside it. */
    struct store_range rg[2] = { { 0, sizeof h, h },
                                 { BACKUP_CHUNK_HDR, len, plain } };

    if ((e = store_read_ranges (r->st, oid, STORE_SNAP_HEAD, rg, 2)) == 0)
      e = backup_chunk_check_raw (h, plain, len, flags);
    if (e == 1)
      goto hash;
  }
  if (e == 0 && size > (1ull << 31))
    e = vbk_errno (-EFBIG, "backup: %s: object too large", oid);
  if (e == 0 && (buf = malloc (size + 1)) == NULL)
    e = vbk_errno (-ENOMEM, "backup: %s", oid);
  if (e == 0 && size) {
    ssize_t n = store_read (r->st, oid, buf, size, 0, STORE_SNAP_HEAD);

    e = n < 0 ? (int) n : 0;
  }
  olen = size;
  if (e == -EBADMSG) {
    snprintf (msg, sizeof msg, "%s", vbk_error ());
    vbk_set_error ("backup: chunk %s is corrupt: %s", oid, msg);
    return -EIO;
  }
  if (e < 0) {
    free (buf);
    if (e == -ENOENT)
      return vbk_errno (-EIO, "backup: chunk %s is missing", oid);
    snprintf (msg, sizeof msg, "%s", vbk_error ());
    return vbk_errno (-EIO, "backup: chunk %s: %s", oid, msg);
  }
  e = backup_chunk_decode_flags (r->crypt, d, buf, olen, plain, len, &plen,
                                 flags);
  free (buf);
  if (e < 0) {
    snprintf (msg, sizeof msg, "%s", vbk_error ());
    vbk_set_error ("backup: chunk %s is corrupt: %s", oid, msg);
    return -EIO;
  }
  if (plen != len)
    return vbk_errno (-EIO, "backup: chunk %s is corrupt: %zu bytes, "
                      "expected %zu", oid, plen, len);
hash:
  if (!hash)
    return 0;
  backup_chunk_id (r, plain, len, got);
  if (memcmp (got, d, BACKUP_DIGEST_LEN) != 0) {
    vbk_set_error ("backup: chunk %s is corrupt: its data does not match "
                   "its name", oid);
    return -EIO;
  }
  return 0;
}

int
backup_chunk_read (struct backup_repo *r, const unsigned char *d,
                   void *plain, size_t len)
{
  return chunk_read (r, d, plain, len, 0, true);
}

int
backup_chunk_read_data (struct backup_repo *r, const unsigned char *d,
                        void *plain, size_t len)
{
  return chunk_read (r, d, plain, len, BACKUP_DECODE_DATA, true);
}

int
backup_chunk_read_unhashed (struct backup_repo *r, const unsigned char *d,
                            void *plain, size_t len)
{
  return chunk_read (r, d, plain, len, 0, false);
}

int
backup_chunk_verify (struct backup_repo *r, const unsigned char *d,
                     const void *plain, size_t len)
{
  char oid[STORE_NAME_MAX + 1];
  unsigned char got[BACKUP_DIGEST_LEN];

  backup_chunk_id (r, plain, len, got);
  if (memcmp (got, d, BACKUP_DIGEST_LEN) == 0)
    return 0;
  backup_chunk_oid (d, oid, sizeof oid);
  vbk_set_error ("backup: chunk %s is corrupt: its data does not match "
                 "its name", oid);
  return -EIO;
}

int
backup_chunk_mark_bad (struct backup_repo *r, const unsigned char *d)
{
  char hex[BACKUP_HEX_LEN + 1];

  backup_digest_hex (d, hex);
  return reg_set (r, hex, REG_BAD);
}
