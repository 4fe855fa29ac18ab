/* SPDX-License-Identifier: MIT
 *
 * lease-sm.c - the lease's decisions, without I/O or clocks of its own,
 * so that every transition can be tested with an injected clock
 * (tests/unit/test-lease-sm.c).  lease.c does the I/O and asks here.
 *
 * Timing (the whole timeline is drawn in common/timeouts.h): the holder
 * counts its lease from the moment it sent the request that took or
 * renewed the lock (monotonic ms, given by the caller), never from the
 * answer, so its idea of the end is never later than the store's.  It
 * renews every quarter of the duration, so a renewal that times out once
 * (the store's op timeout) and is sent again still lands in time.  It
 * admits writes only until a margin before its own end (M), and gives
 * the lease up at its end even if nobody fenced it.  A requester takes
 * over only when the holder's recorded expiry (wall clock, from the
 * store) has passed by a margin that covers clock skew between hosts.
 */
#include <errno.h>
#include <string.h>

#include "common/timeouts.h"
#include "lease.h"

void
lease_sm_init (struct lease_sm *sm, uint32_t duration_ms, bool exclusive,
               unsigned bounce_limit, uint32_t bounce_window_ms)
{
  memset (sm, 0, sizeof *sm);
  sm->state = LEASE_NONE;
  sm->duration_ms = duration_ms ? duration_ms : LEASE_DURATION_DEFAULT_MS;
  sm->renew_ms = sm->duration_ms / VBK_LEASE_RENEW_DIVISOR;
  sm->margin_ms = sm->duration_ms / VBK_LEASE_WRITE_STOP_DIVISOR;
  sm->exclusive = exclusive;
  sm->bounce_limit = bounce_limit ? bounce_limit : LEASE_BOUNCE_LIMIT_DEFAULT;
  sm->bounce_window_ms = bounce_window_ms ? bounce_window_ms
    : LEASE_BOUNCE_WINDOW_DEFAULT_MS;
}

void
lease_sm_acquired (struct lease_sm *sm, uint64_t sent, uint64_t epoch)
{
  sm->state = LEASE_HELD;
  sm->epoch = epoch;
  sm->expires_ms = sent + sm->duration_ms;
  sm->renew_at_ms = sent + sm->renew_ms;
}

void
lease_sm_renewed (struct lease_sm *sm, uint64_t sent, uint64_t now)
{
  if (sm->state != LEASE_HELD && sm->state != LEASE_RELEASING)
    return;
  /* An answer that overtook a later one must not shorten the lease. */
  if (sent + sm->duration_ms > sm->expires_ms) {
    sm->expires_ms = sent + sm->duration_ms;
    sm->renew_at_ms = sent + sm->renew_ms;
  }
  /* The answer came only after the end of the lease it gives: the store
   * held the request through an outage (or its answer was lost and the
   * request resent), so the lock may have run out there meanwhile and
   * someone else may have held it.  That is a lapse, not a loss: take
   * the lock again and look (lease_sm_retaken), as after a renewal that
   * found it gone.  Taking it as held would only let the next tick
   * expire it. */
  if (sm->state == LEASE_HELD && now >= sm->expires_ms) {
    sm->state = LEASE_LAPSED;
    sm->renew_at_ms = now;
  }
}

void
lease_sm_renew_failed (struct lease_sm *sm, uint64_t now, int err)
{
  if (sm->state != LEASE_HELD && sm->state != LEASE_RELEASING)
    return;
  /* Our lock is gone, but only after our own end: it ran out on the
   * store, which counts from later than we do.  We admit no write past
   * our write-stop, so nothing of ours starts now; take it again and
   * see whether anyone else held it meanwhile (lease_sm_retaken). */
  if (err == -ENOENT && sm->state == LEASE_HELD && now >= sm->expires_ms) {
    sm->state = LEASE_LAPSED;
    sm->renew_at_ms = now;
    return;
  }
  if (err == -ENOENT || err == -ESHUTDOWN || err == -EBUSY
      || now >= sm->expires_ms) {
    sm->state = LEASE_LOST;
    return;
  }
  /* A passing error: try again soon, well before the end. */
  sm->renew_at_ms = now + VBK_LEASE_RENEW_RETRY_MS;
}

bool
lease_sm_may_write (const struct lease_sm *sm, uint64_t now)
{
  return sm->state == LEASE_HELD && now + sm->margin_ms < sm->expires_ms;
}

uint64_t
lease_sm_write_stop (const struct lease_sm *sm)
{
  return sm->expires_ms > sm->margin_ms ? sm->expires_ms - sm->margin_ms : 0;
}

bool
lease_sm_retaken (struct lease_sm *sm, uint64_t sent, uint64_t now,
                  uint64_t header_epoch, uint64_t new_epoch)
{
  if (sm->state != LEASE_LAPSED)
    return false;
  if (header_epoch != sm->epoch || new_epoch <= header_epoch) {
    sm->state = LEASE_LOST;
    return false;
  }
  /* Taken, but the lease that gives ended before we were done (the
   * store stalled again): the epoch we wrote under the lock is ours,
   * so stay lapsed with it and take the lock once more. */
  if (now >= sent + sm->duration_ms) {
    sm->epoch = new_epoch;
    sm->renew_at_ms = now;
    return false;
  }
  lease_sm_acquired (sm, sent, new_epoch);
  return true;
}

void
lease_sm_retake_failed (struct lease_sm *sm, uint64_t now, int err)
{
  if (sm->state != LEASE_LAPSED)
    return;
  if (err == -EBUSY || err == -ESHUTDOWN) {
    sm->state = LEASE_LOST;
    return;
  }
  sm->renew_at_ms = now + VBK_LEASE_RENEW_RETRY_MS;
}

enum lease_action
lease_sm_tick (struct lease_sm *sm, uint64_t now)
{
  if (sm->state == LEASE_LAPSED)
    return now >= sm->renew_at_ms ? LEASE_ACT_RETAKE : LEASE_ACT_NONE;
  if (sm->state != LEASE_HELD && sm->state != LEASE_RELEASING)
    return LEASE_ACT_NONE;
  if (now >= sm->expires_ms) {
    sm->state = LEASE_LOST;
    return LEASE_ACT_EXPIRED;
  }
  if (now >= sm->renew_at_ms)
    return LEASE_ACT_RENEW;
  return LEASE_ACT_NONE;
}

enum lease_answer
lease_sm_release_request (struct lease_sm *sm, bool explicit, bool named,
                          uint64_t epoch)
{
  if (sm->state != LEASE_HELD && sm->state != LEASE_RELEASING)
    return LEASE_ANS_NOT_HOLDER;
  /* The requester saw another lease than ours: an older one (the
   * request was delivered late or twice, and we took the lease again
   * since) or a newer one (someone acquired after us: we are about to
   * find out that we lost it).  Either way it is not about this lease;
   * least of all may it clear a conflict. */
  if (named && epoch != sm->epoch)
    return LEASE_ANS_STALE;
  if (sm->state == LEASE_RELEASING)
    return LEASE_ANS_RELEASING;
  if (!explicit && sm->conflict)
    return LEASE_ANS_CONFLICT;
  if (!explicit && sm->exclusive)
    return LEASE_ANS_EXCLUSIVE;
  if (explicit)
    sm->conflict = false;
  sm->state = LEASE_RELEASING;
  return LEASE_ANS_RELEASING;
}

void
lease_sm_released (struct lease_sm *sm)
{
  if (sm->state == LEASE_RELEASING || sm->state == LEASE_HELD)
    sm->state = LEASE_NONE;
}

enum lease_busy
lease_sm_busy (const struct lease_sm *sm, uint64_t now,
               uint64_t holder_expires, bool asked, bool answered)
{
  if (holder_expires && now >= holder_expires + VBK_LEASE_TAKEOVER_MARGIN_MS)
    return LEASE_BUSY_TAKEOVER;
  if (asked)
    return LEASE_BUSY_POLL;
  if (!answered)
    return LEASE_BUSY_WAIT;
  return LEASE_BUSY_ASK;
}

bool
lease_sm_note_handoff (const struct lease_sm *sm, uint64_t now,
                       uint64_t *log, size_t cap, size_t *n)
{
  size_t i, j;

  for (i = j = 0; i < *n; i++)
    if (log[i] + sm->bounce_window_ms > now)
      log[j++] = log[i];
  *n = j;
  if (*n == cap) {
    memmove (log, log + 1, (cap - 1) * sizeof *log);
    (*n)--;
  }
  log[(*n)++] = now;
  return *n > sm->bounce_limit;
}

const char *
lease_state_name (enum lease_state s)
{
  switch (s) {
  case LEASE_NONE: return "none";
  case LEASE_ACQUIRING: return "acquiring";
  case LEASE_HELD: return "held";
  case LEASE_RELEASING: return "releasing";
  case LEASE_LOST: return "lost";
  case LEASE_LAPSED: return "lapsed";
  }
  return "?";
}
