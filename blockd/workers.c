/* SPDX-License-Identifier: MIT
 *
 * workers.c - a small pool of threads for the image calls that have no
 * asynchronous form (flush, trim, write zeroes).
 *
 * DESIGN: one FIFO of requests under a mutex and a condition variable;
 * each worker pops a request and calls the job function it was made
 * with (protocol.c's nbd_srv_req_run_sync, which does the call and
 * hands the reply to the connection; it never waits for a socket).  So a slow flush never stalls the reader
 * thread of a connection, and reads and writes (asynchronous through the
 * store's own threads) go on beside it.  Freeing drains the queue first.
 */
#include <errno.h>
#include <stdlib.h>

#include "common/error.h"
#include "internal.h"

struct nbd_srv_workers {
  nbd_srv_job_fn run;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct nbd_srv_req *head, *tail;
  bool stop;
  unsigned n;
  pthread_t threads[];
};

static void *
worker_main (void *arg)
{
  struct nbd_srv_workers *w = arg;

  rcu_register_thread ();
  for (;;)
    {
      struct nbd_srv_req *r;

      pthread_mutex_lock (&w->lock);
      while (!w->head && !w->stop)
        pthread_cond_wait (&w->cond, &w->lock);
      r = w->head;
      if (!r)
        {
          pthread_mutex_unlock (&w->lock);
          break;
        }
      w->head = r->next;
      if (!w->head)
        w->tail = NULL;
      pthread_mutex_unlock (&w->lock);

      r->next = NULL;
      w->run (r);
    }
  rcu_unregister_thread ();
  return NULL;
}

int
nbd_srv_workers_new (unsigned n, nbd_srv_job_fn run,
                     struct nbd_srv_workers **out)
{
  struct nbd_srv_workers *w;
  unsigned i;
  int r;

  if (n == 0)
    n = 1;
  w = calloc (1, sizeof *w + n * sizeof (pthread_t));
  if (!w)
    return -ENOMEM;
  w->run = run;
  pthread_mutex_init (&w->lock, NULL);
  pthread_cond_init (&w->cond, NULL);
  for (i = 0; i < n; i++)
    {
      r = pthread_create (&w->threads[i], NULL, worker_main, w);
      if (r)
        {
          w->n = i;
          nbd_srv_workers_free (w);
          return vbk_errno (-r, "blockd: workers: pthread_create");
        }
    }
  w->n = n;
  *out = w;
  return 0;
}

void
nbd_srv_workers_free (struct nbd_srv_workers *w)
{
  unsigned i;

  if (!w)
    return;
  pthread_mutex_lock (&w->lock);
  w->stop = true;
  pthread_cond_broadcast (&w->cond);
  pthread_mutex_unlock (&w->lock);
  for (i = 0; i < w->n; i++)
    pthread_join (w->threads[i], NULL);
  pthread_mutex_destroy (&w->lock);
  pthread_cond_destroy (&w->cond);
  free (w);
}

void
nbd_srv_workers_queue (struct nbd_srv_workers *w, struct nbd_srv_req *req)
{
  req->next = NULL;
  pthread_mutex_lock (&w->lock);
  if (w->tail)
    w->tail->next = req;
  else
    w->head = req;
  w->tail = req;
  pthread_cond_signal (&w->cond);
  pthread_mutex_unlock (&w->lock);
}
