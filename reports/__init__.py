"""pytest glue of vtok-bench's reports: the plugin (`reports.plugin`, loaded with ``-p reports.plugin``) and
``python -m reports DIR``, which rebuilds a report from its stored JSONL.

The work itself (the JSONL store, aggregation, CSV, Markdown, plots, grids) lives in `vision_tokenizers.results`;
this package stays import-light so that loading the plugin costs nothing.
"""
