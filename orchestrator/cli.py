"""Command line: parse, build a run context, call a workflow, map errors to exit codes."""

from __future__ import annotations

import typer

from orchestrator import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Deploy and operate etcd clusters over SSH.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"etcd-deploy {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Deploy and operate etcd clusters over SSH."""


def main() -> None:
    app()
