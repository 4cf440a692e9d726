/* keywrap: credex.v1.KeyWrap with the local-cmk and aws-kms providers (see keywrap.h,
 * docs/ENVELOPE.md, docs/KMS.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log/cx_log.h"
#include "credex/v1/keywrap.pb-c.h"
#include "services/keywrap/keywrap.h"
#include "services/keywrap/keywrap_aws.h"
#include "services/keywrap/keywrap_local.h"

#define KEYWRAP_SERVICE     "credex.v1.KeyWrap"
#define KEYWRAP_AAD_PREFIX  "credex-keywrap-v1"
#define KEYWRAP_KEY_VERSION "1"
#define KEYWRAP_RETIRED_NOTE                                                                       \
    "a retired local-cmk root is loaded (CREDEX_LOCAL_CMK_RETIRED_KEY_FILE) for a CMK rotation: "  \
    "run credexctl keys rewrap until it reports remaining 0, then unset the variable and restart " \
    "keywrap (docs/KEY_ROTATION.md)"
#define KEYWRAP_PRODUCTION_REFUSAL                                                                 \
    "local-cmk is a development key provider and is refused in production mode "                   \
    "(CREDEX_PRODUCTION=true); use CREDENTIAL_KEY_PROVIDER=aws-kms"

typedef struct keywrap {
    keywrap_aws_t *aws;     /* aws-kms: every key operation goes to KMS; NULL for local-cmk */
    keywrap_local_t *local; /* local-cmk roots; with aws-kms only a retired one, else NULL */
    char cmk_id[KEYWRAP_KEY_ID_MAX + 1];
    char configured_name[16];
    bool production;
} keywrap_t;

/* ---- wire format ------------------------------------------------------------------------ */

bool keywrap_blob_parse(const unsigned char *data, size_t len, keywrap_blob_t *out, cx_error_t *err)
{
    if (data == NULL || len != KEYWRAP_BLOB_LEN || data[0] != KEYWRAP_FORMAT_V1)
        return cx_error_set(err, CX_ERR_INTEGRITY,
                            "wrapped key: not a local-cmk v1 ciphertext (%d bytes, format 1)",
                            KEYWRAP_BLOB_LEN);
    out->nonce = data + 1;
    out->ct = data + 1 + CX_GCM_NONCE_LEN;
    out->tag = data + 1 + CX_GCM_NONCE_LEN + CX_AES_KEY_LEN;
    return true;
}

bool keywrap_context_aad(const cx_kv_t *pairs, size_t n, const char *key_id, unsigned char **aad,
                         size_t *aadlen, cx_error_t *err)
{
    unsigned char *canon = NULL, *buf = NULL;
    size_t canonlen = 0;

    if (n == 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "encryption_context must not be empty (at least secret_id, version, "
                            "owner and kind)");
    if (n > KEYWRAP_CONTEXT_MAX_PAIRS)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "encryption_context: more than %d entries", KEYWRAP_CONTEXT_MAX_PAIRS);
    for (size_t i = 0; i < n; i++) {
        if (pairs[i].key == NULL || pairs[i].value == NULL)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "encryption_context: missing key or value");
        size_t kl = strnlen(pairs[i].key, KEYWRAP_CONTEXT_MAX_KEY + 1);
        if (kl == 0 || kl > KEYWRAP_CONTEXT_MAX_KEY)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "encryption_context: a key must be 1..%d bytes",
                                KEYWRAP_CONTEXT_MAX_KEY);
        if (strnlen(pairs[i].value, KEYWRAP_CONTEXT_MAX_VALUE + 1) > KEYWRAP_CONTEXT_MAX_VALUE)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "encryption_context: a value exceeds %d bytes",
                                KEYWRAP_CONTEXT_MAX_VALUE);
    }
    size_t idlen = key_id != NULL ? strnlen(key_id, KEYWRAP_KEY_ID_MAX + 1) : 0;
    if (idlen == 0 || idlen > KEYWRAP_KEY_ID_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "key_id must be 1..%d bytes",
                            KEYWRAP_KEY_ID_MAX);
    if (!cx_crypto_context_encode(pairs, n, &canon, &canonlen, err))
        return false;
    /* key_id is length-prefixed like every context field, so the associated data parses one
     * way only: no context and key id can be shifted into another pair with the same bytes. */
    size_t plen = sizeof(KEYWRAP_AAD_PREFIX) - 1;
    size_t total = plen + canonlen + 4 + idlen;
    buf = malloc(total);
    if (buf == NULL) {
        free(canon);
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    }
    unsigned char *p = buf;
    memcpy(p, KEYWRAP_AAD_PREFIX, plen);
    p += plen;
    if (canonlen > 0)
        memcpy(p, canon, canonlen);
    p += canonlen;
    p[0] = (unsigned char)(idlen >> 24);
    p[1] = (unsigned char)(idlen >> 16);
    p[2] = (unsigned char)(idlen >> 8);
    p[3] = (unsigned char)idlen;
    memcpy(p + 4, key_id, idlen);
    free(canon);
    *aad = buf;
    *aadlen = total;
    return true;
}

/* ---- handlers' helpers ------------------------------------------------------------------ */

static int64_t keywrap_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One line per operation: what, which CMK, which local root opened a local-cmk key (so an
 * operator sees when the retired root is no longer used), how many context keys, and the
 * outcome. Never key bytes and never context values (they name secrets and owners). */
static void keywrap_log(rpc_call_t *call, const char *op, const char *key_id,
                        const char *from_key_id, const char *root, size_t nctx, bool ok,
                        const cx_error_t *err)
{
    const char *outcome = ok ? "ok" : cx_code_reason(err != NULL ? err->code : CX_ERR_INTERNAL);
    cx_log_at(ok ? CX_LOG_INFO : CX_LOG_WARN, rpc_call_correlation_id(call), "keywrap.op",
              CX_LOG_STR("op", op), CX_LOG_STR("peer", rpc_call_peer(call)),
              CX_LOG_STR("key_id", key_id), CX_LOG_STR("from_key_id", from_key_id),
              CX_LOG_STR("root", root), CX_LOG_INT("context_keys", nctx),
              CX_LOG_STR("outcome", outcome));
}

static bool keywrap_usable(const keywrap_t *kw, cx_error_t *err)
{
    if (kw == NULL)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "keywrap is not configured");
    if (kw->production && kw->aws == NULL)
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "%s", KEYWRAP_PRODUCTION_REFUSAL);
    return true;
}

/* ---- aws-kms ---------------------------------------------------------------------------- */

/* The context is checked with the same rules as local-cmk's associated data (and key_id with
 * it), before anything reaches KMS. */
static bool keywrap_aws_context_ok(const cx_kv_t *ctx, size_t n, const char *key_id,
                                   cx_error_t *err)
{
    unsigned char *aad = NULL;
    size_t aadlen = 0;
    if (!keywrap_context_aad(ctx, n, key_id, &aad, &aadlen, err))
        return false;
    free(aad);
    return true;
}

static Credex__V1__WrappedKey *keywrap_aws_reply_wk(rpc_call_t *call,
                                                    const keywrap_aws_wrapped_t *w)
{
    Credex__V1__WrappedKey *wk = rpc_call_alloc(call, sizeof(*wk));
    credex__v1__wrapped_key__init(wk);
    wk->ciphertext.data = rpc_call_alloc(call, w->len);
    memcpy(wk->ciphertext.data, w->blob, w->len);
    wk->ciphertext.len = w->len;
    wk->key_provider = CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_AWS_KMS;
    wk->key_id = rpc_arena_strndup(rpc_call_arena(call), w->key_id, strlen(w->key_id));
    wk->key_version = ""; /* KMS keeps its key versions inside the ciphertext */
    return wk;
}

/* ---- stored keys: unwrapped from any readable key, wrapped under the current one --------- */

/* What every stored WrappedKey needs before a provider looks at it. */
static bool keywrap_wk_ok(const Credex__V1__WrappedKey *wk, cx_error_t *err)
{
    if (wk == NULL || wk->ciphertext.len == 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "wrapped_key is required");
    if (wk->key_provider == CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_UNSPECIFIED)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "wrapped_key.key_provider is required");
    return true;
}

/* A stored aws-kms WrappedKey KMS can be asked about: no version, context and key id within
 * the limits. */
static bool keywrap_aws_wk_ok(const Credex__V1__WrappedKey *wk, const cx_kv_t *ctx, size_t n,
                              cx_error_t *err)
{
    if (!keywrap_wk_ok(wk, err))
        return false;
    if (wk->key_version != NULL && wk->key_version[0] != '\0')
        return cx_error_set(err, CX_ERR_NOT_FOUND,
                            "wrapped_key.key_version: aws-kms keys have no visible version");
    return keywrap_aws_context_ok(ctx, n, wk->key_id, err);
}

/* Wrap dek under the current CMK with the given context into a WrappedKey in the call arena:
 * KMS Encrypt for aws-kms (a key that comes from a retired local root), the current root's
 * KEK for local-cmk. */
static Credex__V1__WrappedKey *keywrap_wrap(rpc_call_t *call, const keywrap_t *kw,
                                            const cx_secret_t *dek, const cx_kv_t *ctx, size_t nctx,
                                            cx_error_t *err)
{
    if (kw->aws != NULL) {
        keywrap_aws_wrapped_t w;
        if (!keywrap_aws_context_ok(ctx, nctx, kw->cmk_id, err) ||
            !keywrap_aws_encrypt(kw->aws, dek, ctx, nctx, &w, err))
            return NULL;
        return keywrap_aws_reply_wk(call, &w);
    }
    unsigned char *blob = rpc_call_alloc(call, KEYWRAP_BLOB_LEN);
    if (!keywrap_local_wrap(kw->local, dek, ctx, nctx, blob, err))
        return NULL;
    Credex__V1__WrappedKey *wk = rpc_call_alloc(call, sizeof(*wk));
    credex__v1__wrapped_key__init(wk);
    wk->ciphertext.data = blob;
    wk->ciphertext.len = KEYWRAP_BLOB_LEN;
    wk->key_provider = CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_LOCAL_CMK;
    wk->key_id = rpc_arena_strndup(rpc_call_arena(call), kw->cmk_id, strlen(kw->cmk_id));
    wk->key_version = rpc_arena_strndup(rpc_call_arena(call), KEYWRAP_KEY_VERSION,
                                        sizeof(KEYWRAP_KEY_VERSION) - 1);
    return wk;
}

/* Unwrap a stored key with whatever here may read it: KMS for an aws-kms key (provider aws-kms
 * only); for a local-cmk key the readable roots (keywrap_local.h): the current root with the
 * KEK of wk->key_id, so keys wrapped before a CMK id change still open, then a retired root.
 * *root: the local root that opened it, NULL for KMS. The data key, or NULL: INVALID_ARGUMENT
 * for a missing or oversized field, FAILED_PRECONDITION for a key nothing here can read,
 * NOT_FOUND for an unknown key version, INTEGRITY for anything that does not authenticate. */
static cx_secret_t *keywrap_unwrap(const keywrap_t *kw, const Credex__V1__WrappedKey *wk,
                                   const cx_kv_t *ctx, size_t nctx, const char **root,
                                   cx_error_t *err)
{
    *root = NULL;
    if (!keywrap_wk_ok(wk, err))
        return NULL;
    if (wk->key_provider == CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_AWS_KMS && kw->aws != NULL)
        return keywrap_aws_wk_ok(wk, ctx, nctx, err)
                   ? keywrap_aws_decrypt(kw->aws, wk->key_id, wk->ciphertext.data,
                                         wk->ciphertext.len, ctx, nctx, err)
                   : NULL;
    if (wk->key_provider != CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_LOCAL_CMK) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                     "wrapped_key was wrapped by another key provider than %s",
                     kw->aws != NULL ? "aws-kms" : "local-cmk");
        return NULL;
    }
    if (kw->local == NULL) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                     "wrapped_key was wrapped by local-cmk: aws-kms reads such keys only with "
                     "their root as CREDEX_LOCAL_CMK_RETIRED_KEY_FILE (a CMK rotation)");
        return NULL;
    }
    if (wk->key_version == NULL || strcmp(wk->key_version, KEYWRAP_KEY_VERSION) != 0) {
        cx_error_set(err, CX_ERR_NOT_FOUND,
                     "wrapped_key.key_version: local-cmk has only "
                     "version " KEYWRAP_KEY_VERSION);
        return NULL;
    }
    return keywrap_local_unwrap(kw->local, wk->key_id, wk->ciphertext.data, wk->ciphertext.len, ctx,
                                nctx, root, err);
}

/* A copy of the data key in the call arena, which common/rpc wipes when the call ends. */
static void keywrap_reply_key(rpc_call_t *call, const cx_secret_t *dek, ProtobufCBinaryData *out)
{
    out->data = rpc_call_alloc(call, cx_secret_len(dek));
    memcpy(out->data, cx_secret_bytes(dek), cx_secret_len(dek));
    out->len = cx_secret_len(dek);
}

/* Too many entries is refused before anything else looks at them. */
static bool keywrap_context_count(size_t n, cx_error_t *err)
{
    if (n > KEYWRAP_CONTEXT_MAX_PAIRS)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "encryption_context: more than %d entries", KEYWRAP_CONTEXT_MAX_PAIRS);
    return true;
}

/* protobuf-c gives each request its own map-entry type; all three have the same two string
 * fields (key = 1, value = 2), read here through the entry's descriptor, so one function
 * serves GenerateDataKey, Unwrap and Rewrap. */
static bool keywrap_context_of(size_t nentries, void *const *entries,
                               cx_kv_t kv[KEYWRAP_CONTEXT_MAX_PAIRS], size_t *n, cx_error_t *err)
{
    if (!keywrap_context_count(nentries, err))
        return false;
    for (size_t i = 0; i < nentries; i++) {
        const ProtobufCMessage *m = entries[i];
        const ProtobufCMessageDescriptor *d = m->descriptor;
        if (d->n_fields != 2 || d->fields[0].type != PROTOBUF_C_TYPE_STRING ||
            d->fields[1].type != PROTOBUF_C_TYPE_STRING)
            return cx_error_set(err, CX_ERR_INTERNAL, "encryption_context: not a string map");
        const char *base = (const char *)m;
        kv[i] = (cx_kv_t){*(char *const *)(base + d->fields[0].offset),
                          *(char *const *)(base + d->fields[1].offset)};
    }
    *n = nentries;
    return true;
}

/* ---- handlers --------------------------------------------------------------------------- */

static bool keywrap_generate(rpc_call_t *call, const ProtobufCMessage *request,
                             ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__GenerateDataKeyRequest *req =
        (const Credex__V1__GenerateDataKeyRequest *)request;
    const keywrap_t *kw = rpc_call_context(call);
    cx_kv_t kv[KEYWRAP_CONTEXT_MAX_PAIRS];
    size_t n = 0;
    cx_secret_t *dek = NULL;
    bool ok = false;

    if (!keywrap_usable(kw, err))
        goto out;
    if (!keywrap_context_of(req->n_encryption_context, (void *const *)req->encryption_context, kv,
                            &n, err))
        goto out;
    Credex__V1__WrappedKey *wk = NULL;
    if (kw->aws != NULL) {
        keywrap_aws_wrapped_t w;
        if (!keywrap_aws_context_ok(kv, n, kw->cmk_id, err) ||
            !keywrap_aws_generate(kw->aws, kv, n, &dek, &w, err))
            goto out;
        wk = keywrap_aws_reply_wk(call, &w);
        goto reply;
    }
    dek = cx_secret_new(CX_AES_KEY_LEN);
    if (dek == NULL) {
        cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        goto out;
    }
    if (!cx_crypto_random(cx_secret_bytes_mut(dek), CX_AES_KEY_LEN, err))
        goto out;
    wk = keywrap_wrap(call, kw, dek, kv, n, err);
    if (wk == NULL)
        goto out;
reply:;
    Credex__V1__GenerateDataKeyResponse *r = rpc_call_alloc(call, sizeof(*r));
    credex__v1__generate_data_key_response__init(r);
    keywrap_reply_key(call, dek, &r->plaintext_data_key);
    r->wrapped_key = wk;
    *reply = &r->base;
    ok = true;
out:
    keywrap_log(call, "GenerateDataKey", kw != NULL ? kw->cmk_id : NULL, NULL, NULL, n, ok, err);
    cx_secret_free(dek);
    return ok;
}

static bool keywrap_unwrap_rpc(rpc_call_t *call, const ProtobufCMessage *request,
                               ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__UnwrapRequest *req = (const Credex__V1__UnwrapRequest *)request;
    const keywrap_t *kw = rpc_call_context(call);
    cx_kv_t kv[KEYWRAP_CONTEXT_MAX_PAIRS];
    size_t n = 0;
    cx_secret_t *dek = NULL;
    const char *root = NULL;
    bool ok = false;

    if (!keywrap_usable(kw, err))
        goto out;
    if (!keywrap_context_of(req->n_encryption_context, (void *const *)req->encryption_context, kv,
                            &n, err))
        goto out;
    dek = keywrap_unwrap(kw, req->wrapped_key, kv, n, &root, err);
    if (dek == NULL)
        goto out;
    Credex__V1__UnwrapResponse *r = rpc_call_alloc(call, sizeof(*r));
    credex__v1__unwrap_response__init(r);
    keywrap_reply_key(call, dek, &r->plaintext_data_key);
    *reply = &r->base;
    ok = true;
out:
    keywrap_log(call, "Unwrap", req->wrapped_key != NULL ? req->wrapped_key->key_id : NULL, NULL,
                root, n, ok, err);
    cx_secret_free(dek);
    return ok;
}

static bool keywrap_rewrap(rpc_call_t *call, const ProtobufCMessage *request,
                           ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__RewrapRequest *req = (const Credex__V1__RewrapRequest *)request;
    const keywrap_t *kw = rpc_call_context(call);
    cx_kv_t kv[KEYWRAP_CONTEXT_MAX_PAIRS];
    size_t n = 0;
    cx_secret_t *dek = NULL;
    const char *root = NULL;
    bool ok = false;

    if (!keywrap_usable(kw, err))
        goto out;
    if (!keywrap_context_of(req->n_encryption_context, (void *const *)req->encryption_context, kv,
                            &n, err))
        goto out;
    const Credex__V1__WrappedKey *in = req->wrapped_key;
    Credex__V1__WrappedKey *wk = NULL;
    if (kw->aws != NULL && in != NULL &&
        in->key_provider == CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_AWS_KMS) {
        /* Inside KMS: the data key never comes out in plaintext. */
        keywrap_aws_wrapped_t w;
        if (!keywrap_aws_wk_ok(in, kv, n, err) ||
            !keywrap_aws_reencrypt(kw->aws, in->key_id, in->ciphertext.data, in->ciphertext.len, kv,
                                   n, &w, err))
            goto out;
        wk = keywrap_aws_reply_wk(call, &w);
    } else {
        /* A local-cmk key, to either provider: the data key exists in plaintext only here,
         * between the two operations, and is wiped below. */
        dek = keywrap_unwrap(kw, in, kv, n, &root, err);
        if (dek == NULL)
            goto out;
        wk = keywrap_wrap(call, kw, dek, kv, n, err);
        if (wk == NULL)
            goto out;
    }
    Credex__V1__RewrapResponse *r = rpc_call_alloc(call, sizeof(*r));
    credex__v1__rewrap_response__init(r);
    r->wrapped_key = wk;
    *reply = &r->base;
    ok = true;
out:
    keywrap_log(call, "Rewrap", kw != NULL ? kw->cmk_id : NULL,
                req->wrapped_key != NULL ? req->wrapped_key->key_id : NULL, root, n, ok, err);
    cx_secret_free(dek);
    return ok;
}

static bool keywrap_describe(rpc_call_t *call, const ProtobufCMessage *request,
                             ProtobufCMessage **reply, cx_error_t *err)
{
    (void)request;
    const keywrap_t *kw = rpc_call_context(call);
    if (kw == NULL)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "keywrap is not configured");
    Credex__V1__DescribeResponse *r = rpc_call_alloc(call, sizeof(*r));
    credex__v1__describe_response__init(r);
    rpc_arena_t *a = rpc_call_arena(call);
    r->key_provider = CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_LOCAL_CMK;
    r->configured_name = rpc_arena_strndup(a, kw->configured_name, strlen(kw->configured_name));
    r->key_id = rpc_arena_strndup(a, kw->cmk_id, strlen(kw->cmk_id));
    r->key_version = rpc_arena_strndup(a, KEYWRAP_KEY_VERSION, sizeof(KEYWRAP_KEY_VERSION) - 1);
    r->production_mode = kw->production;
    r->retired_local_cmk = keywrap_local_has_retired(kw->local);
    if (kw->aws != NULL) {
        keywrap_aws_health_t h;
        keywrap_aws_describe(kw->aws, &h);
        r->key_provider = CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_AWS_KMS;
        if (h.key_arn[0] != '\0')
            r->key_id = rpc_arena_strndup(a, h.key_arn, strlen(h.key_arn));
        r->key_version = "";
        r->region =
            rpc_arena_strndup(a, keywrap_aws_region(kw->aws), strlen(keywrap_aws_region(kw->aws)));
        r->healthy = h.healthy;
        r->reason = rpc_arena_strndup(a, h.reason, strlen(h.reason));
        r->detail = rpc_arena_strndup(a, h.detail, strlen(h.detail));
        r->checked_at_ms = h.checked_at_ms;
        *reply = &r->base;
        keywrap_log(call, "Describe", kw->cmk_id, NULL, NULL, 0, true, NULL);
        return true;
    }
    r->dev_key_mode = true;
    r->healthy = !kw->production;
    if (kw->production) {
        r->reason = (char *)cx_code_reason(CX_ERR_FAILED_PRECONDITION);
        r->detail = KEYWRAP_PRODUCTION_REFUSAL;
    } else {
        r->detail = "local-cmk development key provider: never for production data";
    }
    r->checked_at_ms = keywrap_now_ms();
    *reply = &r->base;
    keywrap_log(call, "Describe", kw->cmk_id, NULL, NULL, 0, true, NULL);
    return true;
}

/* ---- registration ----------------------------------------------------------------------- */

static const char *const store_only[] = {"store", NULL};
/* gateway asks Describe for the credential health report (key wrapper status). */
static const char *const describe_peers[] = {"store", "gateway", NULL};

static const rpc_method_impl_t keywrap_impls[] = {
    {.method = "GenerateDataKey", .kind = RPC_UNARY, .unary = keywrap_generate},
    {.method = "Unwrap", .kind = RPC_UNARY, .unary = keywrap_unwrap_rpc},
    {.method = "Rewrap", .kind = RPC_UNARY, .unary = keywrap_rewrap},
    {.method = "Describe",
     .kind = RPC_UNARY,
     .unary = keywrap_describe,
     .allowed_peers = describe_peers},
};

static void keywrap_free(keywrap_t *kw)
{
    if (kw == NULL)
        return;
    keywrap_aws_free(kw->aws);
    keywrap_local_free(kw->local);
    cx_crypto_wipe(kw, sizeof(*kw));
    free(kw);
}

/* aws-kms: nothing is read from disk and nothing is sent to AWS at start-up, so a KMS outage
 * does not stop keywrap starting; every call fails closed until KMS answers. */
static bool keywrap_setup_aws(rpc_server_t *srv, const cx_config_t *cfg,
                              const rpc_service_def_t *def, void **state, cx_error_t *err)
{
    keywrap_aws_env_t env = keywrap_aws_env_from_process();
    keywrap_t *kw = calloc(1, sizeof(*kw));
    if (kw == NULL)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    kw->aws = keywrap_aws_new(cfg, &env, err);
    if (kw->aws == NULL)
        goto out_fail;
    snprintf(kw->cmk_id, sizeof(kw->cmk_id), "%s", keywrap_aws_cmk_id(kw->aws));
    snprintf(kw->configured_name, sizeof(kw->configured_name), "aws-kms");
    kw->production = cfg->production;
    /* The way off local-cmk: its old root stays readable until every key is rewrapped. */
    if (cfg->local_cmk_retired_key_file[0] != '\0') {
        kw->local = keywrap_local_new(NULL, NULL, cfg->local_cmk_retired_key_file, err);
        if (kw->local == NULL)
            goto out_fail;
    }
    if (!rpc_server_add_service(srv, def, err))
        goto out_fail;
    bool retired = keywrap_local_has_retired(kw->local);
    cx_log_info(NULL, "keywrap.ready", CX_LOG_STR("provider", kw->configured_name),
                CX_LOG_STR("key_id", kw->cmk_id), CX_LOG_STR("region", keywrap_aws_region(kw->aws)),
                CX_LOG_STR("credentials", keywrap_aws_credential_source(kw->aws)),
                CX_LOG_BOOL("dev_key_mode", false), CX_LOG_BOOL("retired_local_cmk", retired));
    /* Allowed in production (it is how production leaves local-cmk), but never meant to last. */
    if (retired && kw->production)
        cx_log_warn(NULL, "keywrap.retired_local_cmk", CX_LOG_STR("message", KEYWRAP_RETIRED_NOTE));
    *state = kw;
    return true;
out_fail:
    keywrap_free(kw);
    return false;
}

bool keywrap_setup_named(rpc_server_t *srv, const cx_config_t *cfg, const char *configured_name,
                         void **state, cx_error_t *err)
{
    keywrap_t *kw = NULL;
    static const rpc_service_def_t def = {
        .desc = &credex__v1__key_wrap__descriptor,
        .impls = keywrap_impls,
        .nimpls = sizeof(keywrap_impls) / sizeof(keywrap_impls[0]),
        .allowed_peers = store_only,
        .unimplemented_note = "planned: issue 4, keywrap local-cmk",
    };

    *state = NULL;
    /* Never a silent fallback to local-cmk: that would wrap production keys with a file. */
    if (cfg->key_provider == CX_KEY_PROVIDER_AWS_KMS)
        return keywrap_setup_aws(srv, cfg, &def, state, err);
    if (cfg->key_provider != CX_KEY_PROVIDER_LOCAL_CMK)
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                            "CREDENTIAL_KEY_PROVIDER: unknown provider");
    if (configured_name == NULL)
        configured_name = cfg->key_provider_name[0] ? cfg->key_provider_name : "local-cmk";
    if (strcmp(configured_name, "local-cmk") != 0 && strcmp(configured_name, "dev-local") != 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "CREDENTIAL_KEY_PROVIDER: expected local-cmk or dev-local");

    kw = calloc(1, sizeof(*kw));
    if (kw == NULL)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    kw->local = keywrap_local_new(cfg->local_cmk_key_file, cfg->kms_cmk_id,
                                  cfg->local_cmk_retired_key_file, err);
    if (kw->local == NULL)
        goto out_fail;
    snprintf(kw->cmk_id, sizeof(kw->cmk_id), "%s", cfg->kms_cmk_id);
    snprintf(kw->configured_name, sizeof(kw->configured_name), "%s", configured_name);
    kw->production = cfg->production;
    if (!rpc_server_add_service(srv, &def, err))
        goto out_fail;
    if (kw->production) {
        /* A dev key provider in production is never SERVING, not even between start and now. */
        rpc_server_set_serving(srv, KEYWRAP_SERVICE, false);
        rpc_server_set_serving(srv, "", false);
        cx_log_warn(NULL, "keywrap.refused", CX_LOG_STR("provider", kw->configured_name),
                    CX_LOG_STR("reason", cx_code_reason(CX_ERR_FAILED_PRECONDITION)),
                    CX_LOG_STR("message", KEYWRAP_PRODUCTION_REFUSAL));
    } else
        cx_log_info(NULL, "keywrap.ready", CX_LOG_STR("provider", kw->configured_name),
                    CX_LOG_STR("key_id", kw->cmk_id), CX_LOG_BOOL("dev_key_mode", true),
                    CX_LOG_BOOL("retired_local_cmk", keywrap_local_has_retired(kw->local)));
    *state = kw;
    return true;

out_fail:
    keywrap_free(kw);
    return false;
}

bool keywrap_setup(rpc_server_t *srv, const cx_config_t *cfg, void **state, cx_error_t *err)
{
    return keywrap_setup_named(srv, cfg, NULL, state, err);
}

void keywrap_cleanup(void *state)
{
    keywrap_t *kw = state;
    if (kw == NULL)
        return;
    keywrap_free(kw);
}
