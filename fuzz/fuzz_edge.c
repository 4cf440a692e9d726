/*
 * Fuzz target: what the edge decodes from HTTP requests (services/edge), all outside input.
 * The first byte picks the decoder, the rest is its input:
 *  'P'  a raw request path: split and percent-decoded (edge_path_parse), then matched against
 *       the route table for every method;
 *  'Q'  a query string "a=b&c=d" (split as libmicrohttpd splits it), decoded (edge_query_add)
 *       and bound to the request of the route picked by the next byte (edge_request_build);
 *  'B'  a JSON body for the route picked by the next byte, with its path parameters set;
 *  else header values, one per line: Content-Type, Authorization, Sec-Fetch-Site, Origin.
 * Properties: no crash or leak; a decoded path segment never holds '/', a control character or
 * invalid UTF-8; a match binds exactly the route's path parameters; a built request is a valid
 * message that writes back as JSON; a bearer token is only b64token characters; a parsed
 * origin list allows its own first origin.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/contract/cx_contract.h"
#include "common/pjson/pjson.h"
#include "services/edge/edge_internal.h"

const char *const fuzz_seeds[] = {
    "P/api/credentials/secrets/sec_1/rotate",
    "P/api/credentials/secrets/a%2Fb",
    "P/api/credentials/oauth-connectors/builtin-providers",
    "P/api/credentials/inject/%C3%A9t%C3%A9",
    "P/api/../%2e%2e/x//y/",
    "Q\x01scope=LIST_SECRETS_SCOPE_ALL&page_size=20&page_token=t&owner_type=OWNER_TYPE_TEAM",
    "Q\x0bgrantee_type=GRANTEE_TYPE_USER&grantee_id=bob&role=SHARE_ROLE_USER",
    "Q\x22since_ms=-9223372036854775808&until_ms=18446744073709551616&outcome=x",
    "B\x02{\"idempotencyKey\":\"k\",\"kind\":\"SECRET_KIND_API_KEY\",\"value\":\"c2s=\"}",
    "B\x06{\"secretId\":\"p\",\"expectedVersion\":4294967295,\"value\":\"\"}",
    "B\x0a{\"grantee\":{\"granteeType\":\"GRANTEE_TYPE_TEAM\"},\"previewOnly\":true}",
    "Happlication/json; charset=utf-8\nBearer abc.def~+/==\nsame-site\nhttp://ui.example:3000",
    "Htext/plain\nbearer  x y\ncross-site\nnull",
    NULL};

static void check_text(const char *s, bool allow_slash)
{
    for (const char *p = s; *p != '\0'; p++)
        if ((*p == '/' && !allow_slash) || (unsigned char)*p < 0x20 || *p == 0x7f)
            abort();
    if (!cx_contract_utf8((const uint8_t *)s, strlen(s), NULL))
        abort();
}

static void fuzz_path(const char *text)
{
    rpc_arena_t *a = rpc_arena_new(512);
    edge_path_t p;
    if (edge_path_parse(text, a, &p, NULL)) {
        for (size_t i = 0; i < p.n; i++)
            check_text(p.seg[i], false);
        for (unsigned m = 0; m <= EDGE_METHOD_COUNT_; m++) {
            edge_match_t match;
            edge_route_match(&p, (edge_method_t)m, &match);
            if (match.route != NULL)
                for (size_t i = 0; i < match.route->n_path_params; i++)
                    if (match.params[i] == NULL || match.params[i][0] == '\0')
                        abort();
            if ((match.route != NULL) != ((match.allowed >> m) & 1u))
                abort();
        }
    }
    rpc_arena_free(a);
}

static const edge_route_t *pick_route(unsigned char b)
{
    size_t n = 0;
    const edge_route_t *r = edge_routes(&n);
    return &r[b % n];
}

/* Build the route's request from a query string or a body; a built request must be a valid
 * message that pjson writes back. */
static void fuzz_build(const edge_route_t *r, const char *query, const char *body, size_t blen)
{
    rpc_arena_t *a = rpc_arena_new(1024);
    edge_match_t m = {.route = r, .template_ = r->path};
    for (size_t i = 0; i < r->n_path_params; i++)
        m.params[i] = "p";
    edge_query_t q = {0};
    bool ok = true;
    for (const char *s = query; ok && s != NULL && *s != '\0';) {
        size_t n = strcspn(s, "&");
        const char *eq = memchr(s, '=', n);
        ok = eq != NULL ? edge_query_add(&q, a, s, (size_t)(eq - s), eq + 1,
                                         n - (size_t)(eq - s) - 1, NULL)
                        : edge_query_add(&q, a, s, n, NULL, 0, NULL);
        s += n + (s[n] == '&');
    }
    for (size_t i = 0; i < q.n; i++) {
        check_text(q.item[i].name, true);
        check_text(q.item[i].value, true);
    }
    ProtobufCMessage *msg = NULL;
    if (ok && edge_request_build(r, &m, &q, body, blen, 65536, a, &msg, NULL)) {
        if (!protobuf_c_message_check(msg))
            abort();
        char *text = NULL;
        size_t len = 0;
        /* Strings came through UTF-8 checks, so writing back never fails. */
        if (!pjson_encode(&text, &len, msg, NULL, NULL))
            abort();
        pjson_text_free(text, len);
    }
    rpc_arena_free(a);
}

static void fuzz_headers(char *text)
{
    char *line[4] = {NULL, NULL, NULL, NULL};
    char *save = NULL;
    size_t n = 0;
    for (char *t = strtok_r(text, "\n", &save); t != NULL && n < 4; t = strtok_r(NULL, "\n", &save))
        line[n++] = t;
    (void)edge_content_type_is_json(line[0]);
    const char *tok = NULL;
    size_t tlen = 0;
    if (edge_bearer_token(line[1], &tok, &tlen)) {
        if (tlen == 0)
            abort();
        for (size_t i = 0; i < tlen; i++)
            if (tok[i] == ' ' || tok[i] == '\r' || tok[i] == '\n' || tok[i] == '\0')
                abort();
    }
    (void)edge_fetch_site_check(line[2], false);
    edge_origins_t o;
    if (edge_origins_parse(line[3], &o, NULL) && line[3] != NULL && o.n > 0 &&
        !edge_origin_allowed(&o, o.origin[0]))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 8192)
        return 0;
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    switch (text[0]) {
    case 'P':
        fuzz_path(text + 1);
        break;
    case 'Q':
        if (size >= 2)
            fuzz_build(pick_route((unsigned char)text[1]), text + 2, NULL, 0);
        break;
    case 'B':
        if (size >= 2 && pick_route((unsigned char)text[1])->body)
            fuzz_build(pick_route((unsigned char)text[1]), NULL, text + 2, size - 2);
        break;
    default:
        fuzz_headers(text + 1);
        break;
    }
    free(text);
    return 0;
}
