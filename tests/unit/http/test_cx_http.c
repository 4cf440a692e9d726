/* Unit tests of common/http: the bounded response buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "common/http/cx_http.h"

static void test_appends_and_terminates(void **state)
{
    (void)state;
    cx_http_buf_t b = {.max = 10};
    char chunk[] = "abcd";
    assert_int_equal(cx_http_buf_write(chunk, 1, 4, &b), 4);
    assert_int_equal(cx_http_buf_write(chunk, 2, 2, &b), 4);
    assert_int_equal(b.len, 8);
    assert_string_equal(b.data, "abcdabcd");
    assert_false(b.too_big);
    cx_http_buf_reset(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.max, 10);
    cx_http_buf_reset(NULL);
}

static void test_refuses_past_max(void **state)
{
    (void)state;
    cx_http_buf_t b = {.max = 10};
    char chunk[16] = "0123456789ABCDE";
    assert_int_equal(cx_http_buf_write(chunk, 1, 10, &b), 10); /* exactly max: fine */
    assert_int_equal(cx_http_buf_write(chunk, 1, 1, &b), 0);   /* one more: abort */
    assert_true(b.too_big);
    assert_int_equal(b.len, 10);
    cx_http_buf_reset(&b);
    /* size * nmemb overflow must not wrap into a small write */
    cx_http_buf_t c = {.max = 10};
    assert_int_equal(cx_http_buf_write(chunk, SIZE_MAX / 2 + 1, 2, &c), 0);
    assert_null(c.data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_appends_and_terminates),
        cmocka_unit_test(test_refuses_past_max),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
