/* SPDX-License-Identifier: MIT
 *
 * tree-backup.c - the backups/ part of a vbkfs tree, and a backup as a
 * vbkfs source.
 *
 * DESIGN: backups/NAME/ lists the backups of image NAME in the
 * repository, each named by its time in UTC ("2026-12-01T02:41:15Z"; a
 * second backup in the same second gets "-ID" added), with "latest" a
 * symlink to the newest.  A backup can also be reached by its id
 * (backups/NAME/ID/, not listed), which is what "vbk files" uses.  A name
 * once seen maps to the same id for good (backups never change), so
 * paths inside an open backup resolve from a small table without listing
 * the repository again.  Backups are immutable and every chunk is checked
 * against its digest on read (backup/reader.c), so the source needs no
 * check().  An open backup is registered as a reader in the repository
 * (backup/reader.c), so a prune and gc while one of its files is open
 * keep its chunks and it reads on unchanged; once the last open file of
 * it closes the registration is dropped (tree.c), so that gc may collect
 * a backup pruned meanwhile, and taken again when a file is opened.  Without a repository (no --repo),
 * backups/ is empty.
 *
 * "latest" is resolved by the kernel on every path walk through it (a
 * FUSE symlink is not cached), so "ls -lR backups/NAME/latest/..."
 * asks for it once per file.  Listing the repository reads every
 * manifest: too slow for that.  So "latest" resolves from a listing of
 * the image younger than LIST_TTL_MS; every other name, and a directory
 * listing, reads the repository afresh (and refreshes that listing).  A
 * new backup therefore becomes "latest" within LIST_TTL_MS, at once
 * after "ls backups/NAME".  The kernel may also keep the link
 * (mount.c): vbkfs_poll_latest looks, about once a second, at each image
 * whose "latest" was read and says which links moved, so that mount.c
 * drops them from the kernel's cache.  The look is cheap: one walk of the
 * catalog (which names every backup begun, with its image and start
 * time) and a stat of the newest complete backup's manifest (and of any
 * begun after it), not a read of every manifest; only when "latest"
 * moved is the image listed again in full.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backup/backup.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "tree.h"

/* A TIME name seen in a listing. */
struct known {
  struct known *next;
  char image[IMAGE_NAME_MAX + 1];
  char name[NAME_MAX + 1];
  char id[64];
  uint64_t time_ms;
};

/* A recent listing of one image's backups (under lock). */
struct listing {
  struct listing *next;
  char image[IMAGE_NAME_MAX + 1];
  uint64_t at_ns;               /* monotonic */
  struct backup_entry *list;
  size_t n;
  bool latest_read;             /* "latest" was resolved: watch it */
  char latest[NAME_MAX + 1];    /* what it was resolved to */
};

#define LIST_TTL_MS 1000

struct vbkfs_backups {
  struct backup_repo *repo;
  pthread_mutex_t lock;
  struct known *known;
  struct listing *listings;
};

int
vbkfs_backup_init (struct vbkfs *fs, const char *repo_uri,
                   const struct backup_key_opts *key)
{
  struct vbkfs_backups *b;
  int r;

  if (repo_uri == NULL)
    return 0;
  b = calloc (1, sizeof *b);
  if (b == NULL)
    return -ENOMEM;
  r = backup_repo_open_key (repo_uri, key, &b->repo);
  if (r < 0) {
    free (b);
    return r;
  }
  pthread_mutex_init (&b->lock, NULL);
  fs->backups = b;
  return 0;
}

void
vbkfs_backup_fini (struct vbkfs *fs)
{
  struct vbkfs_backups *b = fs->backups;
  struct known *k, *next;

  if (b == NULL)
    return;
  for (k = b->known; k; k = next) {
    next = k->next;
    free (k);
  }
  while (b->listings) {
    struct listing *l = b->listings;

    b->listings = l->next;
    free (l->list);
    free (l);
  }
  backup_repo_close (b->repo);
  pthread_mutex_destroy (&b->lock);
  free (b);
  fs->backups = NULL;
}

/* The name of a backup started at TIME_MS in its directory; DUP: another
 * backup of the image started in the same second. */
static void
backup_name (uint64_t time_ms, const char *id, bool dup, char *buf,
             size_t len)
{
  time_t t = (time_t) (time_ms / 1000);
  char when[32];
  struct tm tm;

  gmtime_r (&t, &tm);
  strftime (when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (dup)
    snprintf (buf, len, "%s-%s", when, id);
  else
    snprintf (buf, len, "%s", when);
}

/* The name of entry I of LIST (oldest first) in its directory. */
static void
entry_name (const struct backup_entry *list, size_t n, size_t i, char *buf,
            size_t len)
{
  size_t j;
  bool dup = false;

  for (j = 0; j < n; j++)
    if (j != i && list[j].time_ms / 1000 == list[i].time_ms / 1000)
      dup = true;
  backup_name (list[i].time_ms, list[i].id, dup, buf, len);
}

static int
list_image (struct vbkfs *fs, const char *image, struct backup_entry **list,
            size_t *n)
{
  int r;

  r = backup_list (fs->backups->repo, image, list, n);
  if (r < 0) {
    log_error ("vbkfs: listing the backups of %s: %s", image,
               vbk_error ()[0] ? vbk_error () : strerror (-r));
    return -EIO;
  }
  return 0;
}

/* Remembers LIST (N entries) as the listing of IMAGE. */
static void
listing_put (struct vbkfs_backups *b, const char *image,
             const struct backup_entry *list, size_t n)
{
  struct backup_entry *copy = malloc ((n ? n : 1) * sizeof *copy);
  struct listing *l;

  if (copy == NULL)
    return;                     /* only a cache */
  memcpy (copy, list, n * sizeof *copy);
  pthread_mutex_lock (&b->lock);
  for (l = b->listings; l && strcmp (l->image, image) != 0; l = l->next)
    ;
  if (l == NULL && (l = calloc (1, sizeof *l)) != NULL) {
    snprintf (l->image, sizeof l->image, "%s", image);
    l->next = b->listings;
    b->listings = l;
  }
  if (l) {
    free (l->list);
    l->list = copy;
    l->n = n;
    l->at_ns = now_mono_ns ();
  }
  else
    free (copy);
  pthread_mutex_unlock (&b->lock);
}

/* The backups of IMAGE from a listing younger than LIST_TTL_MS, else
 * from the repository. */
static int
list_image_recent (struct vbkfs *fs, const char *image,
                   struct backup_entry **list, size_t *n)
{
  struct vbkfs_backups *b = fs->backups;
  struct listing *l;
  int r;

  pthread_mutex_lock (&b->lock);
  for (l = b->listings; l; l = l->next)
    if (strcmp (l->image, image) == 0
        && now_mono_ns () - l->at_ns < LIST_TTL_MS * 1000000ull) {
      *list = malloc ((l->n ? l->n : 1) * sizeof **list);
      if (*list == NULL)
        break;
      memcpy (*list, l->list, l->n * sizeof **list);
      *n = l->n;
      pthread_mutex_unlock (&b->lock);
      return 0;
    }
  pthread_mutex_unlock (&b->lock);
  r = list_image (fs, image, list, n);
  if (r == 0)
    listing_put (b, image, *list, *n);
  return r;
}

/* Notes that "latest" of IMAGE was resolved to LINK. */
static void
latest_note (struct vbkfs_backups *b, const char *image, const char *link)
{
  struct listing *l;

  pthread_mutex_lock (&b->lock);
  for (l = b->listings; l; l = l->next)
    if (strcmp (l->image, image) == 0) {
      l->latest_read = true;
      snprintf (l->latest, sizeof l->latest, "%s", link);
    }
  pthread_mutex_unlock (&b->lock);
}

/* What "latest" of IMAGE is now, from the catalog (one store call) and
 * the manifests of the newest backups only (one stat each: the newest
 * complete one, those begun after it, and any of the same second): the
 * name of the newest complete backup, "" if none.  0 or -errno. */
static int
latest_from_catalog (struct vbkfs_backups *b, const char *image, char *link,
                     size_t len)
{
  struct backup_entry *cat = NULL;
  size_t n = 0, i, j;
  bool dup = false;
  int r;

  link[0] = '\0';
  if ((r = backup_catalog_list (b->repo, image, &cat, &n)) < 0)
    return r;
  /* Newest first: skip those still running, failed or pruned. */
  for (i = 0; i < n; i++) {
    r = backup_complete (b->repo, cat[i].id);
    if (r == 0)
      break;
    if (r != -ENOENT)
      goto out;
  }
  r = 0;
  if (i == n)
    goto out;
  for (j = 0; j < n && !dup; j++)
    if (j != i && cat[j].time_ms / 1000 == cat[i].time_ms / 1000) {
      r = backup_complete (b->repo, cat[j].id);
      if (r == 0)
        dup = true;
      else if (r != -ENOENT)
        goto out;
      r = 0;
    }
  backup_name (cat[i].time_ms, cat[i].id, dup, link, len);
 out:
  free (cat);
  return r;
}

void
vbkfs_poll_latest (struct vbkfs *fs, vbkfs_changed_cb changed, void *arg)
{
  struct vbkfs_backups *b = fs->backups;
  char image[IMAGE_NAME_MAX + 1], link[NAME_MAX + 1], path[PATH_MAX];
  struct backup_entry *list;
  struct listing *l;
  size_t n, done = 0, i;
  bool found, moved;

  if (b == NULL)
    return;
  /* One image at a time, without the lock while listing. */
  for (;;) {
    found = false;
    pthread_mutex_lock (&b->lock);
    for (l = b->listings, i = 0; l; l = l->next)
      if (l->latest_read && i++ == done) {
        snprintf (image, sizeof image, "%s", l->image);
        found = true;
        break;
      }
    pthread_mutex_unlock (&b->lock);
    if (!found)
      return;
    done++;
    /* The cheap look first: while "latest" stays, the listing it was
     * resolved from stays right for it (keep it fresh). */
    if (latest_from_catalog (b, image, link, sizeof link) == 0) {
      moved = true;
      pthread_mutex_lock (&b->lock);
      for (l = b->listings; l; l = l->next)
        if (strcmp (l->image, image) == 0 && strcmp (l->latest, link) == 0) {
          l->at_ns = now_mono_ns ();
          moved = false;
        }
      pthread_mutex_unlock (&b->lock);
      if (!moved)
        continue;
    }
    if (list_image (fs, image, &list, &n) < 0)
      continue;
    listing_put (b, image, list, n);
    link[0] = '\0';
    if (n > 0)
      entry_name (list, n, n - 1, link, sizeof link);
    free (list);
    moved = false;
    pthread_mutex_lock (&b->lock);
    for (l = b->listings; l; l = l->next)
      if (strcmp (l->image, image) == 0 && strcmp (l->latest, link) != 0) {
        snprintf (l->latest, sizeof l->latest, "%s", link);
        moved = true;
      }
    pthread_mutex_unlock (&b->lock);
    if (moved) {
      snprintf (path, sizeof path, "/backups/%s/latest", image);
      changed (arg, path);
    }
  }
}

static const struct known *
known_find (struct vbkfs_backups *b, const char *image, const char *name)
{
  struct known *k;

  for (k = b->known; k; k = k->next)
    if (strcmp (k->image, image) == 0
        && (strcmp (k->name, name) == 0 || strcmp (k->id, name) == 0))
      return k;
  return NULL;
}

static void
known_add (struct vbkfs_backups *b, const char *image, const char *name,
           const struct backup_entry *e)
{
  struct known *k;

  if (known_find (b, image, name))
    return;
  k = calloc (1, sizeof *k);
  if (k == NULL)
    return;                     /* only a cache */
  snprintf (k->image, sizeof k->image, "%s", image);
  snprintf (k->name, sizeof k->name, "%s", name);
  snprintf (k->id, sizeof k->id, "%s", e->id);
  k->time_ms = e->time_ms;
  k->next = b->known;
  b->known = k;
}

int
vbkfs_resolve_backups (struct vbkfs *fs, const char *rest,
                       struct vbkfs_node *n, vbkfs_vol_resolver vol)
{
  struct vbkfs_backups *b = fs->backups;
  struct backup_entry *list = NULL;
  const struct known *k;
  const char *p = rest, *s;
  char name[NAME_MAX + 1];
  size_t cnt = 0, i, len;
  int r, latest = 0;

  /* Components by hand: "latest" may be followed by more. */
  p += strspn (p, "/");
  if (*p == '\0') {
    n->type = N_BACKUPS;
    return 0;
  }
  len = strcspn (p, "/");
  if (len > IMAGE_NAME_MAX || b == NULL)
    return -ENOENT;
  memcpy (n->image, p, len);
  n->image[len] = '\0';
  if (image_name_check (n->image) < 0)
    return -ENOENT;
  p += len;
  p += strspn (p, "/");
  if (*p == '\0') {
    n->type = N_BIMAGE;
    r = list_image (fs, n->image, &list, &cnt);
    free (list);
    return r < 0 ? r : cnt ? 0 : -ENOENT;
  }
  len = strcspn (p, "/");
  if (len > NAME_MAX)
    return -ENOENT;
  memcpy (name, p, len);
  name[len] = '\0';
  s = p + len;
  latest = strcmp (name, "latest") == 0;

  /* Inside a backup already open: no listing. */
  if (!latest && s[strspn (s, "/")] != '\0') {
    pthread_mutex_lock (&b->lock);
    k = known_find (b, n->image, name);
    if (k) {
      snprintf (n->name, sizeof n->name, "%s", k->id);
      n->time_ms = k->time_ms;
    }
    pthread_mutex_unlock (&b->lock);
    if (k) {
      n->kind = VOL_BACKUP;
      return vol (fs, s, n);
    }
  }

  r = latest ? list_image_recent (fs, n->image, &list, &cnt)
    : list_image (fs, n->image, &list, &cnt);
  if (r < 0)
    return r;
  if (!latest)
    listing_put (b, n->image, list, cnt);
  if (cnt == 0) {
    free (list);
    return -ENOENT;
  }
  if (latest) {
    i = cnt - 1;
    entry_name (list, cnt, i, n->link, sizeof n->link);
    latest_note (b, n->image, n->link);
    if (s[strspn (s, "/")] == '\0') {
      n->type = N_LATEST;
      n->time_ms = list[i].time_ms;
      free (list);
      return 0;
    }
  }
  else {
    char ename[NAME_MAX + 1];

    for (i = 0; i < cnt; i++) {
      entry_name (list, cnt, i, ename, sizeof ename);
      if (strcmp (ename, name) == 0 || strcmp (list[i].id, name) == 0)
        break;
    }
    if (i == cnt) {
      free (list);
      return -ENOENT;
    }
    pthread_mutex_lock (&b->lock);
    known_add (b, n->image, name, &list[i]);
    pthread_mutex_unlock (&b->lock);
  }
  snprintf (n->name, sizeof n->name, "%s", list[i].id);
  n->time_ms = list[i].time_ms;
  free (list);
  n->kind = VOL_BACKUP;
  return vol (fs, s, n);
}

int
vbkfs_backup_exists (struct vbkfs *fs, struct vbkfs_node *n)
{
  /* vbkfs_resolve_backups found it (in a listing, or open). */
  return 0;
}

int
vbkfs_backup_readdir (struct vbkfs *fs, struct vbkfs_node *n,
                      vbkfs_fill_cb fill, void *arg)
{
  struct backup_entry *list = NULL;
  char name[NAME_MAX + 1];
  struct stat st;
  size_t cnt = 0, i, j;
  int r;

  if (fs->backups == NULL)
    return 0;
  memset (&st, 0, sizeof st);
  st.st_mode = S_IFDIR;
  r = list_image (fs, n->type == N_BIMAGE ? n->image : NULL, &list, &cnt);
  if (r < 0)
    return r;
  if (n->type == N_BIMAGE)
    listing_put (fs->backups, n->image, list, cnt);
  for (i = 0; i < cnt; i++) {
    if (n->type == N_BACKUPS) {
      /* Each image once (the list is sorted by image, then time). */
      for (j = 0; j < i && strcmp (list[j].image, list[i].image); j++)
        ;
      if (j == i && fill (arg, list[i].image, &st))
        break;
      continue;
    }
    entry_name (list, cnt, i, name, sizeof name);
    if (fill (arg, name, &st))
      break;
  }
  if (n->type == N_BIMAGE && cnt > 0) {
    st.st_mode = S_IFLNK;
    fill (arg, "latest", &st);
  }
  free (list);
  return 0;
}

int
vbkfs_backup_info (struct vbkfs *fs, struct vbkfs_node *n, char **out)
{
  char *json = NULL, *s;
  size_t len;
  int r;

  if (fs->backups == NULL)
    return -ENOENT;
  r = backup_manifest_json (fs->backups->repo, n->name, &json);
  if (r < 0) {
    if (r != -ENOENT)
      log_error ("vbkfs: manifest of backup %s: %s", n->name, vbk_error ());
    return r == -ENOENT ? r : -EIO;
  }
  len = strlen (json);
  if (len == 0 || json[len - 1] != '\n') {
    s = realloc (json, len + 2);
    if (s == NULL) {
      free (json);
      return -ENOMEM;
    }
    s[len] = '\n';
    s[len + 1] = '\0';
    json = s;
  }
  *out = json;
  return 0;
}

/* ---- A backup as a source ---------------------------------------------- */

static uint64_t
bk_size (void *h)
{
  return backup_reader_size (h);
}

static ssize_t
bk_pread (void *h, void *buf, size_t len, uint64_t off)
{
  return backup_reader_pread (h, buf, len, off);
}

static ssize_t
bk_pread_unhashed (void *h, void *buf, size_t len, uint64_t off)
{
  return backup_reader_pread_flags (h, buf, len, off, BACKUP_READ_UNHASHED);
}

static int
bk_verify (void *h, const void *buf, size_t len, uint64_t off)
{
  return backup_reader_verify (h, buf, len, off);
}

static ssize_t
bk_pread_part (void *h, void *buf, size_t len, uint64_t off)
{
  return backup_reader_pread_flags (h, buf, len, off,
                                    BACKUP_READ_PARTS | BACKUP_READ_PARTS_ONLY);
}

static int
bk_check_unit (void *h, uint64_t off)
{
  return backup_reader_check_chunk (h, off);
}

static int
bk_extents (void *h, uint64_t off, uint64_t len, image_extent_cb cb,
            void *arg)
{
  return backup_reader_extents (h, off, len, cb, arg);
}

static int
bk_check (void *h)
{
  return 0;
}

static void
bk_close (void *h)
{
  backup_reader_close (h);
}

static uint32_t
bk_chunk_size (void *h)
{
  return backup_reader_chunk_size (h);
}

static void
bk_unpin (void *h)
{
  backup_reader_unpin (h);
}

static int
bk_pin (void *h)
{
  return backup_reader_pin (h);
}

static const struct vbkfs_source_ops backup_ops = {
  .kind = "backup",
  .size = bk_size,
  .pread = bk_pread,
  .extents = bk_extents,
  .check = bk_check,
  .close = bk_close,
  .chunk_size = bk_chunk_size,
  .unpin = bk_unpin,
  .pin = bk_pin,
  .pread_unhashed = bk_pread_unhashed,
  .verify = bk_verify,
  .pread_part = bk_pread_part,
  .check_unit = bk_check_unit,
};

int
vbkfs_source_backup_open (struct vbkfs *fs, const char *image,
                          const char *name, struct vbkfs_source *out)
{
  struct backup_reader *rd;
  int r;

  if (fs->backups == NULL)
    return -ENOENT;
  r = backup_reader_open (fs->backups->repo, name, &rd);
  if (r < 0)
    return r;
  out->ops = &backup_ops;
  out->h = rd;
  snprintf (out->name, sizeof out->name, "backup %s/%s", image, name);
  return 0;
}
