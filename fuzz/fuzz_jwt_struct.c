/*
 * Fuzz target: JWT verification past the base64url and signature layers (common/jwt). The
 * input is a mode byte ('0'..'6', see MODE_*), then the header's JSON text, '\n', the payload's
 * JSON text, and for some modes '\n' and signature bytes. The harness encodes the two texts into a
 * token, signs it with keys of its own JWKS (ES256 key "es", RS256 key "rs"; key "es2" is in the
 * JWKS but never signs) and verifies it, so that mutations reach the header and claim checks that a
 * raw token never gets to (fuzz_jwt fuzzes raw tokens).
 *
 * Invariants (abort on violation):
 *  - a token whose signature the harness did not make over exactly that text (forged bytes,
 *    a tampered signature, a padded segment, a fourth segment) never verifies;
 *  - a signed token verifies iff a reference reading of docs/IDENTITY.md's rules, written
 *    here with jansson, accepts it, and then the claims returned are the token's;
 *  - every refusal is CX_ERR_UNAUTHENTICATED;
 *  - base64url round trip: the library decodes what the harness encoded to the same bytes.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/jwt/cx_jwt.h"
#include "fuzz/fuzz_jws.h"

#define ISSUER   "https://idp.credex.test/realms/credex"
#define AUDIENCE "credex"
#define NOW      1800000000
#define LEEWAY   30

enum {
    MODE_ES256,     /* signed by "es" */
    MODE_RS256,     /* signed by "rs" */
    MODE_TAMPERED,  /* signed by "es", then one signature bit flipped */
    MODE_FORGED,    /* the signature is the input's third part, base64url-encoded */
    MODE_SIG_TEXT,  /* the third segment is the input's third part, verbatim */
    MODE_FOUR_SEGS, /* signed by "es", then a fourth segment */
    MODE_PADDED,    /* the payload segment padded with '=' like standard base64 */
    MODE_COUNT
};

static struct {
    cx_jwks_t *jwks;
    EVP_PKEY *es, *rs;
} k;

static void fuzz_init(void)
{
    char es[1024], es2[1024], rs[1024], doc[4096];
    EVP_PKEY *other = fuzz_jws_keygen(FUZZ_JWS_ES256);
    k.es = fuzz_jws_keygen(FUZZ_JWS_ES256);
    k.rs = fuzz_jws_keygen(FUZZ_JWS_RS256);
    fuzz_jws_jwk(k.es, FUZZ_JWS_ES256, "es", es, sizeof(es));
    fuzz_jws_jwk(other, FUZZ_JWS_ES256, "es2", es2, sizeof(es2));
    fuzz_jws_jwk(k.rs, FUZZ_JWS_RS256, "rs", rs, sizeof(rs));
    EVP_PKEY_free(other);
    snprintf(doc, sizeof(doc), "{\"keys\":[%s,%s,%s]}", es, es2, rs);
    k.jwks = cx_jwt_jwks_parse(doc, strlen(doc), NULL);
    if (cx_jwt_jwks_count(k.jwks) != 3)
        abort(); /* the JWKs the harness wrote must all be usable */
}

/* ---- the reference reading of the rules ------------------------------------------------ */

/* A claim copied as the verifier documents it: absent is "" (ok unless required); present
 * must be a non-empty string shorter than max. */
static bool ref_str(json_t *obj, const char *key, size_t max, bool required, const char **out)
{
    json_t *v = json_object_get(obj, key);
    *out = "";
    if (v == NULL)
        return !required;
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= max)
        return false;
    *out = json_string_value(v);
    return true;
}

/* NumericDate in [0, year 10000), truncated to whole seconds. */
static bool ref_date(json_t *v, int64_t *out)
{
    double d = json_number_value(v);
    if (!json_is_number(v) || !(d >= 0 && d < 253402300800.0))
        return false;
    *out = (int64_t)d;
    return true;
}

static bool ref_aud(json_t *aud)
{
    size_t i;
    json_t *a;
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), AUDIENCE) == 0;
    json_array_foreach(aud, i, a)
    {
        if (json_is_string(a) && strcmp(json_string_value(a), AUDIENCE) == 0)
            return true;
    }
    return false;
}

/* Would a token with these texts, signed by the key signer_kid (alg), verify? If so, the
 * claims it must yield into *want. */
static bool ref_accepts(const char *h, size_t hl, const char *p, size_t pl, const char *signer_kid,
                        const char *alg, cx_jwt_claims_t *want)
{
    bool ok = false;
    json_t *hdr = json_loadb(h, hl, JSON_REJECT_DUPLICATES, NULL);
    json_t *pay = json_loadb(p, pl, JSON_REJECT_DUPLICATES, NULL);
    const char *a, *kid, *iss, *sub, *azp, *client;
    json_t *nbf = json_object_get(pay, "nbf"), *iat = json_object_get(pay, "iat");
    memset(want, 0, sizeof(*want));
    if (!json_is_object(hdr) || !json_is_object(pay) || json_object_get(hdr, "crit") ||
        !ref_str(hdr, "alg", 8, true, &a) || strcmp(a, alg) != 0 ||
        !ref_str(hdr, "kid", CX_JWT_KID_MAX, true, &kid) || strcmp(kid, signer_kid) != 0 ||
        !ref_str(pay, "iss", CX_JWT_CLAIM_MAX, true, &iss) || strcmp(iss, ISSUER) != 0 ||
        !ref_aud(json_object_get(pay, "aud")) ||
        !ref_date(json_object_get(pay, "exp"), &want->exp) || NOW - LEEWAY >= want->exp ||
        (nbf && (!ref_date(nbf, &want->nbf) || want->nbf > NOW + LEEWAY)) ||
        (iat && (!ref_date(iat, &want->iat) || want->iat > NOW + LEEWAY)) ||
        !ref_str(pay, "sub", CX_JWT_CLAIM_MAX, true, &sub) ||
        !ref_str(pay, "azp", CX_JWT_CLAIM_MAX, false, &azp) ||
        !ref_str(pay, "client_id", CX_JWT_CLAIM_MAX, false, &client))
        goto out;
    strcpy(want->alg, a);
    strcpy(want->kid, kid);
    strcpy(want->iss, iss);
    strcpy(want->sub, sub);
    strcpy(want->azp, azp);
    strcpy(want->client, client);
    ok = true;
out:
    json_decref(hdr);
    json_decref(pay);
    return ok;
}

static bool same_claims(const cx_jwt_claims_t *a, const cx_jwt_claims_t *b)
{
    return strcmp(a->alg, b->alg) == 0 && strcmp(a->kid, b->kid) == 0 &&
           strcmp(a->iss, b->iss) == 0 && strcmp(a->sub, b->sub) == 0 &&
           strcmp(a->azp, b->azp) == 0 && strcmp(a->client, b->client) == 0 && a->exp == b->exp &&
           a->nbf == b->nbf && a->iat == b->iat;
}

/* ---- the harness -------------------------------------------------------------------------- */

static void check_b64(const uint8_t *raw, size_t len, const char *enc, size_t enclen)
{
    uint8_t *back = malloc(len + 1);
    size_t n = 0;
    if (back == NULL || !cx_jwt_b64url_decode(enc, enclen, back, len + 1, &n) || n != len ||
        (len > 0 && memcmp(back, raw, len) != 0))
        abort();
    free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (k.jwks == NULL)
        fuzz_init();
    if (size < 1 || size > CX_JWT_TOKEN_MAX)
        return 0;
    unsigned mode = (uint8_t)(data[0] - '0') % MODE_COUNT; /* '0'.. in the corpus */
    fuzz_part_t f[3];
    f[2] = (fuzz_part_t){data, 0}; /* no third part: an empty signature */
    if (fuzz_split(data + 1, size - 1, '\n', f, 3) < 2)
        return 0;
    size_t len, hlen = FUZZ_B64URL_LEN(f[0].len);
    char *tok = fuzz_jws_signing_input(f[0].data, f[0].len, f[1].data, f[1].len, &len);
    check_b64(f[0].data, f[0].len, tok, hlen);
    check_b64(f[1].data, f[1].len, tok + hlen + 1, len - hlen - 1);
    bool rsa = mode == MODE_RS256;
    uint8_t sig[FUZZ_JWS_SIG_MAX];
    size_t siglen = 0;
    bool genuine = mode == MODE_ES256 || mode == MODE_RS256;
    if (mode == MODE_PADDED) {
        size_t plen = len - hlen - 1;
        genuine = plen % 4 == 0; /* no padding needed: the token is unchanged */
        for (; plen % 4 != 0; plen++)
            tok[len++] = '=';
    }
    if (mode == MODE_FORGED || mode == MODE_SIG_TEXT) {
        siglen = f[2].len < sizeof(sig) ? f[2].len : sizeof(sig);
        memcpy(sig, f[2].data, siglen);
    } else {
        siglen = fuzz_jws_sign(rsa ? k.rs : k.es, rsa ? FUZZ_JWS_RS256 : FUZZ_JWS_ES256,
                               (const uint8_t *)tok, len, sig);
    }
    if (mode == MODE_TAMPERED)
        sig[size % siglen] ^= (uint8_t)(1u << (size % 8));
    if (mode == MODE_SIG_TEXT) {
        tok[len++] = '.';
        memcpy(tok + len, sig, siglen);
        len += siglen;
    } else {
        fuzz_jws_append_sig(tok, &len, sig, siglen);
    }
    if (mode == MODE_FOUR_SEGS)
        tok[len++] = '.';

    cx_jwt_params_t p = {.issuer = ISSUER, .audience = AUDIENCE, .leeway_s = LEEWAY};
    cx_jwt_claims_t got, want;
    cx_error_t err;
    bool ok = cx_jwt_verify_with_jwks(k.jwks, &p, tok, len, NOW, &got, &err);
    bool expect = genuine && len <= CX_JWT_TOKEN_MAX &&
                  ref_accepts((const char *)f[0].data, f[0].len, (const char *)f[1].data, f[1].len,
                              rsa ? "rs" : "es", rsa ? "RS256" : "ES256", &want);
    if (ok != expect || (ok && !same_claims(&got, &want)) ||
        (!ok && err.code != CX_ERR_UNAUTHENTICATED))
        abort();
    free(tok);
    return 0;
}
