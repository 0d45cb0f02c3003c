"""Kubernetes access: `/scale` of any workload kind, node-group GPU capacity, pool status and references.

Only this package talks to the API server (STYLE.md §2); `reconcile` calls it.

- `scale`: find a `scaleTargetRef`'s resource by API discovery, read and write its `/scale`
  subresource (409 Conflict retried with a fresh read), count its ready pods.
- `capacity`: allocatable, used, free and pending GPUs of a pool's node group.
- `pools`: the InferencePool's status writes and the Secrets and ConfigMaps it refers to.

Every function is async and takes the caller's `kubernetes.client.ApiClient`; the client is
synchronous, so its calls run on worker threads and the event loop never waits on the API server.
Failures become `scale.KubeError`s with a CamelCase `reason` and a sentence a person can act on.
Modules here import the standard library, `kubernetes`, `urllib3` (the client's transport, for its
exception types) and `tokenscale.api`; never kopf.
"""
