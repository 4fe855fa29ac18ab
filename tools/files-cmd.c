/* SPDX-License-Identifier: MIT
 *
 * files-cmd.c - "vbk files ls|get SOURCE:PATH": the files inside a
 * snapshot or backup, read without FUSE.
 *
 * DESIGN: the same tree as "vbk mount" (fuse/vbkfs.h), used directly:
 * SOURCE:PATH names the path files/PATH of a volume,
 *   snap:IMAGE@SNAP:PATH     /images/IMAGE/snapshots/SNAP/files/PATH
 *   backup:IMAGE/ID:PATH     /backups/IMAGE/ID/files/PATH
 * so what "ls" shows and what "get" copies are byte for byte what a mount
 * shows.  On a partitioned disk PATH starts with the partition (/p1/...).
 * get copies a file, or a directory recursively (files, directories,
 * symlinks; modes and modification times kept), to OUT ("-": a file to
 * stdout).  A file that cannot be read fails the command, after the rest
 * is copied, with its path on stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include <openssl/crypto.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "fuse/vbkfs.h"
#include "internal.h"

#define COPY_BUF (1u << 20)

/* Turns SOURCE:PATH into a tree path.  Returns 0 or a usage error. */
static int
tree_path (const struct vbk_args *a, const char *arg, char *out, size_t len)
{
  const char *ref, *colon, *path;
  struct vbk_snap_ref sr;
  char buf[2 * IMAGE_NAME_MAX + 80];
  size_t n;
  int r;

  if (strncmp (arg, "snap:", 5) == 0)
    ref = arg + 5;
  else if (strncmp (arg, "backup:", 7) == 0)
    ref = arg + 7;
  else
    return vbk_usage_error (a, "'%s': expected snap:IMAGE@SNAP:PATH or "
                            "backup:IMAGE/ID:PATH", arg);
  colon = strchr (ref, ':');
  path = colon ? colon + 1 : "/";
  n = colon ? (size_t) (colon - ref) : strlen (ref);
  if (n >= sizeof buf)
    return vbk_usage_error (a, "'%s': name too long", arg);
  memcpy (buf, ref, n);
  buf[n] = '\0';
  if (ref == arg + 5) {
    if ((r = vbk_parse_snap_ref (a, buf, &sr)) != 0)
      return r;
    snprintf (out, len, "/images/%s/snapshots/%s/files/%s", sr.image,
              sr.snap, path);
  }
  else {
    char *slash = strchr (buf, '/');

    if (slash == NULL || slash == buf || slash[1] == '\0'
        || strchr (slash + 1, '/'))
      return vbk_usage_error (a, "'%s': expected backup:IMAGE/ID:PATH", arg);
    if (vbk_repo_uri (a) == NULL)
      return vbk_usage_error (a, "'%s': no repository: give --repo URI or "
                              "set VBK_REPO", arg);
    *slash = '\0';
    if ((r = vbk_check_name (a, buf)) != 0)
      return r;
    snprintf (out, len, "/backups/%s/%s/files/%s", buf, slash + 1, path);
  }
  return 0;
}

static int
open_tree (struct vbk_ctx *ctx, const struct vbk_args *a, struct store **st,
           struct vbkfs **fs)
{
  struct vbkfs_opts o = { .repo_uri = vbk_repo_uri (a) };
  struct backup_key_opts ko;
  char pass[1024] = "";
  int r;

  if (vbk_backup_key (a, &ko, pass, sizeof pass, 0))
    return -EINVAL;
  o.repo_key = ko.key_file ? &ko : NULL;
  if (vbk_store_open (ctx, a, st) < 0)
    return -EIO;
  o.store = *st;
  vbk_clear_error ();
  r = vbkfs_new (&o, fs);
  OPENSSL_cleanse (pass, sizeof pass);
  if (r < 0) {
    vbk_fail (a, r);
    store_close (*st);
  }
  return r;
}

/* A message for a failed call on tree path P, shown as ARG. */
static int
path_fail (const struct vbk_args *a, const char *arg, int r)
{
  const char *msg = vbk_error ();

  fprintf (stderr, "vbk: %s: %s: %s\n", a->path, arg,
           msg[0] ? msg : strerror (-r));
  return VBK_EXIT_FAILURE;
}

/* ---- ls ------------------------------------------------------------------ */

struct ls_ctx {
  char **names;
  size_t n, cap;
};

static int
ls_one (void *arg, const char *name, const struct stat *st)
{
  struct ls_ctx *c = arg;

  if (c->n == c->cap) {
    size_t cap = c->cap ? 2 * c->cap : 64;
    char **v = realloc (c->names, cap * sizeof *v);

    if (v == NULL)
      return -ENOMEM;
    c->names = v;
    c->cap = cap;
  }
  c->names[c->n] = strdup (name);
  if (c->names[c->n] == NULL)
    return -ENOMEM;
  c->n++;
  return 0;
}

static int
cmp_str (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

static char
type_char (mode_t m)
{
  return S_ISDIR (m) ? 'd' : S_ISLNK (m) ? 'l' : S_ISREG (m) ? '-'
    : S_ISCHR (m) ? 'c' : S_ISBLK (m) ? 'b' : S_ISFIFO (m) ? 'p' : 's';
}

static void
print_entry (struct vbkfs *fs, const char *tpath, const char *name,
             const struct stat *st, json_object *arr)
{
  char link[PATH_MAX] = "", when[64];
  json_object *o;

  if (S_ISLNK (st->st_mode)
      && vbkfs_readlink (fs, tpath, link, sizeof link) < 0)
    link[0] = '\0';
  if (arr) {
    o = json_object_new_object ();
    vbk_json_str (o, "name", name);
    json_object_object_add (o, "type", json_object_new_string
                            (S_ISDIR (st->st_mode) ? "dir"
                             : S_ISLNK (st->st_mode) ? "symlink"
                             : S_ISREG (st->st_mode) ? "file" : "special"));
    vbk_json_int (o, "mode", st->st_mode & 07777);
    vbk_json_i64 (o, "size", (int64_t) st->st_size);
    json_object_object_add (o, "allocated", json_object_new_int64
                            ((int64_t) st->st_blocks * 512));
    vbk_json_i64 (o, "mtime", st->st_mtim.tv_sec);
    vbk_json_int (o, "uid", st->st_uid);
    vbk_json_int (o, "gid", st->st_gid);
    if (link[0])
      vbk_json_str (o, "target", link);
    json_object_array_add (arr, o);
    return;
  }
  vbk_format_time ((uint64_t) st->st_mtim.tv_sec * 1000, when, sizeof when);
  printf ("%c%04o %5u %5u %12jd %s %s%s%s\n", type_char (st->st_mode),
          (unsigned) (st->st_mode & 07777), (unsigned) st->st_uid,
          (unsigned) st->st_gid, (intmax_t) st->st_size, when, name,
          link[0] ? " -> " : "", link);
}

static int
cmd_ls (struct vbk_ctx *ctx, struct vbk_args *a)
{
  char tpath[PATH_MAX + 512], child[PATH_MAX + 1024];
  struct ls_ctx c = { 0 };
  json_object *arr = NULL;
  struct vbkfs *fs = NULL;
  struct store *st = NULL;
  struct stat sb;
  size_t i;
  int r, rc = VBK_EXIT_OK;

  if ((r = tree_path (a, a->argv[0], tpath, sizeof tpath)) != 0)
    return r;
  if (open_tree (ctx, a, &st, &fs) < 0)
    return VBK_EXIT_FAILURE;
  if (vbk_opt (a, "json"))
    arr = json_object_new_array ();
  vbk_clear_error ();
  r = vbkfs_getattr (fs, tpath, &sb);
  if (r < 0) {
    rc = path_fail (a, a->argv[0], r);
    goto out;
  }
  if (!S_ISDIR (sb.st_mode)) {
    const char *base = strrchr (tpath, '/');

    print_entry (fs, tpath, base ? base + 1 : tpath, &sb, arr);
    goto out;
  }
  r = vbkfs_readdir (fs, tpath, ls_one, &c);
  if (r < 0) {
    rc = path_fail (a, a->argv[0], r);
    goto out;
  }
  if (c.n > 1)
    qsort (c.names, c.n, sizeof *c.names, cmp_str);
  for (i = 0; i < c.n; i++) {
    snprintf (child, sizeof child, "%s/%s", tpath, c.names[i]);
    vbk_clear_error ();
    r = vbkfs_getattr (fs, child, &sb);
    if (r < 0) {
      fprintf (stderr, "vbk: %s: %s: %s\n", a->path, c.names[i],
               vbk_error ()[0] ? vbk_error () : strerror (-r));
      rc = VBK_EXIT_FAILURE;
      continue;
    }
    print_entry (fs, child, c.names[i], &sb, arr);
  }

 out:
  if (rc == VBK_EXIT_OK && arr)
    vbk_print_json (arr);
  else
    json_object_put (arr);
  for (i = 0; i < c.n; i++)
    free (c.names[i]);
  free (c.names);
  vbkfs_free (fs);
  store_close (st);
  return rc;
}

/* ---- get ------------------------------------------------------------------- */

struct get_ctx {
  const struct vbk_args *a;
  struct vbkfs *fs;
  char *buf;
  int failed;
  uint64_t files, bytes;
};

static void
set_times (const char *out, const struct stat *sb, int dirfd_flags)
{
  struct timespec ts[2] = { sb->st_atim, sb->st_mtim };

  utimensat (AT_FDCWD, out, ts, dirfd_flags);
}

static int
get_file (struct get_ctx *g, const char *tpath, const char *out,
          const struct stat *sb)
{
  struct vbkfs_file *f;
  uint64_t off = 0;
  ssize_t n;
  int fd, r;

  vbk_clear_error ();
  r = vbkfs_open (g->fs, tpath, &f);
  if (r < 0)
    return r;
  if (strcmp (out, "-") == 0)
    fd = STDOUT_FILENO;
  else {
    fd = open (out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
               (sb->st_mode & 07777) | 0200);
    if (fd < 0) {
      r = vbk_errno (-errno, "%s", out);
      vbkfs_release (f);
      return r;
    }
  }
  for (;;) {
    n = vbkfs_read (f, g->buf, COPY_BUF, off);
    if (n <= 0)
      break;
    if (write (fd, g->buf, n) != n) {
      n = vbk_errno (-errno, "write %s", out);
      break;
    }
    off += n;
  }
  vbkfs_release (f);
  if (fd != STDOUT_FILENO) {
    if (n == 0 && fchmod (fd, sb->st_mode & 07777) < 0)
      n = vbk_errno (-errno, "chmod %s", out);
    if (close (fd) < 0 && n == 0)
      n = vbk_errno (-errno, "close %s", out);
    if (n == 0)
      set_times (out, sb, 0);
  }
  g->files++;
  g->bytes += off;
  return n < 0 ? (int) n : 0;
}

static int get_tree (struct get_ctx *g, const char *tpath, const char *out);

static int
get_dir (struct get_ctx *g, const char *tpath, const char *out,
         const struct stat *sb)
{
  struct ls_ctx c = { 0 };
  char *cp = NULL, *co = NULL;
  size_t i;
  int r;

  if (mkdir (out, 0700) < 0 && errno != EEXIST)
    return vbk_errno (-errno, "mkdir %s", out);
  r = vbkfs_readdir (g->fs, tpath, ls_one, &c);
  for (i = 0; r == 0 && i < c.n; i++) {
    if (asprintf (&cp, "%s/%s", tpath, c.names[i]) < 0
        || asprintf (&co, "%s/%s", out, c.names[i]) < 0) {
      r = -ENOMEM;
      break;
    }
    get_tree (g, cp, co);
    free (cp);
    free (co);
    cp = co = NULL;
  }
  for (i = 0; i < c.n; i++)
    free (c.names[i]);
  free (c.names);
  chmod (out, sb->st_mode & 07777);
  set_times (out, sb, 0);
  return r;
}

/* Copies TPATH to OUT; a failure is reported and counted, not returned. */
static int
get_tree (struct get_ctx *g, const char *tpath, const char *out)
{
  char link[PATH_MAX];
  struct stat sb;
  int r;

  vbk_clear_error ();
  r = vbkfs_getattr (g->fs, tpath, &sb);
  if (r == 0) {
    if (S_ISDIR (sb.st_mode))
      r = get_dir (g, tpath, out, &sb);
    else if (S_ISLNK (sb.st_mode)) {
      r = vbkfs_readlink (g->fs, tpath, link, sizeof link);
      if (r == 0 && symlink (link, out) < 0)
        r = vbk_errno (-errno, "symlink %s", out);
      if (r == 0)
        set_times (out, &sb, AT_SYMLINK_NOFOLLOW);
    }
    else if (S_ISREG (sb.st_mode))
      r = get_file (g, tpath, out, &sb);
    else
      log_warn ("files get: %s: special file not copied", tpath);
  }
  if (r < 0) {
    const char *rel = strstr (tpath, "/files/");

    fprintf (stderr, "vbk: %s: %s: %s\n", g->a->path, rel ? rel + 7 : tpath,
             vbk_error ()[0] ? vbk_error () : strerror (-r));
    g->failed++;
  }
  return 0;
}

static int
cmd_get (struct vbk_ctx *ctx, struct vbk_args *a)
{
  struct get_ctx g = { .a = a };
  char tpath[PATH_MAX + 512];
  struct store *st = NULL;
  struct stat sb;
  int r;

  if ((r = tree_path (a, a->argv[0], tpath, sizeof tpath)) != 0)
    return r;
  if (open_tree (ctx, a, &st, &g.fs) < 0)
    return VBK_EXIT_FAILURE;
  g.buf = malloc (COPY_BUF);
  if (g.buf == NULL) {
    r = vbk_fail (a, -ENOMEM);
    goto out;
  }
  vbk_clear_error ();
  r = vbkfs_getattr (g.fs, tpath, &sb);
  if (r < 0) {
    r = path_fail (a, a->argv[0], r);
    goto out;
  }
  if (strcmp (a->argv[1], "-") == 0 && !S_ISREG (sb.st_mode)) {
    r = vbk_usage_error (a, "'-' (stdout) takes a regular file only");
    goto out;
  }
  get_tree (&g, tpath, a->argv[1]);
  if (ctx->verbose)
    log_info ("files get: %" PRIu64 " files, %" PRIu64 " bytes", g.files,
              g.bytes);
  r = g.failed ? VBK_EXIT_FAILURE : VBK_EXIT_OK;

 out:
  free (g.buf);
  vbkfs_free (g.fs);
  store_close (st);
  return r;
}

static const struct vbk_opt ls_opts[] = {
  { "repo", 0, "URI", "the backup repository (for backup:...)" },
  VBK_KEY_OPTS,
  { "json", 0, NULL, "print JSON" },
  { NULL },
};

static const struct vbk_opt get_opts[] = {
  { "repo", 0, "URI", "the backup repository (for backup:...)" },
  VBK_KEY_OPTS,
  { NULL },
};

const struct vbk_cmd files_cmds[] = {
  { "ls", "SOURCE:PATH [--json]", "list a directory (or show a file) "
    "inside snap:IMAGE@SNAP or backup:IMAGE/ID",
    ls_opts, 1, 1, cmd_ls },
  { "get", "SOURCE:PATH OUT", "copy a file or a directory tree out of "
    "snap:IMAGE@SNAP or backup:IMAGE/ID (OUT '-': a file to stdout)",
    get_opts, 2, 2, cmd_get },
  { NULL },
};
