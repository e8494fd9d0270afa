"""The performance model must import and run with torch unavailable."""

import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys

    class BlockTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
            return None

    sys.meta_path.insert(0, BlockTorch())
    try:
        import torch  # noqa: F401
        raise SystemExit("blocker failed")
    except ImportError:
        pass
    """
)


def test_perf_runs_with_torch_blocked():
    code = BLOCKER + textwrap.dedent(
        """
        import pkgutil, importlib, moesd.perf
        for mod in pkgutil.walk_packages(moesd.perf.__path__, "moesd.perf."):
            importlib.import_module(mod.name)
        from moesd.cli import main
        rc = main(["predict", "--target", "Qwen2-57B-A14B-Instruct", "--draft", "Qwen2-0.5B-Instruct",
                   "--hardware", "H800", "--tp", "2", "--sigma", "0.9", "--gamma", "4", "--json"])
        assert rc == 0
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert '"peak_speedup"' in proc.stdout
