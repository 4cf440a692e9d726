/*
 * edge_bench: what the HTTP edge costs. One secret's metadata is read the two ways a client can
 * read it, by the same user with the same number of concurrent clients:
 *   edge HTTP    GET /api/credentials/secrets/{id} on the edge, Authorization: Bearer <user
 *                token>, keep-alive, driven by wrk (one connection per client);
 *   gRPC direct  credex.v1.Secrets/GetSecret on the gateway over mutual TLS, the user token in
 *                x-credex-user-token and x-credex-caller: browser (what the edge sends), one
 *                blocking caller per client on one channel (bench_kit).
 * Both make the gateway do the same work: a browser-kind caller, its token verified (or found in
 * the verified-token cache), the read_metadata check, store's read of the metadata. The only
 * difference is the edge's hop: HTTP parsing, guardrails, JSON encoding of the reply and its own
 * gRPC call to the gateway. Each configuration runs --runs times, the two paths interleaved
 * (their order alternating) so that a change in the machine's load touches both; printed are the
 * medians and [min-max] of requests/s, p50 and p99, the edge's overhead paired run by run, and
 * with --cpu-of the CPU time each process spent per request. A benchmark, not a test: it
 * asserts nothing (docs/PERFORMANCE.md, "Edge").
 *
 *   edge_bench --gateway HOST:PORT --ca CA --cert C --key K --edge-url http://HOST:PORT
 *              --user-token FILE --secret-id ID [--wrk-script bench/edge_wrk.lua]
 *              [--clients 1,8] [--seconds 10] [--runs 3] [--warmup 2] [--peer gateway]
 *              [--wrk wrk] [--cpu-of PIDDIR]
 *
 * The certificate is a caller the gateway lets call Secrets (credexctl's); the user must be
 * allowed read_metadata on the secret (its owner).
 */
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench_kit.h"
#include "common/rpc/rpc.h"
#include "credex/v1/gateway.pb-c.h"

#define MAX_LEVELS 8
#define MAX_RUNS   15

extern char **environ;

enum path { PATH_GRPC, PATH_EDGE, PATH_COUNT_ };

static const char *const path_name[PATH_COUNT_] = {"gRPC direct", "edge HTTP"};

/* The figures of one run of one path at one level. */
typedef struct sample {
    size_t requests, errors;
    double per_s;
    double p50_us, p99_us;
    double cpu_us[BENCH_MAX_PROCS]; /* per process of --cpu-of, per request; -1 unknown */
    double client_us;               /* the client's own CPU per request (bench or wrk) */
    char first_error[320];
} sample_t;

typedef struct bench {
    /* gRPC */
    rpc_client_t *client;
    rpc_header_t headers[2];
    const char *secret_id;
    /* HTTP */
    const char *wrk, *wrk_script;
    char url[1024];
    /* CPU */
    bench_procs_t procs;
} bench_t;

/* ---- the direct path ------------------------------------------------------------------------ */

static bool get_secret(void *ctx, int caller, unsigned long seq, cx_error_t *err)
{
    const bench_t *b = ctx;
    (void)caller;
    (void)seq;
    Credex__V1__GetSecretRequest req = CREDEX__V1__GET_SECRET_REQUEST__INIT;
    req.secret_id = (char *)b->secret_id;
    rpc_call_options_t opts = {.deadline_ms = 10000, .headers = b->headers, .nheaders = 2};
    rpc_arena_t *arena = rpc_arena_new(1024);
    ProtobufCMessage *reply = NULL;
    bool ok = rpc_client_unary(b->client, &credex__v1__secrets__descriptor, "GetSecret", &req.base,
                               &opts, arena, &reply, err);
    if (ok && strcmp(((Credex__V1__SecretMetadata *)reply)->secret_id, b->secret_id) != 0) {
        snprintf(err->message, sizeof(err->message), "GetSecret answered another secret");
        ok = false;
    }
    rpc_arena_free(arena);
    return ok;
}

static void run_grpc(bench_t *b, int clients, double seconds, sample_t *out)
{
    bench_cpu_t cpu0;
    bench_result_t r;
    memset(out, 0, sizeof(*out));
    bench_cpu_snapshot(&b->procs, &cpu0);
    bench_run(get_secret, b, clients, seconds, &r);
    out->requests = r.calls;
    out->errors = r.errors;
    out->per_s = r.per_s;
    out->p50_us = r.p50_us;
    out->p99_us = r.p99_us;
    memcpy(out->first_error, r.first_error, sizeof(out->first_error));
    if (r.calls > 0)
        bench_cpu_per_call(&b->procs, &cpu0, r.calls, out->cpu_us, &out->client_us);
}

/* ---- the edge path: wrk ------------------------------------------------------------------- */

/* Parse the line of edge_wrk.lua. */
static bool parse_wrk(const char *text, sample_t *out)
{
    const char *line = strstr(text, "edge_bench_wrk ");
    unsigned long long req, dur, p50, p99, ec, er, ew, es, et;
    if (line == NULL ||
        sscanf(line,
               "edge_bench_wrk requests=%llu duration_us=%llu p50_us=%llu p99_us=%llu "
               "errors_connect=%llu errors_read=%llu errors_write=%llu errors_status=%llu "
               "errors_timeout=%llu",
               &req, &dur, &p50, &p99, &ec, &er, &ew, &es, &et) != 9 ||
        dur == 0)
        return false;
    out->requests = req;
    out->per_s = (double)req / ((double)dur / 1e6);
    out->p50_us = (double)p50;
    out->p99_us = (double)p99;
    out->errors = ec + er + ew + es + et;
    if (out->errors > 0)
        snprintf(out->first_error, sizeof(out->first_error),
                 "wrk: %llu connect, %llu read, %llu write, %llu timeout errors, %llu answers "
                 "not 2xx/3xx",
                 ec, er, ew, et, es);
    return true;
}

static void run_edge(bench_t *b, int clients, double seconds, sample_t *out)
{
    char threads[16], conns[16], dur[32], outbuf[16384];
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    /* wrk needs at least one connection per thread; more threads than cores only compete. */
    snprintf(threads, sizeof(threads), "%d",
             clients < (int)(ncpu > 0 ? ncpu : 1) ? clients : (int)(ncpu > 0 ? ncpu : 1));
    snprintf(conns, sizeof(conns), "%d", clients);
    snprintf(dur, sizeof(dur), "%.0fs", seconds < 1 ? 1 : seconds);
    char *argv[] = {(char *)b->wrk, "-t", threads,     "-c", conns,
                    "-d",           dur,  "--latency", "-s", (char *)b->wrk_script,
                    b->url,         NULL};
    memset(out, 0, sizeof(*out));

    int fds[2];
    if (pipe(fds) != 0) {
        fprintf(stderr, "edge_bench: pipe: %s\n", strerror(errno));
        exit(1);
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    posix_spawn_file_actions_addclose(&fa, fds[1]);

    bench_cpu_t cpu0;
    bench_cpu_snapshot(&b->procs, &cpu0);
    pid_t pid;
    int rc = posix_spawnp(&pid, b->wrk, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        fprintf(stderr, "edge_bench: cannot run %s: %s (install wrk: scripts/setup)\n", b->wrk,
                strerror(rc));
        exit(1);
    }
    size_t n = 0;
    ssize_t got;
    while ((got = read(fds[0], outbuf + n, sizeof(outbuf) - 1 - n)) > 0 ||
           (got < 0 && errno == EINTR))
        if (got > 0 && (n += (size_t)got) == sizeof(outbuf) - 1)
            break;
    outbuf[n] = '\0';
    close(fds[0]);
    int status = 0;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !parse_wrk(outbuf, out)) {
        fprintf(stderr, "edge_bench: wrk failed; its output:\n%s\n", outbuf);
        exit(1);
    }
    if (out->requests > 0) {
        double self;
        bench_cpu_per_call(&b->procs, &cpu0, out->requests, out->cpu_us, &self);
        double wrk_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
        out->client_us = wrk_s * 1e6 / (double)out->requests + self;
    }
}

/* ---- figures -------------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median, min and max of n values (n >= 1; v is reordered). */
static void stats(double *v, size_t n, double *med, double *lo, double *hi)
{
    qsort(v, n, sizeof(double), cmp_double);
    *med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    *lo = v[0];
    *hi = v[n - 1];
}

typedef double (*field_fn)(const sample_t *s);

static double f_per_s(const sample_t *s)
{
    return s->per_s;
}
static double f_p50(const sample_t *s)
{
    return s->p50_us;
}
static double f_p99(const sample_t *s)
{
    return s->p99_us;
}
static double f_client(const sample_t *s)
{
    return s->client_us;
}

static void stats_of(const sample_t *s, size_t n, field_fn f, double *med, double *lo, double *hi)
{
    double v[MAX_RUNS];
    for (size_t i = 0; i < n; i++)
        v[i] = f(&s[i]);
    stats(v, n, med, lo, hi);
}

static void print_level(const bench_t *b, int clients, sample_t runs[PATH_COUNT_][MAX_RUNS],
                        size_t nruns)
{
    for (int p = 0; p < PATH_COUNT_; p++) {
        double m[3], lo[3], hi[3];
        size_t errors = 0;
        stats_of(runs[p], nruns, f_per_s, &m[0], &lo[0], &hi[0]);
        stats_of(runs[p], nruns, f_p50, &m[1], &lo[1], &hi[1]);
        stats_of(runs[p], nruns, f_p99, &m[2], &lo[2], &hi[2]);
        for (size_t r = 0; r < nruns; r++)
            errors += runs[p][r].errors;
        printf("%7d  %-11s  %7.0f [%.0f-%.0f]  %6.0f [%.0f-%.0f]  %6.0f [%.0f-%.0f]  %zu\n",
               clients, path_name[p], m[0], lo[0], hi[0], m[1], lo[1], hi[1], m[2], lo[2], hi[2],
               errors);
        for (size_t r = 0; r < nruns; r++)
            if (runs[p][r].first_error[0]) {
                printf("         first error: %s\n", runs[p][r].first_error);
                break;
            }
    }
    /* The overhead, paired run by run: both paths of a run saw the same moment of the machine. */
    double d50[MAX_RUNS], ratio[MAX_RUNS], md, ld, hd, mr, lr, hr;
    for (size_t r = 0; r < nruns; r++) {
        d50[r] = runs[PATH_EDGE][r].p50_us - runs[PATH_GRPC][r].p50_us;
        ratio[r] = runs[PATH_GRPC][r].per_s > 0
                       ? 100.0 * runs[PATH_EDGE][r].per_s / runs[PATH_GRPC][r].per_s
                       : 0;
    }
    stats(d50, nruns, &md, &ld, &hd);
    stats(ratio, nruns, &mr, &lr, &hr);
    printf("%7d  overhead     p50 %+.0f us [%+.0f..%+.0f] (goal <= +150: %s), throughput %.0f%% "
           "[%.0f-%.0f%%] of direct (goal >= 80%%: %s)\n",
           clients, md, ld, hd, md <= 150 ? "met" : "NOT met", mr, lr, hr,
           mr >= 80 ? "met" : "NOT met");
    if (b->procs.n == 0)
        return;
    /* CPU per request by process: where the difference goes. */
    for (int p = 0; p < PATH_COUNT_; p++) {
        double m, lo, hi, total;
        stats_of(runs[p], nruns, f_client, &m, &lo, &hi);
        total = m;
        printf("         cpu us/req %-11s client=%.0f", path_name[p], m);
        for (size_t i = 0; i < b->procs.n; i++) {
            double v[MAX_RUNS];
            size_t k = 0;
            for (size_t r = 0; r < nruns; r++)
                if (runs[p][r].cpu_us[i] >= 0)
                    v[k++] = runs[p][r].cpu_us[i];
            if (k == 0)
                continue;
            stats(v, k, &m, &lo, &hi);
            total += m;
            printf(" %s=%.0f", b->procs.proc[i].name, m);
        }
        printf(" total=%.0f\n", total);
    }
}

/* ---- main ----------------------------------------------------------------------------------- */

static size_t parse_levels(const char *list, int *out)
{
    char *copy = strdup(list), *save = NULL;
    size_t n = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL && n < MAX_LEVELS;
         tok = strtok_r(NULL, ",", &save)) {
        int c = atoi(tok);
        if (c < 1 || c > 1024) {
            fprintf(stderr, "edge_bench: --clients: each level must be 1..1024\n");
            exit(2);
        }
        out[n++] = c;
    }
    free(copy);
    return n;
}

int main(int argc, char **argv)
{
    const char *gateway = NULL, *ca = NULL, *cert = NULL, *key = NULL, *peer = "gateway";
    const char *edge_url = NULL, *token_file = NULL, *clients_list = "1,8", *cpu_of = NULL;
    double seconds = 10, warmup = 2;
    long nruns = 3;
    bench_t b = {.wrk = "wrk"};
    const bench_opt_t cli[] = {
        {"--gateway", BENCH_OPT_STR, &gateway},
        {"--ca", BENCH_OPT_STR, &ca},
        {"--cert", BENCH_OPT_STR, &cert},
        {"--key", BENCH_OPT_STR, &key},
        {"--peer", BENCH_OPT_STR, &peer},
        {"--edge-url", BENCH_OPT_STR, &edge_url},
        {"--user-token", BENCH_OPT_STR, &token_file},
        {"--secret-id", BENCH_OPT_STR, &b.secret_id},
        {"--wrk", BENCH_OPT_STR, &b.wrk},
        {"--wrk-script", BENCH_OPT_STR, &b.wrk_script},
        {"--clients", BENCH_OPT_STR, &clients_list},
        {"--seconds", BENCH_OPT_DOUBLE, &seconds},
        {"--warmup", BENCH_OPT_DOUBLE, &warmup},
        {"--runs", BENCH_OPT_INT, &nruns},
        {"--cpu-of", BENCH_OPT_STR, &cpu_of},
    };
    if (!bench_opts_parse("edge_bench", argc, argv, cli, sizeof(cli) / sizeof(cli[0])))
        return 2;
    if (!gateway || !ca || !cert || !key || !edge_url || !token_file || !b.secret_id ||
        !b.wrk_script || nruns < 1 || nruns > MAX_RUNS || !(seconds >= 1 && seconds <= 3600) ||
        !(warmup >= 0 && warmup <= 60)) {
        fprintf(stderr, "edge_bench: need --gateway --ca --cert --key --edge-url --user-token FILE "
                        "--secret-id ID --wrk-script FILE; --runs 1..15, --seconds 1..3600 "
                        "(see the header of bench/edge_bench.c)\n");
        return 2;
    }
    int levels[MAX_LEVELS];
    size_t nlevels = parse_levels(clients_list, levels);
    if (cpu_of != NULL)
        bench_procs_load(&b.procs, cpu_of);
    snprintf(b.url, sizeof(b.url), "%s/api/credentials/secrets/%s", edge_url, b.secret_id);

    char *token = bench_read_token(token_file);
    /* wrk's script reads the token from its environment; set before any thread exists. */
    if (setenv("EDGE_BENCH_TOKEN", token, 1) != 0) {
        fprintf(stderr, "edge_bench: setenv failed\n");
        return 1;
    }
    b.headers[0] = (rpc_header_t){"x-credex-user-token", token};
    b.headers[1] = (rpc_header_t){"x-credex-caller", "browser"};
    cx_error_t err;
    cx_error_clear(&err);
    rpc_tls_t tls = {.ca_file = ca, .cert_file = cert, .key_file = key};
    b.client = rpc_client_new(gateway, peer, &tls, &err);
    if (b.client == NULL) {
        fprintf(stderr, "edge_bench: client: %s\n", err.message);
        return 1;
    }
    if (!get_secret(&b, 0, 0, &err)) {
        fprintf(stderr, "edge_bench: GetSecret: %s: %s\n", cx_code_reason(err.code), err.message);
        return 1;
    }

    printf("edge_bench: GET %s/api/credentials/secrets/{id} (wrk, keep-alive) vs "
           "Secrets/GetSecret on %s (gRPC, mTLS), same user, same secret;\n"
           "%ld run(s) x %.0f s per figure, paths interleaved; median [min-max] over the runs\n",
           edge_url, gateway, nruns, seconds);
    if (warmup > 0) {
        sample_t w;
        run_grpc(&b, 2, warmup, &w);
        run_edge(&b, 2, warmup, &w);
        if (w.errors > 0) {
            fprintf(stderr, "edge_bench: the edge refused the warm-up: %s\n", w.first_error);
            return 1;
        }
    }
    printf("%7s  %-11s  %-22s  %-20s  %-20s  %s\n", "clients", "path", "requests/s", "p50 us",
           "p99 us", "errors");
    sample_t runs[PATH_COUNT_][MAX_RUNS];
    for (size_t l = 0; l < nlevels; l++) {
        for (int r = 0; r < nruns; r++) {
            /* Alternate which path goes first, so that neither always follows the other. */
            enum path first = r % 2 ? PATH_EDGE : PATH_GRPC;
            for (int k = 0; k < 2; k++) {
                enum path p = k == 0 ? first : (enum path)(PATH_COUNT_ - 1 - first);
                if (p == PATH_GRPC)
                    run_grpc(&b, levels[l], seconds, &runs[p][r]);
                else
                    run_edge(&b, levels[l], seconds, &runs[p][r]);
                fprintf(stderr, "  clients=%d run=%d %-11s %.0f/s p50=%.0f p99=%.0f us\n",
                        levels[l], r + 1, path_name[p], runs[p][r].per_s, runs[p][r].p50_us,
                        runs[p][r].p99_us);
            }
        }
        print_level(&b, levels[l], runs, (size_t)nruns);
        fflush(stdout);
    }
    rpc_client_free(b.client);
    free(token);
    return 0;
}
