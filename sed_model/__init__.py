"""Attention-based dense LSTM speech emotion recognition (Xie et al., IEICE 2019).

Data side: ``sed_model.corpora`` (loaders), ``sed_model.features`` (openSMILE ComParE_2016
frames, cache, normalisation) and ``sed_model.splits`` (speaker-independent folds).
"""

__version__ = "0.1.0"
