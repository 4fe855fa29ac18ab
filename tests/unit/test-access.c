/* SPDX-License-Identifier: MIT
 *
 * test-access.c - per-export access lists (blockd/access.c) and the
 * config keys around them (blockd/config.c): allow and allow_read in
 * [export IMAGE] and [export IMAGE@SNAP] sections, default_allow, the
 * rules for snapshots and backups (backup:IMAGE/ID), local clients and
 * clients without an identity, the repository key,
 * the TLS settings, and the refusal of plain TCP on a network address.
 * Config files are real files read by the real parser (inih), and a
 * small generated sweep feeds it malformed lines.
 */
/* VBK_TEST_LINKS: vbkblockd-internals */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "blockd/access.h"
#include "blockd/internal.h"
#include "common/error.h"

static const struct nbd_srv_peer local = { .local = true };
static const struct nbd_srv_peer anon = { .identity = NULL };
static const struct nbd_srv_peer alice = { .identity = "alice" };
static const struct nbd_srv_peer bob = { .identity = "bob" };
static const struct nbd_srv_peer carol = { .identity = "carol" };
static const struct nbd_srv_peer dave = { .identity = "dave" };

#define NONE NBD_SRV_ACCESS_NONE
#define READ NBD_SRV_ACCESS_READ
#define WRITE NBD_SRV_ACCESS_WRITE

static void
test_acl_rules (void **state)
{
  struct nbd_srv_acl *acl = NULL;

  /* No rules at all: TLS required denies, otherwise all may write. */
  assert_true (nbd_srv_acl_empty (acl));
  assert_int_equal (nbd_srv_access_check (NULL, true, &alice, "vm1"), NONE);
  assert_int_equal (nbd_srv_access_check (NULL, false, &anon, "vm1"), WRITE);
  assert_int_equal (nbd_srv_access_check (NULL, true, &local, "vm1"), WRITE);

  assert_int_equal (nbd_srv_acl_add (&acl, "vm1", "allow", " alice ,bob"), 0);
  assert_int_equal (nbd_srv_acl_add (&acl, "vm1", "allow_read", "carol"), 0);
  assert_false (nbd_srv_acl_empty (acl));
  for (int req = 0; req < 2; req++)
    {
      assert_int_equal (nbd_srv_access_check (acl, req, &alice, "vm1"), WRITE);
      assert_int_equal (nbd_srv_access_check (acl, req, &bob, "vm1"), WRITE);
      assert_int_equal (nbd_srv_access_check (acl, req, &carol, "vm1"), READ);
      assert_int_equal (nbd_srv_access_check (acl, req, &dave, "vm1"), NONE);
      /* A client without an identity matches no list. */
      assert_int_equal (nbd_srv_access_check (acl, req, &anon, "vm1"), NONE);
      /* The Unix socket is the local path. */
      assert_int_equal (nbd_srv_access_check (acl, req, &local, "vm1"), WRITE);
      /* Snapshots follow the image, read-only at most. */
      assert_int_equal (nbd_srv_access_check (acl, req, &alice, "vm1@s1"),
                        READ);
      assert_int_equal (nbd_srv_access_check (acl, req, &carol, "vm1@s1"),
                        READ);
      assert_int_equal (nbd_srv_access_check (acl, req, &dave, "vm1@s1"),
                        NONE);
      assert_int_equal (nbd_srv_access_check (acl, req, &local, "vm1@s1"),
                        READ);
    }
  /* Names are whole: no prefix match. */
  assert_int_equal (nbd_srv_access_check (acl, true, &(struct nbd_srv_peer) {
                                            .identity = "alic" }, "vm1"),
                    NONE);
  /* An image without a rule: the default (none here). */
  assert_int_equal (nbd_srv_access_check (acl, true, &alice, "vm2"), NONE);
  assert_int_equal (nbd_srv_access_check (acl, false, &dave, "vm2"), WRITE);

  /* A snapshot with its own section ignores the image's. */
  assert_int_equal (nbd_srv_acl_add (&acl, "vm1@s1", "allow_read", "dave"), 0);
  assert_int_equal (nbd_srv_access_check (acl, true, &dave, "vm1@s1"), READ);
  assert_int_equal (nbd_srv_access_check (acl, true, &alice, "vm1@s1"), NONE);
  assert_int_equal (nbd_srv_access_check (acl, true, &alice, "vm1@s2"), READ);

  /* Defaults, and "*" for any identity. */
  assert_int_equal (nbd_srv_acl_add (&acl, NULL, "allow_read", "*"), 0);
  assert_int_equal (nbd_srv_acl_add (&acl, NULL, "allow", "dave"), 0);
  assert_int_equal (nbd_srv_access_check (acl, true, &alice, "vm2"), READ);
  assert_int_equal (nbd_srv_access_check (acl, true, &dave, "vm2"), WRITE);
  assert_int_equal (nbd_srv_access_check (acl, true, &anon, "vm2"), NONE);
  /* vm1's own rule still wins over the default. */
  assert_int_equal (nbd_srv_access_check (acl, true, &dave, "vm1"), NONE);
  /* Lines add up. */
  assert_int_equal (nbd_srv_acl_add (&acl, "vm1", "allow", "dave"), 0);
  assert_int_equal (nbd_srv_access_check (acl, true, &dave, "vm1"), WRITE);
  assert_int_equal (nbd_srv_access_check (acl, true, &alice, "vm1"), WRITE);

  /* Errors change nothing. */
  assert_int_equal (nbd_srv_acl_add (&acl, "vm1", "allow", "eve, "), -EINVAL);
  assert_int_equal (nbd_srv_acl_add (&acl, "vm1", "allow", "e ve"), -EINVAL);
  assert_int_equal (nbd_srv_acl_add (&acl, "vm1", "allow", "\"eve\""),
                    -EINVAL);
  assert_int_equal (nbd_srv_acl_add (&acl, "vm1", "allow", ""), -EINVAL);
  assert_int_equal (nbd_srv_acl_add (&acl, "vm1", "deny", "eve"), -EINVAL);
  assert_int_equal (nbd_srv_acl_add (&acl, "a/b", "allow", "eve"), -EINVAL);
  assert_int_equal (nbd_srv_acl_add (&acl, "vm1@", "allow", "eve"), -EINVAL);
  assert_int_equal (nbd_srv_access_check (acl, true, &(struct nbd_srv_peer) {
                                            .identity = "eve" }, "vm1"),
                    NONE);
  {
    /* A copy answers the same and owns its memory. */
    struct nbd_srv_acl *copy;
    static const struct nbd_srv_peer *const peers[] = {
      &local, &anon, &alice, &bob, &carol, &dave,
    };
    static const char *const names[] = { "vm1", "vm1@s1", "vm1@s2", "vm2" };
    assert_int_equal (nbd_srv_acl_copy (acl, &copy), 0);
    for (size_t i = 0; i < 6; i++)
      for (size_t j = 0; j < 4; j++)
        for (int req = 0; req < 2; req++)
          assert_int_equal (nbd_srv_access_check (copy, req, peers[i],
                                                  names[j]),
                            nbd_srv_access_check (acl, req, peers[i],
                                                  names[j]));
    nbd_srv_acl_free (copy);
    assert_int_equal (nbd_srv_acl_copy (NULL, &copy), 0);
    assert_null (copy);
  }
  assert_string_equal (nbd_srv_access_name (NONE), "none");
  assert_string_equal (nbd_srv_access_name (READ), "read");
  assert_string_equal (nbd_srv_access_name (WRITE), "write");
  nbd_srv_acl_free (acl);
  nbd_srv_acl_free (NULL);
}

static char tmpdir[64];

static const char *
conf_file (const char *text)
{
  static char path[128];
  FILE *f;

  snprintf (path, sizeof path, "%s/blockd.conf", tmpdir);
  f = fopen (path, "w");
  assert_non_null (f);
  fputs (text, f);
  fclose (f);
  return path;
}

static void
test_config_file (void **state)
{
  struct nbd_srv_config cfg;
  const char *warning;

  nbd_srv_config_init (&cfg);
  assert_int_equal (nbd_srv_config_load (&cfg, conf_file (
    "[blockd]\n"
    "listen = 127.0.0.1:10809\n"
    "tls = require\n"
    "tls_certificates = /etc/vbk/tls\n"
    "tls_psk = /etc/vbk/keys.psk\n"
    "tls_verify_peer = yes\n"
    "tls_handshake_timeout = 2.5\n"
    "metrics = 127.0.0.1:9100\n"
    "default_allow_read = ops\n"
    "[export vm1]\n"
    "exclusive = true\n"
    "allow = alice, bob\n"
    "allow_read = carol\n"
    "[export vm1@gold]\n"
    "allow_read = dave\n"
    "[other]\n"
    "ignored = yes\n")), 0);
  assert_int_equal (cfg.tls, NBD_SRV_TLS_REQUIRE);
  assert_string_equal (cfg.tls_certificates, "/etc/vbk/tls");
  assert_string_equal (cfg.tls_psk, "/etc/vbk/keys.psk");
  assert_true (cfg.tls_verify_peer);
  assert_int_equal (cfg.tls_timeout_ms, 2500);
  assert_string_equal (cfg.metrics_addr, "127.0.0.1:9100");
  assert_int_equal (nbd_srv_config_export (&cfg, "vm1")->exclusive, 1);
  assert_int_equal (nbd_srv_config_check (&cfg, &warning), 0);
  assert_null (warning);
  assert_int_equal (nbd_srv_access_check (cfg.acl, true, &alice, "vm1"),
                    WRITE);
  assert_int_equal (nbd_srv_access_check (cfg.acl, true, &carol, "vm1"),
                    READ);
  assert_int_equal (nbd_srv_access_check (cfg.acl, true, &dave, "vm1@gold"),
                    READ);
  assert_int_equal (nbd_srv_access_check (cfg.acl, true, &alice, "vm1@gold"),
                    NONE);
  assert_int_equal (nbd_srv_access_check (cfg.acl, true,
                                          &(struct nbd_srv_peer) {
                                            .identity = "ops" }, "vm9"),
                    READ);
  nbd_srv_config_free (&cfg);

  /* Malformed lines: each is refused with its line number. */
  static const char *const bad[] = {
    "[blockd]\ntls = maybe\n",
    "[blockd]\ntls_verify_peer = perhaps\n",
    "[blockd]\ntls_handshake_timeout = 0\n",
    "[blockd]\ntls_handshake_timeout = x\n",
    "[blockd]\nmetrics = 9100\n",
    "[blockd]\ninsecure_tcp = 2\n",
    "[blockd]\ndefault_allow = a b\n",
    "[export vm1]\nallow = ,\n",
    "[export vm1]\nallow_write = alice\n",
    "[export vm1@s]\nexclusive = true\n",
    "[export vm/1]\nallow = alice\n",
    "[export vm1@]\nallow = alice\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    {
      nbd_srv_config_init (&cfg);
      assert_int_equal (nbd_srv_config_load (&cfg, conf_file (bad[i])),
                        -EINVAL);
      assert_non_null (strstr (vbk_error (), "line 2"));
      nbd_srv_config_free (&cfg);
    }
}

/* Random bytes and random mixes of valid pieces never crash the parser
 * and leave a config that frees cleanly (ASan checks the rest). */
static void
test_config_sweep (void **state)
{
  static const char *const pieces[] = {
    "[blockd]\n", "[export vm1]\n", "[export vm1@s]\n", "[export ]\n",
    "allow = alice\n", "allow_read = *\n", "allow = ,,\n", "tls = on\n",
    "default_allow = x\n", "exclusive = 1\n", "=\n", "allow\n",
    "allow = a,b,c,d,e,f\n", "[export a@b@c]\n", "metrics = :1\n",
  };
  unsigned seed = 12345;

  for (int round = 0; round < 400; round++)
    {
      struct nbd_srv_config cfg;
      char text[1024];
      size_t len = 0;
      int n = rand_r (&seed) % 8;

      for (int i = 0; i < n; i++)
        {
          const char *p = pieces[rand_r (&seed) % (sizeof pieces
                                                   / sizeof pieces[0])];
          if (len + strlen (p) >= sizeof text)
            break;
          memcpy (text + len, p, strlen (p));
          len += strlen (p);
        }
      if (round % 4 == 0)
        for (int i = 0; i < 40 && len < sizeof text - 1; i++)
          text[len++] = (char) (rand_r (&seed) % 255 + 1);
      text[len] = 0;
      nbd_srv_config_init (&cfg);
      (void) nbd_srv_config_load (&cfg, conf_file (text));
      nbd_srv_config_free (&cfg);
    }
}

static void
test_config_check (void **state)
{
  struct nbd_srv_config cfg;
  const char *warning;

  /* Loopback addresses. */
  assert_true (nbd_srv_addr_is_loopback ("127.0.0.1:10809"));
  assert_true (nbd_srv_addr_is_loopback ("127.1.2.3:1"));
  assert_true (nbd_srv_addr_is_loopback ("[::1]:10809"));
  assert_true (nbd_srv_addr_is_loopback ("localhost:10809"));
  assert_false (nbd_srv_addr_is_loopback ("0.0.0.0:10809"));
  assert_false (nbd_srv_addr_is_loopback (":10809"));
  assert_false (nbd_srv_addr_is_loopback ("[::]:10809"));
  assert_false (nbd_srv_addr_is_loopback ("10.1.2.3:10809"));
  assert_false (nbd_srv_addr_is_loopback ("128.0.0.1:10809"));
  assert_false (nbd_srv_addr_is_loopback ("example.com:10809"));

  /* Plain TCP on a network address: refused, unless insecure_tcp (then
   * a warning). */
  nbd_srv_config_init (&cfg);
  nbd_srv_config_set (&cfg, "listen", "0.0.0.0:10809");
  assert_int_equal (nbd_srv_config_check (&cfg, &warning), -EINVAL);
  assert_non_null (strstr (vbk_error (), "--insecure-tcp"));
  nbd_srv_config_set (&cfg, "insecure_tcp", "true");
  assert_int_equal (nbd_srv_config_check (&cfg, &warning), 0);
  assert_non_null (warning);
  assert_int_equal (cfg.tls, NBD_SRV_TLS_OFF);
  nbd_srv_config_free (&cfg);

  /* Loopback without TLS is fine and quiet. */
  nbd_srv_config_init (&cfg);
  nbd_srv_config_set (&cfg, "listen", "127.0.0.1:10809");
  assert_int_equal (nbd_srv_config_check (&cfg, &warning), 0);
  assert_null (warning);
  nbd_srv_config_free (&cfg);

  /* Credentials alone mean "require"; then any address is fine. */
  nbd_srv_config_init (&cfg);
  nbd_srv_config_set (&cfg, "listen", "0.0.0.0:10809");
  nbd_srv_config_set (&cfg, "tls_psk", "/x.psk");
  assert_int_equal (nbd_srv_config_check (&cfg, &warning), 0);
  assert_int_equal (cfg.tls, NBD_SRV_TLS_REQUIRE);
  assert_null (warning);
  nbd_srv_config_free (&cfg);

  /* tls=on serves plain clients too: refused on a network address. */
  nbd_srv_config_init (&cfg);
  nbd_srv_config_set (&cfg, "listen", "[::]:10809");
  nbd_srv_config_set (&cfg, "tls_psk", "/x.psk");
  nbd_srv_config_set (&cfg, "tls", "on");
  assert_int_equal (nbd_srv_config_check (&cfg, &warning), -EINVAL);
  nbd_srv_config_set (&cfg, "insecure_tcp", "on");
  assert_int_equal (nbd_srv_config_check (&cfg, &warning), 0);
  assert_non_null (warning);
  nbd_srv_config_free (&cfg);

  /* tls=off with credentials on a network address: still refused. */
  nbd_srv_config_init (&cfg);
  nbd_srv_config_set (&cfg, "listen", "0.0.0.0:10809");
  nbd_srv_config_set (&cfg, "tls_psk", "/x.psk");
  nbd_srv_config_set (&cfg, "tls", "off");
  assert_int_equal (nbd_srv_config_check (&cfg, &warning), -EINVAL);
  nbd_srv_config_free (&cfg);

  /* TLS without credentials; verify_peer without certificates. */
  nbd_srv_config_init (&cfg);
  nbd_srv_config_set (&cfg, "tls", "on");
  assert_int_equal (nbd_srv_config_check (&cfg, &warning), -EINVAL);
  nbd_srv_config_set (&cfg, "tls_psk", "/x.psk");
  nbd_srv_config_set (&cfg, "tls_verify_peer", "yes");
  assert_int_equal (nbd_srv_config_check (&cfg, &warning), -EINVAL);
  nbd_srv_config_free (&cfg);

  /* Metrics: loopback only, unless insecure_tcp. */
  nbd_srv_config_init (&cfg);
  nbd_srv_config_set (&cfg, "metrics", "0.0.0.0:9100");
  assert_int_equal (nbd_srv_config_check (&cfg, &warning), -EINVAL);
  nbd_srv_config_set (&cfg, "insecure_tcp", "yes");
  assert_int_equal (nbd_srv_config_check (&cfg, &warning), 0);
  assert_non_null (warning);
  nbd_srv_config_free (&cfg);
}

static void
test_backup_names (void **state)
{
  struct nbd_srv_acl *acl = NULL;
  char img[IMAGE_NAME_MAX + 1], id[64];
  int req;

  assert_int_equal (nbd_srv_backup_name_split ("vm1", img, sizeof img, id,
                                               sizeof id), 0);
  assert_int_equal (nbd_srv_backup_name_split ("backup:vm1/20260101-ab",
                                               img, sizeof img, id,
                                               sizeof id), 1);
  assert_string_equal (img, "vm1");
  assert_string_equal (id, "20260101-ab");
  assert_int_equal (nbd_srv_backup_name_split ("backup:vm1/latest", NULL, 0,
                                               NULL, 0), 1);
  {
    static const char *const bad[] = {
      "backup:vm1", "backup:/x", "backup:vm1/", "backup:vm1/a/b",
      "backup:vm1/a_b", "backup:vm 1/x", "backup:.vm/x", "backup:vm1@s/x",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
      {
        vbk_clear_error ();
        assert_int_equal (nbd_srv_backup_name_split (bad[i], img, sizeof img,
                                                     id, sizeof id), -EINVAL);
        assert_true (*vbk_error () != 0);
      }
  }

  /* A backup follows its image's rule and is never more than READ. */
  assert_int_equal (nbd_srv_access_check (NULL, false, &anon, "backup:vm1/x"),
                    READ);
  assert_int_equal (nbd_srv_access_check (NULL, true, &alice, "backup:vm1/x"),
                    NONE);
  assert_int_equal (nbd_srv_access_check (NULL, true, &local, "backup:vm1/x"),
                    READ);
  assert_int_equal (nbd_srv_acl_add (&acl, "vm1", "allow", "alice"), 0);
  assert_int_equal (nbd_srv_acl_add (&acl, "vm1", "allow_read", "carol"), 0);
  assert_int_equal (nbd_srv_acl_add (&acl, NULL, "allow", "bob"), 0);
  for (req = 0; req < 2; req++)
    {
      assert_int_equal (nbd_srv_access_check (acl, req, &alice,
                                              "backup:vm1/x"), READ);
      assert_int_equal (nbd_srv_access_check (acl, req, &carol,
                                              "backup:vm1/x"), READ);
      /* bob is in the default lists, which vm1's section replaces. */
      assert_int_equal (nbd_srv_access_check (acl, req, &bob,
                                              "backup:vm1/x"), NONE);
      assert_int_equal (nbd_srv_access_check (acl, req, &anon,
                                              "backup:vm1/x"), NONE);
      /* Another image's backups: the default lists. */
      assert_int_equal (nbd_srv_access_check (acl, req, &bob,
                                              "backup:vm2/x"), READ);
      assert_int_equal (nbd_srv_access_check (acl, req, &alice,
                                              "backup:vm2/x"), NONE);
      /* A malformed name gets the default lists (it cannot open). */
      assert_int_equal (nbd_srv_access_check (acl, req, &alice,
                                              "backup:vm1"), NONE);
    }
  nbd_srv_acl_free (acl);

  /* The repository: "repo" in [blockd]. */
  {
    struct nbd_srv_config cfg;
    nbd_srv_config_init (&cfg);
    assert_null (cfg.repo_uri);
    assert_int_equal (nbd_srv_config_set (&cfg, "repo", "local:/r"), 0);
    assert_string_equal (cfg.repo_uri, "local:/r");
    nbd_srv_config_free (&cfg);
  }
}

static int
setup (void **state)
{
  snprintf (tmpdir, sizeof tmpdir, "/tmp/vbk-test-access.XXXXXX");
  return mkdtemp (tmpdir) ? 0 : -1;
}

static int
teardown (void **state)
{
  char path[128];
  snprintf (path, sizeof path, "%s/blockd.conf", tmpdir);
  unlink (path);
  return rmdir (tmpdir);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_acl_rules),
    cmocka_unit_test (test_backup_names),
    cmocka_unit_test (test_config_file),
    cmocka_unit_test (test_config_sweep),
    cmocka_unit_test (test_config_check),
  };
  return cmocka_run_group_tests (tests, setup, teardown);
}
