"""A faithful kube-apiserver stand-in served over real HTTP for tests (see README.md here).

from tests.fakeapi import FakeAPIServer
with FakeAPIServer() as api:
    client = api.api_client()          # kubernetes.client.ApiClient via a kubeconfig
"""

from .admission import UserInfo
from .rest import RequestRecord
from .server import FakeAPIServer

__all__ = ["FakeAPIServer", "RequestRecord", "UserInfo"]
