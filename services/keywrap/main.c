/* credex-keywrap: a thin process over services/keywrap (see keywrap.h) and common/svc. */
#include "common/svc/svc.h"
#include "services/keywrap/keywrap.h"

int main(void)
{
    static const svc_def_t def = {
        .id = CX_SVC_KEYWRAP, .setup = keywrap_setup, .cleanup = keywrap_cleanup};
    return svc_main(&def);
}
