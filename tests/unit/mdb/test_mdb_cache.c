/*
 * Unit tests of common/mdb's document cache (mdb_cache) against a real FerretDB: the ctest
 * fixture's (mdb_ferretdb) for hits, misses, the size bound, own writes, the watcher's
 * evictions (changed, gone, a direct write within the bound, both read modes), the fill race
 * and concurrent use; a FerretDB of the test's own (tk_ferretdb) that it stops and freezes for
 * the fail-closed rules. Bounds are the shipped defaults (P 100 ms, B 300 ms) unless a test
 * says otherwise; a bound is asserted on the start times of lookups (every lookup that starts
 * B after a write sees it), so that a test thread delayed by a loaded machine cannot fail it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/mdb/mdb.h"
#include "common/mdb/mdb_cache.h"
#include "tests/unit/kit/testkit.h"

#define POLL_MS  100
#define BOUND_MS 300
#define COLL     "mdb_cache_docs"

static char uri[256];
static char dbname[64];

static mdb_t *open_db(const char *u, unsigned timeout_ms)
{
    return tk_mdb_open(u, dbname, timeout_ms);
}

/* What on_state was told, in order. */
typedef struct states {
    pthread_mutex_t mu;
    int n;
    bool seen[64];
    char why[256];
} states_t;

static void on_state(void *ctx, bool enabled, const cx_error_t *why)
{
    states_t *s = ctx;
    pthread_mutex_lock(&s->mu);
    if (s->n < 64)
        s->seen[s->n++] = enabled;
    if (why)
        snprintf(s->why, sizeof(s->why), "%s", why->message);
    pthread_mutex_unlock(&s->mu);
}

static mdb_cache_t *open_cache(mdb_t *m, unsigned entries, mdb_cache_read_t read, states_t *st)
{
    mdb_cache_t *c = NULL;
    cx_error_t err;
    mdb_cache_options_t o = {.coll = COLL,
                             .max_entries = entries,
                             .bound_ms = BOUND_MS,
                             .poll_ms = POLL_MS,
                             .read = read,
                             .on_state = st ? on_state : NULL,
                             .state_ctx = st};
    if (!mdb_cache_new(&c, m, &o, &err))
        fail_msg("mdb_cache_new: %s", err.message);
    return c;
}

static mdb_cache_stats_t stats_of(mdb_cache_t *c)
{
    mdb_cache_stats_t s;
    mdb_cache_stats(c, &s);
    return s;
}

static void wait_enabled(mdb_cache_t *c, bool enabled, int64_t bound_ms)
{
    int64_t t0 = tk_mono_ms();
    while (stats_of(c).enabled != enabled && tk_mono_ms() - t0 < bound_ms)
        usleep(2000);
    assert_true(stats_of(c).enabled == enabled);
}

/* {_id: id, v: v, pad: "..."} (written, replacing any document of that id). */
static void put_doc(mdb_t *m, const char *id, int64_t v)
{
    cx_error_t err;
    bson_error_t berr;
    mongoc_client_t *c = mdb_client_pop(m, &err);
    assert_non_null(c);
    mongoc_collection_t *col = mdb_collection(m, c, COLL);
    bson_t *f = BCON_NEW("_id", BCON_UTF8(id));
    bson_t *d = BCON_NEW("_id", BCON_UTF8(id), "v", BCON_INT64(v), "pad",
                         BCON_UTF8("a document of a few hundred bytes, like a secret's metadata, "
                                   "so that copies and comparisons cost what they will cost"));
    bson_t *opts = BCON_NEW("upsert", BCON_BOOL(true));
    if (!mongoc_collection_replace_one(col, f, d, opts, NULL, &berr))
        fail_msg("replace %s: %s", id, berr.message);
    bson_destroy(opts);
    bson_destroy(d);
    bson_destroy(f);
    mongoc_collection_destroy(col);
    mdb_client_push(m, c);
}

static void del_doc(mdb_t *m, const char *id)
{
    cx_error_t err;
    mongoc_client_t *c = mdb_client_pop(m, &err);
    assert_non_null(c);
    bson_t *f = BCON_NEW("_id", BCON_UTF8(id));
    assert_true(mdb_delete_one(m, c, COLL, f, &err));
    bson_destroy(f);
    mdb_client_push(m, c);
}

/* find through the cache: v of the document (-1: none); *hit whether the cache answered. */
static int64_t find_v(mdb_cache_t *cache, mdb_t *m, const char *id, bool *hit, cx_error_t *err,
                      bool *ok)
{
    bson_t out;
    bool found = false, h = false;
    bson_iter_t it;
    mongoc_client_t *c = mdb_client_pop(m, err);
    *ok = c && mdb_cache_find(cache, c, id, &out, &found, &h, err);
    mdb_client_push(m, c);
    if (hit)
        *hit = h;
    if (!*ok || !found)
        return -1;
    assert_true(bson_iter_init_find(&it, &out, "_id"));
    assert_string_equal(bson_iter_utf8(&it, NULL), id);
    assert_true(bson_iter_init_find(&it, &out, "v"));
    int64_t v = bson_iter_as_int64(&it);
    bson_destroy(&out);
    return v;
}

static int64_t find_ok(mdb_cache_t *cache, mdb_t *m, const char *id, bool *hit)
{
    cx_error_t err;
    bool ok = false;
    int64_t v = find_v(cache, m, id, hit, &err, &ok);
    if (!ok)
        fail_msg("find %s: %s", id, err.message);
    return v;
}

/* ---- options ----------------------------------------------------------------------------- */

static void test_bad_options(void **state)
{
    (void)state;
    mdb_t *m = open_db(uri, 3000);
    mdb_cache_t *c = NULL;
    cx_error_t err;
    mdb_cache_options_t bad[] = {
        {.coll = COLL, .max_entries = 0, .bound_ms = 300, .poll_ms = 100},
        {.coll = COLL, .max_entries = 8, .bound_ms = 100, .poll_ms = 100},
        {.coll = COLL, .max_entries = 8, .bound_ms = 300, .poll_ms = 0},
        {.coll = "", .max_entries = 8, .bound_ms = 300, .poll_ms = 100},
        {.coll = COLL, .max_entries = MDB_CACHE_ENTRIES_MAX + 1, .bound_ms = 300, .poll_ms = 100},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(mdb_cache_new(&c, m, &bad[i], &err));
        assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
        assert_null(c);
    }
    mdb_cache_free(NULL);
    mdb_cache_evict(NULL, "x");
    mdb_cache_stats_t s;
    mdb_cache_stats(NULL, &s);
    assert_int_equal(s.hits, 0);
    mdb_close(m);
}

/* ---- hits, misses, size ------------------------------------------------------------------ */

/* A miss reads the database and fills; the next lookups are hits with the same bytes; absence
 * is not cached; a document too large to cache is still read. */
static void test_hit_and_miss(void **state)
{
    (void)state;
    mdb_t *m = open_db(uri, 3000);
    states_t st = {.mu = PTHREAD_MUTEX_INITIALIZER};
    mdb_cache_t *c = open_cache(m, 64, MDB_CACHE_READ_AUTO, &st);
    wait_enabled(c, true, 2000);
    put_doc(m, "hm-1", 1);
    bool hit = true;
    assert_int_equal(find_ok(c, m, "hm-1", &hit), 1);
    assert_false(hit);
    assert_int_equal(find_ok(c, m, "hm-1", &hit), 1);
    assert_true(hit);
    assert_int_equal(find_ok(c, m, "hm-none", &hit), -1);
    assert_false(hit);
    assert_int_equal(find_ok(c, m, "hm-none", &hit), -1);
    assert_false(hit);
    mdb_cache_stats_t s = stats_of(c);
    assert_int_equal(s.hits, 1);
    assert_int_equal(s.misses, 3);
    assert_int_equal(s.fills, 1);
    assert_int_equal(s.entries, 1);
    assert_true(s.enabled);

    /* Larger than MDB_CACHE_DOC_MAX: answered, never cached. */
    char big[MDB_CACHE_DOC_MAX + 64];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    cx_error_t err;
    mongoc_client_t *cl = mdb_client_pop(m, &err);
    bson_t *d = BCON_NEW("_id", BCON_UTF8("hm-big"), "v", BCON_INT64(7), "pad", BCON_UTF8(big));
    bson_t *f = BCON_NEW("_id", BCON_UTF8("hm-big"));
    assert_true(mdb_delete_one(m, cl, COLL, f, &err));
    assert_true(mdb_insert_one(m, cl, COLL, d, &err));
    mdb_client_push(m, cl);
    assert_int_equal(find_ok(c, m, "hm-big", &hit), 7);
    assert_int_equal(find_ok(c, m, "hm-big", &hit), 7);
    assert_false(hit);
    bson_destroy(d);
    bson_destroy(f);
    mdb_cache_free(c);
    pthread_mutex_lock(&st.mu);
    assert_true(st.n >= 1 && st.seen[0]); /* told once it answered */
    pthread_mutex_unlock(&st.mu);
    mdb_close(m);
}

/* No more than max_entries documents are held: the others are answered from the database. */
static void test_bounded_size(void **state)
{
    (void)state;
    mdb_t *m = open_db(uri, 3000);
    mdb_cache_t *c = open_cache(m, 4, MDB_CACHE_READ_AUTO, NULL);
    wait_enabled(c, true, 2000);
    char id[16];
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof(id), "bs-%d", i);
        put_doc(m, id, i);
    }
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 10; i++) {
            snprintf(id, sizeof(id), "bs-%d", i);
            assert_int_equal(find_ok(c, m, id, NULL), i);
        }
    mdb_cache_stats_t s = stats_of(c);
    assert_true(s.entries <= 4);
    assert_true(s.fills <= 4 + s.expired);
    assert_true(s.full >= 6);
    assert_int_equal(s.hits + s.misses, 20);
    mdb_cache_free(c);
    mdb_close(m);
}

/* ---- coherence ----------------------------------------------------------------------------- */

/* A write of this process evicts the id: the next lookup sees it, whatever the watcher does. */
static void test_own_write_at_once(void **state)
{
    (void)state;
    mdb_t *m = open_db(uri, 3000);
    mdb_cache_t *c = open_cache(m, 64, MDB_CACHE_READ_AUTO, NULL);
    wait_enabled(c, true, 2000);
    put_doc(m, "ow-1", 1);
    bool hit = false;
    find_ok(c, m, "ow-1", NULL);
    assert_int_equal(find_ok(c, m, "ow-1", &hit), 1);
    assert_true(hit);
    for (int64_t v = 2; v < 12; v++) {
        mdb_cache_evict(c, "ow-1");
        put_doc(m, "ow-1", v);
        mdb_cache_evict(c, "ow-1");
        assert_int_equal(find_ok(c, m, "ow-1", NULL), v);
        assert_int_equal(find_ok(c, m, "ow-1", &hit), v);
    }
    mdb_cache_evict(c, "ow-1");
    del_doc(m, "ow-1");
    mdb_cache_evict(c, "ow-1");
    assert_int_equal(find_ok(c, m, "ow-1", NULL), -1);
    assert_true(stats_of(c).evictions >= 10);
    mdb_cache_free(c);
    mdb_close(m);
}

/* Changes made behind the cache's back (another process, a direct write), to an entry in use:
 * every lookup that starts B after the write returns sees it. Returns the start of the last
 * lookup that still saw the old state, relative to the write's return (negative: none). */
static int64_t lag_of_direct_write(mdb_cache_t *c, mdb_t *m, const char *id, int64_t old_v,
                                   int64_t new_v, bool delete)
{
    /* In use: hit at least once per poll period, so that the watcher re-reads it. */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(find_ok(c, m, id, NULL), old_v);
        usleep(20000);
    }
    if (delete)
        del_doc(m, id);
    else
        put_doc(m, id, new_v);
    int64_t written = tk_mono_ms(), last_old = -1;
    while (tk_mono_ms() - written < 2 * BOUND_MS) {
        int64_t started = tk_mono_ms();
        int64_t v = find_ok(c, m, id, NULL);
        if (v == old_v)
            last_old = started - written;
        else
            assert_int_equal(v, delete ? -1 : new_v);
        usleep(3000);
    }
    return last_old;
}

/* Does the server say it would scan the collection for an _id $in (FerretDB 1.24's SQLite
 * backend: explain's filterPushdown false)? */
static bool server_scans_id_in(mdb_t *m)
{
    cx_error_t err;
    bson_error_t berr;
    bson_t reply;
    bson_iter_t it;
    mongoc_client_t *c = mdb_client_pop(m, &err);
    assert_non_null(c);
    bson_t *cmd = BCON_NEW("explain", "{", "find", BCON_UTF8(COLL), "filter", "{", "_id", "{",
                           "$in", "[", BCON_UTF8("x"), BCON_UTF8("y"), "]", "}", "}", "}");
    assert_true(mongoc_client_command_simple(c, dbname, cmd, NULL, &reply, &berr));
    bool scans = bson_iter_init_find(&it, &reply, "filterPushdown") && BSON_ITER_HOLDS_BOOL(&it) &&
                 !bson_iter_bool(&it);
    bson_destroy(&reply);
    bson_destroy(cmd);
    mdb_client_push(m, c);
    return scans;
}

static void watcher_sees_direct_writes(mdb_cache_read_t read)
{
    mdb_t *m = open_db(uri, 3000);
    mdb_cache_t *c = open_cache(m, 64, read, NULL);
    wait_enabled(c, true, 2000);
    char id[32];
    snprintf(id, sizeof(id), "dw-%d", (int)read);
    put_doc(m, id, 1);
    find_ok(c, m, id, NULL);
    int64_t worst = -1;
    for (int64_t v = 2; v < 6; v++) {
        int64_t lag = lag_of_direct_write(c, m, id, v - 1, v, false);
        worst = lag > worst ? lag : worst;
    }
    int64_t gone = lag_of_direct_write(c, m, id, 5, -1, true);
    mdb_cache_stats_t s = stats_of(c);
    printf("read mode %d: a direct write was last missed by a lookup %lld ms after it, a delete "
           "%lld ms after it (bound %d ms); %llu watcher reads in %llu queries, %llu evictions, "
           "%llu hits\n",
           (int)s.mode, (long long)worst, (long long)gone, BOUND_MS, (unsigned long long)s.reads,
           (unsigned long long)s.queries, (unsigned long long)s.evictions,
           (unsigned long long)s.hits);
    assert_true(worst < BOUND_MS);
    assert_true(gone < BOUND_MS);
    /* The watcher found them: with ids sharing a query it re-reads an entry in use every round,
     * so none expired first; with a query per id, at the latest when the entry would expire. */
    if (s.mode == MDB_CACHE_READ_IN)
        assert_true(s.evictions >= 5);
    else
        assert_true(s.evictions + s.expired >= 5);
    assert_true(s.hits > 10);
    if (read != MDB_CACHE_READ_AUTO)
        assert_int_equal(s.mode, read);
    else /* one read per id where the server would scan the collection for $in */
        assert_int_equal(s.mode, server_scans_id_in(m) ? MDB_CACHE_READ_EACH : MDB_CACHE_READ_IN);
    assert_true(s.mode == MDB_CACHE_READ_IN ? s.queries <= s.reads : s.queries == s.reads);
    mdb_cache_free(c);
    mdb_close(m);
}

static void test_watcher_direct_writes_auto(void **state)
{
    (void)state;
    watcher_sees_direct_writes(MDB_CACHE_READ_AUTO);
}

static void test_watcher_direct_writes_in(void **state)
{
    (void)state;
    watcher_sees_direct_writes(MDB_CACHE_READ_IN);
}

/* An entry that answers nothing is not re-read; it expires after B, so that a write behind
 * its back is still seen within the bound, and the watcher reads nothing for it. */
static void test_unused_entry_expires(void **state)
{
    (void)state;
    mdb_t *m = open_db(uri, 3000);
    mdb_cache_t *c = open_cache(m, 64, MDB_CACHE_READ_AUTO, NULL);
    wait_enabled(c, true, 2000);
    put_doc(m, "ue-1", 1);
    assert_int_equal(find_ok(c, m, "ue-1", NULL), 1); /* filled, never hit */
    put_doc(m, "ue-1", 2);
    int64_t written = tk_mono_ms();
    usleep(BOUND_MS * 1000);
    assert_true(tk_mono_ms() - written >= BOUND_MS);
    bool hit = true;
    assert_int_equal(find_ok(c, m, "ue-1", &hit), 2);
    assert_false(hit);
    usleep(2 * POLL_MS * 1000);
    mdb_cache_stats_t s = stats_of(c);
    assert_int_equal(s.reads, 0);
    assert_true(s.expired >= 1);
    mdb_cache_free(c);
    mdb_close(m);
}

/* ---- the fill race ------------------------------------------------------------------------- */

/* A fill whose miss came before an eviction of its id (or of any id of its bucket) is
 * refused: it may have read the document from before the write that evicted. */
static void test_fill_after_eviction_is_refused(void **state)
{
    (void)state;
    mdb_t *m = open_db(uri, 3000);
    mdb_cache_t *c = open_cache(m, 64, MDB_CACHE_READ_AUTO, NULL);
    wait_enabled(c, true, 2000);
    bson_t *old = BCON_NEW("_id", BCON_UTF8("fr-1"), "v", BCON_INT64(1));
    bson_t out;
    mdb_cache_ticket_t t, t2;
    assert_false(mdb_cache_get(c, "fr-1", &out, &t));
    mdb_cache_evict(c, "fr-1"); /* a writer of this process, between the miss and the fill */
    assert_false(mdb_cache_put(c, "fr-1", old, &t));
    assert_false(mdb_cache_get(c, "fr-1", &out, &t2));
    assert_int_equal(stats_of(c).stale, 1);
    /* A fill that missed after the eviction is stored and answers. */
    assert_true(mdb_cache_put(c, "fr-1", old, &t2));
    assert_true(mdb_cache_get(c, "fr-1", &out, &t2));
    bson_destroy(&out);
    /* Of two fills of one generation the later read wins, whatever order they are offered. */
    bson_t *newer = BCON_NEW("_id", BCON_UTF8("fr-2"), "v", BCON_INT64(2));
    bson_t *older = BCON_NEW("_id", BCON_UTF8("fr-2"), "v", BCON_INT64(1));
    mdb_cache_ticket_t ta, tb;
    assert_false(mdb_cache_get(c, "fr-2", &out, &ta));
    usleep(2000);
    assert_false(mdb_cache_get(c, "fr-2", &out, &tb));
    assert_true(mdb_cache_put(c, "fr-2", newer, &tb));
    assert_false(mdb_cache_put(c, "fr-2", older, &ta));
    assert_true(mdb_cache_get(c, "fr-2", &out, &ta));
    bson_iter_t it;
    assert_true(bson_iter_init_find(&it, &out, "v"));
    assert_int_equal(bson_iter_as_int64(&it), 2);
    bson_destroy(&out);
    bson_destroy(old);
    bson_destroy(newer);
    bson_destroy(older);
    mdb_cache_free(c);
    mdb_close(m);
}

/* The same race with real threads: readers fill concurrently while a writer writes version
 * after version, evicting before and after each write; once a write and its eviction have
 * returned, the writer's own lookup must never see an older version, however the readers'
 * fills interleave. */
typedef struct race {
    mdb_cache_t *c;
    mdb_t *m;
    atomic_bool stop;
    atomic_long lookups, bad; /* (cmocka's assertions are for the main thread) */
} race_t;

/* A lookup of a thread: the document's v, -2 when the lookup failed. No cmocka assertion. */
static int64_t thread_find(mdb_cache_t *cache, mdb_t *m, const char *id)
{
    bson_t out;
    bool found = false, ok = false;
    bson_iter_t it;
    cx_error_t err;
    int64_t v = -2;
    mongoc_client_t *c = mdb_client_pop(m, &err);
    ok = c && mdb_cache_find(cache, c, id, &out, &found, NULL, &err);
    mdb_client_push(m, c);
    if (ok && !found)
        return -1;
    if (ok && bson_iter_init_find(&it, &out, "_id") && BSON_ITER_HOLDS_UTF8(&it) &&
        strcmp(bson_iter_utf8(&it, NULL), id) == 0 && bson_iter_init_find(&it, &out, "v"))
        v = bson_iter_as_int64(&it);
    if (ok)
        bson_destroy(&out);
    return v;
}

static void *race_reader(void *arg)
{
    race_t *r = arg;
    while (!atomic_load(&r->stop)) {
        char id[16];
        int k = (int)(atomic_fetch_add(&r->lookups, 1) % 4);
        snprintf(id, sizeof(id), "race-%d", k);
        if (thread_find(r->c, r->m, id) < 0)
            atomic_fetch_add(&r->bad, 1);
    }
    return NULL;
}

static void test_concurrent_fills_never_resurrect(void **state)
{
    (void)state;
    mdb_t *m = open_db(uri, 3000);
    mdb_cache_t *c = open_cache(m, 64, MDB_CACHE_READ_AUTO, NULL);
    wait_enabled(c, true, 2000);
    race_t r = {.c = c, .m = m};
    atomic_init(&r.stop, false);
    atomic_init(&r.lookups, 0);
    atomic_init(&r.bad, 0);
    for (int k = 0; k < 4; k++) {
        char id[16];
        snprintf(id, sizeof(id), "race-%d", k);
        put_doc(m, id, 0);
    }
    pthread_t th[6];
    for (int i = 0; i < 6; i++)
        assert_int_equal(pthread_create(&th[i], NULL, race_reader, &r), 0);
    for (int64_t v = 1; v <= 60; v++) {
        char id[16];
        snprintf(id, sizeof(id), "race-%d", (int)(v % 4));
        mdb_cache_evict(c, id);
        put_doc(m, id, v);
        mdb_cache_evict(c, id);
        for (int i = 0; i < 3; i++)
            assert_true(find_ok(c, m, id, NULL) >= v);
    }
    atomic_store(&r.stop, true);
    for (int i = 0; i < 6; i++)
        pthread_join(th[i], NULL);
    mdb_cache_stats_t s = stats_of(c);
    printf("race: %ld reader lookups, %llu hits, %llu fills, %llu refused as stale\n",
           atomic_load(&r.lookups), (unsigned long long)s.hits, (unsigned long long)s.fills,
           (unsigned long long)s.stale);
    assert_int_equal(atomic_load(&r.bad), 0);
    assert_true(s.hits > 0);
    mdb_cache_free(c);
    mdb_close(m);
}

/* Many threads on a few hot ids (the service's shape): every answer is the document asked for,
 * counters add up, and the sanitizers see nothing. */
typedef struct hammer {
    mdb_cache_t *c;
    mdb_t *m;
    int64_t until; /* tk_mono_ms */
    atomic_long lookups, bad;
} hammer_t;

static void *hammer_main(void *arg)
{
    hammer_t *h = arg;
    for (long i = 0; tk_mono_ms() < h->until; i++) {
        char id[16];
        snprintf(id, sizeof(id), "hot-%ld", i % 8);
        if (thread_find(h->c, h->m, id) != i % 8)
            atomic_fetch_add(&h->bad, 1);
        atomic_fetch_add(&h->lookups, 1);
    }
    return NULL;
}

/* For several poll periods, so that the watcher re-reads the hot ids while they are hammered. */
static void test_concurrent_lookups(void **state)
{
    (void)state;
    mdb_t *m = open_db(uri, 3000);
    mdb_cache_t *c = open_cache(m, 64, MDB_CACHE_READ_AUTO, NULL);
    wait_enabled(c, true, 2000);
    for (int k = 0; k < 8; k++) {
        char id[16];
        snprintf(id, sizeof(id), "hot-%d", k);
        put_doc(m, id, k);
    }
    enum { THREADS = 8 };
    hammer_t h = {.c = c, .m = m, .until = tk_mono_ms() + 4 * POLL_MS};
    atomic_init(&h.lookups, 0);
    atomic_init(&h.bad, 0);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer_main, &h), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    mdb_cache_stats_t s = stats_of(c);
    long n = atomic_load(&h.lookups);
    printf("%ld lookups by %d threads in %d ms: %llu hits, %llu misses, %llu watcher reads in "
           "%llu queries\n",
           n, THREADS, 4 * POLL_MS, (unsigned long long)s.hits, (unsigned long long)s.misses,
           (unsigned long long)s.reads, (unsigned long long)s.queries);
    assert_int_equal(atomic_load(&h.bad), 0);
    assert_int_equal(s.hits + s.misses, (uint64_t)n);
    assert_true(s.hits > s.misses);
    assert_true(s.reads >= 8);       /* a round re-read the hot ids */
    if (s.mode == MDB_CACHE_READ_IN) /* the eight hot ids in one query per round */
        assert_true(s.queries < s.reads);
    mdb_cache_free(c);
    mdb_close(m);
}

/* ---- fail closed ----------------------------------------------------------------------------- */

/* The database stops: the first round that cannot read (or mdb's down state) stops the cache
 * at once, well within B; nothing is answered from memory until a round succeeds again; a fill
 * whose miss came before the failure is refused after it. */
static void test_database_stopped_disables_at_once(void **state)
{
    (void)state;
    tk_ferretdb_t d;
    tk_ferretdb_init(&d);
    mdb_t *m = open_db(d.uri, 1000);
    states_t st = {.mu = PTHREAD_MUTEX_INITIALIZER};
    mdb_cache_t *c = open_cache(m, 64, MDB_CACHE_READ_AUTO, &st);
    wait_enabled(c, true, 3000);
    put_doc(m, "st-1", 1);
    bool hit = false;
    find_ok(c, m, "st-1", NULL);
    assert_int_equal(find_ok(c, m, "st-1", &hit), 1);
    assert_true(hit);
    bson_t out;
    mdb_cache_ticket_t before;
    assert_false(mdb_cache_get(c, "st-2", &out, &before));

    tk_ferretdb_stop(&d);
    int64_t stopped = tk_mono_ms(), last_hit = -1;
    mdb_cache_ticket_t t;
    while (tk_mono_ms() - stopped < 2 * BOUND_MS) {
        int64_t started = tk_mono_ms();
        if (mdb_cache_get(c, "st-1", &out, &t)) {
            bson_destroy(&out);
            last_hit = started - stopped;
        }
        usleep(2000);
    }
    mdb_cache_stats_t s = stats_of(c);
    printf("database stopped: last answer from the cache %lld ms after (bound %d ms)\n",
           (long long)last_hit, BOUND_MS);
    assert_true(last_hit < BOUND_MS);
    assert_false(s.enabled);
    assert_true(s.failed_rounds >= 1);
    assert_int_equal(s.entries, 0);
    pthread_mutex_lock(&st.mu);
    assert_true(st.n >= 2 && st.seen[0] && !st.seen[st.n - 1]);
    assert_true(st.why[0] != '\0');
    pthread_mutex_unlock(&st.mu);
    cx_error_t err;
    bool ok = true;
    assert_int_equal(find_v(c, m, "st-1", NULL, &err, &ok), -1);
    assert_false(ok);
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);

    tk_ferretdb_start(&d);
    tk_ferretdb_wait_listening(&d);
    wait_enabled(c, true, 5000);
    bson_t *old = BCON_NEW("_id", BCON_UTF8("st-2"), "v", BCON_INT64(1));
    assert_false(mdb_cache_put(c, "st-2", old, &before)); /* from before the failure */
    bson_destroy(old);
    int64_t t0 = tk_mono_ms();
    hit = false;
    while (!hit && tk_mono_ms() - t0 < 5000) { /* the pool may need a moment to reconnect */
        int64_t v = find_v(c, m, "st-1", &hit, &err, &ok);
        if (ok)
            assert_int_equal(v, 1);
        usleep(10000);
    }
    assert_true(hit);
    pthread_mutex_lock(&st.mu);
    assert_true(st.seen[st.n - 1]);
    pthread_mutex_unlock(&st.mu);
    mdb_cache_free(c);
    mdb_close(m);
    tk_ferretdb_stop(&d);
}

/* The database hangs (frozen): the watcher's read waits out mdb's timeout (1 s here), longer
 * than B; meanwhile nothing is confirmed, so every entry stops answering B after its last
 * confirmation, before the round even fails. */
static void test_database_frozen_entries_expire(void **state)
{
    (void)state;
    tk_ferretdb_t d;
    tk_ferretdb_init(&d);
    mdb_t *m = open_db(d.uri, 1000);
    mdb_cache_t *c = open_cache(m, 64, MDB_CACHE_READ_AUTO, NULL);
    wait_enabled(c, true, 3000);
    put_doc(m, "fz-1", 1);
    find_ok(c, m, "fz-1", NULL);
    for (int i = 0; i < 5; i++) { /* in use: re-read by every round */
        find_ok(c, m, "fz-1", NULL);
        usleep(20000);
    }
    tk_ferretdb_freeze(&d);
    int64_t frozen = tk_mono_ms(), last_hit = -1;
    bson_t out;
    mdb_cache_ticket_t t;
    while (tk_mono_ms() - frozen < 2 * BOUND_MS) {
        int64_t started = tk_mono_ms();
        if (mdb_cache_get(c, "fz-1", &out, &t)) {
            bson_destroy(&out);
            last_hit = started - frozen;
        }
        usleep(2000);
    }
    printf("database frozen: last answer from the cache %lld ms after (bound %d ms)\n",
           (long long)last_hit, BOUND_MS);
    assert_true(last_hit >= 0); /* it did answer from memory before */
    assert_true(last_hit < BOUND_MS);
    tk_ferretdb_stop(&d); /* thaws and stops */
    mdb_cache_free(c);
    mdb_close(m);
}

int main(void)
{
    snprintf(dbname, sizeof(dbname), "mdbcache_%d", (int)getpid());
    if (!tk_ferretdb_fixture_uri(uri, sizeof(uri)))
        return 1;
    mdb_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_hit_and_miss),
        cmocka_unit_test(test_bounded_size),
        cmocka_unit_test(test_own_write_at_once),
        cmocka_unit_test(test_watcher_direct_writes_auto),
        cmocka_unit_test(test_watcher_direct_writes_in),
        cmocka_unit_test(test_unused_entry_expires),
        cmocka_unit_test(test_fill_after_eviction_is_refused),
        cmocka_unit_test(test_concurrent_fills_never_resurrect),
        cmocka_unit_test(test_concurrent_lookups),
        cmocka_unit_test(test_database_stopped_disables_at_once),
        cmocka_unit_test(test_database_frozen_entries_expire),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mongoc_cleanup();
    return rc;
}
