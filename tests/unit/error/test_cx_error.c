/* cx_error: the reason strings and the gRPC/HTTP tables are a wire contract (audit events,
 * the credex-reason trailer, the edge's JSON), so every row is pinned here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/error/cx_error.h"

typedef struct expected_row {
    cx_code_t code;
    int number; /* the stored number: codes are append-only */
    const char *reason;
    int grpc;
    int http;
    bool denial; /* audit outcome DENIED (else FAILED) */
} expected_row_t;

static const expected_row_t rows[] = {
    {CX_OK, 0, "ok", 0, 200, false},
    {CX_ERR_FEATURE_DISABLED, 1, "feature_disabled", 9, 404, true},
    {CX_ERR_UNAUTHENTICATED, 2, "unauthenticated", 16, 401, true},
    {CX_ERR_PERMISSION_DENIED, 3, "permission_denied", 7, 403, true},
    {CX_ERR_NOT_FOUND, 4, "not_found", 5, 404, true},
    {CX_ERR_INVALID_ARGUMENT, 5, "invalid_argument", 3, 400, true},
    {CX_ERR_CONFLICT, 6, "conflict", 10, 409, false},
    {CX_ERR_UNAVAILABLE, 7, "unavailable", 14, 503, false},
    {CX_ERR_INTEGRITY, 8, "integrity_error", 15, 500, false},
    {CX_ERR_BROWSER_DENIED, 9, "browser_denied", 7, 403, true},
    {CX_ERR_SSRF_BLOCKED, 10, "ssrf_blocked", 3, 400, true},
    {CX_ERR_RECONSENT_REQUIRED, 11, "reconsent_required", 9, 409, false},
    {CX_ERR_INTERNAL, 12, "internal", 13, 500, false},
    {CX_ERR_UNIMPLEMENTED, 13, "unimplemented", 12, 501, false},
    {CX_ERR_RESOURCE_EXHAUSTED, 14, "resource_exhausted", 8, 429, true},
    {CX_ERR_DEADLINE_EXCEEDED, 15, "deadline_exceeded", 4, 504, false},
    {CX_ERR_FAILED_PRECONDITION, 16, "failed_precondition", 9, 412, true},
    {CX_ERR_CANCELLED, 17, "cancelled", 1, 499, false},
    {CX_ERR_RATE_LIMITED, 18, "rate_limited", 8, 429, false},
};

#define NROWS (sizeof(rows) / sizeof(rows[0]))

static void test_table_covers_every_code(void **state)
{
    (void)state;
    /* A new code must be added to this test (and to the tables) on purpose. */
    assert_int_equal(NROWS, CX_CODE_COUNT_);
    for (size_t i = 0; i < NROWS; i++)
        assert_int_equal((int)rows[i].code, rows[i].number);
}

static void test_reason_strings(void **state)
{
    (void)state;
    for (size_t i = 0; i < NROWS; i++)
        assert_string_equal(cx_code_reason(rows[i].code), rows[i].reason);
}

static void test_reasons_are_unique_snake_case(void **state)
{
    (void)state;
    for (size_t i = 0; i < NROWS; i++) {
        const char *r = cx_code_reason(rows[i].code);
        assert_true(strlen(r) > 0);
        for (const char *p = r; *p; p++)
            assert_true((*p >= 'a' && *p <= 'z') || *p == '_');
        for (size_t j = i + 1; j < NROWS; j++)
            assert_string_not_equal(r, cx_code_reason(rows[j].code));
    }
}

static void test_reason_round_trip(void **state)
{
    (void)state;
    for (size_t i = 0; i < NROWS; i++) {
        assert_int_equal(cx_code_from_reason(rows[i].reason), rows[i].code);
        assert_int_equal(cx_code_from_reason(cx_code_reason(rows[i].code)), rows[i].code);
    }
}

static void test_unknown_reason_is_internal(void **state)
{
    (void)state;
    assert_int_equal(cx_code_from_reason(NULL), CX_ERR_INTERNAL);
    assert_int_equal(cx_code_from_reason(""), CX_ERR_INTERNAL);
    assert_int_equal(cx_code_from_reason("nope"), CX_ERR_INTERNAL);
    assert_int_equal(cx_code_from_reason("NOT_FOUND"), CX_ERR_INTERNAL); /* case-sensitive */
    assert_int_equal(cx_code_from_reason("not_found "), CX_ERR_INTERNAL);
}

static void test_out_of_range_code(void **state)
{
    (void)state;
    cx_code_t bad = (cx_code_t)CX_CODE_COUNT_;
    cx_code_t worse = (cx_code_t)-1;
    assert_string_equal(cx_code_reason(bad), "internal");
    assert_string_equal(cx_code_reason(worse), "internal");
    assert_string_equal(cx_code_reason((cx_code_t)1000), "internal");
    assert_int_equal(cx_code_grpc_status(bad), 13);
    assert_int_equal(cx_code_grpc_status(worse), 13);
    assert_int_equal(cx_code_http_status(bad), 500);
    assert_int_equal(cx_code_http_status(worse), 500);
}

static void test_grpc_mapping(void **state)
{
    (void)state;
    for (size_t i = 0; i < NROWS; i++) {
        assert_int_equal(cx_code_grpc_status(rows[i].code), rows[i].grpc);
        assert_in_range(cx_code_grpc_status(rows[i].code), 0, 16);
    }
    /* The reasons for the choices: "unknown method" owns UNIMPLEMENTED. */
    assert_int_not_equal(cx_code_grpc_status(CX_ERR_FEATURE_DISABLED),
                         cx_code_grpc_status(CX_ERR_UNIMPLEMENTED));
}

static void test_http_mapping(void **state)
{
    (void)state;
    for (size_t i = 0; i < NROWS; i++)
        assert_int_equal(cx_code_http_status(rows[i].code), rows[i].http);
}

static void test_from_grpc_status(void **state)
{
    (void)state;
    static const cx_code_t want[17] = {
        CX_OK,                      /* 0 OK */
        CX_ERR_CANCELLED,           /* 1 CANCELLED */
        CX_ERR_INTERNAL,            /* 2 UNKNOWN */
        CX_ERR_INVALID_ARGUMENT,    /* 3 INVALID_ARGUMENT */
        CX_ERR_DEADLINE_EXCEEDED,   /* 4 DEADLINE_EXCEEDED */
        CX_ERR_NOT_FOUND,           /* 5 NOT_FOUND */
        CX_ERR_CONFLICT,            /* 6 ALREADY_EXISTS */
        CX_ERR_PERMISSION_DENIED,   /* 7 PERMISSION_DENIED */
        CX_ERR_RESOURCE_EXHAUSTED,  /* 8 RESOURCE_EXHAUSTED */
        CX_ERR_FAILED_PRECONDITION, /* 9 FAILED_PRECONDITION */
        CX_ERR_CONFLICT,            /* 10 ABORTED */
        CX_ERR_INVALID_ARGUMENT,    /* 11 OUT_OF_RANGE */
        CX_ERR_UNIMPLEMENTED,       /* 12 UNIMPLEMENTED */
        CX_ERR_INTERNAL,            /* 13 INTERNAL */
        CX_ERR_UNAVAILABLE,         /* 14 UNAVAILABLE */
        CX_ERR_INTEGRITY,           /* 15 DATA_LOSS */
        CX_ERR_UNAUTHENTICATED,     /* 16 UNAUTHENTICATED */
    };
    for (int s = 0; s <= 16; s++)
        assert_int_equal(cx_code_from_grpc_status(s), want[s]);
    assert_int_equal(cx_code_from_grpc_status(-1), CX_ERR_INTERNAL);
    assert_int_equal(cx_code_from_grpc_status(17), CX_ERR_INTERNAL);
    assert_int_equal(cx_code_from_grpc_status(1 << 30), CX_ERR_INTERNAL);
}

static void test_grpc_round_trip_where_one_to_one(void **state)
{
    (void)state;
    /* Codes that own their gRPC status survive a trip through a non-credex transport. */
    static const cx_code_t own[] = {
        CX_OK,
        CX_ERR_UNAUTHENTICATED,
        CX_ERR_PERMISSION_DENIED,
        CX_ERR_NOT_FOUND,
        CX_ERR_INVALID_ARGUMENT,
        CX_ERR_CONFLICT,
        CX_ERR_UNAVAILABLE,
        CX_ERR_INTEGRITY,
        CX_ERR_INTERNAL,
        CX_ERR_UNIMPLEMENTED,
        CX_ERR_RESOURCE_EXHAUSTED,
        CX_ERR_DEADLINE_EXCEEDED,
        CX_ERR_FAILED_PRECONDITION,
        CX_ERR_CANCELLED,
    };
    for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
        assert_int_equal(cx_code_from_grpc_status(cx_code_grpc_status(own[i])), own[i]);
}

static void test_set_returns_false_and_formats(void **state)
{
    (void)state;
    cx_error_t err;
    cx_error_clear(&err);
    assert_false(cx_error_set(&err, CX_ERR_NOT_FOUND, "secret %s v%d", "sec_1", 3));
    assert_int_equal(err.code, CX_ERR_NOT_FOUND);
    assert_string_equal(err.message, "secret sec_1 v3");
}

static void test_set_null_err_and_null_fmt(void **state)
{
    (void)state;
    cx_error_t err;
    assert_false(cx_error_set(NULL, CX_ERR_INTERNAL, "ignored %d", 1));
    memset(&err, 'x', sizeof(err));
    assert_false(cx_error_set(&err, CX_ERR_CONFLICT, NULL));
    assert_int_equal(err.code, CX_ERR_CONFLICT);
    assert_string_equal(err.message, "");
}

static void test_set_truncates(void **state)
{
    (void)state;
    char big[CX_ERROR_MESSAGE_MAX * 2];
    cx_error_t err;
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    cx_error_set(&err, CX_ERR_INVALID_ARGUMENT, "%s", big);
    assert_int_equal(strlen(err.message), CX_ERROR_MESSAGE_MAX - 1);
    assert_int_equal(err.message[0], 'a');
}

static void test_set_out_of_range_code_becomes_internal(void **state)
{
    (void)state;
    cx_error_t err;
    cx_error_set(&err, (cx_code_t)99, "x");
    assert_int_equal(err.code, CX_ERR_INTERNAL);
}

static void test_clear(void **state)
{
    (void)state;
    cx_error_t err;
    cx_error_set(&err, CX_ERR_UNAVAILABLE, "mongo down");
    cx_error_clear(&err);
    assert_int_equal(err.code, CX_OK);
    assert_string_equal(err.message, "");
    cx_error_clear(NULL);
}

static void test_copy(void **state)
{
    (void)state;
    cx_error_t a, b;
    cx_error_set(&a, CX_ERR_INTEGRITY, "tag mismatch");
    cx_error_clear(&b);
    cx_error_copy(&b, &a);
    assert_int_equal(b.code, CX_ERR_INTEGRITY);
    assert_string_equal(b.message, "tag mismatch");

    /* NULL on either side: nothing happens. */
    cx_error_copy(NULL, &a);
    cx_error_copy(&b, NULL);
    cx_error_copy(NULL, NULL);
    assert_int_equal(b.code, CX_ERR_INTEGRITY);
    cx_error_copy(&b, &b);
    assert_string_equal(b.message, "tag mismatch");
}

static void test_copy_terminates(void **state)
{
    (void)state;
    cx_error_t a, b;
    a.code = CX_ERR_CONFLICT;
    a.detail = CX_DETAIL_NONE;
    memset(a.message, 'z', sizeof(a.message)); /* no NUL at all */
    cx_error_copy(&b, &a);
    assert_int_equal(strlen(b.message), CX_ERROR_MESSAGE_MAX - 1);
}

static void test_denial_outcome(void **state)
{
    (void)state;
    for (size_t i = 0; i < NROWS; i++)
        if (cx_code_is_denial(rows[i].code) != rows[i].denial)
            fail_msg("%s: audit outcome should be %s", rows[i].reason,
                     rows[i].denial ? "DENIED" : "FAILED");
    assert_false(cx_code_is_denial(CX_CODE_COUNT_));
    assert_false(cx_code_is_denial((cx_code_t)-1));
}

/* What a caller passes on from a downstream answer, and what it turns into unavailable. */
static void test_dependency_fault(void **state)
{
    (void)state;
    static const cx_code_t faults[] = {CX_ERR_UNAVAILABLE,       CX_ERR_DEADLINE_EXCEEDED,
                                       CX_ERR_INTERNAL,          CX_ERR_UNIMPLEMENTED,
                                       CX_ERR_UNAUTHENTICATED,   CX_ERR_CANCELLED,
                                       CX_ERR_RESOURCE_EXHAUSTED};
    static const cx_code_t answers[] = {CX_ERR_PERMISSION_DENIED, CX_ERR_NOT_FOUND,
                                        CX_ERR_INVALID_ARGUMENT,  CX_ERR_CONFLICT,
                                        CX_ERR_INTEGRITY,         CX_ERR_FAILED_PRECONDITION,
                                        CX_ERR_SSRF_BLOCKED,      CX_ERR_BROWSER_DENIED};
    for (size_t i = 0; i < sizeof(faults) / sizeof(faults[0]); i++)
        assert_true(cx_code_is_dependency_fault(faults[i]));
    for (size_t i = 0; i < sizeof(answers) / sizeof(answers[0]); i++)
        assert_false(cx_code_is_dependency_fault(answers[i]));
    assert_true(cx_code_is_dependency_fault(CX_OK));
    assert_true(cx_code_is_dependency_fault(CX_CODE_COUNT_));
}

static void test_set_detail(void **state)
{
    (void)state;
    cx_error_t err;
    cx_error_clear(&err);
    assert_int_equal(err.detail, CX_DETAIL_NONE);
    assert_false(
        cx_error_set_detail(&err, CX_ERR_UNAUTHENTICATED, CX_DETAIL_JWT_UNKNOWN_KID, "kid %d", 7));
    assert_int_equal(err.code, CX_ERR_UNAUTHENTICATED);
    assert_int_equal(err.detail, CX_DETAIL_JWT_UNKNOWN_KID);
    assert_string_equal(err.message, "kid 7");
    /* cx_error_set always means "no detail", whatever was there before */
    cx_error_set(&err, CX_ERR_UNAUTHENTICATED, "other");
    assert_int_equal(err.detail, CX_DETAIL_NONE);
    /* out of range: no detail rather than a value nobody can name */
    cx_error_set_detail(&err, CX_ERR_UNAVAILABLE, (cx_detail_t)999, NULL);
    assert_int_equal(err.detail, CX_DETAIL_NONE);
    assert_false(cx_error_set_detail(NULL, CX_ERR_INTERNAL, CX_DETAIL_JWT_UNKNOWN_KID, "x"));
}

static void test_clear_and_copy_carry_the_detail(void **state)
{
    (void)state;
    cx_error_t a, b;
    memset(&b, 0, sizeof(b));
    cx_error_set_detail(&a, CX_ERR_UNAUTHENTICATED, CX_DETAIL_JWT_UNKNOWN_KID, "k");
    cx_error_copy(&b, &a);
    assert_int_equal(b.detail, CX_DETAIL_JWT_UNKNOWN_KID);
    cx_error_clear(&b);
    assert_int_equal(b.detail, CX_DETAIL_NONE);
    /* a struct filled by hand with a detail out of range is copied without it */
    a.detail = (cx_detail_t)12345;
    cx_error_copy(&b, &a);
    assert_int_equal(b.detail, CX_DETAIL_NONE);
}

static void test_detail_names(void **state)
{
    (void)state;
    assert_string_equal(cx_detail_name(CX_DETAIL_NONE), "none");
    assert_string_equal(cx_detail_name(CX_DETAIL_JWT_UNKNOWN_KID), "jwt_unknown_kid");
    assert_string_equal(cx_detail_name(CX_DETAIL_COUNT_), "none");
    for (int i = 1; i < CX_DETAIL_COUNT_; i++) {
        const char *n = cx_detail_name((cx_detail_t)i);
        assert_string_not_equal(n, "none");
        for (int j = i + 1; j < CX_DETAIL_COUNT_; j++)
            assert_string_not_equal(n, cx_detail_name((cx_detail_t)j));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_covers_every_code),
        cmocka_unit_test(test_reason_strings),
        cmocka_unit_test(test_reasons_are_unique_snake_case),
        cmocka_unit_test(test_reason_round_trip),
        cmocka_unit_test(test_unknown_reason_is_internal),
        cmocka_unit_test(test_out_of_range_code),
        cmocka_unit_test(test_grpc_mapping),
        cmocka_unit_test(test_http_mapping),
        cmocka_unit_test(test_from_grpc_status),
        cmocka_unit_test(test_grpc_round_trip_where_one_to_one),
        cmocka_unit_test(test_set_returns_false_and_formats),
        cmocka_unit_test(test_set_null_err_and_null_fmt),
        cmocka_unit_test(test_set_truncates),
        cmocka_unit_test(test_set_out_of_range_code_becomes_internal),
        cmocka_unit_test(test_clear),
        cmocka_unit_test(test_copy),
        cmocka_unit_test(test_copy_terminates),
        cmocka_unit_test(test_denial_outcome),
        cmocka_unit_test(test_dependency_fault),
        cmocka_unit_test(test_set_detail),
        cmocka_unit_test(test_clear_and_copy_carry_the_detail),
        cmocka_unit_test(test_detail_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
