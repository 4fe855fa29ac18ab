/* SPDX-License-Identifier: MIT
 *
 * test-nbd-protocol.c - the pure request logic of vbk-blockd, checked
 * against the NBD protocol (doc/proto.md of the NBD project): decoding
 * of the 28-byte request header, the command and flag rules, length and
 * range limits, read-only exports, BLOCK_STATUS negotiation, the
 * transmission flags we advertise, and the -errno -> NBD error table.
 *
 * Where the specification and the code could disagree, the expected
 * values come from the specification (quoted next to the assertion),
 * not from the code.  Where the specification leaves a choice to the
 * server, the test accepts every answer it allows, or says which one we
 * chose and why.  No socket, store or thread is involved.
 */
/* VBK_TEST_LINKS: vbkblockd-internals */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "blockd/internal.h"
#include "blockd/nbd-protocol.h"
#include "common/error.h"

/* proto.md, "Block size constraints": clients limit READ and WRITE to
 * 2^25 bytes for interoperability; we advertise exactly that maximum. */
#define MAX_LEN (UINT32_C (1) << 25)
/* What we accept: nbdkit's limit, above the advertised maximum, for
 * clients that never saw it (NBD_OPT_EXPORT_NAME). */
#define PAYLOAD_LEN (UINT32_C (1) << 26)
/* A large export, so that the length limits are not range errors. */
#define BIG (UINT64_C (1) << 40)

/* Every command the specification defines, with no RESIZE (8): it is an
 * experimental extension we do not advertise. */
static const uint16_t known_cmds[] = {
  NBD_CMD_READ, NBD_CMD_WRITE, NBD_CMD_DISC, NBD_CMD_FLUSH, NBD_CMD_TRIM,
  NBD_CMD_CACHE, NBD_CMD_WRITE_ZEROES, NBD_CMD_BLOCK_STATUS,
};
#define N_KNOWN (sizeof known_cmds / sizeof known_cmds[0])

/* Negotiation states: writable or not, structured replies or not,
 * base:allocation selected or not (only with structured replies). */
static const struct nbd_srv_limits lim_rw = {
  .size = BIG, .read_only = false, .structured = true, .meta = true,
};
static const struct nbd_srv_limits lim_rw_nometa = {
  .size = BIG, .read_only = false, .structured = true, .meta = false,
};
static const struct nbd_srv_limits lim_rw_simple = {
  .size = BIG, .read_only = false, .structured = false, .meta = false,
};
static const struct nbd_srv_limits lim_ro = {
  .size = BIG, .read_only = true, .structured = true, .meta = true,
};
static const struct nbd_srv_limits lim_ro_simple = {
  .size = BIG, .read_only = true, .structured = false, .meta = false,
};
static const struct nbd_srv_limits *const all_lims[] = {
  &lim_rw, &lim_rw_nometa, &lim_rw_simple, &lim_ro, &lim_ro_simple,
};
#define N_LIMS (sizeof all_lims / sizeof all_lims[0])

static uint32_t
check (const struct nbd_srv_limits *l, uint16_t type, uint16_t flags,
       uint64_t offset, uint32_t count)
{
  struct nbd_srv_req r;

  memset (&r, 0, sizeof r);
  r.type = type;
  r.flags = flags;
  r.handle = UINT64_C (0x1122334455667788);
  r.offset = offset;
  r.count = count;
  return nbd_srv_check_request (&r, l);
}

static bool
is_write_cmd (uint16_t type)
{
  return type == NBD_CMD_WRITE || type == NBD_CMD_TRIM
    || type == NBD_CMD_WRITE_ZEROES;
}

/* Fills a 28-byte request in network byte order, byte by byte, so that
 * the test does not share a conversion helper with the code. */
static void
put_be (unsigned char *p, uint64_t v, int n)
{
  int i;

  for (i = n - 1; i >= 0; i--)
    {
      p[i] = v & 0xff;
      v >>= 8;
    }
}

static void
make_wire (unsigned char *w, uint32_t magic, uint16_t flags, uint16_t type,
           const unsigned char handle[8], uint64_t offset, uint32_t count)
{
  put_be (w, magic, 4);
  put_be (w + 4, flags, 2);
  put_be (w + 6, type, 2);
  memcpy (w + 8, handle, 8);
  put_be (w + 16, offset, 8);
  put_be (w + 24, count, 4);
}

/* ---- Wire constants ----------------------------------------------------- */

static void
test_wire_constants (void **state)
{
  /* proto.md, "Request message": 32+16+16+64+64+32 bits. */
  assert_int_equal (sizeof (struct nbd_request), 28);
  assert_int_equal (offsetof (struct nbd_request, flags), 4);
  assert_int_equal (offsetof (struct nbd_request, type), 6);
  assert_int_equal (offsetof (struct nbd_request, handle), 8);
  assert_int_equal (offsetof (struct nbd_request, offset), 16);
  assert_int_equal (offsetof (struct nbd_request, count), 24);
  assert_int_equal (NBD_REQUEST_MAGIC, 0x25609513u);

  /* "Request types". */
  assert_int_equal (NBD_CMD_READ, 0);
  assert_int_equal (NBD_CMD_WRITE, 1);
  assert_int_equal (NBD_CMD_DISC, 2);
  assert_int_equal (NBD_CMD_FLUSH, 3);
  assert_int_equal (NBD_CMD_TRIM, 4);
  assert_int_equal (NBD_CMD_CACHE, 5);
  assert_int_equal (NBD_CMD_WRITE_ZEROES, 6);
  assert_int_equal (NBD_CMD_BLOCK_STATUS, 7);

  /* "Command flags". */
  assert_int_equal (NBD_CMD_FLAG_FUA, 1u << 0);
  assert_int_equal (NBD_CMD_FLAG_NO_HOLE, 1u << 1);
  assert_int_equal (NBD_CMD_FLAG_DF, 1u << 2);
  assert_int_equal (NBD_CMD_FLAG_REQ_ONE, 1u << 3);
  assert_int_equal (NBD_CMD_FLAG_FAST_ZERO, 1u << 4);

  /* "Error values". */
  assert_int_equal (NBD_SUCCESS, 0);
  assert_int_equal (NBD_EPERM, 1);
  assert_int_equal (NBD_EIO, 5);
  assert_int_equal (NBD_ENOMEM, 12);
  assert_int_equal (NBD_EINVAL, 22);
  assert_int_equal (NBD_ENOSPC, 28);
  assert_int_equal (NBD_EOVERFLOW, 75);
  assert_int_equal (NBD_ENOTSUP, 95);
  assert_int_equal (NBD_ESHUTDOWN, 108);

  /* The maximum we advertise in NBD_INFO_BLOCK_SIZE. */
  assert_int_equal (NBD_SRV_MAX_REQUEST, MAX_LEN);
  assert_int_equal (NBD_SRV_MAX_PAYLOAD, PAYLOAD_LEN);
}

/* ---- Decoding ----------------------------------------------------------- */

static const unsigned char handle_bytes[8] = {
  0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04,
};

static void
test_decode_byte_order (void **state)
{
  unsigned char buf[1 + 28];
  unsigned char *w = buf + 1;         /* deliberately misaligned */
  struct nbd_srv_req r;

  /* Every field differs from its byte-swapped self. */
  make_wire (w, NBD_REQUEST_MAGIC, 0x0105, 0x0006, handle_bytes,
             UINT64_C (0x0102030405060708), 0x0a0b0c0du);
  memset (&r, 0, sizeof r);
  assert_int_equal (nbd_srv_decode_request (w, &r), 0);
  assert_int_equal (r.flags, 0x0105);
  assert_int_equal (r.type, 0x0006);
  assert_true (r.offset == UINT64_C (0x0102030405060708));
  assert_int_equal (r.count, 0x0a0b0c0du);
  /* proto.md: the server MUST use the same value for handle as was sent:
   * it is opaque, so its bytes are kept as they came. */
  assert_memory_equal (&r.handle, handle_bytes, 8);

  /* Extremes survive unchanged. */
  make_wire (w, NBD_REQUEST_MAGIC, 0xffff, 0xffff, handle_bytes,
             UINT64_MAX, UINT32_MAX);
  assert_int_equal (nbd_srv_decode_request (w, &r), 0);
  assert_int_equal (r.flags, 0xffff);
  assert_int_equal (r.type, 0xffff);
  assert_true (r.offset == UINT64_MAX);
  assert_int_equal (r.count, UINT32_MAX);

  make_wire (w, NBD_REQUEST_MAGIC, 0, NBD_CMD_READ, handle_bytes, 0, 0);
  memset (&r, 0xa5, sizeof r);
  assert_int_equal (nbd_srv_decode_request (w, &r), 0);
  assert_int_equal (r.flags, 0);
  assert_int_equal (r.type, NBD_CMD_READ);
  assert_true (r.offset == 0);
  assert_int_equal (r.count, 0);
}

static void
test_decode_reads_28_bytes (void **state)
{
  /* Exactly 28 bytes on the heap: a sanitizer build catches any read
   * past the header. */
  unsigned char *w = malloc (28);
  struct nbd_srv_req r;

  assert_non_null (w);
  make_wire (w, NBD_REQUEST_MAGIC, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE,
             handle_bytes, 4096, 512);
  assert_int_equal (nbd_srv_decode_request (w, &r), 0);
  assert_int_equal (r.type, NBD_CMD_WRITE);
  assert_int_equal (r.flags, NBD_CMD_FLAG_FUA);
  assert_true (r.offset == 4096);
  assert_int_equal (r.count, 512);
  free (w);
}

static void
test_decode_bad_magic (void **state)
{
  static const uint32_t bad[] = {
    0,
    0xffffffffu,
    0x13956025u,          /* the right magic, little-endian */
    0x12560953u,          /* historic NBD_REQUEST_MAGIC (reserved) */
    0x25609514u,          /* nbd-server's transaction log (reserved) */
    NBD_SIMPLE_REPLY_MAGIC,
    NBD_STRUCTURED_REPLY_MAGIC,
    0x96744668u,          /* historic NBD_REPLY_MAGIC */
  };
  unsigned char w[28];
  struct nbd_srv_req r;
  size_t i;
  int bit;

  for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
    {
      make_wire (w, bad[i], 0, NBD_CMD_READ, handle_bytes, 0, 512);
      assert_int_equal (nbd_srv_decode_request (w, &r), -1);
    }
  /* Any single flipped bit of the magic. */
  for (bit = 0; bit < 32; bit++)
    {
      make_wire (w, NBD_REQUEST_MAGIC ^ (UINT32_C (1) << bit), 0,
                 NBD_CMD_READ, handle_bytes, 0, 512);
      assert_int_equal (nbd_srv_decode_request (w, &r), -1);
    }
  /* The magic alone decides: nonsense in the other fields decodes (and
   * is for nbd_srv_check_request to refuse). */
  make_wire (w, NBD_REQUEST_MAGIC, 0xffff, 0xffff, handle_bytes,
             UINT64_MAX, UINT32_MAX);
  assert_int_equal (nbd_srv_decode_request (w, &r), 0);
  assert_int_equal (nbd_srv_check_request (&r, &lim_rw), NBD_EINVAL);
}

static void
test_decode_then_check (void **state)
{
  unsigned char w[28];
  struct nbd_srv_req r;

  make_wire (w, NBD_REQUEST_MAGIC, NBD_CMD_FLAG_DF, NBD_CMD_READ,
             handle_bytes, BIG - 65536, 65536);
  assert_int_equal (nbd_srv_decode_request (w, &r), 0);
  assert_int_equal (nbd_srv_check_request (&r, &lim_rw), 0);
  /* Same header, one byte further: past the end. */
  make_wire (w, NBD_REQUEST_MAGIC, NBD_CMD_FLAG_DF, NBD_CMD_READ,
             handle_bytes, BIG - 65535, 65536);
  assert_int_equal (nbd_srv_decode_request (w, &r), 0);
  assert_int_equal (nbd_srv_check_request (&r, &lim_rw), NBD_EINVAL);
}

/* ---- Commands and flags ------------------------------------------------- */

static void
test_unknown_command (void **state)
{
  /* proto.md, "Error values": the server SHOULD return NBD_EINVAL if it
   * receives an unknown command. */
  static const uint16_t unknown[] = { 8, 9, 10, 0x00ff, 0x0100, 0x7fff,
                                      0x8000, 0xffff };
  size_t i, j;

  for (j = 0; j < N_LIMS; j++)
    for (i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
      {
        assert_int_equal (check (all_lims[j], unknown[i], 0, 0, 4096),
                          NBD_EINVAL);
        assert_int_equal (check (all_lims[j], unknown[i], 0, 0, 0),
                          NBD_EINVAL);
        assert_int_equal (check (all_lims[j], unknown[i], NBD_CMD_FLAG_FUA,
                                 0, 4096), NBD_EINVAL);
      }
}

static void
test_unknown_flags (void **state)
{
  /* proto.md: the server SHOULD return NBD_EINVAL if it receives an
   * unknown command flag.  Bits 5-15 are undefined. */
  size_t i;
  int bit;

  for (i = 0; i < N_KNOWN; i++)
    for (bit = 5; bit < 16; bit++)
      {
        uint16_t f = 1u << bit;
        uint16_t t = known_cmds[i];
        uint32_t len = (t == NBD_CMD_DISC || t == NBD_CMD_FLUSH) ? 0 : 4096;

        assert_int_equal (check (&lim_rw, t, f, 0, len), NBD_EINVAL);
        assert_int_equal (check (&lim_rw, t, f | NBD_CMD_FLAG_FUA, 0, len),
                          NBD_EINVAL);
        assert_int_equal (check (&lim_rw_simple, t, f, 0, len), NBD_EINVAL);
      }
}

static void
test_fua_on_every_command (void **state)
{
  /* proto.md, "Command flags": FUA is valid for all commands provided
   * NBD_FLAG_SEND_FUA was negotiated, "in which case the server MUST
   * accept all commands with this bit set" - READ included. */
  struct nbd_srv_conn c = { .structured = true };
  struct nbd_srv_export e = { .read_only = false };

  assert_true (nbd_srv_export_flags (&c, &e) & NBD_FLAG_SEND_FUA);
  assert_int_equal (check (&lim_rw, NBD_CMD_READ, NBD_CMD_FLAG_FUA, 0, 4096),
                    0);
  assert_int_equal (check (&lim_rw_simple, NBD_CMD_READ, NBD_CMD_FLAG_FUA, 0,
                           4096), 0);
  assert_int_equal (check (&lim_ro, NBD_CMD_READ, NBD_CMD_FLAG_FUA, 0, 4096),
                    0);
  assert_int_equal (check (&lim_rw, NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 0,
                           4096), 0);
  assert_int_equal (check (&lim_rw, NBD_CMD_FLUSH, NBD_CMD_FLAG_FUA, 0, 0),
                    0);
  assert_int_equal (check (&lim_ro, NBD_CMD_FLUSH, NBD_CMD_FLAG_FUA, 0, 0),
                    0);
  assert_int_equal (check (&lim_rw, NBD_CMD_TRIM, NBD_CMD_FLAG_FUA, 0, 4096),
                    0);
  assert_int_equal (check (&lim_rw, NBD_CMD_CACHE, NBD_CMD_FLAG_FUA, 0,
                           4096), 0);
  assert_int_equal (check (&lim_rw, NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_FUA,
                           0, 4096), 0);
  assert_int_equal (check (&lim_rw, NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_FUA,
                           0, 4096), 0);
  assert_int_equal (check (&lim_rw, NBD_CMD_DISC, NBD_CMD_FLAG_FUA, 0, 0), 0);
}

static void
test_no_hole (void **state)
{
  /* "bit 1, NBD_CMD_FLAG_NO_HOLE; valid during NBD_CMD_WRITE_ZEROES", and
   * a flag not documented for a request SHOULD get NBD_EINVAL. */
  uint16_t f = NBD_CMD_FLAG_NO_HOLE;

  assert_int_equal (check (&lim_rw, NBD_CMD_WRITE_ZEROES, f, 0, 4096), 0);
  assert_int_equal (check (&lim_rw, NBD_CMD_WRITE_ZEROES,
                           f | NBD_CMD_FLAG_FUA, 0, 4096), 0);
  assert_int_equal (check (&lim_rw_simple, NBD_CMD_WRITE_ZEROES, f, 0,
                           4096), 0);
  assert_int_equal (check (&lim_rw, NBD_CMD_WRITE, f, 0, 4096), NBD_EINVAL);
  assert_int_equal (check (&lim_rw, NBD_CMD_TRIM, f, 0, 4096), NBD_EINVAL);
  assert_int_equal (check (&lim_rw, NBD_CMD_READ, f, 0, 4096), NBD_EINVAL);
  assert_int_equal (check (&lim_rw, NBD_CMD_CACHE, f, 0, 4096), NBD_EINVAL);
  assert_int_equal (check (&lim_rw, NBD_CMD_FLUSH, f, 0, 0), NBD_EINVAL);
  assert_int_equal (check (&lim_rw, NBD_CMD_BLOCK_STATUS, f, 0, 4096),
                    NBD_EINVAL);
  assert_int_equal (check (&lim_rw, NBD_CMD_DISC, f, 0, 0), NBD_EINVAL);
}

static void
test_df (void **state)
{
  /* "bit 2, NBD_CMD_FLAG_DF; valid during NBD_CMD_READ ... MUST NOT be
   * set unless the transmission flags include NBD_FLAG_SEND_DF", which
   * "MUST [be left] clear if structured replies have not been
   * negotiated". */
  uint16_t f = NBD_CMD_FLAG_DF;
  uint32_t e;

  assert_int_equal (check (&lim_rw, NBD_CMD_READ, f, 0, 4096), 0);
  assert_int_equal (check (&lim_ro, NBD_CMD_READ, f | NBD_CMD_FLAG_FUA, 0,
                           4096), 0);
  /* "the server MUST support unfragmented reads in which the client's
   * request length does not exceed 65,536 bytes". */
  assert_int_equal (check (&lim_rw, NBD_CMD_READ, f, 0, 65536), 0);
  /* Larger: served, or refused with NBD_EOVERFLOW ("MAY reject"). */
  e = check (&lim_rw, NBD_CMD_READ, f, 0, MAX_LEN);
  assert_true (e == 0 || e == NBD_EOVERFLOW);

  /* Without structured replies. */
  assert_int_equal (check (&lim_rw_simple, NBD_CMD_READ, f, 0, 4096),
                    NBD_EINVAL);
  assert_int_equal (check (&lim_ro_simple, NBD_CMD_READ, f, 0, 4096),
                    NBD_EINVAL);

  /* On anything but READ. */
  assert_int_equal (check (&lim_rw, NBD_CMD_WRITE, f, 0, 4096), NBD_EINVAL);
  assert_int_equal (check (&lim_rw, NBD_CMD_CACHE, f, 0, 4096), NBD_EINVAL);
  assert_int_equal (check (&lim_rw, NBD_CMD_BLOCK_STATUS, f, 0, 4096),
                    NBD_EINVAL);
  assert_int_equal (check (&lim_rw, NBD_CMD_WRITE_ZEROES, f, 0, 4096),
                    NBD_EINVAL);
  assert_int_equal (check (&lim_rw, NBD_CMD_TRIM, f, 0, 4096), NBD_EINVAL);
  assert_int_equal (check (&lim_rw, NBD_CMD_FLUSH, f, 0, 0), NBD_EINVAL);
}

static void
test_req_one (void **state)
{
  /* "bit 3, NBD_CMD_FLAG_REQ_ONE; valid during NBD_CMD_BLOCK_STATUS". */
  uint16_t f = NBD_CMD_FLAG_REQ_ONE;

  assert_int_equal (check (&lim_rw, NBD_CMD_BLOCK_STATUS, f, 0, 4096), 0);
  assert_int_equal (check (&lim_ro, NBD_CMD_BLOCK_STATUS, f, 0, 4096), 0);
  assert_int_equal (check (&lim_rw, NBD_CMD_READ, f, 0, 4096), NBD_EINVAL);
  assert_int_equal (check (&lim_rw, NBD_CMD_WRITE, f, 0, 4096), NBD_EINVAL);
  assert_int_equal (check (&lim_rw, NBD_CMD_WRITE_ZEROES, f, 0, 4096),
                    NBD_EINVAL);
  assert_int_equal (check (&lim_rw, NBD_CMD_CACHE, f, 0, 4096), NBD_EINVAL);
}

static void
test_fast_zero (void **state)
{
  /* "bit 4, NBD_CMD_FLAG_FAST_ZERO; valid during NBD_CMD_WRITE_ZEROES". */
  uint16_t f = NBD_CMD_FLAG_FAST_ZERO;
  struct nbd_srv_conn c = { .structured = false };
  struct nbd_srv_export rw = { .read_only = false };
  struct nbd_srv_export ro = { .read_only = true };
  uint32_t e;

  /* We advertise it on writable exports, so there it is accepted, with
   * or without NO_HOLE (whether it is fast is decided later, and may
   * give NBD_ENOTSUP then, not here). */
  assert_true (nbd_srv_export_flags (&c, &rw) & NBD_FLAG_SEND_FAST_ZERO);
  assert_int_equal (check (&lim_rw, NBD_CMD_WRITE_ZEROES, f, 0, 4096), 0);
  assert_int_equal (check (&lim_rw, NBD_CMD_WRITE_ZEROES,
                           f | NBD_CMD_FLAG_NO_HOLE, 0, 4096), 0);
  assert_int_equal (check (&lim_rw, NBD_CMD_WRITE_ZEROES,
                           f | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FUA,
                           0, 4096), 0);
  assert_int_equal (check (&lim_rw_simple, NBD_CMD_WRITE_ZEROES, f, 0, 4096),
                    0);

  /* Not documented for other commands. */
  assert_int_equal (check (&lim_rw, NBD_CMD_WRITE, f, 0, 4096), NBD_EINVAL);
  assert_int_equal (check (&lim_rw, NBD_CMD_TRIM, f, 0, 4096), NBD_EINVAL);
  assert_int_equal (check (&lim_rw, NBD_CMD_READ, f, 0, 4096), NBD_EINVAL);
  assert_int_equal (check (&lim_rw, NBD_CMD_CACHE, f, 0, 4096), NBD_EINVAL);

  /* A read-only export advertises neither WRITE_ZEROES nor FAST_ZERO:
   * "If the server did not advertise NBD_FLAG_SEND_FAST_ZERO ... [it]
   * SHOULD fail with NBD_EINVAL", while a write zeroes request on a
   * read-only export SHOULD get NBD_EPERM.  Either is right; success or
   * NBD_ENOTSUP is not. */
  assert_false (nbd_srv_export_flags (&c, &ro) & NBD_FLAG_SEND_FAST_ZERO);
  e = check (&lim_ro, NBD_CMD_WRITE_ZEROES, f, 0, 4096);
  assert_true (e == NBD_EINVAL || e == NBD_EPERM);
}

/* The flags proto.md documents for TYPE, given what was negotiated
 * (everything we advertise; see test_export_flags). */
static uint16_t
spec_flags (uint16_t type, const struct nbd_srv_limits *l)
{
  uint16_t f = NBD_CMD_FLAG_FUA;

  switch (type)
    {
    case NBD_CMD_READ:
      if (l->structured)
        f |= NBD_CMD_FLAG_DF;
      break;
    case NBD_CMD_WRITE_ZEROES:
      f |= NBD_CMD_FLAG_NO_HOLE;
      if (!l->read_only)
        f |= NBD_CMD_FLAG_FAST_ZERO;
      break;
    case NBD_CMD_BLOCK_STATUS:
      f |= NBD_CMD_FLAG_REQ_ONE;
      break;
    }
  return f;
}

static void
test_every_flag_combination (void **state)
{
  size_t i, j;
  unsigned f;

  for (j = 0; j < N_LIMS; j++)
    for (i = 0; i < N_KNOWN; i++)
      for (f = 0; f <= 0xffff; f++)
        {
          const struct nbd_srv_limits *l = all_lims[j];
          uint16_t t = known_cmds[i];
          uint32_t len = (t == NBD_CMD_DISC || t == NBD_CMD_FLUSH) ? 0 : 4096;
          uint32_t e = check (l, t, f, len ? 4096 : 0, len);
          bool flags_ok = (f & ~spec_flags (t, l)) == 0;

          if (l->read_only && is_write_cmd (t))
            {
              /* Both SHOULDs apply; neither may succeed. */
              if (flags_ok)
                assert_int_equal (e, NBD_EPERM);
              else if (e != NBD_EINVAL)
                assert_int_equal (e, NBD_EPERM);
            }
          else if (!flags_ok)
            assert_int_equal (e, NBD_EINVAL);
          else if (t == NBD_CMD_BLOCK_STATUS && !l->meta)
            assert_int_equal (e, NBD_EINVAL);
          else
            assert_int_equal (e, 0);
        }
}

static void
test_error_values_in_spec (void **state)
{
  /* proto.md: NBD_EOVERFLOW SHOULD NOT be returned except for READ with
   * DF, NBD_ENOTSUP except for WRITE_ZEROES with FAST_ZERO (which the
   * check does not decide).  And only the listed values exist. */
  static const uint64_t offs[] = { 0, BIG - 4096, BIG, UINT64_MAX - 100 };
  static const uint32_t lens[] = { 0, 4096, MAX_LEN + 1, UINT32_MAX };
  size_t j, io, il;
  unsigned t, f;

  for (j = 0; j < N_LIMS; j++)
    for (t = 0; t <= 9; t++)
      for (f = 0; f < 64; f++)
        for (io = 0; io < sizeof offs / sizeof offs[0]; io++)
          for (il = 0; il < sizeof lens / sizeof lens[0]; il++)
            {
              uint32_t e = check (all_lims[j], t, f, offs[io], lens[il]);

              assert_true (e == 0 || e == NBD_EPERM || e == NBD_EINVAL
                           || e == NBD_ENOSPC || e == NBD_EOVERFLOW);
              if (e == NBD_EOVERFLOW)
                {
                  assert_int_equal (t, NBD_CMD_READ);
                  assert_true (f & NBD_CMD_FLAG_DF);
                }
            }
}

/* ---- Lengths and ranges ------------------------------------------------- */

static void
test_length_limits (void **state)
{
  /* proto.md, "Block size constraints": for READ, WRITE and CACHE "the
   * client MUST NOT use a length larger than any advertised maximum
   * block size", and "The server SHOULD report an NBD_EINVAL error if
   * [the request] is larger than the advertised maximum block size".
   * Like nbdkit we accept up to 64 MiB (old-style clients never saw our
   * maximum) and refuse past that. */
  static const uint16_t bounded[] = { NBD_CMD_READ, NBD_CMD_WRITE,
                                      NBD_CMD_CACHE };
  size_t i;

  for (i = 0; i < sizeof bounded / sizeof bounded[0]; i++)
    {
      assert_int_equal (check (&lim_rw, bounded[i], 0, 0, PAYLOAD_LEN), 0);
      assert_int_equal (check (&lim_rw, bounded[i], 0, 0, PAYLOAD_LEN - 1), 0);
      assert_int_equal (check (&lim_rw, bounded[i], 0, 0, PAYLOAD_LEN + 1),
                        NBD_EINVAL);
      assert_int_equal (check (&lim_rw, bounded[i], 0, 0, 2 * PAYLOAD_LEN),
                        NBD_EINVAL);
      assert_int_equal (check (&lim_rw, bounded[i], 0, 0, UINT32_MAX),
                        NBD_EINVAL);
      assert_int_equal (check (&lim_rw_simple, bounded[i], 0, 0,
                               PAYLOAD_LEN + 1), NBD_EINVAL);
    }
  assert_int_equal (check (&lim_ro, NBD_CMD_READ, 0, 0, PAYLOAD_LEN + 1),
                    NBD_EINVAL);
  assert_int_equal (check (&lim_ro, NBD_CMD_CACHE, 0, 0, PAYLOAD_LEN + 1),
                    NBD_EINVAL);
  /* An oversized write on a read-only export is refused either way. */
  assert_true (check (&lim_ro, NBD_CMD_WRITE, 0, 0, PAYLOAD_LEN + 1) != 0);

  /* TRIM and BLOCK_STATUS are not bounded by the maximum (TRIM is not in
   * the list above; for BLOCK_STATUS "the client's requested length is
   * only a hint"): a whole-disk discard or map query is legitimate. */
  assert_int_equal (check (&lim_rw, NBD_CMD_TRIM, 0, 0, MAX_LEN + 1), 0);
  assert_int_equal (check (&lim_rw, NBD_CMD_TRIM, 0, 0, UINT32_MAX), 0);
  assert_int_equal (check (&lim_rw, NBD_CMD_BLOCK_STATUS, 0, 0, UINT32_MAX),
                    0);
  assert_int_equal (check (&lim_rw, NBD_CMD_BLOCK_STATUS,
                           NBD_CMD_FLAG_REQ_ONE, 0, UINT32_MAX), 0);

  /* WRITE_ZEROES with FAST_ZERO is exempt from the maximum ("except for
   * when NBD_CMD_FLAG_FAST_ZERO is set"). */
  assert_int_equal (check (&lim_rw, NBD_CMD_WRITE_ZEROES,
                           NBD_CMD_FLAG_FAST_ZERO, 0, MAX_LEN + 1), 0);
  assert_int_equal (check (&lim_rw, NBD_CMD_WRITE_ZEROES,
                           NBD_CMD_FLAG_FAST_ZERO, 0, UINT32_MAX), 0);
}

static void
test_write_zeroes_max_length (void **state)
{
  /* proto.md, "Block size constraints": "for NBD_CMD_READ,
   * NBD_CMD_WRITE, NBD_CMD_CACHE and NBD_CMD_WRITE_ZEROES (except for
   * when NBD_CMD_FLAG_FAST_ZERO is set), the client MUST NOT use a
   * length larger than any advertised maximum block size.  The server
   * SHOULD report an NBD_EINVAL error ..."  nbdcopy breaks that rule
   * with 56 MiB zero requests; WRITE_ZEROES has no payload, so we serve
   * any length inside the export, with or without flags. */
  assert_int_equal (check (&lim_rw, NBD_CMD_WRITE_ZEROES, 0, 0, MAX_LEN), 0);
  assert_int_equal (check (&lim_rw, NBD_CMD_WRITE_ZEROES, 0, 0,
                           MAX_LEN + 1), 0);
  assert_int_equal (check (&lim_rw, NBD_CMD_WRITE_ZEROES,
                           NBD_CMD_FLAG_NO_HOLE, 0, 56u << 20), 0);
  assert_int_equal (check (&lim_rw, NBD_CMD_WRITE_ZEROES, 0, 0, UINT32_MAX),
                    0);
  /* Past the end is still refused. */
  assert_int_equal (check (&lim_rw, NBD_CMD_WRITE_ZEROES, 0, BIG - 4096,
                           MAX_LEN + 1), NBD_ENOSPC);
  /* The payload-carrying commands keep their maximum. */
  assert_int_equal (check (&lim_rw, NBD_CMD_CACHE, 0, 0, UINT32_MAX),
                    NBD_EINVAL);
}

static void
test_past_end (void **state)
{
  /* proto.md, "Error values": NBD_ENOSPC for a write "including one or
   * more sectors beyond the size of the device", NBD_EINVAL for a read
   * or trim; WRITE_ZEROES: NBD_ENOSPC; BLOCK_STATUS: NBD_EINVAL.  CACHE
   * is not named ("Which error to return in any other case is not
   * specified"): we answer like READ. */
  const uint64_t size = 10 << 20;
  const struct nbd_srv_limits l = {
    .size = size, .read_only = false, .structured = true, .meta = true,
  };
  static const struct { uint16_t type; uint32_t err; } rules[] = {
    { NBD_CMD_READ, NBD_EINVAL },
    { NBD_CMD_WRITE, NBD_ENOSPC },
    { NBD_CMD_TRIM, NBD_EINVAL },
    { NBD_CMD_WRITE_ZEROES, NBD_ENOSPC },
    { NBD_CMD_BLOCK_STATUS, NBD_EINVAL },
    { NBD_CMD_CACHE, NBD_EINVAL },
  };
  size_t i;

  for (i = 0; i < sizeof rules / sizeof rules[0]; i++)
    {
      uint16_t t = rules[i].type;
      uint32_t err = rules[i].err;

      /* Up to the last byte is fine. */
      assert_int_equal (check (&l, t, 0, 0, 4096), 0);
      assert_int_equal (check (&l, t, 0, size - 4096, 4096), 0);
      assert_int_equal (check (&l, t, 0, size - 1, 1), 0);
      /* One byte more is not. */
      assert_int_equal (check (&l, t, 0, size - 4095, 4096), err);
      assert_int_equal (check (&l, t, 0, size, 1), err);
      assert_int_equal (check (&l, t, 0, size + 4096, 4096), err);
      assert_int_equal (check (&l, t, 0, 0, (uint32_t) size + 1), err);
      /* Flags change nothing. */
      assert_int_equal (check (&l, t, NBD_CMD_FLAG_FUA, size - 4095, 4096),
                        err);
    }
  /* A structured READ with DF follows the same rule. */
  assert_int_equal (check (&l, NBD_CMD_READ, NBD_CMD_FLAG_DF, size - 512,
                           4096), NBD_EINVAL);
  assert_int_equal (check (&l, NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE,
                           size, 4096), NBD_EINVAL);
}

static void
test_offset_overflow (void **state)
{
  /* offset + length must not wrap around 2^64 into the export. */
  const struct nbd_srv_limits huge = {
    .size = UINT64_MAX, .read_only = false, .structured = true, .meta = true,
  };
  const uint64_t wrap = UINT64_MAX - 4095;    /* + 8192 wraps to 4096 */

  assert_int_equal (check (&lim_rw, NBD_CMD_READ, 0, wrap, 8192),
                    NBD_EINVAL);
  assert_int_equal (check (&lim_rw, NBD_CMD_READ, 0, UINT64_MAX, 1),
                    NBD_EINVAL);
  assert_int_equal (check (&lim_rw, NBD_CMD_READ, 0, UINT64_MAX, MAX_LEN),
                    NBD_EINVAL);
  assert_int_equal (check (&lim_rw, NBD_CMD_WRITE, 0, wrap, 8192),
                    NBD_ENOSPC);
  assert_int_equal (check (&lim_rw, NBD_CMD_WRITE_ZEROES, 0, wrap, 8192),
                    NBD_ENOSPC);
  assert_int_equal (check (&lim_rw, NBD_CMD_WRITE_ZEROES,
                           NBD_CMD_FLAG_FAST_ZERO, 1, UINT32_MAX),
                    0);
  assert_int_equal (check (&lim_rw, NBD_CMD_TRIM, 0, wrap, 8192), NBD_EINVAL);
  assert_int_equal (check (&lim_rw, NBD_CMD_TRIM, 0, UINT64_MAX, UINT32_MAX),
                    NBD_EINVAL);
  assert_int_equal (check (&lim_rw, NBD_CMD_CACHE, 0, wrap, 8192),
                    NBD_EINVAL);
  assert_int_equal (check (&lim_rw, NBD_CMD_BLOCK_STATUS, 0, wrap, 8192),
                    NBD_EINVAL);

  /* On an export of 2^64 - 1 bytes the last byte is reachable and
   * nothing past it. */
  assert_int_equal (check (&huge, NBD_CMD_READ, 0, UINT64_MAX - 4096, 4096),
                    0);
  assert_int_equal (check (&huge, NBD_CMD_READ, 0, UINT64_MAX - 4095, 4096),
                    NBD_EINVAL);
  assert_int_equal (check (&huge, NBD_CMD_WRITE, 0, UINT64_MAX - 1, 2),
                    NBD_ENOSPC);
  assert_int_equal (check (&huge, NBD_CMD_TRIM, 0, UINT64_MAX, 1),
                    NBD_EINVAL);
}

static void
test_zero_length (void **state)
{
  /* proto.md: a length of 0 "SHOULD NOT" be sent; "the behavior of a
   * server on such a request is unspecified although the server SHOULD
   * NOT disconnect".  We answer data commands as a no-op success (the
   * transmission loop replies without touching the image); BLOCK_STATUS
   * is refused, since with REQ_ONE no extent could be "nonzero" and
   * "not exceed" the request's length.  Still, the offset may not lie
   * past the end. */
  static const uint16_t data_cmds[] = { NBD_CMD_READ, NBD_CMD_WRITE,
                                        NBD_CMD_TRIM, NBD_CMD_WRITE_ZEROES,
                                        NBD_CMD_CACHE };
  static const uint32_t past_err[] = { NBD_EINVAL, NBD_ENOSPC, NBD_EINVAL,
                                       NBD_ENOSPC, NBD_EINVAL };
  size_t i;

  for (i = 0; i < sizeof data_cmds / sizeof data_cmds[0]; i++)
    {
      assert_int_equal (check (&lim_rw, data_cmds[i], 0, 0, 0), 0);
      assert_int_equal (check (&lim_rw, data_cmds[i], 0, 4096, 0), 0);
      assert_int_equal (check (&lim_rw, data_cmds[i], 0, BIG, 0), 0);
      assert_int_equal (check (&lim_rw, data_cmds[i], 0, BIG + 1, 0),
                        past_err[i]);
      assert_int_equal (check (&lim_rw, data_cmds[i], 0, UINT64_MAX, 0),
                        past_err[i]);
    }
  assert_int_equal (check (&lim_rw, NBD_CMD_BLOCK_STATUS, 0, 0, 0),
                    NBD_EINVAL);
  assert_int_equal (check (&lim_rw, NBD_CMD_BLOCK_STATUS,
                           NBD_CMD_FLAG_REQ_ONE, 4096, 0), NBD_EINVAL);
  /* FLUSH and DISC: "length and offset ... MUST be zero". */
  assert_int_equal (check (&lim_rw, NBD_CMD_FLUSH, 0, 0, 0), 0);
  assert_int_equal (check (&lim_ro, NBD_CMD_FLUSH, 0, 0, 0), 0);
  assert_int_equal (check (&lim_rw, NBD_CMD_DISC, 0, 0, 0), 0);
}

/* ---- Negotiated state --------------------------------------------------- */

static void
test_block_status_negotiation (void **state)
{
  /* proto.md: "Servers SHOULD reply with NBD_EINVAL to clients sending
   * NBD_CMD_BLOCK_STATUS without selecting at least one metadata
   * context", and the reply "MUST be sent as a structured reply". */
  const struct nbd_srv_limits meta_no_sr = {
    .size = BIG, .read_only = false, .structured = false, .meta = true,
  };

  assert_int_equal (check (&lim_rw, NBD_CMD_BLOCK_STATUS, 0, 0, 4096), 0);
  assert_int_equal (check (&lim_ro, NBD_CMD_BLOCK_STATUS, 0, 0, 4096), 0);
  assert_int_equal (check (&lim_rw_nometa, NBD_CMD_BLOCK_STATUS, 0, 0, 4096),
                    NBD_EINVAL);
  assert_int_equal (check (&lim_rw_nometa, NBD_CMD_BLOCK_STATUS,
                           NBD_CMD_FLAG_REQ_ONE, 0, 4096), NBD_EINVAL);
  assert_int_equal (check (&lim_rw_simple, NBD_CMD_BLOCK_STATUS, 0, 0, 4096),
                    NBD_EINVAL);
  assert_int_equal (check (&lim_ro_simple, NBD_CMD_BLOCK_STATUS, 0, 0, 4096),
                    NBD_EINVAL);
  assert_int_equal (check (&meta_no_sr, NBD_CMD_BLOCK_STATUS, 0, 0, 4096),
                    NBD_EINVAL);
  /* The other commands do not care about metadata contexts. */
  assert_int_equal (check (&lim_rw_nometa, NBD_CMD_READ, 0, 0, 4096), 0);
  assert_int_equal (check (&lim_rw_nometa, NBD_CMD_WRITE, 0, 0, 4096), 0);
}

static void
test_read_only_export (void **state)
{
  /* proto.md: "If this flag [NBD_FLAG_READ_ONLY] is set, the server MUST
   * error subsequent write operations"; it "SHOULD return NBD_EPERM if
   * it receives a write or trim request on a read-only export", and the
   * same for write zeroes. */
  static const uint16_t flags[] = { 0, NBD_CMD_FLAG_FUA };
  size_t i;

  for (i = 0; i < 2; i++)
    {
      uint16_t f = flags[i];

      assert_int_equal (check (&lim_ro, NBD_CMD_WRITE, f, 0, 4096),
                        NBD_EPERM);
      assert_int_equal (check (&lim_ro, NBD_CMD_WRITE, f, 0, 0), NBD_EPERM);
      assert_int_equal (check (&lim_ro, NBD_CMD_TRIM, f, 0, 4096),
                        NBD_EPERM);
      assert_int_equal (check (&lim_ro, NBD_CMD_WRITE_ZEROES, f, 0, 4096),
                        NBD_EPERM);
      assert_int_equal (check (&lim_ro, NBD_CMD_WRITE_ZEROES,
                               f | NBD_CMD_FLAG_NO_HOLE, 0, 4096),
                        NBD_EPERM);
      assert_int_equal (check (&lim_ro_simple, NBD_CMD_WRITE, f, 0, 4096),
                        NBD_EPERM);
      assert_int_equal (check (&lim_ro_simple, NBD_CMD_TRIM, f, 0, 4096),
                        NBD_EPERM);

      /* Reading, caching, flushing and mapping stay allowed. */
      assert_int_equal (check (&lim_ro, NBD_CMD_READ, f, 0, 4096), 0);
      assert_int_equal (check (&lim_ro, NBD_CMD_CACHE, f, 0, 4096), 0);
      assert_int_equal (check (&lim_ro, NBD_CMD_FLUSH, f, 0, 0), 0);
      assert_int_equal (check (&lim_ro, NBD_CMD_BLOCK_STATUS, f, 0, 4096),
                        0);
    }
  /* Past the end of a read-only export: refused either way. */
  assert_true (check (&lim_ro, NBD_CMD_WRITE, 0, BIG, 4096) != 0);
  assert_true (check (&lim_ro, NBD_CMD_TRIM, 0, BIG, 4096) != 0);
}

static void
test_export_flags (void **state)
{
  /* proto.md, "Transmission flags". */
  size_t ro, sr;

  for (ro = 0; ro < 2; ro++)
    for (sr = 0; sr < 2; sr++)
      {
        struct nbd_srv_conn c = { .structured = sr };
        struct nbd_srv_export e = { .read_only = ro };
        struct nbd_srv_limits l = {
          .size = BIG, .read_only = ro, .structured = sr, .meta = sr,
        };
        uint16_t f = nbd_srv_export_flags (&c, &e);

        /* "bit 0, NBD_FLAG_HAS_FLAGS: MUST always be 1". */
        assert_true (f & NBD_FLAG_HAS_FLAGS);
        assert_int_equal (!!(f & NBD_FLAG_READ_ONLY), ro);
        /* "MUST set this transmission flag to 1 if the NBD_CMD_READ
         * request supports the NBD_CMD_FLAG_DF flag, and MUST leave this
         * flag clear if structured replies have not been negotiated". */
        assert_int_equal (!!(f & NBD_FLAG_SEND_DF), sr);
        assert_int_equal (check (&l, NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 4096)
                          == 0, !!(f & NBD_FLAG_SEND_DF));
        /* "[FAST_ZERO] MUST set this transmission flag to 0 if
         * NBD_FLAG_SEND_WRITE_ZEROES is not set". */
        if (!(f & NBD_FLAG_SEND_WRITE_ZEROES))
          assert_false (f & NBD_FLAG_SEND_FAST_ZERO);
        /* Every feature we expose, we serve. */
        if (f & NBD_FLAG_SEND_FAST_ZERO)
          assert_int_equal (check (&l, NBD_CMD_WRITE_ZEROES,
                                   NBD_CMD_FLAG_FAST_ZERO, 0, 4096), 0);
        if (f & NBD_FLAG_SEND_WRITE_ZEROES)
          {
            assert_int_equal (check (&l, NBD_CMD_WRITE_ZEROES, 0, 0, 4096),
                              0);
            assert_int_equal (check (&l, NBD_CMD_WRITE_ZEROES,
                                     NBD_CMD_FLAG_NO_HOLE, 0, 4096), 0);
          }
        if (f & NBD_FLAG_SEND_TRIM)
          assert_int_equal (check (&l, NBD_CMD_TRIM, 0, 0, 4096), 0);
        if (f & NBD_FLAG_SEND_FLUSH)
          assert_int_equal (check (&l, NBD_CMD_FLUSH, 0, 0, 0), 0);
        if (f & NBD_FLAG_SEND_CACHE)
          assert_int_equal (check (&l, NBD_CMD_CACHE, 0, 0, 4096), 0);
        /* A read-only export does not offer writes of any kind. */
        if (ro)
          assert_false (f & (NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES
                             | NBD_FLAG_SEND_FAST_ZERO));
        else
          assert_true ((f & (NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES))
                       == (NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES));
        /* Not ours to set: RESIZE is an unimplemented extension. */
        assert_false (f & NBD_FLAG_SEND_RESIZE);
        assert_false (f & 0xf000);
      }
}

static void
test_meta_clear (void **state)
{
  struct nbd_srv_conn c = { .structured = true };

  c.meta_base_alloc = true;
  c.meta_nbitmaps = 2;
  c.meta_bitmaps = calloc (2, sizeof *c.meta_bitmaps);
  assert_non_null (c.meta_bitmaps);
  c.meta_bitmaps[0] = strdup ("snap1");
  c.meta_bitmaps[1] = strdup ("snap2");
  c.meta_export = strdup ("disk");
  assert_non_null (c.meta_bitmaps[0]);
  assert_non_null (c.meta_bitmaps[1]);
  assert_non_null (c.meta_export);

  /* Frees everything (a sanitizer or valgrind run sees leaks) ... */
  nbd_srv_meta_clear (&c);
  assert_false (c.meta_base_alloc);
  assert_int_equal (c.meta_nbitmaps, 0);
  assert_null (c.meta_bitmaps);
  assert_null (c.meta_export);
  assert_true (c.structured);
  /* ... and twice is harmless (SET_META_CONTEXT may come again). */
  nbd_srv_meta_clear (&c);
  assert_null (c.meta_bitmaps);
}

static void
test_export_name_split (void **state)
{
  static const char *const bad[] = {
    "", "@snap", "disk@", "disk@@s", "a@b@c", ".disk", "-disk", "dis k",
    "dis/k", "disk@.s", "disk@-s", "disk@s/1",
  };
  char *image = NULL;
  const char *snap = "unset";
  const char *name;
  size_t i;

  assert_int_equal (nbd_srv_export_name_split ("disk-1.raw", &image, &snap),
                    0);
  assert_string_equal (image, "disk-1.raw");
  assert_null (snap);
  free (image);

  name = "vm_disk+2@daily.3";
  assert_int_equal (nbd_srv_export_name_split (name, &image, &snap), 0);
  assert_string_equal (image, "vm_disk+2");
  assert_ptr_equal (snap, name + strlen ("vm_disk+2@"));
  assert_string_equal (snap, "daily.3");
  free (image);

  for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
    {
      vbk_clear_error ();
      image = NULL;
      assert_int_equal (nbd_srv_export_name_split (bad[i], &image, &snap),
                        -EINVAL);
      assert_null (image);
      assert_non_null (strstr (vbk_error (), "invalid image name"));
    }
}

/* ---- -errno -> NBD error ------------------------------------------------ */

static void
test_errno_table (void **state)
{
  /* proto.md, "Error values": each errno with an NBD value maps to it,
   * given as -errno (how our functions return) or errno. */
  static const struct { int err; uint32_t nbd; } spec[] = {
    { 0, 0 },
    { EPERM, 1 },
    { EIO, 5 },
    { ENOMEM, 12 },
    { EINVAL, 22 },
    { ENOSPC, 28 },
    { EOVERFLOW, 75 },
    { ENOTSUP, 95 },
    { ESHUTDOWN, 108 },
    /* "It also SHOULD map the EDQUOT and EFBIG errors to NBD_ENOSPC." */
    { EDQUOT, 28 },
    { EFBIG, 28 },
    /* Ours: refusals of permission. */
    { EACCES, 1 },
    { EROFS, 1 },
    /* Linux: the same number as ENOTSUP. */
    { EOPNOTSUPP, 95 },
  };
  size_t i;

  for (i = 0; i < sizeof spec / sizeof spec[0]; i++)
    {
      assert_int_equal (nbd_srv_errno_to_nbd (-spec[i].err), spec[i].nbd);
      assert_int_equal (nbd_srv_errno_to_nbd (spec[i].err), spec[i].nbd);
    }
}

static void
test_errno_unknown (void **state)
{
  /* Anything else is an I/O error: NBD has no value for it, and the
   * specification asks clients to treat unknown values as NBD_EINVAL,
   * which would blame the request for a server fault. */
  static const int other[] = {
    ENOENT, ETIMEDOUT, EBUSY, EAGAIN, ENOTCONN, ECONNRESET, ESTALE,
    ERANGE, EBADF, EEXIST, EINTR, ENODATA, ECANCELED, EHOSTUNREACH,
    4095, 100000, INT_MAX,
  };
  size_t i;
  int e;

  for (i = 0; i < sizeof other / sizeof other[0]; i++)
    {
      assert_int_equal (nbd_srv_errno_to_nbd (-other[i]), NBD_EIO);
      assert_int_equal (nbd_srv_errno_to_nbd (other[i]), NBD_EIO);
    }
  /* Whatever comes in, only the values the specification defines go out,
   * and the mapping does not depend on the sign. */
  for (e = -4096; e <= 4096; e++)
    {
      uint32_t n = nbd_srv_errno_to_nbd (e);

      assert_true (n == 0 || n == NBD_EPERM || n == NBD_EIO
                   || n == NBD_ENOMEM || n == NBD_EINVAL || n == NBD_ENOSPC
                   || n == NBD_EOVERFLOW || n == NBD_ENOTSUP
                   || n == NBD_ESHUTDOWN);
      assert_int_equal (n, nbd_srv_errno_to_nbd (-e));
      /* Success only for success. */
      assert_int_equal (n == 0, e == 0);
    }
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_wire_constants),
    cmocka_unit_test (test_decode_byte_order),
    cmocka_unit_test (test_decode_reads_28_bytes),
    cmocka_unit_test (test_decode_bad_magic),
    cmocka_unit_test (test_decode_then_check),
    cmocka_unit_test (test_unknown_command),
    cmocka_unit_test (test_unknown_flags),
    cmocka_unit_test (test_fua_on_every_command),
    cmocka_unit_test (test_no_hole),
    cmocka_unit_test (test_df),
    cmocka_unit_test (test_req_one),
    cmocka_unit_test (test_fast_zero),
    cmocka_unit_test (test_every_flag_combination),
    cmocka_unit_test (test_error_values_in_spec),
    cmocka_unit_test (test_length_limits),
    cmocka_unit_test (test_write_zeroes_max_length),
    cmocka_unit_test (test_past_end),
    cmocka_unit_test (test_offset_overflow),
    cmocka_unit_test (test_zero_length),
    cmocka_unit_test (test_block_status_negotiation),
    cmocka_unit_test (test_read_only_export),
    cmocka_unit_test (test_export_flags),
    cmocka_unit_test (test_meta_clear),
    cmocka_unit_test (test_export_name_split),
    cmocka_unit_test (test_errno_table),
    cmocka_unit_test (test_errno_unknown),
  };

  return cmocka_run_group_tests (tests, NULL, NULL);
}
