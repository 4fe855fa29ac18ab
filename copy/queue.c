/* SPDX-License-Identifier: MIT
 *
 * queue.c - a fixed pool of worker threads over a bounded queue.
 *
 * DESIGN: one mutex guards a ring of DEPTH items and two counters:
 * items queued and items running.  Producers block on "not_full", the
 * workers on "not_empty", copy_queue_wait on "idle" (nothing queued and
 * nothing running).  A blocked producer or waiter wakes every 200 ms to
 * run the tick callback (progress, signal checks), so the caller's
 * thread can report while workers do the work.  Items run in the order
 * pushed but finish in any order.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "copy.h"

struct item {
  copy_work_fn fn;
  void *arg;
};

struct copy_queue {
  pthread_mutex_t lock;
  pthread_cond_t not_full, not_empty, idle;
  struct item *ring;
  unsigned depth, head, count, running;
  int stopping;
  pthread_t *tids;
  unsigned nthreads;
  copy_tick_fn tick;
  void *tick_arg;
};

static void *
worker (void *arg)
{
  struct copy_queue *q = arg;
  struct item it;

  pthread_mutex_lock (&q->lock);
  for (;;) {
    while (q->count == 0 && !q->stopping)
      pthread_cond_wait (&q->not_empty, &q->lock);
    if (q->count == 0)
      break;
    it = q->ring[q->head];
    q->head = (q->head + 1) % q->depth;
    q->count--;
    q->running++;
    pthread_cond_signal (&q->not_full);
    pthread_mutex_unlock (&q->lock);
    it.fn (it.arg);
    pthread_mutex_lock (&q->lock);
    q->running--;
    if (q->count == 0 && q->running == 0)
      pthread_cond_broadcast (&q->idle);
  }
  pthread_mutex_unlock (&q->lock);
  return NULL;
}

int
copy_queue_new (unsigned threads, unsigned depth, struct copy_queue **out)
{
  struct copy_queue *q = calloc (1, sizeof *q);
  unsigned i;

  if (threads == 0)
    threads = 1;
  if (depth == 0)
    depth = 2 * threads;
  if (q == NULL)
    return -ENOMEM;
  q->ring = calloc (depth, sizeof *q->ring);
  q->tids = calloc (threads, sizeof *q->tids);
  if (q->ring == NULL || q->tids == NULL) {
    free (q->ring);
    free (q->tids);
    free (q);
    return -ENOMEM;
  }
  q->depth = depth;
  pthread_mutex_init (&q->lock, NULL);
  pthread_cond_init (&q->not_full, NULL);
  pthread_cond_init (&q->not_empty, NULL);
  pthread_cond_init (&q->idle, NULL);
  for (i = 0; i < threads; i++) {
    if (pthread_create (&q->tids[i], NULL, worker, q) != 0)
      break;
    q->nthreads++;
  }
  if (q->nthreads == 0) {
    copy_queue_free (q);
    return -EAGAIN;
  }
  *out = q;
  return 0;
}

void
copy_queue_set_tick (struct copy_queue *q, copy_tick_fn fn, void *arg)
{
  q->tick = fn;
  q->tick_arg = arg;
}

/* Waits on COND for up to 200 ms, with the lock held. */
static void
timed_wait (struct copy_queue *q, pthread_cond_t *cond)
{
  struct timespec ts;

  clock_gettime (CLOCK_REALTIME, &ts);
  ts.tv_nsec += 200000000;
  if (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  if (pthread_cond_timedwait (cond, &q->lock, &ts) == ETIMEDOUT && q->tick) {
    pthread_mutex_unlock (&q->lock);
    q->tick (q->tick_arg);
    pthread_mutex_lock (&q->lock);
  }
}

int
copy_queue_push (struct copy_queue *q, copy_work_fn fn, void *arg)
{
  pthread_mutex_lock (&q->lock);
  while (q->count == q->depth)
    timed_wait (q, &q->not_full);
  q->ring[(q->head + q->count) % q->depth] = (struct item) { fn, arg };
  q->count++;
  pthread_cond_signal (&q->not_empty);
  pthread_mutex_unlock (&q->lock);
  return 0;
}

void
copy_queue_wait (struct copy_queue *q)
{
  pthread_mutex_lock (&q->lock);
  while (q->count > 0 || q->running > 0)
    timed_wait (q, &q->idle);
  pthread_mutex_unlock (&q->lock);
}

void
copy_queue_free (struct copy_queue *q)
{
  unsigned i;

  if (q == NULL)
    return;
  copy_queue_wait (q);
  pthread_mutex_lock (&q->lock);
  q->stopping = 1;
  pthread_cond_broadcast (&q->not_empty);
  pthread_mutex_unlock (&q->lock);
  for (i = 0; i < q->nthreads; i++)
    pthread_join (q->tids[i], NULL);
  pthread_mutex_destroy (&q->lock);
  pthread_cond_destroy (&q->not_full);
  pthread_cond_destroy (&q->not_empty);
  pthread_cond_destroy (&q->idle);
  free (q->ring);
  free (q->tids);
  free (q);
}
