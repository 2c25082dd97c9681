"""Helpers shared by the test directories."""
