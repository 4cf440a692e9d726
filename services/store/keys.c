/* store keys: data keys from keywrap (GenerateDataKey, Unwrap, Rewrap, Describe) over mTLS. The
 * plaintext key in a reply (call arena) is copied into a cx_secret_t and wiped at once, so it
 * lives in one place only; Rewrap's reply holds none. The call is made with the store call as
 * parent: keywrap inherits its deadline, which is how "keywrap down -> unavailable within the
 * deadline" holds. */
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

/* A wrapped key keywrap answered, checked against what a payload document may hold, into out
 * (pointing into the reply). */
static bool store_keys_answer(const Credex__V1__WrappedKey *wk, store_wrapped_t *out,
                              cx_error_t *err)
{
    if (!wk || wk->ciphertext.len == 0 || wk->ciphertext.len > STORE_WRAPPED_MAX ||
        !store_key_provider_name(wk->key_provider) || strlen(wk->key_id) == 0 ||
        strlen(wk->key_id) > STORE_KEY_ID_MAX || strlen(wk->key_version) > STORE_KEY_VERSION_MAX)
        return cx_error_set(err, CX_ERR_INTERNAL, "keywrap returned a malformed wrapped key");
    out->ct = wk->ciphertext.data;
    out->ct_len = wk->ciphertext.len;
    out->provider = wk->key_provider;
    out->key_id = wk->key_id;
    out->key_version = wk->key_version;
    return true;
}

/* The WrappedKey message of w (borrowing its bytes and strings). */
static void store_keys_message(const store_wrapped_t *w, Credex__V1__WrappedKey *wk)
{
    credex__v1__wrapped_key__init(wk);
    wk->ciphertext.data = (uint8_t *)w->ct;
    wk->ciphertext.len = w->ct_len;
    wk->key_provider = w->provider;
    wk->key_id = (char *)w->key_id;
    wk->key_version = (char *)w->key_version;
}

/* A call keywrap refused for the wrapped key it was given. */
static bool store_keys_refused(cx_error_t *err)
{
    /* A wrapped key keywrap does not know is as bad as a tampered one, seen from here. */
    if (err && err->code == CX_ERR_NOT_FOUND)
        err->code = CX_ERR_INTEGRITY;
    return store_keys_fail(err);
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
    if (!store_keys_answer(r->wrapped_key, wrapped, err)) {
        cx_secret_free(k);
        return false;
    }
    *dek = k;
    return true;
}

/* Unwrap and Rewrap take the same request (wrapped_key, encryption_context): one builder fills
 * either through its descriptor (d, and entry for its map entries) and calls method. */
static bool store_keys_call_wrapped(void *ctx, rpc_call_t *call, const char *method,
                                    const ProtobufCMessageDescriptor *d,
                                    const ProtobufCMessageDescriptor *entry,
                                    const store_wrapped_t *w, const cx_kv_t *pairs, size_t n,
                                    ProtobufCMessage **reply, cx_error_t *err)
{
    rpc_arena_t *arena = rpc_call_arena(call);
    char *req = rpc_arena_alloc(arena, d->sizeof_message);
    protobuf_c_message_init(d, req);
    Credex__V1__WrappedKey *wk = rpc_arena_alloc(arena, sizeof(*wk));
    store_keys_message(w, wk);
    const ProtobufCFieldDescriptor *fk =
        protobuf_c_message_descriptor_get_field_by_name(d, "wrapped_key");
    const ProtobufCFieldDescriptor *fc =
        protobuf_c_message_descriptor_get_field_by_name(d, "encryption_context");
    *(Credex__V1__WrappedKey **)(req + fk->offset) = wk;
    *(size_t *)(req + fc->quantifier_offset) = n;
    *(void ***)(req + fc->offset) = store_context_entries(arena, entry, pairs, n);
    rpc_call_options_t opts = {.parent = call};
    if (!rpc_client_unary((rpc_client_t *)ctx, &credex__v1__key_wrap__descriptor, method,
                          (const ProtobufCMessage *)req, &opts, arena, reply, err))
        return store_keys_refused(err);
    return true;
}

static bool store_keys_unwrap(void *ctx, rpc_call_t *call, const store_wrapped_t *w,
                              const cx_kv_t *pairs, size_t n, cx_secret_t **dek, cx_error_t *err)
{
    ProtobufCMessage *reply = NULL;
    if (!store_keys_call_wrapped(ctx, call, "Unwrap", &credex__v1__unwrap_request__descriptor,
                                 &credex__v1__unwrap_request__encryption_context_entry__descriptor,
                                 w, pairs, n, &reply, err))
        return false;
    cx_secret_t *k =
        store_keys_take(&((Credex__V1__UnwrapResponse *)reply)->plaintext_data_key, err);
    if (!k)
        return false;
    *dek = k;
    return true;
}

static bool store_keys_rewrap(void *ctx, rpc_call_t *call, const store_wrapped_t *w,
                              const cx_kv_t *pairs, size_t n, store_wrapped_t *out, cx_error_t *err)
{
    ProtobufCMessage *reply = NULL;
    if (!store_keys_call_wrapped(ctx, call, "Rewrap", &credex__v1__rewrap_request__descriptor,
                                 &credex__v1__rewrap_request__encryption_context_entry__descriptor,
                                 w, pairs, n, &reply, err))
        return false;
    return store_keys_answer(((Credex__V1__RewrapResponse *)reply)->wrapped_key, out, err);
}

static bool store_keys_describe(void *ctx, rpc_call_t *call, store_key_target_t *out,
                                cx_error_t *err)
{
    Credex__V1__DescribeRequest req = CREDEX__V1__DESCRIBE_REQUEST__INIT;
    ProtobufCMessage *reply = NULL;
    rpc_call_options_t opts = {.parent = call};
    if (!rpc_client_unary((rpc_client_t *)ctx, &credex__v1__key_wrap__descriptor, "Describe",
                          &req.base, &opts, rpc_call_arena(call), &reply, err))
        return store_keys_fail(err);
    const Credex__V1__DescribeResponse *r = (const Credex__V1__DescribeResponse *)reply;
    /* A CMK keywrap cannot use now is no target: nothing would move. Its reason is a code and
     * its detail a sentence about the provider, never key material (keywrap.proto). */
    if (!r->healthy)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "keywrap's current CMK is not usable: %s",
                            r->reason[0] ? r->reason : "unhealthy");
    size_t idlen = strlen(r->key_id);
    if (!store_key_provider_name(r->key_provider) || idlen == 0 || idlen > STORE_KEY_ID_MAX)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "keywrap did not name its current CMK");
    out->provider = r->key_provider;
    out->key_id = r->key_id;
    return true;
}

store_keys_ops_t store_keys_keywrap(rpc_client_t *client)
{
    return (store_keys_ops_t){.generate = store_keys_generate,
                              .unwrap = store_keys_unwrap,
                              .rewrap = store_keys_rewrap,
                              .describe = store_keys_describe,
                              .ctx = client};
}
