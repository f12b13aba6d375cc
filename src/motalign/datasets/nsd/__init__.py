"""The Natural Scenes Dataset (paper Sec. 3.2), bottom layer first:

* :mod:`.layout`: the file layout under an NSD root, subjects, ROI labels and the paper's
  seven regions;
* :mod:`.expdesign`: the experimental design (which image every trial showed);
* :mod:`.responses`: one subject's region responses to the shared images;
* :mod:`.simulate`: a small NSD written in the real layout, for tests and the miniature
  workflow;
* :mod:`.s3`: the public bucket's client, errors and retries;
* :mod:`.transfer`: one object downloaded, resumed and verified;
* :mod:`.mirror`: the local mirror of the files the paper uses (:func:`~.mirror.download_nsd`);
* :mod:`.ranged`: a seekable file over one object, read with ranged requests;
* :mod:`.images`: the images read by NSD id from whichever copy is present, and the shared
  images as a stimuli file.

The readers need the ``nsd`` extra (nibabel, h5py, boto3), imported only when used.
"""
