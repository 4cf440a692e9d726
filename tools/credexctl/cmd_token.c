/*
 * credexctl token: dev JWTs signed with the dev issuer's key (docs/IDENTITY.md "Dev tokens").
 *
 *   credexctl token --user ID [--ttl S]                 a user access token (sub = ID)
 *   credexctl token --service NAME [--ttl S]            a service JWT (sub service-account-NAME,
 *                                                       azp NAME, client_id NAME)
 *   credexctl token --service NAME --user ID [--ttl S]  an on-behalf-of user token held by the
 *                                                       service (sub = ID, azp = NAME)
 *
 * The shapes are Keycloak's, so that they pass the gateway's default rule for telling service
 * tokens from user tokens (CREDEX_JWT_SERVICE_RULE=client_claim, docs/IDENTITY.md): only a
 * client-credentials token carries client_id; user and on-behalf-of tokens never do.
 *
 * ES256 over the P-256 key in <pki>/jwt-signing.key; kid is the kid of <pki>/jwks.json (the
 * gateway only looks kids up there); iss from CREDEX_JWT_ISSUER, else <pki>/jwt-issuer.txt; aud
 * CREDEX_JWT_AUDIENCE. Only a stack whose CREDEX_JWKS is the dev JWKS accepts these tokens.
 */
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/credexctl/credexctl.h"

#define TOKEN_TTL_DEFAULT 600u
#define TOKEN_TTL_MAX     86400u

static void usage(FILE *f)
{
    fputs(
        "usage: credexctl token --user ID [--ttl SECONDS]\n"
        "       credexctl token --service NAME [--user ID] [--ttl SECONDS]\n"
        "Mint a dev JWT (ES256) with the dev issuer key and print it on stdout.\n"
        "  --user ID        user token: sub = ID\n"
        "  --service NAME   service JWT: sub = service-account-NAME, azp = client_id = NAME;\n"
        "                   with --user, an on-behalf-of user token issued to that service\n"
        "                   (sub = ID, azp = NAME, no client_id)\n"
        "  --ttl SECONDS    lifetime, 1..86400 (default 600)\n"
        "Key: $CREDEX_RUN_DIR/pki/jwt-signing.key (default .run/pki); kid from jwks.json;\n"
        "iss: CREDEX_JWT_ISSUER or pki/jwt-issuer.txt; aud: CREDEX_JWT_AUDIENCE (default credex).\n"
        "Dev only: accepted solely by a stack whose CREDEX_JWKS is the dev JWKS.\n",
        f);
}

static char *b64url(const unsigned char *in, size_t len)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;
    if (out == NULL)
        return NULL;
    size_t i = 0;
    for (; i + 2 < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        *o++ = tbl[v >> 18 & 63];
        *o++ = tbl[v >> 12 & 63];
        *o++ = tbl[v >> 6 & 63];
        *o++ = tbl[v & 63];
    }
    if (i < len) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < len ? (unsigned)in[i + 1] << 8 : 0);
        *o++ = tbl[v >> 18 & 63];
        *o++ = tbl[v >> 12 & 63];
        if (i + 1 < len)
            *o++ = tbl[v >> 6 & 63];
    }
    *o = '\0';
    return out;
}

static char *b64url_json(json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (s == NULL)
        return NULL;
    char *out = b64url((const unsigned char *)s, strlen(s));
    free(s);
    return out;
}

static bool load_kid(const char *pki, char *kid, size_t kidsz, cx_error_t *err)
{
    char path[600];
    snprintf(path, sizeof path, "%s/jwks.json", pki);
    json_error_t jerr;
    json_t *jwks = json_load_file(path, 0, &jerr);
    if (jwks == NULL)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "cannot read %s (run scripts/run once to create the dev PKI)", path);
    json_t *keys = json_object_get(jwks, "keys");
    const char *k = json_string_value(json_object_get(json_array_get(keys, 0), "kid"));
    bool ok = k != NULL && strlen(k) < kidsz;
    if (ok)
        snprintf(kid, kidsz, "%s", k);
    json_decref(jwks);
    return ok ? true : cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s has no usable kid", path);
}

static EVP_PKEY *load_key(const char *pki, cx_error_t *err)
{
    char path[600];
    snprintf(path, sizeof path, "%s/jwt-signing.key", pki);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                     "cannot open %s (run scripts/run once to create the dev PKI)", path);
        return NULL;
    }
    EVP_PKEY *key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (key == NULL || EVP_PKEY_get_base_id(key) != EVP_PKEY_EC || EVP_PKEY_get_bits(key) != 256) {
        EVP_PKEY_free(key);
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s is not a P-256 private key", path);
        return NULL;
    }
    return key;
}

/* ES256: ECDSA P-256 over SHA-256, the signature as r || s (32 bytes each, RFC 7518 3.4). */
static bool sign_es256(EVP_PKEY *key, const char *input, unsigned char sig[64], cx_error_t *err)
{
    bool ok = false;
    unsigned char der[128];
    size_t derlen = sizeof der;
    ECDSA_SIG *es = NULL;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
        EVP_DigestSign(md, der, &derlen, (const unsigned char *)input, strlen(input)) != 1)
        goto out;
    const unsigned char *p = der;
    es = d2i_ECDSA_SIG(NULL, &p, (long)derlen);
    if (es == NULL)
        goto out;
    const BIGNUM *r = NULL, *s = NULL;
    ECDSA_SIG_get0(es, &r, &s);
    ok = BN_bn2binpad(r, sig, 32) == 32 && BN_bn2binpad(s, sig + 32, 32) == 32;
out:
    ECDSA_SIG_free(es);
    EVP_MD_CTX_free(md);
    return ok ? true : cx_error_set(err, CX_ERR_INTERNAL, "ES256 signing failed");
}

bool cli_token_mint(const cx_config_t *cfg, const cli_token_spec_t *spec, char **out,
                    cx_error_t *err)
{
    char pki[512], kid[128];
    char *issuer_file = NULL, *h64 = NULL, *c64 = NULL, *s64 = NULL, *input = NULL;
    json_t *header = NULL, *claims = NULL;
    EVP_PKEY *key = NULL;
    bool ok = false;
    cli_pki_dir(pki, sizeof pki);

    const char *iss = cfg->jwt_issuer;
    if (iss[0] == '\0') {
        char path[600];
        snprintf(path, sizeof path, "%s/jwt-issuer.txt", pki);
        if (!cli_read_text_file(path, 255, &issuer_file, err))
            goto out;
        iss = issuer_file;
    }
    if (!load_kid(pki, kid, sizeof kid, err) || (key = load_key(pki, err)) == NULL)
        goto out;

    json_int_t now = (json_int_t)time(NULL);
    unsigned char rnd[12], sig[64];
    char jti[2 * sizeof rnd + 1];
    if (RAND_bytes(rnd, sizeof rnd) != 1) {
        cx_error_set(err, CX_ERR_INTERNAL, "no randomness for the token id");
        goto out;
    }
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(jti + 2 * i, 3, "%02x", rnd[i]);

    header = json_pack("{s:s, s:s, s:s}", "alg", "ES256", "typ", "JWT", "kid", kid);
    claims = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s}", "iss", iss, "aud", cfg->jwt_audience,
                       "sub", spec->sub, "iat", now, "nbf", now, "exp",
                       now + (json_int_t)spec->ttl_s, "jti", jti);
    if (header == NULL || claims == NULL) {
        cx_error_set(err, CX_ERR_INTERNAL, "cannot build the token");
        goto out;
    }
    if (spec->azp != NULL)
        json_object_set_new(claims, "azp", json_string(spec->azp));
    /* Keycloak names a client's service account service-account-<client>: a token for that
     * subject is the client's own (client credentials) and carries the client claim. */
    if (spec->azp != NULL && strncmp(spec->sub, "service-account-", 16) == 0 &&
        strcmp(spec->sub + 16, spec->azp) == 0)
        json_object_set_new(claims, "client_id", json_string(spec->azp));
    h64 = b64url_json(header);
    c64 = b64url_json(claims);
    if (h64 == NULL || c64 == NULL || asprintf(&input, "%s.%s", h64, c64) < 0) {
        input = NULL;
        cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        goto out;
    }
    if (!sign_es256(key, input, sig, err))
        goto out;
    s64 = b64url(sig, sizeof sig);
    if (s64 == NULL || asprintf(out, "%s.%s", input, s64) < 0) {
        cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        goto out;
    }
    ok = true;
out:
    free(issuer_file);
    free(h64);
    free(c64);
    free(s64);
    free(input);
    json_decref(header);
    json_decref(claims);
    EVP_PKEY_free(key);
    return ok;
}

int cmd_token(const cx_config_t *cfg, int argc, char **argv)
{
    const char *user = NULL, *service = NULL, *ttl = NULL, *pos[1];
    size_t npos;
    bool help;
    const cli_opt_t opts[] = {{.name = "user", .kind = CLI_OPT_VALUE, .value = &user},
                              {.name = "service", .kind = CLI_OPT_VALUE, .value = &service},
                              {.name = "ttl", .kind = CLI_OPT_VALUE, .value = &ttl},
                              {0}};
    if (!cli_parse("token", argc, argv, opts, pos, 0, &npos, &help))
        return CLI_USAGE;
    if (help) {
        usage(stdout);
        return CLI_OK;
    }
    if (user == NULL && service == NULL)
        return cli_usage_error("token", "give --user ID and/or --service NAME (see --help)");
    if (user != NULL && !cli_valid_principal(user))
        return cli_usage_error("token", "--user: expected 1..128 of [A-Za-z0-9._@+-]");
    if (service != NULL && !cli_valid_service(service))
        return cli_usage_error("token", "--service: expected 1..63 of [a-z0-9-]");
    uint64_t ttl_s = TOKEN_TTL_DEFAULT;
    if (ttl != NULL && !cli_parse_uint(ttl, 1, TOKEN_TTL_MAX, &ttl_s))
        return cli_usage_error("token", "--ttl: expected an integer in 1..%u", TOKEN_TTL_MAX);

    char sub[160];
    if (user != NULL)
        snprintf(sub, sizeof sub, "%s", user);
    else
        snprintf(sub, sizeof sub, "service-account-%s", service);
    cli_token_spec_t spec = {.sub = sub, .azp = service, .ttl_s = (unsigned)ttl_s};
    cx_error_t err;
    char *tok = NULL;
    if (!cli_token_mint(cfg, &spec, &tok, &err))
        return cli_fail(&err);
    printf("%s\n", tok);
    free(tok);
    return CLI_OK;
}
