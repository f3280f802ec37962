"""LoRA files: ComfyUI-native weights -> kohya or diffusers (PEFT) keys, metadata, safe writing."""
import json
import os

import torch
from safetensors.torch import save as safetensors_bytes

import comfy.utils
import folder_paths

from .files import write_exclusive

FORMATS = ("kohya", "diffusers")
PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
PREFIX = "diffusion_model."


def _modules(weights: dict):
    return sorted({k[len(PREFIX):].rsplit(".lora_up.weight", 1)[0] for k in weights if k.endswith(".lora_up.weight")})


def kohya_state_dict(weights: dict) -> dict:
    """``lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha`` (/ ``.dora_scale``)."""
    out = {}
    for key, value in weights.items():
        if not key.startswith(PREFIX):
            raise ValueError(f"Unexpected LoRA key {key}")
        module, _, suffix = key[len(PREFIX):].partition(".lora_")
        if suffix:
            out[f"lora_unet_{module.replace('.', '_')}.lora_{suffix}"] = value
        else:
            module, _, suffix = key[len(PREFIX):].rpartition(".")
            out[f"lora_unet_{module.replace('.', '_')}.{suffix}"] = value
    return out


# The module names of diffusers' FluxTransformer2DModel. ComfyUI's flux_to_diffusers map also lists aliases of other
# formats that point at the same FLUX.1 weights (v0.33: Flux 2's 'attn.to_qkv_mlp_proj' and 'attn.to_out' for
# linear1/linear2, LyCORIS' 'ff.linear_in/out'); writing those too would apply a layer's delta twice.
DIFFUSERS_DOUBLE_BLOCK = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj",
                          "attn.to_out.0", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
                          "ff_context.net.2", "norm1.linear", "norm1_context.linear")
DIFFUSERS_SINGLE_BLOCK = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp", "proj_out", "norm.linear")


def _is_diffusers_flux1_module(name: str) -> bool:
    block, _, rest = name.partition(".")
    if block == "transformer_blocks":
        return rest.partition(".")[2] in DIFFUSERS_DOUBLE_BLOCK
    if block == "single_transformer_blocks":
        return rest.partition(".")[2] in DIFFUSERS_SINGLE_BLOCK
    return False


def diffusers_parts(unet_config: dict) -> dict:
    """ComfyUI layer key -> [(diffusers module, rows or None)], from ComfyUI's own diffusers<->Flux map, restricted
    to the names diffusers' FLUX.1 transformer has."""
    parts = {}
    for diffusers_key, target in comfy.utils.flux_to_diffusers(unet_config, output_prefix=PREFIX).items():
        if not diffusers_key.endswith(".weight") or not _is_diffusers_flux1_module(diffusers_key[:-len(".weight")]):
            continue
        comfy_key, rows = (target, None) if isinstance(target, str) else (target[0], target[1])
        parts.setdefault(comfy_key, []).append((diffusers_key[:-len(".weight")], rows))
    return parts


# diffusers' Flux2Transformer2DModel names the FLUX.2 layers one to one, except the double blocks' fused qkv
FLUX2_DOUBLE_BLOCK = {"img_attn.proj": "attn.to_out.0", "txt_attn.proj": "attn.to_add_out", "img_mlp.0": "ff.linear_in",
                      "img_mlp.2": "ff.linear_out", "txt_mlp.0": "ff_context.linear_in", "txt_mlp.2": "ff_context.linear_out"}
FLUX2_SINGLE_BLOCK = {"linear1": "attn.to_qkv_mlp_proj", "linear2": "attn.to_out"}


def flux2_diffusers_parts(unet_config: dict) -> dict:
    """:func:`diffusers_parts` for FLUX.2 (diffusers' Flux2Transformer2DModel; ComfyUI's LoRA loader reads these
    names where its diffusers map knows FLUX.2)."""
    h, parts = unet_config["hidden_size"], {}
    for i in range(unet_config["depth"]):
        d, t = f"{PREFIX}double_blocks.{i}", f"transformer_blocks.{i}"
        parts[f"{d}.img_attn.qkv.weight"] = [(f"{t}.attn.to_{p}", (0, j * h, h)) for j, p in enumerate("qkv")]
        parts[f"{d}.txt_attn.qkv.weight"] = [(f"{t}.attn.add_{p}_proj", (0, j * h, h)) for j, p in enumerate("qkv")]
        parts.update({f"{d}.{c}.weight": [(f"{t}.{n}", None)] for c, n in FLUX2_DOUBLE_BLOCK.items()})
    for i in range(unet_config["depth_single_blocks"]):
        s, t = f"{PREFIX}single_blocks.{i}", f"single_transformer_blocks.{i}"
        parts.update({f"{s}.{c}.weight": [(f"{t}.{n}", None)] for c, n in FLUX2_SINGLE_BLOCK.items()})
    return parts


def diffusers_state_dict(weights: dict, unet_config: dict) -> dict:
    """PEFT keys (``transformer.transformer_blocks.0.attn.to_q.lora_A.weight`` ...), using ComfyUI's own
    diffusers<->Flux map. Fused layers are split: each part gets a copy of ``lora_A`` and its rows of
    ``lora_B``. The alpha/rank scale is folded into ``lora_B`` (diffusers and ComfyUI then use scale 1)."""
    if any(k.endswith(".dora_scale") for k in weights):
        raise ValueError("DoRA LoRAs can be saved in the 'kohya' format only.")
    if any(".lokr_" in k for k in weights):
        raise ValueError("LoKr adapters can be saved in the 'kohya' (LyCORIS) format only.")
    if any(".hada_" in k for k in weights):
        raise ValueError("LoHa adapters can be saved in the 'kohya' (LyCORIS) format only.")
    by_comfy_key = flux2_diffusers_parts(unet_config) if unet_config.get("image_model") == "flux2" \
        else diffusers_parts(unet_config)
    out = {}
    for module in _modules(weights):
        up = weights[f"{PREFIX}{module}.lora_up.weight"]
        down = weights[f"{PREFIX}{module}.lora_down.weight"]
        alpha = float(weights[f"{PREFIX}{module}.alpha"])
        up = up * (alpha / down.shape[0])
        parts = by_comfy_key.get(f"{PREFIX}{module}.weight")
        if not parts:
            raise ValueError(f"Layer {module} has no diffusers equivalent; save in 'kohya' format.")
        spans = sorted((0, up.shape[0]) if rows is None else (rows[1], rows[1] + rows[2]) for _, rows in parts)
        ends = [0] + [end for _, end in spans]
        if [start for start, _ in spans] != ends[:-1] or ends[-1] != up.shape[0]:  # each row exactly once
            raise ValueError(f"ComfyUI's diffusers map does not split layer {module} into disjoint parts ({parts}); "
                             "save in 'kohya' format.")
        for name, rows in parts:
            b = up if rows is None else up.narrow(rows[0], rows[1], rows[2])
            out[f"transformer.{name}.lora_A.weight"] = down.clone()
            out[f"transformer.{name}.lora_B.weight"] = b.clone()
    return out


ARCHITECTURES = {"flux1": "flux-1-{variant}/lora", "flux2": "flux-2-{variant}/lora", "chroma": "chroma/lora"}
IMPLEMENTATIONS = {"flux1": "https://github.com/black-forest-labs/flux", "flux2": "https://github.com/black-forest-labs/flux2",
                   "chroma": "https://huggingface.co/lodestones/Chroma"}


def metadata(info, fmt: str, precision: str, trigger_word: str = "") -> dict:
    """kohya's ``ss_*`` and the ``modelspec.*`` keys from a :class:`~.result.RunInfo`; only what the run used. Nothing
    about where or when it ran: a resumed run's file equals the uninterrupted run's, byte for byte."""
    s, (w, h) = info.settings, info.pixel_size
    doubled = 2 if s.lora.moves_base_weight else 1  # PiSSA / OLoRA / LoRA-GA files hold a rank-2r LoRA
    args = {"use_dora": s.use_dora, "targets": s.targets, "blocks": s.blocks, "init": s.init}
    if s.adapter == "lokr":
        args = {"algo": "lokr", "factor": s.lokr_factor, "targets": s.targets, "blocks": s.blocks}
    elif s.adapter == "loha":
        args = {"algo": "loha", "targets": s.targets, "blocks": s.blocks}
    meta = {
        "ss_network_module": "lycoris.kohya" if s.adapter in ("lokr", "loha") else "networks.lora_flux",
        "ss_network_dim": str(s.rank * doubled),
        "ss_network_alpha": str(s.effective_alpha * doubled),
        "ss_network_dropout": str(s.lora_dropout),
        "ss_network_args": json.dumps(args),
        "ss_base_model_version": info.model.family,
        "ss_steps": str(info.steps_done),
        "ss_max_train_steps": str(s.steps),
        "ss_learning_rate": str(s.learning_rate),
        "ss_unet_lr": str(s.learning_rate),
        "ss_optimizer": s.optimizer,
        "ss_lr_scheduler": s.scheduler,
        "ss_lr_warmup_steps": str(s.warmup_steps),
        "ss_batch_size_per_device": str(s.batch_size),
        "ss_gradient_accumulation_steps": str(s.grad_accumulation),
        "ss_max_grad_norm": str(s.max_grad_norm),
        "ss_gradient_checkpointing": str(s.gradient_checkpointing),
        "ss_seed": str(s.seed),
        "ss_num_train_images": str(info.examples),
        "ss_resolution": f"({w}, {h})",
        "ss_guidance_scale": str(s.train_guidance),
        "ss_timestep_sampling": s.sigma_sampling,
        "ss_weighting_scheme": s.loss_weighting,
        "ss_model_prediction_type": "raw",
        "ss_fp8_base": str(info.model.weight_dtype.startswith("float8") or info.base_weights == "fp8"),
        "ss_mixed_precision": info.model.compute_dtype,
        "ss_save_precision": precision,
        "ss_training_comment": "trained with ComfyUI-FluxLoRA",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": ARCHITECTURES[info.model.family].format(variant=info.model.variant),
        "modelspec.implementation": IMPLEMENTATIONS[info.model.family],
        "modelspec.resolution": f"{w}x{h}",
        "fluxlora_format": fmt,
        "fluxlora_settings": json.dumps(s.as_dict(), sort_keys=True),
    }
    if info.preset:
        meta["fluxlora_preset"] = info.preset
    if s.sigma_sampling == "shift":
        meta["ss_discrete_flow_shift"] = str(s.sigma_shift)
    if s.caption_dropout > 0:
        meta["ss_caption_dropout_rate"] = str(s.caption_dropout)
    if info.dataset is not None:
        meta["fluxlora_dataset_hash"] = info.dataset.fingerprint
        meta["fluxlora_crop"] = info.dataset.crop
        if info.dataset.folder:
            meta["ss_dataset_dir"] = info.dataset.folder
    trigger_word = trigger_word or info.trigger
    if trigger_word:
        meta["ss_trigger_word"] = trigger_word
        meta["modelspec.trigger_phrase"] = trigger_word
    if info.final_loss is not None:
        meta["fluxlora_final_loss"] = f"{info.final_loss:.6g}"
    if info.validation:
        meta["fluxlora_validation"] = json.dumps([[int(step), round(float(v), 6)] for step, v in info.validation])
        meta["fluxlora_best_validation_step"] = str(info.best_step)
    if s.preservation != "off":
        meta["fluxlora_preservation"] = json.dumps({"mode": s.preservation, "class_prompt": s.class_prompt,
                                                    "weight": s.prior_loss_weight})
    if info.init_seconds is not None:
        meta["fluxlora_init_seconds"] = f"{info.init_seconds:.3g}"
    if info.skipped_steps:
        meta["fluxlora_skipped_steps"] = str(info.skipped_steps)
    if info.stopped_early:
        meta["fluxlora_stopped_early"] = "true"
    if s.assistant_lora:
        meta["fluxlora_assistant_lora"] = s.assistant_lora
    if info.base_weights != "as loaded":
        meta["fluxlora_base_weights"] = info.base_weights
    if info.slider:   # strength_model is the slider: +1 toward the positive prompt, -1 toward the negative
        meta["fluxlora_slider"] = json.dumps(info.slider, sort_keys=True)
    meta["fluxlora_ema"] = json.dumps({"decay": s.ema_decay}) if info.ema else "false"   # are these the EMA weights?
    return meta


def lora_file_bytes(lora, fmt: str = "kohya", precision: str = "bf16", trigger_word: str = "", title: str = "") -> bytes:
    """The LoRA file's bytes. Refuses weights that are not finite: no file with a NaN or inf tensor is ever written."""
    bad = sorted(k for k, v in lora.items() if not torch.isfinite(v).all())
    if bad:
        raise ValueError(f"The LoRA has {len(bad)} tensors with NaN or inf values (e.g. {bad[0]}); it is not saved. "
                         "Training diverged: lower the learning rate or alpha.")
    if fmt not in FORMATS:
        raise ValueError(f"Unknown LoRA format '{fmt}'; choose one of {FORMATS}.")
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision '{precision}'; choose one of {list(PRECISIONS)}.")
    weights = dict(lora)
    tensors = kohya_state_dict(weights) if fmt == "kohya" else diffusers_state_dict(weights, lora.info.model.unet_config)
    dtype = PRECISIONS[precision]
    tensors = {k: (v if k.endswith(".alpha") else v.to(dtype)).contiguous() for k, v in sorted(tensors.items())}
    meta = metadata(lora.info, fmt, precision, trigger_word)
    if title:
        meta["modelspec.title"] = title
    return _canonical_header(safetensors_bytes(tensors, metadata=meta))


def _canonical_header(data: bytes) -> bytes:
    """safetensors writes its JSON header from a hash map, so key order (and the file's bytes) vary between
    saves. Re-emit the header with sorted keys, so the same LoRA always gives the same file."""
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # keep the tensor data 8-byte aligned, as safetensors does
    return len(header).to_bytes(8, "little") + header + data[8 + n:]


def safe_relative_prefix(prefix: str) -> str:
    """Validates a file-name prefix that must stay inside the loras folder."""
    p = (prefix or "").strip().replace("\\", "/")
    if not p:
        raise ValueError("The file name prefix is empty.")
    if p.startswith("/") or (len(p) > 1 and p[1] == ":") or any(part in ("..", "") for part in p.split("/")[:-1]) \
            or p.split("/")[-1] in ("", ".", ".."):
        raise ValueError(f"The file name prefix '{prefix}' must be a relative name inside the loras folder "
                         "(like 'my_lora' or 'flux/my_lora'); '..', absolute paths and empty parts are not allowed.")
    return p


def write_new_file(folder: str, prefix: str, steps: int, data: bytes) -> str:
    """Writes ``<folder>/<prefix>_<steps>steps_<counter>.safetensors`` with a fresh counter; never overwrites, and
    never leaves a partial file (a full disk fails the save, not the file)."""
    prefix = safe_relative_prefix(prefix)
    root = os.path.realpath(folder)
    base = os.path.realpath(os.path.join(root, prefix))
    if os.path.commonpath([root, base]) != root:
        raise ValueError(f"The file name prefix '{prefix}' leaves the loras folder.")
    stem = os.path.basename(base)
    os.makedirs(os.path.dirname(base), exist_ok=True)
    counter = 1
    while True:
        path = os.path.join(os.path.dirname(base), f"{stem}_{steps:06d}steps_{counter:05d}.safetensors")
        if write_exclusive(path, data):
            return path
        counter += 1


def save_to_loras(lora, prefix: str, fmt: str = "kohya", precision: str = "bf16", trigger_word: str = "") -> tuple:
    """Writes the LoRA into ComfyUI's first loras folder as a new file and makes LoraLoader list it at once.
    Returns (name as LoraLoader lists it, bytes written)."""
    folder = folder_paths.get_folder_paths("loras")[0]
    title = os.path.basename(prefix.strip().replace("\\", "/"))
    data = lora_file_bytes(lora, fmt, precision, trigger_word, title=title)
    try:
        path = write_new_file(folder, prefix, lora.info.steps_done, data)
    except OSError as e:   # a full disk or a read-only folder: say where, and what to do
        raise OSError(e.errno, f"The LoRA ({len(data) / 1e6:.1f} MB) could not be written into {folder} "
                               f"({e.strerror or e}); nothing was saved. Free disk space there (or make the folder "
                               "writable) and queue again: ComfyUI normally reuses the train node's cached result, so "
                               "only the save runs again.") from e
    folder_paths.filename_list_cache.pop("loras", None)
    return os.path.relpath(path, folder).replace(os.sep, "/"), len(data)
