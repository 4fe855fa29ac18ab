/* SPDX-License-Identifier: MIT
 *
 * commit.c - the committer: on RADOS, first writes of asynchronous I/O
 * wait for their change-log and object-map entries on a queue, not on
 * the caller's thread.
 *
 * DESIGN
 * - Before the first change to an object in an interval, its change-log
 *   record (and, for a new object, its allocated map byte) must be
 *   written (objmap.c).  On the local store (image->lazy) that is a few
 *   buffered writes with no sync, cheaper on the caller's thread than a
 *   hand-off to a thread and back: image_map_mark_dirty_async commits
 *   there and the queue below is never used.  On RADOS each commit is a
 *   round trip to the OSDs, so the queue keeps the NBD reader going.
 *   A synchronous caller commits them itself.  An
 *   asynchronous write (image_aio_write) that needs entries marks them
 *   pending, joins the image's commit queue and returns at once; the
 *   image's committer thread commits every pending entry in one group
 *   commit (one log append and the map runs, written in parallel) and
 *   then starts the data writes of every queued write whose entries are
 *   now durable.  So the NBD reader goes on reading requests while a
 *   commit is in flight, and the first writes to N new objects that
 *   arrive meanwhile (up to the client's queue depth) share the next
 *   commit instead of paying one each in a row.
 * - Why no guarantee is lost: a queued write's data write starts only
 *   after image_map_ready () saw its entries committed (logged and, for
 *   a write, allocated): the same order as the synchronous path, so
 *   after any crash neither the map nor the change log under-reports.
 *   The write is not acknowledged before its data write completes, so a
 *   FLUSH (which covers acknowledged writes) and a snapshot (which waits
 *   for writes in flight) see it as in flight until then.  The committer
 *   shares map_writing and the pending entries with synchronous
 *   committers: whoever commits, queued writes see their entries
 *   committed (the map changes under map_lock and map_cond is broadcast).
 * - Errors: a commit that fails fails every queued write that waited for
 *   it (queued before it started and still not ready); writes queued
 *   during it get their own attempt.  An append that failed and was not
 *   cut (log_tail_unknown) makes the committer fall back to the
 *   synchronous path, which cuts it first, one queued write at a time.
 * - The committer is a one-thread queue of common/workq.c (the one
 *   worker queue of vbk), created with the first queued write.  Its
 *   work is a pass (commit_pass) that commits until no waiter is left;
 *   a queued write schedules a pass only when none is queued or running
 *   (cq_scheduled, under map_lock), so a pass stands for every waiter
 *   that arrives while it runs, and one pass never waits behind another.
 *   image_close shuts the queue down after the queue is empty (callers
 *   wait for their I/O before closing).  Callbacks run on the
 *   committer, outside map_lock.
 */
#include "internal.h"

struct commit_wait {
  struct commit_wait *next;
  uint64_t first, last, seq;
  bool alloc;
  image_commit_cb cb;
  void *arg;
  int err;
};

/* Runs the callbacks of list W (in queue order), outside map_lock. */
static void
run_callbacks (struct image *img, struct commit_wait *w)
{
  struct commit_wait *next;

  pthread_mutex_unlock (&img->map_lock);
  for (; w; w = next) {
    next = w->next;
    w->cb (w->arg, w->err);
    free (w);
  }
  pthread_mutex_lock (&img->map_lock);
}

/* Takes waiters off the queue into a list (queue order kept): with ERR
 * 0 those whose entries are ready; else those queued up to UPTO that are
 * not, to fail with ERR.  Called with map_lock held. */
static struct commit_wait *
take_waiters (struct image *img, struct objmap *m, uint64_t upto, int err)
{
  struct commit_wait **pp = &img->cq_head, *w, *out = NULL, **tail = &out;

  img->cq_tail = NULL;
  while ((w = *pp) != NULL) {
    bool ready = image_map_ready (m, w->first, w->last, w->alloc);
    if (err == 0 ? ready : !ready && w->seq <= upto) {
      *pp = w->next;
      w->next = NULL;
      w->err = err;
      *tail = w;
      tail = &w->next;
    }
    else {
      img->cq_tail = w;
      pp = &w->next;
    }
  }
  return out;
}

/* One pass of the committer, on the image's queue: commits until no
 * waiter is left.  cq_scheduled stays set while it runs, so writes
 * queued meanwhile join this pass instead of scheduling another. */
static void
commit_pass (struct workq_item *it)
{
  struct image *img = workq_entry (it, struct image, cq_item);
  struct commit_wait *done, *w;
  struct objmap *m;
  uint64_t upto;
  int r;

  pthread_mutex_lock (&img->map_lock);
  for (;;) {
    m = img->map;
    /* Start the data writes of whatever is ready now. */
    if ((done = take_waiters (img, m, 0, 0)) != NULL) {
      run_callbacks (img, done);
      continue;
    }
    if (img->cq_head == NULL)
      break;
    if (img->map_writing) {        /* another committer: wait for it */
      pthread_cond_wait (&img->map_cond, &img->map_lock);
      continue;
    }
    if (__atomic_load_n (&img->log_tail_unknown, __ATOMIC_ACQUIRE)) {
      /* The synchronous path cuts the tail first (and fails while it
       * cannot): one waiter at a time through it. */
      w = img->cq_head;
      img->cq_head = w->next;
      if (img->cq_head == NULL)
        img->cq_tail = NULL;
      w->next = NULL;
      pthread_mutex_unlock (&img->map_lock);
      w->err = image_map_mark_dirty (img, w->first, w->last, w->alloc);
      pthread_mutex_lock (&img->map_lock);
      run_callbacks (img, w);
      continue;
    }
    /* Every waiter's missing entries pending (a failed commit, or one
     * that raced a snapshot, may have dropped some), then one commit. */
    r = 0;
    for (w = img->cq_head; w && r == 0; w = w->next) {
      bool ready;
      r = image_map_need_locked (img, m, w->first, w->last, w->alloc,
                                 &ready);
    }
    upto = img->cq_seq;
    if (r == 0) {
      img->map_writing = true;
      r = image_map_commit (img, m);
      img->map_writing = false;
      pthread_cond_broadcast (&img->map_cond);
    }
    if (r < 0 && (done = take_waiters (img, img->map, upto, r)) != NULL)
      run_callbacks (img, done);
  }
  img->cq_scheduled = false;
  pthread_mutex_unlock (&img->map_lock);
}

int
image_map_mark_dirty_async (struct image *img, uint64_t first, uint64_t last,
                            bool alloc, image_commit_cb cb, void *arg)
{
  struct objmap *m = __atomic_load_n (&img->map, __ATOMIC_ACQUIRE);
  struct commit_wait *w;
  bool ready;
  int r;

  if (image_map_ready (m, first, last, alloc)
      && !__atomic_load_n (&img->log_tail_unknown, __ATOMIC_ACQUIRE))
    return 0;                   /* the common case: nothing to do */
  /* A store whose writes need no sync (image->lazy): the commit is a few
   * buffered writes, cheaper on this thread than a hand-off. */
  if (img->lazy)
    return image_map_mark_dirty (img, first, last, alloc);
  w = calloc (1, sizeof *w);
  if (w == NULL)
    return -ENOMEM;
  w->first = first;
  w->last = last;
  w->alloc = alloc;
  w->cb = cb;
  w->arg = arg;

  pthread_mutex_lock (&img->map_lock);
  if (img->cq == NULL) {
    struct workq_opts o = { .name = "vbk-commit", .threads = 1 };
    if (workq_new (&o, &img->cq) < 0) {
      /* No thread: commit on ours, as a synchronous caller does. */
      img->cq = NULL;
      pthread_mutex_unlock (&img->map_lock);
      free (w);
      return image_map_mark_dirty (img, first, last, alloc);
    }
  }
  m = img->map;
  if (__atomic_load_n (&img->log_tail_unknown, __ATOMIC_ACQUIRE))
    r = 0, ready = false;       /* the committer cuts it first */
  else
    r = image_map_need_locked (img, m, first, last, alloc, &ready);
  if (r < 0 || ready) {
    pthread_mutex_unlock (&img->map_lock);
    free (w);
    return r;
  }
  /* Scheduled under map_lock: the pass cannot see an empty queue and
   * end between our check and our waiter's arrival.  The queue has no
   * bound, so this never waits. */
  if (!img->cq_scheduled) {
    r = workq_submit (img->cq, &img->cq_item, commit_pass);
    if (r < 0) {                /* shutting down: only a misuse */
      pthread_mutex_unlock (&img->map_lock);
      free (w);
      return image_map_mark_dirty (img, first, last, alloc);
    }
    img->cq_scheduled = true;
  }
  w->seq = ++img->cq_seq;
  if (img->cq_tail)
    img->cq_tail->next = w;
  else
    img->cq_head = w;
  img->cq_tail = w;
  pthread_mutex_unlock (&img->map_lock);
  return 1;
}

void
image_commit_stop (struct image *img)
{
  /* Runs the pass still queued, if any, then joins the thread. */
  workq_free (img->cq);
  img->cq = NULL;
}
