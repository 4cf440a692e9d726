/*
 * Unit tests of the connect-time SSRF policy of common/http (cx_http_ssrf_t) against real
 * sockets: TLS servers run by this test on 127.0.0.1 (OpenSSL, a certificate for
 * idp.credex.test issued by the test PKI's CA at test time) count every connection they accept,
 * so "nothing was sent" is an observed zero; names are answered by a resolver hook of the test
 * (the policy's resolve), which counts its calls and can change its answer between them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/http/cx_http.h"
#include "tests/unit/kit/testkit.h"

#define PROVIDER "idp.credex.test" /* the name in the test certificate */

/* ---- a TLS HTTP/1.1 server, a thread per connection ---------------------------------------- */

#define SERVER_CONNS_MAX 32

typedef struct tls_server {
    int lfd, port;
    SSL_CTX *ctx;
    pthread_t thread, conn_threads[SERVER_CONNS_MAX];
    int conn_fds[SERVER_CONNS_MAX];
    atomic_bool stop;
    atomic_int connections; /* accepted so far: TCP, whether or not TLS followed */
    int redirect_port;      /* where /redirect points */
} tls_server_t;

typedef struct conn_arg {
    tls_server_t *s;
    int fd;
} conn_arg_t;

static tls_server_t srv_a, srv_b; /* b: a second server, the target of redirects and proxies */

/* Wait for the socket to become readable, or the server to stop. */
static bool readable(tls_server_t *s, int fd)
{
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 50) > 0)
            return true;
    }
    return false;
}

static bool ssl_send(SSL *ssl, const char *p, size_t n)
{
    while (n > 0) {
        int w = SSL_write(ssl, p, n > 65536 ? 65536 : (int)n);
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static bool reply(SSL *ssl, int status, const char *extra, const char *body, size_t len)
{
    char head[512];
    int n = snprintf(head, sizeof(head), "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n%s\r\n", status,
                     len, extra);
    return ssl_send(ssl, head, (size_t)n) && ssl_send(ssl, body, len);
}

/* Answer one request by path; false ends the connection (or keeps it silent until closed). */
static bool serve_path(tls_server_t *s, SSL *ssl, const char *path)
{
    if (strcmp(path, "/ok") == 0)
        return reply(ssl, 200, "Content-Type: text/plain\r\n", "hello provider", 14);
    if (strcmp(path, "/redirect") == 0) {
        char loc[128];
        snprintf(loc, sizeof(loc), "Location: https://127.0.0.1:%d/ok\r\n", s->redirect_port);
        return reply(ssl, 302, loc, "", 0);
    }
    if (strcmp(path, "/big") == 0) {
        static char big[5000];
        memset(big, 'b', sizeof(big));
        return reply(ssl, 200, "", big, sizeof(big));
    }
    return false; /* "/slow": no answer */
}

static void *serve_conn(void *arg)
{
    conn_arg_t a = *(conn_arg_t *)arg;
    free(arg);
    struct timeval tv = {.tv_sec = 2};
    setsockopt(a.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)); /* a client that says nothing */
    SSL *ssl = SSL_new(a.s->ctx);
    SSL_set_fd(ssl, a.fd);
    char buf[8192];
    size_t have = 0;
    if (SSL_accept(ssl) != 1)
        goto out;
    while (SSL_pending(ssl) > 0 || readable(a.s, a.fd)) {
        int r = SSL_read(ssl, buf + have, (int)(sizeof(buf) - 1 - have));
        if (r <= 0)
            break;
        have += (size_t)r;
        buf[have] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end == NULL)
            continue;
        char path[256] = "";
        sscanf(buf, "%*15s %255s", path);
        if (!serve_path(a.s, ssl, path)) {
            while (readable(a.s, a.fd) && SSL_read(ssl, buf, sizeof(buf)) > 0)
                ; /* silent until the client gives up */
            break;
        }
        size_t used = (size_t)(end + 4 - buf);
        memmove(buf, buf + used, have - used + 1);
        have -= used;
    }
out:
    SSL_free(ssl);
    ERR_clear_error();
    return NULL;
}

static void *server_main(void *arg)
{
    tls_server_t *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {.fd = s->lfd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        int i = atomic_fetch_add(&s->connections, 1);
        conn_arg_t *a = malloc(sizeof(*a));
        if (i >= SERVER_CONNS_MAX || a == NULL) {
            free(a);
            close(fd);
            continue;
        }
        *a = (conn_arg_t){s, fd};
        s->conn_fds[i] = fd;
        if (pthread_create(&s->conn_threads[i], NULL, serve_conn, a) != 0) {
            free(a);
            s->conn_fds[i] = -1;
            close(fd);
        }
    }
    return NULL;
}

static void server_start(tls_server_t *s)
{
    memset(s, 0, sizeof(*s));
    for (int i = 0; i < SERVER_CONNS_MAX; i++)
        s->conn_fds[i] = -1;
    s->ctx = SSL_CTX_new(TLS_server_method());
    assert_non_null(s->ctx);
    assert_int_equal(SSL_CTX_use_certificate_chain_file(s->ctx, tk_pki_path("test/provider.pem")),
                     1);
    assert_int_equal(
        SSL_CTX_use_PrivateKey_file(s->ctx, tk_pki_path("test/provider.key"), SSL_FILETYPE_PEM), 1);
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->lfd, 16), 0);
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &len), 0);
    s->port = ntohs(a.sin_port);
    atomic_init(&s->stop, false);
    atomic_init(&s->connections, 0);
    assert_int_equal(pthread_create(&s->thread, NULL, server_main, s), 0);
}

static void server_stop(tls_server_t *s)
{
    atomic_store(&s->stop, true);
    pthread_join(s->thread, NULL);
    int n = atomic_load(&s->connections);
    for (int i = 0; i < n && i < SERVER_CONNS_MAX; i++) {
        if (s->conn_fds[i] < 0)
            continue;
        pthread_join(s->conn_threads[i], NULL);
        close(s->conn_fds[i]);
    }
    close(s->lfd);
    SSL_CTX_free(s->ctx);
}

static int setup(void **state)
{
    (void)state;
    /* OpenSSL writes with write(): a client that hangs up mid-answer (the size limit) must not
     * kill the test. */
    signal(SIGPIPE, SIG_IGN);
    server_start(&srv_a);
    server_start(&srv_b);
    srv_a.redirect_port = srv_b.port;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    server_stop(&srv_a);
    server_stop(&srv_b);
    return 0;
}

/* ---- a resolver whose answers the test chooses --------------------------------------------- */

typedef struct resolver {
    atomic_int calls;
    const char *answers[2][4]; /* per call (the last one repeats): NULL-terminated addresses */
} resolver_t;

static int resolve_test(void *ctx, const char *host, const char *port, struct addrinfo **res)
{
    (void)host;
    resolver_t *r = ctx;
    int call = atomic_fetch_add(&r->calls, 1);
    const char *const *list = r->answers[call > 0 && r->answers[1][0] ? 1 : 0];
    struct addrinfo *head = NULL, **tail = &head;
    for (size_t i = 0; list[i] != NULL; i++) {
        struct addrinfo *ai = calloc(1, sizeof(*ai) + sizeof(struct sockaddr_storage));
        assert_non_null(ai);
        struct sockaddr_storage *ss = (struct sockaddr_storage *)(ai + 1);
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        uint16_t p = htons((uint16_t)atoi(port));
        if (inet_pton(AF_INET, list[i], &in->sin_addr) == 1) {
            in->sin_family = AF_INET;
            in->sin_port = p;
            ai->ai_addrlen = sizeof(*in);
        } else {
            assert_int_equal(inet_pton(AF_INET6, list[i], &in6->sin6_addr), 1);
            in6->sin6_family = AF_INET6;
            in6->sin6_port = p;
            ai->ai_addrlen = sizeof(*in6);
        }
        ai->ai_family = ss->ss_family;
        ai->ai_socktype = SOCK_STREAM;
        ai->ai_addr = (struct sockaddr *)ss;
        *tail = ai;
        tail = &ai->ai_next;
    }
    *res = head;
    return head ? 0 : EAI_NONAME;
}

static void resolve_test_free(void *ctx, struct addrinfo *res)
{
    (void)ctx;
    while (res) {
        struct addrinfo *next = res->ai_next;
        free(res);
        res = next;
    }
}

/* ---- clients and requests ------------------------------------------------------------------ */

typedef struct client_spec {
    const char *const *connect_to;
    const char *const *allow_hosts;
    resolver_t *resolver;
    unsigned timeout_ms, connect_timeout_ms;
    size_t max_response;
} client_spec_t;

static cx_http_t *ssrf_client(const client_spec_t *cs)
{
    cx_http_ssrf_t p = {.allow_hosts = cs->allow_hosts, .connect_to = cs->connect_to};
    if (cs->resolver) {
        p.resolve = resolve_test;
        p.resolve_free = resolve_test_free;
        p.resolve_ctx = cs->resolver;
    }
    cx_http_options_t o = {.name = "provider",
                           .ca_file = tk_pki_path("ca.pem"),
                           .timeout_ms = cs->timeout_ms ? cs->timeout_ms : 3000,
                           .connect_timeout_ms = cs->connect_timeout_ms,
                           .max_response_bytes = cs->max_response,
                           .ssrf = &p};
    cx_error_t err;
    cx_http_t *c = cx_http_new(&o, &err);
    if (c == NULL)
        fail_msg("cx_http_new: %s", err.message);
    return c;
}

/* GET url; the status, or -(cx code) on failure with *err filled. */
static long get(cx_http_t *c, const char *url, cx_http_response_t *r, cx_error_t *err)
{
    cx_http_request_t rq = {.url = url};
    if (!cx_http_do(c, &rq, r, err))
        return -(long)err->code;
    return r->status;
}

/* "host:443:127.0.0.1:<port of s>" in a rotating buffer. */
static const char * override(const char *host, const tls_server_t *s)
{
    static char b[4][128];
    static int i;
    i = (i + 1) % 4;
    snprintf(b[i], sizeof(b[i]), "%s:443:127.0.0.1:%d", host, s->port);
    return b[i];
}

/* ---- tests --------------------------------------------------------------------------------- */

/* A provider's real name, sent to a loopback test server by the override: TLS is verified for
 * that name against the test CA, the resolver is never asked, the kept-alive connection is
 * reused; the override covers its host:port only. */
static void test_connect_to_happy_path(void **state)
{
    (void)state;
    resolver_t res = {.answers = {{"127.0.0.1", NULL}}};
    const char *ct[] = {override(PROVIDER, &srv_a), override("other.credex.test", &srv_a), NULL};
    cx_http_t *c = ssrf_client(&(client_spec_t){.connect_to = ct, .resolver = &res});
    cx_http_response_t r;
    cx_error_t err;
    int before = atomic_load(&srv_a.connections);
    for (int i = 0; i < 2; i++) {
        if (get(c, "https://" PROVIDER "/ok", &r, &err) != 200)
            fail_msg("through the override: %s", err.message);
        assert_string_equal(r.body, "hello provider");
        cx_http_response_free(&r);
    }
    assert_int_equal(atomic_load(&srv_a.connections) - before, 1);
    assert_int_equal(cx_http_connections_opened(c), 1);
    assert_int_equal(atomic_load(&res.calls), 0);

    /* the same server for a name its certificate does not carry: TLS fails */
    assert_int_equal(get(c, "https://other.credex.test/ok", &r, &err), -CX_ERR_UNAVAILABLE);
    assert_int_equal(err.detail, CX_DETAIL_HTTP_TLS);

    /* another port of the same name is not overridden: resolved, checked, refused */
    before = atomic_load(&srv_a.connections);
    char url[128];
    snprintf(url, sizeof(url), "https://" PROVIDER ":%d/ok", srv_a.port);
    assert_int_equal(get(c, url, &r, &err), -CX_ERR_SSRF_BLOCKED);
    assert_int_equal(atomic_load(&res.calls), 1);
    assert_int_equal(atomic_load(&srv_a.connections), before);

    /* the override exempts from the address checks only: user information and plain http are
     * still refused */
    assert_int_equal(get(c, "https://user:pw@" PROVIDER "/ok", &r, &err), -CX_ERR_SSRF_BLOCKED);
    assert_null(strstr(err.message, "pw"));
    assert_int_equal(get(c, "http://" PROVIDER "/ok", &r, &err), -CX_ERR_SSRF_BLOCKED);
    assert_int_equal(atomic_load(&srv_a.connections), before);
    cx_http_free(c);

    /* the allow-list applies to overridden hosts too, before anything is resolved or sent */
    const char *allow[] = {"*.example.com", NULL};
    c = ssrf_client(&(client_spec_t){.connect_to = ct, .allow_hosts = allow, .resolver = &res});
    assert_int_equal(get(c, "https://" PROVIDER "/ok", &r, &err), -CX_ERR_SSRF_BLOCKED);
    assert_int_equal(atomic_load(&srv_a.connections), before);
    assert_int_equal(atomic_load(&res.calls), 1);
    cx_http_free(c);
}

/* Names that resolve to a forbidden address, alone or beside a public one, are refused before
 * anything is sent: the server on that very address and port sees no connection. */
static void test_forbidden_resolution_sends_nothing(void **state)
{
    (void)state;
    static const char *const answers[][3] = {
        {"127.0.0.1", NULL},
        {"10.0.0.5", NULL},
        {"192.168.1.20", NULL},
        {"169.254.169.254", NULL},
        {"100.64.0.1", NULL},
        {"::1", NULL},
        {"::ffff:127.0.0.1", NULL},
        {"fe80::1", NULL},
        {"fd00::1", NULL},
        {"0.0.0.0", NULL},
        {"93.184.216.34", "127.0.0.1", NULL}, /* one public, one not: refused */
        {"2606:2800:220:1::1", "::ffff:10.0.0.1", NULL},
    };
    char url[128];
    snprintf(url, sizeof(url), "https://evil.credex.test:%d/ok", srv_a.port);
    int before = atomic_load(&srv_a.connections);
    for (size_t i = 0; i < sizeof(answers) / sizeof(answers[0]); i++) {
        resolver_t res = {.answers = {{answers[i][0], answers[i][1], answers[i][2]}}};
        cx_http_t *c = ssrf_client(&(client_spec_t){.resolver = &res});
        cx_http_response_t r;
        cx_error_t err;
        if (get(c, url, &r, &err) != -CX_ERR_SSRF_BLOCKED)
            fail_msg("answer %s: not refused (%s)", answers[i][0], err.message);
        assert_int_equal(atomic_load(&res.calls), 1);
        assert_null(strstr(err.message, "evil"));
        assert_null(strstr(err.message, answers[i][0]));
        assert_int_equal(cx_http_connections_opened(c), 0);
        cx_http_free(c);
    }
    assert_int_equal(atomic_load(&srv_a.connections), before);

    /* a name that does not resolve is unavailable, as before */
    resolver_t none = {.answers = {{NULL}}};
    cx_http_t *c = ssrf_client(&(client_spec_t){.resolver = &none});
    cx_http_response_t r;
    cx_error_t err;
    assert_int_equal(get(c, url, &r, &err), -CX_ERR_UNAVAILABLE);
    assert_int_equal(err.detail, CX_DETAIL_HTTP_DNS);
    cx_http_free(c);
}

/* IP literals in odd notations are read as the address they are, and refused unresolved. */
static void test_odd_literals_refused(void **state)
{
    (void)state;
    static const char *const hosts[] = {
        "127.0.0.1",
        "0x7f000001",
        "2130706433",
        "017700000001",
        "127.1",
        "0x7f.0.0.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[64:ff9b::7f00:1]",
        "localhost",
        "a.localhost",
        "0",
        "169.254.43518",
    };
    resolver_t res = {.answers = {{"127.0.0.1", NULL}}};
    cx_http_t *c = ssrf_client(&(client_spec_t){.resolver = &res});
    int before = atomic_load(&srv_a.connections);
    for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
        char url[128];
        snprintf(url, sizeof(url), "https://%s:%d/ok", hosts[i], srv_a.port);
        cx_http_response_t r;
        cx_error_t err;
        if (get(c, url, &r, &err) != -CX_ERR_SSRF_BLOCKED)
            fail_msg("host %s: not refused", hosts[i]);
    }
    assert_int_equal(atomic_load(&res.calls), 0);
    assert_int_equal(atomic_load(&srv_a.connections), before);
    cx_http_free(c);
}

/* DNS rebinding: the first answer is public, every later one loopback. The name is resolved once
 * per request and the request goes to the checked (public, here unreachable) address only, never
 * to the loopback server; the next request sees the new answer and is refused. */
static void test_rebinding_resolver(void **state)
{
    (void)state;
    resolver_t res = {.answers = {{"93.184.216.34", NULL}, {"127.0.0.1", NULL}}};
    cx_http_t *c = ssrf_client(
        &(client_spec_t){.resolver = &res, .timeout_ms = 1500, .connect_timeout_ms = 300});
    char url[128];
    snprintf(url, sizeof(url), "https://rebind.credex.test:%d/ok", srv_a.port);
    int before = atomic_load(&srv_a.connections);
    cx_http_response_t r;
    cx_error_t err;
    assert_int_equal(get(c, url, &r, &err), -CX_ERR_UNAVAILABLE);
    /* not a DNS failure: libcurl used the pinned address instead of resolving the name itself */
    assert_int_not_equal(err.detail, CX_DETAIL_HTTP_DNS);
    assert_int_equal(atomic_load(&res.calls), 1);
    assert_int_equal(get(c, url, &r, &err), -CX_ERR_SSRF_BLOCKED);
    assert_int_equal(atomic_load(&res.calls), 2);
    assert_int_equal(atomic_load(&srv_a.connections), before);
    cx_http_free(c);
}

/* A redirect is an answer: returned as it is, its target (another server) never contacted. */
static void test_redirect_not_followed(void **state)
{
    (void)state;
    const char *ct[] = {override(PROVIDER, &srv_a), NULL};
    cx_http_t *c = ssrf_client(&(client_spec_t){.connect_to = ct});
    int before_b = atomic_load(&srv_b.connections);
    cx_http_response_t r;
    cx_error_t err;
    if (get(c, "https://" PROVIDER "/redirect", &r, &err) != 302)
        fail_msg("redirect: %s", err.message);
    cx_http_response_free(&r);
    assert_int_equal(atomic_load(&srv_b.connections), before_b);
    cx_http_free(c);

    /* an SSRF policy cannot be combined with following redirects, nor with plain http */
    cx_http_ssrf_t p = {0};
    cx_http_options_t o = {.name = "provider", .ssrf = &p, .max_redirects = 1};
    assert_null(cx_http_new(&o, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    o.max_redirects = 0;
    o.allow_http = true;
    assert_null(cx_http_new(&o, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
}

/* An oversized and a slow answer are unavailable, the slow one within the client's timeout. */
static void test_size_and_time_limits(void **state)
{
    (void)state;
    const char *ct[] = {override(PROVIDER, &srv_a), NULL};
    cx_http_t *c =
        ssrf_client(&(client_spec_t){.connect_to = ct, .max_response = 1024, .timeout_ms = 500});
    cx_http_response_t r;
    cx_error_t err;
    assert_int_equal(get(c, "https://" PROVIDER "/big", &r, &err), -CX_ERR_UNAVAILABLE);
    assert_int_equal(err.detail, CX_DETAIL_HTTP_TOO_BIG);
    assert_null(r.body);
    double t0 = tk_now();
    assert_int_equal(get(c, "https://" PROVIDER "/slow", &r, &err), -CX_ERR_UNAVAILABLE);
    double took = tk_now() - t0;
    assert_int_equal(err.detail, CX_DETAIL_HTTP_TIMEOUT);
    if (took > 2.5)
        fail_msg("a silent provider took %.2f s to fail, with a 0.5 s timeout", took);
    cx_http_free(c);
}

/* A proxy named by the environment is never used by a client with an SSRF policy (a client
 * without one does use it: the control shows the variables are live). */
static void test_environment_proxy_ignored(void **state)
{
    (void)state;
    char proxy[64], url[128];
    snprintf(proxy, sizeof(proxy), "http://127.0.0.1:%d", srv_b.port);
    static const char *const vars[] = {"https_proxy", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        setenv(vars[i], proxy, 1);
    unsetenv("no_proxy");
    unsetenv("NO_PROXY");
    const char *ct[] = {override(PROVIDER, &srv_a), NULL};
    cx_http_t *c = ssrf_client(&(client_spec_t){.connect_to = ct});
    cx_http_response_t r;
    cx_error_t err;
    int before_b = atomic_load(&srv_b.connections);
    long st = get(c, "https://" PROVIDER "/ok", &r, &err);
    if (st == 200)
        cx_http_response_free(&r);
    assert_int_equal(atomic_load(&srv_b.connections), before_b);
    cx_http_free(c);

    cx_http_options_t o = {.name = "plain", .ca_file = tk_pki_path("ca.pem"), .timeout_ms = 2000};
    cx_http_t *plain = cx_http_new(&o, &err);
    assert_non_null(plain);
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/ok", srv_a.port);
    if (get(plain, url, &r, &err) > 0)
        cx_http_response_free(&r);
    cx_http_free(plain);
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    assert_int_equal(st, 200);
    assert_int_equal(atomic_load(&srv_b.connections), before_b + 1);
}

/* Override entries are read when the client is made: loopback targets and real ports only; the
 * refusal names the list, never the entry. */
static void test_connect_to_entries(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "idp.credex.test:443:10.0.0.1:8443",
        "idp.credex.test:443:8.8.8.8:8443",
        "idp.credex.test:443:0x7f.1:8443",
        "idp.credex.test:443:2130706433:8443",
        "idp.credex.test:443:[::ffff:127.0.0.1]:8443",
        "idp.credex.test:443:[fe80::1]:8443",
        "idp.credex.test:443:localhost:8443",
        "idp.credex.test:0:127.0.0.1:8443",
        "idp.credex.test:443:127.0.0.1:65536",
        "idp.credex.test:443:127.0.0.1:",
        "idp.credex.test:443:127.0.0.1",
        "idp.credex.test:443",
        "127.0.0.1:443:127.0.0.1:8443",
        "localhost:443:127.0.0.1:8443",
        ":443:127.0.0.1:8443",
        "idp.credex.test:+443:127.0.0.1:8443",
        "idp.credex.test:443:127.0.0.1:8443:1",
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *ct[] = {"good.credex.test:443:127.0.0.1:8443", bad[i], NULL};
        cx_http_ssrf_t p = {.connect_to = ct};
        cx_http_options_t o = {.name = "provider", .ssrf = &p};
        cx_error_t err;
        cx_http_t *c = cx_http_new(&o, &err);
        if (c != NULL)
            fail_msg("entry \"%s\" accepted", bad[i]);
        assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
        assert_non_null(strstr(err.message, "connect_to"));
        assert_null(strstr(err.message, "credex.test"));
    }
    static const char *const good[] = {"idp.credex.test:443:127.0.0.1:8443",
                                       "IDP.credex.test:8443:127.9.8.7:1",
                                       "github.com:443:[::1]:65535", NULL};
    cx_http_ssrf_t p = {.connect_to = good};
    cx_http_options_t o = {.name = "provider", .ssrf = &p};
    cx_error_t err;
    cx_http_t *c = cx_http_new(&o, &err);
    if (c == NULL)
        fail_msg("good entries refused: %s", err.message);
    cx_http_free(c);
    /* a malformed allow-list entry, and a resolver without its release */
    const char *allow[] = {"github.com", "bad host", NULL};
    cx_http_ssrf_t q = {.allow_hosts = allow};
    o.ssrf = &q;
    assert_null(cx_http_new(&o, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_null(strstr(err.message, "bad host"));
    cx_http_ssrf_t half = {.resolve = resolve_test};
    o.ssrf = &half;
    assert_null(cx_http_new(&o, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_to_happy_path),
        cmocka_unit_test(test_forbidden_resolution_sends_nothing),
        cmocka_unit_test(test_odd_literals_refused),
        cmocka_unit_test(test_rebinding_resolver),
        cmocka_unit_test(test_redirect_not_followed),
        cmocka_unit_test(test_size_and_time_limits),
        cmocka_unit_test(test_environment_proxy_ignored),
        cmocka_unit_test(test_connect_to_entries),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
