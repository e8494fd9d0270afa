"""benchmarks/pass_plan.py: the passes every `--gamma auto` benchmark runs its configurations in (mirrored orders, a
shared stopping rule), which the benchmark's medians and paired ratios rely on."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from pass_plan import paired_median, pass_order, pass_reps, run_passes  # noqa: E402


def test_each_mirrored_pair_puts_every_configuration_at_the_middle_position_on_average():
    configs = ["ar", "g1", "g2", "g4", "g6", "auto"]
    for pair in range(len(configs)):
        first, second = pass_order(configs, 2 * pair), pass_order(configs, 2 * pair + 1)
        assert sorted(first) == sorted(configs) and second == first[::-1]
        for c in configs:
            assert first.index(c) + second.index(c) == len(configs) - 1
    # Over a full rotation, every configuration opens a pass once in each direction's pair.
    openers = [pass_order(configs, 2 * k)[0] for k in range(len(configs))]
    assert sorted(openers) == sorted(configs)


def test_passes_stop_only_before_an_even_pass_after_the_minimum_and_the_cell_time():
    assert list(pass_reps(4, 12, min_cell_s=0.0)) == [0, 1, 2, 3]
    assert list(pass_reps(3, 12, min_cell_s=0.0)) == [0, 1, 2, 3]  # a pair is never split
    assert list(pass_reps(4, 12, min_cell_s=1e9)) == list(range(12))  # short runs: more passes, up to the most
    assert list(pass_reps(20, 4)) == list(range(20))  # the minimum wins over a smaller maximum


def test_run_passes_collects_in_pass_order_and_stops_when_told():
    calls = []

    def run(label, rep):
        calls.append((rep, label))
        return f"{label}{rep}"

    out = run_passes(["a", "b", "c"], range(5), run, after_pass=lambda rep, results: rep == 2)
    assert out == {"a": ["a0", "a1", "a2"], "b": ["b0", "b1", "b2"], "c": ["c0", "c1", "c2"]}
    assert [label for rep, label in calls if rep == 1] == pass_order(["a", "b", "c"], 1)
    assert paired_median([2.0, 3.0, 9.0], [1.0, 3.0, 3.0]) == 2.0
