/*
 * edge: for now only health and reflection on its gRPC port; the HTTP/JSON translation of the
 * required REST routes (docs/REQUIREMENTS.md, docs/API.md) onto gateway arrives with the issues that implement each route family.
 */
#include "services/edge/edge.h"

bool edge_setup(rpc_server_t *srv, const cx_config_t *cfg, void **state, cx_error_t *err)
{
    (void)srv;
    (void)cfg;
    (void)err;
    *state = NULL;
    return true;
}

void edge_cleanup(void *state)
{
    (void)state;
}
