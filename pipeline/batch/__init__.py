"""Runs: discover inputs, plan, ledger, the driver and its executors, status and report.
"""
