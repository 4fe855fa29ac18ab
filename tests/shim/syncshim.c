/* SPDX-License-Identifier: MIT
 *
 * syncshim.c - an interposer around fdatasync() and fsync() that can delay,
 * hold or fail them, to test what the store does while a sync is slow or
 * after one failed.
 *
 * DESIGN
 * Loaded with LD_PRELOAD (into vbk-blockd) or linked into a test program
 * before libc, it wraps fdatasync and fsync.  A call whose file's path
 * (readlink of /proc/self/fd/N) contains the current MATCH string (or,
 * for a MATCH ending in '$', ends in it) is affected: it first waits DELAY_MS, and, while the gate is closed, until
 * it opens; then it fails with ERRNO (without syncing) or does the real
 * sync.  Two ways to set MATCH, DELAY_MS and ERRNO:
 *   - in the same process, syncshim_set() / syncshim_gate();
 *   - from outside, the file named by $VBK_SYNCSHIM_CTL, read at every
 *     call: one line "MATCH DELAY_MS ERRNO" (ERRNO 0 = succeed); no file,
 *     or an empty one, means no effect.
 * With $VBK_SYNCSHIM_LOG set, every affected call appends a line
 * "MONO_MS start|done|fail PATH" to that file, so a test can order syncs
 * against its own events.  Counters of affected calls started and done
 * are kept for in-process tests.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "syncshim.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static char match[256];
static unsigned delay_ms;
static int fail_err;
static int gate_closed;
static unsigned long started, done;

void
syncshim_set (const char *m, unsigned delay, int err)
{
  pthread_mutex_lock (&lock);
  snprintf (match, sizeof match, "%s", m ? m : "");
  delay_ms = delay;
  fail_err = err;
  pthread_mutex_unlock (&lock);
}

void
syncshim_gate (int closed)
{
  pthread_mutex_lock (&lock);
  gate_closed = closed;
  pthread_cond_broadcast (&cond);
  pthread_mutex_unlock (&lock);
}

unsigned long
syncshim_started (void)
{
  unsigned long n;

  pthread_mutex_lock (&lock);
  n = started;
  pthread_mutex_unlock (&lock);
  return n;
}

unsigned long
syncshim_done (void)
{
  unsigned long n;

  pthread_mutex_lock (&lock);
  n = done;
  pthread_mutex_unlock (&lock);
  return n;
}

static unsigned long long
mono_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (unsigned long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
log_event (const char *what, const char *path)
{
  const char *log = getenv ("VBK_SYNCSHIM_LOG");
  char line[4200];
  int fd, n;

  if (log == NULL)
    return;
  n = snprintf (line, sizeof line, "%llu %s %s\n", mono_ms (), what, path);
  fd = open (log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd >= 0) {
    if (write (fd, line, n) < 0) {
      /* nothing to do: the log is best effort */
    }
    close (fd);
  }
}

/* Fills M, *DELAY and *ERR from the control file or the in-process
 * settings.  Returns 0 when nothing is set. */
static int
settings (char *m, size_t mlen, unsigned *delay, int *err)
{
  const char *ctl = getenv ("VBK_SYNCSHIM_CTL");

  if (ctl) {
    char buf[512];
    int fd = open (ctl, O_RDONLY | O_CLOEXEC), n;
    unsigned d = 0;
    int e = 0;

    if (fd < 0)
      return 0;
    n = read (fd, buf, sizeof buf - 1);
    close (fd);
    if (n <= 0)
      return 0;
    buf[n] = '\0';
    if (sscanf (buf, "%255s %u %d", m, &d, &e) < 1)
      return 0;
    *delay = d;
    *err = e;
    return 1;
  }
  pthread_mutex_lock (&lock);
  snprintf (m, mlen, "%s", match);
  *delay = delay_ms;
  *err = fail_err;
  pthread_mutex_unlock (&lock);
  return m[0] != '\0';
}

/* PATH contains M; or, when M ends in '$', PATH ends in M without it. */
static int
path_matches (const char *path, const char *m)
{
  size_t lp = strlen (path), lm = strlen (m);

  if (lm > 0 && m[lm - 1] == '$')
    return lm - 1 <= lp && memcmp (path + lp - (lm - 1), m, lm - 1) == 0;
  return strstr (path, m) != NULL;
}

static int
shim (int fd, int (*real) (int))
{
  char m[256], link[64], path[4096];
  unsigned delay;
  int err, rc;
  ssize_t n;

  if (!settings (m, sizeof m, &delay, &err))
    return real (fd);
  snprintf (link, sizeof link, "/proc/self/fd/%d", fd);
  n = readlink (link, path, sizeof path - 1);
  if (n < 0)
    return real (fd);
  path[n] = '\0';
  if (strcmp (m, "*") != 0 && !path_matches (path, m))
    return real (fd);

  pthread_mutex_lock (&lock);
  started++;
  pthread_mutex_unlock (&lock);
  log_event ("start", path);
  if (delay) {
    struct timespec ts = { delay / 1000, (long) (delay % 1000) * 1000000 };
    while (nanosleep (&ts, &ts) < 0 && errno == EINTR)
      ;
  }
  pthread_mutex_lock (&lock);
  while (gate_closed)
    pthread_cond_wait (&cond, &lock);
  pthread_mutex_unlock (&lock);
  if (err) {
    rc = -1;
    log_event ("fail", path);
  }
  else {
    rc = real (fd);
    err = errno;
    log_event (rc == 0 ? "done" : "fail", path);
  }
  pthread_mutex_lock (&lock);
  done++;
  pthread_mutex_unlock (&lock);
  if (rc < 0)
    errno = err;
  return rc;
}

static int
real_fdatasync (int fd)
{
  static int (*fn) (int);

  if (fn == NULL)
    fn = (int (*) (int)) dlsym (RTLD_NEXT, "fdatasync");
  return fn (fd);
}

static int
real_fsync (int fd)
{
  static int (*fn) (int);

  if (fn == NULL)
    fn = (int (*) (int)) dlsym (RTLD_NEXT, "fsync");
  return fn (fd);
}

int
fdatasync (int fd)
{
  return shim (fd, real_fdatasync);
}

int
fsync (int fd)
{
  return shim (fd, real_fsync);
}
