"""How the ``cmkd`` program ends: a user's mistake as one ``error: ...`` line and exit code 2, SIGINT / SIGTERM as
one line saying how to resume (130 / 143), and no abort at interpreter exit while a run's classical fits still work
(:func:`cmkd.cli.entry`). :mod:`cmkd.cli` holds the commands and puts these around them."""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer

from cmkd.errors import CmkdError


def _click_exceptions() -> tuple[type, type, type, type]:
    """Click's exception types (vendored by newer typer)."""
    try:
        from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
        from typer.exceptions import Abort
    except ImportError:  # typer with an external click
        from click.exceptions import Abort, ClickException, NoArgsIsHelpError, UsageError
    return ClickException, UsageError, NoArgsIsHelpError, Abort


SIGNALLED: list[int] = []  # the signal that interrupted this process (SIGINT / SIGTERM)


def on_signal(signum: int, frame: object) -> None:
    """SIGINT and SIGTERM interrupt the command like Ctrl-C (the run keeps its checkpoints for --resume)."""
    SIGNALLED.append(signum)
    raise KeyboardInterrupt


def interrupted(argv: list[str]) -> None:
    """One line saying how to continue, and the shell's exit code for the signal (130 SIGINT, 143 SIGTERM)."""
    import shlex
    import signal

    signum = SIGNALLED[0] if SIGNALLED else signal.SIGINT
    hint = ""
    if argv[:1] == ["run"]:
        again = [a for a in argv if a != "--overwrite"] + ([] if "--resume" in argv else ["--resume"])
        hint = f"; rerun with --resume to continue: cmkd {shlex.join(again)}"
    typer.echo(f"error: interrupted by {signal.Signals(signum).name}{hint}", err=True)
    sys.exit(128 + int(signum))


def end_at_once_if_working(code: object) -> None:
    """End the process now with ``code`` (a non-zero ``SystemExit`` code) when a run's classical-fits thread
    (:class:`cmkd.pipeline.classical_stage.Background`) still works; otherwise return. Python 3.11 ends a daemon
    thread at interpreter exit by unwinding it, and a thread inside C++ then aborts the whole process ("terminate
    called without an active exception", exit 134 instead of 2, 130 or 143; a daemon thread inside torch does every
    time). The run folder is settled by then: only the output streams are flushed."""
    import threading

    stage = sys.modules.get("cmkd.pipeline.classical_stage")  # not imported: no such thread
    if not code or stage is None or not any(t.name == stage.THREAD_NAME and t.is_alive()
                                            for t in threading.enumerate()):
        return
    if not isinstance(code, int):  # sys.exit("message"): the message on stderr, code 1
        print(code, file=sys.stderr)
        code = 1
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def guarded(call: Callable[[], object]) -> None:
    """Run ``call`` (the app, or one command's function in-process, as the fuzz test does) and turn what it
    raises into the CLI's exits: one ``error: ...`` line and code 2 for a user's mistake, 130 / 143 with how to
    resume for an interrupt; its return value, when a non-zero int, is the exit code."""
    click_error, usage_error, no_args, abort = _click_exceptions()
    try:
        rc = call()
        if SIGNALLED or rc == 130:  # typer turns KeyboardInterrupt into exit code 130, silently
            interrupted(sys.argv[1:])
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except no_args as e:  # `cmkd` or `cmkd habitat` alone: the help
        typer.echo(e.format_message())
        sys.exit(0)
    except usage_error as e:  # a missing or unknown option, a bad value: one line, with where to look
        cmd = e.ctx.command_path if getattr(e, "ctx", None) is not None else "cmkd"
        msg = " ".join(e.format_message().split())
        typer.echo(f"error: {msg} (see `{cmd} --help`)", err=True)
        sys.exit(2)
    except click_error as e:
        typer.echo(f"error: {' '.join(e.format_message().split())}", err=True)
        sys.exit(e.exit_code or 1)
    except abort:
        interrupted(sys.argv[1:])
    except CmkdError as e:
        msg = " ".join(str(e).splitlines()) or type(e).__name__  # always one line
        typer.echo(f"error: {msg}", err=True)
        sys.exit(2)
    except OSError as e:  # the file system refused (permissions, full disk, ...): the user's to fix, not a bug
        where = f"{e.filename}: " if e.filename else ""
        typer.echo(f"error: {where}{e.strerror or e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        interrupted(sys.argv[1:])
