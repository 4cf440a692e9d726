/* fuzz_jws: see fuzz_jws.h. */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_jws.h"

EVP_PKEY *fuzz_jws_keygen(fuzz_jws_alg_t alg)
{
    EVP_PKEY *k = alg == FUZZ_JWS_ES256 ? EVP_EC_gen("P-256") : EVP_RSA_gen(2048);
    if (k == NULL)
        abort();
    return k;
}

/* The base64url of a big number parameter of key, fixed to width bytes (0: its own size). */
static void fuzz_jws_bn(EVP_PKEY *key, const char *name, int width, char *out)
{
    BIGNUM *bn = NULL;
    uint8_t bin[512];
    if (EVP_PKEY_get_bn_param(key, name, &bn) != 1)
        abort();
    int n = width ? width : BN_num_bytes(bn);
    if (n > (int)sizeof(bin) || BN_bn2binpad(bn, bin, n) != n)
        abort();
    fuzz_b64url_encode(bin, (size_t)n, out);
    BN_free(bn);
}

void fuzz_jws_jwk(EVP_PKEY *key, fuzz_jws_alg_t alg, const char *kid, char *out, size_t outsz)
{
    char a[FUZZ_B64URL_LEN(512) + 1], b[FUZZ_B64URL_LEN(512) + 1];
    int n;
    if (alg == FUZZ_JWS_ES256) {
        fuzz_jws_bn(key, OSSL_PKEY_PARAM_EC_PUB_X, 32, a);
        fuzz_jws_bn(key, OSSL_PKEY_PARAM_EC_PUB_Y, 32, b);
        n = snprintf(out, outsz,
                     "{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"%s\",\"use\":\"sig\","
                     "\"x\":\"%s\",\"y\":\"%s\"}",
                     kid, a, b);
    } else {
        fuzz_jws_bn(key, OSSL_PKEY_PARAM_RSA_N, 0, a);
        fuzz_jws_bn(key, OSSL_PKEY_PARAM_RSA_E, 0, b);
        n = snprintf(out, outsz,
                     "{\"kty\":\"RSA\",\"kid\":\"%s\",\"alg\":\"RS256\",\"n\":\"%s\",\"e\":\"%s\"}",
                     kid, a, b);
    }
    if (n < 0 || (size_t)n >= outsz)
        abort();
}

size_t fuzz_jws_sign(EVP_PKEY *key, fuzz_jws_alg_t alg, const uint8_t *msg, size_t len,
                     uint8_t *sig)
{
    uint8_t der[FUZZ_JWS_SIG_MAX];
    size_t dl = sizeof(der);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
        EVP_DigestSign(md, der, &dl, msg, len) != 1)
        abort();
    EVP_MD_CTX_free(md);
    if (alg == FUZZ_JWS_RS256) {
        memcpy(sig, der, dl);
        return dl;
    }
    /* OpenSSL writes ECDSA as DER; JWS wants r||s, 32 bytes each. */
    const uint8_t *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)dl);
    if (es == NULL || BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32) != 32 ||
        BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32) != 32)
        abort();
    ECDSA_SIG_free(es);
    return 64;
}

char *fuzz_jws_signing_input(const uint8_t *header, size_t hlen, const uint8_t *payload,
                             size_t plen, size_t *len)
{
    /* Room for two dots, the largest signature, a little padding or a third dot, and a NUL. */
    size_t cap =
        FUZZ_B64URL_LEN(hlen) + FUZZ_B64URL_LEN(plen) + FUZZ_B64URL_LEN(FUZZ_JWS_SIG_MAX) + 8;
    char *tok = malloc(cap);
    if (tok == NULL)
        abort();
    size_t n = fuzz_b64url_encode(header, hlen, tok);
    tok[n++] = '.';
    n += fuzz_b64url_encode(payload, plen, tok + n);
    *len = n;
    return tok;
}

void fuzz_jws_append_sig(char *tok, size_t *len, const uint8_t *sig, size_t siglen)
{
    tok[(*len)++] = '.';
    *len += fuzz_b64url_encode(sig, siglen, tok + *len);
}
