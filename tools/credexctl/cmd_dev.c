/*
 * credexctl dev: conveniences for a LOCAL stack only. They write OpenFGA relationship tuples
 * directly through OpenFGA's HTTP API with common/fga's client (CREDEX_OPENFGA_URL,
 * CREDEX_OPENFGA_STORE_ID, and CREDEX_OPENFGA_MODEL_ID when set), bypassing credex. In
 * production these relations are managed through the identity and admin tooling, and OpenFGA
 * is not reachable from a laptop.
 *
 *   dev grant-retriever SERVICE        platform:credex#retriever@service:SERVICE
 *   dev grant-exchanger SERVICE        platform:credex#exchanger@service:SERVICE
 *   dev add-team-member TEAM USER      team:TEAM#member@user:USER (and #admin with --admin)
 *   dev make-admin USER                platform:credex#admin@user:USER
 *
 * Writing a tuple that already exists succeeds (the commands are idempotent); --remove deletes
 * the tuple(s) instead.
 */
#include <string.h>

#include "common/fga/cx_fga.h"
#include "tools/credexctl/credexctl.h"

static void usage(FILE *f)
{
    fputs("usage: credexctl dev grant-retriever SERVICE [--remove]\n"
          "       credexctl dev grant-exchanger SERVICE [--remove]\n"
          "       credexctl dev add-team-member TEAM USER [--admin] [--remove]\n"
          "       credexctl dev make-admin USER [--remove]\n"
          "Dev conveniences for a local stack: write OpenFGA tuples directly over its HTTP API\n"
          "(CREDEX_OPENFGA_URL, CREDEX_OPENFGA_STORE_ID; source .run/env). Production manages\n"
          "these relations through the identity/admin tooling, never with this command.\n"
          "  grant-retriever SERVICE  allow server-side caller SERVICE to retrieve secrets\n"
          "                           (platform:credex#retriever@service:SERVICE)\n"
          "  grant-exchanger SERVICE  allow SERVICE (a retriever too) to exchange a user's\n"
          "                           identity for the user's provider tokens\n"
          "                           (platform:credex#exchanger@service:SERVICE)\n"
          "  add-team-member TEAM USER  team:TEAM#member@user:USER; --admin adds #admin too\n"
          "  make-admin USER          platform:credex#admin@user:USER\n"
          "  --remove                 delete the tuple(s) instead of writing them\n",
          f);
}

/* One write of the command's tuples through common/fga, so that this request has the TLS,
 * limits and error mapping of every other call to OpenFGA. Adding a tuple that exists or
 * removing one that does not is not an error there (OpenFGA's on_duplicate/on_missing), which
 * makes the commands idempotent without reading OpenFGA's messages. */
static int dev_write(const cx_config_t *cfg, const cx_fga_tuple_t *tuples, size_t n, bool remove)
{
    cx_error_t err;
    if (cfg->openfga_store_id[0] == '\0') {
        cx_error_set(&err, CX_ERR_INVALID_ARGUMENT,
                     "CREDEX_OPENFGA_STORE_ID is not set (source .run/env of a running stack)");
        return cli_fail(&err);
    }
    /* A person waits at a prompt longer than a request path may wait for a policy answer. */
    cx_fga_options_t o = {.url = cfg->openfga_url,
                          .store_id = cfg->openfga_store_id,
                          .model_id = cfg->openfga_model_id,
                          .timeout_ms = cfg->openfga_timeout_ms * 5};
    cx_fga_t *fga = cx_fga_new(&o, &err);
    if (fga == NULL)
        return cli_fail(&err);
    bool ok = remove ? cx_fga_write(fga, NULL, 0, tuples, n, &err)
                     : cx_fga_write(fga, tuples, n, NULL, 0, &err);
    /* The likeliest refusal is a store id left over from an earlier stack: say so if it is. */
    cx_error_t why;
    if (!ok && err.code == CX_ERR_INVALID_ARGUMENT && !cx_fga_ping(fga, &why))
        cx_error_copy(&err, &why);
    cx_fga_free(fga);
    return ok ? CLI_OK : cli_fail(&err);
}

int cmd_dev(const cx_config_t *cfg, int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0 ||
        strcmp(argv[0], "help") == 0) {
        usage(argc < 1 ? stderr : stdout);
        return argc < 1 ? CLI_USAGE : CLI_OK;
    }
    const char *sub = argv[0], *pos[2];
    size_t npos;
    bool help, admin = false, remove = false;
    const cli_opt_t opts[] = {{.name = "admin", .kind = CLI_OPT_FLAG, .flag = &admin},
                              {.name = "remove", .kind = CLI_OPT_FLAG, .flag = &remove},
                              {0}};
    char cmd[64];
    snprintf(cmd, sizeof cmd, "dev %s", sub);
    if (!cli_parse(cmd, argc - 1, argv + 1, opts, pos, 2, &npos, &help))
        return CLI_USAGE;
    if (help) {
        usage(stdout);
        return CLI_OK;
    }
    char a[160], b[160];
    cx_fga_tuple_t tuples[2];
    size_t n = 0;
    const char *what;
    bool retriever = strcmp(sub, "grant-retriever") == 0;
    if (retriever || strcmp(sub, "grant-exchanger") == 0) {
        if (npos != 1 || !cli_valid_service(pos[0]) || admin)
            return cli_usage_error(cmd, "expected SERVICE (1..63 of [a-z0-9-])");
        snprintf(a, sizeof a, "service:%s", pos[0]);
        cx_fga_tuple_set(&tuples[n++], a, retriever ? "retriever" : "exchanger", "platform:credex");
        what = retriever ? "platform:credex#retriever@" : "platform:credex#exchanger@";
    } else if (strcmp(sub, "add-team-member") == 0) {
        if (npos != 2 || !cli_valid_principal(pos[0]) || !cli_valid_principal(pos[1]))
            return cli_usage_error(cmd, "expected TEAM USER (1..128 of [A-Za-z0-9._@+-] each)");
        snprintf(a, sizeof a, "user:%s", pos[1]);
        snprintf(b, sizeof b, "team:%s", pos[0]);
        cx_fga_tuple_set(&tuples[n++], a, "member", b);
        if (admin)
            cx_fga_tuple_set(&tuples[n++], a, "admin", b);
        what = admin ? "team member and admin " : "team member ";
    } else if (strcmp(sub, "make-admin") == 0) {
        if (npos != 1 || !cli_valid_principal(pos[0]) || admin)
            return cli_usage_error(cmd, "expected USER (1..128 of [A-Za-z0-9._@+-])");
        snprintf(a, sizeof a, "user:%s", pos[0]);
        cx_fga_tuple_set(&tuples[n++], a, "admin", "platform:credex");
        what = "platform:credex#admin@";
    } else {
        return cli_usage_error("dev", "unknown subcommand '%s' (see credexctl dev --help)", sub);
    }
    int rc = dev_write(cfg, tuples, n, remove);
    if (rc == CLI_OK)
        printf("%s %s%s%s%s\n", remove ? "removed" : "wrote", what, a,
               strcmp(sub, "add-team-member") == 0 ? " in " : "",
               strcmp(sub, "add-team-member") == 0 ? b : "");
    return rc;
}
