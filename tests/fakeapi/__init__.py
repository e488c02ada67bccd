"""A faithful kube-apiserver stand-in served over real HTTP for tests (see README.md here).

from tests.fakeapi import FakeAPIServer
with FakeAPIServer() as api:
    client = api.api_client()          # kubernetes.client.ApiClient via a kubeconfig (to set things up)
    kube = api.kube_client()           # qosgate's KubeClient via a kubeconfig (to hand to qosgate code)
"""

from .admission import UserInfo
from .rest import RequestRecord
from .server import FakeAPIServer

__all__ = ["FakeAPIServer", "RequestRecord", "UserInfo"]
