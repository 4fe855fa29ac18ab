/* SPDX-License-Identifier: MIT
 *
 * writes.c - the write side of an export: its own store connection, the
 * image's lease and its hooks, and the gate every write and flush passes.
 *
 * DESIGN: a writable export opens the store anew (store_open, not a
 * clone), so that a host that takes the lease over and fences us fences
 * this image's connection only.  The lease is opened with the export but
 * taken by the first write (lease_write_begin waits until we hold it,
 * asking the holder elsewhere to hand it over); QEMU's migration
 * destination opens the disk long before it may write.  Until the lease
 * is ours the image's in-memory object map is not trusted (another host
 * may be writing): the map is reread when we acquire the lease and
 * distrusted again when we let it go (the flush hook runs just before
 * the release).  A lost lease (expired, fenced, taken) kills the export:
 * its writes and flushes fail with EIO from then on, and the next client
 * that names the image gets a fresh export on a fresh connection.
 * A lease left by an earlier run of this daemon (same host id, same
 * address, a store client that is none of this process's exports) is
 * fenced and taken back at open: a restart costs no lease duration.
 * This process's own exports are never fenced (exports.c makes a
 * reconnecting client wait for the previous export's close).  Snapshot requests from any host reach the holder as the
 * lease's command hook, served by snapshot.c's snap_server; snap_lock
 * keeps the server from going away under a command.
 *
 * Invariants: a write counted by lease_write_begin is ended exactly once
 * (nbd_srv_write_end) after it completed, successfully or not; FLUSH
 * never takes the lease (a destination QEMU that never took over still
 * flushes, and that must succeed).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/log.h"
#include "internal.h"
#include "metrics.h"

/* ---- Lease hooks ------------------------------------------------------ */

static int
on_acquired (void *arg, uint64_t epoch)
{
  struct nbd_srv_export *e = arg;
  int r;

  /* Rereads the object map and the snapshot context: another host may
   * have written, or taken snapshots, while we did not hold it. */
  r = image_set_trusted (e->img, 1);
  if (r < 0)
    {
      log_error ("export %s: cannot reload the image after acquiring its "
                 "lease: %s", e->name, vbk_error ());
      return r;
    }
  atomic_store (&e->trusted, true);
  atomic_store (&e->ever_held, true);
  log_info ("export %s: lease acquired, epoch %" PRIu64, e->name, epoch);
  nbd_srv_metrics_lease_acquired (__atomic_load_n (&e->em, __ATOMIC_ACQUIRE),
                                  epoch);
  return 0;
}

static int
on_flush (void *arg)
{
  struct nbd_srv_export *e = arg;
  int r;

  /* No write is in flight and none starts before the release: after it
   * another host writes, so our map goes stale from here. */
  atomic_store (&e->trusted, false);
  if (image_save_parts (e->img) < 0)    /* the next diff counts whole objects */
    log_debug ("export %s: saving changed parts: %s", e->name, vbk_error ());
  r = image_flush (e->img);
  image_set_trusted (e->img, 0);
  nbd_srv_metrics_lease_released (__atomic_load_n (&e->em,
                                                   __ATOMIC_ACQUIRE));
  return r;
}

static void
on_lost (void *arg, int err)
{
  struct nbd_srv_export *e = arg;

  atomic_store (&e->dead, true);
  atomic_store (&e->trusted, false);
  nbd_srv_metrics_lease_lost (__atomic_load_n (&e->em, __ATOMIC_ACQUIRE));
  image_set_trusted (e->img, 0);
  log_error ("export %s: lease lost (%s): its writes fail from now on; new "
             "connections get a fresh export", e->name, strerror (-err));
}

static size_t
on_command (void *arg, const char *payload, size_t len, char *reply,
            size_t reply_max)
{
  struct nbd_srv_export *e = arg;
  size_t n;

  pthread_mutex_lock (&e->snap_lock);
  if (e->snaps)
    {
      struct nbd_srv_export_metrics *em;
      unsigned long long id, pause_us;

      n = snap_server_command (e->snaps, payload, len, reply, reply_max);
      /* How long writes were held (snapshot.c's replies): "ok ID US"
       * for one snapshot; freeze ... thaw for a group. */
      em = __atomic_load_n (&e->em, __ATOMIC_ACQUIRE);
      if (em && n < reply_max)
        {
          reply[n] = 0;
          if (len > 12 && !memcmp (payload, "snap-create ", 12)
              && sscanf (reply, "ok %llu %llu", &id, &pause_us) == 2)
            nbd_srv_metrics_snapshot_pause (em, pause_us);
          else if (!strcmp (reply, "frozen"))
            e->frozen_ns = nbd_srv_metrics_now_ns ();
          else if (!strcmp (reply, "thawed") && e->frozen_ns)
            {
              nbd_srv_metrics_snapshot_pause (
                em, (nbd_srv_metrics_now_ns () - e->frozen_ns) / 1000);
              e->frozen_ns = 0;
            }
        }
    }
  else
    n = snprintf (reply, reply_max, "error: export %s is closing",
                  e->name);
  pthread_mutex_unlock (&e->snap_lock);
  return n < reply_max ? n : reply_max;
}

static const struct lease_hooks hooks = {
  .acquired = on_acquired,
  .flush = on_flush,
  .lost = on_lost,
  .command = on_command,
};

/* ---- Open and close --------------------------------------------------- */

/* A lease held under our host id and our address belongs to an earlier
 * run of this daemon that died (two live daemons cannot listen on one
 * address): fence it and take the lease back now rather than wait for
 * it to run out, so that a restart under running VMs (QEMU's
 * reconnect-delay) costs no lease duration. */
static void
reclaim (struct nbd_srv_export *e, const char *hdr,
         const struct nbd_srv_lease_cfg *lc)
{
  struct lease_status st;
  int r;

  if (lease_status_get (e->store, hdr, &st) < 0 || !st.held
      || strcmp (st.host, lc->host_id) != 0 || strcmp (st.addr, lc->addr) != 0
      || strcmp (st.client, store_client_id (e->store)) == 0)
    {
      vbk_clear_error ();
      return;
    }
  /* Not an earlier run: one of this process's own exports (one whose
   * lease was lost and that still has users).  Never fence ourselves;
   * the lease goes through the usual hand-off or runs out. */
  if (lc->own_client && lc->own_client (lc->own_arg, st.client))
    {
      log_info ("export %s: the lease is held by another export of this "
                "daemon (%s): not fencing it", e->name, st.client);
      return;
    }
  log_warn ("export %s: the lease is held by an earlier run of this daemon "
            "(%s, host %s, address %s): fencing it and taking it back",
            e->name, st.client, st.host, st.addr);
  /* Not lease_break: that also clears a two-writer conflict, which is
   * the operator's to clear. */
  r = store_fence (e->store, st.client, 0);
  if (r == 0)
    r = store_lock_break (e->store, hdr, LEASE_LOCK_NAME, st.client,
                          st.cookie);
  if (r < 0 && r != -ENOENT)
    log_warn ("export %s: %s", e->name, vbk_error ());
  vbk_clear_error ();
}

int
nbd_srv_export_open_rw (struct nbd_srv_export *e,
                        const struct nbd_srv_lease_cfg *lc)
{
  struct lease_opts opts = {
    .host_id = lc->host_id,
    .addr = lc->addr,
    .duration_ms = lc->duration_ms,
    .exclusive = lc->exclusive,
  };
  struct image_info info;
  char hdr[STORE_NAME_MAX + 1];
  int r;

  r = store_open (lc->store_uri, &e->store);
  if (r < 0)
    return r;
  e->client_id = strdup (store_client_id (e->store));
  if (!e->client_id)
    {
      r = vbk_errno (-ENOMEM, "blockd: export %s", e->name);
      goto fail;
    }
  r = image_open (e->store, e->image, 0, &e->img);
  if (r < 0)
    goto fail;
  /* Until we hold the lease another host may be writing. */
  r = image_set_trusted (e->img, 0);
  if (r < 0)
    goto fail;
  atomic_store (&e->trusted, false);
  image_get_info (e->img, &info);
  image_header_oid (info.id, hdr, sizeof hdr);
  reclaim (e, hdr, lc);
  r = lease_open (e->store, hdr, &opts, &hooks, e, &e->lease);
  if (r < 0)
    goto fail;
  pthread_mutex_lock (&e->snap_lock);
  e->snaps = snap_server_new (e->img, e->lease);
  pthread_mutex_unlock (&e->snap_lock);
  if (e->snaps == NULL)
    {
      r = vbk_errno (-ENOMEM, "blockd: export %s: snapshot server", e->name);
      goto fail;
    }
  return 0;

 fail:
  nbd_srv_export_close_rw (e);
  return r;
}

void
nbd_srv_export_close_rw (struct nbd_srv_export *e)
{
  struct snap_server *s;

  /* The snapshot server first (it thaws a freeze through the lease),
   * then the lease, which waits for nothing (no request is in flight),
   * flushes and releases. */
  pthread_mutex_lock (&e->snap_lock);
  s = e->snaps;
  e->snaps = NULL;
  pthread_mutex_unlock (&e->snap_lock);
  snap_server_free (s);
  if (e->lease)
    {
      bool held = lease_state (e->lease) == LEASE_HELD;
      lease_close (e->lease);
      e->lease = NULL;
      if (held)
        log_info ("export %s: lease released", e->name);
    }
  image_close (e->img);
  e->img = NULL;
  store_close (e->store);
  e->store = NULL;
}

/* ---- The gate --------------------------------------------------------- */

int
nbd_srv_write_begin (struct nbd_srv_export *e)
{
  int r;

  if (!e->lease)
    return 0;
  if (atomic_load (&e->dead))
    return vbk_errno (-EIO, "export %s: the lease was lost: writes refused "
                      "(reconnect for a fresh export)", e->name);
  r = lease_write_begin (e->lease);
  if (r < 0)
    return r;
  return 1;
}

void
nbd_srv_write_end (struct nbd_srv_export *e)
{
  lease_write_end (e->lease);
}

int
nbd_srv_export_flush (struct nbd_srv_export *e)
{
  if (e->backup)
    return 0;                   /* immutable */
  if (!e->lease)
    return image_flush (e->img);
  if (!atomic_load (&e->ever_held))
    return 0;
  if (atomic_load (&e->dead))
    return vbk_errno (-EIO, "export %s: the lease was lost: writes since "
                      "the last flush may not have reached the store",
                      e->name);
  return image_flush (e->img);
}
