/*
 * rpc_health: grpc.health.v1.Health on every server. Check answers from a table of service
 * statuses; Watch streams the current status and every change until the client leaves or the
 * server shuts down (then NOT_SERVING is sent and the stream ends).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rpc/rpc_internal.h"
#include "grpc/health/v1/health.pb-c.h"

#define HEALTH_MAX_SERVICES 32
#define HEALTH_NAME_MAX     128

typedef Grpc__Health__V1__HealthCheckResponse__ServingStatus status_t;
#define ST_SERVING     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define ST_NOT_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
#define ST_UNKNOWN_SVC GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN

struct watcher {
    rpc_call_t *call;
    char service[HEALTH_NAME_MAX];
    status_t last;
    struct watcher *next;
};

struct rpc_health {
    pthread_mutex_t mu;
    struct {
        char name[HEALTH_NAME_MAX];
        status_t status;
        bool pinned; /* set by the service before start: rpc_health_start leaves it alone */
        rpc_health_probe_fn probe; /* NULL: the status is only what rpc_health_set said */
        void *probe_ctx;
        int64_t probed_ms; /* monotonic time of the last probe */
    } entries[HEALTH_MAX_SERVICES];
    size_t n;
    int shut;
    struct watcher *watchers;
};

struct rpc_health *rpc_health_new(void)
{
    struct rpc_health *h = calloc(1, sizeof(*h));
    if (h == NULL)
        abort();
    pthread_mutex_init(&h->mu, NULL);
    return h;
}

void rpc_health_free(struct rpc_health *h)
{
    if (h == NULL)
        return;
    while (h->watchers != NULL) { /* normally empty: on_done removed them */
        struct watcher *w = h->watchers;
        h->watchers = w->next;
        free(w);
    }
    pthread_mutex_destroy(&h->mu);
    free(h);
}

/* Caller holds h->mu. */
static status_t lookup(const struct rpc_health *h, const char *service)
{
    for (size_t i = 0; i < h->n; i++)
        if (strcmp(h->entries[i].name, service) == 0)
            return h->entries[i].status;
    return ST_UNKNOWN_SVC;
}

static void send_status(rpc_call_t *call, status_t st)
{
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    r.status = st;
    rpc_call_send(call, &r.base);
}

/* Caller holds h->mu. */
static void notify(struct rpc_health *h)
{
    for (struct watcher *w = h->watchers; w != NULL; w = w->next) {
        status_t st = lookup(h, w->service);
        if (st != w->last) {
            w->last = st;
            send_status(w->call, st);
        }
    }
}

/* Caller holds h->mu: the entry for service, created NOT_SERVING if new (NULL when full). */
static size_t entry_index(struct rpc_health *h, const char *service)
{
    size_t i = 0;
    while (i < h->n && strcmp(h->entries[i].name, service) != 0)
        i++;
    if (i == h->n && h->n < HEALTH_MAX_SERVICES) {
        strcpy(h->entries[i].name, service);
        h->entries[i].status = ST_NOT_SERVING;
        h->n++;
    }
    return i;
}

void rpc_health_pin(struct rpc_health *h, const char *service)
{
    if (strlen(service) >= HEALTH_NAME_MAX)
        return;
    pthread_mutex_lock(&h->mu);
    size_t i = entry_index(h, service);
    if (i < h->n)
        h->entries[i].pinned = true;
    pthread_mutex_unlock(&h->mu);
}

void rpc_health_start(struct rpc_health *h)
{
    pthread_mutex_lock(&h->mu);
    for (size_t i = 0; i < h->n; i++)
        if (!h->entries[i].pinned)
            h->entries[i].status = ST_SERVING;
    notify(h);
    pthread_mutex_unlock(&h->mu);
}

void rpc_health_set(struct rpc_health *h, const char *service, bool serving)
{
    if (strlen(service) >= HEALTH_NAME_MAX)
        return;
    pthread_mutex_lock(&h->mu);
    if (h->shut) {
        pthread_mutex_unlock(&h->mu);
        return;
    }
    status_t st = serving ? ST_SERVING : ST_NOT_SERVING;
    size_t i = entry_index(h, service);
    if (i < h->n)
        h->entries[i].status = st;
    notify(h);
    pthread_mutex_unlock(&h->mu);
}

#define HEALTH_PROBE_INTERVAL_MS 500

void rpc_health_set_probe(struct rpc_health *h, const char *service, rpc_health_probe_fn fn,
                          void *ctx)
{
    if (strlen(service) >= HEALTH_NAME_MAX)
        return;
    pthread_mutex_lock(&h->mu);
    size_t i = entry_index(h, service);
    if (i < h->n) {
        h->entries[i].probe = fn;
        h->entries[i].probe_ctx = ctx;
        h->entries[i].probed_ms = INT64_MIN / 2;
    }
    pthread_mutex_unlock(&h->mu);
}

/* Run the service's probe if it has one and its last answer is stale. The probe runs outside
 * the lock; concurrent Checks in the meantime answer with the previous status. */
static void probe_if_due(struct rpc_health *h, const char *service)
{
    rpc_health_probe_fn fn = NULL;
    void *ctx = NULL;
    int64_t now = rpc_now_ms();
    pthread_mutex_lock(&h->mu);
    for (size_t i = 0; i < h->n; i++) {
        if (strcmp(h->entries[i].name, service) == 0 && h->entries[i].probe != NULL &&
            now - h->entries[i].probed_ms >= HEALTH_PROBE_INTERVAL_MS && !h->shut) {
            fn = h->entries[i].probe;
            ctx = h->entries[i].probe_ctx;
            h->entries[i].probed_ms = now;
        }
    }
    pthread_mutex_unlock(&h->mu);
    if (fn != NULL)
        rpc_health_set(h, service, fn(ctx));
}

bool rpc_health_ready(struct rpc_health *h, char *reason, size_t reasonsz)
{
    char names[HEALTH_MAX_SERVICES][HEALTH_NAME_MAX];
    size_t n = 0;
    pthread_mutex_lock(&h->mu);
    for (size_t i = 0; i < h->n; i++)
        if (h->entries[i].probe != NULL)
            memcpy(names[n++], h->entries[i].name, HEALTH_NAME_MAX);
    pthread_mutex_unlock(&h->mu);
    for (size_t i = 0; i < n; i++)
        probe_if_due(h, names[i]);
    pthread_mutex_lock(&h->mu);
    bool ready = !h->shut && h->n > 0;
    if (!ready && reasonsz > 0)
        snprintf(reason, reasonsz, "%s", h->shut ? "shutting down" : "not started");
    for (size_t i = 0; ready && i < h->n; i++) {
        if (h->entries[i].status != ST_SERVING) {
            ready = false;
            if (reasonsz > 0) /* service names come from the descriptors, never from input */
                snprintf(reason, reasonsz, "%s: not serving",
                         h->entries[i].name[0] != '\0' ? h->entries[i].name : "server");
        }
    }
    pthread_mutex_unlock(&h->mu);
    return ready;
}

void rpc_health_shutdown(struct rpc_health *h)
{
    pthread_mutex_lock(&h->mu);
    for (size_t i = 0; i < h->n; i++)
        h->entries[i].status = ST_NOT_SERVING;
    notify(h);
    h->shut = 1;
    for (struct watcher *w = h->watchers; w != NULL; w = w->next)
        rpc_call_finish(w->call, NULL);
    pthread_mutex_unlock(&h->mu);
}

static bool check(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                  cx_error_t *err)
{
    const Grpc__Health__V1__HealthCheckRequest *req =
        (const Grpc__Health__V1__HealthCheckRequest *)request;
    struct rpc_health *h = rpc_call_server(call)->health;
    probe_if_due(h, req->service);
    pthread_mutex_lock(&h->mu);
    status_t st = lookup(h, req->service);
    pthread_mutex_unlock(&h->mu);
    if (st == ST_UNKNOWN_SVC)
        return cx_error_set(err, CX_ERR_NOT_FOUND, "unknown service");
    Grpc__Health__V1__HealthCheckResponse *r = rpc_call_alloc(call, sizeof(*r));
    grpc__health__v1__health_check_response__init(r);
    r->status = st;
    *reply = &r->base;
    return true;
}

static bool watch_start(rpc_call_t *call, const ProtobufCMessage *request, cx_error_t *err)
{
    const Grpc__Health__V1__HealthCheckRequest *req =
        (const Grpc__Health__V1__HealthCheckRequest *)request;
    struct rpc_health *h = rpc_call_server(call)->health;
    if (strlen(req->service) >= HEALTH_NAME_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "service name too long");
    struct watcher *w = calloc(1, sizeof(*w));
    if (w == NULL)
        abort();
    w->call = call;
    strcpy(w->service, req->service);
    pthread_mutex_lock(&h->mu);
    w->last = lookup(h, w->service);
    send_status(call, w->last);
    if (h->shut) {
        rpc_call_finish(call, NULL);
        free(w);
    } else {
        w->next = h->watchers;
        h->watchers = w;
        rpc_call_set_user(call, w);
    }
    pthread_mutex_unlock(&h->mu);
    return true;
}

static void watch_done(rpc_call_t *call)
{
    struct rpc_health *h = rpc_call_server(call)->health;
    pthread_mutex_lock(&h->mu);
    for (struct watcher **p = &h->watchers; *p != NULL; p = &(*p)->next) {
        if ((*p)->call == call) {
            struct watcher *w = *p;
            *p = w->next;
            free(w);
            break;
        }
    }
    pthread_mutex_unlock(&h->mu);
}

static const rpc_stream_ops_t watch_ops = {.on_message = watch_start, .on_done = watch_done};

static const rpc_method_impl_t health_impls[] = {
    {.method = "Check", .kind = RPC_UNARY, .unary = check},
    {.method = "Watch", .kind = RPC_SERVER_STREAM, .stream = &watch_ops},
};

bool rpc_health_register(rpc_server_t *srv, cx_error_t *err)
{
    static const rpc_service_def_t def = {.desc = &grpc__health__v1__health__descriptor,
                                          .impls = health_impls,
                                          .nimpls = sizeof(health_impls) / sizeof(health_impls[0])};
    return rpc_server_add_service(srv, &def, err);
}
