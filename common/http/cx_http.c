/* cx_http: see cx_http.h. */
#include "common/http/cx_http.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common/metrics/cx_metrics.h"

struct cx_http {
    char *name;
    const char *metrics_target; /* a literal (cx_http_options_t) */
    char *ca_file;              /* NULL: system store */
    bool allow_http;
    long timeout_ms, connect_timeout_ms;
    size_t max_response;
    long max_redirects;
    /* Idle handles, most recently used last: curl_easy_reset keeps a handle's connection cache,
     * so the next request on it reuses the open connection. Guarded by mu. */
    pthread_mutex_t mu;
    CURL **idle;
    size_t nidle, pool_max;
    atomic_uint_fast64_t connections;
    /* The SSRF policy (cx_http.h), copied; ssrf false: none. */
    bool ssrf;
    char **allow_hosts; /* NULL-terminated; NULL: any host */
    cx_http_connect_to_t *connect_to;
    size_t nconnect_to;
    int (*resolve)(void *ctx, const char *host, const char *port, struct addrinfo **res);
    void (*resolve_free)(void *ctx, struct addrinfo *res);
    void *resolve_ctx;
};

/* ---- the response body, bounded ------------------------------------------------------------ */

typedef struct http_buf {
    char *data; /* NUL-terminated when not NULL */
    size_t len, max;
    bool too_big; /* the body passed max: the transfer was aborted */
} http_buf_t;

static size_t http_buf_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    http_buf_t *b = ud;
    size_t n = size * nmemb;
    if (nmemb != 0 && n / nmemb != size)
        return 0;
    if (n > b->max || b->len > b->max - n) {
        b->too_big = true;
        return 0;
    }
    char *p = realloc(b->data, b->len + n + 1);
    if (p == NULL)
        return 0;
    memcpy(p + b->len, ptr, n);
    p[b->len + n] = '\0';
    b->data = p;
    b->len += n;
    return n;
}

/* ---- client and handle pool ----------------------------------------------------------------- */

/* Everything a client owns but its handles; a partly built client too. */
static void client_release(cx_http_t *c)
{
    free(c->name);
    free(c->ca_file);
    free(c->idle);
    cx_http_list_free(c->allow_hosts);
    free(c->connect_to);
    free(c);
}

/* Copy and check the SSRF policy (cx_http_new's comment says what is refused). */
static bool ssrf_copy(cx_http_t *c, const cx_http_options_t *opts, cx_error_t *err)
{
    const cx_http_ssrf_t *s = opts->ssrf;
    const char *n = c->name;
    if (opts->allow_http || opts->max_redirects > 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "%s: an SSRF policy allows neither plain http nor redirects", n);
    if (s->resolve && !s->resolve_free)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: resolve without resolve_free", n);
    size_t na = 0, nc = 0;
    while (s->allow_hosts && s->allow_hosts[na] && na <= CX_HTTP_SSRF_LIST_MAX)
        na++;
    while (s->connect_to && s->connect_to[nc] && nc <= CX_HTTP_SSRF_LIST_MAX)
        nc++;
    if (na > CX_HTTP_SSRF_LIST_MAX || nc > CX_HTTP_SSRF_LIST_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "%s: more than %d allow_hosts or connect_to entries", n,
                            CX_HTTP_SSRF_LIST_MAX);
    if (s->allow_hosts) {
        if (!(c->allow_hosts = calloc(na + 1, sizeof(*c->allow_hosts))))
            return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        for (size_t i = 0; i < na; i++) {
            if (!cx_http_allow_host_check(s->allow_hosts[i], NULL))
                return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                    "%s: an allow_hosts entry is malformed", n);
            if (!(c->allow_hosts[i] = strdup(s->allow_hosts[i])))
                return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        }
    }
    if (nc > 0 && !(c->connect_to = calloc(nc, sizeof(*c->connect_to))))
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    for (size_t i = 0; i < nc; i++) {
        cx_error_t why;
        if (!cx_http_connect_to_parse(s->connect_to[i], &c->connect_to[i], &why))
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: %s", n, why.message);
    }
    c->nconnect_to = nc;
    c->resolve = s->resolve;
    c->resolve_free = s->resolve_free;
    c->resolve_ctx = s->resolve_ctx;
    c->ssrf = true;
    return true;
}

cx_http_t *cx_http_new(const cx_http_options_t *opts, cx_error_t *err)
{
    const char *name = opts && opts->name && *opts->name ? opts->name : "HTTP peer";
    if (!opts) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "HTTP client without options");
        return NULL;
    }
    if (opts->ca_file && *opts->ca_file && access(opts->ca_file, R_OK) != 0) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: cannot read the CA file (%s)", name,
                     strerror(errno));
        return NULL;
    }
    cx_http_t *c = calloc(1, sizeof(*c));
    if (!c) {
        cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    c->pool_max = opts->pool_max ? opts->pool_max : 16;
    c->name = strdup(name);
    c->metrics_target = opts->metrics_target != NULL ? opts->metrics_target : "other";
    c->idle = calloc(c->pool_max, sizeof(*c->idle));
    if (!c->name || !c->idle ||
        (opts->ca_file && *opts->ca_file && !(c->ca_file = strdup(opts->ca_file)))) {
        cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        goto fail;
    }
    if (opts->ssrf && !ssrf_copy(c, opts, err))
        goto fail;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        cx_error_set(err, CX_ERR_INTERNAL, "cannot initialise libcurl");
        goto fail;
    }
    c->allow_http = opts->allow_http;
    c->timeout_ms = opts->timeout_ms ? (long)opts->timeout_ms : 3000;
    c->connect_timeout_ms =
        opts->connect_timeout_ms ? (long)opts->connect_timeout_ms : c->timeout_ms;
    c->max_response =
        opts->max_response_bytes ? opts->max_response_bytes : CX_HTTP_RESPONSE_DEFAULT;
    c->max_redirects = (long)opts->max_redirects;
    atomic_init(&c->connections, 0);
    pthread_mutex_init(&c->mu, NULL);
    return c;
fail:
    client_release(c);
    return NULL;
}

void cx_http_free(cx_http_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nidle; i++)
        curl_easy_cleanup(c->idle[i]);
    pthread_mutex_destroy(&c->mu);
    client_release(c);
    curl_global_cleanup();
}

uint64_t cx_http_connections_opened(cx_http_t *c)
{
    return c ? atomic_load(&c->connections) : 0;
}

static CURL *handle_take(cx_http_t *c)
{
    CURL *h = NULL;
    pthread_mutex_lock(&c->mu);
    if (c->nidle > 0)
        h = c->idle[--c->nidle];
    pthread_mutex_unlock(&c->mu);
    if (h) {
        curl_easy_reset(h); /* the options go, the connection stays */
        return h;
    }
    return curl_easy_init();
}

/* Keep a handle whose transfer completed; one that failed may hold a broken connection. */
static void handle_give(cx_http_t *c, CURL *h, bool reusable)
{
    if (!h)
        return;
    if (reusable) {
        curl_easy_reset(h); /* an idle handle keeps no option of the last request (a secret) */
        pthread_mutex_lock(&c->mu);
        if (c->nidle < c->pool_max) {
            c->idle[c->nidle++] = h;
            h = NULL;
        }
        pthread_mutex_unlock(&c->mu);
    }
    if (h)
        curl_easy_cleanup(h);
}

/* ---- one request ---------------------------------------------------------------------------- */

static bool scheme_allowed(const cx_http_t *c, const char *url)
{
    return strncasecmp(url, "https://", 8) == 0 ||
           (c->allow_http && strncasecmp(url, "http://", 7) == 0);
}

/* The one mapping of libcurl's transport failures to cx codes (header comment). */
static bool transfer_failed(const cx_http_t *c, CURLcode rc, const http_buf_t *b, cx_error_t *err)
{
    const char *n = c->name;
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return cx_error_set_detail(err, CX_ERR_UNAVAILABLE, CX_DETAIL_HTTP_DNS,
                                   "%s unreachable: its name does not resolve", n);
    case CURLE_COULDNT_CONNECT:
        return cx_error_set_detail(err, CX_ERR_UNAVAILABLE, CX_DETAIL_HTTP_CONNECT,
                                   "%s unreachable: connection refused or no route", n);
    case CURLE_OPERATION_TIMEDOUT:
        return cx_error_set_detail(err, CX_ERR_UNAVAILABLE, CX_DETAIL_HTTP_TIMEOUT,
                                   "%s did not answer within %ld ms", n, c->timeout_ms);
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_USE_SSL_FAILED:
        return cx_error_set_detail(err, CX_ERR_UNAVAILABLE, CX_DETAIL_HTTP_TLS,
                                   "%s: TLS failed (certificate not trusted, wrong name, or no "
                                   "common protocol version)",
                                   n);
    case CURLE_WRITE_ERROR:
        if (b->too_big)
            return cx_error_set_detail(err, CX_ERR_UNAVAILABLE, CX_DETAIL_HTTP_TOO_BIG,
                                       "%s: answer larger than %zu bytes", n, c->max_response);
        return cx_error_set(err, CX_ERR_INTERNAL, "%s: out of memory for the answer", n);
    case CURLE_ABORTED_BY_CALLBACK:
        return cx_error_set(err, CX_ERR_CANCELLED, "%s: request abandoned", n);
    case CURLE_UNSUPPORTED_PROTOCOL:
        return cx_error_set_detail(err, CX_ERR_UNAVAILABLE, CX_DETAIL_HTTP_SCHEME,
                                   "%s: redirected to a scheme that is not allowed", n);
    case CURLE_URL_MALFORMAT:
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: malformed URL", n);
    case CURLE_OUT_OF_MEMORY:
        return cx_error_set(err, CX_ERR_INTERNAL, "%s: out of memory", n);
    default:
        /* curl's text for a code is generic (no URL, no data). */
        return cx_error_set_detail(err, CX_ERR_UNAVAILABLE, CX_DETAIL_HTTP_TRANSPORT, "%s: %s", n,
                                   curl_easy_strerror(rc));
    }
}

static int progress_abort(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                          curl_off_t ulnow)
{
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    const cx_http_request_t *req = ud;
    return req->abort(req->abort_ctx) ? 1 : 0;
}

static bool header_clean(const char *s)
{
    return s && !strpbrk(s, "\r\n");
}

/* The request headers as a curl list; "Expect:" stops libcurl from waiting for a 100 Continue
 * before larger bodies (a round trip no peer of ours needs). Not on a signed request: libcurl's
 * SigV4 signs every header of the list, this removal too, as an "expect" header the request
 * never carries, and the signature would not verify (a signed body is small enough that libcurl
 * sends no Expect of its own). */
static bool build_headers(const cx_http_t *c, const cx_http_request_t *req, struct curl_slist **out,
                          cx_error_t *err)
{
    if (req->nheaders > CX_HTTP_HEADERS_MAX || (req->nheaders && !req->headers))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: too many request headers", c->name);
    struct curl_slist *l = req->sigv4 ? NULL : curl_slist_append(NULL, "Expect:");
    if (!req->sigv4 && !l)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    for (size_t i = 0; i < req->nheaders; i++) {
        const cx_http_header_t *hd = &req->headers[i];
        char line[CX_HTTP_HEADER_MAX];
        if (!header_clean(hd->name) || !*hd->name || strchr(hd->name, ':') ||
            !header_clean(hd->value) ||
            snprintf(line, sizeof(line), "%s: %s", hd->name, hd->value) >= (int)sizeof(line)) {
            curl_slist_free_all(l);
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: malformed request header",
                                c->name);
        }
        struct curl_slist *n = curl_slist_append(l, line);
        if (!n) {
            curl_slist_free_all(l);
            return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        }
        l = n;
    }
    *out = l;
    return true;
}

/* SigV4 signing (cx_http_sigv4_t): libcurl computes the Authorization header at send time. The
 * handle is reset before it goes back to the pool (handle_give), so no idle handle keeps it. */
static bool set_sigv4(const cx_http_t *c, CURL *h, const cx_http_sigv4_t *s, cx_error_t *err)
{
    if (!s)
        return true;
    if (!s->provider || !*s->provider || !s->access_key_id || !*s->access_key_id ||
        strchr(s->access_key_id, ':') || !s->secret_access_key || !*s->secret_access_key)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: incomplete request signing",
                            c->name);
    if (curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->provider) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_USERNAME, s->access_key_id) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_PASSWORD, s->secret_access_key) != CURLE_OK)
        return cx_error_set(err, CX_ERR_INTERNAL, "%s: request signing is not available", c->name);
    return true;
}

/* Method and body; false for a combination that makes no sense. */
static bool set_method(const cx_http_t *c, CURL *h, const cx_http_request_t *req, cx_error_t *err)
{
    static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"};
    const char *m = req->method ? req->method : (req->body ? "POST" : "GET");
    size_t i = 0;
    while (i < sizeof(methods) / sizeof(methods[0]) && strcmp(m, methods[i]) != 0)
        i++;
    if (i == sizeof(methods) / sizeof(methods[0]) || (req->body && i < 2))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: unsupported method or body",
                            c->name);
    if (req->body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    }
    if (i == 1)
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    else if (i > 2)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, m);
    return true;
}

static void set_transport(const cx_http_t *c, CURL *h, http_buf_t *b)
{
    const char *protocols = c->allow_http ? "http,https" : "https";
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, protocols);
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, protocols);
    if (c->max_redirects > 0) {
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(h, CURLOPT_MAXREDIRS, c->max_redirects);
    }
    /* libcurl's defaults, set again so that no build or environment default turns them off. */
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (c->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "credex");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, http_buf_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
}

/* Retry-After: delta-seconds or an HTTP date (RFC 9110 section 10.2.3). */
static int64_t retry_after(const char *v)
{
    size_t n = strspn(v, "0123456789");
    if (n > 0 && v[n] == '\0')
        return n > 9 ? 999999999 : strtoll(v, NULL, 10);
    time_t t = curl_getdate(v, NULL);
    if (t == (time_t)-1)
        return -1;
    time_t now = time(NULL);
    return t > now ? (int64_t)(t - now) : 0;
}

static void read_headers(CURL *h, cx_http_response_t *resp)
{
    struct curl_header *hd = NULL;
    resp->retry_after_s = -1;
    if (curl_easy_header(h, "Content-Type", 0, CURLH_HEADER, -1, &hd) == CURLHE_OK &&
        strlen(hd->value) < sizeof(resp->content_type))
        strcpy(resp->content_type, hd->value);
    if (curl_easy_header(h, "Retry-After", 0, CURLH_HEADER, -1, &hd) == CURLHE_OK)
        resp->retry_after_s = retry_after(hd->value);
}

/* ---- the connect-time SSRF check (cx_http_ssrf_t) ------------------------------------------- */

#define PIN_MAX 16 /* addresses of one name pinned and allowed per request; all are checked */

/* The addresses (with ports) a request may open a socket to: the checked ones. */
typedef struct pin {
    struct sockaddr_storage addr[PIN_MAX];
    size_t n;
    bool refused; /* libcurl tried to open a socket to another address */
} pin_t;

/* What a request of a client with an SSRF policy owns until its transfer ends. */
typedef struct ssrf_req {
    CURLU *url; /* the URL as libcurl reads it, the same parse it connects by */
    struct curl_slist *resolve, *connect_to;
    pin_t pin;
} ssrf_req_t;

static void ssrf_req_free(ssrf_req_t *r)
{
    curl_url_cleanup(r->url);
    curl_slist_free_all(r->resolve);
    curl_slist_free_all(r->connect_to);
}

/* Same family, address and port (an IPv6 scope is not compared: no checked address has one). */
static bool addr_same(const struct sockaddr_storage *a, const struct sockaddr *b, size_t blen)
{
    if (a->ss_family != b->sa_family)
        return false;
    if (a->ss_family == AF_INET && blen >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in x, y;
        memcpy(&x, a, sizeof(x));
        memcpy(&y, b, sizeof(y));
        return x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6 && blen >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 x, y;
        memcpy(&x, a, sizeof(x));
        memcpy(&y, b, sizeof(y));
        return x.sin6_port == y.sin6_port &&
               memcmp(&x.sin6_addr, &y.sin6_addr, sizeof(x.sin6_addr)) == 0;
    }
    return false;
}

/* The one place libcurl opens sockets for a client with an SSRF policy: only to a checked
 * address and port, whatever libcurl resolved or was told. */
static curl_socket_t open_pinned(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    pin_t *p = ud;
    for (size_t i = 0; purpose == CURLSOCKTYPE_IPCXN && i < p->n; i++)
        if (addr_same(&p->addr[i], &a->addr, a->addrlen))
            return socket(a->family, a->socktype, a->protocol);
    p->refused = true;
    return CURL_SOCKET_BAD;
}

/* Add a checked address (AF_INET or AF_INET6, its length checked by the caller) with port. */
static void pin_add(pin_t *p, const struct sockaddr *sa, unsigned port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in in;
        memcpy(&in, sa, sizeof(in));
        struct sockaddr_in out = {.sin_family = AF_INET, .sin_addr = in.sin_addr};
        out.sin_port = htons((uint16_t)port);
        memcpy(&ss, &out, sizeof(out));
    } else {
        struct sockaddr_in6 in6;
        memcpy(&in6, sa, sizeof(in6));
        struct sockaddr_in6 out = {.sin6_family = AF_INET6, .sin6_addr = in6.sin6_addr};
        out.sin6_port = htons((uint16_t)port);
        memcpy(&ss, &out, sizeof(out));
    }
    for (size_t i = 0; i < p->n; i++)
        if (addr_same(&p->addr[i], (const struct sockaddr *)&ss, sizeof(ss)))
            return;
    if (p->n < PIN_MAX)
        p->addr[p->n++] = ss;
}

static bool addr_len_ok(const struct addrinfo *ai)
{
    return ai->ai_addr &&
           ((ai->ai_family == AF_INET && ai->ai_addrlen >= sizeof(struct sockaddr_in)) ||
            (ai->ai_family == AF_INET6 && ai->ai_addrlen >= sizeof(struct sockaddr_in6)));
}

/* Resolve host once and check every address; the public ones go into the pin. */
static bool ssrf_resolve(const cx_http_t *c, const char *host, unsigned port, pin_t *pin,
                         cx_error_t *err)
{
    char ps[8];
    snprintf(ps, sizeof(ps), "%u", port);
    struct addrinfo *res = NULL;
    int rc;
    if (c->resolve) {
        rc = c->resolve(c->resolve_ctx, host, ps, &res);
    } else {
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        rc = getaddrinfo(host, ps, &hints, &res);
    }
    if (rc != 0)
        return cx_error_set_detail(err, CX_ERR_UNAVAILABLE, CX_DETAIL_HTTP_DNS,
                                   "%s unreachable: its name does not resolve", c->name);
    cx_http_ip_class_t bad = CX_HTTP_IP_PUBLIC;
    for (const struct addrinfo *ai = res; ai && bad == CX_HTTP_IP_PUBLIC; ai = ai->ai_next) {
        if (ai->ai_socktype != 0 && ai->ai_socktype != SOCK_STREAM)
            continue;
        bad = addr_len_ok(ai) ? cx_http_ip_classify(ai->ai_addr) : CX_HTTP_IP_RESERVED;
        if (bad == CX_HTTP_IP_PUBLIC)
            pin_add(pin, ai->ai_addr, port);
    }
    if (res && c->resolve)
        c->resolve_free(c->resolve_ctx, res);
    else if (res)
        freeaddrinfo(res);
    /* One forbidden address refuses the name: libcurl may try any address of a name. */
    if (bad != CX_HTTP_IP_PUBLIC)
        return cx_error_set(err, CX_ERR_SSRF_BLOCKED,
                            "%s: the host resolves to a forbidden address (%s); nothing sent",
                            c->name, cx_http_ip_class_name(bad));
    if (pin->n == 0)
        return cx_error_set_detail(err, CX_ERR_UNAVAILABLE, CX_DETAIL_HTTP_DNS,
                                   "%s unreachable: its name does not resolve", c->name);
    return true;
}

static bool slist_add(struct curl_slist **l, const char *s)
{
    struct curl_slist *n = curl_slist_append(*l, s);
    if (n)
        *l = n;
    return n != NULL;
}

static unsigned addr_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

static void addr_text(const struct sockaddr_storage *ss, char *out, size_t n)
{
    char a[INET6_ADDRSTRLEN] = "";
    if (ss->ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, a, sizeof(a));
        snprintf(out, n, "[%s]", a);
    } else {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, a, sizeof(a));
        snprintf(out, n, "%s", a);
    }
}

/* CURLOPT_RESOLVE for name:port: the earlier pin of a reused handle removed, the checked
 * addresses added (libcurl keeps such entries in the handle's DNS cache for good). */
static bool pin_entries(ssrf_req_t *r, const char *name, size_t nl, unsigned port)
{
    char line[CX_HTTP_HOST_MAX + PIN_MAX * (INET6_ADDRSTRLEN + 3) + 16];
    int k = snprintf(line, sizeof(line), "-%.*s:%u", (int)nl, name, port);
    if (!slist_add(&r->resolve, line))
        return false;
    for (size_t i = 0; i < r->pin.n; i++) {
        char a[INET6_ADDRSTRLEN + 3];
        addr_text(&r->pin.addr[i], a, sizeof(a));
        k += snprintf(line + k, sizeof(line) - (size_t)k, "%s%s", i ? "," : ":", a);
    }
    return slist_add(&r->resolve, line + 1);
}

/* Everything of cx_http_ssrf_t before the transfer: screen, resolve, check, pin. */
static bool ssrf_prepare(const cx_http_t *c, CURL *h, const char *url, ssrf_req_t *r,
                         cx_error_t *err)
{
    cx_error_t why;
    if (!cx_http_url_check(url, (const char *const *)c->allow_hosts, &why))
        return cx_error_set(err, why.code, "%s: %s", c->name, why.message);
    char *host = NULL, *port = NULL;
    bool ok = false;
    r->url = curl_url();
    if (!r->url || curl_url_set(r->url, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(r->url, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(r->url, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: malformed URL", c->name);
        goto out;
    }
    unsigned pn = (unsigned)strtoul(port, NULL, 10);
    size_t hl = strlen(host);
    const cx_http_connect_to_t *ct = NULL;
    for (size_t i = 0; i < c->nconnect_to && !ct; i++)
        if (c->connect_to[i].port == pn && strcasecmp(c->connect_to[i].host, host) == 0)
            ct = &c->connect_to[i];
    cx_http_host_t lit;
    if (ct) {
        /* the override: only its loopback target, TLS still for host */
        char line[CX_HTTP_HOST_MAX + INET6_ADDRSTRLEN + 32], a[INET6_ADDRSTRLEN + 3];
        addr_text(&ct->target, a, sizeof(a));
        unsigned p2 = addr_port(&ct->target);
        snprintf(line, sizeof(line), "%s:%u:%s:%u", host, pn, a, p2);
        pin_add(&r->pin, (const struct sockaddr *)&ct->target, p2);
        if (!slist_add(&r->connect_to, line))
            goto oom;
    } else if (cx_http_host_literal_parse(host, hl, &lit, NULL) && lit.kind == CX_HTTP_HOST_IP) {
        pin_add(&r->pin, (const struct sockaddr *)&lit.addr, pn); /* public: screened above */
    } else {
        if (!ssrf_resolve(c, host, pn, &r->pin, err))
            goto out;
        /* libcurl may look the name up with or without its one trailing dot: pin both */
        if (!pin_entries(r, host, hl, pn) ||
            (hl > 1 && host[hl - 1] == '.' && !pin_entries(r, host, hl - 1, pn)))
            goto oom;
    }
    curl_easy_setopt(h, CURLOPT_CURLU, r->url);
    curl_easy_setopt(h, CURLOPT_RESOLVE, r->resolve);
    curl_easy_setopt(h, CURLOPT_CONNECT_TO, r->connect_to);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_pinned);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, &r->pin);
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_UNRESTRICTED_AUTH, 0L);
    ok = true;
    goto out;
oom:
    cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
out:
    curl_free(host);
    curl_free(port);
    return ok;
}

static bool http_do(cx_http_t *c, const cx_http_request_t *req, cx_http_response_t *resp,
                    cx_error_t *err);

/* http_do, counted and timed: the result is the reason code of a failed exchange, or the
 * status class of the response ("2xx" .. "5xx"). */
bool cx_http_do(cx_http_t *c, const cx_http_request_t *req, cx_http_response_t *resp,
                cx_error_t *err)
{
    static const char *const classes[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
    uint64_t t0 = cx_metrics_now_us();
    bool ok = http_do(c, req, resp, err);
    if (c == NULL || req == NULL || resp == NULL)
        return ok;
    const char *code = ok ? "other" : cx_code_reason(err->code);
    if (ok && resp->status >= 100 && resp->status < 600)
        code = classes[resp->status / 100 - 1];
    cx_metrics_client_call(CX_METRICS_HTTP, c->metrics_target,
                           req->method != NULL ? req->method
                           : req->body != NULL ? "POST"
                                               : "GET",
                           code, cx_metrics_now_us() - t0);
    return ok;
}

static bool http_do(cx_http_t *c, const cx_http_request_t *req, cx_http_response_t *resp,
                    cx_error_t *err)
{
    if (resp)
        memset(resp, 0, sizeof(*resp));
    if (!c || !req || !req->url || !resp)
        return cx_error_set(err, CX_ERR_INTERNAL, "HTTP request without client, URL or reply");
    /* A client with an SSRF policy screens its URLs with cx_http_url_check (ssrf_prepare). */
    if (!c->ssrf && !scheme_allowed(c, req->url))
        return cx_error_set_detail(err, CX_ERR_INVALID_ARGUMENT, CX_DETAIL_HTTP_SCHEME,
                                   "%s: only %s URLs are allowed", c->name,
                                   c->allow_http ? "http and https" : "https");
    bool ok = false, reusable = false;
    http_buf_t b = {.max = c->max_response};
    struct curl_slist *hdrs = NULL;
    ssrf_req_t sr;
    memset(&sr, 0, sizeof(sr));
    CURL *h = handle_take(c);
    if (!h) {
        cx_error_set(err, CX_ERR_UNAVAILABLE, "%s: cannot create an HTTP handle", c->name);
        goto out;
    }
    if (!build_headers(c, req, &hdrs, err) || !set_method(c, h, req, err) ||
        !set_sigv4(c, h, req->sigv4, err))
        goto out;
    set_transport(c, h, &b);
    if (c->ssrf) {
        if (!ssrf_prepare(c, h, req->url, &sr, err))
            goto out;
    } else {
        curl_easy_setopt(h, CURLOPT_URL, req->url);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    if (req->abort) {
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, progress_abort);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, req);
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    }
    CURLcode rc = curl_easy_perform(h);
    long opened = 0;
    if (curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &opened) == CURLE_OK && opened > 0)
        atomic_fetch_add(&c->connections, (uint_fast64_t)opened);
    if (rc != CURLE_OK && sr.pin.refused) {
        cx_error_set(err, CX_ERR_SSRF_BLOCKED,
                     "%s: a connection to an address that was not checked was refused", c->name);
        goto out;
    }
    if (rc != CURLE_OK) {
        transfer_failed(c, rc, &b, err);
        goto out;
    }
    if (!b.data && !(b.data = calloc(1, 1))) {
        cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
    read_headers(h, resp);
    resp->body = b.data;
    resp->body_len = b.len;
    b.data = NULL;
    ok = reusable = true;
out:
    free(b.data);
    curl_slist_free_all(hdrs);
    handle_give(c, h, reusable);
    ssrf_req_free(&sr);
    return ok;
}

void cx_http_response_free(cx_http_response_t *resp)
{
    if (!resp)
        return;
    free(resp->body);
    memset(resp, 0, sizeof(*resp));
}
