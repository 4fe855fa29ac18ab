/* SPDX-License-Identifier: MIT
 *
 * server.c - listening sockets, the accept loop and shutdown.
 *
 * DESIGN: the main thread polls the listening sockets (a Unix socket
 * and/or TCP) and a self-pipe; each accepted client gets its own reader
 * thread (connection.c).  nbd_srv_server_stop only sets a flag and
 * writes to the pipe, so it is safe in a signal handler.  On stop the
 * loop closes the listening sockets (no new clients), shuts down the
 * receive side of every connection (their readers see EOF, stop taking
 * requests and wait for the ones in flight to be answered), waits for
 * all connections to go, and the last put of each export closes, and so
 * flushes, its image.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/error.h"
#include "common/log.h"
#include "internal.h"

int
nbd_srv_server_new (const struct nbd_srv_config *cfg,
                    struct nbd_srv_server **out)
{
  struct nbd_srv_server *srv = calloc (1, sizeof *srv);
  int r;

  if (!srv)
    return -ENOMEM;
  srv->quit_pipe[0] = srv->quit_pipe[1] = -1;
  pthread_mutex_init (&srv->lock, NULL);
  pthread_cond_init (&srv->conns_done, NULL);
  srv->read_only = cfg->read_only;

  r = store_open (cfg->store_uri, &srv->store);
  if (r < 0)
    goto fail;
  srv->inline_io = strcmp (store_backend (srv->store), "local") == 0;
  srv->poll_ns = (uint64_t) cfg->poll_us * 1000;
  {
    long cpus = sysconf (_SC_NPROCESSORS_ONLN);
    srv->max_pollers = cpus > 3 ? cpus / 2 : 1;
  }
  r = nbd_srv_exports_new (srv->store, cfg, &srv->exports);
  if (r < 0)
    goto fail;
  r = nbd_srv_workers_new (cfg->workers, &srv->workers);
  if (r < 0)
    goto fail;
  if (pipe2 (srv->quit_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
    {
      r = vbk_errno (-errno, "blockd: pipe");
      goto fail;
    }
  *out = srv;
  return 0;

 fail:
  nbd_srv_server_free (srv);
  return r;
}

static int
listen_unix (struct nbd_srv_server *srv, const char *path)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  char dir[sizeof sun.sun_path];
  char *slash;
  int fd;

  if (strlen (path) >= sizeof sun.sun_path)
    return vbk_errno (-ENAMETOOLONG, "blockd: socket %s", path);
  strcpy (sun.sun_path, path);

  /* /run/vbk may not exist yet (tmpfs). */
  strcpy (dir, path);
  slash = strrchr (dir, '/');
  if (slash && slash != dir)
    {
      *slash = 0;
      if (mkdir (dir, 0755) < 0 && errno != EEXIST)
        return vbk_errno (-errno, "blockd: mkdir %s", dir);
    }

  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return vbk_errno (-errno, "blockd: socket");
  /* A socket file left by a dead daemon is removed; a live one is not
   * stolen. */
  if (connect (fd, (struct sockaddr *) &sun, sizeof sun) == 0)
    {
      close (fd);
      return vbk_errno (-EADDRINUSE, "blockd: %s: another server is "
                        "listening there", path);
    }
  close (fd);
  unlink (path);

  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return vbk_errno (-errno, "blockd: socket");
  if (bind (fd, (struct sockaddr *) &sun, sizeof sun) < 0
      || listen (fd, SOMAXCONN) < 0)
    {
      int e = errno;
      close (fd);
      return vbk_errno (-e, "blockd: listen on %s", path);
    }
  srv->listen_fds[srv->nlisten++] = fd;
  srv->socket_path = strdup (path);
  log_info ("listening on %s", path);
  return 0;
}

static int
listen_tcp (struct nbd_srv_server *srv, const char *addr)
{
  struct addrinfo hints = {
    .ai_family = AF_UNSPEC,
    .ai_socktype = SOCK_STREAM,
    .ai_flags = AI_PASSIVE | AI_ADDRCONFIG,
  };
  struct addrinfo *res, *ai;
  char host[256], *port;
  int r, n = 0;

  snprintf (host, sizeof host, "%s", addr);
  port = strrchr (host, ':');
  if (!port)
    return vbk_errno (-EINVAL, "blockd: --listen %s: expected HOST:PORT",
                      addr);
  *port++ = 0;
  if (host[0] == '[' && host[strlen (host) - 1] == ']')
    {
      memmove (host, host + 1, strlen (host));
      host[strlen (host) - 1] = 0;
    }
  r = getaddrinfo (*host ? host : NULL, port, &hints, &res);
  if (r)
    {
      vbk_set_error ("blockd: --listen %s: %s", addr, gai_strerror (r));
      return -EINVAL;
    }
  for (ai = res; ai && srv->nlisten < 8; ai = ai->ai_next)
    {
      int one = 1;
      int fd = socket (ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                       ai->ai_protocol);
      if (fd < 0)
        continue;
      setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (ai->ai_family == AF_INET6)
        setsockopt (fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
      if (bind (fd, ai->ai_addr, ai->ai_addrlen) < 0
          || listen (fd, SOMAXCONN) < 0)
        {
          r = -errno;
          close (fd);
          continue;
        }
      srv->listen_fds[srv->nlisten++] = fd;
      n++;
    }
  freeaddrinfo (res);
  if (n == 0)
    return vbk_errno (r ? r : -EADDRNOTAVAIL, "blockd: listen on %s", addr);
  log_info ("listening on %s", addr);
  return 0;
}

int
nbd_srv_server_listen (struct nbd_srv_server *srv,
                       const struct nbd_srv_config *cfg)
{
  int r;

  if (cfg->socket_path && *cfg->socket_path)
    {
      r = listen_unix (srv, cfg->socket_path);
      if (r < 0)
        return r;
    }
  if (cfg->listen_addr && *cfg->listen_addr)
    {
      r = listen_tcp (srv, cfg->listen_addr);
      if (r < 0)
        return r;
    }
  if (srv->nlisten == 0)
    return vbk_errno (-EINVAL, "blockd: neither a socket nor a TCP address "
                      "to listen on");
  return 0;
}

static void
accept_one (struct nbd_srv_server *srv, int lfd)
{
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  char peer[128] = "unix";
  int fd;

  fd = accept4 (lfd, (struct sockaddr *) &ss, &sl, SOCK_CLOEXEC);
  if (fd < 0)
    {
      if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
        log_warn ("blockd: accept: %s", strerror (errno));
      return;
    }
  if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)
    {
      char h[64], p[16];
      int one = 1;
      /* proto.md: both sides SHOULD disable Nagle. */
      setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (getnameinfo ((struct sockaddr *) &ss, sl, h, sizeof h, p, sizeof p,
                       NI_NUMERICHOST | NI_NUMERICSERV) == 0)
        snprintf (peer, sizeof peer, "%s:%s", h, p);
    }
  else
    {
      static atomic_uint seq;
      snprintf (peer, sizeof peer, "unix#%u", atomic_fetch_add (&seq, 1));
    }
  nbd_srv_conn_start (srv, fd, peer);
}

int
nbd_srv_server_run (struct nbd_srv_server *srv)
{
  struct pollfd pfd[9];
  struct nbd_srv_conn *c;
  int i;

  while (!atomic_load (&srv->quit))
    {
      for (i = 0; i < srv->nlisten; i++)
        pfd[i] = (struct pollfd) { srv->listen_fds[i], POLLIN, 0 };
      pfd[srv->nlisten] = (struct pollfd) { srv->quit_pipe[0], POLLIN, 0 };
      if (poll (pfd, srv->nlisten + 1, -1) < 0)
        {
          if (errno == EINTR)
            continue;
          log_error ("blockd: poll: %s", strerror (errno));
          break;
        }
      for (i = 0; i < srv->nlisten; i++)
        if (pfd[i].revents & POLLIN)
          accept_one (srv, srv->listen_fds[i]);
    }

  log_info ("shutting down: no new connections, finishing requests in "
            "flight");
  for (i = 0; i < srv->nlisten; i++)
    close (srv->listen_fds[i]);
  srv->nlisten = 0;
  if (srv->socket_path)
    unlink (srv->socket_path);

  pthread_mutex_lock (&srv->lock);
  for (c = srv->conns; c; c = c->next)
    if (c->fd >= 0)
      shutdown (c->fd, SHUT_RD);
  while (srv->nconns > 0)
    pthread_cond_wait (&srv->conns_done, &srv->lock);
  pthread_mutex_unlock (&srv->lock);
  return 0;
}

void
nbd_srv_server_stop (struct nbd_srv_server *srv)
{
  int saved = errno;
  ssize_t r;

  atomic_store (&srv->quit, true);
  r = write (srv->quit_pipe[1], "q", 1);
  (void) r;
  errno = saved;
}

void
nbd_srv_server_free (struct nbd_srv_server *srv)
{
  int i;

  if (!srv)
    return;
  for (i = 0; i < srv->nlisten; i++)
    close (srv->listen_fds[i]);
  nbd_srv_workers_free (srv->workers);
  nbd_srv_exports_free (srv->exports);
  store_close (srv->store);
  if (srv->quit_pipe[0] >= 0)
    close (srv->quit_pipe[0]);
  if (srv->quit_pipe[1] >= 0)
    close (srv->quit_pipe[1]);
  free (srv->socket_path);
  pthread_mutex_destroy (&srv->lock);
  pthread_cond_destroy (&srv->conns_done);
  free (srv);
}
