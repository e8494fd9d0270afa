"""The one exception type the command line turns into a one-line message and exit code 2."""


class MoesdError(Exception):
    """A problem with the user's input (file, preset name, parameter range) rather than a bug.

    The message must name the problem in one line; `moesd.cli.main` prints it as
    ``moesd: error: <message>`` and exits with status 2, without a traceback.
    """
