"""The Typer command line: parses options, then calls one function below it."""
from pipeline.cli.main import app, run_cli

__all__ = ["app", "run_cli"]
