"""Pure figure builders: arrays and token strings in, a plotly figure out."""
