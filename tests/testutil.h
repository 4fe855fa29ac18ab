/* SPDX-License-Identifier: MIT
 *
 * testutil.h - helpers for the unit tests: a fresh, empty store of the
 * backend the test runs against (VBK_TEST_STORE_KIND=local|rados).
 */
#ifndef VBK_TESTUTIL_H
#define VBK_TESTUTIL_H

#include <stddef.h>

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

#endif
