/* SPDX-License-Identifier: MIT
 *
 * tree-backup.c - the backups/ part of a vbkfs tree.
 *
 * DESIGN: backups/ lists the backups of a repository once the backup
 * library is part of the build; until then it is an empty directory and
 * --repo is refused.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"
#include "tree.h"

int
vbkfs_backup_init (struct vbkfs *fs, const char *repo_uri)
{
  if (repo_uri)
    return vbk_errno (-ENOTSUP, "vbkfs: %s: backup repositories are not "
                      "supported by this build", repo_uri);
  return 0;
}

void
vbkfs_backup_fini (struct vbkfs *fs)
{
}

int
vbkfs_resolve_backups (struct vbkfs *fs, const char *rest,
                       struct vbkfs_node *n, vbkfs_vol_resolver vol)
{
  rest += strspn (rest, "/");
  if (*rest)
    return -ENOENT;
  n->type = N_BACKUPS;
  return 0;
}

int
vbkfs_backup_exists (struct vbkfs *fs, struct vbkfs_node *n)
{
  return -ENOENT;
}

int
vbkfs_backup_readdir (struct vbkfs *fs, struct vbkfs_node *n,
                      vbkfs_fill_cb fill, void *arg)
{
  return 0;
}

int
vbkfs_backup_info (struct vbkfs *fs, struct vbkfs_node *n, char **out)
{
  return -ENOENT;
}

int
vbkfs_source_backup_open (struct vbkfs *fs, const char *image,
                          const char *name, struct vbkfs_source *out)
{
  return -ENOENT;
}
