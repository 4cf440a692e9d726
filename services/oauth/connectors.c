/* oauth: connectors (see oauth_internal.h). Being built. */
#include "services/oauth/oauth_internal.h"
