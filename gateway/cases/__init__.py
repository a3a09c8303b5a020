"""Cases: threading, opening and appending, receipts, escalation information, agents by mail."""
