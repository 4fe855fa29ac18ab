/* SPDX-License-Identifier: MIT
 *
 * mount-cmd.c - "vbk mount DIR" and "vbk umount DIR".
 *
 * DESIGN: every check a user can act on is made before anything is
 * started, each with what to do about it: DIR missing, not a directory
 * or not empty; /dev/fuse missing or not ours to open; fusermount3
 * missing for a user; --allow-other without user_allow_other.  Without
 * -f the command forks first (the store's threads must start in the
 * process that serves), and the parent waits on a pipe until the child
 * says the mount is ready, or why it failed, and exits with that: when
 * "vbk mount" returns 0, DIR is mounted.  The child then leaves the
 * terminal and logs to --log FILE (or nowhere).  Unmounting goes through
 * fusermount3 -u, which works for root and users alike; the serving
 * process ends by itself once unmounted.
 */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "fuse/vbkfs.h"
#include "internal.h"

const struct vbk_opt mount_opts[] = {
  { "repo", 0, "URI", "also show the backups of repository URI "
    "under backups/" },
  VBK_KEY_OPTS,
  { "allow-other", 0, NULL, "let other users read the mount (a user needs "
    "user_allow_other in /etc/fuse.conf)" },
  { "foreground", 'f', NULL, "stay in the foreground, logging to stderr" },
  { "log", 0, "FILE", "append log lines to FILE (default: stderr with -f, "
    "else none)" },
  { "cache", 0, "SIZE", "chunk cache per open disk (default 64M)" },
  { "debug", 0, NULL, "trace every FUSE request on the log" },
  { NULL },
};

/* ---- Checks ------------------------------------------------------------- */

static int
check_dir (const struct vbk_args *a, const char *dir)
{
  struct stat st;
  struct dirent *de;
  DIR *d;

  if (stat (dir, &st) < 0) {
    if (errno == ENOENT)
      vbk_set_error ("%s does not exist: create the mount point first "
                     "(mkdir %s)", dir, dir);
    else
      vbk_set_error ("%s: %s", dir, strerror (errno));
    return -1;
  }
  if (!S_ISDIR (st.st_mode)) {
    vbk_set_error ("%s is not a directory: mount on an empty directory",
                   dir);
    return -1;
  }
  d = opendir (dir);
  if (d == NULL) {
    vbk_set_error ("%s: %s%s", dir, strerror (errno), errno == EACCES
                   ? ": mount on a directory you own" : "");
    return -1;
  }
  while ((de = readdir (d)))
    if (strcmp (de->d_name, ".") && strcmp (de->d_name, "..")) {
      closedir (d);
      vbk_set_error ("%s is not empty: mount on an empty directory (or "
                     "unmount what is there: vbk umount %s)", dir, dir);
      return -1;
    }
  closedir (d);
  if (geteuid () != 0 && (access (dir, W_OK) < 0 || st.st_uid != geteuid ())) {
    vbk_set_error ("%s: no permission to mount here: a user may mount only "
                   "on a directory it owns and can write", dir);
    return -1;
  }
  return 0;
}

/* Whether PROG is an executable on $PATH. */
static int
on_path (const char *prog)
{
  const char *path = getenv ("PATH");
  char buf[PATH_MAX];
  const char *p, *e;

  if (path == NULL)
    path = "/usr/bin:/bin";
  for (p = path; *p; p = *e ? e + 1 : e) {
    e = strchrnul (p, ':');
    snprintf (buf, sizeof buf, "%.*s/%s", (int) (e - p), p, prog);
    if (access (buf, X_OK) == 0)
      return 1;
  }
  return 0;
}

static int
check_fuse (int allow_other)
{
  char line[256];
  FILE *f;
  int fd, found = 0;

  fd = open ("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENODEV || errno == ENXIO)
      vbk_set_error ("/dev/fuse is missing: load the fuse kernel module "
                     "(modprobe fuse), or in a container give it the "
                     "device (--device /dev/fuse)");
    else if (errno == EACCES || errno == EPERM)
      vbk_set_error ("no permission to open /dev/fuse: run as root, or "
                     "make /dev/fuse usable by your user (mode 0666, as "
                     "the fuse3 package sets it)");
    else
      vbk_set_error ("/dev/fuse: %s", strerror (errno));
    return -1;
  }
  close (fd);
  if (geteuid () == 0)
    return 0;
  if (!on_path ("fusermount3")) {
    vbk_set_error ("fusermount3 is missing: a user mounts through it "
                   "(install the fuse3 package)");
    return -1;
  }
  if (allow_other) {
    f = fopen ("/etc/fuse.conf", "r");
    while (f && fgets (line, sizeof line, f))
      if (strncmp (line, "user_allow_other", 16) == 0)
        found = 1;
    if (f)
      fclose (f);
    if (!found) {
      vbk_set_error ("--allow-other needs user_allow_other in "
                     "/etc/fuse.conf for a user (or mount as root)");
      return -1;
    }
  }
  return 0;
}

/* ---- Serving ------------------------------------------------------------ */

struct ready_ctx {
  int fd;                       /* the pipe to the parent, or -1 */
  const char *log;
  const char *dir;
};

/* Tells the parent the outcome: "" for ready, else the message. */
static void
on_ready (void *arg, int err)
{
  struct ready_ctx *c = arg;
  const char *msg = vbk_error ();
  int fd;

  if (err == 0)
    log_info ("mount: %s ready", c->dir);
  if (c->fd < 0)
    return;
  if (err == 0)
    msg = "";
  else if (msg[0] == '\0')
    msg = strerror (-err);
  if (write (c->fd, msg, strlen (msg) + 1) < 0)
    log_warn ("mount: cannot tell the parent: %s", strerror (errno));
  close (c->fd);
  c->fd = -1;
  if (err == 0) {
    /* Leave the terminal: logs go to --log FILE, or nowhere. */
    fd = open (c->log ? c->log : "/dev/null",
               O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
      dup2 (fd, STDERR_FILENO);
      close (fd);
    }
  }
}

static int
serve (struct vbk_ctx *ctx, struct vbk_args *a, const char *dir,
       struct ready_ctx *rc)
{
  struct vbkfs_opts fo = { .repo_uri = vbk_repo_uri (a) };
  struct backup_key_opts ko;
  char pass[1024] = "";
  struct vbkfs_mount_opts mo = {
    .allow_other = vbk_opt (a, "allow-other") != NULL,
    .debug = vbk_opt (a, "debug") != NULL,
    .ready = on_ready,
    .arg = rc,
  };
  struct vbkfs *fs = NULL;
  struct store *st = NULL;
  const char *cache = vbk_opt (a, "cache");
  int r;

  if (cache && parse_size (cache, &fo.cache_bytes) < 0) {
    on_ready (rc, -EINVAL);
    return VBK_EXIT_USAGE;
  }
  /* Every chunk fetched is a buffer of a few MiB, allocated and freed
   * again: from malloc's heaps, reused, rather than mapped afresh each
   * time (a page fault and a zeroed page per 4 KiB of it). */
  mallopt (M_MMAP_THRESHOLD, 32 << 20);
  mallopt (M_TRIM_THRESHOLD, 256 << 20);
  if (vbk_backup_key (a, &ko, pass, sizeof pass, 0)) {
    on_ready (rc, -EINVAL);
    return VBK_EXIT_USAGE;
  }
  fo.repo_key = ko.key_file ? &ko : NULL;
  if (vbk_store_open (ctx, a, &st) < 0) {
    on_ready (rc, -EIO);
    return VBK_EXIT_FAILURE;
  }
  fo.store = st;
  fo.check_later = true;
  vbk_clear_error ();
  r = vbkfs_new (&fo, &fs);
  OPENSSL_cleanse (pass, sizeof pass);
  if (r == 0)
    r = vbkfs_mount (fs, dir, &mo);
  else
    on_ready (rc, r);
  if (r < 0 && rc->fd < 0 && vbk_error ()[0])
    log_error ("mount: %s", vbk_error ());
  vbkfs_free (fs);
  store_close (st);
  return r < 0 ? VBK_EXIT_FAILURE : VBK_EXIT_OK;
}

int
cmd_mount (struct vbk_ctx *ctx, struct vbk_args *a)
{
  struct ready_ctx rc = { .fd = -1, .log = vbk_opt (a, "log") };
  char dir[PATH_MAX], msg[2048];
  const char *cache = vbk_opt (a, "cache");
  uint64_t csize;
  int p[2], fd, status;
  size_t got = 0;
  ssize_t n;
  pid_t pid;

  if (cache && parse_size (cache, &csize) < 0)
    return vbk_usage_error (a, "--cache: %s", vbk_error ());
  vbk_clear_error ();
  if (check_dir (a, a->argv[0]) < 0
      || check_fuse (vbk_opt (a, "allow-other") != NULL) < 0)
    return vbk_fail (a, -EINVAL);
  if (realpath (a->argv[0], dir) == NULL)
    return vbk_fail (a, vbk_errno (-errno, "%s", a->argv[0]));
  rc.dir = dir;

  if (vbk_opt (a, "foreground")) {
    if (rc.log) {
      fd = open (rc.log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0)
        return vbk_fail (a, vbk_errno (-errno, "--log %s", rc.log));
      dup2 (fd, STDERR_FILENO);
      close (fd);
    }
    if (log_level < LOG_LVL_INFO)
      log_level = LOG_LVL_INFO;
    return serve (ctx, a, dir, &rc);
  }

  if (pipe2 (p, O_CLOEXEC) < 0)
    return vbk_fail (a, vbk_errno (-errno, "pipe"));
  fflush (NULL);
  pid = fork ();
  if (pid < 0)
    return vbk_fail (a, vbk_errno (-errno, "fork"));
  if (pid == 0) {
    close (p[0]);
    rc.fd = p[1];
    setsid ();
    if (chdir ("/") < 0)
      _exit (VBK_EXIT_FAILURE);
    fd = open ("/dev/null", O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
      dup2 (fd, STDIN_FILENO);
      dup2 (fd, STDOUT_FILENO);
      close (fd);
    }
    if (rc.log && log_level < LOG_LVL_INFO)
      log_level = LOG_LVL_INFO;
    _exit (serve (ctx, a, dir, &rc));
  }
  close (p[1]);
  while (got < sizeof msg - 1
         && (n = read (p[0], msg + got, sizeof msg - 1 - got)) != 0) {
    if (n < 0) {
      if (errno == EINTR)
        continue;
      break;
    }
    got += n;
    if (memchr (msg, '\0', got))
      break;
  }
  close (p[0]);
  msg[got] = '\0';
  if (got > 0 && msg[0] == '\0')
    return VBK_EXIT_OK;         /* mounted; the child serves it */
  waitpid (pid, &status, 0);
  if (got == 0)
    snprintf (msg, sizeof msg, "the mount process ended before the mount "
              "was ready");
  fprintf (stderr, "vbk: %s: %s\n", a->path, msg);
  return VBK_EXIT_FAILURE;
}

int
cmd_umount (struct vbk_ctx *ctx, struct vbk_args *a)
{
  int status;
  pid_t pid;

  fflush (NULL);
  pid = fork ();
  if (pid < 0)
    return vbk_fail (a, vbk_errno (-errno, "fork"));
  if (pid == 0) {
    execlp ("fusermount3", "fusermount3", "-u", "--", a->argv[0],
            (char *) NULL);
    fprintf (stderr, "vbk: %s: cannot run fusermount3: %s (install the "
             "fuse3 package)\n", a->path, strerror (errno));
    _exit (127);
  }
  if (waitpid (pid, &status, 0) < 0)
    return vbk_fail (a, vbk_errno (-errno, "waitpid"));
  if (!WIFEXITED (status) || WEXITSTATUS (status) != 0) {
    if (!WIFEXITED (status) || WEXITSTATUS (status) != 127)
      fprintf (stderr, "vbk: %s: %s is not unmounted (fusermount3 "
               "failed: see above)\n", a->path, a->argv[0]);
    return VBK_EXIT_FAILURE;
  }
  return VBK_EXIT_OK;
}
