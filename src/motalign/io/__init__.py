"""Files: atomic writes (:mod:`.atomic`), the activation store (:mod:`.store`), and the
stimuli and split formats (:mod:`.stimuli`).  Imports only NumPy."""
