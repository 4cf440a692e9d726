//go:build tools

// Package tools pins ferretdb for scripts/setup; nothing here is compiled into credex.
package tools

import _ "github.com/FerretDB/FerretDB/cmd/ferretdb"
