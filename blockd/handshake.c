/* SPDX-License-Identifier: MIT
 *
 * handshake.c - the fixed newstyle negotiation (NBD proto.md,
 * "Fixed newstyle negotiation" and "Option types").
 *
 * DESIGN: a loop over options on the reader thread, before any request
 * exists, so it needs no locking.  Each option is read whole (at most
 * NBD_SRV_MAX_OPTION bytes: more is a denial of service and ends the
 * session), checked for exact lengths, and answered; a malformed option
 * gets NBD_REP_ERR_INVALID and an unknown one NBD_REP_ERR_UNSUP, and
 * negotiation goes on, as the baseline of the specification requires.
 * The only hard disconnects are the ones the specification allows: bad
 * magic, unknown client flags, oversized options and an
 * NBD_OPT_EXPORT_NAME we cannot satisfy.  Exports are looked up (and
 * opened) when a client names them, so new images need no restart.
 * The whole negotiation runs under the connection's deadline
 * (handshake_timeout, set at accept): reads and writes fail past it, so
 * a silent client, a slow one and one that negotiates forever without
 * NBD_OPT_GO are all dropped.  NBD_OPT_LIST reads names only (images
 * and their snapshots), never an object map.
 *
 * TLS (proto.md, "TLS support"): NBD_OPT_STARTTLS is answered with an
 * ACK, then the TLS handshake runs (starttls.c) and negotiation goes on
 * inside TLS, with structured replies and metadata contexts forgotten
 * (the client negotiates them again).  With --tls=require a TCP client
 * gets NBD_REP_ERR_TLS_REQD for every option but STARTTLS and ABORT
 * until TLS is up, and NBD_OPT_EXPORT_NAME before TLS ends the session.
 * Access (access.h) is checked before an export is even looked up, so a
 * refused client learns nothing about which images exist: INFO, GO and
 * SET/LIST_META_CONTEXT get NBD_REP_ERR_POLICY for every name it may not
 * open, and NBD_OPT_LIST shows only the images it may open.  A client
 * allowed to read only gets the export read-only (NBD_FLAG_READ_ONLY;
 * its writes fail with EPERM before they reach the lease).
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "access.h"
#include "internal.h"
#include "metrics.h"
#include "nbd-protocol.h"

/* qemu docs/interop/nbd.rst: "qemu:dirty-bitmap:<name>". */
#define META_QEMU "qemu:"
#define META_DIRTY_BITMAP "qemu:dirty-bitmap:"
#define META_BASE "base:"

void
nbd_srv_meta_clear (struct nbd_srv_conn *c)
{
  unsigned i;

  for (i = 0; i < c->meta_nbitmaps; i++)
    free (c->meta_bitmaps[i]);
  free (c->meta_bitmaps);
  c->meta_bitmaps = NULL;
  c->meta_nbitmaps = 0;
  c->meta_base_alloc = false;
  free (c->meta_export);
  c->meta_export = NULL;
}

uint16_t
nbd_srv_export_flags (const struct nbd_srv_conn *c,
                      const struct nbd_srv_export *e)
{
  uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA
    | NBD_FLAG_CAN_MULTI_CONN | NBD_FLAG_SEND_CACHE;

  if (e->read_only || c->read_only)
    f |= NBD_FLAG_READ_ONLY;
  else
    f |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES
      | NBD_FLAG_SEND_FAST_ZERO;
  if (c->structured)
    f |= NBD_FLAG_SEND_DF;
  return f;
}

static int
send_reply2 (struct nbd_srv_conn *c, uint32_t option, uint32_t reply,
             const void *a, size_t alen, const void *b, size_t blen)
{
  struct nbd_fixed_new_option_reply h = {
    .magic = htobe64 (NBD_REP_MAGIC),
    .option = htobe32 (option),
    .reply = htobe32 (reply),
    .replylen = htobe32 ((uint32_t) (alen + blen)),
  };
  struct iovec iov[3] = {
    { &h, sizeof h },
    { (void *) a, alen },
    { (void *) b, blen },
  };

  return nbd_srv_conn_write_all (c, iov, 3);
}

static int
send_reply (struct nbd_srv_conn *c, uint32_t option, uint32_t reply,
            const void *data, size_t len)
{
  return send_reply2 (c, option, reply, data, len, NULL, 0);
}

static int
send_error (struct nbd_srv_conn *c, uint32_t option, uint32_t reply,
            const char *fmt, ...)
  __attribute__ ((format (printf, 4, 5)));

static int
send_error (struct nbd_srv_conn *c, uint32_t option, uint32_t reply,
            const char *fmt, ...)
{
  char msg[512];
  va_list ap;
  int n;

  va_start (ap, fmt);
  n = vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  if (n < 0)
    n = 0;
  if ((size_t) n >= sizeof msg)
    n = sizeof msg - 1;
  log_debug ("connection %s: option %" PRIu32 ": %s", c->peer, option, msg);
  return send_reply (c, option, reply, msg, n);
}

static uint32_t
get_be32 (const char *p)
{
  uint32_t v;
  memcpy (&v, p, 4);
  return be32toh (v);
}

static uint16_t
get_be16 (const char *p)
{
  uint16_t v;
  memcpy (&v, p, 2);
  return be16toh (v);
}

/* Copies a protocol string into a C string; NULL if it holds a NUL or
 * is too long. */
static char *
dup_name (const char *p, uint32_t len)
{
  char *s;

  if (len > NBD_MAX_STRING || memchr (p, 0, len))
    return NULL;
  s = malloc (len + 1);
  if (!s)
    return NULL;
  memcpy (s, p, len);
  s[len] = 0;
  return s;
}

/* What the client of C may do with export NAME. */
static enum nbd_srv_access
access_to (const struct nbd_srv_conn *c, const char *name)
{
  struct nbd_srv_peer peer = {
    .local = !c->tcp,
    .identity = nbd_srv_conn_identity (c),
  };
  return nbd_srv_access_check (c->srv->acl,
                               c->srv->tls_mode == NBD_SRV_TLS_REQUIRE,
                               &peer, name);
}

/* Logs and counts a refusal of NAME to C's client. */
static void
access_refused (struct nbd_srv_conn *c, const char *what, const char *name)
{
  nbd_srv_metrics_access_denied (c->srv->metrics);
  log_info ("connection %s: %s %s refused to client %s: not in its allow "
            "lists", c->peer, what, name, nbd_srv_conn_who (c));
}

/* Selects export E (opened for NAME with ACCESS) for transmission. */
static void
select_export (struct nbd_srv_conn *c, struct nbd_srv_export *e,
               enum nbd_srv_access access)
{
  c->exp = e;
  c->read_only = access < NBD_SRV_ACCESS_WRITE;
  c->em = nbd_srv_metrics_export (c->srv->metrics, e->name);
  if (c->em && !__atomic_load_n (&e->em, __ATOMIC_ACQUIRE))
    __atomic_store_n (&e->em, c->em, __ATOMIC_RELEASE);
  if (c->tcp || c->tls)
    log_info ("connection %s: export %s for client %s, %s", c->peer,
              e->name, nbd_srv_conn_who (c),
              e->read_only || c->read_only ? "read-only" : "read-write");
}

static int
send_info_export (struct nbd_srv_conn *c, uint32_t option,
                  const struct nbd_srv_export *e)
{
  struct nbd_info_export ie = {
    .info = htobe16 (NBD_INFO_EXPORT),
    .exportsize = htobe64 (e->size),
    .eflags = htobe16 (nbd_srv_export_flags (c, e)),
  };
  struct nbd_info_block_size bs = {
    .info = htobe16 (NBD_INFO_BLOCK_SIZE),
    .minimum = htobe32 (1),
    .preferred = htobe32 (4096),
    .maximum = htobe32 (NBD_SRV_MAX_REQUEST),
  };

  if (send_reply (c, option, NBD_REP_INFO, &ie, sizeof ie) < 0)
    return -1;
  /* Sent unasked too: it costs a few bytes and only tells the client
   * what we would accept anyway (the defaults of the specification). */
  return send_reply (c, option, NBD_REP_INFO, &bs, sizeof bs);
}

static int
send_info_string (struct nbd_srv_conn *c, uint32_t option, uint16_t type,
                  const char *s)
{
  uint16_t t = htobe16 (type);
  return send_reply2 (c, option, NBD_REP_INFO, &t, 2, s, strlen (s));
}

/* NBD_OPT_INFO and NBD_OPT_GO.  Returns 1 to enter transmission, 0 to
 * go on negotiating, -1 on I/O error. */
static int
opt_info_go (struct nbd_srv_conn *c, uint32_t option, const char *data,
             uint32_t len)
{
  uint32_t namelen;
  uint16_t nreq, i;
  bool want_name = false, want_desc = false;
  struct nbd_srv_export *e = NULL;
  enum nbd_srv_access access;
  char *name;
  int r;

  if (len < 6)
    return send_error (c, option, NBD_REP_ERR_INVALID, "option too short");
  namelen = get_be32 (data);
  if (namelen > len - 6)
    return send_error (c, option, NBD_REP_ERR_INVALID,
                       "name length %" PRIu32 " past the option", namelen);
  nreq = get_be16 (data + 4 + namelen);
  if (len != 4 + namelen + 2 + 2u * nreq)
    return send_error (c, option, NBD_REP_ERR_INVALID,
                       "option length %" PRIu32 " does not match %u "
                       "information requests", len, nreq);
  for (i = 0; i < nreq; i++)
    {
      uint16_t t = get_be16 (data + 4 + namelen + 2 + 2 * i);
      if (t == NBD_INFO_NAME)
        want_name = true;
      else if (t == NBD_INFO_DESCRIPTION)
        want_desc = true;
    }

  name = dup_name (data + 4, namelen);
  if (!name)
    return send_error (c, option, NBD_REP_ERR_INVALID, "invalid export name");
  if (!*name)
    {
      r = send_error (c, option, NBD_REP_ERR_UNKNOWN,
                      "no default export: name an image");
      free (name);
      return r;
    }
  access = access_to (c, name);
  if (access == NBD_SRV_ACCESS_NONE)
    {
      access_refused (c, "export", name);
      r = send_error (c, option, NBD_REP_ERR_POLICY, "%s: access denied",
                      name);
      free (name);
      return r;
    }
  r = nbd_srv_export_get (c->srv->exports, name, &e);
  if (r < 0)
    {
      bool backup = nbd_srv_backup_name_split (name, NULL, 0, NULL, 0);

      /* Clients rarely show the server's message (nbdinfo, qemu-img do
       * not): a backup that does not open is worth a line in the log. */
      if (backup)
        log_info ("connection %s: export %s: %s", c->peer, name,
                  vbk_error ());
      r = send_error (c, option, NBD_REP_ERR_UNKNOWN, "%s: %s", name,
                      r == -ENOENT && !backup ? "no such image"
                      : vbk_error ());
      free (name);
      return r;
    }
  /* INFO shows the flags GO would give. */
  c->read_only = access < NBD_SRV_ACCESS_WRITE;

  if (send_info_export (c, option, e) < 0)
    goto io_error;
  if (want_name && send_info_string (c, option, NBD_INFO_NAME, e->name) < 0)
    goto io_error;
  if (want_desc)
    {
      char desc[256], sz[32], osz[32];
      snprintf (desc, sizeof desc, "vbk %s %s, %s, %s of %s%s",
                e->backup ? "backup" : e->snap ? "snapshot" : "image",
                e->name, format_size (e->size, sz, sizeof sz),
                e->backup ? "chunks" : "objects",
                format_size (e->object_size, osz, sizeof osz),
                e->read_only || c->read_only ? ", read-only" : "");
      if (send_info_string (c, option, NBD_INFO_DESCRIPTION, desc) < 0)
        goto io_error;
    }
  if (send_reply (c, option, NBD_REP_ACK, NULL, 0) < 0)
    goto io_error;

  if (option == NBD_OPT_INFO)
    {
      nbd_srv_export_put (e);
      free (name);
      return 0;
    }
  /* BLOCK_STATUS needs SET_META_CONTEXT on this same export name. */
  if (c->meta_export && strcmp (c->meta_export, name) != 0)
    nbd_srv_meta_clear (c);
  select_export (c, e, access);
  free (name);
  return 1;

 io_error:
  nbd_srv_export_put (e);
  free (name);
  return -1;
}

/* NBD_OPT_EXPORT_NAME: no way to report an error but to hang up. */
static int
opt_export_name (struct nbd_srv_conn *c, const char *data, uint32_t len)
{
  static const char zeroes[124];
  struct nbd_export_name_reply rep;
  struct nbd_srv_export *e = NULL;
  struct iovec iov[2];
  char *name = dup_name (data, len);
  enum nbd_srv_access access;
  int r;

  if (!name || !*name)
    {
      log_info ("connection %s: NBD_OPT_EXPORT_NAME without a valid name",
                c->peer);
      free (name);
      return -1;
    }
  access = access_to (c, name);
  if (access == NBD_SRV_ACCESS_NONE)
    {
      access_refused (c, "export", name);
      free (name);
      return -1;
    }
  r = nbd_srv_export_get (c->srv->exports, name, &e);
  if (r < 0)
    {
      log_info ("connection %s: export %s: %s", c->peer, name,
                r == -ENOENT && !nbd_srv_backup_name_split (name, NULL, 0,
                                                            NULL, 0)
                ? "no such image" : vbk_error ());
      free (name);
      return -1;
    }
  c->read_only = access < NBD_SRV_ACCESS_WRITE;
  rep.exportsize = htobe64 (e->size);
  rep.eflags = htobe16 (nbd_srv_export_flags (c, e));
  iov[0] = (struct iovec) { &rep, sizeof rep };
  iov[1] = (struct iovec) { (void *) zeroes, c->no_zeroes ? 0 : 124 };
  if (nbd_srv_conn_write_all (c, iov, 2) < 0)
    {
      nbd_srv_export_put (e);
      free (name);
      return -1;
    }
  if (c->meta_export && strcmp (c->meta_export, name) != 0)
    nbd_srv_meta_clear (c);
  select_export (c, e, access);
  free (name);
  return 1;
}

/* The image directory: an omap whose keys are the image names (the
 * on-store format of image/).  NBD_OPT_LIST reads it directly, names
 * only, and each image's snapshot names: image_list would read every
 * image's header and whole object map, which an unauthenticated client
 * could make us do at will. */
#define IMAGE_DIRECTORY_OID "vbk_directory"

struct list_ctx {
  struct nbd_srv_conn *c;
  char last[IMAGE_NAME_MAX + 1];
  size_t n;
  bool io_error;
};

static int
list_one (void *arg, const char *key, const void *val, size_t len)
{
  struct list_ctx *lc = arg;
  size_t kl = strlen (key);
  uint32_t l = htobe32 ((uint32_t) kl);
  struct image_snap *snaps = NULL;
  size_t ns = 0, k;

  (void) val;
  (void) len;
  snprintf (lc->last, sizeof lc->last, "%s", key);
  lc->n++;
  if (kl > NBD_MAX_STRING || image_name_check (key) < 0)
    {
      vbk_clear_error ();
      return 0;
    }
  /* An image being imported or removed cannot be opened: not listed
   * (its header only: image_stat reads no map). */
  {
    struct image_info info;
    if (image_stat (lc->c->srv->store, key, &info) < 0
        || info.state != IMAGE_STATE_OK)
      {
        vbk_clear_error ();
        return 0;
      }
  }
  /* Only what this client may open (a snapshot may have lists of its
   * own, so each name is checked). */
  if (access_to (lc->c, key) != NBD_SRV_ACCESS_NONE
      && send_reply2 (lc->c, NBD_OPT_LIST, NBD_REP_SERVER, &l, 4, key, kl)
         < 0)
    {
      lc->io_error = true;
      return 1;
    }
  /* Snapshots are exports too (IMAGE@SNAP): the names in the image's
   * header, one small listing; an image removed meanwhile has none. */
  if (image_snap_list (lc->c->srv->store, key, &snaps, &ns) < 0)
    {
      vbk_clear_error ();
      return 0;
    }
  for (k = 0; k < ns; k++)
    {
      char full[2 * IMAGE_NAME_MAX + 2];
      int m = snprintf (full, sizeof full, "%s@%s", key, snaps[k].name);
      if (access_to (lc->c, full) == NBD_SRV_ACCESS_NONE)
        continue;
      l = htobe32 ((uint32_t) m);
      if (send_reply2 (lc->c, NBD_OPT_LIST, NBD_REP_SERVER, &l, 4, full, m)
          < 0)
        {
          lc->io_error = true;
          break;
        }
    }
  free (snaps);
  return lc->io_error ? 1 : 0;
}

static int
opt_list (struct nbd_srv_conn *c, uint32_t len)
{
  struct list_ctx lc = { .c = c };
  size_t before;
  int r;

  if (len != 0)
    return send_error (c, NBD_OPT_LIST, NBD_REP_ERR_INVALID,
                       "NBD_OPT_LIST takes no data");
  /* In pages, so a big directory needs no big reply from the store. */
  do
    {
      before = lc.n;
      r = store_omap_list (c->srv->store, IMAGE_DIRECTORY_OID, lc.last, 256,
                           list_one, &lc);
      if (lc.io_error)
        return -1;
      if (r == -ENOENT)
        {
          r = 0;                /* no image was ever created */
          break;
        }
      if (r < 0)
        return send_error (c, NBD_OPT_LIST, NBD_REP_ERR_INVALID,
                           "cannot list images: %s", vbk_error ());
    }
  while (lc.n - before == 256);
  vbk_clear_error ();
  return send_reply (c, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

static int
send_meta_context (struct nbd_srv_conn *c, uint32_t option, uint32_t id,
                   const char *prefix, const char *name)
{
  char buf[2 * NBD_MAX_STRING];
  uint32_t be = htobe32 (id);
  int n = snprintf (buf, sizeof buf, "%s%s", prefix, name ? name : "");

  return send_reply2 (c, option, NBD_REP_META_CONTEXT, &be, 4, buf, n);
}

static bool
query_is (const char *q, uint32_t ql, const char *s)
{
  return ql == strlen (s) && memcmp (q, s, ql) == 0;
}

/* NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT (proto.md,
 * "Metadata querying").  Contexts: base:allocation on every export, and
 * on a live export qemu:dirty-bitmap:SNAP for each snapshot SNAP of the
 * image (a backup export has base:allocation only).  LIST also takes the wildcards "base:", "qemu:" and
 * "qemu:dirty-bitmap:", and with no query lists everything; SET takes
 * exact names only.  Unknown queries select nothing. */
static int
opt_meta_context (struct nbd_srv_conn *c, uint32_t option, const char *data,
                  uint32_t len)
{
  bool set = option == NBD_OPT_SET_META_CONTEXT;
  uint32_t namelen, nq, pos, i;
  bool base = false, *pick = NULL;
  struct image_snap *snaps = NULL;
  size_t ns = 0, k, npicked = 0;
  struct image_info info;
  const char *snap;
  char *name = NULL, *image = NULL;
  int r;

  if (set)
    /* Replaces the selection even if this request fails. */
    nbd_srv_meta_clear (c);
  if (!c->structured)
    return send_error (c, option, NBD_REP_ERR_INVALID,
                       "negotiate structured replies first");
  if (len < 8)
    return send_error (c, option, NBD_REP_ERR_INVALID, "option too short");
  namelen = get_be32 (data);
  if (namelen > len - 8)
    return send_error (c, option, NBD_REP_ERR_INVALID,
                       "name length %" PRIu32 " past the option", namelen);
  nq = get_be32 (data + 4 + namelen);
  pos = 8 + namelen;
  /* First check the whole option, then answer. */
  for (i = 0; i < nq; i++)
    {
      uint32_t ql;
      if (len - pos < 4)
        return send_error (c, option, NBD_REP_ERR_INVALID,
                           "query %" PRIu32 " past the option", i);
      ql = get_be32 (data + pos);
      pos += 4;
      if (ql > len - pos)
        return send_error (c, option, NBD_REP_ERR_INVALID,
                           "query %" PRIu32 " length past the option", i);
      pos += ql;
    }
  if (pos != len)
    return send_error (c, option, NBD_REP_ERR_INVALID,
                       "option length does not match its queries");

  name = dup_name (data + 4, namelen);
  if (!name)
    return send_error (c, option, NBD_REP_ERR_INVALID, "invalid export name");
  if (*name && access_to (c, name) == NBD_SRV_ACCESS_NONE)
    {
      /* Its contexts would name the image's snapshots. */
      access_refused (c, "metadata contexts of", name);
      r = send_error (c, option, NBD_REP_ERR_POLICY, "%s: access denied",
                      name);
      goto out;
    }
  if (nbd_srv_backup_name_split (name, NULL, 0, NULL, 0))
    {
      /* A backup export: only base:allocation, if the backup opens. */
      struct nbd_srv_export *e;

      r = nbd_srv_export_get (c->srv->exports, name, &e);
      if (r == 0)
        nbd_srv_export_put (e);
    }
  else
    r = nbd_srv_export_name_split (name, &image, &snap);
  if (image == NULL)
    ;                                 /* a backup: checked above */
  else if (r == 0 && snap)
    {
      /* A snapshot export: only base:allocation, if the snapshot exists. */
      r = image_snap_list (c->srv->store, image, &snaps, &ns);
      for (k = 0; r == 0 && k < ns && strcmp (snaps[k].name, snap) != 0; k++)
        ;
      if (r == 0 && k == ns)
        {
          vbk_set_error ("no such snapshot");
          r = -ENOENT;
        }
      free (snaps);
      snaps = NULL;
      ns = 0;
    }
  else if (r == 0)
    {
      r = image_stat (c->srv->store, image, &info);
      if (r == 0)
        r = image_snap_list (c->srv->store, image, &snaps, &ns);
    }
  if (r < 0)
    {
      r = send_error (c, option, NBD_REP_ERR_UNKNOWN, "%s: %s", name,
                      r == -ENOENT && image ? "no such image" : vbk_error ());
      goto out;
    }
  pick = calloc (ns + 1, sizeof *pick);
  if (!pick)
    {
      r = send_error (c, option, NBD_REP_ERR_INVALID, "out of memory");
      goto out;
    }

  if (!set && nq == 0)
    {
      base = true;
      for (k = 0; k < ns; k++)
        pick[k] = true;
    }
  for (i = 0, pos = 8 + namelen; i < nq; i++)
    {
      uint32_t ql = get_be32 (data + pos);
      const char *q = data + pos + 4;
      size_t pl = strlen (META_DIRTY_BITMAP);

      pos += 4 + ql;
      if (query_is (q, ql, NBD_META_BASE_ALLOCATION)
          || (!set && query_is (q, ql, META_BASE)))
        base = true;
      else if (!set && (query_is (q, ql, META_QEMU)
                        || query_is (q, ql, META_DIRTY_BITMAP)))
        for (k = 0; k < ns; k++)
          pick[k] = true;
      else if (ql > pl && memcmp (q, META_DIRTY_BITMAP, pl) == 0)
        for (k = 0; k < ns; k++)
          if (query_is (q + pl, ql - (uint32_t) pl, snaps[k].name))
            pick[k] = true;
    }

  if (set)
    {
      for (k = 0; k < ns; k++)
        npicked += pick[k];
      c->meta_export = name;
      name = NULL;
      c->meta_base_alloc = base;
      if (npicked)
        {
          c->meta_bitmaps = calloc (npicked, sizeof *c->meta_bitmaps);
          if (!c->meta_bitmaps)
            {
              nbd_srv_meta_clear (c);
              r = send_error (c, option, NBD_REP_ERR_INVALID,
                              "out of memory");
              goto out;
            }
          for (k = 0; k < ns; k++)
            if (pick[k]
                && !(c->meta_bitmaps[c->meta_nbitmaps]
                     = strdup (snaps[k].name)))
              {
                nbd_srv_meta_clear (c);
                r = send_error (c, option, NBD_REP_ERR_INVALID,
                                "out of memory");
                goto out;
              }
            else if (pick[k])
              c->meta_nbitmaps++;
        }
    }

  r = 0;
  if (base && send_meta_context (c, option, set ? NBD_SRV_META_ID_BASE : 0,
                                 NBD_META_BASE_ALLOCATION, NULL) < 0)
    r = -1;
  for (k = 0, i = 0; r == 0 && k < ns; k++)
    if (pick[k])
      {
        if (send_meta_context (c, option,
                               set ? NBD_SRV_META_ID_BITMAP0 + i : 0,
                               META_DIRTY_BITMAP, snaps[k].name) < 0)
          r = -1;
        i++;
      }
  if (r == 0)
    r = send_reply (c, option, NBD_REP_ACK, NULL, 0);

 out:
  free (pick);
  free (snaps);
  free (image);
  free (name);
  return r;
}

int
nbd_srv_handshake (struct nbd_srv_conn *c)
{
  struct nbd_new_handshake hs = {
    .nbdmagic = htobe64 (NBD_MAGIC),
    .version = htobe64 (NBD_IHAVEOPT),
    .gflags = htobe16 (NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES),
  };
  struct iovec iov = { &hs, sizeof hs };
  uint32_t cflags;
  char *data = NULL;
  int r = -1;

  if (nbd_srv_conn_write_all (c, &iov, 1) < 0)
    return -1;
  if (nbd_srv_conn_read (c, &cflags, 4) < 0)
    return -1;
  cflags = be32toh (cflags);
  if (cflags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
    {
      log_info ("connection %s: unknown client flags 0x%" PRIx32,
                c->peer, cflags);
      return -1;
    }
  c->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;

  for (;;)
    {
      struct nbd_new_option opt;
      uint32_t option, len;

      if (nbd_srv_conn_read (c, &opt, sizeof opt) < 0)
        goto out;
      if (be64toh (opt.version) != NBD_IHAVEOPT)
        {
          log_info ("connection %s: bad option magic", c->peer);
          goto out;
        }
      option = be32toh (opt.option);
      len = be32toh (opt.optlen);
      if (len > NBD_SRV_MAX_OPTION)
        {
          log_info ("connection %s: option %" PRIu32 " of %" PRIu32
                    " bytes: too large", c->peer, option, len);
          goto out;
        }
      free (data);
      data = malloc (len + 1);
      if (!data || nbd_srv_conn_read (c, data, len) < 0)
        goto out;

      if (atomic_load (&c->srv->quit) && option != NBD_OPT_ABORT)
        {
          if (send_error (c, option, NBD_REP_ERR_SHUTDOWN,
                          "server shutting down") < 0)
            goto out;
          continue;
        }

      if (c->srv->tls_mode == NBD_SRV_TLS_REQUIRE && c->tcp && !c->tls
          && option != NBD_OPT_STARTTLS && option != NBD_OPT_ABORT)
        {
          /* proto.md, "TLS support": nothing but STARTTLS before TLS;
           * EXPORT_NAME has no error reply, so the session ends. */
          nbd_srv_metrics_tls_required (c->srv->metrics);
          if (option == NBD_OPT_EXPORT_NAME)
            {
              log_info ("connection %s: NBD_OPT_EXPORT_NAME without TLS: "
                        "disconnecting (TLS is required)", c->peer);
              r = -1;
              goto out;
            }
          if (send_error (c, option, NBD_REP_ERR_TLS_REQD, "TLS is "
                          "required: send NBD_OPT_STARTTLS first") < 0)
            goto out;
          continue;
        }

      switch (option)
        {
        case NBD_OPT_EXPORT_NAME:
          r = opt_export_name (c, data, len);
          goto out;
        case NBD_OPT_ABORT:
          send_reply (c, option, NBD_REP_ACK, NULL, 0);
          r = 0;
          goto out;
        case NBD_OPT_LIST:
          r = opt_list (c, len);
          break;
        case NBD_OPT_STARTTLS:
          if (len != 0)
            r = send_error (c, option, NBD_REP_ERR_INVALID,
                            "NBD_OPT_STARTTLS takes no data");
          else if (!c->srv->tls)
            r = send_error (c, option, NBD_REP_ERR_POLICY,
                            "TLS is not enabled on this server");
          else if (c->tls)
            r = send_error (c, option, NBD_REP_ERR_INVALID,
                            "TLS is already negotiated");
          else if (c->rpos < c->rlen)
            {
              /* Bytes after STARTTLS that the client sent before our
               * ACK: never let plaintext pass for TLS data. */
              log_info ("connection %s: data after NBD_OPT_STARTTLS "
                        "before its reply: disconnecting", c->peer);
              r = -1;
            }
          else if ((r = send_reply (c, option, NBD_REP_ACK, NULL, 0)) == 0
                   && (r = nbd_srv_conn_starttls (c)) == 0)
            {
              /* Negotiated in the clear: the client asks again. */
              c->structured = false;
              nbd_srv_meta_clear (c);
            }
          break;
        case NBD_OPT_INFO:
        case NBD_OPT_GO:
          r = opt_info_go (c, option, data, len);
          if (r > 0)
            goto out;
          break;
        case NBD_OPT_STRUCTURED_REPLY:
          if (len != 0)
            r = send_error (c, option, NBD_REP_ERR_INVALID,
                            "NBD_OPT_STRUCTURED_REPLY takes no data");
          else if (c->structured)
            r = send_error (c, option, NBD_REP_ERR_INVALID,
                            "structured replies already negotiated");
          else
            {
              c->structured = true;
              r = send_reply (c, option, NBD_REP_ACK, NULL, 0);
            }
          break;
        case NBD_OPT_LIST_META_CONTEXT:
        case NBD_OPT_SET_META_CONTEXT:
          r = opt_meta_context (c, option, data, len);
          break;
        default:
          r = send_error (c, option, NBD_REP_ERR_UNSUP,
                          "option %" PRIu32 " not supported", option);
          break;
        }
      if (r < 0)
        goto out;
    }

 out:
  free (data);
  return r;
}
