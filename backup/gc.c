/* SPDX-License-Identifier: MIT
 *
 * gc.c - garbage collection, prune, remove and protect.
 *
 * DESIGN: gc is mark and sweep, safe beside running backups without a
 * repository-wide lock and without a grace period:
 *
 *   T = now; walk the catalog:
 *     manifest exists         -> mark every digest of its index
 *     no manifest, writer lock held -> a running backup: cutoff =
 *                                min(cutoff, its registered start)
 *     no manifest, no lock    -> died or removed: clean its index,
 *                                writer object and catalog key
 *   walk the chunk registry: a chunk neither marked nor referenced since
 *   the cutoff (minus an allowance for other hosts' clocks) is swept under
 *   its lock, after checking its time again (chunk.c).
 *
 *   then, for each running backup, its catalog key read again: the parent
 *   it names (the backup whose index it carries chunks from) has its
 *   index marked, manifest or not, and is not cleaned up as dead
 *
 *   then the open readers (vbk mount, NBD exports, restores): the backup
 *   each reads has its index marked, manifest or not (pruned while open),
 *   and is not cleaned up as dead; readers whose lock ran out are removed
 *
 * Why this is safe: a running backup relies on two kinds of chunks.
 * Those it writes or finds by dedup it touches (registry time = now)
 * under the chunk's lock: a running backup known to gc started before
 * the cutoff, so the touch is newer; a backup gc did not see registered
 * after T, so its touches are newer than T.  Either way gc's locked
 * re-check sees the new time and keeps the chunk, or the sweep came first
 * and the backup finds the chunk missing and writes it again.  Those it
 * carries over unchanged from its parent it does not touch (that would
 * cost a locked, durable registry write per chunk of the image): it names
 * the parent in its catalog key before reading the parent's manifest, and
 * gc marks the parent's index (see gc_parents for why no interleaving
 * escapes both the walk and the re-read).  A backup that finished was marked
 * (manifest) or is still registered.  A writer whose lock ran out does
 * not publish (run.c renews once more before its manifest).  A crash of
 * gc at any point loses nothing: each sweep removes the chunk before its
 * registry key, and a key without chunk is swept again next time.
 *
 * The clock-skew allowance (--clock-skew, 60 s by default): registry
 * times are written with the wall clock of the host that runs the backup,
 * the cutoff is read from gc's.  If the backup's host lags gc's by more
 * than the allowance, a touch after T may still look older than the
 * cutoff, and a chunk a running backup relies on could be swept.  The
 * allowance must exceed the worst difference between the clocks of the
 * hosts that use the repository (NTP keeps them within milliseconds; 60 s
 * also covers a host whose time service failed for a while).  What it
 * costs is small and bounded: a chunk that became garbage in the last
 * 60 s waits for the next gc; nothing older is ever kept by it.  On one
 * host (one clock, never stepped back) --clock-skew 0 is safe.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "internal.h"

/* ---- gc -------------------------------------------------------------------------- */

struct gc {
  struct backup_repo *r;
  struct backup_set marked;
  uint64_t cutoff;
  char (*dead)[64];
  size_t ndead;
  char (*live)[64];             /* running backups */
  size_t nlive;
  struct backup_gc_result *res;
  /* sweep candidates */
  struct cand { unsigned char d[BACKUP_DIGEST_LEN]; } *cand;
  size_t ncand, cap;
};

static int
gc_catalog (void *arg, const char *id, const char *val)
{
  struct gc *g = arg;
  struct backup_manifest m;
  struct backup_index ix;
  struct store_lock_info li;
  char oid[STORE_NAME_MAX + 1];
  uint64_t i, start;
  const char *sp;
  int e;

  e = backup_manifest_load (g->r, id, &m, NULL);
  if (e == 0) {
    if ((e = backup_index_load (g->r, &m, &ix)) < 0)
      return e;                 /* never sweep with marks missing */
    for (i = 0; i < ix.count && e >= 0; i++)
      e = backup_set_add (&g->marked, ix.digest[i]);
    backup_index_free (&ix);
    return e < 0 ? vbk_errno (e, "gc: marking") : 0;
  }
  if (e != -ENOENT)
    return e;
  backup_writer_oid (id, oid, sizeof oid);
  e = store_lock_get (g->r->st, oid, "writer", &li);
  if (e == 0) {
    /* "IMAGE START_MS [PARENT]" */
    sp = strchr (val, ' ');
    start = sp ? strtoull (sp + 1, NULL, 10) : 0;
    if (start < g->cutoff)
      g->cutoff = start;
    g->res->writers_live++;
    if (g->nlive % 64 == 0) {
      void *n = realloc (g->live, (g->nlive + 64) * sizeof *g->live);

      if (n == NULL)
        return vbk_errno (-ENOMEM, "gc");
      g->live = n;
    }
    snprintf (g->live[g->nlive++], 64, "%s", id);
    return 0;
  }
  if (e != -ENOENT)
    return vbk_errno (e, "gc: writer lock of %s", id);
  g->res->writers_dead++;
  if (g->ndead % 64 == 0) {
    void *n = realloc (g->dead, (g->ndead + 64) * sizeof *g->dead);

    if (n == NULL)
      return vbk_errno (-ENOMEM, "gc");
    g->dead = n;
  }
  snprintf (g->dead[g->ndead++], 64, "%s", id);
  return 0;
}

/* Keeps backup ID from the cleanup of dead backups: something relies on
 * its index. */
static void
keep_index (struct gc *g, const char *id)
{
  size_t j;

  for (j = 0; j < g->ndead; j++)
    if (strcmp (g->dead[j], id) == 0) {
      memmove (g->dead[j], g->dead[j + 1],
               (g->ndead - j - 1) * sizeof *g->dead);
      g->ndead--;
      g->res->writers_dead--;
      return;
    }
}

/* Marks every digest of backup ID's index, manifest or not; an index
 * that is gone is not used (WHY and WHO name the user, for messages). */
static int
mark_index (struct gc *g, const char *id, const char *why, const char *who)
{
  char oid[STORE_NAME_MAX + 1], *buf;
  struct backup_index ix;
  size_t len;
  uint64_t k;
  int e;

  backup_index_oid (id, oid, sizeof oid);
  e = backup_meta_read (g->r, oid, &buf, &len, NULL);
  if (e == -ENOENT)
    return 0;
  if (e < 0)
    return vbk_error_prepend (e, "gc: index of %s (%s %s): ", id, why, who);
  e = backup_index_parse (buf, len, &ix);
  free (buf);
  if (e < 0)
    return vbk_error_prepend (e, "gc: index of %s (%s %s): ", id, why, who);
  for (k = 0; k < ix.count && e >= 0; k++)
    e = backup_set_add (&g->marked, ix.digest[k]);
  backup_index_free (&ix);
  if (e < 0)
    return vbk_errno (e, "gc: marking");
  return 0;
}

/* The parents of running backups, read again now that the walk is over:
 * a backup names its parent in its catalog key before it reads the
 * parent's manifest, so if it read it before this point we see the name
 * here, and if after, the manifest was still there when the walk looked
 * (manifests never come back), so it was marked.  Each parent's index is
 * marked (whether or not its manifest is still there) and kept from the
 * cleanup of dead backups. */
static int
gc_parents (struct gc *g)
{
  char val[512], img[512], parent[64];
  unsigned long long start;
  size_t i;
  ssize_t n;
  int e;

  for (i = 0; i < g->nlive; i++) {
    n = store_omap_get (g->r->st, BACKUP_CATALOG_OID, g->live[i], val,
                        sizeof val - 1);
    if (n == -ENOENT)
      continue;                 /* finished (failed) meanwhile */
    if (n < 0)
      return vbk_errno ((int) n, "gc: catalog of %s", g->live[i]);
    val[n] = '\0';
    if (sscanf (val, "%511s %llu %63s", img, &start, parent) != 3
        || backup_id_check (parent) < 0)
      continue;                 /* no parent (yet) */
    /* Not cleaned up as dead while a running backup relies on it. */
    keep_index (g, parent);
    if ((e = mark_index (g, parent, "parent of running backup",
                         g->live[i])) < 0)
      return e;
  }
  return 0;
}

/* Open readers (reader.c), read after the catalog walk: a reader
 * registers before it reads its backup's manifest, so either we see its
 * key here and mark its index (manifest or not: a backup pruned while
 * open stays readable), or it registered after this point and read the
 * manifest after the walk, which then saw that manifest and marked its
 * index.  A key whose lock is not held is a reader that died: gc takes
 * the lock itself (so a stalled reader that wakes up cannot register
 * again halfway) and removes the key and the object. */
struct reader_walk {
  struct gc *g;
  char last[STORE_NAME_MAX + 1];
  size_t seen;
  int err;
  char (*stale)[BACKUP_READER_ID_LEN];
  size_t nstale;
};

static int
reader_one (void *arg, const char *key, const void *val, size_t len)
{
  struct reader_walk *w = arg;
  struct gc *g = w->g;
  struct store_lock_info li;
  char oid[STORE_NAME_MAX + 1], v[256], id[64];
  int e;

  snprintf (w->last, sizeof w->last, "%s", key);
  w->seen++;
  if (strlen (key) >= BACKUP_READER_ID_LEN)
    return 0;                   /* not ours */
  backup_reader_oid (key, oid, sizeof oid);
  e = store_lock_get (g->r->st, oid, BACKUP_READER_LOCK, &li);
  if (e == -ENOENT) {
    if (w->nstale % 64 == 0) {
      void *n = realloc (w->stale, (w->nstale + 64) * sizeof *w->stale);

      if (n == NULL)
        return vbk_errno (-ENOMEM, "gc");
      w->stale = n;
    }
    snprintf (w->stale[w->nstale++], BACKUP_READER_ID_LEN, "%s", key);
    return 0;
  }
  if (e < 0)
    return vbk_errno (e, "gc: reader lock of %s", key);
  snprintf (v, sizeof v, "%.*s", (int) MIN (len, sizeof v - 1),
            (const char *) val);
  if (sscanf (v, "%63s", id) != 1 || backup_id_check (id) < 0)
    return 0;
  g->res->readers_live++;
  keep_index (g, id);
  return mark_index (g, id, "read by", key);
}

static int
gc_readers (struct gc *g)
{
  struct reader_walk w = { .g = g };
  char oid[STORE_NAME_MAX + 1], cookie[64];
  size_t i;
  int e;

  do {
    w.seen = 0;
    e = store_omap_list (g->r->st, BACKUP_READERS_OID, w.last, 1000,
                         reader_one, &w);
    if (e == -ENOENT) {
      e = 0;
      break;
    }
    if (e < 0)
      goto out;
  } while (w.seen == 1000);
  snprintf (cookie, sizeof cookie, "gc.%d", (int) getpid ());
  for (i = 0; i < w.nstale; i++) {
    backup_reader_oid (w.stale[i], oid, sizeof oid);
    e = store_lock (g->r->st, oid, BACKUP_READER_LOCK, cookie, "vbk gc",
                    backup_lock_ms (), 0);
    if (e == -EBUSY)
      continue;                 /* it came back */
    if (e < 0) {
      vbk_errno (e, "gc: reader lock of %s", w.stale[i]);
      goto out;
    }
    e = store_omap_rm (g->r->st, BACKUP_READERS_OID, w.stale[i]);
    store_unlock (g->r->st, oid, BACKUP_READER_LOCK, cookie);
    if (e < 0 && e != -ENOENT) {
      vbk_errno (e, "gc: removing reader %s", w.stale[i]);
      goto out;
    }
    store_remove (g->r->st, oid);
    g->res->readers_dead++;
  }
  e = 0;
 out:
  free (w.stale);
  return e;
}

static int
gc_registry (void *arg, const char *key, const void *val, size_t len)
{
  struct gc *g = arg;
  unsigned char d[BACKUP_DIGEST_LEN];
  char v[64];
  uint64_t t;

  g->res->chunks++;
  if (backup_hex_digest (key, d) < 0)
    return 0;                   /* not ours */
  if (backup_set_has (&g->marked, d)) {
    g->res->marked++;
    return 0;
  }
  snprintf (v, sizeof v, "%.*s", (int) MIN (len, sizeof v - 1),
            (const char *) val);
  t = strtoull (strncmp (v, "bad ", 4) == 0 ? v + 4 : v, NULL, 10);
  if (t >= g->cutoff) {
    g->res->kept_young++;
    return 0;
  }
  if (g->ncand == g->cap) {
    void *n;

    g->cap = g->cap ? 2 * g->cap : 1024;
    if ((n = realloc (g->cand, g->cap * sizeof *g->cand)) == NULL)
      return vbk_errno (-ENOMEM, "gc");
    g->cand = n;
  }
  memcpy (g->cand[g->ncand++].d, d, BACKUP_DIGEST_LEN);
  return 0;
}

struct reg_walk {
  struct gc *g;
  char last[STORE_NAME_MAX + 1];
  size_t seen;
};

static int
reg_one (void *arg, const char *key, const void *val, size_t len)
{
  struct reg_walk *w = arg;

  snprintf (w->last, sizeof w->last, "%s", key);
  w->seen++;
  return gc_registry (w->g, key, val, len);
}

static int
sweep_one (struct gc *g, const unsigned char *d)
{
  char oid[STORE_NAME_MAX + 1], hex[BACKUP_HEX_LEN + 1], cookie[64], v[64];
  uint64_t t, size = 0;
  ssize_t n;
  int e;

  backup_digest_hex (d, hex);
  backup_chunk_oid (d, oid, sizeof oid);
  if ((e = backup_chunk_lock (g->r, oid, cookie, sizeof cookie)) < 0)
    return e;
  n = store_omap_get (g->r->st, BACKUP_CHUNKS_OID, hex, v, sizeof v - 1);
  if (n < 0) {
    e = n == -ENOENT ? 0 : vbk_errno ((int) n, "gc: registry of %s", oid);
    goto out;
  }
  v[n] = '\0';
  t = strtoull (strncmp (v, "bad ", 4) == 0 ? v + 4 : v, NULL, 10);
  if (t >= g->cutoff) {
    g->res->kept_young++;       /* touched meanwhile */
    e = 0;
    goto out;
  }
  store_stat (g->r->st, oid, STORE_SNAP_HEAD, &size);
  e = store_remove (g->r->st, oid);
  if (e < 0 && e != -ENOENT) {
    vbk_errno (e, "gc: removing %s", oid);
    goto out;
  }
  if ((e = store_omap_rm (g->r->st, BACKUP_CHUNKS_OID, hex)) < 0
      && e != -ENOENT) {
    vbk_errno (e, "gc: registry of %s", oid);
    goto out;
  }
  g->res->removed++;
  g->res->bytes_removed += size;
  e = 0;
 out:
  backup_chunk_unlock (g->r, oid, cookie);
  return e;
}

int
backup_gc (struct backup_repo *r, uint64_t skew_ms,
           struct backup_gc_result *res)
{
  struct gc g = { .r = r, .res = res };
  struct reg_walk rw = { .g = &g };
  char oid[STORE_NAME_MAX + 1];
  size_t i;
  int e;

  memset (res, 0, sizeof *res);
  backup_set_init (&g.marked);
  g.cutoff = now_wall_ms ();
  if ((e = backup_catalog_walk (r, gc_catalog, &g)) < 0
      || (e = gc_parents (&g)) < 0 || (e = gc_readers (&g)) < 0)
    goto out;
  g.cutoff = g.cutoff > skew_ms ? g.cutoff - skew_ms : 0;
  log_info ("gc: %zu chunks marked, %" PRIu64 " running backups, cutoff %"
            PRIu64, g.marked.n, res->writers_live, g.cutoff);

  /* Backups that died or were removed: their index and catalog key. */
  for (i = 0; i < g.ndead; i++) {
    backup_index_oid (g.dead[i], oid, sizeof oid);
    if ((e = store_remove (r->st, oid)) < 0 && e != -ENOENT)
      goto out_err;
    backup_writer_oid (g.dead[i], oid, sizeof oid);
    if ((e = store_remove (r->st, oid)) < 0 && e != -ENOENT)
      goto out_err;
    if ((e = store_omap_rm (r->st, BACKUP_CATALOG_OID, g.dead[i])) < 0
        && e != -ENOENT)
      goto out_err;
  }

  do {
    rw.seen = 0;
    e = store_omap_list (r->st, BACKUP_CHUNKS_OID, rw.last, 1000, reg_one,
                         &rw);
    if (e == -ENOENT) {
      e = 0;
      break;
    }
    if (e < 0)
      goto out;
  } while (rw.seen == 1000);
  for (i = 0; i < g.ncand; i++)
    if ((e = sweep_one (&g, g.cand[i].d)) < 0)
      goto out;
  e = 0;
  goto out;
 out_err:
  vbk_errno (e, "gc: cleaning up backup %s", g.dead[i]);
 out:
  backup_set_free (&g.marked);
  free (g.dead);
  free (g.live);
  free (g.cand);
  return e;
}

/* ---- remove, protect --------------------------------------------------------- */

int
backup_remove (struct backup_repo *r, const char *id)
{
  struct backup_manifest m;
  char oid[STORE_NAME_MAX + 1];
  int e;

  if ((e = backup_manifest_load (r, id, &m, NULL)) < 0)
    return e;
  if (m.protected_)
    return vbk_errno (-EPERM, "backup %s is protected (vbk backup unprotect "
                      "first)", id);
  backup_manifest_oid (id, oid, sizeof oid);
  if ((e = store_remove (r->st, oid)) < 0)
    return vbk_errno (e, "backup %s: removing the manifest", id);
  return 0;
}

int
backup_protect (struct backup_repo *r, const char *id, bool on)
{
  struct backup_manifest m;
  char oid[STORE_NAME_MAX + 1], *json;
  json_object *o;
  const char *s;
  int e;

  if ((e = backup_manifest_load (r, id, &m, &json)) < 0)
    return e;
  o = json_tokener_parse (json);
  free (json);
  if (o == NULL)
    return vbk_errno (-EBADMSG, "backup %s: manifest", id);
  json_object_object_add (o, "protected", json_object_new_boolean (on));
  s = json_object_to_json_string_ext (o, JSON_C_TO_STRING_PRETTY
                                      | JSON_C_TO_STRING_NOSLASHESCAPE);
  backup_manifest_oid (id, oid, sizeof oid);
  e = backup_meta_write (r, oid, s, strlen (s), 0, NULL);
  json_object_put (o);
  if (e < 0)
    return vbk_errno (e, "backup %s: writing the manifest", id);
  return 0;
}

/* ---- prune ------------------------------------------------------------------------- */

/* Bucket of T for a rule: day, ISO week or month (UTC). */
static void
bucket (uint64_t ms, int kind, char *buf, size_t len)
{
  time_t t = ms / 1000;
  struct tm tm;

  gmtime_r (&t, &tm);
  strftime (buf, len, kind == 0 ? "%Y-%m-%d" : kind == 1 ? "%G-W%V"
            : "%Y-%m", &tm);
}

int
backup_prune (struct backup_repo *r, const struct backup_prune_opts *o,
              backup_prune_cb cb, void *arg)
{
  struct backup_entry *list;
  size_t n, i, j, start;
  int e = 0, *keep;

  if ((e = backup_list (r, o->image, &list, &n)) < 0)
    return e;
  if ((keep = calloc (n + 1, sizeof *keep)) == NULL) {
    free (list);
    return vbk_errno (-ENOMEM, "prune");
  }
  /* Per image: list is oldest first; sort by image (stable enough: a
   * simple pass per distinct image). */
  for (start = 0; start < n; start++) {
    const char *img = list[start].image;
    int last = 0, counts[3] = { 0 }, seen_before = 0;
    char prev[3][32] = { "", "", "" }, b[32];
    const int limits[3] = { o->keep_daily, o->keep_weekly, o->keep_monthly };
    int k;

    for (j = 0; j < start; j++)
      if (strcmp (list[j].image, img) == 0)
        seen_before = 1;
    if (seen_before)
      continue;
    for (i = n; i-- > 0;) {
      const char *why = NULL;
      static const char *const names[3] = { "daily", "weekly", "monthly" };

      if (strcmp (list[i].image, img) != 0)
        continue;
      if (list[i].protected_)
        why = "protected";
      if (last < o->keep_last) {
        last++;
        if (!why)
          why = "last";
      }
      for (k = 0; k < 3; k++) {
        bucket (list[i].time_ms, k, b, sizeof b);
        if (counts[k] < limits[k] && strcmp (b, prev[k]) != 0) {
          counts[k]++;
          snprintf (prev[k], sizeof prev[k], "%s", b);
          if (!why)
            why = names[k];
        }
      }
      keep[i] = why != NULL;
      if (cb)
        cb (arg, &list[i], keep[i], why ? why : "no rule keeps it");
      if (!keep[i] && !o->dry_run && (e = backup_remove (r, list[i].id)) < 0)
        goto out;
    }
  }
 out:
  free (keep);
  free (list);
  return e;
}
