"""A ModelScope-style `pipeline`, so the model card's snippet runs with polylm:

from polylm import pipeline
p = pipeline("text-generation", model="DAMO-NLP-MT/polylm-1.7b")   # or a local directory
p("Beijing is the capital of China.\\nTranslate this sentence from English to Chinese.",
  do_sample=False, num_beams=4, max_new_tokens=128, early_stopping=True, eos_token_id=2)
# -> {"text": "Beijing is the capital of China.\nTranslate ... Chinese.\n北京是中国的首都。"}: prompt + completion,
#    as ModelScope's pipeline returns it; return_full_text=False: the completion only
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from polylm.errors import PolyLMError
from polylm.generate import GenerationConfig, TextGeneration, TextGenerator

TASKS = ("text-generation", "text_generation")  # ModelScope's Tasks.text_generation is "text-generation"


class TextGenerationPipeline:
    """Call with a string (-> {"text": str}) or a list of strings (-> a list of those), plus generation kwargs.

    `text` is the prompt and the completion, as ModelScope's PolyLM pipeline returns it (`tokenizer.decode` of the
    whole generated sequence, special tokens skipped) and as Hugging Face's text-generation pipeline does by
    default; `return_full_text=False` gives the completion alone.
    """

    def __init__(self, generator: TextGenerator, defaults: GenerationConfig) -> None:
        self.generator, self.defaults = generator, defaults

    def __call__(self, text: str | Sequence[str], return_full_text: bool = True, **kwargs) -> dict | list[dict]:
        config = self.defaults.replace(**kwargs)
        queries = [text] if isinstance(text, str) else list(text)
        outputs = []
        for query, row in zip(queries, self.generator(queries, config), strict=True):
            texts = [self._full(query, g, config) if return_full_text else g.text for g in row]
            outputs.append({"text": texts[0] if len(texts) == 1 else texts})
        return outputs[0] if isinstance(text, str) else outputs

    def _full(self, query: str, generation: TextGeneration, config: GenerationConfig) -> str:
        """The whole sequence decoded at once (joining two decoded strings could differ at the seam); with stop
        strings, the prompt's text followed by the completion cut at the stop."""
        prompt = self.generator.prompt_ids(query)
        if config.stop:
            return self.generator.tokenizer.decode(prompt) + generation.text
        return self.generator.tokenizer.decode(prompt + generation.token_ids)


def pipeline(
    task: str = "text-generation",
    model: str | Path | None = None,
    template: str = "plain",
    device: str = "cpu",
    dtype: str | None = None,
    revision: str | None = None,
    **generation_defaults,
) -> TextGenerationPipeline:
    """Load `model` (a directory, a Hugging Face id, or `modelscope://OWNER/NAME` as the model card's
    `damo/...` repos; docs/generation.md) at `revision` for text generation; kwargs become the default
    generation options."""
    if task not in TASKS:
        raise PolyLMError(f"unsupported pipeline task {task!r}; polylm offers {TASKS[0]!r}")
    if model is None:
        raise PolyLMError("pipeline needs model=<directory or hub id>")
    generator = TextGenerator.load(model, template, dtype, device, revision)
    return TextGenerationPipeline(generator, GenerationConfig().replace(**generation_defaults))
