/* SPDX-License-Identifier: MIT
 *
 * backup.h - the backup repository: incremental-forever backups of
 * images into deduplicated, LZ4-compressed, verifiable chunks on a store.
 *
 * A repository lives on any store URI (local:DIR, rados:POOL, fault:...);
 * its format is in backup/FORMAT.md.  Each backup is a full view of one
 * image at one crash-consistent snapshot: an index of one SHA-256 digest
 * per fixed-size chunk and a JSON manifest; a backup exists iff its
 * manifest does.  Chunks are shared by every backup of every image.
 *
 * Conventions: 0 or -errno, the reason in vbk_error(); in addition
 *   -ENOENT           no repository / no such backup
 *   -EPROTONOSUPPORT  the repository (or a manifest, index, chunk) has a
 *                     newer major format version than this code
 *   -EBADMSG          a manifest, index or chunk is corrupt
 *   -EIO              a chunk is missing or corrupt (message names it)
 * Thread safety: a struct backup_repo may be used by several threads for
 * reading; a struct backup_reader is fully thread-safe.
 */
#ifndef VBK_BACKUP_H
#define VBK_BACKUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "copy/copy.h"
#include "image/image.h"
#include "store/store.h"

#define BACKUP_CHUNK_SIZE_DEFAULT (4u << 20)
#define BACKUP_CHUNK_SIZE_MIN (4u << 10)
#define BACKUP_CHUNK_SIZE_MAX (64u << 20)

struct backup_repo;
struct backup_reader;

/* ---- Repository ---------------------------------------------------------- */

/* The key of an encrypted repository: a key file holding the
 * repository's master keys, encrypted with a key derived from a
 * passphrase (FORMAT.md, "Encryption"). */
struct backup_key_opts {
  const char *key_file;
  const char *passphrase;
  uint32_t kdf_iterations;          /* creating only; 0: the default */
};

/* Creates a repository on URI with chunks of CHUNK_SIZE (a power of two,
 * 0: the default).  Errors: -EEXIST (already one), -EINVAL. */
int backup_repo_init (const char *uri, uint32_t chunk_size);
/* The same, encrypted with a new key written to KEY->key_file (which
 * must not exist: -EEXIST) when KEY is not NULL. */
int backup_repo_create (const char *uri, uint32_t chunk_size,
                        const struct backup_key_opts *key);

/* Errors: -ENOENT (no repository), -EPROTONOSUPPORT. */
int backup_repo_open (const char *uri, struct backup_repo **out);
/* The same with the key of an encrypted repository (NULL: none).
 * Errors also: -EACCES (encrypted and no key given, or "wrong passphrase
 * or key file"; nothing was written), -EINVAL (a key for a repository
 * that is not encrypted). */
int backup_repo_open_key (const char *uri, const struct backup_key_opts *key,
                          struct backup_repo **out);
/* Whether R is encrypted. */
bool backup_repo_encrypted (struct backup_repo *r);
void backup_repo_close (struct backup_repo *r);

uint32_t backup_repo_chunk_size (struct backup_repo *r);
/* The repository's store (owned by R). */
struct store *backup_repo_store (struct backup_repo *r);

struct backup_entry {
  char id[64];
  char image[IMAGE_NAME_MAX + 1];
  uint64_t size;
  uint64_t time_ms;
  uint32_t chunk_size;
  bool protected_;
  /* New fields only at the end. */
};

/* Backups of IMAGE (NULL: all), oldest first.  Caller free()s *LIST. */
int backup_list (struct backup_repo *r, const char *image,
                 struct backup_entry **list, size_t *n);

/* What the catalog says of the backups of IMAGE (NULL: all), newest
 * first: each backup begun and not yet cleaned up by gc, complete, still
 * running, failed or pruned (id, image, time_ms; the other members 0).
 * One store call per 1,000 backups and no manifest read: a cheap way to
 * see whether backup_list could answer differently, with
 * backup_complete for the candidates.  Caller free()s *LIST. */
int backup_catalog_list (struct backup_repo *r, const char *image,
                         struct backup_entry **list, size_t *n);
/* Whether backup ID is complete and not removed (its manifest exists):
 * 0, -ENOENT, or a store error.  One store call. */
int backup_complete (struct backup_repo *r, const char *id);

/* The manifest of backup ID, as stored (JSON).  Caller frees *JSON.
 * Errors: -ENOENT. */
int backup_manifest_json (struct backup_repo *r, const char *id,
                          char **json);

/* ---- Reading a backup ---------------------------------------------------- */

/* Errors: -ENOENT (no such backup), -EBADMSG (index does not match its
 * manifest). */
int backup_reader_open (struct backup_repo *r, const char *id,
                        struct backup_reader **out);
uint64_t backup_reader_size (struct backup_reader *rd);
/* The image the backup was taken of, and its chunk size (owned by RD). */
const char *backup_reader_image (struct backup_reader *rd);
uint32_t backup_reader_chunk_size (struct backup_reader *rd);
/* Like image_extents: allocated = 0 for chunks that are all zero. */
int backup_reader_extents (struct backup_reader *rd, uint64_t off,
                           uint64_t len, image_extent_cb cb, void *arg);
/* Thread-safe; -EIO with vbk_error() naming the chunk on a corrupt or
 * missing chunk. */
ssize_t backup_reader_pread (struct backup_reader *rd, void *buf, size_t len,
                             uint64_t off);
/* backup_reader_pread with FLAGS.  BACKUP_READ_UNHASHED: each whole
 * chunk read is checked against the CRC-32 of its stored bytes (in an
 * encrypted repository: its AES-GCM tag), which catches damage in the
 * store, but not yet against its name (its SHA-256, or HMAC-SHA256);
 * the caller does that with backup_reader_verify before it trusts the
 * data for good.  Parts of chunks are always read checked in full. */
#define BACKUP_READ_UNHASHED 1
/* BACKUP_READ_PARTS: a range that is not a whole chunk is read part by
 * part where the chunk is parted (FORMAT.md): only the parts it touches
 * are fetched and decoded, each checked against its CRC-32 before its
 * bytes are used, and kept in a small cache of decoded parts; the
 * chunk's digest is not checked (the caller does that with
 * backup_reader_check_chunk, once per chunk).  Chunks that are not
 * parted are read whole and checked in full. */
#define BACKUP_READ_PARTS 2
/* With BACKUP_READ_PARTS: a range of a chunk that is not parted fails
 * with -EAGAIN (no message; the caller reads it whole its own way). */
#define BACKUP_READ_PARTS_ONLY 4
ssize_t backup_reader_pread_flags (struct backup_reader *rd, void *buf,
                                   size_t len, uint64_t off, int flags);
/* Reads the whole chunk holding byte OFF and checks it against its
 * name (for data read with BACKUP_READ_PARTS): 0 (a hole too), or -EIO
 * with vbk_error() naming the chunk, -EINVAL past the end.
 * Thread-safe. */
int backup_reader_check_chunk (struct backup_reader *rd, uint64_t off);
/* Checks BUF, the LEN bytes at OFF read with BACKUP_READ_UNHASHED,
 * against the names of the whole chunks it holds (holes and parts of
 * chunks are skipped).  Returns 0, or -EIO with vbk_error() naming the
 * first chunk that does not match, -EINVAL past the end.  Thread-safe. */
int backup_reader_verify (struct backup_reader *rd, const void *buf,
                          size_t len, uint64_t off);
void backup_reader_close (struct backup_reader *rd);
/* An open reader pins its backup's chunks against gc (it is registered
 * as a reader).  backup_reader_unpin drops that registration while the
 * reader stays open (reads go on, but gc may collect the chunks of a
 * backup pruned meanwhile: those reads fail with -EIO naming the chunk);
 * backup_reader_pin registers again and then checks that the backup
 * still exists.  Both are no-ops when already done.  Pin errors: -ENOENT
 * (the backup was removed meanwhile; the reader stays unpinned), store
 * errors.  Thread-safe. */
void backup_reader_unpin (struct backup_reader *rd);
int backup_reader_pin (struct backup_reader *rd);

/* A copy endpoint reading RD (not owned: close RD after the endpoint). */
int backup_reader_endpoint (struct backup_reader *rd,
                            struct copy_endpoint **out);

/* ---- Taking backups ------------------------------------------------------ */

struct backup_run_opts {
  struct store *st;                 /* the images' store */
  const char *const *images;
  size_t nimages;
  const char *group;                /* NULL: none (several images need one) */
  const char *const *tags;
  size_t ntags;
  const char *host_id;              /* for a temporary lease (snapshot.h) */
  int cbt_sample;                   /* unchanged chunks re-hashed; <0: auto */
  int force_full;
  unsigned threads;                 /* 0: 8 */
  enum copy_progress_mode progress;
  int (*interrupted) (void);
};

struct backup_run_result {
  char id[64];
  char image[IMAGE_NAME_MAX + 1];
  char parent[64];                  /* "" for a full backup */
  char snapshot[IMAGE_NAME_MAX + 1];
  int full;
  char full_reason[256];            /* why it was full */
  int cbt_mismatch;                 /* unchanged chunks that differed */
  uint64_t size, chunks;
  uint64_t chunks_read, bytes_read; /* from the snapshot */
  uint64_t cbt_checked;             /* chunks of the sample */
  uint64_t chunks_new, bytes_stored;/* chunks written to the repository */
  uint64_t elapsed_ns;
};

/* Backs up each image (one result each, RES has NIMAGES entries). */
int backup_run (struct backup_repo *r, const struct backup_run_opts *o,
                struct backup_run_result *res);

/* ---- Maintenance --------------------------------------------------------- */

/* Called for each bad chunk: its digest (hex), the reason, and the ids
 * of every backup that uses it. */
typedef void (*backup_bad_cb) (void *arg, const char *hex, const char *why,
                               const char *const *ids, size_t nids);

struct backup_verify_result {
  uint64_t backups, chunks, checked, bad, bytes;
};

/* Re-reads and re-hashes the chunks of backups IDS (N 0: all), or a
 * random SAMPLE_PCT percent of them (100: all).  Bad chunks are marked
 * in the repository so that the next backup writes them again.  Returns
 * 0 if all good, -EIO if any chunk is bad (after reporting all). */
int backup_verify (struct backup_repo *r, const char *const *ids, size_t n,
                   unsigned sample_pct, backup_bad_cb cb, void *arg,
                   struct backup_verify_result *res);

struct backup_prune_opts {
  const char *image;                /* NULL: every image */
  int keep_last, keep_daily, keep_weekly, keep_monthly;
  int dry_run;
};

/* Called for each backup considered: KEEP and why. */
typedef void (*backup_prune_cb) (void *arg, const struct backup_entry *e,
                                 int keep, const char *why);

/* Removes the manifests of backups outside the keep rules (protected
 * ones are always kept).  Chunks are freed by backup_gc. */
int backup_prune (struct backup_repo *r, const struct backup_prune_opts *o,
                  backup_prune_cb cb, void *arg);

struct backup_gc_result {
  uint64_t chunks, marked, removed, bytes_removed, kept_young;
  uint64_t writers_live, writers_dead;
  uint64_t readers_live, readers_dead;  /* open readers; records removed */
};

/* Removes chunks no backup uses, safely beside running backups (see
 * gc.c).  SKEW_MS: allowance for clocks of other hosts. */
int backup_gc (struct backup_repo *r, uint64_t skew_ms,
               struct backup_gc_result *res);

/* Removes backup ID's manifest.  Errors: -ENOENT, -EPERM (protected). */
int backup_remove (struct backup_repo *r, const char *id);

/* Sets or clears the protected flag.  Errors: -ENOENT. */
int backup_protect (struct backup_repo *r, const char *id, bool on);

/* ---- Restoring ------------------------------------------------------------ */

#define BACKUP_RESTORE_IN_PLACE 1u  /* onto an existing image */
#define BACKUP_RESTORE_FORCE 2u     /* even while its lease is held; for
                                       a file: replace an existing one */

struct backup_restore_result {
  uint64_t size, read, written, zeroed, same, elapsed_ns;
};

/* Restores backup ID into IMAGE on ST: a new image (sparse), or with
 * BACKUP_RESTORE_IN_PLACE an existing one, writing only chunks whose
 * content differs.  Errors: -EEXIST (new image exists), -EBUSY (lease
 * held, no FORCE), -EIO (bad chunk, named). */
int backup_restore_image (struct backup_repo *r, const char *id,
                          struct store *st, const char *image,
                          unsigned flags, enum copy_progress_mode progress,
                          struct backup_restore_result *res);
/* Restores into a file (created sparse) or block device.  A file is
 * written beside PATH and renamed over it only when complete and
 * durable; an existing regular file is replaced only with
 * BACKUP_RESTORE_FORCE (else -EEXIST).  A block device is written in
 * place. */
int backup_restore_file (struct backup_repo *r, const char *id,
                         const char *path, unsigned flags,
                         enum copy_progress_mode progress,
                         struct backup_restore_result *res);

#endif /* VBK_BACKUP_H */
