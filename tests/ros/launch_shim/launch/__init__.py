"""Test stand-in for ROS 2's `launch` (see ../README.md)."""


class LaunchDescription:
    def __init__(self, entities):
        self.entities = list(entities)
