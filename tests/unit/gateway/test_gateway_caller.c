/*
 * Unit tests of the gateway's pure functions: caller classification (docs/IDENTITY.md, table
 * "Caller kinds", and "Service tokens and user tokens" under both rules) and request
 * validation (common.proto limits).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "services/gateway/gateway_internal.h"

#define K(x) CREDEX__V1__CALLER_KIND__CALLER_KIND_##x

static cx_jwt_claims_t claims(const char *sub, const char *azp, const char *client)
{
    cx_jwt_claims_t c;
    memset(&c, 0, sizeof(c));
    strcpy(c.sub, sub);
    strcpy(c.azp, azp);
    strcpy(c.client, client);
    return c;
}

/* A Keycloak client-credentials token: the client claim names the client, as azp does. */
static cx_jwt_claims_t svc_claims(const char *azp)
{
    return claims("service-account-x", azp, azp);
}

static cx_jwt_claims_t user_claims(const char *sub)
{
    return claims(sub, "", "");
}

/* A user's token issued to a service (token exchange): azp is the service, no client claim. */
static cx_jwt_claims_t obo_claims(const char *sub, const char *service)
{
    return claims(sub, service, "");
}

static gateway_caller_facts_t facts(const char *peer)
{
    gateway_caller_facts_t f;
    memset(&f, 0, sizeof(f));
    f.peer = peer;
    return f;
}

static void with_service(gateway_caller_facts_t *f, const cx_jwt_claims_t *c)
{
    f->has_service_token = true;
    f->service_token_ok = c != NULL;
    f->service_claims = c;
    if (!c)
        cx_error_set(&f->service_token_err, CX_ERR_UNAUTHENTICATED, "bad");
}

static void with_user(gateway_caller_facts_t *f, const cx_jwt_claims_t *c)
{
    f->has_user_token = true;
    f->user_token_ok = c != NULL;
    f->user_claims = c;
    if (!c)
        cx_error_set(&f->user_token_err, CX_ERR_UNAUTHENTICATED, "bad");
}

static void test_service(void **state)
{
    (void)state;
    cx_jwt_claims_t s = svc_claims("agent-runtime");
    gateway_caller_facts_t f = facts("agent-runtime");
    with_service(&f, &s);
    gateway_caller_t c;
    gateway_caller_classify(&f, &c);
    assert_int_equal(c.kind, K(SERVICE));
    assert_true(c.authenticated);
    assert_string_equal(c.service_id, "agent-runtime");
    assert_string_equal(c.user_id, "");
    assert_string_equal(c.peer, "agent-runtime");
}

static void test_service_on_behalf(void **state)
{
    (void)state;
    cx_jwt_claims_t s = svc_claims("agent-runtime"), u = user_claims("alice");
    gateway_caller_facts_t f = facts("agent-runtime");
    with_service(&f, &s);
    with_user(&f, &u);
    gateway_caller_t c;
    gateway_caller_classify(&f, &c);
    assert_int_equal(c.kind, K(SERVICE_ON_BEHALF_OF_USER));
    assert_true(c.authenticated);
    assert_string_equal(c.service_id, "agent-runtime");
    assert_string_equal(c.user_id, "alice");

    /* invalid user token: same kind, not authenticated */
    with_user(&f, NULL);
    gateway_caller_classify(&f, &c);
    assert_int_equal(c.kind, K(SERVICE_ON_BEHALF_OF_USER));
    assert_false(c.authenticated);
    assert_int_equal(c.auth_err.code, CX_ERR_UNAUTHENTICATED);
}

static void test_azp_bound_to_peer(void **state)
{
    (void)state;
    cx_jwt_claims_t s = svc_claims("agent-runtime");
    gateway_caller_facts_t f = facts("mcp-tools"); /* token stolen from another service */
    with_service(&f, &s);
    gateway_caller_t c;
    gateway_caller_classify(&f, &c);
    assert_int_equal(c.kind, K(SERVICE));
    assert_false(c.authenticated);
    assert_int_equal(c.auth_err.code, CX_ERR_UNAUTHENTICATED);
    assert_int_equal(c.auth_err.detail, CX_DETAIL_TOKEN_PEER_MISMATCH);

    cx_jwt_claims_t noazp = svc_claims("");
    f = facts("agent-runtime");
    with_service(&f, &noazp);
    gateway_caller_classify(&f, &c);
    assert_false(c.authenticated);
}

static void test_edge_is_browser_unless_service(void **state)
{
    (void)state;
    cx_jwt_claims_t u = user_claims("alice"), s = svc_claims("edge");
    gateway_caller_t c;
    gateway_caller_facts_t f = facts("edge");
    with_user(&f, &u);
    gateway_caller_classify(&f, &c); /* no x-credex-caller from the edge */
    assert_int_equal(c.kind, K(BROWSER));
    assert_true(c.authenticated);
    assert_string_equal(c.user_id, "alice");

    f.x_caller = "browser";
    with_service(&f, &s);
    gateway_caller_classify(&f, &c); /* a service JWT does not lift a browser marking */
    assert_int_equal(c.kind, K(BROWSER));

    f.x_caller = "Service"; /* only the exact value counts from the edge */
    gateway_caller_classify(&f, &c);
    assert_int_equal(c.kind, K(BROWSER));

    f.x_caller = "service";
    gateway_caller_classify(&f, &c);
    assert_int_equal(c.kind, K(SERVICE_ON_BEHALF_OF_USER));
    assert_true(c.authenticated);
}

static void test_session_only_and_markers(void **state)
{
    (void)state;
    cx_jwt_claims_t u = user_claims("alice"), s = svc_claims("agent-runtime");
    gateway_caller_t c;
    /* a user token alone is session-only auth, whatever the peer */
    gateway_caller_facts_t f = facts("credexctl");
    with_user(&f, &u);
    gateway_caller_classify(&f, &c);
    assert_int_equal(c.kind, K(BROWSER));
    assert_true(c.authenticated);

    /* a browser marker wins over valid service credentials */
    f = facts("agent-runtime");
    with_service(&f, &s);
    with_user(&f, &u);
    f.browser_marker = true;
    gateway_caller_classify(&f, &c);
    assert_int_equal(c.kind, K(BROWSER));

    /* x-credex-caller: browser from a non-edge peer only makes it stricter */
    f.browser_marker = false;
    f.x_caller = "browser";
    gateway_caller_classify(&f, &c);
    assert_int_equal(c.kind, K(BROWSER));
    /* ...and "service" from a non-edge peer changes nothing */
    f.x_caller = "service";
    gateway_caller_classify(&f, &c);
    assert_int_equal(c.kind, K(SERVICE_ON_BEHALF_OF_USER));
}

static void test_browser_with_bad_token_is_still_browser(void **state)
{
    (void)state;
    gateway_caller_t c;
    gateway_caller_facts_t f = facts("edge");
    f.x_caller = "browser";
    with_user(&f, NULL);
    gateway_caller_classify(&f, &c);
    assert_int_equal(c.kind, K(BROWSER)); /* so Retrieve answers browser_denied first */
    assert_false(c.authenticated);
}

static void test_no_credentials(void **state)
{
    (void)state;
    gateway_caller_t c;
    gateway_caller_facts_t f = facts("agent-runtime");
    gateway_caller_classify(&f, &c);
    assert_int_equal(c.kind, K(UNSPECIFIED));
    assert_false(c.authenticated);
    assert_int_equal(c.auth_err.code, CX_ERR_UNAUTHENTICATED);

    f = facts("edge");
    gateway_caller_classify(&f, &c);
    assert_int_equal(c.kind, K(BROWSER));
    assert_false(c.authenticated);
}

static void expect_refused(const gateway_caller_facts_t *f, Credex__V1__CallerKind kind,
                           cx_detail_t detail)
{
    gateway_caller_t c;
    gateway_caller_classify(f, &c);
    assert_int_equal(c.kind, kind);
    assert_false(c.authenticated);
    assert_int_equal(c.auth_err.code, CX_ERR_UNAUTHENTICATED);
    if (c.auth_err.detail != detail)
        fail_msg("refused with detail %s, expected %s", cx_detail_name(c.auth_err.detail),
                 cx_detail_name(detail));
    assert_string_equal(c.user_id, ""); /* never a user from a refused token */
}

/* Finding: a user's on-behalf-of token (azp = the service) in the service slot used to pass for
 * the service's own token. Under both rules it is refused, alone or with a user token. */
static void test_user_token_in_service_slot(void **state)
{
    (void)state;
    cx_jwt_claims_t obo = obo_claims("alice", "agent-runtime"),
                    u = obo_claims("bob", "agent-runtime");
    for (int rule = 0; rule < 2; rule++) {
        gateway_caller_facts_t f = facts("agent-runtime");
        f.rule = (cx_jwt_service_rule_t)rule;
        with_service(&f, &obo);
        expect_refused(&f, K(SERVICE), CX_DETAIL_TOKEN_NOT_SERVICE);
        with_user(&f, &u);
        expect_refused(&f, K(SERVICE_ON_BEHALF_OF_USER), CX_DETAIL_TOKEN_NOT_SERVICE);
        /* the same token twice: still no service token */
        with_user(&f, &obo);
        expect_refused(&f, K(SERVICE_ON_BEHALF_OF_USER), CX_DETAIL_TOKEN_NOT_SERVICE);
    }
}

/* A service token in the user slot is refused: the service would act as a "user" named after
 * its own service account. For an on-behalf-of call and for a browser alike. */
static void test_service_token_in_user_slot(void **state)
{
    (void)state;
    cx_jwt_claims_t s = svc_claims("agent-runtime");
    cx_jwt_claims_t s2 = claims("agent-runtime", "agent-runtime", ""); /* sub_is_client shape */
    gateway_caller_facts_t f = facts("agent-runtime");
    with_service(&f, &s);
    with_user(&f, &s);
    expect_refused(&f, K(SERVICE_ON_BEHALF_OF_USER), CX_DETAIL_TOKEN_NOT_USER);
    f = facts("edge");
    f.x_caller = "browser";
    with_user(&f, &s);
    expect_refused(&f, K(BROWSER), CX_DETAIL_TOKEN_NOT_USER);

    f = facts("agent-runtime");
    f.rule = CX_JWT_RULE_SUB_IS_CLIENT;
    with_service(&f, &s2);
    with_user(&f, &s2);
    expect_refused(&f, K(SERVICE_ON_BEHALF_OF_USER), CX_DETAIL_TOKEN_NOT_USER);
}

/* Claims that fit neither kind are refused in both slots (client_claim rule). */
static void test_client_claim_not_azp(void **state)
{
    (void)state;
    cx_jwt_claims_t odd[] = {
        claims("service-account-x", "agent-runtime", "mcp-tools"), /* client claim != azp */
        claims("service-account-x", "", "agent-runtime"),          /* client claim, no azp */
    };
    cx_jwt_claims_t s = svc_claims("agent-runtime");
    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
        gateway_caller_facts_t f = facts("agent-runtime");
        with_service(&f, &odd[i]);
        expect_refused(&f, K(SERVICE), CX_DETAIL_TOKEN_KIND_UNKNOWN);
        f = facts("agent-runtime");
        with_service(&f, &s);
        with_user(&f, &odd[i]);
        expect_refused(&f, K(SERVICE_ON_BEHALF_OF_USER), CX_DETAIL_TOKEN_KIND_UNKNOWN);
    }
}

/* The RFC 9068 profile: a service token's sub is its client id (azp, else client_id). */
static void test_sub_is_client_rule(void **state)
{
    (void)state;
    cx_jwt_claims_t s = claims("agent-runtime", "agent-runtime", "");
    cx_jwt_claims_t s_no_azp = claims("agent-runtime", "", "agent-runtime");
    cx_jwt_claims_t u = claims("alice", "agent-runtime", "");
    cx_jwt_claims_t u_no_azp = claims("alice", "", "agent-runtime");
    gateway_caller_t c;
    gateway_caller_facts_t f = facts("agent-runtime");
    f.rule = CX_JWT_RULE_SUB_IS_CLIENT;
    with_service(&f, &s);
    with_user(&f, &u);
    gateway_caller_classify(&f, &c);
    assert_true(c.authenticated);
    assert_string_equal(c.service_id, "agent-runtime");
    assert_string_equal(c.user_id, "alice");
    with_service(&f, &s_no_azp);
    with_user(&f, &u_no_azp);
    gateway_caller_classify(&f, &c);
    assert_true(c.authenticated);
    assert_string_equal(c.service_id, "agent-runtime");

    /* missing claims: no client id at all, so neither kind */
    cx_jwt_claims_t bare = claims("alice", "", "");
    with_service(&f, &s);
    with_user(&f, &bare);
    expect_refused(&f, K(SERVICE_ON_BEHALF_OF_USER), CX_DETAIL_TOKEN_KIND_UNKNOWN);
    cx_jwt_claims_t bare_svc = claims("agent-runtime", "", "");
    f = facts("agent-runtime");
    f.rule = CX_JWT_RULE_SUB_IS_CLIENT;
    with_service(&f, &bare_svc);
    expect_refused(&f, K(SERVICE), CX_DETAIL_TOKEN_KIND_UNKNOWN);
    /* azp and client_id that disagree */
    cx_jwt_claims_t split = claims("agent-runtime", "agent-runtime", "mcp-tools");
    with_service(&f, &split);
    expect_refused(&f, K(SERVICE), CX_DETAIL_TOKEN_KIND_UNKNOWN);
    /* a Keycloak client-credentials token (sub = the service account user) is no service token
     * under this rule: the rule must match the IdP */
    cx_jwt_claims_t kc = svc_claims("agent-runtime");
    with_service(&f, &kc);
    expect_refused(&f, K(SERVICE), CX_DETAIL_TOKEN_NOT_SERVICE);
    /* the service token of another client on this peer */
    cx_jwt_claims_t other = claims("mcp-tools", "mcp-tools", "");
    with_service(&f, &other);
    expect_refused(&f, K(SERVICE), CX_DETAIL_TOKEN_PEER_MISMATCH);
}

static void test_token_kind_table(void **state)
{
    (void)state;
    const struct {
        cx_jwt_service_rule_t rule;
        const char *sub, *azp, *client;
        gateway_token_kind_t kind;
    } rows[] = {
        {CX_JWT_RULE_CLIENT_CLAIM, "service-account-a", "a", "a", GATEWAY_TOKEN_SERVICE},
        {CX_JWT_RULE_CLIENT_CLAIM, "alice", "a", "", GATEWAY_TOKEN_USER},
        {CX_JWT_RULE_CLIENT_CLAIM, "alice", "", "", GATEWAY_TOKEN_USER},
        {CX_JWT_RULE_CLIENT_CLAIM, "a", "a", "", GATEWAY_TOKEN_USER}, /* sub alone says nothing */
        {CX_JWT_RULE_CLIENT_CLAIM, "alice", "a", "b", GATEWAY_TOKEN_UNKNOWN},
        {CX_JWT_RULE_CLIENT_CLAIM, "alice", "", "a", GATEWAY_TOKEN_UNKNOWN},
        {CX_JWT_RULE_SUB_IS_CLIENT, "a", "a", "", GATEWAY_TOKEN_SERVICE},
        {CX_JWT_RULE_SUB_IS_CLIENT, "a", "", "a", GATEWAY_TOKEN_SERVICE},
        {CX_JWT_RULE_SUB_IS_CLIENT, "a", "a", "a", GATEWAY_TOKEN_SERVICE},
        {CX_JWT_RULE_SUB_IS_CLIENT, "alice", "a", "", GATEWAY_TOKEN_USER},
        {CX_JWT_RULE_SUB_IS_CLIENT, "alice", "", "a", GATEWAY_TOKEN_USER},
        {CX_JWT_RULE_SUB_IS_CLIENT, "alice", "", "", GATEWAY_TOKEN_UNKNOWN},
        {CX_JWT_RULE_SUB_IS_CLIENT, "a", "a", "b", GATEWAY_TOKEN_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cx_jwt_claims_t c = claims(rows[i].sub, rows[i].azp, rows[i].client);
        const char *client = NULL;
        gateway_token_kind_t k = gateway_token_kind(rows[i].rule, &c, &client);
        if (k != rows[i].kind)
            fail_msg("row %zu: kind %d, expected %d", i, (int)k, (int)rows[i].kind);
        if (k == GATEWAY_TOKEN_SERVICE)
            assert_string_equal(client, "a");
    }
}

/* Browsers' User-Agents (a "Mozilla/" product token) are browser markers; gRPC libraries',
 * with or without an application's own product tokens, are not. */
static void test_browser_user_agent(void **state)
{
    (void)state;
    const char *browsers[] = {
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4 Safari/605.1.15",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "Mozilla/5.0 (X11; Linux x86_64) Chrome/124.0 grpc-python/1.62.1 grpc-c/39.0.0 (linux; "
        "chttp2)", /* grpc.primary_user_agent set to a browser's */
        "mozilla/4.0",
        "agent/1.0 Mozilla/5.0",
        "agent/1.0\tMozilla/5.0",
    };
    for (size_t i = 0; i < sizeof(browsers) / sizeof(browsers[0]); i++)
        if (!gateway_user_agent_is_browser(browsers[i]))
            fail_msg("not taken for a browser: %s", browsers[i]);
    const char *servers[] = {
        "grpc-c/29.0.0 (linux; chttp2)",
        "grpc-python/1.62.1 grpc-c/39.0.0 (linux; chttp2)",
        "agent-runtime/2.3 grpc-python/1.62.1 grpc-c/39.0.0 (linux; chttp2)",
        "grpc-go/1.63.2",
        "grpcurl/v1.8.9 grpc-go/1.57.0",
        "curl/8.5.0",
        "python-requests/2.31.0",
        "NotMozilla/5.0",
        "agent (compatible; Mozilla/5.0)", /* inside a comment, not a product token */
        "Mozilla",
        "",
        NULL,
    };
    for (size_t i = 0; i < sizeof(servers) / sizeof(servers[0]); i++)
        if (gateway_user_agent_is_browser(servers[i]))
            fail_msg("taken for a browser: %s", servers[i] ? servers[i] : "(null)");
}

static void test_jwks_down_is_unavailable(void **state)
{
    (void)state;
    gateway_caller_t c;
    gateway_caller_facts_t f = facts("agent-runtime");
    f.has_service_token = true;
    cx_error_set(&f.service_token_err, CX_ERR_UNAVAILABLE, "JWKS: fetch failed");
    gateway_caller_classify(&f, &c);
    assert_false(c.authenticated);
    assert_int_equal(c.auth_err.code, CX_ERR_UNAVAILABLE);
}

static void test_unusable_subject(void **state)
{
    (void)state;
    cx_jwt_claims_t u = user_claims("alice#member"); /* would forge an OpenFGA userset */
    gateway_caller_t c;
    gateway_caller_facts_t f = facts("edge");
    with_user(&f, &u);
    gateway_caller_classify(&f, &c);
    assert_false(c.authenticated);
    cx_jwt_claims_t u2 = user_claims("team:eng");
    f = facts("edge");
    with_user(&f, &u2);
    gateway_caller_classify(&f, &c);
    assert_false(c.authenticated);
}

static void test_ids(void **state)
{
    (void)state;
    assert_true(gateway_id_valid("alice"));
    assert_true(gateway_id_valid("alice@example.com"));
    assert_true(gateway_id_valid("5f1c2d7e-9a1b-4c3d-8e2f-0a1b2c3d4e5f"));
    assert_false(gateway_id_valid(""));
    assert_false(gateway_id_valid(NULL));
    assert_false(gateway_id_valid("a b"));
    assert_false(gateway_id_valid("a:b"));
    assert_false(gateway_id_valid("a#b"));
    char big[200];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_false(gateway_id_valid(big));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_service),
        cmocka_unit_test(test_service_on_behalf),
        cmocka_unit_test(test_azp_bound_to_peer),
        cmocka_unit_test(test_edge_is_browser_unless_service),
        cmocka_unit_test(test_session_only_and_markers),
        cmocka_unit_test(test_browser_with_bad_token_is_still_browser),
        cmocka_unit_test(test_no_credentials),
        cmocka_unit_test(test_user_token_in_service_slot),
        cmocka_unit_test(test_service_token_in_user_slot),
        cmocka_unit_test(test_client_claim_not_azp),
        cmocka_unit_test(test_sub_is_client_rule),
        cmocka_unit_test(test_token_kind_table),
        cmocka_unit_test(test_browser_user_agent),
        cmocka_unit_test(test_jwks_down_is_unavailable),
        cmocka_unit_test(test_unusable_subject),
        cmocka_unit_test(test_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
