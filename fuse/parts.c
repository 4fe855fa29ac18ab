/* SPDX-License-Identifier: MIT
 *
 * parts.c - partition tables (GPT, MBR) and file system types, found by
 * libblkid.
 *
 * DESIGN: libblkid probes a file descriptor, not a buffer.  We give it a
 * sparse memfd of the disk's size holding only the parts of the disk a
 * probe needs: the first and last MiB (MBR, GPT header and entries, the
 * backup GPT; superblocks near either end).  MBR logical partitions are
 * a chain of EBRs spread over the extended partition: after each probe
 * we copy in the MiB at the start of every extended partition and after
 * the end of every logical one (where the next EBR sits) and probe
 * again, until the list stops growing.  No partition table parser of our
 * own; the disk is read through the cache like any other reader.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <blkid/blkid.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "internal.h"

#define WINDOW (1u << 20)
#define MAX_ROUNDS 64

/* Copies [OFF, OFF+LEN) of D (relative to BASE, clipped to SIZE) into
 * FD at the same offset. */
static int
copy_in (struct vbkfs_disk *d, int fd, uint64_t base, uint64_t size,
         uint64_t off, uint64_t len)
{
  char *buf;
  ssize_t r;

  if (off >= size)
    return 0;
  len = MIN (len, size - off);
  buf = malloc (len);
  if (buf == NULL)
    return -ENOMEM;
  r = vbkfs_disk_pread (d, buf, len, base + off);
  if (r >= 0 && pwrite (fd, buf, len, off) != (ssize_t) len)
    r = vbk_errno (-errno, "vbkfs: probe: write to memfd");
  free (buf);
  return r < 0 ? (int) r : 0;
}

/* A sparse memfd of SIZE bytes with the first and last MiB of
 * [BASE, BASE+SIZE) of D. */
static int
probe_fd (struct vbkfs_disk *d, uint64_t base, uint64_t size, int *fdp)
{
  int fd, r;

  fd = memfd_create ("vbkfs-probe", MFD_CLOEXEC);
  if (fd < 0)
    return vbk_errno (-errno, "vbkfs: memfd_create");
  if (ftruncate (fd, (off_t) size) < 0) {
    r = vbk_errno (-errno, "vbkfs: probe: ftruncate");
    close (fd);
    return r;
  }
  r = copy_in (d, fd, base, size, 0, WINDOW);
  if (r == 0 && size > WINDOW)
    r = copy_in (d, fd, base, size, size - MIN (size - WINDOW, WINDOW),
                 WINDOW);
  if (r < 0) {
    close (fd);
    return r;
  }
  *fdp = fd;
  return 0;
}

/* One probe of the partitions in FD.  Returns the number found (>= 0)
 * into *LIST, or -errno. */
static int
probe_parts (int fd, uint64_t size, struct vbkfs_part **list, size_t *n,
             uint64_t **windows, size_t *nwin)
{
  blkid_probe pr;
  blkid_partlist ls;
  int i, np, r = 0;

  *list = NULL;
  *n = 0;
  *nwin = 0;
  *windows = NULL;
  pr = blkid_new_probe ();
  if (pr == NULL)
    return -ENOMEM;
  if (blkid_probe_set_device (pr, fd, 0, (blkid_loff_t) size) < 0) {
    blkid_free_probe (pr);
    return vbk_errno (-EIO, "vbkfs: blkid: cannot probe");
  }
  blkid_probe_enable_superblocks (pr, 0);
  blkid_probe_enable_partitions (pr, 1);
  ls = blkid_probe_get_partitions (pr);
  np = ls ? blkid_partlist_numof_partitions (ls) : 0;
  if (np > 0) {
    *list = calloc (np, sizeof **list);
    *windows = calloc (2 * np, sizeof **windows);
    if (*list == NULL || *windows == NULL)
      r = -ENOMEM;
  }
  for (i = 0; r == 0 && i < np; i++) {
    blkid_partition p = blkid_partlist_get_partition (ls, i);
    uint64_t start = (uint64_t) blkid_partition_get_start (p) * 512;
    uint64_t len = (uint64_t) blkid_partition_get_size (p) * 512;

    if (blkid_partition_is_extended (p)) {
      (*windows)[(*nwin)++] = start;
      continue;
    }
    if (blkid_partition_is_logical (p))
      (*windows)[(*nwin)++] = start + len;
    if (start >= size || len == 0)
      continue;
    (*list)[*n].no = (unsigned) blkid_partition_get_partno (p);
    (*list)[*n].start = start;
    (*list)[*n].size = MIN (len, size - start);
    (*n)++;
  }
  blkid_free_probe (pr);
  if (r < 0) {
    free (*list);
    free (*windows);
    *list = NULL;
    *windows = NULL;
  }
  return r;
}

static int
cmp_part (const void *a, const void *b)
{
  const struct vbkfs_part *x = a, *y = b;

  return x->no < y->no ? -1 : x->no > y->no;
}

int
vbkfs_parts_read (struct vbkfs_disk *d, struct vbkfs_part **list, size_t *n)
{
  uint64_t size = vbkfs_disk_size (d), *win = NULL;
  size_t nwin = 0, prev = 0, i;
  int fd, r, round;

  *list = NULL;
  *n = 0;
  r = probe_fd (d, 0, size, &fd);
  if (r < 0)
    return r;
  for (round = 0; round < MAX_ROUNDS; round++) {
    free (*list);
    free (win);
    r = probe_parts (fd, size, list, n, &win, &nwin);
    if (r < 0 || nwin == 0 || (round > 0 && *n == prev))
      break;
    prev = *n;
    for (i = 0; r == 0 && i < nwin; i++)
      r = copy_in (d, fd, 0, size, win[i], WINDOW);
    if (r < 0)
      break;
  }
  free (win);
  close (fd);
  if (r < 0) {
    free (*list);
    *list = NULL;
    *n = 0;
    return r;
  }
  if (*n > 1)
    qsort (*list, *n, sizeof **list, cmp_part);
  return 0;
}

int
vbkfs_fstype (struct vbkfs_disk *d, uint64_t off, uint64_t len, char *type,
              size_t type_len)
{
  const char *val = NULL;
  blkid_probe pr;
  int fd, r;

  type[0] = '\0';
  r = probe_fd (d, off, len, &fd);
  if (r < 0)
    return r;
  pr = blkid_new_probe ();
  if (pr == NULL) {
    close (fd);
    return -ENOMEM;
  }
  if (blkid_probe_set_device (pr, fd, 0, (blkid_loff_t) len) == 0) {
    blkid_probe_enable_partitions (pr, 0);
    blkid_probe_enable_superblocks (pr, 1);
    blkid_probe_set_superblocks_flags (pr, BLKID_SUBLKS_TYPE);
    if (blkid_do_safeprobe (pr) == 0
        && blkid_probe_lookup_value (pr, "TYPE", &val, NULL) == 0 && val)
      snprintf (type, type_len, "%s", val);
  }
  blkid_free_probe (pr);
  close (fd);
  return 0;
}
