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

/* The same, but each caller makes exactly `calls` calls (successful or not), whatever the time:
 * a fixed amount of work, for counting instructions per call under a profiler. Callers outside
 * 1..4096 or calls outside 1..4194304 end the program (exit 2). */
void bench_run_calls(bench_call_fn fn, void *ctx, int callers, size_t calls, bench_result_t *out);

/* Monotonic seconds. */
double bench_now_s(void);

/* A token from a file (what `credexctl token` printed), without its trailing newline; malloc'd.
 * An unreadable or empty file ends the program (exit 2). */
char *bench_read_token(const char *path);

/* ---- CPU per call of the processes of a running stack ----------------------------------- */

#define BENCH_MAX_PROCS 16

/* The processes whose `<name>.pid` files are in a folder (scripts/run's .run/pids), sorted by
 * name so that every report lists them in the same order. */
typedef struct bench_procs {
    size_t n;
    struct {
        char name[32];
        int pid;
    } proc[BENCH_MAX_PROCS];
} bench_procs_t;

/* The CPU time (user + system) of each process and of this program at one moment. */
typedef struct bench_cpu {
    long long ticks[BENCH_MAX_PROCS]; /* -1: not readable */
    double self_s;
    long long machine_busy, machine_all; /* /proc/stat's first line: all CPUs; -1: unreadable */
} bench_cpu_t;

/* Read the pid files of `dir`; an unreadable folder ends the program (exit 2). */
void bench_procs_load(bench_procs_t *procs, const char *dir);

void bench_cpu_snapshot(const bench_procs_t *procs, bench_cpu_t *out);

/* CPU microseconds per call since `before`: us[i] for procs->proc[i] (-1 when the process
 * could not be read at either end), *self_us for this program. calls > 0. */
void bench_cpu_per_call(const bench_procs_t *procs, const bench_cpu_t *before, size_t calls,
                        double us[BENCH_MAX_PROCS], double *self_us);

/* The share of the machine's CPU time (all cores) that was idle since `before`, in percent
 * (-1 when /proc/stat could not be read). Under load that queues calls, an idle share well
 * above zero means something other than CPU holds throughput back. */
double bench_machine_idle_pct(const bench_cpu_t *before);

/* Print one level's figures on stdout: the line "op=<op> callers=... p99_us=...", its first error
 * if any, and, when procs lists processes and calls succeeded, the CPU per call of each since
 * `before` with this program's own, their total and the machine's idle share. */
void bench_print_level(const char *op, int callers, const bench_result_t *r,
                       const bench_procs_t *procs, const bench_cpu_t *before);

/* One "--name value" option of a benchmark's command line: where its value goes. */
typedef enum bench_opt_kind { BENCH_OPT_STR, BENCH_OPT_DOUBLE, BENCH_OPT_INT } bench_opt_kind_t;
typedef struct bench_opt {
    const char *name; /* "--addr" */
    bench_opt_kind_t kind;
    void *out; /* const char **, double * or long * */
} bench_opt_t;

/* Read argv's "--name value" pairs into the table's outputs (strings point into argv). An unknown
 * option, a missing value or a number that does not parse is printed on stderr with prog's name,
 * and the answer is false (the benchmark then exits 2). */
bool bench_opts_parse(const char *prog, int argc, char **argv, const bench_opt_t *opts, size_t n);

#endif
