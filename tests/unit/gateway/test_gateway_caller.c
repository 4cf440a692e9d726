/*
 * Unit tests of the gateway's pure functions: caller classification (docs/IDENTITY.md, table
 * "Caller kinds") and request validation (common.proto limits).
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

static cx_jwt_claims_t svc_claims(const char *azp)
{
    cx_jwt_claims_t c;
    memset(&c, 0, sizeof(c));
    strcpy(c.sub, "service-account-x");
    strcpy(c.azp, azp);
    return c;
}

static cx_jwt_claims_t user_claims(const char *sub)
{
    cx_jwt_claims_t c;
    memset(&c, 0, sizeof(c));
    strcpy(c.sub, sub);
    return c;
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
        cmocka_unit_test(test_jwks_down_is_unavailable),
        cmocka_unit_test(test_unusable_subject),
        cmocka_unit_test(test_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
