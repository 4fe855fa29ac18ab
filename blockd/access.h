/* SPDX-License-Identifier: MIT
 *
 * access.h - which client may open which export, and how (pure logic).
 *
 * DESIGN: an access list (struct nbd_srv_acl) holds, per export name
 * (IMAGE or IMAGE@SNAP) and once as the default, two lists of client
 * identities: "allow" (read-write) and "allow_read" (read-only).  An
 * identity is a PSK identity or the CN of a client certificate, as
 * tls.h reports it; "*" stands for any client with an identity.  The
 * rule of an export is its own section's lists if it has any, else (for
 * IMAGE@SNAP) IMAGE's, else the default lists, else none:
 *   - a connection on the Unix socket is local: its permissions decide,
 *     and it gets WRITE;
 *   - with a rule: WRITE if the identity is in "allow", READ if it is in
 *     "allow_read", else NONE; a client without an identity matches
 *     nothing (not even "*");
 *   - without a rule: NONE when TLS is required, else WRITE (a daemon
 *     without TLS or lists serves as it always did);
 *   - a snapshot export is never more than READ;
 *   - a backup export "backup:IMAGE/ID" follows IMAGE's rule, as a
 *     snapshot does, and is never more than READ.
 * The export's and daemon's read_only settings apply on top of this.
 */
#ifndef VBK_BLOCKD_ACCESS_H
#define VBK_BLOCKD_ACCESS_H

#include <stdbool.h>
#include <stddef.h>

enum nbd_srv_access {
  NBD_SRV_ACCESS_NONE,
  NBD_SRV_ACCESS_READ,
  NBD_SRV_ACCESS_WRITE,
};

struct nbd_srv_acl;

/* Who is asking. */
struct nbd_srv_peer {
  bool local;               /* on the Unix socket */
  const char *identity;     /* from TLS; NULL: none */
};

/* Adds the identities of VALUE ("alice, bob": comma separated, spaces
 * around names ignored) to the list KEY ("allow" or "allow_read") of
 * EXPORT (IMAGE or IMAGE@SNAP), or of the default rule when EXPORT is
 * NULL.  Creates *ACL on first use.  Lines add up: two "allow" lines
 * give one longer list.  Errors: -EINVAL with a message (unknown key,
 * bad export name, an empty name or one with a space or quote in the
 * list), -ENOMEM. */
int nbd_srv_acl_add (struct nbd_srv_acl **acl, const char *export,
                     const char *key, const char *value);
/* NULL is a no-op. */
void nbd_srv_acl_free (struct nbd_srv_acl *acl);
/* A copy of ACL (NULL for NULL) in *OUT.  Errors: -ENOMEM. */
int nbd_srv_acl_copy (const struct nbd_srv_acl *acl,
                      struct nbd_srv_acl **out);
/* Whether any rule exists (a daemon listening on TCP with TLS "on" but
 * no rule serves every client: main.c warns about it). */
bool nbd_srv_acl_empty (const struct nbd_srv_acl *acl);

/* What PEER may do with EXPORT_NAME under ACL (may be NULL: no rules);
 * TLS_REQUIRED: the daemon's tls setting is "require".  Thread safe (ACL
 * is read-only once loaded). */
enum nbd_srv_access nbd_srv_access_check (const struct nbd_srv_acl *acl,
                                          bool tls_required,
                                          const struct nbd_srv_peer *peer,
                                          const char *export_name);

/* The prefix of backup exports: "backup:IMAGE/ID". */
#define NBD_SRV_BACKUP_PREFIX "backup:"

/* Whether NAME is a backup export name (starts with "backup:").  If so
 * and IMAGE is not NULL, splits it into a valid image name and backup id
 * (copied into IMAGE, at least IMAGE_LEN bytes, and ID, at least ID_LEN
 * bytes).  Returns 1 (a backup name), 0 (not one) or -EINVAL (a backup
 * name that is malformed: no '/', a bad image name or id). */
int nbd_srv_backup_name_split (const char *name, char *image,
                               size_t image_len, char *id, size_t id_len);

/* "none", "read", "write". */
const char *nbd_srv_access_name (enum nbd_srv_access a);

#endif /* VBK_BLOCKD_ACCESS_H */
