/*
 * rpc_server: the server side of common/rpc over the gRPC C core.
 *
 * Life of a call (each arrow is one completion-queue event, handled by whichever worker thread
 * dequeues it; the event's tag is a struct rpc_tag embedded in the call):
 *   request_call --TAG_NEW_CALL--> authenticate peer, route, allow-list, gate
 *     rejected:  SEND_INITIAL_MD+SEND_STATUS+RECV_CLOSE --TAG_FINISHED--> free
 *     unary:     RECV_MESSAGE --TAG_UNARY_RECV--> handler; SEND_MD+SEND_MESSAGE+SEND_STATUS+
 *                RECV_CLOSE --TAG_FINISHED--> free
 *     streaming: SEND_MD (TAG_STREAM_MD), RECV_CLOSE (TAG_STREAM_CLOSE) and RECV_MESSAGE
 *                (TAG_STREAM_RECV) in flight together; sends are queued and written one at a
 *                time (TAG_STREAM_SEND); the status goes last (TAG_STREAM_STATUS). Once
 *                RECV_CLOSE has completed (or a send failed) and no receive is armed or being
 *                handled, on_done runs, once; the call is freed when on_done has returned and
 *                no batch is in flight (stream_op_done says who does what, and why).
 * Shutdown order (documented in rpc.h): health NOT_SERVING -> streams finished -> grpc server
 * shutdown with grace -> cancel_all_calls -> queue shutdown -> join workers.
 */
#include <grpc/support/alloc.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/log/cx_log.h"
#include "common/metrics/cx_metrics.h"
#include "common/rpc/rpc_internal.h"

/* ---- packing ---------------------------------------------------------------------------- */

/* Requests and replies carry secret values and data keys. What credex allocates for them is
 * wiped before it is freed: outgoing messages are packed into a buffer of ours that gRPC
 * releases through rpc_owned_release; an incoming message is unpacked straight from the
 * core's slice when it arrived in one piece, else from a contiguous copy in the arena (wiped
 * with it). What the core itself holds (TLS records, HTTP/2 frames, the received slices) is
 * not ours to wipe: docs/THREAT_MODEL.md says what that is and for how long. */

/* Bytes wiped by rpc_owned_release since start: a process-wide statistic, the one way a test
 * can see that memory handed to gRPC was wiped after gRPC let go of it. */
static _Atomic size_t owned_wiped_bytes;

static void owned_release(void *p, size_t len)
{
    explicit_bzero(p, len);
    atomic_fetch_add_explicit(&owned_wiped_bytes, len, memory_order_relaxed);
    free(p);
}

size_t rpc_owned_wiped_bytes(void)
{
    return atomic_load_explicit(&owned_wiped_bytes, memory_order_relaxed);
}

grpc_slice rpc_owned_slice(const void *data, size_t len)
{
    unsigned char *p = malloc(len > 0 ? len : 1);
    if (p == NULL)
        abort();
    memcpy(p, data, len);
    return grpc_slice_new_with_len(p, len, owned_release);
}

grpc_byte_buffer *rpc_pack(const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    unsigned char *p = malloc(n > 0 ? n : 1);
    if (p == NULL)
        abort();
    if (protobuf_c_message_pack(msg, p) != n) {
        owned_release(p, n);
        return NULL;
    }
    grpc_slice s = grpc_slice_new_with_len(p, n, owned_release);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

ProtobufCMessage *
rpc_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *buf, rpc_arena_t *arena,
           bool (*check)(const ProtobufCMessageDescriptor *, const uint8_t *, size_t, cx_error_t *),
           cx_error_t *err)
{
    grpc_byte_buffer_reader r;
    grpc_slice s, first = grpc_empty_slice();
    size_t nslices = 0, total = 0, off = 0;
    ProtobufCAllocator a = rpc_arena_allocator(arena);
    ProtobufCMessage *m = NULL;
    if (!grpc_byte_buffer_reader_init(&r, buf))
        return NULL;
    while (grpc_byte_buffer_reader_next(&r, &s)) {
        total += GRPC_SLICE_LENGTH(s);
        if (nslices++ == 0)
            first = s;
        else
            grpc_slice_unref(s);
    }
    grpc_byte_buffer_reader_destroy(&r);
    if (nslices <= 1) {
        if (!check || check(desc, GRPC_SLICE_START_PTR(first), GRPC_SLICE_LENGTH(first), err))
            m = protobuf_c_message_unpack(desc, &a, GRPC_SLICE_LENGTH(first),
                                          GRPC_SLICE_START_PTR(first));
        goto out;
    }
    /* protobuf-c needs contiguous input: the copy lives (and is wiped) with the arena. */
    unsigned char *flat = rpc_arena_alloc(arena, total);
    if (!grpc_byte_buffer_reader_init(&r, buf))
        goto out;
    while (grpc_byte_buffer_reader_next(&r, &s)) {
        size_t len = GRPC_SLICE_LENGTH(s);
        if (len <= total - off) {
            memcpy(flat + off, GRPC_SLICE_START_PTR(s), len);
            off += len;
        }
        grpc_slice_unref(s);
    }
    grpc_byte_buffer_reader_destroy(&r);
    if (!check || check(desc, flat, off, err))
        m = protobuf_c_message_unpack(desc, &a, off, flat);
out:
    if (m == NULL && (!err || err->code == CX_OK))
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "request does not decode as %s", desc->name);
    grpc_slice_unref(first);
    /* A message of up to 23 bytes is inlined in the slice struct itself: our stack copies. */
    explicit_bzero(&first, sizeof(first));
    explicit_bzero(&s, sizeof(s));
    return m;
}

/* ---- correlation ids ------------------------------------------------------------------- */

bool rpc_correlation_id_valid(const char *s, size_t len)
{
    if (len == 0 || len > RPC_CORRELATION_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

void rpc_correlation_id_new(char *buf, size_t bufsz)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[16];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
        /* Correlation ids are not secrets; a clock-derived id is an acceptable fallback. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        memcpy(raw, &ts, sizeof(raw) < sizeof(ts) ? sizeof(raw) : sizeof(ts));
    }
    size_t i = 0;
    for (; i < sizeof(raw) && 2 * i + 2 < bufsz; i++) {
        buf[2 * i] = hex[raw[i] >> 4];
        buf[2 * i + 1] = hex[raw[i] & 15];
    }
    buf[2 * i] = '\0';
}

/* ---- calls ------------------------------------------------------------------------------ */

static void tag_init(struct rpc_tag *t, enum rpc_tag_kind k, struct rpc_call *c)
{
    t->kind = k;
    t->call = c;
}

static void call_free(struct rpc_call *c)
{
    if (c->counted) {
        pthread_mutex_lock(&c->srv->mu);
        if (--c->srv->active_calls == 0)
            pthread_cond_broadcast(&c->srv->cv);
        pthread_mutex_unlock(&c->srv->mu);
    }
    grpc_metadata_array_destroy(&c->req_md);
    grpc_call_details_destroy(&c->details);
    if (c->recv_buf != NULL)
        grpc_byte_buffer_destroy(c->recv_buf);
    while (c->q_head != NULL) {
        struct rpc_sendq *q = c->q_head;
        c->q_head = q->next;
        grpc_byte_buffer_destroy(q->buf);
        free(q);
    }
    if (c->call != NULL)
        grpc_call_unref(c->call);
    if (c->init_md_set)
        grpc_slice_unref(c->init_md[0].value);
    pthread_mutex_destroy(&c->mu);
    rpc_arena_free(c->arena);
    free(c);
}

/* Ask the core for the next call: to `route` when it is a registered unary method (its
 * request message then arrives with the call, saving a completion-queue round trip), else any
 * unregistered path. */
static void request_call(rpc_server_t *srv, const struct rpc_route *route)
{
    struct rpc_call *c = calloc(1, sizeof(*c));
    if (c == NULL)
        abort();
    c->srv = srv;
    pthread_mutex_init(&c->mu, NULL);
    grpc_metadata_array_init(&c->req_md);
    grpc_call_details_init(&c->details);
    tag_init(&c->t_new, TAG_NEW_CALL, c);
    tag_init(&c->t_recv, TAG_UNARY_RECV, c);
    tag_init(&c->t_done, TAG_FINISHED, c);
    tag_init(&c->t_md, TAG_STREAM_MD, c);
    tag_init(&c->t_send, TAG_STREAM_SEND, c);
    tag_init(&c->t_status, TAG_STREAM_STATUS, c);
    tag_init(&c->t_close, TAG_STREAM_CLOSE, c);
    grpc_call_error e;
    if (route != NULL) {
        c->reg_route = route;
        e = grpc_server_request_registered_call(srv->server, route->registered, &c->call,
                                                &c->reg_deadline, &c->req_md, &c->recv_buf, srv->cq,
                                                srv->cq, &c->t_new);
    } else {
        e = grpc_server_request_call(srv->server, &c->call, &c->details, &c->req_md, srv->cq,
                                     srv->cq, &c->t_new);
    }
    if (e != GRPC_CALL_OK)
        call_free(c);
}

static const grpc_slice *header_find(const struct rpc_call *c, const char *key)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i < c->req_md.count; i++) {
        const grpc_slice *k = &c->req_md.metadata[i].key;
        if (GRPC_SLICE_LENGTH(*k) == klen && memcmp(GRPC_SLICE_START_PTR(*k), key, klen) == 0)
            return &c->req_md.metadata[i].value;
    }
    return NULL;
}

void rpc_call_headers(rpc_call_t *call, const char *const *keys, size_t n, const char **values)
{
    size_t klen[RPC_CALL_HEADERS_MAX], missing = 0;
    if (n > RPC_CALL_HEADERS_MAX)
        abort(); /* a programming error, like an arena overflow */
    for (size_t i = 0; i < n; i++) {
        values[i] = NULL;
        klen[i] = strlen(keys[i]);
        /* Binary headers are never handed out as strings: such a key is never looked up. */
        if (klen[i] > 4 && memcmp(keys[i] + klen[i] - 4, "-bin", 4) == 0)
            klen[i] = SIZE_MAX;
        else
            missing++;
    }
    for (size_t m = 0; m < call->req_md.count && missing > 0; m++) {
        const grpc_slice *k = &call->req_md.metadata[m].key;
        size_t len = GRPC_SLICE_LENGTH(*k);
        for (size_t i = 0; i < n; i++) {
            if (values[i] != NULL || klen[i] != len ||
                memcmp(GRPC_SLICE_START_PTR(*k), keys[i], len) != 0)
                continue;
            const grpc_slice *v = &call->req_md.metadata[m].value;
            values[i] = rpc_arena_strndup(call->arena, (const char *)GRPC_SLICE_START_PTR(*v),
                                          GRPC_SLICE_LENGTH(*v));
            missing--;
        }
    }
}

const char *rpc_call_header(rpc_call_t *call, const char *key)
{
    const char *value = NULL;
    rpc_call_headers(call, &key, 1, &value);
    return value;
}

const char *rpc_call_peer(const rpc_call_t *call)
{
    return call->peer;
}

const cx_error_t *rpc_call_input_error(const rpc_call_t *call)
{
    return call->input_bad ? &call->input_err : NULL;
}

const char *rpc_call_correlation_id(const rpc_call_t *call)
{
    return call->corr;
}

const char *rpc_call_trace_id(const rpc_call_t *call)
{
    return call->trace_id;
}

const char *rpc_call_method(const rpc_call_t *call)
{
    return call->method;
}

int64_t rpc_call_remaining_ms(const rpc_call_t *call)
{
    int64_t left = call->deadline_ms - rpc_now_ms();
    return left > 0 ? left : 0;
}

rpc_arena_t *rpc_call_arena(rpc_call_t *call)
{
    return call->arena;
}

void *rpc_call_alloc(rpc_call_t *call, size_t size)
{
    /* Inside a stream's on_message the message arena is used, so a long stream does not grow. */
    return rpc_arena_alloc(call->msg_arena != NULL ? call->msg_arena : call->arena, size);
}

rpc_server_t *rpc_call_server(rpc_call_t *call)
{
    return call->srv;
}

void *rpc_call_context(const rpc_call_t *call)
{
    return call->srv->context;
}

void rpc_server_set_context(rpc_server_t *srv, void *context)
{
    srv->context = context;
}

void rpc_call_log_field(rpc_call_t *call, cx_log_field_t field)
{
    if (call->nlog_fields >= RPC_ACCESS_LOG_FIELDS)
        return;
    if (field.type == CX_LOG_T_STR && field.v.s != NULL)
        field.v.s = rpc_arena_strndup(call->arena, field.v.s, strlen(field.v.s));
    call->log_fields[call->nlog_fields++] = field;
}

void rpc_call_set_user(rpc_call_t *call, void *user)
{
    call->user = user;
}

void *rpc_call_user(const rpc_call_t *call)
{
    return call->user;
}

/* Fill the initial metadata (correlation id echo) kept in the call. */
static void init_md_fill(struct rpc_call *c)
{
    c->init_md[0].key = grpc_slice_from_static_string(RPC_CORRELATION_HEADER);
    /* Copied: a "static" slice must be immortal (the HPACK encoder may reuse it by address). */
    c->init_md[0].value = grpc_slice_from_copied_string(c->corr);
    c->init_md_set = 1;
}

/* Fill a SEND_STATUS_FROM_SERVER op; `details` receives a slice the caller unrefs after
 * start_batch (the core does not retain it). */
static void status_op_fill(struct rpc_call *c, const cx_error_t *st, grpc_op *op,
                           grpc_slice *details)
{
    op->op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    if (st == NULL || st->code == CX_OK) {
        op->data.send_status_from_server.status = GRPC_STATUS_OK;
        op->data.send_status_from_server.trailing_metadata_count = 0;
        *details = grpc_empty_slice();
        op->data.send_status_from_server.status_details = NULL;
        return;
    }
    c->trail_md[0].key = grpc_slice_from_static_string(RPC_REASON_TRAILER);
    c->trail_md[0].value = grpc_slice_from_static_string(cx_code_reason(st->code));
    op->data.send_status_from_server.trailing_metadata = c->trail_md;
    op->data.send_status_from_server.trailing_metadata_count = 1;
    op->data.send_status_from_server.status = (grpc_status_code)cx_code_grpc_status(st->code);
    *details =
        grpc_slice_from_copied_string(st->message[0] ? st->message : cx_code_reason(st->code));
    op->data.send_status_from_server.status_details = details;
}

/* The server's call metrics, recorded once per finished unary or rejected call. Labels come from
 * the route (the service descriptors) and the reason codes only: a path the server does not
 * route is counted as "unknown", never by its (client-chosen) name. */
static void call_metrics(const struct rpc_call *c, cx_code_t code)
{
    static const char *const keys[] = {"service", "method", "code"};
    const char *values[3] = {"unknown", "unknown", cx_code_reason(code)};
    /* A routed call's series are kept in its route after the first lookup (a route lives as
     * long as the server; the series as long as the process). */
    struct rpc_route *r = (struct rpc_route *)c->route;
    bool cached = r != NULL && (unsigned)code < CX_CODE_COUNT_;
    cx_metric_t *calls =
        cached ? atomic_load_explicit(&r->m_calls[code], memory_order_relaxed) : NULL;
    cx_metric_t *dur = cached ? atomic_load_explicit(&r->m_duration, memory_order_relaxed) : NULL;
    if (r != NULL && (calls == NULL || dur == NULL)) {
        const char *slash = strrchr(r->path, '/');
        values[0] = r->service;
        values[1] = slash != NULL ? slash + 1 : r->path;
    }
    if (calls == NULL) {
        calls = cx_metrics_counter("credex_rpc_server_calls_total",
                                   "gRPC calls served, by service, method and reason code.", keys,
                                   values, 3);
        if (cached)
            atomic_store_explicit(&r->m_calls[code], calls, memory_order_relaxed);
    }
    if (dur == NULL) {
        dur = cx_metrics_histogram("credex_rpc_server_duration_seconds",
                                   "Latency of served gRPC calls, arrival to status.",
                                   &cx_metrics_latency_us, keys, values, 2);
        if (cached)
            atomic_store_explicit(&r->m_duration, dur, memory_order_relaxed);
    }
    cx_metrics_add(calls, 1);
    cx_metrics_observe(dur, cx_metrics_now_us() - c->start_us);
}

/* The access log: one line per finished call, except the health and reflection chatter.
 * Black-box tests rely on it to show which processes a request reached (deny before decrypt). */
static void access_log(const struct rpc_call *c, const cx_error_t *st)
{
    cx_code_t code = st != NULL ? st->code : CX_OK;
    call_metrics(c, code);
    if (strncmp(c->method, "/grpc.", 6) == 0)
        return;
    cx_log_field_t f[4 + RPC_ACCESS_LOG_FIELDS] = {
        CX_LOG_STR("method", c->method), CX_LOG_STR("peer", c->peer),
        CX_LOG_STR("code", cx_code_reason(code)), CX_LOG_INT("ms", rpc_now_ms() - c->start_ms)};
    memcpy(f + 4, c->log_fields, c->nlog_fields * sizeof(f[0]));
    cx_log_emit(code == CX_OK ? CX_LOG_INFO : CX_LOG_WARN, c->corr, "rpc.done", f,
                4 + c->nlog_fields);
}

/* The final batch of a unary or rejected call: metadata, optional reply, status. */
static void finish_unary(struct rpc_call *c, const cx_error_t *st, grpc_byte_buffer *reply)
{
    access_log(c, st);
    grpc_op ops[4];
    grpc_slice details;
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    init_md_fill(c);
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].data.send_initial_metadata.count = 1;
    ops[n].data.send_initial_metadata.metadata = c->init_md;
    n++;
    if (reply != NULL) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = reply;
        n++;
    }
    status_op_fill(c, st, &ops[n++], &details);
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n].data.recv_close_on_server.cancelled = &c->client_cancelled;
    n++;
    if (c->recv_buf != NULL) {
        grpc_byte_buffer_destroy(c->recv_buf);
        c->recv_buf = NULL;
    }
    c->recv_buf = reply; /* destroyed in call_free, after the batch completes */
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, &c->t_done, NULL);
    grpc_slice_unref(details);
    if (e != GRPC_CALL_OK) {
        cx_log_error(c->corr, "rpc.batch_failed", CX_LOG_STR("method", c->method),
                     CX_LOG_INT("grpc_call_error", e));
        call_free(c);
    }
}

/* Answer with an error status and no message. */
#define reject(c, code, ...)                                                                       \
    do {                                                                                           \
        cx_error_t st_;                                                                            \
        cx_error_set(&st_, (code), __VA_ARGS__);                                                   \
        finish_unary((c), &st_, NULL);                                                             \
    } while (0)

/* ---- routing ---------------------------------------------------------------------------- */

static int route_cmp(const void *a, const void *b)
{
    const struct rpc_route *x = a, *y = b;
    return strcmp(x->path, y->path);
}

static const struct rpc_route *route_find(const rpc_server_t *srv, const grpc_slice *path)
{
    size_t lo = 0, hi = srv->nroutes, len = GRPC_SLICE_LENGTH(*path);
    const char *p = (const char *)GRPC_SLICE_START_PTR(*path);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const struct rpc_route *r = &srv->routes[mid];
        size_t m = len < r->path_len ? len : r->path_len;
        int c = memcmp(p, r->path, m);
        if (c == 0)
            c = len < r->path_len ? -1 : (len > r->path_len ? 1 : 0);
        if (c == 0)
            return r;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

static bool peer_allowed(const char *const *allowed, const char *peer)
{
    if (allowed == NULL)
        return true;
    for (const char *const *p = allowed; *p != NULL; p++)
        if (strcmp(*p, peer) == 0)
            return true;
    return false;
}

bool rpc_server_add_service(rpc_server_t *srv, const rpc_service_def_t *def, cx_error_t *err)
{
    const ProtobufCServiceDescriptor *desc = def->desc;
    const char *name = def->name != NULL ? def->name : desc->name;
    if (srv->started)
        return cx_error_set(err, CX_ERR_INTERNAL, "add_service after start");
    for (size_t i = 0; i < def->nimpls; i++) {
        const rpc_method_impl_t *m = &def->impls[i];
        bool found = false;
        for (unsigned j = 0; j < desc->n_methods; j++)
            found = found || strcmp(desc->methods[j].name, m->method) == 0;
        if (!found)
            return cx_error_set(err, CX_ERR_INTERNAL, "%s has no method %s", name, m->method);
        if (m->kind == RPC_UNARY ? m->stream != NULL : m->unary != NULL)
            return cx_error_set(err, CX_ERR_INTERNAL, "method %s: handler does not match kind",
                                m->method);
    }
    for (size_t i = 0; i < srv->nservices; i++)
        if (strcmp(srv->service_names[i], name) == 0)
            return cx_error_set(err, CX_ERR_INTERNAL, "service %s registered twice", name);
    if (srv->nroutes + desc->n_methods > srv->cap_routes) {
        size_t cap = (srv->nroutes + desc->n_methods) * 2;
        struct rpc_route *r = realloc(srv->routes, cap * sizeof(*r));
        if (r == NULL)
            abort();
        srv->routes = r;
        srv->cap_routes = cap;
    }
    const char **names = realloc(srv->service_names, (srv->nservices + 1) * sizeof(*names));
    if (names == NULL)
        abort();
    srv->service_names = names;
    srv->service_names[srv->nservices++] = name;
    for (unsigned j = 0; j < desc->n_methods; j++) {
        struct rpc_route *r = &srv->routes[srv->nroutes++];
        memset(r, 0, sizeof(*r));
        size_t len = strlen(name) + strlen(desc->methods[j].name) + 3;
        r->path = malloc(len);
        if (r->path == NULL)
            abort();
        snprintf(r->path, len, "/%s/%s", name, desc->methods[j].name);
        r->path_len = strlen(r->path);
        r->service = name;
        r->input = desc->methods[j].input;
        r->output = desc->methods[j].output;
        r->note = def->unimplemented_note ? def->unimplemented_note : "not implemented";
        r->handles_bad_input = def->handles_bad_input;
        r->allowed = def->allowed_peers;
        for (size_t i = 0; i < def->nimpls; i++) {
            if (strcmp(def->impls[i].method, desc->methods[j].name) == 0) {
                r->impl = &def->impls[i];
                if (r->impl->allowed_peers != NULL)
                    r->allowed = r->impl->allowed_peers;
            }
        }
    }
    qsort(srv->routes, srv->nroutes, sizeof(*srv->routes), route_cmp);
    if (srv->health != NULL)
        rpc_health_set(srv->health, name, false);
    return true;
}

/* ---- streams ---------------------------------------------------------------------------- */

static void stream_list_add(struct rpc_call *c)
{
    rpc_server_t *srv = c->srv;
    pthread_mutex_lock(&srv->mu);
    c->stream_next = srv->streams;
    if (srv->streams != NULL)
        srv->streams->stream_prev = c;
    srv->streams = c;
    pthread_mutex_unlock(&srv->mu);
}

static void stream_list_remove(struct rpc_call *c)
{
    rpc_server_t *srv = c->srv;
    pthread_mutex_lock(&srv->mu);
    if (c->stream_prev != NULL)
        c->stream_prev->stream_next = c->stream_next;
    else if (srv->streams == c)
        srv->streams = c->stream_next;
    if (c->stream_next != NULL)
        c->stream_next->stream_prev = c->stream_prev;
    c->stream_next = c->stream_prev = NULL;
    pthread_mutex_unlock(&srv->mu);
}

/* Start one batch for a stream; caller holds c->mu. Returns false if the core refused it. */
static bool stream_batch(struct rpc_call *c, grpc_op *ops, size_t n, struct rpc_tag *tag)
{
    c->pending++;
    if (grpc_call_start_batch(c->call, ops, n, tag, NULL) != GRPC_CALL_OK) {
        c->pending--;
        return false;
    }
    return true;
}

/* Send the next queued message or, when drained and requested, the status. Holds c->mu. */
static void stream_pump(struct rpc_call *c)
{
    if (c->sending || c->status_sent)
        return;
    if (c->q_head != NULL && !c->over) {
        grpc_op op;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_SEND_MESSAGE;
        op.data.send_message.send_message = c->q_head->buf;
        if (stream_batch(c, &op, 1, &c->t_send))
            c->sending = 1;
        return;
    }
    if (c->finish_requested && !c->over) {
        grpc_op op;
        grpc_slice details;
        memset(&op, 0, sizeof(op));
        status_op_fill(c, &c->finish_status, &op, &details);
        if (stream_batch(c, &op, 1, &c->t_status))
            c->status_sent = 1;
        grpc_slice_unref(details);
    }
}

bool rpc_call_send(rpc_call_t *call, const ProtobufCMessage *msg)
{
    grpc_byte_buffer *bb = rpc_pack(msg);
    if (bb == NULL)
        return false;
    pthread_mutex_lock(&call->mu);
    if (call->over || call->finish_requested) {
        pthread_mutex_unlock(&call->mu);
        grpc_byte_buffer_destroy(bb);
        return false;
    }
    struct rpc_sendq *q = malloc(sizeof(*q));
    if (q == NULL)
        abort();
    q->buf = bb;
    q->next = NULL;
    if (call->q_tail != NULL)
        call->q_tail->next = q;
    else
        call->q_head = q;
    call->q_tail = q;
    stream_pump(call);
    pthread_mutex_unlock(&call->mu);
    return true;
}

void rpc_call_finish(rpc_call_t *call, const cx_error_t *status)
{
    pthread_mutex_lock(&call->mu);
    if (!call->finish_requested) {
        call->finish_requested = 1;
        if (status != NULL)
            cx_error_copy(&call->finish_status, status);
        else
            cx_error_clear(&call->finish_status);
        stream_pump(call);
    }
    pthread_mutex_unlock(&call->mu);
}

/*
 * A stream batch completed (was_read: a RECV_MESSAGE, whose handler has returned), or the
 * starting thread let go of the call. Several of these run at once on different workers, and
 * the call may be freed the moment a thread unlocks, so each thread decides everything it will
 * do under the lock, once:
 *  - on_done runs on the thread that first sees the call over with no receive armed or being
 *    handled, so it follows the last on_message/on_half_close (a handler may register the
 *    call in on_message and forget it in on_done: health Watch does). No receive is armed
 *    once the call is over, and every armed one completes, so some thread sees this.
 *  - The call is freed by the thread whose locked section makes "no batch in flight and
 *    on_done returned" true; both only ever become true once (nothing starts a batch once
 *    the call is over), so that is exactly one thread. A thread that does not free the call
 *    does not touch it after unlocking: it may already be gone. Only the on_done thread
 *    locks again, which is safe because no thread frees the call before it says on_done
 *    has returned.
 * Were every thread to lock a second time to look for the free, this would happen: worker A
 * completes a batch (2 in flight -> 1) and runs on_done; worker B completes the other
 * (1 -> 0) and unlocks; A locks, sees on_done returned and nothing in flight, and frees the
 * call; B locks the freed call's mutex and reads it. (So too when B's second look follows a
 * third worker's last completion after on_done has returned.)
 */
static void stream_op_done(struct rpc_call *c, bool was_read)
{
    bool run_done = false, free_it = false;
    pthread_mutex_lock(&c->mu);
    c->pending--;
    if (was_read)
        c->reading--;
    if (c->over && c->reading == 0 && !c->done_called) {
        c->done_called = 1;
        run_done = true;
    } else {
        free_it = c->pending == 0 && c->done_finished;
    }
    pthread_mutex_unlock(&c->mu);
    if (run_done) {
        stream_list_remove(c);
        const rpc_stream_ops_t *ops = c->route->impl->stream;
        if (ops->on_done != NULL)
            ops->on_done(c);
        pthread_mutex_lock(&c->mu);
        c->done_finished = 1;
        free_it = c->pending == 0;
        pthread_mutex_unlock(&c->mu);
    }
    if (free_it)
        call_free(c);
}

static void stream_arm_recv(struct rpc_call *c)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_buf;
    pthread_mutex_lock(&c->mu);
    if (!c->over && stream_batch(c, &op, 1, &c->t_recv))
        c->reading++;
    pthread_mutex_unlock(&c->mu);
}

static void stream_start(struct rpc_call *c)
{
    grpc_op md, close;
    memset(&md, 0, sizeof(md));
    memset(&close, 0, sizeof(close));
    c->t_recv.kind = TAG_STREAM_RECV;
    init_md_fill(c);
    md.op = GRPC_OP_SEND_INITIAL_METADATA;
    md.data.send_initial_metadata.count = 1;
    md.data.send_initial_metadata.metadata = c->init_md;
    close.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    close.data.recv_close_on_server.cancelled = &c->client_cancelled;
    stream_list_add(c);
    pthread_mutex_lock(&c->mu);
    /* This thread goes on using the call after its first batches are started, while their
     * completions (a cancelled call's come at once) run on other workers: it holds the call
     * as if it were one more batch in flight, so that the call cannot be freed under it. */
    c->pending = 1;
    bool ok = stream_batch(c, &md, 1, &c->t_md) && stream_batch(c, &close, 1, &c->t_close);
    if (!ok)
        c->over = 1; /* RECV_CLOSE was not started, so only this can end the call */
    pthread_mutex_unlock(&c->mu);
    if (!ok) {
        cx_log_error(c->corr, "rpc.batch_failed", CX_LOG_STR("method", c->method));
        grpc_call_cancel(c->call, NULL);
    }
    pthread_mutex_lock(&c->srv->mu);
    int shutting = c->srv->shutting_down;
    pthread_mutex_unlock(&c->srv->mu);
    if (shutting) {
        cx_error_t st;
        cx_error_set(&st, CX_ERR_UNAVAILABLE, "server shutting down");
        rpc_call_finish(c, &st);
    } else {
        stream_arm_recv(c);
    }
    stream_op_done(c, false); /* the hold taken above */
}

static void stream_on_recv(struct rpc_call *c, int success)
{
    const rpc_stream_ops_t *ops = c->route->impl->stream;
    grpc_byte_buffer *buf = c->recv_buf;
    c->recv_buf = NULL;
    if (!success || buf == NULL) {
        /* Half-close (or the call broke; RECV_CLOSE will report that). */
        if (buf != NULL)
            grpc_byte_buffer_destroy(buf);
        if (success && c->route->impl->kind == RPC_BIDI_STREAM) {
            if (ops->on_half_close != NULL)
                ops->on_half_close(c);
            else
                rpc_call_finish(c, NULL);
        } else if (success) {
            /* Server-streaming reads once, so an empty read means no request at all. */
            cx_error_t st;
            cx_error_set(&st, CX_ERR_INVALID_ARGUMENT, "missing request message");
            rpc_call_finish(c, &st);
        }
        stream_op_done(c, true);
        return;
    }
    rpc_arena_t *msg_arena = rpc_arena_new(4096);
    cx_error_t ierr;
    cx_error_clear(&ierr);
    ProtobufCMessage *req =
        rpc_unpack(c->route->input, buf, msg_arena, c->srv->opts.input_check, &ierr);
    c->msg_arena = msg_arena;
    grpc_byte_buffer_destroy(buf);
    cx_error_t err;
    cx_error_clear(&err);
    bool rearm = false;
    if (req == NULL) {
        cx_error_copy(&err, &ierr);
        rpc_call_finish(c, &err);
    } else if (!ops->on_message(c, req, &err)) {
        rpc_call_finish(c, &err);
    } else {
        rearm = c->route->impl->kind == RPC_BIDI_STREAM;
    }
    c->msg_arena = NULL;
    rpc_arena_free(msg_arena);
    /* Only now may the next message arrive (on any worker): one on_message at a time. */
    if (rearm)
        stream_arm_recv(c);
    stream_op_done(c, true);
}

static void stream_on_event(struct rpc_call *c, enum rpc_tag_kind kind, int success)
{
    switch (kind) {
    case TAG_STREAM_MD:
        break;
    case TAG_STREAM_RECV:
        stream_on_recv(c, success);
        return;
    case TAG_STREAM_SEND:
        pthread_mutex_lock(&c->mu);
        c->sending = 0;
        if (c->q_head != NULL) {
            struct rpc_sendq *q = c->q_head;
            c->q_head = q->next;
            if (c->q_head == NULL)
                c->q_tail = NULL;
            grpc_byte_buffer_destroy(q->buf);
            free(q);
        }
        if (!success)
            c->over = 1;
        else
            stream_pump(c);
        pthread_mutex_unlock(&c->mu);
        break;
    case TAG_STREAM_STATUS:
        break;
    case TAG_STREAM_CLOSE:
        pthread_mutex_lock(&c->mu);
        c->over = 1;
        pthread_mutex_unlock(&c->mu);
        break;
    default:
        break;
    }
    stream_op_done(c, false);
}

/* Ends every open stream (server shutdown): their status says UNAVAILABLE. */
static void streams_finish_all(rpc_server_t *srv)
{
    cx_error_t st;
    cx_error_set(&st, CX_ERR_UNAVAILABLE, "server shutting down");
    pthread_mutex_lock(&srv->mu);
    for (struct rpc_call *c = srv->streams; c != NULL; c = c->stream_next)
        rpc_call_finish(c, &st);
    pthread_mutex_unlock(&srv->mu);
}

/* ---- unary ------------------------------------------------------------------------------ */

static void pool_grow(rpc_server_t *srv);

/* A unary handler may block for its whole deadline. When it starts on the last worker that is
 * not inside one, the pool grows by one (up to max_threads), so that a worker is always left
 * to poll the queue. */
static void handler_enter(rpc_server_t *srv)
{
    unsigned busy = atomic_fetch_add_explicit(&srv->in_handlers, 1, memory_order_relaxed) + 1;
    if (busy >= atomic_load_explicit(&srv->nthreads, memory_order_relaxed) &&
        busy < srv->max_threads)
        pool_grow(srv);
}

static void handler_leave(rpc_server_t *srv)
{
    atomic_fetch_sub_explicit(&srv->in_handlers, 1, memory_order_relaxed);
}

static void unary_on_recv(struct rpc_call *c, int success)
{
    cx_error_t err;
    cx_error_clear(&err);
    grpc_byte_buffer *buf = c->recv_buf;
    c->recv_buf = NULL;
    if (!success || buf == NULL) {
        if (buf != NULL)
            grpc_byte_buffer_destroy(buf);
        /* No message: either the client half-closed without one, or the call is gone. */
        reject(c, CX_ERR_INVALID_ARGUMENT, "missing request message");
        return;
    }
    ProtobufCMessage *req =
        rpc_unpack(c->route->input, buf, c->arena, c->srv->opts.input_check, &c->input_err);
    grpc_byte_buffer_destroy(buf);
    if (req == NULL) {
        c->input_bad = true;
        if (!c->route->handles_bad_input) {
            reject(c, CX_ERR_INVALID_ARGUMENT, "%s", c->input_err.message);
            return;
        }
    }
    if (rpc_call_remaining_ms(c) == 0) {
        reject(c, CX_ERR_DEADLINE_EXCEEDED, "deadline passed before the handler ran");
        return;
    }
    ProtobufCMessage *reply = NULL;
    handler_enter(c->srv);
    bool ok = c->route->impl->unary(c, req, &reply, &err);
    handler_leave(c->srv);
    if (!ok) {
        if (err.code == CX_OK)
            cx_error_set(&err, CX_ERR_INTERNAL, "handler failed without a reason");
        finish_unary(c, &err, NULL);
        return;
    }
    if (reply == NULL || reply->descriptor != c->route->output) {
        cx_log_error(c->corr, "rpc.bad_reply", CX_LOG_STR("method", c->method));
        reject(c, CX_ERR_INTERNAL, "internal error");
        return;
    }
    grpc_byte_buffer *out = rpc_pack(reply);
    if (out == NULL) {
        reject(c, CX_ERR_INTERNAL, "internal error");
        return;
    }
    finish_unary(c, NULL, out);
}

/* ---- new calls -------------------------------------------------------------------------- */

/* Exactly one URI SAN of our trust domain, or nothing. */
static bool peer_identity(struct rpc_call *c)
{
    grpc_auth_context *ctx = grpc_call_auth_context(c->call);
    if (ctx == NULL)
        return false;
    grpc_auth_property_iterator it =
        grpc_auth_context_find_properties_by_name(ctx, GRPC_PEER_URI_PROPERTY_NAME);
    const grpc_auth_property *p, *uri = NULL;
    int n = 0;
    while ((p = grpc_auth_property_iterator_next(&it)) != NULL) {
        uri = p;
        n++;
    }
    bool ok = n == 1 && rpc_identity_from_uri(uri->value, uri->value_length, c->srv->trust_domain,
                                              c->peer, sizeof(c->peer));
    grpc_auth_context_release(ctx);
    return ok;
}

static void on_new_call(rpc_server_t *srv, struct rpc_call *c, int success)
{
    if (!success) {
        call_free(c); /* server shutting down */
        return;
    }
    pthread_mutex_lock(&srv->mu);
    int shutting = srv->shutting_down;
    srv->active_calls++;
    c->counted = 1;
    pthread_mutex_unlock(&srv->mu);
    if (!shutting)
        request_call(srv, c->reg_route);

    c->arena = rpc_arena_new(4096);
    c->start_ms = rpc_now_ms();
    c->start_us = cx_metrics_now_us();
    if (c->reg_route != NULL) {
        size_t mlen = c->reg_route->path_len < sizeof(c->method) - 1 ? c->reg_route->path_len
                                                                     : sizeof(c->method) - 1;
        memcpy(c->method, c->reg_route->path, mlen);
        c->method[mlen] = '\0';
        c->details.deadline = c->reg_deadline;
    } else {
        size_t mlen = GRPC_SLICE_LENGTH(c->details.method);
        if (mlen >= sizeof(c->method))
            mlen = sizeof(c->method) - 1;
        memcpy(c->method, GRPC_SLICE_START_PTR(c->details.method), mlen);
        c->method[mlen] = '\0';
    }

    const grpc_slice *cid = header_find(c, RPC_CORRELATION_HEADER);
    if (cid != NULL && rpc_correlation_id_valid((const char *)GRPC_SLICE_START_PTR(*cid),
                                                GRPC_SLICE_LENGTH(*cid))) {
        memcpy(c->corr, GRPC_SLICE_START_PTR(*cid), GRPC_SLICE_LENGTH(*cid));
        c->corr[GRPC_SLICE_LENGTH(*cid)] = '\0';
    } else {
        rpc_correlation_id_new(c->corr, sizeof(c->corr));
    }
    const grpc_slice *tp = header_find(c, RPC_TRACEPARENT_HEADER);
    if (tp == NULL || !rpc_traceparent_parse((const char *)GRPC_SLICE_START_PTR(*tp),
                                             GRPC_SLICE_LENGTH(*tp), c->trace_id, c->trace_flags)) {
        rpc_trace_id_new(c->trace_id, sizeof(c->trace_id));
        memcpy(c->trace_flags, "00", 3);
    }
    rpc_trace_id_new(c->span_id, sizeof(c->span_id));
    cx_log_set_trace(c->trace_id);

    gpr_timespec dl = gpr_convert_clock_type(c->details.deadline, GPR_CLOCK_MONOTONIC);
    gpr_timespec now = gpr_now(GPR_CLOCK_MONOTONIC);
    int64_t left = gpr_time_to_millis(gpr_time_sub(dl, now));
    if (gpr_time_cmp(dl, gpr_inf_future(GPR_CLOCK_MONOTONIC)) == 0 ||
        left > (int64_t)srv->opts.max_deadline_ms)
        left = srv->opts.max_deadline_ms;
    c->deadline_ms = rpc_now_ms() + (left > 0 ? left : 0);

    if (!peer_identity(c)) {
        cx_log_warn(c->corr, "rpc.peer_rejected", CX_LOG_STR("method", c->method),
                    CX_LOG_STR("reason", "peer certificate must carry exactly one credex URI SAN"));
        reject(c, CX_ERR_UNAUTHENTICATED,
               "peer certificate must carry exactly one spiffe URI SAN of this trust domain");
        return;
    }
    c->route = c->reg_route != NULL ? c->reg_route : route_find(srv, &c->details.method);
    if (c->route == NULL) {
        reject(c, CX_ERR_UNIMPLEMENTED, "unknown method %s", c->method);
        return;
    }
    const rpc_method_impl_t *impl = c->route->impl;
    if (!peer_allowed(c->route->allowed, c->peer)) {
        reject(c, CX_ERR_PERMISSION_DENIED, "peer %s may not call this method", c->peer);
        return;
    }
    if (srv->opts.gate != NULL) {
        cx_error_t st;
        cx_error_clear(&st);
        if (!srv->opts.gate(srv->opts.gate_ctx, c->method, &st)) {
            if (st.code == CX_OK)
                cx_error_set(&st, CX_ERR_INTERNAL, "gate closed without a reason");
            finish_unary(c, &st, NULL);
            return;
        }
    }
    if (impl == NULL || (impl->kind == RPC_UNARY ? impl->unary == NULL : impl->stream == NULL)) {
        cx_error_t st;
        cx_error_set(&st, CX_ERR_UNIMPLEMENTED, "%s is not implemented yet (%s)", c->method,
                     c->route->note);
        finish_unary(c, &st, NULL);
        return;
    }
    if (impl->kind != RPC_UNARY) {
        stream_start(c);
        return;
    }
    if (c->reg_route != NULL) {
        unary_on_recv(c, 1); /* the request message came with the call */
        return;
    }
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_buf;
    if (grpc_call_start_batch(c->call, &op, 1, &c->t_recv, NULL) != GRPC_CALL_OK) {
        cx_log_error(c->corr, "rpc.batch_failed", CX_LOG_STR("method", c->method));
        call_free(c);
    }
}

/* ---- workers ---------------------------------------------------------------------------- */

static void *worker_main(void *arg)
{
    rpc_server_t *srv = arg;
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        struct rpc_tag *t = ev.tag;
        struct rpc_call *c = t->call;
        /* Every line written while handling the event carries the call's trace id (a new call
         * has none until on_new_call reads it). */
        cx_log_set_trace(c != NULL ? c->trace_id : NULL);
        switch (t->kind) {
        case TAG_NEW_CALL:
            on_new_call(srv, c, ev.success);
            break;
        case TAG_UNARY_RECV:
            unary_on_recv(c, ev.success);
            break;
        case TAG_FINISHED:
            call_free(c);
            break;
        case TAG_SHUTDOWN:
            pthread_mutex_lock(&srv->mu);
            srv->shutdown_done = 1;
            pthread_cond_broadcast(&srv->cv);
            pthread_mutex_unlock(&srv->mu);
            break;
        default:
            stream_on_event(c, t->kind, ev.success);
            break;
        }
        cx_log_set_trace(NULL);
    }
    return NULL;
}

/* One more worker, unless the pool is full, already grew past the need, or the server is
 * stopping (rpc_server_shutdown joins nthreads_started workers once it has set shutting_down,
 * so none may start after that). A failed pthread_create leaves the pool as it is. */
static void pool_grow(rpc_server_t *srv)
{
    pthread_mutex_lock(&srv->mu);
    unsigned n = srv->nthreads_started;
    if (!srv->shutting_down && n < srv->max_threads &&
        atomic_load_explicit(&srv->in_handlers, memory_order_relaxed) >= n &&
        pthread_create(&srv->threads[n], NULL, worker_main, srv) == 0) {
        srv->nthreads_started = n + 1;
        atomic_store_explicit(&srv->nthreads, n + 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&srv->mu);
}

/* ---- server lifecycle ------------------------------------------------------------------- */

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (d == NULL)
        abort();
    return d;
}

rpc_server_t *rpc_server_new(const rpc_server_options_t *opts, cx_error_t *err)
{
    if (opts->threads < 1 || opts->listen_addr == NULL || opts->name == NULL) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "server options: threads, name and address");
        return NULL;
    }
    rpc_server_t *srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        abort();
    rpc_core_init();
    srv->opts = *opts;
    srv->listen_addr = xstrdup(opts->listen_addr);
    srv->trust_domain = xstrdup(opts->tls.trust_domain ? opts->tls.trust_domain : "credex.local");
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->cv, NULL);
    srv->t_shutdown.kind = TAG_SHUTDOWN;
    srv->health = rpc_health_new();
    if (!rpc_health_register(srv, err))
        goto fail;
    if (opts->descriptor_set != NULL) {
        srv->reflection = rpc_reflection_new(opts->descriptor_set, opts->descriptor_set_len, err);
        if (srv->reflection == NULL || !rpc_reflection_register(srv, err))
            goto fail;
    }
    return srv;
fail:
    rpc_server_free(srv);
    return NULL;
}

bool rpc_server_start(rpc_server_t *srv, cx_error_t *err)
{
    bool ok = false;
    char *ca = NULL, *cert = NULL, *key = NULL;
    grpc_server_credentials *creds = NULL;
    if (srv->started)
        return cx_error_set(err, CX_ERR_INTERNAL, "server already started");
    if ((ca = rpc_read_file(srv->opts.tls.ca_file, err)) == NULL ||
        (cert = rpc_read_file(srv->opts.tls.cert_file, err)) == NULL ||
        (key = rpc_read_file(srv->opts.tls.key_file, err)) == NULL)
        goto out;
    grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
    creds = grpc_ssl_server_credentials_create_ex(
        ca, &pair, 1, GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, NULL);
    if (creds == NULL) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "TLS credentials rejected (%s, %s)",
                     srv->opts.tls.cert_file, srv->opts.tls.key_file);
        goto out;
    }
    const grpc_channel_args *base = rpc_channel_args();
    grpc_arg args[4 + RPC_CHANNEL_ARGS_MAX];
    memcpy(args + 4, base->args, base->num_args * sizeof(grpc_arg));
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = (int)srv->opts.max_message_bytes;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = (int)srv->opts.max_message_bytes;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = (char *)GRPC_ARG_MAX_METADATA_SIZE;
    args[2].value.integer = (int)srv->opts.max_metadata_bytes;
    /* Identity only: a compressed request would be inflated into buffers of the gRPC core that
     * credex cannot wipe (docs/THREAT_MODEL.md, "Memory"), so compression is refused. */
    args[3].type = GRPC_ARG_INTEGER;
    args[3].key = (char *)GRPC_COMPRESSION_CHANNEL_ENABLED_ALGORITHMS_BITSET;
    args[3].value.integer = 1 << GRPC_COMPRESS_NONE;
    grpc_channel_args cargs = {.num_args = 4 + base->num_args, .args = args};
    srv->cq = grpc_completion_queue_create_for_next(NULL);
    srv->server = grpc_server_create(&cargs, NULL);
    grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
    for (size_t i = 0; i < srv->nroutes; i++) {
        struct rpc_route *r = &srv->routes[i];
        if (r->impl != NULL && r->impl->kind == RPC_UNARY && r->impl->unary != NULL)
            r->registered = grpc_server_register_method(
                srv->server, r->path, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    }
    srv->port = grpc_server_add_http2_port(srv->server, srv->listen_addr, creds);
    if (srv->port <= 0) {
        cx_error_set(err, CX_ERR_UNAVAILABLE, "cannot listen on %s", srv->listen_addr);
        goto out;
    }
    grpc_server_start(srv->server);
    srv->started = 1;
    rpc_health_set(srv->health, "", false); /* registers "" like every service */
    rpc_health_start(srv->health);
    /* Enough requests in flight that arrivals never wait for a worker to re-request. */
    unsigned outstanding = srv->opts.threads + 2;
    for (unsigned i = 0; i < outstanding; i++) {
        request_call(srv, NULL);
        for (size_t j = 0; j < srv->nroutes; j++)
            if (srv->routes[j].registered != NULL)
                request_call(srv, &srv->routes[j]);
    }
    srv->max_threads =
        srv->opts.max_threads > srv->opts.threads ? srv->opts.max_threads : srv->opts.threads;
    srv->threads = calloc(srv->max_threads, sizeof(pthread_t));
    if (srv->threads == NULL)
        abort();
    pthread_mutex_lock(&srv->mu);
    for (unsigned i = 0; i < srv->opts.threads; i++) {
        if (pthread_create(&srv->threads[i], NULL, worker_main, srv) != 0) {
            cx_error_set(err, CX_ERR_INTERNAL, "cannot start worker thread");
            break;
        }
        srv->nthreads_started++;
    }
    atomic_store_explicit(&srv->nthreads, srv->nthreads_started, memory_order_relaxed);
    pthread_mutex_unlock(&srv->mu);
    if (srv->nthreads_started < srv->opts.threads)
        goto out;
    ok = true;
out:
    if (creds != NULL)
        grpc_server_credentials_release(creds);
    free(ca);
    free(cert);
    if (key != NULL) {
        explicit_bzero(key, strlen(key)); /* private key material (memset may be elided) */
        free(key);
    }
    return ok;
}

int rpc_server_port(const rpc_server_t *srv)
{
    return srv->port;
}

void rpc_server_set_serving(rpc_server_t *srv, const char *service, bool serving)
{
    if (!srv->started)
        rpc_health_pin(srv->health, service);
    rpc_health_set(srv->health, service, serving);
}

void rpc_server_set_health_probe(rpc_server_t *srv, const char *service, rpc_health_probe_fn fn,
                                 void *ctx)
{
    rpc_health_set_probe(srv->health, service, fn, ctx);
}

bool rpc_server_ready(rpc_server_t *srv, char *reason, size_t reasonsz)
{
    return rpc_health_ready(srv->health, reason, reasonsz);
}

void rpc_block_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int rpc_server_wait_for_signal(rpc_server_t *srv)
{
    sigset_t set;
    int sig = 0;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    while (sigwait(&set, &sig) != 0)
        ;
    rpc_server_shutdown(srv);
    return sig;
}

void rpc_server_shutdown(rpc_server_t *srv)
{
    pthread_mutex_lock(&srv->mu);
    if (srv->shutting_down || !srv->started) {
        srv->shutting_down = 1;
        pthread_mutex_unlock(&srv->mu);
        return;
    }
    srv->shutting_down = 1;
    pthread_mutex_unlock(&srv->mu);

    rpc_health_shutdown(srv->health);
    streams_finish_all(srv);
    grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->t_shutdown);

    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += srv->opts.shutdown_grace_ms / 1000;
    until.tv_nsec += (long)(srv->opts.shutdown_grace_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    /* The core may report shutdown while a handler still runs for a call its client already
     * abandoned; the queue must outlive that handler's final batch, hence active_calls. */
    pthread_mutex_lock(&srv->mu);
    while (!(srv->shutdown_done && srv->active_calls == 0) &&
           pthread_cond_timedwait(&srv->cv, &srv->mu, &until) == 0)
        ;
    int drained = srv->shutdown_done && srv->active_calls == 0;
    pthread_mutex_unlock(&srv->mu);
    if (!drained) {
        cx_log_warn(NULL, "rpc.shutdown_cancel", CX_LOG_STR("server", srv->opts.name),
                    CX_LOG_INT("grace_ms", srv->opts.shutdown_grace_ms));
        grpc_server_cancel_all_calls(srv->server);
        pthread_mutex_lock(&srv->mu);
        while (!(srv->shutdown_done && srv->active_calls == 0))
            pthread_cond_wait(&srv->cv, &srv->mu);
        pthread_mutex_unlock(&srv->mu);
    }
    grpc_completion_queue_shutdown(srv->cq);
    /* shutting_down was set under mu above, so the pool no longer grows (pool_grow). */
    pthread_mutex_lock(&srv->mu);
    unsigned nthreads = srv->nthreads_started;
    pthread_mutex_unlock(&srv->mu);
    for (unsigned i = 0; i < nthreads; i++)
        pthread_join(srv->threads[i], NULL);
    pthread_mutex_lock(&srv->mu);
    srv->stopped = 1;
    pthread_mutex_unlock(&srv->mu);
}

void rpc_server_free(rpc_server_t *srv)
{
    if (srv == NULL)
        return;
    rpc_server_shutdown(srv);
    if (srv->server != NULL)
        grpc_server_destroy(srv->server);
    if (srv->cq != NULL)
        grpc_completion_queue_destroy(srv->cq);
    for (size_t i = 0; i < srv->nroutes; i++)
        free(srv->routes[i].path);
    free(srv->routes);
    free(srv->service_names);
    free(srv->threads);
    rpc_health_free(srv->health);
    rpc_reflection_free(srv->reflection);
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->cv);
    free(srv->listen_addr);
    free(srv->trust_domain);
    free(srv);
    grpc_shutdown();
}
