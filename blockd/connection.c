/* SPDX-License-Identifier: MIT
 *
 * connection.c - one client connection: buffered reading, its own send
 * side, the request objects it recycles and the memory budgets.
 *
 * DESIGN: the reader thread owns the receive side: it reads through a
 * 64 KiB buffer (so that at queue depth N the headers of N small
 * requests cost one recv), copying large payloads straight into the
 * request buffer.  Reads stop at the connection's deadline (the
 * handshake's time limit); an idle connection in transmission gives its
 * cached buffers back after idle_ns.
 *
 * The send side belongs to the connection.  nbd_srv_conn_reply, called
 * by whichever thread finished a request, sends under send_lock what the
 * socket takes at once (never blocking: one sendmsg of header and data
 * in the common case, no copy) and queues the rest for the connection's
 * writer thread, which alone ever waits for the socket.  The writer
 * starts with the first reply that has to wait (a client that takes its
 * replies as fast as they come costs no thread for it).  Queued data
 * inside the request's own buffer is sent from there (the request is
 * held until then); headers and other small parts are copied.  So no
 * shared thread (store threads, workers) ever blocks on one client.
 * While the reader has whole requests buffered (a client with many in
 * flight) it corks the connection: replies queue, and uncorking sends up
 * to 16 of them with one call of the transport (one sendmsg, or for TLS
 * a few records and one send) instead of one call each; the reader
 * uncorks before anything that may wait, so a held-back reply never
 * waits for the client, the budgets or the lease.  A
 * client that takes no reply bytes for send_timeout (5 s once the daemon
 * is stopping), or whose queue of copied bytes grows past
 * QUEUE_COPIED_MAX (it sends requests and reads nothing), is dropped: the
 * socket is shut down, queued replies are discarded, the reader stops.
 *
 * Memory: a request's bytes count from the moment the reader makes room
 * for it until its reply is out, against the connection's budget
 * (conn_memory) and the daemon's (max_memory); the reader waits for room
 * (a big request waits, it never fails), so what a client can make us
 * hold is bounded, and so is the daemon.  Requests are recycled through
 * a free list holding at most KEEP_BYTES of buffers.  The connection
 * ends only when no request is in flight and every queued reply is out
 * (or the client is gone).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "internal.h"

#define RBUF_SIZE (64u << 10)
/* Payloads at least this large bypass the read buffer. */
#define RBUF_DIRECT (16u << 10)
/* Request buffers kept on the free list: each at most KEEP_BUF_MAX, in
 * all at most KEEP_BYTES, at most KEEP_REQS requests. */
#define KEEP_BUF_MAX (4u << 20)
#define KEEP_BYTES (8u << 20)
#define KEEP_REQS 64
/* A stopping daemon waits this long for a client to take its replies. */
#define QUIT_SEND_NS (UINT64_C (5) * 1000000000)

struct nbd_srv_reply {
  struct nbd_srv_reply *next;
  struct nbd_srv_req *hold;  /* done when the reply is out */
  size_t left;               /* bytes still to send */
  size_t bytes;              /* copied: counted in rq_copied */
  int n, cur;
  struct iovec iov[];        /* then the copied bytes */
};

/* ---- The plain socket ----------------------------------------------------- */

static ssize_t
sock_recv (struct nbd_srv_conn *c, void *buf, size_t len)
{
  return recv (c->fd, buf, len, MSG_DONTWAIT);
}

static ssize_t
sock_send (struct nbd_srv_conn *c, const struct iovec *iov, int n)
{
  struct msghdr msg = { 0 };

  msg.msg_iov = (struct iovec *) iov;
  msg.msg_iovlen = n > 1024 ? 1024 : n;
  return sendmsg (c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void
sock_shutdown (struct nbd_srv_conn *c, int how)
{
  shutdown (c->fd, how);
}

const struct nbd_srv_conn_ops nbd_srv_socket_ops = {
  .recv = sock_recv,
  .send = sock_send,
  .shutdown = sock_shutdown,
};

/* ---- Life ------------------------------------------------------------------ */

struct nbd_srv_conn *
nbd_srv_conn_new (struct nbd_srv_server *srv, int fd, const char *peer,
                  const char *client)
{
  struct nbd_srv_conn *c = calloc (1, sizeof *c);

  if (!c || !(c->rbuf = malloc (RBUF_SIZE)))
    {
      free (c);
      return NULL;
    }
  c->srv = srv;
  c->fd = fd;
  c->ops = &nbd_srv_socket_ops;
  snprintf (c->peer, sizeof c->peer, "%s", peer);
  snprintf (c->client, sizeof c->client, "%s", client);
  pthread_mutex_init (&c->send_lock, NULL);
  pthread_cond_init (&c->send_cond, NULL);
  pthread_mutex_init (&c->lock, NULL);
  pthread_cond_init (&c->cond, NULL);
  if (srv->handshake_ns)
    c->deadline_ns = now_mono_ns () + srv->handshake_ns;
  return c;
}

static void
req_free (struct nbd_srv_req *r)
{
  free (r->buf);
  free (r);
}

/* Gives back the cached request buffers (an idle connection). */
static void
conn_trim (struct nbd_srv_conn *c)
{
  struct nbd_srv_req *list;

  pthread_mutex_lock (&c->lock);
  list = c->free_reqs;
  c->free_reqs = NULL;
  c->nfree = 0;
  c->free_bytes = 0;
  pthread_mutex_unlock (&c->lock);
  while (list)
    {
      struct nbd_srv_req *q = list;
      list = q->next;
      req_free (q);
    }
}


void
nbd_srv_conn_free (struct nbd_srv_conn *c)
{
  if (!c)
    return;
  nbd_srv_conn_stop_writer (c);
  conn_trim (c);
  if (c->fd >= 0)
    close (c->fd);
  pthread_mutex_destroy (&c->send_lock);
  pthread_cond_destroy (&c->send_cond);
  pthread_mutex_destroy (&c->lock);
  pthread_cond_destroy (&c->cond);
  free (c->rbuf);
  free (c);
}

bool
nbd_srv_conn_should_quit (struct nbd_srv_conn *c)
{
  return atomic_load_explicit (&c->srv->quit, memory_order_relaxed)
    || __atomic_load_n (&c->send_failed, __ATOMIC_RELAXED);
}

/* ---- Reading ---------------------------------------------------------------- */

/* Busy polling.  A client with one request in flight (a guest doing
 * synchronous I/O) sends the next one tens of microseconds after our
 * reply; sleeping in recv and being woken again costs about as long as
 * serving the request.  So an idle connection polls its socket for up
 * to poll_ns before it sleeps, unless half the CPUs (at least one) are
 * polling already.  Not SPIN: sleep at once.  The rest of a large
 * WRITE payload over TLS comes record by record, each as fast as the
 * client encrypts it: a reader that spun between them used up a core
 * while the client (often on the other one) did the work it waits
 * for.
 *
 * Polling pays only when the client's next request comes within
 * poll_ns, that is when the store answers faster than that (the local
 * store: tens of microseconds).  On RADOS a write takes milliseconds:
 * a client waiting for its reply sends nothing while we spin, and the
 * spin takes a core from the OSDs and the messenger thread that is to
 * send our request.  So a poll that found nothing makes the connection
 * sleep at once at its next waits: 1, then 3, 7, ... up to
 * 2^SPIN_MISSES_MAX - 1 of them after misses in a row; a poll that found
 * a request polls at every wait again.  Except when replies went out
 * since the client's last request came: the client has something to
 * answer then (one with many requests in flight sends the next ones as
 * their replies come, often in bursts), so we poll whatever the misses
 * before, and a miss counts for nothing. */
#define SPIN_MISSES_MAX 6

static ssize_t
recv_polling (struct nbd_srv_conn *c, void *buf, size_t len, bool spin)
{
  struct nbd_srv_server *srv = c->srv;
  ssize_t n = c->ops->recv (c, buf, len);
  uint64_t until;
  bool answered;
  int err;

  if (n >= 0 || errno != EAGAIN)
    return n;
  /* Nothing more to read now: the replies held back go before we wait
   * for the client (the caller still sees recv's EAGAIN). */
  err = errno;
  nbd_srv_conn_uncork (c);
  errno = err;
  if (!spin || srv->poll_ns == 0 || c->deadline_ns)
    return n;
  answered = __atomic_load_n (&c->replies, __ATOMIC_RELAXED)
    != c->replies_seen;
  if (!answered && c->spin_skip > 0)
    {
      c->spin_skip--;
      return n;
    }
  if (atomic_fetch_add (&srv->pollers, 1) >= srv->max_pollers)
    {
      atomic_fetch_sub (&srv->pollers, 1);
      return n;
    }
  until = now_mono_ns () + srv->poll_ns;
  do
    n = c->ops->recv (c, buf, len);
  while (n < 0 && errno == EAGAIN && now_mono_ns () < until);
  err = errno;
  atomic_fetch_sub (&srv->pollers, 1);
  if (n < 0 && err == EAGAIN)
    {
      if (!answered)
        {
          if (c->spin_misses < SPIN_MISSES_MAX)
            c->spin_misses++;
          c->spin_skip = (1u << c->spin_misses) - 1;
        }
    }
  else
    c->spin_misses = c->spin_skip = 0;
  errno = err;
  return n;
}

/* Sleeps until the socket is readable.  Returns 0, or -1 when the
 * deadline passed or the connection must stop. */
static int
wait_readable (struct nbd_srv_conn *c)
{
  for (;;)
    {
      struct pollfd p = { c->fd, POLLIN, 0 };
      int timeout = -1, r;

      if (c->deadline_ns)
        {
          uint64_t now = now_mono_ns ();
          if (now >= c->deadline_ns)
            {
              log_info ("connection %s: handshake not finished in time: "
                        "disconnecting", c->peer);
              return -1;
            }
          timeout = (int) ((c->deadline_ns - now) / 1000000) + 1;
        }
      else if (!c->trimmed && c->srv->idle_ns)
        timeout = (int) (c->srv->idle_ns / 1000000);
      r = poll (&p, 1, timeout);
      if (r > 0)
        return 0;
      if (r < 0 && errno != EINTR)
        return -1;
      if (r < 0 && nbd_srv_conn_should_quit (c))
        return -1;
      if (r == 0 && !c->deadline_ns && !c->trimmed)
        {
          /* Idle: keep no large buffers.  (The 64 KiB read buffer
           * stays: a recv into it may be what we are waiting for.) */
          conn_trim (c);
          c->trimmed = true;
          heap_trim ();
          log_debug ("connection %s: idle: buffers freed", c->peer);
        }
    }
}

static ssize_t
recv_some (struct nbd_srv_conn *c, void *buf, size_t len, bool spin)
{
  ssize_t n = recv_polling (c, buf, len, spin);

  for (;;)
    {
      if (n > 0)
        return n;
      if (n == 0)
        return -1;
      if (errno == EINTR)
        {
          if (nbd_srv_conn_should_quit (c))
            return -1;
        }
      else if (errno != EAGAIN)
        return -1;
      else if (wait_readable (c) < 0)
        return -1;
      n = c->ops->recv (c, buf, len);
    }
}

int
nbd_srv_conn_read (struct nbd_srv_conn *c, void *buf, size_t len)
{
  char *p = buf;

  c->trimmed = false;
  while (len > 0)
    {
      size_t avail = c->rlen - c->rpos;
      ssize_t n;

      if (avail > 0)
        {
          size_t k = MIN (avail, len);
          memcpy (p, c->rbuf + c->rpos, k);
          c->rpos += k;
          p += k;
          len -= k;
          continue;
        }
      if (len >= RBUF_DIRECT)
        {
          /* A payload's rest: over TLS, no spinning for it. */
          n = recv_some (c, p, len, c->tls == NULL);
          if (n < 0)
            return -1;
          p += n;
          len -= n;
          continue;
        }
      n = recv_some (c, c->rbuf, RBUF_SIZE, true);
      if (n < 0)
        return -1;
      c->rpos = 0;
      c->rlen = n;
    }
  return 0;
}

int
nbd_srv_conn_skip (struct nbd_srv_conn *c, uint64_t len)
{
  char scratch[4096];

  while (len > 0)
    {
      size_t k = len < sizeof scratch ? len : sizeof scratch;
      if (nbd_srv_conn_read (c, scratch, k) < 0)
        return -1;
      len -= k;
    }
  return 0;
}

/* ---- Sending ---------------------------------------------------------------- */

/* Advances IOV (N entries, *CUR the first unsent) past W bytes. */
static void
iov_advance (struct iovec *iov, int n, int *cur, size_t w)
{
  while (*cur < n && w >= iov[*cur].iov_len)
    {
      w -= iov[*cur].iov_len;
      (*cur)++;
    }
  if (*cur < n)
    {
      iov[*cur].iov_base = (char *) iov[*cur].iov_base + w;
      iov[*cur].iov_len -= w;
    }
}

/* Sends what the socket takes now.  Returns 0 (maybe partly sent: see
 * *CUR), or -1 on a socket error. */
static int
send_now (struct nbd_srv_conn *c, struct iovec *iov, int n, int *cur,
          size_t *left)
{
  while (*left > 0)
    {
      ssize_t w = c->ops->send (c, iov + *cur, n - *cur);
      if (w < 0)
        {
          if (errno == EINTR)
            continue;
          return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        }
      iov_advance (iov, n, cur, w);
      *left -= w;
      c->send_progress_ns = 0;   /* stamped lazily by the writer */
    }
  return 0;
}

/* Marks the connection failed (send_lock held) and takes its queue. */
static struct nbd_srv_reply *
fail_locked (struct nbd_srv_conn *c, const char *why)
{
  struct nbd_srv_reply *q = c->rq_head;

  if (!c->send_failed)
    {
      if (why)
        log_info ("connection %s: %s: disconnecting", c->peer, why);
      __atomic_store_n (&c->send_failed, true, __ATOMIC_RELAXED);
      /* Wake the reader: nothing more can reach this client. */
      c->ops->shutdown (c, SHUT_RDWR);
    }
  c->rq_head = c->rq_tail = NULL;
  c->rq_copied = 0;
  pthread_cond_broadcast (&c->send_cond);
  return q;
}

static void
drop_replies (struct nbd_srv_reply *q)
{
  while (q)
    {
      struct nbd_srv_reply *next = q->next;
      if (q->hold)
        nbd_srv_req_done (q->hold);
      free (q);
      q = next;
    }
}

/* Bytes of queued replies copied out of their senders (headers, error
 * replies, BLOCK_STATUS extents: small, but a client that sends many
 * requests and reads nothing could pile them up).  Data sent from
 * request buffers is bounded by the in-flight budgets instead. */
#define QUEUE_COPIED_MAX (4u << 20)

static bool writer_spawn_locked (struct nbd_srv_conn *c);

int
nbd_srv_conn_reply (struct nbd_srv_conn *c, const struct iovec *iov0, int n,
                    struct nbd_srv_req *hold)
{
  struct iovec iov[32];
  struct nbd_srv_reply *rep, *dropped = NULL;
  size_t left = 0, copy = 0;
  int cur = 0, i, r = 0;
  char *p;

  if (n > 32)
    return -1;
  for (i = 0; i < n; i++)
    {
      iov[i] = iov0[i];
      left += iov[i].iov_len;
    }

  pthread_mutex_lock (&c->send_lock);
  if (c->send_failed)
    {
      pthread_mutex_unlock (&c->send_lock);
      return -1;
    }
  __atomic_store_n (&c->replies, c->replies + 1, __ATOMIC_RELAXED);
  /* In order: only an empty queue lets us send directly; a corked
   * connection queues, to send many replies at once. */
  if (!c->rq_head && !c->corked && send_now (c, iov, n, &cur, &left) < 0)
    {
      dropped = fail_locked (c, NULL);
      r = -1;
      goto out;
    }
  if (left == 0)
    goto out;

  /* Queue the rest for the writer. */
  for (i = cur; i < n; i++)
    if (!hold || (char *) iov[i].iov_base < hold->buf
        || (char *) iov[i].iov_base >= hold->buf + hold->cap)
      copy += iov[i].iov_len;
  rep = malloc (sizeof *rep + (n - cur) * sizeof (struct iovec) + copy);
  if (!rep || c->rq_copied + copy > QUEUE_COPIED_MAX)
    {
      free (rep);
      dropped = fail_locked (c, rep ? "the client does not read its replies"
                             : "out of memory");
      r = -1;
      goto out;
    }
  rep->next = NULL;
  rep->hold = NULL;
  rep->left = left;
  rep->bytes = copy;
  rep->n = n - cur;
  rep->cur = 0;
  p = (char *) &rep->iov[rep->n];
  for (i = cur; i < n; i++)
    {
      struct iovec *v = &rep->iov[i - cur];
      if (!hold || (char *) iov[i].iov_base < hold->buf
          || (char *) iov[i].iov_base >= hold->buf + hold->cap)
        {
          memcpy (p, iov[i].iov_base, iov[i].iov_len);
          v->iov_base = p;
          v->iov_len = iov[i].iov_len;
          p += iov[i].iov_len;
        }
      else
        {
          *v = iov[i];
          rep->hold = hold;
        }
    }
  if (rep->hold)
    atomic_fetch_add (&hold->holds, 1);
  if (c->rq_tail)
    c->rq_tail->next = rep;
  else
    c->rq_head = rep;
  c->rq_tail = rep;
  c->rq_copied += copy;
  if (c->corked)
    {
      /* The reader sends at nbd_srv_conn_uncork (the count tells it when
       * a batch is big enough). */
      __atomic_add_fetch (&c->corked_n, 1, __ATOMIC_RELAXED);
      goto out;
    }
  pthread_cond_signal (&c->send_cond);
  if (!writer_spawn_locked (c))
    {
      /* The handshake has no writer: its replies never queue. */
      dropped = fail_locked (c, "reply queued without a writer");
      r = -1;
    }
 out:
  pthread_mutex_unlock (&c->send_lock);
  drop_replies (dropped);
  return r;
}

/* How long the socket may take no bytes before we give up (send_lock
 * held). */
static bool
send_stalled (struct nbd_srv_conn *c, uint64_t now)
{
  struct nbd_srv_server *srv = c->srv;
  uint64_t limit = srv->send_timeout_ns;

  if (c->send_progress_ns == 0)
    c->send_progress_ns = now;
  if (atomic_load (&srv->quit))
    {
      uint64_t q = atomic_load (&srv->quit_ns);
      if (q && now >= q + QUIT_SEND_NS)
        return true;
      if (limit == 0 || limit > QUIT_SEND_NS)
        limit = QUIT_SEND_NS;
    }
  return limit && now - c->send_progress_ns >= limit;
}

/* Sends what the socket takes now of the queued replies, many of them
 * with one call of the transport (send_lock held).  Replies fully sent
 * move to *DONE (the caller ends them after dropping the lock).
 * Returns 1 (the queue is empty), 0 (the socket is full) or -1 (a
 * socket error). */
static int
send_queue_locked (struct nbd_srv_conn *c, struct nbd_srv_reply **done)
{
  while (c->rq_head)
    {
      struct iovec iov[64];
      struct nbd_srv_reply *rep;
      ssize_t w;
      int k = 0, i;

      for (rep = c->rq_head; rep && k < 64; rep = rep->next)
        for (i = rep->cur; i < rep->n && k < 64; i++)
          iov[k++] = rep->iov[i];
      w = c->ops->send (c, iov, k);
      if (w < 0)
        {
          if (errno == EINTR)
            continue;
          return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        }
      c->send_progress_ns = 0;   /* stamped lazily by the writer */
      while ((rep = c->rq_head) && (w > 0 || rep->left == 0))
        {
          if ((size_t) w < rep->left)
            {
              iov_advance (rep->iov, rep->n, &rep->cur, (size_t) w);
              rep->left -= (size_t) w;
              break;
            }
          w -= (ssize_t) rep->left;
          rep->left = 0;
          c->rq_head = rep->next;
          if (!c->rq_head)
            c->rq_tail = NULL;
          c->rq_copied -= rep->bytes;
          rep->next = *done;
          *done = rep;
        }
    }
  return 1;
}

static void *
writer_main (void *arg)
{
  struct nbd_srv_conn *c = arg;

  pthread_mutex_lock (&c->send_lock);
  for (;;)
    {
      struct nbd_srv_reply *dropped = NULL;
      struct pollfd p;
      int r;

      if (!c->rq_head)
        {
          if (c->writer_stop)
            break;
          pthread_cond_wait (&c->send_cond, &c->send_lock);
          continue;
        }
      r = send_queue_locked (c, &dropped);
      if (r < 0)
        {
          struct nbd_srv_reply *rest = fail_locked (c, NULL);
          pthread_mutex_unlock (&c->send_lock);
          drop_replies (dropped);
          drop_replies (rest);
          pthread_mutex_lock (&c->send_lock);
          continue;
        }
      if (dropped)
        {
          /* Progress: end the replies sent, then try again. */
          pthread_mutex_unlock (&c->send_lock);
          drop_replies (dropped);
          pthread_mutex_lock (&c->send_lock);
          continue;
        }
      if (r == 1)
        continue;
      /* The socket is full: wait for it outside the lock. */
      if (send_stalled (c, now_mono_ns ()))
        {
          dropped = fail_locked (c, "the client took no reply bytes in "
                                 "time");
          pthread_mutex_unlock (&c->send_lock);
          drop_replies (dropped);
          pthread_mutex_lock (&c->send_lock);
          continue;
        }
      pthread_mutex_unlock (&c->send_lock);
      p = (struct pollfd) { c->fd, POLLOUT, 0 };
      poll (&p, 1, 200);
      pthread_mutex_lock (&c->send_lock);
    }
  pthread_mutex_unlock (&c->send_lock);
  return NULL;
}

void
nbd_srv_conn_cork (struct nbd_srv_conn *c)
{
  if (!__atomic_load_n (&c->corked, __ATOMIC_RELAXED))
    {
      pthread_mutex_lock (&c->send_lock);
      c->corked = true;
      pthread_mutex_unlock (&c->send_lock);
    }
}

void
nbd_srv_conn_uncork (struct nbd_srv_conn *c)
{
  struct nbd_srv_reply *done = NULL, *rest = NULL;
  int r;

  if (!__atomic_load_n (&c->corked, __ATOMIC_RELAXED))
    return;
  pthread_mutex_lock (&c->send_lock);
  __atomic_store_n (&c->corked, false, __ATOMIC_RELAXED);
  __atomic_store_n (&c->corked_n, 0, __ATOMIC_RELAXED);
  if (c->rq_head && !c->send_failed)
    {
      r = send_queue_locked (c, &done);
      if (r < 0)
        rest = fail_locked (c, NULL);
      else if (r == 0)
        {
          /* The rest is the writer's. */
          pthread_cond_signal (&c->send_cond);
          if (!writer_spawn_locked (c))
            rest = fail_locked (c, "reply queued without a writer");
        }
    }
  pthread_mutex_unlock (&c->send_lock);
  drop_replies (done);
  drop_replies (rest);
}

int
nbd_srv_conn_start_writer (struct nbd_srv_conn *c)
{
  /* The thread itself starts with the first reply that has to wait. */
  pthread_mutex_lock (&c->send_lock);
  c->writer_allowed = !c->writer_stop;
  pthread_mutex_unlock (&c->send_lock);
  return 0;
}

/* Starts the writer for the reply just queued (send_lock held).
 * Returns false if there can be none. */
static bool
writer_spawn_locked (struct nbd_srv_conn *c)
{
  int r;

  if (c->writer_running)
    return true;
  if (!c->writer_allowed)
    return false;
  r = pthread_create (&c->writer, NULL, writer_main, c);
  if (r)
    {
      log_error ("connection %s: writer thread: %s", c->peer, strerror (r));
      return false;
    }
  c->writer_running = true;
  return true;
}

void
nbd_srv_conn_stop_writer (struct nbd_srv_conn *c)
{
  bool running;

  pthread_mutex_lock (&c->send_lock);
  c->writer_stop = true;
  c->writer_allowed = false;
  running = c->writer_running;
  c->writer_running = false;
  pthread_cond_broadcast (&c->send_cond);
  pthread_mutex_unlock (&c->send_lock);
  if (running)
    pthread_join (c->writer, NULL);
}

int
nbd_srv_conn_write_all (struct nbd_srv_conn *c, struct iovec *iov, int n)
{
  size_t left = 0;
  int cur = 0, i;

  for (i = 0; i < n; i++)
    left += iov[i].iov_len;
  c->send_progress_ns = 0;
  for (;;)
    {
      struct pollfd p = { c->fd, POLLOUT, 0 };
      uint64_t now;

      if (send_now (c, iov, n, &cur, &left) < 0)
        return -1;
      if (left == 0)
        return 0;
      now = now_mono_ns ();
      if ((c->deadline_ns && now >= c->deadline_ns)
          || send_stalled (c, now))
        {
          log_info ("connection %s: the client takes no data: "
                    "disconnecting", c->peer);
          return -1;
        }
      poll (&p, 1, 200);
    }
}

/* ---- Budgets ----------------------------------------------------------------- */

static bool
mem_try (struct nbd_srv_server *srv, size_t bytes)
{
  uint64_t used = atomic_fetch_add (&srv->mem_used, bytes);

  /* Alone, a request always fits: a big one waits, it never fails. */
  if (used == 0 || used + bytes <= srv->mem_limit)
    return true;
  atomic_fetch_sub (&srv->mem_used, bytes);
  return false;
}

static void
mem_put (struct nbd_srv_server *srv, size_t bytes)
{
  atomic_fetch_sub (&srv->mem_used, bytes);
  if (atomic_load (&srv->mem_waiters) > 0)
    {
      pthread_mutex_lock (&srv->mem_lock);
      pthread_cond_broadcast (&srv->mem_cond);
      pthread_mutex_unlock (&srv->mem_lock);
    }
}

/* Waits for BYTES of the daemon's budget.  False: the connection must
 * stop instead. */
static bool
mem_take (struct nbd_srv_conn *c, size_t bytes)
{
  struct nbd_srv_server *srv = c->srv;
  bool ok = true;

  if (bytes == 0 || srv->mem_limit == 0 || mem_try (srv, bytes))
    return true;
  pthread_mutex_lock (&srv->mem_lock);
  atomic_fetch_add (&srv->mem_waiters, 1);
  while (!mem_try (srv, bytes))
    {
      struct timespec ts;
      if (nbd_srv_conn_should_quit (c))
        {
          ok = false;
          break;
        }
      clock_gettime (CLOCK_REALTIME, &ts);
      ts.tv_nsec += 200000000;
      if (ts.tv_nsec >= 1000000000)
        {
          ts.tv_sec++;
          ts.tv_nsec -= 1000000000;
        }
      pthread_cond_timedwait (&srv->mem_cond, &srv->mem_lock, &ts);
    }
  atomic_fetch_sub (&srv->mem_waiters, 1);
  pthread_mutex_unlock (&srv->mem_lock);
  return ok;
}

bool
nbd_srv_conn_wait_room (struct nbd_srv_conn *c, size_t bytes)
{
  pthread_mutex_lock (&c->lock);
  if (c->inflight >= NBD_SRV_MAX_INFLIGHT
      || (c->inflight > 0 && c->inflight_bytes + bytes > c->srv->conn_memory)
      || (c->srv->mem_limit
          && atomic_load (&c->srv->mem_used) + bytes > c->srv->mem_limit))
    {
      /* We may wait: replies held back end requests only once sent. */
      pthread_mutex_unlock (&c->lock);
      nbd_srv_conn_uncork (c);
      pthread_mutex_lock (&c->lock);
    }
  while (c->inflight >= NBD_SRV_MAX_INFLIGHT
         || (c->inflight > 0
             && c->inflight_bytes + bytes > c->srv->conn_memory))
    {
      /* Replies that cannot go out free no room: a writer that gives up
       * on the client drops them and wakes us. */
      if (__atomic_load_n (&c->send_failed, __ATOMIC_RELAXED))
        {
          pthread_mutex_unlock (&c->lock);
          return false;
        }
      pthread_cond_wait (&c->cond, &c->lock);
    }
  c->inflight++;
  c->inflight_bytes += bytes;
  pthread_mutex_unlock (&c->lock);
  if (!mem_take (c, bytes))
    {
      pthread_mutex_lock (&c->lock);
      c->inflight--;
      c->inflight_bytes -= bytes;
      pthread_cond_signal (&c->cond);
      pthread_mutex_unlock (&c->lock);
      return false;
    }
  return true;
}

void
nbd_srv_conn_release_room (struct nbd_srv_conn *c, size_t bytes)
{
  if (bytes && c->srv->mem_limit)
    mem_put (c->srv, bytes);
  pthread_mutex_lock (&c->lock);
  c->inflight--;
  c->inflight_bytes -= bytes;
  pthread_cond_signal (&c->cond);
  pthread_mutex_unlock (&c->lock);
}

/* ---- Requests ------------------------------------------------------------------ */

struct nbd_srv_req *
nbd_srv_req_new (struct nbd_srv_conn *c, size_t bufsize, size_t charged)
{
  struct nbd_srv_req *r = NULL, **pp;

  pthread_mutex_lock (&c->lock);
  /* The first cached request whose buffer is big enough (most are of
   * one size). */
  for (pp = &c->free_reqs; *pp; pp = &(*pp)->next)
    if ((*pp)->cap >= bufsize || !(*pp)->next)
      {
        r = *pp;
        *pp = r->next;
        c->nfree--;
        c->free_bytes -= r->cap;
        break;
      }
  pthread_mutex_unlock (&c->lock);

  if (!r)
    {
      r = calloc (1, sizeof *r);
      if (!r)
        return NULL;
      r->conn = c;
    }
  r->next = NULL;
  r->leased = false;
  r->charged = charged;
  atomic_store (&r->holds, 1);
  if (bufsize > r->cap)
    {
      void *p;
      size_t cap = bufsize < 4096 ? 4096 : bufsize;
      free (r->buf);
      r->buf = NULL;
      r->cap = 0;
      /* Page-aligned: lets a store use O_DIRECT on our buffers. */
      if (posix_memalign (&p, 4096, cap) != 0)
        {
          req_free (r);
          return NULL;
        }
      r->buf = p;
      r->cap = cap;
    }
  return r;
}

void
nbd_srv_req_done (struct nbd_srv_req *r)
{
  struct nbd_srv_conn *c = r->conn;
  size_t bytes = r->charged;

  /* The starter's hold, and one per queued reply that sends from the
   * buffer: the last one ends the request. */
  if (atomic_fetch_sub (&r->holds, 1) != 1)
    return;
  if (bytes && c->srv->mem_limit)
    mem_put (c->srv, bytes);
  pthread_mutex_lock (&c->lock);
  if (c->nfree < KEEP_REQS && r->cap <= KEEP_BUF_MAX
      && c->free_bytes + r->cap <= KEEP_BYTES)
    {
      r->next = c->free_reqs;
      c->free_reqs = r;
      c->nfree++;
      c->free_bytes += r->cap;
      r = NULL;
    }
  c->inflight--;
  c->inflight_bytes -= bytes;
  pthread_cond_signal (&c->cond);
  pthread_mutex_unlock (&c->lock);
  if (r)
    req_free (r);
}
