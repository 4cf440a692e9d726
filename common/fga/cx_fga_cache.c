/* cx_fga_cache: see cx_fga_cache.h.
 *
 * A chained hash table with as many buckets as entries allowed (rounded up to a power of two).
 * A flush only bumps the generation: entries of an older generation are dead, skipped by every
 * lookup and freed when a walk meets them, so that a flush (every write through this client,
 * every poll that saw a change) costs O(1) under the lock. Dead entries still count against
 * max_entries until reclaimed, which keeps memory bounded by max_entries whatever happens.
 *
 * Eviction, chosen for a bounded lock hold rather than for the best hit rate: a chain never
 * grows past CX_FGA_CACHE_CHAIN_MAX (its oldest entry goes), and when the table is full the
 * insert evicts one entry, the oldest of its own bucket or else the first entry found scanning
 * forward from it. The hash is seeded per process, and the chain cap bounds a lookup's cost
 * even against names chosen to collide.
 */
#include "common/fga/cx_fga_cache.h"
#include "common/metrics/cx_metrics.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

typedef struct fga_entry {
    struct fga_entry *next;
    uint64_t hash, gen;
    int64_t expires;
    size_t keylen;
    bool allowed;
    char key[];
} fga_entry_t;

struct cx_fga_cache {
    pthread_mutex_t mu;
    int64_t ttl_ns, fresh_ns;
    size_t max, count, mask;
    fga_entry_t **buckets;
    uint64_t seed;
    /* Guarded by mu. */
    uint64_t gen, flushes, polls, poll_failures;
    bool valid;            /* a poll succeeded and none failed since */
    int64_t last_ok_start; /* start time of the last successful poll */
};

cx_fga_cache_t *cx_fga_cache_new(int64_t ttl_ns, int64_t fresh_ns, size_t max_entries)
{
    if (ttl_ns <= 0 || fresh_ns <= 0 || max_entries == 0)
        return NULL;
    cx_fga_cache_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    size_t n = 16;
    while (n < max_entries)
        n <<= 1;
    c->buckets = calloc(n, sizeof(*c->buckets));
    if (!c->buckets) {
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    c->mask = n - 1;
    c->max = max_entries;
    c->ttl_ns = ttl_ns;
    c->fresh_ns = fresh_ns;
    if (getrandom(&c->seed, sizeof(c->seed), GRND_NONBLOCK) != (ssize_t)sizeof(c->seed)) {
        /* Only collision resistance depends on it, and the chain cap bounds that harm. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        c->seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)(uintptr_t)c;
    }
    return c;
}

void cx_fga_cache_free(cx_fga_cache_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i <= c->mask; i++) {
        fga_entry_t *e = c->buckets[i];
        while (e) {
            fga_entry_t *next = e->next;
            free(e);
            e = next;
        }
    }
    free(c->buckets);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* FNV-1a over the seed and the key, with a final avalanche so that the low bits (the bucket)
 * depend on every byte. */
static uint64_t fga_hash(const cx_fga_cache_t *c, const char *key, size_t len)
{
    uint64_t h = 14695981039346656037ULL ^ c->seed;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 1099511628211ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

static bool fga_fresh(const cx_fga_cache_t *c, int64_t now)
{
    return c->valid && now - c->last_ok_start < c->fresh_ns;
}

static bool fga_dead(const cx_fga_cache_t *c, const fga_entry_t *e, int64_t now)
{
    return e->gen != c->gen || now >= e->expires;
}

/* Walk key's chain, freeing dead entries on the way. Returns the live entry for key, if any;
 * *len is the number of live entries left in the chain. Under mu. */
static fga_entry_t *fga_walk(cx_fga_cache_t *c, fga_entry_t **slot, uint64_t h, const char *key,
                             size_t keylen, int64_t now, size_t *len)
{
    fga_entry_t *found = NULL;
    size_t n = 0;
    while (*slot) {
        fga_entry_t *e = *slot;
        if (fga_dead(c, e, now)) {
            *slot = e->next;
            free(e);
            c->count--;
            continue;
        }
        if (!found && e->hash == h && e->keylen == keylen && memcmp(e->key, key, keylen) == 0)
            found = e;
        n++;
        slot = &e->next;
    }
    if (len)
        *len = n;
    return found;
}

bool cx_fga_cache_get(cx_fga_cache_t *c, const char *key, size_t keylen, int64_t now, bool *allowed,
                      uint64_t *gen)
{
    uint64_t h = fga_hash(c, key, keylen);
    bool hit = false;
    pthread_mutex_lock(&c->mu);
    *gen = c->gen;
    if (fga_fresh(c, now)) {
        fga_entry_t *e = fga_walk(c, &c->buckets[h & c->mask], h, key, keylen, now, NULL);
        if (e) {
            *allowed = e->allowed;
            hit = true;
        }
    }
    pthread_mutex_unlock(&c->mu);
    cx_metrics_cache("openfga_check", hit);
    return hit;
}

/* Remove the last entry of the chain at slot. Under mu; the chain is not empty. */
static void fga_evict_tail(cx_fga_cache_t *c, fga_entry_t **slot)
{
    while ((*slot)->next)
        slot = &(*slot)->next;
    free(*slot);
    *slot = NULL;
    c->count--;
}

bool cx_fga_cache_put(cx_fga_cache_t *c, const char *key, size_t keylen, bool allowed, uint64_t gen,
                      int64_t now)
{
    uint64_t h = fga_hash(c, key, keylen);
    /* Allocated before the lock, so that the lock is never held across malloc's slow path. */
    fga_entry_t *n = malloc(sizeof(*n) + keylen);
    if (!n)
        return false;
    bool stored = false;
    pthread_mutex_lock(&c->mu);
    if (gen != c->gen || !fga_fresh(c, now))
        goto out;
    fga_entry_t **slot = &c->buckets[h & c->mask];
    size_t len = 0;
    fga_entry_t *e = fga_walk(c, slot, h, key, keylen, now, &len);
    if (e) { /* another thread stored it meanwhile, from the same generation */
        e->allowed = allowed;
        e->expires = now + c->ttl_ns;
        stored = true;
        goto out;
    }
    if (len >= CX_FGA_CACHE_CHAIN_MAX) {
        fga_evict_tail(c, slot);
    } else if (c->count >= c->max) {
        size_t i = h & c->mask;
        while (!c->buckets[i]) /* count > 0, so some bucket holds an entry */
            i = (i + 1) & c->mask;
        fga_evict_tail(c, &c->buckets[i]);
    }
    n->hash = h;
    n->gen = gen;
    n->expires = now + c->ttl_ns;
    n->keylen = keylen;
    n->allowed = allowed;
    memcpy(n->key, key, keylen);
    n->next = *slot;
    *slot = n;
    c->count++;
    n = NULL;
    stored = true;
out:
    pthread_mutex_unlock(&c->mu);
    free(n);
    return stored;
}

static void fga_flush_locked(cx_fga_cache_t *c)
{
    c->gen++;
    c->flushes++;
}

void cx_fga_cache_flush(cx_fga_cache_t *c)
{
    pthread_mutex_lock(&c->mu);
    fga_flush_locked(c);
    pthread_mutex_unlock(&c->mu);
}

void cx_fga_cache_poll_ok(cx_fga_cache_t *c, int64_t started, bool changed)
{
    pthread_mutex_lock(&c->mu);
    c->polls++;
    /* Returning to validity bumps the generation too: a check that read the generation before
     * the failure (or before the first poll, whose start point may lie after the check's HTTP
     * answer) must not store what it got. */
    if (changed || !c->valid)
        fga_flush_locked(c);
    c->valid = true;
    c->last_ok_start = started;
    pthread_mutex_unlock(&c->mu);
}

void cx_fga_cache_poll_failed(cx_fga_cache_t *c)
{
    pthread_mutex_lock(&c->mu);
    c->poll_failures++;
    c->valid = false;
    fga_flush_locked(c);
    pthread_mutex_unlock(&c->mu);
}

void cx_fga_cache_counts(cx_fga_cache_t *c, int64_t now, cx_fga_cache_counts_t *out)
{
    pthread_mutex_lock(&c->mu);
    out->flushes = c->flushes;
    out->polls = c->polls;
    out->poll_failures = c->poll_failures;
    out->entries = c->count;
    out->fresh = fga_fresh(c, now);
    pthread_mutex_unlock(&c->mu);
}
