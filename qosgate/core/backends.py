"""Renderers from a compiled memory plan to what each node backend reads (architecture §2.4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import orjson

from qosgate.core import annotations as keys
from qosgate.core.catalog import Catalog
from qosgate.core.errors import FieldError, InvalidError

if TYPE_CHECKING:
    from qosgate.core.compile import ContainerPlan


def render_nri_memory_qos(plans: Sequence[ContainerPlan]) -> dict[str, str]:
    """Per-container annotations of the NRI memory-qos plugin.

    The plugin's class math is memory.high = limit × (1 − swaplimitratio) and it fails container creation
    when a container in such a class has no memory limit — deny at admission instead of at runtime.
    """
    rendered: dict[str, str] = {}
    errors: list[FieldError] = []
    for plan in plans:
        if plan.nri_class is not None:
            if plan.limit is None:
                errors.append(FieldError(f"{plan.path}.resources.limits.memory",
                                         f"container {plan.name!r} uses class {plan.memory_class!r}, which the NRI "
                                         "memory-qos plugin applies only to containers with a memory limit"))
                continue
            rendered[keys.NRI_CLASS_PREFIX + plan.name] = plan.nri_class
        if plan.memory_min:
            rendered[keys.NRI_MEMORY_MIN_PREFIX + plan.name] = str(plan.memory_min)
        if plan.memory_high is not None:
            rendered[keys.NRI_MEMORY_HIGH_PREFIX + plan.name] = str(plan.memory_high)
    if errors:
        raise InvalidError(errors)
    return rendered


def render_koordinator(plans: Sequence[ContainerPlan], catalog: Catalog) -> tuple[dict[str, str], dict[str, str]]:
    """koordinator's memoryQOS is pod-wide: every container must resolve to the same memory class."""
    classes = {p.memory_class for p in plans if p.memory_class is not None}
    if not classes or catalog.memory_resource is None:
        return {}, {}
    # The policy is pod-wide, so a container without a class would silently get the others' protection too
    # (memory.min the pod's qosgate.io/memory-min never counted): that is a mix as well.
    unclassed = [p.name for p in plans if p.memory_class is None]
    if len(classes) > 1 or unclassed:
        resolved = sorted(classes) + ([f"no class ({', '.join(unclassed)})"] if unclassed else [])
        raise InvalidError.single(
            "qosResources", f"the koordinator backend applies one memory class per pod, but containers resolve "
                            f"to {', '.join(resolved)}; use one {catalog.memory_resource} class for the pod")
    qos_class = catalog.resources[catalog.memory_resource].classes[classes.pop()]
    policy = {"policy": "auto", "minLimitPercent": qos_class.memory_min_percent,
              "throttlingPercent": qos_class.throttle_percent}
    return ({keys.KOORD_MEMORY_QOS: orjson.dumps(policy).decode()},
            {keys.KOORD_QOS_CLASS_LABEL: qos_class.koordinator_qos_class})


def render_backends(plans: Sequence[ContainerPlan], catalog: Catalog) -> tuple[dict[str, str], dict[str, str]]:
    annotations: dict[str, str] = {}
    labels: dict[str, str] = {}
    errors: list[FieldError] = []
    for backend in catalog.backends:
        try:
            if backend == "nri-memory-qos":
                annotations.update(render_nri_memory_qos(plans))
            elif backend == "koordinator":
                more_annotations, more_labels = render_koordinator(plans, catalog)
                annotations.update(more_annotations)
                labels.update(more_labels)
            # kubelet (KEP-2570) reads requests itself: nothing to write beyond the canonical figure.
        except InvalidError as exc:
            errors.extend(exc.errors)
    if errors:
        raise InvalidError(errors)
    return annotations, labels
