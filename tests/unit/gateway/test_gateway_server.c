/*
 * The gateway in process, over real mutual TLS (dev PKI from scripts/lib/pki.sh), with a real
 * OpenFGA loaded with deploy/openfga/model.json and real ES256 tokens signed with the dev
 * issuer's key. Store is a small in-process CredentialStore that counts Resolve calls and
 * records audit events, so that "deny before decrypt" is observed from outside the gateway:
 * for every denied request, Resolve is never called and a DENIED event is appended.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/fga/cx_fga.h"
#include "common/rpc/rpc.h"
#include "credex/v1/gateway.pb-c.h"
#include "credex/v1/oauth.pb-c.h"
#include "credex/v1/store.pb-c.h"
#include "services/gateway/gateway.h"
#include "tests/unit/kit/testkit.h"

static tk_fga_env_t fga_env;
static char kid[128], issuer[256];
static EVP_PKEY *signing_key;
static cx_fga_t *fga;

/* ---- a CredentialStore that records what reaches it ------------------------------------- */

static pthread_mutex_t st_mu = PTHREAD_MUTEX_INITIALIZER;
static int st_resolves, st_audits, st_audit_fail;
static char st_last_reason[64], st_last_event[64];

static bool st_append(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                      cx_error_t *err)
{
    const Credex__V1__StoreAppendAuditEventRequest *r =
        (const Credex__V1__StoreAppendAuditEventRequest *)request;
    pthread_mutex_lock(&st_mu);
    bool fail = st_audit_fail;
    if (!fail) {
        st_audits++;
        snprintf(st_last_reason, sizeof(st_last_reason), "%s",
                 r->event && r->event->reason ? r->event->reason : "");
        snprintf(st_last_event, sizeof(st_last_event), "%s",
                 r->event && r->event->event_type ? r->event->event_type : "");
    }
    pthread_mutex_unlock(&st_mu);
    if (fail)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "audit store down");
    Credex__V1__StoreAppendAuditEventResponse *resp = rpc_call_alloc(call, sizeof(*resp));
    credex__v1__store_append_audit_event_response__init(resp);
    resp->event_id = "ev1";
    *reply = &resp->base;
    return true;
}

static bool st_resolve(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                       cx_error_t *err)
{
    const Credex__V1__StoreResolveRequest *r = (const Credex__V1__StoreResolveRequest *)request;
    pthread_mutex_lock(&st_mu);
    st_resolves++;
    pthread_mutex_unlock(&st_mu);
    if (!r->caller || !r->caller->intended_use[0] || !r->caller->resource_context)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "caller context incomplete");
    Credex__V1__StoreResolveResponse *resp = rpc_call_alloc(call, sizeof(*resp));
    credex__v1__store_resolve_response__init(resp);
    resp->secret_id = r->secret_id;
    resp->version = 3;
    resp->kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_API_KEY;
    resp->provider = "openai";
    resp->value.data = (uint8_t *)"canary-value";
    resp->value.len = 12;
    *reply = &resp->base;
    return true;
}

static bool st_get(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                   cx_error_t *err)
{
    (void)err;
    const Credex__V1__StoreGetSecretRequest *r = (const Credex__V1__StoreGetSecretRequest *)request;
    Credex__V1__SecretMetadata *m = rpc_call_alloc(call, sizeof(*m));
    credex__v1__secret_metadata__init(m);
    m->secret_id = r->secret_id;
    m->display_name = "k";
    m->masked_value = "********";
    m->value_set = true;
    *reply = &m->base;
    return true;
}

static Credex__V1__SecretMetadata *st_meta(rpc_call_t *call, const char *id)
{
    Credex__V1__SecretMetadata *m = rpc_call_alloc(call, sizeof(*m));
    credex__v1__secret_metadata__init(m);
    m->secret_id = rpc_arena_strndup(rpc_call_arena(call), id, strlen(id));
    m->display_name = "k";
    return m;
}

/* The secret id is derived from the idempotency key, so a replay returns the same secret. */
static bool st_create(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                      cx_error_t *err)
{
    (void)err;
    const Credex__V1__StoreCreateSecretRequest *r =
        (const Credex__V1__StoreCreateSecretRequest *)request;
    char id[80];
    snprintf(id, sizeof(id), "sec_%s", r->idempotency_key);
    Credex__V1__StoreCreateSecretResponse *resp = rpc_call_alloc(call, sizeof(*resp));
    credex__v1__store_create_secret_response__init(resp);
    resp->secret = st_meta(call, id);
    resp->secret->owner = r->owner;
    resp->created = true;
    *reply = &resp->base;
    return true;
}

static int st_lists;

static bool st_list(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                    cx_error_t *err)
{
    (void)err;
    const Credex__V1__StoreListSecretsRequest *r =
        (const Credex__V1__StoreListSecretsRequest *)request;
    pthread_mutex_lock(&st_mu);
    st_lists++;
    pthread_mutex_unlock(&st_mu);
    Credex__V1__StoreListSecretsResponse *resp = rpc_call_alloc(call, sizeof(*resp));
    credex__v1__store_list_secrets_response__init(resp);
    resp->secrets = rpc_call_alloc(call, (r->n_secret_ids + 1) * sizeof(*resp->secrets));
    for (size_t i = 0; i < r->n_secret_ids; i++)
        resp->secrets[resp->n_secrets++] = st_meta(call, r->secret_ids[i]);
    *reply = &resp->base;
    return true;
}

static bool st_delete(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                      cx_error_t *err)
{
    (void)err;
    const Credex__V1__StoreDeleteSecretRequest *r =
        (const Credex__V1__StoreDeleteSecretRequest *)request;
    Credex__V1__SecretMetadata *m = st_meta(call, r->secret_id);
    m->status = CREDEX__V1__SECRET_STATUS__SECRET_STATUS_DELETED;
    *reply = &m->base;
    return true;
}

static const rpc_method_impl_t st_impls[] = {
    {.method = "AppendAuditEvent", .kind = RPC_UNARY, .unary = st_append},
    {.method = "Resolve", .kind = RPC_UNARY, .unary = st_resolve},
    {.method = "GetSecret", .kind = RPC_UNARY, .unary = st_get},
    {.method = "CreateSecret", .kind = RPC_UNARY, .unary = st_create},
    {.method = "ListSecrets", .kind = RPC_UNARY, .unary = st_list},
    {.method = "DeleteSecret", .kind = RPC_UNARY, .unary = st_delete},
};
static const char *const st_peers[] = {"gateway", NULL};
static const rpc_service_def_t st_def = {.desc = &credex__v1__credential_store__descriptor,
                                         .impls = st_impls,
                                         .nimpls = 6,
                                         .allowed_peers = st_peers,
                                         .unimplemented_note = "test store"};

/* ---- an oauth Connectors service that records what reaches it ---------------------------- */

#define OA_CONNECTORS 4
#define OA_TEAMS      8

typedef struct oa_connector {
    const char *id;
    Credex__V1__ConnectorStatus status;
    char teams[OA_TEAMS][32];
    size_t nteams;
} oa_connector_t;

static pthread_mutex_t oa_mu = PTHREAD_MUTEX_INITIALIZER;
static oa_connector_t oa_table[OA_CONNECTORS];
static int oa_calls;
static bool oa_include_disabled;
static bool oa_disable_saw_access; /* user:* still enabled_for con_t when Disable arrived */
static char oa_admin[16], oa_subject[64], oa_kind[64], oa_service[64], oa_cid[80];

static void oa_reset(void)
{
    pthread_mutex_lock(&oa_mu);
    memset(oa_table, 0, sizeof(oa_table));
    const char *ids[OA_CONNECTORS] = {"con_t", "con_off", "con_hidden", "con_new"};
    Credex__V1__ConnectorStatus st[OA_CONNECTORS] = {
        CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_DISABLED,
        CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_DISABLED,
        CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_ACTIVE,
        CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_DISABLED};
    for (size_t i = 0; i < OA_CONNECTORS; i++) {
        oa_table[i].id = ids[i];
        oa_table[i].status = st[i];
    }
    oa_calls = 0;
    pthread_mutex_unlock(&oa_mu);
}

static oa_connector_t *oa_find(const char *id)
{
    for (size_t i = 0; i < OA_CONNECTORS; i++)
        if (strcmp(oa_table[i].id, id) == 0)
            return &oa_table[i];
    return NULL;
}

/* The read model of c, in the call arena (called under oa_mu). */
static Credex__V1__Connector *oa_proto(rpc_call_t *call, const oa_connector_t *c)
{
    Credex__V1__Connector *m = rpc_call_alloc(call, sizeof(*m));
    credex__v1__connector__init(m);
    m->connector_id = rpc_arena_strndup(rpc_call_arena(call), c->id, strlen(c->id));
    m->provider_key = "github";
    m->status = c->status;
    m->client_secret_masked = true;
    m->enabled_for = rpc_call_alloc(call, (c->nteams + 1) * sizeof(char *));
    for (size_t i = 0; i < c->nteams; i++)
        m->enabled_for[i] =
            rpc_arena_strndup(rpc_call_arena(call), c->teams[i], strlen(c->teams[i]));
    m->n_enabled_for = c->nteams;
    return m;
}

/* Every call: what the gateway said about its caller. */
static void oa_seen(rpc_call_t *call)
{
    const char *keys[5] = {"x-credex-platform-admin", "x-credex-subject-user-id",
                           "x-credex-caller-kind", "x-credex-service-id", "x-correlation-id"};
    const char *v[5];
    rpc_call_headers(call, keys, 5, v);
    pthread_mutex_lock(&oa_mu);
    oa_calls++;
    snprintf(oa_admin, sizeof(oa_admin), "%s", v[0] ? v[0] : "");
    snprintf(oa_subject, sizeof(oa_subject), "%s", v[1] ? v[1] : "");
    snprintf(oa_kind, sizeof(oa_kind), "%s", v[2] ? v[2] : "");
    snprintf(oa_service, sizeof(oa_service), "%s", v[3] ? v[3] : "");
    snprintf(oa_cid, sizeof(oa_cid), "%s", v[4] ? v[4] : "");
    pthread_mutex_unlock(&oa_mu);
}

static bool oa_one(rpc_call_t *call, const char *id, Credex__V1__ConnectorStatus set,
                   ProtobufCMessage **reply, cx_error_t *err)
{
    pthread_mutex_lock(&oa_mu);
    oa_connector_t *c = oa_find(id);
    if (c && set != CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_UNSPECIFIED)
        c->status = set;
    if (c)
        *reply = &oa_proto(call, c)->base;
    pthread_mutex_unlock(&oa_mu);
    return c ? true : cx_error_set(err, CX_ERR_NOT_FOUND, "no such connector");
}

static bool oa_list(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                    cx_error_t *err)
{
    (void)err;
    oa_seen(call);
    const Credex__V1__ListConnectorsRequest *r = (const Credex__V1__ListConnectorsRequest *)request;
    Credex__V1__ListConnectorsResponse *resp = rpc_call_alloc(call, sizeof(*resp));
    credex__v1__list_connectors_response__init(resp);
    resp->connectors = rpc_call_alloc(call, OA_CONNECTORS * sizeof(*resp->connectors));
    pthread_mutex_lock(&oa_mu);
    oa_include_disabled = r->include_disabled;
    for (size_t i = 0; i < OA_CONNECTORS; i++)
        if (r->include_disabled ||
            oa_table[i].status == CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_ACTIVE)
            resp->connectors[resp->n_connectors++] = oa_proto(call, &oa_table[i]);
    pthread_mutex_unlock(&oa_mu);
    *reply = &resp->base;
    return true;
}

static bool oa_get(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                   cx_error_t *err)
{
    oa_seen(call);
    return oa_one(call, ((const Credex__V1__GetConnectorRequest *)request)->connector_id,
                  CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_UNSPECIFIED, reply, err);
}

static bool oa_create(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                      cx_error_t *err)
{
    (void)request;
    oa_seen(call);
    return oa_one(call, "con_new", CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_UNSPECIFIED,
                  reply, err);
}

static bool oa_delete(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                      cx_error_t *err)
{
    oa_seen(call);
    return oa_one(call, ((const Credex__V1__DeleteConnectorRequest *)request)->connector_id,
                  CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_DELETED, reply, err);
}

static bool oa_enable(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                      cx_error_t *err)
{
    oa_seen(call);
    const Credex__V1__EnableConnectorRequest *r =
        (const Credex__V1__EnableConnectorRequest *)request;
    pthread_mutex_lock(&oa_mu);
    oa_connector_t *c = oa_find(r->connector_id);
    for (size_t i = 0; c && i < r->n_team_ids && c->nteams < OA_TEAMS; i++) {
        bool have = false;
        for (size_t j = 0; j < c->nteams; j++)
            have = have || strcmp(c->teams[j], r->team_ids[i]) == 0;
        if (!have)
            snprintf(c->teams[c->nteams++], sizeof(c->teams[0]), "%s", r->team_ids[i]);
    }
    pthread_mutex_unlock(&oa_mu);
    return oa_one(call, r->connector_id, CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_ACTIVE,
                  reply, err);
}

static bool fga_has(const char *user, const char *rel, const char *obj);

static bool oa_disable(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                       cx_error_t *err)
{
    oa_seen(call);
    const Credex__V1__DisableConnectorRequest *r =
        (const Credex__V1__DisableConnectorRequest *)request;
    bool access = fga_has("user:*", "enabled_for", "oauth_connector:con_t");
    pthread_mutex_lock(&oa_mu);
    oa_disable_saw_access = access;
    oa_connector_t *c = oa_find(r->connector_id);
    for (size_t i = 0; c && i < r->n_team_ids; i++)
        for (size_t j = 0; j < c->nteams; j++)
            if (strcmp(c->teams[j], r->team_ids[i]) == 0) {
                memmove(c->teams[j], c->teams[c->nteams - 1], sizeof(c->teams[0]));
                c->nteams--;
                break;
            }
    pthread_mutex_unlock(&oa_mu);
    return oa_one(call, r->connector_id,
                  r->n_team_ids ? CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_UNSPECIFIED
                                : CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_DISABLED,
                  reply, err);
}

static const rpc_method_impl_t oa_impls[] = {
    {.method = "ListConnectors", .kind = RPC_UNARY, .unary = oa_list},
    {.method = "GetConnector", .kind = RPC_UNARY, .unary = oa_get},
    {.method = "CreateConnector", .kind = RPC_UNARY, .unary = oa_create},
    {.method = "DeleteConnector", .kind = RPC_UNARY, .unary = oa_delete},
    {.method = "EnableConnector", .kind = RPC_UNARY, .unary = oa_enable},
    {.method = "DisableConnector", .kind = RPC_UNARY, .unary = oa_disable},
};
static const rpc_service_def_t oa_def = {.desc = &credex__v1__connectors__descriptor,
                                         .impls = oa_impls,
                                         .nimpls = 6,
                                         .allowed_peers = st_peers,
                                         .unimplemented_note = "test oauth"};

/* ---- an oauth Connections service: what reaches it, and answers shaped like oauth's -------- */

static char oc_connector[64]; /* the connector_id StartConnect / Reconnect was asked for */
static const char *oc_foreign = "someone-else";

static Credex__V1__Connection *oc_connection(rpc_call_t *call, const char *id, const char *subject)
{
    Credex__V1__Connection *c = rpc_call_alloc(call, sizeof(*c));
    credex__v1__connection__init(c);
    c->connection_id = rpc_arena_strndup(rpc_call_arena(call), id, strlen(id));
    c->connector_id = "con_hidden";
    c->provider_key = "github";
    c->subject_user_id = rpc_arena_strndup(rpc_call_arena(call), subject, strlen(subject));
    c->state = CREDEX__V1__CONNECTION_STATE__CONNECTION_STATE_ACTIVE;
    return c;
}

static bool oc_start(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                     cx_error_t *err)
{
    (void)err;
    oa_seen(call);
    const Credex__V1__StartConnectRequest *r = (const Credex__V1__StartConnectRequest *)request;
    pthread_mutex_lock(&oa_mu);
    snprintf(oc_connector, sizeof(oc_connector), "%s", r->connector_id);
    pthread_mutex_unlock(&oa_mu);
    Credex__V1__StartConnectResponse *resp = rpc_call_alloc(call, sizeof(*resp));
    credex__v1__start_connect_response__init(resp);
    resp->authorization_url = "https://github.com/login/oauth/authorize?state=s1";
    resp->oauth_state = "s1";
    resp->connection_id = "conn_c1";
    *reply = &resp->base;
    return true;
}

static bool oc_complete(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                        cx_error_t *err)
{
    (void)err;
    oa_seen(call);
    /* "code-foreign": an answer about another user's connection, which oauth never sends */
    bool foreign =
        strcmp(((const Credex__V1__CompleteConnectRequest *)request)->code, "code-foreign") == 0;
    Credex__V1__CompleteConnectResponse *resp = rpc_call_alloc(call, sizeof(*resp));
    credex__v1__complete_connect_response__init(resp);
    pthread_mutex_lock(&oa_mu);
    resp->connection = oc_connection(call, "conn_c1", foreign ? oc_foreign : oa_subject);
    pthread_mutex_unlock(&oa_mu);
    resp->return_to = "/connections";
    *reply = &resp->base;
    return true;
}

/* The subject's connection and, whatever was asked, one of another user's (which the gateway
 * must drop). */
static bool oc_list(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                    cx_error_t *err)
{
    (void)err;
    oa_seen(call);
    const Credex__V1__ListConnectionsRequest *r =
        (const Credex__V1__ListConnectionsRequest *)request;
    Credex__V1__ListConnectionsResponse *resp = rpc_call_alloc(call, sizeof(*resp));
    credex__v1__list_connections_response__init(resp);
    resp->connections = rpc_call_alloc(call, 2 * sizeof(*resp->connections));
    pthread_mutex_lock(&oa_mu);
    resp->connections[0] =
        oc_connection(call, "conn_c1", r->subject_user_id[0] ? r->subject_user_id : oa_subject);
    pthread_mutex_unlock(&oa_mu);
    resp->connections[1] = oc_connection(call, "conn_other", oc_foreign);
    resp->n_connections = 2;
    *reply = &resp->base;
    return true;
}

static bool oc_get(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                   cx_error_t *err)
{
    oa_seen(call);
    const char *id = ((const Credex__V1__GetConnectionRequest *)request)->connection_id;
    if (strcmp(id, "conn_c1") != 0)
        return cx_error_set(err, CX_ERR_NOT_FOUND, "no such connection");
    pthread_mutex_lock(&oa_mu);
    *reply = &oc_connection(call, id, oa_subject)->base;
    pthread_mutex_unlock(&oa_mu);
    return true;
}

static bool oc_disconnect(rpc_call_t *call, const ProtobufCMessage *request,
                          ProtobufCMessage **reply, cx_error_t *err)
{
    if (!oc_get(call, request, reply, err))
        return false;
    ((Credex__V1__Connection *)*reply)->state =
        CREDEX__V1__CONNECTION_STATE__CONNECTION_STATE_REVOKED;
    return true;
}

static bool oc_reconnect(rpc_call_t *call, const ProtobufCMessage *request,
                         ProtobufCMessage **reply, cx_error_t *err)
{
    Credex__V1__StartConnectRequest s = CREDEX__V1__START_CONNECT_REQUEST__INIT;
    (void)request;
    s.connector_id = "con_hidden";
    return oc_start(call, &s.base, reply, err);
}

static const rpc_method_impl_t oc_impls[] = {
    {.method = "StartConnect", .kind = RPC_UNARY, .unary = oc_start},
    {.method = "CompleteConnect", .kind = RPC_UNARY, .unary = oc_complete},
    {.method = "ListConnections", .kind = RPC_UNARY, .unary = oc_list},
    {.method = "GetConnection", .kind = RPC_UNARY, .unary = oc_get},
    {.method = "Disconnect", .kind = RPC_UNARY, .unary = oc_disconnect},
    {.method = "Reconnect", .kind = RPC_UNARY, .unary = oc_reconnect},
};
static const rpc_service_def_t oc_def = {.desc = &credex__v1__connections__descriptor,
                                         .impls = oc_impls,
                                         .nimpls = 6,
                                         .allowed_peers = st_peers,
                                         .unimplemented_note = "test oauth"};

/* ---- an oauth ProviderTokens service: which calls reach it, and with what -------------------- */

static int pt_picks, pt_gets;       /* pick_only calls; calls that could refresh or issue */
static cx_code_t pt_get_fail;       /* the answer of the next non-pick calls, when set */
static char pt_last_connection[64]; /* the connection_id of the last non-pick call */

/* Connections as oauth would pick them: by id as asked, else conn_mine (connector con_hidden),
 * or conn_off for connector con_off; a required scope "admin:org" was never granted. */
static bool pt_get(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                   cx_error_t *err)
{
    oa_seen(call);
    const Credex__V1__GetProviderTokenRequest *r =
        (const Credex__V1__GetProviderTokenRequest *)request;
    pthread_mutex_lock(&st_mu); /* counter() reads under it */
    if (r->pick_only) {
        pt_picks++;
    } else {
        pt_gets++;
        snprintf(pt_last_connection, sizeof(pt_last_connection), "%s", r->connection_id);
    }
    cx_code_t fail = r->pick_only ? CX_OK : pt_get_fail;
    pthread_mutex_unlock(&st_mu);
    for (size_t i = 0; i < r->n_required_scopes; i++)
        if (strcmp(r->required_scopes[i], "admin:org") == 0)
            return cx_error_set(err, CX_ERR_RECONSENT_REQUIRED, "scope not granted");
    if (fail != CX_OK)
        return cx_error_set(err, fail, "provider says slow down");
    Credex__V1__GetProviderTokenResponse *resp = rpc_call_alloc(call, sizeof(*resp));
    credex__v1__get_provider_token_response__init(resp);
    const char *id = r->connection_id[0]                       ? r->connection_id
                     : strcmp(r->connector_id, "con_off") == 0 ? "conn_off"
                                                               : "conn_mine";
    resp->connection_id = rpc_arena_strndup(rpc_call_arena(call), id, strlen(id));
    resp->connector_id = strcmp(id, "conn_off") == 0 ? "con_off" : "con_hidden";
    resp->provider_key = "atlassian";
    resp->provider_resource_id = "cloud-1";
    resp->api_base_url = "https://api.atlassian.com/ex/jira/cloud-1";
    resp->expires_at_ms = 4102444800000;
    if (!r->pick_only) {
        resp->token_type = "bEaReR";
        resp->material.data = (uint8_t *)"canary-token";
        resp->material.len = 12;
    }
    *reply = &resp->base;
    return true;
}

static const rpc_method_impl_t pt_impls[] = {
    {.method = "GetProviderToken", .kind = RPC_UNARY, .unary = pt_get},
};
static const rpc_service_def_t pt_def = {.desc = &credex__v1__provider_tokens__descriptor,
                                         .impls = pt_impls,
                                         .nimpls = 1,
                                         .allowed_peers = st_peers,
                                         .unimplemented_note = "test oauth"};

/* ---- helpers ----------------------------------------------------------------------------- */

/* An ES256 token from the dev issuer's key; caller frees. A sub of service-account-<azp> makes
 * it a client-credentials token (Keycloak's shape), which carries the client claim client_id. */
static char *mint(const char *sub, const char *azp)
{
    char hdr[256], pl[768], h64[512], p64[1024], client[160] = "";
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", kid);
    long long now = (long long)time(NULL);
    if (azp && strncmp(sub, "service-account-", 16) == 0 && strcmp(sub + 16, azp) == 0)
        snprintf(client, sizeof(client), ",\"client_id\":\"%s\"", azp);
    snprintf(pl, sizeof(pl),
             "{\"iss\":\"%s\",\"aud\":\"credex\",\"sub\":\"%s\",\"iat\":%lld,\"exp\":%lld%s%s%s%s}",
             issuer, sub, now, now + 300, azp ? ",\"azp\":\"" : "", azp ? azp : "", azp ? "\"" : "",
             client);
    tk_b64url((const unsigned char *)hdr, strlen(hdr), h64);
    tk_b64url((const unsigned char *)pl, strlen(pl), p64);
    char *tok = malloc(4096);
    snprintf(tok, 4096, "%s.%s", h64, p64);
    unsigned char der[128], raw[64];
    size_t dl = sizeof(der);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, signing_key), 1);
    assert_int_equal(EVP_DigestSign(md, der, &dl, (unsigned char *)tok, strlen(tok)), 1);
    EVP_MD_CTX_free(md);
    const unsigned char *q = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, (long)dl);
    BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32);
    ECDSA_SIG_free(es);
    char s64[128];
    tk_b64url(raw, 64, s64);
    strcat(tok, ".");
    strcat(tok, s64);
    return tok;
}

static void tuple(bool add, const char *user, const char *rel, const char *obj)
{
    cx_fga_tuple_t t;
    assert_true(cx_fga_tuple_set(&t, user, rel, obj));
    cx_error_t err;
    assert_true(add ? cx_fga_write(fga, &t, 1, NULL, 0, &err)
                    : cx_fga_write(fga, NULL, 0, &t, 1, &err));
}

typedef struct env_kv {
    const char *k;
    const char *v;
} env_kv_t;

static const char *env_get(void *ctx, const char *name)
{
    for (const env_kv_t *e = ctx; e->k; e++)
        if (strcmp(e->k, name) == 0)
            return e->v;
    return NULL;
}

/* ---- fixture: fake store, gateway, clients ----------------------------------------------- */

struct fx {
    rpc_server_t *store;
    rpc_server_t *oauth;
    rpc_server_t *gw;
    void *gw_state;
    cx_config_t *cfg;
    rpc_client_t *agent; /* peer agent-runtime */
    rpc_client_t *cli;   /* peer credexctl */
    rpc_client_t *edge;  /* peer edge */
};

static rpc_client_t *client(const char *addr, const char *who)
{
    return tk_client(addr, "gateway", who);
}

/* When set, the gateway's OpenFGA URL: a port where nothing listens (policy service down). */
static const char *fga_url_override;

static int fx_setup(void **state, bool enabled)
{
    struct fx *f = calloc(1, sizeof(*f));
    cx_error_t err;
    rpc_server_options_t so = tk_server_options("store");
    so.max_message_bytes = 1 << 20;
    so.max_metadata_bytes = 16 * 1024;
    so.shutdown_grace_ms = 100;
    f->store = rpc_server_new(&so, &err);
    if (!f->store || !rpc_server_add_service(f->store, &st_def, &err) ||
        !rpc_server_start(f->store, &err))
        return -1;
    rpc_server_options_t oo = tk_server_options("oauth");
    oo.max_message_bytes = so.max_message_bytes;
    oo.shutdown_grace_ms = so.shutdown_grace_ms;
    f->oauth = rpc_server_new(&oo, &err);
    if (!f->oauth || !rpc_server_add_service(f->oauth, &oa_def, &err) ||
        !rpc_server_add_service(f->oauth, &oc_def, &err) ||
        !rpc_server_add_service(f->oauth, &pt_def, &err) || !rpc_server_start(f->oauth, &err))
        return -1;
    char store_addr[64], oauth_addr[64], gw_addr[64];
    snprintf(store_addr, sizeof(store_addr), "127.0.0.1:%d", rpc_server_port(f->store));
    snprintf(oauth_addr, sizeof(oauth_addr), "127.0.0.1:%d", rpc_server_port(f->oauth));
    env_kv_t env[] = {{"CAIPE_CREDENTIALS_ENABLED", enabled ? "true" : "false"},
                      {"CREDENTIAL_EXCHANGE_ENABLED", enabled ? "true" : "false"},
                      {"CREDEX_TLS_CA", tk_pki_path("ca.pem")},
                      {"CREDEX_TLS_CERT", tk_pki_path("gateway.pem")},
                      {"CREDEX_TLS_KEY", tk_pki_path("gateway.key")},
                      {"CREDEX_STORE_ADDR", store_addr},
                      {"CREDEX_KEYWRAP_ADDR", "127.0.0.1:1"},
                      {"CREDEX_OAUTH_ADDR", oauth_addr},
                      {"CREDEX_OPENFGA_URL", fga_url_override ? fga_url_override : fga_env.url},
                      {"CREDEX_OPENFGA_TIMEOUT_MS", "500"},
                      /* The tests write tuples with their own OpenFGA client, which for the
                       * gateway is a change made elsewhere (seen within the watch bound, see
                       * docs/AUTHZ_CACHE.md and test_cx_fga); here every check is live. */
                      {"CREDEX_OPENFGA_CACHE_TTL_MS", "0"},
                      {"CREDEX_OPENFGA_STORE_ID", fga_env.store},
                      {"CREDEX_OPENFGA_MODEL_ID", fga_env.model},
                      {"CREDEX_JWKS", tk_pki_path("jwks.json")},
                      {"CREDEX_JWT_ISSUER", issuer},
                      {NULL, NULL}};
    if (!cx_config_load(&f->cfg, env_get, env, &err)) {
        fprintf(stderr, "config: %s\n", err.message);
        return -1;
    }
    rpc_server_options_t go = tk_server_options("gateway");
    go.max_message_bytes = so.max_message_bytes;
    go.max_metadata_bytes = so.max_metadata_bytes;
    go.shutdown_grace_ms = so.shutdown_grace_ms;
    go.threads = 4;
    f->gw = rpc_server_new(&go, &err);
    if (!f->gw || !gateway_setup(f->gw, f->cfg, &f->gw_state, &err)) {
        fprintf(stderr, "gateway: %s\n", err.message);
        return -1;
    }
    rpc_server_set_context(f->gw, f->gw_state); /* as svc_main does */
    if (!rpc_server_start(f->gw, &err)) {
        fprintf(stderr, "gateway: %s\n", err.message);
        return -1;
    }
    snprintf(gw_addr, sizeof(gw_addr), "127.0.0.1:%d", rpc_server_port(f->gw));
    f->agent = client(gw_addr, "agent-runtime");
    f->cli = client(gw_addr, "credexctl");
    f->edge = client(gw_addr, "edge");
    *state = f;
    return 0;
}

static int fx_setup_enabled(void **state)
{
    return fx_setup(state, true);
}

static int fx_setup_disabled(void **state)
{
    return fx_setup(state, false);
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;
    if (!f)
        return 0;
    rpc_client_free(f->agent);
    rpc_client_free(f->cli);
    rpc_client_free(f->edge);
    rpc_server_free(f->gw);
    gateway_cleanup(f->gw_state);
    rpc_server_free(f->store);
    rpc_server_free(f->oauth);
    cx_config_free(f->cfg);
    free(f);
    return 0;
}

/* The headers of a server-side call: the service token, the user's, and x-credex-caller, each
 * when given; `bearer` holds the authorization value. Returns how many of h[3] are set. */
static size_t caller_headers(rpc_header_t h[3], char *bearer, size_t bearersz, const char *svc_tok,
                             const char *user_tok, const char *x_caller)
{
    size_t n = 0;
    if (svc_tok) {
        snprintf(bearer, bearersz, "Bearer %s", svc_tok);
        h[n++] = (rpc_header_t){"authorization", bearer};
    }
    if (user_tok)
        h[n++] = (rpc_header_t){"x-credex-user-token", user_tok};
    if (x_caller)
        h[n++] = (rpc_header_t){"x-credex-caller", x_caller};
    return n;
}

/* One Retrieve; returns the cx code (CX_OK on success) and the reply in *out. */
static cx_code_t retrieve(rpc_client_t *c, const char *svc_tok, const char *user_tok,
                          const char *x_caller, const char *secret, const char *use,
                          rpc_arena_t *arena, Credex__V1__RetrieveResponse **out, cx_error_t *err)
{
    char bearer[4200];
    rpc_header_t h[3];
    size_t n = caller_headers(h, bearer, sizeof(bearer), svc_tok, user_tok, x_caller);
    Credex__V1__ResourceContext rc = CREDEX__V1__RESOURCE_CONTEXT__INIT;
    rc.resource_type = "mcp_server";
    rc.resource_id = "srv-1";
    Credex__V1__RetrieveRequest req = CREDEX__V1__RETRIEVE_REQUEST__INIT;
    req.secret_ref = (char *)secret;
    req.intended_use = (char *)use;
    req.resource_context = &rc;
    rpc_call_options_t o = {.deadline_ms = 5000, .headers = h, .nheaders = n};
    ProtobufCMessage *reply = NULL;
    cx_error_clear(err);
    bool ok = rpc_client_unary(c, &credex__v1__retrieval__descriptor, "Retrieve", &req.base, &o,
                               arena, &reply, err);
    if (out)
        *out = (Credex__V1__RetrieveResponse *)reply;
    return ok ? CX_OK : err->code;
}

static cx_code_t get_secret(rpc_client_t *c, const char *user_tok, const char *id, cx_error_t *err)
{
    rpc_header_t h = {"x-credex-user-token", user_tok};
    Credex__V1__GetSecretRequest req = CREDEX__V1__GET_SECRET_REQUEST__INIT;
    req.secret_id = (char *)id;
    rpc_call_options_t o = {.deadline_ms = 5000, .headers = &h, .nheaders = user_tok ? 1 : 0};
    rpc_arena_t *a = rpc_arena_new(1024);
    ProtobufCMessage *reply = NULL;
    cx_error_clear(err);
    bool ok = rpc_client_unary(c, &credex__v1__secrets__descriptor, "GetSecret", &req.base, &o, a,
                               &reply, err);
    rpc_arena_free(a);
    return ok ? CX_OK : err->code;
}

/* A call of svc as a user (session-only: the user's token) or, with a NULL user token and a
 * service token, as a service acting for itself. */
static cx_code_t svc_call(rpc_client_t *c, const ProtobufCServiceDescriptor *svc,
                          const char *svc_tok, const char *user_tok, const char *method,
                          const ProtobufCMessage *req, rpc_arena_t *a, ProtobufCMessage **out,
                          cx_error_t *err)
{
    char bearer[4200];
    rpc_header_t h[2];
    size_t n = 0;
    if (svc_tok) {
        snprintf(bearer, sizeof(bearer), "Bearer %s", svc_tok);
        h[n++] = (rpc_header_t){"authorization", bearer};
    }
    if (user_tok)
        h[n++] = (rpc_header_t){"x-credex-user-token", user_tok};
    rpc_call_options_t o = {
        .deadline_ms = 5000, .correlation_id = "test-cid-1", .headers = h, .nheaders = n};
    ProtobufCMessage *reply = NULL;
    cx_error_clear(err);
    bool ok = rpc_client_unary(c, svc, method, req, &o, a, &reply, err);
    if (out)
        *out = reply;
    return ok ? CX_OK : err->code;
}

/* A Secrets call as a user (session-only: peer credexctl, the user's token). */
static cx_code_t secrets_call(rpc_client_t *c, const char *user_tok, const char *method,
                              const ProtobufCMessage *req, rpc_arena_t *a, ProtobufCMessage **out,
                              cx_error_t *err)
{
    return svc_call(c, &credex__v1__secrets__descriptor, NULL, user_tok, method, req, a, out, err);
}

static cx_code_t create(rpc_client_t *c, const char *tok, const char *key, Credex__V1__OwnerType ot,
                        const char *oid, Credex__V1__SecretKind kind, const char *value,
                        rpc_arena_t *a, cx_error_t *err)
{
    Credex__V1__CreateSecretRequest req = CREDEX__V1__CREATE_SECRET_REQUEST__INIT;
    Credex__V1__Owner owner = CREDEX__V1__OWNER__INIT;
    req.idempotency_key = (char *)key;
    req.kind = kind;
    req.display_name = "e2e key";
    req.value.data = (uint8_t *)value;
    req.value.len = strlen(value);
    if (oid) {
        owner.owner_type = ot;
        owner.owner_id = (char *)oid;
        req.owner = &owner;
    }
    return secrets_call(c, tok, "CreateSecret", &req.base, a, NULL, err);
}

static bool fga_has(const char *user, const char *rel, const char *obj)
{
    bool allowed = false;
    cx_error_t err;
    assert_true(cx_fga_check(fga, user, rel, obj, &allowed, &err));
    return allowed;
}

static cx_code_t share(rpc_client_t *c, const char *tok, const char *sid,
                       Credex__V1__GranteeType gt, const char *gid, Credex__V1__ShareRole role,
                       bool preview, rpc_arena_t *a, Credex__V1__ShareSecretResponse **out,
                       cx_error_t *err)
{
    Credex__V1__Grantee g = CREDEX__V1__GRANTEE__INIT;
    g.grantee_type = gt;
    g.grantee_id = (char *)gid;
    Credex__V1__ShareSecretRequest req = CREDEX__V1__SHARE_SECRET_REQUEST__INIT;
    req.secret_id = (char *)sid;
    req.grantee = &g;
    req.role = role;
    req.preview_only = preview;
    return secrets_call(c, tok, "ShareSecret", &req.base, a, (ProtobufCMessage **)out, err);
}

static int counter(int *p)
{
    pthread_mutex_lock(&st_mu);
    int v = *p;
    pthread_mutex_unlock(&st_mu);
    return v;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_retrieve_denials_never_reach_store(void **state)
{
    struct fx *f = *state;
    rpc_arena_t *a = rpc_arena_new(1024);
    cx_error_t err;
    char *svc = mint("service-account-agent-runtime", "agent-runtime");
    char *alice = mint("alice", "agent-runtime");
    char *other = mint("service-account-mcp", "mcp-tools");
    int r0 = counter(&st_resolves), a0 = counter(&st_audits);
    tuple(true, "user:alice", "owner", "secret_ref:sec_deny");

    /* no credentials at all */
    assert_int_equal(
        retrieve(f->agent, NULL, NULL, NULL, "sec_deny", "mcp_server_env", a, NULL, &err),
        CX_ERR_UNAUTHENTICATED);
    /* a browser marker, even with valid tokens */
    assert_int_equal(
        retrieve(f->agent, svc, alice, "browser", "sec_deny", "mcp_server_env", a, NULL, &err),
        CX_ERR_BROWSER_DENIED);
    /* the edge without x-credex-caller: service */
    assert_int_equal(
        retrieve(f->edge, NULL, alice, NULL, "sec_deny", "mcp_server_env", a, NULL, &err),
        CX_ERR_BROWSER_DENIED);
    /* session-only auth from a non-edge peer */
    assert_int_equal(
        retrieve(f->cli, NULL, alice, NULL, "sec_deny", "mcp_server_env", a, NULL, &err),
        CX_ERR_BROWSER_DENIED);
    /* a service token bound to another peer */
    assert_int_equal(
        retrieve(f->agent, other, alice, NULL, "sec_deny", "mcp_server_env", a, NULL, &err),
        CX_ERR_UNAUTHENTICATED);
    /* a garbage token */
    assert_int_equal(
        retrieve(f->agent, "not.a.jwt", alice, NULL, "sec_deny", "mcp_server_env", a, NULL, &err),
        CX_ERR_UNAUTHENTICATED);
    /* valid, but not on the platform's retriever allow-list */
    assert_int_equal(
        retrieve(f->agent, svc, alice, NULL, "sec_deny", "mcp_server_env", a, NULL, &err),
        CX_ERR_PERMISSION_DENIED);
    tuple(true, "service:agent-runtime", "retriever", "platform:credex");
    /* no intended use */
    assert_int_equal(retrieve(f->agent, svc, alice, NULL, "sec_deny", "", a, NULL, &err),
                     CX_ERR_INVALID_ARGUMENT);
    /* bob has nothing on the secret: exactly the answer for a nonexistent one */
    char *bob = mint("bob", "agent-runtime");
    assert_int_equal(
        retrieve(f->agent, svc, bob, NULL, "sec_deny", "mcp_server_env", a, NULL, &err),
        CX_ERR_NOT_FOUND);
    char msg_hidden[CX_ERROR_MESSAGE_MAX];
    strcpy(msg_hidden, err.message);
    assert_int_equal(
        retrieve(f->agent, svc, bob, NULL, "sec_nope", "mcp_server_env", a, NULL, &err),
        CX_ERR_NOT_FOUND);
    assert_string_equal(err.message, msg_hidden);
    /* bob audits it: visible, but no use */
    tuple(true, "user:bob", "auditor", "secret_ref:sec_deny");
    assert_int_equal(
        retrieve(f->agent, svc, bob, NULL, "sec_deny", "mcp_server_env", a, NULL, &err),
        CX_ERR_PERMISSION_DENIED);
    /* the service acting for itself without a SERVICE grant */
    assert_int_equal(
        retrieve(f->agent, svc, NULL, NULL, "sec_deny", "mcp_server_env", a, NULL, &err),
        CX_ERR_NOT_FOUND);

    assert_int_equal(counter(&st_resolves), r0);    /* deny before decrypt */
    assert_int_equal(counter(&st_audits) - a0, 12); /* every denial audited */

    /* the audit store failing does not turn a denial into anything else */
    pthread_mutex_lock(&st_mu);
    st_audit_fail = 1;
    pthread_mutex_unlock(&st_mu);
    assert_int_equal(
        retrieve(f->agent, svc, bob, NULL, "sec_nope", "mcp_server_env", a, NULL, &err),
        CX_ERR_NOT_FOUND);
    pthread_mutex_lock(&st_mu);
    st_audit_fail = 0;
    pthread_mutex_unlock(&st_mu);
    assert_int_equal(counter(&st_resolves), r0);
    free(svc);
    free(alice);
    free(other);
    free(bob);
    rpc_arena_free(a);
}

static void test_retrieve_allowed(void **state)
{
    struct fx *f = *state;
    rpc_arena_t *a = rpc_arena_new(1024);
    cx_error_t err;
    char *svc = mint("service-account-agent-runtime", "agent-runtime");
    char *carol = mint("carol", "agent-runtime");
    tuple(true, "service:agent-runtime", "retriever", "platform:credex");
    tuple(true, "user:carol", "member", "team:eng");
    tuple(true, "team:eng#member", "owner", "secret_ref:sec_team");
    int r0 = counter(&st_resolves);
    Credex__V1__RetrieveResponse *resp = NULL;
    assert_int_equal(
        retrieve(f->agent, svc, carol, NULL, "sec_team", "mcp_server_env", a, &resp, &err), CX_OK);
    assert_int_equal(counter(&st_resolves), r0 + 1);
    assert_string_equal(resp->secret_id, "sec_team");
    assert_int_equal(resp->version, 3);
    assert_int_equal(resp->value.len, 12);
    assert_memory_equal(resp->value.data, "canary-value", 12);
    /* never through the edge, even marked as server-side traffic with a retriever grant: the
     * edge holds no credential material (docs/DESIGN.md) */
    char *edge_svc = mint("service-account-edge", "edge");
    tuple(true, "service:edge", "retriever", "platform:credex");
    assert_int_equal(
        retrieve(f->edge, edge_svc, carol, "service", "sec_team", "mcp_server_env", a, NULL, &err),
        CX_ERR_BROWSER_DENIED);
    assert_int_equal(counter(&st_resolves), r0 + 1);
    /* leaving the team takes effect at once */
    tuple(false, "user:carol", "member", "team:eng");
    assert_int_equal(
        retrieve(f->agent, svc, carol, NULL, "sec_team", "mcp_server_env", a, NULL, &err),
        CX_ERR_NOT_FOUND);
    /* a SERVICE grant lets the service retrieve for itself */
    tuple(true, "service:agent-runtime", "user", "secret_ref:sec_team");
    assert_int_equal(
        retrieve(f->agent, svc, NULL, NULL, "sec_team", "mcp_server_env", a, NULL, &err), CX_OK);
    free(svc);
    free(carol);
    free(edge_svc);
    rpc_arena_free(a);
}

static void test_secrets_hidden_is_not_found(void **state)
{
    struct fx *f = *state;
    cx_error_t err;
    char *dan = mint("dan", NULL);
    tuple(true, "user:erin", "owner", "secret_ref:sec_erin");
    assert_int_equal(get_secret(f->cli, dan, "sec_erin", &err), CX_ERR_NOT_FOUND);
    char hidden[CX_ERROR_MESSAGE_MAX];
    strcpy(hidden, err.message);
    assert_int_equal(get_secret(f->cli, dan, "sec_missing", &err), CX_ERR_NOT_FOUND);
    assert_string_equal(err.message, hidden);
    tuple(true, "user:dan", "user", "secret_ref:sec_erin");
    assert_int_equal(get_secret(f->cli, dan, "sec_erin", &err), CX_OK);
    assert_int_equal(get_secret(f->cli, NULL, "sec_erin", &err), CX_ERR_UNAUTHENTICATED);
    assert_int_equal(get_secret(f->cli, dan, "bad id!", &err), CX_ERR_INVALID_ARGUMENT);
    free(dan);
}

#define OWNER_USER CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER
#define OWNER_TEAM CREDEX__V1__OWNER_TYPE__OWNER_TYPE_TEAM
#define API_KEY    CREDEX__V1__SECRET_KIND__SECRET_KIND_API_KEY

static void test_secrets_lifecycle_and_sharing(void **state)
{
    struct fx *f = *state;
    rpc_arena_t *a = rpc_arena_new(4096);
    cx_error_t err;
    char *gina = mint("gina", NULL), *hank = mint("hank", NULL);

    /* create: the owner and platform tuples follow the secret */
    assert_int_equal(create(f->cli, gina, "k1", 0, NULL, API_KEY, "v1", a, &err), CX_OK);
    assert_true(fga_has("user:gina", "manage", "secret_ref:sec_k1"));
    assert_true(fga_has("platform:credex", "platform", "secret_ref:sec_k1"));
    /* a replay completes a tuple lost after an interrupted create */
    tuple(false, "user:gina", "owner", "secret_ref:sec_k1");
    assert_false(fga_has("user:gina", "manage", "secret_ref:sec_k1"));
    assert_int_equal(create(f->cli, gina, "k1", 0, NULL, API_KEY, "v1", a, &err), CX_OK);
    assert_true(fga_has("user:gina", "manage", "secret_ref:sec_k1"));

    /* owners: self, or a team the caller belongs to */
    assert_int_equal(create(f->cli, gina, "k2", OWNER_USER, "hank", API_KEY, "v", a, &err),
                     CX_ERR_PERMISSION_DENIED);
    assert_int_equal(create(f->cli, gina, "k3", OWNER_TEAM, "tg", API_KEY, "v", a, &err),
                     CX_ERR_PERMISSION_DENIED);
    tuple(true, "user:gina", "admin", "team:tg");
    assert_int_equal(create(f->cli, gina, "k3", OWNER_TEAM, "tg", API_KEY, "v", a, &err), CX_OK);
    assert_true(fga_has("team:tg#member", "owner", "secret_ref:sec_k3"));
    /* validation */
    assert_int_equal(create(f->cli, gina, "k4", 0, NULL,
                            CREDEX__V1__SECRET_KIND__SECRET_KIND_OAUTH_CLIENT_SECRET, "v", a, &err),
                     CX_ERR_INVALID_ARGUMENT);
    assert_int_equal(create(f->cli, gina, "k4", 0, NULL, API_KEY, "", a, &err),
                     CX_ERR_INVALID_ARGUMENT);
    assert_int_equal(create(f->cli, gina, "", 0, NULL, API_KEY, "v", a, &err),
                     CX_ERR_INVALID_ARGUMENT);

    /* list: what OpenFGA says gina may see */
    Credex__V1__ListSecretsRequest lr = CREDEX__V1__LIST_SECRETS_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    assert_int_equal(secrets_call(f->cli, gina, "ListSecrets", &lr.base, a, &out, &err), CX_OK);
    assert_int_equal(((Credex__V1__ListSecretsResponse *)out)->n_secrets, 2);
    /* hank sees nothing, and store is not even asked (empty ids would mean "all") */
    int l0 = counter(&st_lists);
    assert_int_equal(secrets_call(f->cli, hank, "ListSecrets", &lr.base, a, &out, &err), CX_OK);
    assert_int_equal(((Credex__V1__ListSecretsResponse *)out)->n_secrets, 0);
    assert_int_equal(counter(&st_lists), l0);
    lr.scope = CREDEX__V1__LIST_SECRETS_SCOPE__LIST_SECRETS_SCOPE_ALL;
    assert_int_equal(secrets_call(f->cli, hank, "ListSecrets", &lr.base, a, &out, &err),
                     CX_ERR_PERMISSION_DENIED);

    /* share with hank: effective at once; listed; unshared: gone at once */
    Credex__V1__ShareSecretResponse *sr = NULL;
    assert_int_equal(share(f->cli, hank, "sec_k1", CREDEX__V1__GRANTEE_TYPE__GRANTEE_TYPE_USER,
                           "hank", CREDEX__V1__SHARE_ROLE__SHARE_ROLE_USER, false, a, &sr, &err),
                     CX_ERR_NOT_FOUND); /* hank cannot share what he cannot see */
    assert_int_equal(share(f->cli, gina, "sec_k1", CREDEX__V1__GRANTEE_TYPE__GRANTEE_TYPE_USER,
                           "hank", CREDEX__V1__SHARE_ROLE__SHARE_ROLE_USER, true, a, &sr, &err),
                     CX_OK);
    assert_false(sr->applied);
    assert_int_equal(get_secret(f->cli, hank, "sec_k1", &err), CX_ERR_NOT_FOUND);
    assert_int_equal(share(f->cli, gina, "sec_k1", CREDEX__V1__GRANTEE_TYPE__GRANTEE_TYPE_USER,
                           "hank", CREDEX__V1__SHARE_ROLE__SHARE_ROLE_USER, false, a, &sr, &err),
                     CX_OK);
    assert_true(sr->applied);
    assert_int_equal(get_secret(f->cli, hank, "sec_k1", &err), CX_OK);
    assert_int_equal(share(f->cli, gina, "sec_k1", CREDEX__V1__GRANTEE_TYPE__GRANTEE_TYPE_TEAM,
                           "ops", CREDEX__V1__SHARE_ROLE__SHARE_ROLE_AUDITOR, true, a, &sr, &err),
                     CX_OK);
    assert_true(sr->n_warnings >= 1);
    assert_int_equal(share(f->cli, gina, "sec_k1", CREDEX__V1__GRANTEE_TYPE__GRANTEE_TYPE_USER,
                           "hank", CREDEX__V1__SHARE_ROLE__SHARE_ROLE_OWNER, false, a, &sr, &err),
                     CX_ERR_INVALID_ARGUMENT);
    assert_int_equal(share(f->cli, gina, "sec_k1", CREDEX__V1__GRANTEE_TYPE__GRANTEE_TYPE_SERVICE,
                           "agent-runtime", CREDEX__V1__SHARE_ROLE__SHARE_ROLE_MANAGER, false, a,
                           &sr, &err),
                     CX_ERR_INVALID_ARGUMENT);
    /* hank (a user, not a manager) may not share further */
    assert_int_equal(share(f->cli, hank, "sec_k1", CREDEX__V1__GRANTEE_TYPE__GRANTEE_TYPE_USER,
                           "ivan", CREDEX__V1__SHARE_ROLE__SHARE_ROLE_USER, false, a, &sr, &err),
                     CX_ERR_PERMISSION_DENIED);

    Credex__V1__ListSecretSharesRequest ls = CREDEX__V1__LIST_SECRET_SHARES_REQUEST__INIT;
    ls.secret_id = "sec_k1";
    assert_int_equal(secrets_call(f->cli, gina, "ListSecretShares", &ls.base, a, &out, &err),
                     CX_OK);
    Credex__V1__ListSecretSharesResponse *shares = (Credex__V1__ListSecretSharesResponse *)out;
    assert_int_equal(shares->n_shares, 2); /* owner gina, user hank; the platform link is not one */
    bool saw_owner = false, saw_hank = false;
    for (size_t i = 0; i < shares->n_shares; i++) {
        saw_owner |= shares->shares[i]->role == CREDEX__V1__SHARE_ROLE__SHARE_ROLE_OWNER &&
                     strcmp(shares->shares[i]->grantee->grantee_id, "gina") == 0;
        saw_hank |= shares->shares[i]->role == CREDEX__V1__SHARE_ROLE__SHARE_ROLE_USER &&
                    strcmp(shares->shares[i]->grantee->grantee_id, "hank") == 0;
    }
    assert_true(saw_owner && saw_hank);

    Credex__V1__Grantee g = CREDEX__V1__GRANTEE__INIT;
    g.grantee_type = CREDEX__V1__GRANTEE_TYPE__GRANTEE_TYPE_USER;
    g.grantee_id = "gina";
    Credex__V1__UnshareSecretRequest ur = CREDEX__V1__UNSHARE_SECRET_REQUEST__INIT;
    ur.secret_id = "sec_k1";
    ur.grantee = &g;
    ur.role = CREDEX__V1__SHARE_ROLE__SHARE_ROLE_OWNER;
    assert_int_equal(secrets_call(f->cli, gina, "UnshareSecret", &ur.base, a, &out, &err),
                     CX_ERR_INVALID_ARGUMENT);
    ur.role = CREDEX__V1__SHARE_ROLE__SHARE_ROLE_UNSPECIFIED;
    g.grantee_id = "hank";
    assert_int_equal(secrets_call(f->cli, gina, "UnshareSecret", &ur.base, a, &out, &err), CX_OK);
    assert_int_equal(((Credex__V1__UnshareSecretResponse *)out)->removed_count, 1);
    assert_int_equal(get_secret(f->cli, hank, "sec_k1", &err), CX_ERR_NOT_FOUND);

    /* delete: grants go, the owner keeps seeing the tombstone and may delete again */
    assert_int_equal(share(f->cli, gina, "sec_k1", CREDEX__V1__GRANTEE_TYPE__GRANTEE_TYPE_USER,
                           "hank", CREDEX__V1__SHARE_ROLE__SHARE_ROLE_MANAGER, false, a, &sr, &err),
                     CX_OK);
    Credex__V1__DeleteSecretRequest dr = CREDEX__V1__DELETE_SECRET_REQUEST__INIT;
    dr.secret_id = "sec_k1";
    assert_int_equal(secrets_call(f->cli, gina, "DeleteSecret", &dr.base, a, &out, &err), CX_OK);
    assert_false(fga_has("user:hank", "read_metadata", "secret_ref:sec_k1"));
    assert_true(fga_has("user:gina", "manage", "secret_ref:sec_k1"));
    assert_int_equal(secrets_call(f->cli, gina, "DeleteSecret", &dr.base, a, &out, &err), CX_OK);

    /* a service acting for itself manages no user secrets */
    char *svc = mint("service-account-agent-runtime", "agent-runtime");
    char bearer[4200];
    snprintf(bearer, sizeof(bearer), "Bearer %s", svc);
    rpc_header_t h = {"authorization", bearer};
    rpc_call_options_t o = {.deadline_ms = 5000, .headers = &h, .nheaders = 1};
    Credex__V1__GetSecretRequest gr = CREDEX__V1__GET_SECRET_REQUEST__INIT;
    gr.secret_id = "sec_k3";
    assert_false(rpc_client_unary(f->agent, &credex__v1__secrets__descriptor, "GetSecret", &gr.base,
                                  &o, a, &out, &err));
    assert_int_equal(err.code, CX_ERR_PERMISSION_DENIED);
    free(svc);
    free(gina);
    free(hank);
    rpc_arena_free(a);
}

/* ---- Connectors ---------------------------------------------------------------------------- */

static cx_code_t conn_call(rpc_client_t *c, const char *tok, const char *method,
                           const ProtobufCMessage *req, rpc_arena_t *a, ProtobufCMessage **out,
                           cx_error_t *err)
{
    return svc_call(c, &credex__v1__connectors__descriptor, NULL, tok, method, req, a, out, err);
}

static cx_code_t conn_enable(rpc_client_t *c, const char *tok, bool enable, const char *id,
                             char **teams, size_t nteams, rpc_arena_t *a, cx_error_t *err)
{
    Credex__V1__EnableConnectorRequest en = CREDEX__V1__ENABLE_CONNECTOR_REQUEST__INIT;
    Credex__V1__DisableConnectorRequest dis = CREDEX__V1__DISABLE_CONNECTOR_REQUEST__INIT;
    en.connector_id = dis.connector_id = (char *)id;
    en.team_ids = dis.team_ids = teams;
    en.n_team_ids = dis.n_team_ids = nteams;
    return conn_call(c, tok, enable ? "EnableConnector" : "DisableConnector",
                     enable ? &en.base : &dis.base, a, NULL, err);
}

/* The connector ids a user's ListConnectors answers, as "id,id,". */
static void conn_listed(rpc_client_t *c, const char *tok, bool include_disabled, rpc_arena_t *a,
                        char *buf, size_t bufsz)
{
    Credex__V1__ListConnectorsRequest req = CREDEX__V1__LIST_CONNECTORS_REQUEST__INIT;
    req.include_disabled = include_disabled;
    Credex__V1__ListConnectorsResponse *resp = NULL;
    cx_error_t err;
    assert_int_equal(
        conn_call(c, tok, "ListConnectors", &req.base, a, (ProtobufCMessage **)&resp, &err), CX_OK);
    buf[0] = '\0';
    for (size_t i = 0; i < resp->n_connectors; i++) {
        strncat(buf, resp->connectors[i]->connector_id, bufsz - strlen(buf) - 1);
        strncat(buf, ",", bufsz - strlen(buf) - 1);
    }
}

static cx_code_t conn_get(rpc_client_t *c, const char *tok, const char *id, rpc_arena_t *a,
                          cx_error_t *err)
{
    Credex__V1__GetConnectorRequest req = CREDEX__V1__GET_CONNECTOR_REQUEST__INIT;
    req.connector_id = (char *)id;
    return conn_call(c, tok, "GetConnector", &req.base, a, NULL, err);
}

#define ENABLED(who) fga_has(who, "enabled_for", "oauth_connector:con_t")

static void test_connectors(void **state)
{
    struct fx *f = *state;
    rpc_arena_t *a = rpc_arena_new(1024);
    cx_error_t err;
    char listed[256];
    oa_reset();
    char *adm = mint("cadmin", NULL), *frank = mint("cfrank", NULL), *gina = mint("cgina", NULL);
    char *svc = mint("service-account-agent-runtime", "agent-runtime");
    tuple(true, "user:cadmin", "admin", "platform:credex");
    tuple(true, "user:cfrank", "member", "team:cteam");

    /* Management is for platform admins acting as themselves; refusals never reach oauth. */
    Credex__V1__Connector in = CREDEX__V1__CONNECTOR__INIT;
    Credex__V1__CreateConnectorRequest cr = CREDEX__V1__CREATE_CONNECTOR_REQUEST__INIT;
    cr.connector = &in;
    int calls = counter(&oa_calls);
    assert_int_equal(conn_call(f->cli, frank, "CreateConnector", &cr.base, a, NULL, &err),
                     CX_ERR_PERMISSION_DENIED);
    assert_int_equal(svc_call(f->agent, &credex__v1__connectors__descriptor, svc, NULL,
                              "CreateConnector", &cr.base, a, NULL, &err),
                     CX_ERR_PERMISSION_DENIED);
    assert_int_equal(counter(&oa_calls), calls);
    assert_int_equal(conn_call(f->cli, adm, "CreateConnector", &cr.base, a, NULL, &err), CX_OK);
    pthread_mutex_lock(&oa_mu);
    assert_string_equal(oa_admin, "true");
    assert_string_equal(oa_subject, "cadmin");
    assert_string_equal(oa_kind, "browser");
    assert_string_equal(oa_service, "");
    assert_string_equal(oa_cid, "test-cid-1");
    pthread_mutex_unlock(&oa_mu);
    /* A method oauth has not built is planned, not a fault (this stand-in has no Test). */
    Credex__V1__TestConnectorRequest tr = CREDEX__V1__TEST_CONNECTOR_REQUEST__INIT;
    tr.connector_id = "con_t";
    assert_int_equal(conn_call(f->cli, adm, "TestConnector", &tr.base, a, NULL, &err),
                     CX_ERR_UNIMPLEMENTED);

    /* Enable for a team and for everyone: one tuple each. */
    char *both[] = {"cteam", "*"}, *star[] = {"*"}, *bad[] = {"a*b"};
    assert_int_equal(conn_enable(f->cli, adm, true, "con_t", bad, 1, a, &err),
                     CX_ERR_INVALID_ARGUMENT);
    assert_int_equal(conn_enable(f->cli, frank, true, "con_t", both, 2, a, &err),
                     CX_ERR_PERMISSION_DENIED);
    assert_false(ENABLED("user:cgina"));
    assert_int_equal(conn_enable(f->cli, adm, true, "con_t", both, 2, a, &err), CX_OK);
    assert_true(ENABLED("team:cteam#member"));
    assert_true(ENABLED("user:*"));
    assert_int_equal(conn_enable(f->cli, adm, true, "con_t", both, 2, a, &err), CX_OK); /* replay */

    /* Users: ACTIVE connectors enabled for them only, never disabled ones, and oauth is never
     * told they are admins. */
    conn_listed(f->cli, frank, true, a, listed, sizeof(listed));
    assert_string_equal(listed, "con_t,");
    pthread_mutex_lock(&oa_mu);
    assert_false(oa_include_disabled);
    assert_string_equal(oa_admin, "");
    assert_string_equal(oa_subject, "cfrank");
    pthread_mutex_unlock(&oa_mu);
    conn_listed(f->cli, adm, true, a, listed, sizeof(listed));
    assert_string_equal(listed, "con_t,con_off,con_hidden,con_new,");
    calls = counter(&oa_calls);
    assert_int_equal(conn_get(f->cli, frank, "con_hidden", a, &err), CX_ERR_NOT_FOUND);
    char hidden[CX_ERROR_MESSAGE_MAX];
    snprintf(hidden, sizeof(hidden), "%s", err.message);
    assert_int_equal(conn_get(f->cli, frank, "con_nope", a, &err), CX_ERR_NOT_FOUND);
    assert_string_equal(err.message, hidden);
    assert_int_equal(counter(&oa_calls), calls); /* asked OpenFGA, not oauth */
    assert_int_equal(conn_get(f->cli, frank, "con_t", a, &err), CX_OK);
    assert_int_equal(conn_get(f->cli, adm, "con_hidden", a, &err), CX_OK);

    /* Disable for everyone-but-teams: the access goes before oauth hears of it. */
    assert_int_equal(conn_enable(f->cli, adm, false, "con_t", star, 1, a, &err), CX_OK);
    pthread_mutex_lock(&oa_mu);
    assert_false(oa_disable_saw_access);
    pthread_mutex_unlock(&oa_mu);
    assert_false(ENABLED("user:*"));
    assert_true(ENABLED("team:cteam#member"));
    conn_listed(f->cli, frank, false, a, listed, sizeof(listed));
    assert_string_equal(listed, "con_t,");
    conn_listed(f->cli, gina, false, a, listed, sizeof(listed));
    assert_string_equal(listed, "");

    /* Disabled for everyone: no tuple is left and nobody but admins sees it; enabling again
     * restores the teams oauth kept. */
    assert_int_equal(conn_enable(f->cli, adm, false, "con_t", NULL, 0, a, &err), CX_OK);
    assert_false(ENABLED("team:cteam#member"));
    conn_listed(f->cli, frank, false, a, listed, sizeof(listed));
    assert_string_equal(listed, "");
    assert_int_equal(conn_get(f->cli, frank, "con_t", a, &err), CX_ERR_NOT_FOUND);
    assert_int_equal(conn_enable(f->cli, adm, true, "con_t", NULL, 0, a, &err), CX_OK);
    assert_true(ENABLED("team:cteam#member"));

    /* Deleted: enabled for nobody; a replay finds it gone and still cleans up. */
    Credex__V1__DeleteConnectorRequest dr = CREDEX__V1__DELETE_CONNECTOR_REQUEST__INIT;
    dr.connector_id = "con_t";
    assert_int_equal(conn_call(f->cli, frank, "DeleteConnector", &dr.base, a, NULL, &err),
                     CX_ERR_PERMISSION_DENIED);
    assert_true(ENABLED("team:cteam#member"));
    assert_int_equal(conn_call(f->cli, adm, "DeleteConnector", &dr.base, a, NULL, &err), CX_OK);
    assert_false(ENABLED("team:cteam#member"));
    conn_listed(f->cli, frank, false, a, listed, sizeof(listed));
    assert_string_equal(listed, "");
    dr.connector_id = "";
    assert_int_equal(conn_call(f->cli, adm, "DeleteConnector", &dr.base, a, NULL, &err),
                     CX_ERR_INVALID_ARGUMENT);
    free(adm);
    free(frank);
    free(gina);
    free(svc);
    rpc_arena_free(a);
}

/* ---- Connections --------------------------------------------------------------------------- */

static cx_code_t cx_conn(rpc_client_t *c, const char *svc_tok, const char *tok, const char *method,
                         const ProtobufCMessage *req, rpc_arena_t *a, ProtobufCMessage **out,
                         cx_error_t *err)
{
    return svc_call(c, &credex__v1__connections__descriptor, svc_tok, tok, method, req, a, out,
                    err);
}

#define OWNS(u) fga_has(u, "owner", "provider_connection:conn_c1")

static void test_connections(void **state)
{
    struct fx *f = *state;
    rpc_arena_t *a = rpc_arena_new(4096);
    cx_error_t err;
    oa_reset();
    char *cx = mint("cxuser", NULL), *cy = mint("cyuser", NULL), *adm = mint("cxadmin", NULL);
    char *svc = mint("service-account-agent-runtime", "agent-runtime");
    tuple(true, "user:cxadmin", "admin", "platform:credex");
    ProtobufCMessage *out = NULL;

    /* Start: a user for whom no connector is enabled is refused before oauth is asked; so is a
     * service acting for itself. */
    Credex__V1__StartConnectRequest st = CREDEX__V1__START_CONNECT_REQUEST__INIT;
    st.provider_key = "github";
    int calls = counter(&oa_calls);
    assert_int_equal(cx_conn(f->cli, NULL, cx, "StartConnect", &st.base, a, NULL, &err),
                     CX_ERR_PERMISSION_DENIED);
    assert_int_equal(cx_conn(f->agent, svc, NULL, "StartConnect", &st.base, a, NULL, &err),
                     CX_ERR_PERMISSION_DENIED);
    assert_int_equal(counter(&oa_calls), calls);
    st.provider_key = "";
    assert_int_equal(cx_conn(f->cli, NULL, cx, "StartConnect", &st.base, a, NULL, &err),
                     CX_ERR_INVALID_ARGUMENT);

    /* Enabled for cxuser's team: by provider key, oauth is asked for exactly that connector. */
    tuple(true, "user:cxuser", "member", "team:cxteam");
    tuple(true, "team:cxteam#member", "enabled_for", "oauth_connector:con_hidden");
    st.provider_key = "github";
    assert_int_equal(cx_conn(f->cli, NULL, cx, "StartConnect", &st.base, a, &out, &err), CX_OK);
    assert_string_equal(((Credex__V1__StartConnectResponse *)out)->connection_id, "conn_c1");
    pthread_mutex_lock(&oa_mu);
    assert_string_equal(oc_connector, "con_hidden");
    assert_string_equal(oa_subject, "cxuser");
    assert_string_equal(oa_admin, "");
    pthread_mutex_unlock(&oa_mu);
    /* by id: a connector not enabled for the user (or of another provider) is refused first */
    st.connector_id = "con_off";
    calls = counter(&oa_calls);
    assert_int_equal(cx_conn(f->cli, NULL, cx, "StartConnect", &st.base, a, NULL, &err),
                     CX_ERR_PERMISSION_DENIED);
    assert_int_equal(counter(&oa_calls), calls);
    st.connector_id = "con_hidden";
    st.provider_key = "gitlab";
    assert_int_equal(cx_conn(f->cli, NULL, cx, "StartConnect", &st.base, a, NULL, &err),
                     CX_ERR_INVALID_ARGUMENT);
    st.provider_key = "";
    assert_int_equal(cx_conn(f->cli, NULL, cx, "StartConnect", &st.base, a, NULL, &err), CX_OK);

    /* Complete: the caller becomes the connection's owner. */
    Credex__V1__CompleteConnectRequest cc = CREDEX__V1__COMPLETE_CONNECT_REQUEST__INIT;
    cc.provider_key = "github";
    cc.code = "code-1";
    cc.oauth_state = "s1";
    assert_false(OWNS("user:cxuser"));
    cc.code = "code-foreign"; /* a broken answer grants nothing */
    assert_int_equal(cx_conn(f->cli, NULL, cx, "CompleteConnect", &cc.base, a, &out, &err),
                     CX_ERR_UNAVAILABLE);
    assert_false(OWNS("user:cxuser"));
    assert_false(OWNS("user:someone-else"));
    cc.code = "code-1";
    assert_int_equal(cx_conn(f->cli, NULL, cx, "CompleteConnect", &cc.base, a, &out, &err), CX_OK);
    assert_true(OWNS("user:cxuser"));
    assert_false(OWNS("user:cyuser"));
    assert_int_equal(cx_conn(f->cli, NULL, cx, "CompleteConnect", &cc.base, a, &out, &err),
                     CX_OK); /* a replayed tuple write is no error */

    /* Reads: the owner, or a platform admin; anyone else gets the not_found of nothing. */
    Credex__V1__GetConnectionRequest g = CREDEX__V1__GET_CONNECTION_REQUEST__INIT;
    g.connection_id = "conn_c1";
    assert_int_equal(cx_conn(f->cli, NULL, cx, "GetConnection", &g.base, a, NULL, &err), CX_OK);
    calls = counter(&oa_calls);
    assert_int_equal(cx_conn(f->cli, NULL, cy, "GetConnection", &g.base, a, NULL, &err),
                     CX_ERR_NOT_FOUND);
    char hidden[CX_ERROR_MESSAGE_MAX];
    snprintf(hidden, sizeof(hidden), "%s", err.message);
    g.connection_id = "conn_nope";
    assert_int_equal(cx_conn(f->cli, NULL, cy, "GetConnection", &g.base, a, NULL, &err),
                     CX_ERR_NOT_FOUND);
    assert_string_equal(err.message, hidden);
    assert_int_equal(counter(&oa_calls), calls); /* asked OpenFGA, not oauth */
    g.connection_id = "conn_c1";
    assert_int_equal(cx_conn(f->cli, NULL, adm, "GetConnection", &g.base, a, NULL, &err), CX_OK);
    pthread_mutex_lock(&oa_mu);
    assert_string_equal(oa_admin, "true");
    pthread_mutex_unlock(&oa_mu);

    /* Lists: one's own only, whatever oauth answers; another user's for admins only. */
    Credex__V1__ListConnectionsRequest lr = CREDEX__V1__LIST_CONNECTIONS_REQUEST__INIT;
    assert_int_equal(cx_conn(f->cli, NULL, cx, "ListConnections", &lr.base, a, &out, &err), CX_OK);
    Credex__V1__ListConnectionsResponse *lresp = (Credex__V1__ListConnectionsResponse *)out;
    assert_int_equal(lresp->n_connections, 1);
    assert_string_equal(lresp->connections[0]->subject_user_id, "cxuser");
    lr.subject_user_id = "cxuser";
    assert_int_equal(cx_conn(f->cli, NULL, cy, "ListConnections", &lr.base, a, NULL, &err),
                     CX_ERR_PERMISSION_DENIED);
    assert_int_equal(cx_conn(f->cli, NULL, adm, "ListConnections", &lr.base, a, &out, &err), CX_OK);
    lresp = (Credex__V1__ListConnectionsResponse *)out;
    assert_int_equal(lresp->n_connections, 1);
    assert_string_equal(lresp->connections[0]->subject_user_id, "cxuser");

    /* Reconnect: the owner only, and only while the connector is still enabled for them. */
    Credex__V1__ReconnectRequest rc = CREDEX__V1__RECONNECT_REQUEST__INIT;
    rc.connection_id = "conn_c1";
    assert_int_equal(cx_conn(f->cli, NULL, cy, "Reconnect", &rc.base, a, NULL, &err),
                     CX_ERR_NOT_FOUND);
    assert_int_equal(cx_conn(f->cli, NULL, cx, "Reconnect", &rc.base, a, NULL, &err), CX_OK);
    tuple(false, "team:cxteam#member", "enabled_for", "oauth_connector:con_hidden");
    assert_int_equal(cx_conn(f->cli, NULL, cx, "Reconnect", &rc.base, a, NULL, &err),
                     CX_ERR_PERMISSION_DENIED);

    /* Disconnect: others get not_found; the owner's succeeds and the owner tuple goes after. */
    Credex__V1__DisconnectRequest dr = CREDEX__V1__DISCONNECT_REQUEST__INIT;
    dr.connection_id = "conn_c1";
    assert_int_equal(cx_conn(f->cli, NULL, cy, "Disconnect", &dr.base, a, NULL, &err),
                     CX_ERR_NOT_FOUND);
    assert_true(OWNS("user:cxuser"));
    assert_int_equal(cx_conn(f->cli, NULL, cx, "Disconnect", &dr.base, a, &out, &err), CX_OK);
    assert_int_equal(((Credex__V1__Connection *)out)->state,
                     CREDEX__V1__CONNECTION_STATE__CONNECTION_STATE_REVOKED);
    assert_false(OWNS("user:cxuser"));
    assert_int_equal(cx_conn(f->cli, NULL, cx, "GetConnection", &g.base, a, NULL, &err),
                     CX_ERR_NOT_FOUND);
    free(cx);
    free(cy);
    free(adm);
    free(svc);
    rpc_arena_free(a);
}

/* One Exchange or Inject by agent-runtime (svc_call's headers, plus x-credex-caller). */
static cx_code_t exchange(rpc_client_t *c, const char *method, const char *svc_tok,
                          const char *user_tok, const char *x_caller, const char *connection_id,
                          const char *scope, int64_t min_valid_ms, rpc_arena_t *a,
                          ProtobufCMessage **out, cx_error_t *err)
{
    char bearer[4200];
    rpc_header_t h[3];
    size_t n = caller_headers(h, bearer, sizeof(bearer), svc_tok, user_tok, x_caller);
    Credex__V1__ResourceContext rc = CREDEX__V1__RESOURCE_CONTEXT__INIT;
    rc.resource_type = "mcp_server";
    rc.resource_id = "jira-tools";
    Credex__V1__ExchangeRequest req = CREDEX__V1__EXCHANGE_REQUEST__INIT;
    req.provider_key = "atlassian";
    req.connection_id = (char *)connection_id;
    req.intended_use = "mcp_impersonation";
    req.resource_context = &rc;
    char *scopes[1] = {(char *)scope};
    req.required_scopes = scopes;
    req.n_required_scopes = scope ? 1 : 0;
    req.min_valid_for_ms = min_valid_ms;
    rpc_call_options_t o = {.deadline_ms = 5000, .headers = h, .nheaders = n};
    ProtobufCMessage *reply = NULL;
    cx_error_clear(err);
    bool ok = rpc_client_unary(c, &credex__v1__retrieval__descriptor, method, &req.base, &o, a,
                               &reply, err);
    if (out)
        *out = reply;
    return ok ? CX_OK : err->code;
}

/* Every refusal precedes the one call that may refresh or issue a token (pt_gets), and is
 * audited by the gateway; the answer names the checked connection, never a refresh token. */
static void test_exchange_checks_before_any_token(void **state)
{
    struct fx *f = *state;
    rpc_arena_t *a = rpc_arena_new(1024);
    cx_error_t err;
    char *svc = mint("service-account-agent-runtime", "agent-runtime");
    char *ann = mint("ann", "agent-runtime");
    tuple(true, "service:agent-runtime", "retriever", "platform:credex");
    int a0 = counter(&st_audits), p0 = counter(&pt_picks), g0 = counter(&pt_gets);
#define EX(m, s, u, x, conn, scope, ms)                                                            \
    exchange(f->agent, m, s, u, x, conn, scope, ms, a, NULL, &err)

    /* a retriever without the exchanger grant */
    assert_int_equal(EX("Exchange", svc, ann, NULL, NULL, NULL, 0), CX_ERR_PERMISSION_DENIED);
    tuple(true, "service:agent-runtime", "exchanger", "platform:credex");
    /* browsers: a marker with valid tokens, and the edge whatever it claims */
    assert_int_equal(EX("Exchange", svc, ann, "browser", NULL, NULL, 0), CX_ERR_BROWSER_DENIED);
    assert_int_equal(EX("Inject", svc, ann, "browser", NULL, NULL, 0), CX_ERR_BROWSER_DENIED);
    assert_int_equal(
        exchange(f->edge, "Exchange", NULL, ann, "service", NULL, NULL, 0, a, NULL, &err),
        CX_ERR_BROWSER_DENIED);
    /* the service acting for itself */
    assert_int_equal(EX("Exchange", svc, NULL, NULL, NULL, NULL, 0), CX_ERR_PERMISSION_DENIED);
    /* min_valid_for_ms beyond one hour, or negative */
    assert_int_equal(EX("Exchange", svc, ann, NULL, NULL, NULL, 3600001), CX_ERR_INVALID_ARGUMENT);
    assert_int_equal(EX("Exchange", svc, ann, NULL, NULL, NULL, -1), CX_ERR_INVALID_ARGUMENT);
    /* another user's connection by id: not_found, decided before oauth is asked */
    tuple(true, "user:zed", "owner", "provider_connection:conn_zed");
    assert_int_equal(EX("Exchange", svc, ann, NULL, "conn_zed", NULL, 0), CX_ERR_NOT_FOUND);
    char msg_foreign[CX_ERROR_MESSAGE_MAX];
    strcpy(msg_foreign, err.message);
    assert_int_equal(counter(&pt_picks), p0);
    /* a picked connection the user does not own in OpenFGA: the same not_found */
    assert_int_equal(EX("Exchange", svc, ann, NULL, NULL, NULL, 0), CX_ERR_NOT_FOUND);
    assert_string_equal(err.message, msg_foreign);
    assert_string_equal(st_last_reason, "not_found");
    tuple(true, "user:ann", "owner", "provider_connection:conn_mine");
    /* the connector is not enabled for ann */
    assert_int_equal(EX("Inject", svc, ann, NULL, NULL, NULL, 0), CX_ERR_PERMISSION_DENIED);
    assert_string_equal(st_last_event, "token.injected");
    tuple(true, "user:ann", "member", "team:jira-users");
    tuple(true, "team:jira-users#member", "enabled_for", "oauth_connector:con_hidden");
    /* a scope never granted: oauth's pick refuses it and audits its own answer */
    int a1 = counter(&st_audits);
    assert_int_equal(EX("Exchange", svc, ann, NULL, NULL, "admin:org", 0),
                     CX_ERR_RECONSENT_REQUIRED);
    assert_int_equal(counter(&st_audits), a1);

    assert_int_equal(counter(&pt_gets), g0); /* nothing above reached the token */
    assert_int_equal(counter(&st_audits) - a0, 10);
    assert_string_equal(st_last_event, "token.injected");

    /* allowed: exactly the checked connection is asked for its token */
    Credex__V1__ExchangeResponse *ex = NULL;
    assert_int_equal(exchange(f->agent, "Exchange", svc, ann, NULL, NULL, "read:jira-work", 600000,
                              a, (ProtobufCMessage **)&ex, &err),
                     CX_OK);
    assert_int_equal(counter(&pt_gets), g0 + 1);
    assert_string_equal(pt_last_connection, "conn_mine");
    assert_string_equal(ex->connection_id, "conn_mine");
    assert_string_equal(ex->token_type, "Bearer");
    assert_string_equal(ex->issued_token_type, "urn:ietf:params:oauth:token-type:access_token");
    assert_int_equal(ex->material.len, 12);
    assert_memory_equal(ex->material.data, "canary-token", 12);
    assert_string_equal(ex->provider_resource_id, "cloud-1");

    /* Inject: the header a proxy adds, the site's API base, and its own audit event */
    int a2 = counter(&st_audits);
    Credex__V1__InjectResponse *in = NULL;
    assert_int_equal(exchange(f->agent, "Inject", svc, ann, NULL, "conn_mine", NULL, 0, a,
                              (ProtobufCMessage **)&in, &err),
                     CX_OK);
    assert_int_equal(in->n_headers, 1);
    assert_string_equal(in->headers[0]->name, "Authorization");
    assert_int_equal(in->headers[0]->value.len, strlen("Bearer canary-token"));
    assert_memory_equal(in->headers[0]->value.data, "Bearer canary-token", 19);
    assert_string_equal(in->api_base_url, "https://api.atlassian.com/ex/jira/cloud-1");
    assert_int_equal(counter(&st_audits), a2 + 1);
    assert_string_equal(st_last_event, "token.injected");

    /* the provider's rate limit is passed on as it is, not taken for an outage */
    pthread_mutex_lock(&st_mu);
    pt_get_fail = CX_ERR_RATE_LIMITED;
    pthread_mutex_unlock(&st_mu);
    assert_int_equal(EX("Exchange", svc, ann, NULL, NULL, NULL, 0), CX_ERR_RATE_LIMITED);
    pthread_mutex_lock(&st_mu);
    pt_get_fail = CX_OK;
    pthread_mutex_unlock(&st_mu);
#undef EX
    free(svc);
    free(ann);
    rpc_arena_free(a);
}

static void test_unimplemented_and_health(void **state)
{
    struct fx *f = *state;
    rpc_arena_t *a = rpc_arena_new(1024);
    cx_error_t err;
    /* Exchange without a token is unauthenticated, and a method with no handler at all is
     * unimplemented. */
    Credex__V1__ExchangeRequest ex = CREDEX__V1__EXCHANGE_REQUEST__INIT;
    rpc_call_options_t o = {.deadline_ms = 5000};
    ProtobufCMessage *reply = NULL;
    assert_false(rpc_client_unary(f->agent, &credex__v1__retrieval__descriptor, "Exchange",
                                  &ex.base, &o, a, &reply, &err));
    assert_int_equal(err.code, CX_ERR_UNAUTHENTICATED);
    Credex__V1__QueryAuditEventsRequest q = CREDEX__V1__QUERY_AUDIT_EVENTS_REQUEST__INIT;
    assert_false(rpc_client_unary(f->agent, &credex__v1__audit__descriptor, "QueryAuditEvents",
                                  &q.base, &o, a, &reply, &err));
    assert_int_equal(err.code, CX_ERR_UNIMPLEMENTED);

    char *u = mint("frank", NULL);
    rpc_header_t h = {"x-credex-user-token", u};
    o.headers = &h;
    o.nheaders = 1;
    Credex__V1__GetHealthRequest hr = CREDEX__V1__GET_HEALTH_REQUEST__INIT;
    assert_true(rpc_client_unary(f->cli, &credex__v1__admin__descriptor, "GetHealth", &hr.base, &o,
                                 a, &reply, &err));
    Credex__V1__GetHealthResponse *resp = (Credex__V1__GetHealthResponse *)reply;
    assert_int_equal(resp->n_components, 4);
    assert_string_equal(resp->components[0]->component, "credential_store");
    assert_int_equal(resp->components[0]->status, CREDEX__V1__HEALTH_STATUS__HEALTH_STATUS_OK);
    assert_string_equal(resp->components[1]->component, "key_wrapper");
    assert_int_equal(resp->components[1]->status, CREDEX__V1__HEALTH_STATUS__HEALTH_STATUS_DOWN);
    assert_string_equal(resp->components[2]->component, "policy_service");
    assert_int_equal(resp->components[2]->status, CREDEX__V1__HEALTH_STATUS__HEALTH_STATUS_OK);
    assert_int_equal(resp->status, CREDEX__V1__HEALTH_STATUS__HEALTH_STATUS_DOWN);
    assert_string_equal(resp->components[1]->detail, ""); /* not an admin */
    assert_true(resp->credentials_enabled);
    free(u);
    rpc_arena_free(a);
}

static void test_feature_disabled(void **state)
{
    struct fx *f = *state;
    rpc_arena_t *a = rpc_arena_new(1024);
    cx_error_t err;
    char *svc = mint("service-account-agent-runtime", "agent-runtime");
    char *alice = mint("alice", "agent-runtime");
    int r0 = counter(&st_resolves);
    assert_int_equal(
        retrieve(f->agent, svc, alice, NULL, "sec_team", "mcp_server_env", a, NULL, &err),
        CX_ERR_FEATURE_DISABLED);
    assert_int_equal(get_secret(f->cli, alice, "sec_team", &err), CX_ERR_FEATURE_DISABLED);
    assert_int_equal(counter(&st_resolves), r0);
    rpc_header_t h = {"x-credex-user-token", alice};
    rpc_call_options_t o = {.deadline_ms = 5000, .headers = &h, .nheaders = 1};
    Credex__V1__GetHealthRequest hr = CREDEX__V1__GET_HEALTH_REQUEST__INIT;
    ProtobufCMessage *reply = NULL;
    assert_true(rpc_client_unary(f->cli, &credex__v1__admin__descriptor, "GetHealth", &hr.base, &o,
                                 a, &reply, &err));
    assert_false(((Credex__V1__GetHealthResponse *)reply)->credentials_enabled);
    free(svc);
    free(alice);
    rpc_arena_free(a);
}

static int fx_setup_policy_down(void **state)
{
    fga_url_override = "http://127.0.0.1:1";
    int rc = fx_setup(state, true);
    fga_url_override = NULL;
    return rc;
}

/* OpenFGA unreachable: every decision fails closed as unavailable, before store is asked. */
static void test_policy_down_fails_closed(void **state)
{
    struct fx *f = *state;
    rpc_arena_t *a = rpc_arena_new(1024);
    cx_error_t err;
    char *svc = mint("service-account-agent-runtime", "agent-runtime");
    char *alice = mint("alice", "agent-runtime");
    int r0 = counter(&st_resolves);
    assert_int_equal(
        retrieve(f->agent, svc, alice, NULL, "sec_team", "mcp_server_env", a, NULL, &err),
        CX_ERR_UNAVAILABLE);
    assert_int_equal(get_secret(f->cli, alice, "sec_team", &err), CX_ERR_UNAVAILABLE);
    assert_int_equal(create(f->cli, alice, "kdown", 0, NULL, API_KEY, "v", a, &err),
                     CX_ERR_UNAVAILABLE); /* the secret exists in store; a replay completes it */
    assert_int_equal(counter(&st_resolves), r0);
    /* browsers are still refused as browsers: that needs no policy decision */
    assert_int_equal(
        retrieve(f->edge, NULL, alice, NULL, "sec_team", "mcp_server_env", a, NULL, &err),
        CX_ERR_BROWSER_DENIED);
    free(svc);
    free(alice);
    rpc_arena_free(a);
}

int main(void)
{
    const char *p = getenv("CREDEX_TEST_PKI");
    if (!p || !tk_fga_env_read(NULL, &fga_env)) {
        fprintf(stderr, "run through ctest (CREDEX_TEST_PKI, CREDEX_TEST_FGA_ENV)\n");
        return 1;
    }
    FILE *kf = fopen(tk_pki_path("jwt-signing.key"), "r");
    signing_key = kf ? PEM_read_PrivateKey(kf, NULL, NULL, NULL) : NULL;
    if (kf)
        fclose(kf);
    json_t *jwks = json_load_file(tk_pki_path("jwks.json"), 0, NULL);
    const char *k =
        json_string_value(json_object_get(json_array_get(json_object_get(jwks, "keys"), 0), "kid"));
    FILE *isf = fopen(tk_pki_path("jwt-issuer.txt"), "r");
    if (!signing_key || !k || !isf || !fgets(issuer, sizeof(issuer), isf)) {
        fprintf(stderr, "dev PKI incomplete in %s\n", p);
        return 1;
    }
    fclose(isf);
    issuer[strcspn(issuer, "\n")] = '\0';
    snprintf(kid, sizeof(kid), "%s", k);
    json_decref(jwks);
    cx_fga_options_t fo = {.url = fga_env.url,
                           .store_id = fga_env.store,
                           .model_id = fga_env.model,
                           .timeout_ms = 2000};
    fga = cx_fga_new(&fo, NULL);

    const struct CMUnitTest enabled[] = {
        cmocka_unit_test(test_retrieve_denials_never_reach_store),
        cmocka_unit_test(test_retrieve_allowed),
        cmocka_unit_test(test_secrets_hidden_is_not_found),
        cmocka_unit_test(test_secrets_lifecycle_and_sharing),
        cmocka_unit_test(test_unimplemented_and_health),
        cmocka_unit_test(test_connectors),
        cmocka_unit_test(test_connections),
        cmocka_unit_test(test_exchange_checks_before_any_token),
    };
    const struct CMUnitTest disabled[] = {
        cmocka_unit_test(test_feature_disabled),
    };
    const struct CMUnitTest policy_down[] = {
        cmocka_unit_test(test_policy_down_fails_closed),
    };
    int rc = cmocka_run_group_tests_name("gateway_enabled", enabled, fx_setup_enabled, fx_teardown);
    rc |= cmocka_run_group_tests_name("gateway_policy_down", policy_down, fx_setup_policy_down,
                                      fx_teardown);
    rc |= cmocka_run_group_tests_name("gateway_disabled", disabled, fx_setup_disabled, fx_teardown);
    cx_fga_free(fga);
    EVP_PKEY_free(signing_key);
    return rc;
}
