/* SPDX-License-Identifier: MIT
 *
 * test-changeset.c - the change-list words and change sets of image/
 * (changeset.h) against a naive model: a plain bitmap of the 32 parts of
 * each object and the lowest "from".  Thousands of random rounds with a
 * fixed seed (VBK_TEST_SEED overrides it); a failure prints the seed and
 * the round.
 */
/* VBK_TEST_LINKS: vbkimage-internals */
#include <endian.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "image/changeset.h"

#define ROUNDS 5000
#define POOL 48                 /* object numbers a round draws from */
#define MAX_LISTS 4
#define MAX_RECORDS 40

static uint64_t seed, rng;

static uint64_t
rnd (void)
{
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return rng * UINT64_C (2685821657736338717);
}

static uint64_t
rnd_below (uint64_t n)
{
  return rnd () % n;
}

#define CHECK(cond, round, ...)                                         \
  do {                                                                  \
    if (!(cond)) {                                                      \
      print_error ("seed %" PRIu64 " round %d: ", seed, (round));       \
      print_error (__VA_ARGS__);                                        \
      print_error ("\n");                                               \
      fail_msg ("%s", #cond);                                           \
    }                                                                   \
  } while (0)

static void
seed_rng (void)
{
  const char *e = getenv ("VBK_TEST_SEED");

  seed = e ? strtoull (e, NULL, 0) : UINT64_C (20261201);
  rng = seed ? seed : 1;
}

/* The object numbers of a round, strictly ascending: small ones, or near
 * the largest a word can hold (below CHANGES_DETAIL). */
static void
make_pool (uint64_t *pool)
{
  uint64_t o = rnd_below (4) == 0 ? CHANGES_DETAIL - 4 * POOL : 0;
  size_t i;

  for (i = 0; i < POOL; i++) {
    pool[i] = o;
    o += 1 + rnd_below (3);
  }
}

static uint32_t
rnd_parts (void)
{
  switch (rnd_below (4)) {
  case 0:
    return ALL_PARTS;
  case 1:
    return (uint32_t) 1 << rnd_below (32);
  case 2:
    return rnd_below (8) == 0 ? 0 : (uint32_t) rnd ();
  default:
    return (uint32_t) rnd ();
  }
}

/* A random list in WORDS (host order), applied to the model: LAST[i] the
 * parts of the last record of pool object i (HAS[i]: there is one), FROM
 * the lowest "from" entry. */
static size_t
make_list (const uint64_t *pool, uint64_t *words, uint32_t *last,
           int *has, uint64_t *from)
{
  size_t n = 0, nrec = rnd_below (MAX_RECORDS + 1), k;

  for (k = 0; k < nrec; k++) {
    size_t i = rnd_below (POOL);
    switch (rnd_below (8)) {
    case 0:
      words[n++] = CHANGES_FROM | pool[i];
      if (pool[i] < *from)
        *from = pool[i];
      break;
    case 1: case 2: case 3:
      words[n++] = pool[i];
      last[i] = ALL_PARTS;
      has[i] = 1;
      break;
    default:
      last[i] = rnd_parts ();
      has[i] = 1;
      words[n++] = CHANGES_DETAIL | pool[i];
      words[n++] = last[i];
      break;
    }
  }
  if (rnd_below (10) == 0) {
    /* A detail record cut short at the end: the whole object. */
    size_t i = rnd_below (POOL);
    words[n++] = CHANGES_DETAIL | pool[i];
    last[i] = ALL_PARTS;
    has[i] = 1;
  }
  return n;
}

/* S (sorted across lists) is the model: PARTS of each pool object, FROM. */
static void
check_set (int round, const struct change_set *s, const uint64_t *pool,
           const uint32_t *parts, uint64_t from)
{
  size_t i, k = 0;

  CHECK (s->err == 0, round, "err %d", s->err);
  CHECK (s->from == from, round, "from %" PRIu64 ", model %" PRIu64,
         s->from, from);
  for (k = 0; k < s->n; k++) {
    CHECK (s->v[k].objno < s->from, round, "object %" PRIu64
           " at or past from", s->v[k].objno);
    CHECK (k == 0 || s->v[k - 1].objno < s->v[k].objno, round,
           "not sorted or repeated at %zu", k);
  }
  k = 0;
  for (i = 0; i < POOL; i++) {
    uint32_t got = 0;
    if (pool[i] >= from)
      break;
    CHECK (k >= s->n || s->v[k].objno >= pool[i], round, "object %" PRIu64
           " in the set, not the model", s->v[k].objno);
    if (k < s->n && s->v[k].objno == pool[i])
      got = s->v[k++].parts;
    CHECK (got == parts[i], round, "object %" PRIu64 ": parts %08" PRIx32
           ", model %08" PRIx32, pool[i], got, parts[i]);
  }
  CHECK (k == s->n, round, "%zu objects in the set past the model's",
         s->n - k);
}

static void
test_lists_against_model (void **state)
{
  uint64_t pool[POOL], words[2 * MAX_RECORDS + 2], from;
  uint32_t parts[POOL], last[POOL];
  int has[POOL], round;

  seed_rng ();
  for (round = 0; round < ROUNDS; round++) {
    struct change_set s = { .from = UINT64_MAX };
    struct change_set t = { .from = UINT64_MAX };
    size_t nl = 1 + rnd_below (MAX_LISTS), l, i, n;
    uint64_t *enc;

    make_pool (pool);
    from = UINT64_MAX;
    memset (parts, 0, sizeof parts);
    for (l = 0; l < nl; l++) {
      memset (has, 0, sizeof has);
      n = make_list (pool, words, last, has, &from);
      CHECK (image_set_decode (words, n, &s) == 0, round, "decode");
      /* Within a list the last record wins; across lists, the union. */
      for (i = 0; i < POOL; i++)
        if (has[i])
          parts[i] |= last[i];
    }
    image_set_sort (&s, false);
    check_set (round, &s, pool, parts, from);

    /* Encoded and decoded again, the set is the same. */
    enc = malloc ((2 * s.n + 2) * sizeof *enc);
    assert_non_null (enc);
    n = image_set_encode (&s, enc);
    for (i = 0; i < n; i++)
      enc[i] = le64toh (enc[i]);
    CHECK (image_set_decode (enc, n, &t) == 0, round, "decode again");
    image_set_sort (&t, false);
    check_set (round, &t, pool, parts, from);
    free (enc);
    free (s.v);
    free (t.v);
  }
}

/* A set grown one record at a time, sorted with LAST_WINS, keeps each
 * object's last record. */
static void
test_last_wins (void **state)
{
  int round;

  seed_rng ();
  for (round = 0; round < ROUNDS; round++) {
    struct change_set s = { .from = UINT64_MAX };
    uint32_t last[POOL];
    int has[POOL] = { 0 };
    size_t n = rnd_below (100), k, i;

    for (k = 0; k < n; k++) {
      i = rnd_below (POOL);
      last[i] = rnd_parts ();
      has[i] = 1;
      image_set_add (&s, i, last[i]);
    }
    s.from = rnd_below (2) ? UINT64_MAX : rnd_below (POOL + 1);
    image_set_sort (&s, true);
    k = 0;
    for (i = 0; i < POOL && i < s.from; i++) {
      if (!has[i])
        continue;
      CHECK (k < s.n && s.v[k].objno == i, round, "object %zu missing", i);
      CHECK (s.v[k].parts == last[i], round, "object %zu: parts %08" PRIx32
             ", last %08" PRIx32, i, s.v[k].parts, last[i]);
      k++;
    }
    CHECK (k == s.n, round, "%zu objects too many", s.n - k);
    free (s.v);
  }
}

/* image_parts_of against the parts a byte range overlaps. */
static void
test_parts_of (void **state)
{
  int round;

  seed_rng ();
  for (round = 0; round < 20 * ROUNDS; round++) {
    unsigned order = 5 + rnd_below (22), k;
    uint64_t osize = UINT64_C (1) << order, sb = osize / SUBBLOCKS;
    uint64_t off = rnd_below (osize), len, end;
    uint32_t want = 0, got;

    switch (rnd_below (4)) {
    case 0:
      len = 1;
      break;
    case 1:
      len = osize - off;
      break;
    case 2:
      off = rnd_below (SUBBLOCKS) * sb;
      len = sb * (1 + rnd_below ((osize - off) / sb));
      break;
    default:
      len = 1 + rnd_below (osize - off);
    }
    end = off + len;
    for (k = 0; k < SUBBLOCKS; k++)
      if (k * sb < end && off < (k + 1) * sb)
        want |= (uint32_t) 1 << k;
    got = image_parts_of (order, off, len);
    CHECK (got == want, round, "order %u [%" PRIu64 ", +%" PRIu64 "): %08"
           PRIx32 ", model %08" PRIx32, order, off, len, got, want);
  }
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_lists_against_model),
    cmocka_unit_test (test_last_wins),
    cmocka_unit_test (test_parts_of),
  };

  return cmocka_run_group_tests (tests, NULL, NULL);
}
