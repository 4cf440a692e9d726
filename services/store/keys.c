/* store keys: data keys from keywrap (GenerateDataKey, Unwrap) over mTLS. The plaintext key
 * in a reply (call arena) is copied into a cx_secret_t and wiped at once, so it lives in one
 * place only. The call is made with the store call as parent: keywrap inherits its deadline,
 * which is how "keywrap down -> unavailable within the deadline" holds. */
#include <string.h>

#include "credex/v1/keywrap.pb-c.h"
#include "services/store/store_internal.h"

static cx_secret_t *store_keys_take(ProtobufCBinaryData *k, cx_error_t *err)
{
    cx_secret_t *dek = NULL;
    if (k->len == CX_AES_KEY_LEN && k->data)
        dek = cx_secret_from(k->data, k->len);
    if (k->data)
        cx_crypto_wipe(k->data, k->len);
    if (!dek)
        cx_error_set(err, CX_ERR_INTERNAL, "keywrap returned a data key of the wrong size");
    return dek;
}

static bool store_keys_fail(cx_error_t *err)
{
    /* A deadline spent waiting on keywrap is an outage as far as our caller is concerned. */
    if (err && (err->code == CX_ERR_DEADLINE_EXCEEDED || err->code == CX_ERR_CANCELLED ||
                err->code == CX_ERR_UNIMPLEMENTED))
        err->code = CX_ERR_UNAVAILABLE;
    return false;
}

/* protobuf-c gives each keywrap request its own map-entry type; all have the same two string
 * fields (key = 1, value = 2), so one builder fills any of them through the entry descriptor.
 * The strings are borrowed from pairs, not copied. */
static void **store_context_entries(rpc_arena_t *arena, const ProtobufCMessageDescriptor *d,
                                    const cx_kv_t *pairs, size_t n)
{
    void **ptrs = rpc_arena_alloc(arena, n * sizeof(*ptrs));
    for (size_t i = 0; i < n; i++) {
        char *m = rpc_arena_alloc(arena, d->sizeof_message);
        protobuf_c_message_init(d, m);
        *(const char **)(m + d->fields[0].offset) = pairs[i].key;
        *(const char **)(m + d->fields[1].offset) = pairs[i].value;
        ptrs[i] = m;
    }
    return ptrs;
}

static bool store_keys_generate(void *ctx, rpc_call_t *call, const cx_kv_t *pairs, size_t n,
                                cx_secret_t **dek, store_wrapped_t *wrapped, cx_error_t *err)
{
    rpc_arena_t *arena = rpc_call_arena(call);
    Credex__V1__GenerateDataKeyRequest req = CREDEX__V1__GENERATE_DATA_KEY_REQUEST__INIT;
    req.n_encryption_context = n;
    req.encryption_context =
        (Credex__V1__GenerateDataKeyRequest__EncryptionContextEntry **)store_context_entries(
            arena, &credex__v1__generate_data_key_request__encryption_context_entry__descriptor,
            pairs, n);
    ProtobufCMessage *reply = NULL;
    rpc_call_options_t opts = {.parent = call};
    if (!rpc_client_unary((rpc_client_t *)ctx, &credex__v1__key_wrap__descriptor, "GenerateDataKey",
                          &req.base, &opts, arena, &reply, err))
        return store_keys_fail(err);
    Credex__V1__GenerateDataKeyResponse *r = (Credex__V1__GenerateDataKeyResponse *)reply;
    cx_secret_t *k = store_keys_take(&r->plaintext_data_key, err);
    if (!k)
        return false;
    if (!r->wrapped_key || r->wrapped_key->ciphertext.len == 0 ||
        r->wrapped_key->ciphertext.len > STORE_WRAPPED_MAX ||
        !store_key_provider_name(r->wrapped_key->key_provider) ||
        strlen(r->wrapped_key->key_id) == 0 || strlen(r->wrapped_key->key_id) > STORE_KEY_ID_MAX ||
        strlen(r->wrapped_key->key_version) > STORE_KEY_VERSION_MAX) {
        cx_secret_free(k);
        return cx_error_set(err, CX_ERR_INTERNAL, "keywrap returned a malformed wrapped key");
    }
    wrapped->ct = r->wrapped_key->ciphertext.data;
    wrapped->ct_len = r->wrapped_key->ciphertext.len;
    wrapped->provider = r->wrapped_key->key_provider;
    wrapped->key_id = r->wrapped_key->key_id;
    wrapped->key_version = r->wrapped_key->key_version;
    *dek = k;
    return true;
}

static bool store_keys_unwrap(void *ctx, rpc_call_t *call, const store_wrapped_t *w,
                              const cx_kv_t *pairs, size_t n, cx_secret_t **dek, cx_error_t *err)
{
    rpc_arena_t *arena = rpc_call_arena(call);
    Credex__V1__UnwrapRequest req = CREDEX__V1__UNWRAP_REQUEST__INIT;
    Credex__V1__WrappedKey wk = CREDEX__V1__WRAPPED_KEY__INIT;
    wk.ciphertext.data = (uint8_t *)w->ct;
    wk.ciphertext.len = w->ct_len;
    wk.key_provider = w->provider;
    wk.key_id = (char *)w->key_id;
    wk.key_version = (char *)w->key_version;
    req.wrapped_key = &wk;
    req.n_encryption_context = n;
    req.encryption_context =
        (Credex__V1__UnwrapRequest__EncryptionContextEntry **)store_context_entries(
            arena, &credex__v1__unwrap_request__encryption_context_entry__descriptor, pairs, n);
    ProtobufCMessage *reply = NULL;
    rpc_call_options_t opts = {.parent = call};
    if (!rpc_client_unary((rpc_client_t *)ctx, &credex__v1__key_wrap__descriptor, "Unwrap",
                          &req.base, &opts, arena, &reply, err)) {
        /* A wrapped key keywrap does not know is as bad as a tampered one, seen from here. */
        if (err && err->code == CX_ERR_NOT_FOUND)
            err->code = CX_ERR_INTEGRITY;
        return store_keys_fail(err);
    }
    cx_secret_t *k =
        store_keys_take(&((Credex__V1__UnwrapResponse *)reply)->plaintext_data_key, err);
    if (!k)
        return false;
    *dek = k;
    return true;
}

store_keys_ops_t store_keys_keywrap(rpc_client_t *client)
{
    return (store_keys_ops_t){
        .generate = store_keys_generate, .unwrap = store_keys_unwrap, .ctx = client};
}
