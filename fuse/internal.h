/* SPDX-License-Identifier: MIT
 *
 * internal.h - shared by the files of fuse/, grouped by file.
 *
 * DESIGN: layers inside fuse/, each using only those below it:
 *   mount.c (FUSE glue, the only user of fuse3)      tree.c (paths)
 *   extfs.c (libext2fs)   parts.c (libblkid)
 *   disk.c (chunk cache, readahead, allocation map)
 *   source.c (snapshots), source-backup.c (backups): struct vbkfs_source
 */
#ifndef VBK_FUSE_INTERNAL_H
#define VBK_FUSE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "image/image.h"
#include "store/store.h"
#include "vbkfs.h"

/* ---- source.c ---------------------------------------------------------- */

/* A read-only disk: a snapshot of an image, or a backup.  Every member
 * may be called from many threads at once. */
struct vbkfs_source_ops {
  const char *kind;             /* "snapshot", "backup" */
  /* Size in bytes. */
  uint64_t (*size) (void *h);
  /* Reads LEN bytes at OFF (within the size).  Returns LEN or -errno
   * with vbk_error() naming the object or chunk that failed. */
  ssize_t (*pread) (void *h, void *buf, size_t len, uint64_t off);
  /* The allocation map, as image_extents. */
  int (*extents) (void *h, uint64_t off, uint64_t len, image_extent_cb cb,
                  void *arg);
  /* 0 if data pread returned before this call is right: the source
   * still exists as it was opened (a snapshot under removal may already
   * read other data).  -EIO (with a message) once it is gone. */
  int (*check) (void *h);
  void (*close) (void *h);
  /* Optional: the unit the source reads in (a backup's chunk size);
   * the disk caches pieces of that size.  NULL: none. */
  uint32_t (*chunk_size) (void *h);
  /* Optional: drops what the source holds in the store on behalf of its
   * readers (a backup's reader record: it keeps gc from collecting the
   * backup) while no file of it is open, and takes it back before one is
   * opened again: 0, or -errno with a message (-ENOENT: the source is
   * gone meanwhile).  NULL: nothing to drop. */
  void (*unpin) (void *h);
  int (*pin) (void *h);
  /* Optional, both or neither: pread with only the cheap part of the
   * source's checks (a backup: the CRC-32 or GCM tag of each chunk, not
   * its SHA-256 against its name), and that other part later: VERIFY
   * checks BUF, LEN bytes read so at OFF (whole units of the disk):
   * 0, or -EIO with a message naming the chunk.  The disk hands such
   * data out at once and checks it off the reader's path, once per
   * chunk for as long as it is open. */
  ssize_t (*pread_unhashed) (void *h, void *buf, size_t len, uint64_t off);
  int (*verify) (void *h, const void *buf, size_t len, uint64_t off);
  /* Optional, both or neither, and only with the two above: PREAD_PART
   * reads LEN bytes at OFF, inside one unit, fetching and checking only
   * the pieces of the unit it needs (a backup: the parts of a chunk,
   * each against its CRC-32), or returns -EAGAIN (no message) for a
   * unit that cannot be read in pieces (a chunk written whole: the disk
   * fetches it whole, as without PREAD_PART); CHECK_UNIT reads the whole unit at OFF
   * itself and checks it in full (a backup: its digest against its
   * name): 0, or -EIO with a message naming the chunk.  The disk serves
   * small reads that are not part of a run so, without caching the
   * unit, and checks each such unit in full off the reader's path. */
  ssize_t (*pread_part) (void *h, void *buf, size_t len, uint64_t off);
  int (*check_unit) (void *h, uint64_t off);
};

struct vbkfs_source {
  const struct vbkfs_source_ops *ops;
  void *h;
  char name[2 * IMAGE_NAME_MAX + 72];   /* "IMAGE@SNAP", for messages */
};

/* Opens snapshot SNAP of IMAGE.  Errors: -ENOENT, store errors. */
int vbkfs_source_snap_open (struct store *st, const char *image,
                            const char *snap, struct vbkfs_source *out);

/* ---- disk.c ------------------------------------------------------------ */

struct vbkfs_disk;

/* Takes over SRC (closed by vbkfs_disk_close, or here on failure) and
 * loads its allocation map.  CACHE_BYTES: 0 for the default. */
int vbkfs_disk_open (struct vbkfs_source *src, uint64_t cache_bytes,
                     struct vbkfs_disk **out);
void vbkfs_disk_close (struct vbkfs_disk *d);
uint64_t vbkfs_disk_size (struct vbkfs_disk *d);
/* Bytes inside allocated extents. */
uint64_t vbkfs_disk_allocated (struct vbkfs_disk *d, uint64_t off,
                               uint64_t len);
const char *vbkfs_disk_name (struct vbkfs_disk *d);
/* Reads [OFF, OFF+LEN) (clipped to the size): holes as zeros without
 * I/O, the rest through the cache.  Returns bytes read or -errno. */
ssize_t vbkfs_disk_pread (struct vbkfs_disk *d, void *buf, size_t len,
                          uint64_t off);
/* SEEK_DATA / SEEK_HOLE within [BASE, BASE+LEN) of the disk, OFF
 * relative to BASE. */
int64_t vbkfs_disk_seek (struct vbkfs_disk *d, uint64_t base, uint64_t len,
                         int64_t off, int whence);

struct vbkfs_disk_stats {
  uint64_t fetches;             /* chunk reads from the source */
  uint64_t hits;                /* chunk lookups served from the cache */
  uint64_t readahead;           /* chunks fetched ahead of readers */
  uint64_t unhashed;            /* fetched with the cheap checks only */
  uint64_t verified;            /* of those, checked in full (later,
                                   or at once with the queue full) */
  uint64_t verify_failed;       /* of those, found wrong */
  uint64_t part_reads;          /* reads served by pread_part */
  uint64_t part_checked;        /* units read so, checked in full */
  uint64_t part_failed;         /* of those, found wrong */
};
void vbkfs_disk_get_stats (struct vbkfs_disk *d, struct vbkfs_disk_stats *s);
/* Lets the disk hand data out before the second step of a two-step
 * source's checks (pread_unhashed, verify), and run that step on a
 * thread of its own right after, once per chunk while the disk is open;
 * a chunk that fails it reads as EIO from then on (vbk mount).  Without
 * this call, or for other sources, every check runs before (vbk files).
 * Call before the first read. */
void vbkfs_disk_check_later (struct vbkfs_disk *d);
/* The source's unpin and pin (see above); no-ops without them. */
void vbkfs_disk_unpin (struct vbkfs_disk *d);
int vbkfs_disk_pin (struct vbkfs_disk *d);

/* ---- parts.c ----------------------------------------------------------- */

struct vbkfs_part {
  unsigned no;                  /* N of pN */
  uint64_t start, size;         /* bytes */
};

/* The partitions of D (GPT or MBR), found by libblkid.  *N = 0 when the
 * disk has no partition table.  Caller frees *LIST. */
int vbkfs_parts_read (struct vbkfs_disk *d, struct vbkfs_part **list,
                      size_t *n);

/* The file system type in [OFF, OFF+LEN) of D ("ext4", "xfs", ...), or
 * "" when libblkid finds none. */
int vbkfs_fstype (struct vbkfs_disk *d, uint64_t off, uint64_t len,
                  char *type, size_t type_len);

/* ---- extfs.c ----------------------------------------------------------- */

struct vbkfs_extfs;
struct vbkfs_extfile;

/* Opens the ext2/3/4 file system in [OFF, OFF+LEN) of D read-only (the
 * journal is not replayed).  Errors: -EINVAL (not ext2/3/4 or
 * unsupported features), -EIO. */
int vbkfs_extfs_open (struct vbkfs_disk *d, uint64_t off, uint64_t len,
                      struct vbkfs_extfs **out);
void vbkfs_extfs_close (struct vbkfs_extfs *e);
/* PATH is relative to the file system's root ("" or "/" is the root). */
int vbkfs_extfs_getattr (struct vbkfs_extfs *e, const char *path,
                         struct stat *st);
/* PLUS: each entry with its full attributes (as getattr gives them),
 * else with its type only. */
int vbkfs_extfs_readdir (struct vbkfs_extfs *e, const char *path, bool plus,
                         vbkfs_fill_cb fill, void *arg);
int vbkfs_extfs_readlink (struct vbkfs_extfs *e, const char *path,
                          char *buf, size_t len);
int vbkfs_extfs_fopen (struct vbkfs_extfs *e, const char *path,
                       struct vbkfs_extfile **out);
void vbkfs_extfs_fclose (struct vbkfs_extfile *f);
ssize_t vbkfs_extfs_fread (struct vbkfs_extfile *f, void *buf, size_t len,
                           uint64_t off);
uint64_t vbkfs_extfs_fsize (struct vbkfs_extfile *f);

#endif /* VBK_FUSE_INTERNAL_H */
