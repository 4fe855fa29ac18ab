/* SPDX-License-Identifier: MIT
 *
 * test-lease-sm.c - the lease state machine with an injected clock:
 * renew, expiry counted from the renewal's send, one timed-out renewal
 * with the defaults, the write-stop margin, hand-off, takeover, fencing
 * outcomes, bounce limit, a lapse (the lock ran out on the store while
 * it could not be renewed) taken back or lost, release requests for
 * another epoch ignored.
 */
/* VBK_TEST_LINKS: vbklocks */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/timeouts.h"
#include "locks/lease.h"

#define T0 1000000u

static void
test_renew_schedule (void **state)
{
  struct lease_sm sm;

  lease_sm_init (&sm, 12000, false, 0, 0);
  assert_int_equal (sm.state, LEASE_NONE);
  assert_int_equal (lease_sm_tick (&sm, T0), LEASE_ACT_NONE);
  lease_sm_acquired (&sm, T0, 7);
  assert_int_equal (sm.state, LEASE_HELD);
  assert_int_equal (sm.epoch, 7);
  assert_int_equal (sm.expires_ms, T0 + 12000);
  /* Nothing until a quarter of the duration, then renew. */
  assert_int_equal (lease_sm_tick (&sm, T0 + 2999), LEASE_ACT_NONE);
  assert_int_equal (lease_sm_tick (&sm, T0 + 3000), LEASE_ACT_RENEW);
  lease_sm_renewed (&sm, T0 + 3001, T0 + 3001);
  assert_int_equal (sm.expires_ms, T0 + 3001 + 12000);
  assert_int_equal (lease_sm_tick (&sm, T0 + 6000), LEASE_ACT_NONE);
  assert_int_equal (lease_sm_tick (&sm, T0 + 6001), LEASE_ACT_RENEW);
  /* The defaults. */
  lease_sm_init (&sm, 0, false, 0, 0);
  assert_int_equal (sm.duration_ms, VBK_LEASE_DURATION_MS);
  assert_int_equal (LEASE_DURATION_DEFAULT_MS, VBK_LEASE_DURATION_MS);
}

/* The lease runs from the renewal's send: a renewal sent at t and
 * answered at t + 9 s leaves the expiry at t + duration. */
static void
test_expiry_counts_from_send (void **state)
{
  struct lease_sm sm;
  uint64_t sent;

  lease_sm_init (&sm, 0, false, 0, 0);
  lease_sm_acquired (&sm, T0, 1);
  sent = T0 + sm.renew_ms;
  assert_int_equal (lease_sm_tick (&sm, sent), LEASE_ACT_RENEW);
  /* The answer arrives 9 s later. */
  assert_int_equal (lease_sm_tick (&sm, sent + 9000), LEASE_ACT_RENEW);
  lease_sm_renewed (&sm, sent, sent + 9000);
  assert_int_equal (sm.expires_ms, sent + VBK_LEASE_DURATION_MS);
  assert_true (sm.expires_ms < sent + 9000 + VBK_LEASE_DURATION_MS);
  assert_int_equal (sm.renew_at_ms, sent + sm.renew_ms);
  /* So the next renewal is due at once. */
  assert_int_equal (lease_sm_tick (&sm, sent + 9000), LEASE_ACT_RENEW);
  /* An older renewal's answer arriving after a newer one's does not
   * pull the end back. */
  lease_sm_renewed (&sm, sent + 9000, sent + 9000);
  lease_sm_renewed (&sm, sent + 100, sent + 9000);
  assert_int_equal (sm.expires_ms, sent + 9000 + VBK_LEASE_DURATION_MS);
  /* The acquisition itself counts from its lock request's send. */
  lease_sm_init (&sm, 0, false, 0, 0);
  lease_sm_acquired (&sm, T0, 2);
  assert_int_equal (sm.expires_ms, T0 + VBK_LEASE_DURATION_MS);
}

/* With the defaults, a renewal that hangs for the store's whole op
 * timeout and is sent again costs neither the lease nor a write. */
static void
test_one_timed_out_renewal (void **state)
{
  struct lease_sm sm;
  uint64_t t, sent, failed, answered;

  lease_sm_init (&sm, 0, false, 0, 0);
  lease_sm_acquired (&sm, T0, 1);
  sent = T0 + sm.renew_ms;
  assert_int_equal (lease_sm_tick (&sm, sent), LEASE_ACT_RENEW);
  failed = sent + VBK_STORE_OP_TIMEOUT_MS;
  assert_int_equal (lease_sm_tick (&sm, failed), LEASE_ACT_RENEW);
  lease_sm_renew_failed (&sm, failed, -ETIMEDOUT);
  assert_int_equal (sm.state, LEASE_HELD);
  /* The retry goes out shortly and takes a (slow) second to answer. */
  for (t = failed; lease_sm_tick (&sm, t) != LEASE_ACT_RENEW; t += 10)
    assert_true (t < failed + 1000);
  answered = t + 1000;
  assert_true (answered < lease_sm_write_stop (&sm));
  /* Writes were admitted all along. */
  for (uint64_t u = T0; u <= answered; u += 50)
    assert_true (lease_sm_may_write (&sm, u));
  lease_sm_renewed (&sm, t, answered);
  assert_int_equal (sm.state, LEASE_HELD);
  assert_int_equal (sm.expires_ms, t + VBK_LEASE_DURATION_MS);
  assert_true (lease_sm_may_write (&sm, answered));
}

/* Writes stop at expiry - margin, before the holder's own end; the lease
 * itself is given up at the end. */
static void
test_write_stop_margin (void **state)
{
  struct lease_sm sm;
  uint64_t stop;

  lease_sm_init (&sm, 0, false, 0, 0);
  assert_false (lease_sm_may_write (&sm, T0));
  lease_sm_acquired (&sm, T0, 1);
  stop = lease_sm_write_stop (&sm);
  assert_int_equal (stop, T0 + VBK_LEASE_DURATION_MS
                    - VBK_LEASE_DURATION_MS / VBK_LEASE_WRITE_STOP_DIVISOR);
  assert_true (stop > T0 + sm.renew_ms);
  assert_true (lease_sm_may_write (&sm, T0));
  assert_true (lease_sm_may_write (&sm, stop - 1));
  assert_false (lease_sm_may_write (&sm, stop));
  assert_false (lease_sm_may_write (&sm, sm.expires_ms - 1));
  /* Between the write-stop and the end the lease is still ours: a
   * renewal that lands then lets writes go on. */
  lease_sm_renew_failed (&sm, stop, -ETIMEDOUT);
  assert_int_equal (sm.state, LEASE_HELD);
  lease_sm_renewed (&sm, stop, stop);
  assert_true (lease_sm_may_write (&sm, stop + 1));
  /* Unrenewed to the end: lost, and no write is admitted again. */
  stop = lease_sm_write_stop (&sm);
  assert_false (lease_sm_may_write (&sm, stop));
  assert_int_equal (lease_sm_tick (&sm, sm.expires_ms), LEASE_ACT_EXPIRED);
  assert_int_equal (sm.state, LEASE_LOST);
  assert_false (lease_sm_may_write (&sm, stop - 1));
  /* A releasing holder admits no new write either. */
  lease_sm_init (&sm, 0, false, 0, 0);
  lease_sm_acquired (&sm, T0, 1);
  lease_sm_release_request (&sm, false, false, 0);
  assert_false (lease_sm_may_write (&sm, T0));
}

static void
test_expiry_when_renewals_fail (void **state)
{
  struct lease_sm sm;

  lease_sm_init (&sm, 3000, false, 0, 0);
  lease_sm_acquired (&sm, T0, 1);
  assert_int_equal (lease_sm_tick (&sm, T0 + 1000), LEASE_ACT_RENEW);
  /* A passing error (say -ETIMEDOUT): retry soon, still held. */
  lease_sm_renew_failed (&sm, T0 + 1000, -ETIMEDOUT);
  assert_int_equal (sm.state, LEASE_HELD);
  assert_int_equal (lease_sm_tick (&sm, T0 + 1100), LEASE_ACT_NONE);
  assert_int_equal (lease_sm_tick (&sm, T0 + 1200), LEASE_ACT_RENEW);
  lease_sm_renew_failed (&sm, T0 + 1200, -ETIMEDOUT);
  /* Past our own expiry we stop writing, fenced or not. */
  assert_int_equal (lease_sm_tick (&sm, T0 + 3000), LEASE_ACT_EXPIRED);
  assert_int_equal (sm.state, LEASE_LOST);
  assert_int_equal (lease_sm_tick (&sm, T0 + 9000), LEASE_ACT_NONE);
}

static void
test_lost_to_fence_or_taker (void **state)
{
  struct lease_sm sm;

  lease_sm_init (&sm, 3000, false, 0, 0);
  lease_sm_acquired (&sm, T0, 1);
  lease_sm_renew_failed (&sm, T0 + 1000, -ESHUTDOWN);
  assert_int_equal (sm.state, LEASE_LOST);

  lease_sm_init (&sm, 3000, false, 0, 0);
  lease_sm_acquired (&sm, T0, 1);
  lease_sm_renew_failed (&sm, T0 + 1000, -ENOENT);
  assert_int_equal (sm.state, LEASE_LOST);
  /* A lost lease answers no release request as holder. */
  assert_int_equal (lease_sm_release_request (&sm, false, false, 0),
                    LEASE_ANS_NOT_HOLDER);
}

/* The lock ran out on the store during an outage longer than the lease:
 * the renewal sent before the outage answers -ENOENT once the store is
 * back, past our own expiry. */
static uint64_t
lapse (struct lease_sm *sm)
{
  uint64_t now;

  lease_sm_init (sm, 4000, false, 0, 0);
  lease_sm_acquired (sm, T0, 7);
  assert_int_equal (lease_sm_tick (sm, T0 + 4000 / VBK_LEASE_RENEW_DIVISOR),
                    LEASE_ACT_RENEW);
  /* The renewal hangs; writes stop at the write-stop, before expiry. */
  assert_true (lease_sm_may_write (sm, T0 + 3500));
  assert_false (lease_sm_may_write (sm, T0 + 3600));
  now = T0 + 12000;
  lease_sm_renew_failed (sm, now, -ENOENT);
  assert_int_equal (sm->state, LEASE_LAPSED);
  assert_false (lease_sm_may_write (sm, now));
  /* Not a holder for hand-offs while lapsed; the tick does not expire
   * it but asks to take the lock again. */
  assert_int_equal (lease_sm_release_request (sm, false, false, 0),
                    LEASE_ANS_NOT_HOLDER);
  assert_int_equal (lease_sm_tick (sm, now), LEASE_ACT_RETAKE);
  assert_int_equal (sm->state, LEASE_LAPSED);
  return now;
}

static void
test_lapse_retaken (void **state)
{
  struct lease_sm sm;
  uint64_t now = lapse (&sm);

  /* A passing error while taking it again: retry soon, still lapsed. */
  lease_sm_retake_failed (&sm, now, -ETIMEDOUT);
  assert_int_equal (sm.state, LEASE_LAPSED);
  assert_int_equal (lease_sm_tick (&sm, now + 1), LEASE_ACT_NONE);
  assert_int_equal (lease_sm_tick (&sm, now + VBK_LEASE_RENEW_RETRY_MS),
                    LEASE_ACT_RETAKE);
  now += VBK_LEASE_RENEW_RETRY_MS;
  /* Taken, the header's epoch still ours: held again, with the grown
   * epoch, the lease counted from this send, writes admitted. */
  assert_true (lease_sm_retaken (&sm, now, now, 7, 8));
  assert_int_equal (sm.state, LEASE_HELD);
  assert_int_equal (sm.epoch, 8);
  assert_int_equal (sm.expires_ms, now + 4000);
  assert_true (lease_sm_may_write (&sm, now + 1));
  assert_int_equal (lease_sm_tick (&sm, now + 1), LEASE_ACT_NONE);
  assert_int_equal (lease_sm_tick (&sm, now + 4000 / VBK_LEASE_RENEW_DIVISOR),
                    LEASE_ACT_RENEW);
  /* Retaken only from a lapse. */
  assert_false (lease_sm_retaken (&sm, now, now, 8, 9));
  assert_int_equal (sm.state, LEASE_HELD);
}

static void
test_lapse_epoch_moved (void **state)
{
  struct lease_sm sm;
  uint64_t now = lapse (&sm);

  /* Someone else took the lease in between (and let it go): lost. */
  assert_false (lease_sm_retaken (&sm, now, now, 8, 8));
  assert_int_equal (sm.state, LEASE_LOST);
  assert_false (lease_sm_may_write (&sm, now));
  assert_int_equal (lease_sm_tick (&sm, now + 1000), LEASE_ACT_NONE);

  /* Someone else holds it now, or fenced us: lost. */
  now = lapse (&sm);
  lease_sm_retake_failed (&sm, now, -EBUSY);
  assert_int_equal (sm.state, LEASE_LOST);
  now = lapse (&sm);
  lease_sm_retake_failed (&sm, now, -ESHUTDOWN);
  assert_int_equal (sm.state, LEASE_LOST);

  /* The lock gone before our own expiry: someone broke it, no lapse. */
  lease_sm_init (&sm, 4000, false, 0, 0);
  lease_sm_acquired (&sm, T0, 7);
  lease_sm_renew_failed (&sm, T0 + 3999, -ENOENT);
  assert_int_equal (sm.state, LEASE_LOST);
}

/* A renewal held by the store through an outage longer than the lease
 * and then answered with success (its answer was lost and the request
 * resent, so the store replays the first result): the lease it gives
 * ended before the answer, so the lock may have run out meanwhile.  A
 * lapse, not a loss, and never held with an end in the past. */
static void
test_late_renewal_lapses (void **state)
{
  struct lease_sm sm;
  uint64_t sent = T0 + 1000, now = T0 + 12000;

  lease_sm_init (&sm, 4000, false, 0, 0);
  lease_sm_acquired (&sm, T0, 7);
  assert_int_equal (lease_sm_tick (&sm, sent), LEASE_ACT_RENEW);
  lease_sm_renewed (&sm, sent, now);
  assert_int_equal (sm.state, LEASE_LAPSED);
  assert_false (lease_sm_may_write (&sm, now));
  assert_int_equal (lease_sm_tick (&sm, now), LEASE_ACT_RETAKE);
  assert_true (lease_sm_retaken (&sm, now, now + 5, 7, 8));
  assert_int_equal (sm.state, LEASE_HELD);
  assert_int_equal (sm.expires_ms, now + 4000);
  assert_true (lease_sm_may_write (&sm, now + 5));
  /* Answered just before its end: still held, writes wait for the next
   * renewal (past the write-stop), which is due at once. */
  lease_sm_init (&sm, 4000, false, 0, 0);
  lease_sm_acquired (&sm, T0, 7);
  lease_sm_renewed (&sm, sent, sent + 3999);
  assert_int_equal (sm.state, LEASE_HELD);
  assert_false (lease_sm_may_write (&sm, sent + 3999));
  assert_int_equal (lease_sm_tick (&sm, sent + 3999), LEASE_ACT_RENEW);
  /* A releasing holder is not retaken: it gives the lease up anyway. */
  lease_sm_init (&sm, 4000, false, 0, 0);
  lease_sm_acquired (&sm, T0, 7);
  lease_sm_release_request (&sm, true, false, 0);
  lease_sm_renewed (&sm, sent, now);
  assert_int_equal (sm.state, LEASE_RELEASING);
}

/* The retake itself answered only after the lease it gives ended: stay
 * lapsed, with the epoch written under the lock as ours, and take the
 * lock once more; the header then shows that epoch. */
static void
test_late_retake (void **state)
{
  struct lease_sm sm;
  uint64_t now = lapse (&sm);

  assert_false (lease_sm_retaken (&sm, now, now + 4000, 7, 8));
  assert_int_equal (sm.state, LEASE_LAPSED);
  assert_int_equal (sm.epoch, 8);
  assert_false (lease_sm_may_write (&sm, now + 4000));
  assert_int_equal (lease_sm_tick (&sm, now + 4000), LEASE_ACT_RETAKE);
  now += 4000;
  assert_true (lease_sm_retaken (&sm, now, now + 10, 8, 9));
  assert_int_equal (sm.state, LEASE_HELD);
  assert_int_equal (sm.epoch, 9);
  /* Had anyone else held it in between, the epoch would have moved. */
  now = lapse (&sm);
  assert_false (lease_sm_retaken (&sm, now, now + 4000, 7, 8));
  assert_false (lease_sm_retaken (&sm, now + 4000, now + 4001, 9, 10));
  assert_int_equal (sm.state, LEASE_LOST);
}

static void
test_handoff (void **state)
{
  struct lease_sm sm;

  lease_sm_init (&sm, 15000, false, 0, 0);
  assert_int_equal (lease_sm_release_request (&sm, false, false, 0),
                    LEASE_ANS_NOT_HOLDER);
  lease_sm_acquired (&sm, T0, 3);
  assert_int_equal (lease_sm_release_request (&sm, false, false, 0),
                    LEASE_ANS_RELEASING);
  assert_int_equal (sm.state, LEASE_RELEASING);
  /* A second request while releasing gets the same answer. */
  assert_int_equal (lease_sm_release_request (&sm, false, false, 0),
                    LEASE_ANS_RELEASING);
  /* Renewals go on while draining. */
  assert_int_equal (lease_sm_tick (&sm, T0 + 5000), LEASE_ACT_RENEW);
  lease_sm_released (&sm);
  assert_int_equal (sm.state, LEASE_NONE);
  assert_int_equal (lease_sm_tick (&sm, T0 + 50000), LEASE_ACT_NONE);
}

static void
test_exclusive (void **state)
{
  struct lease_sm sm;

  lease_sm_init (&sm, 15000, true, 0, 0);
  lease_sm_acquired (&sm, T0, 1);
  assert_int_equal (lease_sm_release_request (&sm, false, false, 0),
                    LEASE_ANS_EXCLUSIVE);
  assert_int_equal (sm.state, LEASE_HELD);
  /* Only an operator's explicit release lets it go. */
  assert_int_equal (lease_sm_release_request (&sm, true, false, 0),
                    LEASE_ANS_RELEASING);
}

static void
test_takeover_decisions (void **state)
{
  struct lease_sm sm;
  uint64_t expires = T0 + 15000;

  lease_sm_init (&sm, 15000, false, 0, 0);
  /* A new holder: ask it. */
  assert_int_equal (lease_sm_busy (&sm, T0, expires, false, true),
                    LEASE_BUSY_ASK);
  /* It agreed: poll for the lock. */
  assert_int_equal (lease_sm_busy (&sm, T0, expires, true, true),
                    LEASE_BUSY_POLL);
  /* It is silent: wait, never take over before its expiry + margin. */
  assert_int_equal (lease_sm_busy (&sm, T0 + 100, expires, false, false),
                    LEASE_BUSY_WAIT);
  assert_int_equal (lease_sm_busy (&sm, expires, expires, false, false),
                    LEASE_BUSY_WAIT);
  assert_int_equal (lease_sm_busy (&sm, expires
                                   + VBK_LEASE_TAKEOVER_MARGIN_MS - 1,
                                   expires, false, false), LEASE_BUSY_WAIT);
  assert_int_equal (lease_sm_busy (&sm, expires
                                   + VBK_LEASE_TAKEOVER_MARGIN_MS,
                                   expires, false, false),
                    LEASE_BUSY_TAKEOVER);
  /* Even a holder that agreed is taken over once its lease ran out. */
  assert_int_equal (lease_sm_busy (&sm, expires
                                   + VBK_LEASE_TAKEOVER_MARGIN_MS + 100,
                                   expires, true, true),
                    LEASE_BUSY_TAKEOVER);
}

static void
test_bounce_limit (void **state)
{
  struct lease_sm sm;
  uint64_t log[8];
  size_t n = 0;
  int i;

  lease_sm_init (&sm, 15000, false, 3, 10000);
  /* Spread-out hand-offs (a VM migrating now and then) never trip it. */
  for (i = 0; i < 20; i++)
    assert_false (lease_sm_note_handoff (&sm, T0 + i * 6000, log, 8, &n));
  /* Four within the window do. */
  n = 0;
  assert_false (lease_sm_note_handoff (&sm, T0, log, 8, &n));
  assert_false (lease_sm_note_handoff (&sm, T0 + 100, log, 8, &n));
  assert_false (lease_sm_note_handoff (&sm, T0 + 200, log, 8, &n));
  assert_true (lease_sm_note_handoff (&sm, T0 + 300, log, 8, &n));
  /* The log stays bounded. */
  for (i = 0; i < 100; i++)
    lease_sm_note_handoff (&sm, T0 + 400 + i, log, 8, &n);
  assert_true (n <= 8);

  /* A holder in conflict refuses hand-offs; an operator clears it. */
  lease_sm_acquired (&sm, T0, 9);
  sm.conflict = true;
  assert_int_equal (lease_sm_release_request (&sm, false, false, 0),
                    LEASE_ANS_CONFLICT);
  assert_int_equal (lease_sm_release_request (&sm, true, false, 0),
                    LEASE_ANS_RELEASING);
  assert_false (sm.conflict);
}

/* A release request names the epoch its sender saw.  One delivered late
 * or twice, after the holder released and took the lease again, names an
 * older epoch and must leave the newer lease alone (and its conflict
 * flag: an operator's stale request clears nothing). */
static void
test_release_names_epoch (void **state)
{
  struct lease_sm sm;

  lease_sm_init (&sm, 15000, false, 0, 0);
  lease_sm_acquired (&sm, T0, 1);
  assert_int_equal (lease_sm_release_request (&sm, true, true, 1),
                    LEASE_ANS_RELEASING);
  /* The same request again while draining: still ours, same answer. */
  assert_int_equal (lease_sm_release_request (&sm, true, true, 1),
                    LEASE_ANS_RELEASING);
  lease_sm_released (&sm);
  assert_int_equal (lease_sm_release_request (&sm, true, true, 1),
                    LEASE_ANS_NOT_HOLDER);

  /* Taken again: the old request, delivered once more, is stale. */
  lease_sm_acquired (&sm, T0 + 2000, 2);
  assert_int_equal (lease_sm_release_request (&sm, true, true, 1),
                    LEASE_ANS_STALE);
  assert_int_equal (sm.state, LEASE_HELD);
  assert_true (lease_sm_may_write (&sm, T0 + 2001));
  assert_int_equal (lease_sm_release_request (&sm, false, true, 1),
                    LEASE_ANS_STALE);
  /* So is one naming a later epoch than ours, or epoch 0 (a requester
   * that read the header before any acquisition wrote it). */
  assert_int_equal (lease_sm_release_request (&sm, true, true, 3),
                    LEASE_ANS_STALE);
  assert_int_equal (lease_sm_release_request (&sm, true, true, 0),
                    LEASE_ANS_STALE);
  assert_int_equal (sm.state, LEASE_HELD);

  /* A stale operator request neither releases nor clears a conflict,
   * and is not refused for it either: it is simply not about us. */
  sm.conflict = true;
  assert_int_equal (lease_sm_release_request (&sm, true, true, 1),
                    LEASE_ANS_STALE);
  assert_true (sm.conflict);
  /* One for our epoch is honoured (and clears it). */
  assert_int_equal (lease_sm_release_request (&sm, true, true, 2),
                    LEASE_ANS_RELEASING);
  assert_false (sm.conflict);
  assert_int_equal (lease_sm_release_request (&sm, true, true, 1),
                    LEASE_ANS_STALE);
  lease_sm_released (&sm);

  /* A request that names no epoch (an older requester) is taken for
   * whatever lease is held, as before. */
  lease_sm_acquired (&sm, T0 + 4000, 3);
  assert_int_equal (lease_sm_release_request (&sm, false, false, 0),
                    LEASE_ANS_RELEASING);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_renew_schedule),
    cmocka_unit_test (test_expiry_counts_from_send),
    cmocka_unit_test (test_one_timed_out_renewal),
    cmocka_unit_test (test_write_stop_margin),
    cmocka_unit_test (test_expiry_when_renewals_fail),
    cmocka_unit_test (test_lost_to_fence_or_taker),
    cmocka_unit_test (test_lapse_retaken),
    cmocka_unit_test (test_lapse_epoch_moved),
    cmocka_unit_test (test_late_renewal_lapses),
    cmocka_unit_test (test_late_retake),
    cmocka_unit_test (test_handoff),
    cmocka_unit_test (test_exclusive),
    cmocka_unit_test (test_takeover_decisions),
    cmocka_unit_test (test_bounce_limit),
    cmocka_unit_test (test_release_names_epoch),
  };

  return cmocka_run_group_tests_name ("lease-sm", tests, NULL, NULL);
}
