"""Trigger words: put one unique token into every caption, and say how the text encoders see it."""
import os
import re

import comfy.sd1_clip
import comfy.text_encoders.flux

TRIGGER_MODES = ("prepend", "replace [trigger]")
PLACEHOLDER = "[trigger]"
_TOKENIZERS = {}


def _tokenizers():
    if not _TOKENIZERS:
        from transformers import CLIPTokenizer, T5TokenizerFast
        clip_dir = os.path.join(os.path.dirname(comfy.sd1_clip.__file__), "sd1_tokenizer")
        t5_dir = os.path.join(os.path.dirname(comfy.text_encoders.flux.__file__), "t5_tokenizer")
        _TOKENIZERS["clip"] = CLIPTokenizer.from_pretrained(clip_dir)
        _TOKENIZERS["t5"] = T5TokenizerFast.from_pretrained(t5_dir)
    return _TOKENIZERS["clip"], _TOKENIZERS["t5"]


def token_split(trigger: str):
    """How CLIP-L and T5 (the tokenizers ComfyUI ships) split the trigger word."""
    clip, t5 = _tokenizers()
    return clip.tokenize(trigger), t5.tokenize(trigger)


def t5_token_counts(captions) -> list:
    """T5 tokens of each caption, end token included (as ComfyUI's FLUX tokenizer counts them, before padding)."""
    _, t5 = _tokenizers()
    return [len(ids) for ids in t5(list(captions), add_special_tokens=True)["input_ids"]] if captions else []


def trigger_warnings(trigger: str):
    clip_tokens, t5_tokens = token_split(trigger)
    warnings = []
    if re.search(r"\s", trigger.strip()):
        warnings.append("the trigger contains spaces; a single unique token-like word is easier to learn")
    if len(clip_tokens) == 1 or len(t5_tokens) == 1:
        warnings.append(f"'{trigger}' is a single token for {'CLIP-L' if len(clip_tokens) == 1 else 'T5'}: it is a common "
                        "word or known concept, so the LoRA will fight what the model already knows. Use something "
                        "unique such as 'mytoken_artstyle'.")
    return warnings


def _contains(caption: str, trigger: str) -> bool:
    return re.search(r"(?<![\w])" + re.escape(trigger) + r"(?![\w])", caption) is not None


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.;:])", r"\1", text)
    text = re.sub(r"([,;:])\1+", r"\1", text)
    return text.strip(" ,;")


def apply_trigger(caption: str, trigger: str, mode: str = "prepend") -> str:
    """prepend: 'trigger, caption' unless the caption already has it. replace: '[trigger]' -> trigger, and captions
    without the placeholder get it prepended. Never duplicates the trigger."""
    if mode not in TRIGGER_MODES:
        raise ValueError(f"Unknown trigger mode '{mode}'; choose one of {TRIGGER_MODES}.")
    if mode == TRIGGER_MODES[1] and PLACEHOLDER in caption:
        if _contains(caption, trigger):
            return _tidy(caption.replace(PLACEHOLDER, ""))
        head, _, tail = caption.partition(PLACEHOLDER)
        return _tidy(head + trigger + tail.replace(PLACEHOLDER, ""))
    if _contains(caption, trigger):
        return caption
    return f"{trigger}, {caption}" if caption.strip() else trigger
