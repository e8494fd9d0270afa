"""A byte-level tokenizer for random-weight models, which ship no tokenizer.

Token id = UTF-8 byte value, so any model with a vocabulary of at least 256 can read text prompts
(smaller ones take token-id prompts). Random models generate meaningless ids; ids above 255 are
dropped when decoding.
"""

from __future__ import annotations


class ByteTokenizer:
    eos_token_id = None
    pad_token_id = 0
    name_or_path = "bytes"
    chat_template = None

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    def get_vocab(self) -> dict[str, int]:
        return {f"<0x{i:02X}>": i for i in range(256)}
