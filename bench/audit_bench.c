/*
 * audit_bench: the cost of the audit record every retrieve writes before its value leaves
 * (store's group commit, services/store/audit_batch.c), against a running MongoDB-wire server.
 *
 *   audit_bench [--uri mongodb://127.0.0.1:27018] [--db credex_audit_bench]
 *               [--writers 1,8,32] [--seconds 5] [--batch-max 64] [--cpu-of PIDDIR]
 *
 * N writer threads each write events like the one a retrieve writes (`secret.retrieved`, the
 * same fields and sizes) through one store_audit_batch_t, each waiting for its own event to be
 * written, as a retrieve does. Per level it prints events/s, latency, how many inserts carried
 * them (events per insert is the group commit's effect), and with --cpu-of (scripts/run's
 * .run/pids) the CPU time per event of every process of the stack there, the database among
 * them, and of this program (the encoding and the driver: store's own share of the write).
 * --batch-max 1 turns group commit off, for comparison. The database (a scratch one, never
 * the stack's own) gets the collections and indexes store creates, and is dropped at the end.
 */
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_kit.h"
#include "common/mdb/mdb.h"
#include "services/store/store_internal.h"

struct ctx {
    mdb_t *db;
    store_audit_batch_t *batch;
};

static bool write_event(void *p, int caller, unsigned long seq, cx_error_t *err)
{
    struct ctx *x = p;
    char id[40], corr[40];
    snprintf(id, sizeof(id), "evt_BENCH%05d%017lu", caller, seq);
    snprintf(corr, sizeof(corr), "bench-%d-%lu", caller, seq);
    Credex__V1__ResourceContext rc = CREDEX__V1__RESOURCE_CONTEXT__INIT;
    rc.resource_type = "mcp_server";
    rc.resource_id = "github-prod";
    Credex__V1__Owner ow = CREDEX__V1__OWNER__INIT;
    ow.owner_type = CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER;
    ow.owner_id = "bench-user";
    Credex__V1__AuditEvent__AttributesEntry a[3] = {
        CREDEX__V1__AUDIT_EVENT__ATTRIBUTES_ENTRY__INIT,
        CREDEX__V1__AUDIT_EVENT__ATTRIBUTES_ENTRY__INIT,
        CREDEX__V1__AUDIT_EVENT__ATTRIBUTES_ENTRY__INIT};
    a[0].key = "version", a[0].value = "1";
    a[1].key = "kind", a[1].value = "api_key";
    a[2].key = "via", a[2].value = "gateway";
    Credex__V1__AuditEvent__AttributesEntry *ap[3] = {&a[0], &a[1], &a[2]};
    Credex__V1__AuditEvent e = CREDEX__V1__AUDIT_EVENT__INIT;
    e.event_id = id;
    e.created_at_ms = mdb_now_ms();
    e.event_type = "secret.retrieved";
    e.outcome = CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_SUCCESS;
    e.reason = "";
    e.resource_type = "secret_ref";
    e.resource_id = "sec_5NPKMVKYTE6Z2RVKV37EW1BN4H";
    e.subject_user_id = "bench-user";
    e.caller_kind = CREDEX__V1__CALLER_KIND__CALLER_KIND_SERVICE;
    e.intended_use = "mcp_server_env";
    e.resource_context = &rc;
    e.actor_id = "bench-user";
    e.peer = "agent-runtime";
    e.correlation_id = corr;
    e.owner = &ow;
    e.attributes = ap;
    e.n_attributes = 3;
    bson_t doc;
    store_audit_encode(&e, &doc);
    mongoc_client_t *c = mdb_client_pop(x->db, err);
    bool ok = c != NULL && store_audit_batch_write(x->batch, x->db, c, &doc, err);
    mdb_client_push(x->db, c);
    bson_destroy(&doc);
    return ok;
}

static void drop(mdb_t *db, const char *name)
{
    cx_error_t err;
    bson_error_t berr;
    mongoc_client_t *c = mdb_client_pop(db, &err);
    if (c == NULL)
        return;
    mongoc_database_t *d = mongoc_client_get_database(c, name);
    if (!mongoc_database_drop(d, &berr))
        fprintf(stderr, "audit_bench: could not drop %s: %s\n", name, berr.message);
    mongoc_database_destroy(d);
    mdb_client_push(db, c);
}

static void usage(void)
{
    fprintf(stderr, "usage: audit_bench [--uri URI] [--db NAME] [--writers 1,8,32] [--seconds S] "
                    "[--batch-max 1..1000] [--cpu-of PIDDIR]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *uri = "mongodb://127.0.0.1:27018", *dbname = "credex_audit_bench";
    const char *writers = "1,8,32", *cpu_of = NULL;
    double seconds = 5;
    long batch_max = 64;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            usage();
        if (strcmp(argv[i], "--uri") == 0)
            uri = v;
        else if (strcmp(argv[i], "--db") == 0)
            dbname = v;
        else if (strcmp(argv[i], "--writers") == 0)
            writers = v;
        else if (strcmp(argv[i], "--seconds") == 0)
            seconds = atof(v);
        else if (strcmp(argv[i], "--batch-max") == 0)
            batch_max = atol(v);
        else if (strcmp(argv[i], "--cpu-of") == 0)
            cpu_of = v;
        else
            usage();
        i++;
    }
    if (batch_max < 1 || batch_max > 1000 || strcmp(dbname, "credex") == 0)
        usage();
    bench_procs_t procs = {0};
    if (cpu_of != NULL)
        bench_procs_load(&procs, cpu_of);
    cx_error_t err;
    mdb_options_t o = {
        .uri = uri, .db = dbname, .timeout_ms = 3000, .pool_max = 64, .app_name = "audit_bench"};
    mdb_t *db = NULL;
    if (!mdb_open(&db, &o, &err) || !mdb_init_indexes(db, NULL, NULL, NULL, &err)) {
        fprintf(stderr, "audit_bench: %s\n", err.message);
        return 1;
    }
    struct ctx x = {.db = db, .batch = store_audit_batch_new((unsigned)batch_max)};
    printf("audit_bench: secret.retrieved events into %s on %s, group commit of up to %ld\n",
           dbname, uri, batch_max);
    char list[256];
    snprintf(list, sizeof(list), "%s", writers);
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        int n = atoi(tok);
        store_audit_batch_stats_t s0, s1;
        bench_cpu_t before;
        bench_result_t r;
        store_audit_batch_stats(x.batch, &s0);
        bench_cpu_snapshot(&procs, &before);
        bench_run(write_event, &x, n, seconds, &r);
        store_audit_batch_stats(x.batch, &s1);
        uint64_t inserts = s1.inserts - s0.inserts, events = s1.events - s0.events;
        printf("writers=%-3d events=%-7zu errors=%-4zu events_per_s=%-6.0f p50_us=%-6u "
               "p99_us=%-6u inserts=%llu events_per_insert=%.1f\n",
               n, r.calls, r.errors, r.per_s, r.p50_us, r.p99_us, (unsigned long long)inserts,
               inserts ? (double)events / (double)inserts : 0.0);
        if (r.errors > 0)
            printf("  first error: %s\n", r.first_error);
        if (r.calls > 0) {
            double us[BENCH_MAX_PROCS], self_us;
            bench_cpu_per_call(&procs, &before, r.calls, us, &self_us);
            printf("  cpu_us_per_event");
            for (size_t i = 0; i < procs.n; i++)
                if (us[i] >= 0)
                    printf(" %s=%.0f", procs.proc[i].name, us[i]);
            printf(" bench=%.0f\n", self_us);
        }
    }
    store_audit_batch_free(x.batch);
    drop(db, dbname);
    mdb_close(db);
    return 0;
}
