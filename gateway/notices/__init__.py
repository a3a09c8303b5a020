"""The words of outgoing mail: Jinja2 templates by language, audience and event."""
