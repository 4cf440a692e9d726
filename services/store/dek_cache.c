/* store DEK cache: unwrapped data keys, bounded by age (ttl), use count and entry count, so
 * that a hot secret does not cost a keywrap round trip per Resolve while a stolen process
 * snapshot holds only a bounded, recent set of keys. Linear scan: entries are few thousand at
 * most and a scan of 32-byte digests costs less than one Unwrap round trip. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "services/store/store_internal.h"

typedef struct store_dek_entry {
    unsigned char key[32];
    cx_secret_t *dek; /* NULL: free slot */
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

static void store_dek_slot_clear(store_dek_cache_t *c, store_dek_entry_t *e)
{
    if (!e->dek)
        return;
    cx_secret_free(e->dek);
    memset(e, 0, sizeof(*e));
    c->used--;
}

void store_dek_cache_free(store_dek_cache_t *c)
{
    if (!c)
        return;
    for (unsigned i = 0; i < c->max_entries; i++)
        store_dek_slot_clear(c, &c->slots[i]);
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

cx_secret_t *store_dek_cache_get(store_dek_cache_t *c, const unsigned char key[32], int64_t now_ms)
{
    cx_secret_t *out = NULL;
    if (!c || !c->max_entries)
        return NULL;
    pthread_mutex_lock(&c->mu);
    for (unsigned i = 0; i < c->max_entries; i++) {
        store_dek_entry_t *e = &c->slots[i];
        if (!e->dek || memcmp(e->key, key, 32) != 0)
            continue;
        if (store_dek_expired(c, e, now_ms)) {
            store_dek_slot_clear(c, e);
            break;
        }
        out = cx_secret_from(cx_secret_bytes(e->dek), cx_secret_len(e->dek));
        if (out)
            e->uses++;
        break;
    }
    pthread_mutex_unlock(&c->mu);
    return out;
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
        if (e->dek && (memcmp(e->key, key, 32) == 0 || store_dek_expired(c, e, now_ms)))
            store_dek_slot_clear(c, e);
        if (!e->dek) {
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
    slot->dek = cx_secret_from(cx_secret_bytes(dek), cx_secret_len(dek));
    if (slot->dek) {
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
