/*
 * Unit tests of common/jwt: keys are generated here with OpenSSL, published as a JWKS file, and
 * tokens are signed here, so every check of docs/IDENTITY.md is exercised against real
 * signatures rather than canned strings.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/jwt/cx_jwt.h"
#include "tests/unit/kit/testkit.h"

#define ISS "https://issuer.test/realms/credex"
#define AUD "credex"
#define NOW ((int64_t)1800000000)

static EVP_PKEY *ec_key, *rsa_key, *other_ec_key;
static char jwks_path[64];
static cx_jwks_t *jwks;

static void b64url_str(const char *s, char *out)
{
    tk_b64url((const unsigned char *)s, strlen(s), out);
}

static void bn_b64(EVP_PKEY *k, const char *param, size_t pad, char *out)
{
    BIGNUM *bn = NULL;
    assert_int_equal(EVP_PKEY_get_bn_param(k, param, &bn), 1);
    unsigned char buf[600];
    size_t n = pad ? pad : (size_t)BN_num_bytes(bn);
    assert_true(BN_bn2binpad(bn, buf, (int)n) > 0);
    tk_b64url(buf, n, out);
    BN_free(bn);
}

/* Sign header.payload with key (ES256 raw r||s, RS256 PKCS#1 v1.5), or HMAC for "HS256". */
static char *sign_token(const char *hdr_json, const char *payload_json, EVP_PKEY *key)
{
    char *tok = calloc(1, 16384);
    char h[2048], p[4096];
    b64url_str(hdr_json, h);
    b64url_str(payload_json, p);
    snprintf(tok, 16384, "%s.%s", h, p);
    unsigned char sig[1024];
    size_t siglen = sizeof(sig);
    if (!key) { /* HMAC with a key the attacker knows */
        unsigned int l = 0;
        HMAC(EVP_sha256(), "secret", 6, (unsigned char *)tok, strlen(tok), sig, &l);
        siglen = l;
    } else {
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key), 1);
        assert_int_equal(EVP_DigestSign(md, sig, &siglen, (unsigned char *)tok, strlen(tok)), 1);
        EVP_MD_CTX_free(md);
        if (EVP_PKEY_is_a(key, "EC")) {
            const unsigned char *q = sig;
            ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, (long)siglen);
            assert_non_null(es);
            BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32);
            BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32);
            siglen = 64;
            ECDSA_SIG_free(es);
        }
    }
    char s[1500];
    tk_b64url(sig, siglen, s);
    strcat(tok, ".");
    strcat(tok, s);
    return tok;
}

static char *payload(const char *iss, const char *aud_json, int64_t exp, const char *extra)
{
    static char buf[2048];
    snprintf(buf, sizeof(buf),
             "{\"iss\":\"%s\",\"aud\":%s,\"exp\":%lld,\"iat\":%lld,\"sub\":\"alice\","
             "\"azp\":\"agent-runtime\"%s}",
             iss, aud_json, (long long)exp, (long long)(NOW - 10), extra ? extra : "");
    return buf;
}

static int setup(void **state)
{
    (void)state;
    ec_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    other_ec_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    rsa_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    if (!ec_key || !rsa_key || !other_ec_key)
        return -1;
    char x[64], y[64], n[400], e[16];
    bn_b64(ec_key, OSSL_PKEY_PARAM_EC_PUB_X, 32, x);
    bn_b64(ec_key, OSSL_PKEY_PARAM_EC_PUB_Y, 32, y);
    bn_b64(rsa_key, OSSL_PKEY_PARAM_RSA_N, 0, n);
    bn_b64(rsa_key, OSSL_PKEY_PARAM_RSA_E, 0, e);
    char doc[2048];
    snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"ec1\",\"use\":\"sig\","
             "\"alg\":\"ES256\",\"x\":\"%s\",\"y\":\"%s\"},"
             "{\"kty\":\"RSA\",\"kid\":\"rsa1\",\"n\":\"%s\",\"e\":\"%s\"},"
             "{\"kty\":\"oct\",\"kid\":\"hmac\",\"k\":\"c2VjcmV0\"}]}",
             x, y, n, e);
    jwks = cx_jwt_jwks_parse(doc, strlen(doc), NULL);
    if (!jwks)
        return -1;
    strcpy(jwks_path, "/tmp/cx_jwt_test_XXXXXX");
    int fd = mkstemp(jwks_path);
    if (fd < 0 || write(fd, doc, strlen(doc)) != (ssize_t)strlen(doc))
        return -1;
    close(fd);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(ec_key);
    EVP_PKEY_free(rsa_key);
    EVP_PKEY_free(other_ec_key);
    cx_jwt_jwks_free(jwks);
    unlink(jwks_path);
    return 0;
}

static const cx_jwt_params_t params = {.issuer = ISS, .audience = AUD, .leeway_s = 30};

static cx_code_t verify(const char *tok, cx_jwt_claims_t *c)
{
    cx_error_t err;
    cx_error_clear(&err);
    bool ok = cx_jwt_verify_with_jwks(jwks, &params, tok, strlen(tok), NOW, c, &err);
    return ok ? CX_OK : err.code;
}

#define EC_HDR "{\"alg\":\"ES256\",\"kid\":\"ec1\",\"typ\":\"JWT\"}"

static void test_jwks_parse(void **state)
{
    (void)state;
    assert_int_equal(cx_jwt_jwks_count(jwks), 2); /* the oct key is skipped */
    cx_error_t err;
    assert_null(cx_jwt_jwks_parse("[]", 2, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_null(cx_jwt_jwks_parse("{\"keys\":1}", 10, &err));
    const char *bad_point = "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"k\","
                            "\"x\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\","
                            "\"y\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}]}";
    cx_jwks_t *j = cx_jwt_jwks_parse(bad_point, strlen(bad_point), &err);
    assert_non_null(j);
    assert_int_equal(cx_jwt_jwks_count(j), 0);
    cx_jwt_jwks_free(j);
    cx_jwt_jwks_free(NULL);
}

static void test_b64url_strict(void **state)
{
    (void)state;
    unsigned char out[16];
    size_t n;
    assert_true(cx_jwt_b64url_decode("YWJj", 4, out, sizeof(out), &n));
    assert_int_equal(n, 3);
    assert_memory_equal(out, "abc", 3);
    assert_true(cx_jwt_b64url_decode("YWI", 3, out, sizeof(out), &n));
    assert_int_equal(n, 2);
    assert_false(cx_jwt_b64url_decode("YWJ=", 4, out, sizeof(out), &n)); /* padding */
    assert_false(cx_jwt_b64url_decode("YW+j", 4, out, sizeof(out), &n)); /* std alphabet */
    assert_false(cx_jwt_b64url_decode("YWJ", 3, out, sizeof(out), &n));  /* stray bits */
    assert_false(cx_jwt_b64url_decode("Y", 1, out, sizeof(out), &n));
    assert_false(cx_jwt_b64url_decode("YWJj", 4, out, 2, &n)); /* too small */
}

static void test_es256_valid(void **state)
{
    (void)state;
    char *tok = sign_token(EC_HDR, payload(ISS, "\"credex\"", NOW + 300, NULL), ec_key);
    cx_jwt_claims_t c;
    assert_int_equal(verify(tok, &c), CX_OK);
    assert_string_equal(c.sub, "alice");
    assert_string_equal(c.azp, "agent-runtime");
    assert_string_equal(c.kid, "ec1");
    assert_string_equal(c.alg, "ES256");
    assert_int_equal(c.exp, NOW + 300);
    free(tok);
    /* aud as an array */
    tok = sign_token(EC_HDR, payload(ISS, "[\"other\",\"credex\"]", NOW + 300, NULL), ec_key);
    assert_int_equal(verify(tok, NULL), CX_OK);
    free(tok);
}

static void test_rs256_valid(void **state)
{
    (void)state;
    char *tok = sign_token("{\"alg\":\"RS256\",\"kid\":\"rsa1\"}",
                           payload(ISS, "\"credex\"", NOW + 300, NULL), rsa_key);
    assert_int_equal(verify(tok, NULL), CX_OK);
    free(tok);
    /* RS256 header with the EC key id: alg/key mismatch */
    tok = sign_token("{\"alg\":\"RS256\",\"kid\":\"ec1\"}",
                     payload(ISS, "\"credex\"", NOW + 300, NULL), rsa_key);
    assert_int_equal(verify(tok, NULL), CX_ERR_UNAUTHENTICATED);
    free(tok);
}

static void test_expired(void **state)
{
    (void)state;
    char *tok = sign_token(EC_HDR, payload(ISS, "\"credex\"", NOW - 31, NULL), ec_key);
    assert_int_equal(verify(tok, NULL), CX_ERR_UNAUTHENTICATED);
    free(tok);
    /* within leeway */
    tok = sign_token(EC_HDR, payload(ISS, "\"credex\"", NOW - 29, NULL), ec_key);
    assert_int_equal(verify(tok, NULL), CX_OK);
    free(tok);
    /* no exp at all */
    tok = sign_token(EC_HDR, "{\"iss\":\"" ISS "\",\"aud\":\"credex\",\"sub\":\"a\"}", ec_key);
    assert_int_equal(verify(tok, NULL), CX_ERR_UNAUTHENTICATED);
    free(tok);
}

static void test_nbf_future(void **state)
{
    (void)state;
    char extra[64];
    snprintf(extra, sizeof(extra), ",\"nbf\":%lld", (long long)(NOW + 120));
    char *tok = sign_token(EC_HDR, payload(ISS, "\"credex\"", NOW + 300, extra), ec_key);
    assert_int_equal(verify(tok, NULL), CX_ERR_UNAUTHENTICATED);
    free(tok);
    snprintf(extra, sizeof(extra), ",\"nbf\":%lld", (long long)(NOW + 20));
    tok = sign_token(EC_HDR, payload(ISS, "\"credex\"", NOW + 300, extra), ec_key);
    assert_int_equal(verify(tok, NULL), CX_OK);
    free(tok);
}

static void test_wrong_iss_aud_sub(void **state)
{
    (void)state;
    char *tok = sign_token(EC_HDR, payload(ISS "/", "\"credex\"", NOW + 300, NULL), ec_key);
    assert_int_equal(verify(tok, NULL), CX_ERR_UNAUTHENTICATED);
    free(tok);
    tok = sign_token(EC_HDR, payload(ISS, "\"credexx\"", NOW + 300, NULL), ec_key);
    assert_int_equal(verify(tok, NULL), CX_ERR_UNAUTHENTICATED);
    free(tok);
    tok = sign_token(EC_HDR, payload(ISS, "[\"a\",\"b\"]", NOW + 300, NULL), ec_key);
    assert_int_equal(verify(tok, NULL), CX_ERR_UNAUTHENTICATED);
    free(tok);
    char p[256];
    snprintf(p, sizeof(p), "{\"iss\":\"%s\",\"aud\":\"credex\",\"exp\":%lld}", ISS,
             (long long)(NOW + 300));
    tok = sign_token(EC_HDR, p, ec_key);
    assert_int_equal(verify(tok, NULL), CX_ERR_UNAUTHENTICATED); /* no sub */
    free(tok);
}

static void test_alg_none_and_hs256(void **state)
{
    (void)state;
    char h[128], p[2048], tok[4096];
    b64url_str("{\"alg\":\"none\",\"kid\":\"ec1\"}", h);
    b64url_str(payload(ISS, "\"credex\"", NOW + 300, NULL), p);
    snprintf(tok, sizeof(tok), "%s.%s.", h, p);
    assert_int_equal(verify(tok, NULL), CX_ERR_UNAUTHENTICATED);
    char *t = sign_token("{\"alg\":\"HS256\",\"kid\":\"hmac\"}",
                         payload(ISS, "\"credex\"", NOW + 300, NULL), NULL);
    assert_int_equal(verify(t, NULL), CX_ERR_UNAUTHENTICATED);
    free(t);
    t = sign_token("{\"alg\":\"HS256\",\"kid\":\"ec1\"}",
                   payload(ISS, "\"credex\"", NOW + 300, NULL), NULL);
    assert_int_equal(verify(t, NULL), CX_ERR_UNAUTHENTICATED);
    free(t);
}

static void test_unknown_kid(void **state)
{
    (void)state;
    char *tok = sign_token("{\"alg\":\"ES256\",\"kid\":\"nope\"}",
                           payload(ISS, "\"credex\"", NOW + 300, NULL), ec_key);
    cx_error_t err;
    assert_false(cx_jwt_verify_with_jwks(jwks, &params, tok, strlen(tok), NOW, NULL, &err));
    assert_int_equal(err.code, CX_ERR_UNAUTHENTICATED);
    assert_int_equal(err.detail, CX_DETAIL_JWT_UNKNOWN_KID);
    free(tok);
    /* a known kid with a bad signature is another fault: no refetch would help */
    tok = sign_token(EC_HDR, payload(ISS, "\"credex\"", NOW + 300, NULL), other_ec_key);
    assert_false(cx_jwt_verify_with_jwks(jwks, &params, tok, strlen(tok), NOW, NULL, &err));
    assert_int_equal(err.detail, CX_DETAIL_NONE);
    free(tok);
    /* no kid at all */
    tok = sign_token("{\"alg\":\"ES256\"}", payload(ISS, "\"credex\"", NOW + 300, NULL), ec_key);
    assert_int_equal(verify(tok, NULL), CX_ERR_UNAUTHENTICATED);
    free(tok);
}

/* The client claim (typed tokens, docs/IDENTITY.md): copied under the configured name, "" when
 * absent, and a token whose claim is not a non-empty string is refused rather than read as
 * absent (which would make it a user token). */
static void test_client_claim(void **state)
{
    (void)state;
    cx_jwt_claims_t c;
    char *tok = sign_token(
        EC_HDR, payload(ISS, "\"credex\"", NOW + 300, ",\"client_id\":\"agent-runtime\""), ec_key);
    assert_int_equal(verify(tok, &c), CX_OK);
    assert_string_equal(c.client, "agent-runtime");
    cx_jwt_params_t older = params; /* Keycloak before the service_account scope */
    older.client_claim = "clientId";
    cx_error_t err;
    assert_true(cx_jwt_verify_with_jwks(jwks, &older, tok, strlen(tok), NOW, &c, &err));
    assert_string_equal(c.client, "");
    free(tok);
    tok = sign_token(
        EC_HDR, payload(ISS, "\"credex\"", NOW + 300, ",\"clientId\":\"agent-runtime\""), ec_key);
    assert_true(cx_jwt_verify_with_jwks(jwks, &older, tok, strlen(tok), NOW, &c, &err));
    assert_string_equal(c.client, "agent-runtime");
    free(tok);
    tok = sign_token(EC_HDR, payload(ISS, "\"credex\"", NOW + 300, NULL), ec_key);
    assert_int_equal(verify(tok, &c), CX_OK);
    assert_string_equal(c.client, "");
    free(tok);
    const char *bad[] = {",\"client_id\":\"\"", ",\"client_id\":7", ",\"client_id\":[\"a\"]",
                         ",\"client_id\":null"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        tok = sign_token(EC_HDR, payload(ISS, "\"credex\"", NOW + 300, bad[i]), ec_key);
        assert_int_equal(verify(tok, NULL), CX_ERR_UNAUTHENTICATED);
        free(tok);
    }
}

static void test_tampered(void **state)
{
    (void)state;
    char *tok = sign_token(EC_HDR, payload(ISS, "\"credex\"", NOW + 300, NULL), ec_key);
    /* payload swapped for one claiming another subject */
    char *d1 = strchr(tok, '.'), *d2 = strchr(d1 + 1, '.');
    char p[2048], forged[8192];
    b64url_str(payload(ISS, "\"credex\"", NOW + 300, ",\"x\":1"), p);
    snprintf(forged, sizeof(forged), "%.*s.%s%s", (int)(d1 - tok), tok, p, d2);
    assert_int_equal(verify(forged, NULL), CX_ERR_UNAUTHENTICATED);
    /* one flipped signature character */
    char *last = tok + strlen(tok) - 5;
    *last = *last == 'A' ? 'B' : 'A';
    assert_int_equal(verify(tok, NULL), CX_ERR_UNAUTHENTICATED);
    free(tok);
    /* signed by a key that is not in the set, under a known kid */
    tok = sign_token(EC_HDR, payload(ISS, "\"credex\"", NOW + 300, NULL), other_ec_key);
    assert_int_equal(verify(tok, NULL), CX_ERR_UNAUTHENTICATED);
    free(tok);
}

static void test_malformed(void **state)
{
    (void)state;
    const char *bad[] = {"", "a", "a.b", "a.b.c.d", "..", "e30.e30.", "e30.e30.AAAA"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(verify(bad[i], NULL), CX_ERR_UNAUTHENTICATED);
    char *big = malloc(CX_JWT_TOKEN_MAX + 2);
    memset(big, 'A', CX_JWT_TOKEN_MAX + 1);
    big[CX_JWT_TOKEN_MAX + 1] = '\0';
    assert_int_equal(verify(big, NULL), CX_ERR_UNAUTHENTICATED);
    free(big);
    /* duplicate claim names are refused (two parsers could disagree on which one counts) */
    char *tok = sign_token(EC_HDR,
                           "{\"iss\":\"" ISS "\",\"aud\":\"credex\",\"exp\":1900000000,"
                           "\"sub\":\"a\",\"sub\":\"b\"}",
                           ec_key);
    assert_int_equal(verify(tok, NULL), CX_ERR_UNAUTHENTICATED);
    free(tok);
}

static void test_verifier_file(void **state)
{
    (void)state;
    cx_jwt_verifier_options_t o = {
        .jwks_source = jwks_path, .issuer = ISS, .audience = AUD, .leeway_s = 30, .cache_s = 300};
    cx_error_t err;
    cx_jwt_verifier_t *v = cx_jwt_verifier_new(&o, &err);
    assert_non_null(v);
    int64_t now = (int64_t)time(NULL);
    char p[512];
    snprintf(p, sizeof(p), "{\"iss\":\"%s\",\"aud\":\"credex\",\"exp\":%lld,\"sub\":\"bob\"}", ISS,
             (long long)(now + 60));
    char *tok = sign_token(EC_HDR, p, ec_key);
    cx_jwt_claims_t c;
    assert_true(cx_jwt_verify(v, tok, strlen(tok), &c, &err));
    assert_string_equal(c.sub, "bob");
    free(tok);
    tok = sign_token("{\"alg\":\"ES256\",\"kid\":\"zz\"}", p, ec_key);
    assert_false(cx_jwt_verify(v, tok, strlen(tok), &c, &err));
    assert_int_equal(err.code, CX_ERR_UNAUTHENTICATED);
    free(tok);
    cx_jwt_verifier_free(v);

    o.jwks_source = "/nonexistent/jwks.json";
    v = cx_jwt_verifier_new(&o, &err);
    tok = sign_token(EC_HDR, p, ec_key);
    assert_false(cx_jwt_verify(v, tok, strlen(tok), &c, &err));
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    free(tok);
    cx_jwt_verifier_free(v);

    o.jwks_source = "http://idp.test/jwks";
    assert_null(cx_jwt_verifier_new(&o, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    cx_jwt_verifier_free(NULL);
}

static void write_jwks(const char *path, EVP_PKEY *key, const char *kid)
{
    char x[64], y[64];
    bn_b64(key, OSSL_PKEY_PARAM_EC_PUB_X, 32, x);
    bn_b64(key, OSSL_PKEY_PARAM_EC_PUB_Y, 32, y);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"%s\",\"x\":\"%s\","
            "\"y\":\"%s\"}]}",
            kid, x, y);
    fclose(f);
}

/* A key rotated at the IdP: an unknown kid refetches the JWKS, at most once per interval. */
static void test_verifier_refetch_on_unknown_kid(void **state)
{
    (void)state;
    char path[64] = "/tmp/cx_jwt_rot_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    write_jwks(path, ec_key, "old");
    cx_jwt_verifier_options_t o = {.jwks_source = path,
                                   .issuer = ISS,
                                   .audience = AUD,
                                   .cache_s = 3600,
                                   .unknown_kid_refetch_s = 2};
    cx_error_t err;
    cx_jwt_verifier_t *v = cx_jwt_verifier_new(&o, &err);
    assert_non_null(v);
    int64_t now = (int64_t)time(NULL);
    char p[512];
    snprintf(p, sizeof(p), "{\"iss\":\"%s\",\"aud\":\"credex\",\"exp\":%lld,\"sub\":\"bob\"}", ISS,
             (long long)(now + 600));
    char *old_tok = sign_token("{\"alg\":\"ES256\",\"kid\":\"old\"}", p, ec_key);
    char *new_tok = sign_token("{\"alg\":\"ES256\",\"kid\":\"new\"}", p, other_ec_key);
    assert_true(cx_jwt_verify(v, old_tok, strlen(old_tok), NULL, &err));

    /* the IdP publishes the new key */
    write_jwks(path, other_ec_key, "new");
    /* within the interval of the first fetch (whole seconds: at most 1 apart): no refetch */
    assert_false(cx_jwt_verify(v, new_tok, strlen(new_tok), NULL, &err));
    assert_int_equal(err.code, CX_ERR_UNAUTHENTICATED);
    sleep(3);
    assert_true(cx_jwt_verify(v, new_tok, strlen(new_tok), NULL, &err));
    /* the old key is gone with the refetch */
    assert_false(cx_jwt_verify(v, old_tok, strlen(old_tok), NULL, &err));
    free(old_tok);
    free(new_tok);
    cx_jwt_verifier_free(v);
    unlink(path);
}

static char *token_for(const char *sub, int64_t exp)
{
    char p[512];
    snprintf(p, sizeof(p), "{\"iss\":\"%s\",\"aud\":\"credex\",\"exp\":%lld,\"sub\":\"%s\"}", ISS,
             (long long)exp, sub);
    return sign_token(EC_HDR, p, ec_key);
}

/* The verified-token cache: a token seen again skips the signature, never the time checks; a
 * failed token is never remembered; the set is bounded; a new key set forgets everything. */
static void test_verifier_cache(void **state)
{
    (void)state;
    cx_jwt_verifier_options_t o = {.jwks_source = jwks_path,
                                   .issuer = ISS,
                                   .audience = AUD,
                                   .leeway_s = 30,
                                   .cache_s = 300,
                                   .cache_max_entries = 4};
    cx_error_t err;
    o.client_claim = "clientId";
    cx_jwt_verifier_t *v = cx_jwt_verifier_new(&o, &err);
    assert_non_null(v);
    int64_t now = (int64_t)time(NULL);
    char p[512];
    snprintf(p, sizeof(p),
             "{\"iss\":\"%s\",\"aud\":\"credex\",\"exp\":%lld,\"sub\":\"carol\","
             "\"azp\":\"svc\",\"clientId\":\"svc\"}",
             ISS, (long long)(now + 60));
    char *tok = sign_token(EC_HDR, p, ec_key);
    cx_jwt_claims_t c1, c2;
    cx_jwt_cache_stats_t st;
    assert_true(cx_jwt_verify_at(v, tok, strlen(tok), now, &c1, &err));
    assert_true(cx_jwt_verify_at(v, tok, strlen(tok), now, &c2, &err));
    assert_memory_equal(&c1, &c2, sizeof(c1));
    assert_string_equal(c2.sub, "carol");
    assert_string_equal(c2.client, "svc"); /* the remembered claims keep the client claim */
    cx_jwt_verifier_cache_stats(v, &st);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.misses, 1);

    /* remembered, but expired by now (past exp + leeway): refused as without the cache */
    assert_false(cx_jwt_verify_at(v, tok, strlen(tok), now + 91, NULL, &err));
    assert_int_equal(err.code, CX_ERR_UNAUTHENTICATED);
    assert_non_null(strstr(err.message, "expired"));
    cx_jwt_verifier_cache_stats(v, &st);
    assert_int_equal(st.hits, 2);

    /* the same claims under a forged signature: a different token, verified in full, refused,
     * and not remembered either */
    char *forged = strdup(tok);
    char *last = forged + strlen(forged) - 5;
    *last = *last == 'A' ? 'B' : 'A';
    for (int i = 0; i < 2; i++) {
        assert_false(cx_jwt_verify_at(v, forged, strlen(forged), now, NULL, &err));
        assert_int_equal(err.code, CX_ERR_UNAUTHENTICATED);
    }
    cx_jwt_verifier_cache_stats(v, &st);
    assert_int_equal(st.hits, 2);
    free(forged);

    /* bounded: four entries; the oldest of six distinct tokens are forgotten */
    char *many[6];
    for (int i = 0; i < 6; i++) {
        char sub[16];
        snprintf(sub, sizeof(sub), "u%d", i);
        many[i] = token_for(sub, now + 60);
        assert_true(cx_jwt_verify_at(v, many[i], strlen(many[i]), now, NULL, &err));
    }
    cx_jwt_verifier_cache_stats(v, &st);
    uint64_t hits = st.hits;
    assert_true(cx_jwt_verify_at(v, many[5], strlen(many[5]), now, NULL, &err));
    cx_jwt_verifier_cache_stats(v, &st);
    assert_int_equal(st.hits, hits + 1);
    assert_true(cx_jwt_verify_at(v, many[0], strlen(many[0]), now, NULL, &err));
    cx_jwt_verifier_cache_stats(v, &st);
    assert_int_equal(st.hits, hits + 1);
    for (int i = 0; i < 6; i++)
        free(many[i]);
    free(tok);
    cx_jwt_verifier_free(v);

    /* cache off: never a hit */
    o.cache_max_entries = 0;
    v = cx_jwt_verifier_new(&o, &err);
    tok = token_for("dave", now + 60);
    assert_true(cx_jwt_verify_at(v, tok, strlen(tok), now, NULL, &err));
    assert_true(cx_jwt_verify_at(v, tok, strlen(tok), now, NULL, &err));
    cx_jwt_verifier_cache_stats(v, &st);
    assert_int_equal(st.hits, 0);
    free(tok);
    cx_jwt_verifier_free(v);
}

/* A key the IdP withdrew stops being honoured at the next JWKS fetch, remembered tokens too. */
static void test_verifier_cache_forgets_on_new_keys(void **state)
{
    (void)state;
    char path[64] = "/tmp/cx_jwt_cache_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    write_jwks(path, ec_key, "ec1");
    cx_jwt_verifier_options_t o = {
        .jwks_source = path, .issuer = ISS, .audience = AUD, .cache_s = 1, .cache_max_entries = 64};
    cx_error_t err;
    cx_jwt_verifier_t *v = cx_jwt_verifier_new(&o, &err);
    assert_non_null(v);
    char *tok = token_for("erin", (int64_t)time(NULL) + 600);
    assert_true(cx_jwt_verify(v, tok, strlen(tok), NULL, &err));
    assert_true(cx_jwt_verify(v, tok, strlen(tok), NULL, &err));
    cx_jwt_cache_stats_t st;
    cx_jwt_verifier_cache_stats(v, &st);
    assert_int_equal(st.hits, 1);
    write_jwks(path, other_ec_key, "kid-other"); /* ec1 withdrawn */
    sleep(2);                                    /* past cache_s: the next call refetches */
    assert_false(cx_jwt_verify(v, tok, strlen(tok), NULL, &err));
    assert_int_equal(err.code, CX_ERR_UNAUTHENTICATED);
    cx_jwt_verifier_cache_stats(v, &st);
    assert_int_equal(st.hits, 1);
    free(tok);
    cx_jwt_verifier_free(v);
    unlink(path);
}

/* ---- an https JWKS, served by a real TLS server (openssl s_server -WWW) ----------------- */

/* The https source: the server is verified against the configured CA bundle (not the system
 * store when one is given), a server from another CA is refused, and the whole fetch is
 * bounded by fetch_timeout_ms: every failure leaves the verifier without keys, so tokens fail
 * closed (unavailable), never open. */
static void test_verifier_https(void **state)
{
    (void)state;
    const char *ca = tk_pki_path("ca.pem"), *other_ca = tk_pki_path("test/other-ca.pem");
    char dir[64] = "/tmp/cx_jwks_https_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char file[128];
    snprintf(file, sizeof(file), "%s/jwks.json", dir);
    write_jwks(file, ec_key, "ec1");
    int port = tk_free_port("127.0.0.1");
    pid_t server = tk_tls_file_server(dir, "127.0.0.1", port, "gateway");

    char url[128];
    snprintf(url, sizeof(url), "https://localhost:%d/jwks.json", port);
    char *tok = token_for("frank", (int64_t)time(NULL) + 600);
    cx_jwt_verifier_options_t o = {
        .jwks_source = url, .issuer = ISS, .audience = AUD, .cache_s = 300, .ca_file = ca};
    cx_error_t err;
    cx_jwt_claims_t c;
    cx_jwt_verifier_t *v = cx_jwt_verifier_new(&o, &err);
    assert_non_null(v);
    if (!cx_jwt_verify(v, tok, strlen(tok), &c, &err))
        fail_msg("https JWKS with our CA: %s", err.message);
    assert_string_equal(c.sub, "frank");
    cx_jwt_verifier_free(v);

    /* a bundle that cannot be read is a configuration error at creation, not a runtime one */
    o.ca_file = "/nonexistent/ca.pem";
    assert_null(cx_jwt_verifier_new(&o, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "CREDEX_JWKS_CA_FILE"));

    /* a bundle that does not hold the server's CA; the system store (no bundle) neither */
    const char *untrusted[] = {other_ca, NULL};
    for (size_t i = 0; i < 2; i++) {
        o.ca_file = untrusted[i];
        v = cx_jwt_verifier_new(&o, &err);
        assert_false(cx_jwt_verify(v, tok, strlen(tok), NULL, &err));
        assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
        assert_int_equal(err.detail, CX_DETAIL_HTTP_TLS);
        assert_null(strstr(err.message, tok));
        cx_jwt_verifier_free(v);
    }
    tk_process_stop(server);

    /* a server that accepts the connection and never answers: bounded by fetch_timeout_ms */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(lfd, 4), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    snprintf(url, sizeof(url), "https://localhost:%d/jwks.json", ntohs(a.sin_port));
    o.ca_file = ca;
    o.fetch_timeout_ms = 300;
    v = cx_jwt_verifier_new(&o, &err);
    double t0 = tk_now();
    assert_false(cx_jwt_verify(v, tok, strlen(tok), NULL, &err));
    double took = tk_now() - t0;
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    assert_int_equal(err.detail, CX_DETAIL_HTTP_TIMEOUT);
    if (took < 0.25 || took > 2.0)
        fail_msg("a silent JWKS server took %.2f s to fail, with a 0.3 s timeout", took);
    cx_jwt_verifier_free(v);
    close(lfd);
    free(tok);
    unlink(file);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jwks_parse),
        cmocka_unit_test(test_b64url_strict),
        cmocka_unit_test(test_es256_valid),
        cmocka_unit_test(test_rs256_valid),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_nbf_future),
        cmocka_unit_test(test_wrong_iss_aud_sub),
        cmocka_unit_test(test_alg_none_and_hs256),
        cmocka_unit_test(test_unknown_kid),
        cmocka_unit_test(test_client_claim),
        cmocka_unit_test(test_tampered),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_verifier_file),
        cmocka_unit_test(test_verifier_refetch_on_unknown_kid),
        cmocka_unit_test(test_verifier_cache),
        cmocka_unit_test(test_verifier_cache_forgets_on_new_keys),
        cmocka_unit_test(test_verifier_https),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
