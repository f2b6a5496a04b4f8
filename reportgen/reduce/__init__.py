"""Cross-run steps of a build: from every run's result to report-wide numbers."""
