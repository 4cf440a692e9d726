/*
 * credex.v1.Secrets: the user-facing lifecycle. Each method is a step of gateway_run (gateway.c),
 * which has already authenticated the caller and checked the request's contract, and audits any
 * failure decided here: a method asks OpenFGA for the permission gateway.proto names and only
 * then forwards to store. A caller without read_metadata gets exactly the not_found of a
 * nonexistent secret, so ids cannot be probed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/contract/cx_contract.h"
#include "common/log/cx_log.h"
#include "credex/v1/gateway.pb-c.h"
#include "credex/v1/store.pb-c.h"
#include "services/gateway/gateway_internal.h"

#define NOT_FOUND_MSG "secret not found"
#define PLATFORM_OBJ  "platform:credex"
#define SHARES_MAX    1000

static const ProtobufCServiceDescriptor *const store_svc =
    &credex__v1__credential_store__descriptor;

/* ---- common steps ----------------------------------------------------------------------- */

static void fga_name(char *buf, size_t bufsz, const char *type, const char *id)
{
    snprintf(buf, bufsz, "%s:%s", type, id);
}

/* Does the caller's user hold `relation` on the secret? */
static bool secrets_authorize(gateway_req_t *r, const char *secret_id, const char *relation,
                              cx_error_t *err)
{
    char user[CX_FGA_NAME_MAX];
    fga_name(user, sizeof(user), "user", r->caller.user_id);
    return gateway_authorize_secret(r, user, secret_id, relation, err);
}

/* Store answers are passed on, with store's not_found normalised to ours (one message for
 * "absent" and "hidden"). */
static bool store_call(gateway_req_t *r, const char *method, const ProtobufCMessage *req,
                       ProtobufCMessage **reply, cx_error_t *err)
{
    if (gateway_forward(r, r->gw->store, store_svc, method, req, reply, err))
        return true;
    if (err && err->code == CX_ERR_NOT_FOUND)
        cx_error_set(err, CX_ERR_NOT_FOUND, NOT_FOUND_MSG);
    return false;
}

static bool user_kind_ok(Credex__V1__SecretKind k)
{
    return k == CREDEX__V1__SECRET_KIND__SECRET_KIND_API_KEY ||
           k == CREDEX__V1__SECRET_KIND__SECRET_KIND_TOKEN ||
           k == CREDEX__V1__SECRET_KIND__SECRET_KIND_PASSWORD ||
           k == CREDEX__V1__SECRET_KIND__SECRET_KIND_GENERIC;
}

/* The caller's `relation` ("member" or "admin") on team:<team>. */
static bool team_check(gateway_req_t *r, const char *team, const char *relation, bool *allowed,
                       cx_error_t *err)
{
    char user[CX_FGA_NAME_MAX], obj[CX_FGA_NAME_MAX];
    fga_name(user, sizeof(user), "user", r->caller.user_id);
    fga_name(obj, sizeof(obj), "team", team);
    return gateway_fga_check(r->gw, user, relation, obj, allowed, err);
}

/* ---- CreateSecret ------------------------------------------------------------------------ */

static bool secrets_create(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__CreateSecretRequest *req =
        (const Credex__V1__CreateSecretRequest *)r->request;
    rpc_call_t *call = r->call;
    const gateway_caller_t *c = &r->caller;
    if (!user_kind_ok(req->kind))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "kind must be api_key, token, password or generic");

    /* Whose secret: the caller's own, or a team's the caller administers. */
    Credex__V1__Owner *owner = rpc_call_alloc(call, sizeof(*owner));
    credex__v1__owner__init(owner);
    char owner_fga[CX_FGA_NAME_MAX];
    Credex__V1__OwnerType ot =
        req->owner ? req->owner->owner_type : CREDEX__V1__OWNER_TYPE__OWNER_TYPE_UNSPECIFIED;
    const char *oid = req->owner ? req->owner->owner_id : "";
    if (ot == CREDEX__V1__OWNER_TYPE__OWNER_TYPE_UNSPECIFIED ||
        ot == CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER) {
        if (oid[0] && strcmp(oid, c->user_id) != 0)
            return cx_error_set(err, CX_ERR_PERMISSION_DENIED,
                                "users create secrets for themselves only");
        owner->owner_type = CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER;
        owner->owner_id = gateway_strdup(call, c->user_id);
        fga_name(owner_fga, sizeof(owner_fga), "user", c->user_id);
    } else if (ot == CREDEX__V1__OWNER_TYPE__OWNER_TYPE_TEAM) {
        if (!oid[0])
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "owner.owner_id is required");
        /* gateway.proto and docs/REQUIREMENTS.md (US1): team secrets are created by the team's admins;
         * members then use them through the team's owner relation. */
        bool admin = false;
        if (!team_check(r, oid, "admin", &admin, err))
            return false;
        if (!admin)
            return cx_error_set(err, CX_ERR_PERMISSION_DENIED, "not an admin of this team");
        owner->owner_type = ot;
        owner->owner_id = (char *)oid;
        snprintf(owner_fga, sizeof(owner_fga), "team:%s#member", oid);
    } else {
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "owner must be a user or a team");
    }

    Credex__V1__StoreCreateSecretRequest sreq = CREDEX__V1__STORE_CREATE_SECRET_REQUEST__INIT;
    sreq.caller = gateway_caller_context(r, NULL, NULL);
    sreq.idempotency_key = req->idempotency_key;
    sreq.owner = owner;
    sreq.kind = req->kind;
    sreq.display_name = req->display_name;
    sreq.description = req->description;
    sreq.provider = req->provider;
    sreq.n_allowed_uses = req->n_allowed_uses;
    sreq.allowed_uses = req->allowed_uses;
    sreq.value = req->value;
    Credex__V1__StoreCreateSecretResponse *sr = NULL;
    if (!store_call(r, "CreateSecret", &sreq.base, (ProtobufCMessage **)&sr, err))
        return false;
    if (!sr->secret || !cx_contract_check_value("secret_id", sr->secret->secret_id, true, NULL))
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "credential store sent a malformed answer");

    /* The owner tuple comes after the secret exists. If writing it fails the client retries
     * with the same idempotency key: store replays the secret and this write completes. */
    char obj[CX_FGA_NAME_MAX];
    fga_name(obj, sizeof(obj), "secret_ref", sr->secret->secret_id);
    cx_fga_tuple_t t[2];
    cx_error_t ferr;
    cx_error_clear(&ferr);
    if (!cx_fga_tuple_set(&t[0], owner_fga, "owner", obj) ||
        !cx_fga_tuple_set(&t[1], PLATFORM_OBJ, "platform", obj) ||
        !cx_fga_write(r->gw->fga, t, 2, NULL, 0, &ferr)) {
        cx_log_error(rpc_call_correlation_id(call), "gateway.owner_tuple_failed",
                     CX_LOG_STR("secret_id", sr->secret->secret_id),
                     CX_LOG_STR("reason", ferr.message));
        return cx_error_set(err, CX_ERR_UNAVAILABLE,
                            "policy service is unavailable: retry with the same idempotency_key");
    }
    Credex__V1__CreateSecretResponse *resp = rpc_call_alloc(call, sizeof(*resp));
    credex__v1__create_secret_response__init(resp);
    resp->secret = sr->secret;
    resp->created = sr->created;
    *reply = &resp->base;
    return true;
}

/* ---- ListSecrets ------------------------------------------------------------------------- */

static bool owner_is(const Credex__V1__Owner *o, Credex__V1__OwnerType t, const char *id)
{
    return o && o->owner_type == t && o->owner_id && strcmp(o->owner_id, id) == 0;
}

static bool secrets_list(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__ListSecretsRequest *req = (const Credex__V1__ListSecretsRequest *)r->request;
    rpc_call_t *call = r->call;
    const gateway_t *gw = r->gw;
    const gateway_caller_t *c = &r->caller;
    bool ok = false;
    char **ids = NULL, **teams = NULL;
    size_t nids = 0, nteams = 0;
    char user[CX_FGA_NAME_MAX];
    fga_name(user, sizeof(user), "user", c->user_id);
    const Credex__V1__Owner *narrow =
        req->owner && req->owner->owner_type != CREDEX__V1__OWNER_TYPE__OWNER_TYPE_UNSPECIFIED
            ? req->owner
            : NULL;
    if (narrow && !narrow->owner_id[0])
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "owner.owner_id is required");

    Credex__V1__StoreListSecretsRequest sreq = CREDEX__V1__STORE_LIST_SECRETS_REQUEST__INIT;
    sreq.caller = gateway_caller_context(r, NULL, NULL);
    sreq.kind = req->kind;
    sreq.status = req->status;
    sreq.provider = req->provider;
    sreq.page = req->page;
    Credex__V1__Owner *owners[1], **excl = NULL, *excl_items = NULL;
    Credex__V1__Owner me = CREDEX__V1__OWNER__INIT;
    cx_error_t ferr;
    cx_error_clear(&ferr);

    switch (req->scope) {
    case CREDEX__V1__LIST_SECRETS_SCOPE__LIST_SECRETS_SCOPE_ALL: {
        bool admin = false;
        if (!gateway_fga_check(gw, user, "admin", PLATFORM_OBJ, &admin, err))
            goto out;
        if (!admin) {
            cx_error_set(err, CX_ERR_PERMISSION_DENIED, "scope ALL is for platform admins");
            goto out;
        }
        if (narrow) {
            owners[0] = (Credex__V1__Owner *)narrow;
            sreq.owners = owners;
            sreq.n_owners = 1;
        }
        break;
    }
    case CREDEX__V1__LIST_SECRETS_SCOPE__LIST_SECRETS_SCOPE_OWNED:
        if (narrow && narrow->owner_type == CREDEX__V1__OWNER_TYPE__OWNER_TYPE_TEAM) {
            bool member = false;
            if (!team_check(r, narrow->owner_id, "member", &member, err))
                goto out;
            if (!member) {
                cx_error_set(err, CX_ERR_PERMISSION_DENIED, "not a member of that team");
                goto out;
            }
            owners[0] = (Credex__V1__Owner *)narrow;
        } else if (narrow &&
                   !owner_is(narrow, CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER, c->user_id)) {
            cx_error_set(err, CX_ERR_PERMISSION_DENIED, "owner must be you or one of your teams");
            goto out;
        } else {
            me.owner_type = CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER;
            me.owner_id = (char *)c->user_id;
            owners[0] = &me;
        }
        sreq.owners = owners;
        sreq.n_owners = 1;
        break;
    case CREDEX__V1__LIST_SECRETS_SCOPE__LIST_SECRETS_SCOPE_UNSPECIFIED:
    case CREDEX__V1__LIST_SECRETS_SCOPE__LIST_SECRETS_SCOPE_ACCESSIBLE:
    case CREDEX__V1__LIST_SECRETS_SCOPE__LIST_SECRETS_SCOPE_SHARED_WITH_ME:
        if (!gw->fga || !cx_fga_list_objects(gw->fga, user, "read_metadata", "secret_ref", &ids,
                                             &nids, &ferr)) {
            cx_log_warn(rpc_call_correlation_id(call), "gateway.policy_failed",
                        CX_LOG_STR("relation", "read_metadata"),
                        CX_LOG_STR("reason", ferr.message));
            cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service is unavailable");
            goto out;
        }
        if (req->scope == CREDEX__V1__LIST_SECRETS_SCOPE__LIST_SECRETS_SCOPE_SHARED_WITH_ME &&
            !cx_fga_list_objects(gw->fga, user, "member", "team", &teams, &nteams, &ferr)) {
            cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service is unavailable");
            goto out;
        }
        if (nids == 0) {
            /* Empty owners and ids would mean "every secret" to store. */
            Credex__V1__ListSecretsResponse *empty = rpc_call_alloc(call, sizeof(*empty));
            credex__v1__list_secrets_response__init(empty);
            *reply = &empty->base;
            ok = true;
            goto out;
        }
        sreq.secret_ids = ids;
        sreq.n_secret_ids = nids;
        /* Narrowing and exclusion go to store, which applies them before it cuts the page. */
        sreq.require_owner = (Credex__V1__Owner *)narrow;
        if (req->scope == CREDEX__V1__LIST_SECRETS_SCOPE__LIST_SECRETS_SCOPE_SHARED_WITH_ME) {
            /* Shared with me: neither mine nor my teams'. */
            excl = rpc_call_alloc(call, (nteams + 1) * sizeof(*excl));
            excl_items = rpc_call_alloc(call, (nteams + 1) * sizeof(*excl_items));
            for (size_t t = 0; t <= nteams; t++) {
                credex__v1__owner__init(&excl_items[t]);
                excl_items[t].owner_type = t == 0 ? CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER
                                                  : CREDEX__V1__OWNER_TYPE__OWNER_TYPE_TEAM;
                excl_items[t].owner_id = t == 0 ? (char *)c->user_id : teams[t - 1];
                excl[t] = &excl_items[t];
            }
            sreq.exclude_owners = excl;
            sreq.n_exclude_owners = nteams + 1;
        }
        break;
    default: /* the contract admits only the enum's values */
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "unknown scope");
        goto out;
    }

    Credex__V1__StoreListSecretsResponse *sr = NULL;
    if (!store_call(r, "ListSecrets", &sreq.base, (ProtobufCMessage **)&sr, err))
        goto out;
    Credex__V1__ListSecretsResponse *resp = rpc_call_alloc(call, sizeof(*resp));
    credex__v1__list_secrets_response__init(resp);
    resp->secrets = sr->secrets;
    resp->n_secrets = sr->n_secrets;
    resp->page = sr->page;
    *reply = &resp->base;
    ok = true;
out:
    cx_fga_strv_free(ids, nids);
    cx_fga_strv_free(teams, nteams);
    return ok;
}

/* ---- single-secret methods --------------------------------------------------------------- */

static bool secrets_get(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__GetSecretRequest *req = (const Credex__V1__GetSecretRequest *)r->request;
    if (!secrets_authorize(r, req->secret_id, "read_metadata", err))
        return false;
    Credex__V1__StoreGetSecretRequest sreq = CREDEX__V1__STORE_GET_SECRET_REQUEST__INIT;
    sreq.caller = gateway_caller_context(r, NULL, NULL);
    sreq.secret_id = req->secret_id;
    return store_call(r, "GetSecret", &sreq.base, reply, err);
}

/* The mask names fields this method may change, and each named field is then required to be
 * valid as set (the contract already checked the shape of every field). */
static bool update_mask_ok(const Credex__V1__UpdateSecretRequest *req, cx_error_t *err)
{
    for (size_t i = 0; i < req->n_update_mask; i++) {
        const char *f = req->update_mask[i];
        if (strcmp(f, "display_name") == 0) {
            if (!cx_contract_check_value("display_name", req->display_name, true, err))
                return false;
        } else if (strcmp(f, "description") != 0 && strcmp(f, "allowed_uses") != 0) {
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "update_mask entries: display_name, description, allowed_uses");
        }
    }
    return true;
}

static bool secrets_update(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__UpdateSecretRequest *req =
        (const Credex__V1__UpdateSecretRequest *)r->request;
    if (!update_mask_ok(req, err) || !secrets_authorize(r, req->secret_id, "manage", err))
        return false;
    Credex__V1__StoreUpdateSecretRequest sreq = CREDEX__V1__STORE_UPDATE_SECRET_REQUEST__INIT;
    sreq.caller = gateway_caller_context(r, NULL, NULL);
    sreq.secret_id = req->secret_id;
    sreq.display_name = req->display_name;
    sreq.description = req->description;
    sreq.n_allowed_uses = req->n_allowed_uses;
    sreq.allowed_uses = req->allowed_uses;
    sreq.n_update_mask = req->n_update_mask;
    sreq.update_mask = req->update_mask;
    return store_call(r, "UpdateSecret", &sreq.base, reply, err);
}

static bool secrets_rotate(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__RotateSecretRequest *req =
        (const Credex__V1__RotateSecretRequest *)r->request;
    if (!secrets_authorize(r, req->secret_id, "manage", err))
        return false;
    Credex__V1__StoreRotateSecretRequest sreq = CREDEX__V1__STORE_ROTATE_SECRET_REQUEST__INIT;
    sreq.caller = gateway_caller_context(r, NULL, NULL);
    sreq.secret_id = req->secret_id;
    sreq.expected_version = req->expected_version;
    sreq.value = req->value;
    Credex__V1__StoreRotateSecretResponse *sr = NULL;
    if (!store_call(r, "RotateSecret", &sreq.base, (ProtobufCMessage **)&sr, err))
        return false;
    Credex__V1__RotateSecretResponse *resp = rpc_call_alloc(r->call, sizeof(*resp));
    credex__v1__rotate_secret_response__init(resp);
    resp->secret = sr->secret;
    resp->version = sr->version;
    *reply = &resp->base;
    return true;
}

static bool secrets_versions(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__ListSecretVersionsRequest *req =
        (const Credex__V1__ListSecretVersionsRequest *)r->request;
    if (!secrets_authorize(r, req->secret_id, "read_metadata", err))
        return false;
    Credex__V1__StoreListVersionsRequest sreq = CREDEX__V1__STORE_LIST_VERSIONS_REQUEST__INIT;
    sreq.caller = gateway_caller_context(r, NULL, NULL);
    sreq.secret_id = req->secret_id;
    sreq.page = req->page;
    Credex__V1__StoreListVersionsResponse *sr = NULL;
    if (!store_call(r, "ListVersions", &sreq.base, (ProtobufCMessage **)&sr, err))
        return false;
    Credex__V1__ListSecretVersionsResponse *resp = rpc_call_alloc(r->call, sizeof(*resp));
    credex__v1__list_secret_versions_response__init(resp);
    resp->versions = sr->versions;
    resp->n_versions = sr->n_versions;
    resp->page = sr->page;
    *reply = &resp->base;
    return true;
}

static bool secrets_revoke(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__RevokeSecretRequest *req =
        (const Credex__V1__RevokeSecretRequest *)r->request;
    if (!secrets_authorize(r, req->secret_id, "manage", err))
        return false;
    Credex__V1__StoreRevokeSecretRequest sreq = CREDEX__V1__STORE_REVOKE_SECRET_REQUEST__INIT;
    sreq.caller = gateway_caller_context(r, NULL, NULL);
    sreq.secret_id = req->secret_id;
    sreq.reason = req->reason;
    return store_call(r, "RevokeSecret", &sreq.base, reply, err);
}

/* Remove every grant on the secret. The owner and platform links stay: they let the owner (and
 * platform admins) see the tombstone and repeat the delete idempotently, and grant nothing else,
 * since store never resolves a deleted secret. */
static bool drop_grants(const gateway_t *gw, const char *obj, cx_error_t *err)
{
    cx_fga_tuple_t *t = NULL;
    size_t n = 0, keep = 0;
    bool ok = cx_fga_read(gw->fga, obj, NULL, NULL, SHARES_MAX, &t, &n, err);
    for (size_t i = 0; ok && i < n; i++)
        if (strcmp(t[i].relation, "owner") != 0 && strcmp(t[i].relation, "platform") != 0)
            t[keep++] = t[i];
    for (size_t i = 0; ok && i < keep; i += 100)
        ok = cx_fga_write(gw->fga, NULL, 0, t + i, keep - i > 100 ? 100 : keep - i, err);
    free(t);
    return ok;
}

static bool secrets_delete(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__DeleteSecretRequest *req =
        (const Credex__V1__DeleteSecretRequest *)r->request;
    if (!secrets_authorize(r, req->secret_id, "manage", err))
        return false;
    Credex__V1__StoreDeleteSecretRequest sreq = CREDEX__V1__STORE_DELETE_SECRET_REQUEST__INIT;
    sreq.caller = gateway_caller_context(r, NULL, NULL);
    sreq.secret_id = req->secret_id;
    if (!store_call(r, "DeleteSecret", &sreq.base, reply, err))
        return false;
    /* Grants go after the tombstone: if this fails, a retry still passes the manage check
     * (store's delete is idempotent) and finishes the job. */
    char obj[CX_FGA_NAME_MAX];
    fga_name(obj, sizeof(obj), "secret_ref", req->secret_id);
    cx_error_t ferr;
    cx_error_clear(&ferr);
    if (!drop_grants(r->gw, obj, &ferr)) {
        cx_log_error(rpc_call_correlation_id(r->call), "gateway.tuple_cleanup_failed",
                     CX_LOG_STR("secret_id", req->secret_id), CX_LOG_STR("reason", ferr.message));
        return cx_error_set(err, CX_ERR_UNAVAILABLE,
                            "secret deleted, but its grants could not be removed: retry");
    }
    return true;
}

/* ---- sharing ----------------------------------------------------------------------------- */

static const char *role_relation(Credex__V1__ShareRole r)
{
    switch (r) {
    case CREDEX__V1__SHARE_ROLE__SHARE_ROLE_USER:
        return "user";
    case CREDEX__V1__SHARE_ROLE__SHARE_ROLE_MANAGER:
        return "manager";
    case CREDEX__V1__SHARE_ROLE__SHARE_ROLE_AUDITOR:
        return "auditor";
    case CREDEX__V1__SHARE_ROLE__SHARE_ROLE_OWNER:
        return "owner";
    default:
        return NULL;
    }
}

static Credex__V1__ShareRole relation_role(const char *rel)
{
    if (strcmp(rel, "user") == 0)
        return CREDEX__V1__SHARE_ROLE__SHARE_ROLE_USER;
    if (strcmp(rel, "manager") == 0)
        return CREDEX__V1__SHARE_ROLE__SHARE_ROLE_MANAGER;
    if (strcmp(rel, "auditor") == 0)
        return CREDEX__V1__SHARE_ROLE__SHARE_ROLE_AUDITOR;
    if (strcmp(rel, "owner") == 0)
        return CREDEX__V1__SHARE_ROLE__SHARE_ROLE_OWNER;
    return CREDEX__V1__SHARE_ROLE__SHARE_ROLE_UNSPECIFIED;
}

/* OpenFGA user string of a grantee (its fields passed the contract). */
static bool grantee_fga(const Credex__V1__Grantee *g, char *buf, size_t bufsz, cx_error_t *err)
{
    switch (g->grantee_type) {
    case CREDEX__V1__GRANTEE_TYPE__GRANTEE_TYPE_USER:
        snprintf(buf, bufsz, "user:%s", g->grantee_id);
        return true;
    case CREDEX__V1__GRANTEE_TYPE__GRANTEE_TYPE_TEAM:
        snprintf(buf, bufsz, "team:%s#member", g->grantee_id);
        return true;
    case CREDEX__V1__GRANTEE_TYPE__GRANTEE_TYPE_SERVICE:
        snprintf(buf, bufsz, "service:%s", g->grantee_id);
        return true;
    default:
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "grantee_type must be user, team or service");
    }
}

/* The inverse: NULL for users we do not list (e.g. the platform link). */
static Credex__V1__Grantee *grantee_from_fga(rpc_call_t *call, const char *u)
{
    Credex__V1__GranteeType t;
    const char *id;
    size_t len;
    if (strncmp(u, "user:", 5) == 0) {
        t = CREDEX__V1__GRANTEE_TYPE__GRANTEE_TYPE_USER;
        id = u + 5;
        len = strlen(id);
    } else if (strncmp(u, "service:", 8) == 0) {
        t = CREDEX__V1__GRANTEE_TYPE__GRANTEE_TYPE_SERVICE;
        id = u + 8;
        len = strlen(id);
    } else if (strncmp(u, "team:", 5) == 0 && strchr(u, '#') &&
               strcmp(strchr(u, '#'), "#member") == 0) {
        t = CREDEX__V1__GRANTEE_TYPE__GRANTEE_TYPE_TEAM;
        id = u + 5;
        len = (size_t)(strchr(u, '#') - id);
    } else {
        return NULL;
    }
    Credex__V1__Grantee *g = rpc_call_alloc(call, sizeof(*g));
    credex__v1__grantee__init(g);
    g->grantee_type = t;
    g->grantee_id = rpc_arena_strndup(rpc_call_arena(call), id, len);
    return g;
}

static bool secrets_share(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__ShareSecretRequest *req = (const Credex__V1__ShareSecretRequest *)r->request;
    rpc_call_t *call = r->call;
    char who[CX_FGA_NAME_MAX], obj[CX_FGA_NAME_MAX];
    const char *rel = role_relation(req->role);
    if (!grantee_fga(req->grantee, who, sizeof(who), err))
        return false;
    if (!rel || req->role == CREDEX__V1__SHARE_ROLE__SHARE_ROLE_OWNER)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "role must be user, manager or auditor");
    bool svc = req->grantee->grantee_type == CREDEX__V1__GRANTEE_TYPE__GRANTEE_TYPE_SERVICE;
    if (svc && req->role != CREDEX__V1__SHARE_ROLE__SHARE_ROLE_USER)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "a service can only be granted role user");
    if (!secrets_authorize(r, req->secret_id, "share", err))
        return false;
    fga_name(obj, sizeof(obj), "secret_ref", req->secret_id);

    Credex__V1__ShareSecretResponse *resp = rpc_call_alloc(call, sizeof(*resp));
    credex__v1__share_secret_response__init(resp);
    char **w = rpc_call_alloc(call, 3 * sizeof(char *));
    size_t nw = 0;
    char b[256];
    if (req->grantee->grantee_type == CREDEX__V1__GRANTEE_TYPE__GRANTEE_TYPE_TEAM) {
        snprintf(b, sizeof(b), "grants %s to every member of team %s", rel,
                 req->grantee->grantee_id);
        w[nw++] = gateway_strdup(call, b);
    }
    if (svc) {
        snprintf(b, sizeof(b),
                 "lets service %s retrieve the value (when it is also an allowed retriever)",
                 req->grantee->grantee_id);
        w[nw++] = gateway_strdup(call, b);
    }
    if (req->role == CREDEX__V1__SHARE_ROLE__SHARE_ROLE_MANAGER)
        w[nw++] =
            gateway_strdup(call, "a manager can rotate, revoke, delete and re-share the secret");
    resp->warnings = w;
    resp->n_warnings = nw;
    Credex__V1__SecretShare *share = rpc_call_alloc(call, sizeof(*share));
    credex__v1__secret_share__init(share);
    share->secret_id = req->secret_id;
    share->grantee = req->grantee;
    share->role = req->role;
    resp->share = share;
    if (!req->preview_only) {
        cx_fga_tuple_t t;
        cx_error_t ferr;
        cx_error_clear(&ferr);
        if (!cx_fga_tuple_set(&t, who, rel, obj) ||
            !cx_fga_write(r->gw->fga, &t, 1, NULL, 0, &ferr)) {
            cx_log_warn(rpc_call_correlation_id(call), "gateway.share_failed",
                        CX_LOG_STR("secret_id", req->secret_id),
                        CX_LOG_STR("reason", ferr.message));
            return cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service is unavailable");
        }
        /* No unaudited grant: if the record cannot be written, take the grant back. */
        if (!gateway_audit_success(r, req->secret_id, "grantee", who, err)) {
            cx_error_t derr;
            if (!cx_fga_write(r->gw->fga, NULL, 0, &t, 1, &derr))
                cx_log_error(rpc_call_correlation_id(call), "gateway.share_rollback_failed",
                             CX_LOG_STR("secret_id", req->secret_id));
            return false;
        }
        resp->applied = true;
    }
    *reply = &resp->base;
    return true;
}

static bool secrets_unshare(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__UnshareSecretRequest *req =
        (const Credex__V1__UnshareSecretRequest *)r->request;
    bool ok = false;
    cx_fga_tuple_t *t = NULL;
    size_t n = 0;
    char who[CX_FGA_NAME_MAX], obj[CX_FGA_NAME_MAX];
    if (!grantee_fga(req->grantee, who, sizeof(who), err))
        return false;
    if (req->role == CREDEX__V1__SHARE_ROLE__SHARE_ROLE_OWNER)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "the owner cannot be removed");
    const char *only = req->role == CREDEX__V1__SHARE_ROLE__SHARE_ROLE_UNSPECIFIED
                           ? NULL
                           : role_relation(req->role);
    if (!secrets_authorize(r, req->secret_id, "share", err))
        return false;
    fga_name(obj, sizeof(obj), "secret_ref", req->secret_id);
    cx_error_t ferr;
    cx_error_clear(&ferr);
    if (!cx_fga_read(r->gw->fga, obj, only, who, SHARES_MAX, &t, &n, &ferr)) {
        cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service is unavailable");
        goto out;
    }
    size_t keep = 0;
    for (size_t i = 0; i < n; i++) {
        Credex__V1__ShareRole role = relation_role(t[i].relation);
        if (role == CREDEX__V1__SHARE_ROLE__SHARE_ROLE_USER ||
            role == CREDEX__V1__SHARE_ROLE__SHARE_ROLE_MANAGER ||
            role == CREDEX__V1__SHARE_ROLE__SHARE_ROLE_AUDITOR)
            t[keep++] = t[i];
    }
    if (keep > 0) {
        if (!cx_fga_write(r->gw->fga, NULL, 0, t, keep, &ferr)) {
            cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service is unavailable");
            goto out;
        }
        /* The grant is already gone (removal is the safe direction); a failed record is
         * reported so that the caller knows the trail is incomplete. */
        if (!gateway_audit_success(r, req->secret_id, "grantee", who, err))
            goto out;
    }
    Credex__V1__UnshareSecretResponse *resp = rpc_call_alloc(r->call, sizeof(*resp));
    credex__v1__unshare_secret_response__init(resp);
    resp->removed_count = (uint32_t)keep;
    *reply = &resp->base;
    ok = true;
out:
    free(t);
    return ok;
}

static bool secrets_list_shares(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__ListSecretSharesRequest *req =
        (const Credex__V1__ListSecretSharesRequest *)r->request;
    rpc_call_t *call = r->call;
    cx_fga_tuple_t *t = NULL;
    size_t n = 0;
    if (!secrets_authorize(r, req->secret_id, "share", err))
        return false;
    char obj[CX_FGA_NAME_MAX];
    fga_name(obj, sizeof(obj), "secret_ref", req->secret_id);
    cx_error_t ferr;
    if (!cx_fga_read(r->gw->fga, obj, NULL, NULL, SHARES_MAX, &t, &n, &ferr))
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service is unavailable");
    Credex__V1__ListSecretSharesResponse *resp = rpc_call_alloc(call, sizeof(*resp));
    credex__v1__list_secret_shares_response__init(resp);
    resp->shares = rpc_call_alloc(call, (n ? n : 1) * sizeof(*resp->shares));
    for (size_t i = 0; i < n; i++) {
        Credex__V1__ShareRole role = relation_role(t[i].relation);
        Credex__V1__Grantee *g = grantee_from_fga(call, t[i].user);
        if (role == CREDEX__V1__SHARE_ROLE__SHARE_ROLE_UNSPECIFIED || !g)
            continue;
        Credex__V1__SecretShare *sh = rpc_call_alloc(call, sizeof(*sh));
        credex__v1__secret_share__init(sh);
        sh->secret_id = req->secret_id;
        sh->grantee = g;
        sh->role = role;
        resp->shares[resp->n_shares++] = sh;
    }
    free(t);
    *reply = &resp->base;
    return true;
}

/* ---- the method table -------------------------------------------------------------------- */

#define SECRET_METHOD(ev, idf, fn)                                                                 \
    {                                                                                              \
        .event_type = ev, .resource_type = "secret_ref", .id_field = idf, .flags = GATEWAY_M_USER, \
        .run = fn                                                                                  \
    }

static const gateway_method_t m_create = SECRET_METHOD("secret.created", NULL, secrets_create);
static const gateway_method_t m_list = SECRET_METHOD("secret.listed", NULL, secrets_list);
static const gateway_method_t m_get = SECRET_METHOD("secret.read", "secret_id", secrets_get);
static const gateway_method_t m_update =
    SECRET_METHOD("secret.updated", "secret_id", secrets_update);
static const gateway_method_t m_rotate =
    SECRET_METHOD("secret.rotated", "secret_id", secrets_rotate);
static const gateway_method_t m_versions =
    SECRET_METHOD("secret.read", "secret_id", secrets_versions);
static const gateway_method_t m_revoke =
    SECRET_METHOD("secret.revoked", "secret_id", secrets_revoke);
static const gateway_method_t m_delete =
    SECRET_METHOD("secret.deleted", "secret_id", secrets_delete);
static const gateway_method_t m_share = SECRET_METHOD("secret.shared", "secret_id", secrets_share);
static const gateway_method_t m_unshare =
    SECRET_METHOD("secret.unshared", "secret_id", secrets_unshare);
static const gateway_method_t m_shares =
    SECRET_METHOD("secret.read", "secret_id", secrets_list_shares);

GATEWAY_ENTRY(create_entry, m_create)
GATEWAY_ENTRY(list_entry, m_list)
GATEWAY_ENTRY(get_entry, m_get)
GATEWAY_ENTRY(update_entry, m_update)
GATEWAY_ENTRY(rotate_entry, m_rotate)
GATEWAY_ENTRY(versions_entry, m_versions)
GATEWAY_ENTRY(revoke_entry, m_revoke)
GATEWAY_ENTRY(delete_entry, m_delete)
GATEWAY_ENTRY(share_entry, m_share)
GATEWAY_ENTRY(unshare_entry, m_unshare)
GATEWAY_ENTRY(shares_entry, m_shares)

static const rpc_method_impl_t secrets_impls[] = {
    {.method = "CreateSecret", .kind = RPC_UNARY, .unary = create_entry},
    {.method = "ListSecrets", .kind = RPC_UNARY, .unary = list_entry},
    {.method = "GetSecret", .kind = RPC_UNARY, .unary = get_entry},
    {.method = "UpdateSecret", .kind = RPC_UNARY, .unary = update_entry},
    {.method = "RotateSecret", .kind = RPC_UNARY, .unary = rotate_entry},
    {.method = "ListSecretVersions", .kind = RPC_UNARY, .unary = versions_entry},
    {.method = "RevokeSecret", .kind = RPC_UNARY, .unary = revoke_entry},
    {.method = "DeleteSecret", .kind = RPC_UNARY, .unary = delete_entry},
    {.method = "ShareSecret", .kind = RPC_UNARY, .unary = share_entry},
    {.method = "UnshareSecret", .kind = RPC_UNARY, .unary = unshare_entry},
    {.method = "ListSecretShares", .kind = RPC_UNARY, .unary = shares_entry},
};

const rpc_service_def_t gateway_secrets_def = {
    .desc = &credex__v1__secrets__descriptor,
    .impls = secrets_impls,
    .nimpls = sizeof(secrets_impls) / sizeof(secrets_impls[0]),
    .unimplemented_note = "planned: a later issue",
    .handles_bad_input = true, /* gateway_run audits it */
};
