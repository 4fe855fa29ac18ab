/* SPDX-License-Identifier: MIT
 *
 * renew.c - a thread that keeps a lock of the repository alive.
 *
 * DESIGN: a running backup (its writer lock) and an open reader (its
 * reader lock) hold a lock with a duration (backup_lock_ms) that gc
 * takes for a sign of life; both renew it every quarter of the duration
 * from a thread of their own, so that three renewals in a row may be
 * late before the lock runs out.  What a failed renewal means differs
 * (a writer must not complete, a reader registers again), so the caller
 * gives the renewal as a function; the thread stops when it returns
 * non-zero or when backup_renewer_stop asks.  The wait is on a
 * condition, so stopping takes no longer than the renewal in flight.
 * A thread of its own, not an item of common/workq.c: it lives as long
 * as the lock and must renew on time even while the backup's copy
 * workers are all busy or stuck on the store.
 */
#include <errno.h>
#include <time.h>

#include "common/error.h"
#include "internal.h"

static void *
renew_thread (void *arg)
{
  struct backup_renewer *rn = arg;
  struct timespec ts;
  int stop = 0;

  pthread_mutex_lock (&rn->lock);
  while (!rn->stop && !stop) {
    clock_gettime (CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long) (rn->every_ms % 1000) * 1000000;
    ts.tv_sec += rn->every_ms / 1000 + ts.tv_nsec / 1000000000;
    ts.tv_nsec %= 1000000000;
    pthread_cond_timedwait (&rn->cond, &rn->lock, &ts);
    if (rn->stop)
      break;
    pthread_mutex_unlock (&rn->lock);
    stop = rn->renew (rn->arg);
    pthread_mutex_lock (&rn->lock);
  }
  pthread_mutex_unlock (&rn->lock);
  return NULL;
}

int
backup_renewer_start (struct backup_renewer *rn, int (*renew) (void *arg),
                      void *arg)
{
  int e;

  rn->renew = renew;
  rn->arg = arg;
  rn->every_ms = backup_lock_ms () / 4;
  rn->stop = false;
  pthread_mutex_init (&rn->lock, NULL);
  pthread_cond_init (&rn->cond, NULL);
  e = pthread_create (&rn->thread, NULL, renew_thread, rn);
  rn->running = e == 0;
  if (e != 0) {
    pthread_mutex_destroy (&rn->lock);
    pthread_cond_destroy (&rn->cond);
    return vbk_errno (-e, "backup: starting the lock renewal thread");
  }
  return 0;
}

void
backup_renewer_stop (struct backup_renewer *rn)
{
  if (!rn->running)
    return;
  pthread_mutex_lock (&rn->lock);
  rn->stop = true;
  pthread_cond_signal (&rn->cond);
  pthread_mutex_unlock (&rn->lock);
  pthread_join (rn->thread, NULL);
  pthread_mutex_destroy (&rn->lock);
  pthread_cond_destroy (&rn->cond);
  rn->running = false;
}
