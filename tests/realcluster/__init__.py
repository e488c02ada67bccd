"""Real upstream control plane (etcd, kube-apiserver, kube-scheduler) for tests; see controlplane.py."""
