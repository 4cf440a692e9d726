/* store envelope: ids, encryption context/AAD, seal/open, the codec of stored payload
 * documents. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/store/store_internal.h"

static const char store_crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/* ---- enum names ------------------------------------------------------------------------ */

static const char *const store_owner_names[] = {NULL, "user", "team", "platform"};
static const char *const store_kind_names[] = {
    NULL, "api_key", "token", "password", "oauth_client_secret", "provider_token_set", "generic"};
static const char *const store_status_names[] = {NULL, "active", "revoked", "deleted"};
static const char *const store_provider_names[] = {NULL, "local-cmk", "aws-kms"};

#define STORE_NAME(tbl, v)                                                                         \
    ((unsigned)(v) < sizeof(tbl) / sizeof(tbl[0]) ? tbl[(unsigned)(v)] : NULL)

static int store_name_parse(const char *const *tbl, size_t n, const char *s)
{
    for (size_t i = 1; s && i < n; i++)
        if (strcmp(tbl[i], s) == 0)
            return (int)i;
    return 0;
}

const char *store_owner_type_name(Credex__V1__OwnerType t)
{
    return STORE_NAME(store_owner_names, t);
}
const char *store_kind_name(Credex__V1__SecretKind k)
{
    return STORE_NAME(store_kind_names, k);
}
const char *store_status_name(Credex__V1__SecretStatus s)
{
    return STORE_NAME(store_status_names, s);
}
const char *store_key_provider_name(Credex__V1__KeyProvider p)
{
    return STORE_NAME(store_provider_names, p);
}
Credex__V1__OwnerType store_owner_type_parse(const char *s)
{
    return (Credex__V1__OwnerType)store_name_parse(store_owner_names, 4, s);
}
Credex__V1__SecretKind store_kind_parse(const char *s)
{
    return (Credex__V1__SecretKind)store_name_parse(store_kind_names, 7, s);
}
Credex__V1__SecretStatus store_status_parse(const char *s)
{
    return (Credex__V1__SecretStatus)store_name_parse(store_status_names, 4, s);
}
Credex__V1__KeyProvider store_key_provider_parse(const char *s)
{
    return (Credex__V1__KeyProvider)store_name_parse(store_provider_names, 3, s);
}

/* ---- ids ------------------------------------------------------------------------------- */

/* 26 base32 digits from the first 130 bits of src (>= 17 bytes). */
static void store_base32_26(const unsigned char *src, char *out)
{
    for (unsigned i = 0; i < 26; i++) {
        unsigned bit = i * 5, v = 0;
        for (unsigned b = 0; b < 5; b++) {
            unsigned pos = bit + b;
            v = (v << 1) | ((src[pos / 8] >> (7 - pos % 8)) & 1u);
        }
        out[i] = store_crockford[v];
    }
    out[26] = '\0';
}

void store_secret_id_derive(const char *owner_type, const char *owner_id, const char *idem_key,
                            char out[STORE_ID_BUF])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    /* OpenSSL SHA-256 cannot fail short of out-of-memory, which aborts like the arena does. */
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) ||
        !EVP_DigestUpdate(ctx, owner_type, strlen(owner_type)) || !EVP_DigestUpdate(ctx, "|", 1) ||
        !EVP_DigestUpdate(ctx, owner_id, strlen(owner_id)) || !EVP_DigestUpdate(ctx, "|", 1) ||
        !EVP_DigestUpdate(ctx, idem_key, strlen(idem_key)) || !EVP_DigestFinal_ex(ctx, md, &mdlen))
        abort();
    EVP_MD_CTX_free(ctx);
    memcpy(out, "sec_", 4);
    store_base32_26(md, out + 4);
}

bool store_random_id(const char *prefix, char out[STORE_ID_BUF], cx_error_t *err)
{
    unsigned char rnd[17];
    if (strlen(prefix) != 4 || !cx_crypto_random(rnd, sizeof(rnd), err))
        return cx_error_set(err, CX_ERR_INTERNAL, "random id");
    memcpy(out, prefix, 4);
    store_base32_26(rnd, out + 4);
    return true;
}

bool store_id_valid(const char *s, const char *prefix)
{
    size_t pl = strlen(prefix);
    if (!s || strncmp(s, prefix, pl) != 0 || strlen(s) != pl + 26)
        return false;
    for (size_t i = pl; s[i]; i++)
        if (!strchr(store_crockford, s[i]))
            return false;
    return true;
}

/* ---- context and AAD ------------------------------------------------------------------- */

void store_bind_context(const store_bind_t *b, char verbuf[12], cx_kv_t pairs[STORE_CONTEXT_PAIRS])
{
    snprintf(verbuf, 12, "%u", b->version);
    pairs[0] = (cx_kv_t){"secret_id", b->secret_id};
    pairs[1] = (cx_kv_t){"version", verbuf};
    pairs[2] = (cx_kv_t){"owner_type", b->owner_type};
    pairs[3] = (cx_kv_t){"owner_id", b->owner_id};
    pairs[4] = (cx_kv_t){"kind", b->kind};
}

bool store_bind_aad(const store_bind_t *b, unsigned char **aad, size_t *aadlen, cx_error_t *err)
{
    char ver[12];
    cx_kv_t pairs[STORE_CONTEXT_PAIRS + 2];
    store_bind_context(b, ver, pairs);
    pairs[STORE_CONTEXT_PAIRS] = (cx_kv_t){"payload_id", b->payload_id};
    pairs[STORE_CONTEXT_PAIRS + 1] = (cx_kv_t){"alg", STORE_ALG};
    return cx_crypto_context_encode(pairs, STORE_CONTEXT_PAIRS + 2, aad, aadlen, err);
}

void store_dek_cache_key(const store_bind_t *b, const uint8_t *wrapped, size_t wrapped_len,
                         const unsigned char *aad, size_t aadlen, unsigned char out[32])
{
    unsigned int mdlen = 0;
    uint32_t lens[2] = {(uint32_t)strlen(b->payload_id), (uint32_t)wrapped_len};
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    /* Lengths first so the three fields cannot slide into each other. */
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) ||
        !EVP_DigestUpdate(ctx, lens, sizeof(lens)) ||
        !EVP_DigestUpdate(ctx, b->payload_id, lens[0]) ||
        !EVP_DigestUpdate(ctx, wrapped, wrapped_len) || !EVP_DigestUpdate(ctx, aad, aadlen) ||
        !EVP_DigestFinal_ex(ctx, out, &mdlen))
        abort();
    EVP_MD_CTX_free(ctx);
}

/* ---- payload documents ----------------------------------------------------------------- */

static bool store_get_utf8(const bson_t *doc, const char *key, size_t maxlen, bool allow_empty,
                           const char **out)
{
    bson_iter_t it;
    uint32_t len = 0;
    if (!bson_iter_init_find(&it, doc, key) || !BSON_ITER_HOLDS_UTF8(&it))
        return false;
    const char *s = bson_iter_utf8(&it, &len);
    /* Embedded NULs would make the C string differ from what was authenticated. */
    if (len > maxlen || (!allow_empty && len == 0) || strlen(s) != len)
        return false;
    *out = s;
    return true;
}

static bool store_get_bin(const bson_t *doc, const char *key, uint32_t minlen, uint32_t maxlen,
                          const uint8_t **out, uint32_t *outlen)
{
    bson_iter_t it;
    bson_subtype_t st;
    if (!bson_iter_init_find(&it, doc, key) || !BSON_ITER_HOLDS_BINARY(&it))
        return false;
    bson_iter_binary(&it, &st, outlen, out);
    return st == BSON_SUBTYPE_BINARY && *outlen >= minlen && *outlen <= maxlen;
}

bool store_payload_decode(const bson_t *doc, store_payload_t *out, cx_error_t *err)
{
    store_payload_t p;
    bson_iter_t it;
    const char *alg = NULL, *prov = NULL;
    uint32_t nlen = 0, tlen = 0;
    memset(&p, 0, sizeof(p));
    if (!doc)
        goto bad;
    if (!store_get_utf8(doc, "payload_id", 64, false, &p.payload_id) ||
        !store_get_utf8(doc, "secret_id", 64, false, &p.secret_id) ||
        !store_get_utf8(doc, "alg", 32, false, &alg) || strcmp(alg, STORE_ALG) != 0 ||
        !store_get_utf8(doc, "key_provider", 32, false, &prov) ||
        !store_get_utf8(doc, "key_id", STORE_KEY_ID_MAX, false, &p.key_id) ||
        !store_get_utf8(doc, "key_version", STORE_KEY_VERSION_MAX, true, &p.key_version))
        goto bad;
    p.key_provider = store_key_provider_parse(prov);
    if (p.key_provider == CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_UNSPECIFIED)
        goto bad;
    if (!bson_iter_init_find(&it, doc, "version") ||
        !(BSON_ITER_HOLDS_INT32(&it) || BSON_ITER_HOLDS_INT64(&it)))
        goto bad;
    int64_t v = bson_iter_as_int64(&it);
    if (v < 1 || v > UINT32_MAX)
        goto bad;
    p.version = (uint32_t)v;
    if (!store_get_bin(doc, "wrapped_key", 1, STORE_WRAPPED_MAX, &p.wrapped, &p.wrapped_len) ||
        !store_get_bin(doc, "nonce", CX_GCM_NONCE_LEN, CX_GCM_NONCE_LEN, &p.nonce, &nlen) ||
        !store_get_bin(doc, "tag", CX_GCM_TAG_LEN, CX_GCM_TAG_LEN, &p.tag, &tlen) ||
        !store_get_bin(doc, "ciphertext", 1, STORE_VALUE_MAX, &p.ct, &p.ct_len))
        goto bad;
    if (bson_iter_init_find(&it, doc, "created_by") && BSON_ITER_HOLDS_UTF8(&it))
        p.created_by = bson_iter_utf8(&it, NULL);
    if (bson_iter_init_find(&it, doc, "created_at") && BSON_ITER_HOLDS_DATE_TIME(&it))
        p.created_at_ms = bson_iter_date_time(&it);
    *out = p;
    return true;
bad:
    return cx_error_set(err, CX_ERR_INTEGRITY, "stored payload is malformed");
}

void store_payload_encode(const store_payload_t *p, bson_t *out)
{
    bson_init(out);
    /* _id = payload_id: the hot lookups are by _id, which every MongoDB-wire backend serves
     * from its primary key (FerretDB's SQLite backend scans for secondary fields). */
    BSON_APPEND_UTF8(out, "_id", p->payload_id);
    BSON_APPEND_UTF8(out, "payload_id", p->payload_id);
    BSON_APPEND_UTF8(out, "secret_id", p->secret_id);
    BSON_APPEND_INT64(out, "version", p->version);
    BSON_APPEND_UTF8(out, "alg", STORE_ALG);
    BSON_APPEND_UTF8(out, "key_provider", store_key_provider_name(p->key_provider));
    BSON_APPEND_UTF8(out, "key_id", p->key_id);
    BSON_APPEND_UTF8(out, "key_version", p->key_version ? p->key_version : "");
    BSON_APPEND_BINARY(out, "wrapped_key", BSON_SUBTYPE_BINARY, p->wrapped, p->wrapped_len);
    BSON_APPEND_BINARY(out, "nonce", BSON_SUBTYPE_BINARY, p->nonce, CX_GCM_NONCE_LEN);
    BSON_APPEND_BINARY(out, "ciphertext", BSON_SUBTYPE_BINARY, p->ct, p->ct_len);
    BSON_APPEND_BINARY(out, "tag", BSON_SUBTYPE_BINARY, p->tag, CX_GCM_TAG_LEN);
    BSON_APPEND_UTF8(out, "created_by", p->created_by);
    BSON_APPEND_DATE_TIME(out, "created_at", p->created_at_ms);
}

static char *store_arena_str(rpc_arena_t *arena, const char *s)
{
    return rpc_arena_strndup(arena, s ? s : "", s ? strlen(s) : 0);
}

Credex__V1__VersionInfo *store_payload_version_info(rpc_arena_t *arena, const store_payload_t *p,
                                                    bool current)
{
    Credex__V1__VersionInfo *v = rpc_arena_alloc(arena, sizeof(*v));
    credex__v1__version_info__init(v);
    v->secret_id = store_arena_str(arena, p->secret_id);
    v->version = p->version;
    v->payload_id = store_arena_str(arena, p->payload_id);
    v->state = current ? CREDEX__V1__VERSION_STATE__VERSION_STATE_CURRENT
                       : CREDEX__V1__VERSION_STATE__VERSION_STATE_PREVIOUS;
    v->algorithm = STORE_ALG;
    v->key_provider = p->key_provider;
    v->key_id = store_arena_str(arena, p->key_id);
    v->key_version = store_arena_str(arena, p->key_version);
    v->created_by = store_arena_str(arena, p->created_by);
    v->created_at_ms = p->created_at_ms;
    return v;
}

bool store_envelope_seal(const cx_secret_t *dek, const store_bind_t *b, const unsigned char *plain,
                         size_t plen, unsigned char nonce[CX_GCM_NONCE_LEN], unsigned char *ct,
                         unsigned char tag[CX_GCM_TAG_LEN], cx_error_t *err)
{
    unsigned char *aad = NULL;
    size_t aadlen = 0;
    if (!store_bind_aad(b, &aad, &aadlen, err))
        return false;
    bool ok = cx_crypto_seal(dek, aad, aadlen, plain, plen, nonce, ct, tag, err);
    free(aad);
    return ok;
}

/* The document's own ids must agree with the metadata: a cheap, explicit swap check before the
 * AAD (built from the metadata) makes the cipher refuse it anyway. */
static bool store_envelope_ids_match(const store_bind_t *b, const store_payload_t *p,
                                     cx_error_t *err)
{
    if (strcmp(p->secret_id, b->secret_id) != 0 || strcmp(p->payload_id, b->payload_id) != 0 ||
        p->version != b->version)
        return cx_error_set(err, CX_ERR_INTEGRITY,
                            "payload does not belong to this secret version");
    return true;
}

bool store_envelope_open_to(const cx_secret_t *dek, const store_bind_t *b, const store_payload_t *p,
                            const unsigned char *aad, size_t aadlen, unsigned char *out,
                            cx_error_t *err)
{
    if (!store_envelope_ids_match(b, p, err))
        return false;
    if (!cx_crypto_open_to(dek, aad, aadlen, p->nonce, p->ct, p->ct_len, p->tag, out, err))
        return cx_error_set(err, CX_ERR_INTEGRITY, "payload failed authentication");
    return true;
}

cx_secret_t *store_envelope_open(const cx_secret_t *dek, const store_bind_t *b,
                                 const store_payload_t *p, cx_error_t *err)
{
    unsigned char *aad = NULL;
    size_t aadlen = 0;
    cx_secret_t *plain = NULL;
    if (!store_envelope_ids_match(b, p, err) || !store_bind_aad(b, &aad, &aadlen, err))
        return NULL;
    plain = cx_crypto_open(dek, aad, aadlen, p->nonce, p->ct, p->ct_len, p->tag, err);
    free(aad);
    if (!plain)
        cx_error_set(err, CX_ERR_INTEGRITY, "payload failed authentication");
    return plain;
}
