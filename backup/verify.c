/* SPDX-License-Identifier: MIT
 *
 * verify.c - re-reading and re-hashing the chunks of backups.
 *
 * DESIGN: collect the distinct digests of the backups asked for (each
 * with its plain length: the last chunk of an image may be short), take
 * all or a random sample, check each on the worker queue with the same
 * checks a restore makes (header, CRC32, size, SHA-256 against the
 * name).  A bad chunk is marked in the registry so that the next backup
 * that meets the same data writes it again; then every backup (not only
 * the verified ones) is scanned for the bad digests, so the report names
 * each backup a bad chunk breaks.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "common/workq.h"
#include "internal.h"

struct item {
  unsigned char d[BACKUP_DIGEST_LEN];
  uint32_t len;
  int bad;
  char why[256];
};

struct verify {
  struct backup_repo *r;
  struct item *it;
  size_t n, cap;
  struct backup_set seen;
  _Atomic uint64_t bytes;
};

struct vwork {
  struct workq_item wq;
  struct verify *v;
  size_t i;
};

static void
check_one (struct workq_item *wq)
{
  struct vwork *w = workq_entry (wq, struct vwork, wq);
  struct item *it = &w->v->it[w->i];
  void *buf = malloc (it->len);

  if (buf == NULL) {
    it->bad = 1;
    snprintf (it->why, sizeof it->why, "out of memory");
    return;
  }
  if (backup_chunk_read (w->v->r, it->d, buf, it->len) < 0) {
    const char *m = vbk_error (), *c = strstr (m, "vbk_chunk.");

    it->bad = 1;
    /* "backup: chunk vbk_chunk.HEX is corrupt: why": keep the why. */
    if (c && (c = strchr (c, ' ')))
      m = c + 1;
    snprintf (it->why, sizeof it->why, "%s", m);
    backup_chunk_mark_bad (w->v->r, it->d);
  }
  else
    w->v->bytes += it->len;
  free (buf);
}

static int
collect (struct verify *v, const struct backup_manifest *m,
         const struct backup_index *ix)
{
  uint64_t i;
  int e;

  for (i = 0; i < ix->count; i++) {
    if (backup_digest_is_hole (ix->digest[i]))
      continue;
    if ((e = backup_set_add (&v->seen, ix->digest[i])) < 0)
      return vbk_errno (e, "verify");
    if (e == 0)
      continue;
    if (v->n == v->cap) {
      void *n;

      v->cap = v->cap ? 2 * v->cap : 1024;
      if ((n = realloc (v->it, v->cap * sizeof *v->it)) == NULL)
        return vbk_errno (-ENOMEM, "verify");
      v->it = n;
    }
    memset (&v->it[v->n], 0, sizeof *v->it);
    memcpy (v->it[v->n].d, ix->digest[i], BACKUP_DIGEST_LEN);
    v->it[v->n].len = (uint32_t) MIN (m->chunk_size,
                                      m->size - i * m->chunk_size);
    v->n++;
  }
  return 0;
}

int
backup_verify (struct backup_repo *r, const char *const *ids, size_t n,
               unsigned sample_pct, backup_bad_cb cb, void *arg,
               struct backup_verify_result *res)
{
  struct verify v = { .r = r };
  struct backup_entry *list = NULL;
  struct backup_manifest m;
  struct backup_index ix;
  struct backup_set badset;
  struct workq *q = NULL;
  struct vwork *works = NULL;
  size_t nl = 0, i, j, k, nsel;
  char hex[BACKUP_HEX_LEN + 1];
  int e, broken = 0;

  memset (res, 0, sizeof *res);
  backup_set_init (&v.seen);
  backup_set_init (&badset);
  if ((e = backup_list (r, NULL, &list, &nl)) < 0)
    goto out;
  for (i = 0; i < (n ? n : nl); i++) {
    const char *id = n ? ids[i] : list[i].id;

    if ((e = backup_manifest_load (r, id, &m, NULL)) < 0)
      goto out;
    if ((e = backup_index_load (r, &m, &ix)) < 0) {
      /* A broken index breaks that backup: report it, go on. */
      fprintf (stderr, "vbk: %s\n", vbk_error ());
      broken++;
      continue;
    }
    e = collect (&v, &m, &ix);
    backup_index_free (&ix);
    if (e < 0)
      goto out;
    res->backups++;
  }
  res->chunks = v.n;

  /* The sample: a partial shuffle puts the chosen ones first. */
  if (sample_pct > 100)
    sample_pct = 100;
  nsel = sample_pct >= 100 ? v.n : (v.n * sample_pct + 99) / 100;
  for (i = 0; i < nsel && nsel < v.n; i++) {
    uint64_t rnd;
    struct item t;

    if (getrandom (&rnd, sizeof rnd, 0) != sizeof rnd)
      rnd = now_mono_ns ();
    j = i + rnd % (v.n - i);
    t = v.it[i];
    v.it[i] = v.it[j];
    v.it[j] = t;
  }
  if ((works = calloc (nsel + 1, sizeof *works)) == NULL) {
    e = vbk_errno (-ENOMEM, "verify");
    goto out;
  }
  {
    struct workq_opts wo = { .name = "verify", .threads = 4,
                             .max_queued = 8 };

    if ((e = workq_new (&wo, &q)) < 0) {
      vbk_error_prepend (e, "verify: ");
      goto out;
    }
  }
  for (i = 0; i < nsel; i++) {
    works[i] = (struct vwork) { .v = &v, .i = i };
    workq_submit (q, &works[i].wq, check_one);
  }
  workq_free (q);
  res->checked = nsel;
  res->bytes = v.bytes;

  for (i = 0; i < nsel; i++)
    if (v.it[i].bad) {
      res->bad++;
      backup_set_add (&badset, v.it[i].d);
    }
  /* Name the backups each bad chunk breaks. */
  for (i = 0; i < nsel && res->bad; i++) {
    const char **users;
    size_t nu = 0;

    if (!v.it[i].bad)
      continue;
    if ((users = calloc (nl + 1, sizeof *users)) == NULL) {
      e = vbk_errno (-ENOMEM, "verify");
      goto out;
    }
    for (j = 0; j < nl; j++) {
      if (backup_manifest_load (r, list[j].id, &m, NULL) < 0
          || backup_index_load (r, &m, &ix) < 0)
        continue;
      for (k = 0; k < ix.count; k++)
        if (memcmp (ix.digest[k], v.it[i].d, BACKUP_DIGEST_LEN) == 0) {
          users[nu++] = list[j].id;
          break;
        }
      backup_index_free (&ix);
    }
    backup_digest_hex (v.it[i].d, hex);
    if (cb)
      cb (arg, hex, v.it[i].why, users, nu);
    free (users);
  }
  e = res->bad || broken ? -EIO : 0;
  if (e)
    vbk_set_error ("verify: %" PRIu64 " bad chunk(s), %d unreadable "
                   "index(es)", res->bad, broken);
 out:
  backup_set_free (&v.seen);
  backup_set_free (&badset);
  free (v.it);
  free (works);
  free (list);
  return e;
}
