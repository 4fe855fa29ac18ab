/* SPDX-License-Identifier: MIT
 *
 * config.c - the daemon's settings: defaults and the config file.
 *
 * DESIGN: one struct nbd_srv_config filled in order of precedence by
 * main.c: defaults, then the config file (inih, "key = value", keys
 * outside a section or in [blockd]), then $VBK_STORE, then command line
 * flags.  Every key of the file is also a flag; nbd_srv_config_set is
 * the one place that parses values.
 */
#include <errno.h>
#include <stdio.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ini.h>

#include "common/error.h"
#include "internal.h"

#define DEFAULT_STORE "local:/var/lib/vbk"
#define DEFAULT_SOCKET "/run/vbk/blockd.sock"

void
nbd_srv_config_init (struct nbd_srv_config *cfg)
{
  memset (cfg, 0, sizeof *cfg);
  cfg->store_uri = strdup (DEFAULT_STORE);
  cfg->socket_path = strdup (DEFAULT_SOCKET);
  cfg->workers = 4;
  cfg->lease_duration_ms = LEASE_DURATION_DEFAULT_MS;
  {
    char host[256];
    if (gethostname (host, sizeof host) == 0)
      {
        host[sizeof host - 1] = 0;
        cfg->host_id = strdup (host);
      }
    else
      cfg->host_id = strdup ("localhost");
  }
}

void
nbd_srv_config_free (struct nbd_srv_config *cfg)
{
  free (cfg->store_uri);
  free (cfg->socket_path);
  free (cfg->listen_addr);
  free (cfg->host_id);
  memset (cfg, 0, sizeof *cfg);
}

static int
parse_bool (const char *v, bool *out)
{
  if (!strcmp (v, "1") || !strcasecmp (v, "true") || !strcasecmp (v, "yes")
      || !strcasecmp (v, "on"))
    *out = true;
  else if (!strcmp (v, "0") || !strcasecmp (v, "false")
           || !strcasecmp (v, "no") || !strcasecmp (v, "off"))
    *out = false;
  else
    return -EINVAL;
  return 0;
}

static int
set_str (char **dst, const char *v)
{
  char *s = strdup (v);
  if (!s)
    return -ENOMEM;
  free (*dst);
  *dst = s;
  return 0;
}

int
nbd_srv_config_set (struct nbd_srv_config *cfg, const char *key,
                    const char *value)
{
  if (!strcmp (key, "store"))
    return set_str (&cfg->store_uri, value);
  if (!strcmp (key, "socket"))
    return set_str (&cfg->socket_path, value);
  if (!strcmp (key, "listen"))
    return set_str (&cfg->listen_addr, value);
  if (!strcmp (key, "host_id"))
    {
      if (*value == 0 || strlen (value) > STORE_NAME_MAX
          || strpbrk (value, " \t\n"))
        return vbk_errno (-EINVAL, "blockd: host_id: '%s': expected a "
                          "name without spaces", value);
      return set_str (&cfg->host_id, value);
    }
  if (!strcmp (key, "read_only"))
    {
      if (parse_bool (value, &cfg->read_only) < 0)
        return vbk_errno (-EINVAL, "blockd: read_only: %s: not a boolean",
                          value);
      return 0;
    }
  if (!strcmp (key, "exclusive"))
    {
      if (parse_bool (value, &cfg->exclusive) < 0)
        return vbk_errno (-EINVAL, "blockd: exclusive: %s: not a boolean",
                          value);
      return 0;
    }
  if (!strcmp (key, "lease_duration"))
    {
      /* Seconds, fractions allowed (tests use short leases). */
      char *end;
      double d = strtod (value, &end);
      if (*value == 0 || *end || !(d >= 0.5 && d <= 3600))
        return vbk_errno (-EINVAL, "blockd: lease_duration: %s: expected "
                          "seconds, 0.5-3600", value);
      cfg->lease_duration_ms = (uint32_t) (d * 1000 + 0.5);
      return 0;
    }
  if (!strcmp (key, "foreground"))
    {
      if (parse_bool (value, &cfg->foreground) < 0)
        return vbk_errno (-EINVAL, "blockd: foreground: %s: not a boolean",
                          value);
      return 0;
    }
  if (!strcmp (key, "verbose"))
    {
      bool b;
      if (parse_bool (value, &b) < 0)
        return vbk_errno (-EINVAL, "blockd: verbose: %s: not a boolean",
                          value);
      cfg->verbose = b;
      return 0;
    }
  if (!strcmp (key, "workers"))
    {
      char *end;
      long n = strtol (value, &end, 10);
      if (*value == 0 || *end || n < 1 || n > 256)
        return vbk_errno (-EINVAL, "blockd: workers: %s: expected 1-256",
                          value);
      cfg->workers = n;
      return 0;
    }
  return vbk_errno (-EINVAL, "blockd: unknown setting '%s'", key);
}

struct load_ctx {
  struct nbd_srv_config *cfg;
  const char *file;
  int err;
};

static int
on_ini_line (void *user, const char *section, const char *name,
             const char *value)
{
  struct load_ctx *ctx = user;
  int r;

  if (*section && strcmp (section, "blockd") != 0)
    return 1;                   /* other sections belong to other tools */
  r = nbd_srv_config_set (ctx->cfg, name, value);
  if (r < 0 && !ctx->err)
    ctx->err = r;
  return r == 0;
}

int
nbd_srv_config_load (struct nbd_srv_config *cfg, const char *file)
{
  struct load_ctx ctx = { cfg, file, 0 };
  int r = ini_parse (file, on_ini_line, &ctx);

  if (r == -1)
    return vbk_errno (-errno ? -errno : -ENOENT, "blockd: config %s", file);
  if (r == -2)
    return vbk_errno (-ENOMEM, "blockd: config %s", file);
  if (r > 0)
    {
      if (ctx.err)
        {
          char msg[512];
          snprintf (msg, sizeof msg, "%s", vbk_error ());
          vbk_set_error ("blockd: config %s: line %d: %s", file, r, msg);
          return ctx.err;
        }
      vbk_set_error ("blockd: config %s: line %d: syntax error", file, r);
      return -EINVAL;
    }
  return 0;
}
