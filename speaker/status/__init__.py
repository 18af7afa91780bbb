"""`skeinctl status` and `skeinctl diagram`: a node's network read from the live kernel
and the speaker (collect), held in plain dataclasses (model), shown as a table, JSON or
a Graphviz picture (render)."""
