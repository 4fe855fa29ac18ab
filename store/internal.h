/* SPDX-License-Identifier: MIT
 *
 * internal.h - the backend interface of the store library.
 *
 * A backend is a table of functions (struct store_ops) over an opaque
 * handle.  store.c checks arguments, dispatches and records errors that
 * a backend returned without a message; backends implement the
 * contracts documented in store.h.  New members only at the end.
 */
#ifndef VBK_STORE_INTERNAL_H
#define VBK_STORE_INTERNAL_H

#include "store.h"

struct store_ops {
  const char *name;

  /* Opens the backend for the part of the URI after "NAME:". */
  int (*open) (const char *arg, void **h);
  /* A handle sharing the connection with its own snapshot context. */
  int (*clone) (void *parent, void **h);
  void (*close) (void *h);
  const char *(*client_id) (void *h);

  ssize_t (*read) (void *h, const char *oid, void *buf, size_t len,
                   uint64_t off, uint64_t snap);
  int (*write) (void *h, const char *oid, const void *buf, size_t len,
                uint64_t off, unsigned flags);
  int (*write_full) (void *h, const char *oid, const void *buf, size_t len,
                     unsigned flags);
  int (*create_excl) (void *h, const char *oid, const void *buf, size_t len,
                      unsigned flags);
  int (*zero) (void *h, const char *oid, uint64_t off, uint64_t len);
  int (*truncate) (void *h, const char *oid, uint64_t size);
  int (*remove) (void *h, const char *oid);
  int (*stat) (void *h, const char *oid, uint64_t snap, uint64_t *size);
  int (*flush) (void *h);

  int (*aio_read) (void *h, const char *oid, void *buf, size_t len,
                   uint64_t off, uint64_t snap, store_aio_cb cb, void *arg);
  int (*aio_write) (void *h, const char *oid, const void *buf, size_t len,
                    uint64_t off, unsigned flags, store_aio_cb cb, void *arg);

  ssize_t (*xattr_get) (void *h, const char *oid, const char *name,
                        void *buf, size_t len);
  int (*xattr_set) (void *h, const char *oid, const char *name,
                    const void *val, size_t len);
  int (*xattr_rm) (void *h, const char *oid, const char *name);
  int (*xattr_cas) (void *h, const char *oid, const char *name,
                    const void *old, size_t oldlen,
                    const void *new, size_t newlen);

  int (*omap_set) (void *h, const char *oid, const char *key,
                   const void *val, size_t len);
  ssize_t (*omap_get) (void *h, const char *oid, const char *key,
                       void *buf, size_t len);
  int (*omap_rm) (void *h, const char *oid, const char *key);
  int (*omap_list) (void *h, const char *oid, const char *after, size_t max,
                    store_omap_cb cb, void *arg);

  int (*lock) (void *h, const char *oid, const char *name, const char *cookie,
               const char *desc, uint32_t duration_ms, unsigned flags);
  int (*unlock) (void *h, const char *oid, const char *name,
                 const char *cookie);
  int (*lock_break) (void *h, const char *oid, const char *name,
                     const char *client, const char *cookie);
  int (*lock_get) (void *h, const char *oid, const char *name,
                   struct store_lock_info *info);

  /* The backend allocates *W; store.c wraps it. */
  int (*watch) (void *h, const char *oid, store_watch_cb cb, void *arg,
                void **w);
  void (*unwatch) (void *h, void *w);
  int (*notify) (void *h, const char *oid, const void *payload, size_t len,
                 uint32_t timeout_ms, struct store_notify_reply **replies,
                 size_t *nreplies, size_t *timed_out);

  int (*fence) (void *h, const char *client, uint32_t expire_s);

  int (*snap_create) (void *h, uint64_t *snap);
  int (*snap_remove) (void *h, uint64_t snap);
  int (*set_snap_context) (void *h, uint64_t seq, const uint64_t *snaps,
                           size_t n);
  int (*snap_rollback) (void *h, const char *oid, uint64_t snap);

  /* The fault backend's controls (NULL in the others); store.c reaches
   * them through this table, so store.c and fault.c call each other only
   * through the public API and the table, never directly. */
  int (*fault_set) (void *h, unsigned ops, int err, unsigned long nth,
                    int sticky, const char *trigger_file);
  /* Calls of the classes in OPS seen so far. */
  unsigned long (*fault_count) (void *h, unsigned ops);
  /* Bytes read through the inner store so far. */
  uint64_t (*fault_bytes_read) (void *h);

  /* store_omap_set_many; NULL: store.c calls omap_set N times. */
  int (*omap_set_many) (void *h, const char *oid, const char *const *keys,
                        const void *const *vals, const size_t *lens,
                        size_t n);
};

extern const struct store_ops store_local_ops;
extern const struct store_ops store_rados_ops;
extern const struct store_ops store_fault_ops;

#endif /* VBK_STORE_INTERNAL_H */
