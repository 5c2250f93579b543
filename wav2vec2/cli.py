"""`wav2vec2` command line: one entry point, one sub-command per task.

Each sub-command lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``; the module is imported only when its sub-command runs.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "transcribe": ("wav2vec2.transcription", "transcribe audio files with a CTC checkpoint"),
    "convert": ("wav2vec2.conversion", "convert a checkpoint to another framework's format"),
    "conformance": ("conformance.runner", "check that the installed backends compute the same thing"),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="wav2vec2", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text)
        if name == chosen:  # import only the module of the sub-command that runs
            module = importlib.import_module(module_name)
            module.add_arguments(command)
            command.set_defaults(_run=module.run)
    args = parser.parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
