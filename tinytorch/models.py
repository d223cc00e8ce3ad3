"""Reference models: what the examples train and the competition's model events run.

Every size is a keyword argument with a small default, so `build_resnet()`
works as the course writes it and an event can scale a model up or down.
"""
import numpy as np

from . import nn
from .tensor import Tensor


def build_mlp(in_features=3 * 32 * 32, hidden_sizes=(512, 256), num_classes=10, dropout=0.0,
              activation=nn.ReLU):
    """Flatten -> [Linear -> activation (-> Dropout)] per hidden size -> Linear.

    Input: (N, in_features) or anything that flattens to it, e.g. (N, 3, 32, 32).
    Output: logits (N, num_classes). `activation` is a Module class (ReLU, GELU, Tanh...).
    """
    if not (isinstance(activation, type) and issubclass(activation, nn.Module)):
        raise TypeError(f"build_mlp(activation=...) takes a Module class such as nn.ReLU or "
                        f"nn.GELU, got {activation!r}")
    layers, width = [nn.Flatten()], in_features
    for hidden in hidden_sizes:
        layers += [nn.Linear(width, hidden), activation()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 conv + batch-norm layers with a skip connection (ResNet's basic block)."""

    def __init__(self, in_channels, out_channels, stride=1):
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x):
        if self.bn1.training or self.bn2.training:
            out = self.bn1(self.conv1(x)).relu()
            out = self.bn2(self.conv2(out))
            skip = x if self.shortcut is None else self.shortcut(x)
            return (out + skip).relu()
        # Inference: every batch norm folded into the convolution before it, and the
        # skip connection and ReLU done as the second convolution's epilogue.
        out = conv_bn(self.conv1, self.bn1, x, relu=True)
        skip = x if self.shortcut is None else conv_bn(*self.shortcut, x)
        return conv_bn(self.conv2, self.bn2, out, residual=skip, relu=True)


def conv_bn(conv, bn, x, residual=None, relu=False):
    """bn(conv(x)) (+ residual) (then ReLU); with bn in eval mode, as one convolution
    whose weights absorb the normalisation (nn.functional.fold_batch_norm)."""
    if bn.training:
        out = bn(conv(x))
        out = out if residual is None else out + residual
        return out.relu() if relu else out
    weight, bias = nn.functional.fold_batch_norm(conv.weight, conv.bias, bn)
    return nn.functional.conv2d(x, weight, bias, conv.stride, conv.padding, residual, relu)


class ResNet(nn.Module):
    """Stem conv, stages of BasicBlocks (each later stage halves the size, doubles the width),
    global average pool, linear classifier."""

    def __init__(self, in_channels=3, num_classes=10, width=16, num_stages=3,
                 blocks_per_stage=1):
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        blocks, channels = [], width
        for stage in range(num_stages):
            out_channels = width * 2 ** stage
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                blocks.append(BasicBlock(channels, out_channels, stride))
                channels = out_channels
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        conv, bn, _ = self.stem
        stem = conv_bn(conv, bn, x, relu=True) if not bn.training else self.stem(x)
        return self.fc(self.flatten(self.pool(self.stages(stem))))


def build_resnet(in_channels=3, num_classes=10, width=16, num_stages=3, blocks_per_stage=1):
    """A small residual CNN for (N, in_channels, 32, 32) images -> logits (N, num_classes).

    width: channels of the first stage (doubled per later stage);
    num_stages: stages (each after the first halves height and width);
    blocks_per_stage: BasicBlocks per stage (depth).
    """
    return ResNet(in_channels, num_classes, width, num_stages, blocks_per_stage)


class DecoderBlock(nn.Module):
    """Pre-norm transformer block: x + causal self-attention, then x + MLP."""

    def __init__(self, embed_dim, num_heads, mlp_ratio=4, dropout=0.0):
        self.ln1 = nn.LayerNorm(embed_dim)
        self.attn = nn.MultiHeadAttention(embed_dim, num_heads, causal=True)
        self.ln2 = nn.LayerNorm(embed_dim)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, mlp_ratio * embed_dim), nn.GELU(),
                                 nn.Linear(mlp_ratio * embed_dim, embed_dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.mlp(self.ln2(x)))


class Transformer(nn.Module):
    """Token and position embeddings, a stack of causal decoder blocks, a final norm and
    a linear head over the vocabulary."""

    def __init__(self, vocab_size=256, max_seq_len=64, embed_dim=64, num_heads=4,
                 num_layers=2, mlp_ratio=4, dropout=0.0):
        self.max_seq_len = max_seq_len
        self.token_embedding = nn.Embedding(vocab_size, embed_dim)
        self.position_embedding = nn.Embedding(max_seq_len, embed_dim)
        self.blocks = nn.Sequential(*[DecoderBlock(embed_dim, num_heads, mlp_ratio, dropout)
                                      for _ in range(num_layers)])
        self.ln_f = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, vocab_size)

    def forward(self, ids):
        ids = np.asarray(ids.data if isinstance(ids, Tensor) else ids)
        if ids.ndim != 2:
            raise ValueError(f"Transformer expects token ids of shape (N, T), got {ids.shape}")
        if ids.shape[1] > self.max_seq_len:
            raise ValueError(f"sequence length {ids.shape[1]} exceeds max_seq_len "
                             f"{self.max_seq_len}")
        x = self.token_embedding(ids) + self.position_embedding(np.arange(ids.shape[1]))
        return self.head(self.ln_f(self.blocks(x)))


def build_transformer(vocab_size=256, max_seq_len=64, embed_dim=64, num_heads=4,
                      num_layers=2, mlp_ratio=4, dropout=0.0):
    """A small causal decoder over int token ids (N, T) -> logits (N, T, vocab_size).

    num_layers decoder blocks of width embed_dim with num_heads heads and an
    MLP of mlp_ratio * embed_dim; sequences up to max_seq_len tokens.
    """
    return Transformer(vocab_size, max_seq_len, embed_dim, num_heads, num_layers,
                       mlp_ratio, dropout)
