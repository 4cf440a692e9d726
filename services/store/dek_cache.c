/* store DEK cache: unwrapped data keys, bounded by age (ttl), use count and entry count, so
 * that a hot secret does not cost a keywrap round trip per Resolve while a stolen process
 * snapshot holds only a bounded, recent set of keys. Linear scan: entries are few thousand at
 * most and a scan of 32-byte digests costs less than one Unwrap round trip.
 *
 * A hit lends the cached key itself (a lease) rather than a copy: a copy is locked memory, and
 * locking and unlocking it (two system calls, and the kernel splitting and merging the mapping)
 * cost more than the rest of a hit. The key stays in the cache's locked memory; an entry that
 * expires or is evicted while lent is dropped from the table at once, and its key wiped and
 * freed when the last lease is returned. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/metrics/cx_metrics.h"
#include "services/store/store_internal.h"

/* One cached key, shared by the entry that holds it and the callers it is lent to. */
struct store_dek_lease {
    cx_secret_t *dek;
    unsigned lent; /* leases not yet returned */
    bool dropped;  /* no longer in the table: the last return frees it */
};

typedef struct store_dek_entry {
    unsigned char key[32];
    store_dek_lease_t *k; /* NULL: free slot */
    int64_t inserted_ms;
    unsigned uses;
} store_dek_entry_t;

struct store_dek_cache {
    pthread_mutex_t mu;
    unsigned ttl_ms, max_uses, max_entries;
    store_dek_entry_t *slots;
    size_t used;
};

store_dek_cache_t *store_dek_cache_new(unsigned ttl_ms, unsigned max_uses, unsigned max_entries)
{
    store_dek_cache_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    pthread_mutex_init(&c->mu, NULL);
    c->ttl_ms = ttl_ms;
    c->max_uses = max_uses ? max_uses : 1;
    c->max_entries = (ttl_ms == 0) ? 0 : max_entries;
    if (c->max_entries) {
        c->slots = calloc(c->max_entries, sizeof(*c->slots));
        if (!c->slots) {
            pthread_mutex_destroy(&c->mu);
            free(c);
            return NULL;
        }
    }
    return c;
}

static void store_dek_key_free(store_dek_lease_t *k)
{
    cx_secret_free(k->dek);
    free(k);
}

/* Empty a slot; its key is freed at once unless lent, else by the last return. Holds c->mu. */
static void store_dek_slot_clear(store_dek_cache_t *c, store_dek_entry_t *e)
{
    if (!e->k)
        return;
    if (e->k->lent == 0)
        store_dek_key_free(e->k);
    else
        e->k->dropped = true;
    memset(e, 0, sizeof(*e));
    c->used--;
}

void store_dek_cache_free(store_dek_cache_t *c)
{
    if (!c)
        return;
    /* Every lease has been returned (store_internal.h): each key is freed here. */
    for (unsigned i = 0; i < c->max_entries; i++)
        if (c->slots[i].k)
            store_dek_key_free(c->slots[i].k);
    free(c->slots);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static bool store_dek_expired(const store_dek_cache_t *c, const store_dek_entry_t *e,
                              int64_t now_ms)
{
    /* A clock stepping backwards must not extend a key's life. */
    return now_ms < e->inserted_ms || now_ms - e->inserted_ms >= (int64_t)c->ttl_ms ||
           e->uses >= c->max_uses;
}

const cx_secret_t *store_dek_cache_get(store_dek_cache_t *c, const unsigned char key[32],
                                       int64_t now_ms, store_dek_lease_t **lease)
{
    store_dek_lease_t *k = NULL;
    *lease = NULL;
    if (!c || !c->max_entries)
        return NULL;
    pthread_mutex_lock(&c->mu);
    for (unsigned i = 0; i < c->max_entries; i++) {
        store_dek_entry_t *e = &c->slots[i];
        if (!e->k || memcmp(e->key, key, 32) != 0)
            continue;
        if (store_dek_expired(c, e, now_ms)) {
            store_dek_slot_clear(c, e);
            break;
        }
        k = e->k;
        k->lent++;
        e->uses++;
        break;
    }
    pthread_mutex_unlock(&c->mu);
    cx_metrics_cache("store_dek", k != NULL);
    *lease = k;
    return k ? k->dek : NULL;
}

void store_dek_cache_release(store_dek_cache_t *c, store_dek_lease_t *lease)
{
    if (!c || !lease)
        return;
    pthread_mutex_lock(&c->mu);
    bool last = --lease->lent == 0 && lease->dropped;
    pthread_mutex_unlock(&c->mu);
    if (last)
        store_dek_key_free(lease); /* out of the table: no other thread can reach it */
}

void store_dek_cache_put(store_dek_cache_t *c, const unsigned char key[32], const cx_secret_t *dek,
                         int64_t now_ms)
{
    if (!c || !c->max_entries || !dek)
        return;
    pthread_mutex_lock(&c->mu);
    store_dek_entry_t *slot = NULL, *oldest = NULL;
    for (unsigned i = 0; i < c->max_entries; i++) {
        store_dek_entry_t *e = &c->slots[i];
        if (e->k && (memcmp(e->key, key, 32) == 0 || store_dek_expired(c, e, now_ms)))
            store_dek_slot_clear(c, e);
        if (!e->k) {
            if (!slot)
                slot = e;
        } else if (!oldest || e->inserted_ms < oldest->inserted_ms) {
            oldest = e;
        }
    }
    if (!slot) {
        store_dek_slot_clear(c, oldest);
        slot = oldest;
    }
    slot->k = calloc(1, sizeof(*slot->k));
    if (slot->k && !(slot->k->dek = cx_secret_from(cx_secret_bytes(dek), cx_secret_len(dek)))) {
        free(slot->k);
        slot->k = NULL;
    }
    if (slot->k) {
        memcpy(slot->key, key, 32);
        slot->inserted_ms = now_ms;
        /* The use that produced this key counts as the first use. */
        slot->uses = 1;
        c->used++;
    }
    pthread_mutex_unlock(&c->mu);
}

size_t store_dek_cache_size(store_dek_cache_t *c)
{
    if (!c)
        return 0;
    pthread_mutex_lock(&c->mu);
    size_t n = c->used;
    pthread_mutex_unlock(&c->mu);
    return n;
}
