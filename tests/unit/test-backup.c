/* SPDX-License-Identifier: MIT
 *
 * test-backup.c - the copy engine and the backup library, on each store
 * backend (VBK_TEST_BACKENDS):
 *   chunk, index and manifest encoding and every parser's error paths
 *   (corrupt, truncated, newer major version); the digest set; the copy
 *   engine between in-memory endpoints (extents and holes, whole pieces,
 *   zero skipping, given ranges, an error carried back with its message);
 *   a repository: init, reopen, a newer format refused; backups of an
 *   image taken with backup_run and read back through the reader API
 *   (byte-equal to the snapshot, extents, several threads); and backups
 *   racing prune + gc in randomized interleavings (no chunk a backup
 *   uses is ever missing).
 */
/* VBK_TEST_LINKS: vbkbackup-internals vbktestutil */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "backup/internal.h"
#include "common/error.h"
#include "common/util.h"
#include "copy/copy.h"
#include "image/image.h"
#include "testutil.h"

static void
fill_random (void *buf, size_t len, unsigned *seed)
{
  unsigned char *p = buf;
  size_t i;

  for (i = 0; i < len; i++)
    p[i] = rand_r (seed) >> 7;
}

/* ---- Formats ---------------------------------------------------------------- */

static void
test_chunk_format (void **state)
{
  size_t n = 65536, len;
  char *plain = malloc (n), *enc = malloc (backup_chunk_bound (n));
  char *out = malloc (n);
  unsigned seed = 1;
  ssize_t e1, e2;

  /* Compressible: LZ4, smaller. */
  memset (plain, 'a', n);
  e1 = backup_chunk_encode (NULL, NULL, plain, n, enc);
  assert_true (e1 > 0 && (size_t) e1 < n / 4);
  assert_int_equal (enc[6], BACKUP_CODEC_LZ4);
  assert_int_equal (backup_chunk_decode (NULL, NULL, enc, e1, out, n, &len), 0);
  assert_int_equal (len, n);
  assert_memory_equal (out, plain, n);
  /* Random: stored raw. */
  fill_random (plain, n, &seed);
  e2 = backup_chunk_encode (NULL, NULL, plain, n, enc);
  assert_int_equal (e2, n + BACKUP_CHUNK_HDR);
  assert_int_equal (enc[6], BACKUP_CODEC_NONE);
  assert_int_equal (backup_chunk_decode (NULL, NULL, enc, e2, out, n, &len), 0);
  assert_memory_equal (out, plain, n);
  /* A flipped bit in the payload: the checksum says so. */
  enc[BACKUP_CHUNK_HDR + 100] ^= 4;
  assert_int_equal (backup_chunk_decode (NULL, NULL, enc, e2, out, n, &len), -EBADMSG);
  assert_non_null (strstr (vbk_error (), "checksum"));
  enc[BACKUP_CHUNK_HDR + 100] ^= 4;
  /* Truncated. */
  assert_int_equal (backup_chunk_decode (NULL, NULL, enc, e2 - 1, out, n, &len), -EBADMSG);
  assert_int_equal (backup_chunk_decode (NULL, NULL, enc, 10, out, n, &len), -EBADMSG);
  /* Too big for the caller. */
  assert_int_equal (backup_chunk_decode (NULL, NULL, enc, e2, out, n - 1, &len), -EBADMSG);
  /* A newer major version. */
  enc[4] = BACKUP_CHUNK_MAJOR_PARTS + 1;
  assert_int_equal (backup_chunk_decode (NULL, NULL, enc, e2, out, n, &len),
                    -EPROTONOSUPPORT);
  assert_non_null (strstr (vbk_error (), "newer"));
  free (plain);
  free (enc);
  free (out);
}

/* CRC-32 of the gzip polynomial, bit by bit: the reference the chunk
 * header's checksum must match, whatever library computes it. */
static uint32_t
ref_crc32 (const unsigned char *p, size_t n)
{
  uint32_t c = 0xffffffffu;
  size_t i;
  int k;

  for (i = 0; i < n; i++) {
    c ^= p[i];
    for (k = 0; k < 8; k++)
      c = c & 1 ? (c >> 1) ^ 0xedb88320u : c >> 1;
  }
  return ~c;
}

static uint32_t
le32 (const unsigned char *p)
{
  return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t) p[3] << 24;
}

/* The stored CRC-32 is the format's (FORMAT.md: zlib's), on short and
 * long payloads and at every alignment a fast implementation treats
 * apart: chunks written by any version stay readable. */
static void
test_chunk_crc (void **state)
{
  size_t sizes[] = { 9, 15, 64, 257, 4096 + 3, 65536 + 5, 1 << 20 };
  size_t i, len, n;
  unsigned char *plain = malloc ((1 << 20) + 64), *out = malloc (1 << 20);
  unsigned char *enc = malloc (backup_chunk_bound ((1 << 20) + 64));
  unsigned seed = 7;
  ssize_t e;

  memcpy (enc, "123456789", 9);
  assert_int_equal (ref_crc32 (enc, 9), 0xcbf43926u);
  fill_random ((char *) plain, (1 << 20) + 64, &seed);
  for (i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    for (size_t shift = 0; shift < 3; shift++) {
      n = sizes[i];
      if (n == 9 && shift == 0)
        memcpy (plain, "123456789", 9);
      e = backup_chunk_encode (NULL, NULL, plain + shift, n, enc);
      assert_int_equal (e, n + BACKUP_CHUNK_HDR);
      assert_int_equal (enc[6], BACKUP_CODEC_NONE);
      assert_int_equal (le32 (enc + 16),
                        ref_crc32 (enc + BACKUP_CHUNK_HDR, n));
      if (n == 9 && shift == 0)
        assert_int_equal (le32 (enc + 16), 0xcbf43926u);
      assert_int_equal (backup_chunk_decode (NULL, NULL, enc, e, out, n,
                                             &len), 0);
      assert_memory_equal (out, plain + shift, n);
      /* A header CRC one bit off is refused. */
      enc[16] ^= 1;
      assert_int_equal (backup_chunk_decode (NULL, NULL, enc, e, out, n,
                                             &len), -EBADMSG);
    }
  }
  free (plain);
  free (out);
  free (enc);
}

/* ---- Parted chunks (format 2) ------------------------------------------------ */

enum { KIND_RANDOM, KIND_TEXT, KIND_ZERO, KIND_MIXED, KIND_N };

/* PLAIN filled with data of KIND: random, text, zeros, or a mix in
 * pieces that do not line up with parts. */
static void
fill_kind (char *plain, size_t n, int kind, unsigned *seed)
{
  static const char words[] = "the quick brown fox jumps over the lazy dog ";
  size_t i;

  for (i = 0; i < n; i++)
    plain[i] = words[(i * 7 + i / 45) % (sizeof words - 1)];
  if (kind == KIND_RANDOM)
    fill_random (plain, n, seed);
  else if (kind == KIND_ZERO)
    memset (plain, 0, n);
  else if (kind == KIND_MIXED)
    for (i = 0; i < n; i += 50000) {
      size_t m = MIN ((size_t) 50000, n - i);

      if ((i / 50000) % 3 == 0)
        fill_random (plain + i, m, seed);
      else if ((i / 50000) % 3 == 1)
        memset (plain + i, 0, m);
    }
}

/* Round trips through the parted layout (random, text, zeros, mixed;
 * whole chunks, a short last chunk, a chunk of less than one part); the
 * table parses, every part decodes alone to its plain bytes; whole and
 * parted sizes printed for text and mixed data. */
static void
test_chunk_parts_format (void **state)
{
  size_t sizes[] = { 1 << 20, (1 << 20) - 5000, 100, 65536, 65537 };
  size_t max = 1 << 20, len, si, need;
  char *plain = malloc (max), *out = malloc (max);
  char *enc = malloc (backup_chunk_bound (max));
  char *whole = malloc (backup_chunk_bound (max));
  unsigned seed = 11;
  int kind;

  for (kind = 0; kind < KIND_N; kind++)
    for (si = 0; si < sizeof sizes / sizeof *sizes; si++) {
      size_t n = sizes[si];
      struct backup_part_table t;
      ssize_t e, w;
      uint32_t i;

      fill_kind (plain, n, kind, &seed);
      e = backup_chunk_encode_parts (plain, n, enc);
      assert_true (e > BACKUP_CHUNK_HDR && (size_t) e <= backup_chunk_bound (n));
      assert_int_equal (le32 ((unsigned char *) enc + 4) & 0xffff, 2);
      memset (out, 0x55, max);
      assert_int_equal (backup_chunk_decode (NULL, NULL, enc, e, out, n, &len), 0);
      assert_int_equal (len, n);
      assert_memory_equal (out, plain, n);
      /* As a data reader decodes it (no CRC-32s). */
      assert_int_equal (backup_chunk_decode_flags (NULL, NULL, enc, e, out, n,
                                                   &len, BACKUP_DECODE_DATA), 0);
      assert_memory_equal (out, plain, n);
      /* Not in an encrypted repository. */
      assert_int_equal (backup_chunk_head ((unsigned char *) enc, &need), 2);
      assert_int_equal (backup_part_table_parse (enc, need, n, &t), 0);
      assert_int_equal (t.count, (n + 65535) / 65536);
      assert_int_equal (t.plain, n);
      for (i = 0; i < t.count; i++) {
        size_t pl = backup_part_plain (&t, i);

        assert_int_equal (pl, MIN ((size_t) 65536, n - (size_t) i * 65536));
        assert_int_equal (backup_part_decode (&t, i, enc + t.part[i].off, out,
                                              0), 0);
        assert_memory_equal (out, plain + (size_t) i * 65536, pl);
        /* Zeros and text compress; random bytes are kept raw. */
        if (kind == KIND_ZERO || kind == KIND_TEXT)
          assert_true (t.part[i].codec == BACKUP_CODEC_LZ4 || pl < 64);
        if (kind == KIND_RANDOM)
          assert_int_equal (t.part[i].codec, BACKUP_CODEC_NONE);
      }
      backup_part_table_free (&t);
      if (n == max && (kind == KIND_TEXT || kind == KIND_MIXED)) {
        w = backup_chunk_encode (NULL, NULL, plain, n, whole);
        print_message ("%s 1 MiB: whole %zd bytes, parted %zd (%+.2f%%)\n",
                       kind == KIND_TEXT ? "text" : "mixed", w, e,
                       100.0 * (e - w) / w);
      }
    }
  free (plain);
  free (out);
  free (enc);
  free (whole);
}

/* Puts CRC-32 of the table of ENC back (after a test changed it). */
static void
fix_table_crc (unsigned char *enc)
{
  uint32_t count = le32 (enc + 20), c;

  c = ref_crc32 (enc + BACKUP_CHUNK_HDR, (size_t) count * BACKUP_PART_ENTRY);
  enc[16] = c;
  enc[17] = c >> 8;
  enc[18] = c >> 16;
  enc[19] = c >> 24;
}

/* Damage: a flipped bit in one part fails that part (naming it) and the
 * whole chunk, not the other parts; a damaged table, wrong sizes, a
 * truncated object, a bad part size and a newer major are refused with
 * a message, never a crash. */
static void
test_chunk_parts_corrupt (void **state)
{
  size_t n = (1 << 20) - 3000, len, need;
  char *plain = malloc (n), *out = malloc (n), *enc = malloc (backup_chunk_bound (n));
  unsigned char *u = (unsigned char *) enc, save;
  struct backup_part_table t;
  unsigned seed = 5;
  ssize_t e;

  fill_kind (plain, n, KIND_MIXED, &seed);
  e = backup_chunk_encode_parts (plain, n, enc);
  assert_int_equal (backup_chunk_head (u, &need), 2);
  assert_int_equal (backup_part_table_parse (enc, need, n, &t), 0);

  /* A flipped bit in part 3. */
  u[t.part[3].off + 10] ^= 0x20;
  assert_int_equal (backup_part_decode (&t, 3, enc + t.part[3].off, out, 0),
                    -EBADMSG);
  assert_non_null (strstr (vbk_error (), "part 3 "));
  assert_non_null (strstr (vbk_error (), "checksum mismatch"));
  assert_int_equal (backup_part_decode (&t, 4, enc + t.part[4].off, out, 0), 0);
  assert_memory_equal (out, plain + 4 * 65536, 65536);
  assert_int_equal (backup_chunk_decode (NULL, NULL, enc, e, out, n, &len),
                    -EBADMSG);
  assert_non_null (strstr (vbk_error (), "part 3 "));
  u[t.part[3].off + 10] ^= 0x20;

  /* The table: any changed byte fails its CRC-32. */
  u[BACKUP_CHUNK_HDR + 5 * BACKUP_PART_ENTRY] ^= 1;
  assert_int_equal (backup_chunk_decode (NULL, NULL, enc, e, out, n, &len),
                    -EBADMSG);
  assert_non_null (strstr (vbk_error (), "part table checksum"));
  backup_part_table_free (&t);
  assert_int_equal (backup_part_table_parse (enc, need, n, &t), -EBADMSG);
  u[BACKUP_CHUNK_HDR + 5 * BACKUP_PART_ENTRY] ^= 1;

  /* A part length changed with the table's CRC-32 made right: the parts
   * no longer fill the stored size. */
  save = u[BACKUP_CHUNK_HDR + 2 * BACKUP_PART_ENTRY];
  u[BACKUP_CHUNK_HDR + 2 * BACKUP_PART_ENTRY] = save - 1;
  fix_table_crc (u);
  assert_int_equal (backup_chunk_decode (NULL, NULL, enc, e, out, n, &len),
                    -EBADMSG);
  u[BACKUP_CHUNK_HDR + 2 * BACKUP_PART_ENTRY] = save;
  /* A raw part whose length is not its plain size, an unknown codec. */
  save = u[BACKUP_CHUNK_HDR + 0 * BACKUP_PART_ENTRY + 8];
  u[BACKUP_CHUNK_HDR + 0 * BACKUP_PART_ENTRY + 8] = 7;
  fix_table_crc (u);
  assert_int_equal (backup_chunk_decode (NULL, NULL, enc, e, out, n, &len),
                    -EBADMSG);
  assert_non_null (strstr (vbk_error (), "bad entry"));
  u[BACKUP_CHUNK_HDR + 0 * BACKUP_PART_ENTRY + 8] = save;
  fix_table_crc (u);
  assert_int_equal (backup_chunk_decode (NULL, NULL, enc, e, out, n, &len), 0);
  assert_memory_equal (out, plain, n);

  /* Truncated: in a part, in the table, in the header. */
  assert_int_equal (backup_chunk_decode (NULL, NULL, enc, e - 1, out, n, &len),
                    -EBADMSG);
  assert_int_equal (backup_chunk_decode (NULL, NULL, enc, need - 1, out, n,
                                         &len), -EBADMSG);
  assert_non_null (strstr (vbk_error (), "truncated"));
  assert_int_equal (backup_part_table_parse (enc, need - 1, n, &t), -EBADMSG);
  assert_int_equal (backup_chunk_decode (NULL, NULL, enc, 20, out, n, &len),
                    -EBADMSG);
  /* Too big for the caller; a plain size the part count does not fit. */
  assert_int_equal (backup_chunk_decode (NULL, NULL, enc, e, out, n - 1, &len),
                    -EBADMSG);
  u[10] ^= 1;           /* plain size 64 KiB off: a part too many */
  assert_int_equal (backup_chunk_head (u, &need), -EBADMSG);
  assert_int_equal (backup_chunk_decode (NULL, NULL, enc, e, out, 2 * n, &len),
                    -EBADMSG);
  u[10] ^= 1;
  assert_int_equal (backup_chunk_head (u, &need), 2);
  /* A bad part size, flags, a newer major. */
  u[6] = 40;
  assert_int_equal (backup_chunk_decode (NULL, NULL, enc, e, out, n, &len),
                    -EBADMSG);
  assert_non_null (strstr (vbk_error (), "part size"));
  u[6] = BACKUP_PART_SHIFT;
  u[7] = 1;
  assert_int_equal (backup_chunk_decode (NULL, NULL, enc, e, out, n, &len),
                    -EBADMSG);
  u[7] = 0;
  u[4] = 3;
  assert_int_equal (backup_chunk_decode (NULL, NULL, enc, e, out, n, &len),
                    -EPROTONOSUPPORT);
  assert_non_null (strstr (vbk_error (), "newer"));
  assert_int_equal (backup_chunk_head (u, &need), -EPROTONOSUPPORT);
  u[4] = 2;
  /* A parted chunk read where an encrypted one belongs. */
  {
    static const struct backup_crypt k = { .enc = "k", .id = "i" };

    assert_int_equal (backup_chunk_decode (&k, NULL, enc, e, out, n, &len),
                      -EBADMSG);
  }
  assert_int_equal (backup_chunk_decode (NULL, NULL, enc, e, out, n, &len), 0);
  free (plain);
  free (out);
  free (enc);
}

/* Encrypted chunks and sealed objects: round trip, a fresh nonce each
 * time, a flipped bit or another name refused by the GCM tag, plain
 * objects refused where encrypted ones belong and the other way round. */
static void
test_chunk_encrypted (void **state)
{
  struct backup_crypt k, k2;
  unsigned char id[BACKUP_DIGEST_LEN], id2[BACKUP_DIGEST_LEN];
  size_t n = 65536, len, olen;
  char *plain = malloc (n), *enc = malloc (backup_chunk_bound (n));
  char *enc2 = malloc (backup_chunk_bound (n)), *out = malloc (n), *o;
  void *sealed;
  ssize_t e1, e2;

  memset (&k, 1, sizeof k);
  memset (&k2, 2, sizeof k2);
  memset (plain, 'a', n);
  memcpy (plain, "a known pattern", 15);
  memset (id, 7, sizeof id);
  memset (id2, 8, sizeof id2);
  e1 = backup_chunk_encode (&k, id, plain, n, enc);
  assert_true (e1 > 0 && e1 < (ssize_t) n / 4);
  assert_int_equal (enc[7], BACKUP_CHUNK_ENCRYPTED);
  assert_null (memmem (enc, e1, "a known pattern", 15));
  e2 = backup_chunk_encode (&k, id, plain, n, enc2);
  assert_int_equal (e1, e2);
  assert_memory_not_equal (enc + 20, enc2 + 20, BACKUP_NONCE_LEN);
  assert_int_equal (backup_chunk_decode (&k, id, enc, e1, out, n, &len), 0);
  assert_int_equal (len, n);
  assert_memory_equal (out, plain, n);
  /* Another key, another name, a flipped bit, a plain reader. */
  assert_int_equal (backup_chunk_decode (&k2, id, enc, e1, out, n, &len),
                    -EBADMSG);
  assert_non_null (strstr (vbk_error (), "tag"));
  assert_int_equal (backup_chunk_decode (&k, id2, enc, e1, out, n, &len),
                    -EBADMSG);
  enc[BACKUP_CHUNK_HDR + 5] ^= 0x10;
  assert_int_equal (backup_chunk_decode (&k, id, enc, e1, out, n, &len),
                    -EBADMSG);
  assert_non_null (strstr (vbk_error (), "authentication failed"));
  enc[BACKUP_CHUNK_HDR + 5] ^= 0x10;
  enc[8] ^= 1;                   /* the plain size is authenticated */
  assert_int_equal (backup_chunk_decode (&k, id, enc, e1, out, n, &len),
                    -EBADMSG);
  enc[8] ^= 1;
  assert_int_equal (backup_chunk_decode (NULL, id, enc, e1, out, n, &len),
                    -EBADMSG);
  e2 = backup_chunk_encode (NULL, id, plain, n, enc2);
  assert_int_equal (backup_chunk_decode (&k, id, enc2, e2, out, n, &len),
                    -EBADMSG);
  assert_non_null (strstr (vbk_error (), "plain chunk"));

  assert_int_equal (backup_seal (&k, "obj.a", "secret manifest", 15, &sealed,
                                 &olen), 0);
  assert_int_equal (olen, BACKUP_SEAL_HDR + 15 + BACKUP_TAG_LEN);
  assert_null (memmem (sealed, olen, "secret", 6));
  assert_int_equal (backup_unseal (&k, "obj.a", sealed, olen, &o, &len), 0);
  assert_int_equal (len, 15);
  assert_string_equal (o, "secret manifest");
  free (o);
  assert_int_equal (backup_unseal (&k, "obj.b", sealed, olen, &o, &len),
                    -EBADMSG);
  assert_int_equal (backup_unseal (&k2, "obj.a", sealed, olen, &o, &len),
                    -EBADMSG);
  ((char *) sealed)[BACKUP_SEAL_HDR + 3] ^= 1;
  assert_int_equal (backup_unseal (&k, "obj.a", sealed, olen, &o, &len),
                    -EBADMSG);
  assert_int_equal (backup_unseal (&k, "obj.a", "{\"format\": 1}", 13, &o,
                                   &len), -EBADMSG);
  free (sealed);
  free (plain);
  free (enc);
  free (enc2);
  free (out);
}

static void
test_index_format (void **state)
{
  struct backup_index ix = { .size = 100000, .chunk_size = 16384 }, p;
  unsigned char *buf;
  void *vbuf;
  size_t len;
  uint64_t i;

  ix.count = 7;
  ix.digest = calloc (7, BACKUP_DIGEST_LEN);
  for (i = 0; i < 7; i++)
    ix.digest[i][0] = (unsigned char) i;
  assert_int_equal (backup_index_encode (&ix, &vbuf, &len), 0);
  buf = vbuf;
  assert_int_equal (len, BACKUP_INDEX_HDR + 7 * 32);
  assert_int_equal (backup_index_parse (buf, len, &p), 0);
  assert_int_equal (p.count, 7);
  assert_int_equal (p.size, 100000);
  assert_memory_equal (p.digest, ix.digest, 7 * 32);
  backup_index_free (&p);
  assert_int_equal (backup_index_parse (buf, len - 1, &p), -EBADMSG);
  assert_int_equal (backup_index_parse (buf, len - 32, &p), -EBADMSG);
  assert_int_equal (backup_index_parse (buf, 20, &p), -EBADMSG);
  buf[12] = 3;                   /* chunk size not a power of two */
  assert_int_equal (backup_index_parse (buf, len, &p), -EBADMSG);
  buf[12] = 0;
  buf[8] = BACKUP_FORMAT_MAJOR + 1;
  assert_int_equal (backup_index_parse (buf, len, &p), -EPROTONOSUPPORT);
  free (buf);
  free (ix.digest);
}

static void
test_manifest_format (void **state)
{
  const char *good = "{\"format\": \"1.3\", \"id\": \"20260101T000000Z-1\", "
    "\"image\": \"d\", \"size\": 100000, \"chunk_size\": 16384, \"chunks\": 7,"
    " \"time_ms\": 5, \"snapshot\": \"s\", \"parent\": null, \"protected\": "
    "true, \"index_sha256\": \"" "0123456789abcdef0123456789abcdef"
    "0123456789abcdef0123456789abcdef\", \"future\": [1]}\n";
  struct backup_manifest m;
  char *bad;

  assert_int_equal (backup_manifest_parse (good, strlen (good), &m), 0);
  assert_string_equal (m.image, "d");
  assert_true (m.protected_);
  assert_int_equal (m.chunks, 7);
  assert_string_equal (m.parent, "");
  /* Truncated anywhere: refused. */
  assert_int_equal (backup_manifest_parse (good, strlen (good) / 2, &m),
                    -EBADMSG);
  bad = strdup (good);
  memcpy (strstr (bad, "1.3"), "2.0", 3);
  assert_int_equal (backup_manifest_parse (bad, strlen (bad), &m),
                    -EPROTONOSUPPORT);
  assert_non_null (strstr (vbk_error (), "newer"));
  free (bad);
  bad = strdup (good);
  memcpy (strstr (bad, "\"chunks\": 7"), "\"chunks\": 8", 11);
  assert_int_equal (backup_manifest_parse (bad, strlen (bad), &m), -EBADMSG);
  free (bad);
  bad = strdup (good);
  memcpy (strstr (bad, "\"size\""), "\"sixe\"", 6);
  assert_int_equal (backup_manifest_parse (bad, strlen (bad), &m), -EBADMSG);
  assert_non_null (strstr (vbk_error (), "size"));
  free (bad);
  assert_int_equal (backup_manifest_parse ("[]", 2, &m), -EBADMSG);
  assert_int_equal (backup_manifest_parse ("", 0, &m), -EBADMSG);
}

static void
test_digest_set (void **state)
{
  struct backup_set s;
  unsigned char d[32];
  unsigned i;

  backup_set_init (&s);
  for (i = 0; i < 5000; i++) {
    backup_sha256 (&i, sizeof i, d);
    assert_int_equal (backup_set_add (&s, d), 1);
  }
  for (i = 0; i < 5000; i++) {
    backup_sha256 (&i, sizeof i, d);
    assert_int_equal (backup_set_add (&s, d), 0);
    assert_true (backup_set_has (&s, d));
  }
  i = 99999;
  backup_sha256 (&i, sizeof i, d);
  assert_false (backup_set_has (&s, d));
  assert_int_equal (s.n, 5000);
  backup_set_free (&s);
}

/* ---- Copy engine -------------------------------------------------------------- */

/* A memory source with holes where it is zero at 4 KiB granularity,
 * and a destination that fails its Nth write. */
struct memx {
  char *buf;
  uint64_t size;
  int fail_at, writes;
  pthread_mutex_t lock;
  uint64_t written;
};

static ssize_t
mx_pread (void *h, void *buf, size_t len, uint64_t off)
{
  memcpy (buf, ((struct memx *) h)->buf + off, len);
  return len;
}

static int
mx_pwrite (void *h, const void *buf, size_t len, uint64_t off)
{
  struct memx *m = h;
  int n;

  pthread_mutex_lock (&m->lock);
  n = ++m->writes;
  m->written += len;
  pthread_mutex_unlock (&m->lock);
  if (m->fail_at && n == m->fail_at)
    return vbk_errno (-ENOSPC, "memx: write %d", n);
  memcpy (m->buf + off, buf, len);
  return 0;
}

static int
mx_extents (void *h, uint64_t off, uint64_t len, image_extent_cb cb,
            void *arg)
{
  struct memx *m = h;
  uint64_t end = off + len, s = off;
  int a = -1, x, r;

  for (; off < end; off += 4096) {
    x = !copy_is_zero (m->buf + off, MIN (4096, end - off));
    if (a >= 0 && x != a) {
      if ((r = cb (arg, s, off - s, a)))
        return r;
      s = off;
    }
    a = x;
  }
  return a >= 0 ? cb (arg, s, end - s, a) : 0;
}

static uint64_t
mx_size (void *h)
{
  return ((struct memx *) h)->size;
}

static const struct copy_ops mx_ops = {
  .kind = "memx", .pread = mx_pread, .pwrite = mx_pwrite,
  .extents = mx_extents, .size = mx_size,
};

static void
test_copy_engine (void **state)
{
  const uint64_t size = (1 << 20) + 12345;
  struct memx s = { .size = size }, d = { .size = size };
  struct copy_endpoint src = { &mx_ops, &s, "src" }, dst = { &mx_ops, &d, "dst" };
  struct copy_opts o = { .piece = 65536, .threads = 3 };
  struct copy_result res;
  struct copy_range ranges[2] = { { 1000, 5000 }, { 500000, 200000 } };
  unsigned seed = 7;

  s.buf = calloc (1, size);
  d.buf = calloc (1, size);
  pthread_mutex_init (&s.lock, NULL);
  pthread_mutex_init (&d.lock, NULL);
  fill_random (s.buf + 100000, 300000, &seed);
  fill_random (s.buf + size - 5000, 5000, &seed);
  memset (s.buf + 200000, 0, 70000);  /* zeros inside data */
  memset (d.buf, 0x55, size);

  /* Plain copy into a non-zero destination: holes are written as zeros
   * (no zero op), every byte ends equal. */
  assert_int_equal (copy_run (&src, &dst, &o, &res), 0);
  assert_memory_equal (s.buf, d.buf, size);
  assert_int_equal (res.total, size);
  assert_true (res.read < size);         /* holes were not read */

  /* Into a zeroed destination, skipping zeros: fewer bytes written. */
  memset (d.buf, 0, size);
  d.written = 0;
  o.skip_zero = o.dst_zeroed = 1;
  assert_int_equal (copy_run (&src, &dst, &o, &res), 0);
  assert_memory_equal (s.buf, d.buf, size);
  assert_true (d.written <= 300000 + 5000 + 2 * 65536);

  /* Whole pieces: every write is one aligned piece (or the tail). */
  memset (d.buf, 0, size);
  o.whole_pieces = 1;
  o.skip_zero = 0;
  d.writes = 0;
  d.written = 0;
  assert_int_equal (copy_run (&src, &dst, &o, &res), 0);
  assert_memory_equal (s.buf, d.buf, size);
  assert_int_equal (d.written % 65536, size % 65536);

  /* Given ranges only. */
  memset (d.buf, 0, size);
  o.whole_pieces = 0;
  o.ranges = ranges;
  o.nranges = 2;
  assert_int_equal (copy_run (&src, &dst, &o, &res), 0);
  assert_int_equal (res.total, 205000);
  assert_memory_equal (s.buf + 500000, d.buf + 500000, 200000);
  assert_true (copy_is_zero (d.buf + 200000 + 70000, 500000 - 270000));

  /* A failing write: the first error and its message come back. */
  o.ranges = NULL;
  d.fail_at = 3;
  d.writes = 0;
  vbk_clear_error ();
  assert_int_equal (copy_run (&src, &dst, &o, &res), -ENOSPC);
  assert_non_null (strstr (vbk_error (), "memx: write 3"));

  /* The worker queue alone. */
  {
    struct copy_endpoint *m1, *m2;
    char a[1000], b[1000];

    memset (a, 9, sizeof a);
    memset (b, 0, sizeof b);
    assert_int_equal (copy_endpoint_memory (a, sizeof a, &m1), 0);
    assert_int_equal (copy_endpoint_memory (b, sizeof b, &m2), 0);
    o = (struct copy_opts) { .piece = 64 };
    assert_int_equal (copy_run (m1, m2, &o, &res), 0);
    assert_memory_equal (a, b, sizeof a);
    copy_endpoint_close (m1);
    copy_endpoint_close (m2);
  }
  free (s.buf);
  free (d.buf);
}

/* ---- Repository ------------------------------------------------------------------ */

struct fixture {
  char uri[4096], repo_uri[4096];
  struct store *st;
  struct backup_repo *r;
};

static int
setup (void **state)
{
  struct fixture *f = calloc (1, sizeof *f);

  test_store_uri (f->uri, sizeof f->uri);
  test_store_uri (f->repo_uri, sizeof f->repo_uri);
  if (store_open (f->uri, &f->st) < 0)
    return -1;
  if (backup_repo_init (f->repo_uri, 16384) < 0
      || backup_repo_open (f->repo_uri, &f->r) < 0)
    return -1;
  *state = f;
  return 0;
}

static int
teardown (void **state)
{
  struct fixture *f = *state;

  backup_repo_close (f->r);
  store_close (f->st);
  test_store_cleanup (f->uri);
  test_store_cleanup (f->repo_uri);
  free (f);
  return 0;
}

static void
test_repo_open (void **state)
{
  struct fixture *f = *state;
  char uri[4096];
  struct backup_repo *r;
  struct store *st;
  const char *newer = "{\"format\": \"3.0\", \"chunk_size\": 16384}";

  assert_int_equal (backup_repo_init (f->repo_uri, 0), -EEXIST);
  assert_int_equal (backup_repo_chunk_size (f->r), 16384);
  test_store_uri (uri, sizeof uri);
  assert_int_equal (backup_repo_open (uri, &r), -ENOENT);
  assert_non_null (strstr (vbk_error (), "no repository"));
  assert_int_equal (backup_repo_init (uri, 1000), -EINVAL);
  assert_int_equal (store_open (uri, &st), 0);
  assert_int_equal (store_write_full (st, BACKUP_CONFIG_OID, newer,
                                      strlen (newer), STORE_WRITE_SYNC), 0);
  assert_int_equal (backup_repo_open (uri, &r), -EPROTONOSUPPORT);
  assert_non_null (strstr (vbk_error (), "3.0 is newer"));
  store_close (st);
  test_store_cleanup (uri);
}

#define OBJ (64 * 1024)
#define IMG_SIZE (2 * 1024 * 1024 + 5000)

/* Writes N random 8 KiB blocks through a handle of its own (a snapshot
 * taken meanwhile by another handle must be seen by the next writer). */
static uint64_t img_size = IMG_SIZE;

static void
write_random (struct store *st, const char *name, unsigned *seed, int n)
{
  struct image *img;
  char buf[8192];
  int i;

  assert_int_equal (image_open (st, name, 0, &img), 0);
  for (i = 0; i < n; i++) {
    uint64_t off = (uint64_t) (rand_r (seed) % (img_size - sizeof buf));

    fill_random (buf, sizeof buf, seed);
    assert_int_equal (image_write (img, buf, sizeof buf, off, 0), 0);
  }
  assert_int_equal (image_flush (img), 0);
  image_close (img);
}

static void
run_one (struct fixture *f, const char *image, struct backup_run_result *res)
{
  const char *images[1] = { image };
  struct backup_run_opts o = { .st = f->st, .images = images, .nimages = 1,
                               .host_id = "test", .cbt_sample = 2 };

  vbk_clear_error ();
  if (backup_run (f->r, &o, res) < 0)
    fail_msg ("backup_run: %s", vbk_error ());
}

/* Compares backup ID with snapshot SNAP of IMAGE byte for byte. */
static void
check_equal (struct fixture *f, const char *id, const char *image,
             const char *snap)
{
  struct backup_reader *rd;
  struct image *img;
  uint64_t size, off;
  char *a = malloc (100000), *b = malloc (100000);
  size_t n;

  assert_int_equal (backup_reader_open (f->r, id, &rd), 0);
  assert_int_equal (image_open_snap (f->st, image, snap, &img), 0);
  size = image_size (img);
  assert_int_equal (backup_reader_size (rd), size);
  for (off = 0; off < size; off += n) {
    n = MIN (100000, size - off);
    assert_int_equal (image_read (img, a, n, off), n);
    if (backup_reader_pread (rd, b, n, off) != (ssize_t) n)
      fail_msg ("pread: %s", vbk_error ());
    assert_memory_equal (a, b, n);
  }
  image_close (img);
  backup_reader_close (rd);
  free (a);
  free (b);
}

struct ext_count {
  uint64_t data, holes;
};

static int
count_ext (void *arg, uint64_t off, uint64_t len, int allocated)
{
  struct ext_count *c = arg;

  if (allocated)
    c->data += len;
  else
    c->holes += len;
  return 0;
}

static void
test_run_and_read (void **state)
{
  struct fixture *f = *state;
  struct backup_run_result r1, r2;
  struct backup_entry *list;
  struct backup_reader *rd;
  struct ext_count ec = { 0 };
  unsigned seed = 3;
  size_t n;
  char *json;

#define NAME "d"
  assert_int_equal (image_create (f->st, "d", IMG_SIZE, OBJ), 0);
  write_random (f->st, NAME, &seed, 20);
  run_one (f, "d", &r1);
  assert_true (r1.full);
  /* Snapshot 1 is removed by the next backup: compare now. */
  check_equal (f, r1.id, "d", r1.snapshot);
  assert_int_equal (backup_reader_open (f->r, r1.id, &rd), 0);
  assert_int_equal (backup_reader_extents (rd, 0, IMG_SIZE, count_ext, &ec),
                    0);
  assert_int_equal (ec.data + ec.holes, IMG_SIZE);
  assert_true (ec.holes > 0 && ec.data > 0);
  backup_reader_close (rd);

  write_random (f->st, NAME, &seed, 3);
  run_one (f, "d", &r2);
  assert_false (r2.full);
  assert_string_equal (r2.parent, r1.id);
  assert_true (r2.chunks_read <= 3 * 2);   /* 8 KiB writes: <= 2 chunks each */
  check_equal (f, r2.id, "d", r2.snapshot);
#undef NAME

  assert_int_equal (backup_list (f->r, "d", &list, &n), 0);
  assert_int_equal (n, 2);
  assert_string_equal (list[0].id, r1.id);
  free (list);
  assert_int_equal (backup_manifest_json (f->r, r2.id, &json), 0);
  assert_non_null (strstr (json, r1.id));
  free (json);
  assert_int_equal (backup_reader_open (f->r, "nope", &rd), -ENOENT);
}

/* ---- Part reads through a repository ----------------------------------------- */

#define PCS (1u << 20)                  /* chunk size of these repositories */
#define PIMG (3 * PCS + 300000)         /* three chunks and a short one */

/* A repository of chunk size PCS at URI, its config's format set to FMT
 * ("1.0": a repository as an older vbk made it, whose chunks are written
 * whole; "2.0": parted). */
static struct backup_repo *
parts_repo (const char *uri, const char *fmt)
{
  struct backup_repo *r;
  struct store *st;
  char cfg[128];

  assert_int_equal (store_open (uri, &st), 0);
  snprintf (cfg, sizeof cfg, "{\"format\": \"%s\", \"chunk_size\": %u}", fmt,
            PCS);
  assert_int_equal (store_write_full (st, BACKUP_CONFIG_OID, cfg, strlen (cfg),
                                      STORE_WRITE_SYNC), 0);
  store_close (st);
  assert_int_equal (backup_repo_open (uri, &r), 0);
  return r;
}

/* Writes the image IMAGE (PIMG bytes) from DATA and backs it up into R. */
static void
parts_backup (struct fixture *f, struct backup_repo *r, const char *image,
              const char *data, struct backup_run_result *res)
{
  const char *images[1] = { image };
  struct backup_run_opts o = { .st = f->st, .images = images, .nimages = 1,
                               .host_id = "test", .cbt_sample = 2 };
  struct image *img;

  assert_int_equal (image_open (f->st, image, 0, &img), 0);
  assert_int_equal (image_write (img, data, PIMG, 0, 0), 0);
  assert_int_equal (image_flush (img), 0);
  image_close (img);
  vbk_clear_error ();
  if (backup_run (r, &o, res) < 0)
    fail_msg ("backup_run: %s", vbk_error ());
}

/* Reads of [OFF, OFF+LEN) with FLAGS equal DATA there. */
static void
parts_expect (struct backup_reader *rd, const char *data, uint64_t off,
              size_t len, int flags)
{
  char *b = malloc (len ? len : 1);

  vbk_clear_error ();
  if (backup_reader_pread_flags (rd, b, len, off, flags) != (ssize_t) len)
    fail_msg ("pread %zu at %llu: %s", len, (unsigned long long) off,
              vbk_error ());
  assert_memory_equal (b, data + off, len);
  free (b);
}

/* Ranged reads around part and chunk boundaries, part by part and the
 * usual way, against the image's bytes. */
static void
parts_check_all (struct backup_reader *rd, const char *data)
{
  uint64_t c, p;
  int fl;

  for (fl = 0; fl < 2; fl++) {
    int flags = fl ? BACKUP_READ_PARTS : 0;

    for (c = 0; c * PCS < PIMG; c++)
      for (p = 0; p <= PCS; p += 65536) {
        uint64_t at = c * PCS + p;

        if (at >= PIMG)
          break;
        parts_expect (rd, data, at, MIN ((uint64_t) 4096, PIMG - at), flags);
        if (at >= 1)
          parts_expect (rd, data, at - 1, MIN ((uint64_t) 2, PIMG - at + 1),
                        flags);
        if (at >= 100)
          parts_expect (rd, data, at - 100,
                        MIN ((uint64_t) 3 * 65536 + 7, PIMG - at + 100),
                        flags);
      }
    parts_expect (rd, data, PIMG - 1, 1, flags);
    parts_expect (rd, data, 0, PIMG, flags);
    parts_expect (rd, data, PCS - 5, 10, flags);        /* across chunks */
  }
}

/* A backup written parted (format 2) reads right part by part at every
 * part and chunk boundary, and whole; a backup of the same repository
 * made when its chunks were written whole (format 1.0, as an older vbk
 * made them) still reads, and the two kinds of chunks mix in one
 * repository; backup_reader_check_chunk passes on both kinds. */
static void
test_parts_read (void **state)
{
  struct fixture *f = *state;
  char uri[4096], *data = malloc (PIMG), *d2 = malloc (PIMG);
  struct backup_run_result r1, r2;
  struct backup_reader *rd;
  struct backup_repo *r;
  struct backup_part_table t;
  struct backup_index *ix;
  uint64_t c;
  unsigned seed = 21;
  int kind, parted = 0, whole = 0;

  for (c = 0; c * PCS < PIMG; c++) {
    kind = c % KIND_N == KIND_ZERO ? KIND_MIXED : c % KIND_N;
    fill_kind (data + c * PCS, MIN ((uint64_t) PCS, PIMG - c * PCS), kind,
               &seed);
  }
  test_store_uri (uri, sizeof uri);
  assert_int_equal (backup_repo_init (uri, PCS), 0);
  r = parts_repo (uri, "1.0");
  assert_int_equal (image_create (f->st, "p", PIMG, OBJ), 0);
  parts_backup (f, r, "p", data, &r1);
  assert_int_equal (backup_reader_open (r, r1.id, &rd), 0);
  parts_check_all (rd, data);
  backup_reader_close (rd);
  backup_repo_close (r);

  /* The same repository in format 2; half of the data changed. */
  r = parts_repo (uri, "2.0");
  memcpy (d2, data, PIMG);
  fill_kind (d2 + PCS, PCS, KIND_TEXT, &seed);
  memset (d2 + PCS, 'x', 1000);
  fill_kind (d2 + 3 * PCS, PIMG - 3 * PCS, KIND_RANDOM, &seed);
  parts_backup (f, r, "p", d2, &r2);

  assert_int_equal (backup_reader_open (r, r1.id, &rd), 0);
  parts_check_all (rd, data);
  backup_reader_close (rd);
  assert_int_equal (backup_reader_open (r, r2.id, &rd), 0);
  parts_check_all (rd, d2);
  ix = backup_reader_index (rd);
  for (c = 0; c < ix->count; c++) {
    int e = backup_chunk_table_load (r, ix->digest[c],
                                     MIN ((uint64_t) PCS, PIMG - c * PCS), &t);

    assert_true (e == 0 || e == 1);
    if (e == 0)
      parted++;
    else
      whole++;
    backup_part_table_free (&t);
    assert_int_equal (backup_reader_check_chunk (rd, c * PCS + 17), 0);
  }
  /* Chunks 1 and 3 were written anew (parted), 0 and 2 carried over. */
  assert_int_equal (parted, 2);
  assert_int_equal (whole, 2);
  backup_reader_close (rd);
  backup_repo_close (r);
  test_store_cleanup (uri);
  free (data);
  free (d2);
}

/* A flipped bit in one part of a stored chunk: a part read of it fails
 * with -EIO naming the chunk and the part, a part read of another part
 * of the same chunk still works, and the whole-chunk read, the full
 * check (backup_reader_check_chunk) and verify fail naming the chunk.
 * A damaged part table and a truncated object fail part reads with a
 * message naming the chunk. */
static void
test_parts_corrupt (void **state)
{
  struct fixture *f = *state;
  char uri[4096], hex[BACKUP_HEX_LEN + 1], oid[STORE_NAME_MAX + 1];
  char *data = malloc (PIMG), *obj, *b = malloc (PCS);
  struct backup_run_result r1;
  struct backup_verify_result vr;
  struct backup_reader *rd;
  struct backup_repo *r;
  struct backup_part_table t;
  struct store *st;
  size_t olen;
  unsigned seed = 9;

  fill_kind (data, PIMG, KIND_MIXED, &seed);
  fill_kind (data + PCS, PCS, KIND_TEXT, &seed);
  fill_kind (data + 2 * PCS, PCS, KIND_RANDOM, &seed);
  test_store_uri (uri, sizeof uri);
  assert_int_equal (backup_repo_init (uri, PCS), 0);
  assert_int_equal (backup_repo_open (uri, &r), 0);
  assert_int_equal (image_create (f->st, "q", PIMG, OBJ), 0);
  parts_backup (f, r, "q", data, &r1);
  assert_int_equal (backup_reader_open (r, r1.id, &rd), 0);
  backup_digest_hex (backup_reader_index (rd)->digest[1], hex);
  backup_chunk_oid (backup_reader_index (rd)->digest[1], oid, sizeof oid);
  assert_int_equal (backup_chunk_table_load (r, backup_reader_index (rd)->digest[1],
                                             PCS, &t), 0);
  assert_int_equal (t.count, 16);
  assert_int_equal (t.part[3].codec, BACKUP_CODEC_LZ4);
  backup_reader_close (rd);

  /* Flip a bit in part 3 of chunk 1, in the store. */
  st = backup_repo_store (r);
  assert_int_equal (backup_read_object (st, oid, &obj, &olen), 0);
  obj[t.part[3].off + 3] ^= 0x10;
  assert_int_equal (store_write_full (st, oid, obj, olen, STORE_WRITE_SYNC), 0);

  assert_int_equal (backup_reader_open (r, r1.id, &rd), 0);
  vbk_clear_error ();
  assert_int_equal (backup_reader_pread_flags (rd, b, 100, PCS + 3 * 65536 + 10,
                                               BACKUP_READ_PARTS), -EIO);
  assert_non_null (strstr (vbk_error (), hex));
  assert_non_null (strstr (vbk_error (), "part 3 "));
  assert_non_null (strstr (vbk_error (), "corrupt"));
  /* Parts beside it still read. */
  parts_expect (rd, data, PCS + 4 * 65536, 65536, BACKUP_READ_PARTS);
  parts_expect (rd, data, PCS + 2 * 65536 + 100, 65536 - 100,
                BACKUP_READ_PARTS);
  /* The whole chunk, the full check, verify: fail naming it. */
  vbk_clear_error ();
  assert_int_equal (backup_reader_pread (rd, b, PCS, PCS), -EIO);
  assert_non_null (strstr (vbk_error (), hex));
  vbk_clear_error ();
  assert_int_equal (backup_reader_check_chunk (rd, PCS + 5), -EIO);
  assert_non_null (strstr (vbk_error (), hex));
  vbk_clear_error ();
  assert_int_equal (backup_chunk_read (r, backup_reader_index (rd)->digest[1],
                                       b, PCS), -EIO);
  assert_non_null (strstr (vbk_error (), hex));
  assert_non_null (strstr (vbk_error (), "part 3 "));
  backup_reader_close (rd);
  memset (&vr, 0, sizeof vr);
  assert_int_equal (backup_verify (r, NULL, 0, 100, NULL, NULL, &vr), -EIO);
  assert_int_equal (vr.bad, 1);

  /* The part table damaged: part reads fail naming the chunk. */
  obj[t.part[3].off + 3] ^= 0x10;
  obj[BACKUP_CHUNK_HDR + 7] ^= 1;
  assert_int_equal (store_write_full (st, oid, obj, olen, STORE_WRITE_SYNC), 0);
  assert_int_equal (backup_reader_open (r, r1.id, &rd), 0);
  vbk_clear_error ();
  assert_int_equal (backup_reader_pread_flags (rd, b, 100, PCS + 10,
                                               BACKUP_READ_PARTS), -EIO);
  assert_non_null (strstr (vbk_error (), hex));
  assert_non_null (strstr (vbk_error (), "part table"));
  backup_reader_close (rd);
  /* Truncated in the last part; then to less than a header. */
  obj[BACKUP_CHUNK_HDR + 7] ^= 1;
  assert_int_equal (store_write_full (st, oid, obj, olen - 10,
                                      STORE_WRITE_SYNC), 0);
  assert_int_equal (backup_reader_open (r, r1.id, &rd), 0);
  parts_expect (rd, data, PCS + 10, 100, BACKUP_READ_PARTS);
  vbk_clear_error ();
  assert_int_equal (backup_reader_pread_flags (rd, b, 100, 2 * PCS - 100,
                                               BACKUP_READ_PARTS), -EIO);
  /* (A store reads zeros past the end: the part's CRC-32 catches it.) */
  assert_non_null (strstr (vbk_error (), hex));
  assert_non_null (strstr (vbk_error (), "part 15 "));
  backup_reader_close (rd);
  assert_int_equal (store_write_full (st, oid, obj, 20, STORE_WRITE_SYNC), 0);
  assert_int_equal (backup_reader_open (r, r1.id, &rd), 0);
  vbk_clear_error ();
  assert_int_equal (backup_reader_pread_flags (rd, b, 100, PCS + 10,
                                               BACKUP_READ_PARTS), -EIO);
  assert_non_null (strstr (vbk_error (), hex));
  /* Other chunks read on. */
  parts_expect (rd, data, 2 * PCS + 10, 100, BACKUP_READ_PARTS);

  /* Chunk 2, all parts raw (read whole straight into place): a flipped
   * bit in part 5 fails the CRC-32 check of verify's read naming the
   * part, and the data reader's digest. */
  free (obj);
  backup_digest_hex (backup_reader_index (rd)->digest[2], hex);
  backup_chunk_oid (backup_reader_index (rd)->digest[2], oid, sizeof oid);
  assert_int_equal (backup_read_object (st, oid, &obj, &olen), 0);
  assert_int_equal (olen, BACKUP_CHUNK_HDR + 16 * BACKUP_PART_ENTRY + PCS);
  obj[BACKUP_CHUNK_HDR + 16 * BACKUP_PART_ENTRY + 5 * 65536 + 99] ^= 1;
  assert_int_equal (store_write_full (st, oid, obj, olen, STORE_WRITE_SYNC), 0);
  vbk_clear_error ();
  assert_int_equal (backup_chunk_read (r, backup_reader_index (rd)->digest[2],
                                       b, PCS), -EIO);
  assert_non_null (strstr (vbk_error (), hex));
  assert_non_null (strstr (vbk_error (), "part 5 "));
  vbk_clear_error ();
  assert_int_equal (backup_chunk_read_data (r, backup_reader_index (rd)->digest[2],
                                            b, PCS), -EIO);
  assert_non_null (strstr (vbk_error (), "does not match its name"));
  parts_expect (rd, data, 2 * PCS + 4 * 65536, 65536, BACKUP_READ_PARTS);
  backup_reader_close (rd);
  backup_part_table_free (&t);
  free (obj);
  backup_repo_close (r);
  test_store_cleanup (uri);
  free (data);
  free (b);
}

/* Registry states of a repository's chunks: claimed, and not yet
 * durable ("bad TIME new"); the digest of one of the latter in D. */
struct reg_count {
  int claimed, new_;
  unsigned char first[BACKUP_DIGEST_LEN], d[BACKUP_DIGEST_LEN];
};

static int
count_reg (void *arg, const char *key, const void *val, size_t len)
{
  struct reg_count *c = arg;
  char v[64];

  snprintf (v, sizeof v, "%.*s", (int) MIN (len, sizeof v - 1),
            (const char *) val);
  if (strncmp (v, "bad ", 4) != 0)
    c->claimed++;
  else if (len > 4 && strcmp (v + strlen (v) - 4, " new") == 0) {
    assert_int_equal (backup_hex_digest (key, c->d), 0);
    if (c->new_++ == 0)
      memcpy (c->first, c->d, BACKUP_DIGEST_LEN);
  }
  return 0;
}

static struct reg_count
registry_states (struct fixture *f)
{
  struct reg_count c = { 0 };

  assert_int_equal (store_omap_list (backup_repo_store (f->r),
                                     BACKUP_CHUNKS_OID, "", 100000,
                                     count_reg, &c), 0);
  return c;
}

/* A chunk is claimed only after the flush that made it durable: when the
 * flush fails (the fault: store, on each backend), the run fails and
 * every chunk it wrote stays "new"; such a chunk, even torn as a crash
 * may leave it (cut short, emptied), is written again by the next run,
 * which claims them all and reads back equal to its snapshot.  A failed
 * claim fails with a message naming it. */
static void
test_chunk_claim (void **state)
{
  struct fixture *f = *state;
  struct backup_repo *fr;
  struct backup_run_result res;
  struct reg_count c;
  const char *images[1] = { "c" };
  struct backup_run_opts o = { .st = f->st, .images = images, .nimages = 1,
                               .host_id = "test", .cbt_sample = 2 };
  char uri[4200], oid[STORE_NAME_MAX + 1];
  struct backup_entry *list;
  unsigned char d2[BACKUP_DIGEST_LEN];
  unsigned seed = 11;
  size_t n;

  assert_int_equal (image_create (f->st, "c", IMG_SIZE, OBJ), 0);
  write_random (f->st, "c", &seed, 40);
  snprintf (uri, sizeof uri, "fault:op=write,call=flush,err=EIO@%s",
            f->repo_uri);
  assert_int_equal (backup_repo_open (uri, &fr), 0);
  vbk_clear_error ();
  assert_int_equal (backup_run (fr, &o, &res), -EIO);
  if (strstr (vbk_error (), "flushing chunks") == NULL)
    fail_msg ("failed flush: unclear error: %s", vbk_error ());
  backup_repo_close (fr);
  assert_int_equal (backup_list (f->r, "c", &list, &n), 0);
  free (list);
  assert_int_equal (n, 0);
  c = registry_states (f);
  assert_int_equal (c.claimed, 0);
  assert_true (c.new_ >= 20);
  assert_int_equal (backup_chunk_check (f->r, c.d), -ENOENT);
  if (strstr (vbk_error (), "not durable yet") == NULL)
    fail_msg ("check of a chunk not durable: %s", vbk_error ());

  /* Two of them torn as a power loss may leave them: cut short after
   * the magic, and emptied. */
  backup_chunk_oid (c.first, oid, sizeof oid);
  assert_int_equal (store_write_full (backup_repo_store (f->r), oid, "VBKC",
                                      4, STORE_WRITE_SYNC), 0);
  backup_chunk_oid (c.d, oid, sizeof oid);
  assert_int_equal (store_truncate (backup_repo_store (f->r), oid, 0), 0);
  memcpy (d2, c.d, sizeof d2);

  run_one (f, "c", &res);
  c = registry_states (f);
  assert_int_equal (c.new_, 0);
  assert_true (c.claimed >= 20);
  assert_int_equal (backup_chunk_check (f->r, d2), 0);
  check_equal (f, res.id, "c", res.snapshot);

  /* A failed claim. */
  snprintf (uri, sizeof uri, "fault:op=meta,call=meta_set,err=EIO@%s",
            f->repo_uri);
  assert_int_equal (backup_repo_open (uri, &fr), 0);
  vbk_clear_error ();
  assert_int_equal (backup_chunk_claim (fr, (const unsigned char (*)[32]) d2,
                                        1), -EIO);
  if (strstr (vbk_error (), "claiming 1 chunks") == NULL)
    fail_msg ("failed claim: unclear error: %s", vbk_error ());
  backup_repo_close (fr);
}

/* A restore into a new image lays it out as the backed-up image was:
 * the manifest records the object size (64 KiB here, not the default),
 * and the restored image reads back equal to the backup. */
static void
test_restore_object_size (void **state)
{
  struct fixture *f = *state;
  struct backup_run_result r1;
  struct backup_restore_result rr;
  struct backup_reader *rd;
  struct image_info info;
  struct image *img;
  unsigned seed = 7;
  char *a = malloc (100000), *b = malloc (100000), *json;
  uint64_t off;
  size_t n;

  assert_int_equal (image_create (f->st, "os", IMG_SIZE, OBJ), 0);
  write_random (f->st, "os", &seed, 20);
  run_one (f, "os", &r1);
  assert_int_equal (backup_manifest_json (f->r, r1.id, &json), 0);
  assert_non_null (strstr (json, "\"object_size\""));
  assert_non_null (strstr (strstr (json, "\"object_size\""), "65536"));
  free (json);
  vbk_clear_error ();
  if (backup_restore_image (f->r, r1.id, f->st, "os2", 0,
                            COPY_PROGRESS_NONE, &rr) < 0)
    fail_msg ("restore: %s", vbk_error ());
  assert_int_equal (image_stat (f->st, "os2", &info), 0);
  assert_int_equal (info.object_size, OBJ);
  assert_int_equal (info.size, IMG_SIZE);
  assert_int_equal (backup_reader_open (f->r, r1.id, &rd), 0);
  assert_int_equal (image_open (f->st, "os2", 0, &img), 0);
  for (off = 0; off < IMG_SIZE; off += n) {
    n = MIN (100000, IMG_SIZE - off);
    assert_int_equal (image_read (img, a, n, off), n);
    assert_int_equal (backup_reader_pread (rd, b, n, off), n);
    assert_memory_equal (a, b, n);
  }
  image_close (img);
  backup_reader_close (rd);
  free (a);
  free (b);
}

/* An open reader pins its backup: removed and collected while open, it
 * reads back whole, and the chunks go with the next gc after it closed.
 * A reader record whose lock ran out (its process died) is removed by
 * gc and pins nothing. */
static void
test_reader_pins (void **state)
{
  struct fixture *f = *state;
  struct backup_run_result r1;
  struct backup_gc_result g;
  struct backup_reader *rd;
  char oid[STORE_NAME_MAX + 1], val[128], *buf = malloc (IMG_SIZE);
  char *want = malloc (IMG_SIZE);
  struct image *img;
  unsigned seed = 9;
  ssize_t n;

  assert_int_equal (image_create (f->st, "p", IMG_SIZE, OBJ), 0);
  write_random (f->st, "p", &seed, 20);
  run_one (f, "p", &r1);
  assert_int_equal (image_open_snap (f->st, "p", r1.snapshot, &img), 0);
  assert_int_equal (image_read (img, want, IMG_SIZE, 0), IMG_SIZE);
  image_close (img);

  assert_int_equal (backup_reader_open (f->r, r1.id, &rd), 0);
  assert_int_equal (backup_remove (f->r, r1.id), 0);
  assert_int_equal (backup_gc (f->r, 0, &g), 0);
  assert_int_equal (g.readers_live, 1);
  assert_int_equal (g.removed, 0);
  /* Nothing was read before: every chunk comes from the repository. */
  assert_int_equal (backup_reader_pread (rd, buf, IMG_SIZE, 0), IMG_SIZE);
  assert_memory_equal (buf, want, IMG_SIZE);
  backup_reader_close (rd);
  assert_int_equal (backup_gc (f->r, 0, &g), 0);
  assert_int_equal (g.readers_live, 0);
  assert_true (g.removed > 0);

  /* A dead reader: its key, and a lock that runs out unrenewed. */
  run_one (f, "p", &r1);
  n = snprintf (val, sizeof val, "%s 1 deadhost/1", r1.id);
  backup_reader_oid ("00000000deadbeef", oid, sizeof oid);
  assert_int_equal (store_lock (backup_repo_store (f->r), oid, BACKUP_READER_LOCK,
                                "00000000deadbeef", "test", 200, 0), 0);
  assert_int_equal (store_omap_set (backup_repo_store (f->r), BACKUP_READERS_OID,
                                    "00000000deadbeef", val, n), 0);
  assert_int_equal (backup_remove (f->r, r1.id), 0);
  usleep (400 * 1000);                          /* the lock runs out */
  assert_int_equal (backup_gc (f->r, 0, &g), 0);
  assert_int_equal (g.readers_live, 0);
  assert_int_equal (g.readers_dead, 1);
  assert_true (g.removed > 0);
  assert_int_equal (store_omap_get (backup_repo_store (f->r), BACKUP_READERS_OID,
                                    "00000000deadbeef", val, sizeof val),
                    -ENOENT);
  assert_int_equal (backup_reader_open (f->r, r1.id, &rd), -ENOENT);
  free (buf);
  free (want);
}

/* A reader unpinned while open pins nothing; pinned again it does; a
 * backup removed while unpinned is collected and cannot be pinned again.
 * The catalog lists the backups newest first (until gc cleans up after
 * removed ones), and backup_complete tells a complete backup from a
 * removed one. */
static void
test_reader_unpin_catalog (void **state)
{
  struct fixture *f = *state;
  struct backup_run_result r1, r2;
  struct backup_gc_result g;
  struct backup_entry *list, *cat;
  struct backup_reader *rd;
  char *buf = malloc (IMG_SIZE);
  unsigned seed = 11;
  size_t n, nc;

  assert_int_equal (image_create (f->st, "u", IMG_SIZE, OBJ), 0);
  write_random (f->st, "u", &seed, 20);
  run_one (f, "u", &r1);
  write_random (f->st, "u", &seed, 3);
  run_one (f, "u", &r2);

  assert_int_equal (backup_list (f->r, "u", &list, &n), 0);
  assert_int_equal (backup_catalog_list (f->r, "u", &cat, &nc), 0);
  assert_int_equal (n, 2);
  assert_int_equal (nc, 2);
  assert_string_equal (cat[0].id, r2.id);
  assert_string_equal (cat[1].id, r1.id);
  assert_string_equal (cat[0].image, "u");
  assert_int_equal (cat[0].time_ms, list[1].time_ms);
  assert_int_equal (cat[1].time_ms, list[0].time_ms);
  free (list);
  free (cat);
  assert_int_equal (backup_catalog_list (f->r, "nope", &cat, &nc), 0);
  assert_int_equal (nc, 0);
  free (cat);
  assert_int_equal (backup_complete (f->r, r1.id), 0);
  assert_int_equal (backup_complete (f->r, "20260101T000000Z-00000000"),
                    -ENOENT);

  assert_int_equal (backup_reader_open (f->r, r1.id, &rd), 0);
  backup_reader_unpin (rd);
  backup_reader_unpin (rd);
  assert_int_equal (backup_gc (f->r, 0, &g), 0);
  assert_int_equal (g.readers_live, 0);
  assert_int_equal (backup_reader_pin (rd), 0);
  assert_int_equal (backup_reader_pin (rd), 0);
  assert_int_equal (backup_gc (f->r, 0, &g), 0);
  assert_int_equal (g.readers_live, 1);
  assert_int_equal (backup_reader_pread (rd, buf, IMG_SIZE, 0), IMG_SIZE);

  /* Removed while unpinned (with the backup that shares its chunks):
   * collected, and refused when pinned again. */
  backup_reader_unpin (rd);
  assert_int_equal (backup_remove (f->r, r1.id), 0);
  assert_int_equal (backup_remove (f->r, r2.id), 0);
  assert_int_equal (backup_complete (f->r, r1.id), -ENOENT);
  assert_int_equal (backup_gc (f->r, 0, &g), 0);
  assert_int_equal (g.readers_live, 0);
  assert_true (g.removed > 0);
  assert_int_equal (backup_reader_pin (rd), -ENOENT);
  assert_int_equal (backup_gc (f->r, 0, &g), 0);
  assert_int_equal (g.readers_live, 0);
  backup_reader_close (rd);
  assert_int_equal (backup_catalog_list (f->r, "u", &cat, &nc), 0);
  assert_int_equal (nc, 0);
  free (cat);
  free (buf);
}

/* Backups racing removal of their parent + gc: the new backup's carried
 * chunks are then protected by nothing but the protocol of chunk.c and
 * gc.c.  After each round every remaining backup reads back whole (no
 * chunk missing) and verify finds nothing bad at the end. */
struct racer {
  struct fixture *f;
  char parent[64];
  unsigned delay_us;
  int err;
  char msg[1024];
};

static void *
prune_gc (void *arg)
{
  struct racer *x = arg;
  struct backup_prune_opts po = { .keep_last = 1 };
  struct backup_gc_result gr;

  usleep (x->delay_us);
  x->err = backup_remove (x->f->r, x->parent);
  if (x->err == 0 || x->err == -ENOENT)
    x->err = backup_prune (x->f->r, &po, NULL, NULL);
  if (x->err == 0)
    x->err = backup_gc (x->f->r, 0, &gr);
  if (x->err)
    snprintf (x->msg, sizeof x->msg, "%s", vbk_error ());
  return NULL;
}

static void
test_gc_races (void **state)
{
  struct fixture *f = *state;
  int rounds = strcmp (test_store_kind (), "local") == 0 ? 100 : 25, i;
  struct backup_verify_result vr;
  struct backup_run_result res;
  struct backup_entry *list;
  struct image *img;
  unsigned seed = 11;
  size_t n, j;
  char *buf = malloc (IMG_SIZE);

#define NAME "g"
#undef IMG_SIZE
#define IMG_SIZE (256 * 1024 + 5000)
  img_size = IMG_SIZE;
  assert_int_equal (image_create (f->st, "g", IMG_SIZE, OBJ), 0);
  write_random (f->st, NAME, &seed, 10);
  for (i = 0; i < rounds; i++) {
    struct racer x = { .f = f, .delay_us = rand_r (&seed) % 150000 };
    pthread_t t;

    write_random (f->st, NAME, &seed, 1 + rand_r (&seed) % 4);
    snprintf (x.parent, sizeof x.parent, "%s", i ? res.id : "none");
    assert_int_equal (pthread_create (&t, NULL, prune_gc, &x), 0);
    run_one (f, "g", &res);
    pthread_join (t, NULL);
    if (x.err)
      fail_msg ("round %d: prune/gc: %s", i, x.msg);
    /* Everything left must read back. */
    assert_int_equal (backup_list (f->r, "g", &list, &n), 0);
    assert_true (n >= 1);
    for (j = 0; j < n; j++) {
      struct backup_reader *rd;

      assert_int_equal (backup_reader_open (f->r, list[j].id, &rd), 0);
      if (backup_reader_pread (rd, buf, IMG_SIZE, 0) != IMG_SIZE)
        fail_msg ("round %d: backup %s: %s", i, list[j].id, vbk_error ());
      backup_reader_close (rd);
    }
    free (list);
  }
  /* The newest equals the live image (nothing written since). */
  {
    char *live = malloc (IMG_SIZE);
    struct backup_reader *rd;

    assert_int_equal (image_open (f->st, "g", IMAGE_OPEN_RDONLY, &img), 0);
    assert_int_equal (image_read (img, live, IMG_SIZE, 0), IMG_SIZE);
    image_close (img);
    assert_int_equal (backup_reader_open (f->r, res.id, &rd), 0);
    assert_int_equal (backup_reader_pread (rd, buf, IMG_SIZE, 0), IMG_SIZE);
    assert_memory_equal (live, buf, IMG_SIZE);
    backup_reader_close (rd);
    free (live);
  }
  assert_int_equal (backup_verify (f->r, NULL, 0, 100, NULL, NULL, &vr), 0);
  assert_int_equal (vr.bad, 0);
  free (buf);
#undef NAME
}

int
main (void)
{
  /* VBK_TEST_BACKENDS: runs once per store backend. */
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_chunk_format),
    cmocka_unit_test (test_chunk_crc),
    cmocka_unit_test (test_chunk_parts_format),
    cmocka_unit_test (test_chunk_parts_corrupt),
    cmocka_unit_test (test_chunk_encrypted),
    cmocka_unit_test (test_index_format),
    cmocka_unit_test (test_manifest_format),
    cmocka_unit_test (test_digest_set),
    cmocka_unit_test (test_copy_engine),
    cmocka_unit_test_setup_teardown (test_repo_open, setup, teardown),
    cmocka_unit_test_setup_teardown (test_run_and_read, setup, teardown),
    cmocka_unit_test_setup_teardown (test_parts_read, setup, teardown),
    cmocka_unit_test_setup_teardown (test_parts_corrupt, setup, teardown),
    cmocka_unit_test_setup_teardown (test_chunk_claim, setup, teardown),
    cmocka_unit_test_setup_teardown (test_restore_object_size, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_reader_pins, setup, teardown),
    cmocka_unit_test_setup_teardown (test_reader_unpin_catalog, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_gc_races, setup, teardown),
  };

  return cmocka_run_group_tests (tests, NULL, NULL);
}
