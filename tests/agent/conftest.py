"""The agent suite uses the real control plane (tests/realcluster) for its admission-policy proof."""

from tests.realcluster.conftest import (  # noqa: F401  (fixture and marker wiring, reused as-is)
    control_plane,
    pytest_collection_modifyitems,
    pytest_configure,
)
