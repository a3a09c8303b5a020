"""What one message carries through the pipeline's steps, and how its journey ended."""
