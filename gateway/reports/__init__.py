"""Overviews: the digests and the figures behind them."""
