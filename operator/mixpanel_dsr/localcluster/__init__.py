"""A real, local Kubernetes control plane (etcd + kube-apiserver + kubectl) for tests and demos.

The binaries are built from the Go module proxy at the versions pinned in the
repository's ``controlplane/go.mod`` and cached outside the repository, keyed
by those versions, so a machine builds them once (see :mod:`.build`).
The same builder makes helm and a kstatus command from ``gotools/`` for the
chart and GitOps tests (:func:`ensure_tools`).
There is no kubelet and no controller-manager: no pods run, no garbage
collection happens. That is all an operator's API-level tests need.
"""

from mixpanel_dsr.localcluster.build import Binaries, Tools, ensure_binaries, ensure_tools
from mixpanel_dsr.localcluster.controlplane import Component, ControlPlane

__all__ = ["Binaries", "Component", "ControlPlane", "Tools", "ensure_binaries", "ensure_tools"]
