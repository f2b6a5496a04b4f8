"""reportgen: turn trained CNNs into a browsable MkDocs report."""

__version__ = "0.2.0"
