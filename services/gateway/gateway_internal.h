/*
 * gateway internals shared by its files (not a public header):
 *   gateway.c    setup/cleanup, registration, and the one request path every method takes
 *                (gateway_run: caller, contract, method's own steps, failure audit)
 *   caller.c     who is calling: tokens, peer and browser markers -> caller kind (IDENTITY.md)
 *   secrets.c    credex.v1.Secrets
 *   retrieval.c  credex.v1.Retrieval.Retrieve
 *   exchange.c   credex.v1.Retrieval.Exchange and Inject (a user's provider token)
 *   admin.c      credex.v1.Admin.GetHealth
 *   connectors.c credex.v1.Connectors (admin checks, user visibility, enabled_for tuples)
 *   connections.c credex.v1.Connections (owner tuples, the connector a user may connect to)
 * Request fields are checked by common/contract (the same rules store applies).
 */
#ifndef CREDEX_SERVICES_GATEWAY_GATEWAY_INTERNAL_H
#define CREDEX_SERVICES_GATEWAY_GATEWAY_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "common/config/cx_config.h"
#include "common/error/cx_error.h"
#include "common/fga/cx_fga.h"
#include "common/jwt/cx_jwt.h"
#include "common/rpc/rpc.h"
#include "credex/v1/common.pb-c.h"
#include "credex/v1/oauth.pb-c.h"

#define GATEWAY_ID_MAX 128 /* user, service, team ids as used in OpenFGA names */

/* Process state, built once by gateway_setup before the server starts and read-only while
 * serving (each member is itself thread-safe). Handlers reach it with gateway_state(call). */
typedef struct gateway {
    const cx_config_t *cfg;
    cx_jwt_verifier_t *jwt; /* NULL when JWT verification is not configured: every token fails */
    cx_fga_t *fga;          /* NULL when OpenFGA is not configured: every check is unavailable */
    rpc_client_t *store;
    rpc_client_t *keywrap;
    rpc_client_t *oauth;
} gateway_t;

/* The state gateway_setup built, from a call on the gateway's server (rpc_call_context). */
const gateway_t *gateway_state(rpc_call_t *call);

/* ---- caller classification (caller.c) ------------------------------------------------- */

/* What the transport and the metadata say, with the outcome of verifying each token. */
typedef struct gateway_caller_facts {
    const char *peer;     /* mTLS peer name */
    const char *x_caller; /* x-credex-caller value or NULL */
    bool browser_marker;  /* Origin / Cookie / Sec-Fetch-* / Referer, or a browser User-Agent */
    cx_jwt_service_rule_t rule; /* how a service token is told from a user token */
    bool has_service_token;
    bool service_token_ok; /* verified; claims below valid */
    const cx_jwt_claims_t *service_claims;
    cx_error_t service_token_err; /* when has && !ok */
    bool has_user_token;
    bool user_token_ok;
    const cx_jwt_claims_t *user_claims;
    cx_error_t user_token_err;
} gateway_caller_facts_t;

typedef struct gateway_caller {
    Credex__V1__CallerKind kind; /* BROWSER, SERVICE, SERVICE_ON_BEHALF_OF_USER or UNSPECIFIED */
    bool authenticated;          /* tokens present and valid for this kind */
    cx_error_t auth_err;         /* why not, when !authenticated */
    char peer[RPC_PEER_NAME_MAX];
    char service_id[GATEWAY_ID_MAX]; /* "" for BROWSER */
    char user_id[GATEWAY_ID_MAX];    /* "" for SERVICE */
} gateway_caller_t;

/* Classify (pure). The kind is decided from the transport and markers first, so that a browser
 * gets browser_denied even with bad tokens; authentication is then judged for that kind: the
 * token in the service slot must be a service token bound to the peer, the one in the user slot
 * a user token (under f->rule), else not authenticated with a CX_DETAIL_TOKEN_* detail. */
void gateway_caller_classify(const gateway_caller_facts_t *f, gateway_caller_t *out);

/* What a verified token is under a rule (docs/IDENTITY.md "Service tokens and user tokens"). */
typedef enum gateway_token_kind {
    GATEWAY_TOKEN_USER,
    GATEWAY_TOKEN_SERVICE,
    GATEWAY_TOKEN_UNKNOWN /* the claims fit neither kind: refused in both slots */
} gateway_token_kind_t;

/* The kind of a token with claims c; for a service token *client (may be NULL) points into c at
 * its client id. Pure. */
gateway_token_kind_t gateway_token_kind(cx_jwt_service_rule_t rule, const cx_jwt_claims_t *c,
                                        const char **client);

/* True for a User-Agent a browser sent: one with a "Mozilla/" product token (any letter case) at
 * its start or after a space or tab, outside parenthesised comments. Every browser's User-Agent
 * begins with it, and a page cannot remove it; gRPC libraries send "grpc-<language>/<version>",
 * after the application's own product tokens when it sets some, so a server-side caller is taken
 * for a browser only if it claims to be one. NULL: false. Pure. */
bool gateway_user_agent_is_browser(const char *ua);

/* Gather the facts of a live call (verifying its tokens) and classify it. */
void gateway_caller_from_call(const gateway_t *gw, rpc_call_t *call, gateway_caller_t *out);

/* True for ids we accept as OpenFGA object/user ids: 1..127 of [A-Za-z0-9_.@+-]. */
bool gateway_id_valid(const char *s);

/* ---- the request path (gateway.c) ---------------------------------------------------- */

typedef struct gateway_req gateway_req_t;

/* What a method needs of its caller, checked by gateway_run before the method runs. */
enum {
    /* Acting for a user (a service acting for itself is permission_denied). */
    GATEWAY_M_USER = 1u << 0,
    /* Server-side callers only: browsers get browser_denied, and the service must be on the
     * platform's allow-list of retrievers. */
    GATEWAY_M_SERVER_SIDE = 1u << 1,
    /* Answers while the feature is disabled, and to a caller that could not be judged because
     * the JWKS is unreachable; the method judges the caller itself (health). */
    GATEWAY_M_HEALTH = 1u << 2,
    /* Credential exchange: CREDENTIAL_EXCHANGE_ENABLED (feature_disabled, checked right after
     * the browser classification), and after the retriever allow-list the service's own
     * `exchanger` grant on the platform (permission_denied). */
    GATEWAY_M_EXCHANGE = 1u << 3,
};

/* One method of the public API: how its failures are audited and what it needs. */
typedef struct gateway_method {
    const char *event_type;    /* audit event of a failure (and the method's own action) */
    const char *resource_type; /* "secret_ref", "oauth_connector", "provider_connection", ... */
    const char *id_field;      /* request field naming the resource (NULL: none) */
    const char *resource_id;   /* fixed resource id when id_field is NULL (may be NULL) */
    unsigned flags;            /* GATEWAY_M_* */
    /* The method's own steps: authorization, forwarding, the reply. The request passed the
     * contract and the caller the checks of flags. */
    bool (*run)(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err);
} gateway_method_t;

/* A request on its way through the gateway. Every field but `request` is safe to audit. */
struct gateway_req {
    rpc_call_t *call;
    const gateway_t *gw;
    const gateway_method_t *m;
    const ProtobufCMessage *request; /* passed the contract (NULL until then) */
    gateway_caller_t caller;
    /* Set by gateway_forward when the forwarded call failed: the service that answered audited
     * the failure (store writes the audit trail), so the gateway does not audit it again. */
    bool answered_downstream;
    /* Set by a method that found the user to be a platform admin in OpenFGA; only then does
     * gateway_forward_oauth tell oauth so. */
    bool platform_admin;
    /* Set by a method once it knows the resource the request is about (an exchange: the
     * connection oauth picked); audited in place of the request's id_field. */
    const char *resource_id;
};

/* The one path of every public method: feature toggle, caller (browser first, tokens,
 * allow-list), the request contract (common/contract), the method's steps, and for any
 * failure the gateway decided, exactly one audit event (gateway_audit_failure). */
bool gateway_run(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                 cx_error_t *err, const gateway_method_t *m);

/* Define the rpc entry point `fn` of method table entry `m` (a static const gateway_method_t). */
#define GATEWAY_ENTRY(fn, m)                                                                       \
    static bool fn(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,    \
                   cx_error_t *err)                                                                \
    {                                                                                              \
        return gateway_run(call, request, reply, err, &(m));                                       \
    }

/* The request's resource id (validated), "" when the method has none. */
const char *gateway_req_resource_id(const gateway_req_t *r);

/* A CallerContext for downstream calls, in the call arena. */
Credex__V1__CallerContext *gateway_caller_context(gateway_req_t *r, const char *intended_use,
                                                  Credex__V1__ResourceContext *rc);

/* Forward the request's work to store (or oauth): gateway_downstream, and on failure the
 * answer is the downstream's (not audited again here). */
bool gateway_forward(gateway_req_t *r, rpc_client_t *client, const ProtobufCServiceDescriptor *svc,
                     const char *method, const ProtobufCMessage *req, ProtobufCMessage **reply,
                     cx_error_t *err);

/* The request headers by which oauth learns the caller the gateway verified (oauth.proto). */
#define GATEWAY_HDR_SUBJECT_USER   "x-credex-subject-user-id"
#define GATEWAY_HDR_CALLER_KIND    "x-credex-caller-kind" /* browser | service | ..._of_user */
#define GATEWAY_HDR_SERVICE_ID     "x-credex-service-id"
#define GATEWAY_HDR_PLATFORM_ADMIN "x-credex-platform-admin" /* "true" or absent */

/* gateway_forward to oauth (Connectors, Connections) with the verified caller as request
 * headers: the subject user, the caller kind and service (each only when there is one), and
 * x-credex-platform-admin: true only when r->platform_admin. Nothing of the public caller's own
 * metadata is passed on but the correlation id. A method oauth has not built yet stays
 * unimplemented (gateway_downstream's other faults are unavailable). Blocks for the call. */
bool gateway_forward_oauth(gateway_req_t *r, const ProtobufCServiceDescriptor *svc,
                           const char *method, const ProtobufCMessage *req,
                           ProtobufCMessage **reply, cx_error_t *err);

/* Downstream unary call with the parent's correlation id and deadline; the reply is unpacked
 * into the call arena. Dependency faults (unavailable, deadline, internal, unimplemented,
 * transport authentication) are reported as CX_ERR_UNAVAILABLE: the caller fails closed. */
bool gateway_downstream(rpc_client_t *client, const ProtobufCServiceDescriptor *svc,
                        const char *method, rpc_call_t *call, const ProtobufCMessage *req,
                        ProtobufCMessage **reply, cx_error_t *err);

/* OpenFGA check; a failure to get an answer is CX_ERR_UNAVAILABLE. */
bool gateway_fga_check(const gateway_t *gw, const char *user, const char *relation,
                       const char *object, bool *allowed, cx_error_t *err);

/* Does `subject` (an OpenFGA user, e.g. "user:alice") hold `relation` on secret_ref:<id>?
 * When not: permission_denied if the subject may see the secret (read_metadata), else the
 * not_found of a secret that does not exist, so that ids cannot be probed. */
bool gateway_authorize_secret(gateway_req_t *r, const char *subject, const char *secret_id,
                              const char *relation, cx_error_t *err);

/* Append a success event written by the gateway itself (sharing). Failure: unavailable. */
bool gateway_audit_success(gateway_req_t *r, const char *secret_id, const char *detail_key,
                           const char *detail_value, cx_error_t *err);

/* A string in the call arena ("" for NULL). */
char *gateway_strdup(rpc_call_t *call, const char *s);

/* ---- OAuth connectors, as connections need them (connectors.c) -------------------------- */

/* "user:<the caller's user id>", the caller's OpenFGA name. Pure. */
void gateway_user_fga(const gateway_req_t *r, char *buf, size_t bufsz);

/* Is the caller a platform admin (admin on platform:credex)? Records the answer in
 * r->platform_admin, so that gateway_forward_oauth tells oauth. OpenFGA unreachable:
 * unavailable. Blocks for the check. */
bool gateway_is_platform_admin(gateway_req_t *r, bool *admin, cx_error_t *err);

/* The ACTIVE connector enabled for the caller (OpenFGA enabled_for) that a connect names:
 * connector_id when set (checked in OpenFGA before oauth is asked), else the one connector of
 * provider_key (several: invalid_argument, name connector_id). Both set: they must agree. Not
 * enabled, not ACTIVE, or not there: permission_denied. *out (the call arena) is untouched on
 * failure. Blocks for OpenFGA and oauth calls. */
bool gateway_connector_for_user(gateway_req_t *r, const char *provider_key,
                                const char *connector_id, const Credex__V1__Connector **out,
                                cx_error_t *err);

/* ---- services ------------------------------------------------------------------------- */

/* Service definitions (secrets.c, retrieval.c, admin.c, connectors.c, connections.c); static
 * data that outlives the server. */
extern const rpc_service_def_t gateway_secrets_def;
extern const rpc_service_def_t gateway_retrieval_def;
extern const rpc_service_def_t gateway_admin_def;
extern const rpc_service_def_t gateway_connectors_def;
extern const rpc_service_def_t gateway_connections_def;

/* The rpc entry points of Retrieval/Exchange and Retrieval/Inject (exchange.c), registered
 * with Retrieve in retrieval.c. Block for OpenFGA and oauth calls; thread-safe. */
bool gateway_exchange_entry(rpc_call_t *call, const ProtobufCMessage *request,
                            ProtobufCMessage **reply, cx_error_t *err);
bool gateway_inject_entry(rpc_call_t *call, const ProtobufCMessage *request,
                          ProtobufCMessage **reply, cx_error_t *err);

#endif
