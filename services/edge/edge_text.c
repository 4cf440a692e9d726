/*
 * edge_text: request paths and query strings, split and percent-decoded by the edge itself.
 *
 * libmicrohttpd would unescape the whole path before anyone splits it, so "a%2Fb" and "a/b"
 * would look alike; the edge installs an unescape callback that leaves the text as sent,
 * splits on '/' and decodes each segment, refusing a decoded '/'. Errors say which part was
 * refused, never what it held.
 */
#include <string.h>

#include "common/contract/cx_contract.h"
#include "services/edge/edge_internal.h"

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool edge_pct_decode(const char *in, size_t n, bool allow_slash, const char *what, char *out,
                     size_t *outlen, cx_error_t *err)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '%') {
            int hi = i + 2 < n ? hex_value(in[i + 1]) : -1;
            int lo = i + 2 < n ? hex_value(in[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                    "%s: '%%' must be followed by two hex digits", what);
            c = (unsigned char)(hi * 16 + lo);
            i += 2;
        }
        if (c < 0x20 || c == 0x7F)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "%s: control characters are not allowed", what);
        if (c == '/' && !allow_slash)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: an encoded '/' is not allowed",
                                what);
        out[o++] = (char)c;
    }
    out[o] = '\0';
    if (!cx_contract_utf8((const uint8_t *)out, o, NULL))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: not valid UTF-8", what);
    *outlen = o;
    return true;
}

bool edge_path_parse(const char *raw, rpc_arena_t *arena, edge_path_t *out, cx_error_t *err)
{
    edge_path_t p = {0};
    if (raw == NULL || raw[0] != '/')
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "the path must start with '/'");
    const char *s = raw + 1;
    if (*s == '\0') {
        *out = p;
        return true;
    }
    for (;;) {
        size_t n = strcspn(s, "/");
        if (p.n == EDGE_MAX_SEGMENTS)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "the path has too many segments");
        char *seg = rpc_arena_alloc(arena, n + 1);
        size_t len = 0;
        if (!edge_pct_decode(s, n, false, "path segment", seg, &len, err))
            return false;
        /* A dot segment means "this" or "parent" to whoever normalizes paths; here it would
         * only ever be a confusing parameter value. */
        if (strcmp(seg, ".") == 0 || strcmp(seg, "..") == 0)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "path segment: '.' and '..' are not allowed");
        p.seg[p.n++] = seg;
        if (s[n] == '\0')
            break;
        s += n + 1;
    }
    *out = p;
    return true;
}

bool edge_query_add(edge_query_t *q, rpc_arena_t *arena, const char *name, size_t nlen,
                    const char *value, size_t vlen, cx_error_t *err)
{
    if (q->n == EDGE_MAX_QUERY_PARAMS)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "too many query parameters");
    char *k = rpc_arena_alloc(arena, nlen + 1);
    char *v = rpc_arena_alloc(arena, (value ? vlen : 0) + 1);
    size_t kl = 0, vl = 0;
    if (!edge_pct_decode(name, nlen, true, "query parameter name", k, &kl, err) ||
        (value != NULL && !edge_pct_decode(value, vlen, true, "query parameter", v, &vl, err)))
        return false;
    if (kl == 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "query parameter without a name");
    for (size_t i = 0; i < q->n; i++)
        if (strcmp(q->item[i].name, k) == 0)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "a query parameter is given more than once");
    q->item[q->n].name = k;
    q->item[q->n].value = v;
    q->n++;
    return true;
}
