/*
 * edge_openapi: the OpenAPI 3.1 document, walked out of the route table and the descriptors
 * (see edge_openapi.h). Everything the document states is computed from the sources the edge
 * itself runs on: the routes and their bindings (edge_routes.c), the JSON mapping's names and
 * map entries (common/pjson), the input contract's rules and required fields
 * (common/contract), the HTTP status of every reason code (common/error) and of every refusal
 * the edge answers itself (edge_guard.c). The only knowledge of its own is which requests each
 * refusal can meet (refusal_scope) and the headers edge_http.c writes on every answer.
 */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/contract/cx_contract.h"
#include "common/pjson/pjson.h"
#include "services/edge/edge_internal.h"
#include "services/edge/edge_openapi.h"

#ifndef CREDEX_VERSION
#error "CREDEX_VERSION (the project version) must be defined by the build"
#endif

#define REF_SCHEMAS   "#/components/schemas/"
#define REF_RESPONSES "#/components/responses/"
#define REF_HEADERS   "#/components/headers/"

/* cx_contract.h: a request string without a rule is single-line text of at most 1024
 * characters, bytes without a rule at most 1024 bytes; the walker allows a repeated field
 * without a rule 1000 entries. */
#define FALLBACK_TEXT_MAX  1024
#define FALLBACK_BYTES_MAX 1024
#define FALLBACK_ITEMS_MAX 1000

/* Characters the contract refuses in text (cx_contract.h): C0 and C1 controls, DEL, line and
 * paragraph separators, bidi embeddings, overrides and isolates; multi-line text allows TAB
 * and LF. As ECMA-262 patterns (the dialect of OpenAPI 3.1). */
#define TEXT_PATTERN      "^[^\\x00-\\x1F\\x7F-\\x9F\\u2028-\\u202E\\u2066-\\u2069]*$"
#define MULTILINE_PATTERN "^[^\\x00-\\x08\\x0B-\\x1F\\x7F-\\x9F\\u2028-\\u202E\\u2066-\\u2069]*$"

/* Canonical base64 as pjson_encode writes bytes: standard alphabet, padded, unused bits zero
 * (pjson also reads unpadded and URL-safe forms; the document gives the one it writes). */
#define BASE64_PATTERN                                                                             \
    "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$"

/* 64-bit integers are decimal strings (the proto3 JSON mapping). */
#define INT64_PATTERN  "^-?(?:0|[1-9][0-9]{0,18})$"
#define UINT64_PATTERN "^(?:0|[1-9][0-9]{0,19})$"

/* ---- building blocks ------------------------------------------------------------------------ */

typedef struct gen {
    json_t *schemas; /* components.schemas under construction: name -> schema */
    json_t *owner;   /* component name -> full proto name, to refuse two types of one name */
    json_t *request; /* full names of the message types a request body can carry */
    cx_error_t *err;
    bool failed; /* err is set (or out of memory: set at the end) */
    bool oom;
} gen_t;

static bool gen_fail(gen_t *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool gen_fail(gen_t *g, const char *fmt, ...)
{
    if (!g->failed) {
        char msg[CX_ERROR_MESSAGE_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        cx_error_set(g->err, CX_ERR_INTERNAL, "openapi: %s", msg);
        g->failed = true;
    }
    return false;
}

/* obj[key] = v, taking v; records running out of memory (a NULL v included). */
static void put(gen_t *g, json_t *obj, const char *key, json_t *v)
{
    if (v == NULL || obj == NULL || json_object_set_new(obj, key, v) != 0) {
        json_decref(v);
        g->oom = true;
    }
}

static void push(gen_t *g, json_t *arr, json_t *v)
{
    if (v == NULL || arr == NULL || json_array_append_new(arr, v) != 0) {
        json_decref(v);
        g->oom = true;
    }
}

static void put_str(gen_t *g, json_t *obj, const char *key, const char *s)
{
    put(g, obj, key, json_string(s));
}

static void put_int(gen_t *g, json_t *obj, const char *key, long long v)
{
    put(g, obj, key, json_integer(v));
}

static json_t *ref_to(const char *prefix, const char *name)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "%s%s", prefix, name);
    return json_pack("{s:s}", "$ref", buf);
}

/* A message or enum name without its package ("credex.v1.Owner" -> "Owner"). */
static const char *component_name(const char *full, const char *package)
{
    size_t n = package != NULL ? strlen(package) : 0;
    if (n > 0 && strncmp(full, package, n) == 0 && full[n] == '.')
        return full + n + 1;
    return full;
}

/* Claim a component name for a proto type: the placeholder schema to fill when the name is
 * new, NULL when the type already has it (or on failure: g->failed). */
static json_t *component_claim(gen_t *g, const char *name, const char *full)
{
    json_t *who = json_object_get(g->owner, name);
    if (who != NULL) {
        if (strcmp(json_string_value(who), full) != 0)
            gen_fail(g, "two types are named %s", name);
        return NULL;
    }
    put_str(g, g->owner, name, full);
    json_t *s = json_object();
    put(g, g->schemas, name, s);
    return g->oom ? NULL : s;
}

/* ---- which requests meet which answer ------------------------------------------------------- */

/* Where a refusal of edge_guard.c can be met: on any request (probes included), on a route
 * (authenticated, with bindings), only on a route that takes a body, or on no documented
 * operation (unknown paths and methods, CORS preflights). */
enum { SCOPE_UNSET = 0, SCOPE_ANY, SCOPE_ROUTE, SCOPE_BODY, SCOPE_NONE };

static const unsigned char refusal_scope[EDGE_R_COUNT_] = {
    [EDGE_R_NONE] = SCOPE_NONE,
    [EDGE_R_CROSS_SITE] = SCOPE_ANY,
    [EDGE_R_SAME_SITE] = SCOPE_ANY,
    [EDGE_R_ORIGIN] = SCOPE_ANY,
    [EDGE_R_PREFLIGHT] = SCOPE_NONE,
    [EDGE_R_MEDIA_TYPE] = SCOPE_ANY, /* a route with a body, or any request sending one */
    [EDGE_R_BODY_TOO_LARGE] = SCOPE_BODY,
    [EDGE_R_HEADERS_TOO_LARGE] = SCOPE_ANY,
    [EDGE_R_TIMEOUT] = SCOPE_BODY,
    [EDGE_R_NOT_FOUND] = SCOPE_NONE,
    [EDGE_R_METHOD] = SCOPE_NONE,
    [EDGE_R_UNEXPECTED_BODY] = SCOPE_ANY,
    [EDGE_R_FRAMING] = SCOPE_ANY,
    [EDGE_R_DUPLICATE_HEADER] = SCOPE_ANY,
    [EDGE_R_UNAUTHENTICATED] = SCOPE_ROUTE,
    [EDGE_R_BAD_REQUEST] = SCOPE_ROUTE,
};

#define STATUS_MIN 100
#define STATUS_MAX 599

/* Per HTTP status: the reason codes it carries, and the scopes in which it can be answered. */
typedef struct statuses {
    unsigned codes[STATUS_MAX + 1];  /* bit (1u << cx_code_t) */
    unsigned scopes[STATUS_MAX + 1]; /* bit (1u << SCOPE_*) */
} statuses_t;

_Static_assert(CX_CODE_COUNT_ <= 32, "reason codes fit a bit set");

static bool statuses_collect(gen_t *g, statuses_t *st)
{
    memset(st, 0, sizeof(*st));
    /* Every reason code the gateway can answer, at the status of the taxonomy. */
    for (int c = 1; c < CX_CODE_COUNT_; c++) {
        int s = cx_code_http_status((cx_code_t)c);
        if (s < STATUS_MIN || s > STATUS_MAX)
            return gen_fail(g, "reason %s has no HTTP status", cx_code_reason((cx_code_t)c));
        st->codes[s] |= 1u << c;
        st->scopes[s] |= 1u << SCOPE_ROUTE;
    }
    for (int r = 1; r < EDGE_R_COUNT_; r++) {
        const edge_refusal_info_t *info = edge_refusal((edge_refusal_t)r);
        if (refusal_scope[r] == SCOPE_UNSET)
            return gen_fail(g, "the edge refusal %s has no scope", info->name);
        if (refusal_scope[r] == SCOPE_NONE)
            continue;
        if (info->status < STATUS_MIN || info->status > STATUS_MAX)
            return gen_fail(g, "the edge refusal %s has no HTTP status", info->name);
        st->codes[info->status] |= 1u << info->code;
        st->scopes[info->status] |= 1u << refusal_scope[r];
    }
    /* /readyz answers unavailable when the gateway does not; the document's own route answers
     * feature_disabled while the feature is off. Both statuses are among the routes' already. */
    st->codes[cx_code_http_status(CX_ERR_UNAVAILABLE)] |= 1u << CX_ERR_UNAVAILABLE;
    st->codes[cx_code_http_status(CX_ERR_FEATURE_DISABLED)] |= 1u << CX_ERR_FEATURE_DISABLED;
    return true;
}

/* ---- schemas of values ---------------------------------------------------------------------- */

static json_t *message_ref(gen_t *g, const ProtobufCMessageDescriptor *d);

static json_t *enum_ref(gen_t *g, const ProtobufCEnumDescriptor *ed)
{
    const char *name = component_name(ed->name, ed->package_name);
    json_t *s = component_claim(g, name, ed->name);
    if (s != NULL) {
        json_t *names = json_array();
        for (unsigned i = 0; i < ed->n_values; i++)
            push(g, names, json_string(ed->values[i].name));
        put_str(g, s, "type", "string");
        put(g, s, "enum", names);
    }
    return ref_to(REF_SCHEMAS, name);
}

/* An enum field: its type, without the zero value when the contract requires the field (zero
 * is "absent" in proto3). */
static json_t *enum_schema(gen_t *g, const ProtobufCEnumDescriptor *ed, bool required)
{
    json_t *ref = enum_ref(g, ed);
    const ProtobufCEnumValue *zero = protobuf_c_enum_descriptor_get_value(ed, 0);
    if (!required || zero == NULL)
        return ref;
    json_t *s = json_object();
    json_t *all = json_array();
    push(g, all, ref);
    put(g, s, "allOf", all);
    put(g, s, "not", json_pack("{s:s}", "const", zero->name));
    return s;
}

/* A regular-expression character class of a contract alphabet ("a-z0-9_-": "a-z0-9_\-"). */
static void alphabet_class(const char *alpha, char *buf, size_t bufsz)
{
    size_t o = 0;
    for (const char *a = alpha; *a != '\0' && o + 8 < bufsz; a++) {
        bool range = a[1] == '-' && a[2] != '\0';
        for (int k = 0; k < (range ? 3 : 1); k++) {
            char c = a[k];
            if (k != 1 && strchr("\\]^-[", c) != NULL)
                buf[o++] = '\\';
            buf[o++] = c;
        }
        if (range)
            a += 2;
    }
    buf[o] = '\0';
}

/* A string under a contract rule (NULL: no rule applies). Required means non-empty: the
 * contract reads an empty string as absent. */
static json_t *string_schema(gen_t *g, const cx_contract_rule_t *r, bool required)
{
    json_t *s = json_object();
    put_str(g, s, "type", "string");
    if (r == NULL)
        return s;
    size_t min = required ? (r->min > 0 ? r->min : 1) : 0;
    if (r->cls == CX_CONTRACT_ID) {
        char cls[128], pat[192];
        alphabet_class(r->alphabet, cls, sizeof(cls));
        if (min == 0 && r->min > 1) /* empty, or within the rule's length */
            snprintf(pat, sizeof(pat), "^(?:[%s]{%zu,%zu})?$", cls, r->min, r->max);
        else
            snprintf(pat, sizeof(pat), "^[%s]*$", cls);
        put_str(g, s, "pattern", pat);
    } else {
        put_str(g, s, "pattern",
                r->cls == CX_CONTRACT_MULTILINE ? MULTILINE_PATTERN : TEXT_PATTERN);
    }
    if (min > 0)
        put_int(g, s, "minLength", (long long)min);
    put_int(g, s, "maxLength", (long long)r->max);
    return s;
}

static json_t *bytes_schema(gen_t *g, size_t max, bool constrained, bool required)
{
    json_t *s = json_object();
    put_str(g, s, "type", "string");
    put_str(g, s, "contentEncoding", "base64");
    put_str(g, s, "pattern", BASE64_PATTERN);
    if (constrained) {
        if (required)
            put_int(g, s, "minLength", 4);
        put_int(g, s, "maxLength", (long long)(4 * ((max + 2) / 3)));
    }
    return s;
}

static json_t *integer_schema(gen_t *g, const char *format, long long min, long long max)
{
    json_t *s = json_object();
    put_str(g, s, "type", "integer");
    if (format != NULL)
        put_str(g, s, "format", format);
    put_int(g, s, "minimum", min);
    put_int(g, s, "maximum", max);
    return s;
}

static json_t *decimal_string_schema(gen_t *g, const char *format, const char *pattern)
{
    json_t *s = json_object();
    put_str(g, s, "type", "string");
    put_str(g, s, "format", format);
    put_str(g, s, "pattern", pattern);
    return s;
}

static json_t *float_schema(gen_t *g, const char *format)
{
    /* A number, or one of the three names the mapping writes for non-finite values. */
    json_t *num = json_pack("{s:s,s:s}", "type", "number", "format", format);
    json_t *special =
        json_pack("{s:s,s:[sss]}", "type", "string", "enum", "NaN", "Infinity", "-Infinity");
    json_t *alts = json_array();
    push(g, alts, num);
    push(g, alts, special);
    json_t *s = json_object();
    put(g, s, "oneOf", alts);
    return s;
}

/* One value of field f in a message body. r is the contract's rule when the message is
 * constrained (a request can carry it), else NULL; required as the contract means it. */
static json_t *value_schema(gen_t *g, const ProtobufCFieldDescriptor *f,
                            const cx_contract_rule_t *r, bool constrained, bool required)
{
    static const cx_contract_rule_t fallback_text = {
        .cls = CX_CONTRACT_TEXT, .max = FALLBACK_TEXT_MAX, .what = "single-line text"};
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING:
        if (constrained && (r == NULL || r->cls == CX_CONTRACT_BYTES))
            r = &fallback_text;
        return string_schema(g, constrained ? r : NULL, required);
    case PROTOBUF_C_TYPE_BYTES:
        return bytes_schema(g,
                            r != NULL && r->cls == CX_CONTRACT_BYTES ? r->max : FALLBACK_BYTES_MAX,
                            constrained, required);
    case PROTOBUF_C_TYPE_ENUM:
        return enum_schema(g, f->descriptor, constrained && required);
    case PROTOBUF_C_TYPE_MESSAGE:
        return message_ref(g, f->descriptor);
    case PROTOBUF_C_TYPE_BOOL:
        return json_pack("{s:s}", "type", "boolean");
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return integer_schema(g, "int32", INT32_MIN, INT32_MAX);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return integer_schema(g, NULL, 0, UINT32_MAX);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return decimal_string_schema(g, "int64", INT64_PATTERN);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return decimal_string_schema(g, "uint64", UINT64_PATTERN);
    case PROTOBUF_C_TYPE_FLOAT:
        return float_schema(g, "float");
    case PROTOBUF_C_TYPE_DOUBLE:
        return float_schema(g, "double");
    }
    gen_fail(g, "field %s has a type the mapping does not know", f->name);
    return NULL;
}

/* Map keys are JSON object keys: strings, integers and bools as text. */
static json_t *map_key_schema(gen_t *g, const ProtobufCFieldDescriptor *k,
                              const cx_contract_rule_t *r, bool constrained)
{
    switch (k->type) {
    case PROTOBUF_C_TYPE_STRING:
        return string_schema(g, constrained ? r : NULL, false);
    case PROTOBUF_C_TYPE_BOOL:
        return json_pack("{s:s,s:[ss]}", "type", "string", "enum", "false", "true");
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return json_pack("{s:s,s:s}", "type", "string", "pattern", UINT64_PATTERN);
    default:
        return json_pack("{s:s,s:s}", "type", "string", "pattern", INT64_PATTERN);
    }
}

static unsigned max_items(const cx_contract_rule_t *r)
{
    return r != NULL && r->max_items > 0 ? r->max_items : FALLBACK_ITEMS_MAX;
}

/* Field f of message d as a property. */
static json_t *field_schema(gen_t *g, const ProtobufCMessageDescriptor *d,
                            const ProtobufCFieldDescriptor *f, bool constrained, bool required)
{
    const cx_contract_rule_t *r = constrained ? cx_contract_field_rule(d, f, NULL) : NULL;
    const ProtobufCMessageDescriptor *entry = pjson_map_entry(d, f);
    if (entry != NULL) {
        const ProtobufCFieldDescriptor *k = &entry->fields[0], *v = &entry->fields[1];
        const cx_contract_rule_t *kr =
            constrained ? cx_contract_field_rule(entry, k, f->name) : NULL;
        const cx_contract_rule_t *vr =
            constrained ? cx_contract_field_rule(entry, v, f->name) : NULL;
        json_t *s = json_object();
        put_str(g, s, "type", "object");
        put(g, s, "propertyNames", map_key_schema(g, k, kr, constrained));
        put(g, s, "additionalProperties", value_schema(g, v, vr, constrained, false));
        if (constrained) {
            if (required)
                put_int(g, s, "minProperties", 1);
            put_int(g, s, "maxProperties", max_items(r));
        }
        return s;
    }
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        json_t *s = json_object();
        put_str(g, s, "type", "array");
        /* Every element is checked as a required value (no empty strings, no zero enum). */
        put(g, s, "items", value_schema(g, f, r, constrained, true));
        if (constrained) {
            if (required)
                put_int(g, s, "minItems", 1);
            put_int(g, s, "maxItems", max_items(r));
            if (r != NULL && r->unique && f->type == PROTOBUF_C_TYPE_STRING)
                put(g, s, "uniqueItems", json_true());
        }
        return s;
    }
    return value_schema(g, f, r, constrained, required);
}

/* ---- routes' bindings -------------------------------------------------------------------- */

/* Does the field path bind the top-level field `field` ("owner.owner_id" binds "owner")? */
static bool path_binds(const char *path, const char *field)
{
    size_t n = strlen(field);
    return strncmp(path, field, n) == 0 && (path[n] == '\0' || path[n] == '.');
}

static bool route_binds(const edge_route_t *r, const char *field)
{
    for (size_t i = 0; i < r->n_path_params; i++)
        if (path_binds(r->path_params[i].field, field))
            return true;
    for (size_t i = 0; i < r->n_query_params; i++)
        if (path_binds(r->query_params[i].field, field))
            return true;
    for (size_t i = 0; i < r->n_fixed; i++)
        if (path_binds(r->fixed[i].field, field))
            return true;
    return false;
}

/* Is field `field` of request type d bound outside the body by some route whose body is a d?
 * Then the body schema of d does not require it; routes that do not bind it add it back. */
static bool bound_by_some_route(const ProtobufCMessageDescriptor *d, const char *field)
{
    size_t n = 0;
    const edge_route_t *routes = edge_routes(&n);
    for (size_t i = 0; i < n; i++) {
        const ProtobufCMethodDescriptor *md = edge_route_rpc(&routes[i]);
        if (routes[i].body && md != NULL && md->input == d && route_binds(&routes[i], field))
            return true;
    }
    return false;
}

/* ---- messages ----------------------------------------------------------------------------- */

static bool required_here(const ProtobufCMessageDescriptor *d, const ProtobufCFieldDescriptor *f)
{
    if (!cx_contract_required(d->name, f->name))
        return false;
    /* The contract's "required" means non-empty, non-zero or present; it has no meaning for
     * numbers and bools (none are required today). */
    return f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_BYTES ||
           f->type == PROTOBUF_C_TYPE_ENUM || f->type == PROTOBUF_C_TYPE_MESSAGE ||
           f->label == PROTOBUF_C_LABEL_REPEATED;
}

static void message_fill(gen_t *g, const ProtobufCMessageDescriptor *d, json_t *s)
{
    bool constrained = json_object_get(g->request, d->name) != NULL;
    json_t *props = json_object();
    json_t *required = json_array();
    put_str(g, s, "type", "object");
    for (unsigned i = 0; i < d->n_fields && !g->failed; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        char name[128];
        if (pjson_json_name(f, name, sizeof(name)) == 0) {
            gen_fail(g, "field %s of %s: name too long", f->name, d->name);
            break;
        }
        bool req = constrained && required_here(d, f) && !bound_by_some_route(d, f->name);
        put(g, props, name, field_schema(g, d, f, constrained, req));
        if (req)
            push(g, required, json_string(name));
    }
    put(g, s, "properties", props);
    if (json_array_size(required) > 0)
        put(g, s, "required", required);
    else
        json_decref(required);
    /* pjson refuses unknown fields and writes none. */
    put(g, s, "additionalProperties", json_false());
}

static json_t *message_ref(gen_t *g, const ProtobufCMessageDescriptor *d)
{
    const char *name = component_name(d->name, d->package_name);
    json_t *s = component_claim(g, name, d->name);
    if (s != NULL)
        message_fill(g, d, s); /* the placeholder is in place: recursion ends at the $ref */
    return ref_to(REF_SCHEMAS, name);
}

/* Mark d and every message type reachable from it as carried by requests. */
static void mark_request(gen_t *g, const ProtobufCMessageDescriptor *d)
{
    if (json_object_get(g->request, d->name) != NULL)
        return;
    put(g, g->request, d->name, json_true());
    for (unsigned i = 0; i < d->n_fields; i++)
        if (d->fields[i].type == PROTOBUF_C_TYPE_MESSAGE)
            mark_request(g, d->fields[i].descriptor);
}

/* ---- operations ---------------------------------------------------------------------------- */

/* Is the value at a field path required by the contract (every message on the way too)? */
static bool path_required(const ProtobufCMessageDescriptor *d, const char *path)
{
    char name[128];
    for (const char *p = path; d != NULL;) {
        size_t n = strcspn(p, ".");
        if (n == 0 || n >= sizeof(name))
            return false;
        memcpy(name, p, n);
        name[n] = '\0';
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(d, name);
        if (f == NULL || !required_here(d, f))
            return false;
        if (p[n] == '\0')
            return true;
        d = f->type == PROTOBUF_C_TYPE_MESSAGE ? f->descriptor : NULL;
        p += n + 1;
    }
    return false;
}

/* A path or query parameter: its value is written as in edge_routes.h (enum value names,
 * decimal integers, true|false), so a 64-bit integer is an integer here, not a string. */
static json_t *param_schema(gen_t *g, const ProtobufCMessageDescriptor *holder,
                            const ProtobufCFieldDescriptor *f, bool required)
{
    static const cx_contract_rule_t fallback_text = {
        .cls = CX_CONTRACT_TEXT, .max = FALLBACK_TEXT_MAX, .what = "single-line text"};
    const cx_contract_rule_t *r = cx_contract_field_rule(holder, f, NULL);
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING:
        return string_schema(g, r != NULL && r->cls != CX_CONTRACT_BYTES ? r : &fallback_text,
                             required);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return integer_schema(g, "int64", INT64_MIN, INT64_MAX);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: {
        json_t *s = json_object(); /* its maximum does not fit a JSON integer of jansson */
        put_str(g, s, "type", "integer");
        put_int(g, s, "minimum", 0);
        return s;
    }
    case PROTOBUF_C_TYPE_ENUM:
    case PROTOBUF_C_TYPE_BOOL:
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return value_schema(g, f, NULL, true, required); /* as in a body */
    default:
        gen_fail(g, "parameter bound to %s: not a scalar field", f->name);
        return NULL;
    }
}

static json_t *parameter(gen_t *g, const edge_route_t *r, const ProtobufCMessageDescriptor *in,
                         const edge_param_t *p, bool in_path)
{
    const ProtobufCMessageDescriptor *holder = NULL;
    const ProtobufCFieldDescriptor *f = edge_field_path(in, p->field, &holder);
    if (f == NULL || f->label == PROTOBUF_C_LABEL_REPEATED) {
        gen_fail(g, "route %s: parameter %s binds no singular field", r->operation_id, p->name);
        return NULL;
    }
    bool required = in_path || path_required(in, p->field);
    json_t *o = json_object();
    put_str(g, o, "name", p->name);
    put_str(g, o, "in", in_path ? "path" : "query");
    if (p->description != NULL)
        put_str(g, o, "description", p->description);
    put(g, o, "required", json_boolean(required));
    put(g, o, "schema", param_schema(g, holder, f, required));
    return o;
}

static json_t *header(const char *description, const char *constant);

static json_t *common_headers(gen_t *g)
{
    static const char *const names[] = {"X-Correlation-Id", "Cache-Control",
                                        "X-Content-Type-Options", "Referrer-Policy",
                                        "Content-Security-Policy"};
    json_t *h = json_object();
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        put(g, h, names[i], ref_to(REF_HEADERS, names[i]));
    return h;
}

static json_t *json_content(gen_t *g, json_t *schema)
{
    json_t *media = json_object();
    put(g, media, "schema", schema);
    json_t *c = json_object();
    put(g, c, "application/json", media);
    return c;
}

static json_t *success(gen_t *g, const char *description, json_t *schema)
{
    json_t *o = json_object();
    put_str(g, o, "description", description);
    put(g, o, "headers", common_headers(g));
    put(g, o, "content", json_content(g, schema));
    return o;
}

/* The error responses of an operation whose requests fall in the given scopes, plus the
 * status extra (0: none). */
static void error_responses(gen_t *g, const statuses_t *st, unsigned scopes, json_t *responses,
                            int extra)
{
    for (int s = STATUS_MIN; s <= STATUS_MAX; s++) {
        if ((st->scopes[s] & scopes) == 0 && s != extra)
            continue;
        char code[8], name[16];
        snprintf(code, sizeof(code), "%d", s);
        snprintf(name, sizeof(name), "Error%d", s);
        put(g, responses, code, ref_to(REF_RESPONSES, name));
    }
}

/* The body of a route: its request message, where the fields the route fills from its path or
 * query are left out (the edge tolerates an equal value and refuses another: a client has no
 * reason to send one), and the fields the message schema leaves optional because some route
 * binds them (bound_by_some_route) are required again when this route does not. */
static json_t *request_body(gen_t *g, const edge_route_t *r, const ProtobufCMethodDescriptor *md)
{
    const ProtobufCMessageDescriptor *d = md->input;
    json_t *body = message_ref(g, d);
    json_t *again = json_array(), *absent = json_object();
    char bound[256] = "";
    size_t bl = 0;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        char name[128];
        if (pjson_json_name(f, name, sizeof(name)) == 0)
            continue;
        if (route_binds(r, f->name)) {
            put(g, absent, name, json_false());
            int n = snprintf(bound + bl, sizeof(bound) - bl, "%s%s", bl ? ", " : "", name);
            if (n > 0 && (size_t)n < sizeof(bound) - bl)
                bl += (size_t)n;
        } else if (required_here(d, f) && bound_by_some_route(d, f->name)) {
            push(g, again, json_string(name));
        }
    }
    json_t *extra = json_object();
    if (json_array_size(again) > 0)
        put(g, extra, "required", again);
    else
        json_decref(again);
    if (json_object_size(absent) > 0)
        put(g, extra, "properties", absent);
    else
        json_decref(absent);
    if (json_object_size(extra) > 0) {
        json_t *all = json_array();
        push(g, all, body);
        push(g, all, extra);
        body = json_pack("{s:o}", "allOf", all);
    } else {
        json_decref(extra);
    }
    char desc[512];
    int n = snprintf(desc, sizeof(desc),
                     "%s in the proto3 JSON mapping (Content-Type: application/json; an empty "
                     "body is {}).",
                     d->name);
    if (bl > 0 && n > 0 && (size_t)n < sizeof(desc))
        snprintf(desc + n, sizeof(desc) - (size_t)n,
                 " The route takes %s from its path or query: leave it out of the body (an "
                 "equal value is tolerated, another one is refused).",
                 bound);
    json_t *o = json_object();
    put_str(g, o, "description", desc);
    put(g, o, "required", json_true());
    put(g, o, "content", json_content(g, body));
    return o;
}

static json_t *route_operation(gen_t *g, const statuses_t *st, const edge_route_t *r)
{
    const ProtobufCMethodDescriptor *md = edge_route_rpc(r);
    if (md == NULL) {
        gen_fail(g, "route %s names no gateway method", r->operation_id);
        return NULL;
    }
    char rpc[256];
    snprintf(rpc, sizeof(rpc), "/%s/%s", r->service->name, r->rpc);
    json_t *op = json_object();
    put_str(g, op, "operationId", r->operation_id);
    put_str(g, op, "summary", r->summary);
    put(g, op, "tags", json_pack("[s]", r->service->short_name));
    put_str(g, op, "x-credex-rpc", rpc);
    if (r->n_path_params + r->n_query_params > 0) {
        json_t *params = json_array();
        for (size_t i = 0; i < r->n_path_params; i++)
            push(g, params, parameter(g, r, md->input, &r->path_params[i], true));
        for (size_t i = 0; i < r->n_query_params; i++)
            push(g, params, parameter(g, r, md->input, &r->query_params[i], false));
        put(g, op, "parameters", params);
    }
    if (r->body)
        put(g, op, "requestBody", request_body(g, r, md));
    json_t *responses = json_object();
    if (!r->material) {
        char desc[256];
        snprintf(desc, sizeof(desc), "%s in the proto3 JSON mapping.", md->output->name);
        if (r->created_field != NULL) {
            char created[320];
            put(g, responses, "200",
                success(g, "An earlier request with the same idempotency key: its reply.",
                        message_ref(g, md->output)));
            snprintf(created, sizeof(created), "Created: %s", desc);
            put(g, responses, "201", success(g, created, message_ref(g, md->output)));
        } else {
            char status[8];
            snprintf(status, sizeof(status), "%u", r->status);
            /* A route that always redirects has no other success. */
            if (r->redirect.to != EDGE_REDIRECT_URL)
                put(g, responses, status, success(g, desc, message_ref(g, md->output)));
        }
        if (r->redirect.to != EDGE_REDIRECT_NONE) {
            char status[8];
            snprintf(status, sizeof(status), "%u", r->redirect.status);
            json_t *o = success(g, r->redirect.description, message_ref(g, md->output));
            put(g, json_object_get(o, "headers"), "Location",
                header("Where the client goes next (never holds a token).", NULL));
            put(g, responses, status, o);
        }
    }
    unsigned scopes = 1u << SCOPE_ANY | 1u << SCOPE_ROUTE | (r->body ? 1u << SCOPE_BODY : 0);
    error_responses(g, st, scopes, responses, 0);
    put(g, op, "responses", responses);
    return op;
}

/* The operations the edge answers itself, without authentication. */
static json_t *own_operation(gen_t *g, const statuses_t *st, const char *id, const char *summary,
                             json_t *ok_schema, const char *ok_desc, int extra_status)
{
    json_t *op = json_object();
    put_str(g, op, "operationId", id);
    put_str(g, op, "summary", summary);
    put(g, op, "tags", json_pack("[s]", "Edge"));
    put(g, op, "security", json_array());
    json_t *responses = json_object();
    put(g, responses, "200", success(g, ok_desc, ok_schema));
    error_responses(g, st, 1u << SCOPE_ANY, responses, extra_status);
    put(g, op, "responses", responses);
    return op;
}

static void put_operation(gen_t *g, json_t *paths, const char *path, const char *method, json_t *op)
{
    json_t *item = json_object_get(paths, path);
    if (item == NULL) {
        item = json_object();
        put(g, paths, path, item);
    }
    if (g->oom) {
        json_decref(op);
        return;
    }
    if (json_object_get(item, method) != NULL) {
        gen_fail(g, "two routes for %s %s", method, path);
        json_decref(op);
        return;
    }
    put(g, item, method, op);
}

/* ---- components ---------------------------------------------------------------------------- */

static void error_schemas(gen_t *g)
{
    json_t *codes = json_array();
    for (int c = 1; c < CX_CODE_COUNT_; c++)
        push(g, codes, json_string(cx_code_reason((cx_code_t)c)));
    put_str(g, g->owner, "ErrorCode", "");
    put(g, g->schemas, "ErrorCode", json_pack("{s:s,s:o}", "type", "string", "enum", codes));
    put_str(g, g->owner, "Error", "");
    json_t *err = json_pack("{s:s,s:{s:o,s:{s:s},s:{s:s}},s:[sss],s:b}", "type", "object",
                            "properties", "code", ref_to(REF_SCHEMAS, "ErrorCode"), "message",
                            "type", "string", "correlation_id", "type", "string", "required",
                            "code", "message", "correlation_id", "additionalProperties", 0);
    json_t *s =
        json_pack("{s:s,s:s,s:{s:o},s:[s],s:b}", "type", "object", "description",
                  "The one error body of the edge: a reason code, a message that "
                  "never repeats an input value, the request's correlation id.",
                  "properties", "error", err, "required", "error", "additionalProperties", 0);
    put(g, g->schemas, "Error", s);
    put_str(g, g->owner, "ProbeStatus", "");
    put(g, g->schemas, "ProbeStatus",
        json_pack("{s:s,s:{s:{s:s,s:s}},s:[s],s:b}", "type", "object", "properties", "status",
                  "type", "string", "const", "ok", "required", "status", "additionalProperties",
                  0));
}

static json_t *error_response(gen_t *g, unsigned codes, int status)
{
    char desc[512];
    size_t o = (size_t)snprintf(desc, sizeof(desc), "Error (HTTP %d):", status);
    json_t *names = json_array();
    for (int c = 1; c < CX_CODE_COUNT_; c++) {
        if (!(codes & (1u << c)))
            continue;
        push(g, names, json_string(cx_code_reason((cx_code_t)c)));
        if (o < sizeof(desc))
            o += (size_t)snprintf(desc + o, sizeof(desc) - o, " %s", cx_code_reason((cx_code_t)c));
    }
    json_t *schema =
        json_pack("{s:[o,{s:{s:{s:{s:{s:o}}}}}]}", "allOf", ref_to(REF_SCHEMAS, "Error"),
                  "properties", "error", "properties", "code", "enum", names);
    json_t *r = json_object();
    put_str(g, r, "description", desc);
    put(g, r, "headers", common_headers(g));
    put(g, r, "content", json_content(g, schema));
    return r;
}

static json_t *header(const char *description, const char *constant)
{
    return constant != NULL
               ? json_pack("{s:s,s:b,s:{s:s,s:s}}", "description", description, "required", 1,
                           "schema", "type", "string", "const", constant)
               : json_pack("{s:s,s:b,s:{s:s}}", "description", description, "required", 1, "schema",
                           "type", "string");
}

/* The headers edge_http.c writes on every answer. */
static json_t *headers_component(gen_t *g)
{
    json_t *h = json_object();
    put(g, h, "X-Correlation-Id",
        header("The request's correlation id: the client's X-Correlation-Id when it is a "
               "valid one, else a new one. Error bodies repeat it.",
               NULL));
    put(g, h, "Cache-Control", header("No answer is ever stored.", "no-store"));
    put(g, h, "X-Content-Type-Options", header("No content sniffing.", "nosniff"));
    put(g, h, "Referrer-Policy", header("No referrer.", "no-referrer"));
    put(g, h, "Content-Security-Policy",
        header("Nothing an answer holds may load or frame anything.",
               "default-src 'none'; frame-ancestors 'none'"));
    return h;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The same object with its keys sorted (a new reference). */
static json_t *sorted(gen_t *g, json_t *obj)
{
    size_t n = json_object_size(obj), i = 0;
    const char **keys = calloc(n > 0 ? n : 1, sizeof(*keys));
    json_t *out = json_object();
    const char *k;
    json_t *v;
    if (keys == NULL || out == NULL) {
        free(keys);
        json_decref(out);
        g->oom = true;
        return NULL;
    }
    json_object_foreach(obj, k, v)
    {
        (void)v;
        keys[i++] = k;
    }
    qsort(keys, n, sizeof(*keys), cmp_str);
    for (i = 0; i < n; i++)
        put(g, out, keys[i], json_incref(json_object_get(obj, keys[i])));
    free(keys);
    return out;
}

/* ---- the document -------------------------------------------------------------------------- */

static json_t *document(gen_t *g)
{
    statuses_t *st = calloc(1, sizeof(*st));
    json_t *doc = json_object(), *paths = json_object();
    size_t n = 0;
    const edge_route_t *routes = edge_routes(&n);
    if (st == NULL || doc == NULL || paths == NULL) {
        g->oom = true;
        goto out;
    }
    if (!statuses_collect(g, st))
        goto out;
    error_schemas(g);
    for (size_t i = 0; i < n; i++) {
        const ProtobufCMethodDescriptor *md = edge_route_rpc(&routes[i]);
        if (routes[i].body && md != NULL)
            mark_request(g, md->input);
    }

    put_str(g, doc, "openapi", "3.1.0");
    put(g, doc, "info",
        json_pack("{s:s,s:s,s:s}", "title", "credex HTTP API", "version", CREDEX_VERSION,
                  "description",
                  "The edge's HTTP/JSON API over the credex gateway, generated from its route "
                  "table and the protobuf descriptors (docs/HTTP_API.md). Bodies and replies "
                  "are the gateway's messages in the proto3 JSON mapping. Credential values "
                  "can be written (create, rotate) but never read back over HTTP."));
    put(g, doc, "servers", json_pack("[{s:s}]", "url", "/"));
    put(g, doc, "security", json_pack("[{s:[]}]", "bearerAuth"));

    for (size_t i = 0; i < n && !g->failed && !g->oom; i++) {
        char method[8];
        const char *m = edge_method_name(routes[i].method);
        size_t k = 0;
        for (; m != NULL && m[k] != '\0' && k + 1 < sizeof(method); k++)
            method[k] = (char)(m[k] - 'A' + 'a');
        method[k] = '\0';
        put_operation(g, paths, routes[i].path, method, route_operation(g, st, &routes[i]));
    }
    int unavailable = cx_code_http_status(CX_ERR_UNAVAILABLE);
    int disabled = cx_code_http_status(CX_ERR_FEATURE_DISABLED);
    put_operation(g, paths, EDGE_OPENAPI_PATH, "get",
                  own_operation(g, st, "getOpenApiDocument",
                                "This document (feature_disabled while CAIPE_CREDENTIALS_ENABLED "
                                "is false).",
                                json_pack("{s:s}", "type", "object"),
                                "The OpenAPI 3.1 document of this API.", disabled));
    put_operation(g, paths, "/healthz", "get",
                  own_operation(g, st, "healthz", "The edge process is up.",
                                ref_to(REF_SCHEMAS, "ProbeStatus"), "Up.", 0));
    put_operation(g, paths, "/readyz", "get",
                  own_operation(g, st, "readyz",
                                "The gateway answers its health check within a second.",
                                ref_to(REF_SCHEMAS, "ProbeStatus"), "Ready.", unavailable));
    put(g, doc, "paths", paths);
    paths = NULL;

    json_t *components = json_object();
    put(g, components, "schemas", sorted(g, g->schemas));
    json_t *responses = json_object();
    for (int s = STATUS_MIN; s <= STATUS_MAX; s++) {
        if (st->codes[s] == 0)
            continue;
        char name[16];
        snprintf(name, sizeof(name), "Error%d", s);
        put(g, responses, name, error_response(g, st->codes[s], s));
    }
    put(g, components, "responses", responses);
    put(g, components, "headers", headers_component(g));
    put(g, components, "securitySchemes",
        json_pack("{s:{s:s,s:s,s:s,s:s}}", "bearerAuth", "type", "http", "scheme", "bearer",
                  "bearerFormat", "JWT", "description",
                  "The user's access token (Authorization: Bearer <token>), as the UI's "
                  "server side forwards it. Cookies are never accepted."));
    put(g, doc, "components", components);
out:
    free(st);
    json_decref(paths);
    if (g->failed || g->oom) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

bool edge_openapi_json(char **out, size_t *outlen, cx_error_t *err)
{
    gen_t g = {
        .schemas = json_object(), .owner = json_object(), .request = json_object(), .err = err};
    json_t *doc = NULL;
    char *text = NULL, *with_nl = NULL;
    bool ok = false;
    if (g.schemas == NULL || g.owner == NULL || g.request == NULL)
        g.oom = true;
    else
        doc = document(&g);
    if (doc != NULL)
        text = json_dumps(doc, JSON_INDENT(2) | JSON_ENSURE_ASCII);
    if (text != NULL) {
        size_t n = strlen(text);
        with_nl = malloc(n + 2);
        if (with_nl != NULL) {
            memcpy(with_nl, text, n);
            with_nl[n] = '\n';
            with_nl[n + 1] = '\0';
            *out = with_nl;
            *outlen = n + 1;
            ok = true;
        }
    }
    if (!ok && !g.failed)
        cx_error_set(err, CX_ERR_INTERNAL, "openapi: out of memory");
    free(text);
    json_decref(doc);
    json_decref(g.schemas);
    json_decref(g.owner);
    json_decref(g.request);
    return ok;
}
