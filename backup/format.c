/* SPDX-License-Identifier: MIT
 *
 * format.c - encoding and parsing of chunks, indexes and manifests.
 *
 * DESIGN: pure functions over buffers (no store), so the parsers can be
 * fuzzed and unit-tested alone.  Every parser treats its input as hostile:
 * sizes are checked before use, lengths against the buffer, versions
 * against BACKUP_FORMAT_MAJOR (a newer major is -EPROTONOSUPPORT, a newer
 * minor of the same major is read: minors only add; chunks have two
 * layouts, major 1 whole and 2 parted, whose part table is parsed on
 * its own for readers of parts).  Integers are
 * little-endian.  Layouts in FORMAT.md.  The chunk CRC-32 is zlib's
 * (the gzip polynomial), computed by libdeflate, whose carry-less
 * multiply path runs several times faster than zlib's table code: every
 * stored byte of a backup, restore and verify passes through it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <lz4.h>
#include <openssl/sha.h>
#include <libdeflate.h>

#include "common/error.h"
#include "common/util.h"
#include "internal.h"

static void
put16 (unsigned char *p, uint16_t v)
{
  p[0] = v;
  p[1] = v >> 8;
}

static void
put32 (unsigned char *p, uint32_t v)
{
  put16 (p, v);
  put16 (p + 2, v >> 16);
}

static void
put64 (unsigned char *p, uint64_t v)
{
  put32 (p, v);
  put32 (p + 4, v >> 32);
}

static uint16_t
get16 (const unsigned char *p)
{
  return p[0] | (uint16_t) p[1] << 8;
}

static uint32_t
get32 (const unsigned char *p)
{
  return get16 (p) | (uint32_t) get16 (p + 2) << 16;
}

static uint64_t
get64 (const unsigned char *p)
{
  return get32 (p) | (uint64_t) get32 (p + 4) << 32;
}

/* ---- Digests ---------------------------------------------------------------- */

bool
backup_digest_is_hole (const unsigned char *d)
{
  static const unsigned char zero[BACKUP_DIGEST_LEN];

  return memcmp (d, zero, BACKUP_DIGEST_LEN) == 0;
}

void
backup_digest_hex (const unsigned char *d, char hex[BACKUP_HEX_LEN + 1])
{
  static const char x[] = "0123456789abcdef";
  int i;

  for (i = 0; i < BACKUP_DIGEST_LEN; i++) {
    hex[2 * i] = x[d[i] >> 4];
    hex[2 * i + 1] = x[d[i] & 15];
  }
  hex[BACKUP_HEX_LEN] = '\0';
}

static int
hexval (int c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

int
backup_hex_digest (const char *hex, unsigned char *d)
{
  int i, a, b;

  if (strlen (hex) != BACKUP_HEX_LEN)
    return -EINVAL;
  for (i = 0; i < BACKUP_DIGEST_LEN; i++) {
    if ((a = hexval (hex[2 * i])) < 0 || (b = hexval (hex[2 * i + 1])) < 0)
      return -EINVAL;
    d[i] = a << 4 | b;
  }
  return 0;
}

void
backup_sha256 (const void *buf, size_t len, unsigned char *d)
{
  SHA256 (buf, len, d);
}

int
backup_id_check (const char *id)
{
  size_t n = strlen (id), i;

  if (n == 0 || n > 63)
    return -EINVAL;
  for (i = 0; i < n; i++)
    if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'z')
          || (id[i] >= 'A' && id[i] <= 'Z') || id[i] == '-'))
      return -EINVAL;
  return 0;
}

/* ---- Chunks ------------------------------------------------------------------ */

static size_t
parts_of (size_t plain, unsigned shift)
{
  return (plain + ((size_t) 1 << shift) - 1) >> shift;
}

size_t
backup_chunk_bound (size_t plain)
{
  size_t b = (size_t) LZ4_compressBound ((int) plain);
  size_t whole = BACKUP_CHUNK_HDR + (b > plain ? b : plain) + BACKUP_TAG_LEN;
  size_t parted = BACKUP_CHUNK_HDR
    + BACKUP_PART_ENTRY * parts_of (plain, BACKUP_PART_SHIFT) + plain;

  return whole > parted ? whole : parted;
}

/* Additional authenticated data of an encrypted chunk: the first 16
 * header bytes (magic, version, codec, flags, sizes) and the chunk id. */
static void
chunk_aad (const unsigned char *h, const unsigned char *id,
           unsigned char *aad)
{
  memcpy (aad, h, 16);
  memcpy (aad + 16, id, BACKUP_DIGEST_LEN);
}

ssize_t
backup_chunk_encode (const struct backup_crypt *k, const unsigned char *id,
                     const void *plain, size_t len, void *out)
{
  unsigned char *h = out, *payload = h + BACKUP_CHUNK_HDR;
  unsigned char aad[16 + BACKUP_DIGEST_LEN];
  int n, codec = BACKUP_CODEC_LZ4, e;

  n = LZ4_compress_default (plain, (char *) payload, (int) len,
                            LZ4_compressBound ((int) len));
  if (n <= 0 || (size_t) n > len - len / 16) {
    /* Compression does not pay: store the bytes as they are. */
    memcpy (payload, plain, len);
    n = (int) len;
    codec = BACKUP_CODEC_NONE;
  }
  memset (h, 0, BACKUP_CHUNK_HDR);
  memcpy (h, BACKUP_CHUNK_MAGIC, 4);
  put16 (h + 4, BACKUP_FORMAT_MAJOR);
  h[6] = codec;
  put32 (h + 8, (uint32_t) len);
  if (k == NULL) {
    put32 (h + 12, (uint32_t) n);
    put32 (h + 16, libdeflate_crc32 (0, payload, (size_t) n));
    return BACKUP_CHUNK_HDR + n;
  }
  /* Encrypted in place: the GCM tag replaces the CRC-32. */
  h[7] = BACKUP_CHUNK_ENCRYPTED;
  put32 (h + 12, (uint32_t) n + BACKUP_TAG_LEN);
  if ((e = backup_random (h + 20, BACKUP_NONCE_LEN)) < 0)
    return e;
  chunk_aad (h, id, aad);
  if ((e = backup_gcm_seal (k->enc, h + 20, aad, sizeof aad, payload,
                            (size_t) n, payload, payload + n)) < 0)
    return vbk_errno (e, "chunk encryption failed");
  return BACKUP_CHUNK_HDR + n + BACKUP_TAG_LEN;
}

/* ---- Parted chunks ------------------------------------------------------------ */

ssize_t
backup_chunk_encode_parts (const void *plain, size_t len, void *out)
{
  unsigned char *h = out, *tab = h + BACKUP_CHUNK_HDR, *p;
  uint32_t count = (uint32_t) parts_of (len, BACKUP_PART_SHIFT), i;
  size_t tlen = (size_t) count * BACKUP_PART_ENTRY;

  p = tab + tlen;
  for (i = 0; i < count; i++) {
    const char *src = (const char *) plain + ((size_t) i << BACKUP_PART_SHIFT);
    size_t pl = MIN (len - ((size_t) i << BACKUP_PART_SHIFT),
                     (size_t) 1 << BACKUP_PART_SHIFT);
    unsigned char *e = tab + (size_t) i * BACKUP_PART_ENTRY;
    int n, codec = BACKUP_CODEC_LZ4;

    /* LZ4 only if it saves 1/16 (as for whole chunks): with the room
     * limited to that it gives up as soon as it cannot. */
    n = LZ4_compress_default (src, (char *) p, (int) pl,
                              (int) (pl - pl / 16));
    if (n <= 0) {
      memcpy (p, src, pl);
      n = (int) pl;
      codec = BACKUP_CODEC_NONE;
    }
    put32 (e, (uint32_t) n);
    put32 (e + 4, libdeflate_crc32 (0, p, (size_t) n));
    e[8] = codec;
    e[9] = e[10] = e[11] = 0;
    p += n;
  }
  memset (h, 0, BACKUP_CHUNK_HDR);
  memcpy (h, BACKUP_CHUNK_MAGIC, 4);
  put16 (h + 4, BACKUP_CHUNK_MAJOR_PARTS);
  h[6] = BACKUP_PART_SHIFT;
  put32 (h + 8, (uint32_t) len);
  put32 (h + 12, (uint32_t) (p - tab));
  put32 (h + 16, libdeflate_crc32 (0, tab, tlen));
  put32 (h + 20, count);
  return p - h;
}

int
backup_chunk_head (const unsigned char *h, size_t *need)
{
  unsigned major;
  uint32_t plain, count;

  if (memcmp (h, BACKUP_CHUNK_MAGIC, 4) != 0)
    return vbk_errno (-EBADMSG, "not a chunk (bad header)");
  major = get16 (h + 4);
  if (major > BACKUP_CHUNK_MAJOR_PARTS)
    return vbk_errno (-EPROTONOSUPPORT, "chunk format version %u is newer "
                      "than this vbk reads (%d)", major,
                      BACKUP_CHUNK_MAJOR_PARTS);
  if (major < BACKUP_CHUNK_MAJOR_PARTS)
    return 1;
  plain = get32 (h + 8);
  count = get32 (h + 20);
  if (h[6] < BACKUP_PART_SHIFT_MIN || h[6] > BACKUP_PART_SHIFT_MAX)
    return vbk_errno (-EBADMSG, "chunk with a bad part size (shift %u)",
                      h[6]);
  if (h[7] != 0)
    return vbk_errno (-EBADMSG, "parted chunk with flags 0x%x", h[7]);
  if (count != parts_of (plain, h[6]))
    return vbk_errno (-EBADMSG, "chunk of %u bytes with %u parts of %u",
                      plain, count, 1u << h[6]);
  *need = BACKUP_CHUNK_HDR + (size_t) count * BACKUP_PART_ENTRY;
  return 2;
}

void
backup_part_table_free (struct backup_part_table *t)
{
  free (t->part);
  t->part = NULL;
}

size_t
backup_part_plain (const struct backup_part_table *t, uint32_t i)
{
  size_t start = (size_t) i << t->shift;

  return MIN (t->plain - start, (size_t) 1 << t->shift);
}

int
backup_part_table_parse (const void *buf, size_t len, size_t max,
                         struct backup_part_table *t)
{
  const unsigned char *h = buf, *e;
  uint64_t off, end;
  size_t need = 0;
  uint32_t i;
  int r;

  memset (t, 0, sizeof *t);
  if (len < BACKUP_CHUNK_HDR)
    return vbk_errno (-EBADMSG, "not a chunk (bad header)");
  if ((r = backup_chunk_head (h, &need)) < 0)
    return r;
  if (r != 2)
    return vbk_errno (-EBADMSG, "not a parted chunk");
  if (len < need)
    return vbk_errno (-EBADMSG, "chunk truncated in its part table");
  t->plain = get32 (h + 8);
  t->stored = get32 (h + 12);
  t->shift = h[6];
  t->count = get32 (h + 20);
  if (t->plain > max)
    return vbk_errno (-EBADMSG, "chunk of %u bytes, expected at most %zu",
                      t->plain, max);
  if (get64 (h + 24) != 0)
    return vbk_errno (-EBADMSG, "parted chunk with a bad header");
  if (libdeflate_crc32 (0, h + BACKUP_CHUNK_HDR, need - BACKUP_CHUNK_HDR)
      != get32 (h + 16))
    return vbk_errno (-EBADMSG, "part table checksum mismatch");
  if ((t->part = malloc ((t->count ? t->count : 1) * sizeof *t->part))
      == NULL)
    return vbk_errno (-ENOMEM, "chunk");
  off = need;
  end = BACKUP_CHUNK_HDR + (uint64_t) t->stored;
  for (i = 0; i < t->count; i++) {
    struct backup_part *p = &t->part[i];
    size_t pl = backup_part_plain (t, i);

    e = h + BACKUP_CHUNK_HDR + (size_t) i * BACKUP_PART_ENTRY;
    p->off = off;
    p->len = get32 (e);
    p->crc = get32 (e + 4);
    p->codec = e[8];
    if (e[9] || e[10] || e[11]
        || (p->codec == BACKUP_CODEC_NONE && p->len != pl)
        || (p->codec == BACKUP_CODEC_LZ4
            && (p->len == 0
                || p->len > (uint32_t) LZ4_compressBound ((int) pl)))
        || p->codec > BACKUP_CODEC_LZ4 || off + p->len > end) {
      r = vbk_errno (-EBADMSG, "part %u of %u: bad entry (codec %u, %u "
                     "bytes)", i, t->count, p->codec, p->len);
      backup_part_table_free (t);
      return r;
    }
    off += p->len;
  }
  if (off != end) {
    backup_part_table_free (t);
    return vbk_errno (-EBADMSG, "parts of %" PRIu64 " bytes, header says "
                      "%u stored", off - need, t->stored);
  }
  return 0;
}

int
backup_part_decode (const struct backup_part_table *t, uint32_t i,
                    const void *s, void *out, int flags)
{
  const struct backup_part *p = &t->part[i];
  size_t pl = backup_part_plain (t, i);
  int n;

  if (!(flags & BACKUP_DECODE_DATA)
      && libdeflate_crc32 (0, s, p->len) != p->crc)
    return vbk_errno (-EBADMSG, "part %u (plain bytes %zu..%zu) checksum "
                      "mismatch", i, (size_t) i << t->shift,
                      ((size_t) i << t->shift) + pl);
  if (p->codec == BACKUP_CODEC_NONE) {
    memcpy (out, s, pl);
    return 0;
  }
  n = LZ4_decompress_safe (s, out, (int) p->len, (int) pl);
  if (n < 0 || (size_t) n != pl)
    return vbk_errno (-EBADMSG, "part %u does not decompress", i);
  return 0;
}

/* A parted chunk (never encrypted) of OBJLEN bytes into PLAIN. */
static int
decode_parts (const struct backup_crypt *k, const void *obj, size_t objlen,
              void *plain, size_t max, size_t *len, int flags)
{
  struct backup_part_table t;
  uint32_t i;
  int e;

  if ((e = backup_part_table_parse (obj, objlen, max, &t)) < 0)
    return e;
  if (objlen - BACKUP_CHUNK_HDR != t.stored) {
    e = vbk_errno (-EBADMSG, "chunk truncated or overlong (%zu stored "
                   "bytes, header says %u)", objlen - BACKUP_CHUNK_HDR,
                   t.stored);
    goto out;
  }
  if (k != NULL) {
    e = vbk_errno (-EBADMSG, "plain chunk in an encrypted repository");
    goto out;
  }
  for (i = 0; i < t.count && e == 0; i++)
    e = backup_part_decode (&t, i, (const char *) obj + t.part[i].off,
                            (char *) plain + ((size_t) i << t.shift), flags);
  if (e == 0)
    *len = t.plain;
 out:
  backup_part_table_free (&t);
  return e;
}

int
backup_chunk_decode (const struct backup_crypt *k, const unsigned char *id,
                     const void *obj, size_t objlen, void *plain, size_t max,
                     size_t *len)
{
  return backup_chunk_decode_flags (k, id, obj, objlen, plain, max, len, 0);
}

int
backup_chunk_decode_flags (const struct backup_crypt *k,
                           const unsigned char *id, const void *obj,
                           size_t objlen, void *plain, size_t max,
                           size_t *len, int flags)
{
  const unsigned char *h = obj, *payload = h + BACKUP_CHUNK_HDR;
  unsigned char aad[16 + BACKUP_DIGEST_LEN], *dec = NULL;
  uint32_t psize, ssize;
  int n, enc;

  if (objlen < BACKUP_CHUNK_HDR || memcmp (h, BACKUP_CHUNK_MAGIC, 4) != 0)
    return vbk_errno (-EBADMSG, "not a chunk (bad header)");
  if (get16 (h + 4) == BACKUP_CHUNK_MAJOR_PARTS)
    return decode_parts (k, obj, objlen, plain, max, len, flags);
  if (get16 (h + 4) > BACKUP_CHUNK_MAJOR_PARTS)
    return vbk_errno (-EPROTONOSUPPORT, "chunk format version %u is newer "
                      "than this vbk reads (%d)", get16 (h + 4),
                      BACKUP_CHUNK_MAJOR_PARTS);
  psize = get32 (h + 8);
  ssize = get32 (h + 12);
  if (ssize != objlen - BACKUP_CHUNK_HDR)
    return vbk_errno (-EBADMSG, "chunk truncated or overlong (%zu stored "
                      "bytes, header says %u)", objlen - BACKUP_CHUNK_HDR,
                      ssize);
  if (psize > max)
    return vbk_errno (-EBADMSG, "chunk of %u bytes, expected at most %zu",
                      psize, max);
  if (h[7] & ~BACKUP_CHUNK_ENCRYPTED)
    return vbk_errno (-EBADMSG, "chunk with unknown flags 0x%x", h[7]);
  enc = (h[7] & BACKUP_CHUNK_ENCRYPTED) != 0;
  if (enc && k == NULL)
    return vbk_errno (-EBADMSG, "encrypted chunk in a repository that is "
                      "not encrypted");
  if (!enc && k != NULL)
    return vbk_errno (-EBADMSG, "plain chunk in an encrypted repository");
  if (enc) {
    if (ssize < BACKUP_TAG_LEN || get32 (h + 16) != 0)
      return vbk_errno (-EBADMSG, "encrypted chunk with a bad header");
    ssize -= BACKUP_TAG_LEN;
    if ((dec = malloc (ssize ? ssize : 1)) == NULL)
      return vbk_errno (-ENOMEM, "chunk");
    chunk_aad (h, id, aad);
    if (backup_gcm_open (k->enc, h + 20, aad, sizeof aad, payload, ssize,
                         dec, payload + ssize) < 0) {
      free (dec);
      return vbk_errno (-EBADMSG, "chunk authentication failed (AES-GCM "
                        "tag mismatch: the chunk was changed or damaged)");
    }
    payload = dec;
  }
  else if (!(flags & BACKUP_DECODE_DATA)
           && libdeflate_crc32 (0, payload, ssize) != get32 (h + 16))
    return vbk_errno (-EBADMSG, "chunk checksum mismatch");
  n = -1;
  switch (h[6]) {
  case BACKUP_CODEC_NONE:
    if (ssize != psize)
      vbk_set_error ("raw chunk with sizes %u != %u", ssize, psize);
    else {
      memcpy (plain, payload, psize);
      n = 0;
    }
    break;
  case BACKUP_CODEC_LZ4:
    n = LZ4_decompress_safe ((const char *) payload, plain, (int) ssize,
                             (int) psize);
    if (n < 0 || (uint32_t) n != psize) {
      vbk_set_error ("chunk does not decompress");
      n = -1;
    }
    else
      n = 0;
    break;
  default:
    vbk_set_error ("chunk with unknown codec %u", h[6]);
    break;
  }
  free (dec);
  if (n < 0)
    return -EBADMSG;
  *len = psize;
  return 0;
}

int
backup_chunk_check_raw (const unsigned char *h, const void *payload,
                        size_t len, int flags)
{
  if (memcmp (h, BACKUP_CHUNK_MAGIC, 4) != 0
      || get16 (h + 4) > BACKUP_FORMAT_MAJOR || h[6] != BACKUP_CODEC_NONE
      || h[7] != 0 || get32 (h + 8) != len || get32 (h + 12) != len)
    return 0;
  if (!(flags & BACKUP_DECODE_DATA)
      && libdeflate_crc32 (0, payload, len) != get32 (h + 16))
    return vbk_errno (-EBADMSG, "chunk checksum mismatch");
  return 1;
}

/* ---- Sealed objects ------------------------------------------------------------ */

/* AAD: the 8 header bytes (magic, version, reserved) and the name. */
static int
seal_aad (const unsigned char *h, const char *name, unsigned char **aad,
          size_t *len)
{
  size_t n = strlen (name);

  if ((*aad = malloc (8 + n)) == NULL)
    return -ENOMEM;
  memcpy (*aad, h, 8);
  memcpy (*aad + 8, name, n);
  *len = 8 + n;
  return 0;
}

int
backup_seal (const struct backup_crypt *k, const char *name, const void *in,
             size_t len, void **out, size_t *outlen)
{
  size_t n = BACKUP_SEAL_HDR + len + BACKUP_TAG_LEN, alen;
  unsigned char *h = calloc (1, n), *aad;
  int e;

  if (h == NULL || seal_aad (h, name, &aad, &alen) < 0) {
    free (h);
    return vbk_errno (-ENOMEM, "seal");
  }
  memcpy (h, BACKUP_SEAL_MAGIC, 4);
  put16 (h + 4, BACKUP_FORMAT_MAJOR);
  memcpy (aad, h, 8);
  if ((e = backup_random (h + 8, BACKUP_NONCE_LEN)) < 0
      || (e = backup_gcm_seal (k->enc, h + 8, aad, alen, in, len,
                               h + BACKUP_SEAL_HDR,
                               h + BACKUP_SEAL_HDR + len)) < 0) {
    free (aad);
    free (h);
    return vbk_errno (e, "%s: encryption failed", name);
  }
  free (aad);
  *out = h;
  *outlen = n;
  return 0;
}

int
backup_unseal (const struct backup_crypt *k, const char *name, const void *in,
               size_t len, char **out, size_t *outlen)
{
  const unsigned char *h = in;
  unsigned char *aad;
  size_t n, alen;
  char *p;

  if (len < BACKUP_SEAL_HDR + BACKUP_TAG_LEN
      || memcmp (h, BACKUP_SEAL_MAGIC, 4) != 0)
    return vbk_errno (-EBADMSG, "%s: not an encrypted object", name);
  if (get16 (h + 4) > BACKUP_FORMAT_MAJOR)
    return vbk_errno (-EPROTONOSUPPORT, "%s: format version %u is newer "
                      "than this vbk reads (%d)", name, get16 (h + 4),
                      BACKUP_FORMAT_MAJOR);
  if (get16 (h + 6) != 0)
    return vbk_errno (-EBADMSG, "%s: bad header", name);
  n = len - BACKUP_SEAL_HDR - BACKUP_TAG_LEN;
  if ((p = malloc (n + 1)) == NULL || seal_aad (h, name, &aad, &alen) < 0) {
    free (p);
    return vbk_errno (-ENOMEM, "unseal");
  }
  if (backup_gcm_open (k->enc, h + 8, aad, alen, h + BACKUP_SEAL_HDR, n, p,
                       h + BACKUP_SEAL_HDR + n) < 0) {
    free (aad);
    free (p);
    return vbk_errno (-EBADMSG, "%s: authentication failed (AES-GCM tag "
                      "mismatch: changed or damaged)", name);
  }
  free (aad);
  p[n] = '\0';
  *out = p;
  *outlen = n;
  return 0;
}

/* ---- Indexes ------------------------------------------------------------------ */

int
backup_index_parse (const void *buf, size_t len, struct backup_index *ix)
{
  const unsigned char *h = buf;
  uint64_t count, want;

  memset (ix, 0, sizeof *ix);
  if (len < BACKUP_INDEX_HDR || memcmp (h, BACKUP_INDEX_MAGIC, 8) != 0)
    return vbk_errno (-EBADMSG, "index: bad header");
  if (get16 (h + 8) > BACKUP_FORMAT_MAJOR)
    return vbk_errno (-EPROTONOSUPPORT, "index: format version %u.%u is "
                      "newer than this vbk reads (%d.x)", get16 (h + 8),
                      get16 (h + 10), BACKUP_FORMAT_MAJOR);
  ix->chunk_size = get32 (h + 12);
  ix->size = get64 (h + 16);
  count = get64 (h + 24);
  if (ix->chunk_size < BACKUP_CHUNK_SIZE_MIN
      || ix->chunk_size > BACKUP_CHUNK_SIZE_MAX
      || (ix->chunk_size & (ix->chunk_size - 1)))
    return vbk_errno (-EBADMSG, "index: bad chunk size %u", ix->chunk_size);
  if (ix->size > IMAGE_SIZE_MAX)
    return vbk_errno (-EBADMSG, "index: bad size %" PRIu64, ix->size);
  want = (ix->size + ix->chunk_size - 1) / ix->chunk_size;
  if (count != want)
    return vbk_errno (-EBADMSG, "index: %" PRIu64 " chunks for %" PRIu64
                      " bytes, expected %" PRIu64, count, ix->size, want);
  if ((len - BACKUP_INDEX_HDR) / BACKUP_DIGEST_LEN != count
      || (len - BACKUP_INDEX_HDR) % BACKUP_DIGEST_LEN)
    return vbk_errno (-EBADMSG, "index: truncated or overlong (%zu bytes "
                      "for %" PRIu64 " chunks)", len, count);
  ix->count = count;
  ix->digest = malloc (count ? count * BACKUP_DIGEST_LEN : 1);
  if (ix->digest == NULL)
    return vbk_errno (-ENOMEM, "index");
  memcpy (ix->digest, h + BACKUP_INDEX_HDR, count * BACKUP_DIGEST_LEN);
  return 0;
}

int
backup_index_encode (const struct backup_index *ix, void **out, size_t *len)
{
  size_t n = BACKUP_INDEX_HDR + ix->count * BACKUP_DIGEST_LEN;
  unsigned char *h = calloc (1, n);

  if (h == NULL)
    return vbk_errno (-ENOMEM, "index");
  memcpy (h, BACKUP_INDEX_MAGIC, 8);
  put16 (h + 8, BACKUP_FORMAT_MAJOR);
  put16 (h + 10, BACKUP_FORMAT_MINOR);
  put32 (h + 12, ix->chunk_size);
  put64 (h + 16, ix->size);
  put64 (h + 24, ix->count);
  if (ix->count)
    memcpy (h + BACKUP_INDEX_HDR, ix->digest, ix->count * BACKUP_DIGEST_LEN);
  *out = h;
  *len = n;
  return 0;
}

void
backup_index_free (struct backup_index *ix)
{
  free (ix->digest);
  ix->digest = NULL;
}

/* ---- Manifests ---------------------------------------------------------------- */

static int
get_str (json_object *o, const char *key, char *buf, size_t len, int need)
{
  json_object *v;
  const char *s;

  if (!json_object_object_get_ex (o, key, &v) || json_object_is_type (v, json_type_null)) {
    if (need)
      return vbk_errno (-EBADMSG, "manifest: missing \"%s\"", key);
    buf[0] = '\0';
    return 0;
  }
  if (!json_object_is_type (v, json_type_string))
    return vbk_errno (-EBADMSG, "manifest: \"%s\" is not a string", key);
  s = json_object_get_string (v);
  if (strlen (s) >= len)
    return vbk_errno (-EBADMSG, "manifest: \"%s\" too long", key);
  strcpy (buf, s);
  return 0;
}

static int
get_u64 (json_object *o, const char *key, uint64_t *out)
{
  json_object *v;

  if (!json_object_object_get_ex (o, key, &v)
      || !json_object_is_type (v, json_type_int))
    return vbk_errno (-EBADMSG, "manifest: missing number \"%s\"", key);
  if (json_object_get_int64 (v) < 0)
    return vbk_errno (-EBADMSG, "manifest: negative \"%s\"", key);
  *out = json_object_get_uint64 (v);
  return 0;
}

static bool
only_space (const char *p, size_t n)
{
  while (n--)
    if (*p != ' ' && *p != '\n' && *p != '\t' && *p != '\r')
      return false;
    else
      p++;
  return true;
}

int
backup_manifest_parse (const char *json, size_t len,
                       struct backup_manifest *m)
{
  struct json_tokener *tok = json_tokener_new ();
  json_object *o = NULL, *v;
  char fmt[32];
  unsigned major, minor;
  uint64_t cs;
  int r;

  memset (m, 0, sizeof *m);
  if (tok == NULL)
    return vbk_errno (-ENOMEM, "manifest");
  if (len > 1 << 20)
    r = vbk_errno (-EBADMSG, "manifest: too large");
  else if ((o = json_tokener_parse_ex (tok, json, (int) len)) == NULL
           || !only_space (json + json_tokener_get_parse_end (tok),
                           len - json_tokener_get_parse_end (tok))
           || !json_object_is_type (o, json_type_object))
    r = vbk_errno (-EBADMSG, "manifest: not a JSON object");
  else if ((r = get_str (o, "format", fmt, sizeof fmt, 1)) < 0)
    ;
  else if (sscanf (fmt, "%u.%u", &major, &minor) != 2)
    r = vbk_errno (-EBADMSG, "manifest: bad format \"%s\"", fmt);
  else if (major > BACKUP_FORMAT_MAJOR)
    r = vbk_errno (-EPROTONOSUPPORT, "manifest format %u.%u is newer than "
                   "this vbk reads (%d.x)", major, minor, BACKUP_FORMAT_MAJOR);
  else if ((r = get_str (o, "id", m->id, sizeof m->id, 1)) < 0
           || (r = get_str (o, "image", m->image, sizeof m->image, 1)) < 0
           || (r = get_str (o, "snapshot", m->snapshot, sizeof m->snapshot,
                            0)) < 0
           || (r = get_str (o, "parent", m->parent, sizeof m->parent, 0)) < 0
           || (r = get_str (o, "group", m->group, sizeof m->group, 0)) < 0
           || (r = get_str (o, "index_sha256", m->index_sha256,
                            sizeof m->index_sha256, 1)) < 0
           || (r = get_u64 (o, "size", &m->size)) < 0
           || (r = get_u64 (o, "time_ms", &m->time_ms)) < 0
           || (r = get_u64 (o, "chunks", &m->chunks)) < 0
           || (r = get_u64 (o, "chunk_size", &cs)) < 0)
    ;
  else if (backup_id_check (m->id) < 0)
    r = vbk_errno (-EBADMSG, "manifest: bad id");
  else if (cs < BACKUP_CHUNK_SIZE_MIN || cs > BACKUP_CHUNK_SIZE_MAX
           || (cs & (cs - 1)))
    r = vbk_errno (-EBADMSG, "manifest: bad chunk size %" PRIu64, cs);
  else if (m->size > IMAGE_SIZE_MAX
           || m->chunks != (m->size + cs - 1) / cs)
    r = vbk_errno (-EBADMSG, "manifest: size and chunk count disagree");
  else if (strlen (m->index_sha256) != BACKUP_HEX_LEN)
    r = vbk_errno (-EBADMSG, "manifest: bad index_sha256");
  else {
    m->chunk_size = (uint32_t) cs;
    if (json_object_object_get_ex (o, "protected", &v))
      m->protected_ = json_object_get_boolean (v);
    /* Optional (written since 1.0 readers ignore it): the image's object
     * size; anything but a power of two in range reads as unknown. */
    if (json_object_object_get_ex (o, "object_size", &v)
        && json_object_is_type (v, json_type_int)) {
      int64_t os = json_object_get_int64 (v);

      if (os >= BACKUP_CHUNK_SIZE_MIN && os <= BACKUP_CHUNK_SIZE_MAX
          && (os & (os - 1)) == 0)
        m->object_size = (uint32_t) os;
    }
    r = 0;
  }
  json_object_put (o);
  json_tokener_free (tok);
  return r;
}
