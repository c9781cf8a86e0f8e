"""Logs, metrics and redaction: what any layer may use to show what it does, secrets removed."""
