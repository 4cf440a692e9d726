/*
 * edge: the HTTP/JSON translator for the UI (docs/HTTP_API.md). It holds no state of its own
 * beyond the configuration: every route is a gateway call made as a browser-kind caller
 * (x-credex-caller: browser, the user's bearer token, never a service token), so the gateway
 * decides everything and never answers credential material to the edge. Its gRPC port serves
 * health and reflection only.
 */
#include <stdlib.h>

#include "common/log/cx_log.h"
#include "common/pjson/pjson.h"
#include "common/svc/svc.h"
#include "services/edge/edge.h"
#include "services/edge/edge_internal.h"
#include "services/edge/edge_openapi.h"

void edge_cleanup(void *state)
{
    edge_t *e = state;
    if (e == NULL)
        return;
    /* The HTTP threads use the gateway client until they stop. */
    edge_http_stop(e);
    rpc_client_free(e->gateway);
    free(e->openapi);
    free(e);
}

bool edge_setup(rpc_server_t *srv, const cx_config_t *cfg, void **state, cx_error_t *err)
{
    (void)srv;
    *state = NULL;
    /* Create and rotate bodies carry secret values through jansson's parser: make its frees
     * wipe (before any thread uses jansson). */
    pjson_jansson_wipe_frees();
    edge_t *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    e->cfg = cfg;
    size_t openapi_len = 0;
    if (!edge_origins_parse(cfg->edge_allowed_origins, &e->origins, err) ||
        !edge_openapi_json(&e->openapi, &openapi_len, err))
        goto fail;
    rpc_tls_t tls = svc_tls(cfg);
    e->gateway = rpc_client_new(cfg->addr[CX_SVC_GATEWAY], "gateway", &tls, err);
    if (e->gateway == NULL || !edge_http_start(e, err))
        goto fail;
    cx_log_info(NULL, "edge.http_started", CX_LOG_STR("addr", cfg->edge_http_addr),
                CX_LOG_INT("port", e->http_port), CX_LOG_BOOL("tls", cfg->edge_tls_cert[0] != 0),
                CX_LOG_INT("threads", cfg->edge_http_threads),
                CX_LOG_INT("allowed_origins", (int64_t)e->origins.n),
                CX_LOG_BOOL("allow_same_site", cfg->edge_allow_same_site));
    *state = e;
    return true;
fail:
    edge_cleanup(e);
    return false;
}
