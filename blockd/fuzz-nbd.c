/* SPDX-License-Identifier: MIT
 *
 * fuzz-nbd.c - libFuzzer target: arbitrary bytes from a client into the
 * real handshake and request parser of vbk-blockd.
 *
 * DESIGN: one server (nbd_srv_server_new, no listening sockets) over a
 * local store in a temporary directory holding a 1 MiB image "fuzz",
 * kept open for the whole run.  Each input is written into one end of a
 * socketpair by a helper thread, which also drains the server's replies
 * so the server never blocks on a full socket; the server side runs
 * nbd_srv_session_run on the fuzzing thread, exactly as a connection thread
 * does, and returns after the client's end closes and every request is
 * answered.  Build: clang -fsanitize=fuzzer,address (tests/e2e/fuzz.sh).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/error.h"
#include "common/log.h"
#include "fuzz-feed.h"
#include "internal.h"

static struct nbd_srv_server *srv;
static struct nbd_srv_export *keep;

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  struct nbd_srv_config cfg;
  char dir[] = "/tmp/vbk-fuzz-XXXXXX";
  char uri[64];
  struct store *st;

  log_level = getenv ("VBK_FUZZ_DEBUG") ? LOG_LVL_DEBUG : LOG_LVL_ERROR;
  rcu_register_thread ();
  if (!mkdtemp (dir))
    abort ();
  snprintf (uri, sizeof uri, "local:%s", dir);
  if (store_open (uri, &st) < 0
      || image_create (st, "fuzz", 1 << 20, 64 << 10) < 0)
    {
      fprintf (stderr, "fuzz-nbd: %s\n", vbk_error ());
      abort ();
    }
  store_close (st);

  nbd_srv_config_init (&cfg);
  nbd_srv_config_set (&cfg, "store", uri);
  nbd_srv_config_set (&cfg, "workers", "2");
  if (nbd_srv_server_new (&cfg, &srv) < 0
      || nbd_srv_export_get (srv->exports, "fuzz", &keep) < 0)
    {
      fprintf (stderr, "fuzz-nbd: %s\n", vbk_error ());
      abort ();
    }
  nbd_srv_config_free (&cfg);
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct fuzz_feeder f = { 0 };
  pthread_t th;
  int sv[2];

  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    abort ();
  f.fd = sv[0];
  f.data = data;
  f.size = size;
  if (pthread_create (&th, NULL, fuzz_feed, &f) != 0)
    abort ();
  nbd_srv_session_run (srv, sv[1], "fuzz");   /* closes sv[1] */
  pthread_join (th, NULL);
  close (sv[0]);
  return 0;
}
