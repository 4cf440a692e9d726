/*
 * Unit tests of common/mdb's lease (mdb_lease.h) against the fixture's real FerretDB: a single
 * holder, a second holder refused while unexpired, a larger token after expiry, release, 8
 * threads racing for one key (exactly one winner per round, tokens strictly increasing: FerretDB
 * lets concurrent conditional updates all match, so a lease built on them fails this), check,
 * the sweep of old epochs, and an outage (unavailable, not acquired).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/mdb/mdb.h"
#include "common/mdb/mdb_lease.h"
#include "tests/unit/kit/testkit.h"

static char uri[256];
static char dbname[64];

static mdb_t *open_db(void)
{
    cx_error_t err;
    mdb_t *m = tk_mdb_open(uri, dbname, 3000);
    if (!mdb_init_indexes(m, NULL, NULL, NULL, &err))
        fail_msg("init_indexes: %s", err.message);
    return m;
}

static mdb_lease_grant_t acquire(mdb_t *m, const char *key, const char *holder, unsigned ttl_ms)
{
    cx_error_t err;
    mdb_lease_grant_t g;
    memset(&g, 0xA5, sizeof(g));
    if (!mdb_lease_acquire(m, key, holder, ttl_ms, &g, &err))
        fail_msg("acquire: %s", err.message);
    return g;
}

static bool check(mdb_t *m, const char *key, uint64_t token)
{
    cx_error_t err;
    bool valid = false;
    if (!mdb_lease_check(m, key, token, &valid, &err))
        fail_msg("check: %s", err.message);
    return valid;
}

/* holder acquires key over the older token old: a larger token, and only it checks. */
static mdb_lease_grant_t expect_newer(mdb_t *m, const char *key, const char *holder, uint64_t old)
{
    mdb_lease_grant_t g = acquire(m, key, holder, 60000);
    assert_true(g.acquired);
    assert_true(g.token > old);
    assert_true(check(m, key, g.token));
    assert_false(check(m, key, old));
    return g;
}

static void test_single_and_second_holder(void **state)
{
    (void)state;
    mdb_t *m = open_db();
    int64_t t0 = mdb_now_ms();
    mdb_lease_grant_t a = acquire(m, "single", "alice", 60000);
    assert_true(a.acquired);
    assert_true(a.token >= 1);
    assert_true(a.expires_at_ms >= t0 + 60000);
    assert_true(check(m, "single", a.token));
    /* Another holder: refused, told who holds it until when. */
    mdb_lease_grant_t b = acquire(m, "single", "bob", 60000);
    assert_false(b.acquired);
    assert_int_equal(b.token, a.token);
    assert_int_equal(b.expires_at_ms, a.expires_at_ms);
    assert_true(check(m, "single", a.token));
    /* The same holder renews: a larger token, the old one no longer checks. */
    expect_newer(m, "single", "alice", a.token);
    /* Other keys are independent. */
    mdb_lease_grant_t o = acquire(m, "single-other", "bob", 60000);
    assert_true(o.acquired);
    mdb_close(m);
}

static void test_expiry_gives_larger_token(void **state)
{
    (void)state;
    mdb_t *m = open_db();
    mdb_lease_grant_t a = acquire(m, "expiry", "alice", 1000);
    assert_true(a.acquired);
    assert_false(acquire(m, "expiry", "bob", 60000).acquired);
    usleep(1200 * 1000);
    assert_false(check(m, "expiry", a.token));
    expect_newer(m, "expiry", "bob", a.token);
    mdb_close(m);
}

static void test_release(void **state)
{
    (void)state;
    cx_error_t err;
    mdb_t *m = open_db();
    mdb_lease_grant_t a = acquire(m, "release", "alice", 60000);
    assert_true(a.acquired);
    assert_false(acquire(m, "release", "bob", 60000).acquired);
    assert_true(mdb_lease_release(m, "release", a.token, &err));
    assert_false(check(m, "release", a.token));
    mdb_lease_grant_t b = expect_newer(m, "release", "bob", a.token);
    /* A stale release (alice's old token) does not free bob's lease. */
    assert_true(mdb_lease_release(m, "release", a.token, &err));
    assert_true(check(m, "release", b.token));
    assert_false(acquire(m, "release", "alice", 60000).acquired);
    mdb_close(m);
}

static size_t count_docs(mdb_t *m, const char *key)
{
    cx_error_t err;
    bson_error_t berr;
    mongoc_client_t *c = mdb_client_pop(m, &err);
    assert_non_null(c);
    mongoc_collection_t *col = mdb_collection(m, c, MDB_COLL_LEASES);
    bson_t *filter = BCON_NEW("key", BCON_UTF8(key));
    int64_t n = mongoc_collection_count_documents(col, filter, NULL, NULL, NULL, &berr);
    assert_true(n >= 0);
    bson_destroy(filter);
    mongoc_collection_destroy(col);
    mdb_client_push(m, c);
    return (size_t)n;
}

static void test_sweep_keeps_newest(void **state)
{
    (void)state;
    cx_error_t err;
    mdb_t *m = open_db();
    uint64_t last = 0;
    for (int i = 0; i < 5; i++) {
        mdb_lease_grant_t g = acquire(m, "sweep", "alice", 60000);
        assert_true(g.acquired);
        assert_true(g.token > last);
        last = g.token;
    }
    assert_int_equal(count_docs(m, "sweep"), 1);
    /* Released, the newest stays: the epoch never goes back. */
    assert_true(mdb_lease_release(m, "sweep", last, &err));
    assert_int_equal(count_docs(m, "sweep"), 1);
    mdb_lease_grant_t g = acquire(m, "sweep", "bob", 60000);
    assert_true(g.acquired);
    assert_int_equal(g.token, last + 1);
    mdb_close(m);
}

/* ---- the race -------------------------------------------------------------------------- */

#define RACERS 8
#define ROUNDS 20

typedef struct race {
    mdb_t *m;
    pthread_barrier_t barrier;
    mdb_lease_grant_t grants[ROUNDS][RACERS];
    bool failed[ROUNDS][RACERS];
} race_t;

typedef struct racer {
    race_t *race;
    int id;
} racer_t;

static void *racer_main(void *arg)
{
    racer_t *r = arg;
    race_t *race = r->race;
    char holder[32];
    snprintf(holder, sizeof(holder), "racer-%d", r->id);
    for (int round = 0; round < ROUNDS; round++) {
        cx_error_t err;
        mdb_lease_grant_t *g = &race->grants[round][r->id];
        pthread_barrier_wait(&race->barrier);
        race->failed[round][r->id] = !mdb_lease_acquire(race->m, "race", holder, 60000, g, &err);
        pthread_barrier_wait(&race->barrier);
        /* The winner gives the lease back so that the next round races for the next epoch. */
        if (!race->failed[round][r->id] && g->acquired &&
            !mdb_lease_release(race->m, "race", g->token, &err))
            race->failed[round][r->id] = true;
        pthread_barrier_wait(&race->barrier);
    }
    return NULL;
}

static void test_race_one_winner_per_epoch(void **state)
{
    (void)state;
    static race_t race; /* large: not on the stack */
    racer_t racers[RACERS];
    pthread_t th[RACERS];
    memset(&race, 0, sizeof(race));
    race.m = open_db();
    pthread_barrier_init(&race.barrier, NULL, RACERS);
    for (int i = 0; i < RACERS; i++) {
        racers[i] = (racer_t){&race, i};
        assert_int_equal(pthread_create(&th[i], NULL, racer_main, &racers[i]), 0);
    }
    for (int i = 0; i < RACERS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&race.barrier);
    uint64_t last = 0;
    for (int round = 0; round < ROUNDS; round++) {
        int winners = 0;
        uint64_t token = 0;
        for (int i = 0; i < RACERS; i++) {
            assert_false(race.failed[round][i]);
            if (race.grants[round][i].acquired) {
                winners++;
                token = race.grants[round][i].token;
            }
        }
        if (winners != 1)
            fail_msg("round %d: %d winners", round, winners);
        assert_true(token > last);
        /* Every loser saw a token no larger than the winner's. */
        for (int i = 0; i < RACERS; i++)
            assert_true(race.grants[round][i].token <= token);
        last = token;
    }
    mdb_close(race.m);
}

static void test_outage_not_acquired(void **state)
{
    (void)state;
    cx_error_t err;
    /* Port 9 (discard) on loopback: nothing listens. */
    mdb_t *m = tk_mdb_open("mongodb://127.0.0.1:9/", dbname, 300);
    mdb_lease_grant_t g = {.acquired = true, .token = 42};
    assert_false(mdb_lease_acquire(m, "outage", "alice", 60000, &g, &err));
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    assert_true(g.acquired); /* untouched on failure */
    assert_int_equal(g.token, 42);
    bool valid = true;
    assert_false(mdb_lease_check(m, "outage", 1, &valid, &err));
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    assert_true(valid);
    assert_false(mdb_lease_release(m, "outage", 1, &err));
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    mdb_close(m);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    cx_error_t err;
    char longkey[MDB_LEASE_KEY_MAX + 2];
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    mdb_t *m = open_db();
    mdb_lease_grant_t g;
    assert_false(mdb_lease_acquire(m, longkey, "alice", 1000, &g, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_null(strstr(err.message, "kkkk"));
    assert_false(mdb_lease_acquire(m, "", "alice", 1000, &g, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_false(mdb_lease_acquire(m, "k", "", 1000, &g, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_false(mdb_lease_acquire(m, "k", "alice", 0, &g, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    longkey[MDB_LEASE_KEY_MAX] = '\0'; /* exactly the limit: accepted */
    assert_true(acquire(m, longkey, "alice", 1000).acquired);
    mdb_close(m);
}

int main(void)
{
    snprintf(dbname, sizeof(dbname), "mdbleasetest_%d", (int)getpid());
    if (!tk_ferretdb_fixture_uri(uri, sizeof(uri)))
        return 1;
    mdb_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_and_second_holder),
        cmocka_unit_test(test_expiry_gives_larger_token),
        cmocka_unit_test(test_release),
        cmocka_unit_test(test_sweep_keeps_newest),
        cmocka_unit_test(test_race_one_winner_per_epoch),
        cmocka_unit_test(test_outage_not_acquired),
        cmocka_unit_test(test_bad_arguments),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mongoc_cleanup();
    return rc;
}
