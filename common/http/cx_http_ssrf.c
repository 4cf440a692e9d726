/*
 * SSRF screening of user-given URLs (cx_http.h): address classes from the IANA IPv4 and IPv6
 * special-purpose registries, IP literals in every notation a resolver reads, URL shape.
 *
 * Parsing is deliberately stricter than libcurl's: anything it might read differently (spaces,
 * backslashes, percent signs or non-ASCII bytes in the host, a numeric last label that is not a
 * valid IPv4 literal) is refused rather than guessed, so that the host checked here is the host
 * libcurl would connect to.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>

#include "common/http/cx_http.h"

/* ---- address classes ------------------------------------------------------------------------ */

typedef struct v4_range {
    uint32_t net;
    unsigned bits;
    cx_http_ip_class_t cls;
} v4_range_t;

#define V4(a, b, c, d) (((uint32_t)(a) << 24) | ((uint32_t)(b) << 16) | ((uint32_t)(c) << 8) | (d))

/* First match wins: 255.255.255.255 before 240/4. */
static const v4_range_t v4_ranges[] = {
    {V4(0, 0, 0, 0), 8, CX_HTTP_IP_UNSPECIFIED},
    {V4(10, 0, 0, 0), 8, CX_HTTP_IP_PRIVATE},
    {V4(100, 64, 0, 0), 10, CX_HTTP_IP_SHARED},
    {V4(127, 0, 0, 0), 8, CX_HTTP_IP_LOOPBACK},
    {V4(169, 254, 0, 0), 16, CX_HTTP_IP_LINK_LOCAL},
    {V4(172, 16, 0, 0), 12, CX_HTTP_IP_PRIVATE},
    {V4(192, 0, 0, 0), 24, CX_HTTP_IP_RESERVED}, /* IETF protocol assignments, DS-Lite */
    {V4(192, 0, 2, 0), 24, CX_HTTP_IP_DOCUMENTATION},
    {V4(192, 88, 99, 0), 24, CX_HTTP_IP_RESERVED}, /* former 6to4 relay anycast */
    {V4(192, 168, 0, 0), 16, CX_HTTP_IP_PRIVATE},
    {V4(198, 18, 0, 0), 15, CX_HTTP_IP_BENCHMARK},
    {V4(198, 51, 100, 0), 24, CX_HTTP_IP_DOCUMENTATION},
    {V4(203, 0, 113, 0), 24, CX_HTTP_IP_DOCUMENTATION},
    {V4(224, 0, 0, 0), 4, CX_HTTP_IP_MULTICAST},
    {V4(255, 255, 255, 255), 32, CX_HTTP_IP_BROADCAST},
    {V4(240, 0, 0, 0), 4, CX_HTTP_IP_RESERVED},
};

static cx_http_ip_class_t classify4(uint32_t a)
{
    for (size_t i = 0; i < sizeof(v4_ranges) / sizeof(v4_ranges[0]); i++) {
        uint32_t mask = v4_ranges[i].bits == 0 ? 0 : ~(uint32_t)0 << (32 - v4_ranges[i].bits);
        if ((a & mask) == v4_ranges[i].net)
            return v4_ranges[i].cls;
    }
    return CX_HTTP_IP_PUBLIC;
}

/* IPv6 ranges that carry an IPv4 address: where it starts, and what a public one means. */
enum { EMBED_NONE, EMBED_AS_IS, EMBED_COMPAT };

typedef struct v6_range {
    uint8_t net[16];
    unsigned bits;
    cx_http_ip_class_t cls; /* when embed is EMBED_NONE */
    int embed;
    unsigned v4_at; /* byte offset of the embedded IPv4 address */
} v6_range_t;

/* First match wins: the specific ranges inside 2001::/23 before it. */
static const v6_range_t v6_ranges[] = {
    {{0}, 128, CX_HTTP_IP_UNSPECIFIED, EMBED_NONE, 0},
    {{[15] = 1}, 128, CX_HTTP_IP_LOOPBACK, EMBED_NONE, 0},
    {{[10] = 0xff, [11] = 0xff}, 96, CX_HTTP_IP_PUBLIC, EMBED_AS_IS, 12}, /* IPv4-mapped */
    {{0}, 96, CX_HTTP_IP_RESERVED, EMBED_COMPAT, 12}, /* IPv4-compatible (deprecated) */
    {{0x00, 0x64, 0xff, 0x9b}, 96, CX_HTTP_IP_PUBLIC, EMBED_AS_IS, 12}, /* NAT64 */
    {{0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}, 48, CX_HTTP_IP_RESERVED, EMBED_NONE, 0},
    {{0x01, 0x00}, 64, CX_HTTP_IP_RESERVED, EMBED_NONE, 0}, /* discard-only */
    {{0x20, 0x01, 0x00, 0x00}, 32, CX_HTTP_IP_TEREDO, EMBED_NONE, 0},
    {{0x20, 0x01, 0x00, 0x02, 0x00, 0x00}, 48, CX_HTTP_IP_BENCHMARK, EMBED_NONE, 0},
    {{0x20, 0x01, 0x00, 0x00}, 23, CX_HTTP_IP_RESERVED, EMBED_NONE, 0}, /* IETF assignments */
    {{0x20, 0x01, 0x0d, 0xb8}, 32, CX_HTTP_IP_DOCUMENTATION, EMBED_NONE, 0},
    {{0x20, 0x02}, 16, CX_HTTP_IP_PUBLIC, EMBED_AS_IS, 2}, /* 6to4 */
    {{0x3f, 0xff}, 20, CX_HTTP_IP_DOCUMENTATION, EMBED_NONE, 0},
    {{0x5f, 0x00}, 16, CX_HTTP_IP_RESERVED, EMBED_NONE, 0}, /* SRv6 SIDs */
    {{0xfc}, 7, CX_HTTP_IP_UNIQUE_LOCAL, EMBED_NONE, 0},
    {{0xfe, 0x80}, 10, CX_HTTP_IP_LINK_LOCAL, EMBED_NONE, 0},
    {{0xfe, 0xc0}, 10, CX_HTTP_IP_RESERVED, EMBED_NONE, 0}, /* site-local (deprecated) */
    {{0xff}, 8, CX_HTTP_IP_MULTICAST, EMBED_NONE, 0},
};

static bool v6_in(const uint8_t a[16], const uint8_t net[16], unsigned bits)
{
    unsigned full = bits / 8, rest = bits % 8;
    if (memcmp(a, net, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[full] & mask) == net[full];
}

static cx_http_ip_class_t classify6(const uint8_t a[16])
{
    for (size_t i = 0; i < sizeof(v6_ranges) / sizeof(v6_ranges[0]); i++) {
        const v6_range_t *r = &v6_ranges[i];
        if (!v6_in(a, r->net, r->bits))
            continue;
        if (r->embed == EMBED_NONE)
            return r->cls;
        const uint8_t *p = a + r->v4_at;
        cx_http_ip_class_t c = classify4(V4(p[0], p[1], p[2], p[3]));
        return c != CX_HTTP_IP_PUBLIC ? c : r->cls;
    }
    /* Global unicast is 2000::/3; the rest of the space is unassigned or special. */
    return (a[0] & 0xe0) == 0x20 ? CX_HTTP_IP_PUBLIC : CX_HTTP_IP_RESERVED;
}

cx_http_ip_class_t cx_http_ip_classify(const struct sockaddr *sa)
{
    if (sa == NULL)
        return CX_HTTP_IP_RESERVED;
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in in;
        memcpy(&in, sa, sizeof(in));
        return classify4(ntohl(in.sin_addr.s_addr));
    }
    if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 in6;
        memcpy(&in6, sa, sizeof(in6));
        return classify6(in6.sin6_addr.s6_addr);
    }
    return CX_HTTP_IP_RESERVED;
}

const char *cx_http_ip_class_name(cx_http_ip_class_t c)
{
    static const char *const names[CX_HTTP_IP_CLASS_COUNT_] = {
        [CX_HTTP_IP_PUBLIC] = "public",
        [CX_HTTP_IP_UNSPECIFIED] = "unspecified",
        [CX_HTTP_IP_LOOPBACK] = "loopback",
        [CX_HTTP_IP_PRIVATE] = "private",
        [CX_HTTP_IP_LINK_LOCAL] = "link_local",
        [CX_HTTP_IP_SHARED] = "shared",
        [CX_HTTP_IP_UNIQUE_LOCAL] = "unique_local",
        [CX_HTTP_IP_MULTICAST] = "multicast",
        [CX_HTTP_IP_BROADCAST] = "broadcast",
        [CX_HTTP_IP_DOCUMENTATION] = "documentation",
        [CX_HTTP_IP_BENCHMARK] = "benchmark",
        [CX_HTTP_IP_RESERVED] = "reserved",
        [CX_HTTP_IP_TEREDO] = "teredo",
    };
    if ((unsigned)c >= CX_HTTP_IP_CLASS_COUNT_)
        return "reserved";
    return names[c];
}

/* ---- host literals -------------------------------------------------------------------------- */

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int hex_value(char c)
{
    if (is_digit(c))
        return c - '0';
    c = lower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* One part of an inet_aton address: decimal, 0-prefixed octal or 0x-prefixed hex ("0x" alone
 * is 0, as glibc reads it). Values past 32 bits are refused without overflowing. */
static bool v4_part(const char *p, size_t n, uint64_t *out)
{
    unsigned base = 10;
    if (n == 0)
        return false;
    if (n >= 2 && p[0] == '0' && lower(p[1]) == 'x') {
        base = 16;
        p += 2;
        n -= 2;
    } else if (p[0] == '0') {
        base = 8;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        int d = base == 16 ? hex_value(p[i]) : (is_digit(p[i]) ? p[i] - '0' : -1);
        if (d < 0 || (unsigned)d >= base)
            return false;
        v = v * base + (unsigned)d;
        if (v > 0xffffffffu)
            return false;
    }
    *out = v;
    return true;
}

static bool v4_parse(const char *h, size_t len, uint32_t *out)
{
    uint64_t parts[4];
    size_t np = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && h[i] != '.')
            continue;
        if (np == 4 || !v4_part(h + start, i - start, &parts[np]))
            return false;
        np++;
        start = i + 1;
    }
    uint64_t v = 0;
    for (size_t i = 0; i + 1 < np; i++) {
        if (parts[i] > 255)
            return false;
        v |= parts[i] << (8 * (3 - i));
    }
    unsigned last_bits = 8 * (unsigned)(5 - np); /* 32, 24, 16 or 8 */
    if (last_bits < 32 && parts[np - 1] >> last_bits != 0)
        return false;
    *out = (uint32_t)(v | parts[np - 1]);
    return true;
}

/* URL parsers read a host whose last label is a number as an IPv4 address, never as a name. */
static bool last_label_numeric(const char *h, size_t len)
{
    size_t s = len;
    while (s > 0 && h[s - 1] != '.')
        s--;
    const char *l = h + s;
    size_t n = len - s;
    if (n == 0)
        return false;
    size_t i = 0;
    if (n >= 2 && l[0] == '0' && lower(l[1]) == 'x') {
        for (i = 2; i < n && hex_value(l[i]) >= 0; i++)
            ;
        return i == n;
    }
    for (; i < n && is_digit(l[i]); i++)
        ;
    return i == n;
}

static bool is_localhost(const char *h, size_t len)
{
    static const char lh[] = "localhost";
    size_t n = sizeof(lh) - 1;
    if (len < n || (len > n && h[len - n - 1] != '.'))
        return false;
    for (size_t i = 0; i < n; i++)
        if (lower(h[len - n + i]) != lh[i])
            return false;
    return true;
}

static bool name_char(char c)
{
    return is_digit(c) || (lower(c) >= 'a' && lower(c) <= 'z') || c == '-' || c == '_' || c == '.';
}

bool cx_http_host_literal_parse(const char *host, size_t len, cx_http_host_t *out, cx_error_t *err)
{
    cx_http_host_t h = {.kind = CX_HTTP_HOST_NAME};
    if (host == NULL || len == 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "URL host is empty");
    if (len > CX_HTTP_HOST_MAX + 2)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "URL host is too long");
    bool bracketed = host[0] == '[';
    if (bracketed || memchr(host, ':', len) != NULL) {
        if (bracketed) {
            if (len < 3 || host[len - 1] != ']')
                return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "URL host is malformed");
            host++;
            len -= 2;
        }
        if (memchr(host, '%', len) != NULL)
            return cx_error_set(err, CX_ERR_SSRF_BLOCKED, "URL host has an IPv6 zone id");
        char buf[INET6_ADDRSTRLEN];
        struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
        if (len >= sizeof(buf))
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "URL host is malformed");
        memcpy(buf, host, len);
        buf[len] = '\0';
        if (inet_pton(AF_INET6, buf, &in6.sin6_addr) != 1)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "URL host is malformed");
        h.kind = CX_HTTP_HOST_IP;
        memcpy(&h.addr, &in6, sizeof(in6));
        *out = h;
        return true;
    }
    if (host[len - 1] == '.')
        len--;
    if (len == 0 || len > CX_HTTP_HOST_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "URL host is malformed");
    for (size_t i = 0; i < len; i++)
        if (!name_char(host[i]) || (host[i] == '.' && (i == 0 || host[i - 1] == '.')))
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "URL host has a forbidden character or an empty label");
    if (last_label_numeric(host, len)) {
        uint32_t a;
        if (!v4_parse(host, len, &a))
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "URL host is a malformed IPv4 address");
        struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(a)};
        h.kind = CX_HTTP_HOST_IP;
        memcpy(&h.addr, &in, sizeof(in));
    } else if (is_localhost(host, len)) {
        h.kind = CX_HTTP_HOST_LOCALHOST;
    }
    *out = h;
    return true;
}

/* ---- URLs ----------------------------------------------------------------------------------- */

/* Host text without brackets and one trailing dot, compared without case. */
static bool host_matches(const char *h, size_t hl, const char *entry)
{
    size_t el = strlen(entry);
    if (el > 0 && entry[el - 1] == '.')
        el--;
    if (hl > 0 && h[hl - 1] == '.')
        hl--;
    if (el >= 2 && entry[0] == '*' && entry[1] == '.') {
        entry++; /* ".suffix": at least one label must precede it */
        el--;
        if (hl <= el)
            return false;
        h += hl - el;
        hl = el;
    }
    if (el != hl || el == 0)
        return false;
    for (size_t i = 0; i < el; i++)
        if (lower(h[i]) != lower(entry[i]))
            return false;
    return true;
}

static bool url_char_ok(char c)
{
    return c > 0x20 && c < 0x7f && c != '\\';
}

bool cx_http_url_check(const char *url, const char *const *allow_list, cx_error_t *err)
{
    static const char scheme[] = "https://";
    if (url == NULL)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "URL is missing");
    size_t n = strnlen(url, CX_HTTP_URL_MAX + 1);
    if (n > CX_HTTP_URL_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "URL is too long");
    for (size_t i = 0; i < n; i++)
        if (!url_char_ok(url[i]))
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "URL has a forbidden character");
    size_t sl = sizeof(scheme) - 1;
    if (n < sl || strncasecmp(url, scheme, sl) != 0)
        return cx_error_set(err, CX_ERR_SSRF_BLOCKED, "URL scheme is not https");
    const char *auth = url + sl;
    size_t al = strcspn(auth, "/?#");
    if (memchr(auth, '@', al) != NULL)
        return cx_error_set(err, CX_ERR_SSRF_BLOCKED, "URL carries user information");
    size_t hl;
    if (al > 0 && auth[0] == '[') {
        const char *close = memchr(auth, ']', al);
        if (close == NULL)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "URL host is malformed");
        hl = (size_t)(close - auth) + 1;
    } else {
        const char *colon = memchr(auth, ':', al);
        hl = colon != NULL ? (size_t)(colon - auth) : al;
    }
    if (hl == 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "URL has no host");
    if (hl < al) {
        const char *p = auth + hl;
        size_t pl = al - hl;
        unsigned long port = 0;
        if (p[0] != ':' || pl < 2 || pl > 6)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "URL port is malformed");
        for (size_t i = 1; i < pl; i++) {
            if (!is_digit(p[i]))
                return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "URL port is malformed");
            port = port * 10 + (unsigned long)(p[i] - '0');
        }
        if (port == 0 || port > 65535)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "URL port is out of range");
    }
    cx_http_host_t h;
    if (!cx_http_host_literal_parse(auth, hl, &h, err))
        return false;
    if (h.kind == CX_HTTP_HOST_LOCALHOST)
        return cx_error_set(err, CX_ERR_SSRF_BLOCKED, "URL host is a loopback name");
    if (h.kind == CX_HTTP_HOST_IP) {
        cx_http_ip_class_t c = cx_http_ip_classify((const struct sockaddr *)&h.addr);
        if (c != CX_HTTP_IP_PUBLIC)
            return cx_error_set(err, CX_ERR_SSRF_BLOCKED,
                                "URL host is in a forbidden address class (%s)",
                                cx_http_ip_class_name(c));
    }
    if (allow_list != NULL) {
        const char *ht = auth[0] == '[' ? auth + 1 : auth;
        size_t htl = auth[0] == '[' ? hl - 2 : hl;
        bool ok = false;
        for (size_t i = 0; allow_list[i] != NULL && !ok; i++)
            ok = host_matches(ht, htl, allow_list[i]);
        if (!ok)
            return cx_error_set(err, CX_ERR_SSRF_BLOCKED, "URL host is not on the allow-list");
    }
    return true;
}

/* ---- allow-list entries, the connect-to override, lists ---------------------------------- */

bool cx_http_allow_host_check(const char *entry, cx_error_t *err)
{
    if (entry == NULL)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "allow-list entry is missing");
    size_t n = strnlen(entry, CX_HTTP_HOST_MAX + 4);
    const char *p = entry;
    if (n >= 2 && p[0] == '*' && p[1] == '.') {
        p += 2;
        n -= 2;
    }
    if (n > 0 && p[n - 1] == '.')
        n--;
    if (n == 0 || n > CX_HTTP_HOST_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "allow-list entry is empty or too long");
    for (size_t i = 0; i < n; i++) {
        char c = lower(p[i]);
        bool label = is_digit(c) || (c >= 'a' && c <= 'z') || c == '-';
        if (!label && !(c == '.' && i > 0 && p[i - 1] != '.' && i + 1 < n))
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "allow-list entry has a forbidden character or an empty label");
    }
    return true;
}

/* A port as written in an override entry: 1..65535, decimal, no sign, no leading zero. */
static bool port_parse(const char *p, size_t n, unsigned *out)
{
    unsigned v = 0;
    if (n == 0 || n > 5 || p[0] == '0')
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(p[i]))
            return false;
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    if (v > 65535)
        return false;
    *out = v;
    return true;
}

static bool connect_to_fail(cx_error_t *err, const char *why)
{
    return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "connect_to entry: %s", why);
}

bool cx_http_connect_to_parse(const char *entry, cx_http_connect_to_t *out, cx_error_t *err)
{
    cx_http_connect_to_t r;
    memset(&r, 0, sizeof(r));
    if (entry == NULL)
        return connect_to_fail(err, "missing");
    size_t n = strnlen(entry, CX_HTTP_LIST_ITEM_MAX + 1);
    if (n > CX_HTTP_LIST_ITEM_MAX)
        return connect_to_fail(err, "too long");
    const char *c1 = memchr(entry, ':', n);
    const char *c2 = c1 ? memchr(c1 + 1, ':', n - (size_t)(c1 + 1 - entry)) : NULL;
    if (c2 == NULL)
        return connect_to_fail(err, "expected host:port:addr:port2");
    size_t hl = (size_t)(c1 - entry);
    cx_http_host_t h;
    if (hl > CX_HTTP_HOST_MAX || !cx_http_host_literal_parse(entry, hl, &h, NULL) ||
        h.kind != CX_HTTP_HOST_NAME)
        return connect_to_fail(err, "host is not a DNS name");
    if (!port_parse(c1 + 1, (size_t)(c2 - c1 - 1), &r.port))
        return connect_to_fail(err, "port is not in 1..65535");
    const char *a = c2 + 1, *end = entry + n, *c3;
    char buf[INET6_ADDRSTRLEN];
    if (a < end && a[0] == '[') {
        const char *close = memchr(a, ']', (size_t)(end - a));
        if (close == NULL || close + 1 >= end || close[1] != ':')
            return connect_to_fail(err, "expected host:port:addr:port2");
        c3 = close + 1;
        a++;
    } else {
        c3 = memchr(a, ':', (size_t)(end - a));
        if (c3 == NULL)
            return connect_to_fail(err, "expected host:port:addr:port2");
    }
    size_t al = (size_t)((a[-1] == '[' ? c3 - 1 : c3) - a);
    if (al == 0 || al >= sizeof(buf))
        return connect_to_fail(err, "target is not a loopback address");
    memcpy(buf, a, al);
    buf[al] = '\0';
    unsigned port2;
    if (!port_parse(c3 + 1, (size_t)(end - c3 - 1), &port2))
        return connect_to_fail(err, "target port is not in 1..65535");
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port2)};
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port2)};
    /* inet_pton reads only the strict dotted quad (no octal, hex or short forms). */
    if (a[-1] != '[' && inet_pton(AF_INET, buf, &in.sin_addr) == 1 &&
        cx_http_ip_classify((const struct sockaddr *)&in) == CX_HTTP_IP_LOOPBACK)
        memcpy(&r.target, &in, sizeof(in));
    else if (a[-1] == '[' && inet_pton(AF_INET6, buf, &in6.sin6_addr) == 1 &&
             IN6_IS_ADDR_LOOPBACK(&in6.sin6_addr))
        memcpy(&r.target, &in6, sizeof(in6));
    else
        return connect_to_fail(err, "target is not a loopback address");
    memcpy(r.host, entry, hl);
    r.host[hl] = '\0';
    *out = r;
    return true;
}

static bool list_blank(char c)
{
    return c == ' ' || c == '\t';
}

void cx_http_list_free(char **list)
{
    if (list == NULL)
        return;
    for (size_t i = 0; list[i] != NULL; i++)
        free(list[i]);
    free(list);
}

char **cx_http_list_split(const char *csv, size_t max_items, cx_error_t *err)
{
    if (csv == NULL)
        csv = "";
    size_t cap = 1;
    for (const char *p = csv; *p != '\0'; p++)
        cap += *p == ',';
    if (cap > max_items)
        cap = max_items;
    char **list = calloc(cap + 1, sizeof(*list));
    if (list == NULL) {
        cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    size_t n = 0;
    for (const char *p = csv;; p++) {
        size_t len = strcspn(p, ",");
        const char *s = p, *e = p + len;
        while (s < e && list_blank(*s))
            s++;
        while (e > s && list_blank(e[-1]))
            e--;
        if (e > s) {
            if (n == max_items || (size_t)(e - s) > CX_HTTP_LIST_ITEM_MAX) {
                cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                             n == max_items ? "list has more than the allowed number of items"
                                            : "list item is too long");
                goto fail;
            }
            if ((list[n] = strndup(s, (size_t)(e - s))) == NULL) {
                cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
                goto fail;
            }
            n++;
        }
        p += len;
        if (*p == '\0')
            break;
    }
    return list;
fail:
    cx_http_list_free(list);
    return NULL;
}
