"""The journey of one message: its steps in order, inside one transaction, and the quarantine."""
