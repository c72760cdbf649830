"""The dataset card template (a package so that the .jinja file ships with the wheel)."""
