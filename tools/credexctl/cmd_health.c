/*
 * credexctl health: grpc.health.v1 Check on any credex process (the run script's probe), and
 * credexctl gateway-health: the gateway's credential health summary (Admin.GetHealth).
 */
#include <string.h>

#include "credex/v1/gateway.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "tools/credexctl/credexctl.h"

static void usage(FILE *f)
{
    fputs("usage: credexctl health [--addr HOST:PORT] [--peer NAME] [--service NAME] [--json]\n"
          "  --addr     address to call (default: CREDEX_GATEWAY_ADDR)\n"
          "  --peer     identity the server must prove (default: gateway)\n"
          "  --service  service name to check (default: \"\", the whole server)\n"
          "  --json     print the reply (grpc.health.v1.HealthCheckResponse) as JSON\n"
          "TLS: CREDEX_TLS_CA, CREDEX_TLS_CERT, CREDEX_TLS_KEY (see docs/CONFIGURATION.md)\n",
          f);
}

static const char *status_name(int st)
{
    static const char *const names[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
    return st >= 0 && st < 4 ? names[st] : "INVALID";
}

int cmd_health(const cx_config_t *cfg, int argc, char **argv)
{
    const char *service = "", *pos[1];
    cli_conn_t conn = {0};
    size_t npos;
    bool help, json = false;
    const cli_opt_t opts[] = {{.name = "addr", .kind = CLI_OPT_VALUE, .value = &conn.addr},
                              {.name = "peer", .kind = CLI_OPT_VALUE, .value = &conn.peer},
                              {.name = "service", .kind = CLI_OPT_VALUE, .value = &service},
                              {.name = "json", .kind = CLI_OPT_FLAG, .flag = &json},
                              {0}};
    if (!cli_parse("health", argc, argv, opts, pos, 0, &npos, &help))
        return CLI_USAGE;
    if (help) {
        usage(stdout);
        return CLI_OK;
    }
    if (conn.peer != NULL && !cli_valid_service(conn.peer))
        return cli_usage_error("health", "--peer: expected 1..63 of [a-z0-9-]");
    if (strlen(service) > 200)
        return cli_usage_error("health", "--service: too long");
    const char *addr = conn.addr ? conn.addr : cfg->addr[CX_SVC_GATEWAY];
    const char *peer = conn.peer ? conn.peer : "gateway";
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)service;
    rpc_arena_t *arena = rpc_arena_new(1024);
    ProtobufCMessage *reply = NULL;
    cx_error_t err;
    int rc = CLI_FAIL;
    if (!cli_call(cfg, &conn, &grpc__health__v1__health__descriptor, "Check", &req.base, NULL, 0,
                  arena, &reply, &err)) {
        fprintf(stderr, "credexctl: %s %s: %s: %s\n", addr, peer, cx_code_reason(err.code),
                err.message);
    } else {
        int st = ((Grpc__Health__V1__HealthCheckResponse *)reply)->status;
        if (json && cli_print_message(reply) != CLI_OK)
            goto out;
        if (!json)
            printf("%s %s %s\n", peer, addr, status_name(st));
        rc = st == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING ? CLI_OK
                                                                                    : CLI_FAIL;
    }
out:
    rpc_arena_free(arena);
    return rc;
}

static void gh_usage(FILE *f)
{
    fputs(
        "usage: credexctl gateway-health [--user ID | --token JWT] [--json] [--addr HOST:PORT]\n"
        "                                [--peer NAME]\n"
        "The gateway's credential health (Admin.GetHealth): feature flags, key provider mode\n"
        "and the status of the credential store, key wrapper, policy service and oauth.\n"
        "Exit code 0 when the overall status is ok or degraded, 1 when down or unreachable.\n"
        "  --user ID / --token JWT  call as this user (component detail is for platform admins);\n"
        "                           default: as the CLI itself (service JWT, azp credexctl)\n"
        "  --json                   print the reply (credex.v1.GetHealthResponse) as JSON\n",
        f);
}

int cmd_gateway_health(const cx_config_t *cfg, int argc, char **argv)
{
    const char *user = NULL, *token = NULL, *pos[1];
    cli_conn_t conn = {0};
    size_t npos;
    bool help, json = false;
    const cli_opt_t opts[] = {{.name = "addr", .kind = CLI_OPT_VALUE, .value = &conn.addr},
                              {.name = "peer", .kind = CLI_OPT_VALUE, .value = &conn.peer},
                              {.name = "user", .kind = CLI_OPT_VALUE, .value = &user},
                              {.name = "token", .kind = CLI_OPT_VALUE, .value = &token},
                              {.name = "json", .kind = CLI_OPT_FLAG, .flag = &json},
                              {0}};
    if (!cli_parse("gateway-health", argc, argv, opts, pos, 0, &npos, &help))
        return CLI_USAGE;
    if (help) {
        gh_usage(stdout);
        return CLI_OK;
    }
    if (conn.peer != NULL && !cli_valid_service(conn.peer))
        return cli_usage_error("gateway-health", "--peer: expected 1..63 of [a-z0-9-]");
    if (user != NULL && token != NULL)
        return cli_usage_error("gateway-health", "give --user or --token, not both");
    if (user != NULL && !cli_valid_principal(user))
        return cli_usage_error("gateway-health", "--user: expected 1..128 of [A-Za-z0-9._@+-]");
    if (token != NULL && (strlen(token) < 16 || strlen(token) > 8192))
        return cli_usage_error("gateway-health", "--token: not a JWT");
    cx_error_t err;
    char *minted = NULL;
    if (user != NULL) {
        cli_token_spec_t spec = {.sub = user, .azp = NULL, .ttl_s = 300};
        if (!cli_token_mint(cfg, &spec, &minted, &err))
            return cli_fail(&err);
        token = minted;
    }
    char *bearer = NULL;
    rpc_header_t hdr[1] = {{"x-credex-user-token", token}};
    if (token == NULL) {
        /* No user: authenticate as the CLI itself, a service JWT bound to its peer name. */
        cli_token_spec_t spec = {
            .sub = "service-account-credexctl", .azp = "credexctl", .ttl_s = 300};
        if (!cli_token_mint(cfg, &spec, &minted, &err))
            return cli_fail(&err);
        if (asprintf(&bearer, "Bearer %s", minted) < 0) {
            bearer = NULL;
            cli_wipe_free(minted, strlen(minted));
            return cli_fail(&(cx_error_t){.code = CX_ERR_INTERNAL, .message = "out of memory"});
        }
        hdr[0] = (rpc_header_t){"authorization", bearer};
    }
    Credex__V1__GetHealthRequest req = CREDEX__V1__GET_HEALTH_REQUEST__INIT;
    rpc_arena_t *arena = rpc_arena_new(2048);
    ProtobufCMessage *reply = NULL;
    int rc = CLI_FAIL;
    if (!cli_call(cfg, &conn, &credex__v1__admin__descriptor, "GetHealth", &req.base, hdr, 1, arena,
                  &reply, &err)) {
        rc = cli_fail(&err);
        goto out;
    }
    const Credex__V1__GetHealthResponse *h = (const Credex__V1__GetHealthResponse *)reply;
    rc = h->status == CREDEX__V1__HEALTH_STATUS__HEALTH_STATUS_OK ||
                 h->status == CREDEX__V1__HEALTH_STATUS__HEALTH_STATUS_DEGRADED
             ? CLI_OK
             : CLI_FAIL;
    if (json) {
        if (cli_print_message(reply) != CLI_OK)
            rc = CLI_FAIL;
        goto out;
    }
    char a[48], b[48], t[40];
    printf("status               %s\n",
           cli_enum_name(&credex__v1__health_status__descriptor, (int)h->status, a, sizeof a));
    printf("credentials_enabled  %s\n", h->credentials_enabled ? "true" : "false");
    printf("exchange_enabled     %s\n", h->exchange_enabled ? "true" : "false");
    printf("production_mode      %s\n", h->production_mode ? "true" : "false");
    printf("store_backend        %s\n", h->store_backend[0] ? h->store_backend : "-");
    printf("key_provider         %s%s\n",
           cli_enum_name(&credex__v1__key_provider__descriptor, (int)h->key_provider, b, sizeof b),
           h->dev_key_mode ? " (dev key mode)" : "");
    for (size_t i = 0; i < h->n_components; i++) {
        const Credex__V1__ComponentHealth *c = h->components[i];
        printf("  %-18s %-9s %s%s%s  (checked %s)\n", c->component,
               cli_enum_name(&credex__v1__health_status__descriptor, (int)c->status, a, sizeof a),
               c->reason, c->reason[0] && c->detail[0] ? ": " : "", c->detail,
               cli_time(c->checked_at_ms, t, sizeof t));
    }
out:
    rpc_arena_free(arena);
    if (minted)
        cli_wipe_free(minted, strlen(minted));
    if (bearer)
        cli_wipe_free(bearer, strlen(bearer));
    return rc;
}
