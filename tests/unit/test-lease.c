/* SPDX-License-Identifier: MIT
 *
 * test-lease.c - leases over a real store (VBK_TEST_BACKENDS): hand-off
 * between two clients, exclusive mode, takeover of a killed holder, a
 * stopped holder fenced while stopped, bounce detection, status and
 * break, release requests that name an older epoch ignored, a release
 * that finds the holder fenced counted as lost.  Other "hosts" are other store clients, and for death and
 * stopping, other processes.
 */
/* VBK_TEST_LINKS: vbklocks vbktestutil */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "locks/lease.h"
#include "testutil.h"

#define HDR "vbk_header.test"

struct fixture {
  char uri[4096];
  struct store *admin;
};

static int
setup (void **state)
{
  struct fixture *f = calloc (1, sizeof *f);

  test_store_uri (f->uri, sizeof f->uri);
  assert_int_equal (store_open (f->uri, &f->admin), 0);
  assert_int_equal (store_write_full (f->admin, HDR, "hdr", 3, 0), 0);
  *state = f;
  return 0;
}

static int
teardown (void **state)
{
  struct fixture *f = *state;

  store_close (f->admin);
  test_store_cleanup (f->uri);
  free (f);
  return 0;
}

struct host {
  struct store *st;
  struct lease *lease;
  int flushes, acquisitions, lost;
  uint64_t last_epoch;
  struct store *fence_on_flush;   /* if set, fences us before our flush */
};

static int
hook_acquired (void *arg, uint64_t epoch)
{
  struct host *h = arg;

  __atomic_add_fetch (&h->acquisitions, 1, __ATOMIC_SEQ_CST);
  h->last_epoch = epoch;
  return 0;
}

static int
hook_flush (void *arg)
{
  struct host *h = arg;

  __atomic_add_fetch (&h->flushes, 1, __ATOMIC_SEQ_CST);
  if (h->fence_on_flush)
    assert_int_equal (store_fence (h->fence_on_flush,
                                   store_client_id (h->st), 3600), 0);
  return store_flush (h->st);
}

static void
hook_lost (void *arg, int err)
{
  struct host *h = arg;

  (void) err;
  __atomic_add_fetch (&h->lost, 1, __ATOMIC_SEQ_CST);
}

static const struct lease_hooks hooks = {
  .acquired = hook_acquired,
  .flush = hook_flush,
  .lost = hook_lost,
};

static void
host_open (struct fixture *f, struct host *h, const char *id,
           uint32_t duration_ms, bool exclusive, unsigned bounce_limit)
{
  struct lease_opts o = {
    .host_id = id, .addr = "127.0.0.1:0", .duration_ms = duration_ms,
    .exclusive = exclusive, .bounce_limit = bounce_limit,
  };

  memset (h, 0, sizeof *h);
  assert_int_equal (store_open (f->uri, &h->st), 0);
  assert_int_equal (lease_open (h->st, HDR, &o, &hooks, h, &h->lease), 0);
}

static void
host_close (struct host *h)
{
  lease_close (h->lease);
  store_close (h->st);
}

/* One guarded write of MARK into object "data". */
static int
guarded_write (struct host *h, const char *mark)
{
  int r = lease_write_begin (h->lease);

  if (r < 0)
    return r;
  r = store_write_full (h->st, "data", mark, strlen (mark), 0);
  lease_write_end (h->lease);
  return r;
}

static void
check_data (struct fixture *f, const char *mark)
{
  char buf[64] = "";

  assert_int_equal (store_read (f->admin, "data", buf, strlen (mark), 0,
                                STORE_SNAP_HEAD), (ssize_t) strlen (mark));
  assert_memory_equal (buf, mark, strlen (mark));
}

static void
test_handoff_a_b_a (void **state)
{
  struct fixture *f = *state;
  struct lease_status s;
  struct host a, b;
  uint64_t t;

  host_open (f, &a, "host-a", 3000, false, 0);
  host_open (f, &b, "host-b", 3000, false, 0);

  assert_int_equal (guarded_write (&a, "A1"), 0);
  assert_int_equal (lease_state (a.lease), LEASE_HELD);
  assert_int_equal (lease_status_get (f->admin, HDR, &s), 0);
  assert_true (s.held);
  assert_string_equal (s.host, "host-a");
  assert_string_equal (s.client, store_client_id (a.st));
  assert_int_equal (s.epoch, 1);

  t = now_mono_ns ();
  assert_int_equal (guarded_write (&b, "B1"), 0);
  t = now_mono_ns () - t;
  fprintf (stderr, "hand-off A->B: %.1f ms\n", t / 1e6);
  assert_int_equal (lease_state (b.lease), LEASE_HELD);
  assert_int_equal (lease_state (a.lease), LEASE_NONE);
  assert_true (a.flushes >= 1);           /* A flushed before letting go */
  check_data (f, "B1");
  assert_int_equal (b.last_epoch, 2);

  t = now_mono_ns ();
  assert_int_equal (guarded_write (&a, "A2"), 0);
  t = now_mono_ns () - t;
  fprintf (stderr, "hand-off B->A: %.1f ms\n", t / 1e6);
  check_data (f, "A2");
  assert_int_equal (a.last_epoch, 3);
  assert_int_equal (lease_status_get (f->admin, HDR, &s), 0);
  assert_string_equal (s.host, "host-a");
  assert_int_equal (s.handoffs, 2);
  assert_string_equal (s.conflict, "");

  /* A flush-like call that needs no lease leaves it where it is. */
  host_close (&b);
  host_close (&a);
  assert_int_equal (lease_status_get (f->admin, HDR, &s), 0);
  assert_false (s.held);                  /* released at close */
}

static void
test_exclusive_refuses (void **state)
{
  struct fixture *f = *state;
  struct host a, b;

  host_open (f, &a, "host-a", 3000, true, 0);
  host_open (f, &b, "host-b", 3000, false, 0);
  assert_int_equal (guarded_write (&a, "A1"), 0);
  assert_int_equal (guarded_write (&b, "B1"), -EBUSY);
  assert_non_null (strstr (vbk_error (), "exclusive"));
  check_data (f, "A1");
  /* The operator's release lets it go; then B can take it. */
  assert_int_equal (lease_request_release (f->admin, HDR, 5000), 0);
  assert_int_equal (guarded_write (&b, "B2"), 0);
  check_data (f, "B2");
  host_close (&b);
  host_close (&a);
}

/* The holder process: takes the lease, writes "CC" every 5 ms and
 * reports each acknowledged write on FD ("+") or a failure ("-").  It is
 * a fresh exec of this program (see main), not a bare fork: a forked
 * copy would share the parent's random state, and RADOS would give both
 * the same client address. */
static char *self_path;

static int
holder_main (const char *uri, int fd, uint32_t duration_ms)
{
  struct fixture f;
  struct host c;

  memset (&f, 0, sizeof f);
  snprintf (f.uri, sizeof f.uri, "%s", uri);
  host_open (&f, &c, "host-c", duration_ms, false, 0);
  for (;;) {
    char ch = guarded_write (&c, "CC") == 0 ? '+' : '-';
    if (write (fd, &ch, 1) != 1)
      return 1;
    usleep (5000);
  }
}

static pid_t
spawn_holder (struct fixture *f, uint32_t duration_ms, int *rfd)
{
  char fdbuf[16], durbuf[16];
  int p[2];
  pid_t pid;

  assert_int_equal (pipe (p), 0);
  pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0) {
    close (p[0]);
    snprintf (fdbuf, sizeof fdbuf, "%d", p[1]);
    snprintf (durbuf, sizeof durbuf, "%u", duration_ms);
    execl (self_path, self_path, "--holder", f->uri, fdbuf, durbuf,
           (char *) NULL);
    _exit (127);
  }
  close (p[1]);
  *rfd = p[0];
  /* Wait for its first acknowledged write. */
  char ch;
  assert_int_equal (read (p[0], &ch, 1), 1);
  assert_int_equal (ch, '+');
  return pid;
}

static void
test_takeover_after_kill (void **state)
{
  struct fixture *f = *state;
  struct host b;
  uint64_t t;
  int rfd, status;
  pid_t pid;

  pid = spawn_holder (f, 2000, &rfd);
  kill (pid, SIGKILL);
  waitpid (pid, &status, 0);
  close (rfd);

  host_open (f, &b, "host-b", 2000, false, 0);
  t = now_mono_ns ();
  assert_int_equal (guarded_write (&b, "B1"), 0);
  t = now_mono_ns () - t;
  fprintf (stderr, "takeover after kill -9: %.2f s (lease 2 s)\n", t / 1e9);
  assert_true (t < (uint64_t) (2000 + 4000) * 1000000);
  check_data (f, "B1");
  host_close (&b);
}

static void
test_stopped_holder_is_fenced (void **state)
{
  struct fixture *f = *state;
  int rfd, status, plus = 0, minus = 0;
  struct host b;
  char buf[256];
  ssize_t n, i;
  pid_t pid;

  pid = spawn_holder (f, 2000, &rfd);
  kill (pid, SIGSTOP);
  /* Drain what it reported before it stopped. */
  usleep (100000);
  {
    int fl = fcntl (rfd, F_GETFL);
    fcntl (rfd, F_SETFL, fl | O_NONBLOCK);
    while (read (rfd, buf, sizeof buf) > 0)
      ;
    fcntl (rfd, F_SETFL, fl);
  }

  host_open (f, &b, "host-b", 2000, false, 0);
  assert_int_equal (guarded_write (&b, "BB"), 0);
  check_data (f, "BB");

  kill (pid, SIGCONT);
  /* Everything it tries now must fail, and nothing it does may land. */
  for (i = 0; i < 20 && plus + minus < 10;) {
    n = read (rfd, buf, sizeof buf);
    assert_true (n > 0);
    for (ssize_t k = 0; k < n; k++)
      buf[k] == '+' ? plus++ : minus++;
  }
  kill (pid, SIGKILL);
  waitpid (pid, &status, 0);
  close (rfd);
  fprintf (stderr, "stopped holder after CONT: %d failed, %d succeeded\n",
           minus, plus);
  /* A write the child had in flight when it was stopped may have landed
   * before the fence and be acknowledged after CONT: at most that one.
   * Everything after it fails, and B's data stays. */
  assert_true (plus <= 1);
  assert_true (minus >= 9);
  check_data (f, "BB");
  assert_int_equal (guarded_write (&b, "B2"), 0);
  check_data (f, "B2");
  host_close (&b);
}

struct bouncer {
  struct host *h;
  const char *mark;
  int result;
  volatile int *stop;
};

static void *
bounce_thread (void *arg)
{
  struct bouncer *b = arg;
  int i;

  uint64_t end = now_mono_ns () + 20000000000ull;

  /* Two VMs writing one disk: each writes every millisecond. */
  for (i = 0; !*b->stop && now_mono_ns () < end; i++) {
    int r = guarded_write (b->h, b->mark);
    if (r < 0) {
      fprintf (stderr, "%s: %s\n", b->mark, vbk_error ());
      b->result = r;
      *b->stop = 1;
      return NULL;
    }
    usleep (1000);
  }
  return NULL;
}

static void
test_two_writers_bounce (void **state)
{
  struct fixture *f = *state;
  volatile int stop = 0;
  struct bouncer ba, bb;
  struct lease_status s;
  struct host a, b;
  pthread_t ta, tb;

  host_open (f, &a, "host-a", 3000, false, 3);
  host_open (f, &b, "host-b", 3000, false, 3);
  ba = (struct bouncer) { &a, "AA", 0, &stop };
  bb = (struct bouncer) { &b, "BB", 0, &stop };
  pthread_create (&ta, NULL, bounce_thread, &ba);
  pthread_create (&tb, NULL, bounce_thread, &bb);
  pthread_join (ta, NULL);
  pthread_join (tb, NULL);
  /* One of them was refused. */
  fprintf (stderr, "bounce: A %d, B %d (%s)\n", ba.result, bb.result,
           vbk_error ());
  assert_true (ba.result == -EBUSY || bb.result == -EBUSY);
  assert_int_equal (lease_status_get (f->admin, HDR, &s), 0);
  assert_non_null (strstr (s.conflict, "two writers"));
  assert_true (s.handoffs >= 4);
  fprintf (stderr, "conflict: %s\n", s.conflict);

  /* The operator clears it. */
  assert_int_equal (lease_request_release (f->admin, HDR, 5000), 0);
  assert_int_equal (lease_status_get (f->admin, HDR, &s), 0);
  assert_string_equal (s.conflict, "");
  host_close (&b);
  host_close (&a);
}

static void
test_break_fences_holder (void **state)
{
  struct fixture *f = *state;
  struct lease_status s;
  struct host a, b;
  int i, r = 0;

  host_open (f, &a, "host-a", 1500, false, 0);
  assert_int_equal (guarded_write (&a, "A1"), 0);
  assert_int_equal (lease_break (f->admin, HDR), 0);
  assert_int_equal (lease_status_get (f->admin, HDR, &s), 0);
  assert_false (s.held);
  /* A is fenced: its writes fail from now on (RADOS: within moments). */
  for (i = 0; i < 60; i++) {
    r = guarded_write (&a, "A2");
    if (r < 0)
      break;
    usleep (50000);
  }
  assert_true (r == -EIO || r == -ESHUTDOWN);
  check_data (f, "A1");
  host_open (f, &b, "host-b", 1500, false, 0);
  assert_int_equal (guarded_write (&b, "B1"), 0);
  check_data (f, "B1");
  assert_int_equal (lease_break (f->admin, "vbk_header.nosuch"), -ENOENT);
  host_close (&b);
  host_close (&a);
}

/* Sends PAYLOAD as a notify on the header from the admin client and puts
 * the answer of H's client into ANS (empty if it did not answer). */
static void
notify_raw (struct fixture *f, struct host *h, const char *payload,
            char *ans, size_t len)
{
  struct store_notify_reply *rep = NULL;
  size_t n = 0, timed_out = 0, i;

  ans[0] = '\0';
  assert_int_equal (store_notify (f->admin, HDR, payload, strlen (payload),
                                  5000, &rep, &n, &timed_out), 0);
  for (i = 0; i < n; i++)
    if (strcmp (rep[i].client, store_client_id (h->st)) == 0)
      snprintf (ans, len, "%.*s", (int) rep[i].len,
                (const char *) rep[i].data);
  store_notify_replies_free (rep, n);
}

/* Waits (at most 20 s) until nobody holds the lock. */
static void
wait_lock_free (struct fixture *f)
{
  struct store_lock_info info;
  int i, r = 0;

  for (i = 0; i < 2000; i++) {
    r = store_lock_get (f->admin, HDR, LEASE_LOCK_NAME, &info);
    if (r == -ENOENT)
      return;
    usleep (10000);
  }
  fail_msg ("the lock is still held (%d)", r);
}

/* A release request is about one lease: the epoch (and lock cookie) its
 * sender saw.  The same request delivered again after the holder let go
 * and took the lease back (a late datagram, a notify that RADOS sends
 * again when the watch reconnects) must not release the newer lease;
 * requests that name no epoch, from older binaries, are honoured as
 * before. */
static void
test_stale_release_request (void **state)
{
  struct fixture *f = *state;
  struct store_lock_info info;
  struct lease_status s;
  char payload[1024], ans[256];
  struct host a;

  host_open (f, &a, "host-a", 3000, false, 0);
  assert_int_equal (guarded_write (&a, "A1"), 0);
  assert_int_equal (lease_epoch (a.lease), 1);
  assert_int_equal (store_lock_get (f->admin, HDR, LEASE_LOCK_NAME, &info),
                    0);

  /* The operator's request for epoch 1: A lets go. */
  snprintf (payload, sizeof payload, "release operator 1 1 %s",
            info.cookie);
  notify_raw (f, &a, payload, ans, sizeof ans);
  assert_string_equal (ans, "releasing");
  wait_lock_free (f);

  /* A's next write takes the lease again, epoch 2. */
  assert_int_equal (guarded_write (&a, "A2"), 0);
  assert_int_equal (lease_epoch (a.lease), 2);

  /* The same request once more: stale, the lease stays with A.  The
   * holder decides before it answers, so its state is checked at once. */
  notify_raw (f, &a, payload, ans, sizeof ans);
  assert_string_equal (ans, "stale: epoch 2");
  assert_int_equal (lease_state (a.lease), LEASE_HELD);
  /* A hand-off request of another host that saw epoch 1: stale too. */
  snprintf (payload, sizeof payload, "release host-b 0 1 %s", info.cookie);
  notify_raw (f, &a, payload, ans, sizeof ans);
  assert_string_equal (ans, "stale: epoch 2");
  assert_int_equal (lease_state (a.lease), LEASE_HELD);
  /* Our epoch, but another holder's cookie: not about this lease. */
  notify_raw (f, &a, "release operator 1 2 someone.else.1", ans,
              sizeof ans);
  assert_string_equal (ans, "stale: epoch 2");
  assert_int_equal (lease_state (a.lease), LEASE_HELD);
  assert_int_equal (lease_status_get (f->admin, HDR, &s), 0);
  assert_true (s.held);
  assert_string_equal (s.cookie, info.cookie);
  assert_int_equal (s.epoch, 2);
  assert_int_equal (guarded_write (&a, "A3"), 0);
  check_data (f, "A3");

  /* lease_request_release names the current epoch: A lets go. */
  assert_int_equal (lease_request_release (f->admin, HDR, 10000), 0);
  assert_int_equal (lease_status_get (f->admin, HDR, &s), 0);
  assert_false (s.held);

  /* A request without epoch (an older vbk) still releases what A
   * holds. */
  assert_int_equal (guarded_write (&a, "A4"), 0);
  assert_int_equal (lease_epoch (a.lease), 3);
  notify_raw (f, &a, "release operator 1", ans, sizeof ans);
  assert_string_equal (ans, "releasing");
  wait_lock_free (f);
  host_close (&a);
}

/* A holder that was fenced while it was stopped, and then handles the
 * release request that had reached it before: its flush, unlock and
 * record removal fail with -ESHUTDOWN.  That is a lost lease, and the
 * lost hook must run (the export then fails its flushes and writes), not
 * a clean release. */
static void
test_release_after_fence_is_lost (void **state)
{
  struct fixture *f = *state;
  struct store_lock_info info;
  char payload[1024], ans[256];
  struct host a;
  int i;

  host_open (f, &a, "host-a", 3000, false, 0);
  assert_int_equal (guarded_write (&a, "A1"), 0);
  assert_int_equal (store_lock_get (f->admin, HDR, LEASE_LOCK_NAME, &info),
                    0);
  a.fence_on_flush = f->admin;
  snprintf (payload, sizeof payload, "release host-b 0 1 %s", info.cookie);
  notify_raw (f, &a, payload, ans, sizeof ans);
  assert_string_equal (ans, "releasing");
  /* RADOS: the blocklist reaches the OSDs a moment later, so the release
   * may still succeed; then the next write's lock request is refused.
   * Either way the lease ends lost and the hook runs once. */
  for (i = 0; i < 100 && guarded_write (&a, "A2") == 0; i++)
    usleep (50000);
  assert_true (i < 100);
  for (i = 0; i < 500 && __atomic_load_n (&a.lost, __ATOMIC_SEQ_CST) == 0;
       i++)
    usleep (10000);             /* the hook runs just after the state */
  assert_int_equal (lease_state (a.lease), LEASE_LOST);
  assert_true (guarded_write (&a, "A3") < 0);
  usleep (200000);
  assert_int_equal (__atomic_load_n (&a.lost, __ATOMIC_SEQ_CST), 1);
  check_data (f, "A1");
  host_close (&a);
}

int
main (int argc, char **argv)
{
  if (argc == 5 && strcmp (argv[1], "--holder") == 0)
    return holder_main (argv[2], atoi (argv[3]), atoi (argv[4]));
  self_path = argv[0];
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_handoff_a_b_a, setup, teardown),
    cmocka_unit_test_setup_teardown (test_exclusive_refuses, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_takeover_after_kill, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_stopped_holder_is_fenced, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_two_writers_bounce, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_break_fences_holder, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_release_after_fence_is_lost,
                                     setup, teardown),
    cmocka_unit_test_setup_teardown (test_stale_release_request, setup,
                                     teardown),
  };

  signal (SIGPIPE, SIG_IGN);
  if (getenv ("VBK_DEBUG"))
    log_level = LOG_LVL_DEBUG;
  return cmocka_run_group_tests_name (test_store_kind (), tests, NULL, NULL);
}
