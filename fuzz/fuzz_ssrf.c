/* Fuzz target: the SSRF screening of common/http (cx_http_ssrf.c), the input read as a URL's
 * host, as a whole URL, as an allow-list entry, as a connect-to entry and as a comma list. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/http/cx_http.h"

static void check(bool ok)
{
    if (!ok)
        abort();
}

static const void *addr_of(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET ? (const void *)&((const struct sockaddr_in *)ss)->sin_addr
                                    : (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
}

static size_t addr_len(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET ? sizeof(struct in_addr) : sizeof(struct in6_addr);
}

/* A literal round-trips: its canonical text is what inet_pton reads as the same address, and
 * the parser reads that text as the same address too. */
static void round_trip(const cx_http_host_t *h)
{
    int fam = h->addr.ss_family;
    check(fam == AF_INET || fam == AF_INET6);
    char text[INET6_ADDRSTRLEN + 2];
    uint8_t back[16];
    check(inet_ntop(fam, addr_of(&h->addr), text, INET6_ADDRSTRLEN) != NULL);
    check(inet_pton(fam, text, back) == 1);
    check(memcmp(back, addr_of(&h->addr), addr_len(&h->addr)) == 0);
    cx_http_host_t again;
    if (fam == AF_INET6) {
        size_t n = strlen(text);
        memmove(text + 1, text, n);
        text[0] = '[';
        text[n + 1] = ']';
        text[n + 2] = '\0';
    }
    check(cx_http_host_literal_parse(text, strlen(text), &again, NULL));
    check(again.kind == CX_HTTP_HOST_IP && again.addr.ss_family == fam);
    check(memcmp(addr_of(&again.addr), addr_of(&h->addr), addr_len(&h->addr)) == 0);
}

/* An IPv4 address carried in IPv6 (mapped, NAT64, 6to4) is refused whenever it is refused
 * alone, with the same class. */
static void embedded(const cx_http_host_t *h)
{
    if (h->addr.ss_family != AF_INET)
        return;
    cx_http_ip_class_t c4 = cx_http_ip_classify((const struct sockaddr *)&h->addr);
    static const struct {
        uint8_t prefix[4];
        size_t plen, at;
    } carriers[] = {{{0xff, 0xff}, 2, 12}, {{0x00, 0x64, 0xff, 0x9b}, 4, 12}, {{0x20, 0x02}, 2, 2}};
    for (size_t i = 0; i < sizeof(carriers) / sizeof(carriers[0]); i++) {
        struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
        size_t p0 = carriers[i].plen == 2 && carriers[i].at == 12 ? 10 : 0;
        memcpy(in6.sin6_addr.s6_addr + p0, carriers[i].prefix, carriers[i].plen);
        memcpy(in6.sin6_addr.s6_addr + carriers[i].at, addr_of(&h->addr), 4);
        cx_http_ip_class_t c6 = cx_http_ip_classify((const struct sockaddr *)&in6);
        check(c4 == CX_HTTP_IP_PUBLIC ? c6 == CX_HTTP_IP_PUBLIC : c6 == c4);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* The readers of the configuration's lists: what they accept has the promised shape, and a
 * refusal never quotes the input. Their fixed messages hold ':' and '.' ("1..65535") but none
 * of "[@/" and are shorter than 65 bytes, so only such inputs are sure not to be quoted. */
static void lists(const char *in)
{
    size_t in_len = strlen(in);
    bool quotable = in_len > 64 || (in_len >= 4 && strpbrk(in, "[@/") != NULL);
    cx_error_t err;
    if (cx_http_allow_host_check(in, &err)) {
        const char *p = strncmp(in, "*.", 2) == 0 ? in + 2 : in;
        check(*p != '\0' && *p != '.' &&
              strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTU"
                        "VWXYZ0123456789-.") == strlen(p));
        check(strstr(p, "..") == NULL);
    } else {
        check(err.code == CX_ERR_INVALID_ARGUMENT);
        check(!quotable || strstr(err.message, in) == NULL);
    }

    cx_http_connect_to_t ct;
    if (cx_http_connect_to_parse(in, &ct, &err)) {
        check(ct.port >= 1 && ct.port <= 65535 && ct.host[0] != '\0');
        check(strchr(ct.host, ':') == NULL && strncmp(in, ct.host, strlen(ct.host)) == 0);
        check(cx_http_ip_classify((const struct sockaddr *)&ct.target) == CX_HTTP_IP_LOOPBACK);
        const struct sockaddr_in *t4 = (const struct sockaddr_in *)&ct.target;
        const struct sockaddr_in6 *t6 = (const struct sockaddr_in6 *)&ct.target;
        check((ct.target.ss_family == AF_INET ? t4->sin_port : t6->sin6_port) != 0);
        cx_http_host_t h;
        check(cx_http_host_literal_parse(ct.host, strlen(ct.host), &h, NULL) &&
              h.kind == CX_HTTP_HOST_NAME);
    } else {
        check(err.code == CX_ERR_INVALID_ARGUMENT);
        check(strstr(err.message, "connect_to") != NULL);
        check(!quotable || strstr(err.message, in) == NULL);
    }

    char **l = cx_http_list_split(in, 8, &err);
    if (l == NULL) {
        check(err.code == CX_ERR_INVALID_ARGUMENT);
        check(!quotable || strstr(err.message, in) == NULL);
        return;
    }
    size_t n = 0;
    for (; l[n] != NULL; n++) {
        size_t len = strlen(l[n]);
        check(len > 0 && len <= CX_HTTP_LIST_ITEM_MAX && strchr(l[n], ',') == NULL);
        check(l[n][0] != ' ' && l[n][0] != '\t' && l[n][len - 1] != ' ' && l[n][len - 1] != '\t');
        check(strstr(in, l[n]) != NULL);
    }
    check(n <= 8);
    cx_http_list_free(l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > CX_HTTP_URL_MAX)
        return 0;
    char *host = malloc(size + 1);
    memcpy(host, data, size);
    host[size] = '\0';
    bool has_nul = strlen(host) != size;
    /* Refusal messages are fixed words (and a class name) without any of these characters, so
     * an input holding one can be found in a message only if the message quotes it. */
    bool quotable = size >= 4 && strpbrk(host, ".:/[@") != NULL;

    cx_http_host_t h;
    cx_error_t err;
    bool parsed = cx_http_host_literal_parse(host, size, &h, &err);
    check(parsed || err.code == CX_ERR_INVALID_ARGUMENT || err.code == CX_ERR_SSRF_BLOCKED);
    if (parsed && h.kind == CX_HTTP_HOST_IP) {
        round_trip(&h);
        embedded(&h);
    }

    /* Nothing glibc reads as an IPv4 address is taken for a name, nor for another address. */
    struct in_addr aton;
    if (!has_nul && inet_aton(host, &aton) == 1 && parsed) {
        check(h.kind == CX_HTTP_HOST_IP && h.addr.ss_family == AF_INET);
        check(memcmp(&aton, addr_of(&h.addr), sizeof(aton)) == 0);
    }

    /* The input as a URL's host: accepted only if a name or a public literal, and a refusal
     * never quotes the host. */
    if (!has_nul) {
        char *url = malloc(size + 16);
        memcpy(url, "https://", 8);
        memcpy(url + 8, host, size);
        memcpy(url + 8 + size, "/p", 3);
        bool accepted = cx_http_url_check(url, NULL, &err);
        if (accepted && parsed) {
            check(h.kind != CX_HTTP_HOST_LOCALHOST);
            check(h.kind == CX_HTTP_HOST_NAME ||
                  cx_http_ip_classify((const struct sockaddr *)&h.addr) == CX_HTTP_IP_PUBLIC);
        }
        if (!accepted && quotable)
            check(strstr(err.message, host) == NULL);
        free(url);

        /* The input as a whole URL: an accepted one is https without user information. */
        if (cx_http_url_check(host, NULL, &err)) {
            check(strncasecmp(host, "https://", 8) == 0);
            check(memchr(host + 8, '@', strcspn(host + 8, "/?#")) == NULL);
        } else {
            check(err.code == CX_ERR_INVALID_ARGUMENT || err.code == CX_ERR_SSRF_BLOCKED);
            if (quotable)
                check(strstr(err.message, host) == NULL);
        }
    }
    if (!has_nul)
        lists(host);
    free(host);
    return 0;
}
