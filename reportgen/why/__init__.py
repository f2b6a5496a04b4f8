"""Optional analyses that explain why locations differ (reportgen.extensions plug-ins)."""
