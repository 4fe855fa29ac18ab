/* SPDX-License-Identifier: MIT
 *
 * changeset.h - the words of change logs and merged change lists, and
 * sets of changed objects: encode, decode, sort and merge.  Pure: no
 * store calls, no locks (the store side is in changelog.c).
 *
 * DESIGN
 * - A change log or merged list is a sequence of little-endian 64-bit
 *   words: OBJNO (the whole object changed), CHANGES_FROM | OBJNO (every
 *   object from OBJNO up changed: a shrink), CHANGES_RESET (the change
 *   tracking of the interval was reset: it always follows CHANGES_FROM |
 *   0, so a reader that does not know it still reports every object),
 *   or CHANGES_DETAIL | OBJNO
 *   followed by a word whose low SUBBLOCKS bits say which parts of the
 *   object changed (a detail record cut short at the list's end means the
 *   whole object).  In one list the last record of an object wins; across
 *   lists (the intervals a diff spans) the parts are united, and every
 *   object from the lowest "from" up changed.
 */
#ifndef VBK_IMAGE_CHANGESET_H
#define VBK_IMAGE_CHANGESET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CHANGES_FROM (UINT64_C (1) << 63)
#define CHANGES_DETAIL (UINT64_C (1) << 62)
#define CHANGES_RESET (CHANGES_FROM | CHANGES_DETAIL)
#define SUBBLOCKS 32
#define ALL_PARTS UINT32_MAX

/* A growable vector of 64-bit words. */
struct changes {
  uint64_t *v;
  size_t n, cap;
};

/* A set of changed objects, each with the parts that changed, and FROM:
 * every object from it up (UINT64_MAX: none).  RESET: a list added held
 * CHANGES_RESET (FROM is then 0). */
struct change {
  uint64_t objno;
  uint32_t parts;
  uint32_t seq;
};

struct change_set {
  struct change *v;
  size_t n, cap;
  uint64_t from;
  int err;
  bool reset;
};

int image_changes_push (struct changes *c, uint64_t e);
void image_changes_free (struct changes *c);
int image_changes_reserve (struct changes *c, size_t extra);

/* Calls FN (ARG, OBJNO, PARTS) for each object record of the words
 * V[0..N), in order: PARTS is ALL_PARTS for a whole-object record. */
void image_changes_each (const uint64_t *v, size_t n,
                         void (*fn) (void *arg, uint64_t objno,
                                     uint32_t parts),
                         void *arg);

/* Appends a record to the change set ARG (an image_changes_each
 * callback); an allocation failure sets its err. */
void image_set_add (void *arg, uint64_t objno, uint32_t parts);

/* Sorts S by object; a repeated object keeps the last record (LAST_WINS,
 * within one list) or the union of its parts (across lists).  Drops
 * objects at or past S->from. */
void image_set_sort (struct change_set *s, bool last_wins);

/* Adds the list of words V[0..N) (host order) to S, the union: within
 * the list the last record of an object wins; S->from becomes the lowest
 * of its own and the list's "from" entries.  S is unsorted after; 0 or
 * -ENOMEM. */
int image_set_decode (const uint64_t *v, size_t n, struct change_set *s);

/* The words (little-endian) of the sorted S, in BUF, which has room for
 * 2 * S->n + 2 of them; returns how many. */
size_t image_set_encode (const struct change_set *s, uint64_t *buf);

/* The parts of an object of 1 << ORDER bytes (ORDER >= 5) that
 * [OFF, OFF+LEN) (within it, LEN > 0) touches. */
uint32_t image_parts_of (unsigned order, uint64_t off, uint64_t len);

#endif /* VBK_IMAGE_CHANGESET_H */
