/* SPDX-License-Identifier: MIT
 *
 * test-tls.c - blockd/tls.c against a real GnuTLS client on a socketpair:
 * PSK file parsing, X.509 with and without client certificates (and with
 * one from an unknown CA), PSK with the right key, a wrong key and an
 * unknown identity, a handshake that stalls (the deadline), garbage
 * instead of a ClientHello, records in both directions (sendv packing a
 * header with data), a client that goes away in the middle of a record,
 * and close_notify; the priority string (refused strings, the suite it
 * picks); TLS 1.3 records through our own record layer: a KeyUpdate
 * both ways in the middle of a transfer, reads smaller than a record, a
 * record changed on the way, headers that cannot be a TLS 1.3 record.
 * Certificates come from deploy/make-tls-certs.sh (the script the
 * end-to-end tests and operators use), made once per run.
 */
/* VBK_TEST_LINKS: vbkblockd-internals PkgConfig::GNUTLS */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <gnutls/gnutls.h>

#include "blockd/tls.h"
#include "common/error.h"

static char certs[256];          /* made by make-tls-certs.sh */
static char rogue[256];          /* a second, unknown CA */

/* ---- A GnuTLS client in a thread ---------------------------------------- */

struct client {
  pthread_t th;
  int fd;
  /* what it does */
  const char *prio;              /* its priority string (NULL: NORMAL
                                    with every PSK key exchange) */
  const char *cert_dir;          /* client-NAME folder: send its certificate */
  bool anonymous_x509;           /* X.509 without a certificate of its own */
  const char *psk_user;
  unsigned char psk_key[32];
  size_t psk_len;
  size_t expect_recv;            /* bytes to receive and check, then echo
                                    ECHO bytes back */
  size_t echo;
  bool cut_mid_record;           /* after the handshake: half a record */
  bool tamper;                   /* after the handshake: a record with a
                                    byte of its ciphertext changed */
  const void *raw;               /* after the handshake: these bytes, in
                                    the clear */
  size_t raw_len;
  bool key_update;               /* after EXPECT_RECV: a TLS 1.3 KeyUpdate
                                    that asks for the server's too */
  size_t expect_recv2;           /* after ECHO: bytes to receive and check */
  bool bye;                      /* then close_notify */
  /* what happened */
  int hs;                        /* gnutls_handshake's result */
  bool data_ok;
  bool data2_ok;
  ssize_t after_bye;             /* record_recv after the server's bye */
};

static unsigned char pattern (size_t i) { return (unsigned char) (i * 7 + (i >> 12)); }

static char captured[65536];
static size_t ncaptured;

static ssize_t
capture_push (gnutls_transport_ptr_t p, const void *buf, size_t len)
{
  if (ncaptured + len > sizeof captured)
    len = sizeof captured - ncaptured;
  memcpy (captured + ncaptured, buf, len);
  ncaptured += len;
  return len;
}

static void *
client_main (void *arg)
{
  struct client *c = arg;
  gnutls_session_t s;
  gnutls_certificate_credentials_t xc = NULL;
  gnutls_psk_client_credentials_t pc = NULL;
  char path[512], key[512];

  gnutls_init (&s, GNUTLS_CLIENT);
  gnutls_priority_set_direct (s, c->prio ? c->prio
                              : "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK", NULL);
  if (c->psk_user)
    {
      gnutls_datum_t k = { c->psk_key, c->psk_len };
      gnutls_psk_allocate_client_credentials (&pc);
      gnutls_psk_set_client_credentials (pc, c->psk_user, &k,
                                         GNUTLS_PSK_KEY_RAW);
      gnutls_credentials_set (s, GNUTLS_CRD_PSK, pc);
    }
  else
    {
      gnutls_certificate_allocate_credentials (&xc);
      snprintf (path, sizeof path, "%s/ca-cert.pem", certs);
      gnutls_certificate_set_x509_trust_file (xc, path, GNUTLS_X509_FMT_PEM);
      if (c->cert_dir)
        {
          snprintf (path, sizeof path, "%s/client-cert.pem", c->cert_dir);
          snprintf (key, sizeof key, "%s/client-key.pem", c->cert_dir);
          assert_true (gnutls_certificate_set_x509_key_file (
                         xc, path, key, GNUTLS_X509_FMT_PEM) >= 0);
        }
      gnutls_credentials_set (s, GNUTLS_CRD_CERTIFICATE, xc);
      gnutls_session_set_verify_cert (s, "localhost", 0);
    }
  gnutls_transport_set_int (s, c->fd);
  do
    c->hs = gnutls_handshake (s);
  while (c->hs < 0 && !gnutls_error_is_fatal (c->hs));
  if (c->hs < 0)
    goto out;

  if (c->raw)
    {
      assert_true (write (c->fd, c->raw, c->raw_len) == (ssize_t) c->raw_len);
      goto out;
    }
  if (c->tamper)
    {
      static char data[4000];
      gnutls_transport_set_push_function (s, capture_push);
      ncaptured = 0;
      gnutls_record_send (s, data, sizeof data);
      captured[ncaptured / 2] ^= 0x20;
      assert_true (write (c->fd, captured, ncaptured) == (ssize_t) ncaptured);
      goto out;
    }
  if (c->cut_mid_record)
    {
      static char data[4000];
      gnutls_transport_set_push_function (s, capture_push);
      ncaptured = 0;
      gnutls_record_send (s, data, sizeof data);
      /* Half of the record, then the connection ends. */
      assert_true (write (c->fd, captured, ncaptured / 2) > 0);
      shutdown (c->fd, SHUT_WR);
      goto out;
    }
  if (c->expect_recv)
    {
      unsigned char *buf = malloc (c->expect_recv);
      size_t got = 0;
      c->data_ok = true;
      while (got < c->expect_recv)
        {
          ssize_t r = gnutls_record_recv (s, buf + got, c->expect_recv - got);
          if (r < 0 && !gnutls_error_is_fatal (r))
            continue;             /* a KeyUpdate, a ticket */
          if (r <= 0)
            {
              fprintf (stderr, "client: receive: %s\n",
                       gnutls_strerror ((int) r));
              c->data_ok = false;
              break;
            }
          got += r;
        }
      for (size_t i = 0; c->data_ok && i < got; i++)
        if (buf[i] != pattern (i))
          c->data_ok = false;
      free (buf);
    }
  if (c->key_update && gnutls_session_key_update (s, GNUTLS_KU_PEER) < 0)
    goto out;
  if (c->echo)
    {
      unsigned char *buf = malloc (c->echo);
      size_t sent = 0;
      for (size_t i = 0; i < c->echo; i++)
        buf[i] = pattern (i);
      while (sent < c->echo)
        {
          ssize_t r = gnutls_record_send (s, buf + sent, c->echo - sent);
          if (r < 0)
            break;
          sent += r;
        }
      free (buf);
    }
  if (c->expect_recv2)
    {
      unsigned char *buf = malloc (c->expect_recv2);
      size_t got = 0;
      c->data2_ok = true;
      while (got < c->expect_recv2)
        {
          ssize_t r = gnutls_record_recv (s, buf + got,
                                          c->expect_recv2 - got);
          if (r < 0 && !gnutls_error_is_fatal (r))
            continue;
          if (r <= 0)
            {
              c->data2_ok = false;
              break;
            }
          got += r;
        }
      for (size_t i = 0; c->data2_ok && i < got; i++)
        if (buf[i] != pattern (i))
          c->data2_ok = false;
      free (buf);
    }
  if (c->bye)
    gnutls_bye (s, GNUTLS_SHUT_WR);
  {
    char b[16];
    c->after_bye = gnutls_record_recv (s, b, sizeof b);
  }
 out:
  gnutls_deinit (s);
  if (xc)
    gnutls_certificate_free_credentials (xc);
  if (pc)
    gnutls_psk_free_client_credentials (pc);
  return NULL;
}

/* Starts client C on one end of a socketpair; returns the server's end. */
static int
client_start (struct client *c)
{
  int sv[2];
  assert_int_equal (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  c->fd = sv[1];
  assert_int_equal (pthread_create (&c->th, NULL, client_main, c), 0);
  return sv[0];
}

static void
client_join (struct client *c, int server_fd)
{
  /* Closing our end first unblocks a client still waiting to read. */
  shutdown (server_fd, SHUT_RDWR);
  pthread_join (c->th, NULL);
  close (c->fd);
  close (server_fd);
}

/* nbd_srv_tls_recv on S, waiting on FD while it has nothing: the first
 * result that is not -EAGAIN. */
static ssize_t
recv_wait (struct nbd_srv_tls_session *s, int fd, void *buf, size_t len)
{
  struct pollfd p = { .fd = fd, .events = POLLIN };
  ssize_t r;

  while ((r = nbd_srv_tls_recv (s, buf, len)) == -EAGAIN)
    assert_int_equal (poll (&p, 1, 10000), 1);
  return r;
}

/* Frees session S and closes both ends of its socketpair. */
static void
session_end (struct nbd_srv_tls_session *s, int fd, struct client *c)
{
  nbd_srv_tls_session_free (s);
  close (fd);
  close (c->fd);
}

/* Receives N bytes in pieces of at most STEP and checks them. */
static void
recv_pattern (struct nbd_srv_tls_session *s, int fd, size_t n, size_t step)
{
  unsigned char *buf = malloc (n);
  size_t got = 0;

  while (got < n)
    {
      size_t want = n - got < step ? n - got : step;
      ssize_t r = recv_wait (s, fd, buf + got, want);
      if (r <= 0)
        fail_msg ("receive: %zd: %s", r, vbk_error ());
      got += r;
    }
  for (size_t i = 0; i < n; i++)
    if (buf[i] != pattern (i))
      fail_msg ("byte %zu of %zu differs", i, n);
  free (buf);
}

/* The key of IDENTITY in FILE (make-tls-certs.sh's keys.psk). */
static size_t
psk_key_of (const char *file, const char *identity, unsigned char *key)
{
  FILE *f = fopen (file, "r");
  char line[1024];
  size_t len = 0;

  assert_non_null (f);
  while (fgets (line, sizeof line, f))
    {
      char *id;
      unsigned char *k;
      size_t n;
      if (nbd_srv_tls_psk_parse_line (line, &id, &k, &n) == 0 && id
          && !strcmp (id, identity))
        {
          memcpy (key, k, n);
          len = n;
        }
      free (id);
      free (k);
    }
  fclose (f);
  assert_true (len > 0);
  return len;
}

static struct nbd_srv_tls *
creds (bool x509, bool psk, bool verify_peer)
{
  char dir[512], file[512];
  struct nbd_srv_tls_opts o = { NULL, NULL, verify_peer };
  struct nbd_srv_tls *t;

  snprintf (dir, sizeof dir, "%s/server", certs);
  snprintf (file, sizeof file, "%s/keys.psk", certs);
  if (x509)
    o.cert_dir = dir;
  if (psk)
    o.psk_file = file;
  assert_int_equal (nbd_srv_tls_new (&o, &t), 0);
  return t;
}

/* ---- PSK files ---------------------------------------------------------- */

static void
test_psk_parse (void **state)
{
  char *id;
  unsigned char *key;
  size_t len;

  assert_int_equal (nbd_srv_tls_psk_parse_line ("alice:00ff10Ab\n", &id,
                                                &key, &len), 0);
  assert_string_equal (id, "alice");
  assert_int_equal (len, 4);
  assert_memory_equal (key, "\x00\xff\x10\xab", 4);
  free (id);
  free (key);
  /* Windows line ends too. */
  assert_int_equal (nbd_srv_tls_psk_parse_line ("bob:0102\r\n", &id, &key,
                                                &len), 0);
  assert_string_equal (id, "bob");
  assert_int_equal (len, 2);
  free (id);
  free (key);
  /* Blank and comment lines. */
  assert_int_equal (nbd_srv_tls_psk_parse_line ("\n", &id, &key, &len), 0);
  assert_null (id);
  assert_int_equal (nbd_srv_tls_psk_parse_line ("# x:00\n", &id, &key, &len),
                    0);
  assert_null (id);

  static const char *const bad[] = {
    "alice\n",              /* no colon */
    ":0011\n",              /* empty identity */
    "alice:\n",             /* empty key */
    "alice:012\n",          /* odd number of digits */
    "alice:zz\n",           /* not hex */
    "al ice:00\n",          /* space in the identity */
    "al,ice:00\n",          /* comma: would break allow lists */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    {
      assert_int_equal (nbd_srv_tls_psk_parse_line (bad[i], &id, &key, &len),
                        -EINVAL);
      assert_null (id);
      assert_null (key);
      assert_true (strlen (vbk_error ()) > 0);
    }
}

static void
write_file (const char *path, const char *text)
{
  FILE *f = fopen (path, "w");
  assert_non_null (f);
  fputs (text, f);
  fclose (f);
}

static void
test_psk_file_errors (void **state)
{
  char file[512];
  struct nbd_srv_tls_opts o = { NULL, file, false };
  struct nbd_srv_tls *t;

  snprintf (file, sizeof file, "%s/test.psk", certs);
  write_file (file, "alice:0011\n# comment\nbob:zz\n");
  assert_int_equal (nbd_srv_tls_new (&o, &t), -EINVAL);
  assert_null (t);
  assert_non_null (strstr (vbk_error (), "line 3"));

  write_file (file, "alice:0011\nalice:2233\n");
  assert_int_equal (nbd_srv_tls_new (&o, &t), -EINVAL);
  assert_non_null (strstr (vbk_error (), "twice"));

  write_file (file, "# nothing\n");
  assert_int_equal (nbd_srv_tls_new (&o, &t), -EINVAL);
  assert_non_null (strstr (vbk_error (), "no keys"));

  snprintf (file, sizeof file, "%s/missing.psk", certs);
  assert_int_equal (nbd_srv_tls_new (&o, &t), -ENOENT);

  snprintf (file, sizeof file, "%s/keys.psk", certs);
  assert_int_equal (nbd_srv_tls_new (&o, &t), 0);
  assert_int_equal (nbd_srv_tls_psk_count (t), 3);
  nbd_srv_tls_free (t);

  /* Neither kind of credentials. */
  o.psk_file = NULL;
  assert_int_equal (nbd_srv_tls_new (&o, &t), -EINVAL);
  /* A folder without the server's files. */
  o.cert_dir = rogue;           /* has ca-cert.pem, no server/ files */
  assert_int_equal (nbd_srv_tls_new (&o, &t), -ENOENT);
  assert_non_null (strstr (vbk_error (), "server-cert.pem"));
}

/* ---- Priority strings --------------------------------------------------- */

/* An X.509 handshake with priority PRIO on the server; returns the
 * session's description. */
static void
handshake_with (const char *prio, char *desc, size_t len)
{
  char dir[512], cdir[512];
  struct nbd_srv_tls_opts o = { dir, NULL, false, prio };
  struct nbd_srv_tls *t;
  struct nbd_srv_tls_session *s;
  struct client c = { .cert_dir = cdir, .expect_recv = 40000 };
  unsigned char buf[40000];
  struct iovec iov = { buf, sizeof buf };
  int fd;

  snprintf (dir, sizeof dir, "%s/server", certs);
  snprintf (cdir, sizeof cdir, "%s/client-alice", certs);
  for (size_t i = 0; i < sizeof buf; i++)
    buf[i] = pattern (i);
  assert_int_equal (nbd_srv_tls_new (&o, &t), 0);
  fd = client_start (&c);
  assert_int_equal (nbd_srv_tls_session_new (t, fd, 5000, &s), 0);
  snprintf (desc, len, "%s", nbd_srv_tls_description (s));
  assert_int_equal (nbd_srv_tls_send_all (s, &iov, 1, 5000), 0);
  assert_int_equal (nbd_srv_tls_bye (s, 1000), 0);
  pthread_join (c.th, NULL);
  assert_int_equal (c.hs, 0);
  assert_true (c.data_ok);
  session_end (s, fd, &c);
  nbd_srv_tls_free (t);
}

static void
test_priority (void **state)
{
  char dir[512], file[512], desc[128];
  struct nbd_srv_tls_opts o = { dir, NULL, false, "NORMAL:+NO-SUCH-THING" };
  struct nbd_srv_tls *t;

  snprintf (dir, sizeof dir, "%s/server", certs);
  snprintf (file, sizeof file, "%s/keys.psk", certs);
  /* Refused, saying where. */
  assert_int_equal (nbd_srv_tls_new (&o, &t), -EINVAL);
  assert_null (t);
  assert_non_null (strstr (vbk_error (), "not understood at "
                           "\"+NO-SUCH-THING\""));
  /* PSK keys, and no PSK key exchange allowed. */
  o.psk_file = file;
  o.priority = "NORMAL";
  assert_int_equal (nbd_srv_tls_new (&o, &t), -EINVAL);
  assert_non_null (strstr (vbk_error (), "no PSK key exchange"));
  o.priority = "NORMAL:+ECDHE-PSK";
  assert_int_equal (nbd_srv_tls_new (&o, &t), 0);
  nbd_srv_tls_free (t);

  /* The default: AES-128-GCM, against a client (NORMAL) that lists
   * AES-256-GCM first. */
  handshake_with (NULL, desc, sizeof desc);
  assert_string_equal (desc, "TLS1.3 AES-128-GCM x509");
  /* What the string says. */
  handshake_with ("NORMAL:-CIPHER-ALL:+AES-256-GCM", desc, sizeof desc);
  assert_string_equal (desc, "TLS1.3 AES-256-GCM x509");
  handshake_with ("NORMAL:-VERS-ALL:+VERS-TLS1.2:-CIPHER-ALL:"
                  "+CHACHA20-POLY1305", desc, sizeof desc);
  assert_string_equal (desc, "TLS1.2 CHACHA20-POLY1305 x509");
}

/* The default priority has forward secrecy only: a PSK client that
 * offers (EC)DHE gets it, one that offers plain PSK alone (TLS 1.3
 * psk_ke, TLS 1.2 PSK) is refused; a string that allows plain PSK lets
 * it in. */
static void
test_priority_psk_dhe (void **state)
{
  char file[512];
  struct nbd_srv_tls_opts o = { NULL, file, false, NULL };
  static const char *const plain[] = {
    "NORMAL:-KX-ALL:+PSK",
    "NORMAL:-VERS-ALL:+VERS-TLS1.2:-KX-ALL:+PSK",
  };
  struct nbd_srv_tls *t;
  struct nbd_srv_tls_session *s;
  struct client c;
  int fd;

  snprintf (file, sizeof file, "%s/keys.psk", certs);
  assert_int_equal (nbd_srv_tls_new (&o, &t), 0);
  c = (struct client) { .psk_user = "alice", .echo = 1000 };
  c.psk_len = psk_key_of (file, "alice", c.psk_key);
  fd = client_start (&c);
  assert_int_equal (nbd_srv_tls_session_new (t, fd, 5000, &s), 0);
  recv_pattern (s, fd, 1000, 1000);
  client_join (&c, fd);
  assert_int_equal (c.hs, 0);
  nbd_srv_tls_session_free (s);
  for (size_t k = 0; k < 2; k++)
    {
      c = (struct client) { .psk_user = "alice", .prio = plain[k] };
      c.psk_len = psk_key_of (file, "alice", c.psk_key);
      fd = client_start (&c);
      s = NULL;
      assert_true (nbd_srv_tls_session_new (t, fd, 5000, &s) < 0);
      assert_null (s);
      /* The client sees the end of the stream (and may still write:
       * our side stays open for reading until it is done). */
      shutdown (fd, SHUT_WR);
      pthread_join (c.th, NULL);
      close (c.fd);
      close (fd);
      assert_true (c.hs < 0);
    }
  nbd_srv_tls_free (t);

  o.priority = "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK";
  assert_int_equal (nbd_srv_tls_new (&o, &t), 0);
  c = (struct client) { .psk_user = "alice", .prio = plain[0], .echo = 10 };
  c.psk_len = psk_key_of (file, "alice", c.psk_key);
  fd = client_start (&c);
  assert_int_equal (nbd_srv_tls_session_new (t, fd, 5000, &s), 0);
  recv_pattern (s, fd, 10, 10);
  client_join (&c, fd);
  assert_int_equal (c.hs, 0);
  nbd_srv_tls_session_free (s);
  nbd_srv_tls_free (t);
}

/* ---- Handshakes --------------------------------------------------------- */

static void
test_x509_client_cert (void **state)
{
  struct nbd_srv_tls *t = creds (true, false, true);
  struct nbd_srv_tls_session *s;
  char dir[512];
  struct client c = { .cert_dir = dir, .expect_recv = 16 + (1 << 20) + 100,
                      .echo = 70000 };
  int fd, flags;

  snprintf (dir, sizeof dir, "%s/client-alice", certs);
  fd = client_start (&c);
  flags = fcntl (fd, F_GETFL);
  assert_int_equal (nbd_srv_tls_session_new (t, fd, 5000, &s), 0);
  /* The fd is blocking again, as it was. */
  assert_int_equal (fcntl (fd, F_GETFL), flags);
  assert_string_equal (nbd_srv_tls_identity (s), "alice");
  assert_non_null (strstr (nbd_srv_tls_subject (s), "CN=alice"));
  assert_non_null (strstr (nbd_srv_tls_description (s), "x509"));

  /* A reply header, a big payload and a tail: one stream of bytes. */
  {
    size_t n = 16 + (1 << 20) + 100;
    unsigned char *buf = malloc (n);
    struct iovec iov[5];
    for (size_t i = 0; i < n; i++)
      buf[i] = pattern (i);
    /* Empty pieces with no buffer, as option replies without data have
     * (UBSan checks that none reaches memcpy). */
    iov[0] = (struct iovec) { buf, 16 };
    iov[1] = (struct iovec) { NULL, 0 };
    iov[2] = (struct iovec) { buf + 16, 1 << 20 };
    iov[3] = (struct iovec) { buf + 16 + (1 << 20), 100 };
    iov[4] = (struct iovec) { NULL, 0 };
    assert_int_equal (nbd_srv_tls_send_all (s, iov, 5, 5000), 0);
    free (buf);
  }
  recv_pattern (s, fd, 70000, 70000);
  assert_int_equal (nbd_srv_tls_bye (s, 1000), 0);
  pthread_join (c.th, NULL);
  assert_int_equal (c.hs, 0);
  assert_true (c.data_ok);
  /* The client saw a clean end: close_notify, not a cut. */
  assert_int_equal (c.after_bye, 0);
  session_end (s, fd, &c);
  nbd_srv_tls_free (t);
}

static void
test_x509_anonymous (void **state)
{
  struct nbd_srv_tls *t = creds (true, false, false);
  struct nbd_srv_tls_session *s;
  struct client c = { .anonymous_x509 = true };
  int fd = client_start (&c);

  assert_int_equal (nbd_srv_tls_session_new (t, fd, 5000, &s), 0);
  assert_null (nbd_srv_tls_identity (s));
  assert_null (nbd_srv_tls_subject (s));
  nbd_srv_tls_bye (s, 1000);
  nbd_srv_tls_session_free (s);
  client_join (&c, fd);
  assert_int_equal (c.hs, 0);
  nbd_srv_tls_free (t);
}

static void
test_x509_refused (void **state)
{
  struct nbd_srv_tls *t = creds (true, false, true);
  struct nbd_srv_tls *t_opt = creds (true, false, false);
  struct nbd_srv_tls_session *s = NULL;
  char dir[512];
  struct client c;
  int fd;

  /* No certificate where one is required. */
  c = (struct client) { .anonymous_x509 = true };
  fd = client_start (&c);
  assert_int_equal (nbd_srv_tls_session_new (t, fd, 5000, &s), -EACCES);
  assert_null (s);
  client_join (&c, fd);
  /* TLS 1.3: the client's side of the handshake ends before the server
   * has seen its (missing) certificate; it learns on its first read. */
  assert_true (c.hs < 0 || c.after_bye < 0);

  /* A certificate from a CA the server does not know: refused even when
   * certificates are optional. */
  snprintf (dir, sizeof dir, "%s/client-mallory", rogue);
  c = (struct client) { .cert_dir = dir };
  fd = client_start (&c);
  assert_int_equal (nbd_srv_tls_session_new (t_opt, fd, 5000, &s), -EACCES);
  assert_non_null (strstr (vbk_error (), "client certificate"));
  client_join (&c, fd);
  assert_true (c.hs < 0 || c.after_bye < 0);
  nbd_srv_tls_free (t);
  nbd_srv_tls_free (t_opt);
}

static void
test_psk (void **state)
{
  struct nbd_srv_tls *t = creds (true, true, false);
  struct nbd_srv_tls_session *s = NULL;
  char file[512];
  struct client c;
  int fd;

  snprintf (file, sizeof file, "%s/keys.psk", certs);
  c = (struct client) { .psk_user = "bob", .expect_recv = 5000 };
  c.psk_len = psk_key_of (file, "bob", c.psk_key);
  fd = client_start (&c);
  assert_int_equal (nbd_srv_tls_session_new (t, fd, 5000, &s), 0);
  assert_string_equal (nbd_srv_tls_identity (s), "bob");
  assert_null (nbd_srv_tls_subject (s));
  assert_non_null (strstr (nbd_srv_tls_description (s), "psk"));
  {
    unsigned char buf[5000];
    struct iovec iov = { buf, sizeof buf };
    for (size_t i = 0; i < sizeof buf; i++)
      buf[i] = pattern (i);
    assert_int_equal (nbd_srv_tls_send_all (s, &iov, 1, 5000), 0);
  }
  nbd_srv_tls_bye (s, 1000);
  nbd_srv_tls_session_free (s);
  client_join (&c, fd);
  assert_int_equal (c.hs, 0);
  assert_true (c.data_ok);

  /* bob's identity with alice's key. */
  c = (struct client) { .psk_user = "bob" };
  c.psk_len = psk_key_of (file, "alice", c.psk_key);
  fd = client_start (&c);
  assert_int_equal (nbd_srv_tls_session_new (t, fd, 5000, &s), -EACCES);
  assert_non_null (strstr (vbk_error (), "wrong key"));
  client_join (&c, fd);
  assert_true (c.hs < 0);

  /* An identity the file does not have. */
  c = (struct client) { .psk_user = "mallory" };
  c.psk_len = psk_key_of (file, "alice", c.psk_key);
  fd = client_start (&c);
  assert_int_equal (nbd_srv_tls_session_new (t, fd, 5000, &s), -EACCES);
  client_join (&c, fd);
  assert_true (c.hs < 0);
  nbd_srv_tls_free (t);
}

static uint64_t
ms_now (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
test_stall_and_garbage (void **state)
{
  struct nbd_srv_tls *t = creds (true, true, false);
  struct nbd_srv_tls_session *s = NULL;
  int sv[2];
  uint64_t t0;
  /* A TLS record header announcing a 512-byte handshake message, and
   * only part of it. */
  static const unsigned char partial[] = {
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
  };

  /* Silence: the deadline ends it (the bound is generous: the check is
   * that it ends, and with ETIMEDOUT). */
  assert_int_equal (socketpair (AF_UNIX, SOCK_STREAM, 0, sv), 0);
  t0 = ms_now ();
  assert_int_equal (nbd_srv_tls_session_new (t, sv[0], 300, &s), -ETIMEDOUT);
  assert_true (ms_now () - t0 < 60000);
  close (sv[0]);
  close (sv[1]);

  /* Half a ClientHello, then silence. */
  assert_int_equal (socketpair (AF_UNIX, SOCK_STREAM, 0, sv), 0);
  assert_int_equal (write (sv[1], partial, sizeof partial), sizeof partial);
  assert_int_equal (nbd_srv_tls_session_new (t, sv[0], 300, &s), -ETIMEDOUT);
  close (sv[0]);
  close (sv[1]);

  /* Plain NBD bytes where a ClientHello belongs. */
  assert_int_equal (socketpair (AF_UNIX, SOCK_STREAM, 0, sv), 0);
  assert_int_equal (write (sv[1], "IHAVEOPT\0\0\0\x05\0\0\0\0garbage", 23), 23);
  assert_int_equal (nbd_srv_tls_session_new (t, sv[0], 60000, &s), -EPROTO);
  close (sv[0]);
  close (sv[1]);

  /* The client leaves before saying anything. */
  assert_int_equal (socketpair (AF_UNIX, SOCK_STREAM, 0, sv), 0);
  close (sv[1]);
  assert_int_equal (nbd_srv_tls_session_new (t, sv[0], 60000, &s),
                    -ECONNRESET);
  close (sv[0]);
  nbd_srv_tls_free (t);
}

static void
test_cut_mid_record (void **state)
{
  struct nbd_srv_tls *t = creds (true, false, false);
  struct nbd_srv_tls_session *s;
  char dir[512];
  struct client c = { .cert_dir = dir, .cut_mid_record = true };
  unsigned char buf[8192];
  int fd;

  snprintf (dir, sizeof dir, "%s/client-carol", certs);
  fd = client_start (&c);
  assert_int_equal (nbd_srv_tls_session_new (t, fd, 5000, &s), 0);
  pthread_join (c.th, NULL);
  assert_int_equal (c.hs, 0);
  /* Half a record, then EOF: an error, not data and not a clean end. */
  assert_int_equal (recv_wait (s, fd, buf, sizeof buf), -ECONNRESET);
  session_end (s, fd, &c);
  nbd_srv_tls_free (t);
}

/* Sends on a full socket, the way a connection's reply queue does: on
 * EAGAIN the rest of the reply is copied elsewhere and sent from there
 * later (the same bytes, not the same pointer).  The client, slow at
 * first, must see every byte in order. */
static void
test_nonblocking_send (void **state)
{
  struct nbd_srv_tls *t = creds (true, false, false);
  struct nbd_srv_tls_session *s;
  char dir[512];
  size_t total = 8u << 20, sent = 0, eagain = 0;
  struct client c = { .cert_dir = dir, .expect_recv = 8u << 20 };
  unsigned char *src = malloc (total);
  int fd, small = 4096;

  snprintf (dir, sizeof dir, "%s/client-alice", certs);
  for (size_t i = 0; i < total; i++)
    src[i] = pattern (i);
  fd = client_start (&c);
  setsockopt (fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  assert_int_equal (nbd_srv_tls_session_new (t, fd, 5000, &s), 0);
  while (sent < total)
    {
      /* Replies of a 16-byte header and up to 300 KiB of data. */
      size_t chunk = total - sent < 16 + 300000 ? total - sent : 16 + 300000;
      unsigned char *copy = malloc (chunk);
      struct iovec iov[2];
      size_t off = 0;

      memcpy (copy, src + sent, chunk);
      while (off < chunk)
        {
          ssize_t r;
          size_t first = off < 16 ? 16 - off : 0;
          int n = 0;
          if (first > chunk - off)
            first = chunk - off;
          if (first)
            iov[n++] = (struct iovec) { copy + off, first };
          if (chunk - off - first)
            iov[n++] = (struct iovec) { copy + off + first,
                                        chunk - off - first };
          r = nbd_srv_tls_send (s, iov, n);
          if (r == -EAGAIN)
            {
              /* Move the rest to a new buffer, scribble on the old. */
              unsigned char *again = malloc (chunk);
              struct pollfd p = { .fd = fd, .events = POLLOUT };
              memcpy (again + off, copy + off, chunk - off);
              memset (copy, 0xee, chunk);
              free (copy);
              copy = again;
              eagain++;
              assert_int_equal (poll (&p, 1, 10000), 1);
              continue;
            }
          assert_true (r > 0);
          off += r;
        }
      free (copy);
      sent += chunk;
    }
  assert_int_equal (nbd_srv_tls_bye (s, 5000), 0);
  pthread_join (c.th, NULL);
  assert_true (c.data_ok);
  assert_int_equal (c.after_bye, 0);
  /* The socket was full at times: the retry path ran. */
  assert_true (eagain > 0);
  session_end (s, fd, &c);
  free (src);
  nbd_srv_tls_free (t);
}

/* ---- Our record layer (TLS 1.3) ---------------------------------------- */

static void
send_pattern (struct nbd_srv_tls_session *s, size_t n)
{
  unsigned char *buf = malloc (n);
  struct iovec iov = { buf, n };

  for (size_t i = 0; i < n; i++)
    buf[i] = pattern (i);
  assert_int_equal (nbd_srv_tls_send_all (s, &iov, 1, 10000), 0);
  free (buf);
}

/* The client updates its keys and asks for ours (TLS 1.3 KeyUpdate):
 * GnuTLS reads that record for us, answers with its own, and the data
 * on both sides goes on with the new keys. */
static void
test_key_update (void **state)
{
  struct nbd_srv_tls *t = creds (true, false, false);
  struct nbd_srv_tls_session *s;
  char dir[512];
  struct client c = { .cert_dir = dir, .expect_recv = 200000,
                      .key_update = true, .echo = 100000,
                      .expect_recv2 = 150000 };
  int fd;

  snprintf (dir, sizeof dir, "%s/client-alice", certs);
  fd = client_start (&c);
  assert_int_equal (nbd_srv_tls_session_new (t, fd, 5000, &s), 0);
  assert_non_null (strstr (nbd_srv_tls_description (s), "TLS1.3"));
  send_pattern (s, 200000);
  recv_pattern (s, fd, 100000, 1 << 20);
  send_pattern (s, 150000);
  assert_int_equal (nbd_srv_tls_bye (s, 5000), 0);
  pthread_join (c.th, NULL);
  assert_int_equal (c.hs, 0);
  assert_true (c.data_ok);
  assert_true (c.data2_ok);
  assert_int_equal (c.after_bye, 0);
  session_end (s, fd, &c);
  nbd_srv_tls_free (t);
}

/* Our own key updates: after every 3 records sealed, a KeyUpdate
 * (GnuTLS writes it, with the sequence number we give it) and new
 * keys; the client reads every byte, and the client's data still
 * arrives. */
static void
test_own_key_update (void **state)
{
  struct nbd_srv_tls *t = creds (true, false, false);
  struct nbd_srv_tls_session *s;
  char dir[512];
  struct client c = { .cert_dir = dir, .expect_recv = 300000,
                      .echo = 50000 };
  int fd;

  snprintf (dir, sizeof dir, "%s/client-alice", certs);
  fd = client_start (&c);
  assert_int_equal (nbd_srv_tls_session_new (t, fd, 5000, &s), 0);
  nbd_srv_tls_set_key_records (s, 8);
  send_pattern (s, 300000);
  recv_pattern (s, fd, 50000, 1 << 20);
  assert_int_equal (nbd_srv_tls_bye (s, 5000), 0);
  pthread_join (c.th, NULL);
  assert_true (c.data_ok);
  assert_int_equal (c.after_bye, 0);
  session_end (s, fd, &c);
  nbd_srv_tls_free (t);
}

/* Reads smaller than a record: the rest of the record waits in the
 * session and comes first at the next read; then the client's
 * close_notify is a clean end. */
static void
test_small_reads (void **state)
{
  struct nbd_srv_tls *t = creds (false, true, false);
  struct nbd_srv_tls_session *s;
  char file[512];
  struct client c = { .psk_user = "alice", .echo = 70001, .bye = true };
  unsigned char b[16];
  ssize_t r;
  int fd;

  snprintf (file, sizeof file, "%s/keys.psk", certs);
  c.psk_len = psk_key_of (file, "alice", c.psk_key);
  fd = client_start (&c);
  assert_int_equal (nbd_srv_tls_session_new (t, fd, 5000, &s), 0);
  recv_pattern (s, fd, 70001, 999);
  assert_int_equal (nbd_srv_tls_bye (s, 5000), 0);
  pthread_join (c.th, NULL);
  assert_int_equal (c.after_bye, 0);
  /* The client closed its session (close_notify): 0, and 0 again. */
  r = recv_wait (s, fd, b, sizeof b);
  assert_int_equal (r, 0);
  assert_int_equal (nbd_srv_tls_recv (s, b, sizeof b), 0);
  session_end (s, fd, &c);
  nbd_srv_tls_free (t);
}

/* A record whose ciphertext was changed on the way: an error (not
 * data), and the same error again; a header too long for a record, or a
 * record in the clear after the handshake: an error at once. */
static void
test_tampered_record (void **state)
{
  struct nbd_srv_tls *t = creds (true, false, false);
  struct nbd_srv_tls_session *s;
  char dir[512];
  struct client c = { .cert_dir = dir, .tamper = true };
  unsigned char buf[8192];
  ssize_t r;
  int fd;

  snprintf (dir, sizeof dir, "%s/client-alice", certs);
  fd = client_start (&c);
  assert_int_equal (nbd_srv_tls_session_new (t, fd, 5000, &s), 0);
  pthread_join (c.th, NULL);
  assert_int_equal (c.hs, 0);
  r = recv_wait (s, fd, buf, sizeof buf);
  assert_int_equal (r, -EPROTO);
  assert_non_null (strstr (vbk_error (), "bad_record_mac"));
  assert_int_equal (nbd_srv_tls_recv (s, buf, sizeof buf), -EPROTO);
  session_end (s, fd, &c);

  /* A record header that announces more than a record may hold (the
   * session must not wait for it), and one in the clear. */
  static const unsigned char huge[] = { 23, 3, 3, 0xff, 0xff, 1, 2, 3 };
  static const unsigned char clear[] = { 21, 3, 3, 0, 2, 2, 40 };
  const unsigned char *raw[] = { huge, clear };
  size_t raw_len[] = { sizeof huge, sizeof clear };
  for (int k = 0; k < 2; k++)
    {
      c = (struct client) { .cert_dir = dir, .raw = raw[k],
                            .raw_len = raw_len[k] };
      fd = client_start (&c);
      assert_int_equal (nbd_srv_tls_session_new (t, fd, 5000, &s), 0);
      pthread_join (c.th, NULL);
      r = recv_wait (s, fd, buf, sizeof buf);
      assert_int_equal (r, -EPROTO);
      assert_non_null (strstr (vbk_error (), "a record of type"));
      session_end (s, fd, &c);
    }
  nbd_srv_tls_free (t);
}

/* ---- Set-up ------------------------------------------------------------- */

static int
make_certs (void **state)
{
  const char *src = getenv ("VBK_SRC");
  char here[512], cmd[2048], tmp[] = "/tmp/vbk-test-tls.XXXXXX";

  if (!src)
    {
      /* tests/unit/test-tls.c -> the source tree */
      snprintf (here, sizeof here, "%s", __FILE__);
      char *p = strstr (here, "/tests/unit/");
      if (p)
        *p = 0;
      src = here;
    }
  if (!mkdtemp (tmp))
    return -1;
  snprintf (certs, sizeof certs, "%s/certs", tmp);
  snprintf (rogue, sizeof rogue, "%s/rogue", tmp);
  snprintf (cmd, sizeof cmd, "%s/deploy/make-tls-certs.sh %s 2>/dev/null && "
            "%s/deploy/make-tls-certs.sh %s mallory 2>/dev/null && "
            "rm -rf %s/server", src, certs, src, rogue, rogue);
  return system (cmd) == 0 ? 0 : -1;
}

static int
remove_certs (void **state)
{
  char cmd[1024];
  char *slash = strrchr (certs, '/');
  if (slash)
    {
      *slash = 0;
      snprintf (cmd, sizeof cmd, "rm -rf '%s'", certs);
      if (system (cmd) != 0)
        return -1;
    }
  return 0;
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_psk_parse),
    cmocka_unit_test (test_psk_file_errors),
    cmocka_unit_test (test_priority),
    cmocka_unit_test (test_priority_psk_dhe),
    cmocka_unit_test (test_x509_client_cert),
    cmocka_unit_test (test_x509_anonymous),
    cmocka_unit_test (test_x509_refused),
    cmocka_unit_test (test_psk),
    cmocka_unit_test (test_stall_and_garbage),
    cmocka_unit_test (test_cut_mid_record),
    cmocka_unit_test (test_nonblocking_send),
    cmocka_unit_test (test_key_update),
    cmocka_unit_test (test_own_key_update),
    cmocka_unit_test (test_small_reads),
    cmocka_unit_test (test_tampered_record),
  };
  return cmocka_run_group_tests (tests, make_certs, remove_certs);
}
