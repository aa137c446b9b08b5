"""`polylm serve`: an OpenAI-compatible HTTP server with continuous batching, beam search and a chat page.

- `protocol`: request models and OpenAI-style error bodies;
- `engine`: the worker thread that batches every running request on one KV cache (`cache`);
- `responses`: completion / chat bodies, stream chunks and log-probabilities;
- `metrics`: Prometheus text for `/metrics`;
- `app`: the FastAPI routes; `static/index.html`: the chat page at `/`.
"""

from polylm.serve.app import ServeSettings, create_app, is_loopback

__all__ = ["ServeSettings", "create_app", "is_loopback"]
