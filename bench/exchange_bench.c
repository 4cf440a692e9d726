/*
 * exchange_bench: Retrieval/Exchange through a running stack's gateway, as an agent runtime
 * calls it for a user, next to Retrieval/Retrieve in the same run for the ratio of their costs:
 * mutual TLS, the service JWT and the user's on-behalf-of token, the retriever and exchanger
 * grants, oauth's pick, the user's connection and the connector in OpenFGA, then oauth's
 * GetProviderToken (the token set's store.Resolve, the audit event). Three operations:
 *
 *   retrieve   Retrieve of one secret of the user (the baseline)
 *   exchange   Exchange of a connection whose token is valid (no provider request), named by
 *              its provider key (oauth picks it from the database)
 *   exch_id    the same connection named by its connection_id (oauth reads it through its
 *              document cache)
 *   refresh    Exchange of a connection whose token always needs a refresh (the provider
 *              issues tokens that expire within the 60 s default minimum lifetime), so that
 *              every call refreshes at the provider, fenced and stored
 *
 * each at every --callers level for --seconds, printing calls/s, p50, p99 and, with --cpu-of,
 * the CPU per call of every process of the stack. A benchmark, not a test: it asserts nothing
 * (docs/PERFORMANCE.md, "Exchange"). scripts/bench exchange sets up a stack, the provider test
 * servers and the connections, and runs it.
 *
 *   exchange_bench --addr 127.0.0.1:7104 --ca CA --cert agent.pem --key agent.key
 *                  --service-token FILE --user-token FILE --secret-id ID
 *                  --valid-provider KEY [--valid-connection ID] [--refresh-provider KEY]
 *                  [--callers 1,8] [--seconds 5] [--cpu-of PIDDIR] [--peer gateway]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_gateway.h"
#include "bench/bench_kit.h"
#include "common/rpc/rpc.h"
#include "credex/v1/common.pb-c.h"
#include "credex/v1/gateway.pb-c.h"

enum op { OP_RETRIEVE, OP_EXCHANGE, OP_EXCHANGE_ID, OP_REFRESH };

static const char *op_name[] = {"retrieve", "exchange", "exch_id", "refresh"};

struct shared {
    rpc_client_t *client;
    rpc_header_t headers[2];
    const char *secret_id;
    const char *provider[4];   /* per op: the provider key of the exchanged connection */
    const char *connection_id; /* OP_EXCHANGE_ID: the valid connection, named by its id */
};

struct level {
    const struct shared *sh;
    enum op op;
};

static bench_procs_t procs;

static bool one_call(void *ctx, int caller, unsigned long seq, cx_error_t *err)
{
    (void)caller;
    (void)seq;
    const struct level *lv = ctx;
    const struct shared *sh = lv->sh;
    rpc_call_options_t opts = {.deadline_ms = 10000, .headers = sh->headers, .nheaders = 2};
    rpc_arena_t *arena = rpc_arena_new(1024);
    ProtobufCMessage *reply = NULL;
    Credex__V1__ResourceContext rc = CREDEX__V1__RESOURCE_CONTEXT__INIT;
    rc.resource_type = "mcp_server";
    rc.resource_id = "bench";
    bool ok;
    if (lv->op == OP_RETRIEVE) {
        Credex__V1__RetrieveRequest req = CREDEX__V1__RETRIEVE_REQUEST__INIT;
        req.secret_ref = (char *)sh->secret_id;
        req.intended_use = "mcp_server_env";
        req.resource_context = &rc;
        ok = rpc_client_unary(sh->client, &credex__v1__retrieval__descriptor, "Retrieve", &req.base,
                              &opts, arena, &reply, err);
    } else {
        Credex__V1__ExchangeRequest req = CREDEX__V1__EXCHANGE_REQUEST__INIT;
        if (lv->op == OP_EXCHANGE_ID)
            req.connection_id = (char *)sh->connection_id;
        else
            req.provider_key = (char *)sh->provider[lv->op];
        req.intended_use = "mcp_impersonation";
        req.resource_context = &rc;
        ok = rpc_client_unary(sh->client, &credex__v1__retrieval__descriptor, "Exchange", &req.base,
                              &opts, arena, &reply, err);
        if (ok && ((Credex__V1__ExchangeResponse *)reply)->material.len == 0) {
            snprintf(err->message, sizeof(err->message), "exchange returned no token");
            ok = false;
        }
    }
    rpc_arena_free(arena);
    return ok;
}

static void run_level(const struct shared *sh, enum op op, int callers, double seconds, bool print)
{
    bench_cpu_t cpu0;
    struct level lv = {.sh = sh, .op = op};
    bench_result_t r;
    bench_cpu_snapshot(&procs, &cpu0);
    bench_run(one_call, &lv, callers, seconds, &r);
    if (print)
        bench_print_level(op_name[op], callers, &r, &procs, &cpu0);
}

int main(int argc, char **argv)
{
    const char *addr = NULL, *ca = NULL, *cert = NULL, *key = NULL, *peer = "gateway";
    const char *stoken_file = NULL, *utoken_file = NULL, *callers = "1,8", *cpu_of = NULL;
    static struct shared sh;
    double seconds = 5;
    const bench_opt_t cli[] = {
        {"--addr", BENCH_OPT_STR, &addr},
        {"--ca", BENCH_OPT_STR, &ca},
        {"--cert", BENCH_OPT_STR, &cert},
        {"--key", BENCH_OPT_STR, &key},
        {"--peer", BENCH_OPT_STR, &peer},
        {"--service-token", BENCH_OPT_STR, &stoken_file},
        {"--user-token", BENCH_OPT_STR, &utoken_file},
        {"--secret-id", BENCH_OPT_STR, &sh.secret_id},
        {"--valid-provider", BENCH_OPT_STR, &sh.provider[OP_EXCHANGE]},
        {"--valid-connection", BENCH_OPT_STR, &sh.connection_id},
        {"--refresh-provider", BENCH_OPT_STR, &sh.provider[OP_REFRESH]},
        {"--callers", BENCH_OPT_STR, &callers},
        {"--seconds", BENCH_OPT_DOUBLE, &seconds},
        {"--cpu-of", BENCH_OPT_STR, &cpu_of},
    };
    if (!bench_opts_parse("exchange_bench", argc, argv, cli, sizeof(cli) / sizeof(cli[0])))
        return 2;
    if (cpu_of)
        bench_procs_load(&procs, cpu_of);
    if (!addr || !ca || !cert || !key || !stoken_file || !utoken_file || !sh.secret_id ||
        !sh.provider[OP_EXCHANGE]) {
        fprintf(stderr, "exchange_bench: need --addr --ca --cert --key --service-token FILE "
                        "--user-token FILE --secret-id ID --valid-provider KEY (see the header "
                        "of bench/exchange_bench.c)\n");
        return 2;
    }
    const bench_gateway_t g = {.addr = addr,
                               .peer = peer,
                               .ca = ca,
                               .cert = cert,
                               .key = key,
                               .stoken_file = stoken_file,
                               .utoken_file = utoken_file};
    sh.client = bench_gateway_client("exchange_bench", &g, sh.headers);
    if (sh.client == NULL)
        return 1;
    printf("exchange_bench: gateway %s, %.0fs per level\n", addr, seconds);
    printf("warm-up (not a figure)\n");
    run_level(&sh, OP_RETRIEVE, 4, 1.0, false);
    run_level(&sh, OP_EXCHANGE, 4, 1.0, false);
    /* Retrieve and Exchange alternate per level, so that drift of the machine's load affects
     * both sides of the ratio alike. */
    char *copy = strdup(callers), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        run_level(&sh, OP_RETRIEVE, atoi(tok), seconds, true);
        run_level(&sh, OP_EXCHANGE, atoi(tok), seconds, true);
        if (sh.connection_id)
            run_level(&sh, OP_EXCHANGE_ID, atoi(tok), seconds, true);
        if (sh.provider[OP_REFRESH])
            run_level(&sh, OP_REFRESH, atoi(tok), seconds, true);
    }
    free(copy);
    rpc_client_free(sh.client);
    free((char *)sh.headers[0].value);
    free((char *)sh.headers[1].value);
    return 0;
}
