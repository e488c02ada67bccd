// Command etcd is upstream etcd (go.etcd.io/etcd/server/v3), built by tests/realcluster/build.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
