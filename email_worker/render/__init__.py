"""Rendering, pure: the sandboxed Jinja2 renderer with its time and size budgets, the HTML to
text conversion, header-value safety and the MIME message. Imports no adapter library."""
