/* SPDX-License-Identifier: MIT
 *
 * testutil.h - helpers for the unit tests: a fresh, empty store of the
 * backend the test runs against (VBK_TEST_STORE_KIND=local|rados), and
 * the assertions on -errno results the store tests share (they expand to
 * cmocka's fail_msg: include <cmocka.h> first).
 */
#ifndef VBK_TESTUTIL_H
#define VBK_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "store/store.h"

/* Writes a URI for a new empty store into BUF:
 *   local:  local:$TMPDIR/vbk-test-XXXXXX (a new directory)
 *   rados:  rados:$VBK_TEST_POOL/t-<pid>-<n>-<random> (a new namespace),
 *           with conf=$CEPH_CONF
 * Aborts the test program if the environment is unusable. */
void test_store_uri (char *buf, size_t len);

/* test_store_uri + store_open; aborts on failure. */
struct store *test_store_open (void);

/* "local" or "rados". */
const char *test_store_kind (void);

/* Removes what test_store_uri created for a local store (rm -rf);
 * nothing for rados (namespaces are thrown away with the cluster). */
void test_store_cleanup (const char *uri);

/* A cmocka fixture: setup makes *STATE a struct test_fixture holding a
 * fresh, empty store (test_store_uri + store_open; a failure fails the
 * test); teardown closes the store and removes it. */
struct test_fixture {
  char uri[4096];
  struct store *st;
};
int test_fixture_setup (void **state);
int test_fixture_teardown (void **state);

/* The extents an image_diff callback reported, in order. */
#define TEST_EXTENTS_MAX 256
struct test_extents {
  uint64_t off[TEST_EXTENTS_MAX], len[TEST_EXTENTS_MAX];
  size_t n;
};
/* An image_diff callback (ARG: a struct test_extents) that keeps every
 * extent; returns -E2BIG when it has no room (so the diff fails). */
int test_extents_collect (void *arg, uint64_t off, uint64_t len, int alloc);
/* Whether one collected extent holds all of [OFF, OFF + LEN). */
int test_extents_cover (const struct test_extents *e, uint64_t off,
                        uint64_t len);

/* "-ENOENT" for -ENOENT, "ok" for anything else (a per-thread ring of
 * four buffers, so one message can show several). */
const char *test_errname (long long r);

/* CALL must fail with ERR and leave a message in vbk_error(). */
#define expect_err(err, call)                                           \
  do {                                                                  \
    long long r_;                                                       \
    vbk_clear_error ();                                                 \
    r_ = (long long) (call);                                            \
    if (r_ != (long long) (err))                                        \
      fail_msg ("%s: got %lld (%s), expected %s [%s]", #call, r_,       \
                test_errname (r_), test_errname (err), vbk_error ());             \
    if (vbk_error ()[0] == '\0')                                        \
      fail_msg ("%s: failed with %s but left no vbk_error() message",   \
                #call, test_errname (err));                                  \
  } while (0)

/* CALL must return 0. */
#define expect_ok(call)                                                 \
  do {                                                                  \
    long long r_ = (long long) (call);                                  \
    if (r_ != 0)                                                        \
      fail_msg ("%s: got %lld (%s), expected 0 [%s]", #call, r_,        \
                test_errname (r_), vbk_error ());                            \
  } while (0)

#endif
