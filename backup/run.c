/* SPDX-License-Identifier: MIT
 *
 * run.c - taking backups: incremental forever, from crash-consistent
 * snapshots, through the copy engine.
 *
 * DESIGN: a backup of one image goes
 *
 *   <start> -> REGISTER (catalog key, writer lock renewed by a thread)
 *           -> SNAPSHOT (snap_create / snap_group_create via the holder)
 *           -> PLAN     parent = newest backup of the image whose snapshot
 *                       still exists: chunks image_diff reports changed
 *                       since it are read, the others keep the parent's
 *                       digest; no parent: a full read of allocated chunks
 *           -> CBT CHECK  a random sample of "unchanged" chunks is re-read
 *                       and re-hashed; any mismatch makes it a full read
 *           -> CHUNKS   copy_run(snapshot -> backup writer endpoint): hash,
 *                       dedup (in-memory set, then the repository),
 *                       compress, write; unchanged chunks are looked up in
 *                       the registry (and rewritten from the snapshot if
 *                       missing or bad), not touched: gc marks the parent
 *                       named in our catalog key
 *           -> FLUSH    every chunk written (created without a sync)
 *                       made durable in one store_flush, then claimed in
 *                       the registry (backup_chunk_claim), in batches
 *           -> INDEX    write the index
 *           -> MANIFEST create it exclusively: the backup now exists
 *           -> TRIM     remove this image's older backup snapshots
 *           -> UNREGISTER
 *
 * A crash anywhere before MANIFEST leaves a catalog key without manifest
 * (gc cleans it once the writer lock has run out), chunks that gc may
 * sweep, and a snapshot that the next backup's TRIM removes; the next
 * backup starts from the newest backup that exists.  A failure cleans
 * the same things up at once.  Reads come only from the snapshot, never
 * from the live image.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "common/workq.h"
#include "snapshot/snapshot.h"
#include "internal.h"

#define SNAP_PREFIX "vbkbk-"
#define CBT_SAMPLE_MAX 16
#define KEEP_THREADS 16
/* Copy threads of a backup: more than cores, as each chunk also waits
 * for its registry batch and its synced write; hashing and compressing
 * of other chunks fill that wait. */
#define COPY_THREADS_DEFAULT 8

struct writer {
  struct backup_repo *r;
  const struct backup_run_opts *o;
  struct backup_run_result *res;
  struct backup_set *known;
  const char *image;
  char id[64];
  char snap[IMAGE_NAME_MAX + 1];
  char writer_oid[STORE_NAME_MAX + 1];
  uint64_t start_ms;            /* registered start */
  uint64_t since;               /* references count from here */
  uint32_t object_size;         /* the image's (for restore) */
  int registered, snapped, done;

  struct backup_renewer renew;  /* of the writer lock */
  _Atomic int lost;

  struct image *img;            /* the snapshot */
  struct backup_index ix;
  unsigned char *wrote;         /* per chunk: 1 if this backup wrote it
                                   (to be claimed after the flush) */
  struct backup_index parent;
  struct backup_manifest pm;
  int have_parent;
  _Atomic uint64_t chunks_new, bytes_stored, extra_read, chunks_read;
};

/* ---- Registration ----------------------------------------------------------- */

/* Renews the writer lock; stops for good once it is lost. */
static int
renew_writer (void *arg)
{
  struct writer *w = arg;
  int e;

  e = store_lock (w->r->st, w->writer_oid, "writer", w->id, "vbk backup",
                  backup_lock_ms (), STORE_LOCK_RENEW);
  if (e < 0) {
    /* gc may now treat this backup as dead: it must not complete. */
    log_error ("backup %s: lost the writer lock: %s", w->id, strerror (-e));
    w->lost = 1;
    return 1;
  }
  return 0;
}

static void
new_id (char *buf, size_t len)
{
  uint64_t ms = now_wall_ms ();
  time_t t = ms / 1000;
  unsigned char rnd[4] = { 0 };
  struct tm tm;

  if (getrandom (rnd, sizeof rnd, 0) != sizeof rnd) {
    uint64_t x = now_mono_ns () ^ (uint64_t) getpid () << 32;
    memcpy (rnd, &x, sizeof rnd);
  }
  gmtime_r (&t, &tm);
  snprintf (buf, len, "%04d%02d%02dT%02d%02d%02dZ-%02x%02x%02x%02x",
            tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
            tm.tm_min, tm.tm_sec, rnd[0], rnd[1], rnd[2], rnd[3]);
}

static int
do_register (struct writer *w)
{
  char val[IMAGE_NAME_MAX + 64];
  int n, e;

  new_id (w->id, sizeof w->id);
  snprintf (w->snap, sizeof w->snap, SNAP_PREFIX "%s", w->id);
  backup_writer_oid (w->id, w->writer_oid, sizeof w->writer_oid);
  w->start_ms = now_wall_ms ();
  n = snprintf (val, sizeof val, "%s %" PRIu64, w->image, w->start_ms);
  if ((e = store_lock (w->r->st, w->writer_oid, "writer", w->id,
                       "vbk backup", backup_lock_ms (), 0)) < 0)
    return vbk_errno (e, "backup %s: writer lock", w->id);
  if ((e = store_omap_set (w->r->st, BACKUP_CATALOG_OID, w->id, val, n)) < 0) {
    store_unlock (w->r->st, w->writer_oid, "writer", w->id);
    return vbk_errno (e, "backup %s: registering", w->id);
  }
  w->registered = 1;
  /* After the key landed: any gc that has not seen us began before this,
   * so chunks we touch from now on are newer than its cutoff. */
  w->since = now_wall_ms ();
  return backup_renewer_start (&w->renew, renew_writer, w);
}

/* Records PARENT (the backup whose index this one will carry chunks
 * from) in our catalog key, before its manifest is read: from then on gc
 * marks the parent's chunks for us (gc.c). */
static int
set_parent (struct writer *w, const char *parent)
{
  char val[IMAGE_NAME_MAX + 160];
  int n, e;

  n = snprintf (val, sizeof val, "%s %" PRIu64 " %s", w->image, w->start_ms,
                parent);
  if ((e = store_omap_set (w->r->st, BACKUP_CATALOG_OID, w->id, val, n)) < 0)
    return vbk_errno (e, "backup %s: registering its parent", w->id);
  return 0;
}

static void
unregister (struct writer *w)
{
  char oid[STORE_NAME_MAX + 1];

  backup_renewer_stop (&w->renew);
  if (!w->registered)
    return;
  if (!w->done) {
    /* Failed: nothing of this backup stays but chunks (gc's) and, if the
     * snapshot cannot be removed now, the snapshot (the next run's). */
    backup_index_oid (w->id, oid, sizeof oid);
    store_remove (w->r->st, oid);
    store_omap_rm (w->r->st, BACKUP_CATALOG_OID, w->id);
  }
  store_unlock (w->r->st, w->writer_oid, "writer", w->id);
  store_remove (w->r->st, w->writer_oid);
  w->registered = 0;
}

/* ---- The writer endpoint ------------------------------------------------------ */

static int
put_chunk (struct writer *w, uint64_t idx, const void *buf, size_t len)
{
  unsigned char d[BACKUP_DIGEST_LEN];
  uint64_t stored;
  int e;

  if (w->lost)
    return vbk_errno (-ESHUTDOWN, "backup %s: the writer lock ran out", w->id);
  if (copy_is_zero (buf, len)) {
    memset (w->ix.digest[idx], 0, BACKUP_DIGEST_LEN);
    return 0;
  }
  backup_chunk_id (w->r, buf, len, d);
  memcpy (w->ix.digest[idx], d, BACKUP_DIGEST_LEN);
  if ((e = backup_set_add (w->known, d)) <= 0)
    return e == 0 ? 0 : vbk_errno (e, "backup: chunk set");
  if ((e = backup_chunk_ensure (w->r, d, w->since, buf, len, &stored)) < 0)
    return e;
  if (e == 1) {
    w->wrote[idx] = 1;
    w->chunks_new++;
    w->bytes_stored += stored;
  }
  return 0;
}

static int
wr_pwrite (void *h, const void *buf, size_t len, uint64_t off)
{
  struct writer *w = h;
  uint64_t cs = w->ix.chunk_size;

  if (off % cs || len != MIN (cs, w->ix.size - off))
    return vbk_errno (-EINVAL, "backup: piece %" PRIu64 "+%zu is not one "
                      "chunk", off, len);
  w->chunks_read++;
  return put_chunk (w, off / cs, buf, len);
}

static uint64_t
wr_size (void *h)
{
  return ((struct writer *) h)->ix.size;
}

static const struct copy_ops writer_ops = {
  .kind = "backup-writer",
  .pwrite = wr_pwrite,
  .size = wr_size,
};

/* ---- Planning ------------------------------------------------------------------ */

static int
has_snapshot (struct store *st, const char *image, const char *snap)
{
  struct image_snap *list;
  size_t n, i;
  int found = 0;

  if (image_snap_list (st, image, &list, &n) < 0)
    return 0;
  for (i = 0; i < n; i++)
    if (strcmp (list[i].name, snap) == 0)
      found = 1;
  free (list);
  return found;
}

static int
find_parent (struct writer *w)
{
  struct backup_entry *list;
  size_t n;
  int e;

  if (w->o->force_full) {
    snprintf (w->res->full_reason, sizeof w->res->full_reason,
              "a full backup was asked for");
    return 0;
  }
  /* A prune or rm may remove the newest backup between the listing and
   * the load: list again (a few times), then read everything. */
  for (int tries = 0;; tries++) {
    if ((e = backup_list (w->r, w->image, &list, &n)) < 0)
      return e;
    if (n == 0) {
      snprintf (w->res->full_reason, sizeof w->res->full_reason,
                "first backup of the image");
      free (list);
      return 0;
    }
    e = set_parent (w, list[n - 1].id);
    if (e == 0)
      e = backup_manifest_load (w->r, list[n - 1].id, &w->pm, NULL);
    free (list);
    if (e != -ENOENT)
      break;
    if (tries == 4) {
      snprintf (w->res->full_reason, sizeof w->res->full_reason,
                "the previous backups were removed while this one started");
      vbk_clear_error ();
      return 0;
    }
  }
  if (e < 0)
    return e;
  if (w->pm.snapshot[0] == '\0'
      || !has_snapshot (w->o->st, w->image, w->pm.snapshot)) {
    snprintf (w->res->full_reason, sizeof w->res->full_reason,
              "the snapshot of the previous backup %s (%s) is gone: full "
              "read", w->pm.id, w->pm.snapshot);
    return 0;
  }
  if (w->pm.chunk_size != w->r->chunk_size) {
    snprintf (w->res->full_reason, sizeof w->res->full_reason,
              "the previous backup has another chunk size");
    return 0;
  }
  if ((e = backup_index_load (w->r, &w->pm, &w->parent)) < 0) {
    snprintf (w->res->full_reason, sizeof w->res->full_reason,
              "the previous backup's index is unreadable (%s)", vbk_error ());
    return 0;
  }
  w->have_parent = 1;
  return 0;
}

struct dirty {
  unsigned char *map;
  uint64_t count, cs;
};

static int
diff_cb (void *arg, uint64_t off, uint64_t len, int allocated)
{
  struct dirty *d = arg;
  uint64_t i;

  for (i = off / d->cs; i < d->count && i * d->cs < off + len; i++)
    d->map[i] = 1;
  return 0;
}

/* Re-reads chunk IDX of the snapshot; *ZERO or its digest in D. */
static int
hash_snapshot_chunk (struct writer *w, uint64_t idx, void *buf,
                     unsigned char *d)
{
  uint64_t cs = w->ix.chunk_size;
  size_t len = MIN (cs, w->ix.size - idx * cs);
  ssize_t n;

  if ((n = image_read (w->img, buf, len, idx * cs)) < 0)
    return (int) n;
  w->extra_read += len;
  if (copy_is_zero (buf, len))
    memset (d, 0, BACKUP_DIGEST_LEN);
  else
    backup_chunk_id (w->r, buf, len, d);
  return 0;
}

/* The CBT self-check: returns 1 if a sampled chunk differs. */
static int
cbt_check (struct writer *w, const unsigned char *dirty)
{
  uint64_t *cand, nc = 0, i, k, j, t, cs = w->ix.chunk_size;
  unsigned char d[BACKUP_DIGEST_LEN];
  char hex[BACKUP_HEX_LEN + 1];
  int want = w->o->cbt_sample, bad = 0, e = 0;
  void *buf;

  if ((cand = malloc ((w->ix.count + 1) * sizeof *cand)) == NULL
      || (buf = malloc (cs)) == NULL) {
    free (cand);
    return vbk_errno (-ENOMEM, "backup: cbt check");
  }
  for (i = 0; i < w->ix.count; i++)
    if (!dirty[i])
      cand[nc++] = i;
  if (want < 0)
    want = (int) MIN (CBT_SAMPLE_MAX, MAX (1, nc / 100));
  k = MIN ((uint64_t) want, nc);
  /* A partial Fisher-Yates shuffle picks K distinct chunks. */
  for (i = 0; i < k; i++) {
    uint64_t rnd;

    if (getrandom (&rnd, sizeof rnd, 0) != sizeof rnd)
      rnd = now_mono_ns ();
    j = i + rnd % (nc - i);
    t = cand[i];
    cand[i] = cand[j];
    cand[j] = t;
    if ((e = hash_snapshot_chunk (w, cand[i], buf, d)) < 0)
      break;
    w->res->cbt_checked++;
    if (memcmp (d, w->ix.digest[cand[i]], BACKUP_DIGEST_LEN) != 0) {
      backup_digest_hex (w->ix.digest[cand[i]], hex);
      log_error ("backup %s: CBT SELF-CHECK FAILED: chunk %" PRIu64
                 " (offset %" PRIu64 ") changed since backup %s but the "
                 "change log says it did not; this backup reads everything",
                 w->id, cand[i], cand[i] * cs, w->pm.id);
      bad++;
    }
  }
  free (buf);
  free (cand);
  if (e < 0)
    return e;
  w->res->cbt_mismatch = bad;
  return bad > 0;
}

/* Unchanged chunks must still be in the repository: write them again
 * from the snapshot where they are missing or marked bad. */
struct keep_work {
  struct workq_item wq;
  struct writer *w;
  uint64_t idx;
  _Atomic int *err;
  char *msg;
  pthread_mutex_t *mlock;
};

static void
keep_one (struct workq_item *wq)
{
  struct keep_work *k = workq_entry (wq, struct keep_work, wq);
  struct writer *w = k->w;
  unsigned char *d = w->ix.digest[k->idx], nd[BACKUP_DIGEST_LEN];
  uint64_t cs = w->ix.chunk_size;
  size_t len = MIN (cs, w->ix.size - k->idx * cs);
  void *buf = NULL;
  int e;

  if (*k->err)
    return;
  if (backup_set_has (w->known, d))
    return;
  /* No touch: the chunk is in the parent's index, which gc marks while
   * we run (our catalog key names the parent) and ours marks after.  Only
   * a chunk the registry does not have, or has marked bad, is written
   * again. */
  e = backup_chunk_check (w->r, d);
  if (e == -ENOENT) {
    if ((buf = malloc (cs)) == NULL)
      e = vbk_errno (-ENOMEM, "backup");
    else if ((e = hash_snapshot_chunk (w, k->idx, buf, nd)) == 0) {
      if (memcmp (nd, d, BACKUP_DIGEST_LEN) != 0)
        log_warn ("backup %s: chunk %" PRIu64 " differs from the previous "
                  "backup although unchanged: stored as read", w->id,
                  k->idx);
      e = put_chunk (w, k->idx, buf, len);
    }
  }
  else if (e >= 0)
    e = backup_set_add (w->known, d) < 0 ? -ENOMEM : 0;
  free (buf);
  if (e < 0) {
    pthread_mutex_lock (k->mlock);
    if (*k->err == 0) {
      *k->err = e;
      snprintf (k->msg, 1024, "%s", vbk_error ());
    }
    pthread_mutex_unlock (k->mlock);
  }
}

static int
keep_unchanged (struct writer *w, const unsigned char *dirty)
{
  struct workq *q;
  struct keep_work *works;
  pthread_mutex_t mlock = PTHREAD_MUTEX_INITIALIZER;
  _Atomic int err = 0;
  char msg[1024] = "";
  uint64_t i, n = 0;
  int e;

  if ((works = calloc (w->ix.count + 1, sizeof *works)) == NULL)
    return vbk_errno (-ENOMEM, "backup");
  /* A registry look-up per chunk is a round trip, not bandwidth: more
   * threads than for copying. */
  {
    struct workq_opts wo = { .name = "backup-keep", .threads = KEEP_THREADS,
                             .max_queued = 2 * KEEP_THREADS };

    if ((e = workq_new (&wo, &q)) < 0) {
      free (works);
      return vbk_error_prepend (e, "backup: ");
    }
  }
  for (i = 0; i < w->ix.count && !err; i++) {
    if (dirty[i] || backup_digest_is_hole (w->ix.digest[i]))
      continue;
    works[n] = (struct keep_work) { .w = w, .idx = i, .err = &err,
                                    .msg = msg, .mlock = &mlock };
    workq_submit (q, &works[n++].wq, keep_one);
  }
  workq_free (q);
  free (works);
  if (err)
    vbk_set_error ("%s", msg);
  return err;
}

/* ---- One backup ------------------------------------------------------------------ */

/* Claims the chunks this backup wrote, once the flush made them durable
 * (chunk.c): from then on other backups may rely on them. */
static int
claim_written (struct writer *w)
{
  unsigned char (*d)[BACKUP_DIGEST_LEN];
  uint64_t i, n = 0;
  int e;

  for (i = 0; i < w->ix.count; i++)
    n += w->wrote[i];
  if (n == 0)
    return 0;
  if ((d = malloc (n * BACKUP_DIGEST_LEN)) == NULL)
    return vbk_errno (-ENOMEM, "backup");
  for (i = 0, n = 0; i < w->ix.count; i++)
    if (w->wrote[i])
      memcpy (d[n++], w->ix.digest[i], BACKUP_DIGEST_LEN);
  e = backup_chunk_claim (w->r, (const unsigned char (*)[BACKUP_DIGEST_LEN]) d,
                          n);
  free (d);
  return e;
}

static int
write_index_and_manifest (struct writer *w)
{
  const struct backup_run_opts *o = w->o;
  char oid[STORE_NAME_MAX + 1], hex[BACKUP_HEX_LEN + 1];
  unsigned char d[BACKUP_DIGEST_LEN];
  json_object *m, *tags;
  const char *s;
  size_t len, i;
  void *buf;
  int e;

  if ((e = store_flush (w->r->st)) < 0)
    return vbk_error_prepend (e, "backup %s: flushing chunks: ", w->id);
  if ((e = claim_written (w)) < 0)
    return vbk_error_prepend (e, "backup %s: ", w->id);
  if ((e = backup_index_encode (&w->ix, &buf, &len)) < 0)
    return e;
  backup_index_oid (w->id, oid, sizeof oid);
  e = backup_meta_write (w->r, oid, buf, len, 0, d);
  free (buf);
  backup_digest_hex (d, hex);
  if (e < 0)
    return vbk_errno (e, "backup %s: writing the index", w->id);

  m = json_object_new_object ();
  json_object_object_add (m, "format", json_object_new_string ("1.0"));
  json_object_object_add (m, "id", json_object_new_string (w->id));
  json_object_object_add (m, "image", json_object_new_string (w->image));
  json_object_object_add (m, "size", json_object_new_uint64 (w->ix.size));
  json_object_object_add (m, "chunk_size",
                          json_object_new_uint64 (w->ix.chunk_size));
  json_object_object_add (m, "object_size",
                          json_object_new_uint64 (w->object_size));
  json_object_object_add (m, "chunks", json_object_new_uint64 (w->ix.count));
  json_object_object_add (m, "snapshot", json_object_new_string (w->snap));
  json_object_object_add (m, "parent", w->have_parent
                          ? json_object_new_string (w->pm.id) : NULL);
  json_object_object_add (m, "time_ms", json_object_new_uint64 (w->start_ms));
  tags = json_object_new_array ();
  for (i = 0; i < o->ntags; i++)
    json_object_array_add (tags, json_object_new_string (o->tags[i]));
  json_object_object_add (m, "tags", tags);
  json_object_object_add (m, "group", o->group
                          ? json_object_new_string (o->group) : NULL);
  json_object_object_add (m, "protected", json_object_new_boolean (0));
  json_object_object_add (m, "index_sha256", json_object_new_string (hex));
  json_object_object_add (m, "full", json_object_new_boolean (w->res->full));
  json_object_object_add (m, "chunks_new",
                          json_object_new_uint64 (w->chunks_new));
  json_object_object_add (m, "bytes_stored",
                          json_object_new_uint64 (w->bytes_stored));
  s = json_object_to_json_string_ext (m, JSON_C_TO_STRING_PRETTY
                                      | JSON_C_TO_STRING_NOSLASHESCAPE);
  /* Renew once more, synchronously: if the lock ran out meanwhile (a
   * stopped process), gc may have counted us dead, and we must not
   * publish a backup whose chunks it may have swept. */
  if (!w->lost && store_lock (w->r->st, w->writer_oid, "writer", w->id,
                              "vbk backup", backup_lock_ms (),
                              STORE_LOCK_RENEW) < 0)
    w->lost = 1;
  if (w->lost)
    e = vbk_errno (-ESHUTDOWN, "backup %s: the writer lock ran out", w->id);
  else {
    backup_manifest_oid (w->id, oid, sizeof oid);
    e = backup_meta_write (w->r, oid, s, strlen (s), 1, NULL);
    if (e < 0)
      vbk_errno (e, "backup %s: writing the manifest", w->id);
  }
  json_object_put (m);
  return e;
}

/* Removes the image's older backup snapshots: ours stays, and so do the
 * snapshots of backups still running (their writer lock is held). */
static void
trim_snapshots (struct writer *w)
{
  struct image_snap *list;
  struct store_lock_info li;
  char oid[STORE_NAME_MAX + 1];
  size_t n, i, pl = strlen (SNAP_PREFIX);

  if (image_snap_list (w->o->st, w->image, &list, &n) < 0)
    return;
  for (i = 0; i < n; i++) {
    if (strncmp (list[i].name, SNAP_PREFIX, pl) != 0
        || strcmp (list[i].name, w->snap) == 0)
      continue;
    backup_writer_oid (list[i].name + pl, oid, sizeof oid);
    if (store_lock_get (w->r->st, oid, "writer", &li) == 0)
      continue;
    if (image_snap_remove (w->o->st, w->image, list[i].name) < 0)
      log_warn ("backup %s: could not remove old snapshot %s@%s: %s", w->id,
                w->image, list[i].name, vbk_error ());
  }
  free (list);
}

struct range_list {
  struct copy_range *v;
  size_t n;
};

static int
backup_one (struct writer *w)
{
  const struct backup_run_opts *o = w->o;
  struct backup_run_result *res = w->res;
  struct copy_endpoint *src = NULL, dst = { &writer_ops, w, "" };
  struct copy_opts co = { 0 };
  struct copy_result cr = { 0 };
  struct dirty dm = { 0 };
  struct range_list rl = { 0 };
  uint64_t t0 = now_mono_ns (), cs = w->r->chunk_size, i;
  char label[IMAGE_NAME_MAX + 16];
  int e, full;

  snprintf (res->id, sizeof res->id, "%s", w->id);
  snprintf (res->image, sizeof res->image, "%s", w->image);
  snprintf (res->snapshot, sizeof res->snapshot, "%s", w->snap);
  snprintf (dst.name, sizeof dst.name, "backup %s", w->id);
  if ((e = find_parent (w)) < 0)
    return e;
  log_info ("backup %s: parent found after %.1f ms", w->id,
            (now_mono_ns () - t0) / 1e6);
  if ((e = image_open_snap (o->st, w->image, w->snap, &w->img)) < 0)
    return e;
  {
    struct image_info info;

    image_get_info (w->img, &info);
    w->object_size = info.object_size;
  }
  w->ix.size = image_size (w->img);
  w->ix.chunk_size = cs;
  w->ix.count = (w->ix.size + cs - 1) / cs;
  w->ix.digest = calloc (w->ix.count + 1, BACKUP_DIGEST_LEN);
  w->wrote = calloc (w->ix.count + 1, 1);
  dm.map = calloc (w->ix.count + 1, 1);
  dm.count = w->ix.count;
  dm.cs = cs;
  if (w->ix.digest == NULL || w->wrote == NULL || dm.map == NULL) {
    e = vbk_errno (-ENOMEM, "backup");
    goto out;
  }
  res->size = w->ix.size;
  res->chunks = w->ix.count;

  full = !w->have_parent;
  if (!full) {
    uint64_t pc = w->parent.count;

    unsigned dflags = 0;

    e = image_diff_flags (o->st, w->image, w->pm.snapshot, w->snap, diff_cb,
                          &dm, &dflags);
    if (e < 0) {
      snprintf (res->full_reason, sizeof res->full_reason,
                "changed-block tracking failed (%s): full read", vbk_error ());
      full = 1;
    }
    else if (dflags & IMAGE_DIFF_CBT_RESET) {
      snprintf (res->full_reason, sizeof res->full_reason,
                "changed-block tracking was reset since snapshot '%s' (the "
                "image was open for writing when the machine went down): "
                "full read", w->pm.snapshot);
      log_warn ("backup %s: %s: %s", w->id, w->image, res->full_reason);
      full = 1;
    }
    for (i = 0; !full && i < w->ix.count; i++) {
      /* Past the parent's end, or a partial chunk at either end: read. */
      if (i >= pc || (i == pc - 1 && w->parent.size % cs)
          || (i == w->ix.count - 1 && w->ix.size % cs))
        dm.map[i] = 1;
      if (!dm.map[i])
        memcpy (w->ix.digest[i], w->parent.digest[i], BACKUP_DIGEST_LEN);
    }
    if (!full && (e = cbt_check (w, dm.map)) != 0) {
      if (e < 0)
        goto out;
      snprintf (res->full_reason, sizeof res->full_reason,
                "CBT self-check found %d changed chunk(s) that the change "
                "log missed: full read", res->cbt_mismatch);
      full = 1;
    }
  }
  if (full) {
    memset (w->ix.digest, 0, w->ix.count * BACKUP_DIGEST_LEN);
    memset (dm.map, 1, w->ix.count);
  }
  else {
    snprintf (res->parent, sizeof res->parent, "%s", w->pm.id);
    /* The changed chunks, merged into ranges. */
    rl.v = calloc (w->ix.count + 1, sizeof *rl.v);
    if (rl.v == NULL) {
      e = vbk_errno (-ENOMEM, "backup");
      goto out;
    }
    for (i = 0; i < w->ix.count; i++) {
      if (!dm.map[i])
        continue;
      if (rl.n && rl.v[rl.n - 1].off + rl.v[rl.n - 1].len == i * cs)
        rl.v[rl.n - 1].len += MIN (cs, w->ix.size - i * cs);
      else
        rl.v[rl.n++] = (struct copy_range) { i * cs,
                                             MIN (cs, w->ix.size - i * cs) };
    }
  }
  res->full = full;

  if ((e = copy_endpoint_image (w->img, w->snap, 0, &src)) < 0)
    goto out;
  snprintf (label, sizeof label, "backup %s", w->image);
  co.piece = cs;
  co.threads = o->threads ? o->threads : COPY_THREADS_DEFAULT;
  co.whole_pieces = 1;
  co.skip_zero = 1;
  co.dst_zeroed = 1;
  co.ranges = full ? NULL : rl.v;
  co.nranges = full ? 0 : rl.n;
  co.progress = o->progress;
  co.label = label;
  co.interrupted = o->interrupted;
  if (full || rl.n)
    e = copy_run (src, &dst, &co, &cr);
  if (e < 0)
    goto out;
  log_info ("backup %s: %s chunks copied after %.1f ms", w->id,
            full ? "all" : "changed", (now_mono_ns () - t0) / 1e6);
  if (!full && (e = keep_unchanged (w, dm.map)) < 0)
    goto out;
  log_info ("backup %s: unchanged chunks kept after %.1f ms", w->id,
            (now_mono_ns () - t0) / 1e6);
  res->chunks_read = w->chunks_read;
  res->bytes_read = cr.read + w->extra_read;
  res->chunks_new = w->chunks_new;
  res->bytes_stored = w->bytes_stored;
  if ((e = write_index_and_manifest (w)) < 0)
    goto out;
  w->done = 1;
  log_info ("backup %s: manifest written after %.1f ms", w->id,
            (now_mono_ns () - t0) / 1e6);
  res->chunks_new = w->chunks_new;
  res->bytes_stored = w->bytes_stored;
  res->elapsed_ns = now_mono_ns () - t0;
 out:
  copy_endpoint_close (src);
  free (rl.v);
  free (dm.map);
  return e;
}

int
backup_run (struct backup_repo *r, const struct backup_run_opts *o,
            struct backup_run_result *res)
{
  struct snap_opts so = { .host_id = o->host_id };
  struct backup_set known;
  struct writer *w;
  const char **snaps = NULL;
  char msg[1024];
  size_t i;
  int e = 0;

  if (o->nimages == 0)
    return vbk_errno (-EINVAL, "backup: no image");
  if (o->nimages > 1 && o->group == NULL)
    return vbk_errno (-EINVAL, "backup: several images need a group name");
  w = calloc (o->nimages, sizeof *w);
  snaps = calloc (o->nimages, sizeof *snaps);
  if (w == NULL || snaps == NULL) {
    free (w);
    free (snaps);
    return vbk_errno (-ENOMEM, "backup");
  }
  backup_set_init (&known);
  for (i = 0; i < o->nimages; i++) {
    struct image_info info;

    memset (&res[i], 0, sizeof res[i]);
    w[i] = (struct writer) { .r = r, .o = o, .res = &res[i], .known = &known,
                             .image = o->images[i] };
    if ((e = image_stat (o->st, o->images[i], &info)) < 0) {
      if (e == -ENOENT)
        vbk_set_error ("backup: no image '%s'", o->images[i]);
      goto out;
    }
  }
  for (i = 0; i < o->nimages; i++) {
    if ((e = do_register (&w[i])) < 0)
      goto out;
    snaps[i] = w[i].snap;
  }
  if (o->nimages == 1)
    e = snap_create (o->st, o->images[0], snaps[0], &so, NULL);
  else
    e = snap_group_create (o->st, o->group, o->images, snaps, o->nimages,
                           &so);
  if (e < 0) {
    if (vbk_error ()[0] == '\0')
      vbk_errno (e, "backup: snapshot of %s", o->images[0]);
    goto out;
  }
  for (i = 0; i < o->nimages; i++)
    w[i].snapped = 1;
  log_info ("backup: snapshot taken");
  for (i = 0; i < o->nimages && e == 0; i++) {
    e = backup_one (&w[i]);
    if (e == 0)
      trim_snapshots (&w[i]);
  }
 out:
  snprintf (msg, sizeof msg, "%s", vbk_error ());
  for (i = 0; i < o->nimages; i++) {
    image_close (w[i].img);
    if (w[i].snapped && !w[i].done)
      image_snap_remove (o->st, w[i].image, w[i].snap);
    unregister (&w[i]);
    backup_index_free (&w[i].ix);
    backup_index_free (&w[i].parent);
    free (w[i].wrote);
  }
  backup_set_free (&known);
  free (w);
  free (snaps);
  if (e < 0)
    vbk_set_error ("%s", msg);
  return e;
}
