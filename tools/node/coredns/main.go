// Command coredns is CoreDNS with only the plugins the test node's Corefile uses (tests/fixtures/
// node.py), the way CoreDNS documents building a custom set: its default build compiles every
// cloud provider's plugin and took 8-9 of the node build's 10 minutes on 2 cores.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
)

// directives in CoreDNS's own order (plugin.cfg): it decides the order of the plugin chain.
var directives = []string{"bind", "health", "errors", "cache", "kubernetes"}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
