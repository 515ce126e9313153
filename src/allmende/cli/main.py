"""Entry point of the ``allmende`` command.

Every failure leaves through :func:`run`: an :class:`~allmende.errors.AllmendeError` prints one
clear line and exits with a non-zero code, never a traceback.
"""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from allmende import __version__
from allmende.errors import AllmendeError, ConfigError

# Exit codes, one per kind of failure (shown in `allmende --help`).
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="allmende",
    help=(
        "Allmende: an open network for training, verifying and trading AI models.\n\n"
        "Exit codes: 0 ok, 1 error, 2 bad configuration or input, 130 interrupted."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# soft_wrap: an error stays one line however long; messages are escaped, never read as markup.
_err = Console(stderr=True, highlight=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"allmende {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Allmende: an open network for training, verifying and trading AI models."""


_SUBCOMMANDS = ("devnet", "contracts", "node", "job", "model")
_registered: set[str] = set()


def _register(argv: list[str]) -> None:
    """Add the sub-commands; only the one asked for when it is named (some import torch)."""
    import importlib

    asked = next((a for a in argv if not a.startswith("-")), None)
    names = [asked] if asked in _SUBCOMMANDS else list(_SUBCOMMANDS)
    for name in names:
        if name in _registered:
            continue
        _registered.add(name)
        module = importlib.import_module(f"allmende.cli.{name}")
        app.add_typer(module.app, name=name)


def run(argv: list[str] | None = None) -> None:
    """Run the command line; turn every expected failure into one line and an exit code."""
    _register(sys.argv[1:] if argv is None else argv)
    try:
        # With standalone_mode=False click returns the code of `typer.Exit(n)` instead of exiting.
        code = app(args=argv, standalone_mode=False)
    except AllmendeError as exc:
        _err.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(EXIT_CONFIG if isinstance(exc, ConfigError) else EXIT_ERROR)
    except KeyboardInterrupt:
        _err.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        _err.print("aborted")
        sys.exit(EXIT_ERROR)
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if os.environ.get("ALLMENDE_DEBUG"):
            raise
        _err.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))} "
            "(a bug in Allmende: rerun with ALLMENDE_DEBUG=1 for the traceback and report it)"
        )
        sys.exit(EXIT_ERROR)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    run()
