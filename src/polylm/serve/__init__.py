"""`polylm serve`: an OpenAI-compatible HTTP server with continuous batching, beam search and a chat page.

- `protocol`: request models and OpenAI-style error bodies;
- `engine`: the worker thread that batches every running request on one KV cache (`cache`);
- `responses`: completion / chat bodies, stream chunks and log-probabilities;
- `metrics`: Prometheus text for `/metrics`;
- `settings`: what the server was told (the command's flags); `state`: its model once loaded, API-key checks;
- `body`: reading and validating a request body; `jobs`: a completions or chat request turned into engine jobs,
  submitted, watched from the event loop and collected; `streaming`: server-sent events;
- `app`: the FastAPI app, its error handlers and middleware; its routes: `completions`, `chat`,
  `tokenization`, `info`; `static/index.html`: the chat page at `/`.
"""

from __future__ import annotations

from polylm import lazy

_HOMES = {
    "ServeSettings": "polylm.serve.settings",
    "is_loopback": "polylm.serve.settings",
    "create_app": "polylm.serve.app",
}
__all__ = sorted(_HOMES)

__getattr__ = lazy.exports(__name__, _HOMES)
