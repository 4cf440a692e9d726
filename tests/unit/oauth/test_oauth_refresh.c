/*
 * Unit tests of the pure parts of the token refresh (services/oauth/provider_http.c): how a
 * provider's answer to a refresh_token grant is classified (docs/TOKEN_REFRESH.md, failure
 * classes), and when a rate-limited refresh may be tried again. The HTTP side (Retry-After in
 * seconds or as an HTTP date) is common/http's, tested there; the e2e tests drive both against
 * the provider test servers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "services/oauth/oauth_internal.h"

static oauth_token_answer_t answer(long status, const char *error, int64_t retry_after_s)
{
    oauth_token_answer_t a;
    memset(&a, 0, sizeof(a));
    a.status = status;
    a.retry_after_s = retry_after_s;
    snprintf(a.error, sizeof(a.error), "%s", error);
    return a;
}

static void test_classify(void **state)
{
    (void)state;
    static const struct {
        cx_code_t code;
        long status;
        const char *error;
        int64_t retry_after_s;
        oauth_refresh_class_t want;
    } cases[] = {
        {CX_OK, 200, "", -1, OAUTH_REFRESH_OK},
        /* revoked, expired or reused refresh tokens */
        {CX_ERR_FAILED_PRECONDITION, 400, "invalid_grant", -1, OAUTH_REFRESH_REVOKED},
        {CX_ERR_FAILED_PRECONDITION, 403, "invalid_grant", -1, OAUTH_REFRESH_REVOKED},
        {CX_ERR_FAILED_PRECONDITION, 200, "bad_refresh_token", -1, OAUTH_REFRESH_REVOKED},
        {CX_ERR_FAILED_PRECONDITION, 400, "invalid_scope", -1, OAUTH_REFRESH_SCOPE},
        /* the provider is down or slow */
        {CX_ERR_UNAVAILABLE, 0, "", -1, OAUTH_REFRESH_UNAVAILABLE},
        {CX_ERR_UNAVAILABLE, 500, "none", -1, OAUTH_REFRESH_UNAVAILABLE},
        {CX_ERR_UNAVAILABLE, 502, "invalid", -1, OAUTH_REFRESH_UNAVAILABLE},
        {CX_ERR_UNAVAILABLE, 503, "none", -1, OAUTH_REFRESH_UNAVAILABLE},
        /* it asks us to slow down */
        {CX_ERR_FAILED_PRECONDITION, 429, "none", -1, OAUTH_REFRESH_RATE_LIMITED},
        {CX_ERR_FAILED_PRECONDITION, 429, "none", 30, OAUTH_REFRESH_RATE_LIMITED},
        {CX_ERR_UNAVAILABLE, 503, "none", 0, OAUTH_REFRESH_RATE_LIMITED},
        {CX_ERR_UNAVAILABLE, 503, "none", 120, OAUTH_REFRESH_RATE_LIMITED},
        /* anything else refuses without ending the connection */
        {CX_ERR_FAILED_PRECONDITION, 401, "invalid_client", -1, OAUTH_REFRESH_REFUSED},
        {CX_ERR_FAILED_PRECONDITION, 200, "incorrect_client_credentials", -1,
         OAUTH_REFRESH_REFUSED},
        {CX_ERR_FAILED_PRECONDITION, 400, "invalid", -1, OAUTH_REFRESH_REFUSED},
        {CX_ERR_FAILED_PRECONDITION, 0, "", -1, OAUTH_REFRESH_REFUSED}, /* no token endpoint */
        {CX_ERR_SSRF_BLOCKED, 0, "", -1, OAUTH_REFRESH_REFUSED},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        oauth_token_answer_t a = answer(cases[i].status, cases[i].error, cases[i].retry_after_s);
        oauth_refresh_class_t got = oauth_refresh_classify(cases[i].code, &a);
        if (got != cases[i].want)
            fail_msg("case %zu (HTTP %ld, %s): class %d, want %d", i, cases[i].status,
                     cases[i].error, (int)got, (int)cases[i].want);
    }
}

static void test_retry_until(void **state)
{
    (void)state;
    const int64_t now = 1700000000000;
    assert_int_equal(oauth_retry_until(now, -1), now + OAUTH_RETRY_DEFAULT_S * 1000);
    assert_int_equal(oauth_retry_until(now, 0), now);
    assert_int_equal(oauth_retry_until(now, 1), now + 1000);
    assert_int_equal(oauth_retry_until(now, 120), now + 120000);
    assert_int_equal(oauth_retry_until(now, OAUTH_RETRY_MAX_S), now + OAUTH_RETRY_MAX_S * 1000);
    assert_int_equal(oauth_retry_until(now, OAUTH_RETRY_MAX_S + 1), now + OAUTH_RETRY_MAX_S * 1000);
    assert_int_equal(oauth_retry_until(now, INT64_MAX / 2000), now + OAUTH_RETRY_MAX_S * 1000);
    assert_int_equal(OAUTH_RETRY_DEFAULT_S, 60);
    assert_int_equal(OAUTH_RETRY_MAX_S, 3600);
}

/* Each built-in provider names where its API lives (GetProviderToken.api_base_url). */
static void test_api_base_urls(void **state)
{
    (void)state;
    static const struct {
        const char *key, *url;
        bool per_resource;
    } want[] = {
        {"github", "https://api.github.com", false},
        {"atlassian", "https://api.atlassian.com/ex/jira", true},
        {"webex", "https://webexapis.com/v1", false},
        {"pagerduty", "https://api.pagerduty.com", false},
        {"gitlab", "/api/v4", false},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const oauth_provider_t *p = oauth_provider_find(want[i].key);
        assert_non_null(p);
        assert_string_equal(p->api_base_url, want[i].url);
        assert_int_equal(p->api_url_per_resource, want[i].per_resource);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_retry_until),
        cmocka_unit_test(test_api_base_urls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
