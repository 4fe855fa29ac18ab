/* SPDX-License-Identifier: MIT
 *
 * io.c - reads, writes, zeroes and discards on an open image.
 *
 * DESIGN
 * - Every I/O is split at object boundaries.  Asynchronous calls issue
 *   store aio per piece and complete when the last piece does;
 *   synchronous calls do the pieces in turn on the caller's thread.
 * - A write first marks its objects in the object map and change log
 *   (objmap.c) and counts itself in wr_inflight; only then does the data
 *   write start.  On RADOS an asynchronous write that must wait for
 *   that waits on the commit queue (commit.c), not on the caller's
 *   thread; on the local store those writes are buffered and made on
 *   the caller's thread (no sync: objmap.c, openmark.c).
 */
#include "internal.h"

/* ---- Asynchronous I/O ------------------------------------------------- */

struct aio_part {
  struct aio_req *req;
  void *buf;                     /* read: where this part's bytes go */
  size_t len;
  uint64_t objno;
};

struct aio_req {
  struct image *img;
  image_aio_cb cb;
  void *arg;
  size_t len;
  bool write;
  const void *wbuf;              /* write: the data, from OFF */
  uint64_t off;
  unsigned sflags;               /* write: store flags */
  int pending;                   /* parts + 1 while submitting */
  int err;                       /* first error */
  char *msg;                     /* its vbk_error(), set by whoever set err */
  struct aio_part parts[];
};

/* Keeps the first error and its message (taken from this thread). */
static void
req_fail (struct aio_req *req, int err)
{
  int zero = 0;

  if (__atomic_compare_exchange_n (&req->err, &zero, err, false,
                                   __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
    req->msg = strdup (vbk_error ());
}

static void
req_put (struct aio_req *req)
{
  if (__atomic_sub_fetch (&req->pending, 1, __ATOMIC_ACQ_REL) != 0)
    return;
  /* The caller's callback finds the first failure's message on its
   * thread, whichever thread that failure happened on. */
  if (req->err && req->msg)
    vbk_set_error ("%s", req->msg);
  req->cb (req->arg, req->err ? req->err : (ssize_t) (req->write
                                                      ? 0 : req->len));
  free (req->msg);
  free (req);
}

static void
part_done (void *arg, ssize_t ret)
{
  struct aio_part *p = arg;
  struct aio_req *req = p->req;

  if (!req->write && ret == -ENOENT) {
    memset (p->buf, 0, p->len); /* the map over-reported: a hole */
    ret = 0;
  }
  if (req->write)
    __atomic_sub_fetch (&req->img->wr_inflight[p->objno % INFLIGHT_BUCKETS],
                        1, __ATOMIC_SEQ_CST);
  if (ret < 0)
    req_fail (req, (int) ret);
  req_put (req);
}

static int
check_range (struct image *img, const char *op, size_t len, uint64_t off)
{
  uint64_t size = image_size (img);

  if (off > size || len > size - off) {
    vbk_set_error ("image '%s': %s: range %" PRIu64 "+%zu is past the end "
                   "(%" PRIu64 ")", img->info.name, op, off, len, size);
    return -EINVAL;
  }
  return 0;
}

int
image_check_writable (struct image *img, const char *op)
{
  if (img->flags & IMAGE_OPEN_RDONLY) {
    vbk_set_error ("image '%s': %s: opened read-only", img->info.name, op);
    return -EROFS;
  }
  return 0;
}

static struct aio_req *
req_new (struct image *img, size_t len, uint64_t off, bool write,
         image_aio_cb cb, void *arg)
{
  uint64_t first = off >> img->order;
  uint64_t last = len ? (off + len - 1) >> img->order : first;
  struct aio_req *req;

  req = calloc (1, sizeof *req + (last - first + 1) * sizeof req->parts[0]);
  if (req == NULL)
    return NULL;
  req->img = img;
  req->cb = cb;
  req->arg = arg;
  req->len = len;
  req->write = write;
  req->pending = 1;
  return req;
}

int
image_aio_read (struct image *img, void *buf, size_t len, uint64_t off,
                image_aio_cb cb, void *arg)
{
  uint64_t osize = img->info.object_size, pos = off;
  struct aio_req *req;
  char oid[96];
  size_t i = 0;
  int r;

  r = check_range (img, "read", len, off);
  if (r < 0)
    return r;
  req = req_new (img, len, off, false, cb, arg);
  if (req == NULL)
    return -ENOMEM;
  while (pos < off + len) {
    uint64_t objno = pos >> img->order, ooff = pos & (osize - 1);
    size_t n = MIN (osize - ooff, off + len - pos);
    struct aio_part *p = &req->parts[i++];

    p->req = req;
    p->buf = (char *) buf + (pos - off);
    p->len = n;
    p->objno = objno;
    if (image_object_state (img, objno) == IMAGE_OBJ_ABSENT
        && !__atomic_load_n (&img->untrusted, __ATOMIC_ACQUIRE))
      memset (p->buf, 0, n);
    else {
      image_data_oid (img->info.id, objno, oid, sizeof oid);
      __atomic_add_fetch (&req->pending, 1, __ATOMIC_ACQ_REL);
      r = store_aio_read (img->st, oid, p->buf, n, ooff, img->read_snap,
                          part_done, p);
      if (r < 0) {
        __atomic_sub_fetch (&req->pending, 1, __ATOMIC_ACQ_REL);
        req_fail (req, r);
        break;
      }
    }
    pos += n;
  }
  req_put (req);
  return 0;
}

/* Releases the in-flight counts of the objects of [POS, END). */
static void
uncount_writes (struct image *img, uint64_t pos, uint64_t end)
{
  uint64_t osize = img->info.object_size;

  for (; pos < end; pos += osize - (pos & (osize - 1)))
    __atomic_sub_fetch (&img->wr_inflight[(pos >> img->order)
                                          % INFLIGHT_BUCKETS],
                        1, __ATOMIC_SEQ_CST);
}

/* Starts the data writes of REQ, its objects marked (image_mark_parts
 * done), and drops the submitter's reference. */
static void
write_submit (struct aio_req *req)
{
  struct image *img = req->img;
  uint64_t osize = img->info.object_size, off = req->off, pos = off;
  size_t len = req->len, i = 0;
  char oid[96];
  int r;

  while (pos < off + len) {
    uint64_t objno = pos >> img->order, ooff = pos & (osize - 1);
    size_t n = MIN (osize - ooff, off + len - pos);
    struct aio_part *p = &req->parts[i++];

    p->req = req;
    p->len = n;
    p->objno = objno;
    image_data_oid (img->info.id, objno, oid, sizeof oid);
    __atomic_add_fetch (&req->pending, 1, __ATOMIC_ACQ_REL);
    r = store_aio_write (img->st, oid, (const char *) req->wbuf + (pos - off),
                         n, ooff, req->sflags, part_done, p);
    if (r < 0) {
      __atomic_sub_fetch (&req->pending, 1, __ATOMIC_ACQ_REL);
      req_fail (req, r);
      /* Release the in-flight counts of the parts never submitted. */
      uncount_writes (img, pos, off + len);
      break;
    }
    pos += n;
  }
  req_put (req);
}

/* The committer made REQ's entries durable (ERR 0), or could not. */
static void
write_committed (void *arg, int err)
{
  struct aio_req *req = arg;

  if (err < 0) {
    uncount_writes (req->img, req->off, req->off + req->len);
    req->err = err;
    req_put (req);
    return;
  }
  image_mark_parts (req->img, req->off, req->len);
  write_submit (req);
}

int
image_aio_write (struct image *img, const void *buf, size_t len,
                 uint64_t off, unsigned flags, image_aio_cb cb, void *arg)
{
  uint64_t osize = img->info.object_size, pos = off;
  struct aio_req *req;
  int r;

  r = image_check_writable (img, "write");
  if (r == 0)
    r = check_range (img, "write", len, off);
  if (r < 0)
    return r;
  req = req_new (img, len, off, true, cb, arg);
  if (req == NULL)
    return -ENOMEM;
  req->wbuf = buf;
  req->off = off;
  req->sflags = (flags & IMAGE_FUA) ? STORE_WRITE_SYNC : 0;
  /* Count the writes in flight before looking at the map (see
   * image_map_mark_absent). */
  for (pos = off; pos < off + len; pos += osize - (pos & (osize - 1)))
    __atomic_add_fetch (&img->wr_inflight[(pos >> img->order)
                                          % INFLIGHT_BUCKETS],
                        1, __ATOMIC_SEQ_CST);
  if (len) {
    /* A first write waits for its commit on the committer (commit.c),
     * which then goes on with write_committed. */
    r = image_map_mark_dirty_async (img, off >> img->order,
                                    (off + len - 1) >> img->order, true,
                                    write_committed, req);
    if (r == 1)
      return 0;
    if (r < 0) {
      uncount_writes (img, off, off + len);
      free (req);
      return r;
    }
    image_mark_parts (img, off, len);
  }
  write_submit (req);
  return 0;
}

/* ---- Synchronous I/O ------------------------------------------------- */

/* The synchronous calls run on the caller's thread, straight to the
 * store: no hand-off to another thread, which on the local store costs
 * more than the I/O itself. */
ssize_t
image_read (struct image *img, void *buf, size_t len, uint64_t off)
{
  uint64_t osize = img->info.object_size, pos;
  bool untrusted = __atomic_load_n (&img->untrusted, __ATOMIC_ACQUIRE);
  char oid[96];
  int r;

  r = check_range (img, "read", len, off);
  if (r < 0)
    return r;
  for (pos = off; pos < off + len;) {
    uint64_t objno = pos >> img->order, ooff = pos & (osize - 1);
    size_t n = MIN (osize - ooff, off + len - pos);
    char *p = (char *) buf + (pos - off);
    ssize_t got;

    if (!untrusted && image_object_state (img, objno) == IMAGE_OBJ_ABSENT)
      memset (p, 0, n);
    else {
      image_data_oid (img->info.id, objno, oid, sizeof oid);
      got = store_read (img->st, oid, p, n, ooff, img->read_snap);
      if (got == -ENOENT)
        memset (p, 0, n);
      else if (got < 0)
        return got;
    }
    pos += n;
  }
  return (ssize_t) len;
}

int
image_write (struct image *img, const void *buf, size_t len, uint64_t off,
             unsigned flags)
{
  uint64_t osize = img->info.object_size, pos;
  unsigned sflags = (flags & IMAGE_FUA) ? STORE_WRITE_SYNC : 0;
  char oid[96];
  int r;

  r = image_check_writable (img, "write");
  if (r == 0)
    r = check_range (img, "write", len, off);
  if (r < 0 || len == 0)
    return r;
  for (pos = off; pos < off + len; pos += osize - (pos & (osize - 1)))
    __atomic_add_fetch (&img->wr_inflight[(pos >> img->order)
                                          % INFLIGHT_BUCKETS],
                        1, __ATOMIC_SEQ_CST);
  r = image_map_mark_dirty (img, off >> img->order,
                            (off + len - 1) >> img->order, true);
  if (r == 0)
    image_mark_parts (img, off, len);
  for (pos = off; pos < off + len;) {
    uint64_t objno = pos >> img->order, ooff = pos & (osize - 1);
    size_t n = MIN (osize - ooff, off + len - pos);

    if (r == 0) {
      image_data_oid (img->info.id, objno, oid, sizeof oid);
      r = store_write (img->st, oid, (const char *) buf + (pos - off), n,
                       ooff, sflags);
    }
    __atomic_sub_fetch (&img->wr_inflight[objno % INFLIGHT_BUCKETS], 1,
                        __ATOMIC_SEQ_CST);
    pos += n;
  }
  return r;
}

int
image_flush (struct image *img)
{
  if (img->flags & IMAGE_OPEN_RDONLY)
    return 0;
  return store_flush (img->st);
}

/* Zeroes [OFF, OFF+LEN) inside one object: deallocates when HOLES. */
static int
zero_in_object (struct image *img, uint64_t objno, uint64_t ooff,
                uint64_t len, bool holes, unsigned flags)
{
  char oid[96];
  int r;

  if (image_object_state (img, objno) == IMAGE_OBJ_ABSENT && holes)
    return 0;
  image_data_oid (img->info.id, objno, oid, sizeof oid);
  if (holes && ooff == 0 && len == img->info.object_size) {
    r = image_map_mark_dirty (img, objno, objno, false);
    if (r == 0) {
      image_mark_parts (img, objno << img->order, len);
      r = store_remove (img->st, oid);
    }
    if (r < 0 && r != -ENOENT)
      return r;
    image_map_mark_absent (img, objno);
    return 0;
  }
  r = image_map_mark_dirty (img, objno, objno, true);
  if (r < 0)
    return r;
  image_mark_parts (img, (objno << img->order) + ooff,
                    MIN (len, img->info.object_size - ooff));
  if (holes) {
    r = store_zero (img->st, oid, ooff, len);
    if (r == -ENOENT)
      r = 0;
  }
  else {
    /* NO_HOLE: the range must stay allocated, so write real zeros. */
    static const char zeros[1 << 16];
    uint64_t done = 0;
    r = 0;
    while (r == 0 && done < len) {
      size_t n = MIN (sizeof zeros, len - done);
      r = store_write (img->st, oid, zeros, n, ooff + done,
                       (flags & IMAGE_FUA) ? STORE_WRITE_SYNC : 0);
      done += n;
    }
  }
  if (r == 0 && (flags & IMAGE_FUA) && holes)
    r = store_flush (img->st);
  return r;
}

static int
zero_range (struct image *img, const char *op, uint64_t off, uint64_t len,
            bool holes, unsigned flags)
{
  uint64_t osize = img->info.object_size, pos;
  int r;

  r = image_check_writable (img, op);
  if (r == 0)
    r = check_range (img, op, len, off);
  if (r < 0)
    return r;
  for (pos = off; pos < off + len;) {
    uint64_t objno = pos >> img->order, ooff = pos & (osize - 1);
    uint64_t n = MIN (osize - ooff, off + len - pos);
    /* The last object of an image whose size is not a multiple of the
     * object size: a range to the end covers the whole object. */
    if (pos + n == image_size (img) && ooff == 0)
      n = osize;
    r = zero_in_object (img, objno, ooff, n, holes, flags);
    if (r < 0)
      return r;
    pos += MIN (n, off + len - pos);
  }
  return 0;
}

int
image_discard (struct image *img, uint64_t off, uint64_t len, unsigned flags)
{
  return zero_range (img, "discard", off, len, true, flags);
}

int
image_write_zeroes (struct image *img, uint64_t off, uint64_t len,
                    unsigned flags)
{
  return zero_range (img, "write_zeroes", off, len,
                     !(flags & IMAGE_NO_HOLE), flags);
}

