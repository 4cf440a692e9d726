"""credex client for agent runtimes: retrieve secrets by reference and exchange a user's identity
for provider tokens, over mTLS to the credex gateway. See clients/python/README.md."""

from credex.client import Client, Injection, ProviderToken, ResourceContext, Secret
from credex.errors import (BrowserDenied, CredexError, DeadlineExceeded, FailedPrecondition, FeatureDisabled,
                           InvalidArgument, NotFound, PermissionDenied, RateLimited, ReconsentRequired, Unauthenticated,
                           Unavailable, Unimplemented)

__all__ = ["Client", "Secret", "ProviderToken", "Injection", "ResourceContext", "CredexError", "Unauthenticated",
           "PermissionDenied", "NotFound", "InvalidArgument", "FailedPrecondition", "Unavailable",
           "DeadlineExceeded", "BrowserDenied", "FeatureDisabled", "Unimplemented", "ReconsentRequired", "RateLimited"]
