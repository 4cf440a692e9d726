/* credex-store: a thin process over services/store (see store.h) and common/svc. */
#include "common/svc/svc.h"
#include "services/store/store.h"

int main(void)
{
    static const svc_def_t def = {
        .id = CX_SVC_STORE, .setup = store_setup, .cleanup = store_cleanup};
    return svc_main(&def);
}
