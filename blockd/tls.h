/* SPDX-License-Identifier: MIT
 *
 * tls.h - NBD over TLS for vbk-blockd: credentials, server sessions,
 * the peer's identity.
 *
 * DESIGN: GnuTLS is visible in tls.c alone; the rest of the daemon sees
 * two opaque types.  struct nbd_srv_tls holds the credentials read once
 * at start (X.509 from a folder in QEMU's layout, and/or PSK keys from a
 * file in the "identity:hexkey" format of nbdkit and qemu-nbd); it is
 * read-only afterwards and shared by every connection.  A struct
 * nbd_srv_tls_session is one connection's TLS state after a completed
 * handshake (which has a deadline: a client that stalls cannot hold a
 * thread).  One thread may receive while another sends on the same
 * session (GnuTLS allows exactly that split); two senders or two
 * receivers need the caller's lock.
 */
#ifndef VBK_BLOCKD_TLS_H
#define VBK_BLOCKD_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct nbd_srv_tls;
struct nbd_srv_tls_session;

struct nbd_srv_tls_opts {
  /* A folder with ca-cert.pem, server-cert.pem, server-key.pem (and an
   * optional ca-crl.pem); NULL: no X.509. */
  const char *cert_dir;
  /* "identity:hexkey" lines; NULL: no PSK. */
  const char *psk_file;
  /* X.509: a client must present a certificate signed by the CA.  Without
   * it a certificate is still asked for and, when sent, verified. */
  bool verify_peer;
  /* A GnuTLS priority string (cipher suites, versions, key exchanges);
   * NULL: NBD_SRV_TLS_PRIORITY. */
  const char *priority;
};

/* The default priority: GnuTLS's NORMAL (secure suites and versions
 * only, as the system's policy allows) with the server's order of
 * preference, AES-128-GCM first (with AES-NI the cheapest per byte),
 * then AES-256-GCM, ChaCha20-Poly1305 and AES-CCM; CBC suites left out
 * (so no TLS below 1.2); only key exchanges with forward secrecy: no
 * static RSA key transport, and PSK only together with (EC)DHE
 * (ECDHE-PSK, DHE-PSK; not plain PSK, whose session keys an attacker
 * who later learns the PSK could recompute from a recording). */
#define NBD_SRV_TLS_PRIORITY                                            \
  "NORMAL:%SERVER_PRECEDENCE:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:"    \
  "+CHACHA20-POLY1305:+AES-128-CCM:+AES-256-CCM:-RSA:+ECDHE-PSK:+DHE-PSK"


/* Loads the credentials (at least one of cert_dir and psk_file) and
 * compiles the priority string.
 * Errors: -EINVAL (neither given, a malformed file or key, a priority
 * string GnuTLS refuses, or one without a PSK key exchange while PSK
 * keys are given), -ENOENT (a file is missing), -ENOMEM; the message
 * names the file (and line), or the priority string and where GnuTLS
 * stopped reading it. */
int nbd_srv_tls_new (const struct nbd_srv_tls_opts *opts,
                     struct nbd_srv_tls **out);
/* nbd_srv_tls_free (NULL) is a no-op.  No session may remain. */
void nbd_srv_tls_free (struct nbd_srv_tls *t);
/* How many PSK identities were loaded (for the start-up log). */
size_t nbd_srv_tls_psk_count (const struct nbd_srv_tls *t);

/* Parses one line of a PSK file: "identity:hexkey".  Blank lines and
 * lines starting with '#' give 0 with *IDENTITY = NULL.  On success
 * *IDENTITY and *KEY (KEY_LEN bytes) are malloc'd (caller frees).
 * Errors: -EINVAL with a message (no ':', an empty or over-long
 * identity, a key that is not an even number of hex digits, or is
 * empty), -ENOMEM. */
int nbd_srv_tls_psk_parse_line (const char *line, char **identity,
                                unsigned char **key, size_t *key_len);

/* Runs the server side of a TLS handshake on the connected socket FD,
 * giving up after TIMEOUT_MS in all (a client that sends nothing, or
 * half a handshake, is cut off then).  FD may be blocking or not: the
 * session never blocks on it and never changes its flags.  FD stays the
 * caller's: close it after nbd_srv_tls_session_free.
 * Errors: -ETIMEDOUT, -EACCES (the client's certificate failed
 * verification, was required and missing, or its PSK identity or key is
 * unknown), -ECONNRESET (the client went away), -EPROTO (not TLS, or a
 * TLS error), -ENOMEM; the message says which. */
int nbd_srv_tls_session_new (struct nbd_srv_tls *t, int fd, int timeout_ms,
                             struct nbd_srv_tls_session **out);
/* Frees the session (without a close_notify: see nbd_srv_tls_bye).
 * NULL is a no-op. */
void nbd_srv_tls_session_free (struct nbd_srv_tls_session *s);

/* Receives up to LEN bytes of application data, never blocking: every
 * whole record already read, with at most one system call.
 * Returns the bytes (at least 1), 0 at a clean end (the client's
 * close_notify), or -errno: -EAGAIN (nothing yet: poll the fd for
 * POLLIN, after nbd_srv_tls_pending is 0), -ECONNRESET (the connection
 * ended without close_notify, e.g. in the middle of a record), -EPROTO
 * (a TLS error: a bad record, a fatal alert).  Errors other than
 * -EAGAIN have a message. */
ssize_t nbd_srv_tls_recv (struct nbd_srv_tls_session *s, void *buf,
                          size_t len);
/* Bytes already decrypted and waiting to be received: a caller that
 * polls the fd must read these first (poll does not see them). */
size_t nbd_srv_tls_pending (struct nbd_srv_tls_session *s);

/* Sends the start of the iovec (up to 128 KiB of it) as records (small
 * pieces are packed together) with one system call, never blocking.
 * Returns the bytes of the iovec taken (at least 1), or -errno: -EAGAIN
 * (the socket is full: poll the fd for POLLOUT, then call again with the
 * same bytes at the start of the iovec; the session holds the records
 * made and the call that finishes sending them returns their length),
 * -EPIPE or -ECONNRESET (the peer is gone), -EPROTO, -ENOMEM.  One
 * sender at a time (the caller's lock); one receiver may run at the same
 * time. */
ssize_t nbd_srv_tls_send (struct nbd_srv_tls_session *s,
                          const struct iovec *iov, int n);
/* Sends the whole iovec (at most 64 pieces), waiting for the socket up
 * to TIMEOUT_MS at a time.  Returns 0 or -errno (-ETIMEDOUT, as
 * nbd_srv_tls_send). */
int nbd_srv_tls_send_all (struct nbd_srv_tls_session *s,
                          const struct iovec *iov, int n, int timeout_ms);

/* How many records the session seals with one key before it sends a
 * TLS 1.3 KeyUpdate and goes on with a new one (0: the default, 2^24,
 * within what RFC 8446 5.5 allows AES-GCM).  For tests. */
void nbd_srv_tls_set_key_records (struct nbd_srv_tls_session *s,
                                  uint64_t n);

/* The client's identity: its PSK identity, or the common name (CN) of
 * its certificate's subject; NULL for a client without one (X.509
 * without a client certificate).  Owned by S. */
const char *nbd_srv_tls_identity (const struct nbd_srv_tls_session *s);
/* The certificate's whole subject DN (RFC 4514, "CN=alice,O=vbk"), or
 * NULL (PSK, or no certificate).  Owned by S. */
const char *nbd_srv_tls_subject (const struct nbd_srv_tls_session *s);
/* "TLS1.3 AES-256-GCM x509" or similar, for logs.  Owned by S. */
const char *nbd_srv_tls_description (const struct nbd_srv_tls_session *s);

/* Sends close_notify (without waiting for the client's), giving up after
 * TIMEOUT_MS if the client does not read.  Returns 0 or -errno. */
int nbd_srv_tls_bye (struct nbd_srv_tls_session *s, int timeout_ms);

#endif /* VBK_BLOCKD_TLS_H */
