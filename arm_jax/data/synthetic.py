"""stub"""


def synthetic_split(**kw):
    raise NotImplementedError
