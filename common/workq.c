/* SPDX-License-Identifier: MIT
 *
 * workq.c - N threads over one FIFO of caller-owned items.
 *
 * DESIGN: one mutex guards a singly linked FIFO of struct workq_item
 * (embedded in the callers' requests, so queueing allocates nothing) and
 * the counters: items queued, items running, threads idle, submitters
 * waiting for room, drainers waiting for idleness.  Three condition
 * variables, each signalled only when someone waits on it: "work" for
 * idle threads, "room" for submitters of a bounded queue, "idle" for
 * workq_drain.  A thread pops the head under the mutex and runs it
 * without the mutex, so items start in FIFO order and any number run at
 * once.  Timed waits use CLOCK_MONOTONIC.
 *
 * The thread-local "self" tells a queue's own threads apart: they never
 * wait for room (every thread waiting for room in its own queue would be
 * a deadlock), their submissions are accepted during shutdown (they are
 * part of the work in flight that shutdown promises to finish), and they
 * may not drain or shut down their own queue (they would wait for
 * themselves).  Shutdown sets "stopping" and wakes everyone; a thread
 * leaves only when the queue is empty, and a thread that queues an item
 * while stopping is still there to run it, so nothing queued is lost.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "workq.h"

struct workq {
  pthread_mutex_t lock;
  pthread_cond_t work, room, idle;
  struct workq_item *head, *tail;
  unsigned queued, running;
  unsigned idle_threads, room_waiters, drainers;
  unsigned max_queued, max_queued_seen;
  uint64_t submitted, completed;
  bool stopping, joined;
  void (*thread_start) (void *arg);
  void (*thread_stop) (void *arg);
  void *arg;
  char name[16];
  unsigned nthreads;
  pthread_t threads[];
};

static __thread const struct workq *self;

int
workq_on_thread (const struct workq *q)
{
  return q != NULL && self == q;
}

static void *
worker_main (void *arg)
{
  struct workq *q = arg;
  struct workq_item *it;

  self = q;
  if (q->thread_start)
    q->thread_start (q->arg);
  pthread_mutex_lock (&q->lock);
  for (;;) {
    while (q->head == NULL && !q->stopping) {
      q->idle_threads++;
      pthread_cond_wait (&q->work, &q->lock);
      q->idle_threads--;
    }
    it = q->head;
    if (it == NULL)
      break;                    /* stopping, and nothing is left */
    q->head = it->next;
    if (q->head == NULL)
      q->tail = NULL;
    q->queued--;
    q->running++;
    if (q->room_waiters)
      pthread_cond_signal (&q->room);
    pthread_mutex_unlock (&q->lock);

    /* IT belongs to the caller again from here on. */
    it->next = NULL;
    it->fn (it);

    pthread_mutex_lock (&q->lock);
    q->running--;
    q->completed++;
    if (q->drainers && q->queued == 0 && q->running == 0)
      pthread_cond_broadcast (&q->idle);
  }
  pthread_mutex_unlock (&q->lock);
  if (q->thread_stop)
    q->thread_stop (q->arg);
  self = NULL;
  return NULL;
}

/* The absolute CLOCK_MONOTONIC time TIMEOUT_NS from now. */
static struct timespec
deadline (uint64_t timeout_ns)
{
  struct timespec ts;
  uint64_t ns;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  if (timeout_ns > UINT64_C (1) << 62)
    timeout_ns = UINT64_C (1) << 62;
  ns = (uint64_t) ts.tv_nsec + timeout_ns % 1000000000;
  ts.tv_sec += timeout_ns / 1000000000 + ns / 1000000000;
  ts.tv_nsec = ns % 1000000000;
  return ts;
}

int
workq_new (const struct workq_opts *o, struct workq **out)
{
  const char *name = o->name ? o->name : "workq";
  pthread_condattr_t ca;
  struct workq *q;
  unsigned i;
  int r;

  if (o->threads == 0 || o->threads > WORKQ_THREADS_MAX) {
    vbk_set_error ("workq %s: %u threads (1 to %u)", name, o->threads,
                   WORKQ_THREADS_MAX);
    return -EINVAL;
  }
  q = calloc (1, sizeof *q + o->threads * sizeof q->threads[0]);
  if (q == NULL)
    return vbk_errno (-ENOMEM, "workq %s", name);
  q->max_queued = o->max_queued;
  q->thread_start = o->thread_start;
  q->thread_stop = o->thread_stop;
  q->arg = o->arg;
  snprintf (q->name, sizeof q->name, "%s", name);
  pthread_mutex_init (&q->lock, NULL);
  pthread_condattr_init (&ca);
  pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
  pthread_cond_init (&q->work, &ca);
  pthread_cond_init (&q->room, &ca);
  pthread_cond_init (&q->idle, &ca);
  pthread_condattr_destroy (&ca);
  for (i = 0; i < o->threads; i++) {
    char tname[16], num[12];

    r = pthread_create (&q->threads[i], NULL, worker_main, q);
    if (r != 0) {
      workq_free (q);
      return vbk_errno (-r, "workq %s: starting thread %u", name, i + 1);
    }
    q->nthreads++;
    /* "NAME-N" in ps and gdb; the kernel keeps 15 characters. */
    snprintf (num, sizeof num, "-%u", i + 1);
    snprintf (tname, sizeof tname, "%.*s%s",
              (int) (sizeof tname - 1 - strlen (num)), name, num);
    pthread_setname_np (q->threads[i], tname);
  }
  *out = q;
  return 0;
}

int
workq_submit_timed (struct workq *q, struct workq_item *it, workq_fn fn,
                    uint64_t timeout_ns)
{
  bool own = self == q, timed_out = false, have_dl = false;
  struct timespec dl;

  it->fn = fn;
  it->next = NULL;
  pthread_mutex_lock (&q->lock);
  for (;;) {
    if (q->stopping && !own) {
      pthread_mutex_unlock (&q->lock);
      return -ESHUTDOWN;
    }
    if (own || q->max_queued == 0 || q->queued < q->max_queued)
      break;
    if (timeout_ns == 0 || timed_out) {
      pthread_mutex_unlock (&q->lock);
      return -EAGAIN;
    }
    q->room_waiters++;
    if (timeout_ns == WORKQ_FOREVER)
      pthread_cond_wait (&q->room, &q->lock);
    else {
      if (!have_dl) {
        dl = deadline (timeout_ns);
        have_dl = true;
      }
      /* Checked once more after the last wait: room may have come. */
      timed_out = pthread_cond_timedwait (&q->room, &q->lock, &dl)
        == ETIMEDOUT;
    }
    q->room_waiters--;
  }
  if (q->tail)
    q->tail->next = it;
  else
    q->head = it;
  q->tail = it;
  q->queued++;
  q->submitted++;
  if (q->queued > q->max_queued_seen)
    q->max_queued_seen = q->queued;
  if (q->idle_threads)
    pthread_cond_signal (&q->work);
  /* A waiter for room may now have some, when a thread took an item
   * between our check and this point; wake the next one in line. */
  if (q->room_waiters && q->max_queued && q->queued < q->max_queued)
    pthread_cond_signal (&q->room);
  pthread_mutex_unlock (&q->lock);
  return 0;
}

int
workq_submit (struct workq *q, struct workq_item *it, workq_fn fn)
{
  return workq_submit_timed (q, it, fn, WORKQ_FOREVER);
}

int
workq_drain (struct workq *q, uint64_t timeout_ns)
{
  struct timespec dl;
  int r = 0;

  if (self == q)
    return -EDEADLK;
  if (timeout_ns != WORKQ_FOREVER)
    dl = deadline (timeout_ns);
  pthread_mutex_lock (&q->lock);
  while (q->queued > 0 || q->running > 0) {
    if (timeout_ns == 0 || r == ETIMEDOUT) {
      pthread_mutex_unlock (&q->lock);
      return -ETIMEDOUT;
    }
    q->drainers++;
    if (timeout_ns == WORKQ_FOREVER)
      pthread_cond_wait (&q->idle, &q->lock);
    else
      r = pthread_cond_timedwait (&q->idle, &q->lock, &dl);
    q->drainers--;
  }
  pthread_mutex_unlock (&q->lock);
  return 0;
}

int
workq_shutdown (struct workq *q)
{
  unsigned i;

  if (self == q)
    return -EDEADLK;
  pthread_mutex_lock (&q->lock);
  if (q->stopping) {
    pthread_mutex_unlock (&q->lock);
    return 0;
  }
  q->stopping = true;
  pthread_cond_broadcast (&q->work);
  pthread_cond_broadcast (&q->room);
  pthread_mutex_unlock (&q->lock);
  for (i = 0; i < q->nthreads; i++)
    pthread_join (q->threads[i], NULL);
  pthread_mutex_lock (&q->lock);
  q->joined = true;
  pthread_cond_broadcast (&q->idle);
  pthread_mutex_unlock (&q->lock);
  return 0;
}

void
workq_free (struct workq *q)
{
  if (q == NULL)
    return;
  if (workq_shutdown (q) < 0)
    return;                     /* on its own thread: a bug, see header */
  /* A shutdown that another thread began may still be joining. */
  pthread_mutex_lock (&q->lock);
  while (!q->joined)
    pthread_cond_wait (&q->idle, &q->lock);
  pthread_mutex_unlock (&q->lock);
  pthread_mutex_destroy (&q->lock);
  pthread_cond_destroy (&q->work);
  pthread_cond_destroy (&q->room);
  pthread_cond_destroy (&q->idle);
  free (q);
}

void
workq_get_stats (struct workq *q, struct workq_stats *st)
{
  pthread_mutex_lock (&q->lock);
  st->submitted = q->submitted;
  st->completed = q->completed;
  st->queued = q->queued;
  st->running = q->running;
  st->max_queued_seen = q->max_queued_seen;
  st->threads = q->nthreads;
  pthread_mutex_unlock (&q->lock);
}
