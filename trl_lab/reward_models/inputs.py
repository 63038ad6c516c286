"""Token ids a reward model sees for a (prompt, completion) pair, rendered exactly as TRL's ``RewardTrainer``
trained it.

* Conversational prompt (a list of chat messages): ``prompt + [assistant completion]`` through the RM
  tokenizer's chat template (``tokenize=False``), then tokenized without adding special tokens — what
  ``RewardTrainer`` does for a conversational ``chosen``/``rejected``.
* Plain-text prompt (or ``with_prompt=False``): ``prompt + completion``, the EOS token appended unless the
  text already ends with it, tokenized *with* the tokenizer's special tokens — what ``RewardTrainer``
  does for a plain-text example.

A sequence longer than ``max_length`` is cut so that the RM still sees the completion and the tokens it
pools on: the leading special tokens (BOS) and the trailing ones (EOS, the template's end of turn) are kept,
the prompt is cut from the left, and only when the completion alone does not fit is the completion cut,
from its end. Sequences that fit are never re-tokenized or split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trl.data_utils import common_prefix_length, is_conversational

from trl_lab.completions import completion_text


def _is_conversational_prompt(prompt: Any) -> bool:
    """A non-empty list of chat messages, by TRL's own test (``trl.data_utils.is_conversational``)."""
    return isinstance(prompt, list) and bool(prompt) and is_conversational({"prompt": prompt})


def common_suffix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Trailing tokens ``a`` and ``b`` share: the mirror of TRL's ``common_prefix_length``."""
    n = 0
    for x, y in zip(reversed(a), reversed(b)):
        if x != y:
            break
        n += 1
    return n


class RewardModelInputs:
    """Renders and tokenizes prompt/completion pairs for one reward-model tokenizer."""

    def __init__(self, tokenizer: Any, *, max_length: int | None = 1024, with_prompt: bool = True,
                 append_eos: bool = True, chat_template_kwargs: dict[str, Any] | None = None,
                 plugin: str = "learned_rm") -> None:
        if max_length is not None and (not isinstance(max_length, int) or isinstance(max_length, bool)
                                       or max_length < 2):
            raise ValueError(f"{plugin}: `max_length` must be an integer >= 2 or null, got {max_length!r}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.with_prompt = with_prompt
        self.append_eos = append_eos and tokenizer.eos_token is not None
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.plugin = plugin
        self._plain_lead, self._plain_trail = self._special_token_frame()

    def _special_token_frame(self) -> tuple[int, int]:
        """How many special tokens the tokenizer adds before and after plain text (BOS, CLS/SEP...)."""
        probe = "reward"
        content = self.tokenizer(probe, add_special_tokens=False)["input_ids"]
        full = self.tokenizer(probe, add_special_tokens=True)["input_ids"]
        for lead in range(len(full) - len(content) + 1):
            if full[lead : lead + len(content)] == content:
                return lead, len(full) - lead - len(content)
        return 0, 0

    # ------------------------------------------------------------------ rendering
    def render(self, prompt: Any, completion: Any) -> tuple[str, bool]:
        """``(text, chat)``: the text to tokenize and whether it came from the chat template."""
        if self.with_prompt and _is_conversational_prompt(prompt):
            messages = list(prompt) + self._completion_messages(completion)
            return self._apply_template(messages), True
        text = completion_text(completion)
        if self.with_prompt and prompt is not None:
            if not isinstance(prompt, str):
                raise TypeError(f"{self.plugin}: a prompt must be a string or a list of chat messages, "
                                f"got {type(prompt).__name__}")
            text = prompt + text
        if self.append_eos and not text.endswith(self.tokenizer.eos_token):
            text += self.tokenizer.eos_token
        return text, False

    def _completion_messages(self, completion: Any) -> list[dict[str, Any]]:
        if isinstance(completion, list) and completion and all(isinstance(m, dict) and "role" in m for m in completion):
            return [{**m, "content": completion_text([m]) if m["role"] == "assistant" else m.get("content") or ""}
                    for m in completion]
        return [{"role": "assistant", "content": completion_text(completion)}]

    def _apply_template(self, messages: list[dict[str, Any]], **kwargs: Any) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"{self.plugin}: the prompts are conversational but the reward model's tokenizer "
                             "has no chat template; give plain-text prompts or an RM with a chat template")
        return self.tokenizer.apply_chat_template(messages, tokenize=False, **self.chat_template_kwargs, **kwargs)

    # ------------------------------------------------------------------ tokenizing
    def encode(self, prompts: Sequence[Any] | None, completions: Sequence[Any]) -> list[list[int]]:
        """Token ids per pair, each at most ``max_length`` long."""
        if prompts is None or not self.with_prompt:
            prompts = [None] * len(completions)
        elif len(prompts) != len(completions):
            raise ValueError(f"{self.plugin}: {len(prompts)} prompts for {len(completions)} completions")
        rendered = [self.render(p, c) for p, c in zip(prompts, completions)]
        out: list[list[int] | None] = [None] * len(rendered)
        for chat in (False, True):
            idx = [i for i, (_, is_chat) in enumerate(rendered) if is_chat == chat]
            if idx:
                enc = self.tokenizer([rendered[i][0] for i in idx], add_special_tokens=not chat)["input_ids"]
                for i, ids in zip(idx, enc):
                    out[i] = ids
        if self.max_length is not None:
            for i, ids in enumerate(out):
                if len(ids) > self.max_length:
                    out[i] = self._truncate(ids, prompts[i], completions[i], *rendered[i])
        return out  # type: ignore[return-value]

    def _truncate(self, ids: list[int], prompt: Any, completion: Any, text: str, chat: bool) -> list[int]:
        tok, limit = self.tokenizer, self.max_length
        assert limit is not None
        if chat:
            messages = list(prompt)
            last_role = messages[-1].get("role")
            prefix = self._apply_template(messages, add_generation_prompt=last_role in ("user", "tool", "system"),
                                          continue_final_message=last_role == "assistant")
            prefix_ids = tok(prefix, add_special_tokens=False)["input_ids"]
            content = completion_text(completion)
            at = text.find(content, len(prefix)) if content and text.startswith(prefix) else -1
            suffix = text[at + len(content):] if at >= 0 else ""
            suffix_ids = tok(suffix, add_special_tokens=False)["input_ids"] if suffix else []
            special = set(tok.all_special_ids)
            lead = 0
            while lead < len(ids) and ids[lead] in special:
                lead += 1
        else:
            prefix = prompt if self.with_prompt and isinstance(prompt, str) else ""
            if prefix:
                prefix_ids = tok(prefix, add_special_tokens=True)["input_ids"]
                prefix_ids = prefix_ids[: len(prefix_ids) - self._plain_trail]
            else:
                prefix_ids = ids[: self._plain_lead]
            eos_ids = tok(tok.eos_token, add_special_tokens=False)["input_ids"] if self.append_eos else []
            suffix_ids = eos_ids + (ids[len(ids) - self._plain_trail:] if self._plain_trail else [])
            lead = self._plain_lead
        n_suffix = min(common_suffix_length(ids, suffix_ids), len(ids) - lead)
        n_prompt = max(lead, min(common_prefix_length(ids, prefix_ids), len(ids) - n_suffix))
        lead = min(lead, n_prompt)
        budget = limit - lead - n_suffix
        if budget < 1:
            return ids[len(ids) - limit:]
        head, body = ids[:lead], ids[lead:n_prompt]
        middle, tail = ids[n_prompt : len(ids) - n_suffix], ids[len(ids) - n_suffix:]
        if len(middle) >= budget:
            return head + middle[:budget] + tail
        return head + body[len(body) - (budget - len(middle)):] + middle + tail
