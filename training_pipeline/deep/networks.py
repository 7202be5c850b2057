"""The PyTorch networks of the deep models."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Cell = Literal["lstm", "gru"]


class SequenceRegressor(nn.Module):
    """An LSTM or GRU over a window of rows, plus a learned pair embedding, to one number per window.

    The recurrent cell reads the window oldest row first; its output at the
    last row and the pair's embedding go through a small MLP head. Index 0
    of the embedding stands for pairs not seen in training.
    """

    def __init__(
        self,
        n_inputs: int,
        n_pairs: int,
        cell: Cell = "lstm",
        hidden_size: int = 64,
        layers: int = 1,
        embedding_dim: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        recurrent = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.recurrent = recurrent(
            n_inputs, hidden_size, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        self.pair_embedding = nn.Embedding(n_pairs + 1, embedding_dim)
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(hidden_size + embedding_dim, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, 1),
        )

    def forward(self, windows: torch.Tensor, pair_ids: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.recurrent(windows)
        joined = torch.cat([outputs[:, -1], self.pair_embedding(pair_ids).to(outputs.dtype)], dim=1)
        return self.head(joined).squeeze(1)


class ActionNetwork(nn.Module):
    """The order-book action model: five action values (or "is optimal" logits) from one book sample.

    An LSTM reads the recent mid prices (oldest first, relative to the current
    mid), an MLP reads the book's depth shares (20 bid and 20 offer buckets)
    with its top (spread, imbalance, microprice offset), and the product has a
    learned embedding; an interaction MLP over the three gives the outputs.
    """

    def __init__(
        self,
        n_book_inputs: int,
        n_products: int,
        n_actions: int = 5,
        hidden_size: int = 64,
        embedding_dim: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.mids = nn.LSTM(1, hidden_size, batch_first=True)
        self.book = nn.Sequential(
            nn.Linear(n_book_inputs, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
        )
        self.product_embedding = nn.Embedding(n_products + 1, embedding_dim)
        self.interaction = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(2 * hidden_size + embedding_dim, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, n_actions),
        )

    def forward(self, mids: torch.Tensor, book: torch.Tensor, product_ids: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.mids(mids.unsqueeze(-1))
        book_out = self.book(book)
        joined = torch.cat(
            [outputs[:, -1], book_out.to(outputs.dtype), self.product_embedding(product_ids).to(outputs.dtype)], dim=1
        )
        return self.interaction(joined)
