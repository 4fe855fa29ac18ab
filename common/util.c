/* SPDX-License-Identifier: MIT
 *
 * util.c - see util.h.
 */
#include <ctype.h>
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "error.h"
#include "util.h"

int
parse_size (const char *s, uint64_t *out)
{
  static const char units[] = "BKMGTP";
  unsigned long long v;
  const char *u;
  char *end;
  int shift;

  if (s == NULL || !isdigit ((unsigned char) *s)) {
    vbk_set_error ("invalid size '%s': expected a number like 10G or 4M",
                   s ? s : "");
    return -EINVAL;
  }
  errno = 0;
  v = strtoull (s, &end, 10);
  if (errno == ERANGE) {
    vbk_set_error ("invalid size '%s': too large", s);
    return -ERANGE;
  }
  if (*end == '\0') {
    *out = v;
    return 0;
  }
  u = strchr (units, toupper ((unsigned char) *end));
  if (u == NULL || *u == '\0'
      || !(end[1] == '\0' || strcasecmp (end + 1, "iB") == 0
           || (strcasecmp (end + 1, "B") == 0 && *u != 'B'))) {
    vbk_set_error ("invalid size '%s': unknown unit '%s' "
                   "(use B, K, M, G, T or P)", s, end);
    return -EINVAL;
  }
  shift = (int) (u - units) * 10;
  if (shift && v > (UINT64_MAX >> shift)) {
    vbk_set_error ("invalid size '%s': too large", s);
    return -ERANGE;
  }
  *out = (uint64_t) v << shift;
  return 0;
}

const char *
format_size (uint64_t bytes, char *buf, size_t len)
{
  static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB",
                                       "PiB", "EiB" };
  int i = 0;
  double v = bytes;

  while (v >= 1024 && i < 6) {
    v /= 1024;
    i++;
  }
  if (i == 0 || v == (uint64_t) v)
    snprintf (buf, len, "%.0f %s", v, units[i]);
  else
    snprintf (buf, len, "%.1f %s", v, units[i]);
  return buf;
}

uint64_t
now_mono_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

uint64_t
now_wall_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_REALTIME, &ts);
  return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
cleanup_free (void *ptr)
{
  free (*(void **) ptr);
}

#if defined(__SANITIZE_ADDRESS__)
#define HEAP_IS_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HEAP_IS_SANITIZER 1
#endif
#endif

void
heap_trim (void)
{
#ifndef HEAP_IS_SANITIZER
  malloc_trim (0);
#endif
}
