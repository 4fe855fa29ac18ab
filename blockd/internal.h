/* SPDX-License-Identifier: MIT
 *
 * internal.h - private interfaces of vbk-blockd, grouped by the file
 * that implements them.
 *
 * DESIGN: one struct nbd_srv_server holds what the daemon shares (the
 * store, the table of open exports, the worker pool, the list of live
 * connections).  Each client connection has one reader thread
 * (connection.c) that runs the handshake (handshake.c) and then parses
 * requests and starts them (protocol.c); replies are sent by whichever
 * thread completes a request (a store thread for aio, a worker for
 * synchronous calls), serialised per connection by send_lock.  Exports
 * (exports.c) are open images shared by every connection to the same
 * image, found through an RCU hash table.
 */
#ifndef VBK_BLOCKD_INTERNAL_H
#define VBK_BLOCKD_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <urcu.h>
#include <urcu/rculfhash.h>

#include "image/image.h"
#include "store/store.h"

/* Largest READ/WRITE/CACHE payload we accept (and advertise). */
#define NBD_SRV_MAX_REQUEST (32u << 20)
/* Per-connection limits on work in flight (backpressure on the reader). */
#define NBD_SRV_MAX_INFLIGHT 128
#define NBD_SRV_MAX_INFLIGHT_BYTES (256u << 20)
/* Option payloads past this are a denial of service: hard disconnect. */
#define NBD_SRV_MAX_OPTION (64u << 10)
/* Largest request run inline when inline_io is set. */
#define NBD_SRV_INLINE_MAX (256u << 10)

/* ---- main.c / config.c -------------------------------------------------- */

struct nbd_srv_config {
  char *store_uri;          /* local:/var/lib/vbk */
  char *socket_path;        /* NULL: no Unix socket */
  char *listen_addr;        /* HOST:PORT, NULL: no TCP */
  char *host_id;
  bool read_only;
  bool foreground;
  int verbose;
  unsigned workers;         /* threads for synchronous image calls */
};

/* Sets the defaults.  */
void nbd_srv_config_init (struct nbd_srv_config *cfg);
/* Reads FILE (inih "key = value"; an optional [blockd] section).
 * Returns 0 or -errno with a message. */
int nbd_srv_config_load (struct nbd_srv_config *cfg, const char *file);
/* Sets one key; returns 0, or -EINVAL for an unknown key or bad value. */
int nbd_srv_config_set (struct nbd_srv_config *cfg, const char *key,
                        const char *value);
void nbd_srv_config_free (struct nbd_srv_config *cfg);

/* ---- exports.c ---------------------------------------------------------- */

struct nbd_srv_export {
  char *name;
  struct image *img;
  uint64_t size;
  uint32_t object_size;
  bool read_only;
  atomic_uint refs;
  /* private to exports.c */
  struct nbd_srv_exports *table;
  struct cds_lfht_node node;
  struct rcu_head rcu;
};

struct nbd_srv_exports;

int nbd_srv_exports_new (struct store *st, bool read_only,
                         struct nbd_srv_exports **out);
/* All exports must have been put. */
void nbd_srv_exports_free (struct nbd_srv_exports *t);
/* Finds the open export NAME or opens the image.  The caller puts it.
 * Errors: -ENOENT (no such image), -EINVAL (bad name), store errors. */
int nbd_srv_export_get (struct nbd_srv_exports *t, const char *name,
                        struct nbd_srv_export **out);
/* Drops a reference; the last one closes (flushes) the image. */
void nbd_srv_export_put (struct nbd_srv_export *e);

/* ---- workers.c ---------------------------------------------------------- */

struct nbd_srv_req;
struct nbd_srv_workers;

int nbd_srv_workers_new (unsigned n, struct nbd_srv_workers **out);
/* Runs the queued jobs, then stops the threads. */
void nbd_srv_workers_free (struct nbd_srv_workers *w);
/* Queues REQ; a worker calls nbd_srv_req_run_sync (REQ). */
void nbd_srv_workers_queue (struct nbd_srv_workers *w,
                            struct nbd_srv_req *req);

/* ---- server.c ----------------------------------------------------------- */

struct nbd_srv_conn;

struct nbd_srv_server {
  struct store *store;
  struct nbd_srv_exports *exports;
  struct nbd_srv_workers *workers;
  bool read_only;
  /* Small reads run on the reader thread (the local store: a page-cache
   * read costs less than a hand-off to a store thread).  Writes stay
   * asynchronous: the first write to an object waits for the object
   * map to be durable, which must not stall the pipeline. */
  bool inline_io;
  atomic_bool quit;

  pthread_mutex_t lock;     /* protects conns, nconns */
  pthread_cond_t conns_done;
  struct nbd_srv_conn *conns;
  unsigned nconns;

  int listen_fds[8];
  int nlisten;
  char *socket_path;        /* to unlink at exit */
  int quit_pipe[2];
};

/* Opens the store and sets up a server without sockets (the fuzzer uses
 * that and nbd_srv_conn_run directly). */
int nbd_srv_server_new (const struct nbd_srv_config *cfg,
                        struct nbd_srv_server **out);
/* Listens on the socket and/or TCP address of CFG. */
int nbd_srv_server_listen (struct nbd_srv_server *srv,
                           const struct nbd_srv_config *cfg);
/* Accepts connections until nbd_srv_server_stop; then waits for every
 * connection to finish its requests. */
int nbd_srv_server_run (struct nbd_srv_server *srv);
/* Async-signal-safe: asks the accept loop to stop. */
void nbd_srv_server_stop (struct nbd_srv_server *srv);
void nbd_srv_server_free (struct nbd_srv_server *srv);

/* ---- connection.c ------------------------------------------------------- */

struct nbd_srv_req {
  struct nbd_srv_conn *conn;
  struct nbd_srv_req *next;  /* free list, worker queue */
  uint16_t flags;
  uint16_t type;
  uint64_t handle;
  uint64_t offset;
  uint32_t count;
  char *buf;                 /* READ/WRITE data, reused */
  size_t cap;
  /* structured READ: the extents of the range (holes are not read) */
  unsigned next_ext;
  uint32_t ext_len[8];
  bool ext_hole[8];
};

struct nbd_srv_conn {
  struct nbd_srv_server *srv;
  struct nbd_srv_conn *next, *prev;   /* srv->conns */
  int fd;
  char peer[128];

  /* buffered reading (reader thread only) */
  char *rbuf;
  size_t rpos, rlen;

  /* negotiated state (reader thread only, read-only in completions) */
  bool no_zeroes;
  bool structured;
  bool meta_base_alloc;      /* base:allocation selected */
  char *meta_export;         /* name given with SET_META_CONTEXT */
  struct nbd_srv_export *exp;
  uint16_t eflags;

  pthread_mutex_t send_lock;
  bool send_failed;

  pthread_mutex_t lock;      /* inflight, free list */
  pthread_cond_t cond;
  unsigned inflight;
  size_t inflight_bytes;
  struct nbd_srv_req *free_reqs;
  unsigned nfree;
};

/* Starts a detached thread serving FD (owned from now on). */
int nbd_srv_conn_start (struct nbd_srv_server *srv, int fd,
                        const char *peer);
/* Serves FD on the calling thread until the client goes away; closes FD
 * after every request has been answered. */
void nbd_srv_conn_run (struct nbd_srv_server *srv, int fd, const char *peer);

/* Reads exactly LEN bytes.  Returns 0, or -1 on EOF/error. */
int nbd_srv_conn_read (struct nbd_srv_conn *c, void *buf, size_t len);
/* Reads and drops LEN bytes.  Returns 0 or -1. */
int nbd_srv_conn_skip (struct nbd_srv_conn *c, uint64_t len);
/* Writes the whole iovec under send_lock.  Returns 0 or -1 (and marks the
 * connection failed: the reader will stop). */
int nbd_srv_conn_send (struct nbd_srv_conn *c, struct iovec *iov, int n);
/* Unlocked variant for handshake (single thread). */
int nbd_srv_conn_write_all (struct nbd_srv_conn *c, struct iovec *iov, int n);

struct nbd_srv_req *nbd_srv_req_new (struct nbd_srv_conn *c, size_t bufsize);
/* Ends a request: returns it to the free list, wakes the reader. */
void nbd_srv_req_done (struct nbd_srv_req *r);

/* ---- handshake.c -------------------------------------------------------- */

/* Runs the fixed newstyle negotiation.  Returns 1 when transmission may
 * start (c->exp set), 0 when the client ended the session cleanly, or -1
 * on a protocol violation or I/O error. */
int nbd_srv_handshake (struct nbd_srv_conn *c);

/* Transmission flags of export E for connection C. */
uint16_t nbd_srv_export_flags (const struct nbd_srv_conn *c,
                               const struct nbd_srv_export *e);

/* ---- protocol.c --------------------------------------------------------- */

/* What validation needs to know about a connection (pure, unit-tested). */
struct nbd_srv_limits {
  uint64_t size;
  bool read_only;
  bool structured;
  bool meta;
};

/* Maps -errno (or errno) to an NBD error value; one table. */
uint32_t nbd_srv_errno_to_nbd (int err);

/* Decodes a 28-byte request header.  Returns 0, or -1 on bad magic. */
int nbd_srv_decode_request (const void *wire, struct nbd_srv_req *r);

/* Checks a decoded request.  Returns 0 if it may run, else the NBD error
 * to answer with. */
uint32_t nbd_srv_check_request (const struct nbd_srv_req *r,
                                const struct nbd_srv_limits *l);

/* Transmission phase: reads requests until NBD_CMD_DISC, EOF or a fatal
 * protocol error, starting each. */
void nbd_srv_transmission (struct nbd_srv_conn *c);

/* Called by a worker for requests queued with nbd_srv_workers_queue. */
void nbd_srv_req_run_sync (struct nbd_srv_req *r);

#endif /* VBK_BLOCKD_INTERNAL_H */
