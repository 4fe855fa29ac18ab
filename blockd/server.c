/* SPDX-License-Identifier: MIT
 *
 * server.c - listening sockets, the accept loop and shutdown.
 *
 * DESIGN: the main thread polls the listening sockets (a Unix socket
 * and/or TCP) and a self-pipe; each accepted client is counted against
 * the connection limits (all clients, and per client address or uid:
 * over them it is closed at once) and gets its own reader thread
 * (session.c).  When accept runs out of descriptors (EMFILE, ENFILE) the
 * loop stops polling the listening sockets for 100 ms instead of
 * spinning on them; repeated warnings are rate-limited.  The Unix
 * socket is created 0660 (chown to socket_group if set); a file already
 * at its path is removed only if it is a socket nobody answers on.
 * nbd_srv_server_stop only sets a flag and
 * writes to the pipe, so it is safe in a signal handler.  On stop the
 * loop closes the listening sockets (no new clients), shuts down the
 * receive side of every connection (their readers see EOF, stop taking
 * requests and wait for the ones in flight to be answered), waits for
 * all connections to go, and the last put of each export closes, and so
 * flushes, its image.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
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
#include "common/util.h"
#include "access.h"
#include "internal.h"
#include "metrics.h"
#include "tls.h"

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
  pthread_mutex_init (&srv->mem_lock, NULL);
  pthread_cond_init (&srv->mem_cond, NULL);
  pthread_mutex_init (&srv->status_lock, NULL);
  srv->read_only = cfg->read_only;
  srv->max_conns = cfg->max_conns;
  srv->max_conns_per_client = cfg->max_conns_per_client;
  srv->handshake_ns = (uint64_t) cfg->handshake_timeout_ms * 1000000;
  srv->send_timeout_ns = (uint64_t) cfg->send_timeout_ms * 1000000;
  srv->idle_ns = (uint64_t) cfg->idle_timeout_ms * 1000000;
  srv->conn_memory = cfg->conn_memory;
  srv->mem_limit = cfg->max_memory;

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
  r = nbd_srv_workers_new (cfg->workers, nbd_srv_req_run_sync,
                           &srv->workers);
  if (r < 0)
    goto fail;
  srv->tls_mode = cfg->tls > 0 ? cfg->tls : NBD_SRV_TLS_OFF;
  srv->tls_timeout_ms = cfg->tls_timeout_ms ? cfg->tls_timeout_ms : 10000;
  if (srv->tls_mode != NBD_SRV_TLS_OFF)
    {
      struct nbd_srv_tls_opts o = {
        .cert_dir = cfg->tls_certificates,
        .psk_file = cfg->tls_psk,
        .verify_peer = cfg->tls_verify_peer,
        .priority = cfg->tls_priority,
      };
      r = nbd_srv_tls_new (&o, &srv->tls);
      if (r < 0)
        goto fail;
      log_info ("TLS %s on TCP: %s%s%s%s; priority %s",
                srv->tls_mode == NBD_SRV_TLS_REQUIRE ? "required" : "offered",
                cfg->tls_certificates ? "certificates in " : "",
                cfg->tls_certificates ? cfg->tls_certificates : "",
                cfg->tls_certificates && cfg->tls_psk ? ", " : "",
                cfg->tls_psk ? "PSK keys" : "",
                cfg->tls_priority ? cfg->tls_priority : "(default)");
    }
  r = nbd_srv_acl_copy (cfg->acl, &srv->acl);
  if (r < 0)
    goto fail;
  if (cfg->metrics_addr)
    {
      r = nbd_srv_metrics_new (&srv->metrics);
      if (r == 0)
        r = nbd_srv_metrics_start (srv->metrics, cfg->metrics_addr);
      if (r < 0)
        goto fail;
    }
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

/* What is at PATH may be replaced only if it is a socket nobody
 * answers on (left by a daemon that died).  Returns 0 (nothing there,
 * or a stale socket, now removed) or -errno with a message. */
static int
clear_socket_path (const char *path, const struct sockaddr_un *sun)
{
  struct stat st;
  int fd, r;

  if (lstat (path, &st) < 0)
    {
      if (errno == ENOENT)
        return 0;
      return vbk_errno (-errno, "blockd: socket %s", path);
    }
  if (!S_ISSOCK (st.st_mode))
    return vbk_errno (-EEXIST, "blockd: socket %s: a file that is not a "
                      "socket is in the way (not removing it)", path);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return vbk_errno (-errno, "blockd: socket");
  r = connect (fd, (const struct sockaddr *) sun, sizeof *sun);
  if (r == 0)
    {
      close (fd);
      return vbk_errno (-EADDRINUSE, "blockd: %s: another server is "
                        "listening there", path);
    }
  r = errno;
  close (fd);
  if (r != ECONNREFUSED)
    return vbk_errno (-r, "blockd: socket %s: cannot tell whether it is "
                      "in use", path);
  /* Nobody listens: a stale socket. */
  if (unlink (path) < 0 && errno != ENOENT)
    return vbk_errno (-errno, "blockd: remove stale socket %s", path);
  log_info ("removed stale socket %s", path);
  return 0;
}

static int
listen_unix (struct nbd_srv_server *srv, const char *path,
             const char *group)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  struct sockaddr_un tmp = { .sun_family = AF_UNIX };
  char dir[sizeof sun.sun_path];
  char *slash;
  gid_t gid = (gid_t) -1;
  int fd, r;

  if (strlen (path) >= sizeof sun.sun_path)
    return vbk_errno (-ENAMETOOLONG, "blockd: socket %s", path);
  strcpy (sun.sun_path, path);
  if (group && *group)
    {
      struct group *g = getgrnam (group);
      char *end;
      unsigned long n = strtoul (group, &end, 10);
      if (g)
        gid = g->gr_gid;
      else if (*end == 0)
        gid = (gid_t) n;
      else
        return vbk_errno (-EINVAL, "blockd: socket_group %s: no such group",
                          group);
    }

  /* /run/vbk may not exist yet (tmpfs). */
  strcpy (dir, path);
  slash = strrchr (dir, '/');
  if (slash && slash != dir)
    {
      *slash = 0;
      if (mkdir (dir, 0755) < 0 && errno != EEXIST)
        return vbk_errno (-errno, "blockd: mkdir %s", dir);
    }

  r = clear_socket_path (path, &sun);
  if (r < 0)
    return r;

  /* Bound and listening under a temporary name, then renamed into
   * place: a client never finds the socket before it accepts (a connect
   * between bind and listen is refused). */
  if (snprintf (tmp.sun_path, sizeof tmp.sun_path, "%s.%d.tmp", path,
                (int) getpid ()) >= (int) sizeof tmp.sun_path)
    return vbk_errno (-ENAMETOOLONG, "blockd: socket %s", path);
  unlink (tmp.sun_path);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return vbk_errno (-errno, "blockd: socket");
  /* The socket is 0660: its owner and group (socket_group) connect;
   * bind honours the umask, so set it around the bind. */
  {
    mode_t old = umask (0117);
    r = bind (fd, (struct sockaddr *) &tmp, sizeof tmp);
    umask (old);
  }
  if (r < 0 || listen (fd, SOMAXCONN) < 0)
    {
      int e = errno;
      close (fd);
      unlink (tmp.sun_path);
      return vbk_errno (-e, "blockd: listen on %s", path);
    }
  if ((gid != (gid_t) -1 && chown (tmp.sun_path, (uid_t) -1, gid) < 0)
      || rename (tmp.sun_path, path) < 0)
    {
      int e = errno;
      close (fd);
      unlink (tmp.sun_path);
      return vbk_errno (-e, "blockd: socket %s: %s", path,
                        gid != (gid_t) -1 ? "chown or rename" : "rename");
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
      r = listen_unix (srv, cfg->socket_path, cfg->socket_group);
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

long
nbd_srv_ratelimit (struct nbd_srv_ratelimit *rl)
{
  uint64_t now = now_mono_ns ();
  long r = -1;

  pthread_mutex_lock (&rl->lock);
  if (now - rl->window_ns >= 1000000000 || rl->window_ns == 0)
    {
      rl->window_ns = now;
      rl->in_window = 0;
    }
  if (rl->in_window < 5)
    {
      rl->in_window++;
      r = rl->dropped;
      rl->dropped = 0;
    }
  else
    rl->dropped++;
  pthread_mutex_unlock (&rl->lock);
  return r;
}

/* Logs a warning at most a few times a second. */
#define log_warn_limited(rl, fmt, ...)                                    \
  do {                                                                    \
    long _d = nbd_srv_ratelimit (rl);                                     \
    if (_d > 0)                                                           \
      log_warn (fmt " (and %ld more like it)", __VA_ARGS__, _d);          \
    else if (_d == 0)                                                     \
      log_warn (fmt, __VA_ARGS__);                                        \
  } while (0)

/* Returns 0, or -errno of accept (-EMFILE, -ENFILE: out of descriptors,
 * the caller backs off). */
static int
accept_one (struct nbd_srv_server *srv, int lfd)
{
  static struct nbd_srv_ratelimit rl_accept = NBD_SRV_RATELIMIT_INIT;
  static struct nbd_srv_ratelimit rl_refuse = NBD_SRV_RATELIMIT_INIT;
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  char peer[128] = "unix", client[64] = "unix";
  struct nbd_srv_conn *c;
  int fd;

  fd = accept4 (lfd, (struct sockaddr *) &ss, &sl, SOCK_CLOEXEC);
  if (fd < 0)
    {
      int e = errno;
      if (e != EINTR && e != EAGAIN && e != ECONNABORTED)
        log_warn_limited (&rl_accept, "blockd: accept: %s", strerror (e));
      return -e;
    }
  if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)
    {
      char h[64], p[16];
      int one = 1;
      /* proto.md: both sides SHOULD disable Nagle. */
      setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (getnameinfo ((struct sockaddr *) &ss, sl, h, sizeof h, p, sizeof p,
                       NI_NUMERICHOST | NI_NUMERICSERV) == 0)
        {
          snprintf (peer, sizeof peer, "%s:%s", h, p);
          snprintf (client, sizeof client, "%s", h);
        }
    }
  else
    {
      static atomic_uint seq;
      struct ucred cred;
      socklen_t cl = sizeof cred;
      snprintf (peer, sizeof peer, "unix#%u", atomic_fetch_add (&seq, 1));
      /* Local clients are told apart by uid. */
      if (getsockopt (fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0)
        snprintf (client, sizeof client, "uid %u", (unsigned) cred.uid);
    }
  c = nbd_srv_conn_new (srv, fd, peer, client);
  if (!c)
    {
      log_warn_limited (&rl_refuse, "blockd: connection %s: out of memory",
                        peer);
      close (fd);
      return 0;
    }
  c->tcp = ss.ss_family == AF_INET || ss.ss_family == AF_INET6;
  if (!nbd_srv_session_register (c))
    {
      log_warn_limited (&rl_refuse, "blockd: connection %s (%s) refused: "
                        "too many connections", peer, client);
      nbd_srv_conn_free (c);
      return 0;
    }
  nbd_srv_session_start (c);
  return 0;
}

int
nbd_srv_server_run (struct nbd_srv_server *srv)
{
  struct pollfd pfd[9];
  struct nbd_srv_conn *c;
  int backoff_ms = 0;
  int i;

  while (!atomic_load (&srv->quit))
    {
      int timeout = -1, n = srv->nlisten;

      /* Out of descriptors: the listening sockets stay readable, so
       * poll only the quit pipe for a while instead of spinning. */
      if (backoff_ms)
        {
          n = 0;
          timeout = backoff_ms;
        }
      for (i = 0; i < n; i++)
        pfd[i] = (struct pollfd) { srv->listen_fds[i], POLLIN, 0 };
      pfd[n] = (struct pollfd) { srv->quit_pipe[0], POLLIN, 0 };
      i = poll (pfd, n + 1, timeout);
      if (i < 0)
        {
          if (errno == EINTR)
            continue;
          log_error ("blockd: poll: %s", strerror (errno));
          break;
        }
      if (i == 0 && backoff_ms)
        {
          backoff_ms = 0;       /* try accepting again */
          continue;
        }
      for (i = 0; i < n; i++)
        if (pfd[i].revents & POLLIN)
          {
            int r = accept_one (srv, srv->listen_fds[i]);
            if (r == -EMFILE || r == -ENFILE || r == -ENOBUFS
                || r == -ENOMEM)
              backoff_ms = 100;
          }
    }

  atomic_store (&srv->quit_ns, now_mono_ns ());
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
  nbd_srv_tls_free (srv->tls);
  nbd_srv_acl_free (srv->acl);
  nbd_srv_metrics_free (srv->metrics);
  store_close (srv->store);
  if (srv->quit_pipe[0] >= 0)
    close (srv->quit_pipe[0]);
  if (srv->quit_pipe[1] >= 0)
    close (srv->quit_pipe[1]);
  free (srv->socket_path);
  pthread_mutex_destroy (&srv->lock);
  pthread_cond_destroy (&srv->conns_done);
  pthread_mutex_destroy (&srv->mem_lock);
  pthread_cond_destroy (&srv->mem_cond);
  pthread_mutex_destroy (&srv->status_lock);
  free (srv);
}
