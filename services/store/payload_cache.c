/* store payload cache: decoded credential_encrypted_payloads documents by payload id, so that a
 * hot secret's Resolve reads no payload from the database (its metadata has a cache of its own,
 * st->meta).
 *
 * Why this is safe: a payload document never changes under its payload id (a new version gets
 * a new id; delete marks the metadata first, which Resolve honours at once through this store
 * and within the metadata cache's bound through another). An entry is inserted
 * only after its envelope opened, and Resolve redoes a retrieval from the database once when
 * anything fails after a hit (see resolve.c), so a cached copy can only ever give the value
 * that was authenticated when it was cached. The price: a document tampered with after it was
 * cached is reported (integrity_error) only once its entry is gone (TTL, eviction, restart);
 * until then the authenticated copy is served, never the tampered bytes. No plaintext and no
 * data key is ever held here: entries are ciphertext, nonce, tag and the wrapped key, kept
 * anyway in cx_secret_t memory (locked when the system allows, wiped on eviction and at
 * shutdown) like the DEK cache; a hit is copied into the call's arena, wiped with it.
 *
 * Shape: a hash table of chains over the payload id for O(1) lookups under one mutex, and a
 * list in insertion order, which is also expiry order (age counts from insertion), for O(1)
 * expiry and oldest-first eviction. Bounded by entries, age and STORE_PAYLOAD_CACHE_MAX_BYTES.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/metrics/cx_metrics.h"
#include "services/store/store_internal.h"

#define STORE_PC_ID_MAX 64 /* store_payload_decode accepts ids up to 64 bytes */

typedef struct store_pc_entry {
    struct store_pc_entry *hnext;       /* hash chain */
    struct store_pc_entry *prev, *next; /* insertion order, oldest first */
    char payload_id[STORE_PC_ID_MAX + 1];
    char secret_id[STORE_PC_ID_MAX + 1];
    uint32_t hash;
    int64_t inserted_ms;
    /* The decoded fields; byte fields are offsets into blob. */
    uint32_t version;
    Credex__V1__KeyProvider key_provider;
    uint32_t wrapped_len, ct_len;
    /* ct | wrapped | nonce | tag | key_id NUL | key_version NUL | secret_id NUL | payload_id NUL */
    cx_secret_t *blob;
} store_pc_entry_t;

struct store_payload_cache {
    pthread_mutex_t mu;
    unsigned ttl_ms, max_entries;
    size_t max_bytes, bytes;
    size_t nbuckets; /* power of two */
    store_pc_entry_t **buckets;
    store_pc_entry_t *oldest, *newest;
    size_t used;
    store_payload_cache_stats_t stats;
};

static uint32_t store_pc_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a: ids are random, no adversarial keys to defend against */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

store_payload_cache_t *store_payload_cache_new(unsigned ttl_ms, unsigned max_entries,
                                               size_t max_bytes)
{
    store_payload_cache_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    pthread_mutex_init(&c->mu, NULL);
    c->ttl_ms = ttl_ms;
    c->max_entries = (ttl_ms == 0 || max_bytes == 0) ? 0 : max_entries;
    c->max_bytes = max_bytes;
    if (c->max_entries) {
        c->nbuckets = 16;
        while (c->nbuckets < c->max_entries && c->nbuckets < ((size_t)1 << 20))
            c->nbuckets <<= 1;
        c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
        if (!c->buckets) {
            pthread_mutex_destroy(&c->mu);
            free(c);
            return NULL;
        }
    }
    return c;
}

static void store_pc_unlink(store_payload_cache_t *c, store_pc_entry_t *e)
{
    store_pc_entry_t **pp = &c->buckets[e->hash & (c->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    if (e->prev)
        e->prev->next = e->next;
    else
        c->oldest = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->newest = e->prev;
    c->bytes -= cx_secret_len(e->blob);
    c->used--;
    cx_secret_free(e->blob);
    cx_crypto_wipe(e, sizeof(*e));
    free(e);
}

void store_payload_cache_free(store_payload_cache_t *c)
{
    if (!c)
        return;
    while (c->oldest)
        store_pc_unlink(c, c->oldest);
    free(c->buckets);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static bool store_pc_expired(const store_payload_cache_t *c, const store_pc_entry_t *e,
                             int64_t now_ms)
{
    /* A clock stepping backwards must not extend an entry's life. */
    return now_ms < e->inserted_ms || now_ms - e->inserted_ms >= (int64_t)c->ttl_ms;
}

static store_pc_entry_t *store_pc_find(store_payload_cache_t *c, const char *payload_id, uint32_t h)
{
    for (store_pc_entry_t *e = c->buckets[h & (c->nbuckets - 1)]; e; e = e->hnext)
        if (e->hash == h && strcmp(e->payload_id, payload_id) == 0)
            return e;
    return NULL;
}

bool store_payload_cache_get(store_payload_cache_t *c, const char *payload_id, int64_t now_ms,
                             rpc_arena_t *arena, store_payload_t *out)
{
    bool hit = false;
    if (!c || !c->max_entries || !payload_id || strlen(payload_id) > STORE_PC_ID_MAX)
        return false;
    uint32_t h = store_pc_hash(payload_id);
    pthread_mutex_lock(&c->mu);
    store_pc_entry_t *e = store_pc_find(c, payload_id, h);
    if (e && store_pc_expired(c, e, now_ms)) {
        store_pc_unlink(c, e);
        c->stats.expired++;
        e = NULL;
    }
    if (e) {
        /* A private copy: the entry may be evicted (and wiped) while the caller uses it. It
         * goes to the call's arena, not to locked memory: ciphertext and a wrapped key are what
         * the database holds anyway, and locking a copy per hit costs two system calls. */
        size_t len = cx_secret_len(e->blob);
        unsigned char *base = rpc_arena_alloc(arena, len);
        memcpy(base, cx_secret_bytes(e->blob), len);
        size_t off = 0;
        store_payload_t p;
        memset(&p, 0, sizeof(p));
        p.version = e->version;
        p.key_provider = e->key_provider;
        p.ct = base + off;
        p.ct_len = e->ct_len;
        off += e->ct_len;
        p.wrapped = base + off;
        p.wrapped_len = e->wrapped_len;
        off += e->wrapped_len;
        p.nonce = base + off;
        off += CX_GCM_NONCE_LEN;
        p.tag = base + off;
        off += CX_GCM_TAG_LEN;
        p.key_id = (const char *)base + off;
        p.key_version = p.key_id + strlen(p.key_id) + 1;
        p.secret_id = p.key_version + strlen(p.key_version) + 1;
        p.payload_id = p.secret_id + strlen(p.secret_id) + 1;
        *out = p;
        hit = true;
    }
    if (hit)
        c->stats.hits++;
    else
        c->stats.misses++;
    pthread_mutex_unlock(&c->mu);
    cx_metrics_cache("store_payload", hit);
    return hit;
}

void store_payload_cache_put(store_payload_cache_t *c, const store_payload_t *p, int64_t now_ms)
{
    if (!c || !c->max_entries || !p || !p->payload_id || !p->secret_id || !p->key_id ||
        strlen(p->payload_id) > STORE_PC_ID_MAX || strlen(p->secret_id) > STORE_PC_ID_MAX)
        return;
    const char *kv = p->key_version ? p->key_version : "";
    size_t kidlen = strlen(p->key_id), kvlen = strlen(kv), sidlen = strlen(p->secret_id),
           pidlen = strlen(p->payload_id);
    size_t len = (size_t)p->ct_len + p->wrapped_len + CX_GCM_NONCE_LEN + CX_GCM_TAG_LEN + kidlen +
                 kvlen + sidlen + pidlen + 4;
    if (len > c->max_bytes)
        return;
    store_pc_entry_t *e = calloc(1, sizeof(*e));
    cx_secret_t *blob = cx_secret_new(len);
    if (!e || !blob) {
        free(e);
        cx_secret_free(blob);
        return;
    }
    /* Built outside the lock: copying up to 64 KiB must not hold up other workers. */
    unsigned char *w = cx_secret_bytes_mut(blob);
    memcpy(w, p->ct, p->ct_len);
    w += p->ct_len;
    memcpy(w, p->wrapped, p->wrapped_len);
    w += p->wrapped_len;
    memcpy(w, p->nonce, CX_GCM_NONCE_LEN);
    w += CX_GCM_NONCE_LEN;
    memcpy(w, p->tag, CX_GCM_TAG_LEN);
    w += CX_GCM_TAG_LEN;
    memcpy(w, p->key_id, kidlen + 1);
    w += kidlen + 1;
    memcpy(w, kv, kvlen + 1);
    w += kvlen + 1;
    memcpy(w, p->secret_id, sidlen + 1);
    w += sidlen + 1;
    memcpy(w, p->payload_id, pidlen + 1);
    memcpy(e->payload_id, p->payload_id, pidlen + 1);
    memcpy(e->secret_id, p->secret_id, sidlen + 1);
    e->hash = store_pc_hash(p->payload_id);
    e->inserted_ms = now_ms;
    e->version = p->version;
    e->key_provider = p->key_provider;
    e->wrapped_len = p->wrapped_len;
    e->ct_len = p->ct_len;
    e->blob = blob;

    pthread_mutex_lock(&c->mu);
    store_pc_entry_t *old = store_pc_find(c, e->payload_id, e->hash);
    if (old)
        store_pc_unlink(c, old); /* a fresh read replaces the entry (and restarts its age) */
    while (c->oldest && store_pc_expired(c, c->oldest, now_ms)) {
        store_pc_unlink(c, c->oldest);
        c->stats.expired++;
    }
    while (c->oldest && (c->used >= c->max_entries || c->bytes + len > c->max_bytes)) {
        store_pc_unlink(c, c->oldest);
        c->stats.evicted++;
    }
    store_pc_entry_t **b = &c->buckets[e->hash & (c->nbuckets - 1)];
    e->hnext = *b;
    *b = e;
    e->prev = c->newest;
    if (c->newest)
        c->newest->next = e;
    else
        c->oldest = e;
    c->newest = e;
    c->bytes += len;
    c->used++;
    c->stats.inserts++;
    pthread_mutex_unlock(&c->mu);
}

void store_payload_cache_evict(store_payload_cache_t *c, const char *payload_id)
{
    if (!c || !c->max_entries || !payload_id)
        return;
    uint32_t h = store_pc_hash(payload_id);
    pthread_mutex_lock(&c->mu);
    store_pc_entry_t *e = store_pc_find(c, payload_id, h);
    if (e) {
        store_pc_unlink(c, e);
        c->stats.evicted++;
    }
    pthread_mutex_unlock(&c->mu);
}

void store_payload_cache_evict_secret(store_payload_cache_t *c, const char *secret_id)
{
    if (!c || !c->max_entries || !secret_id)
        return;
    pthread_mutex_lock(&c->mu);
    /* A scan (rare: delete, revoke, rotate); entries are a few thousand at most. */
    for (store_pc_entry_t *e = c->oldest, *next; e; e = next) {
        next = e->next;
        if (strcmp(e->secret_id, secret_id) == 0) {
            store_pc_unlink(c, e);
            c->stats.evicted++;
        }
    }
    pthread_mutex_unlock(&c->mu);
}

void store_payload_cache_stats(store_payload_cache_t *c, store_payload_cache_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    *out = c->stats;
    out->entries = c->used;
    out->bytes = c->bytes;
    pthread_mutex_unlock(&c->mu);
}
