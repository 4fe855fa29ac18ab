/* SPDX-License-Identifier: MIT
 *
 * metrics.c - vbk-blockd's counters and a tiny HTTP/1.0 responder that
 * serves them in the Prometheus text format (GET /metrics).
 *
 * DESIGN: counters are relaxed atomics updated from any thread; the
 * responder reads them without a lock, so one scrape is not a snapshot
 * of one instant (each value is exact, the set may straddle a request;
 * Prometheus expects no more).  Per-export counters are created on first
 * use under a mutex and never freed before the registry, so a pointer to
 * them stays valid for the daemon's life.  The responder is one thread
 * with one client at a time: it reads the request line with a 2 s
 * deadline, answers, closes; a slow or hostile client delays a scrape by
 * at most that, never the NBD path.
 *
 * The metrics (also in docs/METRICS.md); labels in braces:
 *   vbk_blockd_requests_total{export,op}          requests answered
 *   vbk_blockd_request_bytes_total{export,op}     bytes of those requests
 *                                                 (read/write/trim/zero/
 *                                                 cache lengths)
 *   vbk_blockd_request_errors_total{export,op}    requests answered with
 *                                                 an error
 *   vbk_blockd_request_duration_seconds{export,op} histogram (_bucket{le},
 *                                                 _sum, _count): from the
 *                                                 request's arrival to its
 *                                                 reply
 *   vbk_blockd_requests_in_flight{export}         requests started, not
 *                                                 yet answered
 *   vbk_blockd_bytes_in_flight{export}            their bytes
 *   vbk_blockd_lease_held{export}                 1 while we hold the
 *                                                 image's lease
 *   vbk_blockd_lease_epoch{export}                epoch of our last
 *                                                 acquisition
 *   vbk_blockd_lease_acquisitions_total{export}   leases taken
 *   vbk_blockd_lease_releases_total{export}       leases let go (hand-off
 *                                                 to another host,
 *                                                 operator release, close)
 *   vbk_blockd_lease_lost_total{export}           leases lost (fenced or
 *                                                 taken over by another
 *                                                 host)
 *   vbk_blockd_snapshot_pauses_total{export}      snapshots that held
 *                                                 writes
 *   vbk_blockd_snapshot_pause_seconds_total{export} time writes were held
 *   vbk_blockd_connections{transport}             open connections (unix,
 *                                                 tcp, tls)
 *   vbk_blockd_connections_total{transport}       connections opened (a
 *                                                 TCP one that starts TLS
 *                                                 counts once on each)
 *   vbk_blockd_tls_handshakes_total               TLS handshakes completed
 *   vbk_blockd_tls_failures_total{reason}         TLS handshakes failed:
 *                                                 timeout, auth, reset,
 *                                                 protocol
 *   vbk_blockd_tls_required_total                 options refused because
 *                                                 TLS had not started
 *   vbk_blockd_access_denied_total                exports refused by the
 *                                                 access lists
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "common/log.h"
#include "metrics.h"

/* Histogram buckets, in microseconds (the "le" labels in seconds). */
static const uint64_t bucket_us[] = {
  50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000,
  250000, 500000, 1000000, 2500000, 5000000, 10000000,
};
#define NBUCKETS (sizeof bucket_us / sizeof bucket_us[0])

static const char *const op_names[NBD_SRV_MOP_COUNT] = {
  "read", "write", "flush", "trim", "zero", "cache", "block_status",
};
static const char *const transport_names[NBD_SRV_MT_COUNT] = {
  "unix", "tcp", "tls",
};
enum { TLS_TIMEOUT, TLS_AUTH, TLS_RESET, TLS_PROTOCOL, TLS_NREASONS };
static const char *const tls_reasons[TLS_NREASONS] = {
  "timeout", "auth", "reset", "protocol",
};

struct op_counters {
  atomic_uint_fast64_t requests, bytes, errors;
  atomic_uint_fast64_t sum_ns;
  atomic_uint_fast64_t buckets[NBUCKETS];   /* not cumulative */
};

struct nbd_srv_export_metrics {
  char *name;
  struct op_counters ops[NBD_SRV_MOP_COUNT];
  atomic_uint_fast64_t inflight, inflight_bytes;
  atomic_uint_fast64_t lease_epoch, lease_acq, lease_rel, lease_lost;
  atomic_bool lease_held;
  atomic_uint_fast64_t snap_pauses, snap_pause_us;
};

struct nbd_srv_metrics {
  pthread_mutex_t lock;     /* exports, nexports (growth) */
  struct nbd_srv_export_metrics **exports;
  size_t nexports, cap;
  atomic_uint_fast64_t conns[NBD_SRV_MT_COUNT];
  atomic_uint_fast64_t conns_total[NBD_SRV_MT_COUNT];
  atomic_uint_fast64_t tls_ok, tls_fail[TLS_NREASONS];
  atomic_uint_fast64_t tls_required, access_denied;
  /* the responder */
  int lfd;
  int port;
  int stop_pipe[2];
  pthread_t thread;
  bool running;
};

#define ADD(x, n) atomic_fetch_add_explicit (&(x), (n), memory_order_relaxed)
#define SUB(x, n) atomic_fetch_sub_explicit (&(x), (n), memory_order_relaxed)
#define GET(x) atomic_load_explicit (&(x), memory_order_relaxed)

int
nbd_srv_metrics_new (struct nbd_srv_metrics **out)
{
  struct nbd_srv_metrics *m = calloc (1, sizeof *m);

  *out = NULL;
  if (!m)
    return vbk_errno (-ENOMEM, "metrics");
  pthread_mutex_init (&m->lock, NULL);
  m->lfd = -1;
  m->stop_pipe[0] = m->stop_pipe[1] = -1;
  *out = m;
  return 0;
}

void
nbd_srv_metrics_free (struct nbd_srv_metrics *m)
{
  if (!m)
    return;
  if (m->running)
    {
      char c = 0;
      if (write (m->stop_pipe[1], &c, 1) < 0)
        log_warn ("metrics: cannot stop the responder: %m");
      pthread_join (m->thread, NULL);
    }
  if (m->lfd >= 0)
    close (m->lfd);
  if (m->stop_pipe[0] >= 0)
    {
      close (m->stop_pipe[0]);
      close (m->stop_pipe[1]);
    }
  for (size_t i = 0; i < m->nexports; i++)
    {
      free (m->exports[i]->name);
      free (m->exports[i]);
    }
  free (m->exports);
  pthread_mutex_destroy (&m->lock);
  free (m);
}

struct nbd_srv_export_metrics *
nbd_srv_metrics_export (struct nbd_srv_metrics *m, const char *name)
{
  struct nbd_srv_export_metrics *em = NULL;

  if (!m)
    return NULL;
  pthread_mutex_lock (&m->lock);
  for (size_t i = 0; i < m->nexports; i++)
    if (!strcmp (m->exports[i]->name, name))
      {
        em = m->exports[i];
        goto out;
      }
  if (m->nexports == m->cap)
    {
      size_t cap = m->cap ? 2 * m->cap : 16;
      void *v = realloc (m->exports, cap * sizeof *m->exports);
      if (!v)
        goto out;
      m->exports = v;
      m->cap = cap;
    }
  em = calloc (1, sizeof *em);
  if (em && !(em->name = strdup (name)))
    {
      free (em);
      em = NULL;
    }
  if (em)
    m->exports[m->nexports++] = em;
 out:
  pthread_mutex_unlock (&m->lock);
  return em;
}

uint64_t
nbd_srv_metrics_now_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void
nbd_srv_metrics_req_begin (struct nbd_srv_export_metrics *em,
                           enum nbd_srv_metric_op op, uint64_t bytes)
{
  if (!em)
    return;
  ADD (em->inflight, 1);
  ADD (em->inflight_bytes, bytes);
}

void
nbd_srv_metrics_req_end (struct nbd_srv_export_metrics *em,
                         enum nbd_srv_metric_op op, uint64_t bytes,
                         uint64_t start_ns, bool error)
{
  struct op_counters *c;
  uint64_t ns, us;
  size_t b;

  if (!em || (unsigned) op >= NBD_SRV_MOP_COUNT)
    return;
  c = &em->ops[op];
  ns = nbd_srv_metrics_now_ns ();
  ns = ns > start_ns ? ns - start_ns : 0;
  us = ns / 1000;
  SUB (em->inflight, 1);
  SUB (em->inflight_bytes, bytes);
  ADD (c->requests, 1);
  ADD (c->bytes, bytes);
  if (error)
    ADD (c->errors, 1);
  ADD (c->sum_ns, ns);
  for (b = 0; b < NBUCKETS && us > bucket_us[b]; b++)
    ;
  if (b < NBUCKETS)
    ADD (c->buckets[b], 1);
  /* Past the last bucket: only in +Inf (= the count). */
}

void
nbd_srv_metrics_lease_acquired (struct nbd_srv_export_metrics *em,
                                uint64_t epoch)
{
  if (!em)
    return;
  atomic_store (&em->lease_epoch, epoch);
  atomic_store (&em->lease_held, true);
  ADD (em->lease_acq, 1);
}

void
nbd_srv_metrics_lease_released (struct nbd_srv_export_metrics *em)
{
  if (!em)
    return;
  atomic_store (&em->lease_held, false);
  ADD (em->lease_rel, 1);
}

void
nbd_srv_metrics_lease_lost (struct nbd_srv_export_metrics *em)
{
  if (!em)
    return;
  atomic_store (&em->lease_held, false);
  ADD (em->lease_lost, 1);
}

void
nbd_srv_metrics_snapshot_pause (struct nbd_srv_export_metrics *em,
                                uint64_t pause_us)
{
  if (!em)
    return;
  ADD (em->snap_pauses, 1);
  ADD (em->snap_pause_us, pause_us);
}

void
nbd_srv_metrics_conn (struct nbd_srv_metrics *m,
                      enum nbd_srv_metric_transport t, int delta)
{
  if (!m || (unsigned) t >= NBD_SRV_MT_COUNT)
    return;
  if (delta > 0)
    {
      ADD (m->conns[t], 1);
      ADD (m->conns_total[t], 1);
    }
  else
    SUB (m->conns[t], 1);
}

void
nbd_srv_metrics_tls_handshake (struct nbd_srv_metrics *m, int err)
{
  if (!m)
    return;
  if (err == 0)
    ADD (m->tls_ok, 1);
  else if (err == -ETIMEDOUT)
    ADD (m->tls_fail[TLS_TIMEOUT], 1);
  else if (err == -EACCES)
    ADD (m->tls_fail[TLS_AUTH], 1);
  else if (err == -ECONNRESET || err == -EPIPE)
    ADD (m->tls_fail[TLS_RESET], 1);
  else
    ADD (m->tls_fail[TLS_PROTOCOL], 1);
}

void
nbd_srv_metrics_access_denied (struct nbd_srv_metrics *m)
{
  if (m)
    ADD (m->access_denied, 1);
}

void
nbd_srv_metrics_tls_required (struct nbd_srv_metrics *m)
{
  if (m)
    ADD (m->tls_required, 1);
}

/* ---- Text format -------------------------------------------------------- */

struct sbuf {
  char *p;
  size_t len, cap;
  bool oom;
};

static void __attribute__ ((format (printf, 2, 3)))
out (struct sbuf *b, const char *fmt, ...)
{
  va_list ap;
  int n;

  if (b->oom)
    return;
  for (;;)
    {
      va_start (ap, fmt);
      n = vsnprintf (b->p + b->len, b->cap - b->len, fmt, ap);
      va_end (ap);
      if (n < 0)
        {
          b->oom = true;
          return;
        }
      if ((size_t) n < b->cap - b->len)
        {
          b->len += n;
          return;
        }
      {
        size_t cap = b->cap * 2 + n + 1;
        char *p = realloc (b->p, cap);
        if (!p)
          {
            b->oom = true;
            return;
          }
        b->p = p;
        b->cap = cap;
      }
    }
}

/* A label value: backslash, quote and newline escaped (the format's
 * rule).  Export names are image names, but the rule costs nothing. */
static const char *
label (const char *s, char *buf, size_t size)
{
  size_t j = 0;

  for (; *s && j + 3 < size; s++)
    {
      if (*s == '\\' || *s == '"')
        buf[j++] = '\\', buf[j++] = *s;
      else if (*s == '\n')
        buf[j++] = '\\', buf[j++] = 'n';
      else
        buf[j++] = *s;
    }
  buf[j] = 0;
  return buf;
}

static void
header (struct sbuf *b, const char *name, const char *type, const char *help)
{
  out (b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A counter with one line per export and operation: the member at
 * offset FIELD of each export's struct op_counters. */
static void
per_op_counter (struct sbuf *b, struct nbd_srv_export_metrics **exps,
                size_t nexp, const char *name, const char *help, size_t field)
{
  header (b, name, "counter", help);
  for (size_t i = 0; i < nexp; i++)
    for (int op = 0; op < NBD_SRV_MOP_COUNT; op++)
      {
        atomic_uint_fast64_t *v = (atomic_uint_fast64_t *)
          ((char *) &exps[i]->ops[op] + field);
        char l[512];

        out (b, "%s{export=\"%s\",op=\"%s\"} %" PRIu64 "\n", name,
             label (exps[i]->name, l, sizeof l), op_names[op],
             (uint64_t) GET (*v));
      }
}

/* One line per export (EXPS[0..N-1], each as E) of the value EXPR. */
#define PER_EXPORT(b, exps, n, mname, type, help, expr)                     \
  do {                                                                    \
    header ((b), (mname), (type), (help));                                 \
    for (size_t i_ = 0; i_ < (n); i_++)                                   \
      {                                                                   \
        struct nbd_srv_export_metrics *e = (exps)[i_];                    \
        char l_[512];                                                     \
        out ((b), "%s{export=\"%s\"} %s\n", (mname),                      \
             label (e->name, l_, sizeof l_), (expr));                     \
      }                                                                   \
  } while (0)

static const char *
u64 (char *buf, uint64_t v)
{
  snprintf (buf, 32, "%" PRIu64, v);
  return buf;
}

int
nbd_srv_metrics_format (struct nbd_srv_metrics *m, char **outp, size_t *lenp)
{
  struct sbuf b = { NULL, 0, 0, false };
  char n1[32];
  size_t nexp;
  struct nbd_srv_export_metrics **exps;

  *outp = NULL;
  *lenp = 0;
  b.cap = 4096;
  if (!(b.p = malloc (b.cap)))
    return vbk_errno (-ENOMEM, "metrics");
  b.p[0] = 0;

  /* Entries never move once created, but the array may be reallocated:
   * copy the pointers under the lock. */
  pthread_mutex_lock (&m->lock);
  nexp = m->nexports;
  exps = malloc ((nexp ? nexp : 1) * sizeof *exps);
  if (exps)
    memcpy (exps, m->exports, nexp * sizeof *exps);
  pthread_mutex_unlock (&m->lock);
  if (!exps)
    {
      free (b.p);
      return vbk_errno (-ENOMEM, "metrics");
    }
  {

    per_op_counter (&b, exps, nexp, "vbk_blockd_requests_total",
                    "NBD requests answered, by export and kind.",
                    offsetof (struct op_counters, requests));
    per_op_counter (&b, exps, nexp, "vbk_blockd_request_bytes_total",
                    "Bytes of the NBD requests answered (their length).",
                    offsetof (struct op_counters, bytes));
    per_op_counter (&b, exps, nexp, "vbk_blockd_request_errors_total",
                    "NBD requests answered with an error.",
                    offsetof (struct op_counters, errors));
    header (&b, "vbk_blockd_request_duration_seconds", "histogram",
            "Time from a request's arrival to its reply.");
    for (size_t i = 0; i < nexp; i++)
      for (int op = 0; op < NBD_SRV_MOP_COUNT; op++)
        {
          struct op_counters *c = &exps[i]->ops[op];
          uint64_t cum = 0, count = GET (c->requests);
          char l[512];
          label (exps[i]->name, l, sizeof l);
          for (size_t k = 0; k < NBUCKETS; k++)
            {
              cum += GET (c->buckets[k]);
              out (&b, "vbk_blockd_request_duration_seconds_bucket{export="
                   "\"%s\",op=\"%s\",le=\"%g\"} %" PRIu64 "\n", l,
                   op_names[op], bucket_us[k] / 1e6, cum);
            }
          /* +Inf must be at least every finite bucket (the counters
           * are read one by one while requests end). */
          if (count < cum)
            count = cum;
          out (&b, "vbk_blockd_request_duration_seconds_bucket{export="
               "\"%s\",op=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", l,
               op_names[op], count);
          out (&b, "vbk_blockd_request_duration_seconds_sum{export="
               "\"%s\",op=\"%s\"} %.9f\n", l, op_names[op],
               GET (c->sum_ns) / 1e9);
          out (&b, "vbk_blockd_request_duration_seconds_count{export="
               "\"%s\",op=\"%s\"} %" PRIu64 "\n", l, op_names[op], count);
        }
    PER_EXPORT (&b, exps, nexp, "vbk_blockd_requests_in_flight", "gauge",
                "Requests started and not yet answered.",
                u64 (n1, GET (e->inflight)));
    PER_EXPORT (&b, exps, nexp, "vbk_blockd_bytes_in_flight", "gauge",
                "Bytes of the requests in flight.",
                u64 (n1, GET (e->inflight_bytes)));
    PER_EXPORT (&b, exps, nexp, "vbk_blockd_lease_held", "gauge",
                "1 while this daemon holds the image's lease.",
                atomic_load (&e->lease_held) ? "1" : "0");
    PER_EXPORT (&b, exps, nexp, "vbk_blockd_lease_epoch", "gauge",
                "Epoch of the lease this daemon last took.",
                u64 (n1, GET (e->lease_epoch)));
    PER_EXPORT (&b, exps, nexp, "vbk_blockd_lease_acquisitions_total", "counter",
                "Leases taken.", u64 (n1, GET (e->lease_acq)));
    PER_EXPORT (&b, exps, nexp, "vbk_blockd_lease_releases_total", "counter",
                "Leases let go: hand-off, operator release, close.",
                u64 (n1, GET (e->lease_rel)));
    PER_EXPORT (&b, exps, nexp, "vbk_blockd_lease_lost_total", "counter",
                "Leases lost: fenced or taken over by another host.",
                u64 (n1, GET (e->lease_lost)));
    PER_EXPORT (&b, exps, nexp, "vbk_blockd_snapshot_pauses_total", "counter",
                "Snapshots that held this export's writes.",
                u64 (n1, GET (e->snap_pauses)));
    {
      char f[48];
      PER_EXPORT (&b, exps, nexp, "vbk_blockd_snapshot_pause_seconds_total",
                  "counter", "Time writes were held for snapshots.",
                  (snprintf (f, sizeof f, "%.6f", GET (e->snap_pause_us) / 1e6),
                   f));
    }
  }
  free (exps);
  header (&b, "vbk_blockd_connections", "gauge",
          "Open client connections, by transport.");
  for (int t = 0; t < NBD_SRV_MT_COUNT; t++)
    out (&b, "vbk_blockd_connections{transport=\"%s\"} %" PRIu64 "\n",
         transport_names[t], (uint64_t) GET (m->conns[t]));
  header (&b, "vbk_blockd_connections_total", "counter",
          "Client connections opened, by transport.");
  for (int t = 0; t < NBD_SRV_MT_COUNT; t++)
    out (&b, "vbk_blockd_connections_total{transport=\"%s\"} %" PRIu64 "\n",
         transport_names[t], (uint64_t) GET (m->conns_total[t]));
  header (&b, "vbk_blockd_tls_handshakes_total", "counter",
          "TLS handshakes completed.");
  out (&b, "vbk_blockd_tls_handshakes_total %" PRIu64 "\n",
       (uint64_t) GET (m->tls_ok));
  header (&b, "vbk_blockd_tls_failures_total", "counter",
          "TLS handshakes that failed, by reason.");
  for (int r = 0; r < TLS_NREASONS; r++)
    out (&b, "vbk_blockd_tls_failures_total{reason=\"%s\"} %" PRIu64 "\n",
         tls_reasons[r], (uint64_t) GET (m->tls_fail[r]));
  header (&b, "vbk_blockd_tls_required_total", "counter",
          "Options refused because the client had not started TLS.");
  out (&b, "vbk_blockd_tls_required_total %" PRIu64 "\n",
       (uint64_t) GET (m->tls_required));
  header (&b, "vbk_blockd_access_denied_total", "counter",
          "Exports refused by the access lists.");
  out (&b, "vbk_blockd_access_denied_total %" PRIu64 "\n",
       (uint64_t) GET (m->access_denied));

  if (b.oom)
    {
      free (b.p);
      return vbk_errno (-ENOMEM, "metrics");
    }
  *outp = b.p;
  *lenp = b.len;
  return 0;
}

/* ---- The HTTP responder ------------------------------------------------- */

#define HTTP_DEADLINE_MS 2000
#define HTTP_MAX_REQUEST 4096

static void
send_text (int fd, const char *status, const char *ctype, const char *body,
           size_t len)
{
  char head[256];
  int n = snprintf (head, sizeof head,
                    "HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %zu"
                    "\r\nConnection: close\r\n\r\n", status, ctype, len);
  struct iovec iov[2] = { { head, n }, { (void *) body, len } };
  struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 2 };

  while (msg.msg_iovlen > 0)
    {
      ssize_t w = sendmsg (fd, &msg, MSG_NOSIGNAL);
      if (w <= 0)
        return;                 /* SO_SNDTIMEO ran out, or the client left */
      while (msg.msg_iovlen > 0 && (size_t) w >= msg.msg_iov->iov_len)
        {
          w -= msg.msg_iov->iov_len;
          msg.msg_iov++;
          msg.msg_iovlen--;
        }
      if (msg.msg_iovlen > 0)
        {
          msg.msg_iov->iov_base = (char *) msg.msg_iov->iov_base + w;
          msg.msg_iov->iov_len -= w;
        }
    }
}

static void
serve_one (struct nbd_srv_metrics *m, int fd)
{
  char req[HTTP_MAX_REQUEST + 1];
  size_t len = 0;
  struct timespec start;
  struct timeval tv = { HTTP_DEADLINE_MS / 1000, 0 };

  clock_gettime (CLOCK_MONOTONIC, &start);
  setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  /* Read up to the end of the headers (or the first line of an HTTP/0.9
   * style request), within the deadline. */
  while (len < HTTP_MAX_REQUEST)
    {
      struct timespec now;
      struct pollfd p = { .fd = fd, .events = POLLIN };
      long left;
      ssize_t r;

      clock_gettime (CLOCK_MONOTONIC, &now);
      left = HTTP_DEADLINE_MS - ((now.tv_sec - start.tv_sec) * 1000
                                 + (now.tv_nsec - start.tv_nsec) / 1000000);
      if (left <= 0 || poll (&p, 1, (int) left) <= 0)
        return;
      r = recv (fd, req + len, HTTP_MAX_REQUEST - len, 0);
      if (r <= 0)
        return;
      len += r;
      req[len] = 0;
      if (strstr (req, "\r\n\r\n") || strstr (req, "\n\n"))
        break;
    }
  req[len] = 0;
  if (strncmp (req, "GET ", 4) != 0)
    {
      static const char msg[] = "only GET\n";
      send_text (fd, "405 Method Not Allowed", "text/plain", msg,
                 sizeof msg - 1);
      return;
    }
  if (strncmp (req + 4, "/metrics", 8) != 0
      || (req[12] != ' ' && req[12] != '?' && req[12] != '\r'
          && req[12] != '\n'))
    {
      static const char msg[] = "not found: try /metrics\n";
      send_text (fd, "404 Not Found", "text/plain", msg, sizeof msg - 1);
      return;
    }
  {
    char *body;
    size_t blen;
    if (nbd_srv_metrics_format (m, &body, &blen) < 0)
      {
        static const char msg[] = "out of memory\n";
        send_text (fd, "500 Internal Server Error", "text/plain", msg,
                   sizeof msg - 1);
        return;
      }
    send_text (fd, "200 OK", "text/plain; version=0.0.4; charset=utf-8",
               body, blen);
    free (body);
  }
}

static void *
responder (void *arg)
{
  struct nbd_srv_metrics *m = arg;

  for (;;)
    {
      struct pollfd p[2] = {
        { .fd = m->lfd, .events = POLLIN },
        { .fd = m->stop_pipe[0], .events = POLLIN },
      };
      int fd;

      if (poll (p, 2, -1) < 0)
        {
          if (errno == EINTR)
            continue;
          log_error ("metrics: poll: %m");
          return NULL;
        }
      if (p[1].revents)
        return NULL;
      if (!p[0].revents)
        continue;
      fd = accept4 (m->lfd, NULL, NULL, SOCK_CLOEXEC);
      if (fd < 0)
        continue;
      serve_one (m, fd);
      close (fd);
    }
}

int
nbd_srv_metrics_port (const struct nbd_srv_metrics *m)
{
  return m ? m->port : 0;
}

int
nbd_srv_metrics_start (struct nbd_srv_metrics *m, const char *hostport)
{
  struct addrinfo hints = {
    .ai_family = AF_UNSPEC,
    .ai_socktype = SOCK_STREAM,
    .ai_flags = AI_PASSIVE,
  };
  struct addrinfo *res = NULL;
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  char host[256], *port;
  int one = 1, r, fd;

  snprintf (host, sizeof host, "%s", hostport);
  port = strrchr (host, ':');
  if (!port || !port[1])
    return vbk_errno (-EINVAL, "metrics: %s: expected HOST:PORT", hostport);
  *port++ = 0;
  if (host[0] == '[' && host[strlen (host) - 1] == ']')
    {
      memmove (host, host + 1, strlen (host));
      host[strlen (host) - 1] = 0;
    }
  r = getaddrinfo (*host ? host : NULL, port, &hints, &res);
  if (r)
    return vbk_errno (-EINVAL, "metrics: %s: %s", hostport,
                      gai_strerror (r));
  fd = socket (res->ai_family, res->ai_socktype | SOCK_CLOEXEC,
               res->ai_protocol);
  if (fd < 0)
    {
      r = vbk_errno (-errno, "metrics: socket");
      freeaddrinfo (res);
      return r;
    }
  setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind (fd, res->ai_addr, res->ai_addrlen) < 0 || listen (fd, 16) < 0)
    {
      r = vbk_errno (-errno, "metrics: listen on %s", hostport);
      freeaddrinfo (res);
      close (fd);
      return r;
    }
  freeaddrinfo (res);
  if (getsockname (fd, (struct sockaddr *) &ss, &sl) == 0)
    m->port = ntohs (ss.ss_family == AF_INET6
                     ? ((struct sockaddr_in6 *) &ss)->sin6_port
                     : ((struct sockaddr_in *) &ss)->sin_port);
  if (pipe2 (m->stop_pipe, O_CLOEXEC) < 0)
    {
      r = vbk_errno (-errno, "metrics: pipe");
      close (fd);
      return r;
    }
  m->lfd = fd;
  r = pthread_create (&m->thread, NULL, responder, m);
  if (r)
    return vbk_errno (-r, "metrics: thread");
  m->running = true;
  log_info ("metrics on %s (port %d): GET /metrics", hostport, m->port);
  return 0;
}
