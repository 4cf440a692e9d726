/*
 * credexctl keys rewrap: the operator's side of a CMK rotation (docs/KEY_ROTATION.md). It calls
 * store's RewrapDataKeys (the operator's identity, like `backup`) batch after batch until
 * nothing is left, at a bounded rate, and prints a report.
 *
 * The run holds no state of its own: store selects what is not under keywrap's current CMK, so
 * a run killed anywhere is resumed by running the command again, and a finished run rewraps
 * nothing. A pass walks the payloads once in id order; a key written during the pass by a store
 * whose keywrap replica still wraps under the old CMK is left behind it, so when a pass ends
 * with more left than the keys that failed, another pass starts (at most CLI_KEYS_PASSES). The
 * target is checked on every answer: keywrap's CMK changing mid-run means its rollout is not
 * finished, and the run stops rather than chase it.
 *
 * Nothing printed holds key material: store answers ids, versions, counts and reason codes.
 */
#include <jansson.h>
#include <openssl/rand.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "credex/v1/store.pb-c.h"
#include "tools/credexctl/credexctl.h"

#define CLI_KEYS_BATCH_DEF   50
#define CLI_KEYS_BATCH_MAX   100 /* store.proto: limit 1..100 */
#define CLI_KEYS_RATE_DEF    100
#define CLI_KEYS_RATE_MAX    100000
#define CLI_KEYS_PASSES      3
#define CLI_KEYS_LISTED_MAX  1000 /* failures listed in the report; more are only counted */
#define CLI_KEYS_PLAIN_EVERY 2.0  /* seconds between plain progress lines (not a terminal) */
/* A batch of 100 keys is 100 keywrap calls and some 300 database calls: more than the default
 * deadline of one call under load (store caps it at CREDEX_RPC_MAX_DEADLINE_MS, 30 s). */
#define CLI_KEYS_DEADLINE_MS 30000

static void usage(FILE *f)
{
    fputs("usage: credexctl keys rewrap [--batch N] [--rate N] [--dry-run] [--run-id ID] [--json]\n"
          "  Rewrap every stored data key that is not under keywrap's current CMK (CMK\n"
          "  rotation, docs/KEY_ROTATION.md). Resumable and idempotent: run it again after an\n"
          "  interruption; a finished rotation rewraps nothing.\n"
          "  --batch N    keys per call to store, 1..100 (default 50)\n"
          "  --rate N     keys per second at most, 0 for no limit (default 100)\n"
          "  --dry-run    rewrap nothing: print the target CMK and how many keys are left\n"
          "  --run-id ID  the id every audit event of the run carries (default: a fresh one)\n"
          "  --json       print the final report as JSON\n"
          "Progress goes to stderr (a bar on a terminal, else a line every 2 s); the report to\n"
          "stdout. Exit 0 when nothing is left and no key failed, 1 otherwise (a failed key,\n"
          "keys left, store or keywrap unavailable), 2 on a usage error. Identity: the CLI's\n"
          "certificate (CREDEX_TLS_CERT/KEY); store at CREDEX_STORE_ADDR.\n",
          f);
}

typedef struct cli_keys_failure {
    char payload_id[65];
    char secret_id[65];
    uint32_t version;
    char reason[32];
} cli_keys_failure_t;

typedef struct cli_keys_run {
    const cx_config_t *cfg;
    const char *run_id;
    unsigned batch, rate;
    bool json, tty;
    /* keywrap's CMK as the first answer named it */
    Credex__V1__KeyProvider provider;
    char key_id[256];
    /* totals of the run */
    uint64_t rewrapped, already_current, handled, total, remaining;
    unsigned passes;
    /* the failures of the current pass (each pass visits every key still not moved) */
    cli_keys_failure_t *failures;
    size_t nfailures;
    double t0, last_plain;
} cli_keys_run_t;

static double cli_keys_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void cli_keys_sleep(double s)
{
    if (s <= 0)
        return;
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* "local-cmk", "aws-kms": the names configuration and documents use. */
static const char *cli_keys_provider(Credex__V1__KeyProvider p)
{
    return p == CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_LOCAL_CMK ? "local-cmk"
           : p == CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_AWS_KMS ? "aws-kms"
                                                                 : "unspecified";
}

static bool cli_keys_call(cli_keys_run_t *run, const char *after, unsigned limit, bool count_only,
                          rpc_arena_t *arena, const Credex__V1__StoreRewrapDataKeysResponse **out,
                          cx_error_t *err)
{
    Credex__V1__StoreRewrapDataKeysRequest req = CREDEX__V1__STORE_REWRAP_DATA_KEYS_REQUEST__INIT;
    req.run_id = (char *)run->run_id;
    req.after_payload_id = (char *)after;
    req.limit = limit;
    req.count_only = count_only;
    cli_conn_t conn = {
        .addr = run->cfg->addr[CX_SVC_STORE], .peer = "store", .deadline_ms = CLI_KEYS_DEADLINE_MS};
    ProtobufCMessage *reply = NULL;
    if (!cli_call(run->cfg, &conn, &credex__v1__credential_store__descriptor, "RewrapDataKeys",
                  &req.base, NULL, 0, arena, &reply, err))
        return false;
    const Credex__V1__StoreRewrapDataKeysResponse *r =
        (const Credex__V1__StoreRewrapDataKeysResponse *)reply;
    if (run->key_id[0] == '\0') {
        run->provider = r->target_key_provider;
        snprintf(run->key_id, sizeof run->key_id, "%s", r->target_key_id);
    } else if (r->target_key_provider != run->provider ||
               strcmp(r->target_key_id, run->key_id) != 0) {
        return cx_error_set(
            err, CX_ERR_FAILED_PRECONDITION,
            "keywrap's current CMK changed during the run (from %s %s to %s %.255s): "
            "finish rolling out keywrap's new configuration, then run again",
            cli_keys_provider(run->provider), run->key_id,
            cli_keys_provider(r->target_key_provider), r->target_key_id);
    }
    *out = r;
    return true;
}

static void cli_keys_progress(cli_keys_run_t *run, bool last)
{
    double now = cli_keys_now(), el = now - run->t0;
    double rate = el > 0 ? (double)run->handled / el : 0;
    uint64_t total = run->total > run->handled ? run->total : run->handled;
    uint64_t left = total - run->handled;
    double eta = rate > 0 ? (double)left / rate : 0;
    if (run->tty) {
        char bar[31];
        size_t fill = total ? (size_t)(30 * run->handled / total) : 30;
        for (size_t i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        fprintf(stderr, "\r\033[Krewrap [%s] %llu/%llu keys  %.1f keys/s  ETA %.0f s%s", bar,
                (unsigned long long)run->handled, (unsigned long long)total, rate, eta,
                last ? "\n" : "");
        fflush(stderr);
        return;
    }
    if (!last && now - run->last_plain < CLI_KEYS_PLAIN_EVERY)
        return;
    run->last_plain = now;
    fprintf(stderr, "rewrap: %llu/%llu keys, %.1f keys/s, ETA %.0f s\n",
            (unsigned long long)run->handled, (unsigned long long)total, rate, eta);
}

/* A failure of this pass, kept for the report (the first CLI_KEYS_LISTED_MAX). */
static void cli_keys_note_failure(cli_keys_run_t *run, const Credex__V1__StoreRewrapFailure *f)
{
    if (run->nfailures < CLI_KEYS_LISTED_MAX) {
        cli_keys_failure_t *k = &run->failures[run->nfailures];
        snprintf(k->payload_id, sizeof k->payload_id, "%s", f->payload_id);
        snprintf(k->secret_id, sizeof k->secret_id, "%s", f->secret_id);
        snprintf(k->reason, sizeof k->reason, "%s", f->reason);
        k->version = f->version;
    }
    run->nfailures++;
}

/* Keep the rate: the keys handled so far may not have taken less than handled / rate. */
static void cli_keys_pace(const cli_keys_run_t *run)
{
    if (run->rate)
        cli_keys_sleep((double)run->handled / run->rate - (cli_keys_now() - run->t0));
}

/* One pass over every key not under the target, from the first payload id. */
static bool cli_keys_pass(cli_keys_run_t *run, cx_error_t *err)
{
    char after[65] = "";
    unsigned limit = run->batch;
    if (run->rate && run->rate < limit)
        limit = run->rate; /* a call is never more than a second's worth of keys */
    run->nfailures = 0;
    run->passes++;
    for (;;) {
        rpc_arena_t *arena = rpc_arena_new(0);
        const Credex__V1__StoreRewrapDataKeysResponse *r = NULL;
        bool ok = cli_keys_call(run, after, limit, false, arena, &r, err);
        if (ok) {
            run->rewrapped += r->rewrapped;
            run->already_current += r->already_current;
            run->handled += r->rewrapped + r->already_current + r->n_failures;
            /* store counts at the end of a pass only; in between, the last count less the
             * keys moved since (a run that fails mid-pass reports that) */
            uint64_t gone = (uint64_t)r->rewrapped + r->already_current;
            if (r->done)
                run->remaining = r->remaining;
            else
                run->remaining = run->remaining > gone ? run->remaining - gone : 0;
            for (size_t i = 0; i < r->n_failures; i++)
                cli_keys_note_failure(run, r->failures[i]);
            snprintf(after, sizeof after, "%s", r->next_after_payload_id);
        }
        bool done = ok && (r->done || after[0] == '\0');
        rpc_arena_free(arena);
        if (!ok)
            return false;
        cli_keys_progress(run, false);
        if (done)
            return true;
        cli_keys_pace(run);
    }
}

static void cli_keys_report_text(const cli_keys_run_t *run, bool dry_run, double el)
{
    printf("run id: %s\n", run->run_id);
    printf("target: %s %s\n", cli_keys_provider(run->provider), run->key_id);
    if (!dry_run) {
        printf("rewrapped: %llu\n", (unsigned long long)run->rewrapped);
        printf("already current: %llu\n", (unsigned long long)run->already_current);
        printf("failures: %zu\n", run->nfailures);
        for (size_t i = 0; i < run->nfailures && i < CLI_KEYS_LISTED_MAX; i++) {
            const cli_keys_failure_t *f = &run->failures[i];
            printf("  payload %s secret %s version %u: %s\n",
                   f->payload_id[0] ? f->payload_id : "-", f->secret_id[0] ? f->secret_id : "-",
                   f->version, f->reason);
        }
        if (run->nfailures > CLI_KEYS_LISTED_MAX)
            printf("  ... and %zu more (store's log: store.key_rewrap_failed)\n",
                   run->nfailures - CLI_KEYS_LISTED_MAX);
    }
    printf("remaining: %llu\n", (unsigned long long)run->remaining);
    if (!dry_run) {
        printf("passes: %u\n", run->passes);
        printf("duration: %.2f s (%.1f keys/s)\n", el, el > 0 ? (double)run->handled / el : 0.0);
    }
}

static int cli_keys_report_json(const cli_keys_run_t *run, bool dry_run, double el)
{
    json_t *fails = json_array();
    for (size_t i = 0; i < run->nfailures && i < CLI_KEYS_LISTED_MAX; i++) {
        const cli_keys_failure_t *f = &run->failures[i];
        json_array_append_new(fails, json_pack("{s:s, s:s, s:I, s:s}", "payload_id", f->payload_id,
                                               "secret_id", f->secret_id, "version",
                                               (json_int_t)f->version, "reason", f->reason));
    }
    json_t *doc = json_pack(
        "{s:s, s:b, s:{s:s, s:s}, s:I, s:I, s:I, s:o, s:I, s:I, s:I, s:f}", "run_id", run->run_id,
        "dry_run", dry_run, "target", "key_provider", cli_keys_provider(run->provider), "key_id",
        run->key_id, "rewrapped", (json_int_t)run->rewrapped, "already_current",
        (json_int_t)run->already_current, "failed", (json_int_t)run->nfailures, "failures", fails,
        "remaining", (json_int_t)run->remaining, "passes", (json_int_t)run->passes, "duration_ms",
        (json_int_t)(el * 1000), "keys_per_second", el > 0 ? (double)run->handled / el : 0.0);
    char *text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(doc);
    if (!text) {
        fprintf(stderr, "credexctl: internal: cannot format the report\n");
        return CLI_FAIL;
    }
    printf("%s\n", text);
    free(text);
    return CLI_OK;
}

static int cli_keys_rewrap(cli_keys_run_t *run, bool dry_run)
{
    cx_error_t err = {0};
    run->t0 = cli_keys_now();
    run->failures = calloc(CLI_KEYS_LISTED_MAX, sizeof(*run->failures));
    if (!run->failures) {
        cx_error_set(&err, CX_ERR_RESOURCE_EXHAUSTED, "out of memory");
        return cli_fail(&err);
    }
    /* What is left before the run: the total of the progress display, and all of a dry run. */
    rpc_arena_t *arena = rpc_arena_new(0);
    const Credex__V1__StoreRewrapDataKeysResponse *r = NULL;
    bool ok = cli_keys_call(run, "", 0, true, arena, &r, &err);
    if (ok)
        run->total = run->remaining = r->remaining;
    rpc_arena_free(arena);
    bool started = false;
    if (ok && !dry_run && run->total > 0) {
        started = true;
        fprintf(stderr, "rewrap: %llu keys to move under %s %s (run %s)\n",
                (unsigned long long)run->total, cli_keys_provider(run->provider), run->key_id,
                run->run_id);
        do
            ok = cli_keys_pass(run, &err);
        while (ok && run->remaining > run->nfailures && run->passes < CLI_KEYS_PASSES);
        cli_keys_progress(run, true);
    }
    double el = cli_keys_now() - run->t0;
    int rc = CLI_OK;
    /* A failed call still reports what the run did before it (when it did anything). */
    if (ok || started)
        rc = run->json ? cli_keys_report_json(run, dry_run, el)
                       : (cli_keys_report_text(run, dry_run, el), CLI_OK);
    fflush(stdout);
    free(run->failures);
    if (!ok) {
        cli_fail(&err);
        if (started)
            fprintf(stderr, "credexctl: the keys above are moved; run the command again to go on "
                            "(docs/KEY_ROTATION.md)\n");
        return CLI_FAIL;
    }
    if (rc != CLI_OK || run->remaining > 0 || run->nfailures > 0)
        return CLI_FAIL;
    return CLI_OK;
}

int cmd_keys(const cx_config_t *cfg, int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
        usage(argc < 1 ? stderr : stdout);
        return argc < 1 ? CLI_USAGE : CLI_OK;
    }
    if (strcmp(argv[0], "rewrap") != 0)
        return cli_usage_error("keys", "unknown subcommand (see credexctl keys --help)");
    const char *batch_s = NULL, *rate_s = NULL, *run_id = NULL, *pos[1];
    bool help = false, dry_run = false, json = false;
    size_t npos = 0;
    const cli_opt_t opts[] = {{.name = "batch", .kind = CLI_OPT_VALUE, .value = &batch_s},
                              {.name = "rate", .kind = CLI_OPT_VALUE, .value = &rate_s},
                              {.name = "run-id", .kind = CLI_OPT_VALUE, .value = &run_id},
                              {.name = "dry-run", .kind = CLI_OPT_FLAG, .flag = &dry_run},
                              {.name = "json", .kind = CLI_OPT_FLAG, .flag = &json},
                              {0}};
    if (!cli_parse("keys rewrap", argc - 1, argv + 1, opts, pos, 0, &npos, &help))
        return CLI_USAGE;
    if (help) {
        usage(stdout);
        return CLI_OK;
    }
    uint64_t batch = CLI_KEYS_BATCH_DEF, rate = CLI_KEYS_RATE_DEF;
    if (batch_s && !cli_parse_uint(batch_s, 1, CLI_KEYS_BATCH_MAX, &batch))
        return cli_usage_error("keys rewrap", "--batch must be 1..%d", CLI_KEYS_BATCH_MAX);
    if (rate_s && !cli_parse_uint(rate_s, 0, CLI_KEYS_RATE_MAX, &rate))
        return cli_usage_error("keys rewrap", "--rate must be 0..%d", CLI_KEYS_RATE_MAX);
    char fresh[32];
    if (run_id) {
        if (cli_check_field("keys rewrap", "--run-id", "run_id", run_id) != CLI_OK)
            return CLI_USAGE;
    } else {
        unsigned char rnd[10];
        if (RAND_bytes(rnd, sizeof rnd) != 1) {
            fprintf(stderr, "credexctl: internal: no random run id\n");
            return CLI_FAIL;
        }
        memcpy(fresh, "rw-", 4);
        for (size_t i = 0; i < sizeof rnd; i++)
            snprintf(fresh + 3 + 2 * i, 3, "%02x", rnd[i]);
        run_id = fresh;
    }
    cli_keys_run_t run = {.cfg = cfg,
                          .run_id = run_id,
                          .batch = (unsigned)batch,
                          .rate = (unsigned)rate,
                          .json = json,
                          .tty = isatty(STDERR_FILENO) == 1};
    return cli_keys_rewrap(&run, dry_run);
}
