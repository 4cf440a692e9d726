/* store audit group commit: concurrent audit writes share one insert.
 *
 * Leader/follower, no thread of its own: a caller queues its document and, if no write is in
 * flight, becomes the writer: it takes up to `max` queued documents (its own among them, unless
 * the queue was already longer), writes them with one insert, records the result in each of
 * them, and hands over by broadcasting. Everyone else waits on the condition variable until
 * their own document has a result; whoever wakes to find no write in flight and its document
 * still queued becomes the next writer. So events that arrive while an insert is in flight are
 * written together by the next one, and every caller still learns its own event's result (a
 * failed insert fails every event it carried: no audit record, no material; except that one
 * event the database or the driver refuses on its own does not fail the others, see
 * store_audit_batch_insert).
 *
 * Termination: a queued document is always either in the writer's batch or waiting for a
 * caller that is itself waiting, and each insert is bounded by the database timeouts of mdb;
 * nothing is written after the last caller has its answer, so there is nothing to flush or lose
 * at shutdown (the server stops its handlers before store_free).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/metrics/cx_metrics.h"
#include "services/store/store_internal.h"

typedef struct store_audit_req {
    struct store_audit_req *next;
    const bson_t *doc;
    bool done, ok;
    cx_error_t err;
} store_audit_req_t;

struct store_audit_batch {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned max;
    bool writing;
    store_audit_req_t *head, *tail;
    /* The writer's scratch (only the current writer touches it). */
    store_audit_req_t **batch;
    const bson_t **docs;
    store_audit_batch_stats_t stats;
};

store_audit_batch_t *store_audit_batch_new(unsigned max)
{
    store_audit_batch_t *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->max = max ? max : 1;
    b->batch = calloc(b->max, sizeof(*b->batch));
    b->docs = calloc(b->max, sizeof(*b->docs));
    if (!b->batch || !b->docs) {
        free(b->batch);
        free(b->docs);
        free(b);
        return NULL;
    }
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    return b;
}

void store_audit_batch_free(store_audit_batch_t *b)
{
    if (!b)
        return;
    /* Every caller has returned (handlers are stopped first), so the queue is empty. */
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b->batch);
    free(b->docs);
    free(b);
}

static void store_audit_req_set(store_audit_req_t *r, bool ok, const cx_error_t *err)
{
    r->ok = ok;
    if (!ok)
        cx_error_copy(&r->err, err);
}

/* One event alone: exactly the write of one insert_one per event. */
static bool store_audit_insert_one(mdb_t *db, mongoc_client_t *c, store_audit_req_t *r)
{
    cx_error_t err;
    bool ok = mdb_insert_one(db, c, MDB_COLL_AUDIT_EVENTS, r->doc, &err);
    store_audit_req_set(r, ok, ok ? NULL : &err);
    return ok;
}

/* Write batch[0..n) with one insert (the write concern of mdb applies) and record each event's
 * result in it. One malformed or refused event must not fail the others (an AppendAuditEvent
 * caller could otherwise fail concurrent retrievals): when the failure is known to concern one
 * document (mdb_insert_many's *refused), the unwritten events are written one by one
 * (*isolated). Returns false when the batch failed as a whole. */
static bool store_audit_batch_insert(mdb_t *db, mongoc_client_t *c, store_audit_req_t **batch,
                                     const bson_t **docs, size_t n, bool *isolated)
{
    cx_error_t err;
    size_t refused = MDB_INSERT_UNKNOWN;
    cx_metrics_observe(cx_metrics_histogram("credex_store_audit_batch_size",
                                            "Audit events written by one group commit.",
                                            &cx_metrics_sizes, NULL, NULL, 0),
                       n);
    if (n == 1)
        return store_audit_insert_one(db, c, batch[0]);
    if (mdb_insert_many(db, c, MDB_COLL_AUDIT_EVENTS, docs, n, &refused, &err)) {
        for (size_t i = 0; i < n; i++)
            store_audit_req_set(batch[i], true, NULL);
        return true;
    }
    if (refused == MDB_INSERT_UNKNOWN) {
        for (size_t i = 0; i < n; i++)
            store_audit_req_set(batch[i], false, &err);
        return false;
    }
    *isolated = true;
    size_t from = refused == n ? 0 : refused + 1;
    for (size_t i = 0; i < n && i < refused; i++)
        store_audit_req_set(batch[i], true, NULL);
    if (refused < n)
        store_audit_req_set(batch[refused], false, &err);
    for (size_t i = from; i < n; i++)
        store_audit_insert_one(db, c, batch[i]);
    return true;
}

bool store_audit_batch_write(store_audit_batch_t *b, mdb_t *db, mongoc_client_t *c,
                             const bson_t *doc, cx_error_t *err)
{
    store_audit_req_t me = {.doc = doc};
    pthread_mutex_lock(&b->mu);
    if (b->tail)
        b->tail->next = &me;
    else
        b->head = &me;
    b->tail = &me;
    while (!me.done) {
        if (b->writing) {
            pthread_cond_wait(&b->cv, &b->mu);
            continue;
        }
        /* Become the writer for the head of the queue (FIFO: no event waits behind later
         * ones for more than the batches already ahead of it). */
        size_t n = 0;
        while (b->head && n < b->max) {
            store_audit_req_t *r = b->head;
            b->head = r->next;
            r->next = NULL;
            b->batch[n] = r;
            b->docs[n] = r->doc;
            n++;
        }
        if (!b->head)
            b->tail = NULL;
        b->writing = true;
        pthread_mutex_unlock(&b->mu);

        /* Results go into the waiting callers' records outside the lock: their owners read
         * them only after seeing done, which is set under the lock below. */
        bool isolated = false;
        bool ok = store_audit_batch_insert(db, c, b->batch, b->docs, n, &isolated);

        pthread_mutex_lock(&b->mu);
        for (size_t i = 0; i < n; i++) {
            b->batch[i]->done = true; /* from here on its owner may return: its stack is gone */
            b->batch[i] = NULL;
            b->docs[i] = NULL;
        }
        b->stats.inserts++;
        b->stats.events += n;
        if (n > 1)
            b->stats.grouped++;
        if (n > b->stats.largest)
            b->stats.largest = n;
        if (!ok)
            b->stats.failed++;
        if (isolated)
            b->stats.isolated++;
        b->writing = false;
        pthread_cond_broadcast(&b->cv);
    }
    pthread_mutex_unlock(&b->mu);
    if (!me.ok)
        cx_error_copy(err, &me.err);
    return me.ok;
}

void store_audit_batch_stats(store_audit_batch_t *b, store_audit_batch_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    *out = b->stats;
    pthread_mutex_unlock(&b->mu);
}
