"""One module per tab (a pane widget each), plus the modal screens."""
