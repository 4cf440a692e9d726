/*
 * credexctl: the command-line client of credex's gRPC API. It authenticates with the
 * certificate named by CREDEX_TLS_CERT/CREDEX_TLS_KEY (the dev PKI's "credexctl" identity).
 *
 *   credexctl health [--addr HOST:PORT] [--peer NAME] [--service NAME]
 *
 * Exit codes: 0 success, 1 the call failed or the answer is negative, 2 usage or config error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config/cx_config.h"
#include "common/rpc/rpc.h"
#include "grpc/health/v1/health.pb-c.h"

static void usage(FILE *f)
{
    fputs("usage: credexctl health [--addr HOST:PORT] [--peer NAME] [--service NAME]\n"
          "  --addr     address to call (default: CREDEX_GATEWAY_ADDR)\n"
          "  --peer     identity the server must prove (default: gateway)\n"
          "  --service  service name to check (default: \"\", the whole server)\n"
          "TLS: CREDEX_TLS_CA, CREDEX_TLS_CERT, CREDEX_TLS_KEY (see docs/CONFIGURATION.md)\n",
          f);
}

static const char *status_name(int st)
{
    static const char *const names[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
    return st >= 0 && st < 4 ? names[st] : "INVALID";
}

static int cmd_health(const cx_config_t *cfg, int argc, char **argv)
{
    const char *addr = cfg->addr[CX_SVC_GATEWAY], *peer = "gateway", *service = "";
    for (int i = 0; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--addr") == 0)
            addr = argv[++i];
        else if (i + 1 < argc && strcmp(argv[i], "--peer") == 0)
            peer = argv[++i];
        else if (i + 1 < argc && strcmp(argv[i], "--service") == 0)
            service = argv[++i];
        else {
            usage(stderr);
            return 2;
        }
    }
    cx_error_t err;
    rpc_tls_t tls = {.ca_file = cfg->tls_ca,
                     .cert_file = cfg->tls_cert,
                     .key_file = cfg->tls_key,
                     .trust_domain = cfg->trust_domain};
    rpc_client_t *client = rpc_client_new(addr, peer, &tls, &err);
    if (client == NULL) {
        fprintf(stderr, "credexctl: %s: %s\n", cx_code_reason(err.code), err.message);
        return 2;
    }
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)service;
    rpc_arena_t *arena = rpc_arena_new(1024);
    ProtobufCMessage *reply = NULL;
    rpc_call_options_t opts = {.deadline_ms = cfg->rpc_default_deadline_ms};
    int rc = 1;
    if (!rpc_client_unary(client, &grpc__health__v1__health__descriptor, "Check", &req.base, &opts,
                          arena, &reply, &err)) {
        fprintf(stderr, "credexctl: %s %s: %s: %s\n", addr, peer, cx_code_reason(err.code),
                err.message);
    } else {
        int st = ((Grpc__Health__V1__HealthCheckResponse *)reply)->status;
        printf("%s %s %s\n", peer, addr, status_name(st));
        rc = st == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING ? 0 : 1;
    }
    rpc_arena_free(arena);
    rpc_client_free(client);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    cx_error_t err;
    cx_config_t *cfg = NULL;
    if (!cx_config_load(&cfg, NULL, NULL, &err)) {
        fprintf(stderr, "credexctl: %s\n", err.message);
        return 2;
    }
    int rc = 2;
    if (strcmp(argv[1], "health") == 0)
        rc = cmd_health(cfg, argc - 2, argv + 2);
    else
        usage(stderr);
    cx_config_free(cfg);
    return rc;
}
