/*
 * credexctl retrieve (dev): Retrieval.Retrieve as a server-side caller, e.g. an agent runtime.
 *
 * It connects with the certificate of the service identity (<pki>/NAME.pem and .key, issued by
 * the dev PKI: scripts/run creates one for `agent-runtime`), sends a service JWT whose azp is
 * NAME (the gateway binds azp to the mTLS peer) and, with --for-user, an on-behalf-of token of
 * that user. The value goes to stdout, byte for byte, and nothing else does: pipe it where it
 * is needed, never into a log. With --json the whole RetrieveResponse goes there instead, in
 * the canonical JSON mapping (the value in base64), as grpcurl would print it. Either way the
 * output is written to the file descriptor itself, not through a stdio buffer, and the reply
 * (in the call's arena) and the JSON text are wiped when done.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "credex/v1/gateway.pb-c.h"
#include "tools/credexctl/credexctl.h"

static void usage(FILE *f)
{
    fputs(
        "usage: credexctl retrieve ID --as-service NAME [--for-user U | --user-token JWT]\n"
        "                          --use INTENDED_USE --resource TYPE:ID [--agent-id A] [--json]\n"
        "Retrieve a secret's value as a server-side caller (dev tool). Prints the value on\n"
        "stdout and nothing else.\n"
        "  --json             print the reply (credex.v1.RetrieveResponse: id, version, kind,\n"
        "                     the value in base64) as JSON instead of the raw value\n"
        "  --as-service NAME  act as service NAME: mTLS with <pki>/NAME.pem/.key and a service\n"
        "                     JWT with azp NAME (scripts/run issues agent-runtime)\n"
        "  --for-user U       on behalf of user U (mints U's on-behalf-of token); without it\n"
        "                     the service acts for itself and needs its own grant\n"
        "  --user-token JWT   on behalf of the user of this token instead\n"
        "  --use USE          intended use, e.g. mcp_server_env (required)\n"
        "  --resource T:ID    the resource that will use the value, e.g. mcp_server:github\n"
        "                     (required)\n"
        "  --agent-id A       the invoking agent (optional)\n"
        "  --cert F --key F   the service's certificate and key (default <pki>/NAME.pem/.key)\n"
        "  --addr HOST:PORT, --peer NAME   the gateway (default CREDEX_GATEWAY_ADDR, gateway)\n",
        f);
}

int cmd_retrieve(const cx_config_t *cfg, int argc, char **argv)
{
    const char *service = NULL, *for_user = NULL, *user_token = NULL, *use = NULL, *resource = NULL,
               *agent = NULL, *pos[1];
    cli_conn_t conn = {0};
    size_t npos;
    bool help, json = false;
    const cli_opt_t opts[] = {{.name = "as-service", .kind = CLI_OPT_VALUE, .value = &service},
                              {.name = "json", .kind = CLI_OPT_FLAG, .flag = &json},
                              {.name = "for-user", .kind = CLI_OPT_VALUE, .value = &for_user},
                              {.name = "user-token", .kind = CLI_OPT_VALUE, .value = &user_token},
                              {.name = "use", .kind = CLI_OPT_VALUE, .value = &use},
                              {.name = "resource", .kind = CLI_OPT_VALUE, .value = &resource},
                              {.name = "agent-id", .kind = CLI_OPT_VALUE, .value = &agent},
                              {.name = "cert", .kind = CLI_OPT_VALUE, .value = &conn.cert},
                              {.name = "key", .kind = CLI_OPT_VALUE, .value = &conn.key},
                              {.name = "addr", .kind = CLI_OPT_VALUE, .value = &conn.addr},
                              {.name = "peer", .kind = CLI_OPT_VALUE, .value = &conn.peer},
                              {0}};
    if (!cli_parse("retrieve", argc, argv, opts, pos, 1, &npos, &help))
        return CLI_USAGE;
    if (help) {
        usage(stdout);
        return CLI_OK;
    }
    if (npos != 1)
        return cli_usage_error("retrieve", "expected one secret ID (1..64 of [A-Za-z0-9_-])");
    if (service == NULL || !cli_valid_service(service))
        return cli_usage_error("retrieve", "--as-service: required, 1..63 of [a-z0-9-]");
    if (for_user != NULL && user_token != NULL)
        return cli_usage_error("retrieve", "give --for-user or --user-token, not both");
    int rc = cli_check_field("retrieve", "secret ID", "secret_ref", pos[0]);
    if (rc == CLI_OK && for_user != NULL)
        rc = cli_check_field("retrieve", "--for-user", "subject_user_id", for_user);
    if (rc != CLI_OK)
        return rc;
    if (user_token != NULL && (strlen(user_token) < 16 || strlen(user_token) > 8192 ||
                               strpbrk(user_token, " \n") != NULL))
        return cli_usage_error("retrieve", "--user-token: not a JWT");
    if (use == NULL)
        return cli_usage_error("retrieve", "--use: required, e.g. mcp_server_env");
    if ((rc = cli_check_field("retrieve", "--use", "intended_use", use)) != CLI_OK)
        return rc;
    const char *colon = resource ? strchr(resource, ':') : NULL;
    if (colon == NULL || colon == resource || colon[1] == '\0' || (size_t)(colon - resource) > 64)
        return cli_usage_error("retrieve", "--resource: required, TYPE:ID, e.g. mcp_server:github");
    char rtype[65];
    snprintf(rtype, sizeof rtype, "%.*s", (int)(colon - resource), resource);
    if ((rc = cli_check_field("retrieve", "--resource TYPE", "resource_type", rtype)) != CLI_OK ||
        (rc = cli_check_field("retrieve", "--resource ID", "resource_id", colon + 1)) != CLI_OK ||
        (agent != NULL &&
         (rc = cli_check_field("retrieve", "--agent-id", "agent_id", agent)) != CLI_OK))
        return rc;
    if (conn.peer != NULL && !cli_valid_service(conn.peer))
        return cli_usage_error("retrieve", "--peer: expected 1..63 of [a-z0-9-]");

    char pki[512], cert[600], key[600];
    cli_pki_dir(pki, sizeof pki);
    if (conn.cert == NULL) {
        snprintf(cert, sizeof cert, "%s/%s.pem", pki, service);
        conn.cert = cert;
    }
    if (conn.key == NULL) {
        snprintf(key, sizeof key, "%s/%s.key", pki, service);
        conn.key = key;
    }
    struct stat st;
    if (stat(conn.cert, &st) != 0 || stat(conn.key, &st) != 0)
        return cli_usage_error("retrieve",
                               "no certificate for service '%s' (%s); scripts/run issues one for "
                               "agent-runtime, or give --cert and --key",
                               service, conn.cert);

    cx_error_t err;
    char *svc_jwt = NULL, *obo = NULL, *bearer = NULL;
    rc = CLI_FAIL;
    char sub[96];
    snprintf(sub, sizeof sub, "service-account-%s", service);
    cli_token_spec_t sspec = {.sub = sub, .azp = service, .ttl_s = 300};
    if (!cli_token_mint(cfg, &sspec, &svc_jwt, &err)) {
        rc = cli_fail(&err);
        goto out;
    }
    if (for_user != NULL) {
        cli_token_spec_t uspec = {.sub = for_user, .azp = service, .ttl_s = 300};
        if (!cli_token_mint(cfg, &uspec, &obo, &err)) {
            rc = cli_fail(&err);
            goto out;
        }
    }
    if (asprintf(&bearer, "Bearer %s", svc_jwt) < 0) {
        bearer = NULL;
        goto out;
    }
    rpc_header_t hdr[2] = {{"authorization", bearer}, {"x-credex-user-token", NULL}};
    size_t nhdr = 1;
    if (for_user != NULL || user_token != NULL) {
        hdr[1].value = obo ? obo : user_token;
        nhdr = 2;
    }

    Credex__V1__RetrieveRequest req = CREDEX__V1__RETRIEVE_REQUEST__INIT;
    Credex__V1__ResourceContext ctx = CREDEX__V1__RESOURCE_CONTEXT__INIT;
    ctx.resource_type = rtype;
    ctx.resource_id = (char *)(colon + 1);
    ctx.agent_id = (char *)(agent ? agent : "");
    req.secret_ref = (char *)pos[0];
    req.intended_use = (char *)use;
    req.resource_context = &ctx;
    rpc_arena_t *arena = rpc_arena_new(4096);
    ProtobufCMessage *reply = NULL;
    if (!cli_call(cfg, &conn, &credex__v1__retrieval__descriptor, "Retrieve", &req.base, hdr, nhdr,
                  arena, &reply, &err)) {
        rc = cli_fail(&err);
    } else if (json) {
        rc = cli_print_message(reply);
    } else {
        const Credex__V1__RetrieveResponse *res = (const Credex__V1__RetrieveResponse *)reply;
        rc = cli_write_stdout(res->value.data, res->value.len) ? CLI_OK : CLI_FAIL;
        if (rc != CLI_OK)
            fprintf(stderr, "credexctl: internal: could not write the value to stdout\n");
    }
    rpc_arena_free(arena); /* wipes the reply, value included */
out:
    if (svc_jwt)
        cli_wipe_free(svc_jwt, strlen(svc_jwt));
    if (obo)
        cli_wipe_free(obo, strlen(obo));
    if (bearer)
        cli_wipe_free(bearer, strlen(bearer));
    return rc;
}
