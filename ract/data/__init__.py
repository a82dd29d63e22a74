"""Data: obtaining raw files, reading raw formats, and preparing split files."""
