"""Read a Prometheus text-format snapshot (what a vLLM server's /metrics returns) and vLLM's SD counters.

The exposition format (prometheus.io/docs/instrumenting/exposition_formats): `# HELP` / `# TYPE` comments, then
one sample per line, `name{label="value",...} number [timestamp]`. Counters end in `_total`; a histogram exports
`_sum` and `_count`. vLLM's speculative-decoding counters (vllm/v1/spec_decode/metrics.py; what `vllm bench serve`
itself scrapes before and after a run) are summed over their label sets (one per engine / model), except the
per-position counter, which is kept per `position`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from moesd.errors import MoesdError
from moesd.jsonl import read_text

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')

# Histograms of per-token latency, newest name first (vLLM renamed them across releases).
TPOT_HISTOGRAMS = ("vllm:request_time_per_output_token_seconds", "vllm:time_per_output_token_seconds")
ITL_HISTOGRAMS = ("vllm:inter_token_latency_seconds",)


@dataclass
class SpecCounters:
    """vLLM's SD counters over a window (or since server start, from one snapshot)."""

    num_drafts: float = 0.0
    num_draft_tokens: float = 0.0
    num_accepted_tokens: float = 0.0
    accepted_per_position: dict[int, float] = field(default_factory=dict)
    found: bool = False

    def minus(self, before: "SpecCounters", where: str) -> "SpecCounters":
        out = SpecCounters(self.num_drafts - before.num_drafts, self.num_draft_tokens - before.num_draft_tokens,
                           self.num_accepted_tokens - before.num_accepted_tokens,
                           {p: v - before.accepted_per_position.get(p, 0.0)
                            for p, v in self.accepted_per_position.items()}, self.found)
        if min(out.num_drafts, out.num_draft_tokens, out.num_accepted_tokens,
               *out.accepted_per_position.values(), 0.0) < 0:
            raise MoesdError(f"{where}: a counter went down between the snapshots (server restarted, or the "
                             f"snapshots are swapped: give BEFORE then AFTER)")
        return out


def parse_samples(text: str, where: str) -> list[tuple[str, dict[str, str], float]]:
    samples = []
    for i, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise MoesdError(f"{where}:{i}: not a Prometheus sample line: {line[:80]!r}")
        labels = {}
        if m.group(3):
            body = m.group(3)
            pos = 0
            while pos < len(body):
                lm = _LABEL.match(body, pos)
                if not lm or lm.end() == pos:
                    raise MoesdError(f"{where}:{i}: malformed labels {{{body[:80]}}}")
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        try:
            value = float(m.group(4))
        except ValueError:
            raise MoesdError(f"{where}:{i}: sample value {m.group(4)!r} is not a number") from None
        if math.isnan(value) or value < 0 and m.group(1).endswith(("_total", "_count", "_sum")):
            raise MoesdError(f"{where}:{i}: counter {m.group(1)} is {m.group(4)}")
        samples.append((m.group(1), labels, value))
    if not samples:
        raise MoesdError(f"{where}: no Prometheus samples (is this a /metrics snapshot?)")
    return samples


@dataclass
class Snapshot:
    source: str
    spec: SpecCounters
    histograms: dict[str, tuple[float, float]]  # name -> (sum, count), summed over label sets

    @classmethod
    def read(cls, path: str) -> "Snapshot":
        samples = parse_samples(read_text(path, "Prometheus metrics snapshot"), path)
        spec = SpecCounters()
        hist: dict[str, list[float]] = {}
        for name, labels, value in samples:
            if name.startswith("vllm:spec_decode_") and name.endswith("_total"):
                spec.found = True
                stem = name[len("vllm:spec_decode_"):-len("_total")]
                if stem == "num_drafts":
                    spec.num_drafts += value
                elif stem == "num_draft_tokens":
                    spec.num_draft_tokens += value
                elif stem == "num_accepted_tokens":
                    spec.num_accepted_tokens += value
                elif stem == "num_accepted_tokens_per_pos":
                    try:
                        pos = int(labels["position"])
                    except (KeyError, ValueError):
                        raise MoesdError(f"{path}: {name} without an integer 'position' label") from None
                    spec.accepted_per_position[pos] = spec.accepted_per_position.get(pos, 0.0) + value
            for base in TPOT_HISTOGRAMS + ITL_HISTOGRAMS:
                if name in (base + "_sum", base + "_count"):
                    slot = hist.setdefault(base, [0.0, 0.0])
                    slot[0 if name.endswith("_sum") else 1] += value
        return cls(path, spec, {k: (v[0], v[1]) for k, v in hist.items()})

    def window(self, before: "Snapshot | None") -> "Snapshot":
        """Counters between `before` and this snapshot (or since server start without one)."""
        if before is None:
            return self
        where = f"{before.source} -> {self.source}"
        spec = self.spec.minus(before.spec, where)
        hist = {}
        for name, (s, c) in self.histograms.items():
            s0, c0 = before.histograms.get(name, (0.0, 0.0))
            if s < s0 or c < c0:
                raise MoesdError(f"{where}: histogram {name} went down between the snapshots (server restarted, "
                                 f"or the snapshots are swapped: give BEFORE then AFTER)")
            hist[name] = (s - s0, c - c0)
        return Snapshot(where, spec, hist)

    def mean_seconds(self, names: tuple[str, ...]) -> float | None:
        for name in names:
            s, c = self.histograms.get(name, (0.0, 0.0))
            if c > 0:
                return s / c
        return None
