"""The ConfigMap ledger against the fake API server: optimistic concurrency never loses an update."""

from __future__ import annotations

import threading

import pytest

from qosgate.kube.ledger import ConfigMapLedger, LedgerConflictError
from qosgate.kube.rest import ApiError, request_json
from qosgate.kube.transport import KubeClient
from tests.kube.kubeops import create_namespace

NS = "qosgate-system"


@pytest.fixture
def namespace(client: KubeClient) -> str:
    create_namespace(client, NS)
    return NS


def increment(data: dict[str, str]) -> int:
    value = int(data.get("counter", "0")) + 1
    data["counter"] = str(value)
    return value


def test_creates_on_first_update_and_reads_back(client: KubeClient, namespace: str) -> None:
    ledger = ConfigMapLedger(client, namespace, "ledger", labels={"app": "qosgate"})
    assert ledger.read() == {}
    assert ledger.update(increment) == 1
    assert ledger.update(increment) == 2
    assert ledger.read() == {"counter": "2"}
    cm = request_json(client, "GET", f"/api/v1/namespaces/{namespace}/configmaps/ledger")
    assert cm["metadata"]["labels"] == {"app": "qosgate"}
    assert ledger.writes == 2 and ledger.conflicts == 0


def test_abort_and_no_change_write_nothing(client: KubeClient, namespace: str) -> None:
    ledger = ConfigMapLedger(client, namespace, "ledger")
    assert ledger.update(lambda data: len(data)) == 0
    with pytest.raises(ApiError) as missing:
        request_json(client, "GET", f"/api/v1/namespaces/{namespace}/configmaps/ledger")
    assert missing.value.not_found  # a decision that records nothing creates nothing
    ledger.update(increment)

    def refuse(data: dict[str, str]) -> None:
        data["counter"] = "999"
        raise ValueError("quota exceeded")

    with pytest.raises(ValueError, match="quota exceeded"):
        ledger.update(refuse)
    assert ledger.update(lambda data: data.get("counter")) == "1"  # a read-only decision
    assert ledger.read() == {"counter": "1"} and ledger.writes == 1
    with pytest.raises(TypeError, match="strings"):
        ledger.update(lambda data: data.__setitem__("n", 3))  # type: ignore[func-returns-value]


def test_concurrent_writers_never_lose_an_update(client: KubeClient, namespace: str) -> None:
    ledgers = [ConfigMapLedger(client, namespace, "shared", max_attempts=50, backoff_initial=0.001, backoff_max=0.02)
               for _ in range(3)]
    successes: list[int] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def writer(ledger: ConfigMapLedger) -> None:
        for _ in range(15):
            try:
                value = ledger.update(increment)
            except LedgerConflictError as exc:
                with lock:
                    failures.append(exc)
                continue
            with lock:
                successes.append(value)

    threads = [threading.Thread(target=writer, args=(ledgers[i % 3],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = int(ConfigMapLedger(client, namespace, "shared").read()["counter"])
    assert final == len(successes)
    # Each success saw a distinct counter value: no two writers ever committed on the same base.
    assert sorted(successes) == list(range(1, final + 1))
    assert sum(ledger.writes for ledger in ledgers) == final
    assert sum(ledger.conflicts for ledger in ledgers) > 0  # the race really happened
    assert len(failures) == sum(ledger.exhausted for ledger in ledgers)


def test_exhaustion_raises_a_clear_error(client: KubeClient, namespace: str) -> None:
    ledger = ConfigMapLedger(client, namespace, "contended", max_attempts=3, backoff_initial=0.001)
    rival = ConfigMapLedger(client, namespace, "contended")
    rival.update(increment)
    calls = []

    def always_overtaken(data: dict[str, str]) -> None:
        calls.append(1)
        rival.update(increment)  # another writer commits between our read and our write, every time
        increment(data)

    with pytest.raises(LedgerConflictError, match=r"contended: gave up after 3 attempts"):
        ledger.update(always_overtaken)
    assert len(calls) == 3 and ledger.conflicts == 3 and ledger.exhausted == 1
    assert rival.read()["counter"] == "4"  # only the rival's updates landed


def test_create_race_is_a_conflict_too(client: KubeClient, namespace: str) -> None:
    ledger = ConfigMapLedger(client, namespace, "racy")
    rival = ConfigMapLedger(client, namespace, "racy")
    first = [True]

    def create_behind_our_back(data: dict[str, str]) -> int:
        if first[0]:
            first[0] = False
            rival.update(increment)  # creates the ConfigMap after we saw it missing
        return increment(data)

    assert ledger.update(create_behind_our_back) == 2
    assert ledger.conflicts == 1 and ledger.read() == {"counter": "2"}


def test_sole_writer_skips_the_read_before_its_next_write(client: KubeClient, namespace: str, api) -> None:
    ledger = ConfigMapLedger(client, namespace, "solo")
    ledger.update(increment)
    gets_before = sum(1 for r in api.requests_log if r.verb == "get" and r.resource == "configmaps")
    assert gets_before >= 1
    assert ledger.update(increment) == 2
    gets_after = sum(1 for r in api.requests_log if r.verb == "get" and r.resource == "configmaps")
    assert gets_after == gets_before
    assert ledger.read() == {"counter": "2"}


def test_stale_own_copy_is_corrected_by_the_conflict(client: KubeClient, namespace: str) -> None:
    ours, theirs = ConfigMapLedger(client, namespace, "shared"), ConfigMapLedger(client, namespace, "shared")
    ours.update(increment)
    theirs.update(increment)  # ours now holds an outdated copy
    assert ours.update(increment) == 3
    assert ours.read() == {"counter": "3"}


def test_decision_that_writes_nothing_reads_committed_data(client: KubeClient, namespace: str) -> None:
    ours, theirs = ConfigMapLedger(client, namespace, "peek"), ConfigMapLedger(client, namespace, "peek")
    ours.update(increment)
    theirs.update(increment)
    # A decision that records nothing must not rest on our own stale copy (it would see counter 1).
    assert ours.update(lambda data: data.get("counter")) == "2"
