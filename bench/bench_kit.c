/* bench_kit: see bench_kit.h. */
#include "bench/bench_kit.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_MAX_SAMPLES (4u << 20) /* per caller */

struct bench_worker {
    bench_call_fn fn;
    void *ctx;
    int index;
    double seconds;
    uint32_t *lat_us;
    size_t n, errors;
    char first_error[320];
};

double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *bench_worker_main(void *arg)
{
    struct bench_worker *w = arg;
    double end = bench_now_s() + w->seconds;
    unsigned long seq = 0;
    while (w->n < BENCH_MAX_SAMPLES) {
        double t0 = bench_now_s();
        if (t0 >= end)
            break;
        cx_error_t err;
        memset(&err, 0, sizeof(err));
        if (w->fn(w->ctx, w->index, seq++, &err))
            w->lat_us[w->n++] = (uint32_t)((bench_now_s() - t0) * 1e6);
        else if (w->errors++ == 0)
            snprintf(w->first_error, sizeof(w->first_error), "%s: %s", cx_code_reason(err.code),
                     err.message);
    }
    return NULL;
}

static int bench_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

void bench_run(bench_call_fn fn, void *ctx, int callers, double seconds, bench_result_t *out)
{
    memset(out, 0, sizeof(*out));
    if (callers < 1 || callers > 4096 || !(seconds > 0 && seconds <= 3600)) {
        fprintf(stderr, "bench: callers must be 1..4096 and seconds in (0, 3600] (got %d, %g)\n",
                callers, seconds);
        exit(2);
    }
    struct bench_worker *w = calloc((size_t)callers, sizeof(*w));
    pthread_t *t = calloc((size_t)callers, sizeof(*t));
    if (!w || !t) {
        fprintf(stderr, "bench: out of memory\n");
        exit(1);
    }
    double t0 = bench_now_s();
    for (int i = 0; i < callers; i++) {
        w[i] = (struct bench_worker){.fn = fn, .ctx = ctx, .index = i, .seconds = seconds};
        w[i].lat_us = malloc(BENCH_MAX_SAMPLES * sizeof(uint32_t));
        if (!w[i].lat_us) {
            fprintf(stderr, "bench: out of memory\n");
            exit(1);
        }
        pthread_create(&t[i], NULL, bench_worker_main, &w[i]);
    }
    for (int i = 0; i < callers; i++) {
        pthread_join(t[i], NULL);
        out->calls += w[i].n;
        out->errors += w[i].errors;
        if (!out->first_error[0] && w[i].errors)
            memcpy(out->first_error, w[i].first_error, sizeof(out->first_error));
    }
    out->elapsed_s = bench_now_s() - t0;
    out->per_s = (double)out->calls / out->elapsed_s;
    uint32_t *all = malloc((out->calls ? out->calls : 1) * sizeof(uint32_t));
    size_t k = 0;
    for (int i = 0; i < callers; i++) {
        memcpy(all + k, w[i].lat_us, w[i].n * sizeof(uint32_t));
        k += w[i].n;
        free(w[i].lat_us);
    }
    qsort(all, out->calls, sizeof(uint32_t), bench_cmp_u32);
    if (out->calls) {
        out->p50_us = all[out->calls / 2];
        out->p99_us = all[(size_t)((double)out->calls * 0.99)];
    }
    free(all);
    free(w);
    free(t);
}
