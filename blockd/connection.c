/* SPDX-License-Identifier: MIT
 *
 * connection.c - one client connection: its reader thread, buffered
 * reading, serialised sending, and the request objects it recycles.
 *
 * DESIGN: the reader thread owns the receive side: it reads through a
 * 64 KiB buffer (so that at queue depth N the headers of N small
 * requests cost one recv), copying large payloads straight into the
 * request buffer.  Any thread may send: nbd_srv_conn_send takes
 * send_lock and writes the whole reply (header and data in one sendmsg
 * with an iovec, no copy), so replies never interleave.  A failed send
 * marks the connection and shuts the socket down, which ends the reader.
 * Requests (with their data buffers) are recycled through a free list.
 * The connection ends only when no request is in flight: the reader
 * waits for inflight to reach zero before closing the socket, so every
 * request that was started gets its reply (or the client is gone).
 */
#include <errno.h>
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
/* Request buffers kept on the free list are at most this large. */
#define KEEP_BUF_MAX (4u << 20)
#define KEEP_REQS 64

static bool
conn_should_quit (struct nbd_srv_conn *c)
{
  return atomic_load_explicit (&c->srv->quit, memory_order_relaxed)
    || __atomic_load_n (&c->send_failed, __ATOMIC_RELAXED);
}

/* Busy polling.  A client with one request in flight (a guest doing
 * synchronous I/O) sends the next one tens of microseconds after our
 * reply; sleeping in recv and being woken again costs about as long as
 * serving the request.  So an idle connection polls its socket for up
 * to poll_ns before it sleeps, unless half the CPUs (at least one) are
 * polling already. */
static ssize_t
recv_polling (struct nbd_srv_conn *c, void *buf, size_t len)
{
  struct nbd_srv_server *srv = c->srv;
  ssize_t n = recv (c->fd, buf, len, MSG_DONTWAIT);
  uint64_t until;

  if (n >= 0 || errno != EAGAIN || srv->poll_ns == 0)
    return n;
  if (atomic_fetch_add (&srv->pollers, 1) >= srv->max_pollers)
    {
      atomic_fetch_sub (&srv->pollers, 1);
      return n;
    }
  until = now_mono_ns () + srv->poll_ns;
  do
    n = recv (c->fd, buf, len, MSG_DONTWAIT);
  while (n < 0 && errno == EAGAIN && now_mono_ns () < until);
  atomic_fetch_sub (&srv->pollers, 1);
  return n;
}

static ssize_t
recv_some (struct nbd_srv_conn *c, void *buf, size_t len)
{
  ssize_t n = recv_polling (c, buf, len);

  for (;;)
    {
      if (n > 0)
        return n;
      if (n == 0)
        return -1;
      if (errno == EINTR)
        {
          if (conn_should_quit (c))
            return -1;
        }
      else if (errno != EAGAIN)
        return -1;
      n = recv (c->fd, buf, len, 0);
    }
}

int
nbd_srv_conn_read (struct nbd_srv_conn *c, void *buf, size_t len)
{
  char *p = buf;

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
          n = recv_some (c, p, len);
          if (n < 0)
            return -1;
          p += n;
          len -= n;
          continue;
        }
      n = recv_some (c, c->rbuf, RBUF_SIZE);
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

int
nbd_srv_conn_write_all (struct nbd_srv_conn *c, struct iovec *iov, int n)
{
  struct msghdr msg = { 0 };

  while (n > 0)
    {
      ssize_t w;

      msg.msg_iov = iov;
      msg.msg_iovlen = n > 1024 ? 1024 : n;
      w = sendmsg (c->fd, &msg, MSG_NOSIGNAL);
      if (w < 0)
        {
          if (errno == EINTR)
            continue;
          return -1;
        }
      while (n > 0 && (size_t) w >= iov->iov_len)
        {
          w -= iov->iov_len;
          iov++;
          n--;
        }
      if (n > 0)
        {
          iov->iov_base = (char *) iov->iov_base + w;
          iov->iov_len -= w;
        }
    }
  return 0;
}

int
nbd_srv_conn_send (struct nbd_srv_conn *c, struct iovec *iov, int n)
{
  int r = -1;

  pthread_mutex_lock (&c->send_lock);
  if (!c->send_failed)
    {
      r = nbd_srv_conn_write_all (c, iov, n);
      if (r < 0)
        {
          __atomic_store_n (&c->send_failed, true, __ATOMIC_RELAXED);
          /* Wake the reader: nothing more can reach this client. */
          shutdown (c->fd, SHUT_RDWR);
        }
    }
  pthread_mutex_unlock (&c->send_lock);
  return r;
}

static void
req_free (struct nbd_srv_req *r)
{
  free (r->buf);
  free (r);
}

struct nbd_srv_req *
nbd_srv_req_new (struct nbd_srv_conn *c, size_t bufsize)
{
  struct nbd_srv_req *r;

  pthread_mutex_lock (&c->lock);
  r = c->free_reqs;
  if (r)
    {
      c->free_reqs = r->next;
      c->nfree--;
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

/* Gives R back without counting it in flight (never started). */
static void
req_recycle_locked (struct nbd_srv_conn *c, struct nbd_srv_req *r)
{
  if (c->nfree < KEEP_REQS && r->cap <= KEEP_BUF_MAX)
    {
      r->next = c->free_reqs;
      c->free_reqs = r;
      c->nfree++;
    }
  else
    req_free (r);
}

void
nbd_srv_req_done (struct nbd_srv_req *r)
{
  struct nbd_srv_conn *c = r->conn;
  size_t bytes = r->count;

  pthread_mutex_lock (&c->lock);
  req_recycle_locked (c, r);
  c->inflight--;
  c->inflight_bytes -= bytes;
  pthread_cond_signal (&c->cond);
  pthread_mutex_unlock (&c->lock);
}

static void
server_add_conn (struct nbd_srv_server *srv, struct nbd_srv_conn *c)
{
  pthread_mutex_lock (&srv->lock);
  c->next = srv->conns;
  c->prev = NULL;
  if (srv->conns)
    srv->conns->prev = c;
  srv->conns = c;
  srv->nconns++;
  pthread_mutex_unlock (&srv->lock);
}

static void
server_remove_conn (struct nbd_srv_server *srv, struct nbd_srv_conn *c)
{
  pthread_mutex_lock (&srv->lock);
  if (c->prev)
    c->prev->next = c->next;
  else
    srv->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  srv->nconns--;
  pthread_cond_broadcast (&srv->conns_done);
  pthread_mutex_unlock (&srv->lock);
}

void
nbd_srv_conn_run (struct nbd_srv_server *srv, int fd, const char *peer)
{
  struct nbd_srv_conn *c;
  int r;

  c = calloc (1, sizeof *c);
  if (!c || !(c->rbuf = malloc (RBUF_SIZE)))
    {
      log_error ("blockd: connection %s: out of memory", peer);
      free (c);
      close (fd);
      return;
    }
  c->srv = srv;
  c->fd = fd;
  snprintf (c->peer, sizeof c->peer, "%s", peer);
  pthread_mutex_init (&c->send_lock, NULL);
  pthread_mutex_init (&c->lock, NULL);
  pthread_cond_init (&c->cond, NULL);
  server_add_conn (srv, c);
  /* A stop that came before we were on the list would not reach us. */
  if (atomic_load (&srv->quit))
    shutdown (fd, SHUT_RD);

  log_debug ("connection %s: new", c->peer);
  r = nbd_srv_handshake (c);
  if (r > 0)
    {
      log_debug ("connection %s: export %s, structured replies %s",
                 c->peer, c->exp->name, c->structured ? "on" : "off");
      nbd_srv_transmission (c);
    }

  /* Every started request must answer before the socket goes. */
  pthread_mutex_lock (&c->lock);
  while (c->inflight > 0)
    pthread_cond_wait (&c->cond, &c->lock);
  pthread_mutex_unlock (&c->lock);

  pthread_mutex_lock (&srv->lock);
  close (fd);
  c->fd = -1;
  pthread_mutex_unlock (&srv->lock);
  nbd_srv_export_put (c->exp);
  while (c->free_reqs)
    {
      struct nbd_srv_req *q = c->free_reqs;
      c->free_reqs = q->next;
      req_free (q);
    }
  log_debug ("connection %s: closed", c->peer);
  pthread_mutex_destroy (&c->send_lock);
  pthread_mutex_destroy (&c->lock);
  pthread_cond_destroy (&c->cond);
  nbd_srv_meta_clear (c);
  free (c->rbuf);
  /* Last: the server waits for this before it closes the store. */
  server_remove_conn (srv, c);
  free (c);
}

struct conn_start {
  struct nbd_srv_server *srv;
  int fd;
  char peer[128];
};

static void *
conn_thread (void *arg)
{
  struct conn_start s = *(struct conn_start *) arg;

  free (arg);
  rcu_register_thread ();
  nbd_srv_conn_run (s.srv, s.fd, s.peer);
  rcu_unregister_thread ();
  return NULL;
}

int
nbd_srv_conn_start (struct nbd_srv_server *srv, int fd, const char *peer)
{
  struct conn_start *s = malloc (sizeof *s);
  pthread_attr_t attr;
  pthread_t th;
  int r;

  if (!s)
    {
      close (fd);
      return -ENOMEM;
    }
  s->srv = srv;
  s->fd = fd;
  snprintf (s->peer, sizeof s->peer, "%s", peer);
  pthread_attr_init (&attr);
  pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
  r = pthread_create (&th, &attr, conn_thread, s);
  pthread_attr_destroy (&attr);
  if (r)
    {
      log_error ("blockd: connection %s: pthread_create: %s", peer,
                 strerror (r));
      free (s);
      close (fd);
      return -r;
    }
  return 0;
}
