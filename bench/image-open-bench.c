/* SPDX-License-Identifier: MIT
 *
 * image-open-bench.c - time and memory of image_open, and of one
 * image_extents walk over the whole image (what an NBD BLOCK_STATUS
 * costs), for big thin images.
 *
 * DESIGN: for each size given, creates an image on the store, allocates
 * WRITTEN bytes of it (one 4 KiB write per object, contiguous from 0 or
 * spread evenly over the image with --spread: the map does not care how
 * much of an object holds data), then, in a fresh child process so that
 * earlier allocations do not count, measures the wall time of image_open
 * and the growth of the resident set (VmRSS: memory touched) and of the
 * heap (mallinfo2: memory allocated, touched or not), and the time of a
 * walk of its extents; then opens it OPENS-1 more times (--opens, default
 * 5) and prints the median and the smallest open time, and the child's
 * peak resident set (VmHWM); through a fault: store URI
 * ("fault:@local:DIR") also the bytes the first open read and its
 * store calls (each a round trip on RADOS, some in parallel).  Prints one
 * line per image.  The image is
 * removed after.
 *
 *   image-open-bench STORE-URI [--spread] [--object-size BYTES]
 *                    [--opens N] SIZE:WRITTEN...  (sizes: bytes, K/M/G/T)
 */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/error.h"
#include "common/util.h"
#include "image/image.h"

static uint64_t
status_kib (const char *key)
{
  char line[256];
  uint64_t kib = 0;
  size_t klen = strlen (key);
  FILE *f = fopen ("/proc/self/status", "r");

  while (f && fgets (line, sizeof line, f))
    if (strncmp (line, key, klen) == 0
        && sscanf (line + klen, " %" SCNu64, &kib) == 1)
      break;
  if (f)
    fclose (f);
  return kib;
}

static uint64_t
rss_kib (void)
{
  return status_kib ("VmRSS:");
}

static int
cmp_u64 (const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

  return x < y ? -1 : x > y;
}

static int
count_extent (void *arg, uint64_t off, uint64_t len, int alloc)
{
  (void) off;
  (void) len;
  (void) alloc;
  ++*(uint64_t *) arg;
  return 0;
}

/* In a child: open NAME, print the numbers. */
static int
measure (const char *uri, const char *name, const char *label, int opens)
{
  struct store *st;
  struct image *img;
  uint64_t r0, r1, t0, t1, t2, b0, b1, c0, c1, extents = 0, times[64];
  int k;
  size_t h0, h1;
  int r;

  if (store_open (uri, &st) < 0)
    return 1;
  r0 = rss_kib ();
  h0 = mallinfo2 ().uordblks + mallinfo2 ().hblkhd;
  b0 = store_fault_bytes_read (st);
  c0 = store_fault_count (st, STORE_OP_ALL);
  t0 = now_mono_ns ();
  r = image_open (st, name, 0, &img);
  t1 = now_mono_ns ();
  b1 = store_fault_bytes_read (st);
  c1 = store_fault_count (st, STORE_OP_ALL);
  r1 = rss_kib ();
  h1 = mallinfo2 ().uordblks + mallinfo2 ().hblkhd;
  if (r < 0) {
    fprintf (stderr, "image-open-bench: open: %s\n", vbk_error ());
    return 1;
  }
  r = image_extents (img, 0, image_size (img), count_extent, &extents);
  t2 = now_mono_ns ();
  image_close (img);
  times[0] = t1 - t0;
  for (k = 1; r == 0 && k < opens; k++) {
    t0 = now_mono_ns ();
    r = image_open (st, name, 0, &img);
    times[k] = now_mono_ns () - t0;
    if (r == 0)
      image_close (img);
  }
  qsort (times, (size_t) k, sizeof times[0], cmp_u64);
  printf ("%-24s open %7.2f ms (median of %d, min %7.2f)  rss +%6.2f MiB  "
          "heap +%7.2f MiB  peak rss %6.2f MiB  extents walk %6.2f ms "
          "(%" PRIu64 " extents)", label, times[k / 2] / 1e6, k,
          times[0] / 1e6, (double) (r1 - r0) / 1024,
          (double) (h1 - h0) / (1 << 20),
          (double) status_kib ("VmHWM:") / 1024, (t2 - t1) / 1e6, extents);
  if (strncmp (uri, "fault:", 6) == 0)    /* it counts bytes and calls */
    printf ("  open read %.1f KiB in %" PRIu64 " store calls",
            (double) (b1 - b0) / 1024, c1 - c0);
  printf ("\n");
  fflush (stdout);
  store_close (st);
  return r < 0;
}

int
main (int argc, char **argv)
{
  uint32_t osize = IMAGE_OBJECT_SIZE_DEFAULT;
  int i, spread = 0, status = 0, opens = 5;
  static char buf[4096];

  if (argc < 3) {
    fprintf (stderr, "usage: image-open-bench STORE-URI [--spread] "
             "[--object-size BYTES] [--opens N] SIZE:WRITTEN...\n");
    return 2;
  }
  memset (buf, 0xab, sizeof buf);
  for (i = 2; i < argc; i++) {
    char *colon = strchr (argv[i], ':'), label[64], size_s[32], wr_s[32];
    uint64_t size, written, nobj, total, k, step, v;
    struct store *st;
    struct image *img;
    pid_t pid;
    int r, ws;

    if (strcmp (argv[i], "--spread") == 0) {
      spread = 1;
      continue;
    }
    if (strcmp (argv[i], "--opens") == 0 && i + 1 < argc) {
      opens = atoi (argv[++i]);
      if (opens < 1 || opens > 64)
        return 2;
      continue;
    }
    if (strcmp (argv[i], "--object-size") == 0 && i + 1 < argc) {
      if (parse_size (argv[++i], &v) < 0)
        return 2;
      osize = (uint32_t) v;
      continue;
    }
    if (colon == NULL)
      return 2;
    *colon = '\0';
    if (parse_size (argv[i], &size) < 0 || parse_size (colon + 1, &written) < 0)
      return 2;
    snprintf (label, sizeof label, "%s, %s %s", format_size (size, size_s,
                                                             sizeof size_s),
              format_size (written, wr_s, sizeof wr_s),
              written ? (spread ? "spread" : "from 0") : "written");
    if (store_open (argv[1], &st) < 0) {
      fprintf (stderr, "image-open-bench: %s\n", vbk_error ());
      return 1;
    }
    image_remove (st, "open-bench");
    r = image_create (st, "open-bench", size, osize);
    if (r == 0)
      r = image_open (st, "open-bench", 0, &img);
    if (r < 0) {
      fprintf (stderr, "image-open-bench: %s\n", vbk_error ());
      return 1;
    }
    nobj = written / osize;
    total = (size + osize - 1) / osize;
    step = spread && nobj ? total / nobj : 1;
    for (k = 0; r == 0 && k < nobj; k++)
      r = image_write (img, buf, sizeof buf, k * step * osize, 0);
    if (r == 0)
      r = image_flush (img);
    image_close (img);
    if (r < 0) {
      fprintf (stderr, "image-open-bench: write: %s\n", vbk_error ());
      return 1;
    }
    fflush (stdout);
    pid = fork ();
    if (pid == 0)
      _exit (measure (argv[1], "open-bench", label, opens));
    if (pid < 0 || waitpid (pid, &ws, 0) < 0 || !WIFEXITED (ws)
        || WEXITSTATUS (ws) != 0)
      status = 1;
    image_remove (st, "open-bench");
    store_close (st);
  }
  return status;
}
