/* SPDX-License-Identifier: MIT
 *
 * util.h - small helpers shared by every layer.
 */
#ifndef VBK_UTIL_H
#define VBK_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Parses a size: a decimal number with an optional suffix K, M, G, T, P
 * (powers of 1024; "KiB", "MB" style suffixes are accepted the same) or
 * B for bytes.  Returns 0, or -EINVAL (malformed) / -ERANGE (too big)
 * with a message. */
int parse_size (const char *s, uint64_t *out);

/* Formats BYTES as "4 MiB", "10 GiB", "1.5 GiB", "512 B" into BUF. */
const char *format_size (uint64_t bytes, char *buf, size_t len);

/* Monotonic and wall clock in ms / ns. */
uint64_t now_mono_ns (void);
uint64_t now_wall_ms (void);

static inline int
is_power_of_2 (uint64_t v)
{
  return v && !(v & (v - 1));
}

#define CLEANUP_FREE __attribute__ ((cleanup (cleanup_free)))
void cleanup_free (void *ptr);

/* Gives free heap memory back to the system (malloc_trim).  Does
 * nothing in a sanitizer build: there the sanitizer owns the heap, and
 * glibc's malloc_trim, first called from a thread other than main,
 * would set up glibc's never-used arena on that thread and trip glibc's
 * arena accounting when threads exit. */
void heap_trim (void);

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

#endif /* VBK_UTIL_H */
