"""The base layer every other package imports: errors, params -> frozen dataclasses, atomic writes, tables."""
