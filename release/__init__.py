"""Release tooling behind `make release`, `make verify-release`, `make release-key` and
`make release-bench` (mk/release.mk; docs/release.md says what each artifact is).

Not part of the wheel: pyproject.toml packages capture, analyze, replay and runfmt only.
Run as `.venv/bin/python -m release ...` from the repository root.
"""
