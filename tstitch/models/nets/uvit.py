"""U-ViT backbone (Bao et al., 2023, "All are Worth Words") with the official parameter names.

Every ``nn.Module`` attribute is named as in baofff/U-ViT ``libs/uvit.py`` so that the official checkpoints
(``imagenet64_uvit_mid.pth`` ... ``imagenet512_uvit_huge.pth``, plain state dicts) load with ``strict=True``.
Time, class label and image patches are all tokens; the first half of the blocks feeds long skip connections
into the second half, each merged by a linear layer on the concatenation. Attention is torch's
``scaled_dot_product_attention`` (what the official code uses when torch has it).
"""
import torch
import torch.nn.functional as F
from torch import nn

from tstitch.models.nets.dit import TimestepEmbedder


class Attention(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias=False):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, length, dim = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (N, heads, L, head_dim)
        return self.proj(x.transpose(1, 2).reshape(n, length, dim))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block; with ``skip`` it first merges a long skip connection: Linear([x, skip])."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, skip=False):
        super().__init__()
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, skip=None):
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size, in_chans, embed_dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, H*W/p^2, D), row-major patches


class UViT(nn.Module):
    """``forward(x, t, y)`` -> eps, where ``t`` is the network's own (float) time input: U-ViT's discrete-time
    models take n in 1 ... 1000, its continuous-time ones 999 s for s in (0, 1] (see ``tstitch.models.adapters.uvit``).
    ``num_classes`` counts the label embedding's rows (1001 for the ImageNet 256/512 models: row 1000 is the
    null class of classifier-free guidance); 0 for an unconditional model."""

    def __init__(self, img_size=32, patch_size=2, in_chans=4, embed_dim=1152, depth=28, num_heads=16, mlp_ratio=4.0,
                 qkv_bias=False, mlp_time_embed=False, num_classes=1001, conv=True, skip=True):
        super().__init__()
        self.in_chans, self.patch_size, self.embed_dim, self.num_classes = in_chans, patch_size, embed_dim, num_classes
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.time_embed = nn.Sequential(nn.Linear(embed_dim, 4 * embed_dim), nn.SiLU(),
                                        nn.Linear(4 * embed_dim, embed_dim)) if mlp_time_embed else nn.Identity()
        if num_classes > 0:
            self.label_emb = nn.Embedding(num_classes, embed_dim)
        self.extras = 1 + int(num_classes > 0)  # the label and time tokens ahead of the patches
        num_patches = (img_size // patch_size) ** 2
        self.pos_embed = nn.Parameter(torch.zeros(1, self.extras + num_patches, embed_dim))
        block = dict(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias)
        self.in_blocks = nn.ModuleList([Block(**block) for _ in range(depth // 2)])
        self.mid_block = Block(**block)
        self.out_blocks = nn.ModuleList([Block(**block, skip=skip) for _ in range(depth // 2)])
        self.norm = nn.LayerNorm(embed_dim)
        self.decoder_pred = nn.Linear(embed_dim, patch_size ** 2 * in_chans)
        self.final_layer = nn.Conv2d(in_chans, in_chans, 3, padding=1) if conv else nn.Identity()
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(_init_weights)

    def unpatchify(self, x, h):
        """(N, h*w, p*p*C) -> (N, C, h*p, w*p); a token's features are ordered (p1, p2, C)."""
        n, p, c = x.shape[0], self.patch_size, self.in_chans
        x = x.reshape(n, h, -1, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(n, c, h * p, -1)

    def forward(self, x, t, y=None):
        h = x.shape[-2] // self.patch_size
        x = self.patch_embed(x)  # (N, L, D)
        time = self.time_embed(TimestepEmbedder.timestep_embedding(t, self.embed_dim).to(x.dtype))
        tokens = [time[:, None], x]
        if y is not None:
            tokens.insert(0, self.label_emb(y)[:, None])
        x = torch.cat(tokens, dim=1) + self.pos_embed  # (N, extras + L, D): [label, time, patches]
        skips = []
        for block in self.in_blocks:
            x = block(x)
            skips.append(x)
        x = self.mid_block(x)
        for block in self.out_blocks:
            x = block(x, skips.pop())
        x = self.decoder_pred(self.norm(x))[:, self.extras:]
        return self.final_layer(self.unpatchify(x, h))  # (N, C, H, W)


def _init_weights(m):
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# The official ImageNet configurations (baofff/U-ViT configs/<name>.py); all have mlp_ratio 4, qkv_bias False,
# mlp_time_embed False. The H models drop the final 3x3 conv (conv=False); the 64x64 ones have no null class.
UVIT_CONFIGS = {
    "imagenet64_uvit_mid": dict(img_size=64, patch_size=4, in_chans=3, embed_dim=768, depth=16, num_heads=12,
                                num_classes=1000),
    "imagenet64_uvit_large": dict(img_size=64, patch_size=4, in_chans=3, embed_dim=1024, depth=20, num_heads=16,
                                  num_classes=1000),
    "imagenet256_uvit_large": dict(img_size=32, patch_size=2, in_chans=4, embed_dim=1024, depth=20, num_heads=16,
                                   num_classes=1001),
    "imagenet256_uvit_huge": dict(img_size=32, patch_size=2, in_chans=4, embed_dim=1152, depth=28, num_heads=16,
                                  num_classes=1001, conv=False),
    "imagenet512_uvit_large": dict(img_size=64, patch_size=4, in_chans=4, embed_dim=1024, depth=20, num_heads=16,
                                   num_classes=1001),
    "imagenet512_uvit_huge": dict(img_size=64, patch_size=4, in_chans=4, embed_dim=1152, depth=28, num_heads=16,
                                  num_classes=1001, conv=False),
}
