// Command etcd is etcd's own main (go.etcd.io/etcd/server/v3/etcdmain), for
// the Kubernetes API server the deploy tests run against.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
