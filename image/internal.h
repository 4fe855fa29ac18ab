/* SPDX-License-Identifier: MIT
 *
 * internal.h - what the files of image/ share; the public interface is
 * image.h.  Types first, then the functions of each file.
 *
 * DESIGN
 * - An image's state on the store is its name object, header, object
 *   map, change log and merged change lists (image.c, objmap.c,
 *   changelog.c); an open image is a struct image.  Functions here are
 *   internal to image/ and prefixed image_ like the public ones.
 */
#ifndef VBK_IMAGE_INTERNAL_H
#define VBK_IMAGE_INTERNAL_H

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/util.h"
#include "common/workq.h"
#include "changeset.h"
#include "image.h"

#define DIRECTORY_OID "vbk_directory"
#define INFLIGHT_BUCKETS 1024
#define HEADER_MAX 4096

/* The in-memory object map is sparse: a table of directories of pages
 * of MAP_PAGE entries, each allocated on the first non-zero value it
 * gets, so that open time and memory follow the objects allocated or
 * logged, not the image's size (a thin 64 TiB image with 4 MiB objects
 * needs a table of 64 pointers).  Pages and directories are published
 * with a compare-and-swap and freed only with their map (at
 * image_close), so lock-free readers never see freed memory; an absent
 * page reads as zeros. */
#define MAP_PAGE_SHIFT 6
#define MAP_PAGE (1u << MAP_PAGE_SHIFT)           /* entries per page */
#define MAP_DIR_SHIFT 12
#define MAP_DIR (1u << MAP_DIR_SHIFT)             /* pages per directory */
#define MAP_DIR_SPAN_SHIFT (MAP_PAGE_SHIFT + MAP_DIR_SHIFT)
#define MAP_WINDOW (1u << 20)   /* stored map bytes read at a time */

/* The stored map (mapstore.c): level 0 is one byte per data object; a
 * byte of level L+1 is non-zero when the MAP_SUM entries of level L it
 * covers may hold a non-zero byte.  Format 3 and later keep levels 1
 * and 2 (at most 2 MiB and 32 KiB); older images have level 0 only. */
#define MAP_SUM_SHIFT 6
#define MAP_SUM (1u << MAP_SUM_SHIFT)
#define MAP_LEVELS 3
#define IMAGE_FORMAT_MAP_SUMMARY 3      /* the first format with levels 1-2 */

struct map_page {
  uint8_t bytes[MAP_PAGE];       /* ABSENT, CLEAN or DIRTY */
  uint8_t pending[MAP_PAGE];     /* NEED_* a group commit will write */
  uint8_t logged[MAP_PAGE];      /* last logged record: the whole object */
  uint32_t parts[MAP_PAGE];      /* parts changed in the live interval */
};

/* A directory also remembers which summary bytes of the stored map
 * (mapstore.c) covering its entries are known to be set on the store:
 * one bit per level-1 byte (a page's worth of entries) and one per
 * level-2 byte (64 pages), so a commit writes each of them once. */
struct map_dir {
  struct map_page *pages[MAP_DIR];
  uint64_t sum1[MAP_DIR / 64];
  uint64_t sum2;
};

struct objmap {
  struct objmap *retired;        /* older maps, freed at close */
  uint64_t n;                    /* entries */
  uint64_t ndirs;
  struct map_dir *dirs[];
};

/* What an entry still needs before its object may change. */
enum { NEED_LOG = 1, NEED_MAP = 2 };

#define SLOT(i) ((i) & (MAP_PAGE - 1))

/* Fields of a map entry, for image_map_put. */
enum map_field { F_BYTE, F_LOGGED, F_PENDING, F_PARTS, F_PARTS_OR };

struct image {
  struct store *st;              /* our own clone of the caller's store */
  struct image_info info;
  unsigned order;                /* log2 (object_size) */
  unsigned flags;
  uint64_t read_snap;            /* STORE_SNAP_HEAD, or the snapshot read */
  int untrusted;                 /* the map may be stale: see image.h */
  bool lazy;                     /* log and map writes durable at the
                                    next flush, not at completion (every
                                    store but rados): openmark.c */
  char open_key[64];             /* our key in vbk_open.ID, or "" */
  char hdr_oid[64], map_oid[64], log_oid[64];
  struct objmap *map;            /* replaced only by image_refresh */
  pthread_mutex_t map_lock;      /* serializes map changes */
  pthread_cond_t map_cond;       /* a map write finished */
  bool map_writing;              /* a thread is writing the map or log */
  struct changes log;            /* the change log as stored (raw) */
  bool log_tail_unknown;         /* words may lie past log.n: cut first */
  struct changes pend;           /* entries with pending != 0 */
  int wr_inflight[INFLIGHT_BUCKETS];
  /* The commit queue (commit.c), under map_lock. */
  struct commit_wait *cq_head, *cq_tail;
  uint64_t cq_seq;               /* waiters queued so far */
  struct workq *cq;              /* one thread; NULL until first needed */
  struct workq_item cq_item;     /* the committer's pass */
  bool cq_scheduled;             /* cq_item queued or running */
};

/* image.c */
void image_changes_oid (const char *id, char *buf, size_t len);
void image_merged_oid (const char *id, uint64_t snapid, char *buf, size_t len);
int image_note_shrink (struct store *st, const char *hdr, uint64_t size);
int image_shrunk_to (struct store *st, const char *hdr, uint64_t *size);
uint64_t image_objects_for (uint64_t size, uint32_t object_size);
int image_lookup_id (struct store *st, const char *name, char *id, size_t len);
int image_read_size (struct store *st, const char *hdr, uint64_t *size,
                     char *raw, size_t rawlen);
int image_read_header (struct store *st, const char *id,
                       struct image_info *info);

/* objmap.c */
struct objmap *image_map_new (uint64_t n);
void image_map_free (struct objmap *m);
uint8_t image_map_get (struct objmap *m, uint64_t i);
uint8_t image_map_logged (struct objmap *m, uint64_t i);
uint32_t image_map_parts (struct objmap *m, uint64_t i);
int image_map_put (struct objmap *m, uint64_t i, enum map_field f, uint32_t v);
uint64_t image_map_count (struct objmap *m);
int image_map_read_stored (struct store *st, const char *oid,
                           unsigned format, uint64_t snap, struct objmap *m,
                           uint64_t first, uint64_t last);
int image_map_mark_dirty (struct image *img, uint64_t first, uint64_t last,
                          bool alloc);
int image_map_need_locked (struct image *img, struct objmap *m,
                           uint64_t first, uint64_t last, bool alloc,
                           bool *done);
bool image_map_ready (struct objmap *m, uint64_t first, uint64_t last,
                      bool alloc);
int image_map_commit (struct image *img, struct objmap *m);
void image_mark_parts (struct image *img, uint64_t off, uint64_t len);
void image_map_mark_absent (struct image *img, uint64_t objno);

bool image_map_sum_known (struct objmap *m, unsigned level, uint64_t idx);
int image_map_sum_note (struct objmap *m, unsigned level, uint64_t idx);

/* mapstore.c */
/* A run [lo, hi] of summary bytes of one level that a commit sets. */
struct map_sum_run {
  unsigned level;
  uint64_t lo, hi;
};
struct map_sum_runs {
  struct map_sum_run *v;
  size_t n, cap;
};
void image_map_level_oid (const char *map_oid, unsigned level, char *buf,
                          size_t len);
typedef int (*image_map_scan_cb) (void *arg, uint64_t objno);
int image_map_scan (struct store *st, const char *map_oid, unsigned format,
                    uint64_t snap, uint64_t first, uint64_t last,
                    struct objmap *note, image_map_scan_cb cb, void *arg);
int image_map_sum_plan (struct objmap *m, uint64_t lo, uint64_t hi,
                        struct map_sum_runs *runs);
int image_map_sum_start (struct store *st, const char *map_oid,
                         const struct map_sum_runs *runs, store_aio_cb cb,
                         void *arg);
int image_map_sum_write (struct store *st, const char *map_oid,
                         const struct map_sum_runs *runs);
void image_map_sum_done (struct objmap *m, const struct map_sum_runs *runs);
int image_map_sum_write_all (struct store *st, const char *map_oid,
                             const uint8_t *map, uint64_t n);

/* commit.c */
/* What image_map_mark_dirty does, without waiting on the caller's thread
 * for a store round trip: returns 0 when the entries are ready (the
 * caller goes on; on the local store the commit ran on this thread), 1
 * when CB will run on the committer thread once they are written (ERR
 * 0) or could not be (ERR -errno), or -errno without calling CB. */
typedef void (*image_commit_cb) (void *arg, int err);
int image_map_mark_dirty_async (struct image *img, uint64_t first,
                                uint64_t last, bool alloc, image_commit_cb cb,
                                void *arg);
/* Stops the committer after its queue is empty (image_close). */
void image_commit_stop (struct image *img);

/* changelog.c (the pure change-list code: changeset.h) */
void image_log_writer_enter (struct image *img);
void image_log_writer_exit (struct image *img);
int image_log_fix_tail (struct image *img, uint64_t off);
void image_log_append_failed (struct image *img, uint64_t off);
int image_changes_read (struct store *st, const char *oid, uint64_t snap,
                        struct changes *c);
int image_set_read (struct store *st, const char *oid, uint64_t snap,
                    struct change_set *s);
int image_set_write (struct store *st, const char *oid,
                     const struct change_set *s);

/* openmark.c */
void image_open_oid (const char *id, char *buf, size_t len);
bool image_store_lazy (struct store *st);
/* Records a writable open of IMG (its info, oids and snapshot context
 * loaded, its map not yet) and, after an unclean shutdown of the
 * machine, rebuilds the stored map and resets the live change log. */
int image_open_mark (struct image *img);
/* At close, after the flush (FLUSH_ERR its result). */
void image_open_unmark (struct image *img, int flush_err);

/* io.c */
int image_check_writable (struct image *img, const char *op);

/* snap.c */
int image_snaps_of_header (struct store *st, const char *hdr,
                           struct image_snap **list, size_t *n);
int image_load_snap_context (struct store *st, const char *hdr);
int image_find_snap (struct store *st, const char *hdr, const char *image,
                     const char *snap, struct image_snap *out);

#endif /* VBK_IMAGE_INTERNAL_H */
