/* SPDX-License-Identifier: MIT
 *
 * lease-cmd.c - the "vbk lease" verbs: status, release, break.
 *
 * The lease lives on the image header (locks/lease.h), so each verb first
 * resolves the image's name to its header object, then makes one lease
 * call.  status reads only (it never takes or renews anything) and
 * succeeds whether the lease is held or not; release asks the holder to
 * let go, as a hand-off would, and waits; break is for a holder known to
 * be dead: it fences the holder's store client before removing its lock,
 * so a holder that was only cut off can never write again.  The lease
 * library names images by header object in its messages; the verbs put
 * the image's name in front of them.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "locks/lease.h"
#include "internal.h"

#define RELEASE_TIMEOUT_DEFAULT_S 30

/* The header object of image NAME into HDR.  Returns 0 or -errno. */
static int
header_oid (struct store *st, const char *name, char *hdr, size_t len)
{
  struct image_info info;
  int r;

  r = image_stat (st, name, &info);
  if (r < 0)
    return r;
  image_header_oid (info.id, hdr, len);
  return 0;
}

/* Puts "image 'NAME': " in front of the current message (the lease
 * library speaks of header objects). */
static void
prefix_error (const char *name)
{
  char msg[1024];

  snprintf (msg, sizeof msg, "%s", vbk_error ());
  if (msg[0])
    vbk_set_error ("image '%s': %s", name, msg);
}

/* ---- status -------------------------------------------------------------- */

static json_object *
string_or_null (const char *s, bool cond)
{
  return cond ? json_object_new_string (s) : NULL;
}

static json_object *
status_to_json (const char *name, const struct lease_status *s, int64_t in_ms)
{
  json_object *o = json_object_new_object ();

  vbk_json_str (o, "image", name);
  vbk_json_bool (o, "held", s->held);
  json_object_object_add (o, "host", string_or_null (s->host, s->held));
  json_object_object_add (o, "addr", string_or_null (s->addr, s->held));
  json_object_object_add (o, "client", string_or_null (s->client, s->held));
  vbk_json_u64 (o, "epoch", s->epoch);
  json_object_object_add (o, "expires_ms", s->held
                          ? json_object_new_uint64 (s->expires_ms) : NULL);
  json_object_object_add (o, "expires_in_ms", s->held
                          ? json_object_new_int64 (in_ms) : NULL);
  vbk_json_u64 (o, "handoffs", s->handoffs);
  json_object_object_add (o, "conflict", string_or_null (s->conflict,
                                                         s->conflict[0]));
  return o;
}

static int
cmd_status (struct vbk_ctx *ctx, struct vbk_args *a)
{
  const char *name = a->argv[0];
  struct lease_status s;
  struct store *st;
  char hdr[64], when[64];
  int64_t in_ms = 0;
  int r;

  if ((r = vbk_check_name (a, name)))
    return r;
  if (vbk_store_open (ctx, a, &st) < 0)
    return VBK_EXIT_FAILURE;
  vbk_clear_error ();
  r = header_oid (st, name, hdr, sizeof hdr);
  if (r == 0 && (r = lease_status_get (st, hdr, &s)) < 0)
    prefix_error (name);
  store_close (st);
  if (r < 0)
    return vbk_fail (a, r);
  if (s.held)
    in_ms = (int64_t) s.expires_ms - (int64_t) now_wall_ms ();

  if (vbk_opt (a, "json")) {
    json_object *o = status_to_json (name, &s, in_ms);

    vbk_print_json (o);
    return VBK_EXIT_OK;
  }
  printf ("image:    %s\n", name);
  printf ("held:     %s\n", s.held ? "yes" : "no");
  if (s.held) {
    printf ("host:     %s\n", s.host);
    printf ("address:  %s\n", s.addr);
    printf ("client:   %s\n", s.client);
  }
  printf ("epoch:    %" PRIu64 "\n", s.epoch);
  if (s.held)
    printf ("expires:  in %.1f s (%s)\n", in_ms / 1000.0,
            vbk_format_time (s.expires_ms, when, sizeof when));
  printf ("handoffs: %" PRIu64 "\n", s.handoffs);
  if (s.conflict[0])
    printf ("conflict: %s\n", s.conflict);
  return VBK_EXIT_OK;
}

/* ---- release, break ------------------------------------------------------ */

/* Parses --timeout of "lease release" into *MS.  Returns 0, or an exit
 * status. */
static int
get_timeout (struct vbk_ctx *ctx, const struct vbk_args *a, uint32_t *ms)
{
  const char *s = vbk_opt (a, "timeout");
  char *end;
  long t;

  *ms = RELEASE_TIMEOUT_DEFAULT_S * 1000u;
  if (s == NULL)
    return 0;
  errno = 0;
  t = strtol (s, &end, 10);
  if (errno || end == s || *end || t <= 0 || t > 86400)
    return vbk_usage_error (a, "--timeout: invalid number of seconds '%s' "
                            "(1 to 86400)", s);
  *ms = (uint32_t) t * 1000u;
  /* Here --timeout bounds the whole command: it also stands for the
   * global option (wait for a cluster) unless that came before. */
  if (ctx->timeout == NULL)
    ctx->timeout = s;
  return 0;
}

static int
cmd_release (struct vbk_ctx *ctx, struct vbk_args *a)
{
  const char *name = a->argv[0];
  struct lease_status s = { 0 };
  struct store *st;
  char hdr[64];
  uint32_t ms;
  int r;

  if ((r = vbk_check_name (a, name)) || (r = get_timeout (ctx, a, &ms)))
    return r;
  if (vbk_store_open (ctx, a, &st) < 0)
    return VBK_EXIT_FAILURE;
  vbk_clear_error ();
  r = header_oid (st, name, hdr, sizeof hdr);
  if (r < 0)
    goto out;
  /* Only to say who it was; the release itself does not need it. */
  if (lease_status_get (st, hdr, &s) < 0)
    s.held = false;
  vbk_clear_error ();
  r = lease_request_release (st, hdr, ms);
  if (r == -ETIMEDOUT) {
    vbk_set_error ("image '%s': the holder%s%s did not let go within %u s "
                   "(if its host is dead: vbk lease break %s)", name,
                   s.held ? " " : "", s.held ? s.host : "", ms / 1000, name);
  }
  else if (r < 0)
    prefix_error (name);
  else if (s.held)
    log_info ("lease release: %s: released by %s (epoch %" PRIu64 ")",
              name, s.host, s.epoch);
  else
    log_info ("lease release: %s: nobody held it", name);
 out:
  store_close (st);
  return r < 0 ? vbk_fail (a, r) : VBK_EXIT_OK;
}

static int
cmd_break (struct vbk_ctx *ctx, struct vbk_args *a)
{
  const char *name = a->argv[0];
  struct lease_status s = { 0 };
  struct store *st;
  char hdr[64];
  int r;

  if ((r = vbk_check_name (a, name)))
    return r;
  if (vbk_store_open (ctx, a, &st) < 0)
    return VBK_EXIT_FAILURE;
  vbk_clear_error ();
  r = header_oid (st, name, hdr, sizeof hdr);
  if (r < 0)
    goto out;
  if (lease_status_get (st, hdr, &s) < 0)
    s.held = false;
  vbk_clear_error ();
  r = lease_break (st, hdr);
  if (r == -ENOENT)
    vbk_set_error ("image '%s': nobody holds the lease: nothing to break",
                   name);
  else if (r < 0)
    prefix_error (name);
  else
    log_info ("lease break: %s: fenced %s (client %s, epoch %" PRIu64 ")",
              name, s.held ? s.host : "the holder", s.held ? s.client : "?",
              s.epoch);
 out:
  store_close (st);
  return r < 0 ? vbk_fail (a, r) : VBK_EXIT_OK;
}

/* ---- Table --------------------------------------------------------------- */

static const struct vbk_opt status_opts[] = {
  { "json", 0, NULL, "print JSON (times in ms; null where not held)" },
  { NULL },
};

static const struct vbk_opt release_opts[] = {
  { "timeout", 0, "SECONDS", "wait at most SECONDS for the holder (default "
    "30)" },
  { NULL },
};

const struct vbk_cmd lease_cmds[] = {
  { "status", "IMAGE [--json]",
    "show who holds an image's lease, its epoch and expiry", status_opts,
    1, 1, cmd_status },
  { "release", "IMAGE [--timeout SECONDS]",
    "ask the holder to let go (even of an exclusive lease) and wait",
    release_opts, 1, 1, cmd_release },
  { "break", "IMAGE",
    "fence the holder and remove its lease (for a host known to be dead)",
    NULL, 1, 1, cmd_break },
  { NULL },
};
