/*
 * Unit tests of discovery (services/oauth/discovery.c): the parser on documents made here
 * (exact issuer, required endpoints, SSRF screening of every endpoint, the *_supported lists,
 * sizes, malformed JSON, no echo of the document), then oauth_discover against a loopback TLS
 * server (openssl s_server -HTTP, which sends each file as a whole HTTP response, with a
 * certificate of the test PKI made at test time) through a plain cx_http client: the OIDC and RFC
 * 8414 locations, a missing document (404), a failing server (503), a wrong issuer, a
 * trailing-slash difference, an oversized answer, a body that is not JSON.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "services/oauth/oauth_internal.h"
#include "tests/unit/kit/testkit.h"

#define ISS "https://idp.example.com"

/* A document for issuer with the given extra members (a JSON fragment, may be ""). */
static char *doc(const char *issuer, const char *extra)
{
    char *s = NULL;
    assert_true(asprintf(&s,
                         "{\"issuer\":\"%s\",\"authorization_endpoint\":\"%s/authorize\","
                         "\"token_endpoint\":\"%s/token\",\"jwks_uri\":\"%s/jwks\"%s%s}",
                         issuer, ISS, ISS, ISS, *extra ? "," : "", extra) > 0);
    return s;
}

static bool parse(const char *issuer, const char *body, const char *const *allow,
                  oauth_discovered_t *d, cx_error_t *err)
{
    return oauth_discovery_parse(issuer, body, strlen(body), allow, d, err);
}

static void expect_refused(const char *issuer, const char *body, cx_code_t code, const char *words,
                           const char *not_quoted)
{
    oauth_discovered_t d = {.pkce_s256 = true};
    cx_error_t err;
    if (parse(issuer, body, NULL, &d, &err))
        fail_msg("accepted; expected \"%s\"", words);
    if (err.code != code)
        fail_msg("code %s: %s", cx_code_reason(err.code), err.message);
    if (words && !strstr(err.message, words))
        fail_msg("\"%s\" lacks \"%s\"", err.message, words);
    if (not_quoted && strstr(err.message, not_quoted))
        fail_msg("\"%s\" quotes the document", err.message);
    assert_true(d.pkce_s256); /* untouched */
    assert_null(d.issuer);
}

static void test_parse_full_document(void **state)
{
    (void)state;
    char *b = doc(ISS, "\"userinfo_endpoint\":\"https://idp.example.com/userinfo\","
                       "\"revocation_endpoint\":\"https://idp.example.com/revoke\","
                       "\"code_challenge_methods_supported\":[\"plain\",\"S256\"],"
                       "\"token_endpoint_auth_methods_supported\":[\"client_secret_post\","
                       "\"private_key_jwt\",\"client_secret_basic\"],"
                       "\"authorization_response_iss_parameter_supported\":true,"
                       "\"unknown_member\":{\"nested\":[1,2,3]}");
    oauth_discovered_t d;
    cx_error_t err;
    if (!parse(ISS, b, NULL, &d, &err))
        fail_msg("%s", err.message);
    assert_string_equal(d.issuer, ISS);
    assert_string_equal(d.authorization_url, ISS "/authorize");
    assert_string_equal(d.token_url, ISS "/token");
    assert_string_equal(d.userinfo_url, ISS "/userinfo");
    assert_string_equal(d.revocation_url, ISS "/revoke");
    assert_string_equal(d.jwks_uri, ISS "/jwks");
    assert_true(d.pkce_s256);
    assert_true(d.auth_basic);
    assert_true(d.auth_post);
    assert_true(d.iss_parameter);
    oauth_discovered_clear(&d);
    oauth_discovered_clear(&d);
    oauth_discovered_clear(NULL);
    free(b);
}

static void test_parse_supported_lists(void **state)
{
    (void)state;
    static const struct {
        const char *extra;
        bool s256, basic, post, iss;
    } cases[] = {
        {"", true, true, false, false}, /* absent: S256 assumed, Basic the RFC 8414 default */
        {"\"code_challenge_methods_supported\":[\"plain\"]", false, true, false, false},
        {"\"code_challenge_methods_supported\":[]", false, true, false, false},
        {"\"code_challenge_methods_supported\":[\"s256\"]", false, true, false, false},
        {"\"token_endpoint_auth_methods_supported\":[\"client_secret_post\"]", true, false, true,
         false},
        {"\"token_endpoint_auth_methods_supported\":[\"private_key_jwt\"]", true, false, false,
         false},
        {"\"token_endpoint_auth_methods_supported\":[1,null,\"client_secret_basic\"]", true, true,
         false, false},
        {"\"authorization_response_iss_parameter_supported\":false", true, true, false, false},
        {"\"authorization_response_iss_parameter_supported\":null", true, true, false, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *b = doc(ISS, cases[i].extra);
        oauth_discovered_t d;
        cx_error_t err;
        if (!parse(ISS, b, NULL, &d, &err))
            fail_msg("case %zu: %s", i, err.message);
        assert_int_equal(d.pkce_s256, cases[i].s256);
        assert_int_equal(d.auth_basic, cases[i].basic);
        assert_int_equal(d.auth_post, cases[i].post);
        assert_int_equal(d.iss_parameter, cases[i].iss);
        oauth_discovered_clear(&d);
        free(b);
    }
}

/* The issuer must be the configured one byte for byte: a trailing slash, a case change, a
 * different path or host are all a mismatch (the mix-up defence). */
static void test_parse_issuer_exact(void **state)
{
    (void)state;
    static const struct {
        const char *configured, *in_doc;
    } cases[] = {
        {"https://idp.example.com", "https://idp.example.com/"},
        {"https://idp.example.com/", "https://idp.example.com"},
        {"https://idp.example.com", "https://IDP.example.com"},
        {"https://idp.example.com/tenant1", "https://idp.example.com/tenant2"},
        {"https://idp.example.com", "https://canary-evil.example.com"},
        {"https://idp.example.com", "https://idp.example.com:443"},
        {"https://idp.example.com", ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *b = doc(cases[i].in_doc, "");
        expect_refused(cases[i].configured, b, CX_ERR_INVALID_ARGUMENT, "issuer mismatch",
                       "canary");
        free(b);
    }
    expect_refused(ISS,
                   "{\"authorization_endpoint\":\"" ISS "/a\",\"token_endpoint\":\"" ISS "/t\"}",
                   CX_ERR_INVALID_ARGUMENT, "no issuer", NULL);
    expect_refused(ISS, "{\"issuer\":42}", CX_ERR_INVALID_ARGUMENT, "no issuer", NULL);
}

static void test_parse_endpoints_screened(void **state)
{
    (void)state;
    expect_refused(ISS, "{\"issuer\":\"" ISS "\",\"token_endpoint\":\"" ISS "/t\"}",
                   CX_ERR_INVALID_ARGUMENT, "authorization_endpoint", NULL);
    expect_refused(ISS, "{\"issuer\":\"" ISS "\",\"authorization_endpoint\":\"" ISS "/a\"}",
                   CX_ERR_INVALID_ARGUMENT, "token_endpoint", NULL);
    static const struct {
        const char *member, *url, *host;
        cx_code_t code;
    } cases[] = {
        {"token_endpoint", "https://169.254.169.254/token", "169.254", CX_ERR_SSRF_BLOCKED},
        {"token_endpoint", "https://[::ffff:127.0.0.1]/token", "127", CX_ERR_SSRF_BLOCKED},
        {"authorization_endpoint", "http://idp.example.com/a", "idp", CX_ERR_SSRF_BLOCKED},
        {"userinfo_endpoint", "https://10.0.0.7/u", "10.0", CX_ERR_SSRF_BLOCKED},
        {"revocation_endpoint", "https://localhost/r", "localhost", CX_ERR_SSRF_BLOCKED},
        {"jwks_uri", "https://0x7f000001/jwks", "0x7f", CX_ERR_SSRF_BLOCKED},
        {"userinfo_endpoint", "https://canary:pw@idp.example.com/u", "canary", CX_ERR_SSRF_BLOCKED},
        {"jwks_uri", "https://100.100.100.100/jwks", "100.100", CX_ERR_SSRF_BLOCKED},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *b = NULL;
        /* later duplicate members are refused, so build the document without the default */
        assert_true(asprintf(&b, "{\"issuer\":\"" ISS "\",%s\"%s\":\"%s\"%s}",
                             strcmp(cases[i].member, "authorization_endpoint") != 0
                                 ? "\"authorization_endpoint\":\"" ISS "/a\","
                                 : "",
                             cases[i].member, cases[i].url,
                             strcmp(cases[i].member, "token_endpoint") != 0
                                 ? ",\"token_endpoint\":\"" ISS "/t\""
                                 : "") > 0);
        expect_refused(ISS, b, cases[i].code, cases[i].member, cases[i].host);
        free(b);
    }
    expect_refused(ISS,
                   "{\"issuer\":\"" ISS "\",\"authorization_endpoint\":7,"
                   "\"token_endpoint\":\"" ISS "/t\"}",
                   CX_ERR_INVALID_ARGUMENT, "authorization_endpoint", NULL);
    /* the allow-list applies to the document's endpoints */
    char *b = doc(ISS, "");
    const char *const allow[] = {"other.example.com", NULL};
    oauth_discovered_t d;
    cx_error_t err;
    assert_false(parse(ISS, b, allow, &d, &err));
    assert_int_equal(err.code, CX_ERR_SSRF_BLOCKED);
    const char *const allow2[] = {"idp.example.com", NULL};
    assert_true(parse(ISS, b, allow2, &d, &err));
    oauth_discovered_clear(&d);
    free(b);
}

static void test_parse_malformed_and_oversized(void **state)
{
    (void)state;
    expect_refused(ISS, "not json canary", CX_ERR_INVALID_ARGUMENT, "not a JSON object", "canary");
    expect_refused(ISS, "[\"" ISS "\"]", CX_ERR_INVALID_ARGUMENT, "not a JSON object", NULL);
    expect_refused(ISS, "\"canary\"", CX_ERR_INVALID_ARGUMENT, "not a JSON object", "canary");
    expect_refused(ISS, "{\"issuer\":\"" ISS "\",\"issuer\":\"" ISS "\"}", CX_ERR_INVALID_ARGUMENT,
                   "not a JSON object", NULL);
    expect_refused(ISS, "{\"issuer\":\"" ISS "\"", CX_ERR_INVALID_ARGUMENT, "not a JSON object",
                   NULL);
    char *b = doc(ISS, "\"code_challenge_methods_supported\":\"S256\"");
    expect_refused(ISS, b, CX_ERR_INVALID_ARGUMENT, "code_challenge_methods_supported", NULL);
    free(b);
    b = doc(ISS, "\"token_endpoint_auth_methods_supported\":{}");
    expect_refused(ISS, b, CX_ERR_INVALID_ARGUMENT, "token_endpoint_auth_methods_supported", NULL);
    free(b);
    b = doc(ISS, "\"authorization_response_iss_parameter_supported\":\"yes\"");
    expect_refused(ISS, b, CX_ERR_INVALID_ARGUMENT, "iss_parameter", NULL);
    free(b);
    oauth_discovered_t d;
    cx_error_t err;
    assert_false(oauth_discovery_parse(ISS, "", 0, NULL, &d, &err));
    assert_false(oauth_discovery_parse(NULL, "{}", 2, NULL, &d, &err));
    assert_false(oauth_discovery_parse(ISS, "{}", 2, NULL, NULL, &err));

    /* an endpoint over the URL limit */
    char *pad = malloc(CX_HTTP_URL_MAX + 1);
    memset(pad, 'p', CX_HTTP_URL_MAX);
    pad[CX_HTTP_URL_MAX] = '\0';
    assert_true(asprintf(&b,
                         "{\"issuer\":\"" ISS "\",\"authorization_endpoint\":\"" ISS "/a\","
                         "\"token_endpoint\":\"" ISS "/%s\"}",
                         pad) > 0);
    expect_refused(ISS, b, CX_ERR_INVALID_ARGUMENT, "token_endpoint", "ppp");
    free(b);
    free(pad);

    /* the document limit: 64 KiB passes, one byte more does not */
    char *base = doc(ISS, "\"x\":\"\"");
    size_t blen = strlen(base), limit = 64 * 1024;
    char *big = malloc(limit + 2);
    memcpy(big, base, blen - 2); /* up to the opening quote of x's value */
    memset(big + blen - 2, 'z', limit - blen);
    memcpy(big + limit - 2, "\"}", 3);
    assert_int_equal(strlen(big), limit);
    assert_true(oauth_discovery_parse(ISS, big, limit, NULL, &d, &err));
    oauth_discovered_clear(&d);
    memmove(big + limit - 1, big + limit - 2, 3);
    big[limit - 2] = 'z';
    assert_false(oauth_discovery_parse(ISS, big, limit + 1, NULL, &d, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_null(strstr(err.message, "zzz"));
    free(big);
    free(base);
}

/* ---- oauth_discover over TLS ---------------------------------------------------------------- */

typedef struct tls_fixture {
    char dir[64];
    int port;
    pid_t server;
    char origin[64]; /* https://localhost:<port> */
} tls_fixture_t;

static void write_response(const char *dir, const char *rel, const char *status, const char *body,
                           size_t len);

/* dir/rel holds a whole HTTP response: status line, headers, the body. */
static void write_file(const char *dir, const char *rel, const char *body, size_t len)
{
    write_response(dir, rel, "200 OK", body, len);
}

static void write_response(const char *dir, const char *rel, const char *status, const char *body,
                           size_t len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    /* create the parent folders */
    for (char *p = path + strlen(dir) + 1; (p = strchr(p, '/')); p++) {
        *p = '\0';
        mkdir(path, 0700);
        *p = '/';
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "HTTP/1.0 %s\r\nContent-Type: application/json\r\n\r\n", status);
    assert_int_equal(fwrite(body, 1, len, f), len);
    fclose(f);
}

/* openssl s_server -HTTP on 127.0.0.1:port with the test PKI's certificate of `gateway`
 * (localhost); returns once it accepts connections. */
static pid_t http_file_server(const char *dir, int port)
{
    char accept[64];
    snprintf(accept, sizeof(accept), "127.0.0.1:%d", port);
    const char *cert = tk_pki_path("gateway.pem"), *key = tk_pki_path("gateway.key");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (chdir(dir) != 0)
            _exit(127);
        execlp("openssl", "openssl", "s_server", "-quiet", "-HTTP", "-accept", accept, "-cert",
               cert, "-key", key, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100 && !tk_port_open("127.0.0.1", port); i++)
        usleep(50000);
    assert_true(tk_port_open("127.0.0.1", port));
    return pid;
}

static int tls_setup(void **state)
{
    tls_fixture_t *t = calloc(1, sizeof(*t));
    strcpy(t->dir, "/tmp/oauth_disc_XXXXXX");
    if (!mkdtemp(t->dir))
        return -1;
    t->port = tk_free_port("127.0.0.1");
    snprintf(t->origin, sizeof(t->origin), "https://localhost:%d", t->port);
    char *b;
    /* OIDC at the origin */
    b = doc(t->origin, "");
    write_file(t->dir, ".well-known/openid-configuration", b, strlen(b));
    free(b);
    /* RFC 8414 for the issuer <origin>/tenant1, which has no jwks_uri (plain OAuth 2) */
    char iss[128];
    snprintf(iss, sizeof(iss), "%s/tenant1", t->origin);
    assert_true(asprintf(&b,
                         "{\"issuer\":\"%s\",\"authorization_endpoint\":\"" ISS "/a\","
                         "\"token_endpoint\":\"" ISS "/t\"}",
                         iss) > 0);
    write_file(t->dir, ".well-known/oauth-authorization-server/tenant1", b, strlen(b));
    /* the same document at the OIDC location of tenant1: OIDC needs jwks_uri */
    write_file(t->dir, "tenant1/.well-known/openid-configuration", b, strlen(b));
    free(b);
    /* a document naming another issuer */
    b = doc("https://canary-other.example.com", "");
    write_file(t->dir, "wrong/.well-known/openid-configuration", b, strlen(b));
    free(b);
    /* a body that is not JSON, and a large one */
    write_file(t->dir, "html/.well-known/openid-configuration", "<html>canary</html>", 19);
    snprintf(iss, sizeof(iss), "%s/big", t->origin);
    b = doc(iss, "\"x\":\"");
    size_t n = strlen(b);
    char *big = malloc(n + 8192 + 3);
    memcpy(big, b, n);
    memset(big + n, 'z', 8192);
    memcpy(big + n + 8192, "\"}", 3);
    write_file(t->dir, "big/.well-known/openid-configuration", big, strlen(big));
    free(big);
    free(b);
    /* a missing document and a failing server */
    write_response(t->dir, "nothing/.well-known/openid-configuration", "404 Not Found",
                   "{\"error\":\"canary\"}", 18);
    write_response(t->dir, ".well-known/oauth-authorization-server/nothing", "404 Not Found", "{}",
                   2);
    write_response(t->dir, "down/.well-known/openid-configuration", "503 Service Unavailable", "{}",
                   2);
    t->server = http_file_server(t->dir, t->port);
    *state = t;
    return 0;
}

static int tls_teardown(void **state)
{
    tls_fixture_t *t = *state;
    tk_process_stop(t->server);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
    if (system(cmd) != 0)
        return -1;
    free(t);
    return 0;
}

static cx_http_t *client(size_t max_bytes)
{
    cx_http_options_t o = {.name = "discovery test",
                           .ca_file = tk_pki_path("ca.pem"),
                           .timeout_ms = 5000,
                           .max_response_bytes = max_bytes};
    cx_error_t err;
    cx_http_t *c = cx_http_new(&o, &err);
    if (!c)
        fail_msg("%s", err.message);
    return c;
}

static void test_discover_over_tls(void **state)
{
    tls_fixture_t *t = *state;
    cx_http_t *http = client(0);
    oauth_discovered_t d;
    cx_error_t err;
    char iss[128];

    if (!oauth_discover(http, t->origin, true, NULL, &d, &err))
        fail_msg("OIDC: %s", err.message);
    assert_string_equal(d.issuer, t->origin);
    assert_string_equal(d.token_url, ISS "/token");
    assert_string_equal(d.jwks_uri, ISS "/jwks");
    oauth_discovered_clear(&d);

    /* RFC 8414: the well-known segment goes before the issuer's path */
    snprintf(iss, sizeof(iss), "%s/tenant1", t->origin);
    if (!oauth_discover(http, iss, false, NULL, &d, &err))
        fail_msg("RFC 8414: %s", err.message);
    assert_string_equal(d.issuer, iss);
    assert_string_equal(d.token_url, ISS "/t");
    assert_null(d.jwks_uri);
    oauth_discovered_clear(&d);

    /* OIDC requires jwks_uri */
    assert_false(oauth_discover(http, iss, true, NULL, &d, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "jwks_uri"));

    /* a trailing slash on the configured issuer finds the same document (OIDC Discovery 4.1
     * removes it to build the URL) but the document's issuer no longer equals it */
    snprintf(iss, sizeof(iss), "%s/", t->origin);
    assert_false(oauth_discover(http, iss, true, NULL, &d, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "issuer mismatch"));

    /* a document of another issuer */
    snprintf(iss, sizeof(iss), "%s/wrong", t->origin);
    assert_false(oauth_discover(http, iss, true, NULL, &d, &err));
    assert_non_null(strstr(err.message, "issuer mismatch"));
    assert_null(strstr(err.message, "canary"));

    /* no document: the admin's issuer is wrong */
    snprintf(iss, sizeof(iss), "%s/nothing", t->origin);
    assert_false(oauth_discover(http, iss, true, NULL, &d, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_int_equal(err.detail, CX_DETAIL_HTTP_STATUS);
    assert_non_null(strstr(err.message, "404"));
    assert_null(strstr(err.message, "canary"));
    /* RFC 8414 location of <origin>/nothing: /.well-known/oauth-authorization-server/nothing */
    assert_false(oauth_discover(http, iss, false, NULL, &d, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "discovery"));
    /* a server error is the provider's: unavailable */
    snprintf(iss, sizeof(iss), "%s/down", t->origin);
    assert_false(oauth_discover(http, iss, true, NULL, &d, &err));
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    assert_int_equal(err.detail, CX_DETAIL_HTTP_STATUS);
    assert_non_null(strstr(err.message, "503"));

    /* not JSON */
    snprintf(iss, sizeof(iss), "%s/html", t->origin);
    assert_false(oauth_discover(http, iss, true, NULL, &d, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_null(strstr(err.message, "canary"));

    /* the big document passes with the default limit, not with the client's 4 KiB one */
    snprintf(iss, sizeof(iss), "%s/big", t->origin);
    if (!oauth_discover(http, iss, true, NULL, &d, &err))
        fail_msg("big: %s", err.message);
    oauth_discovered_clear(&d);
    cx_http_t *small = client(4096);
    assert_false(oauth_discover(small, iss, true, NULL, &d, &err));
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    assert_int_equal(err.detail, CX_DETAIL_HTTP_TOO_BIG);
    cx_http_free(small);

    /* issuers that cannot be discovered from, refused before anything is sent */
    const char *bad[] = {"http://localhost/x",
                         "https://idp.example.com/?q=1",
                         "https://idp.example.com/#f",
                         "https://",
                         "https:///x",
                         ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(oauth_discover(http, bad[i], true, NULL, &d, &err));
        assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    }
    cx_http_free(http);

    /* nothing listening: unavailable */
    http = client(0);
    snprintf(iss, sizeof(iss), "https://localhost:%d", tk_free_port("127.0.0.1"));
    assert_false(oauth_discover(http, iss, true, NULL, &d, &err));
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    cx_http_free(http);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_full_document),
        cmocka_unit_test(test_parse_supported_lists),
        cmocka_unit_test(test_parse_issuer_exact),
        cmocka_unit_test(test_parse_endpoints_screened),
        cmocka_unit_test(test_parse_malformed_and_oversized),
        cmocka_unit_test_setup_teardown(test_discover_over_tls, tls_setup, tls_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
