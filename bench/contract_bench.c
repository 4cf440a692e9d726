/*
 * contract_bench: what the input contract (common/contract) costs per request, on one core:
 * the wire check of the received bytes and the walk of the unpacked message, for a Retrieve
 * (the hot path) and a Create with a 64 KiB value. Prints nanoseconds per request.
 *
 *   build/release/bench/contract_bench [ITERATIONS]    (default 200000)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_kit.h"
#include "common/contract/cx_contract.h"
#include "credex/v1/gateway.pb-c.h"

static void measure(const char *name, const ProtobufCMessage *m, long iterations)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *wire = malloc(n);
    if (!wire || protobuf_c_message_pack(m, wire) != n)
        abort();
    cx_error_t err;
    double t0 = bench_now_s();
    for (long i = 0; i < iterations; i++)
        if (!cx_contract_wire_check(m->descriptor, wire, n, &err))
            abort();
    double t1 = bench_now_s();
    for (long i = 0; i < iterations; i++)
        if (!cx_contract_check(m, &err))
            abort();
    double t2 = bench_now_s();
    printf("%-34s %6zu bytes  wire check %8.0f ns  message check %8.0f ns\n", name, n,
           (t1 - t0) * 1e9 / (double)iterations, (t2 - t1) * 1e9 / (double)iterations);
    free(wire);
}

int main(int argc, char **argv)
{
    long iterations = argc > 1 ? atol(argv[1]) : 200000;
    if (iterations < 1 || iterations > 100000000) {
        fprintf(stderr, "usage: contract_bench [ITERATIONS 1..100000000]\n");
        return 2;
    }
    Credex__V1__ResourceContext rc = CREDEX__V1__RESOURCE_CONTEXT__INIT;
    rc.resource_type = "mcp_server";
    rc.resource_id = "github-prod";
    Credex__V1__RetrieveRequest r = CREDEX__V1__RETRIEVE_REQUEST__INIT;
    r.secret_ref = "sec_5NPKMVKYTE6Z2RVKV37EW1BN4H";
    r.intended_use = "mcp_server_env";
    r.resource_context = &rc;
    measure("RetrieveRequest", &r.base, iterations);

    static uint8_t value[65536];
    memset(value, 'v', sizeof(value));
    char *uses[] = {"mcp_server_env", "http_authorization_header"};
    Credex__V1__CreateSecretRequest c = CREDEX__V1__CREATE_SECRET_REQUEST__INIT;
    c.idempotency_key = "3f0c6d1e-6f7a-4a53-9d43-2b8e0a4f5c11";
    c.kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_API_KEY;
    c.display_name = "OpenAI production key (agents)";
    c.description = "Used by the research agents.\nRotated every month.";
    c.provider = "openai";
    c.allowed_uses = uses;
    c.n_allowed_uses = 2;
    c.value.data = value;
    c.value.len = sizeof(value);
    measure("CreateSecretRequest (64 KiB value)", &c.base, iterations / 10 + 1);
    return 0;
}
