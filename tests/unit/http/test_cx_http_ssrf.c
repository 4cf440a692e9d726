/*
 * Unit tests of the SSRF screening of common/http (cx_http_ssrf.c): one table of hosts in every
 * notation a resolver reads, each with the outcome it must have, read both alone and inside a
 * URL; then URL shapes and allow-lists. Every refusal is checked not to quote the host.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "common/http/cx_http.h"

/* outcome: a class name for an IP literal, "name", "localhost", or the refusal's reason code */
typedef struct host_case {
    const char *host;
    const char *outcome;
    const char *addr; /* the address an IP literal denotes, canonical; NULL: outcome only */
} host_case_t;

static const host_case_t host_cases[] = {
    /* IPv4 loopback in every notation */
    {"127.0.0.1", "loopback", "127.0.0.1"},
    {"2130706433", "loopback", "127.0.0.1"},
    {"0x7f000001", "loopback", "127.0.0.1"},
    {"0X7F000001", "loopback", "127.0.0.1"},
    {"017700000001", "loopback", "127.0.0.1"},
    {"0177.0.0.1", "loopback", "127.0.0.1"},
    {"0x7f.1", "loopback", "127.0.0.1"},
    {"127.1", "loopback", "127.0.0.1"},
    {"127.0.1", "loopback", "127.0.0.1"},
    {"0x7F.0.0.0x1", "loopback", "127.0.0.1"},
    {"0177.0x0.0.01", "loopback", "127.0.0.1"},
    {"127.0.0.1.", "loopback", "127.0.0.1"},
    {"127.255.255.254", "loopback", "127.255.255.254"},
    {"0x7f.0xffffff", "loopback", "127.255.255.255"},
    /* private (RFC 1918) and its edges */
    {"10.0.0.1", "private", "10.0.0.1"},
    {"10.1.1", "private", "10.1.0.1"},
    {"012.0.0.1", "private", "10.0.0.1"},
    {"0xa000001", "private", "10.0.0.1"},
    {"167772161", "private", "10.0.0.1"},
    {"172.15.255.255", "public", "172.15.255.255"},
    {"172.16.0.0", "private", "172.16.0.0"},
    {"172.31.255.255", "private", "172.31.255.255"},
    {"172.32.0.0", "public", "172.32.0.0"},
    {"192.168.1.1", "private", "192.168.1.1"},
    {"3232235777", "private", "192.168.1.1"},
    {"192.169.0.1", "public", "192.169.0.1"},
    /* link-local and the cloud metadata address */
    {"169.254.169.254", "link_local", "169.254.169.254"},
    {"0xa9fea9fe", "link_local", "169.254.169.254"},
    {"2852039166", "link_local", "169.254.169.254"},
    {"0251.0376.0251.0376", "link_local", "169.254.169.254"},
    {"169.254.43518", "link_local", "169.254.169.254"},
    {"169.16689662", "link_local", "169.254.169.254"},
    /* carrier-grade NAT */
    {"100.64.0.1", "shared", "100.64.0.1"},
    {"100.127.255.255", "shared", "100.127.255.255"},
    {"100.128.0.1", "public", "100.128.0.1"},
    {"100.63.255.255", "public", "100.63.255.255"},
    /* unspecified, multicast, broadcast, reserved, documentation, benchmark */
    {"0.0.0.0", "unspecified", "0.0.0.0"},
    {"0", "unspecified", "0.0.0.0"},
    {"0x0", "unspecified", "0.0.0.0"},
    {"0.1.2.3", "unspecified", "0.1.2.3"},
    {"224.0.0.1", "multicast", "224.0.0.1"},
    {"239.255.255.250", "multicast", "239.255.255.250"},
    {"255.255.255.255", "broadcast", "255.255.255.255"},
    {"4294967295", "broadcast", "255.255.255.255"},
    {"240.0.0.1", "reserved", "240.0.0.1"},
    {"255.255.255.254", "reserved", "255.255.255.254"},
    {"192.0.0.8", "reserved", "192.0.0.8"},
    {"192.88.99.1", "reserved", "192.88.99.1"},
    {"192.0.2.1", "documentation", "192.0.2.1"},
    {"198.51.100.7", "documentation", "198.51.100.7"},
    {"203.0.113.9", "documentation", "203.0.113.9"},
    {"198.18.0.1", "benchmark", "198.18.0.1"},
    {"198.19.255.255", "benchmark", "198.19.255.255"},
    {"198.20.0.0", "public", "198.20.0.0"},
    /* public IPv4 */
    {"8.8.8.8", "public", "8.8.8.8"},
    {"134744072", "public", "8.8.8.8"},
    {"1.1.1.1", "public", "1.1.1.1"},
    {"223.255.255.255", "public", "223.255.255.255"},
    /* IPv6, and IPv4 carried inside IPv6 */
    {"[::1]", "loopback", "::1"},
    {"[0:0:0:0:0:0:0:1]", "loopback", "::1"},
    {"[::]", "unspecified", "::"},
    {"[::ffff:127.0.0.1]", "loopback", "::ffff:127.0.0.1"},
    {"[::ffff:7f00:1]", "loopback", "::ffff:127.0.0.1"},
    {"[0:0:0:0:0:ffff:169.254.169.254]", "link_local", "::ffff:169.254.169.254"},
    {"[::FFFF:a9fe:a9fe]", "link_local", "::ffff:169.254.169.254"},
    {"[::ffff:10.0.0.1]", "private", NULL},
    {"[::ffff:0.0.0.0]", "unspecified", NULL},
    {"[::ffff:8.8.8.8]", "public", "::ffff:8.8.8.8"},
    {"[::127.0.0.1]", "loopback", NULL},
    {"[::8.8.8.8]", "reserved", NULL},
    {"[64:ff9b::7f00:1]", "loopback", "64:ff9b::7f00:1"},
    {"[64:ff9b::192.168.0.1]", "private", NULL},
    {"[64:ff9b::8.8.8.8]", "public", NULL},
    {"[64:ff9b:1::1]", "reserved", NULL},
    {"[2002:7f00:1::]", "loopback", NULL},
    {"[2002:a9fe:a9fe::1]", "link_local", NULL},
    {"[2002:6440::1]", "shared", NULL},
    {"[2002:808:808::1]", "public", NULL},
    {"[2001::1]", "teredo", NULL},
    {"[2001:0:4136:e378:8000:63bf:3fff:fdd2]", "teredo", NULL},
    {"[2001:2::1]", "benchmark", NULL},
    {"[2001:10::1]", "reserved", NULL},
    {"[2001:1ff::1]", "reserved", NULL},
    {"[2001:200::1]", "public", NULL},
    {"[2001:db8::1]", "documentation", NULL},
    {"[3fff::1]", "documentation", NULL},
    {"[fc00::1]", "unique_local", NULL},
    {"[fd12:3456::1]", "unique_local", NULL},
    {"[fe80::1]", "link_local", "fe80::1"},
    {"[FE80::1]", "link_local", "fe80::1"},
    {"[febf::1]", "link_local", NULL},
    {"[fec0::1]", "reserved", NULL},
    {"[ff02::1]", "multicast", NULL},
    {"[100::1]", "reserved", NULL},
    {"[5f00::1]", "reserved", NULL},
    {"[4000::1]", "reserved", NULL},
    {"[2606:4700::1111]", "public", "2606:4700::1111"},
    {"[2001:4860:4860::8888]", "public", NULL},
    {"[2A00:1450::1]", "public", "2a00:1450::1"},
    /* zone ids and malformed IPv6 */
    {"[fe80::1%25eth0]", "ssrf_blocked", NULL},
    {"[fe80::1%eth0]", "ssrf_blocked", NULL},
    {"[::1", "invalid_argument", NULL},
    {"[]", "invalid_argument", NULL},
    {"[1.2.3.4]", "invalid_argument", NULL},
    {"[::ffff:1.2.3]", "invalid_argument", NULL},
    {"[::1::2]", "invalid_argument", NULL},
    /* localhost names */
    {"localhost", "localhost", NULL},
    {"LOCALHOST", "localhost", NULL},
    {"localhost.", "localhost", NULL},
    {"api.localhost", "localhost", NULL},
    {"a.b.LocalHost.", "localhost", NULL},
    {"notlocalhost", "name", NULL},
    {"localhost.example.com", "name", NULL},
    /* names, including ones that look numeric but are not literals */
    {"127.0.0.1.nip.io", "name", NULL},
    {"0x7f.example", "name", NULL},
    {"example.com", "name", NULL},
    {"api.github.com.", "name", NULL},
    {"1e100.net", "name", NULL},
    {"xn--bcher-kva.example", "name", NULL},
    {"my_host.internal-corp", "name", NULL},
    /* a numeric last label that is no valid IPv4 literal, and bad characters */
    {"256.0.0.1", "invalid_argument", NULL},
    {"1.2.3.4.5", "invalid_argument", NULL},
    {"0x100000000", "invalid_argument", NULL},
    {"4294967296", "invalid_argument", NULL},
    {"08.0.0.1", "invalid_argument", NULL},
    {"1.2.3.256", "invalid_argument", NULL},
    {"1.2.65536", "invalid_argument", NULL},
    {"example.123", "invalid_argument", NULL},
    {"1..2", "invalid_argument", NULL},
    {"example..com", "invalid_argument", NULL},
    {".example.com", "invalid_argument", NULL},
    {"exa mple.com", "invalid_argument", NULL},
    {"ex%41mple.com", "invalid_argument", NULL},
    {"h\xc3\xa9.example", "invalid_argument", NULL},
    {"", "invalid_argument", NULL},
    {".", "invalid_argument", NULL},
};

/* What the parser and the classifier say of a host, in the table's words; the address too. */
static const char *host_outcome(const char *host, char *addr, size_t addrsz)
{
    cx_http_host_t h;
    cx_error_t err;
    addr[0] = '\0';
    if (!cx_http_host_literal_parse(host, strlen(host), &h, &err)) {
        assert_null(strstr(err.message, host[0] != '\0' ? host : "\x01"));
        return cx_code_reason(err.code);
    }
    if (h.kind == CX_HTTP_HOST_NAME)
        return "name";
    if (h.kind == CX_HTTP_HOST_LOCALHOST)
        return "localhost";
    assert_int_equal(h.kind, CX_HTTP_HOST_IP);
    const struct sockaddr *sa = (const struct sockaddr *)&h.addr;
    const void *a = sa->sa_family == AF_INET
                        ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
                        : (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
    assert_non_null(inet_ntop(sa->sa_family, a, addr, (socklen_t)addrsz));
    return cx_http_ip_class_name(cx_http_ip_classify(sa));
}

static void test_host_table(void **state)
{
    (void)state;
    size_t n = sizeof(host_cases) / sizeof(host_cases[0]);
    assert_true(n >= 80);
    for (size_t i = 0; i < n; i++) {
        const host_case_t *c = &host_cases[i];
        char addr[INET6_ADDRSTRLEN];
        const char *got = host_outcome(c->host, addr, sizeof(addr));
        if (strcmp(got, c->outcome) != 0)
            fail_msg("host %s: %s, expected %s", c->host, got, c->outcome);
        if (c->addr != NULL && strcmp(addr, c->addr) != 0)
            fail_msg("host %s: address %s, expected %s", c->host, addr, c->addr);
    }
}

/* The same hosts inside a URL: accepted iff public or a name; the refusal names no host. */
static void test_host_table_in_urls(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(host_cases) / sizeof(host_cases[0]); i++) {
        const host_case_t *c = &host_cases[i];
        char url[256];
        snprintf(url, sizeof(url), "https://%s:8443/oauth/token", c->host);
        cx_error_t err;
        bool ok = cx_http_url_check(url, NULL, &err);
        bool want = strcmp(c->outcome, "public") == 0 || strcmp(c->outcome, "name") == 0;
        if (ok != want)
            fail_msg("url with host %s: %s", c->host, ok ? "accepted" : err.message);
        if (ok)
            continue;
        if (strcmp(c->outcome, "invalid_argument") == 0)
            assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
        else
            assert_int_equal(err.code, CX_ERR_SSRF_BLOCKED);
        if (c->host[0] != '\0')
            assert_null(strstr(err.message, c->host));
        assert_null(strstr(err.message, "oauth"));
    }
}

typedef struct url_case {
    const char *url;
    cx_code_t code; /* CX_OK: accepted */
} url_case_t;

static void check_urls(const url_case_t *cases, size_t n, const char *const *allow)
{
    for (size_t i = 0; i < n; i++) {
        cx_error_t err;
        cx_error_clear(&err);
        bool ok = cx_http_url_check(cases[i].url, allow, &err);
        cx_code_t got = ok ? CX_OK : err.code;
        if (got != cases[i].code)
            fail_msg("url %s: %s, expected %s", cases[i].url, cx_code_reason(got),
                     cx_code_reason(cases[i].code));
        if (!ok) {
            assert_null(strstr(err.message, "://"));
            assert_null(strstr(err.message, "example"));
            assert_null(strstr(err.message, "pass"));
        }
    }
}

static void test_url_shape(void **state)
{
    (void)state;
    static const url_case_t cases[] = {
        {"https://example.com/", CX_OK},
        {"HTTPS://Example.com/x", CX_OK},
        {"https://example.com", CX_OK},
        {"https://example.com:443/x", CX_OK},
        {"https://example.com:8443?q=1", CX_OK},
        {"https://example.com/a@b?c@d#e@f", CX_OK},
        {"https://example.com#frag", CX_OK},
        {"https://[2606:4700::1111]:443/", CX_OK},
        {"https://127.0.0.1.nip.io/", CX_OK}, /* a name: the connect-time check is for it */
        {"http://example.com/", CX_ERR_SSRF_BLOCKED},
        {"ftp://example.com/", CX_ERR_SSRF_BLOCKED},
        {"file:///etc/passwd", CX_ERR_SSRF_BLOCKED},
        {"gopher://example.com:70/", CX_ERR_SSRF_BLOCKED},
        {"example.com/path", CX_ERR_SSRF_BLOCKED},
        {"https:example.com", CX_ERR_SSRF_BLOCKED},
        {"https://user:pass@example.com/", CX_ERR_SSRF_BLOCKED},
        {"https://user@example.com/", CX_ERR_SSRF_BLOCKED},
        {"https://@example.com/", CX_ERR_SSRF_BLOCKED},
        {"https://example.com@127.0.0.1/", CX_ERR_SSRF_BLOCKED},
        {"https://[::1]:443/", CX_ERR_SSRF_BLOCKED},
        {"https://localhost:8443/", CX_ERR_SSRF_BLOCKED},
        {"https://0x7f000001/", CX_ERR_SSRF_BLOCKED},
        {"https://example.com:0/", CX_ERR_INVALID_ARGUMENT},
        {"https://example.com:65536/", CX_ERR_INVALID_ARGUMENT},
        {"https://example.com:/", CX_ERR_INVALID_ARGUMENT},
        {"https://example.com:44a/", CX_ERR_INVALID_ARGUMENT},
        {"https://example.com:0443000/", CX_ERR_INVALID_ARGUMENT},
        {"https://[::1]x/", CX_ERR_INVALID_ARGUMENT},
        {"https://[2606:4700::1111/", CX_ERR_INVALID_ARGUMENT},
        {"https:///x", CX_ERR_INVALID_ARGUMENT},
        {"https://", CX_ERR_INVALID_ARGUMENT},
        {"https://:443/", CX_ERR_INVALID_ARGUMENT},
        {"https://example.com\\@127.0.0.1/", CX_ERR_INVALID_ARGUMENT},
        {" https://example.com/", CX_ERR_INVALID_ARGUMENT},
        {"https://example.com/a b", CX_ERR_INVALID_ARGUMENT},
        {"https://example.com/\r\nHost: x", CX_ERR_INVALID_ARGUMENT},
        {"https://ex\xc3\xa4mple.com/", CX_ERR_INVALID_ARGUMENT},
    };
    check_urls(cases, sizeof(cases) / sizeof(cases[0]), NULL);

    cx_error_t err;
    assert_false(cx_http_url_check(NULL, NULL, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    char big[CX_HTTP_URL_MAX + 2];
    memcpy(big, "https://example.com/", 20);
    memset(big + 20, 'a', sizeof(big) - 21);
    big[sizeof(big) - 1] = '\0';
    assert_false(cx_http_url_check(big, NULL, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    big[CX_HTTP_URL_MAX] = '\0'; /* exactly at the limit */
    assert_true(cx_http_url_check(big, NULL, &err));
}

static void test_allow_list(void **state)
{
    (void)state;
    static const char *const allow[] = {"github.com", "*.atlassian.net", "GitLab.Example.COM.",
                                        "8.8.8.8",    "localhost",       "127.0.0.1",
                                        NULL};
    static const url_case_t cases[] = {
        {"https://github.com/login/oauth/access_token", CX_OK},
        {"https://GITHUB.COM./x", CX_OK},
        {"https://github.com:443/x", CX_OK},
        {"https://x.atlassian.net/", CX_OK},
        {"https://a.b.Atlassian.NET./", CX_OK},
        {"https://gitlab.example.com/oauth/token", CX_OK},
        {"https://8.8.8.8/", CX_OK},
        {"https://api.github.com/", CX_ERR_SSRF_BLOCKED},
        {"https://evilgithub.com/", CX_ERR_SSRF_BLOCKED},
        {"https://github.com.evil.example/", CX_ERR_SSRF_BLOCKED},
        {"https://atlassian.net/", CX_ERR_SSRF_BLOCKED},
        {"https://xatlassian.net/", CX_ERR_SSRF_BLOCKED},
        {"https://8.8.4.4/", CX_ERR_SSRF_BLOCKED},
        {"https://134744072/", CX_ERR_SSRF_BLOCKED}, /* 8.8.8.8, but not its listed text */
        /* listed, yet still refused: the address rules come first */
        {"https://localhost/", CX_ERR_SSRF_BLOCKED},
        {"https://127.0.0.1/", CX_ERR_SSRF_BLOCKED},
        {"http://github.com/", CX_ERR_SSRF_BLOCKED},
        {"https://user@github.com/", CX_ERR_SSRF_BLOCKED},
    };
    check_urls(cases, sizeof(cases) / sizeof(cases[0]), allow);

    /* an empty allow-list allows nothing; "*." alone matches nothing */
    static const char *const none[] = {NULL};
    static const char *const star[] = {"*.", "*", NULL};
    static const url_case_t refused[] = {{"https://github.com/", CX_ERR_SSRF_BLOCKED}};
    check_urls(refused, 1, none);
    check_urls(refused, 1, star);
}

/* Addresses given as sockaddrs, as the connect-time check will: families, ports and scope
 * ignored, names of every class, NULL and unknown families refused. */
static void test_classify_sockaddr(void **state)
{
    (void)state;
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(443)};
    assert_int_equal(inet_pton(AF_INET, "169.254.169.254", &in.sin_addr), 1);
    assert_int_equal(cx_http_ip_classify((struct sockaddr *)&in), CX_HTTP_IP_LINK_LOCAL);
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_scope_id = 2};
    assert_int_equal(inet_pton(AF_INET6, "fe80::1", &in6.sin6_addr), 1);
    assert_int_equal(cx_http_ip_classify((struct sockaddr *)&in6), CX_HTTP_IP_LINK_LOCAL);
    assert_int_equal(inet_pton(AF_INET6, "2606:4700::1111", &in6.sin6_addr), 1);
    assert_int_equal(cx_http_ip_classify((struct sockaddr *)&in6), CX_HTTP_IP_PUBLIC);
    struct sockaddr_storage unix_like = {.ss_family = AF_UNIX};
    assert_int_equal(cx_http_ip_classify((struct sockaddr *)&unix_like), CX_HTTP_IP_RESERVED);
    assert_int_equal(cx_http_ip_classify(NULL), CX_HTTP_IP_RESERVED);
    for (int c = 0; c < CX_HTTP_IP_CLASS_COUNT_; c++)
        assert_true(strlen(cx_http_ip_class_name((cx_http_ip_class_t)c)) > 0);
    assert_string_equal(cx_http_ip_class_name(CX_HTTP_IP_CLASS_COUNT_), "reserved");

    /* a refused parse leaves *out alone */
    cx_http_host_t h = {.kind = CX_HTTP_HOST_LOCALHOST};
    assert_false(cx_http_host_literal_parse("256.1", 5, &h, NULL));
    assert_int_equal(h.kind, CX_HTTP_HOST_LOCALHOST);
    /* the length is honoured: "127.0.0.1" read from a longer buffer */
    assert_true(cx_http_host_literal_parse("127.0.0.1:443", 9, &h, NULL));
    assert_int_equal(h.kind, CX_HTTP_HOST_IP);
}

/* Allow-list entries as the configuration gives them. */
static void test_allow_host_entries(void **state)
{
    (void)state;
    static const char *const good[] = {"github.com", "*.atlassian.net", "GitLab.Example.COM.",
                                       "a-b.c1",     "8.8.8.8",         "x"};
    static const char *const bad[] = {"",
                                      "*.",
                                      "*",
                                      "*github.com",
                                      "a.*.com",
                                      "git hub.com",
                                      "github..com",
                                      ".github.com",
                                      "github.com..",
                                      "gi_thub.com",
                                      "h\xc3\xa9.example",
                                      "[::1]",
                                      "github.com:443",
                                      "https://github.com"};
    cx_error_t err;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (!cx_http_allow_host_check(good[i], &err))
            fail_msg("entry %s refused: %s", good[i], err.message);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (cx_http_allow_host_check(bad[i], &err))
            fail_msg("entry \"%s\" accepted", bad[i]);
        assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
        if (bad[i][0] != '\0')
            assert_null(strstr(err.message, bad[i]));
    }
    char big[CX_HTTP_HOST_MAX + 2];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_false(cx_http_allow_host_check(big, &err));
    big[CX_HTTP_HOST_MAX] = '\0';
    assert_true(cx_http_allow_host_check(big, &err));
    assert_false(cx_http_allow_host_check(NULL, &err));
}

/* Override entries: what they are read as, and what is refused (cx_http_new uses this parser,
 * and so does the configuration). */
static void test_connect_to_parse(void **state)
{
    (void)state;
    cx_http_connect_to_t ct;
    cx_error_t err;
    assert_true(cx_http_connect_to_parse("idp.credex.test:443:127.0.0.1:8443", &ct, &err));
    assert_string_equal(ct.host, "idp.credex.test");
    assert_int_equal(ct.port, 443);
    assert_int_equal(ct.target.ss_family, AF_INET);
    const struct sockaddr_in *in = (const struct sockaddr_in *)&ct.target;
    assert_int_equal(ntohs(in->sin_port), 8443);
    assert_int_equal(ntohl(in->sin_addr.s_addr), 0x7f000001);
    assert_true(cx_http_connect_to_parse("GitHub.com.:1:[::1]:65535", &ct, &err));
    assert_string_equal(ct.host, "GitHub.com.");
    assert_int_equal(ct.port, 1);
    assert_int_equal(ct.target.ss_family, AF_INET6);
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ct.target;
    assert_int_equal(ntohs(in6->sin6_port), 65535);
    assert_true(IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr));
    assert_true(cx_http_connect_to_parse("a:443:127.255.0.9:80", &ct, &err));

    static const char *const bad[] = {
        "idp.credex.test:443:10.0.0.1:8443",
        "idp.credex.test:443:0.0.0.0:8443",
        "idp.credex.test:443:8.8.8.8:8443",
        "idp.credex.test:443:0177.0.0.1:8443",
        "idp.credex.test:443:127.1:8443",
        "idp.credex.test:443:2130706433:8443",
        "idp.credex.test:443:[::ffff:127.0.0.1]:8443",
        "idp.credex.test:443:::1:8443",
        "idp.credex.test:443:[::1:8443",
        "idp.credex.test:443:[::1]8443",
        "idp.credex.test:443:[127.0.0.1]:8443",
        "idp.credex.test:443:localhost:8443",
        "idp.credex.test:0:127.0.0.1:8443",
        "idp.credex.test:65536:127.0.0.1:8443",
        "idp.credex.test:0443:127.0.0.1:8443",
        "idp.credex.test:443:127.0.0.1:0",
        "idp.credex.test:443:127.0.0.1:-1",
        "idp.credex.test:443:127.0.0.1:84 43",
        "idp.credex.test:443:127.0.0.1:",
        "idp.credex.test:443:127.0.0.1",
        "idp.credex.test:443:127.0.0.1:8443:9",
        "idp.credex.test::127.0.0.1:8443",
        "idp.credex.test",
        ":443:127.0.0.1:8443",
        "127.0.0.1:443:127.0.0.1:8443",
        "[::1]:443:127.0.0.1:8443",
        "localhost:443:127.0.0.1:8443",
        "a.localhost:443:127.0.0.1:8443",
        "idp credex:443:127.0.0.1:8443",
        "",
    };
    cx_http_connect_to_t keep = ct;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (cx_http_connect_to_parse(bad[i], &ct, &err))
            fail_msg("entry \"%s\" accepted", bad[i]);
        assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
        assert_non_null(strstr(err.message, "connect_to"));
        assert_null(strstr(err.message, "credex"));
        assert_null(strstr(err.message, "127.0.0.1"));
        assert_memory_equal(&ct, &keep, sizeof(ct)); /* untouched on failure */
    }
    assert_false(cx_http_connect_to_parse(NULL, &ct, &err));
}

static size_t list_len(char **l)
{
    size_t n = 0;
    while (l[n] != NULL)
        n++;
    return n;
}

static void test_list_split(void **state)
{
    (void)state;
    cx_error_t err;
    char **l =
        cx_http_list_split(" github.com ,\t*.atlassian.net,, ,gitlab.example.com\t", 8, &err);
    assert_non_null(l);
    assert_int_equal(list_len(l), 3);
    assert_string_equal(l[0], "github.com");
    assert_string_equal(l[1], "*.atlassian.net");
    assert_string_equal(l[2], "gitlab.example.com");
    cx_http_list_free(l);
    l = cx_http_list_split("", 8, &err);
    assert_non_null(l);
    assert_int_equal(list_len(l), 0);
    cx_http_list_free(l);
    l = cx_http_list_split(NULL, 8, &err);
    assert_non_null(l);
    assert_int_equal(list_len(l), 0);
    cx_http_list_free(l);
    l = cx_http_list_split(" , ,", 0, &err); /* only empty items: none, even with max 0 */
    assert_non_null(l);
    assert_int_equal(list_len(l), 0);
    cx_http_list_free(l);
    l = cx_http_list_split("a,b,c", 3, &err);
    assert_non_null(l);
    assert_int_equal(list_len(l), 3);
    cx_http_list_free(l);
    assert_null(cx_http_list_split("a,b,c,d", 3, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_null(strstr(err.message, "a,b"));
    char big[CX_HTTP_LIST_ITEM_MAX + 8];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_null(cx_http_list_split(big, 3, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    big[CX_HTTP_LIST_ITEM_MAX] = '\0';
    l = cx_http_list_split(big, 1, &err);
    assert_non_null(l);
    assert_int_equal(strlen(l[0]), CX_HTTP_LIST_ITEM_MAX);
    cx_http_list_free(l);
    cx_http_list_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host_table),        cmocka_unit_test(test_host_table_in_urls),
        cmocka_unit_test(test_url_shape),         cmocka_unit_test(test_allow_list),
        cmocka_unit_test(test_classify_sockaddr), cmocka_unit_test(test_allow_host_entries),
        cmocka_unit_test(test_connect_to_parse),  cmocka_unit_test(test_list_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
