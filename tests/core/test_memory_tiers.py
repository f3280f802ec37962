"""Low-VRAM tiers: NF4 (QLoRA) and fp8 training copies, base weights streamed from RAM (ComfyUI's partial loading),
and the memory plan that picks them and refuses a run that cannot fit before any image is encoded."""
import pytest
import torch

import gradient_check
import training_data
from model_snapshot import assert_clean, sample, snapshot

SHORT = dict(steps=3, learning_rate=1e-2, rank=4, seed=0, caption_dropout=0.0)


def _dequantized(copy_dm):
    """{layer.weight: float32 weight} of every quantized Linear in a training copy, as its forward computes with it."""
    import bitsandbytes as bnb
    out = {}
    for name, m in copy_dm.named_modules():
        if isinstance(m, bnb.nn.Linear4bit):
            out[f"{name.replace('.base_layer', '')}.weight"] = bnb.functional.dequantize_4bit(
                m.weight.data, m.weight.quant_state).float()
        elif isinstance(m, torch.nn.Linear) and m.weight.dtype == torch.float8_e4m3fn:
            out[f"{name.replace('.base_layer', '')}.weight"] = m.weight.float()
    return out


@pytest.mark.parametrize("fmt", ["nf4", "fp8"])
def test_lora_gradients_on_a_quantized_copy_match_the_dequantized_reference(comfy, core, fmt, flux_code):
    """One step's LoRA gradients through the NF4 / fp8 copy equal an independent float32 forward that uses the
    copy's dequantized weights (relative error <= 1e-4), also on the stand-in for newer ComfyUI's Flux code (flux_code),
    and the copy shares no tensor with the MODEL."""
    loop, objective = core.loop, core.objective
    model, examples = training_data.model_and_examples(comfy)
    settings = core.settings.TrainSettings(batch_size=2, rank=4, alpha=8.0, caption_dropout=0.0, base_weights=fmt)
    shared = {t.data_ptr() for t in model.model.state_dict().values()}
    with torch.inference_mode(False):
        with loop.training_patcher(model, examples, settings) as (patcher, lora, plan):
            assert plan.base_weights == fmt and patcher.model is not model.model
            dm = patcher.model.diffusion_model
            weights = _dequantized(dm)
            linears = [n for n, m in dm.named_modules() if isinstance(m, torch.nn.Linear) and ".lora_" not in n]
            assert len(weights) == len(linears) > 26  # every Linear of the diffusion model, not only the LoRA targets
            if fmt == "nf4":
                import bitsandbytes as bnb
                q = dm.get_submodule("double_blocks.0.img_attn.qkv.base_layer")
                assert isinstance(q, bnb.nn.Linear4bit) and q.weight.quant_type == "nf4" and q.weight.compress_statistics
            assert not shared & {t.data_ptr() for t in patcher.model.state_dict().values() if t.numel()}
            gradient_check.randomize(lora)
            loss = loop.batch_loss(patcher, examples, [0, 1], settings, torch.Generator().manual_seed(7), "cpu")
            loss.backward()
            ours, leaves = gradient_check.trainer_gradients(lora, 8.0 / 4)
            ref_loss = gradient_check.reference_loss(objective, dm, leaves, examples, weights)
        ref_loss.backward()
    assert torch.allclose(loss.detach(), ref_loss.detach(), rtol=1e-5), (loss.item(), ref_loss.item())
    gradient_check.assert_gradients_match(ours, leaves)


def test_nf4_run_trains_and_leaves_the_shared_model_bit_identical(comfy, core, monkeypatch):
    model, examples = training_data.model_and_examples(comfy)
    _, clip, _ = training_data.load_models(comfy)
    first, before = sample(model, clip), snapshot(model)
    copies = []
    real_copy = core.loop.training_copy

    def copy(*args, **kwargs):
        copies.append(real_copy(*args, **kwargs))
        return copies[-1]
    monkeypatch.setattr(core.loop, "training_copy", copy)
    with torch.inference_mode():
        nf4 = core.loop.train_flux_lora(model, examples, core.settings.TrainSettings(**SHORT, base_weights="nf4"))
        plain = core.loop.train_flux_lora(model, examples, core.settings.TrainSettings(**SHORT))
    assert nf4.info.base_weights == "nf4" and plain.info.base_weights == "as loaded"
    assert nf4.losses != plain.losses  # trained against other (quantized) weights ...
    # ... that are close to the MODEL's: NF4 rounds each weight with ~9% relative RMS error (bitsandbytes 0.50.2,
    # blocksize 64), which moves this tiny random model's first loss by 10% (21.14 -> 23.30, measured 2026-12-07)
    assert abs(nf4.losses[0] - plain.losses[0]) < 0.15 * plain.losses[0]
    assert_clean(before, snapshot(model))
    assert torch.equal(sample(model, clip), first)
    # the NF4 copy was dropped from ComfyUI's loaded models (other tests' MODELs may still be loaded: not counted)
    assert len(copies) == 1 and copies[0].model is not model.model
    assert not any(m.model is copies[0] for m in core.loop.mm.current_loaded_models)


@pytest.mark.parametrize("base", ["as loaded", "fp8"])
def test_streaming_base_weights_from_ram_gives_bit_identical_results(comfy, core, monkeypatch, base):
    """gpu_weights_gb below the model's size: ComfyUI's partial loading keeps part of the weights offloaded (cast on the
    fly) and the run is bit-identical to the fully loaded one; the shared MODEL is left as it was."""
    model, examples = training_data.model_and_examples(comfy)
    _, clip, _ = training_data.load_models(comfy)
    first, before = sample(model, clip), snapshot(model)
    loaded = []
    real_load = core.loop.load_for_training

    def load(patcher, plan):
        real_load(patcher, plan)
        loaded.append((patcher.loaded_size(), plan.weight_bytes))
    monkeypatch.setattr(core.loop, "load_for_training", load)
    size = sum(t.numel() * t.element_size() for t in model.model.diffusion_model.state_dict().values())
    with torch.inference_mode():
        full = core.loop.train_flux_lora(model, examples, core.settings.TrainSettings(**SHORT, base_weights=base))
        part = core.loop.train_flux_lora(model, examples, core.settings.TrainSettings(
            **SHORT, base_weights=base, gpu_weights_gb=size / 8 / 2 ** 30))
    (full_loaded, weights), (part_loaded, _) = loaded[0], loaded[-1]
    assert full_loaded >= weights * 0.95 and part_loaded <= size / 8, loaded
    assert part.losses == full.losses
    for k in full:
        assert torch.equal(part[k], full[k]), k
    assert_clean(before, snapshot(model))
    assert torch.equal(sample(model, clip), first)


def test_a_run_that_cannot_fit_is_refused_before_encoding(comfy, core, monkeypatch):
    """A simulated 8 GB card with all but 1 MiB taken: the plan refuses with what to change, and no image was encoded."""
    model, clip, vae = training_data.load_models(comfy)
    monkeypatch.setattr(core.memory_plan, "RESERVED_BYTES", 8 * 2 ** 30 - 2 ** 20)
    monkeypatch.setattr(core.examples.Encoder, "examples", lambda *a, **k: pytest.fail("encoded before the check"))
    settings = core.settings.TrainSettings(**SHORT, vram="8 GB")
    with pytest.raises(core.memory_plan.NotEnoughMemory, match="lower the dataset resolution"):
        with torch.inference_mode():
            core.run.train_run(model, clip, vae, training_data.dataset(comfy), settings)


def test_quantized_copies_refuse_adapters_that_need_dense_weights(core):
    with pytest.raises(ValueError, match="base_weights 'nf4'.*DoRA"):
        core.settings.TrainSettings(base_weights="nf4", use_dora=True)
    with pytest.raises(ValueError, match="init 'pissa'"):
        core.settings.TrainSettings(base_weights="fp8", init="pissa")


def test_gguf_models_are_refused_with_what_to_load(comfy, core, monkeypatch):
    model, _ = training_data.model_and_examples(comfy)
    layer = model.model.diffusion_model.get_submodule("double_blocks.0.img_attn.qkv")
    gguf_linear = type("Linear", (type(layer),), {"__module__": "custom_nodes.ComfyUI-GGUF.ops"})
    monkeypatch.setattr(layer, "__class__", gguf_linear)
    with pytest.raises(core.flux_model.NotAFluxModel, match="GGUF.*nf4"):
        core.flux_model.flux_info(model)


@pytest.fixture(scope="module")
def flux_dev_facts(core):
    """FLUX.1-dev's real architecture built on the meta device (no memory), as a bf16 load would store it."""
    import full_size
    return full_size.flux_dev_facts(core.memory_plan)


def _plan(core, facts, tier, tokens=4096, base="auto", gpu_gb=0.0, ram_gib=64, checkpointing=True):
    return core.memory_plan.make_plan(facts, tier=tier, base_weights=base, gpu_weights_gb=gpu_gb, image_tokens=tokens,
                                      batch=1, checkpointing=checkpointing, trainable_params=18_677_760,
                                      available=80 * 2 ** 30, free_ram=ram_gib * 2 ** 30, on_gpu=True)


@pytest.mark.parametrize("tier,expected,streams", [("24 GB", "fp8", False), ("16 GB", "fp8", False),
                                                   ("12 GB", "nf4", False), ("8 GB", "fp8", True)])
def test_vram_tiers_pick_formats_that_fit_the_card_they_name(core, flux_dev_facts, tier, expected, streams):
    """FLUX.1-dev loaded in bf16, 1024 px (4096 image tokens), rank 16: each tier picks a format whose estimated peak
    stays under the tier's size (simulated on an 80 GB GPU)."""
    plan = _plan(core, flux_dev_facts, tier)
    assert (plan.base_weights, plan.offloaded) == (expected, streams), plan.describe()
    assert plan.peak + core.memory_plan.RESERVED_BYTES <= core.memory_plan.tier_bytes(tier)
    assert flux_dev_facts.linear_params > 11.8e9 and flux_dev_facts.loaded_format == "bf16"


def test_vram_plan_explains_what_to_change(core, flux_dev_facts):
    auto = _plan(core, flux_dev_facts, "auto")
    assert auto.base_weights == "as loaded" and not auto.offloaded   # 80 GB: bf16 as loaded
    with pytest.raises(core.memory_plan.NotEnoughMemory, match="lower the dataset resolution"):
        _plan(core, flux_dev_facts, "8 GB", tokens=128 * 128)       # 2048 px on 8 GB: activations alone do not fit
    with pytest.raises(core.memory_plan.NotEnoughMemory, match="base_weights 'fp8'"):
        _plan(core, flux_dev_facts, "8 GB", base="nf4")              # NF4 cannot stream
    with pytest.raises(core.memory_plan.NotEnoughMemory, match="gpu_weights_gb to"):
        _plan(core, flux_dev_facts, "12 GB", base="as loaded", gpu_gb=20)
    with pytest.raises(core.memory_plan.NotEnoughMemory, match="system RAM"):
        _plan(core, flux_dev_facts, "8 GB", base="fp8", ram_gib=4)   # an fp8 copy to stream needs RAM for itself
    low_ram = _plan(core, flux_dev_facts, "8 GB", ram_gib=4)         # auto: streams the weights as loaded instead
    assert low_ram.base_weights == "as loaded" and low_ram.offloaded
    streamed = _plan(core, flux_dev_facts, "16 GB", base="as loaded")
    assert streamed.offloaded and "streamed from RAM" in streamed.describe()


def test_resuming_against_other_base_weights_is_refused(core):
    """'auto' may pick another format on another day (other free VRAM): a resumed run must train against the same."""
    settings = core.settings.TrainSettings(steps=10).as_dict()
    identity = {"dataset": "d", "model": "m", "settings": settings, "base_weights": "as loaded"}
    saved = {"run": "r", "step": 5, "identity": dict(identity, base_weights="nf4")}
    with pytest.raises(ValueError, match="trained against base weights 'nf4'.*set base_weights to 'nf4'"):
        core.checkpoint.check_resumable(saved, identity, settings, core.settings.resumable_names())
    core.checkpoint.check_resumable(dict(saved, identity=identity), identity,
                                    dict(settings, vram="12 GB", gpu_weights_gb=3.0), core.settings.resumable_names())
