//go:build tools

// Package tools pins local-kms (the AWS KMS emulator of the aws-kms tests) for scripts/setup; nothing here is compiled into credex.
package tools

import _ "github.com/nsmithuk/local-kms"
