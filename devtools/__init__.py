"""Throwaway servers for the tests, the benchmarks and `make run`: the PostgreSQL target cluster (pgcluster).

Plain Python, no Django and none of our apps, so that a test's fixture, a benchmark or the demo runner can
start one before the portal's settings load. Only tests, benchmarks and jitportal/run.py import it
(tests/test_architecture.py checks).
"""
