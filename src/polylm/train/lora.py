"""LoRA adapters through `peft` on our own model, and their merge back into plain weights for export."""

from __future__ import annotations

from torch import nn

from polylm.errors import PolyLMError
from polylm.model import PolyLM
from polylm.train.config import LoraSection


def add_lora(model: PolyLM, lora: LoraSection) -> nn.Module:
    """Wrap `model` in peft's LoraModel: only the adapters train, and it forwards `model`'s arguments unchanged."""
    try:
        from peft import LoraConfig, LoraModel
    except ImportError:
        raise PolyLMError("lora.enabled needs peft: pip install 'polylm[lora]'") from None
    config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules)
    )
    return LoraModel(model, config, adapter_name="default")


def merge_lora(model: nn.Module) -> PolyLM:
    """The base model with W + (alpha/r)·B·A folded into each adapted weight."""
    return model.merge_and_unload()
