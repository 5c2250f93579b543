"""`wav2vec2` command line: one entry point, one sub-command per task.

Each sub-command lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``; the module is imported only when its sub-command runs.

Exit statuses: 0 success; 1 bad input (an audio file, a data row, a full disk); 2 bad options or a bad
model (argparse's own status for bad options). A sub-command raises ``UsageError`` or ``InputError``
to choose; any other error still ends in one line on stderr, never a traceback (set
``WAV2VEC2_TRACEBACK=1`` to see one). ``main()`` returns the status, argparse's included.
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import sys

COMMANDS = {
    "transcribe": ("wav2vec2.transcription.cli", "transcribe audio files with a CTC checkpoint"),
    "convert": ("wav2vec2.conversion", "convert a checkpoint to another framework's format"),
    "export": ("wav2vec2.export", "export a checkpoint for deployment: ONNX, TF SavedModel, TFLite"),
    "conformance": ("conformance.runner", "check that the installed backends compute the same thing"),
    "train": ("wav2vec2.training.cli", "fine-tune or pretrain a model (CTC, classification, pretraining)"),
    "evaluate": ("wav2vec2.training.cli_evaluate", "score a trained checkpoint on data: WER/CER or accuracy"),
}


class UsageError(Exception):
    """A bad option or a model that cannot be used: exit status 2."""

    exit_status = 2


class InputError(Exception):
    """Input that cannot be processed (a file, a row, the disk): exit status 1."""

    exit_status = 1


def _number(kind, text: str, smallest, inclusive: bool, what: str):
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < smallest or (value == smallest and not inclusive):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _number(int, text, 1, True, "a positive integer")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(float, text, 0.0, False, "a finite number > 0")


def finite_float(text: str) -> float:
    """argparse type: a finite number (no inf, no nan)."""
    return _number(float, text, -math.inf, True, "a finite number")


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (no inf, no nan)."""
    return _number(float, text, 0.0, True, "a finite number >= 0")


class _Parser(argparse.ArgumentParser):
    """argparse with its error as one line (argparse prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _resolve_demo(args) -> None:
    """``demo`` as a sub-command's model (``--model``, or convert's ``src``) is the bundled demo model."""
    for name in ("model", "src"):
        if getattr(args, name, None) == "demo":
            from .demo import demo_model_path

            try:
                setattr(args, name, os.fspath(demo_model_path()))
            except FileNotFoundError as e:
                raise UsageError(str(e)) from None


def main(argv=None) -> int:
    # TensorFlow's C++ log lines (CPU feature notes, and on a CPU-only machine the CUDA stub's and
    # cuInit's) are not this tool's output: its failures reach the CLI as Python exceptions, which it
    # reports. TF_CPP_MIN_LOG_LEVEL=0 brings them back.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = _Parser(prog="wav2vec2", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text)
        if name == chosen:  # import only the module of the sub-command that runs
            module = importlib.import_module(module_name)
            module.add_arguments(command)
            command.set_defaults(_run=module.run)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed its one-line error (status 2) or the help (0)
        return e.code if isinstance(e.code, int) else 2
    try:
        _resolve_demo(args)
        return int(args._run(args) or 0)
    except (UsageError, InputError) as e:
        print(f"wav2vec2 {args.command}: error: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print(f"wav2vec2 {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the promise is one line, never a traceback
        if os.environ.get("WAV2VEC2_TRACEBACK"):
            raise
        print(f"wav2vec2 {args.command}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
