"""End to end through ComfyUI's real executor: stock loaders -> FluxLoRATrain -> SaveLoRA, then
LoraLoaderModelOnly -> KSampler on the saved file."""
import logging

import graphs
import harness
import images


def test_train_save_load_sample(comfy, caplog):
    files = images.write_images(comfy["root"] / "input")
    g = graphs.training_graph(comfy["names"], files, images.CAPTIONS, steps=100, prefix="flux_lora/e2e")
    graphs.add_sampling(g, ["train", 1], tag="trained")  # the LoRA-applied MODEL output feeds a stock sampler
    executor, _ = harness.run(g)
    assert executor.success, harness.error_message(executor)
    outputs = executor.history_result["outputs"]

    losses = outputs["train"]["loss"]
    assert len(losses) == 100
    first, last = sum(losses[:5]) / 5, sum(losses[-10:]) / 10
    assert first >= 5 * last, f"loss fell only from {first:.3f} to {last:.3f}"
    assert outputs["train"]["images"], "the node shows its loss curve"
    assert outputs["trained_out"]["images"]

    saved = outputs["save"]["text"][0] if "text" in outputs["save"] else None
    lora_files = sorted(p.relative_to(comfy["loras"]).as_posix() for p in comfy["loras"].rglob("e2e_*.safetensors"))
    assert lora_files == ["flux_lora/e2e_000100steps_00001.safetensors"], (lora_files, saved)

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        executor2, _ = harness.run(graphs.lora_sampling_graph(comfy["names"], lora_files[0]))
    assert executor2.success, harness.error_message(executor2)
    assert not [r for r in caplog.records if "lora key not loaded" in r.getMessage() or "NOT LOADED" in r.getMessage()]
    assert executor2.history_result["outputs"]["l_out"]["images"]


def test_cancel_keeps_the_lora_trained_so_far(comfy):
    """Interrupt (ComfyUI's Cancel) mid-run: the node stops at the next step and saves the LoRA so far (with the state
    to resume from) in the run's folder, where LoraLoader lists it."""
    import comfy.model_management as mm
    from comfy.utils import set_progress_bar_global_hook
    files = images.write_images(comfy["root"] / "input")
    g = graphs.training_graph(comfy["names"], files, images.CAPTIONS, steps=40, prefix="flux_lora/cancelled", seed=3)
    runs_before = set(comfy["runs"].glob("*"))

    def hook(value, total, preview=None, node_id=None):
        if total == 40 and value == 3:
            mm.interrupt_current_processing(True)
    set_progress_bar_global_hook(hook)
    try:
        executor, _ = harness.run(g)
    finally:
        set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)
    assert any(event == "execution_interrupted" for event, _ in executor.status_messages)
    assert not list(comfy["loras"].rglob("cancelled_*"))  # SaveLoRA never ran
    new_runs = set(comfy["runs"].glob("*")) - runs_before
    assert len(new_runs) == 1, new_runs
    saved = sorted(new_runs.pop().glob("*.safetensors"))  # the run's checkpoint at the last finished step
    assert [p.name.rsplit("_", 1)[-1] for p in saved] == ["step000003.safetensors"], saved
    assert (saved[-1].parent / "training-state.fluxlora").is_file()
    import folder_paths
    assert any(n.endswith(saved[-1].name) for n in folder_paths.get_filename_list("loras"))  # LoraLoader lists it
    from safetensors import safe_open
    with safe_open(str(saved[-1]), "pt") as f:
        assert f.metadata()["ss_steps"] == "3" and f.metadata()["ss_max_train_steps"] == "40"
