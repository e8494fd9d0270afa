"""`moesd train`: seconds-long runs on a tiny corpus (this package's own source), exact resume,
bad input, and a distilled reduced-vocabulary draft that keeps SD lossless."""

import json
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from moesd.cli import main  # noqa: E402

CORPUS = str(Path(__file__).resolve().parents[1] / "src" / "moesd")
TINY_TARGET = ["--set", "hidden_size=32", "--set", "num_hidden_layers=1", "--set", "num_attention_heads=2",
               "--set", "num_key_value_heads=1", "--set", "head_dim=16", "--set", "num_experts=4",
               "--set", "num_experts_per_tok=2", "--set", "moe_intermediate_size=16", "--set", "intermediate_size=32"]
COMMON = ["--corpus", CORPUS, "--batch-size", "2", "--seq-len", "32", "--eval-every", "2", "--eval-batches", "1",
          "--warmup-steps", "2", "--threads", "1"]


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


@pytest.fixture(scope="module")
def tiny_target(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "target"
    rc = main(["train", "target", "--out", str(out), "--steps", "4", "--vocab-size", "300", *COMMON, *TINY_TARGET])
    assert rc == 0
    return out


def test_target_is_a_standard_hf_directory_with_its_training_record(tiny_target):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_target)
    tok = AutoTokenizer.from_pretrained(tiny_target)
    assert model.config.model_type == "qwen3_moe" and model.config.num_experts == 4
    assert len(tok) == 300 and tok.decode(tok.encode("def f(x):\n    return x")) == "def f(x):\n    return x"
    info = json.loads((tiny_target / "training.json").read_text())
    assert info["steps_done"] == 4 and info["tokens_seen"] == 4 * 2 * 32
    losses = [v["loss"] for v in info["validation_log"]]
    assert losses[-1] < losses[0]  # it learned something in 4 steps
    assert next(iter(_weights(tiny_target).values())).dtype == torch.bfloat16


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, tiny_target):
    args = ["--steps", "4", *COMMON, "--tokenizer", str(tiny_target)]
    assert main(["train", "draft", "--out", str(tmp_path / "straight"), *args]) == 0
    # A budget of ~0 minutes stops after the first step, as a kill after a checkpoint would.
    assert main(["train", "draft", "--out", str(tmp_path / "split"), *args, "--budget-minutes", "0.00001"]) == 0
    first = json.loads((tmp_path / "split" / "training.json").read_text())
    assert first["stopped_by"] == "budget" and first["steps_done"] < 4
    assert main(["train", "draft", "--out", str(tmp_path / "split"), *args, "--resume"]) == 0
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_training_input_is_one_line_exit_2(tmp_path, tiny_target, capsys):
    out = tmp_path / "d"
    assert main(["train", "draft", "--out", str(out), "--steps", "2", *COMMON, "--tokenizer", str(tiny_target)]) == 0
    capsys.readouterr()
    # Resuming with another configuration.
    assert main(["train", "draft", "--out", str(out), "--steps", "3", *COMMON, "--tokenizer", str(tiny_target),
                 "--resume"]) == 2
    assert "different run" in capsys.readouterr().err
    # Starting over an existing checkpoint without --resume.
    assert main(["train", "draft", "--out", str(out), "--steps", "2", *COMMON, "--tokenizer", str(tiny_target)]) == 2
    assert main(["train", "target", "--out", str(tmp_path / "x"), "--steps", "2", "--corpus",
                 str(tmp_path / "nowhere")]) == 2
    assert "corpus directory not found" in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if not os.access(locked, os.W_OK):  # root ignores permissions
            assert main(["train", "target", "--out", str(locked / "m"), "--steps", "2", *COMMON]) == 2
    finally:
        os.chmod(locked, 0o700)
    assert main(["train", "draft", "--out", str(tmp_path / "y"), "--steps", "2", *COMMON]) == 2  # no tokenizer
    err = capsys.readouterr().err
    assert "share its target's tokenizer" in err and "Traceback" not in err


def test_distilled_reduced_vocabulary_draft_keeps_sd_lossless(tmp_path, tiny_target):
    from moesd.engine.factory import EngineSpec, build_engine

    draft_dir = tmp_path / "distilled"
    rc = main(["train", "distill", "--out", str(draft_dir), "--teacher", str(tiny_target), "--draft-vocab", "120", "--teacher-every", "2",
               "--steps", "3", *COMMON, "--set", "hidden_size=32", "--set", "num_hidden_layers=1",
               "--set", "num_attention_heads=2", "--set", "num_key_value_heads=1", "--set", "head_dim=16",
               "--set", "intermediate_size=32"])
    assert rc == 0
    vmap = json.loads((draft_dir / "moesd_vocab_map.json").read_text())
    assert len(vmap["target_token_ids"]) == 120 and vmap["target_vocab_size"] == 300
    info = json.loads((draft_dir / "training.json").read_text())
    assert 0 <= info["final_validation"]["greedy_agreement"] <= 1
    prompts = [[5, 17, 33, 2, 9], [44, 3, 7, 250, 299]]  # 250 and 299 are likely outside the draft's vocabulary
    outs = {}
    for gamma in (0, 3):
        spec = EngineSpec(target=str(tiny_target), draft=str(draft_dir) if gamma else None, gamma=gamma, dtype="fp32")
        engine = build_engine(spec)
        res = engine.generate(prompts, 12)
        outs[gamma] = res.token_ids
    assert outs[3] == outs[0]


def test_a_killed_run_resumes_from_its_last_checkpoint_to_the_same_weights(tmp_path, tiny_target):
    import signal
    import subprocess
    import sys
    import time

    args = ["--steps", "150", *COMMON, "--eval-every", "1000", "--tokenizer", str(tiny_target)]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "moesd.cli", "train", "draft", "--out", str(killed), *args,
                             "--checkpoint-every", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = killed / ".checkpoint" / "state.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)  # no chance to save: only the periodic checkpoint survives
    proc.wait()
    if (killed / "training.json").exists():
        pytest.skip("the run finished before it could be killed")
    done = torch.load(ckpt, weights_only=False)["step"]
    assert 0 < done < 150
    assert main(["train", "draft", "--out", str(killed), *args, "--resume"]) == 0
    assert main(["train", "draft", "--out", str(tmp_path / "straight"), *args]) == 0
    a, b = _weights(killed), _weights(tmp_path / "straight")
    assert all(torch.equal(a[k], b[k]) for k in a)
