"""The operator's Kubernetes API (group mixpaneldsr.io, version v1alpha1).

The pydantic models in :mod:`.models` are the single source of truth; the
CustomResourceDefinitions in ``crds/`` are generated from them by :mod:`.crd`.
"""

GROUP = "mixpaneldsr.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
