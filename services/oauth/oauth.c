/* oauth: registration of credex.v1.Connectors, Connections and ProviderTokens (a later issue). */
#include <stddef.h>

#include "services/oauth/oauth.h"
#include "credex/v1/oauth.pb-c.h"

/* Everything reaches oauth through the policy gateway. */
static const char *const gateway_only[] = {"gateway", NULL};

static const rpc_service_def_t oauth_services[] = {
    {.desc = &credex__v1__connectors__descriptor,
     .allowed_peers = gateway_only,
     .unimplemented_note = "planned: a later issue, OAuth connectors"},
    {.desc = &credex__v1__connections__descriptor,
     .allowed_peers = gateway_only,
     .unimplemented_note = "planned: a later issue, provider connections"},
    {.desc = &credex__v1__provider_tokens__descriptor,
     .allowed_peers = gateway_only,
     .unimplemented_note = "planned: a later issue, provider token exchange"},
};

bool oauth_setup(rpc_server_t *srv, const cx_config_t *cfg, void **state, cx_error_t *err)
{
    (void)cfg;
    *state = NULL;
    for (size_t i = 0; i < sizeof(oauth_services) / sizeof(oauth_services[0]); i++)
        if (!rpc_server_add_service(srv, &oauth_services[i], err))
            return false;
    return true;
}

void oauth_cleanup(void *state)
{
    (void)state;
}
