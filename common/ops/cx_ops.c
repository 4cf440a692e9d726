/* cx_ops: the plain-HTTP operations listener (see cx_ops.h). */
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/metrics/cx_metrics.h"
#include "common/ops/cx_ops.h"

struct cx_ops {
    struct MHD_Daemon *d;
    cx_ops_ready_fn ready;
    void *ctx;
    int port;
};

bool cx_ops_listen_address(const char *addr, const char *var, struct sockaddr_storage *ss,
                           socklen_t *sslen, cx_error_t *err)
{
    char host[128];
    const char *colon = strrchr(addr, ':');
    size_t hlen = colon != NULL ? (size_t)(colon - addr) : 0;
    const char *h = addr;
    if (hlen >= 2 && addr[0] == '[' && addr[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    if (colon == NULL || hlen == 0 || hlen >= sizeof(host))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: not host:port", var);
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || res == NULL)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: the host does not resolve", var);
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sslen = res->ai_addrlen;
    freeaddrinfo(res);

    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "%s: no socket", var);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    bool ok = bind(fd, (const struct sockaddr *)ss, *sslen) == 0;
    int saved = errno;
    close(fd);
    if (!ok)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "%s: cannot listen (%s)", var,
                            strerror(saved));
    return true;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *ctype,
                             char *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (r == NULL) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result text(struct MHD_Connection *conn, unsigned status, const char *s)
{
    return reply(conn, status, "text/plain; charset=utf-8", (char *)s, strlen(s),
                 MHD_RESPMEM_PERSISTENT);
}

/* Answers on the first call, with the headers: a body, if any, is never read (libmicrohttpd
 * closes the connection rather than keep it for the unread body). */
static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    cx_ops_t *ops = cls;
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;
    bool known =
        strcmp(url, "/metrics") == 0 || strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0;
    if (!known)
        return text(conn, MHD_HTTP_NOT_FOUND, "not found\n");
    if (!get)
        return text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
    if (strcmp(url, "/healthz") == 0)
        return text(conn, MHD_HTTP_OK, "ok\n");
    if (strcmp(url, "/readyz") == 0) {
        char reason[CX_OPS_REASON_MAX], *body;
        reason[0] = '\0';
        if (ops->ready == NULL || ops->ready(ops->ctx, reason, sizeof(reason)))
            return text(conn, MHD_HTTP_OK, "ready\n");
        size_t n = strnlen(reason, sizeof(reason) - 1);
        if ((body = malloc(n + 2)) == NULL)
            return MHD_NO;
        memcpy(body, reason, n);
        body[n] = '\n';
        body[n + 1] = '\0';
        return reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", body, n + 1,
                     MHD_RESPMEM_MUST_FREE);
    }
    char *body = NULL;
    size_t len = cx_metrics_render(&body);
    return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body, len,
                 MHD_RESPMEM_MUST_FREE);
}

cx_ops_t *cx_ops_start(const char *addr, const char *var, cx_ops_ready_fn ready, void *ctx,
                       cx_error_t *err)
{
    struct sockaddr_storage ss;
    socklen_t sslen = 0;
    if (!cx_ops_listen_address(addr, var, &ss, &sslen, err))
        return NULL;
    cx_ops_t *ops = calloc(1, sizeof(*ops));
    if (ops == NULL) {
        cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    ops->ready = ready;
    ops->ctx = ctx;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ITC;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* Two threads: a readiness probe that waits on a database ping leaves scrapes and liveness
     * answering. */
    ops->d = MHD_start_daemon(flags, 0, NULL, NULL, handle, ops, MHD_OPTION_SOCK_ADDR,
                              (struct sockaddr *)&ss, MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)2,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned int)CX_OPS_MAX_CONNECTIONS,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)CX_OPS_TIMEOUT_S,
                              MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)32 * 1024,
                              MHD_OPTION_STRICT_FOR_CLIENT, (int)1, MHD_OPTION_END);
    if (ops->d == NULL) {
        free(ops);
        cx_error_set(err, CX_ERR_UNAVAILABLE, "%s: the HTTP server did not start", var);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(ops->d, MHD_DAEMON_INFO_BIND_PORT);
    ops->port = info != NULL ? info->port : 0;
    return ops;
}

int cx_ops_port(const cx_ops_t *ops)
{
    return ops->port;
}

void cx_ops_stop(cx_ops_t *ops)
{
    if (ops == NULL)
        return;
    MHD_stop_daemon(ops->d);
    free(ops);
}
