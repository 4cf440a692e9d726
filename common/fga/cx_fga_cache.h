/*
 * cx_fga_cache: the in-memory table of Check answers behind cx_fga_check (see cx_fga.h for the
 * behaviour callers see, and docs/AUTHZ_CACHE.md for the bounds). Internal to common/fga: it
 * knows nothing of HTTP; cx_fga.c feeds it the watcher's poll outcomes and the client's own
 * writes. Every function takes the current CLOCK_MONOTONIC time in nanoseconds, so that the
 * unit tests can drive time and interleavings deterministically.
 *
 * Coherence rests on two rules:
 *   - an answer is served only while the watcher is fresh: the last successful poll of the
 *     changelog started less than fresh_ns ago (a failed poll makes it unfresh at once);
 *   - an answer is inserted only if the generation read before its HTTP call is still the
 *     current one (every flush, poll failure and return to freshness bumps it), so a live
 *     answer computed before a change can never outlive the flush that change caused.
 *
 * Thread-safety: every function may be called from any thread; one mutex, held for a bounded
 * chain walk (at most CX_FGA_CACHE_CHAIN_MAX entries), never across I/O.
 */
#ifndef CREDEX_COMMON_FGA_CX_FGA_CACHE_H
#define CREDEX_COMMON_FGA_CX_FGA_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CX_FGA_CACHE_CHAIN_MAX 8

typedef struct cx_fga_cache cx_fga_cache_t;

/* ttl_ns: life of an entry; fresh_ns: how long a successful poll keeps answers usable;
 * max_entries: a power of two is not required. NULL on out-of-memory. The cache starts
 * unfresh: nothing is served or stored before the first successful poll. */
cx_fga_cache_t *cx_fga_cache_new(int64_t ttl_ns, int64_t fresh_ns, size_t max_entries);
void cx_fga_cache_free(cx_fga_cache_t *c); /* NULL-safe */

/* Look key (any bytes) up. true and *allowed on a usable entry. Always sets *gen to the
 * generation to hand to cx_fga_cache_put after the live call. */
bool cx_fga_cache_get(cx_fga_cache_t *c, const char *key, size_t keylen, int64_t now, bool *allowed,
                      uint64_t *gen);

/* Store a live answer, unless the generation moved since cx_fga_cache_get returned gen or the
 * watcher is not fresh now. Returns whether it was stored (for tests). When the table is full
 * or the key's chain is long, one entry is evicted (see cx_fga_cache.c). */
bool cx_fga_cache_put(cx_fga_cache_t *c, const char *key, size_t keylen, bool allowed, uint64_t gen,
                      int64_t now);

/* Forget every answer (O(1): entries of an old generation are dead and reclaimed lazily). */
void cx_fga_cache_flush(cx_fga_cache_t *c);

/* A poll that started at `started` succeeded; `changed`: it returned at least one change.
 * Flushes when changed or when the cache was not valid (first poll, or after a failure). */
void cx_fga_cache_poll_ok(cx_fga_cache_t *c, int64_t started, bool changed);

/* A poll failed: flush, and serve nothing until a poll succeeds again. */
void cx_fga_cache_poll_failed(cx_fga_cache_t *c);

typedef struct cx_fga_cache_counts {
    uint64_t flushes, polls, poll_failures;
    size_t entries; /* allocated entries, flushed ones not yet reclaimed included */
    bool fresh;
} cx_fga_cache_counts_t;

void cx_fga_cache_counts(cx_fga_cache_t *c, int64_t now, cx_fga_cache_counts_t *out);

#endif
