"""Mail we send: queued inside the case transaction, then delivered with retries."""
