/*
 * credexctl: the command-line client of credex's public gRPC API (the gateway), plus dev
 * helpers for a local stack. It authenticates with the certificate named by
 * CREDEX_TLS_CERT/CREDEX_TLS_KEY (the dev PKI's "credexctl" identity; `. .run/env` sets them).
 *
 * One file per command family: cmd_token.c (dev JWTs), cmd_secret.c (Secrets), cmd_retrieve.c
 * (Retrieval, as a service), cmd_health.c (health, gateway-health), cmd_dev.c (OpenFGA tuples
 * for a local stack), cmd_db.c (database maintenance), cmd_backup.c (backup and restore),
 * cmd_keys.c (CMK rotation);
 * util.c and output.c are shared.
 * --json output is the reply message in common/pjson's mapping (what grpcurl prints).
 *
 * Exit codes: 0 success, 1 the call failed or the answer is negative, 2 usage or config error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pjson/pjson.h"
#include "tools/credexctl/credexctl.h"
#ifdef CREDEXCTL_HAVE_DB
#include "tools/credexctl/cmd_backup.h"
#include "tools/credexctl/cmd_db.h"
#endif

static void usage(FILE *f)
{
    fputs("usage: credexctl COMMAND [ARGS]   (credexctl COMMAND --help for details)\n"
          "  health [--addr HOST:PORT] [--peer NAME] [--service NAME]\n"
          "                       grpc.health.v1 check of one credex process\n"
          "  gateway-health       credential health summary (Admin.GetHealth)\n"
          "  token                mint a dev JWT (--user ID, --service NAME)\n"
          "  secret SUBCOMMAND    create, list, show, update, rotate, versions, revoke, delete,\n"
          "                       share, unshare, shares: as a user, through the gateway\n"
          "  retrieve ID          retrieve a value as a server-side caller (dev)\n"
          "  dev SUBCOMMAND       grant-retriever, grant-exchanger, add-team-member,\n"
          "                       make-admin: OpenFGA tuples for a local stack only\n"
          "  db SUBCOMMAND        database maintenance (init-indexes)\n"
          "  backup SUBCOMMAND    create, verify, restore: MongoDB collections and OpenFGA\n"
          "                       tuples (docs/BACKUP_RESTORE.md)\n"
          "  keys rewrap          CMK rotation: rewrap every stored data key under keywrap's\n"
          "                       current CMK (docs/KEY_ROTATION.md)\n"
          "  --version            print credexctl's version\n"
          "--json (health, gateway-health, secret, retrieve) prints the reply in the proto3 JSON\n"
          "mapping, the document grpcurl prints for the same call.\n"
          "Configuration from the environment (docs/CONFIGURATION.md); `. .run/env` after\n"
          "scripts/run sets the addresses and the CLI's certificate.\n"
          "Errors: one line \"credexctl: <reason_code>: <message>\"; exit 1 (2 for usage).\n",
          f);
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_USAGE : CLI_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("credexctl %s\n", CREDEX_VERSION);
        return CLI_OK;
    }
    /* Every block jansson frees is wiped first: JSON documents here may hold tokens. */
    pjson_jansson_wipe_frees();
    cx_error_t err;
    cx_config_t *cfg = NULL;
    if (!cx_config_load(&cfg, NULL, NULL, &err)) {
        fprintf(stderr, "credexctl: %s: %s\n", cx_code_reason(err.code), err.message);
        return CLI_USAGE;
    }
    const char *cmd = argv[1];
    int n = argc - 2, rc;
    char **a = argv + 2;
    if (strcmp(cmd, "health") == 0)
        rc = cmd_health(cfg, n, a);
    else if (strcmp(cmd, "gateway-health") == 0)
        rc = cmd_gateway_health(cfg, n, a);
    else if (strcmp(cmd, "token") == 0)
        rc = cmd_token(cfg, n, a);
    else if (strcmp(cmd, "secret") == 0 || strcmp(cmd, "secrets") == 0)
        rc = cmd_secret(cfg, n, a);
    else if (strcmp(cmd, "retrieve") == 0)
        rc = cmd_retrieve(cfg, n, a);
    else if (strcmp(cmd, "dev") == 0)
        rc = cmd_dev(cfg, n, a);
    else if (strcmp(cmd, "keys") == 0)
        rc = cmd_keys(cfg, n, a);
    else if (strcmp(cmd, "db") == 0) {
#ifdef CREDEXCTL_HAVE_DB
        rc = credexctl_cmd_db(cfg, argc - 1, argv + 1); /* argv[0] is "db" */
#else
        fprintf(stderr, "credexctl: unimplemented: `db` is not in this build yet (issue 4)\n");
        rc = CLI_FAIL;
#endif
    } else if (strcmp(cmd, "backup") == 0) {
#ifdef CREDEXCTL_HAVE_DB
        rc = credexctl_cmd_backup(cfg, argc - 1, argv + 1); /* argv[0] is "backup" */
#else
        fprintf(stderr, "credexctl: unimplemented: `backup` needs the database layer\n");
        rc = CLI_FAIL;
#endif
    } else {
        fprintf(stderr, "credexctl: usage: unknown command '%s'\n", cmd);
        usage(stderr);
        rc = CLI_USAGE;
    }
    cx_config_free(cfg);
    return rc;
}
