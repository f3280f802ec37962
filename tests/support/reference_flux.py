"""An independent, purely functional FLUX.1 forward (BFL math, everything out of place, float32), reading the
weights of a ComfyUI Flux by name. LoRA layers enter as merged weights W + scale * B @ A, so its gradients
w.r.t. A and B come from a different computation than the trainer's peft layers."""
import math

import torch
import torch.nn.functional as F
from einops import rearrange


def timestep_embedding(t, dim=256, max_period=10000, time_factor=1000.0):
    t = time_factor * t
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def rope(pos, dim, theta):
    scale = torch.arange(0, dim, 2, dtype=torch.float64) / dim
    omega = 1.0 / (theta ** scale)
    out = torch.einsum("...n,d->...nd", pos.double(), omega)
    out = torch.stack([torch.cos(out), -torch.sin(out), torch.sin(out), torch.cos(out)], dim=-1)
    return rearrange(out, "b n d (i j) -> b n d i j", i=2, j=2).float()


def apply_rope(x, freqs):
    x_ = x.float().reshape(*x.shape[:-1], -1, 1, 2)
    out = freqs[..., 0] * x_[..., 0] + freqs[..., 1] * x_[..., 1]
    return out.reshape(*x.shape)


class Reference:
    def __init__(self, diffusion_model, lora, weights=None):
        """``lora``: {layer name: (A, B, scale)} with A, B tensors (may require grad). ``weights`` overrides
        stored weights by name (e.g. with ComfyUI-patched values when patches are applied on the fly)."""
        self.p = {k: v.detach().float() for k, v in diffusion_model.state_dict().items() if ".lora_" not in k}
        self.p = {k.replace(".base_layer.", "."): v for k, v in self.p.items()}
        # QK-norm weights: '.scale' up to ComfyUI v0.13, '.weight' since v0.14
        self.p.update({k[:-len(".weight")] + ".scale": v for k, v in self.p.items()
                       if k.endswith(("query_norm.weight", "key_norm.weight"))})
        self.p.update({k: v.detach().float() for k, v in (weights or {}).items()})
        self.params = diffusion_model.params
        self.lora = lora

    def lin(self, name, x):
        w = self.p[f"{name}.weight"]
        if name in self.lora:
            a, b, s = self.lora[name]
            w = w + s * (b @ a)
        return F.linear(x, w, self.p.get(f"{name}.bias"))

    def mlp_embed(self, name, x):
        return self.lin(f"{name}.out_layer", F.silu(self.lin(f"{name}.in_layer", x)))

    def modulation(self, name, vec, n):
        return self.lin(name, F.silu(vec))[:, None, :].chunk(n, dim=-1)

    def qkv(self, prefix, x, norm_prefix, heads):
        q, k, v = rearrange(self.lin(f"{prefix}.qkv", x), "B L (K H D) -> K B H L D", K=3, H=heads)
        q = F.rms_norm(q, q.shape[-1:], self.p[f"{norm_prefix}.query_norm.scale"], 1e-6)
        k = F.rms_norm(k, k.shape[-1:], self.p[f"{norm_prefix}.key_norm.scale"], 1e-6)
        return q, k, v

    @staticmethod
    def attention(q, k, v, pe):
        q, k = apply_rope(q, pe), apply_rope(k, pe)
        return rearrange(F.scaled_dot_product_attention(q, k, v), "B H L D -> B L (H D)")

    @staticmethod
    def tokens(x, index=0):
        """Patchified tokens of a latent and their (index, row, column) position ids."""
        b, c, h, w = x.shape
        ids = torch.zeros(h // 2, w // 2, 3)
        ids[..., 0] = index
        ids[..., 1] += torch.arange(h // 2)[:, None]
        ids[..., 2] += torch.arange(w // 2)[None, :]
        return rearrange(x, "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=2, pw=2), ids.reshape(1, -1, 3).repeat(b, 1, 1)

    def __call__(self, x, sigmas, context, y, guidance, reference=None):
        """``reference``: a FLUX.1 Kontext control latent (BFL's layout: its tokens follow the image's, position index
        1, same rows and columns); the output covers the image's tokens only."""
        P, heads, hidden = self.params, self.params.num_heads, self.params.hidden_size
        b, c, h, w = x.shape
        img, ids = self.tokens(x)
        n_img = img.shape[1]
        if reference is not None:
            ref, ref_ids = self.tokens(reference, index=1)
            img, ids = torch.cat([img, ref], 1), torch.cat([ids, ref_ids], 1)
        ids = torch.cat([torch.zeros(b, context.shape[1], 3), ids], dim=1)
        pe = torch.cat([rope(ids[..., i], P.axes_dim[i], P.theta) for i in range(3)], dim=-3).unsqueeze(1)
        img = self.lin("img_in", img)
        vec = self.mlp_embed("time_in", timestep_embedding(sigmas))
        vec = vec + self.mlp_embed("guidance_in", timestep_embedding(guidance))
        vec = vec + self.mlp_embed("vector_in", y)
        txt = self.lin("txt_in", context)
        ln = lambda t: F.layer_norm(t, (hidden,), eps=1e-6)
        for i in range(P.depth):
            d = f"double_blocks.{i}"
            im = self.modulation(f"{d}.img_mod.lin", vec, 6)
            tm = self.modulation(f"{d}.txt_mod.lin", vec, 6)
            iq, ik, iv = self.qkv(f"{d}.img_attn", (1 + im[1]) * ln(img) + im[0], f"{d}.img_attn.norm", heads)
            tq, tk, tv = self.qkv(f"{d}.txt_attn", (1 + tm[1]) * ln(txt) + tm[0], f"{d}.txt_attn.norm", heads)
            attn = self.attention(torch.cat([tq, iq], 2), torch.cat([tk, ik], 2), torch.cat([tv, iv], 2), pe)
            ta, ia = attn[:, :txt.shape[1]], attn[:, txt.shape[1]:]
            img = img + im[2] * self.lin(f"{d}.img_attn.proj", ia)
            img = img + im[5] * self.lin(f"{d}.img_mlp.2", F.gelu(self.lin(f"{d}.img_mlp.0", (1 + im[4]) * ln(img) + im[3]), approximate="tanh"))
            txt = txt + tm[2] * self.lin(f"{d}.txt_attn.proj", ta)
            txt = txt + tm[5] * self.lin(f"{d}.txt_mlp.2", F.gelu(self.lin(f"{d}.txt_mlp.0", (1 + tm[4]) * ln(txt) + tm[3]), approximate="tanh"))
        x_ = torch.cat([txt, img], 1)
        for i in range(P.depth_single_blocks):
            s = f"single_blocks.{i}"
            shift, scale, gate = self.modulation(f"{s}.modulation.lin", vec, 3)
            qkv, mlp = torch.split(self.lin(f"{s}.linear1", (1 + scale) * ln(x_) + shift), [3 * hidden, int(hidden * P.mlp_ratio)], dim=-1)
            q, k, v = rearrange(qkv, "B L (K H D) -> K B H L D", K=3, H=heads)
            q = F.rms_norm(q, q.shape[-1:], self.p[f"{s}.norm.query_norm.scale"], 1e-6)
            k = F.rms_norm(k, k.shape[-1:], self.p[f"{s}.norm.key_norm.scale"], 1e-6)
            out = self.lin(f"{s}.linear2", torch.cat([self.attention(q, k, v, pe), F.gelu(mlp, approximate="tanh")], 2))
            x_ = x_ + gate * out
        img = x_[:, txt.shape[1]:txt.shape[1] + n_img]
        shift, scale = self.lin("final_layer.adaLN_modulation.1", F.silu(vec))[:, None, :].chunk(2, dim=-1)
        img = self.lin("final_layer.linear", (1 + scale) * ln(img) + shift)
        return rearrange(img, "b (h w) (c ph pw) -> b c (h ph) (w pw)", h=h // 2, w=w // 2, ph=2, pw=2)
