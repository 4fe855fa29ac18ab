/* SPDX-License-Identifier: MIT
 *
 * testutil.c - see testutil.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "testutil.h"

const char *
test_store_kind (void)
{
  const char *k = getenv ("VBK_TEST_STORE_KIND");

  return k && strcmp (k, "none") != 0 ? k : "local";
}

void
test_store_uri (char *buf, size_t len)
{
  static unsigned n;
  const char *kind = test_store_kind ();

  if (strcmp (kind, "local") == 0) {
    const char *tmp = getenv ("TMPDIR");
    char dir[4096];

    snprintf (dir, sizeof dir, "%s/vbk-test-XXXXXX", tmp ? tmp : "/tmp");
    if (mkdtemp (dir) == NULL) {
      perror ("mkdtemp");
      abort ();
    }
    snprintf (buf, len, "local:%s", dir);
  }
  else if (strcmp (kind, "rados") == 0) {
    const char *pool = getenv ("VBK_TEST_POOL");
    const char *conf = getenv ("CEPH_CONF");
    struct timespec ts;

    clock_gettime (CLOCK_REALTIME, &ts);
    snprintf (buf, len, "rados:%s/t-%d-%u-%lx%s%s", pool ? pool : "vbk",
              (int) getpid (), n++, (unsigned long) ts.tv_nsec,
              conf ? "?conf=" : "", conf ? conf : "");
  }
  else {
    fprintf (stderr, "VBK_TEST_STORE_KIND=%s: unknown\n", kind);
    abort ();
  }
}

struct store *
test_store_open (void)
{
  char uri[4096];
  struct store *st;
  int r;

  test_store_uri (uri, sizeof uri);
  r = store_open (uri, &st);
  if (r < 0) {
    fprintf (stderr, "store_open %s: %s\n", uri, vbk_error ());
    abort ();
  }
  return st;
}

void
test_store_cleanup (const char *uri)
{
  char cmd[4200];

  if (strncmp (uri, "local:/", 7) != 0 || strstr (uri, "vbk-test-") == NULL)
    return;
  snprintf (cmd, sizeof cmd, "rm -rf '%s'", uri + 6);
  if (system (cmd) != 0)
    fprintf (stderr, "warning: could not remove %s\n", uri + 6);
}

const char *
test_errname (long long r)
{
  static __thread char buf[4][32];
  static __thread unsigned n;
  const char *name;
  char *b = buf[n++ % 4];

  if (r >= 0)
    return "ok";
  name = strerrorname_np ((int) -r);
  snprintf (b, sizeof buf[0], "-%s", name ? name : "?");
  return b;
}

int
test_fixture_setup (void **state)
{
  struct test_fixture *f = calloc (1, sizeof *f);

  if (f == NULL)
    return -1;
  test_store_uri (f->uri, sizeof f->uri);
  if (store_open (f->uri, &f->st) < 0) {
    fprintf (stderr, "test fixture: store_open %s: %s\n", f->uri,
             vbk_error ());
    test_store_cleanup (f->uri);
    free (f);
    return -1;
  }
  *state = f;
  return 0;
}

int
test_fixture_teardown (void **state)
{
  struct test_fixture *f = *state;

  store_close (f->st);
  test_store_cleanup (f->uri);
  free (f);
  return 0;
}

int
test_extents_collect (void *arg, uint64_t off, uint64_t len, int alloc)
{
  struct test_extents *e = arg;

  (void) alloc;
  if (e->n >= TEST_EXTENTS_MAX)
    return -E2BIG;
  e->off[e->n] = off;
  e->len[e->n] = len;
  e->n++;
  return 0;
}

int
test_extents_cover (const struct test_extents *e, uint64_t off,
                    uint64_t len)
{
  size_t i;

  for (i = 0; i < e->n; i++)
    if (e->off[i] <= off && off + len <= e->off[i] + e->len[i])
      return 1;
  return 0;
}
