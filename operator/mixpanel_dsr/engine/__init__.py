"""The reconciling engine: requests and projects in memory, mirrored from and to status.

kopf handlers hand objects in (:mod:`mixpanel_dsr.handlers`); one worker per
project packs, submits and polls (:mod:`.worker`); every change of a request
is written back to its status at once (:mod:`.registry`). The state that
matters lives in the API server: a new process rebuilds everything from the
objects' status when kopf resumes them.
"""

from mixpanel_dsr.engine.registry import Engine

__all__ = ["Engine"]
