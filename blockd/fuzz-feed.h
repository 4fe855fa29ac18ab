/* SPDX-License-Identifier: MIT
 *
 * fuzz-feed.h - what the fuzz targets share: the client side (each input
 * goes into one end of a new socketpair while the server serves the
 * other end, and everything the server answers is read, and handed to a
 * callback, if any, so that neither side can block on a full socket),
 * the directory of their store, and the server's setup and one session.
 *
 * DESIGN: the per-input cost is what limits a fuzzer, so the client
 * makes no thread per input.  fuzz_session_begin writes the input on
 * the caller's thread (an input of the usual sizes fits into the socket
 * at once, so the server finds all of it and then the end of file, with
 * no wait) and hands a duplicate of the client's descriptor to one
 * helper thread, started once, which only keeps the socket moving while
 * the server runs: it reads the answers and writes what did not fit.
 * fuzz_session_end, called after the server closed its end, takes the
 * job back under the lock and reads what is left itself, so the caller
 * never waits for the helper to be scheduled; the helper notices the
 * hang-up and closes its duplicate.  Answers are read under the lock,
 * so the callback sees them in order, from either thread.
 */
#ifndef VBK_BLOCKD_FUZZ_FEED_H
#define VBK_BLOCKD_FUZZ_FEED_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "common/log.h"
#include "internal.h"

/* How often the helper looks at the socket while the server runs. */
#define FUZZ_CLIENT_TICK_NS 1000000
/* Ticks without a session before the helper sleeps until the next. */
#define FUZZ_CLIENT_IDLE_TICKS 100
/* The socket buffers: most answers fit without the helper. */
#define FUZZ_CLIENT_SOCKBUF (8 << 20)

typedef void fuzz_reply_fn (void *arg, const void *p, size_t n);

struct fuzz_client {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  pthread_t thread;
  /* The current job, under lock: */
  bool active;           /* the server runs; the helper moves bytes */
  bool sleeping;         /* the helper waits for a session */
  int fd;                /* the client's end */
  const uint8_t *data;   /* the input, OFF bytes of SIZE sent */
  size_t size, off;
  bool wr_open;
  fuzz_reply_fn *reply;  /* NULL: answers are dropped */
  void *reply_arg;
  uint8_t sink[65536];
};

/* Sends what the socket takes now of the input (lock held); at its end,
 * or when the server stopped reading, shuts the write side. */
static void
fuzz_client_push (struct fuzz_client *cl, int fd)
{
  while (cl->wr_open)
    {
      ssize_t n = cl->off < cl->size
        ? send (fd, cl->data + cl->off, cl->size - cl->off,
                MSG_NOSIGNAL | MSG_DONTWAIT)
        : 0;
      if (n > 0)
        {
          cl->off += n;
          continue;
        }
      if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
      shutdown (fd, SHUT_WR);
      cl->wr_open = false;
    }
}

/* Reads one piece of the answer (lock held).  Returns its size, 0 at the
 * end, -1 if nothing is there yet (or on an error: ERR set). */
static ssize_t
fuzz_client_pull (struct fuzz_client *cl, int fd, bool *err)
{
  ssize_t n = recv (fd, cl->sink, sizeof cl->sink, MSG_DONTWAIT);

  *err = false;
  if (n > 0 && cl->reply)
    cl->reply (cl->reply_arg, cl->sink, n);
  if (n < 0 && errno != EAGAIN && errno != EINTR)
    *err = true;
  return n;
}

/* The helper: every tick while a session runs, whatever the socket
 * holds for us is read and what is left of the input written. */
static void *
fuzz_client_main (void *arg)
{
  struct fuzz_client *cl = arg;

  unsigned idle = 0;

  pthread_mutex_lock (&cl->lock);
  for (;;)
    {
      struct timespec ts;

      /* Between sessions the tick goes on (a begin need not wake us),
       * unless no session came for a while. */
      idle = cl->active ? 0 : idle + 1;
      while (!cl->active && idle > FUZZ_CLIENT_IDLE_TICKS)
        {
          cl->sleeping = true;
          pthread_cond_wait (&cl->cond, &cl->lock);
          cl->sleeping = false;
        }
      clock_gettime (CLOCK_MONOTONIC, &ts);
      ts.tv_nsec += FUZZ_CLIENT_TICK_NS;
      if (ts.tv_nsec >= 1000000000)
        {
          ts.tv_sec++;
          ts.tv_nsec -= 1000000000;
        }
      pthread_cond_timedwait (&cl->cond, &cl->lock, &ts);
      if (cl->active)
        {
          bool err;
          fuzz_client_push (cl, cl->fd);
          while (fuzz_client_pull (cl, cl->fd, &err) > 0)
            ;
        }
    }
  return NULL;
}

static void
fuzz_client_init (struct fuzz_client *cl)
{
  pthread_condattr_t ca;

  pthread_mutex_init (&cl->lock, NULL);
  pthread_condattr_init (&ca);
  pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
  pthread_cond_init (&cl->cond, &ca);
  pthread_condattr_destroy (&ca);
  cl->fd = -1;
  if (pthread_create (&cl->thread, NULL, fuzz_client_main, cl) != 0)
    abort ();
}

/* Starts a session with DATA as the client's bytes; REPLY (if not NULL)
 * gets the answers.  Returns the server's end, for the server to serve
 * and close. */
static int
fuzz_session_begin (struct fuzz_client *cl, const uint8_t *data, size_t size,
                    fuzz_reply_fn *reply, void *reply_arg)
{
  int sv[2], big = FUZZ_CLIENT_SOCKBUF;

  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    abort ();
  /* Room for the answers to most inputs (as root: past wmem_max). */
  if (setsockopt (sv[1], SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big) < 0)
    setsockopt (sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
  if (setsockopt (sv[0], SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big) < 0)
    setsockopt (sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
  pthread_mutex_lock (&cl->lock);
  cl->fd = sv[0];
  cl->data = data;
  cl->size = size;
  cl->off = 0;
  cl->wr_open = true;
  cl->reply = reply;
  cl->reply_arg = reply_arg;
  fuzz_client_push (cl, sv[0]);
  cl->active = true;
  if (cl->sleeping)
    pthread_cond_signal (&cl->cond);
  pthread_mutex_unlock (&cl->lock);
  return sv[1];
}

/* Ends the session after the server closed its end: the rest of the
 * answer goes to the callback.  The helper stays on its tick for the
 * next session (the next begin is normally a few microseconds away). */
static void
fuzz_session_end (struct fuzz_client *cl)
{
  bool err;

  pthread_mutex_lock (&cl->lock);
  /* The server's end is closed: the reads end at end of file. */
  for (;;)
    {
      struct pollfd p = { cl->fd, POLLIN, 0 };
      ssize_t n = fuzz_client_pull (cl, cl->fd, &err);
      if (n == 0 || err)
        break;
      if (n < 0)
        poll (&p, 1, -1);
    }
  close (cl->fd);
  cl->fd = -1;
  cl->active = false;
  pthread_mutex_unlock (&cl->lock);
}

/* ---- the store's directory ---------------------------------------------- */

static char fuzz_store_path[96];

static int
fuzz_rm_one (const char *path, const struct stat *sb, int flag,
             struct FTW *ftw)
{
  (void) sb;
  (void) flag;
  (void) ftw;
  remove (path);
  return 0;
}

static void
fuzz_store_dir_remove (void)
{
  if (fuzz_store_path[0])
    nftw (fuzz_store_path, fuzz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Makes a new directory for the targets' local store, named after NAME
 * and the process id, in /dev/shm if there is one (a store in memory: its
 * flushes cost nothing), else in /tmp; it is removed when the process
 * exits (not after a crash or an interrupt, which end in _exit:
 * tests/fuzz-build.sh --clean removes those of processes that are
 * gone).  Writes the store's URI to URI. */
static void
fuzz_store_dir (const char *name, char *uri, size_t len)
{
  const char *base = access ("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";

  snprintf (fuzz_store_path, sizeof fuzz_store_path, "%s/%s-%d-XXXXXX", base,
            name, (int) getpid ());
  if (!mkdtemp (fuzz_store_path))
    abort ();
  atexit (fuzz_store_dir_remove);
  snprintf (uri, len, "local:%s", fuzz_store_path);
}

/* ---- the server --------------------------------------------------------- */

/* Prints "WHO: [WHAT: ]" and vbk_error (), and aborts. */
static void
fuzz_die (const char *who, const char *what)
{
  fprintf (stderr, "%s: %s%s%s\n", who, what ? what : "", what ? ": " : "",
           vbk_error ());
  abort ();
}

/* The start of a target's LLVMFuzzerInitialize: logs errors only (all
 * with VBK_FUZZ_DEBUG set), registers the thread with RCU (the fuzzing
 * thread serves the sessions) and makes the store's directory
 * (fuzz_store_dir NAME), writing its URI to URI. */
static void
fuzz_setup (const char *name, char *uri, size_t len)
{
  log_level = getenv ("VBK_FUZZ_DEBUG") ? LOG_LVL_DEBUG : LOG_LVL_ERROR;
  rcu_register_thread ();
  fuzz_store_dir (name, uri, len);
}

/* Makes the server over the store URI (two workers; CONFIGURE, if not
 * NULL, adds to its configuration), opens the exports NAMES[0..N) into
 * KEEP for the whole run (so their images stay open from input to
 * input, not opened per input), and starts the client CL.  WHO names
 * the target in the message of a failure, which aborts. */
static struct nbd_srv_server *
fuzz_server_start (const char *who, const char *uri,
                   int (*configure) (struct nbd_srv_config *cfg),
                   const char *const *names, size_t n,
                   struct nbd_srv_export **keep, struct fuzz_client *cl)
{
  struct nbd_srv_config cfg;
  struct nbd_srv_server *srv;
  size_t i;

  nbd_srv_config_init (&cfg);
  nbd_srv_config_set (&cfg, "store", uri);
  nbd_srv_config_set (&cfg, "workers", "2");
  if ((configure && configure (&cfg) < 0)
      || nbd_srv_server_new (&cfg, &srv) < 0)
    fuzz_die (who, NULL);
  for (i = 0; i < n; i++)
    if (nbd_srv_export_get (srv->exports, names[i], &keep[i]) < 0)
      fuzz_die (who, names[i]);
  nbd_srv_config_free (&cfg);
  fuzz_client_init (cl);
  return srv;
}

/* One input: the server serves DATA, SIZE as the client's bytes on this
 * thread, exactly as a connection thread does, and returns after the
 * client's end closed and every request is answered; REPLY (if not
 * NULL) gets the answers. */
static void
fuzz_serve (struct nbd_srv_server *srv, struct fuzz_client *cl,
            const uint8_t *data, size_t size, fuzz_reply_fn *reply,
            void *reply_arg)
{
  int fd = fuzz_session_begin (cl, data, size, reply, reply_arg);

  nbd_srv_session_run (srv, fd, "fuzz");   /* closes fd */
  fuzz_session_end (cl);
}

#endif /* VBK_BLOCKD_FUZZ_FEED_H */
