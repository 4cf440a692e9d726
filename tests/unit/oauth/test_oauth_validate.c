/*
 * Unit tests of connector validation (services/oauth/validate.c): built-in and custom
 * connectors, the SSRF matrix of every connector URL field in every notation, redirect URIs,
 * scopes, mappings, refresh policy, authorization parameters, sizes; every refusal names its
 * field and never the value.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/oauth/oauth_internal.h"

/* A connector request built on the stack: the message and what it points to. */
typedef struct req {
    Credex__V1__Connector c;
    Credex__V1__ConnectorEndpoints ep;
    Credex__V1__AccountMapping map;
    Credex__V1__RefreshPolicy rp;
    Credex__V1__Connector__AuthorizationParamsEntry pe[40];
    Credex__V1__Connector__AuthorizationParamsEntry *pp[40];
    char *scopes[300];
} req_t;

static const oauth_validate_env_t dev = {.allow_hosts = NULL, .production = false};
static const oauth_validate_env_t prod = {.allow_hosts = NULL, .production = true};

static void req_init(req_t *r, Credex__V1__ConnectorType type, const char *key)
{
    memset(r, 0, sizeof(*r));
    credex__v1__connector__init(&r->c);
    credex__v1__connector_endpoints__init(&r->ep);
    credex__v1__account_mapping__init(&r->map);
    credex__v1__refresh_policy__init(&r->rp);
    r->c.type = type;
    r->c.provider_key = (char *)key;
    r->c.client_id = "client-123";
    r->c.redirect_uri = "https://credex.example.com/api/credentials/oauth/cb";
    r->c.scopes = r->scopes;
    r->c.authorization_params = r->pp;
    if (type != CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_BUILT_IN) {
        r->c.display_name = "Custom IdP";
        r->c.endpoints = &r->ep;
        r->ep.authorization_url = "https://idp.example.com/authorize";
        r->ep.token_url = "https://idp.example.com/token";
        if (type == CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OIDC)
            r->ep.issuer_url = "https://idp.example.com";
    }
}

static void add_scope(req_t *r, const char *s)
{
    r->scopes[r->c.n_scopes++] = (char *)s;
}

static void add_param(req_t *r, const char *k, const char *v)
{
    Credex__V1__Connector__AuthorizationParamsEntry *e = &r->pe[r->c.n_authorization_params];
    credex__v1__connector__authorization_params_entry__init(e);
    e->key = (char *)k;
    e->value = (char *)v;
    r->pp[r->c.n_authorization_params++] = e;
}

/* Validation must fail with code, naming field, quoting no part of `secretish` (may be NULL). */
static void expect_fail(const req_t *r, const oauth_validate_env_t *env, cx_code_t code,
                        const char *field, const char *secretish)
{
    oauth_connector_t out;
    cx_error_t err;
    cx_error_clear(&err);
    if (oauth_connector_validate(&r->c, env, &out, &err))
        fail_msg("accepted; expected a refusal naming %s", field);
    if (err.code != code)
        fail_msg("code %s, not %s: %s", cx_code_reason(err.code), cx_code_reason(code),
                 err.message);
    if (field && !strstr(err.message, field))
        fail_msg("\"%s\" does not name %s", err.message, field);
    if (secretish && *secretish && strstr(err.message, secretish))
        fail_msg("\"%s\" quotes the value", err.message);
    /* *out holds nothing */
    assert_null(out.provider_key);
    assert_int_equal(out.nscopes, 0);
}

static void expect_ok(const req_t *r, const oauth_validate_env_t *env, oauth_connector_t *out)
{
    cx_error_t err;
    if (!oauth_connector_validate(&r->c, env, out, &err))
        fail_msg("refused: %s", err.message);
}

static void test_builtin_defaults(void **state)
{
    (void)state;
    req_t r;
    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_BUILT_IN, "github");
    oauth_connector_t c;
    expect_ok(&r, &prod, &c);
    const oauth_provider_t *p = oauth_provider_find("github");
    assert_string_equal(c.provider_key, "github");
    assert_string_equal(c.display_name, p->display_name);
    assert_string_equal(c.token_url, p->token_url);
    assert_string_equal(c.authorization_url, p->authorization_url);
    assert_string_equal(c.userinfo_url, "https://api.github.com/user");
    assert_null(c.revocation_url);
    assert_null(c.issuer_url);
    assert_int_equal(c.nscopes, 2);
    assert_string_equal(c.scopes[0], "read:user");
    assert_string_equal(c.scopes[1], "repo");
    assert_string_equal(c.account_id_field, "id");
    assert_string_equal(c.account_name_field, "login");
    assert_int_equal(c.client_auth, p->client_auth);
    assert_true(c.refresh_enabled);
    assert_int_equal(c.refresh_before_expiry_ms, 300000);
    assert_int_equal(c.nauth_params, 0);
    oauth_connector_clear(&c);
    oauth_connector_clear(&c); /* cleared twice: nothing left */
    oauth_connector_clear(NULL);

    /* given scopes replace the default, de-duplicated in order */
    add_scope(&r, "repo");
    add_scope(&r, "read:org");
    add_scope(&r, "repo");
    expect_ok(&r, &prod, &c);
    assert_int_equal(c.nscopes, 2);
    assert_string_equal(c.scopes[0], "repo");
    assert_string_equal(c.scopes[1], "read:org");
    oauth_connector_clear(&c);
}

static void test_builtin_fixed_fields(void **state)
{
    (void)state;
    req_t r;
    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_BUILT_IN, "github");
    r.c.endpoints = &r.ep;
    r.ep.token_url = "https://evil.example.com/token";
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "endpoints.token_url", "evil");
    r.ep.token_url = "https://github.com/login/oauth/access_token"; /* the same: accepted */
    oauth_connector_t c;
    expect_ok(&r, &dev, &c);
    oauth_connector_clear(&c);
    r.ep.revocation_url = "https://github.com/revoke"; /* GitHub has none in its descriptor */
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "endpoints.revocation_url", NULL);
    r.ep.revocation_url = "";
    r.ep.issuer_url = "https://github.example.com";
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "endpoints.issuer_url", NULL);
    r.ep.issuer_url = "";
    r.c.account_mapping = &r.map;
    r.map.account_id_field = "node_id";
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "account_mapping.account_id_field", NULL);

    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_BUILT_IN, "nope");
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "provider_key", "nope");
    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_BUILT_IN, "");
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "provider_key", NULL);
    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_UNSPECIFIED, "github");
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "type", NULL);
    req_init(&r, (Credex__V1__ConnectorType)42, "github");
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "type", NULL);
}

/* Atlassian: the descriptor's audience and prompt always, not changeable; extra parameters
 * allowed; a validated connector given back (an update) validates to the same. */
static void test_builtin_params_and_round_trip(void **state)
{
    (void)state;
    req_t r;
    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_BUILT_IN, "atlassian");
    add_param(&r, "login_hint", "someone");
    oauth_connector_t c;
    expect_ok(&r, &dev, &c);
    assert_int_equal(c.nauth_params, 3);
    assert_string_equal(c.auth_params[0].name, "audience");
    assert_string_equal(c.auth_params[0].value, "api.atlassian.com");
    assert_string_equal(c.auth_params[1].name, "prompt");
    assert_string_equal(c.auth_params[2].name, "login_hint");
    assert_string_equal(c.account_id_field, "account_id");

    /* the stored form, as connectors.c would give it back on update */
    req_t back;
    req_init(&back, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_BUILT_IN, c.provider_key);
    back.c.display_name = c.display_name;
    back.c.client_id = c.client_id;
    back.c.redirect_uri = c.redirect_uri;
    back.c.endpoints = &back.ep;
    back.ep.authorization_url = c.authorization_url;
    back.ep.token_url = c.token_url;
    back.ep.userinfo_url = c.userinfo_url;
    back.c.account_mapping = &back.map;
    back.map.account_id_field = c.account_id_field;
    back.map.account_name_field = c.account_name_field;
    back.c.refresh_policy = &back.rp;
    back.rp.refresh_enabled = c.refresh_enabled;
    back.rp.refresh_before_expiry_ms = c.refresh_before_expiry_ms;
    for (size_t i = 0; i < c.nscopes; i++)
        add_scope(&back, c.scopes[i]);
    for (size_t i = 0; i < c.nauth_params; i++)
        add_param(&back, c.auth_params[i].name, c.auth_params[i].value);
    oauth_connector_t c2;
    expect_ok(&back, &dev, &c2);
    assert_int_equal(c2.nauth_params, c.nauth_params);
    assert_int_equal(c2.nscopes, c.nscopes);
    for (size_t i = 0; i < c.nscopes; i++)
        assert_string_equal(c2.scopes[i], c.scopes[i]);
    assert_string_equal(c2.token_url, c.token_url);
    oauth_connector_clear(&c2);
    oauth_connector_clear(&c);

    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_BUILT_IN, "atlassian");
    add_param(&r, "audience", "canary.example.com");
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "authorization_params", "canary");
}

/* Every reserved parameter, in any case, is refused for built-in and custom connectors. */
static void test_reserved_params(void **state)
{
    (void)state;
    static const char *const reserved[] = {
        "response_type", "client_id",      "redirect_uri",          "scope",
        "state",         "code_challenge", "code_challenge_method", "nonce",
        "Scope",         "STATE",          "response_mode",         "request_uri",
        "client_secret", "code_verifier"};
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
        req_t r;
        req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OAUTH2, "acme");
        add_param(&r, reserved[i], "x");
        expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "authorization_params", NULL);
        req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_BUILT_IN, "github");
        add_param(&r, reserved[i], "x");
        expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "authorization_params", NULL);
    }
    req_t r;
    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OAUTH2, "acme");
    add_param(&r, "bad name", "x");
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "authorization_params", "bad name");
    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OAUTH2, "acme");
    add_param(&r, "a", "x");
    add_param(&r, "a", "y");
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "authorization_params", NULL);
    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OAUTH2, "acme");
    add_param(&r, "a", "line\nbreak");
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "authorization_params", "line");
    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OAUTH2, "acme");
    char names[17][8];
    for (int i = 0; i < 17; i++) {
        snprintf(names[i], sizeof(names[i]), "p%d", i);
        add_param(&r, names[i], "v");
    }
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "authorization_params", NULL);
    r.c.n_authorization_params = 16;
    oauth_connector_t c;
    expect_ok(&r, &dev, &c);
    assert_int_equal(c.nauth_params, 16);
    oauth_connector_clear(&c);
}

static void test_gitlab_base_url_and_required_scopes(void **state)
{
    (void)state;
    req_t r;
    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_BUILT_IN, "gitlab");
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "scopes", NULL);
    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_BUILT_IN, "pagerduty");
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "scopes", NULL);
    add_scope(&r, "users.read");
    oauth_connector_t c;
    expect_ok(&r, &dev, &c);
    assert_string_equal(c.account_id_field, "user.id");
    oauth_connector_clear(&c);

    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_BUILT_IN, "gitlab");
    add_scope(&r, "api");
    add_scope(&r, "read_user");
    expect_ok(&r, &dev, &c);
    assert_string_equal(c.issuer_url, "https://gitlab.com");
    assert_string_equal(c.token_url, "https://gitlab.com/oauth/token");
    assert_string_equal(c.revocation_url, "https://gitlab.com/oauth/revoke");
    assert_string_equal(c.userinfo_url, "https://gitlab.com/api/v4/user");
    oauth_connector_clear(&c);

    r.c.endpoints = &r.ep;
    r.ep.issuer_url = "https://git.example.com/gitlab/";
    expect_ok(&r, &dev, &c);
    assert_string_equal(c.issuer_url, "https://git.example.com/gitlab");
    assert_string_equal(c.authorization_url, "https://git.example.com/gitlab/oauth/authorize");
    assert_string_equal(c.token_url, "https://git.example.com/gitlab/oauth/token");
    oauth_connector_clear(&c);

    /* the stored endpoints come back on update and agree with the base */
    r.ep.token_url = "https://git.example.com/gitlab/oauth/token";
    expect_ok(&r, &dev, &c);
    oauth_connector_clear(&c);
    r.ep.token_url = "https://gitlab.com/oauth/token";
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "endpoints.token_url", NULL);
    r.ep.token_url = "";

    r.ep.issuer_url = "https://10.1.2.3";
    expect_fail(&r, &dev, CX_ERR_SSRF_BLOCKED, "endpoints.issuer_url", "10.1.2.3");
    r.ep.issuer_url = "https://git.example.com/?x=1";
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "endpoints.issuer_url", NULL);
    const char *const allow[] = {"gitlab.com", NULL};
    const oauth_validate_env_t env = {.allow_hosts = allow};
    r.ep.issuer_url = "https://git.example.com";
    expect_fail(&r, &env, CX_ERR_SSRF_BLOCKED, "endpoints.issuer_url", "git.example.com");
    r.ep.issuer_url = "";
    expect_ok(&r, &env, &c); /* gitlab.com is allowed */
    oauth_connector_clear(&c);
    /* the allow-list applies to built-in endpoints too */
    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_BUILT_IN, "github");
    expect_fail(&r, &env, CX_ERR_SSRF_BLOCKED, "endpoints.", NULL);
}

static void test_custom_connectors(void **state)
{
    (void)state;
    req_t r;
    oauth_connector_t c;
    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OAUTH2, "acme-idp");
    expect_ok(&r, &dev, &c);
    assert_int_equal(c.client_auth, OAUTH_CLIENT_AUTH_BASIC);
    assert_int_equal(c.nscopes, 0);
    assert_null(c.userinfo_url);
    assert_null(c.account_id_field);
    oauth_connector_clear(&c);

    r.ep.userinfo_url = "https://idp.example.com/me";
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "account_mapping.account_id_field", NULL);
    r.c.account_mapping = &r.map;
    r.map.account_id_field = "data.user.id";
    expect_ok(&r, &dev, &c);
    assert_string_equal(c.account_id_field, "data.user.id");
    assert_null(c.account_name_field);
    oauth_connector_clear(&c);
    static const char *const bad_paths[] = {"a..b", ".a", "a.", "a b", "a.b.c.d.e", "a/b"};
    for (size_t i = 0; i < sizeof(bad_paths) / sizeof(bad_paths[0]); i++) {
        r.map.account_id_field = (char *)bad_paths[i];
        expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "account_mapping.account_id_field", NULL);
    }
    r.map.account_id_field = "id";

    r.ep.token_url = "";
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "endpoints.token_url", NULL);
    r.ep.token_url = "https://idp.example.com/token";
    r.ep.authorization_url = "";
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "endpoints.authorization_url", NULL);
    r.ep.authorization_url = "https://idp.example.com/authorize";
    r.c.display_name = "";
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "display_name", NULL);
    r.c.display_name = "Custom IdP";

    static const char *const bad_keys[] = {
        "github", "Acme", "acme_idp", "", "abcdefghijklmnopqrstuvwxyz0123456", "acme idp"};
    for (size_t i = 0; i < sizeof(bad_keys) / sizeof(bad_keys[0]); i++) {
        r.c.provider_key = (char *)bad_keys[i];
        expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "provider_key", NULL);
    }
    r.c.provider_key = "abcdefghijklmnopqrstuvwxyz012345"; /* 32: the limit */
    expect_ok(&r, &dev, &c);
    oauth_connector_clear(&c);

    /* OIDC: issuer required, endpoints optional (discovery), sub/name and openid defaults */
    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OIDC, "corp-sso");
    r.ep.authorization_url = "";
    r.ep.token_url = "";
    expect_ok(&r, &dev, &c);
    assert_string_equal(c.issuer_url, "https://idp.example.com");
    assert_null(c.token_url);
    assert_string_equal(c.account_id_field, "sub");
    assert_string_equal(c.account_name_field, "name");
    assert_int_equal(c.nscopes, 1);
    assert_string_equal(c.scopes[0], "openid");
    assert_int_equal(c.client_auth, OAUTH_CLIENT_AUTH_BASIC);
    oauth_connector_clear(&c);
    add_scope(&r, "profile");
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "openid", NULL);
    add_scope(&r, "openid");
    expect_ok(&r, &dev, &c);
    assert_int_equal(c.nscopes, 2);
    oauth_connector_clear(&c);
    r.ep.issuer_url = "";
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "endpoints.issuer_url", NULL);
    r.ep.issuer_url = "https://idp.example.com#frag";
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "endpoints.issuer_url", NULL);
}

/* The SSRF matrix: every notation of an internal address, names that are loopback by
 * definition, userinfo and plain http, in every URL field of a custom connector. */
/* client_secret_basic by default for custom connectors, client_secret_post on request; a
 * built-in keeps its provider's method. */
static void test_client_auth_method(void **state)
{
    (void)state;
    req_t r;
    oauth_connector_t c;
    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OAUTH2, "acme-idp");
    r.c.client_auth_method = "client_secret_post";
    expect_ok(&r, &dev, &c);
    assert_int_equal(c.client_auth, OAUTH_CLIENT_AUTH_POST);
    assert_string_equal(oauth_client_auth_name(c.client_auth), "client_secret_post");
    oauth_connector_clear(&c);
    r.c.client_auth_method = "client_secret_basic";
    expect_ok(&r, &dev, &c);
    assert_int_equal(c.client_auth, OAUTH_CLIENT_AUTH_BASIC);
    assert_string_equal(oauth_client_auth_name(c.client_auth), "client_secret_basic");
    oauth_connector_clear(&c);
    r.c.client_auth_method = "private_key_jwt";
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "client_auth_method", "private_key_jwt");

    const oauth_provider_t *gh = oauth_provider_find("github");
    assert_non_null(gh);
    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_BUILT_IN, "github");
    expect_ok(&r, &dev, &c);
    assert_int_equal(c.client_auth, gh->client_auth);
    oauth_connector_clear(&c);
    r.c.client_auth_method = (char *)oauth_client_auth_name(gh->client_auth);
    expect_ok(&r, &dev, &c);
    oauth_connector_clear(&c);
    r.c.client_auth_method =
        gh->client_auth == OAUTH_CLIENT_AUTH_POST ? "client_secret_basic" : "client_secret_post";
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "client_auth_method", NULL);
}

static void test_ssrf_matrix(void **state)
{
    (void)state;
    static const struct {
        const char *url, *host;
        cx_code_t code;
    } cases[] = {
        {"https://127.0.0.1/x", "127.0.0.1", CX_ERR_SSRF_BLOCKED},
        {"https://127.1/x", "127.1", CX_ERR_SSRF_BLOCKED},
        {"https://2130706433/x", "2130706433", CX_ERR_SSRF_BLOCKED}, /* decimal */
        {"https://0177.0.0.1/x", "0177.0.0.1", CX_ERR_SSRF_BLOCKED}, /* octal */
        {"https://0x7f.0.0.1/x", "0x7f.0.0.1", CX_ERR_SSRF_BLOCKED}, /* hex */
        {"https://0x7f000001/x", "0x7f000001", CX_ERR_SSRF_BLOCKED},
        {"https://[::1]/x", "::1", CX_ERR_SSRF_BLOCKED},
        {"https://10.0.0.1/x", "10.0.0.1", CX_ERR_SSRF_BLOCKED}, /* private */
        {"https://172.16.5.4/x", "172.16.5.4", CX_ERR_SSRF_BLOCKED},
        {"https://192.168.0.10:8443/x", "192.168.0.10", CX_ERR_SSRF_BLOCKED},
        {"https://012.0.0.1/x", "012.0.0.1", CX_ERR_SSRF_BLOCKED},                  /* octal 10/8 */
        {"https://169.254.169.254/latest", "169.254.169.254", CX_ERR_SSRF_BLOCKED}, /* metadata */
        {"https://0xa9fea9fe/latest", "0xa9fea9fe", CX_ERR_SSRF_BLOCKED},
        {"https://[fe80::1]/x", "fe80::1", CX_ERR_SSRF_BLOCKED},     /* link-local */
        {"https://100.64.0.1/x", "100.64.0.1", CX_ERR_SSRF_BLOCKED}, /* CGNAT */
        {"https://[fc00::1]/x", "fc00::1", CX_ERR_SSRF_BLOCKED},     /* ULA */
        {"https://[fd12:3456::1]/x", "fd12:3456::1", CX_ERR_SSRF_BLOCKED},
        {"https://[::ffff:127.0.0.1]/x", "::ffff:127", CX_ERR_SSRF_BLOCKED}, /* mapped */
        {"https://[::ffff:a9fe:a9fe]/x", "a9fe", CX_ERR_SSRF_BLOCKED},
        {"https://[::ffff:10.0.0.1]/x", "::ffff:10", CX_ERR_SSRF_BLOCKED},
        {"https://0.0.0.0/x", "0.0.0.0", CX_ERR_SSRF_BLOCKED}, /* unspecified */
        {"https://[::]/x", "[::]", CX_ERR_SSRF_BLOCKED},
        {"https://224.0.0.1/x", "224.0.0.1", CX_ERR_SSRF_BLOCKED}, /* multicast */
        {"https://localhost/x", "localhost", CX_ERR_SSRF_BLOCKED},
        {"https://LOCALHOST./x", "LOCALHOST", CX_ERR_SSRF_BLOCKED},
        {"https://idp.localhost/x", "idp.localhost", CX_ERR_SSRF_BLOCKED},
        {"https://[fe80::1%25eth0]/x", "eth0", CX_ERR_SSRF_BLOCKED},       /* zone id */
        {"https://user:pw@idp.example.com/x", "pw@", CX_ERR_SSRF_BLOCKED}, /* userinfo */
        {"https://idp.example.com@10.0.0.1/x", "10.0.0.1", CX_ERR_SSRF_BLOCKED},
        {"http://idp.example.com/x", "http://", CX_ERR_SSRF_BLOCKED}, /* not https */
        {"ftp://idp.example.com/x", "ftp", CX_ERR_SSRF_BLOCKED},
        {"https://idp.example.com/a b", "a b", CX_ERR_INVALID_ARGUMENT}, /* unreadable */
        {"https:///x", NULL, CX_ERR_INVALID_ARGUMENT},
        {"https://idp.example.com:99999/x", "99999", CX_ERR_INVALID_ARGUMENT},
        {"https://1.2.3.4.5/x", "1.2.3.4.5", CX_ERR_INVALID_ARGUMENT},
    };
    static const char *const fields[] = {"authorization_url", "token_url", "userinfo_url",
                                         "revocation_url", "issuer_url"};
    size_t checked = 0;
    for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            req_t r;
            req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OIDC, "corp-sso");
            r.ep.userinfo_url = "https://idp.example.com/userinfo";
            r.ep.revocation_url = "https://idp.example.com/revoke";
            char **slot[] = {&r.ep.authorization_url, &r.ep.token_url, &r.ep.userinfo_url,
                             &r.ep.revocation_url, &r.ep.issuer_url};
            *slot[f] = (char *)cases[i].url;
            char field[64];
            snprintf(field, sizeof(field), "endpoints.%s", fields[f]);
            expect_fail(&r, &dev, cases[i].code, field, cases[i].host);
            checked++;
        }
    }
    assert_int_equal(checked, 5 * (sizeof(cases) / sizeof(cases[0])));

    /* a public name passes; the allow-list narrows it */
    req_t r;
    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OAUTH2, "acme");
    const char *const allow[] = {"*.example.com", NULL};
    const oauth_validate_env_t env = {.allow_hosts = allow};
    oauth_connector_t c;
    expect_ok(&r, &env, &c);
    oauth_connector_clear(&c);
    r.ep.token_url = "https://idp.example.org/token";
    expect_fail(&r, &env, CX_ERR_SSRF_BLOCKED, "endpoints.token_url", "example.org");
    r.ep.token_url = "https://8.8.8.8/token"; /* a public literal is not on a name list */
    expect_fail(&r, &env, CX_ERR_SSRF_BLOCKED, "endpoints.token_url", "8.8.8.8");
    expect_ok(&r, &dev, &c);
    oauth_connector_clear(&c);
}

static void test_redirect_uri(void **state)
{
    (void)state;
    static const struct {
        const char *uri;
        bool dev_ok, prod_ok;
    } cases[] = {
        {"https://credex.example.com/cb", true, true},
        {"https://credex.example.com:8443/api/credentials/oauth/github/callback?x=1", true, true},
        {"https://10.0.0.5/cb", true, true}, /* credex's own address: no SSRF rule */
        {"http://localhost:3000/api/credentials/oauth/github/callback", true, false},
        {"http://localhost/cb", true, false},
        {"http://127.0.0.1:8080/cb", true, false},
        {"http://LOCALHOST:3000/cb", true, false},
        {"http://localhost.evil.example/cb", false, false},
        {"http://127.0.0.2/cb", false, false},
        {"http://[::1]/cb", false, false},
        {"http://credex.example.com/cb", false, false},
        {"https://user@credex.example.com/cb", false, false},
        {"https://user:pw@credex.example.com/cb", false, false},
        {"https://credex.example.com/cb#frag", false, false},
        {"https://credex.example.com:0/cb", false, false},
        {"https://credex.example.com:65536/cb", false, false},
        {"https://credex.example.com:/cb", false, false},
        {"https:///cb", false, false},
        {"https://credex.example.com/c b", false, false},
        {"javascript:alert(1)", false, false},
        {"", false, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (int p = 0; p < 2; p++) {
            req_t r;
            req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_BUILT_IN, "webex");
            r.c.redirect_uri = (char *)cases[i].uri;
            bool want = p ? cases[i].prod_ok : cases[i].dev_ok;
            if (want) {
                oauth_connector_t c;
                expect_ok(&r, p ? &prod : &dev, &c);
                assert_string_equal(c.redirect_uri, cases[i].uri);
                oauth_connector_clear(&c);
            } else {
                expect_fail(&r, p ? &prod : &dev, CX_ERR_INVALID_ARGUMENT, "redirect_uri",
                            strlen(cases[i].uri) > 8 ? cases[i].uri + 8 : NULL);
            }
        }
    }
}

static void test_scopes(void **state)
{
    (void)state;
    req_t r;
    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OAUTH2, "acme");
    add_scope(&r, "read");
    add_scope(&r, "canary scope");
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "scopes[1]", "canary");
    static const char *const bad[] = {"", "a\"b", "a\\b", "tab\there", "caf\xc3\xa9"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r.scopes[1] = (char *)bad[i];
        expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "scopes[1]", NULL);
    }
    static char long_scope[258];
    memset(long_scope, 's', 257);
    r.scopes[1] = long_scope;
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "scopes[1]", NULL);
    long_scope[256] = '\0';
    oauth_connector_t c;
    expect_ok(&r, &dev, &c);
    oauth_connector_clear(&c);

    /* 64 distinct scopes, each given twice: accepted; a 65th distinct: refused */
    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OAUTH2, "acme");
    static char names[65][8];
    for (int i = 0; i < 65; i++)
        snprintf(names[i], sizeof(names[i]), "s%d", i);
    for (int i = 0; i < 64; i++) {
        add_scope(&r, names[i]);
        add_scope(&r, names[i]);
    }
    expect_ok(&r, &dev, &c);
    assert_int_equal(c.nscopes, 64);
    oauth_connector_clear(&c);
    add_scope(&r, names[64]);
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "scopes", NULL);
    /* an absurd count is refused before anything is copied */
    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OAUTH2, "acme");
    for (int i = 0; i < 257; i++)
        add_scope(&r, "same");
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "scopes", NULL);
}

static void test_refresh_policy(void **state)
{
    (void)state;
    static const struct {
        int64_t ms, want; /* want 0: refused */
    } cases[] = {{0, 300000}, {1000, 1000},  {60000, 60000}, {86400000, 86400000}, {999, 0},
                 {-1, 0},     {86400001, 0}, {INT64_MIN, 0}, {INT64_MAX, 0}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        req_t r;
        req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OAUTH2, "acme");
        r.c.refresh_policy = &r.rp;
        r.rp.refresh_enabled = true;
        r.rp.refresh_before_expiry_ms = cases[i].ms;
        if (!cases[i].want) {
            expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT,
                        "refresh_policy.refresh_before_expiry_ms", NULL);
            continue;
        }
        oauth_connector_t c;
        expect_ok(&r, &dev, &c);
        assert_int_equal(c.refresh_before_expiry_ms, cases[i].want);
        assert_true(c.refresh_enabled);
        oauth_connector_clear(&c);
    }
    req_t r;
    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OAUTH2, "acme");
    r.c.refresh_policy = &r.rp; /* present and false: off */
    oauth_connector_t c;
    expect_ok(&r, &dev, &c);
    assert_false(c.refresh_enabled);
    oauth_connector_clear(&c);
}

/* Sizes: each field's limit is accepted and one more byte refused, naming the field and
 * quoting nothing. */
static void test_sizes_and_no_echo(void **state)
{
    (void)state;
    static char big[4000];
    memset(big, 'q', sizeof(big) - 1);
    memcpy(big, "canaryvalue", 11);
    req_t r;
    req_init(&r, CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OAUTH2, "acme");
    r.c.display_name = strndup(big, 129);
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "display_name", "canary");
    r.c.display_name[128] = '\0';
    oauth_connector_t c;
    expect_ok(&r, &dev, &c);
    oauth_connector_clear(&c);
    r.c.display_name[5] = '\n';
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "display_name", "canary");
    free(r.c.display_name);
    r.c.display_name = "ok";

    r.c.client_id = strndup(big, 256);
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "client_id", "canary");
    r.c.client_id[255] = '\0';
    expect_ok(&r, &dev, &c);
    oauth_connector_clear(&c);
    r.c.client_id[3] = ' ';
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "client_id", "canary");
    free(r.c.client_id);
    r.c.client_id = "";
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "client_id", NULL);
    r.c.client_id = "id";

    char *url = malloc(CX_HTTP_URL_MAX + 2);
    memcpy(url, "https://idp.example.com/canary", 30);
    memset(url + 30, 'q', CX_HTTP_URL_MAX + 1 - 30);
    url[CX_HTTP_URL_MAX + 1] = '\0';
    r.ep.token_url = url;
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "endpoints.token_url", "canary");
    url[CX_HTTP_URL_MAX] = '\0';
    expect_ok(&r, &dev, &c);
    oauth_connector_clear(&c);
    r.ep.token_url = "https://idp.example.com/token";
    r.c.redirect_uri = url;
    url[CX_HTTP_URL_MAX] = 'q';
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "redirect_uri", "canary");
    free(url);
    r.c.redirect_uri = "https://credex.example.com/cb";

    char *v = strndup(big, 513);
    add_param(&r, "long", v);
    expect_fail(&r, &dev, CX_ERR_INVALID_ARGUMENT, "authorization_params", "canary");
    v[512] = '\0';
    expect_ok(&r, &dev, &c);
    oauth_connector_clear(&c);
    free(v);

    expect_fail(&(req_t){0}, &dev, CX_ERR_INVALID_ARGUMENT, "type", NULL);
    cx_error_t err;
    assert_false(oauth_connector_validate(NULL, &dev, &c, &err));
    assert_false(oauth_connector_validate(&r.c, &dev, NULL, &err));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtin_defaults),
        cmocka_unit_test(test_builtin_fixed_fields),
        cmocka_unit_test(test_builtin_params_and_round_trip),
        cmocka_unit_test(test_reserved_params),
        cmocka_unit_test(test_gitlab_base_url_and_required_scopes),
        cmocka_unit_test(test_custom_connectors),
        cmocka_unit_test(test_client_auth_method),
        cmocka_unit_test(test_ssrf_matrix),
        cmocka_unit_test(test_redirect_uri),
        cmocka_unit_test(test_scopes),
        cmocka_unit_test(test_refresh_policy),
        cmocka_unit_test(test_sizes_and_no_echo),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
