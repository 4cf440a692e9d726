//go:build tools

// Package tools pins openfga for scripts/setup; nothing here is compiled into credex.
package tools

import _ "github.com/openfga/openfga/cmd/openfga"
