/*
 * bench_kit: what every benchmark program shares: N concurrent callers making calls for a fixed
 * time, one latency sample per successful call, and the figures printed from them (calls/s,
 * p50, p99). Each program supplies only its call.
 */
#ifndef CREDEX_BENCH_BENCH_KIT_H
#define CREDEX_BENCH_BENCH_KIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error/cx_error.h"

/* One call by caller `caller` (0..callers-1), its seq-th; true on success. */
typedef bool (*bench_call_fn)(void *ctx, int caller, unsigned long seq, cx_error_t *err);

typedef struct bench_result {
    size_t calls, errors;
    double elapsed_s, per_s;
    uint32_t p50_us, p99_us;
    char first_error[320]; /* "" when none */
} bench_result_t;

/* Run `callers` threads calling fn for `seconds` each. Callers outside 1..4096 or seconds
 * outside (0, 3600] end the program with a usage message (exit 2). */
void bench_run(bench_call_fn fn, void *ctx, int callers, double seconds, bench_result_t *out);

/* Monotonic seconds. */
double bench_now_s(void);

#endif
