/* credex-edge: a thin process over services/edge (see edge.h) and common/svc. */
#include "common/svc/svc.h"
#include "services/edge/edge.h"

int main(void)
{
    static const svc_def_t def = {.id = CX_SVC_EDGE, .setup = edge_setup, .cleanup = edge_cleanup};
    return svc_main(&def);
}
