"""Errors in what the user gave, and how the command-line tools show them.

Every error caused by the user's input or configuration (a feature file, a config key, a
dataset folder, a search space, a command-line argument) is an :class:`InputError`, whose
message says what is wrong and how to fix it. The command-line tools print it as one line,
``error: ...``, without a traceback, and exit with status 2; ``--debug`` shows the traceback.
Programming errors keep their tracebacks.
"""

import sys
from contextlib import contextmanager


class InputError(ValueError):
    """Something the user gave is wrong; the message names it and says what to do."""


class MissingInputError(InputError, FileNotFoundError):
    """A file or folder that the user named, or that the run needs, is not there."""


EXIT_STATUS = 2  # argparse's status for bad usage


@contextmanager
def reported_input_errors(debug=False):
    """Run a command-line tool's body: an :class:`InputError` becomes ``error: <message>`` on
    stderr and exit status 2 (with ``debug``, it propagates with its traceback)."""
    try:
        yield
    except InputError as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_STATUS)


def add_debug_flag(parser):
    """The ``--debug`` flag: show the traceback of input errors too."""
    parser.add_argument("--debug", action="store_true", help="show the traceback of input errors")
