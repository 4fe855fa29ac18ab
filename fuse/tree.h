/* SPDX-License-Identifier: MIT
 *
 * tree.h - the state of a vbkfs tree, shared by tree.c (paths, images'
 * snapshots, volumes) and tree-backup.c (the backups/ part).
 */
#ifndef VBK_FUSE_TREE_H
#define VBK_FUSE_TREE_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>

#include "internal.h"

enum { VOL_SNAP, VOL_BACKUP };

/* The file system of one part of a volume (or of the whole disk). */
struct vbkfs_fsx {
  bool tried;
  struct vbkfs_extfs *ext;      /* NULL: see readme */
  char readme[512];
};

/* A snapshot or backup whose disk is open; kept until vbkfs_free (its
 * source unpinned while none of its files is open: tree.c, Files). */
struct vbkfs_vol {
  struct vbkfs_vol *next;
  int kind;
  char image[IMAGE_NAME_MAX + 1];
  char name[NAME_MAX + 1];      /* snapshot name, backup id */
  struct vbkfs_disk *disk;
  pthread_mutex_t lock;         /* the lazily loaded parts below */
  bool parts_loaded;
  struct vbkfs_part *parts;
  size_t nparts;
  struct vbkfs_fsx *fsx;        /* nparts + 1: the last is the disk */
  unsigned opens;               /* open files of disk, parts/, files/ */
  bool unpinned;                /* the source's pin dropped */
  uint64_t idle_ns;             /* monotonic: when opens was last 0 */
};

struct vbkfs {
  struct store *store;
  uint64_t cache_bytes;
  bool check_later;
  uid_t uid;
  gid_t gid;
  pthread_mutex_t lock;         /* vols */
  struct vbkfs_vol *vols;
  struct vbkfs_backups *backups;        /* tree-backup.c, or NULL */
};

enum vbkfs_node_type {
  N_ROOT, N_IMAGES, N_IMAGE, N_SNAPS, N_BACKUPS, N_BIMAGE, N_LATEST,
  N_VOL, N_INFO, N_DISK, N_PARTS, N_PART, N_FILES_TOP, N_FILES,
  N_README_DIR, N_README,
};

/* What a path names. */
struct vbkfs_node {
  enum vbkfs_node_type type;
  const char *path;
  int kind;                     /* VOL_* for volumes */
  char image[IMAGE_NAME_MAX + 1];
  char name[NAME_MAX + 1];      /* snapshot, backup TIME */
  char link[NAME_MAX + 1];      /* N_LATEST's target */
  uint64_t time_ms;
  bool rest_is_inside;          /* the path goes on inside the volume */
  struct vbkfs_vol *vol;        /* open, for disk, parts, files */
  uint64_t off, len;            /* N_DISK, N_PART: range of the disk */
  size_t part;                  /* index in vol->parts; nparts: disk */
  struct vbkfs_extfs *ext;      /* N_FILES */
  const char *fspath;           /* N_FILES: the rest of the path */
};

/* tree.c */
int vbkfs_resolve (struct vbkfs *fs, const char *path, struct vbkfs_node *n);
typedef int (*vbkfs_vol_resolver) (struct vbkfs *fs, const char *rest,
                                   struct vbkfs_node *n);

/* tree-backup.c: everything under backups/.  Without a repository,
 * backups/ is empty. */
int vbkfs_backup_init (struct vbkfs *fs, const char *repo_uri,
                       const struct backup_key_opts *key);
void vbkfs_backup_fini (struct vbkfs *fs);
/* Resolves REST (the path after "backups"), calling VOL for the part
 * inside a backup with N's kind, image and name set. */
int vbkfs_resolve_backups (struct vbkfs *fs, const char *rest,
                           struct vbkfs_node *n, vbkfs_vol_resolver vol);
int vbkfs_backup_exists (struct vbkfs *fs, struct vbkfs_node *n);
int vbkfs_backup_readdir (struct vbkfs *fs, struct vbkfs_node *n,
                          vbkfs_fill_cb fill, void *arg);
int vbkfs_backup_info (struct vbkfs *fs, struct vbkfs_node *n, char **out);
int vbkfs_source_backup_open (struct vbkfs *fs, const char *image,
                              const char *name, struct vbkfs_source *out);

#endif /* VBK_FUSE_TREE_H */
