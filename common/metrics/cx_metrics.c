/* cx_metrics: the lock-free metrics registry and its text rendering (see cx_metrics.h). */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/metrics/cx_metrics.h"

#define TABLE_SLOTS 8192 /* a power of two, twice CX_METRICS_MAX_SERIES: short probe runs */

typedef enum { KIND_COUNTER, KIND_HISTOGRAM } kind_t;

struct cx_metric {
    const char *name;
    const char *help;
    kind_t kind;
    const cx_metrics_buckets_t *buckets; /* histograms */
    uint64_t hash;
    char labels[CX_METRICS_LABELS_MAX]; /* rendered: k="v",k2="v2" */
    _Atomic uint64_t sum;               /* counter value, or the histogram's sum */
    _Atomic uint64_t counts[];          /* histograms: n buckets + the +Inf bucket */
};

static const uint64_t latency_bounds[] = {100,     250,     500,     1000,    2500,   5000,
                                          10000,   25000,   50000,   100000,  250000, 500000,
                                          1000000, 2500000, 5000000, 10000000};
const cx_metrics_buckets_t cx_metrics_latency_us = {
    latency_bounds, sizeof(latency_bounds) / sizeof(latency_bounds[0]), 1000000};
static const uint64_t size_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};
const cx_metrics_buckets_t cx_metrics_sizes = {size_bounds,
                                               sizeof(size_bounds) / sizeof(size_bounds[0]), 1};

/* The registry: process-wide by design (cx_metrics.h says why). Slots are written once, under
 * mu, with release stores; lookups read them with acquire loads and never lock. */
static struct {
    pthread_mutex_t mu;
    _Atomic(cx_metric_t *) slots[TABLE_SLOTS];
    size_t nseries; /* under mu */
} reg = {.mu = PTHREAD_MUTEX_INITIALIZER};

static uint64_t fnv(uint64_t h, const char *s)
{
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (h ^ 0xff) * 1099511628211ULL; /* separates "ab","c" from "a","bc" */
}

/* k="v",... with the exposition format's escapes; false when it does not fit or a key is not
 * a valid label name. */
static bool labels_render(char *buf, size_t bufsz, const char *const *keys,
                          const char *const *values, size_t n)
{
    size_t off = 0;
    buf[0] = '\0';
    if (n > CX_METRICS_MAX_LABELS)
        return false;
    /* Written by hand rather than with snprintf: this runs on every update of every series. */
    for (size_t i = 0; i < n; i++) {
        const char *k = keys[i], *v = values[i] != NULL ? values[i] : "";
        size_t klen = k != NULL ? strlen(k) : 0;
        if (klen == 0 || off + klen + 4 > bufsz) /* [,]k=" */
            return false;
        if (i > 0)
            buf[off++] = ',';
        memcpy(buf + off, k, klen);
        off += klen;
        buf[off++] = '=';
        buf[off++] = '"';
        for (; *v != '\0'; v++) {
            const char *esc = *v == '\\' ? "\\\\" : *v == '"' ? "\\\"" : *v == '\n' ? "\\n" : NULL;
            size_t len = esc != NULL ? 2 : 1;
            if (off + len + 2 > bufsz)
                return false;
            if (esc != NULL)
                memcpy(buf + off, esc, 2);
            else
                buf[off] = *v;
            off += len;
        }
        buf[off++] = '"';
        buf[off] = '\0';
    }
    return true;
}

/* Label names of the exposition format, lower case here: checked once, when a series is made. */
static bool keys_valid(const char *const *keys, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strspn(keys[i], "abcdefghijklmnopqrstuvwxyz_") != strlen(keys[i]))
            return false;
    return true;
}

static cx_metric_t *lookup(const char *name, const char *help, kind_t kind,
                           const cx_metrics_buckets_t *b, const char *const *keys,
                           const char *const *values, size_t n)
{
    char labels[CX_METRICS_LABELS_MAX];
    if (name == NULL || !labels_render(labels, sizeof(labels), keys, values, n))
        return NULL;
    uint64_t h = fnv(fnv(14695981039346656037ULL, name), labels);
    size_t i = (size_t)h & (TABLE_SLOTS - 1);
    for (size_t probes = 0; probes < TABLE_SLOTS; probes++, i = (i + 1) & (TABLE_SLOTS - 1)) {
        cx_metric_t *m = atomic_load_explicit(&reg.slots[i], memory_order_acquire);
        if (m == NULL) {
            /* Not there: insert under the lock, re-checking this slot and the ones after it,
             * which another thread may have filled meanwhile. */
            pthread_mutex_lock(&reg.mu);
            for (; probes < TABLE_SLOTS; probes++, i = (i + 1) & (TABLE_SLOTS - 1)) {
                m = atomic_load_explicit(&reg.slots[i], memory_order_relaxed);
                if (m == NULL)
                    break;
                if (m->hash == h && strcmp(m->name, name) == 0 && strcmp(m->labels, labels) == 0)
                    goto out_unlock;
            }
            m = NULL;
            if (probes == TABLE_SLOTS || reg.nseries >= CX_METRICS_MAX_SERIES ||
                !keys_valid(keys, n))
                goto out_unlock;
            size_t nc = kind == KIND_HISTOGRAM ? b->n + 1 : 0;
            m = calloc(1, sizeof(*m) + nc * sizeof(m->counts[0]));
            if (m == NULL)
                goto out_unlock;
            m->name = name;
            m->help = help != NULL ? help : "";
            m->kind = kind;
            m->buckets = b;
            m->hash = h;
            memcpy(m->labels, labels, sizeof(labels));
            reg.nseries++;
            atomic_store_explicit(&reg.slots[i], m, memory_order_release);
        out_unlock:
            pthread_mutex_unlock(&reg.mu);
            return m;
        }
        if (m->hash == h && strcmp(m->name, name) == 0 && strcmp(m->labels, labels) == 0)
            return m->kind == kind ? m : NULL;
    }
    return NULL;
}

cx_metric_t *cx_metrics_counter(const char *name, const char *help, const char *const *keys,
                                const char *const *values, size_t nlabels)
{
    return lookup(name, help, KIND_COUNTER, NULL, keys, values, nlabels);
}

cx_metric_t *cx_metrics_histogram(const char *name, const char *help, const cx_metrics_buckets_t *b,
                                  const char *const *keys, const char *const *values,
                                  size_t nlabels)
{
    if (b == NULL || b->n == 0)
        return NULL;
    return lookup(name, help, KIND_HISTOGRAM, b, keys, values, nlabels);
}

void cx_metrics_add(cx_metric_t *m, uint64_t n)
{
    if (m != NULL && m->kind == KIND_COUNTER)
        atomic_fetch_add_explicit(&m->sum, n, memory_order_relaxed);
}

void cx_metrics_observe(cx_metric_t *m, uint64_t v)
{
    if (m == NULL || m->kind != KIND_HISTOGRAM)
        return;
    const cx_metrics_buckets_t *b = m->buckets;
    size_t lo = 0, hi = b->n; /* first bound >= v; b->n is the +Inf bucket */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (b->bounds[mid] >= v)
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_fetch_add_explicit(&m->counts[lo], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->sum, v, memory_order_relaxed);
}

uint64_t cx_metrics_value(const cx_metric_t *m)
{
    if (m == NULL)
        return 0;
    if (m->kind == KIND_COUNTER)
        return atomic_load_explicit(&m->sum, memory_order_relaxed);
    uint64_t total = 0;
    for (size_t i = 0; i <= m->buckets->n; i++)
        total += atomic_load_explicit(&m->counts[i], memory_order_relaxed);
    return total;
}

static const struct {
    const char *calls, *calls_help, *duration, *duration_help;
} client_families[] = {
    [CX_METRICS_DB] = {"credex_db_calls_total",
                       "Database calls by collection, operation and result.",
                       "credex_db_duration_seconds", "Database call latency."},
    [CX_METRICS_FGA] = {"credex_openfga_calls_total", "OpenFGA calls by operation and result.",
                        "credex_openfga_duration_seconds", "OpenFGA call latency."},
    [CX_METRICS_HTTP] = {"credex_http_client_requests_total",
                         "Outbound HTTP requests by target class, operation and result.",
                         "credex_http_client_duration_seconds", "Outbound HTTP request latency."},
    [CX_METRICS_RPC] = {"credex_rpc_client_calls_total",
                        "Outgoing gRPC calls by target service, method and reason code.",
                        "credex_rpc_client_duration_seconds", "Outgoing gRPC call latency."},
};

void cx_metrics_client_call(cx_metrics_client_t which, const char *target, const char *op,
                            const char *code, uint64_t us)
{
    static const char *const keys[] = {"target", "op", "code"};
    const char *values[] = {target, op, code};
    if ((size_t)which >= sizeof(client_families) / sizeof(client_families[0]))
        return;
    cx_metrics_add(cx_metrics_counter(client_families[which].calls,
                                      client_families[which].calls_help, keys, values, 3),
                   1);
    cx_metrics_observe(cx_metrics_histogram(client_families[which].duration,
                                            client_families[which].duration_help,
                                            &cx_metrics_latency_us, keys, values, 2),
                       us);
}

void cx_metrics_cache(const char *cache, bool hit)
{
    static const char *const keys[] = {"cache", "result"};
    const char *values[] = {cache, hit ? "hit" : "miss"};
    cx_metrics_add(cx_metrics_counter("credex_cache_lookups_total",
                                      "Cache lookups by cache and result (hit, miss).", keys,
                                      values, 2),
                   1);
}

uint64_t cx_metrics_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- rendering ---------------------------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len, cap;
} out_t;

static void out_printf(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_printf(out_t *o, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int w = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (w < 0)
            return;
        if ((size_t)w < o->cap - o->len) {
            o->len += (size_t)w;
            return;
        }
        size_t cap = o->cap * 2 + (size_t)w;
        char *nb = realloc(o->buf, cap);
        if (nb == NULL)
            abort();
        o->buf = nb;
        o->cap = cap;
    }
}

/* v / scale as a decimal (scale a power of ten), exactly. */
static void out_scaled(out_t *o, uint64_t v, uint64_t scale)
{
    if (scale <= 1) {
        out_printf(o, "%llu", (unsigned long long)v);
        return;
    }
    int digits = 0;
    for (uint64_t s = scale; s > 1; s /= 10)
        digits++;
    out_printf(o, "%llu.%0*llu", (unsigned long long)(v / scale), digits,
               (unsigned long long)(v % scale));
}

static int series_cmp(const void *a, const void *b)
{
    const cx_metric_t *x = *(cx_metric_t *const *)a, *y = *(cx_metric_t *const *)b;
    int c = strcmp(x->name, y->name);
    return c != 0 ? c : strcmp(x->labels, y->labels);
}

/* name{labels}, or the bare name when there are none. */
static void out_series(out_t *o, const char *name, const char *suffix, const char *labels)
{
    if (labels[0] != '\0')
        out_printf(o, "%s%s{%s} ", name, suffix, labels);
    else
        out_printf(o, "%s%s ", name, suffix);
}

/* Buckets cumulative from one pass of reads, so _count always equals the +Inf bucket. */
static void render_histogram(out_t *o, const cx_metric_t *m)
{
    const cx_metrics_buckets_t *b = m->buckets;
    const char *sep = m->labels[0] != '\0' ? "," : "";
    uint64_t cum = 0;
    for (size_t i = 0; i <= b->n; i++) {
        cum += atomic_load_explicit(&m->counts[i], memory_order_relaxed);
        out_printf(o, "%s_bucket{%s%sle=\"", m->name, m->labels, sep);
        if (i < b->n)
            out_scaled(o, b->bounds[i], b->scale);
        else
            out_printf(o, "+Inf");
        out_printf(o, "\"} %llu\n", (unsigned long long)cum);
    }
    out_series(o, m->name, "_sum", m->labels);
    out_scaled(o, atomic_load_explicit(&m->sum, memory_order_relaxed), b->scale);
    out_printf(o, "\n");
    out_series(o, m->name, "_count", m->labels);
    out_printf(o, "%llu\n", (unsigned long long)cum);
}

size_t cx_metrics_render(char **out)
{
    cx_metric_t **all = malloc(sizeof(*all) * CX_METRICS_MAX_SERIES);
    size_t n = 0;
    out_t o = {.buf = malloc(16384), .len = 0, .cap = 16384};
    if (all == NULL || o.buf == NULL)
        abort();
    o.buf[0] = '\0';
    for (size_t i = 0; i < TABLE_SLOTS && n < CX_METRICS_MAX_SERIES; i++) {
        cx_metric_t *m = atomic_load_explicit(&reg.slots[i], memory_order_acquire);
        if (m != NULL)
            all[n++] = m;
    }
    qsort(all, n, sizeof(*all), series_cmp);
    for (size_t i = 0; i < n; i++) {
        const cx_metric_t *m = all[i];
        if (i == 0 || strcmp(all[i - 1]->name, m->name) != 0)
            out_printf(&o, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name,
                       m->kind == KIND_COUNTER ? "counter" : "histogram");
        else if (all[i - 1]->kind != m->kind)
            continue; /* a second kind under one name cannot be rendered: lookup refuses it */
        if (m->kind == KIND_COUNTER) {
            out_series(&o, m->name, "", m->labels);
            out_printf(&o, "%llu\n",
                       (unsigned long long)atomic_load_explicit(&m->sum, memory_order_relaxed));
        } else
            render_histogram(&o, m);
    }
    free(all);
    *out = o.buf;
    return o.len;
}
