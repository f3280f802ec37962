"""Independent, purely functional forwards of FLUX.2 and Chroma (everything out of place, float32), reading the weights
of ComfyUI's model by name, in the style of reference_flux.py (LoRA layers enter as merged weights W + s * B @ A).

FLUX.2: shared modulation layers (no per-block modulation), SwiGLU MLPs, no biases, 4-axis RoPE with the text's
positions on the last axis, 128-channel latents at patch size 1, text features left-padded to 512 tokens.
Chroma: FLUX.1's block math with every block's modulation sliced from the approximator's output (single blocks first,
then double img, double txt, final), T5 context only, guidance input 0."""
import torch
import torch.nn.functional as F
from einops import rearrange

from reference_flux import Reference, rope, timestep_embedding


def swiglu(x):
    a, b = x.chunk(2, dim=-1)
    return F.silu(a) * b


class _Blocks(Reference):
    """The double/single block math with modulations given from outside and a choice of MLP activation."""

    def double(self, d, img, txt, im, tm, pe, act):
        heads, hidden = self.params.num_heads, self.params.hidden_size
        ln = lambda t: F.layer_norm(t, (hidden,), eps=1e-6)
        iq, ik, iv = self.qkv(f"{d}.img_attn", (1 + im[1]) * ln(img) + im[0], f"{d}.img_attn.norm", heads)
        tq, tk, tv = self.qkv(f"{d}.txt_attn", (1 + tm[1]) * ln(txt) + tm[0], f"{d}.txt_attn.norm", heads)
        attn = self.attention(torch.cat([tq, iq], 2), torch.cat([tk, ik], 2), torch.cat([tv, iv], 2), pe)
        ta, ia = attn[:, :txt.shape[1]], attn[:, txt.shape[1]:]
        img = img + im[2] * self.lin(f"{d}.img_attn.proj", ia)
        img = img + im[5] * self.lin(f"{d}.img_mlp.2", act(self.lin(f"{d}.img_mlp.0", (1 + im[4]) * ln(img) + im[3])))
        txt = txt + tm[2] * self.lin(f"{d}.txt_attn.proj", ta)
        txt = txt + tm[5] * self.lin(f"{d}.txt_mlp.2", act(self.lin(f"{d}.txt_mlp.0", (1 + tm[4]) * ln(txt) + tm[3])))
        return img, txt

    def single(self, s, x, mod, pe, act, mlp_width):
        heads, hidden = self.params.num_heads, self.params.hidden_size
        shift, scale, gate = mod
        ln = F.layer_norm(x, (hidden,), eps=1e-6)
        qkv, mlp = torch.split(self.lin(f"{s}.linear1", (1 + scale) * ln + shift), [3 * hidden, mlp_width], dim=-1)
        q, k, v = rearrange(qkv, "B L (K H D) -> K B H L D", K=3, H=heads)
        q = F.rms_norm(q, q.shape[-1:], self.p[f"{s}.norm.query_norm.scale"], 1e-6)
        k = F.rms_norm(k, k.shape[-1:], self.p[f"{s}.norm.key_norm.scale"], 1e-6)
        return x + gate * self.lin(f"{s}.linear2", torch.cat([self.attention(q, k, v, pe), act(mlp)], 2))


class Flux2Reference(_Blocks):
    def __call__(self, x, sigmas, context, guidance):
        P, hidden = self.params, self.params.hidden_size
        b, c, h, w = x.shape
        if context.shape[1] < 512:
            context = F.pad(context, (0, 0, 512 - context.shape[1], 0))
        img = rearrange(x, "b c h w -> b (h w) c")
        img_ids = torch.zeros(h, w, 4)
        img_ids[..., 1] += torch.arange(h)[:, None]
        img_ids[..., 2] += torch.arange(w)[None, :]
        txt_ids = torch.zeros(context.shape[1], 4)
        txt_ids[:, 3] = torch.arange(context.shape[1])
        ids = torch.cat([txt_ids, img_ids.reshape(-1, 4)])[None].repeat(b, 1, 1)
        pe = torch.cat([rope(ids[..., i], P.axes_dim[i], P.theta) for i in range(4)], dim=-3).unsqueeze(1)
        img = self.lin("img_in", img)
        vec = self.mlp_embed("time_in", timestep_embedding(sigmas))
        if P.guidance_embed:
            vec = vec + self.mlp_embed("guidance_in", timestep_embedding(guidance))
        txt = self.lin("txt_in", context)
        im = self.modulation("double_stream_modulation_img.lin", vec, 6)
        tm = self.modulation("double_stream_modulation_txt.lin", vec, 6)
        for i in range(P.depth):
            img, txt = self.double(f"double_blocks.{i}", img, txt, im, tm, pe, swiglu)
        mod = self.modulation("single_stream_modulation.lin", vec, 3)
        x_ = torch.cat([txt, img], 1)
        for i in range(P.depth_single_blocks):
            x_ = self.single(f"single_blocks.{i}", x_, mod, pe, swiglu, 2 * int(hidden * P.mlp_ratio))
        img = x_[:, txt.shape[1]:]
        shift, scale = self.lin("final_layer.adaLN_modulation.1", F.silu(vec))[:, None, :].chunk(2, dim=-1)
        img = self.lin("final_layer.linear", (1 + scale) * F.layer_norm(img, (hidden,), eps=1e-6) + shift)
        return rearrange(img, "b (h w) c -> b c h w", h=h, w=w)


class ChromaReference(_Blocks):
    MOD_INDEX_LENGTH = 344   # 3 x 38 single + 2 x 6 x 19 double + 2 final rows at Chroma's full size

    def __init__(self, diffusion_model, lora, weights=None):
        super().__init__(diffusion_model, lora, weights)
        # ComfyUI's RMSNorm: eps 1e-6 up to v0.13 (weight '.scale'), torch's default since v0.14 ('.weight', eps None)
        self.norm_eps = [getattr(n, "eps", 1e-6) for n in diffusion_model.distilled_guidance_layer.norms]

    def approximator(self, sigmas):
        b = sigmas.shape[0]
        t = torch.cat([timestep_embedding(sigmas, 16), timestep_embedding(torch.zeros(b), 16)], dim=1)
        index = timestep_embedding(torch.arange(self.MOD_INDEX_LENGTH).float(), 32)
        x = torch.cat([t[:, None].repeat(1, self.MOD_INDEX_LENGTH, 1), index[None].repeat(b, 1, 1)], dim=-1)
        x = self.lin("distilled_guidance_layer.in_proj", x)
        for i, eps in enumerate(self.norm_eps):
            name = f"distilled_guidance_layer.norms.{i}"
            n = F.rms_norm(x, x.shape[-1:], self.p.get(f"{name}.weight", self.p.get(f"{name}.scale")), eps)
            x = x + self.mlp_embed(f"distilled_guidance_layer.layers.{i}", n)
        return self.lin("distilled_guidance_layer.out_proj", x)

    def __call__(self, x, sigmas, context):
        P = self.params
        b, c, h, w = x.shape
        img, ids = self.tokens(x)
        ids = torch.cat([torch.zeros(b, context.shape[1], 3), ids], dim=1)
        pe = torch.cat([rope(ids[..., i], P.axes_dim[i], P.theta) for i in range(3)], dim=-3).unsqueeze(1)
        mods = self.approximator(sigmas)
        rows = lambda start, n: [mods[:, start + j:start + j + 1] for j in range(n)]
        singles, doubles = P.depth_single_blocks, P.depth
        img = self.lin("img_in", img)
        txt = self.lin("txt_in", context)
        for i in range(doubles):
            im = rows(3 * singles + 6 * i, 6)
            tm = rows(3 * singles + 6 * doubles + 6 * i, 6)
            img, txt = self.double(f"double_blocks.{i}", img, txt, im, tm, pe, lambda t: F.gelu(t, approximate="tanh"))
        x_ = torch.cat([txt, img], 1)
        for i in range(singles):
            x_ = self.single(f"single_blocks.{i}", x_, rows(3 * i, 3), pe, lambda t: F.gelu(t, approximate="tanh"),
                             int(P.hidden_size * P.mlp_ratio))
        img = x_[:, txt.shape[1]:]
        shift, scale = mods[:, -2:-1], mods[:, -1:]
        img = self.lin("final_layer.linear", (1 + scale) * F.layer_norm(img, (P.hidden_size,), eps=1e-6) + shift)
        return rearrange(img, "b (h w) (c ph pw) -> b c (h ph) (w pw)", h=h // 2, w=w // 2, ph=2, pw=2)
