"""Who is who: the contact registry and who wrote a message."""
