/* SPDX-License-Identifier: MIT
 *
 * test-store.c - the conformance suite of the object store (store.h).
 *
 * VBK_TEST_BACKENDS: ctest runs this program once per backend, with the
 * backend in VBK_TEST_STORE_KIND.  Every test makes the same assertions
 * on every backend; the only allowances are those store.h itself makes
 * (fencing may take a short while to bite on RADOS, so those checks poll
 * for up to 3 s) and the URIs, whose syntax is per backend.
 *
 * Design: each test gets a fresh, empty store from a cmocka fixture that
 * also remembers every extra client, clone and watch the test opens, so
 * a failing assertion (which longjmps out of the test) still unwatches
 * and closes everything in teardown.  State that backend threads write
 * to (watch and aio callbacks) lives on the heap or in the fixture,
 * never on a test's stack.  Failing calls are checked with expect_err,
 * which asserts the errno and that vbk_error() holds a message.
 *
 * The two-process watch test re-executes this program (fork + exec) in a
 * child mode selected by the environment, so the child starts with a
 * clean librados rather than a forked copy of the parent's threads.
 */
/* VBK_TEST_LINKS: vbkstore vbktestutil */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "store/store.h"
#include "testutil.h"

#define HEAD STORE_SNAP_HEAD
#define KiB 1024u
#define MiB (1024u * 1024u)

/* ---- Utilities --------------------------------------------------------- */

static uint64_t
mono_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t
wall_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_REALTIME, &ts);
  return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
sleep_ms (unsigned ms)
{
  struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000 };

  while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
    ;
}

/* A deterministic pattern per SEED (xorshift). */
static void
fill (void *buf, size_t len, uint32_t seed)
{
  uint8_t *p = buf;
  uint32_t x = seed * 2654435761u + 0x9e3779b9u;
  size_t i;

  if (x == 0)
    x = 1;
  for (i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    p[i] = x >> 24;
  }
}

static void
check_bytes (const void *got, const void *exp, size_t len, const char *what)
{
  const uint8_t *g = got, *e = exp;
  size_t i;

  for (i = 0; i < len; i++)
    if (g[i] != e[i])
      fail_msg ("%s: byte %zu is 0x%02x, expected 0x%02x", what, i, g[i],
                e[i]);
}

static void
check_zero (const void *got, size_t len, const char *what)
{
  const uint8_t *g = got;
  size_t i;

  for (i = 0; i < len; i++)
    if (g[i] != 0)
      fail_msg ("%s: byte %zu is 0x%02x, expected zero", what, i, g[i]);
}

/* Reads LEN bytes (which must all be returned) into BUF, which is first
 * filled with garbage so that bytes the backend does not set show. */
static void
read_ok (struct store *st, const char *oid, void *buf, size_t len,
         uint64_t off, uint64_t snap)
{
  ssize_t r;

  memset (buf, 0xa5, len);
  r = store_read (st, oid, buf, len, off, snap);
  if (r != (ssize_t) len)
    fail_msg ("store_read (%s, %zu bytes at %" PRIu64 ", snap %" PRIx64
              "): got %zd (%s), expected %zu [%s]", oid, len, off, snap, r,
              test_errname (r), len, vbk_error ());
}

/* OID at SNAP must read exactly as EXP (LEN bytes) and have size LEN. */
static void
check_object (struct store *st, const char *oid, uint64_t snap,
              const void *exp, size_t len, const char *what)
{
  uint8_t *buf = malloc (len + 4096);
  uint64_t size = UINT64_MAX;

  assert_non_null (buf);
  expect_ok (store_stat (st, oid, snap, &size));
  if (size != len)
    fail_msg ("%s: size %" PRIu64 ", expected %zu", what, size, len);
  read_ok (st, oid, buf, len + 4096, 0, snap);
  check_bytes (buf, exp, len, what);
  check_zero (buf + len, 4096, what);
  free (buf);
}

static void
check_size (struct store *st, const char *oid, uint64_t snap, uint64_t exp)
{
  uint64_t size = UINT64_MAX;

  expect_ok (store_stat (st, oid, snap, &size));
  if (size != exp)
    fail_msg ("store_stat (%s): size %" PRIu64 ", expected %" PRIu64, oid,
              size, exp);
}

static void
snapc (struct store *st, size_t n, const uint64_t *snaps)
{
  expect_ok (store_set_snap_context (st, n ? snaps[0] : 0, snaps, n));
}

/* ---- Watchers: state written by watch callbacks ----------------------- */

struct watcher {
  pthread_mutex_t lock;
  char tag[16];            /* replies are "TAG:PAYLOAD" */
  int calls;               /* notifies seen */
  int errs;                /* err != 0 callbacks seen */
  int last_err;
  char payload[256];       /* last payload */
  size_t payload_len;
  int sleep_ms;            /* before replying */
  int no_reply;            /* leave *reply_len alone */
  int running;             /* a callback is running now */
};

static void
watcher_init (struct watcher *w, const char *tag)
{
  memset (w, 0, sizeof *w);
  pthread_mutex_init (&w->lock, NULL);
  snprintf (w->tag, sizeof w->tag, "%s", tag);
}

static void
watch_cb (void *arg, int err, const void *payload, size_t len, void *reply,
          size_t reply_max, size_t *reply_len)
{
  struct watcher *w = arg;
  char out[300];
  int n, sleep_for, no_reply;

  pthread_mutex_lock (&w->lock);
  if (err != 0) {
    w->errs++;
    w->last_err = err;
    pthread_mutex_unlock (&w->lock);
    return;
  }
  w->running++;
  w->calls++;
  w->payload_len = len;
  if (len > 0)                 /* PAYLOAD may be NULL when LEN is 0 */
    memcpy (w->payload, payload, len < sizeof w->payload ? len
            : sizeof w->payload);
  sleep_for = w->sleep_ms;
  no_reply = w->no_reply;
  pthread_mutex_unlock (&w->lock);

  if (sleep_for)
    sleep_ms (sleep_for);
  if (!no_reply) {
    n = snprintf (out, sizeof out, "%s:%.*s", w->tag, (int) len,
                  (const char *) payload);
    if ((size_t) n > reply_max)
      n = reply_max;
    memcpy (reply, out, n);
    *reply_len = n;
  }

  pthread_mutex_lock (&w->lock);
  w->running--;
  pthread_mutex_unlock (&w->lock);
}

static void
watcher_set (struct watcher *w, int *field, int v)
{
  pthread_mutex_lock (&w->lock);
  *field = v;
  pthread_mutex_unlock (&w->lock);
}

static int
watcher_get (struct watcher *w, int *field)
{
  int v;

  pthread_mutex_lock (&w->lock);
  v = *field;
  pthread_mutex_unlock (&w->lock);
  return v;
}

/* ---- The fixture ------------------------------------------------------ */

#define MAX_PEERS 4
#define MAX_WATCHES 8

struct fx {
  char uri[4096];
  struct store *st;                        /* the store under test */
  struct store *peer[MAX_PEERS];           /* other clients, same URI */
  struct store *clone;
  struct store_watch *w[MAX_WATCHES];
  struct watcher wst[MAX_WATCHES];
};

static int
setup (void **state)
{
  struct fx *fx = calloc (1, sizeof *fx);
  int r, i;

  if (fx == NULL)
    return -1;
  test_store_uri (fx->uri, sizeof fx->uri);
  r = store_open (fx->uri, &fx->st);
  if (r < 0) {
    fprintf (stderr, "store_open %s: %s\n", fx->uri, vbk_error ());
    free (fx);
    return -1;
  }
  for (i = 0; i < MAX_WATCHES; i++)
    watcher_init (&fx->wst[i], "?");
  *state = fx;
  return 0;
}

static int
teardown (void **state)
{
  struct fx *fx = *state;
  int i;

  for (i = 0; i < MAX_WATCHES; i++)
    store_unwatch (fx->w[i]);
  store_close (fx->clone);
  for (i = 0; i < MAX_PEERS; i++)
    store_close (fx->peer[i]);
  store_close (fx->st);
  test_store_cleanup (fx->uri);
  free (fx);
  return 0;
}

/* A second client of the same store (a different client id). */
static struct store *
peer_open (struct fx *fx)
{
  int i, r;

  for (i = 0; i < MAX_PEERS; i++) {
    if (fx->peer[i] == NULL) {
      r = store_open (fx->uri, &fx->peer[i]);
      if (r < 0)
        fail_msg ("store_open %s (second client): %s [%s]", fx->uri,
                  test_errname (r), vbk_error ());
      return fx->peer[i];
    }
  }
  fail_msg ("too many peers");
  return NULL;
}

static void
peer_close (struct fx *fx, struct store *p)
{
  int i;

  for (i = 0; i < MAX_PEERS; i++) {
    if (fx->peer[i] == p) {
      store_close (p);
      fx->peer[i] = NULL;
    }
  }
}

/* Watches OID through ST with watcher slot I, tagged TAG. */
static struct watcher *
watch_add (struct fx *fx, int i, struct store *st, const char *oid,
           const char *tag)
{
  watcher_init (&fx->wst[i], tag);
  expect_ok (store_watch (st, oid, watch_cb, &fx->wst[i], &fx->w[i]));
  return &fx->wst[i];
}

static void
watch_del (struct fx *fx, int i)
{
  store_unwatch (fx->w[i]);
  fx->w[i] = NULL;
}

#define FX struct fx *fx = *state; struct store *st = fx->st

/* ---- Opening ---------------------------------------------------------- */

static void
test_open_malformed (void **state)
{
  static const char *const bad[] = {
    "", "local", "/tmp/x", "nosuch:x", "nosuch:", ":", ":x", "local:",
    "rados:", "rados:?conf=/dev/null", "fault:", "fault:@",
    "fault:op=write,err=EIO", "fault:op=bogus@local:/tmp/x",
    "fault:op=write,err=EWHATEVER@local:/tmp/x",
    "fault:op=write,nth=0@local:/tmp/x", "fault:frob=1@local:/tmp/x",
  };
  struct store *st;
  size_t i;
  int r;

  store_close (NULL);          /* a no-op */
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    st = NULL;
    vbk_clear_error ();
    r = store_open (bad[i], &st);
    if (r != -EINVAL)
      fail_msg ("store_open (\"%s\"): got %d (%s), expected -EINVAL [%s]",
                bad[i], r, test_errname (r), vbk_error ());
    if (vbk_error ()[0] == '\0')
      fail_msg ("store_open (\"%s\"): no vbk_error() message", bad[i]);
  }
  expect_err (-EINVAL, store_open (NULL, &st));
}

/* A place whose parent does not exist: -ENOENT on every backend (a
 * missing directory for local, a missing pool for rados). */
static void
test_open_missing_parent (void **state)
{
  char uri[4200];
  const char *conf = getenv ("CEPH_CONF");
  struct store *st = NULL;

  if (strcmp (test_store_kind (), "local") == 0)
    snprintf (uri, sizeof uri, "local:/tmp/vbk-no-such-dir-%d/a/store",
              (int) getpid ());
  else
    snprintf (uri, sizeof uri, "rados:vbk-no-such-pool-%d%s%s",
              (int) getpid (), conf ? "?conf=" : "", conf ? conf : "");
  expect_err (-ENOENT, store_open (uri, &st));
}

/* local: a path below a regular file, or in a place where nobody may
 * create directories, fails cleanly (an error and a message). */
static void
test_open_local_bad_place (void **state)
{
  char file[] = "/tmp/vbk-test-file-XXXXXX";
  char uri[4200];
  struct store *st = NULL;
  struct stat sb;
  int fd, r;

  if (strcmp (test_store_kind (), "local") != 0)
    skip ();
  fd = mkstemp (file);
  assert_true (fd >= 0);
  close (fd);

  snprintf (uri, sizeof uri, "local:%s/store", file);
  vbk_clear_error ();
  r = store_open (uri, &st);
  if (r != -ENOTDIR && r != -ENOENT)
    fail_msg ("store_open (%s): got %d (%s), expected -ENOTDIR", uri, r,
              test_errname (r));
  assert_true (vbk_error ()[0] != '\0');

  snprintf (uri, sizeof uri, "local:%s", file);
  vbk_clear_error ();
  r = store_open (uri, &st);
  if (r >= 0) {
    store_close (st);
    fail_msg ("store_open (%s) on a regular file succeeded", uri);
  }
  assert_true (vbk_error ()[0] != '\0');
  unlink (file);

  /* /sys refuses mkdir even to root. */
  if (stat ("/sys", &sb) == 0 && S_ISDIR (sb.st_mode)) {
    snprintf (uri, sizeof uri, "local:/sys/vbk-test-%d", (int) getpid ());
    vbk_clear_error ();
    r = store_open (uri, &st);
    if (r != -EACCES && r != -EPERM && r != -EROFS)
      fail_msg ("store_open (%s): got %d (%s), expected -EACCES or -EPERM",
                uri, r, test_errname (r));
    assert_true (vbk_error ()[0] != '\0');
  }

  if (geteuid () != 0) {
    char dir[] = "/tmp/vbk-test-ro-XXXXXX";

    assert_non_null (mkdtemp (dir));
    chmod (dir, 0555);
    snprintf (uri, sizeof uri, "local:%s/store", dir);
    expect_err (-EACCES, store_open (uri, &st));
    chmod (dir, 0755);
    rmdir (dir);
  }
}

/* rados: a cluster nobody answers for gives -ETIMEDOUT within the
 * timeout of the URI, not librados' default of minutes. */
static void
test_open_rados_unreachable (void **state)
{
  char conf[] = "/tmp/vbk-test-conf-XXXXXX";
  char uri[4200];
  struct store *st = NULL;
  uint64_t t0, took;
  FILE *f;
  int fd, r;

  if (strcmp (test_store_kind (), "rados") != 0)
    skip ();
  fd = mkstemp (conf);
  assert_true (fd >= 0);
  f = fdopen (fd, "w");
  assert_non_null (f);
  fprintf (f, "[global]\n"
           "mon_host = 127.0.0.1:1\n"
           "auth_cluster_required = none\n"
           "auth_service_required = none\n"
           "auth_client_required = none\n"
           "log_to_stderr = false\n"
           "err_to_stderr = false\n"
           "log_file = /dev/null\n"
           "admin_socket =\n");
  fclose (f);

  snprintf (uri, sizeof uri, "rados:vbk?conf=%s&timeout=2", conf);
  t0 = mono_ms ();
  vbk_clear_error ();
  r = store_open (uri, &st);
  took = mono_ms () - t0;
  unlink (conf);
  if (r >= 0)
    store_close (st);
  if (r != -ETIMEDOUT)
    fail_msg ("store_open (%s): got %d (%s) after %" PRIu64 " ms, expected "
              "-ETIMEDOUT [%s]", uri, r, test_errname (r), took, vbk_error ());
  assert_true (vbk_error ()[0] != '\0');
  if (took >= 10000)
    fail_msg ("store_open with timeout=2 took %" PRIu64 " ms", took);
}

static void
test_identity (void **state)
{
  FX;
  struct store *b = peer_open (fx);
  const char *ida = store_client_id (st), *idb = store_client_id (b);

  assert_string_equal (store_backend (st), test_store_kind ());
  assert_non_null (ida);
  assert_non_null (idb);
  assert_true (ida[0] != '\0');
  assert_true (strlen (ida) < STORE_CLIENT_MAX);
  assert_true (strlen (idb) < STORE_CLIENT_MAX);
  if (strcmp (ida, idb) == 0)
    fail_msg ("two store_open calls share the client id '%s'", ida);

  expect_ok (store_clone (st, &fx->clone));
  assert_string_equal (store_backend (fx->clone), test_store_kind ());
  assert_non_null (store_client_id (fx->clone));

  /* Both clients see the same objects. */
  expect_ok (store_write_full (st, "shared", "abc", 3, 0));
  check_object (b, "shared", HEAD, "abc", 3, "second client");
  check_object (fx->clone, "shared", HEAD, "abc", 3, "clone");

  /* Object names: empty or too long is -EINVAL. */
  {
    char longname[STORE_NAME_MAX + 2];
    char buf[4];

    memset (longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    expect_err (-EINVAL, store_write_full (st, longname, "x", 1, 0));
    expect_err (-EINVAL, store_read (st, "", buf, 1, 0, HEAD));
    longname[STORE_NAME_MAX] = '\0';
    expect_ok (store_write_full (st, longname, "x", 1, 0));
    check_object (st, longname, HEAD, "x", 1, "longest name");
  }
}

/* ---- Object data ------------------------------------------------------ */

static void
test_read_write (void **state)
{
  FX;
  uint8_t exp[8192], buf[8192], small[100];
  uint64_t size;

  expect_err (-ENOENT, store_read (st, "a", buf, 10, 0, HEAD));
  expect_err (-ENOENT, store_read (st, "a", buf, 10, 1 * MiB, HEAD));
  expect_err (-ENOENT, store_stat (st, "a", HEAD, &size));

  fill (exp, 5000, 1);
  expect_ok (store_write (st, "a", exp, 5000, 0, 0));
  check_object (st, "a", HEAD, exp, 5000, "first write");

  /* Overwrite in the middle, durably. */
  fill (exp + 1000, 100, 2);
  expect_ok (store_write (st, "a", exp + 1000, 100, 1000, STORE_WRITE_SYNC));
  check_object (st, "a", HEAD, exp, 5000, "overwrite");

  /* Reads across and past the end: LEN bytes, zeros after the end. */
  read_ok (st, "a", buf, 8192, 0, HEAD);
  check_bytes (buf, exp, 5000, "read across the end");
  check_zero (buf + 5000, 8192 - 5000, "read across the end");
  read_ok (st, "a", small, sizeof small, 10000, HEAD);
  check_zero (small, sizeof small, "read past the end");
  read_ok (st, "a", small, sizeof small, 4950, HEAD);
  check_bytes (small, exp + 4950, 50, "read straddling the end");
  check_zero (small + 50, 50, "read straddling the end");

  /* Extending write leaves a hole that reads as zeros. */
  fill (exp + 6000, 1000, 3);
  memset (exp + 5000, 0, 1000);
  expect_ok (store_write (st, "a", exp + 6000, 1000, 6000, 0));
  check_object (st, "a", HEAD, exp, 7000, "extending write");

  /* A sparse object: one write far from the start. */
  fill (small, sizeof small, 4);
  expect_ok (store_write (st, "sparse", small, sizeof small, 1 * MiB + 7, 0));
  check_size (st, "sparse", HEAD, 1 * MiB + 7 + sizeof small);
  read_ok (st, "sparse", buf, 4096, 0, HEAD);
  check_zero (buf, 4096, "hole at the start");
  read_ok (st, "sparse", buf, 4096, 1 * MiB + 7 + 100 - 4096, HEAD);
  check_zero (buf, 4096 - 100, "hole before the data");
  check_bytes (buf + 4096 - 100, small, 100, "data after a hole");

  /* Other objects are separate. */
  expect_err (-ENOENT, store_stat (st, "b", HEAD, &size));
  expect_ok (store_write (st, "b", "B", 1, 0, 0));
  check_object (st, "b", HEAD, "B", 1, "second object");
  check_size (st, "a", HEAD, 7000);
}

static void
test_write_full (void **state)
{
  FX;
  uint8_t exp[8192];
  uint64_t size;

  fill (exp, sizeof exp, 10);
  expect_ok (store_write_full (st, "f", exp, sizeof exp, 0));
  check_object (st, "f", HEAD, exp, sizeof exp, "write_full creates");

  fill (exp, 100, 11);
  expect_ok (store_write_full (st, "f", exp, 100, STORE_WRITE_SYNC));
  check_object (st, "f", HEAD, exp, 100, "write_full shrinks");

  fill (exp, 3000, 12);
  expect_ok (store_write_full (st, "f", exp, 3000, 0));
  check_object (st, "f", HEAD, exp, 3000, "write_full grows");

  /* An empty write_full leaves an empty, existing object. */
  expect_ok (store_write_full (st, "f", exp, 0, 0));
  check_object (st, "f", HEAD, exp, 0, "write_full empty");
  expect_ok (store_write_full (st, "g", exp, 0, 0));
  expect_ok (store_stat (st, "g", HEAD, &size));
  assert_int_equal (size, 0);
}

/* Two clients see each other's changes at once, whatever either has
 * read or written before (no stale cached state). */
static void
test_two_clients (void **state)
{
  FX;
  struct store *b = peer_open (fx);
  uint8_t buf[64];
  uint64_t s;

  expect_ok (store_write_full (st, "o", "first", 5, 0));
  check_object (b, "o", HEAD, "first", 5, "B reads A's object");
  expect_ok (store_write (b, "o", "F", 1, 0, 0));
  check_object (st, "o", HEAD, "First", 5, "A reads B's write");

  /* write_full by A; B reads and writes the new object. */
  expect_ok (store_write_full (st, "o", "second!", 7, 0));
  check_object (b, "o", HEAD, "second!", 7, "B after A's write_full");
  expect_ok (store_write (b, "o", "S", 1, 0, 0));
  check_object (st, "o", HEAD, "Second!", 7, "A after B's write");

  /* Truncate, remove and re-create by A. */
  expect_ok (store_truncate (st, "o", 3));
  check_object (b, "o", HEAD, "Sec", 3, "B after A's truncate");
  expect_ok (store_remove (st, "o"));
  expect_err (-ENOENT, store_read (b, "o", buf, 3, 0, HEAD));
  expect_ok (store_write_full (st, "o", "third", 5, 0));
  check_object (b, "o", HEAD, "third", 5, "B after A's re-create");
  expect_ok (store_write (b, "o", "T", 1, 0, 0));
  check_object (st, "o", HEAD, "Third", 5, "A after B's write");

  /* Rollback by A. */
  expect_ok (store_snap_create (st, &s));
  snapc (st, 1, &s);
  expect_ok (store_write_full (st, "o", "fourth", 6, 0));
  check_object (b, "o", HEAD, "fourth", 6, "B before A's rollback");
  expect_ok (store_snap_rollback (st, "o", s));
  check_object (b, "o", HEAD, "Third", 5, "B after A's rollback");
  expect_ok (store_write (b, "o", "t", 1, 0, 0));
  check_object (st, "o", HEAD, "third", 5, "A after B's write");
}

static void
test_create_excl (void **state)
{
  FX;
  uint8_t a[300], b[300];

  fill (a, sizeof a, 20);
  fill (b, sizeof b, 21);
  expect_ok (store_create_excl (st, "c", a, sizeof a, 0));
  check_object (st, "c", HEAD, a, sizeof a, "create_excl");
  expect_err (-EEXIST, store_create_excl (st, "c", b, sizeof b, 0));
  expect_err (-EEXIST, store_create_excl (st, "c", b, 0, STORE_WRITE_SYNC));
  check_object (st, "c", HEAD, a, sizeof a, "after a refused create_excl");

  /* Empty, durable. */
  expect_ok (store_create_excl (st, "e", b, 0, STORE_WRITE_SYNC));
  check_object (st, "e", HEAD, b, 0, "empty create_excl");
  expect_err (-EEXIST, store_create_excl (st, "e", b, 10, 0));

  /* An object that only holds metadata exists too. */
  expect_ok (store_xattr_set (st, "x", "k", "v", 1));
  expect_err (-EEXIST, store_create_excl (st, "x", b, 10, 0));
  expect_ok (store_omap_set (st, "o", "k", "v", 1));
  expect_err (-EEXIST, store_create_excl (st, "o", b, 10, 0));

  /* Another client sees the same exclusivity. */
  expect_err (-EEXIST, store_create_excl (peer_open (fx), "c", b, 1, 0));

  /* After remove it can be created again. */
  expect_ok (store_remove (st, "c"));
  expect_ok (store_create_excl (st, "c", b, sizeof b, 0));
  check_object (st, "c", HEAD, b, sizeof b, "create_excl after remove");
}

/* A deferred create (STORE_WRITE_DEFER): the object is whole and visible
 * to every client at once, as exclusive as any create, and may be read,
 * written, replaced and removed before the flush that makes it durable;
 * a flush covers many of them, also when they left a small fd cache.
 * The flag is refused everywhere else, and with STORE_WRITE_SYNC.  (That
 * no sync runs per object, and that the flush does sync each one, is
 * test-store-sync.c's, on the local store.) */
static void
test_create_deferred (void **state)
{
  FX;
  struct store *small, *other = peer_open (fx);
  uint8_t a[5000], b[5000], big[70000];
  uint64_t size;
  char oid[32];
  int i;

  fill (a, sizeof a, 400);
  fill (b, sizeof b, 401);
  expect_ok (store_create_excl (st, "d", a, sizeof a, STORE_WRITE_DEFER));
  check_object (st, "d", HEAD, a, sizeof a, "deferred create");
  check_object (other, "d", HEAD, a, sizeof a, "deferred create, peer");
  expect_err (-EEXIST, store_create_excl (st, "d", b, sizeof b,
                                          STORE_WRITE_DEFER));
  expect_err (-EEXIST, store_create_excl (other, "d", b, sizeof b,
                                          STORE_WRITE_DEFER));
  expect_err (-EEXIST, store_create_excl (other, "d", b, sizeof b, 0));
  check_object (other, "d", HEAD, a, sizeof a, "after refused creates");

  /* An existing object of any kind is not replaced. */
  expect_ok (store_write_full (st, "f", b, 10, 0));
  expect_err (-EEXIST, store_create_excl (st, "f", a, sizeof a,
                                          STORE_WRITE_DEFER));
  check_object (st, "f", HEAD, b, 10, "a refused deferred create");
  expect_ok (store_omap_set (st, "m", "k", "v", 1));
  expect_err (-EEXIST, store_create_excl (st, "m", a, 1, STORE_WRITE_DEFER));

  /* Written to, read, and replaced before any flush. */
  expect_ok (store_write (st, "d", "XY", 2, 100, 0));
  memcpy (a + 100, "XY", 2);
  check_object (other, "d", HEAD, a, sizeof a, "written after the create");
  expect_ok (store_flush (st));
  check_object (other, "d", HEAD, a, sizeof a, "after the flush");
  expect_ok (store_create_excl (st, "r", a, 300, STORE_WRITE_DEFER));
  expect_ok (store_write_full (other, "r", b, 200, STORE_WRITE_SYNC));
  check_object (st, "r", HEAD, b, 200, "replaced by a peer");
  expect_ok (store_write (st, "r", "Z", 1, 0, 0));
  b[0] = 'Z';
  expect_ok (store_flush (st));
  check_object (other, "r", HEAD, b, 200, "replaced, written, flushed");

  /* Removed before the flush; created again. */
  expect_ok (store_create_excl (st, "gone", a, 100, STORE_WRITE_DEFER));
  expect_ok (store_remove (st, "gone"));
  expect_err (-ENOENT, store_stat (other, "gone", HEAD, &size));
  expect_ok (store_flush (st));
  expect_ok (store_create_excl (other, "gone", b, 50, STORE_WRITE_DEFER));
  check_object (st, "gone", HEAD, b, 50, "created again");

  /* Empty, and larger than one write of the local store's copy loop. */
  expect_ok (store_create_excl (st, "e", a, 0, STORE_WRITE_DEFER));
  expect_ok (store_stat (other, "e", HEAD, &size));
  assert_int_equal (size, 0);
  fill (big, sizeof big, 402);
  expect_ok (store_create_excl (st, "big", big, sizeof big,
                                STORE_WRITE_DEFER));
  check_object (other, "big", HEAD, big, sizeof big, "70000 bytes");

  /* Many, through a client whose fd cache holds 4 files (local: most
   * leave it before the flush). */
  setenv ("VBK_LOCAL_MAX_FILES", "4", 1);
  small = peer_open (fx);
  unsetenv ("VBK_LOCAL_MAX_FILES");
  for (i = 0; i < 60; i++) {
    snprintf (oid, sizeof oid, "many.%d", i);
    fill (a, 1000 + i, 500 + i);
    expect_ok (store_create_excl (small, oid, a, 1000 + i,
                                  STORE_WRITE_DEFER));
  }
  expect_ok (store_flush (small));
  for (i = 0; i < 60; i++) {
    snprintf (oid, sizeof oid, "many.%d", i);
    fill (a, 1000 + i, 500 + i);
    check_object (other, oid, HEAD, a, 1000 + i, "many deferred creates");
  }

  /* Refused: with STORE_WRITE_SYNC, and on every other write. */
  expect_err (-EINVAL, store_create_excl (st, "no", a, 10, STORE_WRITE_DEFER
                                          | STORE_WRITE_SYNC));
  expect_err (-EINVAL, store_write (st, "no", a, 10, 0, STORE_WRITE_DEFER));
  expect_err (-EINVAL, store_write_full (st, "no", a, 10,
                                         STORE_WRITE_DEFER));
  expect_err (-ENOENT, store_stat (st, "no", HEAD, &size));

  /* A fenced client cannot create. */
  expect_ok (store_fence (st, store_client_id (other), 600));
  {
    uint64_t t0 = mono_ms ();
    int r;
    do {
      vbk_clear_error ();
      r = store_create_excl (other, "fenced", a, 10, STORE_WRITE_DEFER);
      if (r == 0) {
        expect_ok (store_remove (st, "fenced"));
        sleep_ms (50);
      }
    } while (r == 0 && mono_ms () - t0 < 3000);
    if (r != -ESHUTDOWN)
      fail_msg ("a fenced client's deferred create: %s, expected "
                "-ESHUTDOWN", test_errname (r));
  }
}

static void
test_zero (void **state)
{
  FX;
  static uint8_t exp[64 * KiB];
  uint64_t size;

  expect_err (-ENOENT, store_zero (st, "z", 0, 10));
  expect_err (-ENOENT, store_stat (st, "z", HEAD, &size));

  fill (exp, sizeof exp, 30);
  expect_ok (store_write (st, "z", exp, sizeof exp, 0, 0));

  expect_ok (store_zero (st, "z", 4096, 8192));
  memset (exp + 4096, 0, 8192);
  check_object (st, "z", HEAD, exp, sizeof exp, "zero aligned");

  expect_ok (store_zero (st, "z", 20003, 17));
  memset (exp + 20003, 0, 17);
  check_object (st, "z", HEAD, exp, sizeof exp, "zero unaligned");

  /* Straddling the end: zeros up to the end, no growth. */
  expect_ok (store_zero (st, "z", sizeof exp - 1000, 100000));
  memset (exp + sizeof exp - 1000, 0, 1000);
  check_object (st, "z", HEAD, exp, sizeof exp, "zero across the end");

  /* Wholly past the end: nothing changes. */
  expect_ok (store_zero (st, "z", 1 * MiB, 4096));
  check_object (st, "z", HEAD, exp, sizeof exp, "zero past the end");

  /* The whole object: still there, same size. */
  expect_ok (store_zero (st, "z", 0, sizeof exp));
  memset (exp, 0, sizeof exp);
  check_object (st, "z", HEAD, exp, sizeof exp, "zero everything");
}

static void
test_truncate (void **state)
{
  FX;
  uint8_t exp[20000], buf[20000];
  uint64_t size;

  expect_err (-ENOENT, store_truncate (st, "t", 100));
  expect_err (-ENOENT, store_stat (st, "t", HEAD, &size));

  fill (exp, 10000, 40);
  memset (exp + 10000, 0, 10000);
  expect_ok (store_write (st, "t", exp, 10000, 0, 0));

  expect_ok (store_truncate (st, "t", 20000));
  check_object (st, "t", HEAD, exp, 20000, "truncate up");

  expect_ok (store_truncate (st, "t", 3000));
  check_object (st, "t", HEAD, exp, 3000, "truncate down");
  read_ok (st, "t", buf, 10000, 0, HEAD);
  check_bytes (buf, exp, 3000, "read after truncate down");
  check_zero (buf + 3000, 7000, "read after truncate down");

  /* Growing again must not bring back what was cut. */
  expect_ok (store_truncate (st, "t", 10000));
  memset (exp + 3000, 0, 7000);
  check_object (st, "t", HEAD, exp, 10000, "truncate down then up");

  expect_ok (store_truncate (st, "t", 4097));
  check_object (st, "t", HEAD, exp, 4097, "truncate unaligned");

  expect_ok (store_truncate (st, "t", 0));
  check_object (st, "t", HEAD, exp, 0, "truncate to zero");
}

static int
count_cb (void *arg, const char *key, const void *val, size_t len)
{
  (*(int *) arg)++;
  return 0;
}

static void
test_remove (void **state)
{
  FX;
  uint8_t buf[64];
  uint64_t size;
  int n = 0;

  expect_err (-ENOENT, store_remove (st, "r"));

  expect_ok (store_write_full (st, "r", "data", 4, 0));
  expect_ok (store_xattr_set (st, "r", "xa", "1", 1));
  expect_ok (store_omap_set (st, "r", "ka", "1", 1));
  expect_ok (store_remove (st, "r"));
  expect_err (-ENOENT, store_stat (st, "r", HEAD, &size));
  expect_err (-ENOENT, store_read (st, "r", buf, 4, 0, HEAD));
  expect_err (-ENOENT, store_xattr_get (st, "r", "xa", buf, sizeof buf));
  expect_err (-ENOENT, store_omap_get (st, "r", "ka", buf, sizeof buf));
  expect_err (-ENOENT, store_remove (st, "r"));
  expect_err (-ENOENT, store_remove (st, "r"));

  /* Recreated, it has none of the old data or metadata. */
  expect_ok (store_write (st, "r", "xy", 2, 10, 0));
  check_object (st, "r", HEAD, "\0\0\0\0\0\0\0\0\0\0xy", 12, "recreated");
  expect_err (-ENODATA, store_xattr_get (st, "r", "xa", buf, sizeof buf));
  expect_err (-ENOENT, store_omap_get (st, "r", "ka", buf, sizeof buf));
  expect_ok (store_omap_list (st, "r", "", 100, count_cb, &n));
  assert_int_equal (n, 0);

  /* Objects holding only metadata can be removed too. */
  expect_ok (store_xattr_set (st, "m", "xa", "1", 1));
  expect_ok (store_remove (st, "m"));
  expect_err (-ENOENT, store_stat (st, "m", HEAD, &size));

  /* A remove by another client is seen at once. */
  expect_ok (store_write_full (st, "p", "p", 1, 0));
  expect_ok (store_remove (peer_open (fx), "p"));
  expect_err (-ENOENT, store_read (st, "p", buf, 1, 0, HEAD));
}

static void
test_large_unaligned (void **state)
{
  FX;
  const size_t big = 4 * MiB;
  uint8_t *exp = malloc (8 * MiB + 4096), *buf = malloc (8 * MiB + 4096);
  uint8_t small[64];
  size_t i;

  assert_non_null (exp);
  assert_non_null (buf);

  /* 4 MiB in one call, read back in one call and in pieces. */
  fill (exp, big, 50);
  expect_ok (store_write (st, "big", exp, big, 0, 0));
  check_object (st, "big", HEAD, exp, big, "4 MiB write");
  for (i = 0; i < big; i += 1 * MiB - 3) {
    size_t n = big - i < 1 * MiB ? big - i : 1 * MiB;

    read_ok (st, "big", buf, n, i, HEAD);
    check_bytes (buf, exp + i, n, "4 MiB read in pieces");
  }
  read_ok (st, "big", buf, big, 1, HEAD);
  check_bytes (buf, exp + 1, big - 1, "4 MiB read at offset 1");
  check_zero (buf + big - 1, 1, "4 MiB read at offset 1");

  /* A second 4 MiB at an odd offset, crossing the first's end. */
  fill (exp + 3 * MiB + 511, big, 51);
  expect_ok (store_write (st, "big", exp + 3 * MiB + 511, big,
                          3 * MiB + 511, 0));
  check_object (st, "big", HEAD, exp, 7 * MiB + 511, "unaligned 4 MiB");

  /* Small unaligned pieces. */
  memset (exp, 0, 3 * 4097);
  fill (exp + 3 * 4097, 12345, 52);
  expect_ok (store_write (st, "u", exp + 3 * 4097, 12345, 3 * 4097, 0));
  check_object (st, "u", HEAD, exp, 3 * 4097 + 12345, "unaligned write");
  read_ok (st, "u", small, 7, 3 * 4097 + 5, HEAD);
  check_bytes (small, exp + 3 * 4097 + 5, 7, "7-byte read");
  for (i = 1; i < 20000; i += 2999) {
    read_ok (st, "u", small, 1, i, HEAD);
    check_bytes (small, exp + i, 1, "1-byte read");
  }
  expect_ok (store_write (st, "u", "Q", 1, 12347, 0));
  exp[12347] = 'Q';
  check_object (st, "u", HEAD, exp, 3 * 4097 + 12345, "1-byte write");

  free (exp);
  free (buf);
}

static void
test_flush (void **state)
{
  FX;
  uint8_t exp[4096];
  int i;

  expect_ok (store_flush (st));
  for (i = 0; i < 8; i++) {
    fill (exp, sizeof exp, 60 + i);
    expect_ok (store_write (st, "fl", exp, sizeof exp, 0, 0));
  }
  expect_ok (store_flush (st));
  check_object (st, "fl", HEAD, exp, sizeof exp, "after flush");
  expect_ok (store_flush (st));

  expect_ok (store_clone (st, &fx->clone));
  expect_ok (store_write (fx->clone, "fl2", exp, 10, 0, 0));
  expect_ok (store_flush (fx->clone));
  check_object (st, "fl2", HEAD, exp, 10, "flush through a clone");
}

/* Writes to more objects than a small fd cache holds (local: files are
 * evicted while dirty), flushes, and reads everything back through
 * another client; then a failing write must surface to its caller. */
static void
test_flush_after_eviction (void **state)
{
  FX;
  struct store *small, *other;
  uint8_t exp[512];
  char oid[32];
  int i;

  setenv ("VBK_LOCAL_MAX_FILES", "4", 1);
  small = peer_open (fx);
  unsetenv ("VBK_LOCAL_MAX_FILES");
  for (i = 0; i < 40; i++) {
    snprintf (oid, sizeof oid, "ev.%d", i);
    fill (exp, sizeof exp, 300 + i);
    expect_ok (store_write (small, oid, exp, sizeof exp, i, 0));
    if (i % 7 == 0)
      expect_ok (store_write (small, oid, exp, sizeof exp, i, 0));
  }
  expect_ok (store_flush (small));
  expect_ok (store_flush (small));
  other = peer_open (fx);
  for (i = 0; i < 40; i++) {
    uint8_t want[512 + 40];
    snprintf (oid, sizeof oid, "ev.%d", i);
    memset (want, 0, sizeof want);
    fill (want + i, sizeof exp, 300 + i);
    check_object (other, oid, HEAD, want, sizeof exp + i,
                  "written through a small fd cache");
  }
  /* A write that fails is reported to its caller, not only at flush. */
  expect_ok (store_fence (st, store_client_id (other), 600));
  {
    uint64_t t0 = mono_ms ();
    int r;
    do {
      vbk_clear_error ();
      r = store_write (other, "ev.0", "x", 1, 0, 0);
      if (r == 0)
        sleep_ms (50);
    } while (r == 0 && mono_ms () - t0 < 3000);
    if (r != -ESHUTDOWN)
      fail_msg ("a fenced client's write: %s, expected -ESHUTDOWN",
                test_errname (r));
    assert_true (vbk_error ()[0] != '\0');
  }
  expect_ok (store_flush (small));
}

/* ---- Asynchronous I/O ------------------------------------------------- */

#define NAIO 64
#define AIO_LEN (60 * KiB)

struct aio_set {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  unsigned done;
  struct aio_op {
    struct aio_set *set;
    int calls;
    ssize_t ret;
  } op[NAIO];
  uint8_t buf[NAIO][AIO_LEN + 100];
};

static struct aio_set *
aio_set_new (void)
{
  struct aio_set *s = calloc (1, sizeof *s);
  int i;

  assert_non_null (s);
  pthread_mutex_init (&s->lock, NULL);
  pthread_cond_init (&s->cond, NULL);
  for (i = 0; i < NAIO; i++)
    s->op[i].set = s;
  return s;
}

static void
aio_set_reset (struct aio_set *s)
{
  int i;

  pthread_mutex_lock (&s->lock);
  s->done = 0;
  for (i = 0; i < NAIO; i++) {
    s->op[i].calls = 0;
    s->op[i].ret = 12345;
  }
  pthread_mutex_unlock (&s->lock);
}

static void
aio_cb (void *arg, ssize_t ret)
{
  struct aio_op *op = arg;
  struct aio_set *s = op->set;

  pthread_mutex_lock (&s->lock);
  op->calls++;
  op->ret = ret;
  s->done++;
  pthread_cond_broadcast (&s->cond);
  pthread_mutex_unlock (&s->lock);
}

/* Waits until N callbacks ran (at most 30 s); returns how many did. */
static unsigned
aio_wait (struct aio_set *s, unsigned n)
{
  struct timespec ts;
  unsigned done;

  clock_gettime (CLOCK_REALTIME, &ts);
  ts.tv_sec += 30;
  pthread_mutex_lock (&s->lock);
  while (s->done < n)
    if (pthread_cond_timedwait (&s->cond, &s->lock, &ts) == ETIMEDOUT)
      break;
  done = s->done;
  pthread_mutex_unlock (&s->lock);
  return done;
}

static void
aio_oid (char *oid, size_t len, int i)
{
  snprintf (oid, len, "aio.%d", i % 4);
}

static uint64_t
aio_off (int i)
{
  return (uint64_t) (i / 4) * 64 * KiB + (i % 3);
}

static void
test_aio (void **state)
{
  FX;
  /* Left allocated if a check fails: callbacks may still be due. */
  struct aio_set *s = aio_set_new ();
  uint8_t *exp = malloc (AIO_LEN);
  char oid[32];
  unsigned n;
  int i, r;

  assert_non_null (exp);

  /* 64 writes in flight, each with its own pattern. */
  aio_set_reset (s);
  for (i = 0; i < NAIO; i++) {
    fill (s->buf[i], AIO_LEN, 100 + i);
    aio_oid (oid, sizeof oid, i);
    r = store_aio_write (st, oid, s->buf[i], AIO_LEN, aio_off (i),
                         i % 8 == 0 ? STORE_WRITE_SYNC : 0, aio_cb,
                         &s->op[i]);
    if (r != 0)
      fail_msg ("store_aio_write #%d: %s [%s]", i, test_errname (r),
                vbk_error ());
  }
  n = aio_wait (s, NAIO);
  if (n != NAIO)
    fail_msg ("%u of %d aio writes completed in 30 s", n, NAIO);
  sleep_ms (50);               /* a second completion would show now */
  for (i = 0; i < NAIO; i++) {
    if (s->op[i].calls != 1)
      fail_msg ("aio write #%d: callback ran %d times", i, s->op[i].calls);
    if (s->op[i].ret != 0)
      fail_msg ("aio write #%d: completed with %zd (%s), expected 0", i,
                s->op[i].ret, test_errname (s->op[i].ret));
  }
  assert_int_equal (s->done, NAIO);

  /* Each reads back, synchronously ... */
  for (i = 0; i < NAIO; i++) {
    uint8_t *buf = malloc (AIO_LEN);

    assert_non_null (buf);
    fill (exp, AIO_LEN, 100 + i);
    aio_oid (oid, sizeof oid, i);
    read_ok (st, oid, buf, AIO_LEN, aio_off (i), HEAD);
    check_bytes (buf, exp, AIO_LEN, "sync read of an aio write");
    free (buf);
  }

  /* ... and with 64 reads in flight, each 100 bytes past its data (the
   * last ones reach past the object's end). */
  aio_set_reset (s);
  for (i = 0; i < NAIO; i++) {
    memset (s->buf[i], 0xa5, AIO_LEN + 100);
    aio_oid (oid, sizeof oid, i);
    r = store_aio_read (st, oid, s->buf[i], AIO_LEN + 100, aio_off (i), HEAD,
                        aio_cb, &s->op[i]);
    if (r != 0)
      fail_msg ("store_aio_read #%d: %s [%s]", i, test_errname (r), vbk_error ());
  }
  n = aio_wait (s, NAIO);
  if (n != NAIO)
    fail_msg ("%u of %d aio reads completed in 30 s", n, NAIO);
  sleep_ms (50);
  for (i = 0; i < NAIO; i++) {
    if (s->op[i].calls != 1)
      fail_msg ("aio read #%d: callback ran %d times", i, s->op[i].calls);
    if (s->op[i].ret != AIO_LEN + 100)
      fail_msg ("aio read #%d: completed with %zd (%s), expected %u", i,
                s->op[i].ret, test_errname (s->op[i].ret), AIO_LEN + 100);
    fill (exp, AIO_LEN, 100 + i);
    check_bytes (s->buf[i], exp, AIO_LEN, "aio read");
    if (i >= NAIO - 4)
      check_zero (s->buf[i] + AIO_LEN, 100, "aio read past the end");
  }

  /* A missing object: -ENOENT, from the call or from the callback. */
  aio_set_reset (s);
  r = store_aio_read (st, "nope", s->buf[0], 10, 0, HEAD, aio_cb, &s->op[0]);
  if (r == 0) {
    if (aio_wait (s, 1) != 1)
      fail_msg ("aio read of a missing object never completed");
    if (s->op[0].ret != -ENOENT)
      fail_msg ("aio read of a missing object: %zd (%s), expected -ENOENT",
                s->op[0].ret, test_errname (s->op[0].ret));
  }
  else if (r != -ENOENT)
    fail_msg ("aio read of a missing object: %d (%s), expected -ENOENT", r,
              test_errname (r));

  /* store_close waits for outstanding aio. */
  {
    struct store *b = peer_open (fx);

    aio_set_reset (s);
    for (i = 0; i < 16; i++) {
      fill (s->buf[i], AIO_LEN, 200 + i);
      snprintf (oid, sizeof oid, "close.%d", i);
      expect_ok (store_aio_write (b, oid, s->buf[i], AIO_LEN, 0, 0, aio_cb,
                                  &s->op[i]));
    }
    peer_close (fx, b);
    pthread_mutex_lock (&s->lock);
    n = s->done;
    pthread_mutex_unlock (&s->lock);
    if (n != 16)
      fail_msg ("store_close returned with %u of 16 aio writes completed",
                n);
    for (i = 0; i < 16; i++) {
      assert_int_equal (s->op[i].ret, 0);
      fill (exp, AIO_LEN, 200 + i);
      snprintf (oid, sizeof oid, "close.%d", i);
      check_object (st, oid, HEAD, exp, AIO_LEN, "aio before close");
    }
  }

  free (exp);
  pthread_mutex_destroy (&s->lock);
  pthread_cond_destroy (&s->cond);
  free (s);
}

/* ---- Xattrs ----------------------------------------------------------- */

static void
test_xattr (void **state)
{
  FX;
  uint8_t buf[64 * KiB + 16], exp[64 * KiB];
  uint64_t size;
  ssize_t r;

  expect_err (-ENOENT, store_xattr_get (st, "x", "k", buf, sizeof buf));
  expect_err (-ENOENT, store_xattr_rm (st, "x", "k"));

  /* Setting one creates an empty object. */
  expect_ok (store_xattr_set (st, "x", "k", "hello", 5));
  expect_ok (store_stat (st, "x", HEAD, &size));
  assert_int_equal (size, 0);

  memset (buf, 0, sizeof buf);
  r = store_xattr_get (st, "x", "k", buf, sizeof buf);
  assert_int_equal (r, 5);
  assert_memory_equal (buf, "hello", 5);

  /* A short buffer truncates; the length is still the full one. */
  memset (buf, '#', 16);
  r = store_xattr_get (st, "x", "k", buf, 3);
  assert_int_equal (r, 5);
  assert_memory_equal (buf, "hel#", 4);
  memset (buf, '#', 16);
  r = store_xattr_get (st, "x", "k", buf, 0);
  assert_int_equal (r, 5);
  assert_int_equal (buf[0], '#');

  expect_err (-ENODATA, store_xattr_get (st, "x", "nope", buf, sizeof buf));
  expect_err (-ENODATA, store_xattr_rm (st, "x", "nope"));

  /* Replace with a shorter value, an empty one, a binary one. */
  expect_ok (store_xattr_set (st, "x", "k", "hi", 2));
  r = store_xattr_get (st, "x", "k", buf, sizeof buf);
  assert_int_equal (r, 2);
  assert_memory_equal (buf, "hi", 2);
  expect_ok (store_xattr_set (st, "x", "empty", "", 0));
  assert_int_equal (store_xattr_get (st, "x", "empty", buf, sizeof buf), 0);
  expect_ok (store_xattr_set (st, "x", "bin", "a\0b\0\377", 5));
  r = store_xattr_get (st, "x", "bin", buf, sizeof buf);
  assert_int_equal (r, 5);
  assert_memory_equal (buf, "a\0b\0\377", 5);

  /* The largest value, 64 KiB. */
  fill (exp, sizeof exp, 70);
  expect_ok (store_xattr_set (st, "x", "big", exp, sizeof exp));
  r = store_xattr_get (st, "x", "big", buf, sizeof buf);
  assert_int_equal (r, 64 * KiB);
  check_bytes (buf, exp, sizeof exp, "64 KiB xattr");

  /* Xattrs do not touch the data. */
  expect_ok (store_write_full (st, "d", "data", 4, 0));
  expect_ok (store_xattr_set (st, "d", "k", "v", 1));
  check_object (st, "d", HEAD, "data", 4, "data beside an xattr");
  expect_ok (store_write_full (st, "d", "other", 5, 0));
  assert_int_equal (store_xattr_get (st, "d", "k", buf, sizeof buf), 1);

  /* Another client sees them. */
  r = store_xattr_get (peer_open (fx), "x", "k", buf, sizeof buf);
  assert_int_equal (r, 2);

  expect_ok (store_xattr_rm (st, "x", "k"));
  expect_err (-ENODATA, store_xattr_get (st, "x", "k", buf, sizeof buf));
  expect_err (-ENODATA, store_xattr_rm (st, "x", "k"));
  assert_int_equal (store_xattr_get (st, "x", "bin", buf, sizeof buf), 5);
}

static void
test_xattr_cas (void **state)
{
  FX;
  char buf[64];

  expect_err (-ENOENT, store_xattr_cas (st, "c", "v", "1", 1, "2", 1));

  expect_ok (store_xattr_set (st, "c", "v", "1", 1));
  expect_ok (store_xattr_cas (st, "c", "v", "1", 1, "2", 1));
  assert_int_equal (store_xattr_get (st, "c", "v", buf, sizeof buf), 1);
  assert_memory_equal (buf, "2", 1);

  /* Mismatch: a different value, a prefix, a longer value, empty. */
  expect_err (-ECANCELED, store_xattr_cas (st, "c", "v", "1", 1, "3", 1));
  expect_err (-ECANCELED, store_xattr_cas (st, "c", "v", "22", 2, "3", 1));
  expect_err (-ECANCELED, store_xattr_cas (st, "c", "v", "", 0, "3", 1));
  assert_int_equal (store_xattr_get (st, "c", "v", buf, sizeof buf), 1);
  assert_memory_equal (buf, "2", 1);

  /* A missing xattr never matches, not even the empty value. */
  expect_err (-ECANCELED, store_xattr_cas (st, "c", "w", "", 0, "x", 1));
  expect_err (-ECANCELED, store_xattr_cas (st, "c", "w", "2", 1, "x", 1));
  expect_err (-ENODATA, store_xattr_get (st, "c", "w", buf, sizeof buf));

  /* Lengths may change; the empty value matches itself. */
  expect_ok (store_xattr_cas (st, "c", "v", "2", 1, "longer value", 12));
  assert_int_equal (store_xattr_get (st, "c", "v", buf, sizeof buf), 12);
  assert_memory_equal (buf, "longer value", 12);
  expect_ok (store_xattr_cas (st, "c", "v", "longer value", 12, "", 0));
  assert_int_equal (store_xattr_get (st, "c", "v", buf, sizeof buf), 0);
  expect_ok (store_xattr_cas (st, "c", "v", "", 0, "z", 1));
  assert_int_equal (store_xattr_get (st, "c", "v", buf, sizeof buf), 1);
}

struct cas_thread {
  struct store *st;
  int done;                    /* successful increments */
  int retries;
  int err;                     /* an unexpected return, or 0 */
  char what[128];
};

static void *
cas_run (void *arg)
{
  struct cas_thread *t = arg;
  uint64_t deadline = mono_ms () + 40000;

  while (t->done < 200) {
    char old[32], new[32];
    ssize_t n;
    int r;

    if (mono_ms () > deadline) {
      t->err = -ETIMEDOUT;
      snprintf (t->what, sizeof t->what, "gave up after 40 s");
      break;
    }
    n = store_xattr_get (t->st, "ctr", "n", old, sizeof old - 1);
    if (n < 0 || n >= (ssize_t) sizeof old) {
      t->err = n < 0 ? (int) n : -EOVERFLOW;
      snprintf (t->what, sizeof t->what, "xattr_get: %s", vbk_error ());
      break;
    }
    old[n] = '\0';
    snprintf (new, sizeof new, "%ld", strtol (old, NULL, 10) + 1);
    r = store_xattr_cas (t->st, "ctr", "n", old, n, new, strlen (new));
    if (r == 0)
      t->done++;
    else if (r == -ECANCELED)
      t->retries++;
    else {
      t->err = r;
      snprintf (t->what, sizeof t->what, "xattr_cas: %s", vbk_error ());
      break;
    }
  }
  return NULL;
}

static void
test_xattr_cas_concurrent (void **state)
{
  FX;
  struct cas_thread t[2];
  pthread_t th[2];
  char buf[32];
  ssize_t n;
  int i;

  expect_ok (store_xattr_set (st, "ctr", "n", "0", 1));
  memset (t, 0, sizeof t);
  t[0].st = st;
  t[1].st = peer_open (fx);
  for (i = 0; i < 2; i++)
    assert_int_equal (pthread_create (&th[i], NULL, cas_run, &t[i]), 0);
  for (i = 0; i < 2; i++)
    pthread_join (th[i], NULL);
  for (i = 0; i < 2; i++) {
    if (t[i].err)
      fail_msg ("CAS thread %d: %s (%s)", i, test_errname (t[i].err), t[i].what);
    assert_int_equal (t[i].done, 200);
  }
  n = store_xattr_get (st, "ctr", "n", buf, sizeof buf - 1);
  assert_true (n > 0);
  buf[n] = '\0';
  if (strcmp (buf, "400") != 0)
    fail_msg ("counter is %s after 2 x 200 CAS increments (%d + %d "
              "retries), expected 400", buf, t[0].retries, t[1].retries);
}

/* ---- Omap ------------------------------------------------------------- */

struct omap_seen {
  int n;
  int stop_at;                 /* return 42 on this call (1-based) */
  char keys[700][32];
  char vals[700][48];
  size_t lens[700];
};

static int
omap_cb (void *arg, const char *key, const void *val, size_t len)
{
  struct omap_seen *s = arg;

  if (s->n < 700) {
    snprintf (s->keys[s->n], sizeof s->keys[0], "%s", key);
    memcpy (s->vals[s->n], val, len < sizeof s->vals[0] ? len
            : sizeof s->vals[0]);
    s->lens[s->n] = len;
  }
  s->n++;
  return s->stop_at && s->n == s->stop_at ? 42 : 0;
}

static int
cmp_keys (const void *a, const void *b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

static void
omap_val (char *buf, size_t len, const char *key)
{
  snprintf (buf, len, "v(%s)", key);
}

static void
test_omap (void **state)
{
  FX;
  /* Inserted in this order; strcmp orders bytes as unsigned char. */
  const char *keys[] = { "b", "a", "ab", "\xc3\xa9t\xc3\xa9", "B", "0",
                         "a b", "~", "aa\x01", "zz", "\x7f", "a" };
  const size_t nkeys = sizeof keys / sizeof keys[0] - 1; /* "a" twice */
  const char *sorted[sizeof keys / sizeof keys[0]];
  struct omap_seen *s = calloc (1, sizeof *s);
  static uint8_t big[64 * KiB], buf[64 * KiB + 16];
  char val[48];
  uint64_t size;
  size_t i;
  ssize_t r;

  assert_non_null (s);
  expect_err (-ENOENT, store_omap_get (st, "o", "a", buf, sizeof buf));
  expect_err (-ENOENT, store_omap_rm (st, "o", "a"));
  expect_err (-ENOENT, store_omap_list (st, "o", "", 100, omap_cb, s));
  assert_int_equal (s->n, 0);

  expect_ok (store_omap_set (st, "o", "a", "first", 5));
  expect_ok (store_stat (st, "o", HEAD, &size));
  assert_int_equal (size, 0);
  for (i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    omap_val (val, sizeof val, keys[i]);
    expect_ok (store_omap_set (st, "o", keys[i], val, strlen (val)));
  }
  expect_ok (store_omap_set (st, "o", "empty", "", 0));

  for (i = 0; i < nkeys; i++)
    sorted[i] = keys[i];
  sorted[nkeys] = "empty";
  qsort (sorted, nkeys + 1, sizeof sorted[0], cmp_keys);

  /* get: the value, its length; a short buffer truncates. */
  r = store_omap_get (st, "o", "a", buf, sizeof buf);
  assert_int_equal (r, 4);
  assert_memory_equal (buf, "v(a)", 4);
  memset (buf, '#', 8);
  r = store_omap_get (st, "o", "ab", buf, 2);
  assert_int_equal (r, 5);
  assert_memory_equal (buf, "v(###", 5);
  assert_int_equal (store_omap_get (st, "o", "empty", buf, sizeof buf), 0);
  expect_err (-ENOENT, store_omap_get (st, "o", "nope", buf, sizeof buf));
  expect_err (-ENOENT, store_omap_rm (st, "o", "nope"));

  /* The whole list, in byte order, with the values. */
  expect_ok (store_omap_list (st, "o", "", 1000, omap_cb, s));
  assert_int_equal (s->n, nkeys + 1);
  for (i = 0; i <= nkeys; i++) {
    assert_string_equal (s->keys[i], sorted[i]);
    if (strcmp (sorted[i], "empty") == 0)
      assert_int_equal (s->lens[i], 0);
    else {
      omap_val (val, sizeof val, sorted[i]);
      assert_int_equal (s->lens[i], strlen (val));
      assert_memory_equal (s->vals[i], val, strlen (val));
    }
  }

  /* AFTER: strictly greater, present or not. */
  memset (s, 0, sizeof *s);
  expect_ok (store_omap_list (st, "o", "a", 1000, omap_cb, s));
  assert_string_equal (s->keys[0], "a b");
  memset (s, 0, sizeof *s);
  expect_ok (store_omap_list (st, "o", "aa", 1000, omap_cb, s));
  assert_string_equal (s->keys[0], "aa\x01");
  memset (s, 0, sizeof *s);
  expect_ok (store_omap_list (st, "o", "\xff", 1000, omap_cb, s));
  assert_int_equal (s->n, 0);

  /* MAX, and paging with it. */
  memset (s, 0, sizeof *s);
  expect_ok (store_omap_list (st, "o", "", 3, omap_cb, s));
  assert_int_equal (s->n, 3);
  for (i = 0; i < 3; i++)
    assert_string_equal (s->keys[i], sorted[i]);
  {
    char after[32] = "";
    size_t got = 0;

    for (;;) {
      int before;

      memset (s, 0, sizeof *s);
      expect_ok (store_omap_list (st, "o", after, 2, omap_cb, s));
      assert_true (s->n <= 2);
      before = s->n;
      for (i = 0; i < (size_t) s->n; i++)
        assert_string_equal (s->keys[i], sorted[got + i]);
      got += s->n;
      if (before == 0)
        break;
      snprintf (after, sizeof after, "%s", s->keys[s->n - 1]);
    }
    assert_int_equal (got, nkeys + 1);
  }

  /* A non-zero return from the callback stops the walk and is returned. */
  memset (s, 0, sizeof *s);
  s->stop_at = 3;
  assert_int_equal (store_omap_list (st, "o", "", 1000, omap_cb, s), 42);
  assert_int_equal (s->n, 3);

  /* Overwrite, remove. */
  expect_ok (store_omap_set (st, "o", "b", "new", 3));
  r = store_omap_get (st, "o", "b", buf, sizeof buf);
  assert_int_equal (r, 3);
  assert_memory_equal (buf, "new", 3);
  expect_ok (store_omap_rm (st, "o", "b"));
  expect_err (-ENOENT, store_omap_get (st, "o", "b", buf, sizeof buf));
  expect_err (-ENOENT, store_omap_rm (st, "o", "b"));
  memset (s, 0, sizeof *s);
  expect_ok (store_omap_list (st, "o", "", 1000, omap_cb, s));
  assert_int_equal (s->n, nkeys);

  /* The largest value. */
  fill (big, sizeof big, 80);
  expect_ok (store_omap_set (st, "o", "big", big, sizeof big));
  r = store_omap_get (st, "o", "big", buf, sizeof buf);
  assert_int_equal (r, 64 * KiB);
  check_bytes (buf, big, sizeof big, "64 KiB omap value");

  /* Omap beside data: neither touches the other. */
  expect_ok (store_write_full (st, "d", "data", 4, 0));
  memset (s, 0, sizeof *s);
  expect_ok (store_omap_list (st, "d", "", 1000, omap_cb, s));
  assert_int_equal (s->n, 0);
  expect_ok (store_omap_set (st, "d", "k", "v", 1));
  check_object (st, "d", HEAD, "data", 4, "data beside omap");

  free (s);
}

/* Sets keys k00000.. with values equal to the key, N/4 per thread. */
#define OMAP_MANY 320

struct omap_filler {
  struct store *st;
  int first;
  int err;
};

static void *
omap_fill (void *arg)
{
  struct omap_filler *f = arg;
  char key[32];
  int i, r;

  /* Out of order: OMAP_MANY / 4 and 7 are coprime. */
  for (i = 0; i < OMAP_MANY / 4 && !f->err; i++) {
    snprintf (key, sizeof key, "k%05d",
              f->first + (i * 7) % (OMAP_MANY / 4) * 4);
    r = store_omap_set (f->st, "many", key, key, strlen (key));
    if (r < 0)
      f->err = r;
  }
  return NULL;
}

/* More keys than a backend fetches in one go, set from four threads
 * at once through one handle. */
/* store_read_ranges: many ranges of one object in one call, each as
 * store_read reads it. */
static void
test_read_ranges (void **state)
{
  FX;
  static uint8_t data[300000], bufs[300][64];
  struct store_range rg[300];
  size_t i;

  fill (data, sizeof data, 7);
  expect_ok (store_write_full (st, "r", data, sizeof data, 0));
  /* 300 ranges far apart, in ascending order, the last past the end. */
  for (i = 0; i < 300; i++) {
    rg[i].off = i * 1000 + i % 7;
    rg[i].len = 1 + i % 64;
    rg[i].buf = bufs[i];
    memset (bufs[i], '#', sizeof bufs[i]);
  }
  rg[299].off = sizeof data - 5;
  rg[299].len = 20;
  expect_ok (store_read_ranges (st, "r", HEAD, rg, 300));
  for (i = 0; i < 299; i++) {
    assert_memory_equal (bufs[i], data + rg[i].off, rg[i].len);
    if (rg[i].len < sizeof bufs[i])
      assert_int_equal (bufs[i][rg[i].len], '#');   /* nothing more */
  }
  assert_memory_equal (bufs[299], data + sizeof data - 5, 5);
  for (i = 5; i < 20; i++)
    assert_int_equal (bufs[299][i], 0);
  /* A hole reads as zeros. */
  expect_ok (store_write (st, "r", "z", 1, sizeof data + 5000, 0));
  rg[0].off = sizeof data + 10;
  rg[0].len = 8;
  expect_ok (store_read_ranges (st, "r", HEAD, rg, 1));
  assert_memory_equal (bufs[0], "\0\0\0\0\0\0\0\0", 8);

  expect_err (-ENOENT, store_read_ranges (st, "nope", HEAD, rg, 2));
  expect_ok (store_read_ranges (st, "nope", HEAD, rg, 0));
  expect_err (-EINVAL, store_read_ranges (st, "", HEAD, rg, 1));
}

/* store_meta_set: xattrs and omap keys of one object in one call, in
 * order; the object is created if needed. */
static void
test_meta_set (void **state)
{
  FX;
  const struct store_meta_set first[] = {
    { false, "seq", "7", 1 },
    { true, "snap.a", "id=7", 4 },
    { true, "empty", "", 0 },
  };
  const struct store_meta_set second[] = {
    { false, "seq", "12", 2 },
    { true, "snap.b", "id=12", 5 },
    { false, "seq", "13", 2 },          /* the later one wins */
  };
  struct omap_seen *s = calloc (1, sizeof *s);
  char buf[32];
  uint64_t size;

  assert_non_null (s);
  expect_ok (store_meta_set (st, "m", first, 3));
  expect_ok (store_stat (st, "m", HEAD, &size));
  assert_int_equal (size, 0);
  assert_int_equal (store_xattr_get (st, "m", "seq", buf, sizeof buf), 1);
  assert_memory_equal (buf, "7", 1);
  assert_int_equal (store_omap_get (st, "m", "snap.a", buf, sizeof buf), 4);
  assert_memory_equal (buf, "id=7", 4);
  assert_int_equal (store_omap_get (st, "m", "empty", buf, sizeof buf), 0);

  expect_ok (store_meta_set (st, "m", second, 3));
  assert_int_equal (store_xattr_get (st, "m", "seq", buf, sizeof buf), 2);
  assert_memory_equal (buf, "13", 2);
  assert_int_equal (store_omap_get (st, "m", "snap.a", buf, sizeof buf), 4);
  assert_int_equal (store_omap_get (st, "m", "snap.b", buf, sizeof buf), 5);
  assert_memory_equal (buf, "id=12", 5);
  expect_ok (store_omap_list (st, "m", "", 100, omap_cb, s));
  assert_int_equal (s->n, 3);
  free (s);

  /* Names are checked like those of the single calls. */
  expect_err (-EINVAL, store_meta_set (st, "", first, 1));
}

/* Many keys in one store_meta_set (the backup registry's batches): new
 * and overwritten keys, an empty value, the values read back one by one
 * and listed; a value over 64 KiB refuses the whole call and sets
 * nothing. */
static void
test_meta_set_many (void **state)
{
  FX;
  static uint8_t big[64 * KiB + 1];
  struct store_meta_set sets[40];
  size_t i;
  char kb[40][16], vb[40][32], buf[64];
  struct omap_seen *s = calloc (1, sizeof *s);
  ssize_t r;

  assert_non_null (s);
  expect_ok (store_meta_set (st, "sm", sets, 0));
  expect_ok (store_omap_set (st, "sm", "k07", "old", 3));
  for (i = 0; i < 40; i++) {
    snprintf (kb[i], sizeof kb[i], "k%02zu", i);
    snprintf (vb[i], sizeof vb[i], "value of %zu", i);
    sets[i] = (struct store_meta_set) { true, kb[i], vb[i],
                                        i == 13 ? 0 : strlen (vb[i]) };
  }
  expect_ok (store_meta_set (st, "sm", sets, 40));
  for (i = 0; i < 40; i++) {
    r = store_omap_get (st, "sm", kb[i], buf, sizeof buf);
    assert_int_equal (r, (ssize_t) sets[i].len);
    assert_memory_equal (buf, vb[i], sets[i].len);
  }
  expect_ok (store_omap_list (st, "sm", "", 1000, omap_cb, s));
  assert_int_equal (s->n, 40);
  for (i = 0; i < 40; i++)
    assert_string_equal (s->keys[i], kb[i]);

  /* Too large: nothing of the call is set. */
  sets[0] = (struct store_meta_set) { true, "n1", "x", 1 };
  sets[1] = (struct store_meta_set) { true, "n2", big, sizeof big };
  expect_err (-E2BIG, store_meta_set (st, "sm", sets, 2));
  expect_err (-ENOENT, store_omap_get (st, "sm", "n1", buf, sizeof buf));
  expect_err (-ENOENT, store_omap_get (st, "sm", "n2", buf, sizeof buf));
  expect_err (-EINVAL, store_meta_set (st, "", sets, 1));
  free (s);
}

static void
test_omap_many (void **state)
{
  FX;
  struct omap_seen *s = calloc (1, sizeof *s);
  struct omap_filler f[4];
  pthread_t th[4];
  char key[32], after[32] = "";
  int i, got = 0;

  assert_non_null (s);
  for (i = 0; i < 4; i++) {
    f[i].st = st;
    f[i].first = i;
    f[i].err = 0;
    assert_int_equal (pthread_create (&th[i], NULL, omap_fill, &f[i]), 0);
  }
  for (i = 0; i < 4; i++)
    pthread_join (th[i], NULL);
  for (i = 0; i < 4; i++)
    if (f[i].err)
      fail_msg ("omap_set from thread %d: %s", i, test_errname (f[i].err));

  expect_ok (store_omap_list (st, "many", "", 100000, omap_cb, s));
  assert_int_equal (s->n, OMAP_MANY);
  for (i = 0; i < OMAP_MANY; i++) {
    snprintf (key, sizeof key, "k%05d", i);
    assert_string_equal (s->keys[i], key);
    assert_int_equal (s->lens[i], strlen (key));
    assert_memory_equal (s->vals[i], key, strlen (key));
  }
  do {
    memset (s, 0, sizeof *s);
    expect_ok (store_omap_list (st, "many", after, 64, omap_cb, s));
    assert_true (s->n <= 64);
    for (i = 0; i < s->n; i++) {
      snprintf (key, sizeof key, "k%05d", got + i);
      assert_string_equal (s->keys[i], key);
    }
    got += s->n;
    if (s->n)
      snprintf (after, sizeof after, "%s", s->keys[s->n - 1]);
  } while (s->n == 64);
  assert_int_equal (got, OMAP_MANY);
  free (s);
}

/* ---- Locks ------------------------------------------------------------ */

static void
test_lock_basic (void **state)
{
  FX;
  struct store *b = peer_open (fx);
  struct store_lock_info info;

  /* Nobody holds it; the object need not exist. */
  expect_err (-ENOENT, store_lock_get (st, "lk", "L", &info));
  expect_err (-ENOENT, store_unlock (st, "lk", "L", "ca"));

  expect_ok (store_lock (st, "lk", "L", "ca", "held by A", 0, 0));
  expect_err (-EEXIST, store_lock (st, "lk", "L", "ca", "held by A", 0, 0));
  expect_ok (store_lock (st, "lk", "L", "ca", "held by A", 0,
                         STORE_LOCK_RENEW));

  expect_ok (store_lock_get (st, "lk", "L", &info));
  assert_string_equal (info.client, store_client_id (st));
  assert_string_equal (info.cookie, "ca");
  assert_string_equal (info.desc, "held by A");
  assert_int_equal (info.expires_ms, 0);
  /* The other client sees the same. */
  expect_ok (store_lock_get (b, "lk", "L", &info));
  assert_string_equal (info.client, store_client_id (st));
  assert_string_equal (info.cookie, "ca");

  /* The other client: busy with any cookie; cannot unlock or renew. */
  expect_err (-EBUSY, store_lock (b, "lk", "L", "cb", "B", 0, 0));
  expect_err (-EBUSY, store_lock (b, "lk", "L", "ca", "B", 0, 0));
  expect_err (-ENOENT, store_unlock (b, "lk", "L", "ca"));
  expect_err (-ENOENT, store_unlock (st, "lk", "L", "wrong-cookie"));

  /* Other names and objects are other locks. */
  expect_ok (store_lock (b, "lk", "L2", "cb", "B", 0, 0));
  expect_ok (store_lock (b, "lk2", "L", "cb", "B", 0, 0));
  expect_ok (store_lock_get (st, "lk2", "L", &info));
  assert_string_equal (info.client, store_client_id (b));
  assert_string_equal (info.cookie, "cb");
  assert_string_equal (info.desc, "B");

  expect_ok (store_unlock (st, "lk", "L", "ca"));
  expect_err (-ENOENT, store_unlock (st, "lk", "L", "ca"));
  expect_err (-ENOENT, store_lock_get (st, "lk", "L", &info));
  expect_err (-ENOENT, store_lock (st, "lk", "L", "ca", "", 0,
                                   STORE_LOCK_RENEW));

  /* Now free for B. */
  expect_ok (store_lock (b, "lk", "L", "cb", "B again", 0, 0));
  expect_err (-EBUSY, store_lock (st, "lk", "L", "ca", "A", 0, 0));
  expect_ok (store_lock_get (st, "lk", "L", &info));
  assert_string_equal (info.client, store_client_id (b));
  assert_string_equal (info.desc, "B again");
  expect_ok (store_unlock (b, "lk", "L", "cb"));
  expect_ok (store_unlock (b, "lk", "L2", "cb"));
  expect_ok (store_unlock (b, "lk2", "L", "cb"));
}

/* Four clients take and release one lock as fast as they can: never two
 * holders at once (a lock file removed on release while another client
 * waits on it must not let that client in beside a third), and on the
 * local backend no lock file is left once nobody holds a lock. */
struct contender {
  struct store *st;
  _Atomic int *inside;
  _Atomic int *overlaps;
  int rounds, got;
};

static void *
contend (void *arg)
{
  struct contender *c = arg;
  char cookie[32];
  int i, e;

  snprintf (cookie, sizeof cookie, "c%p", (void *) c);
  for (i = 0; i < c->rounds; i++) {
    e = store_lock (c->st, "lkc", "L", cookie, "contender", 60000, 0);
    if (e == -EBUSY)
      continue;
    if (e < 0)
      return (void *) (intptr_t) e;
    if ((*c->inside)++ != 0)
      (*c->overlaps)++;
    c->got++;
    usleep (20);
    (*c->inside)--;
    if ((e = store_unlock (c->st, "lkc", "L", cookie)) < 0)
      return (void *) (intptr_t) e;
  }
  return NULL;
}

static void
test_lock_contention (void **state)
{
  FX;
  struct contender c[4];
  pthread_t t[4];
  _Atomic int inside = 0, overlaps = 0;
  void *ret;
  int i, got = 0;

  for (i = 0; i < 4; i++) {
    c[i] = (struct contender) { i ? peer_open (fx) : st, &inside, &overlaps,
                                strcmp (store_backend (st), "rados") == 0
                                ? 100 : 2000, 0 };
    assert_int_equal (pthread_create (&t[i], NULL, contend, &c[i]), 0);
  }
  for (i = 0; i < 4; i++) {
    pthread_join (t[i], &ret);
    assert_int_equal ((int) (intptr_t) ret, 0);
    got += c[i].got;
  }
  assert_int_equal (overlaps, 0);
  assert_true (got > 0);
  if (strncmp (fx->uri, "local:", 6) == 0) {
    char path[4200];
    struct dirent *de;
    DIR *d;
    int n = 0;

    /* A lock taken, one released, one asked about: only the held one
     * has a file. */
    expect_ok (store_lock (st, "lkh", "L", "c", "held", 0, 0));
    expect_ok (store_lock (st, "lkr", "L", "c", "released", 0, 0));
    expect_ok (store_unlock (st, "lkr", "L", "c"));
    expect_err (-ENOENT, store_unlock (st, "lkn", "L", "c"));
    expect_err (-ENOENT, store_lock (st, "lkn", "L", "c", "", 0,
                                     STORE_LOCK_RENEW));
    snprintf (path, sizeof path, "%s/lock", fx->uri + 6);
    assert_non_null (d = opendir (path));
    while ((de = readdir (d)) != NULL)
      if (de->d_name[0] != '.') {
        assert_string_equal (de->d_name, "lkh.L");
        n++;
      }
    closedir (d);
    assert_int_equal (n, 1);
    expect_ok (store_unlock (st, "lkh", "L", "c"));
  }
}

static void
test_lock_expiry (void **state)
{
  FX;
  struct store *b = peer_open (fx);
  struct store_lock_info info;
  uint64_t w0, w1, t0, took = 0;
  int r;

  /* Three locks of 1.5 s: "e" to be taken over, "e2" to lapse, "rn" to
   * be renewed. */
  w0 = wall_ms ();
  t0 = mono_ms ();
  expect_ok (store_lock (st, "e", "L", "ca", "A", 1500, 0));
  expect_ok (store_lock (st, "e2", "L", "ca", "A", 1500, 0));
  expect_ok (store_lock (st, "rn", "L", "ca", "A", 1500, 0));
  w1 = wall_ms ();

  expect_ok (store_lock_get (b, "e", "L", &info));
  assert_string_equal (info.client, store_client_id (st));
  assert_string_equal (info.cookie, "ca");
  assert_string_equal (info.desc, "A");
  if (info.expires_ms + 500 < w0 + 1500 || info.expires_ms > w1 + 1500 + 1000)
    fail_msg ("lock of 1500 ms taken at %" PRIu64 "..%" PRIu64 " ms: "
              "expires_ms %" PRIu64 " (%+" PRId64 " ms)", w0, w1,
              info.expires_ms, (int64_t) (info.expires_ms - w0));
  expect_err (-EBUSY, store_lock (b, "e", "L", "cb", "B", 0, 0));

  /* At 1 s, renew "rn" for another 1.5 s. */
  if (mono_ms () - t0 < 1000)
    sleep_ms (1000 - (unsigned) (mono_ms () - t0));
  expect_ok (store_lock (st, "rn", "L", "ca", "A", 1500, STORE_LOCK_RENEW));

  /* B polls for "e" until the lock runs out. */
  for (;;) {
    r = store_lock (b, "e", "L", "cb", "B", 0, 0);
    took = mono_ms () - t0;
    if (r == 0 || took > 5000)
      break;
    if (r != -EBUSY)
      fail_msg ("store_lock by B while A's lock runs out: %s [%s]",
                test_errname (r), vbk_error ());
    sleep_ms (50);
  }
  if (r != 0)
    fail_msg ("A's lock of 1500 ms still held after %" PRIu64 " ms", took);
  if (took < 1400)
    fail_msg ("A's lock of 1500 ms was gone after %" PRIu64 " ms", took);

  /* The lapsed one is nobody's; the renewed one is still A's.  "e2" was
   * taken after "e" (a synced write later, under a sanitizer tens of ms):
   * B may have found "e" free before "e2" ran out, so wait until every
   * lock taken by w1 has. */
  while (wall_ms () < w1 + 1500 + 100)
    sleep_ms (20);
  expect_err (-ENOENT, store_lock_get (b, "e2", "L", &info));
  if (mono_ms () - t0 < 2300)
    expect_err (-EBUSY, store_lock (b, "rn", "L", "cb", "B", 0, 0));
  else
    print_message ("warning: too slow to check the renewed lock\n");

  /* The old holder learns it lost them. */
  expect_err (-ENOENT, store_lock (st, "e", "L", "ca", "A", 1500,
                                   STORE_LOCK_RENEW));
  expect_err (-ENOENT, store_lock (st, "e2", "L", "ca", "A", 1500,
                                   STORE_LOCK_RENEW));
  expect_err (-EBUSY, store_lock (st, "e", "L", "ca", "A", 0, 0));
  expect_err (-ENOENT, store_unlock (st, "e", "L", "ca"));
  expect_ok (store_lock_get (st, "e", "L", &info));
  assert_string_equal (info.client, store_client_id (b));
  assert_string_equal (info.cookie, "cb");
  assert_int_equal (info.expires_ms, 0);
  expect_ok (store_unlock (b, "e", "L", "cb"));
}

static void
test_lock_break (void **state)
{
  FX;
  struct store *b = peer_open (fx);
  struct store_lock_info info;
  const char *ida = store_client_id (st);

  expect_err (-ENOENT, store_lock_break (b, "bk", "L", ida, "ca"));

  expect_ok (store_lock (st, "bk", "L", "ca", "A", 0, 0));
  expect_err (-ENOENT, store_lock_break (b, "bk", "L", ida, "wrong"));
  expect_err (-ENOENT, store_lock_break (b, "bk", "L", store_client_id (b),
                                         "ca"));
  expect_err (-ENOENT, store_lock_break (b, "bk", "other", ida, "ca"));
  expect_ok (store_lock_get (b, "bk", "L", &info));
  assert_string_equal (info.client, ida);

  expect_ok (store_lock_break (b, "bk", "L", ida, "ca"));
  expect_err (-ENOENT, store_lock_get (b, "bk", "L", &info));
  expect_err (-ENOENT, store_lock_break (b, "bk", "L", ida, "ca"));
  expect_ok (store_lock (b, "bk", "L", "cb", "B", 0, 0));

  /* The broken holder has lost it. */
  expect_err (-ENOENT, store_lock (st, "bk", "L", "ca", "A", 0,
                                   STORE_LOCK_RENEW));
  expect_err (-ENOENT, store_unlock (st, "bk", "L", "ca"));
  expect_err (-EBUSY, store_lock (st, "bk", "L", "ca", "A", 0, 0));

  /* Breaking with the holder's id as lock_get reports it. */
  expect_ok (store_lock_get (st, "bk", "L", &info));
  expect_ok (store_lock_break (st, "bk", "L", info.client, info.cookie));
  expect_ok (store_lock (st, "bk", "L", "ca", "A", 0, 0));
  expect_err (-ENOENT, store_unlock (b, "bk", "L", "cb"));
}

/* ---- Watch / notify --------------------------------------------------- */

/* Finds the reply of CLIENT in R; fails if absent. */
static const struct store_notify_reply *
find_reply (const struct store_notify_reply *r, size_t n, const char *client)
{
  size_t i;

  for (i = 0; i < n; i++)
    if (strcmp (r[i].client, client) == 0)
      return &r[i];
  fail_msg ("no reply from client '%s' among %zu", client, n);
  return NULL;
}

static void
check_reply (const struct store_notify_reply *r, size_t n, const char *client,
             const char *data)
{
  const struct store_notify_reply *x = find_reply (r, n, client);

  if (x->len != strlen (data) || memcmp (x->data, data, x->len) != 0)
    fail_msg ("reply from %s: '%.*s' (%zu bytes), expected '%s'", client,
              (int) x->len, x->data ? (const char *) x->data : "", x->len,
              data);
}

struct notify_result {
  int r;
  size_t n, to;
  struct store_notify_reply *rep;
};

static void
notify_ok (struct store *st, const char *oid, const char *payload,
           uint32_t timeout_ms, size_t want_replies, size_t want_timed_out,
           struct notify_result *res)
{
  res->rep = NULL;
  res->n = res->to = 999;
  res->r = store_notify (st, oid, payload, strlen (payload), timeout_ms,
                         &res->rep, &res->n, &res->to);
  if (res->r != 0)
    fail_msg ("store_notify (%s, '%s'): %s [%s]", oid, payload,
              test_errname (res->r), vbk_error ());
  if (res->n != want_replies || res->to != want_timed_out)
    fail_msg ("store_notify (%s, '%s'): %zu replies, %zu timed out; "
              "expected %zu and %zu", oid, payload, res->n, res->to,
              want_replies, want_timed_out);
  if (res->n > 0)
    assert_non_null (res->rep);
}

static void
test_watch_notify (void **state)
{
  FX;
  struct store *b = peer_open (fx), *c = peer_open (fx);
  const char *ida = store_client_id (st), *idb = store_client_id (b),
    *idc = store_client_id (c);
  struct watcher *wa, *wb, *wc;
  struct notify_result res;
  uint64_t t0, took;

  /* No watchers. */
  expect_err (-ENOENT, store_notify (st, "nope", "x", 1, 1000, &res.rep,
                                     &res.n, &res.to));
  expect_ok (store_write_full (st, "w", "w", 1, 0));
  notify_ok (st, "w", "nobody", 1000, 0, 0, &res);
  store_notify_replies_free (res.rep, res.n);

  /* Two watchers on two other clients. */
  wb = watch_add (fx, 0, b, "w", "B");
  wc = watch_add (fx, 1, c, "w", "C");
  notify_ok (st, "w", "ping", 5000, 2, 0, &res);
  check_reply (res.rep, res.n, idb, "B:ping");
  check_reply (res.rep, res.n, idc, "C:ping");
  store_notify_replies_free (res.rep, res.n);
  assert_int_equal (watcher_get (wb, &wb->calls), 1);
  assert_int_equal (watcher_get (wc, &wc->calls), 1);
  assert_int_equal (wb->payload_len, 4);
  assert_memory_equal (wb->payload, "ping", 4);

  /* An empty payload; a watcher that sets no reply still answers. */
  watcher_set (wc, &wc->no_reply, 1);
  notify_ok (b, "w", "", 5000, 2, 0, &res);
  check_reply (res.rep, res.n, idb, "B:");
  check_reply (res.rep, res.n, idc, "");
  store_notify_replies_free (res.rep, res.n);
  watcher_set (wc, &wc->no_reply, 0);
  pthread_mutex_lock (&wb->lock);
  assert_int_equal (wb->payload_len, 0);
  pthread_mutex_unlock (&wb->lock);

  /* The notifier may watch too. */
  wa = watch_add (fx, 2, st, "w", "A");
  notify_ok (st, "w", "self", 5000, 3, 0, &res);
  check_reply (res.rep, res.n, ida, "A:self");
  store_notify_replies_free (res.rep, res.n);
  watch_del (fx, 2);
  assert_int_equal (watcher_get (wa, &wa->calls), 1);

  /* A watcher slower than the timeout counts in timed_out, not in the
   * replies, and notify returns at the timeout, not when it answers. */
  watcher_set (wc, &wc->sleep_ms, 2500);
  t0 = mono_ms ();
  notify_ok (st, "w", "slow", 700, 1, 1, &res);
  took = mono_ms () - t0;
  check_reply (res.rep, res.n, idb, "B:slow");
  store_notify_replies_free (res.rep, res.n);
  if (took >= 2300)
    fail_msg ("notify with a timeout of 700 ms returned after %" PRIu64
              " ms", took);
  /* Let the slow callback finish; its late answer must not disturb the
   * next notify. */
  watcher_set (wc, &wc->sleep_ms, 0);
  t0 = mono_ms ();
  while ((watcher_get (wc, &wc->running) || watcher_get (wc, &wc->calls) < 4)
         && mono_ms () - t0 < 5000)
    sleep_ms (20);
  assert_int_equal (watcher_get (wc, &wc->running), 0);
  notify_ok (st, "w", "after", 5000, 2, 0, &res);
  check_reply (res.rep, res.n, idb, "B:after");
  check_reply (res.rep, res.n, idc, "C:after");
  store_notify_replies_free (res.rep, res.n);

  /* Unwatch stops callbacks. */
  watch_del (fx, 0);
  notify_ok (st, "w", "one", 5000, 1, 0, &res);
  check_reply (res.rep, res.n, idc, "C:one");
  store_notify_replies_free (res.rep, res.n);
  assert_int_equal (watcher_get (wb, &wb->calls), 5);
  watch_del (fx, 1);
  notify_ok (st, "w", "none", 2000, 0, 0, &res);
  store_notify_replies_free (res.rep, res.n);
  assert_int_equal (watcher_get (wb, &wb->calls), 5);
  assert_int_equal (watcher_get (wc, &wc->calls), 6);
  assert_int_equal (watcher_get (wb, &wb->errs), 0);
  assert_int_equal (watcher_get (wc, &wc->errs), 0);
}

struct notify_thread {
  struct store *st;
  struct notify_result res;
};

static void *
notify_run (void *arg)
{
  struct notify_thread *t = arg;

  t->res.r = store_notify (t->st, "w", "bg", 2, 3000, &t->res.rep,
                           &t->res.n, &t->res.to);
  return NULL;
}

/* store_unwatch returns only when no callback runs or will run. */
static void
test_unwatch_waits (void **state)
{
  FX;
  struct store *b = peer_open (fx);
  struct notify_thread *t = calloc (1, sizeof *t);
  struct watcher *wb;
  pthread_t th;
  uint64_t t0;

  assert_non_null (t);
  expect_ok (store_write_full (st, "w", "w", 1, 0));
  wb = watch_add (fx, 0, b, "w", "B");
  watcher_set (wb, &wb->sleep_ms, 1000);
  t->st = st;
  assert_int_equal (pthread_create (&th, NULL, notify_run, t), 0);
  t0 = mono_ms ();
  while (watcher_get (wb, &wb->running) == 0 && mono_ms () - t0 < 5000)
    sleep_ms (5);
  if (watcher_get (wb, &wb->running) == 0) {
    pthread_join (th, NULL);
    fail_msg ("the watch callback did not start within 5 s");
  }
  watch_del (fx, 0);
  assert_int_equal (watcher_get (wb, &wb->running), 0);
  assert_int_equal (watcher_get (wb, &wb->calls), 1);
  pthread_join (th, NULL);
  if (t->res.r != 0)
    fail_msg ("notify during unwatch: %s", test_errname (t->res.r));
  store_notify_replies_free (t->res.rep, t->res.n);
  free (t);
}

/* The child half of test_watch_notify_process (run by exec). */
static int
watch_child (void)
{
  const char *uri = getenv ("VBK_TEST_CHILD_URI");
  int rfd = atoi (getenv ("VBK_TEST_CHILD_RFD"));
  int wfd = atoi (getenv ("VBK_TEST_CHILD_WFD"));
  struct store *st;
  struct store_watch *w;
  struct watcher wt;
  char line[STORE_CLIENT_MAX + 2], cmd;
  int n;

  alarm (60);
  watcher_init (&wt, "child");
  if (store_open (uri, &st) < 0) {
    fprintf (stderr, "child: store_open: %s\n", vbk_error ());
    return 100;
  }
  if (store_watch (st, "pw", watch_cb, &wt, &w) < 0) {
    fprintf (stderr, "child: store_watch: %s\n", vbk_error ());
    return 101;
  }
  n = snprintf (line, sizeof line, "%s\n", store_client_id (st));
  if (write (wfd, line, n) != n)
    return 102;
  while (read (rfd, &cmd, 1) == 1) {
    if (cmd == 'u') {
      store_unwatch (w);
      w = NULL;
      if (write (wfd, "k", 1) != 1)
        return 103;
    }
    else
      break;
  }
  store_unwatch (w);
  store_close (st);
  return watcher_get (&wt, &wt.calls);
}

/* Waits up to 30 s for N bytes from FD. */
static int
read_full (int fd, char *buf, size_t n)
{
  size_t got = 0;

  while (got < n) {
    struct pollfd p = { fd, POLLIN, 0 };
    ssize_t r;

    if (poll (&p, 1, 30000) != 1)
      return -1;
    r = read (fd, buf + got, n - got);
    if (r <= 0)
      return -1;
    got += r;
  }
  return 0;
}

extern char **environ;

static void
test_watch_notify_process (void **state)
{
  FX;
  struct store *b = peer_open (fx);
  struct notify_result res;
  int to_child[2], from_child[2], status, i, n;
  char child_id[STORE_CLIENT_MAX + 2], env[4][4200], *envp[256], c;
  struct watcher *wb;
  pid_t pid;

  expect_ok (store_write_full (st, "pw", "pw", 2, 0));
  assert_int_equal (pipe (to_child), 0);
  assert_int_equal (pipe (from_child), 0);

  /* Everything the child needs is prepared before fork. */
  snprintf (env[0], sizeof env[0], "VBK_TEST_CHILD_URI=%s", fx->uri);
  snprintf (env[1], sizeof env[1], "VBK_TEST_CHILD_RFD=%d", to_child[0]);
  snprintf (env[2], sizeof env[2], "VBK_TEST_CHILD_WFD=%d", from_child[1]);
  snprintf (env[3], sizeof env[3], "VBK_TEST_CHILD=watch");
  for (n = 0; n < 4; n++)
    envp[n] = env[n];
  for (i = 0; environ[i] && n < 255; i++)
    if (strncmp (environ[i], "VBK_TEST_CHILD", 14) != 0)
      envp[n++] = environ[i];
  envp[n] = NULL;

  pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0) {
    /* Nothing of the parent's store is touched here. */
    close (to_child[1]);
    close (from_child[0]);
    execle ("/proc/self/exe", "test-store", (char *) NULL, envp);
    _exit (127);
  }
  close (to_child[0]);
  close (from_child[1]);

  memset (child_id, 0, sizeof child_id);
  for (i = 0; i < (int) sizeof child_id - 1; i++) {
    if (read_full (from_child[0], &child_id[i], 1) < 0)
      break;
    if (child_id[i] == '\n')
      break;
  }
  if (i == 0 || child_id[i] != '\n') {
    kill (pid, SIGKILL);
    waitpid (pid, &status, 0);
    fail_msg ("the child process did not start watching");
  }
  child_id[i] = '\0';
  assert_string_not_equal (child_id, store_client_id (st));
  assert_string_not_equal (child_id, store_client_id (b));

  /* The child and a second client here both answer. */
  wb = watch_add (fx, 0, b, "pw", "B");
  notify_ok (st, "pw", "hello", 5000, 2, 0, &res);
  check_reply (res.rep, res.n, child_id, "child:hello");
  check_reply (res.rep, res.n, store_client_id (b), "B:hello");
  store_notify_replies_free (res.rep, res.n);
  notify_ok (b, "pw", "again", 5000, 2, 0, &res);
  check_reply (res.rep, res.n, child_id, "child:again");
  store_notify_replies_free (res.rep, res.n);

  /* The child unwatches: only B answers. */
  if (write (to_child[1], "u", 1) != 1 || read_full (from_child[0], &c, 1))
    fail_msg ("lost the child process");
  notify_ok (st, "pw", "gone", 5000, 1, 0, &res);
  check_reply (res.rep, res.n, store_client_id (b), "B:gone");
  store_notify_replies_free (res.rep, res.n);
  assert_int_equal (watcher_get (wb, &wb->calls), 3);

  if (write (to_child[1], "q", 1) != 1)
    fail_msg ("lost the child process");
  close (to_child[1]);
  close (from_child[0]);
  assert_int_equal (waitpid (pid, &status, 0), pid);
  if (!WIFEXITED (status) || WEXITSTATUS (status) != 2)
    fail_msg ("child process: status 0x%x, expected exit 2 (callbacks "
              "seen)", status);
}

/* ---- Fencing ---------------------------------------------------------- */

static void
test_fence (void **state)
{
  FX;
  struct store *b = peer_open (fx), *c;
  struct store_lock_info info;
  struct notify_result res;
  struct watcher *wb;
  uint8_t buf[16], mine[16];
  uint64_t t0, size;
  char idb[STORE_CLIENT_MAX];
  int r;

  snprintf (idb, sizeof idb, "%s", store_client_id (b));
  expect_ok (store_write_full (b, "f", "before", 6, 0));
  expect_ok (store_lock (b, "f", "L", "cb", "B", 0, 0));
  wb = watch_add (fx, 0, b, "f", "B");

  t0 = mono_ms ();
  expect_ok (store_fence (st, idb, 600));

  /* B's writes fail with -ESHUTDOWN, at most a short while later. */
  for (;;) {
    vbk_clear_error ();
    r = store_write_full (b, "f", "fenced", 6, 0);
    if (r == -ESHUTDOWN || mono_ms () - t0 > 3000)
      break;
    if (r != 0)
      fail_msg ("write of a client being fenced: %s [%s]", test_errname (r),
                vbk_error ());
    sleep_ms (50);
  }
  if (r != -ESHUTDOWN)
    fail_msg ("a fenced client's writes still succeed after %" PRIu64 " ms",
              mono_ms () - t0);
  assert_true (vbk_error ()[0] != '\0');
  expect_err (-ESHUTDOWN, store_read (b, "f", buf, 6, 0, HEAD));
  expect_err (-ESHUTDOWN, store_stat (b, "f", HEAD, &size));
  expect_err (-ESHUTDOWN, store_write (b, "g", "x", 1, 0, 0));
  expect_err (-ESHUTDOWN, store_lock (b, "f", "L2", "cb", "B", 0, 0));
  expect_err (-ESHUTDOWN, store_lock (b, "f", "L", "cb", "B", 0,
                                      STORE_LOCK_RENEW));
  expect_err (-ESHUTDOWN, store_xattr_set (b, "f", "k", "v", 1));

  /* Its watch breaks with -ENOTCONN. */
  while (watcher_get (wb, &wb->errs) == 0 && mono_ms () - t0 < 3000)
    sleep_ms (20);
  if (watcher_get (wb, &wb->errs) == 0)
    fail_msg ("the fenced client's watch saw no error in %" PRIu64 " ms",
              mono_ms () - t0);
  assert_int_equal (watcher_get (wb, &wb->last_err), -ENOTCONN);

  /* Nothing it tried after the fence landed. */
  expect_err (-ENOENT, store_stat (st, "g", HEAD, &size));
  read_ok (st, "f", buf, 6, 0, HEAD);
  fill (mine, sizeof mine, 1);
  expect_err (-ESHUTDOWN, store_write_full (b, "f", mine, sizeof mine, 0));
  check_size (st, "f", HEAD, 6);

  /* A is unaffected: it breaks B's lock, takes it, writes, notifies. */
  expect_ok (store_lock_get (st, "f", "L", &info));
  assert_string_equal (info.client, idb);
  expect_ok (store_lock_break (st, "f", "L", info.client, info.cookie));
  expect_ok (store_lock (st, "f", "L", "ca", "A", 0, 0));
  expect_ok (store_write_full (st, "f", "after", 5, 0));
  check_object (st, "f", HEAD, "after", 5, "written by the fencer");
  /* B's broken watch may or may not count as timed out. */
  expect_ok (store_notify (st, "f", "x", 1, 1000, &res.rep, &res.n,
                           &res.to));
  store_notify_replies_free (res.rep, res.n);

  /* A new client of the same store works. */
  c = peer_open (fx);
  check_object (c, "f", HEAD, "after", 5, "new client after a fence");
  expect_ok (store_write_full (c, "h", "h", 1, 0));

  /* The fenced handle still closes cleanly. */
  watch_del (fx, 0);
  t0 = mono_ms ();
  peer_close (fx, b);
  if (mono_ms () - t0 > 15000)
    fail_msg ("closing a fenced client took %" PRIu64 " ms", mono_ms () - t0);
}

/* ---- Snapshots -------------------------------------------------------- */

static void
test_snap_ids (void **state)
{
  FX;
  uint64_t s[4];
  int i;

  for (i = 0; i < 3; i++) {
    expect_ok (store_snap_create (st, &s[i]));
    assert_true (s[i] != HEAD);
    if (i > 0 && s[i] <= s[i - 1])
      fail_msg ("snapshot ids %" PRIu64 " then %" PRIu64, s[i - 1], s[i]);
  }
  /* Another client continues the sequence. */
  expect_ok (store_snap_create (peer_open (fx), &s[3]));
  assert_true (s[3] > s[2]);

  expect_ok (store_snap_remove (st, s[1]));
  expect_err (-ENOENT, store_snap_remove (st, s[1]));
  expect_err (-ENOENT, store_snap_remove (st, s[3] + 1000));
  expect_ok (store_snap_create (st, &s[1]));
  assert_true (s[1] > s[3]);
}

static void
test_snap_data (void **state)
{
  FX;
  static uint8_t v1[20000], v2[30000], v3[30000], v4[10000];
  uint64_t s[4], ctx[4], size;
  uint8_t buf[64];

  /* v1 before any snapshot; "same" is never touched afterwards. */
  fill (v1, sizeof v1, 90);
  expect_ok (store_write_full (st, "d", v1, sizeof v1, 0));
  expect_ok (store_write_full (st, "same", "same", 4, 0));

  expect_ok (store_snap_create (st, &s[0]));
  ctx[0] = s[0];
  snapc (st, 1, ctx);

  /* After s0: overwrite part and extend. */
  memcpy (v2, v1, sizeof v1);
  fill (v2 + 5000, 25000, 91);
  expect_ok (store_write (st, "d", v2 + 5000, 25000, 5000, 0));
  check_object (st, "d", HEAD, v2, sizeof v2, "head after a write");
  check_object (st, "d", s[0], v1, sizeof v1, "snapshot before a write");
  check_object (st, "same", s[0], "same", 4, "untouched object at a snap");
  /* Created after the snapshot: absent at it. */
  expect_ok (store_write_full (st, "new", "new", 3, 0));
  expect_err (-ENOENT, store_read (st, "new", buf, 3, 0, s[0]));
  expect_err (-ENOENT, store_stat (st, "new", s[0], &size));
  /* A second write in the same interval changes only the head. */
  expect_ok (store_write (st, "d", "X", 1, 0, 0));
  v2[0] = 'X';
  check_object (st, "d", s[0], v1, sizeof v1, "snapshot after 2 writes");
  {
    /* Several ranges at once read the same, at the snapshot and now. */
    uint8_t a[16], b[16], c[16];
    struct store_range rg[3] = { { 0, 16, a }, { 6000, 16, b },
                                 { 19990, 16, c } };
    expect_ok (store_read_ranges (st, "d", s[0], rg, 3));
    assert_memory_equal (a, v1, 16);
    assert_memory_equal (b, v1 + 6000, 16);
    assert_memory_equal (c, v1 + 19990, 10);    /* past the end: zeros */
    assert_memory_equal (c + 10, "\0\0\0\0\0\0", 6);
    expect_ok (store_read_ranges (st, "d", HEAD, rg, 3));
    assert_memory_equal (a, v2, 16);
    assert_memory_equal (b, v2 + 6000, 16);
    assert_memory_equal (c, v2 + 19990, 16);
    expect_err (-ENOENT, store_read_ranges (st, "new", s[0], rg, 1));
  }

  /* s1, then zero. */
  expect_ok (store_snap_create (st, &s[1]));
  ctx[0] = s[1];
  ctx[1] = s[0];
  snapc (st, 2, ctx);
  memcpy (v3, v2, sizeof v2);
  memset (v3 + 1000, 0, 8000);
  expect_ok (store_zero (st, "d", 1000, 8000));
  check_object (st, "d", HEAD, v3, sizeof v3, "head after zero");
  check_object (st, "d", s[1], v2, sizeof v2, "snapshot before zero");
  check_object (st, "d", s[0], v1, sizeof v1, "older snapshot, zero");
  check_object (st, "new", s[1], "new", 3, "object created between snaps");

  /* s2, then truncate. */
  expect_ok (store_snap_create (st, &s[2]));
  ctx[0] = s[2];
  ctx[1] = s[1];
  ctx[2] = s[0];
  snapc (st, 3, ctx);
  memcpy (v4, v3, sizeof v4);
  expect_ok (store_truncate (st, "d", sizeof v4));
  check_object (st, "d", HEAD, v4, sizeof v4, "head after truncate");
  check_object (st, "d", s[2], v3, sizeof v3, "snapshot before truncate");
  check_object (st, "d", s[1], v2, sizeof v2, "older snapshot, truncate");

  /* s3, then remove the head. */
  expect_ok (store_snap_create (st, &s[3]));
  ctx[0] = s[3];
  ctx[1] = s[2];
  ctx[2] = s[1];
  ctx[3] = s[0];
  snapc (st, 4, ctx);
  expect_ok (store_remove (st, "d"));
  expect_err (-ENOENT, store_stat (st, "d", HEAD, &size));
  expect_err (-ENOENT, store_read (st, "d", buf, 1, 0, HEAD));
  check_object (st, "d", s[3], v4, sizeof v4, "snapshot before remove");
  check_object (st, "d", s[2], v3, sizeof v3, "snapshot s2 after remove");
  check_object (st, "d", s[1], v2, sizeof v2, "snapshot s1 after remove");
  check_object (st, "d", s[0], v1, sizeof v1, "snapshot s0 after remove");

  /* Recreating the head leaves the snapshots alone. */
  expect_ok (store_write_full (st, "d", "again", 5, 0));
  check_object (st, "d", HEAD, "again", 5, "recreated head");
  check_object (st, "d", s[3], v4, sizeof v4, "snapshot after recreate");

  /* Other clients read snapshots too. */
  check_object (peer_open (fx), "d", s[0], v1, sizeof v1,
                "snapshot read by another client");

  /* Forgetting s1 keeps what s0 and s2 need. */
  expect_ok (store_snap_remove (st, s[1]));
  ctx[0] = s[3];
  ctx[1] = s[2];
  ctx[2] = s[0];
  snapc (st, 3, ctx);
  check_object (st, "d", s[0], v1, sizeof v1, "s0 after removing s1");
  check_object (st, "d", s[2], v3, sizeof v3, "s2 after removing s1");
  check_object (st, "d", s[3], v4, sizeof v4, "s3 after removing s1");
  expect_err (-ENOENT, store_snap_remove (st, s[1]));

  /* Back to no snapshots: writes change only the head. */
  snapc (st, 0, NULL);
  expect_ok (store_write_full (st, "d", "plain", 5, 0));
  check_object (st, "d", s[3], v4, sizeof v4, "s3 after a write "
                "without a context");
}

static void
test_snap_rollback (void **state)
{
  FX;
  uint8_t v1[5000], v2[9000];
  uint64_t s, s2, size;

  fill (v1, sizeof v1, 95);
  fill (v2, sizeof v2, 96);
  expect_ok (store_write_full (st, "r", v1, sizeof v1, 0));
  expect_ok (store_write_full (st, "keep", "keep", 4, 0));
  expect_ok (store_snap_create (st, &s));
  snapc (st, 1, &s);

  expect_ok (store_write_full (st, "r", v2, sizeof v2, 0));
  expect_ok (store_write_full (st, "born", "born", 4, 0));
  check_object (st, "r", HEAD, v2, sizeof v2, "before rollback");

  expect_ok (store_snap_rollback (st, "r", s));
  check_object (st, "r", HEAD, v1, sizeof v1, "after rollback");
  check_object (st, "r", s, v1, sizeof v1, "snapshot after rollback");

  /* Absent at the snapshot: removed. */
  expect_ok (store_snap_rollback (st, "born", s));
  expect_err (-ENOENT, store_stat (st, "born", HEAD, &size));

  /* Unchanged since the snapshot: still the same. */
  expect_ok (store_snap_rollback (st, "keep", s));
  check_object (st, "keep", HEAD, "keep", 4, "rollback of an unchanged "
                "object");

  /* Removed since the snapshot: comes back. */
  expect_ok (store_remove (st, "r"));
  expect_ok (store_snap_rollback (st, "r", s));
  check_object (st, "r", HEAD, v1, sizeof v1, "rollback of a removed object");

  /* A later snapshot still sees the state it was taken at. */
  expect_ok (store_snap_create (st, &s2));
  {
    uint64_t ctx[2] = { s2, s };

    snapc (st, 2, ctx);
  }
  expect_ok (store_write (st, "r", "Z", 1, 0, 0));
  expect_ok (store_snap_rollback (st, "r", s2));
  check_object (st, "r", HEAD, v1, sizeof v1, "rollback to a later snap");

  expect_err (-ENOENT, store_snap_rollback (st, "r", s2 + 1000));
}

/* A clone has its own snapshot context, and so has its parent. */
static void
test_snap_clone_context (void **state)
{
  FX;
  struct store *cl;
  uint64_t s;

  expect_ok (store_write_full (st, "p", "p-v1", 4, 0));
  expect_ok (store_write_full (st, "q", "q-v1", 4, 0));
  expect_ok (store_write_full (st, "r", "r-v1", 4, 0));
  expect_ok (store_snap_create (st, &s));
  expect_ok (store_clone (st, &fx->clone));
  cl = fx->clone;

  /* Only the clone knows about s. */
  snapc (cl, 1, &s);
  expect_ok (store_write_full (cl, "p", "p-v2", 4, 0));
  check_object (st, "p", HEAD, "p-v2", 4, "head written via the clone");
  check_object (st, "p", s, "p-v1", 4, "clone's write preserved the snap");

  /* The parent writes without a context and preserves nothing, so what
   * s keeps is the state at the clone's first write after it. */
  expect_ok (store_write_full (st, "q", "q-v2", 4, 0));
  expect_ok (store_write_full (cl, "q", "q-v3", 4, 0));
  check_object (st, "q", HEAD, "q-v3", 4, "head of q");
  check_object (st, "q", s, "q-v2", 4, "q at s (parent had no context)");

  /* The other way round. */
  snapc (st, 1, &s);
  snapc (cl, 0, NULL);
  expect_ok (store_write_full (cl, "r", "r-v2", 4, 0));
  expect_ok (store_write_full (st, "r", "r-v3", 4, 0));
  check_object (st, "r", HEAD, "r-v3", 4, "head of r");
  check_object (st, "r", s, "r-v2", 4, "r at s (clone had no context)");
}

/* ---- main ------------------------------------------------------------- */

#define T(name) cmocka_unit_test_setup_teardown (name, setup, teardown)

int
main (int argc, char *argv[])
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_open_malformed),
    cmocka_unit_test (test_open_missing_parent),
    cmocka_unit_test (test_open_local_bad_place),
    cmocka_unit_test (test_open_rados_unreachable),
    T (test_identity),
    T (test_read_write),
    T (test_write_full),
    T (test_two_clients),
    T (test_create_excl),
    T (test_create_deferred),
    T (test_zero),
    T (test_truncate),
    T (test_remove),
    T (test_large_unaligned),
    T (test_flush),
    T (test_flush_after_eviction),
    T (test_aio),
    T (test_xattr),
    T (test_xattr_cas),
    T (test_xattr_cas_concurrent),
    T (test_omap),
    T (test_omap_many),
    T (test_meta_set),
    T (test_read_ranges),
    T (test_meta_set_many),
    T (test_lock_basic),
    T (test_lock_contention),
    T (test_lock_expiry),
    T (test_lock_break),
    T (test_watch_notify),
    T (test_unwatch_waits),
    T (test_watch_notify_process),
    T (test_fence),
    T (test_snap_ids),
    T (test_snap_data),
    T (test_snap_rollback),
    T (test_snap_clone_context),
  };
  const char *child = getenv ("VBK_TEST_CHILD");
  char name[64];

  if (child && strcmp (child, "watch") == 0)
    return watch_child ();
  snprintf (name, sizeof name, "store-%s", test_store_kind ());
  return cmocka_run_group_tests_name (name, tests, NULL, NULL);
}
