/*
 * store events: audit events composed from a call. Every event store writes about a secret is
 * built here from the call context (store_ctx_t), so that a success and a failure carry the
 * same facts in the same places, and only facts the context holds: the validated caller, the
 * validated secret id, the owner decoded from the database. Also AppendAuditEvent, the events
 * other services compose themselves.
 */
#include "common/log/cx_log.h"
#include "services/store/store_internal.h"

Credex__V1__AuditOutcome store_failure_outcome(cx_code_t code)
{
    return cx_code_is_denial(code) ? CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_DENIED
                                   : CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_FAILED;
}

#define STORE_EVENT_ATTRS_MAX 16 /* a template's (STORE_EXCHANGE_ATTRS_MAX), store's, "via" */

/* Insert e with its own attributes, then attrs, then "via" (the hop that reached store). */
static bool store_audit_write(store_ctx_t *x, Credex__V1__AuditEvent *e, const cx_kv_t *attrs,
                              size_t nattrs, cx_error_t *err)
{
    Credex__V1__AuditEvent__AttributesEntry ents[STORE_EVENT_ATTRS_MAX],
        *ptrs[STORE_EVENT_ATTRS_MAX];
    size_t n = 0;
    for (size_t i = 0; i < e->n_attributes && n < STORE_EVENT_ATTRS_MAX - 1; i++)
        ptrs[n++] = e->attributes[i];
    for (size_t i = 0; i < nattrs && n < STORE_EVENT_ATTRS_MAX - 1; i++) {
        Credex__V1__AuditEvent__AttributesEntry a = CREDEX__V1__AUDIT_EVENT__ATTRIBUTES_ENTRY__INIT;
        a.key = (char *)attrs[i].key;
        a.value = (char *)attrs[i].value;
        ents[n] = a;
        ptrs[n] = &ents[n];
        n++;
    }
    Credex__V1__AuditEvent__AttributesEntry via = CREDEX__V1__AUDIT_EVENT__ATTRIBUTES_ENTRY__INIT;
    via.key = "via";
    via.value = (char *)(x->peer ? x->peer : "");
    ents[n] = via;
    ptrs[n] = &ents[n];
    n++;
    e->n_attributes = n;
    e->attributes = ptrs;
    if (!store_connect(x, err) || !store_audit_insert(x->st, x->c, e, x->arena, err)) {
        cx_log_error(rpc_call_correlation_id(x->call), "store.audit_write_failed",
                     CX_LOG_STR("event_type", e->event_type),
                     CX_LOG_STR("secret_id", x->secret_id ? x->secret_id : ""),
                     CX_LOG_STR("detail", err ? err->message : ""));
        if (err)
            err->code = CX_ERR_UNAVAILABLE;
        return false;
    }
    return true;
}

static void store_event_owner(const store_ctx_t *x, Credex__V1__AuditEvent *e,
                              Credex__V1__Owner *ow)
{
    if (x->owner && x->owner->owner_type) {
        ow->owner_type = x->owner->owner_type;
        ow->owner_id = x->owner->owner_id;
        e->owner = ow;
    }
}

bool store_audit(store_ctx_t *x, const char *event_type, Credex__V1__AuditOutcome outcome,
                 cx_code_t reason, const cx_kv_t *attrs, size_t nattrs, cx_error_t *err)
{
    Credex__V1__AuditEvent e = CREDEX__V1__AUDIT_EVENT__INIT;
    Credex__V1__Owner ow = CREDEX__V1__OWNER__INIT;
    const Credex__V1__CallerContext *caller = x->caller;
    e.event_type = (char *)event_type;
    e.outcome = outcome;
    e.reason = (char *)(reason == CX_OK ? "" : cx_code_reason(reason));
    e.resource_type = "secret_ref";
    e.resource_id = (char *)(x->secret_id ? x->secret_id : "");
    if (caller) {
        e.subject_user_id = caller->subject_user_id;
        e.caller_kind = caller->caller_kind;
        e.intended_use = caller->intended_use;
        e.resource_context = caller->resource_context;
    }
    e.actor_id = (char *)store_actor(x);
    /* The hop that reached store; the gateway's own peer is in the caller context. */
    e.peer = (char *)(caller && caller->peer && caller->peer[0] ? caller->peer : x->peer);
    e.correlation_id = (char *)rpc_call_correlation_id(x->call);
    store_event_owner(x, &e, &ow);
    return store_audit_write(x, &e, attrs, nattrs < 7 ? nattrs : 7, err);
}

bool store_audit_exchange(store_ctx_t *x, const Credex__V1__AuditEvent *tmpl, const cx_kv_t *attrs,
                          size_t nattrs, cx_error_t *err)
{
    /* The template's description of the exchange (validated: store_validate_resolve), as
     * AppendAuditEvent would take it from oauth; the outcome, time, event id and owner are
     * store's. */
    Credex__V1__AuditEvent e = *tmpl;
    Credex__V1__Owner ow = CREDEX__V1__OWNER__INIT;
    e.event_id = "";
    e.created_at_ms = 0;
    e.outcome = CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_SUCCESS;
    e.reason = "";
    if (!e.correlation_id[0])
        e.correlation_id = (char *)rpc_call_correlation_id(x->call);
    if (!e.peer[0])
        e.peer = (char *)x->peer;
    e.owner = NULL;
    store_event_owner(x, &e, &ow);
    return store_audit_write(x, &e, attrs, nattrs, err);
}

bool store_append_audit(store_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                        cx_error_t *err)
{
    const Credex__V1__StoreAppendAuditEventRequest *r =
        (const Credex__V1__StoreAppendAuditEventRequest *)request;
    if (!store_validate_audit_event(r->event, err) || !store_connect(x, err))
        return false;
    /* Copy: the request is const and store assigns id and time. The correlation id defaults
     * to this call's. */
    Credex__V1__AuditEvent e = *r->event;
    if (!e.correlation_id[0])
        e.correlation_id = (char *)rpc_call_correlation_id(x->call);
    if (!e.peer[0])
        e.peer = (char *)x->peer;
    if (!store_audit_insert(x->st, x->c, &e, x->arena, err)) {
        err->code = CX_ERR_UNAVAILABLE;
        return false;
    }
    Credex__V1__StoreAppendAuditEventResponse *resp = rpc_arena_alloc(x->arena, sizeof(*resp));
    credex__v1__store_append_audit_event_response__init(resp);
    resp->event_id = e.event_id;
    resp->created_at_ms = e.created_at_ms;
    *reply = &resp->base;
    return true;
}
