/* SPDX-License-Identifier: MIT
 *
 * starttls.c - a connection after NBD_OPT_STARTTLS: the TLS handshake
 * and the connection operations (struct nbd_srv_conn_ops) over TLS.
 *
 * DESIGN: handshake.c answers NBD_OPT_STARTTLS and calls
 * nbd_srv_conn_starttls, which runs the TLS handshake on the socket and
 * swaps the connection's operations; from then on connection.c's
 * buffered reading, non-blocking sends and writer thread work unchanged
 * on TLS records (tls.c never blocks, like the plain socket operations).
 * The reader thread receives and, under send_lock, one thread at a time
 * sends: the split GnuTLS allows on one session.  Before the TLS
 * handshake nothing may sit unread in the connection's buffer (a client
 * that sends more after STARTTLS before the server's ACK, whether by
 * mistake or to inject plaintext commands into the TLS session, is
 * disconnected by handshake.c).  The close operation sends close_notify
 * when the connection ends, and frees the session.
 */
#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "internal.h"
#include "metrics.h"
#include "tls.h"

/* close_notify: how long a client that does not read may hold us. */
#define BYE_TIMEOUT_MS 1000

static ssize_t
tls_recv (struct nbd_srv_conn *c, void *buf, size_t len)
{
  ssize_t r = nbd_srv_tls_recv (c->tls, buf, len);

  if (r >= 0)
    return r;
  if (r != -EAGAIN)
    log_debug ("connection %s: %s", c->peer, vbk_error ());
  errno = (int) -r;
  return -1;
}

static ssize_t
tls_send (struct nbd_srv_conn *c, const struct iovec *iov, int n)
{
  ssize_t r = nbd_srv_tls_send (c->tls, iov, n);

  if (r >= 0)
    return r;
  errno = (int) -r;
  return -1;
}

static void
tls_shutdown (struct nbd_srv_conn *c, int how)
{
  shutdown (c->fd, how);
}

static void
tls_close (struct nbd_srv_conn *c)
{
  if (!c->tls)
    return;
  if (!__atomic_load_n (&c->send_failed, __ATOMIC_RELAXED))
    nbd_srv_tls_bye (c->tls, BYE_TIMEOUT_MS);
  nbd_srv_tls_session_free (c->tls);
  c->tls = NULL;
}

static const struct nbd_srv_conn_ops tls_ops = {
  .recv = tls_recv,
  .send = tls_send,
  .shutdown = tls_shutdown,
  .close = tls_close,
};

int
nbd_srv_conn_transport (const struct nbd_srv_conn *c)
{
  if (c->tls)
    return NBD_SRV_MT_TLS;
  return c->tcp ? NBD_SRV_MT_TCP : NBD_SRV_MT_UNIX;
}

const char *
nbd_srv_conn_identity (const struct nbd_srv_conn *c)
{
  return c->tls ? nbd_srv_tls_identity (c->tls) : NULL;
}

const char *
nbd_srv_conn_who (const struct nbd_srv_conn *c)
{
  const char *id = nbd_srv_conn_identity (c);

  if (id)
    return id;
  if (c->tls)
    return "(TLS without identity)";
  return c->tcp ? "(plain TCP)" : "(local)";
}

int
nbd_srv_conn_starttls (struct nbd_srv_conn *c)
{
  struct nbd_srv_server *srv = c->srv;
  int timeout = (int) srv->tls_timeout_ms, r;
  int before = nbd_srv_conn_transport (c);

  if (c->deadline_ns)
    {
      uint64_t now = now_mono_ns ();
      uint64_t left = c->deadline_ns > now
                      ? (c->deadline_ns - now) / 1000000 + 1 : 0;
      if (left < (uint64_t) timeout)
        timeout = (int) left;
    }
  r = nbd_srv_tls_session_new (srv->tls, c->fd, timeout, &c->tls);
  nbd_srv_metrics_tls_handshake (srv->metrics, r);
  if (r < 0)
    {
      log_info ("connection %s: TLS refused: %s", c->peer, vbk_error ());
      return -1;
    }
  /* The read buffer is empty (handshake.c checked): nothing read in
   * the clear can be taken for TLS data. */
  c->rpos = c->rlen = 0;
  c->ops = &tls_ops;
  nbd_srv_metrics_conn (srv->metrics, before, -1);
  nbd_srv_metrics_conn (srv->metrics, NBD_SRV_MT_TLS, 1);
  {
    const char *subj = nbd_srv_tls_subject (c->tls);
    log_info ("connection %s: TLS (%s), client %s%s%s%s", c->peer,
              nbd_srv_tls_description (c->tls), nbd_srv_conn_who (c),
              subj ? " (" : "", subj ? subj : "", subj ? ")" : "");
  }
  return 0;
}
