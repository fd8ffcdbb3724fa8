"""Greedy generation with the model's own top-k at every step.

The baseline keeps its top-k along its greedy path so validation can tell, at the
first token where a variant diverges, whether the variant's token was a near tie the
baseline also ranked high (harmless) or one outside the baseline's top-k (a regression).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from quantship.data.tokens import encode_document
from quantship.evaluate.prompts import Prompt


@dataclass
class Generation:
    prompt_id: str
    prompt_ids: list[int]
    ids: list[int]  # generated tokens only
    text: str
    finish_reason: str  # "stop" (EOS) or "length"
    topk_ids: torch.Tensor  # int32 [T, k]
    topk_logprobs: torch.Tensor  # float16 [T, k]


def prompt_ids(tokenizer, prompt: Prompt) -> list[int]:
    if prompt.messages is not None:
        ids = tokenizer.apply_chat_template(prompt.messages, tokenize=True, add_generation_prompt=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)
    return encode_document(tokenizer, prompt.text or "", chat=False)


def greedy_generate(model, tokenizer, prompt: Prompt, max_new_tokens: int, topk: int) -> Generation:
    ids = prompt_ids(tokenizer, prompt)
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids], device=device),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
            eos_token_id=eos,
        )
    new = out.sequences[0, len(ids) :].tolist()
    logprobs = torch.log_softmax(torch.stack([step[0].float() for step in out.logits]), dim=-1)
    values, indices = logprobs.topk(topk, dim=-1)
    finish = "stop" if new and eos is not None and new[-1] == eos else "length"
    return Generation(
        prompt_id=prompt.id,
        prompt_ids=ids,
        ids=new,
        text=tokenizer.decode(new, skip_special_tokens=True),
        finish_reason=finish,
        topk_ids=indices.to(torch.int32).cpu(),
        topk_logprobs=values.to(torch.float16).cpu(),
    )


def probe_passed(generation: Generation, prompt: Prompt) -> bool:
    return prompt.expect is not None and prompt.expect.lower() in generation.text.lower()
