/*
 * Unit tests of the edge's pure parts, without a network: path and query decoding, the route
 * table (its invariants, matching, binding values to fields, building request messages), the
 * guardrail decisions, the refusal table and the error body.
 */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "credex/v1/gateway.pb-c.h"
#include "credex/v1/oauth.pb-c.h"
#include "pjson_test.pb-c.h"
#include "services/edge/edge_internal.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static edge_path_t path_ok(rpc_arena_t *a, const char *raw)
{
    edge_path_t p;
    cx_error_t err;
    cx_error_clear(&err);
    if (!edge_path_parse(raw, a, &p, &err))
        fail_msg("path %s refused: %s", raw, err.message);
    return p;
}

static void path_bad(const char *raw, const char *message)
{
    rpc_arena_t *a = rpc_arena_new(256);
    edge_path_t p = {.n = 99};
    cx_error_t err;
    cx_error_clear(&err);
    if (edge_path_parse(raw, a, &p, &err))
        fail_msg("path %s accepted", raw);
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_string_equal(err.message, message);
    assert_int_equal(p.n, 99); /* untouched on failure */
    rpc_arena_free(a);
}

static const edge_route_t *route_by_id(const char *id)
{
    size_t n = 0;
    const edge_route_t *r = edge_routes(&n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(r[i].operation_id, id) == 0)
            return &r[i];
    fail_msg("no route %s", id);
    return NULL;
}

static edge_match_t match(rpc_arena_t *a, const char *raw, edge_method_t m)
{
    edge_path_t p = path_ok(a, raw);
    edge_match_t out;
    edge_route_match(&p, m, &out);
    return out;
}

/* ---- paths and query strings ---------------------------------------------------------------- */

static void test_path_split_and_decode(void **state)
{
    (void)state;
    rpc_arena_t *a = rpc_arena_new(256);
    edge_path_t p = path_ok(a, "/");
    assert_int_equal(p.n, 0);
    p = path_ok(a, "/api/credentials/secrets/sec_1");
    assert_int_equal(p.n, 4);
    assert_string_equal(p.seg[0], "api");
    assert_string_equal(p.seg[3], "sec_1");
    p = path_ok(a, "/a%20b/%C3%A9t%c3%a9/x:y@z/");
    assert_int_equal(p.n, 4);
    assert_string_equal(p.seg[0], "a b");
    assert_string_equal(p.seg[1], "\xC3\xA9t\xC3\xA9"); /* "été", either hex case */
    assert_string_equal(p.seg[2], "x:y@z");
    assert_string_equal(p.seg[3], ""); /* a trailing slash is an empty segment */
    p = path_ok(a, "//x");
    assert_int_equal(p.n, 2);
    assert_string_equal(p.seg[0], "");
    p = path_ok(a, "/...");
    assert_string_equal(p.seg[0], "..."); /* only exactly "." and ".." are dot segments */
    rpc_arena_free(a);
}

static void test_path_refusals(void **state)
{
    (void)state;
    path_bad("", "the path must start with '/'");
    path_bad("api/x", "the path must start with '/'");
    path_bad("http://host/api", "the path must start with '/'");
    path_bad("/api/credentials/secrets/a%2Fb", "path segment: an encoded '/' is not allowed");
    path_bad("/api/credentials/secrets/a%2fb", "path segment: an encoded '/' is not allowed");
    path_bad("/api/%00x", "path segment: control characters are not allowed");
    path_bad("/api/%0Ax", "path segment: control characters are not allowed");
    path_bad("/api/%7F", "path segment: control characters are not allowed");
    path_bad("/api/\x01", "path segment: control characters are not allowed");
    path_bad("/api/%", "path segment: '%' must be followed by two hex digits");
    path_bad("/api/%4", "path segment: '%' must be followed by two hex digits");
    path_bad("/api/%zz", "path segment: '%' must be followed by two hex digits");
    path_bad("/api/%C3", "path segment: not valid UTF-8");
    path_bad("/api/%C0%AF", "path segment: not valid UTF-8");    /* overlong '/' */
    path_bad("/api/%ED%A0%80", "path segment: not valid UTF-8"); /* a surrogate */
    path_bad("/api/\xff", "path segment: not valid UTF-8");
    path_bad("/api/../secrets", "path segment: '.' and '..' are not allowed");
    path_bad("/api/%2E%2E/secrets", "path segment: '.' and '..' are not allowed");
    path_bad("/api/./secrets", "path segment: '.' and '..' are not allowed");
    path_bad("/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17", "the path has too many segments");
    rpc_arena_t *a = rpc_arena_new(256);
    edge_path_t p = path_ok(a, "/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16");
    assert_int_equal(p.n, EDGE_MAX_SEGMENTS);
    rpc_arena_free(a);
}

static void test_query_parameters(void **state)
{
    (void)state;
    rpc_arena_t *a = rpc_arena_new(256);
    edge_query_t q = {0};
    cx_error_t err;
    assert_true(edge_query_add(&q, a, "page_size", 9, "10", 2, &err));
    assert_true(edge_query_add(&q, a, "owner%5Fid", 10, "a%2Fb c", 7, &err));
    assert_true(edge_query_add(&q, a, "flag", 4, NULL, 0, &err));
    assert_int_equal(q.n, 3);
    assert_string_equal(q.item[1].name, "owner_id");
    assert_string_equal(q.item[1].value, "a/b c"); /* a '/' is fine in a query value */
    assert_string_equal(q.item[2].value, "");
    assert_false(edge_query_add(&q, a, "page_size", 9, "20", 2, &err));
    assert_string_equal(err.message, "a query parameter is given more than once");
    assert_false(edge_query_add(&q, a, "page%5Fsize", 11, "20", 2, &err)); /* same once decoded */
    assert_false(edge_query_add(&q, a, "x", 1, "%00", 3, &err));
    assert_string_equal(err.message, "query parameter: control characters are not allowed");
    assert_false(edge_query_add(&q, a, "x", 1, "%E2%82", 6, &err));
    assert_string_equal(err.message, "query parameter: not valid UTF-8");
    assert_false(edge_query_add(&q, a, "%G0", 3, "1", 1, &err));
    assert_string_equal(err.message,
                        "query parameter name: '%' must be followed by two hex digits");
    assert_false(edge_query_add(&q, a, "", 0, "1", 1, &err));
    assert_string_equal(err.message, "query parameter without a name");
    assert_int_equal(q.n, 3);
    edge_query_t full = {0};
    char name[8];
    for (int i = 0; i < EDGE_MAX_QUERY_PARAMS; i++) {
        snprintf(name, sizeof(name), "p%d", i);
        assert_true(edge_query_add(&full, a, name, strlen(name), "v", 1, &err));
    }
    assert_false(edge_query_add(&full, a, "more", 4, "v", 1, &err));
    assert_string_equal(err.message, "too many query parameters");
    rpc_arena_free(a);
}

/* ---- the route table ------------------------------------------------------------------------- */

/* The names of the template's {param} segments, in order. */
static size_t template_params(const char *tpl, char names[][64])
{
    size_t n = 0;
    for (const char *p = strchr(tpl, '{'); p != NULL; p = strchr(p + 1, '{')) {
        const char *end = strchr(p, '}');
        assert_non_null(end);
        assert_true(end[1] == '\0' || end[1] == '/');
        assert_true(p[-1] == '/');
        snprintf(names[n], 64, "%.*s", (int)(end - p - 1), p + 1);
        n++;
    }
    return n;
}

static void check_binding(const edge_route_t *r, const char *param, const char *field_path,
                          const char **seen, size_t *nseen)
{
    const ProtobufCMethodDescriptor *md = edge_route_rpc(r);
    const ProtobufCFieldDescriptor *f = edge_field_path(md->input, field_path, NULL);
    if (f == NULL)
        fail_msg("%s: %s binds to %s, not a field of %s", r->operation_id, param, field_path,
                 md->input->name);
    if (f->label == PROTOBUF_C_LABEL_REPEATED || (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ||
        f->type == PROTOBUF_C_TYPE_MESSAGE || f->type == PROTOBUF_C_TYPE_BYTES ||
        f->type == PROTOBUF_C_TYPE_FLOAT || f->type == PROTOBUF_C_TYPE_DOUBLE)
        fail_msg("%s: %s binds to %s, which is not a singular bindable scalar", r->operation_id,
                 param, field_path);
    for (size_t i = 0; i < *nseen; i++)
        if (strcmp(seen[i], field_path) == 0)
            fail_msg("%s: two bindings of field %s", r->operation_id, field_path);
    seen[(*nseen)++] = field_path;
}

static void test_route_table_is_consistent(void **state)
{
    (void)state;
    size_t n = 0;
    const edge_route_t *routes = edge_routes(&n);
    assert_true(n >= 30);
    for (size_t i = 0; i < n; i++) {
        const edge_route_t *r = &routes[i];
        const ProtobufCMethodDescriptor *md = edge_route_rpc(r);
        if (md == NULL)
            fail_msg("%s: no method %s in %s", r->operation_id, r->rpc, r->service->name);
        assert_true(strncmp(r->path, "/api/", 5) == 0);
        assert_true(r->path[strlen(r->path) - 1] != '/');
        assert_int_equal(r->status, 200);
        assert_non_null(r->summary);
        assert_non_null(edge_method_name(r->method));
        /* Every {param} of the template is a path parameter, in order, and nothing else. */
        char names[EDGE_MAX_SEGMENTS][64];
        size_t np = template_params(r->path, names);
        assert_int_equal(np, r->n_path_params);
        const char *seen[64];
        size_t nseen = 0;
        for (size_t k = 0; k < np; k++) {
            assert_string_equal(names[k], r->path_params[k].name);
            check_binding(r, r->path_params[k].name, r->path_params[k].field, seen, &nseen);
        }
        for (size_t k = 0; k < r->n_query_params; k++) {
            assert_non_null(r->query_params[k].description);
            check_binding(r, r->query_params[k].name, r->query_params[k].field, seen, &nseen);
            for (size_t j = 0; j < k; j++)
                assert_string_not_equal(r->query_params[j].name, r->query_params[k].name);
        }
        for (size_t k = 0; k < r->n_fixed; k++)
            check_binding(r, r->fixed[k].field, r->fixed[k].field, seen, &nseen);
        if (r->created_field != NULL) {
            const ProtobufCFieldDescriptor *f = edge_field_path(md->output, r->created_field, NULL);
            assert_non_null(f);
            assert_int_equal(f->type, PROTOBUF_C_TYPE_BOOL);
        }
        if (r->redirect.to != EDGE_REDIRECT_NONE) {
            const ProtobufCFieldDescriptor *f =
                edge_field_path(md->output, r->redirect.field, NULL);
            assert_non_null(f);
            assert_int_equal(f->type, PROTOBUF_C_TYPE_STRING);
            assert_true(r->redirect.status == 302 || r->redirect.status == 303);
            assert_non_null(r->redirect.description);
            assert_false(r->material);
        }
        /* GET and DELETE take no body; the material routes are exactly Retrieval's. */
        if (r->method == EDGE_GET || r->method == EDGE_DELETE)
            assert_false(r->body);
        assert_int_equal(r->material, r->service == &credex__v1__retrieval__descriptor);
        for (size_t j = 0; j < i; j++) {
            assert_string_not_equal(routes[j].operation_id, r->operation_id);
            if (strcmp(routes[j].path, r->path) == 0 && routes[j].method == r->method)
                fail_msg("%s and %s: same method and path", routes[j].operation_id,
                         r->operation_id);
        }
    }
}

/* Every method of the public services has a route (docs/API.md). */
static void test_every_public_method_is_routed(void **state)
{
    (void)state;
    const ProtobufCServiceDescriptor *services[] = {
        &credex__v1__secrets__descriptor,    &credex__v1__retrieval__descriptor,
        &credex__v1__audit__descriptor,      &credex__v1__admin__descriptor,
        &credex__v1__connectors__descriptor, &credex__v1__connections__descriptor,
    };
    size_t n = 0;
    const edge_route_t *routes = edge_routes(&n);
    for (size_t s = 0; s < sizeof(services) / sizeof(services[0]); s++)
        for (unsigned m = 0; m < services[s]->n_methods; m++) {
            bool found = false;
            for (size_t i = 0; i < n && !found; i++)
                found = routes[i].service == services[s] &&
                        strcmp(routes[i].rpc, services[s]->methods[m].name) == 0;
            if (!found)
                fail_msg("%s/%s has no route", services[s]->name, services[s]->methods[m].name);
        }
}

static void test_route_matching(void **state)
{
    (void)state;
    rpc_arena_t *a = rpc_arena_new(1024);
    edge_match_t m = match(a, "/api/credentials/secrets/sec_1/rotate", EDGE_POST);
    assert_ptr_equal(m.route, route_by_id("rotateSecret"));
    assert_string_equal(m.template_, "/api/credentials/secrets/{secret_id}/rotate");
    assert_string_equal(m.params[0], "sec_1");
    assert_int_equal(m.allowed, 1u << EDGE_POST);

    /* One template, three methods; another method is a 405 with the three allowed. */
    unsigned three = (1u << EDGE_GET) | (1u << EDGE_PATCH) | (1u << EDGE_DELETE);
    m = match(a, "/api/credentials/secrets/sec_1", EDGE_GET);
    assert_ptr_equal(m.route, route_by_id("getSecret"));
    assert_int_equal(m.allowed, three);
    m = match(a, "/api/credentials/secrets/sec_1", EDGE_POST);
    assert_null(m.route);
    assert_non_null(m.template_);
    assert_int_equal(m.allowed, three);
    m = match(a, "/api/credentials/secrets/sec_1", EDGE_METHOD_COUNT_); /* e.g. PUT */
    assert_null(m.route);
    assert_int_equal(m.allowed, three);

    /* A literal segment beats a parameter: builtin-providers is not a connector id... */
    m = match(a, "/api/credentials/oauth-connectors/builtin-providers", EDGE_GET);
    assert_ptr_equal(m.route, route_by_id("listBuiltinProviders"));
    m = match(a, "/api/credentials/oauth-connectors/builtin-providers", EDGE_DELETE);
    assert_null(m.route);
    assert_int_equal(m.allowed, 1u << EDGE_GET);
    /* ...while any other segment is. */
    m = match(a, "/api/credentials/oauth-connectors/con_1", EDGE_DELETE);
    assert_ptr_equal(m.route, route_by_id("deleteConnector"));
    assert_string_equal(m.params[0], "con_1");

    m = match(a, "/api/credentials/inject/github", EDGE_POST);
    assert_ptr_equal(m.route, route_by_id("injectCredential"));
    assert_string_equal(m.params[0], "github");
    m = match(a, "/api/admin/credentials/secrets", EDGE_GET);
    assert_ptr_equal(m.route, route_by_id("adminListSecrets"));
    m = match(a, "/api/credentials/migrations/preview", EDGE_POST);
    assert_ptr_equal(m.route, route_by_id("startMigrationPreview"));

    /* No such path: no template at all. */
    static const char *const none[] = {
        "/",
        "/api",
        "/api/credentials",
        "/api/credentials/secrets/",        /* trailing slash: an empty parameter */
        "/api/credentials/secrets//rotate", /* empty parameter */
        "/api/credentials/secrets/a/b",
        "/api/credentials/secrets/a/rotate/x",
        "/API/credentials/secrets",
        "/healthz",
    };
    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
        m = match(a, none[i], EDGE_GET);
        if (m.template_ != NULL || m.route != NULL)
            fail_msg("%s matched %s", none[i], m.template_);
        assert_int_equal(m.allowed, 0);
    }
    /* A decoded parameter is what the route sees. */
    m = match(a, "/api/credentials/secrets/sec%5F1", EDGE_GET);
    assert_string_equal(m.params[0], "sec_1");
    rpc_arena_free(a);
}

/* ---- binding values to fields ------------------------------------------------------------------
 */

static void set_ok(ProtobufCMessage *msg, const char *field, const char *value, rpc_arena_t *a)
{
    cx_error_t err;
    cx_error_clear(&err);
    if (!edge_field_set(msg, field, value, field, a, &err))
        fail_msg("%s=%s refused: %s", field, value, err.message);
}

static void set_bad(ProtobufCMessage *msg, const char *field, const char *value, rpc_arena_t *a,
                    const char *message)
{
    cx_error_t err;
    cx_error_clear(&err);
    if (edge_field_set(msg, field, value, "param", a, &err))
        fail_msg("%s=%s accepted", field, value);
    assert_string_equal(err.message, message);
}

static void test_field_setters(void **state)
{
    (void)state;
    rpc_arena_t *a = rpc_arena_new(1024);
    Pjsontest__Scalars s = PJSONTEST__SCALARS__INIT;
    ProtobufCMessage *m = &s.base;
    set_ok(m, "i32", "-2147483648", a);
    assert_int_equal(s.i32, INT32_MIN);
    set_ok(m, "s32", "2147483647", a);
    set_ok(m, "sf32", "-1", a);
    assert_int_equal(s.s32, INT32_MAX);
    assert_int_equal(s.sf32, -1);
    set_ok(m, "u32", "4294967295", a);
    set_ok(m, "f32", "0", a);
    assert_int_equal(s.u32, UINT32_MAX);
    set_ok(m, "i64", "-9223372036854775808", a);
    set_ok(m, "s64", "9223372036854775807", a);
    set_ok(m, "sf64", "-0", a);
    assert_true(s.i64 == INT64_MIN && s.s64 == INT64_MAX && s.sf64 == 0);
    set_ok(m, "u64", "18446744073709551615", a);
    set_ok(m, "f64", "007", a);
    assert_true(s.u64 == UINT64_MAX && s.f64 == 7);
    set_ok(m, "flag", "true", a);
    assert_true(s.flag);
    set_ok(m, "text", "h\xC3\xA9 llo", a);
    assert_string_equal(s.text, "h\xC3\xA9 llo");
    set_ok(m, "color", "COLOR_GREEN", a);
    assert_int_equal(s.color, PJSONTEST__COLOR__COLOR_GREEN);

    Pjsontest__Scalars t = PJSONTEST__SCALARS__INIT;
    m = &t.base;
    set_bad(m, "i32", "2147483648", a, "param: expected an integer in -2147483648..2147483647");
    set_bad(m, "i32", "-2147483649", a, "param: expected an integer in -2147483648..2147483647");
    set_bad(m, "u32", "4294967296", a, "param: expected an integer in 0..4294967295");
    set_bad(m, "u32", "-1", a, "param: expected an integer in 0..4294967295");
    set_bad(m, "u32", "+1", a, "param: expected an integer in 0..4294967295");
    set_bad(m, "u32", "1e3", a, "param: expected an integer in 0..4294967295");
    set_bad(m, "u32", " 1", a, "param: expected an integer in 0..4294967295");
    set_bad(m, "u32", "", a, "param: expected an integer in 0..4294967295");
    set_bad(m, "u32", "0x10", a, "param: expected an integer in 0..4294967295");
    set_bad(m, "i64", "9223372036854775808", a,
            "param: expected an integer in -9223372036854775808..9223372036854775807");
    set_bad(m, "i64", "-9223372036854775809", a,
            "param: expected an integer in -9223372036854775808..9223372036854775807");
    set_bad(m, "i64", "-", a,
            "param: expected an integer in -9223372036854775808..9223372036854775807");
    set_bad(m, "u64", "18446744073709551616", a,
            "param: expected an integer in 0..18446744073709551615");
    set_bad(m, "flag", "1", a, "param: expected true or false");
    set_bad(m, "flag", "TRUE", a, "param: expected true or false");
    set_bad(m, "color", "2", a, "param: expected a value name of pjsontest.Color");
    set_bad(m, "color", "color_green", a, "param: expected a value name of pjsontest.Color");
    set_bad(m, "color", "GREEN", a, "param: expected a value name of pjsontest.Color");
    /* Fields that can never be bound from a URL: a table error, not the client's. */
    set_bad(m, "blob", "x", a, "param: the route binds no usable field");
    set_bad(m, "dbl", "1", a, "param: the route binds a field of another type");
    set_bad(m, "nope", "1", a, "param: the route binds no usable field");
    set_bad(m, "text.x", "1", a, "param: the route binds no usable field");
    Pjsontest__Node node = PJSONTEST__NODE__INIT;
    set_bad(&node.base, "label", "x", a, "param: the route binds no usable field"); /* oneof */
    set_bad(&node.base, "children.name", "x", a, "param: the route binds no usable field");
    set_ok(&node.base, "child.child.name", "deep", a); /* parents are created */
    assert_string_equal(node.child->child->name, "deep");
    assert_int_equal(t.i32 + (int)t.u32 + (int)t.flag + t.color, 0); /* nothing set on failure */
    rpc_arena_free(a);
}

static void test_field_set_conflicts(void **state)
{
    (void)state;
    rpc_arena_t *a = rpc_arena_new(1024);
    Pjsontest__Scalars s = PJSONTEST__SCALARS__INIT;
    ProtobufCMessage *m = &s.base;
    s.text = "from-body";
    s.u32 = 7;
    s.color = PJSONTEST__COLOR__COLOR_RED;
    s.flag = 1;
    set_bad(m, "text", "from-path", a, "param: differs from the value in the body");
    set_bad(m, "u32", "8", a, "param: differs from the value in the body");
    set_bad(m, "color", "COLOR_GREEN", a, "param: differs from the value in the body");
    set_bad(m, "flag", "false", a, "param: differs from the value in the body");
    assert_string_equal(s.text, "from-body");
    set_ok(m, "text", "from-body", a); /* the same value twice is no conflict */
    set_ok(m, "u32", "7", a);
    set_ok(m, "color", "COLOR_RED", a);
    set_ok(m, "flag", "true", a);
    s.text = ""; /* a default in the body is no value */
    set_ok(m, "text", "from-path", a);
    assert_string_equal(s.text, "from-path");
    rpc_arena_free(a);
}

/* ---- request messages
 * ----------------------------------------------------------------------------- */

static bool build(const char *id, const char *raw_path, const char *const *kv, const char *body,
                  rpc_arena_t *a, ProtobufCMessage **out, cx_error_t *err)
{
    const edge_route_t *r = route_by_id(id);
    edge_match_t m = match(a, raw_path, r->method);
    assert_ptr_equal(m.route, r);
    edge_query_t q = {0};
    for (size_t i = 0; kv != NULL && kv[i] != NULL; i += 2)
        assert_true(edge_query_add(&q, a, kv[i], strlen(kv[i]), kv[i + 1], strlen(kv[i + 1]), err));
    cx_error_clear(err);
    return edge_request_build(r, &m, &q, body, body ? strlen(body) : 0, 262144, a, out, err);
}

static void test_request_build(void **state)
{
    (void)state;
    rpc_arena_t *a = rpc_arena_new(4096);
    ProtobufCMessage *msg = NULL;
    cx_error_t err;

    /* Query parameters land in nested fields; enums by name. */
    static const char *const q1[] = {
        "scope",      "LIST_SECRETS_SCOPE_OWNED", "page_size", "20",     "page_token", "t1",
        "owner_type", "OWNER_TYPE_TEAM",          "owner_id",  "team-a", NULL};
    assert_true(build("listSecrets", "/api/credentials/secrets", q1, NULL, a, &msg, &err));
    Credex__V1__ListSecretsRequest *ls = (Credex__V1__ListSecretsRequest *)msg;
    assert_int_equal(ls->scope, CREDEX__V1__LIST_SECRETS_SCOPE__LIST_SECRETS_SCOPE_OWNED);
    assert_int_equal(ls->page->page_size, 20);
    assert_string_equal(ls->page->page_token, "t1");
    assert_int_equal(ls->owner->owner_type, CREDEX__V1__OWNER_TYPE__OWNER_TYPE_TEAM);
    assert_string_equal(ls->owner->owner_id, "team-a");

    /* The admin list always asks for scope ALL, and offers no scope parameter. */
    assert_true(
        build("adminListSecrets", "/api/admin/credentials/secrets", NULL, NULL, a, &msg, &err));
    assert_int_equal(((Credex__V1__ListSecretsRequest *)msg)->scope,
                     CREDEX__V1__LIST_SECRETS_SCOPE__LIST_SECRETS_SCOPE_ALL);
    static const char *const q2[] = {"scope", "LIST_SECRETS_SCOPE_OWNED", NULL};
    assert_false(
        build("adminListSecrets", "/api/admin/credentials/secrets", q2, NULL, a, &msg, &err));
    assert_string_equal(err.message, "a query parameter is not known on this route");
    static const char *const q3[] = {"page_size", "-1", NULL};
    assert_false(build("listSecrets", "/api/credentials/secrets", q3, NULL, a, &msg, &err));
    assert_string_equal(err.message, "page_size: expected an integer in 0..4294967295");

    /* A body with the path's id: fine; with another id: refused; without: the path's. */
    assert_true(build("rotateSecret", "/api/credentials/secrets/sec_1/rotate", NULL,
                      "{\"secretId\":\"sec_1\",\"expectedVersion\":2,\"value\":\"c2stMQ==\"}", a,
                      &msg, &err));
    Credex__V1__RotateSecretRequest *rs = (Credex__V1__RotateSecretRequest *)msg;
    assert_string_equal(rs->secret_id, "sec_1");
    assert_int_equal(rs->expected_version, 2);
    assert_int_equal(rs->value.len, 4);
    assert_memory_equal(rs->value.data, "sk-1", 4);
    assert_false(build("rotateSecret", "/api/credentials/secrets/sec_1/rotate", NULL,
                       "{\"secret_id\":\"sec_2\",\"value\":\"c2stMQ==\"}", a, &msg, &err));
    assert_string_equal(err.message, "secret_id: differs from the value in the body");
    assert_true(build("revokeSecret", "/api/credentials/secrets/sec_3/revoke", NULL, "", a, &msg,
                      &err)); /* an empty body is {} */
    assert_string_equal(((Credex__V1__RevokeSecretRequest *)msg)->secret_id, "sec_3");

    /* The body is read strictly (pjson): unknown fields, wrong types, bad JSON. */
    static const char *const bodies[] = {
        "{\"displayName\":\"x\",\"nope\":1}",
        "{\"displayName\":5}",
        "{\"displayName\":",
        "[1]",
        "{\"value\":\"not base64!\"}",
        "{\"kind\":\"SECRET_KIND_NOPE\"}",
        "{\"displayName\":\"a\",\"displayName\":\"b\"}",
        "\"str\"",
        "{\"allowedUses\":\"x\"}",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        if (build("createSecret", "/api/credentials/secrets", NULL, bodies[i], a, &msg, &err))
            fail_msg("body %s accepted", bodies[i]);
        assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    }
    char deep[512] = "";
    for (int i = 0; i < 40; i++)
        strcat(deep, "{\"owner\":");
    assert_false(build("createSecret", "/api/credentials/secrets", NULL, deep, a, &msg, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);

    /* Path parameters bind by name: inject's {provider} is the exchange's provider_key. */
    assert_true(
        build("injectCredential", "/api/credentials/inject/github", NULL, "{}", a, &msg, &err));
    assert_string_equal(((Credex__V1__ExchangeRequest *)msg)->provider_key, "github");
    /* The OAuth callback's state parameter is the request's oauth_state. */
    static const char *const q4[] = {"code", "c0de", "state", "st4te", NULL};
    assert_true(build("completeConnect", "/api/credentials/oauth/github/callback", q4, NULL, a,
                      &msg, &err));
    Credex__V1__CompleteConnectRequest *cc = (Credex__V1__CompleteConnectRequest *)msg;
    assert_string_equal(cc->oauth_state, "st4te");
    assert_string_equal(cc->code, "c0de");
    assert_string_equal(cc->provider_key, "github");
    /* Unshare binds the grantee from the query. */
    static const char *const q5[] = {"grantee_type", "GRANTEE_TYPE_TEAM", "grantee_id", "t1", NULL};
    assert_true(
        build("unshareSecret", "/api/credentials/secrets/sec_1/shares", q5, NULL, a, &msg, &err));
    Credex__V1__UnshareSecretRequest *us = (Credex__V1__UnshareSecretRequest *)msg;
    assert_int_equal(us->grantee->grantee_type, CREDEX__V1__GRANTEE_TYPE__GRANTEE_TYPE_TEAM);
    assert_string_equal(us->grantee->grantee_id, "t1");
    assert_int_equal(us->role, 0);
    rpc_arena_free(a);
}

/* ---- guardrails
 * ------------------------------------------------------------------------------------ */

/* Where connect and callback send the client: the provider's https URL, and a path of the UI. */
static void test_redirect_locations(void **state)
{
    (void)state;
    char loc[EDGE_LOCATION_MAX];
    bool replaced = true;
    cx_error_t err;
    const edge_route_t *connect = route_by_id("startConnect");
    const edge_route_t *callback = route_by_id("completeConnect");
    assert_int_equal(route_by_id("listConnections")->redirect.to, EDGE_REDIRECT_NONE);

    Credex__V1__StartConnectResponse sr = CREDEX__V1__START_CONNECT_RESPONSE__INIT;
    sr.authorization_url = "https://github.com/login/oauth/authorize?client_id=c&state=s";
    assert_true(edge_redirect_location(connect, &sr.base, "", loc, sizeof(loc), &replaced, &err));
    assert_string_equal(loc, sr.authorization_url);
    assert_false(replaced);
    /* what oauth never sends: refused, not relayed */
    const char *bad_urls[] = {"",
                              "http://github.com/x",
                              "javascript:alert(1)",
                              "https://",
                              "https://a.example/x\r\nSet-Cookie: a=b",
                              "https://a.example/a b",
                              "https://a.example\\@evil.example/"};
    for (size_t i = 0; i < sizeof(bad_urls) / sizeof(bad_urls[0]); i++) {
        sr.authorization_url = (char *)bad_urls[i];
        assert_false(
            edge_redirect_location(connect, &sr.base, "", loc, sizeof(loc), &replaced, &err));
        assert_int_equal(err.code, CX_ERR_INTERNAL);
    }
    char longer[EDGE_LOCATION_MAX + 16];
    memset(longer, 'a', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    memcpy(longer, "https://", 8);
    sr.authorization_url = longer;
    assert_false(edge_redirect_location(connect, &sr.base, "", loc, sizeof(loc), &replaced, &err));

    /* the callback: no UI URL, no redirect; else the UI URL and the return_to path */
    Credex__V1__CompleteConnectResponse cr = CREDEX__V1__COMPLETE_CONNECT_RESPONSE__INIT;
    cr.return_to = "/settings/connections?done=1";
    assert_true(edge_redirect_location(callback, &cr.base, "", loc, sizeof(loc), &replaced, &err));
    assert_string_equal(loc, "");
    assert_true(edge_redirect_location(callback, &cr.base, "https://ui.example/app", loc,
                                       sizeof(loc), &replaced, &err));
    assert_string_equal(loc, "https://ui.example/app/settings/connections?done=1");
    assert_false(replaced);
    assert_true(edge_redirect_location(callback, &cr.base, "https://ui.example/", loc, sizeof(loc),
                                       &replaced, &err));
    assert_string_equal(loc, "https://ui.example/settings/connections?done=1");
    cr.return_to = "";
    assert_true(edge_redirect_location(callback, &cr.base, "https://ui.example", loc, sizeof(loc),
                                       &replaced, &err));
    assert_string_equal(loc, "https://ui.example/");
    assert_false(replaced);
    /* a return_to that would leave the UI's origin or split the header: the UI's root */
    const char *bad_paths[] = {"//evil.example/x", "/\\evil.example",       "https://evil.example/",
                               "relative",         "/a\r\nSet-Cookie: x=y", "/a b"};
    for (size_t i = 0; i < sizeof(bad_paths) / sizeof(bad_paths[0]); i++) {
        cr.return_to = (char *)bad_paths[i];
        replaced = false;
        assert_true(edge_redirect_location(callback, &cr.base, "https://ui.example", loc,
                                           sizeof(loc), &replaced, &err));
        assert_string_equal(loc, "https://ui.example/");
        assert_true(replaced);
    }
}

static void test_fetch_site(void **state)
{
    (void)state;
    assert_int_equal(edge_fetch_site_check(NULL, false), EDGE_R_NONE);
    assert_int_equal(edge_fetch_site_check("same-origin", false), EDGE_R_NONE);
    assert_int_equal(edge_fetch_site_check("none", false), EDGE_R_NONE);
    assert_int_equal(edge_fetch_site_check("same-site", false), EDGE_R_SAME_SITE);
    assert_int_equal(edge_fetch_site_check("same-site", true), EDGE_R_NONE);
    assert_int_equal(edge_fetch_site_check("cross-site", true), EDGE_R_CROSS_SITE);
    assert_int_equal(edge_fetch_site_check("Cross-Site", false), EDGE_R_CROSS_SITE);
    assert_int_equal(edge_fetch_site_check("", false), EDGE_R_CROSS_SITE);
    assert_int_equal(edge_fetch_site_check("whatever", true), EDGE_R_CROSS_SITE);
}

static void test_content_type(void **state)
{
    (void)state;
    static const char *const json[] = {
        "application/json",
        "Application/JSON",
        "application/json;charset=utf-8",
        "application/json; charset=UTF-8",
        "application/json ; charset = utf-8 ",
        "application/json; charset=\"utf-8\"",
    };
    for (size_t i = 0; i < sizeof(json) / sizeof(json[0]); i++)
        if (!edge_content_type_is_json(json[i]))
            fail_msg("refused %s", json[i]);
    static const char *const other[] = {
        NULL,
        "",
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
        "application/json-patch+json",
        "application/json; charset=latin1",
        "application/json; charset=utf-8; x=y",
        "application/json; boundary=x",
        "application/json, text/plain",
        "application/json;",
    };
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++)
        if (edge_content_type_is_json(other[i]))
            fail_msg("accepted %s", other[i] ? other[i] : "(none)");
}

static void test_bearer_token(void **state)
{
    (void)state;
    const char *t = NULL;
    size_t n = 0;
    assert_true(edge_bearer_token("Bearer abc.def-_~+/==", &t, &n));
    assert_int_equal(n, strlen("abc.def-_~+/=="));
    assert_memory_equal(t, "abc.def-_~+/==", n);
    assert_true(edge_bearer_token("bearer   x", &t, &n));
    assert_int_equal(n, 1);
    static const char *const bad[] = {
        NULL,        "",           "Bearer",         "Bearer ",         "Basic dXNlcjpwYXNz",
        "Bearerx",   "Bearer a b", "Bearer a\tb",    "Bearer =abc",     "Bearer ab=c",
        "Bearer a,", "Token abc",  "Bearer abc\r\n", "Bearer \xc3\xa9",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(edge_bearer_token(bad[i], &t, &n));
}

static void test_origins(void **state)
{
    (void)state;
    edge_origins_t o;
    cx_error_t err;
    assert_true(edge_origins_parse("", &o, &err));
    assert_int_equal(o.n, 0);
    assert_false(edge_origin_allowed(&o, "https://ui.example"));
    assert_true(edge_origins_parse(" https://ui.example , http://localhost:3000", &o, &err));
    assert_int_equal(o.n, 2);
    assert_true(edge_origin_allowed(&o, "https://ui.example"));
    assert_true(edge_origin_allowed(&o, "http://localhost:3000"));
    assert_false(edge_origin_allowed(&o, "https://ui.example:443"));
    assert_false(edge_origin_allowed(&o, "https://UI.example"));
    assert_false(edge_origin_allowed(&o, "https://ui.example.evil"));
    assert_false(edge_origin_allowed(&o, "null"));
    assert_false(edge_origin_allowed(&o, ""));
    assert_false(edge_origin_allowed(&o, NULL));
}

static void test_refusal_table(void **state)
{
    (void)state;
    struct {
        edge_refusal_t r;
        unsigned status;
        const char *reason;
    } want[] = {
        {EDGE_R_CROSS_SITE, 403, "browser_denied"},
        {EDGE_R_SAME_SITE, 403, "browser_denied"},
        {EDGE_R_ORIGIN, 403, "browser_denied"},
        {EDGE_R_PREFLIGHT, 403, "browser_denied"},
        {EDGE_R_MEDIA_TYPE, 415, "invalid_argument"},
        {EDGE_R_BODY_TOO_LARGE, 413, "resource_exhausted"},
        {EDGE_R_HEADERS_TOO_LARGE, 431, "resource_exhausted"},
        {EDGE_R_TIMEOUT, 408, "deadline_exceeded"},
        {EDGE_R_NOT_FOUND, 404, "not_found"},
        {EDGE_R_METHOD, 405, "unimplemented"},
        {EDGE_R_UNEXPECTED_BODY, 400, "invalid_argument"},
        {EDGE_R_FRAMING, 400, "invalid_argument"},
        {EDGE_R_DUPLICATE_HEADER, 400, "invalid_argument"},
        {EDGE_R_UNAUTHENTICATED, 401, "unauthenticated"},
        {EDGE_R_BAD_REQUEST, 400, "invalid_argument"},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const edge_refusal_info_t *info = edge_refusal(want[i].r);
        assert_int_equal(info->status, want[i].status);
        assert_string_equal(cx_code_reason(info->code), want[i].reason);
        assert_true(info->message[0] != '\0' && info->name[0] != '\0');
    }
    assert_ptr_equal(edge_refusal(EDGE_R_COUNT_), edge_refusal(EDGE_R_BAD_REQUEST));
    /* Codes the taxonomy maps itself keep its status (one mapping). */
    assert_int_equal(edge_refusal(EDGE_R_UNAUTHENTICATED)->status,
                     (unsigned)cx_code_http_status(CX_ERR_UNAUTHENTICATED));
    assert_int_equal(edge_refusal(EDGE_R_ORIGIN)->status,
                     (unsigned)cx_code_http_status(CX_ERR_BROWSER_DENIED));
    assert_int_equal(edge_refusal(EDGE_R_NOT_FOUND)->status,
                     (unsigned)cx_code_http_status(CX_ERR_NOT_FOUND));
}

/* ---- the error body -----------------------------------------------------------------------------
 */

static void test_error_body(void **state)
{
    (void)state;
    edge_answer_t a = {0};
    edge_answer_error(&a, 0, CX_ERR_FEATURE_DISABLED, "credentials are \"disabled\"", "cid-1");
    assert_int_equal(a.status, 404);
    assert_int_equal(a.len, strlen(a.body));
    json_error_t je;
    json_t *doc = json_loads(a.body, 0, &je);
    assert_non_null(doc);
    assert_int_equal(json_object_size(doc), 1);
    json_t *e = json_object_get(doc, "error");
    assert_int_equal(json_object_size(e), 3);
    assert_string_equal(json_string_value(json_object_get(e, "code")), "feature_disabled");
    assert_string_equal(json_string_value(json_object_get(e, "message")),
                        "credentials are \"disabled\"");
    assert_string_equal(json_string_value(json_object_get(e, "correlation_id")), "cid-1");
    json_decref(doc);
    edge_answer_free(&a);
    assert_null(a.body);

    /* A message cut inside a character is still a JSON string. */
    edge_answer_error(&a, 413, CX_ERR_RESOURCE_EXHAUSTED, "cut \xC3", "c");
    assert_int_equal(a.status, 413);
    doc = json_loads(a.body, 0, &je);
    assert_non_null(doc);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(doc, "error"), "message")), "cut ?");
    json_decref(doc);
    edge_answer_free(&a);

    cx_error_t err;
    cx_error_set(&err, CX_ERR_INVALID_ARGUMENT, "page_size: expected an integer");
    edge_answer_refusal(&a, EDGE_R_BAD_REQUEST, &err, "c");
    assert_int_equal(a.status, 400);
    assert_non_null(strstr(a.body, "page_size: expected an integer"));
    edge_answer_free(&a);
    edge_answer_refusal(&a, EDGE_R_MEDIA_TYPE, &err, "c"); /* fixed message: err ignored */
    assert_int_equal(a.status, 415);
    assert_null(strstr(a.body, "page_size"));
    edge_answer_free(&a);
    edge_answer_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_split_and_decode),
        cmocka_unit_test(test_path_refusals),
        cmocka_unit_test(test_query_parameters),
        cmocka_unit_test(test_route_table_is_consistent),
        cmocka_unit_test(test_every_public_method_is_routed),
        cmocka_unit_test(test_route_matching),
        cmocka_unit_test(test_field_setters),
        cmocka_unit_test(test_field_set_conflicts),
        cmocka_unit_test(test_request_build),
        cmocka_unit_test(test_redirect_locations),
        cmocka_unit_test(test_fetch_site),
        cmocka_unit_test(test_content_type),
        cmocka_unit_test(test_bearer_token),
        cmocka_unit_test(test_origins),
        cmocka_unit_test(test_refusal_table),
        cmocka_unit_test(test_error_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
