/*
 * Fuzz target: what the edge decodes from HTTP requests (services/edge), all outside input.
 * The first byte picks the decoder, the rest is its input:
 *  'P'  a raw request path: split and percent-decoded (edge_path_parse), then matched against
 *       the route table with every method (and an unknown one);
 *  'Q'  a route (the next byte, modulo the number of routes) and a query string "a=b&c=d", split
 *       as libmicrohttpd splits it ('+' read as a space), decoded (edge_query_add) and bound to
 *       the route's request (edge_request_build), its path parameters all "p";
 *  'B'  a route (the next byte) and a JSON body for it, its path parameters all "p";
 *  'R'  a whole request "METHOD /path?query\nbody": the path parsed and matched, then the query
 *       and the body bound to the request of the route it names, as the edge does;
 *  else header values, one per line: Content-Type, Authorization, Sec-Fetch-Site, the allowed
 *       origins (CREDEX_EDGE_ALLOWED_ORIGINS), Origin; 'S' first allows same-site requests.
 * Invariants beyond "no crash, no leak, no UB":
 *  - refusals are invalid_argument (resource_exhausted for a body over its limit), never
 *    internal (a route binding a field it cannot), and leave the out-params alone;
 *  - a decoded path segment holds no '/', control character or invalid UTF-8 and is not "." or
 *    "..", and encoding the segments again parses back to the same segments;
 *  - matching equals a reference reading of the route table: the template is the most specific
 *    of those that fit the path (a literal beats a {param} at the first position where they
 *    differ), `allowed` is the methods of that template, and a route's parameters are the
 *    path's segments at its {param} positions;
 *  - a built request is a valid message that writes back as JSON, and holds every fixed value,
 *    path parameter and query parameter it was given (a body cannot retarget the path);
 *  - Authorization and Sec-Fetch-Site are read exactly as reference readings of their grammars
 *    read them; an accepted Content-Type is application/json, with at most charset=utf-8; each
 *    parsed allowed origin is non-empty, trimmed and allowed, and an Origin is allowed iff
 *    listed.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/contract/cx_contract.h"
#include "common/pjson/pjson.h"
#include "fuzz/fuzz_kit.h"
#include "services/edge/edge_internal.h"

#define INPUT_MAX 8192
#define BODY_MAX  2048 /* below libFuzzer's default -max_len (4096): the limit is reached too */

static void refusal_ok(const cx_error_t *err, bool body)
{
    if (err->code != CX_ERR_INVALID_ARGUMENT && !(body && err->code == CX_ERR_RESOURCE_EXHAUSTED))
        abort();
}

static void check_text(const char *s, bool allow_slash)
{
    for (const char *p = s; *p != '\0'; p++)
        if ((*p == '/' && !allow_slash) || (unsigned char)*p < 0x20 || *p == 0x7f)
            abort();
    if (!cx_contract_utf8((const uint8_t *)s, strlen(s), NULL))
        abort();
}

/* ---- paths and matching --------------------------------------------------------------------- */

/* The segments percent-encoded again (every byte but the unreserved ones); NUL-terminated. */
static void encode_path(const edge_path_t *p, char *out, size_t outsz)
{
    size_t o = 0;
    out[o++] = '/';
    for (size_t i = 0; i < p->n; i++) {
        if (i > 0)
            out[o++] = '/';
        for (const unsigned char *c = (const unsigned char *)p->seg[i]; *c != '\0'; c++) {
            if (o + 4 > outsz)
                abort();
            if (isalnum(*c) || strchr("-._~", *c) != NULL)
                out[o++] = (char)*c;
            else
                o += (size_t)snprintf(out + o, 4, "%%%02X", *c);
        }
    }
    out[o] = '\0';
}

/* Reference: does template tpl fit the path? params receives the {param} segments. */
static bool ref_fits(const char *tpl, const edge_path_t *p, const char **params)
{
    size_t i = 0, k = 0;
    for (const char *t = tpl + 1;; i++) {
        size_t n = strcspn(t, "/");
        if (i >= p->n)
            return false;
        if (t[0] == '{') {
            if (p->seg[i][0] == '\0')
                return false;
            params[k++] = p->seg[i];
        } else if (strlen(p->seg[i]) != n || strncmp(p->seg[i], t, n) != 0) {
            return false;
        }
        if (t[n] == '\0')
            break;
        t += n + 1;
    }
    return i + 1 == p->n;
}

/* Reference: is template a more specific than b (both fitting one path)? At the first segment
 * where one has a literal and the other a {param}, the literal wins. */
static bool ref_more_specific(const char *a, const char *b)
{
    for (a++, b++; *a != '\0' && *b != '\0';) {
        if ((*a == '{') != (*b == '{'))
            return *b == '{';
        a += strcspn(a, "/");
        b += strcspn(b, "/");
        a += *a == '/';
        b += *b == '/';
    }
    return false;
}

static void check_match(const edge_path_t *p, edge_method_t m, const edge_match_t *got)
{
    size_t count = 0;
    const edge_route_t *routes = edge_routes(&count);
    const char *params[EDGE_MAX_SEGMENTS];
    const char *best = NULL;
    for (size_t r = 0; r < count; r++)
        if (ref_fits(routes[r].path, p, params) &&
            (best == NULL || ref_more_specific(routes[r].path, best)))
            best = routes[r].path;
    if ((got->template_ == NULL) != (best == NULL) ||
        (best != NULL && strcmp(got->template_, best) != 0))
        abort();
    unsigned allowed = 0;
    const edge_route_t *want = NULL;
    for (size_t r = 0; best != NULL && r < count; r++)
        if (strcmp(routes[r].path, best) == 0) {
            allowed |= 1u << routes[r].method;
            if (routes[r].method == m)
                want = &routes[r];
        }
    if (got->allowed != allowed || got->route != want)
        abort();
    if (want != NULL) {
        if (!ref_fits(want->path, p, params))
            abort();
        for (size_t i = 0; i < want->n_path_params; i++)
            if (strcmp(got->params[i], params[i]) != 0)
                abort();
    }
}

static void fuzz_path(const char *text)
{
    rpc_arena_t *a = rpc_arena_new(512);
    edge_path_t p = {.n = 99}, again = {.n = 99};
    cx_error_t err;
    cx_error_clear(&err);
    if (!edge_path_parse(text, a, &p, &err)) {
        refusal_ok(&err, false);
        if (p.n != 99)
            abort();
        goto out;
    }
    if (p.n > EDGE_MAX_SEGMENTS)
        abort();
    for (size_t i = 0; i < p.n; i++) {
        check_text(p.seg[i], false);
        if (strcmp(p.seg[i], ".") == 0 || strcmp(p.seg[i], "..") == 0)
            abort();
    }
    char enc[3 * INPUT_MAX + 2];
    encode_path(&p, enc, sizeof(enc));
    if (!edge_path_parse(enc, a, &again, NULL) || again.n != p.n)
        abort();
    for (size_t i = 0; i < p.n; i++)
        if (strcmp(p.seg[i], again.seg[i]) != 0)
            abort();
    for (unsigned m = 0; m <= EDGE_METHOD_COUNT_; m++) {
        edge_match_t match;
        edge_route_match(&p, (edge_method_t)m, &match);
        check_match(&p, (edge_method_t)m, &match);
    }
out:
    rpc_arena_free(a);
}

/* ---- building requests ---------------------------------------------------------------------- */

/* The field at field_path of msg, *member where msg holds it; NULL when a message on the way is
 * unset. */
static const ProtobufCFieldDescriptor *field_at(const ProtobufCMessage *msg, const char *path,
                                                const void **member)
{
    char name[128];
    for (const char *p = path;;) {
        size_t n = strcspn(p, ".");
        if (n >= sizeof(name))
            abort();
        memcpy(name, p, n);
        name[n] = '\0';
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(msg->descriptor, name);
        if (f == NULL)
            abort(); /* the table names a field the type lacks: a unit test rules this out */
        if (p[n] == '\0') {
            *member = (const char *)msg + f->offset;
            return f;
        }
        msg = *(ProtobufCMessage *const *)((const char *)msg + f->offset);
        if (msg == NULL)
            return NULL;
        p += n + 1;
    }
}

/* Decimal text without leading zeros, "-0" as "0": how a bound integer writes back. */
static void canonical_decimal(const char *v, char *out, size_t outsz)
{
    bool neg = *v == '-';
    v += neg;
    while (*v == '0' && v[1] != '\0')
        v++;
    snprintf(out, outsz, "%s%s", neg && strcmp(v, "0") != 0 ? "-" : "", v);
}

/* Does msg hold value (query syntax) at field_path? With or_default, the field's default
 * (an unset message on the way included) counts as holding it too. */
static bool holds(const ProtobufCMessage *msg, const char *field_path, const char *value,
                  bool or_default)
{
    const void *member = NULL;
    const ProtobufCFieldDescriptor *f = field_at(msg, field_path, &member);
    char got[32], want[INPUT_MAX + 2];
    if (f == NULL)
        return or_default;
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(const char *const *)member;
        s = s != NULL ? s : "";
        return strcmp(s, value) == 0 || (or_default && s[0] == '\0');
    }
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumValue *ev =
            protobuf_c_enum_descriptor_get_value_by_name(f->descriptor, value);
        int v = *(const int *)member;
        return (ev != NULL && v == ev->value) || (or_default && v == 0);
    }
    case PROTOBUF_C_TYPE_BOOL: {
        protobuf_c_boolean b = *(const protobuf_c_boolean *)member;
        return strcmp(b ? "true" : "false", value) == 0 || (or_default && !b);
    }
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        snprintf(got, sizeof(got), "%" PRId32, *(const int32_t *)member);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        snprintf(got, sizeof(got), "%" PRIu32, *(const uint32_t *)member);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        snprintf(got, sizeof(got), "%" PRId64, *(const int64_t *)member);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        snprintf(got, sizeof(got), "%" PRIu64, *(const uint64_t *)member);
        break;
    default:
        return false; /* a type edge_field_set refuses: the request must not have been built */
    }
    canonical_decimal(value, want, sizeof(want));
    return strcmp(got, want) == 0 || (or_default && strcmp(got, "0") == 0);
}

/* A built request holds every value bound to it, and its body alone held each of them or the
 * field's default: a value in the body that differs from the path's or the query's is refused,
 * never overwritten (a body cannot retarget the secret the path names). */
static void check_bound(const ProtobufCMessage *msg, const ProtobufCMessage *body,
                        const char *field_path, const char *value)
{
    if (!holds(msg, field_path, value, false) ||
        (body != NULL && !holds(body, field_path, value, true)))
        abort();
}

/* Add the parameters of a query string as libmicrohttpd hands them over: split at '&', then at
 * the first '=' ("name" alone has no value), '+' turned into a space, an empty last parameter
 * dropped (the query is a C string there: a NUL ends it). false when the edge refuses one (the
 * request is answered 400). */
static bool add_query(edge_query_t *q, rpc_arena_t *a, const char *query, size_t qlen)
{
    char *s = rpc_arena_strndup(a, query, qlen);
    for (char *c = s; *c != '\0'; c++)
        if (*c == '+')
            *c = ' ';
    while (*s != '\0') {
        size_t n = strcspn(s, "&"), before = q->n;
        const char *eq = memchr(s, '=', n);
        cx_error_t err;
        cx_error_clear(&err);
        bool ok = eq != NULL ? edge_query_add(q, a, s, (size_t)(eq - s), eq + 1,
                                              n - (size_t)(eq - s) - 1, &err)
                             : edge_query_add(q, a, s, n, NULL, 0, &err);
        if (!ok) {
            refusal_ok(&err, false);
            if (q->n != before)
                abort();
            return false;
        }
        check_text(q->item[before].name, true);
        check_text(q->item[before].value, true);
        s += n + (s[n] == '&');
    }
    return true;
}

static void fuzz_build(const edge_route_t *r, const edge_match_t *m, const char *query, size_t qlen,
                       const char *body, size_t blen)
{
    rpc_arena_t *a = rpc_arena_new(1024);
    edge_query_t q = {0};
    ProtobufCMessage *msg = NULL;
    cx_error_t err;
    cx_error_clear(&err);
    if (!add_query(&q, a, query, qlen))
        goto out;
    if (!edge_request_build(r, m, &q, body, blen, BODY_MAX, a, &msg, &err)) {
        refusal_ok(&err, true);
        if (msg != NULL)
            abort();
        goto out;
    }
    if (!protobuf_c_message_check(msg))
        abort();
    /* The body alone, read as the edge reads it: it must be accepted, the request was. */
    ProtobufCMessage *alone = NULL;
    if (r->body) {
        ProtobufCAllocator alloc = rpc_arena_allocator(a);
        pjson_options_t o = {.max_bytes = BODY_MAX};
        if (!pjson_decode(&alone, edge_route_rpc(r)->input, blen > 0 ? body : "{}",
                          blen > 0 ? blen : 2, &alloc, &o, NULL))
            abort();
    }
    for (size_t i = 0; i < r->n_fixed; i++)
        check_bound(msg, alone, r->fixed[i].field, r->fixed[i].value);
    for (size_t i = 0; i < r->n_path_params; i++)
        check_bound(msg, alone, r->path_params[i].field, m->params[i]);
    for (size_t i = 0; i < q.n; i++)
        for (size_t j = 0; j < r->n_query_params; j++)
            if (strcmp(r->query_params[j].name, q.item[i].name) == 0)
                check_bound(msg, alone, r->query_params[j].field, q.item[i].value);
    char *text = NULL;
    size_t len = 0;
    /* Strings came through UTF-8 checks, so writing back never fails. */
    if (!pjson_encode(&text, &len, msg, NULL, NULL))
        abort();
    pjson_text_free(text, len);
out:
    rpc_arena_free(a);
}

/* 'Q' and 'B': the route of a byte, its path parameters all "p". */
static void fuzz_route(uint8_t pick, const char *query, size_t qlen, const char *body, size_t blen)
{
    size_t n = 0;
    const edge_route_t *routes = edge_routes(&n), *r = &routes[pick % n];
    edge_match_t m = {.route = r, .template_ = r->path, .allowed = 1u << r->method};
    for (size_t i = 0; i < r->n_path_params; i++)
        m.params[i] = "p";
    if (body == NULL || r->body) /* a body on a route without one is refused before this */
        fuzz_build(r, &m, query, qlen, body, blen);
}

/* 'R': "METHOD /path?query\nbody", as the edge reads a request that passed its guardrails. */
static void fuzz_request(const uint8_t *data, size_t size)
{
    fuzz_part_t line[2], word[2];
    size_t nl = fuzz_split(data, size, '\n', line, 2);
    if (fuzz_split(line[0].data, line[0].len, ' ', word, 2) < 2)
        return;
    const char *body = nl > 1 ? (const char *)line[1].data : NULL;
    size_t blen = nl > 1 ? line[1].len : 0;
    const uint8_t *qmark = memchr(word[1].data, '?', word[1].len);
    size_t plen = qmark != NULL ? (size_t)(qmark - word[1].data) : word[1].len;
    char *method = fuzz_strndup(word[0].data, word[0].len);
    char *path = fuzz_strndup(word[1].data, plen);
    rpc_arena_t *a = rpc_arena_new(512);
    edge_method_t m = EDGE_METHOD_COUNT_;
    edge_path_t p;
    edge_match_t match;
    (void)edge_method_parse(method, &m);
    if (!edge_path_parse(path, a, &p, NULL))
        goto out;
    edge_route_match(&p, m, &match);
    check_match(&p, m, &match);
    /* A body on a route without one is refused before anything is bound. */
    if (match.route == NULL || (!match.route->body && blen > 0))
        goto out;
    fuzz_build(match.route, &match, qmark != NULL ? (const char *)qmark + 1 : "",
               qmark != NULL ? word[1].len - plen - 1 : 0, body, blen);
out:
    rpc_arena_free(a);
    free(path);
    free(method);
}

/* ---- header values -------------------------------------------------------------------------- */

/* Reference: "Bearer" (any case), one or more spaces, then RFC 6750's b64token to the end. */
static bool ref_bearer(const char *v, size_t *tok_at, size_t *tok_len)
{
    if (v == NULL || strncasecmp(v, "bearer ", 7) != 0)
        return false;
    size_t i = 7;
    while (v[i] == ' ')
        i++;
    size_t start = i;
    while (v[i] != '\0' && (isalnum((unsigned char)v[i]) || strchr("-._~+/", v[i]) != NULL))
        i++;
    if (i == start)
        return false;
    while (v[i] == '=')
        i++;
    *tok_at = start;
    *tok_len = i - start;
    return v[i] == '\0';
}

/* Reference: the value without spaces, tabs and quotes, in lower case, is one of the two. */
static bool ref_json_type(const char *v)
{
    char c[INPUT_MAX + 1];
    size_t n = 0;
    for (; v != NULL && *v != '\0'; v++)
        if (*v != ' ' && *v != '\t' && *v != '"')
            c[n++] = (char)tolower((unsigned char)*v);
    c[n] = '\0';
    return strcmp(c, "application/json") == 0 || strcmp(c, "application/json;charset=utf-8") == 0;
}

static edge_refusal_t ref_fetch_site(const char *v, bool allow_same_site)
{
    if (v == NULL || strcasecmp(v, "same-origin") == 0 || strcasecmp(v, "none") == 0)
        return EDGE_R_NONE;
    if (strcasecmp(v, "same-site") == 0)
        return allow_same_site ? EDGE_R_NONE : EDGE_R_SAME_SITE;
    return EDGE_R_CROSS_SITE;
}

static void fuzz_headers(const uint8_t *data, size_t size, bool allow_same_site)
{
    fuzz_part_t part[5];
    char *line[5] = {NULL, NULL, NULL, NULL, NULL};
    size_t n = fuzz_split(data, size, '\n', part, 5);
    for (size_t i = 0; i < n; i++)
        line[i] = fuzz_strndup(part[i].data, part[i].len);

    /* The reference only knows what an accepted value looks like: spaces inside the words
     * (e.g. "application/ json") are the edge's to refuse. */
    if (edge_content_type_is_json(line[0]) && !ref_json_type(line[0]))
        abort();

    const char *tok = NULL;
    size_t tlen = 0, at = 0, len = 0;
    bool bearer = edge_bearer_token(line[1], &tok, &tlen);
    if (bearer != ref_bearer(line[1], &at, &len) ||
        (bearer && (tok != line[1] + at || tlen != len)))
        abort();

    if (edge_fetch_site_check(line[2], allow_same_site) != ref_fetch_site(line[2], allow_same_site))
        abort();

    edge_origins_t o = {.n = 99};
    cx_error_t err;
    cx_error_clear(&err);
    if (!edge_origins_parse(line[3], &o, &err)) {
        refusal_ok(&err, false);
        if (o.n != 99)
            abort();
    } else {
        if (o.n > CX_CONFIG_MAX_ORIGINS)
            abort();
        bool listed = false;
        for (size_t i = 0; i < o.n; i++) {
            size_t l = strlen(o.origin[i]);
            if (l == 0 || l >= EDGE_ORIGIN_MAX || strchr(o.origin[i], ',') != NULL ||
                o.origin[i][0] == ' ' || o.origin[i][l - 1] == ' ' ||
                !edge_origin_allowed(&o, o.origin[i]))
                abort();
            listed |= line[4] != NULL && strcmp(o.origin[i], line[4]) == 0;
        }
        if (edge_origin_allowed(&o, line[4]) != listed)
            abort();
    }
    for (size_t i = 0; i < n; i++)
        free(line[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > INPUT_MAX)
        return 0;
    const uint8_t *in = data + 1;
    size_t n = size - 1;
    switch (data[0]) {
    case 'P': {
        char *text = fuzz_strndup(in, n);
        fuzz_path(text);
        free(text);
        break;
    }
    case 'Q':
        if (n >= 1)
            fuzz_route(in[0], (const char *)in + 1, n - 1, NULL, 0);
        break;
    case 'B':
        if (n >= 1)
            fuzz_route(in[0], "", 0, (const char *)in + 1, n - 1);
        break;
    case 'R':
        fuzz_request(in, n);
        break;
    default:
        fuzz_headers(in, n, data[0] == 'S');
        break;
    }
    return 0;
}
