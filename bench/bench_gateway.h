/*
 * bench_gateway: the mTLS client and the two bearer headers of a benchmark that calls a running
 * stack's gateway as a service acting for a user (retrieve_bench, exchange_bench).
 */
#ifndef CREDEX_BENCH_BENCH_GATEWAY_H
#define CREDEX_BENCH_BENCH_GATEWAY_H

#include "common/rpc/rpc.h"

typedef struct bench_gateway {
    const char *addr, *peer;               /* the gateway's address and its peer name */
    const char *ca, *cert, *key;           /* the caller's mTLS files */
    const char *stoken_file, *utoken_file; /* the service's and the user's tokens */
} bench_gateway_t;

/* A client of the gateway, with headers[0] "authorization: Bearer <service token>" and
 * headers[1] "x-credex-user-token: <user token>" (heap strings that live as long as the
 * benchmark). NULL after printing why on stderr with prog's name. */
rpc_client_t *bench_gateway_client(const char *prog, const bench_gateway_t *g,
                                   rpc_header_t headers[2]);

#endif
