"""The one vocabulary for a target forward's phase: step records, expert counts, budgets and reports use it.

A "verify" forward scores the last token plus gamma drafts per row; SD's first round merges the target's
prefill into it ("prefill+verify"); "shadow" is the untimed unbudgeted re-run of a verify block that
measures KL(full || budgeted), never counted.
"""

PREFILL = "prefill"
DECODE = "decode"
VERIFY = "verify"
PREFILL_VERIFY = "prefill+verify"
SHADOW = "shadow"
