"""Documents -> token ids -> fixed-length windows, shared by calibration and evaluation."""

from __future__ import annotations

from collections.abc import Sequence

from quantship.data.sources import Document
from quantship.errors import InputError


def encode_document(tokenizer, document: Document, chat: bool) -> list[int]:
    """Token ids of one document; chat messages (or `chat=True`) go through the chat template."""
    if isinstance(document, list) or chat:
        messages = document if isinstance(document, list) else [{"role": "user", "content": document}]
        if not getattr(tokenizer, "chat_template", None):
            raise InputError(
                "the tokenizer has no chat template, so chat-formatted samples cannot be built",
                "add chat_template to tokenizer_config.json, or use plain text samples (no --chat)",
            )
        ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=False)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # BatchEncoding in newer transformers
            ids = ids["input_ids"]
        return list(ids)
    return list(tokenizer(document, add_special_tokens=False)["input_ids"])


def separator_id(tokenizer) -> int:
    """Token placed between documents in a stream (EOS, as pretraining packs them)."""
    for candidate in (tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id):
        if candidate is not None:
            return int(candidate)
    raise InputError("the tokenizer defines no EOS, PAD or BOS token", "set eos_token in tokenizer_config.json")


def token_stream(encoded: Sequence[Sequence[int]], separator: int) -> list[int]:
    stream: list[int] = []
    for ids in encoded:
        if stream:
            stream.append(separator)
        stream.extend(ids)
    return stream


def cut_windows(stream: Sequence[int], length: int) -> list[list[int]]:
    """Non-overlapping windows of exactly `length` tokens; the short tail is dropped."""
    if length < 2:
        raise InputError(f"window length {length} is too short", "use a window length of at least 2 tokens")
    return [list(stream[start : start + length]) for start in range(0, len(stream) - length + 1, length)]
