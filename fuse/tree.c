/* SPDX-License-Identifier: MIT
 *
 * tree.c - the paths of a vbkfs tree.
 *
 * DESIGN: a path resolves, component by component, to a node:
 *   /                                   images/ backups/
 *   /images/NAME/snapshots/SNAP/        a volume (disk, info.json, parts/,
 *                                       files/)
 *   /backups/NAME/TIME/                 a volume (see tree-backup.c);
 *                                       latest -> the newest TIME
 * Inside a volume:
 *   disk          the whole disk, sparse (SEEK_DATA/SEEK_HOLE, st_blocks)
 *   info.json     the snapshot's or backup's metadata
 *   parts/pN      partition N of the disk
 *   files/...     the ext2/3/4 file system of a disk without partitions,
 *                 or files/pN/... of each partition; a README instead
 *                 where the file system is not one we read
 * Listing images and snapshots reads metadata only.  A volume's disk is
 * opened (allocation map loaded) when disk, parts or files are first
 * used, and then kept, with its partitions and file systems, until
 * vbkfs_free: later paths inside it resolve without touching the store's
 * metadata (a snapshot removed meanwhile fails reads with EIO through
 * its source's check, and leaves the listings).
 *
 * A backup's source pins the backup against gc (a reader record).  The
 * volume counts its open files (disk, parts/pN, files/...): when the last
 * one closes the pin is dropped, and it is taken again (the backup
 * checked to still exist, else the open fails) when a file is opened.
 * A volume only looked at (stat, listings) and never opened keeps the
 * pin it took when it was opened until vbkfs_unpin_idle finds it idle
 * for IDLE_NS (the mount calls it once a second).  Reads that are not
 * through an open file (listings and lookups inside files/) do not pin:
 * of a backup pruned and collected meanwhile they fail with EIO.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "tree.h"

/* ---- Volumes ------------------------------------------------------------ */

#define IDLE_NS (1000ull * 1000 * 1000)

static struct vbkfs_vol *
vol_find_unlocked (struct vbkfs *fs, int kind, const char *image,
                   const char *name)
{
  struct vbkfs_vol *v;

  for (v = fs->vols; v; v = v->next)
    if (v->kind == kind && strcmp (v->image, image) == 0
        && strcmp (v->name, name) == 0)
      return v;
  return NULL;
}

/* Whether a volume of IMAGE is open: then IMAGE exists for us. */
static bool
image_in_use (struct vbkfs *fs, const char *image)
{
  struct vbkfs_vol *v;
  bool found = false;

  pthread_mutex_lock (&fs->lock);
  for (v = fs->vols; v && !found; v = v->next)
    found = v->kind == VOL_SNAP && strcmp (v->image, image) == 0;
  pthread_mutex_unlock (&fs->lock);
  return found;
}

/* The volume KIND IMAGE NAME with its disk open. */
static int
vol_get (struct vbkfs *fs, int kind, const char *image, const char *name,
         struct vbkfs_vol **out)
{
  struct vbkfs_source src;
  struct vbkfs_vol *v;
  int r;

  pthread_mutex_lock (&fs->lock);
  v = vol_find_unlocked (fs, kind, image, name);
  if (v) {
    pthread_mutex_unlock (&fs->lock);
    *out = v;
    return 0;
  }
  if (kind == VOL_SNAP)
    r = vbkfs_source_snap_open (fs->store, image, name, &src);
  else
    r = vbkfs_source_backup_open (fs, image, name, &src);
  if (r < 0) {
    if (r != -ENOENT)
      log_error ("vbkfs: opening %s of %s: %s",
                 kind == VOL_SNAP ? "snapshot" : "backup", image,
                 vbk_error ()[0] ? vbk_error () : strerror (-r));
    pthread_mutex_unlock (&fs->lock);
    return r == -ENOENT ? r : -EIO;
  }
  v = calloc (1, sizeof *v);
  if (v == NULL) {
    src.ops->close (src.h);
    pthread_mutex_unlock (&fs->lock);
    return -ENOMEM;
  }
  r = vbkfs_disk_open (&src, fs->cache_bytes, &v->disk);
  if (r < 0) {
    free (v);
    pthread_mutex_unlock (&fs->lock);
    return r == -ENOMEM ? r : -EIO;
  }
  if (fs->check_later)
    vbkfs_disk_check_later (v->disk);
  v->kind = kind;
  v->idle_ns = now_mono_ns ();
  snprintf (v->image, sizeof v->image, "%s", image);
  snprintf (v->name, sizeof v->name, "%s", name);
  pthread_mutex_init (&v->lock, NULL);
  v->next = fs->vols;
  fs->vols = v;
  pthread_mutex_unlock (&fs->lock);
  *out = v;
  return 0;
}

static void
vol_free (struct vbkfs_vol *v)
{
  size_t i;

  for (i = 0; i <= v->nparts; i++)
    if (v->fsx && v->fsx[i].ext)
      vbkfs_extfs_close (v->fsx[i].ext);
  free (v->fsx);
  free (v->parts);
  vbkfs_disk_close (v->disk);
  pthread_mutex_destroy (&v->lock);
  free (v);
}

/* Loads the partition list once.  fsx[nparts] is the whole disk. */
static int
vol_parts (struct vbkfs_vol *v)
{
  int r = 0;

  pthread_mutex_lock (&v->lock);
  if (!v->parts_loaded) {
    r = vbkfs_parts_read (v->disk, &v->parts, &v->nparts);
    if (r == 0) {
      v->fsx = calloc (v->nparts + 1, sizeof *v->fsx);
      if (v->fsx == NULL) {
        free (v->parts);
        v->parts = NULL;
        v->nparts = 0;
        r = -ENOMEM;
      }
    }
    if (r == 0)
      v->parts_loaded = true;
    else
      log_error ("vbkfs: %s: reading the partition table failed: %s",
                 vbkfs_disk_name (v->disk),
                 vbk_error ()[0] ? vbk_error () : strerror (-r));
  }
  pthread_mutex_unlock (&v->lock);
  return r < 0 ? (r == -ENOMEM ? r : -EIO) : 0;
}

/* Range of volume part I (nparts: the whole disk). */
static void
part_range (struct vbkfs_vol *v, size_t i, uint64_t *off, uint64_t *len)
{
  if (i == v->nparts) {
    *off = 0;
    *len = vbkfs_disk_size (v->disk);
  }
  else {
    *off = v->parts[i].start;
    *len = v->parts[i].size;
  }
}

/* The file system of part I, opened once; NULL with fsx[i].readme set
 * when it is not one we read. */
static struct vbkfs_extfs *
vol_fs (struct vbkfs_vol *v, size_t i)
{
  struct vbkfs_fsx *x = &v->fsx[i];
  uint64_t off, len;
  char type[32];
  int r;

  pthread_mutex_lock (&v->lock);
  if (!x->tried) {
    part_range (v, i, &off, &len);
    r = vbkfs_fstype (v->disk, off, len, type, sizeof type);
    if (r < 0)
      snprintf (x->readme, sizeof x->readme, "Reading this volume failed "
                "(%s), so its file system is unknown.\n", strerror (-r));
    else if (type[0] == '\0')
      snprintf (x->readme, sizeof x->readme, "No file system was found "
                "on this volume.\n");
    else if (strcmp (type, "ext2") && strcmp (type, "ext3")
             && strcmp (type, "ext4"))
      snprintf (x->readme, sizeof x->readme, "This volume holds a %s file "
                "system, which vbk mount does not read (it reads ext2, ext3 "
                "and ext4).  Use the disk or parts/ files with another "
                "reader.\n", type);
    else {
      vbk_clear_error ();
      r = vbkfs_extfs_open (v->disk, off, len, &x->ext);
      if (r < 0) {
        snprintf (x->readme, sizeof x->readme, "This volume holds a %s "
                  "file system that could not be opened: %s\n", type,
                  vbk_error ()[0] ? vbk_error () : strerror (-r));
        log_error ("vbkfs: %s", vbk_error ());
      }
    }
    x->tried = true;
  }
  pthread_mutex_unlock (&v->lock);
  return x->ext;
}

/* ---- Paths ---------------------------------------------------------------- */

/* Copies the next component of *P into BUF; returns 0 at the end, 1, or
 * -ENAMETOOLONG. */
static int
next_comp (const char **p, char *buf, size_t len)
{
  const char *s = *p, *e;

  while (*s == '/')
    s++;
  if (*s == '\0')
    return 0;
  e = strchrnul (s, '/');
  if ((size_t) (e - s) >= len)
    return -ENAMETOOLONG;
  memcpy (buf, s, e - s);
  buf[e - s] = '\0';
  *p = e;
  return 1;
}

static int
snap_find (struct vbkfs *fs, const char *image, const char *snap,
           struct image_snap *out)
{
  struct image_snap *list = NULL;
  size_t n = 0, i;
  int r;

  r = image_snap_list (fs->store, image, &list, &n);
  if (r < 0)
    return r == -ENOENT ? r : -EIO;
  for (i = 0; i < n; i++)
    if (strcmp (list[i].name, snap) == 0) {
      *out = list[i];
      free (list);
      return 0;
    }
  free (list);
  return -ENOENT;
}

/* Whether volume KIND IMAGE NAME exists: an open volume counts; else
 * the metadata is read.  Fills N->time_ms when it reads. */
static int
vol_exists (struct vbkfs *fs, struct vbkfs_node *n)
{
  struct image_snap sn;
  int r;

  pthread_mutex_lock (&fs->lock);
  n->vol = vol_find_unlocked (fs, n->kind, n->image, n->name);
  pthread_mutex_unlock (&fs->lock);
  /* An open volume exists for us (a removed snapshot leaves the
   * listings; its reads fail): no metadata read, so that paths into it
   * keep working when the kernel revalidates them while the store
   * fails. */
  if (n->vol)
    return 0;
  if (n->kind == VOL_SNAP) {
    r = snap_find (fs, n->image, n->name, &sn);
    if (r == 0)
      n->time_ms = sn.time_ms;
    return r;
  }
  return vbkfs_backup_exists (fs, n);
}

static int
resolve_volume (struct vbkfs *fs, const char *p, struct vbkfs_node *n)
{
  char comp[NAME_MAX + 1], pn[16];
  int r;
  size_t i;

  n->rest_is_inside = *p && strspn (p, "/") != strlen (p);
  r = vol_exists (fs, n);
  if (r < 0)
    return r;
  n->type = N_VOL;
  if ((r = next_comp (&p, comp, sizeof comp)) <= 0)
    return r;
  if (strcmp (comp, "info.json") == 0)
    n->type = N_INFO;
  else if (strcmp (comp, "disk") == 0)
    n->type = N_DISK;
  else if (strcmp (comp, "parts") == 0)
    n->type = N_PARTS;
  else if (strcmp (comp, "files") == 0)
    n->type = N_FILES_TOP;
  else
    return -ENOENT;
  if (n->type == N_INFO) {
    if (next_comp (&p, comp, sizeof comp) != 0)
      return -ENOTDIR;
    return 0;
  }
  if (n->vol == NULL) {
    r = vol_get (fs, n->kind, n->image, n->name, &n->vol);
    if (r < 0)
      return r;
  }
  if (n->type == N_DISK) {
    if (next_comp (&p, comp, sizeof comp) != 0)
      return -ENOTDIR;
    n->off = 0;
    n->len = vbkfs_disk_size (n->vol->disk);
    return 0;
  }
  r = vol_parts (n->vol);
  if (r < 0)
    return r;
  n->part = n->vol->nparts;
  if (n->type == N_PARTS || n->vol->nparts > 0) {
    /* parts/pN, files/pN/... */
    if ((r = next_comp (&p, comp, sizeof comp)) <= 0)
      return r;
    for (i = 0; i < n->vol->nparts; i++) {
      snprintf (pn, sizeof pn, "p%u", n->vol->parts[i].no);
      if (strcmp (pn, comp) == 0)
        n->part = i;
    }
    if (n->part == n->vol->nparts)
      return -ENOENT;
  }
  if (n->type == N_PARTS) {
    if (next_comp (&p, comp, sizeof comp) != 0)
      return -ENOTDIR;
    n->type = N_PART;
    part_range (n->vol, n->part, &n->off, &n->len);
    return 0;
  }
  /* files/ of a disk without partitions, or files/pN/ */
  n->fspath = p;
  n->type = N_FILES;
  n->ext = vol_fs (n->vol, n->part);
  if (n->ext == NULL) {
    const char *q = n->fspath;

    if ((r = next_comp (&q, comp, sizeof comp)) == 0) {
      n->type = N_README_DIR;
      return 0;
    }
    if (r < 0 || strcmp (comp, "README") != 0
        || next_comp (&q, comp, sizeof comp) != 0)
      return -ENOENT;
    n->type = N_README;
  }
  return 0;
}

int
vbkfs_resolve (struct vbkfs *fs, const char *path, struct vbkfs_node *n)
{
  char comp[NAME_MAX + 1];
  const char *p = path;
  int r;

  memset (n, 0, sizeof *n);
  n->path = path;
  if ((r = next_comp (&p, comp, sizeof comp)) <= 0) {
    n->type = N_ROOT;
    return r;
  }
  if (strcmp (comp, "images") == 0) {
    if ((r = next_comp (&p, n->image, sizeof n->image)) <= 0) {
      n->type = N_IMAGES;
      return r;
    }
    if (image_name_check (n->image) < 0)
      return -ENOENT;
    if ((r = next_comp (&p, comp, sizeof comp)) <= 0) {
      struct image_info info;

      n->type = N_IMAGE;
      if (r == 0 && !image_in_use (fs, n->image)
          && (r = image_stat (fs->store, n->image, &info)) < 0)
        return r == -ENOENT ? r : -EIO;
      return r;
    }
    if (strcmp (comp, "snapshots") != 0)
      return -ENOENT;
    if ((r = next_comp (&p, n->name, sizeof n->name)) <= 0) {
      struct image_info info;

      n->type = N_SNAPS;
      if (r == 0 && !image_in_use (fs, n->image)
          && (r = image_stat (fs->store, n->image, &info)) < 0)
        return r == -ENOENT ? r : -EIO;
      return r;
    }
    n->kind = VOL_SNAP;
    return resolve_volume (fs, p, n);
  }
  if (strcmp (comp, "backups") == 0)
    return vbkfs_resolve_backups (fs, p, n, resolve_volume);
  return -ENOENT;
}

/* ---- Attributes ------------------------------------------------------------ */

static void
stat_dir (struct vbkfs *fs, struct stat *st, uint64_t time_ms)
{
  memset (st, 0, sizeof *st);
  st->st_mode = S_IFDIR | 0555;
  st->st_nlink = 2;
  st->st_uid = fs->uid;
  st->st_gid = fs->gid;
  st->st_mtim.tv_sec = (time_t) (time_ms / 1000);
  st->st_mtim.tv_nsec = (long) (time_ms % 1000) * 1000000;
  st->st_ctim = st->st_atim = st->st_mtim;
  st->st_blksize = 4096;
}

static void
stat_file (struct vbkfs *fs, struct stat *st, uint64_t time_ms,
           uint64_t size)
{
  stat_dir (fs, st, time_ms);
  st->st_mode = S_IFREG | 0444;
  st->st_nlink = 1;
  st->st_size = (off_t) size;
  st->st_blocks = (blkcnt_t) ((size + 511) / 512);
}

/* The text of info.json (caller frees), for snapshots. */
static int
snap_info (struct vbkfs *fs, struct vbkfs_node *n, char **out)
{
  struct image_info info;
  struct image_snap sn;
  json_object *o;
  char when[64];
  time_t t;
  struct tm tm;
  int r;

  r = snap_find (fs, n->image, n->name, &sn);
  if (r == 0)
    r = image_stat (fs->store, n->image, &info);
  if (r < 0)
    return r == -ENOENT ? r : -EIO;
  t = (time_t) (sn.time_ms / 1000);
  gmtime_r (&t, &tm);
  strftime (when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  o = json_object_new_object ();
  json_object_object_add (o, "kind", json_object_new_string ("snapshot"));
  json_object_object_add (o, "image", json_object_new_string (n->image));
  json_object_object_add (o, "snapshot", json_object_new_string (n->name));
  json_object_object_add (o, "id", json_object_new_int64 ((int64_t) sn.id));
  json_object_object_add (o, "size",
                          json_object_new_int64 ((int64_t) sn.size));
  json_object_object_add (o, "object_size",
                          json_object_new_int64 (info.object_size));
  json_object_object_add (o, "time_ms",
                          json_object_new_int64 ((int64_t) sn.time_ms));
  json_object_object_add (o, "time", json_object_new_string (when));
  *out = strdup (json_object_to_json_string_ext (o, JSON_C_TO_STRING_PRETTY
                                                 | JSON_C_TO_STRING_SPACED
                                                 | JSON_C_TO_STRING_NOSLASHESCAPE));
  json_object_put (o);
  if (*out == NULL)
    return -ENOMEM;
  /* A trailing newline, as text files have. */
  {
    size_t len = strlen (*out);
    char *s = realloc (*out, len + 2);

    if (s == NULL)
      return -ENOMEM;
    s[len] = '\n';
    s[len + 1] = '\0';
    *out = s;
  }
  return 0;
}

static int
info_text (struct vbkfs *fs, struct vbkfs_node *n, char **out)
{
  if (n->kind == VOL_SNAP)
    return snap_info (fs, n, out);
  return vbkfs_backup_info (fs, n, out);
}

int
vbkfs_getattr (struct vbkfs *fs, const char *path, struct stat *st)
{
  struct vbkfs_node n;
  char *text = NULL;
  int r;

  r = vbkfs_resolve (fs, path, &n);
  if (r < 0)
    return r;
  switch (n.type) {
  case N_ROOT: case N_IMAGES: case N_IMAGE: case N_SNAPS: case N_BACKUPS:
  case N_BIMAGE: case N_VOL: case N_PARTS: case N_FILES_TOP:
  case N_README_DIR:
    stat_dir (fs, st, n.time_ms);
    return 0;
  case N_LATEST:
    stat_dir (fs, st, n.time_ms);
    st->st_mode = S_IFLNK | 0777;
    st->st_nlink = 1;
    st->st_size = (off_t) strlen (n.link);
    return 0;
  case N_INFO:
    r = info_text (fs, &n, &text);
    if (r < 0)
      return r;
    stat_file (fs, st, n.time_ms, strlen (text));
    free (text);
    return 0;
  case N_README:
    stat_file (fs, st, n.time_ms, strlen (n.vol->fsx[n.part].readme));
    return 0;
  case N_DISK: case N_PART:
    stat_file (fs, st, n.time_ms, n.len);
    st->st_blocks = (blkcnt_t)
      ((vbkfs_disk_allocated (n.vol->disk, n.off, n.len) + 511) / 512);
    return 0;
  case N_FILES:
    return vbkfs_extfs_getattr (n.ext, n.fspath, st);
  }
  return -ENOENT;
}

/* ---- Directories ------------------------------------------------------------- */

static int
readdir_common (struct vbkfs *fs, const char *path, bool plus,
                vbkfs_fill_cb fill, void *arg)
{
  struct vbkfs_node n;
  struct stat st;
  char pn[16];
  size_t i, cnt;
  int r;

  r = vbkfs_resolve (fs, path, &n);
  if (r < 0)
    return r;
  memset (&st, 0, sizeof st);
  st.st_mode = S_IFDIR;
  switch (n.type) {
  case N_ROOT:
    if ((r = fill (arg, "images", &st)) == 0)
      r = fill (arg, "backups", &st);
    return r > 0 ? 0 : r;
  case N_IMAGES:
    {
      struct image_info *list = NULL;

      r = image_list (fs->store, &list, &cnt);
      if (r < 0) {
        log_error ("vbkfs: listing images: %s", vbk_error ());
        return -EIO;
      }
      for (i = 0; i < cnt; i++)
        if (fill (arg, list[i].name, &st))
          break;
      free (list);
      return 0;
    }
  case N_IMAGE:
    fill (arg, "snapshots", &st);
    return 0;
  case N_SNAPS:
    {
      struct image_snap *list = NULL;

      r = image_snap_list (fs->store, n.image, &list, &cnt);
      if (r < 0)
        return r == -ENOENT ? r : -EIO;
      for (i = 0; i < cnt; i++)
        if (fill (arg, list[i].name, &st))
          break;
      free (list);
      return 0;
    }
  case N_BACKUPS: case N_BIMAGE:
    return vbkfs_backup_readdir (fs, &n, fill, arg);
  case N_VOL:
    if (fill (arg, "parts", &st) || fill (arg, "files", &st))
      return 0;
    st.st_mode = S_IFREG;
    if (fill (arg, "disk", &st) == 0)
      fill (arg, "info.json", &st);
    return 0;
  case N_PARTS:
    st.st_mode = S_IFREG;
    for (i = 0; i < n.vol->nparts; i++) {
      snprintf (pn, sizeof pn, "p%u", n.vol->parts[i].no);
      if (fill (arg, pn, &st))
        break;
    }
    return 0;
  case N_FILES_TOP:
    /* Reached only with partitions: files/pN. */
    for (i = 0; i < n.vol->nparts; i++) {
      snprintf (pn, sizeof pn, "p%u", n.vol->parts[i].no);
      if (fill (arg, pn, &st))
        break;
    }
    return 0;
  case N_README_DIR:
    st.st_mode = S_IFREG;
    fill (arg, "README", &st);
    return 0;
  case N_FILES:
    return vbkfs_extfs_readdir (n.ext, n.fspath, plus, fill, arg);
  default:
    return -ENOTDIR;
  }
}

int
vbkfs_readdir (struct vbkfs *fs, const char *path, vbkfs_fill_cb fill,
               void *arg)
{
  return readdir_common (fs, path, false, fill, arg);
}

int
vbkfs_readdir_plus (struct vbkfs *fs, const char *path, vbkfs_fill_cb fill,
                    void *arg)
{
  return readdir_common (fs, path, true, fill, arg);
}

int
vbkfs_readlink (struct vbkfs *fs, const char *path, char *buf, size_t len)
{
  struct vbkfs_node n;
  int r;

  r = vbkfs_resolve (fs, path, &n);
  if (r < 0)
    return r;
  if (n.type == N_LATEST) {
    snprintf (buf, len, "%s", n.link);
    return 0;
  }
  if (n.type == N_FILES)
    return vbkfs_extfs_readlink (n.ext, n.fspath, buf, len);
  return -EINVAL;
}

/* ---- Files --------------------------------------------------------------------- */

struct vbkfs_file {
  struct vbkfs_node n;
  bool counted;                 /* in n.vol->opens */
  char *text;                   /* info.json, README */
  size_t text_len;
  struct vbkfs_extfile *ef;
};

/* Counts a file of V opened, taking the pin back if it was dropped. */
static int
vol_open_file (struct vbkfs_vol *v)
{
  int r = 0;

  pthread_mutex_lock (&v->lock);
  if (v->unpinned) {
    r = vbkfs_disk_pin (v->disk);
    if (r < 0) {
      log_error ("vbkfs: %s: %s", vbkfs_disk_name (v->disk),
                 vbk_error ()[0] ? vbk_error () : strerror (-r));
      r = r == -ENOENT ? -ENOENT : -EIO;
    }
    else
      v->unpinned = false;
  }
  if (r == 0)
    v->opens++;
  pthread_mutex_unlock (&v->lock);
  return r;
}

/* Counts a file of V closed; the last one drops the pin. */
static void
vol_close_file (struct vbkfs_vol *v)
{
  pthread_mutex_lock (&v->lock);
  if (--v->opens == 0 && !v->unpinned) {
    vbkfs_disk_unpin (v->disk);
    v->unpinned = true;
  }
  if (v->opens == 0)
    v->idle_ns = now_mono_ns ();
  pthread_mutex_unlock (&v->lock);
}

void
vbkfs_unpin_idle (struct vbkfs *fs)
{
  uint64_t now = now_mono_ns ();
  struct vbkfs_vol *v;

  /* Volumes are only added to the list, and freed at vbkfs_free. */
  pthread_mutex_lock (&fs->lock);
  v = fs->vols;
  pthread_mutex_unlock (&fs->lock);
  for (; v; v = v->next) {
    pthread_mutex_lock (&v->lock);
    if (v->opens == 0 && !v->unpinned && now - v->idle_ns >= IDLE_NS) {
      vbkfs_disk_unpin (v->disk);
      v->unpinned = true;
    }
    pthread_mutex_unlock (&v->lock);
  }
}

int
vbkfs_open (struct vbkfs *fs, const char *path, struct vbkfs_file **out)
{
  struct vbkfs_file *f;
  int r;

  f = calloc (1, sizeof *f);
  if (f == NULL)
    return -ENOMEM;
  r = vbkfs_resolve (fs, path, &f->n);
  if (r < 0)
    goto fail;
  switch (f->n.type) {
  case N_DISK: case N_PART:
    break;
  case N_INFO:
    r = info_text (fs, &f->n, &f->text);
    if (r == 0)
      f->text_len = strlen (f->text);
    break;
  case N_README:
    f->text = strdup (f->n.vol->fsx[f->n.part].readme);
    f->text_len = f->text ? strlen (f->text) : 0;
    r = f->text ? 0 : -ENOMEM;
    break;
  case N_FILES:
    r = vbkfs_extfs_fopen (f->n.ext, f->n.fspath, &f->ef);
    break;
  default:
    r = -EISDIR;
  }
  if (r == 0 && f->n.vol && f->n.type != N_INFO && f->n.type != N_README) {
    r = vol_open_file (f->n.vol);
    f->counted = r == 0;
    if (r < 0) {
      vbkfs_extfs_fclose (f->ef);
      f->ef = NULL;
    }
  }
  if (r < 0)
    goto fail;
  /* Those point into PATH, which is the caller's. */
  f->n.path = NULL;
  f->n.fspath = NULL;
  *out = f;
  return 0;

 fail:
  free (f);
  return r;
}

void
vbkfs_release (struct vbkfs_file *f)
{
  if (f == NULL)
    return;
  vbkfs_extfs_fclose (f->ef);
  if (f->counted)
    vol_close_file (f->n.vol);
  free (f->text);
  free (f);
}

ssize_t
vbkfs_read (struct vbkfs_file *f, void *buf, size_t len, uint64_t off)
{
  if (f->ef)
    return vbkfs_extfs_fread (f->ef, buf, len, off);
  if (f->text) {
    if (off >= f->text_len)
      return 0;
    len = MIN (len, f->text_len - off);
    memcpy (buf, f->text + off, len);
    return (ssize_t) len;
  }
  if (off >= f->n.len)
    return 0;
  return vbkfs_disk_pread (f->n.vol->disk, buf, MIN (len, f->n.len - off),
                           f->n.off + off);
}

int64_t
vbkfs_lseek (struct vbkfs_file *f, int64_t off, int whence)
{
  uint64_t size;

  if (f->ef || f->text) {
    size = f->ef ? vbkfs_extfs_fsize (f->ef) : f->text_len;
    if (off < 0)
      return -EINVAL;
    if ((uint64_t) off >= size)
      return -ENXIO;
    return whence == SEEK_DATA ? off : whence == SEEK_HOLE
      ? (int64_t) size : -EINVAL;
  }
  return vbkfs_disk_seek (f->n.vol->disk, f->n.off, f->n.len, off, whence);
}

/* ---- The tree ------------------------------------------------------------------- */

int
vbkfs_new (const struct vbkfs_opts *o, struct vbkfs **out)
{
  struct vbkfs *fs;
  int r;

  fs = calloc (1, sizeof *fs);
  if (fs == NULL)
    return -ENOMEM;
  fs->store = o->store;
  fs->cache_bytes = o->cache_bytes;
  fs->check_later = o->check_later;
  fs->uid = getuid ();
  fs->gid = getgid ();
  pthread_mutex_init (&fs->lock, NULL);
  r = vbkfs_backup_init (fs, o->repo_uri, o->repo_key);
  if (r < 0) {
    pthread_mutex_destroy (&fs->lock);
    free (fs);
    return r;
  }
  *out = fs;
  return 0;
}

void
vbkfs_free (struct vbkfs *fs)
{
  struct vbkfs_vol *v, *next;

  if (fs == NULL)
    return;
  for (v = fs->vols; v; v = next) {
    next = v->next;
    vol_free (v);
  }
  vbkfs_backup_fini (fs);
  pthread_mutex_destroy (&fs->lock);
  free (fs);
}
