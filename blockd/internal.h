/* SPDX-License-Identifier: MIT
 *
 * internal.h - private interfaces of vbk-blockd, grouped by the file
 * that implements them.
 *
 * DESIGN: one struct nbd_srv_server holds what the daemon shares (the
 * store, the table of open exports, the worker pool, the list of live
 * connections, the daemon-wide memory budget).  Each client connection
 * has one reader thread (session.c) that runs the handshake
 * (handshake.c) and then parses requests and starts them (protocol.c).
 * Each connection owns its send side (connection.c): the thread that
 * completes a request (a store thread, a worker) hands its reply to the
 * connection, which sends what the socket takes at once without
 * blocking and queues the rest for the connection's own writer thread,
 * so no shared thread ever waits on one client's socket.  Bytes move
 * through a table of operations (struct nbd_srv_conn_ops: a plain
 * socket today, TLS later).  Exports
 * (exports.c) are open images shared by every connection to the same
 * image, found through an RCU hash table.  A writable export has its own
 * store connection and the image's lease (writes.c): writes wait for the
 * lease, and a lost lease kills the export, not the daemon.
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

#include "backup/backup.h"
#include "common/workq.h"
#include "image/image.h"
#include "locks/lease.h"
#include "snapshot/snapshot.h"
#include "store/store.h"

/* The maximum block size we advertise (NBD_INFO_BLOCK_SIZE); it also
 * binds WRITE_ZEROES without FAST_ZERO. */
#define NBD_SRV_MAX_REQUEST (32u << 20)
/* Largest READ/WRITE/CACHE payload we accept: nbdkit's limit, for
 * clients that never saw the advertised maximum (NBD_OPT_EXPORT_NAME). */
#define NBD_SRV_MAX_PAYLOAD (64u << 20)
/* Per-connection limit on requests in flight (backpressure on the
 * reader); their bytes are bounded by the conn_memory setting. */
#define NBD_SRV_MAX_INFLIGHT 128
/* Option payloads past this are a denial of service: hard disconnect. */
#define NBD_SRV_MAX_OPTION (64u << 10)
/* Largest request run inline when inline_io is set. */
#define NBD_SRV_INLINE_MAX (256u << 10)

/* ---- main.c / config.c -------------------------------------------------- */

/* The settings of one export: an [export IMAGE] section of the config
 * file.  -1: as the daemon's. */
struct nbd_srv_export_cfg {
  char *image;
  int exclusive;
  int read_only;
};

struct nbd_srv_config {
  char *store_uri;          /* local:/var/lib/vbk */
  char *repo_uri;           /* backup repository; NULL: no backup exports */
  char *socket_path;        /* NULL: no Unix socket */
  char *listen_addr;        /* HOST:PORT, NULL: no TCP */
  char *host_id;            /* default: the host name */
  uint32_t lease_duration_ms;
  bool exclusive;           /* leases refuse automatic hand-off */
  bool read_only;
  bool foreground;
  int verbose;
  unsigned workers;         /* threads for synchronous image calls */
  unsigned poll_us;         /* busy polling of a connection, 0: none */
  char *socket_group;       /* chown the Unix socket to it; NULL: none */
  unsigned max_conns;       /* connections at once, all clients */
  unsigned max_conns_per_client; /* per peer address (TCP) or uid (Unix) */
  uint32_t handshake_timeout_ms; /* from accept to NBD_OPT_GO */
  uint32_t send_timeout_ms; /* a client that takes no reply bytes this
                               long is dropped */
  uint32_t idle_timeout_ms; /* an idle connection frees its buffers */
  uint64_t conn_memory;     /* bytes in flight per connection */
  uint64_t max_memory;      /* bytes in flight, daemon-wide */
  struct nbd_srv_export_cfg *exports;
  size_t n_exports;
  /* TLS (tls.h), access lists (access.h), metrics (metrics.h) */
  int tls;                  /* enum nbd_srv_tls_mode; -1: not set */
  char *tls_certificates;   /* DIR in QEMU's layout, NULL: none */
  char *tls_psk;            /* FILE of identity:hexkey, NULL: none */
  char *tls_priority;       /* GnuTLS priority string, NULL: default */
  bool tls_verify_peer;     /* X.509 clients must send a certificate */
  uint32_t tls_timeout_ms;  /* deadline of a TLS handshake */
  bool insecure_tcp;        /* plain TCP on a non-loopback address */
  char *metrics_addr;       /* HOST:PORT, NULL: no metrics */
  struct nbd_srv_acl *acl;  /* allow lists; NULL: none */
};

/* --tls: off (plain NBD only), on (STARTTLS offered, plain allowed),
 * require (nothing but STARTTLS before TLS). */
enum nbd_srv_tls_mode {
  NBD_SRV_TLS_OFF,
  NBD_SRV_TLS_ON,
  NBD_SRV_TLS_REQUIRE,
};

/* Sets the defaults.  */
void nbd_srv_config_init (struct nbd_srv_config *cfg);
/* Reads FILE (inih "key = value"; an optional [blockd] section).
 * Returns 0 or -errno with a message. */
int nbd_srv_config_load (struct nbd_srv_config *cfg, const char *file);
/* Sets one key; returns 0, or -EINVAL for an unknown key or bad value. */
int nbd_srv_config_set (struct nbd_srv_config *cfg, const char *key,
                        const char *value);
/* Sets KEY (exclusive or read_only) for IMAGE's export. */
int nbd_srv_config_set_export (struct nbd_srv_config *cfg, const char *image,
                               const char *key, const char *value);
/* IMAGE's settings, or NULL (the daemon's apply). */
const struct nbd_srv_export_cfg *
nbd_srv_config_export (const struct nbd_srv_config *cfg, const char *image);
/* Copies the per-export settings of SRC into DST (which has none). */
int nbd_srv_config_copy_exports (struct nbd_srv_config *dst,
                                 const struct nbd_srv_config *src);
void nbd_srv_config_free (struct nbd_srv_config *cfg);
/* After every setting is in: settles the TLS mode (not set: "require"
 * when credentials are given, else "off") and refuses what is unsafe or
 * incomplete: TLS without credentials, a non-loopback --listen without
 * tls=require or a non-loopback --metrics address, unless insecure_tcp.  Sets *WARNING
 * (static text, or NULL) for what main.c must log at every start.
 * Returns 0 or -EINVAL with a message. */
int nbd_srv_config_check (struct nbd_srv_config *cfg, const char **warning);
/* Whether HOST:PORT (or [V6]:PORT) names a loopback address:
 * 127.0.0.0/8, ::1 or localhost. */
bool nbd_srv_addr_is_loopback (const char *hostport);

/* ---- exports.c ---------------------------------------------------------- */

struct nbd_srv_export {
  char *name;               /* as clients name it: IMAGE, IMAGE@SNAP or
                               backup:IMAGE/ID */
  char *image;              /* the image's name */
  const char *snap;         /* in NAME after the '@'; NULL: the live image */
  struct image *img;        /* NULL for a backup export */
  struct backup_reader *backup;  /* a backup export, else NULL */
  uint64_t size;
  uint32_t object_size;
  bool read_only;
  atomic_uint refs;
  /* writable live exports (writes.c) */
  struct store *store;      /* this export's own store connection */
  struct lease *lease;
  pthread_mutex_t snap_lock; /* snaps against the lease's command hook */
  struct snap_server *snaps;
  atomic_bool trusted;      /* the image's object map is ours to trust */
  atomic_bool ever_held;    /* this export has held the lease */
  atomic_bool dead;         /* the lease is lost: writes and flushes fail */
  struct nbd_srv_export_metrics *em;  /* metrics (set by the first
                                         connection), or NULL */
  uint64_t frozen_ns;       /* metrics: a group freeze began (writes.c) */
  char *client_id;          /* store client of a writable export */
  /* private to exports.c */
  struct nbd_srv_exports *table;
  struct nbd_srv_export *closing_next;  /* table->closing */
  struct cds_lfht_node node;
  struct rcu_head rcu;
};

struct nbd_srv_exports;

/* ST serves read-only and snapshot exports; writable ones open their own
 * connection to CFG->store_uri; backup exports read CFG->repo_uri's
 * repository (opened at the first one). */
int nbd_srv_exports_new (struct store *st, const struct nbd_srv_config *cfg,
                         struct nbd_srv_exports **out);
/* All exports must have been put. */
void nbd_srv_exports_free (struct nbd_srv_exports *t);
/* Finds the open export NAME (IMAGE, or IMAGE@SNAP: that snapshot, read
 * only, or backup:IMAGE/ID: that backup, read only) or opens it; an
 * export whose lease was lost is replaced by a fresh one.  The caller
 * puts it.
 * Errors: -ENOENT (no such image, snapshot or backup; no repository),
 * -EINVAL (bad name), store and repository errors, with a message. */
int nbd_srv_export_get (struct nbd_srv_exports *t, const char *name,
                        struct nbd_srv_export **out);
/* Drops a reference; the last one closes (flushes) the image. */
void nbd_srv_export_put (struct nbd_srv_export *e);
/* Splits NAME into IMAGE and SNAP (NULL when NAME has no '@') and checks
 * both.  Caller frees *IMAGE.  Errors: -EINVAL, -ENOMEM. */
int nbd_srv_export_name_split (const char *name, char **image,
                               const char **snap);

/* ---- writes.c ----------------------------------------------------------- */

/* What a writable export needs for its lease. */
struct nbd_srv_lease_cfg {
  char *store_uri;
  char *host_id;
  char *addr;
  uint32_t duration_ms;
  bool exclusive;
  /* Whether CLIENT is the store client of one of this process's
   * exports, open or closing (exports.c; called with its open lock
   * held): those are never fenced as an earlier run. */
  bool (*own_client) (void *arg, const char *client);
  void *own_arg;
};

/* Opens E->image writable on a new connection to the store, untrusted,
 * with its lease (taken by the first write) and snapshot server. */
int nbd_srv_export_open_rw (struct nbd_srv_export *e,
                            const struct nbd_srv_lease_cfg *lc);
/* Store clients of this process's other exports (LC->own_client) are
 * never fenced as "an earlier run". */
/* Stops the snapshot server, releases the lease (flushing), closes the
 * image and the connection.  No request may be in flight. */
void nbd_srv_export_close_rw (struct nbd_srv_export *e);
/* Before a write (WRITE, TRIM, WRITE_ZEROES): waits for the lease.
 * Returns 1 if the write must be ended with nbd_srv_write_end, 0 if no
 * lease guards this export, or -errno (-EIO: the lease is lost; -EBUSY:
 * refused by an exclusive holder or as two writers; -ETIMEDOUT) with a
 * message. */
int nbd_srv_write_begin (struct nbd_srv_export *e);
void nbd_srv_write_end (struct nbd_srv_export *e);
/* FLUSH: nothing to do if the lease was never held here (or for a
 * backup); -EIO once it is lost. */
int nbd_srv_export_flush (struct nbd_srv_export *e);

/* ---- workers.c ---------------------------------------------------------- */

struct nbd_srv_req;
struct nbd_srv_workers;

/* What a worker does with a queued request. */
typedef void (*nbd_srv_job_fn) (struct nbd_srv_req *req);

int nbd_srv_workers_new (unsigned n, nbd_srv_job_fn run,
                         struct nbd_srv_workers **out);
/* Runs the queued jobs, then stops the threads. */
void nbd_srv_workers_free (struct nbd_srv_workers *w);
/* Queues REQ; a worker calls RUN (REQ). */
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
  uint64_t poll_ns;         /* busy polling of an idle connection */
  atomic_int pollers;       /* connections polling now */
  int max_pollers;
  atomic_bool quit;
  atomic_uint_fast64_t quit_ns;  /* when the stop began (monotonic) */

  /* limits (config) */
  unsigned max_conns, max_conns_per_client;
  uint64_t handshake_ns, send_timeout_ns, idle_ns;
  uint64_t conn_memory;

  /* Bytes of requests in flight, daemon-wide (connection.c). */
  atomic_uint_fast64_t mem_used;
  uint64_t mem_limit;
  atomic_int mem_waiters;
  pthread_mutex_t mem_lock;
  pthread_cond_t mem_cond;
  /* BLOCK_STATUS that reads a whole map or change log: one at a time. */
  pthread_mutex_t status_lock;

  pthread_mutex_t lock;     /* protects conns, nconns */
  pthread_cond_t conns_done;
  struct nbd_srv_conn *conns;
  unsigned nconns;

  int listen_fds[8];
  int nlisten;
  char *socket_path;        /* to unlink at exit */
  int quit_pipe[2];

  /* TLS (tls.h, starttls.c), access lists (access.h), metrics */
  struct nbd_srv_tls *tls;  /* credentials; NULL: TLS off */
  int tls_mode;             /* enum nbd_srv_tls_mode */
  uint32_t tls_timeout_ms;
  struct nbd_srv_acl *acl;  /* a copy of the config's; NULL: none */
  struct nbd_srv_metrics *metrics;   /* NULL: off */
};

/* Opens the store and sets up a server without sockets (the fuzzer uses
 * that and nbd_srv_session_run directly). */
int nbd_srv_server_new (const struct nbd_srv_config *cfg,
                        struct nbd_srv_server **out);
/* Listens on the socket and/or TCP address of CFG.  A file at the
 * socket path is replaced only if it is a socket nobody answers on. */
int nbd_srv_server_listen (struct nbd_srv_server *srv,
                           const struct nbd_srv_config *cfg);
/* Accepts connections until nbd_srv_server_stop; then waits for every
 * connection to finish its requests. */
int nbd_srv_server_run (struct nbd_srv_server *srv);
/* Async-signal-safe: asks the accept loop to stop. */
void nbd_srv_server_stop (struct nbd_srv_server *srv);
void nbd_srv_server_free (struct nbd_srv_server *srv);

/* A log line that may repeat at a high rate (accept errors, refused
 * clients): at most a few per second, then a count of those dropped.
 * Returns the number dropped since the last one logged, or -1 to drop
 * this one. */
struct nbd_srv_ratelimit {
  pthread_mutex_t lock;
  uint64_t window_ns;
  unsigned in_window, dropped;
};
#define NBD_SRV_RATELIMIT_INIT { PTHREAD_MUTEX_INITIALIZER, 0, 0, 0 }
long nbd_srv_ratelimit (struct nbd_srv_ratelimit *rl);

/* ---- connection.c ------------------------------------------------------- */

struct nbd_srv_req {
  struct nbd_srv_conn *conn;
  struct nbd_srv_req *next;  /* free list */
  struct workq_item wq;      /* the workers' queue (workers.c) */
  atomic_uint holds;         /* the starter's, and a queued reply's */
  uint16_t flags;
  uint16_t type;
  uint64_t handle;
  uint64_t offset;
  uint32_t count;
  size_t charged;            /* bytes counted in flight */
  uint64_t start_ns;         /* metrics: when the request arrived */
  int8_t mop;                /* metrics: the op counted, -1: none */
  bool failed;               /* metrics: answered with an error */
  char *buf;                 /* READ/WRITE data, reused */
  size_t cap;
  bool leased;               /* a write counted by the export's lease */
  /* structured READ: the extents of the range (holes are not read) */
  unsigned next_ext;
  uint32_t ext_len[8];
  bool ext_hole[8];
};

/* How a connection moves bytes: a plain socket today; TLS plugs in
 * here.  New members only at the end. */
struct nbd_srv_conn_ops {
  /* Like recv(2), never blocking: bytes, 0 at end of stream, or -1 with
   * errno (EAGAIN: nothing yet; poll c->fd for POLLIN). */
  ssize_t (*recv) (struct nbd_srv_conn *c, void *buf, size_t len);
  /* Like sendmsg(2), never blocking: bytes taken, or -1 with errno
   * (EAGAIN: poll c->fd for POLLOUT). */
  ssize_t (*send) (struct nbd_srv_conn *c, const struct iovec *iov, int n);
  /* shutdown(2): wakes a reader (end of stream) and fails sends. */
  void (*shutdown) (struct nbd_srv_conn *c, int how);
  /* Before the socket closes, no other thread using it: ends the
   * transport cleanly (TLS close_notify).  NULL: nothing to do. */
  void (*close) (struct nbd_srv_conn *c);
};

extern const struct nbd_srv_conn_ops nbd_srv_socket_ops;

struct nbd_srv_reply;

struct nbd_srv_conn {
  struct nbd_srv_server *srv;
  struct nbd_srv_conn *next, *prev;   /* srv->conns */
  int fd;
  const struct nbd_srv_conn_ops *ops;
  char peer[128];
  char client[64];           /* whom per-client limits count: address or uid */

  /* buffered reading (reader thread only) */
  char *rbuf;
  size_t rpos, rlen;
  uint64_t deadline_ns;      /* reads fail after this; 0: none */
  bool trimmed;              /* idle: the buffers were given back */
  unsigned spin_misses;      /* busy polls in a row that found nothing */
  unsigned spin_skip;        /* waits left before the next busy poll */
  unsigned long replies_seen; /* replies when the last request came */

  /* negotiated state (reader thread only, read-only in completions) */
  bool no_zeroes;
  bool structured;
  bool meta_base_alloc;      /* base:allocation selected (context id 1) */
  char **meta_bitmaps;       /* qemu:dirty-bitmap:SNAP selected: the
                                SNAPs, context ids 2, 3, ... */
  unsigned meta_nbitmaps;
  char *meta_export;         /* name given with SET_META_CONTEXT */
  struct nbd_srv_export *exp;
  uint16_t eflags;

  /* the send side: replies the socket did not take at once wait here
   * for the writer thread */
  pthread_mutex_t send_lock;
  pthread_cond_t send_cond;
  struct nbd_srv_reply *rq_head, *rq_tail;
  size_t rq_copied;          /* bytes copied into queued replies */
  uint64_t send_progress_ns; /* when the socket last took bytes */
  bool send_failed;
  bool corked;               /* replies queue until nbd_srv_conn_uncork */
  unsigned long replies;     /* replies handed to the send side so far
                                (atomic: the reader reads it) */
  unsigned corked_n;         /* replies queued while corked */
  bool writer_allowed;       /* transmission: a reply may start the writer */
  bool writer_running, writer_stop;
  pthread_t writer;

  pthread_mutex_t lock;      /* inflight, free list */
  pthread_cond_t cond;
  unsigned inflight;
  size_t inflight_bytes;
  struct nbd_srv_req *free_reqs;
  unsigned nfree;
  size_t free_bytes;

  /* TLS, access, metrics (reader thread; read-only in completions) */
  bool tcp;                  /* a TCP client (else the Unix socket) */
  struct nbd_srv_tls_session *tls;   /* after NBD_OPT_STARTTLS */
  bool read_only;            /* the access lists allow reading only */
  struct nbd_srv_export_metrics *em; /* the export's counters, or NULL */
};

/* A new connection on FD (owned from now on, closed by _free). */
struct nbd_srv_conn *nbd_srv_conn_new (struct nbd_srv_server *srv, int fd,
                                       const char *peer, const char *client);
/* Waits for queued replies to go (or fail), stops the writer, closes
 * the socket, frees.  No request may be in flight. */
void nbd_srv_conn_free (struct nbd_srv_conn *c);
/* Lets replies queue (before transmission): the writer thread starts
 * with the first reply the socket does not take at once.  Returns 0 or
 * -errno. */
int nbd_srv_conn_start_writer (struct nbd_srv_conn *c);
/* Lets the writer send what is queued (or give up on the client, as
 * the send timeout says), then stops it. */
void nbd_srv_conn_stop_writer (struct nbd_srv_conn *c);
/* Whether the connection should stop reading requests: the server is
 * stopping or the client can no longer be answered. */
bool nbd_srv_conn_should_quit (struct nbd_srv_conn *c);

/* Reads exactly LEN bytes.  Returns 0, or -1 on EOF/error/timeout. */
int nbd_srv_conn_read (struct nbd_srv_conn *c, void *buf, size_t len);
/* Reads and drops LEN bytes.  Returns 0 or -1. */
int nbd_srv_conn_skip (struct nbd_srv_conn *c, uint64_t len);
/* Queues a reply: sends what the socket takes now and leaves the rest
 * to the writer thread; never blocks on the socket.  Bytes of the iovec
 * inside HOLD's buffer are sent from there (HOLD, if not NULL, stays
 * alive until they are); everything else is copied.  Returns 0 or -1
 * (the connection has failed: the reader will stop). */
int nbd_srv_conn_reply (struct nbd_srv_conn *c, const struct iovec *iov,
                        int n, struct nbd_srv_req *hold);
static inline int
nbd_srv_conn_send (struct nbd_srv_conn *c, const struct iovec *iov, int n)
{
  return nbd_srv_conn_reply (c, iov, n, NULL);
}
/* On the reader thread: while corked, replies (from any thread) queue
 * instead of going out one by one; uncorking sends the queue with as few
 * calls of the transport as it takes (a TLS session packs them into few
 * records), leaving what the socket does not take to the writer.  The
 * reader corks while it has whole requests buffered and uncorks before
 * anything that may wait: reading from the socket, room in the budgets,
 * the lease, the end of transmission. */
void nbd_srv_conn_cork (struct nbd_srv_conn *c);
void nbd_srv_conn_uncork (struct nbd_srv_conn *c);
/* For the handshake, on the reader thread: writes the whole iovec,
 * waiting for the socket at most until the connection's deadline or the
 * send timeout.  Returns 0 or -1. */
int nbd_srv_conn_write_all (struct nbd_srv_conn *c, struct iovec *iov, int n);

/* Waits until a request of BYTES fits the connection's and the
 * daemon's budgets and counts it.  Returns false if the connection
 * must stop instead. */
bool nbd_srv_conn_wait_room (struct nbd_srv_conn *c, size_t bytes);
/* Undoes nbd_srv_conn_wait_room for a request never created. */
void nbd_srv_conn_release_room (struct nbd_srv_conn *c, size_t bytes);

/* A request with a buffer of BUFSIZE bytes, counted as CHARGED bytes in
 * flight (taken by nbd_srv_conn_wait_room). */
struct nbd_srv_req *nbd_srv_req_new (struct nbd_srv_conn *c, size_t bufsize,
                                     size_t charged);
/* Ends a request once its reply is out: returns it to the free list,
 * gives its bytes back, wakes the reader. */
void nbd_srv_req_done (struct nbd_srv_req *r);

/* ---- session.c ---------------------------------------------------------- */

/* Starts a detached thread serving C (registered in srv->conns). */
int nbd_srv_session_start (struct nbd_srv_conn *c);
/* Serves FD on the calling thread until the client goes away; closes FD
 * after every request has been answered. */
void nbd_srv_session_run (struct nbd_srv_server *srv, int fd,
                          const char *peer);
/* Adds C to the server's list; false (C not added) if the server is at
 * its connection limits. */
bool nbd_srv_session_register (struct nbd_srv_conn *c);

/* ---- starttls.c --------------------------------------------------------- */

/* After the NBD_REP_ACK of NBD_OPT_STARTTLS: runs the TLS handshake (its
 * deadline: the TLS timeout, within the connection's) and moves the
 * connection's operations to TLS.  Returns 0, or -1 with the failure
 * logged and counted (the connection must end). */
int nbd_srv_conn_starttls (struct nbd_srv_conn *c);
/* The client's TLS identity (PSK identity or certificate CN), or NULL. */
const char *nbd_srv_conn_identity (const struct nbd_srv_conn *c);
/* "alice", "(no identity)" or "(plain TCP)"/"(local)", for logs. */
const char *nbd_srv_conn_who (const struct nbd_srv_conn *c);
/* The transport label of C for the metrics. */
int nbd_srv_conn_transport (const struct nbd_srv_conn *c);

/* ---- handshake.c -------------------------------------------------------- */

/* Runs the fixed newstyle negotiation.  Returns 1 when transmission may
 * start (c->exp set), 0 when the client ended the session cleanly, or -1
 * on a protocol violation, I/O error or timeout. */
int nbd_srv_handshake (struct nbd_srv_conn *c);

/* Transmission flags of export E for connection C. */
uint16_t nbd_srv_export_flags (const struct nbd_srv_conn *c,
                               const struct nbd_srv_export *e);
/* Forgets the selected metadata contexts. */
void nbd_srv_meta_clear (struct nbd_srv_conn *c);

/* Context ids we give in NBD_OPT_SET_META_CONTEXT. */
#define NBD_SRV_META_ID_BASE 1
#define NBD_SRV_META_ID_BITMAP0 2

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

/* The workers' job (nbd_srv_workers_new): flush, trim, write zeroes. */
void nbd_srv_req_run_sync (struct nbd_srv_req *r);

/* Most bytes of image one BLOCK_STATUS reply describes: the protocol
 * lets a reply cover less than asked. */
#define NBD_SRV_STATUS_WINDOW (UINT32_C (1) << 30)

#endif /* VBK_BLOCKD_INTERNAL_H */
