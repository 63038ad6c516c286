"""Turn what TRL hands a reward function into plain text.

TRL passes completions as strings for plain-text datasets and as lists of chat messages
(``[{"role": "assistant", "content": "..."}]``) for conversational ones. Reward plugins call
:func:`completion_text` so they accept both.
"""

from __future__ import annotations

from typing import Any


def completion_text(completion: Any) -> str:
    """Return the text of one completion, plain or chat-format.

    A chat completion's assistant messages are joined with newlines; message ``content`` given as a
    list of typed parts (``{"type": "text", "text": ...}``) is flattened. ``None`` becomes ``""``.
    Anything else is a ``TypeError`` naming the type, so a plugin never scores ``str(object)``.
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        parts = [
            _content_text(m.get("content")) if isinstance(m, dict) else completion_text(m)
            for m in completion
            if not (isinstance(m, dict) and m.get("role") not in (None, "assistant"))
        ]
        return "\n".join(p for p in parts if p)
    raise TypeError(
        f"completion must be a string or a list of chat messages, got {type(completion).__name__}"
    )


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") if isinstance(part, dict) else str(part) for part in content
        )
    raise TypeError(f"message content must be a string or a list of parts, got {type(content).__name__}")
