//go:build tools

// Package tools pins helm for scripts/setup (the chart tests run helm lint and helm template);
// nothing here is compiled into credex.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
