/* SPDX-License-Identifier: MIT
 *
 * restore.c - restoring a backup into a new image, onto an existing one
 * in place, or into a file or block device.
 *
 * DESIGN: all three are copy_run() from a backup reader endpoint:
 * - new image / new file: the destination reads as zeros, so holes and
 *   all-zero chunks are not written (the result is sparse); a file is
 *   written as a temporary file beside its path and renamed into place
 *   once complete and durable, over an existing file only when forced;
 *   whole chunks go to it with O_DIRECT (COPY_FILE_DIRECT): no copy into
 *   the page cache, and the disk writes while later chunks decode
 *   instead of taking every dirty page at the final fsync;
 * - durability: chunks are never synced one by one; the copy's flush at
 *   the end (copy_run: fsync of the file, or image_flush) makes all of it
 *   durable at once, and its failure fails the restore (the temporary
 *   file or the new image is removed);
 * - in place: the source is the target image itself, read chunk by chunk,
 *   and the destination is an endpoint that hashes what the target holds
 *   now and compares it with the backup's digest: only chunks that differ
 *   are fetched from the repository and written (zero chunks discarded).
 *   This is right whatever happened to the target since, because it trusts
 *   no change log.  While the image's lease is held (a VM runs on it) this
 *   refuses unless forced, which breaks the lease (fencing the holder).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/util.h"
#include "locks/lease.h"
#include "internal.h"

/* Copy threads: reading, checking and decompressing chunks is CPU, the
 * writes wait on the destination; more threads than cores overlap them. */
#define RESTORE_THREADS 8

struct inplace {
  struct backup_repo *r;
  struct backup_reader *rd;
  struct backup_index *ix;
  struct image *img;
  uint32_t cs;
  _Atomic uint64_t same, written, zeroed;
};

static int
ip_pwrite (void *h, const void *cur, size_t len, uint64_t off)
{
  struct inplace *p = h;
  const unsigned char *want = p->ix->digest[off / p->cs];
  unsigned char d[BACKUP_DIGEST_LEN];
  void *buf;
  ssize_t n;
  int e;

  if (backup_digest_is_hole (want)) {
    if (copy_is_zero (cur, len)) {
      p->same += len;
      return 0;
    }
    p->zeroed += len;
    return image_discard (p->img, off, len, 0);
  }
  backup_chunk_id (p->r, cur, len, d);
  if (memcmp (d, want, BACKUP_DIGEST_LEN) == 0) {
    p->same += len;
    return 0;
  }
  if ((buf = malloc (len)) == NULL)
    return vbk_errno (-ENOMEM, "restore");
  n = backup_reader_pread (p->rd, buf, len, off);
  e = n < 0 ? (int) n : image_write (p->img, buf, len, off, 0);
  free (buf);
  if (e == 0)
    p->written += len;
  return e;
}

static int
ip_flush (void *h)
{
  return image_flush (((struct inplace *) h)->img);
}

static uint64_t
ip_size (void *h)
{
  return backup_reader_size (((struct inplace *) h)->rd);
}

static const struct copy_ops inplace_ops = {
  .kind = "in-place",
  .pwrite = ip_pwrite,
  .flush = ip_flush,
  .size = ip_size,
};

static int
check_lease (struct store *st, const char *image, unsigned flags)
{
  struct image_info info;
  struct lease_status ls;
  char hdr[STORE_NAME_MAX + 1];
  int e;

  if ((e = image_stat (st, image, &info)) < 0) {
    if (e == -ENOENT)
      vbk_set_error ("restore: no image '%s' (without --in-place a new "
                     "image is made)", image);
    return e;
  }
  image_header_oid (info.id, hdr, sizeof hdr);
  if ((e = lease_status_get (st, hdr, &ls)) < 0)
    return e;
  if (!ls.held)
    return 0;
  if (!(flags & BACKUP_RESTORE_FORCE))
    return vbk_errno (-EBUSY, "restore: image '%s' is in use (its lease is "
                      "held by %s); stop it or use --force", image, ls.host);
  return lease_break (st, hdr);
}

int
backup_restore_image (struct backup_repo *r, const char *id,
                      struct store *st, const char *image, unsigned flags,
                      enum copy_progress_mode progress,
                      struct backup_restore_result *res)
{
  struct backup_reader *rd = NULL;
  struct copy_endpoint *src = NULL, *dst = NULL;
  struct copy_opts co = { 0 };
  struct copy_result cr = { 0 };
  struct image *img = NULL;
  struct inplace ip = { 0 };
  struct copy_endpoint ipdst = { &inplace_ops, &ip, "" };
  char label[IMAGE_NAME_MAX + 16];
  int e, created = 0;

  memset (res, 0, sizeof *res);
  if ((e = backup_reader_open (r, id, &rd)) < 0)
    return e;
  res->size = backup_reader_size (rd);
  snprintf (label, sizeof label, "restore %s", image);
  co.piece = backup_repo_chunk_size (r);
  co.threads = RESTORE_THREADS;
  co.progress = progress;
  co.label = label;
  if (flags & BACKUP_RESTORE_IN_PLACE) {
    struct image_info info;

    if ((e = check_lease (st, image, flags)) < 0)
      goto out;
    if ((e = image_stat (st, image, &info)) < 0)
      goto out;
    if (info.size != res->size && (e = image_resize (st, image, res->size)) < 0)
      goto out;
    if ((e = image_open (st, image, 0, &img)) < 0)
      goto out;
    ip.rd = rd;
    ip.r = r;
    ip.ix = backup_reader_index (rd);
    ip.img = img;
    ip.cs = co.piece;
    snprintf (ipdst.name, sizeof ipdst.name, "%s", image);
    /* Every chunk of the target is read (absent objects cost nothing). */
    if ((e = copy_endpoint_image (img, image, 0, &src)) < 0)
      goto out;
    {
      struct copy_range all = { 0, res->size };

      co.ranges = &all;
      co.nranges = 1;
      co.whole_pieces = 1;
      e = copy_run (src, &ipdst, &co, &cr);
    }
    res->read = cr.read;
    res->written = ip.written;
    res->zeroed = ip.zeroed;
    res->same = ip.same;
    res->elapsed_ns = cr.elapsed_ns;
    goto out;
  }

  /* The backed-up image's object size (0, from an older backup: the
   * default), so the restored image is laid out as the original was. */
  if ((e = image_create (st, image, res->size,
                         backup_reader_object_size (rd))) < 0) {
    if (e == -EEXIST)
      vbk_set_error ("restore: image '%s' exists (use --in-place to restore "
                     "onto it)", image);
    goto out;
  }
  created = 1;
  if ((e = image_open (st, image, 0, &img)) < 0
      || (e = backup_reader_endpoint (rd, &src)) < 0
      || (e = copy_endpoint_image (img, image, 0, &dst)) < 0)
    goto out;
  co.skip_zero = 1;
  co.dst_zeroed = 1;
  e = copy_run (src, dst, &co, &cr);
  res->read = cr.read;
  res->written = cr.written;
  res->elapsed_ns = cr.elapsed_ns;
 out:
  copy_endpoint_close (src);
  copy_endpoint_close (dst);
  image_close (img);
  if (e < 0 && created) {
    char msg[1024];

    /* A half-restored image is no use: remove it, keep the reason. */
    snprintf (msg, sizeof msg, "%s", vbk_error ());
    image_remove (st, image);
    vbk_set_error ("%s", msg);
  }
  backup_reader_close (rd);
  return e;
}

/* The temporary file beside PATH: DIR/.NAME.vbk-XXXXXX, created empty;
 * *DIR gets the directory (for its fsync). */
static int
temp_beside (const char *path, char **tmp, char **dir)
{
  const char *slash = strrchr (path, '/');
  mode_t mask;
  int fd;

  *tmp = NULL;
  if (slash)
    *dir = strndup (path, slash == path ? 1 : (size_t) (slash - path));
  else
    *dir = strdup (".");
  if (*dir == NULL
      || asprintf (tmp, "%s%s.%s.vbk-XXXXXX", slash ? *dir : "",
                   slash && slash != path ? "/" : "",
                   slash ? slash + 1 : path) < 0) {
    *tmp = NULL;
    return vbk_errno (-ENOMEM, "restore: %s", path);
  }
  if ((fd = mkostemp (*tmp, O_CLOEXEC)) < 0) {
    int e = vbk_errno (-errno, "restore: %s", path);

    free (*tmp);
    *tmp = NULL;
    return e;
  }
  mask = umask (0);
  umask (mask);
  fchmod (fd, 0644 & ~mask);
  close (fd);
  return 0;
}

/* Puts TMP, made durable by the copy's one flush at its end, at PATH
 * (over an existing file only with FORCE), durably. */
static int
temp_commit (const char *tmp, const char *path, const char *dir, int force)
{
  int fd, e;

  if (force)
    e = rename (tmp, path);
  else {
    /* Not over a file that appeared meanwhile. */
    e = renameat2 (AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE);
    if (e < 0 && errno == EINVAL) {
      if ((e = link (tmp, path)) == 0)
        unlink (tmp);
    }
  }
  if (e < 0) {
    if (errno == EEXIST)
      return vbk_errno (-EEXIST, "restore: %s: file exists (use --force to "
                        "replace it)", path);
    return vbk_errno (-errno, "restore: %s: rename", path);
  }
  if ((fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
    return vbk_errno (-errno, "restore: %s: open directory", dir);
  e = fsync (fd) < 0 ? vbk_errno (-errno, "restore: %s: fsync", dir) : 0;
  close (fd);
  return e;
}

int
backup_restore_file (struct backup_repo *r, const char *id, const char *path,
                     unsigned flags, enum copy_progress_mode progress,
                     struct backup_restore_result *res)
{
  struct backup_reader *rd = NULL;
  struct copy_endpoint *src = NULL, *dst = NULL;
  struct copy_opts co = { 0 };
  struct copy_result cr = { 0 };
  struct stat sb, lsb;
  char *tmp = NULL, *dir = NULL;
  int e, force = (flags & BACKUP_RESTORE_FORCE) != 0;

  memset (res, 0, sizeof *res);
  /* A regular file (or a link to one) is replaced only when asked to;
   * a block device is what --to-file names to be written. */
  if (stat (path, &sb) == 0 && S_ISREG (sb.st_mode) && !force)
    return vbk_errno (-EEXIST, "restore: %s: file exists (use --force to "
                      "replace it)", path);
  if ((e = backup_reader_open (r, id, &rd)) < 0)
    return e;
  res->size = backup_reader_size (rd);
  if ((lstat (path, &lsb) < 0 && errno == ENOENT) || S_ISREG (lsb.st_mode)) {
    /* Written beside it, renamed over it when complete: a failed or
     * interrupted restore leaves no half file at PATH. */
    if ((e = temp_beside (path, &tmp, &dir)) < 0)
      goto out;
  }
  if ((e = backup_reader_endpoint (rd, &src)) < 0
      || (e = copy_endpoint_file (tmp ? tmp : path,
                                  COPY_FILE_WRITE | COPY_FILE_CREATE
                                  | COPY_FILE_DIRECT, res->size, &dst)) < 0)
    goto out;
  co.piece = backup_repo_chunk_size (r);
  co.threads = RESTORE_THREADS;
  co.skip_zero = 1;
  /* A regular file was just truncated: it reads as zeros.  A block
   * device does not. */
  co.dst_zeroed = stat (tmp ? tmp : path, &sb) == 0 && S_ISREG (sb.st_mode);
  co.progress = progress;
  co.label = "restore";
  e = copy_run (src, dst, &co, &cr);
  res->read = cr.read;
  res->written = cr.written;
  res->zeroed = cr.zeroed;
  res->elapsed_ns = cr.elapsed_ns;
  copy_endpoint_close (dst);
  dst = NULL;
  if (e == 0 && tmp && (e = temp_commit (tmp, path, dir, force)) == 0) {
    free (tmp);
    tmp = NULL;
  }
 out:
  copy_endpoint_close (src);
  copy_endpoint_close (dst);
  if (tmp)
    unlink (tmp);
  free (tmp);
  free (dir);
  backup_reader_close (rd);
  return e;
}
