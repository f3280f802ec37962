"""What the pack adapts to between ComfyUI versions (found by feature, not version): the in_training flag, the Flux
code of newer ComfyUI (through the stand-in in tests/support/newer_flux.py), per-block attention patches and preferred
attention, the datasets folder. Runs on every ComfyUI the suite runs against (v0.8.0 and v0.33.0 in CI)."""
import contextlib

import pytest
import torch

import gradient_check
import newer_flux
import training_data
from model_snapshot import sample
from recording import RecordingHooks


def test_training_forward_and_backward_run_in_comfy_training_mode(comfy, core, monkeypatch):
    """Where ComfyUI has comfy.model_management.in_training (v0.14+), it is set while the model trains and cleared for
    checkpoint sampling and afterwards; where it does not exist, the pack does not create it."""
    import comfy.model_management as mm
    loop = core.loop
    model, examples = training_data.model_and_examples(comfy)
    had_flag = hasattr(mm, "in_training")
    during_forward = []
    original = loop._batch
    monkeypatch.setattr(loop, "_batch",
                        lambda *a, **k: during_forward.append(getattr(mm, "in_training", None)) or original(*a, **k))
    hooks = RecordingHooks(checkpoint_every=1, on_checkpoint=lambda step, weights: getattr(mm, "in_training", None))
    with torch.inference_mode():
        loop.train_flux_lora(model, examples, core.settings.TrainSettings(steps=2, caption_dropout=0.0), hooks)
    during_checkpoint = [flag for _, flag in hooks.checkpoints]
    assert len(during_forward) == 2 and len(during_checkpoint) == 2
    if had_flag:
        assert during_forward == [True, True] and during_checkpoint == [False, False] and mm.in_training is False
    else:
        assert during_forward == [None, None] and not hasattr(mm, "in_training")


def test_flag_is_restored_when_training_fails(core):
    import comfy.model_management as mm
    with pytest.raises(RuntimeError, match="boom"):
        with core.comfy_features.comfy_training_mode():
            raise RuntimeError("boom")
    assert getattr(mm, "in_training", False) is False


def test_newer_flux_stand_in_has_no_backward_outside_training_mode(comfy, core, monkeypatch):
    """What makes the tests on the stand-in (flux_code) test something: on it, ComfyUI's Flux final layer (its
    modulation norm) and RoPE compute the same values as before, but outside ComfyUI's training mode backward through
    them fails, as in newer ComfyUI; inside it the final layer (and, from ComfyUI v0.14 on, RoPE) is differentiable."""
    import comfy.ldm.flux.layers as flux_layers
    import comfy.ldm.flux.math as flux_math
    import comfy.model_management as mm
    import comfy.ops
    torch.manual_seed(0)
    final = flux_layers.LastLayer(16, 1, 4, operations=comfy.ops.manual_cast)
    for p in final.parameters():
        torch.nn.init.normal_(p)
    x, vec, q = torch.randn(1, 6, 16), torch.randn(1, 16), torch.randn(1, 2, 6, 8)
    pe = flux_math.rope(torch.arange(6.0)[None], 8, 10000).unsqueeze(1)
    rope_in_training_mode = hasattr(mm, "in_training")   # v0.8.0's RoPE is comfy-kitchen's kernel in any mode

    def forward(training_mode):
        leaves = [x.clone().requires_grad_(), q.clone().requires_grad_()]
        with core.comfy_features.comfy_training_mode() if training_mode else contextlib.nullcontext():
            rotated = flux_math.apply_rope(leaves[1], leaves[1], pe)
            return [final(leaves[0], vec).sum(), rotated[0].sum() + rotated[1].sum()], leaves
    with torch.inference_mode(False):
        before = {mode: forward(mode)[0] for mode in (False, True)}
        newer_flux.install(monkeypatch)
        outs, leaves = forward(False)
        assert all(torch.equal(a, b) for a, b in zip(outs, before[False]))
        for out, leaf in zip(outs, leaves):
            with pytest.raises(RuntimeError, match="no autograd formula"):
                torch.autograd.grad(out, leaf)
        outs, leaves = forward(True)
        assert all(torch.equal(a, b) for a, b in zip(outs, before[True]))
        assert torch.autograd.grad(outs[0], leaves[0])[0].abs().max() > 0
        if rope_in_training_mode:
            assert torch.autograd.grad(outs[1], leaves[1])[0].abs().max() > 0


def test_training_on_the_newer_flux_stand_in_trains_the_same_lora(comfy, core):
    """A run with LoRA-GA's gradient initialisation, validation and differential-output preservation gives bit for bit
    the same LoRA, losses and validation losses on the stand-in for the newer Flux code as on the installed code."""
    model, examples = training_data.model_and_examples(comfy)
    _, clip, _ = training_data.load_models(comfy)
    text = core.examples.encode_text(clip, "a thing")
    settings = core.settings.TrainSettings(steps=2, rank=4, learning_rate=1e-2, init="lora_ga", caption_dropout=0.0,
                                           validation_every=1)

    def train():
        with torch.inference_mode():
            return core.loop.train_flux_lora(
                model, examples, settings, validation=core.validation.ValidationSet.build(examples[:2], seed=1),
                preservation=core.preservation.Preservation("differential output", 0.5, class_text=text))
    plain = train()
    with pytest.MonkeyPatch.context() as mp:
        newer_flux.install(mp)
        newer = train()
    assert len(plain.info.validation) == 2 and plain.info.init_seconds > 0
    assert newer.losses == plain.losses and newer.info.validation == plain.info.validation
    assert newer.keys() == plain.keys() and all(torch.equal(newer[k], plain[k]) for k in plain.keys())


def test_preservation_loss_and_lora_ga_estimate_need_no_flag_from_their_caller(comfy, core, monkeypatch):
    """On the newer-Flux stand-in, called outside ComfyUI's training mode: the differential-output loss backpropagates
    and LoRA-GA's gradient estimate (batch_loss + backward per batch) runs, with bit for bit the results a caller in
    training mode gets."""
    loop = core.loop
    model, examples = training_data.model_and_examples(comfy)
    _, clip, _ = training_data.load_models(comfy)
    text = core.examples.encode_text(clip, "a thing")
    settings = core.settings.TrainSettings(batch_size=2, rank=4, caption_dropout=0.0)
    x = torch.randn(2, *examples[0].latent.shape, generator=torch.Generator().manual_seed(0))
    s = torch.tensor([0.4, 0.6])
    newer_flux.install(monkeypatch)
    results = []
    with torch.inference_mode(False), loop.training_patcher(model, examples, settings) as (patcher, lora, _):
        initial = [p.detach().clone() for p in lora.parameters()]

        def run_batches():
            for seed in range(2):
                generator = torch.Generator().manual_seed(seed)
                loop.batch_loss(patcher, examples, [0, 1], settings, generator, "cpu").backward()
        for caller_flag in (False, True):
            with torch.no_grad():
                for p, start in zip(lora.parameters(), initial):
                    p.copy_(start)
            with core.comfy_features.comfy_training_mode() if caller_flag else contextlib.nullcontext():
                estimate = core.lora_init.estimate_weight_gradients(lora.layers, run_batches)
                gradient_check.randomize(lora)
                for p in lora.parameters():
                    p.grad = None
                core.preservation.differential_output_loss(patcher, lora, x, s, text, 1.0).backward()
            results.append((estimate, [p.grad.clone() for p in lora.parameters()]))
            for p in lora.parameters():
                p.grad = None
    (estimate, grads), (flagged_estimate, flagged_grads) = results
    assert estimate.keys() == flagged_estimate.keys() and all(g.abs().max() > 0 for g in grads)
    assert all(torch.equal(estimate[n], flagged_estimate[n]) for n in estimate)
    assert all(torch.equal(a, b) for a, b in zip(grads, flagged_grads))


def test_preferred_attention_of_newer_blocks_is_left_to_sampling(comfy, core, monkeypatch):
    """Newer ComfyUI gives each Flux block a ComfyAttention that a model file can point at comfy-kitchen's int8
    attention (approximate, no backward). Training uses ComfyUI's normal attention, and the first-step block check runs
    ComfyUI's own block with that same attention (comparing like with like, so no false 'no longer matches'): the LoRA
    is the one trained without it, and sampling afterwards uses the model's int8 attention again."""
    model, examples = training_data.model_and_examples(comfy)
    _, clip, _ = training_data.load_models(comfy)
    settings = core.settings.TrainSettings(steps=2, rank=4, learning_rate=1e-2, caption_dropout=0.0)
    with torch.inference_mode():
        plain = core.loop.train_flux_lora(model, examples, settings)
    exact = sample(model, clip)
    calls = []
    int8_like = newer_flux.int8_like_attention(calls)
    newer_flux.install_preferred_attention(monkeypatch, model.model.diffusion_model, int8_like)
    with torch.inference_mode():
        trained = core.loop.train_flux_lora(model, examples, settings)
    assert calls == []   # neither the training forward nor the block check ran it
    assert trained.losses == plain.losses and all(torch.equal(trained[k], plain[k]) for k in plain.keys())
    assert not torch.equal(sample(model, clip), exact)   # sampling does use the int8-like attention ...
    assert calls and not any(calls)   # ... through the blocks' preferred attention, without gradients


def attention_probe(q, k, v, pe=None, attn_mask=None, extra_options=None):
    return {"q": q}


def test_model_with_attention_patches_is_refused_by_name(comfy, core):
    """Per-block attention hooks (attn1_patch / attn1_output_patch, run by Flux blocks since ComfyUI v0.17) are not
    part of the training forward: such a MODEL is refused before training, naming the patch, and left unchanged."""
    model, examples = training_data.model_and_examples(comfy)
    patched = model.clone()
    patched.set_model_attn1_patch(attention_probe)
    before = patched.model_options["transformer_options"]["patches"]["attn1_patch"][:]
    with pytest.raises(ValueError, match=r"attention patches.*attn1_patch from test_comfy_versions\.attention_probe"):
        with torch.inference_mode():
            core.loop.train_flux_lora(patched, examples, core.settings.TrainSettings(steps=1, caption_dropout=0.0))
    assert patched.model_options["transformer_options"]["patches"]["attn1_patch"] == before
    assert not model.model_options.get("transformer_options", {}).get("patches")


def test_dataset_loader_finds_folders_in_the_datasets_directory(comfy):
    """ComfyUI >= 0.30 has a 'datasets' folder: Dataset Loader takes folder names from it too (after input/); without
    one, the same name is an error that lists the folders that do exist."""
    import folder_paths
    import harness
    import photo_folder
    has_datasets = "datasets" in folder_paths.folder_names_and_paths
    if has_datasets:
        photo_folder.write_photo_folder(comfy["root"] / "datasets" / "my_subject")
    prompt = {"data": {"class_type": "FluxLoRA_DatasetLoader",
                       "inputs": {"folder": "my_subject", "resolution": "512", "crop": "center square 1:1",
                                  "caption_extension": ".txt", "small_images": "skip"}}}
    executor, _ = harness.run(prompt)
    if has_datasets:
        assert executor.success, harness.error_message(executor)
        report = executor.history_result["outputs"]["data"]["text"][0]
        assert report.startswith("4 images from ") and "datasets" in report.splitlines()[0]
    else:
        assert not executor.success
        assert "'my_subject' does not exist" in harness.error_message(executor)
