/*
 * Fuzz target: JWKS documents (common/jwt), which arrive from a file or the IdP's URL.
 *
 * An input starting with '{' is the document's text. Anything else is read as keys, one per
 * line, each a tab-separated list of members in the order kty, kid, use, alg, crv, x, y, n, e
 * (an empty field leaves the member out). The big numbers x, y, n, e are hex that the harness
 * base64url-encodes (or, after a leading '=', base64url text taken verbatim), so mutations of
 * a real key stay past the JSON and base64url layers and reach the key checks. The harness
 * then appends a key of its own ("good") and builds the document with jansson.
 *
 * Invariants (abort on violation): never more than CX_JWKS_MAX_KEYS keys, nor more than the
 * document has; in a built document within the size limit whose other keys are fewer than
 * CX_JWKS_MAX_KEYS and none named "good", the good key is usable: a token it signed verifies.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/jwt/cx_jwt.h"
#include "fuzz/fuzz_jws.h"

static const char *const members[] = {"kty", "kid", "use", "alg", "crv", "x", "y", "n", "e"};
#define NMEMBERS  (sizeof(members) / sizeof(members[0]))
#define FIRST_BIG 5    /* x, y, n, e */
#define BIG_MAX   1100 /* past the 1024-byte modulus limit */

static struct {
    json_t *good; /* the harness's own JWK */
    char *token;  /* a valid token signed by it */
    size_t token_len;
} k;

static void fuzz_init(void)
{
    static const char hdr[] = "{\"alg\":\"ES256\",\"kid\":\"good\"}";
    static const char pay[] = "{\"iss\":\"i\",\"aud\":\"credex\",\"exp\":4102444800,\"sub\":\"s\"}";
    char jwk[1024];
    uint8_t sig[FUZZ_JWS_SIG_MAX];
    EVP_PKEY *key = fuzz_jws_keygen(FUZZ_JWS_ES256);
    fuzz_jws_jwk(key, FUZZ_JWS_ES256, "good", jwk, sizeof(jwk));
    k.good = json_loads(jwk, 0, NULL);
    k.token = fuzz_jws_signing_input((const uint8_t *)hdr, strlen(hdr), (const uint8_t *)pay,
                                     strlen(pay), &k.token_len);
    size_t n = fuzz_jws_sign(key, FUZZ_JWS_ES256, (const uint8_t *)k.token, k.token_len, sig);
    fuzz_jws_append_sig(k.token, &k.token_len, sig, n);
    EVP_PKEY_free(key);
    if (k.good == NULL)
        abort();
}

/* A JSON string of the bytes, or NULL (member left out) for what JSON text cannot carry to
 * the parser: invalid UTF-8, and NUL, which jansson reads only when asked to. */
static json_t *as_json_string(const uint8_t *data, size_t len)
{
    return memchr(data, '\0', len) ? NULL : json_stringn((const char *)data, len);
}

/* One member's value from a field: text, or for the big numbers base64url of hex. */
static json_t *member_value(size_t m, const fuzz_part_t *f)
{
    if (m < FIRST_BIG || (f->len > 0 && f->data[0] == '='))
        return m < FIRST_BIG ? as_json_string(f->data, f->len)
                             : as_json_string(f->data + 1, f->len - 1);
    uint8_t bin[BIG_MAX];
    char b64[FUZZ_B64URL_LEN(BIG_MAX) + 1];
    size_t n = fuzz_hex_decode(f->data, f->len, bin, sizeof(bin));
    return json_stringn(b64, fuzz_b64url_encode(bin, n, b64));
}

/* The keys of the input, then the good one; *named_good when an input key is called "good". */
static json_t *build(const uint8_t *data, size_t size, size_t *nkeys, bool *named_good)
{
    fuzz_part_t lines[CX_JWKS_MAX_KEYS + 2];
    json_t *keys = json_array();
    *nkeys = fuzz_split(data, size, '\n', lines, CX_JWKS_MAX_KEYS + 2);
    *named_good = false;
    for (size_t i = 0; i < *nkeys; i++) {
        fuzz_part_t f[NMEMBERS];
        size_t nf = fuzz_split(lines[i].data, lines[i].len, '\t', f, NMEMBERS);
        json_t *jwk = json_object();
        for (size_t m = 0; m < nf; m++)
            if (f[m].len > 0)
                json_object_set_new(jwk, members[m], member_value(m, &f[m]));
        if (nf > 1 && f[1].len == 4 && memcmp(f[1].data, "good", 4) == 0)
            *named_good = true;
        json_array_append_new(keys, jwk);
    }
    json_array_append(keys, k.good);
    return json_pack("{so}", "keys", keys);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (k.good == NULL)
        fuzz_init();
    if (size > 0 && data[0] == '{') {
        cx_jwks_t *j = cx_jwt_jwks_parse((const char *)data, size, NULL);
        if (j && cx_jwt_jwks_count(j) > CX_JWKS_MAX_KEYS)
            abort();
        cx_jwt_jwks_free(j);
        return 0;
    }
    size_t nkeys;
    bool named_good;
    json_t *doc = build(data, size, &nkeys, &named_good);
    char *text = json_dumps(doc, JSON_COMPACT);
    cx_jwks_t *j = text ? cx_jwt_jwks_parse(text, strlen(text), NULL) : NULL;
    size_t count = cx_jwt_jwks_count(j);
    if (text == NULL || count > CX_JWKS_MAX_KEYS || count > nkeys + 1)
        abort();
    if (nkeys < CX_JWKS_MAX_KEYS && !named_good && strlen(text) <= CX_JWKS_MAX_BYTES) {
        cx_jwt_params_t p = {.issuer = "i", .audience = "credex"};
        cx_error_t err;
        if (!cx_jwt_verify_with_jwks(j, &p, k.token, k.token_len, 1800000000, NULL, &err))
            abort();
    }
    cx_jwt_jwks_free(j);
    free(text);
    json_decref(doc);
    return 0;
}
