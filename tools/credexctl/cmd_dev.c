/*
 * credexctl dev: conveniences for a LOCAL stack only. They write OpenFGA relationship tuples
 * directly through OpenFGA's HTTP API (CREDEX_OPENFGA_URL, CREDEX_OPENFGA_STORE_ID, and
 * CREDEX_OPENFGA_MODEL_ID when set), bypassing credex. In production these relations are
 * managed through the identity and admin tooling, and OpenFGA is not reachable from a laptop.
 *
 *   dev grant-retriever SERVICE        platform:credex#retriever@service:SERVICE
 *   dev add-team-member TEAM USER      team:TEAM#member@user:USER (and #admin with --admin)
 *   dev make-admin USER                platform:credex#admin@user:USER
 *
 * Writing a tuple that already exists succeeds (the commands are idempotent); --remove deletes
 * the tuple(s) instead.
 */
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#include "tools/credexctl/credexctl.h"

static void usage(FILE *f)
{
    fputs("usage: credexctl dev grant-retriever SERVICE [--remove]\n"
          "       credexctl dev add-team-member TEAM USER [--admin] [--remove]\n"
          "       credexctl dev make-admin USER [--remove]\n"
          "Dev conveniences for a local stack: write OpenFGA tuples directly over its HTTP API\n"
          "(CREDEX_OPENFGA_URL, CREDEX_OPENFGA_STORE_ID; source .run/env). Production manages\n"
          "these relations through the identity/admin tooling, never with this command.\n"
          "  grant-retriever SERVICE  allow server-side caller SERVICE to retrieve secrets\n"
          "                           (platform:credex#retriever@service:SERVICE)\n"
          "  add-team-member TEAM USER  team:TEAM#member@user:USER; --admin adds #admin too\n"
          "  make-admin USER          platform:credex#admin@user:USER\n"
          "  --remove                 delete the tuple(s) instead of writing them\n",
          f);
}

typedef struct body {
    char buf[4096];
    size_t len;
} body_t;

static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
    body_t *b = ud;
    size_t total = size * n, room = sizeof b->buf - 1 - b->len;
    size_t take = total < room ? total : room;
    memcpy(b->buf + b->len, p, take);
    b->len += take;
    b->buf[b->len] = '\0';
    return total;
}

/* One POST /stores/{id}/write with the tuples; "already exists" / "does not exist" answers
 * count as success so that the commands are idempotent. */
static int fga_write(const cx_config_t *cfg, json_t *tuples, bool remove)
{
    cx_error_t err;
    if (cfg->openfga_store_id[0] == '\0') {
        cx_error_set(&err, CX_ERR_INVALID_ARGUMENT,
                     "CREDEX_OPENFGA_STORE_ID is not set (source .run/env of a running stack)");
        json_decref(tuples);
        return cli_fail(&err);
    }
    json_t *req = json_object();
    json_object_set_new(req, remove ? "deletes" : "writes",
                        json_pack("{s:o}", "tuple_keys", tuples));
    if (cfg->openfga_model_id[0])
        json_object_set_new(req, "authorization_model_id", json_string(cfg->openfga_model_id));
    char *payload = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    char url[512];
    snprintf(url, sizeof url, "%s/stores/%s/write", cfg->openfga_url, cfg->openfga_store_id);

    int rc = CLI_FAIL;
    body_t body = {.len = 0};
    body.buf[0] = '\0';
    struct curl_slist *hdrs = curl_slist_append(NULL, "content-type: application/json");
    CURL *h = curl_easy_init();
    if (h == NULL || payload == NULL || hdrs == NULL) {
        cx_error_set(&err, CX_ERR_INTERNAL, "cannot set up the HTTP request");
        rc = cli_fail(&err);
        goto out;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(cfg->openfga_timeout_ms * 5));
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    CURLcode cc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (cc != CURLE_OK) {
        cx_error_set(&err, CX_ERR_UNAVAILABLE, "OpenFGA at %s: %s", cfg->openfga_url,
                     curl_easy_strerror(cc));
        rc = cli_fail(&err);
    } else if (status == 200 ||
               (status == 400 && !remove && strstr(body.buf, "already exists") != NULL) ||
               (status == 400 && remove && strstr(body.buf, "did not exist") != NULL) ||
               (status == 400 && remove && strstr(body.buf, "does not exist") != NULL)) {
        rc = CLI_OK;
    } else {
        json_t *j = json_loads(body.buf, 0, NULL);
        const char *msg = json_string_value(json_object_get(j, "message"));
        cx_error_set(&err, status == 404 ? CX_ERR_NOT_FOUND : CX_ERR_INVALID_ARGUMENT,
                     "OpenFGA answered HTTP %ld: %.160s", status, msg ? msg : body.buf);
        json_decref(j);
        rc = cli_fail(&err);
    }
out:
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    free(payload);
    return rc;
}

static json_t *tuple(const char *user, const char *relation, const char *object)
{
    return json_pack("{s:s, s:s, s:s}", "user", user, "relation", relation, "object", object);
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
    json_t *tuples = json_array();
    const char *what;
    if (strcmp(sub, "grant-retriever") == 0) {
        if (npos != 1 || !cli_valid_service(pos[0]) || admin) {
            json_decref(tuples);
            return cli_usage_error(cmd, "expected SERVICE (1..63 of [a-z0-9-])");
        }
        snprintf(a, sizeof a, "service:%s", pos[0]);
        json_array_append_new(tuples, tuple(a, "retriever", "platform:credex"));
        what = "platform:credex#retriever@";
    } else if (strcmp(sub, "add-team-member") == 0) {
        if (npos != 2 || !cli_valid_principal(pos[0]) || !cli_valid_principal(pos[1])) {
            json_decref(tuples);
            return cli_usage_error(cmd, "expected TEAM USER (1..128 of [A-Za-z0-9._@+-] each)");
        }
        snprintf(a, sizeof a, "user:%s", pos[1]);
        snprintf(b, sizeof b, "team:%s", pos[0]);
        json_array_append_new(tuples, tuple(a, "member", b));
        if (admin)
            json_array_append_new(tuples, tuple(a, "admin", b));
        what = admin ? "team member and admin " : "team member ";
    } else if (strcmp(sub, "make-admin") == 0) {
        if (npos != 1 || !cli_valid_principal(pos[0]) || admin) {
            json_decref(tuples);
            return cli_usage_error(cmd, "expected USER (1..128 of [A-Za-z0-9._@+-])");
        }
        snprintf(a, sizeof a, "user:%s", pos[0]);
        json_array_append_new(tuples, tuple(a, "admin", "platform:credex"));
        what = "platform:credex#admin@";
    } else {
        json_decref(tuples);
        return cli_usage_error("dev", "unknown subcommand '%s' (see credexctl dev --help)", sub);
    }
    /* OpenFGA rejects a write whose tuples partly exist; write them one by one. */
    size_t n = json_array_size(tuples);
    int rc = CLI_OK;
    for (size_t i = 0; i < n && rc == CLI_OK; i++) {
        json_t *one = json_array();
        json_array_append(one, json_array_get(tuples, i));
        rc = fga_write(cfg, one, remove);
    }
    json_decref(tuples);
    if (rc == CLI_OK)
        printf("%s %s%s%s%s\n", remove ? "removed" : "wrote", what, a,
               strcmp(sub, "add-team-member") == 0 ? " in " : "",
               strcmp(sub, "add-team-member") == 0 ? b : "");
    return rc;
}
