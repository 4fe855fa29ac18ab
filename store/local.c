/* SPDX-License-Identifier: MIT
 * format: docs/FORMAT.md
 *
 * local.c - the local: backend, a store in one directory that several
 * processes on one host may use at once.
 *
 * DESIGN
 * Layout under the root (object names and keys are %-escaped into file
 * names, see esc()):
 *   obj/OID            the object's data (the object exists iff this does)
 *   meta/OID/x.NAME    xattr values;  meta/OID/o.KEY  omap values;
 *   meta/OID/.lock     flock()ed by compare-and-set
 *   snapset/OID        copy-on-write state: "seq H" and "clone C F" lines
 *   clone/OID.C        data of clone C: the object for snapshots in (F, C]
 *   snaps/next, snaps/live/ID     snapshot id allocator and live snapshots
 *   lock/OID.NAME      lock record (holder, cookie, desc, expiry), flock()ed;
 *                      present only while held (or left by a dead holder)
 *   watch/OID/ADDR     registrations of watchers: ADDR is the name of an
 *                      abstract unix datagram socket the watcher reads
 *   fenced/CLIENT      a fenced client and its expiry
 *   tmp/               scratch for atomic replacement (write + rename)
 * Metadata changes are atomic (write to tmp/, fsync, rename) and durable
 * at once.  Data writes go through the page cache and are made durable by
 * flush (fdatasync of every file this process dirtied, then the obj/
 * directory), or at once with STORE_WRITE_SYNC (fdatasync of the file,
 * and of obj/ only while the file's name may not be durable: a file this
 * process created, or may have, since obj/ was last synced; see
 * sync_name).  Whole objects are written to tmp/ and renamed into place
 * (readers see the old object or the new one), durably at once, except
 * for a deferred create (STORE_WRITE_DEFER): that one is renamed in
 * without a sync on the caller's path, synced by the syncer in the
 * background, and covered by the next flush like any unsynced write
 * (see create_deferred).
 *
 * Copy-on-write follows RADOS self-managed snapshots: a write under a
 * snapshot context whose seq is newer than the object's snapset seq first
 * copies the object to a clone named after the newest snapshot, which
 * then serves reads at every snapshot in (old seq, clone id].  Removing a
 * snapshot trims clones that no live snapshot needs any more.
 *
 * Fencing: a fenced client finds its name in fenced/ (with an expiry in
 * this boot's CLOCK_BOOTTIME, never the wall clock) and fails every call
 * with -ESHUTDOWN.  Changes are airtight: each one runs under a shared
 * flock() of its client's change lock, fenced/CLIENT.lock (one open file
 * per thread, as flock belongs to the open file), and compares the shared
 * fence generation (fenced/.gen, mmap()ed) with the one it last checked;
 * store_fence() records the fence, bumps the generation and then takes
 * that client's lock exclusively, so it waits for the client's changes in
 * flight, but only for a bounded time: a client stopped inside a change
 * is killed (see local_fence for the argument).  A change that starts
 * after store_fence() returned cannot land, even from a process that was
 * stopped in the middle of a call.  Reads check a cached state (10 ms).
 *
 * Open files are cached (fd cache, LRU, sized from RLIMIT_NOFILE) so a
 * 4 KiB write costs one pwrite.  Replacing or removing an object file
 * bumps a counter in the shared, mmap()ed file obj-gen; every client
 * drops its cached files when it sees the counter move, so nobody reads a
 * file that was replaced.  Asynchronous calls run on a pool of threads,
 * except small writes and small reads of cached data (RWF_NOWAIT), which
 * complete on the caller's thread (see local_aio_read).  Durability: see
 * local_flush (write generations, one sync pass at a time, sticky sync
 * errors) and the fd cache (dirty files leaving the cache are synced by
 * a background syncer, never under fd_lock and never on the I/O path).
 *
 * Security model: a store belongs to one user.  Everything under the root
 * is private to its owner: directories are created 0700 and files 0600
 * (the umask can only make them stricter), and opening a store whose root
 * or top-level directories are open to group or others makes them 0700
 * (with a warning; one we do not own only gets the warning).  So another
 * local user can neither read a guest's data nor open, and so flock(),
 * fenced/.gen or any lock file to stall writers.  Watch/notify datagrams
 * travel over abstract unix sockets, which have no file permissions: the
 * receiving sockets set SO_PASSCRED and drop every datagram whose sender
 * is not our effective uid or root.  Every client of a store (vbk-blockd,
 * the vbk tool) must therefore run as the store's owner (or root); root
 * is trusted, as it can read the files anyway.
 */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "common/workq.h"
#include "internal.h"

#define ESC_MAX (3 * STORE_NAME_MAX + 1)
#define FD_CACHE_MIN 16              /* smallest fd cache */
#define FD_CACHE_CAP 262144          /* largest fd cache */
#define FENCE_CHECK_NS (10 * 1000000ull)
#define MAX_CLONES 256
#define SYNCERS 8                    /* syncer threads */
#define SYNC_BATCH 32                /* files a syncer takes at a time */

/* ---- Shared state of one store_open() and its clones ------------------ */

struct fd_entry {
  struct fd_entry *hnext;           /* hash chain (cached entries only) */
  struct fd_entry *prev, *next;     /* LRU, most recent first; or the
                                       aside list */
  char oid[STORE_NAME_MAX + 1];
  int fd;
  int refs;                         /* users right now (flush pins too) */
  bool aside;                       /* dropped from the cache: in use, or
                                       dirty and waiting for a sync */
  uint64_t dirty_gen;               /* write_gen of the newest write */
  uint64_t clean_gen;               /* dirty_gen when last synced; the
                                       file is dirty iff dirty_gen >
                                       clean_gen */
  uint64_t cow_seq;                 /* snapset seq known to be >= this */
  uint64_t dir_gen;                 /* the file's name in obj/ is durable
                                       once root.dir_synced >= this (0:
                                       known durable) */
};

struct job;
struct root;

/* One syncer thread; BUSY is the id of the batch it syncs (0: none). */
struct syncer {
  struct root *r;
  pthread_t thread;
  uint64_t busy;                    /* under fd_lock */
};

struct root {
  char *path;
  int dirfd;                        /* the root directory */
  int objfd;                        /* obj/ */
  char client[STORE_CLIENT_MAX];
  int refs;                         /* handles (open + clones) */

  pthread_mutex_t fd_lock;
  struct fd_entry **hash;
  size_t nhash;                     /* a power of two */
  struct fd_entry *lru_head, *lru_tail;
  size_t nfds;                      /* cached entries */
  size_t fd_max;                    /* cache budget (from RLIMIT_NOFILE) */
  struct fd_entry *aside;           /* entries dropped from the cache but
                                       still open (see the fd cache) */
  size_t naside, aside_max;
  bool dir_dirty;                   /* obj/ gained entries since flush */
  uint64_t dir_gen;                 /* files this process created in obj/
                                       (counted before each create) */
  uint64_t dir_synced;              /* creates up to this are durable */
  bool create_first;                /* fd_get: try the create first */
  bool nowait_off;                  /* RWF_NOWAIT refused: reads never
                                       inline (see read_cached) */

  /* Durability (see local_flush).  Under fd_lock unless noted. */
  uint64_t write_gen;               /* completed dirtying writes */
  uint64_t synced_gen;              /* every write <= this is durable */
  int sync_err;                     /* sticky: the first failed sync */
  char sync_msg[512];               /* its message */
  pthread_mutex_t flush_lock;       /* one sync pass at a time (not
                                       under fd_lock) */
  pthread_cond_t sync_cond;         /* the syncer's wake-ups and batch
                                       completions */
  uint64_t sync_taken;              /* syncer batches started */
  uint64_t sync_done;               /* every batch up to this finished */
  struct syncer syncers[SYNCERS];
  unsigned nsyncers;                /* started */
  bool syncer_running, syncer_stop;

  struct workq *aio;                /* runs the asynchronous calls */

  uint64_t fence_checked_ns;        /* under fd_lock */
  bool fenced;
  uint64_t fence_gen;               /* generation last checked */
  uint64_t *fencegen;               /* fenced/.gen, mmap()ed (shared,
                                       bumped atomically by fencers) */
  char lockpath[PATH_MAX];          /* fenced/CLIENT.lock: flock()ed
                                       shared by each change of ours */
  uint64_t serial;                  /* unique per root in this process */
  uint64_t *objgen;                 /* shared (mmap): bumped whenever an
                                       object file is replaced or removed */
  uint64_t cache_gen;               /* objgen the fd cache is valid for */
  unsigned watch_seq;
};

struct local {
  struct root *r;
  pthread_rwlock_t snapc_lock;
  uint64_t seq;
  uint64_t *snaps;
  size_t nsnaps;
  pthread_mutex_t io_lock;          /* inflight aio of this handle */
  pthread_cond_t io_cond;
  unsigned inflight;
};

/* ---- Names ------------------------------------------------------------ */

/* Escapes NAME into a file name: [A-Za-z0-9_.-] stay, except a leading
 * '.', everything else becomes %XX. */
static void
esc (const char *name, char *out)
{
  static const char hex[] = "0123456789ABCDEF";
  const unsigned char *p;
  char *o = out;

  for (p = (const unsigned char *) name; *p; p++) {
    if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
        || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'
        || (*p == '.' && p != (const unsigned char *) name)) {
      *o++ = *p;
    }
    else {
      *o++ = '%';
      *o++ = hex[*p >> 4];
      *o++ = hex[*p & 15];
    }
  }
  *o = '\0';
}

static void
unesc (const char *in, char *out)
{
  unsigned v;

  while (*in) {
    if (in[0] == '%' && in[1] && in[2] && sscanf (in + 1, "%2x", &v) == 1) {
      *out++ = (char) v;
      in += 3;
    }
    else
      *out++ = *in++;
  }
  *out = '\0';
}

/* Builds "DIR/ESC(NAME)SUFFIX" relative to the root. */
static void
relpath (char *buf, size_t len, const char *dir, const char *name,
         const char *suffix)
{
  char e[ESC_MAX];

  esc (name, e);
  snprintf (buf, len, "%s/%s%s", dir, e, suffix ? suffix : "");
}

/* ---- Small file helpers ----------------------------------------------- */

static int
fsync_dir (struct root *r, const char *dir)
{
  int fd = openat (r->dirfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int rc = 0;

  if (fd < 0)
    return -errno;
  if (fsync (fd) < 0)
    rc = -errno;
  close (fd);
  return rc;
}

/* Creates a new temporary file in tmp/ holding BUF, not synced; its name
 * (relative to the root) goes to TMP.  Returns its descriptor (read and
 * write), or -errno with nothing left behind. */
static int
tmp_create (struct root *r, const void *buf, size_t len, char *tmp,
            size_t tmplen)
{
  static unsigned counter;
  unsigned n = __atomic_fetch_add (&counter, 1, __ATOMIC_RELAXED);
  const char *p = buf;
  int fd, rc = 0;
  ssize_t w;

  snprintf (tmp, tmplen, "tmp/%d.%u.%lx", (int) getpid (), n,
            (unsigned long) now_mono_ns ());
  fd = openat (r->dirfd, tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    return -errno;
  while (len > 0) {
    w = write (fd, p, len);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      rc = -errno;
      break;
    }
    p += w;
    len -= w;
  }
  if (rc < 0) {
    close (fd);
    unlinkat (r->dirfd, tmp, 0);
    return rc;
  }
  return fd;
}

/* Writes a new temporary file in tmp/ with BUF, fdatasync'ed; its name
 * (relative to the root) goes to TMP. */
static int
write_tmp (struct root *r, const void *buf, size_t len, char *tmp,
           size_t tmplen)
{
  int fd = tmp_create (r, buf, len, tmp, tmplen), rc = 0;

  if (fd < 0)
    return fd;
  if (fdatasync (fd) < 0)
    rc = -errno;
  close (fd);
  if (rc < 0)
    unlinkat (r->dirfd, tmp, 0);
  return rc;
}

/* Atomically replaces PATH (relative to the root) with BUF, durably. */
static int
replace_file (struct root *r, const char *path, const void *buf, size_t len)
{
  char tmp[256], dir[PATH_MAX], *slash;
  int rc;

  rc = write_tmp (r, buf, len, tmp, sizeof tmp);
  if (rc < 0)
    return rc;
  if (renameat (r->dirfd, tmp, r->dirfd, path) < 0) {
    rc = -errno;
    unlinkat (r->dirfd, tmp, 0);
    return rc;
  }
  snprintf (dir, sizeof dir, "%s", path);
  slash = strrchr (dir, '/');
  if (slash)
    *slash = '\0';
  return fsync_dir (r, dir);
}

/* Reads up to LEN bytes of PATH into BUF; returns the file's size or
 * -errno. */
static ssize_t
read_file (struct root *r, const char *path, void *buf, size_t len)
{
  struct stat sb;
  ssize_t n = 0, got;
  int fd;

  fd = openat (r->dirfd, path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  if (fstat (fd, &sb) < 0) {
    n = -errno;
    goto out;
  }
  while ((size_t) n < len) {
    got = pread (fd, (char *) buf + n, len - n, n);
    if (got < 0) {
      if (errno == EINTR)
        continue;
      n = -errno;
      goto out;
    }
    if (got == 0)
      break;
    n += got;
  }
  n = sb.st_size;
out:
  close (fd);
  return n;
}

static int
full_pread (int fd, void *buf, size_t len, uint64_t off)
{
  char *p = buf;
  ssize_t n;

  while (len > 0) {
    n = pread (fd, p, len, off);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    if (n == 0) {
      memset (p, 0, len);       /* past the end: zeros */
      break;
    }
    p += n;
    off += n;
    len -= n;
  }
  return 0;
}

static int
full_pwrite (int fd, const void *buf, size_t len, uint64_t off)
{
  const char *p = buf;
  ssize_t n;

  while (len > 0) {
    n = pwrite (fd, p, len, off);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += n;
    off += n;
    len -= n;
  }
  return 0;
}

/* ---- Fencing ---------------------------------------------------------- */

/* This boot's id (/proc/sys/kernel/random/boot_id), "" if unknown. */
static char boot_id_buf[40];

static void
boot_id_read (void)
{
  FILE *f = fopen ("/proc/sys/kernel/random/boot_id", "re");

  if (f) {
    if (fscanf (f, "%36s", boot_id_buf) != 1)
      boot_id_buf[0] = '\0';
    fclose (f);
  }
}

static const char *
boot_id (void)
{
  static pthread_once_t once = PTHREAD_ONCE_INIT;

  pthread_once (&once, boot_id_read);
  return boot_id_buf;
}

/* Milliseconds since boot, counting time suspended (CLOCK_BOOTTIME):
 * unlike the wall clock it never jumps, and it moves while a process is
 * stopped. */
static uint64_t
now_boot_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_BOOTTIME, &ts);
  return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A fence record is "boot BOOT_ID UNTIL_MS": the client is fenced while
 * this boot's CLOCK_BOOTTIME is below UNTIL_MS.  A record of another boot
 * has lapsed (every process of that boot is gone, and client ids name a
 * process).  A record of one number (older versions) is a wall-clock
 * expiry in ms. */
static bool
client_fenced (struct root *r, const char *client)
{
  char path[PATH_MAX], buf[128], id[40];
  unsigned long long until;
  ssize_t n;

  relpath (path, sizeof path, "fenced", client, NULL);
  n = read_file (r, path, buf, sizeof buf - 1);
  if (n < 0)
    return false;
  buf[MIN ((size_t) n, sizeof buf - 1)] = '\0';
  if (sscanf (buf, "boot %39s %llu", id, &until) == 2)
    return strcmp (id, boot_id ()) == 0 && until > now_boot_ms ();
  return strtoull (buf, NULL, 10) > now_wall_ms ();
}

/* Returns -ESHUTDOWN (with a message) if this client has been fenced. */
static int
check_fence (struct root *r, const char *op)
{
  uint64_t now = now_mono_ns ();
  bool fenced;

  pthread_mutex_lock (&r->fd_lock);
  if (now - r->fence_checked_ns > FENCE_CHECK_NS || r->fenced) {
    pthread_mutex_unlock (&r->fd_lock);
    fenced = client_fenced (r, r->client);
    pthread_mutex_lock (&r->fd_lock);
    r->fenced = fenced;
    r->fence_checked_ns = now;
  }
  fenced = r->fenced;
  pthread_mutex_unlock (&r->fd_lock);
  if (fenced) {
    vbk_set_error ("store: local: %s: this client (%s) has been fenced",
                   op, r->client);
    return -ESHUTDOWN;
  }
  return 0;
}

#define FENCE(r, op)                            \
  do {                                          \
    int f_ = check_fence ((r), (op));           \
    if (f_ < 0)                                 \
      return f_;                                \
  } while (0)

/* Per thread: open files of the change locks of the roots it used
 * lately, by root serial (never reused, unlike inode numbers).  They
 * are closed when the thread exits (gen_key's destructor: threads come
 * and go with connections and store handles, and each one that made a
 * change would otherwise leave its files open for the life of the
 * process) and, for the thread that closes a root, with the root. */
#define GEN_FDS 8
static __thread struct { uint64_t serial; int fd; } gen_fds[GEN_FDS];
static __thread unsigned gen_next;
static __thread bool gen_key_set;
static pthread_key_t gen_key;
static pthread_once_t gen_key_once = PTHREAD_ONCE_INIT;

/* Closes this thread's cached lock files: those of SERIAL, or all if
 * SERIAL is 0 (serials start at 1). */
static void
gen_fds_close (uint64_t serial)
{
  unsigned i;

  for (i = 0; i < GEN_FDS; i++)
    if (gen_fds[i].fd > 0 && (serial == 0 || gen_fds[i].serial == serial)) {
      close (gen_fds[i].fd);
      gen_fds[i].fd = 0;
      gen_fds[i].serial = 0;
    }
}

static void
gen_key_destroy (void *arg)
{
  (void) arg;
  gen_fds_close (0);
}

static void
gen_key_make (void)
{
  if (pthread_key_create (&gen_key, gen_key_destroy) != 0)
    abort ();
}

static int
gen_fd (struct root *r)
{
  unsigned i;
  int fd;

  for (i = 0; i < GEN_FDS; i++)
    if (gen_fds[i].fd > 0 && gen_fds[i].serial == r->serial)
      return gen_fds[i].fd;
  if (!gen_key_set) {
    /* A non-NULL value, so that the destructor runs at thread exit. */
    pthread_once (&gen_key_once, gen_key_make);
    if (pthread_setspecific (gen_key, &gen_key_set) != 0)
      return -ENOMEM;
    gen_key_set = true;
  }
  fd = openat (r->dirfd, r->lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return -errno;
  i = gen_next++ % GEN_FDS;
  if (gen_fds[i].fd > 0)
    close (gen_fds[i].fd);
  gen_fds[i].serial = r->serial;
  gen_fds[i].fd = fd;
  return fd;
}

static uint64_t
gen_read (int fd)
{
  uint64_t g = 0;

  if (pread (fd, &g, sizeof g, 0) != sizeof g)
    g = 0;
  return g;
}

/* Enters a change: returns a token for guard_exit, or -ESHUTDOWN (with a
 * message) if this client is fenced, or another -errno. */
static int
guard_enter (struct root *r, const char *op)
{
  uint64_t g;
  int fd = gen_fd (r);

  if (fd < 0)
    return fd;
  if (flock (fd, LOCK_SH) < 0)
    return -errno;
  g = __atomic_load_n (r->fencegen, __ATOMIC_SEQ_CST);
  pthread_mutex_lock (&r->fd_lock);
  if (g != r->fence_gen) {
    pthread_mutex_unlock (&r->fd_lock);
    bool fenced = client_fenced (r, r->client);
    pthread_mutex_lock (&r->fd_lock);
    r->fenced = fenced;
    r->fence_gen = g;
    r->fence_checked_ns = now_mono_ns ();
  }
  bool fenced = r->fenced;
  pthread_mutex_unlock (&r->fd_lock);
  if (fenced) {
    flock (fd, LOCK_UN);
    vbk_set_error ("store: local: %s: this client (%s) has been fenced",
                   op, r->client);
    return -ESHUTDOWN;
  }
  return fd;
}

static void
guard_exit (int *fd)
{
  if (*fd >= 0)
    flock (*fd, LOCK_UN);
}

/* Runs the rest of the enclosing block as a guarded change. */
#define GUARD(r, op)                                                    \
  int guard_ __attribute__ ((cleanup (guard_exit))) = guard_enter ((r), (op)); \
  if (guard_ < 0)                                                       \
    return guard_

/* ---- The fd cache ----------------------------------------------------- */

/* Open object files are cached by oid (hash + LRU, at most fd_max
 * entries, a share of RLIMIT_NOFILE).  A write marks its file dirty with
 * a new write generation (write_gen, counted under fd_lock when the write
 * has completed).  No fdatasync runs on the I/O path, and none ever runs
 * under fd_lock:
 *   - an idle clean entry beyond the budget is closed;
 *   - an idle dirty one moves to the aside list with its fd open and a
 *     syncer thread syncs and closes it, recording a failure as the
 *     store's sticky sync error (a file unlinked meanwhile, a removed or
 *     replaced object, is not synced: obj/ is, once for the batch);
 *     SYNCERS threads take up to SYNC_BATCH files each, so evictions
 *     (a disk with more objects than the cache is being filled: every
 *     new object evicts a dirty one) cost as many syncs in parallel as
 *     there are threads, not one sync after another: a writer that
 *     finds too many files waiting for them waits at the pace they
 *     sync;
 *   - an entry dropped while in use (the object was replaced, or another
 *     client invalidated the cache) moves aside too and is handled at its
 *     last fd_put.
 * So every dirty file is always on the LRU or the aside list (or in the
 * syncer's current batch), and local_flush can cover them all. */

static unsigned
hash_oid (struct root *r, const char *s)
{
  unsigned h = 2166136261u;

  while (*s)
    h = (h ^ (unsigned char) *s++) * 16777619u;
  return h & (r->nhash - 1);
}

static bool
entry_dirty (const struct fd_entry *e)
{
  return e->dirty_gen > e->clean_gen;
}

static void
lru_unlink (struct root *r, struct fd_entry *e)
{
  if (e->prev)
    e->prev->next = e->next;
  else
    r->lru_head = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    r->lru_tail = e->prev;
  e->prev = e->next = NULL;
}

static void
lru_push (struct root *r, struct fd_entry *e)
{
  e->next = r->lru_head;
  e->prev = NULL;
  if (r->lru_head)
    r->lru_head->prev = e;
  r->lru_head = e;
  if (r->lru_tail == NULL)
    r->lru_tail = e;
}

static void
hash_unlink (struct root *r, struct fd_entry *e)
{
  struct fd_entry **pp = &r->hash[hash_oid (r, e->oid)];

  while (*pp != e)
    pp = &(*pp)->hnext;
  *pp = e->hnext;
}

static void
aside_push (struct root *r, struct fd_entry *e)
{
  e->aside = true;
  e->prev = NULL;
  e->next = r->aside;
  if (r->aside)
    r->aside->prev = e;
  r->aside = e;
  r->naside++;
}

static void
aside_unlink (struct root *r, struct fd_entry *e)
{
  if (e->prev)
    e->prev->next = e->next;
  else
    r->aside = e->next;
  if (e->next)
    e->next->prev = e->prev;
  e->prev = e->next = NULL;
  r->naside--;
}

/* Records a failed sync of a data file (or of obj/) as the store's sticky
 * error: every later flush fails with it.  Called with fd_lock held. */
static void
sync_failed_locked (struct root *r, int err, const char *what)
{
  if (r->sync_err == 0) {
    r->sync_err = err == -ENOSPC || err == -EDQUOT ? err : -EIO;
    snprintf (r->sync_msg, sizeof r->sync_msg,
              "store: local: flush: syncing %s failed (%s); data written "
              "before it may be lost, so every flush fails until the store "
              "is reopened", what, strerror (-err));
  }
}

static void
sync_failed (struct root *r, int err, const char *what)
{
  pthread_mutex_lock (&r->fd_lock);
  sync_failed_locked (r, err, what);
  pthread_mutex_unlock (&r->fd_lock);
}

/* Takes an entry out of the cache (hash and LRU).  An idle clean one is
 * closed; any other goes aside (the syncer takes idle dirty ones; one in
 * use is handled at its last fd_put).  Called with fd_lock held. */
static void
fd_evict_locked (struct root *r, struct fd_entry *e, bool hashed)
{
  if (hashed)
    hash_unlink (r, e);
  lru_unlink (r, e);
  r->nfds--;
  if (e->refs == 0 && !entry_dirty (e)) {
    close (e->fd);
    free (e);
    return;
  }
  aside_push (r, e);
  if (e->refs == 0)
    pthread_cond_broadcast (&r->sync_cond);
}

/* Evicts least recently used idle entries beyond the budget; called with
 * fd_lock held. */
static void
fd_trim (struct root *r)
{
  struct fd_entry *e = r->lru_tail, *prev;

  while (e && r->nfds > r->fd_max) {
    prev = e->prev;
    if (e->refs == 0)
      fd_evict_locked (r, e, true);
    e = prev;
  }
}

/* Another client replaced or removed object files: cached descriptors
 * may point at old files.  Drop them all from the cache.  Called with
 * fd_lock held. */
static void
fd_invalidate_locked (struct root *r)
{
  struct fd_entry *e, *next;

  for (e = r->lru_head; e; e = next) {
    next = e->next;
    fd_evict_locked (r, e, false);
  }
  memset (r->hash, 0, r->nhash * sizeof *r->hash);
  assert (r->nfds == 0);
}

/* Batches up to this one have finished: the one before the oldest still
 * being synced, or the last one taken.  Called with fd_lock held. */
static void
sync_done_update (struct root *r)
{
  uint64_t done = r->sync_taken;
  unsigned i;

  for (i = 0; i < r->nsyncers; i++)
    if (r->syncers[i].busy && r->syncers[i].busy - 1 < done)
      done = r->syncers[i].busy - 1;
  r->sync_done = done;
}

/* A syncer thread: syncs and closes idle entries of the aside list, up
 * to SYNC_BATCH at a time, outside fd_lock, and records failures
 * stickily.  Batches are numbered as they are taken; they may finish in
 * any order, and sync_done counts only those with no older one still
 * running (what local_flush waits for). */
static void *
syncer (void *arg)
{
  struct syncer *self = arg;
  struct root *r = self->r;
  struct fd_entry *e, *next, *batch;
  struct stat sb;
  unsigned n;
  bool gone;
  int rc;

  pthread_mutex_lock (&r->fd_lock);
  for (;;) {
    batch = NULL;
    n = 0;
    for (e = r->aside; e && n < SYNC_BATCH; e = next) {
      next = e->next;
      if (e->refs == 0) {
        aside_unlink (r, e);
        e->next = batch;
        batch = e;
        n++;
      }
    }
    if (batch == NULL) {
      if (r->syncer_stop)
        break;
      pthread_cond_wait (&r->sync_cond, &r->fd_lock);
      continue;
    }
    self->busy = ++r->sync_taken;
    pthread_mutex_unlock (&r->fd_lock);
    gone = false;
    for (e = batch; e; e = next) {
      next = e->next;
      rc = 0;
      if (entry_dirty (e)) {
        /* A file whose name was removed or replaced (most often every
         * object of a removed image, after the cache was dropped for
         * it) holds nothing anyone can read again: its data need not
         * reach the disk.  Only the removal must stay done, which obj/
         * synced below makes sure of (the remover syncs it too, unless
         * it died in between). */
        if (fstat (e->fd, &sb) == 0 && sb.st_nlink == 0)
          gone = true;
        else if (fdatasync (e->fd) < 0)
          rc = -errno;
      }
      if (rc < 0) {
        char what[STORE_NAME_MAX + 16];
        snprintf (what, sizeof what, "object %s", e->oid);
        sync_failed (r, rc, what);
      }
      close (e->fd);
      free (e);
    }
    if (gone && (rc = fsync_dir (r, "obj")) < 0)
      sync_failed (r, rc, "obj/");
    pthread_mutex_lock (&r->fd_lock);
    self->busy = 0;
    sync_done_update (r);
    pthread_cond_broadcast (&r->sync_cond);
  }
  pthread_mutex_unlock (&r->fd_lock);
  return NULL;
}

static void
objgen_bump (struct root *r)
{
  __atomic_add_fetch (r->objgen, 1, __ATOMIC_SEQ_CST);
}

/* Counts a create in obj/, whose new name is durable only once obj/ is
 * synced; returns the create's generation.  Called with fd_lock held,
 * once before the create (so that anyone who opens the new file after it
 * exists finds its name pending: see the SYNC path of local_write) and
 * again after it (so that a flush whose sync of obj/ read the first count
 * and started before the name existed does not count it as durable). */
static uint64_t
dir_created_locked (struct root *r)
{
  r->dir_dirty = true;
  return ++r->dir_gen;
}

/* Gets an open file for OID's head.  With CREATE the file is created if
 * missing; without it a missing object gives -ENOENT. */
static int
fd_get (struct root *r, const char *oid, bool create, struct fd_entry **out)
{
  unsigned h = hash_oid (r, oid);
  struct fd_entry *e;
  char path[PATH_MAX];
  uint64_t created_gen = 0;
  int fd;

  pthread_mutex_lock (&r->fd_lock);
  {
    uint64_t g = __atomic_load_n (r->objgen, __ATOMIC_SEQ_CST);
    if (g != r->cache_gen) {
      fd_invalidate_locked (r);
      r->cache_gen = g;
    }
  }
  for (e = r->hash[h]; e; e = e->hnext) {
    if (strcmp (e->oid, oid) == 0) {
      e->refs++;
      lru_unlink (r, e);
      lru_push (r, e);
      pthread_mutex_unlock (&r->fd_lock);
      *out = e;
      return 0;
    }
  }
  /* Too many files wait for the syncer: let it catch up before opening
   * another, so the process never runs out of descriptors. */
  while (r->naside > r->aside_max && r->syncer_running)
    pthread_cond_wait (&r->sync_cond, &r->fd_lock);
  pthread_mutex_unlock (&r->fd_lock);

  relpath (path, sizeof path, ".", oid, NULL);
  /* One call in the common case, whichever it is: while the last file a
   * write had to open was new (a disk being filled), the create comes
   * first (O_EXCL, so we know whether it made the file); else the plain
   * open (a failed lookup costs about a fifth of a create).  A create is
   * counted before it happens (see dir_created_locked). */
  if (create && __atomic_load_n (&r->create_first, __ATOMIC_RELAXED)) {
    pthread_mutex_lock (&r->fd_lock);
    created_gen = dir_created_locked (r);
    pthread_mutex_unlock (&r->fd_lock);
    fd = openat (r->objfd, path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
                 0600);
    if (fd < 0 && errno == EEXIST) {
      __atomic_store_n (&r->create_first, false, __ATOMIC_RELAXED);
      created_gen = 0;
      fd = openat (r->objfd, path, O_RDWR | O_CLOEXEC);
    }
  }
  else {
    fd = openat (r->objfd, path, O_RDWR | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && create) {
      __atomic_store_n (&r->create_first, true, __ATOMIC_RELAXED);
      pthread_mutex_lock (&r->fd_lock);
      created_gen = dir_created_locked (r);
      pthread_mutex_unlock (&r->fd_lock);
      fd = openat (r->objfd, path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    }
  }
  if (fd < 0)
    return -errno;

  e = calloc (1, sizeof *e);
  if (e == NULL) {
    close (fd);
    return -ENOMEM;
  }
  snprintf (e->oid, sizeof e->oid, "%s", oid);
  e->fd = fd;
  e->refs = 1;

  pthread_mutex_lock (&r->fd_lock);
  /* A file we did not create may still be one this process created
   * earlier (and closed) whose name is not durable yet: unless every
   * create so far is synced, assume so.  Our own create is counted once
   * more, now that the name exists. */
  e->dir_gen = created_gen ? dir_created_locked (r)
    : r->dir_gen > r->dir_synced ? r->dir_gen : 0;
  /* Another thread may have opened it meanwhile: keep theirs. */
  {
    struct fd_entry *o;
    for (o = r->hash[h]; o; o = o->hnext) {
      if (strcmp (o->oid, oid) == 0) {
        o->refs++;
        o->dir_gen = MAX (o->dir_gen, e->dir_gen);
        pthread_mutex_unlock (&r->fd_lock);
        close (fd);
        free (e);
        *out = o;
        return 0;
      }
    }
  }
  e->hnext = r->hash[h];
  r->hash[h] = e;
  lru_push (r, e);
  r->nfds++;
  fd_trim (r);
  pthread_mutex_unlock (&r->fd_lock);
  *out = e;
  return 0;
}

/* Makes the name of E's file in obj/ durable, if it may not be yet: an
 * fsync of obj/ only when the file is one this process created (or may
 * have) since obj/ was last synced.  So a synchronous write to an old
 * file (the change log, the object map) costs one fdatasync, however
 * many data files were created meanwhile: those are covered by the
 * next flush, which syncs obj/. */
static int
sync_name (struct root *r, struct fd_entry *e, const char *oid)
{
  uint64_t need, upto;
  int rc;

  pthread_mutex_lock (&r->fd_lock);
  need = e->dir_gen;
  upto = r->dir_gen;
  if (need <= r->dir_synced) {
    pthread_mutex_unlock (&r->fd_lock);
    return 0;
  }
  pthread_mutex_unlock (&r->fd_lock);
  rc = fsync_dir (r, "obj");
  pthread_mutex_lock (&r->fd_lock);
  if (rc < 0) {
    vbk_errno (rc, "store: local: write: %s: fsync of obj/", oid);
    sync_failed_locked (r, rc, "obj/");
  }
  else if (upto > r->dir_synced)
    r->dir_synced = upto;
  pthread_mutex_unlock (&r->fd_lock);
  return rc;
}

/* Drops a reference; called with fd_lock held. */
static void
fd_put_locked (struct root *r, struct fd_entry *e)
{
  if (--e->refs == 0 && e->aside) {
    if (entry_dirty (e))
      pthread_cond_broadcast (&r->sync_cond);   /* the syncer's now */
    else {
      aside_unlink (r, e);
      close (e->fd);
      free (e);
    }
  }
}

/* Ends a use of E; DIRTIED says the use completed a write that is not
 * durable yet. */
static void
fd_put (struct root *r, struct fd_entry *e, bool dirtied)
{
  pthread_mutex_lock (&r->fd_lock);
  if (dirtied)
    e->dirty_gen = ++r->write_gen;
  fd_put_locked (r, e);
  pthread_mutex_unlock (&r->fd_lock);
}

/* Drops the cached file of OID (after it was unlinked or replaced).  Its
 * unsynced writes, if any, are still covered by the next flush. */
static void
fd_forget (struct root *r, const char *oid)
{
  struct fd_entry *e;

  pthread_mutex_lock (&r->fd_lock);
  for (e = r->hash[hash_oid (r, oid)]; e; e = e->hnext) {
    if (strcmp (e->oid, oid) == 0) {
      fd_evict_locked (r, e, true);
      break;
    }
  }
  pthread_mutex_unlock (&r->fd_lock);
}

/* Hands FD, the file just made OID's head by a deferred create
 * (STORE_WRITE_DEFER) with its bytes and its name not yet durable, to
 * the syncer: it goes on the aside list, dirty, with its name waiting for
 * obj/ (CREATED_GEN).  So its fdatasync runs in the background while the
 * writer goes on (its writeback was started when it was written), and the
 * next flush finds most such files synced already; the flush still covers
 * the others (it syncs what is aside and waits for the syncer's batch) and
 * syncs obj/ once for all of them.  A file OID named before that is still
 * cached leaves the cache (the new one is read through a new descriptor).
 * Takes FD. */
static void
fd_adopt (struct root *r, const char *oid, int fd)
{
  struct fd_entry *e, *o;
  uint64_t created_gen;
  struct stat a, b;

  e = calloc (1, sizeof *e);
  pthread_mutex_lock (&r->fd_lock);
  created_gen = dir_created_locked (r);   /* again, now that it exists */
  /* As in fd_get: never more files waiting for the syncer than allowed. */
  while (r->naside > r->aside_max && r->syncer_running)
    pthread_cond_wait (&r->sync_cond, &r->fd_lock);
  for (o = r->hash[hash_oid (r, oid)]; o; o = o->hnext) {
    if (strcmp (o->oid, oid) != 0)
      continue;
    if (fstat (o->fd, &a) < 0 || fstat (fd, &b) < 0
        || a.st_dev != b.st_dev || a.st_ino != b.st_ino)
      fd_evict_locked (r, o, true);
    break;
  }
  if (e == NULL || !r->syncer_running) {
    /* No entry, or no syncer: sync it now, it needs neither.  Its name
     * is made durable by the next flush (dir_dirty is set). */
    pthread_mutex_unlock (&r->fd_lock);
    if (fdatasync (fd) < 0) {
      char what[STORE_NAME_MAX + 16];
      snprintf (what, sizeof what, "object %s", oid);
      sync_failed (r, -errno, what);
    }
    close (fd);
    free (e);
    return;
  }
  snprintf (e->oid, sizeof e->oid, "%s", oid);
  e->fd = fd;
  e->dir_gen = created_gen;
  e->dirty_gen = ++r->write_gen;
  aside_push (r, e);
  pthread_cond_broadcast (&r->sync_cond);
  pthread_mutex_unlock (&r->fd_lock);
}

/* ---- Snapsets (copy-on-write) ----------------------------------------- */

struct snapset {
  uint64_t seq;
  size_t n;
  struct { uint64_t id, from; } clones[MAX_CLONES];   /* ascending id */
};

/* Opens and flock()s the snapset file of OID (creating it if CREATE). */
static int
snapset_lock (struct root *r, const char *oid, int how, bool create)
{
  char path[PATH_MAX];
  int fd;

  relpath (path, sizeof path, "snapset", oid, NULL);
  fd = openat (r->dirfd, path,
               O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
  if (fd < 0)
    return -errno;
  if (flock (fd, how) < 0) {
    int e = -errno;
    close (fd);
    return e;
  }
  return fd;
}

static int
snapset_read (int fd, struct snapset *ss)
{
  char buf[16384], *line, *save;
  ssize_t n;

  memset (ss, 0, sizeof *ss);
  n = pread (fd, buf, sizeof buf - 1, 0);
  if (n < 0)
    return -errno;
  buf[n] = '\0';
  for (line = strtok_r (buf, "\n", &save); line;
       line = strtok_r (NULL, "\n", &save)) {
    unsigned long long a, b;
    if (sscanf (line, "seq %llu", &a) == 1)
      ss->seq = a;
    else if (sscanf (line, "clone %llu %llu", &a, &b) == 2
             && ss->n < MAX_CLONES) {
      ss->clones[ss->n].id = a;
      ss->clones[ss->n].from = b;
      ss->n++;
    }
  }
  return 0;
}

static int
snapset_write (int fd, const struct snapset *ss)
{
  char buf[16384];
  size_t i, n;

  n = snprintf (buf, sizeof buf, "seq %llu\n", (unsigned long long) ss->seq);
  for (i = 0; i < ss->n; i++)
    n += snprintf (buf + n, sizeof buf - n, "clone %llu %llu\n",
                   (unsigned long long) ss->clones[i].id,
                   (unsigned long long) ss->clones[i].from);
  if (ftruncate (fd, 0) < 0 || full_pwrite (fd, buf, n, 0) < 0
      || fdatasync (fd) < 0)
    return -errno ? -errno : -EIO;
  return 0;
}

static void
clone_path (char *buf, size_t len, const char *oid, uint64_t id)
{
  char suffix[32];

  snprintf (suffix, sizeof suffix, ".%016llx", (unsigned long long) id);
  relpath (buf, len, "clone", oid, suffix);
}

/* Copies the head of OID into clone file ID (durably). */
static int
make_clone (struct root *r, const char *oid, uint64_t id)
{
  char src[PATH_MAX], dst[PATH_MAX], tmp[256];
  int in, out, rc = 0;
  struct stat sb;
  loff_t off = 0;

  relpath (src, sizeof src, "obj", oid, NULL);
  clone_path (dst, sizeof dst, oid, id);
  in = openat (r->dirfd, src, O_RDONLY | O_CLOEXEC);
  if (in < 0)
    return -errno;
  rc = write_tmp (r, "", 0, tmp, sizeof tmp);
  if (rc < 0) {
    close (in);
    return rc;
  }
  out = openat (r->dirfd, tmp, O_WRONLY | O_CLOEXEC);
  if (out < 0 || fstat (in, &sb) < 0) {
    rc = -errno;
    goto out;
  }
  /* Copy only the data, keeping holes: the clone stays as sparse as the
   * object. */
  while (off < sb.st_size) {
    loff_t data = lseek (in, off, SEEK_DATA), hole, o;
    if (data < 0)
      break;                    /* ENXIO: only a hole is left */
    hole = lseek (in, data, SEEK_HOLE);
    if (hole < 0) {
      rc = -errno;
      goto out;
    }
    o = data;
    while (o < hole) {
      loff_t d = o;
      ssize_t n = copy_file_range (in, &o, out, &d, hole - o, 0);
      if (n < 0) {
        rc = -errno;
        goto out;
      }
      if (n == 0)
        break;
    }
    off = hole;
  }
  if (ftruncate (out, sb.st_size) < 0 || fdatasync (out) < 0) {
    rc = -errno;
    goto out;
  }
  if (renameat (r->dirfd, tmp, r->dirfd, dst) < 0)
    rc = -errno;
out:
  if (out >= 0)
    close (out);
  close (in);
  if (rc < 0)
    unlinkat (r->dirfd, tmp, 0);
  return rc;
}

static bool
head_exists (struct root *r, const char *oid)
{
  char path[PATH_MAX];

  relpath (path, sizeof path, "obj", oid, NULL);
  return faccessat (r->dirfd, path, F_OK, 0) == 0;
}

/* Before a change to OID's head: preserves the head for the snapshots
 * of this handle's context that the object has not seen yet. */
static int
cow_prepare (struct local *l, const char *oid, struct fd_entry *e)
{
  struct root *r = l->r;
  struct snapset ss;
  uint64_t seq, newest;
  int fd, rc;

  pthread_rwlock_rdlock (&l->snapc_lock);
  seq = l->seq;
  newest = l->nsnaps ? l->snaps[0] : 0;
  pthread_rwlock_unlock (&l->snapc_lock);
  if (seq == 0 || (e && e->cow_seq >= seq))
    return 0;

  fd = snapset_lock (r, oid, LOCK_EX, true);
  if (fd < 0)
    return fd;
  rc = snapset_read (fd, &ss);
  if (rc == 0 && seq > ss.seq) {
    if (newest > ss.seq && head_exists (r, oid)) {
      if (ss.n == MAX_CLONES)
        rc = -ENOSPC;
      else {
        /* The clone copies the page cache, so the head's unsynced
         * writes need no sync here: the clone file itself is synced. */
        rc = make_clone (r, oid, newest);
        if (rc == 0) {
          ss.clones[ss.n].id = newest;
          ss.clones[ss.n].from = ss.seq;
          ss.n++;
        }
      }
    }
    if (rc == 0) {
      ss.seq = seq;
      rc = snapset_write (fd, &ss);
    }
  }
  close (fd);
  if (rc == 0 && e) {
    pthread_mutex_lock (&r->fd_lock);
    e->cow_seq = seq;
    pthread_mutex_unlock (&r->fd_lock);
  }
  return rc;
}

/* Where OID's data at SNAP is: *CLONE = clone id, or 0 for the head.
 * Returns -ENOENT if the object did not exist at SNAP.  Called with the
 * snapset locked (FD >= 0) or absent (FD < 0). */
static int
snap_source (struct root *r, int fd, const char *oid, uint64_t snap,
             uint64_t *clone)
{
  struct snapset ss;
  size_t i;
  int rc;

  *clone = 0;
  if (fd < 0)
    return head_exists (r, oid) ? 0 : -ENOENT;
  rc = snapset_read (fd, &ss);
  if (rc < 0)
    return rc;
  for (i = 0; i < ss.n; i++) {
    if (ss.clones[i].id >= snap) {
      if (ss.clones[i].from >= snap)
        return -ENOENT;
      *clone = ss.clones[i].id;
      return 0;
    }
  }
  if (ss.seq >= snap || !head_exists (r, oid))
    return -ENOENT;
  return 0;
}

/* ---- Opening ---------------------------------------------------------- */

/* Makes PATH (relative to the root; "." for the root) private to its
 * owner if it is not, when we own it; warns once per open otherwise. */
static void
tighten (struct root *r, const char *path)
{
  struct stat sb;

  if (fstatat (r->dirfd, path, &sb, AT_SYMLINK_NOFOLLOW) < 0
      || (sb.st_mode & 077) == 0)
    return;
  if (sb.st_uid == geteuid ()
      && fchmodat (r->dirfd, path, sb.st_mode & 0700, 0) == 0) {
    log_warn ("store: local: %s/%s was open to other users (mode %04o); "
              "made it private (%04o)", r->path, path,
              (unsigned) (sb.st_mode & 07777), (unsigned) (sb.st_mode & 0700));
    return;
  }
  log_warn ("store: local: %s/%s is open to other users (mode %04o, owner "
            "uid %u) and cannot be made private", r->path, path,
            (unsigned) (sb.st_mode & 07777), (unsigned) sb.st_uid);
}

static int
make_dirs (struct root *r)
{
  static const char *const dirs[] = { "obj", "meta", "snapset", "clone",
                                      "snaps", "snaps/live", "lock",
                                      "watch", "fenced", "tmp" };
  size_t i;

  for (i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
    if (mkdirat (r->dirfd, dirs[i], 0700) < 0 && errno != EEXIST)
      return -errno;
    /* A store made by an older version has 0755 directories. */
    tighten (r, dirs[i]);
  }
  return 0;
}

/* Sizes the fd cache from RLIMIT_NOFILE, first raising the soft limit to
 * the hard one (for the whole process: an NBD server of big disks wants
 * many open files).  Half the limit goes to cached object files and a
 * quarter more to files waiting for the syncer; VBK_LOCAL_MAX_FILES
 * overrides the cache size (tests use it to force evictions).  The cache
 * is what a random writer's disk must fit in: each file evicted dirty
 * costs a sync (on the syncer's threads), and at half of a limit of
 * 20000 a 64 GiB disk of 16384 objects evicts on two writes in five. */
static int
fd_budget (struct root *r)
{
  struct rlimit rl;
  size_t max = 1024;
  const char *env = getenv ("VBK_LOCAL_MAX_FILES");

  if (getrlimit (RLIMIT_NOFILE, &rl) == 0) {
    if (rl.rlim_cur < rl.rlim_max) {
      struct rlimit want = { rl.rlim_max, rl.rlim_max };
      if (setrlimit (RLIMIT_NOFILE, &want) == 0)
        rl.rlim_cur = rl.rlim_max;
    }
    if (rl.rlim_cur != RLIM_INFINITY)
      max = rl.rlim_cur;
    else
      max = FD_CACHE_CAP * 2;
  }
  r->fd_max = max / 2;
  r->aside_max = MAX (max / 4, (size_t) 1);
  if (env && atoi (env) > 0)
    r->fd_max = (size_t) atoi (env);
  r->fd_max = MIN (MAX (r->fd_max, (size_t) 1), (size_t) FD_CACHE_CAP);
  if (!env && r->fd_max < FD_CACHE_MIN)
    r->fd_max = FD_CACHE_MIN;
  for (r->nhash = 1024; r->nhash < r->fd_max; r->nhash *= 2)
    ;
  r->hash = calloc (r->nhash, sizeof *r->hash);
  if (r->hash == NULL)
    return -ENOMEM;
  return 0;
}

static void
root_free (struct root *r)
{
  struct fd_entry *e, *next;

  workq_free (r->aio);              /* runs what is queued first */
  if (r->syncer_running) {
    unsigned i;
    pthread_mutex_lock (&r->fd_lock);
    r->syncer_stop = true;
    pthread_cond_broadcast (&r->sync_cond);
    pthread_mutex_unlock (&r->fd_lock);
    for (i = 0; i < r->nsyncers; i++)  /* they drain the aside list */
      pthread_join (r->syncers[i].thread, NULL);
  }
  /* store_close cannot report an error: a last sync on the way out is
   * all that can be done (callers flush before closing). */
  for (e = r->lru_head; e; e = next) {
    next = e->next;
    if (entry_dirty (e))
      fdatasync (e->fd);
    close (e->fd);
    free (e);
  }
  free (r->hash);
  gen_fds_close (r->serial);
  if (r->dirfd >= 0 && r->lockpath[0])
    unlinkat (r->dirfd, r->lockpath, 0);
  if (r->objgen)
    munmap (r->objgen, 4096);
  if (r->fencegen)
    munmap (r->fencegen, 4096);
  if (r->objfd >= 0)
    close (r->objfd);
  if (r->dirfd >= 0)
    close (r->dirfd);
  pthread_mutex_destroy (&r->fd_lock);
  pthread_mutex_destroy (&r->flush_lock);
  pthread_cond_destroy (&r->sync_cond);
  free (r->path);
  free (r);
}

static struct local *
handle_new (struct root *r)
{
  struct local *l = calloc (1, sizeof *l);

  if (l == NULL)
    return NULL;
  l->r = r;
  pthread_rwlock_init (&l->snapc_lock, NULL);
  pthread_mutex_init (&l->io_lock, NULL);
  pthread_cond_init (&l->io_cond, NULL);
  return l;
}

/* Start time of process PID (clock ticks after boot, /proc/PID/stat
 * field 22), or 0 if it does not exist. */
static unsigned long long
proc_start (int pid)
{
  char path[64], buf[1024], *p;
  unsigned long long start = 0;
  ssize_t n;
  int fd, i;

  snprintf (path, sizeof path, "/proc/%d/stat", pid);
  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  n = read (fd, buf, sizeof buf - 1);
  close (fd);
  if (n <= 0)
    return 0;
  buf[n] = '\0';
  p = strrchr (buf, ')');       /* the command name may hold spaces */
  if (p == NULL || p[1] != ' ')
    return 0;
  p += 2;                       /* field 3, the state */
  for (i = 3; i < 22 && p; i++) {
    p = strchr (p, ' ');
    if (p)
      p++;
  }
  if (p)
    start = strtoull (p, NULL, 10);
  return start;
}

static int
local_open (const char *arg, void **hp)
{
  static unsigned opens;
  static uint64_t serials;
  char host[64] = "host";
  struct root *r;
  struct local *l;
  const char *env;
  int rc;

  if (arg[0] != '/') {
    vbk_set_error ("store: local: '%s': expected an absolute path "
                   "(local:/var/lib/vbk)", arg);
    return -EINVAL;
  }
  r = calloc (1, sizeof *r);
  if (r == NULL)
    return -ENOMEM;
  r->dirfd = r->objfd = -1;
  pthread_mutex_init (&r->fd_lock, NULL);
  pthread_mutex_init (&r->flush_lock, NULL);
  pthread_cond_init (&r->sync_cond, NULL);
  r->path = strdup (arg);
  r->refs = 1;
  gethostname (host, sizeof host - 1);
  /* local.HOST.PID.START.N: START (the process's start time) tells this
   * process from a later one that reuses its pid, see local_fence. */
  snprintf (r->client, sizeof r->client, "local.%s.%d.%llu.%u", host,
            (int) getpid (), proc_start ((int) getpid ()),
            __atomic_fetch_add (&opens, 1, __ATOMIC_RELAXED));
  r->serial = __atomic_add_fetch (&serials, 1, __ATOMIC_RELAXED);
  relpath (r->lockpath, sizeof r->lockpath, "fenced", r->client, ".lock");

  if (mkdir (arg, 0700) < 0 && errno != EEXIST) {
    rc = vbk_errno (-errno, "store: local: cannot create %s", arg);
    goto fail;
  }
  r->dirfd = open (arg, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (r->dirfd < 0) {
    rc = vbk_errno (-errno, "store: local: cannot open %s", arg);
    goto fail;
  }
  tighten (r, ".");
  rc = make_dirs (r);
  if (rc < 0) {
    vbk_errno (rc, "store: local: cannot set up %s", arg);
    goto fail;
  }
  {
    struct stat sb;
    int gfd = openat (r->dirfd, "fenced/.gen", O_RDWR | O_CREAT | O_CLOEXEC,
                      0600);
    if (gfd < 0 || fstat (gfd, &sb) < 0) {
      rc = vbk_errno (-errno, "store: local: %s/fenced/.gen", arg);
      if (gfd >= 0)
        close (gfd);
      goto fail;
    }
    r->fence_gen = gen_read (gfd);
    if (sb.st_size < 4096 && ftruncate (gfd, 4096) < 0) {
      rc = vbk_errno (-errno, "store: local: %s/fenced/.gen", arg);
      close (gfd);
      goto fail;
    }
    r->fencegen = mmap (NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED,
                        gfd, 0);
    close (gfd);
    if (r->fencegen == MAP_FAILED) {
      r->fencegen = NULL;
      rc = vbk_errno (-errno, "store: local: mmap fenced/.gen");
      goto fail;
    }
    gfd = openat (r->dirfd, "obj-gen", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (gfd < 0 || ftruncate (gfd, 4096) < 0) {
      rc = vbk_errno (-errno, "store: local: %s/obj-gen", arg);
      if (gfd >= 0)
        close (gfd);
      goto fail;
    }
    r->objgen = mmap (NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, gfd, 0);
    close (gfd);
    if (r->objgen == MAP_FAILED) {
      r->objgen = NULL;
      rc = vbk_errno (-errno, "store: local: mmap obj-gen");
      goto fail;
    }
    r->cache_gen = __atomic_load_n (r->objgen, __ATOMIC_SEQ_CST);
  }
  r->objfd = openat (r->dirfd, "obj", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (r->objfd < 0) {
    rc = vbk_errno (-errno, "store: local: %s/obj", arg);
    goto fail;
  }
  /* A probe write tells a read-only or full store at once. */
  if (faccessat (r->dirfd, "tmp", W_OK, AT_EACCESS) < 0) {
    rc = vbk_errno (-errno, "store: local: %s is not writable", arg);
    goto fail;
  }

  rc = fd_budget (r);
  if (rc < 0)
    goto fail;
  for (unsigned i = 0; i < SYNCERS; i++) {
    r->syncers[i].r = r;
    if (pthread_create (&r->syncers[i].thread, NULL, syncer,
                        &r->syncers[i]) != 0)
      break;
    r->nsyncers++;
  }
  if (r->nsyncers == 0) {
    rc = vbk_errno (-EAGAIN, "store: local: cannot start the syncer");
    goto fail;
  }
  r->syncer_running = true;

  {
    /* No bound: the callers bound what they have in flight (vbk-blockd
     * its memory per connection, the copy engine its queue), and a
     * completion that submits more must never wait.  Cached small reads
     * and small writes complete on the caller's thread; what comes here
     * mostly waits for the disk (reads of data not in the page cache) or
     * copies much (large writes), so the threads are as many as the
     * reads a random reader at queue depth 16 keeps waiting on the disk
     * at once (4 threads left a disk bigger than the page cache at a
     * quarter of the parallelism the disk gives). */
    struct workq_opts wo = { .name = "local-aio", .threads = 16 };

    env = getenv ("VBK_LOCAL_THREADS");
    if (env && atoi (env) >= 1 && atoi (env) <= 64)
      wo.threads = (unsigned) atoi (env);
    if ((rc = workq_new (&wo, &r->aio)) < 0) {
      vbk_error_prepend (rc, "store: local: ");
      goto fail;
    }
  }
  l = handle_new (r);
  if (l == NULL) {
    rc = -ENOMEM;
    goto fail;
  }
  *hp = l;
  return 0;

fail:
  root_free (r);
  return rc;
}

static int
local_clone (void *parent, void **hp)
{
  struct local *p = parent, *l;

  l = handle_new (p->r);
  if (l == NULL)
    return -ENOMEM;
  __atomic_add_fetch (&p->r->refs, 1, __ATOMIC_SEQ_CST);
  *hp = l;
  return 0;
}

static void
local_close (void *h)
{
  struct local *l = h;

  pthread_mutex_lock (&l->io_lock);
  while (l->inflight > 0)
    pthread_cond_wait (&l->io_cond, &l->io_lock);
  pthread_mutex_unlock (&l->io_lock);
  if (__atomic_sub_fetch (&l->r->refs, 1, __ATOMIC_SEQ_CST) == 0)
    root_free (l->r);
  pthread_rwlock_destroy (&l->snapc_lock);
  pthread_mutex_destroy (&l->io_lock);
  pthread_cond_destroy (&l->io_cond);
  free (l->snaps);
  free (l);
}

static const char *
local_client_id (void *h)
{
  return ((struct local *) h)->r->client;
}

/* ---- Object data ------------------------------------------------------ */

static ssize_t
local_read (void *h, const char *oid, void *buf, size_t len, uint64_t off,
            uint64_t snap)
{
  struct local *l = h;
  struct root *r = l->r;
  struct fd_entry *e;
  int rc, sfd, fd;
  uint64_t clone;
  char path[PATH_MAX];

  FENCE (r, "read");
  if (snap == STORE_SNAP_HEAD) {
    rc = fd_get (r, oid, false, &e);
    if (rc < 0)
      return rc;
    rc = full_pread (e->fd, buf, len, off);
    fd_put (r, e, false);
    return rc < 0 ? rc : (ssize_t) len;
  }

  sfd = snapset_lock (r, oid, LOCK_SH, false);
  rc = snap_source (r, sfd, oid, snap, &clone);
  if (rc == 0) {
    if (clone)
      clone_path (path, sizeof path, oid, clone);
    else
      relpath (path, sizeof path, "obj", oid, NULL);
    fd = openat (r->dirfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      rc = -errno;
    else {
      rc = full_pread (fd, buf, len, off);
      close (fd);
    }
  }
  if (sfd >= 0)
    close (sfd);
  return rc < 0 ? rc : (ssize_t) len;
}

static int
local_write (void *h, const char *oid, const void *buf, size_t len,
             uint64_t off, unsigned flags)
{
  struct local *l = h;
  struct root *r = l->r;
  struct fd_entry *e;
  int rc;

  GUARD (r, "write");
  rc = fd_get (r, oid, true, &e);
  if (rc < 0)
    return rc;
  rc = cow_prepare (l, oid, e);
  if (rc == 0)
    rc = full_pwrite (e->fd, buf, len, off);
  if (rc == 0 && (flags & STORE_WRITE_SYNC)) {
    /* A failed sync may have dropped other unsynced writes of this file
     * (the kernel reports the error once and may mark the pages clean),
     * so it is sticky for the whole store, not only this write's. */
    if (fdatasync (e->fd) < 0) {
      rc = vbk_errno (-errno, "store: local: write: %s: fdatasync", oid);
      sync_failed (r, rc, oid);
    }
    else
      rc = sync_name (r, e, oid);
  }
  fd_put (r, e, rc == 0 && !(flags & STORE_WRITE_SYNC));
  return rc;
}

static int
local_write_full (void *h, const char *oid, const void *buf, size_t len,
                  unsigned flags)
{
  struct local *l = h;
  struct root *r = l->r;
  char path[PATH_MAX];
  int rc;

  GUARD (r, "write_full");
  rc = cow_prepare (l, oid, NULL);
  if (rc < 0)
    return rc;
  relpath (path, sizeof path, "obj", oid, NULL);
  rc = replace_file (r, path, buf, len);
  objgen_bump (r);
  fd_forget (r, oid);
  return rc;
}

/* A deferred create (STORE_WRITE_DEFER): the bytes go to a file in tmp/
 * whose writeback starts at once (sync_file_range, so that the flush
 * mostly finds them on the disk), which is renamed to the object's name
 * only if that name is free (RENAME_NOREPLACE: readers see the whole
 * object or none), with no sync on the caller's path; the file goes to
 * the syncer as dirty (fd_adopt), and the next flush makes sure it and
 * obj/ are synced (obj/ once for all the objects created so).  A crash
 * before that flush may leave the name without the bytes, which the
 * caller was told to expect. */
static int
create_deferred (struct root *r, const char *oid, const void *buf,
                 size_t len)
{
  char path[PATH_MAX], tmp[256];
  int fd, rc = 0;

  fd = tmp_create (r, buf, len, tmp, sizeof tmp);
  if (fd < 0)
    return fd;
  if (len)
    sync_file_range (fd, 0, 0, SYNC_FILE_RANGE_WRITE);
  /* Counted before the name exists, as fd_get counts a create. */
  pthread_mutex_lock (&r->fd_lock);
  dir_created_locked (r);
  pthread_mutex_unlock (&r->fd_lock);
  relpath (path, sizeof path, "obj", oid, NULL);
  if (renameat2 (r->dirfd, tmp, r->dirfd, path, RENAME_NOREPLACE) < 0) {
    rc = -errno;
    if (rc == -EINVAL) {
      /* A file system without RENAME_NOREPLACE: link, then unlink. */
      rc = linkat (r->dirfd, tmp, r->dirfd, path, 0) < 0 ? -errno : 0;
    }
    unlinkat (r->dirfd, tmp, 0);
  }
  if (rc < 0) {
    close (fd);
    if (rc == -EEXIST)
      vbk_set_error ("store: local: create: %s: object exists", oid);
    return rc;
  }
  fd_adopt (r, oid, fd);
  return 0;
}

static int
local_create_excl (void *h, const char *oid, const void *buf, size_t len,
                   unsigned flags)
{
  struct local *l = h;
  struct root *r = l->r;
  char path[PATH_MAX], tmp[256];
  int rc;

  GUARD (r, "create");
  rc = cow_prepare (l, oid, NULL);
  if (rc < 0)
    return rc;
  if (flags & STORE_WRITE_DEFER)
    return create_deferred (r, oid, buf, len);
  rc = write_tmp (r, buf, len, tmp, sizeof tmp);
  if (rc < 0)
    return rc;
  relpath (path, sizeof path, "obj", oid, NULL);
  if (linkat (r->dirfd, tmp, r->dirfd, path, 0) < 0)
    rc = -errno;
  unlinkat (r->dirfd, tmp, 0);
  if (rc == -EEXIST) {
    vbk_set_error ("store: local: create: %s: object exists", oid);
    return rc;
  }
  return rc < 0 ? rc : fsync_dir (r, "obj");
}

static int
local_zero (void *h, const char *oid, uint64_t off, uint64_t len)
{
  struct local *l = h;
  struct root *r = l->r;
  struct fd_entry *e;
  struct stat sb;
  int rc;

  GUARD (r, "zero");
  rc = fd_get (r, oid, false, &e);
  if (rc < 0)
    return rc;
  rc = cow_prepare (l, oid, e);
  if (rc == 0 && fstat (e->fd, &sb) < 0)
    rc = -errno;
  if (rc == 0 && off < (uint64_t) sb.st_size) {
    len = MIN (len, (uint64_t) sb.st_size - off);
    if (fallocate (e->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                   off, len) < 0)
      rc = -errno;
  }
  fd_put (r, e, rc == 0);
  return rc;
}

static int
local_truncate (void *h, const char *oid, uint64_t size)
{
  struct local *l = h;
  struct root *r = l->r;
  struct fd_entry *e;
  int rc;

  GUARD (r, "truncate");
  rc = fd_get (r, oid, false, &e);
  if (rc < 0)
    return rc;
  rc = cow_prepare (l, oid, e);
  if (rc == 0 && ftruncate (e->fd, size) < 0)
    rc = -errno;
  fd_put (r, e, rc == 0);
  return rc;
}

/* Removes meta/OID/ and everything in it. */
static void
remove_meta (struct root *r, const char *oid)
{
  char path[PATH_MAX];
  struct dirent *d;
  DIR *dir;
  int fd;

  relpath (path, sizeof path, "meta", oid, NULL);
  fd = openat (r->dirfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return;
  dir = fdopendir (fd);
  if (dir == NULL) {
    close (fd);
    return;
  }
  while ((d = readdir (dir)) != NULL)
    if (strcmp (d->d_name, ".") && strcmp (d->d_name, ".."))
      unlinkat (fd, d->d_name, 0);
  closedir (dir);
  unlinkat (r->dirfd, path, AT_REMOVEDIR);
}

static int
local_remove (void *h, const char *oid)
{
  struct local *l = h;
  struct root *r = l->r;
  char path[PATH_MAX];
  int rc;

  GUARD (r, "remove");
  if (!head_exists (r, oid))
    return -ENOENT;
  rc = cow_prepare (l, oid, NULL);
  if (rc < 0)
    return rc;
  relpath (path, sizeof path, "obj", oid, NULL);
  fd_forget (r, oid);
  if (unlinkat (r->dirfd, path, 0) < 0)
    return -errno;
  objgen_bump (r);
  remove_meta (r, oid);
  return fsync_dir (r, "obj");
}

static int
local_stat (void *h, const char *oid, uint64_t snap, uint64_t *size)
{
  struct local *l = h;
  struct root *r = l->r;
  char path[PATH_MAX];
  uint64_t clone = 0;
  struct stat sb;
  int rc = 0, sfd = -1;

  FENCE (r, "stat");
  if (snap != STORE_SNAP_HEAD) {
    sfd = snapset_lock (r, oid, LOCK_SH, false);
    rc = snap_source (r, sfd, oid, snap, &clone);
  }
  if (rc == 0) {
    if (clone)
      clone_path (path, sizeof path, oid, clone);
    else
      relpath (path, sizeof path, "obj", oid, NULL);
    if (fstatat (r->dirfd, path, &sb, 0) < 0)
      rc = -errno;
    else
      *size = sb.st_size;
  }
  if (sfd >= 0)
    close (sfd);
  return rc;
}

/* Makes every write that completed before the call durable, on any
 * handle of this root.  Writes are counted (write_gen); a flush notes the
 * count at its start (TARGET) and returns only once a sync pass that
 * began after that point has completed, or with the sticky error:
 *   - sync passes run one at a time (flush_lock); a flush that waited for
 *     another's pass joins it if that pass collected at or after TARGET
 *     (synced_gen >= TARGET), else runs its own;
 *   - a pass pins every dirty file (cached or aside), notes the generation
 *     each was dirty to, syncs them outside fd_lock, then marks each clean
 *     only up to that noted generation, so writes that land meanwhile stay
 *     dirty;
 *   - it then waits for the syncer's batches taken before it collected
 *     (their files were off every list), so their errors are seen;
 *   - any failed sync is sticky (sync_failed_locked): the kernel reports
 *     a writeback error once and may drop the pages, so a later sync of
 *     the same file would succeed without the data. */
static int
local_flush (void *h)
{
  struct local *l = h;
  struct root *r = l->r;
  struct fd_entry *e, **pin = NULL;
  uint64_t target, collect_gen, batch, dir_upto = 0, *gens = NULL;
  size_t n = 0, cap = 0, i;
  struct stat sb;
  bool dir_dirty, gone = false;
  int rc = 0;

  FENCE (r, "flush");
  pthread_mutex_lock (&r->fd_lock);
  target = r->write_gen;
  pthread_mutex_unlock (&r->fd_lock);

  pthread_mutex_lock (&r->flush_lock);
  pthread_mutex_lock (&r->fd_lock);
  if (r->sync_err || r->synced_gen >= target)
    goto out_locked;
  for (int pass = 0; pass < 2; pass++) {
    for (e = pass == 0 ? r->lru_head : r->aside; e; e = e->next) {
      if (!entry_dirty (e))
        continue;
      if (n == cap) {
        size_t ncap = cap ? 2 * cap : 64;
        struct fd_entry **np = realloc (pin, ncap * sizeof *np);
        uint64_t *ng = np ? realloc (gens, ncap * sizeof *ng) : NULL;
        if (np)
          pin = np;
        if (ng == NULL) {
          rc = vbk_errno (-ENOMEM, "store: local: flush");
          goto unpin;
        }
        gens = ng;
        cap = ncap;
      }
      e->refs++;
      pin[n] = e;
      gens[n] = e->dirty_gen;
      n++;
    }
  }
  collect_gen = r->write_gen;
  batch = r->sync_taken;
  dir_dirty = r->dir_dirty;
  dir_upto = r->dir_gen;
  r->dir_dirty = false;
  pthread_mutex_unlock (&r->fd_lock);

  for (i = 0; i < n; i++) {
    /* Unlinked (a removed or replaced object): as in the syncer. */
    if (fstat (pin[i]->fd, &sb) == 0 && sb.st_nlink == 0)
      gone = true;
    else if (fdatasync (pin[i]->fd) < 0) {
      int err = -errno;
      char what[STORE_NAME_MAX + 16];
      snprintf (what, sizeof what, "object %s", pin[i]->oid);
      gens[i] = 0;                      /* stays dirty */
      sync_failed (r, err, what);
    }
  }
  if (dir_dirty || gone) {
    int err = fsync_dir (r, "obj");
    if (err < 0)
      sync_failed (r, err, "obj/");
  }

  pthread_mutex_lock (&r->fd_lock);
  if (dir_dirty && r->sync_err)
    r->dir_dirty = true;
  else if (dir_dirty && dir_upto > r->dir_synced)
    r->dir_synced = dir_upto;
  while (r->sync_done < batch)
    pthread_cond_wait (&r->sync_cond, &r->fd_lock);
  if (r->sync_err == 0 && collect_gen > r->synced_gen)
    r->synced_gen = collect_gen;
unpin:
  for (i = 0; i < n; i++) {
    if (rc == 0 && gens[i] > pin[i]->clean_gen)
      pin[i]->clean_gen = gens[i];
    fd_put_locked (r, pin[i]);
  }
out_locked:
  if (rc == 0 && r->sync_err) {
    rc = r->sync_err;
    vbk_set_error ("%s", r->sync_msg);
  }
  pthread_mutex_unlock (&r->fd_lock);
  pthread_mutex_unlock (&r->flush_lock);
  free (pin);
  free (gens);
  return rc;
}

/* ---- Asynchronous I/O: a queue served by the worker threads ----------- */

struct job {
  struct workq_item wq;
  struct local *l;
  bool write;
  char oid[STORE_NAME_MAX + 1];
  void *buf;
  size_t len;
  uint64_t off, snap;
  unsigned flags;
  store_aio_cb cb;
  void *arg;
};

static void
job_run (struct workq_item *it)
{
  struct job *j = workq_entry (it, struct job, wq);
  ssize_t ret;

  if (j->write)
    ret = local_write (j->l, j->oid, j->buf, j->len, j->off, j->flags);
  else
    ret = local_read (j->l, j->oid, j->buf, j->len, j->off, j->snap);
  j->cb (j->arg, ret);

  pthread_mutex_lock (&j->l->io_lock);
  if (--j->l->inflight == 0)
    pthread_cond_broadcast (&j->l->io_cond);
  pthread_mutex_unlock (&j->l->io_lock);
  free (j);
}

static int
submit (struct local *l, bool write, const char *oid, void *buf, size_t len,
        uint64_t off, uint64_t snap, unsigned flags, store_aio_cb cb,
        void *arg)
{
  struct job *j = malloc (sizeof *j);
  int rc;

  if (j == NULL)
    return -ENOMEM;
  j->l = l;
  j->write = write;
  snprintf (j->oid, sizeof j->oid, "%s", oid);
  j->buf = buf;
  j->len = len;
  j->off = off;
  j->snap = snap;
  j->flags = flags;
  j->cb = cb;
  j->arg = arg;

  pthread_mutex_lock (&l->io_lock);
  l->inflight++;
  pthread_mutex_unlock (&l->io_lock);

  /* Refused only while the store closes, which no caller may do with
   * calls in flight. */
  if ((rc = workq_submit (l->r->aio, &j->wq, job_run)) < 0) {
    pthread_mutex_lock (&l->io_lock);
    if (--l->inflight == 0)
      pthread_cond_broadcast (&l->io_cond);
    pthread_mutex_unlock (&l->io_lock);
    free (j);
    return vbk_errno (rc, "store: local: asynchronous call");
  }
  return 0;
}

/* A small read of a head whose bytes are all in the page cache only
 * copies them: done on the caller's thread, like a small write (the
 * hand-off to a worker and back costs more than the copy).  Whether
 * they are is asked of the kernel itself (RWF_NOWAIT: the read fails
 * with EAGAIN rather than wait for the disk), so a read that has to wait
 * for the disk still goes to the workers, where as many run at once as
 * there are threads, and never holds up the caller's other requests. */
#define INLINE_READ_MAX (64 * 1024)

/* Tries READ inline (see above): returns LEN, 0 if the read must go to
 * a worker, or -errno (a missing object gives -ENOENT, as there). */
static ssize_t
read_cached (struct local *l, const char *oid, void *buf, size_t len,
             uint64_t off)
{
  struct root *r = l->r;
  struct iovec iov = { buf, len };
  struct fd_entry *e;
  ssize_t n;
  int rc;

  if (__atomic_load_n (&r->nowait_off, __ATOMIC_RELAXED))
    return 0;
  FENCE (r, "read");
  rc = fd_get (r, oid, false, &e);
  if (rc < 0)
    return rc;
  n = preadv2 (e->fd, &iov, 1, (off_t) off, RWF_NOWAIT);
  if (n < 0)
    n = -errno;
  fd_put (r, e, false);
  if (n == (ssize_t) len)
    return n;
  if (n == 0) {
    /* At or past the end of the file (a page not in the cache gives
     * EAGAIN, never 0): zeros, as full_pread. */
    memset (buf, 0, len);
    return len;
  }
  if (n == -EOPNOTSUPP || n == -EINVAL) {
    /* No RWF_NOWAIT for this file system or kernel: always hand off. */
    __atomic_store_n (&r->nowait_off, true, __ATOMIC_RELAXED);
    return 0;
  }
  /* EAGAIN (not cached), EINTR, or a short read (part cached, or the
   * end of the file inside the range): the worker reads it all again. */
  if (n > 0 || n == -EAGAIN || n == -EINTR)
    return 0;
  return vbk_errno ((int) n, "store: local: read: %s", oid);
}

static int
local_aio_read (void *h, const char *oid, void *buf, size_t len,
                uint64_t off, uint64_t snap, store_aio_cb cb, void *arg)
{
  ssize_t n;

  if (snap == STORE_SNAP_HEAD && len <= INLINE_READ_MAX && len > 0) {
    n = read_cached (h, oid, buf, len, off);
    if (n != 0) {
      cb (arg, n);
      return 0;
    }
  }
  return submit (h, false, oid, buf, len, off, snap, 0, cb, arg);
}

/* A small write without SYNC only copies into the page cache: cheaper
 * done here than handed to a worker thread (the hand-off's two context
 * switches cost more than the copy), so it completes before we return. */
#define INLINE_WRITE_MAX (64 * 1024)

static int
local_aio_write (void *h, const char *oid, const void *buf, size_t len,
                 uint64_t off, unsigned flags, store_aio_cb cb, void *arg)
{
  if (len <= INLINE_WRITE_MAX && !(flags & STORE_WRITE_SYNC)) {
    cb (arg, local_write (h, oid, buf, len, off, flags));
    return 0;
  }
  return submit (h, true, oid, (void *) buf, len, off, 0, flags, cb, arg);
}

/* ---- Xattrs and omap -------------------------------------------------- */

static void
meta_path (char *buf, size_t len, const char *oid, char kind,
           const char *name)
{
  char eo[ESC_MAX], en[ESC_MAX];

  esc (oid, eo);
  esc (name, en);
  snprintf (buf, len, "meta/%s/%c.%s", eo, kind, en);
}

/* Makes sure OID exists (an empty object) and has a meta directory. */
static int
meta_prepare (struct root *r, const char *oid)
{
  char path[PATH_MAX];
  int fd;

  relpath (path, sizeof path, "obj", oid, NULL);
  fd = openat (r->dirfd, path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return -errno;
  close (fd);
  relpath (path, sizeof path, "meta", oid, NULL);
  if (mkdirat (r->dirfd, path, 0700) < 0 && errno != EEXIST)
    return -errno;
  return 0;
}

/* flock()s meta/OID/.lock; returns the fd or -errno. */
static int
meta_lock (struct root *r, const char *oid)
{
  char path[PATH_MAX];
  int fd;

  relpath (path, sizeof path, "meta", oid, "/.lock");
  fd = openat (r->dirfd, path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return -errno;
  if (flock (fd, LOCK_EX) < 0) {
    close (fd);
    return -EIO;
  }
  return fd;
}

static ssize_t
meta_get (struct local *l, const char *op, const char *oid, char kind,
          const char *name, void *buf, size_t len)
{
  struct root *r = l->r;
  char path[PATH_MAX];
  ssize_t n;

  FENCE (r, op);
  if (!head_exists (r, oid))
    return -ENOENT;
  meta_path (path, sizeof path, oid, kind, name);
  n = read_file (r, path, buf, len);
  if (n == -ENOENT)
    return kind == 'x' ? -ENODATA : -ENOENT;
  return n;
}

static int
meta_set (struct local *l, const char *op, const char *oid, char kind,
          const char *name, const void *val, size_t len)
{
  struct root *r = l->r;
  char path[PATH_MAX];
  int rc, fd;

  GUARD (r, op);
  if (len > 65536) {
    vbk_set_error ("store: local: %s: %s: value too large", op, oid);
    return -E2BIG;
  }
  rc = meta_prepare (r, oid);
  if (rc < 0)
    return rc;
  fd = meta_lock (r, oid);
  if (fd < 0)
    return fd;
  meta_path (path, sizeof path, oid, kind, name);
  rc = replace_file (r, path, val, len);
  close (fd);
  return rc;
}

static int
meta_rm (struct local *l, const char *op, const char *oid, char kind,
         const char *name)
{
  struct root *r = l->r;
  char path[PATH_MAX];
  int rc = 0, fd;

  GUARD (r, op);
  if (!head_exists (r, oid))
    return -ENOENT;
  fd = meta_lock (r, oid);
  if (fd < 0)
    return fd == -ENOENT ? (kind == 'x' ? -ENODATA : -ENOENT) : fd;
  meta_path (path, sizeof path, oid, kind, name);
  if (unlinkat (r->dirfd, path, 0) < 0)
    rc = errno == ENOENT ? (kind == 'x' ? -ENODATA : -ENOENT) : -errno;
  close (fd);
  return rc;
}

static ssize_t
local_xattr_get (void *h, const char *oid, const char *name, void *buf,
                 size_t len)
{
  return meta_get (h, "xattr_get", oid, 'x', name, buf, len);
}

static int
local_xattr_set (void *h, const char *oid, const char *name,
                 const void *val, size_t len)
{
  return meta_set (h, "xattr_set", oid, 'x', name, val, len);
}

static int
local_xattr_rm (void *h, const char *oid, const char *name)
{
  return meta_rm (h, "xattr_rm", oid, 'x', name);
}

static int
local_xattr_cas (void *h, const char *oid, const char *name,
                 const void *old, size_t oldlen, const void *new,
                 size_t newlen)
{
  struct local *l = h;
  struct root *r = l->r;
  char path[PATH_MAX], cur[65537];
  ssize_t n;
  int rc, fd;

  GUARD (r, "xattr_cas");
  if (!head_exists (r, oid))
    return -ENOENT;
  rc = meta_prepare (r, oid);
  if (rc < 0)
    return rc;
  fd = meta_lock (r, oid);
  if (fd < 0)
    return fd;
  meta_path (path, sizeof path, oid, 'x', name);
  n = read_file (r, path, cur, sizeof cur);
  if (n < 0 || (size_t) n != oldlen || memcmp (cur, old, oldlen) != 0) {
    rc = n < 0 && n != -ENOENT ? (int) n : -ECANCELED;
    if (rc == -ECANCELED)
      vbk_set_error ("store: local: xattr_cas: %s: %s: value changed", oid,
                     name);
  }
  else
    rc = replace_file (r, path, new, newlen);
  close (fd);
  return rc;
}

static int
local_omap_set (void *h, const char *oid, const char *key, const void *val,
                size_t len)
{
  return meta_set (h, "omap_set", oid, 'o', key, val, len);
}

/* Several xattrs and keys under one meta lock with one sync pass: every value is
 * written to its temporary file and its writeback started
 * (sync_file_range), then each file is fdatasync'ed (the first waits
 * for the journal commit that covers them all, the others find it done),
 * renamed into place, and meta/OID synced once.  So a crash leaves each
 * key old or new, as meta_set does, for the cost of about one set. */
static int
local_meta_set (void *h, const char *oid, const struct store_meta_set *sets,
                size_t n)
{
  struct local *l = h;
  struct root *r = l->r;
  char path[PATH_MAX], (*tmp)[64] = NULL;
  int *fds = NULL, rc = 0, lfd;
  size_t i, made = 0;

  GUARD (r, "meta_set");
  if ((tmp = calloc (n, sizeof *tmp)) == NULL
      || (fds = calloc (n, sizeof *fds)) == NULL) {
    free (tmp);
    return -ENOMEM;
  }
  if ((rc = meta_prepare (r, oid)) < 0)
    goto out_free;
  if ((lfd = meta_lock (r, oid)) < 0) {
    rc = lfd;
    goto out_free;
  }
  for (made = 0; made < n && rc == 0; made++) {
    static unsigned counter;
    unsigned c = __atomic_fetch_add (&counter, 1, __ATOMIC_RELAXED);

    snprintf (tmp[made], sizeof tmp[made], "tmp/%d.m%u.%lx", (int) getpid (),
              c, (unsigned long) now_mono_ns ());
    fds[made] = openat (r->dirfd, tmp[made],
                        O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fds[made] < 0) {
      rc = -errno;
      break;
    }
    if (sets[made].len
        && full_pwrite (fds[made], sets[made].val, sets[made].len, 0) < 0)
      rc = -EIO;
    else
      sync_file_range (fds[made], 0, 0, SYNC_FILE_RANGE_WRITE);
  }
  for (i = 0; i < made && rc == 0; i++)
    if (fdatasync (fds[i]) < 0)
      rc = -errno;
  for (i = 0; i < made && rc == 0; i++) {
    meta_path (path, sizeof path, oid, sets[i].omap ? 'o' : 'x',
               sets[i].name);
    if (renameat (r->dirfd, tmp[i], r->dirfd, path) < 0)
      rc = -errno;
    else
      tmp[i][0] = '\0';
  }
  if (rc == 0) {
    relpath (path, sizeof path, "meta", oid, NULL);
    rc = fsync_dir (r, path);
  }
  close (lfd);
 out_free:
  for (i = 0; i < made; i++) {
    if (fds[i] >= 0)
      close (fds[i]);
    if (tmp[i][0])
      unlinkat (r->dirfd, tmp[i], 0);
  }
  free (fds);
  free (tmp);
  return rc;
}

static ssize_t
local_omap_get (void *h, const char *oid, const char *key, void *buf,
                size_t len)
{
  return meta_get (h, "omap_get", oid, 'o', key, buf, len);
}

static int
local_omap_rm (void *h, const char *oid, const char *key)
{
  return meta_rm (h, "omap_rm", oid, 'o', key);
}

static int
cmp_str (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

static int
local_omap_list (void *h, const char *oid, const char *after, size_t max,
                 store_omap_cb cb, void *arg)
{
  struct local *l = h;
  struct root *r = l->r;
  char path[PATH_MAX], **keys = NULL, key[STORE_NAME_MAX + 1];
  size_t n = 0, cap = 0, i, done = 0;
  struct dirent *d;
  char *val = NULL;
  DIR *dir;
  int fd, rc = 0;

  FENCE (r, "omap_list");
  if (!head_exists (r, oid))
    return -ENOENT;
  relpath (path, sizeof path, "meta", oid, NULL);
  fd = openat (r->dirfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT ? 0 : -errno;
  dir = fdopendir (fd);
  if (dir == NULL) {
    close (fd);
    return -errno;
  }
  while ((d = readdir (dir)) != NULL) {
    if (strncmp (d->d_name, "o.", 2) != 0)
      continue;
    unesc (d->d_name + 2, key);
    if (strcmp (key, after) <= 0)
      continue;
    if (n == cap) {
      char **nk = realloc (keys, (cap = cap ? cap * 2 : 64) * sizeof *keys);
      if (nk == NULL) {
        rc = -ENOMEM;
        goto out;
      }
      keys = nk;
    }
    keys[n] = strdup (key);
    if (keys[n] == NULL) {
      rc = -ENOMEM;
      goto out;
    }
    n++;
  }
  if (n)
    qsort (keys, n, sizeof *keys, cmp_str);
  val = malloc (65536);
  if (val == NULL) {
    rc = -ENOMEM;
    goto out;
  }
  for (i = 0; i < n && done < max; i++) {
    ssize_t len = meta_get (l, "omap_list", oid, 'o', keys[i], val, 65536);
    if (len == -ENOENT)
      continue;                 /* removed meanwhile */
    if (len < 0) {
      rc = (int) len;
      break;
    }
    done++;
    rc = cb (arg, keys[i], val, (size_t) len);
    if (rc != 0)
      break;
  }
out:
  for (i = 0; i < n; i++)
    free (keys[i]);
  free (keys);
  free (val);
  closedir (dir);
  return rc;
}

/* ---- Locks ------------------------------------------------------------ */

struct lock_rec {
  char client[STORE_CLIENT_MAX];
  char cookie[STORE_NAME_MAX + 1];
  char desc[STORE_NAME_MAX + 1];
  uint64_t expires_ms;
};

/* Lock files exist only while a lock is held (or its holder died with
 * it): whoever leaves a record empty removes the file under its flock.
 * So that a process that opened the file before it was removed does not
 * lock a file nobody else sees, the opener checks, once it holds the
 * flock, that the name still leads to its file, and opens again if not. */

/* Opens and flock()s the lock file of OID/NAME (its relative path in
 * PATH, PATH_MAX bytes), creating it with CREATE; reads its record into
 * REC (rec->client[0] == 0: not held, or expired).  Without CREATE a
 * missing file is -ENOENT. */
static int
lock_open (struct root *r, const char *oid, const char *name, int create,
           char *path, struct lock_rec *rec)
{
  char eo[ESC_MAX], en[ESC_MAX], buf[1024];
  struct stat a, b;
  char *p, *nl;
  ssize_t n;
  int fd, field = 0;

  esc (oid, eo);
  esc (name, en);
  snprintf (path, PATH_MAX, "lock/%s.%s", eo, en);
  for (;;) {
    fd = openat (r->dirfd, path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0),
                 0600);
    if (fd < 0)
      return -errno;
    if (flock (fd, LOCK_EX) < 0) {
      close (fd);
      return -EIO;
    }
    if (fstat (fd, &a) == 0 && fstatat (r->dirfd, path, &b, 0) == 0
        && a.st_ino == b.st_ino && a.st_dev == b.st_dev)
      break;
    /* Removed (or replaced) while we waited: open again. */
    close (fd);
    if (!create && fstatat (r->dirfd, path, &b, 0) < 0 && errno == ENOENT)
      return -ENOENT;
  }
  memset (rec, 0, sizeof *rec);
  n = pread (fd, buf, sizeof buf - 1, 0);
  if (n < 0)
    n = 0;
  buf[n] = '\0';
  for (p = buf; (nl = strchr (p, '\n')) != NULL; p = nl + 1, field++) {
    *nl = '\0';
    switch (field) {
    case 0: snprintf (rec->client, sizeof rec->client, "%s", p); break;
    case 1: snprintf (rec->cookie, sizeof rec->cookie, "%s", p); break;
    case 2: snprintf (rec->desc, sizeof rec->desc, "%s", p); break;
    case 3: rec->expires_ms = strtoull (p, NULL, 10); break;
    }
  }
  if (rec->expires_ms && rec->expires_ms <= now_wall_ms ())
    memset (rec, 0, sizeof *rec);
  return fd;
}

/* Closes a lock file opened by lock_open, removing it first (still under
 * the flock) when its record, as now stored, is empty. */
static void
lock_close (struct root *r, int fd, const char *path,
            const struct lock_rec *rec)
{
  if (rec->client[0] == '\0')
    unlinkat (r->dirfd, path, 0);
  close (fd);
}

static int
lock_store (int fd, const struct lock_rec *rec)
{
  char buf[1024];
  int n = 0;

  if (rec->client[0])
    n = snprintf (buf, sizeof buf, "%s\n%s\n%s\n%llu\n", rec->client,
                  rec->cookie, rec->desc,
                  (unsigned long long) rec->expires_ms);
  if (ftruncate (fd, 0) < 0 || full_pwrite (fd, buf, n, 0) < 0)
    return -EIO;
  return 0;
}

static int
local_lock (void *h, const char *oid, const char *name, const char *cookie,
            const char *desc, uint32_t duration_ms, unsigned flags)
{
  struct local *l = h;
  struct root *r = l->r;
  struct lock_rec rec;
  char path[PATH_MAX];
  int fd, rc;

  GUARD (r, "lock");
  fd = lock_open (r, oid, name, 1, path, &rec);
  if (fd < 0)
    return fd;
  if (rec.client[0]) {
    bool mine = strcmp (rec.client, r->client) == 0
      && strcmp (rec.cookie, cookie) == 0;
    if (!mine && (flags & STORE_LOCK_RENEW)) {
      vbk_set_error ("store: local: lock: %s: renew of a lock not held "
                     "(now held by %s)", oid, rec.client);
      rc = -ENOENT;
    }
    else if (!mine) {
      vbk_set_error ("store: local: lock: %s: held by %s", oid, rec.client);
      rc = -EBUSY;
    }
    else if (!(flags & STORE_LOCK_RENEW))
      rc = -EEXIST;
    else
      rc = 0;
  }
  else if (flags & STORE_LOCK_RENEW) {
    vbk_set_error ("store: local: lock: %s: renew of a lock not held", oid);
    rc = -ENOENT;
  }
  else
    rc = 0;
  if (rc == 0) {
    snprintf (rec.client, sizeof rec.client, "%s", r->client);
    snprintf (rec.cookie, sizeof rec.cookie, "%s", cookie);
    snprintf (rec.desc, sizeof rec.desc, "%s", desc);
    rec.expires_ms = duration_ms ? now_wall_ms () + duration_ms : 0;
    if ((rc = lock_store (fd, &rec)) < 0)
      memset (&rec, 0, sizeof rec);
  }
  lock_close (r, fd, path, &rec);
  return rc;
}

/* Clears the lock if held by CLIENT with COOKIE; -ENOENT if not. */
static int
lock_clear (struct root *r, const char *oid, const char *name,
            const char *client, const char *cookie)
{
  struct lock_rec rec;
  char path[PATH_MAX];
  int fd, rc = -ENOENT;

  fd = lock_open (r, oid, name, 0, path, &rec);
  if (fd < 0)
    return fd;
  if (strcmp (rec.client, client) == 0 && strcmp (rec.cookie, cookie) == 0) {
    memset (&rec, 0, sizeof rec);
    rc = lock_store (fd, &rec);
  }
  lock_close (r, fd, path, &rec);
  return rc;
}

static int
local_unlock (void *h, const char *oid, const char *name, const char *cookie)
{
  struct local *l = h;
  struct root *r = l->r;

  GUARD (r, "unlock");
  return lock_clear (r, oid, name, r->client, cookie);
}

static int
local_lock_break (void *h, const char *oid, const char *name,
                  const char *client, const char *cookie)
{
  struct local *l = h;
  struct root *r = l->r;

  GUARD (r, "lock_break");
  return lock_clear (r, oid, name, client, cookie);
}

static int
local_lock_get (void *h, const char *oid, const char *name,
                struct store_lock_info *info)
{
  struct local *l = h;
  struct root *r = l->r;
  struct lock_rec rec;
  char path[PATH_MAX];
  int fd;

  FENCE (r, "lock_get");
  fd = lock_open (r, oid, name, 0, path, &rec);
  if (fd < 0)
    return fd;
  /* Only looked at: an expired record is cleared by the next lock. */
  close (fd);
  if (rec.client[0] == '\0')
    return -ENOENT;
  snprintf (info->client, sizeof info->client, "%s", rec.client);
  snprintf (info->cookie, sizeof info->cookie, "%s", rec.cookie);
  snprintf (info->desc, sizeof info->desc, "%s", rec.desc);
  info->expires_ms = rec.expires_ms;
  return 0;
}

/* ---- Watch / notify over abstract unix datagram sockets --------------- */

#define NOTIFY_MAGIC 0x76626b4eu      /* "vbkN" */
#define REPLY_MAGIC 0x76626b52u       /* "vbkR" */
#define ADDR_MAX 96
#define MSG_MAX (8192 + 512)

struct notify_msg {
  uint32_t magic;
  uint64_t id;
  char reply_addr[ADDR_MAX];
  uint32_t len;
  char payload[];
};

struct reply_msg {
  uint32_t magic;
  uint64_t id;
  char client[STORE_CLIENT_MAX];
  uint32_t len;
  char data[];
};

struct lwatch {
  struct root *r;
  char oid[STORE_NAME_MAX + 1];
  char addr[ADDR_MAX];
  char reg[PATH_MAX];           /* registration file */
  int sock, stopfd;
  store_watch_cb cb;
  void *arg;
  pthread_t thread;
};

static socklen_t
abstract_addr (struct sockaddr_un *sa, const char *name)
{
  size_t n = strlen (name);

  memset (sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  memcpy (sa->sun_path + 1, name, n);
  return offsetof (struct sockaddr_un, sun_path) + 1 + n;
}

/* Binds a new abstract datagram socket named "vbk.KIND.PID.N.RAND". */
static int
bind_abstract (struct root *r, const char *kind, char *name)
{
  struct sockaddr_un sa;
  socklen_t sl;
  int fd;

  fd = socket (AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  /* Abstract names have no file permissions: any local user can send
   * to them.  With SO_PASSCRED the kernel attaches every sender's
   * credentials, and recv_trusted() drops what another user sent. */
  {
    int one = 1;
    if (setsockopt (fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0) {
      int e = -errno;
      close (fd);
      return e;
    }
  }
  snprintf (name, ADDR_MAX, "vbk.%s.%d.%u.%llx", kind, (int) getpid (),
            __atomic_fetch_add (&r->watch_seq, 1, __ATOMIC_RELAXED),
            (unsigned long long) now_mono_ns ());
  sl = abstract_addr (&sa, name);
  if (bind (fd, (struct sockaddr *) &sa, sl) < 0) {
    int e = -errno;
    close (fd);
    return e;
  }
  return fd;
}

/* Receives one datagram into BUF; returns its length, or -1 if there was
 * none or it came from a user other than ours (or root).  Dropped
 * datagrams are logged at debug level. */
static ssize_t
recv_trusted (int sock, void *buf, size_t len)
{
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE (sizeof (struct ucred))];
  } ctl;
  struct iovec iov = { buf, len };
  struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
                       .msg_control = &ctl, .msg_controllen = sizeof ctl };
  struct cmsghdr *c;
  ssize_t n;

  n = recvmsg (sock, &mh, MSG_DONTWAIT);
  if (n < 0)
    return -1;
  for (c = CMSG_FIRSTHDR (&mh); c; c = CMSG_NXTHDR (&mh, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS
        && c->cmsg_len >= CMSG_LEN (sizeof (struct ucred))) {
      struct ucred cr;
      memcpy (&cr, CMSG_DATA (c), sizeof cr);
      if (cr.uid == geteuid () || cr.uid == 0)
        return n;
      log_debug ("store: local: dropped a datagram from uid %u (pid %d)",
                 (unsigned) cr.uid, (int) cr.pid);
      return -1;
    }
  }
  return -1;                    /* no credentials: not trusted */
}

static void *
watch_thread (void *arg)
{
  struct lwatch *w = arg;
  char *msgbuf = malloc (MSG_MAX), *replybuf = malloc (MSG_MAX);
  struct pollfd pfd[2];
  uint64_t last_fence = now_mono_ns ();

  if (msgbuf == NULL || replybuf == NULL)
    goto out;
  for (;;) {
    pfd[0].fd = w->sock;
    pfd[0].events = POLLIN;
    pfd[1].fd = w->stopfd;
    pfd[1].events = POLLIN;
    if (poll (pfd, 2, 200) < 0 && errno != EINTR)
      break;
    if (pfd[1].revents)
      break;
    if (now_mono_ns () - last_fence > 100000000ull) {
      last_fence = now_mono_ns ();
      if (client_fenced (w->r, w->r->client)) {
        w->cb (w->arg, -ENOTCONN, NULL, 0, NULL, 0, NULL);
        break;
      }
    }
    if (pfd[0].revents & POLLIN) {
      struct notify_msg *m = (struct notify_msg *) msgbuf;
      struct reply_msg *rep = (struct reply_msg *) replybuf;
      struct sockaddr_un sa;
      size_t rlen = 0;
      ssize_t n;

      n = recv_trusted (w->sock, msgbuf, MSG_MAX);
      if (n < (ssize_t) sizeof *m || m->magic != NOTIFY_MAGIC
          || sizeof *m + m->len > (size_t) n)
        continue;
      m->reply_addr[ADDR_MAX - 1] = '\0';
      w->cb (w->arg, 0, m->payload, m->len, rep->data, 4096, &rlen);
      rep->magic = REPLY_MAGIC;
      rep->id = m->id;
      snprintf (rep->client, sizeof rep->client, "%s", w->r->client);
      rep->len = MIN (rlen, 4096);
      sendto (w->sock, rep, sizeof *rep + rep->len, MSG_DONTWAIT,
              (struct sockaddr *) &sa, abstract_addr (&sa, m->reply_addr));
    }
  }
out:
  free (msgbuf);
  free (replybuf);
  return NULL;
}

static int
local_watch (void *h, const char *oid, store_watch_cb cb, void *arg,
             void **out)
{
  struct local *l = h;
  struct root *r = l->r;
  struct lwatch *w;
  char dir[PATH_MAX];
  int fd, rc;

  FENCE (r, "watch");
  w = calloc (1, sizeof *w);
  if (w == NULL)
    return -ENOMEM;
  w->r = r;
  w->cb = cb;
  w->arg = arg;
  w->stopfd = -1;
  snprintf (w->oid, sizeof w->oid, "%s", oid);
  w->sock = bind_abstract (r, "w", w->addr);
  if (w->sock < 0) {
    rc = w->sock;
    goto fail;
  }
  w->stopfd = eventfd (0, EFD_CLOEXEC);
  if (w->stopfd < 0) {
    rc = -errno;
    goto fail;
  }
  relpath (dir, sizeof dir, "watch", oid, NULL);
  if (mkdirat (r->dirfd, dir, 0700) < 0 && errno != EEXIST) {
    rc = -errno;
    goto fail;
  }
  snprintf (w->reg, sizeof w->reg, "%s/%s", dir, w->addr);
  fd = openat (r->dirfd, w->reg, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    rc = -errno;
    goto fail;
  }
  close (fd);
  if (pthread_create (&w->thread, NULL, watch_thread, w) != 0) {
    unlinkat (r->dirfd, w->reg, 0);
    rc = -EAGAIN;
    goto fail;
  }
  __atomic_add_fetch (&r->refs, 1, __ATOMIC_SEQ_CST);
  *out = w;
  return 0;

fail:
  if (w->sock >= 0)
    close (w->sock);
  if (w->stopfd >= 0)
    close (w->stopfd);
  free (w);
  return rc;
}

static void
local_unwatch (void *h, void *wp)
{
  struct lwatch *w = wp;
  uint64_t one = 1;

  unlinkat (w->r->dirfd, w->reg, 0);
  if (write (w->stopfd, &one, sizeof one) < 0)
    abort ();
  pthread_join (w->thread, NULL);
  close (w->sock);
  close (w->stopfd);
  if (__atomic_sub_fetch (&w->r->refs, 1, __ATOMIC_SEQ_CST) == 0)
    root_free (w->r);
  free (w);
}

static int
local_notify (void *h, const char *oid, const void *payload, size_t len,
              uint32_t timeout_ms, struct store_notify_reply **replies,
              size_t *nreplies, size_t *timed_out)
{
  struct local *l = h;
  struct root *r = l->r;
  char dir[PATH_MAX], addr[ADDR_MAX], *msgbuf;
  struct notify_msg *m;
  struct reply_msg *rep;
  struct dirent *d;
  size_t sent = 0, got = 0;
  uint64_t id, deadline;
  DIR *dp;
  int sock, dfd, rc = 0;

  FENCE (r, "notify");
  if (len > 8192) {
    vbk_set_error ("store: local: notify: %s: payload too large", oid);
    return -E2BIG;
  }
  msgbuf = malloc (MSG_MAX);
  if (msgbuf == NULL)
    return -ENOMEM;
  sock = bind_abstract (r, "n", addr);
  if (sock < 0) {
    free (msgbuf);
    return sock;
  }
  id = now_mono_ns () ^ ((uint64_t) getpid () << 40);
  m = (struct notify_msg *) msgbuf;
  memset (m, 0, sizeof *m);
  m->magic = NOTIFY_MAGIC;
  m->id = id;
  snprintf (m->reply_addr, sizeof m->reply_addr, "%s", addr);
  m->len = len;
  memcpy (m->payload, payload, len);

  relpath (dir, sizeof dir, "watch", oid, NULL);
  dfd = openat (r->dirfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  dp = dfd >= 0 ? fdopendir (dfd) : NULL;
  while (dp && (d = readdir (dp)) != NULL) {
    struct sockaddr_un sa;
    if (d->d_name[0] == '.')
      continue;
    if (sendto (sock, m, sizeof *m + len, 0, (struct sockaddr *) &sa,
                abstract_addr (&sa, d->d_name)) < 0) {
      if (errno == ECONNREFUSED || errno == ENOENT)
        unlinkat (dfd, d->d_name, 0);     /* its process is gone */
      continue;
    }
    sent++;
  }
  if (dp)
    closedir (dp);
  else if (dfd >= 0)
    close (dfd);

  if (sent == 0 && !head_exists (r, oid)) {
    rc = -ENOENT;
    goto out;
  }
  *replies = calloc (sent ? sent : 1, sizeof **replies);
  if (*replies == NULL) {
    rc = -ENOMEM;
    goto out;
  }
  deadline = now_mono_ns () + (uint64_t) timeout_ms * 1000000;
  rep = (struct reply_msg *) msgbuf;
  while (got < sent) {
    uint64_t now = now_mono_ns ();
    struct pollfd pfd = { .fd = sock, .events = POLLIN };
    ssize_t n;

    if (now >= deadline)
      break;
    if (poll (&pfd, 1, (int) ((deadline - now) / 1000000) + 1) <= 0)
      continue;
    n = recv_trusted (sock, msgbuf, MSG_MAX);
    if (n < (ssize_t) sizeof *rep || rep->magic != REPLY_MAGIC
        || rep->id != id || sizeof *rep + rep->len > (size_t) n)
      continue;
    rep->client[STORE_CLIENT_MAX - 1] = '\0';
    snprintf ((*replies)[got].client, STORE_CLIENT_MAX, "%s", rep->client);
    (*replies)[got].data = malloc (rep->len ? rep->len : 1);
    if ((*replies)[got].data == NULL) {
      rc = -ENOMEM;
      break;
    }
    memcpy ((*replies)[got].data, rep->data, rep->len);
    (*replies)[got].len = rep->len;
    got++;
  }
  *nreplies = got;
  *timed_out = sent - got;
out:
  close (sock);
  free (msgbuf);
  return rc;
}

/* ---- Fencing ---------------------------------------------------------- */

/* How long store_fence waits for the fenced client's changes in flight
 * before it concludes the client is stopped or stuck inside one. */
#define FENCE_WAIT_MS 5000

/* Tries to take LOCKFD exclusively for up to MS; returns whether it did. */
static bool
flock_ex_within (int lockfd, uint64_t ms)
{
  uint64_t deadline = now_mono_ns () + ms * 1000000;

  for (;;) {
    if (flock (lockfd, LOCK_EX | LOCK_NB) == 0)
      return true;
    if (errno != EWOULDBLOCK && errno != EINTR)
      return false;
    if (now_mono_ns () >= deadline)
      return false;
    usleep (5000);
  }
}

/* Parses "local.HOST.PID.START.N" into HOST, PID and START. */
static bool
parse_client (const char *client, char *host, size_t hlen, int *pid,
              unsigned long long *start)
{
  const char *p = client + strlen (client), *dots[3];
  unsigned n;
  int i;

  if (strncmp (client, "local.", 6) != 0)
    return false;
  for (i = 0; i < 3; i++) {
    while (p > client + 6 && *--p != '.')
      ;
    if (*p != '.')
      return false;
    dots[i] = p;                /* dots[2] ends HOST */
  }
  if (sscanf (dots[2] + 1, "%d.%llu.%u", pid, start, &n) != 3
      || (size_t) (dots[2] - (client + 6)) >= hlen)
    return false;
  memcpy (host, client + 6, dots[2] - (client + 6));
  host[dots[2] - (client + 6)] = '\0';
  return true;
}

/* Fencing on the local store (the argument the DESIGN paragraph refers
 * to).  A change of client C runs under a shared flock() of C's change
 * lock (fenced/C.lock; guard_enter) and, holding it, compares the shared
 * fence generation with the one C last saw, re-reading fenced/C when it
 * moved.  store_fence (C):
 *   1. writes fenced/C durably: "boot BOOT_ID UNTIL" in CLOCK_BOOTTIME ms,
 *      so the fence neither lapses nor lasts longer when the wall clock
 *      is set, and it lapses with the boot (no process of C survives it);
 *   2. bumps the generation (atomically, in the shared mmap()ed page);
 *   3. takes C.lock exclusively, waiting at most FENCE_WAIT_MS (never
 *      forever: a process stopped inside a change holds its shared lock).
 * A change of C that takes its lock after step 2 sees the new generation,
 * reads the record, and fails with -ESHUTDOWN.  A change that was in
 * flight at step 2 holds the lock, so when step 3 succeeds every such
 * change has ended: nothing of C lands after store_fence returns.  If step
 * 3 times out, C is stopped (SIGSTOP, a debugger) or stuck inside a change
 * that could still land whenever it resumes.  C's id names its process
 * (host, pid, start time): on this host, and if that process still runs
 * and is not us, it is killed (SIGKILL also ends a stopped process, and
 * its locks go with it), and step 3 is retried, again bounded.  Otherwise
 * the fence fails with -ETIMEDOUT and the caller must not proceed.  The
 * record stays either way, so C stays fenced. */
static int
local_fence (void *h, const char *client, uint32_t expire_s)
{
  struct local *l = h;
  struct root *r = l->r;
  char path[PATH_MAX], lock[PATH_MAX], buf[128], host[64] = "", me[64] = "";
  unsigned long long start;
  const char *env = getenv ("VBK_LOCAL_FENCE_WAIT_MS");
  uint64_t wait_ms = env && atoi (env) > 0 ? (uint64_t) atoi (env)
                                           : FENCE_WAIT_MS;
  int n, fd, rc, pid;

  FENCE (r, "fence");
  relpath (path, sizeof path, "fenced", client, NULL);
  n = snprintf (buf, sizeof buf, "boot %s %llu\n", boot_id (),
                (unsigned long long) (now_boot_ms ()
                                      + (uint64_t) expire_s * 1000));
  rc = replace_file (r, path, buf, n);
  if (rc < 0)
    return vbk_errno (rc, "store: local: fence: %s: recording the fence",
                      client);
  __atomic_add_fetch (r->fencegen, 1, __ATOMIC_SEQ_CST);

  relpath (lock, sizeof lock, "fenced", client, ".lock");
  fd = openat (r->dirfd, lock, O_RDWR | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT ? 0 : -errno;  /* no change ever ran */
  if (flock_ex_within (fd, wait_ms)) {
    close (fd);
    return 0;
  }

  gethostname (me, sizeof me - 1);
  if (!parse_client (client, host, sizeof host, &pid, &start)
      || strcmp (host, me) != 0 || pid == (int) getpid ()
      || start == 0 || proc_start (pid) != start) {
    close (fd);
    return vbk_errno (-ETIMEDOUT, "store: local: fence: %s: a change of "
                      "that client has been in flight for more than %llu "
                      "ms and its process cannot be stopped from here",
                      client, (unsigned long long) wait_ms);
  }
  log_warn ("store: local: fence: %s: a change has been in flight for "
            "more than %llu ms (the process is stopped or stuck); killing "
            "process %d", client, (unsigned long long) wait_ms, pid);
  if (kill (pid, SIGKILL) < 0 && errno != ESRCH) {
    rc = vbk_errno (-errno, "store: local: fence: %s: kill %d", client, pid);
    close (fd);
    return rc;
  }
  if (!flock_ex_within (fd, wait_ms)) {
    close (fd);
    return vbk_errno (-ETIMEDOUT, "store: local: fence: %s: its change "
                      "lock is still held after killing process %d",
                      client, pid);
  }
  close (fd);
  return 0;
}

/* ---- Snapshots -------------------------------------------------------- */

static int
local_snap_create (void *h, uint64_t *snap)
{
  struct local *l = h;
  struct root *r = l->r;
  char buf[32], path[64];
  uint64_t next = 1;
  ssize_t n;
  int fd, rc;

  GUARD (r, "snap_create");
  fd = openat (r->dirfd, "snaps/next", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return -errno;
  if (flock (fd, LOCK_EX) < 0) {
    close (fd);
    return -EIO;
  }
  n = pread (fd, buf, sizeof buf - 1, 0);
  if (n > 0) {
    buf[n] = '\0';
    next = strtoull (buf, NULL, 10);
  }
  n = snprintf (buf, sizeof buf, "%llu\n", (unsigned long long) next + 1);
  rc = ftruncate (fd, 0) == 0 && full_pwrite (fd, buf, n, 0) == 0
    && fdatasync (fd) == 0 ? 0 : -EIO;
  close (fd);
  if (rc < 0)
    return rc;
  snprintf (path, sizeof path, "snaps/live/%016llx",
            (unsigned long long) next);
  rc = replace_file (r, path, "", 0);
  if (rc == 0)
    *snap = next;
  return rc;
}

/* Is any live snapshot in (FROM, TO]? */
static bool
live_snap_in (struct root *r, uint64_t from, uint64_t to)
{
  struct dirent *d;
  bool found = false;
  DIR *dp;
  int fd;

  fd = openat (r->dirfd, "snaps/live", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  dp = fd >= 0 ? fdopendir (fd) : NULL;
  while (dp && !found && (d = readdir (dp)) != NULL) {
    uint64_t id;
    if (d->d_name[0] == '.')
      continue;
    id = strtoull (d->d_name, NULL, 16);
    found = id > from && id <= to;
  }
  if (dp)
    closedir (dp);
  else if (fd >= 0)
    close (fd);
  return found;
}

/* Drops clones no live snapshot needs, in every snapset. */
static int
trim_clones (struct root *r)
{
  char oid[STORE_NAME_MAX + 1], path[PATH_MAX];
  struct snapset ss;
  struct dirent *d;
  size_t i, j;
  DIR *dp;
  int dfd, fd;

  dfd = openat (r->dirfd, "snapset", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  dp = dfd >= 0 ? fdopendir (dfd) : NULL;
  if (dp == NULL)
    return -errno;
  while ((d = readdir (dp)) != NULL) {
    bool changed = false;
    if (d->d_name[0] == '.')
      continue;
    unesc (d->d_name, oid);
    fd = snapset_lock (r, oid, LOCK_EX, false);
    if (fd < 0)
      continue;
    if (snapset_read (fd, &ss) == 0) {
      for (i = j = 0; i < ss.n; i++) {
        if (live_snap_in (r, ss.clones[i].from, ss.clones[i].id))
          ss.clones[j++] = ss.clones[i];
        else {
          clone_path (path, sizeof path, oid, ss.clones[i].id);
          unlinkat (r->dirfd, path, 0);
          changed = true;
        }
      }
      ss.n = j;
      if (ss.n == 0 && !head_exists (r, oid))
        unlinkat (dfd, d->d_name, 0);
      else if (changed)
        snapset_write (fd, &ss);
    }
    close (fd);
  }
  closedir (dp);
  return 0;
}

static int
local_snap_remove (void *h, uint64_t snap)
{
  struct local *l = h;
  struct root *r = l->r;
  char path[64];

  GUARD (r, "snap_remove");
  snprintf (path, sizeof path, "snaps/live/%016llx",
            (unsigned long long) snap);
  if (unlinkat (r->dirfd, path, 0) < 0) {
    if (errno == ENOENT)
      vbk_set_error ("store: local: snap_remove: no snapshot %llu",
                     (unsigned long long) snap);
    return -errno;
  }
  return trim_clones (r);
}

static int
local_set_snap_context (void *h, uint64_t seq, const uint64_t *snaps,
                        size_t n)
{
  struct local *l = h;
  uint64_t *copy = NULL;

  if (n) {
    copy = malloc (n * sizeof *copy);
    if (copy == NULL)
      return -ENOMEM;
    memcpy (copy, snaps, n * sizeof *copy);
  }
  pthread_rwlock_wrlock (&l->snapc_lock);
  free (l->snaps);
  l->snaps = copy;
  l->nsnaps = n;
  l->seq = seq;
  pthread_rwlock_unlock (&l->snapc_lock);
  /* The cached "seen" seqs stay valid: they only grow. */
  return 0;
}

static int
local_snap_rollback (void *h, const char *oid, uint64_t snap)
{
  struct local *l = h;
  struct root *r = l->r;
  char path[64];
  uint64_t size;
  void *buf;
  int rc;

  FENCE (r, "snap_rollback");
  snprintf (path, sizeof path, "snaps/live/%016llx",
            (unsigned long long) snap);
  if (faccessat (r->dirfd, path, F_OK, 0) < 0) {
    vbk_set_error ("store: local: snap_rollback: no snapshot %llu",
                   (unsigned long long) snap);
    return -ENOENT;
  }
  rc = local_stat (l, oid, snap, &size);
  if (rc == -ENOENT) {
    rc = local_remove (l, oid);
    return rc == -ENOENT ? 0 : rc;
  }
  if (rc < 0)
    return rc;
  buf = malloc (size ? size : 1);
  if (buf == NULL)
    return -ENOMEM;
  rc = (int) local_read (l, oid, buf, size, 0, snap);
  if (rc >= 0)
    rc = local_write_full (l, oid, buf, size, STORE_WRITE_SYNC);
  free (buf);
  return rc;
}

const struct store_ops store_local_ops = {
  .name = "local",
  .open = local_open,
  .clone = local_clone,
  .close = local_close,
  .client_id = local_client_id,
  .read = local_read,
  .write = local_write,
  .write_full = local_write_full,
  .create_excl = local_create_excl,
  .zero = local_zero,
  .truncate = local_truncate,
  .remove = local_remove,
  .stat = local_stat,
  .flush = local_flush,
  .aio_read = local_aio_read,
  .aio_write = local_aio_write,
  .xattr_get = local_xattr_get,
  .xattr_set = local_xattr_set,
  .xattr_rm = local_xattr_rm,
  .xattr_cas = local_xattr_cas,
  .omap_set = local_omap_set,
  .omap_get = local_omap_get,
  .omap_rm = local_omap_rm,
  .omap_list = local_omap_list,
  .lock = local_lock,
  .unlock = local_unlock,
  .lock_break = local_lock_break,
  .lock_get = local_lock_get,
  .watch = local_watch,
  .unwatch = local_unwatch,
  .notify = local_notify,
  .fence = local_fence,
  .snap_create = local_snap_create,
  .snap_remove = local_snap_remove,
  .set_snap_context = local_set_snap_context,
  .snap_rollback = local_snap_rollback,
  .meta_set = local_meta_set,
};
