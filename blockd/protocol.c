/* SPDX-License-Identifier: MIT
 *
 * protocol.c - the transmission phase: parsing, checking and starting
 * requests, and sending their replies.
 *
 * DESIGN: the reader thread decodes each 28-byte request header, checks
 * it (nbd_srv_check_request: a pure function of the header and the
 * export, unit-tested), reads a WRITE payload straight into a recycled,
 * page-aligned buffer, and starts the work: READ and WRITE through
 * image_aio_* (the completion, on a store thread, hands the reply to
 * the connection, which never blocks on the socket: connection.c),
 * FLUSH, TRIM and WRITE_ZEROES on the worker pool, CACHE and
 * BLOCK_STATUS (the object map, or for a dirty bitmap the image's
 * changed-block diff) on the reader thread itself.  Before a request
 * gets a buffer the reader waits for room in the connection's and the
 * daemon's memory budgets.  One BLOCK_STATUS reply covers at most
 * NBD_SRV_STATUS_WINDOW bytes, and those that read a whole map or
 * change log from the store run one at a time.  A write first passes
 * the export's lease (nbd_srv_write_begin, writes.c) on the reader
 * thread, so writes wait there, in order, while the lease is handed over
 * to us; they end it when they complete.
 * So many requests are in flight per connection and replies go out in
 * the order they complete.  On RADOS a write to an object already
 * written in this interval takes one OSD op and these threads: the
 * reader (request read, lease gate: a mutex, no I/O; map check: no
 * lock), librados's messenger thread (sends the op; receives the
 * reply), librados's completion thread (our callback: the reply goes
 * out with one sendmsg from there); no hand-off of ours in between.
 * A read is the same.  A backup export (backup:IMAGE/ID) has no
 * image: its READs run on the worker pool through the backup's reader
 * (which decompresses whole chunks, too slow for the reader thread), its
 * map is the backup's index (zero chunks are holes), and the checks
 * refuse every write as on any read-only export.  Errors: every -errno passes through the one
 * table in nbd_srv_errno_to_nbd.  A request that cannot be framed (bad
 * magic, a WRITE payload over 64 MiB) ends the connection: there is no
 * way to find the next request; everything else gets an error reply and
 * the connection goes on.
 */
#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "internal.h"
#include "metrics.h"
#include "nbd-protocol.h"

/* Most replies held back while corked (nbd_srv_conn_cork). */
#define CORK_BATCH 16

/* Most descriptors we send in one BLOCK_STATUS reply. */
#define MAX_EXTENTS 1024

uint32_t
nbd_srv_errno_to_nbd (int err)
{
  static const struct { int err; uint32_t nbd; } table[] = {
    { 0, NBD_SUCCESS },
    { EPERM, NBD_EPERM },
    { EACCES, NBD_EPERM },
    { EROFS, NBD_EPERM },
    { EIO, NBD_EIO },
    { ENOMEM, NBD_ENOMEM },
    { EINVAL, NBD_EINVAL },
    { ENOSPC, NBD_ENOSPC },
    { EDQUOT, NBD_ENOSPC },
    { EFBIG, NBD_ENOSPC },
    { EOVERFLOW, NBD_EOVERFLOW },
    { ENOTSUP, NBD_ENOTSUP },
    { ESHUTDOWN, NBD_ESHUTDOWN },
  };
  size_t i;

  if (err == INT_MIN)
    return NBD_EIO;
  if (err < 0)
    err = -err;
  for (i = 0; i < sizeof table / sizeof table[0]; i++)
    if (table[i].err == err)
      return table[i].nbd;
  return NBD_EIO;
}

int
nbd_srv_decode_request (const void *wire, struct nbd_srv_req *r)
{
  struct nbd_request q;

  memcpy (&q, wire, sizeof q);
  if (be32toh (q.magic) != NBD_REQUEST_MAGIC)
    return -1;
  r->flags = be16toh (q.flags);
  r->type = be16toh (q.type);
  r->handle = q.handle;     /* opaque: echoed as sent */
  r->offset = be64toh (q.offset);
  r->count = be32toh (q.count);
  return 0;
}

/* OFF + LEN passes the end of an export of SIZE bytes. */
static bool
past_end (uint64_t off, uint64_t len, uint64_t size)
{
  return off > size || len > size - off;
}

uint32_t
nbd_srv_check_request (const struct nbd_srv_req *r,
                       const struct nbd_srv_limits *l)
{
  uint16_t allowed = NBD_CMD_FLAG_FUA;   /* valid on every command */

  switch (r->type)
    {
    case NBD_CMD_READ:
      if (l->structured)
        allowed |= NBD_CMD_FLAG_DF;
      break;
    case NBD_CMD_WRITE:
    case NBD_CMD_FLUSH:
    case NBD_CMD_TRIM:
    case NBD_CMD_CACHE:
    case NBD_CMD_DISC:
      break;
    case NBD_CMD_WRITE_ZEROES:
      allowed |= NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
      break;
    case NBD_CMD_BLOCK_STATUS:
      allowed |= NBD_CMD_FLAG_REQ_ONE;
      break;
    default:
      return NBD_EINVAL;              /* unknown command */
    }
  if (r->flags & ~allowed)
    return NBD_EINVAL;

  switch (r->type)
    {
    case NBD_CMD_READ:
    case NBD_CMD_CACHE:
      if (r->count > NBD_SRV_MAX_PAYLOAD)
        return NBD_EINVAL;
      if (past_end (r->offset, r->count, l->size))
        return NBD_EINVAL;
      break;
    case NBD_CMD_WRITE:
      if (l->read_only)
        return NBD_EPERM;
      if (r->count > NBD_SRV_MAX_PAYLOAD)
        return NBD_EINVAL;
      if (past_end (r->offset, r->count, l->size))
        return NBD_ENOSPC;
      break;
    case NBD_CMD_WRITE_ZEROES:
      if (l->read_only)
        return NBD_EPERM;
      /* proto.md ("Block size constraints") says a client MUST NOT send
       * WRITE_ZEROES past the advertised maximum and the server SHOULD
       * answer EINVAL.  nbdcopy (libnbd 1.14) zeroes holes with 56 MiB
       * requests all the same, and a request without payload costs us
       * no memory: any length inside the export is served. */
      if (past_end (r->offset, r->count, l->size))
        return NBD_ENOSPC;
      break;
    case NBD_CMD_TRIM:
      if (l->read_only)
        return NBD_EPERM;
      if (past_end (r->offset, r->count, l->size))
        return NBD_EINVAL;
      break;
    case NBD_CMD_BLOCK_STATUS:
      if (!l->structured || !l->meta)
        return NBD_EINVAL;
      if (r->count == 0 || past_end (r->offset, r->count, l->size))
        return NBD_EINVAL;
      break;
    default:
      break;
    }
  return 0;
}

/* ---- Metrics ------------------------------------------------------------ */

static int
metric_op (uint16_t type)
{
  switch (type)
    {
    case NBD_CMD_READ: return NBD_SRV_MOP_READ;
    case NBD_CMD_WRITE: return NBD_SRV_MOP_WRITE;
    case NBD_CMD_FLUSH: return NBD_SRV_MOP_FLUSH;
    case NBD_CMD_TRIM: return NBD_SRV_MOP_TRIM;
    case NBD_CMD_WRITE_ZEROES: return NBD_SRV_MOP_ZERO;
    case NBD_CMD_CACHE: return NBD_SRV_MOP_CACHE;
    case NBD_CMD_BLOCK_STATUS: return NBD_SRV_MOP_BLOCK_STATUS;
    default: return -1;
    }
}

/* A request answered without a request object. */
static void
count_answered (struct nbd_srv_conn *c, uint16_t type, uint32_t count,
                uint64_t start_ns, bool error)
{
  int op = metric_op (type);

  if (!c->em || op < 0)
    return;
  nbd_srv_metrics_req_begin (c->em, op, count);
  nbd_srv_metrics_req_end (c->em, op, count, start_ns, error);
}

/* R is starting (it arrived at START_NS). */
static void
req_count (struct nbd_srv_req *r, uint64_t start_ns)
{
  r->start_ns = start_ns;
  r->failed = false;
  r->mop = (int8_t) metric_op (r->type);
  if (r->mop >= 0)
    nbd_srv_metrics_req_begin (r->conn->em, r->mop, r->count);
}

/* R has been answered (or its client is gone). */
static void
req_finish (struct nbd_srv_req *r)
{
  if (r->mop >= 0)
    nbd_srv_metrics_req_end (r->conn->em, r->mop, r->count, r->start_ns,
                             r->failed);
  r->mop = -1;
  nbd_srv_req_done (r);
}

/* ---- Replies ------------------------------------------------------------ */

/* HOLD: the request whose buffer DATA is in (it stays alive until the
 * data is sent), or NULL. */
static void
send_simple (struct nbd_srv_conn *c, uint64_t handle, uint32_t err,
             const void *data, size_t len, struct nbd_srv_req *hold)
{
  struct nbd_simple_reply h = {
    .magic = htobe32 (NBD_SIMPLE_REPLY_MAGIC),
    .error = htobe32 (err),
    .handle = handle,
  };
  struct iovec iov[2] = { { &h, sizeof h }, { (void *) data, len } };

  nbd_srv_conn_reply (c, iov, len ? 2 : 1, hold);
}

static void
set_chunk (struct nbd_structured_reply *h, uint16_t flags, uint16_t type,
           uint64_t handle, uint32_t len)
{
  h->magic = htobe32 (NBD_STRUCTURED_REPLY_MAGIC);
  h->flags = htobe16 (flags);
  h->type = htobe16 (type);
  h->handle = handle;
  h->length = htobe32 (len);
}

/* Answers request (TYPE, HANDLE) with NBD error ERR (non-zero). */
static void
send_error (struct nbd_srv_conn *c, uint16_t type, uint64_t handle,
            uint32_t err, const char *msg)
{
  struct nbd_structured_reply h;
  struct nbd_structured_reply_error e;
  size_t mlen;

  if (!c->structured)
    {
      send_simple (c, handle, err, NULL, 0, NULL);
      return;
    }
  mlen = msg ? strlen (msg) : 0;
  if (mlen > 1024)
    mlen = 1024;
  set_chunk (&h, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, handle,
             sizeof e + mlen);
  e.error = htobe32 (err);
  e.len = htobe16 ((uint16_t) mlen);
  {
    struct iovec iov[3] = {
      { &h, sizeof h }, { &e, sizeof e }, { (void *) msg, mlen },
    };
    nbd_srv_conn_send (c, iov, mlen ? 3 : 2);
  }
  (void) type;
}

static void
reply_errno (struct nbd_srv_req *r, int err, const char *what)
{
  char msg[256];

  r->failed = true;
  snprintf (msg, sizeof msg, "%s: %s", what, strerror (err < 0 ? -err : err));
  log_debug ("connection %s: %s", r->conn->peer, msg);
  send_error (r->conn, r->type, r->handle, nbd_srv_errno_to_nbd (err), msg);
}

/* A structured READ reply: one chunk per extent, the last one DONE. */
static void
send_read_chunks (struct nbd_srv_req *r)
{
  struct nbd_structured_reply hdr[8];
  struct nbd_structured_reply_offset_hole hole[8];
  uint64_t offs[8];
  struct iovec iov[24];
  uint64_t off = r->offset;
  uint32_t pos = 0;
  int n = 0;
  unsigned i;

  for (i = 0; i < r->next_ext; i++)
    {
      uint16_t flags = i + 1 == r->next_ext ? NBD_REPLY_FLAG_DONE : 0;
      uint32_t len = r->ext_len[i];

      if (r->ext_hole[i])
        {
          set_chunk (&hdr[i], flags, NBD_REPLY_TYPE_OFFSET_HOLE, r->handle,
                     sizeof hole[i]);
          hole[i].offset = htobe64 (off);
          hole[i].length = htobe32 (len);
          iov[n++] = (struct iovec) { &hdr[i], sizeof hdr[i] };
          iov[n++] = (struct iovec) { &hole[i], sizeof hole[i] };
        }
      else
        {
          set_chunk (&hdr[i], flags, NBD_REPLY_TYPE_OFFSET_DATA, r->handle,
                     8 + len);
          offs[i] = htobe64 (off);
          iov[n++] = (struct iovec) { &hdr[i], sizeof hdr[i] };
          iov[n++] = (struct iovec) { &offs[i], 8 };
          iov[n++] = (struct iovec) { r->buf + pos, len };
        }
      off += len;
      pos += len;
    }
  nbd_srv_conn_reply (r->conn, iov, n, r);
}

static void
send_read_data (struct nbd_srv_req *r)
{
  struct nbd_srv_conn *c = r->conn;

  if (!c->structured)
    send_simple (c, r->handle, 0, r->buf, r->count, r);
  else
    send_read_chunks (r);
}

/* ---- Completions -------------------------------------------------------- */

/* What failed, for the log: the image layer leaves the failed piece's
 * message (backend, operation, object) on the completing thread. */
static const char *
aio_error (ssize_t ret)
{
  const char *msg = vbk_error ();

  return msg[0] ? msg : strerror ((int) -ret);
}

static void
read_done (void *arg, ssize_t ret)
{
  struct nbd_srv_req *r = arg;

  if (ret < 0)
    {
      log_warn ("connection %s: read %" PRIu32 " at %" PRIu64 ": %s",
                r->conn->peer, r->count, r->offset, aio_error (ret));
      reply_errno (r, (int) ret, "read");
    }
  else
    send_read_data (r);
  req_finish (r);
}

static void
write_done (void *arg, ssize_t ret)
{
  struct nbd_srv_req *r = arg;

  if (r->leased)
    {
      r->leased = false;
      nbd_srv_write_end (r->conn->exp);
    }
  if (ret < 0)
    {
      log_warn ("connection %s: write %" PRIu32 " at %" PRIu64 ": %s",
                r->conn->peer, r->count, r->offset, aio_error (ret));
      reply_errno (r, (int) ret, "write");
    }
  else
    send_simple (r->conn, r->handle, 0, NULL, 0, NULL);
  req_finish (r);
}

/* A READ of a backup export, on a worker. */
static void
backup_read (struct nbd_srv_req *r)
{
  ssize_t ret = backup_reader_pread (r->conn->exp->backup, r->buf, r->count,
                                     r->offset);

  if (ret < 0)
    {
      /* The reader's message names the backup, the offset and the
       * chunk. */
      log_warn ("connection %s: export %s: read %" PRIu32 " at %" PRIu64
                ": %s", r->conn->peer, r->conn->exp->name, r->count,
                r->offset, vbk_error ());
      reply_errno (r, (int) ret, "read");
    }
  else
    send_read_data (r);
  req_finish (r);
}

void
nbd_srv_req_run_sync (struct nbd_srv_req *r)
{
  struct image *img = r->conn->exp->img;
  unsigned fl = (r->flags & NBD_CMD_FLAG_FUA) ? IMAGE_FUA : 0;
  const char *what = "flush";
  int ret = 0;

  switch (r->type)
    {
    case NBD_CMD_READ:
      backup_read (r);
      return;
    case NBD_CMD_FLUSH:
      ret = nbd_srv_export_flush (r->conn->exp);
      break;
    case NBD_CMD_TRIM:
      what = "trim";
      ret = image_discard (img, r->offset, r->count, fl);
      break;
    case NBD_CMD_WRITE_ZEROES:
      what = "write zeroes";
      if (r->flags & NBD_CMD_FLAG_NO_HOLE)
        fl |= IMAGE_NO_HOLE;
      ret = image_write_zeroes (img, r->offset, r->count, fl);
      break;
    default:
      ret = -EINVAL;
      break;
    }
  if (r->leased)
    {
      r->leased = false;
      nbd_srv_write_end (r->conn->exp);
    }
  if (ret < 0)
    {
      log_warn ("connection %s: %s %" PRIu32 " at %" PRIu64 ": %s",
                r->conn->peer, what, r->count, r->offset, vbk_error ());
      reply_errno (r, ret, what);
    }
  else
    send_simple (r->conn, r->handle, 0, NULL, 0, NULL);
  req_finish (r);
}

/* ---- Block status ------------------------------------------------------- */

struct extent_acc {
  struct nbd_block_descriptor *d;
  unsigned n, max;
  uint64_t covered;
};

/* Appends LEN bytes of FLAGS, merging with the last descriptor.  Returns
 * 1 when full (a short reply is allowed). */
static int
acc_add (struct extent_acc *a, uint64_t len, uint32_t flags)
{
  while (len > 0)
    {
      uint32_t l = len > 0x80000000u ? 0x80000000u : (uint32_t) len;
      if (a->n > 0 && be32toh (a->d[a->n - 1].status_flags) == flags
          && (uint64_t) be32toh (a->d[a->n - 1].length) + l <= 0x80000000u)
        a->d[a->n - 1].length = htobe32 (be32toh (a->d[a->n - 1].length) + l);
      else
        {
          if (a->n == a->max)
            return 1;
          a->d[a->n].length = htobe32 (l);
          a->d[a->n].status_flags = htobe32 (flags);
          a->n++;
        }
      a->covered += l;
      len -= l;
    }
  return 0;
}

static int
extent_cb (void *arg, uint64_t off, uint64_t len, int allocated)
{
  return acc_add (arg, len, allocated ? 0 : (NBD_STATE_HOLE | NBD_STATE_ZERO));
}

/* qemu:dirty-bitmap:SNAP (qemu docs/interop/nbd.rst): bit 0 set where the
 * image changed since SNAP.  image_diff reports the changed extents of
 * the whole image, in order; we keep [pos, end) and fill the gaps with
 * clean extents. */
struct dirty_acc {
  struct extent_acc *a;
  uint64_t pos, end;
};

#define NBD_STATE_DIRTY 1u

static int
dirty_cb (void *arg, uint64_t off, uint64_t len, int changed)
{
  struct dirty_acc *da = arg;
  uint64_t s = off, e = off + len;

  if (e <= da->pos)
    return 0;
  if (s >= da->end)
    return 1;                         /* past the request: done */
  if (s < da->pos)
    s = da->pos;
  if (e > da->end)
    e = da->end;
  if (s > da->pos && acc_add (da->a, s - da->pos, 0))
    return 1;
  if (acc_add (da->a, e - s, NBD_STATE_DIRTY))
    return 1;
  da->pos = e;
  return da->pos >= da->end;
}

/* Fills A for context ID of request Q.  Returns 0 or -errno. */
static int
block_status_of (struct nbd_srv_conn *c, const struct nbd_srv_req *q,
                 uint32_t id, struct extent_acc *a)
{
  struct nbd_srv_export *e = c->exp;
  uint64_t end = q->offset + q->count;
  int ret;

  if (end > e->size)
    end = e->size;
  if (id == NBD_SRV_META_ID_BASE)
    {
      if (e->backup)
        ret = backup_reader_extents (e->backup, q->offset, q->count,
                                     extent_cb, a);
      else
        ret = image_extents (e->img, q->offset, q->count, extent_cb, a);
      return ret < 0 ? ret : 0;
    }
  else
    {
      struct dirty_acc da = { a, q->offset, end };
      const char *snap = c->meta_bitmaps[id - NBD_SRV_META_ID_BITMAP0];

      ret = image_diff (e->store ? e->store : c->srv->store, e->image, snap,
                        NULL, dirty_cb, &da);
      if (ret < 0)
        return ret;
      if (da.pos < end)
        acc_add (a, end - da.pos, 0);
      return 0;
    }
}

static void
do_block_status (struct nbd_srv_conn *c, const struct nbd_srv_req *q0)
{
  struct nbd_block_descriptor d[MAX_EXTENTS];
  struct nbd_srv_req qw = *q0, *q = &qw;
  unsigned nctx = (c->meta_base_alloc ? 1 : 0) + c->meta_nbitmaps, i, k = 0;
  bool serial;

  /* A bounded window: the reply may describe less than was asked
   * (proto.md, NBD_CMD_BLOCK_STATUS). */
  if (qw.count > NBD_SRV_STATUS_WINDOW)
    qw.count = NBD_SRV_STATUS_WINDOW;
  /* An untrusted map is read whole from the store, and a dirty bitmap
   * walks the change logs: one at a time in the daemon, so that their
   * memory is not multiplied by the number of clients. */
  serial = c->meta_nbitmaps > 0 || !atomic_load (&c->exp->trusted);
  if (serial)
    pthread_mutex_lock (&c->srv->status_lock);

  /* One BLOCK_STATUS chunk per selected context; DONE on the last. */
  for (i = 0; i < 1 + c->meta_nbitmaps; i++)
    {
      struct extent_acc a = { d, 0, MAX_EXTENTS, 0 };
      struct nbd_structured_reply h;
      uint32_t id = i == 0 ? NBD_SRV_META_ID_BASE : NBD_SRV_META_ID_BITMAP0
        + (i - 1);
      uint32_t beid = htobe32 (id);
      int ret;

      if (i == 0 && !c->meta_base_alloc)
        continue;
      k++;
      if (q->flags & NBD_CMD_FLAG_REQ_ONE)
        a.max = 1;
      ret = block_status_of (c, q, id, &a);
      if (ret < 0)
        {
          char msg[256];
          snprintf (msg, sizeof msg, "block status: %s", vbk_error ());
          log_warn ("connection %s: %s", c->peer, msg);
          send_error (c, q->type, q->handle, nbd_srv_errno_to_nbd (ret),
                      msg);
          break;
        }
      if (a.n == 0)
        {
          /* Cannot happen for an in-range request; never send an empty
           * list. */
          d[0].length = htobe32 (q->count);
          d[0].status_flags = 0;
          a.n = 1;
        }
      set_chunk (&h, k == nctx ? NBD_REPLY_FLAG_DONE : 0,
                 NBD_REPLY_TYPE_BLOCK_STATUS, q->handle,
                 4 + a.n * sizeof d[0]);
      {
        struct iovec iov[3] = {
          { &h, sizeof h }, { &beid, 4 }, { d, a.n * sizeof d[0] },
        };
        nbd_srv_conn_send (c, iov, 3);
      }
    }
  if (serial)
    pthread_mutex_unlock (&c->srv->status_lock);
}

/* ---- Reads -------------------------------------------------------------- */

static int
read_extent_cb (void *arg, uint64_t off, uint64_t len, int allocated)
{
  struct nbd_srv_req *r = arg;
  bool hole = !allocated;

  if (r->next_ext > 0 && r->ext_hole[r->next_ext - 1] == hole)
    {
      r->ext_len[r->next_ext - 1] += (uint32_t) len;
      return 0;
    }
  if (r->next_ext == 8)
    return 1;                         /* too fragmented: read it all */
  r->ext_hole[r->next_ext] = hole;
  r->ext_len[r->next_ext] = (uint32_t) len;
  r->next_ext++;
  return 0;
}

/* Fills r->ext_* for a structured read; falls back to one data extent. */
static void
map_read (struct nbd_srv_req *r)
{
  uint64_t sum = 0;
  unsigned i;
  int ret;

  r->next_ext = 0;
  /* An untrusted map would be reread from the store for every read: the
   * store's own sparse reads are cheaper. */
  if (!(r->flags & NBD_CMD_FLAG_DF)
      && atomic_load (&r->conn->exp->trusted))
    {
      if (r->conn->exp->backup)
        ret = backup_reader_extents (r->conn->exp->backup, r->offset,
                                     r->count, read_extent_cb, r);
      else
        ret = image_extents (r->conn->exp->img, r->offset, r->count,
                             read_extent_cb, r);
      for (i = 0; i < r->next_ext; i++)
        sum += r->ext_len[i];
      if (ret == 0 && sum == r->count)
        return;
    }
  r->next_ext = 1;
  r->ext_hole[0] = false;
  r->ext_len[0] = r->count;
}

static bool
all_holes (const struct nbd_srv_req *r)
{
  unsigned i;
  for (i = 0; i < r->next_ext; i++)
    if (!r->ext_hole[i])
      return false;
  return true;
}

/* ---- The request loop --------------------------------------------------- */

static const char *
cmd_name (uint16_t type)
{
  static const char *const names[] = {
    "read", "write", "disc", "flush", "trim", "cache", "write-zeroes",
    "block-status",
  };
  return type < 8 ? names[type] : "unknown";
}

/* Passes write R through its export's lease (waiting while the lease is
 * handed over to us).  Returns true if the write may go on; else it has
 * been answered with an error and ended. */
static bool
lease_gate (struct nbd_srv_req *r)
{
  int ret;
  char msg[600];

  /* The lease may make us wait (a hand-off, a snapshot's pause): what is
   * answered goes first. */
  nbd_srv_conn_uncork (r->conn);
  ret = nbd_srv_write_begin (r->conn->exp);

  if (ret >= 0)
    {
      r->leased = ret > 0;
      return true;
    }
  snprintf (msg, sizeof msg, "%s: %s", cmd_name (r->type), vbk_error ());
  log_warn ("connection %s: %s", r->conn->peer, msg);
  r->failed = true;
  send_error (r->conn, r->type, r->handle, nbd_srv_errno_to_nbd (ret), msg);
  req_finish (r);
  return false;
}

void
nbd_srv_transmission (struct nbd_srv_conn *c)
{
  struct nbd_srv_limits lim;
  struct image *img = c->exp->img;

  c->eflags = nbd_srv_export_flags (c, c->exp);
  lim.size = c->exp->size;
  lim.read_only = c->exp->read_only || c->read_only;
  lim.structured = c->structured;
  lim.meta = c->meta_base_alloc || c->meta_nbitmaps > 0;

  for (;;)
    {
      char wire[sizeof (struct nbd_request)];
      struct nbd_srv_req q, *r;
      uint32_t err;
      uint64_t t0;
      int ret;

      /* With the next request already here, its reply and this one's
       * can go out together: cork until the reader would wait, or a
       * batch is as large as a client's queue usually is. */
      if (__atomic_load_n (&c->corked_n, __ATOMIC_RELAXED) >= CORK_BATCH)
        nbd_srv_conn_uncork (c);
      if (c->rlen - c->rpos >= 2 * sizeof wire)
        nbd_srv_conn_cork (c);
      if (nbd_srv_conn_read (c, wire, sizeof wire) < 0)
        break;
      /* Replies from here on give the client something to answer
       * (connection.c's busy polling). */
      c->replies_seen = __atomic_load_n (&c->replies, __ATOMIC_RELAXED);
      t0 = c->em ? nbd_srv_metrics_now_ns () : 0;
      if (nbd_srv_decode_request (wire, &q) < 0)
        {
          log_info ("connection %s: bad request magic: disconnecting",
                    c->peer);
          break;
        }
      log_debug ("connection %s: %s flags 0x%x offset %" PRIu64
                 " count %" PRIu32, c->peer, cmd_name (q.type), q.flags,
                 q.offset, q.count);
      if (q.type == NBD_CMD_DISC)
        break;
      if (q.type == NBD_CMD_WRITE && q.count > NBD_SRV_MAX_PAYLOAD)
        {
          /* proto.md, block size constraints: a payload this large may
           * be treated as a denial of service. */
          log_info ("connection %s: write of %" PRIu32 " bytes: too large, "
                    "disconnecting", c->peer, q.count);
          break;
        }

      /* Shutting down: leave the request unanswered.  A client that
       * reconnects (QEMU's reconnect-delay) sends it again to the next
       * daemon; an NBD_ESHUTDOWN reply would fail it in the guest. */
      if (nbd_srv_conn_should_quit (c))
        break;
      err = nbd_srv_check_request (&q, &lim);
      if (err)
        {
          if (q.type == NBD_CMD_WRITE && nbd_srv_conn_skip (c, q.count) < 0)
            break;
          log_debug ("connection %s: %s: error %" PRIu32, c->peer,
                     cmd_name (q.type), err);
          send_error (c, q.type, q.handle, err,
                      err == NBD_EPERM ? "read-only export"
                      : "invalid request");
          count_answered (c, q.type, q.count, t0, true);
          continue;
        }

      switch (q.type)
        {
        case NBD_CMD_READ:
          if (!nbd_srv_conn_wait_room (c, q.count))
            goto out;
          r = nbd_srv_req_new (c, q.count, q.count);
          if (!r)
            {
              nbd_srv_conn_release_room (c, q.count);
              send_error (c, q.type, q.handle, NBD_ENOMEM, "out of memory");
              break;
            }
          r->flags = q.flags;
          r->type = q.type;
          r->handle = q.handle;
          r->offset = q.offset;
          r->count = q.count;
          r->next_ext = 0;
          req_count (r, t0);
          if (c->structured)
            {
              map_read (r);
              if (q.count == 0 || all_holes (r))
                {
                  if (q.count == 0)
                    {
                      struct nbd_structured_reply h;
                      struct iovec iov = { &h, sizeof h };
                      set_chunk (&h, NBD_REPLY_FLAG_DONE,
                                 NBD_REPLY_TYPE_NONE, q.handle, 0);
                      nbd_srv_conn_send (c, &iov, 1);
                    }
                  else
                    send_read_chunks (r);
                  req_finish (r);
                  break;
                }
            }
          else if (q.count == 0)
            {
              send_simple (c, q.handle, 0, NULL, 0, NULL);
              req_finish (r);
              break;
            }
          if (c->exp->backup)
            {
              nbd_srv_workers_queue (c->srv->workers, r);
              break;
            }
          if (c->srv->inline_io && q.count <= NBD_SRV_INLINE_MAX)
            {
              read_done (r, image_read (img, r->buf, q.count, q.offset));
              break;
            }
          ret = image_aio_read (img, r->buf, q.count, q.offset, read_done, r);
          if (ret < 0)
            {
              reply_errno (r, ret, "read");
              req_finish (r);
            }
          break;

        case NBD_CMD_WRITE:
          if (!nbd_srv_conn_wait_room (c, q.count))
            goto out;
          r = nbd_srv_req_new (c, q.count, q.count);
          if (!r)
            {
              nbd_srv_conn_release_room (c, q.count);
              if (nbd_srv_conn_skip (c, q.count) < 0)
                goto out;
              send_error (c, q.type, q.handle, NBD_ENOMEM, "out of memory");
              break;
            }
          r->flags = q.flags;
          r->type = q.type;
          r->handle = q.handle;
          r->offset = q.offset;
          r->count = q.count;
          req_count (r, t0);
          if (nbd_srv_conn_read (c, r->buf, q.count) < 0)
            {
              /* The client vanished mid-request: nothing to answer. */
              req_finish (r);
              goto out;
            }
          if (q.count == 0)
            {
              send_simple (c, q.handle, 0, NULL, 0, NULL);
              req_finish (r);
              break;
            }
          if (!lease_gate (r))
            break;
          ret = image_aio_write (img, r->buf, q.count, q.offset,
                                 (q.flags & NBD_CMD_FLAG_FUA) ? IMAGE_FUA : 0,
                                 write_done, r);
          if (ret < 0)
            write_done (r, ret);
          break;

        case NBD_CMD_WRITE_ZEROES:
          if ((q.flags & NBD_CMD_FLAG_FAST_ZERO)
              && (q.flags & NBD_CMD_FLAG_NO_HOLE))
            {
              /* Zeroing with NO_HOLE writes the zeroes: no faster than a
               * WRITE.  Without NO_HOLE it deallocates (fast). */
              send_error (c, q.type, q.handle, NBD_ENOTSUP,
                          "zeroing without holes is not fast");
              break;
            }
          /* fall through */
        case NBD_CMD_FLUSH:
        case NBD_CMD_TRIM:
          if (q.count == 0 && q.type != NBD_CMD_FLUSH)
            {
              send_simple (c, q.handle, 0, NULL, 0, NULL);
              count_answered (c, q.type, 0, t0, false);
              break;
            }
          /* No buffer: the pool's requests count no bytes. */
          if (!nbd_srv_conn_wait_room (c, 0))
            goto out;
          r = nbd_srv_req_new (c, 0, 0);
          if (!r)
            {
              nbd_srv_conn_release_room (c, 0);
              send_error (c, q.type, q.handle, NBD_ENOMEM, "out of memory");
              break;
            }
          r->flags = q.flags;
          r->type = q.type;
          r->handle = q.handle;
          r->offset = q.offset;
          r->count = q.count;
          r->leased = false;
          req_count (r, t0);
          if (q.type != NBD_CMD_FLUSH && !lease_gate (r))
            break;
          nbd_srv_workers_queue (c->srv->workers, r);
          break;

        case NBD_CMD_CACHE:
          /* A hint with no effect here: the store has its own caching
           * (page cache, OSD caches).  Success is always correct. */
          send_simple (c, q.handle, 0, NULL, 0, NULL);
          count_answered (c, q.type, q.count, t0, false);
          break;

        case NBD_CMD_BLOCK_STATUS:
          /* May wait for another connection's map read. */
          nbd_srv_conn_uncork (c);
          do_block_status (c, &q);
          count_answered (c, q.type, q.count, t0, false);
          break;
        }
    }
 out:
  nbd_srv_conn_uncork (c);
}
