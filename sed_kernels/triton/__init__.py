from . import feature_attention, time_attention
