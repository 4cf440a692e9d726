/* Unit tests of common/pjson: the proto3 JSON mapping of protobuf-c messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pjson/pjson.h"
#include "common/rpc/rpc.h"
#include "credex/v1/gateway.pb-c.h"
#include "credex/v1/keywrap.pb-c.h"
#include "credex/v1/oauth.pb-c.h"
#include "credex/v1/store.pb-c.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "pjson_test.pb-c.h"
#include "pjson_test2.pb-c.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static char *encode(const ProtobufCMessage *m, unsigned flags)
{
    char *text = NULL;
    size_t len = 0;
    cx_error_t err;
    pjson_options_t o = {.flags = flags};
    if (!pjson_encode(&text, &len, m, &o, &err))
        fail_msg("encode %s: %s", m->descriptor->name, err.message);
    assert_int_equal(strlen(text), len);
    return text;
}

static void text_free(char *t)
{
    pjson_text_free(t, t ? strlen(t) : 0);
}

/* Decode into an arena (the way credex uses the module); NULL and err set on failure. */
static ProtobufCMessage *decode_opts(rpc_arena_t *arena, const ProtobufCMessageDescriptor *d,
                                     const char *text, const pjson_options_t *o, cx_error_t *err)
{
    ProtobufCAllocator a = rpc_arena_allocator(arena);
    ProtobufCMessage *m = NULL;
    if (!pjson_decode(&m, d, text, strlen(text), &a, o, err))
        return NULL;
    assert_non_null(m);
    return m;
}

static ProtobufCMessage *decode(rpc_arena_t *arena, const ProtobufCMessageDescriptor *d,
                                const char *text)
{
    cx_error_t err;
    ProtobufCMessage *m = decode_opts(arena, d, text, NULL, &err);
    if (m == NULL)
        fail_msg("decode %s of %s: %s", d->name, text, err.message);
    return m;
}

/* Decoding must fail with `code` and a message containing `want`. */
static void refuse(const ProtobufCMessageDescriptor *d, const char *text, cx_code_t code,
                   const char *want)
{
    rpc_arena_t *arena = rpc_arena_new(1024);
    cx_error_t err = {0};
    ProtobufCMessage *m = decode_opts(arena, d, text, NULL, &err);
    if (m != NULL)
        fail_msg("accepted as %s: %s", d->name, text);
    if (err.code != code || strstr(err.message, want) == NULL)
        fail_msg("%s: got %s \"%s\", want %s \"%s\"", text, cx_code_reason(err.code), err.message,
                 cx_code_reason(code), want);
    rpc_arena_free(arena);
}

static void bad_input(const ProtobufCMessageDescriptor *d, const char *text, const char *want)
{
    refuse(d, text, CX_ERR_INVALID_ARGUMENT, want);
}

/* Decode text as d and encode it back (compact): the canonical form of the input. */
static void canonical_is(const ProtobufCMessageDescriptor *d, const char *text, const char *want)
{
    rpc_arena_t *arena = rpc_arena_new(1024);
    char *out = encode(decode(arena, d, text), 0);
    if (strcmp(out, want) != 0)
        fail_msg("%s -> %s, want %s", text, out, want);
    text_free(out);
    rpc_arena_free(arena);
}

static void packed_equal(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    size_t na = protobuf_c_message_get_packed_size(a), nb = protobuf_c_message_get_packed_size(b);
    uint8_t *pa = malloc(na + 1), *pb = malloc(nb + 1);
    protobuf_c_message_pack(a, pa);
    protobuf_c_message_pack(b, pb);
    if (na != nb || memcmp(pa, pb, na) != 0)
        fail_msg("%s: packed forms differ (%zu vs %zu bytes)", a->descriptor->name, na, nb);
    free(pa);
    free(pb);
}

/* ---- a generic filler: every field of any message set to a non-default value ----------- */

static void fill(rpc_arena_t *arena, ProtobufCMessage *m, unsigned depth, unsigned k);

static void fill_value(rpc_arena_t *arena, const ProtobufCFieldDescriptor *f, void *p,
                       unsigned depth, unsigned k)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        *(int32_t *)p = k % 2 ? INT32_MIN + (int32_t)k : INT32_MAX - (int32_t)k;
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        *(uint32_t *)p = UINT32_MAX - k;
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        *(int64_t *)p = k % 2 ? INT64_MIN + (int64_t)k : INT64_MAX - (int64_t)k;
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        *(uint64_t *)p = UINT64_MAX - k;
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        *(float *)p = 0.1f * (float)(k + 1);
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        *(double *)p = k % 2 ? 1.0 / 3.0 : -1e300 * (k + 1);
        break;
    case PROTOBUF_C_TYPE_BOOL:
        *(protobuf_c_boolean *)p = 1;
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *e = f->descriptor;
        *(int *)p = e->values[e->n_values - 1 - k % e->n_values].value;
        if (*(int *)p == 0)
            *(int *)p = e->values[e->n_values - 1].value;
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        char *s = rpc_arena_alloc(arena, 64);
        snprintf(s, 64, "s%u-\xc3\xa9\xe2\x9c\x93 \"q\" \\ \n\t\x01/%s", k, f->name);
        *(char **)p = s;
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        ProtobufCBinaryData *b = p;
        b->len = k + 1;
        b->data = rpc_arena_alloc(arena, b->len);
        for (size_t i = 0; i < b->len; i++)
            b->data[i] = (uint8_t)(0xff - i * 37 - k);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessageDescriptor *d = f->descriptor;
        ProtobufCMessage *sub = rpc_arena_alloc(arena, d->sizeof_message);
        protobuf_c_message_init(d, sub);
        if (depth < 3)
            fill(arena, sub, depth + 1, k);
        *(ProtobufCMessage **)p = sub;
        break;
    }
    }
}

static size_t stride_of(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_MESSAGE:
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    default:
        return 4;
    }
}

/* Map entry j of 2, keys in the order pjson writes them: "key-0" < "key-1", false < true,
 * -1 (or 3 when unsigned) < 7. */
static ProtobufCMessage *map_entry(rpc_arena_t *arena, const ProtobufCMessageDescriptor *ed,
                                   size_t j, unsigned depth)
{
    ProtobufCMessage *e = rpc_arena_alloc(arena, ed->sizeof_message);
    protobuf_c_message_init(ed, e);
    const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
    char *key = (char *)e + kf->offset;
    bool is_unsigned = kf->type == PROTOBUF_C_TYPE_UINT32 || kf->type == PROTOBUF_C_TYPE_UINT64 ||
                       kf->type == PROTOBUF_C_TYPE_FIXED32 || kf->type == PROTOBUF_C_TYPE_FIXED64;
    int64_t v = j == 0 ? (is_unsigned ? 3 : -1) : 7;
    if (kf->type == PROTOBUF_C_TYPE_STRING) {
        char *s = rpc_arena_alloc(arena, 16);
        snprintf(s, 16, "key-%zu", j);
        *(char **)key = s;
    } else if (kf->type == PROTOBUF_C_TYPE_BOOL) {
        *(protobuf_c_boolean *)key = (protobuf_c_boolean)j;
    } else if (stride_of(kf->type) == 8) {
        *(int64_t *)key = v;
    } else {
        *(int32_t *)key = (int32_t)v;
    }
    fill_value(arena, vf, (char *)e + vf->offset, depth, (unsigned)j);
    return e;
}

static void fill(rpc_arena_t *arena, ProtobufCMessage *m, unsigned depth, unsigned k)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        char *member = (char *)m + f->offset;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t *which = (uint32_t *)((char *)m + f->quantifier_offset);
            if (*which != 0)
                continue; /* one member per oneof */
            *which = f->id;
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            if (f->type == PROTOBUF_C_TYPE_MESSAGE && depth >= 3)
                continue;
            size_t n = 2, stride = stride_of(f->type);
            char *arr = rpc_arena_alloc(arena, n * stride);
            const ProtobufCMessageDescriptor *ed = pjson_map_entry(d, f);
            for (size_t j = 0; j < n; j++) {
                if (ed != NULL)
                    ((ProtobufCMessage **)arr)[j] = map_entry(arena, ed, j, depth);
                else
                    fill_value(arena, f, arr + j * stride, depth, (unsigned)j);
            }
            *(size_t *)((char *)m + f->quantifier_offset) = n;
            *(char **)member = arr;
            continue;
        }
        if (f->type == PROTOBUF_C_TYPE_MESSAGE && depth >= 3 &&
            f->label != PROTOBUF_C_LABEL_REQUIRED)
            continue;
        fill_value(arena, f, member, depth, k + i);
        if (f->label == PROTOBUF_C_LABEL_OPTIONAL && !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
            *(protobuf_c_boolean *)((char *)m + f->quantifier_offset) = 1;
    }
}

/* Every message type reachable from a set of services and roots (map entries excluded: they
 * are checked through their maps). */
#define MAX_TYPES 256
typedef struct types {
    const ProtobufCMessageDescriptor *d[MAX_TYPES];
    size_t n;
} types_t;

static void collect(types_t *t, const ProtobufCMessageDescriptor *d)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->d[i] == d)
            return;
    assert_true(t->n < MAX_TYPES);
    t->d[t->n++] = d;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const ProtobufCMessageDescriptor *ed = pjson_map_entry(d, f);
        if (ed != NULL) {
            if (ed->fields[1].type == PROTOBUF_C_TYPE_MESSAGE)
                collect(t, ed->fields[1].descriptor);
            continue;
        }
        collect(t, f->descriptor);
    }
}

static void collect_service(types_t *t, const ProtobufCServiceDescriptor *s)
{
    for (unsigned i = 0; i < s->n_methods; i++) {
        collect(t, s->methods[i].input);
        collect(t, s->methods[i].output);
    }
}

static bool has_required(const ProtobufCMessageDescriptor *d)
{
    for (unsigned i = 0; i < d->n_fields; i++)
        if (d->fields[i].label == PROTOBUF_C_LABEL_REQUIRED)
            return true;
    return false;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_json_names(void **state)
{
    (void)state;
    const ProtobufCFieldDescriptor *f;
    char buf[64];
    f = protobuf_c_message_descriptor_get_field_by_name(&credex__v1__secret_metadata__descriptor,
                                                        "created_at_ms");
    assert_int_equal(pjson_json_name(f, buf, sizeof buf), strlen("createdAtMs"));
    assert_string_equal(buf, "createdAtMs");
    f = protobuf_c_message_descriptor_get_field_by_name(&pjsontest__node__descriptor,
                                                        "snake_case_name");
    pjson_json_name(f, buf, sizeof buf);
    assert_string_equal(buf, "snakeCaseName");
    f = protobuf_c_message_descriptor_get_field_by_name(&pjsontest__scalars__descriptor, "i32");
    pjson_json_name(f, buf, sizeof buf);
    assert_string_equal(buf, "i32");
    /* does not fit: 0 and an empty string, never a cut name */
    f = protobuf_c_message_descriptor_get_field_by_name(&credex__v1__secret_metadata__descriptor,
                                                        "created_at_ms");
    assert_int_equal(pjson_json_name(f, buf, 5), 0);
    assert_string_equal(buf, "");
}

static void test_map_entries(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *rc = &credex__v1__resource_context__descriptor;
    const ProtobufCFieldDescriptor *attrs =
        protobuf_c_message_descriptor_get_field_by_name(rc, "attributes");
    const ProtobufCMessageDescriptor *e = pjson_map_entry(rc, attrs);
    assert_non_null(e);
    assert_string_equal(e->name, "credex.v1.ResourceContext.AttributesEntry");
    const ProtobufCMessageDescriptor *sm = &credex__v1__secret_metadata__descriptor;
    assert_null(
        pjson_map_entry(sm, protobuf_c_message_descriptor_get_field_by_name(sm, "allowed_uses")));
    const ProtobufCMessageDescriptor *lr = &credex__v1__list_secrets_response__descriptor;
    assert_null(
        pjson_map_entry(lr, protobuf_c_message_descriptor_get_field_by_name(lr, "secrets")));
    const ProtobufCMessageDescriptor *mp = &pjsontest__maps__descriptor;
    assert_non_null(
        pjson_map_entry(mp, protobuf_c_message_descriptor_get_field_by_name(mp, "by_id")));
    /* the entry type of one message does not make another message's field a map */
    assert_null(pjson_map_entry(sm, attrs));
}

/* What protojson (grpcurl -format json) prints for this message, written out by hand from the
 * mapping: camelCase names in field-number order, int64 as strings, enum names, defaults
 * (rotatedAtMs, connectorId, ...) omitted. */
static void test_golden_secret_metadata(void **state)
{
    (void)state;
    Credex__V1__SecretMetadata m = CREDEX__V1__SECRET_METADATA__INIT;
    Credex__V1__Owner owner = CREDEX__V1__OWNER__INIT;
    char *uses[] = {"mcp_server_env", "http_authorization_header"};
    owner.owner_type = CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER;
    owner.owner_id = "alice";
    m.secret_id = "sec_123";
    m.owner = &owner;
    m.kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_API_KEY;
    m.status = CREDEX__V1__SECRET_STATUS__SECRET_STATUS_ACTIVE;
    m.display_name = "OpenAI \"demo\"";
    m.n_allowed_uses = 2;
    m.allowed_uses = uses;
    m.current_version = 3;
    m.value_set = 1;
    m.masked_value = "********";
    m.created_by = "alice";
    m.created_at_ms = 1700000000123;
    char *out = encode(&m.base, 0);
    assert_string_equal(
        out, "{\"secretId\":\"sec_123\",\"owner\":{\"ownerType\":\"OWNER_TYPE_USER\",\"ownerId\":"
             "\"alice\"},\"kind\":\"SECRET_KIND_API_KEY\",\"status\":\"SECRET_STATUS_ACTIVE\","
             "\"displayName\":\"OpenAI \\\"demo\\\"\",\"allowedUses\":[\"mcp_server_env\","
             "\"http_authorization_header\"],\"currentVersion\":3,\"valueSet\":true,"
             "\"maskedValue\":\"********\",\"createdBy\":\"alice\",\"createdAtMs\":"
             "\"1700000000123\"}");
    text_free(out);
    /* indented like grpcurl: two spaces, "key": value */
    char *text = NULL;
    size_t len;
    pjson_options_t o = {.indent = 2};
    Credex__V1__GetHealthResponse h = CREDEX__V1__GET_HEALTH_RESPONSE__INIT;
    h.status = CREDEX__V1__HEALTH_STATUS__HEALTH_STATUS_OK;
    h.credentials_enabled = 1;
    assert_true(pjson_encode(&text, &len, &h.base, &o, NULL));
    assert_string_equal(
        text, "{\n  \"status\": \"HEALTH_STATUS_OK\",\n  \"credentialsEnabled\": true\n}");
    pjson_text_free(text, len);
    Credex__V1__GetHealthRequest empty = CREDEX__V1__GET_HEALTH_REQUEST__INIT;
    assert_true(pjson_encode(&text, &len, &empty.base, &o, NULL));
    assert_string_equal(text, "{}");
    pjson_text_free(text, len);
}

static void test_defaults(void **state)
{
    (void)state;
    Credex__V1__SecretMetadata m = CREDEX__V1__SECRET_METADATA__INIT;
    char *out = encode(&m.base, 0);
    assert_string_equal(out, "{}");
    text_free(out);
    out = encode(&m.base, PJSON_EMIT_DEFAULTS);
    assert_string_equal(
        out, "{\"secretId\":\"\",\"owner\":null,\"kind\":\"SECRET_KIND_UNSPECIFIED\",\"status\":"
             "\"SECRET_STATUS_UNSPECIFIED\",\"displayName\":\"\",\"description\":\"\","
             "\"provider\":\"\",\"connectorId\":\"\",\"allowedUses\":[],\"currentVersion\":0,"
             "\"valueSet\":false,\"maskedValue\":\"\",\"createdBy\":\"\",\"createdAtMs\":\"0\","
             "\"updatedBy\":\"\",\"updatedAtMs\":\"0\",\"rotatedAtMs\":\"0\",\"revokedAtMs\":"
             "\"0\",\"deletedAtMs\":\"0\"}");
    /* every default written out reads back as the empty message */
    rpc_arena_t *arena = rpc_arena_new(1024);
    ProtobufCMessage *back = decode(arena, m.base.descriptor, out);
    assert_int_equal(protobuf_c_message_get_packed_size(back), 0);
    text_free(out);
    Credex__V1__ResourceContext rc = CREDEX__V1__RESOURCE_CONTEXT__INIT;
    out = encode(&rc.base, PJSON_EMIT_DEFAULTS | PJSON_PROTO_NAMES);
    assert_string_equal(out, "{\"resource_type\":\"\",\"resource_id\":\"\",\"agent_id\":\"\","
                             "\"provider_resource_id\":\"\",\"attributes\":{}}");
    text_free(out);
    /* null is the default for every kind of field */
    back = decode(arena, &credex__v1__secret_metadata__descriptor,
                  "{\"secretId\":null,\"owner\":null,\"kind\":null,\"allowedUses\":null,"
                  "\"createdAtMs\":null,\"valueSet\":null}");
    assert_int_equal(protobuf_c_message_get_packed_size(back), 0);
    back = decode(arena, &credex__v1__resource_context__descriptor, "{\"attributes\":null}");
    assert_int_equal(((Credex__V1__ResourceContext *)back)->n_attributes, 0);
    rpc_arena_free(arena);
}

/* Every credex.v1 message kind (everything the services' methods take and return, and what
 * they contain), the standard services' messages, descriptor.proto's (proto2: presence,
 * required fields, every scalar type) and pjson's own test types: filled with non-default
 * values in every field, written as JSON, read back; the message must pack to the same bytes
 * and print the same JSON, under each option. */
static void test_round_trip_every_message(void **state)
{
    (void)state;
    types_t t = {.n = 0};
    const ProtobufCServiceDescriptor *services[] = {
        &credex__v1__secrets__descriptor,
        &credex__v1__retrieval__descriptor,
        &credex__v1__audit__descriptor,
        &credex__v1__admin__descriptor,
        &credex__v1__key_wrap__descriptor,
        &credex__v1__connectors__descriptor,
        &credex__v1__connections__descriptor,
        &credex__v1__provider_tokens__descriptor,
        &credex__v1__credential_store__descriptor,
        &grpc__health__v1__health__descriptor,
        &grpc__reflection__v1__server_reflection__descriptor};
    for (size_t i = 0; i < sizeof services / sizeof services[0]; i++)
        collect_service(&t, services[i]);
    size_t credex_types = t.n;
    collect(&t, &credex__v1__provider_token_set__descriptor);
    collect(&t, &google__protobuf__file_descriptor_set__descriptor);
    collect(&t, &pjsontest__scalars__descriptor);
    collect(&t, &pjsontest__repeats__descriptor);
    collect(&t, &pjsontest__maps__descriptor);
    collect(&t, &pjsontest__node__descriptor);
    collect(&t, &pjsontest2__legacy__descriptor);
    assert_true(credex_types >= 90); /* the services reach (nearly) every credex.v1 message */
    static const unsigned flag_sets[] = {0, PJSON_PROTO_NAMES, PJSON_EMIT_DEFAULTS,
                                         PJSON_EMIT_DEFAULTS | PJSON_PROTO_NAMES};
    for (size_t i = 0; i < t.n; i++) {
        const ProtobufCMessageDescriptor *d = t.d[i];
        for (unsigned k = 0; k < 2; k++) {
            rpc_arena_t *arena = rpc_arena_new(4096);
            ProtobufCMessage *m = rpc_arena_alloc(arena, d->sizeof_message);
            protobuf_c_message_init(d, m);
            if (k == 1)
                fill(arena, m, 0, 0);
            else if (has_required(d))
                goto next; /* an empty proto2 message with required fields does not pack */
            for (size_t f = 0; f < sizeof flag_sets / sizeof flag_sets[0]; f++) {
                char *text = encode(m, flag_sets[f]);
                ProtobufCMessage *back = decode(arena, d, text);
                packed_equal(m, back);
                char *again = encode(back, flag_sets[f]);
                if (strcmp(text, again) != 0)
                    fail_msg("%s: %s\nthen %s", d->name, text, again);
                text_free(again);
                text_free(text);
            }
        next:
            rpc_arena_free(arena);
        }
    }
}

static void test_names_on_input(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = &credex__v1__retrieve_request__descriptor;
    const char *want = "{\"secretRef\":\"s1\",\"intendedUse\":\"use\",\"resourceContext\":{"
                       "\"resourceType\":\"mcp_server\",\"resourceId\":\"gh\"}}";
    canonical_is(d, want, want);
    canonical_is(d,
                 "{\"secret_ref\":\"s1\",\"intended_use\":\"use\",\"resource_context\":{"
                 "\"resource_type\":\"mcp_server\",\"resourceId\":\"gh\"}}",
                 want);
    bad_input(d, "{\"secretRef\":\"a\",\"secret_ref\":\"b\"}", "given twice");
    bad_input(d, "{\"resourceContext\":{\"resource_id\":\"a\",\"resourceId\":null}}",
              "resourceContext.resourceId: given twice");
    bad_input(d, "{\"SecretRef\":\"a\"}", "unknown field");
    bad_input(d, "{\"secretref\":\"a\"}", "unknown field");
}

static void test_int64_and_integers(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *s = &pjsontest__scalars__descriptor;
    canonical_is(s, "{\"i64\":\"-9223372036854775808\",\"u64\":\"18446744073709551615\"}",
                 "{\"i64\":\"-9223372036854775808\",\"u64\":\"18446744073709551615\"}");
    canonical_is(s, "{\"i64\":9223372036854775807,\"sf64\":-5,\"f64\":\"7\"}",
                 "{\"i64\":\"9223372036854775807\",\"f64\":\"7\",\"sf64\":\"-5\"}");
    canonical_is(s, "{\"i32\":\"-2147483648\",\"u32\":4294967295,\"s32\":1e2,\"sf32\":\"2E1\"}",
                 "{\"i32\":-2147483648,\"u32\":4294967295,\"s32\":100,\"sf32\":20}");
    canonical_is(s, "{\"i32\":3.0,\"u64\":\"-0\",\"i64\":\"0\"}", "{\"i32\":3}");
    bad_input(s, "{\"i32\":2147483648}", "i32: integer out of range");
    bad_input(s, "{\"i32\":\"-2147483649\"}", "i32: integer out of range");
    bad_input(s, "{\"u32\":-1}", "u32: integer out of range");
    bad_input(s, "{\"u32\":4294967296}", "u32: integer out of range");
    bad_input(s, "{\"u64\":\"18446744073709551616\"}", "u64: integer out of range");
    bad_input(s, "{\"u64\":-1}", "u64: integer out of range");
    bad_input(s, "{\"i64\":\"9223372036854775808\"}", "i64: integer out of range");
    bad_input(s, "{\"i64\":1.5}", "i64: expected an integer");
    bad_input(s, "{\"i64\":\"1.5\"}", "i64: expected an integer");
    bad_input(s, "{\"i32\":\"1e-1\"}", "i32: expected an integer");
    bad_input(s, "{\"i64\":1e19}", "number too large to be exact");
    bad_input(s, "{\"i64\":\"\"}", "i64: expected an integer");
    bad_input(s, "{\"i64\":\" 1\"}", "i64: expected an integer");
    bad_input(s, "{\"i64\":\"+1\"}", "i64: expected an integer");
    bad_input(s, "{\"i64\":\"01\"}", "i64: expected an integer");
    bad_input(s, "{\"i64\":\"0x10\"}", "i64: expected an integer");
    bad_input(s, "{\"i64\":true}", "i64: expected an integer");
    bad_input(s, "{\"i64\":[1]}", "i64: expected an integer");
    /* beyond jansson's long long as a bare number: refused as JSON, with the advice */
    refuse(s, "{\"u64\":18446744073709551615}", CX_ERR_INVALID_ARGUMENT,
           "write 64-bit integers as strings");
    const ProtobufCMessageDescriptor *sm = &credex__v1__secret_metadata__descriptor;
    canonical_is(sm, "{\"createdAtMs\":1700000000000,\"currentVersion\":\"2\"}",
                 "{\"currentVersion\":2,\"createdAtMs\":\"1700000000000\"}");
}

static void test_floats_and_bools(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *s = &pjsontest__scalars__descriptor;
    canonical_is(s, "{\"flt\":\"NaN\",\"dbl\":\"-Infinity\"}",
                 "{\"flt\":\"NaN\",\"dbl\":\"-Infinity\"}");
    canonical_is(s, "{\"flt\":1,\"dbl\":\"2.5e-3\"}",
                 "{\"flt\":1.0,\"dbl\":0.0025000000000000001}");
    canonical_is(s, "{\"dbl\":-0.0}", "{}");
    canonical_is(s, "{\"flag\":true}", "{\"flag\":true}");
    bad_input(s, "{\"flt\":1e39}", "flt: number out of range");
    bad_input(s, "{\"dbl\":\"1e999\"}", "dbl: number out of range");
    bad_input(s, "{\"dbl\":\"nan\"}", "dbl: expected a number");
    bad_input(s, "{\"dbl\":true}", "dbl: expected a number");
    bad_input(s, "{\"flag\":\"true\"}", "flag: expected true or false");
    bad_input(s, "{\"flag\":1}", "flag: expected true or false");
}

static void test_bytes_base64(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = &credex__v1__create_secret_request__descriptor;
    rpc_arena_t *arena = rpc_arena_new(1024);
    static const struct {
        const char *in;
        const char *bytes;
        size_t len;
    } ok[] = {
        {"\"QQ==\"", "A", 1},
        {"\"QQ\"", "A", 1},
        {"\"QUI=\"", "AB", 2},
        {"\"QUI\"", "AB", 2},
        {"\"QUJD\"", "ABC", 3},
        {"\"+/+/\"", "\xfb\xff\xbf", 3},
        {"\"-_-_\"", "\xfb\xff\xbf", 3},
        {"\"-_8=\"", "\xfb\xff", 2},
        {"\"\"", "", 0},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char text[64];
        snprintf(text, sizeof text, "{\"value\":%s}", ok[i].in);
        Credex__V1__CreateSecretRequest *r = (void *)decode(arena, d, text);
        assert_int_equal(r->value.len, ok[i].len);
        if (ok[i].len > 0)
            assert_memory_equal(r->value.data, ok[i].bytes, ok[i].len);
    }
    /* output: standard alphabet with padding, whatever came in */
    canonical_is(d, "{\"value\":\"-_8\"}", "{\"value\":\"+/8=\"}");
    canonical_is(d, "{\"value\":\"QQ\"}", "{\"value\":\"QQ==\"}");
    const char *bad[] = {"\"Q\"",        "\"QQ=\"",  "\"QQ===\"", "\"Q===\"",
                         "\"+_8=\"",     "\"QR==\"", "\"QUJ=\"",  "\"QU J\"",
                         "\"QQ==QQ==\"", "\"*A==\"", "12",        "[\"QQ==\"]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[64];
        snprintf(text, sizeof text, "{\"value\":%s}", bad[i]);
        bad_input(d, text, "value: ");
    }
    rpc_arena_free(arena);
}

static void test_enums(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = &credex__v1__secret_metadata__descriptor;
    canonical_is(d, "{\"kind\":\"SECRET_KIND_TOKEN\"}", "{\"kind\":\"SECRET_KIND_TOKEN\"}");
    canonical_is(d, "{\"kind\":2}", "{\"kind\":\"SECRET_KIND_TOKEN\"}");
    canonical_is(d, "{\"kind\":0}", "{}");
    /* proto3 enums are open: an unnamed number stays a number */
    canonical_is(d, "{\"kind\":99}", "{\"kind\":99}");
    bad_input(d, "{\"kind\":\"SECRET_KIND_NOPE\"}", "kind: unknown enum value name");
    bad_input(d, "{\"kind\":\"api_key\"}", "kind: unknown enum value name");
    bad_input(d, "{\"kind\":\"2\"}", "kind: unknown enum value name");
    bad_input(d, "{\"kind\":2.5}", "kind: expected an integer");
    bad_input(d, "{\"kind\":2147483648}", "kind: integer out of range");
    bad_input(d, "{\"kind\":true}", "kind: expected an enum value name or number");
    bad_input(d, "{\"owner\":{\"ownerType\":\"SECRET_KIND_TOKEN\"}}",
              "owner.ownerType: unknown enum value name");
}

static void test_maps(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *rc = &credex__v1__resource_context__descriptor;
    canonical_is(rc, "{\"attributes\":{\"b\":\"2\",\"a\":\"1\",\"\\u00e9\":\"3\",\"A\":\"\"}}",
                 "{\"attributes\":{\"A\":\"\",\"a\":\"1\",\"b\":\"2\",\"\xc3\xa9\":\"3\"}}");
    bad_input(rc, "{\"attributes\":[]}", "attributes: expected an object");
    bad_input(rc, "{\"attributes\":{\"a\":null}}", "attributes (a map value): null");
    bad_input(rc, "{\"attributes\":{\"a\":1}}", "attributes (a map value): expected a string");
    bad_input(rc, "{\"attributes\":{\"a\":\"x\",\"a\":\"y\"}}", "duplicate key");
    const ProtobufCMessageDescriptor *mp = &pjsontest__maps__descriptor;
    canonical_is(mp,
                 "{\"byId\":{\"10\":\"x\",\"-2\":\"y\",\"9\":\"z\"},\"byFlag\":{\"true\":1,"
                 "\"false\":2},\"by_color\":{\"-1\":\"COLOR_RED\",\"5\":2},\"byNum\":{\"4\":{}},"
                 "\"byBig\":{\"18446744073709551615\":1.5}}",
                 "{\"byId\":{\"-2\":\"y\",\"9\":\"z\",\"10\":\"x\"},\"byNum\":{\"4\":{}},"
                 "\"byFlag\":{\"false\":2,\"true\":1},\"byColor\":{\"-1\":\"COLOR_RED\","
                 "\"5\":\"COLOR_GREEN\"},\"byBig\":{\"18446744073709551615\":1.5}}");
    bad_input(mp, "{\"byId\":{\"01\":\"x\"}}", "byId: a map key is not a decimal integer");
    bad_input(mp, "{\"byId\":{\"-0\":\"x\"}}", "byId: a map key is not a decimal integer");
    bad_input(mp, "{\"byId\":{\"1e2\":\"x\"}}", "byId: a map key is not a decimal integer");
    bad_input(mp, "{\"byNum\":{\"-1\":{}}}", "byNum: a map key is out of range");
    bad_input(mp, "{\"byNum\":{\"4294967296\":{}}}", "byNum: a map key is out of range");
    bad_input(mp, "{\"byFlag\":{\"True\":1}}", "byFlag: a map key is not true or false");
    bad_input(mp, "{\"byNum\":{\"4\":{\"i32\":\"x\"}}}", "byNum (a map value).i32: expected");
    bad_input(mp, "{\"blobs\":{\"k\":\"Q\"}}", "blobs (a map value): not valid base64");
}

static void test_oneof_and_recursion(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *n = &pjsontest__node__descriptor;
    canonical_is(n, "{\"label\":\"\"}", "{\"label\":\"\"}"); /* selected: written even if "" */
    canonical_is(n, "{\"count\":\"0\",\"label\":null}", "{\"count\":\"0\"}");
    canonical_is(n, "{\"detail\":{}}", "{\"detail\":{}}");
    bad_input(n, "{\"label\":\"a\",\"count\":1}", "count: more than one field of the same oneof");
    bad_input(n, "{\"child\":{\"detail\":{},\"label\":\"x\"}}",
              "child.label: more than one field of the same oneof");
    canonical_is(n, "{\"children\":[{\"name\":\"a\"},{}],\"child\":{\"child\":{\"count\":5}}}",
                 "{\"child\":{\"child\":{\"count\":\"5\"}},\"children\":[{\"name\":\"a\"},{}]}");
    bad_input(n, "{\"children\":[{},null]}", "children[1]: null is not a valid array element");
    bad_input(n, "{\"children\":[{},{\"child\":{\"nope\":1}}]}",
              "children[1].child: unknown field");
    const ProtobufCMessageDescriptor *rq =
        &grpc__reflection__v1__server_reflection_request__descriptor;
    canonical_is(rq, "{\"host\":\"h\",\"file_containing_symbol\":\"credex.v1.Secrets\"}",
                 "{\"host\":\"h\",\"fileContainingSymbol\":\"credex.v1.Secrets\"}");
    bad_input(rq, "{\"listServices\":\"\",\"fileByFilename\":\"x\"}", "more than one field");
}

static void test_proto2_presence(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *l = &pjsontest2__legacy__descriptor;
    /* present at their defaults: written; absent: not */
    canonical_is(l, "{\"id\":\"\",\"count\":0,\"note\":\"none\",\"ratio\":0.5,\"blob\":\"\"}",
                 "{\"id\":\"\",\"count\":0,\"note\":\"none\",\"blob\":\"\",\"ratio\":0.5}");
    canonical_is(l, "{\"id\":\"x\",\"next\":{\"id\":\"y\"}}",
                 "{\"id\":\"x\",\"next\":{\"id\":\"y\"}}");
    bad_input(l, "{\"count\":1}", "id: required field missing");
    bad_input(l, "{\"id\":null}", "id: required field missing");
    bad_input(l, "{\"id\":\"x\",\"next\":{}}", "next.id: required field missing");
    rpc_arena_t *arena = rpc_arena_new(1024);
    Pjsontest2__Legacy *m = (void *)decode(arena, l, "{\"id\":\"x\"}");
    assert_false(m->has_count);
    assert_string_equal(m->note, "none"); /* the proto2 default, not present */
    char *out = encode(&m->base, PJSON_EMIT_DEFAULTS);
    /* absent fields with explicit presence are null, as protojson writes them */
    assert_string_equal(out, "{\"id\":\"x\",\"count\":null,\"note\":null,\"blob\":null,"
                             "\"ratio\":null,\"next\":null,\"marks\":[]}");
    text_free(out);
    rpc_arena_free(arena);
}

static void test_unknown_fields(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = &credex__v1__retrieve_request__descriptor;
    const char *text = "{\"secretRef\":\"s\",\"extra\":{\"deep\":[1,2]},\"resourceContext\":{"
                       "\"resourceId\":\"r\",\"color\":\"blue\"}}";
    bad_input(d, text, "unknown field (credex.v1.RetrieveRequest has no such field)");
    bad_input(d, "{\"resourceContext\":{\"nope\":1}}",
              "resourceContext: unknown field (credex.v1.ResourceContext has no such field)");
    rpc_arena_t *arena = rpc_arena_new(1024);
    pjson_options_t o = {.flags = PJSON_IGNORE_UNKNOWN};
    cx_error_t err;
    ProtobufCMessage *m = decode_opts(arena, d, text, &o, &err);
    assert_non_null(m);
    char *out = encode(m, 0);
    assert_string_equal(out, "{\"secretRef\":\"s\",\"resourceContext\":{\"resourceId\":\"r\"}}");
    text_free(out);
    rpc_arena_free(arena);
    bad_input(d, "{\"secretRef\":\"a\",\"secretRef\":\"b\"}", "duplicate key");
    bad_input(d, "{\"resourceContext\":{\"resourceId\":\"a\",\"resourceId\":\"a\"}}",
              "duplicate key");
}

static void test_wrong_types(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = &credex__v1__create_secret_request__descriptor;
    bad_input(d, "[]", "expected a JSON object");
    bad_input(d, "{\"displayName\":5}", "displayName: expected a string");
    bad_input(d, "{\"displayName\":{}}", "displayName: expected a string");
    bad_input(d, "{\"allowedUses\":\"x\"}", "allowedUses: expected an array");
    bad_input(d, "{\"allowedUses\":[\"x\",7]}", "allowedUses[1]: expected a string");
    bad_input(d, "{\"owner\":\"alice\"}", "owner: expected an object");
    bad_input(d, "{\"owner\":[]}", "owner: expected an object");
    bad_input(d, "{\"owner\":{\"ownerId\":false}}", "owner.ownerId: expected a string");
    bad_input(d, "{\"value\":null,\"kind\":{}}", "kind: expected an enum value name or number");
    refuse(d, "", CX_ERR_INVALID_ARGUMENT, "invalid JSON at line");
    refuse(d, "{\"a\":", CX_ERR_INVALID_ARGUMENT, "unexpected end of input");
    refuse(d, "{} {}", CX_ERR_INVALID_ARGUMENT, "text after the JSON value");
    refuse(d, "{'a':1}", CX_ERR_INVALID_ARGUMENT, "syntax error");
}

static void test_limits(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *n = &pjsontest__node__descriptor;
    char text[2048];
    size_t len = 0;
    /* a chain of 32 nested objects passes the default limit; 33 does not */
    for (int depth = 32; depth <= 33; depth++) {
        len = 0;
        for (int i = 1; i < depth; i++)
            len += (size_t)snprintf(text + len, sizeof text - len, "{\"child\":");
        len += (size_t)snprintf(text + len, sizeof text - len, "{}");
        for (int i = 1; i < depth; i++)
            text[len++] = '}';
        text[len] = '\0';
        if (depth == 32) {
            rpc_arena_t *arena = rpc_arena_new(1024);
            ProtobufCMessage *m = decode(arena, n, text);
            /* and the output side has the same limit */
            char *out = encode(m, 0);
            assert_string_equal(out, text);
            text_free(out);
            rpc_arena_free(arena);
        } else {
            bad_input(n, text, "JSON nesting deeper than 32");
        }
    }
    /* arrays count as a level too; the limit is the caller's */
    pjson_options_t o = {.max_depth = 2};
    cx_error_t err;
    rpc_arena_t *arena = rpc_arena_new(1024);
    assert_non_null(decode_opts(arena, n, "{\"child\":{}}", &o, &err));
    assert_null(decode_opts(arena, n, "{\"children\":[{}]}", &o, &err));
    assert_string_equal(err.message, "JSON nesting deeper than 2");
    /* brackets inside strings are not nesting */
    assert_non_null(decode_opts(arena, n, "{\"name\":\"[[[[{{{{\\\"[[\"}", &o, &err));
    /* from a jansson tree (no text): checked while walking, with the path */
    json_t *deep = json_pack("{s:{s:{s:{}}}}", "child", "child", "child");
    ProtobufCMessage *m = NULL;
    assert_false(pjson_from_value(&m, n, deep, NULL, &o, &err));
    assert_null(m);
    assert_string_equal(err.message, "child.child: nesting deeper than 2");
    json_decref(deep);
    /* encoding a message deeper than the limit fails too */
    Pjsontest__Node a = PJSONTEST__NODE__INIT, b = PJSONTEST__NODE__INIT, c = PJSONTEST__NODE__INIT;
    a.child = &b;
    b.child = &c;
    char *out = NULL;
    size_t outlen = 0;
    assert_false(pjson_encode(&out, &outlen, &a.base, &o, &err));
    assert_null(out);
    assert_string_equal(err.message, "child.child: nesting deeper than 2");
    /* a caller's limit is clamped, so the recursion stays bounded */
    pjson_options_t deep_ok = {.max_depth = 1000000};
    len = 0;
    for (int i = 1; i < 101; i++)
        len += (size_t)snprintf(text + len, sizeof text - len, "{\"child\":");
    len += (size_t)snprintf(text + len, sizeof text - len, "{}");
    for (int i = 1; i < 101; i++)
        text[len++] = '}';
    text[len] = '\0';
    assert_null(decode_opts(arena, n, text, &deep_ok, &err));
    assert_string_equal(err.message, "JSON nesting deeper than 100");
    /* size */
    pjson_options_t small = {.max_bytes = 16};
    assert_null(decode_opts(arena, n, "{\"name\":\"0123456789\"}", &small, &err));
    assert_int_equal(err.code, CX_ERR_RESOURCE_EXHAUSTED);
    assert_string_equal(err.message, "JSON text larger than 16 bytes");
    assert_non_null(decode_opts(arena, n, "{\"name\":\"01234\"}", &small, &err));
    /* the default size limit */
    size_t big = PJSON_DEFAULT_MAX_BYTES + 1;
    char *huge = malloc(big + 1);
    memset(huge, ' ', big);
    memcpy(huge, "{}", 2);
    huge[big] = '\0';
    ProtobufCAllocator al = rpc_arena_allocator(arena);
    assert_false(pjson_decode(&m, n, huge, big, &al, NULL, &err));
    assert_int_equal(err.code, CX_ERR_RESOURCE_EXHAUSTED);
    assert_true(pjson_decode(&m, n, huge, big - 1, &al, NULL, &err));
    free(huge);
    rpc_arena_free(arena);
}

static void test_utf8(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = &credex__v1__owner__descriptor;
    canonical_is(d, "{\"ownerId\":\"\\u00e9\\ud83d\\ude00\"}",
                 "{\"ownerId\":\"\xc3\xa9\xf0\x9f\x98\x80\"}");
    bad_input(d, "{\"ownerId\":\"\xff\"}", "invalid UTF-8");
    bad_input(d, "{\"ownerId\":\"\xc0\xaf\"}", "invalid UTF-8");     /* overlong */
    bad_input(d, "{\"ownerId\":\"\xed\xa0\x80\"}", "invalid UTF-8"); /* surrogate */
    bad_input(d, "{\"ownerId\":\"a\\u0000b\"}", "NUL in a string");
    bad_input(d, "{\"owner\\u0000Id\":\"x\"}", "NUL in a string");
    /* trees built without jansson's checks are checked too */
    const char *bads[] = {"\xff", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                          "a\0b", "\xe2\x82"};
    const size_t lens[] = {1, 2, 3, 4, 3, 2};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        json_t *v = json_object();
        json_object_set_new(v, "ownerId", json_stringn_nocheck(bads[i], lens[i]));
        ProtobufCMessage *m = NULL;
        cx_error_t err;
        assert_false(pjson_from_value(&m, d, v, NULL, NULL, &err));
        assert_string_equal(err.message, "ownerId: string is not valid UTF-8 or contains NUL");
        json_decref(v);
    }
    /* a string field that is not UTF-8 cannot be written as JSON */
    Credex__V1__Owner o = CREDEX__V1__OWNER__INIT;
    o.owner_id = "bad\xff";
    char *out = NULL;
    size_t len = 0;
    cx_error_t err;
    assert_false(pjson_encode(&out, &len, &o.base, NULL, &err));
    assert_string_equal(err.message, "ownerId: string is not valid UTF-8");
    Credex__V1__ResourceContext rc = CREDEX__V1__RESOURCE_CONTEXT__INIT;
    Credex__V1__ResourceContext__AttributesEntry e =
        CREDEX__V1__RESOURCE_CONTEXT__ATTRIBUTES_ENTRY__INIT;
    Credex__V1__ResourceContext__AttributesEntry *es[] = {&e};
    e.key = "k\xff";
    e.value = "v";
    rc.n_attributes = 1;
    rc.attributes = es;
    assert_false(pjson_encode(&out, &len, &rc.base, NULL, &err));
    assert_string_equal(err.message, "attributes: a map key is not valid UTF-8");
}

/* Errors name the path and never contain the offending value (nor a key). */
static void test_errors_do_not_echo_input(void **state)
{
    (void)state;
    const char *secret = "sk-live-DO-NOT-ECHO-1234";
    /* the secret goes between the two halves of each shape */
    const char *shapes[][2] = {
        {"{\"value\":\"", "!\"}"},
        {"{\"kind\":\"", "\"}"},
        {"{\"", "\":1}"},
        {"{\"owner\":{\"ownerId\":[\"", "\"]}}"},
        {"{\"allowedUses\":[\"", "\",1]}"},
        {"{\"displayName\":\"", "\",\"displayName\":\"x\"}"},
        {"{\"value\":\"", "\" garbage}"},
        {"{\"description\":\"", "\xff\"}"},
        {"{\"displayName\":\"", "\\u0000\"}"},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "%s%s%s", shapes[i][0], secret, shapes[i][1]);
        rpc_arena_t *arena = rpc_arena_new(1024);
        cx_error_t err = {0};
        assert_null(
            decode_opts(arena, &credex__v1__create_secret_request__descriptor, text, NULL, &err));
        assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
        if (strstr(err.message, "DO-NOT-ECHO") != NULL || strstr(err.message, "sk-live") != NULL)
            fail_msg("echoed: %s", err.message);
        rpc_arena_free(arena);
    }
    rpc_arena_t *arena = rpc_arena_new(1024);
    cx_error_t err = {0};
    assert_null(decode_opts(arena, &credex__v1__resource_context__descriptor,
                            "{\"attributes\":{\"sk-live-key\":3}}", NULL, &err));
    assert_null(strstr(err.message, "sk-live"));
    rpc_arena_free(arena);
}

/* ---- wiping ------------------------------------------------------------------------------ */

/* An allocator that, on free, looks for a marker in the block being freed. */
typedef struct spy {
    const char *marker;
    size_t found;  /* freed blocks that still held the marker */
    size_t blocks; /* live blocks */
} spy_t;

static void *spy_alloc(void *ud, size_t n)
{
    spy_t *s = ud;
    size_t *p = malloc(n + 16);
    if (p == NULL)
        return NULL;
    p[0] = n;
    s->blocks++;
    return (char *)p + 16;
}

static bool holds(const void *p, size_t n, const char *marker)
{
    size_t m = strlen(marker);
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp((const char *)p + i, marker, m) == 0)
            return true;
    return false;
}

static void spy_free(void *ud, void *q)
{
    spy_t *s = ud;
    if (q == NULL)
        return;
    size_t *p = (size_t *)((char *)q - 16);
    if (holds(q, p[0], s->marker))
        s->found++;
    s->blocks--;
    free(p);
}

static void test_decoded_material_is_wiped(void **state)
{
    (void)state;
    /* base64 of "marker:sk-WIPE-ME-0123456789" */
    const char *text = "{\"value\":\"bWFya2VyOnNrLVdJUEUtTUUtMDEyMzQ1Njc4OQ==\","
                       "\"displayName\":\"marker:sk-WIPE-ME-name\",\"allowedUses\":[\"marker:sk-"
                       "WIPE-ME-use\"],\"owner\":{\"ownerId\":\"marker:sk-WIPE-ME-owner\"}}";
    spy_t spy = {.marker = "sk-WIPE-ME"};
    ProtobufCAllocator a = {.alloc = spy_alloc, .free = spy_free, .allocator_data = &spy};
    ProtobufCMessage *m = NULL;
    cx_error_t err;
    assert_true(pjson_decode(&m, &credex__v1__create_secret_request__descriptor, text, strlen(text),
                             &a, NULL, &err));
    Credex__V1__CreateSecretRequest *r = (void *)m;
    assert_int_equal(r->value.len, strlen("marker:sk-WIPE-ME-0123456789"));
    assert_memory_equal(r->value.data, "marker:sk-WIPE-ME-0123456789", r->value.len);
    assert_true(spy.blocks > 0);
    pjson_message_free(m, &a);
    assert_int_equal(spy.blocks, 0);
    assert_int_equal(spy.found, 0);
    /* a failure after the value was decoded wipes it too */
    const char *late = "{\"value\":\"bWFya2VyOnNrLVdJUEUtTUUtMDEyMzQ1Njc4OQ==\","
                       "\"displayName\":\"marker:sk-WIPE-ME-name\",\"kind\":\"NOPE\"}";
    m = NULL;
    assert_false(pjson_decode(&m, &credex__v1__create_secret_request__descriptor, late,
                              strlen(late), &a, NULL, &err));
    assert_null(m);
    assert_string_equal(err.message, "kind: unknown enum value name");
    assert_int_equal(spy.blocks, 0);
    assert_int_equal(spy.found, 0);
    /* pjson_message_free also serves messages unpacked by protobuf-c */
    Credex__V1__RetrieveResponse rr = CREDEX__V1__RETRIEVE_RESPONSE__INIT;
    rr.secret_id = "marker:sk-WIPE-ME-id";
    rr.value.data = (uint8_t *)"marker:sk-WIPE-ME-value";
    rr.value.len = strlen((const char *)rr.value.data);
    uint8_t buf[128];
    size_t n = protobuf_c_message_pack(&rr.base, buf);
    m = protobuf_c_message_unpack(&credex__v1__retrieve_response__descriptor, &a, n, buf);
    assert_non_null(m);
    pjson_message_free(m, &a);
    assert_int_equal(spy.blocks, 0);
    assert_int_equal(spy.found, 0);
    pjson_message_free(NULL, &a);
    /* plain malloc/free (NULL allocator): ASan's leak check sees that all of it is freed */
    assert_true(pjson_decode(&m, &credex__v1__create_secret_request__descriptor, text, strlen(text),
                             NULL, NULL, &err));
    pjson_message_free(m, NULL);
    assert_false(pjson_decode(&m, &credex__v1__create_secret_request__descriptor, late,
                              strlen(late), NULL, NULL, &err));
}

/* jansson blocks, seen through its allocator hooks: the tree pjson_encode builds holds the
 * base64 of bytes fields, and must be wiped before jansson frees it. */
static spy_t *jspy;
static void *jspy_malloc(size_t n)
{
    return spy_alloc(jspy, n);
}
static void jspy_free(void *p)
{
    spy_free(jspy, p);
}

static void test_encoded_material_is_wiped(void **state)
{
    (void)state;
    Credex__V1__RetrieveResponse rr = CREDEX__V1__RETRIEVE_RESPONSE__INIT;
    rr.secret_id = "s1";
    rr.value.data = (uint8_t *)"marker:sk-WIPE-ME-0123456789";
    rr.value.len = strlen((const char *)rr.value.data);
    spy_t spy = {.marker = "bWFya2VyOnNrLVdJUEUtTUUtMDEyMzQ1Njc4OQ"};
    jspy = &spy;
    json_set_alloc_funcs(jspy_malloc, jspy_free);
    char *text = NULL;
    size_t len = 0;
    cx_error_t err;
    bool ok = pjson_encode(&text, &len, &rr.base, NULL, &err);
    json_t *v = NULL;
    bool ok2 = pjson_to_value(&v, &rr.base, NULL, &err);
    pjson_value_free(v);
    size_t blocks = spy.blocks, found = spy.found;
    json_set_alloc_funcs(malloc, free);
    jspy = NULL;
    assert_true(ok && ok2);
    assert_int_equal(blocks, 0);
    assert_int_equal(found, 0);
    assert_string_equal(text, "{\"secretId\":\"s1\",\"value\":\""
                              "bWFya2VyOnNrLVdJUEUtTUUtMDEyMzQ1Njc4OQ==\"}");
    pjson_text_free(text, len);
    pjson_text_free(NULL, 0);
    pjson_value_free(NULL);
}

static void test_jansson_wipe_frees(void **state)
{
    (void)state;
    json_malloc_t m0, m1;
    json_free_t f0, f1;
    json_get_alloc_funcs(&m0, &f0);
    pjson_jansson_wipe_frees();
    pjson_jansson_wipe_frees(); /* idempotent */
    json_get_alloc_funcs(&m1, &f1);
    assert_true(f1 != f0);
    /* jansson works on, and frees blocks it allocated before the switch */
    rpc_arena_t *arena = rpc_arena_new(1024);
    ProtobufCMessage *m = decode(arena, &credex__v1__create_secret_request__descriptor,
                                 "{\"value\":\"QUJD\",\"allowedUses\":[\"a\",\"b\"]}");
    assert_int_equal(((Credex__V1__CreateSecretRequest *)m)->value.len, 3);
    rpc_arena_free(arena);
    json_set_alloc_funcs(m0, f0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_names),
        cmocka_unit_test(test_map_entries),
        cmocka_unit_test(test_golden_secret_metadata),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_round_trip_every_message),
        cmocka_unit_test(test_names_on_input),
        cmocka_unit_test(test_int64_and_integers),
        cmocka_unit_test(test_floats_and_bools),
        cmocka_unit_test(test_bytes_base64),
        cmocka_unit_test(test_enums),
        cmocka_unit_test(test_maps),
        cmocka_unit_test(test_oneof_and_recursion),
        cmocka_unit_test(test_proto2_presence),
        cmocka_unit_test(test_unknown_fields),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_errors_do_not_echo_input),
        cmocka_unit_test(test_decoded_material_is_wiped),
        cmocka_unit_test(test_encoded_material_is_wiped),
        cmocka_unit_test(test_jansson_wipe_frees),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
