"""The `bioclip` application: builds the Typer app from one module per command, and `main()`.

`main()` is the single place where library errors become one red sentence plus a hint and an exit
code; `--debug` (or BIOCLIP_DEBUG=1) re-raises them with the traceback instead.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from bioclip_cli import __version__
from bioclip_cli.cli import (
    build_hdf5,
    demo,
    download,
    embed,
    env,
    eval,
    finetune_classifier,
    inspect,
    library,
    plot,
    predict,
    presets,
    split,
    train,
    zsl,
)

_state = {"debug": os.environ.get("BIOCLIP_DEBUG", "") not in ("", "0")}

app = typer.Typer(
    name="bioclip",
    help=(
        "BIOSCAN-CLIP: insect images, DNA barcodes and taxonomy in one embedding space.\n\n"
        "Reproduce, evaluate and extend the paper's models: download the data and weights, build the "
        "training HDF5, train a preset, export embeddings and compute the retrieval metrics. "
        "Start with `bioclip demo` (no GPU, no download)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bioscan-clip {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    if debug:
        _state["debug"] = True
    if quiet:
        from bioclip_cli.progress import set_quiet

        set_quiet(True)


for module, name in [
    (download, "download"),
    (build_hdf5, "build-hdf5"),
    (train, "train"),
    (embed, "embed"),
    (eval, "eval"),
    (presets, "presets"),
    (inspect, "inspect"),
    (demo, "demo"),
    (predict, "predict"),
    (finetune_classifier, "finetune-classifier"),
    (split, "split"),
    (env, "env"),
    (zsl, "zsl"),
]:
    app.command(name=name, epilog=module.EXAMPLES, no_args_is_help=getattr(module, "NO_ARGS_IS_HELP", False))(
        module.command
    )
app.add_typer(plot.app, name="plot")

app.add_typer(library.app, name="library")


def _choice_error(exc: Exception, argv: list[str]) -> tuple[str, str] | None:
    """A value outside a choice option's list, as one sentence and a hint (instead of click's usage box)."""
    param = getattr(exc, "param", None)
    # typer describes a Literal/Enum option by its `type_descriptor`; click by its `type` (a Choice)
    described = getattr(param, "type_descriptor", None) or getattr(param, "type", None)
    choices = [str(getattr(c, "value", c)) for c in getattr(described, "choices", None) or ()]
    if not choices or not getattr(param, "opts", None):
        return None
    flag = max(param.opts, key=len)
    value = None
    for i, arg in enumerate(argv):  # the last occurrence wins, as in the parser
        for opt in param.opts:
            if arg == opt and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(opt + "=") and opt.startswith("--"):
                value = arg[len(opt) + 1 :]
    got = f", got {value!r}" if value is not None else ""
    if len(choices) == 2:
        message = f"{flag} must be {choices[0]} or {choices[1]}{got}"
    elif value is not None:
        message = f"{flag} {value!r} is not valid; valid: {', '.join(choices)}"
    else:
        message = f"{flag} must be one of {', '.join(choices)}"
    ctx = getattr(exc, "ctx", None)
    return message, f"see `{getattr(ctx, 'command_path', None) or 'bioclip'} --help`"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and translate errors into exit codes."""
    from bioclip_cli.errors import BioclipError

    argv = sys.argv[1:] if argv is None else argv
    if "--debug" in argv:
        _state["debug"] = True
    try:
        code = app(args=argv, prog_name="bioclip", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except BioclipError as exc:
        if _state["debug"]:
            raise
        from bioclip_cli.cli.output import error

        error(exc.message, exc.hint)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        if _state["debug"]:
            raise
        from bioclip_cli.cli.output import error

        error("interrupted", None)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:
        choice = _choice_error(exc, argv)
        if choice is not None:
            from bioclip_cli.cli.output import error

            error(*choice)
            sys.exit(1)  # like the library's own errors: one sentence, a hint, exit code 1
        # usage errors of the command-line parser (click, or the copy typer vendors) show themselves
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        if _state["debug"]:
            raise
        from bioclip_cli.cli.output import error

        error(
            f"unexpected {type(exc).__name__}: {exc}".strip().rstrip(":"),
            "rerun with --debug for the full traceback, and report it if it looks like a bug",
        )
        sys.exit(1)
