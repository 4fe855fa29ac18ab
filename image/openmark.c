/* SPDX-License-Identifier: MIT
 * format: docs/FORMAT.md
 *
 * openmark.c - the open marker of an image whose change log and object
 * map are written without a sync, and the recovery after an unclean
 * shutdown of the machine.
 *
 * DESIGN
 * - On a store whose writes are durable only at the next flush (local:,
 *   or fault: around it; image->lazy), the first write to an
 *   object appends its change-log record and sets its map bytes with
 *   plain writes, completed (the syscalls returned) before the object's
 *   data write starts, and leaves them to the next FLUSH, which syncs
 *   them with the data (store_flush covers every write of the store).
 *   A process that dies (kill -9) leaves the page cache intact and the
 *   kernel writes it back in its own time: nothing under-reports.  A
 *   machine that dies (kernel crash, power loss) may keep a data write
 *   and lose its log record or map byte.  On RADOS a completed write is
 *   durable, so none of this applies there (no marker).
 * - So, as VMware's changed-block tracking does after a host crash,
 *   every writable open of such an image records itself in the omap of
 *   vbk_open.ID: key PID.START.N (process id, its start time in clock
 *   ticks since boot, a counter), value the kernel's boot id
 *   (/proc/sys/kernel/random/boot_id; VBK_TEST_BOOT_ID overrides it, for
 *   tests that play a power loss).  The omap set is durable at once
 *   (one sync per open).  A clean close removes its key after its flush
 *   succeeded; after a failed flush it rewrites the value to
 *   "sync-failed", which matches no boot.
 * - An open that finds a key whose value is not this boot's id knows the
 *   image was open for writing when the machine went down (or its last
 *   flush failed).  Before it loads the map it (a) rebuilds the object
 *   map and its summary levels from the data objects that exist (a stat
 *   of each; an object in the map but missing reads as zeros, one present
 *   but not in the map becomes allocated) and (b) appends CHANGES_RESET
 *   to the live change log, synchronously: every diff that spans the live
 *   interval reports every object and says the tracking was reset
 *   (image_diff_flags), so a backup reads the whole image.  Only then are
 *   those keys removed: a crash during the recovery repeats it.  Keys
 *   of this boot whose process is gone (a killed process) are removed
 *   too, with nothing to rebuild: the page cache outlived it.
 * - The intervals that ended before the crash are safe: a snapshot
 *   flushes before it is recorded (image_snap_create_id), so its log
 *   copy and the map it saw are durable.
 */
#include <signal.h>
#include <stdio.h>
#include <sys/types.h>
#include <unistd.h>

#include "common/log.h"
#include "internal.h"

#define SYNC_FAILED "sync-failed"
#define VAL_MAX 64

void
image_open_oid (const char *id, char *buf, size_t len)
{
  snprintf (buf, len, "vbk_open.%s", id);
}

/* The local backend, or a fault: wrapper around it (whose client id is
 * the inner store's: "local.HOST.PID.START.N", docs/FORMAT.md). */
bool
image_store_lazy (struct store *st)
{
  const char *b = store_backend (st);

  return strcmp (b, "local") == 0
    || (strcmp (b, "fault") == 0
        && strncmp (store_client_id (st), "local.", 6) == 0);
}

/* This boot's id, or VBK_TEST_BOOT_ID. */
static void
boot_id (char *buf, size_t len)
{
  const char *env = getenv ("VBK_TEST_BOOT_ID");
  FILE *f;

  if (env && *env) {
    snprintf (buf, len, "%s", env);
    return;
  }
  snprintf (buf, len, "unknown");
  f = fopen ("/proc/sys/kernel/random/boot_id", "re");
  if (f) {
    char id[VAL_MAX];
    if (fscanf (f, "%63s", id) == 1)
      snprintf (buf, len, "%s", id);
    fclose (f);
  }
}

/* Start time of process PID (clock ticks since boot), 0 if none. */
static unsigned long long
proc_start (long pid)
{
  char path[64], line[1024], *p;
  unsigned long long start = 0;
  FILE *f;
  int field;

  snprintf (path, sizeof path, "/proc/%ld/stat", pid);
  f = fopen (path, "re");
  if (f == NULL)
    return 0;
  if (fgets (line, sizeof line, f) && (p = strrchr (line, ')')) != NULL) {
    /* Fields after the command: 3 (state) ... 22 (starttime). */
    for (field = 2; p && field < 22; field++)
      p = strchr (p + 1, ' ');
    if (p)
      start = strtoull (p + 1, NULL, 10);
  }
  fclose (f);
  return start;
}

struct mark {
  char key[STORE_NAME_MAX + 1];
  char val[VAL_MAX];
};

struct marks {
  struct mark *v;
  size_t n, cap;
};

static int
collect (void *arg, const char *key, const void *val, size_t len)
{
  struct marks *ms = arg;
  struct mark *m;

  if (ms->n == ms->cap) {
    size_t cap = ms->cap ? 2 * ms->cap : 16;
    void *nv = realloc (ms->v, cap * sizeof *ms->v);
    if (nv == NULL)
      return -ENOMEM;
    ms->v = nv;
    ms->cap = cap;
  }
  m = &ms->v[ms->n++];
  snprintf (m->key, sizeof m->key, "%s", key);
  len = MIN (len, sizeof m->val - 1);
  memcpy (m->val, val, len);
  m->val[len] = '\0';
  return 0;
}

/* Whether the process that wrote key KEY still runs. */
static bool
key_alive (const char *key)
{
  unsigned long long start;
  long pid;

  if (sscanf (key, "%ld.%llu.", &pid, &start) != 2 || pid <= 0)
    return false;
  return proc_start (pid) == start;
}

/* (a) Rewrites the stored map from the data objects that exist. */
static int
rebuild_map (struct image *img, uint64_t *count)
{
  uint64_t n = image_objects_for (img->info.size, img->info.object_size);
  uint64_t i, size;
  uint8_t *map = calloc (n ? n : 1, 1);
  char oid[96];
  int r = 0;

  if (map == NULL)
    return -ENOMEM;
  *count = 0;
  for (i = 0; i < n; i++) {
    image_data_oid (img->info.id, i, oid, sizeof oid);
    r = store_stat (img->st, oid, STORE_SNAP_HEAD, &size);
    if (r == -ENOENT) {
      r = 0;
      continue;
    }
    if (r < 0)
      break;
    map[i] = IMAGE_OBJ_CLEAN;
    ++*count;
  }
  /* The summary first: it covers the new map before the map is. */
  if (r == 0)
    r = image_map_sum_write_all (img->st, img->map_oid, map, n);
  if (r == 0)
    r = store_write_full (img->st, img->map_oid, map, n, STORE_WRITE_SYNC);
  free (map);
  if (r < 0)
    vbk_error_prepend (r, "image '%s': rebuilding the object map: ",
                       img->info.name);
  return r;
}

/* (b) Appends CHANGES_FROM | 0 and CHANGES_RESET to the live log. */
static int
reset_log (struct image *img)
{
  struct changes log = { NULL, 0, 0 };
  uint64_t *buf;
  size_t i;
  int r;

  r = image_changes_read (img->st, img->log_oid, STORE_SNAP_HEAD, &log);
  /* A detail record cut short by the crash: the reset must not become
   * its parts word. */
  for (i = 0; r == 0 && i < log.n; i++)
    if (!(log.v[i] & CHANGES_FROM) && (log.v[i] & CHANGES_DETAIL)) {
      if (i + 1 == log.n)
        log.n--;
      i++;
    }
  if (r == 0 && (r = image_changes_push (&log, CHANGES_FROM)) == 0)
    r = image_changes_push (&log, CHANGES_RESET);
  if (r == 0) {
    buf = malloc (log.n * sizeof *buf);
    if (buf == NULL)
      r = -ENOMEM;
    else {
      for (i = 0; i < log.n; i++)
        buf[i] = htole64 (log.v[i]);
      r = store_write_full (img->st, img->log_oid, buf, log.n * sizeof *buf,
                            STORE_WRITE_SYNC);
      free (buf);
    }
  }
  image_changes_free (&log);
  if (r < 0)
    vbk_error_prepend (r, "image '%s': resetting the change log: ",
                       img->info.name);
  return r;
}

int
image_open_mark (struct image *img)
{
  static unsigned long seq;
  struct marks ms = { NULL, 0, 0 };
  char oid[64], boot[VAL_MAX], after[STORE_NAME_MAX + 1] = "";
  bool foreign = false;
  uint64_t count = 0;
  size_t i, before;
  int r;

  image_open_oid (img->info.id, oid, sizeof oid);
  boot_id (boot, sizeof boot);
  do {
    before = ms.n;
    r = store_omap_list (img->st, oid, after, 256, collect, &ms);
    if (ms.n > before)
      snprintf (after, sizeof after, "%s", ms.v[ms.n - 1].key);
  } while (r == 0 && ms.n - before == 256);
  if (r == -ENOENT)
    r = 0;
  if (r < 0)
    goto out;
  for (i = 0; i < ms.n; i++)
    foreign |= strcmp (ms.v[i].val, boot) != 0;

  /* Ours first: a crash during the recovery leaves the others, so the
   * next open repeats it. */
  snprintf (img->open_key, sizeof img->open_key, "%ld.%llu.%lu",
            (long) getpid (), proc_start (getpid ()),
            __atomic_add_fetch (&seq, 1, __ATOMIC_RELAXED));
  r = store_omap_set (img->st, oid, img->open_key, boot, strlen (boot));
  if (r < 0) {
    img->open_key[0] = '\0';
    goto out;
  }
  if (foreign) {
    if ((r = rebuild_map (img, &count)) < 0 || (r = reset_log (img)) < 0)
      goto out;
    log_warn ("image '%s': was open for writing when the machine went down "
              "(or its last flush failed): object map rebuilt from the "
              "%" PRIu64 " data objects found; changed-block tracking of the "
              "live interval reset (diffs across it report every object)",
              img->info.name, count);
  }
  for (i = 0; i < ms.n; i++)
    if (strcmp (ms.v[i].val, boot) != 0 || !key_alive (ms.v[i].key))
      store_omap_rm (img->st, oid, ms.v[i].key);
out:
  free (ms.v);
  return r;
}

void
image_open_unmark (struct image *img, int flush_err)
{
  char oid[64];

  if (img->open_key[0] == '\0')
    return;
  image_open_oid (img->info.id, oid, sizeof oid);
  if (flush_err == 0)
    store_omap_rm (img->st, oid, img->open_key);
  else
    store_omap_set (img->st, oid, img->open_key, SYNC_FAILED,
                    strlen (SYNC_FAILED));
  img->open_key[0] = '\0';
}
