/* cx_log: exact line shape, escaping, limits, level filtering and redaction. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log/cx_log.h"

#define CORR      "0123456789abcdef0123456789abcdef"
#define SECRET_ID "sec_01J8ZQ4X7K9M2N3P5R6S7T8V9W"
#define TS_LEN    24 /* 2026-11-22T10:00:00.123Z */

static char line[CX_LOG_LINE_MAX + 1];

/* Format with the given fields into the static line buffer. */
static size_t fmt(cx_log_level_t level, const char *corr, const char *event,
                  const cx_log_field_t *fields, size_t n)
{
    size_t len = cx_log_format(line, sizeof(line), level, corr, event, fields, n);
    assert_int_equal(len, strlen(line));
    return len;
}

/* The line with its timestamp checked and cut off: everything after `{"ts":"<ts>"`. */
static const char *after_ts(const char *l)
{
    static const char head[] = "{\"ts\":\"";
    assert_memory_equal(l, head, sizeof(head) - 1);
    const char *ts = l + sizeof(head) - 1;
    /* YYYY-MM-DDTHH:MM:SS.mmmZ */
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    for (size_t i = 0; i < TS_LEN; i++) {
        if (shape[i] == 'd')
            assert_true(ts[i] >= '0' && ts[i] <= '9');
        else
            assert_int_equal(ts[i], shape[i]);
    }
    assert_int_equal(ts[TS_LEN], '"');
    return ts + TS_LEN + 1;
}

/* Value of a string field `"key":"..."` copied into out (raw JSON text between quotes). */
static bool field_text(const char *l, const char *key, char *out, size_t outsz)
{
    char pat[128];
    snprintf(pat, sizeof(pat), "\"%s\":\"", key);
    const char *p = strstr(l, pat);
    if (p == NULL)
        return false;
    p += strlen(pat);
    size_t n = 0;
    while (p[n] != '\0' && p[n] != '"')
        n += (p[n] == '\\' && p[n + 1] != '\0') ? 2 : 1;
    if (n >= outsz)
        return false;
    memcpy(out, p, n);
    out[n] = '\0';
    return true;
}

static int setup_logger(void **state)
{
    (void)state;
    cx_log_init("store", CX_LOG_INFO, 2);
    return 0;
}

/* ---- shape ----------------------------------------------------------------------------- */

static void test_default_service_before_init(void **state)
{
    (void)state;
    /* Runs first, before any cx_log_init. */
    fmt(CX_LOG_INFO, NULL, "x", NULL, 0);
    assert_string_equal(after_ts(line),
                        ",\"level\":\"info\",\"service\":\"credex\",\"event\":\"x\"}\n");
}

static void test_exact_sample_line(void **state)
{
    (void)state;
    cx_log_field_t f[] = {
        CX_LOG_STR("secret_id", SECRET_ID), CX_LOG_INT("ms", 3),       CX_LOG_BOOL("cached", true),
        CX_LOG_BOOL("rotated", false),      CX_LOG_STR("owner", NULL),
    };
    size_t n = fmt(CX_LOG_INFO, CORR, "secret.create", f, 5);
    assert_string_equal(after_ts(line),
                        ",\"level\":\"info\",\"service\":\"store\",\"event\":\"secret.create\","
                        "\"correlation_id\":\"" CORR "\",\"secret_id\":\"" SECRET_ID "\","
                        "\"ms\":3,\"cached\":true,\"rotated\":false,\"owner\":null}\n");
    assert_int_equal(line[n - 1], '\n');
    assert_ptr_equal(strchr(line, '\n'), line + n - 1);
}

static void test_timestamp_is_utc_now(void **state)
{
    (void)state;
    struct tm tm = {0};
    /* The logger reads CLOCK_REALTIME; time() reads a coarse clock that may
     * lag it by a tick across a second boundary, so the bounds read the same
     * clock as the code under test. */
    struct timespec ts0, ts1;
    assert_int_equal(clock_gettime(CLOCK_REALTIME, &ts0), 0);
    fmt(CX_LOG_INFO, NULL, "t", NULL, 0);
    assert_int_equal(clock_gettime(CLOCK_REALTIME, &ts1), 0);
    time_t before = ts0.tv_sec, after = ts1.tv_sec;
    const char *ts = line + 7;
    (void)after_ts(line);
    tm.tm_year = atoi(ts) - 1900;
    tm.tm_mon = atoi(ts + 5) - 1;
    tm.tm_mday = atoi(ts + 8);
    tm.tm_hour = atoi(ts + 11);
    tm.tm_min = atoi(ts + 14);
    tm.tm_sec = atoi(ts + 17);
    time_t t = timegm(&tm);
    assert_true(t >= before && t <= after);
}

static void test_levels_and_names(void **state)
{
    (void)state;
    static const struct {
        cx_log_level_t level;
        const char *name;
    } lv[] = {{CX_LOG_DEBUG, "debug"},
              {CX_LOG_INFO, "info"},
              {CX_LOG_WARN, "warn"},
              {CX_LOG_ERROR, "error"}};
    for (size_t i = 0; i < 4; i++) {
        char want[64];
        snprintf(want, sizeof(want), ",\"level\":\"%s\",", lv[i].name);
        fmt(lv[i].level, NULL, "e", NULL, 0);
        assert_non_null(strstr(line, want));
    }
    /* An out-of-range level is written as the most severe. */
    fmt((cx_log_level_t)42, NULL, "e", NULL, 0);
    assert_non_null(strstr(line, ",\"level\":\"error\","));
}

static void test_level_parse(void **state)
{
    (void)state;
    cx_log_level_t l = CX_LOG_ERROR;
    assert_true(cx_log_level_parse("debug", &l));
    assert_int_equal(l, CX_LOG_DEBUG);
    assert_true(cx_log_level_parse("info", &l));
    assert_int_equal(l, CX_LOG_INFO);
    assert_true(cx_log_level_parse("warn", &l));
    assert_int_equal(l, CX_LOG_WARN);
    assert_true(cx_log_level_parse("error", &l));
    assert_int_equal(l, CX_LOG_ERROR);
    l = CX_LOG_WARN;
    assert_false(cx_log_level_parse("INFO", &l));
    assert_false(cx_log_level_parse("warning", &l));
    assert_false(cx_log_level_parse("", &l));
    assert_false(cx_log_level_parse(NULL, &l));
    assert_false(cx_log_level_parse("info", NULL));
    assert_int_equal(l, CX_LOG_WARN); /* untouched on failure */
}

static void test_integers(void **state)
{
    (void)state;
    cx_log_field_t f[] = {
        CX_LOG_INT("zero", 0),        CX_LOG_INT("neg", -1),        CX_LOG_INT("max", INT64_MAX),
        CX_LOG_INT("min", INT64_MIN), CX_LOG_INT("u", 4294967295u),
    };
    fmt(CX_LOG_INFO, NULL, "n", f, 5);
    assert_non_null(strstr(line, ",\"zero\":0,\"neg\":-1,\"max\":9223372036854775807,"
                                 "\"min\":-9223372036854775808,\"u\":4294967295}\n"));
}

static void test_null_correlation_id_is_omitted(void **state)
{
    (void)state;
    fmt(CX_LOG_INFO, NULL, "e", NULL, 0);
    assert_null(strstr(line, "correlation_id"));
    fmt(CX_LOG_INFO, CORR, "e", NULL, 0);
    assert_non_null(strstr(line, ",\"correlation_id\":\"" CORR "\"}"));
}

static void test_null_fields_array(void **state)
{
    (void)state;
    fmt(CX_LOG_INFO, NULL, "e", NULL, 7);
    assert_string_equal(after_ts(line),
                        ",\"level\":\"info\",\"service\":\"store\",\"event\":\"e\"}\n");
}

static void test_percent_is_not_a_format(void **state)
{
    (void)state;
    cx_log_field_t f[] = {CX_LOG_STR("v", "100%s%n%d")};
    fmt(CX_LOG_INFO, NULL, "e", f, 1);
    assert_non_null(strstr(line, "\"v\":\"100%s%n%d\""));
}

/* ---- escaping -------------------------------------------------------------------------- */

static void test_escape_quotes_and_controls(void **state)
{
    (void)state;
    cx_log_field_t f[] = {CX_LOG_STR("v", "a\"b\\c\nd\re\tf\x01g\x1fh\x7fi/j")};
    fmt(CX_LOG_INFO, NULL, "e", f, 1);
    assert_non_null(strstr(line, "\"v\":\"a\\\"b\\\\c\\nd\\re\\tf\\u0001g\\u001fh\\u007fi/j\"}\n"));
    /* Exactly one newline: the terminator. */
    assert_ptr_equal(strchr(line, '\n'), line + strlen(line) - 1);
}

static void test_escape_key_and_event(void **state)
{
    (void)state;
    cx_log_field_t f[] = {CX_LOG_STR("k\"ey", "v")};
    fmt(CX_LOG_INFO, NULL, "ev\"ent\n", f, 1);
    assert_non_null(strstr(line, "\"event\":\"ev\\\"ent\\n\",\"k\\\"ey\":\"v\"}"));
}

static void test_utf8_valid_passes_through(void **state)
{
    (void)state;
    cx_log_field_t f[] = {CX_LOG_STR("v", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80")};
    fmt(CX_LOG_INFO, NULL, "e", f, 1);
    assert_non_null(strstr(line, "\"v\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\""));
}

static void test_utf8_invalid_is_replaced(void **state)
{
    (void)state;
    cx_log_field_t f[] = {
        CX_LOG_STR("lone", "a\xff"
                           "b"),
        CX_LOG_STR("cont", "\x80"),
        CX_LOG_STR("overlong", "\xc0\xaf"),
        CX_LOG_STR("surrogate", "\xed\xa0\x80"),
        CX_LOG_STR("too_big", "\xf4\x90\x80\x80"),
        CX_LOG_STR("cut", "x\xe2\x82"),
    };
    fmt(CX_LOG_INFO, NULL, "e", f, 6);
    assert_non_null(strstr(line, "\"lone\":\"a\\ufffdb\""));
    assert_non_null(strstr(line, "\"cont\":\"\\ufffd\""));
    assert_non_null(strstr(line, "\"overlong\":\"\\ufffd\\ufffd\""));
    assert_non_null(strstr(line, "\"surrogate\":\"\\ufffd\\ufffd\\ufffd\""));
    assert_non_null(strstr(line, "\"too_big\":\"\\ufffd\\ufffd\\ufffd\\ufffd\""));
    assert_non_null(strstr(line, "\"cut\":\"x\\ufffd\\ufffd\""));
    for (const unsigned char *p = (const unsigned char *)line; *p; p++)
        assert_true(*p < 0x80); /* every invalid byte became an ASCII escape */
}

/* ---- limits ---------------------------------------------------------------------------- */

static void test_value_truncated_at_max(void **state)
{
    (void)state;
    char v[CX_LOG_VALUE_MAX + 100];
    char got[CX_LOG_VALUE_MAX + 16];
    char want[CX_LOG_VALUE_MAX + 16];

    memset(v, 'a', sizeof(v) - 1);
    v[sizeof(v) - 1] = '\0';
    cx_log_field_t f[] = {CX_LOG_STR("v", v)};
    fmt(CX_LOG_INFO, NULL, "e", f, 1);
    assert_true(field_text(line, "v", got, sizeof(got)));
    memset(want, 'a', CX_LOG_VALUE_MAX);
    strcpy(want + CX_LOG_VALUE_MAX, "...");
    assert_string_equal(got, want);

    /* Exactly CX_LOG_VALUE_MAX bytes: written whole, no marker. */
    v[CX_LOG_VALUE_MAX] = '\0';
    fmt(CX_LOG_INFO, NULL, "e", f, 1);
    assert_true(field_text(line, "v", got, sizeof(got)));
    assert_int_equal(strlen(got), CX_LOG_VALUE_MAX);
    assert_null(strstr(got, "..."));
}

static void test_truncation_does_not_split_a_character(void **state)
{
    (void)state;
    char v[CX_LOG_VALUE_MAX + 8];
    char got[CX_LOG_VALUE_MAX + 16];

    memset(v, 'b', CX_LOG_VALUE_MAX - 1);
    memcpy(v + CX_LOG_VALUE_MAX - 1, "\xc3\xa9xyz", 6); /* é straddles the limit */
    cx_log_field_t f[] = {CX_LOG_STR("v", v)};
    fmt(CX_LOG_INFO, NULL, "e", f, 1);
    assert_true(field_text(line, "v", got, sizeof(got)));
    assert_int_equal(strlen(got), CX_LOG_VALUE_MAX - 1 + 3);
    assert_string_equal(got + CX_LOG_VALUE_MAX - 1, "...");
}

static void test_line_cap_drops_whole_fields(void **state)
{
    (void)state;
    enum { N = 40 };
    char v[CX_LOG_VALUE_MAX + 1];
    cx_log_field_t f[N];
    size_t present = 0;

    char keys[N][8];

    memset(v, 'c', CX_LOG_VALUE_MAX);
    v[CX_LOG_VALUE_MAX] = '\0';
    for (size_t i = 0; i < N; i++) {
        /* Distinct keys (one key twice would be dropped as a duplicate, not for the cap). */
        snprintf(keys[i], sizeof(keys[i]), "fld%02zu", i);
        f[i] = (cx_log_field_t){.key = keys[i], .type = CX_LOG_T_STR, .v.s = v};
    }
    size_t n = fmt(CX_LOG_INFO, CORR, "big", f, N);
    assert_true(n <= CX_LOG_LINE_MAX);
    assert_true(n > CX_LOG_LINE_MAX - 300); /* filled, not given up early */
    assert_int_equal(line[n - 1], '\n');
    assert_int_equal(line[n - 2], '}');
    for (const char *p = line; (p = strstr(p, "\":\"ccc")) != NULL; p++) {
        /* every field that is there is complete */
        assert_int_equal(p[3 + CX_LOG_VALUE_MAX], '"');
        present++;
    }
    char want[64];
    snprintf(want, sizeof(want), ",\"dropped_fields\":%zu}\n", (size_t)N - present);
    assert_true(present > 0 && present < N);
    assert_non_null(strstr(line, want));
}

/* ---- unique keys --------------------------------------------------------------------- */

/* Number of times `"key":` occurs in the line. */
static int key_count(const char *key)
{
    char pat[96];
    int n = 0;
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    for (const char *p = line; (p = strstr(p, pat)) != NULL; p++)
        n++;
    return n;
}

/* A handler field named like a key cx_log writes itself (the gateway's "service") is written
 * under CX_LOG_RESERVED_PREFIX: the line stays valid JSON with unique keys, and both values
 * are there. */
static void test_reserved_keys_are_prefixed(void **state)
{
    (void)state;
    cx_log_field_t f[] = {
        CX_LOG_STR("service", "agent-runtime"),
        CX_LOG_STR("ts", "t"),
        CX_LOG_STR("level", "l"),
        CX_LOG_STR("event", "e"),
        CX_LOG_STR("correlation_id", "c"),
        CX_LOG_INT("dropped_fields", 7),
        CX_LOG_STR("user", "alice"),
    };
    fmt(CX_LOG_INFO, CORR, "gateway.retrieved", f, 7);
    const char *keys[] = {"ts", "level", "service", "event", "correlation_id", "user"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        assert_int_equal(key_count(keys[i]), 1);
    assert_int_equal(key_count("dropped_fields"), 0);
    assert_non_null(strstr(line, ",\"service\":\"store\","));
    assert_non_null(strstr(line, "\"" CX_LOG_RESERVED_PREFIX "service\":\"agent-runtime\""));
    assert_non_null(strstr(line, "\"" CX_LOG_RESERVED_PREFIX "dropped_fields\":7"));
    assert_int_equal(key_count(CX_LOG_RESERVED_PREFIX "ts"), 1);
}

/* Two fields under one key (directly, or a reserved key and its prefixed form): the first is
 * written, the others are dropped and counted. */
static void test_duplicate_field_keys_are_dropped(void **state)
{
    (void)state;
    cx_log_field_t f[] = {
        CX_LOG_STR("peer", "a"),    CX_LOG_STR("peer", "b"),
        CX_LOG_STR("service", "x"), CX_LOG_STR(CX_LOG_RESERVED_PREFIX "service", "y"),
        CX_LOG_INT("ms", 1),
    };
    fmt(CX_LOG_INFO, NULL, "dup", f, 5);
    assert_string_equal(after_ts(line),
                        ",\"level\":\"info\",\"service\":\"store\",\"event\":\"dup\","
                        "\"peer\":\"a\",\"" CX_LOG_RESERVED_PREFIX "service\":\"x\",\"ms\":1,"
                        "\"dropped_fields\":2}\n");
}

static void test_worst_case_escaping_still_fits(void **state)
{
    (void)state;
    /* Control bytes expand 6x; the line must still be valid and capped. */
    char v[CX_LOG_VALUE_MAX + 1];
    cx_log_field_t f[8];
    memset(v, '\x01', CX_LOG_VALUE_MAX);
    v[CX_LOG_VALUE_MAX] = '\0';
    for (size_t i = 0; i < 8; i++)
        f[i] = CX_LOG_STR("k", v);
    size_t n = fmt(CX_LOG_ERROR, v, "e", f, 8);
    assert_true(n <= CX_LOG_LINE_MAX);
    assert_non_null(strstr(line, "\"dropped_fields\":"));
    assert_memory_equal(line + n - 2, "}\n", 2);
}

static void test_small_buffers(void **state)
{
    (void)state;
    char small[64];
    char mid[300];
    char big[CX_LOG_VALUE_MAX + 1];
    memset(big, 'x', CX_LOG_VALUE_MAX);
    big[CX_LOG_VALUE_MAX] = '\0';
    cx_log_field_t f[] = {CX_LOG_INT("a", 1), CX_LOG_STR("b", big)};

    assert_int_equal(cx_log_format(NULL, 10, CX_LOG_INFO, NULL, "e", NULL, 0), 0);
    assert_int_equal(cx_log_format(small, 0, CX_LOG_INFO, NULL, "e", NULL, 0), 0);
    /* Too small for the fixed part: nothing, and an empty string. */
    memset(small, 'q', sizeof(small));
    assert_int_equal(cx_log_format(small, sizeof(small), CX_LOG_INFO, NULL, "e", NULL, 0), 0);
    assert_int_equal(small[0], '\0');
    /* Room for the head and one field: the rest is dropped, the line stays whole. */
    size_t n = cx_log_format(mid, sizeof(mid), CX_LOG_INFO, NULL, "e", f, 2);
    assert_true(n > 0 && n < sizeof(mid));
    assert_int_equal(n, strlen(mid));
    assert_non_null(strstr(mid, ",\"a\":1,\"dropped_fields\":1}\n"));
}

/* ---- emit and filtering ---------------------------------------------------------------- */

static int open_pipe(int fds[2])
{
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(fcntl(fds[0], F_SETFL, O_NONBLOCK), 0);
    return fds[0];
}

static size_t drain(int fd, char *buf, size_t bufsz)
{
    size_t total = 0;
    for (;;) {
        ssize_t r = read(fd, buf + total, bufsz - 1 - total);
        if (r <= 0)
            break;
        total += (size_t)r;
    }
    buf[total] = '\0';
    return total;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void test_emit_writes_one_line_via_macros(void **state)
{
    (void)state;
    int fds[2];
    char out[8192];
    const char *id = SECRET_ID;

    open_pipe(fds);
    cx_log_init("gateway", CX_LOG_INFO, fds[1]);
    cx_log_info(CORR, "secret.retrieve", CX_LOG_STR("secret_id", id), CX_LOG_INT("ms", 12),
                CX_LOG_BOOL("allowed", true));
    cx_log_info0(NULL, "service.ready");
    drain(fds[0], out, sizeof(out));
    assert_int_equal(count_lines(out), 2);
    const char *second = strchr(out, '\n') + 1;
    assert_non_null(strstr(out, ",\"level\":\"info\",\"service\":\"gateway\",\"event\":"
                                "\"secret.retrieve\",\"correlation_id\":\"" CORR "\","
                                "\"secret_id\":\"" SECRET_ID "\",\"ms\":12,\"allowed\":true}\n"));
    assert_string_equal(
        after_ts(second),
        ",\"level\":\"info\",\"service\":\"gateway\",\"event\":\"service.ready\"}\n");
    close(fds[0]);
    close(fds[1]);
    setup_logger(NULL);
}

static void test_level_filtering(void **state)
{
    (void)state;
    int fds[2];
    char out[8192];

    open_pipe(fds);
    cx_log_init("store", CX_LOG_WARN, fds[1]);
    cx_log_debug(NULL, "d", CX_LOG_INT("n", 1));
    cx_log_info(NULL, "i", CX_LOG_INT("n", 2));
    cx_log_info0(NULL, "i0");
    cx_log_warn(NULL, "w", CX_LOG_INT("n", 3));
    cx_log_error(NULL, "e", CX_LOG_INT("n", 4));
    cx_log_emit((cx_log_level_t)9, NULL, "bogus", NULL, 0); /* treated as error */
    drain(fds[0], out, sizeof(out));
    assert_int_equal(count_lines(out), 3);
    assert_null(strstr(out, "\"event\":\"d\""));
    assert_null(strstr(out, "\"event\":\"i\""));
    assert_null(strstr(out, "\"event\":\"i0\""));
    assert_non_null(strstr(out, "\"level\":\"warn\",\"service\":\"store\",\"event\":\"w\""));
    assert_non_null(strstr(out, "\"level\":\"error\",\"service\":\"store\",\"event\":\"e\""));
    assert_non_null(strstr(out, "\"level\":\"error\",\"service\":\"store\",\"event\":\"bogus\""));

    cx_log_init("store", CX_LOG_DEBUG, fds[1]);
    cx_log_debug(NULL, "d", CX_LOG_INT("n", 1));
    drain(fds[0], out, sizeof(out));
    assert_int_equal(count_lines(out), 1);
    assert_non_null(strstr(out, "\"level\":\"debug\""));

    close(fds[0]);
    close(fds[1]);
    setup_logger(NULL);
}

static void test_emit_preserves_errno_and_survives_bad_fd(void **state)
{
    (void)state;
    cx_log_init("store", CX_LOG_INFO, 1000); /* not open */
    errno = ENOENT;
    cx_log_info0(NULL, "e");
    assert_int_equal(errno, ENOENT);
    setup_logger(NULL);
}

static void test_long_service_name_is_capped(void **state)
{
    (void)state;
    char name[200];
    memset(name, 's', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    cx_log_init(name, CX_LOG_INFO, 2);
    fmt(CX_LOG_INFO, NULL, "e", NULL, 0);
    char got[256];
    assert_true(field_text(line, "service", got, sizeof(got)));
    assert_int_equal(strlen(got), 63);
    cx_log_init(NULL, CX_LOG_INFO, 2);
    fmt(CX_LOG_INFO, NULL, "e", NULL, 0);
    assert_non_null(strstr(line, "\"service\":\"credex\""));
    setup_logger(NULL);
}

/* ---- redaction ------------------------------------------------------------------------- */

static const char *const sensitive[] = {
    /* bearer tokens, any case, anywhere */
    "Bearer abc.def", "authorization: bearer eyJhbGciOi", "BEARER\ttoken123", "header=Bearer  x",
    /* JWTs, with or without signature, embedded */
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "token=eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0", "jwt:eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1In0.sig",
    /* PEM */
    "-----BEGIN PRIVATE "
    "KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE "
    "KEY-----",
    "cert: -----BEGIN CERTIFICATE-----",
    /* vendor prefixes */
    "ghp_"
    "1234567890abcdefghijklmnopqrstuvwxyz",
    "gho_16C7e42F292c6912E7710c838347Ae178B4a", "ghu_abcdefgh", "ghs_abcdefgh12",
    "ghr_1B4a2e77838347a7E420ce178F2E7c6912E169246c34E",
    "github_pat_"
    "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
    "glpat-xxxxxxxxxxxxxxxxxxxx",
    "xoxb-"
    "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "xoxp-123456789012",
    "AKIA"
    "IOSFODNN7EXAMPLE",
    "key=AKIA"
    "IOSFODNN7EXAMPLE,",
    "ASIA"
    "Y34FZKBOKMUTVV7A",
    "sk-proj-abcdefghijklmnopqrstuvwxyz012345", "sk-abcdefghijklmnopqrst",
    "password is sk-ant-api03-abcdefghijklmnopqrstu",
    /* long high-entropy runs */
    "q8J2mZ3xV9rT1yLk4Wc7Nd0Hs6Pb5Ga+fE/uIoQjRt=",
    "the value was q8J2mZ3xV9rT1yLk4Wc7Nd0Hs6Pb5Ga-fE_uIoQjRt in the body",
    "9F86D081884C7D659A2FEAA0C55AD015",         /* uppercase hex */
    "k3j5h2g8f9d7s6a4q1w2e3r4t5y6u7i8o9p0zxcv", /* base36 */
    "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",         /* base32 (TOTP seed) */
    "xQzLpWvNkRtYbHmJcGfDsAeUiOyTrEwQ",         /* random letters, no digits */
    "a4abd4448c49562d828115d13a1fccea927f52b4d5459297f8b43e42da89238b"
    "c13626e43dcb38ddb082488927ec904fb42057443983e88585179d50551afe62", /* 128 hex */
};

static const char *const loggable[] = {
    CORR,
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", /* sha256, 64 hex */
    "550e8400-e29b-41d4-a716-446655440000",
    "550E8400-E29B-41D4-A716-446655440000",
    SECRET_ID,
    "conn_AbCdEfGhIj0123456789KlMnOpQrSt0123456789", /* [a-z]{2,8}_[A-Za-z0-9]{40} */
    "Bearer",
    "scheme=Bearer",
    "expected bearer:",
    "bearers",
    "ghp_",
    "ghp_short",
    "AKIA0123",
    "sk-short",
    "task-abcdefghijklmnopqrstuvwxyz0123",
    "owner_type_1_owner_id_1_kind_1_status_1",
    "credential_migration_previews_source_type_status_created_at",
    "CredentialStoreResolveRequestMessage",
    "/api/credentials/oauth/atlassian/callback",
    "https://github.com/login/oauth/access_token",
    "mongodb://127.0.0.1:27017",
    "spiffe://credex.local/gateway",
    "/credex.v1.CredentialStore/Resolve",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "Zx9Qw2Er7Ty1Ui3Op5As", /* random but short */
    "eyJhbGciOi",           /* a JWT header alone decodes to nothing secret */
    "",
    "permission denied for secret sec_01J8ZQ4X7K9M2N3P5R6S7T8V9W (read_metadata)",
};

static void test_sensitive_values_detected(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(sensitive) / sizeof(sensitive[0]); i++) {
        if (!cx_log_value_is_sensitive(sensitive[i]))
            fail_msg("not redacted: %s", sensitive[i]);
    }
}

static void test_loggable_values_kept(void **state)
{
    (void)state;
    assert_false(cx_log_value_is_sensitive(NULL));
    for (size_t i = 0; i < sizeof(loggable) / sizeof(loggable[0]); i++) {
        if (cx_log_value_is_sensitive(loggable[i]))
            fail_msg("redacted but should be kept: %s", loggable[i]);
    }
}

static void test_redacted_in_line(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(sensitive) / sizeof(sensitive[0]); i++) {
        cx_log_field_t f[] = {CX_LOG_STR("v", sensitive[i])};
        fmt(CX_LOG_INFO, NULL, "e", f, 1);
        assert_non_null(strstr(line, "\"v\":\"[redacted]\"}\n"));
    }
    for (size_t i = 0; i < sizeof(loggable) / sizeof(loggable[0]); i++) {
        cx_log_field_t f[] = {CX_LOG_STR("v", loggable[i])};
        fmt(CX_LOG_INFO, NULL, "e", f, 1);
        assert_null(strstr(line, "[redacted]"));
    }
}

static void test_correlation_id_is_a_value(void **state)
{
    (void)state;
    /* A client-supplied correlation id goes through the same redaction. */
    fmt(CX_LOG_INFO,
        "ghp_"
        "1234567890abcdefghijklmnopqrstuvwxyz",
        "e", NULL, 0);
    assert_non_null(strstr(line, "\"correlation_id\":\"[redacted]\""));
    assert_null(strstr(line, "ghp_"));
}

static void test_secret_past_the_truncation_point_still_redacts(void **state)
{
    (void)state;
    char v[512];
    memset(v, 'a', 300);
    strcpy(v + 300, " ghp_"
                    "1234567890abcdefghijklmnopqrstuvwxyz");
    cx_log_field_t f[] = {CX_LOG_STR("v", v)};
    fmt(CX_LOG_INFO, NULL, "e", f, 1);
    assert_non_null(strstr(line, "\"v\":\"[redacted]\""));
}

/* cx_log_set_trace: the thread's trace id follows correlation_id in every line until cleared;
 * anything but 32 lower-case hex digits clears it; a field named trace_id cannot forge it. */
static void test_trace_id(void **state)
{
    (void)state;
    const char *t = "4bf92f3577b34da6a3ce929d0e0e4736";
    cx_log_set_trace(t);
    fmt(CX_LOG_INFO, "c1", "e", CX_LOG_FIELDS_(CX_LOG_STR("trace_id", "forged")), 1);
    assert_non_null(strstr(
        line, ",\"correlation_id\":\"c1\",\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\""));
    assert_non_null(strstr(line, "\"field_trace_id\":\"forged\""));
    cx_log_set_trace("4BF92F3577B34DA6A3CE929D0E0E4736"); /* upper case: not an id */
    fmt(CX_LOG_INFO, "c1", "e", NULL, 0);
    assert_null(strstr(line, "trace_id"));
    cx_log_set_trace(t);
    cx_log_set_trace(NULL);
    fmt(CX_LOG_INFO, "c1", "e", NULL, 0);
    assert_null(strstr(line, "trace_id"));
    cx_log_set_trace("4bf92f35");
    fmt(CX_LOG_INFO, "c1", "e", NULL, 0);
    assert_null(strstr(line, "trace_id"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_service_before_init),
        cmocka_unit_test(test_trace_id),
        cmocka_unit_test_setup(test_exact_sample_line, setup_logger),
        cmocka_unit_test_setup(test_timestamp_is_utc_now, setup_logger),
        cmocka_unit_test_setup(test_levels_and_names, setup_logger),
        cmocka_unit_test(test_level_parse),
        cmocka_unit_test_setup(test_integers, setup_logger),
        cmocka_unit_test_setup(test_null_correlation_id_is_omitted, setup_logger),
        cmocka_unit_test_setup(test_null_fields_array, setup_logger),
        cmocka_unit_test_setup(test_percent_is_not_a_format, setup_logger),
        cmocka_unit_test_setup(test_escape_quotes_and_controls, setup_logger),
        cmocka_unit_test_setup(test_escape_key_and_event, setup_logger),
        cmocka_unit_test_setup(test_utf8_valid_passes_through, setup_logger),
        cmocka_unit_test_setup(test_utf8_invalid_is_replaced, setup_logger),
        cmocka_unit_test_setup(test_value_truncated_at_max, setup_logger),
        cmocka_unit_test_setup(test_truncation_does_not_split_a_character, setup_logger),
        cmocka_unit_test_setup(test_line_cap_drops_whole_fields, setup_logger),
        cmocka_unit_test_setup(test_worst_case_escaping_still_fits, setup_logger),
        cmocka_unit_test_setup(test_small_buffers, setup_logger),
        cmocka_unit_test(test_emit_writes_one_line_via_macros),
        cmocka_unit_test(test_level_filtering),
        cmocka_unit_test(test_emit_preserves_errno_and_survives_bad_fd),
        cmocka_unit_test(test_long_service_name_is_capped),
        cmocka_unit_test(test_sensitive_values_detected),
        cmocka_unit_test(test_loggable_values_kept),
        cmocka_unit_test_setup(test_redacted_in_line, setup_logger),
        cmocka_unit_test_setup(test_correlation_id_is_a_value, setup_logger),
        cmocka_unit_test_setup(test_secret_past_the_truncation_point_still_redacts, setup_logger),
        cmocka_unit_test_setup(test_reserved_keys_are_prefixed, setup_logger),
        cmocka_unit_test_setup(test_duplicate_field_keys_are_dropped, setup_logger),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
