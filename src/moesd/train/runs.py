"""`moesd train target|draft|distill`: corpus -> tokens -> model -> training loop -> a standard
Hugging Face directory (config.json, bf16 safetensors, tokenizer files, training.json)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from moesd.errors import MoesdError
from moesd.train.architectures import build_config
from moesd.train.corpus import load_corpus
from moesd.train.loop import TokenStream, TrainSettings, check_writable, encode_texts, lm_objective, train
from moesd.train.tokenizer import load_or_train
from moesd.engine.vocab_map import VOCAB_MAP_FILE, VocabMap
from moesd.train.distill import distill_objective

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def _tokens(out: Path, tokenizer, corpus, eos_id: int) -> TokenStream:
    """Tokenising the stdlib takes ~20 s; the ids are cached beside the checkpoint, keyed by the
    corpus and tokenizer, so a resume reads the same stream."""
    key = hashlib.sha256((json.dumps(corpus.fingerprint, sort_keys=True)
                          + tokenizer.backend_tokenizer.to_str()).encode()).hexdigest()[:16]
    cache = out / ".checkpoint" / f"tokens-{key}.npz"
    if cache.is_file():
        z = np.load(cache)
        return TokenStream(z["train"], z["valid"])
    stream = TokenStream(encode_texts(tokenizer, corpus.train_texts, eos_id),
                         encode_texts(tokenizer, corpus.valid_texts, eos_id))
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.stem + ".tmp.npz")
    np.savez(tmp, train=stream.train, valid=stream.valid)
    os.replace(tmp, cache)
    return stream


def _copy_tokenizer(src: Path, out: Path) -> None:
    if not (src / "tokenizer.json").is_file():
        raise MoesdError(f"no tokenizer.json in {src} (train the target first, or point --tokenizer at it)")
    for name in TOKENIZER_FILES:
        if (src / name).is_file() and not (out / name).is_file():
            shutil.copy2(src / name, out / name)


def _exporter(out: Path, tokenizer, extra_files: dict[str, str] | None = None):
    """Write the model in bf16 into a temporary directory, then move each file into `out`, so a
    failure never leaves a half-written model beside a good tokenizer."""

    def export(model, info) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
        try:
            model.config.output_router_logits = False
            model.to(torch.bfloat16).save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text)
            for f in tmp.iterdir():
                os.replace(f, out / f.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            model.float()

    return export


def _new_model(config, seed: int):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    kwargs = {"experts_implementation": "grouped_mm"} if getattr(config, "num_experts", 0) else {}
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32, **kwargs)


def train_lm(kind: str, settings: TrainSettings, corpus_root: str | None, max_files: int | None,
             vocab_size: int, tokenizer_dir: str | None, overrides: dict | None) -> dict:
    """The stdlib target (`kind` "target", trains its own BPE) or its draft ("draft", reuses the
    target's tokenizer so the two share token ids)."""
    out = Path(settings.out)
    check_writable(out)
    corpus = load_corpus(corpus_root, max_files)
    if tokenizer_dir:
        _copy_tokenizer(Path(tokenizer_dir), out)
    elif kind == "draft":
        raise MoesdError("a draft must share its target's tokenizer: pass --tokenizer TARGET_DIR")
    tokenizer = load_or_train(out, corpus.train_texts, vocab_size)
    eos = tokenizer.eos_token_id
    stream = _tokens(out, tokenizer, corpus, eos)
    config = build_config(kind, len(tokenizer), eos, tokenizer.pad_token_id, overrides)
    model = _new_model(config, settings.seed)
    experts = getattr(config, "num_experts", 0) or 1
    fingerprint = {"kind": kind, "config": config.to_diff_dict(), "corpus": corpus.fingerprint,
                   "tokenizer_sha256": hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]}
    fingerprint["config"].pop("transformers_version", None)
    extra = {"corpus": corpus.fingerprint, "corpus_tokens": {"train": int(len(stream.train)),
                                                             "valid": int(len(stream.valid))}}
    return train(model, stream, lm_objective(experts), settings, fingerprint, _exporter(out, tokenizer), extra)


def train_distill(settings: TrainSettings, corpus_root: str | None, max_files: int | None, teacher: str,
                  draft_vocab: int, overrides: dict | None, teacher_every: int = 1) -> dict:
    """A small draft trained on the teacher's next-token distributions (KL to the teacher restricted
    to the draft's vocabulary), on stdlib text tokenised with the teacher's tokenizer."""
    from moesd.engine.loading import load_model

    out = Path(settings.out)
    check_writable(out)
    corpus = load_corpus(corpus_root, max_files)
    t = load_model(teacher, dtype="bf16")
    t.model.requires_grad_(False)
    tokenizer = t.tokenizer
    eos = tokenizer.eos_token_id
    stream = _tokens(out, tokenizer, corpus, eos)
    vmap = VocabMap.most_frequent(stream.train, t.vocab_size, draft_vocab, tokenizer.all_special_ids, eos)
    config = build_config("distill", draft_vocab, int(vmap.to_draft[eos]), None, overrides)
    model = _new_model(config, settings.seed)
    fingerprint = {"kind": "distill", "teacher": t.name, "teacher_every": teacher_every,
                   "config": config.to_diff_dict(), "corpus": corpus.fingerprint, "vocab_sha256": vmap.digest()}
    fingerprint["config"].pop("transformers_version", None)
    objective = distill_objective(t.model, vmap, teacher_every)
    coverage = vmap.coverage(stream.train)
    files = {VOCAB_MAP_FILE: vmap.to_json(teacher=t.name, coverage=coverage)}
    extra = {"corpus": corpus.fingerprint, "corpus_tokens": {"train": int(len(stream.train)), "valid": int(len(stream.valid))},
             "draft_vocab": {"size": draft_vocab, "train_token_coverage": coverage}}
    return train(model, stream, objective, settings, fingerprint, _exporter(out, tokenizer, files), extra)
