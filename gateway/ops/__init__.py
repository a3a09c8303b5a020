"""Running the service: serve and its worker processes, status, backup, retention and metrics."""
