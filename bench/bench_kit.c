/* bench_kit: see bench_kit.h. */
#include "bench/bench_kit.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define BENCH_MAX_SAMPLES (4u << 20) /* per caller */

struct bench_worker {
    bench_call_fn fn;
    void *ctx;
    int index;
    double seconds;
    size_t max_calls; /* 0: until `seconds` have passed */
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

char *bench_read_token(const char *path)
{
    FILE *f = fopen(path, "r");
    char buf[8192];
    size_t n = f != NULL ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f != NULL)
        fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    char *token = n > 0 ? strdup(buf) : NULL;
    if (token == NULL) {
        fprintf(stderr, "bench: cannot read a token from %s\n", path);
        exit(2);
    }
    return token;
}

static void *bench_worker_main(void *arg)
{
    struct bench_worker *w = arg;
    double end = bench_now_s() + w->seconds;
    unsigned long seq = 0;
    while (w->n < BENCH_MAX_SAMPLES) {
        double t0 = bench_now_s();
        if (w->max_calls ? w->n + w->errors >= w->max_calls : t0 >= end)
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

static void bench_run_workers(bench_call_fn fn, void *ctx, int callers, double seconds,
                              size_t max_calls, bench_result_t *out)
{
    memset(out, 0, sizeof(*out));
    struct bench_worker *w = calloc((size_t)callers, sizeof(*w));
    pthread_t *t = calloc((size_t)callers, sizeof(*t));
    if (!w || !t) {
        fprintf(stderr, "bench: out of memory\n");
        exit(1);
    }
    double t0 = bench_now_s();
    for (int i = 0; i < callers; i++) {
        w[i] = (struct bench_worker){
            .fn = fn, .ctx = ctx, .index = i, .seconds = seconds, .max_calls = max_calls};
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

void bench_run(bench_call_fn fn, void *ctx, int callers, double seconds, bench_result_t *out)
{
    if (callers < 1 || callers > 4096 || !(seconds > 0 && seconds <= 3600)) {
        fprintf(stderr, "bench: callers must be 1..4096 and seconds in (0, 3600] (got %d, %g)\n",
                callers, seconds);
        exit(2);
    }
    bench_run_workers(fn, ctx, callers, seconds, 0, out);
}

void bench_run_calls(bench_call_fn fn, void *ctx, int callers, size_t calls, bench_result_t *out)
{
    if (callers < 1 || callers > 4096 || calls < 1 || calls > BENCH_MAX_SAMPLES) {
        fprintf(stderr, "bench: callers must be 1..4096 and calls 1..%u (got %d, %zu)\n",
                BENCH_MAX_SAMPLES, callers, calls);
        exit(2);
    }
    bench_run_workers(fn, ctx, callers, 0, calls, out);
}

/* ---- CPU per call ------------------------------------------------------------------------- */

static int bench_cmp_proc(const void *a, const void *b)
{
    const char *x = a, *y = b; /* each element starts with its name */
    return strcmp(x, y);
}

void bench_procs_load(bench_procs_t *procs, const char *dir)
{
    memset(procs, 0, sizeof(*procs));
    DIR *d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "bench: cannot open the pid folder %s\n", dir);
        exit(2);
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL && procs->n < BENCH_MAX_PROCS) {
        size_t n = strlen(e->d_name);
        if (n < 5 || n - 4 >= sizeof(procs->proc[0].name) || strcmp(e->d_name + n - 4, ".pid") != 0)
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "r");
        int pid = 0;
        if (f != NULL && fscanf(f, "%d", &pid) == 1 && pid > 0) {
            memcpy(procs->proc[procs->n].name, e->d_name, n - 4);
            procs->proc[procs->n].name[n - 4] = '\0';
            procs->proc[procs->n++].pid = pid;
        }
        if (f != NULL)
            fclose(f);
    }
    closedir(d);
    qsort(procs->proc, procs->n, sizeof(procs->proc[0]), bench_cmp_proc);
}

/* utime + stime of `pid` in clock ticks, or -1 (fields 14 and 15 of /proc/<pid>/stat). */
static long long bench_proc_ticks(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)(ut + st);
}

static double bench_self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* /proc/stat "cpu  user nice system idle iowait irq softirq steal ...": busy is all but idle
 * and iowait. */
static void bench_machine_ticks(long long *busy, long long *all)
{
    long long v[8] = {0};
    *busy = *all = -1;
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return;
    int n = fscanf(f, "cpu %lld %lld %lld %lld %lld %lld %lld %lld", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n != 8)
        return;
    *all = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
    *busy = *all - v[3] - v[4];
}

double bench_machine_idle_pct(const bench_cpu_t *before)
{
    long long busy, all;
    bench_machine_ticks(&busy, &all);
    if (busy < 0 || before->machine_busy < 0 || all <= before->machine_all)
        return -1;
    double b = (double)(busy - before->machine_busy), a = (double)(all - before->machine_all);
    return 100.0 * (1.0 - b / a);
}

void bench_cpu_snapshot(const bench_procs_t *procs, bench_cpu_t *out)
{
    bench_machine_ticks(&out->machine_busy, &out->machine_all);
    for (size_t i = 0; i < procs->n; i++)
        out->ticks[i] = bench_proc_ticks(procs->proc[i].pid);
    out->self_s = bench_self_cpu_s();
}

void bench_cpu_per_call(const bench_procs_t *procs, const bench_cpu_t *before, size_t calls,
                        double us[BENCH_MAX_PROCS], double *self_us)
{
    double hz = (double)sysconf(_SC_CLK_TCK);
    for (size_t i = 0; i < procs->n; i++) {
        long long t1 = bench_proc_ticks(procs->proc[i].pid);
        us[i] = t1 < 0 || before->ticks[i] < 0
                    ? -1
                    : (double)(t1 - before->ticks[i]) / hz * 1e6 / (double)calls;
    }
    *self_us = (bench_self_cpu_s() - before->self_s) * 1e6 / (double)calls;
}

void bench_print_level(const char *op, int callers, const bench_result_t *r,
                       const bench_procs_t *procs, const bench_cpu_t *before)
{
    printf("op=%-8s callers=%-3d calls=%-8zu errors=%-5zu calls_per_s=%-8.0f p50_us=%-6u "
           "p99_us=%u\n",
           op, callers, r->calls, r->errors, r->per_s, r->p50_us, r->p99_us);
    if (r->first_error[0])
        printf("  first error: %s\n", r->first_error);
    if (procs->n > 0 && r->calls > 0) {
        double us[BENCH_MAX_PROCS], self, sum = 0;
        bench_cpu_per_call(procs, before, r->calls, us, &self);
        printf("  cpu_us_per_call");
        for (size_t i = 0; i < procs->n; i++) {
            if (us[i] < 0)
                continue;
            sum += us[i];
            printf(" %s=%.0f", procs->proc[i].name, us[i]);
        }
        printf(" bench=%.0f total=%.0f machine_idle=%.0f%%\n", self, sum + self,
               bench_machine_idle_pct(before));
    }
    fflush(stdout);
}

bool bench_opts_parse(const char *prog, int argc, char **argv, const bench_opt_t *opts, size_t n)
{
    for (int i = 1; i < argc; i += 2) {
        const bench_opt_t *o = NULL;
        for (size_t j = 0; j < n && !o; j++)
            if (strcmp(argv[i], opts[j].name) == 0)
                o = &opts[j];
        if (!o || i + 1 >= argc) {
            fprintf(stderr, "%s: %s option %s\n", prog, o ? "no value for" : "unknown", argv[i]);
            return false;
        }
        const char *v = argv[i + 1];
        char *end = NULL;
        errno = 0;
        switch (o->kind) {
        case BENCH_OPT_STR:
            *(const char **)o->out = v;
            continue;
        case BENCH_OPT_DOUBLE:
            *(double *)o->out = strtod(v, &end);
            break;
        case BENCH_OPT_INT:
            *(long *)o->out = strtol(v, &end, 10);
            break;
        }
        if (errno || end == v || *end) {
            fprintf(stderr, "%s: %s expects a number\n", prog, o->name);
            return false;
        }
    }
    return true;
}
