"""gateway: the email gateway a network service centre runs its day on."""

__version__ = "0.1.0"
