/*
 * credex.v1.Retrieval.Retrieve (Exchange and Inject: exchange.c): credential material by reference,
 * for approved server-side callers only. gateway_run has checked, in the order of gateway.proto,
 * the feature toggle, the browser classification, the tokens, the service allow-list and the
 * request contract (intended use and resource context included); this step asks OpenFGA for `use`
 * by the user (or by the service acting for itself) and only then reaches store.Resolve. Deny
 * before decrypt is therefore structural: a denied request never leaves the gateway except as its
 * audit record.
 */
#include <stdio.h>
#include <string.h>

#include "common/log/cx_log.h"
#include "credex/v1/gateway.pb-c.h"
#include "credex/v1/store.pb-c.h"
#include "services/gateway/gateway_internal.h"

static bool retrieval_retrieve(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__RetrieveRequest *req = (const Credex__V1__RetrieveRequest *)r->request;
    const gateway_caller_t *c = &r->caller;
    const char *sid = req->secret_ref;

    /* The end user (or the service acting for itself) needs use on the secret. */
    char subject[CX_FGA_NAME_MAX];
    if (c->kind == CREDEX__V1__CALLER_KIND__CALLER_KIND_SERVICE_ON_BEHALF_OF_USER)
        snprintf(subject, sizeof(subject), "user:%s", c->user_id);
    else
        snprintf(subject, sizeof(subject), "service:%s", c->service_id);
    if (!gateway_authorize_secret(r, subject, sid, "use", err))
        return false;

    /* Only now does the request reach the one component that can decrypt. */
    Credex__V1__StoreResolveRequest sreq = CREDEX__V1__STORE_RESOLVE_REQUEST__INIT;
    sreq.caller = gateway_caller_context(r, req->intended_use, req->resource_context);
    sreq.secret_id = (char *)sid;
    Credex__V1__StoreResolveResponse *sr = NULL;
    if (!gateway_forward(r, r->gw->store, &credex__v1__credential_store__descriptor, "Resolve",
                         &sreq.base, (ProtobufCMessage **)&sr, err)) {
        if (err && err->code == CX_ERR_NOT_FOUND)
            cx_error_set(err, CX_ERR_NOT_FOUND, "secret not found");
        return false;
    }
    /* The minimum: id, version, kind and the value; owner, provider and connector stay here. */
    Credex__V1__RetrieveResponse *resp = rpc_call_alloc(r->call, sizeof(*resp));
    credex__v1__retrieve_response__init(resp);
    resp->secret_id = sr->secret_id;
    resp->version = sr->version;
    resp->kind = sr->kind;
    resp->value = sr->value;
    *reply = &resp->base;
    /* On the call's one access-log line: a line of its own would cost as much again. */
    rpc_call_log_field(r->call, CX_LOG_STR("secret_id", sid));
    rpc_call_log_field(r->call, CX_LOG_STR("service_id", c->service_id));
    rpc_call_log_field(r->call, CX_LOG_STR("user", c->user_id));
    rpc_call_log_field(r->call, CX_LOG_INT("version", sr->version));
    return true;
}

static const gateway_method_t m_retrieve = {.event_type = "secret.retrieved",
                                            .resource_type = "secret_ref",
                                            .id_field = "secret_ref",
                                            .flags = GATEWAY_M_SERVER_SIDE,
                                            .run = retrieval_retrieve};

GATEWAY_ENTRY(retrieve_entry, m_retrieve)

static const rpc_method_impl_t retrieval_impls[] = {
    {.method = "Retrieve", .kind = RPC_UNARY, .unary = retrieve_entry},
    {.method = "Exchange", .kind = RPC_UNARY, .unary = gateway_exchange_entry},
    {.method = "Inject", .kind = RPC_UNARY, .unary = gateway_inject_entry},
};

const rpc_service_def_t gateway_retrieval_def = {
    .desc = &credex__v1__retrieval__descriptor,
    .impls = retrieval_impls,
    .nimpls = 3,
    .handles_bad_input = true, /* gateway_run audits it */
};
