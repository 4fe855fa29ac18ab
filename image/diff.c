/* SPDX-License-Identifier: MIT
 *
 * diff.c - changed-block tracking: the ranges that changed between two
 * snapshots, or between a snapshot and the head.
 *
 * DESIGN
 * - A diff reads one short list per snapshot after FROM (the change log
 *   at that snapshot and its merged list), never a whole map: the union
 *   of their records, per object and 1/32 part, plus every object from
 *   the lowest "from object N up" entry, is what changed.  Objects past
 *   the end of one side and not the other differ.
 * - A list holding CHANGES_RESET (written when an image is opened after
 *   an unclean shutdown of the machine: openmark.c) makes every object
 *   count as changed; image_diff_flags says so (IMAGE_DIFF_CBT_RESET),
 *   and the first such diff of a process logs it (vbk diff shows it), so
 *   a caller never mistakes it for a diff that happens to cover all.
 */
#include "common/log.h"
#include "internal.h"

/* ---- Changed-block tracking ------------------------------------------- */

int
image_diff (struct store *st, const char *image, const char *from,
            const char *to, image_extent_cb cb, void *arg)
{
  return image_diff_flags (st, image, from, to, cb, arg, NULL);
}

int
image_diff_flags (struct store *st, const char *image, const char *from,
                  const char *to, image_extent_cb cb, void *arg,
                  unsigned *flags)
{
  struct image_info info;
  struct image_snap *v = NULL, sfrom, sto;
  struct change_set c = { .from = UINT64_MAX };
  uint64_t n, to_size, to_id, osize, end, tail, sb, pend_off = 0, pend_end = 0;
  bool have = false;
  char id[32], hdr[64], loid[64], moid[96];
  size_t ns = 0, k;
  int r;

  if (flags)
    *flags = 0;
  r = image_lookup_id (st, image, id, sizeof id);
  if (r < 0)
    return r;
  r = image_read_header (st, id, &info);
  if (r < 0)
    return r;
  image_header_oid (id, hdr, sizeof hdr);
  r = image_find_snap (st, hdr, image, from, &sfrom);
  if (r < 0)
    return r;
  if (to) {
    r = image_find_snap (st, hdr, image, to, &sto);
    if (r < 0)
      return r;
    if (sto.id < sfrom.id) {
      vbk_set_error ("image '%s': snapshot '%s' is older than '%s'", image,
                     to, from);
      return -EINVAL;
    }
    to_size = sto.size;
    to_id = sto.id;
  }
  else {
    to_size = info.size;
    to_id = STORE_SNAP_HEAD;
  }
  osize = info.object_size;
  n = MAX (image_objects_for (to_size, osize),
           image_objects_for (sfrom.size, osize));
  /* Objects past the end of one side and not the other differ. */
  c.from = image_objects_for (MIN (to_size, sfrom.size), osize);
  r = image_snaps_of_header (st, hdr, &v, &ns);
  if (r < 0)
    goto out;

  /* Changed in an interval after FROM, up to TO: in the log of each
   * later snapshot (the live log when TO is the head), and merged into
   * it. */
  image_changes_oid (id, loid, sizeof loid);
  for (k = 0; r == 0 && k <= ns; k++) {
    uint64_t sid = k < ns ? v[k].id : STORE_SNAP_HEAD;
    if (k < ns ? sid <= sfrom.id || sid > to_id : to_id != STORE_SNAP_HEAD)
      continue;
    image_merged_oid (id, k < ns ? sid : 0, moid, sizeof moid);
    r = image_set_read (st, loid, sid, &c);
    if (r == 0)
      r = image_set_read (st, moid, STORE_SNAP_HEAD, &c);
  }
  if (r == 0 && to_id == STORE_SNAP_HEAD) {
    uint64_t min;
    r = image_shrunk_to (st, hdr, &min);
    if (r == 0 && min != UINT64_MAX)
      c.from = MIN (c.from, min / osize);
  }
  if (r < 0)
    goto out;
  image_set_sort (&c, false);
  if (flags)
    *flags = c.reset ? IMAGE_DIFF_CBT_RESET : 0;
  /* Once per process: the NBD server asks for diffs on every
   * BLOCK_STATUS of a dirty bitmap. */
  static bool warned;
  if (c.reset && !__atomic_exchange_n (&warned, true, __ATOMIC_RELAXED))
    log_warn ("image '%s': diff %s..%s: changed-block tracking was reset "
              "by an unclean shutdown of the machine: every object counts "
              "as changed", image, from, to ? to : "(live)");

  /* Report the changed parts of objects, then [tail, n): everything
   * from c.from up; adjacent ones merged, clipped to the larger size. */
  end = MAX (to_size, sfrom.size);
  tail = MIN (c.from, n);
  sb = osize / SUBBLOCKS;
#define ADD(s, e)                                                       \
  do {                                                                  \
    uint64_t s_ = (s), e_ = MIN ((e), end);                             \
    if (s_ >= e_)                                                       \
      break;                                                            \
    if (have && s_ == pend_end) {                                       \
      pend_end = e_;                                                    \
      break;                                                            \
    }                                                                   \
    if (have && (r = cb (arg, pend_off, pend_end - pend_off, 1)) != 0)  \
      goto out;                                                         \
    pend_off = s_;                                                      \
    pend_end = e_;                                                      \
    have = true;                                                        \
  } while (0)
  for (k = 0; k < c.n && c.v[k].objno < tail; k++) {
    uint64_t base = c.v[k].objno * osize;
    uint32_t p = c.v[k].parts;
    unsigned j = 0, b;
    while (j < SUBBLOCKS) {
      if (!(p >> j & 1)) {
        j++;
        continue;
      }
      for (b = j; b < SUBBLOCKS && (p >> b & 1); b++)
        ;
      ADD (base + j * sb, base + b * sb);
      j = b;
    }
  }
  if (tail < n)
    ADD (tail * osize, n * osize);
#undef ADD
  if (have && (r = cb (arg, pend_off, pend_end - pend_off, 1)) != 0)
    goto out;
  r = 0;
out:
  free (v);
  free (c.v);
  return r;
}

int
image_extent_list_add (void *list, uint64_t off, uint64_t len, int allocated)
{
  struct image_extent_list *e = list;

  if (!allocated || len == 0)
    return 0;
  /* Merged even when the producer merges already, so that a list never
   * depends on how a callback was split. */
  if (e->n && e->v[e->n - 1].off + e->v[e->n - 1].len == off) {
    e->v[e->n - 1].len += len;
    return 0;
  }
  if (e->n == e->cap) {
    size_t cap = e->cap ? 2 * e->cap : 64;
    void *nv = realloc (e->v, cap * sizeof *e->v);

    if (nv == NULL)
      return vbk_errno (-ENOMEM, "extent list");
    e->v = nv;
    e->cap = cap;
  }
  e->v[e->n].off = off;
  e->v[e->n].len = len;
  e->n++;
  return 0;
}
