/*
 * cx_metrics: the process's metrics registry, rendered in the Prometheus text exposition format
 * 0.0.4 by common/ops on a scrape (docs/OBSERVABILITY.md lists every metric).
 *
 * A metric here is one series: a family name plus a fixed set of label pairs. Counters and
 * histograms only (gauges are not needed yet). Series are created on first use and never
 * removed; a lookup is lock-free (an open-addressed table of atomic pointers, filled under a
 * mutex), an update is one or two relaxed atomic additions, so instrumenting a hot path costs a
 * hash and a compare. Label values must come from small fixed sets (method names of the service
 * descriptors, reason codes of cx_error, fixed operation names), never from input: the table
 * holds at most CX_METRICS_MAX_SERIES series and a series beyond that is not recorded (the
 * lookup returns NULL, which every update accepts).
 *
 * The registry is process-wide state, like the logger: counters describe the process, and
 * every module of it (rpc, mdb, fga, http, the services) adds to the same scrape. It is the one
 * mutable global besides the logger and the config snapshot, and holds only numbers.
 * All functions are thread-safe and never block on I/O.
 */
#ifndef CREDEX_COMMON_METRICS_CX_METRICS_H
#define CREDEX_COMMON_METRICS_CX_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CX_METRICS_MAX_SERIES 4096
#define CX_METRICS_MAX_LABELS 4   /* label pairs per series */
#define CX_METRICS_LABELS_MAX 256 /* bytes of one series' rendered label set */

typedef struct cx_metric cx_metric_t;

/* Histogram buckets: upper bounds (strictly increasing, in the unit observe is given) and the
 * power of ten that turns that unit into the exported base unit (1000000 for microseconds
 * exported as seconds; 1 for counts). */
typedef struct cx_metrics_buckets {
    const uint64_t *bounds;
    size_t n;
    uint64_t scale;
} cx_metrics_buckets_t;

/* Latencies observed in microseconds, exported in seconds: 100 us .. 10 s. */
extern const cx_metrics_buckets_t cx_metrics_latency_us;
/* Small counts (batch sizes): 1 .. 512 in powers of two. */
extern const cx_metrics_buckets_t cx_metrics_sizes;

/* The series of counter `name` with labels (nlabels pairs: keys[i]="values[i]"), created on
 * first use. name, help and keys must be literals (they are kept, not copied); values are
 * copied. NULL when the registry is full or the arguments are malformed. A family keeps the
 * kind and help of its first series. */
cx_metric_t *cx_metrics_counter(const char *name, const char *help, const char *const *keys,
                                const char *const *values, size_t nlabels);
/* The same for a histogram with buckets b (a static set such as cx_metrics_latency_us). */
cx_metric_t *cx_metrics_histogram(const char *name, const char *help, const cx_metrics_buckets_t *b,
                                  const char *const *keys, const char *const *values,
                                  size_t nlabels);

/* Counter += n; m may be NULL. */
void cx_metrics_add(cx_metric_t *m, uint64_t n);
/* Histogram observation v (in the buckets' unit); m may be NULL. */
void cx_metrics_observe(cx_metric_t *m, uint64_t v);
/* A counter's value or a histogram's count (tests). */
uint64_t cx_metrics_value(const cx_metric_t *m);

/* A timed outbound call of a client module in one step: counter <prefix>_calls_total{target,
 * op, code} += 1 and histogram <prefix>_duration_seconds{target, op} observes us. prefix
 * selects one of the fixed families (CX_METRICS_*); target, op and code come from fixed sets. */
typedef enum cx_metrics_client {
    CX_METRICS_DB,   /* credex_db_*: common/mdb */
    CX_METRICS_FGA,  /* credex_openfga_*: common/fga */
    CX_METRICS_HTTP, /* credex_http_client_*: common/http */
    CX_METRICS_RPC,  /* credex_rpc_client_*: common/rpc */
} cx_metrics_client_t;
void cx_metrics_client_call(cx_metrics_client_t which, const char *target, const char *op,
                            const char *code, uint64_t us);

/* Cache lookups: credex_cache_lookups_total{cache, result="hit"|"miss"} += 1. */
void cx_metrics_cache(const char *cache, bool hit);

/* Microseconds of a monotonic clock (for durations). */
uint64_t cx_metrics_now_us(void);

/* Render every series as Prometheus text 0.0.4 into a malloc'd NUL-terminated buffer (*out,
 * freed by the caller); returns its length. Families are sorted by name, series by labels;
 * histogram buckets are cumulative and _count equals the +Inf bucket. */
size_t cx_metrics_render(char **out);

#endif
