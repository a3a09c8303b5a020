"""Reading one inbound message: parsing, limits, screening, sender authentication and quotes."""
