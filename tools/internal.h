/* SPDX-License-Identifier: MIT
 *
 * internal.h - shared by the files of the vbk command.
 *
 * DESIGN: the command line is "vbk [GLOBAL OPTIONS] COMMAND [VERB] ARGS".
 * Every command is a struct vbk_cmd: either a verb (it has a run
 * function) or a group such as "image" (it has a table of sub-commands).
 * The top-level table lives in vbk.c; adding a command is one line there
 * plus the file that implements it.  Options are declared in tables
 * (struct vbk_opt): one parser in vbk.c turns a table into getopt_long
 * arguments and into the --help text, so every verb accepts -h/--help and
 * the global options the same way, anywhere on its command line.
 *
 * Exit status (documented in every --help):
 *   0  success
 *   1  the operation failed (no such image, name taken, store error, ...)
 *   2  usage error: unknown command or option, missing or extra argument,
 *      or a malformed value (size, object size, name)
 * Errors are one line on stderr: "vbk: CONTEXT: REASON", REASON being
 * vbk_error() of the call that failed.
 */
#ifndef VBK_TOOLS_INTERNAL_H
#define VBK_TOOLS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "copy/copy.h"
#include "store/store.h"
#include "image/image.h"

enum {
  VBK_EXIT_OK = 0,
  VBK_EXIT_FAILURE = 1,
  VBK_EXIT_USAGE = 2,
};

#define VBK_STORE_DEFAULT "local:/var/lib/vbk"

/* One option of a command.  A table ends with a NULL name. */
struct vbk_opt {
  const char *name;       /* long name, without "--" */
  int short_name;         /* 'x' for -x, or 0 */
  const char *arg;        /* metavariable ("SIZE"), NULL for a flag */
  const char *help;       /* one line */
};

/* Most options one command may declare (besides the global ones). */
#define VBK_OPTS_MAX 32

/* State shared by every command: the global options. */
struct vbk_ctx {
  const char *store_uri;  /* --store, or NULL */
  const char *timeout;    /* --timeout SECONDS, or NULL */
  int verbose;            /* number of -v */
  int progress;           /* stderr is a terminal: show progress */
};

struct vbk_cmd;

/* What the parser hands to a verb. */
struct vbk_args {
  const struct vbk_cmd *cmd;
  const char *path;       /* "image create": context for messages */
  int argc;               /* positional arguments only */
  char **argv;
  const char *val[VBK_OPTS_MAX];  /* by index in cmd->opts; "" for a
                                     flag that was given, NULL if absent */
};

struct vbk_cmd {
  const char *name;       /* NULL ends a table */
  const char *synopsis;   /* what follows the name in "Usage:" */
  const char *summary;    /* one line, for the list of commands */
  const struct vbk_opt *opts;      /* may be NULL */
  int min_args, max_args;          /* positional arguments */
  /* A verb: returns an exit status (VBK_EXIT_*). */
  int (*run) (struct vbk_ctx *ctx, struct vbk_args *a);
  /* A group: its sub-commands. */
  const struct vbk_cmd *sub;
};

/* vbk.c */

/* Value of option NAME of A's command (see struct vbk_args), or NULL. */
const char *vbk_opt (const struct vbk_args *a, const char *name);
/* The backup repository: --repo, else $VBK_REPO, else NULL. */
const char *vbk_repo_uri (const struct vbk_args *a);
/* Who we are when vbk takes a lease: --host-id (for a command that has
 * it), else "vbk@HOSTNAME", written into BUF. */
const char *vbk_host_id (const struct vbk_args *a, char *buf, size_t len);

/* Prints "vbk: PATH: MESSAGE (see 'vbk PATH --help')" and returns
 * VBK_EXIT_USAGE. */
int vbk_usage_error (const struct vbk_args *a, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

/* Checks an image or snapshot name (image_name_check): 0, or prints the
 * reason as a usage error and returns VBK_EXIT_USAGE. */
int vbk_check_name (const struct vbk_args *a, const char *name);

/* A snapshot on the command line: IMAGE@SNAP. */
struct vbk_snap_ref {
  char image[IMAGE_NAME_MAX + 1];
  char snap[IMAGE_NAME_MAX + 1];
};

/* Parses ARG as IMAGE@SNAP into *REF, strictly: exactly one '@', both
 * sides valid names.  Returns 0, or prints a usage error and returns
 * VBK_EXIT_USAGE. */
int vbk_parse_snap_ref (const struct vbk_args *a, const char *arg,
                        struct vbk_snap_ref *ref);

/* Prints O on stdout, pretty, with a newline, and drops the caller's
 * reference to O (json_object_put). */
void vbk_print_json (json_object *o);

/* Add KEY to object O: a string (NULL: null), an unsigned or signed
 * integer, or a boolean. */
void vbk_json_str (json_object *o, const char *key, const char *v);
void vbk_json_u64 (json_object *o, const char *key, uint64_t v);
void vbk_json_i64 (json_object *o, const char *key, int64_t v);
void vbk_json_int (json_object *o, const char *key, int v);
void vbk_json_bool (json_object *o, const char *key, int v);

/* Formats wall-clock MS (ms since the epoch) as local
 * "YYYY-MM-DD HH:MM:SS" into BUF; returns BUF. */
const char *vbk_format_time (uint64_t ms, char *buf, size_t len);

/* Prints "vbk: PATH: REASON", REASON being vbk_error() or, if that is
 * empty, strerror(-ERR), and returns VBK_EXIT_FAILURE. */
int vbk_fail (const struct vbk_args *a, int err);

/* Opens the store named by --store, $VBK_STORE or the default, adding
 * --timeout to a rados URI.  Prints the error itself; returns 0 or
 * -errno. */
int vbk_store_open (struct vbk_ctx *ctx, const struct vbk_args *a,
                    struct store **st);

/* Long operations catch SIGINT and SIGTERM (ON = 1) to stop early and
 * clean up, and restore the default (ON = 0) when done; a second signal
 * ends the process.  vbk_interrupted() is 1 once a signal arrived. */
void vbk_catch_signals (int on);
int vbk_interrupted (void);

/* --force of a verb that changes an image: it goes on while another
 * host holds the image's lease, breaking the lease (fencing the host). */
#define VBK_FENCE_OPT { "force", 0, NULL, "even while a host holds the " \
    "lease (it is fenced)" }

/* --progress MODE of a long copy (import, export, backup run, restore):
 * auto (a bar when stderr is a terminal, else none), bar, json (one
 * line a second on stderr) or none. */
#define VBK_PROGRESS_OPT { "progress", 0, "MODE", "auto (a bar on a " \
    "terminal), bar, json (lines on stderr) or none" }
/* Parses --progress into *M.  Returns 0, or prints a usage error and
 * returns VBK_EXIT_USAGE. */
int vbk_opt_progress (const struct vbk_ctx *ctx, const struct vbk_args *a,
                      enum copy_progress_mode *m);
/* Parses --NAME as a number in [MIN, MAX] (absent: *OUT unchanged).
 * Returns 0, or prints a usage error and returns VBK_EXIT_USAGE. */
int vbk_opt_num (const struct vbk_args *a, const char *name, long min,
                 long max, long *out);

/* image-cmd.c */
extern const struct vbk_cmd image_cmds[];

/* snap-cmd.c: the "snap" verbs, and "diff" (a top-level verb). */
extern const struct vbk_cmd snap_cmds[];
extern const struct vbk_opt diff_opts[];
#define DIFF_SYNOPSIS "IMAGE --from SNAP [--to SNAP] [--json]"
int cmd_diff (struct vbk_ctx *ctx, struct vbk_args *a);

/* lease-cmd.c */
extern const struct vbk_cmd lease_cmds[];

/* backup-cmd.c */
extern const struct vbk_cmd backup_cmds[];

/* The key of an encrypted backup repository, for *KO: the key file from
 * --key-file or $VBK_KEY_FILE, the passphrase from --passphrase-file,
 * $VBK_PASSPHRASE or a prompt on the terminal (twice with CONFIRM), into
 * PASS (LEN bytes; the caller wipes it).  Without a key file *KO is all
 * NULL.  Returns 0 or an exit status (the error printed). */
struct backup_key_opts;
int vbk_backup_key (const struct vbk_args *a, struct backup_key_opts *ko,
                    char *pass, size_t len, int confirm);
#define VBK_KEY_OPTS \
  { "key-file", 0, "FILE", "key file of an encrypted repository (default: " \
    "$VBK_KEY_FILE)" }, \
  { "passphrase-file", 0, "FILE", "read the key file's passphrase from " \
    "FILE (default: $VBK_PASSPHRASE, else a prompt)" }

/* mount-cmd.c: "mount" and "umount" (top-level verbs). */
extern const struct vbk_opt mount_opts[];
#define MOUNT_SYNOPSIS "DIR [--repo URI] [--allow-other] [-f] [--log FILE]"
int cmd_mount (struct vbk_ctx *ctx, struct vbk_args *a);
int cmd_umount (struct vbk_ctx *ctx, struct vbk_args *a);

/* files-cmd.c */
extern const struct vbk_cmd files_cmds[];

/* image-copy.c: the copies of "vbk image import" and "export". */

struct vbk_copy_args {
  const char *file;               /* for messages */
  const char *image;              /* NAME or IMAGE@SNAP, for messages */
  unsigned threads;               /* 0: the default (8) */
  enum copy_progress_mode progress;
};

/* Copies FD (a regular file or block device, opened for reading) into
 * IMG, which reads as zeros (a new image): holes are not read, zero
 * blocks not written.  Returns 0 or -errno (-EINTR: interrupted) with
 * vbk_error() set on this thread; *RES holds the counts either way. */
int vbk_import_copy (const struct vbk_copy_args *ca, int fd,
                     struct image *img, struct copy_result *res);

/* Copies IMG into FD (opened for writing).  With SPARSE (FD is a regular
 * file truncated to the image's size beforehand, so it reads as zeros),
 * holes and zero blocks stay holes; otherwise every byte is written.
 * Returns 0 or -errno, as vbk_import_copy. */
int vbk_export_copy (const struct vbk_copy_args *ca, struct image *img,
                     int fd, int sparse, struct copy_result *res);

#endif /* VBK_TOOLS_INTERNAL_H */
