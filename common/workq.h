/* SPDX-License-Identifier: MIT
 *
 * workq.h - one worker queue for every pool of threads in vbk: N threads
 * run items from a FIFO that may be bounded.
 *
 * The copy engine (import, export, backup, restore), vbk-blockd's pool
 * for the image calls that have no asynchronous form, and the local
 * store's asynchronous I/O all run on it.  An item is a struct
 * workq_item embedded in the caller's own request (no allocation per
 * item; container_of gets the request back in the item's function).
 *
 * Contracts that the callers rely on:
 * - Items start in the order they were submitted (FIFO); with one thread
 *   they also finish in that order.
 * - A bounded queue (max_queued > 0) makes a submitter wait while
 *   max_queued items are waiting, except a submitter that is one of the
 *   queue's own threads: it never waits (it would wait for itself), so
 *   the bound may be passed by the items that running items submit.
 * - workq_shutdown runs every item already queued, and those that
 *   running items submit while it waits, before it joins the threads;
 *   other threads' submissions are refused from its start (-ESHUTDOWN).
 * - Thread safety: every function may be called from any thread, except
 *   workq_drain, workq_shutdown and workq_free, which a queue's own
 *   thread may not call on its queue (-EDEADLK).
 */
#ifndef VBK_WORKQ_H
#define VBK_WORKQ_H

#include <stddef.h>
#include <stdint.h>

struct workq;
struct workq_item;

/* Runs one item, on one of the queue's threads. */
typedef void (*workq_fn) (struct workq_item *it);

/* Embedded in the caller's request; owned by the queue from submission
 * until its function is called. */
struct workq_item {
  struct workq_item *next;
  workq_fn fn;
};

/* The request of type TYPE that embeds the item IT as MEMBER. */
#define workq_entry(it, type, member) \
  ((type *) ((char *) (it) - offsetof (type, member)))

struct workq_opts {
  const char *name;             /* thread names "NAME-N" (15 chars at
                                   most are kept); NULL: "workq" */
  unsigned threads;             /* 1 to WORKQ_THREADS_MAX */
  unsigned max_queued;          /* items waiting at most; 0: no bound
                                   (the caller bounds its work) */
  /* Called first and last on each thread (rcu_register_thread, ...).
   * NULL: nothing. */
  void (*thread_start) (void *arg);
  void (*thread_stop) (void *arg);
  void *arg;
  /* New members only at the end. */
};

#define WORKQ_THREADS_MAX 1024
/* A timeout that never expires. */
#define WORKQ_FOREVER UINT64_MAX

/* Starts the threads.  Returns 0, or -EINVAL (threads 0 or too many),
 * -ENOMEM, -EAGAIN (a thread could not be started), with a message.
 * Caller frees with workq_free(). */
int workq_new (const struct workq_opts *o, struct workq **out);

/* Queues IT to run FN (IT).  Waits while the queue is full (see above).
 * Returns 0, or -ESHUTDOWN once workq_shutdown began (IT is not
 * queued). */
int workq_submit (struct workq *q, struct workq_item *it, workq_fn fn);

/* The same, waiting at most TIMEOUT_NS for room (0: not at all).
 * Returns 0, -EAGAIN (still full: IT is not queued) or -ESHUTDOWN. */
int workq_submit_timed (struct workq *q, struct workq_item *it, workq_fn fn,
                        uint64_t timeout_ns);

/* Waits until no item is queued or running, at most TIMEOUT_NS
 * (WORKQ_FOREVER: as long as it takes).  Items submitted meanwhile are
 * waited for too.  Returns 0, -ETIMEDOUT, or -EDEADLK on one of Q's own
 * threads. */
int workq_drain (struct workq *q, uint64_t timeout_ns);

/* Refuses new submissions from other threads, runs what is queued (see
 * above), stops and joins the threads.  A second call returns at once.
 * Returns 0, or -EDEADLK on one of Q's own threads. */
int workq_shutdown (struct workq *q);

/* workq_shutdown, then frees.  NULL is a no-op.  Not on Q's threads. */
void workq_free (struct workq *q);

struct workq_stats {
  uint64_t submitted;           /* items accepted */
  uint64_t completed;           /* items whose function returned */
  unsigned queued;              /* waiting now */
  unsigned running;             /* running now */
  unsigned max_queued_seen;     /* most items waiting at once */
  unsigned threads;
};

void workq_get_stats (struct workq *q, struct workq_stats *st);

/* Whether the calling thread is one of Q's. */
int workq_on_thread (const struct workq *q);

#endif /* VBK_WORKQ_H */
