"""Rejection sampling: hand-built cases, statistical losslessness, and end-to-end sampling."""

import pytest

torch = pytest.importorskip("torch")
from scipy.stats import chi2_contingency, chisquare  # noqa: E402

from moesd.engine.proposers import DraftModelProposer  # noqa: E402
from moesd.engine.sampling import (PLACEHOLDER_TOKEN_ID, SamplingParams, greedy_verify, leading_true,  # noqa: E402
                                   probs_from_logits, rejection_sample)
from moesd.engine.spec_engine import SpecEngine  # noqa: E402

P = PLACEHOLDER_TOKEN_ID


def logits_for(tokens, vocab=10):
    """+100 on the wanted token at each position, so argmax is known (vLLM's test idiom)."""
    out = torch.zeros(len(tokens), len(tokens[0]), vocab)
    for b, row in enumerate(tokens):
        for i, t in enumerate(row):
            out[b, i, t] = 100.0
    return out


@pytest.mark.parametrize(
    "drafts, target, accepted, expected",
    [
        ([[1, 2, 3]], [[1, 2, 3, 4]], [3], [[1, 2, 3, 4]]),  # all accepted + bonus
        ([[1, 2, 3]], [[5, 2, 3, 4]], [0], [[5, P, P, P]]),  # first token rejected
        ([[1, 2, 3]], [[1, 7, 3, 4]], [1], [[1, 7, P, P]]),  # second rejected; later match ignored
        ([[1, 2, 3], [4, 5, 6], [7, 8, 9]], [[1, 2, 3, 0], [4, 0, 6, 1], [2, 8, 9, 3]], [3, 1, 0],
         [[1, 2, 3, 0], [4, 0, P, P], [2, P, P, P]]),  # mixed batch
    ],
)
def test_greedy_verify_hand_built(drafts, target, accepted, expected):
    n, out = greedy_verify(logits_for(target), torch.tensor(drafts))
    assert n.tolist() == accepted and out.tolist() == expected


def test_rejection_sampler_hand_built():
    vocab = 4
    onehot = lambda t: torch.nn.functional.one_hot(torch.tensor(t), vocab).float()
    drafts = torch.tensor([[1, 2], [1, 2]])
    draft_probs = torch.stack([onehot([1, 2]), onehot([1, 2])])
    # Row 0: the target agrees at both positions and puts its bonus mass on token 3.
    # Row 1: the target gives the first draft token zero probability and wants token 0.
    target = torch.stack([torch.stack([onehot(1), onehot(2), onehot(3)]),
                          torch.stack([onehot(0), onehot(2), onehot(3)])])
    n, out = rejection_sample(target, draft_probs, drafts, torch.Generator().manual_seed(0))
    assert n.tolist() == [2, 0]
    assert out.tolist() == [[1, 2, 3], [0, P, P]]


def test_leading_true():
    assert leading_true(torch.tensor([[True, True, False, True], [False, True, True, True]])).tolist() == [2, 0]


def test_rejection_sampling_is_lossless_statistically():
    """1e5 rounds of random target/draft distributions over 8 tokens, gamma 3 (fixed seed).

    The first emitted token must follow p at position 0; given one accepted draft, the second must
    follow p at position 1; the bonus token (all accepted) must follow p at position 3.
    """
    g = torch.Generator().manual_seed(1234)
    vocab, gamma, n = 8, 3, 100_000
    p = torch.softmax(2.0 * torch.randn(gamma + 1, vocab, generator=g), dim=-1)
    q = torch.softmax(2.0 * torch.randn(gamma, vocab, generator=g), dim=-1)
    drafts = torch.multinomial(q, n, replacement=True, generator=g).T  # [n, gamma], each from q_i
    num_accepted, out = rejection_sample(p.expand(n, -1, -1), q.expand(n, -1, -1), drafts, g)
    checks = [(out[:, 0], p[0]),
              (out[num_accepted >= 1, 1], p[1]),
              (out[num_accepted == gamma, gamma], p[gamma])]
    for tokens, probs in checks:
        observed = torch.bincount(tokens, minlength=vocab).double()
        probs = probs.double() / probs.double().sum()
        expected = probs * observed.sum()
        assert chisquare(observed.numpy(), expected.numpy()).pvalue > 1e-3
        tv = 0.5 * (observed / observed.sum() - probs).abs().sum()
        assert tv < 0.02
    # The test can fail: the raw draft tokens are distributed as q, far from p.
    raw = torch.bincount(drafts[:, 0], minlength=vocab).double()
    p0 = p[0].double() / p[0].double().sum()
    assert chisquare(raw.numpy(), (p0 * n).numpy()).pvalue < 1e-6


def test_ragged_drafts_stay_lossless_statistically():
    """Right-aligned ragged drafts (prompt lookup): a row with one draft in a gamma-3 block skips columns 0-1.
    Its first emitted token must follow p at its own first position (column 2), and with the draft accepted,
    the bonus token p at column 3; the skipped columns are never counted as accepted drafts."""
    g = torch.Generator().manual_seed(99)
    vocab, gamma, n = 8, 3, 100_000
    p = torch.softmax(2.0 * torch.randn(gamma + 1, vocab, generator=g), dim=-1)
    q_last = torch.zeros(vocab)
    q_last[5] = 1.0  # a deterministic draft (prompt lookup): token 5, q one-hot
    q = torch.zeros(gamma, vocab)
    q[:, 0] = 1.0  # the skipped columns' placeholder
    q[2] = q_last
    drafts = torch.tensor([[0, 0, 5]]).expand(n, -1)
    skip = torch.tensor([[True, True, False]]).expand(n, -1)
    through, out = rejection_sample(p.expand(n, -1, -1), q.expand(n, -1, -1), drafts, g, skip)
    own = through - 2
    assert set(own.tolist()) <= {0, 1}
    first = torch.where(own == 1, drafts[:, 2], out[:, 2])  # the row's first emitted token
    observed = torch.bincount(first, minlength=vocab).double()
    probs = p[2].double() / p[2].double().sum()
    assert chisquare(observed.numpy(), (probs * n).numpy()).pvalue > 1e-3
    bonus = out[own == 1, 3]
    observed = torch.bincount(bonus, minlength=vocab).double()
    probs = p[3].double() / p[3].double().sum()
    assert chisquare(observed.numpy(), (probs * observed.sum()).numpy()).pvalue > 1e-3
    assert float((own == 1).double().mean()) == pytest.approx(float(p[2, 5]), abs=0.01)


def test_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    probs = probs_from_logits(logits, SamplingParams(temperature=1.0, top_p=0.7))
    assert torch.allclose(probs, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))


def test_sampled_sd_matches_sampled_autoregressive_end_to_end(tiny_model, agreeing_draft):
    """Temperature 1: the distribution of the 2nd and 3rd generated tokens (which SD emits through
    verification and rejection) equals the autoregressive one. 6000 copies of one prompt per run."""
    target = tiny_model("qwen3_moe", vocab_size=32)
    draft = agreeing_draft(target, noise=0.1)
    prompts = [[3, 17, 5]] * 6000
    params = SamplingParams(temperature=1.0)
    ar = SpecEngine(target, None, 0, params, seed=1).generate(prompts, 3)
    sd = SpecEngine(target, DraftModelProposer(draft, 32), 2, params, seed=2).generate(prompts, 3)
    assert 0.1 < sd.metrics["acceptance"]["alpha"] < 0.95
    for pos in (1, 2):
        a = torch.bincount(torch.tensor([t[pos] for t in ar.token_ids]), minlength=32)
        b = torch.bincount(torch.tensor([t[pos] for t in sd.token_ids]), minlength=32)
        keep = (a + b) > 0
        table = torch.stack([a[keep], b[keep]]).numpy()
        assert chi2_contingency(table).pvalue > 1e-3
    # Same seed, same output: sampling is reproducible.
    runs = [SpecEngine(target, DraftModelProposer(draft, 32), 2, params, seed=5).generate(prompts[:50], 6).token_ids
            for _ in range(2)]
    assert runs[0] == runs[1]


def test_synthetic_alpha_is_recovered_and_acceptance_rate_follows_leviathan(tiny_model):
    """Synthetic acceptance with per-token probability 0.7: the alpha estimate recovers it, and vLLM's
    acceptance rate matches alpha (1 - alpha^gamma) / ((1 - alpha) gamma)."""
    from moesd.engine.proposers import SyntheticProposer

    target = tiny_model("llama")
    res = SpecEngine(target, SyntheticProposer(0.7, 512, seed=0), 4).generate([[1, 2, 3]] * 64, 40)
    a = res.metrics["acceptance"]
    assert a["alpha"] == pytest.approx(0.7, abs=0.03)
    assert a["acceptance_rate"] == pytest.approx(0.7 * (1 - 0.7**4) / (0.3 * 4), abs=0.03)
    assert a["sigma"] == pytest.approx(a["mean_acceptance_length"] / 5)


def test_synthetic_request_alphas_do_not_depend_on_the_rounds_run_before():
    """Two engines given the same requests draw the same per-request alphas, whatever rounds either ran before them:
    a paired comparison of `--gamma auto` (which may decode) and a fixed gamma compares the same requests."""
    from moesd.engine.proposers import SyntheticProposer

    quiet, busy = (SyntheticProposer(0.2, 512, seed=3, alpha_max=0.9) for _ in range(2))
    for proposer in (quiet, busy):
        proposer.start([[1]] * 4)
    first = quiet.row_alpha.clone()
    assert torch.equal(first, busy.row_alpha) and len(set(first.tolist())) == 4
    assert all(0.2 <= a <= 0.9 for a in first.tolist())
    for _ in range(7):  # rounds of the busy engine alone
        busy.forced_accepts(4, 3)
    for proposer in (quiet, busy):
        proposer.start([[1]] * 2)
        proposer.add_rows([[1]], [1])
    assert torch.equal(quiet.row_alpha, busy.row_alpha) and not torch.equal(quiet.row_alpha, first[:3])
