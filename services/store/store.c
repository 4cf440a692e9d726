/* store: registration of credex.v1.CredentialStore. The handlers arrive with issue 4. */
#include "services/store/store.h"
#include "credex/v1/store.pb-c.h"

/* Deny before decrypt is structural: only the policy gateway (and oauth, for connector client
 * secrets and provider token sets) may reach the store at all. */
static const char *const store_peers[] = {"gateway", "oauth", NULL};

bool store_setup(rpc_server_t *srv, const cx_config_t *cfg, void **state, cx_error_t *err)
{
    (void)cfg;
    *state = NULL;
    static const rpc_service_def_t def = {
        .desc = &credex__v1__credential_store__descriptor,
        .allowed_peers = store_peers,
        .unimplemented_note = "planned: issue 4, MongoDB envelope store",
    };
    return rpc_server_add_service(srv, &def, err);
}

void store_cleanup(void *state)
{
    (void)state;
}
