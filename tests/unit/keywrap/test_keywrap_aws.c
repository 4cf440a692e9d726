/*
 * keywrap_aws's pure parts: the STS answer reader (AssumeRoleWithWebIdentity's XML) and the one
 * mapping of KMS error answers to credex codes. The calls themselves run against the KMS
 * emulator and an STS double in tests/e2e/test_kms.py; the SigV4 signature is recomputed in
 * tests/unit/http (test_sigv4_signature).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "services/keywrap/keywrap_aws.h"

#define AKID   "ASIAEXAMPLE00001"
#define SECRET "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
#define TOKEN  "IQoJb3JpZ2luX2VjEXAMPLE+/token=="

static const char answer_fmt[] =
    "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
    "  <AssumeRoleWithWebIdentityResult>\n"
    "    <SubjectFromWebIdentityToken>system:serviceaccount:credex:keywrap"
    "</SubjectFromWebIdentityToken>\n"
    "    <Credentials>\n"
    "      <SessionToken>%s</SessionToken>\n"
    "      <SecretAccessKey>%s</SecretAccessKey>\n"
    "      <Expiration>%s</Expiration>\n"
    "      <AccessKeyId>%s</AccessKeyId>%s\n"
    "    </Credentials>\n"
    "  </AssumeRoleWithWebIdentityResult>\n"
    "</AssumeRoleWithWebIdentityResponse>\n";

static bool parse(const char *token, const char *secret, const char *exp, const char *akid,
                  const char *extra, keywrap_aws_creds_t *out, cx_error_t *err)
{
    static char xml[32768];
    int n = snprintf(xml, sizeof(xml), answer_fmt, token, secret, exp, akid, extra);
    assert_true(n > 0 && (size_t)n < sizeof(xml));
    cx_error_clear(err);
    return keywrap_aws_sts_parse(xml, (size_t)n, out, err);
}

static void test_sts_answer_read(void **state)
{
    (void)state;
    keywrap_aws_creds_t c;
    cx_error_t err;
    assert_true(parse(TOKEN, SECRET, "2026-12-05T03:04:05Z", AKID, "", &c, &err));
    assert_string_equal(c.access_key_id, AKID);
    assert_string_equal(c.secret_access_key, SECRET);
    assert_string_equal(c.session_token, TOKEN);
    assert_int_equal(c.expires_ms, INT64_C(1796439845000)); /* date -d 2026-12-05T03:04:05Z +%s */
    assert_true(parse(TOKEN, SECRET, "2026-12-05T03:04:05.123Z", AKID, "", &c, &err));
    assert_int_equal(c.expires_ms, INT64_C(1796439845000));
}

/* Anything but the expected shape is refused, *out untouched, and the message never quotes a
 * value (a half-read secret must not reach a log). */
static void test_sts_answer_refused(void **state)
{
    (void)state;
    static const struct {
        const char *token, *secret, *exp, *akid, *extra;
    } bad[] = {
        {TOKEN, SECRET, "2026-12-05T03:04:05Z", AKID, "<AccessKeyId>" AKID "</AccessKeyId>"},
        {TOKEN, SECRET, "2026-12-05T03:04:05Z", "", ""},
        {"", SECRET, "2026-12-05T03:04:05Z", AKID, ""},
        {TOKEN "<b/>", SECRET, "2026-12-05T03:04:05Z", AKID, ""},
        {TOKEN "&amp;", SECRET, "2026-12-05T03:04:05Z", AKID, ""},
        {TOKEN, SECRET " x", "2026-12-05T03:04:05Z", AKID, ""},
        {TOKEN, SECRET, "2026-12-05 03:04:05Z", AKID, ""},
        {TOKEN, SECRET, "2026-13-05T03:04:05Z", AKID, ""},
        {TOKEN, SECRET, "2026-12-05T03:04:05", AKID, ""},
        {TOKEN, SECRET, "2026-12-05T03:04:05+01:00", AKID, ""},
        {TOKEN, SECRET, "2026-12-05T03:04:05Z", AKID, "</Credentials><Credentials>"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        keywrap_aws_creds_t c;
        memset(&c, 0x5a, sizeof(c));
        cx_error_t err;
        if (parse(bad[i].token, bad[i].secret, bad[i].exp, bad[i].akid, bad[i].extra, &c, &err))
            fail_msg("case %zu accepted", i);
        assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
        assert_null(strstr(err.message, "wJalr"));
        assert_null(strstr(err.message, "IQoJ"));
        assert_null(strstr(err.message, "ASIA"));
        assert_int_equal(c.access_key_id[0], 0x5a);
    }
    static char long_token[KEYWRAP_AWS_TOKEN_MAX + 2];
    memset(long_token, 'A', sizeof(long_token) - 1);
    keywrap_aws_creds_t c;
    cx_error_t err;
    assert_false(parse(long_token, SECRET, "2026-12-05T03:04:05Z", AKID, "", &c, &err));
    long_token[KEYWRAP_AWS_TOKEN_MAX] = '\0';
    assert_true(parse(long_token, SECRET, "2026-12-05T03:04:05Z", AKID, "", &c, &err));
    assert_false(keywrap_aws_sts_parse("", 0, &c, &err));
    assert_false(keywrap_aws_sts_parse("<Credentials>\0</Credentials>", 29, &c, &err));
}

static void test_sts_error_named(void **state)
{
    (void)state;
    static const char xml[] = "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
                              "<Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>"
                              "<Message>Token eyJhbGciOi... is expired</Message></Error>"
                              "<RequestId>x</RequestId></ErrorResponse>";
    keywrap_aws_creds_t c;
    cx_error_t err;
    assert_false(keywrap_aws_sts_parse(xml, sizeof(xml) - 1, &c, &err));
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    assert_string_equal(err.message, "STS refused the web identity exchange "
                                     "(InvalidIdentityToken): a deployment fault");
}

static void test_kms_error_mapping(void **state)
{
    (void)state;
    static const struct {
        long status;
        const char *type;
        cx_code_t code;
        bool retry, auth;
    } cases[] = {
        {400, "InvalidCiphertextException", CX_ERR_INTEGRITY, false, false},
        {400, "com.amazonaws.kms#IncorrectKeyException", CX_ERR_INTEGRITY, false, false},
        {400, "DisabledException", CX_ERR_FAILED_PRECONDITION, false, false},
        {400, "KMSInvalidStateException", CX_ERR_FAILED_PRECONDITION, false, false},
        {400, "NotFoundException", CX_ERR_FAILED_PRECONDITION, false, false},
        {400, "InvalidKeyUsageException", CX_ERR_FAILED_PRECONDITION, false, false},
        {400, "ThrottlingException", CX_ERR_UNAVAILABLE, true, false},
        {400, "LimitExceededException", CX_ERR_UNAVAILABLE, true, false},
        {500, "KMSInternalException", CX_ERR_UNAVAILABLE, true, false},
        {500, "DependencyTimeoutException", CX_ERR_UNAVAILABLE, true, false},
        {503, "no error type", CX_ERR_UNAVAILABLE, true, false},
        {429, NULL, CX_ERR_UNAVAILABLE, true, false},
        {400, "AccessDeniedException", CX_ERR_UNAVAILABLE, false, true},
        {400, "UnrecognizedClientException", CX_ERR_UNAVAILABLE, false, true},
        {400, "InvalidSignatureException", CX_ERR_UNAVAILABLE, false, true},
        {400, "ExpiredTokenException", CX_ERR_UNAVAILABLE, false, true},
        {400, "ValidationException", CX_ERR_UNAVAILABLE, false, false},
        {404, "no error type", CX_ERR_UNAVAILABLE, false, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool retry = !cases[i].retry, auth = !cases[i].auth;
        cx_code_t code = keywrap_aws_error_code(cases[i].status, cases[i].type, &retry, &auth);
        if (code != cases[i].code || retry != cases[i].retry || auth != cases[i].auth)
            fail_msg("case %zu (%s): code %d retry %d auth %d", i,
                     cases[i].type ? cases[i].type : "NULL", code, retry, auth);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sts_answer_read),
        cmocka_unit_test(test_sts_answer_refused),
        cmocka_unit_test(test_sts_error_named),
        cmocka_unit_test(test_kms_error_mapping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
