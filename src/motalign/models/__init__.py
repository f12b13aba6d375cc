"""Models: tiny, briefly trained instances of the paper's architectures (:mod:`.tiny`) and
layer-activation extraction from Hugging Face and timm models (:mod:`.extract`).  Needs the
``models`` extra (torch, transformers)."""
