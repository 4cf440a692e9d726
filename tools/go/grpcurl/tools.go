//go:build tools

// Package tools pins grpcurl for scripts/setup; nothing here is compiled into credex.
package tools

import _ "github.com/fullstorydev/grpcurl/cmd/grpcurl"
