/* SPDX-License-Identifier: MIT
 *
 * error.c - per-thread last error message (see error.h).
 */
#include <stdio.h>
#include <string.h>

#include "error.h"

static __thread char last_error[1024];

void
vbk_set_error (const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (last_error, sizeof last_error, fmt, ap);
  va_end (ap);
}

int
vbk_errno (int err, const char *fmt, ...)
{
  va_list ap;
  size_t n;

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
  last_error[0] = '\0';
}
