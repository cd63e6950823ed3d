"""The graph attention inter-block (GAI) module (paper 3, arXiv 2501.02006, Sec. III-B).

Given the encoder's block outputs ``F_1, …, F_N`` (graph nodes):

1. **Feature transformation** (eq. 8-9): ``V_i^0 = pool_S(ReLU(BN(Conv1×1(F_i))))``, a 1×1
   convolution to ``C_out`` channels and area interpolation (adaptive average pooling) to the
   common ``S × S`` size of the last block, so that every node is a ``[C_out, S, S]`` map.
2. **Graph attention** (eq. 10-12), ``M`` iterations on the fully connected graph with self
   loops. Head ``h`` projects each node with a shared 1×1 convolution ``W_h``
   (``U_i^h = W_h V_i``); the attention logits use the GAT decomposition
   ``e_ij^h = LeakyReLU(a_h^T [ū_i^h ‖ ū_j^h])`` of the spatially pooled projections ``ū``,
   ``α_ij^h = softmax_j(e_ij^h)``, and the update is
   ``V_i^{m+1} = V_i^m + ELU(‖_h Σ_j α_ij^h U_j^h)`` (heads concatenated; the residual keeps
   ``M > 1`` from over-smoothing). ``M = 0`` is the paper's GAI-w ablation.
3. **Relation mapping** (eq. 13): per task ``t`` an MLP ``C_out → C_rm → 1`` on the pooled
   node ``v̄_i^M`` scores each node; ``w_t = softmax_i(score_t)`` are the task-specific node
   weights (the softmax normalisation is ours: the paper only says the MLP outputs weights).
4. **Weighted fusion** (eq. 14): ``X_t = Σ_i w_{t,i} V_i^M``, one ``[C_out, S, S]`` feature
   per task, which the transmitter then downscales to the channel (:mod:`.system`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from flwr_semcom.models.utils import check_positive_int

__all__ = ["FeatureTransform", "GAIModule", "GraphAttentionLayer", "RelationMapping"]


class FeatureTransform(nn.Module):
    """Node maps ``[B, N, C_out, S, S]`` from block outputs of any channels and sizes."""

    def __init__(self, node_channels: Sequence[int], out_channels: int, size: int) -> None:
        super().__init__()
        check_positive_int("out_channels", out_channels)
        check_positive_int("size", size)
        self.size = size
        self.proj = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            )
            for c in node_channels
        )

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(feats) != len(self.proj):
            raise ValueError(f"expected {len(self.proj)} block outputs, got {len(feats)}")
        nodes = [F.adaptive_avg_pool2d(p(f), self.size) for p, f in zip(self.proj, feats)]
        return torch.stack(nodes, dim=1)


class GraphAttentionLayer(nn.Module):
    """One multi-head graph-attention update of node maps ``[B, N, C, S, S]`` (eq. 10-12).

    Parameters
    ----------
    channels
        ``C``, channels of every node map; must be divisible by ``heads``.
    heads
        Number of attention heads ``H``.
    negative_slope
        LeakyReLU slope of the attention logits (0.2 as in GAT).
    """

    def __init__(self, channels: int, heads: int, negative_slope: float = 0.2) -> None:
        super().__init__()
        check_positive_int("channels", channels)
        check_positive_int("heads", heads)
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.head_dim = channels // heads
        self.proj = nn.Conv2d(channels, channels, 1, bias=False)  # W_h of every head, stacked
        self.att_src = nn.Parameter(torch.empty(heads, self.head_dim))
        self.att_dst = nn.Parameter(torch.empty(heads, self.head_dim))
        self.negative_slope = negative_slope
        nn.init.xavier_uniform_(self.att_src)
        nn.init.xavier_uniform_(self.att_dst)

    def attention(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projections ``U`` ``[B, N, H, d, S, S]`` and coefficients ``α`` ``[B, H, N, N]``."""
        b, n, c, s1, s2 = nodes.shape
        u = self.proj(nodes.reshape(b * n, c, s1, s2)).reshape(b, n, self.heads, -1, s1, s2)
        pooled = u.mean(dim=(-2, -1))  # [B, N, H, d]
        src = (pooled * self.att_src).sum(-1)  # [B, N, H]: a_h^T ū_i (row i)
        dst = (pooled * self.att_dst).sum(-1)  # [B, N, H]: a_h^T ū_j (column j)
        logits = src.transpose(1, 2)[..., :, None] + dst.transpose(1, 2)[..., None, :]
        alpha = torch.softmax(F.leaky_relu(logits, self.negative_slope), dim=-1)
        return u, alpha

    def forward(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Updated nodes (same shape) and the attention coefficients ``[B, H, N, N]``."""
        u, alpha = self.attention(nodes)
        b, n, c, s1, s2 = nodes.shape
        msg = torch.einsum("bhij,bjhdxy->bihdxy", alpha, u).reshape(b, n, c, s1, s2)
        return nodes + F.elu(msg), alpha


class RelationMapping(nn.Module):
    """Task-specific node weights ``w_t = softmax_i(MLP_t(v̄_i))``, ``[B, T, N]`` (eq. 13)."""

    def __init__(self, channels: int, hidden: int, num_tasks: int) -> None:
        super().__init__()
        check_positive_int("hidden", hidden)
        check_positive_int("num_tasks", num_tasks)
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))
            for _ in range(num_tasks)
        )

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        pooled = nodes.mean(dim=(-2, -1))  # [B, N, C]
        scores = torch.stack([mlp(pooled).squeeze(-1) for mlp in self.mlps], dim=1)
        return torch.softmax(scores, dim=-1)


class GAIModule(nn.Module):
    """Feature transformation → ``M`` graph-attention updates → relation mapping → fusion.

    Parameters
    ----------
    node_channels
        Channels ``C_i`` of the ``N`` block outputs.
    out_channels
        ``C_out``, the common node channels.
    size
        ``S``, the common node side (the last block's).
    heads
        Attention heads.
    iterations
        ``M`` (paper: 1); ``0`` skips the graph updates (GAI-w).
    relation_hidden
        ``C_rm`` of the relation-mapping MLPs (paper: 256).
    num_tasks
        ``T``.

    Notes
    -----
    ``forward(feats)`` returns ``{"nodes": [B, N, C_out, S, S], "weights": [B, T, N],
    "fused": [B, T, C_out, S, S], "attention": [B, M, H, N, N]}`` (``attention`` is empty
    along ``M`` for ``M = 0``).
    """

    def __init__(
        self,
        node_channels: Sequence[int],
        out_channels: int,
        size: int,
        heads: int,
        iterations: int,
        relation_hidden: int,
        num_tasks: int,
    ) -> None:
        super().__init__()
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise ValueError(f"iterations (M) must be an int >= 0, got {iterations!r}")
        self.num_nodes = len(node_channels)
        self.heads = heads
        self.iterations = iterations
        self.transform = FeatureTransform(node_channels, out_channels, size)
        self.layers = nn.ModuleList(
            GraphAttentionLayer(out_channels, heads) for _ in range(iterations)
        )
        self.relation = RelationMapping(out_channels, relation_hidden, num_tasks)

    def forward(self, feats: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        nodes = self.transform(feats)
        alphas = []
        for layer in self.layers:
            nodes, alpha = layer(nodes)
            alphas.append(alpha)
        weights = self.relation(nodes)
        fused = torch.einsum("btn,bncxy->btcxy", weights, nodes)
        b, n = nodes.shape[:2]
        attention = (
            torch.stack(alphas, dim=1) if alphas else nodes.new_zeros(b, 0, self.heads, n, n)
        )
        return {"nodes": nodes, "weights": weights, "fused": fused, "attention": attention}
