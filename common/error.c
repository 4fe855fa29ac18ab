/* SPDX-License-Identifier: MIT
 *
 * error.c - per-thread last error message (see error.h).
 */
#include <stdio.h>
#include <string.h>

#include "error.h"

static __thread char last_error[1024];
/* > 0 while cleanup runs that must not replace the message. */
static __thread unsigned keep_depth;

void
vbk_set_error (const char *fmt, ...)
{
  va_list ap;

  if (keep_depth > 0)
    return;
  va_start (ap, fmt);
  vsnprintf (last_error, sizeof last_error, fmt, ap);
  va_end (ap);
}

int
vbk_errno (int err, const char *fmt, ...)
{
  va_list ap;
  size_t n;

  if (keep_depth > 0)
    return err;
  va_start (ap, fmt);
  vsnprintf (last_error, sizeof last_error, fmt, ap);
  va_end (ap);
  n = strlen (last_error);
  snprintf (last_error + n, sizeof last_error - n, ": %s",
            strerror (err < 0 ? -err : err));
  return err;
}

const char *
vbk_error (void)
{
  return last_error;
}

void
vbk_clear_error (void)
{
  if (keep_depth == 0)
    last_error[0] = '\0';
}

int
vbk_error_prepend (int err, const char *fmt, ...)
{
  char prefix[sizeof last_error];
  char old[sizeof last_error];
  va_list ap;

  if (keep_depth > 0)
    return err;
  va_start (ap, fmt);
  vsnprintf (prefix, sizeof prefix, fmt, ap);
  va_end (ap);
  memcpy (old, last_error, sizeof old);
  snprintf (last_error, sizeof last_error, "%s%s", prefix, old);
  return err;
}

void
vbk_error_keep (void)
{
  keep_depth++;
}

void
vbk_error_unkeep (void)
{
  if (keep_depth > 0)
    keep_depth--;
}

void
vbk_error_unkeep_cleanup (int *unused)
{
  (void) unused;
  vbk_error_unkeep ();
}
