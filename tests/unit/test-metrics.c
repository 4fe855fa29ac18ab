/* SPDX-License-Identifier: MIT
 *
 * test-metrics.c - blockd/metrics.c: counters from several threads add up
 * exactly, the text format follows Prometheus's rules (HELP/TYPE lines,
 * cumulative histogram buckets ending in +Inf = _count, escaped label
 * values), NULL handles are no-ops, and the HTTP responder on a loopback
 * port answers GET /metrics, 404 and 405, and is not held up for good by
 * a client that connects and says nothing.
 */
/* VBK_TEST_LINKS: vbkblockd-internals */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "blockd/metrics.h"

/* The value of the sample line that starts with PREFIX (name and labels
 * exactly), or -1. */
static double
sample (const char *text, const char *prefix)
{
  size_t n = strlen (prefix);
  for (const char *p = text; p && *p; p = strchr (p, '\n'), p = p ? p + 1 : p)
    if (!strncmp (p, prefix, n) && p[n] == ' ')
      return strtod (p + n + 1, NULL);
  return -1;
}

struct worker {
  struct nbd_srv_export_metrics *em;
  int n;
};

static void *
count_reads (void *arg)
{
  struct worker *w = arg;
  for (int i = 0; i < w->n; i++)
    {
      uint64_t t0 = nbd_srv_metrics_now_ns ();
      nbd_srv_metrics_req_begin (w->em, NBD_SRV_MOP_READ, 4096);
      nbd_srv_metrics_req_end (w->em, NBD_SRV_MOP_READ, 4096, t0, i % 10 == 0);
    }
  return NULL;
}

static void
test_counters_and_format (void **state)
{
  struct nbd_srv_metrics *m;
  struct nbd_srv_export_metrics *em, *em2;
  struct worker w;
  pthread_t th[4];
  char *text;
  size_t len;

  assert_int_equal (nbd_srv_metrics_new (&m), 0);
  em = nbd_srv_metrics_export (m, "vm1");
  assert_non_null (em);
  /* The same name gives the same counters. */
  assert_ptr_equal (nbd_srv_metrics_export (m, "vm1"), em);
  em2 = nbd_srv_metrics_export (m, "odd\"name\\");
  assert_non_null (em2);

  w = (struct worker) { em, 10000 };
  for (int i = 0; i < 4; i++)
    assert_int_equal (pthread_create (&th[i], NULL, count_reads, &w), 0);
  for (int i = 0; i < 4; i++)
    pthread_join (th[i], NULL);
  nbd_srv_metrics_req_begin (em, NBD_SRV_MOP_WRITE, 65536);   /* in flight */
  nbd_srv_metrics_req_begin (em, NBD_SRV_MOP_FLUSH, 0);
  nbd_srv_metrics_req_end (em, NBD_SRV_MOP_FLUSH, 0,
                           nbd_srv_metrics_now_ns () - 3000000, false);
  nbd_srv_metrics_lease_acquired (em, 7);
  nbd_srv_metrics_lease_released (em);
  nbd_srv_metrics_lease_acquired (em, 9);
  nbd_srv_metrics_lease_lost (em2);
  nbd_srv_metrics_snapshot_pause (em, 1500);
  nbd_srv_metrics_conn (m, NBD_SRV_MT_TCP, 1);
  nbd_srv_metrics_conn (m, NBD_SRV_MT_TCP, -1);
  nbd_srv_metrics_conn (m, NBD_SRV_MT_TLS, 1);
  nbd_srv_metrics_tls_handshake (m, 0);
  nbd_srv_metrics_tls_handshake (m, -ETIMEDOUT);
  nbd_srv_metrics_tls_handshake (m, -EACCES);
  nbd_srv_metrics_tls_handshake (m, -EACCES);
  nbd_srv_metrics_tls_handshake (m, -EPROTO);
  nbd_srv_metrics_access_denied (m);
  nbd_srv_metrics_tls_required (m);

  assert_int_equal (nbd_srv_metrics_format (m, &text, &len), 0);
  assert_int_equal (strlen (text), len);
  assert_true (sample (text, "vbk_blockd_requests_total{export=\"vm1\","
                       "op=\"read\"}") == 40000);
  assert_true (sample (text, "vbk_blockd_request_bytes_total{export=\"vm1\","
                       "op=\"read\"}") == 40000.0 * 4096);
  assert_true (sample (text, "vbk_blockd_request_errors_total{export=\"vm1\","
                       "op=\"read\"}") == 4000);
  assert_true (sample (text, "vbk_blockd_requests_total{export=\"vm1\","
                       "op=\"write\"}") == 0);
  assert_true (sample (text, "vbk_blockd_requests_in_flight{export=\"vm1\"}")
               == 1);
  assert_true (sample (text, "vbk_blockd_bytes_in_flight{export=\"vm1\"}")
               == 65536);
  /* The 3 ms flush: not in the 2.5 ms bucket, in the 5 ms one. */
  assert_true (sample (text, "vbk_blockd_request_duration_seconds_bucket{"
                       "export=\"vm1\",op=\"flush\",le=\"0.0025\"}") == 0);
  assert_true (sample (text, "vbk_blockd_request_duration_seconds_bucket{"
                       "export=\"vm1\",op=\"flush\",le=\"0.005\"}") == 1);
  assert_true (sample (text, "vbk_blockd_request_duration_seconds_bucket{"
                       "export=\"vm1\",op=\"flush\",le=\"+Inf\"}") == 1);
  assert_true (sample (text, "vbk_blockd_request_duration_seconds_sum{"
                       "export=\"vm1\",op=\"flush\"}") >= 0.003);
  assert_true (sample (text, "vbk_blockd_request_duration_seconds_count{"
                       "export=\"vm1\",op=\"read\"}") == 40000);
  assert_true (sample (text, "vbk_blockd_request_duration_seconds_bucket{"
                       "export=\"vm1\",op=\"read\",le=\"+Inf\"}") == 40000);
  assert_true (sample (text, "vbk_blockd_lease_epoch{export=\"vm1\"}") == 9);
  assert_true (sample (text, "vbk_blockd_lease_held{export=\"vm1\"}") == 1);
  assert_true (sample (text, "vbk_blockd_lease_acquisitions_total{"
                       "export=\"vm1\"}") == 2);
  assert_true (sample (text, "vbk_blockd_lease_releases_total{"
                       "export=\"vm1\"}") == 1);
  /* The label value is escaped. */
  assert_true (sample (text, "vbk_blockd_lease_lost_total{"
                       "export=\"odd\\\"name\\\\\"}") == 1);
  assert_true (sample (text, "vbk_blockd_snapshot_pauses_total{"
                       "export=\"vm1\"}") == 1);
  assert_true (sample (text, "vbk_blockd_snapshot_pause_seconds_total{"
                       "export=\"vm1\"}") == 0.0015);
  assert_true (sample (text, "vbk_blockd_connections{transport=\"tcp\"}")
               == 0);
  assert_true (sample (text, "vbk_blockd_connections{transport=\"tls\"}")
               == 1);
  assert_true (sample (text, "vbk_blockd_connections_total{transport=\"tcp\"}")
               == 1);
  assert_true (sample (text, "vbk_blockd_tls_handshakes_total") == 1);
  assert_true (sample (text, "vbk_blockd_tls_failures_total{reason=\"auth\"}")
               == 2);
  assert_true (sample (text, "vbk_blockd_tls_failures_total{"
                       "reason=\"timeout\"}") == 1);
  assert_true (sample (text, "vbk_blockd_tls_failures_total{"
                       "reason=\"protocol\"}") == 1);
  assert_true (sample (text, "vbk_blockd_access_denied_total") == 1);
  assert_true (sample (text, "vbk_blockd_tls_required_total") == 1);

  /* Every line is a comment or "name[{labels}] value"; every metric has
   * HELP and TYPE before its samples; buckets never go down. */
  {
    double prev = -1;
    char last_name[128] = "";
    for (char *line = text; *line;)
      {
        char *nl = strchr (line, '\n');
        assert_non_null (nl);
        *nl = 0;
        if (line[0] == '#')
          {
            assert_true (!strncmp (line, "# HELP vbk_blockd_", 18)
                         || !strncmp (line, "# TYPE vbk_blockd_", 18));
            if (!strncmp (line, "# TYPE ", 7))
              sscanf (line + 7, "%127s", last_name);
          }
        else
          {
            assert_true (!strncmp (line, last_name, strlen (last_name)));
            assert_non_null (strrchr (line, ' '));
            if (strstr (line, "_bucket{"))
              {
                double v = strtod (strrchr (line, ' ') + 1, NULL);
                if (strstr (line, "le=\"5e-05\""))
                  prev = -1;
                assert_true (v >= prev);
                prev = v;
              }
          }
        line = nl + 1;
      }
  }
  free (text);

  /* NULL handles: nothing happens, nothing crashes. */
  assert_null (nbd_srv_metrics_export (NULL, "x"));
  nbd_srv_metrics_req_begin (NULL, NBD_SRV_MOP_READ, 1);
  nbd_srv_metrics_req_end (NULL, NBD_SRV_MOP_READ, 1, 0, true);
  nbd_srv_metrics_lease_acquired (NULL, 1);
  nbd_srv_metrics_conn (NULL, NBD_SRV_MT_UNIX, 1);
  nbd_srv_metrics_tls_handshake (NULL, 0);
  nbd_srv_metrics_access_denied (NULL);
  nbd_srv_metrics_free (m);
  nbd_srv_metrics_free (NULL);
}

/* Sends REQ to 127.0.0.1:PORT and returns the whole answer (malloc'd). */
static char *
http (int port, const char *req)
{
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons (port) };
  int fd = socket (AF_INET, SOCK_STREAM, 0);
  char *buf = malloc (1 << 20);
  size_t len = 0;
  ssize_t r;

  a.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  assert_int_equal (connect (fd, (struct sockaddr *) &a, sizeof a), 0);
  assert_int_equal (write (fd, req, strlen (req)), (ssize_t) strlen (req));
  while ((r = read (fd, buf + len, (1 << 20) - 1 - len)) > 0)
    len += r;
  buf[len] = 0;
  close (fd);
  return buf;
}

static void
test_http (void **state)
{
  struct nbd_srv_metrics *m;
  struct nbd_srv_export_metrics *em;
  struct sockaddr_in a = { .sin_family = AF_INET };
  char *ans;
  int port, idle;

  assert_int_equal (nbd_srv_metrics_new (&m), 0);
  assert_int_equal (nbd_srv_metrics_start (m, "127.0.0.1:0"), 0);
  port = nbd_srv_metrics_port (m);
  assert_true (port > 0);
  em = nbd_srv_metrics_export (m, "disk");
  nbd_srv_metrics_req_begin (em, NBD_SRV_MOP_WRITE, 512);
  nbd_srv_metrics_req_end (em, NBD_SRV_MOP_WRITE, 512,
                           nbd_srv_metrics_now_ns (), false);

  /* A client that connects and says nothing: the next one still gets
   * its answer (after the first one's deadline at worst). */
  idle = socket (AF_INET, SOCK_STREAM, 0);
  a.sin_port = htons (port);
  a.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  assert_int_equal (connect (idle, (struct sockaddr *) &a, sizeof a), 0);

  ans = http (port, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
  assert_true (!strncmp (ans, "HTTP/1.0 200 OK\r\n", 17));
  assert_non_null (strstr (ans, "Content-Type: text/plain; version=0.0.4"));
  assert_true (sample (strstr (ans, "\r\n\r\n") + 4,
                       "vbk_blockd_requests_total{export=\"disk\","
                       "op=\"write\"}") == 1);
  {
    /* Content-Length is the body's length. */
    const char *cl = strstr (ans, "Content-Length: ");
    assert_non_null (cl);
    assert_int_equal (strtoul (cl + 16, NULL, 10),
                      strlen (strstr (ans, "\r\n\r\n") + 4));
  }
  free (ans);
  close (idle);

  ans = http (port, "GET /other HTTP/1.0\r\n\r\n");
  assert_true (!strncmp (ans, "HTTP/1.0 404 ", 13));
  free (ans);
  ans = http (port, "GET /metricsfoo HTTP/1.0\r\n\r\n");
  assert_true (!strncmp (ans, "HTTP/1.0 404 ", 13));
  free (ans);
  ans = http (port, "POST /metrics HTTP/1.0\r\n\r\n");
  assert_true (!strncmp (ans, "HTTP/1.0 405 ", 13));
  free (ans);
  ans = http (port, "GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_true (!strncmp (ans, "HTTP/1.0 200 OK\r\n", 17));
  free (ans);

  /* Bad addresses. */
  assert_int_equal (nbd_srv_metrics_start (m, "nonsense"), -EINVAL);
  nbd_srv_metrics_free (m);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_counters_and_format),
    cmocka_unit_test (test_http),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
