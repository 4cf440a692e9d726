/*
 * credex.v1.Retrieval.Exchange and Inject: a user's provider access token for a service acting
 * for that user (MCP impersonation). gateway_run has already checked, in this order, the browser
 * classification, CREDENTIAL_EXCHANGE_ENABLED, the tokens, that the caller acts for a user, the
 * platform's retriever allow-list and its exchanger grant (admit_caller, GATEWAY_M_EXCHANGE),
 * and the request contract (intended use and resource context). The steps here keep every
 * check before the one call that may refresh or return a token:
 *
 *   1. min_valid_for_ms within [0, 1 h]                                 invalid_argument
 *   2. a connection_id the request names: the user owns it in OpenFGA   not_found
 *   3. ProviderTokens.GetProviderToken(pick_only): which connection, which connector; no
 *      material, no refresh (oauth's own state checks answer here: failed_precondition,
 *      reconsent_required for a scope not granted, not_found)
 *   4. the picked connection: the user owns it                         not_found
 *   5. the connector is enabled for the user (enabled_for)              permission_denied
 *   6. GetProviderToken for exactly that connection: refresh happens here only
 *
 * A connection the user does not own is the not_found of one that does not exist (as in
 * connections.c), so that connection ids cannot be probed; a connector the user can see but that
 * is not enabled for them is permission_denied (as for a connect). The gateway audits the
 * refusals it decides (event token.exchanged, or token.injected for Inject); oauth audits its own
 * answers, a refused pick included (token.exchanged), and the issuance (token.exchanged) before
 * the material leaves it. An Inject adds the gateway's token.injected success event.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/log/cx_log.h"
#include "credex/v1/gateway.pb-c.h"
#include "credex/v1/oauth.pb-c.h"
#include "services/gateway/gateway_internal.h"

#define MIN_VALID_MAX_MS  3600000 /* gateway.proto: at most one hour */
#define ISSUED_TOKEN_TYPE "urn:ietf:params:oauth:token-type:access_token"
#define NOT_FOUND_MSG     "connection not found"
#define TOKEN_TYPE_MAX    64 /* longer than any scheme a provider names */

static const ProtobufCServiceDescriptor *const tokens_svc =
    &credex__v1__provider_tokens__descriptor;

/* Does the user hold `relation` on <type>:<id> (an id from the request or from oauth)? */
static bool user_holds(gateway_req_t *r, const char *relation, const char *type, const char *id,
                       bool *held, cx_error_t *err)
{
    if (!gateway_id_valid(id))
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "oauth sent a malformed answer");
    char user[CX_FGA_NAME_MAX], obj[CX_FGA_NAME_MAX];
    gateway_user_fga(r, user, sizeof(user));
    snprintf(obj, sizeof(obj), "%s:%s", type, id);
    return gateway_fga_check(r->gw, user, relation, obj, held, err);
}

/* Does the user own the connection? Else the not_found of an absent connection. */
static bool user_owns(gateway_req_t *r, const char *connection_id, cx_error_t *err)
{
    bool owner = false;
    if (!user_holds(r, "owner", "provider_connection", connection_id, &owner, err))
        return false;
    return owner ? true : cx_error_set(err, CX_ERR_NOT_FOUND, NOT_FOUND_MSG);
}

/* Is the connector enabled for the user (a team of theirs, or everyone)? */
static bool connector_enabled(gateway_req_t *r, const char *connector_id, cx_error_t *err)
{
    bool enabled = false;
    if (!user_holds(r, "enabled_for", "oauth_connector", connector_id, &enabled, err))
        return false;
    return enabled ? true
                   : cx_error_set(err, CX_ERR_PERMISSION_DENIED,
                                  "this connector is not enabled for you");
}

/* One GetProviderToken; oauth's not_found gets our one message for "absent" and "hidden". */
static bool get_token(gateway_req_t *r, Credex__V1__GetProviderTokenRequest *q,
                      Credex__V1__GetProviderTokenResponse **out, cx_error_t *err)
{
    if (gateway_forward_oauth(r, tokens_svc, "GetProviderToken", &q->base, (ProtobufCMessage **)out,
                              err))
        return true;
    if (err->code == CX_ERR_NOT_FOUND)
        cx_error_set(err, CX_ERR_NOT_FOUND, NOT_FOUND_MSG);
    return false;
}

/* Steps 1-6 of the header comment; *out (the call arena) holds the token on success. */
static bool exchange_token(gateway_req_t *r, Credex__V1__GetProviderTokenResponse **out,
                           cx_error_t *err)
{
    const Credex__V1__ExchangeRequest *req = (const Credex__V1__ExchangeRequest *)r->request;
    if (req->min_valid_for_ms < 0 || req->min_valid_for_ms > MIN_VALID_MAX_MS)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "min_valid_for_ms must be within 0..3600000");
    bool named = req->connection_id && req->connection_id[0];
    if (!named && !(req->connector_id && req->connector_id[0]) &&
        !(req->provider_key && req->provider_key[0]))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "provider_key, connector_id or connection_id is required");
    /* Checked before oauth is asked, so that oauth's answers cannot tell ids apart. */
    if (named && !user_owns(r, req->connection_id, err))
        return false;

    Credex__V1__GetProviderTokenRequest q = CREDEX__V1__GET_PROVIDER_TOKEN_REQUEST__INIT;
    q.caller = gateway_caller_context(r, req->intended_use, req->resource_context);
    q.connection_id = req->connection_id;
    q.connector_id = req->connector_id;
    q.provider_key = req->provider_key;
    q.required_scopes = req->required_scopes;
    q.n_required_scopes = req->n_required_scopes;
    q.min_valid_for_ms = req->min_valid_for_ms;
    q.pick_only = true;
    Credex__V1__GetProviderTokenResponse *pick = NULL;
    if (!get_token(r, &q, &pick, err))
        return false;
    if (!gateway_id_valid(pick->connection_id))
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "oauth sent a malformed answer");
    r->resource_id = pick->connection_id;
    if ((!named || strcmp(pick->connection_id, req->connection_id) != 0) &&
        !user_owns(r, pick->connection_id, err))
        return false;
    if (!connector_enabled(r, pick->connector_id, err))
        return false;

    /* Every check passed: only this call may refresh, and it is about the checked connection. */
    q.pick_only = false;
    q.connection_id = pick->connection_id;
    q.connector_id = pick->connector_id;
    q.provider_key = pick->provider_key;
    Credex__V1__GetProviderTokenResponse *tok = NULL;
    if (!get_token(r, &q, &tok, err))
        return false;
    if (!tok->connection_id || strcmp(tok->connection_id, pick->connection_id) != 0 ||
        tok->material.len == 0)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "oauth sent a malformed answer");
    rpc_call_log_field(r->call, CX_LOG_STR("connection_id", tok->connection_id));
    rpc_call_log_field(r->call, CX_LOG_STR("service_id", r->caller.service_id));
    rpc_call_log_field(r->call, CX_LOG_STR("user", r->caller.user_id));
    rpc_call_log_field(r->call, CX_LOG_BOOL("refreshed", tok->refreshed));
    *out = tok;
    return true;
}

/* RFC 6750 names the scheme "Bearer"; providers answer "bearer" as often (RFC 6749 makes the
 * type case-insensitive), and some name none. Other schemes are passed on as the provider
 * named them. */
static const char *token_type(const char *t)
{
    if (!t || !t[0] || strcasecmp(t, "bearer") == 0)
        return "Bearer";
    return t;
}

static bool retrieval_exchange(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    Credex__V1__GetProviderTokenResponse *tok = NULL;
    if (!exchange_token(r, &tok, err))
        return false;
    Credex__V1__ExchangeResponse *resp = rpc_call_alloc(r->call, sizeof(*resp));
    credex__v1__exchange_response__init(resp);
    resp->connection_id = tok->connection_id;
    resp->provider_key = tok->provider_key;
    resp->token_type = (char *)token_type(tok->token_type);
    resp->material = tok->material;
    resp->expires_at_ms = tok->expires_at_ms;
    resp->scopes = tok->scopes;
    resp->n_scopes = tok->n_scopes;
    resp->provider_account_id = tok->provider_account_id;
    resp->provider_resource_id = tok->provider_resource_id;
    resp->issued_token_type = ISSUED_TOKEN_TYPE;
    *reply = &resp->base;
    return true;
}

static bool retrieval_inject(gateway_req_t *r, ProtobufCMessage **reply, cx_error_t *err)
{
    Credex__V1__GetProviderTokenResponse *tok = NULL;
    if (!exchange_token(r, &tok, err))
        return false;
    const char *type = token_type(tok->token_type);
    size_t tlen = strnlen(type, TOKEN_TYPE_MAX + 1);
    if (tlen > TOKEN_TYPE_MAX)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "oauth sent a malformed answer");
    /* "<scheme> <token>" in the call arena, which is wiped when the call ends. */
    size_t vlen = tlen + 1 + tok->material.len;
    uint8_t *v = rpc_call_alloc(r->call, vlen);
    memcpy(v, type, tlen);
    v[tlen] = ' ';
    memcpy(v + tlen + 1, tok->material.data, tok->material.len);
    Credex__V1__InjectHeader *h = rpc_call_alloc(r->call, sizeof(*h));
    credex__v1__inject_header__init(h);
    h->name = "Authorization";
    h->value.data = v;
    h->value.len = vlen;
    Credex__V1__InjectHeader **hs = rpc_call_alloc(r->call, sizeof(*hs));
    hs[0] = h;
    /* oauth recorded the issuance (token.exchanged); this records what it was for. */
    if (!gateway_audit_success(r, tok->connection_id, "provider_key", tok->provider_key, err))
        return false;
    Credex__V1__InjectResponse *resp = rpc_call_alloc(r->call, sizeof(*resp));
    credex__v1__inject_response__init(resp);
    resp->connection_id = tok->connection_id;
    resp->provider_key = tok->provider_key;
    resp->headers = hs;
    resp->n_headers = 1;
    resp->api_base_url = tok->api_base_url;
    resp->expires_at_ms = tok->expires_at_ms;
    resp->provider_account_id = tok->provider_account_id;
    resp->provider_resource_id = tok->provider_resource_id;
    *reply = &resp->base;
    return true;
}

static const gateway_method_t m_exchange = {.event_type = "token.exchanged",
                                            .resource_type = "provider_connection",
                                            .id_field = "connection_id",
                                            .flags = GATEWAY_M_SERVER_SIDE | GATEWAY_M_USER |
                                                     GATEWAY_M_EXCHANGE,
                                            .run = retrieval_exchange};

static const gateway_method_t m_inject = {.event_type = "token.injected",
                                          .resource_type = "provider_connection",
                                          .id_field = "connection_id",
                                          .flags = GATEWAY_M_SERVER_SIDE | GATEWAY_M_USER |
                                                   GATEWAY_M_EXCHANGE,
                                          .run = retrieval_inject};

bool gateway_exchange_entry(rpc_call_t *call, const ProtobufCMessage *request,
                            ProtobufCMessage **reply, cx_error_t *err)
{
    return gateway_run(call, request, reply, err, &m_exchange);
}

bool gateway_inject_entry(rpc_call_t *call, const ProtobufCMessage *request,
                          ProtobufCMessage **reply, cx_error_t *err)
{
    return gateway_run(call, request, reply, err, &m_inject);
}
