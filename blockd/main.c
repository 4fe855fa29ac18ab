/* SPDX-License-Identifier: MIT
 *
 * main.c - vbk-blockd: command line, settings, signals.
 *
 * DESIGN: settings come from defaults, then --config FILE, then
 * $VBK_STORE and $VBK_REPO, then flags (each later one wins).  The daemon always runs
 * in the foreground and logs to stderr: under systemd (Type=simple)
 * that goes to the journal; --foreground is accepted for scripts that
 * pass it.  SIGTERM and SIGINT stop it cleanly: no new connections, the
 * requests in flight are answered, leases are released (after a
 * flush), images are closed, exit status 0.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "common/log.h"
#include "internal.h"

static struct nbd_srv_server *the_server;

static void
on_signal (int sig)
{
  if (the_server)
    nbd_srv_server_stop (the_server);
}

static void
usage (FILE *f)
{
  fprintf (f,
"Usage: vbk-blockd [OPTIONS]\n"
"Serves the images of a vbk store over NBD, one export per image (named\n"
"after it; images are looked up when a client connects, so new images\n"
"need no restart).\n"
"\n"
"  --store URI        store to serve (default: $VBK_STORE, else\n"
"                     local:/var/lib/vbk); e.g. rados:POOL\n"
"  --repo URI         backup repository whose backups are exported\n"
"                     read-only as backup:IMAGE/ID (default: $VBK_REPO;\n"
"                     none: no backup exports)\n"
"  --socket PATH      Unix socket (default /run/vbk/blockd.sock; when only\n"
"                     --listen is given, no Unix socket unless --socket)\n"
"  --listen HOST:PORT also listen on TCP (e.g. 0.0.0.0:10809, [::1]:10809);\n"
"                     a non-loopback address needs TLS or --insecure-tcp\n"
"  --host-id ID       this host's identity in image leases (default: the\n"
"                     host name)\n"
"  --lease-duration S how long a lease lasts unrenewed, in seconds\n"
"                     (default 15): a dead host's images move after that\n"
"  --exclusive        keep the leases we take: no automatic hand-off to\n"
"                     another host (only 'vbk lease release' moves them)\n"
"  --config FILE      settings file: key = value lines with the keys\n"
"                     store, repo, socket, listen, host_id, lease_duration,\n"
"                     exclusive, read_only, workers, poll_us, verbose and\n"
"                     the long flags below with '_' for '-' (flags\n"
"                     override it); an [export IMAGE] section sets\n"
"                     exclusive and read_only for IMAGE alone, and its\n"
"                     access lists: allow = alice, bob (read-write),\n"
"                     allow_read = carol (read-only); IMAGE@SNAP follows\n"
"                     IMAGE's lists unless it has a section of its own;\n"
"                     [blockd] default_allow, default_allow_read: the lists\n"
"                     of exports without one\n"
"  --socket-group G   chown the Unix socket (always mode 0660) to group G,\n"
"                     so that its members (e.g. the QEMU user) may connect\n"
"  --max-connections N            clients at once (default 1024)\n"
"  --max-connections-per-client N per TCP address or Unix uid (default 128)\n"
"  --handshake-timeout S  a client must finish negotiating (NBD_OPT_GO)\n"
"                     within S seconds of connecting (default 10)\n"
"  --send-timeout S   a client that takes none of its replies for S seconds\n"
"                     is dropped (default 30; 5 while stopping)\n"
"  --idle-timeout S   an idle connection frees its buffers after S seconds\n"
"                     (default 5)\n"
"  --conn-memory SIZE bytes of requests in flight per connection (default\n"
"                     64M; a larger request waits until it runs alone)\n"
"  --max-memory SIZE  bytes of requests in flight in the daemon (default 1G)\n"
"  --read-only        serve every export read-only\n"
"  --tls MODE         off, on (STARTTLS offered) or require (the default\n"
"                     when credentials are given): TCP clients must\n"
"                     start TLS before anything else\n"
"  --tls-certificates DIR  X.509: DIR/ca-cert.pem, server-cert.pem,\n"
"                     server-key.pem (QEMU's layout); client certificates\n"
"                     are verified against the CA\n"
"  --tls-verify-peer  X.509 clients must present a certificate\n"
"  --tls-handshake-timeout S  a TLS handshake must finish within S\n"
"                     seconds (default 10)\n"
"  --tls-psk FILE     PSK: identity:hexkey lines (as nbdkit, qemu-nbd)\n"
"  --tls-priority STR GnuTLS priority string: suites, versions, key\n"
"                     exchanges (default: NORMAL in the server's order,\n"
"                     AES-128-GCM first; see docs/TLS.md)\n"
"  --insecure-tcp     allow plain NBD (no TLS) on a non-loopback address\n"
"  --metrics HOST:PORT  serve Prometheus metrics at /metrics (loopback\n"
"                     unless --insecure-tcp; default off)\n"
"  --workers N        threads for flush/trim/zero calls (default 4)\n"
"  --poll-us N        an idle connection polls its socket N microseconds\n"
"                     before it sleeps (default 50; 0: never): lower\n"
"                     latency for one-at-a-time I/O, for some CPU; at\n"
"                     most half the CPUs (at least one) poll at once,\n"
"                     and a connection whose polls find nothing (a slow\n"
"                     store) polls ever less often\n"
"  --foreground       accepted for compatibility: vbk-blockd never\n"
"                     daemonizes; it logs to stderr (the journal under\n"
"                     systemd)\n"
"  -v, --verbose      debug logging\n"
"  -h, --help         this text\n"
"\n"
"Exports: IMAGE (writable: the first write takes the image's lease,\n"
"asking its holder on another host to hand it over), IMAGE@SNAP (a\n"
"snapshot, read-only), backup:IMAGE/ID (backup ID of IMAGE in the\n"
"repository, read-only; ID may be 'latest': the newest backup when the\n"
"export opens; not shown by NBD_OPT_LIST).  Metadata contexts: base:allocation, and on a live\n"
"export qemu:dirty-bitmap:SNAP (objects changed since snapshot SNAP).\n"
"\n"
"SIGTERM/SIGINT: stop accepting, answer and flush what is in flight,\n"
"release the leases, exit 0.\n");
}

int
main (int argc, char **argv)
{
  enum { OPT_STORE = 256, OPT_SOCKET, OPT_LISTEN, OPT_HOST_ID, OPT_CONFIG,
         OPT_FOREGROUND, OPT_READ_ONLY, OPT_WORKERS, OPT_LEASE_DURATION,
         OPT_EXCLUSIVE, OPT_POLL_US, OPT_SETTING, OPT_TLS_VERIFY_PEER,
         OPT_INSECURE_TCP };
  static const struct option longopts[] = {
    { "store", required_argument, NULL, OPT_STORE },
    { "repo", required_argument, NULL, OPT_SETTING },
    { "socket", required_argument, NULL, OPT_SOCKET },
    { "listen", required_argument, NULL, OPT_LISTEN },
    { "host-id", required_argument, NULL, OPT_HOST_ID },
    { "config", required_argument, NULL, OPT_CONFIG },
    { "foreground", no_argument, NULL, OPT_FOREGROUND },
    { "read-only", no_argument, NULL, OPT_READ_ONLY },
    { "workers", required_argument, NULL, OPT_WORKERS },
    { "poll-us", required_argument, NULL, OPT_POLL_US },
    { "lease-duration", required_argument, NULL, OPT_LEASE_DURATION },
    { "exclusive", no_argument, NULL, OPT_EXCLUSIVE },
    /* Settings whose flag is the key with '-' for '_'. */
    { "socket-group", required_argument, NULL, OPT_SETTING },
    { "max-connections", required_argument, NULL, OPT_SETTING },
    { "max-connections-per-client", required_argument, NULL, OPT_SETTING },
    { "handshake-timeout", required_argument, NULL, OPT_SETTING },
    { "send-timeout", required_argument, NULL, OPT_SETTING },
    { "idle-timeout", required_argument, NULL, OPT_SETTING },
    { "conn-memory", required_argument, NULL, OPT_SETTING },
    { "max-memory", required_argument, NULL, OPT_SETTING },
    { "tls", required_argument, NULL, OPT_SETTING },
    { "tls-certificates", required_argument, NULL, OPT_SETTING },
    { "tls-psk", required_argument, NULL, OPT_SETTING },
    { "tls-handshake-timeout", required_argument, NULL, OPT_SETTING },
    { "tls-priority", required_argument, NULL, OPT_SETTING },
    { "metrics", required_argument, NULL, OPT_SETTING },
    { "tls-verify-peer", no_argument, NULL, OPT_TLS_VERIFY_PEER },
    { "insecure-tcp", no_argument, NULL, OPT_INSECURE_TCP },
    { "verbose", no_argument, NULL, 'v' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  /* Flags are applied after the config file: remember them. */
  struct { const char *key, *value; } flags[32];
  char keys[32][64];
  int nflags = 0, c, r, verbose = 0, li;
  const char *config_file = NULL;
  bool socket_flag = false, listen_flag = false;
  struct nbd_srv_config cfg;
  struct sigaction sa;
  const char *env;

  while ((c = getopt_long (argc, argv, "vh", longopts, &li)) != -1)
    {
      const char *key = NULL;
      switch (c)
        {
        case OPT_SETTING:
          if (nflags < 32)
            {
              char *k = keys[nflags];
              snprintf (k, sizeof keys[0], "%s", longopts[li].name);
              for (; *k; k++)
                if (*k == '-')
                  *k = '_';
              key = keys[nflags];
            }
          break;
        case OPT_STORE: key = "store"; break;
        case OPT_SOCKET: key = "socket"; socket_flag = true; break;
        case OPT_LISTEN: key = "listen"; listen_flag = true; break;
        case OPT_HOST_ID: key = "host_id"; break;
        case OPT_WORKERS: key = "workers"; break;
        case OPT_POLL_US: key = "poll_us"; break;
        case OPT_CONFIG: config_file = optarg; break;
        case OPT_FOREGROUND: break;
        case OPT_READ_ONLY: key = "read_only"; optarg = (char *) "true"; break;
        case OPT_LEASE_DURATION: key = "lease_duration"; break;
        case OPT_EXCLUSIVE: key = "exclusive"; optarg = (char *) "true"; break;
        case OPT_TLS_VERIFY_PEER:
          key = "tls_verify_peer"; optarg = (char *) "true"; break;
        case OPT_INSECURE_TCP:
          key = "insecure_tcp"; optarg = (char *) "true"; break;
        case 'v': verbose++; break;
        case 'h': usage (stdout); return 0;
        default: usage (stderr); return 2;
        }
      if (key && nflags < 32)
        {
          flags[nflags].key = key;
          flags[nflags].value = optarg;
          nflags++;
        }
    }
  if (optind < argc)
    {
      fprintf (stderr, "vbk-blockd: unexpected argument '%s'\n", argv[optind]);
      usage (stderr);
      return 2;
    }

  nbd_srv_config_init (&cfg);
  if (config_file && (r = nbd_srv_config_load (&cfg, config_file)) < 0)
    {
      fprintf (stderr, "vbk-blockd: %s\n", vbk_error ());
      return 1;
    }
  env = getenv ("VBK_STORE");
  if (env && *env)
    nbd_srv_config_set (&cfg, "store", env);
  env = getenv ("VBK_REPO");
  if (env && *env)
    nbd_srv_config_set (&cfg, "repo", env);
  if (listen_flag && !socket_flag && !config_file)
    {
      /* TCP only, unless a socket was asked for too. */
      free (cfg.socket_path);
      cfg.socket_path = NULL;
    }
  for (c = 0; c < nflags; c++)
    if ((r = nbd_srv_config_set (&cfg, flags[c].key, flags[c].value)) < 0)
      {
        fprintf (stderr, "vbk-blockd: %s\n", vbk_error ());
        return 2;
      }
  if (verbose || cfg.verbose)
    log_level = LOG_LVL_DEBUG;
  {
    const char *warning;
    if (nbd_srv_config_check (&cfg, &warning) < 0)
      {
        fprintf (stderr, "vbk-blockd: %s\n", vbk_error ());
        return 2;
      }
    if (warning)
      log_warn ("%s", warning);
  }

  memset (&sa, 0, sizeof sa);
  sa.sa_handler = SIG_IGN;
  sigaction (SIGPIPE, &sa, NULL);

  rcu_register_thread ();
  r = nbd_srv_server_new (&cfg, &the_server);
  if (r < 0)
    {
      log_error ("cannot start (store %s): %s", cfg.store_uri, vbk_error ());
      return 1;
    }
  r = nbd_srv_server_listen (the_server, &cfg);
  if (r < 0)
    {
      log_error ("%s", vbk_error ());
      nbd_srv_server_free (the_server);
      return 1;
    }

  sa.sa_handler = on_signal;
  sigemptyset (&sa.sa_mask);
  sigaction (SIGTERM, &sa, NULL);
  sigaction (SIGINT, &sa, NULL);

  log_info ("serving store %s%s as host %s (leases of %.1f s%s)",
            cfg.store_uri, cfg.read_only ? " read-only" : "", cfg.host_id,
            cfg.lease_duration_ms / 1000.0,
            cfg.exclusive ? ", exclusive" : "");
  r = nbd_srv_server_run (the_server);
  nbd_srv_server_free (the_server);
  the_server = NULL;
  log_info ("stopped");
  rcu_unregister_thread ();
  nbd_srv_config_free (&cfg);
  return r < 0 ? 1 : 0;
}
