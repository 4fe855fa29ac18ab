/* SPDX-License-Identifier: MIT
 *
 * metrics.h - counters of vbk-blockd, served in the Prometheus text
 * format (GET /metrics over HTTP/1.0) by --metrics HOST:PORT.
 *
 * DESIGN: the daemon's code counts through the small API below; every
 * counter is an atomic, so counting costs a few relaxed atomic adds on
 * the request path and takes no lock.  Per-export counters live in a
 * struct nbd_srv_export_metrics that is created on first use of a name
 * and lives as long as the registry (Prometheus counters must never go
 * back, so they outlive the open export; the number of names is bounded
 * by the images that were opened).  Every function accepts NULL for the
 * registry or the export's counters and then does nothing, so code runs
 * the same with metrics off.  The metric names are listed in metrics.c
 * and in docs/METRICS.md.
 */
#ifndef VBK_BLOCKD_METRICS_H
#define VBK_BLOCKD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct nbd_srv_metrics;
struct nbd_srv_export_metrics;

/* The request kinds counted (the "op" label). */
enum nbd_srv_metric_op {
  NBD_SRV_MOP_READ,
  NBD_SRV_MOP_WRITE,
  NBD_SRV_MOP_FLUSH,
  NBD_SRV_MOP_TRIM,
  NBD_SRV_MOP_ZERO,
  NBD_SRV_MOP_CACHE,
  NBD_SRV_MOP_BLOCK_STATUS,
  NBD_SRV_MOP_COUNT
};

/* The transports of a connection (the "transport" label). */
enum nbd_srv_metric_transport {
  NBD_SRV_MT_UNIX,
  NBD_SRV_MT_TCP,           /* plain */
  NBD_SRV_MT_TLS,           /* TCP after STARTTLS */
  NBD_SRV_MT_COUNT
};

/* Errors: -ENOMEM. */
int nbd_srv_metrics_new (struct nbd_srv_metrics **out);
/* Stops the HTTP thread if started; no export counters may be in use.
 * NULL is a no-op. */
void nbd_srv_metrics_free (struct nbd_srv_metrics *m);
/* Listens on HOST:PORT ([V6]:PORT) and serves GET /metrics on a thread
 * of its own (one client at a time, each with a 2 s deadline).
 * Errors: -EINVAL (bad address), bind/listen errors, with a message. */
int nbd_srv_metrics_start (struct nbd_srv_metrics *m, const char *hostport);
/* The port actually bound (for HOST:0), or 0. */
int nbd_srv_metrics_port (const struct nbd_srv_metrics *m);

/* The counters of export NAME, created on first use; NULL if M is NULL
 * or memory ran out (counting is then skipped).  Valid until
 * nbd_srv_metrics_free. */
struct nbd_srv_export_metrics *
nbd_srv_metrics_export (struct nbd_srv_metrics *m, const char *name);

/* Monotonic clock in ns, for request start times. */
uint64_t nbd_srv_metrics_now_ns (void);

/* A request of BYTES starts: counted in flight. */
void nbd_srv_metrics_req_begin (struct nbd_srv_export_metrics *em,
                                enum nbd_srv_metric_op op, uint64_t bytes);
/* It ended (after req_begin with the same BYTES), START_NS from
 * nbd_srv_metrics_now_ns; ERROR: answered with an error. */
void nbd_srv_metrics_req_end (struct nbd_srv_export_metrics *em,
                              enum nbd_srv_metric_op op, uint64_t bytes,
                              uint64_t start_ns, bool error);

/* The lease: taken with EPOCH, let go (hand-off, release, close), lost
 * (fenced or taken over: another host took it without our consent). */
void nbd_srv_metrics_lease_acquired (struct nbd_srv_export_metrics *em,
                                     uint64_t epoch);
void nbd_srv_metrics_lease_released (struct nbd_srv_export_metrics *em);
void nbd_srv_metrics_lease_lost (struct nbd_srv_export_metrics *em);
/* Writes were held for a snapshot for PAUSE_US. */
void nbd_srv_metrics_snapshot_pause (struct nbd_srv_export_metrics *em,
                                     uint64_t pause_us);

/* A connection opened (DELTA 1) or closed (-1); a plain TCP connection
 * that becomes TLS is counted with DELTA -1 on TCP and 1 on TLS. */
void nbd_srv_metrics_conn (struct nbd_srv_metrics *m,
                           enum nbd_srv_metric_transport t, int delta);
/* A TLS handshake succeeded, or failed with ERR (-ETIMEDOUT, -EACCES,
 * -ECONNRESET, others: the "reason" label). */
void nbd_srv_metrics_tls_handshake (struct nbd_srv_metrics *m, int err);
/* A client was refused an export by the access lists, or was refused
 * because it did not start TLS where it must. */
void nbd_srv_metrics_access_denied (struct nbd_srv_metrics *m);
void nbd_srv_metrics_tls_required (struct nbd_srv_metrics *m);

/* Renders every metric in the Prometheus text format (0.0.4) into a
 * malloc'd string (caller frees).  Errors: -ENOMEM. */
int nbd_srv_metrics_format (struct nbd_srv_metrics *m, char **out,
                            size_t *len);

#endif /* VBK_BLOCKD_METRICS_H */
