"""Maker and taker fees per exchange.

The defaults are each exchange's lowest 30-day-volume tier, the one a new
account pays: Coinbase Advanced Trade 0.60 % maker and 1.20 % taker
(help.coinbase.com, "Coinbase Advanced fees"), Kraken Pro 0.25 % maker and
0.40 % taker (kraken.com/features/fee-schedule). Tiers change with volume and
over time: the settings (``COINFLOW_TRADING_COINBASE_MAKER_FEE`` and the like)
set the account's own. A fee is the fill's notional times the rate, in the
quote asset.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from coinflow.trading.orders import Liquidity


@dataclass(frozen=True)
class FeeSchedule:
    maker: Decimal
    taker: Decimal

    def rate(self, liquidity: Liquidity) -> Decimal:
        return self.maker if liquidity == Liquidity.MAKER else self.taker

    def fee(self, notional: Decimal, liquidity: Liquidity) -> Decimal:
        """The fee of a fill of `notional` (quote) that made or took liquidity."""
        return notional * self.rate(liquidity)


COINBASE_FEES = FeeSchedule(maker=Decimal("0.006"), taker=Decimal("0.012"))
KRAKEN_FEES = FeeSchedule(maker=Decimal("0.0025"), taker=Decimal("0.004"))
