/*
 * credex.v1.Admin.GetHealth: the credential health report. It answers even while
 * CAIPE_CREDENTIALS_ENABLED is false, and reports only statuses and reason codes, never
 * secrets; the human detail sentences are for platform admins only.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "credex/v1/gateway.pb-c.h"
#include "credex/v1/keywrap.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "services/gateway/gateway_internal.h"

#define HS(x) CREDEX__V1__HEALTH_STATUS__HEALTH_STATUS_##x

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *dup(rpc_call_t *call, const char *s)
{
    s = s ? s : "";
    return rpc_arena_strndup(rpc_call_arena(call), s, strlen(s));
}

static Credex__V1__ComponentHealth *component(rpc_call_t *call, const char *name,
                                              Credex__V1__HealthStatus st, const char *reason,
                                              const char *detail)
{
    Credex__V1__ComponentHealth *h = rpc_call_alloc(call, sizeof(*h));
    credex__v1__component_health__init(h);
    h->component = dup(call, name);
    h->status = st;
    h->reason = dup(call, st == HS(OK) ? "" : reason);
    h->detail = dup(call, detail);
    h->checked_at_ms = now_ms();
    return h;
}

/* grpc.health.v1 Check of a credex process. */
static Credex__V1__ComponentHealth *grpc_health(rpc_call_t *call, rpc_client_t *client,
                                                const char *name, const char *service)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)service;
    Grpc__Health__V1__HealthCheckResponse *resp = NULL;
    cx_error_t e;
    cx_error_clear(&e);
    if (!gateway_downstream(client, &grpc__health__v1__health__descriptor, "Check", call, &req.base,
                            (ProtobufCMessage **)&resp, &e))
        return component(call, name, HS(DOWN), "unavailable", "not reachable");
    if (resp->status != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING)
        return component(call, name, HS(DOWN), "unavailable", "not serving");
    return component(call, name, HS(OK), "", "serving");
}

static Credex__V1__ComponentHealth *keywrap_health(rpc_call_t *call, const gateway_t *gw)
{
    Credex__V1__DescribeRequest req = CREDEX__V1__DESCRIBE_REQUEST__INIT;
    Credex__V1__DescribeResponse *d = NULL;
    cx_error_t e;
    cx_error_clear(&e);
    if (!gateway_downstream(gw->keywrap, &credex__v1__key_wrap__descriptor, "Describe", call,
                            &req.base, (ProtobufCMessage **)&d, &e))
        return component(call, "key_wrapper", HS(DOWN), "unavailable", "not reachable");
    if (!d->healthy)
        return component(call, "key_wrapper", HS(DOWN), d->reason[0] ? d->reason : "unavailable",
                         d->detail);
    if (d->dev_key_mode)
        return component(call, "key_wrapper", HS(DEGRADED), "dev_key_mode",
                         "local-cmk: development key mode, never for production data");
    return component(call, "key_wrapper", HS(OK), "", d->detail);
}

static Credex__V1__ComponentHealth *policy_health(rpc_call_t *call, const gateway_t *gw)
{
    cx_error_t e;
    cx_error_clear(&e);
    if (!cx_fga_ping(gw->fga, &e))
        return component(call, "policy_service", HS(DOWN), "unavailable", e.message);
    return component(call, "policy_service", HS(OK), "", "OpenFGA store reachable");
}

static bool admin_get_health(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    (void)err;
    rpc_call_t *call = r->call;
    const gateway_t *gw = r->gw;
    const gateway_caller_t c = r->caller;
    const cx_config_t *cfg = gw->cfg;
    Credex__V1__GetHealthResponse *resp = rpc_call_alloc(call, sizeof(*resp));
    credex__v1__get_health_response__init(resp);
    resp->credentials_enabled = cfg->credentials_enabled;
    resp->exchange_enabled = cfg->exchange_enabled;
    resp->production_mode = cfg->production;
    resp->store_backend = dup(call, cfg->store_backend);
    resp->key_provider = cfg->key_provider == CX_KEY_PROVIDER_AWS_KMS
                             ? CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_AWS_KMS
                             : CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_LOCAL_CMK;
    resp->dev_key_mode = cfg->key_provider == CX_KEY_PROVIDER_LOCAL_CMK;

    Credex__V1__ComponentHealth **comps = rpc_call_alloc(call, 4 * sizeof(*comps));
    comps[0] = grpc_health(call, gw->store, "credential_store", "credex.v1.CredentialStore");
    comps[1] = keywrap_health(call, gw);
    comps[2] = policy_health(call, gw);
    comps[3] = grpc_health(call, gw->oauth, "oauth", "");
    resp->components = comps;
    resp->n_components = 4;

    /* Detail sentences can name hosts and key ids: platform admins only. */
    bool admin = false;
    if (c.authenticated && c.user_id[0]) {
        char user[CX_FGA_NAME_MAX];
        snprintf(user, sizeof(user), "user:%s", c.user_id);
        cx_error_t e;
        if (!cx_fga_check(gw->fga, user, "admin", "platform:credex", &admin, &e))
            admin = false;
    }
    Credex__V1__HealthStatus worst = HS(OK);
    for (size_t i = 0; i < resp->n_components; i++) {
        if (comps[i]->status > worst)
            worst = comps[i]->status;
        if (!admin)
            comps[i]->detail = dup(call, "");
    }
    resp->status = worst;
    *reply = &resp->base;
    return true;
}

/* Any authenticated caller, browsers included; answers while the feature is disabled and, so
 * that an operator learns of it, while the JWKS is unreachable. */
static const gateway_method_t m_health = {.event_type = "health.read",
                                          .resource_type = "feature",
                                          .resource_id = "credentials",
                                          .flags = GATEWAY_M_HEALTH,
                                          .run = admin_get_health};

GATEWAY_ENTRY(health_entry, m_health)

static const rpc_method_impl_t admin_impls[] = {
    {.method = "GetHealth", .kind = RPC_UNARY, .unary = health_entry},
};

const rpc_service_def_t gateway_admin_def = {
    .desc = &credex__v1__admin__descriptor,
    .impls = admin_impls,
    .nimpls = 1,
    .unimplemented_note = "planned: a later issue (migration preview)",
    .handles_bad_input = true, /* gateway_run audits it */
};
