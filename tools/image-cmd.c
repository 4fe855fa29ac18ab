/* SPDX-License-Identifier: MIT
 *
 * image-cmd.c - the "vbk image" verbs: create, ls, info, resize, rm,
 * import, export (of the image or, as NAME@SNAP, of a snapshot).
 *
 * Each verb checks its arguments first (a malformed size, object size or
 * name is a usage error, exit 2, before the store is even opened), then
 * opens the store and makes one or a few image-library calls; the library
 * records the reason of a failure and vbk_fail() prints it.  --json output
 * is built with json-c: info prints one object, ls an array of the same
 * objects (without "objects": ls reads headers only, never object maps),
 * with sizes as plain numbers of bytes and the state ("ok", "incomplete":
 * an import that did not finish, "removing": an rm that did not finish).
 *
 * Commands that cannot lose data: rm refuses while a host holds the
 * lease (--force fences it first); import marks its image incomplete
 * until the last data is durable, and replaces an image left incomplete
 * by an import of this host that died; export writes a temporary file
 * beside the target and renames it over only on success.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fs.h>

#include <json-c/json.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "snapshot/snapshot.h"
#include "internal.h"
#include "locks/lease.h"

/* Largest image.  The image library refuses more than 1 PiB but image.h
 * does not name the limit yet; checking it here makes a too large size a
 * usage error like any other malformed size. */
#ifdef IMAGE_SIZE_MAX
#define IMAGE_CLI_SIZE_MAX ((uint64_t) IMAGE_SIZE_MAX)
#else
#define IMAGE_CLI_SIZE_MAX (UINT64_C (1) << 50)
#endif

/* ---- Argument checks ----------------------------------------------------- */

/* Parses --OPT as an image size.  Returns 0, or an exit status. */
static int
get_size (const struct vbk_args *a, const char *opt, uint64_t *out)
{
  const char *s = vbk_opt (a, opt);

  if (s == NULL)
    return vbk_usage_error (a, "missing --%s SIZE", opt);
  if (parse_size (s, out) < 0)
    return vbk_usage_error (a, "--%s: %s", opt, vbk_error ());
  if (*out == 0)
    return vbk_usage_error (a, "--%s: invalid size '%s': must be greater "
                            "than 0", opt, s);
  if (*out > IMAGE_CLI_SIZE_MAX) {
    char max[32];

    return vbk_usage_error (a, "--%s: invalid size '%s': too large (at most "
                            "%s)", opt, s,
                            format_size (IMAGE_CLI_SIZE_MAX, max, sizeof max));
  }
  return 0;
}

/* Parses --object-size if given (else *OUT = 0, the default). */
static int
get_object_size (const struct vbk_args *a, uint32_t *out)
{
  const char *s = vbk_opt (a, "object-size");
  uint64_t v;

  *out = 0;
  if (s == NULL)
    return 0;
  if (parse_size (s, &v) < 0)
    return vbk_usage_error (a, "--object-size: %s", vbk_error ());
  if (!is_power_of_2 (v) || v < IMAGE_OBJECT_SIZE_MIN
      || v > IMAGE_OBJECT_SIZE_MAX)
    return vbk_usage_error (a, "--object-size: invalid object size '%s': "
                            "must be a power of two from 64K to 32M", s);
  *out = (uint32_t) v;
  return 0;
}

/* ---- Output -------------------------------------------------------------- */

static const char *
state_name (enum image_state s)
{
  switch (s) {
  case IMAGE_STATE_OK:
    return "ok";
  case IMAGE_STATE_IMPORTING:
    return "incomplete";
  case IMAGE_STATE_REMOVING:
    return "removing";
  }
  return "unknown";
}

/* INFO as JSON; "objects" (the written ones) only when WITH_OBJECTS: ls
 * does not read object maps. */
static json_object *
info_to_json (const struct image_info *info, int with_objects)
{
  json_object *o = json_object_new_object ();

  vbk_json_str (o, "name", info->name);
  vbk_json_str (o, "id", info->id);
  vbk_json_u64 (o, "size", info->size);
  vbk_json_u64 (o, "object_size", info->object_size);
  if (with_objects)
    vbk_json_u64 (o, "objects", info->objects);
  vbk_json_u64 (o, "features", info->features);
  vbk_json_str (o, "state", state_name (info->state));
  return o;
}

static uint64_t
objects_total (const struct image_info *info)
{
  return (info->size + info->object_size - 1) / info->object_size;
}

/* ---- Verbs --------------------------------------------------------------- */

static int
cmd_create (struct vbk_ctx *ctx, struct vbk_args *a)
{
  const char *name = a->argv[0];
  struct store *st;
  uint64_t size;
  uint32_t osize;
  int r;

  if ((r = vbk_check_name (a, name)) || (r = get_size (a, "size", &size))
      || (r = get_object_size (a, &osize)))
    return r;
  if (vbk_store_open (ctx, a, &st) < 0)
    return VBK_EXIT_FAILURE;
  vbk_clear_error ();
  r = image_create (st, name, size, osize);
  store_close (st);
  if (r < 0)
    return vbk_fail (a, r);
  return VBK_EXIT_OK;
}

static int
cmd_ls (struct vbk_ctx *ctx, struct vbk_args *a)
{
  struct image_info *list = NULL;
  struct store *st;
  size_t n = 0, i;
  char s1[32], s2[32];
  int r, w = 4;

  if (vbk_store_open (ctx, a, &st) < 0)
    return VBK_EXIT_FAILURE;
  vbk_clear_error ();
  r = image_list (st, &list, &n);
  store_close (st);
  if (r < 0)
    return vbk_fail (a, r);

  if (vbk_opt (a, "json")) {
    json_object *arr = json_object_new_array ();

    for (i = 0; i < n; i++)
      json_object_array_add (arr, info_to_json (&list[i], 0));
    vbk_print_json (arr);
  }
  else {
    for (i = 0; i < n; i++)
      if ((int) strlen (list[i].name) > w)
        w = (int) strlen (list[i].name);
    if (n)
      printf ("%-*s  %10s  %11s  %s\n", w, "NAME", "SIZE", "OBJECT SIZE",
              "STATE");
    for (i = 0; i < n; i++)
      printf ("%-*s  %10s  %11s  %s\n", w, list[i].name,
              format_size (list[i].size, s1, sizeof s1),
              format_size (list[i].object_size, s2, sizeof s2),
              state_name (list[i].state));
  }
  free (list);
  return VBK_EXIT_OK;
}

static int
cmd_info (struct vbk_ctx *ctx, struct vbk_args *a)
{
  struct image_info info;
  struct store *st;
  char s[32];
  int r;

  if ((r = vbk_check_name (a, a->argv[0])))
    return r;
  if (vbk_store_open (ctx, a, &st) < 0)
    return VBK_EXIT_FAILURE;
  vbk_clear_error ();
  r = image_stat (st, a->argv[0], &info);
  if (r == 0)
    r = image_count_objects (st, a->argv[0], &info.objects);
  store_close (st);
  if (r < 0)
    return vbk_fail (a, r);

  if (vbk_opt (a, "json")) {
    json_object *o = info_to_json (&info, 1);

    vbk_print_json (o);
    return VBK_EXIT_OK;
  }
  printf ("name:        %s\n", info.name);
  printf ("id:          %s\n", info.id);
  printf ("size:        %s (%" PRIu64 " bytes)\n",
          format_size (info.size, s, sizeof s), info.size);
  printf ("object size: %s (%" PRIu32 " bytes)\n",
          format_size (info.object_size, s, sizeof s), info.object_size);
  printf ("objects:     %" PRIu64 " of %" PRIu64 " written\n",
          info.objects, objects_total (&info));
  printf ("features:    0x%" PRIx64 "\n", info.features);
  if (info.state == IMAGE_STATE_IMPORTING)
    printf ("state:       incomplete (import did not finish; importer %s)\n",
            info.state_detail);
  else
    printf ("state:       %s\n", state_name (info.state));
  return VBK_EXIT_OK;
}

/* Through the lease holder, as snapshots are (snapshot.h): a resize
 * must not cut objects under a snapshot context that a snapshot taken
 * meanwhile made stale, and the holder must learn the new size. */
static int
cmd_resize (struct vbk_ctx *ctx, struct vbk_args *a)
{
  struct snap_opts o = { 0 };
  char id[300];
  struct store *st;
  uint64_t size;
  int r;

  if ((r = vbk_check_name (a, a->argv[0]))
      || (r = get_size (a, "size", &size)))
    return r;
  o.host_id = vbk_host_id (a, id, sizeof id);
  if (vbk_store_open (ctx, a, &st) < 0)
    return VBK_EXIT_FAILURE;
  vbk_clear_error ();
  r = snap_resize (st, a->argv[0], size, &o);
  store_close (st);
  if (r < 0)
    return vbk_fail (a, r);
  return VBK_EXIT_OK;
}

/* The importer of INFO (an importing image): its process id and host
 * into *PID and IHOST; returns 1 if it is known to be dead (a process of
 * this host that is gone), 2 if known to run (one of this host that
 * exists), 0 if unknown (another host). */
static int
importer_state (const struct image_info *info, long *pid, char *ihost,
                size_t len)
{
  char host[64] = "", fmt[32];

  *pid = 0;
  snprintf (ihost, len, "?");
  snprintf (fmt, sizeof fmt, "%%%zus %%ld", len - 1);
  if (sscanf (info->state_detail, fmt, ihost, pid) != 2 || *pid <= 0)
    return 0;
  gethostname (host, sizeof host - 1);
  if (strcmp (ihost, host) != 0)
    return 0;
  if (kill ((pid_t) *pid, 0) < 0 && errno == ESRCH)
    return 1;
  return 2;
}

/* NAME exists (-EEXIST from create): if it is an image an import left
 * incomplete, and that import is known to be dead, removes it and
 * returns 0.  Otherwise -EEXIST, or -EBUSY for an import that may still
 * run, with a message. */
static int
replace_incomplete (struct store *st, const char *name)
{
  char ihost[64], err[1024];
  struct image_info info;
  long pid;
  int r;

  snprintf (err, sizeof err, "%s", vbk_error ());
  r = image_stat (st, name, &info);
  if (r < 0 || info.state != IMAGE_STATE_IMPORTING) {
    vbk_set_error ("%s", err);
    return -EEXIST;
  }
  if (importer_state (&info, &pid, ihost, sizeof ihost) != 1) {
    vbk_set_error ("image '%s' is being imported (by process %ld on %s); "
                   "if that import died, remove the image with 'vbk image "
                   "rm %s'", name, pid, ihost, name);
    return -EBUSY;
  }
  log_warn ("image import: replacing '%s', left incomplete by an import "
            "that died (process %ld)", name, pid);
  return image_remove (st, name);
}

/* Refuses (-EBUSY) while a host holds the lease of image NAME, unless
 * FORCE, which fences the holder first (as snap rollback does), and
 * while an import of this host still writes it, unless FORCE.  An image
 * whose header is gone (a removal that died) has no holder. */
static int
check_no_writer (struct store *st, const char *name, int force,
                 const char *what)
{
  struct image_info info;
  struct lease_status ls;
  char hdr[64];
  int r;

  r = image_stat (st, name, &info);
  if (r == -ENOENT)
    return 0;                   /* image_remove says whether it exists */
  if (r < 0)
    return r;
  if (info.state == IMAGE_STATE_IMPORTING && !force) {
    char ihost[64];
    long pid;
    if (importer_state (&info, &pid, ihost, sizeof ihost) == 2) {
      vbk_set_error ("image '%s' is being imported by process %ld of this "
                     "host: stop it first, or use --force", name, pid);
      return -EBUSY;
    }
  }
  image_header_oid (info.id, hdr, sizeof hdr);
  r = lease_status_get (st, hdr, &ls);
  if (r == -ENOENT)
    return 0;
  if (r < 0 || !ls.held)
    return r;
  if (!force) {
    vbk_set_error ("image '%s' is open for writing on %s (lease epoch %"
                   PRIu64 "): stop the VM first, or use --force (fences "
                   "that host)", name, ls.host, ls.epoch);
    return -EBUSY;
  }
  log_warn ("%s of %s: breaking the lease of %s", what, name, ls.host);
  r = lease_break (st, hdr);
  return r == -ENOENT ? 0 : r;
}

static int
cmd_rm (struct vbk_ctx *ctx, struct vbk_args *a)
{
  struct store *st;
  int r;

  if ((r = vbk_check_name (a, a->argv[0])))
    return r;
  if (vbk_store_open (ctx, a, &st) < 0)
    return VBK_EXIT_FAILURE;
  vbk_clear_error ();
  r = check_no_writer (st, a->argv[0], vbk_opt (a, "force") != NULL, "rm");
  if (r == 0)
    r = image_remove (st, a->argv[0]);
  store_close (st);
  if (r < 0)
    return vbk_fail (a, r);
  return VBK_EXIT_OK;
}

/* The options import and export share: 0, or an exit status. */
static int
get_copy_args (const struct vbk_ctx *ctx, const struct vbk_args *a,
               const char *file, const char *image, struct vbk_copy_args *ca)
{
  long threads = 0;
  int r;

  if ((r = vbk_opt_num (a, "threads", 1, 64, &threads))
      || (r = vbk_opt_progress (ctx, a, &ca->progress)))
    return r;
  ca->file = file;
  ca->image = image;
  ca->threads = (unsigned) threads;
  return 0;
}

/* After a copy: a log line (-v), and with --json the counts on stdout:
 * {"image", "file", "size", "read", "written", "zeroed", "holes",
 * "elapsed_ms", "rate"} (bytes, and bytes a second of the size). */
static void
report (const struct vbk_args *a, const char *what,
        const struct vbk_copy_args *ca, const struct copy_result *s)
{
  char t[32], d[32], w[32], rate[32];
  double secs = s->elapsed_ns / 1e9;
  uint64_t bps = secs > 0 ? (uint64_t) (s->total / secs) : 0;

  log_info ("%s: %s in %.2f s (%s/s), %s of data, %s written", what,
            format_size (s->total, t, sizeof t), secs,
            format_size (bps, rate, sizeof rate),
            format_size (s->read, d, sizeof d),
            format_size (s->written, w, sizeof w));
  if (vbk_opt (a, "json")) {
    json_object *o = json_object_new_object ();

    vbk_json_str (o, "image", ca->image);
    vbk_json_str (o, "file", ca->file);
    vbk_json_u64 (o, "size", s->total);
    vbk_json_u64 (o, "read", s->read);
    vbk_json_u64 (o, "written", s->written);
    vbk_json_u64 (o, "zeroed", s->zeroed);
    vbk_json_u64 (o, "holes", s->holes);
    vbk_json_u64 (o, "elapsed_ms", s->elapsed_ns / 1000000);
    vbk_json_u64 (o, "rate", bps);
    vbk_print_json (o);
  }
}

/* Size of an open file or block device. */
static int
file_size (int fd, const struct stat *sb, uint64_t *size)
{
  if (S_ISBLK (sb->st_mode))
    return ioctl (fd, BLKGETSIZE64, size) < 0 ? -errno : 0;
  if (!S_ISREG (sb->st_mode))
    return -EINVAL;
  *size = sb->st_size;
  return 0;
}

static int
cmd_import (struct vbk_ctx *ctx, struct vbk_args *a)
{
  const char *file = a->argv[0], *name = a->argv[1];
  struct vbk_copy_args ca = { 0 };
  struct copy_result stats = { 0 };
  struct image *img = NULL;
  struct store *st;
  struct stat sb;
  uint64_t size;
  uint32_t osize;
  int fd, r;

  if ((r = vbk_check_name (a, name)) || (r = get_object_size (a, &osize))
      || (r = get_copy_args (ctx, a, file, name, &ca)))
    return r;

  fd = open (file, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fstat (fd, &sb) < 0) {
    vbk_errno (-errno, "%s", file);
    goto out_fail_file;
  }
  if ((r = file_size (fd, &sb, &size)) < 0) {
    if (r == -EINVAL)
      vbk_set_error ("%s: not a regular file or block device", file);
    else
      vbk_errno (r, "%s: size", file);
    goto out_fail_file;
  }
  if (size == 0) {
    vbk_set_error ("%s: empty file: an image needs a size greater than 0",
                   file);
    goto out_fail_file;
  }
  if (size > IMAGE_CLI_SIZE_MAX) {
    vbk_set_error ("%s: too large for an image", file);
    goto out_fail_file;
  }

  if (vbk_store_open (ctx, a, &st) < 0) {
    close (fd);
    return VBK_EXIT_FAILURE;
  }
  vbk_catch_signals (1);
  vbk_clear_error ();
  /* Marked incomplete until the last data is durable: an import that
   * dies leaves an image nobody serves, which a new import replaces. */
  r = image_create_incomplete (st, name, size, osize);
  if (r == -EEXIST && (r = replace_incomplete (st, name)) == 0)
    r = image_create_incomplete (st, name, size, osize);
  if (r < 0)
    goto out_fail;
  if ((r = image_open (st, name, IMAGE_OPEN_INCOMPLETE, &img)) < 0)
    goto out_remove;
  if ((r = vbk_import_copy (&ca, fd, img, &stats)) < 0)
    goto out_remove;
  /* image_close flushes, but cannot report a failure: flush first. */
  if ((r = image_flush (img)) < 0 || (r = image_set_complete (img)) < 0)
    goto out_remove;
  image_close (img);
  store_close (st);
  close (fd);
  vbk_catch_signals (0);
  report (a, "import", &ca, &stats);
  return VBK_EXIT_OK;

 out_remove:
  /* Leave no half-imported image behind; keep the copy's message. */
  {
    char msg[1024];

    snprintf (msg, sizeof msg, "%s", vbk_error ());
    image_close (img);
    if (image_remove (st, name) < 0)
      log_warn ("image import: could not remove the incomplete image "
                "'%s': %s", name, vbk_error ());
    vbk_set_error ("%s", msg);
  }
 out_fail:
  store_close (st);
  close (fd);
  vbk_catch_signals (0);
  return vbk_fail (a, r);

 out_fail_file:
  if (fd >= 0)
    close (fd);
  return vbk_fail (a, -EINVAL);
}

/* Where an export writes.  A new file, or an existing regular file named
 * directly, is written as a temporary file beside it (same directory,
 * same file system) and renamed over the target only once its data is
 * durable (fsync of the file, by the copy's flush; rename; fsync of the
 * directory): a failed
 * or interrupted export leaves the old file as it was.  Anything else (a
 * block device, or a symbolic link such as /dev/stdout) is written in
 * place. */
struct export_target {
  const char *file;         /* as given */
  char *tmp;                /* the temporary file, or NULL: in place */
  char *dir;                /* its directory, for the fsync */
  int fd;
};

/* Opens the target of an export of SIZE bytes.  An existing regular
 * file is replaced only with FORCE.  Returns 0 or -errno (message set). */
static int
export_open (struct export_target *t, const char *file, uint64_t size,
             int force)
{
  struct stat lsb, sb;
  char *slash;
  int r;

  memset (t, 0, sizeof *t);
  t->file = file;
  t->fd = -1;
  r = lstat (file, &lsb);
  if (r < 0 && errno != ENOENT)
    return vbk_errno (-errno, "%s", file);
  if (r == 0 && S_ISREG (lsb.st_mode) && !force) {
    vbk_set_error ("%s: file exists (use --force to replace it)", file);
    return -EEXIST;
  }
  if (r < 0 || S_ISREG (lsb.st_mode)) {
    /* Beside the target: DIR/.NAME.vbk-XXXXXX. */
    slash = strrchr (file, '/');
    if (slash)
      t->dir = strndup (file, slash == file ? 1 : (size_t) (slash - file));
    else
      t->dir = strdup (".");
    if (t->dir == NULL
        || asprintf (&t->tmp, "%s%s.%s.vbk-XXXXXX", slash ? t->dir : "",
                     slash && slash != file ? "/" : "",
                     slash ? slash + 1 : file) < 0) {
      t->tmp = NULL;
      return vbk_errno (-ENOMEM, "%s", file);
    }
    t->fd = mkostemp (t->tmp, O_CLOEXEC);
    if (t->fd < 0) {
      r = vbk_errno (-errno, "%s", file);
      free (t->tmp);
      t->tmp = NULL;
      return r;
    }
    {
      mode_t mask = umask (0);
      umask (mask);
      fchmod (t->fd, 0666 & ~mask);
    }
    /* The image's size as one hole: only data is written. */
    if (ftruncate (t->fd, size) < 0)
      return vbk_errno (-errno, "%s: truncate", t->tmp);
    return 0;
  }

  t->fd = open (file, O_WRONLY | O_CLOEXEC);
  if (t->fd < 0 || fstat (t->fd, &sb) < 0)
    return vbk_errno (-errno, "%s", file);
  if (S_ISREG (sb.st_mode)) {
    /* A link to a regular file: in place, emptied first. */
    if (ftruncate (t->fd, 0) < 0 || ftruncate (t->fd, size) < 0)
      return vbk_errno (-errno, "%s: truncate", file);
  }
  else if (S_ISBLK (sb.st_mode)) {
    uint64_t dev;

    if (ioctl (t->fd, BLKGETSIZE64, &dev) == 0 && dev < size) {
      vbk_set_error ("%s: device too small (%" PRIu64 " bytes, the image "
                     "has %" PRIu64 ")", file, dev, size);
      return -ENOSPC;
    }
  }
  else {
    vbk_set_error ("%s: not a regular file or block device", file);
    return -EINVAL;
  }
  return 0;
}

/* Whether the export writes a regular file (holes may stay holes). */
static int
export_sparse (const struct export_target *t)
{
  struct stat sb;

  return fstat (t->fd, &sb) == 0 && S_ISREG (sb.st_mode);
}

/* Puts a temporary file in place, durably.  Its data are durable
 * already: the copy ends with the flush of its destination (an fsync of
 * this file, whose failure fails the copy), so a second fsync here would
 * only cost another round to the disk. */
static int
export_commit (struct export_target *t)
{
  int dfd, r;

  r = close (t->fd);
  t->fd = -1;
  if (r < 0)
    return vbk_errno (-errno, "%s: close", t->tmp ? t->tmp : t->file);
  if (t->tmp == NULL)
    return 0;
  if (rename (t->tmp, t->file) < 0)
    return vbk_errno (-errno, "%s: rename to %s", t->tmp, t->file);
  free (t->tmp);
  t->tmp = NULL;
  /* The rename itself is durable once the directory is. */
  dfd = open (t->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0)
    return vbk_errno (-errno, "%s: open directory", t->dir);
  r = fsync (dfd) < 0 ? vbk_errno (-errno, "%s: fsync", t->dir) : 0;
  close (dfd);
  return r;
}

/* Closes the target; a temporary file left (a failed export) goes. */
static void
export_close (struct export_target *t)
{
  if (t->fd >= 0)
    close (t->fd);
  if (t->tmp)
    unlink (t->tmp);
  free (t->tmp);
  free (t->dir);
  t->fd = -1;
  t->tmp = t->dir = NULL;
}

static int
cmd_export (struct vbk_ctx *ctx, struct vbk_args *a)
{
  const char *name = a->argv[0], *file = a->argv[1];
  struct vbk_snap_ref ref = { "" };
  struct vbk_copy_args ca = { 0 };
  struct copy_result stats = { 0 };
  struct export_target t = { .fd = -1 };
  struct image *img = NULL;
  struct store *st;
  int r;

  /* NAME@SNAP exports a snapshot. */
  if (strchr (name, '@') ? (r = vbk_parse_snap_ref (a, name, &ref))
      : (r = vbk_check_name (a, name)))
    return r;
  if ((r = get_copy_args (ctx, a, file, name, &ca)))
    return r;
  if (vbk_store_open (ctx, a, &st) < 0)
    return VBK_EXIT_FAILURE;
  vbk_catch_signals (1);
  vbk_clear_error ();
  if (ref.image[0])
    r = image_open_snap (st, ref.image, ref.snap, &img);
  else
    r = image_open (st, name, IMAGE_OPEN_RDONLY, &img);
  if (r < 0)
    goto out;

  /* Open the target only once the image is known to exist, so that a
   * wrong name leaves nothing behind. */
  r = export_open (&t, file, image_size (img), vbk_opt (a, "force") != NULL);
  if (r == 0)
    r = vbk_export_copy (&ca, img, t.fd, export_sparse (&t), &stats);
  if (r == 0)
    r = export_commit (&t);
  if (r == 0)
    report (a, "export", &ca, &stats);

 out:
  export_close (&t);
  image_close (img);
  store_close (st);
  vbk_catch_signals (0);
  return r < 0 ? vbk_fail (a, r) : VBK_EXIT_OK;
}

/* ---- Table --------------------------------------------------------------- */

static const struct vbk_opt size_opts[] = {
  { "size", 0, "SIZE", "the image size: bytes, or a number with K, M, G, T"
    " or P (powers of 1024)" },
  { "object-size", 0, "SIZE", "size of the data objects: a power of two from"
    " 64K to 32M (default 4M)" },
  { NULL },
};

static const struct vbk_opt resize_opts[] = {
  { "size", 0, "SIZE", "the new size (shrinking drops the data past it)" },
  { NULL },
};

static const struct vbk_opt json_opts[] = {
  { "json", 0, NULL, "print JSON (sizes in bytes)" },
  { NULL },
};

#define COPY_OPTS                                                       \
  VBK_PROGRESS_OPT,                                                     \
  { "json", 0, NULL, "print the counts of the copy as JSON" },         \
  { "threads", 0, "N", "worker threads (default 8)" }

static const struct vbk_opt import_opts[] = {
  { "object-size", 0, "SIZE", "size of the data objects: a power of two from"
    " 64K to 32M (default 4M)" },
  COPY_OPTS,
  { NULL },
};

static const struct vbk_opt rm_opts[] = {
  VBK_FENCE_OPT,
  { NULL },
};

static const struct vbk_opt export_opts[] = {
  { "force", 0, NULL, "replace an existing FILE (atomically, on success)" },
  COPY_OPTS,
  { NULL },
};

const struct vbk_cmd image_cmds[] = {
  { "create", "NAME --size SIZE [--object-size SIZE]",
    "create an empty, thin image", size_opts, 1, 1, cmd_create },
  { "ls", "[--json]", "list the images", json_opts, 0, 0, cmd_ls },
  { "info", "NAME [--json]",
    "show an image's size, object size, id and written objects",
    json_opts, 1, 1, cmd_info },
  { "resize", "NAME --size SIZE", "grow or shrink an image", resize_opts,
    1, 1, cmd_resize },
  { "rm", "NAME [--force]", "remove an image and all its data (refused "
    "while a host holds its lease)", rm_opts, 1, 1, cmd_rm },
  { "import", "FILE NAME [--object-size SIZE] [--progress MODE] [--json]",
    "create image NAME from a raw FILE, skipping holes and zero blocks",
    import_opts, 2, 2, cmd_import },
  { "export", "NAME[@SNAP] FILE [--force] [--progress MODE] [--json]",
    "write an image or IMAGE@SNAP to a raw FILE (sparse; an existing file "
    "is replaced only with --force, and only once the export succeeded)",
    export_opts, 2, 2, cmd_export },
  { NULL },
};
