/*
 * credexctl backup: see cmd_backup.h and docs/BACKUP_RESTORE.md.
 *
 * A backup is a directory: one file of concatenated BSON documents per collection (the
 * mongodump layout, written from a cursor, so no collection is ever held in memory), the
 * OpenFGA store's tuples as JSON lines, and manifest.json, written last through a rename: a
 * directory without a manifest is an interrupted backup and nothing accepts it. The manifest
 * holds counts and a SHA-256 per file, and which key provider and CMK the data keys are wrapped
 * under; never key material, and the files hold no plaintext (payloads are ciphertext and
 * wrapped keys, as stored).
 *
 * The key material stays outside the backup. verify and restore therefore ask store's
 * CheckDataKeys whether this deployment's keywrap unwraps a sample of the backup's data keys
 * under their contexts: a backup restored under other key material fails loudly here, and
 * every retrieval of it fails closed with integrity_error.
 */
#include "tools/credexctl/cmd_backup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/fga/cx_fga.h"
#include "common/mdb/mdb.h"
#include "credex/v1/store.pb-c.h"
#include "tools/credexctl/credexctl.h"

#define BK_FORMAT       "credex-backup/1"
#define BK_MANIFEST     "manifest.json"
#define BK_MANIFEST_TMP "manifest.json.tmp"
#define BK_TUPLES       "openfga_tuples.jsonl"
#define BK_MANIFEST_MAX (1024 * 1024)
#define BK_LINE_MAX     1024 /* one tuple as a JSON line */
#define BK_BATCH_DOCS   256
#define BK_BATCH_BYTES  (8u << 20)
#define BK_PROBES_MAX   64 /* store.proto: CheckDataKeys takes at most 64 probes */
#define BK_SAMPLE_DEF   1000
#define BK_SAMPLE_MAX   1000000
#define BK_KEYS_MAX     16 /* distinct (provider, CMK) pairs listed in a manifest */

/* Every collection of docs/DATA_MODEL.md, in the order they are written and restored. */
static const char *const bk_collections[] = {MDB_COLL_SECRET_REFS,        MDB_COLL_PAYLOADS,
                                             MDB_COLL_AUDIT_EVENTS,       MDB_COLL_OAUTH_CONNECTORS,
                                             MDB_COLL_CONNECTIONS,        MDB_COLL_OAUTH_FLOWS,
                                             MDB_COLL_MIGRATION_PREVIEWS, MDB_COLL_LEASES};
#define BK_NCOLL  (sizeof(bk_collections) / sizeof(bk_collections[0]))
#define BK_NFILES (BK_NCOLL + 1) /* and the tuples */

static void usage(FILE *f)
{
    fputs("usage: credexctl backup create --out DIR\n"
          "       credexctl backup verify --from DIR [--no-key-check] [--key-sample N]\n"
          "       credexctl backup restore --from DIR [--wipe] [--key-sample N]\n"
          "Backup and restore of credex's MongoDB collections and OpenFGA tuples\n"
          "(docs/BACKUP_RESTORE.md). The key material (the local-cmk key file, the KMS key) is\n"
          "NOT in a backup and must stay available: verify and restore check that this\n"
          "deployment's keywrap unwraps the backup's data keys.\n"
          "  create --out DIR     DIR must not exist or be empty; manifest.json is written last\n"
          "  verify --from DIR    checksums and counts of every file, then the key check\n"
          "  restore --from DIR   checksums first (nothing is written on a mismatch), then the\n"
          "                       collections and tuples, then the key check; refuses a target\n"
          "                       database with credex documents or an OpenFGA store with tuples\n"
          "                       the backup lacks unless --wipe (delete them first)\n"
          "  --key-sample N       data keys checked, chosen at random (default 1000, 0: all)\n"
          "  --no-key-check       verify the files only\n"
          "Needs CREDEX_MONGO_URI/_DB, CREDEX_OPENFGA_URL/_STORE_ID[/_MODEL_ID], the store's\n"
          "address and the CLI's certificate (source .run/env).\n",
          f);
}

/* ---- checksums ---------------------------------------------------------------------------- */

typedef struct bk_sum {
    EVP_MD_CTX *md;
    uint64_t count, bytes;
} bk_sum_t;

static bool bk_sum_init(bk_sum_t *s, cx_error_t *err)
{
    *s = (bk_sum_t){.md = EVP_MD_CTX_new()};
    if (!s->md || EVP_DigestInit_ex(s->md, EVP_sha256(), NULL) != 1)
        return cx_error_set(err, CX_ERR_INTERNAL, "SHA-256 unavailable");
    return true;
}

static void bk_sum_add(bk_sum_t *s, const void *p, size_t n)
{
    EVP_DigestUpdate(s->md, p, n);
    s->bytes += n;
}

/* Lower-case hex of the digest; frees the context. */
static void bk_sum_final(bk_sum_t *s, char hex[65])
{
    unsigned char d[32];
    unsigned int dl = 0;
    EVP_DigestFinal_ex(s->md, d, &dl);
    for (unsigned i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    EVP_MD_CTX_free(s->md);
    s->md = NULL;
}

static void bk_sum_free(bk_sum_t *s)
{
    EVP_MD_CTX_free(s->md);
    s->md = NULL;
}

/* ---- files ------------------------------------------------------------------------------- */

static void bk_path(char *buf, size_t sz, const char *dir, const char *name, const char *ext)
{
    snprintf(buf, sz, "%s/%s%s", dir, name, ext);
}

static bool bk_io_error(cx_error_t *err, const char *what, const char *name)
{
    return cx_error_set(err, CX_ERR_INTERNAL, "%s %s: %s", what, name, strerror(errno));
}

/* Flush and fsync f, then close it: a backup file is on disk before the manifest names it. */
static bool bk_close_synced(FILE *f, const char *name, cx_error_t *err)
{
    bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (fclose(f) != 0)
        ok = false;
    return ok ? true : bk_io_error(err, "writing", name);
}

static bool bk_dir_sync(const char *dir, cx_error_t *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    bool ok = fd >= 0 && fsync(fd) == 0;
    if (fd >= 0)
        close(fd);
    return ok ? true : bk_io_error(err, "syncing", dir);
}

/* A fresh backup directory: created, or existing and empty. */
static bool bk_out_dir(const char *dir, cx_error_t *err)
{
    if (mkdir(dir, 0700) == 0)
        return true;
    if (errno != EEXIST)
        return bk_io_error(err, "creating", dir);
    DIR *d = opendir(dir);
    if (!d)
        return bk_io_error(err, "opening", dir);
    struct dirent *e;
    bool empty = true;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            empty = false;
    closedir(d);
    return empty ? true
                 : cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "--out must name a new or empty directory");
}

/* Every document of a BSON file (concatenated documents) in order, hashed as read; doc (may be
 * NULL) sees each. Read by hand rather than with bson_reader so that a length prefix, which
 * the checksum can only condemn at the end of the file, never makes us allocate more than a
 * document may hold. A truncated or malformed file fails. */
typedef bool (*bk_doc_fn)(void *ctx, const bson_t *doc, cx_error_t *err);

#define BK_DOC_MAX (16u * 1024 * 1024) /* MongoDB's largest document */

static bool bk_scan_bson(const char *path, const char *name, bk_sum_t *sum, bk_doc_fn doc,
                         void *ctx, cx_error_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return bk_io_error(err, "opening", name);
    uint8_t *buf = NULL;
    size_t cap = 0;
    bool ok = true;
    for (;;) {
        uint8_t len4[4];
        size_t got = fread(len4, 1, 4, f);
        if (got == 0 && feof(f))
            break;
        uint32_t len = (uint32_t)len4[0] | (uint32_t)len4[1] << 8 | (uint32_t)len4[2] << 16 |
                       (uint32_t)len4[3] << 24;
        if (got != 4 || len < 5 || len > BK_DOC_MAX) {
            ok = cx_error_set(err, CX_ERR_INTEGRITY, "%s: malformed after document %llu", name,
                              (unsigned long long)sum->count);
            break;
        }
        if (len > cap) {
            uint8_t *nb = realloc(buf, len);
            if (!nb) {
                ok = cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
                break;
            }
            buf = nb;
            cap = len;
        }
        memcpy(buf, len4, 4);
        bson_t b;
        if (fread(buf + 4, 1, len - 4, f) != len - 4 || !bson_init_static(&b, buf, len) ||
            !bson_validate(&b, BSON_VALIDATE_UTF8_ALLOW_NULL, NULL)) {
            ok = cx_error_set(err, CX_ERR_INTEGRITY, "%s: document %llu is malformed or truncated",
                              name, (unsigned long long)sum->count + 1);
            break;
        }
        bk_sum_add(sum, buf, len);
        sum->count++;
        if (doc && !(ok = doc(ctx, &b, err)))
            break;
    }
    if (ok && ferror(f))
        ok = bk_io_error(err, "reading", name);
    fclose(f);
    free(buf);
    return ok;
}

/* Every line of the tuples file, hashed as read. */
typedef bool (*bk_tuple_fn)(void *ctx, const cx_fga_tuple_t *t, cx_error_t *err);

static bool bk_scan_tuples(const char *path, bk_sum_t *sum, bk_tuple_fn fn, void *ctx,
                           cx_error_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return bk_io_error(err, "opening", BK_TUPLES);
    char line[BK_LINE_MAX + 2];
    bool ok = true;
    while (ok && fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        bk_sum_add(sum, line, n);
        sum->count++;
        if (n == 0 || line[n - 1] != '\n') {
            ok = cx_error_set(err, CX_ERR_INTEGRITY, "%s: line %llu is too long or unterminated",
                              BK_TUPLES, (unsigned long long)sum->count);
            break;
        }
        json_error_t je;
        json_t *j = json_loadb(line, n - 1, JSON_REJECT_DUPLICATES, &je);
        cx_fga_tuple_t t;
        if (!json_is_object(j) || json_object_size(j) != 3 ||
            !cx_fga_tuple_set(&t, json_string_value(json_object_get(j, "user")),
                              json_string_value(json_object_get(j, "relation")),
                              json_string_value(json_object_get(j, "object"))))
            ok = cx_error_set(err, CX_ERR_INTEGRITY, "%s: line %llu is not a tuple", BK_TUPLES,
                              (unsigned long long)sum->count);
        json_decref(j);
        if (ok && fn)
            ok = fn(ctx, &t, err);
    }
    if (ok && ferror(f))
        ok = bk_io_error(err, "reading", BK_TUPLES);
    fclose(f);
    return ok;
}

/* ---- connections ------------------------------------------------------------------------- */

static bool bk_mdb_open(const cx_config_t *cfg, mdb_t **m, cx_error_t *err)
{
    mdb_options_t mo = {.uri = cfg->mongo_uri,
                        .db = cfg->mongo_db,
                        .timeout_ms = cfg->mongo_timeout_ms,
                        .write_majority = cfg->mongo_write_majority,
                        .pool_max = 2, /* the command's client and mdb_init_indexes' */
                        .app_name = "credexctl-backup"};
    return mdb_open(m, &mo, err);
}

static cx_fga_t *bk_fga_open(const cx_config_t *cfg, cx_error_t *err)
{
    if (cfg->openfga_store_id[0] == '\0') {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                     "CREDEX_OPENFGA_STORE_ID is not set (source .run/env of a running stack)");
        return NULL;
    }
    /* Pages of a whole store: an operator waits longer than a request path would. */
    cx_fga_options_t o = {.url = cfg->openfga_url,
                          .store_id = cfg->openfga_store_id,
                          .model_id = cfg->openfga_model_id,
                          .timeout_ms = cfg->openfga_timeout_ms * 5};
    return cx_fga_new(&o, err);
}

/* ---- create ------------------------------------------------------------------------------- */

typedef struct bk_keyuse {
    char provider[16];
    char key_id[256];
    uint64_t payloads;
} bk_keyuse_t;

typedef struct bk_entry {
    const char *name; /* collection, or NULL for the tuples */
    char file[128];
    char sha256[65];
    uint64_t count, bytes;
} bk_entry_t;

static void bk_doc_str(const bson_t *doc, const char *key, char *buf, size_t sz)
{
    bson_iter_t it;
    buf[0] = '\0';
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it)) {
        uint32_t n = 0;
        const char *s = bson_iter_utf8(&it, &n);
        if (n < sz)
            memcpy(buf, s, (size_t)n + 1);
    }
}

/* Which provider and CMK each payload's data key is wrapped under (for the manifest). */
static void bk_tally_key(bk_keyuse_t *keys, size_t *nkeys, const bson_t *doc)
{
    char provider[16], key_id[256];
    bk_doc_str(doc, "key_provider", provider, sizeof provider);
    bk_doc_str(doc, "key_id", key_id, sizeof key_id);
    for (size_t i = 0; i < *nkeys; i++)
        if (strcmp(keys[i].provider, provider) == 0 && strcmp(keys[i].key_id, key_id) == 0) {
            keys[i].payloads++;
            return;
        }
    if (*nkeys < BK_KEYS_MAX) {
        bk_keyuse_t *k = &keys[(*nkeys)++];
        memcpy(k->provider, provider, sizeof provider);
        memcpy(k->key_id, key_id, sizeof key_id);
        k->payloads = 1;
    }
}

static bool bk_dump_collection(mdb_t *m, mongoc_client_t *c, const char *dir, bk_entry_t *e,
                               bk_keyuse_t *keys, size_t *nkeys, cx_error_t *err)
{
    char path[4096];
    snprintf(e->file, sizeof e->file, "%s.bson", e->name);
    bk_path(path, sizeof path, dir, e->file, "");
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        if (fd >= 0)
            close(fd);
        return bk_io_error(err, "creating", e->file);
    }
    bk_sum_t sum;
    bool ok = bk_sum_init(&sum, err);
    mongoc_collection_t *coll = mdb_collection(m, c, e->name);
    bson_t filter = BSON_INITIALIZER;
    /* Natural order: a sort would make the server hold the collection; restore needs none. */
    mongoc_cursor_t *cur = ok ? mongoc_collection_find_with_opts(coll, &filter, NULL, NULL) : NULL;
    const bson_t *doc;
    while (ok && cur && mongoc_cursor_next(cur, &doc)) {
        if (fwrite(bson_get_data(doc), 1, doc->len, f) != doc->len) {
            ok = bk_io_error(err, "writing", e->file);
            break;
        }
        bk_sum_add(&sum, bson_get_data(doc), doc->len);
        sum.count++;
        if (strcmp(e->name, MDB_COLL_PAYLOADS) == 0)
            bk_tally_key(keys, nkeys, doc);
    }
    bson_error_t berr;
    if (ok && cur && mongoc_cursor_error(cur, &berr))
        ok = mdb_error_map(&berr, NULL, "reading the collection", err);
    mongoc_cursor_destroy(cur);
    bson_destroy(&filter);
    mongoc_collection_destroy(coll);
    if (!bk_close_synced(f, e->file, ok ? err : NULL))
        ok = false;
    if (ok) {
        e->count = sum.count;
        e->bytes = sum.bytes;
        bk_sum_final(&sum, e->sha256);
    }
    bk_sum_free(&sum);
    return ok;
}

typedef struct bk_tuple_out {
    FILE *f;
    bk_sum_t sum;
} bk_tuple_out_t;

static bool bk_write_tuples(void *ctx, const cx_fga_tuple_t *t, size_t n, cx_error_t *err)
{
    bk_tuple_out_t *o = ctx;
    for (size_t i = 0; i < n; i++) {
        json_t *j = json_pack("{s:s, s:s, s:s}", "user", t[i].user, "relation", t[i].relation,
                              "object", t[i].object);
        char *s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(j);
        if (!s)
            return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        size_t len = strlen(s);
        s[len] = '\n'; /* the NUL becomes the line end; written without it */
        bool ok = len + 1 <= BK_LINE_MAX && fwrite(s, 1, len + 1, o->f) == len + 1;
        if (ok)
            bk_sum_add(&o->sum, s, len + 1);
        free(s);
        if (!ok)
            return cx_error_set(err, CX_ERR_INTERNAL, "writing %s failed", BK_TUPLES);
        o->sum.count++;
    }
    return true;
}

static bool bk_dump_tuples(cx_fga_t *fga, const char *dir, bk_entry_t *e, cx_error_t *err)
{
    char path[4096];
    snprintf(e->file, sizeof e->file, "%s", BK_TUPLES);
    bk_path(path, sizeof path, dir, e->file, "");
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    bk_tuple_out_t o = {.f = fd >= 0 ? fdopen(fd, "wb") : NULL};
    if (!o.f) {
        if (fd >= 0)
            close(fd);
        return bk_io_error(err, "creating", e->file);
    }
    bool ok = bk_sum_init(&o.sum, err) && cx_fga_read_each(fga, NULL, bk_write_tuples, &o, err);
    if (!bk_close_synced(o.f, e->file, ok ? err : NULL))
        ok = false;
    if (ok) {
        e->count = o.sum.count;
        e->bytes = o.sum.bytes;
        bk_sum_final(&o.sum, e->sha256);
    }
    bk_sum_free(&o.sum);
    return ok;
}

static json_t *bk_manifest_json(const cx_config_t *cfg, const bk_entry_t *entries,
                                const bk_keyuse_t *keys, size_t nkeys)
{
    char when[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_t *files = json_array(), *wrapped = json_array();
    for (size_t i = 0; i < BK_NFILES; i++) {
        const bk_entry_t *e = &entries[i];
        json_array_append_new(files,
                              json_pack("{s:s, s:s, s:I, s:I, s:s}", "file", e->file,
                                        e->name ? "collection" : "openfga",
                                        e->name ? e->name : "tuples", "count", (json_int_t)e->count,
                                        "bytes", (json_int_t)e->bytes, "sha256", e->sha256));
    }
    for (size_t i = 0; i < nkeys; i++)
        json_array_append_new(wrapped, json_pack("{s:s, s:s, s:I}", "key_provider",
                                                 keys[i].provider, "key_id", keys[i].key_id,
                                                 "payloads", (json_int_t)keys[i].payloads));
    return json_pack(
        "{s:s, s:s, s:s, s:s, s:o, s:{s:s, s:s}, s:{s:s, s:s, s:o, s:s}}", "format", BK_FORMAT,
        "credex_version", CREDEX_VERSION, "created_at", when, "database", cfg->mongo_db, "files",
        files, "openfga", "store_id", cfg->openfga_store_id, "authorization_model_id",
        cfg->openfga_model_id[0] ? cfg->openfga_model_id : "latest", "keys", "configured_provider",
        cfg->key_provider_name, "configured_cmk_id", cfg->kms_cmk_id, "wrapped_under", wrapped,
        "key_material", "not in this backup: keep the local-cmk key file or the KMS key available");
}

/* The manifest, last: written to a temporary name, synced, renamed, directory synced. */
static bool bk_write_manifest(const char *dir, json_t *manifest, cx_error_t *err)
{
    char tmp[4096], fin[4096];
    bk_path(tmp, sizeof tmp, dir, BK_MANIFEST_TMP, "");
    bk_path(fin, sizeof fin, dir, BK_MANIFEST, "");
    FILE *f = fopen(tmp, "wbx");
    if (!f)
        return bk_io_error(err, "creating", BK_MANIFEST_TMP);
    bool ok =
        json_dumpf(manifest, f, JSON_INDENT(2) | JSON_SORT_KEYS) == 0 && fputc('\n', f) != EOF;
    if (!bk_close_synced(f, BK_MANIFEST_TMP, err) || !ok)
        return ok ? false : bk_io_error(err, "writing", BK_MANIFEST_TMP);
    if (rename(tmp, fin) != 0)
        return bk_io_error(err, "renaming", BK_MANIFEST_TMP);
    return bk_dir_sync(dir, err);
}

static int bk_create(const cx_config_t *cfg, const char *dir)
{
    cx_error_t err = {0};
    mdb_t *m = NULL;
    mongoc_client_t *c = NULL;
    cx_fga_t *fga = NULL;
    json_t *manifest = NULL;
    bk_entry_t entries[BK_NFILES] = {0};
    bk_keyuse_t keys[BK_KEYS_MAX];
    size_t nkeys = 0;
    int rc = CLI_FAIL;
    if (!bk_out_dir(dir, &err))
        return cli_fail(&err);
    if (!(fga = bk_fga_open(cfg, &err)) || !bk_mdb_open(cfg, &m, &err) ||
        !(c = mdb_client_pop(m, &err)))
        goto out;
    for (size_t i = 0; i < BK_NCOLL; i++) {
        entries[i].name = bk_collections[i];
        if (!bk_dump_collection(m, c, dir, &entries[i], keys, &nkeys, &err))
            goto out;
    }
    if (!bk_dump_tuples(fga, dir, &entries[BK_NCOLL], &err))
        goto out;
    manifest = bk_manifest_json(cfg, entries, keys, nkeys);
    if (!manifest) {
        cx_error_set(&err, CX_ERR_INTERNAL, "could not build the manifest");
        goto out;
    }
    if (!bk_write_manifest(dir, manifest, &err))
        goto out;
    for (size_t i = 0; i < BK_NFILES; i++)
        printf("%-36s %10llu documents  sha256 %.16s...\n", entries[i].file,
               (unsigned long long)entries[i].count, entries[i].sha256);
    for (size_t i = 0; i < nkeys; i++)
        printf(
            "data keys wrapped under %s key %s: %llu payloads (key material NOT in the backup)\n",
            keys[i].provider, keys[i].key_id, (unsigned long long)keys[i].payloads);
    printf("backup complete: %s/%s\n", dir, BK_MANIFEST);
    rc = CLI_OK;
out:
    json_decref(manifest);
    mdb_client_push(m, c);
    mdb_close(m);
    cx_fga_free(fga);
    return rc == CLI_OK ? rc : cli_fail(&err);
}

/* ---- the manifest and the file check ------------------------------------------------------ */

typedef struct bk_backup {
    const char *dir;
    json_t *manifest;
    bk_entry_t entries[BK_NFILES];
    char keys[1024]; /* what the data keys are wrapped under: "<provider> key <CMK id>", ... */
} bk_backup_t;

static bool bk_manifest_entry(json_t *files, const char *kind, const char *name, bk_entry_t *e,
                              cx_error_t *err)
{
    size_t i;
    json_t *f;
    json_array_foreach(files, i, f)
    {
        const char *n = json_string_value(json_object_get(f, kind));
        const char *sha = json_string_value(json_object_get(f, "sha256"));
        const char *file = json_string_value(json_object_get(f, "file"));
        json_t *count = json_object_get(f, "count"), *bytes = json_object_get(f, "bytes");
        if (!n || strcmp(n, name) != 0)
            continue;
        if (!sha || strlen(sha) != 64 || !file || !json_is_integer(count) ||
            !json_is_integer(bytes) || json_integer_value(count) < 0 ||
            json_integer_value(bytes) < 0)
            return cx_error_set(err, CX_ERR_INTEGRITY, "manifest: the entry of %s is malformed",
                                name);
        /* The file name is ours, never the manifest's: no path in it can point elsewhere. */
        if (strcmp(kind, "collection") == 0)
            snprintf(e->file, sizeof e->file, "%s.bson", name);
        else
            snprintf(e->file, sizeof e->file, "%s", BK_TUPLES);
        if (strcmp(file, e->file) != 0)
            return cx_error_set(err, CX_ERR_INTEGRITY, "manifest: unexpected file name for %s",
                                name);
        memcpy(e->sha256, sha, 65);
        e->count = (uint64_t)json_integer_value(count);
        e->bytes = (uint64_t)json_integer_value(bytes);
        return true;
    }
    return cx_error_set(err, CX_ERR_INTEGRITY, "manifest: no entry for %s", name);
}

static bool bk_load_manifest(const char *dir, bk_backup_t *b, cx_error_t *err)
{
    char path[4096];
    struct stat st;
    *b = (bk_backup_t){.dir = dir};
    bk_path(path, sizeof path, dir, BK_MANIFEST, "");
    if (stat(path, &st) != 0)
        return cx_error_set(err, CX_ERR_NOT_FOUND,
                            "%s/%s is missing: not a backup, or an interrupted one", dir,
                            BK_MANIFEST);
    if (st.st_size > BK_MANIFEST_MAX)
        return cx_error_set(err, CX_ERR_INTEGRITY, "manifest: larger than %d bytes",
                            BK_MANIFEST_MAX);
    json_error_t je;
    b->manifest = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    json_t *files = json_object_get(b->manifest, "files");
    const char *fmt = json_string_value(json_object_get(b->manifest, "format"));
    if (!json_is_object(b->manifest) || !fmt || strcmp(fmt, BK_FORMAT) != 0 ||
        !json_is_array(files) || json_array_size(files) != BK_NFILES)
        return cx_error_set(err, CX_ERR_INTEGRITY, "manifest: not a %s manifest", BK_FORMAT);
    for (size_t i = 0; i < BK_NCOLL; i++) {
        b->entries[i].name = bk_collections[i];
        if (!bk_manifest_entry(files, "collection", bk_collections[i], &b->entries[i], err))
            return false;
    }
    if (!bk_manifest_entry(files, "openfga", "tuples", &b->entries[BK_NCOLL], err))
        return false;
    /* Named in the key check's message: every (provider, CMK) pair the manifest lists. */
    size_t k;
    json_t *w;
    json_array_foreach(json_object_get(json_object_get(b->manifest, "keys"), "wrapped_under"), k, w)
    {
        const char *kp = json_string_value(json_object_get(w, "key_provider"));
        const char *kid = json_string_value(json_object_get(w, "key_id"));
        size_t used = strlen(b->keys);
        snprintf(b->keys + used, sizeof b->keys - used, "%s%s key %s", used ? " and " : "",
                 kp ? kp : "?", kid ? kid : "?");
    }
    if (!b->keys[0])
        snprintf(b->keys, sizeof b->keys, "(no data keys)");
    return true;
}

static void bk_backup_free(bk_backup_t *b)
{
    json_decref(b->manifest);
    b->manifest = NULL;
}

/* Scan one file of the backup (doc/tuple callbacks may be NULL) and compare it with its
 * manifest entry. */
static bool bk_check_file(const bk_backup_t *b, size_t i, bk_doc_fn doc, bk_tuple_fn tuple,
                          void *ctx, cx_error_t *err)
{
    const bk_entry_t *e = &b->entries[i];
    char path[4096], hex[65];
    bk_path(path, sizeof path, b->dir, e->file, "");
    bk_sum_t sum;
    if (!bk_sum_init(&sum, err))
        return false;
    bool ok = e->name ? bk_scan_bson(path, e->file, &sum, doc, ctx, err)
                      : bk_scan_tuples(path, &sum, tuple, ctx, err);
    if (!ok) {
        bk_sum_free(&sum);
        return false;
    }
    uint64_t count = sum.count, bytes = sum.bytes;
    bk_sum_final(&sum, hex);
    if (strcmp(hex, e->sha256) != 0 || bytes != e->bytes)
        return cx_error_set(err, CX_ERR_INTEGRITY,
                            "%s: checksum mismatch (the file changed after the backup)", e->file);
    if (count != e->count)
        return cx_error_set(err, CX_ERR_INTEGRITY, "%s: %llu documents, the manifest says %llu",
                            e->file, (unsigned long long)count, (unsigned long long)e->count);
    return true;
}

static bool bk_check_files(const bk_backup_t *b, cx_error_t *err)
{
    for (size_t i = 0; i < BK_NFILES; i++)
        if (!bk_check_file(b, i, NULL, NULL, NULL, err))
            return false;
    return true;
}

/* ---- the key check ----------------------------------------------------------------------- */

typedef struct bk_probe {
    char secret_id[40], owner_type[16], owner_id[136], kind[32], payload_id[40];
    uint32_t version;
    bool found;
    uint8_t *wrapped;
    size_t wrapped_len;
    char provider[16], key_id[256], key_version[72];
} bk_probe_t;

typedef struct bk_sample {
    bk_probe_t *v;
    size_t n, alloc, cap; /* cap: the sample size (SIZE_MAX: all) */
    uint64_t seen;
} bk_sample_t;

static bool bk_sample_ref(void *ctx, const bson_t *doc, cx_error_t *err)
{
    bk_sample_t *s = ctx;
    bk_probe_t p = {0};
    char status[16];
    bson_iter_t it;
    bk_doc_str(doc, "status", status, sizeof status);
    bk_doc_str(doc, "current_payload_id", p.payload_id, sizeof p.payload_id);
    if (strcmp(status, "deleted") == 0 || !p.payload_id[0])
        return true; /* tombstones have no key left */
    bk_doc_str(doc, "secret_id", p.secret_id, sizeof p.secret_id);
    bk_doc_str(doc, "owner_type", p.owner_type, sizeof p.owner_type);
    bk_doc_str(doc, "owner_id", p.owner_id, sizeof p.owner_id);
    bk_doc_str(doc, "kind", p.kind, sizeof p.kind);
    if (bson_iter_init_find(&it, doc, "current_version") && BSON_ITER_HOLDS_NUMBER(&it)) {
        int64_t v = bson_iter_as_int64(&it);
        p.version = v > 0 && v <= UINT32_MAX ? (uint32_t)v : 0;
    }
    s->seen++;
    size_t slot = s->n;
    if (s->n >= s->cap) { /* reservoir sampling: every secret equally likely */
        uint64_t r;
        if (RAND_bytes((unsigned char *)&r, sizeof r) != 1)
            return cx_error_set(err, CX_ERR_INTERNAL, "no randomness");
        r %= s->seen;
        if (r >= s->cap)
            return true;
        slot = (size_t)r;
    } else {
        if (s->n == s->alloc) {
            size_t alloc = s->alloc ? 2 * s->alloc : 256;
            bk_probe_t *nv = realloc(s->v, alloc * sizeof(*nv));
            if (!nv)
                return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
            s->v = nv;
            s->alloc = alloc;
        }
        s->n++;
    }
    s->v[slot] = p;
    return true;
}

static int bk_probe_cmp(const void *a, const void *b)
{
    return strcmp(((const bk_probe_t *)a)->payload_id, ((const bk_probe_t *)b)->payload_id);
}

static bool bk_sample_payload(void *ctx, const bson_t *doc, cx_error_t *err)
{
    bk_sample_t *s = ctx;
    bk_probe_t key;
    bk_doc_str(doc, "_id", key.payload_id, sizeof key.payload_id);
    bk_probe_t *p = bsearch(&key, s->v, s->n, sizeof(*s->v), bk_probe_cmp);
    bson_iter_t it;
    if (!p || p->found)
        return true;
    if (!bson_iter_init_find(&it, doc, "wrapped_key") || !BSON_ITER_HOLDS_BINARY(&it))
        return cx_error_set(err, CX_ERR_INTEGRITY, "a payload has no wrapped key");
    const uint8_t *data = NULL;
    uint32_t len = 0;
    bson_subtype_t st;
    bson_iter_binary(&it, &st, &len, &data);
    if (!(p->wrapped = malloc(len ? len : 1)))
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    memcpy(p->wrapped, data, len);
    p->wrapped_len = len;
    bk_doc_str(doc, "key_provider", p->provider, sizeof p->provider);
    bk_doc_str(doc, "key_id", p->key_id, sizeof p->key_id);
    bk_doc_str(doc, "key_version", p->key_version, sizeof p->key_version);
    p->found = true;
    return true;
}

static void bk_sample_free(bk_sample_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i].wrapped);
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

/* A stored enum word ("api_key", "local-cmk") as the proto value; 0 when unknown. */
static int bk_enum(const ProtobufCEnumDescriptor *d, const char *word)
{
    char w[40];
    int v = 0;
    snprintf(w, sizeof w, "%s", word);
    for (char *p = w; *p; p++)
        if (*p == '-')
            *p = '_';
    return cli_enum_value(d, w, &v) ? v : 0;
}

/* One CheckDataKeys call for probes[0..n); counts the failures into *bad, first reason kept. */
static bool bk_check_batch(const cx_config_t *cfg, bk_probe_t *probes, size_t n, size_t *bad,
                           char *reason, size_t reasonsz, cx_error_t *err)
{
    Credex__V1__StoreDataKeyProbe pv[BK_PROBES_MAX], *pp[BK_PROBES_MAX];
    Credex__V1__Owner ov[BK_PROBES_MAX];
    Credex__V1__WrappedKey wv[BK_PROBES_MAX];
    for (size_t i = 0; i < n; i++) {
        bk_probe_t *p = &probes[i];
        credex__v1__store_data_key_probe__init(&pv[i]);
        credex__v1__owner__init(&ov[i]);
        credex__v1__wrapped_key__init(&wv[i]);
        ov[i].owner_type = bk_enum(&credex__v1__owner_type__descriptor, p->owner_type);
        ov[i].owner_id = p->owner_id;
        wv[i].ciphertext.data = p->wrapped;
        wv[i].ciphertext.len = p->wrapped_len;
        wv[i].key_provider = bk_enum(&credex__v1__key_provider__descriptor, p->provider);
        wv[i].key_id = p->key_id;
        wv[i].key_version = p->key_version;
        pv[i].secret_id = p->secret_id;
        pv[i].version = p->version;
        pv[i].owner = &ov[i];
        pv[i].kind = bk_enum(&credex__v1__secret_kind__descriptor, p->kind);
        pv[i].wrapped_key = &wv[i];
        pp[i] = &pv[i];
    }
    Credex__V1__StoreCheckDataKeysRequest req = CREDEX__V1__STORE_CHECK_DATA_KEYS_REQUEST__INIT;
    req.n_probes = n;
    req.probes = pp;
    cli_conn_t conn = {.addr = cfg->addr[CX_SVC_STORE], .peer = "store"};
    rpc_arena_t *arena = rpc_arena_new(0);
    ProtobufCMessage *reply = NULL;
    bool ok = cli_call(cfg, &conn, &credex__v1__credential_store__descriptor, "CheckDataKeys",
                       &req.base, NULL, 0, arena, &reply, err);
    if (ok) {
        const Credex__V1__StoreCheckDataKeysResponse *r =
            (const Credex__V1__StoreCheckDataKeysResponse *)reply;
        if (r->n_checks != n)
            ok = cx_error_set(err, CX_ERR_INTERNAL, "store answered %zu checks for %zu keys",
                              r->n_checks, n);
        for (size_t i = 0; ok && i < r->n_checks; i++)
            if (!r->checks[i]->ok) {
                if ((*bad)++ == 0)
                    snprintf(reason, reasonsz, "%s", r->checks[i]->reason);
            }
    }
    rpc_arena_free(arena);
    return ok;
}

/* Does this deployment's keywrap unwrap a random sample of the backup's data keys (the current
 * version of live and revoked secrets)? INTEGRITY, naming the provider and CMK, when not. */
static bool bk_check_keys(const cx_config_t *cfg, const bk_backup_t *b, size_t sample,
                          cx_error_t *err)
{
    bk_sample_t s = {.cap = sample ? sample : SIZE_MAX};
    size_t bad = 0, checked = 0;
    char reason[64] = "";
    bool ok = bk_check_file(b, 0, bk_sample_ref, NULL, &s, err);
    if (ok && s.n)
        qsort(s.v, s.n, sizeof(*s.v), bk_probe_cmp);
    ok = ok && bk_check_file(b, 1, bk_sample_payload, NULL, &s, err);
    for (size_t i = 0; ok && i < s.n; i++)
        if (!s.v[i].found)
            ok = cx_error_set(err, CX_ERR_INTEGRITY,
                              "secret %s: its current payload is not in the backup (taken while "
                              "writes were running? see docs/BACKUP_RESTORE.md)",
                              s.v[i].secret_id);
    for (size_t i = 0; ok && i < s.n; i += BK_PROBES_MAX) {
        size_t n = s.n - i < BK_PROBES_MAX ? s.n - i : BK_PROBES_MAX;
        ok = bk_check_batch(cfg, s.v + i, n, &bad, reason, sizeof reason, err);
        checked += ok ? n : 0;
    }
    bk_sample_free(&s);
    if (ok && bad)
        ok = cx_error_set(err, CX_ERR_INTEGRITY,
                          "wrong key material: %zu of %zu data keys checked do not unwrap here "
                          "(%s); the backup's keys are wrapped under %s, and this "
                          "deployment's keywrap does not hold that key (restore the local-cmk key "
                          "file or grant the KMS key; docs/BACKUP_RESTORE.md). Retrievals of "
                          "these secrets answer integrity_error",
                          bad, checked, reason, b->keys);
    if (ok)
        printf("key check: %zu data keys unwrap under %s\n", checked, b->keys);
    return ok;
}

/* ---- verify ------------------------------------------------------------------------------- */

static int bk_verify(const cx_config_t *cfg, const char *dir, bool key_check, size_t sample)
{
    cx_error_t err = {0};
    bk_backup_t b;
    bool ok = bk_load_manifest(dir, &b, &err) && bk_check_files(&b, &err);
    if (ok)
        printf("files: %zu files match the manifest's checksums and counts\n", (size_t)BK_NFILES);
    if (ok && key_check)
        ok = bk_check_keys(cfg, &b, sample, &err);
    bk_backup_free(&b);
    if (ok)
        printf("backup %s verified\n", dir);
    return ok ? CLI_OK : cli_fail(&err);
}

/* ---- restore ------------------------------------------------------------------------------ */

/* The backup's tuples as SHA-256 digests, sorted: whether a tuple of the target is one of
 * them, without holding the tuples themselves. */
typedef struct bk_tupleset {
    unsigned char (*v)[32];
    size_t n, cap;
} bk_tupleset_t;

static void bk_tuple_digest(const cx_fga_tuple_t *t, unsigned char out[32])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned int len = 0;
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, t->user, strlen(t->user) + 1);
    EVP_DigestUpdate(md, t->relation, strlen(t->relation) + 1);
    EVP_DigestUpdate(md, t->object, strlen(t->object) + 1);
    EVP_DigestFinal_ex(md, out, &len);
    EVP_MD_CTX_free(md);
}

static bool bk_tupleset_add(void *ctx, const cx_fga_tuple_t *t, cx_error_t *err)
{
    bk_tupleset_t *s = ctx;
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 1024;
        unsigned char(*nv)[32] = realloc(s->v, cap * sizeof(*nv));
        if (!nv)
            return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        s->v = nv;
        s->cap = cap;
    }
    bk_tuple_digest(t, s->v[s->n++]);
    return true;
}

static int bk_digest_cmp(const void *a, const void *b)
{
    return memcmp(a, b, 32);
}

typedef struct bk_target {
    const bk_tupleset_t *set;
    cx_fga_t *fga;
    bool wipe;
    uint64_t foreign, deleted;
} bk_target_t;

/* A page of the target store: tuples the backup lacks are counted, and deleted with --wipe. */
static bool bk_target_page(void *ctx, const cx_fga_tuple_t *t, size_t n, cx_error_t *err)
{
    bk_target_t *x = ctx;
    cx_fga_tuple_t del[100];
    size_t nd = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char d[32];
        bk_tuple_digest(&t[i], d);
        if (bsearch(d, x->set->v, x->set->n, 32, bk_digest_cmp))
            continue;
        x->foreign++;
        if (x->wipe && nd < 100)
            del[nd++] = t[i];
    }
    if (nd && !cx_fga_write(x->fga, NULL, 0, del, nd, err))
        return false;
    x->deleted += nd;
    return true;
}

/* Is every credex collection empty? With wipe, a non-empty one is dropped (a delete of every
 * document of a large collection would outlast CREDEX_MONGO_TIMEOUT_MS; a drop does not), and
 * mdb_init_indexes creates it again with its indexes. */
static bool bk_target_empty(mdb_t *m, mongoc_client_t *c, bool wipe, cx_error_t *err)
{
    for (size_t i = 0; i < BK_NCOLL; i++) {
        bson_t filter = BSON_INITIALIZER, doc;
        bool found = false;
        bool ok = mdb_find_one(m, c, bk_collections[i], &filter, &doc, &found, err);
        bson_destroy(&filter);
        if (!ok)
            return false;
        if (!found)
            continue;
        bson_destroy(&doc);
        if (!wipe)
            return cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                                "the target database is not empty (%s has documents): restore "
                                "never merges; --wipe drops the non-empty collections first",
                                bk_collections[i]);
        mongoc_collection_t *coll = mdb_collection(m, c, bk_collections[i]);
        bson_error_t berr;
        ok = mongoc_collection_drop_with_opts(coll, NULL, &berr);
        mongoc_collection_destroy(coll);
        if (!ok)
            return mdb_error_map(&berr, NULL, "dropping a collection", err);
        printf("wiped %s\n", bk_collections[i]);
    }
    return true;
}

typedef struct bk_insert {
    mdb_t *m;
    mongoc_client_t *c;
    const char *coll;
    bson_t *docs[BK_BATCH_DOCS];
    size_t n, bytes;
} bk_insert_t;

static bool bk_insert_flush(bk_insert_t *x, cx_error_t *err)
{
    size_t refused = 0;
    bool ok = x->n == 0 || mdb_insert_many(x->m, x->c, x->coll, (const bson_t *const *)x->docs,
                                           x->n, &refused, err);
    for (size_t i = 0; i < x->n; i++)
        bson_destroy(x->docs[i]);
    x->n = x->bytes = 0;
    return ok;
}

static bool bk_insert_doc(void *ctx, const bson_t *doc, cx_error_t *err)
{
    bk_insert_t *x = ctx;
    x->docs[x->n++] = bson_copy(doc);
    x->bytes += doc->len;
    if (x->n == BK_BATCH_DOCS || x->bytes >= BK_BATCH_BYTES)
        return bk_insert_flush(x, err);
    return true;
}

typedef struct bk_tuple_in {
    cx_fga_t *fga;
    cx_fga_tuple_t batch[100];
    size_t n;
} bk_tuple_in_t;

static bool bk_tuple_flush(bk_tuple_in_t *x, cx_error_t *err)
{
    bool ok = cx_fga_write(x->fga, x->batch, x->n, NULL, 0, err);
    x->n = 0;
    return ok;
}

static bool bk_tuple_add(void *ctx, const cx_fga_tuple_t *t, cx_error_t *err)
{
    bk_tuple_in_t *x = ctx;
    x->batch[x->n++] = *t;
    return x->n < 100 || bk_tuple_flush(x, err);
}

static int bk_restore(const cx_config_t *cfg, const char *dir, bool wipe, size_t sample)
{
    cx_error_t err = {0};
    bk_backup_t b;
    mdb_t *m = NULL;
    mongoc_client_t *c = NULL;
    cx_fga_t *fga = NULL;
    bk_tupleset_t set = {0};
    bk_tuple_in_t *tin = NULL;
    bool ok = false;
    /* Everything is checked before anything is written. */
    if (!bk_load_manifest(dir, &b, &err) || !bk_check_files(&b, &err))
        goto out;
    printf("files: %zu files match the manifest's checksums and counts\n", (size_t)BK_NFILES);
    if (!(fga = bk_fga_open(cfg, &err)) || !bk_mdb_open(cfg, &m, &err) ||
        !(c = mdb_client_pop(m, &err)))
        goto out;
    const char *model = json_string_value(
        json_object_get(json_object_get(b.manifest, "openfga"), "authorization_model_id"));
    if (model && cfg->openfga_model_id[0] && strcmp(model, cfg->openfga_model_id) != 0)
        printf("note: the tuples were written under authorization model %s; they are restored "
               "under the configured model %s\n",
               model, cfg->openfga_model_id);
    if (!bk_check_file(&b, BK_NCOLL, NULL, bk_tupleset_add, &set, &err))
        goto out;
    if (set.n)
        qsort(set.v, set.n, 32, bk_digest_cmp);
    bk_target_t target = {.set = &set, .fga = fga, .wipe = wipe};
    if (!cx_fga_read_each(fga, NULL, bk_target_page, &target, &err))
        goto out;
    if (target.foreign && !wipe) {
        cx_error_set(&err, CX_ERR_FAILED_PRECONDITION,
                     "the target OpenFGA store holds %llu tuples that are not in the backup: "
                     "restore never merges; --wipe deletes them first",
                     (unsigned long long)target.foreign);
        goto out;
    }
    if (target.deleted)
        printf("wiped %llu OpenFGA tuples not in the backup\n", (unsigned long long)target.deleted);
    /* The collections and their indexes before any document (a fresh database has neither). */
    if (!bk_target_empty(m, c, wipe, &err) || !mdb_init_indexes(m, NULL, NULL, NULL, &err))
        goto out;
    for (size_t i = 0; i < BK_NCOLL; i++) {
        bk_insert_t ins = {.m = m, .c = c, .coll = bk_collections[i]};
        bool done =
            bk_check_file(&b, i, bk_insert_doc, NULL, &ins, &err) && bk_insert_flush(&ins, &err);
        if (!done) {
            bk_insert_flush(&ins, NULL);
            goto out;
        }
        printf("restored %-30s %10llu documents\n", bk_collections[i],
               (unsigned long long)b.entries[i].count);
    }
    if (!(tin = calloc(1, sizeof(*tin)))) {
        cx_error_set(&err, CX_ERR_INTERNAL, "out of memory");
        goto out;
    }
    tin->fga = fga;
    if (!bk_check_file(&b, BK_NCOLL, NULL, bk_tuple_add, tin, &err) || !bk_tuple_flush(tin, &err))
        goto out;
    printf("restored %-30s %10llu tuples\n", "OpenFGA", (unsigned long long)set.n);
    ok = bk_check_keys(cfg, &b, sample, &err);
    if (ok)
        printf("restore complete from %s\n", dir);
out:
    free(tin);
    free(set.v);
    mdb_client_push(m, c);
    mdb_close(m);
    cx_fga_free(fga);
    bk_backup_free(&b);
    return ok ? CLI_OK : cli_fail(&err);
}

/* ---- the command -------------------------------------------------------------------------- */

int credexctl_cmd_backup(const cx_config_t *cfg, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_USAGE : CLI_OK;
    }
    const char *sub = argv[1], *out = NULL, *from = NULL, *sample_s = NULL, *pos[1];
    bool help = false, wipe = false, no_key_check = false;
    size_t npos = 0;
    const cli_opt_t opts[] = {{.name = "out", .kind = CLI_OPT_VALUE, .value = &out},
                              {.name = "from", .kind = CLI_OPT_VALUE, .value = &from},
                              {.name = "wipe", .kind = CLI_OPT_FLAG, .flag = &wipe},
                              {.name = "no-key-check", .kind = CLI_OPT_FLAG, .flag = &no_key_check},
                              {.name = "key-sample", .kind = CLI_OPT_VALUE, .value = &sample_s},
                              {0}};
    char cmd[64];
    snprintf(cmd, sizeof cmd, "backup %.20s", sub);
    if (!cli_parse(cmd, argc - 2, argv + 2, opts, pos, 0, &npos, &help))
        return CLI_USAGE;
    if (help) {
        usage(stdout);
        return CLI_OK;
    }
    uint64_t sample = BK_SAMPLE_DEF;
    if (sample_s && !cli_parse_uint(sample_s, 0, BK_SAMPLE_MAX, &sample))
        return cli_usage_error(cmd, "--key-sample must be 0..%d", BK_SAMPLE_MAX);
    if (strcmp(sub, "create") == 0) {
        if (!out || from || wipe || no_key_check || sample_s)
            return cli_usage_error(cmd, "expected --out DIR only");
        return bk_create(cfg, out);
    }
    if (strcmp(sub, "verify") == 0) {
        if (!from || out || wipe)
            return cli_usage_error(cmd, "expected --from DIR [--no-key-check] [--key-sample N]");
        return bk_verify(cfg, from, !no_key_check, (size_t)sample);
    }
    if (strcmp(sub, "restore") == 0) {
        if (!from || out || no_key_check)
            return cli_usage_error(cmd, "expected --from DIR [--wipe] [--key-sample N]");
        return bk_restore(cfg, from, wipe, (size_t)sample);
    }
    return cli_usage_error("backup", "unknown subcommand (see credexctl backup --help)");
}
