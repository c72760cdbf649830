"""A run's report: its numbers read from the store with SQL (``data``), drawn as PNG plots
(``plots``), and written as one self-contained HTML page (``page``)."""
