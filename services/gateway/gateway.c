/*
 * gateway: registration of the public API. Any authenticated peer may connect (the edge, the
 * CLI, agent runtimes); who may do what is decided per request from the JWTs and OpenFGA, which
 * arrive with issue 4.
 */
#include <stddef.h>

#include "services/gateway/gateway.h"
#include "credex/v1/gateway.pb-c.h"
#include "credex/v1/oauth.pb-c.h"

static const rpc_service_def_t gateway_services[] = {
    {.desc = &credex__v1__secrets__descriptor,
     .unimplemented_note = "planned: issue 4, secrets end to end"},
    {.desc = &credex__v1__retrieval__descriptor,
     .unimplemented_note = "planned: issue 4 (Retrieve); Exchange in a later issue"},
    {.desc = &credex__v1__audit__descriptor,
     .unimplemented_note = "planned: a later issue, audit queries"},
    {.desc = &credex__v1__admin__descriptor,
     .unimplemented_note = "planned: issue 4 (Health); migration preview in a later issue"},
    {.desc = &credex__v1__connectors__descriptor,
     .unimplemented_note = "planned: a later issue, OAuth connectors"},
    {.desc = &credex__v1__connections__descriptor,
     .unimplemented_note = "planned: a later issue, provider connections"},
};

bool gateway_setup(rpc_server_t *srv, const cx_config_t *cfg, void **state, cx_error_t *err)
{
    (void)cfg;
    *state = NULL;
    for (size_t i = 0; i < sizeof(gateway_services) / sizeof(gateway_services[0]); i++)
        if (!rpc_server_add_service(srv, &gateway_services[i], err))
            return false;
    return true;
}

void gateway_cleanup(void *state)
{
    (void)state;
}
