"""What the agent raised, remembered across restarts (a JSON file on a hostPath).

Why a node-local file: the agent must be able to lower *its own* earlier raises after a restart (a pod
left while it was down) and never lower another writer's value. The alternatives were weighed:
- in the node report (the Lease): ties cgroup correctness to the API server being reachable at start, and
  grows the annotation the extender parses on every node;
- inferred from the tree ("a value equal to the children's sum is ours"): wrong whenever the kubelet's
  own value happens to equal that sum, and a guess can lower a kubelet value;
- a file under a hostPath: local, cheap, survives container restarts and upgrades. Its entries are only
  trusted while the cgroup still holds exactly the value recorded (qosgate.core.ancestors), and the whole
  file is discarded after a reboot (boot id), when every cgroup is new.
Losing the file (or running without one) is safe in one direction: the agent then treats its earlier
values as another writer's and never lowers them; the report says so ("state file …") until pods churn.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping

from qosgate.core.ancestors import Owned

log = logging.getLogger("qosgate.agent.state")
VERSION = 1


class StateFile:
    """Owned entries keyed by cgroup path relative to the cgroup root; `path` None keeps them in memory only."""

    def __init__(self, path: str | None, boot_id: str | None) -> None:
        self.path = path
        self.boot_id = boot_id
        self.problem: str | None = None
        self._saved: dict[str, Owned] = {}

    def load(self) -> dict[str, Owned]:
        if not self.path:
            return {}
        try:
            with open(self.path, encoding="utf-8") as fh:
                doc = json.load(fh)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            self.problem = f"state file {self.path} unreadable ({exc}): earlier raises are kept, not lowered"
            log.warning(self.problem)
            return {}
        owned: dict[str, Owned] = {}
        if not isinstance(doc, dict) or doc.get("version") != VERSION:
            self.problem = f"state file {self.path} has an unknown format: ignored"
            log.warning(self.problem)
            return {}
        if self.boot_id and doc.get("bootId") != self.boot_id:
            log.info("state file %s is from another boot: every cgroup is new, starting afresh", self.path)
            return {}
        entries = doc.get("owned")
        for path, pair in (entries.items() if isinstance(entries, dict) else ()):
            if (isinstance(path, str) and isinstance(pair, list) and len(pair) == 2
                    and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in pair)):
                owned[path] = Owned(pair[0], pair[1])
        self._saved = dict(owned)
        return owned

    def save(self, owned: Mapping[str, Owned]) -> None:
        """Write atomically when something changed; failures are logged and reported, never raised."""
        if not self.path or dict(owned) == self._saved:
            return
        doc = {"version": VERSION, "bootId": self.boot_id,
               "owned": {path: [o.wrote, o.floor] for path, o in sorted(owned.items())}}
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".state-", dir=directory)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(doc, fh, separators=(",", ":"))
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            self.problem = f"state file {self.path} cannot be written ({exc.strerror or exc})"
            log.warning(self.problem)
            return
        self.problem = None
        self._saved = dict(owned)

