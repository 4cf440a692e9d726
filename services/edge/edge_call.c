/*
 * edge_call: one route call. The request message is built from the route's bindings, sent to
 * the gateway as a browser-kind call for the bearer token's user (x-credex-caller: browser,
 * never a service token), and the reply is written with the one JSON mapping; a failure becomes
 * the one error body. Every body is wiped when freed: a create or rotate request carried a
 * secret value, and an answer is never kept longer than it takes to send it.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/contract/cx_contract.h"
#include "common/log/cx_log.h"
#include "common/pjson/pjson.h"
#include "grpc/health/v1/health.pb-c.h"
#include "services/edge/edge_internal.h"

/* ---- answers ----------------------------------------------------------------------------- */

void edge_answer_free(edge_answer_t *a)
{
    if (a == NULL)
        return;
    free(a->location);
    a->location = NULL;
    if (a->body == NULL)
        return;
    explicit_bzero(a->body, a->len);
    free(a->body);
    a->body = NULL;
    a->len = 0;
}

void edge_answer_text(edge_answer_t *out, unsigned status, const char *json)
{
    out->status = status;
    out->code = CX_OK;
    out->len = strlen(json);
    out->body = strdup(json);
    if (out->body == NULL)
        out->len = 0;
}

void edge_answer_error(edge_answer_t *out, unsigned status, cx_code_t code, const char *message,
                       const char *correlation_id)
{
    char msg[CX_ERROR_MESSAGE_MAX];
    snprintf(msg, sizeof(msg), "%s", message != NULL ? message : "");
    /* A message cut inside a character (gRPC details are capped) would make json_pack fail. */
    if (!cx_contract_utf8((const uint8_t *)msg, strlen(msg), NULL))
        for (char *p = msg; *p != '\0'; p++)
            if ((unsigned char)*p >= 0x80)
                *p = '?';
    out->status = status != 0 ? status : (unsigned)cx_code_http_status(code);
    out->code = code;
    out->body = NULL;
    out->len = 0;
    json_t *doc = json_pack("{s:{s:s,s:s,s:s}}", "error", "code", cx_code_reason(code), "message",
                            msg, "correlation_id", correlation_id != NULL ? correlation_id : "");
    if (doc != NULL) {
        out->body = json_dumps(doc, JSON_COMPACT);
        json_decref(doc);
    }
    if (out->body != NULL)
        out->len = strlen(out->body);
}

void edge_answer_refusal(edge_answer_t *out, edge_refusal_t r, const cx_error_t *err,
                         const char *correlation_id)
{
    const edge_refusal_info_t *info = edge_refusal(r);
    const char *msg = info->message;
    if (r == EDGE_R_BAD_REQUEST && err != NULL && err->message[0] != '\0')
        msg = err->message;
    edge_answer_error(out, info->status, info->code, msg, correlation_id);
}

/* ---- gateway failures --------------------------------------------------------------------- */

/* What the caller is told about a failed gateway call. The gateway's own messages are written
 * for callers and never hold input values; what the transport says about itself (addresses,
 * connection errors) is replaced by a fixed sentence and only logged. */
static void answer_gateway_error(const edge_route_t *r, const cx_error_t *e,
                                 const char *correlation_id, edge_answer_t *out)
{
    const char *fixed = NULL;
    switch (e->code) {
    case CX_ERR_UNAVAILABLE:
        fixed = "a credential service is unavailable";
        break;
    case CX_ERR_DEADLINE_EXCEEDED:
        fixed = "a credential service did not answer in time";
        break;
    case CX_ERR_CANCELLED:
        fixed = "the call was cancelled";
        break;
    case CX_ERR_INTERNAL:
        fixed = "internal error";
        break;
    default:
        break;
    }
    if (fixed != NULL)
        cx_log_warn(correlation_id, "edge.gateway_failed", CX_LOG_STR("route", r->path),
                    CX_LOG_STR("rpc", r->rpc), CX_LOG_STR("reason", cx_code_reason(e->code)),
                    CX_LOG_STR("detail", e->message));
    edge_answer_error(out, 0, e->code, fixed != NULL ? fixed : e->message, correlation_id);
}

/* ---- a route call -------------------------------------------------------------------------- */

/* The bool reply field that turns 200 into 201 (CreateSecretResponse.created). */
static bool reply_created(const edge_route_t *r, const ProtobufCMessage *reply)
{
    if (r->created_field == NULL)
        return false;
    const ProtobufCFieldDescriptor *f = edge_field_path(reply->descriptor, r->created_field, NULL);
    if (f == NULL || f->type != PROTOBUF_C_TYPE_BOOL)
        return false;
    return *(const protobuf_c_boolean *)((const char *)reply + f->offset) != 0;
}

void edge_call_route(const edge_t *edge, const edge_call_in_t *in, edge_answer_t *out)
{
    const edge_route_t *r = in->match->route;
    const char *cid = in->correlation_id;
    ProtobufCMessage *req = NULL, *reply = NULL;
    cx_error_t err;
    cx_error_clear(&err);

    if (!edge_request_build(r, in->match, in->query, in->body, in->body_len,
                            edge->cfg->edge_max_body_bytes, in->arena, &req, &err)) {
        edge_refusal_t why =
            err.code == CX_ERR_RESOURCE_EXHAUSTED ? EDGE_R_BODY_TOO_LARGE : EDGE_R_BAD_REQUEST;
        if (err.code == CX_ERR_INTERNAL) {
            cx_log_error(cid, "edge.route_broken", CX_LOG_STR("route", r->path),
                         CX_LOG_STR("detail", err.message));
            edge_answer_error(out, 0, CX_ERR_INTERNAL, "internal error", cid);
            return;
        }
        cx_log_info(cid, "edge.refused", CX_LOG_STR("reason", edge_refusal(why)->name),
                    CX_LOG_STR("route", r->path));
        edge_answer_refusal(out, why, &err, cid);
        return;
    }

    const rpc_header_t headers[] = {
        {.key = "x-credex-user-token", .value = in->token},
        {.key = "x-credex-caller", .value = "browser"},
    };
    rpc_call_options_t o = {.deadline_ms = edge->cfg->rpc_default_deadline_ms,
                            .correlation_id = cid,
                            .traceparent = in->traceparent,
                            .headers = headers,
                            .nheaders = sizeof(headers) / sizeof(headers[0])};
    if (!rpc_client_unary(edge->gateway, r->service, r->rpc, req, &o, in->arena, &reply, &err)) {
        answer_gateway_error(r, &err, cid, out);
        return;
    }
    /* Defence in depth: the gateway never answers material to the edge; should it ever, the
     * reply stays in the arena (wiped on free) and the browser learns nothing. */
    if (r->material) {
        cx_log_error(cid, "edge.material_refused", CX_LOG_STR("route", r->path),
                     CX_LOG_STR("rpc", r->rpc));
        edge_answer_error(out, 0, CX_ERR_INTERNAL, "internal error", cid);
        return;
    }
    char where[EDGE_LOCATION_MAX];
    bool replaced = false;
    if (!edge_redirect_location(r, reply, edge->cfg->edge_ui_url, where, sizeof(where), &replaced,
                                &err)) {
        cx_log_error(cid, "edge.redirect_refused", CX_LOG_STR("route", r->path),
                     CX_LOG_STR("detail", err.message));
        edge_answer_error(out, 0, CX_ERR_INTERNAL, "internal error", cid);
        return;
    }
    if (replaced) /* the client's return_to was not a path of the UI: the UI's root instead */
        cx_log_info(cid, "edge.return_to_replaced", CX_LOG_STR("route", r->path));
    char *location = where[0] != '\0' ? strdup(where) : NULL;
    char *text = NULL;
    size_t len = 0;
    if ((where[0] != '\0' && location == NULL) || !pjson_encode(&text, &len, reply, NULL, &err)) {
        free(location);
        cx_log_error(cid, "edge.reply_unwritable", CX_LOG_STR("route", r->path),
                     CX_LOG_STR("detail", err.message));
        edge_answer_error(out, 0, CX_ERR_INTERNAL, "internal error", cid);
        return;
    }
    out->status = location != NULL ? r->redirect.status : reply_created(r, reply) ? 201 : r->status;
    out->code = CX_OK;
    out->body = text;
    out->len = len;
    out->location = location;
}

bool edge_gateway_ready(const edge_t *edge, const char *correlation_id, unsigned timeout_ms,
                        cx_error_t *err)
{
    rpc_arena_t *arena = rpc_arena_new(256);
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *reply = NULL;
    rpc_call_options_t o = {.deadline_ms = timeout_ms, .correlation_id = correlation_id};
    cx_error_t e;
    cx_error_clear(&e);
    bool ok = rpc_client_unary(edge->gateway, &grpc__health__v1__health__descriptor, "Check",
                               &req.base, &o, arena, &reply, &e);
    if (ok && ((Grpc__Health__V1__HealthCheckResponse *)reply)->status !=
                  GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING)
        ok = false;
    rpc_arena_free(arena);
    if (!ok)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "the gateway is not reachable or not serving");
    return true;
}
