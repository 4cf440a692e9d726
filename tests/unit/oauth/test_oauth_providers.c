/*
 * Unit tests of the built-in provider descriptors (services/oauth/providers.c): the table is
 * complete and consistent, each provider's documented quirks are in its row, and the
 * ListBuiltinProviders form of each row is a valid message that owns all it points to.
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

static const char *const keys[] = {"github", "atlassian", "webex", "pagerduty", "gitlab"};

/* The absolute URL of an endpoint of p (a base-URL provider's paths under its default base). */
static void full_url(const oauth_provider_t *p, const char *url, char *out, size_t n)
{
    snprintf(out, n, "%s%s", p->base_url_configurable ? p->base_url : "", url);
}

static void test_table_is_complete_and_consistent(void **state)
{
    (void)state;
    size_t n = 0;
    const oauth_provider_t *ps = oauth_providers(&n);
    assert_int_equal(n, sizeof(keys) / sizeof(keys[0]));
    for (size_t i = 0; i < n; i++) {
        const oauth_provider_t *p = &ps[i];
        assert_string_equal(p->key, keys[i]); /* a stable order */
        assert_ptr_equal(oauth_provider_find(p->key), p);
        assert_non_null(p->display_name);
        assert_non_null(p->env_prefix);
        assert_non_null(p->docs_url);
        assert_non_null(p->account_id_field);
        assert_non_null(p->account_name_field);
        assert_string_equal(p->scope_separator, " ");
        /* a provider either has usable default scopes or requires them from configuration */
        assert_true(p->scopes_required == (p->default_scopes == NULL));
        const char *urls[] = {p->authorization_url, p->token_url, p->userinfo_url,
                              p->revocation_url, p->resources_url};
        for (size_t u = 0; u < sizeof(urls) / sizeof(urls[0]); u++) {
            if (!urls[u])
                continue;
            char full[512];
            full_url(p, urls[u], full, sizeof(full));
            cx_error_t err;
            if (!cx_http_url_check(full, NULL, &err))
                fail_msg("%s endpoint %zu: %s", p->key, u, err.message);
            if (p->base_url_configurable)
                assert_int_equal(urls[u][0], '/');
        }
        assert_non_null(p->authorization_url);
        assert_non_null(p->token_url);
        assert_non_null(p->userinfo_url);
        for (size_t j = 0; j < i; j++) {
            assert_string_not_equal(ps[j].key, p->key);
            assert_string_not_equal(ps[j].env_prefix, p->env_prefix);
        }
    }
    assert_null(oauth_provider_find("GitHub"));
    assert_null(oauth_provider_find("custom"));
    assert_null(oauth_provider_find(""));
    assert_null(oauth_provider_find(NULL));
}

/* The quirks the generic OAuth code must act on, pinned per provider. */
static void test_provider_quirks(void **state)
{
    (void)state;
    const oauth_provider_t *gh = oauth_provider_find("github");
    assert_string_equal(gh->token_url, "https://github.com/login/oauth/access_token");
    assert_true(gh->token_accept_json);
    assert_true(gh->token_error_in_200);
    assert_string_equal(gh->userinfo_url, "https://api.github.com/user");
    assert_string_equal(gh->account_id_field, "id");
    assert_string_equal(gh->account_name_field, "login");
    assert_int_equal(gh->client_auth, OAUTH_CLIENT_AUTH_POST);

    const oauth_provider_t *at = oauth_provider_find("atlassian");
    assert_string_equal(at->env_prefix, "CONFLUENCE");
    assert_true(at->requires_provider_resource);
    assert_string_equal(at->resources_url,
                        "https://api.atlassian.com/oauth/token/accessible-resources");
    assert_true(at->rotates_refresh_tokens);
    assert_non_null(strstr(at->default_scopes, "offline_access"));
    assert_non_null(strstr(at->default_scopes, "read:me")); /* /me needs it */
    bool audience = false, prompt = false;
    for (const oauth_param_t *q = at->authorization_params; q && q->name; q++) {
        audience |= strcmp(q->name, "audience") == 0 && strcmp(q->value, "api.atlassian.com") == 0;
        prompt |= strcmp(q->name, "prompt") == 0 && strcmp(q->value, "consent") == 0;
    }
    assert_true(audience && prompt);

    const oauth_provider_t *pd = oauth_provider_find("pagerduty");
    assert_true(pd->scopes_required);
    assert_string_equal(pd->token_url, "https://identity.pagerduty.com/oauth/token");
    assert_string_equal(pd->account_id_field, "user.id");

    const oauth_provider_t *gl = oauth_provider_find("gitlab");
    assert_true(gl->base_url_configurable);
    assert_string_equal(gl->base_url, "https://gitlab.com");
    assert_true(gl->scopes_required);
    assert_true(gl->rotates_refresh_tokens);
    assert_string_equal(gl->revocation_url, "/oauth/revoke");
    assert_string_equal(gl->userinfo_url, "/api/v4/user");

    const oauth_provider_t *wx = oauth_provider_find("webex");
    assert_string_equal(wx->token_url, "https://webexapis.com/v1/access_token");
    assert_non_null(strstr(wx->default_scopes, "spark:people_read")); /* people/me needs it */

    /* only Atlassian names sites, only GitHub needs Accept: JSON */
    size_t n;
    const oauth_provider_t *ps = oauth_providers(&n);
    for (size_t i = 0; i < n; i++) {
        assert_true(ps[i].requires_provider_resource == (&ps[i] == at));
        assert_true(ps[i].token_accept_json == (&ps[i] == gh));
    }
}

static size_t count_scopes(const char *s)
{
    size_t n = 0;
    for (; s && *s;) {
        s += strspn(s, " ");
        if (*s)
            n++;
        s += strcspn(s, " ");
    }
    return n;
}

/* Each row's reply form: the descriptor's facts, absolute endpoints, and a message that packs,
 * unpacks to the same, and is freed whole by protobuf_c_message_free_unpacked (ASan's leak
 * check fails the test otherwise). */
static void test_to_proto(void **state)
{
    (void)state;
    assert_null(oauth_provider_to_proto(NULL));
    size_t n;
    const oauth_provider_t *ps = oauth_providers(&n);
    for (size_t i = 0; i < n; i++) {
        const oauth_provider_t *p = &ps[i];
        Credex__V1__BuiltinProvider *m = oauth_provider_to_proto(p);
        assert_non_null(m);
        assert_string_equal(m->provider_key, p->key);
        assert_string_equal(m->display_name, p->display_name);
        char want[512];
        full_url(p, p->token_url, want, sizeof(want));
        assert_string_equal(m->endpoints->token_url, want);
        full_url(p, p->authorization_url, want, sizeof(want));
        assert_string_equal(m->endpoints->authorization_url, want);
        full_url(p, p->userinfo_url, want, sizeof(want));
        assert_string_equal(m->endpoints->userinfo_url, want);
        if (p->revocation_url) {
            full_url(p, p->revocation_url, want, sizeof(want));
            assert_string_equal(m->endpoints->revocation_url, want);
        } else {
            assert_string_equal(m->endpoints->revocation_url, "");
        }
        assert_string_equal(m->endpoints->issuer_url, p->base_url_configurable ? p->base_url : "");
        assert_int_equal(m->n_default_scopes, count_scopes(p->default_scopes));
        for (size_t s = 0; s < m->n_default_scopes; s++)
            assert_non_null(strstr(p->default_scopes, m->default_scopes[s]));
        assert_int_equal(m->supports_refresh, p->supports_refresh);
        assert_int_equal(m->requires_provider_resource, p->requires_provider_resource);
        size_t np = 0;
        while (p->authorization_params && p->authorization_params[np].name)
            np++;
        assert_int_equal(m->n_authorization_params, np);

        size_t len = protobuf_c_message_get_packed_size(&m->base);
        uint8_t *buf = malloc(len ? len : 1);
        assert_non_null(buf);
        assert_int_equal(protobuf_c_message_pack(&m->base, buf), len);
        Credex__V1__BuiltinProvider *back = credex__v1__builtin_provider__unpack(NULL, len, buf);
        assert_non_null(back);
        assert_string_equal(back->provider_key, p->key);
        assert_int_equal(back->n_default_scopes, m->n_default_scopes);
        assert_int_equal(back->n_authorization_params, np);
        credex__v1__builtin_provider__free_unpacked(back, NULL);
        free(buf);
        protobuf_c_message_free_unpacked(&m->base, NULL);
    }
    const oauth_provider_t *gl = oauth_provider_find("gitlab");
    Credex__V1__BuiltinProvider *m = oauth_provider_to_proto(gl);
    assert_string_equal(m->endpoints->token_url, "https://gitlab.com/oauth/token");
    protobuf_c_message_free_unpacked(&m->base, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_is_complete_and_consistent),
        cmocka_unit_test(test_provider_quirks),
        cmocka_unit_test(test_to_proto),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
