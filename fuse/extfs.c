/* SPDX-License-Identifier: MIT
 *
 * extfs.c - the files of an ext2/3/4 file system inside a disk, read
 * in-process with libext2fs.
 *
 * DESIGN: libext2fs reads through an io_manager; ours ("vbkfs") reads
 * blocks of a range of a vbkfs disk, so the bytes come from the chunk
 * cache and holes cost nothing: no loop device, no kernel mount, no
 * helper VM.  The file system is opened read-only and the journal is not
 * replayed: what we show is what the blocks say (a snapshot of a running
 * guest is crash-consistent, so recently written files may be older or
 * missing, as after a power cut before recovery).  libext2fs is not
 * thread-safe: one mutex per file system serialises every call into it.
 * The io_manager's open() receives the range through its name
 * ("vbkfs:ADDRESS"), the usual way to pass a handle through that API.
 *
 * Lookups are cached: the file system never changes while it is open,
 * so a path once resolved keeps its inode and attributes.  The cache (a
 * hash table of paths, under the same mutex) resolves a path one
 * component at a time from its longest cached parent, so a lookup in a
 * big tree scans one directory, not every directory from the root as
 * ext2fs_namei does; a listing with attributes (readdirplus) fills it
 * for every entry.  Paths through a symlink are left to ext2fs_namei
 * (not cached).  The cache is bounded (EXT_CACHE_MAX entries): past
 * that, lookups still work, uncached.
 *
 * File data: an extent-mapped file (ext4) has its extent tree read once,
 * at open, into a sorted array; a read then maps its range to runs of
 * disk blocks by itself and reads each run straight from the disk, not
 * holding the mutex and not block by block through libext2fs: a big
 * sequential read is a few large disk reads, and reads of several files
 * (or the kernel's parallel readahead of one) proceed at once.  Holes and
 * unwritten extents read as zeros, as libext2fs reads them.  Other files
 * (block-mapped ext2/3, inline data) are read through ext2fs_file_read.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ext2fs/ext2fs.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "internal.h"

#define EXT_CACHE_MAX 100000     /* about 20 MiB: 200 bytes each */

/* A resolved path (relative to the root, no leading '/'). */
struct dent {
  struct dent *next;
  uint64_t hash;
  ext2_ino_t ino;
  bool have_stat;
  struct stat st;
  char path[];
};

struct vbkfs_extfs {
  struct vbkfs_disk *d;
  uint64_t off, len;
  ext2_filsys fs;
  pthread_mutex_t lock;
  /* the lookup cache (under lock) */
  struct dent **buckets;
  size_t nbuckets, nents;
};

/* One extent of a file: logical blocks [lblk, lblk+len) at physical
 * block pblk; unwritten ones read as zeros. */
struct fext {
  uint64_t lblk, pblk;
  uint32_t len;
  bool unwritten;
};

struct vbkfs_extfile {
  struct vbkfs_extfs *e;
  ext2_file_t file;
  ext2_ino_t ino;
  uint64_t size;
  struct fext *ext;             /* sorted; NULL: through ext2fs_file_read */
  size_t next;
};

/* ---- The io_manager --------------------------------------------------- */

static struct struct_io_manager vbkfs_io_manager;

static errcode_t
xio_open (const char *name, int flags, io_channel *channel)
{
  struct vbkfs_extfs *e = NULL;
  io_channel io;

  if (name == NULL || sscanf (name, "vbkfs:%p", (void **) &e) != 1
      || e == NULL)
    return EXT2_ET_BAD_DEVICE_NAME;
  if (flags & IO_FLAG_RW)
    return EROFS;
  io = calloc (1, sizeof *io);
  if (io == NULL)
    return ENOMEM;
  io->magic = EXT2_ET_MAGIC_IO_CHANNEL;
  io->manager = &vbkfs_io_manager;
  io->name = strdup (name);
  if (io->name == NULL) {
    free (io);
    return ENOMEM;
  }
  io->block_size = 1024;
  io->refcount = 1;
  io->private_data = e;
  *channel = io;
  return 0;
}

static errcode_t
xio_close (io_channel io)
{
  if (--io->refcount > 0)
    return 0;
  free (io->name);
  free (io);
  return 0;
}

static errcode_t
xio_set_blksize (io_channel io, int blksize)
{
  io->block_size = blksize;
  return 0;
}

static errcode_t
xio_read_blk64 (io_channel io, unsigned long long block, int count,
                void *data)
{
  struct vbkfs_extfs *e = io->private_data;
  uint64_t len = count < 0 ? (uint64_t) -count
    : (uint64_t) count * io->block_size;
  uint64_t off = block * io->block_size;
  uint64_t have;
  ssize_t r;

  if (off >= e->len) {
    memset (data, 0, len);
    return EXT2_ET_SHORT_READ;
  }
  have = MIN (len, e->len - off);
  r = vbkfs_disk_pread (e->d, data, have, e->off + off);
  if (r < 0)
    return EIO;
  if ((uint64_t) r < len) {
    memset ((char *) data + r, 0, len - r);
    return EXT2_ET_SHORT_READ;
  }
  return 0;
}

static errcode_t
xio_read_blk (io_channel io, unsigned long block, int count, void *data)
{
  return xio_read_blk64 (io, block, count, data);
}

static errcode_t
xio_write_blk (io_channel io, unsigned long block, int count,
               const void *data)
{
  return EROFS;
}

static errcode_t
xio_write_blk64 (io_channel io, unsigned long long block, int count,
                 const void *data)
{
  return EROFS;
}

static errcode_t
xio_flush (io_channel io)
{
  return 0;
}

static errcode_t
xio_set_option (io_channel io, const char *option, const char *arg)
{
  return EXT2_ET_INVALID_ARGUMENT;
}

static struct struct_io_manager vbkfs_io_manager = {
  .magic = EXT2_ET_MAGIC_IO_MANAGER,
  .name = "vbkfs I/O manager",
  .open = xio_open,
  .close = xio_close,
  .set_blksize = xio_set_blksize,
  .read_blk = xio_read_blk,
  .write_blk = xio_write_blk,
  .flush = xio_flush,
  .set_option = xio_set_option,
  .read_blk64 = xio_read_blk64,
  .write_blk64 = xio_write_blk64,
};

/* ---- Errors ----------------------------------------------------------- */

/* libext2fs returns errno values or its own codes (> 255). */
static int
ext_errno (errcode_t err)
{
  if (err == 0)
    return 0;
  if (err == EXT2_ET_FILE_NOT_FOUND)
    return -ENOENT;
  if (err == EXT2_ET_NO_DIRECTORY)
    return -ENOTDIR;
  if (err == EXT2_ET_RO_FILSYS)
    return -EROFS;
  if (err > 0 && err < 256)
    return -(int) err;
  return -EIO;
}

/* ---- Open ------------------------------------------------------------- */

int
vbkfs_extfs_open (struct vbkfs_disk *d, uint64_t off, uint64_t len,
                  struct vbkfs_extfs **out)
{
  struct vbkfs_extfs *e;
  char name[64];
  errcode_t err;

  e = calloc (1, sizeof *e);
  if (e == NULL)
    return -ENOMEM;
  e->d = d;
  e->off = off;
  e->len = len;
  pthread_mutex_init (&e->lock, NULL);
  snprintf (name, sizeof name, "vbkfs:%p", (void *) e);
  err = ext2fs_open2 (name, NULL, EXT2_FLAG_64BITS | EXT2_FLAG_SKIP_MMP
                      | EXT2_FLAG_IGNORE_CSUM_ERRORS, 0, 0,
                      &vbkfs_io_manager, &e->fs);
  if (err) {
    int r = ext_errno (err);

    pthread_mutex_destroy (&e->lock);
    free (e);
    if (r == -EIO && err != EIO)
      r = -EINVAL;              /* not a file system we can read */
    return vbk_errno (r, "vbkfs: %s: ext2/3/4 at %llu: %s",
                      vbkfs_disk_name (d), (unsigned long long) off,
                      error_message (err));
  }
  *out = e;
  return 0;
}

void
vbkfs_extfs_close (struct vbkfs_extfs *e)
{
  size_t i;

  if (e == NULL)
    return;
  for (i = 0; i < e->nbuckets; i++)
    while (e->buckets[i]) {
      struct dent *d = e->buckets[i];

      e->buckets[i] = d->next;
      free (d);
    }
  free (e->buckets);
  ext2fs_close_free (&e->fs);
  pthread_mutex_destroy (&e->lock);
  free (e);
}

/* ---- Lookups ---------------------------------------------------------- */

/* FNV-1a of the first LEN bytes of S. */
static uint64_t
path_hash (const char *s, size_t len)
{
  uint64_t h = UINT64_C (14695981039346656037);
  size_t i;

  for (i = 0; i < len; i++) {
    h ^= (unsigned char) s[i];
    h *= UINT64_C (1099511628211);
  }
  return h;
}

static struct dent *
cache_find (struct vbkfs_extfs *e, const char *path, size_t len)
{
  uint64_t h = path_hash (path, len);
  struct dent *d;

  if (e->nbuckets == 0)
    return NULL;
  for (d = e->buckets[h % e->nbuckets]; d; d = d->next)
    if (d->hash == h && strncmp (d->path, path, len) == 0
        && d->path[len] == '\0')
      return d;
  return NULL;
}

/* Adds PATH (LEN bytes) -> INO; returns the entry, or NULL when the
 * cache is full or memory is short (the caller goes on uncached). */
static struct dent *
cache_add (struct vbkfs_extfs *e, const char *path, size_t len,
           ext2_ino_t ino)
{
  uint64_t h = path_hash (path, len);
  struct dent *d;
  size_t i;

  if ((d = cache_find (e, path, len)) != NULL)
    return d;
  if (e->nents >= EXT_CACHE_MAX)
    return NULL;
  if (e->nents >= e->nbuckets) {
    /* Grow to twice the entries: chains stay short. */
    size_t nb = e->nbuckets ? e->nbuckets * 2 : 1024;
    struct dent **b = calloc (nb, sizeof *b);

    if (b == NULL)
      return NULL;
    for (i = 0; i < e->nbuckets; i++)
      while (e->buckets[i]) {
        d = e->buckets[i];
        e->buckets[i] = d->next;
        d->next = b[d->hash % nb];
        b[d->hash % nb] = d;
      }
    free (e->buckets);
    e->buckets = b;
    e->nbuckets = nb;
  }
  d = malloc (sizeof *d + len + 1);
  if (d == NULL)
    return NULL;
  d->hash = h;
  d->ino = ino;
  d->have_stat = false;
  memcpy (d->path, path, len);
  d->path[len] = '\0';
  d->next = e->buckets[h % e->nbuckets];
  e->buckets[h % e->nbuckets] = d;
  e->nents++;
  return d;
}

/* Resolves the first LEN bytes of PATH (no leading or trailing '/'),
 * from its longest cached parent.  *DP: its cache entry, or NULL. */
static int
lookup_len (struct vbkfs_extfs *e, const char *path, size_t len,
            ext2_ino_t *ino, struct dent **dp)
{
  const char *slash;
  ext2_ino_t dir;
  struct dent *d;
  errcode_t err;
  size_t plen;
  int r;

  *dp = NULL;
  if (len == 0) {
    *ino = EXT2_ROOT_INO;
    return 0;
  }
  if ((d = cache_find (e, path, len)) != NULL) {
    *ino = d->ino;
    *dp = d;
    return 0;
  }
  slash = memrchr (path, '/', len);
  plen = slash ? (size_t) (slash - path) : 0;
  r = lookup_len (e, path, plen, &dir, &d);
  if (r < 0)
    return r;
  {
    const char *name = slash ? slash + 1 : path;

    err = ext2fs_lookup (e->fs, dir, name, (int) (path + len - name), NULL,
                         ino);
  }
  if (err == EXT2_ET_NO_DIRECTORY) {
    /* Maybe a symlink to a directory on the way: namei follows it. */
    char *copy = strndup (path, len);

    if (copy == NULL)
      return -ENOMEM;
    err = ext2fs_namei (e->fs, EXT2_ROOT_INO, EXT2_ROOT_INO, copy, ino);
    free (copy);
    return ext_errno (err);
  }
  if (err)
    return ext_errno (err);
  *dp = cache_add (e, path, len, *ino);
  return 0;
}

static int
lookup_unlocked (struct vbkfs_extfs *e, const char *path, ext2_ino_t *ino,
                 struct dent **dp)
{
  size_t len;

  while (*path == '/')
    path++;
  len = strlen (path);
  while (len > 0 && path[len - 1] == '/')
    len--;
  /* "a//b": a component at a time would see an empty name. */
  if (memmem (path, len, "//", 2) != NULL) {
    char *copy = strndup (path, len);
    errcode_t err;

    *dp = NULL;
    if (copy == NULL)
      return -ENOMEM;
    err = ext2fs_namei (e->fs, EXT2_ROOT_INO, EXT2_ROOT_INO, copy, ino);
    free (copy);
    return ext_errno (err);
  }
  return lookup_len (e, path, len, ino, dp);
}

static int
read_inode_unlocked (struct vbkfs_extfs *e, ext2_ino_t ino,
                     struct ext2_inode_large *inode)
{
  errcode_t err;

  memset (inode, 0, sizeof *inode);
  err = ext2fs_read_inode_full (e->fs, ino, (struct ext2_inode *) inode,
                                sizeof *inode);
  return ext_errno (err);
}

/* Seconds and nanoseconds of an ext4 time with its "extra" word: two
 * epoch bits and 30 bits of nanoseconds (ext4 on-disk format). */
static void
ext_time (struct ext2_inode_large *inode, uint32_t t, uint32_t extra,
          int has_extra, struct timespec *ts)
{
  ts->tv_sec = (int32_t) t;
  ts->tv_nsec = 0;
  if (has_extra) {
    ts->tv_sec += (int64_t) (extra & 3) << 32;
    ts->tv_nsec = extra >> 2;
  }
}

static void
fill_stat (struct vbkfs_extfs *e, ext2_ino_t ino,
           struct ext2_inode_large *inode, struct stat *st)
{
  int extra = EXT2_INODE_SIZE (e->fs->super) > EXT2_GOOD_OLD_INODE_SIZE
    && inode->i_extra_isize >= 24;

  memset (st, 0, sizeof *st);
  st->st_ino = ino;
  st->st_mode = inode->i_mode;
  st->st_nlink = inode->i_links_count;
  st->st_uid = inode_uid (*inode);
  st->st_gid = inode_gid (*inode);
  st->st_size = EXT2_I_SIZE (inode);
  st->st_blksize = e->fs->blocksize;
  st->st_blocks = ext2fs_get_stat_i_blocks (e->fs, (struct ext2_inode *) inode);
  ext_time (inode, inode->i_mtime, inode->i_mtime_extra, extra,
            &st->st_mtim);
  ext_time (inode, inode->i_ctime, inode->i_ctime_extra, extra,
            &st->st_ctim);
  ext_time (inode, inode->i_atime, inode->i_atime_extra, extra,
            &st->st_atim);
}

int
vbkfs_extfs_getattr (struct vbkfs_extfs *e, const char *path,
                     struct stat *st)
{
  struct ext2_inode_large inode;
  ext2_ino_t ino;
  int r;

  struct dent *d;

  pthread_mutex_lock (&e->lock);
  r = lookup_unlocked (e, path, &ino, &d);
  if (r == 0 && d && d->have_stat) {
    *st = d->st;
    goto out;
  }
  if (r == 0)
    r = read_inode_unlocked (e, ino, &inode);
  if (r == 0) {
    fill_stat (e, ino, &inode, st);
    if (d) {
      d->st = *st;
      d->have_stat = true;
    }
  }
 out:
  pthread_mutex_unlock (&e->lock);
  return r;
}

struct dir_ctx {
  vbkfs_fill_cb fill;
  void *arg;
  int stop;
  /* with attributes: each entry's inode is read and cached as
   * DIR/NAME */
  struct vbkfs_extfs *e;
  bool plus;
  char *dir;                    /* DIR followed by '/', or "" */
  size_t dirlen;
};

static int
dir_one (ext2_ino_t dir, int entry, struct ext2_dir_entry *dirent,
         int offset, int blocksize, char *buf, void *priv)
{
  struct dir_ctx *c = priv;
  int len = ext2fs_dirent_name_len (dirent);
  char name[EXT2_NAME_LEN + 1];
  struct stat st;

  memcpy (name, dirent->name, len);
  name[len] = '\0';
  if (strcmp (name, ".") == 0 || strcmp (name, "..") == 0)
    return 0;
  memset (&st, 0, sizeof st);
  st.st_ino = dirent->inode;
  switch (ext2fs_dirent_file_type (dirent)) {
  case EXT2_FT_DIR: st.st_mode = S_IFDIR; break;
  case EXT2_FT_SYMLINK: st.st_mode = S_IFLNK; break;
  case EXT2_FT_CHRDEV: st.st_mode = S_IFCHR; break;
  case EXT2_FT_BLKDEV: st.st_mode = S_IFBLK; break;
  case EXT2_FT_FIFO: st.st_mode = S_IFIFO; break;
  case EXT2_FT_SOCK: st.st_mode = S_IFSOCK; break;
  default: st.st_mode = S_IFREG; break;
  }
  if (c->plus) {
    struct ext2_inode_large inode;
    struct dent *d;
    char *full = malloc (c->dirlen + len + 1);

    /* From the cache, else from the inode (and then cached); without
     * either the entry goes out with its type only. */
    if (full != NULL) {
      memcpy (full, c->dir, c->dirlen);
      memcpy (full + c->dirlen, name, len + 1);
      d = cache_find (c->e, full, c->dirlen + len);
      if (d && d->have_stat)
        st = d->st;
      else if (read_inode_unlocked (c->e, dirent->inode, &inode) == 0) {
        fill_stat (c->e, dirent->inode, &inode, &st);
        d = cache_add (c->e, full, c->dirlen + len, dirent->inode);
        if (d) {
          d->st = st;
          d->have_stat = true;
        }
      }
      free (full);
    }
  }
  if (c->fill (c->arg, name, &st)) {
    c->stop = 1;
    return DIRENT_ABORT;
  }
  return 0;
}

int
vbkfs_extfs_readdir (struct vbkfs_extfs *e, const char *path, bool plus,
                     vbkfs_fill_cb fill, void *arg)
{
  struct dir_ctx c = { fill, arg, 0, e, plus, NULL, 0 };
  struct dent *d;
  ext2_ino_t ino;
  errcode_t err;
  size_t len;
  int r;

  if (plus) {
    /* The cache's form of PATH: no leading or trailing '/'. */
    while (*path == '/')
      path++;
    len = strlen (path);
    while (len > 0 && path[len - 1] == '/')
      len--;
    c.dir = malloc (len + 2);
    if (c.dir == NULL)
      return -ENOMEM;
    memcpy (c.dir, path, len);
    if (len > 0)
      c.dir[len++] = '/';
    c.dir[len] = '\0';
    c.dirlen = len;
  }
  pthread_mutex_lock (&e->lock);
  r = lookup_unlocked (e, path, &ino, &d);
  if (r == 0) {
    err = ext2fs_dir_iterate2 (e->fs, ino, 0, NULL, dir_one, &c);
    r = ext_errno (err);
  }
  pthread_mutex_unlock (&e->lock);
  free (c.dir);
  return r;
}

int
vbkfs_extfs_readlink (struct vbkfs_extfs *e, const char *path, char *buf,
                      size_t len)
{
  struct ext2_inode_large inode;
  uint64_t size;
  ext2_file_t file;
  ext2_ino_t ino;
  struct dent *d;
  unsigned got;
  errcode_t err;
  int r;

  if (len == 0)
    return -EINVAL;
  pthread_mutex_lock (&e->lock);
  r = lookup_unlocked (e, path, &ino, &d);
  if (r == 0)
    r = read_inode_unlocked (e, ino, &inode);
  if (r == 0 && !LINUX_S_ISLNK (inode.i_mode))
    r = -EINVAL;
  if (r < 0)
    goto out;
  size = EXT2_I_SIZE (&inode);
  if (size >= len)
    size = len - 1;
  if (inode.i_flags & EXT4_INLINE_DATA_FL) {
    char *tmp = malloc (EXT2_I_SIZE (&inode) + 1);
    size_t n = 0;

    if (tmp == NULL) {
      r = -ENOMEM;
      goto out;
    }
    err = ext2fs_inline_data_get (e->fs, ino, (struct ext2_inode *) &inode,
                                  tmp, &n);
    if (err == 0)
      memcpy (buf, tmp, MIN (size, n));
    free (tmp);
    r = ext_errno (err);
  }
  else if (ext2fs_is_fast_symlink ((struct ext2_inode *) &inode))
    memcpy (buf, (char *) inode.i_block, MIN (size, sizeof inode.i_block));
  else {
    err = ext2fs_file_open2 (e->fs, ino, (struct ext2_inode *) &inode, 0,
                             &file);
    if (err == 0) {
      err = ext2fs_file_read (file, buf, (unsigned) size, &got);
      ext2fs_file_close (file);
      if (err == 0 && got != size)
        err = EXT2_ET_SHORT_READ;
    }
    r = ext_errno (err);
  }
  buf[size] = '\0';
 out:
  pthread_mutex_unlock (&e->lock);
  return r;
}

/* ---- Files ------------------------------------------------------------ */

/* Reads the extent tree of INO into F->ext (under e->lock).  Leaves
 * F->ext NULL when the file is not extent-mapped or the tree cannot be
 * read (ext2fs_file_read then reads it, and reports what is wrong). */
static void
load_extents_unlocked (struct vbkfs_extfs *e, struct vbkfs_extfile *f,
                       struct ext2_inode_large *inode)
{
  ext2_extent_handle_t h;
  struct ext2fs_extent x;
  struct fext *a = NULL, *na;
  size_t n = 0, cap = 0;
  errcode_t err;

  if (!(inode->i_flags & EXT4_EXTENTS_FL)
      || (inode->i_flags & EXT4_INLINE_DATA_FL))
    return;
  if (ext2fs_extent_open2 (e->fs, f->ino, (struct ext2_inode *) inode, &h))
    return;
  /* EXT2_EXTENT_NEXT visits every node of the tree in order; the leaves
   * hold the extents, in logical order. */
  for (err = ext2fs_extent_get (h, EXT2_EXTENT_ROOT, &x); err == 0;
       err = ext2fs_extent_get (h, EXT2_EXTENT_NEXT, &x)) {
    if (!(x.e_flags & EXT2_EXTENT_FLAGS_LEAF)
        || (x.e_flags & EXT2_EXTENT_FLAGS_SECOND_VISIT) || x.e_len == 0)
      continue;
    if (n && x.e_lblk < a[n - 1].lblk + a[n - 1].len)
      goto fail;                /* out of order: not ours to judge */
    if (n == cap) {
      cap = cap ? 2 * cap : 16;
      if ((na = realloc (a, cap * sizeof *a)) == NULL)
        goto fail;
      a = na;
    }
    a[n++] = (struct fext) { x.e_lblk, x.e_pblk, x.e_len,
                             (x.e_flags & EXT2_EXTENT_FLAGS_UNINIT) != 0 };
  }
  if (err != EXT2_ET_EXTENT_NO_NEXT)
    goto fail;
  ext2fs_extent_free (h);
  if (a == NULL)
    a = malloc (sizeof *a);     /* no extents: all holes */
  f->ext = a;
  f->next = n;
  return;

 fail:
  ext2fs_extent_free (h);
  free (a);
}

/* Index of the first extent of F that ends after logical block B. */
static size_t
fext_after (const struct vbkfs_extfile *f, uint64_t b)
{
  size_t lo = 0, hi = f->next;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;

    if (f->ext[mid].lblk + f->ext[mid].len <= b)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* Reads [OFF, OFF+LEN) of F (within its size) through its extents. */
static ssize_t
fread_extents (struct vbkfs_extfile *f, char *buf, size_t len, uint64_t off)
{
  struct vbkfs_extfs *e = f->e;
  uint64_t bs = e->fs->blocksize, pos = off, end = off + len;
  size_t i = fext_after (f, off / bs);
  ssize_t r;

  while (pos < end) {
    const struct fext *x = i < f->next ? &f->ext[i] : NULL;
    uint64_t xs = x ? x->lblk * bs : end, xe, n, phys;

    if (pos < xs) {             /* a hole before the next extent */
      n = MIN (end, xs) - pos;
      memset (buf + (pos - off), 0, n);
      pos += n;
      continue;
    }
    xe = (x->lblk + x->len) * bs;
    n = MIN (end, xe) - pos;
    if (x->unwritten)
      memset (buf + (pos - off), 0, n);
    else {
      phys = x->pblk * bs + (pos - xs);
      if (phys + n > e->len || phys + n < phys)
        return vbk_errno (-EIO, "vbkfs: %s: inode %u: extent past the end "
                          "of the file system", vbkfs_disk_name (e->d),
                          (unsigned) f->ino);
      r = vbkfs_disk_pread (e->d, buf + (pos - off), n, e->off + phys);
      if (r < 0)
        return r;
      if ((uint64_t) r != n)
        return vbk_errno (-EIO, "vbkfs: %s: inode %u: short read",
                          vbkfs_disk_name (e->d), (unsigned) f->ino);
    }
    pos += n;
    i++;
  }
  return (ssize_t) len;
}

int
vbkfs_extfs_fopen (struct vbkfs_extfs *e, const char *path,
                   struct vbkfs_extfile **out)
{
  struct ext2_inode_large inode;
  struct vbkfs_extfile *f;
  struct dent *d;
  ext2_ino_t ino;
  errcode_t err;
  int r;

  f = calloc (1, sizeof *f);
  if (f == NULL)
    return -ENOMEM;
  pthread_mutex_lock (&e->lock);
  r = lookup_unlocked (e, path, &ino, &d);
  if (r == 0)
    r = read_inode_unlocked (e, ino, &inode);
  if (r == 0 && LINUX_S_ISDIR (inode.i_mode))
    r = -EISDIR;
  else if (r == 0 && !LINUX_S_ISREG (inode.i_mode))
    r = -EINVAL;
  if (r == 0) {
    err = ext2fs_file_open2 (e->fs, ino, (struct ext2_inode *) &inode, 0,
                             &f->file);
    r = ext_errno (err);
  }
  if (r == 0) {
    f->ino = ino;
    load_extents_unlocked (e, f, &inode);
  }
  pthread_mutex_unlock (&e->lock);
  if (r < 0) {
    free (f);
    return r;
  }
  f->e = e;
  f->ino = ino;
  f->size = EXT2_I_SIZE (&inode);
  *out = f;
  return 0;
}

void
vbkfs_extfs_fclose (struct vbkfs_extfile *f)
{
  if (f == NULL)
    return;
  pthread_mutex_lock (&f->e->lock);
  ext2fs_file_close (f->file);
  pthread_mutex_unlock (&f->e->lock);
  free (f->ext);
  free (f);
}

uint64_t
vbkfs_extfs_fsize (struct vbkfs_extfile *f)
{
  return f->size;
}

ssize_t
vbkfs_extfs_fread (struct vbkfs_extfile *f, void *buf, size_t len,
                   uint64_t off)
{
  size_t done = 0;
  unsigned got;
  errcode_t err = 0;

  if (off >= f->size)
    return 0;
  len = MIN (len, f->size - off);
  if (f->ext) {
    ssize_t r = fread_extents (f, buf, len, off);

    if (r >= 0)
      return r;
    log_error ("vbkfs: %s: reading inode %u at %llu failed: %s",
               vbkfs_disk_name (f->e->d), (unsigned) f->ino,
               (unsigned long long) off,
               vbk_error ()[0] ? vbk_error () : strerror ((int) -r));
    return vbk_errno (r == -ENOMEM ? -ENOMEM : -EIO, "vbkfs: %s: inode %u",
                      vbkfs_disk_name (f->e->d), (unsigned) f->ino);
  }
  pthread_mutex_lock (&f->e->lock);
  err = ext2fs_file_llseek (f->file, off, EXT2_SEEK_SET, NULL);
  while (err == 0 && done < len) {
    unsigned want = (unsigned) MIN (len - done, 1u << 30);

    err = ext2fs_file_read (f->file, (char *) buf + done, want, &got);
    if (err == 0 && got == 0)
      break;
    done += got;
  }
  pthread_mutex_unlock (&f->e->lock);
  if (err) {
    log_error ("vbkfs: %s: reading inode %u at %llu failed: %s",
               vbkfs_disk_name (f->e->d), (unsigned) f->ino,
               (unsigned long long) off, error_message (err));
    return vbk_errno (ext_errno (err), "vbkfs: %s: inode %u",
                      vbkfs_disk_name (f->e->d), (unsigned) f->ino);
  }
  return (ssize_t) done;
}
