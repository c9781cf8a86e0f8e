"""Answers for people and programs: queries, status, reports, Datasette metadata, output formats."""
