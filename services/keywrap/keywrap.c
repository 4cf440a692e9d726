/* keywrap: registration of credex.v1.KeyWrap. The handlers arrive with issue 4 (local-cmk). */
#include "services/keywrap/keywrap.h"
#include "credex/v1/keywrap.pb-c.h"

static const char *const store_only[] = {"store", NULL};
/* gateway asks Describe for the credential health report (key wrapper status). */
static const char *const describe_peers[] = {"store", "gateway", NULL};

static const rpc_method_impl_t keywrap_impls[] = {
    {.method = "Describe", .kind = RPC_UNARY, .allowed_peers = describe_peers},
};

bool keywrap_setup(rpc_server_t *srv, const cx_config_t *cfg, void **state, cx_error_t *err)
{
    (void)cfg;
    *state = NULL;
    static const rpc_service_def_t def = {
        .desc = &credex__v1__key_wrap__descriptor,
        .impls = keywrap_impls,
        .nimpls = sizeof(keywrap_impls) / sizeof(keywrap_impls[0]),
        .allowed_peers = store_only,
        .unimplemented_note = "planned: issue 4, keywrap local-cmk",
    };
    return rpc_server_add_service(srv, &def, err);
}

void keywrap_cleanup(void *state)
{
    (void)state;
}
