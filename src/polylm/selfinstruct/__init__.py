"""Multilingual self-instruct (PolyLM's MultiAlpaca method): MultiAlpaca-style tasks from any OpenAI-compatible
endpoint, in the target language, filtered per language; `polylm self-instruct` (docs/selfinstruct.md)."""
