/*
 * oauth picks: which connection GetProviderToken picked for a user and a provider key /
 * connector id / provider resource, so that a pick by provider key need not query the user's
 * connections on every exchange (docs/DOCUMENT_CACHE.md, "Picks").
 *
 * Only the id is kept: the connection itself is read again on every use, through the
 * connection document cache, and must still match the request and be live, else the pick is
 * made from the database. So a kept pick can never serve a connection that is revoked, another
 * user's or of another provider beyond that cache's bound (at once when the write went through
 * this process). What it can miss is a second matching connection that appeared since (the
 * answer would become "several connections match"): every connection write through this
 * process drops the user's picks at once (a generation per user bucket, bumped before and after
 * the write, which also refuses a fill whose database read started before the write), and a
 * pick answers only within the bound of the moment its database read started, so a write
 * elsewhere is seen within the same bound.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "services/oauth/oauth_internal.h"

#define PICK_SLOTS   1024 /* direct-mapped; a collision replaces the older pick */
#define PICK_USERS   256  /* generation buckets of users */
#define PICK_KEY_MAX 600  /* user, provider key, connector id, resource, separators */

typedef struct pick_slot {
    uint64_t hash, gen;
    int64_t read_ms; /* CLOCK_MONOTONIC: when the database read behind it started */
    unsigned users;  /* the user's generation bucket */
    char key[PICK_KEY_MAX];
    char id[OAUTH_PICK_ID_MAX];
} pick_slot_t;

struct oauth_picks {
    pthread_mutex_t mu;
    unsigned bound_ms;
    uint64_t gens[PICK_USERS];
    pick_slot_t slots[PICK_SLOTS];
};

static int64_t pick_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t pick_fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* The key of a pick into key (PICK_KEY_MAX); false when it does not fit (never kept). */
static bool pick_key(const char *user, const char *provider_key, const char *connector_id,
                     const char *resource, char *key, size_t *len)
{
    const char *parts[] = {user, provider_key, connector_id, resource};
    size_t n = 0;
    for (size_t i = 0; i < 4; i++) {
        size_t l = strlen(parts[i] ? parts[i] : "");
        if (n + l + 1 >= PICK_KEY_MAX)
            return false;
        memcpy(key + n, parts[i] ? parts[i] : "", l);
        n += l;
        key[n++] = '\x1f';
    }
    key[n] = '\0';
    *len = n;
    return true;
}

static unsigned pick_users(const char *user)
{
    return (unsigned)(pick_fnv(user, strlen(user)) % PICK_USERS);
}

bool oauth_picks_new(oauth_picks_t **out, unsigned bound_ms, cx_error_t *err)
{
    oauth_picks_t *p = calloc(1, sizeof(*p));
    if (!p)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    pthread_mutex_init(&p->mu, NULL);
    p->bound_ms = bound_ms;
    *out = p;
    return true;
}

void oauth_picks_free(oauth_picks_t *p)
{
    if (!p)
        return;
    pthread_mutex_destroy(&p->mu);
    free(p);
}

bool oauth_picks_get(oauth_picks_t *p, const char *user, const char *provider_key,
                     const char *connector_id, const char *resource, char id[OAUTH_PICK_ID_MAX],
                     oauth_pick_ticket_t *ticket)
{
    char key[PICK_KEY_MAX];
    size_t len = 0;
    bool hit = false;
    memset(ticket, 0, sizeof(*ticket));
    if (!p || !pick_key(user, provider_key, connector_id, resource, key, &len))
        return false;
    uint64_t h = pick_fnv(key, len);
    unsigned u = pick_users(user);
    int64_t now = pick_mono_ms();
    pthread_mutex_lock(&p->mu);
    const pick_slot_t *s = &p->slots[h % PICK_SLOTS];
    if (s->hash == h && s->users == u && s->gen == p->gens[u] && s->id[0] &&
        now - s->read_ms < (int64_t)p->bound_ms && strcmp(s->key, key) == 0) {
        memcpy(id, s->id, OAUTH_PICK_ID_MAX);
        hit = true;
    }
    ticket->gen = p->gens[u];
    ticket->read_ms = now;
    ticket->valid = true;
    pthread_mutex_unlock(&p->mu);
    return hit;
}

void oauth_picks_put(oauth_picks_t *p, const char *user, const char *provider_key,
                     const char *connector_id, const char *resource, const char *connection_id,
                     const oauth_pick_ticket_t *ticket)
{
    char key[PICK_KEY_MAX];
    size_t len = 0;
    if (!p || !ticket->valid || strlen(connection_id) >= OAUTH_PICK_ID_MAX ||
        !pick_key(user, provider_key, connector_id, resource, key, &len))
        return;
    uint64_t h = pick_fnv(key, len);
    unsigned u = pick_users(user);
    pthread_mutex_lock(&p->mu);
    if (ticket->gen == p->gens[u]) { /* no write of the user's since the read started */
        pick_slot_t *s = &p->slots[h % PICK_SLOTS];
        s->hash = h;
        s->gen = ticket->gen;
        s->users = u;
        s->read_ms = ticket->read_ms;
        memcpy(s->key, key, len + 1);
        memcpy(s->id, connection_id, strlen(connection_id) + 1);
    }
    pthread_mutex_unlock(&p->mu);
}

void oauth_picks_drop(oauth_picks_t *p, const char *user, const char *provider_key,
                      const char *connector_id, const char *resource)
{
    char key[PICK_KEY_MAX];
    size_t len = 0;
    if (!p || !pick_key(user, provider_key, connector_id, resource, key, &len))
        return;
    uint64_t h = pick_fnv(key, len);
    pthread_mutex_lock(&p->mu);
    pick_slot_t *s = &p->slots[h % PICK_SLOTS];
    if (s->hash == h && strcmp(s->key, key) == 0)
        s->id[0] = '\0';
    pthread_mutex_unlock(&p->mu);
}

void oauth_picks_user_changed(oauth_picks_t *p, const char *user)
{
    if (!p || !user)
        return;
    unsigned u = pick_users(user);
    pthread_mutex_lock(&p->mu);
    p->gens[u]++;
    pthread_mutex_unlock(&p->mu);
}
