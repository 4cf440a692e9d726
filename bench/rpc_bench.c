/*
 * rpc_bench: unary grpc.health.v1.Health/Check over mutual TLS on loopback, with 1, 4 and 16
 * concurrent callers by default. It starts a credex rpc server in-process (the same code every
 * service runs) unless --addr points at a running one, and prints calls/s, p50 and p99 for each
 * level. A benchmark, not a test: it asserts nothing and prints figures (docs/PERFORMANCE.md).
 *
 *   rpc_bench --ca CA --server-cert C --server-key K --client-cert C --client-key K
 *             [--addr HOST:PORT --peer NAME] [--callers 1,4,16] [--seconds 5] [--threads 4]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_kit.h"
#include "common/rpc/rpc.h"
#include "grpc/health/v1/health.pb-c.h"

extern const unsigned char credex_descriptor_set[];
extern const size_t credex_descriptor_set_len;

static bool health_call(void *ctx, int caller, unsigned long seq, cx_error_t *err)
{
    (void)caller;
    (void)seq;
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    rpc_call_options_t opts = {.deadline_ms = 5000, .correlation_id = "bench"};
    rpc_arena_t *arena = rpc_arena_new(512);
    ProtobufCMessage *reply = NULL;
    bool ok = rpc_client_unary(ctx, &grpc__health__v1__health__descriptor, "Check", &req.base,
                               &opts, arena, &reply, err);
    rpc_arena_free(arena);
    return ok;
}

static void run_level(rpc_client_t *client, int callers, double seconds)
{
    bench_result_t r;
    bench_run(health_call, client, callers, seconds, &r);
    printf("callers=%-3d calls=%-8zu errors=%-4zu calls_per_s=%-9.0f p50_us=%-6u p99_us=%u\n",
           callers, r.calls, r.errors, r.per_s, r.p50_us, r.p99_us);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    const char *ca = NULL, *scert = NULL, *skey = NULL, *ccert = NULL, *ckey = NULL;
    const char *addr = NULL, *peer = "keywrap", *callers = "1,4,16";
    double seconds = 5;
    long nthreads = 4;
    const bench_opt_t cli[] = {
        {"--ca", BENCH_OPT_STR, &ca},
        {"--server-cert", BENCH_OPT_STR, &scert},
        {"--server-key", BENCH_OPT_STR, &skey},
        {"--client-cert", BENCH_OPT_STR, &ccert},
        {"--client-key", BENCH_OPT_STR, &ckey},
        {"--addr", BENCH_OPT_STR, &addr},
        {"--peer", BENCH_OPT_STR, &peer},
        {"--callers", BENCH_OPT_STR, &callers},
        {"--seconds", BENCH_OPT_DOUBLE, &seconds},
        {"--threads", BENCH_OPT_INT, &nthreads},
    };
    if (!bench_opts_parse("rpc_bench", argc, argv, cli, sizeof(cli) / sizeof(cli[0])))
        return 2;
    if (nthreads < 1 || nthreads > 256) {
        fprintf(stderr, "rpc_bench: --threads expects 1..256\n");
        return 2;
    }
    unsigned threads = (unsigned)nthreads;
    if (ca == NULL || ccert == NULL || ckey == NULL || (addr == NULL && (!scert || !skey))) {
        fprintf(stderr, "rpc_bench: need --ca, --client-cert, --client-key and either --addr or "
                        "--server-cert/--server-key (scripts/bench supplies them)\n");
        return 2;
    }
    cx_error_t err;
    rpc_server_t *srv = NULL;
    char target[64];
    if (addr == NULL) {
        rpc_block_signals();
        rpc_server_options_t o = {.name = "bench",
                                  .listen_addr = "127.0.0.1:0",
                                  .tls = {.ca_file = ca, .cert_file = scert, .key_file = skey},
                                  .threads = threads,
                                  .max_message_bytes = 4 << 20,
                                  .max_metadata_bytes = 16 << 10,
                                  .max_deadline_ms = 30000,
                                  .shutdown_grace_ms = 1000,
                                  .descriptor_set = credex_descriptor_set,
                                  .descriptor_set_len = credex_descriptor_set_len};
        srv = rpc_server_new(&o, &err);
        if (srv == NULL || !rpc_server_start(srv, &err)) {
            fprintf(stderr, "rpc_bench: server: %s\n", err.message);
            return 1;
        }
        snprintf(target, sizeof(target), "127.0.0.1:%d", rpc_server_port(srv));
        addr = target;
    }
    rpc_tls_t tls = {.ca_file = ca, .cert_file = ccert, .key_file = ckey};
    rpc_client_t *client = rpc_client_new(addr, peer, &tls, &err);
    if (client == NULL) {
        fprintf(stderr, "rpc_bench: client: %s\n", err.message);
        return 1;
    }
    printf("rpc_bench: Health/Check over mTLS to %s, server threads=%u, %.0fs per level\n", addr,
           threads, seconds);
    printf("warm-up (not a figure):\n");
    run_level(client, 1, 1.0); /* handshake, allocator, caches */
    char *list = strdup(callers);
    for (char *tok = strtok(list, ","); tok != NULL; tok = strtok(NULL, ","))
        run_level(client, atoi(tok), seconds);
    free(list);
    rpc_client_free(client);
    rpc_server_free(srv);
    return 0;
}
