"""Running `moesd` in-process from tests, and the one-line error every bad input must give."""

from moesd.cli import main


def run(capsys, *argv):
    """(exit code, stdout, stderr) of `moesd ARGV`; arguments may be paths or numbers."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(rc, out, err, message):
    assert rc == 2 and out == "", (rc, out, err)
    assert err.startswith("moesd: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err
