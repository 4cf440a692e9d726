/*
 * store keycheck: CheckDataKeys (store.proto), the key-material check of a backup's verify and
 * restore (docs/BACKUP_RESTORE.md). Each probe's data key is unwrapped by keywrap under the
 * encryption context rebuilt here from the probe's fields, exactly as Resolve rebuilds it from
 * a secret's metadata, and wiped at once. Nothing is decrypted and the database is not touched:
 * the question is only whether the key material this deployment uses is the one the keys were
 * wrapped under, which a backup can be asked before it is restored. The DEK cache is bypassed
 * on purpose: a cached key would answer for the material it came from, not for keywrap's.
 */
#include <string.h>

#include "common/log/cx_log.h"
#include "services/store/store_internal.h"

/* The probe's fields, or INVALID_ARGUMENT naming the field (never its value). */
static bool store_probe_bind(const Credex__V1__StoreDataKeyProbe *p, store_bind_t *b,
                             store_wrapped_t *w, cx_error_t *err)
{
    const Credex__V1__WrappedKey *k = p->wrapped_key;
    if (!store_validate_secret_id(p->secret_id, err) || !store_validate_owner(p->owner, err))
        return false;
    if (p->version == 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "version is required");
    if (!store_kind_name(p->kind))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "kind is required");
    if (!k || k->ciphertext.len == 0 || k->ciphertext.len > STORE_WRAPPED_MAX ||
        !store_key_provider_name(k->key_provider) || !k->key_id[0])
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "wrapped_key needs ciphertext, key_provider and key_id");
    *b = (store_bind_t){.secret_id = p->secret_id,
                        .version = p->version,
                        .owner_type = store_owner_type_name(p->owner->owner_type),
                        .owner_id = p->owner->owner_id,
                        .kind = store_kind_name(p->kind)};
    *w = (store_wrapped_t){.ct = k->ciphertext.data,
                           .ct_len = k->ciphertext.len,
                           .provider = k->key_provider,
                           .key_id = k->key_id,
                           .key_version = k->key_version};
    return true;
}

bool store_check_data_keys(store_ctx_t *x, const ProtobufCMessage *request,
                           ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__StoreCheckDataKeysRequest *r =
        (const Credex__V1__StoreCheckDataKeysRequest *)request;
    rpc_arena_t *a = x->arena;
    Credex__V1__StoreCheckDataKeysResponse *resp = rpc_arena_alloc(a, sizeof(*resp));
    credex__v1__store_check_data_keys_response__init(resp);
    resp->checks = rpc_arena_alloc(a, r->n_probes * sizeof(*resp->checks));
    size_t failed = 0;
    for (size_t i = 0; i < r->n_probes; i++) {
        const Credex__V1__StoreDataKeyProbe *p = r->probes[i];
        store_bind_t b;
        store_wrapped_t w;
        if (!store_probe_bind(p, &b, &w, err))
            return false;
        char ver[12];
        cx_kv_t pairs[STORE_CONTEXT_PAIRS];
        store_bind_context(&b, ver, pairs);
        cx_secret_t *dek = NULL;
        cx_error_t uerr = {0};
        bool ok = x->st->keys.unwrap(x->st->keys.ctx, x->call, &w, pairs, STORE_CONTEXT_PAIRS, &dek,
                                     &uerr);
        cx_secret_free(dek);
        /* keywrap out of reach says nothing about the key material: the whole call fails. */
        if (!ok && uerr.code == CX_ERR_UNAVAILABLE) {
            cx_error_copy(err, &uerr);
            return false;
        }
        Credex__V1__StoreDataKeyCheck *c = rpc_arena_alloc(a, sizeof(*c));
        credex__v1__store_data_key_check__init(c);
        c->secret_id = p->secret_id;
        c->version = p->version;
        c->ok = ok;
        c->reason = ok ? "" : (char *)cx_code_reason(uerr.code);
        failed += !ok;
        resp->checks[resp->n_checks++] = c;
    }
    cx_log_info(rpc_call_correlation_id(x->call), "store.data_keys_checked",
                CX_LOG_STR("peer", x->peer), CX_LOG_INT("probes", (int64_t)r->n_probes),
                CX_LOG_INT("failed", (int64_t)failed));
    *reply = &resp->base;
    return true;
}
