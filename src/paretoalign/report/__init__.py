"""Reports of evaluated policies: Pareto-front plots, JSON tables and self-contained HTML pages."""
