/*
 * edge_routes: the route table (see edge_routes.h), matching a decoded path against it, and
 * binding path, query and fixed values to request fields through the protobuf-c descriptors.
 *
 * Paths come from docs/API.md; where the product requirements name only a route family, the
 * sub-path and verb here are credex's proposal, documented in docs/HTTP_API.md.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/pjson/pjson.h"
#include "credex/v1/gateway.pb-c.h"
#include "credex/v1/oauth.pb-c.h"
#include "services/edge/edge_internal.h"

/* ---- methods ---------------------------------------------------------------------------- */

static const char *const edge_method_names[EDGE_METHOD_COUNT_] = {
    [EDGE_GET] = "GET", [EDGE_POST] = "POST", [EDGE_PATCH] = "PATCH", [EDGE_DELETE] = "DELETE"};

const char *edge_method_name(edge_method_t m)
{
    return (unsigned)m < EDGE_METHOD_COUNT_ ? edge_method_names[m] : NULL;
}

bool edge_method_parse(const char *token, edge_method_t *out)
{
    for (unsigned i = 0; token != NULL && i < EDGE_METHOD_COUNT_; i++)
        if (strcmp(token, edge_method_names[i]) == 0) {
            *out = (edge_method_t)i;
            return true;
        }
    return false;
}

/* ---- the table -------------------------------------------------------------------------- */

#define P(n, f, d)                                                                                 \
    {                                                                                              \
        .name = (n), .field = (f), .description = (d)                                              \
    }
#define PATH(a)  .path_params = (a), .n_path_params = sizeof(a) / sizeof((a)[0])
#define QUERY(a) .query_params = (a), .n_query_params = sizeof(a) / sizeof((a)[0])
#define FIXED(a) .fixed = (a), .n_fixed = sizeof(a) / sizeof((a)[0])

#define PAGE_SIZE  P("page_size", "page.page_size", "Page size: 0 or absent = 50, at most 200.")
#define PAGE_TOKEN P("page_token", "page.page_token", "The next_page_token of the previous page.")

static const edge_param_t p_secret_id[] = {
    P("secret_id", "secret_id", "The secret's id (the secret_ref other systems store)."),
};
static const edge_param_t p_connector_id[] = {
    P("connector_id", "connector_id", "The connector's id."),
};
static const edge_param_t p_connection_id[] = {
    P("connection_id", "connection_id", "The connection's id."),
};
static const edge_param_t p_provider_key[] = {
    P("provider_key", "provider_key", "The connector's provider key, e.g. github."),
};
static const edge_param_t p_inject_provider[] = {
    P("provider", "provider_key", "The provider key, e.g. github."),
};

#define SECRET_FILTERS                                                                             \
    P("owner_type", "owner.owner_type", "Only secrets of this owner type (OwnerType name)."),      \
        P("owner_id", "owner.owner_id", "Only secrets of this owner (with owner_type)."),          \
        P("kind", "kind", "Only secrets of this kind (SecretKind name)."),                         \
        P("status", "status",                                                                      \
          "Only secrets in this status (SecretStatus name); default ACTIVE and REVOKED."),         \
        P("provider", "provider", "Only secrets with this provider label."), PAGE_SIZE, PAGE_TOKEN

static const edge_param_t q_list_secrets[] = {
    P("scope", "scope", "Which secrets (ListSecretsScope name); default ACCESSIBLE."),
    SECRET_FILTERS,
};
static const edge_param_t q_admin_list_secrets[] = {SECRET_FILTERS};
static const edge_fixed_t f_scope_all[] = {{.field = "scope", .value = "LIST_SECRETS_SCOPE_ALL"}};
static const edge_param_t q_page[] = {PAGE_SIZE, PAGE_TOKEN};
static const edge_param_t q_unshare[] = {
    P("grantee_type", "grantee.grantee_type", "Whose grant to remove (GranteeType name)."),
    P("grantee_id", "grantee.grantee_id", "The grantee's id."),
    P("role", "role", "The role to remove (ShareRole name); absent: every role of the grantee."),
};
static const edge_param_t q_list_connectors[] = {
    P("provider_key", "provider_key", "Only connectors of this provider."),
    P("include_disabled", "include_disabled", "true to list disabled connectors too (admins)."),
};
static const edge_param_t q_connect[] = {
    P("connector_id", "connector_id", "A connector by id instead of the provider key."),
    P("return_to", "return_to", "Where the UI continues after consent."),
};
static const edge_param_t q_callback[] = {
    P("code", "code", "The provider's authorization code."),
    P("state", "oauth_state", "The OAuth state parameter."),
    P("error", "error", "The provider's error parameter, when consent failed."),
    P("error_description", "error_description", "The provider's error description."),
    P("iss", "iss", "The provider's iss parameter (RFC 9207), when it sends one."),
};
static const edge_param_t q_connections[] = {
    P("provider_key", "provider_key", "Only connections of this provider."),
    P("state", "state", "Only connections in this state (ConnectionState name)."),
    P("subject_user_id", "subject_user_id", "Another user's connections (platform admins)."),
    PAGE_SIZE,
    PAGE_TOKEN,
};
static const edge_param_t q_audit[] = {
    P("event_type", "filter.event_type", "Only events of this type, e.g. secret.rotated."),
    P("outcome", "filter.outcome", "Only events with this outcome (AuditOutcome name)."),
    P("resource_type", "filter.resource_type", "Only events about this resource type."),
    P("resource_id", "filter.resource_id", "Only events about this resource."),
    P("subject_user_id", "filter.subject_user_id", "Only events acting for this user."),
    P("correlation_id", "filter.correlation_id", "Only events of this correlation id."),
    P("since_ms", "filter.since_ms", "Events at or after this Unix time in milliseconds."),
    P("until_ms", "filter.until_ms", "Events before this Unix time in milliseconds."),
    PAGE_SIZE,
    PAGE_TOKEN,
};
static const edge_param_t q_migrations[] = {
    P("source_type", "filter.source_type", "Only findings of this source (MigrationSourceType)."),
    P("source_id", "filter.source_id", "Only findings of this source record."),
    P("status", "filter.status", "Only findings in this status (MigrationPreviewStatus name)."),
    P("run_id", "filter.run_id", "Only findings of this scan."),
    PAGE_SIZE,
    PAGE_TOKEN,
};

#define SECRETS     &credex__v1__secrets__descriptor
#define RETRIEVAL   &credex__v1__retrieval__descriptor
#define AUDIT       &credex__v1__audit__descriptor
#define ADMIN       &credex__v1__admin__descriptor
#define CONNECTORS  &credex__v1__connectors__descriptor
#define CONNECTIONS &credex__v1__connections__descriptor

#define CRED     "/api/credentials"
#define SECRET   CRED "/secrets/{secret_id}"
#define CONN     CRED "/oauth-connectors"
#define CONNX    CRED "/connections"
#define ADMIN_SC "/api/admin/credentials/secrets"

static const edge_route_t edge_route_table[] = {
    /* health */
    {.operation_id = "getCredentialHealth",
     .method = EDGE_GET,
     .path = CRED "/health",
     .service = ADMIN,
     .rpc = "GetHealth",
     .status = 200,
     .summary = "Credential health: feature flags, key provider, component status."},
    /* secrets */
    {.operation_id = "listSecrets",
     .method = EDGE_GET,
     .path = CRED "/secrets",
     .service = SECRETS,
     .rpc = "ListSecrets",
     QUERY(q_list_secrets),
     .status = 200,
     .summary = "List the metadata of the secrets the caller may see."},
    {.operation_id = "createSecret",
     .method = EDGE_POST,
     .path = CRED "/secrets",
     .service = SECRETS,
     .rpc = "CreateSecret",
     .body = true,
     .status = 200,
     .created_field = "created",
     .summary = "Create a secret (201), or replay a create with the same idempotency key (200)."},
    {.operation_id = "getSecret",
     .method = EDGE_GET,
     .path = SECRET,
     .service = SECRETS,
     .rpc = "GetSecret",
     PATH(p_secret_id),
     .status = 200,
     .summary = "A secret's metadata and masked value state."},
    {.operation_id = "updateSecret",
     .method = EDGE_PATCH,
     .path = SECRET,
     .service = SECRETS,
     .rpc = "UpdateSecret",
     PATH(p_secret_id),
     .body = true,
     .status = 200,
     .summary = "Change the fields named in updateMask."},
    {.operation_id = "deleteSecret",
     .method = EDGE_DELETE,
     .path = SECRET,
     .service = SECRETS,
     .rpc = "DeleteSecret",
     PATH(p_secret_id),
     .status = 200,
     .summary = "Delete a secret to a tombstone."},
    {.operation_id = "rotateSecret",
     .method = EDGE_POST,
     .path = SECRET "/rotate",
     .service = SECRETS,
     .rpc = "RotateSecret",
     PATH(p_secret_id),
     .body = true,
     .status = 200,
     .summary = "Replace the value with a new version."},
    {.operation_id = "listSecretVersions",
     .method = EDGE_GET,
     .path = SECRET "/versions",
     .service = SECRETS,
     .rpc = "ListSecretVersions",
     PATH(p_secret_id),
     QUERY(q_page),
     .status = 200,
     .summary = "Version history, newest first, without values."},
    {.operation_id = "revokeSecret",
     .method = EDGE_POST,
     .path = SECRET "/revoke",
     .service = SECRETS,
     .rpc = "RevokeSecret",
     PATH(p_secret_id),
     .body = true,
     .status = 200,
     .summary = "Revoke a secret: it can no longer be retrieved."},
    {.operation_id = "listSecretShares",
     .method = EDGE_GET,
     .path = SECRET "/shares",
     .service = SECRETS,
     .rpc = "ListSecretShares",
     PATH(p_secret_id),
     .status = 200,
     .summary = "Who holds which role on the secret."},
    {.operation_id = "shareSecret",
     .method = EDGE_POST,
     .path = SECRET "/shares",
     .service = SECRETS,
     .rpc = "ShareSecret",
     PATH(p_secret_id),
     .body = true,
     .status = 200,
     .summary = "Grant a role; with previewOnly, only report what the grant would do."},
    {.operation_id = "unshareSecret",
     .method = EDGE_DELETE,
     .path = SECRET "/shares",
     .service = SECRETS,
     .rpc = "UnshareSecret",
     PATH(p_secret_id),
     QUERY(q_unshare),
     .status = 200,
     .summary = "Remove a grantee's role (or every role of the grantee)."},
    /* platform administration of secrets */
    {.operation_id = "adminListSecrets",
     .method = EDGE_GET,
     .path = ADMIN_SC,
     .service = SECRETS,
     .rpc = "ListSecrets",
     QUERY(q_admin_list_secrets),
     FIXED(f_scope_all),
     .status = 200,
     .summary = "Every secret (platform admins)."},
    {.operation_id = "adminUpdateSecret",
     .method = EDGE_PATCH,
     .path = ADMIN_SC "/{secret_id}",
     .service = SECRETS,
     .rpc = "UpdateSecret",
     PATH(p_secret_id),
     .body = true,
     .status = 200,
     .summary = "Change any secret's metadata (platform admins)."},
    {.operation_id = "adminDeleteSecret",
     .method = EDGE_DELETE,
     .path = ADMIN_SC "/{secret_id}",
     .service = SECRETS,
     .rpc = "DeleteSecret",
     PATH(p_secret_id),
     .status = 200,
     .summary = "Delete any secret (platform admins)."},
    /* server-side only: answered browser_denied over HTTP, never with material */
    {.operation_id = "retrieveSecret",
     .method = EDGE_POST,
     .path = CRED "/retrieve",
     .service = RETRIEVAL,
     .rpc = "Retrieve",
     .body = true,
     .status = 200,
     .material = true,
     .summary = "Server-side callers only (gRPC): over HTTP always browser_denied."},
    {.operation_id = "exchangeToken",
     .method = EDGE_POST,
     .path = CRED "/exchange",
     .service = RETRIEVAL,
     .rpc = "Exchange",
     .body = true,
     .status = 200,
     .material = true,
     .summary = "Server-side callers only (gRPC): over HTTP always browser_denied."},
    {.operation_id = "injectCredential",
     .method = EDGE_POST,
     .path = CRED "/inject/{provider}",
     .service = RETRIEVAL,
     .rpc = "Inject",
     PATH(p_inject_provider),
     .body = true,
     .status = 200,
     .material = true,
     .summary = "Server-side callers only (gRPC): over HTTP always browser_denied."},
    /* OAuth connectors */
    {.operation_id = "listConnectors",
     .method = EDGE_GET,
     .path = CONN,
     .service = CONNECTORS,
     .rpc = "ListConnectors",
     QUERY(q_list_connectors),
     .status = 200,
     .summary = "OAuth connectors (admins: all; users: those enabled for them)."},
    {.operation_id = "createConnector",
     .method = EDGE_POST,
     .path = CONN,
     .service = CONNECTORS,
     .rpc = "CreateConnector",
     .body = true,
     .status = 200,
     .summary = "Create an OAuth connector (admins)."},
    {.operation_id = "listBuiltinProviders",
     .method = EDGE_GET,
     .path = CONN "/builtin-providers",
     .service = CONNECTORS,
     .rpc = "ListBuiltinProviders",
     .status = 200,
     .summary = "Built-in provider templates for the admin form."},
    {.operation_id = "getConnector",
     .method = EDGE_GET,
     .path = CONN "/{connector_id}",
     .service = CONNECTORS,
     .rpc = "GetConnector",
     PATH(p_connector_id),
     .status = 200,
     .summary = "One OAuth connector (client secret masked)."},
    {.operation_id = "updateConnector",
     .method = EDGE_PATCH,
     .path = CONN "/{connector_id}",
     .service = CONNECTORS,
     .rpc = "UpdateConnector",
     PATH(p_connector_id),
     .body = true,
     .status = 200,
     .summary = "Change a connector (a scope change requires reconsent)."},
    {.operation_id = "deleteConnector",
     .method = EDGE_DELETE,
     .path = CONN "/{connector_id}",
     .service = CONNECTORS,
     .rpc = "DeleteConnector",
     PATH(p_connector_id),
     .status = 200,
     .summary = "Delete a connector."},
    {.operation_id = "testConnector",
     .method = EDGE_POST,
     .path = CONN "/{connector_id}/test",
     .service = CONNECTORS,
     .rpc = "TestConnector",
     PATH(p_connector_id),
     .body = true,
     .status = 200,
     .summary = "Check a connector's endpoints and credentials."},
    {.operation_id = "enableConnector",
     .method = EDGE_POST,
     .path = CONN "/{connector_id}/enable",
     .service = CONNECTORS,
     .rpc = "EnableConnector",
     PATH(p_connector_id),
     .body = true,
     .status = 200,
     .summary = "Enable a connector, or enable it for teams."},
    {.operation_id = "disableConnector",
     .method = EDGE_POST,
     .path = CONN "/{connector_id}/disable",
     .service = CONNECTORS,
     .rpc = "DisableConnector",
     PATH(p_connector_id),
     .body = true,
     .status = 200,
     .summary = "Disable a connector, or disable it for teams."},
    /* a user's consent flow */
    {.operation_id = "startConnect",
     .method = EDGE_GET,
     .path = CRED "/oauth/{provider_key}/connect",
     .service = CONNECTIONS,
     .rpc = "StartConnect",
     PATH(p_provider_key),
     QUERY(q_connect),
     .status = 200,
     .redirect = {.to = EDGE_REDIRECT_URL,
                  .status = 302,
                  .field = "authorization_url",
                  .description = "Location: the provider's authorization URL (state, PKCE S256 "
                                 "challenge); the body is the same reply as JSON."},
     .summary = "Begin connecting the caller to a provider."},
    {.operation_id = "completeConnect",
     .method = EDGE_GET,
     .path = CRED "/oauth/{provider_key}/callback",
     .service = CONNECTIONS,
     .rpc = "CompleteConnect",
     PATH(p_provider_key),
     QUERY(q_callback),
     .status = 200,
     .redirect = {.to = EDGE_REDIRECT_UI_PATH,
                  .status = 303,
                  .field = "return_to",
                  .description = "When CREDEX_EDGE_UI_URL is set: Location is that URL followed "
                                 "by the return_to given at connect (the body is the same reply "
                                 "as JSON); else 200. Never a token."},
     .summary = "Complete a consent: the UI relays the provider's callback with the user's "
                "bearer token."},
    /* provider connections */
    {.operation_id = "listConnections",
     .method = EDGE_GET,
     .path = CONNX,
     .service = CONNECTIONS,
     .rpc = "ListConnections",
     QUERY(q_connections),
     .status = 200,
     .summary = "The caller's provider connections."},
    {.operation_id = "getConnection",
     .method = EDGE_GET,
     .path = CONNX "/{connection_id}",
     .service = CONNECTIONS,
     .rpc = "GetConnection",
     PATH(p_connection_id),
     .status = 200,
     .summary = "One of the caller's connections."},
    {.operation_id = "disconnect",
     .method = EDGE_DELETE,
     .path = CONNX "/{connection_id}",
     .service = CONNECTIONS,
     .rpc = "Disconnect",
     PATH(p_connection_id),
     .status = 200,
     .summary = "Disconnect: revoke at the provider and forget the tokens."},
    {.operation_id = "reconnect",
     .method = EDGE_POST,
     .path = CONNX "/{connection_id}/reconnect",
     .service = CONNECTIONS,
     .rpc = "Reconnect",
     PATH(p_connection_id),
     .body = true,
     .status = 200,
     .summary = "Start a new consent for an existing connection."},
    /* audit */
    {.operation_id = "queryAuditEvents",
     .method = EDGE_GET,
     .path = CRED "/audit",
     .service = AUDIT,
     .rpc = "QueryAuditEvents",
     QUERY(q_audit),
     .status = 200,
     .summary = "Audit events, newest first (admins; users: with audit on the secret)."},
    {.operation_id = "adminQueryAuditEvents",
     .method = EDGE_GET,
     .path = "/api/admin/credentials/audit",
     .service = AUDIT,
     .rpc = "QueryAuditEvents",
     QUERY(q_audit),
     .status = 200,
     .summary = "The global credential audit (platform admins)."},
    /* migration preview */
    {.operation_id = "startMigrationPreview",
     .method = EDGE_POST,
     .path = CRED "/migrations/preview",
     .service = ADMIN,
     .rpc = "StartMigrationPreview",
     .body = true,
     .status = 200,
     .summary = "Scan credential-shaped sources and record findings (admins)."},
    {.operation_id = "listMigrationPreviews",
     .method = EDGE_GET,
     .path = CRED "/migrations/preview",
     .service = ADMIN,
     .rpc = "ListMigrationPreviews",
     QUERY(q_migrations),
     .status = 200,
     .summary = "Recorded migration findings (admins)."},
};

const edge_route_t *edge_routes(size_t *count)
{
    *count = sizeof(edge_route_table) / sizeof(edge_route_table[0]);
    return edge_route_table;
}

const ProtobufCMethodDescriptor *edge_route_rpc(const edge_route_t *route)
{
    return route != NULL
               ? protobuf_c_service_descriptor_get_method_by_name(route->service, route->rpc)
               : NULL;
}

const ProtobufCFieldDescriptor *edge_field_path(const ProtobufCMessageDescriptor *desc,
                                                const char *path,
                                                const ProtobufCMessageDescriptor **holder)
{
    char name[128];
    for (const char *p = path; desc != NULL && p != NULL;) {
        size_t n = strcspn(p, ".");
        if (n == 0 || n >= sizeof(name))
            return NULL;
        memcpy(name, p, n);
        name[n] = '\0';
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(desc, name);
        if (f == NULL)
            return NULL;
        if (p[n] == '\0') {
            if (holder != NULL)
                *holder = desc;
            return f;
        }
        if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label == PROTOBUF_C_LABEL_REPEATED ||
            (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
            return NULL;
        desc = f->descriptor;
        p += n + 1;
    }
    return NULL;
}

/* ---- matching --------------------------------------------------------------------------- */

/* Does the template fit the path? *score ranks it (a literal segment at position i is worth
 * more than any number of literals after it); params receives the {param} values in order. */
static bool template_fits(const char *tpl, const edge_path_t *path, uint32_t *score,
                          const char **params)
{
    uint32_t s = 0;
    size_t i = 0, k = 0;
    const char *t = tpl + 1; /* after the leading '/' */
    for (;; i++) {
        size_t n = strcspn(t, "/");
        if (i >= path->n)
            return false;
        const char *seg = path->seg[i];
        if (t[0] == '{') {
            if (seg[0] == '\0')
                return false;
            params[k++] = seg;
        } else {
            if (strlen(seg) != n || memcmp(seg, t, n) != 0)
                return false;
            s |= 1u << (EDGE_MAX_SEGMENTS - 1 - i);
        }
        if (t[n] == '\0')
            break;
        t += n + 1;
    }
    if (i + 1 != path->n)
        return false;
    *score = s;
    return true;
}

void edge_route_match(const edge_path_t *path, edge_method_t method, edge_match_t *out)
{
    size_t count = 0;
    const edge_route_t *routes = edge_routes(&count);
    const char *params[EDGE_MAX_SEGMENTS];
    uint32_t best = 0;
    memset(out, 0, sizeof(*out));
    for (size_t r = 0; r < count; r++) {
        uint32_t score = 0;
        if (!template_fits(routes[r].path, path, &score, params))
            continue;
        if (out->template_ != NULL && strcmp(routes[r].path, out->template_) != 0) {
            if (score <= best)
                continue;
            out->route = NULL; /* a more specific template: start over with it */
            out->allowed = 0;
        }
        best = score;
        out->template_ = routes[r].path;
        out->allowed |= 1u << routes[r].method;
        if (routes[r].method == method) {
            out->route = &routes[r];
            memcpy(out->params, params, sizeof(params[0]) * routes[r].n_path_params);
        }
    }
}

/* ---- binding values to fields ------------------------------------------------------------ */

static bool differs(const char *param, cx_error_t *err)
{
    return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: differs from the value in the body",
                        param);
}

/* Plain decimal, '-' only when min < 0; the range is [min, max] (signed) or [0, umax]. */
static bool parse_decimal(const char *s, bool is_signed, int64_t min, uint64_t umax, int64_t *sv,
                          uint64_t *uv)
{
    bool neg = false;
    uint64_t v = 0;
    if (is_signed && *s == '-') {
        neg = true;
        s++;
    }
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return false;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (!is_signed) {
        if (v > umax)
            return false;
        *uv = v;
        return true;
    }
    if (neg) {
        if (v > (uint64_t)INT64_MAX + 1 || (v > 0 && -(int64_t)(v - 1) - 1 < min))
            return false;
        *sv = v == 0 ? 0 : -(int64_t)(v - 1) - 1;
        return true;
    }
    if (v > umax)
        return false;
    *sv = (int64_t)v;
    return true;
}

static bool set_integer(void *member, const ProtobufCFieldDescriptor *f, const char *value,
                        const char *param, cx_error_t *err)
{
    int64_t sv = 0;
    uint64_t uv = 0;
    bool ok;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        ok = parse_decimal(value, true, INT32_MIN, INT32_MAX, &sv, &uv);
        if (!ok)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "%s: expected an integer in %" PRId32 "..%" PRId32, param,
                                INT32_MIN, INT32_MAX);
        if (*(int32_t *)member != 0 && *(int32_t *)member != (int32_t)sv)
            return differs(param, err);
        *(int32_t *)member = (int32_t)sv;
        return true;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        ok = parse_decimal(value, false, 0, UINT32_MAX, &sv, &uv);
        if (!ok)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "%s: expected an integer in 0..%" PRIu32, param, UINT32_MAX);
        if (*(uint32_t *)member != 0 && *(uint32_t *)member != (uint32_t)uv)
            return differs(param, err);
        *(uint32_t *)member = (uint32_t)uv;
        return true;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        ok = parse_decimal(value, true, INT64_MIN, INT64_MAX, &sv, &uv);
        if (!ok)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "%s: expected an integer in %" PRId64 "..%" PRId64, param,
                                INT64_MIN, INT64_MAX);
        if (*(int64_t *)member != 0 && *(int64_t *)member != sv)
            return differs(param, err);
        *(int64_t *)member = sv;
        return true;
    default: /* UINT64, FIXED64 */
        ok = parse_decimal(value, false, 0, UINT64_MAX, &sv, &uv);
        if (!ok)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "%s: expected an integer in 0..%" PRIu64, param, UINT64_MAX);
        if (*(uint64_t *)member != 0 && *(uint64_t *)member != uv)
            return differs(param, err);
        *(uint64_t *)member = uv;
        return true;
    }
}

static bool set_scalar(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, const char *value,
                       const char *param, rpc_arena_t *arena, cx_error_t *err)
{
    void *member = (char *)m + f->offset;
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        char **s = member;
        if (*s != NULL && (*s)[0] != '\0' && strcmp(*s, value) != 0)
            return differs(param, err);
        *s = rpc_arena_strndup(arena, value, strlen(value));
        return true;
    }
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value_by_name(ed, value);
        if (ev == NULL)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: expected a value name of %s",
                                param, ed->name);
        int *cur = member;
        if (*cur != 0 && *cur != ev->value)
            return differs(param, err);
        *cur = ev->value;
        return true;
    }
    case PROTOBUF_C_TYPE_BOOL: {
        protobuf_c_boolean *b = member;
        bool v;
        if (strcmp(value, "true") == 0)
            v = true;
        else if (strcmp(value, "false") == 0)
            v = false;
        else
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: expected true or false", param);
        if (*b && !v)
            return differs(param, err);
        *b = v;
        return true;
    }
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return set_integer(member, f, value, param, err);
    default:
        return cx_error_set(err, CX_ERR_INTERNAL, "%s: the route binds a field of another type",
                            param);
    }
}

bool edge_field_set(ProtobufCMessage *msg, const char *field_path, const char *value,
                    const char *param, rpc_arena_t *arena, cx_error_t *err)
{
    char name[128];
    ProtobufCMessage *m = msg;
    for (const char *p = field_path;;) {
        size_t n = strcspn(p, ".");
        if (n == 0 || n >= sizeof(name))
            break;
        memcpy(name, p, n);
        name[n] = '\0';
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
        if (f == NULL || f->label == PROTOBUF_C_LABEL_REPEATED ||
            (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
            break;
        if (p[n] == '\0') {
            if (f->type == PROTOBUF_C_TYPE_MESSAGE || f->type == PROTOBUF_C_TYPE_BYTES)
                break;
            if (!set_scalar(m, f, value, param, arena, err))
                return false;
            /* proto3 `optional` scalars (none today) keep presence in a has_ member. */
            if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING)
                *(protobuf_c_boolean *)((char *)m + f->quantifier_offset) = 1;
            return true;
        }
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            break;
        ProtobufCMessage **sub = (ProtobufCMessage **)((char *)m + f->offset);
        if (*sub == NULL) {
            const ProtobufCMessageDescriptor *d = f->descriptor;
            *sub = rpc_arena_alloc(arena, d->sizeof_message);
            protobuf_c_message_init(d, *sub);
        }
        m = *sub;
        p += n + 1;
    }
    return cx_error_set(err, CX_ERR_INTERNAL, "%s: the route binds no usable field", param);
}

/* ---- the request message ----------------------------------------------------------------- */

bool edge_request_build(const edge_route_t *route, const edge_match_t *match,
                        const edge_query_t *query, const char *body, size_t body_len,
                        size_t max_body, rpc_arena_t *arena, ProtobufCMessage **out,
                        cx_error_t *err)
{
    const ProtobufCMethodDescriptor *md = edge_route_rpc(route);
    ProtobufCMessage *msg = NULL;
    if (md == NULL)
        return cx_error_set(err, CX_ERR_INTERNAL, "the route names no gateway method");
    if (route->body) {
        ProtobufCAllocator alloc = rpc_arena_allocator(arena);
        pjson_options_t o = {.max_bytes = max_body};
        if (body == NULL || body_len == 0) {
            body = "{}";
            body_len = 2;
        }
        if (!pjson_decode(&msg, md->input, body, body_len, &alloc, &o, err))
            return false;
    } else {
        msg = rpc_arena_alloc(arena, md->input->sizeof_message);
        protobuf_c_message_init(md->input, msg);
    }
    for (size_t i = 0; i < route->n_fixed; i++)
        if (!edge_field_set(msg, route->fixed[i].field, route->fixed[i].value,
                            route->fixed[i].field, arena, err))
            return false;
    for (size_t i = 0; i < route->n_path_params; i++)
        if (!edge_field_set(msg, route->path_params[i].field, match->params[i],
                            route->path_params[i].name, arena, err))
            return false;
    for (size_t i = 0; query != NULL && i < query->n; i++) {
        const edge_param_t *p = NULL;
        for (size_t j = 0; j < route->n_query_params && p == NULL; j++)
            if (strcmp(route->query_params[j].name, query->item[i].name) == 0)
                p = &route->query_params[j];
        /* The name is the client's input: not repeated in the message. */
        if (p == NULL)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "a query parameter is not known on this route");
        if (!edge_field_set(msg, p->field, query->item[i].value, p->name, arena, err))
            return false;
    }
    *out = msg;
    return true;
}

/* ---- redirects ------------------------------------------------------------------------------ */

/* Printable ASCII without spaces or backslashes: nothing a header could be split on, nothing a
 * browser would read as another path separator. */
static bool location_chars_ok(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f || *s == '\\')
            return false;
    return true;
}

bool edge_redirect_location(const edge_route_t *route, const ProtobufCMessage *reply,
                            const char *ui_url, char *buf, size_t bufsz, bool *replaced,
                            cx_error_t *err)
{
    const edge_redirect_t *rd = &route->redirect;
    *replaced = false;
    buf[0] = '\0';
    if (rd->to == EDGE_REDIRECT_NONE || (rd->to == EDGE_REDIRECT_UI_PATH && ui_url[0] == '\0'))
        return true;
    const ProtobufCFieldDescriptor *f = edge_field_path(reply->descriptor, rd->field, NULL);
    if (f == NULL || f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED)
        return cx_error_set(err, CX_ERR_INTERNAL, "the route redirects from no string field");
    const char *v = *(char *const *)((const char *)reply + f->offset);
    v = v != NULL ? v : "";
    int n;
    if (rd->to == EDGE_REDIRECT_URL) {
        if (strncmp(v, "https://", 8) != 0 || v[8] == '\0' || !location_chars_ok(v))
            return cx_error_set(err, CX_ERR_INTERNAL, "the redirect URL is not an https URL");
        n = snprintf(buf, bufsz, "%s", v);
    } else {
        /* return_to came from the client at connect: only a path on the UI's own origin. */
        if (v[0] == '\0' || v[0] != '/' || v[1] == '/' || !location_chars_ok(v)) {
            *replaced = v[0] != '\0';
            v = "/";
        }
        size_t ul = strlen(ui_url);
        n = snprintf(buf, bufsz, "%.*s%s", (int)(ul > 0 && ui_url[ul - 1] == '/' ? ul - 1 : ul),
                     ui_url, v);
    }
    if (n < 0 || (size_t)n >= bufsz) {
        buf[0] = '\0';
        return cx_error_set(err, CX_ERR_INTERNAL, "the redirect location is too long");
    }
    return true;
}
