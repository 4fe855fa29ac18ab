/* SPDX-License-Identifier: MIT
 *
 * fuzz-feed.h - the client side shared by the fuzz targets: a thread
 * that writes one input into its end of a socketpair while it reads
 * (and hands to a callback, if any) everything the server answers, so
 * neither side can block on a full socket.  It closes its write side
 * when the input is sent and returns when the server hangs up.
 */
#ifndef VBK_BLOCKD_FUZZ_FEED_H
#define VBK_BLOCKD_FUZZ_FEED_H

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct fuzz_feeder {
  int fd;
  const uint8_t *data;
  size_t size;
  /* Called with each piece the server sent; NULL: dropped. */
  void (*reply) (void *arg, const void *p, size_t n);
  void *reply_arg;
};

static void *
fuzz_feed (void *arg)
{
  struct fuzz_feeder *f = arg;
  size_t off = 0;
  uint8_t sink[65536];
  bool wr_open = true;

  for (;;)
    {
      struct pollfd p = { f->fd, POLLIN | (wr_open ? POLLOUT : 0), 0 };
      if (poll (&p, 1, -1) < 0)
        {
          if (errno == EINTR)
            continue;
          break;
        }
      if (wr_open && (p.revents & POLLOUT))
        {
          ssize_t n = off < f->size
            ? send (f->fd, f->data + off, f->size - off,
                    MSG_NOSIGNAL | MSG_DONTWAIT)
            : 0;
          if (n > 0)
            off += n;
          if (off >= f->size || (n < 0 && errno != EAGAIN))
            {
              shutdown (f->fd, SHUT_WR);
              wr_open = false;
            }
        }
      if (p.revents & (POLLIN | POLLHUP | POLLERR))
        {
          ssize_t n = recv (f->fd, sink, sizeof sink, MSG_DONTWAIT);
          if (n > 0)
            {
              if (f->reply)
                f->reply (f->reply_arg, sink, n);
            }
          else if (n == 0 || errno != EAGAIN)
            break;
        }
    }
  return NULL;
}

#endif /* VBK_BLOCKD_FUZZ_FEED_H */
