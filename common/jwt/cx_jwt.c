/* cx_jwt: see cx_jwt.h. */
#include "common/http/cx_http.h"
#include "common/jwt/cx_jwt.h"
#include "common/metrics/cx_metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/param_build.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef enum jwt_alg { JWT_ALG_ES256 = 1, JWT_ALG_RS256 = 2 } jwt_alg_t;

typedef struct jwks_key {
    char kid[CX_JWT_KID_MAX];
    jwt_alg_t alg; /* the only alg this key verifies */
    EVP_PKEY *pkey;
} jwks_key_t;

struct cx_jwks {
    size_t nkeys;
    jwks_key_t keys[CX_JWKS_MAX_KEYS];
};

/* ---- base64url ------------------------------------------------------------------------- */

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

bool cx_jwt_b64url_decode(const char *in, size_t len, unsigned char *out, size_t outsz,
                          size_t *outlen)
{
    if (len % 4 == 1)
        return false;
    size_t need = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
    if (need > outsz)
        return false;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value((unsigned char)in[i]);
        if (v < 0)
            return false;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* Non-zero leftover bits mean two encodings for one value: refuse (malleability). */
    if (acc != 0)
        return false;
    if (outlen)
        *outlen = o;
    return true;
}

/* Decode a base64url JSON string member into a fresh malloc'd buffer. */
static unsigned char *b64url_member(json_t *obj, const char *key, size_t max, size_t *outlen)
{
    const char *s = json_string_value(json_object_get(obj, key));
    if (!s)
        return NULL;
    size_t len = strlen(s);
    if (len == 0 || len > max * 4 / 3 + 4)
        return NULL;
    unsigned char *buf = malloc(len);
    if (!buf)
        return NULL;
    if (!cx_jwt_b64url_decode(s, len, buf, len, outlen) || *outlen == 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* ---- JWKS ------------------------------------------------------------------------------- */

static EVP_PKEY *pkey_from_params(const char *type, OSSL_PARAM_BLD *bld)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

static EVP_PKEY *jwk_ec_key(json_t *jwk)
{
    EVP_PKEY *pkey = NULL;
    unsigned char *x = NULL, *y = NULL;
    size_t xl = 0, yl = 0;
    OSSL_PARAM_BLD *bld = NULL;
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    if (!crv || strcmp(crv, "P-256") != 0)
        goto out;
    x = b64url_member(jwk, "x", 32, &xl);
    y = b64url_member(jwk, "y", 32, &yl);
    if (!x || !y || xl != 32 || yl != 32)
        goto out;
    unsigned char point[65];
    point[0] = 0x04; /* uncompressed */
    memcpy(point + 1, x, 32);
    memcpy(point + 33, y, 32);
    bld = OSSL_PARAM_BLD_new();
    if (!bld ||
        !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point)))
        goto out;
    /* fromdata checks that the point is on the curve. */
    pkey = pkey_from_params("EC", bld);
out:
    OSSL_PARAM_BLD_free(bld);
    free(x);
    free(y);
    return pkey;
}

static EVP_PKEY *jwk_rsa_key(json_t *jwk)
{
    EVP_PKEY *pkey = NULL;
    unsigned char *n = NULL, *e = NULL;
    size_t nl = 0, el = 0;
    BIGNUM *bn = NULL, *be = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    n = b64url_member(jwk, "n", 1024, &nl);
    e = b64url_member(jwk, "e", 8, &el);
    if (!n || !e)
        goto out;
    bn = BN_bin2bn(n, (int)nl, NULL);
    be = BN_bin2bn(e, (int)el, NULL);
    /* Short moduli are forgeable in practice; small or even exponents are nonsense. */
    if (!bn || !be || BN_num_bits(bn) < 2048 || BN_num_bits(bn) > 8192 || !BN_is_odd(be) ||
        BN_is_one(be))
        goto out;
    bld = OSSL_PARAM_BLD_new();
    if (!bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
        goto out;
    pkey = pkey_from_params("RSA", bld);
out:
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    free(n);
    free(e);
    return pkey;
}

cx_jwks_t *cx_jwt_jwks_parse(const char *json, size_t len, cx_error_t *err)
{
    cx_jwks_t *jwks = NULL;
    json_t *root = NULL;
    if (!json || len == 0 || len > CX_JWKS_MAX_BYTES) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "JWKS: empty or larger than %d bytes",
                     CX_JWKS_MAX_BYTES);
        goto out;
    }
    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *keys = json_object_get(root, "keys");
    if (!json_is_object(root) || !json_is_array(keys)) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "JWKS: not a JSON object with a keys array");
        goto out;
    }
    jwks = calloc(1, sizeof(*jwks));
    if (!jwks) {
        cx_error_set(err, CX_ERR_INTERNAL, "JWKS: out of memory");
        goto out;
    }
    size_t i;
    json_t *jwk;
    json_array_foreach(keys, i, jwk)
    {
        if (jwks->nkeys >= CX_JWKS_MAX_KEYS)
            break;
        const char *kty = json_string_value(json_object_get(jwk, "kty"));
        const char *kid = json_string_value(json_object_get(jwk, "kid"));
        const char *use = json_string_value(json_object_get(jwk, "use"));
        const char *alg = json_string_value(json_object_get(jwk, "alg"));
        if (!kty || !kid || !*kid || strlen(kid) >= CX_JWT_KID_MAX)
            continue;
        if (json_object_get(jwk, "use") && (!use || strcmp(use, "sig") != 0))
            continue;
        jwt_alg_t a;
        EVP_PKEY *pkey;
        if (strcmp(kty, "EC") == 0) {
            a = JWT_ALG_ES256;
            if (alg && strcmp(alg, "ES256") != 0)
                continue;
            pkey = jwk_ec_key(jwk);
        } else if (strcmp(kty, "RSA") == 0) {
            a = JWT_ALG_RS256;
            if (alg && strcmp(alg, "RS256") != 0)
                continue;
            pkey = jwk_rsa_key(jwk);
        } else {
            continue;
        }
        if (!pkey)
            continue;
        jwks_key_t *k = &jwks->keys[jwks->nkeys++];
        strcpy(k->kid, kid); /* length checked above */
        k->alg = a;
        k->pkey = pkey;
    }
out:
    json_decref(root);
    return jwks;
}

void cx_jwt_jwks_free(cx_jwks_t *jwks)
{
    if (!jwks)
        return;
    for (size_t i = 0; i < jwks->nkeys; i++)
        EVP_PKEY_free(jwks->keys[i].pkey);
    free(jwks);
}

size_t cx_jwt_jwks_count(const cx_jwks_t *jwks)
{
    return jwks ? jwks->nkeys : 0;
}

static const jwks_key_t *jwks_find(const cx_jwks_t *jwks, const char *kid)
{
    for (size_t i = 0; jwks && i < jwks->nkeys; i++)
        if (strcmp(jwks->keys[i].kid, kid) == 0)
            return &jwks->keys[i];
    return NULL;
}

/* ---- verification ----------------------------------------------------------------------- */

static bool sig_verify(const jwks_key_t *key, const unsigned char *msg, size_t msglen,
                       const unsigned char *sig, size_t siglen)
{
    bool ok = false;
    unsigned char *der = NULL;
    ECDSA_SIG *es = NULL;
    EVP_MD_CTX *md = NULL;
    const unsigned char *vsig = sig;
    size_t vlen = siglen;
    if (key->alg == JWT_ALG_ES256) {
        /* JWS carries ES256 as raw r||s; OpenSSL wants DER. */
        if (siglen != 64)
            goto out;
        es = ECDSA_SIG_new();
        BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
        if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
            BN_free(r);
            BN_free(s);
            goto out;
        }
        int dl = i2d_ECDSA_SIG(es, &der);
        if (dl <= 0)
            goto out;
        vsig = der;
        vlen = (size_t)dl;
    }
    md = EVP_MD_CTX_new();
    if (!md || EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key->pkey) != 1)
        goto out;
    ok = EVP_DigestVerify(md, vsig, vlen, msg, msglen) == 1;
out:
    EVP_MD_CTX_free(md);
    ECDSA_SIG_free(es);
    OPENSSL_free(der);
    return ok;
}

static json_t *segment_json(const char *seg, size_t len)
{
    unsigned char buf[CX_JWT_TOKEN_MAX];
    size_t n = 0;
    if (len == 0 || !cx_jwt_b64url_decode(seg, len, buf, sizeof(buf), &n))
        return NULL;
    json_t *j = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, NULL);
    if (j && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* NumericDate: a JSON number (integer or not) within a sane range. */
static bool numeric_date(json_t *v, int64_t *out)
{
    if (!json_is_number(v))
        return false;
    double d = json_number_value(v);
    if (!(d >= 0 && d < 253402300800.0)) /* year 10000 */
        return false;
    *out = (int64_t)d;
    return true;
}

static bool copy_claim(json_t *obj, const char *key, char *out, size_t outsz, bool required)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        out[0] = '\0';
        return !required;
    }
    const char *s = json_string_value(v);
    if (!s || !*s || strlen(s) >= outsz)
        return false;
    strcpy(out, s);
    return true;
}

static bool aud_contains(json_t *aud, const char *want)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    if (!json_is_array(aud))
        return false;
    size_t i;
    json_t *a;
    json_array_foreach(aud, i, a)
    {
        if (json_is_string(a) && strcmp(json_string_value(a), want) == 0)
            return true;
    }
    return false;
}

bool cx_jwt_verify_with_jwks(const cx_jwks_t *jwks, const cx_jwt_params_t *params,
                             const char *token, size_t len, int64_t now_s, cx_jwt_claims_t *out,
                             cx_error_t *err)
{
    bool ok = false;
    json_t *hdr = NULL, *pl = NULL;
    unsigned char *sig = NULL;
    cx_jwt_claims_t c;
    memset(&c, 0, sizeof(c));
    if (!params || !params->issuer || !*params->issuer || !params->audience || !*params->audience) {
        cx_error_set(err, CX_ERR_UNAUTHENTICATED, "token verification is not configured");
        goto out;
    }
    if (!token || len == 0 || len > CX_JWT_TOKEN_MAX) {
        cx_error_set(err, CX_ERR_UNAUTHENTICATED, "token missing or larger than %d bytes",
                     CX_JWT_TOKEN_MAX);
        goto out;
    }
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
    if (!d1 || !d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token))) {
        cx_error_set(err, CX_ERR_UNAUTHENTICATED, "token is not a compact JWS");
        goto out;
    }
    hdr = segment_json(token, (size_t)(d1 - token));
    pl = segment_json(d1 + 1, (size_t)(d2 - d1 - 1));
    if (!hdr || !pl) {
        cx_error_set(err, CX_ERR_UNAUTHENTICATED, "token header or payload is malformed");
        goto out;
    }
    const char *alg = json_string_value(json_object_get(hdr, "alg"));
    jwt_alg_t a;
    if (alg && strcmp(alg, "ES256") == 0) {
        a = JWT_ALG_ES256;
    } else if (alg && strcmp(alg, "RS256") == 0) {
        a = JWT_ALG_RS256;
    } else {
        cx_error_set(err, CX_ERR_UNAUTHENTICATED, "token algorithm not allowed");
        goto out;
    }
    strcpy(c.alg, alg);
    if (json_object_get(hdr, "crit")) {
        cx_error_set(err, CX_ERR_UNAUTHENTICATED, "token has critical header extensions");
        goto out;
    }
    if (!copy_claim(hdr, "kid", c.kid, sizeof(c.kid), true)) {
        cx_error_set(err, CX_ERR_UNAUTHENTICATED, "token has no valid kid");
        goto out;
    }
    const jwks_key_t *key = jwks_find(jwks, c.kid);
    if (!key) {
        cx_error_set_detail(err, CX_ERR_UNAUTHENTICATED, CX_DETAIL_JWT_UNKNOWN_KID,
                            "unknown key id");
        goto out;
    }
    if (key->alg != a) {
        cx_error_set(err, CX_ERR_UNAUTHENTICATED, "token algorithm does not match its key");
        goto out;
    }
    size_t siglen_b64 = len - (size_t)(d2 + 1 - token), siglen = 0;
    sig = malloc(siglen_b64 + 1);
    if (!sig || siglen_b64 == 0 ||
        !cx_jwt_b64url_decode(d2 + 1, siglen_b64, sig, siglen_b64 + 1, &siglen) ||
        !sig_verify(key, (const unsigned char *)token, (size_t)(d2 - token), sig, siglen)) {
        cx_error_set(err, CX_ERR_UNAUTHENTICATED, "token signature is invalid");
        goto out;
    }
    /* Claims are only looked at once the signature holds. */
    if (!copy_claim(pl, "iss", c.iss, sizeof(c.iss), true) || strcmp(c.iss, params->issuer) != 0) {
        cx_error_set(err, CX_ERR_UNAUTHENTICATED, "token issuer is not accepted");
        goto out;
    }
    if (!aud_contains(json_object_get(pl, "aud"), params->audience)) {
        cx_error_set(err, CX_ERR_UNAUTHENTICATED, "token audience is not accepted");
        goto out;
    }
    int64_t leeway = params->leeway_s;
    if (!numeric_date(json_object_get(pl, "exp"), &c.exp)) {
        cx_error_set(err, CX_ERR_UNAUTHENTICATED, "token has no valid exp");
        goto out;
    }
    if (now_s - leeway >= c.exp) {
        cx_error_set(err, CX_ERR_UNAUTHENTICATED, "token has expired");
        goto out;
    }
    json_t *nbf = json_object_get(pl, "nbf"), *iat = json_object_get(pl, "iat");
    if (nbf && (!numeric_date(nbf, &c.nbf) || c.nbf > now_s + leeway)) {
        cx_error_set(err, CX_ERR_UNAUTHENTICATED, "token is not valid yet");
        goto out;
    }
    if (iat && (!numeric_date(iat, &c.iat) || c.iat > now_s + leeway)) {
        cx_error_set(err, CX_ERR_UNAUTHENTICATED, "token was issued in the future");
        goto out;
    }
    if (!copy_claim(pl, "sub", c.sub, sizeof(c.sub), true)) {
        cx_error_set(err, CX_ERR_UNAUTHENTICATED, "token has no valid sub");
        goto out;
    }
    if (!copy_claim(pl, "azp", c.azp, sizeof(c.azp), false)) {
        cx_error_set(err, CX_ERR_UNAUTHENTICATED, "token has an invalid azp");
        goto out;
    }
    if (!copy_claim(
            pl, params->client_claim && *params->client_claim ? params->client_claim : "client_id",
            c.client, sizeof(c.client), false)) {
        cx_error_set(err, CX_ERR_UNAUTHENTICATED, "token has an invalid client claim");
        goto out;
    }
    if (out)
        *out = c;
    ok = true;
out:
    free(sig);
    json_decref(hdr);
    json_decref(pl);
    return ok;
}

/* ---- JWKS source and cache -------------------------------------------------------------- */

struct cx_jwt_verifier {
    char *source;
    cx_http_t *http; /* the https source's client; NULL for a file */
    char *issuer;
    char *audience;
    char *client_claim;
    unsigned leeway_s, cache_s, refetch_s;
    pthread_mutex_t mu;
    /* Guarded by mu. A key set is shared by reference with verifications in flight. */
    struct jwks_ref {
        cx_jwks_t *jwks;
        unsigned refs;
    } * cur;
    int64_t fetched_at;      /* monotonic seconds of the last successful fetch */
    int64_t last_attempt_at; /* monotonic seconds of the last fetch attempt; 0 = never */
    uint64_t keys_gen;       /* bumped whenever cur is replaced; guarded by mu */
    /* Verified-token cache (header comment): nsets sets of JWT_CACHE_WAYS entries, guarded by
     * cache_mu, never held together with mu. */
    pthread_mutex_t cache_mu;
    struct jwt_cached {
        unsigned char digest[SHA256_DIGEST_LENGTH];
        uint64_t keys_gen; /* 0 = empty slot */
        uint64_t stamp;    /* insertion order, for replacement */
        cx_jwt_claims_t claims;
    } * cache;
    size_t nsets;
    uint64_t stamp, hits, misses;
};

#define JWT_CACHE_WAYS 4

/* A JWKS document, malloc'd (NUL-terminated) into *doc, from the https source. */
static bool fetch_url(const cx_jwt_verifier_t *v, char **doc, size_t *len, cx_error_t *err)
{
    cx_http_request_t rq = {.url = v->source};
    cx_http_response_t r;
    if (!cx_http_do(v->http, &rq, &r, err))
        return false;
    if (r.status != 200) {
        long status = r.status;
        cx_http_response_free(&r);
        return cx_error_set_detail(err, CX_ERR_UNAVAILABLE, CX_DETAIL_HTTP_STATUS,
                                   "JWKS: fetch failed (HTTP %ld)", status);
    }
    *doc = r.body;
    *len = r.body_len;
    return true;
}

/* The same from the key file. */
static bool fetch_file(const char *path, char **doc, size_t *len, cx_error_t *err)
{
    bool ok = false;
    char *buf = NULL;
    size_t got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "JWKS: cannot open the key file (%s)",
                            strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
        st.st_size > CX_JWKS_MAX_BYTES) {
        cx_error_set(err, CX_ERR_UNAVAILABLE, "JWKS: key file is not a regular file of 1..%d bytes",
                     CX_JWKS_MAX_BYTES);
        goto out;
    }
    if (!(buf = malloc((size_t)st.st_size + 1))) {
        cx_error_set(err, CX_ERR_INTERNAL, "JWKS: out of memory");
        goto out;
    }
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n <= 0) {
            cx_error_set(err, CX_ERR_UNAVAILABLE, "JWKS: cannot read the key file");
            goto out;
        }
        got += (size_t)n;
    }
    buf[got] = '\0';
    *doc = buf;
    *len = got;
    buf = NULL;
    ok = true;
out:
    free(buf);
    close(fd);
    return ok;
}

static cx_jwks_t *jwks_fetch(const cx_jwt_verifier_t *v, cx_error_t *err)
{
    char *doc = NULL;
    size_t len = 0;
    bool got = v->http ? fetch_url(v, &doc, &len, err) : fetch_file(v->source, &doc, &len, err);
    if (!got)
        return NULL;
    cx_error_t perr;
    cx_jwks_t *jwks = cx_jwt_jwks_parse(doc, len, &perr);
    if (!jwks)
        cx_error_set(err, CX_ERR_UNAVAILABLE, "JWKS: %s", perr.message);
    free(doc);
    return jwks;
}

static int64_t mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec;
}

cx_jwt_verifier_t *cx_jwt_verifier_new(const cx_jwt_verifier_options_t *opts, cx_error_t *err)
{
    if (!opts || !opts->jwks_source || !*opts->jwks_source || !opts->issuer || !*opts->issuer ||
        !opts->audience || !*opts->audience) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                     "JWT verification needs CREDEX_JWKS, CREDEX_JWT_ISSUER and "
                     "CREDEX_JWT_AUDIENCE");
        return NULL;
    }
    if (strncmp(opts->jwks_source, "http://", 7) == 0) {
        /* Whoever can alter the keys in transit controls every decision. */
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "CREDEX_JWKS: http:// is refused, use https://");
        return NULL;
    }
    cx_jwt_verifier_t *v = calloc(1, sizeof(*v));
    if (!v)
        goto fail;
    if (strncmp(opts->jwks_source, "https://", 8) == 0) {
        cx_http_options_t ho = {.name = "JWKS",
                                .metrics_target = "jwks",
                                .ca_file = opts->ca_file,
                                .timeout_ms =
                                    opts->fetch_timeout_ms ? opts->fetch_timeout_ms : 3000,
                                .max_response_bytes = CX_JWKS_MAX_BYTES,
                                .pool_max = 1};
        cx_error_t herr;
        if (!(v->http = cx_http_new(&ho, &herr))) {
            /* Found at start, not at the first token: every call would fail closed without it. */
            if (herr.code == CX_ERR_INVALID_ARGUMENT)
                cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "CREDEX_JWKS_CA_FILE: %s", herr.message);
            else
                cx_error_copy(err, &herr);
            free(v);
            return NULL;
        }
    }
    v->source = strdup(opts->jwks_source);
    v->issuer = strdup(opts->issuer);
    v->audience = strdup(opts->audience);
    v->client_claim =
        strdup(opts->client_claim && *opts->client_claim ? opts->client_claim : "client_id");
    if (!v->source || !v->issuer || !v->audience || !v->client_claim)
        goto fail;
    v->leeway_s = opts->leeway_s;
    v->cache_s = opts->cache_s ? opts->cache_s : 300;
    v->refetch_s = opts->unknown_kid_refetch_s ? opts->unknown_kid_refetch_s : 60;
    if (opts->cache_max_entries > 0) {
        v->nsets = (opts->cache_max_entries + JWT_CACHE_WAYS - 1) / JWT_CACHE_WAYS;
        v->cache = calloc(v->nsets * JWT_CACHE_WAYS, sizeof(*v->cache));
        if (!v->cache)
            goto fail;
    }
    pthread_mutex_init(&v->mu, NULL);
    pthread_mutex_init(&v->cache_mu, NULL);
    return v;
fail:
    if (v) {
        cx_http_free(v->http);
        free(v->cache);
        free(v->source);
        free(v->issuer);
        free(v->audience);
        free(v->client_claim);
        free(v);
    }
    cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    return NULL;
}

static void ref_release_locked(struct jwks_ref *r)
{
    if (r && --r->refs == 0) {
        cx_jwt_jwks_free(r->jwks);
        free(r);
    }
}

void cx_jwt_verifier_free(cx_jwt_verifier_t *v)
{
    if (!v)
        return;
    ref_release_locked(v->cur);
    pthread_mutex_destroy(&v->mu);
    pthread_mutex_destroy(&v->cache_mu);
    if (v->cache)
        OPENSSL_cleanse(v->cache, v->nsets * JWT_CACHE_WAYS * sizeof(*v->cache));
    free(v->cache);
    cx_http_free(v->http);
    free(v->source);
    free(v->issuer);
    free(v->audience);
    free(v->client_claim);
    free(v);
}

/* Take a reference to the current key set, fetching first when there is none, it is older
 * than cache_s, or `force` (an unknown kid) and the rate limit allows. A failed refresh keeps
 * serving the keys already held: the IdP being briefly down must not lock every user out,
 * and keys it has not revoked are still the keys it signs with. The fetch runs under the lock
 * so that concurrent misses cause a single fetch. */
static struct jwks_ref *keys_get(cx_jwt_verifier_t *v, bool force, uint64_t *gen, cx_error_t *err)
{
    pthread_mutex_lock(&v->mu);
    int64_t now = mono_s();
    bool stale = !v->cur || now - v->fetched_at >= (int64_t)v->cache_s;
    bool may_force = v->last_attempt_at == 0 || now - v->last_attempt_at >= (int64_t)v->refetch_s;
    bool retry_due = v->last_attempt_at == 0 || now - v->last_attempt_at >= 1;
    if ((stale && retry_due) || (force && may_force)) {
        v->last_attempt_at = now;
        cx_error_t ferr;
        cx_jwks_t *fresh = jwks_fetch(v, &ferr);
        if (fresh) {
            struct jwks_ref *r = malloc(sizeof(*r));
            if (r) {
                r->jwks = fresh;
                r->refs = 1;
                ref_release_locked(v->cur);
                v->cur = r;
                v->fetched_at = now;
                v->keys_gen++;
            } else {
                cx_jwt_jwks_free(fresh);
            }
        } else if (!v->cur) {
            cx_error_copy(err, &ferr);
        }
    }
    struct jwks_ref *r = v->cur;
    *gen = v->keys_gen;
    if (r)
        r->refs++;
    else if (err && err->code == CX_OK)
        cx_error_set(err, CX_ERR_UNAVAILABLE, "JWKS: no keys available yet");
    pthread_mutex_unlock(&v->mu);
    return r;
}

static void keys_put(cx_jwt_verifier_t *v, struct jwks_ref *r)
{
    pthread_mutex_lock(&v->mu);
    ref_release_locked(r);
    pthread_mutex_unlock(&v->mu);
}

/* The time checks of cx_jwt_verify_with_jwks, for a remembered token. */
static bool time_claims_hold(const cx_jwt_claims_t *c, int64_t now_s, unsigned leeway_s,
                             cx_error_t *err)
{
    int64_t leeway = leeway_s;
    if (now_s - leeway >= c->exp)
        return cx_error_set(err, CX_ERR_UNAUTHENTICATED, "token has expired");
    if (c->nbf && c->nbf > now_s + leeway)
        return cx_error_set(err, CX_ERR_UNAUTHENTICATED, "token is not valid yet");
    if (c->iat && c->iat > now_s + leeway)
        return cx_error_set(err, CX_ERR_UNAUTHENTICATED, "token was issued in the future");
    return true;
}

static struct jwt_cached *cache_set(cx_jwt_verifier_t *v, const unsigned char *digest)
{
    uint64_t h;
    memcpy(&h, digest, sizeof(h));
    return &v->cache[(size_t)(h % v->nsets) * JWT_CACHE_WAYS];
}

/* A remembered token verified under key set `gen`: its claims into *out. */
static bool cache_lookup(cx_jwt_verifier_t *v, const unsigned char *digest, uint64_t gen,
                         cx_jwt_claims_t *out)
{
    bool hit = false;
    pthread_mutex_lock(&v->cache_mu);
    struct jwt_cached *set = cache_set(v, digest);
    for (size_t i = 0; i < JWT_CACHE_WAYS; i++) {
        if (set[i].keys_gen == gen &&
            CRYPTO_memcmp(set[i].digest, digest, SHA256_DIGEST_LENGTH) == 0) {
            *out = set[i].claims;
            hit = true;
            break;
        }
    }
    if (hit)
        v->hits++;
    else
        v->misses++;
    pthread_mutex_unlock(&v->cache_mu);
    cx_metrics_cache("verified_token", hit);
    return hit;
}

/* Remember a verified token, replacing an empty, outdated or the oldest entry of its set. */
static void cache_insert(cx_jwt_verifier_t *v, const unsigned char *digest, uint64_t gen,
                         const cx_jwt_claims_t *claims)
{
    pthread_mutex_lock(&v->cache_mu);
    struct jwt_cached *set = cache_set(v, digest), *victim = &set[0];
    for (size_t i = 0; i < JWT_CACHE_WAYS; i++) {
        if (set[i].keys_gen != gen) {
            victim = &set[i];
            break;
        }
        if (set[i].stamp < victim->stamp)
            victim = &set[i];
    }
    memcpy(victim->digest, digest, SHA256_DIGEST_LENGTH);
    victim->keys_gen = gen;
    victim->stamp = ++v->stamp;
    victim->claims = *claims;
    pthread_mutex_unlock(&v->cache_mu);
}

void cx_jwt_verifier_cache_stats(cx_jwt_verifier_t *v, cx_jwt_cache_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!v)
        return;
    pthread_mutex_lock(&v->cache_mu);
    out->hits = v->hits;
    out->misses = v->misses;
    pthread_mutex_unlock(&v->cache_mu);
}

bool cx_jwt_verify_at(cx_jwt_verifier_t *v, const char *token, size_t len, int64_t now_s,
                      cx_jwt_claims_t *out, cx_error_t *err)
{
    if (!v)
        return cx_error_set(err, CX_ERR_UNAUTHENTICATED, "token verification is not configured");
    cx_jwt_params_t p = {.issuer = v->issuer,
                         .audience = v->audience,
                         .leeway_s = v->leeway_s,
                         .client_claim = v->client_claim};
    cx_error_t kerr;
    cx_error_clear(&kerr);
    uint64_t gen = 0;
    struct jwks_ref *r = keys_get(v, false, &gen, &kerr);
    if (!r) {
        cx_error_copy(err, &kerr);
        return false;
    }
    unsigned char digest[SHA256_DIGEST_LENGTH];
    bool cached = v->cache != NULL && token != NULL && len > 0 && len <= CX_JWT_TOKEN_MAX;
    if (cached) {
        SHA256((const unsigned char *)token, len, digest);
        cx_jwt_claims_t c;
        if (cache_lookup(v, digest, gen, &c)) {
            keys_put(v, r);
            if (!time_claims_hold(&c, now_s, v->leeway_s, err))
                return false;
            if (out)
                *out = c;
            return true;
        }
    }
    cx_error_t verr;
    cx_jwt_claims_t c;
    bool ok = cx_jwt_verify_with_jwks(r->jwks, &p, token, len, now_s, &c, &verr);
    if (!ok && verr.detail == CX_DETAIL_JWT_UNKNOWN_KID) {
        /* The IdP may have rotated its keys since the last fetch. */
        keys_put(v, r);
        cx_error_clear(&kerr);
        r = keys_get(v, true, &gen, &kerr);
        if (!r) {
            cx_error_copy(err, &kerr);
            return false;
        }
        ok = cx_jwt_verify_with_jwks(r->jwks, &p, token, len, now_s, &c, &verr);
    }
    keys_put(v, r);
    if (!ok) {
        cx_error_copy(err, &verr);
        return false;
    }
    if (cached)
        cache_insert(v, digest, gen, &c);
    if (out)
        *out = c;
    return true;
}

bool cx_jwt_verify(cx_jwt_verifier_t *v, const char *token, size_t len, cx_jwt_claims_t *out,
                   cx_error_t *err)
{
    return cx_jwt_verify_at(v, token, len, (int64_t)time(NULL), out, err);
}
