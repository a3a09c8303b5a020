"""Adapters that bring mail in: the SMTP listener and its committer, IMAP, and the MTA pipe."""
