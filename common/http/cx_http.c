/* cx_http: see cx_http.h. */
#include "common/http/cx_http.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

struct cx_http {
    char *name;
    char *ca_file; /* NULL: system store */
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
    if (opts->ssrf) {
        /* The connect-time half is being built; until then no client may claim the policy. */
        cx_error_set(err, CX_ERR_UNIMPLEMENTED, "%s: the SSRF policy is not implemented yet", name);
        return NULL;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        cx_error_set(err, CX_ERR_INTERNAL, "cannot initialise libcurl");
        return NULL;
    }
    cx_http_t *c = calloc(1, sizeof(*c));
    if (!c)
        goto fail;
    c->pool_max = opts->pool_max ? opts->pool_max : 16;
    c->name = strdup(name);
    c->idle = calloc(c->pool_max, sizeof(*c->idle));
    if (!c->name || !c->idle ||
        (opts->ca_file && *opts->ca_file && !(c->ca_file = strdup(opts->ca_file))))
        goto fail;
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
    if (c) {
        free(c->name);
        free(c->ca_file);
        free(c->idle);
        free(c);
    }
    curl_global_cleanup();
    cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    return NULL;
}

void cx_http_free(cx_http_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nidle; i++)
        curl_easy_cleanup(c->idle[i]);
    pthread_mutex_destroy(&c->mu);
    free(c->idle);
    free(c->name);
    free(c->ca_file);
    free(c);
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
 * before larger bodies (a round trip no peer of ours needs). */
static bool build_headers(const cx_http_t *c, const cx_http_request_t *req, struct curl_slist **out,
                          cx_error_t *err)
{
    if (req->nheaders > CX_HTTP_HEADERS_MAX || (req->nheaders && !req->headers))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: too many request headers", c->name);
    struct curl_slist *l = curl_slist_append(NULL, "Expect:");
    for (size_t i = 0; l && i < req->nheaders; i++) {
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
    if (!l)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    *out = l;
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

bool cx_http_do(cx_http_t *c, const cx_http_request_t *req, cx_http_response_t *resp,
                cx_error_t *err)
{
    if (resp)
        memset(resp, 0, sizeof(*resp));
    if (!c || !req || !req->url || !resp)
        return cx_error_set(err, CX_ERR_INTERNAL, "HTTP request without client, URL or reply");
    if (!scheme_allowed(c, req->url))
        return cx_error_set_detail(err, CX_ERR_INVALID_ARGUMENT, CX_DETAIL_HTTP_SCHEME,
                                   "%s: only %s URLs are allowed", c->name,
                                   c->allow_http ? "http and https" : "https");
    bool ok = false, reusable = false;
    http_buf_t b = {.max = c->max_response};
    struct curl_slist *hdrs = NULL;
    CURL *h = handle_take(c);
    if (!h) {
        cx_error_set(err, CX_ERR_UNAVAILABLE, "%s: cannot create an HTTP handle", c->name);
        goto out;
    }
    if (!build_headers(c, req, &hdrs, err) || !set_method(c, h, req, err))
        goto out;
    set_transport(c, h, &b);
    curl_easy_setopt(h, CURLOPT_URL, req->url);
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
    return ok;
}

void cx_http_response_free(cx_http_response_t *resp)
{
    if (!resp)
        return;
    free(resp->body);
    memset(resp, 0, sizeof(*resp));
}
