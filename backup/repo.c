/* SPDX-License-Identifier: MIT
 *
 * repo.c - opening a repository, object names, the catalog, listing
 * backups and loading their manifests and indexes.
 *
 * DESIGN: a store has no listing of objects, so the repository keeps
 * one: the catalog (an omap) has a key for every backup that was begun
 * and not yet cleaned up by gc.  A key is added before anything of the
 * backup is written, its manifest is created last and exclusively, so a
 * catalog key without a manifest is a backup that runs or that died; a
 * listing shows only keys whose manifest exists.  Indexes are checked
 * against the SHA-256 their manifest records before any digest is used.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/crypto.h>
#include <unistd.h>

#include "common/error.h"
#include "common/util.h"
#include "internal.h"

void
backup_manifest_oid (const char *id, char *buf, size_t len)
{
  snprintf (buf, len, "vbk_backup_manifest.%s", id);
}

void
backup_index_oid (const char *id, char *buf, size_t len)
{
  snprintf (buf, len, "vbk_backup_index.%s", id);
}

void
backup_writer_oid (const char *id, char *buf, size_t len)
{
  snprintf (buf, len, "vbk_backup_writer.%s", id);
}

void
backup_reader_oid (const char *rid, char *buf, size_t len)
{
  snprintf (buf, len, "vbk_backup_reader.%s", rid);
}

void
backup_chunk_oid (const unsigned char *d, char *buf, size_t len)
{
  char hex[BACKUP_HEX_LEN + 1];

  backup_digest_hex (d, hex);
  snprintf (buf, len, "vbk_chunk.%s", hex);
}

int
backup_read_object (struct store *st, const char *oid, char **buf,
                    size_t *len)
{
  uint64_t size;
  ssize_t n;
  char *b;
  int r;

  if ((r = store_stat (st, oid, STORE_SNAP_HEAD, &size)) < 0)
    return r;
  if (size > (1ull << 31))
    return vbk_errno (-EFBIG, "backup: %s: object too large", oid);
  if ((b = malloc (size + 1)) == NULL)
    return vbk_errno (-ENOMEM, "backup: %s", oid);
  if (size && (n = store_read (st, oid, b, size, 0, STORE_SNAP_HEAD)) < 0) {
    free (b);
    return (int) n;
  }
  b[size] = '\0';
  *buf = b;
  *len = size;
  return 0;
}

int
backup_meta_write (struct backup_repo *r, const char *oid, const void *buf,
                   size_t len, int excl, unsigned char *sha)
{
  void *sealed = NULL;
  int e;

  if (r->crypt) {
    if ((e = backup_seal (r->crypt, oid, buf, len, &sealed, &len)) < 0)
      return e;
    buf = sealed;
  }
  if (sha)
    backup_sha256 (buf, len, sha);
  if (excl)
    e = store_create_excl (r->st, oid, buf, len, STORE_WRITE_SYNC);
  else
    e = store_write_full (r->st, oid, buf, len, STORE_WRITE_SYNC);
  free (sealed);
  return e;
}

int
backup_meta_read (struct backup_repo *r, const char *oid, char **buf,
                  size_t *len, unsigned char *sha)
{
  char *raw = NULL, *plain = NULL;
  size_t n = 0;
  int e;

  if ((e = backup_read_object (r->st, oid, &raw, &n)) < 0)
    return e;
  if (sha)
    backup_sha256 (raw, n, sha);
  if (r->crypt == NULL) {
    *buf = raw;
    *len = n;
    return 0;
  }
  e = backup_unseal (r->crypt, oid, raw, n, &plain, len);
  free (raw);
  if (e == 0)
    *buf = plain;
  return e;
}

/* ---- Opening ------------------------------------------------------------------ */

int
backup_repo_create (const char *uri, uint32_t chunk_size,
                    const struct backup_key_opts *key)
{
  struct backup_crypt k;
  struct store *st;
  uint64_t size;
  json_object *cfg, *enc = NULL;
  const char *s;
  int r;

  if (chunk_size == 0)
    chunk_size = BACKUP_CHUNK_SIZE_DEFAULT;
  if (!is_power_of_2 (chunk_size) || chunk_size < BACKUP_CHUNK_SIZE_MIN
      || chunk_size > BACKUP_CHUNK_SIZE_MAX)
    return vbk_errno (-EINVAL, "backup: invalid chunk size %u (a power of "
                      "two from 4K to 64M)", chunk_size);
  if ((r = store_open (uri, &st)) < 0)
    return r;
  /* No key file for a repository that cannot be created. */
  if (key && store_stat (st, BACKUP_CONFIG_OID, STORE_SNAP_HEAD, &size) == 0) {
    store_close (st);
    return vbk_errno (-EEXIST, "backup: %s: a repository exists there "
                      "already", uri);
  }
  if (key && (r = backup_key_create (key, &k, (void **) &enc)) < 0) {
    store_close (st);
    return r;
  }
  cfg = json_object_new_object ();
  if (enc) {
    /* The chunk size is inside "encryption": a 1.0 reader, which needs
     * it at the top, refuses the repository instead of writing plain
     * chunks into it. */
    json_object_object_add (cfg, "format", json_object_new_string ("1.1"));
    json_object_object_add (enc, "chunk_size",
                            json_object_new_int64 (chunk_size));
    json_object_object_add (cfg, "encryption", enc);
  }
  else {
    /* 2.0: chunks are written parted; a 1.x vbk refuses the repository
     * before it reads one (FORMAT.md, "Versions"). */
    json_object_object_add (cfg, "format", json_object_new_string ("2.0"));
    json_object_object_add (cfg, "chunk_size",
                            json_object_new_int64 (chunk_size));
  }
  json_object_object_add (cfg, "created_ms",
                          json_object_new_int64 ((int64_t) now_wall_ms ()));
  s = json_object_to_json_string_ext (cfg, JSON_C_TO_STRING_PRETTY);
  r = store_create_excl (st, BACKUP_CONFIG_OID, s, strlen (s),
                         STORE_WRITE_SYNC);
  if (r == -EEXIST)
    vbk_set_error ("backup: %s: a repository exists there already", uri);
  else if (r < 0)
    vbk_errno (r, "backup: %s: creating the repository", uri);
  if (r < 0 && key)
    unlink (key->key_file);
  OPENSSL_cleanse (&k, sizeof k);
  json_object_put (cfg);
  store_close (st);
  return r;
}

int
backup_repo_init (const char *uri, uint32_t chunk_size)
{
  return backup_repo_create (uri, chunk_size, NULL);
}

int
backup_repo_open (const char *uri, struct backup_repo **out)
{
  return backup_repo_open_key (uri, NULL, out);
}

int
backup_repo_open_key (const char *uri, const struct backup_key_opts *key,
                      struct backup_repo **out)
{
  struct backup_repo *r;
  json_object *o = NULL, *v, *enc = NULL, *cs;
  unsigned major = 0, minor = 0;
  char *buf = NULL;
  size_t len;
  int e;

  if ((r = calloc (1, sizeof *r)) == NULL)
    return vbk_errno (-ENOMEM, "backup");
  backup_reg_init (r);
  snprintf (r->uri, sizeof r->uri, "%s", uri);
  if ((e = store_open (uri, &r->st)) < 0)
    goto err;
  if ((e = backup_read_object (r->st, BACKUP_CONFIG_OID, &buf, &len)) < 0) {
    if (e == -ENOENT)
      vbk_set_error ("backup: %s: no repository (create one with 'vbk "
                     "backup init')", uri);
    else
      vbk_errno (e, "backup: %s: reading %s", uri, BACKUP_CONFIG_OID);
    goto err;
  }
  o = json_tokener_parse (buf);
  if (o == NULL || !json_object_object_get_ex (o, "format", &v)
      || sscanf (json_object_get_string (v), "%u.%u", &major, &minor) != 2) {
    e = vbk_errno (-EBADMSG, "backup: %s: %s is corrupt", uri,
                   BACKUP_CONFIG_OID);
    goto err;
  }
  if (major > BACKUP_REPO_MAJOR) {
    e = -EPROTONOSUPPORT;
    vbk_set_error ("backup: %s: repository format %u.%u is newer than this "
                   "vbk supports (%d.x); use a newer vbk", uri, major, minor,
                   BACKUP_REPO_MAJOR);
    goto err;
  }
  if (json_object_object_get_ex (o, "encryption", &enc)
      && !json_object_is_type (enc, json_type_object)) {
    e = vbk_errno (-EBADMSG, "backup: %s: %s: bad encryption", uri,
                   BACKUP_CONFIG_OID);
    goto err;
  }
  if (!json_object_object_get_ex (enc ? enc : o, "chunk_size", &cs)
      || !is_power_of_2 (json_object_get_int64 (cs))
      || json_object_get_int64 (cs) < BACKUP_CHUNK_SIZE_MIN
      || json_object_get_int64 (cs) > BACKUP_CHUNK_SIZE_MAX) {
    e = vbk_errno (-EBADMSG, "backup: %s: %s: bad chunk_size", uri,
                   BACKUP_CONFIG_OID);
    goto err;
  }
  r->chunk_size = (uint32_t) json_object_get_int64 (cs);
  r->parts = major >= 2 && enc == NULL;
  if (enc) {
    if ((r->crypt = calloc (1, sizeof *r->crypt)) == NULL) {
      e = vbk_errno (-ENOMEM, "backup");
      goto err;
    }
    if ((e = backup_key_load (key, enc, r->crypt)) < 0) {
      vbk_error_prepend (e, "%s: ", uri);
      goto err;
    }
  }
  else if (key && key->key_file) {
    e = vbk_errno (-EINVAL, "backup: %s: the repository is not encrypted "
                   "(no key file is used)", uri);
    goto err;
  }
  json_object_put (o);
  free (buf);
  *out = r;
  return 0;
 err:
  json_object_put (o);
  free (buf);
  store_close (r->st);
  if (r->crypt)
    OPENSSL_cleanse (r->crypt, sizeof *r->crypt);
  free (r->crypt);
  backup_reg_fini (r);
  free (r);
  return e;
}

void
backup_repo_close (struct backup_repo *r)
{
  if (r == NULL)
    return;
  store_close (r->st);
  if (r->crypt)
    OPENSSL_cleanse (r->crypt, sizeof *r->crypt);
  free (r->crypt);
  backup_reg_fini (r);
  free (r);
}

bool
backup_repo_encrypted (struct backup_repo *r)
{
  return r->crypt != NULL;
}

uint32_t
backup_repo_chunk_size (struct backup_repo *r)
{
  return r->chunk_size;
}

struct store *
backup_repo_store (struct backup_repo *r)
{
  return r->st;
}

/* ---- Catalog, manifests, indexes ----------------------------------------- */

struct walk {
  backup_catalog_cb cb;
  void *arg;
  char last[STORE_NAME_MAX + 1];
  size_t seen;
};

static int
walk_one (void *arg, const char *key, const void *val, size_t len)
{
  struct walk *w = arg;
  char v[512];

  snprintf (w->last, sizeof w->last, "%s", key);
  w->seen++;
  snprintf (v, sizeof v, "%.*s", (int) (len < sizeof v ? len : sizeof v - 1),
            (const char *) val);
  return w->cb (w->arg, key, v);
}

int
backup_catalog_walk (struct backup_repo *r, backup_catalog_cb cb, void *arg)
{
  struct walk w = { .cb = cb, .arg = arg };
  int e;

  do {
    w.seen = 0;
    e = store_omap_list (r->st, BACKUP_CATALOG_OID, w.last, 1000, walk_one,
                         &w);
    if (e == -ENOENT)
      return 0;                 /* no backup yet */
    if (e < 0)
      return e;
  } while (w.seen == 1000);
  return 0;
}

int
backup_manifest_load (struct backup_repo *r, const char *id,
                      struct backup_manifest *m, char **json)
{
  char oid[STORE_NAME_MAX + 1], *buf = NULL;
  size_t len = 0;
  int e;

  if (backup_id_check (id) < 0)
    return vbk_errno (-ENOENT, "backup: no backup '%s'", id);
  backup_manifest_oid (id, oid, sizeof oid);
  if ((e = backup_meta_read (r, oid, &buf, &len, NULL)) < 0) {
    if (e == -ENOENT)
      vbk_set_error ("backup: no backup '%s'", id);
    else
      vbk_error_prepend (e, "backup %s: ", id);
    return e;
  }
  if ((e = backup_manifest_parse (buf, len, m)) < 0) {
    char msg[1024];

    snprintf (msg, sizeof msg, "%s", vbk_error ());
    vbk_set_error ("backup %s: %s", id, msg);
    free (buf);
    return e;
  }
  if (strcmp (m->id, id) != 0) {
    free (buf);
    return vbk_errno (-EBADMSG, "backup %s: manifest names another backup "
                      "(%s)", id, m->id);
  }
  if (json)
    *json = buf;
  else
    free (buf);
  return 0;
}

int
backup_index_load (struct backup_repo *r, const struct backup_manifest *m,
                   struct backup_index *ix)
{
  char oid[STORE_NAME_MAX + 1], hex[BACKUP_HEX_LEN + 1], *buf = NULL;
  unsigned char d[BACKUP_DIGEST_LEN];
  size_t len = 0;
  int e;

  backup_index_oid (m->id, oid, sizeof oid);
  if ((e = backup_read_object (r->st, oid, &buf, &len)) < 0) {
    if (e == -ENOENT)
      return vbk_errno (-EBADMSG, "backup %s: index %s is missing", m->id,
                        oid);
    return e;
  }
  /* The digest is of the stored (in an encrypted repository: sealed)
   * bytes, checked before they are opened. */
  backup_sha256 (buf, len, d);
  backup_digest_hex (d, hex);
  if (strcmp (hex, m->index_sha256) != 0) {
    free (buf);
    return vbk_errno (-EBADMSG, "backup %s: index %s does not match its "
                      "manifest (sha256 %s, expected %s)", m->id, oid, hex,
                      m->index_sha256);
  }
  if (r->crypt) {
    char *plain;

    e = backup_unseal (r->crypt, oid, buf, len, &plain, &len);
    free (buf);
    if (e < 0)
      return vbk_error_prepend (e, "backup %s: ", m->id);
    buf = plain;
  }
  e = backup_index_parse (buf, len, ix);
  free (buf);
  if (e < 0)
    return vbk_error_prepend (e, "backup %s: ", m->id);
  if (ix->size != m->size || ix->chunk_size != m->chunk_size) {
    backup_index_free (ix);
    return vbk_errno (-EBADMSG, "backup %s: index and manifest disagree on "
                      "the size", m->id);
  }
  return 0;
}

/* ---- Listing ------------------------------------------------------------------ */

struct lister {
  struct backup_repo *r;
  const char *image;
  struct backup_entry *list;
  size_t n, cap;
  int err;
};

static int
list_one (void *arg, const char *id, const char *val)
{
  struct lister *l = arg;
  struct backup_manifest m;
  struct backup_entry *e;
  int r;

  if ((r = backup_manifest_load (l->r, id, &m, NULL)) < 0) {
    if (r == -ENOENT)
      return 0;                 /* running, died or removed */
    if (r == -EBADMSG || r == -EPROTONOSUPPORT) {
      /* One bad manifest must not hide the others: report it and go on. */
      fprintf (stderr, "vbk: warning: %s\n", vbk_error ());
      return 0;
    }
    return r;
  }
  if (l->image && strcmp (m.image, l->image) != 0)
    return 0;
  if (l->n == l->cap) {
    l->cap = l->cap ? 2 * l->cap : 32;
    if ((e = realloc (l->list, l->cap * sizeof *e)) == NULL)
      return vbk_errno (-ENOMEM, "backup: list");
    l->list = e;
  }
  e = &l->list[l->n++];
  memset (e, 0, sizeof *e);
  snprintf (e->id, sizeof e->id, "%s", m.id);
  snprintf (e->image, sizeof e->image, "%s", m.image);
  e->size = m.size;
  e->time_ms = m.time_ms;
  e->chunk_size = m.chunk_size;
  e->protected_ = m.protected_;
  return 0;
}

static int
cmp_entry (const void *a, const void *b)
{
  const struct backup_entry *x = a, *y = b;

  if (x->time_ms != y->time_ms)
    return x->time_ms < y->time_ms ? -1 : 1;
  return strcmp (x->id, y->id);
}

int
backup_list (struct backup_repo *r, const char *image,
             struct backup_entry **list, size_t *n)
{
  struct lister l = { .r = r, .image = image };
  int e;

  if ((e = backup_catalog_walk (r, list_one, &l)) < 0) {
    free (l.list);
    return e;
  }
  if (l.n)
    qsort (l.list, l.n, sizeof *l.list, cmp_entry);
  *list = l.list;
  *n = l.n;
  return 0;
}

int
backup_manifest_json (struct backup_repo *r, const char *id, char **json)
{
  struct backup_manifest m;

  return backup_manifest_load (r, id, &m, json);
}
