"""Helpers shared by tests of several packages (imported, never collected as tests)."""
