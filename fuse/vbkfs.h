/* SPDX-License-Identifier: MIT
 *
 * vbkfs.h - a read-only file tree of images' snapshots and backups, and
 * of the files inside them, with or without FUSE.
 *
 * DESIGN: the tree is served by path, like a high-level FUSE file system:
 *   /images/NAME/snapshots/SNAP/{disk,info.json,parts/pN,files/...}
 *   /backups/NAME/TIME/{disk,info.json,parts/pN,files/...}  (+ latest)
 * A disk is a "source" (a table of operations: size, pread, extents,
 * check, close), opened on first use and kept until vbkfs_free; a chunk
 * cache with readahead sits between the source and readers.  files/ is
 * the ext2/3/4 file system of the disk (or files/pN/ of each partition)
 * read in-process with libext2fs.  Listing the images and snapshots reads
 * metadata only.  fuse/mount.c puts the tree behind FUSE; "vbk files"
 * uses it directly.
 *
 * Errors: 0 or -errno, as FUSE wants them.  An I/O failure of the store
 * or repository is -EIO on the file that needs it, logged once with the
 * object or chunk that failed.  -ENOENT for a path that does not exist,
 * -ENOTDIR, -EISDIR, -EINVAL as the system calls would.
 *
 * Thread safety: every function may be called from many threads.
 */
#ifndef VBK_VBKFS_H
#define VBK_VBKFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "backup/backup.h"
#include "store/store.h"

struct vbkfs;
struct vbkfs_file;

struct vbkfs_opts {
  struct store *store;        /* images (borrowed; outlives the vbkfs) */
  const char *repo_uri;       /* backup repository, or NULL */
  const struct backup_key_opts *repo_key; /* its key if encrypted, or NULL */
  uint64_t cache_bytes;       /* per disk; 0: 64 MiB */
  /* Hand a backup's data out once its chunks' CRC-32 (encrypted: GCM
   * tag) is checked, and check their SHA-256 right after, once per chunk
   * (vbk mount: see README); false: every check before (vbk files). */
  bool check_later;
};

/* Creates the tree.  Opens the backup repository when REPO_URI is set.
 * Caller frees with vbkfs_free.  Errors: those of backup_repo_open. */
int vbkfs_new (const struct vbkfs_opts *o, struct vbkfs **out);
void vbkfs_free (struct vbkfs *fs);

int vbkfs_getattr (struct vbkfs *fs, const char *path, struct stat *st);

/* Calls FILL for each entry of directory PATH (not "." and ".."); a
 * non-zero return from FILL stops the listing.  ST may be NULL. */
typedef int (*vbkfs_fill_cb) (void *arg, const char *name,
                              const struct stat *st);
int vbkfs_readdir (struct vbkfs *fs, const char *path, vbkfs_fill_cb fill,
                   void *arg);
/* The same, and ST complete (as vbkfs_getattr gives it) for the entries
 * of a directory inside a disk's file system; those have st_nlink > 0,
 * the others (ST with the type only) st_nlink 0.  For readdirplus. */
int vbkfs_readdir_plus (struct vbkfs *fs, const char *path,
                        vbkfs_fill_cb fill, void *arg);

/* The target of symlink PATH into BUF (NUL-terminated, cut to LEN-1). */
int vbkfs_readlink (struct vbkfs *fs, const char *path, char *buf,
                    size_t len);

/* Opens regular file PATH for reading.  Free with vbkfs_release. */
int vbkfs_open (struct vbkfs *fs, const char *path, struct vbkfs_file **out);
void vbkfs_release (struct vbkfs_file *f);

/* Returns the bytes read (short only at the end of the file), or -errno. */
ssize_t vbkfs_read (struct vbkfs_file *f, void *buf, size_t len,
                    uint64_t off);

/* SEEK_DATA / SEEK_HOLE (and SEEK_SET, SEEK_END): the new offset, or
 * -ENXIO past the end, as lseek(2). */
int64_t vbkfs_lseek (struct vbkfs_file *f, int64_t off, int whence);

/* For a cache of symlinks: lists again the backups of each image whose
 * backups/NAME/latest was read, and calls CHANGED with the path of each
 * "latest" that now points elsewhere ("/backups/NAME/latest").  Slow
 * (reads the manifests): call it from a thread of its own. */
typedef void (*vbkfs_changed_cb) (void *arg, const char *path);
void vbkfs_poll_latest (struct vbkfs *fs, vbkfs_changed_cb changed,
                        void *arg);

/* Drops the pin of each backup whose disk was opened by a lookup or a
 * listing and has had no open file for a second or more (a backup only
 * listed would else keep gc from collecting it until the unmount).
 * Cheap; call it about once a second, from a thread of its own. */
void vbkfs_unpin_idle (struct vbkfs *fs);

/* ---- mount.c: the tree behind FUSE ------------------------------------ */

struct vbkfs_mount_opts {
  bool allow_other;           /* other users too (needs user_allow_other
                                 in /etc/fuse.conf unless root) */
  bool debug;                 /* libfuse's request trace on stderr */
  /* Called once: with 0 when the mount is ready, or with -errno when it
   * failed before that. */
  void (*ready) (void *arg, int err);
  void *arg;
};

/* Mounts FS read-only on DIR and serves it until it is unmounted
 * (fusermount3 -u, umount) or the process gets SIGINT, SIGTERM or
 * SIGHUP.  Returns 0, or -errno with a message. */
int vbkfs_mount (struct vbkfs *fs, const char *dir,
                 const struct vbkfs_mount_opts *o);

#endif /* VBK_VBKFS_H */
