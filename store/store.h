/* SPDX-License-Identifier: MIT
 *
 * store.h - the object store API every other vbk layer stands on.
 *
 * A store holds named objects: byte arrays that may be sparse, each with
 * small metadata (xattrs: named values; omap: a sorted key/value map).
 * Backends:
 *   local:/PATH                       a directory; several processes may
 *                                     share it at once
 *   rados:POOL[/NAMESPACE][?conf=PATH&id=NAME&timeout=SECONDS]
 *                                     a Ceph pool through librados
 *                                     (ceph.conf from conf= or $CEPH_CONF)
 *   fault:SPEC@INNER-URI              wraps any other store and injects
 *                                     faults (see store_fault_set)
 *
 * Conventions, as librados and the kernel: functions return 0 (or a
 * byte count) on success and -errno on failure.  The function that
 * detects an error records a one-line message with context, retrievable
 * with vbk_error() (common/error.h); callers pass the code up.
 *
 * Every errno listed is one the conformance suite (tests/unit/test-store.c)
 * checks on every backend.  Common to all calls:
 *   -EIO, -ETIMEDOUT  the backend failed or did not answer in time
 *   -ENOSPC, -EDQUOT  the store is full
 *   -ESHUTDOWN        this client has been fenced (store_fence)
 *   -EACCES, -EPERM   permission denied
 *
 * Thread safety: a struct store may be used from many threads at once.
 * Callbacks (aio completions, watch callbacks) run on backend threads;
 * they must not block for long and must not call store_close().
 */
#ifndef VBK_STORE_H
#define VBK_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct store;

/* Snapshot ids.  STORE_SNAP_HEAD reads the live object. */
#define STORE_SNAP_HEAD UINT64_MAX

/* Longest object name, xattr/omap key, client id, lock cookie. */
#define STORE_NAME_MAX 250
#define STORE_CLIENT_MAX 128

/* ---- Opening ---------------------------------------------------------- */

/* Opens the store named by URI.  A local store directory is created if
 * it does not exist.  Errors: -EINVAL (malformed URI), -ENOENT (pool or
 * path parent missing), -ETIMEDOUT (cluster unreachable: never hangs
 * longer than the timeout, default 10 s), -EACCES.  Caller frees with
 * store_close(). */
int store_open (const char *uri, struct store **out);

/* A second handle on the same store sharing its connection, with its own
 * snapshot write context (store_set_snap_context).  The clone must be
 * closed before its parent. */
int store_clone (struct store *parent, struct store **out);

/* Waits for outstanding aio, then frees.  store_close(NULL) is a no-op. */
void store_close (struct store *st);

/* "local", "rados" or "fault". */
const char *store_backend (const struct store *st);

/* This client's identity, unique per store_open(), as given to
 * store_fence() by another client (RADOS: its instance address). */
const char *store_client_id (const struct store *st);

/* ---- Object data ------------------------------------------------------ */

/* Reads LEN bytes at OFF of object OID at snapshot SNAP (STORE_SNAP_HEAD
 * for the live object).  Holes and the range past the object's end read
 * as zeros, so on success the return value is always LEN.
 * Errors: -ENOENT (the object does not exist, or did not at SNAP). */
ssize_t store_read (struct store *st, const char *oid, void *buf,
                    size_t len, uint64_t off, uint64_t snap);

/* One range for store_read_ranges: LEN bytes at OFF into BUF. */
struct store_range {
  uint64_t off;
  size_t len;
  void *buf;
};

/* Reads ranges R[0..N) of object OID at SNAP, each as store_read would
 * (zeros past the end): in one step where the backend can (RADOS: one
 * read op, so one round trip and one op on the OSD however many ranges),
 * else one after another.  Returns 0 once every range is read.
 * Errors: -ENOENT (no object), others of store_read. */
int store_read_ranges (struct store *st, const char *oid, uint64_t snap,
                       const struct store_range *r, size_t n);

/* Write flags. */
#define STORE_WRITE_SYNC 1u     /* durable when the call returns */
/* store_create_excl only (other calls refuse it with -EINVAL, and so
 * does its use with STORE_WRITE_SYNC): the new object is at once visible
 * to every reader, and whole (never a part of BUF), but it is durable,
 * its existence as well as its bytes, only once a later store_flush() of
 * this store_open() (or a clone) has returned 0.  A crash of the machine
 * before that may leave it absent, or present under its name and short,
 * or holding other bytes (zeros, garbage): the caller must be able to
 * tell such an object from a good one (a checksum inside it), and must
 * not make anything durable that relies on it before that flush.  It
 * lets a writer create many objects and pay for their durability once,
 * in the flush (the local store: no sync per object, one sync pass for
 * all; RADOS: durable at completion, as every write). */
#define STORE_WRITE_DEFER 2u

/* Writes LEN bytes at OFF, creating the object if needed.  Without
 * STORE_WRITE_SYNC the data is durable after store_flush() (RADOS is
 * always durable at completion). */
int store_write (struct store *st, const char *oid, const void *buf,
                 size_t len, uint64_t off, unsigned flags);

/* Replaces the whole object's data with BUF (creating it if needed). */
int store_write_full (struct store *st, const char *oid, const void *buf,
                      size_t len, unsigned flags);

/* Creates OID with content BUF only if it does not exist: durable when
 * it returns, or with STORE_WRITE_DEFER after the next store_flush.
 * Errors: -EEXIST; -EINVAL (STORE_WRITE_SYNC and STORE_WRITE_DEFER). */
int store_create_excl (struct store *st, const char *oid, const void *buf,
                       size_t len, unsigned flags);

/* Makes LEN bytes at OFF read as zeros, deallocating where the backend
 * can.  A range past the end does not extend the object.
 * Errors: -ENOENT. */
int store_zero (struct store *st, const char *oid, uint64_t off,
                uint64_t len);

/* Sets the object's size (growing with a hole, or cutting).
 * Errors: -ENOENT. */
int store_truncate (struct store *st, const char *oid, uint64_t size);

/* Removes the object with its xattrs and omap.  Under a snapshot context
 * the data stays readable at older snapshots.  Errors: -ENOENT. */
int store_remove (struct store *st, const char *oid);

/* Size of the object (at SNAP).  Errors: -ENOENT. */
int store_stat (struct store *st, const char *oid, uint64_t snap,
                uint64_t *size);

/* Makes durable every write that completed before the call, through this
 * handle or any other handle of the same store_open() (its clones, other
 * threads): when it returns 0 they all are, even if another flush was
 * syncing at the time (a concurrent flush waits for or joins a sync that
 * covers its writes; it never returns early).
 * Errors are sticky: once a sync of the store's data failed (in a flush,
 * a STORE_WRITE_SYNC write, or in the background for a file the local
 * backend evicted from its cache), the data written before it may be
 * lost even if a later sync succeeds (the kernel reports a writeback
 * error once and may drop the pages), so every later store_flush of this
 * store_open() and its clones fails with the same error (-EIO, or
 * -ENOSPC/-EDQUOT) until it is closed and opened again; the caller must
 * treat the unflushed data as lost (a new open re-reads what is on disk).
 * RADOS acknowledges a write only once it is durable, so there a flush
 * has nothing to wait for and a failed write fails itself. */
int store_flush (struct store *st);

/* ---- Asynchronous data I/O (the NBD server keeps many in flight) ------ */

/* Called once when the operation ends, with the value the synchronous
 * call would have returned (LEN for a read, 0 for a write, or -errno).
 * When RET < 0, this thread's vbk_error() names the backend, the
 * operation and the object while CB runs
 * ("store local: aio_write: vbk_data.1f.0000000000000003: Input/output
 * error"), so the caller can log or keep it. */
typedef void (*store_aio_cb) (void *arg, ssize_t ret);

/* Start the operation and return 0, or return -errno without calling CB.
 * BUF must stay valid until CB runs. */
int store_aio_read (struct store *st, const char *oid, void *buf, size_t len,
                    uint64_t off, uint64_t snap, store_aio_cb cb, void *arg);
int store_aio_write (struct store *st, const char *oid, const void *buf,
                     size_t len, uint64_t off, unsigned flags,
                     store_aio_cb cb, void *arg);

/* ---- Small metadata --------------------------------------------------- */

/* Xattrs: values up to 64 KiB.  An object with xattrs exists (for
 * store_stat) even when it holds no data.
 * get returns the value's length (copying at most LEN bytes);
 * errors: -ENOENT (no object), -ENODATA (no such xattr), -ERANGE never:
 * a short buffer truncates. */
ssize_t store_xattr_get (struct store *st, const char *oid, const char *name,
                         void *buf, size_t len);
int store_xattr_set (struct store *st, const char *oid, const char *name,
                     const void *val, size_t len);
/* Errors: -ENOENT, -ENODATA. */
int store_xattr_rm (struct store *st, const char *oid, const char *name);

/* Compare-and-set: sets xattr NAME to NEW only if it currently equals
 * OLD byte for byte; atomic against every other client.
 * Errors: -ECANCELED (the value differs or is missing), -ENOENT. */
int store_xattr_cas (struct store *st, const char *oid, const char *name,
                     const void *old, size_t oldlen,
                     const void *new, size_t newlen);

/* Returns the value's length.  Errors: -ENOENT (no object or no key). */
/* Omap: a sorted map of keys to values (up to 64 KiB each) on OID,
 * created with the object if needed. */
int store_omap_set (struct store *st, const char *oid, const char *key,
                    const void *val, size_t len);
ssize_t store_omap_get (struct store *st, const char *oid, const char *key,
                        void *buf, size_t len);
/* Errors: -ENOENT (no object or no key). */
int store_omap_rm (struct store *st, const char *oid, const char *key);

/* Calls CB for each key greater than AFTER ("" for the first), in
 * byte order, at most MAX keys.  A non-zero return from CB stops the
 * walk and is returned.  Errors: -ENOENT (no object). */
typedef int (*store_omap_cb) (void *arg, const char *key, const void *val,
                              size_t len);
int store_omap_list (struct store *st, const char *oid, const char *after,
                     size_t max, store_omap_cb cb, void *arg);

/* One change for store_meta_set: an xattr, or with OMAP an omap key. */
struct store_meta_set {
  bool omap;
  const char *name;
  const void *val;
  size_t len;
};

/* Sets the xattrs and omap keys SETS[0..N) on OID (created if needed),
 * durable when it returns: on RADOS in one atomic write op (one round
 * trip); on the local store under one lock with one sync pass (one
 * journal commit instead of one per value), a crash leaving each value
 * old or new; elsewhere one after another in order, stopping at the
 * first failure (the earlier ones stay set).  For records that belong
 * together, and for many keys at once.  N = 0 does nothing.  Errors:
 * those of store_xattr_set and store_omap_set; -E2BIG (a value over
 * 64 KiB) sets nothing. */
int store_meta_set (struct store *st, const char *oid,
                    const struct store_meta_set *sets, size_t n);

/* ---- Exclusive locks with a duration ---------------------------------- */

struct store_lock_info {
  char client[STORE_CLIENT_MAX];   /* holder's store_client_id() */
  char cookie[STORE_NAME_MAX + 1];
  char desc[STORE_NAME_MAX + 1];
  uint64_t expires_ms;             /* wall clock, ms since the epoch;
                                      0 = no expiry */
};

#define STORE_LOCK_RENEW 1u   /* renew our own lock (else -EEXIST) */

/* Takes the exclusive lock NAME on OID for DURATION_MS (0 = until
 * released), identified by COOKIE.  The object need not exist.
 * Errors: -EBUSY (someone else holds it), -EEXIST (we already hold it
 * and STORE_LOCK_RENEW was not given), -ENOENT (RENEW given but we no
 * longer hold it: it expired and someone else may have taken it). */
int store_lock (struct store *st, const char *oid, const char *name,
                const char *cookie, const char *desc,
                uint32_t duration_ms, unsigned flags);

/* Errors: -ENOENT (we do not hold it). */
int store_unlock (struct store *st, const char *oid, const char *name,
                  const char *cookie);

/* Removes another client's lock.  Errors: -ENOENT (not held so). */
int store_lock_break (struct store *st, const char *oid, const char *name,
                      const char *client, const char *cookie);

/* Who holds the lock now.  Errors: -ENOENT (nobody, or it expired). */
int store_lock_get (struct store *st, const char *oid, const char *name,
                    struct store_lock_info *info);

/* ---- Watch / notify --------------------------------------------------- */

/* Runs on a backend thread for each notify on the watched object.  It
 * may fill *REPLY (up to REPLY_MAX bytes, at most 4 KiB) and set
 * *REPLY_LEN; the notifier receives it.  ERR != 0 reports a broken
 * watch (-ENOTCONN: fenced or disconnected) with no payload. */
typedef void (*store_watch_cb) (void *arg, int err, const void *payload,
                                size_t len, void *reply, size_t reply_max,
                                size_t *reply_len);

struct store_watch;

int store_watch (struct store *st, const char *oid, store_watch_cb cb,
                 void *arg, struct store_watch **out);
/* Returns when no callback of this watch is running or will run. */
void store_unwatch (struct store_watch *w);

struct store_notify_reply {
  char client[STORE_CLIENT_MAX];
  void *data;              /* owned by the reply array */
  size_t len;
};

/* Sends PAYLOAD to every watcher of OID and waits up to TIMEOUT_MS for
 * their replies.  *REPLIES (freed with store_notify_replies_free) gets
 * one entry per watcher that answered; *TIMED_OUT the number that did
 * not.  Returns 0 even if some timed out.  Errors: -ENOENT (no object
 * and no watchers). */
int store_notify (struct store *st, const char *oid, const void *payload,
                  size_t len, uint32_t timeout_ms,
                  struct store_notify_reply **replies, size_t *nreplies,
                  size_t *timed_out);
void store_notify_replies_free (struct store_notify_reply *r, size_t n);

/* ---- Fencing ---------------------------------------------------------- */

/* Fences CLIENT (another client's store_client_id()) for EXPIRE_S
 * seconds (0 = the backend's default, one hour): from the moment this
 * returns, or at most a short while later on RADOS (see notes), every
 * operation of that client fails with -ESHUTDOWN and its watches break
 * with -ENOTCONN.  Never blocks indefinitely.  Local store: the expiry
 * counts in this boot's CLOCK_BOOTTIME (a wall-clock change neither ends
 * nor extends it); the call waits a bounded time (5 s) for the client's
 * changes in flight and kills the client's process if it is stopped or
 * stuck inside one, so that nothing of it lands afterwards.
 * Errors: -ETIMEDOUT (local: a change of CLIENT is still in flight and
 * its process could not be killed from here, e.g. it is this process;
 * the fence is recorded, but the caller must not rely on it yet). */
int store_fence (struct store *st, const char *client, uint32_t expire_s);

/* ---- Snapshots (copy-on-write) ---------------------------------------- */

/* Allocates a new snapshot id, greater than every earlier one. */
int store_snap_create (struct store *st, uint64_t *snap);

/* Forgets snapshot SNAP: its clones are freed once no other snapshot
 * needs them.  Errors: -ENOENT. */
int store_snap_remove (struct store *st, uint64_t snap);

/* Sets this handle's write context: SEQ is the newest snapshot id that
 * exists for the objects written through it, SNAPS the existing
 * snapshot ids, newest first.  The first write (or remove, zero,
 * truncate) of an object after a new snapshot preserves the object's
 * previous state for reads at those snapshots.  SEQ 0 with N 0 means
 * no snapshots. */
int store_set_snap_context (struct store *st, uint64_t seq,
                            const uint64_t *snaps, size_t n);

/* Rolls OID back to its state at SNAP (an object absent at SNAP is
 * removed).  Errors: -ENOENT (no such snapshot). */
int store_snap_rollback (struct store *st, const char *oid, uint64_t snap);

/* ---- Fault injection (fault: backend only) ---------------------------- */

/* Operation classes for fault injection. */
enum store_op {
  STORE_OP_READ = 1u << 0,
  STORE_OP_WRITE = 1u << 1,    /* write, write_full, create_excl, zero,
                                  truncate, remove, flush */
  STORE_OP_META = 1u << 2,     /* xattr, omap */
  STORE_OP_LOCK = 1u << 3,     /* lock, watch, notify, fence */
  STORE_OP_SNAP = 1u << 4,
  STORE_OP_ALL = 0x1f,
};

/* Makes calls of the classes in OPS fail with ERR (a negative errno):
 * the NTH matching call from now on (1 = the next) and, if STICKY, every
 * one after it; with TRIGGER_FILE non-NULL, only while that file exists.
 * OPS 0 clears.  Errors: -EINVAL (not a fault: store). */
int store_fault_set (struct store *st, unsigned ops, int err,
                     unsigned long nth, int sticky, const char *trigger_file);

/* Number of calls of the classes in OPS seen so far (fault: only). */
unsigned long store_fault_count (struct store *st, unsigned ops);

/* Bytes returned by reads so far, synchronous and asynchronous (fault:
 * only). */
uint64_t store_fault_bytes_read (struct store *st);

#endif /* VBK_STORE_H */
