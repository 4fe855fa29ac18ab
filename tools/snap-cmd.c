/* SPDX-License-Identifier: MIT
 *
 * snap-cmd.c - the "vbk snapshot" verbs (alias "snap": create, ls, rm,
 * rollback) and
 * "vbk diff".
 *
 * A snapshot is named IMAGE@SNAP on the command line.  The form is parsed
 * strictly, before the store is opened: exactly one '@', and both sides
 * valid names (image_name_check); anything else is a usage error, exit 2.
 *
 * snapshot create and rm go through the snapshot library, which sends
 * the request to the lease holder (the blockd writing the image) or, when
 * nobody holds the lease, takes it for the moment; either way one command
 * runs at a time per image, and a snapshot holds every write
 * acknowledged before the request and none issued after the reply.  With --group, every image is frozen before any is
 * snapshotted, and a failure leaves no snapshot of the group.  rollback
 * refuses while a host holds the lease unless --force, which fences it.
 * diff reads change logs only (snap_diff: image_diff, after the holder
 * logged its changed parts for a live diff, and read again if snapshots
 * came or went meanwhile), never data or maps.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "snapshot/snapshot.h"
#include "internal.h"

/* ---- Argument checks ----------------------------------------------------- */

/* The snapshot library can lose the reason of a failure on its way out
 * (closing its temporary lease clears this thread's message): say at
 * least what failed. */
static void
default_error (int r, const struct vbk_snap_ref *ref, const char *what)
{
  if (vbk_error ()[0])
    return;
  if (r == -EEXIST)
    vbk_set_error ("image '%s' already has a snapshot '%s'", ref->image,
                   ref->snap);
  else if (r == -ENOENT)
    vbk_set_error ("no such image or snapshot: %s@%s", ref->image,
                   ref->snap);
  else
    vbk_errno (r, "%s %s@%s", what, ref->image, ref->snap);
}

/* ---- create -------------------------------------------------------------- */

static int
create_group (struct vbk_ctx *ctx, struct vbk_args *a, const char *group,
              const struct snap_opts *o)
{
  const char **images = NULL, **snaps = NULL;
  struct vbk_snap_ref *refs;
  struct store *st;
  uint64_t t0;
  int i, j, r;

  if ((r = vbk_check_name (a, group)))
    return r;
  refs = calloc (a->argc, sizeof *refs);
  images = calloc (a->argc, sizeof *images);
  snaps = calloc (a->argc, sizeof *snaps);
  if (refs == NULL || images == NULL || snaps == NULL) {
    r = vbk_fail (a, -ENOMEM);
    goto out;
  }
  for (i = 0; i < a->argc; i++) {
    if ((r = vbk_parse_snap_ref (a, a->argv[i], &refs[i])))
      goto out;
    for (j = 0; j < i; j++)
      if (strcmp (refs[j].image, refs[i].image) == 0) {
        r = vbk_usage_error (a, "image '%s' appears twice in the group",
                             refs[i].image);
        goto out;
      }
    images[i] = refs[i].image;
    snaps[i] = refs[i].snap;
  }
  if (vbk_store_open (ctx, a, &st) < 0) {
    r = VBK_EXIT_FAILURE;
    goto out;
  }
  vbk_clear_error ();
  t0 = now_mono_ns ();
  r = snap_group_create (st, group, images, snaps, a->argc, o);
  store_close (st);
  if (r < 0) {
    if (vbk_error ()[0] == '\0')
      vbk_errno (r, "snapshot group %s", group);
    r = vbk_fail (a, r);
    goto out;
  }
  for (i = 0; i < a->argc; i++)
    printf ("%s@%s\n", refs[i].image, refs[i].snap);
  log_info ("snap create: group %s: %d snapshots at one instant in %.3f ms",
            group, a->argc, (now_mono_ns () - t0) / 1e6);
  r = VBK_EXIT_OK;
 out:
  free (refs);
  free (images);
  free (snaps);
  return r;
}

static int
cmd_create (struct vbk_ctx *ctx, struct vbk_args *a)
{
  const char *group = vbk_opt (a, "group");
  struct snap_opts o = { 0 };
  struct vbk_snap_ref ref;
  struct store *st;
  char idbuf[300];
  uint64_t pause_us = 0, t0;
  int r;

  o.host_id = vbk_host_id (a, idbuf, sizeof idbuf);
  if (group)
    return create_group (ctx, a, group, &o);
  if (a->argc > 1)
    return vbk_usage_error (a, "several snapshots at one instant need "
                            "--group NAME");
  if ((r = vbk_parse_snap_ref (a, a->argv[0], &ref)))
    return r;
  if (vbk_store_open (ctx, a, &st) < 0)
    return VBK_EXIT_FAILURE;
  vbk_clear_error ();
  t0 = now_mono_ns ();
  r = snap_create (st, ref.image, ref.snap, &o, &pause_us);
  store_close (st);
  if (r < 0) {
    default_error (r, &ref, "snapshot");
    return vbk_fail (a, r);
  }
  printf ("%s@%s\n", ref.image, ref.snap);
  log_info ("snap create: %s@%s: writes paused %.3f ms by the holder, "
            "%.3f ms in all", ref.image, ref.snap, pause_us / 1e3,
            (now_mono_ns () - t0) / 1e6);
  return VBK_EXIT_OK;
}

/* ---- ls, rm, rollback ---------------------------------------------------- */

static int
cmd_ls (struct vbk_ctx *ctx, struct vbk_args *a)
{
  const char *name = a->argv[0];
  struct image_snap *list = NULL;
  struct store *st;
  size_t n = 0, i;
  char s[32], t[64];
  int r, w = 4;

  if ((r = vbk_check_name (a, name)))
    return r;
  if (vbk_store_open (ctx, a, &st) < 0)
    return VBK_EXIT_FAILURE;
  vbk_clear_error ();
  r = image_snap_list (st, name, &list, &n);
  store_close (st);
  if (r < 0)
    return vbk_fail (a, r);

  if (vbk_opt (a, "json")) {
    json_object *arr = json_object_new_array ();

    for (i = 0; i < n; i++) {
      json_object *o = json_object_new_object ();

      vbk_json_str (o, "name", list[i].name);
      vbk_json_u64 (o, "id", list[i].id);
      vbk_json_u64 (o, "size", list[i].size);
      vbk_json_u64 (o, "time_ms", list[i].time_ms);
      json_object_array_add (arr, o);
    }
    vbk_print_json (arr);
  }
  else {
    for (i = 0; i < n; i++)
      if ((int) strlen (list[i].name) > w)
        w = (int) strlen (list[i].name);
    if (n)
      printf ("%-*s  %8s  %10s  %s\n", w, "NAME", "ID", "SIZE", "TIME");
    for (i = 0; i < n; i++)
      printf ("%-*s  %8" PRIu64 "  %10s  %s\n", w, list[i].name, list[i].id,
              format_size (list[i].size, s, sizeof s),
              vbk_format_time (list[i].time_ms, t, sizeof t));
  }
  free (list);
  return VBK_EXIT_OK;
}

/* rm and rollback: one snapshot, changed through the lease holder. */
enum snap_change { SNAP_RM, SNAP_ROLLBACK };

static int
snap_change (struct vbk_ctx *ctx, struct vbk_args *a, enum snap_change what)
{
  struct snap_opts o = { 0 };
  struct vbk_snap_ref ref;
  struct store *st;
  char idbuf[300];
  int r;

  if ((r = vbk_parse_snap_ref (a, a->argv[0], &ref)))
    return r;
  o.host_id = vbk_host_id (a, idbuf, sizeof idbuf);
  if (vbk_store_open (ctx, a, &st) < 0)
    return VBK_EXIT_FAILURE;
  vbk_clear_error ();
  if (what == SNAP_RM)
    r = snap_remove (st, ref.image, ref.snap, &o);
  else
    r = snap_rollback (st, ref.image, ref.snap,
                       vbk_opt (a, "force") != NULL, &o);
  store_close (st);
  if (r < 0) {
    default_error (r, &ref, what == SNAP_RM ? "removing snapshot"
                   : "rollback to");
    return vbk_fail (a, r);
  }
  if (what == SNAP_ROLLBACK)
    log_info ("snap rollback: %s is back at %s", ref.image, ref.snap);
  return VBK_EXIT_OK;
}

static int
cmd_rm (struct vbk_ctx *ctx, struct vbk_args *a)
{
  return snap_change (ctx, a, SNAP_RM);
}

static int
cmd_rollback (struct vbk_ctx *ctx, struct vbk_args *a)
{
  return snap_change (ctx, a, SNAP_ROLLBACK);
}

/* ---- diff ---------------------------------------------------------------- */

int
cmd_diff (struct vbk_ctx *ctx, struct vbk_args *a)
{
  const char *name = a->argv[0];
  const char *from = vbk_opt (a, "from"), *to = vbk_opt (a, "to");
  struct image_extent_list e = { 0 };
  struct store *st;
  uint64_t changed = 0, t0;
  char s[32];
  size_t i;
  int r;

  if ((r = vbk_check_name (a, name)))
    return r;
  if (from == NULL)
    return vbk_usage_error (a, "missing --from SNAP");
  if ((r = vbk_check_name (a, from)) || (to && (r = vbk_check_name (a, to))))
    return r;
  if (vbk_store_open (ctx, a, &st) < 0)
    return VBK_EXIT_FAILURE;
  vbk_clear_error ();
  t0 = now_mono_ns ();
  r = snap_diff (st, name, from, to, image_extent_list_add, &e, NULL);
  store_close (st);
  if (r < 0) {
    free (e.v);
    return vbk_fail (a, r);
  }
  for (i = 0; i < e.n; i++)
    changed += e.v[i].len;

  if (vbk_opt (a, "json")) {
    json_object *o = json_object_new_object (), *arr;

    arr = json_object_new_array ();
    for (i = 0; i < e.n; i++) {
      json_object *x = json_object_new_object ();

      vbk_json_u64 (x, "offset", e.v[i].off);
      vbk_json_u64 (x, "length", e.v[i].len);
      json_object_array_add (arr, x);
    }
    vbk_json_str (o, "image", name);
    vbk_json_str (o, "from", from);
    vbk_json_str (o, "to", to);
    json_object_object_add (o, "extents", arr);
    vbk_json_u64 (o, "changed_bytes", changed);
    vbk_print_json (o);
  }
  else
    for (i = 0; i < e.n; i++)
      printf ("%" PRIu64 " %" PRIu64 "\n", e.v[i].off, e.v[i].len);
  log_info ("diff %s: %s..%s: %zu extents, %s changed, in %.3f ms", name,
            from, to ? to : "(live)", e.n, format_size (changed, s, sizeof s),
            (now_mono_ns () - t0) / 1e6);
  free (e.v);
  return VBK_EXIT_OK;
}

/* ---- Table --------------------------------------------------------------- */

static const struct vbk_opt create_opts[] = {
  { "group", 0, "NAME", "all the images at one instant; on failure none "
    "is kept" },
  { "host-id", 0, "ID", "our id if vbk takes the lease (default "
    "vbk@HOSTNAME)" },
  { NULL },
};

static const struct vbk_opt ls_opts[] = {
  { "json", 0, NULL, "print JSON (sizes in bytes, times in ms)" },
  { NULL },
};

static const struct vbk_opt rollback_opts[] = {
  VBK_FENCE_OPT,
  { NULL },
};

const struct vbk_opt diff_opts[] = {
  { "from", 0, "SNAP", "the older snapshot (required)" },
  { "to", 0, "SNAP", "the newer snapshot (default: the live image)" },
  { "json", 0, NULL, "print JSON (offsets and lengths in bytes)" },
  { NULL },
};

const struct vbk_cmd snap_cmds[] = {
  { "create", "[--group NAME] IMAGE@SNAP...",
    "take a crash-consistent snapshot (through the lease holder)",
    create_opts, 1, -1, cmd_create },
  { "ls", "IMAGE [--json]", "list an image's snapshots, oldest first",
    ls_opts, 1, 1, cmd_ls },
  { "rm", "IMAGE@SNAP", "remove a snapshot and free what only it used",
    NULL, 1, 1, cmd_rm },
  { "rollback", "IMAGE@SNAP [--force]",
    "put an image's bytes and size back as they were at a snapshot",
    rollback_opts, 1, 1, cmd_rollback },
  { NULL },
};
