/*
 * retrieve_bench: the whole retrieval path of a running credex stack, from outside, as an agent
 * runtime does it: Retrieval/Retrieve on the gateway over mutual TLS with a service JWT and the
 * user's on-behalf-of token, which means JWT verification, two OpenFGA checks, store's MongoDB
 * reads, the data-key unwrap (keywrap or store's DEK cache) and AES-256-GCM decryption. It
 * creates its own secrets first (Secrets/CreateSecret through the same gateway), then runs each
 * concurrency level for --seconds, and also measures CreateSecret and RotateSecret rates and,
 * as the transport floor, gRPC Health/Check on the gateway. Prints calls/s, p50 and p99.
 * A benchmark, not a test: it asserts nothing (docs/PERFORMANCE.md, "Retrieval").
 *
 *   retrieve_bench --addr 127.0.0.1:7104 --ca CA --cert agent.pem --key agent.key
 *                  --service-token FILE --user-token FILE
 *                  [--callers 1,8,32] [--seconds 5] [--secrets 64] [--peer gateway]
 *                  [--write-callers 1,8] [--only retrieve|write|all] [--cpu-of PIDDIR]
 *                  [--calls N] [--hook CMD]
 *
 * Tokens are read from files (mint them with `credexctl token --service agent-runtime` and
 * `credexctl token --user bench-user`); the service must hold the platform retriever grant
 * (service:agent-runtime retriever platform:credex in OpenFGA). The certificate must be the one
 * of the service named by the token's azp.
 *
 * --cpu-of DIR (scripts/run's .run/pids) also prints, per level, the CPU time each process whose
 * `<name>.pid` is in DIR spent per successful call, and the bench's own (utime + stime from
 * /proc), so that "what dominates" is a measured figure rather than a guess.
 *
 * --calls N makes every caller of a level make exactly N calls instead of calling for --seconds,
 * and --hook CMD runs `CMD <op> <callers> start` before each measured level (never the warm-up)
 * and `CMD <op> <callers> stop <calls>` after it, through the shell: a fixed amount of work
 * between two points where a profiler is switched on and off (scripts/bench profile counts
 * instructions per call this way under callgrind).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench_gateway.h"
#include "bench/bench_kit.h"
#include "common/rpc/rpc.h"
#include "credex/v1/common.pb-c.h"
#include "credex/v1/gateway.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"

#define MAX_SECRETS 1024

enum op { OP_RETRIEVE, OP_CREATE, OP_ROTATE, OP_HEALTH };

static const char *op_name[] = {"retrieve", "create", "rotate", "health"};

struct shared {
    rpc_client_t *client;
    rpc_header_t headers[2];
    char *secret_ids[MAX_SECRETS];
    size_t nsecrets;
};

/* Processes whose CPU time is reported per level (--cpu-of). */
static bench_procs_t procs;

/* --calls (0: by time) and --hook (NULL: none). */
static size_t fixed_calls;
static const char *hook;

/* The value every benchmark secret holds (not a credential). */
static const char value[] = "bench-value-0123456789abcdef0123456789abcdef";

/* What one level's callers share: the stack and the operation. */
struct level {
    struct shared *sh;
    enum op op;
};

/* One call of `op`; true on success. The secret value is a fixed benchmark string. */
static bool one_call(void *ctx, int caller, unsigned long seq, cx_error_t *err)
{
    const struct level *lv = ctx;
    struct shared *sh = lv->sh;
    rpc_call_options_t opts = {.deadline_ms = 10000, .headers = sh->headers, .nheaders = 2};
    rpc_arena_t *arena = rpc_arena_new(1024);
    ProtobufCMessage *reply = NULL;
    bool ok = false;
    switch (lv->op) {
    case OP_RETRIEVE: {
        Credex__V1__ResourceContext rc = CREDEX__V1__RESOURCE_CONTEXT__INIT;
        rc.resource_type = "mcp_server";
        rc.resource_id = "bench";
        Credex__V1__RetrieveRequest req = CREDEX__V1__RETRIEVE_REQUEST__INIT;
        req.secret_ref = sh->secret_ids[(seq * 7 + (unsigned long)caller) % sh->nsecrets];
        req.intended_use = "mcp_server_env";
        req.resource_context = &rc;
        ok = rpc_client_unary(sh->client, &credex__v1__retrieval__descriptor, "Retrieve", &req.base,
                              &opts, arena, &reply, err);
        if (ok && ((Credex__V1__RetrieveResponse *)reply)->value.len != sizeof(value) - 1) {
            snprintf(err->message, sizeof(err->message), "retrieve returned a value of %zu bytes",
                     ((Credex__V1__RetrieveResponse *)reply)->value.len);
            ok = false;
        }
        break;
    }
    case OP_CREATE: {
        char key[96], name[96];
        snprintf(key, sizeof(key), "bench-%ld-%d-%lu", (long)time(NULL), caller, seq);
        snprintf(name, sizeof(name), "bench %d %lu", caller, seq);
        Credex__V1__CreateSecretRequest req = CREDEX__V1__CREATE_SECRET_REQUEST__INIT;
        req.idempotency_key = key;
        req.kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_API_KEY;
        req.display_name = name;
        req.value.data = (uint8_t *)value;
        req.value.len = sizeof(value) - 1;
        ok = rpc_client_unary(sh->client, &credex__v1__secrets__descriptor, "CreateSecret",
                              &req.base, &opts, arena, &reply, err);
        break;
    }
    case OP_ROTATE: {
        Credex__V1__RotateSecretRequest req = CREDEX__V1__ROTATE_SECRET_REQUEST__INIT;
        req.secret_id = sh->secret_ids[(size_t)caller % sh->nsecrets]; /* one secret per caller */
        req.expected_version = 0;
        req.value.data = (uint8_t *)value;
        req.value.len = sizeof(value) - 1;
        ok = rpc_client_unary(sh->client, &credex__v1__secrets__descriptor, "RotateSecret",
                              &req.base, &opts, arena, &reply, err);
        break;
    }
    case OP_HEALTH: {
        Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
        ok = rpc_client_unary(sh->client, &grpc__health__v1__health__descriptor, "Check", &req.base,
                              &opts, arena, &reply, err);
        break;
    }
    }
    rpc_arena_free(arena);
    return ok;
}

/* Run the hook for one measured level; a failing hook ends the program (its figures would be
 * meaningless). */
static void run_hook(enum op op, int callers, const char *phase, size_t calls)
{
    if (!hook)
        return;
    char cmd[4096];
    if ((size_t)snprintf(cmd, sizeof(cmd), "%s %s %d %s %zu", hook, op_name[op], callers, phase,
                         calls) >= sizeof(cmd) ||
        system(cmd) != 0) {
        fprintf(stderr, "retrieve_bench: the hook failed: %s\n", cmd);
        exit(1);
    }
}

static void run_level(struct shared *sh, enum op op, int callers, double seconds, bool print)
{
    bench_cpu_t cpu0;
    struct level lv = {.sh = sh, .op = op};
    bench_result_t r;
    if (print)
        run_hook(op, callers, "start", 0);
    bench_cpu_snapshot(&procs, &cpu0);
    if (print && fixed_calls)
        bench_run_calls(one_call, &lv, callers, fixed_calls, &r);
    else
        bench_run(one_call, &lv, callers, seconds, &r);
    if (!print)
        return;
    run_hook(op, callers, "stop", r.calls);
    bench_print_level(op_name[op], callers, &r, &procs, &cpu0);
}

static void levels(struct shared *sh, enum op op, const char *list, double seconds)
{
    char *copy = strdup(list), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save))
        run_level(sh, op, atoi(tok), seconds, true);
    free(copy);
}

int main(int argc, char **argv)
{
    const char *addr = NULL, *ca = NULL, *cert = NULL, *key = NULL, *peer = "gateway";
    const char *stoken_file = NULL, *utoken_file = NULL, *callers = "1,8,32";
    const char *write_callers = "1,8", *only = "all", *cpu_of = NULL;
    long ncalls = 0;
    double seconds = 5;
    long nsecrets = 64;
    const bench_opt_t cli[] = {
        {"--addr", BENCH_OPT_STR, &addr},
        {"--ca", BENCH_OPT_STR, &ca},
        {"--cert", BENCH_OPT_STR, &cert},
        {"--key", BENCH_OPT_STR, &key},
        {"--peer", BENCH_OPT_STR, &peer},
        {"--service-token", BENCH_OPT_STR, &stoken_file},
        {"--user-token", BENCH_OPT_STR, &utoken_file},
        {"--callers", BENCH_OPT_STR, &callers},
        {"--write-callers", BENCH_OPT_STR, &write_callers},
        {"--seconds", BENCH_OPT_DOUBLE, &seconds},
        {"--secrets", BENCH_OPT_INT, &nsecrets},
        {"--only", BENCH_OPT_STR, &only},
        {"--cpu-of", BENCH_OPT_STR, &cpu_of},
        {"--calls", BENCH_OPT_INT, &ncalls},
        {"--hook", BENCH_OPT_STR, &hook},
    };
    if (!bench_opts_parse("retrieve_bench", argc, argv, cli, sizeof(cli) / sizeof(cli[0])))
        return 2;
    if (cpu_of)
        bench_procs_load(&procs, cpu_of);
    if (ncalls > 0)
        fixed_calls = (size_t)ncalls;
    if (!addr || !ca || !cert || !key || !stoken_file || !utoken_file || nsecrets < 1 ||
        nsecrets > MAX_SECRETS) {
        fprintf(stderr, "retrieve_bench: need --addr --ca --cert --key --service-token FILE "
                        "--user-token FILE (see the header of bench/retrieve_bench.c)\n");
        return 2;
    }
    static struct shared sh;
    const bench_gateway_t g = {.addr = addr,
                               .peer = peer,
                               .ca = ca,
                               .cert = cert,
                               .key = key,
                               .stoken_file = stoken_file,
                               .utoken_file = utoken_file};
    sh.client = bench_gateway_client("retrieve_bench", &g, sh.headers);
    if (sh.client == NULL)
        return 1;
    cx_error_t err;

    /* The secrets every level retrieves (and rotates). */
    for (long i = 0; i < nsecrets; i++) {
        char keybuf[96], name[64];
        snprintf(keybuf, sizeof(keybuf), "bench-setup-%ld-%ld", (long)time(NULL), i);
        snprintf(name, sizeof(name), "bench secret %ld", i);
        Credex__V1__CreateSecretRequest req = CREDEX__V1__CREATE_SECRET_REQUEST__INIT;
        req.idempotency_key = keybuf;
        req.kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_API_KEY;
        req.display_name = name;
        req.value.data = (uint8_t *)value;
        req.value.len = sizeof(value) - 1;
        rpc_call_options_t opts = {.deadline_ms = 10000, .headers = sh.headers, .nheaders = 2};
        rpc_arena_t *arena = rpc_arena_new(1024);
        ProtobufCMessage *reply = NULL;
        if (!rpc_client_unary(sh.client, &credex__v1__secrets__descriptor, "CreateSecret",
                              &req.base, &opts, arena, &reply, &err)) {
            fprintf(stderr, "retrieve_bench: CreateSecret: %s: %s\n", cx_code_reason(err.code),
                    err.message);
            return 1;
        }
        sh.secret_ids[sh.nsecrets++] =
            strdup(((Credex__V1__CreateSecretResponse *)reply)->secret->secret_id);
        rpc_arena_free(arena);
    }
    printf("retrieve_bench: gateway %s as %s, %zu secrets, %.0fs per level\n", addr, cert,
           sh.nsecrets, seconds);
    printf("warm-up (not a figure)\n");
    run_level(&sh, OP_HEALTH, 1, 0.5, false);
    run_level(&sh, OP_RETRIEVE, 4, 1.0, false);
    levels(&sh, OP_HEALTH, "1,8", seconds);
    if (strcmp(only, "write") != 0)
        levels(&sh, OP_RETRIEVE, callers, seconds);
    if (strcmp(only, "retrieve") != 0) {
        levels(&sh, OP_CREATE, write_callers, seconds);
        levels(&sh, OP_ROTATE, write_callers, seconds);
    }
    rpc_client_free(sh.client);
    for (size_t i = 0; i < sh.nsecrets; i++)
        free(sh.secret_ids[i]);
    free((char *)sh.headers[0].value);
    free((char *)sh.headers[1].value);
    return 0;
}
