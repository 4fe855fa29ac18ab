/* SPDX-License-Identifier: MIT
 *
 * syncshim.h - in-process controls of the fdatasync/fsync interposer
 * (syncshim.c), for test programs linked with it.
 */
#ifndef VBK_SYNCSHIM_H
#define VBK_SYNCSHIM_H

/* Syncs of files whose path contains MATCH ("*" = every file, "" or NULL
 * = none; "/obj$": paths that end in "/obj") wait DELAY_MS and then fail with ERR (a positive errno) or, with
 * ERR 0, sync. */
void syncshim_set (const char *match, unsigned delay_ms, int err);

/* While CLOSED, affected syncs wait (before failing or syncing). */
void syncshim_gate (int closed);

/* Affected syncs started, and finished, so far. */
unsigned long syncshim_started (void);
unsigned long syncshim_done (void);

#endif
