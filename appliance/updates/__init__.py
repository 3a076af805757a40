"""Model updates on the appliance: release tooling and the OTA agent (docs/OTA.md).

- ``contents``: what is inside a release archive (``release.json``);
- ``package``: build, sign and verify a release on an operator's machine;
- ``release_tasks``: load a task from release files, golden and latency checks;
- ``cli``: ``yardlink models keygen|keyring|package|sign|verify``.
"""
