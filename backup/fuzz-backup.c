/* SPDX-License-Identifier: MIT
 *
 * fuzz-backup.c - libFuzzer target over the repository's parsers: the
 * first byte of the input picks the manifest, index or chunk parser, the
 * encrypted chunk parser, the sealed-object parser (with a fixed key),
 * the part table of a parted chunk (and its parts) or the chunk parser
 * as a data reader calls it,
 * the rest is the object as read from a store.  A parser that accepts an
 * input must produce a result consistent with it (an index's count
 * matches its size, a chunk decodes to at most its declared size).
 * Built and run by tests/e2e/backup-fuzz.sh.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct backup_manifest m;
  struct backup_index ix;
  static char plain[1 << 20];
  static const struct backup_crypt k = { .enc = "fuzz encryption key 0123456789a",
                                         .id = "fuzz id key 0123456789abcdefghij" };
  static const unsigned char id[BACKUP_DIGEST_LEN] = "fuzz chunk id 0123456789abcdefg";
  char *out;
  size_t len;

  if (size < 1)
    return 0;
  switch (data[0] % 7) {
  case 0:
    if (backup_manifest_parse ((const char *) data + 1, size - 1, &m) == 0
        && (m.chunks != (m.size + m.chunk_size - 1) / m.chunk_size
            || strlen (m.index_sha256) != BACKUP_HEX_LEN))
      abort ();
    break;
  case 1:
    if (backup_index_parse (data + 1, size - 1, &ix) == 0) {
      if (ix.count != (ix.size + ix.chunk_size - 1) / ix.chunk_size)
        abort ();
      backup_index_free (&ix);
    }
    break;
  case 2:
    if (backup_chunk_decode (NULL, id, data + 1, size - 1, plain, sizeof plain,
                             &len)
        == 0 && len > sizeof plain)
      abort ();
    break;
  case 3:
    if (backup_chunk_decode (&k, id, data + 1, size - 1, plain, sizeof plain,
                             &len) == 0 && len > sizeof plain)
      abort ();
    break;
  case 5:
    /* The part table alone, as a part reader parses it, then each part
     * the table accepts: every part lies inside the input. */
    {
      struct backup_part_table t;
      uint32_t i;

      if (backup_part_table_parse (data + 1, size - 1, sizeof plain, &t) == 0) {
        for (i = 0; i < t.count; i++) {
          if (t.part[i].off + t.part[i].len > BACKUP_CHUNK_HDR + (uint64_t) t.stored
              || backup_part_plain (&t, i) > ((size_t) 1 << t.shift))
            abort ();
          if (t.part[i].off + t.part[i].len <= size - 1)
            backup_part_decode (&t, i, data + 1 + t.part[i].off, plain, 0);
        }
        backup_part_table_free (&t);
      }
    }
    break;
  case 6:
    /* A parted chunk decoded whole (flags as a data reader uses them). */
    if (backup_chunk_decode_flags (NULL, id, data + 1, size - 1, plain,
                                   sizeof plain, &len, BACKUP_DECODE_DATA)
        == 0 && len > sizeof plain)
      abort ();
    break;
  case 4:
    if (backup_unseal (&k, "vbk_backup_index.x", data + 1, size - 1, &out,
                       &len) == 0) {
      if (len + BACKUP_SEAL_HDR + BACKUP_TAG_LEN != size - 1)
        abort ();
      free (out);
    }
    break;
  }
  return 0;
}
