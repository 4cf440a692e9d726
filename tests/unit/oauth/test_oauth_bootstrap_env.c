/*
 * Unit tests of the bootstrap variables (services/oauth/bootstrap_env.c), read through a fake
 * environment: complete sets become specs, every partial set is an error naming the missing
 * variable, and no message ever carries a value (each value is a canary).
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

#define ENV_MAX 64

typedef struct fake_env {
    char names[ENV_MAX][64];
    const char *values[ENV_MAX];
    size_t n;
} fake_env_t;

static const char *fake_get(void *ctx, const char *name)
{
    fake_env_t *e = ctx;
    for (size_t i = 0; i < e->n; i++)
        if (strcmp(e->names[i], name) == 0)
            return e->values[i];
    return NULL;
}

static void env_set(fake_env_t *e, const char *prefix, const char *suffix, const char *value)
{
    assert_true(e->n < ENV_MAX);
    snprintf(e->names[e->n], sizeof(e->names[0]), "%s_%s", prefix, suffix);
    e->values[e->n++] = value;
}

static void full_set(fake_env_t *e, const oauth_provider_t *p)
{
    env_set(e, p->env_prefix, "CLIENT_ID", "canary-id-7f3a");
    env_set(e, p->env_prefix, "CLIENT_SECRET", "canary-secret-9b1c");
    env_set(e, p->env_prefix, "REDIRECT_URI", "https://credex.example.com/cb/canary-uri");
    if (p->scopes_required)
        env_set(e, p->env_prefix, "SCOPES", "canary.scope other.scope");
}

static void assert_no_value(const char *msg)
{
    assert_null(strstr(msg, "canary"));
}

static void test_nothing_set_is_no_spec(void **state)
{
    (void)state;
    fake_env_t e = {.n = 0};
    /* settings without credentials do not make a provider configured */
    env_set(&e, "PAGERDUTY", "SCOPES", "users.read");
    env_set(&e, "GITLAB", "BASE_URL", "https://git.example.com");
    env_set(&e, "GITHUB", "CLIENT_ID", ""); /* empty is unset */
    oauth_bootstrap_spec_t *specs = NULL;
    size_t n = 99;
    cx_error_t err;
    assert_true(oauth_bootstrap_specs_read(fake_get, &e, &specs, &n, &err));
    assert_int_equal(n, 0);
    oauth_bootstrap_specs_free(specs, n);
    oauth_bootstrap_specs_free(NULL, 0);
}

static void test_every_provider_complete(void **state)
{
    (void)state;
    fake_env_t e = {.n = 0};
    size_t np;
    const oauth_provider_t *ps = oauth_providers(&np);
    for (size_t i = 0; i < np; i++)
        full_set(&e, &ps[i]);
    env_set(&e, "GITLAB", "BASE_URL", "https://git.example.com");
    env_set(&e, "GITHUB", "SCOPES", "repo");
    oauth_bootstrap_spec_t *specs = NULL;
    size_t n = 0;
    cx_error_t err;
    if (!oauth_bootstrap_specs_read(fake_get, &e, &specs, &n, &err))
        fail_msg("%s", err.message);
    assert_int_equal(n, np);
    for (size_t i = 0; i < n; i++) {
        assert_ptr_equal(specs[i].provider, &ps[i]);
        assert_string_equal(specs[i].client_id, "canary-id-7f3a");
        assert_string_equal(specs[i].redirect_uri, "https://credex.example.com/cb/canary-uri");
        assert_int_equal(specs[i].client_secret_len, strlen("canary-secret-9b1c"));
        assert_memory_equal(specs[i].client_secret, "canary-secret-9b1c",
                            specs[i].client_secret_len);
        if (ps[i].scopes_required)
            assert_string_equal(specs[i].scopes, "canary.scope other.scope");
        else if (strcmp(ps[i].key, "github") == 0)
            assert_string_equal(specs[i].scopes, "repo");
        else
            assert_string_equal(specs[i].scopes, "");
        if (strcmp(ps[i].key, "gitlab") == 0)
            assert_string_equal(specs[i].base_url, "https://git.example.com");
        else
            assert_string_equal(specs[i].base_url, "");
    }
    oauth_bootstrap_specs_free(specs, n);
}

/* Every partial set of every provider: each non-empty, incomplete subset of its variables is
 * an error that names the first missing variable and no value. */
static void test_every_partial_set(void **state)
{
    (void)state;
    static const char *const suffixes[] = {"CLIENT_ID", "CLIENT_SECRET", "REDIRECT_URI", "SCOPES"};
    static const char *const values[] = {"canary-id", "canary-secret", "https://canary.example/cb",
                                         "canary.read"};
    size_t np;
    const oauth_provider_t *ps = oauth_providers(&np);
    size_t cases = 0;
    for (size_t i = 0; i < np; i++) {
        const oauth_provider_t *p = &ps[i];
        unsigned nvars = p->scopes_required ? 4 : 3, all = (1u << nvars) - 1;
        for (unsigned mask = 1; mask < all; mask++) {
            if (!(mask & 7u))
                continue; /* scopes alone: not configured (test_nothing_set_is_no_spec) */
            fake_env_t e = {.n = 0};
            full_set(&e, &ps[(i + 1) % np]); /* another provider, complete, read first or after */
            for (unsigned v = 0; v < nvars; v++)
                if (mask & (1u << v))
                    env_set(&e, p->env_prefix, suffixes[v], values[v]);
            unsigned first_missing = 0;
            while (mask & (1u << first_missing))
                first_missing++;
            char want[64];
            snprintf(want, sizeof(want), "%s_%s ", p->env_prefix, suffixes[first_missing]);
            oauth_bootstrap_spec_t *specs = (void *)0x1;
            size_t n = 77;
            cx_error_t err;
            assert_false(oauth_bootstrap_specs_read(fake_get, &e, &specs, &n, &err));
            assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
            if (!strstr(err.message, want))
                fail_msg("%s mask %u: \"%s\" does not name %s", p->key, mask, err.message, want);
            assert_no_value(err.message);
            assert_ptr_equal(specs, (void *)0x1); /* untouched on failure */
            assert_int_equal(n, 77);
            cases++;
        }
    }
    assert_int_equal(cases, 3 * 6 + 2 * 13);
}

static void test_oversized_values(void **state)
{
    (void)state;
    static char big[5000];
    memset(big, 'c', sizeof(big) - 1);
    memcpy(big, "canary", 6);
    const struct {
        const char *suffix;
        size_t len;
    } cases[] = {{"CLIENT_ID", 256},
                 {"REDIRECT_URI", 2048},
                 {"CLIENT_SECRET", 4097},
                 {"SCOPES", 2048},
                 {"BASE_URL", 512}};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        fake_env_t e = {.n = 0};
        full_set(&e, oauth_provider_find("gitlab"));
        char *v = strndup(big, cases[c].len);
        /* a later entry of the same name would not be seen: put the oversized one first */
        memmove(&e.names[1], &e.names[0], sizeof(e.names[0]) * e.n);
        memmove(&e.values[1], &e.values[0], sizeof(e.values[0]) * e.n);
        e.n++;
        snprintf(e.names[0], sizeof(e.names[0]), "GITLAB_%s", cases[c].suffix);
        e.values[0] = v;
        oauth_bootstrap_spec_t *specs;
        size_t n;
        cx_error_t err;
        assert_false(oauth_bootstrap_specs_read(fake_get, &e, &specs, &n, &err));
        assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
        assert_non_null(strstr(err.message, e.names[0]));
        assert_no_value(err.message);
        /* one byte less fits */
        v[cases[c].len - 1] = '\0';
        assert_true(oauth_bootstrap_specs_read(fake_get, &e, &specs, &n, &err));
        assert_int_equal(n, 1);
        oauth_bootstrap_specs_free(specs, n);
        free(v);
    }
}

/* Without a function, the process environment is read. */
static void test_process_environment(void **state)
{
    (void)state;
    setenv("WEBEX_CLIENT_ID", "wx-id", 1);
    setenv("WEBEX_CLIENT_SECRET", "wx-secret", 1);
    setenv("WEBEX_REDIRECT_URI", "https://credex.example.com/cb", 1);
    oauth_bootstrap_spec_t *specs;
    size_t n;
    cx_error_t err;
    assert_true(oauth_bootstrap_specs_read(NULL, NULL, &specs, &n, &err));
    assert_int_equal(n, 1);
    assert_string_equal(specs[0].provider->key, "webex");
    assert_string_equal(specs[0].client_id, "wx-id");
    oauth_bootstrap_specs_free(specs, n);
    unsetenv("WEBEX_CLIENT_SECRET");
    assert_false(oauth_bootstrap_specs_read(NULL, NULL, &specs, &n, &err));
    assert_non_null(strstr(err.message, "WEBEX_CLIENT_SECRET"));
    unsetenv("WEBEX_CLIENT_ID");
    unsetenv("WEBEX_REDIRECT_URI");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nothing_set_is_no_spec),
        cmocka_unit_test(test_every_provider_complete),
        cmocka_unit_test(test_every_partial_set),
        cmocka_unit_test(test_oversized_values),
        cmocka_unit_test(test_process_environment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
