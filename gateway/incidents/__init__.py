"""Incidents the centre detects: monitoring (NAV) alerts and the notices they lead to."""
