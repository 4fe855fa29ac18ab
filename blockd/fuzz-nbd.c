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
#include "fuzz-feed.h"

static struct nbd_srv_server *srv;
static struct nbd_srv_export *keep;
static struct fuzz_client client;

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  static const char *const names[] = { "fuzz" };
  char uri[80];
  struct store *st;

  (void) argc;
  (void) argv;
  fuzz_setup ("vbk-fuzz", uri, sizeof uri);
  if (store_open (uri, &st) < 0
      || image_create (st, "fuzz", 1 << 20, 64 << 10) < 0)
    fuzz_die ("fuzz-nbd", NULL);
  store_close (st);
  srv = fuzz_server_start ("fuzz-nbd", uri, NULL, names, 1, &keep, &client);
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  fuzz_serve (srv, &client, data, size, NULL, NULL);
  return 0;
}
