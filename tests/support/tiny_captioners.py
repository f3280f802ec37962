"""Tiny, randomly initialised captioners of transformers' NATIVE vision-language architectures (tests only).

Nothing is downloaded: the tokenizers are byte-level BPEs trained here on a few sentences, the image processors
and models are built from their classes with tiny sizes and ``torch.manual_seed(0)``, and everything is written
with ``save_pretrained`` so that ``from_pretrained(folder)`` works offline (transformers 5.23). Both writers are
deterministic (byte-identical files on every call), take well under a second and write under 1 MB.

- ``write_tiny_florence2(folder)``: ``Florence2ForConditionalGeneration`` (model_type "florence2", no remote
  code) + ``Florence2Processor``: ``CLIPImageProcessor`` (every image resized to 32x32 -> 17 image tokens), a
  ``BartTokenizer`` (= v5's ``RobertaTokenizer``) with ``image_token`` "<image>" and the 1000 ``<loc_N>`` tokens,
  and the ``post_processor_config`` that ``post_process_generation`` needs. Loads with ``AutoProcessor`` and with
  ``Florence2ForConditionalGeneration``, ``AutoModelForImageTextToText``, ``AutoModelForMultimodalLM`` or
  ``AutoModelForPreTraining`` (``AutoModel`` gives the head-less ``Florence2Model``; ``AutoModelForSeq2SeqLM``
  and ``AutoModelForCausalLM`` do not map it).
- ``write_tiny_qwen25vl(folder)``: ``Qwen2_5_VLForConditionalGeneration`` + the processor files of a hub Qwen2.5-VL
  checkpoint: ``preprocessor_config.json`` (``Qwen2VLImageProcessor`` with 56*56 <= pixels <= 2*56*56, i.e. 4 to 8
  image tokens per image, depending on its aspect ratio), a ``Qwen2Tokenizer`` with Qwen's special tokens (eos
  "<|im_end|>", pad "<|endoftext|>", ``padding_side`` "left") and Qwen2-VL's chat template (``chat_template.jinja``).
  Loads with ``AutoProcessor`` and with ``Qwen2_5_VLForConditionalGeneration``, ``AutoModelForImageTextToText`` or
  ``AutoModelForMultimodalLM``.

Transformers 5.23 cannot build ``Qwen2_5_VLProcessor`` without torchvision (every processor sub-component is
type-checked and ``AutoVideoProcessor`` / ``VideoProcessorMixin`` exist only with torchvision; see
huggingface/transformers#48558), and the PyPI torchvision wheel does not import next to the CPU torch of the test
machine. ``allow_qwen_processor_without_torchvision()`` is a TESTS-ONLY patch for that: call it (in the process that
loads the model) before ``AutoProcessor.from_pretrained`` of a Qwen2.5-VL folder; it does nothing where torchvision
works. Florence-2 needs no patch.

The random models never emit special, image, location or odd byte tokens (the output-embedding rows of every token
that does not decode to a plain word or ',' / '.' are zero, every other logit is random), so generation always runs
to ``max_new_tokens`` and decodes to non-empty pseudo-words, which differ from image to image (``INIT_STD``).
"""
import json
import re
from pathlib import Path

FLORENCE2_MODEL_CLASS_NAME = "Florence2ForConditionalGeneration"
FLORENCE2_AUTO_MODEL_CLASS_NAMES = ("AutoModelForImageTextToText", "AutoModelForMultimodalLM",
                                    "AutoModelForPreTraining")
QWEN25VL_MODEL_CLASS_NAME = "Qwen2_5_VLForConditionalGeneration"
QWEN25VL_AUTO_MODEL_CLASS_NAMES = ("AutoModelForImageTextToText", "AutoModelForMultimodalLM")

SEED = 0
INIT_STD = 0.3  # larger than the usual 0.02 so that the random captions depend on the image
_WORD = re.compile(r" ?[A-Za-z]+|[,.]")
_CORPUS = [
    "a photo of a cat sitting on a red chair next to a window",
    "the image shows a dog running in a green field under a blue sky",
    "a close up portrait of a woman with long brown hair, soft light",
    "a bowl of fruit on a wooden table, apples, oranges and grapes",
    "a city street at night with cars, lights and tall buildings",
    "an old man wearing a hat and glasses, smiling at the camera",
    "a mountain lake with trees and snow, reflected in the water",
    "a white car parked in front of a small house with a garden",
    "a painting of flowers in a vase, oil on canvas, warm colors",
    "What does the image describe?",
    "Describe in detail what is shown in the image.",
    "Describe with a paragraph what is shown in the image.",
    "What is the text in the image?",
    "Locate the objects with category name in the image.",
    "Describe this image.",
    "You are a helpful assistant.",
    "system user assistant",
]

# Florence-2 task -> parsing rules, as in the checkpoints' processor config (post_process_generation needs them).
_FLORENCE_POST_PROCESSOR_CONFIG = {
    "ocr": {
        "pattern": r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>",
        "area_threshold": 0.0,
    },
    "phrase_grounding": {"banned_grounding_tokens": ["the image"]},
    "pure_text": {},
    "description_with_bboxes": {},
    "description_with_polygons": {},
    "polygons": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}

_QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
]

# Qwen2-VL / Qwen2.5-VL's chat template (as shipped with the Instruct checkpoints).
QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _train_bpe(pre_tokenizer, vocab_size=400, special_tokens=()):
    """(vocab, merges) of a byte-level BPE trained on the tiny corpus (deterministic)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


def _only_words(model, tokenizer):
    """Zero the output-embedding rows of every token that does not decode to a plain word or ',' / '.': the random
    model then never emits special, image, location or odd byte tokens (their logit is 0, the best of the others is
    always above), so greedy generation gives ``max_new_tokens`` of readable pseudo-words."""
    import torch
    silent = [i for i in range(len(tokenizer)) if not _WORD.fullmatch(tokenizer.decode([i]))]
    tied = getattr(model.config, "tie_word_embeddings", False)
    with torch.no_grad():
        model.get_output_embeddings().weight[silent] = 0.0
        if tied:  # the saved weight is the input embedding (lm_head is tied to it when loading)
            model.get_input_embeddings().weight[silent] = 0.0


def _folder(folder) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_tiny_florence2(folder: Path) -> Path:
    """Writes a tiny Florence-2 (transformers' native ``florence2``) model + processor into ``folder``."""
    import torch
    from tokenizers import pre_tokenizers
    from transformers import (BartTokenizer, CLIPImageProcessorPil, Florence2Config, Florence2ForConditionalGeneration,
                              Florence2Processor, GenerationConfig)
    folder = _folder(folder)

    vocab, merges = _train_bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), 400, ["<s>", "<pad>", "</s>", "<unk>"])
    tokenizer = BartTokenizer(vocab=vocab, merges=merges, extra_special_tokens={"image_token": "<image>"})
    tokenizer.add_tokens([f"<loc_{i}>" for i in range(1000)])  # Florence-2's location tokens (not special)

    # DaViT with two stages (strides 4 and 2): a 32x32 image gives a 4x4 map -> 16 + 1 (pooled) image tokens.
    image_size, stride = 32, 4 * 2
    image_processor = CLIPImageProcessorPil(
        size={"height": image_size, "width": image_size}, crop_size={"height": image_size, "width": image_size},
        do_center_crop=False, resample=3, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
        image_seq_length=(image_size // stride) ** 2 + 1)
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tokenizer,
                                   post_processor_config=_FLORENCE_POST_PROCESSOR_CONFIG)

    bos, pad, eos = tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id
    text_config = dict(model_type="bart", vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1,
                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                       max_position_embeddings=1024, init_std=INIT_STD, bos_token_id=bos, pad_token_id=pad,
                       eos_token_id=eos, decoder_start_token_id=eos, forced_eos_token_id=eos)
    vision_config = dict(depths=[1, 1], patch_size=[7, 3], patch_stride=[4, 2], patch_padding=[3, 1],
                         patch_prenorm=[False, True], embed_dim=[16, 32], num_heads=[1, 2], num_groups=[1, 2],
                         window_size=4, projection_dim=32, drop_path_rate=0.0, max_position_embeddings=16,
                         max_temporal_embeddings=4)
    config = Florence2Config(text_config=text_config, vision_config=vision_config,
                             image_token_id=tokenizer.image_token_id)
    torch.manual_seed(SEED)
    model = Florence2ForConditionalGeneration(config).eval()
    _only_words(model, tokenizer)
    model.generation_config = GenerationConfig(bos_token_id=bos, pad_token_id=pad, eos_token_id=eos,
                                               decoder_start_token_id=eos, forced_bos_token_id=bos,
                                               forced_eos_token_id=eos, no_repeat_ngram_size=3)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def write_tiny_qwen25vl(folder: Path) -> Path:
    """Writes a tiny Qwen2.5-VL (``qwen2_5_vl``) model + processor files into ``folder`` (hub checkpoint layout)."""
    import torch
    from tokenizers import Regex, pre_tokenizers
    from transformers import (GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer,
                              Qwen2VLImageProcessorPil)
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX
    folder = _folder(folder)

    vocab, merges = _train_bpe(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]), 400)
    for token in _QWEN_SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", additional_special_tokens=list(_QWEN_SPECIAL_TOKENS),
                               errors="replace", split_special_tokens=False, model_max_length=32768,
                               padding_side="left", chat_template=QWEN_CHAT_TEMPLATE)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _QWEN_SPECIAL_TOKENS}

    # Patches of 14 merged 2x2 (factor 28); 56*56 <= pixels <= 2*56*56 gives 4 to 8 image tokens per image.
    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=2 * 56 * 56, patch_size=14,
                                               temporal_patch_size=2, merge_size=2,
                                               image_mean=[0.48145466, 0.4578275, 0.40821073],
                                               image_std=[0.26862954, 0.26130258, 0.27577711])

    text_config = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                       max_window_layers=2, rms_norm_eps=1e-6, hidden_act="silu", initializer_range=INIT_STD,
                       rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
                       bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                       pad_token_id=ids["<|endoftext|>"])
    vision_config = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, in_channels=3, patch_size=14,
                         spatial_merge_size=2, temporal_patch_size=2, window_size=56, out_hidden_size=64,
                         fullatt_block_indexes=[1], tokens_per_second=2, hidden_act="silu",
                         initializer_range=INIT_STD)
    config = Qwen2_5_VLConfig(text_config=text_config, vision_config=vision_config, tie_word_embeddings=False,
                              image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                              vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(SEED)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    _only_words(model, tokenizer)
    model.generation_config = GenerationConfig(bos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"],
                                               eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]])
    model.save_pretrained(folder)

    # The processor files of the hub checkpoints: preprocessor_config.json + tokenizer files + chat template.
    # (Qwen2_5_VLProcessor.save_pretrained needs torchvision for its video processor; these files do not, and
    # AutoVideoProcessor infers Qwen2VLVideoProcessor from them where torchvision exists.)
    tokenizer.save_pretrained(folder)
    image_processor.save_pretrained(folder)
    preprocessor = folder / "preprocessor_config.json"
    data = json.loads(preprocessor.read_text())
    data["processor_class"] = "Qwen2_5_VLProcessor"
    preprocessor.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    if not (folder / "chat_template.jinja").is_file():
        (folder / "chat_template.jinja").write_text(QWEN_CHAT_TEMPLATE)
    return folder


def allow_qwen_processor_without_torchvision() -> bool:
    """TESTS ONLY. Lets ``AutoProcessor.from_pretrained`` build ``Qwen2_5_VLProcessor`` for image-only use when
    torchvision is missing: its video processor becomes a stub that raises if given videos. No-op (False) where
    torchvision is importable; True once the patch is in place. Idempotent."""
    from transformers.utils import is_torchvision_available
    if is_torchvision_available():
        return False
    from transformers import processing_utils
    from transformers.video_processing_utils import VideoProcessorMixin
    global ImageOnlyVideoProcessor
    if ImageOnlyVideoProcessor is None:
        class ImageOnlyVideoProcessor(VideoProcessorMixin):
            model_input_names = ["pixel_values_videos", "video_grid_thw"]
            merge_size = 2
            temporal_patch_size = 2

            @classmethod
            def from_pretrained(cls, *args, **kwargs):
                return cls()

            def __call__(self, *args, **kwargs):
                raise ImportError("Videos need torchvision (this video processor is a tests-only stub).")

            preprocess = __call__
    # ProcessorMixin type-checks sub-processors against transformers.VideoProcessorMixin (absent without torchvision)
    processing_utils.transformers_module.VideoProcessorMixin = VideoProcessorMixin
    mapping = processing_utils.MODALITY_TO_AUTOPROCESSOR_MAPPING  # AutoVideoProcessor -> the stub
    mapping._MAPPING_NAMES = {**type(mapping)._MAPPING_NAMES, "video_processor": (__name__, "ImageOnlyVideoProcessor")}
    return True


ImageOnlyVideoProcessor = None  # the stub class, once allow_qwen_processor_without_torchvision() made it


if __name__ == "__main__":
    import os
    import tempfile
    import time

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.set_num_threads(min(2, torch.get_num_threads()))
    start = time.perf_counter()
    images = [Image.new("RGB", (80, 48), (200, 30, 30)), Image.new("RGB", (30, 70), (20, 160, 90))]
    images[0].paste((240, 240, 40), (10, 10, 40, 30))
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        florence = write_tiny_florence2(Path(tmp) / "florence2")
        size = sum(f.stat().st_size for f in florence.iterdir())
        print(f"florence2: written in {time.perf_counter() - t:.2f}s, {size / 1e6:.2f} MB: "
              f"{sorted(os.listdir(florence))}")
        t = time.perf_counter()
        processor = AutoProcessor.from_pretrained(florence)
        model = AutoModelForImageTextToText.from_pretrained(florence)
        assert type(model).__name__ == FLORENCE2_MODEL_CLASS_NAME, type(model)
        task = "<DETAILED_CAPTION>"
        inputs = processor(text=[task, task], images=images, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=12, num_beams=1, do_sample=False)
            beam_ids = model.generate(**inputs, max_new_tokens=12, num_beams=3, do_sample=False)
        texts = processor.batch_decode(ids, skip_special_tokens=True)
        for text, raw, image in zip(texts, processor.batch_decode(beam_ids, skip_special_tokens=False), images):
            parsed = processor.post_process_generation(text, task=task, image_size=image.size)
            parsed_beam = processor.post_process_generation(raw, task=task, image_size=image.size)
            print(f"  florence2 greedy: {parsed!r}  beams=3: {parsed_beam!r}")
            assert parsed[task].strip() and parsed_beam[task].strip()
        print(f"florence2: loaded + generated in {time.perf_counter() - t:.2f}s")

        t = time.perf_counter()
        qwen = write_tiny_qwen25vl(Path(tmp) / "qwen25vl")
        size = sum(f.stat().st_size for f in qwen.iterdir())
        print(f"qwen2.5-vl: written in {time.perf_counter() - t:.2f}s, {size / 1e6:.2f} MB: {sorted(os.listdir(qwen))}")
        t = time.perf_counter()
        print(f"  allow_qwen_processor_without_torchvision() -> {allow_qwen_processor_without_torchvision()}")
        processor = AutoProcessor.from_pretrained(qwen)
        model = AutoModelForImageTextToText.from_pretrained(qwen)
        assert type(model).__name__ == QWEN25VL_MODEL_CLASS_NAME, type(model)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}]
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = processor(text=[prompt, prompt], images=images, return_tensors="pt", padding=True)
        print(f"  prompt {prompt!r}; input_ids {tuple(inputs['input_ids'].shape)}, "
              f"image_grid_thw {inputs['image_grid_thw'].tolist()}")
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=12, do_sample=False)
        texts = processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        for text in texts:
            print(f"  qwen2.5-vl: {text!r}")
            assert text.strip()
        print(f"qwen2.5-vl: loaded + generated in {time.perf_counter() - t:.2f}s")
    print(f"total {time.perf_counter() - start:.2f}s")
