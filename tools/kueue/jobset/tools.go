//go:build tools

// Package tools pins the JobSet controller that ../build.sh compiles. JobSet has a module of its
// own: it needs an older controller-runtime than Kueue's manager.
package tools

import (
	_ "sigs.k8s.io/jobset"
)
