/* store request policy. The shape of every field (lengths, alphabets, text without control
 * characters, repeated limits, required fields, enum values) is common/contract's, which the
 * dispatch applies to the whole request before anything else (the same rules the gateway
 * applied first: defence in depth, never a second copy). What is here is store's own policy on
 * top: its id format, which peer may touch which kind, and the request combinations store.proto
 * allows. The stored-document decoder (secret_doc.c) reads back under the same contract. */
#include <string.h>

#include "common/contract/cx_contract.h"
#include "services/store/store_internal.h"

bool store_peer_may_use(const char *peer, Credex__V1__SecretKind kind,
                        Credex__V1__OwnerType owner_type)
{
    if (!peer)
        return false;
    if (strcmp(peer, "gateway") == 0)
        return (kind == CREDEX__V1__SECRET_KIND__SECRET_KIND_API_KEY ||
                kind == CREDEX__V1__SECRET_KIND__SECRET_KIND_TOKEN ||
                kind == CREDEX__V1__SECRET_KIND__SECRET_KIND_PASSWORD ||
                kind == CREDEX__V1__SECRET_KIND__SECRET_KIND_GENERIC) &&
               (owner_type == CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER ||
                owner_type == CREDEX__V1__OWNER_TYPE__OWNER_TYPE_TEAM);
    if (strcmp(peer, "oauth") == 0)
        return (kind == CREDEX__V1__SECRET_KIND__SECRET_KIND_OAUTH_CLIENT_SECRET &&
                owner_type == CREDEX__V1__OWNER_TYPE__OWNER_TYPE_PLATFORM) ||
               (kind == CREDEX__V1__SECRET_KIND__SECRET_KIND_PROVIDER_TOKEN_SET &&
                owner_type == CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER);
    return false;
}

bool store_validate_owner(const Credex__V1__Owner *o, cx_error_t *err)
{
    if (!o || !store_owner_type_name(o->owner_type))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "owner.owner_type is required");
    if (!cx_contract_check_value("owner_id", o->owner_id, true, err))
        return false;
    if (o->owner_type == CREDEX__V1__OWNER_TYPE__OWNER_TYPE_PLATFORM &&
        strcmp(o->owner_id, "platform") != 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "owner.owner_id must be \"platform\" for platform secrets");
    return true;
}

bool store_validate_secret_id(const char *id, cx_error_t *err)
{
    if (!store_id_valid(id, "sec_"))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "secret_id is malformed");
    return true;
}

bool store_validate_create(const Credex__V1__StoreCreateSecretRequest *r, const char *peer,
                           cx_error_t *err)
{
    if (!store_validate_owner(r->owner, err))
        return false;
    if (!store_kind_name(r->kind))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "kind is required");
    bool oauth_kind = r->kind == CREDEX__V1__SECRET_KIND__SECRET_KIND_OAUTH_CLIENT_SECRET ||
                      r->kind == CREDEX__V1__SECRET_KIND__SECRET_KIND_PROVIDER_TOKEN_SET;
    if (oauth_kind && !r->connector_id[0])
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "connector_id is required for OAuth kinds");
    if (!store_peer_may_use(peer, r->kind, r->owner->owner_type))
        return cx_error_set(err, CX_ERR_PERMISSION_DENIED,
                            "this peer may not create secrets of this kind or owner");
    return true;
}

bool store_validate_update(const Credex__V1__StoreUpdateSecretRequest *r, cx_error_t *err)
{
    for (size_t i = 0; i < r->n_update_mask; i++) {
        const char *f = r->update_mask[i];
        if (strcmp(f, "display_name") == 0) {
            if (!cx_contract_check_value("display_name", r->display_name, true, err))
                return false;
        } else if (strcmp(f, "description") != 0 && strcmp(f, "allowed_uses") != 0) {
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "update_mask: unknown field");
        }
    }
    return true;
}

/* The events a Resolve may write in place of secret.retrieved (store.proto, exchange_event). */
static const char *const store_exchange_events[] = {"token.exchanged"};

/* A Resolve's exchange_event: oauth's record of handing out a provider token set's access
 * token, and nothing else. Only oauth may ask (no other peer decides what a read of material is
 * recorded as); the event is about the user the read is for. */
static bool store_validate_exchange_event(const Credex__V1__StoreResolveRequest *r,
                                          const char *peer, cx_error_t *err)
{
    const Credex__V1__AuditEvent *e = r->exchange_event;
    if (!peer || strcmp(peer, "oauth") != 0)
        return cx_error_set(err, CX_ERR_PERMISSION_DENIED, "exchange_event is for peer oauth only");
    if (r->expected_kind != CREDEX__V1__SECRET_KIND__SECRET_KIND_PROVIDER_TOKEN_SET)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "exchange_event needs expected_kind provider_token_set");
    bool listed = false;
    for (size_t i = 0; i < sizeof(store_exchange_events) / sizeof(store_exchange_events[0]); i++)
        listed = listed || strcmp(e->event_type, store_exchange_events[i]) == 0;
    if (!listed || strcmp(e->resource_type, "provider_connection") != 0 || !e->resource_id[0])
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "exchange_event: event_type or resource is not allowed");
    if (e->outcome != CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_SUCCESS || e->reason[0])
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "exchange_event: outcome must be success");
    if (e->n_attributes > STORE_EXCHANGE_ATTRS_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "exchange_event: too many attributes");
    if (strcmp(e->subject_user_id, r->caller->subject_user_id) != 0 || !e->subject_user_id[0])
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "exchange_event: subject_user_id differs from the caller's");
    return true;
}

bool store_validate_resolve(const Credex__V1__StoreResolveRequest *r, const char *peer,
                            cx_error_t *err)
{
    if (!r->caller)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "caller is required");
    if (!r->caller->intended_use || !r->caller->intended_use[0])
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "caller.intended_use is required");
    if (r->expected_kind != CREDEX__V1__SECRET_KIND__SECRET_KIND_UNSPECIFIED &&
        !store_kind_name(r->expected_kind))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "expected_kind is invalid");
    if (r->caller->caller_kind == CREDEX__V1__CALLER_KIND__CALLER_KIND_BROWSER)
        return cx_error_set(err, CX_ERR_BROWSER_DENIED, "browser callers never get material");
    if (peer && strcmp(peer, "gateway") == 0) {
        const Credex__V1__ResourceContext *rc = r->caller->resource_context;
        if (!rc || !rc->resource_type[0] || !rc->resource_id[0])
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "caller.resource_context (resource_type, resource_id) required");
    }
    if (r->exchange_event && !store_validate_exchange_event(r, peer, err))
        return false;
    if (!r->exchange_event && r->exchange_expires_after_ms != 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "exchange_expires_after_ms needs exchange_event");
    return true;
}

bool store_validate_audit_event(const Credex__V1__AuditEvent *e, cx_error_t *err)
{
    if (!e)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "event is required");
    if (e->owner && e->owner->owner_type != 0 && !store_validate_owner(e->owner, err))
        return false;
    return true;
}

unsigned store_page_size(const Credex__V1__PageRequest *p)
{
    if (!p || p->page_size == 0)
        return 50;
    return p->page_size > 200 ? 200 : p->page_size;
}
