/* SPDX-License-Identifier: MIT
 *
 * exports.c - the table of open exports (images), shared by every
 * connection.
 *
 * DESIGN: an RCU lock-free hash table (urcu/rculfhash.h) maps an image
 * name to one open struct image with a reference count.  The fast path
 * (the image is already open) is an RCU lookup and an increment that
 * never revives a count that reached zero.  Opening, and removing an
 * entry whose count reached zero, happen under open_lock, so an image
 * is opened once however many clients connect at the same moment.  The
 * last put removes the entry, closes the image (which flushes it) and
 * frees the entry after a grace period, since lock-free readers may
 * still be looking at it.  Every connection to an image thus shares one
 * struct image: a flush on any of them covers writes acknowledged on all
 * of them (NBD_FLAG_CAN_MULTI_CONN).
 *
 * Four kinds of export: a writable image (its own store connection and
 * lease, writes.c), a read-only image (the daemon is --read-only; the
 * shared store handle), a snapshot "IMAGE@SNAP" (read-only, the shared
 * handle) and a backup "backup:IMAGE/ID" (read-only: a backup reader on
 * the repository of --repo, which is opened with the first backup export
 * and shared by all; ID "latest" is IMAGE's newest backup when the
 * export opens).  A backup's reader holds its index in memory and does
 * not pin its chunks: a backup pruned and garbage-collected while it is
 * exported keeps serving what its reader has cached and fails the reads
 * of removed chunks with EIO (the chunk named in the log); opening it
 * again gives "no backup".  Live images start with an untrusted object
 * map: some other host may write them.  An export whose lease was lost
 * stays in the table for the connections that use it, but lookups treat
 * it like one whose count reached zero: the next open unlinks it and
 * opens a fresh one.
 *
 * Reconnects: a client that comes back while the last put of its
 * previous export is still closing it (flushing, releasing the lease)
 * waits for that close to finish (the closing list and closed_cond,
 * under open_lock) before a new export opens: a FLUSH on the new export
 * then covers every write acknowledged on the old one, and the new
 * export never finds the image's lease held by this very process.  Only
 * an export whose lease was lost is replaced while it still has users.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/log.h"
#include "access.h"
#include "internal.h"

struct nbd_srv_exports {
  struct cds_lfht *ht;
  struct store *store;
  bool read_only;
  struct nbd_srv_lease_cfg lease_cfg;
  struct nbd_srv_config per_export;    /* only its exports[] is used */
  char *repo_uri;           /* NULL: no backup exports */
  struct backup_repo *repo; /* opened by the first backup export (under
                               open_lock), then read-only */
  pthread_mutex_t open_lock;
  /* Exports out of the table whose last put is closing them (under
   * open_lock); closed_cond is signalled as each one finishes. */
  struct nbd_srv_export *closing;
  pthread_cond_t closed_cond;
};

/* FNV-1a: names are short. */
static unsigned long
name_hash (const char *s)
{
  uint64_t h = UINT64_C (14695981039346656037);
  for (; *s; s++)
    {
      h ^= (unsigned char) *s;
      h *= UINT64_C (1099511628211);
    }
  return (unsigned long) h;
}

static int
name_match (struct cds_lfht_node *node, const void *key)
{
  struct nbd_srv_export *e = caa_container_of (node, struct nbd_srv_export,
                                               node);
  return strcmp (e->name, key) == 0;
}

static bool own_client (void *arg, const char *client);

static void
lease_cfg_free (struct nbd_srv_lease_cfg *lc)
{
  free (lc->store_uri);
  free (lc->host_id);
  free (lc->addr);
}

int
nbd_srv_exports_new (struct store *st, const struct nbd_srv_config *cfg,
                     struct nbd_srv_exports **out)
{
  struct nbd_srv_exports *t = calloc (1, sizeof *t);
  struct nbd_srv_lease_cfg *lc;
  const char *addr;

  if (!t)
    return -ENOMEM;
  lc = &t->lease_cfg;
  /* Where other hosts find us: the TCP address if any, else the socket. */
  addr = cfg->listen_addr && *cfg->listen_addr ? cfg->listen_addr
    : cfg->socket_path && *cfg->socket_path ? cfg->socket_path : "-";
  lc->store_uri = strdup (cfg->store_uri);
  lc->host_id = strdup (cfg->host_id ? cfg->host_id : "localhost");
  lc->addr = strdup (addr);
  lc->duration_ms = cfg->lease_duration_ms;
  lc->exclusive = cfg->exclusive;
  lc->own_client = own_client;
  lc->own_arg = t;
  if (!lc->store_uri || !lc->host_id || !lc->addr)
    {
      lease_cfg_free (lc);
      free (t);
      return -ENOMEM;
    }
  t->ht = cds_lfht_new (16, 16, 0, CDS_LFHT_AUTO_RESIZE, NULL);
  if (!t->ht)
    {
      lease_cfg_free (lc);
      free (t);
      return vbk_errno (-ENOMEM, "blockd: exports: cds_lfht_new");
    }
  t->store = st;
  t->read_only = cfg->read_only;
  if (cfg->repo_uri && !(t->repo_uri = strdup (cfg->repo_uri)))
    {
      lease_cfg_free (lc);
      cds_lfht_destroy (t->ht, NULL);
      free (t);
      return -ENOMEM;
    }
  if (nbd_srv_config_copy_exports (&t->per_export, cfg) < 0)
    {
      nbd_srv_config_free (&t->per_export);
      free (t->repo_uri);
      lease_cfg_free (lc);
      cds_lfht_destroy (t->ht, NULL);
      free (t);
      return -ENOMEM;
    }
  pthread_mutex_init (&t->open_lock, NULL);
  pthread_cond_init (&t->closed_cond, NULL);
  *out = t;
  return 0;
}

void
nbd_srv_exports_free (struct nbd_srv_exports *t)
{
  if (!t)
    return;
  /* Entries are gone once every connection put its export; wait for the
   * deferred frees before the table goes. */
  rcu_barrier ();
  cds_lfht_destroy (t->ht, NULL);
  pthread_mutex_destroy (&t->open_lock);
  pthread_cond_destroy (&t->closed_cond);
  lease_cfg_free (&t->lease_cfg);
  nbd_srv_config_free (&t->per_export);
  backup_repo_close (t->repo);
  free (t->repo_uri);
  free (t);
}

static void
export_free (struct nbd_srv_export *e)
{
  pthread_mutex_destroy (&e->snap_lock);
  free (e->client_id);
  free (e->image);
  free (e->name);
  free (e);
}

static void
export_free_rcu (struct rcu_head *head)
{
  struct nbd_srv_export *e = caa_container_of (head, struct nbd_srv_export,
                                               rcu);
  export_free (e);
}

/* Takes a reference unless the count already reached zero. */
static bool
ref_get_unless_zero (struct nbd_srv_export *e)
{
  unsigned v = atomic_load (&e->refs);
  while (v != 0)
    if (atomic_compare_exchange_weak (&e->refs, &v, v + 1))
      return true;
  return false;
}

static struct nbd_srv_export *
lookup_get (struct nbd_srv_exports *t, const char *name, unsigned long hash,
            struct nbd_srv_export **dying)
{
  struct cds_lfht_iter iter;
  struct cds_lfht_node *node;
  struct nbd_srv_export *found = NULL;

  if (dying)
    *dying = NULL;
  rcu_read_lock ();
  cds_lfht_lookup (t->ht, hash, name_match, name, &iter);
  node = cds_lfht_iter_get_node (&iter);
  if (node)
    {
      struct nbd_srv_export *e = caa_container_of (node,
                                                   struct nbd_srv_export,
                                                   node);
      /* A dead export (lease lost) is as good as gone for new users. */
      if (!atomic_load (&e->dead) && ref_get_unless_zero (e))
        found = e;
      else if (dying)
        *dying = e;
    }
  rcu_read_unlock ();
  return found;
}

int
nbd_srv_export_name_split (const char *name, char **image, const char **snap)
{
  const char *at = strchr (name, '@');
  char *img;
  int r;

  *snap = NULL;
  img = at ? strndup (name, at - name) : strdup (name);
  if (!img)
    return -ENOMEM;
  r = image_name_check (img);
  if (r == 0 && at)
    {
      r = image_name_check (at + 1);
      *snap = at + 1;
    }
  if (r < 0)
    {
      free (img);
      return r;
    }
  *image = img;
  return 0;
}

static void
export_close (struct nbd_srv_export *e)
{
  if (e->backup)
    {
      backup_reader_close (e->backup);
      e->backup = NULL;
      return;
    }
  if (e->lease || e->store)
    nbd_srv_export_close_rw (e);
  else
    image_close (e->img);
  e->img = NULL;
}

/* Opens backup ID of IMAGE for E (under open_lock).  Returns 0 or
 * -errno with a message. */
static int
export_open_backup (struct nbd_srv_exports *t, struct nbd_srv_export *e,
                    const char *image, const char *id)
{
  struct backup_entry *list = NULL;
  char latest[64];
  size_t n = 0;
  int r;

  if (!t->repo_uri)
    return vbk_errno (-ENOENT, "blockd: %s: no backup repository (start "
                      "vbk-blockd with --repo or $VBK_REPO)", e->name);
  if (!t->repo && (r = backup_repo_open (t->repo_uri, &t->repo)) < 0)
    return vbk_error_prepend (r, "blockd: repository %s: ", t->repo_uri);
  if (strcmp (id, "latest") == 0)
    {
      if ((r = backup_list (t->repo, image, &list, &n)) < 0)
        return r;
      if (n == 0)
        {
          free (list);
          return vbk_errno (-ENOENT, "blockd: %s: no backup of image %s",
                            e->name, image);
        }
      snprintf (latest, sizeof latest, "%s", list[n - 1].id);
      free (list);
      id = latest;
    }
  if ((r = backup_reader_open (t->repo, id, &e->backup)) < 0)
    return r;
  if (strcmp (backup_reader_image (e->backup), image) != 0)
    return vbk_errno (-ENOENT, "blockd: %s: backup %s is of image %s",
                      e->name, id, backup_reader_image (e->backup));
  e->size = backup_reader_size (e->backup);
  e->object_size = backup_reader_chunk_size (e->backup);
  return 0;
}

/* Opens export NAME (not yet in the table); NULL with *ERR on failure. */
static struct nbd_srv_export *
export_open (struct nbd_srv_exports *t, const char *name, int *err)
{
  const struct nbd_srv_export_cfg *x;
  struct nbd_srv_lease_cfg lc = t->lease_cfg;
  struct nbd_srv_export *e;
  struct image_info info;
  bool read_only = t->read_only;
  int r;

  e = calloc (1, sizeof *e);
  if (!e || !(e->name = strdup (name)))
    {
      free (e);
      *err = vbk_errno (-ENOMEM, "blockd: export %s", name);
      return NULL;
    }
  pthread_mutex_init (&e->snap_lock, NULL);
  e->table = t;
  {
    char bimg[IMAGE_NAME_MAX + 1], bid[64];

    r = nbd_srv_backup_name_split (name, bimg, sizeof bimg, bid, sizeof bid);
    if (r > 0)
      {
        e->read_only = true;
        atomic_store (&e->trusted, true);   /* a backup never changes */
        if (!(e->image = strdup (bimg)))
          r = vbk_errno (-ENOMEM, "blockd: export %s", name);
        else
          r = export_open_backup (t, e, bimg, bid);
        if (r < 0)
          goto fail;
        return e;
      }
    if (r < 0)
      goto fail;
  }
  r = nbd_srv_export_name_split (name, &e->image, &e->snap);
  if (r < 0)
    goto fail;
  x = nbd_srv_config_export (&t->per_export, e->image);
  if (x && x->read_only >= 0)
    read_only = x->read_only;
  if (x && x->exclusive >= 0)
    lc.exclusive = x->exclusive;
  if (e->snap)
    {
      /* Points into e->name, which outlives it. */
      e->snap = e->name + (e->snap - name);
      e->read_only = true;
      r = image_open_snap (t->store, e->image, e->snap, &e->img);
      /* A snapshot never changes: its map is always right. */
      atomic_store (&e->trusted, true);
    }
  else if (read_only)
    {
      e->read_only = true;
      r = image_open (t->store, e->image, IMAGE_OPEN_RDONLY, &e->img);
      if (r == 0)
        r = image_set_trusted (e->img, 0);
    }
  else
    {
      /* A name that is no image costs one read on the shared handle,
       * not a store connection of its own (and its threads) opened only
       * to find out. */
      r = image_stat (t->store, e->image, &info);
      if (r == 0)
        r = nbd_srv_export_open_rw (e, &lc);
    }
  if (r < 0)
    goto fail;
  image_get_info (e->img, &info);
  e->size = info.size;
  e->object_size = info.object_size;
  return e;

 fail:
  export_close (e);
  export_free (e);
  *err = r;
  return NULL;
}

static bool
closing_has (struct nbd_srv_exports *t, const char *name)
{
  struct nbd_srv_export *e;

  for (e = t->closing; e; e = e->closing_next)
    if (strcmp (e->name, name) == 0)
      return true;
  return false;
}

/* lease_cfg.own_client: with open_lock held. */
static bool
own_client (void *arg, const char *client)
{
  struct nbd_srv_exports *t = arg;
  struct cds_lfht_iter iter;
  struct cds_lfht_node *node;
  struct nbd_srv_export *e;
  bool found = false;

  for (e = t->closing; e && !found; e = e->closing_next)
    found = e->client_id && strcmp (e->client_id, client) == 0;
  /* Not cds_lfht_for_each_entry: at its end it takes container_of of a
   * NULL node, which UBSan reports as pointer overflow. */
  rcu_read_lock ();
  for (cds_lfht_first (t->ht, &iter);
       !found && (node = cds_lfht_iter_get_node (&iter)) != NULL;
       cds_lfht_next (t->ht, &iter))
    {
      e = caa_container_of (node, struct nbd_srv_export, node);
      found = e->client_id && strcmp (e->client_id, client) == 0;
    }
  rcu_read_unlock ();
  return found;
}

int
nbd_srv_export_get (struct nbd_srv_exports *t, const char *name,
                    struct nbd_srv_export **out)
{
  unsigned long hash = name_hash (name);
  struct nbd_srv_export *e, *dying;
  int r;

  e = lookup_get (t, name, hash, NULL);
  if (e)
    {
      *out = e;
      return 0;
    }

  pthread_mutex_lock (&t->open_lock);
  for (;;)
    {
      e = lookup_get (t, name, hash, &dying);
      if (e)
        goto out;
      /* The previous export of this image is closing (its last client
       * went): wait until it has flushed and let its lease go.  A new
       * export beside it would not cover its unflushed writes, and would
       * find its lease held "by us". */
      if ((dying && !atomic_load (&dying->dead)) || closing_has (t, name))
        {
          pthread_cond_wait (&t->closed_cond, &t->open_lock);
          continue;
        }
      break;
    }
  if (dying)
    {
      /* Its lease is lost: unlink it now so that the new open below can
       * be added; its remaining users keep it until they put it. */
      rcu_read_lock ();
      cds_lfht_del (t->ht, &dying->node);
      rcu_read_unlock ();
    }

  e = export_open (t, name, &r);
  if (!e)
    goto out;
  e->table = t;
  atomic_init (&e->refs, 1);
  cds_lfht_node_init (&e->node);
  rcu_read_lock ();
  cds_lfht_add (t->ht, hash, &e->node);
  rcu_read_unlock ();
  log_info ("export %s opened (%" PRIu64 " bytes, object size %u%s)",
            name, e->size, e->object_size,
            e->backup ? ", backup, read-only"
            : e->snap ? ", snapshot, read-only"
            : e->read_only ? ", read-only" : "");

 out:
  pthread_mutex_unlock (&t->open_lock);
  if (e)
    {
      *out = e;
      return 0;
    }
  return r;
}

void
nbd_srv_export_put (struct nbd_srv_export *e)
{
  struct nbd_srv_exports *t;
  struct nbd_srv_export **pp;

  if (!e)
    return;
  if (atomic_fetch_sub (&e->refs, 1) != 1)
    return;

  t = e->table;
  pthread_mutex_lock (&t->open_lock);
  rcu_read_lock ();
  cds_lfht_del (t->ht, &e->node);   /* -ENOENT if a new open unlinked it */
  rcu_read_unlock ();
  e->closing_next = t->closing;
  t->closing = e;
  pthread_mutex_unlock (&t->open_lock);

  export_close (e);
  log_info ("export %s closed", e->name);

  pthread_mutex_lock (&t->open_lock);
  for (pp = &t->closing; *pp; pp = &(*pp)->closing_next)
    if (*pp == e)
      {
        *pp = e->closing_next;
        break;
      }
  pthread_cond_broadcast (&t->closed_cond);
  pthread_mutex_unlock (&t->open_lock);
  call_rcu (&e->rcu, export_free_rcu);
}
