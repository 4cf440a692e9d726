/*
 * store resolve: Resolve, the only place a secret is decrypted (store.proto). Every check that
 * can refuse happens before any unwrap or decrypt. The metadata comes from the metadata cache
 * (st->meta, docs/DOCUMENT_CACHE.md): a revoke, delete or rotation through this store takes
 * effect at the very next call, one through another replica or made directly in the database
 * within CREDEX_STORE_METADATA_CACHE_BOUND_MS (300 ms), and when the database cannot be read
 * the cache stops answering. A failure after cached metadata is retried once from the
 * database, whose answer is final. The use is on record before the material leaves: no
 * record, no material.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log/cx_log.h"
#include "credex/v1/oauth.pb-c.h"
#include "services/store/store_internal.h"

static bool store_uses_allow(const Credex__V1__SecretMetadata *m, const char *use)
{
    if (m->n_allowed_uses == 0)
        return true;
    for (size_t i = 0; i < m->n_allowed_uses; i++)
        if (strcmp(m->allowed_uses[i], use) == 0)
            return true;
    return false;
}

/* p's data key from keywrap, under the encryption context of b. */
static bool store_resolve_unwrap(store_ctx_t *x, const store_bind_t *b, const store_payload_t *p,
                                 cx_secret_t **dek, cx_error_t *err)
{
    char ver[12];
    cx_kv_t pairs[STORE_CONTEXT_PAIRS];
    store_wrapped_t w = {.ct = p->wrapped,
                         .ct_len = p->wrapped_len,
                         .provider = p->key_provider,
                         .key_id = p->key_id,
                         .key_version = p->key_version};
    store_bind_context(b, ver, pairs);
    return x->st->keys.unwrap(x->st->keys.ctx, x->call, &w, pairs, STORE_CONTEXT_PAIRS, dek, err);
}

/* Open p under the binding b (from the live metadata) with its data key, lent by the DEK
 * cache, else unwrapped by keywrap (and cached), into *value: memory of the call's arena, wiped
 * when the call ends, which is where the reply carries it from (a locked secret first would
 * cost an mlock, a munlock and a copy). The AAD is encoded once, for the cache key and the
 * cipher. */
static bool store_resolve_open(store_ctx_t *x, const store_bind_t *b, const store_payload_t *p,
                               ProtobufCBinaryData *value, cx_error_t *err)
{
    unsigned char *aad = NULL, ckey[32];
    size_t aadlen = 0;
    cx_secret_t *dek = NULL;
    store_dek_lease_t *lease = NULL;
    bool ok = false;
    if (!store_bind_aad(b, &aad, &aadlen, err))
        return false;
    unsigned char *out = rpc_arena_alloc(x->arena, p->ct_len);
    store_dek_cache_key(b, p->wrapped, p->wrapped_len, aad, aadlen, ckey);
    int64_t now = mdb_now_ms();
    const cx_secret_t *cached = store_dek_cache_get(x->st->dek, ckey, now, &lease);
    if (cached) {
        ok = store_envelope_open_to(cached, b, p, aad, aadlen, out, err);
        store_dek_cache_release(x->st->dek, lease);
    } else if (store_resolve_unwrap(x, b, p, &dek, err)) {
        store_dek_cache_put(x->st->dek, ckey, dek, now);
        ok = store_envelope_open_to(dek, b, p, aad, aadlen, out, err);
    }
    cx_secret_free(dek);
    free(aad);
    if (ok) {
        value->data = out;
        value->len = p->ct_len;
    }
    return ok;
}

/* A failure that a fresh copy of the payload cannot cure: the key service or the call is
 * gone. Retrying would only wait for it a second time. */
static bool store_transient(cx_code_t code)
{
    return code == CX_ERR_UNAVAILABLE || code == CX_ERR_DEADLINE_EXCEEDED ||
           code == CX_ERR_CANCELLED;
}

/* The payload of a payload id never changes, so a cached copy (put only after it opened)
 * saves the second database read. Anything failing after a hit (a CMK rewrap changed the
 * stored wrapped key, the key service refuses the old one, a damaged entry) evicts it, and the
 * caller redoes the retrieval once from the database, whose answer is final: a tampered
 * document is still integrity_error. True with *opened false: nothing usable in the cache. */
static bool store_open_cached(store_ctx_t *x, const store_bind_t *b, ProtobufCBinaryData *value,
                              bool *opened, cx_error_t *err)
{
    store_payload_t p;
    *opened = false;
    if (!store_payload_cache_get(x->st->payloads, b->payload_id, mdb_now_ms(), x->arena, &p))
        return true;
    *opened = store_resolve_open(x, b, &p, value, err);
    if (*opened)
        return true;
    if (store_transient(err->code))
        return false;
    store_payload_cache_evict(x->st->payloads, b->payload_id);
    cx_log_warn(rpc_call_correlation_id(x->call), "store.payload_cache_retry",
                CX_LOG_STR("secret_id", b->secret_id),
                CX_LOG_STR("reason", cx_code_reason(err->code)));
    cx_error_clear(err); /* the database's answer is the call's */
    return true;
}

/* The payload document by primary key; its associated data is bound to what the metadata
 * says (secret id, current version, payload id), so a document swapped in under this _id
 * fails to open. */
static bool store_open_stored(store_ctx_t *x, const store_bind_t *b, ProtobufCBinaryData *value,
                              cx_error_t *err)
{
    bson_t f = BSON_INITIALIZER, doc;
    bool found = false, opened = false;
    store_payload_t p;
    BSON_APPEND_UTF8(&f, "_id", b->payload_id);
    bool ok = mdb_find_one(x->st->db, x->c, MDB_COLL_PAYLOADS, &f, &doc, &found, err);
    bson_destroy(&f);
    if (!ok)
        return false;
    if (!found)
        return cx_error_set(err, CX_ERR_INTEGRITY, "current payload is missing");
    if (store_payload_decode(&doc, &p, err)) {
        opened = store_resolve_open(x, b, &p, value, err);
        if (opened)
            store_payload_cache_put(x->st->payloads, &p, mdb_now_ms());
    }
    bson_destroy(&doc);
    return opened;
}

/* Is the opened provider token set's access token present and good until after
 * r->exchange_expires_after_ms (or without expiry)? Then the read is the exchange oauth asked to
 * record (store.proto, exchange_event). Parsed into the call arena, so that the copies of the
 * tokens are wiped with it; a token set that does not parse is not an exchange. */
static bool store_token_set_lasts(store_ctx_t *x, const ProtobufCBinaryData *value,
                                  const Credex__V1__StoreResolveRequest *r)
{
    ProtobufCAllocator a = rpc_arena_allocator(x->arena);
    Credex__V1__ProviderTokenSet *ts =
        credex__v1__provider_token_set__unpack(&a, value->len, value->data);
    return ts && ts->access_token.len > 0 &&
           (ts->expires_at_ms == 0 || ts->expires_at_ms > r->exchange_expires_after_ms);
}

/* One attempt; cached: the metadata may come from the metadata cache. */
static bool store_resolve_once(store_ctx_t *x, const Credex__V1__StoreResolveRequest *r,
                               bool cached, ProtobufCMessage **reply, cx_error_t *err)
{
    store_ref_t ref;
    store_bind_t b;
    ProtobufCBinaryData value = {0};
    bool ok = false, opened = false;

    if (!store_validate_resolve(r, x->peer, err) ||
        !(cached ? store_load_secret_cached(x, &ref, err) : store_load_secret(x, &ref, err)))
        goto out;
    if (r->expected_kind && r->expected_kind != ref.meta->kind) {
        cx_error_set(err, CX_ERR_NOT_FOUND, "secret not found");
        goto out;
    }
    if (ref.meta->status != CREDEX__V1__SECRET_STATUS__SECRET_STATUS_ACTIVE) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "secret is %s",
                     store_status_name(ref.meta->status));
        goto out;
    }
    if (!store_uses_allow(ref.meta, x->caller->intended_use)) {
        cx_error_set(err, CX_ERR_PERMISSION_DENIED, "intended_use is not allowed for this secret");
        goto out;
    }
    store_bind_from_ref(&ref, &b);
    if (!store_open_cached(x, &b, &value, &opened, err) ||
        (!opened && !store_open_stored(x, &b, &value, err)))
        goto out;
    char ver[12];
    snprintf(ver, sizeof(ver), "%u", b.version);
    bool exchange = r->exchange_event && store_token_set_lasts(x, &value, r);
    if (exchange) {
        cx_kv_t attrs[] = {{"secret_id", b.secret_id}, {"version", ver}};
        if (!store_audit_exchange(x, r->exchange_event, attrs, 2, err))
            goto out;
    } else {
        cx_kv_t attrs[] = {{"version", ver}, {"kind", b.kind}};
        if (!store_audit(x, "secret.retrieved", CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_SUCCESS,
                         CX_OK, attrs, 2, err))
            goto out;
    }
    Credex__V1__StoreResolveResponse *resp = rpc_arena_alloc(x->arena, sizeof(*resp));
    credex__v1__store_resolve_response__init(resp);
    resp->secret_id = ref.meta->secret_id;
    resp->version = ref.meta->current_version;
    resp->kind = ref.meta->kind;
    resp->owner = ref.meta->owner;
    resp->provider = ref.meta->provider;
    resp->connector_id = ref.meta->connector_id;
    resp->value = value; /* in the call arena, wiped when the call ends (rpc_arena_free) */
    resp->exchange_recorded = exchange;
    *reply = &resp->base;
    ok = true;
out:
    if (!ok && value.data) /* opened, then refused (no audit record): not a moment longer */
        cx_crypto_wipe(value.data, value.len);
    return ok;
}

bool store_resolve(store_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                   cx_error_t *err)
{
    const Credex__V1__StoreResolveRequest *r = (const Credex__V1__StoreResolveRequest *)request;
    if (store_resolve_once(x, r, true, reply, err))
        return true;
    /* Cached metadata may be behind a change made elsewhere (a delete through another replica
     * removes the payloads it still points at): only the database may call the secret
     * damaged. Nothing was audited or sent yet. */
    if (!x->ref_cached || err->code != CX_ERR_INTEGRITY)
        return false;
    mdb_cache_evict(x->st->meta, x->secret_id);
    cx_log_warn(rpc_call_correlation_id(x->call), "store.metadata_cache_retry",
                CX_LOG_STR("secret_id", x->secret_id),
                CX_LOG_STR("reason", cx_code_reason(err->code)));
    cx_error_clear(err);
    return store_resolve_once(x, r, false, reply, err);
}
