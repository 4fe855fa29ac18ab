/* SPDX-License-Identifier: MIT
 *
 * log.c - stderr logger: "vbk-blockd[pid]: LEVEL: message".
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "log.h"

int log_level = LOG_LVL_INFO;

static const char *const level_names[] = { "error", "warning", "info",
                                           "debug" };

void
log_msg (enum log_level lvl, const char *fmt, ...)
{
  char line[2048];
  va_list ap;
  int n;

  n = snprintf (line, sizeof line, "%s[%d]: %s: ",
                program_invocation_short_name, (int) getpid (),
                level_names[lvl]);
  va_start (ap, fmt);
  vsnprintf (line + n, sizeof line - n, fmt, ap);
  va_end (ap);
  /* One write per line, so lines of several threads never interleave. */
  fprintf (stderr, "%s\n", line);
}
