// Command pause is the sandbox container of every pod on the test node: it holds the pod's
// namespaces and does nothing until the kubelet stops it. Built here because no image can be
// pulled from a registry on the test machines.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	// As PID 1 of the sandbox it must also reap children that exit (zombies would pile up).
	signal.Ignore(syscall.SIGCHLD)
	<-stop
}
