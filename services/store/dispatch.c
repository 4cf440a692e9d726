/*
 * store dispatch: the CredentialStore method table and the one path every call takes.
 *
 * store_dispatch runs each handler inside the same frame:
 *   1. the call context (store_ctx_t) and the feature toggle (disabled: feature_disabled,
 *      nothing else happens, nothing is audited);
 *   2. the request under the input contract (common/contract, the gateway's rules too), then the
 *      two facts every store request shares: its caller context (field `caller`) and, when it
 *      names one, its secret (field `secret_id`, in store's own id format). Each is put in the
 *      context only once it validated;
 *   3. the handler; success events are its own (written before the answer: no record, no
 *      change and no material);
 *   4. a failed call gets exactly one audit event here, and a handler never writes one:
 *      outcome DENIED or FAILED by store_failure_outcome, reason the code, and of the call only
 *      what the context holds (validated caller, validated secret id, owner decoded from the
 *      database), never a raw request field. Not audited: a disabled feature, the audit RPCs
 *      themselves (AppendAuditEvent, QueryAuditEvents), CheckDataKeys (an operator check
 *      that decrypts nothing and reads no secret; store.data_keys_checked is logged),
 *      RewrapDataKeys (it audits each key it moves or cannot move on that key's secret,
 *      rewrap.c; a call failed as a whole has no secret of its own), and a
 *      call that failed while the database is known to be down or had no connection for it
 *      (the event could not be written: store.audit_skipped is logged instead, once per
 *      call). integrity_error is also logged (store.integrity_error).
 */
#include <string.h>

#include "common/contract/cx_contract.h"
#include "common/log/cx_log.h"
#include "services/store/store_internal.h"

/* ---- the method table ------------------------------------------------------------------ */

static const char *const store_gateway_only[] = {"gateway", NULL};
/* The operator's tool (docs/BACKUP_RESTORE.md, docs/KEY_ROTATION.md), never a service. */
static const char *const store_operator_only[] = {"credexctl", NULL};

/* name, handler, event of a failed call (NULL: not audited here), peers (NULL: the service's) */
#define STORE_METHODS(M)                                                                           \
    M("CreateSecret", store_create, "secret.created", NULL)                                        \
    M("ListSecrets", store_list_secrets, "secret.listed", store_gateway_only)                      \
    M("GetSecret", store_get, "secret.read", NULL)                                                 \
    M("UpdateSecret", store_update, "secret.updated", store_gateway_only)                          \
    M("RotateSecret", store_rotate, "secret.rotated", NULL)                                        \
    M("ListVersions", store_list_versions, "secret.read", store_gateway_only)                      \
    M("RevokeSecret", store_revoke, "secret.revoked", NULL)                                        \
    M("DeleteSecret", store_delete, "secret.deleted", NULL)                                        \
    M("Resolve", store_resolve, "secret.retrieved", NULL)                                          \
    M("AppendAuditEvent", store_append_audit, NULL, NULL)                                          \
    M("QueryAuditEvents", store_query_audit, NULL, store_gateway_only)                             \
    M("CheckDataKeys", store_check_data_keys, NULL, store_operator_only)                           \
    M("RewrapDataKeys", store_rewrap_data_keys, NULL, store_operator_only)

typedef struct store_method {
    const char *name;
    store_handler_fn fn;
    const char *event_type;
} store_method_t;

#define STORE_METHOD_ENTRY(name, fn, event, peers) {name, fn, event},
static const store_method_t store_methods[] = {STORE_METHODS(STORE_METHOD_ENTRY)};

static bool store_dispatch(rpc_call_t *call, const ProtobufCMessage *request,
                           ProtobufCMessage **reply, cx_error_t *err);

#define STORE_IMPL_ENTRY(name, fn, event, peers)                                                   \
    {.method = name, .kind = RPC_UNARY, .unary = store_dispatch, .allowed_peers = peers},
const rpc_method_impl_t store_method_impls[] = {STORE_METHODS(STORE_IMPL_ENTRY)};
const size_t store_method_nimpls = sizeof(store_method_impls) / sizeof(store_method_impls[0]);

/* The entry of the method being called ("/credex.v1.CredentialStore/<name>"). */
static const store_method_t *store_method_of(const rpc_call_t *call)
{
    const char *path = rpc_call_method(call);
    const char *name = path ? strrchr(path, '/') : NULL;
    name = name ? name + 1 : (path ? path : "");
    for (size_t i = 0; i < sizeof(store_methods) / sizeof(store_methods[0]); i++)
        if (strcmp(store_methods[i].name, name) == 0)
            return &store_methods[i];
    return NULL;
}

/* ---- the call context ------------------------------------------------------------------ */

bool store_connect(store_ctx_t *x, cx_error_t *err)
{
    if (!x->c)
        x->c = mdb_client_pop(x->st->db, err);
    return x->c != NULL;
}

/* The metadata document of secret_id: from the cache when cached and it is on, else from the
 * database. */
static bool store_read_ref(store_ctx_t *x, const char *secret_id, bool cached, bson_t *doc,
                           bool *found, cx_error_t *err)
{
    x->ref_cached = false;
    if (!store_connect(x, err))
        return false;
    if (cached && x->st->meta)
        return mdb_cache_find(x->st->meta, x->c, secret_id, doc, found, &x->ref_cached, err);
    bson_t filter = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&filter, "_id", secret_id);
    bool ok = mdb_find_one(x->st->db, x->c, MDB_COLL_SECRET_REFS, &filter, doc, found, err);
    bson_destroy(&filter);
    return ok;
}

static bool store_load_ref_as(store_ctx_t *x, const char *secret_id, bool cached, store_ref_t *ref,
                              cx_error_t *err)
{
    bson_t doc;
    bool found = false;
    if (!store_read_ref(x, secret_id, cached, &doc, &found, err))
        return false;
    if (!found)
        return cx_error_set(err, CX_ERR_NOT_FOUND, "secret not found");
    store_ref_t r;
    bool ok = store_ref_decode(x->arena, &doc, &r, err);
    bson_destroy(&doc);
    /* A document inserted under this _id with another secret's metadata is not this secret. */
    if (ok && strcmp(r.meta->secret_id, secret_id) != 0)
        ok = cx_error_set(err, CX_ERR_INTEGRITY, "stored secret metadata is malformed (secret_id)");
    if (!ok) {
        /* Not kept for the next call: a document put right in the database reads right at once. */
        mdb_cache_evict(x->st->meta, secret_id);
        return false;
    }
    *ref = r;
    x->owner = r.meta->owner;
    return true;
}

bool store_load_ref(store_ctx_t *x, const char *secret_id, store_ref_t *ref, cx_error_t *err)
{
    return store_load_ref_as(x, secret_id, false, ref, err);
}

static bool store_load_secret_as(store_ctx_t *x, bool cached, store_ref_t *ref, cx_error_t *err)
{
    if (!store_load_ref_as(x, x->secret_id, cached, ref, err))
        return false;
    if (!store_peer_may_use(x->peer, ref->meta->kind, ref->meta->owner->owner_type))
        return cx_error_set(err, CX_ERR_PERMISSION_DENIED,
                            "this peer may not use secrets of this kind or owner");
    return true;
}

bool store_load_secret(store_ctx_t *x, store_ref_t *ref, cx_error_t *err)
{
    return store_load_secret_as(x, false, ref, err);
}

bool store_load_secret_cached(store_ctx_t *x, store_ref_t *ref, cx_error_t *err)
{
    return store_load_secret_as(x, true, ref, err);
}

const char *store_actor(const store_ctx_t *x)
{
    const Credex__V1__CallerContext *c = x->caller;
    if (c && c->subject_user_id && c->subject_user_id[0])
        return c->subject_user_id;
    if (c && c->service_id && c->service_id[0])
        return c->service_id;
    return x->peer ? x->peer : "credex";
}

/* ---- the shared request fields ---------------------------------------------------------- */

/* The address of a singular field of a request, or NULL when the message has none of that
 * name and type. Every store request calls its caller context `caller` and the secret it acts
 * on `secret_id` (store.proto), so that one step validates them for every method. */
static const void *store_request_field(const ProtobufCMessage *req, const char *name,
                                       ProtobufCType type)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(req->descriptor, name);
    if (!f || f->type != type || f->label == PROTOBUF_C_LABEL_REPEATED)
        return NULL;
    return (const char *)req + f->offset;
}

static bool store_take_shared_fields(store_ctx_t *x, const ProtobufCMessage *req, cx_error_t *err)
{
    /* The whole request first, under the contract the gateway applied (common/contract): a
     * request that did not decode, or failed the wire check, arrives as NULL
     * (handles_bad_input) and is refused here like any other invalid one, so that it is
     * audited too, with nothing of it in the event. */
    if (!req) {
        cx_error_copy(err, rpc_call_input_error(x->call));
        if (!err || err->code == CX_OK)
            cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "malformed request");
        return false;
    }
    if (!cx_contract_check(req, err))
        return false;
    const void *f = store_request_field(req, "caller", PROTOBUF_C_TYPE_MESSAGE);
    if (f) /* the contract required it and checked its every field */
        x->caller = *(Credex__V1__CallerContext *const *)f;
    f = store_request_field(req, "secret_id", PROTOBUF_C_TYPE_STRING);
    if (f) {
        const char *id = *(char *const *)f;
        if (!store_validate_secret_id(id, err))
            return false;
        x->secret_id = id;
    }
    return true;
}

/* ---- failures ------------------------------------------------------------------------- */

static void store_failed(store_ctx_t *x, const store_method_t *m, const cx_error_t *failure)
{
    const char *corr = rpc_call_correlation_id(x->call);
    const char *sid = x->secret_id ? x->secret_id : "";
    if (failure->code == CX_ERR_INTEGRITY)
        cx_log_error(corr, "store.integrity_error", CX_LOG_STR("method", m->name),
                     CX_LOG_STR("secret_id", sid), CX_LOG_STR("detail", failure->message));
    if (!m->event_type)
        return;
    /* The event could not be written: the database is known to be down, or it could not give
     * this call a connection (trying again would wait as long once more). */
    if (!mdb_is_up(x->st->db) || (failure->code == CX_ERR_UNAVAILABLE && !x->c)) {
        cx_log_warn(corr, "store.audit_skipped", CX_LOG_STR("method", m->name),
                    CX_LOG_STR("reason", cx_code_reason(failure->code)),
                    CX_LOG_STR("secret_id", sid), CX_LOG_STR("detail", failure->message));
        return;
    }
    cx_error_t aerr;
    (void)store_audit(x, m->event_type, store_failure_outcome(failure->code), failure->code, NULL,
                      0, &aerr); /* logs store.audit_write_failed itself */
}

static bool store_dispatch(rpc_call_t *call, const ProtobufCMessage *request,
                           ProtobufCMessage **reply, cx_error_t *err)
{
    store_ctx_t x = {.st = rpc_call_context(call), /* set by svc_main / the tests */
                     .call = call,
                     .arena = rpc_call_arena(call),
                     .peer = rpc_call_peer(call)};
    const store_method_t *m = store_method_of(call);
    if (!x.st || !m)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "store is not ready");
    /* Defence in depth: the gateway refuses first, but a disabled feature must be disabled
     * everywhere. */
    if (!x.st->cfg->credentials_enabled)
        return cx_error_set(err, CX_ERR_FEATURE_DISABLED, "credentials feature is disabled");
    bool ok = store_take_shared_fields(&x, request, err) && m->fn(&x, request, reply, err);
    if (!ok)
        store_failed(&x, m, err);
    mdb_client_push(x.st->db, x.c);
    return ok;
}
