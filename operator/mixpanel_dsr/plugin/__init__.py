"""``kubectl dsr``: a kubectl plugin to file, follow, retry and cancel DataSubjectRequests.

:mod:`.core` holds the pure parts (reading ids, building manifests, durations, tables);
:mod:`.cluster` how the API server is reached;
:mod:`.commands` the command line and its Kubernetes API calls. It talks to the API
server only, never to the operator or to Mixpanel.
"""
