/* SPDX-License-Identifier: MIT
 * format: docs/FORMAT.md
 *
 * image.h - thin disk images on an object store.
 *
 * Layout (like Ceph RBD format 2):
 *   vbk_directory            omap: image name -> image id
 *   vbk_name.NAME            exists while NAME is taken (exclusive create);
 *                            data: the image id
 *   vbk_header.ID            data: "format=N", name, object_size, features
 *                            ("key=value" lines, never changed);
 *                            xattrs: size, min_size (a shrink since the
 *                            last snapshot), snap_seq, and from format 2
 *                            state (absent: a normal image; "importing
 *                            HOST PID MS": created by an import that has
 *                            not finished; "removing": an rm started);
 *                            omap: snap.NAME (see Snapshots)
 *   vbk_object_map.ID        one byte per data object (ABSENT or CLEAN)
 *   vbk_object_map.ID.l1/.l2 from format 3: one byte per 64 bytes of the
 *                            level below, non-zero when those may be, so
 *                            reading the map follows what is allocated
 *   vbk_changes.ID           the objects changed since the last snapshot
 *                            (8 bytes each, and which 1/32 parts changed
 *                            when known: the changed-block tracking)
 *   vbk_changes.ID.merged.*  changes of removed snapshots' intervals
 *   vbk_data.ID.OBJNO        data object OBJNO (16 hex digits)
 * An object exists only once written; absent objects read as zeros.
 * The header's format (IMAGE_FORMAT) is checked on every read of it: a
 * newer format is refused.  Format 2 added the state xattr, format 3 the
 * object map's summary levels (older images are read whole, as before).
 * An image has at most IMAGE_OBJECTS_MAX data objects, so its object map
 * stays within 128 MiB, Ceph's default osd_max_object_size: 1 PiB needs
 * objects of 8 MiB or more; with the default 4 MiB objects an image may
 * have up to 512 TiB, with 64 KiB objects 8 TiB.
 *
 * Removal (image_remove) marks the header "removing" first, then removes
 * snapshots, data objects, change logs, the map, the header, the
 * directory entry and last the name object; a removal that died is
 * finished by running it again (the name still leads to the id).
 * Before the first change to an object in each snapshot interval, the
 * object is appended to vbk_changes.ID and, if new, marked in the map,
 * durably; so after any crash neither under-reports.
 *
 * Errors follow store.h (0 or -errno, message in vbk_error()); in addition
 *   -ENOENT   no such image
 *   -EEXIST   the name is taken
 *   -EINVAL   bad name, size or object size; I/O past the end
 *   -EROFS    write through a read-only handle
 *
 * Thread safety: an open struct image may be used from many threads.
 */
#ifndef VBK_IMAGE_H
#define VBK_IMAGE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "store/store.h"

struct image;

#define IMAGE_NAME_MAX 128
#define IMAGE_OBJECT_SIZE_DEFAULT (4u << 20)
#define IMAGE_OBJECT_SIZE_MIN (64u << 10)
#define IMAGE_OBJECT_SIZE_MAX (32u << 20)
#define IMAGE_SIZE_MAX (UINT64_C (1) << 50)       /* 1 PiB */
#define IMAGE_OBJECTS_MAX (UINT64_C (1) << 27)    /* see the layout */
#define IMAGE_FORMAT 3          /* newest header format this code reads */

/* The state of an image (the header's state xattr). */
enum image_state {
  IMAGE_STATE_OK = 0,
  IMAGE_STATE_IMPORTING = 1,    /* an import has not finished */
  IMAGE_STATE_REMOVING = 2,     /* an rm started; run it again to finish */
};

/* Object-map entries. */
enum image_obj {
  IMAGE_OBJ_ABSENT = 0,     /* never written, or discarded */
  IMAGE_OBJ_CLEAN = 1,      /* written before the last snapshot */
  IMAGE_OBJ_DIRTY = 2,      /* written since the last snapshot (in memory) */
};

struct image_info {
  char name[IMAGE_NAME_MAX + 1];
  char id[32];
  uint64_t size;            /* bytes */
  uint32_t object_size;     /* bytes, a power of two */
  uint64_t objects;         /* data objects the object map counts:
                               image_get_info only (image_stat and
                               image_list leave it 0, see
                               image_count_objects) */
  uint64_t features;
  enum image_state state;
  char state_detail[128];   /* importing: "HOST PID MS" of the importer */
  unsigned format;          /* the header's format (0 if no format= line) */
};

/* Checks a name: 1-128 of [A-Za-z0-9._+-], not starting with '.' or '-'.
 * Returns 0 or -EINVAL with a message. */
int image_name_check (const char *name);

/* Creates an empty image.  SIZE need not be a multiple of anything;
 * OBJECT_SIZE 0 means the default.  Errors: -EEXIST, -EINVAL (also more
 * than IMAGE_OBJECTS_MAX objects). */
int image_create (struct store *st, const char *name, uint64_t size,
                  uint32_t object_size);

/* The same, marked IMAGE_STATE_IMPORTING (with this host and process)
 * before it is listed: it is not opened for serving until the importer
 * calls image_set_complete. */
int image_create_incomplete (struct store *st, const char *name,
                             uint64_t size, uint32_t object_size);

/* Clears the importing state of IMG (opened with IMAGE_OPEN_INCOMPLETE)
 * durably.  The caller has flushed every write (image_flush). */
int image_set_complete (struct image *img);

/* Removes an image and all its objects: its snapshots (with their
 * copies of data objects and logs), data objects, change logs, map,
 * header, directory entry and name.  Marks the image removing first, so
 * it is not opened meanwhile; an image left removing (a removal that
 * died) is finished by calling this again.  The caller makes sure no
 * lease holder writes (tools/: refuse or fence).  Errors: -ENOENT. */
int image_remove (struct store *st, const char *name);

/* Information without opening: reads the header only, never the object
 * map (INFO->objects is 0).  Errors: -ENOENT. */
int image_stat (struct store *st, const char *name, struct image_info *info);

/* Counts the allocated data objects of image NAME from its stored map,
 * reading (format 3) in proportion to the objects allocated; format 2
 * and older read the whole map in bounded windows.  Errors: -ENOENT. */
int image_count_objects (struct store *st, const char *name,
                         uint64_t *count);

/* All images, sorted by name (headers only, as image_stat).  Caller
 * frees *LIST with free(). */
int image_list (struct store *st, struct image_info **list, size_t *n);

/* Changes the size.  Shrinking removes the data past the new end.
 * Errors: -ENOENT, -EINVAL. */
int image_resize (struct store *st, const char *name, uint64_t size);

/* Open flags. */
#define IMAGE_OPEN_RDONLY 1u
#define IMAGE_OPEN_INCOMPLETE 2u  /* also an image still importing */

/* Opens an image.  The handle keeps its own store handle (store_clone)
 * and an in-memory copy of the object map.  Caller closes with
 * image_close().  Errors: -ENOENT (also: being removed), -EBUSY (an
 * import has not finished, without IMAGE_OPEN_INCOMPLETE), -EINVAL (a
 * header format newer than IMAGE_FORMAT). */
int image_open (struct store *st, const char *name, unsigned flags,
                struct image **out);

/* Flushes and frees.  image_close(NULL) is a no-op. */
void image_close (struct image *img);

void image_get_info (struct image *img, struct image_info *info);
uint64_t image_size (struct image *img);

/* Rereads the header (size), the snapshot context and the object map
 * from the store: after another process changed them (resize, another
 * writer). */
int image_refresh (struct image *img);

/* Whether this handle's in-memory object map may be trusted.  A handle
 * that does not hold the image's lease must not trust it (another host
 * may be writing): reads then look at every object in the store, and
 * image_extents rereads the map.  Trusting again rereads the map.
 * Handles start trusted. */
int image_set_trusted (struct image *img, int trusted);

/* ---- Synchronous I/O ---------------------------------------------------
 * OFF + LEN must not pass the end (-EINVAL).  Writes fail with -EROFS on
 * a read-only handle. */

/* Returns LEN or -errno. */
ssize_t image_read (struct image *img, void *buf, size_t len, uint64_t off);

#define IMAGE_FUA 1u          /* durable before returning */
#define IMAGE_NO_HOLE 2u      /* write_zeroes: keep the range allocated */

int image_write (struct image *img, const void *buf, size_t len,
                 uint64_t off, unsigned flags);
/* Deallocates what it can and zeroes the rest: afterwards the range
 * reads as zeros. */
int image_discard (struct image *img, uint64_t off, uint64_t len,
                   unsigned flags);
int image_write_zeroes (struct image *img, uint64_t off, uint64_t len,
                        unsigned flags);
/* Makes every completed write durable. */
int image_flush (struct image *img);

/* ---- Asynchronous I/O --------------------------------------------------
 * Start the operation and return 0, or return -errno without calling CB.
 * CB runs exactly once, on a store thread, on the image's commit thread
 * (a write that first waited for its change-log entries), or on the
 * caller's thread before the call returns, with LEN / 0 or -errno.  BUF
 * must stay valid until then.  A write's entries may fail to commit
 * after the call returned 0: CB gets that error.  When RET < 0, this
 * thread's vbk_error() holds the message of the first piece that failed
 * (which backend, operation and object) while CB runs. */
typedef void (*image_aio_cb) (void *arg, ssize_t ret);

int image_aio_read (struct image *img, void *buf, size_t len, uint64_t off,
                    image_aio_cb cb, void *arg);
int image_aio_write (struct image *img, const void *buf, size_t len,
                     uint64_t off, unsigned flags, image_aio_cb cb,
                     void *arg);

/* ---- Allocation map ----------------------------------------------------
 * Calls CB for consecutive extents covering [OFF, OFF+LEN) (clipped to
 * the image), each either allocated (some data object written) or a
 * hole (reads as zeros).  Cost grows with the allocated objects, not
 * with LEN.  A non-zero return from CB stops the walk and is returned. */
typedef int (*image_extent_cb) (void *arg, uint64_t off, uint64_t len,
                                int allocated);
int image_extents (struct image *img, uint64_t off, uint64_t len,
                   image_extent_cb cb, void *arg);

/* Object-map entry of object OBJNO (from memory). */
enum image_obj image_object_state (struct image *img, uint64_t objno);

/* ---- Snapshots ---------------------------------------------------------
 * A snapshot is a store snapshot id recorded in the header's omap
 * ("snap.NAME" -> "id=ID size=BYTES time=MS").  Writers use the image's
 * snapshot context, so data objects, the object map and the change log
 * are copied on their first write after a snapshot (no copy of the disk
 * is made).  The change log read at snapshot S lists the objects changed
 * between the snapshot before S and S: that is the changed-block
 * tracking.  A snapshot empties the live log; it writes no map. */

struct image_snap {
  char name[IMAGE_NAME_MAX + 1];
  uint64_t id;                  /* store snapshot id: grows with time */
  uint64_t size;                /* image size at the snapshot */
  uint64_t time_ms;             /* wall clock when taken */
};

/* Snapshots of IMAGE, oldest first.  Caller frees *LIST. */
int image_snap_list (struct store *st, const char *image,
                     struct image_snap **list, size_t *n);

/* Records snapshot SNAP of the open, writable IMG.  The caller makes
 * sure no write is in flight and none starts (the lease's quiesce) and
 * has flushed.  Errors: -EEXIST, -EINVAL (bad name), -EROFS. */
int image_snap_create (struct image *img, const char *snap, uint64_t *id);

/* The same in two steps, so that the slow part (allocating the store's
 * snapshot id: a round trip to the Ceph monitor) happens before writes
 * are held: image_snap_alloc, then image_snap_create_id with that id
 * (which frees the id if it fails).  Ids must be used in the order
 * allocated. */
int image_snap_alloc (struct image *img, uint64_t *id);
int image_snap_create_id (struct image *img, const char *snap, uint64_t id);
/* Gives back an id from image_snap_alloc that will not be used. */
void image_snap_free_id (struct image *img, uint64_t id);

/* image_snap_create_id in three steps, so that writes are held only for
 * what must happen while they are:
 *   image_snap_prepare  before writes are held: checks the name, reads
 *                       the snapshot table and a pending shrink, copies
 *                       the merged changes; on failure frees the id.
 *                       Errors: -EEXIST, -EINVAL, -EROFS, the store's.
 *   image_snap_record   writes held, none in flight, flushed: records
 *                       the snapshot (the header, the log, the context).
 *                       On failure the snapshot is not recorded and the
 *                       id is freed, except when only emptying the log
 *                       failed (the snapshot stands; its diff
 *                       over-reports).
 *   image_snap_finish   after writes go on again, exactly once per
 *                       successful prepare (also after a failed record,
 *                       or instead of one: it then cancels): drops what
 *                       the snapshot took over; frees *P.
 * Between prepare and finish nothing else may change IMG's snapshots or
 * size (the lease holder runs one such command at a time). */
struct image_snap_prep;
int image_snap_prepare (struct image *img, const char *snap, uint64_t id,
                        struct image_snap_prep **p);
int image_snap_record (struct image *img, struct image_snap_prep *p);
int image_snap_finish (struct image *img, struct image_snap_prep *p);

/* Logs which parts of the objects this handle changed since the last
 * snapshot, so that the next snapshot's diff stays finer than objects
 * when another process (a new lease holder) writes next.  Call with
 * writes held, before another process may write.  Optional: without it
 * those objects count whole. */
int image_save_parts (struct image *img);

/* Forgets snapshot SNAP of IMAGE; its space is freed once no other
 * snapshot needs it.  Errors: -ENOENT. */
int image_snap_remove (struct store *st, const char *image, const char *snap);

/* Rolls the open, writable IMG back to SNAP: bytes and size.  The caller
 * makes sure nobody else writes.  Errors: -ENOENT. */
int image_snap_rollback (struct image *img, const char *snap);

/* Opens snapshot SNAP of IMAGE read-only (reads, extents, info: as they
 * were at the snapshot).  Errors: -ENOENT. */
int image_open_snap (struct store *st, const char *image, const char *snap,
                     struct image **out);

/* Calls CB (with allocated = 1) for the extents of IMAGE that changed
 * between snapshot FROM and snapshot TO (NULL: the live image), merged,
 * in order: parts of 1/32 of an object where the snapshots' logs say
 * which, else whole objects.  Reads one change log per snapshot in
 * between: cost grows with the snapshots and the changed objects, not
 * with the disk's size.  May over-report after a crash; never under-reports.
 * Errors: -ENOENT (no such image or snapshot), -EINVAL (TO older than
 * FROM). */
int image_diff (struct store *st, const char *image, const char *from,
                const char *to, image_extent_cb cb, void *arg);

/* image_diff, and *FLAGS (when not NULL) says how far to trust it:
 * IMAGE_DIFF_CBT_RESET when an interval it spans had its change
 * tracking reset (the image was opened for writing after an unclean
 * shutdown of the machine, which may have lost change-log records of
 * writes that reached the disk): every object is reported changed, and
 * a backup should read the whole image and say why. */
#define IMAGE_DIFF_CBT_RESET 1u
int image_diff_flags (struct store *st, const char *image, const char *from,
                      const char *to, image_extent_cb cb, void *arg,
                      unsigned *flags);

/* A growing list of extents, for callers that collect them first:
 * image_extent_list_add is an image_extent_cb (ARG: the list) that keeps
 * the allocated extents in the order given, merging one that starts
 * where the previous ends.  Start from { 0 }; the caller frees V with
 * free().  Errors: -ENOMEM (with a message). */
struct image_extent_list {
  struct image_extent { uint64_t off, len; } *v;
  size_t n, cap;
};
int image_extent_list_add (void *list, uint64_t off, uint64_t len,
                           int allocated);

/* Names of the objects of image ID, for tests, tools and the lease
 * (which lives on the header). */
void image_data_oid (const char *id, uint64_t objno, char *buf, size_t len);
void image_header_oid (const char *id, char *buf, size_t len);

#endif /* VBK_IMAGE_H */
