"""Reporting: tables (terminal and Markdown) and plots."""

from deep_compression.report.table import format_table

__all__ = ["format_table"]
