/* credexctl db: see cmd_db.h. */
#include "tools/credexctl/cmd_db.h"

#include <stdio.h>
#include <string.h>

#include "common/mdb/mdb.h"

static void cmd_db_usage(FILE *f)
{
    fputs("usage: credexctl db init-indexes\n"
          "  Create the indexes of the credential collections (idempotent). Lines starting\n"
          "  with \"degraded:\" name indexes the database could not create as specified.\n",
          f);
}

static void cmd_db_print(void *ctx, const char *line)
{
    (void)ctx;
    printf("%s\n", line);
}

static int cmd_db_init_indexes(const cx_config_t *cfg)
{
    cx_error_t err = {0};
    mdb_t *m = NULL;
    unsigned degraded = 0;
    int rc = 1;
    mdb_options_t mo = {.uri = cfg->mongo_uri,
                        .db = cfg->mongo_db,
                        .timeout_ms = cfg->mongo_timeout_ms,
                        .write_majority = cfg->mongo_write_majority,
                        .pool_max = 1,
                        .app_name = "credexctl"};
    if (!mdb_open(&m, &mo, &err) || !mdb_init_indexes(m, cmd_db_print, NULL, &degraded, &err)) {
        fflush(stdout);
        fprintf(stderr, "credexctl: %s: %s\n", cx_code_reason(err.code), err.message);
        goto out;
    }
    printf("indexes ready on database %s (%u degraded)\n", cfg->mongo_db, degraded);
    rc = 0;
out:
    mdb_close(m);
    return rc;
}

int credexctl_cmd_db(const cx_config_t *cfg, int argc, char **argv)
{
    if (argc < 2) {
        cmd_db_usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        cmd_db_usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "init-indexes") == 0) {
        if (argc > 2) {
            fprintf(stderr, "credexctl: usage: db init-indexes: takes no arguments\n");
            return 2;
        }
        return cmd_db_init_indexes(cfg);
    }
    fprintf(stderr, "credexctl: usage: db: unknown subcommand \"%.40s\"\n", argv[1]);
    return 2;
}
