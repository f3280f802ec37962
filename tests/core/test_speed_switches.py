"""Speed switches: compile_blocks (torch.compile of the block forward, one graph shared by all blocks) changes speed, not
results; fp8_matmul (fp8 base weights multiplied in fp8) trains close to the fp8 copy that casts its weights, its
backward is exact, and it is refused where it cannot run, before any encoding."""
import pytest
import torch

import training_data

SHORT = dict(steps=3, learning_rate=1e-2, rank=4, seed=0, caption_dropout=0.0)


def _train(comfy, core, **settings):
    model, examples = training_data.model_and_examples(comfy)
    with torch.inference_mode():
        return core.loop.train_flux_lora(model, examples, core.settings.TrainSettings(**{**SHORT, **settings}))


def test_compiled_blocks_train_the_same_lora(comfy, core, monkeypatch):
    """All blocks of a type run one compiled graph (traced once, no graph breaks); losses and LoRA weights equal the
    eager run's up to float rounding (inductor reorders float sums)."""
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    traced = []
    original = core.blocks.compiled
    monkeypatch.setattr(core.blocks, "compiled", lambda fn: traced.append(fn.__name__) or original(fn))
    compiled = _train(comfy, core, compile_blocks=True)
    eager = _train(comfy, core)
    dm = training_data.load_models(comfy)[0].model.diffusion_model
    blocks = len(dm.double_blocks) + len(dm.single_blocks)
    assert len(traced) == 3 * blocks  # every block call of the 3 steps went through the compiled forward
    assert set(traced) == {"double_block_forward", "single_block_forward"}
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert 2 <= counters["stats"]["unique_graphs"] < blocks, dict(counters["stats"])  # per block type, not per block
    torch.testing.assert_close(torch.tensor(compiled.losses), torch.tensor(eager.losses), rtol=1e-5, atol=1e-6)
    for k in eager:
        torch.testing.assert_close(compiled[k], eager[k], rtol=1e-3, atol=1e-5)


def test_compile_without_triton_is_refused_for_nvidia_gpus(core, monkeypatch):
    import torch.utils._triton as triton_check
    monkeypatch.setattr(triton_check, "has_triton", lambda: False)
    assert "needs Triton" in core.blocks.compile_problem("cuda")
    monkeypatch.setattr(triton_check, "has_triton", lambda: True)
    assert core.blocks.compile_problem("cuda") == "" and core.blocks.compile_problem("cpu") == ""


def test_fp8_linear_forward_rounds_the_input_and_backward_is_exact(core):
    """Forward: the fp8 product of the input rounded to fp8 with one per-tensor scale (relative error of a few %);
    backward: the input's gradient with the weight exactly as the cast path uses it."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 40, 64, generator=gen) * 3).requires_grad_(True)
    weight = (torch.randn(48, 64, generator=gen) * 0.05).to(torch.float8_e4m3fn)
    bias = torch.randn(48, generator=gen)
    out = core.fp8_matmul.fp8_linear(x, weight, bias)
    exact = x.detach() @ weight.float().t() + bias
    assert out.shape == exact.shape and out.dtype == x.dtype
    error = (out.detach() - exact).abs().max() / exact.abs().max()
    assert 0 < error < 0.05, error
    grad = torch.randn(out.shape, generator=gen)
    out.backward(grad)
    torch.testing.assert_close(x.grad, grad @ weight.float(), rtol=1e-6, atol=1e-6)


def test_the_cpu_fp8_product_equals_torchs_scaled_mm(core):
    """The CPU stand-in for torch._scaled_mm (whose CPU kernel is a slow reference loop) gives its result."""
    gen = torch.Generator().manual_seed(1)
    quantized = (torch.randn(80, 64, generator=gen) * 100).to(torch.float8_e4m3fn)
    weight = (torch.randn(48, 64, generator=gen) * 0.05).to(torch.float8_e4m3fn)
    scale, bias = torch.tensor(0.037), torch.randn(48, generator=gen)
    for dtype in (torch.float32, torch.bfloat16):
        ours = core.fp8_matmul.cpu_scaled_mm(quantized, weight, scale, bias.to(dtype), dtype)
        kernel = torch._scaled_mm(quantized, weight.t(), scale_a=scale, scale_b=torch.ones(()), bias=bias.to(dtype),
                                  out_dtype=dtype)
        torch.testing.assert_close(ours, kernel, rtol=1e-5 if dtype == torch.float32 else 1e-2, atol=1e-5)


def test_fp8_matmul_trains_close_to_the_casting_fp8_copy(comfy, core, monkeypatch):
    """With fp8_matmul every fp8 Linear of the copy multiplies in fp8 (base_weights 'auto' picks the fp8 copy for it);
    the run differs from the copy that casts its weights by the input rounding only."""
    used = set()
    original = core.fp8_matmul.fp8_linear
    monkeypatch.setattr(core.fp8_matmul, "fp8_linear", lambda x, w, b=None: used.add(w.data_ptr()) or original(x, w, b))
    fast = _train(comfy, core, fp8_matmul=True)
    fp8 = _train(comfy, core, base_weights="fp8")
    assert fast.info.base_weights == "fp8" and fp8.info.base_weights == "fp8"
    dm = training_data.load_models(comfy)[0].model.diffusion_model
    linears = [n for n, m in dm.named_modules() if isinstance(m, torch.nn.Linear)
               and not core.base_weights.kept_dense(f"diffusion_model.{n}")]
    assert len(used) == len(linears)  # each fp8 layer (blocks, embedders, final layer) used the fp8 matmul
    assert fast.losses != fp8.losses
    for a, b in zip(fast.losses, fp8.losses):   # (3.0-3.1% apart at step 2 on a 2-core Xeon VM, torch 2.13)
        assert abs(a - b) < 0.05 * b, (fast.losses, fp8.losses)
    flat = lambda lora: torch.cat([lora[k].flatten().float() for k in sorted(fp8)])
    cosine = torch.nn.functional.cosine_similarity(flat(fast), flat(fp8), dim=0)
    assert cosine > 0.99, cosine  # the same updates up to the rounding (Adam's first steps amplify it in B = 0 layers)


def test_fp8_matmul_is_refused_where_it_cannot_run(comfy, core, monkeypatch):
    with pytest.raises(ValueError, match="fp8_matmul.*base_weights to 'fp8' or 'auto'"):
        core.settings.TrainSettings(fp8_matmul=True, base_weights="nf4")
    with pytest.raises(ValueError, match="fp8_matmul.*DoRA"):
        core.settings.TrainSettings(fp8_matmul=True, use_dora=True)
    # a GPU without fp8 tensor cores: refused by the plan, which runs before any image is encoded
    monkeypatch.setattr(core.fp8_matmul, "supported", lambda device: False)
    monkeypatch.setattr(core.examples.Encoder, "examples", lambda *a, **k: pytest.fail("encoded before the check"))
    model, clip, vae = training_data.load_models(comfy)
    with pytest.raises(ValueError, match="fp8_matmul needs a GPU with fp8 tensor cores"):
        with torch.inference_mode():
            core.run.train_run(model, clip, vae, training_data.dataset(comfy),
                               core.settings.TrainSettings(**SHORT, fp8_matmul=True))


def test_fp8_support_follows_comfyui(core, monkeypatch):
    mm = core.loop.mm   # comfy.model_management
    monkeypatch.setattr(mm, "supports_fp8_compute", lambda device=None: False)
    assert not core.fp8_matmul.supported(torch.device("cuda"))
    monkeypatch.setattr(mm, "supports_fp8_compute", lambda device=None: True)
    assert core.fp8_matmul.supported(torch.device("cuda"))
    assert core.fp8_matmul.supported("cpu")
