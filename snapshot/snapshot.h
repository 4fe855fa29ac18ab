/* SPDX-License-Identifier: MIT
 *
 * snapshot.h - crash-consistent snapshots without a guest agent, and
 * consistency groups.
 *
 * The lease holder takes the snapshot: it holds new writes to the image,
 * waits for those in flight, flushes, records the snapshot (image.h),
 * and lets writes go on.  The snapshot therefore holds every write
 * acknowledged before the request and none issued after the reply.  A
 * request from any host reaches the holder as a notify on the image
 * header (lease_hooks.command); when nobody holds the lease, the
 * requester takes it for the moment and does the same itself.
 *
 * Commands (notify payloads) and answers:
 *   "snap-create NAME"          -> "ok ID PAUSE_US" | "error: WHY"
 *   "freeze TOKEN TIMEOUT_MS"   -> "frozen" | "error: WHY"   (writes held;
 *                                  thawed by itself after TIMEOUT_MS)
 *   "snap-frozen TOKEN NAME"    -> "ok ID" | "error: WHY"
 *   "thaw TOKEN"                -> "thawed" | "error: WHY"
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

/* Rolls IMAGE back to SNAP.  Refuses (-EBUSY) while someone holds the
 * lease, unless FORCE (which breaks it: the holder is fenced). */
int snap_rollback (struct store *st, const char *image, const char *snap,
                   bool force, const struct snap_opts *o);

#endif /* VBK_SNAPSHOT_H */
