from __future__ import annotations

from moesd import render
from moesd.perf.hardware import HARDWARE_PRESETS
from moesd.perf.model_presets import MODEL_PRESETS


HELP = "list model and hardware presets"
EXAMPLES = 'examples:\n  moesd presets\n  moesd presets --json'


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(a) -> str:
    as_json = a.json
    models = []
    for preset in MODEL_PRESETS.values():
        s = preset.arch().summary()
        s.update(source=preset.source, card_total_params=preset.card_total_params,
                 card_active_params=preset.card_active_params,
                 card_active_convention=preset.card_active_convention, card_source=preset.card_source)
        models.append(s)
    hardware = [dict(h.to_dict(), ridge_point_flops_per_byte=h.ridge_point_flops_per_byte)
                for h in HARDWARE_PRESETS.values()]
    if as_json:
        return render.to_json({"models": models, "hardware": hardware})
    return render.presets_text(models, hardware)
