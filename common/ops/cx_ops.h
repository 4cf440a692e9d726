/*
 * cx_ops: the operations listener every credex process serves beside its gRPC port, in plain
 * HTTP for the cluster (Kubernetes probes and Prometheus scrapes present no client certificate):
 *   GET /metrics  the registry of common/metrics in the Prometheus text format 0.0.4
 *   GET /healthz  200 "ok" while the process runs
 *   GET /readyz   200 "ready" when the service can serve, else 503 with a short reason (the
 *                 readiness function's answer: the gRPC health state, common/svc)
 * Anything else is 404 (405 for another method on these paths). No request body is read, no
 * credential material is ever written, connections are bounded in number and time
 * (docs/OBSERVABILITY.md).
 */
#ifndef CREDEX_COMMON_OPS_CX_OPS_H
#define CREDEX_COMMON_OPS_CX_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "common/error/cx_error.h"

#define CX_OPS_MAX_CONNECTIONS 32 /* concurrent connections; more are refused */
#define CX_OPS_TIMEOUT_S       10 /* an idle or slow connection is closed after this */
#define CX_OPS_REASON_MAX      128

typedef struct cx_ops cx_ops_t;

/* Readiness: true when ready; otherwise writes a short, non-secret reason into reason. Called
 * on the listener's threads, concurrently; may block for a bounded time (a health probe). */
typedef bool (*cx_ops_ready_fn)(void *ctx, char *reason, size_t reasonsz);

/* Listen on addr ("host:port"; port 0 picks one) and serve until cx_ops_stop. var names the
 * configuration variable in error messages. ready and ctx must outlive the listener. NULL with
 * err set (invalid_argument: a bad address; unavailable: the port is taken). Starts threads. */
cx_ops_t *cx_ops_start(const char *addr, const char *var, cx_ops_ready_fn ready, void *ctx,
                       cx_error_t *err);
/* The bound port. */
int cx_ops_port(const cx_ops_t *ops);
/* Stop serving, join the threads and free. NULL-safe. */
void cx_ops_stop(cx_ops_t *ops);

/* Resolve "host:port" (host a name, an IPv4 address or a bracketed IPv6 address) into a
 * passive socket address, then bind a probe socket once so that a taken port is reported as
 * such (libmicrohttpd only fails). Errors name var, never the value. Blocking (resolver). */
bool cx_ops_listen_address(const char *addr, const char *var, struct sockaddr_storage *ss,
                           socklen_t *sslen, cx_error_t *err);

#endif
