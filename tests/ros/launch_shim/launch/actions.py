"""Test stand-in for `launch.actions`."""


class DeclareLaunchArgument:
    def __init__(self, name, default_value="", description=""):
        self.name = name
        self.default_value = default_value
        self.description = description


class OpaqueFunction:
    def __init__(self, function):
        self.function = function
