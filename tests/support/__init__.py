"""Helpers shared by the test directories (``tests.support.ensemble``)."""
