/* SPDX-License-Identifier: MIT
 *
 * backup-cmd.c - the "vbk backup" verbs: init, run, ls, info, verify,
 * prune, gc, rm, protect, unprotect, restore.
 *
 * Each verb checks its arguments first (usage errors exit 2 before any
 * store is opened), opens the repository (--repo, else $VBK_REPO) and,
 * for run and restore, the images' store (--store), then makes one
 * backup-library call.  --json prints one JSON document on stdout;
 * --progress chooses a bar (default on a terminal), JSON lines or none
 * on stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include <json-c/json.h>

#include "backup/backup.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "internal.h"

/* ---- Common --------------------------------------------------------------------- */

/* Reads one line from the terminal without echo into BUF. */
static int
prompt (const char *what, char *buf, size_t len)
{
  struct termios old, noecho;
  size_t n = 0;
  int fd, echo_off;
  char c;

  if ((fd = open ("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY)) < 0)
    return -ENOTTY;
  echo_off = tcgetattr (fd, &old) == 0;
  if (echo_off) {
    noecho = old;
    noecho.c_lflag &= ~(tcflag_t) ECHO;
    noecho.c_lflag |= ECHONL;
    tcsetattr (fd, TCSAFLUSH, &noecho);
  }
  if (write (fd, what, strlen (what)) < 0)
    n = 0;
  while (read (fd, &c, 1) == 1 && c != '\n')
    if (n + 1 < len)
      buf[n++] = c;
  buf[n] = '\0';
  if (echo_off)
    tcsetattr (fd, TCSAFLUSH, &old);
  close (fd);
  return 0;
}

int
vbk_backup_key (const struct vbk_args *a, struct backup_key_opts *ko,
                char *pass, size_t len, int confirm)
{
  const char *kf = vbk_opt (a, "key-file"), *pf;
  char again[1024];
  size_t n;
  FILE *f;

  memset (ko, 0, sizeof *ko);
  if (kf == NULL)
    kf = getenv ("VBK_KEY_FILE");
  if (kf == NULL || kf[0] == '\0') {
    if (vbk_opt (a, "passphrase-file"))
      return vbk_usage_error (a, "--passphrase-file goes with --key-file");
    return 0;
  }
  ko->key_file = kf;
  if ((pf = vbk_opt (a, "passphrase-file"))) {
    if ((f = fopen (pf, "re")) == NULL) {
      fprintf (stderr, "vbk: %s: passphrase file %s: %s\n", a->path, pf,
               strerror (errno));
      return VBK_EXIT_FAILURE;
    }
    if (fgets (pass, (int) len, f) == NULL)
      pass[0] = '\0';
    fclose (f);
    n = strlen (pass);
    if (n && pass[n - 1] == '\n')
      pass[--n] = '\0';
  }
  else if (getenv ("VBK_PASSPHRASE"))
    snprintf (pass, len, "%s", getenv ("VBK_PASSPHRASE"));
  else {
    if (prompt ("Passphrase: ", pass, len) < 0)
      return vbk_usage_error (a, "no passphrase: give --passphrase-file, set "
                              "VBK_PASSPHRASE or run on a terminal");
    if (confirm) {
      prompt ("Passphrase again: ", again, sizeof again);
      if (strcmp (pass, again) != 0) {
        OPENSSL_cleanse (again, sizeof again);
        fprintf (stderr, "vbk: %s: the passphrases differ\n", a->path);
        return VBK_EXIT_FAILURE;
      }
      OPENSSL_cleanse (again, sizeof again);
    }
  }
  if (pass[0] == '\0')
    return vbk_usage_error (a, "the passphrase is empty");
  ko->passphrase = pass;
  return 0;
}

/* Opens the repository; prints the error; returns 0 or an exit status. */
static int
open_repo (const struct vbk_args *a, struct backup_repo **r)
{
  const char *uri = vbk_repo_uri (a);
  struct backup_key_opts ko;
  char pass[1024] = "";
  int e, rc;

  if (uri == NULL)
    return vbk_usage_error (a, "no repository: give --repo URI or set "
                            "VBK_REPO");
  if ((rc = vbk_backup_key (a, &ko, pass, sizeof pass, 0)))
    return rc;
  vbk_clear_error ();
  e = backup_repo_open_key (uri, ko.key_file ? &ko : NULL, r);
  OPENSSL_cleanse (pass, sizeof pass);
  if (e < 0)
    return vbk_fail (a, e);
  return 0;
}

static int
check_id (const struct vbk_args *a, const char *id)
{
  size_t i, n = strlen (id);

  for (i = 0; i < n; i++)
    if (!(id[i] == '-' || (id[i] >= '0' && id[i] <= '9')
          || (id[i] >= 'a' && id[i] <= 'z') || (id[i] >= 'A' && id[i] <= 'Z')))
      break;
  if (n == 0 || n > 63 || i < n)
    return vbk_usage_error (a, "invalid backup id '%s'", id);
  return 0;
}

static json_object *
entry_json (const struct backup_entry *e)
{
  json_object *o = json_object_new_object ();

  vbk_json_str (o, "id", e->id);
  vbk_json_str (o, "image", e->image);
  vbk_json_u64 (o, "size", e->size);
  vbk_json_u64 (o, "time_ms", e->time_ms);
  vbk_json_u64 (o, "chunk_size", e->chunk_size);
  vbk_json_bool (o, "protected", e->protected_);
  return o;
}

/* ---- init ----------------------------------------------------------------------- */

static int
cmd_init (struct vbk_ctx *ctx, struct vbk_args *a)
{
  const char *uri = a->argc ? a->argv[0] : vbk_repo_uri (a);
  const char *cs = vbk_opt (a, "chunk-size");
  uint64_t v = BACKUP_CHUNK_SIZE_DEFAULT;
  struct backup_key_opts ko;
  char pass[1024] = "";
  long iter = 0;
  int e, rc;

  if (uri == NULL)
    return vbk_usage_error (a, "no repository: give REPO, --repo URI or set "
                            "VBK_REPO");
  if (cs && parse_size (cs, &v) < 0)
    return vbk_usage_error (a, "--chunk-size: %s", vbk_error ());
  if (!is_power_of_2 (v) || v < BACKUP_CHUNK_SIZE_MIN
      || v > BACKUP_CHUNK_SIZE_MAX)
    return vbk_usage_error (a, "--chunk-size: invalid chunk size '%s': must "
                            "be a power of two from 4K to 64M", cs);
  if ((rc = vbk_opt_num (a, "kdf-iterations", 1000, 100000000, &iter)))
    return rc;
  if (vbk_opt (a, "encrypt") && vbk_opt (a, "key-file") == NULL)
    return vbk_usage_error (a, "--encrypt needs --key-file FILE (the new "
                            "key file)");
  if (vbk_opt (a, "encrypt") == NULL
      && (vbk_opt (a, "key-file") || vbk_opt (a, "kdf-iterations")))
    return vbk_usage_error (a, "--key-file and --kdf-iterations go with "
                            "--encrypt");
  memset (&ko, 0, sizeof ko);
  if (vbk_opt (a, "encrypt")
      && (rc = vbk_backup_key (a, &ko, pass, sizeof pass, 1)))
    return rc;
  ko.kdf_iterations = (uint32_t) iter;
  vbk_clear_error ();
  e = backup_repo_create (uri, (uint32_t) v, ko.key_file ? &ko : NULL);
  OPENSSL_cleanse (pass, sizeof pass);
  if (e < 0)
    return vbk_fail (a, e);
  if (vbk_opt (a, "json")) {
    json_object *o = json_object_new_object ();

    vbk_json_str (o, "repo", uri);
    vbk_json_u64 (o, "chunk_size", v);
    vbk_json_bool (o, "encrypted", ko.key_file != NULL);
    vbk_print_json (o);
  }
  else
    printf ("%s\n", uri);
  return VBK_EXIT_OK;
}

/* ---- run -------------------------------------------------------------------------- */

static json_object *
result_json (const struct backup_run_result *r)
{
  json_object *o = json_object_new_object ();

  vbk_json_str (o, "id", r->id);
  vbk_json_str (o, "image", r->image);
  vbk_json_str (o, "snapshot", r->snapshot);
  vbk_json_str (o, "parent", r->parent[0] ? r->parent : NULL);
  vbk_json_bool (o, "full", r->full);
  vbk_json_str (o, "full_reason", r->full ? r->full_reason : NULL);
  vbk_json_u64 (o, "size", r->size);
  vbk_json_u64 (o, "chunks", r->chunks);
  vbk_json_u64 (o, "chunks_read", r->chunks_read);
  vbk_json_u64 (o, "bytes_read", r->bytes_read);
  vbk_json_u64 (o, "cbt_checked", r->cbt_checked);
  vbk_json_int (o, "cbt_mismatch", r->cbt_mismatch);
  vbk_json_u64 (o, "chunks_new", r->chunks_new);
  vbk_json_u64 (o, "bytes_stored", r->bytes_stored);
  vbk_json_u64 (o, "elapsed_ms", r->elapsed_ns / 1000000);
  return o;
}

static int
cmd_run (struct vbk_ctx *ctx, struct vbk_args *a)
{
  struct backup_run_opts o = { 0 };
  struct backup_run_result *res;
  struct backup_repo *r;
  struct store *st;
  const char *tagopt = vbk_opt (a, "tag");
  char *tagbuf = NULL, *tok, *save, idbuf[300];
  const char *tags[64];
  long sample = -1, threads = 0;
  size_t ntags = 0;
  int i, e, rc;

  for (i = 0; i < a->argc; i++)
    if ((rc = vbk_check_name (a, a->argv[i])))
      return rc;
  if (a->argc > 1 && vbk_opt (a, "group") == NULL)
    return vbk_usage_error (a, "several images at one instant need --group "
                            "NAME");
  if (vbk_opt (a, "group") && (rc = vbk_check_name (a, vbk_opt (a, "group"))))
    return rc;
  if ((rc = vbk_opt_num (a, "cbt-sample", 0, 100000, &sample))
      || (rc = vbk_opt_num (a, "threads", 1, 64, &threads))
      || (rc = vbk_opt_progress (ctx, a, &o.progress)))
    return rc;
  if (tagopt) {
    tagbuf = strdup (tagopt);
    for (tok = strtok_r (tagbuf, ",", &save); tok && ntags < 64;
         tok = strtok_r (NULL, ",", &save))
      tags[ntags++] = tok;
  }
  if ((rc = open_repo (a, &r))) {
    free (tagbuf);
    return rc;
  }
  if (vbk_store_open (ctx, a, &st) < 0) {
    backup_repo_close (r);
    free (tagbuf);
    return VBK_EXIT_FAILURE;
  }
  o.st = st;
  o.images = (const char *const *) a->argv;
  o.nimages = a->argc;
  o.group = vbk_opt (a, "group");
  o.tags = tags;
  o.ntags = ntags;
  o.host_id = vbk_host_id (a, idbuf, sizeof idbuf);
  o.cbt_sample = (int) sample;
  o.force_full = vbk_opt (a, "full") != NULL;
  o.threads = (unsigned) threads;
  o.interrupted = vbk_interrupted;
  res = calloc (a->argc, sizeof *res);
  vbk_catch_signals (1);
  vbk_clear_error ();
  e = res ? backup_run (r, &o, res) : -ENOMEM;
  vbk_catch_signals (0);
  if (e < 0)
    rc = vbk_fail (a, e);
  else {
    rc = VBK_EXIT_OK;
    for (i = 0; i < a->argc; i++) {
      if (res[i].cbt_mismatch)
        fprintf (stderr, "vbk: backup run: WARNING: changed-block tracking "
                 "of %s missed %d changed chunk(s); this backup read the "
                 "whole image\n", res[i].image, res[i].cbt_mismatch);
      else if (res[i].full && res[i].parent[0] == '\0'
               && strstr (res[i].full_reason, "gone"))
        fprintf (stderr, "vbk: backup run: %s: %s\n", res[i].image,
                 res[i].full_reason);
    }
    if (vbk_opt (a, "json")) {
      json_object *arr = json_object_new_array ();

      for (i = 0; i < a->argc; i++) {
        json_object *j = result_json (&res[i]);

        if (strcmp (store_backend (st), "fault") == 0)
          vbk_json_u64 (j, "store_bytes_read", store_fault_bytes_read (st));
        json_object_array_add (arr, j);
      }
      vbk_print_json (arr);
    }
    else
      for (i = 0; i < a->argc; i++) {
        char s1[32], s2[32];

        printf ("%s  %s  %s, read %s, stored %s new\n", res[i].id,
                res[i].image, res[i].full ? "full" : "incremental",
                format_size (res[i].bytes_read, s1, sizeof s1),
                format_size (res[i].bytes_stored, s2, sizeof s2));
      }
  }
  free (res);
  free (tagbuf);
  store_close (st);
  backup_repo_close (r);
  return rc;
}

/* ---- ls, info --------------------------------------------------------------------- */

static int
cmd_ls (struct vbk_ctx *ctx, struct vbk_args *a)
{
  struct backup_entry *list;
  struct backup_repo *r;
  size_t n, i;
  char s[32], t[64];
  int e, rc;

  if (a->argc && (rc = vbk_check_name (a, a->argv[0])))
    return rc;
  if ((rc = open_repo (a, &r)))
    return rc;
  vbk_clear_error ();
  e = backup_list (r, a->argc ? a->argv[0] : NULL, &list, &n);
  backup_repo_close (r);
  if (e < 0)
    return vbk_fail (a, e);
  if (vbk_opt (a, "json")) {
    json_object *arr = json_object_new_array ();

    for (i = 0; i < n; i++)
      json_object_array_add (arr, entry_json (&list[i]));
    vbk_print_json (arr);
  }
  else {
    if (n)
      printf ("%-26s  %-20s  %-19s  %10s\n", "ID", "IMAGE", "TIME", "SIZE");
    for (i = 0; i < n; i++)
      printf ("%-26s  %-20s  %-19s  %10s%s\n", list[i].id, list[i].image,
              vbk_format_time (list[i].time_ms, t, sizeof t),
              format_size (list[i].size, s, sizeof s),
              list[i].protected_ ? "  protected" : "");
  }
  free (list);
  return VBK_EXIT_OK;
}

static int
cmd_info (struct vbk_ctx *ctx, struct vbk_args *a)
{
  struct backup_repo *r;
  char *json;
  int e, rc;

  if ((rc = check_id (a, a->argv[0])) || (rc = open_repo (a, &r)))
    return rc;
  vbk_clear_error ();
  e = backup_manifest_json (r, a->argv[0], &json);
  backup_repo_close (r);
  if (e < 0)
    return vbk_fail (a, e);
  if (vbk_opt (a, "json"))
    printf ("%s\n", json);
  else {
    json_object *o = json_tokener_parse (json);

    json_object_object_foreach (o, key, val)
      printf ("%-14s %s\n", key, json_object_to_json_string_ext
              (val, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put (o);
  }
  free (json);
  return VBK_EXIT_OK;
}

/* ---- verify ------------------------------------------------------------------------ */

struct bad_out {
  json_object *arr;
};

static void
on_bad (void *arg, const char *hex, const char *why, const char *const *ids,
        size_t n)
{
  struct bad_out *b = arg;
  size_t i;

  if (b->arr) {
    json_object *o = json_object_new_object (), *u = json_object_new_array ();

    vbk_json_str (o, "chunk", hex);
    vbk_json_str (o, "error", why);
    for (i = 0; i < n; i++)
      json_object_array_add (u, json_object_new_string (ids[i]));
    json_object_object_add (o, "backups", u);
    json_object_array_add (b->arr, o);
    return;
  }
  fprintf (stderr, "vbk: backup verify: BAD CHUNK vbk_chunk.%s: %s; used by:",
           hex, why);
  for (i = 0; i < n; i++)
    fprintf (stderr, " %s", ids[i]);
  fprintf (stderr, "\n");
}

static int
cmd_verify (struct vbk_ctx *ctx, struct vbk_args *a)
{
  struct backup_verify_result res;
  struct bad_out b = { NULL };
  struct backup_repo *r;
  long pct = 100;
  int i, e, rc;

  for (i = 0; i < a->argc; i++)
    if ((rc = check_id (a, a->argv[i])))
      return rc;
  if ((rc = vbk_opt_num (a, "sample", 1, 100, &pct)) || (rc = open_repo (a, &r)))
    return rc;
  if (vbk_opt (a, "json"))
    b.arr = json_object_new_array ();
  vbk_clear_error ();
  e = backup_verify (r, (const char *const *) a->argv, a->argc,
                     (unsigned) pct, on_bad, &b, &res);
  backup_repo_close (r);
  if (e < 0 && e != -EIO) {
    json_object_put (b.arr);
    return vbk_fail (a, e);
  }
  if (b.arr) {
    json_object *o = json_object_new_object ();

    vbk_json_bool (o, "ok", e == 0);
    vbk_json_u64 (o, "backups", res.backups);
    vbk_json_u64 (o, "chunks", res.chunks);
    vbk_json_u64 (o, "checked", res.checked);
    vbk_json_u64 (o, "bytes", res.bytes);
    json_object_object_add (o, "bad", b.arr);
    vbk_print_json (o);
  }
  else
    printf ("%" PRIu64 " backups, %" PRIu64 " of %" PRIu64 " chunks checked, "
            "%" PRIu64 " bad\n", res.backups, res.checked, res.chunks,
            res.bad);
  if (e == -EIO)
    return vbk_fail (a, e);
  return VBK_EXIT_OK;
}

/* ---- prune, gc, rm, protect ----------------------------------------------------- */

struct prune_out {
  json_object *arr;
  int dry;
};

static void
on_prune (void *arg, const struct backup_entry *e, int keep, const char *why)
{
  struct prune_out *p = arg;

  if (p->arr) {
    json_object *o = entry_json (e);

    vbk_json_bool (o, "keep", keep);
    vbk_json_str (o, "reason", why);
    json_object_array_add (p->arr, o);
  }
  else
    printf ("%s %s  %s  (%s)\n", keep ? "keep  " : p->dry ? "would remove"
            : "remove", e->id, e->image, why);
}

static int
cmd_prune (struct vbk_ctx *ctx, struct vbk_args *a)
{
  struct backup_prune_opts o = { 0 };
  struct prune_out p = { NULL, 0 };
  struct backup_repo *r;
  long kl = 0, kd = 0, kw = 0, km = 0;
  int e, rc;

  if ((rc = vbk_opt_num (a, "keep-last", 0, 1000000, &kl))
      || (rc = vbk_opt_num (a, "keep-daily", 0, 1000000, &kd))
      || (rc = vbk_opt_num (a, "keep-weekly", 0, 1000000, &kw))
      || (rc = vbk_opt_num (a, "keep-monthly", 0, 1000000, &km)))
    return rc;
  if (kl + kd + kw + km == 0)
    return vbk_usage_error (a, "give at least one --keep-* rule greater than "
                            "0 (use 'vbk backup rm' to remove backups)");
  if (a->argc && (rc = vbk_check_name (a, a->argv[0])))
    return rc;
  if ((rc = open_repo (a, &r)))
    return rc;
  o.image = a->argc ? a->argv[0] : NULL;
  o.keep_last = kl;
  o.keep_daily = kd;
  o.keep_weekly = kw;
  o.keep_monthly = km;
  o.dry_run = p.dry = vbk_opt (a, "dry-run") != NULL;
  if (vbk_opt (a, "json"))
    p.arr = json_object_new_array ();
  vbk_clear_error ();
  e = backup_prune (r, &o, on_prune, &p);
  backup_repo_close (r);
  if (e == 0 && p.arr)
    vbk_print_json (p.arr);
  else
    json_object_put (p.arr);
  return e < 0 ? vbk_fail (a, e) : VBK_EXIT_OK;
}

static int
cmd_gc (struct vbk_ctx *ctx, struct vbk_args *a)
{
  struct backup_gc_result res;
  struct backup_repo *r;
  long skew = 60;
  char s[32];
  int e, rc;

  if ((rc = vbk_opt_num (a, "clock-skew", 0, 86400, &skew))
      || (rc = open_repo (a, &r)))
    return rc;
  vbk_clear_error ();
  e = backup_gc (r, (uint64_t) skew * 1000, &res);
  backup_repo_close (r);
  if (e < 0)
    return vbk_fail (a, e);
  if (vbk_opt (a, "json")) {
    json_object *o = json_object_new_object ();

    vbk_json_u64 (o, "chunks", res.chunks);
    vbk_json_u64 (o, "referenced", res.marked);
    vbk_json_u64 (o, "removed", res.removed);
    vbk_json_u64 (o, "bytes_removed", res.bytes_removed);
    vbk_json_u64 (o, "kept_recent", res.kept_young);
    vbk_json_u64 (o, "running_backups", res.writers_live);
    vbk_json_u64 (o, "dead_backups_cleaned", res.writers_dead);
    vbk_json_u64 (o, "open_readers", res.readers_live);
    vbk_json_u64 (o, "dead_readers_cleaned", res.readers_dead);
    vbk_print_json (o);
  }
  else
    printf ("%" PRIu64 " chunks, %" PRIu64 " referenced, %" PRIu64
            " removed (%s), %" PRIu64 " kept as recent, %" PRIu64
            " open readers\n", res.chunks, res.marked, res.removed,
            format_size (res.bytes_removed, s, sizeof s), res.kept_young,
            res.readers_live);
  return VBK_EXIT_OK;
}

static int
cmd_rm (struct vbk_ctx *ctx, struct vbk_args *a)
{
  struct backup_repo *r;
  int e, rc;

  if ((rc = check_id (a, a->argv[0])) || (rc = open_repo (a, &r)))
    return rc;
  vbk_clear_error ();
  e = backup_remove (r, a->argv[0]);
  backup_repo_close (r);
  return e < 0 ? vbk_fail (a, e) : VBK_EXIT_OK;
}

static int
protect (struct vbk_args *a, bool on)
{
  struct backup_repo *r;
  int e, rc;

  if ((rc = check_id (a, a->argv[0])) || (rc = open_repo (a, &r)))
    return rc;
  vbk_clear_error ();
  e = backup_protect (r, a->argv[0], on);
  backup_repo_close (r);
  return e < 0 ? vbk_fail (a, e) : VBK_EXIT_OK;
}

static int
cmd_protect (struct vbk_ctx *ctx, struct vbk_args *a)
{
  return protect (a, true);
}

static int
cmd_unprotect (struct vbk_ctx *ctx, struct vbk_args *a)
{
  return protect (a, false);
}

/* ---- restore ------------------------------------------------------------------------ */

static int
cmd_restore (struct vbk_ctx *ctx, struct vbk_args *a)
{
  const char *to = vbk_opt (a, "to"), *file = vbk_opt (a, "to-file");
  struct backup_restore_result res;
  enum copy_progress_mode pm;
  struct backup_repo *r;
  struct store *st = NULL;
  unsigned flags = 0;
  int e, rc;

  if ((rc = check_id (a, a->argv[0])) || (rc = vbk_opt_progress (ctx, a, &pm)))
    return rc;
  if ((to == NULL) == (file == NULL))
    return vbk_usage_error (a, "give exactly one of --to IMAGE and --to-file "
                            "PATH");
  if (to && (rc = vbk_check_name (a, to)))
    return rc;
  if (vbk_opt (a, "in-place"))
    flags |= BACKUP_RESTORE_IN_PLACE;
  if (vbk_opt (a, "force"))
    flags |= BACKUP_RESTORE_FORCE;
  if (file && (flags & BACKUP_RESTORE_IN_PLACE))
    return vbk_usage_error (a, "--in-place goes with --to IMAGE");
  if (to && (flags & BACKUP_RESTORE_FORCE)
      && !(flags & BACKUP_RESTORE_IN_PLACE))
    return vbk_usage_error (a, "--force goes with --in-place or --to-file");
  if ((rc = open_repo (a, &r)))
    return rc;
  if (to && vbk_store_open (ctx, a, &st) < 0) {
    backup_repo_close (r);
    return VBK_EXIT_FAILURE;
  }
  vbk_catch_signals (1);
  vbk_clear_error ();
  if (to)
    e = backup_restore_image (r, a->argv[0], st, to, flags, pm, &res);
  else
    e = backup_restore_file (r, a->argv[0], file, flags, pm, &res);
  vbk_catch_signals (0);
  store_close (st);
  backup_repo_close (r);
  if (e < 0)
    return vbk_fail (a, e);
  if (vbk_opt (a, "json")) {
    json_object *o = json_object_new_object ();

    vbk_json_str (o, "id", a->argv[0]);
    vbk_json_u64 (o, "size", res.size);
    vbk_json_u64 (o, "read", res.read);
    vbk_json_u64 (o, "written", res.written);
    vbk_json_u64 (o, "zeroed", res.zeroed);
    vbk_json_u64 (o, "unchanged", res.same);
    vbk_json_u64 (o, "elapsed_ms", res.elapsed_ns / 1000000);
    vbk_print_json (o);
  }
  return VBK_EXIT_OK;
}

/* ---- Tables -------------------------------------------------------------------------- */

#define REPO_OPT { "repo", 0, "URI", "the repository (default: $VBK_REPO)" }, \
  VBK_KEY_OPTS
#define JSON_OPT { "json", 0, NULL, "print JSON" }
#define PROGRESS_OPT VBK_PROGRESS_OPT

static const struct vbk_opt init_opts[] = {
  REPO_OPT, JSON_OPT,
  { "chunk-size", 0, "SIZE", "chunk size, a power of two (default 4M)" },
  { "encrypt", 0, NULL, "encrypt (AES-256-GCM) with a new key written to "
    "--key-file, protected by a passphrase" },
  { "kdf-iterations", 0, "N", "PBKDF2 iterations of the key file "
    "(default 300000)" },
  { NULL },
};
static const struct vbk_opt run_opts[] = {
  REPO_OPT, JSON_OPT, PROGRESS_OPT,
  { "group", 0, "NAME", "several images at one instant (consistency group)" },
  { "tag", 0, "T[,T...]", "tags recorded in the manifest" },
  { "full", 0, NULL, "read everything, even with a previous backup" },
  { "cbt-sample", 0, "N", "unchanged chunks re-hashed as a check of the "
    "change log (default: 1%, 1 to 16)" },
  { "threads", 0, "N", "worker threads (default 8)" },
  { "host-id", 0, "ID", "who we are for a temporary lease" },
  { NULL },
};
static const struct vbk_opt list_opts[] = { REPO_OPT, JSON_OPT, { NULL } };
static const struct vbk_opt verify_opts[] = {
  REPO_OPT, JSON_OPT,
  { "sample", 0, "PCT", "check a random PCT percent of the chunks "
    "(default 100)" },
  { NULL },
};
static const struct vbk_opt prune_opts[] = {
  REPO_OPT, JSON_OPT,
  { "keep-last", 0, "N", "keep the N newest backups" },
  { "keep-daily", 0, "N", "keep the newest backup of each of N days" },
  { "keep-weekly", 0, "N", "keep the newest backup of each of N weeks" },
  { "keep-monthly", 0, "N", "keep the newest backup of each of N months" },
  { "dry-run", 0, NULL, "only say what would be removed" },
  { NULL },
};
static const struct vbk_opt gc_opts[] = {
  REPO_OPT, JSON_OPT,
  { "clock-skew", 0, "SECONDS", "allowance for other hosts' clocks "
    "(default 60)" },
  { NULL },
};
static const struct vbk_opt repo_opts[] = { REPO_OPT, { NULL } };
static const struct vbk_opt restore_opts[] = {
  REPO_OPT, JSON_OPT, PROGRESS_OPT,
  { "to", 0, "IMAGE", "a new image (or, with --in-place, an existing one)" },
  { "to-file", 0, "PATH", "a file (created sparse) or a block device" },
  { "in-place", 0, NULL, "onto the existing image: write only the chunks "
    "that differ" },
  { "force", 0, NULL, "in place even while the image's lease is held "
    "(breaks it); with --to-file, replace an existing file" },
  { NULL },
};

const struct vbk_cmd backup_cmds[] = {
  { "init", "[REPO] [--chunk-size SIZE] [--encrypt --key-file FILE]",
    "create a backup repository",
    init_opts, 0, 1, cmd_init },
  { "run", "IMAGE... [--group NAME] [--tag T]",
    "back up images from a crash-consistent snapshot (incremental)",
    run_opts, 1, -1, cmd_run },
  { "ls", "[IMAGE] [--json]", "list backups, oldest first", list_opts, 0, 1,
    cmd_ls },
  { "info", "ID [--json]", "show a backup's manifest", list_opts, 1, 1,
    cmd_info },
  { "verify", "[ID...] [--sample PCT]",
    "re-read and re-hash chunks; name bad ones and the backups using them",
    verify_opts, 0, -1, cmd_verify },
  { "prune", "[IMAGE] --keep-last N|--keep-daily N|--keep-weekly N|"
    "--keep-monthly N [--dry-run]",
    "remove backups outside the keep rules (protected ones stay)",
    prune_opts, 0, 1, cmd_prune },
  { "gc", "[--clock-skew SECONDS]",
    "remove chunks no backup uses (safe beside running backups)", gc_opts,
    0, 0, cmd_gc },
  { "rm", "ID", "remove a backup (its chunks go at the next gc)", repo_opts,
    1, 1, cmd_rm },
  { "protect", "ID", "keep a backup from prune and rm", repo_opts, 1, 1,
    cmd_protect },
  { "unprotect", "ID", "let prune and rm remove a backup again", repo_opts,
    1, 1, cmd_unprotect },
  { "restore", "ID --to IMAGE [--in-place [--force]] | --to-file PATH "
    "[--force]",
    "restore a backup into a new image, onto an image, or into a file",
    restore_opts, 1, 1, cmd_restore },
  { NULL },
};
