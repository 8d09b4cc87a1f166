"""``kubectl dsr``: a kubectl plugin to file, follow, retry and cancel DataSubjectRequests.

:mod:`.core` holds the pure parts (reading ids, building manifests, durations, tables);
:mod:`.cluster` how the API server is reached; :mod:`.intake` and :mod:`.intake_output`
the pure parts of ``intake`` (CSV export to requests with ids in Secrets);
:mod:`.commands` the command line and its Kubernetes API calls. It talks to the API
server only, never to the operator or to Mixpanel.
"""
