"""Model registry and rollouts of the ingest service (docs/OTA.md, cloud part).

``registry``: publish a signed release (verified against the trusted release
keys), artifacts content-addressed; ``rollout``: the pure rollout state
machine; ``rollouts``: operator actions, device outcomes and assignments;
``store``: the catalog tables; ``routes``: HTTP; ``cli``: ``yardlink ingest models``.
"""
