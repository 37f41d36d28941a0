"""Errors a user can act on.

Every failure a user can cause (bad config, missing file, too many bad rows) is raised as a
``RecsysError`` whose message is one line; the job runner prints that line and exits non-zero
instead of showing a traceback.
"""


class RecsysError(Exception):
    """A failure caused by input or configuration, reported as one clear line."""

    exit_code = 1


class ConfigError(RecsysError):
    """The configuration or command line is invalid."""

    exit_code = 2


class InputError(RecsysError):
    """An input file is missing, unreadable or has too many bad rows."""

    exit_code = 3


# Exit code of a job whose result fails its own check (the compare job's verdict with
# compare.fail_on_mismatch), after every output was written.
EXIT_MISMATCH = 4
