"""Helpers shared by the test suites: one copy of each (stores, sessions ids, servers)."""
