/*
 * edge internals shared by its files (not a public header):
 *   edge.c         setup and cleanup: the gateway client, the allowed origins, the HTTP server
 *   edge_http.c    libmicrohttpd glue: per-request context, limits, guardrails, response headers,
 *                  the access log
 *   edge_guard.c   the guardrail decisions and the refusals the edge answers itself (pure)
 *   edge_text.c    paths and query strings: splitting and percent-decoding (pure)
 *   edge_routes.c  the route table (edge_routes.h), matching and binding values to fields (pure)
 *   edge_call.c    building the request message, calling the gateway, writing replies and
 *                  errors as JSON
 * The pure parts are unit-tested without a network (tests/unit/edge/).
 *
 * Thread-safety: everything here is reentrant (the state edge_t is read-only once edge_setup has
 * built it, but for the call queue it points to, which has its own lock); nothing blocks except
 * edge_call_route and edge_gateway_ready (a gateway call each) and edge_http_stop (in-flight
 * requests). Memory: what a function puts in an arena lives as long as that arena, which wipes it
 * when freed; out-params are untouched on failure (except the message edge_field_set binds into,
 * which its caller discards on failure).
 */
#ifndef CREDEX_SERVICES_EDGE_EDGE_INTERNAL_H
#define CREDEX_SERVICES_EDGE_EDGE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config/cx_config.h"
#include "common/error/cx_error.h"
#include "common/rpc/rpc.h"
#include "services/edge/edge_routes.h"

#define EDGE_MAX_SEGMENTS     16  /* path segments of a request (the longest route has 6) */
#define EDGE_MAX_QUERY_PARAMS 32  /* query parameters of a request */
#define EDGE_ORIGIN_MAX       256 /* bytes of one allowed origin, NUL included */

/* ---- paths and query strings (edge_text.c) ------------------------------------------------ */

/* A request path split on '/' and percent-decoded segment by segment (memory in an arena).
 * The leading '/' gives no segment: "/" has none, "/a/" has "a" and "". */
typedef struct edge_path {
    size_t n;
    const char *seg[EDGE_MAX_SEGMENTS];
} edge_path_t;

/* Split and decode a raw request path (no query string, not unescaped by anyone). Refused
 * (CX_ERR_INVALID_ARGUMENT, the message never quoting the path): not starting with '/', more
 * than EDGE_MAX_SEGMENTS segments, a '%' not followed by two hex digits, a decoded '/', NUL or
 * other control character, invalid UTF-8, a "." or ".." segment. Decoding a segment first and
 * refusing a decoded '/' keeps "%2F" from ever turning one path parameter into two segments. */
bool edge_path_parse(const char *raw, rpc_arena_t *arena, edge_path_t *out, cx_error_t *err);

/* Percent-decode n bytes of in into out (room for n + 1 bytes), NUL-terminated; *outlen gets
 * the decoded length. Refused as in edge_path_parse; a decoded '/' only when !allow_slash.
 * `what` names the input in the message ("path segment", "query parameter"). */
bool edge_pct_decode(const char *in, size_t n, bool allow_slash, const char *what, char *out,
                     size_t *outlen, cx_error_t *err);

typedef struct edge_kv {
    const char *name;
    const char *value;
} edge_kv_t;

/* Decoded query parameters, each name at most once. */
typedef struct edge_query {
    size_t n;
    edge_kv_t item[EDGE_MAX_QUERY_PARAMS];
} edge_query_t;

/* Add one parameter as the server split it ('+' already turned into a space); name and value
 * are percent-decoded into the arena (value NULL: "name" without '='). Refuses a bad encoding,
 * a repeated name and more than EDGE_MAX_QUERY_PARAMS parameters. */
bool edge_query_add(edge_query_t *q, rpc_arena_t *arena, const char *name, size_t nlen,
                    const char *value, size_t vlen, cx_error_t *err);

/* ---- routes (edge_routes.c) ---------------------------------------------------------------- */

typedef struct edge_match {
    const edge_route_t *route; /* the route for this path and method; NULL when none */
    const char *template_;     /* the path template matched, or NULL when no route has the
                                  path: for logs, never the raw path */
    unsigned allowed;          /* bit (1u << edge_method_t) per method of the template */
    const char *params[EDGE_MAX_SEGMENTS]; /* route->path_params values, in order */
} edge_match_t;

/* Find the route of a decoded path and a method. Of the templates that fit the path, the most
 * specific wins (a literal segment beats a {param} at the first position where they differ);
 * routes sharing that template make up `allowed`. A {param} fits any non-empty segment. */
void edge_route_match(const edge_path_t *path, edge_method_t method, edge_match_t *out);

/* Set the field at field_path of msg (allocating parent messages from the arena) from a value
 * in query syntax (see edge_routes.h). A field that already holds another non-default value is
 * refused: "<param>: differs from the value in the body". Errors name param, never the value. */
bool edge_field_set(ProtobufCMessage *msg, const char *field_path, const char *value,
                    const char *param, rpc_arena_t *arena, cx_error_t *err);

/* The request message of a route: the body (when the route takes one; empty text is "{}"),
 * then the fixed bindings, the path parameters of the match and the query parameters (an
 * unknown name is refused). Everything lives in the arena. max_body bounds the JSON text. */
bool edge_request_build(const edge_route_t *route, const edge_match_t *match,
                        const edge_query_t *query, const char *body, size_t body_len,
                        size_t max_body, rpc_arena_t *arena, ProtobufCMessage **out,
                        cx_error_t *err);

#define EDGE_LOCATION_MAX 8192 /* bytes of a Location header, NUL included */

/* The Location of a successful reply of a redirecting route (edge_routes.h), into buf: "" when
 * the route does not redirect (EDGE_REDIRECT_UI_PATH without a UI URL). A URL reply field must
 * be an https URL of printable ASCII without spaces or backslashes, else CX_ERR_INTERNAL. A UI
 * path must start with one '/' (not "//") and hold the same characters; another value (the
 * client gave it at connect) is replaced by "/" and *replaced is set. Too long for buf:
 * CX_ERR_INTERNAL. Pure. */
bool edge_redirect_location(const edge_route_t *route, const ProtobufCMessage *reply,
                            const char *ui_url, char *buf, size_t bufsz, bool *replaced,
                            cx_error_t *err);

/* ---- guardrails (edge_guard.c) -------------------------------------------------------------- */

/* The refusals the edge decides itself, each with its HTTP status, reason code and message. */
typedef enum edge_refusal {
    EDGE_R_NONE = 0,
    EDGE_R_CROSS_SITE,        /* Sec-Fetch-Site: cross-site (or a value we do not know) */
    EDGE_R_SAME_SITE,         /* Sec-Fetch-Site: same-site while not allowed */
    EDGE_R_ORIGIN,            /* an Origin not in CREDEX_EDGE_ALLOWED_ORIGINS */
    EDGE_R_PREFLIGHT,         /* OPTIONS without an allowed Origin */
    EDGE_R_MEDIA_TYPE,        /* a body or body method without application/json */
    EDGE_R_BODY_TOO_LARGE,    /* over CREDEX_EDGE_HTTP_MAX_BODY_BYTES */
    EDGE_R_HEADERS_TOO_LARGE, /* over CREDEX_EDGE_HTTP_MAX_HEADER_BYTES */
    EDGE_R_TIMEOUT,           /* the body took longer than CREDEX_EDGE_HTTP_REQUEST_TIMEOUT_MS */
    EDGE_R_NOT_FOUND,         /* no route has this path */
    EDGE_R_METHOD,            /* the path exists, not with this method */
    EDGE_R_UNEXPECTED_BODY,   /* a body on a route that takes none */
    EDGE_R_FRAMING,           /* Content-Length with Transfer-Encoding, or several lengths */
    EDGE_R_DUPLICATE_HEADER,  /* a header the edge reads, given twice */
    EDGE_R_UNAUTHENTICATED,   /* no or malformed Authorization: Bearer */
    EDGE_R_BAD_REQUEST,       /* path, query or body refused: the message is the error's */
    EDGE_R_COUNT_
} edge_refusal_t;

typedef struct edge_refusal_info {
    const char *name;    /* for the edge.refused log line, e.g. "cross_site" */
    unsigned status;     /* HTTP status */
    cx_code_t code;      /* reason code of the error body */
    const char *message; /* the error message (EDGE_R_BAD_REQUEST: the error's own) */
} edge_refusal_info_t;

/* The one table of edge refusals; out-of-range values give EDGE_R_BAD_REQUEST's entry. */
const edge_refusal_info_t *edge_refusal(edge_refusal_t r);

/* The allowed origins, split from a value cx_config has checked (comma-separated, spaces
 * around commas). */
typedef struct edge_origins {
    size_t n;
    char origin[CX_CONFIG_MAX_ORIGINS][EDGE_ORIGIN_MAX];
} edge_origins_t;

bool edge_origins_parse(const char *list, edge_origins_t *out, cx_error_t *err);

/* Exact match against the list (a browser serializes origins exactly one way). */
bool edge_origin_allowed(const edge_origins_t *origins, const char *origin);

/* What Sec-Fetch-Site says: EDGE_R_NONE for none, same-origin or an absent header;
 * EDGE_R_SAME_SITE for same-site unless allowed; EDGE_R_CROSS_SITE for cross-site and anything
 * else (an unknown value is not trusted). Case-insensitive. */
edge_refusal_t edge_fetch_site_check(const char *value, bool allow_same_site);

/* application/json, optionally with the one parameter charset=utf-8 (case-insensitive, spaces
 * around ';' and '=' allowed). Anything else (form, text/plain, json with other parameters,
 * NULL) is false. */
bool edge_content_type_is_json(const char *value);

/* The token of "Bearer <token>" (scheme case-insensitive, one or more spaces, the token of RFC
 * 6750's b64token grammar, nothing after it): *token points into value. */
bool edge_bearer_token(const char *value, const char **token, size_t *len);

/* ---- the process state (edge.c) ------------------------------------------------------------- */

struct MHD_Daemon;
struct edge_calls;

typedef struct edge {
    const cx_config_t *cfg;
    rpc_client_t *gateway;    /* to CREDEX_GATEWAY_ADDR, server identity "gateway" */
    edge_origins_t origins;   /* CREDEX_EDGE_ALLOWED_ORIGINS */
    struct MHD_Daemon *http;  /* the HTTP server (edge_http.c) */
    struct edge_calls *calls; /* the threads making its gateway calls (edge_http.c) */
    int http_port;            /* the port it listens on */
    char *openapi;            /* the OpenAPI document (edge_openapi.h), built at setup */
} edge_t;

/* ---- HTTP server (edge_http.c) -------------------------------------------------------------- */

/* Start serving HTTP on cfg->edge_http_addr with the limits of the config (and TLS when
 * configured), and the CREDEX_RPC_THREADS threads that make the gateway calls. Fails naming the
 * variable at fault. */
bool edge_http_start(edge_t *edge, cx_error_t *err);

/* Stop accepting, let the gateway calls in flight finish (each bounded by its deadline), answer
 * requests still waiting for a call thread 503 unavailable, stop the threads. NULL-safe,
 * idempotent. */
void edge_http_stop(edge_t *edge);

/* ---- calls and answers (edge_call.c) -------------------------------------------------------- */

/* An answer to write: status and a JSON body (malloc'd, NUL-terminated; NULL for none). The
 * body is wiped when freed (edge_answer_free). */
typedef struct edge_answer {
    unsigned status;
    char *body;
    size_t len;
    cx_code_t code; /* CX_OK for a success; for logs */
    char *location; /* the Location header of a redirect (malloc'd), or NULL */
} edge_answer_t;

/* The error body {"error":{"code","message","correlation_id"}} with the status status, or
 * cx_code_http_status(code) when status is 0. The message is the caller's (never an input
 * value); bytes that are not UTF-8 are replaced. */
void edge_answer_error(edge_answer_t *out, unsigned status, cx_code_t code, const char *message,
                       const char *correlation_id);

/* A refusal of edge_refusal()'s table; err's message for EDGE_R_BAD_REQUEST. */
void edge_answer_refusal(edge_answer_t *out, edge_refusal_t r, const cx_error_t *err,
                         const char *correlation_id);

/* A fixed JSON body with a status (health answers). */
void edge_answer_text(edge_answer_t *out, unsigned status, const char *json);

/* Wipe and free the body, free the location. NULL-safe. */
void edge_answer_free(edge_answer_t *a);

/* What a route call needs from the HTTP request. */
typedef struct edge_call_in {
    const edge_match_t *match;
    const edge_query_t *query;
    const char *body; /* the JSON text (NULL: none) */
    size_t body_len;
    const char *token; /* the user's bearer token, NUL-terminated */
    const char *correlation_id;
    const char *traceparent; /* the edge's span of the request (rpc_trace_child) */
    rpc_arena_t *arena;      /* request and reply memory, wiped by the caller's free */
} edge_call_in_t;

/* Run a matched route: build the request, call the gateway as a browser-kind caller for the
 * token's user, and write the reply (or the error) into *out. Blocks for at most the gateway
 * deadline (CREDEX_RPC_DEADLINE_MS). Thread-safe. */
void edge_call_route(const edge_t *edge, const edge_call_in_t *in, edge_answer_t *out);

/* grpc.health.v1.Health/Check of the gateway within timeout_ms: true when it serves. */
bool edge_gateway_ready(const edge_t *edge, const char *correlation_id, unsigned timeout_ms,
                        cx_error_t *err);

#endif
