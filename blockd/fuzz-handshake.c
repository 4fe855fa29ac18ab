/* SPDX-License-Identifier: MIT
 *
 * fuzz-handshake.c - libFuzzer target for the option phase of
 * vbk-blockd: arbitrary option sequences into the real connection and
 * handshake code, and a check of every byte the server answers.
 *
 * DESIGN: one server (nbd_srv_server_new, no listening sockets) over a
 * local store in a temporary directory with three images — "disk"
 * (1 MiB, snapshots s1 and s2), "small" (64 KiB) and "ro" (read-only
 * through an [export ro] setting) — whose exports, and disk@s1, stay
 * open for the whole run.  Each input becomes the client's side of a
 * session in one of two ways, chosen by its first byte: raw bytes after
 * the greeting (bad magic, truncated and oversized options included), or
 * a list of framed options (option byte, 16-bit length, data) that the
 * target wraps in valid headers, so that mutations go into option
 * payloads.  The session goes into a new socketpair and the server's
 * answer is collected (fuzz-feed.h: no thread per input) while
 * nbd_srv_session_run serves the other end on the fuzzing thread, exactly
 * as a connection thread does.  The store (in memory where /dev/shm is),
 * its images and the server are made once per process.
 *
 * The answer is then checked against the session as proto.md ("Fixed
 * newstyle negotiation", "Option types") defines it; any difference
 * aborts, which libFuzzer reports as a crash with the input saved:
 *  - the greeting comes first; unknown client flags end the session;
 *  - every complete option until the negotiation ends gets replies with
 *    the reply magic and its own option number, of the types that option
 *    allows, ending with an ACK (empty) or an error; nothing is sent
 *    unasked and nothing is left unanswered, except that
 *    NBD_OPT_EXPORT_NAME may hang up;
 *  - an ACK to NBD_OPT_INFO or NBD_OPT_GO follows an NBD_INFO_EXPORT;
 *    NBD_INFO_EXPORT and the NBD_OPT_EXPORT_NAME reply give the export's
 *    real size and flags (read-only exactly for "ro" and snapshots), and
 *    a known export named by NBD_OPT_EXPORT_NAME must be served;
 *  - the negotiation ends after NBD_OPT_ABORT, an ACK to NBD_OPT_GO or
 *    NBD_OPT_EXPORT_NAME (later bytes are the transmission phase's).
 * Build: clang -fsanitize=fuzzer,address (tests/fuzz-build.sh).
 */
#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/error.h"
#include "common/log.h"
#include "fuzz-feed.h"
#include "internal.h"
#include "nbd-protocol.h"
#include "snapshot/snapshot.h"

#define DISK_SIZE (1u << 20)
#define SMALL_SIZE (64u << 10)
#define RO_SIZE (128u << 10)

static struct nbd_srv_server *srv;
static struct nbd_srv_export *keep[4];
static struct fuzz_client client;

/* ---- growing byte buffers ---------------------------------------------- */

struct buf {
  uint8_t *p;
  size_t len, cap;
};

static void
buf_add (struct buf *b, const void *data, size_t len)
{
  if (len == 0)
    return;
  if (b->len + len > b->cap)
    {
      size_t cap = b->cap ? b->cap : 4096;
      while (cap < b->len + len)
        cap *= 2;
      b->p = realloc (b->p, cap);
      if (!b->p)
        abort ();
      b->cap = cap;
    }
  memcpy (b->p + b->len, data, len);
  b->len += len;
}

static void
buf_be32 (struct buf *b, uint32_t v)
{
  v = htobe32 (v);
  buf_add (b, &v, 4);
}

static void
buf_be64 (struct buf *b, uint64_t v)
{
  v = htobe64 (v);
  buf_add (b, &v, 8);
}

static uint16_t
be16_at (const uint8_t *p)
{
  return (uint16_t) (p[0] << 8 | p[1]);
}

static uint32_t
be32_at (const uint8_t *p)
{
  return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16
    | (uint32_t) p[2] << 8 | p[3];
}

static uint64_t
be64_at (const uint8_t *p)
{
  return (uint64_t) be32_at (p) << 32 | be32_at (p + 4);
}

/* ---- the client side ----------------------------------------------------- */

/* The server's answers, gathered by the client (fuzz-feed.h). */
static void
gather (void *arg, const void *p, size_t n)
{
  buf_add (arg, p, n);
}

/* Framed mode: after a byte of client flags, records of an option byte
 * (values past 15 are kept: unknown options), a 16-bit length and that
 * many bytes of data (fewer at the end of the input). */
static void
frame (const uint8_t *d, size_t n, struct buf *w)
{
  size_t pos = 1;

  buf_be32 (w, n > 0 ? d[0] & 3 : 3);
  while (pos + 3 <= n)
    {
      uint32_t opt = d[pos];
      size_t len = be16_at (d + pos + 1);
      pos += 3;
      if (len > n - pos)
        len = n - pos;
      buf_be64 (w, NBD_IHAVEOPT);
      buf_be32 (w, opt);
      buf_be32 (w, (uint32_t) len);
      buf_add (w, d + pos, len);
      pos += len;
    }
}

/* ---- the check ----------------------------------------------------------- */

static const uint8_t *check_wire;
static size_t check_wire_len;

static void __attribute__ ((noreturn, format (printf, 1, 2)))
violation (const char *fmt, ...)
{
  va_list ap;

  fprintf (stderr, "fuzz-handshake: protocol violation: ");
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fprintf (stderr, " (client sent %zu bytes)\n", check_wire_len);
  abort ();
}

/* The size and read-only flag of export NAME, or -1 if it is unknown. */
static int
known_export (const uint8_t *name, size_t len, uint64_t *size, bool *ro)
{
  static const struct { const char *name; uint64_t size; bool ro; } e[] = {
    { "disk", DISK_SIZE, false }, { "disk@s1", DISK_SIZE, true },
    { "disk@s2", DISK_SIZE, true }, { "small", SMALL_SIZE, false },
    { "ro", RO_SIZE, true },
  };
  size_t i;

  for (i = 0; i < sizeof e / sizeof e[0]; i++)
    if (strlen (e[i].name) == len && memcmp (e[i].name, name, len) == 0)
      {
        *size = e[i].size;
        *ro = e[i].ro;
        return 0;
      }
  return -1;
}

static void
check_export (const uint8_t *name, size_t namelen, uint64_t size,
              uint16_t flags, const char *what)
{
  uint64_t want;
  bool ro;

  if (known_export (name, namelen, &want, &ro) < 0)
    violation ("%s for an export that does not exist (%.*s)", what,
               (int) namelen, name);
  if (size != want)
    violation ("%s: size %llu, the export has %llu", what,
               (unsigned long long) size, (unsigned long long) want);
  if (!(flags & NBD_FLAG_HAS_FLAGS))
    violation ("%s: flags 0x%x without NBD_FLAG_HAS_FLAGS", what, flags);
  if (!!(flags & NBD_FLAG_READ_ONLY) != ro)
    violation ("%s: flags 0x%x, export %s", what, flags,
               ro ? "read-only" : "writable");
}

static void
check (const uint8_t *w, size_t wn, const uint8_t *o, size_t on)
{
  size_t wp, op = 18;
  uint32_t cflags;
  bool no_zeroes;

  check_wire = w;
  check_wire_len = wn;
  if (on < 18 || be64_at (o) != NBD_MAGIC || be64_at (o + 8) != NBD_IHAVEOPT
      || be16_at (o + 16) != (NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES))
    violation ("no valid greeting (%zu bytes)", on);
  if (wn < 4)
    goto end;
  cflags = be32_at (w);
  if (cflags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
    goto end;
  no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;

  for (wp = 4; wn - wp >= 16; )
    {
      uint32_t option = be32_at (w + wp + 8), len = be32_at (w + wp + 12);
      const uint8_t *data = w + wp + 16;
      bool seen_export = false;
      uint64_t info_size = 0;
      uint16_t info_flags = 0;

      if (be64_at (w + wp) != NBD_IHAVEOPT || len > NBD_SRV_MAX_OPTION
          || wn - wp - 16 < len)
        break;                  /* hard disconnect or incomplete */
      wp += 16 + len;

      if (option == NBD_OPT_EXPORT_NAME)
        {
          size_t need = 10 + (no_zeroes ? 0 : 124);
          uint64_t s;
          bool ro;

          if (op == on)
            {
              if (known_export (data, len, &s, &ro) == 0)
                violation ("NBD_OPT_EXPORT_NAME of export %.*s: hung up",
                           (int) len, data);
              return;
            }
          if (on - op < need)
            violation ("NBD_OPT_EXPORT_NAME: a reply of %zu bytes, not %zu",
                       on - op, need);
          check_export (data, len, be64_at (o + op), be16_at (o + op + 8),
                        "NBD_OPT_EXPORT_NAME");
          for (size_t i = 10; i < need; i++)
            if (o[op + i])
              violation ("NBD_OPT_EXPORT_NAME: padding not zero");
          return;               /* transmission follows */
        }

      for (;;)
        {
          uint32_t type, rlen;
          const uint8_t *r;

          if (on - op < 20)
            {
              if (option == NBD_OPT_ABORT && op == on)
                return;         /* may just close */
              violation ("option %u left without a final reply", option);
            }
          if (be64_at (o + op) != NBD_REP_MAGIC)
            violation ("option %u: reply without the reply magic", option);
          if (be32_at (o + op + 8) != option)
            violation ("option %u: a reply for option %u", option,
                       be32_at (o + op + 8));
          type = be32_at (o + op + 12);
          rlen = be32_at (o + op + 16);
          if (on - op - 20 < rlen)
            violation ("option %u: reply of %u bytes cut short", option,
                       rlen);
          r = o + op + 20;
          op += 20 + rlen;

          if (type & NBD_REP_FLAG_ERROR)
            {
              if (rlen > NBD_MAX_STRING)
                violation ("option %u: error message of %u bytes", option,
                           rlen);
              break;
            }
          if (type == NBD_REP_ACK)
            {
              if (rlen != 0)
                violation ("option %u: ACK with %u bytes", option, rlen);
              if (option == NBD_OPT_INFO || option == NBD_OPT_GO)
                {
                  uint32_t namelen = len >= 6 ? be32_at (data) : 0;
                  if (len < 6 || namelen > len - 6)
                    violation ("option %u: ACK to a malformed option",
                               option);
                  if (!seen_export)
                    violation ("option %u: ACK without NBD_INFO_EXPORT",
                               option);
                  check_export (data + 4, namelen, info_size, info_flags,
                                "NBD_INFO_EXPORT");
                }
              if (option == NBD_OPT_ABORT || option == NBD_OPT_GO)
                return;
              break;
            }
          switch (type)
            {
            case NBD_REP_SERVER:
              if (option != NBD_OPT_LIST)
                violation ("option %u: NBD_REP_SERVER", option);
              if (rlen < 4 || be32_at (r) > rlen - 4)
                violation ("NBD_REP_SERVER of %u bytes, name length %u",
                           rlen, rlen >= 4 ? be32_at (r) : 0);
              break;
            case NBD_REP_INFO:
              if (option != NBD_OPT_INFO && option != NBD_OPT_GO)
                violation ("option %u: NBD_REP_INFO", option);
              if (rlen < 2)
                violation ("NBD_REP_INFO of %u bytes", rlen);
              if (be16_at (r) == NBD_INFO_EXPORT)
                {
                  if (rlen != 12)
                    violation ("NBD_INFO_EXPORT of %u bytes", rlen);
                  seen_export = true;
                  info_size = be64_at (r + 2);
                  info_flags = be16_at (r + 10);
                }
              else if (be16_at (r) == NBD_INFO_BLOCK_SIZE && rlen != 14)
                violation ("NBD_INFO_BLOCK_SIZE of %u bytes", rlen);
              break;
            case NBD_REP_META_CONTEXT:
              if (option != NBD_OPT_LIST_META_CONTEXT
                  && option != NBD_OPT_SET_META_CONTEXT)
                violation ("option %u: NBD_REP_META_CONTEXT", option);
              if (rlen < 5)
                violation ("NBD_REP_META_CONTEXT of %u bytes", rlen);
              break;
            default:
              violation ("option %u: reply type %u", option, type);
            }
        }
    }
 end:
  if (op != on)
    violation ("%zu bytes sent unasked", on - op);
}

/* ---- libFuzzer ----------------------------------------------------------- */

/* The export "ro" is read-only. */
static int
configure (struct nbd_srv_config *cfg)
{
  return nbd_srv_config_set_export (cfg, "ro", "read_only", "1");
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  static const char *const names[] = { "disk", "disk@s1", "small", "ro" };
  struct snap_opts so = { .host_id = "fuzz" };
  char uri[80];
  struct store *st;

  (void) argc;
  (void) argv;
  fuzz_setup ("vbk-fuzz-hs", uri, sizeof uri);
  if (store_open (uri, &st) < 0
      || image_create (st, "disk", DISK_SIZE, 64 << 10) < 0
      || image_create (st, "small", SMALL_SIZE, 64 << 10) < 0
      || image_create (st, "ro", RO_SIZE, 64 << 10) < 0
      || snap_create (st, "disk", "s1", &so, NULL) < 0
      || snap_create (st, "disk", "s2", &so, NULL) < 0)
    fuzz_die ("fuzz-handshake", NULL);
  store_close (st);
  srv = fuzz_server_start ("fuzz-handshake", uri, configure, names,
                           sizeof names / sizeof names[0], keep, &client);
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  /* Kept from input to input: no allocation per run. */
  static struct buf wire, out;

  wire.len = out.len = 0;
  if (size > 0 && (data[0] & 1))
    frame (data + 1, size - 1, &wire);
  else if (size > 1)
    buf_add (&wire, data + 1, size - 1);

  fuzz_serve (srv, &client, wire.p, wire.len, gather, &out);

  check (wire.p, wire.len, out.p, out.len);
  return 0;
}
