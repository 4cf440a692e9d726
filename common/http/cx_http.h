/*
 * cx_http: the one place where credex makes outbound HTTP requests (docs/DESIGN.md: OpenFGA, the
 * JWKS, later OAuth providers and AWS KMS). Callers say what to send; this module owns how:
 *
 *  - connections: a cx_http_t keeps a pool of idle libcurl handles, each with its open
 *    connection, so that requests to the same server reuse a keep-alive connection instead of
 *    paying a TCP (and TLS) handshake each (the OpenFGA client is on the path of every request);
 *  - TLS: the peer's certificate and host name are always verified, TLS 1.2 at least, against
 *    ca_file when one is configured (it replaces the system store) or the system store;
 *  - schemes: https only, unless the client was created with allow_http, which only a client of
 *    a configured internal endpoint sets (OpenFGA on loopback or inside the cluster);
 *  - limits: the response body (max_response_bytes), connect and total time, redirects not
 *    followed unless max_redirects > 0 (and then only to an allowed scheme);
 *  - the one mapping of transport failures to cx codes: a name that does not resolve, a refused
 *    connection, a timeout, a TLS failure, a body over the limit are CX_ERR_UNAVAILABLE with a
 *    detail (CX_DETAIL_HTTP_*), so every caller fails closed the same way; an aborted transfer
 *    is CX_ERR_CANCELLED; a URL whose scheme is not allowed is CX_ERR_INVALID_ARGUMENT
 *    (CX_DETAIL_HTTP_SCHEME) and nothing is sent. Messages name the client (options.name) and
 *    the failure, never the URL (it may carry credentials or tokens) nor a body.
 *
 * An HTTP status is not an error here: every response received is returned with its status,
 * body, Content-Type and Retry-After, and the caller decides what a 404 or a 503 means to it.
 *
 * Room for what comes later: provider URLs (OAuth) will add an SSRF policy to
 * cx_http_options_t, checked on the address actually connected to (libcurl's socket callback)
 * and on every redirect; AWS KMS signs with SigV4 over the method, URL, headers and body of a
 * cx_http_request_t before it is sent, so a request carries everything a signer reads.
 *
 * Thread-safety: a cx_http_t is immutable after creation but for its handle pool (a mutex held
 * for a push or a pop, never across I/O); cx_http_do may run concurrently from any thread.
 * Library code: nothing is logged here.
 */
#ifndef CREDEX_COMMON_HTTP_CX_HTTP_H
#define CREDEX_COMMON_HTTP_CX_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error/cx_error.h"

#define CX_HTTP_RESPONSE_DEFAULT (1024 * 1024) /* body limit when options say 0 */
#define CX_HTTP_HEADERS_MAX      32            /* request headers per request */
#define CX_HTTP_HEADER_MAX       8192          /* bytes of one "name: value" request header */

typedef struct cx_http cx_http_t;

typedef struct cx_http_options {
    const char *name;            /* who is called, for messages: "policy service", "JWKS" */
    bool allow_http;             /* plain http:// allowed: configured internal endpoints only */
    const char *ca_file;         /* PEM CA bundle replacing the system store; NULL or "": system */
    unsigned timeout_ms;         /* whole exchange (connect, TLS, request, response); 0: 3000 */
    unsigned connect_timeout_ms; /* connection and TLS handshake; 0: timeout_ms */
    size_t max_response_bytes;   /* response body limit; 0: CX_HTTP_RESPONSE_DEFAULT */
    unsigned max_redirects;      /* 0: a 3xx is returned as it is, never followed */
    unsigned pool_max;           /* idle handles (and connections) kept; 0: 16 */
} cx_http_options_t;

/* Strings are copied. CX_ERR_INVALID_ARGUMENT when ca_file is set but cannot be read (found at
 * start-up, not at the first request). Initialises libcurl (reference-counted), so call it at
 * start-up rather than first from a worker thread. */
cx_http_t *cx_http_new(const cx_http_options_t *opts, cx_error_t *err);
/* NULL-safe. Closes the pooled connections. No cx_http_do may be running. */
void cx_http_free(cx_http_t *c);

typedef struct cx_http_header {
    const char *name;  /* e.g. "content-type" */
    const char *value; /* no CR or LF in either (refused: CX_ERR_INVALID_ARGUMENT) */
} cx_http_header_t;

typedef struct cx_http_request {
    const char *method; /* GET, HEAD, POST, PUT, PATCH, DELETE; NULL: GET, or POST with a body */
    const char *url;    /* https://..., or http://... when allowed */
    const cx_http_header_t *headers; /* at most CX_HTTP_HEADERS_MAX */
    size_t nheaders;
    const char *body; /* NULL: no body (not allowed with GET and HEAD) */
    size_t body_len;
    /* Asked about once a second while the transfer runs; true aborts it (CX_ERR_CANCELLED). */
    bool (*abort)(void *ctx);
    void *abort_ctx;
} cx_http_request_t;

typedef struct cx_http_response {
    long status;            /* e.g. 200, 404; of the last response when redirects are followed */
    char *body;             /* malloc'd, NUL-terminated, "" when empty */
    size_t body_len;        /* at most max_response_bytes */
    char content_type[128]; /* "" when absent or longer than the field */
    int64_t retry_after_s;  /* Retry-After in seconds from now (a date is converted, a past
                               date is 0); -1 when absent or unreadable */
} cx_http_response_t;

/* Send one request and read its response. True when a response arrived, whatever its status;
 * *resp (zeroed first) must then be released with cx_http_response_free. On failure *resp holds
 * nothing to free and err says why (see the header comment). Blocks for at most timeout_ms. */
bool cx_http_do(cx_http_t *c, const cx_http_request_t *req, cx_http_response_t *resp,
                cx_error_t *err);

/* Free the body and zero the response. NULL-safe. */
void cx_http_response_free(cx_http_response_t *resp);

/* Connections opened since creation (new TCP connections, not requests), for tests and
 * benchmarks of connection reuse. Any thread. */
uint64_t cx_http_connections_opened(cx_http_t *c);

#endif
