/*
 * credex.v1.Connectors, re-served: each method is a step of gateway_run (gateway.c), which has
 * already authenticated the caller (a user: a service acting for itself is refused) and
 * checked the request's contract. Management is for platform admins (admin on
 * platform:credex); browsers reach it through the edge, since replies are metadata only.
 * Other users see only ACTIVE connectors enabled for them (T122): a connector they may not
 * see is the not_found of one that does not exist.
 *
 * OpenFGA holds who a connector is enabled for: the tuples `enabled_for` on
 * oauth_connector:<id> mirror the connector oauth answers (its enabled_for while ACTIVE,
 * nothing otherwise). Access is removed before oauth is asked to disable and granted only
 * after oauth answered; every step may be replayed, so a client that saw `unavailable`
 * retries the same call and it completes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log/cx_log.h"
#include "credex/v1/oauth.pb-c.h"
#include "services/gateway/gateway_internal.h"

#define PLATFORM_OBJ  "platform:credex"
#define ENABLED_FOR   "enabled_for"
#define NOT_FOUND_MSG "connector not found"
/* enabled_for holds at most 1000 entries (common/contract); room for a few strays. */
#define TUPLES_MAX      2000
#define FGA_WRITE_BATCH 100 /* OpenFGA's limit per write */

static const ProtobufCServiceDescriptor *const connectors_svc = &credex__v1__connectors__descriptor;

/* ---- who may do what ----------------------------------------------------------------------- */

void gateway_user_fga(const gateway_req_t *r, char *buf, size_t bufsz)
{
    snprintf(buf, bufsz, "user:%s", r->caller.user_id);
}

bool gateway_is_platform_admin(gateway_req_t *r, bool *admin, cx_error_t *err)
{
    char user[CX_FGA_NAME_MAX];
    gateway_user_fga(r, user, sizeof(user));
    if (!gateway_fga_check(r->gw, user, "admin", PLATFORM_OBJ, admin, err))
        return false;
    r->platform_admin = *admin;
    return true;
}

static bool require_platform_admin(gateway_req_t *r, cx_error_t *err)
{
    bool admin = false;
    if (!gateway_is_platform_admin(r, &admin, err))
        return false;
    if (!admin)
        return cx_error_set(err, CX_ERR_PERMISSION_DENIED, "platform admins only");
    return true;
}

/* oauth's answer, with its not_found given our one message for "absent" and "hidden". */
static bool oauth_call(gateway_req_t *r, const char *method, const ProtobufCMessage *req,
                       ProtobufCMessage **reply, cx_error_t *err)
{
    if (gateway_forward_oauth(r, connectors_svc, method, req, reply, err))
        return true;
    if (err->code == CX_ERR_NOT_FOUND)
        cx_error_set(err, CX_ERR_NOT_FOUND, NOT_FOUND_MSG);
    return false;
}

/* ---- enabled_for tuples -------------------------------------------------------------------- */

/* The OpenFGA user an enabled_for entry names: "*" is every user, anything else a team whose
 * members it enables. False for an entry that is neither. */
static bool audience_fga(const char *entry, char *buf, size_t bufsz)
{
    if (strcmp(entry, "*") == 0) {
        snprintf(buf, bufsz, "user:*");
        return true;
    }
    if (!gateway_id_valid(entry))
        return false;
    snprintf(buf, bufsz, "team:%s#member", entry);
    return true;
}

static bool audience_ok(char *const *entries, size_t n, cx_error_t *err)
{
    char who[CX_FGA_NAME_MAX];
    for (size_t i = 0; i < n; i++)
        if (!audience_fga(entries[i], who, sizeof(who)))
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "team_ids entries are team ids or \"*\"");
    return true;
}

static void connector_obj(const char *id, char *buf, size_t bufsz)
{
    snprintf(buf, bufsz, "oauth_connector:%s", id);
}

/* Deletes first, so that access is never wider than before while the batches go out. */
static bool tuples_write(const gateway_t *gw, const cx_fga_tuple_t *adds, size_t nadds,
                         const cx_fga_tuple_t *dels, size_t ndels, cx_error_t *err)
{
    for (size_t i = 0; i < ndels; i += FGA_WRITE_BATCH)
        if (!cx_fga_write(gw->fga, NULL, 0, dels + i,
                          ndels - i > FGA_WRITE_BATCH ? FGA_WRITE_BATCH : ndels - i, err))
            return false;
    for (size_t i = 0; i < nadds; i += FGA_WRITE_BATCH)
        if (!cx_fga_write(gw->fga, adds + i,
                          nadds - i > FGA_WRITE_BATCH ? FGA_WRITE_BATCH : nadds - i, NULL, 0, err))
            return false;
    return true;
}

/* Remove the tuples of these entries (a missing tuple is no error). */
static bool tuples_remove(const gateway_t *gw, const char *connector_id, char *const *entries,
                          size_t n, cx_error_t *err)
{
    char obj[CX_FGA_NAME_MAX], who[CX_FGA_NAME_MAX];
    connector_obj(connector_id, obj, sizeof(obj));
    cx_fga_tuple_t *t = calloc(n ? n : 1, sizeof(*t));
    if (!t)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (audience_fga(entries[i], who, sizeof(who)) &&
            cx_fga_tuple_set(&t[k], who, ENABLED_FOR, obj))
            k++;
    bool ok = tuples_write(gw, NULL, 0, t, k, err);
    free(t);
    return ok;
}

static bool tuple_in(const cx_fga_tuple_t *t, size_t n, const char *user)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].user, user) == 0)
            return true;
    return false;
}

/* Make the enabled_for tuples of the connector exactly those of `entries` (n == 0: none).
 * Entries that name neither a team nor "*" grant nothing. */
static bool tuples_sync(const gateway_t *gw, const char *connector_id, char *const *entries,
                        size_t n, cx_error_t *err)
{
    char obj[CX_FGA_NAME_MAX];
    connector_obj(connector_id, obj, sizeof(obj));
    cx_fga_tuple_t *have = NULL, *want = NULL, *adds = NULL, *dels = NULL;
    size_t nhave = 0, nwant = 0, nadds = 0, ndels = 0;
    bool ok = false;
    if (!cx_fga_read(gw->fga, obj, ENABLED_FOR, NULL, TUPLES_MAX, &have, &nhave, err))
        goto out;
    want = calloc(n ? n : 1, sizeof(*want));
    adds = calloc(n ? n : 1, sizeof(*adds));
    dels = calloc(nhave ? nhave : 1, sizeof(*dels));
    if (!want || !adds || !dels) {
        cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        goto out;
    }
    char who[CX_FGA_NAME_MAX];
    for (size_t i = 0; i < n; i++) /* OpenFGA refuses a tuple twice in one write */
        if (audience_fga(entries[i], who, sizeof(who)) && !tuple_in(want, nwant, who) &&
            cx_fga_tuple_set(&want[nwant], who, ENABLED_FOR, obj))
            nwant++;
    for (size_t i = 0; i < nhave; i++)
        if (!tuple_in(want, nwant, have[i].user))
            dels[ndels++] = have[i];
    for (size_t i = 0; i < nwant; i++)
        if (!tuple_in(have, nhave, want[i].user))
            adds[nadds++] = want[i];
    ok = tuples_write(gw, adds, nadds, dels, ndels, err);
out:
    free(have);
    free(want);
    free(adds);
    free(dels);
    return ok;
}

/* Tuples mirror the connector as oauth answered it: its enabled_for while ACTIVE, nothing
 * otherwise. `done` says what already happened at oauth, for the retry hint. */
static bool mirror(gateway_req_t *r, const char *connector_id, const Credex__V1__Connector *c,
                   const char *done, cx_error_t *err)
{
    bool active = c && c->status == CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_ACTIVE;
    cx_error_t ferr;
    cx_error_clear(&ferr);
    if (tuples_sync(r->gw, connector_id, active ? c->enabled_for : NULL,
                    active ? c->n_enabled_for : 0, &ferr))
        return true;
    cx_log_error(rpc_call_correlation_id(r->call), "gateway.connector_tuples_failed",
                 CX_LOG_STR("connector_id", connector_id), CX_LOG_STR("reason", ferr.message));
    return cx_error_set(err, CX_ERR_UNAVAILABLE,
                        "connector %s, but its access could not be updated: retry", done);
}

/* A connector from oauth, checked enough to name OpenFGA objects after it. */
static bool reply_connector_ok(const Credex__V1__Connector *c, cx_error_t *err)
{
    if (!c || !c->connector_id || !gateway_id_valid(c->connector_id))
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "oauth sent a malformed answer");
    return true;
}

/* ---- admin methods -------------------------------------------------------------------------- */

/* The common steps of an admin method: the enabled_for entries it names, the admin check,
 * oauth's answer. */
static bool admin_forward(gateway_req_t *r, const char *method, char *const *audience, size_t n,
                          ProtobufCMessage **reply, cx_error_t *err)
{
    return audience_ok(audience, n, err) && require_platform_admin(r, err) &&
           oauth_call(r, method, r->request, reply, err);
}

static bool connectors_builtin(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    return admin_forward(r, "ListBuiltinProviders", NULL, 0, reply, err);
}

static bool connectors_test(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    return admin_forward(r, "TestConnector", NULL, 0, reply, err);
}

static bool connectors_create(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__Connector *in =
        ((const Credex__V1__CreateConnectorRequest *)r->request)->connector;
    if (!admin_forward(r, "CreateConnector", in ? in->enabled_for : NULL,
                       in ? in->n_enabled_for : 0, reply, err))
        return false;
    const Credex__V1__Connector *c = (const Credex__V1__Connector *)*reply;
    /* A new connector is DISABLED: this clears tuples of an earlier life of its id, if any. */
    return reply_connector_ok(c, err) && mirror(r, c->connector_id, c, "created", err);
}

static bool connectors_update(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__UpdateConnectorRequest *req =
        (const Credex__V1__UpdateConnectorRequest *)r->request;
    const Credex__V1__Connector *in = req->connector;
    if (!admin_forward(r, "UpdateConnector", in ? in->enabled_for : NULL,
                       in ? in->n_enabled_for : 0, reply, err))
        return false;
    const Credex__V1__Connector *c =
        ((const Credex__V1__UpdateConnectorResponse *)*reply)->connector;
    return reply_connector_ok(c, err) && mirror(r, req->connector_id, c, "updated", err);
}

static bool connectors_enable(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__EnableConnectorRequest *req =
        (const Credex__V1__EnableConnectorRequest *)r->request;
    if (!admin_forward(r, "EnableConnector", req->team_ids, req->n_team_ids, reply, err))
        return false;
    const Credex__V1__Connector *c = (const Credex__V1__Connector *)*reply;
    return reply_connector_ok(c, err) && mirror(r, req->connector_id, c, "enabled", err);
}

static bool connectors_disable(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__DisableConnectorRequest *req =
        (const Credex__V1__DisableConnectorRequest *)r->request;
    if (!audience_ok(req->team_ids, req->n_team_ids, err) || !require_platform_admin(r, err))
        return false;
    /* Access goes first: if oauth is not reached, nobody keeps what the admin took away, and
     * the retry finishes the job. */
    cx_error_t ferr;
    cx_error_clear(&ferr);
    bool removed = req->n_team_ids == 0 ? tuples_sync(r->gw, req->connector_id, NULL, 0, &ferr)
                                        : tuples_remove(r->gw, req->connector_id, req->team_ids,
                                                        req->n_team_ids, &ferr);
    if (!removed) {
        cx_log_warn(rpc_call_correlation_id(r->call), "gateway.connector_tuples_failed",
                    CX_LOG_STR("connector_id", req->connector_id),
                    CX_LOG_STR("reason", ferr.message));
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service is unavailable");
    }
    if (!oauth_call(r, "DisableConnector", r->request, reply, err))
        return false;
    const Credex__V1__Connector *c = (const Credex__V1__Connector *)*reply;
    return reply_connector_ok(c, err) && mirror(r, req->connector_id, c, "disabled", err);
}

static bool connectors_delete(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__DeleteConnectorRequest *req =
        (const Credex__V1__DeleteConnectorRequest *)r->request;
    if (!require_platform_admin(r, err))
        return false;
    if (!oauth_call(r, "DeleteConnector", r->request, reply, err)) {
        /* Gone already (a retry after the tuples failed): finish the cleanup, answer as oauth
         * did. */
        if (err->code == CX_ERR_NOT_FOUND) {
            cx_error_t ferr;
            cx_error_clear(&ferr);
            if (!tuples_sync(r->gw, req->connector_id, NULL, 0, &ferr))
                cx_log_warn(rpc_call_correlation_id(r->call), "gateway.connector_tuples_failed",
                            CX_LOG_STR("connector_id", req->connector_id),
                            CX_LOG_STR("reason", ferr.message));
        }
        return false;
    }
    const Credex__V1__Connector *c = (const Credex__V1__Connector *)*reply;
    /* Whatever oauth answers, a deleted connector is enabled for nobody. */
    return reply_connector_ok(c, err) && mirror(r, req->connector_id, NULL, "deleted", err);
}

/* ---- reads: admins see everything, users what is enabled for them -----------------------------
 */

static bool visible(const Credex__V1__Connector *c, char **ids, size_t nids)
{
    if (!c || c->status != CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_ACTIVE ||
        !c->connector_id)
        return false;
    for (size_t i = 0; i < nids; i++)
        if (strcmp(ids[i], c->connector_id) == 0)
            return true;
    return false;
}

/* The ids of the connectors enabled for the caller (cx_fga_strv_free). */
static bool enabled_ids(gateway_req_t *r, char ***ids, size_t *nids, cx_error_t *err)
{
    char user[CX_FGA_NAME_MAX];
    gateway_user_fga(r, user, sizeof(user));
    cx_error_t ferr;
    cx_error_clear(&ferr);
    if (!r->gw->fga ||
        !cx_fga_list_objects(r->gw->fga, user, ENABLED_FOR, "oauth_connector", ids, nids, &ferr)) {
        cx_log_warn(rpc_call_correlation_id(r->call), "gateway.policy_failed",
                    CX_LOG_STR("relation", ENABLED_FOR), CX_LOG_STR("reason", ferr.message));
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service is unavailable");
    }
    return true;
}

static bool connectors_list(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__ListConnectorsRequest *req =
        (const Credex__V1__ListConnectorsRequest *)r->request;
    bool admin = false;
    if (!gateway_is_platform_admin(r, &admin, err))
        return false;
    if (admin)
        return oauth_call(r, "ListConnectors", r->request, reply, err);

    Credex__V1__ListConnectorsRequest own = *req;
    own.include_disabled = false; /* for admins only */
    Credex__V1__ListConnectorsResponse *all = NULL;
    if (!oauth_call(r, "ListConnectors", &own.base, (ProtobufCMessage **)&all, err))
        return false;
    char **ids = NULL;
    size_t nids = 0;
    if (!enabled_ids(r, &ids, &nids, err))
        return false;
    Credex__V1__ListConnectorsResponse *resp = rpc_call_alloc(r->call, sizeof(*resp));
    credex__v1__list_connectors_response__init(resp);
    resp->connectors = rpc_call_alloc(r->call, (all->n_connectors ? all->n_connectors : 1) *
                                                   sizeof(*resp->connectors));
    for (size_t i = 0; i < all->n_connectors; i++)
        if (visible(all->connectors[i], ids, nids))
            resp->connectors[resp->n_connectors++] = all->connectors[i];
    cx_fga_strv_free(ids, nids);
    *reply = &resp->base;
    return true;
}

static bool connectors_get(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__GetConnectorRequest *req =
        (const Credex__V1__GetConnectorRequest *)r->request;
    bool admin = false;
    if (!gateway_is_platform_admin(r, &admin, err))
        return false;
    if (!admin) {
        /* Asked before oauth, so that ids cannot be probed through its answers. */
        char user[CX_FGA_NAME_MAX], obj[CX_FGA_NAME_MAX];
        gateway_user_fga(r, user, sizeof(user));
        connector_obj(req->connector_id, obj, sizeof(obj));
        bool enabled = false;
        if (!gateway_fga_check(r->gw, user, ENABLED_FOR, obj, &enabled, err))
            return false;
        if (!enabled)
            return cx_error_set(err, CX_ERR_NOT_FOUND, NOT_FOUND_MSG);
    }
    if (!oauth_call(r, "GetConnector", r->request, reply, err))
        return false;
    const Credex__V1__Connector *c = (const Credex__V1__Connector *)*reply;
    if (!admin && (!c || c->status != CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_ACTIVE)) {
        *reply = NULL;
        return cx_error_set(err, CX_ERR_NOT_FOUND, NOT_FOUND_MSG);
    }
    return true;
}

/* ---- the connector a user may connect to ------------------------------------------------------
 */

static bool not_enabled(cx_error_t *err)
{
    return cx_error_set(err, CX_ERR_PERMISSION_DENIED, "this connector is not enabled for you");
}

/* By id: OpenFGA first, so that ids cannot be probed through oauth's answers. */
static bool connector_by_id(gateway_req_t *r, const char *connector_id,
                            const Credex__V1__Connector **out, cx_error_t *err)
{
    char user[CX_FGA_NAME_MAX], obj[CX_FGA_NAME_MAX];
    gateway_user_fga(r, user, sizeof(user));
    connector_obj(connector_id, obj, sizeof(obj));
    bool enabled = false;
    if (!gateway_fga_check(r->gw, user, ENABLED_FOR, obj, &enabled, err))
        return false;
    if (!enabled)
        return not_enabled(err);
    Credex__V1__GetConnectorRequest g = CREDEX__V1__GET_CONNECTOR_REQUEST__INIT;
    g.connector_id = (char *)connector_id;
    ProtobufCMessage *reply = NULL;
    if (!oauth_call(r, "GetConnector", &g.base, &reply, err))
        return false;
    const Credex__V1__Connector *c = (const Credex__V1__Connector *)reply;
    if (!reply_connector_ok(c, err))
        return false;
    if (c->status != CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_ACTIVE)
        return not_enabled(err);
    *out = c;
    return true;
}

/* By provider key: the one ACTIVE connector of that provider enabled for the user. */
static bool connector_by_key(gateway_req_t *r, const char *provider_key,
                             const Credex__V1__Connector **out, cx_error_t *err)
{
    char **ids = NULL;
    size_t nids = 0;
    if (!enabled_ids(r, &ids, &nids, err))
        return false;
    if (nids == 0) { /* decided without asking oauth */
        cx_fga_strv_free(ids, nids);
        return not_enabled(err);
    }
    Credex__V1__ListConnectorsRequest lr = CREDEX__V1__LIST_CONNECTORS_REQUEST__INIT;
    lr.provider_key = (char *)provider_key;
    Credex__V1__ListConnectorsResponse *all = NULL;
    bool ok = oauth_call(r, "ListConnectors", &lr.base, (ProtobufCMessage **)&all, err);
    const Credex__V1__Connector *found = NULL;
    size_t n = 0;
    for (size_t i = 0; ok && i < all->n_connectors; i++) {
        const Credex__V1__Connector *c = all->connectors[i];
        if (visible(c, ids, nids) && c->provider_key &&
            strcmp(c->provider_key, provider_key) == 0) {
            found = c;
            n++;
        }
    }
    cx_fga_strv_free(ids, nids);
    if (!ok)
        return false;
    if (n == 0)
        return not_enabled(err);
    if (n > 1)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "several connectors of this provider are enabled for you: name "
                            "connector_id");
    *out = found;
    return true;
}

bool gateway_connector_for_user(gateway_req_t *r, const char *provider_key,
                                const char *connector_id, const Credex__V1__Connector **out,
                                cx_error_t *err)
{
    bool by_id = connector_id && connector_id[0];
    if (!by_id && !(provider_key && provider_key[0]))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "provider_key or connector_id is required");
    const Credex__V1__Connector *c = NULL;
    if (by_id ? !connector_by_id(r, connector_id, &c, err)
              : !connector_by_key(r, provider_key, &c, err))
        return false;
    if (by_id && provider_key && provider_key[0] &&
        (!c->provider_key || strcmp(c->provider_key, provider_key) != 0))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "connector_id names a connector of another provider");
    *out = c;
    return true;
}

/* ---- the method table -------------------------------------------------------------------- */

/* Every method needs a request with a connector id but these. */
static bool has_connector_id(gateway_req_t *r, cx_error_t *err)
{
    const char *id = gateway_req_resource_id(r);
    if (!gateway_id_valid(id))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "connector_id is required");
    return true;
}

#define CONNECTOR_METHOD(ev, idf, fn)                                                              \
    {                                                                                              \
        .event_type = ev, .resource_type = "oauth_connector", .id_field = idf,                     \
        .flags = GATEWAY_M_USER, .run = fn                                                         \
    }

/* The steps of methods on one connector: its id first. */
#define BY_ID(name, fn)                                                                            \
    static bool name(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)                  \
    {                                                                                              \
        return has_connector_id(r, err) && fn(r, reply, err);                                      \
    }
BY_ID(get_by_id, connectors_get)
BY_ID(update_by_id, connectors_update)
BY_ID(delete_by_id, connectors_delete)
BY_ID(enable_by_id, connectors_enable)
BY_ID(disable_by_id, connectors_disable)
BY_ID(test_by_id, connectors_test)

static const gateway_method_t m_builtin =
    CONNECTOR_METHOD("connector.listed", NULL, connectors_builtin);
static const gateway_method_t m_list = CONNECTOR_METHOD("connector.listed", NULL, connectors_list);
static const gateway_method_t m_get = CONNECTOR_METHOD("connector.read", "connector_id", get_by_id);
static const gateway_method_t m_create =
    CONNECTOR_METHOD("connector.created", NULL, connectors_create);
static const gateway_method_t m_update =
    CONNECTOR_METHOD("connector.updated", "connector_id", update_by_id);
static const gateway_method_t m_delete =
    CONNECTOR_METHOD("connector.deleted", "connector_id", delete_by_id);
static const gateway_method_t m_enable =
    CONNECTOR_METHOD("connector.enabled", "connector_id", enable_by_id);
static const gateway_method_t m_disable =
    CONNECTOR_METHOD("connector.disabled", "connector_id", disable_by_id);
static const gateway_method_t m_test =
    CONNECTOR_METHOD("connector.tested", "connector_id", test_by_id);

GATEWAY_ENTRY(builtin_entry, m_builtin)
GATEWAY_ENTRY(list_entry, m_list)
GATEWAY_ENTRY(get_entry, m_get)
GATEWAY_ENTRY(create_entry, m_create)
GATEWAY_ENTRY(update_entry, m_update)
GATEWAY_ENTRY(delete_entry, m_delete)
GATEWAY_ENTRY(enable_entry, m_enable)
GATEWAY_ENTRY(disable_entry, m_disable)
GATEWAY_ENTRY(test_entry, m_test)

static const rpc_method_impl_t connectors_impls[] = {
    {.method = "ListBuiltinProviders", .kind = RPC_UNARY, .unary = builtin_entry},
    {.method = "ListConnectors", .kind = RPC_UNARY, .unary = list_entry},
    {.method = "GetConnector", .kind = RPC_UNARY, .unary = get_entry},
    {.method = "CreateConnector", .kind = RPC_UNARY, .unary = create_entry},
    {.method = "UpdateConnector", .kind = RPC_UNARY, .unary = update_entry},
    {.method = "DeleteConnector", .kind = RPC_UNARY, .unary = delete_entry},
    {.method = "EnableConnector", .kind = RPC_UNARY, .unary = enable_entry},
    {.method = "DisableConnector", .kind = RPC_UNARY, .unary = disable_entry},
    {.method = "TestConnector", .kind = RPC_UNARY, .unary = test_entry},
};

const rpc_service_def_t gateway_connectors_def = {
    .desc = &credex__v1__connectors__descriptor,
    .impls = connectors_impls,
    .nimpls = sizeof(connectors_impls) / sizeof(connectors_impls[0]),
    .handles_bad_input = true, /* gateway_run audits it */
};
