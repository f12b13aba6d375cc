"""Data acquisition: the built-in stimulus sets, STSB, the ImageNet validation subset and
the Natural Scenes Dataset (download, read, simulate)."""
