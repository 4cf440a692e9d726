/*
 * cx_config: one table describes every variable (name, kind, default, limits, where it lands
 * in cx_config_t), so the loader, the defaults and docs/CONFIGURATION.md can be checked
 * against each other line by line.
 */
#include "common/config/cx_config.h"
#include "common/http/cx_http.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* How much of a bad value an error message repeats: enough to spot a typo. */
#define CX_CONFIG_SHOW_MAX 48

static const char *const cx_service_names[CX_SVC_COUNT_] = {
    [CX_SVC_KEYWRAP] = "keywrap", [CX_SVC_STORE] = "store", [CX_SVC_OAUTH] = "oauth",
    [CX_SVC_GATEWAY] = "gateway", [CX_SVC_EDGE] = "edge",
};

const char *cx_service_name(cx_service_t svc)
{
    if ((unsigned)svc >= (unsigned)CX_SVC_COUNT_)
        return NULL;
    return cx_service_names[svc];
}

/* ---- echoing values in messages ------------------------------------------------------ */

static bool cx_config_ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

/* "scheme://user:pass@host": the password must not reach an error message or a log. */
static bool cx_config_has_userinfo(const char *value)
{
    const char *p = strstr(value, "://");
    if (p == NULL)
        return false;
    p += 3;
    size_t host_end = strcspn(p, "/?#");
    const char *at = memchr(p, '@', host_end);
    return at != NULL;
}

/* What an error message says instead of the value: the value itself, quoted, cut and made
 * printable, unless the variable may hold a secret or the value looks like one. */
static void cx_config_show(const char *name, const char *value, char *out, size_t outsz)
{
    size_t o = 0, i;

    if (cx_config_ends_with(name, "_SECRET") || cx_config_has_userinfo(value) ||
        cx_log_value_is_sensitive(value)) {
        snprintf(out, outsz, "(value hidden)");
        return;
    }
    /* Worst case per input byte is 2 output bytes; leave room for quotes, "..." and NUL. */
    if (outsz < 2 * CX_CONFIG_SHOW_MAX + 8) {
        snprintf(out, outsz, "(value hidden)");
        return;
    }
    out[o++] = '"';
    for (i = 0; value[i] != '\0' && i < CX_CONFIG_SHOW_MAX; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c == '"' || c == '\\')
            out[o++] = '\\';
        out[o++] = (c >= 0x20 && c < 0x7F) ? (char)c : '?';
    }
    if (value[i] != '\0') {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o++] = '"';
    out[o] = '\0';
}

#define CX_CONFIG_SHOW_BUF (2 * CX_CONFIG_SHOW_MAX + 8)

static bool cx_config_fail(cx_error_t *err, const char *name, const char *expected,
                           const char *value)
{
    char shown[CX_CONFIG_SHOW_BUF];
    cx_config_show(name, value, shown, sizeof(shown));
    return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: expected %s, got %s", name, expected,
                        shown);
}

static const char *cx_config_name(const char *name)
{
    return name != NULL ? name : "(unnamed variable)";
}

/* ---- building blocks ----------------------------------------------------------------- */

bool cx_config_parse_bool(const char *name, const char *value, bool def, bool *out, cx_error_t *err)
{
    static const char *const yes[] = {"true", "1", "yes"};
    static const char *const no[] = {"false", "0", "no"};

    name = cx_config_name(name);
    if (out == NULL)
        return cx_error_set(err, CX_ERR_INTERNAL, "%s: no output for the value", name);
    if (value == NULL || value[0] == '\0') {
        *out = def;
        return true;
    }
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(value, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(value, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return cx_config_fail(err, name, "true|false|1|0|yes|no", value);
}

bool cx_config_parse_uint(const char *name, const char *value, uint64_t min, uint64_t max,
                          uint64_t def, uint64_t *out, cx_error_t *err)
{
    char expected[64];
    uint64_t v = 0;

    name = cx_config_name(name);
    if (out == NULL)
        return cx_error_set(err, CX_ERR_INTERNAL, "%s: no output for the value", name);
    if (value == NULL || value[0] == '\0') {
        *out = def;
        return true;
    }
    snprintf(expected, sizeof(expected), "an integer in %" PRIu64 "..%" PRIu64, min, max);
    /* Plain decimal only: strtoull would accept signs, spaces and wrap "-1" to UINT64_MAX. */
    for (const char *p = value; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return cx_config_fail(err, name, expected, value);
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return cx_config_fail(err, name, expected, value);
        v = v * 10 + d;
    }
    if (v < min || v > max)
        return cx_config_fail(err, name, expected, value);
    *out = v;
    return true;
}

bool cx_config_parse_str(const char *name, const char *value, const char *def, char *out,
                         size_t outsz, cx_error_t *err)
{
    const char *src = (value == NULL || value[0] == '\0') ? def : value;
    size_t n;

    name = cx_config_name(name);
    if (out == NULL || outsz == 0)
        return cx_error_set(err, CX_ERR_INTERNAL, "%s: no output for the value", name);
    if (src == NULL)
        src = "";
    n = strlen(src);
    if (n >= outsz)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "%s: expected at most %zu bytes, got %zu bytes", name, outsz - 1, n);
    memcpy(out, src, n + 1);
    return true;
}

bool cx_config_parse_enum(const char *name, const char *value, const char *const *choices,
                          size_t def, size_t *out, cx_error_t *err)
{
    char expected[192];
    size_t len = 0;

    name = cx_config_name(name);
    if (out == NULL || choices == NULL)
        return cx_error_set(err, CX_ERR_INTERNAL, "%s: no choices or no output", name);
    if (value == NULL || value[0] == '\0') {
        *out = def;
        return true;
    }
    for (size_t i = 0; choices[i] != NULL; i++) {
        if (strcmp(value, choices[i]) == 0) {
            *out = i;
            return true;
        }
    }
    len = (size_t)snprintf(expected, sizeof(expected), "one of ");
    for (size_t i = 0; choices[i] != NULL && len < sizeof(expected); i++)
        len += (size_t)snprintf(expected + len, sizeof(expected) - len, "%s%s", i > 0 ? "|" : "",
                                choices[i]);
    return cx_config_fail(err, name, expected, value);
}

/* ---- value checks for strings -------------------------------------------------------- */

static bool cx_config_all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
    }
    return n > 0;
}

static bool cx_config_hostname_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

static bool cx_config_ipv6_char(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' ||
           c == '.';
}

/* host:port where host is a name, an IPv4 address or a bracketed IPv6 address, and port is
 * 0..65535 (0 lets the kernel choose, which the tests use). */
static bool cx_config_check_addr(const char *v);

/* An address, or "off" (the listener is off; an empty value means the default, as for every
 * variable). */
static bool cx_config_check_addr_or_off(const char *v)
{
    return strcmp(v, "off") == 0 || cx_config_check_addr(v);
}

static bool cx_config_check_addr(const char *v)
{
    const char *colon = strrchr(v, ':');
    size_t hlen, plen;
    uint64_t port = 0;

    if (colon == NULL)
        return false;
    hlen = (size_t)(colon - v);
    plen = strlen(colon + 1);
    if (hlen == 0 || plen == 0 || plen > 5 || !cx_config_all_digits(colon + 1, plen))
        return false;
    for (size_t i = 0; i < plen; i++)
        port = port * 10 + (uint64_t)(colon[1 + i] - '0');
    if (port > 65535)
        return false;
    if (v[0] == '[') {
        if (hlen < 3 || v[hlen - 1] != ']')
            return false;
        for (size_t i = 1; i + 1 < hlen; i++) {
            if (!cx_config_ipv6_char(v[i]))
                return false;
        }
        return true;
    }
    for (size_t i = 0; i < hlen; i++) {
        if (!cx_config_hostname_char(v[i]))
            return false;
    }
    return true;
}

static bool cx_config_starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool cx_config_check_mongo_uri(const char *v)
{
    return (cx_config_starts_with(v, "mongodb://") && v[10] != '\0') ||
           (cx_config_starts_with(v, "mongodb+srv://") && v[14] != '\0');
}

static bool cx_config_check_http_url(const char *v)
{
    return (cx_config_starts_with(v, "http://") && v[7] != '\0') ||
           (cx_config_starts_with(v, "https://") && v[8] != '\0');
}

/* A JWKS is trusted input for every token decision: plain http would let anyone on the path
 * choose the keys, so only a local file or https. */
static bool cx_config_check_jwks(const char *v)
{
    if (cx_config_starts_with(v, "https://"))
        return v[8] != '\0';
    return strstr(v, "://") == NULL;
}

/* The claim that marks a service's own token. A claim every token carries would make every
 * user token look like a service token, so the registered claims are refused. */
static bool cx_config_check_client_claim(const char *v)
{
    static const char *const every_token[] = {"iss", "sub", "aud", "azp", "exp",
                                              "nbf", "iat", "jti", "typ", NULL};
    for (const char *p = v; *p != '\0'; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.' || c == ':'))
            return false;
    }
    for (size_t i = 0; every_token[i] != NULL; i++)
        if (strcmp(v, every_token[i]) == 0)
            return false;
    return v[0] != '\0';
}

/* SPIFFE trust domain: lowercase letters, digits, '.', '-', '_'. */
static bool cx_config_check_trust_domain(const char *v)
{
    for (const char *p = v; *p != '\0'; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_'))
            return false;
    }
    return v[0] != '\0';
}

/* One browser origin as a browser serializes it in the Origin header, so that an exact string
 * comparison is the whole match: http or https, a lower-case host name, IPv4 address or
 * bracketed IPv6 address, and a port only when it is not the scheme's default. */
static bool cx_config_check_origin(const char *v, size_t n)
{
    size_t i, hstart;
    if (n > 7 && strncmp(v, "http://", 7) == 0)
        hstart = 7;
    else if (n > 8 && strncmp(v, "https://", 8) == 0)
        hstart = 8;
    else
        return false;
    i = hstart;
    if (v[i] == '[') {
        for (i++; i < n && v[i] != ']'; i++)
            if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f') || v[i] == ':' ||
                  v[i] == '.'))
                return false;
        if (i >= n || i == hstart + 1)
            return false;
        i++;
    } else {
        for (; i < n && v[i] != ':'; i++)
            if (!((v[i] >= 'a' && v[i] <= 'z') || (v[i] >= '0' && v[i] <= '9') || v[i] == '.' ||
                  v[i] == '-'))
                return false;
        if (i == hstart)
            return false;
    }
    if (i == n)
        return true;
    if (v[i] != ':' || n - i - 1 == 0 || n - i - 1 > 5 ||
        !cx_config_all_digits(v + i + 1, n - i - 1))
        return false;
    unsigned long port = strtoul(v + i + 1, NULL, 10);
    bool default_port = (hstart == 7 && port == 80) || (hstart == 8 && port == 443);
    return port >= 1 && port <= 65535 && !default_port && v[i + 1] != '0';
}

/* CREDEX_KMS_ENDPOINT, CREDEX_STS_ENDPOINT: an origin (as above) and an optional final '/', since
 * both AWS protocols post to "/"; https, or plain http to a loopback host for emulators (refused
 * in production after the table is read). */
static bool cx_config_check_aws_endpoint(const char *v)
{
    static const char *const loopback[] = {"127.0.0.1", "localhost", "[::1]"};
    size_t n = strlen(v);
    if (n > 0 && v[n - 1] == '/')
        n--;
    if (!cx_config_check_origin(v, n))
        return false;
    if (strncmp(v, "http://", 7) != 0)
        return true;
    for (size_t i = 0; i < sizeof(loopback) / sizeof(loopback[0]); i++) {
        size_t l = strlen(loopback[i]);
        if (n - 7 >= l && strncmp(v + 7, loopback[i], l) == 0 && (n - 7 == l || v[7 + l] == ':'))
            return true;
    }
    return false;
}

/* CREDEX_EDGE_ALLOWED_ORIGINS: comma-separated origins (spaces around commas allowed), at most
 * CX_CONFIG_MAX_ORIGINS of them. */
static bool cx_config_check_origins(const char *v)
{
    size_t count = 0;
    const char *p = v;
    for (;;) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, ",");
        size_t m = n;
        while (m > 0 && p[m - 1] == ' ')
            m--;
        if (m == 0 || !cx_config_check_origin(p, m) || ++count > CX_CONFIG_MAX_ORIGINS)
            return false;
        if (p[n] == '\0')
            return true;
        p += n + 1;
    }
}

/* CREDEX_EDGE_UI_URL: an origin (as cx_config_check_origin reads it) followed by an optional
 * path of unreserved characters, '/' and '%', with no query or fragment, since the edge appends
 * a path to it. https, or http for localhost (not in production: checked with the others). */
static bool cx_config_check_ui_url(const char *v)
{
    size_t n = strlen(v), start = strncmp(v, "https://", 8) == 0 ? 8 : 7;
    if (n <= start)
        return false;
    size_t o = start + strcspn(v + start, "/");
    if (!cx_config_check_origin(v, o))
        return false;
    if (start == 7 && !(strncmp(v + 7, "localhost", 9) == 0 && (o == 16 || v[16] == ':')))
        return false;
    for (size_t i = o; i < n; i++) {
        char c = v[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_' || c == '~' || c == '/' || c == '%'))
            return false;
    }
    return true;
}

/* A comma list (spaces around commas allowed, empty items ignored, at least one item, at most
 * CX_HTTP_SSRF_LIST_MAX) whose every item passes item. Split and read by common/http itself, so
 * the configuration accepts exactly what oauth's provider client will. */
static bool cx_config_check_http_list(const char *v, bool (*item)(const char *))
{
    char **list = cx_http_list_split(v, CX_HTTP_SSRF_LIST_MAX, NULL);
    bool ok = list != NULL && list[0] != NULL;
    for (size_t i = 0; ok && list[i] != NULL; i++)
        ok = item(list[i]);
    cx_http_list_free(list);
    return ok;
}

static bool cx_config_allowed_host(const char *v)
{
    return cx_http_allow_host_check(v, NULL);
}

static bool cx_config_connect_to_entry(const char *v)
{
    cx_http_connect_to_t ct;
    return cx_http_connect_to_parse(v, &ct, NULL);
}

/* CREDEX_OAUTH_ALLOWED_HOSTS: host names, each exact or "*.suffix". */
static bool cx_config_check_allowed_hosts(const char *v)
{
    return cx_config_check_http_list(v, cx_config_allowed_host);
}

/* CREDEX_OAUTH_TEST_CONNECT_TO: host:port:addr:port2 with a loopback addr. */
static bool cx_config_check_connect_to(const char *v)
{
    return cx_config_check_http_list(v, cx_config_connect_to_entry);
}

/* ---- the variable table ---------------------------------------------------------------- */

typedef enum cx_config_kind {
    CX_CFG_BOOL,
    CX_CFG_UNSIGNED, /* unsigned field */
    CX_CFG_SIZE,     /* size_t field */
    CX_CFG_STR,      /* char[] field, optionally checked */
    CX_CFG_ENUM,     /* one of choices; stored by the variable's own setter */
} cx_config_kind_t;

typedef struct cx_config_var {
    const char *name;
    cx_config_kind_t kind;
    size_t offset;
    size_t size; /* of the char[] field, for CX_CFG_STR */
    const char *def_str;
    uint64_t min, max, def_num;
    bool (*check)(const char *value); /* CX_CFG_STR: extra validation of a set value */
    const char *expected;             /* CX_CFG_STR: what check accepts, for the message */
    const char *const *choices;       /* CX_CFG_ENUM */
    void (*set_enum)(cx_config_t *cfg, size_t index);
} cx_config_var_t;

static const char *const cx_config_backends[] = {"mongodb-envelope", NULL};
static const char *const cx_config_key_providers[] = {"local-cmk", "dev-local", "aws-kms", NULL};
/* Same order as cx_log_level_t. */
static const char *const cx_config_log_levels[] = {"debug", "info", "warn", "error", NULL};

static void cx_config_set_backend(cx_config_t *cfg, size_t i)
{
    snprintf(cfg->store_backend, sizeof(cfg->store_backend), "%s", cx_config_backends[i]);
}

static void cx_config_set_key_provider(cx_config_t *cfg, size_t i)
{
    /* dev-local is the requirements' other name for local-cmk (docs/REQUIREMENTS.md), not a
     * different provider. */
    cfg->key_provider = i == 2 ? CX_KEY_PROVIDER_AWS_KMS : CX_KEY_PROVIDER_LOCAL_CMK;
    /* ...but health reports the name the operator configured. */
    snprintf(cfg->key_provider_name, sizeof(cfg->key_provider_name), "%s",
             cx_config_key_providers[i]);
}

static const char *const cx_config_write_concerns[] = {"majority", "1", NULL};

static void cx_config_set_write_concern(cx_config_t *cfg, size_t i)
{
    cfg->mongo_write_majority = i == 0;
}

static void cx_config_set_log_level(cx_config_t *cfg, size_t i)
{
    cfg->log_level = (cx_log_level_t)i;
}

/* Same order as cx_jwt_service_rule_t. */
static const char *const cx_config_service_rules[] = {"client_claim", "sub_is_client", NULL};

static void cx_config_set_service_rule(cx_config_t *cfg, size_t i)
{
    cfg->jwt_service_rule = (cx_jwt_service_rule_t)i;
}

#define CX_BOOL(n, field, def)                                                                     \
    {                                                                                              \
        .name = n, .kind = CX_CFG_BOOL, .offset = offsetof(cx_config_t, field), .def_num = (def)   \
    }
#define CX_UNSIGNED(n, field, lo, hi, def)                                                         \
    {                                                                                              \
        .name = n, .kind = CX_CFG_UNSIGNED, .offset = offsetof(cx_config_t, field), .min = (lo),   \
        .max = (hi), .def_num = (def)                                                              \
    }
#define CX_SIZE(n, field, lo, hi, def)                                                             \
    {                                                                                              \
        .name = n, .kind = CX_CFG_SIZE, .offset = offsetof(cx_config_t, field), .min = (lo),       \
        .max = (hi), .def_num = (def)                                                              \
    }
#define CX_STR(n, field, def, chk, what)                                                           \
    {                                                                                              \
        .name = n, .kind = CX_CFG_STR, .offset = offsetof(cx_config_t, field),                     \
        .size = sizeof(((cx_config_t *)0)->field), .def_str = (def), .check = (chk),               \
        .expected = (what)                                                                         \
    }
#define CX_ENUM(n, list, setter, def)                                                              \
    {                                                                                              \
        .name = n, .kind = CX_CFG_ENUM, .choices = (list), .set_enum = (setter), .def_num = (def)  \
    }

#define CX_ADDR_EXPECTED "host:port with port 0..65535"
#define CX_AWS_ENDPOINT_EXPECTED                                                                   \
    "https://host[:port] (or http://127.0.0.1|localhost|[::1][:port] outside production), "        \
    "lower-case host, no path"

/* Keep in step with cx_config.h and docs/CONFIGURATION.md. */
static const cx_config_var_t cx_config_vars[] = {
    CX_BOOL("CAIPE_CREDENTIALS_ENABLED", credentials_enabled, false),
    CX_BOOL("CREDENTIAL_EXCHANGE_ENABLED", exchange_enabled, false),
    CX_BOOL("CREDENTIAL_BOOTSTRAP_OAUTH_CONNECTORS", bootstrap_oauth_connectors, false),
    CX_BOOL("USE_IMPERSONATION_TOKENS", use_impersonation_tokens, false),
    CX_ENUM("CREDENTIAL_STORE_BACKEND", cx_config_backends, cx_config_set_backend, 0),
    CX_ENUM("CREDENTIAL_KEY_PROVIDER", cx_config_key_providers, cx_config_set_key_provider, 0),
    CX_STR("CREDENTIAL_KMS_CMK_ID", kms_cmk_id, "alias/credex-local", NULL, NULL),
    CX_STR("CREDENTIAL_KMS_REGION", kms_region, "", NULL, NULL),
    CX_STR("CREDEX_KMS_ENDPOINT", kms_endpoint, "", cx_config_check_aws_endpoint,
           CX_AWS_ENDPOINT_EXPECTED),
    CX_STR("CREDEX_STS_ENDPOINT", sts_endpoint, "", cx_config_check_aws_endpoint,
           CX_AWS_ENDPOINT_EXPECTED),
    CX_STR("CREDEX_KMS_CA_FILE", kms_ca_file, "", NULL, NULL),
    CX_UNSIGNED("CREDEX_KMS_TIMEOUT_MS", kms_timeout_ms, 100, 60000, 3000),

    CX_BOOL("CREDEX_PRODUCTION", production, false),
    CX_ENUM("CREDEX_LOG_LEVEL", cx_config_log_levels, cx_config_set_log_level, CX_LOG_INFO),
    CX_STR("CREDEX_KEYWRAP_ADDR", addr[CX_SVC_KEYWRAP], "127.0.0.1:7101", cx_config_check_addr,
           CX_ADDR_EXPECTED),
    CX_STR("CREDEX_STORE_ADDR", addr[CX_SVC_STORE], "127.0.0.1:7102", cx_config_check_addr,
           CX_ADDR_EXPECTED),
    CX_STR("CREDEX_OAUTH_ADDR", addr[CX_SVC_OAUTH], "127.0.0.1:7103", cx_config_check_addr,
           CX_ADDR_EXPECTED),
    CX_STR("CREDEX_GATEWAY_ADDR", addr[CX_SVC_GATEWAY], "127.0.0.1:7104", cx_config_check_addr,
           CX_ADDR_EXPECTED),
    CX_STR("CREDEX_EDGE_ADDR", addr[CX_SVC_EDGE], "127.0.0.1:7105", cx_config_check_addr,
           CX_ADDR_EXPECTED),
    CX_STR("CREDEX_EDGE_HTTP_ADDR", edge_http_addr, "127.0.0.1:8080", cx_config_check_addr,
           CX_ADDR_EXPECTED),
    CX_STR("CREDEX_KEYWRAP_OPS_ADDR", ops_addr[CX_SVC_KEYWRAP], "127.0.0.1:9101",
           cx_config_check_addr_or_off, CX_ADDR_EXPECTED " or off"),
    CX_STR("CREDEX_STORE_OPS_ADDR", ops_addr[CX_SVC_STORE], "127.0.0.1:9102",
           cx_config_check_addr_or_off, CX_ADDR_EXPECTED " or off"),
    CX_STR("CREDEX_OAUTH_OPS_ADDR", ops_addr[CX_SVC_OAUTH], "127.0.0.1:9103",
           cx_config_check_addr_or_off, CX_ADDR_EXPECTED " or off"),
    CX_STR("CREDEX_GATEWAY_OPS_ADDR", ops_addr[CX_SVC_GATEWAY], "127.0.0.1:9104",
           cx_config_check_addr_or_off, CX_ADDR_EXPECTED " or off"),
    CX_STR("CREDEX_EDGE_OPS_ADDR", ops_addr[CX_SVC_EDGE], "127.0.0.1:9105",
           cx_config_check_addr_or_off, CX_ADDR_EXPECTED " or off"),
    CX_STR("CREDEX_TLS_CA", tls_ca, "", NULL, NULL),
    CX_STR("CREDEX_TLS_CERT", tls_cert, "", NULL, NULL),
    CX_STR("CREDEX_TLS_KEY", tls_key, "", NULL, NULL),
    CX_STR("CREDEX_TRUST_DOMAIN", trust_domain, "credex.local", cx_config_check_trust_domain,
           "a SPIFFE trust domain of [a-z0-9._-]"),
    CX_UNSIGNED("CREDEX_RPC_THREADS", rpc_threads, 1, 256, 8),
    CX_UNSIGNED("CREDEX_RPC_THREADS_MAX", rpc_threads_max, 1, 1024, 128),
    CX_SIZE("CREDEX_RPC_MAX_MESSAGE_BYTES", rpc_max_message_bytes, 1024, 67108864, 4194304),
    CX_SIZE("CREDEX_RPC_MAX_METADATA_BYTES", rpc_max_metadata_bytes, 1024, 1048576, 16384),
    CX_UNSIGNED("CREDEX_RPC_MAX_DEADLINE_MS", rpc_max_deadline_ms, 100, 600000, 30000),
    CX_UNSIGNED("CREDEX_RPC_DEADLINE_MS", rpc_default_deadline_ms, 10, 600000, 5000),
    CX_UNSIGNED("CREDEX_SHUTDOWN_GRACE_MS", shutdown_grace_ms, 0, 600000, 5000),
    CX_STR("CREDEX_MONGO_URI", mongo_uri, "mongodb://127.0.0.1:27017", cx_config_check_mongo_uri,
           "a mongodb:// or mongodb+srv:// URI"),
    CX_STR("CREDEX_MONGO_DB", mongo_db, "credex", NULL, NULL),
    CX_STR("CREDEX_OPENFGA_URL", openfga_url, "http://127.0.0.1:8081", cx_config_check_http_url,
           "an http:// or https:// URL"),
    CX_STR("CREDEX_OPENFGA_STORE_ID", openfga_store_id, "", NULL, NULL),
    CX_STR("CREDEX_OPENFGA_MODEL_ID", openfga_model_id, "", NULL, NULL),
    CX_STR("CREDEX_JWKS", jwks, "", cx_config_check_jwks, "a file path or an https:// URL"),
    CX_STR("CREDEX_JWKS_CA_FILE", jwks_ca_file, "", NULL, NULL),
    CX_STR("CREDEX_JWT_ISSUER", jwt_issuer, "", NULL, NULL),
    CX_STR("CREDEX_JWT_AUDIENCE", jwt_audience, "credex", NULL, NULL),
    CX_ENUM("CREDEX_JWT_SERVICE_RULE", cx_config_service_rules, cx_config_set_service_rule, 0),
    CX_STR("CREDEX_JWT_CLIENT_CLAIM", jwt_client_claim, "client_id", cx_config_check_client_claim,
           "a claim name of [A-Za-z0-9_.:-], not iss/sub/aud/azp/exp/nbf/iat/jti/typ"),
    CX_STR("CREDEX_LOCAL_CMK_KEY_FILE", local_cmk_key_file, "", NULL, NULL),
    CX_STR("CREDEX_LOCAL_CMK_RETIRED_KEY_FILE", local_cmk_retired_key_file, "", NULL, NULL),
    CX_UNSIGNED("CREDEX_MONGO_TIMEOUT_MS", mongo_timeout_ms, 100, 60000, 3000),
    CX_ENUM("CREDEX_MONGO_WRITE_CONCERN", cx_config_write_concerns, cx_config_set_write_concern, 0),
    CX_UNSIGNED("CREDEX_MONGO_POOL_MAX", mongo_pool_max, 1, 1024, 32),
    CX_UNSIGNED("CREDEX_DEK_CACHE_TTL_MS", dek_cache_ttl_ms, 0, 3600000, 60000),
    CX_UNSIGNED("CREDEX_DEK_CACHE_MAX_USES", dek_cache_max_uses, 1, 1000000, 1000),
    CX_UNSIGNED("CREDEX_DEK_CACHE_MAX_ENTRIES", dek_cache_max_entries, 0, 1000000, 4096),
    CX_UNSIGNED("CREDEX_JWT_LEEWAY_S", jwt_leeway_s, 0, 300, 30),
    CX_UNSIGNED("CREDEX_JWKS_CACHE_S", jwks_cache_s, 10, 86400, 300),
    CX_UNSIGNED("CREDEX_JWKS_TIMEOUT_MS", jwks_timeout_ms, 100, 60000, 3000),
    CX_UNSIGNED("CREDEX_OPENFGA_TIMEOUT_MS", openfga_timeout_ms, 50, 60000, 2000),
    CX_UNSIGNED("CREDEX_OPENFGA_CACHE_TTL_MS", openfga_cache_ttl_ms, 0, 600000, 10000),
    CX_UNSIGNED("CREDEX_OPENFGA_WATCH_MS", openfga_watch_ms, 20, 10000, 100),
    CX_UNSIGNED("CREDEX_JWT_CACHE_MAX_ENTRIES", jwt_cache_max_entries, 0, 1000000, 4096),
    CX_UNSIGNED("CREDEX_PAYLOAD_CACHE_MAX_ENTRIES", payload_cache_max_entries, 0, 1000000, 4096),
    CX_UNSIGNED("CREDEX_PAYLOAD_CACHE_TTL_MS", payload_cache_ttl_ms, 0, 3600000, 300000),
    CX_UNSIGNED("CREDEX_AUDIT_BATCH_MAX", audit_batch_max, 1, 1000, 64),
    CX_UNSIGNED("CREDEX_STORE_METADATA_CACHE_ENTRIES", meta_cache_max_entries, 0, 1000000, 4096),
    CX_UNSIGNED("CREDEX_STORE_METADATA_CACHE_BOUND_MS", meta_cache_bound_ms, 20, 60000, 300),
    CX_UNSIGNED("CREDEX_STORE_METADATA_CACHE_POLL_MS", meta_cache_poll_ms, 10, 30000, 100),
    CX_UNSIGNED("CREDEX_EDGE_HTTP_THREADS", edge_http_threads, 1, 256, 4),
    CX_SIZE("CREDEX_EDGE_HTTP_MAX_BODY_BYTES", edge_max_body_bytes, 1024, 4194304, 262144),
    CX_SIZE("CREDEX_EDGE_HTTP_MAX_HEADER_BYTES", edge_max_header_bytes, 1024, 65536, 16384),
    CX_UNSIGNED("CREDEX_EDGE_HTTP_MAX_CONNECTIONS", edge_max_connections, 1, 65536, 1024),
    CX_UNSIGNED("CREDEX_EDGE_HTTP_MAX_CONNECTIONS_PER_IP", edge_max_connections_per_ip, 0, 65536,
                256),
    CX_UNSIGNED("CREDEX_EDGE_HTTP_IDLE_TIMEOUT_S", edge_idle_timeout_s, 1, 3600, 30),
    CX_UNSIGNED("CREDEX_EDGE_HTTP_REQUEST_TIMEOUT_MS", edge_request_timeout_ms, 100, 600000, 10000),
    CX_STR("CREDEX_EDGE_HTTP_TLS_CERT", edge_tls_cert, "", NULL, NULL),
    CX_STR("CREDEX_EDGE_HTTP_TLS_KEY", edge_tls_key, "", NULL, NULL),
    CX_STR("CREDEX_EDGE_ALLOWED_ORIGINS", edge_allowed_origins, "", cx_config_check_origins,
           "comma-separated origins scheme://host[:port] (http or https, lower case, no path, no "
           "default port), at most 32"),
    CX_BOOL("CREDEX_EDGE_ALLOW_SAME_SITE", edge_allow_same_site, false),
    CX_STR("CREDEX_EDGE_UI_URL", edge_ui_url, "", cx_config_check_ui_url,
           "https://host[:port][/path] (or http://localhost[:port][/path] outside production), "
           "lower-case host, no query or fragment"),
    CX_STR("CREDEX_OAUTH_CA_FILE", oauth_ca_file, "", NULL, NULL),
    CX_STR("CREDEX_OAUTH_ALLOWED_HOSTS", oauth_allowed_hosts, "", cx_config_check_allowed_hosts,
           "comma-separated host names (letters, digits, '-', '.'), each exact or *.suffix, at "
           "most 64"),
    CX_STR("CREDEX_OAUTH_TEST_CONNECT_TO", oauth_test_connect_to, "", cx_config_check_connect_to,
           "comma-separated host:port:addr:port2 entries (host a DNS name, addr 127.x.y.z or "
           "[::1], ports 1..65535), at most 64"),
    CX_UNSIGNED("CREDEX_OAUTH_HTTP_TIMEOUT_MS", oauth_http_timeout_ms, 100, 60000, 10000),
    CX_SIZE("CREDEX_OAUTH_HTTP_MAX_RESPONSE_BYTES", oauth_http_max_response_bytes, 1024, 16777216,
            1048576),
    CX_UNSIGNED("CREDEX_OAUTH_REFRESH_LEASE_MS", oauth_refresh_lease_ms, 1000, 600000, 30000),
    CX_UNSIGNED("CREDEX_OAUTH_TEST_REFRESH_PAUSE_MS", oauth_test_refresh_pause_ms, 0, 60000, 0),
};

static bool cx_config_load_var(cx_config_t *cfg, const cx_config_var_t *var, const char *value,
                               cx_error_t *err)
{
    char *field = (char *)cfg + var->offset;
    uint64_t num = 0;
    size_t index = 0;
    bool b = false;

    switch (var->kind) {
    case CX_CFG_BOOL:
        if (!cx_config_parse_bool(var->name, value, var->def_num != 0, &b, err))
            return false;
        memcpy(field, &b, sizeof(b));
        return true;
    case CX_CFG_UNSIGNED: {
        unsigned u;
        if (!cx_config_parse_uint(var->name, value, var->min, var->max, var->def_num, &num, err))
            return false;
        u = (unsigned)num; /* max fits: every range in the table is below UINT_MAX */
        memcpy(field, &u, sizeof(u));
        return true;
    }
    case CX_CFG_SIZE: {
        size_t z;
        if (!cx_config_parse_uint(var->name, value, var->min, var->max, var->def_num, &num, err))
            return false;
        z = (size_t)num;
        memcpy(field, &z, sizeof(z));
        return true;
    }
    case CX_CFG_STR:
        if (value != NULL && value[0] != '\0' && var->check != NULL && !var->check(value))
            return cx_config_fail(err, var->name, var->expected, value);
        return cx_config_parse_str(var->name, value, var->def_str, field, var->size, err);
    case CX_CFG_ENUM:
        if (!cx_config_parse_enum(var->name, value, var->choices, (size_t)var->def_num, &index,
                                  err))
            return false;
        var->set_enum(cfg, index);
        return true;
    }
    return cx_error_set(err, CX_ERR_INTERNAL, "%s: unknown variable kind", var->name);
}

static const char *cx_config_getenv(void *ctx, const char *name)
{
    (void)ctx;
    return getenv(name);
}

bool cx_config_load(cx_config_t **out, cx_config_getenv_fn fn, void *ctx, cx_error_t *err)
{
    cx_config_t *cfg;
    bool ok = false;

    if (out == NULL)
        return cx_error_set(err, CX_ERR_INTERNAL, "cx_config_load: no output");
    if (fn == NULL)
        fn = cx_config_getenv;
    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        return cx_error_set(err, CX_ERR_RESOURCE_EXHAUSTED, "cx_config_load: out of memory");

    for (size_t i = 0; i < sizeof(cx_config_vars) / sizeof(cx_config_vars[0]); i++) {
        if (!cx_config_load_var(cfg, &cx_config_vars[i], fn(ctx, cx_config_vars[i].name), err))
            goto out;
    }
    /* The cap applies to every call, so a default above it could never be honoured. */
    if (cfg->rpc_default_deadline_ms > cfg->rpc_max_deadline_ms) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                     "CREDEX_RPC_DEADLINE_MS: expected at most CREDEX_RPC_MAX_DEADLINE_MS (%u), "
                     "got %u",
                     cfg->rpc_max_deadline_ms, cfg->rpc_default_deadline_ms);
        goto out;
    }
    /* An entry is confirmed once per poll at best: a bound at or below it would expire every
     * entry before the watcher could confirm it (and the cache would only cost reads). */
    if (cfg->meta_cache_poll_ms >= cfg->meta_cache_bound_ms) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                     "CREDEX_STORE_METADATA_CACHE_POLL_MS: expected below "
                     "CREDEX_STORE_METADATA_CACHE_BOUND_MS (%u), got %u",
                     cfg->meta_cache_bound_ms, cfg->meta_cache_poll_ms);
        goto out;
    }
    /* The override sends provider calls to loopback services by design: tests and development
     * only, never a production deployment. */
    if (cfg->production && cfg->oauth_test_connect_to[0] != '\0') {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                     "CREDEX_OAUTH_TEST_CONNECT_TO: not allowed with CREDEX_PRODUCTION=true (tests "
                     "and development only)");
        goto out;
    }
    /* The pause stalls a refresh on purpose (the fencing test): tests only. */
    if (cfg->production && cfg->oauth_test_refresh_pause_ms != 0) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                     "CREDEX_OAUTH_TEST_REFRESH_PAUSE_MS: not allowed with CREDEX_PRODUCTION=true "
                     "(tests only)");
        goto out;
    }
    /* A holder whose provider call may still be running when its lease ends lets a second
     * refresh start: with rotating refresh tokens the provider then sees the old token reused.
     * The store version check keeps the token set right anyway; the lease keeps it rare. */
    if (cfg->oauth_refresh_lease_ms <= cfg->oauth_http_timeout_ms) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                     "CREDEX_OAUTH_REFRESH_LEASE_MS: expected above CREDEX_OAUTH_HTTP_TIMEOUT_MS "
                     "(%u), got %u",
                     cfg->oauth_http_timeout_ms, cfg->oauth_refresh_lease_ms);
        goto out;
    }
    /* Key material and AWS credentials cross these: plain http only to a local emulator. */
    if (cfg->production && (strncmp(cfg->kms_endpoint, "http://", 7) == 0 ||
                            strncmp(cfg->sts_endpoint, "http://", 7) == 0)) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                     "%s: expected an https URL with CREDEX_PRODUCTION=true",
                     strncmp(cfg->kms_endpoint, "http://", 7) == 0 ? "CREDEX_KMS_ENDPOINT"
                                                                   : "CREDEX_STS_ENDPOINT");
        goto out;
    }
    /* The browser lands there after consent: plain http only on a developer's machine. */
    if (cfg->production && strncmp(cfg->edge_ui_url, "http://", 7) == 0) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                     "CREDEX_EDGE_UI_URL: expected an https URL with CREDEX_PRODUCTION=true");
        goto out;
    }
    /* A certificate without its key (or the reverse) would serve plain HTTP by mistake. */
    if ((cfg->edge_tls_cert[0] == '\0') != (cfg->edge_tls_key[0] == '\0')) {
        cx_error_set(
            err, CX_ERR_INVALID_ARGUMENT, "%s: expected together with %s (both or neither)",
            cfg->edge_tls_cert[0] ? "CREDEX_EDGE_HTTP_TLS_CERT" : "CREDEX_EDGE_HTTP_TLS_KEY",
            cfg->edge_tls_cert[0] ? "CREDEX_EDGE_HTTP_TLS_KEY" : "CREDEX_EDGE_HTTP_TLS_CERT");
        goto out;
    }
    *out = cfg;
    cfg = NULL;
    ok = true;
out:
    free(cfg);
    return ok;
}

void cx_config_free(cx_config_t *cfg)
{
    free(cfg);
}
