"""Optional analyses that explain why locations differ (reportgen.core.extension plug-ins)."""
