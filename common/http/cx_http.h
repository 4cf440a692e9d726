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
 * Clients with an SSRF policy (options.ssrf: OAuth providers, whose URLs users give) check, on
 * every request, the address actually connected to, and never follow a redirect (see
 * cx_http_ssrf_t). A request may ask to be signed with AWS Signature Version 4 (cx_http_sigv4_t:
 * libcurl signs the method, URL, every request header and the body as they are sent).
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

#include <sys/socket.h>

#include "common/error/cx_error.h"

#define CX_HTTP_RESPONSE_DEFAULT (1024 * 1024) /* body limit when options say 0 */
#define CX_HTTP_HEADERS_MAX      32            /* request headers per request */
#define CX_HTTP_HEADER_MAX       8192          /* bytes of one "name: value" request header */

typedef struct cx_http cx_http_t;

struct addrinfo;

/* The connect-time SSRF policy of a client that calls URLs given by users (OAuth providers).
 * With one, every request, before anything is sent:
 *  - screens its URL with cx_http_url_check(url, allow_hosts): https, no userinfo, the
 *    allow-list, no non-public IP literal in any notation (refusals as that function says);
 *  - resolves the host ONCE (resolve, else getaddrinfo; stream sockets of AF_INET/AF_INET6) and
 *    classifies every address with cx_http_ip_classify: if any one is not CX_HTTP_IP_PUBLIC the
 *    request is CX_ERR_SSRF_BLOCKED (the message names the class, never the host or address),
 *    even when others are public, since a client may connect to any of them; a name that does
 *    not resolve is CX_ERR_UNAVAILABLE (CX_DETAIL_HTTP_DNS);
 *  - pins the checked addresses (CURLOPT_RESOLVE, replacing any earlier pin of the same
 *    host:port on a reused handle), so libcurl never resolves the name again, and checks the
 *    address and port of every socket libcurl opens against them (CURLOPT_OPENSOCKETFUNCTION):
 *    any other is refused and the request is CX_ERR_SSRF_BLOCKED;
 *  - never follows a redirect (a 3xx is returned as it is), never uses a proxy (https_proxy and
 *    friends in the environment are ignored), never resends credentials to another host.
 * A kept-alive connection is reused only by the same client, for the same host and port (libcurl
 * keys its connection cache on them, and on the connect_to target), and was opened to an
 * address that passed these checks when it was made; classes do not change with time, so reuse
 * cannot reach an address the checks would refuse.
 *
 * connect_to is the override for tests and development only: entries
 * "host:port:127.0.0.1:port2" (any 127.x.y.z, or "[::1]"; see cx_http_connect_to_parse) send
 * requests for host:port to that loopback address and port instead, with TLS still verified for
 * host; such a host:port (matched without case) is exempt from resolution and the address
 * checks, not from the URL rules, and its socket may go to the listed target only. The
 * configuration refuses it in production mode. resolve/resolve_free replace
 * getaddrinfo/freeaddrinfo (tests: a resolver whose answer changes between calls); resolve is
 * called from the threads that call cx_http_do, concurrently, and must return 0 and a list
 * to free with resolve_free, or non-zero. All strings and arrays are copied by cx_http_new. */
typedef struct cx_http_ssrf {
    const char *const *allow_hosts; /* NULL-terminated "name" or "*.suffix"; NULL: any host */
    const char *const *connect_to;  /* NULL-terminated override entries; NULL: none */
    int (*resolve)(void *ctx, const char *host, const char *port, struct addrinfo **res);
    void (*resolve_free)(void *ctx, struct addrinfo *res);
    void *resolve_ctx;
} cx_http_ssrf_t;

typedef struct cx_http_options {
    const char *name; /* who is called, for messages: "policy service", "JWKS" */
    /* The target class of the metrics (credex_http_client_*): a literal from a fixed set
     * ("openfga", "jwks", "oauth_provider", "kms", "sts"), never a URL or a host; NULL: "other".
     * Kept, not copied. */
    const char *metrics_target;
    bool allow_http;             /* plain http:// allowed: configured internal endpoints only */
    const char *ca_file;         /* PEM CA bundle replacing the system store; NULL or "": system */
    unsigned timeout_ms;         /* whole exchange (connect, TLS, request, response); 0: 3000 */
    unsigned connect_timeout_ms; /* connection and TLS handshake; 0: timeout_ms */
    size_t max_response_bytes;   /* response body limit; 0: CX_HTTP_RESPONSE_DEFAULT */
    unsigned max_redirects;      /* 0: a 3xx is returned as it is, never followed */
    unsigned pool_max;           /* idle handles (and connections) kept; 0: 16 */
    const cx_http_ssrf_t *ssrf;  /* non-NULL: the SSRF policy above (max_redirects must be 0 and
                                    allow_http false, else cx_http_new fails) */
} cx_http_options_t;

/* Strings are copied. CX_ERR_INVALID_ARGUMENT when ca_file is set but cannot be read (found at
 * start-up, not at the first request), and for an SSRF policy with allow_http or max_redirects,
 * a malformed allow_hosts or connect_to entry (see cx_http_allow_host_check and
 * cx_http_connect_to_parse; the message names the list, never the entry), more than
 * CX_HTTP_SSRF_LIST_MAX entries in either, or resolve without resolve_free. Initialises libcurl
 * (reference-counted), so call it at start-up rather than first from a worker thread. */
cx_http_t *cx_http_new(const cx_http_options_t *opts, cx_error_t *err);
/* NULL-safe. Closes the pooled connections. No cx_http_do may be running. */
void cx_http_free(cx_http_t *c);

typedef struct cx_http_header {
    const char *name;  /* e.g. "content-type" */
    const char *value; /* no CR or LF in either (refused: CX_ERR_INVALID_ARGUMENT) */
} cx_http_header_t;

/* AWS Signature Version 4 of one request, computed by libcurl (CURLOPT_AWS_SIGV4) over the
 * method, path, query, the Host and X-Amz-Date headers it adds, every header of the request (all
 * of them are signed: a session token goes in as an x-amz-security-token header) and the SHA-256
 * of the body. The strings are read during cx_http_do only and are never copied into errors. */
typedef struct cx_http_sigv4 {
    const char *provider;          /* "aws:amz:<region>:<service>", e.g. "aws:amz:eu-west-1:kms" */
    const char *access_key_id;     /* no ':' (libcurl's user name) */
    const char *secret_access_key; /* the signing secret */
} cx_http_sigv4_t;

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
    const cx_http_sigv4_t *sigv4; /* NULL: unsigned; else all three fields set (else
                                     CX_ERR_INVALID_ARGUMENT, nothing sent) */
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

/* ---- SSRF screening of URLs given by users (cx_http_ssrf.c) ------------------------------------
 *
 * Connector URLs come from administrators and provider documents, so they must not be turned
 * against the platform (docs/THREAT_MODEL.md). These checks are pure: no I/O, no resolution,
 * no allocation; every function is reentrant and callable from any thread.
 *
 * What is here is the configuration-time half: the URL's shape (https, no userinfo), its host
 * against an allow-list, and an IP literal in any notation a resolver accepts (decimal, octal,
 * hex, short forms, IPv4 inside IPv6) classified against the IANA special-purpose registries.
 * The connect-time half is in cx_http_do for clients with an SSRF policy (cx_http_ssrf_t). The
 * list helpers at the end of this section allocate; they read the comma-separated variables of
 * the configuration (CREDEX_OAUTH_ALLOWED_HOSTS, CREDEX_OAUTH_TEST_CONNECT_TO). */

#define CX_HTTP_URL_MAX       2048 /* bytes of a URL given to cx_http_url_check */
#define CX_HTTP_HOST_MAX      253  /* bytes of a host name (DNS limit) */
#define CX_HTTP_SSRF_LIST_MAX 64   /* entries of allow_hosts and of connect_to */
#define CX_HTTP_LIST_ITEM_MAX 512  /* bytes of one item of cx_http_list_split */

/* Appended, never renumbered (they may reach logs and tests by name). */
typedef enum cx_http_ip_class {
    CX_HTTP_IP_PUBLIC = 0,        /* none of the below: may be connected to */
    CX_HTTP_IP_UNSPECIFIED = 1,   /* 0.0.0.0/8 ("this network"), ::/128 */
    CX_HTTP_IP_LOOPBACK = 2,      /* 127.0.0.0/8, ::1 */
    CX_HTTP_IP_PRIVATE = 3,       /* 10/8, 172.16/12, 192.168/16 (RFC 1918) */
    CX_HTTP_IP_LINK_LOCAL = 4,    /* 169.254/16 (cloud metadata 169.254.169.254), fe80::/10 */
    CX_HTTP_IP_SHARED = 5,        /* 100.64/10, carrier-grade NAT (RFC 6598) */
    CX_HTTP_IP_UNIQUE_LOCAL = 6,  /* fc00::/7 */
    CX_HTTP_IP_MULTICAST = 7,     /* 224/4, ff00::/8 */
    CX_HTTP_IP_BROADCAST = 8,     /* 255.255.255.255 */
    CX_HTTP_IP_DOCUMENTATION = 9, /* 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32,
                                     3fff::/20 */
    CX_HTTP_IP_BENCHMARK = 10,    /* 198.18/15, 2001:2::/48 */
    CX_HTTP_IP_RESERVED = 11,     /* 192.0.0/24, 192.88.99/24, 240/4, 64:ff9b:1::/48, 100::/64,
                                     2001::/23, 5f00::/16, fec0::/10, IPv4-compatible ::/96 with a
                                     public IPv4, all IPv6 outside 2000::/3, unknown families */
    CX_HTTP_IP_TEREDO = 12,       /* 2001::/32: the IPv4 it reaches is not checkable */
    CX_HTTP_IP_CLASS_COUNT_       /* not a class; keep last */
} cx_http_ip_class_t;

/* The class of an AF_INET or AF_INET6 address (port and scope ignored). An IPv6 address that
 * carries an IPv4 one (::ffff:0:0/96 mapped, ::/96 compatible, 64:ff9b::/96 NAT64, 2002::/16
 * 6to4) has the class of that IPv4 address when it is not public. NULL or another family:
 * CX_HTTP_IP_RESERVED. */
cx_http_ip_class_t cx_http_ip_classify(const struct sockaddr *sa);

/* Snake_case name of a class, e.g. "loopback", for logs and tests; never NULL ("reserved" for an
 * out-of-range value). */
const char *cx_http_ip_class_name(cx_http_ip_class_t c);

typedef enum cx_http_host_kind {
    CX_HTTP_HOST_NAME = 0,      /* a DNS name: checkable only once resolved */
    CX_HTTP_HOST_IP = 1,        /* an IP literal, in addr */
    CX_HTTP_HOST_LOCALHOST = 2, /* localhost or *.localhost (RFC 6761): loopback by definition */
} cx_http_host_kind_t;

typedef struct cx_http_host {
    cx_http_host_kind_t kind;
    struct sockaddr_storage addr; /* kind IP: AF_INET or AF_INET6, port 0; else zeroed */
} cx_http_host_t;

/* Read a URL's host (host[0..len), no port): an IPv6 literal in brackets (or bare), an IPv4
 * literal in every notation inet_aton accepts (1 to 4 parts, each decimal, octal with a leading
 * 0 or hex with 0x; the last part fills the remaining bytes: 2130706433, 0177.0.0.1, 0x7f.1,
 * 127.1), localhost names, or a DNS name (letters, digits, '-', '_', '.'; ASCII only, so
 * internationalised names must come as punycode). One trailing dot is ignored. A host whose
 * last label is numeric (digits, or 0x and hex digits) must be an IPv4 literal, as URL parsers
 * read it. False (*out untouched): CX_ERR_INVALID_ARGUMENT for an empty, over-long or malformed
 * host; CX_ERR_SSRF_BLOCKED for an IPv6 zone id. Messages never quote the host. */
bool cx_http_host_literal_parse(const char *host, size_t len, cx_http_host_t *out, cx_error_t *err);

/* Screen a URL before it is stored or used: https only, no userinfo, a host, an optional port
 * (1..65535), the host neither localhost nor an IP literal of a non-public class, and, when
 * allow_list is non-NULL (a NULL-terminated array of host names, each exact or "*.suffix",
 * compared without case and trailing dot), a host it names (an IP literal matches only its own
 * text). Refused: CX_ERR_SSRF_BLOCKED; a URL that cannot be read (over CX_HTTP_URL_MAX, control
 * characters, spaces, backslashes, non-ASCII bytes): CX_ERR_INVALID_ARGUMENT. Messages never
 * quote the URL or its host. A name that passes may still resolve to a forbidden address: the
 * connect-time check (see above) is still needed. */
bool cx_http_url_check(const char *url, const char *const *allow_list, cx_error_t *err);

/* One allow-list entry: a host name, exact or "*.suffix", of letters, digits, '-' and '.', no
 * empty label, at most CX_HTTP_HOST_MAX bytes, one trailing dot ignored. False:
 * CX_ERR_INVALID_ARGUMENT, the message never quoting the entry. Pure, any thread. */
bool cx_http_allow_host_check(const char *entry, cx_error_t *err);

/* One entry of the connect-to override, read. */
typedef struct cx_http_connect_to {
    char host[CX_HTTP_HOST_MAX + 1]; /* a DNS name, as written (not an IP literal, not localhost) */
    unsigned port;                   /* 1..65535 */
    struct sockaddr_storage target;  /* loopback: 127.0.0.0/8 or ::1, with port2 (1..65535) */
} cx_http_connect_to_t;

/* Read "host:port:addr:port2" where host is a DNS name (cx_http_host_literal_parse says
 * CX_HTTP_HOST_NAME), addr a loopback literal, dotted-quad 127.x.y.z or "[::1]", and both ports
 * decimal 1..65535 without leading zeros. False (*out untouched): CX_ERR_INVALID_ARGUMENT, the
 * message ("connect_to entry: ...") never quoting the entry. Pure, any thread. */
bool cx_http_connect_to_parse(const char *entry, cx_http_connect_to_t *out, cx_error_t *err);

/* Split a comma-separated list into its items, each trimmed of spaces and tabs, empty ones
 * skipped: a malloc'd NULL-terminated array of malloc'd strings (an empty array for NULL or ""),
 * to release with cx_http_list_free. NULL: CX_ERR_INVALID_ARGUMENT for more than max_items
 * items or an item longer than CX_HTTP_LIST_ITEM_MAX bytes (the message never quotes the list),
 * CX_ERR_INTERNAL when out of memory. Any thread. */
char **cx_http_list_split(const char *csv, size_t max_items, cx_error_t *err);

/* NULL-safe. */
void cx_http_list_free(char **list);

#endif
