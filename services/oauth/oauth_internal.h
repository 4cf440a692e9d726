/*
 * oauth internals shared by its files (not a public header). The boundaries:
 *
 *   providers.c  the built-in provider descriptors: data, not code paths (one table row per
 *                provider; every quirk is a field that the generic OAuth code reads)
 *   validate.c   a connector as an admin gives it -> a checked, normalised oauth_connector_t,
 *                or invalid_argument / ssrf_blocked naming the field (pure: no I/O)
 *   discovery.c  RFC 8414 / OpenID discovery of a custom connector's endpoints over the
 *                provider HTTP client (common/http with the SSRF policy)
 *   bootstrap_env.c  the <PROVIDER>_* variables -> connector specs (pure: a getenv function)
 *   connectors.c the oauth_connectors collection and the credex.v1.Connectors handlers
 *                (documents, uniqueness, client secrets through store, audit through store)
 *   bootstrap.c  start-up creation or update of the built-in connectors from the specs
 *   oauth.c      setup/cleanup and registration
 *   tokens.c     credex.v1.ProviderTokens: a connection's access token, refreshed exactly once
 *                across replicas (docs/TOKEN_REFRESH.md)
 *
 * Pure modules (providers, validate, bootstrap_env) allocate nothing they do not document and
 * are reentrant. Strings in oauth_connector_t are owned by the struct (oauth_connector_clear).
 */
#ifndef CREDEX_SERVICES_OAUTH_OAUTH_INTERNAL_H
#define CREDEX_SERVICES_OAUTH_OAUTH_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config/cx_config.h"
#include "common/error/cx_error.h"
#include "common/crypto/cx_crypto.h"
#include "common/http/cx_http.h"
#include "credex/v1/oauth.pb-c.h"

#define OAUTH_SCOPES_MAX      64 /* scopes of one connector */
#define OAUTH_AUTH_PARAMS_MAX 16 /* extra authorization-request parameters */

/* ---- built-in providers (providers.c) ------------------------------------------------------ */

typedef enum oauth_client_auth {
    OAUTH_CLIENT_AUTH_POST = 0,  /* client_secret_post: id and secret in the form body */
    OAUTH_CLIENT_AUTH_BASIC = 1, /* client_secret_basic: HTTP Basic (RFC 6749 2.3.1) */
} oauth_client_auth_t;

/* "client_secret_basic" or "client_secret_post" (Connector.client_auth_method); never NULL. */
const char *oauth_client_auth_name(oauth_client_auth_t a);

typedef struct oauth_param {
    const char *name;
    const char *value;
} oauth_param_t;

/* One built-in provider. Every URL is absolute https, except for providers with
 * base_url_configurable, whose *_path fields are appended to the connector's base URL (a
 * self-managed GitLab); the descriptor's base_url is then the public default. */
typedef struct oauth_provider {
    const char *key;          /* "github", "atlassian", "webex", "pagerduty", "gitlab" */
    const char *display_name; /* "GitHub" */
    const char *env_prefix;   /* bootstrap variables: "GITHUB", "CONFLUENCE", ... */
    bool base_url_configurable;
    const char *base_url; /* base_url_configurable: the default base, e.g. https://gitlab.com */
    const char *authorization_url; /* or the path after base_url */
    const char *token_url;
    const char *revocation_url;  /* NULL: the provider offers no revocation */
    const char *userinfo_url;    /* the account-identity endpoint */
    const char *resources_url;   /* NULL, or where the token's resources are listed (Atlassian
                                    accessible-resources: the sites the token reaches) */
    const char *default_scopes;  /* space-separated; NULL when scopes must come from config */
    bool scopes_required;        /* no usable default: <PREFIX>_SCOPES or the admin must say */
    const char *scope_separator; /* in the authorization request: " " (RFC 6749) or "," */
    bool pkce_s256;
    oauth_client_auth_t client_auth;
    bool token_accept_json;      /* send Accept: application/json to the token endpoint (GitHub
                                    answers form-encoded otherwise) */
    bool token_error_in_200;     /* errors may come with HTTP 200 and an "error" field (GitHub) */
    bool supports_refresh;       /* issues refresh tokens (for some, only when configured so) */
    bool rotates_refresh_tokens; /* each refresh returns a new refresh token, the old one dies */
    bool requires_provider_resource;           /* callers name a site (Atlassian cloud id) */
    const char *account_id_field;              /* in the identity reply, e.g. "id", "account_id" */
    const char *account_name_field;            /* e.g. "login", "name", "email" */
    const oauth_param_t *authorization_params; /* {NULL, NULL}-terminated; may be NULL */
    const char *docs_url;      /* the provider's public documentation of its OAuth app setup */
    const char *api_base_url;  /* where its REST API lives (GetProviderToken.api_base_url), or
                                  the path after the connector's base URL */
    bool api_url_per_resource; /* the API URL ends in "/<provider_resource_id>" (Atlassian) */
} oauth_provider_t;

/* The descriptor of key, NULL when none. */
const oauth_provider_t *oauth_provider_find(const char *key);
/* All descriptors, in a stable order; *n receives their count. */
const oauth_provider_t *oauth_providers(size_t *n);
/* The reply of ListBuiltinProviders for descriptor p, allocated in call's arena-free heap with
 * protobuf-c's default allocator (free with protobuf_c_message_free_unpacked). */
Credex__V1__BuiltinProvider *oauth_provider_to_proto(const oauth_provider_t *p);

/* ---- a connector, checked (validate.c) ----------------------------------------------------- */

/* The configuration part of a connector (what an admin gives); ids, status, times and the
 * client secret's id live in the document (connectors.c). */
typedef struct oauth_connector {
    char *provider_key;
    Credex__V1__ConnectorType type;
    char *display_name;
    char *client_id;
    char *authorization_url, *token_url, *userinfo_url, *revocation_url, *issuer_url;
    char *redirect_uri;
    char *scopes[OAUTH_SCOPES_MAX];
    size_t nscopes;
    char *account_id_field, *account_name_field;
    bool refresh_enabled;
    int64_t refresh_before_expiry_ms;
    oauth_param_t auth_params[OAUTH_AUTH_PARAMS_MAX]; /* owned copies */
    size_t nauth_params;
    oauth_client_auth_t client_auth; /* custom: from the request; built-in: the descriptor's */
} oauth_connector_t;

/* What validation may consult. */
typedef struct oauth_validate_env {
    const char *const *allow_hosts; /* CREDEX_OAUTH_ALLOWED_HOSTS split; NULL: any */
    bool production;                /* redirect URIs must be https (else http://localhost too) */
} oauth_validate_env_t;

/* Check and normalise an admin's connector (Create: the whole of in; Update: in is the stored
 * connector with the masked fields replaced) into *out (zeroed first; clear it). Built-in:
 * endpoints come from the descriptor (or its base URL), scopes default to the descriptor's.
 * Custom: every URL passes cx_http_url_check (ssrf_blocked), provider_key is a slug
 * [a-z0-9-]{1,32} that is no built-in key, authorization_params cannot override the reserved
 * parameters. Failures name the field, never the value. */
bool oauth_connector_validate(const Credex__V1__Connector *in, const oauth_validate_env_t *env,
                              oauth_connector_t *out, cx_error_t *err);
/* Free what *c owns and zero it. NULL-safe. */
void oauth_connector_clear(oauth_connector_t *c);

/* ---- discovery (discovery.c) ------------------------------------------------------------- */

typedef struct oauth_discovered {
    char *issuer, *authorization_url, *token_url, *userinfo_url, *revocation_url, *jwks_uri;
    bool pkce_s256;             /* code_challenge_methods_supported lists S256 (or is absent) */
    bool auth_basic, auth_post; /* token_endpoint_auth_methods_supported (absent: basic) */
    bool iss_parameter;         /* authorization_response_iss_parameter_supported (RFC 9207) */
} oauth_discovered_t;

/* Parse a discovery document (JSON) fetched for `issuer`: the document's issuer must equal the
 * configured one exactly (else invalid_argument "issuer mismatch"), every endpoint must pass
 * cx_http_url_check with allow_hosts. Pure. */
bool oauth_discovery_parse(const char *issuer, const char *body, size_t len,
                           const char *const *allow_hosts, oauth_discovered_t *out,
                           cx_error_t *err);
/* Fetch <issuer>/.well-known/openid-configuration (OIDC) or the RFC 8414 location
 * (/.well-known/oauth-authorization-server inserted before the issuer's path) through http
 * (a client with the SSRF policy) and parse it. Blocks for at most the client's timeout. */
bool oauth_discover(cx_http_t *http, const char *issuer, bool oidc, const char *const *allow_hosts,
                    oauth_discovered_t *out, cx_error_t *err);
void oauth_discovered_clear(oauth_discovered_t *d); /* NULL-safe */

/* ---- bootstrap from the environment (bootstrap_env.c) -------------------------------------- */

typedef struct oauth_bootstrap_spec {
    const oauth_provider_t *provider;
    char client_id[256];
    char redirect_uri[2048];
    char scopes[2048];  /* space-separated, "" = the descriptor's default */
    char base_url[512]; /* GITLAB_BASE_URL, "" = the descriptor's default */
    /* The secret, wiped and freed by oauth_bootstrap_specs_free. */
    unsigned char *client_secret;
    size_t client_secret_len;
} oauth_bootstrap_spec_t;

/* Read <PREFIX>_CLIENT_ID, _CLIENT_SECRET, _REDIRECT_URI, _SCOPES (and GITLAB_BASE_URL) for every
 * built-in provider through fn (getenv when NULL). A provider with none of them set is skipped;
 * a partial set (an id without its secret, a secret without its id, no redirect URI, PagerDuty
 * or GitLab without scopes) is invalid_argument naming the missing variable, never a value.
 * On success *specs (count *n, possibly 0) must be freed with oauth_bootstrap_specs_free. */
bool oauth_bootstrap_specs_read(cx_config_getenv_fn fn, void *ctx, oauth_bootstrap_spec_t **specs,
                                size_t *n, cx_error_t *err);
void oauth_bootstrap_specs_free(oauth_bootstrap_spec_t *specs, size_t n); /* wipes secrets */

/* ---- the service: state, connectors, bootstrap (oauth.c, connectors.c, bootstrap.c) -------- */

#include "common/mdb/mdb.h" /* here, not above: this section is the service's own */
#include "common/rpc/rpc.h"

#define OAUTH_CONNECTORS_MAX 200      /* live connectors (ListConnectors is not paged) */
#define OAUTH_PLATFORM_ACTOR "credex" /* actor of what oauth does by itself (bootstrap) */

/* Process state, built by oauth_setup before the server starts and read-only while serving
 * (each member is itself thread-safe). */
typedef struct oauth {
    const cx_config_t *cfg;
    mdb_t *db;
    rpc_client_t *store;
    cx_http_t *http;    /* provider calls under the SSRF policy; NULL: not available */
    char **allow_hosts; /* CREDEX_OAUTH_ALLOWED_HOSTS split, NULL-terminated; NULL: any */
    char **connect_to;  /* CREDEX_OAUTH_TEST_CONNECT_TO split; NULL: none */
    atomic_int_least64_t next_sweep_ms; /* oauth_flows_sweep runs again from then on */
    struct oauth_flights *flights;      /* tokens.c: refreshes in flight in this process */
    /* Documents by _id for GetProviderToken's reads (common/mdb mdb_cache: coherent within
     * CREDEX_STORE_METADATA_CACHE_BOUND_MS); NULL when disabled. Every writer of a connector or
     * connection evicts its id before and after the write. */
    struct mdb_cache *connectors_cache, *connections_cache;
    /* GetProviderToken's picks by provider key or connector (picks.c): NULL when the document
     * caches are disabled. Every writer of a connection calls oauth_picks_user_changed. */
    struct oauth_picks *picks;
    char holder[128]; /* this process's refresh lease holder: host:pid:random */
} oauth_t;

/* Who acts and where its memory lives: a gateway call (call set, its arena) or the start-up
 * bootstrap (call NULL, an arena of its own). One thread. */
typedef struct oauth_ctx {
    oauth_t *o;
    rpc_call_t *call;
    rpc_arena_t *arena;
    char correlation_id[RPC_CORRELATION_ID_MAX + 1];
    const char *actor;      /* x-credex-subject-user-id, or OAUTH_PLATFORM_ACTOR */
    const char *service_id; /* x-credex-service-id, "" when none */
    Credex__V1__CallerKind caller_kind;
    bool admin;         /* x-credex-platform-admin: "true" */
    mongoc_client_t *c; /* popped on first use; oauth_ctx_done pushes it back */
} oauth_ctx_t;

void oauth_ctx_done(oauth_ctx_t *x); /* gives the database client back; NULL-safe */

/* A stored connector: its read model (arena memory; client_secret_masked set when a secret is
 * stored) and what the document keeps besides. */
typedef struct oauth_stored {
    Credex__V1__Connector *pb;
    int64_t version; /* optimistic-concurrency counter, +1 per write */
    oauth_client_auth_t client_auth;
} oauth_stored_t;

/* The live connector of (provider_key, type), by its live_key. *found false when none. */
bool oauth_connector_find_live(oauth_ctx_t *x, const char *provider_key,
                               Credex__V1__ConnectorType type, oauth_stored_t *out, bool *found,
                               cx_error_t *err);

/* Create: validate in, insert the document with `status` under id (NULL: a fresh random id),
 * then store the client secret and record its id. A live connector of the same
 * (provider_key, type), or a taken id, is conflict (nothing written). A secret that cannot be
 * stored removes the document again and fails with the store's error. Not audited here. */
bool oauth_connector_create(oauth_ctx_t *x, const char *id, const Credex__V1__Connector *in,
                            const uint8_t *secret, size_t secret_len,
                            Credex__V1__ConnectorStatus status, oauth_stored_t *out,
                            cx_error_t *err);

/* Update the fields named in mask (Connector input field names) of cur from in, re-validated
 * as a whole; "client_secret" rotates the stored secret to secret (or stores it when none is).
 * A write is conditional on cur->version: another write since is conflict. changed[] (at
 * least 10 entries) receives the names of what really changed (*nchanged, possibly 0: then
 * nothing is written). Not audited here. */
bool oauth_connector_update(oauth_ctx_t *x, const oauth_stored_t *cur,
                            const Credex__V1__Connector *in, char *const *mask, size_t nmask,
                            const uint8_t *secret, size_t secret_len, oauth_stored_t *out,
                            const char **changed, size_t *nchanged, cx_error_t *err);

/* Make sure the connector's client secret equals secret: create it when the document has none,
 * else Resolve and compare in constant time (the plaintext wiped after), rotating with the
 * current version as expected_version only when it differs (a concurrent rotation: re-read and
 * compare again). *rotated tells whether a new version was written. */
bool oauth_connector_secret_ensure(oauth_ctx_t *x, oauth_stored_t *cur, const uint8_t *secret,
                                   size_t secret_len, bool *rotated, cx_error_t *err);

/* One audit event about connector id through store.AppendAuditEvent: success when code is
 * CX_OK, else DENIED or FAILED with the code's reason. attrs: n key/value pairs (non-secret). */
typedef struct oauth_attr {
    const char *key;
    const char *value;
} oauth_attr_t;
bool oauth_audit(oauth_ctx_t *x, const char *event_type, const char *connector_id, cx_code_t code,
                 const oauth_attr_t *attrs, size_t n, cx_error_t *err);

/* credex.v1.Connectors (connectors.c): method table for rpc_service_def_t. */
extern const rpc_method_impl_t oauth_connectors_impls[];
extern const size_t oauth_connectors_nimpls;

/* Start-up bootstrap (bootstrap.c): with CREDENTIAL_BOOTSTRAP_OAUTH_CONNECTORS, create or update
 * the built-in connectors from the environment read through fn (getenv when NULL). Blocking
 * (store and database calls). A partial set or a dependency failure fails with a message naming
 * the variable or the dependency, never a value. */
bool oauth_bootstrap_run(oauth_t *o, cx_config_getenv_fn fn, void *ctx, cx_error_t *err);

/* ---- shared by connectors.c and the Connections files ---------------------------------------
 * connections.c  the provider_connections collection and the credex.v1.Connections handlers
 * flows.c        the oauth_flows collection: flows in progress, claimed once by a delete
 * provider_http.c the provider calls of a connection (token, identity, resources, revocation,
 *                id_token), driven by the connector and its descriptor
 * Everything here runs on the call's thread with its arena (oauth_ctx_t). */

/* s copied into the context's arena ("" for NULL). */
char *oauth_str(oauth_ctx_t *x, const char *s);
/* n NULL pointers in the arena. */
char **oauth_strv(oauth_ctx_t *x, size_t n);
/* Appends the array key of v[0..n) to doc. */
void oauth_bson_strs(bson_t *doc, const char *key, char *const *v, size_t n);
/* Pops the database client on first use (oauth_ctx_done gives it back). */
bool oauth_connect(oauth_ctx_t *x, cx_error_t *err);
/* *x from the gateway's metadata of call (oauth.proto's header); malformed values are
 * invalid_argument. x->o NULL: the service is not set up (unavailable). */
bool oauth_ctx_from_call(rpc_call_t *call, oauth_ctx_t *x, cx_error_t *err);
/* One CredentialStore call; dependency faults are unavailable, store's answers pass through.
 * *reply in the arena. Blocking. */
bool oauth_store_call(oauth_ctx_t *x, const char *method, const ProtobufCMessage *req,
                      ProtobufCMessage **reply, cx_error_t *err);
/* The CallerContext of oauth's own store calls (arena). */
Credex__V1__CallerContext *oauth_caller(oauth_ctx_t *x, const char *intended_use);
/* A store secret: its current version, a rotation naming the version replaced, a delete. */
bool oauth_secret_version(oauth_ctx_t *x, const char *secret_id, uint32_t *version,
                          cx_error_t *err);
bool oauth_secret_rotate(oauth_ctx_t *x, const char *secret_id, uint32_t expected,
                         const uint8_t *secret, size_t len, cx_error_t *err);
bool oauth_secret_delete(oauth_ctx_t *x, const char *secret_id, cx_error_t *err);
/* The connector document of id (any status); not_found when none. */
bool oauth_connector_load(oauth_ctx_t *x, const char *id, oauth_stored_t *out, cx_error_t *err);
/* The same through connectors_cache: possibly older by the cache's bound, for the token
 * exchange's checks only (writers read with oauth_connector_load). */
bool oauth_connector_load_cached(oauth_ctx_t *x, const char *id, oauth_stored_t *out,
                                 cx_error_t *err);
/* application/x-www-form-urlencoded text (a form body, a query) that grows as fields are added,
 * so that nothing is ever cut: on the heap, wiped when freed (it may hold a secret). A failed
 * allocation is remembered and reported once by oauth_text_done. Not thread-safe (one per
 * request). */
typedef struct oauth_text {
    char *buf; /* NUL-terminated; NULL while empty */
    size_t len, cap;
    bool failed;
} oauth_text_t;
/* Append len octets of value percent-encoded (RFC 3986 unreserved characters kept). */
void oauth_text_encode(oauth_text_t *t, const uint8_t *value, size_t len);
/* Append s as it is (separators, an already encoded part). */
void oauth_text_raw(oauth_text_t *t, const char *s);
/* Append "name=value" (value encoded), preceded by '&' unless t is empty. */
void oauth_text_field(oauth_text_t *t, const char *name, const char *value);
/* The text ("" when empty), or false with CX_ERR_INTERNAL when an allocation failed. */
bool oauth_text_done(const oauth_text_t *t, const char **out, cx_error_t *err);
void oauth_text_free(oauth_text_t *t); /* wipes; NULL-safe; t may be reused */
/* Does the connector's token endpoint answer at all? An authorization-code grant with a code no
 * provider issued and no client authentication (never the secret); *status is the HTTP status
 * of any answer. Transport failures as cx_http_do reports them. */
bool oauth_token_probe(oauth_ctx_t *x, const Credex__V1__Connector *c, const char *token_url,
                       long *status, cx_error_t *err);
/* ---- picks (picks.c) ---------------------------------------------------------------------- */

/* A user's picked connection per (provider key, connector id, provider resource), the id only,
 * answered within bound_ms of the database read that made it and until a write of one of the
 * user's connections through this process (docs/DOCUMENT_CACHE.md, "Picks"). The caller reads
 * the connection again (through the connection cache) and checks it still matches. Every
 * function is thread-safe (one mutex, never held across I/O) and NULL-safe in p. */
typedef struct oauth_picks oauth_picks_t;
#define OAUTH_PICK_ID_MAX 64 /* bytes of a connection id, NUL included */
typedef struct oauth_pick_ticket {
    uint64_t gen;
    int64_t read_ms;
    bool valid;
} oauth_pick_ticket_t;
bool oauth_picks_new(oauth_picks_t **out, unsigned bound_ms, cx_error_t *err);
void oauth_picks_free(oauth_picks_t *p);
/* True with id (a copy) when a pick is kept; *ticket is always set, for oauth_picks_put. */
bool oauth_picks_get(oauth_picks_t *p, const char *user, const char *provider_key,
                     const char *connector_id, const char *resource, char id[OAUTH_PICK_ID_MAX],
                     oauth_pick_ticket_t *ticket);
/* Keep connection_id, picked from a database read started after oauth_picks_get gave ticket;
 * refused when one of the user's connections was written since. */
void oauth_picks_put(oauth_picks_t *p, const char *user, const char *provider_key,
                     const char *connector_id, const char *resource, const char *connection_id,
                     const oauth_pick_ticket_t *ticket);
/* Forget one pick (it no longer matched). */
void oauth_picks_drop(oauth_picks_t *p, const char *user, const char *provider_key,
                      const char *connector_id, const char *resource);
/* A connection of user is being (or was) written: its picks answer no more. */
void oauth_picks_user_changed(oauth_picks_t *p, const char *user);

/* The event oauth_audit_on sends, in the call arena (for a store call that writes it itself:
 * Resolve's exchange_event). Never fails. */
Credex__V1__AuditEvent *oauth_audit_event(oauth_ctx_t *x, const char *resource_type,
                                          const char *event_type, const char *resource_id,
                                          cx_code_t code, const oauth_attr_t *attrs, size_t n);
/* oauth_audit about any resource type ("provider_connection"). */
bool oauth_audit_on(oauth_ctx_t *x, const char *resource_type, const char *event_type,
                    const char *resource_id, cx_code_t code, const oauth_attr_t *attrs, size_t n,
                    cx_error_t *err);

/* A strict reader of stored documents: the database is outside input, so anything not as
 * written is integrity_error, naming the field only. Values land in x's arena; a failed read
 * answers "" / 0 / an empty list and remembers the first bad field. */
typedef struct oauth_reader {
    oauth_ctx_t *x;
    const bson_t *doc;
    const char *bad; /* first field that failed */
} oauth_reader_t;
bool oauth_rd_find(oauth_reader_t *r, const char *key, bson_iter_t *it);
void oauth_rd_fail(oauth_reader_t *r, const char *key);
char *oauth_rd_str(oauth_reader_t *r, const char *key);
bool oauth_rd_typed(oauth_reader_t *r, const char *key, bson_type_t a, bson_type_t b,
                    bson_iter_t *it);
int64_t oauth_rd_int(oauth_reader_t *r, const char *key);
int64_t oauth_rd_date(oauth_reader_t *r, const char *key);
bool oauth_rd_bool(oauth_reader_t *r, const char *key);
char **oauth_rd_strs(oauth_reader_t *r, const char *key, size_t max, size_t *n);

/* One RPC method: its audit event for failures, whether it needs a platform admin, its body,
 * and what it is about (NULL, NULL: "oauth_connector" by the request's connector_id). */
typedef struct oauth_method {
    const char *event_type;
    bool admin;
    bool (*run)(oauth_ctx_t *x, const ProtobufCMessage *req, ProtobufCMessage **reply,
                cx_error_t *err);
    const char *resource_type;
    const char *id_field;
} oauth_method_t;

/* The one path of every call: the gateway's facts, the input contract, the admin requirement,
 * the method, and exactly one audit event for a failure. */
bool oauth_run(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
               cx_error_t *err, const oauth_method_t *m);

#define OAUTH_ENTRY(fn, m)                                                                         \
    static bool fn(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,    \
                   cx_error_t *err)                                                                \
    {                                                                                              \
        return oauth_run(call, request, reply, err, &(m));                                         \
    }

/* ---- provider calls of a connection (provider_http.c) ---------------------------------------- */

#define OAUTH_RESOURCES_MAX 50 /* provider resources (Atlassian sites) kept per connection */

/* The endpoints and rules a connection uses: the connector's, with what discovery fills in. */
typedef struct oauth_endpoints {
    const char *authorization_url, *token_url, *userinfo_url, *revocation_url, *jwks_uri;
    const char *issuer; /* "" when the connector has none */
    bool iss_required;  /* discovery advertised authorization_response_iss_parameter_supported */
    bool pkce;          /* send PKCE S256 */
    bool oidc;          /* CUSTOM_OIDC: nonce and a verified id_token */
    bool accept_json;   /* Accept: application/json at the token endpoint */
    const char *scope_separator;
    const char *resources_url; /* NULL: none */
} oauth_endpoints_t;

/* The endpoints of connector c (arena strings); discovery through the provider client for
 * custom connectors with an issuer. Blocking. */
bool oauth_endpoints_of(oauth_ctx_t *x, const Credex__V1__Connector *c, oauth_endpoints_t *out,
                        cx_error_t *err);

/* What the token endpoint answered. The token strings are malloc'd: oauth_tokens_clear wipes
 * and frees them. */
typedef struct oauth_tokens {
    char *access_token, *refresh_token, *id_token;
    char token_type[32];
    int64_t expires_in_s, refresh_expires_in_s; /* 0: not given */
    char scope[2048];                           /* "" when not given */
} oauth_tokens_t;
void oauth_tokens_clear(oauth_tokens_t *t); /* NULL-safe */

/* Exchange code (with verifier when not "", and the redirect_uri the flow was started with) at
 * e->token_url, authenticating as the connector (secret: the client secret). An error answer (also
 * an "error" field in a 200) is failed_precondition naming the provider's error code only; no
 * answer is unavailable. */
bool oauth_token_exchange(oauth_ctx_t *x, const Credex__V1__Connector *c,
                          const oauth_client_auth_t auth, const oauth_endpoints_t *e,
                          const uint8_t *secret, size_t secret_len, const char *redirect_uri,
                          const char *code, const char *verifier, oauth_tokens_t *out,
                          cx_error_t *err);

/* What a token endpoint answered besides tokens, for classifying a failure. */
typedef struct oauth_token_answer {
    long status;           /* HTTP status; 0: no answer */
    int64_t retry_after_s; /* Retry-After in seconds (a date converted); -1 when none */
    char error[65];        /* the provider's error code when a plain word, "invalid" when not,
                              "none" when the answer named none; "" on success */
} oauth_token_answer_t;

/* A refresh_token grant for refresh_token at e->token_url, with the client authentication of
 * the code exchange. *ans (zeroed first) tells how the provider answered, also on failure, for
 * oauth_refresh_classify. Errors as oauth_token_exchange's; never a token in a message.
 * Blocking: at most the provider client's timeout. *out as oauth_token_exchange's. */
bool oauth_token_refresh(oauth_ctx_t *x, const Credex__V1__Connector *c, oauth_client_auth_t auth,
                         const oauth_endpoints_t *e, const uint8_t *secret, size_t secret_len,
                         const uint8_t *refresh_token, size_t refresh_len, oauth_tokens_t *out,
                         oauth_token_answer_t *ans, cx_error_t *err);

/* Failure classes of a refresh (docs/TOKEN_REFRESH.md). */
typedef enum oauth_refresh_class {
    OAUTH_REFRESH_OK = 0,
    OAUTH_REFRESH_REVOKED,      /* invalid_grant (GitHub: bad_refresh_token in a 200) */
    OAUTH_REFRESH_SCOPE,        /* invalid_scope */
    OAUTH_REFRESH_UNAVAILABLE,  /* no answer, a timeout, 5xx */
    OAUTH_REFRESH_RATE_LIMITED, /* 429, or 503 with Retry-After */
    OAUTH_REFRESH_REFUSED,      /* any other refusal (a misconfigured client, for instance) */
} oauth_refresh_class_t;

#define OAUTH_RETRY_DEFAULT_S 60   /* a rate limit without Retry-After */
#define OAUTH_RETRY_MAX_S     3600 /* a longer Retry-After is cut to this */

/* The class of a refresh that ended with code (CX_OK: succeeded) and answer a. Pure. */
oauth_refresh_class_t oauth_refresh_classify(cx_code_t code, const oauth_token_answer_t *a);

/* credex_oauth_refresh_total{outcome} += 1: "refreshed", "fenced" or a failure class of the
 * connection's last_refresh_error (revoked, reconsent_required, rate_limited, unavailable,
 * failed_precondition); anything else counts as "other". Thread-safe (oauth.c). */
void oauth_refresh_metric(const char *outcome);
/* When a rate-limited refresh may be tried again: now + Retry-After (-1: the default), at most
 * OAUTH_RETRY_MAX_S ahead. Pure. */
int64_t oauth_retry_until(int64_t now_ms, int64_t retry_after_s);

/* The provider account: GET e->userinfo_url with the access token, the connector's account
 * fields as dotted paths (numbers as integers); *id and *name in the arena. With
 * e->resources_url, the resource ids it lists (at most OAUTH_RESOURCES_MAX) into res[]. */
bool oauth_identify(oauth_ctx_t *x, const Credex__V1__Connector *c, const oauth_endpoints_t *e,
                    const char *access_token, char **id, char **name, char **res, size_t *nres,
                    cx_error_t *err);

/* Verify an OIDC id_token: signature by the JWKS at e->jwks_uri (fetched through the provider
 * client), iss = e->issuer, aud = client_id, exp, and nonce. *sub in the arena. Refusals are
 * failed_precondition ("the provider's id_token failed verification"). */
bool oauth_id_token_verify(oauth_ctx_t *x, const oauth_endpoints_t *e, const char *client_id,
                           const char *nonce, const char *id_token, char **sub, cx_error_t *err);

/* RFC 7009 revocation of token (hint "refresh_token" or "access_token") at e->revocation_url,
 * authenticated as the connector. True when the provider answered 200. */
bool oauth_revoke(oauth_ctx_t *x, const Credex__V1__Connector *c, oauth_client_auth_t auth,
                  const oauth_endpoints_t *e, const uint8_t *secret, size_t secret_len,
                  const char *token, const char *hint, cx_error_t *err);

/* The CallerContext of a Resolve whose material oauth itself uses (a service caller "oauth" on
 * behalf of the call's user). */
Credex__V1__CallerContext *oauth_own_caller(oauth_ctx_t *x, const char *intended_use);
/* The connector's client secret, resolved from store (free with cx_secret_free). */
bool oauth_client_secret(oauth_ctx_t *x, const Credex__V1__Connector *c, cx_secret_t **out,
                         cx_error_t *err);

/* ---- flows in progress (flows.c) ---------------------------------------------------------- */

#define OAUTH_FLOW_TTL_MS   (10 * 60 * 1000)
#define OAUTH_RETURN_TO_MAX 512

typedef struct oauth_flow {
    char *user, *connector_id, *connection_id, *provider_key, *redirect_uri;
    char *verifier; /* "" when PKCE is not used */
    char *nonce;    /* "" when not OIDC */
    char *return_to;
    int64_t expires_at_ms;
} oauth_flow_t;

/* Store flow f under SHA-256(state) (the state itself is never stored). */
bool oauth_flow_put(oauth_ctx_t *x, const char *state, const oauth_flow_t *f, cx_error_t *err);
/* The flow of state (arena strings), not claimed; *found false when none. */
bool oauth_flow_find(oauth_ctx_t *x, const char *state, oauth_flow_t *out, bool *found,
                     cx_error_t *err);
/* Claim the flow of state: delete it by _id; *claimed true for exactly one of concurrent
 * claimers (single use even with replicas). */
bool oauth_flow_claim(oauth_ctx_t *x, const char *state, bool *claimed, cx_error_t *err);
/* Delete expired flows and abandoned PENDING connections (best effort), at most once per
 * OAUTH_FLOW_SWEEP_MS per process: an expired flow is refused when claimed anyway, so the
 * sweep only keeps the collections small and need not cost every StartConnect a database
 * write. A PENDING connection holds no token set and no tuple; once older than
 * OAUTH_PENDING_TTL_MS its flow has expired long since (OAUTH_FLOW_TTL_MS), so no callback can
 * complete it any more and it would only linger in the user's list. */
#define OAUTH_FLOW_SWEEP_MS  60000
#define OAUTH_PENDING_TTL_MS (2 * OAUTH_FLOW_TTL_MS)
void oauth_flows_sweep(oauth_ctx_t *x);

/* ---- connections (connections.c) ---------------------------------------------------------- */

/* A connection document: its read model (arena memory) and what the document keeps besides. */
typedef struct oauth_conn {
    Credex__V1__Connection *pb;
    char *secret_id; /* the token set's store secret, "" when none */
    char **resources;
    size_t nresources;
} oauth_conn_t;

/* "pending", "active", ... as documents store the state; NULL for an unknown value. */
const char *oauth_conn_state_name(Credex__V1__ConnectionState s);
/* The connection whose field equals value; *found false when none. A malformed document is
 * integrity_error. Blocking (one database read); arena memory. */
bool oauth_conn_find(oauth_ctx_t *x, const char *field, const char *value, oauth_conn_t *out,
                     bool *found, cx_error_t *err);
/* The connection of id through connections_cache (possibly older by the cache's bound: for
 * the token exchange's first read only; a refresh re-reads with oauth_conn_find). */
bool oauth_conn_find_cached(oauth_ctx_t *x, const char *id, oauth_conn_t *out, bool *found,
                            cx_error_t *err);
/* The connections matching filter into v[0..*n), at most cap (more: resource_exhausted).
 * Blocking (one database query); v is the caller's, its strings in the arena. */
bool oauth_conn_list(oauth_ctx_t *x, const bson_t *filter, oauth_conn_t *v, size_t cap, size_t *n,
                     cx_error_t *err);
/* Write k as the document's state (updated_at now). A live_key taken by another connection is
 * conflict; a vanished document not_found. Blocking (one database write). */
bool oauth_conn_save(oauth_ctx_t *x, oauth_conn_t *k, cx_error_t *err);
/* One success event about connection c (provider_key, connector_id, state, and one extra
 * attribute when extra_key is not NULL). Blocking (store AppendAuditEvent). */
bool oauth_conn_audit(oauth_ctx_t *x, const char *event, const Credex__V1__Connection *c,
                      const char *extra_key, const char *extra_value, cx_error_t *err);
/* c's granted and missing scopes from the token answer's scope text (space or comma
 * separated; "" = those the connector asked for). Arena memory. */
void oauth_conn_scopes(oauth_ctx_t *x, const Credex__V1__Connector *c, const char *granted,
                       Credex__V1__Connection *out);
/* The token set as store keeps it: a packed ProviderTokenSet of t with c's granted scopes,
 * obtained at now (*buf malloc'd: wipe, then free). Pure. */
bool oauth_conn_token_set(const oauth_tokens_t *t, const Credex__V1__Connection *c, int64_t now,
                          uint8_t **buf, size_t *len, cx_error_t *err);
/* End k: with at_provider, revoke at the provider first (best effort) and audit
 * connection.disconnected; then delete the token set and save k REVOKED with reason (live_key
 * "gone/<id>"). Without at_provider nothing is audited here (the caller audits). Blocking
 * (provider, store, database). */
bool oauth_conn_end(oauth_ctx_t *x, oauth_conn_t *k, const char *reason, bool at_provider,
                    cx_error_t *err);

/* Mark the ACTIVE connections of connector c whose granted scopes lack one of c's scopes
 * RECONSENT_REQUIRED ("scope_changed"), each audited as connection.reconsent_required. */
bool oauth_connections_mark_reconsent(oauth_ctx_t *x, const Credex__V1__Connector *c, size_t *count,
                                      cx_error_t *err);

/* End every connection of a deleted connector: revoked at the provider where it can be (best
 * effort, before the client secret goes), token set deleted, REVOKED ("connector_deleted"),
 * each audited as connection.disconnected. Idempotent. */
bool oauth_connections_end_all(oauth_ctx_t *x, const char *connector_id, size_t *count,
                               cx_error_t *err);

extern const rpc_method_impl_t oauth_connections_impls[];
extern const size_t oauth_connections_nimpls;

/* ---- provider tokens (tokens.c) ------------------------------------------------------------ */

/* The single-flight table and the lease holder name of o, owned by o (oauth_tokens_cleanup
 * frees them). Before the server starts; the table is then thread-safe (one mutex). */
bool oauth_tokens_setup(oauth_t *o, cx_error_t *err);
void oauth_tokens_cleanup(oauth_t *o); /* NULL-safe */

/* credex.v1.ProviderTokens: method table for rpc_service_def_t. */
extern const rpc_method_impl_t oauth_tokens_impls[];
extern const size_t oauth_tokens_nimpls;

#endif
