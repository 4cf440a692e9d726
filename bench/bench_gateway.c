/* bench_gateway: see bench_gateway.h. */
#include "bench/bench_gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_kit.h"

rpc_client_t *bench_gateway_client(const char *prog, const bench_gateway_t *g,
                                   rpc_header_t headers[2])
{
    char *stoken = bench_read_token(g->stoken_file), *utoken = bench_read_token(g->utoken_file);
    size_t blen = strlen(stoken) + 8;
    char *bearer = malloc(blen);
    if (!bearer) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return NULL;
    }
    snprintf(bearer, blen, "Bearer %s", stoken);
    free(stoken);
    headers[0] = (rpc_header_t){"authorization", bearer};
    headers[1] = (rpc_header_t){"x-credex-user-token", utoken};
    cx_error_t err;
    rpc_tls_t tls = {.ca_file = g->ca, .cert_file = g->cert, .key_file = g->key};
    rpc_client_t *client = rpc_client_new(g->addr, g->peer, &tls, &err);
    if (client == NULL)
        fprintf(stderr, "%s: client: %s\n", prog, err.message);
    return client;
}
