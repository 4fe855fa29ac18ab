/* SPDX-License-Identifier: MIT
 *
 * test-store-fault.c - the fault: store backend (store.h, "Fault
 * injection"), wrapped around the backend under test.
 *
 * VBK_TEST_BACKENDS: ctest runs this program once per backend (local,
 * rados), given as VBK_TEST_STORE_KIND; every test wraps a fresh store of
 * that backend as fault:SPEC@INNER and also opens INNER directly, as a
 * second client that no fault touches, to see what really reached the
 * store.  Checked: the SPEC syntax of the URI (op, err, call, nth,
 * sticky, trigger), store_fault_set and store_fault_count, which calls each
 * operation class covers, that a failing call returns the chosen errno
 * with a message naming the operation, and that nothing a failed call
 * would have written is visible.
 */
/* VBK_TEST_LINKS: vbkstore vbktestutil */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "store/store.h"
#include "testutil.h"

#define HEAD STORE_SNAP_HEAD

/* CALL must fail with an injected ERR whose message names OP. */
#define expect_fault(err, op, call)                                     \
  do {                                                                  \
    expect_err (err, call);                                             \
    if (strstr (vbk_error (), (op)) == NULL)                            \
      fail_msg ("%s: message '%s' does not name the operation '%s'",    \
                #call, vbk_error (), (op));                             \
  } while (0)

/* OID must hold exactly LEN bytes EXP, as INNER sees it. */
static void
check_object (struct store *st, const char *oid, const void *exp, size_t len)
{
  char buf[256];
  uint64_t size = UINT64_MAX;
  ssize_t r;

  assert_true (len <= 128);
  expect_ok (store_stat (st, oid, HEAD, &size));
  if (size != len)
    fail_msg ("%s: size %" PRIu64 ", expected %zu", oid, size, len);
  memset (buf, 0xa5, sizeof buf);
  r = store_read (st, oid, buf, len + 16, 0, HEAD);
  assert_int_equal (r, len + 16);
  if (memcmp (buf, exp, len) != 0)
    fail_msg ("%s: holds '%.*s', expected '%.*s'", oid, (int) len, buf,
              (int) len, (const char *) exp);
}

static void
check_absent (struct store *st, const char *oid)
{
  uint64_t size;

  expect_err (-ENOENT, store_stat (st, oid, HEAD, &size));
}

/* ---- The fixture ------------------------------------------------------ */

struct fx {
  char inner[4096];        /* a fresh store of the backend under test */
  char uri[4200];          /* fault:@INNER or as reopened */
  struct store *st;        /* the fault: store */
  struct store *in;        /* INNER, opened directly */
  struct store *extra;
};

static int
setup (void **state)
{
  struct fx *fx = calloc (1, sizeof *fx);

  if (fx == NULL)
    return -1;
  test_store_uri (fx->inner, sizeof fx->inner);
  snprintf (fx->uri, sizeof fx->uri, "fault:@%s", fx->inner);
  if (store_open (fx->uri, &fx->st) < 0
      || store_open (fx->inner, &fx->in) < 0) {
    fprintf (stderr, "store_open %s: %s\n", fx->uri, vbk_error ());
    return -1;
  }
  *state = fx;
  return 0;
}

static int
teardown (void **state)
{
  struct fx *fx = *state;

  store_close (fx->extra);
  store_close (fx->st);
  store_close (fx->in);
  test_store_cleanup (fx->inner);
  free (fx);
  return 0;
}

/* Replaces the fault: store by one opened as fault:SPEC@INNER. */
static struct store *
reopen (struct fx *fx, const char *spec)
{
  int r;

  store_close (fx->st);
  fx->st = NULL;
  snprintf (fx->uri, sizeof fx->uri, "fault:%s@%s", spec, fx->inner);
  r = store_open (fx->uri, &fx->st);
  if (r < 0)
    fail_msg ("store_open (%s): %s [%s]", fx->uri, test_errname (r),
              vbk_error ());
  return fx->st;
}

#define FX struct fx *fx = *state; struct store *in = fx->in

/* ---- Opening ---------------------------------------------------------- */

static void
test_fault_open (void **state)
{
  FX;
  static const char *const bad[] = {
    "fault:op=write,err=EIO", "fault:op=write@", "fault:@",
    "fault:op=nosuch@%s", "fault:op=@%s", "fault:op=write,err=EWHAT@%s",
    "fault:op=write,nth=0@%s", "fault:op=write,frob=1@%s",
    "fault:op=write,justaword@%s", "fault:op=write@nosuch:x",
    "fault:op=meta,call=@%s",
  };
  char uri[4400];
  struct store *st;
  size_t i;
  int r;

  assert_string_equal (store_backend (fx->st), "fault");
  assert_non_null (store_client_id (fx->st));
  assert_true (store_client_id (fx->st)[0] != '\0');

  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    snprintf (uri, sizeof uri, bad[i], fx->inner);
    st = NULL;
    vbk_clear_error ();
    r = store_open (uri, &st);
    if (r != -EINVAL) {
      store_close (r == 0 ? st : NULL);
      fail_msg ("store_open (\"%s\"): got %d (%s), expected -EINVAL [%s]",
                uri, r, test_errname (r), vbk_error ());
    }
    assert_true (vbk_error ()[0] != '\0');
  }

  /* Every documented item, and classes joined with '+'. */
  reopen (fx, "op=read+write,err=ETIMEDOUT,nth=2,sticky=1");
  reopen (fx, "op=all,err=ENOSPC");
  reopen (fx, "op=meta,err=EIO,trigger=/tmp/vbk-no-such-trigger");
  reopen (fx, "op=lock");
  reopen (fx, "op=snap,err=EIO,nth=5");
  reopen (fx, "op=meta,call=meta_set,nth=2");

  /* A fault: store wrapping a fault: store. */
  snprintf (uri, sizeof uri, "fault:@fault:@%s", fx->inner);
  expect_ok (store_open (uri, &fx->extra));
  expect_ok (store_write_full (fx->extra, "nested", "n", 1, 0));
  check_object (in, "nested", "n", 1);
}

/* The brief example: the third write-class call fails, no other. */
static void
test_fault_uri_nth (void **state)
{
  FX;
  struct store *st = reopen (fx, "op=write,err=ENOSPC,nth=3");
  char buf[8];

  assert_string_equal (store_backend (st), "fault");
  expect_ok (store_write_full (st, "a", "one", 3, 0));
  assert_int_equal (store_read (st, "a", buf, 3, 0, HEAD), 3);
  expect_ok (store_write (st, "a", "TWO", 3, 3, 0));
  expect_ok (store_xattr_set (st, "a", "k", "v", 1));  /* not a write */
  expect_fault (-ENOSPC, "write", store_write (st, "a", "333", 3, 6, 0));
  expect_ok (store_write (st, "a", "4", 1, 9, 0));
  expect_ok (store_write_full (st, "b", "five", 4, 0));
  expect_ok (store_create_excl (st, "c", "six", 3, 0));

  /* The failed write left nothing; the rest landed. */
  check_object (in, "a", "oneTWO\0\0\0" "4", 10);
  check_object (in, "b", "five", 4);
  assert_int_equal (store_fault_count (st, STORE_OP_WRITE), 6);
  assert_int_equal (store_fault_count (st, STORE_OP_READ), 1);
  assert_int_equal (store_fault_count (st, STORE_OP_META), 1);
  assert_int_equal (store_fault_count (st, STORE_OP_WRITE | STORE_OP_META),
                    7);
  assert_int_equal (store_fault_count (st, STORE_OP_LOCK | STORE_OP_SNAP),
                    0);
}

/* call=NAME: of the class's calls only those named NAME count; here the
 * second store_meta_set fails, and sets nothing. */
static void
test_fault_uri_call (void **state)
{
  FX;
  struct store *st = reopen (fx, "op=meta,call=meta_set,err=ENOSPC,nth=2");
  struct store_meta_set one[] = { { true, "k1", "1", 1 } };
  struct store_meta_set two[] = { { true, "k2", "2", 1 },
                                  { false, "x2", "2", 1 } };
  char buf[8];

  expect_ok (store_omap_set (st, "o", "k0", "0", 1));
  expect_ok (store_meta_set (st, "o", one, 1));
  expect_ok (store_xattr_set (st, "o", "x0", "0", 1));
  assert_int_equal (store_omap_get (st, "o", "k1", buf, sizeof buf), 1);
  expect_fault (-ENOSPC, "meta_set", store_meta_set (st, "o", two, 2));
  expect_err (-ENOENT, store_omap_get (in, "o", "k2", buf, sizeof buf));
  expect_err (-ENODATA, store_xattr_get (in, "o", "x2", buf, sizeof buf));
  expect_ok (store_meta_set (st, "o", two, 2));
  assert_int_equal (store_omap_get (in, "o", "k2", buf, sizeof buf), 1);
  assert_int_equal (store_fault_count (st, STORE_OP_META), 6);
}

static void
test_fault_uri_sticky_err (void **state)
{
  FX;
  struct store *st = reopen (fx, "op=read,err=ETIMEDOUT,nth=2,sticky=1");
  char buf[8];
  uint64_t size;
  int i;

  expect_ok (store_write_full (st, "r", "data", 4, 0));
  assert_int_equal (store_read (st, "r", buf, 4, 0, HEAD), 4);
  expect_fault (-ETIMEDOUT, "read", store_read (st, "r", buf, 4, 0, HEAD));
  for (i = 0; i < 3; i++)
    expect_fault (-ETIMEDOUT, "stat", store_stat (st, "r", HEAD, &size));
  expect_ok (store_write_full (st, "r", "more", 4, 0));
  check_object (in, "r", "more", 4);
  assert_int_equal (store_fault_count (st, STORE_OP_READ), 5);

  st = reopen (fx, "op=all,err=EIO");
  expect_fault (-EIO, "write", store_write_full (st, "x", "x", 1, 0));
  expect_ok (store_write_full (st, "x", "y", 1, 0));
  check_object (in, "x", "y", 1);
}

/* ---- Each class covers its calls -------------------------------------- */

/* Prepares INNER with an object O holding "data", xattr k=v, omap k=v. */
static void
prepare (struct store *in)
{
  expect_ok (store_write_full (in, "o", "data", 4, 0));
  expect_ok (store_xattr_set (in, "o", "k", "v", 1));
  expect_ok (store_omap_set (in, "o", "k", "v", 1));
}

static void
check_prepared (struct store *in)
{
  char buf[8];

  check_object (in, "o", "data", 4);
  assert_int_equal (store_xattr_get (in, "o", "k", buf, sizeof buf), 1);
  assert_int_equal (store_omap_get (in, "o", "k", buf, sizeof buf), 1);
}

struct aio_res {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int calls;
  ssize_t ret;
};

static void
aio_cb (void *arg, ssize_t ret)
{
  struct aio_res *a = arg;

  pthread_mutex_lock (&a->lock);
  a->calls++;
  a->ret = ret;
  pthread_cond_broadcast (&a->cond);
  pthread_mutex_unlock (&a->lock);
}

/* The result of an aio call: its return if it failed, else what the
 * callback got (waiting up to 30 s). */
static ssize_t
aio_result (int r, struct aio_res *a)
{
  struct timespec ts;
  ssize_t ret;

  if (r < 0)
    return r;
  clock_gettime (CLOCK_REALTIME, &ts);
  ts.tv_sec += 30;
  pthread_mutex_lock (&a->lock);
  while (a->calls == 0)
    if (pthread_cond_timedwait (&a->cond, &a->lock, &ts) == ETIMEDOUT)
      break;
  ret = a->calls == 1 ? a->ret : -9999;
  pthread_mutex_unlock (&a->lock);
  return ret;
}

static struct aio_res *
aio_res_new (void)
{
  /* Not freed if a check fails: the callback may still be due. */
  struct aio_res *a = calloc (1, sizeof *a);

  assert_non_null (a);
  pthread_mutex_init (&a->lock, NULL);
  pthread_cond_init (&a->cond, NULL);
  return a;
}

static void
test_fault_class_read (void **state)
{
  FX;
  struct store *st = reopen (fx, "op=read,err=EIO,sticky=1");
  struct aio_res *a = aio_res_new ();
  char buf[8];
  uint64_t size;

  prepare (in);
  expect_fault (-EIO, "read", store_read (st, "o", buf, 4, 0, HEAD));
  expect_fault (-EIO, "stat", store_stat (st, "o", HEAD, &size));
  vbk_clear_error ();
  assert_int_equal (aio_result (store_aio_read (st, "o", buf, 4, 0, HEAD,
                                                aio_cb, a), a), -EIO);
  /* Other classes pass. */
  expect_ok (store_write (st, "o", "D", 1, 0, 0));
  assert_int_equal (store_xattr_get (st, "o", "k", buf, sizeof buf), 1);
  expect_ok (store_lock (st, "o", "L", "c", "", 0, 0));
  expect_ok (store_flush (st));
  assert_int_equal (store_fault_count (st, STORE_OP_READ), 3);
  assert_int_equal (store_fault_count (st, STORE_OP_WRITE), 2);
  free (a);
}

static void
test_fault_class_write (void **state)
{
  FX;
  struct store *st = reopen (fx, "op=write,err=ENOSPC,sticky=1");
  struct aio_res *a = aio_res_new ();
  char buf[8];

  prepare (in);
  expect_fault (-ENOSPC, "write", store_write (st, "o", "XX", 2, 0, 0));
  expect_fault (-ENOSPC, "write_full",
                store_write_full (st, "o", "XX", 2, 0));
  expect_fault (-ENOSPC, "create",
                store_create_excl (st, "new", "XX", 2, 0));
  expect_fault (-ENOSPC, "zero", store_zero (st, "o", 0, 4));
  expect_fault (-ENOSPC, "truncate", store_truncate (st, "o", 1));
  expect_fault (-ENOSPC, "remove", store_remove (st, "o"));
  expect_fault (-ENOSPC, "flush", store_flush (st));
  assert_int_equal (aio_result (store_aio_write (st, "o", "XX", 2, 0, 0,
                                                 aio_cb, a), a), -ENOSPC);
  assert_int_equal (store_fault_count (st, STORE_OP_WRITE), 8);

  /* Nothing of it reached the store. */
  check_prepared (in);
  check_absent (in, "new");

  /* Other classes pass. */
  assert_int_equal (store_read (st, "o", buf, 4, 0, HEAD), 4);
  expect_ok (store_xattr_set (st, "o", "k2", "v", 1));
  expect_ok (store_omap_set (st, "o", "k2", "v", 1));
  free (a);
}

static int
cb_count (void *arg, const char *key, const void *val, size_t len)
{
  (*(int *) arg)++;
  return 0;
}

static void
test_fault_class_meta (void **state)
{
  FX;
  struct store *st = reopen (fx, "op=meta,err=ETIMEDOUT,sticky=1");
  char buf[8];
  int n = 0;

  prepare (in);
  expect_fault (-ETIMEDOUT, "xattr_get",
                store_xattr_get (st, "o", "k", buf, sizeof buf));
  expect_fault (-ETIMEDOUT, "xattr_set",
                store_xattr_set (st, "o", "k", "X", 1));
  expect_fault (-ETIMEDOUT, "xattr_set",
                store_xattr_set (st, "new", "k", "X", 1));
  expect_fault (-ETIMEDOUT, "xattr_rm", store_xattr_rm (st, "o", "k"));
  expect_fault (-ETIMEDOUT, "xattr_cas",
                store_xattr_cas (st, "o", "k", "v", 1, "X", 1));
  expect_fault (-ETIMEDOUT, "omap_set",
                store_omap_set (st, "o", "k", "X", 1));
  expect_fault (-ETIMEDOUT, "omap_get",
                store_omap_get (st, "o", "k", buf, sizeof buf));
  expect_fault (-ETIMEDOUT, "omap_rm", store_omap_rm (st, "o", "k"));
  expect_fault (-ETIMEDOUT, "omap_list",
                store_omap_list (st, "o", "", 10, cb_count, &n));
  assert_int_equal (store_fault_count (st, STORE_OP_META), 9);

  check_prepared (in);
  assert_int_equal (store_xattr_get (in, "o", "k", buf, sizeof buf), 1);
  assert_int_equal (buf[0], 'v');
  assert_int_equal (store_omap_get (in, "o", "k", buf, sizeof buf), 1);
  assert_int_equal (buf[0], 'v');
  check_absent (in, "new");

  expect_ok (store_write (st, "o", "D", 1, 0, 0));
  assert_int_equal (store_read (st, "o", buf, 4, 0, HEAD), 4);
}

static void
watch_cb (void *arg, int err, const void *payload, size_t len, void *reply,
          size_t reply_max, size_t *reply_len)
{
}

static void
test_fault_class_lock (void **state)
{
  FX;
  struct store *st = reopen (fx, "op=lock,err=EIO,sticky=1");
  struct store_lock_info info;
  struct store_watch *w = NULL;
  struct store_notify_reply *rep = NULL;
  size_t n, to;
  char buf[8];

  prepare (in);
  expect_ok (store_lock (in, "o", "held", "c", "", 0, 0));
  expect_fault (-EIO, "lock", store_lock (st, "o", "L", "c", "", 0, 0));
  expect_fault (-EIO, "unlock", store_unlock (st, "o", "L", "c"));
  expect_fault (-EIO, "lock_break",
                store_lock_break (st, "o", "held", store_client_id (in),
                                  "c"));
  expect_fault (-EIO, "lock_get", store_lock_get (st, "o", "held", &info));
  expect_fault (-EIO, "watch", store_watch (st, "o", watch_cb, NULL, &w));
  expect_fault (-EIO, "notify",
                store_notify (st, "o", "x", 1, 1000, &rep, &n, &to));
  expect_fault (-EIO, "fence", store_fence (st, store_client_id (in), 60));
  assert_int_equal (store_fault_count (st, STORE_OP_LOCK), 7);

  /* The lock was neither taken nor broken; the fence did not happen. */
  expect_err (-ENOENT, store_lock_get (in, "o", "L", &info));
  expect_ok (store_lock_get (in, "o", "held", &info));
  assert_string_equal (info.client, store_client_id (in));
  check_prepared (in);
  expect_ok (store_write (in, "o", "d", 1, 0, 0));

  assert_int_equal (store_read (st, "o", buf, 4, 0, HEAD), 4);
  expect_ok (store_write (st, "o", "D", 1, 0, 0));
}

static void
test_fault_class_snap (void **state)
{
  FX;
  struct store *st = reopen (fx, "op=snap,err=EIO,sticky=1");
  uint64_t snap = 0, s;

  prepare (in);
  expect_ok (store_snap_create (in, &snap));
  expect_fault (-EIO, "snap_create", store_snap_create (st, &s));
  expect_fault (-EIO, "set_snap_context",
                store_set_snap_context (st, snap, &snap, 1));
  expect_fault (-EIO, "snap_rollback", store_snap_rollback (st, "o", snap));
  expect_fault (-EIO, "snap_remove", store_snap_remove (st, snap));
  assert_int_equal (store_fault_count (st, STORE_OP_SNAP), 4);

  /* The snapshot still exists. */
  expect_ok (store_snap_remove (in, snap));
  expect_ok (store_write (st, "o", "D", 1, 0, 0));
}

/* ---- store_fault_set / store_fault_count ------------------------------ */

static void
test_fault_api_nth (void **state)
{
  FX;
  struct store *st = fx->st;
  char buf[8];
  int i;

  expect_ok (store_write_full (st, "a", "abcd", 4, 0));

  /* The 2nd read from now fails; writes do not count. */
  expect_ok (store_fault_set (st, STORE_OP_READ, -EIO, 2, 0, NULL));
  assert_int_equal (store_read (st, "a", buf, 4, 0, HEAD), 4);
  expect_ok (store_write (st, "a", "B", 1, 1, 0));
  expect_fault (-EIO, "read", store_read (st, "a", buf, 4, 0, HEAD));
  for (i = 0; i < 3; i++)
    assert_int_equal (store_read (st, "a", buf, 4, 0, HEAD), 4);
  assert_memory_equal (buf, "aBcd", 4);

  /* Setting again restarts the count. */
  expect_ok (store_fault_set (st, STORE_OP_WRITE | STORE_OP_META, -ENOSPC,
                              3, 0, NULL));
  expect_ok (store_write (st, "a", "1", 1, 0, 0));
  expect_ok (store_xattr_set (st, "a", "k", "2", 1));
  expect_fault (-ENOSPC, "xattr_set", store_xattr_set (st, "a", "k", "3",
                                                       1));
  expect_ok (store_write (st, "a", "4", 1, 3, 0));
  check_object (in, "a", "1Bc4", 4);
  assert_int_equal (store_xattr_get (in, "a", "k", buf, sizeof buf), 1);
  assert_int_equal (buf[0], '2');

  /* OPS 0 clears. */
  expect_ok (store_fault_set (st, 0, 0, 0, 0, NULL));
  for (i = 0; i < 5; i++)
    expect_ok (store_write (st, "a", "z", 1, 0, 0));

  /* The counts are of every call, failed or not. */
  assert_int_equal (store_fault_count (st, STORE_OP_READ), 5);
  assert_int_equal (store_fault_count (st, STORE_OP_META), 2);
  assert_int_equal (store_fault_count (st, STORE_OP_WRITE), 9);
  assert_int_equal (store_fault_count (st, STORE_OP_ALL), 16);
}

static void
test_fault_api_sticky (void **state)
{
  FX;
  struct store *st = fx->st;
  int i;

  expect_ok (store_fault_set (st, STORE_OP_WRITE, -ETIMEDOUT, 2, 1, NULL));
  expect_ok (store_write_full (st, "s", "ok", 2, 0));
  for (i = 0; i < 4; i++)
    expect_fault (-ETIMEDOUT, "write_full",
                  store_write_full (st, "s", "no", 2, 0));
  expect_fault (-ETIMEDOUT, "create",
                store_create_excl (st, "t", "no", 2, 0));
  check_object (in, "s", "ok", 2);
  check_absent (in, "t");

  expect_ok (store_fault_set (st, 0, 0, 0, 0, NULL));
  expect_ok (store_write_full (st, "s", "yes", 3, 0));
  check_object (in, "s", "yes", 3);
  assert_int_equal (store_fault_count (st, STORE_OP_WRITE), 7);

  /* Every errno the backend is asked for. */
  expect_ok (store_fault_set (st, STORE_OP_WRITE, -EDQUOT, 1, 0, NULL));
  expect_fault (-EDQUOT, "write", store_write (st, "s", "q", 1, 0, 0));
  expect_ok (store_fault_set (st, STORE_OP_READ, -ESHUTDOWN, 1, 0, NULL));
  expect_fault (-ESHUTDOWN, "stat",
                store_stat (st, "s", HEAD, &(uint64_t) { 0 }));
}

static void
test_fault_trigger (void **state)
{
  FX;
  struct store *st = fx->st;
  char trig[] = "/tmp/vbk-test-trigger-XXXXXX";
  char buf[8], spec[128];
  int fd;

  fd = mkstemp (trig);
  assert_true (fd >= 0);
  close (fd);
  unlink (trig);

  /* Through the API: every call fails while the file exists. */
  expect_ok (store_write_full (st, "t", "abc", 3, 0));
  expect_ok (store_fault_set (st, STORE_OP_ALL, -EIO, 1, 1, trig));
  assert_int_equal (store_read (st, "t", buf, 3, 0, HEAD), 3);
  expect_ok (store_write (st, "t", "A", 1, 0, 0));

  fd = creat (trig, 0644);
  assert_true (fd >= 0);
  close (fd);
  expect_fault (-EIO, "read", store_read (st, "t", buf, 3, 0, HEAD));
  expect_fault (-EIO, "write", store_write (st, "t", "X", 1, 1, 0));
  expect_fault (-EIO, "xattr_set", store_xattr_set (st, "t", "k", "v", 1));
  expect_fault (-EIO, "lock", store_lock (st, "t", "L", "c", "", 0, 0));
  check_object (in, "t", "Abc", 3);

  unlink (trig);
  assert_int_equal (store_read (st, "t", buf, 3, 0, HEAD), 3);
  expect_ok (store_write (st, "t", "B", 1, 1, 0));
  check_object (in, "t", "ABc", 3);

  /* Through the URI. */
  snprintf (spec, sizeof spec, "op=write,err=ENOSPC,sticky=1,trigger=%s",
            trig);
  st = reopen (fx, spec);
  expect_ok (store_write (st, "t", "C", 1, 2, 0));
  fd = creat (trig, 0644);
  assert_true (fd >= 0);
  close (fd);
  expect_fault (-ENOSPC, "write", store_write (st, "t", "Y", 1, 0, 0));
  expect_fault (-ENOSPC, "truncate", store_truncate (st, "t", 0));
  assert_int_equal (store_read (st, "t", buf, 3, 0, HEAD), 3);
  unlink (trig);
  expect_ok (store_write (st, "t", "D", 1, 0, 0));
  check_object (in, "t", "DBC", 3);
}

static void
test_fault_not_fault (void **state)
{
  FX;

  expect_err (-EINVAL, store_fault_set (in, STORE_OP_ALL, -EIO, 1, 0,
                                        NULL));
  assert_int_equal (store_fault_count (in, STORE_OP_ALL), 0);
  expect_ok (store_write_full (in, "n", "n", 1, 0));
}

/* With nothing injected, the wrapper is the store it wraps: data, watch
 * and notify, locks all work through it. */
static void
reply_cb (void *arg, int err, const void *payload, size_t len, void *reply,
          size_t reply_max, size_t *reply_len)
{
  if (err == 0 && reply_max >= 2) {
    memcpy (reply, "ok", 2);
    *reply_len = 2;
  }
}

static void
test_fault_passthrough (void **state)
{
  FX;
  struct store *st = fx->st;
  struct store_watch *w;
  struct store_notify_reply *rep;
  struct store_lock_info info;
  size_t n, to;
  char buf[8];
  int cnt = 0;

  expect_ok (store_write_full (st, "p", "pass", 4, 0));
  check_object (in, "p", "pass", 4);
  expect_ok (store_omap_set (st, "p", "k", "v", 1));
  expect_ok (store_omap_list (st, "p", "", 10, cb_count, &cnt));
  assert_int_equal (cnt, 1);
  expect_err (-ENOENT, store_read (st, "nope", buf, 1, 0, HEAD));

  expect_ok (store_lock (st, "p", "L", "c", "d", 0, 0));
  expect_ok (store_lock_get (in, "p", "L", &info));
  assert_string_equal (info.client, store_client_id (st));
  expect_err (-EBUSY, store_lock (in, "p", "L", "c2", "", 0, 0));

  expect_ok (store_watch (st, "p", reply_cb, NULL, &w));
  expect_ok (store_notify (in, "p", "hi", 2, 5000, &rep, &n, &to));
  assert_int_equal (n, 1);
  assert_int_equal (to, 0);
  assert_string_equal (rep[0].client, store_client_id (st));
  assert_int_equal (rep[0].len, 2);
  assert_memory_equal (rep[0].data, "ok", 2);
  store_notify_replies_free (rep, n);
  store_unwatch (w);

  /* A clone of a fault: store is a fault: store too. */
  expect_ok (store_clone (st, &fx->extra));
  assert_string_equal (store_backend (fx->extra), "fault");
  check_object (fx->extra, "p", "pass", 4);
  store_close (fx->extra);
  fx->extra = NULL;
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown (name, setup, teardown)
    T (test_fault_open),
    T (test_fault_uri_nth),
    T (test_fault_uri_call),
    T (test_fault_uri_sticky_err),
    T (test_fault_class_read),
    T (test_fault_class_write),
    T (test_fault_class_meta),
    T (test_fault_class_lock),
    T (test_fault_class_snap),
    T (test_fault_api_nth),
    T (test_fault_api_sticky),
    T (test_fault_trigger),
    T (test_fault_not_fault),
    T (test_fault_passthrough),
  };
  char name[64];

  snprintf (name, sizeof name, "store-fault-%s", test_store_kind ());
  return cmocka_run_group_tests_name (name, tests, NULL, NULL);
}
