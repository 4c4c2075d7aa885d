"""What the tests run against and with: the local S3 store (SeaweedFS), the fault proxy, model
generators, the vLLM harness, session probes. The demo and the benchmarks use it too (they put
tests/ on sys.path); the wheel never ships it (tests/test_packaging.py checks).

Modules with a command line run from the repository root, e.g.
`PYTHONPATH=tests python3 -m support.localstore DIR`.
"""
