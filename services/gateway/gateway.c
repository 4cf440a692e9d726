/*
 * gateway: registration of the public API and the helpers every handler shares. Any
 * authenticated peer may connect (the edge, the CLI, agent runtimes); who may do what is decided
 * per request from the JWTs (caller.c) and OpenFGA, before anything is forwarded to store.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log/cx_log.h"
#include "common/svc/svc.h"
#include "credex/v1/gateway.pb-c.h"
#include "credex/v1/oauth.pb-c.h"
#include "credex/v1/store.pb-c.h"
#include "services/gateway/gateway.h"
#include "services/gateway/gateway_internal.h"

const gateway_t *gateway_state(rpc_call_t *call)
{
    /* svc_main hands gateway_setup's state to rpc_server_set_context. */
    return rpc_call_context(call);
}

static const rpc_service_def_t gateway_static_services[] = {
    {.desc = &credex__v1__audit__descriptor,
     .unimplemented_note = "planned: a later issue, audit queries"},
    {.desc = &credex__v1__connectors__descriptor,
     .unimplemented_note = "planned: a later issue, OAuth connectors"},
    {.desc = &credex__v1__connections__descriptor,
     .unimplemented_note = "planned: a later issue, provider connections"},
};

bool gateway_feature_check(const gateway_t *gw, cx_error_t *err)
{
    if (!gw || !gw->cfg->credentials_enabled)
        return cx_error_set(err, CX_ERR_FEATURE_DISABLED,
                            "credentials are disabled (CAIPE_CREDENTIALS_ENABLED=false)");
    return true;
}

static char *arena_str(rpc_call_t *call, const char *s)
{
    s = s ? s : "";
    return rpc_arena_strndup(rpc_call_arena(call), s, strlen(s));
}

Credex__V1__CallerContext *gateway_caller_context(rpc_call_t *call, const gateway_caller_t *c,
                                                  const char *intended_use,
                                                  Credex__V1__ResourceContext *rc)
{
    Credex__V1__CallerContext *cc = rpc_call_alloc(call, sizeof(*cc));
    credex__v1__caller_context__init(cc);
    cc->caller_kind = c->kind;
    cc->service_id = arena_str(call, c->service_id);
    cc->subject_user_id = arena_str(call, c->user_id);
    cc->peer = arena_str(call, c->peer);
    cc->intended_use = arena_str(call, intended_use);
    cc->resource_context = rc;
    return cc;
}

bool gateway_downstream(rpc_client_t *client, const ProtobufCServiceDescriptor *svc,
                        const char *method, rpc_call_t *call, const ProtobufCMessage *req,
                        ProtobufCMessage **reply, cx_error_t *err)
{
    if (!client)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "%s is not configured", svc->short_name);
    rpc_call_options_t o = {.parent = call};
    cx_error_t e;
    cx_error_clear(&e);
    if (rpc_client_unary(client, svc, method, req, &o, rpc_call_arena(call), reply, &e))
        return true;
    switch (e.code) {
    case CX_ERR_UNAVAILABLE:
    case CX_ERR_DEADLINE_EXCEEDED:
    case CX_ERR_INTERNAL:
    case CX_ERR_UNIMPLEMENTED:
    case CX_ERR_UNAUTHENTICATED: /* our own mTLS identity was refused: a deployment fault */
    case CX_ERR_CANCELLED:
    case CX_ERR_RESOURCE_EXHAUSTED:
    case CX_CODE_COUNT_:
    case CX_OK:
        cx_log_warn(rpc_call_correlation_id(call), "gateway.downstream_failed",
                    CX_LOG_STR("service", svc->short_name), CX_LOG_STR("method", method),
                    CX_LOG_STR("reason", cx_code_reason(e.code)));
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "%s is unavailable", svc->short_name);
    default:
        cx_error_copy(err, &e);
        return false;
    }
}

bool gateway_fga_check(const gateway_t *gw, const char *user, const char *relation,
                       const char *object, bool *allowed, cx_error_t *err)
{
    cx_error_t e;
    cx_error_clear(&e);
    if (cx_fga_check(gw->fga, user, relation, object, allowed, &e))
        return true;
    cx_log_warn(NULL, "gateway.policy_failed", CX_LOG_STR("relation", relation),
                CX_LOG_STR("reason", e.message));
    return cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service is unavailable");
}

static const char *actor_of(const gateway_caller_t *c)
{
    if (c->user_id[0])
        return c->user_id;
    if (c->service_id[0])
        return c->service_id;
    return c->peer;
}

static bool append_event(const gateway_t *gw, rpc_call_t *call, Credex__V1__AuditEvent *ev,
                         cx_error_t *err)
{
    Credex__V1__StoreAppendAuditEventRequest req =
        CREDEX__V1__STORE_APPEND_AUDIT_EVENT_REQUEST__INIT;
    req.event = ev;
    ProtobufCMessage *reply = NULL;
    return gateway_downstream(gw->store, &credex__v1__credential_store__descriptor,
                              "AppendAuditEvent", call, &req.base, &reply, err);
}

static void event_fill(rpc_call_t *call, const gateway_caller_t *c, Credex__V1__AuditEvent *ev,
                       const char *event_type, const char *resource_type, const char *resource_id)
{
    ev->event_type = arena_str(call, event_type);
    ev->resource_type = arena_str(call, resource_type);
    ev->resource_id = arena_str(call, resource_id);
    ev->subject_user_id = arena_str(call, c->user_id);
    ev->caller_kind = c->kind;
    ev->actor_id = arena_str(call, actor_of(c));
    ev->peer = arena_str(call, c->peer);
    ev->correlation_id = arena_str(call, rpc_call_correlation_id(call));
}

bool gateway_deny(const gateway_t *gw, rpc_call_t *call, const gateway_caller_t *c,
                  const char *event_type, const char *resource_type, const char *resource_id,
                  const char *intended_use, Credex__V1__ResourceContext *rc, cx_error_t *err)
{
    const char *reason = cx_code_reason(err ? err->code : CX_ERR_PERMISSION_DENIED);
    Credex__V1__AuditEvent ev = CREDEX__V1__AUDIT_EVENT__INIT;
    event_fill(call, c, &ev, event_type, resource_type, resource_id);
    ev.outcome = CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_DENIED;
    ev.reason = arena_str(call, reason);
    ev.intended_use = arena_str(call, intended_use);
    ev.resource_context = rc;
    cx_error_t aerr;
    cx_error_clear(&aerr);
    bool audited = gw && append_event(gw, call, &ev, &aerr);
    /* The denial stands whether or not its record could be written. */
    cx_log_info(rpc_call_correlation_id(call), "gateway.denied", CX_LOG_STR("action", event_type),
                CX_LOG_STR("reason", reason), CX_LOG_STR("resource_id", resource_id),
                CX_LOG_STR("peer", c->peer), CX_LOG_STR("actor", actor_of(c)),
                CX_LOG_STR("detail", err ? err->message : ""), CX_LOG_BOOL("audited", audited));
    if (!audited)
        cx_log_error(rpc_call_correlation_id(call), "gateway.audit_failed",
                     CX_LOG_STR("action", event_type), CX_LOG_STR("reason", aerr.message));
    return false;
}

bool gateway_audit_success(const gateway_t *gw, rpc_call_t *call, const gateway_caller_t *c,
                           const char *event_type, const char *secret_id, const char *detail_key,
                           const char *detail_value, cx_error_t *err)
{
    Credex__V1__AuditEvent ev = CREDEX__V1__AUDIT_EVENT__INIT;
    event_fill(call, c, &ev, event_type, "secret_ref", secret_id);
    ev.outcome = CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_SUCCESS;
    Credex__V1__AuditEvent__AttributesEntry attr = CREDEX__V1__AUDIT_EVENT__ATTRIBUTES_ENTRY__INIT;
    Credex__V1__AuditEvent__AttributesEntry *attrs[1] = {&attr};
    if (detail_key) {
        attr.key = arena_str(call, detail_key);
        attr.value = arena_str(call, detail_value);
        ev.attributes = attrs;
        ev.n_attributes = 1;
    }
    return append_event(gw, call, &ev, err);
}

static rpc_client_t *client_for(const cx_config_t *cfg, cx_service_t svc, cx_error_t *err)
{
    rpc_tls_t tls = svc_tls(cfg);
    return rpc_client_new(cfg->addr[svc], cx_service_name(svc), &tls, err);
}

void gateway_cleanup(void *state)
{
    gateway_t *gw = state;
    if (!gw)
        return;
    rpc_client_free(gw->store);
    rpc_client_free(gw->keywrap);
    rpc_client_free(gw->oauth);
    cx_fga_free(gw->fga);
    cx_jwt_verifier_free(gw->jwt);
    free(gw);
}

bool gateway_setup(rpc_server_t *srv, const cx_config_t *cfg, void **state, cx_error_t *err)
{
    *state = NULL;
    gateway_t *gw = calloc(1, sizeof(*gw));
    if (!gw)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    gw->cfg = cfg;
    /* Missing identity or policy settings do not stop the process (health must still answer);
     * every call that needs them then fails closed. */
    if (cfg->jwks[0] && cfg->jwt_issuer[0]) {
        cx_jwt_verifier_options_t jo = {.jwks_source = cfg->jwks,
                                        .issuer = cfg->jwt_issuer,
                                        .audience = cfg->jwt_audience,
                                        .leeway_s = cfg->jwt_leeway_s,
                                        .client_claim = cfg->jwt_client_claim,
                                        .cache_s = cfg->jwks_cache_s,
                                        .cache_max_entries = cfg->jwt_cache_max_entries,
                                        .fetch_timeout_ms = cfg->jwks_timeout_ms,
                                        .ca_file = cfg->jwks_ca_file};
        gw->jwt = cx_jwt_verifier_new(&jo, err);
        if (!gw->jwt)
            goto fail; /* a bad source (http://) is a configuration error */
    } else {
        cx_log_warn(NULL, "gateway.jwt_unconfigured",
                    CX_LOG_STR("detail", "CREDEX_JWKS or CREDEX_JWT_ISSUER unset: every token is "
                                         "rejected"));
    }
    if (cfg->openfga_store_id[0]) {
        cx_fga_options_t fo = {.url = cfg->openfga_url,
                               .store_id = cfg->openfga_store_id,
                               .model_id = cfg->openfga_model_id,
                               .timeout_ms = cfg->openfga_timeout_ms,
                               .cache_ttl_ms = cfg->openfga_cache_ttl_ms,
                               .watch_ms = cfg->openfga_watch_ms};
        gw->fga = cx_fga_new(&fo, err);
        if (!gw->fga)
            goto fail;
    } else {
        cx_log_warn(
            NULL, "gateway.policy_unconfigured",
            CX_LOG_STR("detail", "CREDEX_OPENFGA_STORE_ID unset: every check fails closed"));
    }
    if (!(gw->store = client_for(cfg, CX_SVC_STORE, err)) ||
        !(gw->keywrap = client_for(cfg, CX_SVC_KEYWRAP, err)) ||
        !(gw->oauth = client_for(cfg, CX_SVC_OAUTH, err)))
        goto fail;

    const rpc_service_def_t *defs[] = {&gateway_secrets_def, &gateway_retrieval_def,
                                       &gateway_admin_def};
    for (size_t i = 0; i < sizeof(defs) / sizeof(defs[0]); i++)
        if (!rpc_server_add_service(srv, defs[i], err))
            goto fail;
    for (size_t i = 0; i < sizeof(gateway_static_services) / sizeof(gateway_static_services[0]);
         i++)
        if (!rpc_server_add_service(srv, &gateway_static_services[i], err))
            goto fail;
    *state = gw;
    return true;
fail:
    gateway_cleanup(gw);
    return false;
}
