/* SPDX-License-Identifier: MIT
 *
 * image-bench - throughput of the image layer on any store.
 *
 * Opens (creating it if needed) an image on the store named by --store
 * and runs one case: reads or writes of --io-size bytes, sequential or at
 * random aligned offsets, --total bytes in all, with --depth requests in
 * flight through image_aio_read/image_aio_write.  It prints one line,
 *   vbk write 4M seq: 123.4 MiB/s 30.8 IOPS
 * that bench/image-bench.sh puts beside `rbd bench` with the same
 * parameters (--depth is the counterpart of rbd bench --io-threads).
 *
 * DESIGN: the main thread keeps the queue full; completions run on store
 * threads and only hand their slot back (each slot owns one buffer)
 * under a mutex, so a callback never blocks and never submits.  A write
 * run ends with image_flush() inside the timed interval, so every
 * backend is measured to durability.  Random offsets come from a fixed
 * seed, so runs repeat; sequential runs wrap at the end of the image.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/util.h"
#include "image/image.h"
#include "store/store.h"

enum pattern { PAT_SEQ, PAT_RAND };
enum io_type { IO_READ, IO_WRITE };

struct bench {
  struct image *img;
  enum io_type type;
  size_t io_size;
  unsigned depth;

  pthread_mutex_t lock;
  pthread_cond_t cond;
  unsigned *free_slots;     /* stack of idle slot numbers */
  unsigned nfree;
  int err;                  /* first failure, -errno */
};

struct slot {
  struct bench *b;
  unsigned idx;
  void *buf;
};

static void
usage (FILE *fp)
{
  fprintf (fp,
"usage: image-bench --store URI [options]\n"
"  --store URI        store to use (local:/PATH, rados:POOL, ...)\n"
"  --image NAME       image name (default: bench); created if missing\n"
"  --size SIZE        size of a new image (default: 1G)\n"
"  --io-size SIZE     bytes per request (default: 4K)\n"
"  --pattern seq|rand offsets (default: seq)\n"
"  --type read|write  (default: write)\n"
"  --depth N          requests in flight (default: 16; --threads is the\n"
"                     same, as rbd bench calls it)\n"
"  --total SIZE       bytes to move (default: the image size)\n"
"  --fresh            remove the image first if it exists\n"
"  --remove           remove the image at the end\n"
"  --remove-only      remove the image (if it exists) and do nothing else\n");
}

static void
complete (void *arg, ssize_t ret)
{
  struct slot *s = arg;
  struct bench *b = s->b;

  pthread_mutex_lock (&b->lock);
  if (ret < 0 && b->err == 0)
    b->err = (int) ret;
  else if (ret >= 0 && b->type == IO_READ && (size_t) ret != b->io_size
           && b->err == 0)
    b->err = -EIO;
  b->free_slots[b->nfree++] = s->idx;
  pthread_cond_signal (&b->cond);
  pthread_mutex_unlock (&b->lock);
}

/* xorshift64*: fast and good enough to spread offsets. */
static uint64_t
next_rand (uint64_t *state)
{
  uint64_t x = *state;

  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * 0x2545f4914f6cdd1dULL;
}

static const char *
size_label (uint64_t v, char *buf, size_t len)
{
  if (v >= (1u << 30) && v % (1u << 30) == 0)
    snprintf (buf, len, "%" PRIu64 "G", v >> 30);
  else if (v >= (1u << 20) && v % (1u << 20) == 0)
    snprintf (buf, len, "%" PRIu64 "M", v >> 20);
  else if (v >= 1024 && v % 1024 == 0)
    snprintf (buf, len, "%" PRIu64 "K", v >> 10);
  else
    snprintf (buf, len, "%" PRIu64, v);
  return buf;
}

static int
parse_size_arg (const char *opt, const char *s, uint64_t *out)
{
  if (parse_size (s, out) < 0 || *out == 0) {
    fprintf (stderr, "image-bench: %s: invalid size '%s'\n", opt, s);
    return -1;
  }
  return 0;
}

/* Runs the case; returns 0 or -errno, with the elapsed time in *NS. */
static int
run (struct bench *b, enum pattern pat, uint64_t total, uint64_t *ns)
{
  uint64_t size = image_size (b->img);
  uint64_t blocks = size / b->io_size;
  uint64_t nops = total / b->io_size;
  uint64_t seq_block = 0, rnd = 0x9e3779b97f4a7c15ULL;
  uint64_t i, start;
  struct slot *slots;
  int r = 0;

  slots = calloc (b->depth, sizeof *slots);
  b->free_slots = calloc (b->depth, sizeof *b->free_slots);
  if (slots == NULL || b->free_slots == NULL) {
    r = -ENOMEM;
    goto out;
  }
  for (unsigned k = 0; k < b->depth; k++) {
    slots[k].b = b;
    slots[k].idx = k;
    if (posix_memalign (&slots[k].buf, 4096, b->io_size) != 0) {
      r = -ENOMEM;
      goto out;
    }
    /* Incompressible, never-zero data: no backend may take a shortcut. */
    for (size_t j = 0; j < b->io_size / 8; j++)
      ((uint64_t *) slots[k].buf)[j] = next_rand (&rnd) | 1;
    b->free_slots[k] = k;
  }
  b->nfree = b->depth;

  start = now_mono_ns ();
  for (i = 0; i < nops; i++) {
    uint64_t block, off;
    unsigned k;

    if (pat == PAT_SEQ) {
      block = seq_block++;
      if (seq_block == blocks)
        seq_block = 0;
    }
    else
      block = next_rand (&rnd) % blocks;
    off = block * b->io_size;

    pthread_mutex_lock (&b->lock);
    while (b->nfree == 0)
      pthread_cond_wait (&b->cond, &b->lock);
    k = b->free_slots[--b->nfree];
    r = b->err;
    pthread_mutex_unlock (&b->lock);
    if (r < 0)
      break;

    if (b->type == IO_WRITE)
      r = image_aio_write (b->img, slots[k].buf, b->io_size, off, 0,
                           complete, &slots[k]);
    else
      r = image_aio_read (b->img, slots[k].buf, b->io_size, off,
                          complete, &slots[k]);
    if (r < 0) {
      fprintf (stderr, "image-bench: submit at %" PRIu64 ": %s\n",
               off, vbk_error ());
      pthread_mutex_lock (&b->lock);
      b->free_slots[b->nfree++] = k;
      pthread_mutex_unlock (&b->lock);
      break;
    }
  }

  /* Wait for everything in flight, even after a failure: the callbacks
   * use the slots. */
  pthread_mutex_lock (&b->lock);
  while (b->nfree < b->depth)
    pthread_cond_wait (&b->cond, &b->lock);
  if (r == 0)
    r = b->err;
  pthread_mutex_unlock (&b->lock);

  if (r == 0 && b->type == IO_WRITE) {
    r = image_flush (b->img);
    if (r < 0)
      fprintf (stderr, "image-bench: flush: %s\n", vbk_error ());
  }
  *ns = now_mono_ns () - start;

 out:
  if (slots != NULL)
    for (unsigned k = 0; k < b->depth; k++)
      free (slots[k].buf);
  free (slots);
  free (b->free_slots);
  b->free_slots = NULL;
  return r;
}

int
main (int argc, char **argv)
{
  enum { OPT_FRESH = 256, OPT_REMOVE, OPT_REMOVE_ONLY };
  static const struct option opts[] = {
    { "store", required_argument, NULL, 's' },
    { "image", required_argument, NULL, 'i' },
    { "size", required_argument, NULL, 'S' },
    { "io-size", required_argument, NULL, 'b' },
    { "pattern", required_argument, NULL, 'p' },
    { "type", required_argument, NULL, 't' },
    { "depth", required_argument, NULL, 'd' },
    { "threads", required_argument, NULL, 'd' },
    { "total", required_argument, NULL, 'T' },
    { "fresh", no_argument, NULL, OPT_FRESH },
    { "remove", no_argument, NULL, OPT_REMOVE },
    { "remove-only", no_argument, NULL, OPT_REMOVE_ONLY },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  const char *uri = NULL, *name = "bench";
  uint64_t size = 1ULL << 30, io_size = 4096, total = 0, ns;
  enum pattern pat = PAT_SEQ;
  struct bench b = { .type = IO_WRITE, .depth = 16 };
  struct image_info info;
  struct store *st = NULL;
  int fresh = 0, remove_after = 0, remove_only = 0, c, r, status = 1;
  char *end;
  char l1[32];
  double secs;

  while ((c = getopt_long (argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 's':
      uri = optarg;
      break;
    case 'i':
      name = optarg;
      break;
    case 'S':
      if (parse_size_arg ("--size", optarg, &size) < 0)
        return 2;
      break;
    case 'b':
      if (parse_size_arg ("--io-size", optarg, &io_size) < 0)
        return 2;
      break;
    case 'T':
      if (parse_size_arg ("--total", optarg, &total) < 0)
        return 2;
      break;
    case 'p':
      if (strcmp (optarg, "seq") == 0)
        pat = PAT_SEQ;
      else if (strcmp (optarg, "rand") == 0)
        pat = PAT_RAND;
      else {
        fprintf (stderr, "image-bench: --pattern: seq or rand\n");
        return 2;
      }
      break;
    case 't':
      if (strcmp (optarg, "read") == 0)
        b.type = IO_READ;
      else if (strcmp (optarg, "write") == 0)
        b.type = IO_WRITE;
      else {
        fprintf (stderr, "image-bench: --type: read or write\n");
        return 2;
      }
      break;
    case 'd':
      errno = 0;
      b.depth = strtoul (optarg, &end, 10);
      if (errno || *end || b.depth == 0 || b.depth > 1024) {
        fprintf (stderr, "image-bench: --depth: 1 to 1024\n");
        return 2;
      }
      break;
    case OPT_FRESH:
      fresh = 1;
      break;
    case OPT_REMOVE:
      remove_after = 1;
      break;
    case OPT_REMOVE_ONLY:
      remove_only = 1;
      break;
    case 'h':
      usage (stdout);
      return 0;
    default:
      usage (stderr);
      return 2;
    }
  }
  if (uri == NULL || optind != argc) {
    usage (stderr);
    return 2;
  }
  if (io_size > (64u << 20) || io_size % 512) {
    fprintf (stderr, "image-bench: --io-size: a multiple of 512 up to 64M\n");
    return 2;
  }

  r = store_open (uri, &st);
  if (r < 0) {
    fprintf (stderr, "image-bench: %s\n", vbk_error ());
    return 1;
  }
  if (fresh || remove_only) {
    r = image_remove (st, name);
    if (r < 0 && r != -ENOENT) {
      fprintf (stderr, "image-bench: %s\n", vbk_error ());
      goto out;
    }
    if (remove_only) {
      status = 0;
      goto out;
    }
  }
  r = image_stat (st, name, &info);
  if (r == -ENOENT) {
    r = image_create (st, name, size, 0);
    if (r == 0)
      r = image_stat (st, name, &info);
  }
  if (r < 0) {
    fprintf (stderr, "image-bench: %s\n", vbk_error ());
    goto out;
  }
  if (info.size < io_size) {
    fprintf (stderr, "image-bench: image %s is smaller than --io-size\n",
             name);
    goto out;
  }
  if (total == 0)
    total = info.size;
  if (total < io_size) {
    fprintf (stderr, "image-bench: --total is smaller than --io-size\n");
    goto out;
  }

  r = image_open (st, name, b.type == IO_READ ? IMAGE_OPEN_RDONLY : 0,
                  &b.img);
  if (r < 0) {
    fprintf (stderr, "image-bench: %s\n", vbk_error ());
    goto out;
  }
  b.io_size = io_size;
  pthread_mutex_init (&b.lock, NULL);
  pthread_cond_init (&b.cond, NULL);

  r = run (&b, pat, total, &ns);
  image_close (b.img);
  pthread_cond_destroy (&b.cond);
  pthread_mutex_destroy (&b.lock);
  if (r < 0) {
    fprintf (stderr, "image-bench: %s %s: %s\n", uri, name, strerror (-r));
    goto out;
  }

  secs = ns / 1e9;
  printf ("vbk %s %s %s: %.1f MiB/s %.1f IOPS\n",
          b.type == IO_WRITE ? "write" : "read",
          size_label (io_size, l1, sizeof l1),
          pat == PAT_SEQ ? "seq" : "rand",
          (double) (total / io_size * io_size) / (1 << 20) / secs,
          (double) (total / io_size) / secs);
  fflush (stdout);
  status = 0;

 out:
  if (remove_after && image_remove (st, name) < 0) {
    fprintf (stderr, "image-bench: %s\n", vbk_error ());
    status = 1;
  }
  store_close (st);
  return status;
}
