"""Data acquisition: the stimulus sets of the paper's comparisons, written as the
workflow's stimuli files (format in :mod:`motalign.io.stimuli`), and the Natural Scenes
Dataset.

* :mod:`.stimuli`: the stimuli file of a data set's config entry, dispatched over its source;
* :mod:`.builtin`: sentences from a text file, scikit-learn's digits;
* :mod:`.stsb`: the STS-B prompts (paper Sec. 3.1);
* :mod:`.imagenet`: the ImageNet validation subset (paper Sec. 3.3);
* :mod:`.download`: the resumable HTTP downloader and the hub's URLs and cache;
* :mod:`.nsd`: the Natural Scenes Dataset (paper Sec. 3.2): read, mirror, simulate.
"""
