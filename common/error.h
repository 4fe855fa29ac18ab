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

/* Adds context in front of this thread's message, as QEMU's
 * error_prepend does on the way up:
 *   return vbk_error_prepend (r, "backup %s: ", id);
 * turns "store: read: vbk_chunk.ab12: Input/output error" into
 * "backup 7: store: read: ...".  Returns ERR. */
int vbk_error_prepend (int err, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

/* Cleanup that must not wipe the first error.  Between vbk_error_keep()
 * and vbk_error_unkeep(), calls that set or clear this thread's message
 * leave it as it is (they still return their codes), so
 *   r = step (...);           (fails: message set)
 *   vbk_error_keep ();
 *   undo_step (...);          (its own errors do not replace the first)
 *   vbk_error_unkeep ();
 *   return r;
 * reports the first failure.  Pairs nest. */
void vbk_error_keep (void);
void vbk_error_unkeep (void);

/* The same for one scope: "VBK_KEEP_ERROR_FOR_SCOPE;" keeps the message
 * until the enclosing block ends. */
void vbk_error_unkeep_cleanup (int *unused);
#define VBK_KEEP_ERROR_FOR_SCOPE                                         \
  __attribute__ ((cleanup (vbk_error_unkeep_cleanup), unused)) int       \
  vbk_keep_error_ = (vbk_error_keep (), 0)

#endif /* VBK_ERROR_H */
