/* SPDX-License-Identifier: MIT
 *
 * test-workq.c - the worker queue: FIFO order, N threads at once, the
 * bound (and the queue's own threads passing it), an item queued again
 * while it runs, drain, shutdown with work in flight, and each error.  Nothing here depends on timing: items
 * that must stay running wait on a gate the test opens, and every wait
 * for a condition is for the condition itself.
 */
/* VBK_TEST_LINKS: vbkcommon */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/error.h"
#include "common/workq.h"

/* ---- A gate that items wait on, and counters --------------------------- */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static bool gate_open;
static unsigned started, finished, inside, max_inside;
static int order[4096];
static unsigned norder;

static void
reset (void)
{
  pthread_mutex_lock (&mu);
  gate_open = false;
  started = finished = inside = max_inside = norder = 0;
  pthread_mutex_unlock (&mu);
}

static void
gate_set (bool open)
{
  pthread_mutex_lock (&mu);
  gate_open = open;
  pthread_cond_broadcast (&cv);
  pthread_mutex_unlock (&mu);
}

/* Waits until at least N items started. */
static void
wait_started (unsigned n)
{
  pthread_mutex_lock (&mu);
  while (started < n)
    pthread_cond_wait (&cv, &mu);
  pthread_mutex_unlock (&mu);
}

struct item {
  struct workq_item wq;
  int id;
  bool gated;                   /* waits for the gate */
  struct workq *q;              /* submit FOLLOW items from the thread */
  struct item *follow;
  int nfollow;
  int follow_r[8];              /* their workq_submit results */
  int drain_r, shutdown_r;
};

static void
run_item (struct workq_item *w)
{
  struct item *it = workq_entry (w, struct item, wq);
  int i;

  pthread_mutex_lock (&mu);
  started++;
  inside++;
  if (inside > max_inside)
    max_inside = inside;
  order[norder++ % 4096] = it->id;
  pthread_cond_broadcast (&cv);
  while (it->gated && !gate_open)
    pthread_cond_wait (&cv, &mu);
  pthread_mutex_unlock (&mu);

  for (i = 0; i < it->nfollow; i++)
    it->follow_r[i] = workq_submit (it->q, &it->follow[i].wq, run_item);
  if (it->q) {
    it->drain_r = workq_drain (it->q, WORKQ_FOREVER);
    it->shutdown_r = workq_shutdown (it->q);
  }

  pthread_mutex_lock (&mu);
  inside--;
  finished++;
  pthread_cond_broadcast (&cv);
  pthread_mutex_unlock (&mu);
}

static struct workq *
new_q (unsigned threads, unsigned max_queued)
{
  struct workq_opts o = { .name = "test", .threads = threads,
                          .max_queued = max_queued };
  struct workq *q = NULL;

  assert_int_equal (workq_new (&o, &q), 0);
  assert_non_null (q);
  return q;
}

/* ---- Tests ------------------------------------------------------------- */

/* One thread: items start and finish in the order submitted. */
static void
test_fifo_order (void **state)
{
  static struct item items[1000];
  struct workq_stats st;
  struct workq *q;
  int i;

  reset ();
  q = new_q (1, 0);
  /* The first item holds the thread until all are queued. */
  items[0] = (struct item) { .id = 0, .gated = true };
  assert_int_equal (workq_submit (q, &items[0].wq, run_item), 0);
  wait_started (1);
  for (i = 1; i < 1000; i++) {
    items[i] = (struct item) { .id = i };
    assert_int_equal (workq_submit (q, &items[i].wq, run_item), 0);
  }
  workq_get_stats (q, &st);
  assert_int_equal (st.queued, 999);
  assert_int_equal (st.running, 1);
  gate_set (true);
  assert_int_equal (workq_drain (q, WORKQ_FOREVER), 0);
  assert_int_equal (finished, 1000);
  for (i = 0; i < 1000; i++)
    assert_int_equal (order[i], i);
  workq_get_stats (q, &st);
  assert_int_equal (st.submitted, 1000);
  assert_int_equal (st.completed, 1000);
  assert_int_equal (st.max_queued_seen, 999);
  workq_free (q);
}

/* Four threads run four items at once; each item runs exactly once. */
static void
test_parallel (void **state)
{
  static struct item items[200];
  static bool seen[200];
  struct workq *q;
  unsigned i;

  reset ();
  q = new_q (4, 0);
  for (i = 0; i < 200; i++) {
    items[i] = (struct item) { .id = (int) i, .gated = i < 4 };
    assert_int_equal (workq_submit (q, &items[i].wq, run_item), 0);
  }
  /* The four gated items can only all start on four threads. */
  wait_started (4);
  assert_int_equal (max_inside, 4);
  gate_set (true);
  assert_int_equal (workq_drain (q, WORKQ_FOREVER), 0);
  assert_int_equal (finished, 200);
  memset (seen, 0, sizeof seen);
  for (i = 0; i < 200; i++) {
    assert_false (seen[order[i]]);
    seen[order[i]] = true;
  }
  workq_free (q);
}

struct submitter {
  pthread_t tid;
  struct workq *q;
  struct item *it;
  int r;
};

static void *
submit_thread (void *arg)
{
  struct submitter *s = arg;

  s->r = workq_submit (s->q, &s->it->wq, run_item);
  return NULL;
}

/* A bounded queue: a full queue refuses a try and makes a submitter
 * wait; the bound is never passed by other threads. */
static void
test_bound (void **state)
{
  static struct item items[5];
  struct submitter s;
  struct workq_stats st;
  struct workq *q;
  int i;

  reset ();
  q = new_q (1, 2);
  for (i = 0; i < 5; i++)
    items[i] = (struct item) { .id = i, .gated = i == 0 };
  assert_int_equal (workq_submit (q, &items[0].wq, run_item), 0);
  wait_started (1);             /* item 0 runs (held): the queue is empty */
  assert_int_equal (workq_submit (q, &items[1].wq, run_item), 0);
  assert_int_equal (workq_submit (q, &items[2].wq, run_item), 0);
  /* Full: no room now, nor after a short wait. */
  assert_int_equal (workq_submit_timed (q, &items[3].wq, run_item, 0),
                    -EAGAIN);
  assert_int_equal (workq_submit_timed (q, &items[3].wq, run_item,
                                        1000000), -EAGAIN);
  workq_get_stats (q, &st);
  assert_int_equal (st.queued, 2);
  assert_int_equal (st.submitted, 3);

  /* A submitter that waits gets in once there is room. */
  s = (struct submitter) { .q = q, .it = &items[3], .r = 1 };
  assert_int_equal (pthread_create (&s.tid, NULL, submit_thread, &s), 0);
  gate_set (true);
  pthread_join (s.tid, NULL);
  assert_int_equal (s.r, 0);
  assert_int_equal (workq_drain (q, WORKQ_FOREVER), 0);
  assert_int_equal (finished, 4);
  workq_get_stats (q, &st);
  assert_int_equal (st.max_queued_seen, 2);
  for (i = 0; i < 4; i++)
    assert_int_equal (order[i], i);
  workq_free (q);
}

/* The queue's own thread never waits for room (it would wait for
 * itself), and may not drain or shut down its own queue. */
static void
test_own_thread (void **state)
{
  static struct item follow[6], first;
  struct workq_stats st;
  struct workq *q;
  int i;

  reset ();
  q = new_q (1, 1);
  for (i = 0; i < 6; i++)
    follow[i] = (struct item) { .id = 1 + i };
  first = (struct item) { .id = 0, .q = q, .follow = follow, .nfollow = 6 };
  assert_int_equal (workq_submit (q, &first.wq, run_item), 0);
  assert_int_equal (workq_drain (q, WORKQ_FOREVER), 0);
  for (i = 0; i < 6; i++)
    assert_int_equal (first.follow_r[i], 0);
  assert_int_equal (first.drain_r, -EDEADLK);
  assert_int_equal (first.shutdown_r, -EDEADLK);
  assert_int_equal (finished, 7);
  workq_get_stats (q, &st);
  assert_int_equal (st.max_queued_seen, 6);
  for (i = 0; i < 7; i++)
    assert_int_equal (order[i], i);
  assert_false (workq_on_thread (q));
  workq_free (q);
}

/* An item belongs to its owner again once its function is called: it
 * may be queued again while that function still runs (image/commit.c
 * schedules its one pass item so), and runs again after it, once on
 * one thread. */
static void
test_resubmit_running (void **state)
{
  static struct item it;
  struct workq_stats st;
  struct workq *q;

  reset ();
  q = new_q (1, 0);
  it = (struct item) { .id = 5, .gated = true };
  assert_int_equal (workq_submit (q, &it.wq, run_item), 0);
  wait_started (1);
  assert_int_equal (workq_submit (q, &it.wq, run_item), 0);
  workq_get_stats (q, &st);
  assert_int_equal (st.running, 1);
  assert_int_equal (st.queued, 1);
  gate_set (true);
  assert_int_equal (workq_drain (q, WORKQ_FOREVER), 0);
  assert_int_equal (started, 2);
  assert_int_equal (finished, 2);
  assert_int_equal (max_inside, 1);
  workq_get_stats (q, &st);
  assert_int_equal (st.submitted, 2);
  assert_int_equal (st.completed, 2);
  workq_free (q);
}

/* Drain waits for running items as well as queued ones. */
static void
test_drain (void **state)
{
  static struct item items[3];
  struct workq *q;
  int i;

  reset ();
  q = new_q (2, 0);
  assert_int_equal (workq_drain (q, 0), 0);     /* idle already */
  for (i = 0; i < 3; i++) {
    items[i] = (struct item) { .id = i, .gated = true };
    assert_int_equal (workq_submit (q, &items[i].wq, run_item), 0);
  }
  wait_started (2);
  assert_int_equal (workq_drain (q, 0), -ETIMEDOUT);
  assert_int_equal (workq_drain (q, 1000000), -ETIMEDOUT);
  gate_set (true);
  assert_int_equal (workq_drain (q, WORKQ_FOREVER), 0);
  assert_int_equal (finished, 3);
  workq_free (q);
}

struct stopper {
  pthread_t tid;
  struct workq *q;
  int r;
};

static void *
shutdown_thread (void *arg)
{
  struct stopper *s = arg;

  s->r = workq_shutdown (s->q);
  return NULL;
}

/* Shutdown with work in flight: what is queued runs, what running items
 * submit runs, other threads are refused from its start, a submitter
 * waiting for room is woken with -ESHUTDOWN. */
static void
test_shutdown_in_flight (void **state)
{
  static struct item items[40], follow[2], late, waiting, blocked, probe;
  struct submitter s;
  struct stopper stop;
  struct workq_stats st;
  struct workq *q;
  int i, r;

  reset ();
  q = new_q (2, 40);
  for (i = 0; i < 2; i++)
    follow[i] = (struct item) { .id = 100 + i };
  /* Items 0 and 1 hold both threads. */
  for (i = 0; i < 40; i++) {
    items[i] = (struct item) { .id = i, .gated = i < 2 };
    assert_int_equal (workq_submit (q, &items[i].wq, run_item), 0);
  }
  wait_started (2);
  /* Fill the queue: 38 waiting, and two more. */
  late = (struct item) { .id = 300 };
  waiting = (struct item) { .id = 200 };
  assert_int_equal (workq_submit (q, &late.wq, run_item), 0);
  assert_int_equal (workq_submit (q, &waiting.wq, run_item), 0);
  workq_get_stats (q, &st);
  assert_int_equal (st.queued, 40);

  /* A submitter waits for room, then the shutdown begins. */
  blocked = (struct item) { .id = 400 };
  s = (struct submitter) { .q = q, .it = &blocked, .r = 1 };
  assert_int_equal (pthread_create (&s.tid, NULL, submit_thread, &s), 0);
  stop = (struct stopper) { .q = q, .r = 1 };
  assert_int_equal (pthread_create (&stop.tid, NULL, shutdown_thread, &stop),
                    0);
  /* The waiting submitter is refused; so is anyone else from now on
   * (-EAGAIN: the shutdown has not begun yet and the queue is full). */
  pthread_join (s.tid, NULL);
  assert_int_equal (s.r, -ESHUTDOWN);
  do {
    probe = (struct item) { .id = 500 };
    r = workq_submit_timed (q, &probe.wq, run_item, 0);
  } while (r == -EAGAIN);
  assert_int_equal (r, -ESHUTDOWN);

  /* Item 0, running, submits two items from its thread during the
   * shutdown (and tries to drain and shut down its own queue). */
  pthread_mutex_lock (&mu);
  items[0].q = q;
  items[0].follow = follow;
  items[0].nfollow = 2;
  pthread_mutex_unlock (&mu);
  gate_set (true);
  pthread_join (stop.tid, NULL);
  assert_int_equal (stop.r, 0);
  assert_int_equal (items[0].follow_r[0], 0);
  assert_int_equal (items[0].follow_r[1], 0);
  assert_int_equal (items[0].drain_r, -EDEADLK);
  assert_int_equal (items[0].shutdown_r, -EDEADLK);
  /* 40 + late + waiting + 2 follow-ups: nothing lost. */
  assert_int_equal (finished, 44);
  workq_get_stats (q, &st);
  assert_int_equal (st.completed, 44);
  assert_int_equal (st.queued, 0);
  assert_int_equal (st.running, 0);
  /* A second shutdown returns at once; submissions stay refused. */
  assert_int_equal (workq_shutdown (q), 0);
  assert_int_equal (workq_submit (q, &late.wq, run_item), -ESHUTDOWN);
  assert_int_equal (workq_drain (q, 0), 0);
  workq_free (q);
}

static unsigned starts, stops;

static void
on_start (void *arg)
{
  __atomic_add_fetch ((unsigned *) arg, 1, __ATOMIC_SEQ_CST);
  __atomic_add_fetch (&starts, 1, __ATOMIC_SEQ_CST);
}

static void
on_stop (void *arg)
{
  __atomic_add_fetch (&stops, 1, __ATOMIC_SEQ_CST);
}

static void
test_thread_hooks (void **state)
{
  unsigned arg = 0;
  struct workq_opts o = { .name = "a-rather-long-name", .threads = 12,
                          .thread_start = on_start, .thread_stop = on_stop,
                          .arg = &arg };
  struct workq_stats st;
  struct workq *q;

  starts = stops = 0;
  assert_int_equal (workq_new (&o, &q), 0);
  workq_get_stats (q, &st);
  assert_int_equal (st.threads, 12);
  workq_free (q);
  assert_int_equal (starts, 12);
  assert_int_equal (arg, 12);
  assert_int_equal (stops, 12);
  workq_free (NULL);
}

static void
test_errors (void **state)
{
  struct workq_opts o = { .name = "bad", .threads = 0 };
  struct workq *q = (struct workq *) 1;

  vbk_clear_error ();
  assert_int_equal (workq_new (&o, &q), -EINVAL);
  assert_string_equal (vbk_error (), "workq bad: 0 threads (1 to 1024)");
  o.threads = WORKQ_THREADS_MAX + 1;
  assert_int_equal (workq_new (&o, &q), -EINVAL);
  assert_ptr_equal (q, (struct workq *) 1);     /* untouched on failure */
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_fifo_order),
    cmocka_unit_test (test_parallel),
    cmocka_unit_test (test_bound),
    cmocka_unit_test (test_own_thread),
    cmocka_unit_test (test_resubmit_running),
    cmocka_unit_test (test_drain),
    cmocka_unit_test (test_shutdown_in_flight),
    cmocka_unit_test (test_thread_hooks),
    cmocka_unit_test (test_errors),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
