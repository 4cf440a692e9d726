/*
 * gateway: registration of the public API and the helpers every handler shares. Any
 * authenticated peer may connect (the edge, the CLI, agent runtimes); who may do what is decided
 * per request from the JWTs (caller.c) and OpenFGA, before anything is forwarded to store or oauth.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/contract/cx_contract.h"
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
};

char *gateway_strdup(rpc_call_t *call, const char *s)
{
    s = s ? s : "";
    return rpc_arena_strndup(rpc_call_arena(call), s, strlen(s));
}

/* ---- the request path ------------------------------------------------------------------- */

/* A string field of the request by name, when the request passed the contract; else NULL. */
static const char *req_string(const gateway_req_t *r, const char *name)
{
    if (!r->request || !name)
        return NULL;
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(r->request->descriptor, name);
    if (!f || f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED)
        return NULL;
    return *(char *const *)((const char *)r->request + f->offset);
}

const char *gateway_req_resource_id(const gateway_req_t *r)
{
    if (r->resource_id)
        return r->resource_id;
    const char *id = req_string(r, r->m->id_field);
    if (id)
        return id;
    return r->m->resource_id ? r->m->resource_id : "";
}

/* The request's resource context, when it has one and passed the contract. */
static Credex__V1__ResourceContext *req_context(const gateway_req_t *r)
{
    if (!r->request)
        return NULL;
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(r->request->descriptor, "resource_context");
    if (!f || f->type != PROTOBUF_C_TYPE_MESSAGE ||
        f->descriptor != &credex__v1__resource_context__descriptor)
        return NULL;
    return *(Credex__V1__ResourceContext *const *)((const char *)r->request + f->offset);
}

Credex__V1__CallerContext *gateway_caller_context(gateway_req_t *r, const char *intended_use,
                                                  Credex__V1__ResourceContext *rc)
{
    const gateway_caller_t *c = &r->caller;
    Credex__V1__CallerContext *cc = rpc_call_alloc(r->call, sizeof(*cc));
    credex__v1__caller_context__init(cc);
    cc->caller_kind = c->kind;
    cc->service_id = gateway_strdup(r->call, c->service_id);
    cc->subject_user_id = gateway_strdup(r->call, c->user_id);
    cc->peer = gateway_strdup(r->call, c->peer);
    cc->intended_use = gateway_strdup(r->call, intended_use);
    cc->resource_context = rc;
    return cc;
}

/* The one downstream call: gateway_downstream without or gateway_forward_oauth with the
 * caller's facts as request headers. `planned`: the downstream's unimplemented is passed on as
 * it is (a method that service has not built yet), not taken for a fault. */
static bool downstream(rpc_client_t *client, const ProtobufCServiceDescriptor *svc,
                       const char *method, rpc_call_t *call, const rpc_header_t *headers,
                       size_t nheaders, bool planned, const ProtobufCMessage *req,
                       ProtobufCMessage **reply, cx_error_t *err)
{
    if (!client)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "%s is not configured", svc->short_name);
    rpc_call_options_t o = {.parent = call, .headers = headers, .nheaders = nheaders};
    cx_error_t e;
    cx_error_clear(&e);
    if (rpc_client_unary(client, svc, method, req, &o, rpc_call_arena(call), reply, &e))
        return true;
    if (planned && e.code == CX_ERR_UNIMPLEMENTED)
        return cx_error_set(err, CX_ERR_UNIMPLEMENTED, "planned: %s/%s is not built yet",
                            svc->short_name, method);
    if (!cx_code_is_dependency_fault(e.code)) {
        cx_error_copy(err, &e);
        return false;
    }
    cx_log_warn(rpc_call_correlation_id(call), "gateway.downstream_failed",
                CX_LOG_STR("target", svc->short_name), CX_LOG_STR("method", method),
                CX_LOG_STR("reason", cx_code_reason(e.code)));
    return cx_error_set(err, CX_ERR_UNAVAILABLE, "%s is unavailable", svc->short_name);
}

bool gateway_downstream(rpc_client_t *client, const ProtobufCServiceDescriptor *svc,
                        const char *method, rpc_call_t *call, const ProtobufCMessage *req,
                        ProtobufCMessage **reply, cx_error_t *err)
{
    return downstream(client, svc, method, call, NULL, 0, false, req, reply, err);
}

bool gateway_forward(gateway_req_t *r, rpc_client_t *client, const ProtobufCServiceDescriptor *svc,
                     const char *method, const ProtobufCMessage *req, ProtobufCMessage **reply,
                     cx_error_t *err)
{
    if (gateway_downstream(client, svc, method, r->call, req, reply, err))
        return true;
    r->answered_downstream = true;
    return false;
}

static const char *caller_kind_name(Credex__V1__CallerKind k)
{
    switch (k) {
    case CREDEX__V1__CALLER_KIND__CALLER_KIND_BROWSER:
        return "browser";
    case CREDEX__V1__CALLER_KIND__CALLER_KIND_SERVICE:
        return "service";
    case CREDEX__V1__CALLER_KIND__CALLER_KIND_SERVICE_ON_BEHALF_OF_USER:
        return "service_on_behalf_of_user";
    default:
        return NULL;
    }
}

bool gateway_forward_oauth(gateway_req_t *r, const ProtobufCServiceDescriptor *svc,
                           const char *method, const ProtobufCMessage *req,
                           ProtobufCMessage **reply, cx_error_t *err)
{
    /* Only what the gateway verified goes on this hop; the public caller's own x-credex-*
     * headers are never passed on (no header of the parent call is). The correlation id
     * travels with the parent. */
    const gateway_caller_t *c = &r->caller;
    rpc_header_t h[4];
    size_t n = 0;
    const char *kind = caller_kind_name(c->kind);
    if (c->user_id[0])
        h[n++] = (rpc_header_t){.key = GATEWAY_HDR_SUBJECT_USER, .value = c->user_id};
    if (kind)
        h[n++] = (rpc_header_t){.key = GATEWAY_HDR_CALLER_KIND, .value = kind};
    if (c->service_id[0])
        h[n++] = (rpc_header_t){.key = GATEWAY_HDR_SERVICE_ID, .value = c->service_id};
    if (r->platform_admin)
        h[n++] = (rpc_header_t){.key = GATEWAY_HDR_PLATFORM_ADMIN, .value = "true"};
    /* oauth's services are built a method at a time (oauth.proto): one it has not built is
     * "planned" to the caller, as for the gateway's own planned methods. */
    if (downstream(r->gw->oauth, svc, method, r->call, h, n, true, req, reply, err))
        return true;
    r->answered_downstream = true;
    return false;
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

bool gateway_authorize_secret(gateway_req_t *r, const char *subject, const char *secret_id,
                              const char *relation, cx_error_t *err)
{
    char obj[CX_FGA_NAME_MAX];
    snprintf(obj, sizeof(obj), "secret_ref:%s", secret_id);
    bool allowed = false, visible = false;
    if (!gateway_fga_check(r->gw, subject, relation, obj, &allowed, err))
        return false;
    if (allowed)
        return true;
    if (strcmp(relation, "read_metadata") != 0 &&
        !gateway_fga_check(r->gw, subject, "read_metadata", obj, &visible, err))
        return false;
    if (visible)
        return cx_error_set(err, CX_ERR_PERMISSION_DENIED, "%s permission required on this secret",
                            relation);
    return cx_error_set(err, CX_ERR_NOT_FOUND, "secret not found");
}

static const char *actor_of(const gateway_caller_t *c)
{
    if (c->user_id[0])
        return c->user_id;
    if (c->service_id[0])
        return c->service_id;
    return c->peer;
}

static bool append_event(gateway_req_t *r, Credex__V1__AuditEvent *ev, cx_error_t *err)
{
    Credex__V1__StoreAppendAuditEventRequest req =
        CREDEX__V1__STORE_APPEND_AUDIT_EVENT_REQUEST__INIT;
    req.event = ev;
    ProtobufCMessage *reply = NULL;
    return gateway_downstream(r->gw->store, &credex__v1__credential_store__descriptor,
                              "AppendAuditEvent", r->call, &req.base, &reply, err);
}

/* An event about the request, with what is known to be valid only: the verified caller, and
 * request fields only once the whole request passed the contract. */
static void event_fill(gateway_req_t *r, Credex__V1__AuditEvent *ev, const char *resource_id)
{
    const gateway_caller_t *c = &r->caller;
    rpc_call_t *call = r->call;
    ev->event_type = gateway_strdup(call, r->m->event_type);
    ev->resource_type = gateway_strdup(call, r->m->resource_type);
    ev->resource_id = gateway_strdup(call, resource_id);
    ev->subject_user_id = gateway_strdup(call, c->user_id);
    ev->caller_kind = c->kind;
    ev->actor_id = gateway_strdup(call, actor_of(c));
    ev->peer = gateway_strdup(call, c->peer);
    ev->correlation_id = gateway_strdup(call, rpc_call_correlation_id(call));
    const char *use = req_string(r, "intended_use");
    ev->intended_use = gateway_strdup(call, use);
    ev->resource_context = req_context(r);
}

/* The one failure-audit path of the gateway: one DENIED or FAILED event per failed call that
 * the gateway itself decided. Not audited: calls while credentials are disabled (store refuses
 * every write then), and failures answered by store or oauth (they audit their own). A record that
 * cannot be written is logged; the failure stands. */
static void gateway_audit_failure(gateway_req_t *r, const cx_error_t *err)
{
    /* With credentials disabled store refuses every write, the audit trail's included; a
     * feature off within them (exchange) is audited like any refusal. */
    if ((err->code == CX_ERR_FEATURE_DISABLED && !r->gw->cfg->credentials_enabled) ||
        r->answered_downstream)
        return;
    const char *reason = cx_code_reason(err->code);
    Credex__V1__AuditEvent ev = CREDEX__V1__AUDIT_EVENT__INIT;
    event_fill(r, &ev, gateway_req_resource_id(r));
    ev.outcome = cx_code_is_denial(err->code) ? CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_DENIED
                                              : CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_FAILED;
    ev.reason = gateway_strdup(r->call, reason);
    cx_error_t aerr;
    cx_error_clear(&aerr);
    bool audited = append_event(r, &ev, &aerr);
    cx_log_info(rpc_call_correlation_id(r->call), "gateway.denied",
                CX_LOG_STR("action", r->m->event_type), CX_LOG_STR("reason", reason),
                CX_LOG_STR("resource_id", ev.resource_id), CX_LOG_STR("peer", r->caller.peer),
                CX_LOG_STR("actor", ev.actor_id), CX_LOG_STR("detail", err->message),
                CX_LOG_BOOL("audited", audited));
    if (!audited)
        cx_log_error(rpc_call_correlation_id(r->call), "gateway.audit_failed",
                     CX_LOG_STR("action", r->m->event_type), CX_LOG_STR("reason", aerr.message));
}

bool gateway_audit_success(gateway_req_t *r, const char *secret_id, const char *detail_key,
                           const char *detail_value, cx_error_t *err)
{
    Credex__V1__AuditEvent ev = CREDEX__V1__AUDIT_EVENT__INIT;
    event_fill(r, &ev, secret_id);
    ev.outcome = CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_SUCCESS;
    Credex__V1__AuditEvent__AttributesEntry attr = CREDEX__V1__AUDIT_EVENT__ATTRIBUTES_ENTRY__INIT;
    Credex__V1__AuditEvent__AttributesEntry *attrs[1] = {&attr};
    if (detail_key) {
        attr.key = gateway_strdup(r->call, detail_key);
        attr.value = gateway_strdup(r->call, detail_value);
        ev.attributes = attrs;
        ev.n_attributes = 1;
    }
    return append_event(r, &ev, err);
}

/* Who may call, checked in the order gateway.proto fixes: browser classification first (so a
 * browser gets browser_denied whatever its tokens), then the tokens, then what the method
 * needs of the caller. */
static bool admit_caller(gateway_req_t *r, cx_error_t *err)
{
    const gateway_caller_t *c = &r->caller;
    unsigned flags = r->m->flags;
    /* The edge carries browser traffic and never holds credential material, whatever it
     * claims about a call (docs/DESIGN.md): server-side methods refuse the peer itself. */
    if ((flags & GATEWAY_M_SERVER_SIDE) &&
        (c->kind == CREDEX__V1__CALLER_KIND__CALLER_KIND_BROWSER || strcmp(c->peer, "edge") == 0))
        return cx_error_set(err, CX_ERR_BROWSER_DENIED,
                            "credential material is never returned to browser callers");
    if ((flags & GATEWAY_M_EXCHANGE) && !r->gw->cfg->exchange_enabled)
        return cx_error_set(err, CX_ERR_FEATURE_DISABLED,
                            "credential exchange is disabled (CREDENTIAL_EXCHANGE_ENABLED=false)");
    if (!c->authenticated) {
        if ((flags & GATEWAY_M_HEALTH) && c->auth_err.code == CX_ERR_UNAVAILABLE)
            return true; /* the health report is how an operator learns the IdP is down */
        cx_error_copy(err, &c->auth_err);
        return false;
    }
    if ((flags & GATEWAY_M_USER) && !c->user_id[0])
        return cx_error_set(err, CX_ERR_PERMISSION_DENIED,
                            "this method acts for a user: send the user's token");
    if (flags & GATEWAY_M_SERVER_SIDE) {
        if (c->kind != CREDEX__V1__CALLER_KIND__CALLER_KIND_SERVICE &&
            c->kind != CREDEX__V1__CALLER_KIND__CALLER_KIND_SERVICE_ON_BEHALF_OF_USER)
            return cx_error_set(err, CX_ERR_PERMISSION_DENIED,
                                "retrieval is for server-side callers only");
        /* The platform's allow-list of server-side callers. */
        char svc[CX_FGA_NAME_MAX];
        snprintf(svc, sizeof(svc), "service:%s", c->service_id);
        bool allowed = false;
        if (!gateway_fga_check(r->gw, svc, "retriever", "platform:credex", &allowed, err))
            return false;
        if (!allowed)
            return cx_error_set(err, CX_ERR_PERMISSION_DENIED,
                                "this service is not an allowed retriever");
        /* A separate grant: it reaches every connected account of the users it acts for. */
        if ((flags & GATEWAY_M_EXCHANGE) &&
            !gateway_fga_check(r->gw, svc, "exchanger", "platform:credex", &allowed, err))
            return false;
        if (!allowed)
            return cx_error_set(err, CX_ERR_PERMISSION_DENIED,
                                "this service may not exchange a user's identity for tokens");
    }
    return true;
}

bool gateway_run(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                 cx_error_t *err, const gateway_method_t *m)
{
    const gateway_t *gw = gateway_state(call);
    if (!gw)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "gateway is starting");
    if (!(m->flags & GATEWAY_M_HEALTH) && !gw->cfg->credentials_enabled)
        return cx_error_set(err, CX_ERR_FEATURE_DISABLED,
                            "credentials are disabled (CAIPE_CREDENTIALS_ENABLED=false)");
    gateway_req_t r = {.call = call, .gw = gw, .m = m};
    gateway_caller_from_call(gw, call, &r.caller);
    /* The contract is checked first but reported in its place (after the caller checks), so
     * that every audit event of this call may carry the request's fields once they are valid,
     * and never before. */
    cx_error_t input_err;
    cx_error_clear(&input_err);
    bool input_ok = request && cx_contract_check(request, &input_err);
    if (!request) /* it did not decode or failed the wire check (rpc handles_bad_input) */
        cx_error_copy(&input_err, rpc_call_input_error(call));
    if (!request && input_err.code == CX_OK)
        cx_error_set(&input_err, CX_ERR_INVALID_ARGUMENT, "malformed request");
    if (input_ok)
        r.request = request;
    bool ok = admit_caller(&r, err);
    if (ok && !input_ok) {
        cx_error_copy(err, &input_err);
        ok = false;
    }
    ok = ok && m->run(&r, reply, err);
    if (!ok)
        gateway_audit_failure(&r, err);
    return ok;
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
                                       &gateway_admin_def, &gateway_connectors_def,
                                       &gateway_connections_def};
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
