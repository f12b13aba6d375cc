"""Files: atomic writes (:mod:`.atomic`), the activation store (:mod:`.store`), the stimuli
and split formats (:mod:`.stimuli`), and the checked readers every loader uses
(:mod:`.readers`: one ``CorruptFileError`` naming the file).  Imports only NumPy."""
