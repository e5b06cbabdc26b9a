"""IEMOCAP, four-class set: neu / hap (hap and exc merged) / sad / ang.

Same folder, labels, speakers and leave-one-session-out protocol as ``iemocap`` (see there).
"""

from sed_model.corpora.iemocap import Iemocap


class Iemocap4(Iemocap):
    name = "iemocap4"
    title = "IEMOCAP"
    classes = ("neu", "hap", "sad", "ang")
    label_map = {"neu": "neu", "hap": "hap", "exc": "hap", "sad": "sad", "ang": "ang"}


CORPUS = Iemocap4()
