/* SPDX-License-Identifier: MIT
 *
 * mount.c - a vbkfs tree behind FUSE: the only file that sees libfuse3.
 *
 * DESIGN: the high-level, path-based libfuse API maps one to one onto
 * vbkfs_getattr / readdir / open / read / lseek / readlink; every FUSE
 * request runs on libfuse's thread pool, so a slow or failing store
 * stalls only the requests that need it (the store's timeout bounds each
 * one: a failure is EIO, never a hung mount).  Everything is immutable
 * while mounted (snapshots and backups do not change), so the kernel may
 * keep file data in its page cache (kernel_cache, keep_cache) and names
 * and attributes for ENTRY_TIMEOUT seconds.  The listings of images,
 * snapshots and backups do change, but only by names coming and going:
 * listings are never cached, nor are missing names, so a new snapshot
 * shows at once, and a removed one may still answer a stat (not a read:
 * its reads fail) for up to ENTRY_TIMEOUT.  The high-level API has one
 * timeout for the whole tree.  Directories inside a disk's file system
 * are listed with their attributes (readdirplus), so "ls -l" needs no
 * lookup per file.  The kernel keeps symlinks too (FUSE_CAP_CACHE_SYMLINKS):
 * without that it asks for backups/NAME/latest on every path walk
 * through it, one round trip per file of an "ls -lR" there.  The only
 * link that changes is "latest": a thread asks the tree about once a
 * second (POLL_MS) which "latest" links moved and drops those from the
 * kernel's cache (fuse_invalidate_path).
 */
#define FUSE_USE_VERSION 35

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <fuse.h>

#include "common/error.h"
#include "common/log.h"
#include "vbkfs.h"

static struct vbkfs *
this_fs (void)
{
  return fuse_get_context ()->private_data;
}

#define ENTRY_TIMEOUT 30.0
#define POLL_MS 1000
#define MAX_RA (4u << 20)
#define MAX_BG 32

static void *
op_init (struct fuse_conn_info *conn, struct fuse_config *cfg)
{
  cfg->kernel_cache = 1;
  cfg->entry_timeout = ENTRY_TIMEOUT;
  cfg->attr_timeout = ENTRY_TIMEOUT;
  cfg->negative_timeout = 0;
  conn->max_readahead = MAX_RA;
  conn->max_background = MAX_BG;
  conn->congestion_threshold = MAX_BG * 3 / 4;
  if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
    conn->want |= FUSE_CAP_CACHE_SYMLINKS;
  return fuse_get_context ()->private_data;
}

static int
op_getattr (const char *path, struct stat *st, struct fuse_file_info *fi)
{
  return vbkfs_getattr (this_fs (), path, st);
}

/* Listings go out with offsets (the position of each entry, from 1),
 * a buffer at a time: libfuse 3.14 passes the attributes of a
 * readdirplus entry on only in that mode.  A call at offset OFF lists
 * again from the start and skips the first OFF entries. */
struct fill_ctx {
  void *buf;
  fuse_fill_dir_t filler;
  off_t skip, pos;
};

static int
fill_one (void *arg, const char *name, const struct stat *st)
{
  struct fill_ctx *c = arg;

  if (++c->pos <= c->skip)
    return 0;
  /* Complete attributes (st_nlink set) go out with the name. */
  return c->filler (c->buf, name, st, c->pos,
                    st && st->st_nlink > 0 ? FUSE_FILL_DIR_PLUS : 0);
}

static int
op_readdir (const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
            struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
  struct fill_ctx c = { buf, filler, off, 0 };

  if (fill_one (&c, ".", NULL) || fill_one (&c, "..", NULL))
    return 0;
  if (flags & FUSE_READDIR_PLUS)
    return vbkfs_readdir_plus (this_fs (), path, fill_one, &c);
  return vbkfs_readdir (this_fs (), path, fill_one, &c);
}

static int
op_readlink (const char *path, char *buf, size_t len)
{
  return vbkfs_readlink (this_fs (), path, buf, len);
}

static int
op_open (const char *path, struct fuse_file_info *fi)
{
  struct vbkfs_file *f;
  int r;

  if ((fi->flags & O_ACCMODE) != O_RDONLY)
    return -EROFS;
  r = vbkfs_open (this_fs (), path, &f);
  if (r < 0)
    return r;
  fi->fh = (uintptr_t) f;
  fi->keep_cache = 1;
  return 0;
}

static int
op_read (const char *path, char *buf, size_t len, off_t off,
         struct fuse_file_info *fi)
{
  ssize_t r;

  r = vbkfs_read ((struct vbkfs_file *) (uintptr_t) fi->fh, buf, len,
                  (uint64_t) off);
  return (int) r;
}

static off_t
op_lseek (const char *path, off_t off, int whence, struct fuse_file_info *fi)
{
  return vbkfs_lseek ((struct vbkfs_file *) (uintptr_t) fi->fh, off, whence);
}

static int
op_release (const char *path, struct fuse_file_info *fi)
{
  vbkfs_release ((struct vbkfs_file *) (uintptr_t) fi->fh);
  return 0;
}

/* ---- "latest" links in the kernel's cache ------------------------------ */

struct poller {
  struct fuse *f;
  struct vbkfs *fs;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool stop, started;
};

static void
link_moved (void *arg, const char *path)
{
  struct poller *p = arg;

  /* -ENOENT: the kernel does not have it (any more): nothing to drop. */
  fuse_invalidate_path (p->f, path);
}

static void *
poll_main (void *arg)
{
  struct poller *p = arg;
  struct timespec ts;

  pthread_mutex_lock (&p->lock);
  while (!p->stop) {
    clock_gettime (CLOCK_REALTIME, &ts);
    ts.tv_nsec += POLL_MS * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000;
    ts.tv_nsec %= 1000000000;
    pthread_cond_timedwait (&p->cond, &p->lock, &ts);
    if (p->stop)
      break;
    pthread_mutex_unlock (&p->lock);
    vbkfs_unpin_idle (p->fs);
    vbkfs_poll_latest (p->fs, link_moved, p);
    pthread_mutex_lock (&p->lock);
  }
  pthread_mutex_unlock (&p->lock);
  return NULL;
}

static void
poll_stop (struct poller *p)
{
  if (!p->started)
    return;
  pthread_mutex_lock (&p->lock);
  p->stop = true;
  pthread_cond_signal (&p->cond);
  pthread_mutex_unlock (&p->lock);
  pthread_join (p->thread, NULL);
  p->started = false;
}

/* ---- The kernel's readahead --------------------------------------------- */

/* Raises the kernel's readahead of the FUSE mount on ROOT (an absolute
 * path without symlinks, as in /proc/self/mountinfo) to MAX_RA, where we
 * may (see the top of the file).  Best effort: the mount works without. */
static void
raise_readahead (const char *root)
{
  char line[4096], mp[4096], path[128], val[32];
  unsigned maj, min, dev_maj = 0, dev_min = 0;
  bool found = false;
  FILE *fp;
  int fd, n;

  fp = fopen ("/proc/self/mountinfo", "re");
  if (fp == NULL)
    return;
  /* "ID PARENT MAJ:MIN ROOT MOUNTPOINT ... - fuse...": the last on ROOT. */
  while (fgets (line, sizeof line, fp))
    if (sscanf (line, "%*u %*u %u:%u %*s %4095s", &maj, &min, mp) == 3
        && strcmp (mp, root) == 0 && strstr (line, " - fuse") != NULL) {
      dev_maj = maj;
      dev_min = min;
      found = true;
    }
  fclose (fp);
  if (!found)
    return;
  snprintf (path, sizeof path, "/sys/class/bdi/%u:%u/read_ahead_kb",
            dev_maj, dev_min);
  fd = open (path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    log_debug ("mount: %s: %s (readahead stays the kernel's)", path,
               strerror (errno));
    return;
  }
  n = snprintf (val, sizeof val, "%u", MAX_RA >> 10);
  if (write (fd, val, (size_t) n) != n)
    log_debug ("mount: %s: %s", path, strerror (errno));
  close (fd);
}

static const struct fuse_operations ops = {
  .init = op_init,
  .getattr = op_getattr,
  .readdir = op_readdir,
  .readlink = op_readlink,
  .open = op_open,
  .read = op_read,
  .lseek = op_lseek,
  .release = op_release,
};

int
vbkfs_mount (struct vbkfs *fs, const char *dir,
             const struct vbkfs_mount_opts *o)
{
  struct fuse_args args = FUSE_ARGS_INIT (0, NULL);
  struct fuse_loop_config cfg = { .clone_fd = 0, .max_idle_threads = 16 };
  struct poller poll = { .fs = fs, .lock = PTHREAD_MUTEX_INITIALIZER,
                         .cond = PTHREAD_COND_INITIALIZER };
  struct fuse *f = NULL;
  char fsname[300], root[PATH_MAX];
  int r;

  snprintf (fsname, sizeof fsname, "-ofsname=vbk,subtype=vbk,ro%s%s",
            o->allow_other ? ",allow_other,default_permissions" : "",
            o->debug ? ",debug" : "");
  if (fuse_opt_add_arg (&args, "vbk") < 0
      || fuse_opt_add_arg (&args, fsname) < 0) {
    r = -ENOMEM;
    goto out;
  }
  /* Before the mount: resolving the path afterwards would ask the file
   * system itself, which does not serve yet. */
  if (realpath (dir, root) == NULL)
    root[0] = '\0';
  f = fuse_new (&args, &ops, sizeof ops, fs);
  if (f == NULL) {
    r = vbk_errno (-EINVAL, "mount: cannot set up FUSE");
    goto out;
  }
  if (fuse_mount (f, dir) != 0) {
    r = vbk_errno (-EIO, "mount: %s: the FUSE mount failed (see the "
                   "message above)", dir);
    fuse_destroy (f);
    f = NULL;
    goto out;
  }
  if (fuse_set_signal_handlers (fuse_get_session (f)) != 0) {
    r = vbk_errno (-EIO, "mount: cannot install signal handlers");
    if (o->ready)
      o->ready (o->arg, r);
    goto out_unmount;
  }
  if (root[0])
    raise_readahead (root);
  if (o->ready)
    o->ready (o->arg, 0);
  poll.f = f;
  if (pthread_create (&poll.thread, NULL, poll_main, &poll) == 0)
    poll.started = true;
  /* A positive result is the signal that ended the loop: a normal end. */
  r = fuse_loop_mt (f, &cfg);
  r = r < 0 ? -EIO : 0;
  poll_stop (&poll);
  fuse_remove_signal_handlers (fuse_get_session (f));

 out_unmount:
  fuse_unmount (f);
  fuse_destroy (f);
  fuse_opt_free_args (&args);
  return r;

 out:
  fuse_opt_free_args (&args);
  if (o->ready)
    o->ready (o->arg, r);
  return r;
}
