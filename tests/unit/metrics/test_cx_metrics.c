/* common/metrics: series identity, counters, histogram buckets, label escaping, the bound on
 * series, concurrent updates, and the text rendering (also parsed by prometheus_client in
 * tests/e2e/test_metrics.py). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/metrics/cx_metrics.h"

static const char *const k1[] = {"op"};

static char *render(void)
{
    char *out = NULL;
    size_t n = cx_metrics_render(&out);
    assert_non_null(out);
    assert_int_equal(strlen(out), n);
    return out;
}

static void test_same_series_same_metric(void **state)
{
    (void)state;
    const char *a[] = {"find"}, *b[] = {"insert"};
    cx_metric_t *m1 = cx_metrics_counter("t_same_total", "h", k1, a, 1);
    cx_metric_t *m2 = cx_metrics_counter("t_same_total", "h", k1, a, 1);
    cx_metric_t *m3 = cx_metrics_counter("t_same_total", "h", k1, b, 1);
    assert_non_null(m1);
    assert_ptr_equal(m1, m2);
    assert_ptr_not_equal(m1, m3);
    cx_metrics_add(m1, 2);
    cx_metrics_add(m2, 3);
    assert_int_equal(cx_metrics_value(m1), 5);
    assert_int_equal(cx_metrics_value(m3), 0);
    /* A histogram of a counter's name and labels is refused rather than rendered twice. */
    assert_null(cx_metrics_histogram("t_same_total", "h", &cx_metrics_sizes, k1, a, 1));
    cx_metrics_add(NULL, 1); /* accepted, nothing happens */
    cx_metrics_observe(NULL, 1);
}

static void test_bad_labels_refused(void **state)
{
    (void)state;
    const char *bad_key[] = {"Op"}, *v[] = {"x"};
    assert_null(cx_metrics_counter("t_bad_total", "h", bad_key, v, 1));
    char big[CX_METRICS_LABELS_MAX];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    const char *vb[] = {big};
    assert_null(cx_metrics_counter("t_bad_total", "h", k1, vb, 1));
    const char *five_k[] = {"a", "b", "c", "d", "e"}, *five_v[] = {"1", "2", "3", "4", "5"};
    assert_null(cx_metrics_counter("t_bad_total", "h", five_k, five_v, 5));
}

static void test_histogram_buckets(void **state)
{
    (void)state;
    const char *v[] = {"h1"};
    cx_metric_t *h =
        cx_metrics_histogram("t_hist_seconds", "lat", &cx_metrics_latency_us, k1, v, 1);
    assert_non_null(h);
    cx_metrics_observe(h, 100);      /* exactly a bound: le="0.0001" */
    cx_metrics_observe(h, 101);      /* next bucket: le="0.00025" */
    cx_metrics_observe(h, 20000000); /* beyond the last bound: +Inf only */
    assert_int_equal(cx_metrics_value(h), 3);
    char *out = render();
    assert_non_null(strstr(out, "# TYPE t_hist_seconds histogram\n"));
    assert_non_null(strstr(out, "t_hist_seconds_bucket{op=\"h1\",le=\"0.000100\"} 1\n"));
    assert_non_null(strstr(out, "t_hist_seconds_bucket{op=\"h1\",le=\"0.000250\"} 2\n"));
    assert_non_null(strstr(out, "t_hist_seconds_bucket{op=\"h1\",le=\"10.000000\"} 2\n"));
    assert_non_null(strstr(out, "t_hist_seconds_bucket{op=\"h1\",le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(out, "t_hist_seconds_sum{op=\"h1\"} 20.000201\n"));
    assert_non_null(strstr(out, "t_hist_seconds_count{op=\"h1\"} 3\n"));
    free(out);
}

static void test_render_counters_and_escapes(void **state)
{
    (void)state;
    const char *v[] = {"a\"b\\c\nd"};
    cx_metrics_add(cx_metrics_counter("t_esc_total", "escapes", k1, v, 1), 7);
    cx_metrics_add(cx_metrics_counter("t_nolabel_total", "no labels", NULL, NULL, 0), 1);
    char *out = render();
    assert_non_null(strstr(out, "# HELP t_esc_total escapes\n# TYPE t_esc_total counter\n"));
    assert_non_null(strstr(out, "t_esc_total{op=\"a\\\"b\\\\c\\nd\"} 7\n"));
    assert_non_null(strstr(out, "\nt_nolabel_total 1\n"));
    /* One HELP per family, however many series. */
    const char *w[] = {"other"};
    cx_metrics_add(cx_metrics_counter("t_esc_total", "escapes", k1, w, 1), 1);
    free(out);
    out = render();
    const char *first = strstr(out, "# HELP t_esc_total");
    assert_non_null(first);
    assert_null(strstr(first + 1, "# HELP t_esc_total"));
    free(out);
}

static void test_client_call_and_cache_helpers(void **state)
{
    (void)state;
    cx_metrics_client_call(CX_METRICS_DB, "coll_x", "find", "ok", 300);
    cx_metrics_client_call(CX_METRICS_DB, "coll_x", "find", "unavailable", 300);
    cx_metrics_cache("t_cache", true);
    cx_metrics_cache("t_cache", false);
    cx_metrics_cache("t_cache", false);
    char *out = render();
    assert_non_null(
        strstr(out, "credex_db_calls_total{target=\"coll_x\",op=\"find\",code=\"ok\"} 1\n"));
    assert_non_null(strstr(
        out, "credex_db_calls_total{target=\"coll_x\",op=\"find\",code=\"unavailable\"} 1\n"));
    assert_non_null(
        strstr(out, "credex_db_duration_seconds_count{target=\"coll_x\",op=\"find\"} 2\n"));
    assert_non_null(
        strstr(out, "credex_cache_lookups_total{cache=\"t_cache\",result=\"hit\"} 1\n"));
    assert_non_null(
        strstr(out, "credex_cache_lookups_total{cache=\"t_cache\",result=\"miss\"} 2\n"));
    free(out);
}

#define THREADS 4
#define ADDS    20000

static void *adder(void *arg)
{
    (void)arg;
    const char *v[] = {"race"};
    for (int i = 0; i < ADDS; i++) {
        cx_metrics_add(cx_metrics_counter("t_race_total", "h", k1, v, 1), 1);
        cx_metrics_observe(
            cx_metrics_histogram("t_race_seconds", "h", &cx_metrics_latency_us, k1, v, 1), 1);
    }
    return NULL;
}

static void test_concurrent_updates_are_not_lost(void **state)
{
    (void)state;
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, adder, NULL), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    const char *v[] = {"race"};
    assert_int_equal(cx_metrics_value(cx_metrics_counter("t_race_total", "h", k1, v, 1)),
                     THREADS * ADDS);
    assert_int_equal(cx_metrics_value(cx_metrics_histogram("t_race_seconds", "h",
                                                           &cx_metrics_latency_us, k1, v, 1)),
                     THREADS * ADDS);
}

/* Last: fills the registry. Beyond CX_METRICS_MAX_SERIES a series is not recorded (NULL), and
 * the ones that exist keep working. */
static void test_series_are_bounded(void **state)
{
    (void)state;
    const char *v[] = {"h1"};
    cx_metric_t *old = cx_metrics_counter("t_same_total", "h", k1, (const char *[]){"find"}, 1);
    size_t created = 0, refused = 0;
    for (int i = 0; i < CX_METRICS_MAX_SERIES + 10; i++) {
        char val[16];
        snprintf(val, sizeof(val), "%d", i);
        const char *vv[] = {val};
        if (cx_metrics_counter("t_many_total", "h", k1, vv, 1) != NULL)
            created++;
        else
            refused++;
    }
    assert_true(refused >= 10);
    assert_true(created < CX_METRICS_MAX_SERIES);
    assert_ptr_equal(cx_metrics_counter("t_same_total", "h", k1, (const char *[]){"find"}, 1), old);
    assert_non_null(
        cx_metrics_histogram("t_hist_seconds", "lat", &cx_metrics_latency_us, k1, v, 1));
    char *out = render();
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_series_same_metric),
        cmocka_unit_test(test_bad_labels_refused),
        cmocka_unit_test(test_histogram_buckets),
        cmocka_unit_test(test_render_counters_and_escapes),
        cmocka_unit_test(test_client_call_and_cache_helpers),
        cmocka_unit_test(test_concurrent_updates_are_not_lost),
        cmocka_unit_test(test_series_are_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
