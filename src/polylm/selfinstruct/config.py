"""What `polylm self-instruct` is asked to generate, and where it asks: the two dataclasses its flags come from.
Imports no HTTP client, so that `polylm --help` stays fast."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from polylm.errors import PolyLMError
from polylm.selfinstruct.filters import FilterConfig
from polylm.selfinstruct.locales import locale

if TYPE_CHECKING:
    from polylm.selfinstruct.client import ChatClient


@dataclass(frozen=True)
class SelfInstructConfig:
    """What a self-instruct run generates, and how it asks; the source of `polylm self-instruct`'s flags."""

    languages: tuple[str, ...] = field(metadata={"comma_separated": True})
    """ISO 639-1 codes, e.g. es,ja,th."""
    per_language: int
    """Tasks to keep per language."""
    demos: int = 3
    """Demonstrations per prompt."""
    new_per_prompt: int = 20
    """New tasks asked per prompt."""
    temperature: float = 1.0
    """Sampling temperature of the generation requests."""
    top_p: float = 1.0
    """Nucleus sampling of the generation requests."""
    max_tokens: int = 3072
    """Tokens per answer at most."""
    max_rounds: int | None = None
    """Per language; default 10 rounds per prompt-full of target tasks, plus 10."""
    translate: int = 175
    """English seed tasks translated for a language without seeds (the first ones of the file)."""
    translate_temperature: float = 0.2
    """Sampling temperature of the translation requests."""
    translate_max_tokens: int = 1024
    """Tokens per translated seed task at most."""
    max_demo_chars: int = 1500
    """Longer seeds are not shown as demonstrations (they would crowd the context); they stay in the pool."""
    seed: int = 0
    """Seed of demonstration sampling."""
    filters: FilterConfig = field(default_factory=FilterConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "languages", tuple(self.languages))
        if self.max_tokens < 1:
            raise PolyLMError(f"--max-tokens must be positive, got {self.max_tokens}")
        for code in self.languages:
            locale(code)
        if not self.languages:
            raise PolyLMError("self-instruct: --languages is empty")
        if min(self.per_language, self.demos, self.new_per_prompt, self.max_rounds or 1) < 1 or self.translate < 0:
            raise PolyLMError(
                "self-instruct: --per-language, --demos, --new-per-prompt and --max-rounds must be at least 1, "
                "--translate at least 0"
            )

    @property
    def rounds_limit(self) -> int:
        if self.max_rounds is not None:
            return self.max_rounds
        return 10 * math.ceil(self.per_language / self.new_per_prompt) + 10


@dataclass(frozen=True)
class EndpointConfig:
    """Where `polylm self-instruct` sends its requests, and how; the source of the command's connection flags."""

    endpoint: str
    """Server URL, e.g. http://127.0.0.1:8000 (or .../v1)."""
    model: str
    """Model name sent with each request."""
    api_key_env: str | None = None
    """Environment variable holding the API key (default: no key is sent)."""
    concurrency: int = 4
    """Requests in flight at most."""
    timeout: float = 120.0
    """Seconds per request, the whole answer included."""
    retries: int = 8
    """Tries per request, the first included."""
    backoff: float = 1.0
    """Seconds before the first retry, doubled after each."""

    def __post_init__(self) -> None:
        for name in ("concurrency", "timeout", "retries", "backoff"):
            if getattr(self, name) <= 0:
                raise PolyLMError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise PolyLMError(f"--api-key-env {self.api_key_env}: that environment variable is not set")

    def client(self) -> ChatClient:
        """A client for this endpoint (create it inside the event loop that will use it)."""
        from polylm.selfinstruct.client import ChatClient, RetryPolicy

        api_key = os.environ[self.api_key_env] if self.api_key_env else None
        retry = RetryPolicy(attempts=self.retries, backoff=self.backoff)
        return ChatClient(self.endpoint, self.model, api_key, self.concurrency, self.timeout, retry)
