"""The Mock provider's parts: fault injection and recorded graphs."""
