/* SPDX-License-Identifier: MIT
 *
 * fuzz-nbd.c - libFuzzer target: arbitrary bytes from a client into the
 * real handshake and request parser of vbk-blockd.
 *
 * DESIGN: one server (nbd_srv_server_new, no listening sockets) over a
 * local store in a temporary directory (in memory where /dev/shm is)
 * holding a 1 MiB image "fuzz", kept open for the whole run: the store,
 * the image and the server are made once per process, never per input.
 * Each input is written into one end of a new socketpair (fuzz-feed.h:
 * the input is all there before the server reads, and a helper thread
 * started once keeps the answers moving, so the server never blocks on
 * a full socket); the server side runs nbd_srv_session_run on the
 * fuzzing thread, exactly as a connection thread does, and returns after
 * the client's end closes and every request is answered.  Build: clang
 * -fsanitize=fuzzer,address (tests/fuzz-build.sh).
 */
#include <stdio.h>
#include <stdlib.h>

#include "common/error.h"
#include "common/log.h"
#include "fuzz-feed.h"
#include "internal.h"

static struct nbd_srv_server *srv;
static struct nbd_srv_export *keep;
static struct fuzz_client client;

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  struct nbd_srv_config cfg;
  char uri[80];
  struct store *st;

  (void) argc;
  (void) argv;
  log_level = getenv ("VBK_FUZZ_DEBUG") ? LOG_LVL_DEBUG : LOG_LVL_ERROR;
  rcu_register_thread ();
  fuzz_store_dir ("vbk-fuzz", uri, sizeof uri);
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
  fuzz_client_init (&client);
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  int fd = fuzz_session_begin (&client, data, size, NULL, NULL);

  nbd_srv_session_run (srv, fd, "fuzz");   /* closes fd */
  fuzz_session_end (&client);
  return 0;
}
