"""CUDA graphs of the static cache's decode, verify and draft forwards: captured once per (rows bucket, tokens
per row, logits kept), replayed every step.

On a GPU an eager forward of a small MoE is ~1,100 kernel launches of Python and host work for ~3 ms of GPU
time (docs/notes/gpu-h200.md): replaying a captured graph issues them all at once. What makes capture legal:
- engine/static_kv.py with `max_rows`: one buffer per layer for every row and slot, rows leaving or joining
  moved in place, writes at positions read from a tensor, attention over all `capacity` slots, so a forward's
  shapes depend only on (rows, tokens per row);
- inputs copied into per-graph buffers; a batch of b rows runs in the next power-of-two bucket, the spare rows
  marked invalid (they write only into free rows of the cache and their expert choices go to the recorder's
  padding column);
- expert accounting inside the graph (engine/expert_hooks.py counts into a device tensor, no host sync): the
  graph's counts are copied to the run's recorder after each replay; uniform routing draws from a device
  generator registered with the graph, so each replay draws new experts.
Prefill forwards (any length) stay eager, and so does everything under an expert budget (its ranking runs on
the host). If capture fails, the run goes on eagerly on the same buffers and the metrics say why.

Without capture (the CPU), the same fixed-shape path runs eagerly: that is how the tests check it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from moesd.engine.expert_hooks import ForwardRouting
from moesd.engine.options import MAX_GAMMA
from moesd.engine.routing_policy import ForwardContext, UniformRouting


def row_bucket(rows: int, max_rows: int) -> int:
    """The rows a b-row forward runs with: the next power of two, at most max_rows."""
    return min(1 << max(rows - 1, 0).bit_length(), max_rows)


def plan_capacity(slots: int) -> int:
    """Slots per row of a fixed-shape cache: the next power of two (at least 256), so runs of similar lengths
    share one plan and its captured graphs."""
    return max(256, 1 << max(slots - 1, 0).bit_length())


@dataclass
class GraphPlan:
    """Fixed shapes (`max_rows` rows, `capacity` slots) and what is built for them: one static cache and graph
    runner per role (target, draft), kept by the engine for every run with these shapes (runs of one engine must
    not overlap). Capture only on CUDA."""

    max_rows: int
    capacity: int
    capture: bool
    max_tokens: int = MAX_GAMMA + 1  # longer blocks (prefills) run eagerly
    kvs: dict = field(default_factory=dict)  # role -> StaticKV with its runner

    def kv(self, model, device, role: str):
        from moesd.engine.static_kv import StaticKV

        kv = self.kvs.get(role)
        if kv is None or kv.model is not model:
            kv = StaticKV(model, device, capacity=self.capacity, max_rows=self.max_rows)
            kv.runner = GraphedForward(kv, self.capture, self.max_tokens)
            self.kvs[role] = kv
        else:
            kv.clear()
        return kv

    def start_run(self) -> None:
        for kv in self.kvs.values():
            kv.runner.start_run()

    def summary(self) -> dict:
        runners = [kv.runner for kv in self.kvs.values()]
        off = [r.off_reason for r in runners if r.off_reason]
        return {"capture": self.capture, "max_rows": self.max_rows, "capacity": self.capacity,
                "graphs_captured_this_run": sum(r.captured for r in runners),
                "graphs_held": sum(len(r.slots) for r in runners) if self.capture else 0,
                "replays": sum(r.replays for r in runners),
                "fixed_shape_eager_forwards": sum(r.eager for r in runners),
                "off_reason": off[0] if off else None}


@dataclass
class _Slot:
    ids: torch.Tensor  # [rows, t]
    valid: torch.Tensor  # [rows, t]
    positions: torch.Tensor  # [rows, t]
    counts: torch.Tensor | None  # [MoE layers, experts + 1]
    keep: int
    logits: torch.Tensor | None = None
    graph: object = None
    layers_seen: int = 0


class GraphedForward:
    def __init__(self, kv, capture: bool, max_tokens: int):
        self.kv, self.capture, self.max_tokens = kv, capture, max_tokens
        self.recorder = None  # the run's ExpertRecorder (set by the engine) for MoE targets
        self.slots: dict[tuple[int, int, int], _Slot] = {}
        self.pool = None
        self.off_reason: str | None = None
        self.captured = self.replays = self.eager = 0

    def start_run(self) -> None:
        self.captured = self.replays = self.eager = 0
        self.recorder = None

    def handles(self, rows: int, tokens: int) -> bool:
        return tokens <= self.max_tokens

    def reset(self) -> None:
        self.slots.clear()

    def run(self, input_ids: torch.Tensor, valid: torch.Tensor, positions: torch.Tensor, keep: int) -> torch.Tensor:
        b, t = input_ids.shape
        rows = row_bucket(b, self.kv.max_rows)
        key = (rows, t, keep)
        slot = self.slots.get(key)
        fresh = slot is None
        if fresh:
            slot = self.slots[key] = self._new_slot(rows, t, keep)
        slot.ids[:b] = input_ids
        slot.valid[:b] = valid
        slot.positions[:b] = positions
        slot.valid[b:] = False
        slot.positions[b:] = torch.arange(t, device=positions.device)
        if fresh and self.capture and self.off_reason is None:
            self._capture(slot)
        if slot.graph is not None:
            slot.graph.replay()
            self.replays += 1
        else:
            self._body(slot)
            self.eager += 1
        if self.recorder is not None and self.recorder.current is not None and slot.counts is not None:
            self.recorder.current.counts.copy_(slot.counts)
            self.recorder.current.layers_seen = slot.layers_seen
        return slot.logits[:b].clone()  # the next replay overwrites the graph's output

    def _new_slot(self, rows: int, t: int, keep: int) -> _Slot:
        dev = self.kv.device
        counts = None
        if self.recorder is not None:
            counts = torch.zeros(len(self.recorder.modules), self.recorder.num_experts + 1, dtype=torch.long,
                                 device=dev)
        return _Slot(torch.zeros(rows, t, dtype=torch.long, device=dev), torch.zeros(rows, t, dtype=torch.bool,
                     device=dev), torch.arange(t, device=dev).repeat(rows, 1), counts, keep)

    @contextlib.contextmanager
    def _recording(self, slot: _Slot):
        """Point the recorder's hooks at the slot's buffers while the forward is traced (or run)."""
        rec = self.recorder
        if rec is None or rec.current is None or slot.counts is None:
            yield None
            return
        saved = rec.current, rec.ctx
        flat = slot.valid.view(-1)
        rec.current = ForwardRouting(saved[0].phase, flat, slot.counts)
        rec.ctx = ForwardContext(saved[1].phase, flat, slot.valid.shape[0])
        try:
            yield rec.current
        finally:
            rec.current, rec.ctx = saved

    def _body(self, slot: _Slot) -> None:
        with self._recording(slot) as routing:
            if slot.counts is not None:
                slot.counts.zero_()
            slot.logits = self.kv.forward(slot.ids, slot.positions, self.kv.capacity, slot.keep)
            if routing is not None:
                slot.layers_seen = routing.layers_seen

    def _capture(self, slot: _Slot) -> None:
        try:
            # Warm-up on a side stream with the real inputs (it writes what the replay will write again), then
            # capture; the warm-up also initialises lazily created buffers outside the graph.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._body(slot)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            for policy in (self.recorder.policies if self.recorder is not None else []):
                if isinstance(policy, UniformRouting):
                    graph.register_generator_state(policy.generator)
            self.pool = self.pool or torch.cuda.graph_pool_handle()
            with torch.cuda.graph(graph, pool=self.pool):
                self._body(slot)
            slot.graph = graph
            self.captured += 1
        except Exception as exc:  # noqa: BLE001 - any capture failure: run eagerly, say why in the metrics
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            self.off_reason = f"capture failed ({type(exc).__name__}: {first}); forwards ran eagerly"
            slot.graph = None
