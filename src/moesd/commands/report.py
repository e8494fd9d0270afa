"""`moesd report`."""

from __future__ import annotations

from moesd.progress import quiet_flag

HELP = "markdown tables and figures from `moesd bench` results"
EXAMPLES = 'examples:\n  moesd report results/cpu_moe.jsonl results/cpu_dense.jsonl -o report/'


def add_arguments(p) -> None:
    p.add_argument("results", nargs="+", help="one or more results JSONL files")
    p.add_argument("-o", "--output", required=True, help="directory for report.md and the figures")
    p.add_argument("--skip-bad-lines", action="store_true", help="skip malformed JSONL lines instead of stopping")
    quiet_flag(p)


def run(a) -> str:
    from moesd.bench.report import write_report

    files = write_report(a.results, a.output, a.skip_bad_lines, quiet=a.quiet)
    return "".join(f"wrote {a.output}/{f}\n" for f in files)
