/* SPDX-License-Identifier: MIT
 *
 * access.c - per-export allow lists of client identities (see access.h
 * for the rules).
 *
 * DESIGN: a small array of rules, one per [export NAME] section that has
 * an allow list, plus the default rule; filled while the config is read,
 * read-only afterwards, so lookups need no lock.  Rules are few (one per
 * configured export) and looked up once per option negotiation, so a
 * linear search is the simple and sufficient choice.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "access.h"
#include "common/error.h"
#include "image/image.h"

struct acl_rule {
  char *export;             /* NULL: the default rule */
  char **rw, **ro;
  size_t nrw, nro;
};

struct nbd_srv_acl {
  struct acl_rule *rules;
  size_t n;
};

static struct acl_rule *
rule_find (const struct nbd_srv_acl *acl, const char *export)
{
  if (!acl)
    return NULL;
  for (size_t i = 0; i < acl->n; i++)
    {
      const char *e = acl->rules[i].export;
      if ((!e && !export) || (e && export && !strcmp (e, export)))
        return &acl->rules[i];
    }
  return NULL;
}

static int
name_list_add (char ***list, size_t *n, const char *name, size_t len)
{
  char **v = realloc (*list, (*n + 1) * sizeof *v);
  if (!v)
    return -ENOMEM;
  *list = v;
  if (!(v[*n] = strndup (name, len)))
    return -ENOMEM;
  (*n)++;
  return 0;
}

static int
export_name_check (const char *export)
{
  const char *at = strchr (export, '@');
  char *img;
  int r;

  if (!at)
    return image_name_check (export);
  img = strndup (export, at - export);
  if (!img)
    return -ENOMEM;
  r = image_name_check (img);
  free (img);
  if (r == 0)
    r = image_name_check (at + 1);
  return r;
}

int
nbd_srv_acl_add (struct nbd_srv_acl **aclp, const char *export,
                 const char *key, const char *value)
{
  struct nbd_srv_acl *acl = *aclp;
  struct acl_rule *rule;
  const char *p = value;
  bool write;
  const char *where = export ? export : "default";

  if (!strcmp (key, "allow"))
    write = true;
  else if (!strcmp (key, "allow_read"))
    write = false;
  else
    return vbk_errno (-EINVAL, "access: %s: unknown list '%s' (allow, "
                      "allow_read)", where, key);
  if (export && export_name_check (export) < 0)
    return vbk_errno (-EINVAL, "access: '%s': not an export name (IMAGE or "
                      "IMAGE@SNAP)", export);

  /* Check the whole list before changing anything. */
  for (;;)
    {
      const char *start, *end, *q;
      p += strspn (p, " \t");
      start = p;
      end = p + strcspn (p, ",");
      q = end;
      while (q > start && (q[-1] == ' ' || q[-1] == '\t'))
        q--;
      if (q == start)
        return vbk_errno (-EINVAL, "access: %s: %s: an empty name in '%s'",
                          where, key, value);
      for (const char *c = start; c < q; c++)
        if ((unsigned char) *c <= ' ' || *c == '"' || *c == '\'')
          return vbk_errno (-EINVAL, "access: %s: %s: '%.*s': a name with "
                            "a space or quote", where, key,
                            (int) (q - start), start);
      if (!*end)
        break;
      p = end + 1;
    }

  if (!acl)
    {
      if (!(acl = calloc (1, sizeof *acl)))
        return vbk_errno (-ENOMEM, "access");
      *aclp = acl;
    }
  rule = rule_find (acl, export);
  if (!rule)
    {
      struct acl_rule *v = realloc (acl->rules, (acl->n + 1) * sizeof *v);
      if (!v)
        return vbk_errno (-ENOMEM, "access");
      acl->rules = v;
      rule = &v[acl->n];
      memset (rule, 0, sizeof *rule);
      if (export && !(rule->export = strdup (export)))
        return vbk_errno (-ENOMEM, "access");
      acl->n++;
    }
  for (p = value;;)
    {
      const char *start, *end, *q;
      int r;

      p += strspn (p, " \t");
      start = p;
      end = p + strcspn (p, ",");
      q = end;
      while (q > start && (q[-1] == ' ' || q[-1] == '\t'))
        q--;
      r = write ? name_list_add (&rule->rw, &rule->nrw, start, q - start)
                : name_list_add (&rule->ro, &rule->nro, start, q - start);
      if (r < 0)
        return vbk_errno (r, "access");
      if (!*end)
        break;
      p = end + 1;
    }
  return 0;
}

void
nbd_srv_acl_free (struct nbd_srv_acl *acl)
{
  if (!acl)
    return;
  for (size_t i = 0; i < acl->n; i++)
    {
      struct acl_rule *r = &acl->rules[i];
      for (size_t j = 0; j < r->nrw; j++)
        free (r->rw[j]);
      for (size_t j = 0; j < r->nro; j++)
        free (r->ro[j]);
      free (r->rw);
      free (r->ro);
      free (r->export);
    }
  free (acl->rules);
  free (acl);
}

static int
list_copy (char *const *src, size_t n, char ***dst, size_t *dn)
{
  for (size_t i = 0; i < n; i++)
    if (name_list_add (dst, dn, src[i], strlen (src[i])) < 0)
      return -ENOMEM;
  return 0;
}

int
nbd_srv_acl_copy (const struct nbd_srv_acl *acl, struct nbd_srv_acl **out)
{
  struct nbd_srv_acl *c;

  *out = NULL;
  if (!acl)
    return 0;
  if (!(c = calloc (1, sizeof *c))
      || !(c->rules = calloc (acl->n ? acl->n : 1, sizeof *c->rules)))
    goto nomem;
  for (size_t i = 0; i < acl->n; i++)
    {
      const struct acl_rule *r = &acl->rules[i];
      struct acl_rule *d = &c->rules[i];
      c->n++;
      if ((r->export && !(d->export = strdup (r->export)))
          || list_copy (r->rw, r->nrw, &d->rw, &d->nrw) < 0
          || list_copy (r->ro, r->nro, &d->ro, &d->nro) < 0)
        goto nomem;
    }
  *out = c;
  return 0;

 nomem:
  nbd_srv_acl_free (c);
  return vbk_errno (-ENOMEM, "access");
}

bool
nbd_srv_acl_empty (const struct nbd_srv_acl *acl)
{
  return !acl || acl->n == 0;
}

static bool
listed (char *const *list, size_t n, const char *identity)
{
  for (size_t i = 0; i < n; i++)
    if (!strcmp (list[i], "*") || !strcmp (list[i], identity))
      return true;
  return false;
}

int
nbd_srv_backup_name_split (const char *name, char *image, size_t image_len,
                           char *id, size_t id_len)
{
  size_t pl = strlen (NBD_SRV_BACKUP_PREFIX), il, n;
  const char *slash, *p;
  char img[IMAGE_NAME_MAX + 1];

  if (strncmp (name, NBD_SRV_BACKUP_PREFIX, pl) != 0)
    return 0;
  if (!image)
    return 1;
  name += pl;
  slash = strchr (name, '/');
  if (!slash)
    return vbk_errno (-EINVAL, "'%s%s': a backup export is named "
                      "backup:IMAGE/ID", NBD_SRV_BACKUP_PREFIX, name);
  il = slash - name;
  if (il == 0 || il > IMAGE_NAME_MAX || il >= image_len)
    return vbk_errno (-EINVAL, "'%s%s': bad image name",
                      NBD_SRV_BACKUP_PREFIX, name);
  memcpy (img, name, il);
  img[il] = 0;
  if (image_name_check (img) < 0)
    return -EINVAL;
  /* Backup ids are [0-9A-Za-z-] (backup/FORMAT.md), or "latest". */
  n = strlen (slash + 1);
  if (n == 0 || n > 63 || n >= id_len)
    return vbk_errno (-EINVAL, "'%s%s': bad backup id",
                      NBD_SRV_BACKUP_PREFIX, name);
  for (p = slash + 1; *p; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z')
          || (*p >= 'A' && *p <= 'Z') || *p == '-'))
      return vbk_errno (-EINVAL, "'%s%s': bad backup id",
                        NBD_SRV_BACKUP_PREFIX, name);
  memcpy (image, img, il + 1);
  memcpy (id, slash + 1, n + 1);
  return 1;
}

enum nbd_srv_access
nbd_srv_access_check (const struct nbd_srv_acl *acl, bool tls_required,
                      const struct nbd_srv_peer *peer,
                      const char *export_name)
{
  const struct acl_rule *rule;
  const char *at = strchr (export_name, '@');
  char bimg[IMAGE_NAME_MAX + 1], bid[64];
  enum nbd_srv_access a;
  int backup;

  /* backup:IMAGE/ID: IMAGE's rule.  A malformed one gets the default
   * rule (it cannot open; the open says why). */
  backup = nbd_srv_backup_name_split (export_name, bimg, sizeof bimg, bid,
                                      sizeof bid);
  if (backup < 0)
    {
      vbk_clear_error ();
      backup = 1;
      bimg[0] = 0;
    }
  if (backup)
    at = NULL;
  if (peer->local)
    a = NBD_SRV_ACCESS_WRITE;
  else
    {
      rule = backup ? rule_find (acl, bimg) : rule_find (acl, export_name);
      if (!rule && at)
        {
          char *img = strndup (export_name, at - export_name);
          if (!img)
            return NBD_SRV_ACCESS_NONE;   /* fail closed */
          rule = rule_find (acl, img);
          free (img);
        }
      if (!rule)
        rule = rule_find (acl, NULL);
      if (!rule)
        a = tls_required ? NBD_SRV_ACCESS_NONE : NBD_SRV_ACCESS_WRITE;
      else if (!peer->identity)
        a = NBD_SRV_ACCESS_NONE;
      else if (listed (rule->rw, rule->nrw, peer->identity))
        a = NBD_SRV_ACCESS_WRITE;
      else if (listed (rule->ro, rule->nro, peer->identity))
        a = NBD_SRV_ACCESS_READ;
      else
        a = NBD_SRV_ACCESS_NONE;
    }
  if ((at || backup) && a == NBD_SRV_ACCESS_WRITE)
    a = NBD_SRV_ACCESS_READ;
  return a;
}

const char *
nbd_srv_access_name (enum nbd_srv_access a)
{
  switch (a)
    {
    case NBD_SRV_ACCESS_READ: return "read";
    case NBD_SRV_ACCESS_WRITE: return "write";
    default: return "none";
    }
}
