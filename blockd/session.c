/* SPDX-License-Identifier: MIT
 *
 * session.c - the life of one client: registration under the
 * connection limits, its thread, the handshake, transmission, teardown.
 *
 * DESIGN: this file sequences the others, so that they need not call
 * each other in circles: connection.c moves bytes and owns requests,
 * handshake.c negotiates, protocol.c serves requests; only session.c
 * calls all three.  A connection is registered (counted against
 * max_conns and, per client address or uid, max_conns_per_client) on
 * the accept thread before its own thread starts, so a stop can always
 * reach it.  The handshake runs under the connection's deadline; the
 * writer thread starts with transmission.  At the end the reader waits
 * until no request is in flight, then the connection waits for its
 * queued replies (or gives up on the client), closes the socket and
 * puts its export.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "internal.h"
#include "metrics.h"

bool
nbd_srv_session_register (struct nbd_srv_conn *c)
{
  struct nbd_srv_server *srv = c->srv;
  struct nbd_srv_conn *o;
  unsigned same = 0;

  pthread_mutex_lock (&srv->lock);
  if (srv->max_conns && srv->nconns >= srv->max_conns)
    {
      pthread_mutex_unlock (&srv->lock);
      return false;
    }
  if (srv->max_conns_per_client)
    for (o = srv->conns; o; o = o->next)
      if (strcmp (o->client, c->client) == 0
          && ++same >= srv->max_conns_per_client)
        {
          pthread_mutex_unlock (&srv->lock);
          return false;
        }
  c->next = srv->conns;
  c->prev = NULL;
  if (srv->conns)
    srv->conns->prev = c;
  srv->conns = c;
  srv->nconns++;
  pthread_mutex_unlock (&srv->lock);
  return true;
}

static void
unregister (struct nbd_srv_conn *c)
{
  struct nbd_srv_server *srv = c->srv;

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

static void
session (struct nbd_srv_conn *c)
{
  struct nbd_srv_server *srv = c->srv;
  struct nbd_srv_export *exp;
  int r;

  /* A stop that came before we were on the list would not reach us. */
  if (atomic_load (&srv->quit))
    c->ops->shutdown (c, SHUT_RD);

  log_debug ("connection %s: new", c->peer);
  nbd_srv_metrics_conn (srv->metrics, nbd_srv_conn_transport (c), 1);
  r = nbd_srv_handshake (c);
  c->deadline_ns = 0;
  if (r > 0 && nbd_srv_conn_start_writer (c) == 0)
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

  exp = c->exp;
  c->exp = NULL;
  nbd_srv_meta_clear (c);
  /* The queued replies go out (or the send timeout gives up). */
  nbd_srv_conn_stop_writer (c);
  nbd_srv_metrics_conn (srv->metrics, nbd_srv_conn_transport (c), -1);
  /* The transport's clean end (TLS close_notify): nobody else uses the
   * socket any more. */
  if (c->ops->close)
    c->ops->close (c);
  pthread_mutex_lock (&srv->lock);
  close (c->fd);
  c->fd = -1;
  pthread_mutex_unlock (&srv->lock);
  log_debug ("connection %s: closed", c->peer);
  /* Closing the export flushes it; the server waits for this before it
   * closes the store. */
  nbd_srv_export_put (exp);
  unregister (c);
  nbd_srv_conn_free (c);
}

void
nbd_srv_session_run (struct nbd_srv_server *srv, int fd, const char *peer)
{
  struct nbd_srv_conn *c = nbd_srv_conn_new (srv, fd, peer, peer);

  if (!c)
    {
      log_error ("blockd: connection %s: out of memory", peer);
      close (fd);
      return;
    }
  if (!nbd_srv_session_register (c))
    {
      nbd_srv_conn_free (c);
      return;
    }
  session (c);
}

static void *
session_thread (void *arg)
{
  rcu_register_thread ();
  session (arg);
  rcu_unregister_thread ();
  return NULL;
}

int
nbd_srv_session_start (struct nbd_srv_conn *c)
{
  pthread_attr_t attr;
  pthread_t th;
  int r;

  pthread_attr_init (&attr);
  pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
  r = pthread_create (&th, &attr, session_thread, c);
  pthread_attr_destroy (&attr);
  if (r)
    {
      log_error ("blockd: connection %s: pthread_create: %s", c->peer,
                 strerror (r));
      unregister (c);
      nbd_srv_conn_free (c);
      return -r;
    }
  return 0;
}
