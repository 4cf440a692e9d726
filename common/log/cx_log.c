/*
 * cx_log: JSON-lines logger with structural redaction.
 *
 * Lines are built by hand in a stack buffer and written with one write(2): no printf-family
 * function ever sees a value, so a stray '%' or a huge value cannot change the output shape,
 * and a line of at most CX_LOG_LINE_MAX (== PIPE_BUF on Linux) bytes is atomic on a pipe.
 */
#include "common/log/cx_log.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CX_LOG_SERVICE_MAX 64
#define CX_LOG_REDACTED    "[redacted]"
#define CX_LOG_TRUNCATED   "..."
/* Room kept back while fields are added so that `,"dropped_fields":N}` + "\n" always fits. */
#define CX_LOG_TAIL_RESERVE 48

/* Redaction thresholds; see cx_log_run_is_sensitive for the reasoning. */
#define CX_LOG_RUN_MIN          32 /* shorter runs are ids, words, numbers */
#define CX_LOG_RUN_MIN_DISTINCT 12 /* fewer distinct characters: filler or a word list */
#define CX_LOG_HEX_ID_MAX       64 /* lowercase hex up to a SHA-256 digest stays visible */

/* The logger state: the one mutable global of this module (docs/STYLE.md rule 7). The mutex makes
 * a late cx_log_init harmless for concurrent emitters; cx_log_init is still documented as
 * start-up only. */
static struct {
    pthread_mutex_t lock;
    char service[CX_LOG_SERVICE_MAX];
    cx_log_level_t min_level;
    int fd;
} cx_log_state = {PTHREAD_MUTEX_INITIALIZER, "credex", CX_LOG_INFO, 2};

static const char *const cx_log_level_names[] = {"debug", "info", "warn", "error"};

/* ---- line buffer ----------------------------------------------------------------------- */

typedef struct cx_log_buf {
    char *p;
    size_t cap; /* bytes that may be used, the terminating NUL not included */
    size_t len;
    bool overflow; /* sticky: once something did not fit, nothing more is written */
} cx_log_buf_t;

static void cx_log_put_mem(cx_log_buf_t *b, const char *s, size_t n)
{
    if (b->overflow || n > b->cap - b->len) {
        b->overflow = true;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void cx_log_put_str(cx_log_buf_t *b, const char *s)
{
    cx_log_put_mem(b, s, strlen(s));
}

static void cx_log_put_char(cx_log_buf_t *b, char c)
{
    cx_log_put_mem(b, &c, 1);
}

/* Decimal, zero-padded to at least width digits. */
static void cx_log_put_uint(cx_log_buf_t *b, uint64_t v, size_t width)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[sizeof(tmp) - 1 - n] = (char)('0' + v % 10);
        v /= 10;
        n++;
    } while (v != 0 && n < sizeof(tmp));
    while (n < width && n < sizeof(tmp)) {
        tmp[sizeof(tmp) - 1 - n] = '0';
        n++;
    }
    cx_log_put_mem(b, tmp + sizeof(tmp) - n, n);
}

static void cx_log_put_int(cx_log_buf_t *b, int64_t v)
{
    if (v < 0) {
        cx_log_put_char(b, '-');
        /* Negate in unsigned arithmetic so that INT64_MIN does not overflow. */
        cx_log_put_uint(b, (uint64_t)0 - (uint64_t)v, 1);
    } else {
        cx_log_put_uint(b, (uint64_t)v, 1);
    }
}

/* ---- UTF-8 and JSON escaping ----------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlongs, no surrogates,
 * nothing above U+10FFFF), or 0 if the byte at s does not start one. avail >= 1. */
static size_t cx_log_utf8_len(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    unsigned char lo = 0x80, hi = 0xBF;
    size_t n;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (avail < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++) {
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    }
    return n;
}

/* Write s as the inside of a JSON string (no quotes), consuming at most max_in bytes of it.
 * Control characters are escaped, each byte that is not part of well-formed UTF-8 becomes
 * U+FFFD, and a cut never falls inside a character. A cut value ends with CX_LOG_TRUNCATED. */
static void cx_log_put_json_chars(cx_log_buf_t *b, const char *str, size_t max_in)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    size_t n = strlen(str);
    size_t i = 0;
    bool truncated = false;

    while (i < n) {
        unsigned char c = s[i];
        size_t len = cx_log_utf8_len(s + i, n - i);
        size_t take = len == 0 ? 1 : len;

        if (i >= max_in || take > max_in - i) {
            truncated = true;
            break;
        }
        if (len == 0) {
            cx_log_put_str(b, "\\ufffd");
        } else if (c == '"' || c == '\\') {
            cx_log_put_char(b, '\\');
            cx_log_put_char(b, (char)c);
        } else if (c == '\n') {
            cx_log_put_str(b, "\\n");
        } else if (c == '\r') {
            cx_log_put_str(b, "\\r");
        } else if (c == '\t') {
            cx_log_put_str(b, "\\t");
        } else if (c < 0x20 || c == 0x7F) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xF]};
            cx_log_put_mem(b, esc, sizeof(esc));
        } else {
            cx_log_put_mem(b, (const char *)s + i, len);
        }
        i += take;
    }
    if (truncated)
        cx_log_put_str(b, CX_LOG_TRUNCATED);
}

static void cx_log_put_json_string(cx_log_buf_t *b, const char *str, size_t max_in)
{
    cx_log_put_char(b, '"');
    cx_log_put_json_chars(b, str, max_in);
    cx_log_put_char(b, '"');
}

/* ---- redaction ------------------------------------------------------------------------- */

static bool cx_log_is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool cx_log_is_lower_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static bool cx_log_is_hex(unsigned char c)
{
    return cx_log_is_lower_hex(c) || (c >= 'A' && c <= 'F');
}

/* base64url alphabet: the body of JWTs and of most vendor tokens. */
static bool cx_log_is_b64url(unsigned char c)
{
    return cx_log_is_alnum(c) || c == '-' || c == '_';
}

/* Union of the base64, base64url and hex alphabets: what encoded key material is made of. */
static bool cx_log_is_run_char(unsigned char c)
{
    return cx_log_is_b64url(c) || c == '+' || c == '/' || c == '=';
}

/* What may follow "Bearer ": RFC 6750 b64token. */
static bool cx_log_is_b64token(unsigned char c)
{
    return cx_log_is_b64url(c) || c == '.' || c == '~' || c == '+' || c == '/' || c == '=';
}

static size_t cx_log_span(const unsigned char *s, size_t n, bool (*ok)(unsigned char))
{
    size_t i = 0;
    while (i < n && ok(s[i]))
        i++;
    return i;
}

/* 0 = not alphanumeric, else one of three classes; used to count class changes. */
static int cx_log_char_class(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return 1;
    if (c >= 'a' && c <= 'z')
        return 2;
    if (c >= '0' && c <= '9')
        return 3;
    return 0;
}

/* "Bearer <token>", any case: the Authorization header value pasted into a message. */
static bool cx_log_has_bearer(const unsigned char *s, size_t n)
{
    static const char word[] = "bearer";
    size_t i;

    if (n < sizeof(word) + 1)
        return false;
    for (i = 0; i < sizeof(word) - 1; i++) {
        unsigned char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        if (c != (unsigned char)word[i])
            return false;
    }
    if (s[i] != ' ' && s[i] != '\t')
        return false;
    while (i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    return i < n && cx_log_is_b64token(s[i]);
}

/* Vendor token prefixes and the minimum tail that makes them a token rather than a mention
 * of the prefix. The prefix must start a word (checked by the caller). */
static const struct {
    const char *prefix;
    size_t min_tail;
} cx_log_token_prefixes[] = {
    {"ghp_", 8},        {"gho_", 8},   {"ghu_", 8},  {"ghs_", 8},  {"ghr_", 8},
    {"github_pat_", 8}, {"glpat-", 8}, {"xoxa-", 8}, {"xoxb-", 8}, {"xoxp-", 8},
    {"xoxr-", 8},       {"xoxs-", 8},  {"sk-", 20},
};

static bool cx_log_is_upper_digit(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool cx_log_has_token_prefix(const unsigned char *s, size_t n)
{
    for (size_t k = 0; k < sizeof(cx_log_token_prefixes) / sizeof(cx_log_token_prefixes[0]); k++) {
        const char *p = cx_log_token_prefixes[k].prefix;
        size_t plen = strlen(p);
        if (n > plen && memcmp(s, p, plen) == 0 &&
            cx_log_span(s + plen, n - plen, cx_log_is_b64url) >= cx_log_token_prefixes[k].min_tail)
            return true;
    }
    /* AWS access key ids: long-term (AKIA) and temporary (ASIA). */
    if (n >= 20 && (memcmp(s, "AKIA", 4) == 0 || memcmp(s, "ASIA", 4) == 0) &&
        cx_log_span(s + 4, 16, cx_log_is_upper_digit) == 16)
        return true;
    return false;
}

/* A JWT (or JWS/JWE) starts with the base64url of '{"': "eyJ". Two dot-separated base64url
 * segments are enough; the signature may have been cut off and is not needed to misuse it. */
static bool cx_log_has_jwt(const unsigned char *s, size_t n)
{
    size_t a, b;

    if (n < 3 || memcmp(s, "eyJ", 3) != 0)
        return false;
    a = 3 + cx_log_span(s + 3, n - 3, cx_log_is_b64url);
    if (a < 3 + 8 || a >= n || s[a] != '.')
        return false;
    b = cx_log_span(s + a + 1, n - a - 1, cx_log_is_b64url);
    return b >= 8;
}

static bool cx_log_is_uuid(const unsigned char *s, size_t n)
{
    if (n != 36)
        return false;
    for (size_t i = 0; i < n; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !cx_log_is_hex(s[i]))
            return false;
    }
    return true;
}

/* credex resource ids: [a-z]{2,8}_[A-Za-z0-9]{16,40}, e.g. "sec_01J8Z...". */
static bool cx_log_is_prefixed_id(const unsigned char *s, size_t n)
{
    size_t p = 0;
    while (p < n && s[p] >= 'a' && s[p] <= 'z')
        p++;
    if (p < 2 || p > 8 || p >= n || s[p] != '_')
        return false;
    size_t tail = cx_log_span(s + p + 1, n - p - 1, cx_log_is_alnum);
    return p + 1 + tail == n && tail >= 16 && tail <= 40;
}

/*
 * A run is a maximal stretch of base64/base64url/hex characters of at least CX_LOG_RUN_MIN.
 *
 * Kept (never redacted), because operators need them to follow a request:
 *  - lowercase hex up to CX_LOG_HEX_ID_MAX characters (correlation ids are 32, digests 64);
 *  - UUIDs (8-4-4-4-12 hex, any case);
 *  - credex ids, [a-z]{2,8}_[A-Za-z0-9]{16,40} (the vendor prefixes above are checked first,
 *    so "ghp_<36>" is still redacted although it has this shape).
 *
 * Otherwise the run is redacted when it has at least CX_LOG_RUN_MIN_DISTINCT distinct
 * characters and looks random rather than like words. Randomness is measured by how often
 * adjacent alphanumerics change class (upper/lower/digit): about 60% of the pairs in random
 * base64, 40% in random single-case base36, 45% in hex, but rarely above 30% in CamelCase
 * names and near 0% in snake_case names with a version digit. So a run is redacted when
 *  - it mixes letters and digits with class changes on >= 10% of its length (base64, base62,
 *    base36, base32, uppercase or long hex), or
 *  - it mixes upper and lower case with class changes on >= 40% of its length (random
 *    letters that happen to contain no digit; CamelCase stays below that).
 * Measured on random strings of 32 characters, this catches over 99% of base64/base62 and
 * about 97% of base32 keys; slashes and dots in paths and URLs break runs, so those survive.
 */
static bool cx_log_run_is_sensitive(const unsigned char *s, size_t n)
{
    bool seen[256] = {false};
    size_t distinct = 0, changes = 0;
    bool upper = false, lower = false, digit = false, lower_hex = true;

    for (size_t i = 0; i < n; i++) {
        int cls = cx_log_char_class(s[i]);
        if (!seen[s[i]]) {
            seen[s[i]] = true;
            distinct++;
        }
        upper = upper || cls == 1;
        lower = lower || cls == 2;
        digit = digit || cls == 3;
        lower_hex = lower_hex && cx_log_is_lower_hex(s[i]);
        if (i > 0 && cls != 0) {
            int prev = cx_log_char_class(s[i - 1]);
            if (prev != 0 && prev != cls)
                changes++;
        }
    }
    if (lower_hex && n <= CX_LOG_HEX_ID_MAX)
        return false;
    if (cx_log_is_uuid(s, n) || cx_log_is_prefixed_id(s, n))
        return false;
    if (distinct < CX_LOG_RUN_MIN_DISTINCT)
        return false;
    if ((upper || lower) && digit && changes * 10 >= n)
        return true;
    return upper && lower && changes * 5 >= n * 2;
}

bool cx_log_value_is_sensitive(const char *value)
{
    const unsigned char *s = (const unsigned char *)value;
    size_t n;

    if (value == NULL)
        return false;
    /* Any PEM block: private keys, but certificates do not belong in logs either. */
    if (strstr(value, "-----BEGIN") != NULL)
        return true;
    n = strlen(value);
    for (size_t i = 0; i < n; i++) {
        bool word_start = i == 0 || !cx_log_is_alnum(s[i - 1]);
        if (word_start &&
            (cx_log_has_bearer(s + i, n - i) || cx_log_has_token_prefix(s + i, n - i)))
            return true;
        if (s[i] == 'e' && cx_log_has_jwt(s + i, n - i))
            return true;
    }
    for (size_t i = 0; i < n;) {
        size_t run = cx_log_span(s + i, n - i, cx_log_is_run_char);
        if (run >= CX_LOG_RUN_MIN && cx_log_run_is_sensitive(s + i, run))
            return true;
        i += run == 0 ? 1 : run;
    }
    return false;
}

/* ---- line assembly --------------------------------------------------------------------- */

static void cx_log_put_value(cx_log_buf_t *b, const char *value)
{
    if (value == NULL)
        cx_log_put_str(b, "null");
    else if (cx_log_value_is_sensitive(value))
        cx_log_put_str(b, "\"" CX_LOG_REDACTED "\"");
    else
        cx_log_put_json_string(b, value, CX_LOG_VALUE_MAX);
}

/* The keys cx_log writes itself (cx_log.h): a field may not take them. */
static const char *const cx_log_reserved[] = {
    "ts", "level", "service", "event", "correlation_id", "trace_id", "dropped_fields"};

/* The trace id of the call this thread works on (cx_log_set_trace): per thread, because a
 * worker thread serves one call at a time and every line it writes meanwhile belongs to it. */
static _Thread_local char cx_log_trace[CX_LOG_TRACE_ID_LEN + 1];

static const char *cx_log_key(const cx_log_field_t *f)
{
    return f->key != NULL ? f->key : "";
}

/* The prefix a field's key is written with: CX_LOG_RESERVED_PREFIX for a reserved key. */
static const char *cx_log_key_prefix(const char *key)
{
    for (size_t i = 0; i < sizeof(cx_log_reserved) / sizeof(cx_log_reserved[0]); i++)
        if (strcmp(key, cx_log_reserved[i]) == 0)
            return CX_LOG_RESERVED_PREFIX;
    return "";
}

/* True when p1 + k1 and p2 + k2 are the same string. */
static bool cx_log_same_key(const char *p1, const char *k1, const char *p2, const char *k2)
{
    size_t lp1 = strlen(p1), lp2 = strlen(p2), n = lp1 + strlen(k1);
    if (n != lp2 + strlen(k2))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c1 = i < lp1 ? p1[i] : k1[i - lp1];
        char c2 = i < lp2 ? p2[i] : k2[i - lp2];
        if (c1 != c2)
            return false;
    }
    return true;
}

/* True when an earlier field of the line is written under the same key as fields[i]. */
static bool cx_log_key_taken(const cx_log_field_t *fields, size_t i)
{
    const char *k = cx_log_key(&fields[i]), *p = cx_log_key_prefix(k);
    for (size_t j = 0; j < i; j++) {
        const char *kj = cx_log_key(&fields[j]);
        if (cx_log_same_key(cx_log_key_prefix(kj), kj, p, k))
            return true;
    }
    return false;
}

static void cx_log_put_field(cx_log_buf_t *b, const cx_log_field_t *f)
{
    const char *key = cx_log_key(f);
    cx_log_put_str(b, ",\"");
    cx_log_put_str(b, cx_log_key_prefix(key));
    cx_log_put_json_chars(b, key, CX_LOG_VALUE_MAX);
    cx_log_put_char(b, '"');
    cx_log_put_char(b, ':');
    switch (f->type) {
    case CX_LOG_T_STR:
        cx_log_put_value(b, f->v.s);
        break;
    case CX_LOG_T_INT:
        cx_log_put_int(b, f->v.i);
        break;
    case CX_LOG_T_BOOL:
        cx_log_put_str(b, f->v.b ? "true" : "false");
        break;
    default:
        cx_log_put_str(b, "null");
        break;
    }
}

/* RFC 3339 UTC with milliseconds: 2026-11-22T10:00:00.123Z */
static void cx_log_put_timestamp(cx_log_buf_t *b)
{
    struct timespec ts;
    struct tm tm;

    if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || gmtime_r(&ts.tv_sec, &tm) == NULL) {
        memset(&tm, 0, sizeof(tm));
        tm.tm_year = 70;
        tm.tm_mday = 1;
        ts.tv_nsec = 0;
    }
    cx_log_put_uint(b, (uint64_t)(tm.tm_year + 1900), 4);
    cx_log_put_char(b, '-');
    cx_log_put_uint(b, (uint64_t)(tm.tm_mon + 1), 2);
    cx_log_put_char(b, '-');
    cx_log_put_uint(b, (uint64_t)tm.tm_mday, 2);
    cx_log_put_char(b, 'T');
    cx_log_put_uint(b, (uint64_t)tm.tm_hour, 2);
    cx_log_put_char(b, ':');
    cx_log_put_uint(b, (uint64_t)tm.tm_min, 2);
    cx_log_put_char(b, ':');
    cx_log_put_uint(b, (uint64_t)tm.tm_sec, 2);
    cx_log_put_char(b, '.');
    cx_log_put_uint(b, (uint64_t)(ts.tv_nsec / 1000000), 3);
    cx_log_put_char(b, 'Z');
}

static const char *cx_log_level_name(cx_log_level_t level)
{
    if ((unsigned)level >= sizeof(cx_log_level_names) / sizeof(cx_log_level_names[0]))
        return "error";
    return cx_log_level_names[level];
}

static size_t cx_log_build(char *buf, size_t bufsz, const char *service, cx_log_level_t level,
                           const char *correlation_id, const char *event,
                           const cx_log_field_t *fields, size_t nfields)
{
    cx_log_buf_t b;
    size_t cap, dropped = 0, skipped = 0;

    if (buf == NULL || bufsz == 0)
        return 0;
    buf[0] = '\0';
    cap = bufsz - 1 < CX_LOG_LINE_MAX ? bufsz - 1 : CX_LOG_LINE_MAX;
    if (cap <= CX_LOG_TAIL_RESERVE)
        return 0;
    b = (cx_log_buf_t){.p = buf, .cap = cap - CX_LOG_TAIL_RESERVE, .len = 0, .overflow = false};

    cx_log_put_str(&b, "{\"ts\":\"");
    cx_log_put_timestamp(&b);
    cx_log_put_str(&b, "\",\"level\":\"");
    cx_log_put_str(&b, cx_log_level_name(level));
    cx_log_put_str(&b, "\",\"service\":");
    cx_log_put_json_string(&b, service, CX_LOG_SERVICE_MAX);
    cx_log_put_str(&b, ",\"event\":");
    cx_log_put_json_string(&b, event != NULL ? event : "", CX_LOG_VALUE_MAX);
    if (correlation_id != NULL) {
        cx_log_put_str(&b, ",\"correlation_id\":");
        cx_log_put_value(&b, correlation_id);
    }
    if (cx_log_trace[0] != '\0') { /* 32 lower-case hex digits, checked when set */
        cx_log_put_str(&b, ",\"trace_id\":\"");
        cx_log_put_str(&b, cx_log_trace);
        cx_log_put_str(&b, "\"");
    }
    if (b.overflow) {
        buf[0] = '\0';
        return 0;
    }

    if (fields == NULL)
        nfields = 0;
    for (size_t i = 0; i < nfields; i++) {
        size_t mark = b.len;
        if (cx_log_key_taken(fields, i)) {
            skipped++; /* never a duplicate key: the first field of a name wins */
            continue;
        }
        cx_log_put_field(&b, &fields[i]);
        if (b.overflow) {
            /* Never split a field: drop it and everything after it, and say how many. */
            b.len = mark;
            b.overflow = false;
            dropped = nfields - i;
            break;
        }
    }

    b.cap = cap;
    dropped += skipped;
    if (dropped > 0) {
        cx_log_put_str(&b, ",\"dropped_fields\":");
        cx_log_put_uint(&b, dropped, 1);
    }
    cx_log_put_str(&b, "}\n");
    buf[b.len] = '\0';
    return b.len;
}

/* ---- public API ------------------------------------------------------------------------ */

void cx_log_set_trace(const char *trace_id)
{
    size_t n = trace_id != NULL ? strlen(trace_id) : 0;
    if (n != CX_LOG_TRACE_ID_LEN || strspn(trace_id, "0123456789abcdef") != n) {
        cx_log_trace[0] = '\0';
        return;
    }
    memcpy(cx_log_trace, trace_id, n + 1);
}

void cx_log_init(const char *service, cx_log_level_t min_level, int fd)
{
    size_t n;

    if (service == NULL || service[0] == '\0')
        service = "credex";
    n = strlen(service);
    if (n >= CX_LOG_SERVICE_MAX)
        n = CX_LOG_SERVICE_MAX - 1;
    if ((unsigned)min_level > (unsigned)CX_LOG_ERROR)
        min_level = CX_LOG_ERROR;

    pthread_mutex_lock(&cx_log_state.lock);
    memcpy(cx_log_state.service, service, n);
    cx_log_state.service[n] = '\0';
    cx_log_state.min_level = min_level;
    cx_log_state.fd = fd >= 0 ? fd : 2;
    pthread_mutex_unlock(&cx_log_state.lock);
}

bool cx_log_level_parse(const char *s, cx_log_level_t *out)
{
    if (s == NULL || out == NULL)
        return false;
    for (size_t i = 0; i < sizeof(cx_log_level_names) / sizeof(cx_log_level_names[0]); i++) {
        if (strcmp(s, cx_log_level_names[i]) == 0) {
            *out = (cx_log_level_t)i;
            return true;
        }
    }
    return false;
}

size_t cx_log_format(char *buf, size_t bufsz, cx_log_level_t level, const char *correlation_id,
                     const char *event, const cx_log_field_t *fields, size_t nfields)
{
    char service[CX_LOG_SERVICE_MAX];

    pthread_mutex_lock(&cx_log_state.lock);
    memcpy(service, cx_log_state.service, sizeof(service));
    pthread_mutex_unlock(&cx_log_state.lock);
    return cx_log_build(buf, bufsz, service, level, correlation_id, event, fields, nfields);
}

void cx_log_emit(cx_log_level_t level, const char *correlation_id, const char *event,
                 const cx_log_field_t *fields, size_t nfields)
{
    char service[CX_LOG_SERVICE_MAX];
    char line[CX_LOG_LINE_MAX + 1];
    cx_log_level_t min_level;
    int fd, saved_errno = errno;
    size_t n, off = 0;

    pthread_mutex_lock(&cx_log_state.lock);
    memcpy(service, cx_log_state.service, sizeof(service));
    min_level = cx_log_state.min_level;
    fd = cx_log_state.fd;
    pthread_mutex_unlock(&cx_log_state.lock);

    /* An out-of-range level is treated as the most severe, never silently dropped. */
    if ((unsigned)level > (unsigned)CX_LOG_ERROR)
        level = CX_LOG_ERROR;
    if ((unsigned)level < (unsigned)min_level)
        goto out;

    n = cx_log_build(line, sizeof(line), service, level, correlation_id, event, fields, nfields);
    while (off < n) {
        ssize_t w = write(fd, line + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break; /* nowhere to report a logging failure */
        off += (size_t)w;
    }
out:
    /* Callers log on error paths and then inspect errno; logging must not change it. */
    errno = saved_errno;
}
