/* SPDX-License-Identifier: MIT
 *
 * internal.h - shared by the files of the backup library.
 *
 * Objects of a repository (FORMAT.md has the byte layouts):
 *   vbk_backup_config          JSON: format version, chunk size
 *   vbk_backup_catalog         omap: backup id -> "IMAGE START_MS [PARENT]"
 *                              for every backup begun and not yet cleaned
 *                              up (PARENT: the backup it carries chunks
 *                              from, once chosen)
 *   vbk_backup_writer.ID       lock "writer" held while backup ID runs
 *   vbk_backup_index.ID        index: header + one digest per chunk
 *   vbk_backup_manifest.ID     JSON manifest; the backup exists iff it does
 *   vbk_backup_chunks          omap: chunk digest (hex) -> "TIME_MS" of
 *                              its last reference, or "bad TIME_MS"
 *   vbk_chunk.HEX              chunk: header + payload; lock "chunk" held
 *                              while it is created, touched or swept
 *   vbk_backup_readers         omap: reader id -> "ID START_MS HOST/PID"
 *                              for every open reader of backup ID
 *   vbk_backup_reader.RID      lock "reader" held while reader RID is open
 */
#ifndef VBK_BACKUP_INTERNAL_H
#define VBK_BACKUP_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "backup.h"

#define BACKUP_FORMAT_MAJOR 1
#define BACKUP_FORMAT_MINOR 0
/* The repository's format (its config): 2 for a plain repository whose
 * chunks are written parted (FORMAT.md, "Versions"); indexes, manifests
 * and sealed objects keep BACKUP_FORMAT_MAJOR. */
#define BACKUP_REPO_MAJOR 2
/* The minor version of an encrypted repository's config (FORMAT.md). */
#define BACKUP_FORMAT_MINOR_ENCRYPTED 1

#define BACKUP_CONFIG_OID "vbk_backup_config"
#define BACKUP_CATALOG_OID "vbk_backup_catalog"
#define BACKUP_CHUNKS_OID "vbk_backup_chunks"
#define BACKUP_READERS_OID "vbk_backup_readers"
#define BACKUP_READER_LOCK "reader"
#define BACKUP_READER_ID_LEN 17         /* 16 hex digits */

#define BACKUP_DIGEST_LEN 32
#define BACKUP_HEX_LEN 64

/* The master keys of an encrypted repository (crypt.c). */
#define BACKUP_KEY_LEN 32
#define BACKUP_NONCE_LEN 12
#define BACKUP_TAG_LEN 16
struct backup_crypt {
  unsigned char enc[BACKUP_KEY_LEN];    /* AES-256-GCM of every object */
  unsigned char id[BACKUP_KEY_LEN];     /* HMAC-SHA256 chunk ids */
};

/* Registry writes waiting to be written together (chunk.c). */
struct backup_reg_req;
struct backup_reg_group {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct backup_reg_req *head, **tail;
  bool busy;                            /* a leader is writing a batch */
};

struct backup_repo {
  struct store *st;
  uint32_t chunk_size;
  struct backup_crypt *crypt;           /* NULL: not encrypted */
  bool parts;                           /* format 2: chunks written
                                           parted (plain only) */
  char uri[1024];
  struct backup_reg_group reg;
};

/* format.c: pure encoding and parsing (fuzzed by backup/fuzz-backup.c) */

#define BACKUP_CHUNK_MAGIC "VBKC"
#define BACKUP_CHUNK_HDR 32
enum { BACKUP_CODEC_NONE = 0, BACKUP_CODEC_LZ4 = 1 };

#define BACKUP_CHUNK_ENCRYPTED 1u       /* header flags (byte 7) */

/* Largest encoded chunk for PLAIN bytes (either layout). */
size_t backup_chunk_bound (size_t plain);

/* The parted layout (chunk major 2, FORMAT.md "Chunk"): the plain bytes
 * cut into parts of 1 << shift bytes (the last may be shorter), each
 * compressed on its own (or stored raw), with its own CRC-32, listed in
 * a part table after the header that has a CRC-32 of its own.  Only
 * plain (not encrypted) chunks of a repository of format 2 are written
 * so. */
#define BACKUP_CHUNK_MAJOR_PARTS 2
#define BACKUP_PART_SHIFT 16            /* written: 64 KiB of plain data */
#define BACKUP_PART_SHIFT_MIN 12
#define BACKUP_PART_SHIFT_MAX 24
#define BACKUP_PART_ENTRY 12            /* bytes per part table entry */

struct backup_part {
  uint64_t off;                 /* of its stored bytes in the object */
  uint32_t len;                 /* stored bytes */
  uint32_t crc;                 /* CRC-32 of the stored bytes */
  uint8_t codec;                /* BACKUP_CODEC_* */
};

struct backup_part_table {
  uint32_t plain;               /* plain size of the chunk */
  uint32_t stored;              /* bytes after the header */
  unsigned shift;               /* plain bytes per part: 1 << shift */
  uint32_t count;               /* parts */
  struct backup_part *part;     /* COUNT entries, malloc'd */
};

/* Looks at the BACKUP_CHUNK_HDR header bytes H of a chunk: 1 for the
 * whole layout (major 1: no part table), 2 for the parted layout with
 * *NEED = the bytes of header and part table together, or -EBADMSG
 * (not a chunk, bad fields), -EPROTONOSUPPORT (a newer major); message
 * set. */
int backup_chunk_head (const unsigned char *h, size_t *need);
/* Parses the header and part table of a parted chunk from BUF (LEN
 * bytes, at least the *NEED of backup_chunk_head) into T (free with
 * backup_part_table_free); MAX: the largest plain size the caller
 * accepts.  Checks every field, the table's CRC-32 and that the parts
 * fill the stored size exactly.  Errors: -EBADMSG, -EPROTONOSUPPORT;
 * message set. */
int backup_part_table_parse (const void *buf, size_t len, size_t max,
                             struct backup_part_table *t);
void backup_part_table_free (struct backup_part_table *t);
/* Plain bytes of part I of T. */
size_t backup_part_plain (const struct backup_part_table *t, uint32_t i);
/* Checks the CRC-32 of part I's stored bytes S (t->part[I].len bytes;
 * skipped with BACKUP_DECODE_DATA) and decodes them into OUT
 * (backup_part_plain bytes).  Errors: -EBADMSG naming the part. */
int backup_part_decode (const struct backup_part_table *t, uint32_t i,
                        const void *s, void *out, int flags);
/* Encodes PLAIN (LEN bytes, not encrypted) in the parted layout into
 * OUT (backup_chunk_bound bytes).  Returns the encoded size. */
ssize_t backup_chunk_encode_parts (const void *plain, size_t len, void *out);
/* Encodes PLAIN (LEN bytes) into OUT (backup_chunk_bound bytes): LZ4
 * when it saves at least 1/16, else raw; with K, encrypted with a fresh
 * random nonce, bound to the chunk id ID.  Returns the encoded size, or
 * -errno. */
ssize_t backup_chunk_encode (const struct backup_crypt *k,
                             const unsigned char *id, const void *plain,
                             size_t len, void *out);
/* Decodes an encoded chunk of OBJLEN bytes named ID into PLAIN (at most
 * MAX bytes); *LEN gets the plain size.  With K the chunk must be
 * encrypted and authentic, without it plain.  Errors: -EBADMSG (bad
 * magic, sizes, checksum, authentication tag, payload), -EPROTONOSUPPORT
 * (newer version); message set. */
/* BACKUP_DECODE_DATA: the caller checks the digest of the result (which
 * alone says whether the data is right), so the CRC-32 of the stored
 * bytes, which can only catch what that check catches, is not computed;
 * a damaged payload still fails (it does not decompress, or the digest
 * differs).  Encrypted chunks are always authenticated. */
#define BACKUP_DECODE_DATA 1
int backup_chunk_decode_flags (const struct backup_crypt *k,
                               const unsigned char *id, const void *obj,
                               size_t objlen, void *plain, size_t max,
                               size_t *len, int flags);
/* Whether H (the BACKUP_CHUNK_HDR header bytes of an object) and PAYLOAD
 * (the LEN bytes after them) are a plain chunk of LEN bytes stored raw,
 * and right (its CRC-32, unless FLAGS has BACKUP_DECODE_DATA): 1; 0 when
 * it is not such a chunk (decode it with backup_chunk_decode_flags for
 * the precise reason); -EBADMSG on a checksum mismatch.  So a raw chunk
 * can be read straight into its destination. */
int backup_chunk_check_raw (const unsigned char *h, const void *payload,
                            size_t len, int flags);
int backup_chunk_decode (const struct backup_crypt *k,
                         const unsigned char *id, const void *obj,
                         size_t objlen, void *plain, size_t max, size_t *len);

/* Sealed objects (indexes and manifests of an encrypted repository):
 * magic "VBKE", version, nonce, AES-256-GCM ciphertext and tag, bound to
 * the object's name NAME. */
#define BACKUP_SEAL_MAGIC "VBKE"
#define BACKUP_SEAL_HDR 20
/* Seals IN (LEN bytes) into a malloc'd *OUT of *OUTLEN bytes. */
int backup_seal (const struct backup_crypt *k, const char *name,
                 const void *in, size_t len, void **out, size_t *outlen);
/* Opens a sealed object into a malloc'd, NUL-terminated *OUT.
 * Errors: -EBADMSG (not sealed, or not authentic), -EPROTONOSUPPORT. */
int backup_unseal (const struct backup_crypt *k, const char *name,
                   const void *in, size_t len, char **out, size_t *outlen);

/* crypt.c: primitives (OpenSSL libcrypto) */
/* AES-256-GCM; open returns -EBADMSG when the tag does not match. */
int backup_gcm_seal (const unsigned char *key, const unsigned char *nonce,
                     const void *aad, size_t aadlen, const void *in,
                     size_t len, void *out, unsigned char *tag);
int backup_gcm_open (const unsigned char *key, const unsigned char *nonce,
                     const void *aad, size_t aadlen, const void *in,
                     size_t len, void *out, const unsigned char *tag);
void backup_hmac (const unsigned char *key, const void *buf, size_t len,
                  unsigned char *out);
/* A fresh random nonce (-EIO if the system has no randomness). */
int backup_random (void *buf, size_t len);
/* Chunk id of PLAIN: SHA-256, or HMAC-SHA256 with the id key if R is
 * encrypted. */
void backup_chunk_id (const struct backup_repo *r, const void *plain,
                      size_t len, unsigned char *d);
/* Creates key file PATH (never overwrites) for a new repository; fills
 * K and the config's "encryption" member (*ENC, a json_object). */
int backup_key_create (const struct backup_key_opts *ko,
                       struct backup_crypt *k, void **enc);
/* Loads the key file of an encrypted repository whose config member
 * "encryption" is ENC (a json_object); -EACCES "wrong passphrase or key
 * file" when it does not open or belongs to another repository. */
int backup_key_load (const struct backup_key_opts *ko, const void *enc,
                     struct backup_crypt *k);

#define BACKUP_INDEX_MAGIC "VBKINDEX"
#define BACKUP_INDEX_HDR 64

struct backup_index {
  uint64_t size;
  uint32_t chunk_size;
  uint64_t count;
  unsigned char (*digest)[BACKUP_DIGEST_LEN];   /* count entries, malloc'd */
};

/* Parses an index object.  Errors: -EBADMSG, -EPROTONOSUPPORT. */
int backup_index_parse (const void *buf, size_t len, struct backup_index *ix);
/* Encodes IX into a malloc'd buffer (*OUT, *LEN). */
int backup_index_encode (const struct backup_index *ix, void **out,
                         size_t *len);
void backup_index_free (struct backup_index *ix);

struct backup_manifest {
  char id[64];
  char image[IMAGE_NAME_MAX + 1];
  char snapshot[IMAGE_NAME_MAX + 1];
  char parent[64];
  char group[IMAGE_NAME_MAX + 1];
  char index_sha256[BACKUP_HEX_LEN + 1];
  uint64_t size, time_ms, chunks;
  uint32_t chunk_size;
  uint32_t object_size;         /* the image's, 0: not recorded */
  bool protected_;
};

/* Parses a manifest.  Errors: -EBADMSG, -EPROTONOSUPPORT. */
int backup_manifest_parse (const char *json, size_t len,
                           struct backup_manifest *m);

/* Whether a digest is the hole marker (all zero bytes). */
bool backup_digest_is_hole (const unsigned char *d);
void backup_digest_hex (const unsigned char *d, char hex[BACKUP_HEX_LEN + 1]);
int backup_hex_digest (const char *hex, unsigned char *d);
void backup_sha256 (const void *buf, size_t len, unsigned char *d);
/* Checks a backup id: [0-9A-Za-z-], 1..63 characters. */
int backup_id_check (const char *id);

/* repo.c */
void backup_manifest_oid (const char *id, char *buf, size_t len);
void backup_index_oid (const char *id, char *buf, size_t len);
void backup_writer_oid (const char *id, char *buf, size_t len);
void backup_reader_oid (const char *rid, char *buf, size_t len);
void backup_chunk_oid (const unsigned char *d, char *buf, size_t len);
/* Reads a whole object into a malloc'd, NUL-terminated buffer. */
int backup_read_object (struct store *st, const char *oid, char **buf,
                        size_t *len);
/* Writes a manifest or index durably (EXCL: exclusive create), sealed
 * when R is encrypted; SHA (if not NULL) gets the SHA-256 of the bytes
 * stored. */
int backup_meta_write (struct backup_repo *r, const char *oid,
                       const void *buf, size_t len, int excl,
                       unsigned char *sha);
/* Reads a manifest or index, unsealing it when R is encrypted; SHA (if
 * not NULL) gets the SHA-256 of the bytes stored. */
int backup_meta_read (struct backup_repo *r, const char *oid, char **buf,
                      size_t *len, unsigned char *sha);
int backup_manifest_load (struct backup_repo *r, const char *id,
                          struct backup_manifest *m, char **json);
int backup_index_load (struct backup_repo *r, const struct backup_manifest *m,
                       struct backup_index *ix);

/* catalog: calls CB for each entry (id, value). */
typedef int (*backup_catalog_cb) (void *arg, const char *id,
                                  const char *val);
int backup_catalog_walk (struct backup_repo *r, backup_catalog_cb cb,
                         void *arg);

/* reader.c: the index of RD (owned by RD), for restore.c */
struct backup_index *backup_reader_index (struct backup_reader *rd);
/* The backed-up image's object size, 0 if the manifest does not say. */
uint32_t backup_reader_object_size (struct backup_reader *rd);

/* chunk.c */

/* Lock duration of a chunk and of a running writer, ms ($VBK_BACKUP_LOCK_MS
 * overrides, for tests that kill processes). */
uint32_t backup_lock_ms (void);

/* renew.c: a thread calling RENEW (ARG) every quarter of backup_lock_ms
 * until it returns non-zero or backup_renewer_stop (which waits for the
 * thread; a renewer never started or already stopped is left alone). */
struct backup_renewer {
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool running, stop;
  uint32_t every_ms;
  int (*renew) (void *arg);
  void *arg;
};
int backup_renewer_start (struct backup_renewer *rn,
                          int (*renew) (void *arg), void *arg);
void backup_renewer_stop (struct backup_renewer *rn);
int backup_chunk_lock (struct backup_repo *r, const char *oid,
                       char *cookie, size_t cookie_len);
void backup_chunk_unlock (struct backup_repo *r, const char *oid,
                          const char *cookie);

/* The registry's group commit: set up by backup_repo_open, torn down
 * by backup_repo_close. */
void backup_reg_init (struct backup_repo *r);
void backup_reg_fini (struct backup_repo *r);

/* Makes sure chunk D exists and counts as referenced at a time >= SINCE
 * (now, if it has to be touched).  With PLAIN non-NULL (LEN bytes) a
 * chunk that is absent, bad or not claimed (not known durable) is
 * written; without, -ENOENT says it must be.  Returns 1 if written, 0 if
 * it was there; *STORED gets the bytes written.  A chunk written (1) may
 * not be durable yet, and its registry key says so: the caller must
 * store_flush() and then backup_chunk_claim() it before anything
 * durable (an index, a manifest) refers to it. */
int backup_chunk_ensure (struct backup_repo *r, const unsigned char *d,
                         uint64_t since, const void *plain, size_t len,
                         uint64_t *stored);
/* Marks the chunks D[0..N), written by backup_chunk_ensure and made
 * durable since by a store_flush() that returned 0, as claimed: others
 * may now rely on them.  One store_meta_set per 1024 chunks.  Errors:
 * those of store_meta_set (message set). */
int backup_chunk_claim (struct backup_repo *r,
                        const unsigned char (*d)[BACKUP_DIGEST_LEN],
                        size_t n);
/* Whether the registry has chunk D, claimed (neither marked bad nor
 * still being written): 0, or -ENOENT. */
int backup_chunk_check (struct backup_repo *r, const unsigned char *d);
/* Reads chunk D, checking its header, checksum and digest, into PLAIN
 * (LEN bytes expected).  Errors: -EIO naming the chunk.
 * backup_chunk_read_data: the same for a reader that needs the data (the
 * digest checked, not the checksum: BACKUP_DECODE_DATA); verify uses
 * backup_chunk_read, which checks the stored object too. */
int backup_chunk_read_data (struct backup_repo *r, const unsigned char *d,
                            void *plain, size_t len);
int backup_chunk_read (struct backup_repo *r, const unsigned char *d,
                       void *plain, size_t len);
/* backup_chunk_read_unhashed: the header, sizes and the CRC-32 of the
 * stored bytes (encrypted: the AES-GCM tag) checked, which catch damage
 * in the store; not the digest of the result against the name, which
 * the caller checks later with backup_chunk_verify (0, or -EIO naming
 * the chunk). */
int backup_chunk_read_unhashed (struct backup_repo *r,
                                const unsigned char *d, void *plain,
                                size_t len);
int backup_chunk_verify (struct backup_repo *r, const unsigned char *d,
                         const void *plain, size_t len);
/* Reads the header and part table of chunk D (CLEN plain bytes) into T
 * (free with backup_part_table_free): 0; 1 when it is not parted (an
 * old chunk, an encrypted one or one of a 1.x repository, known without
 * a read: read it whole), T empty; -EIO naming the chunk (missing,
 * damaged table). */
int backup_chunk_table_load (struct backup_repo *r, const unsigned char *d,
                             size_t clen, struct backup_part_table *t);
/* Reads parts FIRST..FIRST+N-1 of chunk D (table T) with one store
 * read, checks each against its CRC-32 and decodes them into OUT (N <<
 * t->shift bytes, the last part possibly shorter).  The digest of the
 * chunk is not checked.  Errors: -EIO naming the chunk and the part. */
int backup_chunk_read_parts (struct backup_repo *r, const unsigned char *d,
                             const struct backup_part_table *t,
                             uint32_t first, uint32_t n, void *out);
/* Marks chunk D bad, so the next backup writes it again. */
int backup_chunk_mark_bad (struct backup_repo *r, const unsigned char *d);

/* digest set (set.c): an open-addressing hash set of digests */
struct backup_set {
  pthread_mutex_t lock;
  unsigned char (*slot)[BACKUP_DIGEST_LEN];
  size_t cap, n;
};
void backup_set_init (struct backup_set *s);
void backup_set_free (struct backup_set *s);
/* Returns 1 if added, 0 if present, -ENOMEM. Thread-safe. */
int backup_set_add (struct backup_set *s, const unsigned char *d);
bool backup_set_has (struct backup_set *s, const unsigned char *d);

#endif /* VBK_BACKUP_INTERNAL_H */
