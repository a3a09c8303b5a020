"""Foundations every layer uses: the clock, addresses, working days, configuration and logging."""
