"""Neural network architectures (torch). Imported by training and export only, never by serving.

* ``HybridLSTMTransformer``: input projection -> bidirectional LSTM -> Transformer encoder over
  the LSTM states -> [last state, mean state] -> signal head (logits for [buy, hold, sell]) and
  confidence head (sigmoid, trained to predict P(signal correct)).
* ``TemporalConvNet``: a different architecture for the ensemble (dilated 1-D convolutions,
  global pooling, signal head).
* ``Standardize``: the training-set scaler as a module, so exported graphs take raw features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class HybridConfig:
    n_features: int
    d_model: int = 32
    lstm_hidden: int = 32
    lstm_layers: int = 1
    n_heads: int = 2
    transformer_layers: int = 1
    dropout: float = 0.1
    n_classes: int = 3


class Standardize(nn.Module):
    """(x - mean) / std with the statistics of the training data as buffers."""

    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.reshape(1, 1, -1).float())
        self.register_buffer("inv_std", (1.0 / std.clamp_min(1e-8)).reshape(1, 1, -1).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.inv_std


class HybridLSTMTransformer(nn.Module):
    def __init__(self, config: HybridConfig) -> None:
        super().__init__()
        self.config = config
        self.input_projection = nn.Sequential(
            nn.Linear(config.n_features, config.d_model), nn.GELU()
        )
        self.lstm = nn.LSTM(
            input_size=config.d_model,
            hidden_size=config.lstm_hidden,
            num_layers=config.lstm_layers,
            batch_first=True,
            bidirectional=True,
            dropout=config.dropout if config.lstm_layers > 1 else 0.0,
        )
        width = 2 * config.lstm_hidden
        layer = nn.TransformerEncoderLayer(
            d_model=width,
            nhead=config.n_heads,
            dim_feedforward=2 * width,
            dropout=config.dropout,
            batch_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer, num_layers=config.transformer_layers, enable_nested_tensor=False
        )
        self.norm = nn.LayerNorm(2 * width)
        self.signal_head = nn.Sequential(
            nn.Linear(2 * width, width),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(width, config.n_classes),
        )
        # The confidence head also sees the signal logits: it learns when the signal is right.
        self.confidence_head = nn.Sequential(
            nn.Linear(2 * width + config.n_classes, width // 2 or 1),
            nn.GELU(),
            nn.Linear(width // 2 or 1, 1),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (batch, window, n_features), standardized -> (logits (b, 3), confidence (b,))."""
        states, _ = self.lstm(self.input_projection(x))
        encoded = self.encoder(states)
        pooled = self.norm(torch.cat([encoded[:, -1, :], encoded.mean(dim=1)], dim=1))
        logits = self.signal_head(pooled)
        confidence_logit = self.confidence_head(torch.cat([pooled, logits.detach()], dim=1))
        return logits, torch.sigmoid(confidence_logit).squeeze(1)


@dataclass(frozen=True)
class ConvConfig:
    n_features: int
    channels: int = 32
    layers: int = 2
    kernel_size: int = 3
    dropout: float = 0.1
    n_classes: int = 3


class TemporalConvNet(nn.Module):
    """Dilated causal-free 1-D convolutions over time, then average+max pooling."""

    def __init__(self, config: ConvConfig) -> None:
        super().__init__()
        self.config = config
        blocks: list[nn.Module] = []
        in_channels = config.n_features
        for i in range(config.layers):
            dilation = 2**i
            blocks += [
                nn.Conv1d(
                    in_channels,
                    config.channels,
                    config.kernel_size,
                    dilation=dilation,
                    padding=dilation * (config.kernel_size - 1) // 2,
                ),
                nn.GELU(),
                nn.Dropout(config.dropout),
            ]
            in_channels = config.channels
        self.body = nn.Sequential(*blocks)
        self.signal_head = nn.Linear(2 * config.channels, config.n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (batch, window, n_features) standardized -> (logits (b, 3), confidence (b,))."""
        h = self.body(x.transpose(1, 2))
        pooled = torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)
        logits = self.signal_head(pooled)
        # No confidence head: report the top probability (used only when this member stands alone).
        return logits, torch.softmax(logits, dim=1).amax(dim=1)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
