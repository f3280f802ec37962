"""FLUX.1-schnell trains with an assistant LoRA (ai-toolkit's training adapter method): the adapter is applied while
training only — not saved into the LoRA, not on the shared MODEL — the file says flux-1-schnell, and checkpoint
samples keep schnell's own sampling."""
import torch
from safetensors import safe_open

import training_data
from model_snapshot import assert_clean, snapshot


def test_schnell_trains_with_an_assistant_lora_that_stays_out_of_the_result(comfy, core, tmp_path, monkeypatch):
    import comfy.model_sampling as model_sampling   # (a module alias: 'comfy' is the fixture here)
    import nodes
    schnell = nodes.UNETLoader().load_unet(comfy["names"]["schnell"], "default")[0]
    _, clip, vae = training_data.load_models(comfy)
    name = training_data.assistant_lora(comfy)
    before = snapshot(schnell)
    sampling_types = []
    real_render = core.run.render
    monkeypatch.setattr(core.run, "render", lambda model, *a, **k: sampling_types.append(
        type(model.get_model_object("model_sampling"))) or real_render(model, *a, **k))
    sample_settings = core.sampling.SampleSettings(("a thing",), width=64, height=64, steps=2, every_n_steps=2)
    with torch.inference_mode():
        out = core.run.train_run(schnell, clip, vae, training_data.dataset(comfy), core.settings.TrainSettings(
            steps=2, learning_rate=1e-2, rank=4, caption_dropout=0.0, assistant_lora=name),
            sample_settings=sample_settings, cache_root=str(tmp_path / "cache"))
    core.loop.mm.unload_all_models()   # checkpoint sampling leaves a LoRA-patched clone loaded (restored on unload)
    assert_clean(before, snapshot(schnell))        # the adapter was applied to a clone only
    assert sampling_types and all(not issubclass(t, model_sampling.ModelSamplingFlux) for t in sampling_types)
    ups = [v for k, v in out.lora.items() if k.endswith("lora_up.weight")]
    assert len(ups) == 26 and all(v.shape[1] == 4 for v in ups)   # only the trained rank-4 LoRA, not the rank-2 adapter
    path = tmp_path / "schnell.safetensors"
    core.files.write_replacing(str(path), core.export.lora_file_bytes(out.lora, "kohya", "bf16"))
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["modelspec.architecture"] == "flux-1-schnell/lora" and meta["fluxlora_assistant_lora"] == name
    # the adapter shaped the training: the same run on dev with and without it differs
    dev = training_data.load_models(comfy)[0]
    runs = []
    for assistant in ("", name):
        with torch.inference_mode():
            runs.append(core.run.train_run(dev, clip, vae, training_data.dataset(comfy), core.settings.TrainSettings(
                steps=2, learning_rate=1e-2, rank=4, caption_dropout=0.0, assistant_lora=assistant)).lora.losses)
    assert runs[0] != runs[1]
