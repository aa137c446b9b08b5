"""`polylm serve`: an OpenAI-compatible HTTP server with continuous batching, beam search and a chat page.

- `protocol`: request models and OpenAI-style error bodies;
- `engine`: the worker thread that batches every running request on one KV cache (`cache`);
- `responses`: completion / chat bodies, stream chunks and log-probabilities;
- `metrics`: Prometheus text for `/metrics`;
- `state`: the server's settings, its model once loaded, API-key checks;
- `body`: reading and validating a request body; `jobs`: a request's engine jobs on the event loop;
- `work`: a completions or chat request turned into jobs; `streaming`: server-sent events;
- `app`: the FastAPI app, its error handlers and middleware; its routes: `completions`, `chat`,
  `tokenization`, `info`; `static/index.html`: the chat page at `/`.
"""

from polylm.serve.app import create_app
from polylm.serve.state import ServeSettings, is_loopback

__all__ = ["ServeSettings", "create_app", "is_loopback"]
