/* SPDX-License-Identifier: MIT
 *
 * error.h - the last error message of this thread, as libnbd keeps it.
 *
 * The function that detects an error records one line with context
 * ("store: write: vbk_data.1f.0000000000000003: No space left on device")
 * and returns -errno; callers pass the code up and the top (vbk, blockd)
 * prints or logs vbk_error().
 */
#ifndef VBK_ERROR_H
#define VBK_ERROR_H

#include <stdarg.h>

/* Records a message for this thread, replacing the previous one. */
void vbk_set_error (const char *fmt, ...)
  __attribute__ ((format (printf, 1, 2)));

/* Like vbk_set_error, appending ": strerror(-ERR)".  Returns ERR, so
 * that "return vbk_errno (r, "...", ...);" reads naturally. */
int vbk_errno (int err, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

/* This thread's last message, or "" if none.  Valid until the next
 * vbk_set_error on this thread. */
const char *vbk_error (void);

/* Forgets this thread's message. */
void vbk_clear_error (void);

#endif /* VBK_ERROR_H */
