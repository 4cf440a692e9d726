/*
 * Unit tests of common/http against real local servers: a small HTTP/1.1 keep-alive server run
 * by this test in a thread (it counts the connections it accepts, answers by path, and can stay
 * silent), and openssl s_server for TLS with certificates of the test PKI (credex_test_pki).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/http/cx_http.h"
#include "tests/unit/kit/testkit.h"

/* ---- a keep-alive HTTP/1.1 server, one connection at a time --------------------------------- */

typedef struct server {
    int lfd, port;
    pthread_t thread;
    atomic_bool stop;
    atomic_int connections; /* accepted so far */
} server_t;

static server_t srv;

/* The last request to "/record", as received (head and body), for the SigV4 test. */
static char recorded[16384];

static bool send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static bool respond(int fd, int status, const char *extra_headers, const char *body, size_t len)
{
    char head[512];
    int n = snprintf(head, sizeof(head), "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n%s\r\n", status,
                     len, extra_headers);
    return send_all(fd, head, (size_t)n) && send_all(fd, body, len);
}

/* Answer one parsed request; false when the connection should end (or stay silent). */
static bool answer(int fd, const char *method, const char *path, const char *headers,
                   const char *body, size_t body_len)
{
    if (strcmp(path, "/record") == 0) {
        snprintf(recorded, sizeof(recorded), "%s\r\n%.*s", headers, (int)body_len, body);
        return respond(fd, 200, "", "{}", 2);
    }
    if (strcmp(path, "/json") == 0)
        return respond(fd, 200, "Content-Type: application/json\r\n", "{\"ok\":true}", 11);
    if (strcmp(path, "/retry") == 0)
        return respond(fd, 503, "Content-Type: text/plain\r\nRetry-After: 7\r\n", "busy", 4);
    if (strcmp(path, "/retry-date") == 0)
        return respond(fd, 429, "Retry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n", "", 0);
    if (strcmp(path, "/redirect") == 0)
        return respond(fd, 302, "Location: /json\r\n", "", 0);
    if (strncmp(path, "/big/", 5) == 0) {
        size_t n = strtoul(path + 5, NULL, 10);
        char *b = malloc(n + 1);
        memset(b, 'b', n);
        bool ok = respond(fd, 200, "", b, n);
        free(b);
        return ok;
    }
    if (strcmp(path, "/echo") == 0) {
        const char *x = strcasestr(headers, "\r\nx-test: ");
        char out[4096];
        int n = snprintf(out, sizeof(out), "%s %.*s %.*s", method,
                         x ? (int)strcspn(x + 10, "\r") : 0, x ? x + 10 : "", (int)body_len, body);
        return respond(fd, 200, "Content-Type: text/plain\r\n", out, (size_t)n);
    }
    return false; /* "/silent" and anything else: no answer */
}

/* Serve one connection until the client closes it or the server stops. */
static void serve_connection(int fd)
{
    char buf[65536];
    size_t have = 0;
    bool silent = false;
    while (!atomic_load(&srv.stop)) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        ssize_t r = recv(fd, buf + have, sizeof(buf) - 1 - have, 0);
        if (r <= 0)
            return;
        have += (size_t)r;
        buf[have] = '\0';
        char *end;
        while (!silent && (end = strstr(buf, "\r\n\r\n")) != NULL) {
            size_t head_len = (size_t)(end + 4 - buf);
            const char *cl = strcasestr(buf, "\r\ncontent-length: ");
            size_t body_len = cl && cl < end ? strtoul(cl + 18, NULL, 10) : 0;
            if (have < head_len + body_len)
                break;
            char method[16] = "", path[256] = "";
            sscanf(buf, "%15s %255s", method, path);
            end[2] = '\0'; /* headers end with their last CRLF */
            if (!answer(fd, method, path, buf, buf + head_len, body_len))
                silent = true;
            memmove(buf, buf + head_len + body_len, have - head_len - body_len);
            have -= head_len + body_len;
            buf[have] = '\0';
        }
    }
}

static void *server_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&srv.stop)) {
        struct pollfd p = {.fd = srv.lfd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int fd = accept(srv.lfd, NULL, NULL);
        if (fd < 0)
            continue;
        atomic_fetch_add(&srv.connections, 1);
        serve_connection(fd);
        close(fd);
    }
    return NULL;
}

static int setup(void **state)
{
    (void)state;
    srv.lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (bind(srv.lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(srv.lfd, 8) != 0 ||
        getsockname(srv.lfd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    srv.port = ntohs(a.sin_port);
    atomic_init(&srv.stop, false);
    atomic_init(&srv.connections, 0);
    return pthread_create(&srv.thread, NULL, server_main, NULL) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    atomic_store(&srv.stop, true);
    pthread_join(srv.thread, NULL);
    close(srv.lfd);
    return 0;
}

static const char *url_of(const char *path)
{
    static char u[4][256];
    static int i;
    i = (i + 1) % 4;
    snprintf(u[i], sizeof(u[i]), "http://127.0.0.1:%d%s", srv.port, path);
    return u[i];
}

static cx_http_t *plain_client(unsigned timeout_ms, size_t max)
{
    cx_http_options_t o = {.name = "test peer",
                           .allow_http = true,
                           .timeout_ms = timeout_ms,
                           .max_response_bytes = max};
    cx_error_t err;
    cx_http_t *c = cx_http_new(&o, &err);
    assert_non_null(c);
    return c;
}

/* GET path; the status, or -(cx code) on failure with *err filled. */
static long get(cx_http_t *c, const char *path, cx_http_response_t *r, cx_error_t *err)
{
    cx_http_request_t rq = {.url = url_of(path)};
    if (!cx_http_do(c, &rq, r, err))
        return -(long)err->code;
    return r->status;
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_status_and_headers(void **state)
{
    (void)state;
    cx_http_t *c = plain_client(2000, 0);
    cx_http_response_t r;
    cx_error_t err;
    assert_int_equal(get(c, "/json", &r, &err), 200);
    assert_string_equal(r.body, "{\"ok\":true}");
    assert_int_equal(r.body_len, 11);
    assert_string_equal(r.content_type, "application/json");
    assert_int_equal(r.retry_after_s, -1);
    cx_http_response_free(&r);
    /* an error status is an answer, not a failure: the caller decides */
    assert_int_equal(get(c, "/retry", &r, &err), 503);
    assert_string_equal(r.body, "busy");
    assert_int_equal(r.retry_after_s, 7);
    assert_string_equal(r.content_type, "text/plain");
    cx_http_response_free(&r);
    /* a date in the past means "now" */
    assert_int_equal(get(c, "/retry-date", &r, &err), 429);
    assert_int_equal(r.retry_after_s, 0);
    assert_string_equal(r.content_type, "");
    assert_string_equal(r.body, "");
    cx_http_response_free(&r);
    cx_http_response_free(NULL);
    cx_http_free(c);
}

static void test_request_shape(void **state)
{
    (void)state;
    cx_http_t *c = plain_client(2000, 0);
    cx_http_response_t r;
    cx_error_t err;
    cx_http_header_t h[] = {{"x-test", "abc"}, {"content-type", "application/json"}};
    cx_http_request_t rq = {
        .url = url_of("/echo"), .headers = h, .nheaders = 2, .body = "{\"a\":1}", .body_len = 7};
    assert_true(cx_http_do(c, &rq, &r, &err));
    assert_string_equal(r.body, "POST abc {\"a\":1}");
    cx_http_response_free(&r);
    rq.method = "PUT";
    assert_true(cx_http_do(c, &rq, &r, &err));
    assert_string_equal(r.body, "PUT abc {\"a\":1}");
    cx_http_response_free(&r);
    rq.method = "DELETE";
    rq.body = NULL;
    rq.nheaders = 1;
    assert_true(cx_http_do(c, &rq, &r, &err));
    assert_string_equal(r.body, "DELETE abc ");
    cx_http_response_free(&r);

    /* refused before anything is sent: header injection, a body on GET, unknown methods */
    int before = atomic_load(&srv.connections);
    cx_http_header_t bad[] = {{"x-test", "a\r\nx-evil: 1"}};
    cx_http_request_t inj = {.url = url_of("/echo"), .headers = bad, .nheaders = 1};
    assert_false(cx_http_do(c, &inj, &r, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    cx_http_request_t getbody = {
        .url = url_of("/echo"), .method = "GET", .body = "x", .body_len = 1};
    assert_false(cx_http_do(c, &getbody, &r, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    cx_http_request_t trace = {.url = url_of("/echo"), .method = "TRACE"};
    assert_false(cx_http_do(c, &trace, &r, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_int_equal(atomic_load(&srv.connections), before);
    cx_http_free(c);
}

/* ---- SigV4, recomputed from the specification with OpenSSL ------------------------------------
 */

static void hex_of(const unsigned char *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

static void sha256_hex(const char *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned mdlen = 0;
    assert_int_equal(EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL), 1);
    hex_of(md, 32, out);
}

static void hmac(const unsigned char *key, size_t keylen, const char *data, unsigned char out[32])
{
    size_t outlen = 0;
    assert_non_null(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, keylen,
                              (const unsigned char *)data, strlen(data), out, 32, &outlen));
    assert_int_equal(outlen, 32);
}

/* The value of header name (any case) in a recorded head, trimmed, into out. */
static bool header_value(const char *head, const char *name, char *out, size_t n)
{
    char pat[128];
    snprintf(pat, sizeof(pat), "\r\n%s:", name);
    const char *p = strcasestr(head, pat);
    if (p == NULL)
        return false;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    size_t l = strcspn(p, "\r");
    while (l > 0 && p[l - 1] == ' ')
        l--;
    snprintf(out, n, "%.*s", (int)l, p);
    return true;
}

/* A signed request carries an Authorization header that a verifier following the SigV4
 * specification (canonical request, string to sign, derived signing key) recomputes exactly, over
 * every header the request set; the secret itself is never sent; a signing request that lacks
 * a part is refused before anything is sent; a pooled handle signs nothing afterwards. */
static void test_sigv4_signature(void **state)
{
    (void)state;
    static const char secret[] = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    static const char body[] = "{\"KeyId\":\"alias/credex\",\"KeySpec\":\"AES_256\"}";
    cx_http_t *c = plain_client(2000, 0);
    cx_http_response_t r;
    cx_error_t err;
    cx_http_header_t h[] = {{"Content-Type", "application/x-amz-json-1.1"},
                            {"X-Amz-Target", "TrentService.GenerateDataKey"},
                            {"X-Amz-Security-Token", "FwoGZXIvYXdzEXAMPLETOKEN"}};
    cx_http_sigv4_t sig = {"aws:amz:eu-west-1:kms", "AKIDEXAMPLE", secret};
    cx_http_request_t rq = {.method = "POST",
                            .url = url_of("/record"),
                            .headers = h,
                            .nheaders = 3,
                            .body = body,
                            .body_len = strlen(body),
                            .sigv4 = &sig};
    recorded[0] = '\0';
    assert_true(cx_http_do(c, &rq, &r, &err));
    assert_int_equal(r.status, 200);
    cx_http_response_free(&r);
    assert_null(strstr(recorded, secret));

    char auth[1024], amzdate[32], signed_headers[512], got_sig[65], date[9];
    assert_true(header_value(recorded, "authorization", auth, sizeof(auth)));
    assert_true(header_value(recorded, "x-amz-date", amzdate, sizeof(amzdate)));
    assert_int_equal(strlen(amzdate), 16); /* YYYYMMDDTHHMMSSZ */
    int used = 0;
    assert_int_equal(sscanf(auth,
                            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/%8[0-9]/eu-west-1/kms/"
                            "aws4_request, SignedHeaders=%511[a-z0-9;-], Signature=%64[0-9a-f]%n",
                            date, signed_headers, got_sig, &used),
                     3);
    assert_int_equal((size_t)used, strlen(auth));
    assert_int_equal(strncmp(date, amzdate, 8), 0);
    /* Every header the request set is signed, with the two libcurl adds, sorted. */
    assert_string_equal(signed_headers,
                        "content-type;host;x-amz-date;x-amz-security-token;x-amz-target");

    /* The canonical request, from what the server received. */
    char canon[8192], line[1024], hash[65];
    size_t at = (size_t)snprintf(canon, sizeof(canon), "POST\n/record\n\n");
    char names[512];
    snprintf(names, sizeof(names), "%s", signed_headers);
    for (char *save = NULL, *name = strtok_r(names, ";", &save); name != NULL;
         name = strtok_r(NULL, ";", &save)) {
        assert_true(header_value(recorded, name, line, sizeof(line)));
        at += (size_t)snprintf(canon + at, sizeof(canon) - at, "%s:%s\n", name, line);
    }
    sha256_hex(body, strlen(body), hash);
    at += (size_t)snprintf(canon + at, sizeof(canon) - at, "\n%s\n%s", signed_headers, hash);
    char sts[512], canon_hash[65];
    sha256_hex(canon, at, canon_hash);
    snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256\n%s\n%s/eu-west-1/kms/aws4_request\n%s", amzdate,
             date, canon_hash);
    unsigned char k[32], k2[32];
    char kdate_key[64];
    snprintf(kdate_key, sizeof(kdate_key), "AWS4%s", secret);
    hmac((const unsigned char *)kdate_key, strlen(kdate_key), date, k);
    hmac(k, 32, "eu-west-1", k2);
    hmac(k2, 32, "kms", k);
    hmac(k, 32, "aws4_request", k2);
    hmac(k2, 32, sts, k);
    char want_sig[65];
    hex_of(k, 32, want_sig);
    assert_string_equal(got_sig, want_sig);

    /* The pooled handle (same connection) signs nothing once the request does not ask. */
    int before = atomic_load(&srv.connections);
    rq.sigv4 = NULL;
    assert_true(cx_http_do(c, &rq, &r, &err));
    cx_http_response_free(&r);
    assert_int_equal(atomic_load(&srv.connections), before);
    assert_false(header_value(recorded, "authorization", auth, sizeof(auth)));
    /* Incomplete signing settings: refused, nothing sent. */
    recorded[0] = '\0';
    cx_http_sigv4_t half = {"aws:amz:eu-west-1:kms", "AKIDEXAMPLE", ""};
    rq.sigv4 = &half;
    assert_false(cx_http_do(c, &rq, &r, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_null(strstr(err.message, "AKIDEXAMPLE"));
    assert_int_equal(recorded[0], '\0');
    cx_http_free(c);
}

/* Two requests in a row travel on one kept-alive connection; a failed transfer's connection is
 * not reused. */
static void test_connection_reuse(void **state)
{
    (void)state;
    cx_http_t *c = plain_client(300, 0);
    cx_http_response_t r;
    cx_error_t err;
    int before = atomic_load(&srv.connections);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(get(c, "/json", &r, &err), 200);
        cx_http_response_free(&r);
    }
    assert_int_equal(atomic_load(&srv.connections) - before, 1);
    assert_int_equal(cx_http_connections_opened(c), 1);
    /* a timed-out transfer drops its handle (its connection may be half-used) */
    assert_int_equal(get(c, "/silent", &r, &err), -CX_ERR_UNAVAILABLE);
    assert_int_equal(get(c, "/json", &r, &err), 200);
    cx_http_response_free(&r);
    assert_int_equal(atomic_load(&srv.connections) - before, 2);
    assert_int_equal(cx_http_connections_opened(c), 2);
    cx_http_free(c);
}

static void test_response_size_limit(void **state)
{
    (void)state;
    cx_http_t *c = plain_client(2000, 1000);
    cx_http_response_t r;
    cx_error_t err;
    assert_int_equal(get(c, "/big/1000", &r, &err), 200); /* exactly the limit: fine */
    assert_int_equal(r.body_len, 1000);
    cx_http_response_free(&r);
    assert_int_equal(get(c, "/big/1001", &r, &err), -CX_ERR_UNAVAILABLE);
    assert_int_equal(err.detail, CX_DETAIL_HTTP_TOO_BIG);
    assert_null(r.body);
    assert_int_equal(get(c, "/big/5000000", &r, &err), -CX_ERR_UNAVAILABLE);
    assert_int_equal(err.detail, CX_DETAIL_HTTP_TOO_BIG);
    cx_http_free(c);
}

static void test_timeout_on_a_silent_server(void **state)
{
    (void)state;
    cx_http_t *c = plain_client(300, 0);
    cx_http_response_t r;
    cx_error_t err;
    double t0 = tk_now();
    assert_int_equal(get(c, "/silent", &r, &err), -CX_ERR_UNAVAILABLE);
    double took = tk_now() - t0;
    assert_int_equal(err.detail, CX_DETAIL_HTTP_TIMEOUT);
    if (took < 0.25 || took > 2.0)
        fail_msg("a silent server took %.2f s to fail, with a 0.3 s timeout", took);
    cx_http_free(c);
}

static bool always(void *ctx)
{
    atomic_fetch_add((atomic_int *)ctx, 1);
    return true;
}

static void test_abort_callback(void **state)
{
    (void)state;
    cx_http_t *c = plain_client(5000, 0);
    cx_http_response_t r;
    cx_error_t err;
    atomic_int asked;
    atomic_init(&asked, 0);
    cx_http_request_t rq = {.url = url_of("/silent"), .abort = always, .abort_ctx = &asked};
    double t0 = tk_now();
    assert_false(cx_http_do(c, &rq, &r, &err));
    assert_int_equal(err.code, CX_ERR_CANCELLED);
    assert_true(atomic_load(&asked) >= 1);
    assert_true(tk_now() - t0 < 2.5);
    cx_http_free(c);
}

/* Plain http only where the client allows it; nothing is sent otherwise. */
static void test_http_refused_unless_allowed(void **state)
{
    (void)state;
    cx_http_options_t o = {.name = "test peer", .timeout_ms = 2000};
    cx_error_t err;
    cx_http_t *c = cx_http_new(&o, &err);
    assert_non_null(c);
    cx_http_response_t r;
    int before = atomic_load(&srv.connections);
    assert_int_equal(get(c, "/json", &r, &err), -CX_ERR_INVALID_ARGUMENT);
    assert_int_equal(err.detail, CX_DETAIL_HTTP_SCHEME);
    const char *others[] = {"ftp://127.0.0.1/x", "file:///etc/passwd", "127.0.0.1/json", ""};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        cx_http_request_t rq = {.url = others[i]};
        assert_false(cx_http_do(c, &rq, &r, &err));
        assert_int_equal(err.detail, CX_DETAIL_HTTP_SCHEME);
    }
    assert_int_equal(atomic_load(&srv.connections), before);
    cx_http_free(c);
    c = plain_client(2000, 0);
    cx_http_request_t ftp = {.url = "ftp://127.0.0.1/x"};
    assert_false(cx_http_do(c, &ftp, &r, &err)); /* allow_http is http, not any scheme */
    assert_int_equal(err.detail, CX_DETAIL_HTTP_SCHEME);
    cx_http_free(c);
}

/* Redirects are answers unless the client follows them, and then only to allowed schemes. */
static void test_redirects(void **state)
{
    (void)state;
    cx_http_t *c = plain_client(2000, 0);
    cx_http_response_t r;
    cx_error_t err;
    assert_int_equal(get(c, "/redirect", &r, &err), 302);
    cx_http_response_free(&r);
    cx_http_free(c);
    cx_http_options_t o = {.name = "test peer", .allow_http = true, .max_redirects = 2};
    c = cx_http_new(&o, &err);
    assert_int_equal(get(c, "/redirect", &r, &err), 200);
    assert_string_equal(r.body, "{\"ok\":true}");
    cx_http_response_free(&r);
    cx_http_free(c);
}

/* Failures are mapped to unavailable with a detail; the message never repeats the URL, so the
 * credentials or tokens a URL may carry never reach a log. */
static void test_failures_and_messages(void **state)
{
    (void)state;
    cx_http_t *c = plain_client(2000, 0);
    cx_http_response_t r;
    cx_error_t err;
    int fd = socket(AF_INET, SOCK_STREAM, 0); /* a port where nothing listens */
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    char url[256];
    snprintf(url, sizeof(url), "http://alice:hunter2@127.0.0.1:%d/p?token=s3cr3t",
             ntohs(a.sin_port));
    cx_http_request_t rq = {.url = url, .body = "body-s3cr3t", .body_len = 11};
    assert_false(cx_http_do(c, &rq, &r, &err));
    close(fd);
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    assert_int_equal(err.detail, CX_DETAIL_HTTP_CONNECT);
    assert_non_null(strstr(err.message, "test peer"));
    assert_null(strstr(err.message, "hunter2"));
    assert_null(strstr(err.message, "s3cr3t"));
    assert_null(strstr(err.message, "127.0.0.1"));

    cx_http_request_t dns = {.url = "http://credex-test.invalid/x"}; /* RFC 6761: never resolves */
    assert_false(cx_http_do(c, &dns, &r, &err));
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    assert_int_equal(err.detail, CX_DETAIL_HTTP_DNS);
    assert_null(strstr(err.message, "credex-test"));
    cx_http_free(c);

    /* an unreadable CA bundle is refused when the client is made */
    cx_http_options_t o = {.name = "test peer", .ca_file = "/nonexistent/ca.pem"};
    assert_null(cx_http_new(&o, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    cx_http_free(NULL);
}

/* ---- TLS, against openssl s_server ---------------------------------------------------------- */

static cx_code_t tls_get(const char *ca_file, const char *host, int port, cx_error_t *err)
{
    cx_http_options_t o = {.name = "tls peer", .ca_file = ca_file, .timeout_ms = 3000};
    cx_http_t *c = cx_http_new(&o, err);
    assert_non_null(c);
    char url[128];
    snprintf(url, sizeof(url), "https://%s:%d/doc.txt", host, port);
    cx_http_request_t rq = {.url = url};
    cx_http_response_t r;
    bool ok = cx_http_do(c, &rq, &r, err);
    if (ok) {
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(r.body, "hello over tls"));
        cx_http_response_free(&r);
    }
    cx_http_free(c);
    return ok ? CX_OK : err->code;
}

/* The server is verified against the configured CA bundle (which replaces the system store),
 * its name included; a foreign CA, the system store and a name not in the certificate fail. */
static void test_tls_verification(void **state)
{
    (void)state;
    char dir[64] = "/tmp/cx_http_tls_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char file[128];
    snprintf(file, sizeof(file), "%s/doc.txt", dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("hello over tls\n", f);
    fclose(f);
    const char *ca = tk_pki_path("ca.pem"), *other_ca = tk_pki_path("test/other-ca.pem");
    int port = tk_free_port("127.0.0.1");
    pid_t server = tk_tls_file_server(dir, "127.0.0.1", port, "gateway");
    cx_error_t err;
    if (tls_get(ca, "localhost", port, &err) != CX_OK)
        fail_msg("TLS with the right CA: %s", err.message);
    assert_int_equal(tls_get(ca, "127.0.0.1", port, &err), CX_OK);
    assert_int_equal(tls_get(other_ca, "localhost", port, &err), CX_ERR_UNAVAILABLE);
    assert_int_equal(err.detail, CX_DETAIL_HTTP_TLS);
    assert_int_equal(tls_get(NULL, "localhost", port, &err), CX_ERR_UNAVAILABLE);
    assert_int_equal(err.detail, CX_DETAIL_HTTP_TLS);
    tk_process_stop(server);

    /* the same certificate (localhost, 127.0.0.1) served on an address it does not name */
    port = tk_free_port("127.0.0.2");
    server = tk_tls_file_server(dir, "127.0.0.2", port, "gateway");
    assert_int_equal(tls_get(ca, "127.0.0.2", port, &err), CX_ERR_UNAVAILABLE);
    assert_int_equal(err.detail, CX_DETAIL_HTTP_TLS);
    tk_process_stop(server);
    unlink(file);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_and_headers),
        cmocka_unit_test(test_request_shape),
        cmocka_unit_test(test_sigv4_signature),
        cmocka_unit_test(test_connection_reuse),
        cmocka_unit_test(test_response_size_limit),
        cmocka_unit_test(test_timeout_on_a_silent_server),
        cmocka_unit_test(test_abort_callback),
        cmocka_unit_test(test_http_refused_unless_allowed),
        cmocka_unit_test(test_redirects),
        cmocka_unit_test(test_failures_and_messages),
        cmocka_unit_test(test_tls_verification),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
