/* SPDX-License-Identifier: MIT
 *
 * workers.c - the pool of threads for the image calls that have no
 * asynchronous form (flush, trim, write zeroes), on common/workq.h.
 *
 * DESIGN: each request carries its queue item (struct nbd_srv_req.wq),
 * so queueing allocates nothing; a worker calls the job function the
 * pool was made with (protocol.c's nbd_srv_req_run_sync, which does the
 * call and hands the reply to the connection; it never waits for a
 * socket).  So a slow flush never stalls the reader thread of a
 * connection, and reads and writes (asynchronous through the store's own
 * threads) go on beside it.  The queue has no bound of its own: every
 * connection has at most NBD_SRV_MAX_INFLIGHT requests in flight
 * (nbd_srv_conn_wait_room, which is where a reader waits), so the pool
 * holds at most that many per connection, and a reader never waits on
 * the shared queue behind other clients' work.  Workers are RCU reader
 * threads (the export table).  Freeing runs what is queued first.
 */
#include <errno.h>
#include <stdlib.h>

#include "common/error.h"
#include "common/workq.h"
#include "internal.h"

struct nbd_srv_workers {
  nbd_srv_job_fn run;
  struct workq *q;
};

/* The pool of the worker running on this thread. */
static __thread struct nbd_srv_workers *self;

static void
thread_start (void *arg)
{
  self = arg;
  rcu_register_thread ();
}

static void
thread_stop (void *arg)
{
  rcu_unregister_thread ();
  self = NULL;
}

static void
run_req (struct workq_item *it)
{
  self->run (workq_entry (it, struct nbd_srv_req, wq));
}

int
nbd_srv_workers_new (unsigned n, nbd_srv_job_fn run,
                     struct nbd_srv_workers **out)
{
  struct nbd_srv_workers *w;
  struct workq_opts o = {
    .name = "blockd-sync", .threads = n ? n : 1,
    .thread_start = thread_start, .thread_stop = thread_stop,
  };
  int r;

  w = calloc (1, sizeof *w);
  if (!w)
    return -ENOMEM;
  w->run = run;
  o.arg = w;
  r = workq_new (&o, &w->q);
  if (r < 0)
    {
      free (w);
      return vbk_error_prepend (r, "blockd: workers: ");
    }
  *out = w;
  return 0;
}

void
nbd_srv_workers_free (struct nbd_srv_workers *w)
{
  if (!w)
    return;
  workq_free (w->q);
  free (w);
}

void
nbd_srv_workers_queue (struct nbd_srv_workers *w, struct nbd_srv_req *req)
{
  /* Refused only once the pool is being freed, when no connection is
   * left; should it happen, the call runs here rather than be lost. */
  if (workq_submit (w->q, &req->wq, run_req) < 0)
    w->run (req);
}
