/*
 * fuzz_corpus: writes the seed corpus of every fuzz target, fuzz/corpus/<target>/<name>, from
 * credex's own encoders where it has them (metadata, payload and audit documents as store
 * writes them, protobuf requests, the JSON mapping's own output, the edge's route table) and
 * from hand-written samples of outside formats (tokens, key sets, OpenFGA answers,
 * certificates, HTTP requests). Valid samples and near-valid ones (one field off), a dozen or
 * so per target, a few KB each.
 *
 *   fuzz_corpus DIR          write the files (unchanged ones are left alone)
 *   fuzz_corpus --check DIR  exit 1 when a file is missing or differs (ctest fuzz_corpus)
 *   fuzz_corpus --local DIR  write only the credential-shaped seeds, DIR/<target>/<name>
 *
 * Credential-shaped seeds (what the log redaction and the configuration's refusals must
 * recognise: provider tokens, private-key headers, passwords in URLs) are never committed: they
 * are written at build time into a git-ignored folder (ctest fixture fuzz_local_corpus,
 * build/.../fuzz/local-corpus; scripts/fuzz likewise), and their text is assembled here from
 * parts, so that no file of the repository holds anything a secret scanner would take for a
 * real credential.
 *
 * Output is byte-for-byte reproducible: fixed ids, times and bytes; key material derived from
 * fixed numbers; certificates signed with Ed25519, whose signatures are deterministic. Files in
 * DIR that this program does not write (regressions from fuzzing) are kept and not checked.
 */
#include <errno.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/pjson/pjson.h"
#include "fuzz/fuzz_kit.h"
#include "fuzz/fuzz_pjson_types.h"
#include "credex/v1/gateway.pb-c.h"
#include "services/edge/edge_internal.h"
#include "services/store/store_internal.h"

static struct {
    const char *dir;
    bool check;
    bool local;    /* --local: only the credential-shaped seeds are written */
    bool in_local; /* inside emit_local */
    unsigned written, differ;
} g;

/* ---- output ------------------------------------------------------------------------------ */

static bool same_file(const char *path, const uint8_t *data, size_t len)
{
    uint8_t buf[65536];
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return false;
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    return n == len && memcmp(buf, data, len) == 0;
}

/* prefix (NUL-terminated) then len bytes of data, as DIR/target/name. */
static void emit_cat(const char *target, const char *name, const char *prefix, const void *data,
                     size_t len)
{
    char path[1024];
    uint8_t buf[65536];
    size_t pl = strlen(prefix);
    if (g.local != g.in_local)
        return; /* --local writes the credential-shaped seeds only, DIR the others only */
    if (pl + len > sizeof(buf))
        abort();
    memcpy(buf, prefix, pl);
    if (len > 0)
        memcpy(buf + pl, data, len);
    snprintf(path, sizeof(path), "%s/%s", g.dir, target);
    if (!g.check && mkdir(path, 0755) != 0 && errno != EEXIST) {
        perror(path);
        exit(2);
    }
    snprintf(path, sizeof(path), "%s/%s/%s", g.dir, target, name);
    if (same_file(path, buf, pl + len))
        return;
    if (g.check) {
        fprintf(stderr, "fuzz_corpus: %s is missing or out of date\n", path);
        g.differ++;
        return;
    }
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(buf, 1, pl + len, f) != pl + len || fclose(f) != 0) {
        perror(path);
        exit(2);
    }
    g.written++;
}

static void emit(const char *target, const char *name, const char *text)
{
    emit_cat(target, name, "", text, strlen(text));
}

/* A credential-shaped seed: written only with --local, into the git-ignored folder. */
static void emit_local(const char *target, const char *name, const char *text)
{
    if (!g.local)
        return;
    g.in_local = true;
    emit_cat(target, name, "", text, strlen(text));
    g.in_local = false;
}

/* `head` + `tail` + n characters of `alphabet`, cycled from its `from`-th, into out: the shape
 * of a provider token (e.g. "gh" "p_" + 36 alphanumerics) without its text in this file. */
static const char ALNUM[] = "0123456789abcdefghijABCDEFGHIJklmnopqrKLMNOPQRstuvwxyzSTUVWXYZ";
static const char UPPER_DIGIT[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

static const char *fake_token(char *out, size_t outsz, const char *head, const char *tail, size_t n,
                              const char *alphabet, unsigned from)
{
    size_t k = (size_t)snprintf(out, outsz, "%s%s", head, tail), m = strlen(alphabet);
    for (size_t i = 0; i < n && k + 1 < outsz; i++)
        out[k++] = alphabet[(from + i) % m];
    out[k] = '\0';
    return out;
}

/* The document as the raw form of fuzz_bson.h: without its length prefix and terminator. */
static void emit_bson_raw(const char *target, const char *name, const char *prefix,
                          const bson_t *doc)
{
    emit_cat(target, name, prefix, bson_get_data(doc) + 4, doc->len - 5);
}

static void emit_msg(const char *target, const char *name, const char *prefix,
                     const ProtobufCMessage *m)
{
    uint8_t buf[8192];
    size_t n = protobuf_c_message_get_packed_size(m);
    if (n > sizeof(buf) || protobuf_c_message_pack(m, buf) != n)
        abort();
    emit_cat(target, name, prefix, buf, n);
}

/* ---- fuzz_config, fuzz_log ---------------------------------------------------------------- */

static void corpus_config(void)
{
    const char *t = "fuzz_config";
    emit(t, "dev-stack",
         "CAIPE_CREDENTIALS_ENABLED=true\nCREDENTIAL_STORE_BACKEND=mongodb-envelope\n"
         "CREDENTIAL_KEY_PROVIDER=local-cmk\nCREDEX_LOCAL_CMK_KEY_FILE=/srv/.run/keys/cmk.key\n"
         "CREDEX_TLS_CA=/srv/.run/pki/ca.pem\nCREDEX_TLS_CERT=/srv/.run/pki/store.pem\n"
         "CREDEX_TLS_KEY=/srv/.run/pki/store.key\nCREDEX_STORE_ADDR=127.0.0.1:7102\n"
         "CREDEX_MONGO_URI=mongodb://127.0.0.1:27017\nCREDEX_MONGO_DB=credex\n"
         "CREDEX_OPENFGA_URL=http://127.0.0.1:8081\nCREDEX_OPENFGA_STORE_ID=01HXYZSTORE\n"
         "CREDEX_JWKS=/srv/.run/pki/jwks.json\nCREDEX_JWT_ISSUER=https://idp.credex.test\n"
         "CREDEX_JWT_AUDIENCE=credex\nCREDEX_LOG_LEVEL=debug\n");
    emit(t, "production-local-cmk",
         "CAIPE_CREDENTIALS_ENABLED=1\nCREDEX_PRODUCTION=yes\nCREDENTIAL_KEY_PROVIDER=dev-local\n");
    emit(t, "aws-kms",
         "CREDENTIAL_KEY_PROVIDER=aws-kms\nCREDENTIAL_KMS_CMK_ID=arn:aws:kms:eu-west-1:1:key/k\n"
         "CREDENTIAL_KMS_REGION=eu-west-1\nCREDEX_PRODUCTION=true\n");
    emit(t, "limits-low",
         "CREDEX_RPC_THREADS=0\nCREDEX_RPC_MAX_MESSAGE_BYTES=1023\nCREDEX_RPC_DEADLINE_MS=9\n"
         "CREDEX_JWKS_CACHE_S=9\nCREDEX_OPENFGA_WATCH_MS=19\nCREDEX_AUDIT_BATCH_MAX=0\n");
    emit(t, "limits-high",
         "CREDEX_RPC_THREADS=257\nCREDEX_RPC_MAX_DEADLINE_MS=600001\nCREDEX_JWT_LEEWAY_S=301\n"
         "CREDEX_DEK_CACHE_MAX_USES=18446744073709551616\nCREDEX_MONGO_POOL_MAX=-1\n");
    emit(
        t, "caches-off",
        "CREDEX_DEK_CACHE_TTL_MS=0\nCREDEX_OPENFGA_CACHE_TTL_MS=0\nCREDEX_JWT_CACHE_MAX_ENTRIES=0\n"
        "CREDEX_PAYLOAD_CACHE_MAX_ENTRIES=0\nCREDEX_MONGO_WRITE_CONCERN=1\n");
    emit(t, "jwt-rules",
         "CREDEX_JWT_SERVICE_RULE=sub_is_client\nCREDEX_JWT_CLIENT_CLAIM=azp\n"
         "CREDEX_JWKS=https://idp.credex.test/certs\nCREDEX_JWKS_CA_FILE=/etc/ca.pem\n"
         "CREDEX_JWKS_TIMEOUT_MS=100\n");
    emit(t, "bad-values",
         "CAIPE_CREDENTIALS_ENABLED=yes please\nCREDENTIAL_KEY_PROVIDER=kms\n"
         "CREDEX_RPC_THREADS= 8\nCREDEX_LOG_LEVEL=verbose\n");
    char tok[64], line[1024];
    snprintf(line, sizeof(line), "CREDEX_LOG_LEVEL=%s\nCREDEX_JWT_SERVICE_RULE=Bearer %s\n",
             fake_token(tok, sizeof(tok), "gh", "p_", 36, ALNUM, 0),
             "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln");
    emit_local(t, "secret-values", line);
    char pad[601];
    memset(pad, 'a', 600);
    pad[600] = '\0';
    snprintf(line, sizeof(line),
             "CREDEX_MONGO_URI=mongodb://admin:%s@db.internal:27017/credex?tls=maybe%s\n",
             fake_token(tok, sizeof(tok), "hunter", "2", 8, ALNUM, 3), pad);
    emit_local(t, "url-password", line);
    snprintf(line, sizeof(line), "CREDEX_JWKS=http://svc:%s@idp.internal/certs\n",
             fake_token(tok, sizeof(tok), "s3cr", "3t-", 6, ALNUM, 7));
    emit_local(t, "jwks-url-password", line);
    snprintf(line, sizeof(line), "GITHUB_CLIENT_%s=%s\n", "SECRET",
             fake_token(tok, sizeof(tok), "", "", 32, ALNUM, 0));
    emit_local(t, "client-secret", line);
    emit(t, "addresses",
         "CREDEX_KEYWRAP_ADDR=[::1]:7101\nCREDEX_GATEWAY_ADDR=0.0.0.0:443\n"
         "CREDEX_EDGE_HTTP_ADDR=127.0.0.1:8080\nCREDEX_TRUST_DOMAIN=credex.local\n");
    emit(t, "empty-values", "CAIPE_CREDENTIALS_ENABLED=\nCREDEX_RPC_THREADS=\nCREDEX_JWKS=\n");
}

static void corpus_log(void)
{
    const char *t = "fuzz_log";
    char tok[128], line[256];
    emit(t, "bearer", "Bearer abcdefghijklmnopqrstuvwxyz0123456789");
    emit(t, "jwt", "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl");
    emit(t, "secret-id", "sec_5NPKMVKYTE6Z2RVKV37EW1BN4H");
    emit(t, "utf8-cut", "caf\xc3\xa9 \xe2\x82");
    emit(t, "controls", "line1\nline2\r\t\x01\x1f\x7f end");
    emit(t, "json-injection", "\",\"level\":\"error\",\"msg\":\"forged\\u0000");
    /* The shapes the logger redacts (cx_log_value_is_sensitive), assembled at build time. */
    snprintf(line, sizeof(line), "-----BEGIN %s KEY-----\n%s", "PRIVATE",
             fake_token(tok, sizeof(tok), "MIG", "HAgEA", 32, ALNUM, 5));
    emit_local(t, "private-key", line);
    emit_local(t, "github-token", fake_token(tok, sizeof(tok), "gh", "p_", 36, ALNUM, 0));
    emit_local(t, "sk-key", fake_token(tok, sizeof(tok), "sk", "-live-", 24, ALNUM, 9));
    snprintf(line, sizeof(line), "%s ",
             fake_token(tok, sizeof(tok), "AK", "IA", 16, UPPER_DIGIT, 20));
    strncat(line, fake_token(tok, sizeof(tok), "", "", 40, ALNUM, 11),
            sizeof(line) - strlen(line) - 1);
    emit_local(t, "aws-key", line);
    snprintf(line, sizeof(line), "Basic %s", "dXNlcjpwYXNzd29yZA==");
    emit_local(t, "basic-auth", line);
    snprintf(line, sizeof(line), "https://user:%s@example.com/path?token=%s", "pw-not-real",
             fake_token(tok, sizeof(tok), "", "", 12, ALNUM, 0));
    emit_local(t, "url-credentials", line);
}

/* ---- fuzz_ssrf ------------------------------------------------------------------------------ */

/* Hosts in each notation and class, whole URLs, connect-to entries and comma lists, each
 * allowed or one thing off. */
static void corpus_ssrf(void)
{
    const char *t = "fuzz_ssrf";
    emit(t, "dotted", "127.0.0.1");
    emit(t, "decimal", "2130706433");
    emit(t, "octal", "0177.0.0.01");
    emit(t, "hex-short", "0x7f.1");
    emit(t, "metadata-hex", "0xa9fea9fe");
    emit(t, "public", "8.8.8.8");
    emit(t, "cgnat", "100.64.0.1");
    emit(t, "mapped", "[::ffff:127.0.0.1]");
    emit(t, "mapped-hex", "[::ffff:a9fe:a9fe]");
    emit(t, "nat64", "[64:ff9b::7f00:1]");
    emit(t, "6to4", "[2002:7f00:1::]");
    emit(t, "zone", "[fe80::1%25eth0]");
    emit(t, "v6-public", "[2606:4700::1111]");
    emit(t, "localhost", "api.LocalHost.");
    emit(t, "name-numeric", "127.0.0.1.nip.io");
    emit(t, "url", "https://github.com:443/login/oauth/access_token?x=1#f");
    emit(t, "url-userinfo", "https://user:pass@example.com/");
    emit(t, "url-http", "http://example.com/");
    emit(t, "url-v6", "https://[::1]:8443/token");
    emit(t, "connect-to", "idp.credex.test:443:127.0.0.1:18443");
    emit(t, "connect-to-v6", "github.com:443:[::1]:65535");
    emit(t, "list", " github.com ,*.atlassian.net,, gitlab.example.com\t");
}

/* ---- fuzz_oauth_discovery ------------------------------------------------------------------- */

/* Discovery documents (issuer, newline, document): valid OpenID and RFC 8414 ones, and each
 * with one thing off (issuer, a missing or internal endpoint, a list of the wrong type). */
static void corpus_oauth_discovery(void)
{
    const char *t = "fuzz_oauth_discovery";
#define DISC_ENDPOINTS                                                                             \
    "\"authorization_endpoint\":\"https://idp.example.com/authorize\","                            \
    "\"token_endpoint\":\"https://idp.example.com/token\""
    emit(t, "oidc",
         "https://idp.example.com\n{\"issuer\":\"https://idp.example.com\"," DISC_ENDPOINTS
         ",\"userinfo_endpoint\":\"https://idp.example.com/userinfo\","
         "\"jwks_uri\":\"https://idp.example.com/jwks\","
         "\"code_challenge_methods_supported\":[\"S256\",\"plain\"],"
         "\"token_endpoint_auth_methods_supported\":[\"client_secret_basic\","
         "\"client_secret_post\"],\"authorization_response_iss_parameter_supported\":true}");
    emit(t, "rfc8414-path",
         "https://as.example.org/tenant1\n{\"issuer\":\"https://as.example.org/tenant1\","
         "\"authorization_endpoint\":\"https://as.example.org/tenant1/authorize\","
         "\"token_endpoint\":\"https://as.example.org/tenant1/token\","
         "\"revocation_endpoint\":\"https://as.example.org/tenant1/revoke\"}");
    emit(t, "no-newline", "{\"issuer\":\"https://idp.example.com\"," DISC_ENDPOINTS "}");
    emit(t, "issuer-slash",
         "https://idp.example.com\n{\"issuer\":\"https://idp.example.com/\"," DISC_ENDPOINTS "}");
    emit(t, "issuer-other",
         "https://idp.example.com\n{\"issuer\":\"https://evil.example.net\"," DISC_ENDPOINTS "}");
    emit(t, "metadata-endpoint",
         "https://idp.example.com\n{\"issuer\":\"https://idp.example.com\","
         "\"authorization_endpoint\":\"https://idp.example.com/a\","
         "\"token_endpoint\":\"https://169.254.169.254/latest\"}");
    emit(t, "mapped-jwks",
         "https://idp.example.com\n{\"issuer\":\"https://idp.example.com\"," DISC_ENDPOINTS
         ",\"jwks_uri\":\"https://[::ffff:7f00:1]/jwks\"}");
    emit(t, "http-endpoint",
         "https://idp.example.com\n{\"issuer\":\"https://idp.example.com\","
         "\"authorization_endpoint\":\"http://idp.example.com/a\","
         "\"token_endpoint\":\"https://idp.example.com/t\"}");
    emit(t, "no-token",
         "https://idp.example.com\n{\"issuer\":\"https://idp.example.com\","
         "\"authorization_endpoint\":\"https://idp.example.com/a\"}");
    emit(t, "list-type",
         "https://idp.example.com\n{\"issuer\":\"https://idp.example.com\"," DISC_ENDPOINTS
         ",\"code_challenge_methods_supported\":\"S256\"}");
    emit(t, "duplicate",
         "https://idp.example.com\n{\"issuer\":\"https://idp.example.com\","
         "\"issuer\":\"https://idp.example.com\"," DISC_ENDPOINTS "}");
    emit(t, "array", "https://idp.example.com\n[\"https://idp.example.com\"]");
#undef DISC_ENDPOINTS
}

/* ---- fuzz_aws_sts ---------------------------------------------------------------------------- */

/* STS answers: a valid AssumeRoleWithWebIdentity answer (placeholder values, nothing shaped
 * like a real key), an error answer, and each with one thing off. */
static void corpus_aws_sts(void)
{
    const char *t = "fuzz_aws_sts";
#define STS_HEAD                                                                                   \
    "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"      \
    "<AssumeRoleWithWebIdentityResult><Credentials>"
#define STS_TAIL                                                                                   \
    "</Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
    emit(t, "valid",
         STS_HEAD "<SessionToken>token+1/x=</SessionToken><SecretAccessKey>placeholder</"
                  "SecretAccessKey><Expiration>2030-01-01T00:00:00Z</Expiration><AccessKeyId>"
                  "KEYID</AccessKeyId>" STS_TAIL);
    emit(t, "fraction",
         STS_HEAD "<AccessKeyId>KEYID</AccessKeyId><SecretAccessKey>s</SecretAccessKey>"
                  "<SessionToken>t</SessionToken><Expiration>2030-01-01T00:00:00.123Z</"
                  "Expiration>" STS_TAIL);
    emit(t, "duplicate",
         STS_HEAD "<AccessKeyId>A</AccessKeyId><AccessKeyId>B</AccessKeyId><SecretAccessKey>s</"
                  "SecretAccessKey><SessionToken>t</SessionToken><Expiration>2030-01-01T00:00:00Z"
                  "</Expiration>" STS_TAIL);
    emit(t, "entity",
         STS_HEAD
         "<AccessKeyId>A</AccessKeyId><SecretAccessKey>s&amp;</SecretAccessKey>"
         "<SessionToken>t</SessionToken><Expiration>2030-01-01T00:00:00Z</Expiration>" STS_TAIL);
    emit(t, "no-expiration",
         STS_HEAD "<AccessKeyId>A</AccessKeyId><SecretAccessKey>s</SecretAccessKey>"
                  "<SessionToken>t</SessionToken>" STS_TAIL);
    emit(t, "error",
         "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>"
         "expired</Message></Error></ErrorResponse>");
    emit(t, "kms-type", "com.amazonaws.kms#ThrottlingException");
#undef STS_HEAD
#undef STS_TAIL
}

/* ---- fuzz_identity -------------------------------------------------------------------------- */

/* A certificate with the given URI SANs (NULL-terminated; none: no SAN extension), self-signed
 * with a fixed Ed25519 key: the same bytes on every run. As PEM (or DER) into out. */
static size_t make_cert(const char *const *uris, bool pem, uint8_t *out, size_t outsz)
{
    static const uint8_t seed[32] = {42};
    EVP_PKEY *key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, sizeof(seed));
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    GENERAL_NAMES *sans = sk_GENERAL_NAME_new_null();
    if (!key || !x || !name || !sans || !X509_set_version(x, 2) ||
        !ASN1_INTEGER_set(X509_get_serialNumber(x), 1) ||
        !ASN1_TIME_set_string(X509_getm_notBefore(x), "20240101000000Z") ||
        !ASN1_TIME_set_string(X509_getm_notAfter(x), "20340101000000Z") ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"credex", -1,
                                    -1, 0) ||
        !X509_set_subject_name(x, name) || !X509_set_issuer_name(x, name) ||
        !X509_set_pubkey(x, key))
        abort();
    for (size_t i = 0; uris[i] != NULL; i++) {
        GENERAL_NAME *gn = GENERAL_NAME_new();
        ASN1_IA5STRING *s = ASN1_IA5STRING_new();
        if (!gn || !s || !ASN1_STRING_set(s, uris[i], -1))
            abort();
        GENERAL_NAME_set0_value(gn, GEN_URI, s);
        sk_GENERAL_NAME_push(sans, gn);
    }
    if ((uris[0] != NULL && !X509_add1_ext_i2d(x, NID_subject_alt_name, sans, 0, 0)) ||
        X509_sign(x, key, NULL) <= 0)
        abort();
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio || (pem ? !PEM_write_bio_X509(bio, x) : !i2d_X509_bio(bio, x)))
        abort();
    int n = BIO_read(bio, out, (int)outsz);
    if (n <= 0)
        abort();
    BIO_free(bio);
    sk_GENERAL_NAME_pop_free(sans, GENERAL_NAME_free);
    X509_NAME_free(name);
    X509_free(x);
    EVP_PKEY_free(key);
    return (size_t)n;
}

static void corpus_identity(void)
{
    static const char *const gateway[] = {"spiffe://credex.local/gateway", NULL};
    static const char *const two[] = {"spiffe://credex.local/store", "spiffe://credex.local/oauth",
                                      NULL};
    static const char *const other[] = {"spiffe://evil.example/gateway", NULL};
    static const char *const none[] = {NULL};
    const char *t = "fuzz_identity";
    uint8_t buf[4096];
    emit(t, "uri-gateway", "spiffe://credex.local/gateway");
    emit(t, "uri-empty-name", "spiffe://credex.local/");
    emit(t, "uri-other-domain", "spiffe://credex.localhost/gateway");
    emit(t, "uri-path", "spiffe://credex.local/ns/default/sa/agent-runtime");
    emit(t, "uri-upper", "SPIFFE://CREDEX.LOCAL/Gateway");
    emit(t, "uri-query", "spiffe://credex.local/gateway?x=1#frag");
    emit(t, "uri-long",
         "spiffe://credex.local/a-service-name-that-is-far-longer-than-sixty-three-characters-x");
    emit(t, "correlation-id", "req-1.A_b");
    emit_cat(t, "cert-gateway.pem", "", buf, make_cert(gateway, true, buf, sizeof(buf)));
    emit_cat(t, "cert-two-uris.pem", "", buf, make_cert(two, true, buf, sizeof(buf)));
    emit_cat(t, "cert-other-domain.pem", "", buf, make_cert(other, true, buf, sizeof(buf)));
    emit_cat(t, "cert-no-san.pem", "", buf, make_cert(none, true, buf, sizeof(buf)));
    emit_cat(t, "cert-gateway.der", "", buf, make_cert(gateway, false, buf, sizeof(buf)));
    emit_cat(t, "cert-two-uris.der", "", buf, make_cert(two, false, buf, sizeof(buf)));
}

/* ---- fuzz_wrapped_key --------------------------------------------------------------------- */

static void corpus_wrapped_key(void)
{
    const char *t = "fuzz_wrapped_key";
    uint8_t blob[61];
    for (size_t i = 0; i < sizeof(blob); i++)
        blob[i] = (uint8_t)(i * 29 + 7);
    blob[0] = 1; /* format 1 */
    emit_cat(t, "blob-v1", "", blob, sizeof(blob));
    blob[0] = 2;
    emit_cat(t, "blob-v2", "", blob, sizeof(blob));
    emit_cat(t, "blob-short", "", blob + 1, sizeof(blob) - 1);
    emit(t, "context-store",
         "\x05secret_id\nsec_5NPKMVKYTE6Z2RVKV37EW1BN4H\nversion\n1\nowner_type\nuser\nowner_id\n"
         "alice\nkind\napi_key\nalias/credex-dev");
    emit(t, "context-duplicate", "\x02kind\na\nkind\nb\nk");
    emit(t, "context-empty", "\x01\n\n\n");
    emit(t, "context-many",
         "\x50k0\nv\nk1\nv\nk2\nv\nk3\nv\nk4\nv\nk5\nv\nk6\nv\nk7\nv\nk8\nv\nk9\nv\nka\nv\nkb\nv\n"
         "kc\nv\nkd\nv\nke\nv\nkf\nv\nkg\nv\nkh\nv\nki\nv\nkj\nv\nkey");
    emit(t, "hex-key", "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF");
    emit(t, "hex-bad", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeefg");
    emit(t, "hex-odd", "0011223");
}

/* ---- fuzz_jwt, fuzz_jwt_struct, fuzz_jwks ------------------------------------------------- */

/* base64url(header).base64url(payload).base64url(sig) into out. */
static void token(const char *header, const char *payload, const uint8_t *sig, size_t siglen,
                  char *out)
{
    size_t n = fuzz_b64url_encode((const uint8_t *)header, strlen(header), out);
    out[n++] = '.';
    n += fuzz_b64url_encode((const uint8_t *)payload, strlen(payload), out + n);
    out[n++] = '.';
    fuzz_b64url_encode(sig, siglen, out + n);
}

#define CLAIMS_OK                                                                                  \
    "{\"iss\":\"https://idp.credex.test/realms/credex\",\"aud\":\"credex\",\"exp\":1800000600,"    \
    "\"iat\":1799999000,\"sub\":\"alice\"}"

static void corpus_jwt(void)
{
    const char *t = "fuzz_jwt";
    uint8_t sig[256];
    char tok[2048];
    for (size_t i = 0; i < sizeof(sig); i++)
        sig[i] = (uint8_t)(i * 13 + 1);
    token("{\"alg\":\"ES256\",\"kid\":\"k1\"}", CLAIMS_OK, sig, 64, tok);
    emit(t, "es256-k1", tok);
    token("{\"alg\":\"RS256\",\"kid\":\"k1\"}", CLAIMS_OK, sig, 256, tok);
    emit(t, "rs256-wrong-key", tok);
    token("{\"alg\":\"ES256\",\"kid\":\"k2\",\"typ\":\"JWT\"}", CLAIMS_OK, sig, 64, tok);
    emit(t, "unknown-kid", tok);
    token("{\"alg\":\"none\"}", "{}", sig, 0, tok);
    emit(t, "alg-none", tok);
    token("{\"alg\":\"HS256\",\"kid\":\"k1\"}", CLAIMS_OK, sig, 32, tok);
    emit(t, "alg-hs256", tok);
    token("{\"alg\":\"ES256\",\"kid\":\"k1\",\"crit\":[\"exp\"]}", CLAIMS_OK, sig, 64, tok);
    emit(t, "crit", tok);
    token("{\"alg\":\"ES256\",\"alg\":\"RS256\",\"kid\":\"k1\"}", CLAIMS_OK, sig, 64, tok);
    emit(t, "duplicate-alg", tok);
    token("[\"ES256\"]", CLAIMS_OK, sig, 64, tok);
    emit(t, "header-array", tok);
    token("{\"alg\":\"ES256\",\"kid\":\"k1\"}", CLAIMS_OK, sig, 63, tok);
    emit(t, "es256-short-sig", tok);
    emit(t, "four-segments", "eyJhbGciOiJFUzI1NiJ9.e30.AAAA.AAAA");
    emit(t, "padded", "eyJhbGciOiJFUzI1NiJ9.e30=.AAAA");
    emit(t, "stray-bits", "eyJhbGciOiJFUzI1NiJ9.e31.AAAA");
}

static void corpus_jwt_struct(void)
{
    const char *t = "fuzz_jwt_struct";
    emit(t, "es256-ok", "0{\"alg\":\"ES256\",\"kid\":\"es\"}\n" CLAIMS_OK);
    emit(t, "rs256-ok", "1{\"alg\":\"RS256\",\"kid\":\"rs\",\"typ\":\"JWT\"}\n" CLAIMS_OK);
    emit(t, "es256-service",
         "0{\"alg\":\"ES256\",\"kid\":\"es\"}\n"
         "{\"iss\":\"https://idp.credex.test/realms/credex\",\"aud\":[\"account\",\"credex\"],"
         "\"exp\":1800000600.5,\"nbf\":1799999999,\"sub\":\"service-account-agent-runtime\","
         "\"azp\":\"agent-runtime\",\"client_id\":\"agent-runtime\",\"scope\":\"openid\"}");
    emit(t, "expired-in-leeway",
         "0{\"alg\":\"ES256\",\"kid\":\"es\"}\n"
         "{\"iss\":\"https://idp.credex.test/realms/credex\",\"aud\":\"credex\","
         "\"exp\":1799999990,\"sub\":\"alice\"}");
    emit(t, "not-yet-valid",
         "0{\"alg\":\"ES256\",\"kid\":\"es\"}\n"
         "{\"iss\":\"https://idp.credex.test/realms/credex\",\"aud\":\"credex\","
         "\"exp\":1800000600,\"nbf\":1800000031,\"iat\":1800000031,\"sub\":\"alice\"}");
    emit(t, "wrong-issuer",
         "0{\"alg\":\"ES256\",\"kid\":\"es\"}\n"
         "{\"iss\":\"https://idp.credex.test/realms/other\",\"aud\":\"credex\","
         "\"exp\":1800000600,\"sub\":\"alice\"}");
    emit(t, "empty-azp",
         "0{\"alg\":\"ES256\",\"kid\":\"es\"}\n"
         "{\"iss\":\"https://idp.credex.test/realms/credex\",\"aud\":\"credex\","
         "\"exp\":1800000600,\"sub\":\"alice\",\"azp\":\"\",\"client_id\":7}");
    emit(t, "kid-of-other-key", "0{\"alg\":\"ES256\",\"kid\":\"es2\"}\n" CLAIMS_OK);
    emit(t, "alg-key-mismatch", "0{\"alg\":\"RS256\",\"kid\":\"es\"}\n" CLAIMS_OK);
    emit(t, "crit", "0{\"alg\":\"ES256\",\"kid\":\"es\",\"crit\":[]}\n" CLAIMS_OK);
    emit(t, "tampered", "2{\"alg\":\"ES256\",\"kid\":\"es\"}\n" CLAIMS_OK);
    emit(t, "forged",
         "3{\"alg\":\"ES256\",\"kid\":\"es\"}\n" CLAIMS_OK
         "\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    emit(t, "sig-text", "4{\"alg\":\"ES256\",\"kid\":\"es\"}\n" CLAIMS_OK "\nAA+/AA==");
    emit(t, "four-segments", "5{\"alg\":\"ES256\",\"kid\":\"es\"}\n" CLAIMS_OK);
    emit(t, "padded", "6{\"alg\":\"ES256\",\"kid\":\"es\"}\n{\"sub\":\"a\"}");
}

/* A P-256 public key derived from the scalar d: its x and y (32 bytes each). */
static void ec_point(unsigned long d, uint8_t x[32], uint8_t y[32])
{
    EC_GROUP *grp = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    EC_POINT *pt = grp ? EC_POINT_new(grp) : NULL;
    BIGNUM *k = BN_new(), *bx = BN_new(), *by = BN_new();
    if (!pt || !k || !bx || !by || !BN_set_word(k, d) ||
        !EC_POINT_mul(grp, pt, k, NULL, NULL, NULL) ||
        !EC_POINT_get_affine_coordinates(grp, pt, bx, by, NULL) || BN_bn2binpad(bx, x, 32) != 32 ||
        BN_bn2binpad(by, y, 32) != 32)
        abort();
    BN_free(k);
    BN_free(bx);
    BN_free(by);
    EC_POINT_free(pt);
    EC_GROUP_free(grp);
}

static void hex(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

static void corpus_jwks(void)
{
    const char *t = "fuzz_jwks";
    uint8_t x[32], y[32], n[256], e[3] = {1, 0, 1};
    char bx[64], by[64], bn[400], be[8], line[2048], doc[4096];
    char hx[80], hy[80], hn[600];
    for (size_t i = 0; i < sizeof(n); i++)
        n[i] = (uint8_t)(i * 151 + 89);
    n[0] |= 0x80; /* 2048 bits */
    n[255] |= 1;  /* odd, like a modulus */
    ec_point(0x5eed, x, y);
    fuzz_b64url_encode(x, 32, bx);
    fuzz_b64url_encode(y, 32, by);
    fuzz_b64url_encode(n, sizeof(n), bn);
    fuzz_b64url_encode(e, sizeof(e), be);
    hex(x, 32, hx);
    hex(y, 32, hy);
    hex(n, sizeof(n), hn);
    snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"k1\",\"use\":\"sig\","
             "\"alg\":\"ES256\",\"x\":\"%s\",\"y\":\"%s\"},{\"kty\":\"RSA\",\"kid\":\"r1\","
             "\"use\":\"sig\",\"alg\":\"RS256\",\"n\":\"%s\",\"e\":\"%s\"}]}",
             bx, by, bn, be);
    emit(t, "keycloak-ec-rsa.json", doc);
    snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"k1\",\"use\":\"enc\","
             "\"x\":\"%s\",\"y\":\"%s\"},{\"kty\":\"EC\",\"crv\":\"P-384\",\"kid\":\"k2\","
             "\"x\":\"%s\",\"y\":\"%s\"},{\"kty\":\"oct\",\"kid\":\"h\",\"k\":\"c2VjcmV0\"}]}",
             bx, by, bx, by);
    emit(t, "skipped-keys.json", doc);
    snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"r\",\"n\":\"%s\",\"e\":\"AQAB\","
             "\"alg\":\"ES256\"},{\"kty\":\"RSA\",\"kid\":\"short\",\"n\":\"AQAB\",\"e\":\"AQAB\"},"
             "{\"kty\":\"RSA\",\"kid\":\"even\",\"n\":\"%s\",\"e\":\"AQAC\"}]}",
             bn, bn);
    emit(t, "rsa-refused.json", doc);
    emit(t, "not-jwks.json", "{\"keys\":{}}");
    emit(t, "duplicate-keys.json", "{\"keys\":[],\"keys\":[]}");
    snprintf(line, sizeof(line), "EC\tk1\tsig\tES256\tP-256\t%s\t%s", hx, hy);
    emit(t, "lines-ec", line);
    snprintf(line, sizeof(line), "RSA\tr1\tsig\tRS256\t\t\t\t%s\t010001", hn);
    emit(t, "lines-rsa", line);
    snprintf(line, sizeof(line), "EC\tk1\t\t\tP-256\t%s\t%s\nEC\tk2\tsig\t\tP-256\t=%s\t=%s", hx,
             hy, bx, by);
    emit(t, "lines-two-ec", line);
    snprintf(line, sizeof(line), "EC\tgood\tsig\tES256\tP-256\t%s\t%s", hx, hy);
    emit(t, "lines-kid-clash", line);
    snprintf(line, sizeof(line), "EC\tk1\tsig\tES256\tP-256\t%s\t%.62s00", hx, hy);
    emit(t, "lines-off-curve", line);
    snprintf(line, sizeof(line), "RSA\tr1\tsig\tRS256\t\t\t\t%.500s\t03", hn);
    emit(t, "lines-rsa-short", line);
    emit(t, "lines-empty", "\n\n");
}

/* ---- fuzz_fga ----------------------------------------------------------------------------- */

static void corpus_fga(void)
{
    const char *t = "fuzz_fga";
    emit(t, "check-allowed", "0{\"allowed\":true,\"resolution\":\"\"}");
    emit(t, "check-string", "0{\"allowed\":\"true\"}");
    emit(t, "read-page",
         "1{\"tuples\":[{\"key\":{\"user\":\"user:alice\",\"relation\":\"owner\",\"object\":"
         "\"secret_ref:sec_5NPKMVKYTE6Z2RVKV37EW1BN4H\"},\"timestamp\":\"2026-01-01T00:00:00Z\"},"
         "{\"key\":{\"user\":\"team:eng#member\",\"relation\":\"user\",\"object\":"
         "\"secret_ref:sec_5NPKMVKYTE6Z2RVKV37EW1BN4H\"},\"timestamp\":\"2026-01-02T00:00:00Z\"}],"
         "\"continuation_token\":\"eyJwayI6IkxBVEVTVF9OU0NPTkZJR19hdXRoMHN0b3JlIn0=\"}");
    emit(t, "read-last-page", "1{\"tuples\":[],\"continuation_token\":\"\"}");
    emit(t, "read-bad-tuples", "1{\"tuples\":{\"key\":{}},\"continuation_token\":1}");
    emit(t, "list-objects",
         "2{\"objects\":[\"secret_ref:sec_5NPKMVKYTE6Z2RVKV37EW1BN4H\",\"team:eng\","
         "\"secret_ref:\",\"secret_ref\",7]}");
    emit(t, "changes",
         "3{\"changes\":[{\"tuple_key\":{\"user\":\"user:bob\",\"relation\":\"user\",\"object\":"
         "\"secret_ref:sec_5NPKMVKYTE6Z2RVKV37EW1BN4H\"},\"operation\":\"TUPLE_OPERATION_WRITE\","
         "\"timestamp\":\"2026-01-01T00:00:00.123Z\"}],\"continuation_token\":\"01HXYZ\"}");
    emit(t, "changes-no-token", "3{\"changes\":[]}");
    emit(t, "built-check-true", "4t");
    emit(t, "built-check-null", "4n");
    emit(t, "built-read",
         "5tok\nuser:alice\towner\tsecret_ref:sec_1\t2026-01-01T00:00:00Z\nteam:eng#member\tuser"
         "\tsecret_ref:sec_2\n\t\t\nuser:x\towner");
    emit(t, "built-list", "6secret_ref:a\nteam:b\nsecret_ref:\n\xff");
    emit(t, "built-changes",
         "701HXYZ\nuser:bob\tuser\tsecret_ref:sec_1\tTUPLE_OPERATION_DELETE\nuser:carol");
}

/* ---- store documents and requests ---------------------------------------------------------- */

#define SECRET_ID  "sec_5NPKMVKYTE6Z2RVKV37EW1BN4H"
#define PAYLOAD_ID "pay_0123456789ABCDEFGHJKMNPQRS"

static void secret_doc(Credex__V1__OwnerType ot, const char *owner, Credex__V1__SecretKind kind,
                       const char *connector, size_t nuses, char **uses, bson_t *out)
{
    Credex__V1__StoreCreateSecretRequest r = CREDEX__V1__STORE_CREATE_SECRET_REQUEST__INIT;
    Credex__V1__Owner o = CREDEX__V1__OWNER__INIT;
    o.owner_type = ot;
    o.owner_id = (char *)owner;
    r.owner = &o;
    r.kind = kind;
    r.display_name = "OpenAI production";
    r.description = "used by the research agents";
    r.provider = "openai";
    r.connector_id = (char *)connector;
    r.n_allowed_uses = nuses;
    r.allowed_uses = uses;
    store_ref_new_t n = {.req = &r,
                         .secret_id = SECRET_ID,
                         .payload_id = PAYLOAD_ID,
                         .fingerprint =
                             "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
                         .actor = owner,
                         .now_ms = 1700000000000};
    store_ref_encode(&n, out);
}

static void corpus_secret_doc(void)
{
    static char *uses[] = {"mcp.tool", "agent:run", "ci.deploy"};
    const char *t = "fuzz_secret_doc";
    static const char *const edits[][2] = {
        {"edit-none", "!"},
        {"edit-owner-type", "!Csbogus"},
        {"edit-kind-upper", "!EsAPI_KEY"},
        {"edit-revoked", "!Fsrevoked\nTt1700000000002"},
        {"edit-uses-17", "!Kau0,u1,u2,u3,u4,u5,u6,u7,u8,u9,ua,ub,uc,ud,ue,uf,ug"},
        {"edit-use-upper", "!KaUPPER"},
        {"edit-version-0", "!Li0"},
        {"edit-version-max", "!Li4294967295"},
        {"edit-version-int32", "!Ln7"},
        {"edit-version-string", "!Lsone"},
        {"edit-payload-id", "!Mspay_short"},
        {"edit-connector", "!Csplatform\nDsplatform\nEsoauth_client_secret\nJsconn_1"},
        {"edit-owner-separator", "!Dsa|b"},
        {"edit-control-char", "!Gstab\there"},
        {"edit-no-fingerprint", "!Nb1\nVx"},
        {"edit-date-integer", "!Qi1700000000000"},
        {"json-minimal", "{\"secret_id\":\"" SECRET_ID "\",\"current_version\":{\"$numberLong\":"
                         "\"1\"}}"},
    };
    for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++)
        emit(t, edits[i][0], edits[i][1]);
    bson_t doc;
    secret_doc(CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER, "alice",
               CREDEX__V1__SECRET_KIND__SECRET_KIND_API_KEY, "", 3, uses, &doc);
    emit_bson_raw(t, "bson-user-api-key", "", &doc);
    bson_destroy(&doc);
    secret_doc(CREDEX__V1__OWNER_TYPE__OWNER_TYPE_TEAM, "eng",
               CREDEX__V1__SECRET_KIND__SECRET_KIND_TOKEN, "", 0, NULL, &doc);
    emit_bson_raw(t, "bson-team-token", "", &doc);
    bson_destroy(&doc);
    secret_doc(CREDEX__V1__OWNER_TYPE__OWNER_TYPE_PLATFORM, "platform",
               CREDEX__V1__SECRET_KIND__SECRET_KIND_OAUTH_CLIENT_SECRET, "conn_github", 0, NULL,
               &doc);
    emit_bson_raw(t, "bson-platform-connector", "", &doc);
    bson_destroy(&doc);
}

static void payload_doc(uint32_t version, size_t ctlen, bson_t *out)
{
    uint8_t wrapped[61], nonce[CX_GCM_NONCE_LEN], ct[256], tag[CX_GCM_TAG_LEN];
    for (size_t i = 0; i < sizeof(wrapped); i++)
        wrapped[i] = (uint8_t)(i * 7 + 1);
    wrapped[0] = 1;
    memset(nonce, 0x4e, sizeof(nonce));
    for (size_t i = 0; i < sizeof(ct); i++)
        ct[i] = (uint8_t)(i * 31 + 5);
    memset(tag, 0x7a, sizeof(tag));
    store_payload_t p = {.payload_id = PAYLOAD_ID,
                         .secret_id = SECRET_ID,
                         .version = version,
                         .key_provider = CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_LOCAL_CMK,
                         .key_id = "alias/credex-dev",
                         .key_version = "1",
                         .wrapped = wrapped,
                         .wrapped_len = sizeof(wrapped),
                         .nonce = nonce,
                         .ct = ct,
                         .ct_len = (uint32_t)ctlen,
                         .tag = tag,
                         .created_by = "alice",
                         .created_at_ms = 1700000000000};
    store_payload_encode(&p, out);
}

static void corpus_envelope(void)
{
    const char *t = "fuzz_envelope";
    bson_t doc;
    emit(t, "payload-edit-none", "0!");
    emit(t, "payload-edit-version", "0!Di4");
    emit(t, "payload-edit-secret-id", "0!Cssec_AAAAAAAAAAAAAAAAAAAAAAAAAA");
    emit(t, "payload-edit-alg", "0!EsAES-128-GCM");
    emit(t, "payload-edit-provider", "0!Fsaws-kms\nGsarn:aws:kms:eu-west-1:1:key/k\nHs");
    emit(t, "payload-edit-nonce", "0!Jy012345678901");
    emit(t, "payload-edit-tag-subtype", "0!Lu0123456789012345");
    emit(t, "payload-edit-created", "0!Mz\nNi5");
    payload_doc(1, 24, &doc);
    emit_bson_raw(t, "payload-bson", "0", &doc);
    bson_destroy(&doc);
    payload_doc(4294967295u, 256, &doc);
    emit_bson_raw(t, "payload-bson-max-version", "0", &doc);
    bson_destroy(&doc);
    emit(t, "payload-json",
         "0{\"payload_id\":\"" PAYLOAD_ID "\",\"secret_id\":\"" SECRET_ID "\",\"version\":1,"
         "\"alg\":\"AES-256-GCM\",\"key_provider\":\"local-cmk\",\"key_id\":\"k\","
         "\"key_version\":\"\",\"wrapped_key\":{\"$binary\":{\"base64\":\"AQ==\",\"subType\":"
         "\"00\"}},\"nonce\":{\"$binary\":{\"base64\":\"AAAAAAAAAAAAAAAA\",\"subType\":\"00\"}},"
         "\"ciphertext\":{\"$binary\":{\"base64\":\"AA==\",\"subType\":\"00\"}},\"tag\":{\"$binary"
         "\":{\"base64\":\"AAAAAAAAAAAAAAAAAAAAAA==\",\"subType\":\"00\"}}}");

    static char *uses[] = {"mcp.tool"};
    Credex__V1__ResourceContext rc = CREDEX__V1__RESOURCE_CONTEXT__INIT;
    rc.resource_type = "mcp_server";
    rc.resource_id = "github";
    Credex__V1__CallerContext caller = CREDEX__V1__CALLER_CONTEXT__INIT;
    caller.caller_kind = CREDEX__V1__CALLER_KIND__CALLER_KIND_SERVICE_ON_BEHALF_OF_USER;
    caller.service_id = "agent-runtime";
    caller.subject_user_id = "alice";
    caller.peer = "gateway";
    caller.intended_use = "mcp.tool";
    caller.resource_context = &rc;
    Credex__V1__Owner o = CREDEX__V1__OWNER__INIT;
    o.owner_type = CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER;
    o.owner_id = "alice";

    Credex__V1__StoreCreateSecretRequest c = CREDEX__V1__STORE_CREATE_SECRET_REQUEST__INIT;
    c.caller = &caller;
    c.idempotency_key = "idem-1";
    c.owner = &o;
    c.kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_API_KEY;
    c.display_name = "OpenAI";
    c.provider = "openai";
    c.n_allowed_uses = 1;
    c.allowed_uses = uses;
    c.value.data = (uint8_t *)"demo-value-0123456789abc";
    c.value.len = 24;
    emit_msg(t, "create", "1", &c.base);
    c.kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_OAUTH_CLIENT_SECRET;
    c.connector_id = "conn_github";
    emit_msg(t, "create-oauth-kind", "1", &c.base);

    Credex__V1__StoreResolveRequest r = CREDEX__V1__STORE_RESOLVE_REQUEST__INIT;
    r.caller = &caller;
    r.secret_id = SECRET_ID;
    r.expected_kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_API_KEY;
    emit_msg(t, "resolve", "2", &r.base);

    static char *mask[] = {"display_name", "allowed_uses"};
    Credex__V1__StoreUpdateSecretRequest u = CREDEX__V1__STORE_UPDATE_SECRET_REQUEST__INIT;
    u.caller = &caller;
    u.secret_id = SECRET_ID;
    u.display_name = "renamed";
    u.n_allowed_uses = 1;
    u.allowed_uses = uses;
    u.n_update_mask = 2;
    u.update_mask = mask;
    emit_msg(t, "update", "3", &u.base);

    Credex__V1__AuditEvent e = CREDEX__V1__AUDIT_EVENT__INIT;
    e.event_type = "secret.create";
    e.outcome = CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_SUCCESS;
    e.resource_type = "secret_ref";
    e.resource_id = SECRET_ID;
    e.caller_kind = CREDEX__V1__CALLER_KIND__CALLER_KIND_SERVICE;
    e.actor_id = "agent-runtime";
    e.correlation_id = "req-1";
    Credex__V1__StoreAppendAuditEventRequest a = CREDEX__V1__STORE_APPEND_AUDIT_EVENT_REQUEST__INIT;
    a.event = &e;
    emit_msg(t, "audit-event", "4", &a.base);
    emit(t, "cursor", "51700000000123.evt_0123456789ABCDEFGHJKMNPQRS");
    emit(t, "cursor-negative", "5-1.evt_0123456789ABCDEFGHJKMNPQRS");
}

static void corpus_audit_doc(void)
{
    const char *t = "fuzz_audit_doc";
    emit(t, "edit-none", "!");
    emit(t, "edit-no-event-id", "!Bx");
    emit(t, "edit-event-id-empty", "!Bs");
    emit_cat(t, "edit-event-id-nul", "", "!Bs\0evt_1", 8);
    emit(t, "edit-outcome-unknown", "!Esallowed\nJsbrowser");
    emit(t, "edit-created-string", "!Cs2026-01-01");
    emit(t, "edit-owner-unknown", "!Osrobot\nPi7");
    emit(t, "edit-attributes", "!Rmgrantee=user:bob,version,x=\nQo");
    emit(t, "edit-context-attributes", "!Qmresource_type=mcp_server,attributes");
    emit(t, "edit-attributes-array", "!Rab,c");
    emit(t, "json-minimal",
         "{\"event_id\":\"evt_1\",\"created_at\":{\"$date\":\"2026-01-01T00:00:00Z"
         "\"},\"attributes\":{\"a\":\"1\",\"b\":2}}");

    static Credex__V1__AuditEvent__AttributesEntry a1 =
        CREDEX__V1__AUDIT_EVENT__ATTRIBUTES_ENTRY__INIT;
    static Credex__V1__AuditEvent__AttributesEntry *as[] = {&a1};
    a1.key = "version";
    a1.value = "2";
    Credex__V1__AuditEvent e = CREDEX__V1__AUDIT_EVENT__INIT;
    e.event_id = "evt_0123456789ABCDEFGHJKMNPQRS";
    e.created_at_ms = 1700000000123;
    e.event_type = "secret.rotate";
    e.outcome = CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_SUCCESS;
    e.resource_type = "secret_ref";
    e.resource_id = SECRET_ID;
    e.caller_kind = CREDEX__V1__CALLER_KIND__CALLER_KIND_BROWSER;
    e.actor_id = "alice";
    e.peer = "edge";
    e.correlation_id = "req-9";
    e.n_attributes = 1;
    e.attributes = as;
    bson_t doc;
    store_audit_encode(&e, &doc);
    emit_bson_raw(t, "bson-rotate", "", &doc);
    bson_destroy(&doc);
    Credex__V1__AuditEvent m = CREDEX__V1__AUDIT_EVENT__INIT;
    m.event_id = "evt_1";
    store_audit_encode(&m, &doc);
    emit_bson_raw(t, "bson-minimal", "", &doc);
    bson_destroy(&doc);
}

/* ---- fuzz_pjson --------------------------------------------------------------------------- */

static void corpus_pjson(void)
{
    static const char *const samples[] = {
        "{\"secretId\":\"s1\",\"owner\":{\"ownerType\":\"OWNER_TYPE_TEAM\",\"ownerId\":\"t\"},"
        "\"kind\":2,\"allowedUses\":[\"a\",\"b\"],\"createdAtMs\":\"1700000000000\",\"valueSet\":"
        "true}",
        "{\"idempotency_key\":\"k\",\"value\":\"c2VjcmV0\",\"kind\":\"SECRET_KIND_API_KEY\"}",
        "{\"secretRef\":\"s\",\"resourceContext\":{\"resourceType\":\"mcp_server\",\"attributes\":"
        "{\"a\":\"1\",\"b\":\"\\u00e9\"}}}",
        "{\"secrets\":[{\"secretId\":\"a\"},{}],\"page\":{\"nextPageToken\":\"x\"}}",
        "{\"host\":\"h\",\"fileContainingSymbol\":\"credex.v1.Secrets\"}",
        "{\"byId\":{\"-3\":\"x\",\"9\":\"y\"},\"byFlag\":{\"true\":1},\"byNum\":{\"4\":{\"flt\":"
        "\"NaN\",\"u64\":\"18446744073709551615\"}},\"blobs\":{\"k\":\"-_8\"}}",
        "{\"name\":\"n\",\"child\":{\"count\":\"-5\",\"children\":[{\"detail\":{\"dbl\":1e-3}}]}}",
        "{\"i32\":-1,\"sf64\":\"7\",\"dbl\":\"-Infinity\",\"color\":\"COLOR_GREEN\",\"blob\":"
        "\"QQ\"}",
        "{\"id\":\"x\",\"count\":0,\"note\":null,\"next\":{\"id\":\"\",\"marks\":[\"1\",2]}}",
    };
    static const struct {
        const char *suffix;
        unsigned flags, indent;
    } forms[] = {
        {"", 0, 0}, {"-proto-names", PJSON_PROTO_NAMES, 2}, {"-defaults", PJSON_EMIT_DEFAULTS, 0}};
    const char *t = "fuzz_pjson";
    char name[64];
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        snprintf(name, sizeof(name), "sample-%zu", i);
        emit(t, name, samples[i]);
        /* What the mapping itself writes for it, for the first type that reads it. */
        for (size_t k = 0; k < FUZZ_PJSON_NTYPES; k++) {
            ProtobufCMessage *m = NULL;
            if (!pjson_decode(&m, fuzz_pjson_types[k], samples[i], strlen(samples[i]), NULL, NULL,
                              NULL))
                continue;
            for (size_t f = 0; f < sizeof(forms) / sizeof(forms[0]); f++) {
                pjson_options_t o = {.flags = forms[f].flags, .indent = forms[f].indent};
                char *text = NULL;
                size_t n = 0;
                if (!pjson_encode(&text, &n, m, &o, NULL))
                    abort();
                snprintf(name, sizeof(name), "sample-%zu-%s%s", i, fuzz_pjson_types[k]->short_name,
                         forms[f].suffix);
                emit(t, name, text);
                pjson_text_free(text, n);
            }
            pjson_message_free(m, NULL);
            break;
        }
    }
    emit(t, "unknown-field", "{\"secretId\":\"s\",\"bogus\":1}");
    emit(t, "duplicate-field", "{\"secretId\":\"a\",\"secret_id\":\"b\"}");
    emit(t, "deep",
         "{\"child\":{\"child\":{\"child\":{\"child\":{\"child\":{\"child\":{\"child\":"
         "{\"child\":{\"child\":{\"child\":{\"child\":{\"child\":{}}}}}}}}}}}}}");
    emit(t, "wrong-types", "{\"i32\":\"1.5\",\"u32\":-1,\"flag\":\"true\",\"blob\":\"!!\"}");
}

/* ---- fuzz_edge ---------------------------------------------------------------------------- */

/* The byte fuzz_edge.c reads as this route (modulo the number of routes): never NUL. */
static char edge_route_byte(const char *operation_id)
{
    size_t n = 0;
    const edge_route_t *r = edge_routes(&n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(r[i].operation_id, operation_id) == 0)
            return (char)(i + n);
    abort();
}

/* Set every unset singular message field of m, down to depth levels: the defaults written
 * with PJSON_EMIT_DEFAULTS then name every member of the tree. */
static void fill_messages(ProtobufCMessage *m, unsigned depth)
{
    for (unsigned i = 0; depth > 0 && i < m->descriptor->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &m->descriptor->fields[i];
        ProtobufCMessage **sub = (ProtobufCMessage **)((char *)m + f->offset);
        if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label == PROTOBUF_C_LABEL_REPEATED ||
            (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) || *sub != NULL)
            continue;
        const ProtobufCMessageDescriptor *d = f->descriptor;
        if ((*sub = calloc(1, d->sizeof_message)) == NULL)
            abort();
        protobuf_c_message_init(d, *sub);
        fill_messages(*sub, depth - 1);
    }
}

/* mode, the route's byte, then text. */
static void emit_route(const char *name, char mode, const char *operation_id, const char *text)
{
    char prefix[3] = {mode, edge_route_byte(operation_id), '\0'};
    emit_cat("fuzz_edge", name, prefix, text, strlen(text));
}

static void corpus_edge(void)
{
    const char *t = "fuzz_edge";
    emit(t, "path-rotate", "P/api/credentials/secrets/sec_5NPKMVKYTE6Z2RVKV37EW1BN4H/rotate");
    emit(t, "path-encoded-slash", "P/api/credentials/secrets/a%2Fb");
    emit(t, "path-literal-over-param", "P/api/credentials/oauth-connectors/builtin-providers");
    emit(t, "path-utf8", "P/api/credentials/inject/%C3%A9t%C3%A9");
    emit(t, "path-dots", "P/api/../%2e%2e/x//y/");
    emit(t, "path-empty-param", "P/api/credentials/secrets//versions");
    emit(t, "path-admin", "P/api/admin/credentials/secrets/sec_1");
    emit(t, "path-callback", "P/api/credentials/oauth/git%20hub/callback");
    emit(t, "path-bad-escape", "P/api/credentials/secrets/%zz%4");
    emit(t, "path-many", "P/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q");

    emit_route("query-list-secrets", 'Q', "listSecrets",
               "scope=LIST_SECRETS_SCOPE_OWNED&owner_type=OWNER_TYPE_TEAM&owner_id=eng&kind="
               "SECRET_KIND_API_KEY&status=SECRET_STATUS_REVOKED&provider=open+ai&page_size=20&"
               "page_token=1700000000123.sec_1");
    emit_route("query-unshare", 'Q', "unshareSecret",
               "grantee_type=GRANTEE_TYPE_USER&grantee_id=bob%40example&role=SHARE_ROLE_USER");
    emit_route("query-audit-extremes", 'Q', "queryAuditEvents",
               "since_ms=-9223372036854775808&until_ms=9223372036854775807&outcome="
               "AUDIT_OUTCOME_DENIED&event_type=secret.rotated&correlation_id=req-1");
    emit_route("query-audit-overflow", 'Q', "adminQueryAuditEvents",
               "since_ms=-9223372036854775809&until_ms=18446744073709551616&page_size=-1");
    emit_route("query-connectors", 'Q', "listConnectors",
               "provider_key=github&include_disabled=true");
    emit_route("query-callback", 'Q', "completeConnect",
               "code=4%2F0Ab&state=st.1&error&error_description=access+denied");
    emit_route("query-connections", 'Q', "listConnections",
               "state=CONNECTION_STATE_RECONSENT_REQUIRED&subject_user_id=alice&page_size=007");
    emit_route("query-migrations", 'Q', "listMigrationPreviews",
               "source_type=MIGRATION_SOURCE_TYPE_MCP_SERVER_ENV&status="
               "MIGRATION_PREVIEW_STATUS_PENDING_REVIEW&run_id=r1");
    emit_route("query-repeated", 'Q', "listSecretVersions", "page_size=1&page_size=2");
    emit_route("query-page-size-2p32", 'Q', "listSecretVersions", "page_size=4294967296");
    emit_route("query-unknown", 'Q', "adminListSecrets", "scope=LIST_SECRETS_SCOPE_OWNED");

    /* Every member of each body route's request type, nested messages included (the mapping's
     * own output of defaults), then values of note. */
    size_t n = 0;
    const edge_route_t *routes = edge_routes(&n);
    for (size_t i = 0; i < n; i++) {
        const ProtobufCMessageDescriptor *d = edge_route_rpc(&routes[i])->input;
        if (!routes[i].body)
            continue;
        ProtobufCMessage *m = calloc(1, d->sizeof_message);
        pjson_options_t o = {.flags = PJSON_EMIT_DEFAULTS};
        char *text = NULL, name[96];
        size_t len = 0;
        if (m == NULL)
            abort();
        protobuf_c_message_init(d, m);
        fill_messages(m, 4);
        if (!pjson_encode(&text, &len, m, &o, NULL))
            abort();
        snprintf(name, sizeof(name), "body-%s-defaults", routes[i].operation_id);
        emit_route(name, 'B', routes[i].operation_id, text);
        pjson_text_free(text, len);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    emit_route("body-create", 'B', "createSecret",
               "{\"idempotencyKey\":\"k\",\"owner\":{\"ownerType\":\"OWNER_TYPE_USER\"},\"kind\":"
               "\"SECRET_KIND_API_KEY\",\"allowedUses\":[\"mcp.tool\"],\"value\":\"c2s=\"}");
    emit_route("body-update-same-id", 'B', "updateSecret",
               "{\"secretId\":\"p\",\"displayName\":\"x\",\"updateMask\":[\"display_name\"]}");
    emit_route("body-rotate-retarget", 'B', "rotateSecret",
               "{\"secretId\":\"other\",\"expectedVersion\":4294967295,\"value\":\"\"}");
    emit_route("body-share", 'B', "shareSecret",
               "{\"grantee\":{\"granteeType\":\"GRANTEE_TYPE_TEAM\",\"granteeId\":\"eng\"},"
               "\"role\":\"SHARE_ROLE_MANAGER\",\"previewOnly\":true}");
    emit_route("body-retrieve", 'B', "retrieveSecret",
               "{\"secretRef\":\"sec_1\",\"intendedUse\":\"mcp_server_env\",\"resourceContext\":{"
               "\"resourceType\":\"mcp_server\",\"attributes\":{\"tool\":\"x\"}}}");
    emit_route("body-inject", 'B', "injectCredential",
               "{\"provider_key\":\"p\",\"requiredScopes\":[\"repo\",\"read:org\"]}");
    emit_route(
        "body-connector", 'B', "createConnector",
        "{\"connector\":{\"providerKey\":\"github\",\"type\":\"CONNECTOR_TYPE_CUSTOM_OIDC\","
        "\"endpoints\":{\"tokenUrl\":\"https://idp.example/token\"},\"scopes\":[\"openid\"],"
        "\"scopesVersion\":2,\"refreshPolicy\":{\"refreshEnabled\":true,"
        "\"refreshBeforeExpiryMs\":\"60000\"},\"authorizationParams\":{\"prompt\":\"consent\"}},"
        "\"clientSecret\":\"c2VjcmV0\"}");
    emit_route("body-enable", 'B', "enableConnector", "{\"teamIds\":[\"eng\",\"ops\"]}");
    char big[2200];
    size_t at = (size_t)snprintf(big, sizeof(big), "{\"value\":\"");
    memset(big + at, 'A', sizeof(big) - at - 3);
    memcpy(big + sizeof(big) - 3, "\"}", 3);
    emit_route("body-over-limit", 'B', "rotateSecret", big); /* fuzz_edge.c's BODY_MAX is 2048 */
    emit_route("body-migration", 'B', "startMigrationPreview",
               "{\"sourceType\":\"MIGRATION_SOURCE_TYPE_CATALOG_API_KEY\",\"sourceId\":\"c1\"}");

    emit(t, "request-list",
         "RGET /api/credentials/secrets?scope=LIST_SECRETS_SCOPE_ALL&page_size=5");
    emit(t, "request-update",
         "RPATCH /api/credentials/secrets/sec_1\n{\"displayName\":\"n\",\"updateMask\":"
         "[\"display_name\"]}");
    emit(
        t, "request-rotate-retarget",
        "RPOST /api/credentials/secrets/sec_1/rotate\n{\"secretId\":\"sec_2\",\"value\":\"QQ==\"}");
    emit(t, "request-unshare",
         "RDELETE /api/credentials/secrets/sec%5F1/shares?grantee_type=GRANTEE_TYPE_SERVICE&"
         "grantee_id=agent-runtime");
    emit(t, "request-callback",
         "RGET /api/credentials/oauth/github/callback?code=abc&state=s%2Bt&error_description=a+b");
    emit(t, "request-admin-update",
         "RPATCH /api/admin/credentials/secrets/sec_1\n{\"secret_id\":\"sec_1\"}");
    emit(t, "request-get-with-body", "RGET /api/credentials/secrets/sec_1\n{}");
    emit(t, "request-unknown-method", "RPUT /api/credentials/secrets/sec_1\n{}");
    emit(t, "request-reconnect",
         "RPOST /api/credentials/connections/conn_1/reconnect\n{\"returnTo\":\"/ui\"}");

    emit(t, "headers-browser",
         "Happlication/json; charset=utf-8\nBearer abc.def~+/==\nsame-origin\n"
         "http://ui.example:3000, https://credex.example\nhttps://credex.example");
    emit(t, "headers-token-space", "Happlication/json\nBearer abc= \nnone");
    emit(t, "headers-odd", "Htext/plain\nbearer  x y\ncross-site\n,, ,null,\nnull");
    emit(t, "headers-quoted", "HAPPLICATION/JSON ;\tCHARSET = \"UTF-8\"\nBEARER ==\nSame-Site\n\n");
    emit(t, "headers-same-site-allowed", "Sapplication/json;charset=latin1\nBearer\tt\nsame-site");
}

/* ---- fuzz_wire ---------------------------------------------------------------------------- */

/* The type bytes of fuzz_wire.c's types[]. */
#define WIRE_AUDIT    "0"
#define WIRE_GET      "1"
#define WIRE_RETRIEVE "2"
#define WIRE_CREATE   "3"
#define WIRE_RESOLVE  "4"
#define WIRE_LIST     "5"
#define WIRE_UPDATE   "6"
#define WIRE_SHARE    "7"

static void corpus_wire(void)
{
    static char *uses[] = {"mcp.tool", "ci.deploy"};
    static char *mask[] = {"display_name", "allowed_uses"};
    static char *ids[] = {SECRET_ID, "sec_AAAAAAAAAAAAAAAAAAAAAAAAAA"};
    const char *t = "fuzz_wire";
    Credex__V1__GetSecretRequest get = CREDEX__V1__GET_SECRET_REQUEST__INIT;
    get.secret_id = SECRET_ID;
    emit_msg(t, "get", WIRE_GET, &get.base);
    get.secret_id = "sec_\xc3\x28"
                    "bad-utf8";
    emit_msg(t, "get-bad-utf8", WIRE_GET, &get.base);
    emit_cat(t, "get-nul", WIRE_GET, "\x0a\x05sec_\0", 7);
    emit_cat(t, "get-truncated", WIRE_GET, "\x0a\x20sec_", 6);

    Credex__V1__ResourceContext__AttributesEntry at =
        CREDEX__V1__RESOURCE_CONTEXT__ATTRIBUTES_ENTRY__INIT;
    Credex__V1__ResourceContext__AttributesEntry *ats[] = {&at};
    at.key = "tool";
    at.value = "create_issue";
    Credex__V1__ResourceContext rc = CREDEX__V1__RESOURCE_CONTEXT__INIT;
    rc.resource_type = "mcp_server";
    rc.resource_id = "github";
    rc.agent_id = "agent-7";
    rc.n_attributes = 1;
    rc.attributes = ats;
    Credex__V1__RetrieveRequest r = CREDEX__V1__RETRIEVE_REQUEST__INIT;
    r.secret_ref = SECRET_ID;
    r.intended_use = "mcp_server_env";
    r.resource_context = &rc;
    emit_msg(t, "retrieve", WIRE_RETRIEVE, &r.base);
    rc.resource_id = "git\xe2\x80\xaehub"; /* a bidirectional override */
    emit_msg(t, "retrieve-bidi", WIRE_RETRIEVE, &r.base);

    Credex__V1__Owner o = CREDEX__V1__OWNER__INIT;
    o.owner_type = CREDEX__V1__OWNER_TYPE__OWNER_TYPE_TEAM;
    o.owner_id = "eng";
    Credex__V1__CreateSecretRequest c = CREDEX__V1__CREATE_SECRET_REQUEST__INIT;
    c.idempotency_key = "idem-1";
    c.owner = &o;
    c.kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_API_KEY;
    c.display_name = "OpenAI \xc3\xa9quipe";
    c.description = "line one\nline two\tindented";
    c.provider = "openai";
    c.n_allowed_uses = 2;
    c.allowed_uses = uses;
    c.value.data = (uint8_t *)"demo-va\0\xff bytes!";
    c.value.len = 16;
    emit_msg(t, "create", WIRE_CREATE, &c.base);
    c.kind = (Credex__V1__SecretKind)99; /* open enum: a number no name has */
    emit_msg(t, "create-unknown-kind", WIRE_CREATE, &c.base);

    Credex__V1__StoreResolveRequest sr = CREDEX__V1__STORE_RESOLVE_REQUEST__INIT;
    sr.secret_id = SECRET_ID;
    sr.expected_kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_TOKEN;
    emit_msg(t, "resolve", WIRE_RESOLVE, &sr.base);
    /* expected_kind as an 11-byte varint: wider than any enum */
    emit_cat(t, "resolve-wide-varint", WIRE_RESOLVE, "\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
             11);

    Credex__V1__PageRequest pg = CREDEX__V1__PAGE_REQUEST__INIT;
    pg.page_size = 50;
    pg.page_token = "1700000000123." SECRET_ID;
    Credex__V1__Owner *owners[] = {&o};
    Credex__V1__StoreListSecretsRequest l = CREDEX__V1__STORE_LIST_SECRETS_REQUEST__INIT;
    l.n_owners = 1;
    l.owners = owners;
    l.n_secret_ids = 2;
    l.secret_ids = ids;
    l.page = &pg;
    emit_msg(t, "list", WIRE_LIST, &l.base);
    /* page_size 2^32 + 1: protobuf-c would keep 1 */
    emit_cat(t, "list-page-size-2p32", WIRE_LIST, "\x42\x06\x08\x81\x80\x80\x80\x10", 8);

    Credex__V1__UpdateSecretRequest u = CREDEX__V1__UPDATE_SECRET_REQUEST__INIT;
    u.secret_id = SECRET_ID;
    u.display_name = "renamed";
    u.n_allowed_uses = 2;
    u.allowed_uses = uses;
    u.n_update_mask = 2;
    u.update_mask = mask;
    emit_msg(t, "update", WIRE_UPDATE, &u.base);

    Credex__V1__Grantee gr = CREDEX__V1__GRANTEE__INIT;
    gr.grantee_type = CREDEX__V1__GRANTEE_TYPE__GRANTEE_TYPE_SERVICE;
    gr.grantee_id = "agent-runtime";
    Credex__V1__ShareSecretRequest sh = CREDEX__V1__SHARE_SECRET_REQUEST__INIT;
    sh.secret_id = SECRET_ID;
    sh.grantee = &gr;
    sh.role = CREDEX__V1__SHARE_ROLE__SHARE_ROLE_USER;
    sh.preview_only = true;
    emit_msg(t, "share", WIRE_SHARE, &sh.base);

    Credex__V1__AuditEvent e = CREDEX__V1__AUDIT_EVENT__INIT;
    e.event_type = "secret.share";
    e.outcome = CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_DENIED;
    e.reason = "permission_denied";
    e.resource_type = "secret_ref";
    e.resource_id = SECRET_ID;
    e.caller_kind = CREDEX__V1__CALLER_KIND__CALLER_KIND_BROWSER;
    e.resource_context = &rc;
    Credex__V1__StoreAppendAuditEventRequest a = CREDEX__V1__STORE_APPEND_AUDIT_EVENT_REQUEST__INIT;
    a.event = &e;
    emit_msg(t, "audit-event", WIRE_AUDIT, &a.base);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--check") == 0) {
        g.check = true;
        g.dir = argv[2];
    } else if (argc == 3 && strcmp(argv[1], "--local") == 0) {
        g.local = true;
        g.dir = argv[2];
        if (mkdir(g.dir, 0755) != 0 && errno != EEXIST) {
            perror(g.dir);
            return 2;
        }
    } else if (argc == 2 && argv[1][0] != '-') {
        g.dir = argv[1];
    } else {
        fprintf(stderr, "usage: fuzz_corpus [--check | --local] DIR\n");
        return 2;
    }
    corpus_config();
    corpus_log();
    corpus_ssrf();
    corpus_oauth_discovery();
    corpus_aws_sts();
    corpus_identity();
    corpus_wrapped_key();
    corpus_jwt();
    corpus_jwt_struct();
    corpus_jwks();
    corpus_fga();
    corpus_secret_doc();
    corpus_envelope();
    corpus_audit_doc();
    corpus_pjson();
    corpus_wire();
    corpus_edge();
    if (g.check && g.differ > 0) {
        fprintf(stderr, "fuzz_corpus: %u files differ: run scripts/fuzz corpus\n", g.differ);
        return 1;
    }
    printf("fuzz_corpus: %s %s (%u written)\n", g.dir, g.check ? "up to date" : "written",
           g.written);
    return 0;
}
