"""What `polylm serve` is told: one dataclass, the source of the command's flags (its docstrings are their help).
Imports nothing heavy, so that `polylm --help` stays fast."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field

from polylm.errors import PolyLMError
from polylm.templates import TEMPLATES

DEFAULT_CHAT_TEMPLATE = "multialpaca"


@dataclass
class ServeSettings:
    """What `polylm serve` was told (see its --help)."""

    model: str | None = None
    """Model directory, or a hub id such as DAMO-NLP-MT/polylm-1.7b."""
    host: str = "127.0.0.1"
    """Address to listen on; any other than a loopback one needs an API key."""
    port: int = 8000
    """Port to listen on (0 picks a free one)."""
    log_level: str = field(default="info", metadata={"choices": ("critical", "error", "warning", "info", "debug")})
    """uvicorn's log level."""
    served_model_name: str | None = None
    """The model id clients use; default: the directory's name."""
    template: str = field(default=DEFAULT_CHAT_TEMPLATE, metadata={"choices": tuple(TEMPLATES)})
    """Default prompt format of /v1/chat/completions (a request may pass `template`)."""
    api_key: str | None = None
    """Require `Authorization: Bearer KEY` on /v1/*; default: $POLYLM_API_KEY, else none."""
    max_batch: int = 16
    """Sequences decoded together at most."""
    max_queue: int = 256
    """Requests waiting at most before 429."""
    max_prompt_tokens: int | None = None
    """Longest prompt accepted, in tokens; default: the model's context."""
    timeout: float = 600.0
    """Seconds a request may wait plus run before it is answered 503."""
    device: str = "cpu"
    """cpu, cuda, cuda:1, ..."""
    dtype: str | None = field(default=None, metadata={"choices": ("float32", "bfloat16", "float16")})
    """The weights' dtype; default: the checkpoint's."""
    threads: int | None = None
    """torch intra-op threads of the worker; default: torch's (1 helps small models on busy CPUs)."""
    max_body_bytes: int = 16 * 1024 * 1024
    """Request bodies larger than this are refused (413) before they are read whole."""
    cors_origins: list[str] = field(default_factory=list, metadata={"aliases": ("--cors-origin",)})
    """Allow browser calls from these origins."""

    def validate(self) -> None:
        """Refuse impossible settings, naming the flag."""
        if self.template not in TEMPLATES:
            raise PolyLMError(f"unknown template {self.template!r} (--template); choose one of {', '.join(TEMPLATES)}")
        for name in ("max_batch", "max_queue", "max_prompt_tokens", "threads", "max_body_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise PolyLMError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.timeout <= 0:
            raise PolyLMError(f"--timeout must be positive, got {self.timeout}")
        if not is_loopback(self.host) and not self.api_key:
            raise PolyLMError(
                f"refusing to listen on {self.host} without an API key: anyone who can reach it could use the "
                "model. Pass --api-key KEY (or set POLYLM_API_KEY), or bind to 127.0.0.1"
            )

    def resolved(self) -> ServeSettings:
        """What the server runs with: the API key from $POLYLM_API_KEY unless given, checked, and the model's
        directory found and read now (a wrong one fails here; the weights then load while /health says 503)."""
        from polylm.hf_checkpoint import read_config
        from polylm.hub import resolve_model_dir
        from polylm.tokenizer import Tokenizer

        settings = dataclasses.replace(self, api_key=self.api_key or os.environ.get("POLYLM_API_KEY") or None)
        settings.validate()
        model_dir = resolve_model_dir(settings.model)
        read_config(model_dir)
        Tokenizer.from_dir(model_dir)
        name = settings.served_model_name or os.path.basename(os.path.normpath(settings.model))
        return dataclasses.replace(settings, model=str(model_dir), served_model_name=name)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
