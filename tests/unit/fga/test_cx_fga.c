/*
 * Unit tests of common/fga against a real OpenFGA loaded with deploy/openfga/model.json (the
 * fga_openfga ctest fixture). They double as tests of the model: owner, team membership,
 * sharing, platform admins and the retriever allow-list answer as docs/IDENTITY.md says.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/fga/cx_fga.h"

static char url[256], store[64], model[64], dead[256];
static cx_fga_t *fga;

static int setup(void **state)
{
    (void)state;
    const char *path = getenv("CREDEX_TEST_FGA_ENV");
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f) {
        fprintf(stderr, "CREDEX_TEST_FGA_ENV unset or unreadable (run through ctest)\n");
        return -1;
    }
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "URL=", 4) == 0)
            snprintf(url, sizeof(url), "%s", line + 4);
        else if (strncmp(line, "STORE=", 6) == 0)
            snprintf(store, sizeof(store), "%s", line + 6);
        else if (strncmp(line, "MODEL=", 6) == 0)
            snprintf(model, sizeof(model), "%s", line + 6);
        else if (strncmp(line, "DEAD=", 5) == 0)
            snprintf(dead, sizeof(dead), "%s", line + 5);
    }
    fclose(f);
    cx_fga_options_t o = {.url = url, .store_id = store, .model_id = model, .timeout_ms = 2000};
    fga = cx_fga_new(&o, NULL);
    return fga ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    cx_fga_free(fga);
    return 0;
}

static bool check(const char *user, const char *rel, const char *obj)
{
    bool allowed = true;
    cx_error_t err;
    assert_true(cx_fga_check(fga, user, rel, obj, &allowed, &err));
    return allowed;
}

static void add(const char *user, const char *rel, const char *obj)
{
    cx_fga_tuple_t t;
    assert_true(cx_fga_tuple_set(&t, user, rel, obj));
    cx_error_t err;
    assert_true(cx_fga_write(fga, &t, 1, NULL, 0, &err));
}

static void test_model_and_check(void **state)
{
    (void)state;
    add("user:alice", "owner", "secret_ref:s1");
    add("platform:credex", "platform", "secret_ref:s1");
    add("user:root", "admin", "platform:credex");
    add("user:bob", "member", "team:eng");
    add("user:carol", "admin", "team:eng");
    add("service:agent", "retriever", "platform:credex");

    assert_true(check("user:alice", "use", "secret_ref:s1"));
    assert_true(check("user:alice", "manage", "secret_ref:s1"));
    assert_true(check("user:alice", "share", "secret_ref:s1"));
    assert_true(check("user:alice", "read_metadata", "secret_ref:s1"));
    assert_false(check("user:bob", "read_metadata", "secret_ref:s1"));
    assert_false(check("user:root", "use", "secret_ref:s1")); /* admins manage, never use */
    assert_true(check("user:root", "manage", "secret_ref:s1"));
    assert_true(check("user:root", "audit", "secret_ref:s1"));
    assert_true(check("user:carol", "member", "team:eng")); /* admins are members */
    assert_true(check("service:agent", "retriever", "platform:credex"));
    assert_false(check("service:other", "retriever", "platform:credex"));
    assert_false(check("user:alice", "use", "secret_ref:nonexistent"));

    /* sharing with a team reaches its members at once, and unsharing removes it at once */
    add("team:eng#member", "user", "secret_ref:s1");
    assert_true(check("user:bob", "use", "secret_ref:s1"));
    assert_false(check("user:bob", "manage", "secret_ref:s1"));
    cx_fga_tuple_t t;
    assert_true(cx_fga_tuple_set(&t, "team:eng#member", "user", "secret_ref:s1"));
    cx_error_t err;
    assert_true(cx_fga_write(fga, NULL, 0, &t, 1, &err));
    assert_false(check("user:bob", "use", "secret_ref:s1"));

    /* a service grant */
    add("service:agent", "user", "secret_ref:s1");
    assert_true(check("service:agent", "use", "secret_ref:s1"));
    assert_false(check("service:agent", "manage", "secret_ref:s1"));
}

static void test_write_idempotent(void **state)
{
    (void)state;
    add("user:dave", "owner", "secret_ref:s2");
    add("user:dave", "owner", "secret_ref:s2"); /* replay: not an error */
    cx_fga_tuple_t t;
    assert_true(cx_fga_tuple_set(&t, "user:nobody", "user", "secret_ref:s2"));
    cx_error_t err;
    assert_true(cx_fga_write(fga, NULL, 0, &t, 1, &err)); /* deleting a missing tuple */
    assert_true(cx_fga_write(fga, NULL, 0, NULL, 0, &err));
    /* a relation the model does not have is our bug, not an outage */
    assert_true(cx_fga_tuple_set(&t, "user:dave", "nonsense", "secret_ref:s2"));
    assert_false(cx_fga_write(fga, &t, 1, NULL, 0, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
}

static void test_read_and_list(void **state)
{
    (void)state;
    add("user:erin", "owner", "secret_ref:s3");
    add("user:frank", "auditor", "secret_ref:s3");
    add("team:ops#member", "manager", "secret_ref:s3");
    cx_fga_tuple_t *t = NULL;
    size_t n = 0;
    cx_error_t err;
    assert_true(cx_fga_read(fga, "secret_ref:s3", NULL, NULL, 100, &t, &n, &err));
    assert_int_equal(n, 3);
    free(t);
    assert_true(cx_fga_read(fga, "secret_ref:s3", "auditor", NULL, 100, &t, &n, &err));
    assert_int_equal(n, 1);
    assert_string_equal(t[0].user, "user:frank");
    free(t);
    assert_false(cx_fga_read(fga, "secret_ref:s3", NULL, NULL, 2, &t, &n, &err));
    assert_int_equal(err.code, CX_ERR_RESOURCE_EXHAUSTED);

    add("user:erin", "owner", "secret_ref:s4");
    char **ids = NULL;
    assert_true(
        cx_fga_list_objects(fga, "user:erin", "read_metadata", "secret_ref", &ids, &n, &err));
    assert_int_equal(n, 2);
    bool s3 = false, s4 = false;
    for (size_t i = 0; i < n; i++) {
        s3 |= strcmp(ids[i], "s3") == 0;
        s4 |= strcmp(ids[i], "s4") == 0;
    }
    assert_true(s3 && s4);
    cx_fga_strv_free(ids, n);
    assert_true(
        cx_fga_list_objects(fga, "user:zed", "read_metadata", "secret_ref", &ids, &n, &err));
    assert_int_equal(n, 0);
    cx_fga_strv_free(ids, n);
    assert_true(cx_fga_ping(fga, &err));
}

static void test_fail_closed(void **state)
{
    (void)state;
    cx_fga_options_t o = {.url = dead, .store_id = store, .timeout_ms = 300};
    cx_fga_t *down = cx_fga_new(&o, NULL);
    assert_non_null(down);
    bool allowed = true;
    cx_error_t err;
    assert_false(cx_fga_check(down, "user:alice", "use", "secret_ref:s1", &allowed, &err));
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    assert_true(allowed); /* untouched on failure */
    assert_false(cx_fga_ping(down, &err));
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    cx_fga_free(down);

    /* unknown store */
    o.url = url;
    o.store_id = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    down = cx_fga_new(&o, NULL);
    assert_false(cx_fga_ping(down, &err));
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    cx_fga_free(down);

    assert_false(cx_fga_check(NULL, "user:a", "use", "secret_ref:s1", &allowed, &err));
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    assert_null(cx_fga_new(&(cx_fga_options_t){.url = url}, &err));
    cx_fga_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_and_check),
        cmocka_unit_test(test_write_idempotent),
        cmocka_unit_test(test_read_and_list),
        cmocka_unit_test(test_fail_closed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
