"""Reporting: the Markdown run report and the plots."""
