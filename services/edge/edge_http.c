/*
 * edge_http: the HTTP/1.1 server of the edge, over libmicrohttpd (0.9.75).
 *
 * Threads: one epoll loop per thread of a pool (CREDEX_EDGE_HTTP_THREADS). Sockets are read and
 * written event-driven, so a slow client holds a connection, never a thread. A loop never waits
 * on the gateway either: a request that needs a gateway call (a route, /readyz) has its
 * connection suspended and is handed to one of CREDEX_RPC_THREADS call threads, which makes the
 * call, keeps the answer in the request and resumes the connection; libmicrohttpd then calls the
 * handler once more, on the connection's loop, to queue that answer. Without this, a connection
 * waiting on the gateway would hold up every other connection its loop serves.
 *
 * One request, as libmicrohttpd calls the handler:
 *   1. headers complete (first call): every decision that needs no body is taken here: header
 *      size, guardrails (Sec-Fetch-Site, Origin), path decoding and the route, framing, media
 *      type, body size announced by Content-Length, Authorization, query string. A refusal is
 *      queued at once (libmicrohttpd then closes the connection without reading the body).
 *   2. body chunks: copied into a buffer that is wiped when freed (bodies carry secret values),
 *      bounded in size and in time; a chunked body that grows past the limit, or a body that
 *      takes too long, is drained and discarded, then refused with the connection closed
 *      (libmicrohttpd 0.9.75 cannot answer while a body is still arriving).
 *   3. request complete (last call): /healthz, the OpenAPI document or a preflight is answered
 *      at once; /readyz and a route go to the call threads (above), and the call after the
 *      resume queues their answer. Queuing the answer from the handler keeps the connection
 *      alive.
 * The request-completed callback writes the access log line and frees the context.
 *
 * libmicrohttpd is told not to unescape paths (edge_text.c decodes each segment itself) and
 * not to log (its messages quote request paths).
 */
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "common/log/cx_log.h"
#include "common/ops/cx_ops.h"
#include "services/edge/edge_internal.h"
#include "services/edge/edge_openapi.h"

#define EDGE_READY_TIMEOUT_MS 1000u
#define EDGE_CORS_MAX_AGE     "600"
#define EDGE_CORS_METHODS     "GET, POST, PATCH, DELETE"
#define EDGE_CORS_HEADERS     "Authorization, Content-Type, X-Correlation-Id"
#define EDGE_PEM_MAX          (1024 * 1024)
/* How long past the request timeout a refused body is still drained so that the client can
 * read the refusal; after that (or 4 times the body limit) the connection is closed. */
#define EDGE_DRAIN_GRACE_MS 5000

typedef enum edge_target {
    EDGE_T_ROUTE,
    EDGE_T_HEALTHZ,
    EDGE_T_READYZ,
    EDGE_T_PREFLIGHT,
    EDGE_T_OPENAPI /* EDGE_OPENAPI_PATH: the document built at setup */
} edge_target_t;

/* One request's state, from the first call of the handler to the completed callback. */
typedef struct edge_req {
    const edge_t *edge;
    int64_t start_ms;
    const char *method_log; /* a method name for the log (never an arbitrary token) */
    edge_method_t method;
    bool method_known;
    char cid[RPC_CORRELATION_ID_MAX + 1];
    char traceparent[RPC_TRACEPARENT_LEN + 1]; /* the edge's span, sent to the gateway */
    char trace_id[RPC_TRACE_ID_LEN + 1];       /* the client's trace, or a new one */
    const char *cors_origin; /* the allowed origin to echo (points into edge->origins) */
    edge_target_t target;
    const char *route_log; /* template or fixed path for the log; never the raw path */
    rpc_arena_t *arena;    /* path, query, token, request and reply; wiped on free */
    edge_match_t match;
    edge_query_t query;
    char *token;
    bool has_body;
    char *body; /* wiped on free */
    size_t body_len, body_cap;
    edge_refusal_t pending; /* a body being drained before this refusal is answered */
    size_t drained;
    unsigned status; /* what was answered (0: nothing, the connection was closed) */
    /* The gateway call on a call thread (edge_calls below). */
    struct MHD_Connection *conn; /* suspended while the call runs */
    struct edge_req *next;       /* in the call queue */
    bool answered;               /* the call is done: queue `answer` */
    edge_answer_t answer;
} edge_req_t;

/* The call threads: a FIFO of requests whose connections are suspended, and the threads that
 * make their gateway calls. The queue needs no limit of its own: a connection has at most one
 * request in flight, so it never holds more than CREDEX_EDGE_HTTP_MAX_CONNECTIONS entries. */
struct edge_calls {
    pthread_mutex_t mu;
    pthread_cond_t wake;
    edge_req_t *head, *tail;
    bool stopping; /* no new entries; the threads end once the queue is empty */
    size_t nthreads;
    pthread_t threads[];
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void wipe_free(char *p, size_t n)
{
    if (p == NULL)
        return;
    explicit_bzero(p, n);
    free(p);
}

static void req_free(edge_req_t *rq)
{
    if (rq == NULL)
        return;
    wipe_free(rq->body, rq->body_cap);
    edge_answer_free(&rq->answer);
    rpc_arena_free(rq->arena);
    free(rq);
}

static const char *method_for_log(const char *m)
{
    static const char *const known[] = {"GET",    "HEAD",    "POST",  "PUT",    "PATCH",
                                        "DELETE", "OPTIONS", "TRACE", "CONNECT"};
    for (size_t i = 0; m != NULL && i < sizeof(known) / sizeof(known[0]); i++)
        if (strcmp(m, known[i]) == 0)
            return known[i];
    return "other";
}

/* ---- responses ------------------------------------------------------------------------------ */

static void body_free(void *cls)
{
    char *b = cls;
    wipe_free(b, strlen(b));
}

static void add_headers(struct MHD_Response *resp, const edge_req_t *rq, bool json)
{
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, "Content-Security-Policy",
                            "default-src 'none'; frame-ancestors 'none'");
    MHD_add_response_header(resp, "Vary", "Origin");
    MHD_add_response_header(resp, "X-Correlation-Id", rq->cid);
    if (json)
        MHD_add_response_header(resp, "Content-Type", "application/json");
    if (rq->cors_origin != NULL) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", rq->cors_origin);
        MHD_add_response_header(resp, "Access-Control-Expose-Headers", "X-Correlation-Id");
    }
}

/* The Allow header's value for a set of method bits. */
static void allow_value(unsigned allowed, char *buf, size_t bufsz)
{
    size_t o = 0;
    buf[0] = '\0';
    for (unsigned m = 0; m < EDGE_METHOD_COUNT_; m++)
        if (allowed & (1u << m))
            o += (size_t)snprintf(buf + o, bufsz - o, "%s%s", o ? ", " : "", edge_method_name(m));
}

/* Queue an answer (taking its body) with the security headers; close: Connection: close. */
static enum MHD_Result send_answer(struct MHD_Connection *c, edge_req_t *rq, edge_answer_t *a,
                                   bool close, const char *allow)
{
    struct MHD_Response *resp;
    bool json = a->body != NULL;
    if (json) {
        resp = MHD_create_response_from_buffer_with_free_callback_cls(a->len, a->body, body_free,
                                                                      a->body);
        if (resp == NULL) {
            edge_answer_free(a);
            return MHD_NO;
        }
        a->body = NULL; /* the response owns it now */
    } else {
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        if (resp == NULL)
            return MHD_NO;
        if (a->status == 200)
            a->status = 500; /* a body could not be built */
    }
    add_headers(resp, rq, json);
    if (a->location != NULL)
        MHD_add_response_header(resp, "Location", a->location);
    if (allow != NULL)
        MHD_add_response_header(resp, "Allow", allow);
    if (close)
        MHD_add_response_header(resp, "Connection", "close");
    enum MHD_Result r = MHD_queue_response(c, a->status, resp);
    MHD_destroy_response(resp);
    if (r == MHD_YES)
        rq->status = a->status;
    return r;
}

static enum MHD_Result refuse(struct MHD_Connection *c, edge_req_t *rq, edge_refusal_t why,
                              const cx_error_t *err, bool close)
{
    edge_answer_t a = {0};
    char allow[64];
    cx_log_info(rq->cid, "edge.refused", CX_LOG_STR("reason", edge_refusal(why)->name),
                CX_LOG_STR("method", rq->method_log), CX_LOG_STR("route", rq->route_log));
    edge_answer_refusal(&a, why, err, rq->cid);
    if (why == EDGE_R_METHOD)
        allow_value(rq->match.allowed, allow, sizeof(allow));
    return send_answer(c, rq, &a, close, why == EDGE_R_METHOD ? allow : NULL);
}

static enum MHD_Result send_preflight(struct MHD_Connection *c, edge_req_t *rq)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (resp == NULL)
        return MHD_NO;
    add_headers(resp, rq, false);
    MHD_add_response_header(resp, "Access-Control-Allow-Methods", EDGE_CORS_METHODS);
    MHD_add_response_header(resp, "Access-Control-Allow-Headers", EDGE_CORS_HEADERS);
    MHD_add_response_header(resp, "Access-Control-Max-Age", EDGE_CORS_MAX_AGE);
    enum MHD_Result r = MHD_queue_response(c, 204, resp);
    MHD_destroy_response(resp);
    if (r == MHD_YES)
        rq->status = 204;
    return r;
}

/* ---- the headers of a request ---------------------------------------------------------------- */

typedef struct header_scan {
    size_t bytes;
    const char *authorization, *origin, *content_type, *content_length, *correlation_id;
    unsigned n_authorization, n_origin, n_content_type, n_content_length;
    bool transfer_encoding;
    bool fetch_cross, fetch_same; /* Sec-Fetch-Site said so (any of its values) */
    bool allow_same_site;
} header_scan_t;

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   size_t key_size, const char *value, size_t value_size)
{
    header_scan_t *s = cls;
    (void)kind;
    s->bytes += key_size + value_size + 4; /* "key: value\r\n" */
    if (value == NULL)
        return MHD_YES;
    if (strcasecmp(key, "Authorization") == 0) {
        s->authorization = value;
        s->n_authorization++;
    } else if (strcasecmp(key, "Origin") == 0) {
        s->origin = value;
        s->n_origin++;
    } else if (strcasecmp(key, "Content-Type") == 0) {
        s->content_type = value;
        s->n_content_type++;
    } else if (strcasecmp(key, "Content-Length") == 0) {
        s->content_length = value;
        s->n_content_length++;
    } else if (strcasecmp(key, "Transfer-Encoding") == 0) {
        s->transfer_encoding = true;
    } else if (strcasecmp(key, "Sec-Fetch-Site") == 0) {
        edge_refusal_t r = edge_fetch_site_check(value, s->allow_same_site);
        s->fetch_cross |= r == EDGE_R_CROSS_SITE;
        s->fetch_same |= r == EDGE_R_SAME_SITE;
    } else if (strcasecmp(key, "X-Correlation-Id") == 0 && s->correlation_id == NULL &&
               rpc_correlation_id_valid(value, value_size)) {
        s->correlation_id = value;
    }
    return MHD_YES;
}

static enum MHD_Result count_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                 size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    (void)key;
    (void)value;
    *(size_t *)cls += key_size + value_size + 2;
    return MHD_YES;
}

typedef struct query_scan {
    edge_req_t *rq;
    cx_error_t err;
    bool failed;
} query_scan_t;

static enum MHD_Result add_arg(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
                               const char *value, size_t value_size)
{
    query_scan_t *q = cls;
    (void)kind;
    if (!edge_query_add(&q->rq->query, q->rq->arena, key, key_size, value, value_size, &q->err)) {
        q->failed = true;
        return MHD_NO;
    }
    return MHD_YES;
}

/* Content-Length as a number; false when it is not plain decimal. */
static bool parse_length(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (s == NULL || *s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return true;
}

/* ---- the first call: everything decided before the body ----------------------------------- */

static enum MHD_Result first_call(struct MHD_Connection *c, edge_req_t *rq, const char *url,
                                  const char *method)
{
    const edge_t *e = rq->edge;
    const cx_config_t *cfg = e->cfg;
    header_scan_t h = {.allow_same_site = cfg->edge_allow_same_site};
    cx_error_t err;
    cx_error_clear(&err);

    MHD_get_connection_values_n(c, MHD_HEADER_KIND, scan_header, &h);
    h.bytes += strlen(url) + strlen(method) + 12; /* the request line */
    MHD_get_connection_values_n(c, MHD_GET_ARGUMENT_KIND, count_arg, &h.bytes);
    if (h.correlation_id != NULL)
        snprintf(rq->cid, sizeof(rq->cid), "%s", h.correlation_id);
    else
        rpc_correlation_id_new(rq->cid, sizeof(rq->cid));
    /* W3C trace context: a valid traceparent continues the client's trace (rpc_trace_child). */
    rpc_trace_child(MHD_lookup_connection_value(c, MHD_HEADER_KIND, RPC_TRACEPARENT_HEADER),
                    rq->traceparent, rq->trace_id);
    cx_log_set_trace(rq->trace_id);

    if (h.bytes > cfg->edge_max_header_bytes)
        return refuse(c, rq, EDGE_R_HEADERS_TOO_LARGE, NULL, true);
    if (h.n_authorization > 1 || h.n_origin > 1 || h.n_content_type > 1)
        return refuse(c, rq, EDGE_R_DUPLICATE_HEADER, NULL, true);
    if (h.fetch_cross)
        return refuse(c, rq, EDGE_R_CROSS_SITE, NULL, true);
    if (h.fetch_same)
        return refuse(c, rq, EDGE_R_SAME_SITE, NULL, true);
    if (h.origin != NULL) {
        for (size_t i = 0; i < e->origins.n && rq->cors_origin == NULL; i++)
            if (strcmp(e->origins.origin[i], h.origin) == 0)
                rq->cors_origin = e->origins.origin[i];
        if (rq->cors_origin == NULL)
            return refuse(c, rq, EDGE_R_ORIGIN, NULL, true);
    }
    if (strcmp(method, "OPTIONS") == 0) {
        if (rq->cors_origin == NULL)
            return refuse(c, rq, EDGE_R_PREFLIGHT, NULL, true);
        rq->target = EDGE_T_PREFLIGHT;
        return MHD_YES;
    }

    edge_path_t path;
    if (!edge_path_parse(url, rq->arena, &path, &err))
        return refuse(c, rq, EDGE_R_BAD_REQUEST, &err, true);
    rq->method_known = edge_method_parse(method, &rq->method);
    bool probe =
        path.n == 1 && (strcmp(path.seg[0], "healthz") == 0 || strcmp(path.seg[0], "readyz") == 0);
    bool openapi = path.n == 3 && strcmp(path.seg[0], "api") == 0 &&
                   strcmp(path.seg[1], "credentials") == 0 &&
                   strcmp(path.seg[2], "openapi.json") == 0; /* EDGE_OPENAPI_PATH */
    if (openapi) {
        rq->target = EDGE_T_OPENAPI;
        rq->route_log = EDGE_OPENAPI_PATH;
        probe = true; /* answered like a probe: by the edge, without authentication */
    } else if (probe) {
        rq->target = path.seg[0][0] == 'h' ? EDGE_T_HEALTHZ : EDGE_T_READYZ;
        rq->route_log = rq->target == EDGE_T_HEALTHZ ? "/healthz" : "/readyz";
    }
    if (probe) {
        rq->match.allowed = 1u << EDGE_GET;
        if (!rq->method_known || rq->method != EDGE_GET)
            return refuse(c, rq, EDGE_R_METHOD, NULL, true);
    } else {
        edge_route_match(&path, rq->method_known ? rq->method : EDGE_METHOD_COUNT_, &rq->match);
        if (rq->match.template_ == NULL)
            return refuse(c, rq, EDGE_R_NOT_FOUND, NULL, true);
        rq->route_log = rq->match.template_;
        if (rq->match.route == NULL)
            return refuse(c, rq, EDGE_R_METHOD, NULL, true);
    }

    /* The body: framing, media type, size. */
    uint64_t length = 0;
    if (h.n_content_length > 1 || (h.n_content_length == 1 && h.transfer_encoding))
        return refuse(c, rq, EDGE_R_FRAMING, NULL, true);
    if (h.content_length != NULL && !parse_length(h.content_length, &length))
        return refuse(c, rq, EDGE_R_FRAMING, NULL, true);
    rq->has_body = length > 0 || h.transfer_encoding;
    bool takes_body = rq->method_known && (rq->method == EDGE_POST || rq->method == EDGE_PATCH);
    if ((rq->has_body || takes_body) && !edge_content_type_is_json(h.content_type))
        return refuse(c, rq, EDGE_R_MEDIA_TYPE, NULL, true);
    bool route_body = rq->target == EDGE_T_ROUTE && rq->match.route->body;
    if (rq->has_body && !route_body)
        return refuse(c, rq, EDGE_R_UNEXPECTED_BODY, NULL, true);
    if (length > cfg->edge_max_body_bytes)
        return refuse(c, rq, EDGE_R_BODY_TOO_LARGE, NULL, true);
    if (probe)
        return MHD_YES; /* no authentication: process and gateway health */

    const char *token = NULL;
    size_t tlen = 0;
    if (!edge_bearer_token(h.authorization, &token, &tlen))
        return refuse(c, rq, EDGE_R_UNAUTHENTICATED, NULL, true);
    rq->token = rpc_arena_strndup(rq->arena, token, tlen);

    query_scan_t qs = {.rq = rq};
    MHD_get_connection_values_n(c, MHD_GET_ARGUMENT_KIND, add_arg, &qs);
    if (qs.failed)
        return refuse(c, rq, EDGE_R_BAD_REQUEST, &qs.err, true);

    if (rq->has_body) {
        rq->body_cap = length > 0 ? (size_t)length : 4096;
        if (rq->body_cap > cfg->edge_max_body_bytes)
            rq->body_cap = cfg->edge_max_body_bytes;
        rq->body = malloc(rq->body_cap);
        if (rq->body == NULL)
            return MHD_NO;
    }
    return MHD_YES;
}

/* ---- body chunks ---------------------------------------------------------------------------- */

/* Append a chunk, or drain it while a refusal is pending. MHD_NO closes the connection: a
 * client that keeps sending far past the limits is not read any further. */
static enum MHD_Result body_chunk(edge_req_t *rq, const char *data, size_t size)
{
    const cx_config_t *cfg = rq->edge->cfg;
    int64_t elapsed = now_ms() - rq->start_ms;
    if (rq->pending == EDGE_R_NONE && rq->body == NULL) /* e.g. an OPTIONS with a body */
        rq->pending = EDGE_R_UNEXPECTED_BODY;
    if (rq->pending == EDGE_R_NONE && elapsed > (int64_t)cfg->edge_request_timeout_ms)
        rq->pending = EDGE_R_TIMEOUT;
    if (rq->pending == EDGE_R_NONE && size > cfg->edge_max_body_bytes - rq->body_len)
        rq->pending = EDGE_R_BODY_TOO_LARGE;
    if (rq->pending != EDGE_R_NONE) {
        rq->drained += size;
        if (rq->drained > 4 * cfg->edge_max_body_bytes ||
            elapsed > (int64_t)cfg->edge_request_timeout_ms + EDGE_DRAIN_GRACE_MS) {
            cx_log_info(rq->cid, "edge.refused",
                        CX_LOG_STR("reason", edge_refusal(rq->pending)->name),
                        CX_LOG_STR("method", rq->method_log), CX_LOG_STR("route", rq->route_log),
                        CX_LOG_BOOL("closed", true));
            return MHD_NO;
        }
        return MHD_YES;
    }
    if (rq->body_len + size > rq->body_cap) {
        size_t cap = rq->body_cap;
        while (cap < rq->body_len + size)
            cap = cap * 2 < cfg->edge_max_body_bytes ? cap * 2 : cfg->edge_max_body_bytes;
        char *grown = malloc(cap);
        if (grown == NULL)
            return MHD_NO;
        memcpy(grown, rq->body, rq->body_len);
        wipe_free(rq->body, rq->body_cap);
        rq->body = grown;
        rq->body_cap = cap;
    }
    memcpy(rq->body + rq->body_len, data, size);
    rq->body_len += size;
    return MHD_YES;
}

/* ---- the last call: the answer ------------------------------------------------------------ */

/* The answer of a request that needs the gateway (a route or /readyz), into rq->answer. Blocks
 * for at most the call's deadline; runs on a call thread. */
static void req_call(edge_req_t *rq)
{
    const edge_t *e = rq->edge;
    cx_log_set_trace(rq->trace_id);
    if (rq->target == EDGE_T_READYZ) {
        cx_error_t err;
        cx_error_clear(&err);
        if (edge_gateway_ready(e, rq->cid, EDGE_READY_TIMEOUT_MS, &err))
            edge_answer_text(&rq->answer, 200, "{\"status\":\"ok\"}");
        else
            edge_answer_error(&rq->answer, 503, err.code, err.message, rq->cid);
    } else {
        edge_call_in_t in = {.match = &rq->match,
                             .query = &rq->query,
                             .body = rq->body,
                             .body_len = rq->body_len,
                             .token = rq->token,
                             .correlation_id = rq->cid,
                             .traceparent = rq->traceparent,
                             .arena = rq->arena};
        edge_call_route(e, &in, &rq->answer);
    }
    cx_log_set_trace(NULL);
    /* The request body is not needed any more: wipe it now rather than at completion. */
    if (rq->body != NULL)
        explicit_bzero(rq->body, rq->body_cap);
    rq->answered = true;
}

/* Once the edge is stopping no gateway call starts: the answer is 503, so that stopping takes
 * at most one deadline (the calls already running), whatever the queue holds. */
static void req_refuse_stopping(edge_req_t *rq)
{
    edge_answer_error(&rq->answer, 0, CX_ERR_UNAVAILABLE, "the edge is stopping", rq->cid);
    rq->answered = true;
}

static void *calls_main(void *arg)
{
    struct edge_calls *q = arg;
    for (;;) {
        pthread_mutex_lock(&q->mu);
        while (q->head == NULL && !q->stopping)
            pthread_cond_wait(&q->wake, &q->mu);
        edge_req_t *rq = q->head;
        bool stopping = q->stopping;
        if (rq != NULL && (q->head = rq->next) == NULL)
            q->tail = NULL;
        pthread_mutex_unlock(&q->mu);
        if (rq == NULL)
            return NULL; /* stopping, and nothing left */
        if (stopping)
            req_refuse_stopping(rq);
        else
            req_call(rq);
        /* The loop owns rq again from here on (it may complete and free it at once). */
        MHD_resume_connection(rq->conn);
    }
}

/* Suspend the connection and queue its request for a call thread; false (nothing done) once
 * the threads are stopping. */
static bool calls_submit(struct edge_calls *q, struct MHD_Connection *c, edge_req_t *rq)
{
    pthread_mutex_lock(&q->mu);
    if (q->stopping) {
        pthread_mutex_unlock(&q->mu);
        return false;
    }
    rq->conn = c;
    rq->next = NULL;
    /* Under the lock, so that a thread cannot resume the connection before it is suspended. */
    MHD_suspend_connection(c);
    if (q->tail != NULL)
        q->tail->next = rq;
    else
        q->head = rq;
    q->tail = rq;
    pthread_cond_signal(&q->wake);
    pthread_mutex_unlock(&q->mu);
    return true;
}

static struct edge_calls *calls_start(size_t nthreads, cx_error_t *err)
{
    struct edge_calls *q = calloc(1, sizeof(*q) + nthreads * sizeof(pthread_t));
    if (q == NULL) {
        cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->wake, NULL);
    for (; q->nthreads < nthreads; q->nthreads++)
        if (pthread_create(&q->threads[q->nthreads], NULL, calls_main, q) != 0)
            break;
    if (q->nthreads == 0) {
        pthread_cond_destroy(&q->wake);
        pthread_mutex_destroy(&q->mu);
        free(q);
        cx_error_set(err, CX_ERR_UNAVAILABLE, "CREDEX_RPC_THREADS: cannot start the call threads");
        return NULL;
    }
    return q;
}

/* Refuse new entries, let the threads finish the calls they run and answer the queued requests
 * 503 (each resumes its connection), join them and free the queue. NULL-safe. */
static void calls_stop(struct edge_calls *q)
{
    if (q == NULL)
        return;
    pthread_mutex_lock(&q->mu);
    q->stopping = true;
    pthread_cond_broadcast(&q->wake);
    pthread_mutex_unlock(&q->mu);
    for (size_t i = 0; i < q->nthreads; i++)
        pthread_join(q->threads[i], NULL);
    pthread_cond_destroy(&q->wake);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

static enum MHD_Result last_call(struct MHD_Connection *c, edge_req_t *rq)
{
    const edge_t *e = rq->edge;
    edge_answer_t a = {0};
    if (rq->answered) /* back from a call thread */
        return send_answer(c, rq, &rq->answer, false, NULL);
    if (rq->pending != EDGE_R_NONE)
        return refuse(c, rq, rq->pending, NULL, true);
    if (rq->has_body && now_ms() - rq->start_ms > (int64_t)e->cfg->edge_request_timeout_ms)
        return refuse(c, rq, EDGE_R_TIMEOUT, NULL, true);
    switch (rq->target) {
    case EDGE_T_PREFLIGHT:
        return send_preflight(c, rq);
    case EDGE_T_HEALTHZ:
        edge_answer_text(&a, 200, "{\"status\":\"ok\"}");
        return send_answer(c, rq, &a, false, NULL);
    case EDGE_T_OPENAPI:
        if (e->cfg->credentials_enabled)
            edge_answer_text(&a, 200, e->openapi);
        else
            edge_answer_error(&a, 0, CX_ERR_FEATURE_DISABLED,
                              "credentials are disabled (CAIPE_CREDENTIALS_ENABLED=false)",
                              rq->cid);
        return send_answer(c, rq, &a, false, NULL);
    case EDGE_T_READYZ:
    case EDGE_T_ROUTE:
        break;
    }
    if (calls_submit(e->calls, c, rq))
        return MHD_YES; /* suspended until a call thread resumes it */
    req_refuse_stopping(rq);
    return send_answer(c, rq, &rq->answer, false, NULL);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    (void)version;
    edge_req_t *rq = *con_cls;
    if (rq == NULL) {
        rq = calloc(1, sizeof(*rq));
        if (rq == NULL)
            return MHD_NO;
        rq->edge = cls;
        rq->start_ms = now_ms();
        rq->method_log = method_for_log(method);
        rq->route_log = "-";
        rq->arena = rpc_arena_new(4096);
        *con_cls = rq;
        enum MHD_Result r = first_call(c, rq, url, method); /* sets the request's trace */
        cx_log_set_trace(NULL);
        return r;
    }
    enum MHD_Result r;
    cx_log_set_trace(rq->trace_id);
    if (*upload_data_size > 0) {
        r = body_chunk(rq, upload_data, *upload_data_size);
        *upload_data_size = 0;
    } else {
        r = last_call(c, rq);
    }
    cx_log_set_trace(NULL);
    return r;
}

static const char *ending(enum MHD_RequestTerminationCode toe)
{
    switch (toe) {
    case MHD_REQUEST_TERMINATED_COMPLETED_OK:
        return "ok";
    case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED:
        return "idle_timeout";
    case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN:
        return "shutdown";
    case MHD_REQUEST_TERMINATED_CLIENT_ABORT:
    case MHD_REQUEST_TERMINATED_READ_ERROR:
        return "client_gone";
    default:
        return "error";
    }
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    edge_req_t *rq = *con_cls;
    if (rq == NULL)
        return;
    cx_log_set_trace(rq->trace_id);
    cx_log_info(rq->cid, "edge.request", CX_LOG_STR("method", rq->method_log),
                CX_LOG_STR("route", rq->route_log), CX_LOG_INT("status", rq->status),
                CX_LOG_INT("ms", now_ms() - rq->start_ms), CX_LOG_STR("end", ending(toe)));
    cx_log_set_trace(NULL);
    req_free(rq);
    *con_cls = NULL;
}

static size_t keep_escaped(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s);
}

/* ---- start and stop ---------------------------------------------------------------------- */

/* host and port of "host:port" or "[v6]:port", resolved for listening. */
static char *read_pem(const char *path, const char *var, cx_error_t *err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: cannot read the file", var);
        return NULL;
    }
    char *buf = malloc(EDGE_PEM_MAX + 1);
    size_t n = buf != NULL ? fread(buf, 1, EDGE_PEM_MAX + 1, f) : 0;
    fclose(f);
    if (buf == NULL || n == 0 || n > EDGE_PEM_MAX || memchr(buf, '\0', n) != NULL) {
        wipe_free(buf, EDGE_PEM_MAX + 1);
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: not a PEM file of at most 1 MiB", var);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

bool edge_http_start(edge_t *e, cx_error_t *err)
{
    const cx_config_t *cfg = e->cfg;
    struct sockaddr_storage ss;
    socklen_t sslen = 0;
    char *cert = NULL, *key = NULL;
    bool ok = false;
    bool tls = cfg->edge_tls_cert[0] != '\0';

    if (!MHD_is_feature_supported(MHD_FEATURE_EPOLL) ||
        !MHD_is_feature_supported(MHD_FEATURE_THREADS))
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "libmicrohttpd lacks epoll or thread support");
    if (tls && !MHD_is_feature_supported(MHD_FEATURE_TLS))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "CREDEX_EDGE_HTTP_TLS_CERT: this libmicrohttpd has no TLS support");
    if (cfg->edge_max_connections < cfg->edge_http_threads)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "CREDEX_EDGE_HTTP_MAX_CONNECTIONS: expected at least "
                            "CREDEX_EDGE_HTTP_THREADS (%u)",
                            cfg->edge_http_threads);
    if (!cx_ops_listen_address(cfg->edge_http_addr, "CREDEX_EDGE_HTTP_ADDR", &ss, &sslen, err))
        return false;
    if (tls && ((cert = read_pem(cfg->edge_tls_cert, "CREDEX_EDGE_HTTP_TLS_CERT", err)) == NULL ||
                (key = read_pem(cfg->edge_tls_key, "CREDEX_EDGE_HTTP_TLS_KEY", err)) == NULL))
        goto out;

    struct MHD_OptionItem tls_opts[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, cert},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, key},
        {MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"},
        {MHD_OPTION_END, 0, NULL},
    };
    if ((e->calls = calls_start(cfg->rpc_threads, err)) == NULL)
        goto out;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_ALLOW_SUSPEND_RESUME;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    if (tls)
        flags |= MHD_USE_TLS;
    /* libmicrohttpd parses the headers inside the connection's memory pool: twice our limit
     * plus room for the body buffer, so that our own 431 (JSON, our headers) answers first. */
    size_t pool = 2 * cfg->edge_max_header_bytes + 32 * 1024;
    e->http = MHD_start_daemon(
        flags, 0, NULL, NULL, handle, e, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)cfg->edge_http_threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)cfg->edge_max_connections,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int)cfg->edge_max_connections_per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)cfg->edge_idle_timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, pool, MHD_OPTION_NOTIFY_COMPLETED, completed, e,
        MHD_OPTION_UNESCAPE_CALLBACK, keep_escaped, e, MHD_OPTION_STRICT_FOR_CLIENT, (int)1,
        MHD_OPTION_ARRAY, tls ? tls_opts : &tls_opts[3], MHD_OPTION_END);
    if (e->http == NULL) {
        cx_error_set(err, CX_ERR_UNAVAILABLE, "%s",
                     tls ? "CREDEX_EDGE_HTTP_TLS_CERT, CREDEX_EDGE_HTTP_TLS_KEY: the HTTP server "
                           "did not start (not a certificate and its key in PEM?)"
                         : "CREDEX_EDGE_HTTP_ADDR: the HTTP server did not start");
        calls_stop(e->calls);
        e->calls = NULL;
        goto out;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(e->http, MHD_DAEMON_INFO_BIND_PORT);
    e->http_port = info != NULL ? info->port : 0;
    ok = true;
out:
    /* libmicrohttpd loaded the key into its TLS credentials at start. */
    if (key != NULL)
        wipe_free(key, strlen(key));
    free(cert);
    return ok;
}

void edge_http_stop(edge_t *e)
{
    if (e == NULL || e->http == NULL)
        return;
    MHD_socket fd = MHD_quiesce_daemon(e->http);
    /* Every suspended connection must be resumed before the daemon stops: the call threads
     * empty their queue first. */
    calls_stop(e->calls);
    e->calls = NULL;
    MHD_stop_daemon(e->http);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    e->http = NULL;
}
