from pipeline.cli.main import run_cli

run_cli()
