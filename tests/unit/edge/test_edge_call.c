/*
 * edge_call against an in-process gRPC server with the gateway's identity (real mTLS, test PKI)
 * whose handlers do what the real gateway never does, or does only in an outage: answer
 * Retrieve with material, fail with a transport-like message. Pins what the edge writes then:
 * never the material (500, edge.material_refused), never the transport's words, 201 only for a
 * create that created, and the browser-kind headers it sends.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log/cx_log.h"
#include "credex/v1/gateway.pb-c.h"
#include "credex/v1/oauth.pb-c.h"
#include "services/edge/edge_internal.h"
#include "tests/unit/kit/testkit.h"

#define MATERIAL "sk-material-canary-0123456789"
#define TOKEN    "tok-123.abc"

/* The browser-kind call the edge must make: its own marker, the user's token, no service token. */
static bool browser_headers(rpc_call_t *call, cx_error_t *err)
{
    const char *caller = rpc_call_header(call, "x-credex-caller");
    const char *user = rpc_call_header(call, "x-credex-user-token");
    if (caller == NULL || strcmp(caller, "browser") != 0 || user == NULL ||
        strcmp(user, TOKEN) != 0 || rpc_call_header(call, "authorization") != NULL ||
        strcmp(rpc_call_peer(call), "edge") != 0 ||
        strcmp(rpc_call_correlation_id(call), "cid-edge-1") != 0)
        return cx_error_set(err, CX_ERR_PERMISSION_DENIED, "not the edge's browser-kind call");
    return true;
}

static bool retrieve(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                     cx_error_t *err)
{
    (void)request;
    if (!browser_headers(call, err))
        return false;
    Credex__V1__RetrieveResponse *r = rpc_call_alloc(call, sizeof(*r));
    credex__v1__retrieve_response__init(r);
    r->secret_id = "sec_1";
    r->value.data = (uint8_t *)MATERIAL;
    r->value.len = strlen(MATERIAL);
    *reply = &r->base;
    return true;
}

static bool create(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                   cx_error_t *err)
{
    const Credex__V1__CreateSecretRequest *req = (const Credex__V1__CreateSecretRequest *)request;
    if (!browser_headers(call, err))
        return false;
    Credex__V1__SecretMetadata *m = rpc_call_alloc(call, sizeof(*m));
    credex__v1__secret_metadata__init(m);
    m->secret_id = "sec_1";
    m->display_name = req->display_name;
    Credex__V1__CreateSecretResponse *r = rpc_call_alloc(call, sizeof(*r));
    credex__v1__create_secret_response__init(r);
    r->secret = m;
    r->created = strcmp(req->display_name, "new") == 0;
    *reply = &r->base;
    return true;
}

static bool get(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                cx_error_t *err)
{
    const Credex__V1__GetSecretRequest *req = (const Credex__V1__GetSecretRequest *)request;
    if (!browser_headers(call, err))
        return false;
    if (strcmp(req->secret_id, "missing") == 0)
        return cx_error_set(err, CX_ERR_NOT_FOUND, "secret not found");
    if (strcmp(req->secret_id, "down") == 0)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "ipv4:10.1.2.3:7102: connect failed");
    Credex__V1__SecretMetadata *m = rpc_call_alloc(call, sizeof(*m));
    credex__v1__secret_metadata__init(m);
    m->secret_id = req->secret_id;
    *reply = &m->base;
    return true;
}

/* Connections: connect answers the provider's URL ("bad" a URL oauth never sends); the
 * callback answers the flow's return_to. */
static bool start_connect(rpc_call_t *call, const ProtobufCMessage *request,
                          ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__StartConnectRequest *req = (const Credex__V1__StartConnectRequest *)request;
    if (!browser_headers(call, err))
        return false;
    Credex__V1__StartConnectResponse *r = rpc_call_alloc(call, sizeof(*r));
    credex__v1__start_connect_response__init(r);
    r->authorization_url = strcmp(req->provider_key, "bad") == 0
                               ? "javascript:alert(1)"
                               : "https://github.com/login/oauth/authorize?state=s1";
    r->oauth_state = "s1";
    r->connection_id = "pcn_1";
    *reply = &r->base;
    return true;
}

static bool complete_connect(rpc_call_t *call, const ProtobufCMessage *request,
                             ProtobufCMessage **reply, cx_error_t *err)
{
    (void)request;
    if (!browser_headers(call, err))
        return false;
    Credex__V1__Connection *c = rpc_call_alloc(call, sizeof(*c));
    credex__v1__connection__init(c);
    c->connection_id = "pcn_1";
    Credex__V1__CompleteConnectResponse *r = rpc_call_alloc(call, sizeof(*r));
    credex__v1__complete_connect_response__init(r);
    r->connection = c;
    r->return_to = "/settings/connections";
    *reply = &r->base;
    return true;
}

static const rpc_method_impl_t connections_impls[] = {
    {.method = "StartConnect", .kind = RPC_UNARY, .unary = start_connect},
    {.method = "CompleteConnect", .kind = RPC_UNARY, .unary = complete_connect},
};

static const rpc_method_impl_t retrieval_impls[] = {
    {.method = "Retrieve", .kind = RPC_UNARY, .unary = retrieve},
};
static const rpc_method_impl_t secrets_impls[] = {
    {.method = "CreateSecret", .kind = RPC_UNARY, .unary = create},
    {.method = "GetSecret", .kind = RPC_UNARY, .unary = get},
};
static const rpc_service_def_t defs[] = {
    {.desc = &credex__v1__retrieval__descriptor, .impls = retrieval_impls, .nimpls = 1},
    {.desc = &credex__v1__secrets__descriptor, .impls = secrets_impls, .nimpls = 2},
    {.desc = &credex__v1__connections__descriptor, .impls = connections_impls, .nimpls = 2},
};

struct fixture {
    rpc_server_t *srv;
    cx_config_t *cfg;
    edge_t edge;
    FILE *log;
};

static const char *no_env(void *ctx, const char *name)
{
    (void)ctx;
    (void)name;
    return NULL;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    cx_error_t err;
    rpc_server_options_t o = tk_server_options("gateway");
    f->srv = rpc_server_new(&o, &err);
    assert_non_null(f->srv);
    for (size_t i = 0; i < sizeof(defs) / sizeof(defs[0]); i++)
        assert_true(rpc_server_add_service(f->srv, &defs[i], &err));
    assert_true(rpc_server_start(f->srv, &err));
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", rpc_server_port(f->srv));
    assert_true(cx_config_load(&f->cfg, no_env, NULL, &err));
    f->edge.cfg = f->cfg;
    f->edge.gateway = tk_client(addr, "gateway", "edge");
    f->log = tmpfile();
    cx_log_init("edge", CX_LOG_INFO, fileno(f->log));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    cx_log_init("edge", CX_LOG_INFO, 2);
    fclose(f->log);
    rpc_client_free(f->edge.gateway);
    rpc_server_free(f->srv);
    cx_config_free(f->cfg);
    free(f);
    return 0;
}

/* Run one route call as edge_http does after the body arrived. */
static void call(struct fixture *f, const char *path, edge_method_t m, const char *body,
                 edge_answer_t *out)
{
    rpc_arena_t *a = rpc_arena_new(1024);
    edge_path_t p;
    edge_match_t match;
    edge_query_t q = {0};
    assert_true(edge_path_parse(path, a, &p, NULL));
    edge_route_match(&p, m, &match);
    assert_non_null(match.route);
    edge_call_in_t in = {.match = &match,
                         .query = &q,
                         .body = body,
                         .body_len = body ? strlen(body) : 0,
                         .token = TOKEN,
                         .correlation_id = "cid-edge-1",
                         .arena = a};
    memset(out, 0, sizeof(*out));
    edge_call_route(&f->edge, &in, out);
    rpc_arena_free(a);
}

static char *log_text(struct fixture *f)
{
    static char buf[16384];
    fflush(f->log);
    size_t n = (size_t)pread(fileno(f->log), buf, sizeof(buf) - 1, 0);
    buf[n < sizeof(buf) ? n : 0] = '\0';
    return buf;
}

static void test_material_is_never_written(void **state)
{
    struct fixture *f = *state;
    edge_answer_t a;
    call(f, "/api/credentials/retrieve", EDGE_POST,
         "{\"secretRef\":\"sec_1\",\"intendedUse\":\"mcp_server_env\"}", &a);
    assert_int_equal(a.status, 500);
    assert_non_null(a.body);
    assert_non_null(strstr(a.body, "\"code\":\"internal\""));
    assert_null(strstr(a.body, MATERIAL));
    assert_null(strstr(a.body, "c2stbWF0ZXJpYWwtY2FuYXJ5")); /* its base64 */
    edge_answer_free(&a);
    char *log = log_text(f);
    assert_non_null(strstr(log, "\"event\":\"edge.material_refused\""));
    assert_null(strstr(log, MATERIAL));
}

static void test_created_is_201_and_a_replay_200(void **state)
{
    struct fixture *f = *state;
    edge_answer_t a;
    call(f, "/api/credentials/secrets", EDGE_POST, "{\"displayName\":\"new\"}", &a);
    assert_int_equal(a.status, 201);
    assert_non_null(strstr(a.body, "\"created\":true"));
    edge_answer_free(&a);
    call(f, "/api/credentials/secrets", EDGE_POST, "{\"displayName\":\"again\"}", &a);
    assert_int_equal(a.status, 200);
    assert_string_equal(a.body, "{\"secret\":{\"secretId\":\"sec_1\",\"displayName\":\"again\"}}");
    edge_answer_free(&a);
}

static void test_gateway_errors(void **state)
{
    struct fixture *f = *state;
    edge_answer_t a;
    call(f, "/api/credentials/secrets/sec_9", EDGE_GET, NULL, &a);
    assert_int_equal(a.status, 200); /* the browser-kind headers arrived as they should */
    assert_string_equal(a.body, "{\"secretId\":\"sec_9\"}");
    edge_answer_free(&a);
    call(f, "/api/credentials/secrets/missing", EDGE_GET, NULL, &a);
    assert_int_equal(a.status, 404);
    assert_string_equal(a.body, "{\"error\":{\"code\":\"not_found\",\"message\":\"secret not "
                                "found\",\"correlation_id\":\"cid-edge-1\"}}");
    edge_answer_free(&a);
    /* What a transport says about itself stays in the log. */
    call(f, "/api/credentials/secrets/down", EDGE_GET, NULL, &a);
    assert_int_equal(a.status, 503);
    assert_non_null(strstr(a.body, "\"code\":\"unavailable\""));
    assert_null(strstr(a.body, "10.1.2.3"));
    edge_answer_free(&a);
    assert_non_null(strstr(log_text(f), "edge.gateway_failed"));
    /* An RPC the server does not implement: its note passes through as 501. */
    call(f, "/api/credentials/secrets/sec_9/versions", EDGE_GET, NULL, &a);
    assert_int_equal(a.status, 501);
    assert_non_null(strstr(a.body, "\"code\":\"unimplemented\""));
    edge_answer_free(&a);
    /* Refused before any call: the body names a secret the path does not. */
    call(f, "/api/credentials/secrets/sec_9/revoke", EDGE_POST, "{\"secretId\":\"sec_8\"}", &a);
    assert_int_equal(a.status, 400);
    assert_non_null(strstr(a.body, "secret_id: differs from the value in the body"));
    edge_answer_free(&a);
}

/* Connect sends the client to the provider; the callback to the UI, when there is one. */
static void test_redirects(void **state)
{
    struct fixture *f = *state;
    edge_answer_t a;
    call(f, "/api/credentials/oauth/github/connect", EDGE_GET, NULL, &a);
    assert_int_equal(a.status, 302);
    assert_string_equal(a.location, "https://github.com/login/oauth/authorize?state=s1");
    assert_non_null(strstr(a.body, "\"authorizationUrl\":\"https://github.com/"));
    edge_answer_free(&a);
    assert_null(a.location);
    /* a URL that is not https is never relayed */
    call(f, "/api/credentials/oauth/bad/connect", EDGE_GET, NULL, &a);
    assert_int_equal(a.status, 500);
    assert_null(a.location);
    assert_null(strstr(a.body, "javascript"));
    edge_answer_free(&a);
    assert_non_null(strstr(log_text(f), "edge.redirect_refused"));

    call(f, "/api/credentials/oauth/github/callback", EDGE_GET, NULL, &a);
    assert_int_equal(a.status, 200);
    assert_null(a.location);
    edge_answer_free(&a);
    snprintf(f->cfg->edge_ui_url, sizeof(f->cfg->edge_ui_url), "https://ui.example/app");
    call(f, "/api/credentials/oauth/github/callback", EDGE_GET, NULL, &a);
    f->cfg->edge_ui_url[0] = '\0';
    assert_int_equal(a.status, 303);
    assert_string_equal(a.location, "https://ui.example/app/settings/connections");
    assert_non_null(strstr(a.body, "\"connectionId\":\"pcn_1\""));
    edge_answer_free(&a);
}

static void test_readiness(void **state)
{
    struct fixture *f = *state;
    cx_error_t err;
    assert_true(edge_gateway_ready(&f->edge, "cid-r", 1000, &err));
    char dead[64];
    snprintf(dead, sizeof(dead), "127.0.0.1:%d", tk_free_port("127.0.0.1"));
    edge_t down = {.cfg = f->cfg, .gateway = tk_client(dead, "gateway", "edge")};
    double t0 = tk_now();
    assert_false(edge_gateway_ready(&down, "cid-r", 1000, &err));
    assert_true(tk_now() - t0 < 2.0);
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    rpc_client_free(down.gateway);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_material_is_never_written),
        cmocka_unit_test(test_created_is_201_and_a_replay_200),
        cmocka_unit_test(test_gateway_errors),
        cmocka_unit_test(test_redirects),
        cmocka_unit_test(test_readiness),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
