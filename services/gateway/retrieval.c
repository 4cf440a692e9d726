/*
 * credex.v1.Retrieval.Retrieve: credential material by reference, for approved server-side
 * callers only. Every check runs before anything reaches store.Resolve, in the order of
 * gateway.proto: feature toggle, browser classification, tokens, service allow-list, intended
 * use and resource context, then OpenFGA `use` for the user (or the service acting for itself).
 * Deny before decrypt is therefore structural: a denied request never leaves the gateway except
 * as its audit record.
 */
#include <stdio.h>
#include <string.h>

#include "common/log/cx_log.h"
#include "credex/v1/gateway.pb-c.h"
#include "credex/v1/store.pb-c.h"
#include "services/gateway/gateway_internal.h"

#define EVENT "secret.retrieved"

static bool retrieval_retrieve(rpc_call_t *call, const ProtobufCMessage *request,
                               ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__RetrieveRequest *req = (const Credex__V1__RetrieveRequest *)request;
    const gateway_t *gw = gateway_state(call);
    gateway_caller_t c;
    const char *sid = req->secret_ref;
    const char *use = req->intended_use;
    Credex__V1__ResourceContext *rc = req->resource_context;
    if (!gateway_feature_check(gw, err))
        return false;
    gateway_caller_from_call(gw, call, &c);
    if (c.kind == CREDEX__V1__CALLER_KIND__CALLER_KIND_BROWSER) {
        cx_error_set(err, CX_ERR_BROWSER_DENIED,
                     "credential material is never returned to browser callers");
        return gateway_deny(gw, call, &c, EVENT, "secret_ref", sid, use, rc, err);
    }
    if (!c.authenticated) {
        cx_error_copy(err, &c.auth_err);
        if (err && err->code == CX_ERR_UNAVAILABLE)
            return false;
        return gateway_deny(gw, call, &c, EVENT, "secret_ref", sid, use, rc, err);
    }
    if (c.kind != CREDEX__V1__CALLER_KIND__CALLER_KIND_SERVICE &&
        c.kind != CREDEX__V1__CALLER_KIND__CALLER_KIND_SERVICE_ON_BEHALF_OF_USER) {
        cx_error_set(err, CX_ERR_PERMISSION_DENIED, "retrieval is for server-side callers only");
        return gateway_deny(gw, call, &c, EVENT, "secret_ref", sid, use, rc, err);
    }

    /* The platform's allow-list of server-side callers. */
    char svc[CX_FGA_NAME_MAX];
    snprintf(svc, sizeof(svc), "service:%s", c.service_id);
    bool allowed = false;
    if (!gateway_fga_check(gw, svc, "retriever", "platform:credex", &allowed, err))
        return false;
    if (!allowed) {
        cx_error_set(err, CX_ERR_PERMISSION_DENIED, "service %s is not an allowed retriever",
                     c.service_id);
        return gateway_deny(gw, call, &c, EVENT, "secret_ref", sid, use, rc, err);
    }
    if (!gateway_validate_use_context(use, rc, err))
        return gateway_deny(gw, call, &c, EVENT, "secret_ref", sid, use, rc, err);
    if (!gateway_valid_secret_id(sid)) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                     "secret_ref must be 1..64 chars of [A-Za-z0-9_-]");
        return gateway_deny(gw, call, &c, EVENT, "secret_ref", "", use, rc, err);
    }

    /* The end user (or the service acting for itself) needs use on the secret. */
    char subject[CX_FGA_NAME_MAX], obj[CX_FGA_NAME_MAX];
    if (c.kind == CREDEX__V1__CALLER_KIND__CALLER_KIND_SERVICE_ON_BEHALF_OF_USER)
        snprintf(subject, sizeof(subject), "user:%s", c.user_id);
    else
        snprintf(subject, sizeof(subject), "%s", svc);
    snprintf(obj, sizeof(obj), "secret_ref:%s", sid);
    if (!gateway_fga_check(gw, subject, "use", obj, &allowed, err))
        return false;
    if (!allowed) {
        bool visible = false;
        if (!gateway_fga_check(gw, subject, "read_metadata", obj, &visible, err))
            return false;
        if (visible)
            cx_error_set(err, CX_ERR_PERMISSION_DENIED, "use permission required on this secret");
        else
            cx_error_set(err, CX_ERR_NOT_FOUND, "secret not found");
        return gateway_deny(gw, call, &c, EVENT, "secret_ref", sid, use, rc, err);
    }

    /* Only now does the request reach the one component that can decrypt. */
    Credex__V1__StoreResolveRequest sreq = CREDEX__V1__STORE_RESOLVE_REQUEST__INIT;
    sreq.caller = gateway_caller_context(call, &c, use, rc);
    sreq.secret_id = (char *)sid;
    Credex__V1__StoreResolveResponse *sr = NULL;
    if (!gateway_downstream(gw->store, &credex__v1__credential_store__descriptor, "Resolve", call,
                            &sreq.base, (ProtobufCMessage **)&sr, err)) {
        if (err && err->code == CX_ERR_NOT_FOUND)
            cx_error_set(err, CX_ERR_NOT_FOUND, "secret not found");
        return false;
    }
    /* The minimum: id, version, kind and the value; owner, provider and connector stay here. */
    Credex__V1__RetrieveResponse *resp = rpc_call_alloc(call, sizeof(*resp));
    credex__v1__retrieve_response__init(resp);
    resp->secret_id = sr->secret_id;
    resp->version = sr->version;
    resp->kind = sr->kind;
    resp->value = sr->value;
    *reply = &resp->base;
    cx_log_info(rpc_call_correlation_id(call), "gateway.retrieved", CX_LOG_STR("secret_id", sid),
                CX_LOG_STR("service", c.service_id), CX_LOG_STR("user", c.user_id),
                CX_LOG_INT("version", sr->version));
    return true;
}

static const rpc_method_impl_t retrieval_impls[] = {
    {.method = "Retrieve", .kind = RPC_UNARY, .unary = retrieval_retrieve},
};

const rpc_service_def_t gateway_retrieval_def = {
    .desc = &credex__v1__retrieval__descriptor,
    .impls = retrieval_impls,
    .nimpls = 1,
    .unimplemented_note = "planned: a later issue (credential exchange)",
};
