/* SPDX-License-Identifier: MIT
 *
 * image.c - thin disk images on an object store (layout in image.h):
 * names, the header, create, remove, stat, list, resize, open and close.
 * The object map is in objmap.c, the change log in changelog.c, I/O in
 * io.c, snapshots in snap.c, changed-block tracking in diff.c.
 *
 * DESIGN
 * - The header object's data holds what never changes after creation
 *   (name, object size, features), as "key=value" lines; the size is the
 *   xattr "size", changed only by compare-and-set so two resizes cannot
 *   interleave.  The name object vbk_name.NAME (created exclusively)
 *   claims a name and holds the id; vbk_directory's omap lists images.
 * - A shrink records the new size in the header xattr "min_size"; the
 *   next snapshot moves it into the log as a "from object N up" entry.
 * - A resize of an open image swaps the in-memory map (image_refresh);
 *   old maps are kept until image_close so lock-free readers never see
 *   freed memory.
 */
#include <sys/random.h>
#include <unistd.h>

#include "internal.h"

/* ---- Names and header ------------------------------------------------- */

int
image_name_check (const char *name)
{
  size_t n = name ? strlen (name) : 0, i;

  if (n == 0 || n > IMAGE_NAME_MAX || name[0] == '.' || name[0] == '-')
    goto bad;
  for (i = 0; i < n; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
          || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'
          || c == '+'))
      goto bad;
  }
  return 0;
bad:
  vbk_set_error ("invalid image name '%s': use 1-%d of A-Z a-z 0-9 . _ + -, "
                 "not starting with '.' or '-'", name ? name : "",
                 IMAGE_NAME_MAX);
  return -EINVAL;
}

void
image_data_oid (const char *id, uint64_t objno, char *buf, size_t len)
{
  snprintf (buf, len, "vbk_data.%s.%016" PRIx64, id, objno);
}

static void
name_oid (const char *name, char *buf, size_t len)
{
  snprintf (buf, len, "vbk_name.%s", name);
}

void
image_header_oid (const char *id, char *buf, size_t len)
{
  snprintf (buf, len, "vbk_header.%s", id);
}

static void
map_oid (const char *id, char *buf, size_t len)
{
  snprintf (buf, len, "vbk_object_map.%s", id);
}

void
image_changes_oid (const char *id, char *buf, size_t len)
{
  snprintf (buf, len, "vbk_changes.%s", id);
}

/* Changes recorded for the interval that ends at snapshot SNAPID (0: the
 * live interval) by snapshots removed since: when a snapshot goes, its
 * interval's changes move here, into the next newer interval, so
 * changed-block tracking never loses them.  Same format as the log. */
void
image_merged_oid (const char *id, uint64_t snapid, char *buf, size_t len)
{
  if (snapid)
    snprintf (buf, len, "vbk_changes.%s.merged.%016" PRIx64, id, snapid);
  else
    snprintf (buf, len, "vbk_changes.%s.merged.head", id);
}
int
image_note_shrink (struct store *st, const char *hdr, uint64_t size)
{
  char buf[32];
  ssize_t got;

  got = store_xattr_get (st, hdr, "min_size", buf, sizeof buf - 1);
  if (got > 0) {
    buf[got] = '\0';
    if (buf[0] != '-' && strtoull (buf, NULL, 10) <= size)
      return 0;
  }
  else if (got < 0 && got != -ENODATA && got != -ENOENT)
    return (int) got;
  snprintf (buf, sizeof buf, "%" PRIu64, size);
  return store_xattr_set (st, hdr, "min_size", buf, strlen (buf));
}

/* The size recorded by image_note_shrink since the last snapshot, or
 * UINT64_MAX. */
int
image_shrunk_to (struct store *st, const char *hdr, uint64_t *size)
{
  char buf[32];
  ssize_t got;

  *size = UINT64_MAX;
  got = store_xattr_get (st, hdr, "min_size", buf, sizeof buf - 1);
  if (got == -ENODATA || got == -ENOENT)
    return 0;
  if (got < 0)
    return (int) got;
  buf[got] = '\0';
  if (buf[0] != '-')                    /* "-": taken by a snapshot */
    *size = strtoull (buf, NULL, 10);
  return 0;
}

uint64_t
image_objects_for (uint64_t size, uint32_t object_size)
{
  return (size + object_size - 1) / object_size;
}

/* Finds NAME's id.  -ENOENT with a message if there is no such image. */
int
image_lookup_id (struct store *st, const char *name, char *id, size_t len)
{
  char oid[IMAGE_NAME_MAX + 16];
  ssize_t n;

  if (image_name_check (name) < 0)
    return -EINVAL;
  name_oid (name, oid, sizeof oid);
  n = store_read (st, oid, id, len - 1, 0, STORE_SNAP_HEAD);
  if (n == -ENOENT) {
    vbk_set_error ("image '%s' does not exist", name);
    return -ENOENT;
  }
  if (n < 0)
    return (int) n;
  id[len - 1] = '\0';
  id[strcspn (id, "\n")] = '\0';
  if (id[0] == '\0') {
    vbk_set_error ("image '%s': name object is empty", name);
    return -EIO;
  }
  return 0;
}

int
image_read_size (struct store *st, const char *hdr, uint64_t *size, char *raw,
                 size_t rawlen)
{
  char buf[32];
  ssize_t n;

  n = store_xattr_get (st, hdr, "size", buf, sizeof buf - 1);
  if (n < 0)
    return (int) n;
  buf[MIN ((size_t) n, sizeof buf - 1)] = '\0';
  *size = strtoull (buf, NULL, 10);
  if (raw)
    snprintf (raw, rawlen, "%s", buf);
  return 0;
}

#define STATE_IMPORTING "importing"
#define STATE_REMOVING "removing"

/* The header's state xattr into INFO (absent: a normal image). */
static int
read_state (struct store *st, const char *hdr, struct image_info *info)
{
  char buf[160];
  ssize_t n;

  info->state = IMAGE_STATE_OK;
  info->state_detail[0] = '\0';
  n = store_xattr_get (st, hdr, "state", buf, sizeof buf - 1);
  if (n == -ENODATA)
    return 0;
  if (n < 0)
    return (int) n;
  buf[n] = '\0';
  if (strncmp (buf, STATE_IMPORTING, strlen (STATE_IMPORTING)) == 0) {
    const char *detail = buf + strlen (STATE_IMPORTING);
    info->state = IMAGE_STATE_IMPORTING;
    snprintf (info->state_detail, sizeof info->state_detail, "%s",
              detail + (*detail == ' '));
  }
  else if (strcmp (buf, STATE_REMOVING) == 0)
    info->state = IMAGE_STATE_REMOVING;
  else {
    vbk_set_error ("image %s: unknown state '%s' in the header (written by "
                   "a newer vbk?)", info->id, buf);
    return -EINVAL;
  }
  return 0;
}

/* Reads the header of image ID into INFO (name, id, size, object size,
 * features, state). */
int
image_read_header (struct store *st, const char *id, struct image_info *info)
{
  char hdr[64], buf[HEADER_MAX], *line, *save;
  uint64_t objsize = 0, format = 0;
  ssize_t n;
  int r;

  image_header_oid (id, hdr, sizeof hdr);
  n = store_read (st, hdr, buf, sizeof buf - 1, 0, STORE_SNAP_HEAD);
  if (n < 0)
    return (int) n;
  buf[sizeof buf - 1] = '\0';
  memset (info, 0, sizeof *info);
  snprintf (info->id, sizeof info->id, "%s", id);
  for (line = strtok_r (buf, "\n", &save); line;
       line = strtok_r (NULL, "\n", &save)) {
    if (strncmp (line, "format=", 7) == 0)
      format = strtoull (line + 7, NULL, 10);
    else if (strncmp (line, "name=", 5) == 0)
      snprintf (info->name, sizeof info->name, "%s", line + 5);
    else if (strncmp (line, "object_size=", 12) == 0)
      objsize = strtoull (line + 12, NULL, 10);
    else if (strncmp (line, "features=", 9) == 0)
      info->features = strtoull (line + 9, NULL, 10);
  }
  if (!is_power_of_2 (objsize) || objsize < IMAGE_OBJECT_SIZE_MIN
      || objsize > IMAGE_OBJECT_SIZE_MAX) {
    vbk_set_error ("image %s: corrupt header (object size %" PRIu64 ")", id,
                   objsize);
    return -EIO;
  }
  if (format > IMAGE_FORMAT) {
    vbk_set_error ("image %s: header format %" PRIu64 " is newer than this "
                   "vbk reads (%d): upgrade vbk", id, format, IMAGE_FORMAT);
    return -EINVAL;
  }
  info->object_size = (uint32_t) objsize;
  info->format = (unsigned) format;
  r = image_read_size (st, hdr, &info->size, NULL, 0);
  if (r < 0)
    return r;
  return read_state (st, hdr, info);
}

static int
count_one (void *arg, uint64_t objno)
{
  (void) objno;
  ++*(uint64_t *) arg;
  return 0;
}

/* Counts the allocated entries of the stored object map: reads in
 * proportion to what is allocated (format 3; older formats read the
 * whole map in windows). */
static int
count_allocated (struct store *st, const struct image_info *info,
                 uint64_t *count)
{
  char moid[64];

  *count = 0;
  map_oid (info->id, moid, sizeof moid);
  return image_map_scan (st, moid, info->format, STORE_SNAP_HEAD, 0,
                         image_objects_for (info->size, info->object_size),
                         NULL, count_one, count);
}

/* ---- Create, remove, stat, list, resize ------------------------------- */

/* Checks that SIZE bytes in objects of OBJECT_SIZE stay within
 * IMAGE_OBJECTS_MAX objects. */
static int
check_objects (uint64_t size, uint32_t object_size)
{
  if (image_objects_for (size, object_size) > IMAGE_OBJECTS_MAX) {
    vbk_set_error ("invalid image size %" PRIu64 ": more than %" PRIu64
                   " objects of %" PRIu32 " bytes (at most %" PRIu64
                   " bytes; use a larger --object-size)", size,
                   IMAGE_OBJECTS_MAX, object_size,
                   IMAGE_OBJECTS_MAX * object_size);
    return -EINVAL;
  }
  return 0;
}

/* Creates image NAME; with STATE (an xattr value) not NULL, marked so
 * before it is listed. */
static int
create_common (struct store *st, const char *name, uint64_t size,
               uint32_t object_size, const char *state)
{
  char id[17], oid[IMAGE_NAME_MAX + 16], hdr[64], moid[64], buf[HEADER_MAX];
  char sizebuf[32];
  uint8_t rnd[8];
  int r, n;

  if (image_name_check (name) < 0)
    return -EINVAL;
  if (object_size == 0)
    object_size = IMAGE_OBJECT_SIZE_DEFAULT;
  if (!is_power_of_2 (object_size) || object_size < IMAGE_OBJECT_SIZE_MIN
      || object_size > IMAGE_OBJECT_SIZE_MAX) {
    vbk_set_error ("invalid object size %" PRIu32 ": must be a power of two "
                   "from 64K to 32M", object_size);
    return -EINVAL;
  }
  if (size == 0 || size > IMAGE_SIZE_MAX) {
    vbk_set_error ("invalid image size %" PRIu64 ": must be from 1 byte to "
                   "1 PiB", size);
    return -EINVAL;
  }
  if (check_objects (size, object_size) < 0)
    return -EINVAL;
  if (getrandom (rnd, sizeof rnd, 0) != sizeof rnd)
    return vbk_errno (-errno, "image: create: getrandom");
  snprintf (id, sizeof id, "%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0],
            rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);

  /* Claim the name first: two creators of one name cannot both win. */
  name_oid (name, oid, sizeof oid);
  r = store_create_excl (st, oid, id, strlen (id), STORE_WRITE_SYNC);
  if (r == -EEXIST) {
    vbk_set_error ("image '%s' already exists", name);
    return r;
  }
  if (r < 0)
    return r;

  image_header_oid (id, hdr, sizeof hdr);
  map_oid (id, moid, sizeof moid);
  n = snprintf (buf, sizeof buf, "format=%d\nname=%s\nobject_size=%" PRIu32
                "\nfeatures=0\n", IMAGE_FORMAT, name, object_size);
  snprintf (sizebuf, sizeof sizebuf, "%" PRIu64, size);
  if ((r = store_create_excl (st, hdr, buf, n, STORE_WRITE_SYNC)) < 0
      || (state && (r = store_xattr_set (st, hdr, "state", state,
                                         strlen (state))) < 0)
      || (r = store_xattr_set (st, hdr, "size", sizebuf,
                               strlen (sizebuf))) < 0
      || (r = store_create_excl (st, moid, "", 0, STORE_WRITE_SYNC)) < 0
      || (r = store_omap_set (st, DIRECTORY_OID, name, id, strlen (id))) < 0) {
    vbk_error_keep ();
    store_remove (st, moid);
    store_remove (st, hdr);
    store_remove (st, oid);
    vbk_error_unkeep ();
    return vbk_error_prepend (r, "image: create '%s': ", name);
  }
  return 0;
}

int
image_create (struct store *st, const char *name, uint64_t size,
              uint32_t object_size)
{
  return create_common (st, name, size, object_size, NULL);
}

int
image_create_incomplete (struct store *st, const char *name, uint64_t size,
                         uint32_t object_size)
{
  char state[160], host[64] = "";

  gethostname (host, sizeof host - 1);
  snprintf (state, sizeof state, STATE_IMPORTING " %s %ld %" PRIu64,
            host[0] ? host : "-", (long) getpid (), now_wall_ms ());
  return create_common (st, name, size, object_size, state);
}

int
image_set_complete (struct image *img)
{
  int r = image_check_writable (img, "complete");

  if (r < 0)
    return r;
  r = store_xattr_rm (img->st, img->hdr_oid, "state");
  if (r == -ENODATA)
    r = 0;
  if (r == 0)
    img->info.state = IMAGE_STATE_OK;
  return r;
}

int
image_stat (struct store *st, const char *name, struct image_info *info)
{
  char id[32];
  int r;

  r = image_lookup_id (st, name, id, sizeof id);
  if (r < 0)
    return r;
  r = image_read_header (st, id, info);
  if (r == -ENOENT)
    vbk_set_error ("image '%s' does not exist (only its name is left: "
                   "'vbk image rm' removes it)", name);
  return r;
}

int
image_count_objects (struct store *st, const char *name, uint64_t *count)
{
  struct image_info info;
  int r;

  r = image_stat (st, name, &info);
  if (r == 0)
    r = count_allocated (st, &info, count);
  return r;
}

struct list_ctx {
  struct store *st;
  struct image_info *v;
  size_t n, cap;
  int err;
};

static int
list_one (void *arg, const char *key, const void *val, size_t len)
{
  struct list_ctx *c = arg;
  char id[32];
  int r;

  if (c->n == c->cap) {
    struct image_info *nv;
    c->cap = c->cap ? 2 * c->cap : 16;
    nv = realloc (c->v, c->cap * sizeof *nv);
    if (nv == NULL)
      return -ENOMEM;
    c->v = nv;
  }
  snprintf (id, sizeof id, "%.*s", (int) MIN (len, sizeof id - 1),
            (const char *) val);
  r = image_read_header (c->st, id, &c->v[c->n]);
  if (r == -ENOENT)
    return 0;                   /* removed meanwhile */
  if (r < 0)
    return r;
  c->n++;
  return 0;
}

int
image_list (struct store *st, struct image_info **list, size_t *n)
{
  struct list_ctx c = { .st = st };
  char after[IMAGE_NAME_MAX + 1] = "";
  size_t before;
  int r;

  /* Walk in pages, so a big directory needs no big reply. */
  do {
    before = c.n;
    r = store_omap_list (st, DIRECTORY_OID, after, 256, list_one, &c);
    if (r == -ENOENT) {
      r = 0;                    /* no image was ever created */
      break;
    }
    if (r < 0) {
      free (c.v);
      return r;
    }
    if (c.n > before)
      snprintf (after, sizeof after, "%s", c.v[c.n - 1].name);
  } while (c.n - before == 256);
  *list = c.v;
  *n = c.n;
  return 0;
}

struct remove_ctx {
  struct store *st;
  const char *id;
};

static int
remove_one (void *arg, uint64_t objno)
{
  struct remove_ctx *c = arg;
  char oid[96];
  int r;

  image_data_oid (c->id, objno, oid, sizeof oid);
  r = store_remove (c->st, oid);
  return r == -ENOENT ? 0 : r;
}

/* Removes data objects [FIRST, LAST) that the stored map says exist. */
static int
remove_objects (struct store *st, const struct image_info *info,
                uint64_t first, uint64_t last)
{
  struct remove_ctx c = { st, info->id };
  char moid[64];

  map_oid (info->id, moid, sizeof moid);
  return image_map_scan (st, moid, info->format, STORE_SNAP_HEAD, first,
                         last, NULL, remove_one, &c);
}

/* Removal, crash-ordered:
 *   <start> -> MARK (header state "removing": not opened any more)
 *     -> DATA (every object the stored map lists: an entry is durable
 *        before its object is written; without a snapshot context, so
 *        the snapshots' copies stay for now)
 *     -> LOGS (live log, merged list of the live interval) -> MAP
 *     -> SNAPSHOTS (each: its merged list, then the store snapshot, which
 *        frees the copies of data objects, map and log it kept: with the
 *        heads gone, nothing of them is left)
 *     -> HEADER (the snapshot table, xattrs, omap) -> DIRECTORY entry
 *     -> NAME <end>
 * The name object goes last, so a removal that died anywhere is found
 * again by name and finished by another; each step tolerates objects
 * already gone. */
int
image_remove (struct store *st, const char *name)
{
  struct image_info info;
  char id[32], oid[IMAGE_NAME_MAX + 16], hdr[64], moid[64], lst[96];
  struct image_snap *v = NULL;
  size_t n = 0, i;
  bool have_header;
  int r;

  r = image_lookup_id (st, name, id, sizeof id);
  if (r < 0)
    return r;
  image_header_oid (id, hdr, sizeof hdr);
  map_oid (id, moid, sizeof moid);
  r = image_read_header (st, id, &info);
  if (r == 0 && info.state != IMAGE_STATE_REMOVING)
    r = store_xattr_set (st, hdr, "state", STATE_REMOVING,
                         strlen (STATE_REMOVING));
  /* -ENODATA: a create died after writing the header and before its
   * size; nothing can have been written to it, so there are no data
   * objects or snapshots to find, and the rest goes as usual. */
  if (r < 0 && r != -ENOENT && r != -ENODATA)
    return r;
  have_header = r == 0;
  if (have_header) {
    r = remove_objects (st, &info, 0,
                        image_objects_for (info.size, info.object_size));
    if (r < 0)
      return r;
  }
  image_merged_oid (id, 0, lst, sizeof lst);
  if ((r = store_remove (st, lst)) < 0 && r != -ENOENT)
    return r;
  image_changes_oid (id, lst, sizeof lst);
  if ((r = store_remove (st, lst)) < 0 && r != -ENOENT)
    return r;
  for (i = 0; i < MAP_LEVELS; i++) {
    /* Level 0 first: the summary levels over it go after it. */
    image_map_level_oid (moid, (unsigned) i, lst, sizeof lst);
    if ((r = store_remove (st, lst)) < 0 && r != -ENOENT)
      return r;
  }
  if (have_header) {
    r = image_snaps_of_header (st, hdr, &v, &n);
    if (r < 0)
      return r;
    for (i = 0; i < n; i++) {
      image_merged_oid (id, v[i].id, lst, sizeof lst);
      if ((r = store_remove (st, lst)) < 0 && r != -ENOENT)
        break;
      if ((r = store_snap_remove (st, v[i].id)) < 0 && r != -ENOENT)
        break;
      r = 0;
    }
    free (v);
    if (r < 0)
      return r;
  }
  image_open_oid (id, lst, sizeof lst);
  if ((r = store_remove (st, lst)) < 0 && r != -ENOENT)
    return r;
  if ((r = store_remove (st, hdr)) < 0 && r != -ENOENT)
    return r;
  if ((r = store_omap_rm (st, DIRECTORY_OID, name)) < 0 && r != -ENOENT)
    return r;
  name_oid (name, oid, sizeof oid);
  if ((r = store_remove (st, oid)) < 0 && r != -ENOENT)
    return r;
  return 0;
}

static int resize_with (struct store *st, const char *name,
                        struct image_info *info0, const char *hdr,
                        const char *moid, uint64_t size, char *oldraw,
                        char *newraw, char *oid);

int
image_resize (struct store *st, const char *name, uint64_t size)
{
  struct image_info info;
  char id[32], hdr[64], moid[64], oldraw[32], newraw[32], oid[96];
  int r;

  if (size == 0 || size > IMAGE_SIZE_MAX) {
    vbk_set_error ("invalid image size %" PRIu64 ": must be from 1 byte to "
                   "1 PiB", size);
    return -EINVAL;
  }
  r = image_lookup_id (st, name, id, sizeof id);
  if (r < 0)
    return r;
  r = image_read_header (st, id, &info);
  if (r < 0)
    return r;
  if (check_objects (size, info.object_size) < 0)
    return -EINVAL;
  image_header_oid (id, hdr, sizeof hdr);
  map_oid (id, moid, sizeof moid);
  /* Cut objects under the snapshot context, so snapshots keep them. */
  struct store *cst;
  r = store_clone (st, &cst);
  if (r < 0)
    return r;
  r = image_load_snap_context (cst, hdr);
  if (r < 0) {
    store_close (cst);
    return r;
  }
  r = resize_with (cst, name, &info, hdr, moid, size, oldraw, newraw, oid);
  store_close (cst);
  return r;
}

static int
resize_with (struct store *st, const char *name, struct image_info *info0,
             const char *hdr, const char *moid, uint64_t size, char *oldraw,
             char *newraw, char *oid)
{
  struct image_info info = *info0;
  const char *id = info.id;
  uint64_t oldn, newn;
  int r;

  r = image_read_size (st, hdr, &info.size, oldraw, 32);
  if (r < 0)
    return r;
  oldn = image_objects_for (info.size, info.object_size);
  newn = image_objects_for (size, info.object_size);

  if (size < info.size) {
    /* Drop whole objects past the end, cut the new last object, and
     * clear their map entries, before the size says so: a crash leaves
     * an image of the old size with its tail already gone, never an
     * image whose regrown tail shows old data. */
    uint64_t tail = size % info.object_size;
    r = image_note_shrink (st, hdr, size);
    if (r < 0)
      return r;
    r = remove_objects (st, &info, newn, oldn);
    if (r < 0)
      return r;
    if (tail) {
      image_data_oid (id, newn - 1, oid, 96);
      r = store_truncate (st, oid, tail);
      if (r < 0 && r != -ENOENT)
        return r;
    }
    r = store_truncate (st, moid, newn);
    if (r < 0 && r != -ENOENT)
      return r;
  }
  snprintf (newraw, 32, "%" PRIu64, size);
  r = store_xattr_cas (st, hdr, "size", oldraw, strlen (oldraw), newraw,
                       strlen (newraw));
  if (r == -ECANCELED)
    vbk_set_error ("image '%s': resized by someone else meanwhile; retry",
                   name);
  return r;
}

/* ---- Open, close, refresh --------------------------------------------- */

struct load_ctx {
  struct objmap *m;
  int err;
};

/* A record of the live log, loaded into map ARG: a whole-object record
 * counts as "logged"; a detailed one (written by a snapshot that did not
 * complete) gives the parts, and the next change logs the object again. */
static void
load_record (void *arg, uint64_t objno, uint32_t parts)
{
  struct load_ctx *c = arg;

  if (objno < c->m->n && c->err == 0
      && ((c->err = image_map_put (c->m, objno, F_LOGGED,
                                   parts == ALL_PARTS)) < 0
          || (c->err = image_map_put (c->m, objno, F_PARTS, parts)) < 0))
    return;
}

/* After the log is loaded: an allocated entry in the log is DIRTY. */
static void
load_dirty (void *arg, uint64_t objno, uint32_t parts)
{
  struct load_ctx *c = arg;

  (void) parts;
  if (objno < c->m->n && image_map_logged (c->m, objno)
      && image_map_get (c->m, objno) != IMAGE_OBJ_ABSENT)
    image_map_put (c->m, objno, F_BYTE, IMAGE_OBJ_DIRTY);
}

/* Reads the map (N entries) and, for a writable head, the change log,
 * into a new in-memory map that replaces the current one. */
static int
load_map (struct image *img, uint64_t n)
{
  struct objmap *m = image_map_new (n);
  struct changes log = { NULL, 0, 0 };
  struct load_ctx lc = { m, 0 };
  uint64_t i;
  int r;

  if (m == NULL)
    return -ENOMEM;
  r = image_map_read_stored (img->st, img->map_oid, img->info.format,
                             img->read_snap, m, 0, n);
  if (r < 0)
    goto fail;
  if (img->read_snap == STORE_SNAP_HEAD && !(img->flags & IMAGE_OPEN_RDONLY)) {
    r = image_changes_read (img->st, img->log_oid, STORE_SNAP_HEAD, &log);
    if (r < 0)
      goto fail;
    image_changes_each (log.v, log.n, load_record, &lc);
    if ((r = lc.err) < 0)
      goto fail;
    /* A detail record cut in two by a crash: its object's whole record
     * comes before it and stands; the half goes at the next append. */
    for (i = 0; i < log.n; i++) {
      if (!(log.v[i] & CHANGES_FROM) && (log.v[i] & CHANGES_DETAIL)) {
        if (i + 1 == log.n) {
          log.n--;
          __atomic_store_n (&img->log_tail_unknown, true,
                            __ATOMIC_RELEASE);
        }
        i++;
      }
    }
    image_changes_each (log.v, log.n, load_dirty, &lc);
    image_changes_free (&img->log);
    img->log = log;
  }
  m->retired = img->map;
  __atomic_store_n (&img->map, m, __ATOMIC_RELEASE);
  return 0;
fail:
  image_changes_free (&log);
  image_map_free (m);
  return r;
}

/* Opens image NAME; at snapshot SNAP (read-only) when SNAP is not NULL. */
static int
open_common (struct store *st, const char *name, const char *snap,
             unsigned flags, struct image **out)
{
  struct image_snap sn;
  struct image *img;
  char id[32];
  int r;

  r = image_lookup_id (st, name, id, sizeof id);
  if (r < 0)
    return r;
  img = calloc (1, sizeof *img);
  if (img == NULL)
    return -ENOMEM;
  pthread_mutex_init (&img->map_lock, NULL);
  pthread_cond_init (&img->map_cond, NULL);
  img->flags = flags;
  img->read_snap = STORE_SNAP_HEAD;
  r = store_clone (st, &img->st);
  if (r < 0) {
    free (img);
    return r;
  }
  image_header_oid (id, img->hdr_oid, sizeof img->hdr_oid);
  map_oid (id, img->map_oid, sizeof img->map_oid);
  image_changes_oid (id, img->log_oid, sizeof img->log_oid);
  r = image_read_header (img->st, id, &img->info);
  if (r == -ENOENT) {
    vbk_set_error ("image '%s' does not exist (only its name is left: "
                   "'vbk image rm' removes it)", name);
  }
  else if (r == 0 && img->info.state == IMAGE_STATE_REMOVING) {
    vbk_set_error ("image '%s' is being removed (run 'vbk image rm' again "
                   "if that stopped)", name);
    r = -ENOENT;
  }
  else if (r == 0 && img->info.state == IMAGE_STATE_IMPORTING
           && !(flags & IMAGE_OPEN_INCOMPLETE)) {
    vbk_set_error ("image '%s' is incomplete (import did not finish; "
                   "importer %s): import it again or remove it", name,
                   img->info.state_detail);
    r = -EBUSY;
  }
  if (r == 0 && snap) {
    r = image_find_snap (img->st, img->hdr_oid, name, snap, &sn);
    if (r == 0) {
      img->read_snap = sn.id;
      img->info.size = sn.size;
      snprintf (img->info.name, sizeof img->info.name, "%s@%s", name, snap);
    }
  }
  else if (r == 0 && !(flags & IMAGE_OPEN_RDONLY))
    r = image_load_snap_context (img->st, img->hdr_oid);
  img->lazy = image_store_lazy (img->st);
  if (r == 0 && img->lazy && !snap && !(flags & IMAGE_OPEN_RDONLY))
    r = image_open_mark (img);
  if (r == 0) {
    img->order = __builtin_ctz (img->info.object_size);
    r = load_map (img, image_objects_for (img->info.size,
                                          img->info.object_size));
  }
  if (r < 0) {
    image_close (img);
    return r;
  }
  *out = img;
  return 0;
}

int
image_open (struct store *st, const char *name, unsigned flags,
            struct image **out)
{
  return open_common (st, name, NULL, flags, out);
}

int
image_open_snap (struct store *st, const char *image, const char *snap,
                 struct image **out)
{
  return open_common (st, image, snap, IMAGE_OPEN_RDONLY, out);
}

void
image_close (struct image *img)
{
  struct objmap *m, *next;
  int r = 0;

  if (img == NULL)
    return;
  image_commit_stop (img);
  if (!(img->flags & IMAGE_OPEN_RDONLY) && img->map)
    r = store_flush (img->st);
  image_open_unmark (img, r);
  store_close (img->st);
  for (m = img->map; m; m = next) {
    next = m->retired;
    image_map_free (m);
  }
  image_changes_free (&img->log);
  image_changes_free (&img->pend);
  pthread_mutex_destroy (&img->map_lock);
  pthread_cond_destroy (&img->map_cond);
  free (img);
}

int
image_refresh (struct image *img)
{
  uint64_t size = 0;
  int r;

  if (img->read_snap != STORE_SNAP_HEAD)
    return 0;                   /* a snapshot never changes */
  r = image_read_size (img->st, img->hdr_oid, &size, NULL, 0);
  if (r == 0 && !(img->flags & IMAGE_OPEN_RDONLY))
    r = image_load_snap_context (img->st, img->hdr_oid);
  if (r < 0)
    return r;
  pthread_mutex_lock (&img->map_lock);
  while (img->map_writing)            /* the log may be growing */
    pthread_cond_wait (&img->map_cond, &img->map_lock);
  r = load_map (img, image_objects_for (size, img->info.object_size));
  if (r == 0)
    __atomic_store_n (&img->info.size, size, __ATOMIC_RELEASE);
  pthread_mutex_unlock (&img->map_lock);
  return r;
}

void
image_get_info (struct image *img, struct image_info *info)
{
  struct objmap *m = __atomic_load_n (&img->map, __ATOMIC_ACQUIRE);

  *info = img->info;
  info->size = image_size (img);
  info->objects = image_map_count (m);
}

uint64_t
image_size (struct image *img)
{
  return __atomic_load_n (&img->info.size, __ATOMIC_ACQUIRE);
}

enum image_obj
image_object_state (struct image *img, uint64_t objno)
{
  struct objmap *m = __atomic_load_n (&img->map, __ATOMIC_ACQUIRE);

  if (objno >= m->n)
    return IMAGE_OBJ_ABSENT;
  return image_map_get (m, objno);
}

