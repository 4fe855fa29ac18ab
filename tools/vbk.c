/* SPDX-License-Identifier: MIT
 *
 * vbk.c - the vbk command: global options, the table of commands and
 * the option parser every command shares.
 *
 * DESIGN: parsing is recursive over the command tree (see internal.h).
 * A group parses only the options before its sub-command's name (getopt
 * with a leading '+'), then hands the rest to the sub-command; a verb
 * parses all of its options wherever they appear.  The global options
 * (--store, --timeout, -v, -h) are accepted at every level.  Usage errors
 * print one line and exit with VBK_EXIT_USAGE; help goes to stdout and
 * exits 0.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common/error.h"
#include "common/log.h"
#include "internal.h"

/* The commands.  Later commands (backup, mount) are added here, one
 * line each. */
static const struct vbk_cmd top_cmds[] = {
  { "image", "VERB [ARGS]", "create, list, inspect, resize, remove, "
    "import and export disk images",
    NULL, 0, 0, NULL, image_cmds },
  { "snapshot", "VERB [ARGS]", "create, list, remove and roll back to "
    "crash-consistent snapshots (alias: snap)",
    NULL, 0, 0, NULL, snap_cmds },
  { "diff", DIFF_SYNOPSIS, "list the extents of an image that changed "
    "since a snapshot", diff_opts, 1, 1, cmd_diff },
  { "lease", "VERB [ARGS]", "show, release or break the lease of the host "
    "that writes an image",
    NULL, 0, 0, NULL, lease_cmds },
  { "backup", "VERB [ARGS]", "incremental backups into a deduplicated "
    "repository: run, list, verify, prune, gc, restore",
    NULL, 0, 0, NULL, backup_cmds },
  { "files", "VERB [ARGS]", "list and copy out the files inside a "
    "snapshot or backup, without mounting", NULL, 0, 0, NULL, files_cmds },
  { "mount", MOUNT_SYNOPSIS, "show snapshots and backups, and the files "
    "inside them, as a read-only tree on DIR (FUSE)",
    mount_opts, 1, 1, cmd_mount },
  { "umount", "DIR", "unmount a vbk mount", NULL, 1, 1, cmd_umount },
  { NULL },
};

static const struct vbk_cmd top = {
  "vbk", "[GLOBAL OPTIONS] COMMAND [VERB] [ARGS]",
  "keeps VM disk images in an object store",
  NULL, 0, 0, NULL, top_cmds,
};

static const struct vbk_opt global_opts[] = {
  { "store", 0, "URI", "the store (default: $VBK_STORE, else "
    VBK_STORE_DEFAULT ")" },
  { "timeout", 0, "SECONDS", "wait at most SECONDS for a cluster (rados; "
    "default 10)" },
  { "verbose", 'v', NULL, "timings and statistics; twice: debug messages" },
  { "help", 'h', NULL, "show this help and exit" },
  { NULL },
};

/* Indexes of the global options in global_opts. */
enum { G_STORE, G_TIMEOUT, G_VERBOSE, G_HELP };

static volatile sig_atomic_t interrupted;

int
vbk_interrupted (void)
{
  return interrupted;
}

static void
on_signal (int sig)
{
  /* A second signal ends the process at once. */
  if (interrupted) {
    signal (sig, SIG_DFL);
    raise (sig);
  }
  interrupted = 1;
}

void
vbk_catch_signals (int on)
{
  struct sigaction sa = { .sa_handler = on ? on_signal : SIG_DFL };

  /* No SA_RESTART: a blocked read returns EINTR and the copy stops. */
  sigemptyset (&sa.sa_mask);
  sigaction (SIGINT, &sa, NULL);
  sigaction (SIGTERM, &sa, NULL);
}

int
vbk_opt_progress (const struct vbk_ctx *ctx, const struct vbk_args *a,
                  enum copy_progress_mode *m)
{
  const char *s = vbk_opt (a, "progress");

  if (s == NULL || strcmp (s, "auto") == 0)
    *m = ctx->progress ? COPY_PROGRESS_BAR : COPY_PROGRESS_NONE;
  else if (strcmp (s, "bar") == 0)
    *m = COPY_PROGRESS_BAR;
  else if (strcmp (s, "json") == 0)
    *m = COPY_PROGRESS_JSON;
  else if (strcmp (s, "none") == 0)
    *m = COPY_PROGRESS_NONE;
  else
    return vbk_usage_error (a, "--progress: expected auto, bar, json or "
                            "none, not '%s'", s);
  return 0;
}

int
vbk_opt_num (const struct vbk_args *a, const char *name, long min, long max,
             long *out)
{
  const char *s = vbk_opt (a, name);
  char *end;
  long v;

  if (s == NULL)
    return 0;
  errno = 0;
  v = strtol (s, &end, 10);
  if (errno || end == s || *end || v < min || v > max)
    return vbk_usage_error (a, "--%s: invalid number '%s' (%ld to %ld)",
                            name, s, min, max);
  *out = v;
  return 0;
}

const char *
vbk_opt (const struct vbk_args *a, const char *name)
{
  const struct vbk_opt *o;
  int i;

  for (i = 0, o = a->cmd->opts; o && o->name; o++, i++)
    if (strcmp (o->name, name) == 0)
      return a->val[i];
  return NULL;
}

const char *
vbk_repo_uri (const struct vbk_args *a)
{
  const char *s = vbk_opt (a, "repo");

  if (s == NULL || *s == '\0')
    s = getenv ("VBK_REPO");
  return s && *s ? s : NULL;
}

const char *
vbk_host_id (const struct vbk_args *a, char *buf, size_t len)
{
  const char *s = vbk_opt (a, "host-id");
  char host[256];

  if (s)
    return s;
  if (gethostname (host, sizeof host) < 0)
    snprintf (host, sizeof host, "localhost");
  host[sizeof host - 1] = '\0';
  snprintf (buf, len, "vbk@%s", host);
  return buf;
}

int
vbk_usage_error (const struct vbk_args *a, const char *fmt, ...)
{
  char msg[1024];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  if (strcmp (a->path, "vbk") == 0)
    fprintf (stderr, "vbk: %s (see 'vbk --help')\n", msg);
  else
    fprintf (stderr, "vbk: %s: %s (see 'vbk %s --help')\n", a->path, msg,
             a->path);
  return VBK_EXIT_USAGE;
}

int
vbk_check_name (const struct vbk_args *a, const char *name)
{
  vbk_clear_error ();
  if (image_name_check (name) < 0)
    return vbk_usage_error (a, "%s", vbk_error ()[0] ? vbk_error ()
                            : "invalid image name");
  return 0;
}

int
vbk_parse_snap_ref (const struct vbk_args *a, const char *arg,
                    struct vbk_snap_ref *ref)
{
  const char *at = strchr (arg, '@');
  char image[IMAGE_NAME_MAX + 2];
  const char *msg;
  size_t n;

  if (at == NULL)
    return vbk_usage_error (a, "'%s': expected IMAGE@SNAP", arg);
  if (strchr (at + 1, '@'))
    return vbk_usage_error (a, "'%s': expected IMAGE@SNAP with exactly one "
                            "'@'", arg);
  n = at - arg;
  if (n == 0)
    return vbk_usage_error (a, "'%s': missing image name before '@'", arg);
  if (at[1] == '\0')
    return vbk_usage_error (a, "'%s': missing snapshot name after '@'", arg);
  if (n > IMAGE_NAME_MAX)
    n = IMAGE_NAME_MAX + 1;     /* too long: image_name_check says so */
  snprintf (image, sizeof image, "%.*s", (int) n, arg);
  vbk_clear_error ();
  if (image_name_check (image) < 0)
    return vbk_usage_error (a, "'%s': %s", arg, vbk_error ());
  vbk_clear_error ();
  if (image_name_check (at + 1) < 0) {
    /* The rule is the same for snapshots; say which part is wrong. */
    msg = vbk_error ();
    if (strncmp (msg, "invalid image name", 18) == 0)
      return vbk_usage_error (a, "'%s': invalid snapshot name%s", arg,
                              msg + 18);
    return vbk_usage_error (a, "'%s': %s", arg, msg);
  }
  snprintf (ref->image, sizeof ref->image, "%s", image);
  snprintf (ref->snap, sizeof ref->snap, "%s", at + 1);
  return 0;
}

void
vbk_print_json (json_object *o)
{
  int flags = JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED
    | JSON_C_TO_STRING_NOSLASHESCAPE;

  printf ("%s\n", json_object_to_json_string_ext (o, flags));
  json_object_put (o);
}

void
vbk_json_str (json_object *o, const char *key, const char *v)
{
  json_object_object_add (o, key, v ? json_object_new_string (v) : NULL);
}

void
vbk_json_u64 (json_object *o, const char *key, uint64_t v)
{
  json_object_object_add (o, key, json_object_new_uint64 (v));
}

void
vbk_json_i64 (json_object *o, const char *key, int64_t v)
{
  json_object_object_add (o, key, json_object_new_int64 (v));
}

void
vbk_json_int (json_object *o, const char *key, int v)
{
  json_object_object_add (o, key, json_object_new_int (v));
}

void
vbk_json_bool (json_object *o, const char *key, int v)
{
  json_object_object_add (o, key, json_object_new_boolean (v));
}

const char *
vbk_format_time (uint64_t ms, char *buf, size_t len)
{
  time_t t = (time_t) (ms / 1000);
  struct tm tm;

  if (localtime_r (&t, &tm) == NULL
      || strftime (buf, len, "%Y-%m-%d %H:%M:%S", &tm) == 0)
    snprintf (buf, len, "%" PRIu64 " ms", ms);
  return buf;
}

int
vbk_fail (const struct vbk_args *a, int err)
{
  const char *msg = vbk_error ();

  if (msg[0] == '\0')
    msg = strerror (err < 0 ? -err : err);
  fprintf (stderr, "vbk: %s: %s\n", a->path, msg);
  return VBK_EXIT_FAILURE;
}

/* Adds "timeout=SECONDS" to the innermost URI when it is a rados one
 * (a fault: URI wraps another after its '@').  The rados backend takes
 * the last value of a repeated key, so an explicit --timeout wins over
 * one already in the URI. */
static char *
uri_with_timeout (const char *uri, const char *timeout)
{
  const char *inner = uri, *at;
  char *out;

  while (strncmp (inner, "fault:", 6) == 0 && (at = strchr (inner, '@')))
    inner = at + 1;
  if (timeout == NULL || strncmp (inner, "rados:", 6) != 0)
    return strdup (uri);
  if (asprintf (&out, "%s%ctimeout=%s", uri,
                strchr (inner, '?') ? '&' : '?', timeout) < 0)
    return NULL;
  return out;
}

int
vbk_store_open (struct vbk_ctx *ctx, const struct vbk_args *a,
                struct store **st)
{
  const char *uri = ctx->store_uri;
  char *full;
  int r;

  if (uri == NULL || *uri == '\0')
    uri = getenv ("VBK_STORE");
  if (uri == NULL || *uri == '\0')
    uri = VBK_STORE_DEFAULT;
  full = uri_with_timeout (uri, ctx->timeout);
  if (full == NULL) {
    vbk_errno (-ENOMEM, "store %s", uri);
    return vbk_fail (a, -ENOMEM), -ENOMEM;
  }
  log_debug ("opening store %s", full);
  vbk_clear_error ();
  r = store_open (full, st);
  free (full);
  if (r < 0) {
    vbk_fail (a, r);
    return r;
  }
  return 0;
}

/* ---- Help ---------------------------------------------------------------- */

static int
opt_width (const struct vbk_opt *o)
{
  /* "-x, --name ARG" or "    --name ARG": long names line up. */
  return 6 + (int) strlen (o->name) + (o->arg ? 1 + (int) strlen (o->arg) : 0);
}

static void
print_opts (const char *title, const struct vbk_opt *opts, int width)
{
  const struct vbk_opt *o;
  char left[128];

  printf ("\n%s:\n", title);
  for (o = opts; o->name; o++) {
    if (o->short_name)
      snprintf (left, sizeof left, "-%c, --%s%s%s", o->short_name, o->name,
                o->arg ? " " : "", o->arg ? o->arg : "");
    else
      snprintf (left, sizeof left, "    --%s%s%s", o->name,
                o->arg ? " " : "", o->arg ? o->arg : "");
    printf ("  %-*s  %s\n", width, left, o->help);
  }
}

static void
print_help (const struct vbk_cmd *cmd, const char *path)
{
  const struct vbk_opt *o;
  const struct vbk_cmd *s;
  int width = 0, w;

  if (cmd == &top)
    printf ("Usage: vbk %s\n\nvbk %s.\n\n"
            "Stores (URI): local:/PATH (a directory),\n"
            "  rados:POOL[/NAMESPACE][?conf=FILE&id=NAME] (a Ceph pool),\n"
            "  fault:SPEC@URI (another store with injected errors, "
            "for tests).\n", cmd->synopsis, cmd->summary);
  else
    printf ("Usage: vbk [GLOBAL OPTIONS] %s %s\n\n%c%s.\n", path,
            cmd->synopsis, cmd->summary[0] - 'a' + 'A', cmd->summary + 1);

  if (cmd->sub) {
    for (s = cmd->sub; s->name; s++)
      if ((w = (int) strlen (s->name)) > width)
        width = w;
    printf ("\nCommands:\n");
    for (s = cmd->sub; s->name; s++)
      printf ("  %-*s  %s\n", width, s->name, s->summary);
    width = 0;
  }

  for (o = global_opts; o->name; o++)
    if ((w = opt_width (o)) > width)
      width = w;
  for (o = cmd->opts; o && o->name; o++)
    if ((w = opt_width (o)) > width)
      width = w;
  if (cmd->opts && cmd->opts[0].name)
    print_opts ("Options", cmd->opts, width);
  print_opts ("Global options (anywhere on the line)", global_opts, width);

  printf ("\nExit status: 0 success, 1 failure (no such image, name taken,"
          " store error, ...),\n2 usage error (unknown command or option,"
          " missing argument, malformed value).\n");
  if (cmd->sub)
    printf ("Run 'vbk %s%sCOMMAND --help' for the options of a command.\n",
            cmd == &top ? "" : path, cmd == &top ? "" : " ");
}

/* ---- Parsing ------------------------------------------------------------- */

static void
list_names (const struct vbk_cmd *sub, char *buf, size_t len)
{
  size_t n = 0;

  buf[0] = '\0';
  for (; sub->name && n < len; sub++)
    n += snprintf (buf + n, len - n, "%s%s", n ? ", " : "", sub->name);
}

/* Parses ARGV (ARGV[0] is the command's name) into A and CTX.  Returns
 * -1 to go on, or an exit status. */
static int
parse (struct vbk_ctx *ctx, const struct vbk_cmd *cmd, int argc, char **argv,
       struct vbk_args *a)
{
  struct option lopts[VBK_OPTS_MAX + 8];
  char sopts[2 * (VBK_OPTS_MAX + 8) + 3];
  const struct vbk_opt *o;
  int nlocal = 0, n = 0, ns = 0, i, c, help = 0;

  for (o = cmd->opts; o && o->name; o++)
    nlocal++;
  if (nlocal > VBK_OPTS_MAX)
    abort ();

  /* A group stops at its sub-command; ':' reports a missing argument. */
  if (cmd->sub)
    sopts[ns++] = '+';
  sopts[ns++] = ':';
  for (i = 0; i < nlocal + 4; i++) {
    o = i < nlocal ? &cmd->opts[i] : &global_opts[i - nlocal];
    lopts[n++] = (struct option) { o->name,
      o->arg ? required_argument : no_argument, NULL, 0x100 + i };
    if (o->short_name) {
      sopts[ns++] = o->short_name;
      if (o->arg)
        sopts[ns++] = ':';
    }
  }
  lopts[n] = (struct option) { NULL };
  sopts[ns] = '\0';

  opterr = 0;
  optind = 0;            /* GNU: reinitialise for this argument vector */
  while ((c = getopt_long (argc, argv, sopts, lopts, NULL)) != -1) {
    if (c == '?') {
      if (optopt)
        return vbk_usage_error (a, "unknown option '-%c'", optopt);
      return vbk_usage_error (a, "unknown option '%s'", argv[optind - 1]);
    }
    if (c == ':')
      return vbk_usage_error (a, "option '%s' needs an argument",
                              argv[optind - 1]);
    if (c < 0x100) {
      for (i = 0; i < nlocal + 4; i++) {
        o = i < nlocal ? &cmd->opts[i] : &global_opts[i - nlocal];
        if (o->short_name == c)
          break;
      }
      c = 0x100 + i;
    }
    i = c - 0x100;
    if (i < nlocal) {
      a->val[i] = optarg ? optarg : "";
      continue;
    }
    switch (i - nlocal) {
    case G_STORE:
      ctx->store_uri = optarg;
      break;
    case G_TIMEOUT:
      {
        char *end;
        long t;

        errno = 0;
        t = strtol (optarg, &end, 10);
        if (errno || end == optarg || *end || t <= 0 || t > 86400)
          return vbk_usage_error (a, "--timeout: invalid number of "
                                  "seconds '%s' (1 to 86400)", optarg);
        ctx->timeout = optarg;
      }
      break;
    case G_VERBOSE:
      ctx->verbose++;
      log_level = ctx->verbose > 1 ? LOG_LVL_DEBUG : LOG_LVL_INFO;
      break;
    case G_HELP:
      help = 1;
      break;
    }
  }
  if (help) {
    print_help (cmd, a->path);
    return VBK_EXIT_OK;
  }
  a->argc = argc - optind;
  a->argv = argv + optind;
  return -1;
}

static int
run_cmd (struct vbk_ctx *ctx, const struct vbk_cmd *cmd, const char *path,
         int argc, char **argv)
{
  struct vbk_args a = { .cmd = cmd, .path = path };
  const struct vbk_cmd *s;
  char names[512], *subpath;
  int r;

  if ((r = parse (ctx, cmd, argc, argv, &a)) >= 0)
    return r;

  if (cmd->sub) {
    list_names (cmd->sub, names, sizeof names);
    if (a.argc == 0)
      return vbk_usage_error (&a, "missing command (one of: %s)", names);
    for (s = cmd->sub; s->name; s++)
      if (strcmp (s->name, a.argv[0]) == 0
          || (cmd == &top && !strcmp (a.argv[0], "snap")
              && !strcmp (s->name, "snapshot")))     /* the short alias */
        break;
    if (s->name == NULL)
      return vbk_usage_error (&a, "unknown command '%s' (one of: %s)",
                              a.argv[0], names);
    if (cmd == &top)
      subpath = strdup (s->name);
    else if (asprintf (&subpath, "%s %s", path, s->name) < 0)
      subpath = NULL;
    if (subpath == NULL) {
      perror ("vbk");
      return VBK_EXIT_FAILURE;
    }
    r = run_cmd (ctx, s, subpath, a.argc, a.argv);
    free (subpath);
    return r;
  }

  if (a.argc < cmd->min_args)
    return vbk_usage_error (&a, "missing argument (usage: vbk %s %s)",
                            path, cmd->synopsis);
  if (cmd->max_args >= 0 && a.argc > cmd->max_args)
    return vbk_usage_error (&a, "unexpected argument '%s'",
                            a.argv[cmd->max_args]);
  return cmd->run (ctx, &a);
}

int
main (int argc, char **argv)
{
  struct vbk_ctx ctx = { 0 };
  int r;

  /* Only warnings and errors unless -v. */
  log_level = LOG_LVL_WARN;
  ctx.progress = isatty (STDERR_FILENO);

  r = run_cmd (&ctx, &top, "vbk", argc, argv);

  if (fflush (stdout) == EOF || ferror (stdout)) {
    fprintf (stderr, "vbk: write error on standard output: %s\n",
             strerror (errno));
    if (r == VBK_EXIT_OK)
      r = VBK_EXIT_FAILURE;
  }
  return r;
}
