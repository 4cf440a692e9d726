/* credex-gateway: a thin process over services/gateway (see gateway.h) and common/svc. */
#include "common/svc/svc.h"
#include "services/gateway/gateway.h"

int main(void)
{
    static const svc_def_t def = {
        .id = CX_SVC_GATEWAY, .setup = gateway_setup, .cleanup = gateway_cleanup};
    return svc_main(&def);
}
