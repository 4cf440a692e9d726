/* credex-oauth: a thin process over services/oauth (see oauth.h) and common/svc. */
#include "common/svc/svc.h"
#include "services/oauth/oauth.h"

int main(void)
{
    static const svc_def_t def = {
        .id = CX_SVC_OAUTH, .setup = oauth_setup, .cleanup = oauth_cleanup};
    return svc_main(&def);
}
