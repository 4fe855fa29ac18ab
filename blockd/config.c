/* SPDX-License-Identifier: MIT
 *
 * config.c - the daemon's settings: defaults and the config file.
 *
 * DESIGN: one struct nbd_srv_config filled in order of precedence by
 * main.c: defaults, then the config file (inih, "key = value", keys
 * outside a section or in [blockd]), then $VBK_STORE, then command line
 * flags.  Every key of the file is also a flag; nbd_srv_config_set is
 * the one place that parses values.  An [export IMAGE] section sets
 * exclusive and read_only for that image alone; it wins over the
 * daemon's settings, flags included.  Its allow and allow_read lists
 * (and default_allow, default_allow_read in [blockd]) go to the access
 * lists of access.c; an [export IMAGE@SNAP] section may hold only those.
 * nbd_srv_config_check runs last and refuses unsafe combinations (plain
 * TCP on a non-loopback address without --insecure-tcp).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ini.h>

#include "common/error.h"
#include "common/util.h"
#include "image/image.h"
#include "access.h"
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
  cfg->poll_us = 50;
  cfg->max_conns = 1024;
  cfg->max_conns_per_client = 128;
  cfg->handshake_timeout_ms = 10000;
  cfg->send_timeout_ms = 30000;
  cfg->idle_timeout_ms = 5000;
  cfg->conn_memory = 64u << 20;
  cfg->max_memory = 1024u << 20;
  cfg->lease_duration_ms = LEASE_DURATION_DEFAULT_MS;
  cfg->tls = -1;
  cfg->tls_timeout_ms = 10000;
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
  free (cfg->repo_uri);
  free (cfg->socket_path);
  free (cfg->listen_addr);
  free (cfg->host_id);
  free (cfg->socket_group);
  for (size_t i = 0; i < cfg->n_exports; i++)
    free (cfg->exports[i].image);
  free (cfg->exports);
  free (cfg->tls_certificates);
  free (cfg->tls_psk);
  free (cfg->tls_priority);
  free (cfg->metrics_addr);
  nbd_srv_acl_free (cfg->acl);
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

/* Setting KEY: an integer from MIN to MAX. */
static int
parse_int (const char *key, const char *v, long min, long max, unsigned *out)
{
  char *end;
  long n = strtol (v, &end, 10);

  if (*v == 0 || *end || n < min || n > max)
    return vbk_errno (-EINVAL, "blockd: %s: %s: expected %ld-%ld", key, v,
                      min, max);
  *out = (unsigned) n;
  return 0;
}

/* Setting KEY: seconds (fractions allowed) from MIN to MAX, kept in
 * ms. */
static int
parse_seconds (const char *key, const char *v, double min, double max,
               uint32_t *ms)
{
  char *end;
  double d = strtod (v, &end);

  if (*v == 0 || *end || !(d >= min && d <= max))
    return vbk_errno (-EINVAL, "blockd: %s: %s: expected seconds, %g-%g",
                      key, v, min, max);
  *ms = (uint32_t) (d * 1000 + 0.5);
  return 0;
}

/* Setting KEY: a size (parse_size: 64M, 1G) from MIN to MAX. */
static int
parse_bytes (const char *key, const char *v, uint64_t min, uint64_t max,
             uint64_t *out)
{
  uint64_t n;

  if (parse_size (v, &n) < 0 || n < min || n > max)
    return vbk_errno (-EINVAL, "blockd: %s: %s: expected a size from "
                      "%" PRIu64 " MiB to %" PRIu64 " GiB", key, v,
                      min >> 20, max >> 30);
  *out = n;
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
  if (!strcmp (key, "repo"))
    return set_str (&cfg->repo_uri, value);
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
  if (!strcmp (key, "socket_group"))
    return set_str (&cfg->socket_group, value);
  if (!strcmp (key, "max_connections"))
    return parse_int (key, value, 1, 1000000, &cfg->max_conns);
  if (!strcmp (key, "max_connections_per_client"))
    return parse_int (key, value, 1, 1000000, &cfg->max_conns_per_client);
  if (!strcmp (key, "handshake_timeout"))
    return parse_seconds (key, value, 0.1, 3600,
                          &cfg->handshake_timeout_ms);
  if (!strcmp (key, "send_timeout"))
    return parse_seconds (key, value, 0.1, 3600, &cfg->send_timeout_ms);
  if (!strcmp (key, "idle_timeout"))
    return parse_seconds (key, value, 0.1, 86400, &cfg->idle_timeout_ms);
  if (!strcmp (key, "conn_memory"))
    return parse_bytes (key, value, 1u << 20, UINT64_C (64) << 30,
                        &cfg->conn_memory);
  if (!strcmp (key, "max_memory"))
    return parse_bytes (key, value, 1u << 20, UINT64_C (1) << 40,
                        &cfg->max_memory);
  if (!strcmp (key, "poll_us"))
    return parse_int (key, value, 0, 1000, &cfg->poll_us);
  if (!strcmp (key, "workers"))
    return parse_int (key, value, 1, 256, &cfg->workers);
  if (!strcmp (key, "tls"))
    {
      if (!strcmp (value, "off"))
        cfg->tls = NBD_SRV_TLS_OFF;
      else if (!strcmp (value, "on"))
        cfg->tls = NBD_SRV_TLS_ON;
      else if (!strcmp (value, "require"))
        cfg->tls = NBD_SRV_TLS_REQUIRE;
      else
        return vbk_errno (-EINVAL, "blockd: tls: %s: expected off, on or "
                          "require", value);
      return 0;
    }
  if (!strcmp (key, "tls_certificates"))
    return set_str (&cfg->tls_certificates, value);
  if (!strcmp (key, "tls_psk"))
    return set_str (&cfg->tls_psk, value);
  if (!strcmp (key, "tls_priority"))
    {
      if (!*value)
        return vbk_errno (-EINVAL, "blockd: tls_priority: empty");
      return set_str (&cfg->tls_priority, value);
    }
  if (!strcmp (key, "tls_verify_peer"))
    {
      if (parse_bool (value, &cfg->tls_verify_peer) < 0)
        return vbk_errno (-EINVAL, "blockd: tls_verify_peer: %s: not a "
                          "boolean", value);
      return 0;
    }
  if (!strcmp (key, "tls_handshake_timeout"))
    {
      char *end;
      double d = strtod (value, &end);
      if (*value == 0 || *end || !(d >= 0.1 && d <= 600))
        return vbk_errno (-EINVAL, "blockd: tls_handshake_timeout: %s: "
                          "expected seconds, 0.1-600", value);
      cfg->tls_timeout_ms = (uint32_t) (d * 1000 + 0.5);
      return 0;
    }
  if (!strcmp (key, "insecure_tcp"))
    {
      if (parse_bool (value, &cfg->insecure_tcp) < 0)
        return vbk_errno (-EINVAL, "blockd: insecure_tcp: %s: not a "
                          "boolean", value);
      return 0;
    }
  if (!strcmp (key, "metrics"))
    {
      if (!strchr (value, ':'))
        return vbk_errno (-EINVAL, "blockd: metrics: %s: expected "
                          "HOST:PORT", value);
      return set_str (&cfg->metrics_addr, value);
    }
  if (!strcmp (key, "default_allow"))
    return nbd_srv_acl_add (&cfg->acl, NULL, "allow", value);
  if (!strcmp (key, "default_allow_read"))
    return nbd_srv_acl_add (&cfg->acl, NULL, "allow_read", value);
  return vbk_errno (-EINVAL, "blockd: unknown setting '%s'", key);
}

const struct nbd_srv_export_cfg *
nbd_srv_config_export (const struct nbd_srv_config *cfg, const char *image)
{
  for (size_t i = 0; i < cfg->n_exports; i++)
    if (!strcmp (cfg->exports[i].image, image))
      return &cfg->exports[i];
  return NULL;
}

/* IMAGE's entry, added if new; NULL if out of memory. */
static struct nbd_srv_export_cfg *
export_entry (struct nbd_srv_config *cfg, const char *image)
{
  struct nbd_srv_export_cfg *v, *x;

  x = (struct nbd_srv_export_cfg *) nbd_srv_config_export (cfg, image);
  if (x)
    return x;
  v = realloc (cfg->exports, (cfg->n_exports + 1) * sizeof *v);
  if (!v)
    return NULL;
  cfg->exports = v;
  x = &v[cfg->n_exports];
  x->image = strdup (image);
  if (!x->image)
    return NULL;
  x->exclusive = x->read_only = -1;
  cfg->n_exports++;
  return x;
}

int
nbd_srv_config_set_export (struct nbd_srv_config *cfg, const char *image,
                           const char *key, const char *value)
{
  struct nbd_srv_export_cfg *x;
  bool b;

  if (!strcmp (key, "allow") || !strcmp (key, "allow_read"))
    {
      int r = nbd_srv_acl_add (&cfg->acl, image, key, value);
      return r < 0 ? vbk_error_prepend (r, "[export %s]: ", image) : 0;
    }
  if (strchr (image, '@'))
    return vbk_errno (-EINVAL, "[export %s]: a snapshot takes only allow "
                      "and allow_read", image);
  if (image_name_check (image) < 0)
    return vbk_errno (-EINVAL, "[export %s]: not an image name",
                      image);
  if (strcmp (key, "exclusive") && strcmp (key, "read_only"))
    return vbk_errno (-EINVAL, "[export %s]: unknown setting '%s' "
                      "(exclusive, read_only, allow, allow_read)", image,
                      key);
  if (parse_bool (value, &b) < 0)
    return vbk_errno (-EINVAL, "[export %s]: %s: %s: not a boolean",
                      image, key, value);
  x = export_entry (cfg, image);
  if (!x)
    return vbk_errno (-ENOMEM, "[export %s]", image);
  if (!strcmp (key, "exclusive"))
    x->exclusive = b;
  else
    x->read_only = b;
  return 0;
}

int
nbd_srv_config_copy_exports (struct nbd_srv_config *dst,
                             const struct nbd_srv_config *src)
{
  for (size_t i = 0; i < src->n_exports; i++)
    {
      struct nbd_srv_export_cfg *x = export_entry (dst, src->exports[i].image);
      if (!x)
        return vbk_errno (-ENOMEM, "blockd: exports");
      x->exclusive = src->exports[i].exclusive;
      x->read_only = src->exports[i].read_only;
    }
  return 0;
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

  if (!strncmp (section, "export ", 7))
    {
      const char *image = section + 7;
      while (*image == ' ')
        image++;
      r = nbd_srv_config_set_export (ctx->cfg, image, name, value);
    }
  else if (*section && strcmp (section, "blockd") != 0)
    return 1;                   /* other sections belong to other tools */
  else
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

bool
nbd_srv_addr_is_loopback (const char *hostport)
{
  char host[256];
  const char *colon;
  size_t len;
  unsigned char a[16];

  if (hostport[0] == '[')
    {
      const char *close = strchr (hostport, ']');
      if (!close)
        return false;
      len = close - hostport - 1;
      hostport++;
    }
  else
    {
      colon = strrchr (hostport, ':');
      len = colon ? (size_t) (colon - hostport) : strlen (hostport);
    }
  if (len == 0 || len >= sizeof host)
    return false;
  memcpy (host, hostport, len);
  host[len] = 0;
  if (!strcasecmp (host, "localhost"))
    return true;
  if (inet_pton (AF_INET, host, a) == 1)
    return a[0] == 127;
  if (inet_pton (AF_INET6, host, a) == 1)
    return !memcmp (a, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\1", 16);
  return false;
}

int
nbd_srv_config_check (struct nbd_srv_config *cfg, const char **warning)
{
  bool creds = cfg->tls_certificates || cfg->tls_psk;

  *warning = NULL;
  if (cfg->tls < 0)
    cfg->tls = creds ? NBD_SRV_TLS_REQUIRE : NBD_SRV_TLS_OFF;
  if (cfg->tls != NBD_SRV_TLS_OFF && !creds)
    return vbk_errno (-EINVAL, "blockd: tls: %s needs --tls-certificates "
                      "DIR or --tls-psk FILE",
                      cfg->tls == NBD_SRV_TLS_ON ? "on" : "require");
  if (cfg->tls_verify_peer && !cfg->tls_certificates)
    return vbk_errno (-EINVAL, "blockd: tls_verify_peer needs "
                      "--tls-certificates DIR");
  /* "on" still serves plain clients: as unsafe as "off" on a network. */
  if (cfg->listen_addr && cfg->tls != NBD_SRV_TLS_REQUIRE
      && !nbd_srv_addr_is_loopback (cfg->listen_addr))
    {
      if (!cfg->insecure_tcp)
        return vbk_errno (-EINVAL, "blockd: listen %s: refusing plain NBD "
                          "on a network address (anyone who reaches it "
                          "could read and write every image): give "
                          "--tls-certificates DIR or --tls-psk FILE (with "
                          "--tls require, the default), or --insecure-tcp",
                          cfg->listen_addr);
      *warning = "insecure TCP: plain NBD (TLS not required) on a "
                 "network address: anyone who reaches it can read and "
                 "write every image";
    }
  if (cfg->metrics_addr && !nbd_srv_addr_is_loopback (cfg->metrics_addr))
    {
      if (!cfg->insecure_tcp)
        return vbk_errno (-EINVAL, "blockd: metrics %s: refusing metrics "
                          "(unauthenticated HTTP) on a network address; "
                          "use a loopback address, or --insecure-tcp",
                          cfg->metrics_addr);
      if (!*warning)
        *warning = "insecure TCP: metrics (no authentication) on a "
                   "network address";
    }
  return 0;
}
