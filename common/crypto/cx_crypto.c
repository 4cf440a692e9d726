/* cx_crypto: secrets, AES-256-GCM, HKDF and encryption-context encoding over OpenSSL 3 EVP
 * (see cx_crypto.h). Library code: returns errors, never logs. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include "common/crypto/cx_crypto.h"

struct cx_secret {
    size_t len;
    size_t alloc; /* bytes malloc'd for the whole struct: what is locked and wiped */
    bool locked;
    unsigned char bytes[];
};

/* ---- secrets ---------------------------------------------------------------------------- */

void cx_crypto_wipe(void *p, size_t n)
{
    if (p != NULL && n > 0)
        OPENSSL_cleanse(p, n);
}

cx_secret_t *cx_secret_new(size_t len)
{
    if (len == 0 || len > CX_SECRET_MAX)
        return NULL;
    size_t alloc = sizeof(cx_secret_t) + len;
    cx_secret_t *s = calloc(1, alloc);
    if (s == NULL)
        return NULL;
    s->len = len;
    s->alloc = alloc;
    /* Best effort: RLIMIT_MEMLOCK may be tiny in containers. Swap is a leak we reduce, not one
     * we can rule out, so failing here would only make credex unusable where it is safe. */
    s->locked = mlock(s, alloc) == 0;
    return s;
}

cx_secret_t *cx_secret_from(const void *data, size_t len)
{
    if (data == NULL)
        return NULL;
    cx_secret_t *s = cx_secret_new(len);
    if (s != NULL)
        memcpy(s->bytes, data, len);
    return s;
}

void cx_secret_free(cx_secret_t *s)
{
    if (s == NULL)
        return;
    size_t alloc = s->alloc;
    bool locked = s->locked;
    cx_crypto_wipe(s, alloc);
    /* munlock is page-granular: it may unlock a page another live secret shares. That only
     * weakens the best-effort swap protection, never the wipe above. */
    if (locked)
        munlock(s, alloc);
    free(s);
}

size_t cx_secret_len(const cx_secret_t *s)
{
    return s != NULL ? s->len : 0;
}

const unsigned char *cx_secret_bytes(const cx_secret_t *s)
{
    return s != NULL ? s->bytes : NULL;
}

unsigned char *cx_secret_bytes_mut(cx_secret_t *s)
{
    return s != NULL ? s->bytes : NULL;
}

bool cx_secret_equal(const cx_secret_t *a, const cx_secret_t *b)
{
    if (a == NULL || b == NULL || a->len != b->len)
        return false;
    return CRYPTO_memcmp(a->bytes, b->bytes, a->len) == 0;
}

/* ---- randomness ------------------------------------------------------------------------- */

bool cx_crypto_random(void *buf, size_t len, cx_error_t *err)
{
    if (len == 0)
        return true;
    if (buf == NULL || len > INT_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "random: bad buffer");
    if (RAND_bytes(buf, (int)len) != 1)
        return cx_error_set(err, CX_ERR_INTERNAL, "random: the OpenSSL generator failed");
    return true;
}

/* ---- AES-256-GCM ------------------------------------------------------------------------ */

static bool cx_crypto_check_key(const cx_secret_t *key, cx_error_t *err)
{
    if (key == NULL || key->len != CX_AES_KEY_LEN)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "aes-256-gcm: the key must be %d bytes",
                            CX_AES_KEY_LEN);
    return true;
}

bool cx_crypto_seal(const cx_secret_t *key, const unsigned char *aad, size_t aadlen,
                    const unsigned char *plain, size_t plen,
                    unsigned char nonce_out[CX_GCM_NONCE_LEN], unsigned char *ct_out,
                    unsigned char tag_out[CX_GCM_TAG_LEN], cx_error_t *err)
{
    bool ok = false;
    EVP_CIPHER_CTX *ctx = NULL;
    unsigned char nonce[CX_GCM_NONCE_LEN];
    int n = 0;

    if (!cx_crypto_check_key(key, err))
        return false;
    if (plain == NULL || plen == 0 || plen > CX_SECRET_MAX || ct_out == NULL || nonce_out == NULL ||
        tag_out == NULL || (aad == NULL && aadlen > 0) || aadlen > INT_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "aes-256-gcm seal: bad arguments");
    /* A random 96-bit nonce: with one data key per secret version the number of messages per
     * key stays far below the 2^32 limit of SP 800-38D for random nonces. */
    if (!cx_crypto_random(nonce, sizeof(nonce), err))
        return false;
    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        goto out_openssl;
    if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, CX_GCM_NONCE_LEN, NULL) != 1 ||
        EVP_EncryptInit_ex(ctx, NULL, NULL, key->bytes, nonce) != 1)
        goto out_openssl;
    if (aadlen > 0 && EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aadlen) != 1)
        goto out_openssl;
    if (EVP_EncryptUpdate(ctx, ct_out, &n, plain, (int)plen) != 1 || (size_t)n != plen)
        goto out_openssl;
    if (EVP_EncryptFinal_ex(ctx, ct_out + n, &n) != 1 || n != 0)
        goto out_openssl;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, CX_GCM_TAG_LEN, tag_out) != 1)
        goto out_openssl;
    memcpy(nonce_out, nonce, sizeof(nonce));
    ok = true;
    goto out;

out_openssl:
    /* Never hand back a half-written ciphertext that a caller might store. */
    cx_crypto_wipe(ct_out, plen);
    cx_error_set(err, CX_ERR_INTERNAL, "aes-256-gcm seal failed in OpenSSL");
out:
    EVP_CIPHER_CTX_free(ctx);
    return ok;
}

bool cx_crypto_open_to(const cx_secret_t *key, const unsigned char *aad, size_t aadlen,
                       const unsigned char nonce[CX_GCM_NONCE_LEN], const unsigned char *ct,
                       size_t ctlen, const unsigned char tag[CX_GCM_TAG_LEN], unsigned char *out,
                       cx_error_t *err)
{
    EVP_CIPHER_CTX *ctx = NULL;
    unsigned char tagcopy[CX_GCM_TAG_LEN];
    int n = 0;

    if (!cx_crypto_check_key(key, err))
        return false;
    if (ct == NULL || ctlen == 0 || ctlen > CX_SECRET_MAX || nonce == NULL || tag == NULL ||
        out == NULL || (aad == NULL && aadlen > 0) || aadlen > INT_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "aes-256-gcm open: bad arguments");
    /* The plaintext is only the caller's once the tag has verified; on any failure what was
     * decrypted into out is wiped. */
    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        goto out_internal;
    /* EVP wants a mutable tag buffer. */
    memcpy(tagcopy, tag, sizeof(tagcopy));
    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, CX_GCM_NONCE_LEN, NULL) != 1 ||
        EVP_DecryptInit_ex(ctx, NULL, NULL, key->bytes, nonce) != 1)
        goto out_internal;
    if (aadlen > 0 && EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aadlen) != 1)
        goto out_internal;
    if (EVP_DecryptUpdate(ctx, out, &n, ct, (int)ctlen) != 1 || (size_t)n != ctlen)
        goto out_internal;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, CX_GCM_TAG_LEN, tagcopy) != 1)
        goto out_internal;
    if (EVP_DecryptFinal_ex(ctx, out + n, &n) != 1) {
        /* Tag mismatch: key, nonce, ciphertext, tag or associated data differ. The message
         * stays generic on purpose: which one is not knowable, and guessing helps an attacker. */
        cx_error_set(err, CX_ERR_INTEGRITY,
                     "authentication failed: data tampered, swapped or "
                     "opened with the wrong key or context");
        goto out_fail;
    }
    EVP_CIPHER_CTX_free(ctx);
    return true;

out_internal:
    cx_error_set(err, CX_ERR_INTERNAL, "aes-256-gcm open failed in OpenSSL");
out_fail:
    EVP_CIPHER_CTX_free(ctx);
    cx_crypto_wipe(out, ctlen);
    return false;
}

cx_secret_t *cx_crypto_open(const cx_secret_t *key, const unsigned char *aad, size_t aadlen,
                            const unsigned char nonce[CX_GCM_NONCE_LEN], const unsigned char *ct,
                            size_t ctlen, const unsigned char tag[CX_GCM_TAG_LEN], cx_error_t *err)
{
    if (!cx_crypto_check_key(key, err))
        return NULL;
    if (ct == NULL || ctlen == 0 || ctlen > CX_SECRET_MAX) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "aes-256-gcm open: bad arguments");
        return NULL;
    }
    /* Decrypted straight into locked, wiped-on-free memory; freed again on any failure. */
    cx_secret_t *plain = cx_secret_new(ctlen);
    if (plain == NULL) {
        cx_error_set(err, CX_ERR_INTERNAL, "aes-256-gcm open failed in OpenSSL");
        return NULL;
    }
    if (!cx_crypto_open_to(key, aad, aadlen, nonce, ct, ctlen, tag, plain->bytes, err)) {
        cx_secret_free(plain);
        return NULL;
    }
    return plain;
}

/* ---- encryption contexts ---------------------------------------------------------------- */

static int cx_crypto_kv_cmp(const void *a, const void *b)
{
    return strcmp(((const cx_kv_t *)a)->key, ((const cx_kv_t *)b)->key);
}

static unsigned char *cx_crypto_put_field(unsigned char *p, const char *s, size_t len)
{
    p[0] = (unsigned char)(len >> 24);
    p[1] = (unsigned char)(len >> 16);
    p[2] = (unsigned char)(len >> 8);
    p[3] = (unsigned char)len;
    memcpy(p + 4, s, len);
    return p + 4 + len;
}

bool cx_crypto_context_encode(const cx_kv_t *pairs, size_t n, unsigned char **out, size_t *outlen,
                              cx_error_t *err)
{
    bool ok = false;
    cx_kv_t *sorted = NULL;
    unsigned char *buf = NULL;
    size_t total = 0;

    if (out == NULL || outlen == NULL || (pairs == NULL && n > 0))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "encryption context: bad arguments");
    if (n > CX_CONTEXT_MAX_PAIRS)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "encryption context: more than %d pairs",
                            CX_CONTEXT_MAX_PAIRS);
    for (size_t i = 0; i < n; i++) {
        if (pairs[i].key == NULL || pairs[i].value == NULL)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "encryption context: a key or value is missing");
        size_t kl = strnlen(pairs[i].key, CX_CONTEXT_MAX_FIELD + 1);
        size_t vl = strnlen(pairs[i].value, CX_CONTEXT_MAX_FIELD + 1);
        if (kl > CX_CONTEXT_MAX_FIELD || vl > CX_CONTEXT_MAX_FIELD)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "encryption context: a key or value exceeds %d bytes",
                                CX_CONTEXT_MAX_FIELD);
        total += 8 + kl + vl;
    }
    /* malloc(0) may return NULL; a 1-byte block keeps "NULL means failure" unambiguous. */
    buf = malloc(total > 0 ? total : 1);
    sorted = malloc((n > 0 ? n : 1) * sizeof(*sorted));
    if (buf == NULL || sorted == NULL) {
        cx_error_set(err, CX_ERR_INTERNAL, "encryption context: out of memory");
        goto out;
    }
    if (n > 0)
        memcpy(sorted, pairs, n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), cx_crypto_kv_cmp);
    unsigned char *p = buf;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && strcmp(sorted[i - 1].key, sorted[i].key) == 0) {
            /* Two values for one key would make "the" context ambiguous. */
            cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "encryption context: duplicate key");
            goto out;
        }
        p = cx_crypto_put_field(p, sorted[i].key, strlen(sorted[i].key));
        p = cx_crypto_put_field(p, sorted[i].value, strlen(sorted[i].value));
    }
    *out = buf;
    *outlen = total;
    buf = NULL;
    ok = true;
out:
    free(sorted);
    if (buf != NULL) {
        /* Context values are not secret, but the buffer is wiped for the same price anyway. */
        cx_crypto_wipe(buf, total);
        free(buf);
    }
    return ok;
}

/* ---- HKDF ------------------------------------------------------------------------------- */

cx_secret_t *cx_crypto_hkdf_sha256(const cx_secret_t *ikm, const void *salt, size_t saltlen,
                                   const void *info, size_t infolen, size_t outlen, cx_error_t *err)
{
    EVP_KDF *kdf = NULL;
    EVP_KDF_CTX *kctx = NULL;
    cx_secret_t *okm = NULL;
    OSSL_PARAM params[5];
    size_t np = 0;

    if (ikm == NULL || outlen == 0 || outlen > 255 * 32 || (salt == NULL && saltlen > 0) ||
        (info == NULL && infolen > 0)) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "hkdf-sha256: bad arguments");
        return NULL;
    }
    okm = cx_secret_new(outlen);
    kdf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_HKDF, NULL);
    kctx = kdf != NULL ? EVP_KDF_CTX_new(kdf) : NULL;
    if (okm == NULL || kctx == NULL)
        goto out_fail;
    /* OSSL_PARAM takes non-const pointers; OpenSSL only reads them. */
    params[np++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    params[np++] =
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm->bytes, ikm->len);
    if (saltlen > 0)
        params[np++] =
            OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, saltlen);
    if (infolen > 0)
        params[np++] =
            OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, infolen);
    params[np] = OSSL_PARAM_construct_end();
    if (EVP_KDF_derive(kctx, okm->bytes, okm->len, params) != 1)
        goto out_fail;
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
    return okm;

out_fail:
    cx_error_set(err, CX_ERR_INTERNAL, "hkdf-sha256 failed in OpenSSL");
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
    cx_secret_free(okm);
    return NULL;
}

/* ---- hex -------------------------------------------------------------------------------- */

/* The value of one hex digit, and *bad set to 1 when c is none, computed with masks only so that
 * the time taken does not depend on which digit a key byte holds. */
static unsigned cx_crypto_hex_nibble(unsigned char c, unsigned *bad)
{
    int d = (int)c - '0';
    int l = (int)(c | 0x20) - 'a';
    unsigned d_out = ((unsigned)(d | (9 - d))) >> 31; /* 1 unless 0 <= d <= 9 */
    unsigned l_out = ((unsigned)(l | (5 - l))) >> 31; /* 1 unless 0 <= l <= 5 */
    unsigned v = ((unsigned)d & (d_out - 1u)) | ((unsigned)(l + 10) & (l_out - 1u));
    *bad |= d_out & l_out;
    return v & 0xfu;
}

bool cx_crypto_hex_decode(const char *hex, size_t hexlen, unsigned char *out, size_t outlen,
                          cx_error_t *err)
{
    unsigned bad = 0;

    if (hex == NULL || out == NULL || outlen == 0 || outlen > SIZE_MAX / 2 || hexlen != 2 * outlen)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "hex: expected exactly %zu digits",
                            outlen <= SIZE_MAX / 2 ? 2 * outlen : (size_t)0);
    /* Validate everything first so that out stays untouched on failure. */
    for (size_t i = 0; i < hexlen; i++)
        (void)cx_crypto_hex_nibble((unsigned char)hex[i], &bad);
    if (bad != 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "hex: a character is not a hex digit");
    for (size_t i = 0; i < outlen; i++) {
        unsigned hi = cx_crypto_hex_nibble((unsigned char)hex[2 * i], &bad);
        unsigned lo = cx_crypto_hex_nibble((unsigned char)hex[2 * i + 1], &bad);
        out[i] = (unsigned char)((hi << 4) | lo);
    }
    return true;
}
