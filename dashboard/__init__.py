"""The operator dashboard: a web page to see what the bot learns, and its /metrics."""
