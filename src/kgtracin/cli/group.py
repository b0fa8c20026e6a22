"""The ``kgtracin`` command group and its entry point: one ``error:`` line for every user mistake."""

from __future__ import annotations

import sys

import click

from ..errors import KGTracinError

__all__ = ["cli", "main"]


@click.group()
@click.version_option(package_name="kgtracin")
def cli() -> None:
    """kgtracin: which training triples made a PyKEEN model predict (h, r, t)? Exact TracIn, fast."""


def _one_line(text: str, limit: int = 500) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main(argv: list[str] | None = None) -> None:
    """Entry point.

    A user's mistake (bad input, a missing file, a full disk) ends with one line ``error: ...`` and a non-zero
    exit, never a traceback. Anything else is a bug in kgtracin: one line says so, and ``-v`` shows its traceback.
    """
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    verbose = any(a in ("-v", "--verbose") for a in args)
    try:
        cli.main(args=args, prog_name="kgtracin", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        click.echo(f"error: {_one_line(error.format_message())}", err=True)
        sys.exit(error.exit_code if error.exit_code else 2)
    except KGTracinError as error:
        click.echo(f"error: {_one_line(error)}", err=True)
        sys.exit(1)
    except MemoryError:
        click.echo("error: out of memory; give a smaller --batch-size, fewer test triples, or more memory", err=True)
        sys.exit(1)
    except OSError as error:  # the machine's, not kgtracin's: a full disk, a permission, a vanished file
        if verbose:
            raise
        where = f" ({error.filename})" if error.filename else ""
        click.echo(f"error: {_one_line(error.strerror or error)}{where}", err=True)
        sys.exit(1)
    except Exception as error:
        if verbose:
            raise
        click.echo(
            f"error: internal error in kgtracin ({type(error).__name__}: {_one_line(error, 300)}); please "
            "report it, with the traceback that -v shows",
            err=True,
        )
        sys.exit(1)
