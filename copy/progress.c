/* SPDX-License-Identifier: MIT
 *
 * progress.c - progress of a long copy: a bar with rate and ETA on a
 * terminal, or JSON lines ({"progress": LABEL, "done": B, "total": B,
 * "rate": B/s, "eta_s": S}) for scripts.
 *
 * DESIGN: the caller owns the numbers (bytes covered so far) and calls
 * copy_progress_update as often as it likes; printing is rate-limited
 * here by the monotonic clock.  The rate is the average since the start:
 * copies here are long and steady, and an average does not jump.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "copy.h"

enum copy_progress_mode
copy_progress_default (int json, int tty)
{
  if (json)
    return COPY_PROGRESS_JSON;
  return tty ? COPY_PROGRESS_BAR : COPY_PROGRESS_NONE;
}

void
copy_progress_start (struct copy_progress *p, enum copy_progress_mode mode,
                     const char *label, uint64_t total)
{
  memset (p, 0, sizeof *p);
  p->mode = mode;
  p->label = label ? label : "copy";
  p->total = total;
  p->start_ns = p->last_ns = now_mono_ns ();
}

void
copy_progress_update (struct copy_progress *p, uint64_t done, int last)
{
  FILE *f = p->out ? p->out : stderr;
  uint64_t now = now_mono_ns (), el = now - p->start_ns;
  uint64_t rate, eta;
  char d[32], t[32], r[32], bar[31];
  unsigned pct, i, fill;

  if (p->mode == COPY_PROGRESS_NONE)
    return;
  if (!last && now - p->last_ns < (p->mode == COPY_PROGRESS_BAR
                                   ? 200000000ull : 1000000000ull))
    return;
  p->last_ns = now;
  if (done > p->total)
    done = p->total;
  rate = el ? (uint64_t) (done * 1e9 / el) : 0;
  eta = rate && p->total > done ? (p->total - done) / rate : 0;
  pct = p->total ? (unsigned) (done * 100 / p->total) : 100;
  if (p->mode == COPY_PROGRESS_JSON) {
    fprintf (f, "{\"progress\": \"%s\", \"done\": %" PRIu64 ", \"total\": %"
             PRIu64 ", \"percent\": %u, \"rate\": %" PRIu64 ", \"eta_s\": %"
             PRIu64 "%s}\n", p->label, done, p->total, pct, rate, eta,
             last ? ", \"finished\": true" : "");
    fflush (f);
    return;
  }
  fill = pct * 30 / 100;
  for (i = 0; i < 30; i++)
    bar[i] = i < fill ? '#' : '.';
  bar[30] = '\0';
  fprintf (f, "\r%s [%s] %3u%% %s of %s, %s/s, ETA %" PRIu64 ":%02" PRIu64
           "\033[K%s", p->label, bar, pct, format_size (done, d, sizeof d),
           format_size (p->total, t, sizeof t),
           format_size (rate, r, sizeof r), eta / 60, eta % 60,
           last ? "\n" : "");
  fflush (f);
}
