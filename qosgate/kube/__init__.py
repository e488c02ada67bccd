"""The cluster layer: everything that talks to kube-apiserver, kept apart from the pure core.

    config      load_api_client(kubeconfig=None, context=None) -> KubeClient (kubeconfig / in-cluster)
    kubeconfig  kubeconfig merging, relative paths and validation → ClientConfig (pure)
    transport   KubeClient: urllib3 pool, TLS, bearer/token-file/basic/client-cert/exec-plugin auth
    rest        raw-JSON requests over the KubeClient (ApiError, TransportError)
    records     PodRecord / NodeRecord and their builders from raw API dicts (pure)
    store       PodStore / NodeStore / ObjectStore: thread-safe caches with incremental aggregates (pure)
    informer    Informer (paginated LIST + WATCH with bookmarks, 410 → relist) and ClusterCache
    leader      LeaderElector over a coordination.k8s.io/v1 Lease
    ledger      Ledger: optimistic-concurrency read–modify–write of a ConfigMap

Submodules are imported explicitly (nothing here imports a cluster client), so the pure parts stay
cheap to import for the webhook and the CLI.
"""
