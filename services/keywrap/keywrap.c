/* keywrap: credex.v1.KeyWrap with the local-cmk and aws-kms providers (see keywrap.h,
 * docs/ENVELOPE.md, docs/KMS.md). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log/cx_log.h"
#include "credex/v1/keywrap.pb-c.h"
#include "services/keywrap/keywrap.h"
#include "services/keywrap/keywrap_aws.h"

#define KEYWRAP_SERVICE     "credex.v1.KeyWrap"
#define KEYWRAP_AAD_PREFIX  "credex-keywrap-v1"
#define KEYWRAP_HKDF_SALT   "credex-local-cmk"
#define KEYWRAP_HKDF_INFO   "credex local-cmk v1|"
#define KEYWRAP_KEY_VERSION "1"
#define KEYWRAP_PRODUCTION_REFUSAL                                                                 \
    "local-cmk is a development key provider and is refused in production mode "                   \
    "(CREDEX_PRODUCTION=true); use CREDENTIAL_KEY_PROVIDER=aws-kms"

typedef struct keywrap {
    keywrap_aws_t *aws; /* aws-kms: every key operation goes to KMS; NULL for local-cmk */
    cx_secret_t *root;  /* never encrypts anything itself: only derives KEKs */
    cx_secret_t *kek;   /* KEK of the current CMK id, derived once */
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

/* ---- keys ------------------------------------------------------------------------------- */

static cx_secret_t *keywrap_derive_kek(const cx_secret_t *root, const char *cmk_id, cx_error_t *err)
{
    char info[sizeof(KEYWRAP_HKDF_INFO) + KEYWRAP_KEY_ID_MAX];
    size_t ilen = sizeof(KEYWRAP_HKDF_INFO) - 1;
    size_t idlen = strnlen(cmk_id, KEYWRAP_KEY_ID_MAX + 1);
    if (idlen == 0 || idlen > KEYWRAP_KEY_ID_MAX) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "key_id must be 1..%d bytes",
                     KEYWRAP_KEY_ID_MAX);
        return NULL;
    }
    memcpy(info, KEYWRAP_HKDF_INFO, ilen);
    memcpy(info + ilen, cmk_id, idlen);
    return cx_crypto_hkdf_sha256(root, KEYWRAP_HKDF_SALT, sizeof(KEYWRAP_HKDF_SALT) - 1, info,
                                 ilen + idlen, CX_AES_KEY_LEN, err);
}

/* The root key file: 64 hex digits and an optional final newline, as scripts/lib/pki.sh writes
 * it. Anything else is refused rather than guessed at: a mis-read root key would silently
 * make every stored secret unreadable. Errors name the variable and the path, never content. */
static cx_secret_t *keywrap_load_root(const char *path, cx_error_t *err)
{
    enum { HEX_LEN = 2 * CX_AES_KEY_LEN };
    unsigned char buf[HEX_LEN + 2];
    unsigned char raw[CX_AES_KEY_LEN];
    cx_secret_t *root = NULL;
    struct stat st;
    size_t len = 0;
    int fd = -1;

    if (path == NULL || path[0] == '\0') {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                     "CREDEX_LOCAL_CMK_KEY_FILE is not set: the local-cmk key provider needs its "
                     "root key file (scripts/run creates .run/pki/local-cmk.key)");
        return NULL;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                     "CREDEX_LOCAL_CMK_KEY_FILE: cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                     "CREDEX_LOCAL_CMK_KEY_FILE: %s is not a regular file", path);
        goto out;
    }
    if ((st.st_mode & 077) != 0) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                     "CREDEX_LOCAL_CMK_KEY_FILE: %s is accessible by group or others (mode %04o); "
                     "it must be 0600 or stricter",
                     path, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, buf + len, sizeof(buf) - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                         "CREDEX_LOCAL_CMK_KEY_FILE: cannot read %s: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        len += (size_t)r;
        if (len == sizeof(buf))
            break; /* already too long to be a key file */
    }
    if (len == HEX_LEN + 1 && buf[HEX_LEN] == '\n')
        len = HEX_LEN;
    if (len != HEX_LEN ||
        !cx_crypto_hex_decode((const char *)buf, HEX_LEN, raw, sizeof(raw), NULL)) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                     "CREDEX_LOCAL_CMK_KEY_FILE: %s must hold exactly 32 bytes as 64 hex digits "
                     "(and an optional newline)",
                     path);
        goto out;
    }
    root = cx_secret_from(raw, sizeof(raw));
    if (root == NULL)
        cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
out:
    cx_crypto_wipe(buf, sizeof(buf));
    cx_crypto_wipe(raw, sizeof(raw));
    close(fd);
    return root;
}

/* ---- handlers' helpers ------------------------------------------------------------------ */

static int64_t keywrap_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One line per operation: what, which CMK, how many context keys, and the outcome. Never key
 * bytes and never context values (they name secrets and owners). */
static void keywrap_log(rpc_call_t *call, const char *op, const char *key_id,
                        const char *from_key_id, size_t nctx, bool ok, const cx_error_t *err)
{
    const char *outcome = ok ? "ok" : cx_code_reason(err != NULL ? err->code : CX_ERR_INTERNAL);
    cx_log_at(ok ? CX_LOG_INFO : CX_LOG_WARN, rpc_call_correlation_id(call), "keywrap.op",
              CX_LOG_STR("op", op), CX_LOG_STR("peer", rpc_call_peer(call)),
              CX_LOG_STR("key_id", key_id), CX_LOG_STR("from_key_id", from_key_id),
              CX_LOG_INT("context_keys", nctx), CX_LOG_STR("outcome", outcome));
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

/* A stored WrappedKey the aws-kms provider can hand to KMS: its own provider, no version. */
static bool keywrap_aws_wk_ok(const Credex__V1__WrappedKey *wk, const cx_kv_t *ctx, size_t n,
                              cx_error_t *err)
{
    if (wk == NULL || wk->ciphertext.len == 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "wrapped_key is required");
    if (wk->key_provider == CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_UNSPECIFIED)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "wrapped_key.key_provider is required");
    if (wk->key_provider != CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_AWS_KMS)
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                            "wrapped_key was wrapped by another key provider than aws-kms");
    if (wk->key_version != NULL && wk->key_version[0] != '\0')
        return cx_error_set(err, CX_ERR_NOT_FOUND,
                            "wrapped_key.key_version: aws-kms keys have no visible version");
    return keywrap_aws_context_ok(ctx, n, wk->key_id, err);
}

/* Wrap dek under the current CMK with the given context into a WrappedKey in the call arena. */
static Credex__V1__WrappedKey *keywrap_wrap(rpc_call_t *call, const keywrap_t *kw,
                                            const cx_secret_t *dek, const cx_kv_t *ctx, size_t nctx,
                                            cx_error_t *err)
{
    unsigned char *aad = NULL;
    size_t aadlen = 0;
    Credex__V1__WrappedKey *wk = NULL;

    if (!keywrap_context_aad(ctx, nctx, kw->cmk_id, &aad, &aadlen, err))
        return NULL;
    unsigned char *blob = rpc_call_alloc(call, KEYWRAP_BLOB_LEN);
    blob[0] = KEYWRAP_FORMAT_V1;
    if (!cx_crypto_seal(kw->kek, aad, aadlen, cx_secret_bytes(dek), cx_secret_len(dek), blob + 1,
                        blob + 1 + CX_GCM_NONCE_LEN, blob + 1 + CX_GCM_NONCE_LEN + CX_AES_KEY_LEN,
                        err))
        goto out;
    wk = rpc_call_alloc(call, sizeof(*wk));
    credex__v1__wrapped_key__init(wk);
    wk->ciphertext.data = blob;
    wk->ciphertext.len = KEYWRAP_BLOB_LEN;
    wk->key_provider = CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_LOCAL_CMK;
    wk->key_id = rpc_arena_strndup(rpc_call_arena(call), kw->cmk_id, strlen(kw->cmk_id));
    wk->key_version = rpc_arena_strndup(rpc_call_arena(call), KEYWRAP_KEY_VERSION,
                                        sizeof(KEYWRAP_KEY_VERSION) - 1);
out:
    free(aad);
    return wk;
}

/* Unwrap with the KEK of wk->key_id (any CMK id under the same root, so keys wrapped before a
 * CMK change still open). The data key, or NULL: INVALID_ARGUMENT for a missing or oversized
 * field, FAILED_PRECONDITION for another provider, NOT_FOUND for an unknown key version,
 * INTEGRITY for anything that does not authenticate. */
static cx_secret_t *keywrap_unwrap(const keywrap_t *kw, const Credex__V1__WrappedKey *wk,
                                   const cx_kv_t *ctx, size_t nctx, cx_error_t *err)
{
    keywrap_blob_t blob = {0};
    unsigned char *aad = NULL;
    size_t aadlen = 0;
    cx_secret_t *kek = NULL, *dek = NULL;

    if (kw->aws != NULL)
        return keywrap_aws_wk_ok(wk, ctx, nctx, err)
                   ? keywrap_aws_decrypt(kw->aws, wk->key_id, wk->ciphertext.data,
                                         wk->ciphertext.len, ctx, nctx, err)
                   : NULL;
    if (wk == NULL || wk->ciphertext.len == 0) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "wrapped_key is required");
        return NULL;
    }
    if (wk->key_provider == CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_UNSPECIFIED) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "wrapped_key.key_provider is required");
        return NULL;
    }
    if (wk->key_provider != CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_LOCAL_CMK) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                     "wrapped_key was wrapped by another key provider than local-cmk");
        return NULL;
    }
    if (wk->key_version == NULL || strcmp(wk->key_version, KEYWRAP_KEY_VERSION) != 0) {
        cx_error_set(err, CX_ERR_NOT_FOUND,
                     "wrapped_key.key_version: local-cmk has only "
                     "version " KEYWRAP_KEY_VERSION);
        return NULL;
    }
    /* Context and key id first: a malformed request is the caller's bug, not tampering. */
    if (!keywrap_context_aad(ctx, nctx, wk->key_id, &aad, &aadlen, err))
        return NULL;
    if (!keywrap_blob_parse(wk->ciphertext.data, wk->ciphertext.len, &blob, err))
        goto out;
    const cx_secret_t *use = kw->kek;
    if (strcmp(wk->key_id, kw->cmk_id) != 0) {
        kek = keywrap_derive_kek(kw->root, wk->key_id, err);
        if (kek == NULL)
            goto out;
        use = kek;
    }
    dek = cx_crypto_open(use, aad, aadlen, blob.nonce, blob.ct, CX_AES_KEY_LEN, blob.tag, err);
    if (dek == NULL && err != NULL && err->code == CX_ERR_INTEGRITY)
        cx_error_set(err, CX_ERR_INTEGRITY,
                     "wrapped key does not authenticate: tampered, swapped, or a different "
                     "encryption context or key id");
out:
    cx_secret_free(kek);
    free(aad);
    return dek;
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
    keywrap_log(call, "GenerateDataKey", kw != NULL ? kw->cmk_id : NULL, NULL, n, ok, err);
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
    bool ok = false;

    if (!keywrap_usable(kw, err))
        goto out;
    if (!keywrap_context_of(req->n_encryption_context, (void *const *)req->encryption_context, kv,
                            &n, err))
        goto out;
    dek = keywrap_unwrap(kw, req->wrapped_key, kv, n, err);
    if (dek == NULL)
        goto out;
    Credex__V1__UnwrapResponse *r = rpc_call_alloc(call, sizeof(*r));
    credex__v1__unwrap_response__init(r);
    keywrap_reply_key(call, dek, &r->plaintext_data_key);
    *reply = &r->base;
    ok = true;
out:
    keywrap_log(call, "Unwrap", req->wrapped_key != NULL ? req->wrapped_key->key_id : NULL, NULL, n,
                ok, err);
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
    bool ok = false;

    if (!keywrap_usable(kw, err))
        goto out;
    if (!keywrap_context_of(req->n_encryption_context, (void *const *)req->encryption_context, kv,
                            &n, err))
        goto out;
    Credex__V1__WrappedKey *wk = NULL;
    if (kw->aws != NULL) {
        /* Inside KMS: the data key never comes out in plaintext. */
        const Credex__V1__WrappedKey *in = req->wrapped_key;
        keywrap_aws_wrapped_t w;
        if (!keywrap_aws_wk_ok(in, kv, n, err) ||
            !keywrap_aws_reencrypt(kw->aws, in->key_id, in->ciphertext.data, in->ciphertext.len, kv,
                                   n, &w, err))
            goto out;
        wk = keywrap_aws_reply_wk(call, &w);
    } else {
        /* The data key exists in plaintext only here, between the two operations. */
        dek = keywrap_unwrap(kw, req->wrapped_key, kv, n, err);
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
                req->wrapped_key != NULL ? req->wrapped_key->key_id : NULL, n, ok, err);
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
        keywrap_log(call, "Describe", kw->cmk_id, NULL, 0, true, NULL);
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
    keywrap_log(call, "Describe", kw->cmk_id, NULL, 0, true, NULL);
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
    cx_secret_free(kw->root);
    cx_secret_free(kw->kek);
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
    if (!rpc_server_add_service(srv, def, err))
        goto out_fail;
    cx_log_info(NULL, "keywrap.ready", CX_LOG_STR("provider", kw->configured_name),
                CX_LOG_STR("key_id", kw->cmk_id), CX_LOG_STR("region", keywrap_aws_region(kw->aws)),
                CX_LOG_STR("credentials", keywrap_aws_credential_source(kw->aws)),
                CX_LOG_BOOL("dev_key_mode", false));
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
    size_t idlen = strnlen(cfg->kms_cmk_id, sizeof(cfg->kms_cmk_id));
    if (idlen == 0 || idlen > KEYWRAP_KEY_ID_MAX)
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                            "CREDENTIAL_KMS_CMK_ID must be 1..%d bytes for local-cmk",
                            KEYWRAP_KEY_ID_MAX);
    if (configured_name == NULL)
        configured_name = cfg->key_provider_name[0] ? cfg->key_provider_name : "local-cmk";
    if (strcmp(configured_name, "local-cmk") != 0 && strcmp(configured_name, "dev-local") != 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "CREDENTIAL_KEY_PROVIDER: expected local-cmk or dev-local");

    kw = calloc(1, sizeof(*kw));
    if (kw == NULL)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    memcpy(kw->cmk_id, cfg->kms_cmk_id, idlen);
    snprintf(kw->configured_name, sizeof(kw->configured_name), "%s", configured_name);
    kw->production = cfg->production;
    kw->root = keywrap_load_root(cfg->local_cmk_key_file, err);
    if (kw->root == NULL)
        goto out_fail;
    kw->kek = keywrap_derive_kek(kw->root, kw->cmk_id, err);
    if (kw->kek == NULL)
        goto out_fail;
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
                    CX_LOG_STR("key_id", kw->cmk_id), CX_LOG_BOOL("dev_key_mode", true));
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
