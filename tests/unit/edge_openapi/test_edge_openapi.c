/*
 * Unit tests of the OpenAPI generator (services/edge/edge_openapi.c): the document is stable
 * text, every route of the table is an operation with its parameters and body, every $ref
 * resolves, the error responses follow the taxonomy, and every message schema describes what
 * pjson_encode writes: a message with every field set is encoded and checked against its
 * schema (property names, JSON types, enum names, formats of 64-bit integers and bytes).
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

#include "common/contract/cx_contract.h"
#include "common/pjson/pjson.h"
#include "services/edge/edge_internal.h"
#include "services/edge/edge_openapi.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static json_t *load_doc(void)
{
    char *text = NULL;
    size_t len = 0;
    cx_error_t err;
    cx_error_clear(&err);
    if (!edge_openapi_json(&text, &len, &err))
        fail_msg("generation failed: %s", err.message);
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, 0, &jerr);
    if (doc == NULL)
        fail_msg("not JSON: %s (line %d)", jerr.text, jerr.line);
    free(text);
    return doc;
}

/* The value at a local reference "#/a/b/c" (names hold no '/' or '~'). */
static json_t *resolve(json_t *doc, const char *ref)
{
    if (strncmp(ref, "#/", 2) != 0)
        return NULL;
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", ref + 2);
    json_t *at = doc;
    for (char *save = NULL, *p = strtok_r(buf, "/", &save); p != NULL && at != NULL;
         p = strtok_r(NULL, "/", &save))
        at = json_object_get(at, p);
    return at;
}

static json_t *deref(json_t *doc, json_t *s)
{
    json_t *ref = json_object_get(s, "$ref");
    return ref != NULL ? resolve(doc, json_string_value(ref)) : s;
}

static const char *component_of(const ProtobufCMessageDescriptor *d)
{
    return d->name + strlen(d->package_name) + 1;
}

static void lower(const char *in, char *out, size_t n)
{
    size_t i = 0;
    for (; in[i] != '\0' && i + 1 < n; i++)
        out[i] = (char)(in[i] >= 'A' && in[i] <= 'Z' ? in[i] - 'A' + 'a' : in[i]);
    out[i] = '\0';
}

static json_t *operation_of(json_t *doc, const edge_route_t *r)
{
    char method[8];
    lower(edge_method_name(r->method), method, sizeof(method));
    return json_object_get(json_object_get(json_object_get(doc, "paths"), r->path), method);
}

/* ---- the text ------------------------------------------------------------------------------ */

static void test_text_is_stable(void **state)
{
    (void)state;
    char *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    cx_error_t err;
    assert_true(edge_openapi_json(&a, &alen, &err));
    assert_true(edge_openapi_json(&b, &blen, &err));
    assert_int_equal(alen, blen);
    assert_memory_equal(a, b, alen);
    assert_int_equal(strlen(a), alen);
    assert_true(alen > 2 && a[0] == '{' && a[alen - 1] == '\n' && a[alen - 2] == '}');
    free(a);
    free(b);
}

static void test_refs_resolve(void **state)
{
    (void)state;
    json_t *doc = load_doc();
    /* An explicit stack instead of recursion: the walk visits every value once. */
    json_t *stack[4096];
    size_t n = 0, refs = 0;
    stack[n++] = doc;
    while (n > 0) {
        json_t *v = stack[--n];
        if (json_is_object(v)) {
            const char *k;
            json_t *x;
            json_object_foreach(v, k, x)
            {
                if (strcmp(k, "$ref") == 0 && json_is_string(x)) {
                    refs++;
                    if (resolve(doc, json_string_value(x)) == NULL)
                        fail_msg("unresolved $ref %s", json_string_value(x));
                } else {
                    assert_true(n < sizeof(stack) / sizeof(stack[0]));
                    stack[n++] = x;
                }
            }
        } else if (json_is_array(v)) {
            size_t i;
            json_t *x;
            json_array_foreach(v, i, x)
            {
                assert_true(n < sizeof(stack) / sizeof(stack[0]));
                stack[n++] = x;
            }
        }
    }
    assert_true(refs > 100);
    json_decref(doc);
}

/* ---- operations ----------------------------------------------------------------------------- */

static void test_every_route_is_an_operation(void **state)
{
    (void)state;
    json_t *doc = load_doc();
    size_t n = 0, ops = 0;
    const edge_route_t *routes = edge_routes(&n);
    assert_string_equal(json_string_value(json_object_get(doc, "openapi")), "3.1.0");
    for (size_t i = 0; i < n; i++) {
        const edge_route_t *r = &routes[i];
        json_t *op = operation_of(doc, r);
        if (op == NULL)
            fail_msg("no operation for %s %s", edge_method_name(r->method), r->path);
        assert_string_equal(json_string_value(json_object_get(op, "operationId")), r->operation_id);
        assert_null(json_object_get(op, "security")); /* the document's bearer requirement */
        json_t *params = json_object_get(op, "parameters");
        assert_int_equal(json_array_size(params), r->n_path_params + r->n_query_params);
        for (size_t k = 0; k < r->n_path_params + r->n_query_params; k++) {
            bool in_path = k < r->n_path_params;
            const edge_param_t *p =
                in_path ? &r->path_params[k] : &r->query_params[k - r->n_path_params];
            json_t *jp = json_array_get(params, k);
            assert_string_equal(json_string_value(json_object_get(jp, "name")), p->name);
            assert_string_equal(json_string_value(json_object_get(jp, "in")),
                                in_path ? "path" : "query");
            if (in_path) {
                char brace[80];
                snprintf(brace, sizeof(brace), "{%s}", p->name);
                assert_non_null(strstr(r->path, brace));
                assert_true(json_is_true(json_object_get(jp, "required")));
            }
        }
        const ProtobufCMethodDescriptor *md = edge_route_rpc(r);
        json_t *body = json_object_get(op, "requestBody");
        if (r->body) {
            json_t *schema = json_object_get(
                json_object_get(json_object_get(body, "content"), "application/json"), "schema");
            json_t *ref = json_object_get(schema, "$ref");
            if (ref == NULL) /* allOf [ $ref, {required} ] */
                ref = json_object_get(json_array_get(json_object_get(schema, "allOf"), 0), "$ref");
            char want[160];
            snprintf(want, sizeof(want), "#/components/schemas/%s", component_of(md->input));
            assert_string_equal(json_string_value(ref), want);
        } else {
            assert_null(body);
        }
        json_t *responses = json_object_get(op, "responses");
        char ok[8], moved[8];
        snprintf(ok, sizeof(ok), "%u", r->status);
        snprintf(moved, sizeof(moved), "%u", r->redirect.status);
        if (r->material) /* never written: no success answer is documented */
            assert_null(json_object_get(responses, ok));
        else /* a route that always redirects answers nothing else */
            assert_true((json_object_get(responses, ok) != NULL) ==
                        (r->redirect.to != EDGE_REDIRECT_URL));
        if (r->redirect.to != EDGE_REDIRECT_NONE) {
            json_t *to = json_object_get(responses, moved);
            assert_true(r->redirect.status == 302 || r->redirect.status == 303);
            assert_non_null(json_object_get(json_object_get(to, "headers"), "Location"));
            assert_non_null(json_object_get(json_object_get(to, "content"), "application/json"));
        }
        assert_true(r->created_field == NULL || json_object_get(responses, "201") != NULL);
        assert_non_null(json_object_get(responses, "401"));
        assert_non_null(json_object_get(responses, "400"));
        assert_true((json_object_get(responses, "413") != NULL) == r->body);
        ops++;
    }
    /* the edge's own answers, without authentication */
    const char *own[] = {EDGE_OPENAPI_PATH, "/healthz", "/readyz"};
    for (size_t i = 0; i < 3; i++) {
        json_t *op = json_object_get(json_object_get(json_object_get(doc, "paths"), own[i]), "get");
        assert_non_null(op);
        assert_int_equal(json_array_size(json_object_get(op, "security")), 0);
        assert_non_null(json_object_get(op, "security"));
        assert_null(json_object_get(json_object_get(op, "responses"), "401"));
        ops++;
    }
    size_t counted = 0;
    const char *path;
    json_t *item;
    json_object_foreach(json_object_get(doc, "paths"), path, item) counted +=
        json_object_size(item);
    assert_int_equal(counted, ops); /* nothing but the table and the three */
    json_t *bearer = json_object_get(
        json_object_get(json_object_get(doc, "components"), "securitySchemes"), "bearerAuth");
    assert_string_equal(json_string_value(json_object_get(bearer, "scheme")), "bearer");
    json_decref(doc);
}

static void test_parameters_follow_the_contract(void **state)
{
    (void)state;
    json_t *doc = load_doc();
    size_t n = 0;
    const edge_route_t *routes = edge_routes(&n);
    const cx_contract_rule_t *sid = cx_contract_rule("secret_id");
    for (size_t i = 0; i < n; i++) {
        if (strcmp(routes[i].operation_id, "unshareSecret") != 0)
            continue;
        json_t *params = json_object_get(operation_of(doc, &routes[i]), "parameters");
        json_t *s = json_object_get(json_array_get(params, 0), "schema");
        assert_int_equal(json_integer_value(json_object_get(s, "maxLength")), sid->max);
        assert_string_equal(json_string_value(json_object_get(s, "pattern")), "^[A-Za-z0-9_\\-]*$");
        /* the grantee is required by the contract, so both of its parameters are */
        for (size_t k = 1; k < 3; k++)
            assert_true(json_is_true(json_object_get(json_array_get(params, k), "required")));
        json_t *type = json_object_get(json_array_get(params, 1), "schema");
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(type, "not"), "const")),
            "GRANTEE_TYPE_UNSPECIFIED");
        assert_false(json_is_true(json_object_get(json_array_get(params, 3), "required")));
    }
    json_decref(doc);
}

static void test_bodies_drop_what_the_path_binds(void **state)
{
    (void)state;
    json_t *doc = load_doc();
    json_t *schemas = json_object_get(json_object_get(doc, "components"), "schemas");
    /* secretId comes from the path of rotate; value stays required */
    json_t *req = json_object_get(json_object_get(schemas, "RotateSecretRequest"), "required");
    assert_int_equal(json_array_size(req), 1);
    assert_string_equal(json_string_value(json_array_get(req, 0)), "value");
    /* ... and the rotate route's body leaves it out */
    size_t n = 0;
    const edge_route_t *routes = edge_routes(&n);
    for (size_t k = 0; k < n; k++) {
        if (strcmp(routes[k].operation_id, "rotateSecret") != 0)
            continue;
        json_t *body = json_object_get(
            json_object_get(
                json_object_get(json_object_get(operation_of(doc, &routes[k]), "requestBody"),
                                "content"),
                "application/json"),
            "schema");
        json_t *extra = json_array_get(json_object_get(body, "allOf"), 1);
        assert_true(
            json_is_false(json_object_get(json_object_get(extra, "properties"), "secretId")));
    }
    /* a body route without bindings requires what the contract requires */
    json_t *create = json_object_get(schemas, "CreateSecretRequest");
    json_t *creq = json_object_get(create, "required");
    size_t i;
    json_t *v;
    size_t seen = 0;
    json_array_foreach(creq, i, v)
    {
        char proto[64];
        size_t o = 0;
        for (const char *c = json_string_value(v); *c != '\0' && o + 2 < sizeof(proto); c++) {
            if (*c >= 'A' && *c <= 'Z') {
                proto[o++] = '_';
                proto[o++] = (char)(*c - 'A' + 'a');
            } else {
                proto[o++] = *c;
            }
        }
        proto[o] = '\0';
        assert_true(cx_contract_required("credex.v1.CreateSecretRequest", proto));
        seen++;
    }
    assert_int_equal(seen, 4);
    json_t *name = json_object_get(json_object_get(create, "properties"), "displayName");
    assert_int_equal(json_integer_value(json_object_get(name, "maxLength")),
                     cx_contract_rule("display_name")->max);
    assert_int_equal(json_integer_value(json_object_get(name, "minLength")), 1);
    json_t *uses = json_object_get(json_object_get(create, "properties"), "allowedUses");
    assert_int_equal(json_integer_value(json_object_get(uses, "maxItems")),
                     cx_contract_rule("allowed_uses")->max_items);
    assert_true(json_is_true(json_object_get(uses, "uniqueItems")));
    json_decref(doc);
}

static void test_errors_follow_the_taxonomy(void **state)
{
    (void)state;
    json_t *doc = load_doc();
    json_t *comp = json_object_get(doc, "components");
    json_t *codes =
        json_object_get(json_object_get(json_object_get(comp, "schemas"), "ErrorCode"), "enum");
    assert_int_equal(json_array_size(codes), CX_CODE_COUNT_ - 1);
    for (int c = 1; c < CX_CODE_COUNT_; c++) {
        char name[16];
        snprintf(name, sizeof(name), "Error%d", cx_code_http_status((cx_code_t)c));
        json_t *resp = json_object_get(json_object_get(comp, "responses"), name);
        if (resp == NULL)
            fail_msg("no response %s for %s", name, cx_code_reason((cx_code_t)c));
        json_t *schema = json_object_get(
            json_object_get(json_object_get(resp, "content"), "application/json"), "schema");
        json_t *narrowed = json_array_get(json_object_get(schema, "allOf"), 1);
        json_t *en = json_object_get(
            json_object_get(
                json_object_get(json_object_get(json_object_get(narrowed, "properties"), "error"),
                                "properties"),
                "code"),
            "enum");
        bool found = false;
        size_t i;
        json_t *v;
        json_array_foreach(en, i, v) found |=
            strcmp(json_string_value(v), cx_code_reason((cx_code_t)c)) == 0;
        if (!found)
            fail_msg("%s does not list %s", name, cx_code_reason((cx_code_t)c));
    }
    /* the edge's own refusals too, e.g. 415 for a body that is not JSON */
    const edge_refusal_info_t *mt = edge_refusal(EDGE_R_MEDIA_TYPE);
    char name[16];
    snprintf(name, sizeof(name), "Error%u", mt->status);
    assert_non_null(json_object_get(json_object_get(comp, "responses"), name));
    json_decref(doc);
}

/* ---- schemas against pjson_encode ------------------------------------------------------------ */

static void fill_value(rpc_arena_t *a, const ProtobufCFieldDescriptor *f, void *p, unsigned depth);

/* A message with every field set (oneofs: their first member), nested messages to a depth. */
static ProtobufCMessage *fill(rpc_arena_t *a, const ProtobufCMessageDescriptor *d, unsigned depth)
{
    ProtobufCMessage *m = rpc_arena_alloc(a, d->sizeof_message);
    protobuf_c_message_init(d, m);
    char *base = (char *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type == PROTOBUF_C_TYPE_MESSAGE && depth >= 4)
            continue;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t *which = (uint32_t *)(base + f->quantifier_offset);
            if (*which != 0)
                continue;
            *which = f->id;
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t es = f->type == PROTOBUF_C_TYPE_MESSAGE || f->type == PROTOBUF_C_TYPE_STRING
                            ? sizeof(void *)
                        : f->type == PROTOBUF_C_TYPE_BYTES ? sizeof(ProtobufCBinaryData)
                                                           : 8;
            void *arr = rpc_arena_alloc(a, es);
            memset(arr, 0, es);
            fill_value(a, f, arr, depth);
            *(size_t *)(base + f->quantifier_offset) = 1;
            *(void **)(base + f->offset) = arr;
        } else {
            fill_value(a, f, base + f->offset, depth);
            if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset != 0 &&
                !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) && f->type != PROTOBUF_C_TYPE_STRING &&
                f->type != PROTOBUF_C_TYPE_MESSAGE)
                *(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
        }
    }
    return m;
}

static void fill_value(rpc_arena_t *a, const ProtobufCFieldDescriptor *f, void *p, unsigned depth)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING:
        *(char **)p = rpc_arena_strndup(a, "x", 1);
        break;
    case PROTOBUF_C_TYPE_BYTES: {
        ProtobufCBinaryData *b = p;
        b->len = 2;
        b->data = (uint8_t *)rpc_arena_strndup(a, "\xff\x01", 2);
        break;
    }
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        int v = ed->values[0].value;
        for (unsigned i = 0; i < ed->n_values; i++)
            if (ed->values[i].value != 0) {
                v = ed->values[i].value;
                break;
            }
        *(int *)p = v;
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        *(ProtobufCMessage **)p = fill(a, f->descriptor, depth + 1);
        break;
    case PROTOBUF_C_TYPE_BOOL:
        *(protobuf_c_boolean *)p = 1;
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        *(int64_t *)p = -1234567890123;
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        *(uint64_t *)p = 18446744073709551615u;
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        *(float *)p = 1.5f;
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        *(double *)p = 2.5;
        break;
    default: /* 32-bit integers */
        *(int32_t *)p = 7;
        break;
    }
}

/* Does value fit schema, as far as types, enums, constants and properties go (patterns are
 * left to the black-box run, which validates real replies with a full validator)? */
static void conforms(json_t *doc, json_t *schema, json_t *value, const char *where)
{
    schema = deref(doc, schema);
    assert_non_null(schema);
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(schema, "allOf"), i, x) conforms(doc, x, value, where);
    json_t *one = json_object_get(schema, "oneOf");
    if (one != NULL) {
        bool any = false;
        json_array_foreach(one, i, x)
        {
            const char *t = json_string_value(json_object_get(x, "type"));
            any |= (strcmp(t, "number") == 0 && json_is_number(value)) ||
                   (strcmp(t, "string") == 0 && json_is_string(value));
        }
        if (!any)
            fail_msg("%s: no alternative of oneOf fits", where);
    }
    const char *type = json_string_value(json_object_get(schema, "type"));
    if (type != NULL) {
        bool ok = (strcmp(type, "string") == 0 && json_is_string(value)) ||
                  (strcmp(type, "integer") == 0 && json_is_integer(value)) ||
                  (strcmp(type, "number") == 0 && json_is_number(value)) ||
                  (strcmp(type, "boolean") == 0 && json_is_boolean(value)) ||
                  (strcmp(type, "array") == 0 && json_is_array(value)) ||
                  (strcmp(type, "object") == 0 && json_is_object(value));
        if (!ok)
            fail_msg("%s: not of type %s", where, type);
    }
    json_t *en = json_object_get(schema, "enum");
    if (en != NULL) {
        bool found = false;
        json_array_foreach(en, i, x) found |= json_equal(x, value);
        if (!found)
            fail_msg("%s: not among the enum values", where);
    }
    const char *format = json_string_value(json_object_get(schema, "format"));
    if (format != NULL && strcmp(format, "int64") == 0 && json_is_string(value))
        assert_string_equal(json_string_value(value), "-1234567890123");
    if (format != NULL && strcmp(format, "uint64") == 0 && json_is_string(value))
        assert_string_equal(json_string_value(value), "18446744073709551615");
    if (json_is_string(json_object_get(schema, "contentEncoding")))
        assert_string_equal(json_string_value(value), "/wE="); /* 0xff 0x01, padded */
    if (json_is_array(value)) {
        json_array_foreach(value, i, x) conforms(doc, json_object_get(schema, "items"), x, where);
    } else if (json_is_object(value)) {
        json_t *props = json_object_get(schema, "properties");
        json_t *extra = json_object_get(schema, "additionalProperties");
        const char *k;
        json_object_foreach(value, k, x)
        {
            char sub[256];
            snprintf(sub, sizeof(sub), "%s.%s", where, k);
            json_t *ps = json_object_get(props, k);
            if (ps != NULL)
                conforms(doc, ps, x, sub);
            else if (json_is_object(extra))
                conforms(doc, extra, x, sub);
            else if (props != NULL || json_is_false(extra))
                fail_msg("%s: not a property of the schema", sub);
        }
        /* every property is a field pjson writes: all are set, so all must appear */
        json_object_foreach(props, k, x) if (json_object_get(value, k) == NULL)
            fail_msg("%s.%s: in the schema, not written by pjson", where, k);
    }
}

/* Collect the message types reachable from the routes (bodies and replies). */
static void collect(const ProtobufCMessageDescriptor *d, const ProtobufCMessageDescriptor **seen,
                    size_t *n, size_t cap)
{
    for (size_t i = 0; i < *n; i++)
        if (seen[i] == d)
            return;
    assert_true(*n < cap);
    seen[(*n)++] = d;
    for (unsigned i = 0; i < d->n_fields; i++)
        if (d->fields[i].type == PROTOBUF_C_TYPE_MESSAGE)
            collect(d->fields[i].descriptor, seen, n, cap);
}

static void test_schemas_describe_pjson(void **state)
{
    (void)state;
    json_t *doc = load_doc();
    json_t *schemas = json_object_get(json_object_get(doc, "components"), "schemas");
    const ProtobufCMessageDescriptor *seen[256];
    size_t n = 0, routes_n = 0, checked = 0;
    const edge_route_t *routes = edge_routes(&routes_n);
    for (size_t i = 0; i < routes_n; i++) {
        const ProtobufCMethodDescriptor *md = edge_route_rpc(&routes[i]);
        if (routes[i].body)
            collect(md->input, seen, &n, 256);
        if (!routes[i].material)
            collect(md->output, seen, &n, 256);
    }
    for (size_t i = 0; i < n; i++) {
        json_t *schema = json_object_get(schemas, component_of(seen[i]));
        if (cx_contract_is_map_entry(seen[i])) { /* maps are objects, not components */
            assert_null(schema);
            continue;
        }
        if (schema == NULL)
            fail_msg("no schema for %s", seen[i]->name);
        rpc_arena_t *a = rpc_arena_new(4096);
        ProtobufCMessage *m = fill(a, seen[i], 0);
        char *text = NULL;
        size_t len = 0;
        cx_error_t err;
        assert_true(pjson_encode(&text, &len, m, NULL, &err));
        json_t *value = json_loadb(text, len, 0, NULL);
        assert_non_null(value);
        conforms(doc, schema, value, component_of(seen[i]));
        json_decref(value);
        pjson_text_free(text, len);
        rpc_arena_free(a);
        checked++;
    }
    assert_true(checked > 20);
    json_decref(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_is_stable),
        cmocka_unit_test(test_refs_resolve),
        cmocka_unit_test(test_every_route_is_an_operation),
        cmocka_unit_test(test_parameters_follow_the_contract),
        cmocka_unit_test(test_bodies_drop_what_the_path_binds),
        cmocka_unit_test(test_errors_follow_the_taxonomy),
        cmocka_unit_test(test_schemas_describe_pjson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
