/* SPDX-License-Identifier: MIT
 *
 * log.h - one line per event on stderr, level tested before formatting.
 */
#ifndef VBK_LOG_H
#define VBK_LOG_H

enum log_level { LOG_LVL_ERROR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

extern int log_level;    /* messages above this level are dropped */

void log_msg (enum log_level lvl, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

#define log_at(lvl, ...) \
  do { if ((lvl) <= log_level) log_msg ((lvl), __VA_ARGS__); } while (0)
#define log_error(...) log_at (LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_at (LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_at (LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_at (LOG_LVL_DEBUG, __VA_ARGS__)

#endif /* VBK_LOG_H */
