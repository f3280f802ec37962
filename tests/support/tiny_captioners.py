"""Tiny, randomly initialised captioners of transformers' NATIVE vision-language architectures (tests only).

Nothing is downloaded: the tokenizers are byte-level BPEs trained here on a few sentences, the image processors
and models are built from their classes with tiny sizes and ``torch.manual_seed(0)``, and everything is written
with ``save_pretrained`` so that ``from_pretrained(folder)`` works offline (transformers 5.23 / 5.25). Every writer
is deterministic (byte-identical files on every call), takes well under a second and writes under 1 MB.

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
- ``write_tiny_qwen3vl(folder)``: ``Qwen3VLForConditionalGeneration`` (model_type "qwen3_vl", with DeepStack) + the
  processor files of a hub Qwen3-VL-*-Instruct checkpoint: ``preprocessor_config.json`` (``Qwen2VLImageProcessor``,
  processor_class "Qwen3VLProcessor", patches of 16 merged 2x2, i.e. factor 32, 64*64 <= pixels <= 2*64*64: 4 to 8
  image tokens per image), ``video_preprocessor_config.json`` (``Qwen3VLVideoProcessor``), the Qwen tokenizer as above
  and Qwen3-VL's own chat template (no default system prompt; several images in one message). Loads with
  ``AutoProcessor`` (``Qwen3VLProcessor``) and with ``Qwen3VLForConditionalGeneration``,
  ``AutoModelForImageTextToText`` or ``AutoModelForMultimodalLM``. Messages as for Qwen2.5-VL, e.g. ``[{"role":
  "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": ...}]}]`` with the images passed
  in order to ``processor(text=[...], images=[...], padding=True)``; the processor's ``mm_token_type_ids`` must reach
  ``generate`` (``**inputs`` does it).
- ``write_tiny_joycaption(folder)``: a JoyCaption-Beta-One-shaped ``LlavaForConditionalGeneration`` (model_type
  "llava": SigLIP vision tower, 32x32 pixels in patches of 8 -> 16 image tokens, LLaVA's 2-layer GELU projector
  with bias, features of the second-to-last layer, "full" selection; a Llama 3.1-style text model) + the processor
  files of fancyfeast/llama-joycaption-beta-one-hf-llava: ``preprocessor_config.json`` (``SiglipImageProcessor``),
  ``processor_config.json`` (``LlavaProcessor``: image token "<image>", patch size), a Llama 3 byte-level BPE
  ``PreTrainedTokenizerFast`` (bos "<|begin_of_text|>" added by its post-processor, eos "<|eot_id|>", pad
  "<|finetune_right_pad_id|>", ``padding_side`` "left") and JoyCaption's chat template, which takes STRING contents and
  puts "<image>" at the start of the user message (``JOYCAPTION_CHAT_TEMPLATE``). The model card's usage works as is:
  ``processor(text=[processor.apply_chat_template(convo, tokenize=False, add_generation_prompt=True)],
  images=[image], return_tensors="pt")``. Loads with ``AutoProcessor`` and with ``LlavaForConditionalGeneration``,
  ``AutoModelForImageTextToText``, ``AutoModelForMultimodalLM`` or ``AutoModelForPreTraining``.

Transformers 5.23 / 5.25 cannot build ``Qwen2_5_VLProcessor`` or ``Qwen3VLProcessor`` without torchvision (every
processor sub-component is type-checked and ``AutoVideoProcessor`` / ``VideoProcessorMixin`` exist only with
torchvision; see huggingface/transformers#48558), and the PyPI torchvision wheel does not import next to the CPU
torch of the test machine. ``allow_qwen_processor_without_torchvision()`` is a TESTS-ONLY patch for that: call it (in
the process that loads the model) before ``AutoProcessor.from_pretrained`` of a Qwen2.5-VL or Qwen3-VL folder; it
does nothing where torchvision works. Florence-2 and JoyCaption (``SiglipImageProcessorPil``) need no patch.

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
QWEN3VL_MODEL_CLASS_NAME = "Qwen3VLForConditionalGeneration"
QWEN3VL_AUTO_MODEL_CLASS_NAMES = ("AutoModelForImageTextToText", "AutoModelForMultimodalLM")
JOYCAPTION_MODEL_CLASS_NAME = "LlavaForConditionalGeneration"
JOYCAPTION_AUTO_MODEL_CLASS_NAMES = ("AutoModelForImageTextToText", "AutoModelForMultimodalLM",
                                     "AutoModelForPreTraining")

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


# Qwen3-VL-*-Instruct's chat template (chat_template.json of e.g. Qwen/Qwen3-VL-30B-A3B-Instruct): no default system
# prompt, any number of images / videos anywhere in a message ('<|vision_start|><|image_pad|><|vision_end|>' each).
QWEN3VL_CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' }}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set image_count = namespace(value=0) %}
{%- set video_count = namespace(value=0) %}
{%- for message in messages %}
    {%- if message.role == "user" %}
        {{- '<|im_start|>' + message.role + '\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content_item in message.content %}
                {%- if 'text' in content_item %}
                    {{- content_item.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and message.content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

# JoyCaption Beta One's chat template (fancyfeast/llama-joycaption-beta-one-hf-llava: Llama 3.1's, without the bos,
# which the tokenizer adds, and with "<image>" put at the start of the (first) user message, whose content is a
# string). Lines 1-29 as mirrored in codeShare/joycaption_beta_one_SDNQ's chat_template.jinja (43 lines); the rest
# follows Llama 3.1's template and JoyCaption's own code (finetuning/train.py strips "<image>" from the data and
# expects exactly 3 <|eot_id|>: system, user, assistant; the Alpha Two app put the image right after the user header).
# Jinja does not carry the loop's `set` over iterations, so every user message gets the "<image>" (as in the original).
JOYCAPTION_CHAT_TEMPLATE = """{%- if not date_string is defined %}
{%- set date_string = "26 July 2024" %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
{%- set system_message = messages[0]['content'] %}
{%- set messages = messages[1:] %}
{%- else %}
{%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>

" }}
{{- "Cutting Knowledge Date: December 2023
" }}
{{- "Today Date: " + date_string + "

" }}
{{- system_message }}
{{- "<|eot_id|>" }}


{%- set first_user_message = True %}
{%- for message in messages %}
{%- if first_user_message and message['role'] == 'user' %}
{%- set first_user_message = False %}
{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>

<image>' + message['content'] | trim + '<|eot_id|>' }}
{%- else %}
{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>

' + message['content'] | trim + '<|eot_id|>' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
{{- '<|start_header_id|>assistant<|end_header_id|>

' }}
{%- endif %}
"""


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


def _qwen_tokenizer(chat_template: str, model_max_length: int):
    """(a Qwen2Tokenizer with Qwen's special tokens and ``chat_template``, {special token: id})."""
    from tokenizers import Regex, pre_tokenizers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX
    vocab, merges = _train_bpe(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]), 400)
    for token in _QWEN_SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", additional_special_tokens=list(_QWEN_SPECIAL_TOKENS),
                               errors="replace", split_special_tokens=False, model_max_length=model_max_length,
                               padding_side="left", chat_template=chat_template)
    return tokenizer, {t: tokenizer.convert_tokens_to_ids(t) for t in _QWEN_SPECIAL_TOKENS}


def _save_qwen_processor_files(folder: Path, tokenizer, image_processor, processor_class: str, chat_template: str):
    """The processor files of a hub Qwen-VL checkpoint: preprocessor_config.json (naming ``processor_class``),
    the tokenizer files and chat_template.jinja."""
    tokenizer.save_pretrained(folder)
    image_processor.save_pretrained(folder)
    preprocessor = folder / "preprocessor_config.json"
    data = json.loads(preprocessor.read_text())
    data["processor_class"] = processor_class
    preprocessor.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    if not (folder / "chat_template.jinja").is_file():
        (folder / "chat_template.jinja").write_text(chat_template)


def write_tiny_qwen25vl(folder: Path) -> Path:
    """Writes a tiny Qwen2.5-VL (``qwen2_5_vl``) model + processor files into ``folder`` (hub checkpoint layout)."""
    import torch
    from transformers import (GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
                              Qwen2VLImageProcessorPil)
    folder = _folder(folder)

    tokenizer, ids = _qwen_tokenizer(QWEN_CHAT_TEMPLATE, 32768)

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
    _save_qwen_processor_files(folder, tokenizer, image_processor, "Qwen2_5_VLProcessor", QWEN_CHAT_TEMPLATE)
    return folder


def write_tiny_qwen3vl(folder: Path) -> Path:
    """Writes a tiny Qwen3-VL (``qwen3_vl``) model + processor files into ``folder`` (hub checkpoint layout)."""
    import torch
    from transformers import GenerationConfig, Qwen2VLImageProcessorPil, Qwen3VLConfig, Qwen3VLForConditionalGeneration
    folder = _folder(folder)

    tokenizer, ids = _qwen_tokenizer(QWEN3VL_CHAT_TEMPLATE, 262144)

    # Patches of 16 merged 2x2 (factor 32); 64*64 <= pixels <= 2*64*64 gives 4 to 8 image tokens per image.
    image_processor = Qwen2VLImageProcessorPil(min_pixels=64 * 64, max_pixels=2 * 64 * 64, patch_size=16,
                                               temporal_patch_size=2, merge_size=2, image_mean=[0.5, 0.5, 0.5],
                                               image_std=[0.5, 0.5, 0.5])

    text_config = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
                       rms_norm_eps=1e-6, hidden_act="silu", initializer_range=INIT_STD,
                       rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [4, 2, 2],
                                        "mrope_interleaved": True},
                       bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                       pad_token_id=ids["<|endoftext|>"])
    vision_config = dict(depth=2, hidden_size=16, intermediate_size=32, num_heads=2, in_channels=3, patch_size=16,
                         spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=64, num_position_embeddings=16,
                         deepstack_visual_indexes=[0], hidden_act="gelu_pytorch_tanh", initializer_range=INIT_STD)
    config = Qwen3VLConfig(text_config=text_config, vision_config=vision_config, tie_word_embeddings=False,
                           image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                           vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(SEED)
    model = Qwen3VLForConditionalGeneration(config).eval()
    _only_words(model, tokenizer)
    model.generation_config = GenerationConfig(bos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"],
                                               eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]])
    model.save_pretrained(folder)

    # The processor files of the hub checkpoints: preprocessor_config.json + video_preprocessor_config.json +
    # tokenizer files + chat template (Qwen3VLProcessor.save_pretrained needs torchvision for its video processor).
    _save_qwen_processor_files(folder, tokenizer, image_processor, "Qwen3VLProcessor", QWEN3VL_CHAT_TEMPLATE)
    video = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "merge_size": 2, "patch_size": 16,
             "processor_class": "Qwen3VLProcessor", "size": {"longest_edge": 4 * 2 * 64 * 64, "shortest_edge": 64 * 64},
             "temporal_patch_size": 2, "video_processor_type": "Qwen3VLVideoProcessor"}
    (folder / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2, sort_keys=True) + "\n")
    return folder


_LLAMA3_SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>", "<|start_header_id|>",
                          "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>", "<image>"]
# Llama 3's pre-tokenizer split (tokenizer.json of meta-llama/Llama-3.1-8B-Instruct)
_LLAMA3_PRETOKENIZE_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                             r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def write_tiny_joycaption(folder: Path) -> Path:
    """Writes a tiny JoyCaption-Beta-One-shaped LLaVA (``llava``: SigLIP tower + Llama) + processor into ``folder``."""
    import torch
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import (GenerationConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor, PreTrainedTokenizerFast, SiglipImageProcessorPil, SiglipVisionConfig)
    folder = _folder(folder)

    pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_LLAMA3_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    vocab, merges = _train_bpe(pre_tokenizer, 400)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in _LLAMA3_SPECIAL_TOKENS])
    bos = backend.token_to_id("<|begin_of_text|>")
    backend.post_processor = processors.Sequence([  # Llama 3: a <|begin_of_text|> in front of every encoded text
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                        pad_token="<|finetune_right_pad_id|>", model_max_length=131072,
                                        padding_side="left",
                                        model_input_names=["input_ids", "attention_mask"],
                                        chat_template=JOYCAPTION_CHAT_TEMPLATE)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _LLAMA3_SPECIAL_TOKENS}
    eos_ids = [ids["<|end_of_text|>"], ids["<|eom_id|>"], ids["<|eot_id|>"]]  # Llama 3.1 Instruct's

    # SigLIP so400m-patch14-384 in small: a 32x32 image in patches of 8 -> 16 image tokens (JoyCaption: 729).
    image_size, patch_size = 32, 8
    image_processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size}, resample=3,
                                              image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
                               vision_feature_select_strategy="full", num_additional_image_tokens=0,
                               image_token="<image>", chat_template=JOYCAPTION_CHAT_TEMPLATE)

    vision_config = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, num_channels=3, image_size=image_size,
                                       patch_size=patch_size, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
    text_config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
                              rms_norm_eps=1e-5, hidden_act="silu", initializer_range=INIT_STD,
                              rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                               "original_max_position_embeddings": 256},
                              bos_token_id=bos, eos_token_id=eos_ids, tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision_config, text_config=text_config, image_token_id=ids["<image>"],
                         projector_hidden_act="gelu", vision_feature_select_strategy="full", vision_feature_layer=-2,
                         image_seq_length=(image_size // patch_size) ** 2, multimodal_projector_bias=True,
                         tie_word_embeddings=False)
    torch.manual_seed(SEED)
    model = LlavaForConditionalGeneration(config).eval()
    _only_words(model, tokenizer)
    model.generation_config = GenerationConfig(bos_token_id=bos, pad_token_id=ids["<|finetune_right_pad_id|>"],
                                               eos_token_id=eos_ids)
    model.save_pretrained(folder)

    # The hub checkpoint's layout: tokenizer files + chat template, preprocessor_config.json (the image processor) and
    # a processor_config.json with LlavaProcessor's own settings (v5's processor.save_pretrained would nest both).
    tokenizer.save_pretrained(folder)
    tokenizer_config = folder / "tokenizer_config.json"
    data = json.loads(tokenizer_config.read_text())
    data["tokenizer_class"] = "PreTrainedTokenizerFast"  # as in the checkpoint (v5 writes its alias TokenizersBackend)
    tokenizer_config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    image_processor.save_pretrained(folder)
    preprocessor = folder / "preprocessor_config.json"
    data = json.loads(preprocessor.read_text())
    data["processor_class"] = "LlavaProcessor"
    preprocessor.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    settings = {"image_token": processor.image_token, "num_additional_image_tokens": 0, "patch_size": patch_size,
                "processor_class": "LlavaProcessor", "vision_feature_select_strategy": "full"}
    (folder / "processor_config.json").write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    if not (folder / "chat_template.jinja").is_file():
        (folder / "chat_template.jinja").write_text(JOYCAPTION_CHAT_TEMPLATE)
    return folder


def allow_qwen_processor_without_torchvision() -> bool:
    """TESTS ONLY. Lets ``AutoProcessor.from_pretrained`` build ``Qwen2_5_VLProcessor`` or ``Qwen3VLProcessor`` for
    image-only use when torchvision is missing: its video processor becomes a stub (merge size 2, temporal patch
    size 2, as both expect) that raises if given videos. No-op (False) where torchvision is importable; True once the
    patch is in place. Idempotent."""
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
    from transformers import (AutoModelForImageTextToText, AutoProcessor, LlavaForConditionalGeneration,
                              Qwen3VLForConditionalGeneration)

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

        t = time.perf_counter()
        qwen3 = write_tiny_qwen3vl(Path(tmp) / "qwen3vl")
        size = sum(f.stat().st_size for f in qwen3.iterdir())
        print(f"qwen3-vl: written in {time.perf_counter() - t:.2f}s, {size / 1e6:.2f} MB: {sorted(os.listdir(qwen3))}")
        t = time.perf_counter()
        processor = AutoProcessor.from_pretrained(qwen3)
        model = Qwen3VLForConditionalGeneration.from_pretrained(qwen3)
        assert type(model).__name__ == QWEN3VL_MODEL_CLASS_NAME, type(model)
        one = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}]
        two = [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                            {"type": "text", "text": "Describe these images."}]}]
        for name, chats, chat_images in (("1 image a chat", [one, one], images),
                                         ("2 images a chat", [two, two], images + images[::-1])):
            prompts = [processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats]
            inputs = processor(text=prompts, images=chat_images, return_tensors="pt", padding=True)
            print(f"  {name}: prompt {prompts[0]!r}; input_ids {tuple(inputs['input_ids'].shape)}, "
                  f"image_grid_thw {inputs['image_grid_thw'].tolist()}")
            assert (inputs["attention_mask"][:, -1] == 1).all()  # left padding
            with torch.no_grad():
                ids = model.generate(**inputs, max_new_tokens=12, do_sample=False)
            texts = processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
            for text in texts:
                print(f"  qwen3-vl ({name}): {text!r}")
                assert text.strip()
            assert ids.shape[1] == inputs["input_ids"].shape[1] + 12 and texts[0] != texts[1]
        print(f"qwen3-vl: loaded + generated in {time.perf_counter() - t:.2f}s")

        t = time.perf_counter()
        joy = write_tiny_joycaption(Path(tmp) / "joycaption")
        size = sum(f.stat().st_size for f in joy.iterdir())
        print(f"joycaption: written in {time.perf_counter() - t:.2f}s, {size / 1e6:.2f} MB: {sorted(os.listdir(joy))}")
        t = time.perf_counter()
        processor = AutoProcessor.from_pretrained(joy)
        model = LlavaForConditionalGeneration.from_pretrained(joy)
        assert type(model).__name__ == JOYCAPTION_MODEL_CLASS_NAME, type(model)
        # The model card's usage: string contents, the chat template puts the "<image>" in, the processor expands it.
        convo = [{"role": "system", "content": "You are a helpful image captioner."},
                 {"role": "user", "content": "Write a long descriptive caption for this image in a formal tone."}]
        convo_string = processor.apply_chat_template(convo, tokenize=False, add_generation_prompt=True)
        inputs = processor(text=[convo_string], images=[images[0]], return_tensors="pt")
        assert (inputs["input_ids"][0] == processor.tokenizer.bos_token_id).sum() == 1  # one <|begin_of_text|>
        assert (inputs["input_ids"][0] == model.config.image_token_id).sum() == model.config.image_seq_length
        print(f"  prompt {convo_string!r}; input_ids {tuple(inputs['input_ids'].shape)}")
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=12, do_sample=False)
        text = processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]
        print(f"  joycaption (1 image): {text!r}")
        assert text.strip()
        convos = [convo, [convo[0], {"role": "user", "content": "Write a short caption for this image."}]]
        convo_strings = processor.apply_chat_template(convos, tokenize=False, add_generation_prompt=True)
        inputs = processor(text=convo_strings, images=images, return_tensors="pt", padding="longest")
        assert (inputs["attention_mask"][:, -1] == 1).all() and not inputs["attention_mask"].all()  # left padding
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=12, do_sample=False)
        texts = processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        for text in texts:
            print(f"  joycaption (batch of 2): {text!r}")
            assert text.strip()
        assert ids.shape[1] == inputs["input_ids"].shape[1] + 12 and texts[0] != texts[1]
        print(f"joycaption: loaded + generated in {time.perf_counter() - t:.2f}s")

        for write in (write_tiny_florence2, write_tiny_qwen25vl, write_tiny_qwen3vl, write_tiny_joycaption):
            again = write(Path(tmp) / f"again_{write.__name__}")
            first = Path(tmp) / {"write_tiny_florence2": "florence2", "write_tiny_qwen25vl": "qwen25vl",
                                 "write_tiny_qwen3vl": "qwen3vl", "write_tiny_joycaption": "joycaption"}[write.__name__]
            assert sorted(os.listdir(again)) == sorted(os.listdir(first)), write.__name__
            for f in first.iterdir():
                assert (again / f.name).read_bytes() == f.read_bytes(), (write.__name__, f.name)
        print("every writer wrote the same bytes twice")
    print(f"total {time.perf_counter() - start:.2f}s")
