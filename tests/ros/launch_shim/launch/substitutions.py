"""Test stand-in for `launch.substitutions`: each substitution has `perform(context)`."""
import os


def perform(value, context):
    return value.perform(context) if hasattr(value, "perform") else str(value)


class LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context.launch_configurations[self.name]


class PathJoinSubstitution:
    def __init__(self, parts):
        self.parts = parts

    def perform(self, context):
        return os.path.join(*(perform(p, context) for p in self.parts))
