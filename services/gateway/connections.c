/*
 * credex.v1.Connections, re-served: each method is a step of gateway_run (gateway.c), which has
 * already authenticated the caller (a user: a service acting for itself is refused) and checked
 * the request's contract. Replies are metadata only, so browsers reach every method through the
 * edge. oauth acts for x-credex-subject-user-id (gateway_forward_oauth); it checks that the
 * flow of a callback is the caller's, and never lists or answers another user's connections
 * to a caller it was not told is a platform admin.
 *
 * OpenFGA holds who owns a connection: `user:<u> owner provider_connection:<id>`, written when
 * CompleteConnect succeeds (a replayed write is no error) and deleted once Disconnect has
 * succeeded at oauth. Access is removed after oauth, not before: Disconnect is idempotent, so
 * a client that saw `unavailable` repeats it, still passes the owner check and completes the
 * removal; had the tuple gone first, a failure at oauth would have left the tokens in place
 * and the owner unable to retry. Removing the tuple protects nothing oauth has not already
 * refused: a REVOKED connection has no token set left.
 *
 * A connection a caller may not read is the not_found of one that does not exist, decided in
 * OpenFGA before oauth is asked (ids cannot be probed). Starting a consent (StartConnect,
 * Reconnect) needs the connector ACTIVE and enabled for the user (connectors.c).
 */
#include <stdio.h>
#include <string.h>

#include "common/log/cx_log.h"
#include "credex/v1/oauth.pb-c.h"
#include "services/gateway/gateway_internal.h"

#define OWNER         "owner"
#define NOT_FOUND_MSG "connection not found"

static const ProtobufCServiceDescriptor *const connections_svc =
    &credex__v1__connections__descriptor;

static void connection_obj(const char *id, char *buf, size_t bufsz)
{
    snprintf(buf, bufsz, "provider_connection:%s", id);
}

/* oauth's answer, with its not_found given our one message for "absent" and "hidden". */
static bool oauth_call(gateway_req_t *r, const char *method, const ProtobufCMessage *req,
                       ProtobufCMessage **reply, cx_error_t *err)
{
    if (gateway_forward_oauth(r, connections_svc, method, req, reply, err))
        return true;
    if (err->code == CX_ERR_NOT_FOUND)
        cx_error_set(err, CX_ERR_NOT_FOUND, NOT_FOUND_MSG);
    return false;
}

/* May the caller act on the connection: its owner, or (admins_too) a platform admin? Else the
 * not_found of a connection that does not exist. */
static bool may_act(gateway_req_t *r, const char *connection_id, bool admins_too, cx_error_t *err)
{
    char user[CX_FGA_NAME_MAX], obj[CX_FGA_NAME_MAX];
    gateway_user_fga(r, user, sizeof(user));
    connection_obj(connection_id, obj, sizeof(obj));
    bool owner = false, admin = false;
    if (!gateway_fga_check(r->gw, user, OWNER, obj, &owner, err))
        return false;
    if (owner)
        return true;
    if (admins_too && !gateway_is_platform_admin(r, &admin, err))
        return false;
    return admin ? true : cx_error_set(err, CX_ERR_NOT_FOUND, NOT_FOUND_MSG);
}

/* A connection from oauth, checked enough to name OpenFGA objects after it. */
static bool reply_connection_ok(const Credex__V1__Connection *c, cx_error_t *err)
{
    if (!c || !gateway_id_valid(c->connection_id) ||
        (c->subject_user_id && c->subject_user_id[0] && !gateway_id_valid(c->subject_user_id)))
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "oauth sent a malformed answer");
    return true;
}

/* Add or remove `user:<user_id> owner provider_connection:<id>`. `done` says what already
 * happened at oauth, for the retry hint. */
static bool owner_tuple(gateway_req_t *r, bool add, const char *user_id, const char *connection_id,
                        const char *done, cx_error_t *err)
{
    char user[CX_FGA_NAME_MAX], obj[CX_FGA_NAME_MAX];
    snprintf(user, sizeof(user), "user:%s", user_id);
    connection_obj(connection_id, obj, sizeof(obj));
    cx_fga_tuple_t t;
    cx_error_t ferr;
    cx_error_clear(&ferr);
    if (r->gw->fga && cx_fga_tuple_set(&t, user, OWNER, obj) &&
        (add ? cx_fga_write(r->gw->fga, &t, 1, NULL, 0, &ferr)
             : cx_fga_write(r->gw->fga, NULL, 0, &t, 1, &ferr)))
        return true;
    cx_log_error(rpc_call_correlation_id(r->call), "gateway.connection_owner_failed",
                 CX_LOG_STR("connection_id", connection_id), CX_LOG_BOOL("add", add),
                 CX_LOG_STR("reason", ferr.message));
    return cx_error_set(err, CX_ERR_UNAVAILABLE,
                        "connection %s, but its access could not be updated: retry", done);
}

/* ---- the methods ----------------------------------------------------------------------------- */

static bool start_connect(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__StartConnectRequest *req =
        (const Credex__V1__StartConnectRequest *)r->request;
    const Credex__V1__Connector *c = NULL;
    if (!gateway_connector_for_user(r, req->provider_key, req->connector_id, &c, err))
        return false;
    /* oauth starts the flow for exactly the connector the user was found enabled for. */
    Credex__V1__StartConnectRequest fwd = *req;
    fwd.connector_id = c->connector_id;
    fwd.provider_key = c->provider_key;
    return oauth_call(r, "StartConnect", &fwd.base, reply, err);
}

static bool complete_connect(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    if (!oauth_call(r, "CompleteConnect", r->request, reply, err))
        return false;
    const Credex__V1__Connection *c =
        ((const Credex__V1__CompleteConnectResponse *)*reply)->connection;
    /* oauth checked the flow's user; a connection of anyone else is a broken answer. */
    bool ok = reply_connection_ok(c, err);
    if (ok && c->subject_user_id && c->subject_user_id[0] &&
        strcmp(c->subject_user_id, r->caller.user_id) != 0)
        ok = cx_error_set(err, CX_ERR_UNAVAILABLE, "oauth sent a malformed answer");
    if (!ok) {
        *reply = NULL;
        return false;
    }
    return owner_tuple(r, true, r->caller.user_id, c->connection_id, "connected", err);
}

static bool list_connections(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__ListConnectionsRequest *req =
        (const Credex__V1__ListConnectionsRequest *)r->request;
    const char *subject =
        req->subject_user_id && req->subject_user_id[0] ? req->subject_user_id : r->caller.user_id;
    bool own = strcmp(subject, r->caller.user_id) == 0, admin = false;
    if (!own) {
        if (!gateway_is_platform_admin(r, &admin, err))
            return false;
        if (!admin)
            return cx_error_set(err, CX_ERR_PERMISSION_DENIED,
                                "only platform admins list another user's connections");
    }
    if (!oauth_call(r, "ListConnections", r->request, reply, err))
        return false;
    /* Defence in depth: whatever oauth answered, only the named subject's connections. */
    Credex__V1__ListConnectionsResponse *resp = (Credex__V1__ListConnectionsResponse *)*reply;
    size_t keep = 0;
    for (size_t i = 0; i < resp->n_connections; i++) {
        const Credex__V1__Connection *c = resp->connections[i];
        if (c && c->subject_user_id && strcmp(c->subject_user_id, subject) == 0)
            resp->connections[keep++] = resp->connections[i];
    }
    resp->n_connections = keep;
    return true;
}

static bool get_connection(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__GetConnectionRequest *req =
        (const Credex__V1__GetConnectionRequest *)r->request;
    return may_act(r, req->connection_id, true, err) &&
           oauth_call(r, "GetConnection", r->request, reply, err);
}

static bool disconnect(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__DisconnectRequest *req = (const Credex__V1__DisconnectRequest *)r->request;
    if (!may_act(r, req->connection_id, true, err) ||
        !oauth_call(r, "Disconnect", r->request, reply, err))
        return false;
    const Credex__V1__Connection *c = (const Credex__V1__Connection *)*reply;
    if (!reply_connection_ok(c, err)) {
        *reply = NULL;
        return false;
    }
    /* An admin disconnects someone else's: the owner's tuple goes. */
    const char *owner =
        c->subject_user_id && c->subject_user_id[0] ? c->subject_user_id : r->caller.user_id;
    return owner_tuple(r, false, owner, req->connection_id, "disconnected", err);
}

static bool reconnect(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__ReconnectRequest *req = (const Credex__V1__ReconnectRequest *)r->request;
    if (!may_act(r, req->connection_id, false, err))
        return false;
    /* The connector must still be enabled for the user. */
    Credex__V1__GetConnectionRequest g = CREDEX__V1__GET_CONNECTION_REQUEST__INIT;
    g.connection_id = req->connection_id;
    ProtobufCMessage *got = NULL;
    if (!oauth_call(r, "GetConnection", &g.base, &got, err))
        return false;
    const Credex__V1__Connection *c = (const Credex__V1__Connection *)got;
    const Credex__V1__Connector *connector = NULL;
    if (!reply_connection_ok(c, err))
        return false;
    if (!gateway_id_valid(c->connector_id))
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "oauth sent a malformed answer");
    return gateway_connector_for_user(r, NULL, c->connector_id, &connector, err) &&
           oauth_call(r, "Reconnect", r->request, reply, err);
}

/* ---- the method table -------------------------------------------------------------------- */

#define CONNECTION_METHOD(ev, idf, fn)                                                             \
    {                                                                                              \
        .event_type = ev, .resource_type = "provider_connection", .id_field = idf,                 \
        .flags = GATEWAY_M_USER, .run = fn                                                         \
    }

static const gateway_method_t m_start =
    CONNECTION_METHOD("connection.started", NULL, start_connect);
static const gateway_method_t m_complete =
    CONNECTION_METHOD("connection.connected", NULL, complete_connect);
static const gateway_method_t m_list =
    CONNECTION_METHOD("connection.listed", NULL, list_connections);
static const gateway_method_t m_get =
    CONNECTION_METHOD("connection.read", "connection_id", get_connection);
static const gateway_method_t m_disconnect =
    CONNECTION_METHOD("connection.disconnected", "connection_id", disconnect);
static const gateway_method_t m_reconnect =
    CONNECTION_METHOD("connection.started", "connection_id", reconnect);

GATEWAY_ENTRY(start_entry, m_start)
GATEWAY_ENTRY(complete_entry, m_complete)
GATEWAY_ENTRY(list_entry, m_list)
GATEWAY_ENTRY(get_entry, m_get)
GATEWAY_ENTRY(disconnect_entry, m_disconnect)
GATEWAY_ENTRY(reconnect_entry, m_reconnect)

static const rpc_method_impl_t connections_impls[] = {
    {.method = "StartConnect", .kind = RPC_UNARY, .unary = start_entry},
    {.method = "CompleteConnect", .kind = RPC_UNARY, .unary = complete_entry},
    {.method = "ListConnections", .kind = RPC_UNARY, .unary = list_entry},
    {.method = "GetConnection", .kind = RPC_UNARY, .unary = get_entry},
    {.method = "Disconnect", .kind = RPC_UNARY, .unary = disconnect_entry},
    {.method = "Reconnect", .kind = RPC_UNARY, .unary = reconnect_entry},
};

const rpc_service_def_t gateway_connections_def = {
    .desc = &credex__v1__connections__descriptor,
    .impls = connections_impls,
    .nimpls = sizeof(connections_impls) / sizeof(connections_impls[0]),
    .handles_bad_input = true, /* gateway_run audits it */
};
