/* SPDX-License-Identifier: MIT
 *
 * test-error.c - the per-thread error message: context added on the way
 * up, and cleanup that keeps the first error.
 */
/* VBK_TEST_LINKS: vbkcommon */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "common/error.h"

static int
failing_step (void)
{
  return vbk_errno (-EIO, "store: read: vbk_chunk.ab12");
}

static int
cleanup_that_fails_too (void)
{
  vbk_clear_error ();
  return vbk_errno (-ENOENT, "store: remove: vbk_tmp.1");
}

static void
test_prepend (void **state)
{
  int r = failing_step ();

  assert_int_equal (vbk_error_prepend (r, "backup %d: ", 7), -EIO);
  assert_string_equal (vbk_error (),
                       "backup 7: store: read: vbk_chunk.ab12: "
                       "Input/output error");
  assert_int_equal (vbk_error_prepend (r, "vbk: "), -EIO);
  assert_true (strncmp (vbk_error (), "vbk: backup 7: ", 15) == 0);
}

static void
test_cleanup_overwrites_without_keep (void **state)
{
  int r = failing_step ();

  cleanup_that_fails_too ();
  assert_int_equal (r, -EIO);
  /* This is what keep() exists for: the first error is gone. */
  assert_non_null (strstr (vbk_error (), "vbk_tmp.1"));
}

static void
test_keep (void **state)
{
  int r = failing_step ();

  vbk_error_keep ();
  assert_int_equal (cleanup_that_fails_too (), -ENOENT);
  vbk_error_keep ();            /* nests */
  vbk_set_error ("something else");
  vbk_error_unkeep ();
  vbk_error_prepend (-1, "lost: ");
  vbk_error_unkeep ();
  assert_int_equal (r, -EIO);
  assert_string_equal (vbk_error (),
                       "store: read: vbk_chunk.ab12: Input/output error");
  /* Unkept again: messages are replaced as usual. */
  vbk_set_error ("next");
  assert_string_equal (vbk_error (), "next");
}

static void
undo_in_scope (void)
{
  VBK_KEEP_ERROR_FOR_SCOPE;
  cleanup_that_fails_too ();
}

static void
test_keep_for_scope (void **state)
{
  failing_step ();
  undo_in_scope ();
  assert_non_null (strstr (vbk_error (), "vbk_chunk.ab12"));
  vbk_set_error ("after the scope");
  assert_string_equal (vbk_error (), "after the scope");
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_prepend),
    cmocka_unit_test (test_cleanup_overwrites_without_keep),
    cmocka_unit_test (test_keep),
    cmocka_unit_test (test_keep_for_scope),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
