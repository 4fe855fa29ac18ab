/* SPDX-License-Identifier: MIT
 *
 * test-blockd-limits.c - vbk-blockd's limits as settings (defaults,
 * parsing, errors) and the rate limit of repeated log lines.
 *
 * DESIGN: pure logic on the real code (blockd/config.c, server.c); the
 * rate limiter's window is moved back by hand instead of sleeping.
 */
/* VBK_TEST_LINKS: vbkblockd-internals */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "blockd/internal.h"
#include "common/error.h"

static void
test_defaults (void **state)
{
  struct nbd_srv_config cfg;

  (void) state;
  nbd_srv_config_init (&cfg);
  assert_int_equal (cfg.max_conns, 1024);
  assert_int_equal (cfg.max_conns_per_client, 128);
  assert_int_equal (cfg.handshake_timeout_ms, 10000);
  assert_int_equal (cfg.send_timeout_ms, 30000);
  assert_int_equal (cfg.idle_timeout_ms, 5000);
  assert_true (cfg.conn_memory == 64u << 20);
  assert_true (cfg.max_memory == 1024u << 20);
  assert_null (cfg.socket_group);
  /* The connection budget holds at least one request of the largest
   * size we accept, so a client is never stuck on one request. */
  assert_true (cfg.conn_memory >= NBD_SRV_MAX_PAYLOAD);
  nbd_srv_config_free (&cfg);
}

static void
test_set (void **state)
{
  struct nbd_srv_config cfg;

  (void) state;
  nbd_srv_config_init (&cfg);
  assert_int_equal (nbd_srv_config_set (&cfg, "max_connections", "10"), 0);
  assert_int_equal (cfg.max_conns, 10);
  assert_int_equal (nbd_srv_config_set (&cfg, "max_connections_per_client",
                                        "2"), 0);
  assert_int_equal (cfg.max_conns_per_client, 2);
  assert_int_equal (nbd_srv_config_set (&cfg, "handshake_timeout", "1.5"),
                    0);
  assert_int_equal (cfg.handshake_timeout_ms, 1500);
  assert_int_equal (nbd_srv_config_set (&cfg, "send_timeout", "0.25"), 0);
  assert_int_equal (cfg.send_timeout_ms, 250);
  assert_int_equal (nbd_srv_config_set (&cfg, "idle_timeout", "60"), 0);
  assert_int_equal (cfg.idle_timeout_ms, 60000);
  assert_int_equal (nbd_srv_config_set (&cfg, "conn_memory", "16M"), 0);
  assert_true (cfg.conn_memory == 16u << 20);
  assert_int_equal (nbd_srv_config_set (&cfg, "max_memory", "2G"), 0);
  assert_true (cfg.max_memory == UINT64_C (2) << 30);
  assert_int_equal (nbd_srv_config_set (&cfg, "socket_group", "kvm"), 0);
  assert_string_equal (cfg.socket_group, "kvm");
  nbd_srv_config_free (&cfg);
}

static void
test_errors (void **state)
{
  static const char *const bad[][2] = {
    { "max_connections", "0" },
    { "max_connections", "many" },
    { "max_connections_per_client", "-1" },
    { "handshake_timeout", "0" },
    { "handshake_timeout", "10s" },
    { "send_timeout", "" },
    { "idle_timeout", "-5" },
    { "conn_memory", "1K" },          /* below 1 MiB */
    { "conn_memory", "lots" },
    { "max_memory", "2P" },           /* above 1 TiB */
  };
  struct nbd_srv_config cfg;
  size_t i;

  (void) state;
  nbd_srv_config_init (&cfg);
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
    {
      vbk_clear_error ();
      assert_int_equal (nbd_srv_config_set (&cfg, bad[i][0], bad[i][1]),
                        -EINVAL);
      /* The message names the setting. */
      assert_non_null (strstr (vbk_error (), bad[i][0]));
    }
  /* Nothing changed. */
  assert_int_equal (cfg.max_conns, 1024);
  assert_true (cfg.conn_memory == 64u << 20);
  nbd_srv_config_free (&cfg);
}

static void
test_ratelimit (void **state)
{
  struct nbd_srv_ratelimit rl = NBD_SRV_RATELIMIT_INIT;
  int i;

  (void) state;
  /* A burst: the first few pass (none dropped before them), the rest
   * are dropped. */
  for (i = 0; i < 5; i++)
    assert_int_equal (nbd_srv_ratelimit (&rl), 0);
  for (i = 0; i < 100; i++)
    assert_int_equal (nbd_srv_ratelimit (&rl), -1);
  /* A second later the next one passes and reports the dropped ones. */
  rl.window_ns -= UINT64_C (1000000001);
  assert_int_equal (nbd_srv_ratelimit (&rl), 100);
  assert_int_equal (nbd_srv_ratelimit (&rl), 0);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_defaults),
    cmocka_unit_test (test_set),
    cmocka_unit_test (test_errors),
    cmocka_unit_test (test_ratelimit),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
