/*
 * credex.v1.Secrets: the user-facing lifecycle. Every method authenticates the caller
 * (caller.c), asks OpenFGA for the permission gateway.proto names, audits a denial, and only
 * then forwards to store. A caller without read_metadata gets exactly the not_found of a
 * nonexistent secret, so ids cannot be probed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log/cx_log.h"
#include "credex/v1/gateway.pb-c.h"
#include "credex/v1/store.pb-c.h"
#include "services/gateway/gateway_internal.h"

#define NOT_FOUND_MSG   "secret not found"
#define PLATFORM_OBJ    "platform:credex"
#define SHARES_MAX      1000
#define IDEMPOTENCY_MAX 128
#define PROVIDER_MAX    64

static const ProtobufCServiceDescriptor *const store_svc =
    &credex__v1__credential_store__descriptor;

/* ---- common steps ----------------------------------------------------------------------- */

/* Feature toggle, authentication, and "acting for a user" (a service acting for itself may not
 * manage user secrets). */
static bool secrets_begin(rpc_call_t *call, const gateway_t **gwp, gateway_caller_t *c,
                          const char *event_type, const char *secret_id, cx_error_t *err)
{
    const gateway_t *gw = gateway_state(call);
    *gwp = gw;
    if (!gateway_feature_check(gw, err))
        return false;
    gateway_caller_from_call(gw, call, c);
    if (!c->authenticated) {
        cx_error_copy(err, &c->auth_err);
        if (err && err->code == CX_ERR_UNAVAILABLE)
            return false; /* not a denial: we could not judge */
        return gateway_deny(gw, call, c, event_type, "secret_ref", secret_id, NULL, NULL, err);
    }
    if (!c->user_id[0]) {
        cx_error_set(err, CX_ERR_PERMISSION_DENIED,
                     "secrets are managed for a user: send the user's token");
        return gateway_deny(gw, call, c, event_type, "secret_ref", secret_id, NULL, NULL, err);
    }
    return true;
}

static void fga_name(char *buf, size_t bufsz, const char *type, const char *id)
{
    snprintf(buf, bufsz, "%s:%s", type, id);
}

/* Does the caller's user hold `relation` on the secret? Denials are audited; without
 * read_metadata the answer is the not_found of a nonexistent secret. */
static bool secrets_authorize(const gateway_t *gw, rpc_call_t *call, const gateway_caller_t *c,
                              const char *secret_id, const char *relation, const char *event_type,
                              cx_error_t *err)
{
    if (!gateway_valid_secret_id(secret_id))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "secret_id must be 1..64 chars of [A-Za-z0-9_-]");
    char user[CX_FGA_NAME_MAX], obj[CX_FGA_NAME_MAX];
    fga_name(user, sizeof(user), "user", c->user_id);
    fga_name(obj, sizeof(obj), "secret_ref", secret_id);
    bool allowed = false;
    if (!gateway_fga_check(gw, user, relation, obj, &allowed, err))
        return false;
    if (allowed)
        return true;
    bool visible = false;
    if (strcmp(relation, "read_metadata") != 0 &&
        !gateway_fga_check(gw, user, "read_metadata", obj, &visible, err))
        return false;
    if (visible)
        cx_error_set(err, CX_ERR_PERMISSION_DENIED, "%s permission required on this secret",
                     relation);
    else
        cx_error_set(err, CX_ERR_NOT_FOUND, NOT_FOUND_MSG);
    return gateway_deny(gw, call, c, event_type, "secret_ref", secret_id, NULL, NULL, err);
}

/* Store answers are passed on, with store's not_found normalised to ours (one message for
 * "absent" and "hidden"). */
static bool store_call(const gateway_t *gw, rpc_call_t *call, const char *method,
                       const ProtobufCMessage *req, ProtobufCMessage **reply, cx_error_t *err)
{
    if (gateway_downstream(gw->store, store_svc, method, call, req, reply, err))
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
static bool team_check(const gateway_t *gw, const gateway_caller_t *c, const char *team,
                       const char *relation, bool *allowed, cx_error_t *err)
{
    char user[CX_FGA_NAME_MAX], obj[CX_FGA_NAME_MAX];
    fga_name(user, sizeof(user), "user", c->user_id);
    fga_name(obj, sizeof(obj), "team", team);
    return gateway_fga_check(gw, user, relation, obj, allowed, err);
}

static bool is_team_member(const gateway_t *gw, const gateway_caller_t *c, const char *team,
                           bool *member, cx_error_t *err)
{
    return team_check(gw, c, team, "member", member, err);
}

/* ---- CreateSecret ------------------------------------------------------------------------ */

static bool secrets_create(rpc_call_t *call, const ProtobufCMessage *request,
                           ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__CreateSecretRequest *req = (const Credex__V1__CreateSecretRequest *)request;
    const gateway_t *gw;
    gateway_caller_t c;
    const char *ev = "secret.created";
    if (!secrets_begin(call, &gw, &c, ev, "", err))
        return false;
    size_t ik = strlen(req->idempotency_key);
    if (ik == 0 || ik > IDEMPOTENCY_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "idempotency_key must be 1..%d chars",
                            IDEMPOTENCY_MAX);
    if (!user_kind_ok(req->kind))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "kind must be api_key, token, password or generic");
    if (!gateway_validate_display_name(req->display_name, err) ||
        !gateway_validate_description(req->description, err) ||
        !gateway_validate_allowed_uses(req->allowed_uses, req->n_allowed_uses, err) ||
        !gateway_validate_value(req->value.len, err))
        return false;
    if (strlen(req->provider) > PROVIDER_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "provider must be at most %d chars",
                            PROVIDER_MAX);

    /* Whose secret: the caller's own, or a team's the caller belongs to. */
    Credex__V1__Owner *owner = rpc_call_alloc(call, sizeof(*owner));
    credex__v1__owner__init(owner);
    char owner_fga[CX_FGA_NAME_MAX];
    Credex__V1__OwnerType ot =
        req->owner ? req->owner->owner_type : CREDEX__V1__OWNER_TYPE__OWNER_TYPE_UNSPECIFIED;
    const char *oid = req->owner ? req->owner->owner_id : "";
    if (ot == CREDEX__V1__OWNER_TYPE__OWNER_TYPE_UNSPECIFIED ||
        ot == CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER) {
        if (oid[0] && strcmp(oid, c.user_id) != 0) {
            cx_error_set(err, CX_ERR_PERMISSION_DENIED, "users create secrets for themselves only");
            return gateway_deny(gw, call, &c, ev, "secret_ref", "", NULL, NULL, err);
        }
        owner->owner_type = CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER;
        owner->owner_id = rpc_arena_strndup(rpc_call_arena(call), c.user_id, strlen(c.user_id));
        fga_name(owner_fga, sizeof(owner_fga), "user", c.user_id);
    } else if (ot == CREDEX__V1__OWNER_TYPE__OWNER_TYPE_TEAM) {
        if (!gateway_id_valid(oid))
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "owner team id is not valid");
        /* gateway.proto and the seeds (US1): team secrets are created by the team's admins;
         * members then use them through the team's owner relation. */
        bool admin = false;
        if (!team_check(gw, &c, oid, "admin", &admin, err))
            return false;
        if (!admin) {
            cx_error_set(err, CX_ERR_PERMISSION_DENIED, "not an admin of team %s", oid);
            return gateway_deny(gw, call, &c, ev, "secret_ref", "", NULL, NULL, err);
        }
        owner->owner_type = ot;
        owner->owner_id = (char *)oid;
        snprintf(owner_fga, sizeof(owner_fga), "team:%s#member", oid);
    } else {
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "owner must be a user or a team");
    }

    Credex__V1__StoreCreateSecretRequest sreq = CREDEX__V1__STORE_CREATE_SECRET_REQUEST__INIT;
    sreq.caller = gateway_caller_context(call, &c, NULL, NULL);
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
    if (!store_call(gw, call, "CreateSecret", &sreq.base, (ProtobufCMessage **)&sr, err))
        return false;
    if (!sr->secret || !gateway_valid_secret_id(sr->secret->secret_id))
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
        !cx_fga_write(gw->fga, t, 2, NULL, 0, &ferr)) {
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

static bool secrets_list(rpc_call_t *call, const ProtobufCMessage *request,
                         ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__ListSecretsRequest *req = (const Credex__V1__ListSecretsRequest *)request;
    const gateway_t *gw;
    gateway_caller_t c;
    const char *ev = "secret.listed";
    bool ok = false;
    char **ids = NULL, **teams = NULL;
    size_t nids = 0, nteams = 0;
    if (!secrets_begin(call, &gw, &c, ev, "", err))
        return false;
    char user[CX_FGA_NAME_MAX];
    fga_name(user, sizeof(user), "user", c.user_id);
    const Credex__V1__Owner *narrow =
        req->owner && req->owner->owner_type != CREDEX__V1__OWNER_TYPE__OWNER_TYPE_UNSPECIFIED
            ? req->owner
            : NULL;
    if (narrow && !gateway_id_valid(narrow->owner_id))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "owner id is not valid");

    Credex__V1__StoreListSecretsRequest sreq = CREDEX__V1__STORE_LIST_SECRETS_REQUEST__INIT;
    sreq.caller = gateway_caller_context(call, &c, NULL, NULL);
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
            gateway_deny(gw, call, &c, ev, "secret_ref", "", NULL, NULL, err);
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
            if (!is_team_member(gw, &c, narrow->owner_id, &member, err))
                goto out;
            if (!member) {
                cx_error_set(err, CX_ERR_PERMISSION_DENIED, "not a member of that team");
                gateway_deny(gw, call, &c, ev, "secret_ref", "", NULL, NULL, err);
                goto out;
            }
            owners[0] = (Credex__V1__Owner *)narrow;
        } else if (narrow &&
                   !owner_is(narrow, CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER, c.user_id)) {
            cx_error_set(err, CX_ERR_PERMISSION_DENIED, "owner must be you or one of your teams");
            gateway_deny(gw, call, &c, ev, "secret_ref", "", NULL, NULL, err);
            goto out;
        } else {
            me.owner_type = CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER;
            me.owner_id = c.user_id;
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
                excl_items[t].owner_id = t == 0 ? (char *)c.user_id : teams[t - 1];
                excl[t] = &excl_items[t];
            }
            sreq.exclude_owners = excl;
            sreq.n_exclude_owners = nteams + 1;
        }
        break;
    default:
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "unknown scope");
        goto out;
    }

    Credex__V1__StoreListSecretsResponse *sr = NULL;
    if (!store_call(gw, call, "ListSecrets", &sreq.base, (ProtobufCMessage **)&sr, err))
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

static bool secrets_get(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                        cx_error_t *err)
{
    const Credex__V1__GetSecretRequest *req = (const Credex__V1__GetSecretRequest *)request;
    const gateway_t *gw;
    gateway_caller_t c;
    if (!secrets_begin(call, &gw, &c, "secret.read", req->secret_id, err) ||
        !secrets_authorize(gw, call, &c, req->secret_id, "read_metadata", "secret.read", err))
        return false;
    Credex__V1__StoreGetSecretRequest sreq = CREDEX__V1__STORE_GET_SECRET_REQUEST__INIT;
    sreq.caller = gateway_caller_context(call, &c, NULL, NULL);
    sreq.secret_id = req->secret_id;
    return store_call(gw, call, "GetSecret", &sreq.base, reply, err);
}

static bool update_mask_ok(const Credex__V1__UpdateSecretRequest *req, cx_error_t *err)
{
    if (req->n_update_mask == 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "update_mask must name a field");
    for (size_t i = 0; i < req->n_update_mask; i++) {
        const char *f = req->update_mask[i];
        if (strcmp(f, "display_name") == 0) {
            if (!gateway_validate_display_name(req->display_name, err))
                return false;
        } else if (strcmp(f, "description") == 0) {
            if (!gateway_validate_description(req->description, err))
                return false;
        } else if (strcmp(f, "allowed_uses") == 0) {
            if (!gateway_validate_allowed_uses(req->allowed_uses, req->n_allowed_uses, err))
                return false;
        } else {
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "update_mask entries: display_name, description, allowed_uses");
        }
    }
    return true;
}

static bool secrets_update(rpc_call_t *call, const ProtobufCMessage *request,
                           ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__UpdateSecretRequest *req = (const Credex__V1__UpdateSecretRequest *)request;
    const gateway_t *gw;
    gateway_caller_t c;
    const char *ev = "secret.updated";
    if (!secrets_begin(call, &gw, &c, ev, req->secret_id, err) ||
        !secrets_authorize(gw, call, &c, req->secret_id, "manage", ev, err) ||
        !update_mask_ok(req, err))
        return false;
    Credex__V1__StoreUpdateSecretRequest sreq = CREDEX__V1__STORE_UPDATE_SECRET_REQUEST__INIT;
    sreq.caller = gateway_caller_context(call, &c, NULL, NULL);
    sreq.secret_id = req->secret_id;
    sreq.display_name = req->display_name;
    sreq.description = req->description;
    sreq.n_allowed_uses = req->n_allowed_uses;
    sreq.allowed_uses = req->allowed_uses;
    sreq.n_update_mask = req->n_update_mask;
    sreq.update_mask = req->update_mask;
    return store_call(gw, call, "UpdateSecret", &sreq.base, reply, err);
}

static bool secrets_rotate(rpc_call_t *call, const ProtobufCMessage *request,
                           ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__RotateSecretRequest *req = (const Credex__V1__RotateSecretRequest *)request;
    const gateway_t *gw;
    gateway_caller_t c;
    const char *ev = "secret.rotated";
    if (!secrets_begin(call, &gw, &c, ev, req->secret_id, err) ||
        !secrets_authorize(gw, call, &c, req->secret_id, "manage", ev, err) ||
        !gateway_validate_value(req->value.len, err))
        return false;
    Credex__V1__StoreRotateSecretRequest sreq = CREDEX__V1__STORE_ROTATE_SECRET_REQUEST__INIT;
    sreq.caller = gateway_caller_context(call, &c, NULL, NULL);
    sreq.secret_id = req->secret_id;
    sreq.expected_version = req->expected_version;
    sreq.value = req->value;
    Credex__V1__StoreRotateSecretResponse *sr = NULL;
    if (!store_call(gw, call, "RotateSecret", &sreq.base, (ProtobufCMessage **)&sr, err))
        return false;
    Credex__V1__RotateSecretResponse *resp = rpc_call_alloc(call, sizeof(*resp));
    credex__v1__rotate_secret_response__init(resp);
    resp->secret = sr->secret;
    resp->version = sr->version;
    *reply = &resp->base;
    return true;
}

static bool secrets_versions(rpc_call_t *call, const ProtobufCMessage *request,
                             ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__ListSecretVersionsRequest *req =
        (const Credex__V1__ListSecretVersionsRequest *)request;
    const gateway_t *gw;
    gateway_caller_t c;
    if (!secrets_begin(call, &gw, &c, "secret.read", req->secret_id, err) ||
        !secrets_authorize(gw, call, &c, req->secret_id, "read_metadata", "secret.read", err))
        return false;
    Credex__V1__StoreListVersionsRequest sreq = CREDEX__V1__STORE_LIST_VERSIONS_REQUEST__INIT;
    sreq.caller = gateway_caller_context(call, &c, NULL, NULL);
    sreq.secret_id = req->secret_id;
    sreq.page = req->page;
    Credex__V1__StoreListVersionsResponse *sr = NULL;
    if (!store_call(gw, call, "ListVersions", &sreq.base, (ProtobufCMessage **)&sr, err))
        return false;
    Credex__V1__ListSecretVersionsResponse *resp = rpc_call_alloc(call, sizeof(*resp));
    credex__v1__list_secret_versions_response__init(resp);
    resp->versions = sr->versions;
    resp->n_versions = sr->n_versions;
    resp->page = sr->page;
    *reply = &resp->base;
    return true;
}

static bool secrets_revoke(rpc_call_t *call, const ProtobufCMessage *request,
                           ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__RevokeSecretRequest *req = (const Credex__V1__RevokeSecretRequest *)request;
    const gateway_t *gw;
    gateway_caller_t c;
    const char *ev = "secret.revoked";
    if (!secrets_begin(call, &gw, &c, ev, req->secret_id, err) ||
        !secrets_authorize(gw, call, &c, req->secret_id, "manage", ev, err))
        return false;
    if (strlen(req->reason) > 256)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "reason must be at most 256 chars");
    Credex__V1__StoreRevokeSecretRequest sreq = CREDEX__V1__STORE_REVOKE_SECRET_REQUEST__INIT;
    sreq.caller = gateway_caller_context(call, &c, NULL, NULL);
    sreq.secret_id = req->secret_id;
    sreq.reason = req->reason;
    return store_call(gw, call, "RevokeSecret", &sreq.base, reply, err);
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

static bool secrets_delete(rpc_call_t *call, const ProtobufCMessage *request,
                           ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__DeleteSecretRequest *req = (const Credex__V1__DeleteSecretRequest *)request;
    const gateway_t *gw;
    gateway_caller_t c;
    const char *ev = "secret.deleted";
    if (!secrets_begin(call, &gw, &c, ev, req->secret_id, err) ||
        !secrets_authorize(gw, call, &c, req->secret_id, "manage", ev, err))
        return false;
    Credex__V1__StoreDeleteSecretRequest sreq = CREDEX__V1__STORE_DELETE_SECRET_REQUEST__INIT;
    sreq.caller = gateway_caller_context(call, &c, NULL, NULL);
    sreq.secret_id = req->secret_id;
    if (!store_call(gw, call, "DeleteSecret", &sreq.base, reply, err))
        return false;
    /* Grants go after the tombstone: if this fails, a retry still passes the manage check
     * (store's delete is idempotent) and finishes the job. */
    char obj[CX_FGA_NAME_MAX];
    fga_name(obj, sizeof(obj), "secret_ref", req->secret_id);
    cx_error_t ferr;
    cx_error_clear(&ferr);
    if (!drop_grants(gw, obj, &ferr)) {
        cx_log_error(rpc_call_correlation_id(call), "gateway.tuple_cleanup_failed",
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

/* OpenFGA user string of a grantee. */
static bool grantee_fga(const Credex__V1__Grantee *g, char *buf, size_t bufsz, cx_error_t *err)
{
    if (!g || !gateway_id_valid(g->grantee_id))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "grantee with a valid grantee_id ([A-Za-z0-9_.@+-]) is required");
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

static char *warn_dup(rpc_call_t *call, const char *buf)
{
    return rpc_arena_strndup(rpc_call_arena(call), buf, strlen(buf));
}

static bool secrets_share(rpc_call_t *call, const ProtobufCMessage *request,
                          ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__ShareSecretRequest *req = (const Credex__V1__ShareSecretRequest *)request;
    const gateway_t *gw;
    gateway_caller_t c;
    const char *ev = "secret.shared";
    if (!secrets_begin(call, &gw, &c, ev, req->secret_id, err) ||
        !secrets_authorize(gw, call, &c, req->secret_id, "share", ev, err))
        return false;
    char who[CX_FGA_NAME_MAX], obj[CX_FGA_NAME_MAX];
    if (!grantee_fga(req->grantee, who, sizeof(who), err))
        return false;
    const char *rel = role_relation(req->role);
    if (!rel || req->role == CREDEX__V1__SHARE_ROLE__SHARE_ROLE_OWNER)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "role must be user, manager or auditor");
    bool svc = req->grantee->grantee_type == CREDEX__V1__GRANTEE_TYPE__GRANTEE_TYPE_SERVICE;
    if (svc && req->role != CREDEX__V1__SHARE_ROLE__SHARE_ROLE_USER)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "a service can only be granted role user");
    fga_name(obj, sizeof(obj), "secret_ref", req->secret_id);

    Credex__V1__ShareSecretResponse *resp = rpc_call_alloc(call, sizeof(*resp));
    credex__v1__share_secret_response__init(resp);
    char **w = rpc_call_alloc(call, 3 * sizeof(char *));
    size_t nw = 0;
    char b[256];
    if (req->grantee->grantee_type == CREDEX__V1__GRANTEE_TYPE__GRANTEE_TYPE_TEAM) {
        snprintf(b, sizeof(b), "grants %s to every member of team %s", rel,
                 req->grantee->grantee_id);
        w[nw++] = warn_dup(call, b);
    }
    if (svc) {
        snprintf(b, sizeof(b),
                 "lets service %s retrieve the value (when it is also an allowed retriever)",
                 req->grantee->grantee_id);
        w[nw++] = warn_dup(call, b);
    }
    if (req->role == CREDEX__V1__SHARE_ROLE__SHARE_ROLE_MANAGER)
        w[nw++] = warn_dup(call, "a manager can rotate, revoke, delete and re-share the secret");
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
        if (!cx_fga_tuple_set(&t, who, rel, obj) || !cx_fga_write(gw->fga, &t, 1, NULL, 0, &ferr)) {
            cx_log_warn(rpc_call_correlation_id(call), "gateway.share_failed",
                        CX_LOG_STR("secret_id", req->secret_id),
                        CX_LOG_STR("reason", ferr.message));
            return cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service is unavailable");
        }
        /* No unaudited grant: if the record cannot be written, take the grant back. */
        if (!gateway_audit_success(gw, call, &c, ev, req->secret_id, "grantee", who, err)) {
            cx_error_t derr;
            if (!cx_fga_write(gw->fga, NULL, 0, &t, 1, &derr))
                cx_log_error(rpc_call_correlation_id(call), "gateway.share_rollback_failed",
                             CX_LOG_STR("secret_id", req->secret_id));
            return false;
        }
        resp->applied = true;
    }
    *reply = &resp->base;
    return true;
}

static bool secrets_unshare(rpc_call_t *call, const ProtobufCMessage *request,
                            ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__UnshareSecretRequest *req = (const Credex__V1__UnshareSecretRequest *)request;
    const gateway_t *gw;
    gateway_caller_t c;
    const char *ev = "secret.unshared";
    bool ok = false;
    cx_fga_tuple_t *t = NULL;
    size_t n = 0;
    if (!secrets_begin(call, &gw, &c, ev, req->secret_id, err) ||
        !secrets_authorize(gw, call, &c, req->secret_id, "share", ev, err))
        return false;
    char who[CX_FGA_NAME_MAX], obj[CX_FGA_NAME_MAX];
    if (!grantee_fga(req->grantee, who, sizeof(who), err))
        return false;
    if (req->role == CREDEX__V1__SHARE_ROLE__SHARE_ROLE_OWNER)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "the owner cannot be removed");
    const char *only = req->role == CREDEX__V1__SHARE_ROLE__SHARE_ROLE_UNSPECIFIED
                           ? NULL
                           : role_relation(req->role);
    if (req->role != CREDEX__V1__SHARE_ROLE__SHARE_ROLE_UNSPECIFIED && !only)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "unknown role");
    fga_name(obj, sizeof(obj), "secret_ref", req->secret_id);
    cx_error_t ferr;
    cx_error_clear(&ferr);
    if (!cx_fga_read(gw->fga, obj, only, who, SHARES_MAX, &t, &n, &ferr)) {
        cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service is unavailable");
        goto out;
    }
    size_t keep = 0;
    for (size_t i = 0; i < n; i++) {
        Credex__V1__ShareRole r = relation_role(t[i].relation);
        if (r == CREDEX__V1__SHARE_ROLE__SHARE_ROLE_USER ||
            r == CREDEX__V1__SHARE_ROLE__SHARE_ROLE_MANAGER ||
            r == CREDEX__V1__SHARE_ROLE__SHARE_ROLE_AUDITOR)
            t[keep++] = t[i];
    }
    if (keep > 0) {
        if (!cx_fga_write(gw->fga, NULL, 0, t, keep, &ferr)) {
            cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service is unavailable");
            goto out;
        }
        /* The grant is already gone (removal is the safe direction); a failed record is
         * reported so that the caller knows the trail is incomplete. */
        if (!gateway_audit_success(gw, call, &c, ev, req->secret_id, "grantee", who, err))
            goto out;
    }
    Credex__V1__UnshareSecretResponse *resp = rpc_call_alloc(call, sizeof(*resp));
    credex__v1__unshare_secret_response__init(resp);
    resp->removed_count = (uint32_t)keep;
    *reply = &resp->base;
    ok = true;
out:
    free(t);
    return ok;
}

static bool secrets_list_shares(rpc_call_t *call, const ProtobufCMessage *request,
                                ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__ListSecretSharesRequest *req =
        (const Credex__V1__ListSecretSharesRequest *)request;
    const gateway_t *gw;
    gateway_caller_t c;
    cx_fga_tuple_t *t = NULL;
    size_t n = 0;
    if (!secrets_begin(call, &gw, &c, "secret.read", req->secret_id, err) ||
        !secrets_authorize(gw, call, &c, req->secret_id, "share", "secret.read", err))
        return false;
    char obj[CX_FGA_NAME_MAX];
    fga_name(obj, sizeof(obj), "secret_ref", req->secret_id);
    cx_error_t ferr;
    if (!cx_fga_read(gw->fga, obj, NULL, NULL, SHARES_MAX, &t, &n, &ferr))
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service is unavailable");
    Credex__V1__ListSecretSharesResponse *resp = rpc_call_alloc(call, sizeof(*resp));
    credex__v1__list_secret_shares_response__init(resp);
    resp->shares = rpc_call_alloc(call, (n ? n : 1) * sizeof(*resp->shares));
    for (size_t i = 0; i < n; i++) {
        Credex__V1__ShareRole r = relation_role(t[i].relation);
        Credex__V1__Grantee *g = grantee_from_fga(call, t[i].user);
        if (r == CREDEX__V1__SHARE_ROLE__SHARE_ROLE_UNSPECIFIED || !g)
            continue;
        Credex__V1__SecretShare *s = rpc_call_alloc(call, sizeof(*s));
        credex__v1__secret_share__init(s);
        s->secret_id = req->secret_id;
        s->grantee = g;
        s->role = r;
        resp->shares[resp->n_shares++] = s;
    }
    free(t);
    *reply = &resp->base;
    return true;
}

static const rpc_method_impl_t secrets_impls[] = {
    {.method = "CreateSecret", .kind = RPC_UNARY, .unary = secrets_create},
    {.method = "ListSecrets", .kind = RPC_UNARY, .unary = secrets_list},
    {.method = "GetSecret", .kind = RPC_UNARY, .unary = secrets_get},
    {.method = "UpdateSecret", .kind = RPC_UNARY, .unary = secrets_update},
    {.method = "RotateSecret", .kind = RPC_UNARY, .unary = secrets_rotate},
    {.method = "ListSecretVersions", .kind = RPC_UNARY, .unary = secrets_versions},
    {.method = "RevokeSecret", .kind = RPC_UNARY, .unary = secrets_revoke},
    {.method = "DeleteSecret", .kind = RPC_UNARY, .unary = secrets_delete},
    {.method = "ShareSecret", .kind = RPC_UNARY, .unary = secrets_share},
    {.method = "UnshareSecret", .kind = RPC_UNARY, .unary = secrets_unshare},
    {.method = "ListSecretShares", .kind = RPC_UNARY, .unary = secrets_list_shares},
};

const rpc_service_def_t gateway_secrets_def = {
    .desc = &credex__v1__secrets__descriptor,
    .impls = secrets_impls,
    .nimpls = sizeof(secrets_impls) / sizeof(secrets_impls[0]),
    .unimplemented_note = "planned: a later issue",
};
