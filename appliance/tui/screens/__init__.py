"""Screens of the TUI: the dashboard, live events, help, and the action dialogs."""
