/* SPDX-License-Identifier: MIT
 *
 * fuzz-backup.c - libFuzzer target over the repository's parsers: the
 * first byte of the input picks the manifest, index or chunk parser, the
 * rest is the object as read from a store.  A parser that accepts an
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
  size_t len;

  if (size < 1)
    return 0;
  switch (data[0] % 3) {
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
    if (backup_chunk_decode (data + 1, size - 1, plain, sizeof plain, &len)
        == 0 && len > sizeof plain)
      abort ();
    break;
  }
  return 0;
}
