/*
 * credexctl secret: the public Secrets service of the gateway, acting as a user.
 *
 * The user is authenticated by a user token in `x-credex-user-token` (minted on the fly with
 * --user, or its alias --as, or given with --token). --user always names the acting user; the
 * grantee of share/unshare has its own option, --grantee TYPE:ID. No service JWT is sent, so the
 * gateway classifies the CLI as a BROWSER-class caller (docs/IDENTITY.md): it may manage secrets,
 * never read a value. Values go in from a file or stdin only, never from the command line (which
 * other local users can read in /proc and which lands in shell history).
 */
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "credex/v1/gateway.pb-c.h"
#include "tools/credexctl/credexctl.h"

#define MAX_USES 16

static void usage(FILE *f)
{
    fputs(
        "usage: credexctl secret [ACTOR] SUBCOMMAND [ARGS] [ACTOR]\n"
        "Manage secrets through the gateway's public Secrets API, acting as a user.\n"
        "ACTOR (before or after the subcommand):\n"
        "  --user ID | --as ID  act as user ID (mints a dev token, see `credexctl token`)\n"
        "  --token JWT          act with this user token instead\n"
        "  --json               print the reply message as JSON (proto3 JSON mapping: what\n"
        "                       grpcurl prints for the same call)\n"
        "  --addr HOST:PORT     gateway address (default CREDEX_GATEWAY_ADDR)\n"
        "  --peer NAME          identity the gateway must prove (default gateway)\n"
        "SUBCOMMANDS:\n"
        "  create --name N --kind api_key|token|password|generic (--value-file F | --value-stdin)\n"
        "         [--team T] [--description D] [--provider P] [--allowed-use U]...\n"
        "         [--idempotency-key K] [--quiet (print the new secret id only)]\n"
        "  list [--scope accessible|owned|shared_with_me|all] [--kind K]\n"
        "       [--status active|revoked|deleted] [--team T] [--provider P]\n"
        "       [--page-size N] [--page-token T]\n"
        "  show ID\n"
        "  update ID [--name N] [--description D] [--allowed-use U]... [--any-use]\n"
        "  rotate ID --expected-version V (--value-file F | --value-stdin)\n"
        "  versions ID\n"
        "  revoke ID [--reason R]\n"
        "  delete ID\n"
        "  share ID --grantee user:U|team:T|service:S [--role user|manager|auditor] [--preview]\n"
        "  unshare ID --grantee user:U|team:T|service:S [--role user|manager|auditor]\n"
        "  shares ID\n"
        "Values are read from a file or stdin, byte for byte (printf '%s' \"$v\" | ... keeps a\n"
        "trailing newline out), 1..65536 bytes; never from the command line. No command here\n"
        "prints a value: reads return metadata and the masked value state only.\n",
        f);
}

/* Everything a subcommand needs: the parsed common options and the call plumbing. */
typedef struct sctx {
    const cx_config_t *cfg;
    const char *sub;        /* subcommand name */
    char label[48];         /* "secret <sub>", for messages */
    bool quiet;             /* create: print the secret id only */
    const char *actor;      /* the acting user: --user or --as */
    const char *actor_user; /* --user */
    const char *actor_as;   /* --as */
    const char *token;      /* --token */
    bool json;
    cli_conn_t conn;
    char *minted; /* heap: token minted for actor */
    rpc_header_t hdr[1];
    rpc_arena_t *arena;
} sctx_t;

/* Options every subcommand accepts; the subcommand's own follow. */
#define COMMON_OPTS(c)                                                                             \
    {.name = "user", .kind = CLI_OPT_VALUE, .value = &(c)->actor_user},                            \
        {.name = "as", .kind = CLI_OPT_VALUE, .value = &(c)->actor_as},                            \
        {.name = "token", .kind = CLI_OPT_VALUE, .value = &(c)->token},                            \
        {.name = "json", .kind = CLI_OPT_FLAG, .flag = &(c)->json},                                \
        {.name = "addr", .kind = CLI_OPT_VALUE, .value = &(c)->conn.addr},                         \
    {                                                                                              \
        .name = "peer", .kind = CLI_OPT_VALUE, .value = &(c)->conn.peer                            \
    }

static int prepare(sctx_t *c)
{
    /* Two names for one thing: given both, the caller may mean the old share syntax, where
     * --user was the grantee; refuse rather than act as the wrong user. */
    if (c->actor_user != NULL && c->actor_as != NULL)
        return cli_usage_error(c->label, "--user and --as both name the acting user: give one "
                                         "(the grantee of share/unshare is --grantee TYPE:ID)");
    c->actor = c->actor_user != NULL ? c->actor_user : c->actor_as;
    if (c->actor != NULL && c->token != NULL)
        return cli_usage_error(c->label, "give either --user/--as or --token, not both");
    if (c->actor == NULL && c->token == NULL)
        return cli_usage_error(c->label,
                               "who is acting? give --user ID (or --as ID) or --token JWT");
    int rc;
    if (c->actor != NULL &&
        (rc = cli_check_field(c->label, "--user/--as", "subject_user_id", c->actor)) != CLI_OK)
        return rc;
    if (c->token != NULL && (strlen(c->token) < 16 || strlen(c->token) > 8192 ||
                             strchr(c->token, ' ') != NULL || strchr(c->token, '\n') != NULL))
        return cli_usage_error(c->label, "--token: not a JWT");
    if (c->conn.addr != NULL && strlen(c->conn.addr) > 127)
        return cli_usage_error(c->label, "--addr: too long");
    if (c->conn.peer != NULL && !cli_valid_service(c->conn.peer))
        return cli_usage_error(c->label, "--peer: expected 1..63 of [a-z0-9-]");
    const char *tok = c->token;
    if (c->actor != NULL) {
        cx_error_t err;
        cli_token_spec_t spec = {.sub = c->actor, .azp = NULL, .ttl_s = 300};
        if (!cli_token_mint(c->cfg, &spec, &c->minted, &err))
            return cli_fail(&err);
        tok = c->minted;
    }
    c->hdr[0].key = "x-credex-user-token";
    c->hdr[0].value = tok;
    c->arena = rpc_arena_new(4096);
    return CLI_OK;
}

static void release(sctx_t *c)
{
    if (c->minted != NULL)
        cli_wipe_free(c->minted, strlen(c->minted));
    rpc_arena_free(c->arena);
}

static bool call(sctx_t *c, const char *method, const ProtobufCMessage *req,
                 ProtobufCMessage **reply, cx_error_t *err)
{
    return cli_call(c->cfg, &c->conn, &credex__v1__secrets__descriptor, method, req, c->hdr, 1,
                    c->arena, reply, err);
}

/* ---- printing ------------------------------------------------------------------------- */

static const char *owner_str(const Credex__V1__Owner *o, char *buf, size_t bufsz)
{
    char t[32];
    if (o == NULL)
        return "-";
    snprintf(buf, bufsz, "%s:%s",
             cli_enum_name(&credex__v1__owner_type__descriptor, (int)o->owner_type, t, sizeof t),
             o->owner_id);
    return buf;
}

static void print_metadata(const Credex__V1__SecretMetadata *m)
{
    char a[64], b[160], t[40];
    printf("secret_id     %s\n", m->secret_id);
    printf("display_name  %s\n", m->display_name);
    printf("kind          %s\n",
           cli_enum_name(&credex__v1__secret_kind__descriptor, (int)m->kind, a, sizeof a));
    printf("owner         %s\n", owner_str(m->owner, b, sizeof b));
    printf("status        %s\n",
           cli_enum_name(&credex__v1__secret_status__descriptor, (int)m->status, a, sizeof a));
    printf("version       %u\n", m->current_version);
    printf("value         %s\n",
           m->value_set ? (m->masked_value[0] ? m->masked_value : "(set)") : "(no value)");
    if (m->description[0])
        printf("description   %s\n", m->description);
    if (m->provider[0])
        printf("provider      %s\n", m->provider);
    printf("allowed_uses  ");
    if (m->n_allowed_uses == 0)
        printf("(any declared use)");
    for (size_t i = 0; i < m->n_allowed_uses; i++)
        printf("%s%s", i ? ", " : "", m->allowed_uses[i]);
    printf("\n");
    printf("created       %s by %s\n", cli_time(m->created_at_ms, t, sizeof t),
           m->created_by[0] ? m->created_by : "-");
    printf("updated       %s by %s\n", cli_time(m->updated_at_ms, t, sizeof t),
           m->updated_by[0] ? m->updated_by : "-");
    if (m->rotated_at_ms)
        printf("rotated       %s\n", cli_time(m->rotated_at_ms, t, sizeof t));
    if (m->revoked_at_ms)
        printf("revoked       %s\n", cli_time(m->revoked_at_ms, t, sizeof t));
    if (m->deleted_at_ms)
        printf("deleted       %s\n", cli_time(m->deleted_at_ms, t, sizeof t));
}

static int finish(sctx_t *c, const ProtobufCMessage *reply, void (*human)(const void *))
{
    if (c->json)
        return cli_print_message(reply);
    human(reply);
    return CLI_OK;
}

/* ---- argument helpers ------------------------------------------------------------------ */

static bool parse_sub(sctx_t *c, int argc, char **argv, const cli_opt_t *extra, size_t nextra,
                      const char **pos, size_t maxpos, size_t *npos, bool *help)
{
    cli_opt_t opts[32];
    size_t n = 0;
    const cli_opt_t common[] = {COMMON_OPTS(c)};
    for (size_t i = 0; i < sizeof common / sizeof common[0]; i++)
        opts[n++] = common[i];
    for (size_t i = 0; i < nextra && n + 1 < sizeof opts / sizeof opts[0]; i++)
        opts[n++] = extra[i];
    opts[n] = (cli_opt_t){0};
    char name[64];
    snprintf(name, sizeof name, "secret %s", c->sub);
    return cli_parse(name, argc, argv, opts, pos, maxpos, npos, help);
}

static int need_id(sctx_t *c, size_t npos, const char *const *pos)
{
    if (npos != 1)
        return cli_usage_error(c->label, "expected exactly one secret ID (see --help)");
    return cli_check_field(c->label, "secret ID", "secret_id", pos[0]);
}

/* The options and the one secret ID (pos[0]) of a subcommand on one secret. True: go on.
 * False: return *rc at once (CLI_OK after --help, a usage error otherwise). */
static bool parse_by_id(sctx_t *c, int argc, char **argv, const cli_opt_t *extra, size_t nextra,
                        const char **pos, int *rc)
{
    size_t npos;
    bool help;
    if (!parse_sub(c, argc, argv, extra, nextra, pos, 1, &npos, &help)) {
        *rc = CLI_USAGE;
        return false;
    }
    if (help) {
        usage(stdout);
        *rc = CLI_OK;
        return false;
    }
    return (*rc = need_id(c, npos, pos)) == CLI_OK;
}

static int read_value_opt(sctx_t *c, const char *file, bool from_stdin, unsigned char **val,
                          size_t *len)
{
    if ((file != NULL) == from_stdin)
        return cli_usage_error(c->label, "give exactly one of --value-file F or --value-stdin "
                                         "(values are never taken from the command line)");
    cx_error_t err;
    if (!cli_read_value(from_stdin ? "-" : file, CLI_VALUE_MAX, val, len, &err))
        return cli_usage_error(c->label, "%s", err.message);
    return CLI_OK;
}

static void uuid4(char out[37])
{
    unsigned char r[16];
    if (RAND_bytes(r, sizeof r) != 1)
        abort(); /* no randomness: nothing sensible to do */
    r[6] = (unsigned char)((r[6] & 0x0f) | 0x40);
    r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0],
             r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13],
             r[14], r[15]);
}

static bool parse_kind(const char *s, int *kind)
{
    static const char *const ok[] = {"api_key", "token", "password", "generic", NULL};
    for (size_t i = 0; ok[i]; i++)
        if (strcmp(s, ok[i]) == 0)
            return cli_enum_value(&credex__v1__secret_kind__descriptor, s, kind);
    return false;
}

/* ---- subcommands ------------------------------------------------------------------------ */

static void human_create(const void *r)
{
    const Credex__V1__CreateSecretResponse *res = r;
    if (res->secret == NULL)
        return;
    printf("%s secret %s (version %u)\n",
           res->created ? "created" : "already existed (replay):", res->secret->secret_id,
           res->secret->current_version);
    print_metadata(res->secret);
}

static int sub_create(sctx_t *c, int argc, char **argv)
{
    const char *name = NULL, *kind = NULL, *team = NULL, *desc = NULL, *provider = NULL,
               *file = NULL, *idem = NULL, *uses[MAX_USES], *pos[1];
    size_t nuses = 0, npos;
    bool from_stdin = false, help;
    const cli_opt_t extra[] = {
        {.name = "name", .kind = CLI_OPT_VALUE, .value = &name},
        {.name = "kind", .kind = CLI_OPT_VALUE, .value = &kind},
        {.name = "team", .kind = CLI_OPT_VALUE, .value = &team},
        {.name = "description", .kind = CLI_OPT_VALUE, .value = &desc},
        {.name = "provider", .kind = CLI_OPT_VALUE, .value = &provider},
        {.name = "allowed-use",
         .kind = CLI_OPT_LIST,
         .list = uses,
         .list_len = &nuses,
         .list_max = MAX_USES},
        {.name = "value-file", .kind = CLI_OPT_VALUE, .value = &file},
        {.name = "value-stdin", .kind = CLI_OPT_FLAG, .flag = &from_stdin},
        {.name = "idempotency-key", .kind = CLI_OPT_VALUE, .value = &idem},
        {.name = "quiet", .kind = CLI_OPT_FLAG, .flag = &c->quiet},
    };
    if (!parse_sub(c, argc, argv, extra, sizeof extra / sizeof extra[0], pos, 0, &npos, &help))
        return CLI_USAGE;
    if (help) {
        usage(stdout);
        return CLI_OK;
    }
    int k = 0, rc;
    if (name == NULL)
        return cli_usage_error(c->label, "--name: required");
    if ((rc = cli_check_field(c->label, "--name", "display_name", name)) != CLI_OK)
        return rc;
    if (kind == NULL || !parse_kind(kind, &k))
        return cli_usage_error(c->label,
                               "--kind: required, one of api_key, token, password, generic");
    if ((team != NULL && (rc = cli_check_field(c->label, "--team", "owner_id", team)) != CLI_OK) ||
        (desc != NULL && desc[0] != '\0' &&
         (rc = cli_check_field(c->label, "--description", "description", desc)) != CLI_OK) ||
        (provider != NULL &&
         (rc = cli_check_field(c->label, "--provider", "provider", provider)) != CLI_OK))
        return rc;
    for (size_t i = 0; i < nuses; i++)
        if ((rc = cli_check_field(c->label, "--allowed-use", "allowed_uses", uses[i])) != CLI_OK)
            return rc;
    char gen[37];
    if (idem == NULL) {
        uuid4(gen);
        idem = gen;
    } else if ((rc = cli_check_field(c->label, "--idempotency-key", "idempotency_key", idem)) !=
               CLI_OK) {
        return rc;
    }
    if ((file != NULL) == from_stdin)
        return cli_usage_error(c->label, "give exactly one of --value-file F or --value-stdin "
                                         "(values are never taken from the command line)");
    rc = prepare(c);
    if (rc != CLI_OK)
        return rc;
    unsigned char *val = NULL;
    size_t vlen = 0;
    if ((rc = read_value_opt(c, file, from_stdin, &val, &vlen)) != CLI_OK)
        return rc;

    Credex__V1__CreateSecretRequest req = CREDEX__V1__CREATE_SECRET_REQUEST__INIT;
    Credex__V1__Owner owner = CREDEX__V1__OWNER__INIT;
    req.idempotency_key = (char *)idem;
    req.kind = (Credex__V1__SecretKind)k;
    req.display_name = (char *)name;
    req.description = (char *)(desc ? desc : "");
    req.provider = (char *)(provider ? provider : "");
    req.n_allowed_uses = nuses;
    req.allowed_uses = (char **)uses;
    if (team != NULL) {
        owner.owner_type = CREDEX__V1__OWNER_TYPE__OWNER_TYPE_TEAM;
        owner.owner_id = (char *)team;
        req.owner = &owner;
    }
    req.value.data = val;
    req.value.len = vlen;
    ProtobufCMessage *reply = NULL;
    cx_error_t err;
    bool ok = call(c, "CreateSecret", &req.base, &reply, &err);
    cli_wipe_free(val, CLI_VALUE_MAX + 1);
    if (!ok)
        return cli_fail(&err);
    if (c->quiet && !c->json) {
        const Credex__V1__CreateSecretResponse *res = (const void *)reply;
        printf("%s\n", res->secret ? res->secret->secret_id : "");
        return CLI_OK;
    }
    return finish(c, reply, human_create);
}

static void human_list(const void *r)
{
    const Credex__V1__ListSecretsResponse *res = r;
    char k[32], s[32], o[160];
    printf("%-34s %-9s %-8s %4s  %-24s %s\n", "SECRET_ID", "KIND", "STATUS", "VER", "OWNER",
           "NAME");
    for (size_t i = 0; i < res->n_secrets; i++) {
        const Credex__V1__SecretMetadata *m = res->secrets[i];
        printf("%-34s %-9s %-8s %4u  %-24s %s\n", m->secret_id,
               cli_enum_name(&credex__v1__secret_kind__descriptor, (int)m->kind, k, sizeof k),
               cli_enum_name(&credex__v1__secret_status__descriptor, (int)m->status, s, sizeof s),
               m->current_version, owner_str(m->owner, o, sizeof o), m->display_name);
    }
    if (res->page != NULL && res->page->next_page_token[0])
        printf("(more: --page-token %s)\n", res->page->next_page_token);
}

static int sub_list(sctx_t *c, int argc, char **argv)
{
    const char *scope = NULL, *kind = NULL, *status = NULL, *team = NULL, *provider = NULL,
               *psize = NULL, *ptoken = NULL, *pos[1];
    size_t npos;
    bool help;
    const cli_opt_t extra[] = {
        {.name = "scope", .kind = CLI_OPT_VALUE, .value = &scope},
        {.name = "kind", .kind = CLI_OPT_VALUE, .value = &kind},
        {.name = "status", .kind = CLI_OPT_VALUE, .value = &status},
        {.name = "team", .kind = CLI_OPT_VALUE, .value = &team},
        {.name = "provider", .kind = CLI_OPT_VALUE, .value = &provider},
        {.name = "page-size", .kind = CLI_OPT_VALUE, .value = &psize},
        {.name = "page-token", .kind = CLI_OPT_VALUE, .value = &ptoken},
    };
    if (!parse_sub(c, argc, argv, extra, sizeof extra / sizeof extra[0], pos, 0, &npos, &help))
        return CLI_USAGE;
    if (help) {
        usage(stdout);
        return CLI_OK;
    }
    Credex__V1__ListSecretsRequest req = CREDEX__V1__LIST_SECRETS_REQUEST__INIT;
    Credex__V1__Owner owner = CREDEX__V1__OWNER__INIT;
    Credex__V1__PageRequest page = CREDEX__V1__PAGE_REQUEST__INIT;
    int v = 0;
    if (scope != NULL) {
        if (!cli_enum_value(&credex__v1__list_secrets_scope__descriptor, scope, &v))
            return cli_usage_error(c->label,
                                   "--scope: one of accessible, owned, shared_with_me, all");
        req.scope = (Credex__V1__ListSecretsScope)v;
    }
    if (kind != NULL) {
        if (!parse_kind(kind, &v))
            return cli_usage_error(c->label, "--kind: one of api_key, token, password, generic");
        req.kind = (Credex__V1__SecretKind)v;
    }
    if (status != NULL) {
        if (!cli_enum_value(&credex__v1__secret_status__descriptor, status, &v))
            return cli_usage_error(c->label, "--status: one of active, revoked, deleted");
        req.status = (Credex__V1__SecretStatus)v;
    }
    if (team != NULL) {
        int trc = cli_check_field(c->label, "--team", "owner_id", team);
        if (trc != CLI_OK)
            return trc;
        owner.owner_type = CREDEX__V1__OWNER_TYPE__OWNER_TYPE_TEAM;
        owner.owner_id = (char *)team;
        req.owner = &owner;
    }
    if (provider != NULL) {
        int prc = cli_check_field(c->label, "--provider", "provider", provider);
        if (prc != CLI_OK)
            return prc;
        req.provider = (char *)provider;
    }
    uint64_t n = 0;
    if (psize != NULL && !cli_parse_uint(psize, 1, 200, &n))
        return cli_usage_error(c->label, "--page-size: an integer in 1..200");
    if (ptoken != NULL) {
        int trc = cli_check_field(c->label, "--page-token", "page_token", ptoken);
        if (trc != CLI_OK)
            return trc;
    }
    page.page_size = (uint32_t)n;
    page.page_token = (char *)(ptoken ? ptoken : "");
    req.page = &page;
    int rc = prepare(c);
    if (rc != CLI_OK)
        return rc;
    ProtobufCMessage *reply = NULL;
    cx_error_t err;
    if (!call(c, "ListSecrets", &req.base, &reply, &err))
        return cli_fail(&err);
    return finish(c, reply, human_list);
}

static void human_metadata(const void *r)
{
    print_metadata(r);
}

/* show, delete, versions, shares: the secret id is the whole request. The request message is
 * built from the method's input descriptor, so one function serves the four. */
static int sub_by_id(sctx_t *c, int argc, char **argv, const char *method,
                     void (*human)(const void *), const char *done_note)
{
    const char *pos[1];
    int rc;
    if (!parse_by_id(c, argc, argv, NULL, 0, pos, &rc) || (rc = prepare(c)) != CLI_OK)
        return rc;
    const ProtobufCMethodDescriptor *m =
        protobuf_c_service_descriptor_get_method_by_name(&credex__v1__secrets__descriptor, method);
    const ProtobufCMessageDescriptor *d = m->input;
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(d, "secret_id");
    char *req = calloc(1, d->sizeof_message);
    if (req == NULL)
        return CLI_FAIL;
    protobuf_c_message_init(d, req);
    *(const char **)(req + f->offset) = pos[0];
    ProtobufCMessage *reply = NULL;
    cx_error_t err;
    bool ok = call(c, method, (const ProtobufCMessage *)req, &reply, &err);
    free(req);
    if (!ok)
        return cli_fail(&err);
    if (done_note != NULL && !c->json)
        printf("%s %s\n", done_note, pos[0]);
    return finish(c, reply, human);
}

static int sub_update(sctx_t *c, int argc, char **argv)
{
    const char *name = NULL, *desc = NULL, *uses[MAX_USES], *pos[1];
    size_t nuses = 0;
    bool clear_uses = false;
    const cli_opt_t extra[] = {
        {.name = "name", .kind = CLI_OPT_VALUE, .value = &name},
        {.name = "description", .kind = CLI_OPT_VALUE, .value = &desc},
        {.name = "allowed-use",
         .kind = CLI_OPT_LIST,
         .list = uses,
         .list_len = &nuses,
         .list_max = MAX_USES},
        {.name = "any-use", .kind = CLI_OPT_FLAG, .flag = &clear_uses},
    };
    int rc;
    if (!parse_by_id(c, argc, argv, extra, sizeof extra / sizeof extra[0], pos, &rc))
        return rc;
    if ((name != NULL &&
         (rc = cli_check_field(c->label, "--name", "display_name", name)) != CLI_OK) ||
        (desc != NULL && desc[0] != '\0' &&
         (rc = cli_check_field(c->label, "--description", "description", desc)) != CLI_OK))
        return rc;
    if (clear_uses && nuses > 0)
        return cli_usage_error(c->label, "give --allowed-use or --any-use, not both");
    for (size_t i = 0; i < nuses; i++)
        if ((rc = cli_check_field(c->label, "--allowed-use", "allowed_uses", uses[i])) != CLI_OK)
            return rc;
    char *mask[3];
    size_t nmask = 0;
    if (name != NULL)
        mask[nmask++] = "display_name";
    if (desc != NULL)
        mask[nmask++] = "description";
    if (nuses > 0 || clear_uses)
        mask[nmask++] = "allowed_uses";
    if (nmask == 0)
        return cli_usage_error(c->label, "nothing to change: give --name, --description, "
                                         "--allowed-use or --any-use");
    if ((rc = prepare(c)) != CLI_OK)
        return rc;
    Credex__V1__UpdateSecretRequest req = CREDEX__V1__UPDATE_SECRET_REQUEST__INIT;
    req.secret_id = (char *)pos[0];
    req.display_name = (char *)(name ? name : "");
    req.description = (char *)(desc ? desc : "");
    req.n_allowed_uses = nuses;
    req.allowed_uses = (char **)uses;
    req.n_update_mask = nmask;
    req.update_mask = mask;
    ProtobufCMessage *reply = NULL;
    cx_error_t err;
    if (!call(c, "UpdateSecret", &req.base, &reply, &err))
        return cli_fail(&err);
    return finish(c, reply, human_metadata);
}

static void human_rotate(const void *r)
{
    const Credex__V1__RotateSecretResponse *res = r;
    if (res->secret != NULL)
        printf("rotated secret %s to version %u\n", res->secret->secret_id,
               res->secret->current_version);
    if (res->secret != NULL)
        print_metadata(res->secret);
}

static int sub_rotate(sctx_t *c, int argc, char **argv)
{
    const char *expected = NULL, *file = NULL, *pos[1];
    bool from_stdin = false;
    const cli_opt_t extra[] = {
        {.name = "expected-version", .kind = CLI_OPT_VALUE, .value = &expected},
        {.name = "value-file", .kind = CLI_OPT_VALUE, .value = &file},
        {.name = "value-stdin", .kind = CLI_OPT_FLAG, .flag = &from_stdin},
    };
    int rc;
    if (!parse_by_id(c, argc, argv, extra, sizeof extra / sizeof extra[0], pos, &rc))
        return rc;
    uint64_t ev = 0;
    if (expected == NULL || !cli_parse_uint(expected, 1, UINT32_MAX, &ev))
        return cli_usage_error(c->label, "--expected-version: required, the current version "
                                         "(see `secret show`), an integer >= 1");
    if ((file != NULL) == from_stdin)
        return cli_usage_error(c->label, "give exactly one of --value-file F or --value-stdin "
                                         "(values are never taken from the command line)");
    if ((rc = prepare(c)) != CLI_OK)
        return rc;
    unsigned char *val = NULL;
    size_t vlen = 0;
    if ((rc = read_value_opt(c, file, from_stdin, &val, &vlen)) != CLI_OK)
        return rc;
    Credex__V1__RotateSecretRequest req = CREDEX__V1__ROTATE_SECRET_REQUEST__INIT;
    req.secret_id = (char *)pos[0];
    req.expected_version = (uint32_t)ev;
    req.value.data = val;
    req.value.len = vlen;
    ProtobufCMessage *reply = NULL;
    cx_error_t err;
    bool ok = call(c, "RotateSecret", &req.base, &reply, &err);
    cli_wipe_free(val, CLI_VALUE_MAX + 1);
    if (!ok)
        return cli_fail(&err);
    return finish(c, reply, human_rotate);
}

static void human_versions(const void *r)
{
    const Credex__V1__ListSecretVersionsResponse *res = r;
    char st[32], kp[32], t[40];
    printf("%4s  %-10s %-12s %-10s %-28s %-20s %s\n", "VER", "STATE", "ALGORITHM", "PROVIDER",
           "KEY_ID", "CREATED", "BY");
    for (size_t i = 0; i < res->n_versions; i++) {
        const Credex__V1__VersionInfo *v = res->versions[i];
        printf("%4u  %-10s %-12s %-10s %-28s %-20s %s\n", v->version,
               cli_enum_name(&credex__v1__version_state__descriptor, (int)v->state, st, sizeof st),
               v->algorithm,
               cli_enum_name(&credex__v1__key_provider__descriptor, (int)v->key_provider, kp,
                             sizeof kp),
               v->key_id, cli_time(v->created_at_ms, t, sizeof t), v->created_by);
    }
}

static int sub_revoke(sctx_t *c, int argc, char **argv)
{
    const char *reason = NULL, *pos[1];
    const cli_opt_t extra[] = {{.name = "reason", .kind = CLI_OPT_VALUE, .value = &reason}};
    int rc;
    if (!parse_by_id(c, argc, argv, extra, 1, pos, &rc))
        return rc;
    if (reason != NULL && (rc = cli_check_field(c->label, "--reason", "reason", reason)) != CLI_OK)
        return rc;
    if ((rc = prepare(c)) != CLI_OK)
        return rc;
    Credex__V1__RevokeSecretRequest req = CREDEX__V1__REVOKE_SECRET_REQUEST__INIT;
    req.secret_id = (char *)pos[0];
    req.reason = (char *)(reason ? reason : "");
    ProtobufCMessage *reply = NULL;
    cx_error_t err;
    if (!call(c, "RevokeSecret", &req.base, &reply, &err))
        return cli_fail(&err);
    if (!c->json)
        printf("revoked secret %s\n", pos[0]);
    return finish(c, reply, human_metadata);
}

/* share/unshare: the grantee, "user:ID", "team:ID" or "service:ID". */
static int grantee_of(sctx_t *c, const char *spec, Credex__V1__Grantee *g)
{
    static const struct {
        const char *name;
        Credex__V1__GranteeType type;
        bool (*valid)(const char *);
        const char *rule;
    } kinds[] = {
        {"user", CREDEX__V1__GRANTEE_TYPE__GRANTEE_TYPE_USER, cli_valid_principal,
         "1..128 of [A-Za-z0-9._@+-]"},
        {"team", CREDEX__V1__GRANTEE_TYPE__GRANTEE_TYPE_TEAM, cli_valid_principal,
         "1..128 of [A-Za-z0-9._@+-]"},
        {"service", CREDEX__V1__GRANTEE_TYPE__GRANTEE_TYPE_SERVICE, cli_valid_service,
         "1..63 of [a-z0-9-]"},
    };
    if (spec == NULL)
        return cli_usage_error(c->label,
                               "who gets it? give --grantee user:ID, team:ID or service:ID "
                               "(the acting user is --user ID or --token JWT)");
    const char *colon = strchr(spec, ':');
    for (size_t i = 0; colon != NULL && i < sizeof kinds / sizeof kinds[0]; i++) {
        if (strlen(kinds[i].name) != (size_t)(colon - spec) ||
            strncmp(spec, kinds[i].name, (size_t)(colon - spec)) != 0)
            continue;
        if (!kinds[i].valid(colon + 1))
            return cli_usage_error(c->label, "--grantee %s:ID: ID must be %s", kinds[i].name,
                                   kinds[i].rule);
        g->grantee_type = kinds[i].type;
        g->grantee_id = (char *)(colon + 1);
        return CLI_OK;
    }
    return cli_usage_error(c->label, "--grantee: expected user:ID, team:ID or service:ID");
}

static int role_of(sctx_t *c, const char *role, Credex__V1__ShareRole *out)
{
    int v = 0;
    if (role == NULL)
        return CLI_OK;
    if (strcmp(role, "owner") == 0 ||
        !cli_enum_value(&credex__v1__share_role__descriptor, role, &v))
        return cli_usage_error(c->label, "--role: one of user, manager, auditor");
    *out = (Credex__V1__ShareRole)v;
    return CLI_OK;
}

static void human_share(const void *r)
{
    const Credex__V1__ShareSecretResponse *res = r;
    char t[32], ro[32];
    if (res->share != NULL && res->share->grantee != NULL)
        printf("%s %s:%s as %s on secret %s\n", res->applied ? "granted" : "preview: would grant",
               cli_enum_name(&credex__v1__grantee_type__descriptor,
                             (int)res->share->grantee->grantee_type, t, sizeof t),
               res->share->grantee->grantee_id,
               cli_enum_name(&credex__v1__share_role__descriptor, (int)res->share->role, ro,
                             sizeof ro),
               res->share->secret_id);
    for (size_t i = 0; i < res->n_warnings; i++)
        printf("warning: %s\n", res->warnings[i]);
}

static void human_unshare(const void *r)
{
    const Credex__V1__UnshareSecretResponse *res = r;
    printf("removed %u grant(s)\n", res->removed_count);
}

static int sub_share(sctx_t *c, int argc, char **argv, bool unshare)
{
    const char *grantee = NULL, *role = NULL, *pos[1];
    bool preview = false;
    const cli_opt_t extra[] = {
        {.name = "grantee", .kind = CLI_OPT_VALUE, .value = &grantee},
        {.name = "role", .kind = CLI_OPT_VALUE, .value = &role},
        {.name = "preview", .kind = CLI_OPT_FLAG, .flag = &preview},
    };
    size_t nextra = sizeof extra / sizeof extra[0] - (unshare ? 1 : 0);
    int rc;
    if (!parse_by_id(c, argc, argv, extra, nextra, pos, &rc))
        return rc;
    Credex__V1__Grantee g = CREDEX__V1__GRANTEE__INIT;
    Credex__V1__ShareRole r = unshare ? CREDEX__V1__SHARE_ROLE__SHARE_ROLE_UNSPECIFIED
                                      : CREDEX__V1__SHARE_ROLE__SHARE_ROLE_USER;
    if ((rc = prepare(c)) != CLI_OK || (rc = grantee_of(c, grantee, &g)) != CLI_OK ||
        (rc = role_of(c, role, &r)) != CLI_OK)
        return rc;
    ProtobufCMessage *reply = NULL;
    cx_error_t err;
    bool ok;
    if (unshare) {
        Credex__V1__UnshareSecretRequest req = CREDEX__V1__UNSHARE_SECRET_REQUEST__INIT;
        req.secret_id = (char *)pos[0];
        req.grantee = &g;
        req.role = r;
        ok = call(c, "UnshareSecret", &req.base, &reply, &err);
    } else {
        Credex__V1__ShareSecretRequest req = CREDEX__V1__SHARE_SECRET_REQUEST__INIT;
        req.secret_id = (char *)pos[0];
        req.grantee = &g;
        req.role = r;
        req.preview_only = preview;
        ok = call(c, "ShareSecret", &req.base, &reply, &err);
    }
    if (!ok)
        return cli_fail(&err);
    return finish(c, reply, unshare ? human_unshare : human_share);
}

static void human_shares(const void *r)
{
    const Credex__V1__ListSecretSharesResponse *res = r;
    char t[32], ro[32];
    printf("%-8s %-9s %s\n", "ROLE", "TYPE", "GRANTEE");
    for (size_t i = 0; i < res->n_shares; i++) {
        const Credex__V1__SecretShare *s = res->shares[i];
        if (s->grantee == NULL)
            continue;
        printf("%-8s %-9s %s\n",
               cli_enum_name(&credex__v1__share_role__descriptor, (int)s->role, ro, sizeof ro),
               cli_enum_name(&credex__v1__grantee_type__descriptor, (int)s->grantee->grantee_type,
                             t, sizeof t),
               s->grantee->grantee_id);
    }
}

int cmd_secret(const cx_config_t *cfg, int argc, char **argv)
{
    sctx_t c = {.cfg = cfg};
    /* Common options may come before the subcommand word. */
    int i = 0;
    const cli_opt_t common[] = {COMMON_OPTS(&c), {0}};
    while (i < argc && strncmp(argv[i], "--", 2) == 0 && strcmp(argv[i], "--help") != 0) {
        const char *pos[1];
        size_t npos;
        bool help;
        bool flag = strcmp(argv[i], "--json") == 0 || strchr(argv[i], '=') != NULL;
        int take = flag ? 1 : 2;
        if (i + take > argc)
            return cli_usage_error("secret", "%s needs a value", argv[i]);
        if (!cli_parse("secret", take, argv + i, common, pos, 0, &npos, &help))
            return CLI_USAGE;
        i += take;
    }
    if (i >= argc || strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0 ||
        strcmp(argv[i], "help") == 0) {
        usage(i >= argc ? stderr : stdout);
        return i >= argc ? CLI_USAGE : CLI_OK;
    }
    c.sub = argv[i];
    snprintf(c.label, sizeof c.label, "secret %.32s", c.sub);
    int n = argc - i - 1;
    char **a = argv + i + 1;
    int rc;
    if (strcmp(c.sub, "create") == 0)
        rc = sub_create(&c, n, a);
    else if (strcmp(c.sub, "list") == 0)
        rc = sub_list(&c, n, a);
    else if (strcmp(c.sub, "show") == 0 || strcmp(c.sub, "get") == 0)
        rc = sub_by_id(&c, n, a, "GetSecret", human_metadata, NULL);
    else if (strcmp(c.sub, "delete") == 0)
        rc = sub_by_id(&c, n, a, "DeleteSecret", human_metadata,
                       "deleted (payloads destroyed, tombstone kept):");
    else if (strcmp(c.sub, "rotate") == 0)
        rc = sub_rotate(&c, n, a);
    else if (strcmp(c.sub, "update") == 0)
        rc = sub_update(&c, n, a);
    else if (strcmp(c.sub, "versions") == 0)
        rc = sub_by_id(&c, n, a, "ListSecretVersions", human_versions, NULL);
    else if (strcmp(c.sub, "revoke") == 0)
        rc = sub_revoke(&c, n, a);
    else if (strcmp(c.sub, "share") == 0)
        rc = sub_share(&c, n, a, false);
    else if (strcmp(c.sub, "unshare") == 0)
        rc = sub_share(&c, n, a, true);
    else if (strcmp(c.sub, "shares") == 0)
        rc = sub_by_id(&c, n, a, "ListSecretShares", human_shares, NULL);
    else
        rc = cli_usage_error("secret", "unknown subcommand '%s' (see credexctl secret --help)",
                             c.sub);
    release(&c);
    return rc;
}
