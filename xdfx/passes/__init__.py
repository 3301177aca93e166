"""Graph passes: each one is a function over an ``fx.GraphModule`` that returns a report."""
