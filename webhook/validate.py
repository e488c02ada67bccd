"""The validating admission decision: pick the checks that apply to a request and fold their findings.

Pods
  CREATE  classes (qosgate.webhook.checks.classes) → owned annotations/labels (qosgate.webhook.checks.owned) →
          scheduling (qosgate.webhook.checks.scheduling: no preset node, the catalog's scheduler) → quota
          (qosgate.webhook.quota), the last only for pods asking for a class and only when every static
          check passed, so a refused pod never holds a reservation.
  UPDATE  classes are immutable (qosgate.webhook.checks.immutable); nothing is recomputed from the current catalog.
ConfigMaps
  the catalog and quota ConfigMaps: only admins (qosgate.webhook.checks.admins), and only valid content
  (qosgate.webhook.checks.configmaps).
Workloads (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, …)
  unknown classes and classes the namespace quota does not allow (qosgate.webhook.checks.workloads); no capacity.
Anything else is allowed untouched. A validating response never carries a patch.

Failure behaviour
- Static checks are pure and cannot be "unavailable".
- The quota check fails closed, for pods asking for a class in a namespace under a quota only: while the pod
  cache or the quota ConfigMaps are not synced, or the ledger ConfigMap cannot be read or written (API down,
  409s beyond the retry bound), such pods are denied with HTTP 503 ServiceUnavailable and a message saying to
  retry. Pods without a class, and namespaces without a quota, are never affected.
- An invalid quota ConfigMap in force refuses pods asking for a class (403, naming the bad fields).
- A bug raising out of a check becomes a 500 denial in qosgate.webhook.app (never an unhandled error).
- With failurePolicy Fail (recommended for this webhook: it guards quotas and tamper attempts), an
  unreachable webhook refuses the covered writes; run ≥ 2 replicas with a PodDisruptionBudget.

Blocking: with a cross-replica ledger, deciding a quota'd pod makes up to two API calls. The validator is a
plain thread-safe callable; `may_block` tells the route (qosgate.webhook.app) which requests to finish in
the worker pool, so one namespace's ledger round trip never stalls the others — see webhook/README.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qosgate.core.catalog import CatalogHolder
from qosgate.core.errors import bounded_message
from qosgate.core.podshape import pod_shape_errors
from qosgate.core.qosresources import class_assignments
from qosgate.webhook.admission import AdmissionRequest, AdmissionResponse
from qosgate.webhook.checks import PASS, Finding, malformed
from qosgate.webhook.checks.admins import check_writer
from qosgate.webhook.checks.classes import check_classes
from qosgate.webhook.checks.configmaps import check_configmap_content
from qosgate.webhook.checks.immutable import check_immutable
from qosgate.webhook.checks.owned import check_owned
from qosgate.webhook.checks.scheduling import check_scheduling
from qosgate.webhook.checks.settings import ValidatorSettings
from qosgate.webhook.checks.workloads import WORKLOAD_KINDS, check_workload
from qosgate.webhook.quota.engine import QuotaEngine

__all__ = ["Validator", "ValidatorSettings", "build_validator"]

# Audit annotation for quotas in `dryrun` enforcement (the apiserver prefixes it with the webhook name).
AUDIT_QUOTA_DRYRUN = "quota-dryrun"
MESSAGE_PREFIX = "qosgate: "


def _uid_and_name(request: AdmissionRequest) -> tuple[str, str]:
    metadata = (request.object or {}).get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    uid = metadata.get("uid")
    name = request.name or metadata.get("name") or ""
    # The apiserver fills metadata.uid before validating webhooks run; without one (a hand-made review) the
    # admission UID keys the reservation, which then simply expires.
    return (uid if isinstance(uid, str) and uid else request.uid), str(name)


class Validator:
    """`Validator(request) -> AdmissionResponse`; served by `qosgate.webhook.app.validate_route`."""

    def __init__(self, catalog: CatalogHolder, engine: QuotaEngine | None = None,
                 settings: ValidatorSettings | None = None):
        self.catalog = catalog
        self.engine = engine
        self.settings = settings or ValidatorSettings()

    @property
    def blocking(self) -> bool:
        """True when some calls may wait on the API (cross-replica ledger): run those in a thread pool."""
        return self.engine is not None

    def may_block(self, request: AdmissionRequest) -> bool:
        """Only pod creations reach the quota engine; everything else is pure and cheaper inline."""
        return (self.engine is not None and request.operation == "CREATE" and request.kind_name == "Pod"
                and request.kind.get("group", "") == "" and not request.sub_resource)

    def __call__(self, request: AdmissionRequest) -> AdmissionResponse:
        group, kind = request.kind.get("group", ""), request.kind_name
        if group == "" and kind == "Pod":
            if request.sub_resource and request.operation == "CREATE":
                return AdmissionResponse.allow()  # pods/binding, pods/eviction: not a pod write
            return self._pod(request)
        if group == "" and kind == "ConfigMap":
            return self._respond(check_writer(request, self.settings)
                                 + check_configmap_content(request, self.settings, self.catalog.current))
        if (group, kind) in WORKLOAD_KINDS and request.operation in ("CREATE", "UPDATE") and request.object:
            return self._respond(check_workload(request.object, request.old_object, request.namespace,
                                                self.catalog.current, self._allow_lists(request.namespace)))
        return AdmissionResponse.allow()

    def _allow_lists(self, namespace: str) -> tuple[Any, ...]:
        if self.engine is None:
            return ()
        # Workloads are judged on the allow-list alone; an invalid or unsynced quota is the pods' problem.
        return tuple(self.engine.quotas.quotas_for(namespace).quotas)

    def _pod(self, request: AdmissionRequest) -> AdmissionResponse:
        pod: Mapping[str, Any] | None = request.object
        if request.operation == "UPDATE" and pod is not None:
            shape = [str(e) for which, obj in (("object", pod), ("oldObject", request.old_object))
                     if obj is not None for e in pod_shape_errors(obj, which, complete=True)]
            if shape:
                return self._respond(malformed("malformed pod: " + bounded_message(shape)))
            return self._respond(check_immutable(pod, request.old_object))
        if request.operation != "CREATE" or pod is None:
            return AdmissionResponse.allow()
        catalog = self.catalog.current
        finding, compiled = check_classes(pod, catalog)
        finding += check_owned(pod, compiled) if not finding.denied else PASS
        if compiled is not None and not finding.denied:
            finding += check_scheduling(pod, catalog)
        if finding.denied or compiled is None or self.engine is None:
            return self._respond(finding)
        uid, name = _uid_and_name(request)
        outcome = self.engine.admit(request.namespace, uid, name, class_assignments(compiled.requests),
                                    compiled.memory_min, request.dry_run)
        warnings = [*finding.warnings, *outcome.warnings]
        if not outcome.allowed:
            response = AdmissionResponse.deny(MESSAGE_PREFIX + outcome.message, outcome.code, outcome.reason)
            response.warnings = warnings
            return response
        response = AdmissionResponse.allow(warnings=warnings)
        if outcome.audit:
            response.audit_annotations = {AUDIT_QUOTA_DRYRUN: "; ".join(outcome.audit)}
        return response

    @staticmethod
    def _respond(finding: Finding) -> AdmissionResponse:
        if finding.denied:
            message = MESSAGE_PREFIX + bounded_message(finding.denials)
            if finding.bad_request:
                response = AdmissionResponse.deny(message, 400, "BadRequest")
            elif finding.retryable:
                response = AdmissionResponse.deny(message, 503, "ServiceUnavailable")
            else:
                response = AdmissionResponse.deny(message)
            response.warnings = list(finding.warnings)
            return response
        return AdmissionResponse.allow(warnings=list(finding.warnings))


def build_validator(catalog: CatalogHolder, engine: QuotaEngine | None = None,
                    settings: ValidatorSettings | None = None) -> Validator:
    """The /validate decision. `engine` None = no quota enforcement (e.g. `--local`)."""
    return Validator(catalog, engine, settings)
