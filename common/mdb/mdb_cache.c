/* mdb_cache: see mdb_cache.h.
 *
 * Shape: a chained hash table with as many buckets as entries allowed (rounded up to a power of
 * two), each bucket with its own generation, so that an eviction refuses only the fills of its
 * own bucket; and a list of every entry, which the watcher walks to reclaim expired entries and
 * to pick the ids to re-read (O(entries) per round, whatever the table's size). An entry is one
 * allocation: header, id and the document's bytes, never changed once linked (a confirmation
 * only moves its time), so that a hit copies it under the lock and nothing else.
 *
 * The hash is seeded per process and a chain never grows past MDB_CACHE_CHAIN_MAX, so that a
 * lookup's cost under the lock stays bounded even for ids chosen to collide.
 */
#include "common/mdb/mdb_cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/metrics/cx_metrics.h"

typedef struct mc_entry {
    struct mc_entry *hnext;       /* bucket chain */
    struct mc_entry *prev, *next; /* every entry */
    uint64_t hash;
    int64_t confirmed_ns; /* start of the last read that saw these bytes */
    bool used;            /* answered a lookup since it was last confirmed */
    uint32_t len;         /* bytes of the document */
    size_t idlen;
    uint8_t *doc; /* after the id's NUL */
    char id[];    /* id NUL document */
} mc_entry_t;

typedef struct mc_bucket {
    mc_entry_t *head;
    uint64_t gen; /* bumped by every eviction of an id of this bucket */
} mc_bucket_t;

struct mdb_cache {
    mdb_t *db;
    char coll[128];
    unsigned max;
    int64_t bound_ns, poll_ns;
    int64_t each_age_ns;   /* EACH: re-read an entry in use from this age on (mc_collect) */
    mdb_cache_read_t read; /* as configured */
    mdb_cache_state_fn on_state;
    void *state_ctx;
    uint64_t seed;
    size_t mask;
    mc_bucket_t *buckets;

    pthread_mutex_t mu; /* guards the table, the list and everything below */
    mc_entry_t *first;
    size_t count, idbytes; /* entries; bytes of their ids with NULs */
    uint64_t epoch;        /* bumped by every failed round */
    bool valid;            /* the last round succeeded */
    mdb_cache_read_t mode; /* how the watcher reads now (AUTO: not asked yet) */
    mdb_cache_stats_t stats;

    /* The watcher. */
    pthread_t watcher;
    bool watching;
    pthread_mutex_t wmu; /* pairs with wcv */
    pthread_cond_t wcv;
    atomic_bool stop;
};

static int64_t mc_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* FNV-1a over the seed and the id, then a final mix so that the bucket (the low bits) depends
 * on every byte. */
static uint64_t mc_hash(const mdb_cache_t *c, const char *id, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ c->seed;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)id[i]) * 0x100000001b3ULL;
    h ^= h >> 31;
    h *= 0x7fb5d329728ea185ULL;
    h ^= h >> 27;
    return h;
}

static mc_bucket_t *mc_bucket(mdb_cache_t *c, uint64_t h)
{
    return &c->buckets[h & c->mask];
}

/* Under mu. */
static mc_entry_t *mc_find(mc_bucket_t *b, uint64_t h, const char *id, size_t idlen)
{
    for (mc_entry_t *e = b->head; e; e = e->hnext)
        if (e->hash == h && e->idlen == idlen && memcmp(e->id, id, idlen) == 0)
            return e;
    return NULL;
}

static bool mc_fresh(const mdb_cache_t *c, const mc_entry_t *e, int64_t now)
{
    return now - e->confirmed_ns < c->bound_ns;
}

/* Unlink e from its chain and the list and free it. Under mu. */
static void mc_drop(mdb_cache_t *c, mc_entry_t *e)
{
    mc_entry_t **pp = &mc_bucket(c, e->hash)->head;
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    if (e->prev)
        e->prev->next = e->next;
    else
        c->first = e->next;
    if (e->next)
        e->next->prev = e->prev;
    c->count--;
    c->idbytes -= e->idlen + 1;
    free(e);
}

/* Link n (not in the table) at the head of its chain and of the list. Under mu. */
static void mc_link(mdb_cache_t *c, mc_entry_t *n)
{
    mc_bucket_t *b = mc_bucket(c, n->hash);
    n->hnext = b->head;
    b->head = n;
    n->prev = NULL;
    n->next = c->first;
    if (c->first)
        c->first->prev = n;
    c->first = n;
    c->count++;
    c->idbytes += n->idlen + 1;
}

/* Evict e: its bucket's pending fills are refused too. Under mu. */
static void mc_evict_entry(mdb_cache_t *c, mc_entry_t *e)
{
    mc_bucket(c, e->hash)->gen++;
    mc_drop(c, e);
    c->stats.evictions++;
}

/* ---- lookups and fills ------------------------------------------------------------------- */

bool mdb_cache_get(mdb_cache_t *c, const char *id, bson_t *out, mdb_cache_ticket_t *ticket)
{
    size_t idlen = strlen(id);
    uint64_t h = mc_hash(c, id, idlen);
    int64_t now = mc_now();
    /* Known down (a failed call or mdb's prober): stop answering before the watcher notices. */
    bool up = mdb_is_up(c->db), hit = false;
    pthread_mutex_lock(&c->mu);
    mc_bucket_t *b = mc_bucket(c, h);
    ticket->epoch = c->epoch;
    ticket->gen = b->gen;
    ticket->started_ns = now;
    if (c->valid && up) {
        mc_entry_t *e = mc_find(b, h, id, idlen);
        if (e && mc_fresh(c, e, now)) {
            bson_t view;
            if (bson_init_static(&view, e->doc, e->len)) {
                bson_copy_to(&view, out);
                e->used = true;
                hit = true;
            }
        }
    }
    if (hit)
        c->stats.hits++;
    else
        c->stats.misses++;
    pthread_mutex_unlock(&c->mu);
    cx_metrics_cache(c->coll, hit); /* the collection's name: a literal of the service */
    return hit;
}

bool mdb_cache_put(mdb_cache_t *c, const char *id, const bson_t *doc,
                   const mdb_cache_ticket_t *ticket)
{
    size_t idlen = strlen(id);
    if (idlen > MDB_CACHE_ID_MAX || doc->len > MDB_CACHE_DOC_MAX)
        return false;
    /* Built before the lock: the lock is never held across malloc's slow path or a copy of a
     * document that may not be stored. */
    mc_entry_t *n = malloc(sizeof(*n) + idlen + 1 + doc->len);
    if (!n)
        return false;
    n->hash = mc_hash(c, id, idlen);
    n->confirmed_ns = ticket->started_ns;
    n->used = false;
    n->len = doc->len;
    n->idlen = idlen;
    memcpy(n->id, id, idlen + 1);
    n->doc = (uint8_t *)n->id + idlen + 1;
    memcpy(n->doc, bson_get_data(doc), doc->len);

    bool stored = false;
    int64_t now = mc_now();
    pthread_mutex_lock(&c->mu);
    mc_bucket_t *b = mc_bucket(c, n->hash);
    if (!c->valid || ticket->epoch != c->epoch || ticket->gen != b->gen) {
        c->stats.stale++;
        goto out;
    }
    if (!mc_fresh(c, n, now)) /* the read took longer than the bound: nothing to keep */
        goto out;
    mc_entry_t *e = mc_find(b, n->hash, id, idlen);
    if (e) {
        /* Two fills of one generation: the later read wins (a direct write may lie between
         * them, which only the watcher's next round would otherwise see). */
        if (n->confirmed_ns < e->confirmed_ns)
            goto out;
        if (!mc_fresh(c, e, now))
            c->stats.expired++;
        mc_drop(c, e);
    }
    size_t chain = 0;
    for (mc_entry_t **pp = &b->head; *pp;) {
        if (!mc_fresh(c, *pp, now)) { /* reclaim what answers nothing anyway */
            mc_drop(c, *pp);          /* *pp is now the next entry */
            c->stats.expired++;
            continue;
        }
        chain++;
        pp = &(*pp)->hnext;
    }
    if (c->count >= c->max || chain >= MDB_CACHE_CHAIN_MAX) {
        c->stats.full++;
        goto out;
    }
    mc_link(c, n);
    n = NULL;
    c->stats.fills++;
    stored = true;
out:
    pthread_mutex_unlock(&c->mu);
    free(n);
    return stored;
}

bool mdb_cache_find(mdb_cache_t *c, mongoc_client_t *client, const char *id, bson_t *out,
                    bool *found, bool *hit, cx_error_t *err)
{
    mdb_cache_ticket_t t;
    bool have = false;
    if (mdb_cache_get(c, id, out, &t)) {
        *found = true;
        if (hit)
            *hit = true;
        return true;
    }
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    bool ok = mdb_find_one(c->db, client, c->coll, filter, out, &have, err);
    bson_destroy(filter);
    if (!ok)
        return false;
    if (have)
        (void)mdb_cache_put(c, id, out, &t);
    *found = have;
    if (hit)
        *hit = false;
    return true;
}

void mdb_cache_evict(mdb_cache_t *c, const char *id)
{
    if (!c || !id)
        return;
    size_t idlen = strlen(id);
    uint64_t h = mc_hash(c, id, idlen);
    pthread_mutex_lock(&c->mu);
    mc_bucket_t *b = mc_bucket(c, h);
    mc_entry_t *e = mc_find(b, h, id, idlen);
    if (e)
        mc_evict_entry(c, e);
    else
        b->gen++;
    pthread_mutex_unlock(&c->mu);
}

void mdb_cache_stats(mdb_cache_t *c, mdb_cache_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    *out = c->stats;
    out->entries = c->count;
    out->enabled = c->valid;
    out->mode = c->mode;
    pthread_mutex_unlock(&c->mu);
}

/* ---- the watcher ------------------------------------------------------------------------- */

/* The ids one round re-reads: NUL-terminated, one after the other. */
typedef struct mc_ids {
    char *buf;
    const char **id;
    size_t n;
} mc_ids_t;

/* Reclaim expired entries and take the ids of those that answered a lookup since their last
 * confirmation (clearing the mark: a lookup after this moment marks it for the next round).
 * Entries that appear between sizing and filling wait for the next round.
 *
 * When ids share a query (IN; AUTO before the server was asked), every entry in use is re-read
 * every round. When each id is a query of its own (EACH), a re-read costs as much as the miss
 * it may save, and an entry re-read every round would cost B / P reads per bound where letting
 * it expire costs one: such an entry is re-read only once it would otherwise expire before the
 * next round could confirm it, with half a period to spare for a late round (age >= B - 1.5 P;
 * with the defaults every other round). Changes are still seen within the bound, later on
 * average. */
static bool mc_collect(mdb_cache_t *c, int64_t now, mc_ids_t *ids)
{
    pthread_mutex_lock(&c->mu);
    size_t cap = c->count, bytes = c->idbytes;
    pthread_mutex_unlock(&c->mu);
    memset(ids, 0, sizeof(*ids));
    if (cap) {
        char *buf = malloc(bytes);
        const char **id = malloc(cap * sizeof(*id));
        if (!buf || !id) {
            free(buf);
            free(id);
            return false;
        }
        ids->buf = buf;
        ids->id = id;
    }
    size_t off = 0;
    pthread_mutex_lock(&c->mu);
    int64_t min_age = c->mode == MDB_CACHE_READ_EACH ? c->each_age_ns : 0;
    for (mc_entry_t *e = c->first, *next; e; e = next) {
        next = e->next;
        if (!mc_fresh(c, e, now)) {
            mc_drop(c, e);
            c->stats.expired++;
        } else if (e->used && now - e->confirmed_ns >= min_age && ids->n < cap &&
                   off + e->idlen + 1 <= bytes) {
            memcpy(ids->buf + off, e->id, e->idlen + 1);
            ids->id[ids->n++] = ids->buf + off;
            off += e->idlen + 1;
            e->used = false;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return true;
}

/* What the database said of id at a read that started at started: doc (NULL: no document).
 * Same bytes confirm the entry as of that start; anything else evicts it. */
static void mc_check(mdb_cache_t *c, const char *id, const bson_t *doc, int64_t started)
{
    size_t idlen = strlen(id);
    uint64_t h = mc_hash(c, id, idlen);
    pthread_mutex_lock(&c->mu);
    mc_entry_t *e = mc_find(mc_bucket(c, h), h, id, idlen);
    if (e) {
        if (doc && doc->len == e->len && memcmp(bson_get_data(doc), e->doc, e->len) == 0) {
            if (started > e->confirmed_ns)
                e->confirmed_ns = started;
        } else {
            mc_evict_entry(c, e);
        }
    }
    pthread_mutex_unlock(&c->mu);
}

/* One query of the watcher for n ids. */
static void mc_count_query(mdb_cache_t *c, size_t n)
{
    pthread_mutex_lock(&c->mu);
    c->stats.queries++;
    c->stats.reads += n;
    pthread_mutex_unlock(&c->mu);
}

/* One $in batch being read: which of its ids came back. */
typedef struct mc_batch {
    mdb_cache_t *c;
    const char **id;
    bool *seen;
    size_t n;
    int64_t started;
} mc_batch_t;

static bool mc_batch_row(void *ctx, const bson_t *doc, cx_error_t *err)
{
    (void)err;
    mc_batch_t *b = ctx;
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, "_id") || !BSON_ITER_HOLDS_UTF8(&it))
        return true; /* not one of ours: the filter asked for string ids only */
    const char *id = bson_iter_utf8(&it, NULL);
    for (size_t i = 0; i < b->n; i++)
        if (!b->seen[i] && strcmp(b->id[i], id) == 0) {
            b->seen[i] = true;
            mc_check(b->c, id, doc, b->started);
            break;
        }
    return true;
}

static bool mc_read_in(mdb_cache_t *c, mongoc_client_t *client, const mc_ids_t *ids,
                       cx_error_t *err)
{
    bool seen[MDB_CACHE_BATCH];
    for (size_t i = 0; i < ids->n; i += MDB_CACHE_BATCH) {
        mc_batch_t b = {.c = c, .id = ids->id + i, .seen = seen, .n = ids->n - i};
        if (b.n > MDB_CACHE_BATCH)
            b.n = MDB_CACHE_BATCH;
        memset(seen, 0, sizeof(seen));
        bson_t filter = BSON_INITIALIZER, in, arr;
        BSON_APPEND_DOCUMENT_BEGIN(&filter, "_id", &in);
        BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
        for (size_t k = 0; k < b.n; k++) {
            char key[16];
            const char *kp;
            bson_uint32_to_string((uint32_t)k, &kp, key, sizeof(key));
            BSON_APPEND_UTF8(&arr, kp, b.id[k]);
        }
        bson_append_array_end(&in, &arr);
        bson_append_document_end(&filter, &in);
        b.started = mc_now();
        mc_count_query(c, b.n);
        bool ok = mdb_find_each(c->db, client, c->coll, &filter, mc_batch_row, &b, err);
        bson_destroy(&filter);
        if (!ok)
            return false;
        for (size_t k = 0; k < b.n; k++)
            if (!seen[k])
                mc_check(c, b.id[k], NULL, b.started); /* gone */
    }
    return true;
}

static bool mc_read_each(mdb_cache_t *c, mongoc_client_t *client, const mc_ids_t *ids,
                         cx_error_t *err)
{
    for (size_t i = 0; i < ids->n; i++) {
        bson_t doc;
        bool found = false;
        bson_t *filter = BCON_NEW("_id", BCON_UTF8(ids->id[i]));
        int64_t started = mc_now();
        mc_count_query(c, 1);
        bool ok = mdb_find_one(c->db, client, c->coll, filter, &doc, &found, err);
        bson_destroy(filter);
        if (!ok)
            return false;
        mc_check(c, ids->id[i], found ? &doc : NULL, started);
        if (found)
            bson_destroy(&doc);
    }
    return true;
}

/* AUTO: would the server scan the collection for an _id $in? FerretDB says so in its explain
 * (filterPushdown false); MongoDB answers $in from the _id index and has no such field. A
 * server that cannot explain gets EACH, which is right everywhere, only slower. false only
 * when the server could not be reached. */
static bool mc_ask_mode(mdb_cache_t *c, mongoc_client_t *client, mdb_cache_read_t *mode,
                        cx_error_t *err)
{
    bson_error_t berr;
    bson_t reply;
    bson_iter_t it;
    bson_t *cmd = BCON_NEW("explain", "{", "find", BCON_UTF8(c->coll), "filter", "{", "_id", "{",
                           "$in", "[", BCON_UTF8("a"), BCON_UTF8("b"), "]", "}", "}", "}",
                           "verbosity", BCON_UTF8("queryPlanner"));
    bool ok = mongoc_client_command_simple(client, mdb_db_name(c->db), cmd, NULL, &reply, &berr);
    bson_destroy(cmd);
    if (!ok && mdb_error_is_outage(&berr)) {
        bson_destroy(&reply);
        return mdb_error_map(&berr, NULL, "database explain", err);
    }
    bool scans = !ok || (bson_iter_init_find(&it, &reply, "filterPushdown") &&
                         BSON_ITER_HOLDS_BOOL(&it) && !bson_iter_bool(&it));
    *mode = scans ? MDB_CACHE_READ_EACH : MDB_CACHE_READ_IN;
    bson_destroy(&reply);
    return true;
}

static bool mc_read(mdb_cache_t *c, const mc_ids_t *ids, cx_error_t *err)
{
    if (!ids->n) {
        /* Nothing to re-read: the round stands for mdb's own view (its prober pings every
         * MDB_PROBE_INTERVAL_MS), so that an idle cache is off while the database is down. */
        if (mdb_is_up(c->db))
            return true;
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "database is down");
    }
    mongoc_client_t *client = mdb_client_pop(c->db, err);
    if (!client)
        return false;
    pthread_mutex_lock(&c->mu);
    mdb_cache_read_t mode = c->mode;
    pthread_mutex_unlock(&c->mu);
    bool ok = true;
    if (mode == MDB_CACHE_READ_AUTO) {
        ok = mc_ask_mode(c, client, &mode, err);
        if (ok) {
            pthread_mutex_lock(&c->mu);
            c->mode = mode;
            pthread_mutex_unlock(&c->mu);
        }
    }
    if (ok)
        ok = mode == MDB_CACHE_READ_IN ? mc_read_in(c, client, ids, err)
                                       : mc_read_each(c, client, ids, err);
    mdb_client_push(c->db, client);
    return ok;
}

/* One round: reclaim, re-read, and record the outcome. A failure empties the cache and stops
 * it answering (and refuses every fill in flight: the epoch moves); the next successful round
 * starts it again. */
static void mc_round(mdb_cache_t *c, int64_t started)
{
    mc_ids_t ids;
    cx_error_t err;
    cx_error_clear(&err);
    bool ok = mc_collect(c, started, &ids);
    if (!ok)
        cx_error_set(&err, CX_ERR_INTERNAL, "out of memory");
    else
        ok = mc_read(c, &ids, &err);
    free(ids.buf);
    free(ids.id);
    if (!ok && atomic_load(&c->stop))
        return; /* shutting down: a read cut short is no news */
    pthread_mutex_lock(&c->mu);
    bool was = c->valid;
    c->stats.rounds++;
    if (!ok) {
        c->stats.failed_rounds++;
        c->valid = false;
        c->epoch++;
        while (c->first)
            mc_drop(c, c->first);
        if (c->read == MDB_CACHE_READ_AUTO)
            c->mode = MDB_CACHE_READ_AUTO; /* the server may be another one when it is back */
    } else {
        c->valid = true;
    }
    pthread_mutex_unlock(&c->mu);
    if (c->on_state && was != ok)
        c->on_state(c->state_ctx, ok, ok ? NULL : &err);
}

static void *mc_watch_main(void *arg)
{
    mdb_cache_t *c = arg;
    while (!atomic_load(&c->stop)) {
        int64_t started = mc_now();
        mc_round(c, started);
        /* Every poll period from the start of the previous round; at once if it took longer. */
        int64_t next = started + c->poll_ns;
        struct timespec ts = {.tv_sec = next / 1000000000, .tv_nsec = next % 1000000000};
        pthread_mutex_lock(&c->wmu);
        while (!atomic_load(&c->stop) && mc_now() < next)
            if (pthread_cond_timedwait(&c->wcv, &c->wmu, &ts) == ETIMEDOUT)
                break;
        pthread_mutex_unlock(&c->wmu);
    }
    return NULL;
}

/* ---- life ------------------------------------------------------------------------------- */

bool mdb_cache_new(mdb_cache_t **out, mdb_t *db, const mdb_cache_options_t *o, cx_error_t *err)
{
    if (!out || !db || !o || !o->coll || !o->coll[0] || strlen(o->coll) >= 128 ||
        o->max_entries < 1 || o->max_entries > MDB_CACHE_ENTRIES_MAX || o->poll_ms < 1 ||
        o->bound_ms <= o->poll_ms || o->read > MDB_CACHE_READ_EACH)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "mdb_cache: bad options");
    mdb_cache_t *c = calloc(1, sizeof(*c));
    if (!c)
        return cx_error_set(err, CX_ERR_INTERNAL, "mdb_cache: out of memory");
    size_t n = 16;
    while (n < o->max_entries)
        n <<= 1;
    c->buckets = calloc(n, sizeof(*c->buckets));
    if (!c->buckets) {
        free(c);
        return cx_error_set(err, CX_ERR_INTERNAL, "mdb_cache: out of memory");
    }
    c->db = db;
    snprintf(c->coll, sizeof(c->coll), "%s", o->coll);
    c->max = o->max_entries;
    c->mask = n - 1;
    c->bound_ns = (int64_t)o->bound_ms * 1000000;
    c->poll_ns = (int64_t)o->poll_ms * 1000000;
    c->each_age_ns = c->bound_ns - c->poll_ns - c->poll_ns / 2;
    if (c->each_age_ns < 0)
        c->each_age_ns = 0;
    c->read = c->mode = o->read;
    c->on_state = o->on_state;
    c->state_ctx = o->state_ctx;
    if (getrandom(&c->seed, sizeof(c->seed), GRND_NONBLOCK) != (ssize_t)sizeof(c->seed))
        c->seed = (uint64_t)mc_now() ^ (uint64_t)(uintptr_t)c; /* only collisions depend on it */
    atomic_init(&c->stop, false);
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->wmu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->wcv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&c->watcher, NULL, mc_watch_main, c) != 0) {
        mdb_cache_free(c);
        return cx_error_set(err, CX_ERR_INTERNAL, "mdb_cache: cannot start the watcher");
    }
    c->watching = true;
    *out = c;
    return true;
}

void mdb_cache_free(mdb_cache_t *c)
{
    if (!c)
        return;
    if (c->watching) {
        pthread_mutex_lock(&c->wmu);
        atomic_store(&c->stop, true);
        pthread_cond_signal(&c->wcv);
        pthread_mutex_unlock(&c->wmu);
        pthread_join(c->watcher, NULL);
    }
    while (c->first)
        mc_drop(c, c->first);
    pthread_cond_destroy(&c->wcv);
    pthread_mutex_destroy(&c->wmu);
    pthread_mutex_destroy(&c->mu);
    free(c->buckets);
    free(c);
}
