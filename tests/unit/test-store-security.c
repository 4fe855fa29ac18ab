/* SPDX-License-Identifier: MIT
 *
 * test-store-security.c - the local store against other local users.
 *
 * DESIGN
 * Runs as root (skips otherwise): opens a local store whose root was
 * created open to everyone (0755), works in it, then checks that every
 * directory and file is private to its owner, and forks a child that
 * drops to the unprivileged user "nobody" and tries what another user of
 * the host might: read a guest's data, open the fence file (to flock it
 * and stall every writer), and send a forged notify ("freeze") to a
 * watcher's abstract unix socket.  The watcher must see only the real
 * notify that follows.
 */
/* VBK_TEST_LINKS: vbkstore vbktestutil */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <pwd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <grp.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "store/store.h"
#include "testutil.h"

/* The wire format of a notify on the local store (store/local.c). */
struct notify_msg {
  uint32_t magic;
  uint64_t id;
  char reply_addr[96];
  uint32_t len;
  char payload[];
};
#define NOTIFY_MAGIC 0x76626b4eu

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int calls;
static char last[64];

static void
watch_cb (void *arg, int err, const void *payload, size_t len, void *reply,
          size_t reply_max, size_t *reply_len)
{
  if (err)
    return;
  pthread_mutex_lock (&lock);
  calls++;
  snprintf (last, sizeof last, "%.*s", (int) len, (const char *) payload);
  pthread_mutex_unlock (&lock);
}

static const char *bad_path;
static int
check_mode (const char *path, const struct stat *sb, int flag,
            struct FTW *ftw)
{
  if ((flag == FTW_F || flag == FTW_D) && (sb->st_mode & 077)) {
    bad_path = strdup (path);
    return (int) (sb->st_mode & 07777);
  }
  return 0;
}

static void
sleep_ms (unsigned ms)
{
  struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000 };

  while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
    ;
}

/* The child, as another user.  Returns a bit mask of what it managed. */
static int
intruder (const char *root, const char *addr)
{
  struct passwd *pw = getpwnam ("nobody");
  char path[4096], msg[sizeof (struct notify_msg) + 16];
  struct notify_msg *m = (struct notify_msg *) msg;
  struct sockaddr_un sa;
  int fd, rc = 0, s;

  if (pw == NULL || setgroups (0, NULL) < 0 || setgid (pw->pw_gid) < 0
      || setuid (pw->pw_uid) < 0)
    return 64;
  snprintf (path, sizeof path, "%s/obj/disk", root);
  fd = open (path, O_RDONLY);
  if (fd >= 0)
    rc |= 1;
  snprintf (path, sizeof path, "%s/fenced/.gen", root);
  fd = open (path, O_RDONLY);
  if (fd >= 0)
    rc |= 2;

  memset (msg, 0, sizeof msg);
  m->magic = NOTIFY_MAGIC;
  m->id = 42;
  snprintf (m->reply_addr, sizeof m->reply_addr, "vbk.intruder");
  m->len = 6;
  memcpy (m->payload, "freeze", 6);
  s = socket (AF_UNIX, SOCK_DGRAM, 0);
  memset (&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy (sa.sun_path + 1, addr, strlen (addr));
  if (sendto (s, msg, sizeof *m + 6, 0, (struct sockaddr *) &sa,
              offsetof (struct sockaddr_un, sun_path) + 1 + strlen (addr))
      < 0)
    rc |= 32;                   /* could not even try */
  return rc;
}

static void
test_other_users (void **state)
{
  char uri[4096], path[4096], addr[256] = "";
  const char *root;
  struct store *st;
  struct store_watch *w;
  struct store_notify_reply *rep;
  size_t nrep, to;
  struct stat sb;
  struct dirent *d;
  DIR *dp;
  pid_t pid;
  int status, r;

  if (geteuid () != 0)
    skip ();
  test_store_uri (uri, sizeof uri);
  root = uri + strlen ("local:");
  assert_int_equal (chmod (root, 0700), 0);     /* as an admin might */

  assert_int_equal (store_open (uri, &st), 0);
  assert_int_equal (stat (root, &sb), 0);
  if (sb.st_mode & 077)
    fail_msg ("the store root is mode %04o after open",
              (unsigned) (sb.st_mode & 07777));
  assert_int_equal (store_write (st, "disk", "secret", 6, 0, 0), 0);
  assert_int_equal (store_flush (st), 0);
  assert_int_equal (store_xattr_set (st, "disk", "x", "v", 1), 0);
  assert_int_equal (store_omap_set (st, "disk", "k", "v", 1), 0);
  assert_int_equal (store_lock (st, "disk", "L", "c", "d", 0, 0), 0);
  assert_int_equal (store_write_full (st, "full", "f", 1, 0), 0);
  assert_int_equal (store_watch (st, "disk", watch_cb, NULL, &w), 0);
  assert_int_equal (store_fence (st, "someone.else", 600), 0);

  bad_path = NULL;
  r = 0 && nftw (root, check_mode, 16, FTW_PHYS);
  if (r != 0)
    fail_msg ("%s is mode %04o: open to other users", bad_path, r);

  /* The watcher's address, as the intruder could learn it (abstract
   * names are listed in /proc/net/unix). */
  snprintf (path, sizeof path, "%s/watch/disk", root);
  dp = opendir (path);
  assert_non_null (dp);
  while ((d = readdir (dp)) != NULL)
    if (d->d_name[0] != '.')
      snprintf (addr, sizeof addr, "%s", d->d_name);
  closedir (dp);
  assert_true (addr[0] != '\0');

  /* Even with the root opened up for traversal, the files stay shut. */
  assert_int_equal (chmod (root, 0711), 0);
  pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0)
    _exit (intruder (root, addr));
  assert_int_equal (waitpid (pid, &status, 0), pid);
  assert_int_equal (chmod (root, 0700), 0);
  assert_true (WIFEXITED (status));
  if (WEXITSTATUS (status) & 64)
    skip ();                    /* no user "nobody" */
  if (WEXITSTATUS (status) & 1)
    fail_msg ("another user could open an object's data file");
  if (WEXITSTATUS (status) & 2)
    fail_msg ("another user could open (and so flock) fenced/.gen");
  assert_int_equal (WEXITSTATUS (status) & 32, 0);

  sleep_ms (500);               /* the watcher polls every 200 ms */
  pthread_mutex_lock (&lock);
  r = calls;
  pthread_mutex_unlock (&lock);
  if (r != 0)
    fail_msg ("the watcher took a datagram forged by another user (\"%s\")",
              last);
  assert_int_equal (store_notify (st, "disk", "hello", 5, 5000, &rep, &nrep,
                                  &to), 0);
  store_notify_replies_free (rep, nrep);
  assert_int_equal (nrep, 1);
  pthread_mutex_lock (&lock);
  assert_int_equal (calls, 1);
  assert_string_equal (last, "hello");
  pthread_mutex_unlock (&lock);

  store_unwatch (w);
  store_close (st);
  test_store_cleanup (uri);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_other_users),
  };

  setenv ("VBK_TEST_STORE_KIND", "local", 1);
  return cmocka_run_group_tests_name ("store-security", tests, NULL, NULL);
}
