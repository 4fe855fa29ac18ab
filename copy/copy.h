/* SPDX-License-Identifier: MIT
 *
 * copy.h - one copy engine for import, export, backup and restore.
 *
 * An endpoint is a table of operations (struct copy_ops) and a handle,
 * as nbdkit plugins and libnbd's nbdcopy rw_ops are: an image, an image
 * snapshot, a local file or block device, memory (tests), a backup.
 * copy_run() walks the source's allocated extents (or a given list of
 * ranges), cuts them into pieces aligned to multiples of the piece size
 * from offset 0, and has worker threads (a bounded common/workq.h queue)
 * read each piece from the source and write it to the destination,
 * leaving out pieces, or aligned blocks inside them, that are all zeros
 * when asked.  Progress is built in: a bar with rate and ETA on a
 * terminal, or one JSON line a second.
 *
 * Errors: 0 or -errno with vbk_error() set on the calling thread (a
 * worker's message is carried over to the caller).
 */
#ifndef VBK_COPY_H
#define VBK_COPY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "image/image.h"

/* ---- Endpoints ---------------------------------------------------------- */

struct copy_ops {
  const char *kind;                       /* "image", "file", ... */
  /* Reads LEN bytes at OFF.  Returns LEN, or -errno.  Thread-safe. */
  ssize_t (*pread) (void *h, void *buf, size_t len, uint64_t off);
  /* Writes LEN bytes at OFF.  Returns 0 or -errno.  Thread-safe.
   * NULL: the endpoint is read-only. */
  int (*pwrite) (void *h, const void *buf, size_t len, uint64_t off);
  /* Calls CB for consecutive extents covering [OFF, OFF+LEN), allocated
   * or holes (reads as zeros).  NULL: everything is allocated. */
  int (*extents) (void *h, uint64_t off, uint64_t len, image_extent_cb cb,
                  void *arg);
  /* Makes [OFF, OFF+LEN) read as zeros.  NULL: zeros are written. */
  int (*zero) (void *h, uint64_t off, uint64_t len);
  /* Makes every completed write durable.  NULL: nothing to do. */
  int (*flush) (void *h);
  uint64_t (*size) (void *h);
  /* Frees the handle.  NULL: nothing to free. */
  void (*close) (void *h);
  /* New members only at the end. */
};

struct copy_endpoint {
  const struct copy_ops *ops;
  void *h;
  char name[300];                         /* for messages */
};

/* An open image or snapshot handle; with OWNED, closing the endpoint
 * closes IMG. */
int copy_endpoint_image (struct image *img, const char *name, int owned,
                         struct copy_endpoint **out);
/* Snapshot SNAP of IMAGE, opened read-only.  Errors: -ENOENT. */
int copy_endpoint_snapshot (struct store *st, const char *image,
                            const char *snap, struct copy_endpoint **out);

/* A local file or block device.  Flags: */
#define COPY_FILE_WRITE 1u        /* open for writing */
#define COPY_FILE_CREATE 2u       /* create/truncate to SIZE (files) */
/* With COPY_FILE_WRITE: writes whose buffer, offset and length are
 * aligned to COPY_DIRECT_ALIGN go around the page cache (O_DIRECT), the
 * rest as usual; where the file system refuses O_DIRECT, all as usual.
 * Durable only after the flush, as without it. */
#define COPY_FILE_DIRECT 4u
#define COPY_DIRECT_ALIGN 4096u
int copy_endpoint_file (const char *path, unsigned flags, uint64_t size,
                        struct copy_endpoint **out);

/* An open file descriptor FD of a regular file or block device,
 * borrowed: closing the endpoint leaves FD open.  NAME is for messages.
 * The size is the file's now (a block device's size).  Reading past the
 * end of a file that shrank meanwhile is an error (-EIO).  Writing needs
 * FD open for writing.  Errors: -EINVAL (neither a file nor a block
 * device), or fstat's. */
int copy_endpoint_fd (int fd, const char *name, struct copy_endpoint **out);

/* BUF of SIZE bytes (caller owns it; must outlive the endpoint). */
int copy_endpoint_memory (void *buf, uint64_t size,
                          struct copy_endpoint **out);

/* Calls the endpoint's close and frees it.  NULL is a no-op. */
void copy_endpoint_close (struct copy_endpoint *ep);

/* ---- Progress ----------------------------------------------------------- */

enum copy_progress_mode {
  COPY_PROGRESS_NONE = 0,
  COPY_PROGRESS_BAR,              /* \r-updated line on a terminal */
  COPY_PROGRESS_JSON,             /* one JSON object per line */
};

struct copy_progress {
  enum copy_progress_mode mode;
  FILE *out;                      /* NULL: stderr */
  const char *label;
  uint64_t total;                 /* bytes to cover */
  uint64_t start_ns, last_ns;
};

void copy_progress_start (struct copy_progress *p,
                          enum copy_progress_mode mode, const char *label,
                          uint64_t total);
/* Prints if due (at most 5 times a second for the bar, once a second
 * for JSON) or if LAST. */
void copy_progress_update (struct copy_progress *p, uint64_t done, int last);
/* The mode a command should use: JSON when asked, a bar on a terminal,
 * else nothing. */
enum copy_progress_mode copy_progress_default (int json, int tty);

/* ---- The copy loop ------------------------------------------------------- */

struct copy_range {
  uint64_t off, len;
};

struct copy_opts {
  uint64_t piece;                 /* bytes per piece, 0: 4 MiB */
  unsigned threads;               /* 0: 4 */
  int whole_pieces;               /* read whole aligned pieces around
                                     allocated data (backup) */
  int skip_zero;                  /* an all-zero piece is not written */
  int dst_zeroed;                 /* the destination reads as zeros where
                                     not written: holes and zero pieces
                                     need nothing */
  const struct copy_range *ranges;/* only these (sorted) ranges, all read
                                     as data; NULL: the source's extents */
  size_t nranges;
  enum copy_progress_mode progress;
  const char *label;              /* for progress and messages */
  int (*interrupted) (void);      /* non-zero stops the copy (-EINTR) */
  uint64_t zero_block;            /* with skip_zero: all-zero aligned
                                     blocks of this size (a power of two
                                     below the piece size) inside a data
                                     piece are not written either;
                                     0: whole pieces only */
  /* New members only at the end. */
};

struct copy_result {
  uint64_t total;                 /* bytes the copy covered */
  uint64_t read;                  /* bytes read from the source */
  uint64_t written;               /* bytes written (pwrite) */
  uint64_t zeroed;                /* bytes zeroed (zero op or zeros) */
  uint64_t holes;                 /* bytes of holes in the source (not
                                     read; nothing to do with dst_zeroed) */
  uint64_t elapsed_ns;
};

int copy_run (struct copy_endpoint *src, struct copy_endpoint *dst,
              const struct copy_opts *o, struct copy_result *res);

/* Whether LEN bytes at BUF are all zero. */
int copy_is_zero (const void *buf, size_t len);

#endif /* VBK_COPY_H */
