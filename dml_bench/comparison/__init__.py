"""From finished runs to a paper's table: reading runs, aggregating seeds, significance, LaTeX, searches."""
