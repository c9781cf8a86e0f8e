"""Passes put together: one sync pass, detail selection, the daemon, the demo."""
