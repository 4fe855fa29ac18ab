/* SPDX-License-Identifier: MIT
 *
 * tls.c - GnuTLS for vbk-blockd: credentials, the server handshake with
 * a deadline, record I/O, the peer's identity, close_notify.
 *
 * DESIGN: the only file of vbk that includes GnuTLS (tests/check-layers.sh
 * enforces it).  Credentials are loaded once (X.509 from a folder in
 * QEMU's layout, PSK keys from an nbdkit/qemu-nbd style file) and are
 * read-only afterwards.  Client certificates are always asked for and,
 * when sent, verified against the CA during the handshake (a bad one
 * aborts it with an alert, so the client learns why); with verify_peer
 * a missing one aborts it too.
 *
 * GnuTLS moves bytes through our own transport functions, which never
 * block (recv/sendmsg with MSG_DONTWAIT, whatever the fd's flags), and
 * which leave errors in the thread's errno (never in the session, which
 * a receiving and a sending thread share).  The handshake is a poll
 * loop against one deadline, so neither a client that sends nothing nor
 * one that sends half a record can hold the thread past TIMEOUT_MS.
 *
 * After the handshake the session keeps its own ciphertext buffers on
 * both sides of GnuTLS, because GnuTLS pulls a record in two exact reads
 * (its 5-byte header, then its body) and pushes every record with its
 * own sendmsg: with one small record per NBD request or reply, system
 * calls cost more than the cryptography.  Receiving reads ahead up to
 * IBUF_SIZE bytes with one recv and serves GnuTLS's reads from there;
 * one receive call returns every whole record already read (the headers
 * of many requests).  Sending packs small pieces of an iovec (NBD reply
 * headers and data, several replies) into records of up to the record
 * size through a per-session buffer, a piece of a record or more is
 * encrypted without that copy, and up to SEND_BATCH bytes of records
 * collect in the output buffer and leave with one send.  If the socket
 * takes only part of them, the call reports -EAGAIN and remembers how
 * many bytes it took: the rest of the records go first at the next call,
 * which then reports those bytes as taken (the caller calls again with
 * the same data, as with a record GnuTLS itself holds after
 * GNUTLS_E_AGAIN).  GnuTLS's push never fails then, so GnuTLS never
 * holds a record half sent.
 *
 * With TLS 1.3 (and an AEAD with a 16-byte tag) application data does
 * not go through GnuTLS's record layer at all: we open records from ibuf
 * straight into the caller's buffer and seal them from the caller's
 * buffer straight into obuf, with GnuTLS's AEAD and the record state it
 * exports for offloading; GnuTLS keeps everything else (see "Records").
 * For a 1 MiB request that saves two copies of the payload and a
 * malloc per 16 KiB record; the cipher itself is most of what remains.
 *
 * A reader thread and a sending thread share a session.  GnuTLS allows
 * one of each, but a TLS 1.3 KeyUpdate that the reader answers sends
 * too; since no call here ever blocks, one mutex per session around
 * every record call costs little and leaves no doubt.  TLS 1.2
 * renegotiation is refused (the connection ends).
 */
#include <errno.h>
#include <sys/socket.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "common/error.h"
#include "tls.h"

/* Longest PSK identity we accept (GnuTLS's own limit is larger). */
#define PSK_IDENTITY_MAX 128
/* Longest PSK key, in bytes. */
#define PSK_KEY_MAX 512

/* Ciphertext read ahead: up to 16 full records.  A WRITE's payload
 * comes in with one recv per 256 KiB instead of one per 64 KiB (with
 * fewer wake-ups of the reader between them); the buffer stays within
 * a core's L2 cache, where the records are opened. */
#define IBUF_SIZE (256u << 10)
/* Plaintext encrypted by one send call, at most (the output buffer
 * holds it, one more record and the records' overhead). */
#define SEND_BATCH (128u << 10)
#define OBUF_SIZE (SEND_BATCH + (32u << 10))

/* TLS 1.3 records (RFC 8446 5.2): a 5-byte header (type 23, version
 * 0x0303, length), then at most 2^14 + 256 bytes of AEAD ciphertext
 * (content, the real content type, zero padding) and its tag. */
#define REC_HEADER 5
#define REC_TAG 16
#define REC_CIPHERTEXT_MAX (16384u + 256)
#define CT_ALERT 21
#define CT_HANDSHAKE 22
#define CT_APPLICATION 23
/* Records one key may seal before we update it (RFC 8446 5.5 allows
 * AES-GCM 2^24.5 full-size records). */
#define REC_KEY_RECORDS (UINT64_C (1) << 24)

struct psk_entry {
  char *identity;
  unsigned char *key;
  size_t len;
};

struct nbd_srv_tls {
  gnutls_certificate_credentials_t x509;
  gnutls_psk_server_credentials_t psk;
  gnutls_priority_t prio;
  bool verify_peer;
  struct psk_entry *keys;
  size_t nkeys;
};

struct nbd_srv_tls_session {
  struct nbd_srv_tls *t;
  gnutls_session_t s;
  int fd;
  char *identity;
  char *subject;
  char desc[128];
  char why[160];            /* why the verify callback refused */
  const char *psk_user;     /* the PSK identity GnuTLS asked us for */
  unsigned char *sbuf;      /* small pieces gathered into a record */
  size_t smax;              /* largest record */
  size_t pending;           /* plaintext bytes taken by a send that
                               reported -EAGAIN: the records still in
                               obuf */
  /* after the handshake (NULL before): ciphertext read ahead, and
   * records waiting to be sent (obuf[opos, olen)) */
  unsigned char *ibuf;
  size_t ipos, ilen;
  unsigned char *obuf;
  size_t opos, olen, ocap;
  /* TLS 1.3 application data through our own record layer (see
   * "Records" below): one direction's key, IV and sequence number, as
   * GnuTLS hands them out for offloading */
  struct rec_state {
    bool on;
    gnutls_aead_cipher_hd_t aead;
    unsigned char iv[12];
    uint64_t seq;
  } rd, wr;
  unsigned char *pbuf;      /* a record's plaintext that did not fit the
                               caller's buffer: pbuf[ppos, plen) */
  size_t ppos, plen;
  size_t pull_end;          /* GnuTLS may read ibuf up to here (0: no
                               limit) */
  int rerr;                 /* after bytes returned: the next receive's
                               result (-errno, or 1: the clean end) */
  uint64_t key_records;     /* records sealed with one key, at most */
  pthread_mutex_t io_lock;  /* every gnutls_record_* and bye call, and
                               the buffers */
};

static void rec_load (struct nbd_srv_tls_session *s, unsigned read);
static void rec_pair (struct nbd_srv_tls_session *s);

static uint64_t
now_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- PSK keys ----------------------------------------------------------- */

static int
hexval (char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

int
nbd_srv_tls_psk_parse_line (const char *line, char **identity,
                            unsigned char **key, size_t *key_len)
{
  const char *colon, *hex, *end;
  size_t idlen, hexlen, i;
  unsigned char *k;
  char *id;

  *identity = NULL;
  *key = NULL;
  *key_len = 0;
  end = line + strlen (line);
  while (end > line && (end[-1] == '\n' || end[-1] == '\r'))
    end--;
  if (end == line || line[0] == '#')
    return 0;
  colon = memchr (line, ':', end - line);
  if (!colon)
    return vbk_errno (-EINVAL, "expected identity:hexkey");
  idlen = colon - line;
  if (idlen == 0 || idlen > PSK_IDENTITY_MAX)
    return vbk_errno (-EINVAL, "the identity must be 1-%d characters",
                      PSK_IDENTITY_MAX);
  for (i = 0; i < idlen; i++)
    {
      unsigned char ch = line[i];
      /* Identities appear in allow lists ("alice, bob") and logs. */
      if (ch <= ' ' || ch == ',' || ch == '"' || ch >= 0x7f)
        return vbk_errno (-EINVAL, "the identity has a space, comma, "
                          "quote or control character");
    }
  hex = colon + 1;
  hexlen = end - hex;
  if (hexlen == 0 || hexlen % 2 || hexlen / 2 > PSK_KEY_MAX)
    return vbk_errno (-EINVAL, "the key must be an even number of hex "
                      "digits (2-%d)", 2 * PSK_KEY_MAX);
  k = malloc (hexlen / 2);
  id = strndup (line, idlen);
  if (!k || !id)
    {
      free (k);
      free (id);
      return vbk_errno (-ENOMEM, "PSK key");
    }
  for (i = 0; i < hexlen / 2; i++)
    {
      int hi = hexval (hex[2 * i]), lo = hexval (hex[2 * i + 1]);
      if (hi < 0 || lo < 0)
        {
          free (k);
          free (id);
          return vbk_errno (-EINVAL, "the key has a character that is not "
                            "a hex digit");
        }
      k[i] = (unsigned char) (hi << 4 | lo);
    }
  *identity = id;
  *key = k;
  *key_len = hexlen / 2;
  return 0;
}

static int
psk_load (struct nbd_srv_tls *t, const char *file)
{
  FILE *f = fopen (file, "re");
  char *line = NULL;
  size_t cap = 0;
  unsigned lineno = 0;
  int r = 0;

  if (!f)
    return vbk_errno (-errno, "tls: PSK file %s", file);
  while (getline (&line, &cap, f) >= 0)
    {
      char *id;
      unsigned char *key;
      size_t len;
      struct psk_entry *v;

      lineno++;
      r = nbd_srv_tls_psk_parse_line (line, &id, &key, &len);
      if (r < 0)
        {
          vbk_error_prepend (r, "tls: PSK file %s: line %u: ", file, lineno);
          break;
        }
      if (!id)
        continue;
      for (size_t i = 0; i < t->nkeys; i++)
        if (!strcmp (t->keys[i].identity, id))
          {
            r = vbk_errno (-EINVAL, "tls: PSK file %s: line %u: identity "
                           "'%s' appears twice", file, lineno, id);
            break;
          }
      v = r < 0 ? NULL : realloc (t->keys, (t->nkeys + 1) * sizeof *v);
      if (!v)
        {
          if (r == 0)
            r = vbk_errno (-ENOMEM, "tls: PSK file %s", file);
          free (id);
          explicit_bzero (key, len);
          free (key);
          break;
        }
      t->keys = v;
      v[t->nkeys].identity = id;
      v[t->nkeys].key = key;
      v[t->nkeys].len = len;
      t->nkeys++;
    }
  if (line)
    explicit_bzero (line, cap);
  free (line);
  fclose (f);
  if (r == 0 && t->nkeys == 0)
    r = vbk_errno (-EINVAL, "tls: PSK file %s: no keys", file);
  return r;
}

/* GnuTLS asks for USERNAME's key; -1: unknown (the handshake fails). */
static int
psk_lookup (gnutls_session_t session, const char *username,
            gnutls_datum_t *key)
{
  struct nbd_srv_tls_session *ss = gnutls_session_get_ptr (session);

  for (size_t i = 0; i < ss->t->nkeys; i++)
    if (!strcmp (ss->t->keys[i].identity, username))
      {
        key->data = gnutls_malloc (ss->t->keys[i].len);
        if (!key->data)
          return -1;
        memcpy (key->data, ss->t->keys[i].key, ss->t->keys[i].len);
        key->size = ss->t->keys[i].len;
        ss->psk_user = ss->t->keys[i].identity;
        return 0;
      }
  snprintf (ss->why, sizeof ss->why, "unknown PSK identity");
  return -1;
}

/* ---- X.509 -------------------------------------------------------------- */

/* During the handshake, once the client's certificate arrived: 0 lets
 * the handshake go on, anything else aborts it with an alert. */
static int
verify_client (gnutls_session_t session)
{
  struct nbd_srv_tls_session *ss = gnutls_session_get_ptr (session);
  gnutls_typed_vdata_st purpose = {
    .type = GNUTLS_DT_KEY_PURPOSE_OID,
    .data = (void *) GNUTLS_KP_TLS_WWW_CLIENT,
  };
  unsigned n = 0, status = 0;
  int r;

  if (!gnutls_certificate_get_peers (session, &n) || n == 0)
    {
      if (ss->t->verify_peer)
        {
          snprintf (ss->why, sizeof ss->why, "no client certificate");
          return GNUTLS_E_CERTIFICATE_REQUIRED;
        }
      return 0;
    }
  r = gnutls_certificate_verify_peers (session, &purpose, 1, &status);
  if (r < 0)
    {
      snprintf (ss->why, sizeof ss->why, "client certificate: %s",
                gnutls_strerror (r));
      return GNUTLS_E_CERTIFICATE_ERROR;
    }
  if (status)
    {
      gnutls_datum_t out = { NULL, 0 };
      if (gnutls_certificate_verification_status_print (
            status, GNUTLS_CRT_X509, &out, 0) == 0)
        {
          snprintf (ss->why, sizeof ss->why, "client certificate: %s",
                    (char *) out.data);
          gnutls_free (out.data);
        }
      else
        snprintf (ss->why, sizeof ss->why, "client certificate not "
                  "trusted");
      return GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR;
    }
  return 0;
}

static int
x509_load (struct nbd_srv_tls *t, const char *dir)
{
  char ca[4096], crl[4096], cert[4096], key[4096];
  int r;

  snprintf (ca, sizeof ca, "%s/ca-cert.pem", dir);
  snprintf (crl, sizeof crl, "%s/ca-crl.pem", dir);
  snprintf (cert, sizeof cert, "%s/server-cert.pem", dir);
  snprintf (key, sizeof key, "%s/server-key.pem", dir);
  {
    const char *need[] = { ca, cert, key };
    for (size_t i = 0; i < 3; i++)
      if (access (need[i], R_OK) < 0)
        return vbk_errno (-errno, "tls: %s", need[i]);
  }

  r = gnutls_certificate_allocate_credentials (&t->x509);
  if (r < 0)
    return vbk_errno (-ENOMEM, "tls: %s", gnutls_strerror (r));
  r = gnutls_certificate_set_x509_trust_file (t->x509, ca,
                                              GNUTLS_X509_FMT_PEM);
  if (r < 0)
    return vbk_errno (-EINVAL, "tls: %s: %s", ca, gnutls_strerror (r));
  if (r == 0)
    return vbk_errno (-EINVAL, "tls: %s: no CA certificate", ca);
  if (access (crl, R_OK) == 0)
    {
      r = gnutls_certificate_set_x509_crl_file (t->x509, crl,
                                                GNUTLS_X509_FMT_PEM);
      if (r < 0)
        return vbk_errno (-EINVAL, "tls: %s: %s", crl, gnutls_strerror (r));
    }
  r = gnutls_certificate_set_x509_key_file (t->x509, cert, key,
                                            GNUTLS_X509_FMT_PEM);
  if (r < 0)
    return vbk_errno (-EINVAL, "tls: %s, %s: %s", cert, key,
                      gnutls_strerror (r));
  gnutls_certificate_set_verify_function (t->x509, verify_client);
  return 0;
}

/* ---- Credentials -------------------------------------------------------- */

/* Compiles PRIO.  With PSK keys it must allow a PSK key exchange (else
 * every PSK client would fail its handshake, with no hint why). */
static int
priority_load (struct nbd_srv_tls *t, const char *prio)
{
  const char *where = NULL;
  const unsigned *kx = NULL;
  gnutls_priority_t pc = NULL;
  int r, n;
  bool psk = false;

  r = gnutls_priority_init (&pc, prio, &where);
  if (r == GNUTLS_E_INVALID_REQUEST && where)
    return vbk_errno (-EINVAL, "tls: priority \"%s\": not understood at "
                      "\"%s\"", prio, where);
  if (r < 0)
    return vbk_errno (-EINVAL, "tls: priority \"%s\": %s", prio,
                      gnutls_strerror (r));
  t->prio = pc;
  if (!t->psk)
    return 0;
  n = gnutls_priority_kx_list (t->prio, &kx);
  for (int i = 0; i < n; i++)
    if (kx[i] == GNUTLS_KX_PSK || kx[i] == GNUTLS_KX_ECDHE_PSK
        || kx[i] == GNUTLS_KX_DHE_PSK)
      psk = true;
  if (!psk)
    return vbk_errno (-EINVAL, "tls: priority \"%s\": no PSK key exchange "
                      "(add +ECDHE-PSK:+DHE-PSK:+PSK) but PSK keys are given",
                      prio);
  return 0;
}

int
nbd_srv_tls_new (const struct nbd_srv_tls_opts *opts,
                 struct nbd_srv_tls **out)
{
  struct nbd_srv_tls *t;
  int r;

  *out = NULL;
  if (!opts->cert_dir && !opts->psk_file)
    return vbk_errno (-EINVAL, "tls: neither certificates nor a PSK file "
                      "given (--tls-certificates DIR, --tls-psk FILE)");
  r = gnutls_global_init ();
  if (r < 0)
    return vbk_errno (-EPROTO, "tls: %s", gnutls_strerror (r));
  t = calloc (1, sizeof *t);
  if (!t)
    {
      gnutls_global_deinit ();
      return vbk_errno (-ENOMEM, "tls");
    }
  t->verify_peer = opts->verify_peer;
  if (opts->cert_dir && (r = x509_load (t, opts->cert_dir)) < 0)
    goto fail;
  if (opts->psk_file)
    {
      if ((r = psk_load (t, opts->psk_file)) < 0)
        goto fail;
      r = gnutls_psk_allocate_server_credentials (&t->psk);
      if (r < 0)
        {
          r = vbk_errno (-ENOMEM, "tls: %s", gnutls_strerror (r));
          goto fail;
        }
      gnutls_psk_set_server_credentials_function (t->psk, psk_lookup);
    }
  if ((r = priority_load (t, opts->priority ? opts->priority
                                            : NBD_SRV_TLS_PRIORITY)) < 0)
    goto fail;
  *out = t;
  return 0;

 fail:
  nbd_srv_tls_free (t);
  return r;
}

void
nbd_srv_tls_free (struct nbd_srv_tls *t)
{
  if (!t)
    return;
  if (t->x509)
    gnutls_certificate_free_credentials (t->x509);
  if (t->psk)
    gnutls_psk_free_server_credentials (t->psk);
  if (t->prio)
    gnutls_priority_deinit (t->prio);
  for (size_t i = 0; i < t->nkeys; i++)
    {
      free (t->keys[i].identity);
      explicit_bzero (t->keys[i].key, t->keys[i].len);
      free (t->keys[i].key);
    }
  free (t->keys);
  free (t);
  gnutls_global_deinit ();
}

size_t
nbd_srv_tls_psk_count (const struct nbd_srv_tls *t)
{
  return t ? t->nkeys : 0;
}

/* ---- Sessions ----------------------------------------------------------- */

/* GnuTLS's transport: never blocking, errors in errno (thread-local).
 * After the handshake reads come from ibuf, refilled with one recv of
 * what the socket has, and records go into obuf (flush_out sends
 * them). */
static ssize_t
transport_pull (gnutls_transport_ptr_t p, void *buf, size_t len)
{
  struct nbd_srv_tls_session *ss = p;
  ssize_t n;

  if (!ss->ibuf)
    return recv (ss->fd, buf, len, MSG_DONTWAIT);
  if (ss->pull_end)
    {
      /* GnuTLS reads one record that we hand it, no more. */
      if (ss->ipos >= ss->pull_end)
        {
          errno = EAGAIN;
          return -1;
        }
      if (len > ss->pull_end - ss->ipos)
        len = ss->pull_end - ss->ipos;
    }
  if (ss->ipos == ss->ilen)
    {
      if (len >= IBUF_SIZE)
        return recv (ss->fd, buf, len, MSG_DONTWAIT);
      n = recv (ss->fd, ss->ibuf, IBUF_SIZE, MSG_DONTWAIT);
      if (n <= 0)
        return n;
      ss->ipos = 0;
      ss->ilen = (size_t) n;
    }
  n = (ssize_t) (ss->ilen - ss->ipos < len ? ss->ilen - ss->ipos : len);
  memcpy (buf, ss->ibuf + ss->ipos, (size_t) n);
  ss->ipos += (size_t) n;
  return n;
}

static ssize_t
transport_push (gnutls_transport_ptr_t p, const giovec_t *iov, int n)
{
  struct nbd_srv_tls_session *ss = p;
  struct msghdr msg = { .msg_iov = (struct iovec *) iov, .msg_iovlen = n };
  size_t total = 0;
  int i;

  if (!ss->obuf)
    return sendmsg (ss->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  for (i = 0; i < n; i++)
    total += iov[i].iov_len;
  if (ss->olen + total > ss->ocap)
    {
      /* Sends leave room for their records; only what GnuTLS sends on
       * its own (a TLS 1.3 key update answered while receiving) can
       * come here with the buffer full. */
      if (ss->opos > 0)
        {
          memmove (ss->obuf, ss->obuf + ss->opos, ss->olen - ss->opos);
          ss->olen -= ss->opos;
          ss->opos = 0;
        }
      if (ss->olen + total > ss->ocap)
        {
          unsigned char *b = realloc (ss->obuf, ss->olen + total);
          if (!b)
            {
              errno = ENOMEM;
              return -1;
            }
          ss->obuf = b;
          ss->ocap = ss->olen + total;
        }
    }
  for (i = 0; i < n; i++)
    {
      memcpy (ss->obuf + ss->olen, iov[i].iov_base, iov[i].iov_len);
      ss->olen += iov[i].iov_len;
    }
  return (ssize_t) total;
}

static int
transport_pull_timeout (gnutls_transport_ptr_t p, unsigned ms)
{
  struct nbd_srv_tls_session *ss = p;
  struct pollfd pf = { .fd = ss->fd, .events = POLLIN };

  if (ss->ipos < ss->ilen)
    return 1;
  return poll (&pf, 1, ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : (int) ms);
}

/* Sends what obuf holds, never blocking.  Returns 0 (all sent) or
 * -errno (-EAGAIN: the socket is full). */
static int
flush_out (struct nbd_srv_tls_session *ss)
{
  while (ss->opos < ss->olen)
    {
      ssize_t w = send (ss->fd, ss->obuf + ss->opos, ss->olen - ss->opos,
                        MSG_DONTWAIT | MSG_NOSIGNAL);
      if (w < 0)
        {
          if (errno == EINTR)
            continue;
          if (errno == EAGAIN || errno == EWOULDBLOCK)
            return -EAGAIN;
          return errno == ECONNRESET ? -ECONNRESET : -EPIPE;
        }
      ss->opos += (size_t) w;
    }
  ss->opos = ss->olen = 0;
  return 0;
}

/* After the handshake: who the client is. */
static int
peer_identity (struct nbd_srv_tls_session *ss)
{
  gnutls_credentials_type_t kind = gnutls_auth_get_type (ss->s);
  const gnutls_datum_t *certs;
  gnutls_x509_crt_t crt;
  gnutls_datum_t dn = { NULL, 0 };
  char cn[256];
  size_t cnlen = sizeof cn;
  unsigned n = 0;
  int r;

  if (kind == GNUTLS_CRD_PSK)
    {
      const char *u = gnutls_psk_server_get_username (ss->s);
      if (u && *u && !(ss->identity = strdup (u)))
        return -ENOMEM;
      return 0;
    }
  if (kind != GNUTLS_CRD_CERTIFICATE)
    return 0;
  certs = gnutls_certificate_get_peers (ss->s, &n);
  if (!certs || n == 0)
    return 0;                   /* anonymous: no client certificate */
  if (gnutls_x509_crt_init (&crt) < 0)
    return -ENOMEM;
  r = gnutls_x509_crt_import (crt, &certs[0], GNUTLS_X509_FMT_DER);
  if (r == 0)
    r = gnutls_x509_crt_get_dn3 (crt, &dn, 0);
  if (r == 0)
    {
      ss->subject = strndup ((char *) dn.data, dn.size);
      gnutls_free (dn.data);
      if (gnutls_x509_crt_get_dn_by_oid (crt, GNUTLS_OID_X520_COMMON_NAME,
                                         0, 0, cn, &cnlen) == 0)
        ss->identity = strdup (cn);
      else if (ss->subject)
        ss->identity = strdup (ss->subject);
    }
  gnutls_x509_crt_deinit (crt);
  if (r < 0)
    return vbk_errno (-EPROTO, "tls: client certificate: %s",
                      gnutls_strerror (r));
  if (!ss->subject || !ss->identity)
    return -ENOMEM;
  return 0;
}

static int
handshake_errno (struct nbd_srv_tls_session *ss, int r)
{
  /* Our callbacks refused (a certificate, an unknown identity). */
  if (ss->why[0])
    return -EACCES;
  /* A known PSK identity and then a failed binder (TLS 1.3: "illegal
   * parameter") or Finished MAC (TLS 1.2: "decryption failed"): the
   * client's key is not the one we have. */
  if (ss->psk_user && (r == GNUTLS_E_RECEIVED_ILLEGAL_PARAMETER
                       || r == GNUTLS_E_ILLEGAL_PARAMETER
                       || r == GNUTLS_E_DECRYPTION_FAILED))
    {
      snprintf (ss->why, sizeof ss->why, "wrong key for PSK identity '%s'",
                ss->psk_user);
      return -EACCES;
    }
  switch (r)
    {
    case GNUTLS_E_CERTIFICATE_ERROR:
    case GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR:
    case GNUTLS_E_CERTIFICATE_REQUIRED:
    case GNUTLS_E_NO_CERTIFICATE_FOUND:
    case GNUTLS_E_INSUFFICIENT_CREDENTIALS:
      return -EACCES;
    case GNUTLS_E_PREMATURE_TERMINATION:
    case GNUTLS_E_PULL_ERROR:
    case GNUTLS_E_PUSH_ERROR:
      return -ECONNRESET;
    case GNUTLS_E_MEMORY_ERROR:
      return -ENOMEM;
    default:
      return -EPROTO;
    }
}

int
nbd_srv_tls_session_new (struct nbd_srv_tls *t, int fd, int timeout_ms,
                         struct nbd_srv_tls_session **out)
{
  struct nbd_srv_tls_session *ss;
  uint64_t deadline = now_ms () + (timeout_ms > 0 ? timeout_ms : 0);
  int r, err = 0;

  *out = NULL;
  ss = calloc (1, sizeof *ss);
  if (!ss)
    return vbk_errno (-ENOMEM, "tls: session");
  ss->t = t;
  ss->fd = fd;
  pthread_mutex_init (&ss->io_lock, NULL);
  r = gnutls_init (&ss->s, GNUTLS_SERVER | GNUTLS_NONBLOCK);
  if (r < 0)
    {
      free (ss);
      return vbk_errno (-ENOMEM, "tls: %s", gnutls_strerror (r));
    }
  gnutls_session_set_ptr (ss->s, ss);
  r = gnutls_priority_set (ss->s, t->prio);
  if (r == 0 && t->x509)
    {
      r = gnutls_credentials_set (ss->s, GNUTLS_CRD_CERTIFICATE, t->x509);
      gnutls_certificate_server_set_request (ss->s, t->verify_peer
                                            ? GNUTLS_CERT_REQUIRE
                                            : GNUTLS_CERT_REQUEST);
    }
  if (r == 0 && t->psk)
    r = gnutls_credentials_set (ss->s, GNUTLS_CRD_PSK, t->psk);
  if (r < 0)
    {
      err = vbk_errno (-EPROTO, "tls: %s", gnutls_strerror (r));
      goto fail;
    }
  gnutls_transport_set_ptr (ss->s, ss);
  gnutls_transport_set_pull_function (ss->s, transport_pull);
  gnutls_transport_set_vec_push_function (ss->s, transport_push);
  gnutls_transport_set_pull_timeout_function (ss->s, transport_pull_timeout);

  for (;;)
    {
      uint64_t now = now_ms ();
      struct pollfd p = { .fd = fd };

      r = gnutls_handshake (ss->s);
      if (r == 0)
        break;
      if (r != GNUTLS_E_AGAIN && r != GNUTLS_E_INTERRUPTED
          && gnutls_error_is_fatal (r))
        {
          const char *alert = "";
          if (r == GNUTLS_E_FATAL_ALERT_RECEIVED)
            alert = gnutls_alert_get_name (gnutls_alert_get (ss->s));
          int e = handshake_errno (ss, r);
          err = vbk_errno (e, "tls: handshake: %s%s%s%s%s",
                           gnutls_strerror (r), *alert ? ": " : "", alert,
                           ss->why[0] ? ": " : "", ss->why);
          break;
        }
      if (now >= deadline)
        {
          err = vbk_errno (-ETIMEDOUT, "tls: handshake: no progress for "
                           "%d ms", timeout_ms);
          break;
        }
      if (r != GNUTLS_E_AGAIN && r != GNUTLS_E_INTERRUPTED)
        continue;               /* a warning alert: go on */
      p.events = gnutls_record_get_direction (ss->s) ? POLLOUT : POLLIN;
      if (poll (&p, 1, (int) (deadline - now)) < 0 && errno != EINTR)
        {
          err = vbk_errno (-errno, "tls: poll");
          break;
        }
    }
  if (err)
    goto fail;

  r = peer_identity (ss);
  if (r < 0)
    {
      err = r == -ENOMEM ? vbk_errno (r, "tls: identity") : r;
      goto fail;
    }
  {
    const char *proto = gnutls_protocol_get_name (
                          gnutls_protocol_get_version (ss->s));
    const char *cipher = gnutls_cipher_get_name (gnutls_cipher_get (ss->s));
    snprintf (ss->desc, sizeof ss->desc, "%s %s %s", proto ? proto : "?",
              cipher ? cipher : "?",
              gnutls_auth_get_type (ss->s) == GNUTLS_CRD_PSK ? "psk"
              : "x509");
  }
  ss->smax = gnutls_record_get_max_size (ss->s);
  if (ss->smax == 0 || ss->smax > 16384)
    ss->smax = 16384;
  /* From now on through our buffers: nothing is read ahead yet (GnuTLS
   * read the handshake exactly) and nothing waits to be sent. */
  ss->ibuf = malloc (IBUF_SIZE);
  ss->obuf = malloc (OBUF_SIZE);
  if (!ss->ibuf || !ss->obuf)
    {
      err = vbk_errno (-ENOMEM, "tls: session buffers");
      goto fail;
    }
  ss->ocap = OBUF_SIZE;
  ss->key_records = REC_KEY_RECORDS;
  rec_load (ss, 1);
  rec_load (ss, 0);
  rec_pair (ss);
  *out = ss;
  return 0;

 fail:
  gnutls_deinit (ss->s);
  pthread_mutex_destroy (&ss->io_lock);
  free (ss->identity);
  free (ss->subject);
  free (ss->ibuf);
  free (ss->obuf);
  free (ss);
  return err;
}

void
nbd_srv_tls_session_free (struct nbd_srv_tls_session *s)
{
  if (!s)
    return;
  gnutls_deinit (s->s);
  pthread_mutex_destroy (&s->io_lock);
  if (s->rd.aead)
    gnutls_aead_cipher_deinit (s->rd.aead);
  if (s->wr.aead)
    gnutls_aead_cipher_deinit (s->wr.aead);
  free (s->pbuf);
  free (s->identity);
  free (s->subject);
  free (s->sbuf);
  free (s->ibuf);
  free (s->obuf);
  free (s);
}

static ssize_t
io_errno (struct nbd_srv_tls_session *s, ssize_t r)
{
  switch (r)
    {
    case GNUTLS_E_AGAIN:
      return -EAGAIN;
    case GNUTLS_E_PREMATURE_TERMINATION:
    case GNUTLS_E_PULL_ERROR:
    case GNUTLS_E_UNEXPECTED_PACKET_LENGTH:  /* EOF inside a record */
      return -ECONNRESET;
    case GNUTLS_E_PUSH_ERROR:
      return -EPIPE;
    case GNUTLS_E_MEMORY_ERROR:
      return -ENOMEM;
    default:
      return -EPROTO;
    }
}

/* Whether ibuf starts with a whole record (GnuTLS takes records from it
 * whole: a record's header is at ipos). */
static bool
whole_record_ahead (const struct nbd_srv_tls_session *s)
{
  size_t have = s->ilen - s->ipos;

  if (have < 5)
    return false;
  return have >= 5 + ((size_t) s->ibuf[s->ipos + 3] << 8
                      | s->ibuf[s->ipos + 4]);
}

/* One gnutls_record_recv, warnings and interruptions retried (io_lock
 * held). */
static ssize_t
recv_record (struct nbd_srv_tls_session *s, void *buf, size_t len)
{
  ssize_t r;

  for (;;)
    {
      r = gnutls_record_recv (s->s, buf, len);
      if (r >= 0 || r == GNUTLS_E_AGAIN)
        return r;
      if (r == GNUTLS_E_INTERRUPTED)
        continue;
      if (r == GNUTLS_E_REHANDSHAKE)
        return r;               /* no renegotiation */
      if (!gnutls_error_is_fatal (r))
        continue;               /* a warning alert, a TLS 1.3 ticket */
      return r;
    }
}

/* ---- Records ------------------------------------------------------------
 *
 * With TLS 1.3 and a 16-byte tag (AES-GCM, ChaCha20-Poly1305) we seal
 * and open application data records ourselves, with GnuTLS's AEAD
 * functions and the keys, IVs and sequence numbers GnuTLS hands out for
 * offloading (gnutls_record_get_state, as kernel TLS uses them): a
 * record is decrypted from the read-ahead buffer straight into the
 * caller's buffer (a request's payload lands where it belongs, with no
 * copy of ciphertext into GnuTLS and of plaintext out of it), and a
 * reply is encrypted from the caller's buffer straight into the output
 * buffer.  Every other record (a KeyUpdate, an alert, anything odd) goes
 * to GnuTLS: the sequence numbers are given back to it, transport_pull
 * lets it read that one record and no more, and its state (new keys
 * after a KeyUpdate) is taken again afterwards.  Before anything else
 * GnuTLS sends (its answer to a KeyUpdate, close_notify, our own key
 * update after REC_KEY_RECORDS records) it gets the write sequence
 * number.  TLS 1.2 and other ciphers stay with GnuTLS's record layer. */

static void
be64_put (unsigned char *p, uint64_t v)
{
  for (int i = 7; i >= 0; i--, v >>= 8)
    p[i] = (unsigned char) v;
}

static uint64_t
be64_get (const unsigned char *p)
{
  uint64_t v = 0;

  for (int i = 0; i < 8; i++)
    v = v << 8 | p[i];
  return v;
}

/* The per-record nonce: the IV with the sequence number XORed into its
 * last 8 bytes (RFC 8446 5.3). */
static void
rec_nonce (const struct rec_state *st, unsigned char nonce[12])
{
  memcpy (nonce, st->iv, 12);
  for (int i = 0; i < 8; i++)
    nonce[4 + i] ^= (unsigned char) (st->seq >> (56 - 8 * i));
}

/* Takes one direction's state from GnuTLS (READ: 1 receive, 0 send);
 * leaves it off where our record layer does not apply. */
static void
rec_load (struct nbd_srv_tls_session *s, unsigned read)
{
  struct rec_state *st = read ? &s->rd : &s->wr;
  gnutls_cipher_algorithm_t c = gnutls_cipher_get (s->s);
  gnutls_datum_t mac = { NULL, 0 }, iv = { NULL, 0 }, key = { NULL, 0 };
  unsigned char seq[8];

  st->on = false;
  if (st->aead)
    gnutls_aead_cipher_deinit (st->aead);
  st->aead = NULL;
  if (gnutls_protocol_get_version (s->s) != GNUTLS_TLS1_3
      || gnutls_cipher_get_tag_size (c) != REC_TAG)
    return;
  if (gnutls_record_get_state (s->s, read, &mac, &iv, &key, seq) < 0
      || iv.size != sizeof st->iv || !key.data)
    return;
  if (gnutls_aead_cipher_init (&st->aead, c, &key) < 0)
    {
      st->aead = NULL;
      return;
    }
  memcpy (st->iv, iv.data, sizeof st->iv);
  st->seq = be64_get (seq);
  st->on = true;
}

/* Gives GnuTLS our sequence numbers before it reads or sends a record. */
static void
rec_sync (struct nbd_srv_tls_session *s)
{
  unsigned char seq[8];

  if (s->rd.on)
    {
      be64_put (seq, s->rd.seq);
      gnutls_record_set_state (s->s, 1, seq);
    }
  if (s->wr.on)
    {
      be64_put (seq, s->wr.seq);
      gnutls_record_set_state (s->s, 0, seq);
    }
}

/* Both directions through our record layer, or neither: GnuTLS
 * reading for itself may send (a KeyUpdate answered), and needs the
 * write sequence number then. */
static void
rec_pair (struct nbd_srv_tls_session *s)
{
  if (s->rd.on == s->wr.on)
    return;
  rec_sync (s);
  s->rd.on = s->wr.on = false;
}

/* Takes the state back after GnuTLS read or sent a record. */
static void
rec_reload (struct nbd_srv_tls_session *s)
{
  if (s->rd.on)
    rec_load (s, 1);
  if (s->wr.on)
    rec_load (s, 0);
  rec_pair (s);
}

/* A receive error: the message, and the same result for every later
 * call (the stream cannot go on). */
static ssize_t
rec_fail (struct nbd_srv_tls_session *s, int err, const char *why)
{
  s->rerr = err;
  snprintf (s->why, sizeof s->why, "%s", why);
  return vbk_errno (err, "tls: receive: %s", why);
}

/* The record at ipos, whole in ibuf, is not application data we open
 * ourselves: GnuTLS reads it (and no more), into BUF if it is data. */
static ssize_t
rec_to_gnutls (struct nbd_srv_tls_session *s, void *buf, size_t len)
{
  const unsigned char *h = s->ibuf + s->ipos;
  ssize_t r;

  s->pull_end = s->ipos + REC_HEADER + ((size_t) h[3] << 8 | h[4]);
  rec_sync (s);
  r = recv_record (s, buf, len);
  s->pull_end = 0;
  rec_reload (s);
  return r;
}

/* nbd_srv_tls_recv through our record layer (io_lock held). */
static ssize_t
rec_recv (struct nbd_srv_tls_session *s, unsigned char *buf, size_t len)
{
  size_t got = 0;
  bool read_once = false;
  ssize_t r;

  if (s->rerr)
    return s->rerr > 0 ? 0 : vbk_errno (s->rerr, "tls: receive: %s",
                                        s->why);
  if (gnutls_record_check_pending (s->s) > 0)
    {
      /* Data GnuTLS decrypted (with a record it read for us) first. */
      r = recv_record (s, buf, len);
      if (r > 0)
        return r;
    }
  while (got < len)
    {
      unsigned char nonce[12], *h, *dest;
      size_t clen, plen, before;

      if (s->ppos < s->plen)
        {
          size_t k = s->plen - s->ppos < len - got ? s->plen - s->ppos
                                                   : len - got;
          memcpy (buf + got, s->pbuf + s->ppos, k);
          s->ppos += k;
          got += k;
          continue;
        }
      if (s->ilen - s->ipos >= REC_HEADER)
        {
          /* After a TLS 1.3 handshake every record is sealed: type 23
           * outside (RFC 8446 5.1), at most REC_CIPHERTEXT_MAX. */
          h = s->ibuf + s->ipos;
          clen = (size_t) h[3] << 8 | h[4];
          if (h[0] != CT_APPLICATION || clen <= REC_TAG
              || clen > REC_CIPHERTEXT_MAX)
            {
              char why[80];
              snprintf (why, sizeof why, "a record of type %u and %zu "
                        "bytes after the handshake", h[0], clen);
              return got ? (ssize_t) got : rec_fail (s, -EPROTO, why);
            }
        }
      if (!whole_record_ahead (s))
        {
          ssize_t n;

          /* Every whole record read, at most one system call. */
          if (got || read_once)
            break;
          if (s->ipos > 0)
            {
              memmove (s->ibuf, s->ibuf + s->ipos, s->ilen - s->ipos);
              s->ilen -= s->ipos;
              s->ipos = 0;
            }
          n = recv (s->fd, s->ibuf + s->ilen, IBUF_SIZE - s->ilen,
                    MSG_DONTWAIT);
          if (n < 0 && errno == EINTR)
            continue;
          read_once = true;
          if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
          if (n < 0)
            return rec_fail (s, -ECONNRESET, strerror (errno));
          if (n == 0)
            return rec_fail (s, -ECONNRESET, s->ilen > s->ipos
                             ? "the connection ended in the middle of a "
                               "record"
                             : "the connection ended without close_notify");
          s->ilen += (size_t) n;
          continue;
        }
      h = s->ibuf + s->ipos;
      clen = (size_t) h[3] << 8 | h[4];
      before = s->ipos;
      plen = clen - REC_TAG;
      if (len - got >= plen)
        dest = buf + got;
      else
        {
          if (!s->pbuf && !(s->pbuf = malloc (REC_CIPHERTEXT_MAX)))
            return vbk_errno (-ENOMEM, "tls: receive");
          dest = s->pbuf;
        }
      rec_nonce (&s->rd, nonce);
      if (gnutls_aead_cipher_decrypt (s->rd.aead, nonce, sizeof nonce, h,
                                      REC_HEADER, REC_TAG, h + REC_HEADER,
                                      clen, dest, &plen) < 0)
        return rec_fail (s, -EPROTO, "a record failed authentication "
                         "(bad_record_mac)");
      /* The content type is the last byte that is not padding. */
      while (plen > 0 && dest[plen - 1] == 0)
        plen--;
      if (plen == 0)
        return rec_fail (s, -EPROTO, "a record without a content type");
      if (dest[plen - 1] != CT_APPLICATION)
        goto gnutls;
      plen--;
      s->rd.seq++;
      s->ipos += REC_HEADER + clen;
      if (dest == s->pbuf)
        {
          s->ppos = 0;
          s->plen = plen;
        }
      else
        got += plen;
      continue;

    gnutls:
      r = rec_to_gnutls (s, buf + got, len - got);
      if (r > 0)
        got += (size_t) r;
      else if (r == 0)
        {
          s->rerr = 1;          /* close_notify */
          break;
        }
      else if (r != GNUTLS_E_AGAIN || s->ipos == before)
        {
          char why[160];
          snprintf (why, sizeof why, "%s (%d)", r == GNUTLS_E_AGAIN
                    ? "GnuTLS did not take a record" : gnutls_strerror ((int) r),
                    (int) r);
          rec_fail (s, r == GNUTLS_E_REHANDSHAKE || r == GNUTLS_E_AGAIN
                    ? -EPROTO : (int) io_errno (s, r), why);
          if (got)
            break;
          return s->rerr;
        }
    }
  if (got)
    return (ssize_t) got;
  return s->rerr > 0 ? 0 : -EAGAIN;
}

/* Seals LEN bytes (at most a record's) into obuf as one record.
 * Returns LEN or -errno. */
static ssize_t
rec_send (struct nbd_srv_tls_session *s, const void *data, size_t len)
{
  static const unsigned char type = CT_APPLICATION;
  size_t clen = len + 1 + REC_TAG, need = REC_HEADER + clen;
  unsigned char nonce[12], *p;
  giovec_t auth, iov[2];

  if (s->olen + need > s->ocap)
    {
      unsigned char *b;
      if (s->opos > 0)
        {
          memmove (s->obuf, s->obuf + s->opos, s->olen - s->opos);
          s->olen -= s->opos;
          s->opos = 0;
        }
      if (s->olen + need > s->ocap)
        {
          if (!(b = realloc (s->obuf, s->olen + need)))
            return vbk_errno (-ENOMEM, "tls: send");
          s->obuf = b;
          s->ocap = s->olen + need;
        }
    }
  p = s->obuf + s->olen;
  p[0] = CT_APPLICATION;
  p[1] = 3;
  p[2] = 3;
  p[3] = (unsigned char) (clen >> 8);
  p[4] = (unsigned char) clen;
  auth = (giovec_t) { p, REC_HEADER };
  iov[0] = (giovec_t) { (void *) data, len };
  iov[1] = (giovec_t) { (void *) &type, 1 };
  rec_nonce (&s->wr, nonce);
  if (gnutls_aead_cipher_encryptv (s->wr.aead, nonce, sizeof nonce, &auth,
                                   1, REC_TAG, iov, 2, p + REC_HEADER,
                                   &clen) < 0 || clen != len + 1 + REC_TAG)
    return vbk_errno (-EPROTO, "tls: send: sealing a record failed");
  s->wr.seq++;
  s->olen += need;
  if (s->wr.seq >= s->key_records)
    {
      /* Time for new keys: GnuTLS sends the KeyUpdate (into obuf). */
      int r;
      rec_sync (s);
      r = gnutls_session_key_update (s->s, 0);
      rec_reload (s);
      if (r < 0)
        return vbk_errno (-EPROTO, "tls: send: key update: %s",
                          gnutls_strerror (r));
    }
  return (ssize_t) len;
}

ssize_t
nbd_srv_tls_recv (struct nbd_srv_tls_session *s, void *buf, size_t len)
{
  ssize_t r;

  pthread_mutex_lock (&s->io_lock);
  if (s->rd.on || s->rerr)
    {
      r = rec_recv (s, buf, len);
      if (s->olen > s->opos && !s->pending)
        (void) flush_out (s);
      pthread_mutex_unlock (&s->io_lock);
      return r;
    }
  r = recv_record (s, buf, len);
  if (r > 0)
    {
      /* More records already here (decrypted, or whole in ibuf): take
       * them too, without another system call.  An error stays for the
       * next call. */
      size_t got = (size_t) r;
      while (got < len && (gnutls_record_check_pending (s->s) > 0
                           || whole_record_ahead (s)))
        {
          r = recv_record (s, (char *) buf + got, len - got);
          if (r <= 0)
            break;
          got += (size_t) r;
        }
      r = (ssize_t) got;
    }
  /* What GnuTLS answered on its own while receiving (a key update)
   * goes now if it can; else with the next send. */
  if (s->olen > s->opos && !s->pending)
    (void) flush_out (s);
  pthread_mutex_unlock (&s->io_lock);
  if (r >= 0)
    return r;
  if (r == GNUTLS_E_AGAIN)
    return -EAGAIN;
  if (r == GNUTLS_E_REHANDSHAKE)
    return vbk_errno (-EPROTO, "tls: receive: the client asked for a "
                      "renegotiation (refused)");
  return vbk_errno ((int) io_errno (s, r), "tls: receive: %s (%d)",
                    gnutls_strerror ((int) r), (int) r);
}

size_t
nbd_srv_tls_pending (struct nbd_srv_tls_session *s)
{
  size_t n;

  pthread_mutex_lock (&s->io_lock);
  n = gnutls_record_check_pending (s->s) + (s->plen - s->ppos);
  if (s->ibuf && whole_record_ahead (s))
    n += s->ilen - s->ipos;
  pthread_mutex_unlock (&s->io_lock);
  return n;
}

static ssize_t
send_locked (struct nbd_srv_tls_session *s, const struct iovec *iov, int n)
{
  size_t taken = 0, off = 0;
  int i = 0, r;

  if (s->opos < s->olen)
    {
      /* Records of an earlier call (or GnuTLS's own) go first. */
      r = flush_out (s);
      if (r < 0)
        return r;
      if (s->pending)
        {
          /* That call's bytes are the caller's next ones. */
          taken = s->pending;
          s->pending = 0;
          return (ssize_t) taken;
        }
    }
  while (taken < SEND_BATCH)
    {
      const void *data;
      size_t len = 0, rest;
      ssize_t w;

      while (i < n && off == iov[i].iov_len)
        i++, off = 0;
      if (i == n)
        break;
      rest = iov[i].iov_len - off;
      if (i + 1 == n || rest >= s->smax)
        {
          data = (const char *) iov[i].iov_base + off;
          len = rest < s->smax ? rest : s->smax;
        }
      else
        {
          /* Small pieces: one record of up to smax bytes. */
          size_t o = off;
          if (!s->sbuf && !(s->sbuf = malloc (s->smax)))
            return taken ? (ssize_t) taken : -ENOMEM;
          for (int k = i; k < n && len < s->smax; k++, o = 0)
            {
              size_t m = iov[k].iov_len - o;
              if (m > s->smax - len)
                m = s->smax - len;
              if (m == 0)
                continue;       /* an empty piece may have a NULL base */
              memcpy (s->sbuf + len, (const char *) iov[k].iov_base + o, m);
              len += m;
            }
          data = s->sbuf;
        }
      if (s->wr.on)
        {
          w = rec_send (s, data, len);
          if (w < 0)
            return w;
        }
      else
        do
          w = gnutls_record_send (s->s, data, len);
        while (w == GNUTLS_E_INTERRUPTED);
      if (w < 0)
        {
          /* The push into obuf does not fail: a real error.  Records
           * already made are lost with the connection. */
          return io_errno (s, w);
        }
      taken += (size_t) w;
      /* Advance (i, off) past W bytes. */
      while (w > 0)
        {
          size_t m = iov[i].iov_len - off;
          if ((size_t) w < m)
            {
              off += (size_t) w;
              break;
            }
          w -= (ssize_t) m;
          i++, off = 0;
        }
    }
  if (taken == 0)
    return 0;
  r = flush_out (s);
  if (r == -EAGAIN)
    {
      s->pending = taken;
      return -EAGAIN;
    }
  if (r < 0)
    return r;
  return (ssize_t) taken;
}

ssize_t
nbd_srv_tls_send (struct nbd_srv_tls_session *s, const struct iovec *iov,
                  int n)
{
  ssize_t r;

  pthread_mutex_lock (&s->io_lock);
  r = send_locked (s, iov, n);
  pthread_mutex_unlock (&s->io_lock);
  return r;
}

int
nbd_srv_tls_send_all (struct nbd_srv_tls_session *s, const struct iovec *iov0,
                      int n, int timeout_ms)
{
  struct iovec iov[64];
  int cur = 0;

  if (n > 64)
    return -EINVAL;
  memcpy (iov, iov0, n * sizeof *iov);
  while (cur < n)
    {
      ssize_t r = nbd_srv_tls_send (s, iov + cur, n - cur);
      if (r == -EAGAIN)
        {
          struct pollfd p = { .fd = s->fd, .events = POLLOUT };
          if (poll (&p, 1, timeout_ms) == 0)
            return -ETIMEDOUT;
          continue;
        }
      if (r < 0)
        return (int) r;
      while (cur < n && (size_t) r >= iov[cur].iov_len)
        r -= iov[cur++].iov_len;
      if (cur < n)
        {
          iov[cur].iov_base = (char *) iov[cur].iov_base + r;
          iov[cur].iov_len -= r;
        }
    }
  return 0;
}

void
nbd_srv_tls_set_key_records (struct nbd_srv_tls_session *s, uint64_t n)
{
  pthread_mutex_lock (&s->io_lock);
  s->key_records = n ? n : REC_KEY_RECORDS;
  pthread_mutex_unlock (&s->io_lock);
}

const char *
nbd_srv_tls_identity (const struct nbd_srv_tls_session *s)
{
  return s->identity;
}

const char *
nbd_srv_tls_subject (const struct nbd_srv_tls_session *s)
{
  return s->subject;
}

const char *
nbd_srv_tls_description (const struct nbd_srv_tls_session *s)
{
  return s->desc;
}

int
nbd_srv_tls_bye (struct nbd_srv_tls_session *s, int timeout_ms)
{
  uint64_t deadline = now_ms () + (timeout_ms > 0 ? timeout_ms : 0);
  bool alert = false;
  int r;

  /* Records still in obuf, then the close_notify alert after them. */
  for (;;)
    {
      uint64_t now = now_ms ();
      struct pollfd p = { .fd = s->fd, .events = POLLOUT };

      pthread_mutex_lock (&s->io_lock);
      r = s->obuf ? flush_out (s) : 0;
      if (r == 0 && !alert)
        {
          rec_sync (s);
          r = gnutls_bye (s->s, GNUTLS_SHUT_WR);
          if (r == 0)
            alert = true;
          else if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
            r = -EAGAIN;
          else
            r = (int) io_errno (s, r);
          if (r == 0 && s->obuf)
            r = flush_out (s);
        }
      pthread_mutex_unlock (&s->io_lock);
      if (r == 0 && alert)
        return 0;
      if (r < 0 && r != -EAGAIN)
        return r;
      if (now >= deadline)
        return -ETIMEDOUT;
      if (r == -EAGAIN)
        poll (&p, 1, (int) (deadline - now));
    }
}
