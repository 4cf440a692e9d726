/* store request validation: every field a peer sends is checked here, even though the gateway
 * checked it first (defence in depth; store never trusts shape, only the CallerContext facts
 * of its allow-listed peers). Limits are those of common.proto. The string shapes serve the
 * decoder of stored documents too (secret_doc.c): what store accepts is what it may read back. */
#include <string.h>

#include "services/store/store_internal.h"

static bool store_str_len_ok(const char *s, size_t min, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    return n >= min && n <= max;
}

bool store_owner_id_ok(const char *s)
{
    /* '|' is the id derivation's separator (store_secret_id_derive). */
    if (!store_str_len_ok(s, 1, STORE_OWNER_ID_MAX))
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x21 || *p > 0x7e || *p == '|')
            return false;
    return true;
}

bool store_use_ok(const char *s)
{
    if (!store_str_len_ok(s, 1, 64))
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || strchr("_.:-", *p)))
            return false;
    return true;
}

bool store_text_ok(const char *s, size_t min, size_t max)
{
    /* Control characters corrupt logs and terminals; invalid UTF-8 breaks every JSON client. */
    if (!store_str_len_ok(s, min, max))
        return false;
    s = s ? s : "";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return bson_utf8_validate(s, strlen(s), false);
}

bool store_ident_ok(const char *s, size_t min, size_t max)
{
    if (!store_str_len_ok(s, min, max))
        return false;
    for (const char *p = s ? s : ""; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr("_.:@-/", *p)))
            return false;
    return true;
}

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
    if (!store_owner_id_ok(o->owner_id))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "owner.owner_id must be 1..128 printable characters without '|'");
    if (o->owner_type == CREDEX__V1__OWNER_TYPE__OWNER_TYPE_PLATFORM &&
        strcmp(o->owner_id, "platform") != 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "owner.owner_id must be \"platform\" for platform secrets");
    return true;
}

bool store_validate_caller(const Credex__V1__CallerContext *c, cx_error_t *err)
{
    if (!c || c->caller_kind == CREDEX__V1__CALLER_KIND__CALLER_KIND_UNSPECIFIED ||
        c->caller_kind > CREDEX__V1__CALLER_KIND__CALLER_KIND_SYSTEM)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "caller.caller_kind is required");
    if (!store_ident_ok(c->service_id, 0, 128) || !store_ident_ok(c->peer, 0, 64) ||
        !store_owner_id_ok(c->subject_user_id[0] ? c->subject_user_id : "x"))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "caller: malformed identity field");
    if (c->intended_use && c->intended_use[0] && !store_use_ok(c->intended_use))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "caller.intended_use must be 1..64 chars of [a-z0-9_.:-]");
    if (c->resource_context) {
        const Credex__V1__ResourceContext *r = c->resource_context;
        if (!store_ident_ok(r->resource_type, 0, 64) || !store_ident_ok(r->resource_id, 0, 128) ||
            !store_ident_ok(r->agent_id, 0, 128) ||
            !store_ident_ok(r->provider_resource_id, 0, 128) || r->n_attributes > 16)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "caller.resource_context malformed");
        for (size_t i = 0; i < r->n_attributes; i++)
            if (!store_ident_ok(r->attributes[i]->key, 1, 64) ||
                !store_text_ok(r->attributes[i]->value, 0, 256))
                return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                    "caller.resource_context.attributes malformed");
    }
    return true;
}

bool store_validate_uses(size_t n, char *const *uses, cx_error_t *err)
{
    if (n > 16)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "at most 16 allowed_uses");
    for (size_t i = 0; i < n; i++) {
        if (!store_use_ok(uses[i]))
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "allowed_uses entries must be 1..64 chars of [a-z0-9_.:-]");
        for (size_t j = 0; j < i; j++)
            if (strcmp(uses[i], uses[j]) == 0)
                return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "duplicate allowed_uses entry");
    }
    return true;
}

bool store_validate_value(const ProtobufCBinaryData *v, cx_error_t *err)
{
    /* Never quote the value, not even its length's exact figure beyond the limit. */
    if (!v || v->len == 0 || !v->data)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "value is required");
    if (v->len > STORE_VALUE_MAX || v->len > CX_SECRET_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "value exceeds 65536 bytes");
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
    if (!r->caller)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "caller is required");
    if (!store_validate_owner(r->owner, err))
        return false;
    if (!store_text_ok(r->idempotency_key, 1, 128))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "idempotency_key is required (1..128 printable characters)");
    if (!store_kind_name(r->kind))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "kind is required");
    if (!store_text_ok(r->display_name, 1, 128))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "display_name must be 1..128 chars");
    if (!store_text_ok(r->description, 0, 1024))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "description must be <= 1024 chars");
    if (!store_ident_ok(r->provider, 0, 64))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "provider is malformed");
    bool oauth_kind = r->kind == CREDEX__V1__SECRET_KIND__SECRET_KIND_OAUTH_CLIENT_SECRET ||
                      r->kind == CREDEX__V1__SECRET_KIND__SECRET_KIND_PROVIDER_TOKEN_SET;
    if (!store_ident_ok(r->connector_id, oauth_kind ? 1 : 0, 64))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            oauth_kind ? "connector_id is required for OAuth kinds"
                                       : "connector_id is malformed");
    if (!store_validate_uses(r->n_allowed_uses, r->allowed_uses, err) ||
        !store_validate_value(&r->value, err))
        return false;
    if (!store_peer_may_use(peer, r->kind, r->owner->owner_type))
        return cx_error_set(err, CX_ERR_PERMISSION_DENIED,
                            "this peer may not create secrets of this kind or owner");
    return true;
}

bool store_validate_update(const Credex__V1__StoreUpdateSecretRequest *r, cx_error_t *err)
{
    if (r->n_update_mask == 0 || r->n_update_mask > 3)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "update_mask is required");
    for (size_t i = 0; i < r->n_update_mask; i++) {
        const char *f = r->update_mask[i];
        if (strcmp(f, "display_name") == 0) {
            if (!store_text_ok(r->display_name, 1, 128))
                return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                    "display_name must be 1..128 chars");
        } else if (strcmp(f, "description") == 0) {
            if (!store_text_ok(r->description, 0, 1024))
                return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                    "description must be <= 1024 chars");
        } else if (strcmp(f, "allowed_uses") == 0) {
            if (!store_validate_uses(r->n_allowed_uses, r->allowed_uses, err))
                return false;
        } else {
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "update_mask: unknown field");
        }
    }
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
    return true;
}

bool store_validate_audit_event(const Credex__V1__AuditEvent *e, cx_error_t *err)
{
    if (!e || !store_ident_ok(e->event_type, 3, 64))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "event.event_type is required");
    if (e->outcome == CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_UNSPECIFIED ||
        e->outcome > CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_FAILED)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "event.outcome is required");
    if (!store_ident_ok(e->reason, 0, 64) || !store_ident_ok(e->resource_type, 1, 64) ||
        !store_ident_ok(e->resource_id, 0, 128) || !store_ident_ok(e->actor_id, 0, 128) ||
        !store_ident_ok(e->peer, 0, 64) || !store_ident_ok(e->correlation_id, 0, 64) ||
        (e->intended_use[0] && !store_use_ok(e->intended_use)) ||
        !store_owner_id_ok(e->subject_user_id[0] ? e->subject_user_id : "x") ||
        e->caller_kind > CREDEX__V1__CALLER_KIND__CALLER_KIND_SYSTEM || e->n_attributes > 16)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "event: malformed field");
    for (size_t i = 0; i < e->n_attributes; i++)
        if (!store_ident_ok(e->attributes[i]->key, 1, 64) ||
            !store_text_ok(e->attributes[i]->value, 0, 256))
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "event.attributes malformed");
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
