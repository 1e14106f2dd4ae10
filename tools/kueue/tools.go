//go:build tools

// Package tools pins Kueue's manager, which build.sh compiles, so that `go mod tidy` records every
// module it needs in go.sum. It is never built (the tools build tag is never set). JobSet's
// controller has its own module in jobset/.
package tools

import (
	_ "sigs.k8s.io/kueue/cmd/kueue"
)
