/* SPDX-License-Identifier: MIT
 * format: docs/FORMAT.md
 *
 * snapshot.h - crash-consistent snapshots without a guest agent,
 * consistency groups, and every operator command that changes an image's
 * snapshots or size, serialized through the lease holder.
 *
 * The lease holder takes the snapshot: it holds new writes to the image,
 * waits for those in flight, flushes, records the snapshot (image.h),
 * and lets writes go on.  The snapshot therefore holds every write
 * acknowledged before the request and none issued after the reply.  A
 * request from any host reaches the holder as a notify on the image
 * header (lease_hooks.command); when nobody holds the lease, the
 * requester takes it for the moment (without asking anyone to hand it
 * over: a holder that appears meanwhile is asked instead) and does the
 * same itself.  A holder that does not answer is looked up again: if it
 * let go, the requester takes the lease for the moment; if its lease is
 * still recorded (it died, or stopped), the requester waits that lease
 * out, fences the holder and takes over, as a writer would (lease.h),
 * giving up after what was left of the lease + the takeover margin + the
 * acquire slack (common/timeouts.h).
 *
 * Snapshot removal and resize go the same way, so that one holder runs
 * every command of an image one at a time (its lease's command thread):
 * a removal that rewrites the next interval's merged changes can no
 * longer interleave with a snapshot that moves the live interval's, and
 * a resize can no longer cut objects under a snapshot context that a
 * snapshot taken meanwhile made stale.  A vbk that holds the lease for a
 * moment answers others "busy"; they retry until their timeout.
 *
 * Commands (notify payloads) and answers; errors are "error: WHY", or
 * "error: errno=N WHY" where the requester should see errno N:
 *   "snap-create NAME"          -> "ok ID PAUSE_US"
 *   "snap-remove NAME"          -> "ok"   (the holder then rereads its
 *                                  snapshot context, writes held)
 *   "resize SIZE"               -> "ok"   (bytes; writes held while the
 *                                  header and objects change, then the
 *                                  holder rereads size, context and map)
 *   "save-parts"                -> "ok"   (writes held while the holder
 *                                  logs which parts of each object it
 *                                  saw change: a diff against the live
 *                                  image is then as fine as one between
 *                                  snapshots)
 *   "freeze TOKEN TIMEOUT_MS"   -> "frozen"   (writes held; thawed by
 *                                  itself after TIMEOUT_MS)
 *   "snap-frozen TOKEN NAME"    -> "ok ID"
 *   "thaw TOKEN"                -> "thawed"
 * Any holder may answer "error: not the lease holder" (it is letting
 * go) and a temporary one "error: busy: ..."; requesters ask again.
 */
#ifndef VBK_SNAPSHOT_H
#define VBK_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "image/image.h"
#include "locks/lease.h"
#include "store/store.h"

/* ---- Holder side ------------------------------------------------------ */

struct snap_server;

/* Serves snapshot commands for IMG, whose writes are guarded by LEASE.
 * Free with snap_server_free (which thaws what is frozen). */
struct snap_server *snap_server_new (struct image *img, struct lease *lease);
void snap_server_free (struct snap_server *s);

/* The lease_hooks.command of a holder: runs one command. */
size_t snap_server_command (struct snap_server *s, const char *payload,
                            size_t len, char *reply, size_t reply_max);

/* Takes snapshot NAME of IMG now (quiesce, flush, record, resume).
 * *PAUSE_US: how long writes were held. */
int snap_take (struct image *img, struct lease *lease, const char *name,
               uint64_t *id, uint64_t *pause_us);

/* ---- Requester side (vbk, any host) ----------------------------------- */

struct snap_opts {
  const char *host_id;        /* for a temporary lease: who we are */
  uint32_t timeout_ms;        /* per step; 0: 30 s */
};

/* Snapshot SNAP of IMAGE, through its holder or a temporary lease.
 * *PAUSE_US (may be NULL): how long the holder held writes. */
int snap_create (struct store *st, const char *image, const char *snap,
                 const struct snap_opts *o, uint64_t *pause_us);

/* Snapshots IMAGES[i]@SNAPS[i] at one instant: freeze all, snapshot
 * all, thaw all.  If any step fails, the snapshots already taken are
 * removed and everything is thawed. */
int snap_group_create (struct store *st, const char *group,
                       const char *const *images, const char *const *snaps,
                       size_t n, const struct snap_opts *o);

/* Removes snapshot SNAP of IMAGE through its holder or a temporary
 * lease.  Errors: -ENOENT (no such image or snapshot), those of
 * image_snap_remove, -ETIMEDOUT (the holder did not answer and could
 * not be taken over in time). */
int snap_remove (struct store *st, const char *image, const char *snap,
                 const struct snap_opts *o);

/* Resizes IMAGE to SIZE bytes through its holder or a temporary lease.
 * Errors: those of image_resize, -ETIMEDOUT. */
int snap_resize (struct store *st, const char *image, uint64_t size,
                 const struct snap_opts *o);

/* image_diff, made complete against commands running meanwhile: with
 * TO NULL (the live image) the holder first logs its changed parts
 * ("save-parts"); the logs are read again whenever the snapshots
 * changed while they were read (a create or remove moves changes
 * between lists).  CB is called only once a consistent reading is in.
 * Errors: those of image_diff, -EAGAIN (snapshots kept changing). */
int snap_diff (struct store *st, const char *image, const char *from,
               const char *to, image_extent_cb cb, void *arg,
               const struct snap_opts *o);

/* Rolls IMAGE back to SNAP.  Refuses (-EBUSY) while someone holds the
 * lease, unless FORCE (which breaks it: the holder is fenced). */
int snap_rollback (struct store *st, const char *image, const char *snap,
                   bool force, const struct snap_opts *o);

#endif /* VBK_SNAPSHOT_H */
