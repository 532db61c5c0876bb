"""The scenario registry: every scenario module registers its scenarios here, in the
order they run by default."""

SCENARIOS = {}


def scenario(cls_or_obj):
    SCENARIOS[cls_or_obj.name] = cls_or_obj
    return cls_or_obj
